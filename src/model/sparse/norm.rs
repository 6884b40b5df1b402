//! Sparse GroupNorm: per sample and group, mean and variance over the
//! active sites of that sample and the group's channels only (a dense
//! GroupNorm over the zero-filled grid would count the empty voxels).
//! Computed in float32 and cast back, like the dense [`crate::model::blocks::Norm`].

use tch::nn;
use tch::{Kind, Tensor};

use super::SparseTensor;
use crate::model::blocks::norm_groups;

/// GroupNorm over `c` channels (eps 1e-5, affine; `weight`, `bias`) with
/// the dense blocks' [`norm_groups`].
#[derive(Debug)]
pub struct SparseGroupNorm {
    weight: Tensor,
    bias: Tensor,
    groups: i64,
}

impl SparseGroupNorm {
    /// Norm over `c` channels.
    pub fn new(vs: nn::Path, c: i64) -> SparseGroupNorm {
        SparseGroupNorm { weight: vs.ones("weight", &[c]), bias: vs.zeros("bias", &[c]), groups: norm_groups(c) }
    }

    /// Groups the channels are split into.
    pub fn groups(&self) -> i64 {
        self.groups
    }

    /// Normalises `x`'s features per (sample, group).
    pub fn forward(&self, x: &SparseTensor) -> SparseTensor {
        let f = x.feats.to_kind(Kind::Float);
        let (n, c) = (f.size()[0], f.size()[1]);
        let (g, dev) = (self.groups, f.device());
        let batch = x.coords.batch();
        let bi = x.coords.batch_index(dev);
        let fg = f.view([n, g, c / g]);
        // sites per sample times channels per group; clamped so an empty sample divides by 1
        let count = Tensor::zeros([batch], (Kind::Float, dev))
            .index_add(0, &bi, &Tensor::ones([n], (Kind::Float, dev)))
            .clamp_min(1.0)
            .unsqueeze(1)
            * (c / g) as f64;
        let zeros = || Tensor::zeros([batch, g], (Kind::Float, dev));
        let mean = zeros().index_add(0, &bi, &fg.sum_dim_intlist(-1, false, Kind::Float)) / &count;
        let centred = fg - mean.index_select(0, &bi).unsqueeze(-1);
        let var = zeros().index_add(0, &bi, &centred.square().sum_dim_intlist(-1, false, Kind::Float)) / &count;
        let y = centred * (var + 1e-5).rsqrt().index_select(0, &bi).unsqueeze(-1);
        let y = y.view([n, c]) * self.weight.to_kind(Kind::Float) + self.bias.to_kind(Kind::Float);
        x.with_feats(y.to_kind(x.feats.kind()))
    }
}
