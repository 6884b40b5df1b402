//! Are the predicted occupancy values probabilities one can trust? Brier
//! score, expected calibration error and the reliability diagram of a
//! prediction's values against the target.
//!
//! # Conventions
//! * The voxels scored are those the prediction lists (any value) and those
//!   the target occupies; every other voxel has value 0 and is empty, so it
//!   would only add exact zeros. A value is read as `p = clamp(v, 0, 1)`; a
//!   target voxel the prediction omits has `p = 0`; `y = 1` on target voxels.
//! * Brier = mean of `(p - y)^2`.
//! * [`BINS`] equal bins of `p` over `[0, 1]` (bin `min(floor(10 p), 9)`);
//!   ECE = sum over bins of `n_b / N * |mean p_b - mean y_b|`.
//! * Frames pool by adding their sums ([`Calibration::add`]): the pooled
//!   scores weigh every voxel alike. Nothing scored: `None`.
//! * The scored set depends on what the prediction lists (`sample` keeps
//!   values >= 0.01), so two models that list differently are compared on
//!   the whole grid instead: [`Calibration::brier_grid`] and
//!   [`Calibration::ece_grid`] add every other voxel of the grid as
//!   `p = 0, y = 0`.

use serde::{Deserialize, Serialize};

use super::voxels::{Prediction, VoxelSet};
use crate::io::chart::{line_chart, Series, COLORS};
use crate::io::png::Canvas;

/// Bins of the reliability diagram and the ECE.
pub const BINS: usize = 10;

/// Sums over the scored voxels, per bin of `p`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// Voxels per bin.
    pub n: [u64; BINS],
    /// Sum of `p` per bin.
    pub sum_p: [f64; BINS],
    /// Sum of `y` (occupied target voxels) per bin.
    pub sum_y: [f64; BINS],
    /// Sum of `(p - y)^2` over all scored voxels.
    pub sq_err: f64,
    /// The grid's other voxels (neither listed nor in the target: `p = 0, y = 0`).
    #[serde(default)]
    pub unscored: u64,
}

/// One bin of the reliability diagram.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bin {
    /// Lower edge of `p`.
    pub lo: f64,
    /// Voxels in the bin.
    pub n: u64,
    /// Mean predicted probability.
    pub mean_p: f64,
    /// Share of the bin's voxels the target occupies.
    pub observed: f64,
}

impl Calibration {
    /// The sums of one frame on a grid of `grid_voxels` voxels.
    pub fn of(prediction: &Prediction, target: &VoxelSet, grid_voxels: u64) -> Calibration {
        let mut c = Calibration::default();
        let (pc, pv, tc) = (prediction.coords(), prediction.values(), target.coords());
        let (mut i, mut j) = (0, 0);
        // one merge pass over the two sorted voxel lists
        while i < pc.len() || j < tc.len() {
            let (p, y) = match (pc.get(i), tc.get(j)) {
                (Some(a), Some(b)) if a == b => {
                    (i, j) = (i + 1, j + 1);
                    (pv[i - 1], 1.0)
                }
                (Some(a), Some(b)) if a < b => {
                    i += 1;
                    (pv[i - 1], 0.0)
                }
                (Some(_), None) => {
                    i += 1;
                    (pv[i - 1], 0.0)
                }
                _ => {
                    j += 1;
                    (0.0, 1.0)
                }
            };
            c.push(f64::from(p).clamp(0.0, 1.0), y);
        }
        c.unscored = grid_voxels.saturating_sub(c.voxels());
        c
    }

    fn push(&mut self, p: f64, y: f64) {
        let b = ((p * BINS as f64).floor() as usize).min(BINS - 1);
        self.n[b] += 1;
        self.sum_p[b] += p;
        self.sum_y[b] += y;
        self.sq_err += (p - y) * (p - y);
    }

    /// Adds another frame's sums.
    pub fn add(&mut self, o: &Calibration) {
        for b in 0..BINS {
            self.n[b] += o.n[b];
            self.sum_p[b] += o.sum_p[b];
            self.sum_y[b] += o.sum_y[b];
        }
        self.sq_err += o.sq_err;
        self.unscored += o.unscored;
    }

    /// Voxels scored.
    pub fn voxels(&self) -> u64 {
        self.n.iter().sum()
    }

    /// The Brier score.
    pub fn brier(&self) -> Option<f64> {
        let n = self.voxels();
        (n > 0).then(|| self.sq_err / n as f64)
    }

    /// The expected calibration error over [`BINS`] bins.
    pub fn ece(&self) -> Option<f64> {
        let n = self.voxels() as f64;
        (n > 0.0).then(|| self.bins().iter().map(|b| b.n as f64 / n * (b.mean_p - b.observed).abs()).sum())
    }

    /// The Brier score over the whole grid.
    pub fn brier_grid(&self) -> Option<f64> {
        let n = self.voxels() + self.unscored;
        (n > 0).then(|| self.sq_err / n as f64)
    }

    /// The ECE over the whole grid (the unscored voxels in bin 0 as `p = 0, y = 0`).
    pub fn ece_grid(&self) -> Option<f64> {
        let mut c = *self;
        c.n[0] += c.unscored;
        c.unscored = 0;
        c.ece()
    }

    /// The non-empty bins of the reliability diagram.
    pub fn bins(&self) -> Vec<Bin> {
        (0..BINS)
            .filter(|&b| self.n[b] > 0)
            .map(|b| {
                let n = self.n[b] as f64;
                Bin { lo: b as f64 / BINS as f64, n: self.n[b], mean_p: self.sum_p[b] / n, observed: self.sum_y[b] / n }
            })
            .collect()
    }

    /// The reliability diagram: observed frequency against mean predicted
    /// probability per bin, beside the diagonal of perfect calibration.
    pub fn diagram(&self, title: &str) -> Canvas {
        let observed: Vec<(f64, f64)> = self.bins().iter().map(|b| (b.mean_p, b.observed)).collect();
        let series = [
            Series { name: "PERFECT".into(), points: vec![(0.0, 0.0), (1.0, 1.0)], color: [150, 150, 150] },
            Series { name: "OBSERVED".into(), points: observed, color: COLORS[1] },
        ];
        line_chart(title, "MEAN PREDICTED PROBABILITY", &series, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brier_and_ece_of_a_hand_made_frame() {
        let target = VoxelSet::new(vec![[0, 0, 0], [1, 0, 0], [5, 5, 5]]);
        // [0,0,0] p 0.92 y 1; [1,0,0] p 0.3 y 1; [2,0,0] p 0.35 y 0; [3,0,0] p 1.4 -> 1 y 0; [5,5,5] p 0 y 1
        let p = Prediction::new(vec![[0, 0, 0], [1, 0, 0], [2, 0, 0], [3, 0, 0]], vec![0.92, 0.3, 0.35, 1.4]).unwrap();
        let c = Calibration::of(&p, &target, 10);
        assert_eq!((c.voxels(), c.unscored), (5, 5));
        assert!((c.brier_grid().unwrap() - c.brier().unwrap() / 2.0).abs() < 1e-12);
        // bin 0 gains five exact zeros: (1 * 1 + 5 * 0) / 6 mean error 1/6 there
        let ece_grid =
            (6.0 * (1.0f64 / 6.0 - 0.0).abs() + 2.0 * (0.325f64 - 0.5).abs() + 2.0 * (0.96f64 - 0.5).abs()) / 10.0;
        assert!((c.ece_grid().unwrap() - ece_grid).abs() < 1e-6, "{:?}", c.ece_grid());
        let sq = [0.08f64, 0.7, 0.35, 1.0, 1.0].iter().map(|e| e * e).sum::<f64>();
        assert!((c.brier().unwrap() - sq / 5.0).abs() < 1e-6);
        // bins: 0 {p 0, y 1}; 3 {0.3 y1, 0.35 y0}; 9 {0.92 y1, 1.0 y0}
        let ece = (1.0 * (0.0f64 - 1.0).abs() + 2.0 * (0.325f64 - 0.5).abs() + 2.0 * (0.96f64 - 0.5).abs()) / 5.0;
        assert!((c.ece().unwrap() - ece).abs() < 1e-6, "{:?}", c.ece());
        assert_eq!(c.bins().iter().map(|b| b.n).collect::<Vec<_>>(), [1, 2, 2]);
        let mut pooled = Calibration::default();
        pooled.add(&c);
        pooled.add(&c);
        assert_eq!((pooled.voxels(), pooled.brier(), pooled.unscored), (10, c.brier(), 10));
        assert_eq!(Calibration::default().ece(), None);
    }
}
