//! Layer 7, evaluation: does densification work? Scores of predicted
//! occupancy against targets and, side by side, the radar-only baseline:
//! voxel metrics ([`voxel`]), point metrics in metres on exact nearest
//! neighbours ([`points`], [`kdtree`]), shape diagnostics ([`shape`]),
//! the same by range/height band and in the shared-visible region with
//! bird's-eye-view scores ([`regions`]), calibration of the predicted
//! values ([`calibration`]);
//! threshold calibration ([`threshold`]) and per-frame selection
//! ([`adaptive`]); per-frame records ([`record`]), summaries ([`summary`]),
//! flags ([`flags`]), `metrics.csv` ([`csv`]), `report.md` ([`report`]),
//! projection pictures ([`projection`]); frames of the data layer as sets
//! and predictions ([`frames`]); exports ([`export`]) and the
//! validation counts of training ([`occupancy`]). Pure functions of grids
//! and voxel sets: imports [`crate::io`] and [`crate::data`], no model.
//!
//! # Conventions (details in each module)
//! * Occupied at threshold `t` means value `> t`.
//! * Undefined values are `None`, never NaN; means skip them and report how
//!   many frames they cover.
//! * Voxel scores: both sets empty -> all `None` ("no perfect score from
//!   nothing"); exactly one empty -> all 0.
//! * Chamfer = mean of the two directional mean nearest-neighbour distances
//!   (metres); `chamfer_sum` = their sum. Hausdorff = max of the two
//!   directional maxima. Either cloud empty -> `None`.
//! * F@tau: distance `<= tau` counts as within; one cloud empty -> 0; both
//!   empty -> `None`. Precision = share of predicted points within tau of the
//!   target, recall = share of target points within tau of the prediction.
//! * Threshold sweep ties go to the lower threshold.

pub mod adaptive;
pub mod calibration;
pub mod csv;
pub mod export;
pub mod flags;
pub mod frames;
pub mod geometry;
pub mod kdtree;
pub mod occupancy;
pub mod points;
pub mod projection;
pub mod record;
pub mod region_report;
pub mod regions;
pub mod report;
pub mod shape;
pub mod stats;
pub mod summary;
pub mod threshold;
pub mod voxel;
pub mod voxels;

pub use adaptive::{select, ExpectedCount, Selection, SelectionConfig, SelectionKind, ThresholdMode};
pub use calibration::Calibration;
pub use flags::{frame_flags, Flag, ReportConfig};
pub use geometry::{Coord, GridGeometry, Point};
pub use occupancy::Occupancy;
pub use points::{point_metrics, PointConfig, PointMetrics};
pub use record::{evaluate_frame, evaluate_frames, EvalConfig, FrameInput, FrameRecord, MethodMetrics};
pub use regions::{Region, RegionConfig, RegionMetrics};
pub use report::{write_report, ReportPaths};
pub use shape::{shape_metrics, ShapeMetrics};
pub use summary::{summarize, SummaryRow};
pub use threshold::{sweep, SweepConfig, SweepFrame, SweepResult, Thresholds};
pub use voxel::{voxel_metrics, Counts, VoxelMetrics, VoxelScores};
pub use voxels::{EmptyCase, Prediction, VoxelSet};

/// Everything that can go wrong while evaluating or writing reports.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// A prediction's coordinate and value lists differ in length.
    #[error("prediction has {coords} coordinates but {values} values")]
    LengthMismatch {
        /// Number of coordinates.
        coords: usize,
        /// Number of values.
        values: usize,
    },
    /// A prediction value is NaN or infinite.
    #[error("non-finite prediction value {value} at voxel {coord:?}")]
    NonFiniteValue {
        /// The voxel.
        coord: [u32; 3],
        /// The offending value.
        value: f32,
    },
    /// A voxel lies outside the grid.
    #[error("{what} voxel {coord:?} lies outside the grid {dims:?}")]
    OutOfBounds {
        /// Which set it belongs to (`prediction`, `radar`, `target`).
        what: &'static str,
        /// The voxel.
        coord: [u32; 3],
        /// The grid dimensions.
        dims: [usize; 3],
    },
    /// A dense buffer does not match the grid.
    #[error("dense grid has {got} values, the geometry needs {expected}")]
    DenseSize {
        /// Values the geometry needs.
        expected: usize,
        /// Values supplied.
        got: usize,
    },
    /// The grid geometry is unusable (zero dims, non-positive or non-finite voxel size, ...).
    #[error("invalid grid geometry: {0}")]
    Geometry(String),
    /// A configuration value is unusable.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Serialising records failed.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// Writing a report or picture failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}
