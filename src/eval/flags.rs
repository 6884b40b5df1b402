//! Frame flags for the report: shape failures and "worse than radar".
//!
//! All comparisons are strict and only fire on defined values:
//! * too sparse: prediction count ratio `< too_sparse_ratio` (0.2);
//! * over-dilated: count ratio `> over_dilated_ratio` (2.0);
//! * height-compressed: z-spread ratio `< height_compressed_ratio` (0.5);
//! * offset: |centroid offset| `> max_centroid_offset_m` (1 m);
//! * worse than radar: prediction F1 `<` radar F1, or prediction F at
//!   `worse_than_radar_tau_m` (0.5 m) `<` the radar's (each compared only
//!   when both are defined).

use serde::{Deserialize, Serialize};

use super::record::FrameRecord;
use super::EvalError;

/// Thresholds of the report's frame flags.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ReportConfig {
    /// Flag "too sparse" below this predicted/target count ratio (default 0.2).
    pub too_sparse_ratio: f64,
    /// Flag "over-dilated" above this count ratio (default 2.0).
    pub over_dilated_ratio: f64,
    /// Flag "height-compressed" below this z-spread ratio (default 0.5).
    pub height_compressed_ratio: f64,
    /// Flag "offset" above this centroid offset norm in metres (default 1.0).
    pub max_centroid_offset_m: f64,
    /// Tolerance whose F-score is compared with the radar's (default 0.5 m).
    pub worse_than_radar_tau_m: f64,
}

impl Default for ReportConfig {
    fn default() -> Self {
        ReportConfig {
            too_sparse_ratio: 0.2,
            over_dilated_ratio: 2.0,
            height_compressed_ratio: 0.5,
            max_centroid_offset_m: 1.0,
            worse_than_radar_tau_m: 0.5,
        }
    }
}

impl ReportConfig {
    /// Errors on non-finite thresholds.
    pub fn validate(&self) -> Result<(), EvalError> {
        let all = [
            self.too_sparse_ratio,
            self.over_dilated_ratio,
            self.height_compressed_ratio,
            self.max_centroid_offset_m,
            self.worse_than_radar_tau_m,
        ];
        match all.iter().find(|v| !v.is_finite()) {
            Some(v) => Err(EvalError::Config(format!("non-finite report threshold {v}"))),
            None => Ok(()),
        }
    }
}

/// A reason to look at a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Flag {
    /// Far fewer voxels predicted than in the target.
    TooSparse,
    /// Far more voxels predicted than in the target.
    OverDilated,
    /// Predicted heights squeezed compared with the target.
    HeightCompressed,
    /// Prediction centroid far from the target's.
    Offset,
    /// The prediction scores below the radar baseline.
    WorseThanRadar,
}

impl Flag {
    /// All flags, in report order.
    pub const ALL: [Flag; 5] =
        [Flag::TooSparse, Flag::OverDilated, Flag::HeightCompressed, Flag::Offset, Flag::WorseThanRadar];

    /// Short name (`too_sparse`, `over_dilated`, `height_compressed`, `offset`, `worse_than_radar`).
    pub fn name(&self) -> &'static str {
        match self {
            Flag::TooSparse => "too_sparse",
            Flag::OverDilated => "over_dilated",
            Flag::HeightCompressed => "height_compressed",
            Flag::Offset => "offset",
            Flag::WorseThanRadar => "worse_than_radar",
        }
    }

    /// The rule, with the thresholds of `cfg`.
    pub fn rule(&self, cfg: &ReportConfig) -> String {
        match self {
            Flag::TooSparse => format!("count ratio (pred/target) < {}", cfg.too_sparse_ratio),
            Flag::OverDilated => format!("count ratio (pred/target) > {}", cfg.over_dilated_ratio),
            Flag::HeightCompressed => format!("z-spread ratio (pred/target) < {}", cfg.height_compressed_ratio),
            Flag::Offset => format!("|centroid offset| > {} m", cfg.max_centroid_offset_m),
            Flag::WorseThanRadar => {
                format!("prediction F1 or F@{} m below the radar baseline's", cfg.worse_than_radar_tau_m)
            }
        }
    }
}

/// The flags `rec` raises under `cfg`, in [`Flag::ALL`] order.
pub fn frame_flags(rec: &FrameRecord, cfg: &ReportConfig) -> Vec<Flag> {
    let shape = &rec.prediction.shape;
    let below = |v: Option<f64>, t: f64| v.is_some_and(|v| v < t);
    let above = |v: Option<f64>, t: f64| v.is_some_and(|v| v > t);
    let worse = |p: Option<f64>, r: Option<f64>| matches!((p, r), (Some(p), Some(r)) if p < r);
    let f_at = |m: &super::record::MethodMetrics| m.points.at(cfg.worse_than_radar_tau_m).and_then(|f| f.fscore);
    let fired = [
        below(shape.count_ratio, cfg.too_sparse_ratio),
        above(shape.count_ratio, cfg.over_dilated_ratio),
        below(shape.z_spread_ratio, cfg.height_compressed_ratio),
        above(shape.centroid_distance, cfg.max_centroid_offset_m),
        worse(rec.prediction.voxel.scores.f1, rec.radar.voxel.scores.f1)
            || worse(f_at(&rec.prediction), f_at(&rec.radar)),
    ];
    Flag::ALL.iter().zip(fired).filter(|(_, on)| *on).map(|(f, _)| *f).collect()
}
