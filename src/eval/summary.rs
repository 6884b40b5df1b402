//! Per-scene and overall summaries of frame records.
//!
//! Every mean is a [`Stat`]: the mean over the frames where the value is
//! defined, with that number of frames. Voxel scores are also given micro
//! (pooled counts). Summaries never hold NaN or infinity.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::calibration::Calibration;
use super::record::{FrameRecord, MethodMetrics};
use super::regions::RegionMetrics;
use super::stats::{MeanAcc, Stat};
use super::voxel::{Counts, VoxelSummary, VoxelSummaryAcc};

/// Means of the F-score entries at one tolerance.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FScoreSummary {
    /// Tolerance in metres.
    pub tau: f64,
    /// Mean precision.
    pub precision: Stat,
    /// Mean recall.
    pub recall: Stat,
    /// Mean F-score.
    pub fscore: Stat,
}

/// Aggregated metrics of one method (prediction or radar).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MethodSummary {
    /// Occupied voxels summed over frames.
    pub count: u64,
    /// Frames where the method's set was empty.
    pub empty_frames: usize,
    /// Voxel metrics, micro and macro.
    pub voxel: VoxelSummary,
    /// Mean Chamfer distance (frames where defined).
    pub chamfer: Stat,
    /// Mean Chamfer sum.
    pub chamfer_sum: Stat,
    /// Mean Hausdorff distance.
    pub hausdorff: Stat,
    /// One entry per tolerance.
    pub fscores: Vec<FScoreSummary>,
    /// Mean centroid offset components dx, dy, dz.
    pub centroid_offset: [Stat; 3],
    /// Mean centroid offset norm.
    pub centroid_distance: Stat,
    /// Mean count ratio.
    pub count_ratio: Stat,
    /// Mean z-spread ratio.
    pub z_spread_ratio: Stat,
    /// One entry per region (band or shared-visible), in the records' order.
    pub regions: Vec<RegionSummary>,
}

/// Means of one method's scores in one region over frames where defined.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegionSummary {
    /// The region's name.
    pub region: String,
    /// The method's voxels in the region, summed.
    pub count: u64,
    /// The target's voxels in the region, summed.
    pub target_count: u64,
    /// Pooled voxel counts in the region.
    pub counts: Counts,
    /// Mean IoU.
    pub iou: Stat,
    /// Mean precision.
    pub precision: Stat,
    /// Mean recall.
    pub recall: Stat,
    /// Mean F1.
    pub f1: Stat,
    /// Mean Chamfer (m).
    pub chamfer: Stat,
    /// Mean Hausdorff (m).
    pub hausdorff: Stat,
    /// Mean of the mean distance from the method's points to the target's (m).
    pub nn: Stat,
    /// Per match tolerance: (tau, mean match ratio, mean reverse match ratio, mean F-score).
    pub matches: Vec<(f64, Stat, Stat, Stat)>,
    /// Mean bird's-eye-view IoU.
    pub bev_iou: Stat,
    /// Mean bird's-eye-view F1.
    pub bev_f1: Stat,
}

impl RegionSummary {
    /// The mean (match, reverse match) at `tau` (within 1e-9).
    pub fn at(&self, tau: f64) -> Option<(Stat, Stat)> {
        self.matches.iter().find(|m| (m.0 - tau).abs() < 1e-9).map(|m| (m.1, m.2))
    }

    /// The mean point F-score at `tau`.
    pub fn fscore_at(&self, tau: f64) -> Option<Stat> {
        self.matches.iter().find(|m| (m.0 - tau).abs() < 1e-9).map(|m| m.3)
    }
}

impl MethodSummary {
    /// The F-score summary at `tau` (within 1e-9).
    pub fn at(&self, tau: f64) -> Option<&FScoreSummary> {
        self.fscores.iter().find(|f| (f.tau - tau).abs() < 1e-9)
    }
}

/// What a summary row covers.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Scope {
    /// One scene.
    Scene(String),
    /// All frames.
    Overall,
}

/// A summary of several frames, prediction and radar side by side.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SummaryRow {
    /// What the row covers.
    pub scope: Scope,
    /// Frames summarised.
    pub frames: usize,
    /// Target voxels summed over frames.
    pub target_count: u64,
    /// Frames with an empty target.
    pub target_empty: usize,
    /// Frames whose prediction used the top-k fallback.
    pub fallback_frames: usize,
    /// The prediction.
    pub prediction: MethodSummary,
    /// The radar baseline.
    pub radar: MethodSummary,
    /// The prediction's calibration, pooled over the frames' voxels.
    pub calibration: Calibration,
}

/// One row per scene (sorted by name), then the overall row (always present).
pub fn summarize(records: &[FrameRecord]) -> Vec<SummaryRow> {
    let mut scenes: BTreeMap<&str, Vec<&FrameRecord>> = BTreeMap::new();
    for r in records {
        scenes.entry(&r.scene).or_default().push(r);
    }
    let mut rows: Vec<SummaryRow> =
        scenes.into_iter().map(|(name, rs)| summarize_scope(Scope::Scene(name.to_string()), &rs)).collect();
    rows.push(summarize_scope(Scope::Overall, &records.iter().collect::<Vec<_>>()));
    rows
}

/// A summary row of `records`.
pub fn summarize_scope(scope: Scope, records: &[&FrameRecord]) -> SummaryRow {
    let taus: Vec<f64> =
        records.first().map(|r| r.prediction.points.fscores.iter().map(|f| f.tau).collect()).unwrap_or_default();
    let (mut pred, mut radar) = (MethodAcc::new(&taus), MethodAcc::new(&taus));
    let mut calibration = Calibration::default();
    for r in records {
        pred.push(&r.prediction);
        radar.push(&r.radar);
        calibration.add(&r.calibration);
    }
    SummaryRow {
        scope,
        frames: records.len(),
        target_count: records.iter().map(|r| r.target_count as u64).sum(),
        target_empty: records.iter().filter(|r| r.target_count == 0).count(),
        fallback_frames: records.iter().filter(|r| r.selection == super::adaptive::SelectionKind::TopKFallback).count(),
        prediction: pred.finish(),
        radar: radar.finish(),
        calibration,
    }
}

#[derive(Default)]
struct MethodAcc {
    count: u64,
    empty_frames: usize,
    voxel: VoxelSummaryAcc,
    chamfer: MeanAcc,
    chamfer_sum: MeanAcc,
    hausdorff: MeanAcc,
    taus: Vec<(f64, [MeanAcc; 3])>,
    offset: [MeanAcc; 3],
    distance: MeanAcc,
    count_ratio: MeanAcc,
    z_spread: MeanAcc,
    regions: Vec<RegionAcc>,
}

/// Running sums of one region's scores.
#[derive(Default)]
struct RegionAcc {
    region: String,
    count: u64,
    target_count: u64,
    counts: Counts,
    iou: MeanAcc,
    precision: MeanAcc,
    recall: MeanAcc,
    f1: MeanAcc,
    chamfer: MeanAcc,
    hausdorff: MeanAcc,
    nn: MeanAcc,
    matches: Vec<(f64, MeanAcc, MeanAcc, MeanAcc)>,
    bev_iou: MeanAcc,
    bev_f1: MeanAcc,
}

impl RegionAcc {
    fn push(&mut self, m: &RegionMetrics) {
        if self.region.is_empty() {
            self.region = m.region.clone();
            self.matches =
                m.matches.iter().map(|f| (f.tau, Default::default(), Default::default(), Default::default())).collect();
        }
        self.count += m.count as u64;
        self.target_count += m.target_count as u64;
        self.counts += m.counts;
        self.iou.push(m.voxel.iou);
        self.precision.push(m.voxel.precision);
        self.recall.push(m.voxel.recall);
        self.f1.push(m.voxel.f1);
        self.chamfer.push(m.chamfer);
        self.hausdorff.push(m.hausdorff);
        self.nn.push(m.nn);
        for (tau, a, b, f1) in &mut self.matches {
            let f = m.at(*tau);
            a.push(f.and_then(|f| f.precision));
            b.push(f.and_then(|f| f.recall));
            f1.push(f.and_then(|f| f.fscore));
        }
        self.bev_iou.push(m.bev.iou);
        self.bev_f1.push(m.bev.f1);
    }

    fn finish(&self) -> RegionSummary {
        RegionSummary {
            region: self.region.clone(),
            count: self.count,
            target_count: self.target_count,
            counts: self.counts,
            iou: self.iou.stat(),
            precision: self.precision.stat(),
            recall: self.recall.stat(),
            f1: self.f1.stat(),
            chamfer: self.chamfer.stat(),
            hausdorff: self.hausdorff.stat(),
            nn: self.nn.stat(),
            matches: self.matches.iter().map(|(t, a, b, f)| (*t, a.stat(), b.stat(), f.stat())).collect(),
            bev_iou: self.bev_iou.stat(),
            bev_f1: self.bev_f1.stat(),
        }
    }
}

impl MethodAcc {
    fn new(taus: &[f64]) -> MethodAcc {
        MethodAcc { taus: taus.iter().map(|&t| (t, Default::default())).collect(), ..Default::default() }
    }

    fn push(&mut self, m: &MethodMetrics) {
        self.count += m.count as u64;
        self.empty_frames += usize::from(m.count == 0);
        self.voxel.push(&m.voxel);
        self.chamfer.push(m.points.chamfer);
        self.chamfer_sum.push(m.points.chamfer_sum);
        self.hausdorff.push(m.points.hausdorff);
        for (tau, acc) in &mut self.taus {
            let f = m.points.at(*tau);
            acc[0].push(f.and_then(|f| f.precision));
            acc[1].push(f.and_then(|f| f.recall));
            acc[2].push(f.and_then(|f| f.fscore));
        }
        for (k, acc) in self.offset.iter_mut().enumerate() {
            acc.push(m.shape.centroid_offset.map(|d| d[k]));
        }
        self.distance.push(m.shape.centroid_distance);
        self.count_ratio.push(m.shape.count_ratio);
        self.z_spread.push(m.shape.z_spread_ratio);
        if self.regions.len() < m.regions.len() {
            self.regions.resize_with(m.regions.len(), RegionAcc::default);
        }
        for (acc, r) in self.regions.iter_mut().zip(&m.regions) {
            acc.push(r);
        }
    }

    fn finish(&self) -> MethodSummary {
        MethodSummary {
            count: self.count,
            empty_frames: self.empty_frames,
            voxel: self.voxel.finish(),
            chamfer: self.chamfer.stat(),
            chamfer_sum: self.chamfer_sum.stat(),
            hausdorff: self.hausdorff.stat(),
            fscores: self
                .taus
                .iter()
                .map(|(tau, a)| FScoreSummary {
                    tau: *tau,
                    precision: a[0].stat(),
                    recall: a[1].stat(),
                    fscore: a[2].stat(),
                })
                .collect(),
            centroid_offset: self.offset.map(|a| a.stat()),
            centroid_distance: self.distance.stat(),
            count_ratio: self.count_ratio.stat(),
            z_spread_ratio: self.z_spread.stat(),
            regions: self.regions.iter().map(RegionAcc::finish).collect(),
        }
    }
}
