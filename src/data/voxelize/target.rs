//! The training target built from a LiDAR grid and a radar grid.
//!
//! Plain rule (the original): ch0, ch1 come from the LiDAR grid; for each
//! LiDAR-occupied voxel, if any radar-occupied voxel lies in its
//! `(2d+1)^3` neighbourhood (`d` = [`TargetPolicy::doppler_radius`], 1 in the
//! original; clipped at the borders), ch2 = plain mean of those radar voxels'
//! Doppler (radar ch2) and ch3 = 1, else ch2 = ch3 = 0.
//!
//! Sensor-aware variant: a LiDAR voxel is kept only if its centre
//! (`min + (i + 0.5) * voxel`, float64) has `z >= z_min` and `x <= x_max`,
//! and optionally only if a radar voxel lies within a cube of radius
//! `radar_radius` voxels.
//!
//! Arithmetic of the Doppler mean (for bit-exact parity): the radar values are
//! summed in float32 in C order of the radar voxels (equivalently, of the
//! offsets `(dx, dy, dz)`), the count is converted to float32 and the mean is
//! one float32 division.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::error::VoxelizeError;
use super::grid::{GridSpec, SparseGrid, CHANNELS};
use super::occupancy::{for_each_in_cube, Occupancy};

/// How the target is derived; serialised as `target_policy.json`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TargetPolicy {
    /// Keep LiDAR voxels whose centre z is at least this (metres).
    pub z_min: Option<f64>,
    /// Keep LiDAR voxels whose centre x is at most this (metres).
    pub x_max: Option<f64>,
    /// Keep LiDAR voxels only if a radar voxel lies within this many voxels
    /// (cube radius).
    pub radar_radius: Option<u32>,
    /// Neighbourhood radius of the Doppler rule (1 = 3x3x3).
    pub doppler_radius: u32,
}

impl Default for TargetPolicy {
    fn default() -> Self {
        TargetPolicy::plain()
    }
}

impl TargetPolicy {
    /// The original rule: every LiDAR voxel, Doppler radius 1.
    pub fn plain() -> Self {
        TargetPolicy { z_min: None, x_max: None, radar_radius: None, doppler_radius: 1 }
    }

    /// The sensor-aware variant: `z >= -1.0`, `x <= 80`, no radar-proximity
    /// cut (set `radar_radius`, e.g. to the original's default 2, to add it).
    pub fn sensor_aware() -> Self {
        TargetPolicy { z_min: Some(-1.0), x_max: Some(80.0), radar_radius: None, doppler_radius: 1 }
    }

    /// Whether LiDAR voxel `c` passes the geometric cuts.
    pub fn keeps(&self, spec: &GridSpec, c: [u32; 3]) -> bool {
        self.z_min.is_none_or(|z| spec.centre(2, c[2]) >= z) && self.x_max.is_none_or(|x| spec.centre(0, c[0]) <= x)
    }
}

/// The `target_policy.json` record: the policy, the grid and the frame count.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyFile {
    /// The target policy.
    pub policy: TargetPolicy,
    /// The grid the targets were built on.
    pub grid: GridSpec,
    /// Number of frames written.
    pub frames: usize,
}

impl PolicyFile {
    /// Pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }

    /// Writes `target_policy.json` into `dir`, atomically.
    pub fn write(&self, dir: &Path) -> Result<(), VoxelizeError> {
        let path = dir.join("target_policy.json");
        crate::io::write_atomic(&path, (self.to_json() + "\n").as_bytes()).map_err(|e| VoxelizeError::io(path, e))
    }
}

/// Builds the target grid from the LiDAR and radar grids (same shape).
pub fn build_target(lidar: &SparseGrid, radar: &SparseGrid, spec: &GridSpec, policy: &TargetPolicy) -> SparseGrid {
    let dims = spec.dims;
    let near_radar = policy.radar_radius.map(|r| Occupancy::dilated(radar, r));
    // Every radar voxel contributes its Doppler to each cell of its
    // neighbourhood; a stable sort by target cell keeps, per cell, the radar
    // voxels in C order.
    let mut contrib: Vec<(u64, f32)> = Vec::with_capacity(radar.len() * 27);
    for (i, &c) in radar.coords.iter().enumerate() {
        let dop = radar.features[i * CHANNELS + 2];
        for_each_in_cube(dims, c, policy.doppler_radius, |n| contrib.push((spec.key(n), dop)));
    }
    contrib.sort_by_key(|e| e.0);
    let mut out = SparseGrid::empty(spec);
    let mut j = 0;
    for (i, &c) in lidar.coords.iter().enumerate() {
        if !policy.keeps(spec, c) || near_radar.as_ref().is_some_and(|o| !o.get(c)) {
            continue;
        }
        let key = spec.key(c);
        while j < contrib.len() && contrib[j].0 < key {
            j += 1;
        }
        let (mut sum, mut n) = (0.0f32, 0u32);
        while j < contrib.len() && contrib[j].0 == key {
            sum += contrib[j].1;
            n += 1;
            j += 1;
        }
        let (dop, mask) = if n > 0 { (sum / n as f32, 1.0) } else { (0.0, 0.0) };
        out.coords.push(c);
        out.features.extend_from_slice(&[1.0, lidar.features[i * CHANNELS + 1], dop, mask]);
    }
    out
}
