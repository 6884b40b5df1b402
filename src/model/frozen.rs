//! A trained VAE, frozen, with the per-channel input scaling it was trained
//! with: deterministic encoding (`quant_conv(mean)`) of raw grids and
//! decoding back to the dataset's units. Built from a checkpoint by the
//! training layer, which knows the file format.

use tch::{nn, Device, Kind, Tensor};

use super::tiles::Tiling;
use super::{ModelError, Vae3d};

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
    /// Whole frames are encoded and decoded in these tiles (see
    /// [`super::tiles`]); `None`: in one piece.
    pub tiling: Option<Tiling>,
    /// Whether channel 0 of the decoder is an occupancy logit (a
    /// classification head): [`FrozenVae::decode`] returns its `sigmoid`.
    pub occupancy_logits: bool,
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

    /// Encodes and decodes in `tiling`'s tiles from now on (`None`: whole).
    pub fn with_tiling(mut self, tiling: Option<Tiling>) -> Result<FrozenVae, ModelError> {
        if let Some(t) = &tiling {
            t.validate(self.vae.config().downsampling())?;
        }
        self.tiling = tiling;
        Ok(self)
    }

    /// Deterministic latent `quant_conv(mean)` of a raw f16/f32 grid batch.
    pub fn encode(&self, grid: &Tensor) -> Tensor {
        let dev = self.device();
        // one float32 copy of the frame, scaled in place (whole frames are large)
        let mut x = grid.to_device_(dev, Kind::Float, false, true);
        let _ = x.g_mul_(&self.scale(dev));
        let encode = |x: &Tensor| self.vae.encode(x, None, false);
        tch::no_grad(|| match &self.tiling {
            Some(t) => t.map(&x, [1; 3], self.vae.config().downsampling(), &encode),
            None => encode(&x),
        })
    }

    /// Decodes latents back to grids in the dataset's raw units.
    pub fn decode(&self, z: &Tensor) -> Tensor {
        let dev = self.device();
        let z = z.to_device(dev).to_kind(Kind::Float);
        let decode = |z: &Tensor| self.vae.decode(z, false);
        let f = self.vae.config().downsampling();
        let grid = tch::no_grad(|| match &self.tiling {
            Some(t) => t.coarser(f).map(&z, f, [1; 3], &decode),
            None => decode(&z),
        });
        let mut grid = crate::model::loss::occupancy_probability(grid, self.occupancy_logits);
        let _ = grid.g_div_(&self.scale(dev));
        grid
    }

    /// The occupancy probability `(B, 1, Z, H, W)` of latents `z` in one
    /// piece (no tiles), with the graph kept: differentiable with respect
    /// to `z`, the weights frozen. Channel 0 in the dataset's units: the
    /// sigmoid of a logit head, else the regressed value clamped to [0, 1].
    pub fn decode_occupancy(&self, z: &Tensor) -> Tensor {
        let out = self.vae.decode(&z.to_device(self.device()).to_kind(Kind::Float), false).narrow(1, 0, 1);
        let p = if self.occupancy_logits { out.sigmoid() } else { out.clamp(0.0, 1.0) };
        p / self.channel_scale.first().copied().unwrap_or(1.0)
    }
}
