//! Sparse 3D networks on the active voxels only. A [`SparseTensor`] is a
//! feature row per active site of a shared [`Coords`] set (batched integer
//! coordinates, the grid, the stride from the native grid); kernel maps
//! (`kmap`) are built in Rust from the sets' hash tables (`hash`), cached
//! inside the sets, and drive gather -> GEMM -> scatter-add convolutions
//! ([`SparseConv3d`]) over libtorch tensors; [`SparseGroupNorm`] normalises
//! over active sites; [`SparseResBlock`] is the dense residual block's
//! sparse twin; [`SparseVae`] is the occupancy VAE built from them.
//! `../shared/spec/sparse.md` has the definitions each kind
//! equals (the dense op read at the sites); `tests/sparse.rs` holds them to it.

pub mod block;
pub mod config;
pub mod conv;
pub mod coords;
pub mod dense;
pub mod frozen;
pub mod hash;
pub mod kmap;
pub mod loss;
pub mod norm;
pub mod vae;

use std::rc::Rc;

use tch::Tensor;

pub use block::SparseResBlock;
pub use config::SparseVaeConfig;
pub use conv::{ConvKind, SparseConv3d};
pub use coords::Coords;
pub use frozen::FrozenSparseVae;
pub use kmap::{KernelMap, MapKind};
pub use loss::{SparseLoss, SparseLossConfig, StructureLoss};
pub use norm::SparseGroupNorm;
pub use vae::{Decoded, Keep, SparseVae};

use crate::data::loader::SiteBatch;
use crate::model::ModelError;

/// Features `(N, C)` of the `N` active sites of a coordinate set.
#[derive(Debug)]
pub struct SparseTensor {
    /// One row per site, in the set's order.
    pub feats: Tensor,
    /// The sites.
    pub coords: Rc<Coords>,
}

impl SparseTensor {
    /// Frames `frames` of `t` (renumbered from 0) as a sparse tensor of
    /// native grids `grid` on `device`, features multiplied by `scale` per channel.
    pub fn of_sites(
        t: &SiteBatch,
        frames: std::ops::Range<i64>,
        grid: coords::Dims3,
        scale: &[f64],
        device: tch::Device,
    ) -> Result<SparseTensor, ModelError> {
        let c = t.channels;
        let mut rows: Vec<(usize, [i64; 4])> = (t.sites.iter().enumerate())
            .filter(|(_, s)| frames.contains(&s[0]))
            .map(|(i, s)| (i, [s[0] - frames.start, s[1], s[2], s[3]]))
            .collect();
        // the set sorts its sites: order the feature rows the same way
        rows.sort_unstable_by_key(|r| r.1);
        let sites: Vec<[i64; 4]> = rows.iter().map(|r| r.1).collect();
        let feats: Vec<f32> = (rows.iter())
            .flat_map(|&(i, _)| t.feats[i * c..(i + 1) * c].iter().zip(scale).map(|(v, k)| (*v as f64 * k) as f32))
            .collect();
        let coords = Coords::new(&sites, frames.end - frames.start, grid, [1; 3])?;
        let feats = Tensor::from_slice(&feats).view([sites.len() as i64, c as i64]).to_device(device);
        SparseTensor::new(coords, feats)
    }

    /// `feats` `(N, C)` on the `N` sites of `coords`.
    pub fn new(coords: Rc<Coords>, feats: Tensor) -> Result<SparseTensor, ModelError> {
        let size = feats.size();
        if size.len() != 2 || size[0] != coords.len() as i64 {
            return Err(ModelError::Sites {
                sites: coords.len(),
                batch: coords.batch(),
                grid: coords.shape(),
                rule: format!("features {size:?} are not (sites, channels)"),
            });
        }
        Ok(SparseTensor { feats, coords })
    }

    /// The same sites with other features (same number of rows).
    pub fn with_feats(&self, feats: Tensor) -> SparseTensor {
        debug_assert_eq!(feats.size()[0], self.coords.len() as i64);
        SparseTensor { feats, coords: self.coords.clone() }
    }

    /// `f` applied to the features (activations, dropout, casts).
    pub fn map(&self, f: impl FnOnce(&Tensor) -> Tensor) -> SparseTensor {
        self.with_feats(f(&self.feats))
    }
}
