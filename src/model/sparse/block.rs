//! The sparse residual block: the dense [`crate::model::blocks::ResBlock3d`]
//! on active sites only, with the same variable paths (`norm1`, `conv1`,
//! `norm2`, `conv2`, `skip`).

use tch::nn;

use super::conv::{ConvKind, SparseConv3d};
use super::norm::SparseGroupNorm;
use super::SparseTensor;
use crate::model::ModelError;

/// `h = conv1(silu(norm1(x)))`, `h = conv2(silu(norm2(h)))`, `skip(x) + h`;
/// 3^3 submanifold convolutions, the skip a 1^3 one when channels change.
#[derive(Debug)]
pub struct SparseResBlock {
    norm1: SparseGroupNorm,
    conv1: SparseConv3d,
    norm2: SparseGroupNorm,
    conv2: SparseConv3d,
    skip: Option<SparseConv3d>,
}

impl SparseResBlock {
    /// A block `cin -> cout`.
    pub fn new(vs: nn::Path, cin: i64, cout: i64) -> Result<SparseResBlock, ModelError> {
        let conv = |name: &str, a, b, k| SparseConv3d::new(&vs / name, a, b, ConvKind::Submanifold(k));
        Ok(SparseResBlock {
            norm1: SparseGroupNorm::new(&vs / "norm1", cin),
            conv1: conv("conv1", cin, cout, 3)?,
            norm2: SparseGroupNorm::new(&vs / "norm2", cout),
            conv2: conv("conv2", cout, cout, 3)?,
            skip: if cin != cout { Some(conv("skip", cin, cout, 1)?) } else { None },
        })
    }

    /// The block on `x`'s sites.
    pub fn forward(&self, x: &SparseTensor) -> Result<SparseTensor, ModelError> {
        let h = self.norm1.forward(x).map(|f| f.silu());
        let h = self.conv1.forward(&h)?;
        let h = self.norm2.forward(&h).map(|f| f.silu());
        let h = self.conv2.forward(&h)?;
        let skip = match &self.skip {
            Some(s) => s.forward(x)?.feats,
            None => x.feats.shallow_clone(),
        };
        Ok(h.map(|f| f + skip))
    }
}
