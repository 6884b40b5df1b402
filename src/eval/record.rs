//! Per-frame evaluation: the prediction and the radar-only baseline, each
//! scored against the target with the voxel, point and shape metrics.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::adaptive::{select, Selection, SelectionConfig, SelectionKind};
use super::calibration::Calibration;
use super::geometry::{GridGeometry, Point};
use super::kdtree::KdTree;
use super::points::{point_metrics_trees, PointConfig, PointMetrics};
use super::regions::{RegionConfig, RegionMasks, RegionMetrics};
use super::shape::{shape_metrics, ShapeMetrics};
use super::voxel::{voxel_metrics, VoxelMetrics};
use super::voxels::{Prediction, VoxelSet};
use super::EvalError;

/// Settings of a per-frame evaluation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EvalConfig {
    /// How predictions become occupied sets.
    pub selection: SelectionConfig,
    /// Distance tolerances of the point metrics.
    pub points: PointConfig,
    /// Range and height bands, the shared-visible region and match tolerances.
    #[serde(default)]
    pub regions: RegionConfig,
}

impl EvalConfig {
    /// Checks the selection, point and region settings.
    pub fn validate(&self) -> Result<(), EvalError> {
        self.selection.validate()?;
        self.points.validate()?;
        self.regions.validate()
    }
}

/// One frame to evaluate (borrowed, so callers can stream frames).
#[derive(Debug, Clone, Copy)]
pub struct FrameInput<'a> {
    /// Frame id (e.g. `000042`).
    pub frame: &'a str,
    /// Scene name.
    pub scene: &'a str,
    /// Predicted values.
    pub prediction: &'a Prediction,
    /// Radar occupied voxels (the baseline).
    pub radar: &'a VoxelSet,
    /// Target occupied voxels.
    pub target: &'a VoxelSet,
}

/// All metrics of one occupied set (prediction or radar) against the target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MethodMetrics {
    /// Occupied voxels.
    pub count: usize,
    /// Voxel metrics.
    pub voxel: VoxelMetrics,
    /// Point metrics on voxel centres.
    pub points: PointMetrics,
    /// Shape diagnostics.
    pub shape: ShapeMetrics,
    /// Scores per range band, height band and in the shared-visible region.
    #[serde(default)]
    pub regions: Vec<RegionMetrics>,
}

/// The evaluation of one frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrameRecord {
    /// Frame id.
    pub frame: String,
    /// Scene name.
    pub scene: String,
    /// Target occupied voxels.
    pub target_count: usize,
    /// Threshold of the prediction's selection (see [`Selection::threshold`]).
    pub threshold: Option<f32>,
    /// How the prediction's occupied set was chosen.
    pub selection: SelectionKind,
    /// The prediction's metrics.
    pub prediction: MethodMetrics,
    /// The radar baseline's metrics.
    pub radar: MethodMetrics,
    /// The prediction's values against the target (Brier, ECE, reliability).
    #[serde(default)]
    pub calibration: Calibration,
}

/// Evaluates one frame: selects the prediction's occupied voxels, then
/// scores it and the radar baseline against the target. Errors on voxels
/// outside `geom` or invalid settings.
pub fn evaluate_frame(geom: &GridGeometry, input: &FrameInput<'_>, cfg: &EvalConfig) -> Result<FrameRecord, EvalError> {
    cfg.validate()?;
    input.prediction.check_bounds(geom)?;
    let selection = select(input.prediction, input.radar.len(), &cfg.selection);
    let mut record = evaluate_selected(geom, input.frame, input.scene, selection, input.radar, input.target, cfg)?;
    record.calibration = Calibration::of(input.prediction, input.target, geom.len() as u64);
    Ok(record)
}

/// Evaluates a frame whose prediction was already turned into an occupied
/// set (`cfg.selection` unused; no calibration: the values are gone).
pub fn evaluate_selected(
    geom: &GridGeometry,
    frame: &str,
    scene: &str,
    selection: Selection,
    radar: &VoxelSet,
    target: &VoxelSet,
    cfg: &EvalConfig,
) -> Result<FrameRecord, EvalError> {
    geom.validate()?;
    cfg.points.validate()?;
    cfg.regions.validate()?;
    selection.occupied.check_bounds(geom, "prediction")?;
    radar.check_bounds(geom, "radar")?;
    target.check_bounds(geom, "target")?;
    let target_points = target.centres(geom);
    let target_tree = KdTree::new(target_points.clone());
    let masks = RegionMasks::new(geom, &cfg.regions, radar, target);
    let target = Target { set: target, points: &target_points, tree: &target_tree, masks: &masks };
    let (prediction, radar) = rayon::join(
        || method_metrics(geom, &selection.occupied, &target, &cfg.points),
        || method_metrics(geom, radar, &target, &cfg.points),
    );
    Ok(FrameRecord {
        frame: frame.to_string(),
        scene: scene.to_string(),
        target_count: target.set.len(),
        threshold: selection.threshold,
        selection: selection.kind,
        prediction,
        radar,
        calibration: Calibration::default(),
    })
}

/// Evaluates `inputs` in parallel, keeping their order.
pub fn evaluate_frames(
    geom: &GridGeometry,
    inputs: &[FrameInput<'_>],
    cfg: &EvalConfig,
) -> Result<Vec<FrameRecord>, EvalError> {
    inputs.par_iter().map(|input| evaluate_frame(geom, input, cfg)).collect()
}

/// The target with its centres, tree and region masks, shared by both methods.
struct Target<'a> {
    set: &'a VoxelSet,
    points: &'a [Point],
    tree: &'a KdTree,
    masks: &'a RegionMasks<'a>,
}

fn method_metrics(geom: &GridGeometry, set: &VoxelSet, target: &Target<'_>, cfg: &PointConfig) -> MethodMetrics {
    let centres = set.centres(geom);
    let tree = KdTree::new(centres.clone());
    MethodMetrics {
        count: set.len(),
        voxel: voxel_metrics(set, target.set),
        points: point_metrics_trees(&tree, target.tree, cfg),
        shape: shape_metrics(&centres, target.points),
        regions: target.masks.metrics(set),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perfect_prediction_and_out_of_bounds() {
        let geom = GridGeometry { dims: [10, 10, 10], min: [0.0; 3], voxel: [0.5; 3] };
        let target = VoxelSet::new(vec![[1, 1, 1], [2, 1, 3], [5, 5, 5]]);
        let radar = VoxelSet::new(vec![[1, 1, 1]]);
        let prediction = Prediction::from_set(&target);
        let input = FrameInput { frame: "f", scene: "s", prediction: &prediction, radar: &radar, target: &target };
        let r = evaluate_frame(&geom, &input, &EvalConfig::default()).unwrap();
        assert_eq!(r.prediction.voxel.scores.f1, Some(1.0));
        assert_eq!(r.prediction.points.chamfer, Some(0.0));
        assert_eq!(r.radar.count, 1);
        assert!((r.radar.voxel.scores.recall.unwrap() - 1.0 / 3.0).abs() < 1e-12);
        let bad = VoxelSet::new(vec![[10, 0, 0]]);
        let input = FrameInput { target: &bad, ..input };
        assert!(matches!(evaluate_frame(&geom, &input, &EvalConfig::default()), Err(EvalError::OutOfBounds { .. })));
    }

    #[test]
    fn empty_frame_does_not_panic() {
        let geom = GridGeometry::NTU4DRADLM;
        let (p, e) = (Prediction::default(), VoxelSet::default());
        let input = FrameInput { frame: "f", scene: "s", prediction: &p, radar: &e, target: &e };
        let r = evaluate_frames(&geom, &[input], &EvalConfig::default()).unwrap();
        assert_eq!(r[0].prediction.voxel.scores.iou, None);
        assert_eq!(r[0].radar.points.chamfer, None);
    }
}
