//! One radar/LiDAR pair to its three grids: ground removal on the LiDAR,
//! radar into the LiDAR frame, voxelization of both, then the target.

use serde::{Deserialize, Serialize};

use super::calib::Calibration;
use super::cloud::PointCloud;
use super::error::VoxelizeError;
use super::grid::{voxelize, FrameStats, GridSpec, SparseGrid};
use super::ground::{remove_ground, GroundParams};
use super::target::{build_target, TargetPolicy};

/// The per-frame pipeline settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FrameProcessor {
    /// Grid geometry.
    pub grid: GridSpec,
    /// Radar-to-LiDAR transform (already resolved).
    pub calib: Calibration,
    /// Ground removal for the LiDAR; `None` disables it.
    pub ground: Option<GroundParams>,
    /// Target rule.
    pub policy: TargetPolicy,
}

impl Default for FrameProcessor {
    fn default() -> Self {
        FrameProcessor {
            grid: GridSpec::default(),
            calib: Calibration::identity(),
            ground: Some(GroundParams::default()),
            policy: TargetPolicy::plain(),
        }
    }
}

/// The three grids of a frame and how they came about.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameGrids {
    /// `radar_voxel`: Occ, Int, Dop, Var.
    pub radar: SparseGrid,
    /// `lidar_voxel`: Occ, Int, 0, 0 (ground removed).
    pub lidar: SparseGrid,
    /// `target_voxel`: Occ, Int, Dop, Mask.
    pub target: SparseGrid,
    /// Statistics of the radar cloud.
    pub radar_stats: FrameStats,
    /// Statistics of the LiDAR cloud (after ground removal; `points_in`
    /// counts the points before it).
    pub lidar_stats: FrameStats,
    /// LiDAR points removed as ground.
    pub ground_removed: usize,
}

impl FrameProcessor {
    /// Processes one pair. The radar is transformed by `calib`; the LiDAR is
    /// ground-filtered. Malformed clouds are an error, empty ones give empty
    /// grids.
    pub fn process(&self, radar: &PointCloud, lidar: &PointCloud) -> Result<FrameGrids, VoxelizeError> {
        radar.validate()?;
        lidar.validate()?;
        let mut radar = radar.clone();
        self.calib.apply(&mut radar);
        let (radar_grid, radar_stats) = voxelize(&radar, &self.grid)?;
        let (lidar_grid, mut lidar_stats, ground_removed) = match &self.ground {
            Some(prm) => {
                let (kept, g) = remove_ground(lidar, prm);
                let (grid, stats) = voxelize(&kept, &self.grid)?;
                (grid, stats, g.removed)
            }
            None => {
                let (grid, stats) = voxelize(lidar, &self.grid)?;
                (grid, stats, 0)
            }
        };
        lidar_stats.points_in = lidar.len();
        let target = build_target(&lidar_grid, &radar_grid, &self.grid, &self.policy);
        Ok(FrameGrids { radar: radar_grid, lidar: lidar_grid, target, radar_stats, lidar_stats, ground_removed })
    }
}
