//! Latents scaled to what the EDM assumes. Its preconditioning takes the
//! data's standard deviation to be `sigma_data` (0.5); a VAE trained with a
//! tiny KL weight gives latents of any scale. A [`LatentNorm`] maps each
//! channel of the target latents to mean 0, std `sigma_data`, and each
//! channel of the condition to mean 0, std 1, with statistics measured on
//! the training latents and stored with the model.

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// Per-channel affine map `(z - mean) / std * scale`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChannelNorm {
    /// Channel means.
    pub mean: Vec<f64>,
    /// Channel standard deviations (floored at 1e-6).
    pub std: Vec<f64>,
    /// The standard deviation the map produces.
    pub scale: f64,
}

fn per_channel(v: &[f64], like: &Tensor) -> Tensor {
    Tensor::from_slice(v).to_kind(Kind::Float).to_device(like.device()).view([1, -1, 1, 1, 1])
}

impl ChannelNorm {
    /// Statistics of `(C, D, H, W)` latents, over all of them, scaled to `scale`.
    pub fn measure(latents: &[Tensor], scale: f64) -> ChannelNorm {
        let all = Tensor::stack(latents, 0).to_kind(Kind::Double); // (N, C, D, H, W)
        let c = all.size()[1];
        let flat = all.transpose(0, 1).reshape([c, -1]);
        let mean = Vec::<f64>::try_from(flat.mean_dim(1, false, Kind::Double)).unwrap_or_default();
        let std = Vec::<f64>::try_from(flat.std_dim(1, false, false)).unwrap_or_default();
        ChannelNorm { mean, std: std.into_iter().map(|s| s.max(1e-6)).collect(), scale }
    }

    /// `(z - mean) / std * scale` of a `(B, C, ...)` batch.
    pub fn apply(&self, z: &Tensor) -> Tensor {
        (z - per_channel(&self.mean, z)) / per_channel(&self.std, z) * self.scale
    }

    /// The inverse map.
    pub fn invert(&self, z: &Tensor) -> Tensor {
        z / self.scale * per_channel(&self.std, z) + per_channel(&self.mean, z)
    }
}

/// Normalisation of the target latents and of the condition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatentNorm {
    /// Target latents: mean 0, std `sigma_data`.
    pub target: ChannelNorm,
    /// Condition latents: mean 0, std 1.
    pub cond: ChannelNorm,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measured_norm_standardises_and_inverts() {
        let z: Vec<Tensor> = (0..4)
            .map(|i| Tensor::randn([2, 3, 4, 4], (Kind::Float, tch::Device::Cpu)) * (i as f64 + 1.0) * 0.1 + 3.0)
            .collect();
        let n = ChannelNorm::measure(&z, 0.5);
        let batch = Tensor::stack(&z, 0);
        let y = n.apply(&batch);
        assert!(y.mean(Kind::Float).double_value(&[]).abs() < 1e-4);
        assert!((y.std(false).double_value(&[]) - 0.5).abs() < 0.05);
        assert!((n.invert(&y) - &batch).abs().max().double_value(&[]) < 1e-4);
    }
}
