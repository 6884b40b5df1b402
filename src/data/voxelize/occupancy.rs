//! A dense occupancy bitset over the grid (1.2 MB at the full 600x200x80
//! grid), for constant-time neighbourhood tests.

use super::grid::SparseGrid;

/// One bit per grid cell, in C order.
#[derive(Debug, Clone)]
pub struct Occupancy {
    dims: [usize; 3],
    bits: Vec<u64>,
}

impl Occupancy {
    /// An empty bitset of the grid `(H, W, Z)`.
    pub fn new(dims: [usize; 3]) -> Self {
        let cells = dims.iter().product::<usize>();
        Occupancy { dims, bits: vec![0; cells.div_ceil(64)] }
    }

    /// The occupied voxels of a grid.
    pub fn of(grid: &SparseGrid) -> Self {
        let mut occ = Occupancy::new([grid.shape[0], grid.shape[1], grid.shape[2]]);
        for &c in &grid.coords {
            occ.set(c);
        }
        occ
    }

    /// The occupied voxels of a grid dilated by a cube of radius `r` (clipped
    /// at the borders): a cell is set when an occupied voxel lies within `r`
    /// on every axis.
    pub fn dilated(grid: &SparseGrid, r: u32) -> Self {
        Occupancy::dilated_coords([grid.shape[0], grid.shape[1], grid.shape[2]], &grid.coords, r)
    }

    /// [`Occupancy::dilated`] of the voxels `coords` of a grid `(H, W, Z)`:
    /// the one rule of "within `r` voxels of a detection" (the sensor-aware
    /// target and the evaluation's shared-visible region).
    pub fn dilated_coords(dims: [usize; 3], coords: &[[u32; 3]], r: u32) -> Self {
        let mut occ = Occupancy::new(dims);
        for &c in coords {
            for_each_in_cube(dims, c, r, |n| occ.set(n));
        }
        occ
    }

    fn linear(&self, c: [u32; 3]) -> usize {
        (c[0] as usize * self.dims[1] + c[1] as usize) * self.dims[2] + c[2] as usize
    }

    /// Marks a cell (cells outside the grid are ignored).
    pub fn set(&mut self, c: [u32; 3]) {
        if (0..3).any(|k| c[k] as usize >= self.dims[k]) {
            return;
        }
        let i = self.linear(c);
        self.bits[i / 64] |= 1 << (i % 64);
    }

    /// Whether a cell is marked (cells outside the grid are not).
    pub fn get(&self, c: [u32; 3]) -> bool {
        if (0..3).any(|k| c[k] as usize >= self.dims[k]) {
            return false;
        }
        let i = self.linear(c);
        self.bits[i / 64] >> (i % 64) & 1 == 1
    }

    /// Number of marked cells.
    pub fn count(&self) -> usize {
        self.bits.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// Whether a marked cell lies within a cube of radius `r` around `c`.
    pub fn any_within(&self, c: [u32; 3], r: u32) -> bool {
        let mut found = false;
        for_each_in_cube(self.dims, c, r, |n| found |= self.get(n));
        found
    }
}

/// Calls `f` for every cell of the cube of radius `r` around `c`, clipped to
/// the grid, in C order of the offsets `(dx, dy, dz)`.
pub fn for_each_in_cube(dims: [usize; 3], c: [u32; 3], r: u32, mut f: impl FnMut([u32; 3])) {
    if dims.contains(&0) {
        return;
    }
    let lo = [0, 1, 2].map(|k| c[k].saturating_sub(r));
    let hi = [0, 1, 2].map(|k| (u64::from(c[k]) + u64::from(r)).min(dims[k] as u64 - 1) as u32);
    for x in lo[0]..=hi[0] {
        for y in lo[1]..=hi[1] {
            for z in lo[2]..=hi[2] {
                f([x, y, z]);
            }
        }
    }
}

/// Fraction of the voxels of `from` that have an occupied voxel of `to`
/// within a cube of radius `r` (0 when `from` is empty). With `r = 1` this is
/// the "radar voxel has a LiDAR voxel within 1 voxel" statistic.
pub fn near_fraction(from: &SparseGrid, to: &SparseGrid, r: u32) -> f64 {
    if from.is_empty() {
        return 0.0;
    }
    let occ = Occupancy::of(to);
    let near = from.coords.iter().filter(|&&c| occ.any_within(c, r)).count();
    near as f64 / from.len() as f64
}

/// Intersection over union of the occupied voxels of `pred` dilated by a cube
/// of radius `r` (0 = as is) and those of `truth` (0 when both are empty).
pub fn dilated_iou(pred: &SparseGrid, truth: &SparseGrid, r: u32) -> f64 {
    let occ = Occupancy::dilated(pred, r);
    let inter = truth.coords.iter().filter(|&&c| occ.get(c)).count();
    let union = occ.count() + truth.len() - inter;
    if union == 0 {
        0.0
    } else {
        inter as f64 / union as f64
    }
}
