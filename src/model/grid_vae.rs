//! A trained VAE of either family seen from the commands downstream of it
//! (`precompute_latents`, `train_ldm`, `train_cd`, `sample`): raw dense
//! grids in, a dense latent out, and back. The dense family runs on the
//! grid; the sparse family encodes the grid's occupied voxels (where
//! channel 0 is positive, the rule of a frame's sites) and decodes to the voxels its decoder
//! keeps, scattered into a zero grid; it also encodes a frame's sites read
//! straight from its file ([`GridVae::encode_sites`]: the grid is never
//! built). The family is the checkpoint's kind: [`AnyVae`] holds whichever
//! was loaded.

use std::rc::Rc;

use tch::{Device, Kind, Tensor};

use super::sparse::{FrozenSparseVae, SparseTensor};
use super::{FrozenVae, ModelError};
use crate::data::loader::SiteBatch;
use crate::data::sites::FrameSites;

/// Encoding and decoding of raw `(B, C, Z, H, W)` grids.
pub trait GridVae {
    /// The device of the weights.
    fn device(&self) -> Device;
    /// Identity of the weights (latent caches and diffusion runs are tied to it).
    fn weights_hash(&self) -> &str;
    /// The deterministic latent of a raw grid batch.
    fn encode_grid(&self, grid: &Tensor) -> Result<Tensor, ModelError>;
    /// Raw grids of latents `z` of native grids `zhw` (the padded grid the
    /// latent was encoded from; the dense family reads it off `z`).
    fn decode_grid(&self, z: &Tensor, zhw: [i64; 3]) -> Result<Tensor, ModelError>;
    /// Whether this family encodes a frame's occupied sites
    /// ([`GridVae::encode_sites`]) rather than its whole grid.
    fn encodes_sites(&self) -> bool {
        false
    }
    /// The deterministic latent `(1, C, Z', Y', X')` of one frame's raw
    /// occupied sites (equal to [`GridVae::encode_grid`] of the frame's
    /// grid); refused by a family that encodes whole grids.
    fn encode_sites(&self, _sites: &FrameSites) -> Result<Tensor, ModelError> {
        Err(ModelError::Config("this VAE family encodes whole grids, not sites".into()))
    }
    /// The occupancy probability `(B, 1, Z, H, W)` of latents `z`,
    /// differentiable with respect to `z` (the weights stay frozen): what a
    /// decoded-space loss trains through. Refused by a family whose
    /// decoder is not a differentiable function of the latent alone.
    fn decode_occupancy(&self, _z: &Tensor) -> Result<Tensor, ModelError> {
        Err(ModelError::Config(
            "the sparse VAE's decoder keeps sites by thresholds (not differentiable in the latent): \
             a decoded-space loss needs a dense VAE"
                .into(),
        ))
    }
}

impl GridVae for FrozenVae {
    fn device(&self) -> Device {
        FrozenVae::device(self)
    }
    fn weights_hash(&self) -> &str {
        &self.hash
    }
    fn encode_grid(&self, grid: &Tensor) -> Result<Tensor, ModelError> {
        Ok(self.encode(grid))
    }
    fn decode_grid(&self, z: &Tensor, _: [i64; 3]) -> Result<Tensor, ModelError> {
        Ok(self.decode(z))
    }
    fn decode_occupancy(&self, z: &Tensor) -> Result<Tensor, ModelError> {
        Ok(FrozenVae::decode_occupancy(self, z))
    }
}

impl GridVae for FrozenSparseVae {
    fn device(&self) -> Device {
        self.vs.device()
    }
    fn weights_hash(&self) -> &str {
        &self.hash
    }
    fn encode_grid(&self, grid: &Tensor) -> Result<Tensor, ModelError> {
        let g = grid.to_device(self.device()).to_kind(Kind::Float);
        // occupied voxels only, as a frame's sites are read
        let occupied = g.narrow(1, 0, 1).gt(0.0);
        let x = SparseTensor::from_dense(&(g * occupied), [1; 3])?;
        self.encode(&x)
    }
    fn decode_grid(&self, z: &Tensor, zhw: [i64; 3]) -> Result<Tensor, ModelError> {
        Ok(self.decode(&z.to_device(self.device()).to_kind(Kind::Float), zhw)?.to_dense())
    }
    fn encodes_sites(&self) -> bool {
        true
    }
    fn encode_sites(&self, s: &FrameSites) -> Result<Tensor, ModelError> {
        let batch = SiteBatch { sites: s.batched(0).collect(), feats: s.feats.clone(), channels: s.channels };
        let raw = vec![1.0; s.channels]; // encode applies the channel scale
        self.encode(&SparseTensor::of_sites(&batch, 0..1, s.grid.map(|v| v as i64), &raw, self.device())?)
    }
}

impl<T: GridVae + ?Sized> GridVae for Rc<T> {
    fn device(&self) -> Device {
        (**self).device()
    }
    fn weights_hash(&self) -> &str {
        (**self).weights_hash()
    }
    fn encode_grid(&self, grid: &Tensor) -> Result<Tensor, ModelError> {
        (**self).encode_grid(grid)
    }
    fn decode_grid(&self, z: &Tensor, zhw: [i64; 3]) -> Result<Tensor, ModelError> {
        (**self).decode_grid(z, zhw)
    }
    fn encodes_sites(&self) -> bool {
        (**self).encodes_sites()
    }
    fn encode_sites(&self, sites: &FrameSites) -> Result<Tensor, ModelError> {
        (**self).encode_sites(sites)
    }
    fn decode_occupancy(&self, z: &Tensor) -> Result<Tensor, ModelError> {
        (**self).decode_occupancy(z)
    }
}

/// A trained VAE of either family (one per command: the variants' sizes
/// do not matter).
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum AnyVae {
    /// The dense VAE.
    Dense(FrozenVae),
    /// The sparse occupancy VAE.
    Sparse(FrozenSparseVae),
}

impl AnyVae {
    /// The family's name: `dense` or `sparse`.
    pub fn family(&self) -> &'static str {
        match self {
            AnyVae::Dense(_) => "dense",
            AnyVae::Sparse(_) => "sparse",
        }
    }

    /// The model as a [`GridVae`].
    pub fn grid(&self) -> &dyn GridVae {
        match self {
            AnyVae::Dense(v) => v,
            AnyVae::Sparse(v) => v,
        }
    }

    /// Refuses a grid `(Z, H, W)` the model cannot process (the dense VAE
    /// needs multiples of its downsampling; the sparse one takes any grid).
    pub fn check_grid(&self, zhw: [i64; 3]) -> Result<(), ModelError> {
        match self {
            AnyVae::Dense(v) => v.vae.config().check_grid(zhw),
            AnyVae::Sparse(_) => Ok(()),
        }
    }

    /// A sparse VAE's decoder keeps, from now on, the children whose
    /// occupancy probability is at least `t` at every level (an inference
    /// setting, [`crate::model::sparse::SparseVae::set_keep_threshold`]);
    /// refused for a dense VAE, whose decoder keeps every voxel, and
    /// outside (0, 1).
    pub fn set_keep_threshold(&mut self, t: f64) -> Result<(), ModelError> {
        match self {
            AnyVae::Dense(_) => Err(ModelError::Config(format!(
                "a keep threshold ({t}) applies to a sparse VAE's decoder: a dense VAE decodes every voxel"
            ))),
            AnyVae::Sparse(v) => v.vae.set_keep_threshold(t),
        }
    }

    /// Latent channels.
    pub fn latent_channels(&self) -> i64 {
        match self {
            AnyVae::Dense(v) => v.vae.config().latent_dim,
            AnyVae::Sparse(v) => v.vae.config().latent_channels,
        }
    }
}

impl GridVae for AnyVae {
    fn device(&self) -> Device {
        self.grid().device()
    }
    fn weights_hash(&self) -> &str {
        self.grid().weights_hash()
    }
    fn encode_grid(&self, grid: &Tensor) -> Result<Tensor, ModelError> {
        self.grid().encode_grid(grid)
    }
    fn decode_grid(&self, z: &Tensor, zhw: [i64; 3]) -> Result<Tensor, ModelError> {
        self.grid().decode_grid(z, zhw)
    }
    fn encodes_sites(&self) -> bool {
        self.grid().encodes_sites()
    }
    fn encode_sites(&self, sites: &FrameSites) -> Result<Tensor, ModelError> {
        self.grid().encode_sites(sites)
    }
    fn decode_occupancy(&self, z: &Tensor) -> Result<Tensor, ModelError> {
        self.grid().decode_occupancy(z)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::sparse::{SparseVae, SparseVaeConfig};
    use crate::model::{Vae3d, VaeConfig};
    use tch::nn;

    #[test]
    fn a_keep_threshold_is_the_sparse_decoders_and_in_the_unit_interval() {
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let vae = SparseVae::new(&vs.root(), &SparseVaeConfig::small()).unwrap();
        let mut sparse = AnyVae::Sparse(FrozenSparseVae { vs, vae, channel_scale: vec![1.0; 4], hash: "s".into() });
        sparse.set_keep_threshold(0.2).unwrap();
        let AnyVae::Sparse(v) = &sparse else { unreachable!() };
        assert_eq!(v.vae.config().keep_threshold, 0.2);
        assert!(sparse.set_keep_threshold(1.0).is_err());
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let vae = Vae3d::new(&vs.root(), &VaeConfig::ultra_lightweight()).unwrap();
        let mut dense = AnyVae::Dense(FrozenVae {
            vs,
            vae,
            channel_scale: vec![1.0; 4],
            hash: "d".into(),
            tiling: None,
            occupancy_logits: false,
        });
        let err = dense.set_keep_threshold(0.2).unwrap_err().to_string();
        assert!(err.contains("sparse VAE's decoder"), "{err}");
    }
}
