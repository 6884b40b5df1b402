//! Grid geometry: voxel indices to metric voxel centres.

use serde::{Deserialize, Serialize};

use super::EvalError;

/// A voxel index `(ix, iy, iz)` along x, y and z.
pub type Coord = [u32; 3];

/// A point in metres `(x, y, z)`.
pub type Point = [f64; 3];

/// An axis-aligned voxel grid: `dims` voxels of size `voxel` metres from the
/// lower corner `min`. Voxel `i` has its centre at `min + (i + 0.5) * voxel`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GridGeometry {
    /// Voxels along x, y, z (`(H, W, Z)` in radvox terms).
    pub dims: [usize; 3],
    /// Lower corner in metres.
    pub min: [f32; 3],
    /// Voxel edge lengths in metres.
    pub voxel: [f32; 3],
}

impl GridGeometry {
    /// NTU4DRadLM_Pre: (600, 200, 80) voxels of 0.2 m over x 0..120, y -20..20, z -6..10.
    pub const NTU4DRADLM: GridGeometry =
        GridGeometry { dims: [600, 200, 80], min: [0.0, -20.0, -6.0], voxel: [0.2, 0.2, 0.2] };

    /// The grid of `dims` voxels covering `min..max` (voxel = (max - min) / dims).
    pub fn from_extent(dims: [usize; 3], min: [f32; 3], max: [f32; 3]) -> Result<GridGeometry, EvalError> {
        let voxel = std::array::from_fn(|k| (max[k] - min[k]) / dims[k].max(1) as f32);
        let g = GridGeometry { dims, min, voxel };
        g.validate()?;
        Ok(g)
    }

    /// The metric grid of frames of file grid `(H, W, Z)` = `file` (0.2 m
    /// voxels from the NTU4DRadLM_Pre corner) laid out by `layout`: padding
    /// keeps the voxels (the padding is cropped away), resampling enlarges
    /// them to cover the same extent; crops keep them (evaluation runs on
    /// whole frames).
    pub fn of_frames(file: [usize; 3], layout: crate::data::Layout) -> Result<GridGeometry, EvalError> {
        let base = GridGeometry { dims: file, ..GridGeometry::NTU4DRADLM };
        base.validate()?;
        match layout {
            crate::data::Layout::Pad { .. } | crate::data::Layout::Crop { .. } => Ok(base),
            crate::data::Layout::Resample { zhw: [z, h, w] } => base.resampled([h, w, z]),
        }
    }

    /// The same extent resampled to `dims` voxels (e.g. (128, 128, 32) with larger cells).
    pub fn resampled(&self, dims: [usize; 3]) -> Result<GridGeometry, EvalError> {
        GridGeometry::from_extent(dims, self.min, self.max())
    }

    /// Upper corner in metres.
    pub fn max(&self) -> [f32; 3] {
        std::array::from_fn(|k| self.min[k] + self.dims[k] as f32 * self.voxel[k])
    }

    /// Checks that dims are positive and the corner and voxel sizes finite (voxel > 0).
    pub fn validate(&self) -> Result<(), EvalError> {
        if self.dims.contains(&0) {
            return Err(EvalError::Geometry(format!("zero dimension in {:?}", self.dims)));
        }
        if self.dims.iter().any(|&d| d > u32::MAX as usize) {
            return Err(EvalError::Geometry(format!("dimension beyond u32 in {:?}", self.dims)));
        }
        if !self.min.iter().all(|v| v.is_finite()) {
            return Err(EvalError::Geometry(format!("non-finite lower corner {:?}", self.min)));
        }
        if !self.voxel.iter().all(|v| v.is_finite() && *v > 0.0) {
            return Err(EvalError::Geometry(format!("voxel size must be finite and > 0, got {:?}", self.voxel)));
        }
        Ok(())
    }

    /// Number of voxels in the grid.
    pub fn len(&self) -> usize {
        self.dims.iter().product()
    }

    /// True when the grid has no voxels.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True when `c` lies inside the grid.
    pub fn contains(&self, c: Coord) -> bool {
        (0..3).all(|k| (c[k] as usize) < self.dims[k])
    }

    /// Centre of voxel `c` in metres (computed in f64; valid outside the grid too).
    pub fn centre(&self, c: Coord) -> Point {
        std::array::from_fn(|k| self.min[k] as f64 + (c[k] as f64 + 0.5) * self.voxel[k] as f64)
    }

    /// Centres of `coords` in metres.
    pub fn centres(&self, coords: &[Coord]) -> Vec<Point> {
        coords.iter().map(|&c| self.centre(c)).collect()
    }

    /// Index of `c` in a dense `(Z, X, Y)` buffer (radvox's `(Z, H, W)` order:
    /// `(iz * H + ix) * W + iy`), or None outside the grid.
    pub fn dense_index_zhw(&self, c: Coord) -> Option<usize> {
        let [h, w, _] = self.dims;
        self.contains(c).then(|| (c[2] as usize * h + c[0] as usize) * w + c[1] as usize)
    }

    /// Inverse of [`GridGeometry::dense_index_zhw`] (`i` must be below [`GridGeometry::len`]).
    pub fn coord_from_dense_zhw(&self, i: usize) -> Coord {
        let [h, w, _] = self.dims;
        let (iy, rest) = (i % w, i / w);
        [(rest % h) as u32, iy as u32, (rest / h) as u32]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn centres_follow_min_plus_half_voxel() {
        let g = GridGeometry::NTU4DRADLM;
        let c = g.centre([0, 0, 0]);
        assert!((c[0] - 0.1).abs() < 1e-6 && (c[1] + 19.9).abs() < 1e-6 && (c[2] + 5.9).abs() < 1e-6);
        let c = g.centre([599, 199, 79]);
        assert!((c[0] - 119.9).abs() < 1e-4 && (c[1] - 19.9).abs() < 1e-4 && (c[2] - 9.9).abs() < 1e-4);
    }

    #[test]
    fn resampling_keeps_the_extent() {
        let g = GridGeometry::NTU4DRADLM.resampled([128, 128, 32]).unwrap();
        let max = g.max();
        assert!((max[0] - 120.0).abs() < 1e-3 && (max[1] - 20.0).abs() < 1e-3 && (max[2] - 10.0).abs() < 1e-3);
        assert!((g.voxel[0] - 120.0 / 128.0).abs() < 1e-6);
        assert!(g.resampled([0, 1, 1]).is_err());
    }

    #[test]
    fn dense_index_round_trips() {
        let g = GridGeometry { dims: [5, 3, 4], min: [0.0; 3], voxel: [1.0; 3] };
        for i in 0..g.len() {
            let c = g.coord_from_dense_zhw(i);
            assert!(g.contains(c));
            assert_eq!(g.dense_index_zhw(c), Some(i));
        }
        assert_eq!(g.dense_index_zhw([5, 0, 0]), None);
    }
}
