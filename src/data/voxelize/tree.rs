//! Writing voxelized frames as an NTU4DRadLM_Pre scene: a [`FrameSink`]
//! that stores each frame's `radar_voxel`, `lidar_voxel` and `target_voxel`
//! grids under `<scene>/`, named by pair index, atomically, as sparse `.npz`
//! (the preprocessing's default) or dense `.npy`.

use std::path::{Path, PathBuf};

use super::driver::{FrameOutput, FrameSink};
use super::error::VoxelizeError;
use super::grid::SparseGrid;
use crate::data::frame::{write_sparse, SparseFrame};
use crate::io::npy::write_npy;

/// How frames are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Encoding {
    /// Sparse `.npz` (deflated), as `numpy.savez_compressed`.
    #[default]
    Sparse,
    /// Dense `(H, W, Z, C)` float32 `.npy`.
    Dense,
}

/// The radvox sparse frame of a grid.
pub fn to_frame(g: &SparseGrid) -> SparseFrame {
    SparseFrame { shape: g.shape, coords: g.coords.clone(), features: g.features_f64() }
}

/// Writes one grid to `path` (extension added by the encoding).
pub fn write_grid(path: &Path, g: &SparseGrid, encoding: Encoding) -> Result<PathBuf, VoxelizeError> {
    let (path, result) = match encoding {
        Encoding::Sparse => {
            let p = path.with_extension("npz");
            let r = write_sparse(&p, &to_frame(g), true);
            (p, r)
        }
        Encoding::Dense => {
            let p = path.with_extension("npy");
            let [h, w, z, c] = g.shape;
            let mut dense = vec![0f32; h * w * z * c];
            for (i, xyz) in g.coords.iter().enumerate() {
                let base = ((xyz[0] as usize * w + xyz[1] as usize) * z + xyz[2] as usize) * c;
                dense[base..base + c].copy_from_slice(&g.features[i * c..(i + 1) * c]);
            }
            let r = write_npy(&p, &g.shape, &dense);
            (p, r)
        }
    };
    result.map_err(|e| VoxelizeError::io(&path, e))?;
    Ok(path)
}

/// A scene folder receiving frames.
#[derive(Debug, Clone)]
pub struct SceneWriter {
    /// `<root>/<scene>`.
    pub dir: PathBuf,
    /// Sparse or dense files.
    pub encoding: Encoding,
}

impl SceneWriter {
    /// Creates the three grid folders under `dir`.
    pub fn new(dir: &Path, encoding: Encoding) -> Result<SceneWriter, VoxelizeError> {
        for sub in ["radar_voxel", "lidar_voxel", "target_voxel"] {
            let d = dir.join(sub);
            std::fs::create_dir_all(&d).map_err(|e| VoxelizeError::io(&d, e))?;
        }
        Ok(SceneWriter { dir: dir.into(), encoding })
    }
}

impl FrameSink for SceneWriter {
    fn accept(&self, f: FrameOutput) -> Result<(), VoxelizeError> {
        let stem = format!("{:06}", f.pair.index);
        let g = &f.grids;
        for (sub, grid) in [("radar_voxel", &g.radar), ("lidar_voxel", &g.lidar), ("target_voxel", &g.target)] {
            write_grid(&self.dir.join(sub).join(&stem), grid, self.encoding)?;
        }
        Ok(())
    }
}
