//! The simulator: determinism, magnitudes after voxelization, Doppler of a
//! static scene, frame-to-frame consistency, radar/LiDAR co-location, and the
//! on-disk dataset through the voxelizer driver.

use std::sync::Mutex;

use radvox::data::voxelize::{
    near_fraction, Axis, CalibOptions, FrameOutput, FrameProcessor, VoxelizeError, Voxelizer,
};
use radvox::sim::{v3, write_scene, GroundPlane, Object, Scene, Shape, SimConfig, Simulator, Surface, View, V3};

fn small(seed: u64) -> SimConfig {
    let mut cfg = SimConfig { seed, frames_per_scene: 3, ..SimConfig::default() };
    cfg.lidar.points_per_frame = 20_000;
    cfg.radar.probe_step_deg = [0.5, 1.0];
    cfg
}

#[test]
fn same_seed_same_bytes_regardless_of_threads() {
    let bytes = |threads: usize, seed: u64| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("pool");
        pool.install(|| {
            let s = Simulator::new(small(seed)).expect("valid config").simulate_scene(0);
            let mut out = Vec::new();
            for f in s.radar.iter().chain(&s.lidar) {
                out.extend(f.stamp.0.to_le_bytes());
                out.extend(f.cloud.to_le_bytes());
            }
            out
        })
    };
    let a = bytes(1, 11);
    assert!(a.len() > 100_000);
    assert_eq!(a, bytes(2, 11));
    assert_ne!(a, bytes(2, 12), "another seed, another scene");
}

#[test]
fn full_resolution_magnitudes_and_colocation() {
    let cfg = SimConfig { frames_per_scene: 4, ..SimConfig::default() };
    let sim = Simulator::new(cfg).expect("valid config");
    let scene = sim.simulate_scene(0);
    assert!(scene.radar.len() > scene.lidar.len(), "radar runs faster: the LiDAR is the pairing axis");
    let p = FrameProcessor::default();
    let mut moving = 0;
    for (k, lidar) in scene.lidar.iter().enumerate() {
        let radar = &scene.radar[k * 13 / 10];
        let g = p.process(&radar.cloud, &lidar.cloud).expect("process");
        let near = near_fraction(&g.radar, &g.lidar, 1);
        println!(
            "frame {k}: radar {} pts -> {} voxels, lidar {} pts -> {} voxels ({} ground), target {} ({} with Doppler), \
             radar voxels near lidar {near:.3}",
            radar.cloud.len(),
            g.radar.len(),
            lidar.cloud.len(),
            g.lidar.len(),
            g.ground_removed,
            g.target.len(),
            (0..g.target.len()).filter(|&i| g.target.feature(i)[3] > 0.0).count(),
        );
        assert!((1000..=2000).contains(&g.radar.len()), "radar voxels {}", g.radar.len());
        assert!((10_000..=30_000).contains(&g.lidar.len()), "lidar voxels {}", g.lidar.len());
        assert!(near > 0.3, "radar voxels with a lidar voxel within 1 voxel: {near}");
        // Moving vehicles: Doppler far from the static value of its direction.
        let v = radar.pose.vec_to_sensor(radar.pose.vel);
        moving += radar
            .cloud
            .rows()
            .filter(|r| {
                let u = v3(r[0] as f64, r[1] as f64, r[2] as f64).unit();
                (r[4] as f64 + v.dot(u)).abs() > 2.0
            })
            .count();
    }
    assert!(moving > 0, "some radar returns come from moving vehicles");
}

fn static_config(noise: bool) -> SimConfig {
    let mut cfg = small(5);
    cfg.scene.moving_vehicles = 0;
    if !noise {
        let r = &mut cfg.radar;
        r.range_sigma = 0.0;
        r.azimuth_sigma_deg = 0.0;
        r.elevation_sigma_deg = 0.0;
        r.doppler_sigma = 0.0;
        r.ghost_probability = 0.0;
    }
    cfg
}

#[test]
fn static_scene_doppler_is_minus_ego_velocity_along_the_ray() {
    for noise in [false, true] {
        let scene = Simulator::new(static_config(noise)).expect("valid config").simulate_scene(0);
        let (mut n, mut ok) = (0usize, 0usize);
        for f in &scene.radar {
            let v = f.pose.vec_to_sensor(f.pose.vel);
            assert!(v.x > 3.9, "the ego moves forward: {v:?}");
            for r in f.cloud.rows() {
                let u = v3(r[0] as f64, r[1] as f64, r[2] as f64).unit();
                let expected = -v.dot(u);
                let err = (r[4] as f64 - expected).abs();
                n += 1;
                if noise {
                    ok += usize::from(err < 0.3);
                } else {
                    assert!(err < 1e-4, "doppler {} vs {expected}", r[4]);
                    ok += 1;
                }
            }
        }
        let share = ok as f64 / n as f64;
        println!("noise {noise}: {n} detections, share within tolerance {share:.4}");
        assert!(n > 1000 && share >= 0.95, "{share}");
    }
}

#[test]
fn a_static_pole_stays_put_in_the_world() {
    let sim = Simulator::new(SimConfig::default()).expect("valid config");
    let ground = GroundPlane { z0: 0.0, slope: [0.01, 0.0] };
    let (centre, radius) = (v3(25.0, -0.5, 0.0), 0.15);
    let pole = Object::fixed(Shape::Cylinder { base: centre - v3(0.0, 0.0, 0.5), r: radius, h: 6.0 }, Surface::Pole);
    let scene = Scene { ground, objects: vec![pole] };
    let traj = radvox::sim::Trajectory { ego: sim.config().ego.clone(), ground };
    let mut centres = Vec::new();
    for frame in [0usize, 1, 10] {
        let t = frame as f64 / sim.config().lidar_hz;
        let f = sim.lidar_frame(0, &scene, &traj, frame, t);
        let hits: Vec<V3> = f
            .cloud
            .rows()
            .map(|r| f.pose.to_world(v3(r[0] as f64, r[1] as f64, r[2] as f64)))
            .filter(|w| (*w - centre).xy_norm() < 1.0 && w.z > 0.5)
            .collect();
        assert!(hits.len() > 20, "frame {frame}: {} pole hits", hits.len());
        for w in &hits {
            let d = (*w - centre).xy_norm();
            assert!((d - radius).abs() < 0.1, "frame {frame}: hit {d:.3} m from the axis");
        }
        let n = hits.len() as f64;
        let m = hits.iter().fold(V3::default(), |a, w| a + *w) * (1.0 / n);
        centres.push(m);
        // In the sensor frame the pole moves towards the sensor as the ego drives.
        let s = f.pose.to_sensor(centre);
        assert!((s.x - (25.0 - 4.0 * t)).abs() < 0.2, "frame {frame}: pole at {s:?}");
    }
    for c in &centres[1..] {
        assert!((*c - centres[0]).xy_norm() < 0.1, "pole hits drift: {centres:?}");
    }
}

#[test]
fn written_dataset_runs_through_the_driver() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = Simulator::new(SimConfig { frames_per_scene: 5, ..small(3) }).expect("valid config");
    let scene = sim.simulate_scene(0);
    write_scene(dir.path(), &scene).expect("write");
    let vox = Voxelizer { calib: CalibOptions::file(dir.path().join("calib.txt")), ..Voxelizer::default() };
    let frames = Mutex::new(Vec::new());
    let sink = |f: FrameOutput| -> Result<(), VoxelizeError> {
        frames.lock().unwrap().push((f.pair.index, f.pair.gap(), f.grids.radar.len()));
        Ok(())
    };
    let s = vox.run(&dir.path().join("radar"), &dir.path().join("lidar"), &sink).expect("run");
    println!("{s}");
    assert_eq!(s.axis, Axis::Lidar);
    assert_eq!((s.pairs, s.written, s.lidar_files, s.radar_files), (5, 5, 5, 6));
    assert!(s.skipped.is_empty() && s.radar.dropped_non_finite == 0);
    let frames = frames.lock().expect("lock");
    assert!(frames.iter().all(|f| f.1 <= 0.5 / 13.0 + 1e-6 && f.2 > 0), "{frames:?}");
}

#[test]
fn primitives_intersect_analytically() {
    let o = V3::default();
    let x = v3(1.0, 0.0, 0.0);
    let cube = Shape::Cuboid { c: v3(10.0, 0.0, 0.0), half: v3(1.0, 1.0, 1.0), yaw: 0.0 };
    let h = cube.intersect(o, x, 100.0).expect("box hit");
    assert!((h.t - 9.0).abs() < 1e-12 && (h.normal - v3(-1.0, 0.0, 0.0)).norm() < 1e-12 && !h.edge);
    let diamond = Shape::Cuboid { c: v3(10.0, 0.0, 0.0), half: v3(1.0, 1.0, 1.0), yaw: std::f64::consts::FRAC_PI_4 };
    let h = diamond.intersect(o, x, 100.0).expect("corner hit");
    assert!((h.t - (10.0 - 2f64.sqrt())).abs() < 1e-9 && h.edge, "{h:?}");
    assert!(cube.intersect(o, x, 5.0).is_none(), "beyond t_max");
    assert!(cube.intersect(v3(10.0, 0.0, 0.0), x, 100.0).is_none(), "from inside");
    let pole = Shape::Cylinder { base: v3(10.0, 0.0, -1.0), r: 0.5, h: 3.0 };
    assert!((pole.intersect(o, x, 100.0).expect("side").t - 9.5).abs() < 1e-12);
    assert!(pole.intersect(o, v3(1.0, 0.0, 0.3).unit(), 100.0).is_none(), "passes above the top");
    let down = pole.intersect(v3(10.0, 0.1, 5.0), v3(0.0, 0.0, -1.0), 100.0).expect("top cap");
    assert!((down.t - 3.0).abs() < 1e-12 && down.normal.z == 1.0);
    let ball = Shape::Sphere { c: v3(10.0, 0.0, 0.0), r: 2.0 };
    assert!((ball.intersect(o, x, 100.0).expect("sphere").t - 8.0).abs() < 1e-12);
    assert!(ball.intersect(v3(10.0, 0.0, 0.0), x, 100.0).is_none());
    let car = Object { shape: cube, surface: Surface::Vehicle, velocity: v3(-5.0, 0.0, 0.0) };
    assert_eq!(car.shape_at(2.0), Shape::Cuboid { c: v3(0.0, 0.0, 0.0), half: v3(1.0, 1.0, 1.0), yaw: 0.0 });
}

#[test]
fn ray_casting_matches_brute_force() {
    use rand::{Rng, SeedableRng};
    let sim = Simulator::new(SimConfig::default()).expect("valid config");
    let (scene, traj) = sim.layout(0);
    for t in [0.0, 3.3, 9.9] {
        let pose = traj.pose(t);
        let view = View::new(&scene, &pose, t, 200.0);
        let cs = (pose.yaw.cos(), pose.yaw.sin());
        let shapes: Vec<Shape> = scene.objects.iter().map(|o| o.shape_at(t).to_frame(pose.pos, pose.yaw, cs)).collect();
        let g = &scene.ground;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(t.to_bits());
        let mut hits = 0;
        for _ in 0..20_000 {
            let u = V3::from_angles(rng.random_range(-3.2..3.2), rng.random_range(-0.5..0.5));
            let mut best = shapes.iter().filter_map(|s| s.intersect(V3::default(), u, 200.0)).map(|h| h.t);
            let mut t_best = best.try_fold(f64::INFINITY, |a, b| Some(a.min(b))).unwrap_or(f64::INFINITY);
            let w = pose.to_world(u) - pose.pos;
            let p = pose.pos;
            let tg = (g.z0 + g.slope[0] * p.x + g.slope[1] * p.y - p.z) / (w.z - g.slope[0] * w.x - g.slope[1] * w.y);
            if tg > 0.0 && tg < 200.0 {
                t_best = t_best.min(tg);
            }
            match view.cast(u, 200.0) {
                Some(h) => {
                    hits += 1;
                    assert!((h.t - t_best).abs() < 1e-6, "view {} vs brute force {t_best}", h.t);
                }
                None => assert!(t_best.is_infinite(), "view missed a hit at {t_best}"),
            }
        }
        assert!(hits > 10_000);
    }
}

/// IoU of two voxel sets after integer division of the coordinates by `pool`.
fn pooled_iou(a: &[[u32; 3]], b: &[[u32; 3]], pool: u32) -> f64 {
    use std::collections::HashSet;
    let set = |s: &[[u32; 3]]| s.iter().map(|c| c.map(|v| v / pool)).collect::<HashSet<_>>();
    let (a, b) = (set(a), set(b));
    a.intersection(&b).count() as f64 / a.union(&b).count().max(1) as f64
}

#[test]
fn a_rescan_sees_the_same_scene_by_its_own_chance() {
    let cfg = small(4);
    let scan = |rescan: u64| {
        Simulator::new(SimConfig { lidar_rescan: rescan, ..cfg.clone() }).expect("valid config").simulate_scene(0)
    };
    let (rec, one, two) = (scan(0), scan(1), scan(2));
    assert_eq!(rec, Simulator::new(cfg.clone()).expect("valid").simulate_scene(0), "rescan 0 is the recording");
    assert_eq!((&rec.radar, &rec.scene), (&one.radar, &one.scene), "radar and layout are the recording's");
    let p = FrameProcessor::default();
    for (k, ((a, b), c)) in rec.lidar.iter().zip(&one.lidar).zip(&two.lidar).enumerate() {
        assert_eq!((&a.pose, &a.stamp), (&b.pose, &b.stamp));
        assert!(a.cloud != b.cloud && b.cloud != c.cloud, "frame {k}: a rescan draws again");
        let radar = &rec.radar[k * 13 / 10].cloud;
        let grid = |l: &radvox::sim::SimFrame| p.process(radar, &l.cloud).expect("process").lidar.coords;
        let (ga, gb) = (grid(a), grid(b));
        let (native, coarse) = (pooled_iou(&ga, &gb, 1), pooled_iou(&ga, &gb, 10));
        println!("frame {k}: recording vs rescan, LiDAR voxel IoU {native:.3} at 0.2 m, {coarse:.3} at 2 m");
        // the same surfaces (2 m cells agree), hit at other points (0.2 m voxels do not)
        assert!(coarse > 0.7 && native < 0.5 * coarse, "IoU {native} at 0.2 m, {coarse} at 2 m");
    }
}

#[test]
fn invalid_configs_are_rejected() {
    let bad = |f: fn(&mut SimConfig)| {
        let mut cfg = SimConfig::default();
        f(&mut cfg);
        Simulator::new(cfg).expect_err("invalid config accepted").to_string()
    };
    assert!(bad(|c| c.lidar_hz = 0.0).contains("lidar_hz"));
    assert!(bad(|c| c.radar.probe_step_deg = [0.0, 1.0]).contains("probe_step_deg"));
    assert!(bad(|c| c.scene.pole_spacing = [0.0, 0.0]).contains("pole_spacing"));
    assert!(bad(|c| c.radar.ghost_probability = 2.0).contains("ghost_probability"));
    assert!(bad(|c| c.lidar.range = [f64::NAN, 1.0]).contains("lidar.range"));
    assert!(bad(|c| c.ego.weave_period = -1.0).contains("weave_period"));
    assert!(bad(|c| c.lidar_rescan = 1001).contains("lidar_rescan"));
}

#[test]
fn config_round_trips_through_json() {
    let cfg = SimConfig { seed: 99, scenes: 3, ..SimConfig::default() };
    let json = serde_json::to_string_pretty(&cfg).expect("json");
    assert_eq!(serde_json::from_str::<SimConfig>(&json).expect("parse"), cfg);
    let partial: SimConfig =
        serde_json::from_str(r#"{"seed": 5, "lidar": {"points_per_frame": 1000}}"#).expect("parse");
    assert_eq!((partial.seed, partial.lidar.points_per_frame, partial.frames_per_scene), (5, 1000, 100));
}
