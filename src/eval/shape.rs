//! Shape diagnostics: centroid offset, count ratio, z-spread ratio.
//!
//! # Conventions
//! * Centroid offset = centroid(prediction) - centroid(target) in metres;
//!   `None` when either cloud is empty.
//! * Count ratio = predicted count / target count; `None` when the target is
//!   empty (0 when only the prediction is empty).
//! * z-spread ratio = population std of z over the prediction / that of the
//!   target; `None` when either cloud is empty or the target's z std is 0.
//!   (A single predicted point against a spread target gives 0.)

use serde::{Deserialize, Serialize};

use super::geometry::Point;
use super::stats::ratio;
use super::voxels::EmptyCase;

/// Shape diagnostics of one prediction against one target.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ShapeMetrics {
    /// `[dx, dy, dz]` = prediction centroid - target centroid (metres).
    pub centroid_offset: Option<[f64; 3]>,
    /// Euclidean norm of the centroid offset (metres).
    pub centroid_distance: Option<f64>,
    /// Predicted count / target count.
    pub count_ratio: Option<f64>,
    /// std(z of prediction) / std(z of target).
    pub z_spread_ratio: Option<f64>,
    /// Which side is empty.
    pub empty: EmptyCase,
}

/// Shape diagnostics of `pred` against `target`.
pub fn shape_metrics(pred: &[Point], target: &[Point]) -> ShapeMetrics {
    let empty = EmptyCase::of(pred.len(), target.len());
    let count_ratio = ratio(pred.len() as f64, target.len() as f64);
    if empty != EmptyCase::Neither {
        return ShapeMetrics {
            centroid_offset: None,
            centroid_distance: None,
            count_ratio,
            z_spread_ratio: None,
            empty,
        };
    }
    let (cp, ct) = (centroid(pred), centroid(target));
    let d: [f64; 3] = std::array::from_fn(|k| cp[k] - ct[k]);
    let norm = (d[0] * d[0] + d[1] * d[1] + d[2] * d[2]).sqrt();
    let z_spread_ratio = ratio(z_std(pred, cp[2]), z_std(target, ct[2]));
    ShapeMetrics { centroid_offset: Some(d), centroid_distance: Some(norm), count_ratio, z_spread_ratio, empty }
}

/// Mean of non-empty `points`.
fn centroid(points: &[Point]) -> [f64; 3] {
    let n = points.len() as f64;
    std::array::from_fn(|k| points.iter().map(|p| p[k]).sum::<f64>() / n)
}

/// Population standard deviation of z around `mean_z`.
fn z_std(points: &[Point], mean_z: f64) -> f64 {
    (points.iter().map(|p| (p[2] - mean_z).powi(2)).sum::<f64>() / points.len() as f64).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed() {
        let target = [[0.0, 0.0, -1.0], [0.0, 0.0, 1.0]]; // centroid 0, z std 1
        let pred = [[1.0, 2.0, 0.5], [1.0, 2.0, 1.5], [1.0, 2.0, 1.0], [1.0, 2.0, 1.0]]; // z std sqrt(0.125)
        let s = shape_metrics(&pred, &target);
        assert_eq!(s.centroid_offset, Some([1.0, 2.0, 1.0]));
        assert!((s.centroid_distance.unwrap() - 6f64.sqrt()).abs() < 1e-12);
        assert_eq!(s.count_ratio, Some(2.0));
        assert!((s.z_spread_ratio.unwrap() - 0.125f64.sqrt()).abs() < 1e-12);
        assert_eq!(s.empty, EmptyCase::Neither);
    }

    #[test]
    fn empty_and_flat_cases() {
        let p = [[0.0, 0.0, 1.0]];
        let s = shape_metrics(&[], &p);
        assert_eq!((s.count_ratio, s.centroid_offset, s.z_spread_ratio), (Some(0.0), None, None));
        assert_eq!(s.empty, EmptyCase::Prediction);
        let s = shape_metrics(&p, &[]);
        assert_eq!((s.count_ratio, s.empty), (None, EmptyCase::Target));
        assert_eq!(shape_metrics(&[], &[]).empty, EmptyCase::Both);
        // Flat target: z spread undefined.
        let s = shape_metrics(&p, &p);
        assert_eq!((s.z_spread_ratio, s.count_ratio, s.centroid_distance), (None, Some(1.0), Some(0.0)));
    }
}
