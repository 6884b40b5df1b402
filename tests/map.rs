//! The map on a simulated root: `simulate` writes each scene's poses (TUM,
//! one per frame, the trajectory at the LiDAR times), the poses register
//! frames in the world, missing or mismatched poses are clear errors, and
//! `build_map` writes its products and scores a map against its reference.

use std::collections::HashSet;
use std::process::Command;

use radvox::data::poses::{poses_path, read_tum, write_tum, TumPose};
use radvox::data::voxelize::TargetPolicy;
use radvox::data::Layout;
use radvox::map::ray::key;
use radvox::map::{FrameSource, MapError, SceneFrames};
use radvox::sim::root::{scene_name, simulate_root};
use radvox::sim::{SimConfig, Simulator};

mod common;

fn keys(points: &[[f64; 3]]) -> HashSet<[i32; 3]> {
    points.iter().map(|&p| key(p, 0.2)).collect()
}

fn overlap(a: &HashSet<[i32; 3]>, b: &HashSet<[i32; 3]>) -> f64 {
    a.intersection(b).count() as f64 / a.union(b).count() as f64
}

#[test]
fn simulated_poses_register_frames_and_build_a_map() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = SimConfig { seed: 5, scenes: 2, frames_per_scene: 6, ..Default::default() };
    let root = simulate_root(&cfg, &dir.path().join("sim"), TargetPolicy::plain(), false).unwrap().root;
    let sim = Simulator::new(cfg.clone()).unwrap();
    for k in 0..2 {
        let poses = read_tum(&poses_path(&root, &scene_name(k))).unwrap();
        assert_eq!(poses.len(), 6);
        let traj = sim.layout(k).1;
        for (p, t) in poses.iter().zip(sim.lidar_times()) {
            let want = traj.pose(t);
            let q = TumPose::from_yaw(0.0, [0.0; 3], want.yaw).q;
            assert!((p.t[0] - want.pos.x).abs() < 1e-12 && (p.t[1] - want.pos.y).abs() < 1e-12);
            assert!((p.t[2] - want.pos.z).abs() < 1e-12 && (0..4).all(|i| (p.q[i] - q[i]).abs() < 1e-12));
        }
    }
    // the world frames of a static scene overlap; the sensor frames less (the ego moved 1.2 m)
    let frames = SceneFrames::open(&root, "scene00", FrameSource::Target, Layout::default(), 0.5).unwrap();
    let (a, b) = (frames.frame(0).unwrap(), frames.frame(3).unwrap());
    let (wa, wb) = (keys(&a.points), keys(&b.points));
    let unposed = |f: &radvox::map::source::WorldFrame| {
        let t = f.pose;
        let back: Vec<[f64; 3]> = (f.points.iter())
            .map(|p| {
                let r = t.rotation();
                let d = [p[0] - t.t[0], p[1] - t.t[1], p[2] - t.t[2]];
                std::array::from_fn(|i| r[0][i] * d[0] + r[1][i] * d[1] + r[2][i] * d[2])
            })
            .collect();
        keys(&back)
    };
    let (registered, raw) = (overlap(&wa, &wb), overlap(&unposed(&a), &unposed(&b)));
    println!("frame 0 vs 3 voxel overlap: world {registered:.3}, sensor frame {raw:.3}");
    assert!(registered > raw + 0.05 && registered > 0.1, "world {registered} vs sensor {raw}");

    // a pose short, or none: errors that name the file
    let path = poses_path(&root, "scene01");
    let mut poses = read_tum(&path).unwrap();
    poses.pop();
    write_tum(&path, &poses).unwrap();
    let e = SceneFrames::open(&root, "scene01", FrameSource::Target, Layout::default(), 0.5).unwrap_err();
    assert!(matches!(e, MapError::Data(_)) && e.to_string().contains("5 poses for 6 frames"), "{e}");
    assert!(e.to_string().contains("scene01/poses.txt"), "{e}");
    std::fs::remove_file(&path).unwrap();
    let e = SceneFrames::open(&root, "scene01", FrameSource::Target, Layout::default(), 0.5).unwrap_err();
    assert!(e.to_string().contains("missing"), "{e}");

    // build_map: radar against the target reference, then the target against itself
    let out = dir.path().join("map");
    let run = |source: &str, out: &std::path::Path| {
        let o = Command::new(common::example("build_map"))
            .args(["--dataset-dir", root.to_str().unwrap(), "--scenes", "scene00", "--source", source])
            .args(["--compare-to", "target", "--bands", "0,20,60", "--out", out.to_str().unwrap(), "--no-progress"])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", common::stderr(&o));
        String::from_utf8(o.stdout).unwrap()
    };
    let text = run("radar", &out);
    for f in ["scene00.ply", "scene00_bev.png", "scene00_reference_bev.png", "frames.csv", "map.json", "compare.md"] {
        assert!(out.join(f).is_file(), "{f} missing; {text}");
    }
    let csv = std::fs::read_to_string(out.join("frames.csv")).unwrap();
    assert_eq!(csv.lines().count(), 7, "{csv}");
    assert!(text.contains("| 0-20 m |") && text.contains("| all |") && text.contains("M points/s"), "{text}");
    let same = run("target", &dir.path().join("self"));
    let all = same.lines().find(|l| l.starts_with("| all |")).unwrap();
    let cells: Vec<&str> = all.split('|').map(str::trim).collect();
    // recall, precision, F1 of a map against itself: 1; no false occupancy; DEM error 0
    assert_eq!(&cells[4..9], ["1.000", "1.000", "1.000", "0.000", "0.000"], "{all}");
}
