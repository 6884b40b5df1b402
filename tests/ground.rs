//! Ground removal on synthetic clouds: sloped and gently curved ground with
//! vehicles, poles, a wall and a bush on it.
//!
//! Stated rates: >= 98 % of ground points removed; >= 99 % of object points
//! more than 0.3 m above the ground kept.

use radvox::data::voxelize::{classify_ground, remove_ground, GroundParams, PointCloud};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

struct Synthetic {
    cloud: PointCloud,
    /// 0 ground, 1 object above 0.3 m, 2 object part near the ground.
    kind: Vec<u8>,
}

fn synthetic(ground: impl Fn(f64, f64) -> f64, seed: u64) -> Synthetic {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut s = Synthetic { cloud: PointCloud::empty(4), kind: Vec::new() };
    let push = |s: &mut Synthetic, x: f64, y: f64, z: f64, rng: &mut ChaCha8Rng| {
        let n: f64 = rng.sample(StandardNormal);
        let zn = z + 0.02 * n;
        let h = zn - ground(x, y);
        let kind = if h.abs() < 0.08 {
            0
        } else if h > 0.3 {
            1
        } else {
            2
        };
        s.cloud.push(&[x as f32, y as f32, zn as f32, 20.0]);
        s.kind.push(kind);
    };
    // Ground: denser near the sensor, like a real scan.
    for _ in 0..40_000 {
        let x = 60.0 * rng.random::<f64>().powf(1.5) + 1.0;
        let y = rng.random_range(-18.0..18.0);
        push(&mut s, x, y, ground(x, y), &mut rng);
    }
    // Vehicles: box surfaces from 0.25 m to 1.6 m above the ground.
    for &(cx, cy) in &[(12.0, 4.0), (25.0, -4.5), (40.0, 4.2), (8.0, -3.0)] {
        let g = ground(cx, cy);
        for _ in 0..1500 {
            let (x, y) = (cx + rng.random_range(-2.2..2.2), cy + rng.random_range(-0.9..0.9));
            let z = g + rng.random_range(0.25..1.6);
            let face = rng.random_range(0..3);
            let (x, y) = match face {
                0 => (cx - 2.2, y),
                1 => (x, cy - 0.9f64.copysign(cy)),
                _ => (x, y),
            };
            let z = if face == 2 { g + 1.6 } else { z };
            push(&mut s, x, y, z, &mut rng);
        }
    }
    // Poles and a wall: from the ground up.
    for &(cx, cy) in &[(15.0, 6.5), (30.0, -6.5), (45.0, 6.5), (55.0, -6.5)] {
        for _ in 0..400 {
            let a = rng.random_range(0.0..std::f64::consts::TAU);
            let (x, y) = (cx + 0.15 * a.cos(), cy + 0.15 * a.sin());
            push(&mut s, x, y, ground(x, y) + rng.random_range(0.0..6.0), &mut rng);
        }
    }
    for _ in 0..3000 {
        let x = rng.random_range(20.0..35.0);
        push(&mut s, x, 9.0, ground(x, 9.0) + rng.random_range(0.0..1.8), &mut rng);
    }
    // A bush: a half sphere of radius 0.8 on the ground.
    for _ in 0..800 {
        let (a, e) = (rng.random_range(0.0..std::f64::consts::TAU), rng.random_range(0.0..1.5f64));
        let (x, y) = (18.0 + 0.8 * e.cos() * a.cos(), -8.0 + 0.8 * e.cos() * a.sin());
        push(&mut s, x, y, ground(18.0, -8.0) + 0.8 * e.sin(), &mut rng);
    }
    s
}

fn rates(s: &Synthetic, prm: &GroundParams) -> (f64, f64) {
    let (labels, _) = classify_ground(&s.cloud, prm);
    let count = |kind: u8, want: bool| {
        let of_kind: Vec<bool> = s.kind.iter().zip(&labels).filter(|(k, _)| **k == kind).map(|(_, l)| *l).collect();
        of_kind.iter().filter(|&&l| l == want).count() as f64 / of_kind.len() as f64
    };
    (count(0, true), count(1, false))
}

#[test]
fn sloped_ground_is_removed_and_objects_kept() {
    let s = synthetic(|x, y| -1.8 + 0.03 * x + 0.01 * y, 1);
    let (ground_removed, objects_kept) = rates(&s, &GroundParams::default());
    println!("sloped: ground removed {ground_removed:.4}, objects kept {objects_kept:.4}");
    assert!(ground_removed >= 0.98, "{ground_removed}");
    assert!(objects_kept >= 0.99, "{objects_kept}");
}

#[test]
fn gently_curved_ground_uses_local_planes() {
    // 1.4 m of curvature over 60 m: a single plane cannot follow it.
    let ground = |x: f64, y: f64| -1.8 + 0.02 * x + 0.01 * y + 0.0004 * x * x;
    let s = synthetic(ground, 2);
    let (labels, stats) = classify_ground(&s.cloud, &GroundParams::default());
    assert!(stats.local_planes > 20, "{stats:?}");
    let (ground_removed, objects_kept) = rates(&s, &GroundParams::default());
    println!("curved: ground removed {ground_removed:.4}, objects kept {objects_kept:.4}, {stats:?}");
    assert!(ground_removed >= 0.98, "{ground_removed}");
    assert!(objects_kept >= 0.99, "{objects_kept}");
    assert_eq!(labels.len(), s.cloud.len());
}

#[test]
fn removal_is_deterministic_and_keeps_non_finite_points() {
    let mut s = synthetic(|x, _| -1.7 + 0.02 * x, 3);
    s.cloud.push(&[f32::NAN, 0.0, -1.7, 1.0]);
    let (a, sa) = remove_ground(&s.cloud, &GroundParams::default());
    let (b, sb) = remove_ground(&s.cloud, &GroundParams::default());
    assert!(a.to_le_bytes() == b.to_le_bytes(), "same input, same output (NaN compared by bits)");
    assert_eq!(sa, sb);
    assert!(a.rows().any(|r| r[0].is_nan()), "the NaN point is left for the voxelizer to count");
    let plane = sa.plane.expect("a plane");
    assert!((plane[0] - 0.02).abs() < 0.005 && (plane[2] + 1.7).abs() < 0.1, "{plane:?}");
}

#[test]
fn degenerate_clouds_do_not_panic() {
    let prm = GroundParams::default();
    assert_eq!(remove_ground(&PointCloud::empty(4), &prm).0.len(), 0);
    let two = PointCloud::from_vec(4, vec![1.0, 1.0, -1.0, 1.0, 2.0, 2.0, -1.0, 1.0]).expect("cloud");
    assert_eq!(remove_ground(&two, &prm).0.len(), 2, "too few seeds: nothing removed");
    let wall =
        PointCloud::from_vec(4, (0..200).flat_map(|i| [5.0, 0.0, i as f32 * 0.05, 1.0]).collect()).expect("cloud");
    let (kept, _) = remove_ground(&wall, &prm);
    assert!(kept.len() >= 190, "a vertical wall is not ground: kept {}", kept.len());
}
