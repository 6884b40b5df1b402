//! EDM (Karras et al. 2022) in the VAE's latent space: preconditioning,
//! the noise schedule, the log-normal training noise and loss weighting.
//!
//! The reference fed raw sigma as a timestep, skipped preconditioning and
//! drew its training sigmas from two different uniforms; none of that here.

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::model::checkpoint::Recorder;
use crate::model::Unet3d;

/// An extra loss term `extra(denoised, sigma) -> scalar` added to the
/// EDM loss by [`EdmConfig::backward_with`].
pub type ExtraLoss<'a> = &'a dyn Fn(&Tensor, &Tensor) -> Tensor;

/// EDM hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EdmConfig {
    /// Smallest sampling sigma.
    pub sigma_min: f64,
    /// Largest sampling sigma.
    pub sigma_max: f64,
    /// Standard deviation of the data.
    pub sigma_data: f64,
    /// Schedule curvature.
    pub rho: f64,
    /// Mean of ln(sigma) in training.
    pub p_mean: f64,
    /// Std of ln(sigma) in training.
    pub p_std: f64,
}

impl Default for EdmConfig {
    fn default() -> Self {
        EdmConfig { sigma_min: 0.002, sigma_max: 80.0, sigma_data: 0.5, rho: 7.0, p_mean: -1.2, p_std: 1.2 }
    }
}

/// Preconditioning coefficients for a batch of sigmas, each `(B, 1, 1, 1, 1)`
/// (`c_noise` is `(B,)`).
#[derive(Debug)]
pub struct Precond {
    /// `sigma_data^2 / (sigma^2 + sigma_data^2)`.
    pub c_skip: Tensor,
    /// `sigma * sigma_data / sqrt(sigma^2 + sigma_data^2)`.
    pub c_out: Tensor,
    /// `1 / sqrt(sigma^2 + sigma_data^2)`.
    pub c_in: Tensor,
    /// `ln(sigma) / 4`.
    pub c_noise: Tensor,
}

impl EdmConfig {
    /// Coefficients for `sigma` `(B,)`.
    pub fn precond(&self, sigma: &Tensor) -> Precond {
        let sd2 = self.sigma_data * self.sigma_data;
        let s = sigma.to_kind(Kind::Float).view([-1, 1, 1, 1, 1]);
        let denom = s.square() + sd2;
        Precond {
            c_skip: denom.reciprocal() * sd2,
            c_out: &s * self.sigma_data / denom.sqrt(),
            c_in: denom.rsqrt(),
            c_noise: sigma.to_kind(Kind::Float).log() / 4.0,
        }
    }

    /// Loss weight `(sigma^2 + sigma_data^2) / (sigma * sigma_data)^2`.
    pub fn loss_weight(&self, sigma: &Tensor) -> Tensor {
        let s = sigma.to_kind(Kind::Float);
        (s.square() + self.sigma_data * self.sigma_data) / (&s * self.sigma_data).square()
    }

    /// Training sigmas: `exp(P_mean + P_std * n)`, `n ~ N(0, 1)` from `seed`.
    pub fn training_sigmas(&self, n: i64, seed: u64, device: tch::Device) -> Tensor {
        (crate::sys::normal(seed, &[n], device) * self.p_std + self.p_mean).exp()
    }

    /// Karras schedule of `steps` sigmas from `sigma_max` to `sigma_min`, then 0.
    pub fn karras_sigmas(&self, steps: usize) -> Vec<f64> {
        let (lo, hi) = (self.sigma_min.powf(1.0 / self.rho), self.sigma_max.powf(1.0 / self.rho));
        let mut s: Vec<f64> = (0..steps)
            .map(|i| {
                let t = if steps > 1 { i as f64 / (steps - 1) as f64 } else { 0.0 };
                (hi + t * (lo - hi)).powf(self.rho)
            })
            .collect();
        s.push(0.0);
        s
    }

    /// `D(x; sigma, cond) = c_skip x + c_out F(c_in x ++ cond, c_noise)`.
    pub fn denoise(&self, unet: &Unet3d, x: &Tensor, sigma: &Tensor, cond: &Tensor, train: bool) -> Tensor {
        let p = self.precond(sigma);
        let input = Tensor::cat(&[&p.c_in * x, cond.to_kind(Kind::Float)], 1);
        let f = unet.forward(&input, &p.c_noise, train).to_kind(Kind::Float);
        &p.c_skip * x + &p.c_out * f
    }

    /// Draws a training step's randomness for latents shaped like `y`:
    /// per-sample sigmas and the unit noise, seeded.
    pub fn draw(&self, y: &Tensor, seed: u64) -> (Tensor, Tensor) {
        let sigmas = self.training_sigmas(y.size()[0], crate::sys::mix_seed(seed, 1), y.device());
        (sigmas, crate::sys::normal(crate::sys::mix_seed(seed, 2), &y.size(), y.device()))
    }

    /// The EDM training loss for clean latents `y` with condition `cond`
    /// and the draws of [`EdmConfig::draw`]:
    /// `mean(weight(sigma) * (D(y + sigma n) - y)^2)`. With `rec`, the UNet's
    /// ResBlocks are checkpointed into it.
    pub fn loss<'a>(
        &self,
        unet: &'a Unet3d,
        y: &Tensor,
        cond: &Tensor,
        (sigma, noise): &(Tensor, Tensor),
        rec: Option<&mut Recorder<'a>>,
    ) -> Tensor {
        self.noisy_loss(unet, y, cond, (sigma, noise), rec).0
    }

    /// [`EdmConfig::loss`] and the denoised estimate it scored, with its sigmas.
    fn noisy_loss<'a>(
        &self,
        unet: &'a Unet3d,
        y: &Tensor,
        cond: &Tensor,
        (sigma, noise): (&Tensor, &Tensor),
        rec: Option<&mut Recorder<'a>>,
    ) -> (Tensor, Tensor, Tensor) {
        let noisy = y + noise * sigma.view([-1, 1, 1, 1, 1]);
        let (l, d) = self.loss_on(unet, &noisy, y, cond, sigma, rec);
        (l, d, sigma.shallow_clone())
    }

    /// The direct baseline's loss: the denoiser at `sigma_max` on an input
    /// of zeros (no noise, nothing of `y`), `D(0; sigma_max, cond)`,
    /// regressed on `y` with the EDM weight: one network call from the
    /// condition to the latent, no diffusion.
    pub fn direct_loss<'a>(
        &self,
        unet: &'a Unet3d,
        y: &Tensor,
        cond: &Tensor,
        rec: Option<&mut Recorder<'a>>,
    ) -> Tensor {
        self.direct_parts(unet, y, cond, rec).0
    }

    /// [`EdmConfig::direct_loss`] and the estimate it scored, with its sigmas.
    fn direct_parts<'a>(
        &self,
        unet: &'a Unet3d,
        y: &Tensor,
        cond: &Tensor,
        rec: Option<&mut Recorder<'a>>,
    ) -> (Tensor, Tensor, Tensor) {
        let sigma = Tensor::full([y.size()[0]], self.sigma_max, (Kind::Float, y.device()));
        let (l, d) = self.loss_on(unet, &y.zeros_like(), y, cond, &sigma, rec);
        (l, d, sigma)
    }

    /// `mean(weight(sigma) * (D(noisy; sigma, cond) - y)^2)` and `D`.
    fn loss_on<'a>(
        &self,
        unet: &'a Unet3d,
        noisy: &Tensor,
        y: &Tensor,
        cond: &Tensor,
        sigma: &Tensor,
        rec: Option<&mut Recorder<'a>>,
    ) -> (Tensor, Tensor) {
        let p = self.precond(sigma);
        let input = Tensor::cat(&[&p.c_in * noisy, cond.to_kind(Kind::Float)], 1);
        let f = match rec {
            Some(rec) => unet.forward_checkpointed(&input, &p.c_noise, rec),
            None => unet.forward(&input, &p.c_noise, true),
        };
        let d = &p.c_skip * noisy + &p.c_out * f.to_kind(Kind::Float);
        let w = self.loss_weight(sigma).view([-1, 1, 1, 1, 1]);
        (((&d - y).square() * w).mean(Kind::Float), d)
    }

    /// The loss of [`EdmConfig::loss`] (with `draws`) or of
    /// [`EdmConfig::direct_loss`] (without) and the backward of `scale *
    /// loss` (the UNet's ResBlocks recomputed when `checkpointed`); a
    /// non-finite loss is returned without any backward.
    pub fn backward(
        &self,
        unet: &Unet3d,
        y: &Tensor,
        cond: &Tensor,
        draws: Option<&(Tensor, Tensor)>,
        checkpointed: bool,
        scale: f64,
    ) -> f64 {
        self.backward_with(unet, y, cond, draws, checkpointed, scale, None)[0]
    }

    /// As [`EdmConfig::backward`], with `extra(denoised, sigma)` (a scalar
    /// of the denoised estimates `D` and their sigmas `(B,)`, e.g. a
    /// decoded-space loss) added to the loss when given: returns `[total]`
    /// without `extra`, `[total, latent loss, extra]` with it.
    #[allow(clippy::too_many_arguments)]
    pub fn backward_with(
        &self,
        unet: &Unet3d,
        y: &Tensor,
        cond: &Tensor,
        draws: Option<&(Tensor, Tensor)>,
        checkpointed: bool,
        scale: f64,
        extra: Option<ExtraLoss<'_>>,
    ) -> Vec<f64> {
        let mut rec = Recorder::default();
        let rec_ref = checkpointed.then_some(&mut rec);
        let (latent, d, sigma) = match draws {
            Some((s, n)) => self.noisy_loss(unet, y, cond, (s, n), rec_ref),
            None => self.direct_parts(unet, y, cond, rec_ref),
        };
        let Some(extra) = extra else { return vec![rec.backward_finite(&latent, scale)] };
        let e = extra(&d, &sigma);
        let total = &latent + &e;
        vec![rec.backward_finite(&total, scale), latent.double_value(&[]), e.double_value(&[])]
    }

    /// The direct baseline's prediction: `D(0; sigma_max, cond)`, latents
    /// of `channels` channels shaped like `cond` otherwise.
    pub fn direct(&self, unet: &Unet3d, cond: &Tensor, channels: i64) -> Tensor {
        let mut shape = cond.size();
        shape[1] = channels;
        let x = Tensor::zeros(&shape, (Kind::Float, cond.device()));
        let sigma = Tensor::full([shape[0]], self.sigma_max, (Kind::Float, cond.device()));
        self.denoise(unet, &x, &sigma, cond, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn karras_schedule_runs_from_max_to_min_then_zero() {
        let edm = EdmConfig::default();
        let s = edm.karras_sigmas(18);
        assert_eq!(s.len(), 19);
        assert!((s[0] - 80.0).abs() < 1e-9 && (s[17] - 0.002).abs() < 1e-12 && s[18] == 0.0);
        assert!(s.windows(2).all(|w| w[0] > w[1]));
    }

    #[test]
    fn preconditioning_matches_the_formulas() {
        let edm = EdmConfig::default();
        let sigma = Tensor::from_slice(&[0.1f32, 1.0, 10.0]);
        let p = edm.precond(&sigma);
        for (i, s) in [0.1f64, 1.0, 10.0].iter().enumerate() {
            let i = i as i64;
            let den = s * s + 0.25;
            assert!((p.c_skip.double_value(&[i, 0, 0, 0, 0]) - 0.25 / den).abs() < 1e-6);
            assert!((p.c_out.double_value(&[i, 0, 0, 0, 0]) - s * 0.5 / den.sqrt()).abs() < 1e-6);
            assert!((p.c_in.double_value(&[i, 0, 0, 0, 0]) - 1.0 / den.sqrt()).abs() < 1e-6);
            assert!((p.c_noise.double_value(&[i]) - s.ln() / 4.0).abs() < 1e-6);
            let w = edm.loss_weight(&sigma).double_value(&[i]);
            assert!((w - den / (s * 0.5).powi(2)).abs() < 1e-3 * w);
        }
        // Training sigmas are log-normal(P_mean, P_std).
        let ln = edm.training_sigmas(20000, 0, Device::Cpu).log();
        assert!((ln.mean(Kind::Float).double_value(&[]) + 1.2).abs() < 0.05);
        assert!((ln.std(true).double_value(&[]) - 1.2).abs() < 0.05);
    }
}
