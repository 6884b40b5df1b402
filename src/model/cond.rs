//! A radar encoder for the diffusion model's condition, trained jointly with
//! it: the raw radar grid (scaled per channel as the VAE's inputs) to a
//! condition of the latent grid's shape. The alternative, the VAE's own
//! encoding of the radar, comes from a VAE trained on LiDAR targets only.

use serde::{Deserialize, Serialize};
use tch::nn::{self, ModuleT};
use tch::Tensor;

use super::blocks::{level_stride, Conv3d, Downsample3d, Norm, ResBlock3d};
use super::ModelError;

/// Architecture of a [`RadarEncoder`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RadarEncoderConfig {
    /// Radar channels in.
    pub in_channels: i64,
    /// Width of every level.
    pub channels: i64,
    /// Levels: `levels - 1` downsamplings with the VAE's strides (3 levels:
    /// (1, 2, 2) then (2, 2, 2), the `ultra_lightweight` VAE's latent grid).
    pub levels: usize,
    /// Condition channels out (the UNet's `cond_channels`).
    pub out_channels: i64,
}

impl Default for RadarEncoderConfig {
    fn default() -> Self {
        RadarEncoderConfig { in_channels: 4, channels: 16, levels: 3, out_channels: 4 }
    }
}

impl RadarEncoderConfig {
    /// Refuses settings that cannot build.
    pub fn validate(&self) -> Result<(), ModelError> {
        if self.in_channels <= 0 || self.channels <= 0 || self.out_channels <= 0 || self.levels == 0 {
            return Err(ModelError::Config(format!("radar encoder needs positive sizes: {self:?}")));
        }
        Ok(())
    }
}

/// `conv_in`, then per level a ResBlock and (but the last) a strided
/// downsampling, then norm, SiLU and `conv_out`.
#[derive(Debug)]
pub struct RadarEncoder {
    conv_in: Conv3d,
    blocks: Vec<(ResBlock3d, Option<Downsample3d>)>,
    norm_out: Norm,
    conv_out: Conv3d,
}

impl RadarEncoder {
    /// Builds the encoder under `vs`.
    pub fn new(vs: &nn::Path, cfg: &RadarEncoderConfig) -> Result<RadarEncoder, ModelError> {
        cfg.validate()?;
        let c = cfg.channels;
        let blocks = (0..cfg.levels)
            .map(|i| {
                let p = vs / "blocks" / i;
                let down = (i + 1 < cfg.levels).then(|| Downsample3d::new(&p / "down", c, level_stride(i)));
                (ResBlock3d::new(&p / "res", c, c, 0.0), down)
            })
            .collect();
        Ok(RadarEncoder {
            conv_in: Conv3d::new(vs / "conv_in", cfg.in_channels, c, 3, [1; 3]),
            blocks,
            norm_out: Norm::new(vs / "norm_out", c),
            conv_out: Conv3d::new(vs / "conv_out", c, cfg.out_channels, 3, [1; 3]),
        })
    }
}

impl ModuleT for RadarEncoder {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let mut h = x.apply(&self.conv_in);
        for (res, down) in &self.blocks {
            h = res.forward_t(&h, train);
            if let Some(d) = down {
                h = d.forward_t(&h, train);
            }
        }
        h.apply(&self.norm_out).silu().apply(&self.conv_out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn the_condition_has_the_latent_grid() {
        let vs = nn::VarStore::new(Device::Cpu);
        let enc = RadarEncoder::new(&vs.root(), &RadarEncoderConfig::default()).unwrap();
        let x = Tensor::rand([2, 4, 8, 32, 16], (Kind::Float, Device::Cpu));
        assert_eq!(enc.forward_t(&x, false).size(), [2, 4, 4, 8, 4], "(2, 4, 4) downsampling like the VAE");
        assert!(RadarEncoderConfig { levels: 0, ..Default::default() }.validate().is_err());
    }
}
