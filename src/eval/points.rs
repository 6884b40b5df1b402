//! Point metrics between voxel-centre clouds (metres): Chamfer, Hausdorff,
//! and precision/recall/F-score at distance tolerances.
//!
//! # Conventions
//! * `d(p, S)` is the Euclidean distance from `p` to its nearest point of `S`
//!   (exact, via [`KdTree`]).
//! * Directional means: `pred_to_target = mean_{p in P} d(p, T)` and
//!   `target_to_pred = mean_{t in T} d(t, P)`.
//! * **Chamfer = (pred_to_target + target_to_pred) / 2** (the mean of the two
//!   directional means, in metres); `chamfer_sum` is their sum (= 2 x Chamfer).
//! * Hausdorff = max(max_p d(p, T), max_t d(t, P)).
//! * At tolerance tau: precision = share of predicted points with
//!   `d(p, T) <= tau`, recall = share of target points with `d(t, P) <= tau`,
//!   F = harmonic mean (0 when both are 0).
//! * Both clouds empty: everything is `None` (undefined, never a perfect score).
//! * Exactly one cloud empty: the distances are infinite and reported as
//!   `None` (summaries count such frames as undefined instead of averaging an
//!   infinity); precision, recall and F at every tau are 0.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::geometry::Point;
use super::kdtree::KdTree;
use super::stats::harmonic;
use super::EvalError;

/// Default distance tolerances in metres.
pub const DEFAULT_TAUS: [f64; 2] = [0.5, 1.0];

/// Queries above this many points run in parallel.
const PARALLEL_MIN: usize = 2048;

/// Settings of the point metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PointConfig {
    /// Distance tolerances tau in metres (default 0.5 and 1.0).
    pub taus: Vec<f64>,
}

impl Default for PointConfig {
    fn default() -> Self {
        PointConfig { taus: DEFAULT_TAUS.to_vec() }
    }
}

impl PointConfig {
    /// Errors on a negative or non-finite tau.
    pub fn validate(&self) -> Result<(), EvalError> {
        match self.taus.iter().find(|t| !(t.is_finite() && **t >= 0.0)) {
            Some(t) => Err(EvalError::Config(format!("tau must be finite and >= 0, got {t}"))),
            None => Ok(()),
        }
    }
}

/// Precision, recall and F-score at one tolerance.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FScore {
    /// Tolerance in metres.
    pub tau: f64,
    /// Share of predicted points within tau of the target.
    pub precision: Option<f64>,
    /// Share of target points within tau of the prediction.
    pub recall: Option<f64>,
    /// Harmonic mean of precision and recall.
    pub fscore: Option<f64>,
}

/// Point metrics of one prediction against one target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PointMetrics {
    /// Predicted points.
    pub n_pred: usize,
    /// Target points.
    pub n_target: usize,
    /// Mean distance from predicted points to the target (metres).
    pub pred_to_target: Option<f64>,
    /// Mean distance from target points to the prediction (metres).
    pub target_to_pred: Option<f64>,
    /// Mean of the two directional means (metres).
    pub chamfer: Option<f64>,
    /// Sum of the two directional means (metres).
    pub chamfer_sum: Option<f64>,
    /// Larger of the two directional maxima (metres).
    pub hausdorff: Option<f64>,
    /// One entry per configured tau, in configuration order.
    pub fscores: Vec<FScore>,
}

impl PointMetrics {
    /// The entry for tolerance `tau` (matched within 1e-9).
    pub fn at(&self, tau: f64) -> Option<&FScore> {
        self.fscores.iter().find(|f| (f.tau - tau).abs() < 1e-9)
    }
}

/// Point metrics of `pred` against `target` (builds both trees).
pub fn point_metrics(pred: &[Point], target: &[Point], cfg: &PointConfig) -> PointMetrics {
    let (p, t) = rayon::join(|| KdTree::new(pred.to_vec()), || KdTree::new(target.to_vec()));
    point_metrics_trees(&p, &t, cfg)
}

/// Point metrics with prebuilt trees (reuse the target tree across methods).
pub fn point_metrics_trees(pred: &KdTree, target: &KdTree, cfg: &PointConfig) -> PointMetrics {
    let (n_pred, n_target) = (pred.len(), target.len());
    let mut m = PointMetrics {
        n_pred,
        n_target,
        pred_to_target: None,
        target_to_pred: None,
        chamfer: None,
        chamfer_sum: None,
        hausdorff: None,
        fscores: cfg.taus.iter().map(|&tau| FScore { tau, precision: None, recall: None, fscore: None }).collect(),
    };
    if n_pred == 0 && n_target == 0 {
        return m;
    }
    if n_pred == 0 || n_target == 0 {
        for f in &mut m.fscores {
            (f.precision, f.recall, f.fscore) = (Some(0.0), Some(0.0), Some(0.0));
        }
        return m;
    }
    let (pt, tp) =
        rayon::join(|| nearest_distances(pred.points(), target), || nearest_distances(target.points(), pred));
    let (a, b) = (mean(&pt), mean(&tp));
    m.pred_to_target = Some(a);
    m.target_to_pred = Some(b);
    m.chamfer = Some(0.5 * (a + b));
    m.chamfer_sum = Some(a + b);
    m.hausdorff = Some(pt.iter().chain(&tp).copied().fold(0.0, f64::max));
    for f in &mut m.fscores {
        let within = |d: &[f64]| d.iter().filter(|&&x| x <= f.tau).count() as f64 / d.len() as f64;
        let (p, r) = (within(&pt), within(&tp));
        (f.precision, f.recall, f.fscore) = (Some(p), Some(r), Some(harmonic(p, r)));
    }
    m
}

/// Distance from each point of `from` to its nearest point of `to`
/// (`f64::INFINITY` when `to` is empty or the point is not finite).
pub fn nearest_distances(from: &[Point], to: &KdTree) -> Vec<f64> {
    let one = |q: &Point| to.nearest_distance(q).unwrap_or(f64::INFINITY);
    if from.len() >= PARALLEL_MIN {
        from.par_iter().map(one).collect()
    } else {
        from.iter().map(one).collect()
    }
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::kdtree::dist2;
    use proptest::prelude::*;

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-9)
    }

    #[test]
    fn single_points() {
        let m = point_metrics(&[[0.0, 0.0, 0.0]], &[[0.3, 0.4, 0.0]], &PointConfig::default());
        assert!(close(m.chamfer, 0.5) && close(m.chamfer_sum, 1.0) && close(m.hausdorff, 0.5));
        // d = 0.5 <= tau = 0.5: within (inclusive).
        let f = m.at(0.5).unwrap();
        assert!(close(f.precision, 1.0) && close(f.recall, 1.0) && close(f.fscore, 1.0));
        let m = point_metrics(&[[0.0; 3]], &[[3.0, 0.0, 0.0]], &PointConfig::default());
        assert!(close(m.chamfer, 3.0) && close(m.at(1.0).unwrap().fscore, 0.0));
    }

    #[test]
    fn hand_computed_asymmetric_case() {
        // P = {0, 1} on x, T = {0}: P->T = (0 + 1)/2 = 0.5, T->P = 0.
        let p = [[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]];
        let t = [[0.0, 0.0, 0.0]];
        let m = point_metrics(&p, &t, &PointConfig::default());
        assert!(close(m.pred_to_target, 0.5) && close(m.target_to_pred, 0.0));
        assert!(close(m.chamfer, 0.25) && close(m.chamfer_sum, 0.5) && close(m.hausdorff, 1.0));
        let f = m.at(0.5).unwrap();
        assert!(close(f.precision, 0.5) && close(f.recall, 1.0) && close(f.fscore, 2.0 / 3.0));
        let f = m.at(1.0).unwrap();
        assert!(close(f.precision, 1.0) && close(f.fscore, 1.0));
    }

    #[test]
    fn empty_clouds() {
        let cfg = PointConfig::default();
        let m = point_metrics(&[], &[], &cfg);
        assert!(m.chamfer.is_none() && m.hausdorff.is_none());
        assert!(m.fscores.iter().all(|f| f.fscore.is_none() && f.precision.is_none()));
        for m in [point_metrics(&[], &[[1.0; 3]], &cfg), point_metrics(&[[1.0; 3]], &[], &cfg)] {
            assert!(m.chamfer.is_none() && m.chamfer_sum.is_none() && m.hausdorff.is_none());
            assert!(m.fscores.iter().all(|f| f.fscore == Some(0.0) && f.recall == Some(0.0)));
        }
        assert!(PointConfig { taus: vec![-1.0] }.validate().is_err());
    }

    fn brute(p: &[Point], t: &[Point], tau: f64) -> (f64, f64, f64) {
        let dirs = |a: &[Point], b: &[Point]| -> Vec<f64> {
            a.iter().map(|x| b.iter().map(|y| dist2(x, y)).fold(f64::INFINITY, f64::min).sqrt()).collect()
        };
        let (pt, tp) = (dirs(p, t), dirs(t, p));
        let chamfer = 0.5 * (mean(&pt) + mean(&tp));
        let haus = pt.iter().chain(&tp).copied().fold(0.0, f64::max);
        let prec = pt.iter().filter(|d| **d <= tau).count() as f64 / pt.len() as f64;
        let rec = tp.iter().filter(|d| **d <= tau).count() as f64 / tp.len() as f64;
        (chamfer, haus, harmonic(prec, rec))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn metrics_match_brute_force(
            p in prop::collection::vec(prop::array::uniform3(-5.0f64..5.0), 1..120),
            t in prop::collection::vec(prop::array::uniform3(-5.0f64..5.0), 1..120),
        ) {
            let m = point_metrics(&p, &t, &PointConfig::default());
            for tau in DEFAULT_TAUS {
                let (c, h, f) = brute(&p, &t, tau);
                prop_assert!(close(m.chamfer, c) && close(m.hausdorff, h));
                prop_assert!(close(m.at(tau).unwrap().fscore, f));
            }
        }
    }
}
