//! Occupancy scores of grid tensors at a threshold (pooled counts of a
//! batch): what the VAE's validation reports during training.

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn occupancy_counts_and_ratios() {
        let p = Tensor::from_slice(&[1.0f32, 1.0, 0.0, 0.0]).view([1, 1, 1, 2, 2]);
        let t = Tensor::from_slice(&[1.0f32, 0.0, 1.0, 0.0]).view([1, 1, 1, 2, 2]);
        assert_eq!(Occupancy::counts(&p, &t, 0.5), (1.0, 1.0, 1.0));
        let o = Occupancy::from_counts(1.0, 1.0, 1.0);
        assert!((o.iou - 1.0 / 3.0).abs() < 1e-12 && o.precision == 0.5 && o.recall == 0.5 && o.f1 == 0.5);
        assert_eq!(Occupancy::from_counts(0.0, 0.0, 0.0).iou, 0.0, "no perfect score from nothing");
        let centre = crate::eval::GridGeometry::NTU4DRADLM.centre([0, 0, 0]);
        assert!((0..3).all(|k| (centre[k] - [0.1, -19.9, -5.9][k]).abs() < 1e-6), "{centre:?}");
    }
}
