//! Per-frame occupancy selection: a fixed threshold, or an adaptive one that
//! matches an expected voxel count, with a top-k fallback for frames that
//! would otherwise be empty.
//!
//! # Conventions
//! * Fixed: occupied = values `> threshold` (as in the sweep).
//! * Match count: the expected count `n` is `round(ratio * radar count)` or a
//!   given number; the selection is exactly the `min(n, listed voxels)`
//!   highest-valued voxels, ties at the cut broken by coordinate order
//!   (smaller first), so the count is hit exactly even with tied values. The
//!   reported threshold is the lowest selected value (so the selection is
//!   "value >= threshold" up to those ties), None when nothing is selected.
//! * Top-k fallback: when the selection is empty but the prediction lists
//!   voxels, the `k` highest-valued voxels are taken instead (same tie rule;
//!   applies to both modes; `k = 0` disables it).

use serde::{Deserialize, Serialize};

use super::voxels::{Prediction, VoxelSet};
use super::EvalError;

/// The voxel count an adaptive threshold aims at.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum ExpectedCount {
    /// `round(ratio * radar occupied count)`.
    RadarRatio(f64),
    /// A fixed number of voxels.
    Count(usize),
}

impl ExpectedCount {
    /// The expected count for a frame with `radar_count` radar voxels.
    pub fn resolve(&self, radar_count: usize) -> usize {
        match *self {
            ExpectedCount::RadarRatio(r) => (r.max(0.0) * radar_count as f64).round() as usize,
            ExpectedCount::Count(n) => n,
        }
    }
}

/// How a frame's prediction becomes an occupied set.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum ThresholdMode {
    /// Values `> threshold`.
    Fixed(f32),
    /// The top voxels up to the expected count.
    MatchCount(ExpectedCount),
}

/// Selection settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SelectionConfig {
    /// Threshold mode (default `Fixed(0.5)`).
    pub mode: ThresholdMode,
    /// Top-k fallback for frames that would be empty (default None).
    pub top_k_fallback: Option<usize>,
}

impl Default for SelectionConfig {
    fn default() -> Self {
        SelectionConfig { mode: ThresholdMode::Fixed(0.5), top_k_fallback: None }
    }
}

impl SelectionConfig {
    /// Errors on a non-finite threshold or a negative/non-finite ratio.
    pub fn validate(&self) -> Result<(), EvalError> {
        match self.mode {
            ThresholdMode::Fixed(t) if !t.is_finite() => Err(EvalError::Config(format!("threshold {t}"))),
            ThresholdMode::MatchCount(ExpectedCount::RadarRatio(r)) if !(r.is_finite() && r >= 0.0) => {
                Err(EvalError::Config(format!("radar ratio must be finite and >= 0, got {r}")))
            }
            _ => Ok(()),
        }
    }
}

/// How a selection was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SelectionKind {
    /// Fixed threshold.
    Fixed,
    /// Matched to an expected count.
    MatchCount,
    /// Top-k fallback after an empty selection.
    TopKFallback,
}

impl SelectionKind {
    /// Short name for reports (`fixed`, `match_count`, `top_k_fallback`).
    pub fn name(&self) -> &'static str {
        match self {
            SelectionKind::Fixed => "fixed",
            SelectionKind::MatchCount => "match_count",
            SelectionKind::TopKFallback => "top_k_fallback",
        }
    }
}

/// The occupied voxels chosen for one frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Selection {
    /// Occupied voxels.
    pub occupied: VoxelSet,
    /// Threshold used (fixed) or lowest selected value (count / top-k).
    pub threshold: Option<f32>,
    /// How it was chosen.
    pub kind: SelectionKind,
}

/// Selects the occupied voxels of `pred` for a frame with `radar_count` radar voxels.
pub fn select(pred: &Prediction, radar_count: usize, cfg: &SelectionConfig) -> Selection {
    let sel = match cfg.mode {
        ThresholdMode::Fixed(t) => {
            Selection { occupied: pred.occupied(t), threshold: Some(t), kind: SelectionKind::Fixed }
        }
        ThresholdMode::MatchCount(expected) => {
            let (occupied, threshold) = pred.top_k(expected.resolve(radar_count));
            Selection { occupied, threshold, kind: SelectionKind::MatchCount }
        }
    };
    match cfg.top_k_fallback {
        Some(k) if k > 0 && sel.occupied.is_empty() && !pred.is_empty() => {
            let (occupied, threshold) = pred.top_k(k);
            Selection { occupied, threshold, kind: SelectionKind::TopKFallback }
        }
        _ => sel,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pred(values: &[f32]) -> Prediction {
        Prediction::new((0..values.len() as u32).map(|i| [i, 0, 0]).collect(), values.to_vec()).unwrap()
    }

    #[test]
    fn match_count_hits_the_expected_count() {
        let p = pred(&[0.1, 0.7, 0.3, 0.3, 0.3, 0.9, 0.05]);
        for radar in 0..6 {
            let cfg = SelectionConfig {
                mode: ThresholdMode::MatchCount(ExpectedCount::RadarRatio(1.5)),
                ..Default::default()
            };
            let s = select(&p, radar, &cfg);
            let expected = ((1.5 * radar as f64).round() as usize).min(p.len());
            assert_eq!(s.occupied.len(), expected, "radar {radar}");
            assert_eq!(s.kind, SelectionKind::MatchCount);
        }
        // Ties at the cut: 3 of the 0.3s tie for 2 places -> still exactly 4.
        let cfg = SelectionConfig { mode: ThresholdMode::MatchCount(ExpectedCount::Count(4)), ..Default::default() };
        let s = select(&p, 0, &cfg);
        assert_eq!(s.occupied.coords(), &[[1, 0, 0], [2, 0, 0], [3, 0, 0], [5, 0, 0]]);
        assert_eq!(s.threshold, Some(0.3));
    }

    #[test]
    fn top_k_fallback_fires_only_on_empty_frames() {
        let p = pred(&[0.1, 0.4, 0.2]);
        let cfg = SelectionConfig { mode: ThresholdMode::Fixed(0.5), top_k_fallback: Some(2) };
        let s = select(&p, 10, &cfg);
        assert_eq!(s.kind, SelectionKind::TopKFallback);
        assert_eq!(s.occupied.coords(), &[[1, 0, 0], [2, 0, 0]]);
        assert_eq!(s.threshold, Some(0.2));
        let s = select(&p, 10, &SelectionConfig { mode: ThresholdMode::Fixed(0.15), ..cfg });
        assert_eq!((s.kind, s.occupied.len()), (SelectionKind::Fixed, 2));
        // Nothing listed: stays empty, no panic.
        let s = select(&Prediction::default(), 0, &cfg);
        assert!(s.occupied.is_empty() && s.kind == SelectionKind::Fixed);
        // Match count of 0 (no radar) falls back too.
        let cfg = SelectionConfig {
            mode: ThresholdMode::MatchCount(ExpectedCount::RadarRatio(2.0)),
            top_k_fallback: Some(1),
        };
        assert_eq!(select(&p, 0, &cfg).occupied.coords(), &[[1, 0, 0]]);
    }

    #[test]
    fn validation() {
        assert!(SelectionConfig { mode: ThresholdMode::Fixed(f32::NAN), top_k_fallback: None }.validate().is_err());
        let bad = ThresholdMode::MatchCount(ExpectedCount::RadarRatio(-1.0));
        assert!(SelectionConfig { mode: bad, top_k_fallback: None }.validate().is_err());
        assert!(SelectionConfig::default().validate().is_ok());
    }
}
