//! The voxel grid and the per-cloud voxelization rule.
//!
//! Rule (the original preprocessing, reproduced bit for bit in float32):
//!
//! 1. A point is dropped and counted as *non-finite* when any of its values
//!    (coordinates or features) is NaN or infinite; it is never voxelized.
//! 2. It is kept when `min <= p < max` on each axis (float32 comparisons),
//!    else dropped and counted as *out of range*.
//! 3. Its index on each axis is `floor((p - min) / voxel)` evaluated in
//!    float32 (`p`, `min` and `voxel` are float32, one rounding after the
//!    subtraction and one after the division), clipped to `0..dim`. A point on
//!    a voxel boundary lands where float32 rounding puts it; a point just
//!    below `max` whose quotient rounds up to `dim` is clipped into the last
//!    voxel.
//! 4. Per occupied voxel, with `n` its point count (as float32, exact below
//!    2^24) and sums accumulated in float32 **in point order** (each addition
//!    rounded, as `numpy.add.at` does on float32 arrays):
//!    - ch0 = 1;
//!    - ch1 = `sum(col3) / n` (1 if the cloud has no column 3);
//!    - ch2 = `sum(col4) / n` (0 if absent);
//!    - ch3 = `max(sum(col4 * col4) / n - ch2 * ch2, 0)`, where `col4 * col4`
//!      and `ch2 * ch2` are float32 products (0 if absent).
//!
//! Output voxels are sorted in C order of `(ix, iy, iz)`.

use serde::{Deserialize, Serialize};

use super::cloud::PointCloud;
use super::error::VoxelizeError;

/// Channels of every grid (Occ, Int, Dop, Var/Mask).
pub const CHANNELS: usize = 4;

/// Grid geometry: metric range, voxel size and dimensions.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GridSpec {
    /// Lower corner `(x0, y0, z0)` in metres (inclusive).
    pub min: [f32; 3],
    /// Upper corner `(x1, y1, z1)` in metres (exclusive).
    pub max: [f32; 3],
    /// Voxel edge in metres.
    pub voxel: f32,
    /// Voxels per axis `(H, W, Z)`.
    pub dims: [usize; 3],
}

impl Default for GridSpec {
    /// The NTU4DRadLM_Pre grid: range `[0, -20, -6, 120, 20, 10]`, voxel 0.2,
    /// dims `(600, 200, 80)`.
    fn default() -> Self {
        GridSpec { min: [0.0, -20.0, -6.0], max: [120.0, 20.0, 10.0], voxel: 0.2, dims: [600, 200, 80] }
    }
}

impl GridSpec {
    /// A grid from a range `[x0, y0, z0, x1, y1, z1]` and a voxel size, with
    /// dims `round((max - min) / voxel)` (computed in float64).
    pub fn from_range(range: [f32; 6], voxel: f32) -> Result<Self, VoxelizeError> {
        let dims = [0, 1, 2].map(|k| ((f64::from(range[k + 3]) - f64::from(range[k])) / f64::from(voxel)).round());
        if dims.iter().any(|d| !(d.is_finite() && *d >= 1.0 && *d <= 1e6)) {
            return Err(VoxelizeError::Grid(format!("range {range:?} with voxel {voxel} gives dims {dims:?}")));
        }
        let spec = GridSpec {
            min: [range[0], range[1], range[2]],
            max: [range[3], range[4], range[5]],
            voxel,
            dims: dims.map(|d| d as usize),
        };
        spec.validate()?;
        Ok(spec)
    }

    /// Checks the spec is usable: finite, `min < max`, `voxel > 0`, each dim
    /// in `1..=2^20` and at most 2^34 voxels in all.
    pub fn validate(&self) -> Result<(), VoxelizeError> {
        let finite = self.min.iter().chain(&self.max).chain([&self.voxel]).all(|v| v.is_finite());
        if !finite || self.voxel <= 0.0 || (0..3).any(|k| self.min[k] >= self.max[k]) {
            return Err(VoxelizeError::Grid(format!("{self:?}: need finite min < max and voxel > 0")));
        }
        if self.dims.iter().any(|&d| d == 0 || d > 1 << 20) || self.cells() > 1 << 34 {
            return Err(VoxelizeError::Grid(format!("{self:?}: dims must be 1..=2^20 and at most 2^34 cells")));
        }
        Ok(())
    }

    /// Number of cells `H * W * Z`.
    pub fn cells(&self) -> u64 {
        self.dims.iter().map(|&d| d as u64).product()
    }

    /// The dense shape `(H, W, Z, 4)`.
    pub fn shape(&self) -> [usize; 4] {
        [self.dims[0], self.dims[1], self.dims[2], CHANNELS]
    }

    /// C-order linear index of a voxel.
    pub fn key(&self, c: [u32; 3]) -> u64 {
        (u64::from(c[0]) * self.dims[1] as u64 + u64::from(c[1])) * self.dims[2] as u64 + u64::from(c[2])
    }

    /// Metric centre of voxel `i` on axis `axis` (`min + (i + 0.5) * voxel`,
    /// float64).
    pub fn centre(&self, axis: usize, i: u32) -> f64 {
        f64::from(self.min[axis]) + (f64::from(i) + 0.5) * f64::from(self.voxel)
    }

    /// Whether a point lies in the half-open range (float32 comparisons).
    pub fn contains(&self, p: [f32; 3]) -> bool {
        (0..3).all(|k| p[k] >= self.min[k] && p[k] < self.max[k])
    }

    /// The voxel index of an in-range point: `floor((p - min) / voxel)` in
    /// float32, clipped to the grid.
    pub fn index(&self, p: [f32; 3]) -> [u32; 3] {
        [0, 1, 2].map(|k| {
            let q = ((p[k] - self.min[k]) / self.voxel).floor();
            if q >= 0.0 {
                (q as u64).min(self.dims[k] as u64 - 1) as u32
            } else {
                0
            }
        })
    }
}

/// A sparse 4-channel grid: the occupied voxels in C order and their values.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SparseGrid {
    /// Dense shape `(H, W, Z, 4)`.
    pub shape: [usize; 4],
    /// `(ix, iy, iz)` per occupied voxel, sorted in C order, unique.
    pub coords: Vec<[u32; 3]>,
    /// 4 values per voxel, row-major (Occ, Int, Dop, Var/Mask).
    pub features: Vec<f32>,
}

impl SparseGrid {
    /// An empty grid of a spec's shape.
    pub fn empty(spec: &GridSpec) -> Self {
        SparseGrid { shape: spec.shape(), coords: Vec::new(), features: Vec::new() }
    }

    /// Number of occupied voxels.
    pub fn len(&self) -> usize {
        self.coords.len()
    }

    /// Whether no voxel is occupied.
    pub fn is_empty(&self) -> bool {
        self.coords.is_empty()
    }

    /// The 4 channel values of voxel `i`.
    pub fn feature(&self, i: usize) -> [f32; 4] {
        let f = &self.features[i * CHANNELS..(i + 1) * CHANNELS];
        [f[0], f[1], f[2], f[3]]
    }

    /// C-order linear key of voxel `i`.
    pub fn key(&self, i: usize) -> u64 {
        let c = self.coords[i];
        (u64::from(c[0]) * self.shape[1] as u64 + u64::from(c[1])) * self.shape[2] as u64 + u64::from(c[2])
    }

    /// Position of a voxel, by binary search over the sorted coordinates.
    pub fn find(&self, c: [u32; 3]) -> Option<usize> {
        self.coords.binary_search(&c).ok()
    }

    /// Features widened to float64, as radvox's `npy::SparseFrame` holds
    /// them: `SparseFrame { shape: g.shape, coords: g.coords.clone(),
    /// features: g.features_f64() }`.
    pub fn features_f64(&self) -> Vec<f64> {
        self.features.iter().map(|&v| f64::from(v)).collect()
    }

    /// Coordinates widened to int64 (the `.npz` `coords` layout).
    pub fn coords_i64(&self) -> Vec<i64> {
        self.coords.iter().flat_map(|c| c.map(i64::from)).collect()
    }
}

/// Per-cloud voxelization statistics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrameStats {
    /// Points in the input cloud.
    pub points_in: usize,
    /// Finite points outside the range.
    pub dropped_out_of_range: usize,
    /// Points with a NaN or infinite value.
    pub dropped_non_finite: usize,
    /// Occupied voxels of the result.
    pub occupied: usize,
}

impl std::ops::AddAssign for FrameStats {
    fn add_assign(&mut self, o: Self) {
        self.points_in += o.points_in;
        self.dropped_out_of_range += o.dropped_out_of_range;
        self.dropped_non_finite += o.dropped_non_finite;
        self.occupied += o.occupied;
    }
}

/// Voxelizes a cloud by the rule in the module docs.
pub fn voxelize(cloud: &PointCloud, spec: &GridSpec) -> Result<(SparseGrid, FrameStats), VoxelizeError> {
    spec.validate()?;
    cloud.validate()?;
    let mut stats = FrameStats { points_in: cloud.len(), ..FrameStats::default() };
    let mut keyed: Vec<(u64, usize)> = Vec::with_capacity(cloud.len());
    for (i, row) in cloud.rows().enumerate() {
        if !row.iter().all(|v| v.is_finite()) {
            stats.dropped_non_finite += 1;
            continue;
        }
        let p = [row[0], row[1], row[2]];
        if !spec.contains(p) {
            stats.dropped_out_of_range += 1;
            continue;
        }
        keyed.push((spec.key(spec.index(p)), i));
    }
    // Sorting (key, point) keeps the points of each voxel in input order.
    keyed.sort_unstable();
    let (has_int, has_dop) = (cloud.cols > 3, cloud.cols > 4);
    let mut grid = SparseGrid::empty(spec);
    let (zs, ws) = (spec.dims[2] as u64, spec.dims[1] as u64);
    let mut start = 0;
    while start < keyed.len() {
        let key = keyed[start].0;
        let end = start + keyed[start..].iter().take_while(|e| e.0 == key).count();
        let (mut s_int, mut s_dop, mut s_sq) = (0.0f32, 0.0f32, 0.0f32);
        for &(_, i) in &keyed[start..end] {
            let row = cloud.row(i);
            if has_int {
                s_int += row[3];
            }
            if has_dop {
                s_dop += row[4];
                s_sq += row[4] * row[4];
            }
        }
        let n = (end - start) as f32;
        let int = if has_int { s_int / n } else { 1.0 };
        let (dop, var) = if has_dop {
            let mean = s_dop / n;
            let var = s_sq / n - mean * mean;
            (mean, if var > 0.0 { var } else { 0.0 })
        } else {
            (0.0, 0.0)
        };
        grid.coords.push([(key / zs / ws) as u32, (key / zs % ws) as u32, (key % zs) as u32]);
        grid.features.extend_from_slice(&[1.0, int, dop, var]);
        start = end;
    }
    stats.occupied = grid.len();
    Ok((grid, stats))
}
