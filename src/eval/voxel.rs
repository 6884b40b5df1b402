//! Voxel metrics at a threshold: TP/FP/FN, IoU, precision, recall, F1.
//!
//! # Empty cases ("no perfect score from nothing")
//! * Both sets empty (TP = FP = FN = 0): every score is `None` (undefined).
//!   Such frames are counted (`both_empty`) and left out of macro means;
//!   they never count as a perfect frame.
//! * Exactly one set empty: the 0/0 ratio (precision when nothing is
//!   predicted, recall when nothing is to be found) is defined as 0, so all
//!   four scores are 0: predicting nothing where something exists, or
//!   something where nothing exists, is a failure.
//! * Otherwise the usual ratios; F1 is 0 when precision + recall is 0.
//!
//! Micro scores pool the counts of all frames, then apply the same rules.
//! Macro scores are means of the per-frame scores over the frames where they are defined.

use serde::{Deserialize, Serialize};

use super::stats::{harmonic, MeanAcc, Stat};
use super::voxels::VoxelSet;

/// Confusion counts of a predicted voxel set against a target set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Voxels in both sets.
    pub tp: u64,
    /// Predicted voxels not in the target.
    pub fp: u64,
    /// Target voxels not predicted.
    pub fn_: u64,
}

impl Counts {
    /// Counts of `pred` against `target` (one merge pass over the sorted sets).
    pub fn between(pred: &VoxelSet, target: &VoxelSet) -> Counts {
        let tp = intersection_size(pred, target) as u64;
        Counts { tp, fp: pred.len() as u64 - tp, fn_: target.len() as u64 - tp }
    }

    /// Scores under the module's empty-case rules.
    pub fn scores(&self) -> VoxelScores {
        let (tp, fp, fn_) = (self.tp as f64, self.fp as f64, self.fn_ as f64);
        if tp + fp + fn_ == 0.0 {
            return VoxelScores::default();
        }
        let share = |num: f64, den: f64| if den > 0.0 { num / den } else { 0.0 };
        let (precision, recall) = (share(tp, tp + fp), share(tp, tp + fn_));
        VoxelScores {
            iou: Some(tp / (tp + fp + fn_)),
            precision: Some(precision),
            recall: Some(recall),
            f1: Some(harmonic(precision, recall)),
        }
    }
}

impl std::ops::Add for Counts {
    type Output = Counts;

    /// Element-wise sum (pooling).
    fn add(self, o: Counts) -> Counts {
        Counts { tp: self.tp + o.tp, fp: self.fp + o.fp, fn_: self.fn_ + o.fn_ }
    }
}

impl std::ops::AddAssign for Counts {
    fn add_assign(&mut self, o: Counts) {
        *self = *self + o;
    }
}

/// IoU, precision, recall and F1; `None` when both sets are empty.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct VoxelScores {
    /// TP / (TP + FP + FN).
    pub iou: Option<f64>,
    /// TP / (TP + FP); 0 when nothing is predicted but the target is not empty.
    pub precision: Option<f64>,
    /// TP / (TP + FN); 0 when the target is empty but something is predicted.
    pub recall: Option<f64>,
    /// Harmonic mean of precision and recall (0 when both are 0).
    pub f1: Option<f64>,
}

/// Counts and scores of one frame.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct VoxelMetrics {
    /// Confusion counts.
    pub counts: Counts,
    /// Scores from the counts.
    pub scores: VoxelScores,
}

/// Voxel metrics of `pred` against `target`.
pub fn voxel_metrics(pred: &VoxelSet, target: &VoxelSet) -> VoxelMetrics {
    let counts = Counts::between(pred, target);
    VoxelMetrics { counts, scores: counts.scores() }
}

/// Number of voxels in both sorted sets.
pub fn intersection_size(a: &VoxelSet, b: &VoxelSet) -> usize {
    sorted_intersection(a.coords(), b.coords())
}

/// Number of elements in both sorted, duplicate-free slices (a merge).
pub fn sorted_intersection<T: Ord>(a: &[T], b: &[T]) -> usize {
    let (mut i, mut j, mut n) = (0, 0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                n += 1;
                i += 1;
                j += 1;
            }
        }
    }
    n
}

/// Micro and macro aggregation of voxel metrics over frames.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct VoxelSummary {
    /// Frames aggregated.
    pub frames: usize,
    /// Frames where both sets were empty (scores undefined, left out of macro means).
    pub both_empty: usize,
    /// Pooled counts.
    pub counts: Counts,
    /// Scores of the pooled counts.
    pub micro: VoxelScores,
    /// Mean IoU over frames where defined.
    pub iou: Stat,
    /// Mean precision over frames where defined.
    pub precision: Stat,
    /// Mean recall over frames where defined.
    pub recall: Stat,
    /// Mean F1 over frames where defined.
    pub f1: Stat,
}

/// Accumulates [`VoxelMetrics`] into a [`VoxelSummary`].
#[derive(Debug, Clone, Default)]
pub struct VoxelSummaryAcc {
    frames: usize,
    both_empty: usize,
    counts: Counts,
    iou: MeanAcc,
    precision: MeanAcc,
    recall: MeanAcc,
    f1: MeanAcc,
}

impl VoxelSummaryAcc {
    /// Adds one frame.
    pub fn push(&mut self, m: &VoxelMetrics) {
        self.frames += 1;
        self.both_empty += usize::from(m.scores.iou.is_none());
        self.counts += m.counts;
        self.iou.push(m.scores.iou);
        self.precision.push(m.scores.precision);
        self.recall.push(m.scores.recall);
        self.f1.push(m.scores.f1);
    }

    /// The summary so far.
    pub fn finish(&self) -> VoxelSummary {
        VoxelSummary {
            frames: self.frames,
            both_empty: self.both_empty,
            counts: self.counts,
            micro: self.counts.scores(),
            iou: self.iou.stat(),
            precision: self.precision.stat(),
            recall: self.recall.stat(),
            f1: self.f1.stat(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(v: &[[u32; 3]]) -> VoxelSet {
        VoxelSet::new(v.to_vec())
    }

    #[test]
    fn hand_computed_counts_and_scores() {
        // pred {a, b, c}, target {b, c, d, e}: TP 2, FP 1, FN 2.
        let (a, b, c, d, e) = ([0, 0, 0], [1, 0, 0], [2, 0, 0], [3, 0, 0], [4, 0, 0]);
        let m = voxel_metrics(&set(&[a, b, c]), &set(&[b, c, d, e]));
        assert_eq!(m.counts, Counts { tp: 2, fp: 1, fn_: 2 });
        let s = m.scores;
        assert!((s.iou.unwrap() - 0.4).abs() < 1e-12);
        assert!((s.precision.unwrap() - 2.0 / 3.0).abs() < 1e-12);
        assert!((s.recall.unwrap() - 0.5).abs() < 1e-12);
        assert!((s.f1.unwrap() - 4.0 / 7.0).abs() < 1e-12);
    }

    #[test]
    fn brute_force_agrees_on_pseudo_random_sets() {
        let mut state = 12345u64;
        let mut next = || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (state >> 33) as u32 % 6
        };
        for _ in 0..50 {
            let a: Vec<[u32; 3]> = (0..30).map(|_| [next(), next(), next()]).collect();
            let b: Vec<[u32; 3]> = (0..30).map(|_| [next(), next(), next()]).collect();
            let (sa, sb) = (set(&a), set(&b));
            let tp = sa.coords().iter().filter(|c| sb.contains(**c)).count() as u64;
            let m = voxel_metrics(&sa, &sb);
            assert_eq!(m.counts, Counts { tp, fp: sa.len() as u64 - tp, fn_: sb.len() as u64 - tp });
        }
    }

    #[test]
    fn empty_cases_are_defined() {
        let some = set(&[[1, 1, 1]]);
        let none = VoxelSet::default();
        assert_eq!(voxel_metrics(&none, &none).scores, VoxelScores::default());
        let zero = VoxelScores { iou: Some(0.0), precision: Some(0.0), recall: Some(0.0), f1: Some(0.0) };
        assert_eq!(voxel_metrics(&none, &some).scores, zero);
        assert_eq!(voxel_metrics(&some, &none).scores, zero);
        let one = VoxelScores { iou: Some(1.0), precision: Some(1.0), recall: Some(1.0), f1: Some(1.0) };
        assert_eq!(voxel_metrics(&some, &some).scores, one);
    }

    #[test]
    fn summary_pools_and_averages() {
        let (a, b) = ([0, 0, 0], [1, 0, 0]);
        let mut acc = VoxelSummaryAcc::default();
        acc.push(&voxel_metrics(&set(&[a]), &set(&[a]))); // perfect
        acc.push(&voxel_metrics(&set(&[a]), &set(&[a, b]))); // TP1 FN1: IoU .5
        acc.push(&voxel_metrics(&VoxelSet::default(), &VoxelSet::default())); // undefined
        let s = acc.finish();
        assert_eq!((s.frames, s.both_empty), (3, 1));
        assert_eq!(s.counts, Counts { tp: 2, fp: 0, fn_: 1 });
        assert!((s.micro.iou.unwrap() - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(s.iou, Stat { mean: Some(0.75), n: 2 });
    }
}
