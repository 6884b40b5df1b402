//! Threshold sweep on a validation set: pick the F1-best or IoU-best
//! occupancy threshold.
//!
//! A voxel is occupied at threshold `t` when its value is `> t` (listed
//! voxels only; unlisted voxels have value 0). Each frame is processed once:
//! its values are sorted in descending order with a "hits the target" flag,
//! and cumulative hit counts give TP/FP/FN at every threshold by binary
//! search, so the cost is O(n log n + T log n) per frame (n listed voxels,
//! T thresholds; target look-ups by binary search) instead of a rescan
//! per threshold. Frames run in parallel.
//!
//! # Selection rule
//! The score per threshold is the objective (F1 or IoU) of either the pooled
//! counts (micro, the default) or the mean over frames where it is defined
//! (macro). The best threshold maximises the score; **ties (within 1e-12)
//! go to the lower threshold**. Thresholds whose score is undefined (all
//! frames empty at that threshold and in the target) are never chosen; when
//! none is defined `best` is None.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::stats::{MeanAcc, Stat};
use super::voxel::{Counts, VoxelScores};
use super::voxels::{Prediction, VoxelSet};
use super::EvalError;
use crate::io::chart::{line_chart, Series, COLORS};
use crate::io::png::Canvas;

/// Scores closer than this count as a tie.
const TIE_EPS: f64 = 1e-12;

/// Which thresholds to try.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Thresholds {
    /// These values (sorted and deduplicated; must be finite).
    List(Vec<f32>),
    /// `n` evenly spaced values strictly inside (0, 1): `i / (n + 1)` for `i = 1..=n`.
    Even(usize),
}

impl Thresholds {
    /// The thresholds in ascending order.
    pub fn resolve(&self) -> Result<Vec<f32>, EvalError> {
        let mut v = match self {
            Thresholds::List(v) => v.clone(),
            Thresholds::Even(n) => (1..=*n).map(|i| (i as f64 / (*n + 1) as f64) as f32).collect(),
        };
        if v.is_empty() {
            return Err(EvalError::Config("threshold sweep needs at least one threshold".into()));
        }
        if let Some(t) = v.iter().find(|t| !t.is_finite()) {
            return Err(EvalError::Config(format!("non-finite threshold {t}")));
        }
        v.sort_by(f32::total_cmp);
        v.dedup();
        Ok(v)
    }
}

/// The score to maximise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Objective {
    /// F1 of the voxel sets.
    F1,
    /// Intersection over union.
    Iou,
}

/// How frames are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Averaging {
    /// Score of the pooled TP/FP/FN counts.
    Micro,
    /// Mean of per-frame scores over frames where defined.
    Macro,
}

/// Settings of a sweep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepConfig {
    /// Thresholds to try (default: 99 evenly spaced, 0.01 ..= 0.99).
    pub thresholds: Thresholds,
    /// Score to maximise (default F1).
    pub objective: Objective,
    /// Frame combination (default micro).
    pub averaging: Averaging,
}

impl Default for SweepConfig {
    fn default() -> Self {
        SweepConfig { thresholds: Thresholds::Even(99), objective: Objective::F1, averaging: Averaging::Micro }
    }
}

/// One validation frame.
#[derive(Debug, Clone, Copy)]
pub struct SweepFrame<'a> {
    /// Predicted values.
    pub prediction: &'a Prediction,
    /// Occupied target voxels.
    pub target: &'a VoxelSet,
}

/// Scores at one threshold.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SweepPoint {
    /// The threshold.
    pub threshold: f32,
    /// Counts pooled over frames.
    pub counts: Counts,
    /// Scores of the pooled counts.
    pub micro: VoxelScores,
    /// Mean per-frame IoU.
    pub macro_iou: Stat,
    /// Mean per-frame F1.
    pub macro_f1: Stat,
    /// The objective under the chosen averaging.
    pub score: Option<f64>,
}

/// A finished sweep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepResult {
    /// Settings used.
    pub config: SweepConfig,
    /// One point per threshold, ascending.
    pub points: Vec<SweepPoint>,
    /// Index of the best point.
    pub best: Option<usize>,
}

impl SweepResult {
    /// The best point.
    pub fn best_point(&self) -> Option<&SweepPoint> {
        self.best.map(|i| &self.points[i])
    }

    /// The best threshold.
    pub fn best_threshold(&self) -> Option<f32> {
        self.best_point().map(|p| p.threshold)
    }

    /// Micro/macro F1 and IoU against the threshold.
    pub fn chart(&self) -> Canvas {
        let series = |name: &str, k: usize, f: &dyn Fn(&SweepPoint) -> Option<f64>| Series {
            name: name.into(),
            points: self.points.iter().map(|p| (p.threshold as f64, f(p).unwrap_or(f64::NAN))).collect(),
            color: COLORS[k],
        };
        let all = [
            series("F1 micro", 0, &|p| p.micro.f1),
            series("IoU micro", 1, &|p| p.micro.iou),
            series("F1 macro", 2, &|p| p.macro_f1.mean),
            series("IoU macro", 3, &|p| p.macro_iou.mean),
        ];
        line_chart("THRESHOLD SWEEP", "THRESHOLD", &all, false)
    }
}

/// Sweeps the thresholds of `cfg` over `frames`.
pub fn sweep(frames: &[SweepFrame<'_>], cfg: &SweepConfig) -> Result<SweepResult, EvalError> {
    let thresholds = cfg.thresholds.resolve()?;
    let curves: Vec<Vec<Counts>> = frames.par_iter().map(|f| frame_curve(f, &thresholds)).collect();
    let mut points = Vec::with_capacity(thresholds.len());
    for (k, &threshold) in thresholds.iter().enumerate() {
        let (mut counts, mut iou, mut f1) = (Counts::default(), MeanAcc::default(), MeanAcc::default());
        for curve in &curves {
            let s = curve[k].scores();
            counts += curve[k];
            iou.push(s.iou);
            f1.push(s.f1);
        }
        let (micro, macro_iou, macro_f1) = (counts.scores(), iou.stat(), f1.stat());
        let score = match (cfg.objective, cfg.averaging) {
            (Objective::F1, Averaging::Micro) => micro.f1,
            (Objective::Iou, Averaging::Micro) => micro.iou,
            (Objective::F1, Averaging::Macro) => macro_f1.mean,
            (Objective::Iou, Averaging::Macro) => macro_iou.mean,
        };
        points.push(SweepPoint { threshold, counts, micro, macro_iou, macro_f1, score });
    }
    let mut best: Option<(usize, f64)> = None;
    for (i, p) in points.iter().enumerate() {
        if let Some(s) = p.score {
            if best.is_none_or(|(_, b)| s > b + TIE_EPS) {
                best = Some((i, s));
            }
        }
    }
    Ok(SweepResult { config: cfg.clone(), points, best: best.map(|b| b.0) })
}

/// Counts of one frame at each (ascending) threshold.
pub fn frame_curve(frame: &SweepFrame<'_>, thresholds: &[f32]) -> Vec<Counts> {
    let (coords, values) = (frame.prediction.coords(), frame.prediction.values());
    let target = frame.target;
    let mut ranked: Vec<(f32, bool)> = values.iter().zip(coords).map(|(&v, &c)| (v, target.contains(c))).collect();
    ranked.sort_unstable_by(|a, b| b.0.total_cmp(&a.0));
    let mut hits = Vec::with_capacity(ranked.len() + 1);
    hits.push(0u64);
    for (i, r) in ranked.iter().enumerate() {
        hits.push(hits[i] + u64::from(r.1));
    }
    let n_target = target.len() as u64;
    thresholds
        .iter()
        .map(|&t| {
            let n = ranked.partition_point(|r| r.0 > t);
            let tp = hits[n];
            Counts { tp, fp: n as u64 - tp, fn_: n_target - tp }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::voxel::voxel_metrics;

    fn c(i: u32) -> [u32; 3] {
        [i, 0, 0]
    }

    #[test]
    fn even_thresholds_are_inside_the_unit_interval() {
        assert_eq!(Thresholds::Even(3).resolve().unwrap(), vec![0.25, 0.5, 0.75]);
        assert!(Thresholds::Even(0).resolve().is_err());
        assert!(Thresholds::List(vec![f32::NAN]).resolve().is_err());
        assert_eq!(Thresholds::List(vec![0.5, 0.1, 0.5]).resolve().unwrap(), vec![0.1, 0.5]);
    }

    #[test]
    fn curve_matches_rescan() {
        let pred = Prediction::new((0..10).map(c).collect(), (0..10).map(|i| i as f32 / 10.0).collect()).unwrap();
        let target = VoxelSet::new(vec![c(1), c(5), c(8), c(9), c(20)]);
        let ts: Vec<f32> = (0..=20).map(|i| i as f32 / 20.0 - 0.01).collect();
        let curve = frame_curve(&SweepFrame { prediction: &pred, target: &target }, &ts);
        for (t, got) in ts.iter().zip(curve) {
            assert_eq!(got, voxel_metrics(&pred.occupied(*t), &target).counts, "t = {t}");
        }
    }

    #[test]
    fn picks_the_known_best_threshold() {
        // Target = voxels 0..4 valued 0.8; distractors valued 0.3 and 0.6, a miss valued 0.9.
        let target = VoxelSet::new((0..4).map(c).collect());
        let coords = vec![c(0), c(1), c(2), c(3), c(10), c(11), c(12)];
        let values = vec![0.8, 0.8, 0.8, 0.8, 0.3, 0.6, 0.9];
        let pred = Prediction::new(coords, values).unwrap();
        let frames = [SweepFrame { prediction: &pred, target: &target }];
        let cfg = SweepConfig { thresholds: Thresholds::List(vec![0.2, 0.5, 0.7, 0.85]), ..Default::default() };
        let r = sweep(&frames, &cfg).unwrap();
        // t=0.7: TP 4, FP 1 (0.9) -> F1 8/9, the best.
        assert_eq!(r.best_threshold(), Some(0.7));
        assert_eq!(r.best_point().unwrap().counts, Counts { tp: 4, fp: 1, fn_: 0 });
        let r = sweep(&frames, &SweepConfig { objective: Objective::Iou, averaging: Averaging::Macro, ..cfg }).unwrap();
        assert_eq!(r.best_threshold(), Some(0.7));
    }

    #[test]
    fn ties_go_to_the_lower_threshold() {
        let target = VoxelSet::new(vec![c(0)]);
        let pred = Prediction::new(vec![c(0)], vec![0.9]).unwrap();
        let frames = [SweepFrame { prediction: &pred, target: &target }];
        let cfg = SweepConfig { thresholds: Thresholds::List(vec![0.6, 0.3, 0.8]), ..Default::default() };
        assert_eq!(sweep(&frames, &cfg).unwrap().best_threshold(), Some(0.3));
    }

    #[test]
    fn empty_validation_set_has_no_best() {
        let r = sweep(&[], &SweepConfig::default()).unwrap();
        assert_eq!(r.points.len(), 99);
        assert!(r.best.is_none());
        let (p, t) = (Prediction::default(), VoxelSet::default());
        let r = sweep(&[SweepFrame { prediction: &p, target: &t }], &SweepConfig::default()).unwrap();
        assert!(r.best.is_none());
        assert!(r.chart().width > 0);
    }
}
