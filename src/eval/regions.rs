//! Scores by region: range bands along the sensor's forward axis (x),
//! height bands (z), and the shared-visible region (voxels within `r` of a
//! radar detection), each with voxel, point, match and bird's-eye-view
//! scores, for the prediction and the radar alike.
//!
//! # Conventions
//! * A voxel is in a band when its centre lies in `[lo, hi)` (metres); the
//!   `z_min` filter (centre z `>= z_min`) applies to every region, never to
//!   the whole-frame metrics.
//! * Shared-visible: within a cube of radius `visible_radius` voxels of a
//!   radar voxel (the sensor-aware target's rule,
//!   [`Occupancy::dilated_coords`]).
//! * In a region both the method's set and the target are restricted to it,
//!   then scored as whole frames are: IoU/F1 under [`Counts::scores`]'s
//!   empty rules; Chamfer and `nn` (mean distance from the method's points to
//!   the target's, metres) and Hausdorff on voxel centres, `None` when either
//!   is empty; `match@tau` = share of the method's points with a target
//!   point within tau (its precision at tau), `rmatch@tau` the reverse
//!   (recall at tau), `f@tau` their harmonic mean.
//! * BEV: both restricted sets projected onto (x, y) (any z), IoU and F1 of
//!   the occupied columns.

use serde::{Deserialize, Serialize};

use super::geometry::GridGeometry;
use super::kdtree::KdTree;
use super::points::{point_metrics_trees, FScore, PointConfig};
use super::voxel::{Counts, VoxelScores};
use super::voxels::VoxelSet;
use super::EvalError;
use crate::data::voxelize::Occupancy;

/// Where region scores are computed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RegionConfig {
    /// Range band edges along x in metres (default 0, 20, 40, 80, 120: four
    /// bands; empty: no range bands).
    pub range_edges: Vec<f64>,
    /// Height band edges along z in metres (default -6, -1, 2, 5, 10: below
    /// -1 m, -1 to 2 m, 2 to 5 m, above 5 m; empty: no height bands).
    pub height_edges: Vec<f64>,
    /// Voxels below this height (centre z, metres) are left out of every
    /// region (default: none left out; the seed's author used -1).
    pub z_min: Option<f64>,
    /// Radius in voxels of the shared-visible region around radar voxels
    /// (default 2; `None`: no shared-visible region).
    pub visible_radius: Option<u32>,
    /// Tolerances of the match ratios in metres (default 1 and 2).
    pub match_taus: Vec<f64>,
}

impl Default for RegionConfig {
    fn default() -> Self {
        RegionConfig {
            range_edges: vec![0.0, 20.0, 40.0, 80.0, 120.0],
            height_edges: vec![-6.0, -1.0, 2.0, 5.0, 10.0],
            z_min: None,
            visible_radius: Some(2),
            match_taus: vec![1.0, 2.0],
        }
    }
}

/// One region of [`RegionConfig::regions`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Region {
    /// Centre x in `[lo, hi)`.
    Range(f64, f64),
    /// Centre z in `[lo, hi)`.
    Height(f64, f64),
    /// Within the radius of a radar voxel.
    Visible,
}

impl Region {
    /// Column-safe name: `x0_20`, `z-1_2`, `visible`.
    pub fn name(&self) -> String {
        match self {
            Region::Range(lo, hi) => format!("x{lo}_{hi}"),
            Region::Height(lo, hi) => format!("z{lo}_{hi}"),
            Region::Visible => "visible".into(),
        }
    }
}

impl RegionConfig {
    /// No region at all (the whole-frame metrics only).
    pub fn none() -> RegionConfig {
        RegionConfig { range_edges: Vec::new(), height_edges: Vec::new(), visible_radius: None, ..Default::default() }
    }

    /// Errors on a single, unsorted or non-finite edge, a non-finite
    /// `z_min` or a tolerance that is not positive.
    pub fn validate(&self) -> Result<(), EvalError> {
        for (what, e) in [("range", &self.range_edges), ("height", &self.height_edges)] {
            if e.len() == 1 || e.iter().any(|v| !v.is_finite()) || e.windows(2).any(|w| w[0] >= w[1]) {
                return Err(EvalError::Config(format!(
                    "{what} band edges must be none or at least two finite, increasing values, got {e:?}"
                )));
            }
        }
        if self.z_min.is_some_and(|z| !z.is_finite()) {
            return Err(EvalError::Config(format!("z_min must be finite, got {:?}", self.z_min)));
        }
        if self.match_taus.iter().any(|t| !(t.is_finite() && *t > 0.0)) {
            return Err(EvalError::Config(format!("match tolerances must be > 0, got {:?}", self.match_taus)));
        }
        Ok(())
    }

    /// The range bands, the height bands, then the shared-visible region (each if asked for).
    pub fn regions(&self) -> Vec<Region> {
        let bands = |e: &[f64], f: fn(f64, f64) -> Region| e.windows(2).map(|w| f(w[0], w[1])).collect::<Vec<_>>();
        let mut v = bands(&self.range_edges, Region::Range);
        v.extend(bands(&self.height_edges, Region::Height));
        if self.visible_radius.is_some() {
            v.push(Region::Visible);
        }
        v
    }
}

/// One method's scores in one region of one frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegionMetrics {
    /// [`Region::name`].
    pub region: String,
    /// The method's voxels in the region.
    pub count: usize,
    /// The target's voxels in the region.
    pub target_count: usize,
    /// Voxel confusion counts in the region.
    pub counts: Counts,
    /// IoU, precision, recall, F1 in the region.
    pub voxel: VoxelScores,
    /// Chamfer (m) in the region.
    pub chamfer: Option<f64>,
    /// Hausdorff (m) in the region.
    pub hausdorff: Option<f64>,
    /// Mean distance from the method's points to the target's (m).
    pub nn: Option<f64>,
    /// Match ratios per tolerance: `precision` = match, `recall` = reverse
    /// match, `fscore` their harmonic mean (the point F-score at tau).
    pub matches: Vec<FScore>,
    /// Bird's-eye-view column counts.
    pub bev_counts: Counts,
    /// Bird's-eye-view IoU, precision, recall, F1.
    pub bev: VoxelScores,
}

impl RegionMetrics {
    /// The match ratios at `tau` (within 1e-9).
    pub fn at(&self, tau: f64) -> Option<&FScore> {
        self.matches.iter().find(|f| (f.tau - tau).abs() < 1e-9)
    }
}

/// Which voxels lie in each region of one frame: the regions with the
/// shared-visible mask of the frame's radar, and the target in each region
/// (its voxels, their tree and columns: built once, shared by every method).
pub struct RegionMasks<'a> {
    geom: &'a GridGeometry,
    cfg: &'a RegionConfig,
    visible: Option<Occupancy>,
    targets: Vec<RegionTarget>,
}

/// The target restricted to one region.
struct RegionTarget {
    region: Region,
    set: VoxelSet,
    tree: KdTree,
    bev: VoxelSet,
}

impl<'a> RegionMasks<'a> {
    /// The regions of `cfg` on `geom` around the voxels of `radar`, with `target` in each.
    pub fn new(geom: &'a GridGeometry, cfg: &'a RegionConfig, radar: &VoxelSet, target: &VoxelSet) -> RegionMasks<'a> {
        let visible = cfg.visible_radius.map(|r| Occupancy::dilated_coords(geom.dims, radar.coords(), r));
        let mut m = RegionMasks { geom, cfg, visible, targets: Vec::new() };
        m.targets = (cfg.regions().into_iter())
            .map(|region| {
                let set = m.restrict(target, region);
                RegionTarget { region, tree: KdTree::new(set.centres(geom)), bev: bev(&set), set }
            })
            .collect();
        m
    }

    /// The voxels of `set` in `region` (after the `z_min` filter).
    pub fn restrict(&self, set: &VoxelSet, region: Region) -> VoxelSet {
        set.filter(|c| {
            let p = self.geom.centre(*c);
            self.cfg.z_min.is_none_or(|z| p[2] >= z)
                && match region {
                    Region::Range(lo, hi) => p[0] >= lo && p[0] < hi,
                    Region::Height(lo, hi) => p[2] >= lo && p[2] < hi,
                    Region::Visible => self.visible.as_ref().is_some_and(|v| v.get(*c)),
                }
        })
    }

    /// `set`'s scores against the target in every region.
    pub fn metrics(&self, set: &VoxelSet) -> Vec<RegionMetrics> {
        let taus = PointConfig { taus: self.cfg.match_taus.clone() };
        self.targets
            .iter()
            .map(|t| {
                let s = self.restrict(set, t.region);
                let counts = Counts::between(&s, &t.set);
                let points = point_metrics_trees(&KdTree::new(s.centres(self.geom)), &t.tree, &taus);
                let bev_counts = Counts::between(&bev(&s), &t.bev);
                RegionMetrics {
                    region: t.region.name(),
                    count: s.len(),
                    target_count: t.set.len(),
                    counts,
                    voxel: counts.scores(),
                    chamfer: points.chamfer,
                    hausdorff: points.hausdorff,
                    nn: points.pred_to_target,
                    matches: points.fscores,
                    bev_counts,
                    bev: bev_counts.scores(),
                }
            })
            .collect()
    }
}

/// The occupied (x, y) columns of `set`, as voxels at z = 0.
pub fn bev(set: &VoxelSet) -> VoxelSet {
    VoxelSet::new(set.coords().iter().map(|c| [c[0], c[1], 0]).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bands_split_the_frame_and_the_visible_region_follows_the_radar() {
        let geom = GridGeometry { dims: [12, 4, 4], min: [0.0, 0.0, -2.0], voxel: [10.0, 1.0, 1.0] };
        let cfg = RegionConfig {
            range_edges: vec![0.0, 20.0, 120.0],
            height_edges: vec![-2.0, 0.0, 2.0],
            visible_radius: Some(1),
            ..Default::default()
        };
        let target = VoxelSet::new(vec![[0, 0, 0], [1, 0, 3], [5, 1, 1], [11, 3, 2]]);
        let radar = VoxelSet::new(vec![[0, 0, 1], [11, 3, 3]]);
        let m = RegionMasks::new(&geom, &cfg, &radar, &target);
        let names: Vec<String> = cfg.regions().iter().map(Region::name).collect();
        assert_eq!(names, ["x0_20", "x20_120", "z-2_0", "z0_2", "visible"]);
        assert_eq!(m.restrict(&target, Region::Range(0.0, 20.0)).coords(), &[[0, 0, 0], [1, 0, 3]]);
        assert_eq!(m.restrict(&target, Region::Height(0.0, 2.0)).coords(), &[[1, 0, 3], [11, 3, 2]]);
        assert_eq!(m.restrict(&target, Region::Visible).coords(), &[[0, 0, 0], [11, 3, 2]]);
        // the target scored against itself: perfect wherever the region holds target voxels
        let r = m.metrics(&target);
        assert!(r.iter().all(|r| r.voxel.iou == Some(1.0) && r.bev.f1 == Some(1.0) && r.nn == Some(0.0)));
        assert_eq!(r.iter().map(|r| r.target_count).collect::<Vec<_>>(), [2, 2, 2, 2, 2]);
        // z_min leaves the low voxels out of every region
        let high = RegionConfig { z_min: Some(0.0), ..cfg.clone() };
        let m = RegionMasks::new(&geom, &high, &radar, &target);
        assert_eq!(m.restrict(&target, Region::Range(0.0, 20.0)).coords(), &[[1, 0, 3]]);
        assert!(RegionConfig { range_edges: vec![0.0, 0.0], ..cfg.clone() }.validate().is_err());
        assert!(RegionConfig { range_edges: vec![1.0], ..cfg }.validate().is_err());
        assert!(RegionConfig::none().regions().is_empty() && RegionConfig::none().validate().is_ok());
    }
}
