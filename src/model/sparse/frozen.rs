//! A trained sparse VAE, frozen, with the per-channel scaling it was
//! trained with: deterministic encoding (the posterior mean) of raw sites
//! to the dense latent, and decoding back to sites in the dataset's units.
//! Built from a checkpoint by the training layer.

use tch::{nn, Kind, Tensor};

use super::coords::Dims3;
use super::{Keep, SparseTensor, SparseVae};
use crate::model::ModelError;

/// A frozen sparse VAE and its input scaling.
pub struct FrozenSparseVae {
    /// Weights (no gradients).
    pub vs: nn::VarStore,
    /// The model.
    pub vae: SparseVae,
    /// Per-channel factor applied to raw features before encoding.
    pub channel_scale: Vec<f64>,
    /// Identity of the weights (latent caches and diffusion runs are tied to it).
    pub hash: String,
}

impl std::fmt::Debug for FrozenSparseVae {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrozenSparseVae").field("hash", &self.hash).field("vae", self.vae.config()).finish()
    }
}

impl FrozenSparseVae {
    fn scale(&self, x: &Tensor) -> Tensor {
        Tensor::from_slice(&self.channel_scale).to_kind(Kind::Float).to_device(x.device()).reshape([1, -1])
    }

    /// The dense latent `(B, latent_channels, Z', Y', X')` (posterior mean)
    /// of raw native sites `x`.
    pub fn encode(&self, x: &SparseTensor) -> Result<Tensor, ModelError> {
        tch::no_grad(|| {
            let scaled = x.map(|f| f.to_kind(Kind::Float) * self.scale(f));
            Ok(self.vae.encode(&scaled)?.mean)
        })
    }

    /// The sites the decoder keeps for latent `z` of native grids `zhw`,
    /// channel 0 the occupancy probability, the others in raw units.
    pub fn decode(&self, z: &Tensor, zhw: Dims3) -> Result<SparseTensor, ModelError> {
        tch::no_grad(|| {
            let out = self.vae.decode(z, zhw, Keep::Predicted)?.output;
            let raw = &out.feats / self.scale(&out.feats);
            // the probability is not scaled (channel_scale[0] is its factor, usually 1)
            let prob = out.feats.narrow(1, 0, 1);
            let c = raw.size()[1];
            Ok(out.with_feats(Tensor::cat(&[prob, raw.narrow(1, 1, c - 1)], 1)))
        })
    }

    /// `decode(encode(x))`.
    pub fn reconstruct(&self, x: &SparseTensor) -> Result<SparseTensor, ModelError> {
        self.decode(&self.encode(x)?, x.coords.shape())
    }
}
