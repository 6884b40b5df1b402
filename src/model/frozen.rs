//! A trained VAE, frozen, with the per-channel input scaling it was trained
//! with: deterministic encoding (`quant_conv(mean)`) of raw grids and
//! decoding back to the dataset's units. Built from a checkpoint by the
//! training layer, which knows the file format.

use tch::{nn, Device, Kind, Tensor};

use super::Vae3d;

/// A frozen VAE and its input scaling.
pub struct FrozenVae {
    /// Weights (no gradients).
    pub vs: nn::VarStore,
    /// The model.
    pub vae: Vae3d,
    /// Per-channel factor applied to raw grids before encoding.
    pub channel_scale: Vec<f64>,
    /// Identity of the weights (see [`crate::io::safetensors::weights_hash`]):
    /// latent caches and diffusion runs are tied to it.
    pub hash: String,
}

impl std::fmt::Debug for FrozenVae {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrozenVae").field("hash", &self.hash).field("vae", self.vae.config()).finish()
    }
}

impl FrozenVae {
    /// The device its weights live on.
    pub fn device(&self) -> Device {
        self.vs.device()
    }

    fn scale(&self, device: Device) -> Tensor {
        Tensor::from_slice(&self.channel_scale).to_kind(Kind::Float).to_device(device).reshape([1, -1, 1, 1, 1])
    }

    /// Deterministic latent `quant_conv(mean)` of a raw f16/f32 grid batch.
    pub fn encode(&self, grid: &Tensor) -> Tensor {
        let dev = self.device();
        let x = grid.to_device(dev).to_kind(Kind::Float) * self.scale(dev);
        tch::no_grad(|| self.vae.encode(&x, None, false))
    }

    /// Decodes latents back to grids in the dataset's raw units.
    pub fn decode(&self, z: &Tensor) -> Tensor {
        let dev = self.device();
        tch::no_grad(|| self.vae.decode(&z.to_device(dev).to_kind(Kind::Float), false)) / self.scale(dev)
    }
}
