//! Sparse <-> dense: a sparse tensor scattered into a zero-filled
//! `(B, C, Z, Y, X)` grid, and the active sites of a dense grid (a
//! non-zero scan) or its values at given sites. All differentiable.

use std::rc::Rc;

use tch::{Kind, Tensor};

use super::coords::{Coords, Dims3};
use super::hash::pack;
use super::SparseTensor;
use crate::model::ModelError;

impl SparseTensor {
    /// The dense `(B, C, Z, Y, X)` grid: features at the active sites, zeros elsewhere.
    pub fn to_dense(&self) -> Tensor {
        let c = &self.coords;
        let [z, y, x] = c.shape();
        let ch = self.feats.size()[1];
        let idx = c.tensor(self.feats.device());
        let cols: Vec<Option<Tensor>> = (0..4).map(|a| Some(idx.select(1, a))).collect();
        let grid = Tensor::zeros([c.batch(), z, y, x, ch], (self.feats.kind(), self.feats.device()));
        grid.index_put(&cols, &self.feats, false).permute([0, 4, 1, 2, 3]).contiguous()
    }

    /// The sites of a dense `(B, C, Z, Y, X)` grid where any channel is
    /// non-zero, with their features, at `stride` from the native grid.
    pub fn from_dense(x: &Tensor, stride: Dims3) -> Result<SparseTensor, ModelError> {
        let size = x.size();
        let [b, _, z, y, w] = size[..] else {
            return Err(ModelError::Config(format!("a dense grid is (B, C, Z, Y, X), got {size:?}")));
        };
        let active = x.ne(0.0).any_dim(1, false).nonzero().to_kind(Kind::Int64).to_device(tch::Device::Cpu);
        let flat = Vec::<i64>::try_from(active.reshape([-1])).map_err(|e| ModelError::Config(e.to_string()))?;
        // nonzero lists sites in row-major order, which is the keys' order
        let keys: Vec<u64> = flat.chunks_exact(4).map(|s| pack([s[0], s[1], s[2], s[3]])).collect();
        let grid = [z, y, w];
        if b > super::hash::MAX_COORD + 1 || grid.iter().any(|&s| s > super::hash::MAX_COORD + 1) {
            return Err(ModelError::Sites {
                sites: keys.len(),
                batch: b,
                grid,
                rule: "too large for 16-bit keys".into(),
            });
        }
        let coords = Coords::from_sorted(keys, b, grid, stride);
        SparseTensor::gather(x, &coords)
    }

    /// The values of a dense `(B, C, Z, Y, X)` grid at the sites of `coords`.
    pub fn gather(x: &Tensor, coords: &Rc<Coords>) -> Result<SparseTensor, ModelError> {
        let size = x.size();
        let [z, y, w] = coords.shape();
        if size.len() != 5 || size[0] != coords.batch() || size[2..] != [z, y, w] {
            return Err(ModelError::Sites {
                sites: coords.len(),
                batch: coords.batch(),
                grid: coords.shape(),
                rule: format!("a dense grid {size:?} is not (batch, C) x this grid"),
            });
        }
        let idx = coords.tensor(x.device());
        let cols: Vec<Option<Tensor>> = (0..4).map(|a| Some(idx.select(1, a))).collect();
        let feats = x.permute([0, 2, 3, 4, 1]).index(&cols);
        Ok(SparseTensor { feats, coords: coords.clone() })
    }
}
