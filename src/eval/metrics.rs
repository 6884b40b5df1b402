//! Scores of a predicted occupancy grid against its target: IoU,
//! precision, recall and F1 at a threshold, and the Chamfer distance in
//! metres between occupied voxel centres.

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// Validation metrics at the occupancy threshold. A ratio with nothing to
/// count (e.g. precision when nothing is predicted) is 0: no perfect score
/// from nothing.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Occupancy {
    /// True positives / (TP + FP + FN); 0 when both grids are empty.
    pub iou: f64,
    /// TP / (TP + FP); 0 when nothing is predicted.
    pub precision: f64,
    /// TP / (TP + FN); 0 when nothing is occupied.
    pub recall: f64,
    /// 2 precision recall / (precision + recall).
    pub f1: f64,
}

impl Occupancy {
    /// Metrics from voxel counts.
    pub fn from_counts(tp: f64, fp: f64, fn_: f64) -> Occupancy {
        let ratio = |a: f64, b: f64| if b == 0.0 { 0.0 } else { a / b };
        let (precision, recall) = (ratio(tp, tp + fp), ratio(tp, tp + fn_));
        let f1 = if precision + recall == 0.0 { 0.0 } else { 2.0 * precision * recall / (precision + recall) };
        Occupancy { iou: ratio(tp, tp + fp + fn_), precision, recall, f1 }
    }

    /// `(TP, FP, FN)` of channel 0 of two `(B, C, ...)` grids at `threshold`.
    pub fn counts(pred: &Tensor, truth: &Tensor, threshold: f64) -> (f64, f64, f64) {
        let p = pred.select(1, 0).gt(threshold);
        let t = truth.select(1, 0).gt(threshold);
        let count = |m: Tensor| m.sum(Kind::Int64).int64_value(&[]) as f64;
        (count(p.logical_and(&t)), count(p.logical_and(&t.logical_not())), count(p.logical_not().logical_and(&t)))
    }
}

/// Voxel size of NTU4DRadLM_Pre (metres).
pub const VOXEL_SIZE: f32 = 0.2;
/// Lower corner `(x, y, z)` of the grid in metres (x 0..120, y -20..20, z -6..10).
pub const GRID_ORIGIN: [f32; 3] = [0.0, -20.0, -6.0];

/// Centre in metres of voxel `(x, y, z)` (file index order).
pub fn voxel_centre([x, y, z]: [usize; 3]) -> [f32; 3] {
    let c = |i: usize, o: f32| o + (i as f32 + 0.5) * VOXEL_SIZE;
    [c(x, GRID_ORIGIN[0]), c(y, GRID_ORIGIN[1]), c(z, GRID_ORIGIN[2])]
}

/// Symmetric Chamfer distance: the mean over both sets of each point's
/// distance to the nearest point of the other set, averaged (metres).
/// Infinite when exactly one set is empty, 0 when both are.
pub fn chamfer(a: &[[f32; 3]], b: &[[f32; 3]]) -> f64 {
    match (a.is_empty(), b.is_empty()) {
        (true, true) => 0.0,
        (true, false) | (false, true) => f64::INFINITY,
        _ => 0.5 * (mean_nearest(a, b) + mean_nearest(b, a)),
    }
}

/// Mean distance from each point of `a` to its nearest point in `b`, with
/// a uniform hash grid over `b` searched in growing shells.
fn mean_nearest(a: &[[f32; 3]], b: &[[f32; 3]]) -> f64 {
    use std::collections::HashMap;
    const CELL: f32 = 1.0;
    let key = |p: &[f32; 3]| [(p[0] / CELL).floor() as i64, (p[1] / CELL).floor() as i64, (p[2] / CELL).floor() as i64];
    let mut grid: HashMap<[i64; 3], Vec<[f32; 3]>> = HashMap::new();
    for p in b {
        grid.entry(key(p)).or_default().push(*p);
    }
    let d2 = |p: &[f32; 3], q: &[f32; 3]| (0..3).map(|k| ((p[k] - q[k]) as f64).powi(2)).sum::<f64>();
    let mut total = 0.0;
    for p in a {
        let k = key(p);
        let mut best = f64::INFINITY;
        for r in 0i64.. {
            // Points in shell r are at least (r - 1) * CELL away.
            if best.is_finite() && ((r - 1) as f64 * CELL as f64).powi(2) > best {
                break;
            }
            for dx in -r..=r {
                for dy in -r..=r {
                    for dz in -r..=r {
                        if dx.abs().max(dy.abs()).max(dz.abs()) != r {
                            continue;
                        }
                        if let Some(pts) = grid.get(&[k[0] + dx, k[1] + dy, k[2] + dz]) {
                            for q in pts {
                                best = best.min(d2(p, q));
                            }
                        }
                    }
                }
            }
        }
        total += best.sqrt();
    }
    total / a.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chamfer_matches_brute_force() {
        let mut s = 1u64;
        let mut rnd = || {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1);
            (s >> 40) as f32 / (1u64 << 24) as f32 * 10.0
        };
        let a: Vec<[f32; 3]> = (0..300).map(|_| [rnd(), rnd(), rnd()]).collect();
        let b: Vec<[f32; 3]> = (0..200).map(|_| [rnd(), rnd(), rnd() * 0.3]).collect();
        let brute = |a: &[[f32; 3]], b: &[[f32; 3]]| {
            a.iter()
                .map(|p| {
                    b.iter()
                        .map(|q| (0..3).map(|k| ((p[k] - q[k]) as f64).powi(2)).sum::<f64>())
                        .fold(f64::MAX, f64::min)
                        .sqrt()
                })
                .sum::<f64>()
                / a.len() as f64
        };
        let want = 0.5 * (brute(&a, &b) + brute(&b, &a));
        assert!((chamfer(&a, &b) - want).abs() < 1e-9, "{} vs {want}", chamfer(&a, &b));
        assert_eq!(chamfer(&a, &a), 0.0);
        assert!(chamfer(&a, &[]).is_infinite());
    }

    #[test]
    fn occupancy_counts_and_ratios() {
        let p = Tensor::from_slice(&[1.0f32, 1.0, 0.0, 0.0]).view([1, 1, 1, 2, 2]);
        let t = Tensor::from_slice(&[1.0f32, 0.0, 1.0, 0.0]).view([1, 1, 1, 2, 2]);
        assert_eq!(Occupancy::counts(&p, &t, 0.5), (1.0, 1.0, 1.0));
        let o = Occupancy::from_counts(1.0, 1.0, 1.0);
        assert!((o.iou - 1.0 / 3.0).abs() < 1e-12 && o.precision == 0.5 && o.recall == 0.5 && o.f1 == 0.5);
        assert_eq!(Occupancy::from_counts(0.0, 0.0, 0.0).iou, 0.0, "no perfect score from nothing");
        assert_eq!(voxel_centre([0, 0, 0]), [0.1, -19.9, -5.9]);
    }
}
