//! Timing of the point metrics on 20,000 x 20,000 voxel centres (NTU grid).
//! Ignored by default; run with
//! `cargo test --release --test bench_points -- --ignored --nocapture`.

use std::collections::BTreeSet;
use std::time::Instant;

use radvox::eval::kdtree::{dist2, KdTree};
use radvox::eval::points::nearest_distances;
use radvox::eval::*;

struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u32) -> u32 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((self.0 >> 33) % n as u64) as u32
    }
}

/// `n` distinct voxels: ground (z = 30) and walls, like a LiDAR sweep.
fn scene(rng: &mut Lcg, n: usize) -> VoxelSet {
    let mut s = BTreeSet::new();
    while s.len() < n {
        let c = match rng.below(3) {
            0 => [rng.below(600), rng.below(200), 30],
            1 => [rng.below(600), 40 + rng.below(3), 30 + rng.below(40)],
            _ => [100 + rng.below(40), rng.below(200), 30 + rng.below(30)],
        };
        s.insert(c);
    }
    VoxelSet::new(s.into_iter().collect())
}

/// `n` distinct voxels near `base` (jitter of up to 2 voxels, 10 % uniform outliers).
fn jittered(rng: &mut Lcg, base: &VoxelSet, n: usize) -> VoxelSet {
    let mut s = BTreeSet::new();
    let b = base.coords();
    while s.len() < n {
        let c = if rng.below(10) == 0 {
            [rng.below(600), rng.below(200), rng.below(80)]
        } else {
            let p = b[rng.below(b.len() as u32) as usize];
            let j = |v: u32, max: u32, r: &mut Lcg| (v + r.below(5)).saturating_sub(2).min(max - 1);
            [j(p[0], 600, rng), j(p[1], 200, rng), j(p[2], 80, rng)]
        };
        s.insert(c);
    }
    VoxelSet::new(s.into_iter().collect())
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

#[test]
#[ignore = "timing; run in release with --ignored --nocapture"]
fn point_metrics_20k_by_20k() {
    let geom = GridGeometry::NTU4DRADLM;
    let mut rng = Lcg(7);
    let target = scene(&mut rng, 20_000);
    let pred = jittered(&mut rng, &target, 20_000);
    let radar = jittered(&mut rng, &target, 2_000);
    let (tp, pp) = (target.centres(&geom), pred.centres(&geom));
    let cfg = PointConfig::default();

    let t = Instant::now();
    let tree = KdTree::new(tp.clone());
    let build = ms(t);
    let t = Instant::now();
    let d = nearest_distances(&pp, &tree);
    let one_direction = ms(t);

    let mut best = f64::INFINITY;
    let mut m = None;
    for _ in 0..5 {
        let t = Instant::now();
        m = Some(point_metrics(&pp, &tp, &cfg));
        best = best.min(ms(t));
    }
    let m = m.unwrap();

    let p = Prediction::from_set(&pred);
    let input = FrameInput { frame: "bench", scene: "bench", prediction: &p, radar: &radar, target: &target };
    let t = Instant::now();
    let rec = evaluate_frame(&geom, &input, &EvalConfig::default()).unwrap();
    let frame = ms(t);

    // Exactness: 1,000 queries against a brute-force scan.
    for i in (0..pp.len()).step_by(20) {
        let brute = tp.iter().map(|q| dist2(q, &pp[i])).fold(f64::INFINITY, f64::min).sqrt();
        assert_eq!(d[i], brute);
    }
    let t = Instant::now();
    let brute: f64 = pp[..1000].iter().map(|q| tp.iter().map(|p| dist2(p, q)).fold(f64::INFINITY, f64::min)).sum();
    let brute_ms = ms(t) * pp.len() as f64 / 1000.0 * 2.0;
    assert!(brute.is_finite());

    println!("20k x 20k: tree build {build:.2} ms, one direction {one_direction:.2} ms");
    println!("point_metrics (2 trees + both directions + 2 taus), best of 5: {best:.2} ms");
    println!("evaluate_frame (prediction 20k + radar 2k vs target 20k, all metrics): {frame:.2} ms");
    println!("brute force estimate both directions: {brute_ms:.0} ms");
    println!(
        "chamfer {:.4} m, hausdorff {:.3} m, F@0.5 {:.4}, F@1 {:.4}, pred F1 {:.4}, radar F1 {:.4}, threads {}",
        m.chamfer.unwrap(),
        m.hausdorff.unwrap(),
        m.at(0.5).unwrap().fscore.unwrap(),
        m.at(1.0).unwrap().fscore.unwrap(),
        rec.prediction.voxel.scores.f1.unwrap(),
        rec.radar.voxel.scores.f1.unwrap(),
        rayon::current_num_threads()
    );
    assert!(best < 2_000.0, "point metrics too slow: {best} ms");

    // Harder case for pruning: the whole prediction 8 m above the target and uniform noise.
    let lifted: Vec<Point> = pp.iter().map(|p| [p[0], p[1], p[2] + 8.0]).collect();
    let uniform = VoxelSet::new((0..20_000).map(|_| [rng.below(600), rng.below(200), rng.below(80)]).collect());
    for (name, cloud) in [("lifted 8 m", lifted), ("uniform noise", uniform.centres(&geom))] {
        let t = Instant::now();
        let m = point_metrics(&cloud, &tp, &cfg);
        println!(
            "{name}: {} x {} points in {:.2} ms (chamfer {:.3} m)",
            cloud.len(),
            tp.len(),
            ms(t),
            m.chamfer.unwrap()
        );
    }
}
