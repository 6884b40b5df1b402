//! Sampling the probability-flow ODE of [`EdmConfig`]: the Heun (EDM
//! Algorithm 2, deterministic) and Euler solvers, and [`Sampler`], a
//! trained denoiser ready to sample target latents from radar latents.

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use super::consistency::Consistency;
use super::edm::EdmConfig;
use super::latents::encode_frame;
use super::norm::LatentNorm;
use super::DiffusionError;
use crate::data::{Dataset, Modality};
use crate::model::{GridVae, ModelError, RadarEncoder, Unet3d};

/// ODE solver of the sampler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Solver {
    /// Heun's 2nd-order method (EDM Algorithm 2, no churn).
    #[default]
    Heun,
    /// Euler's method.
    Euler,
}

impl std::str::FromStr for Solver {
    type Err = DiffusionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "heun" => Ok(Solver::Heun),
            "euler" => Ok(Solver::Euler),
            other => Err(DiffusionError::Config(format!("unknown solver {other:?}: heun or euler"))),
        }
    }
}

/// Integrates the probability-flow ODE from `sigma_max` to 0 with `denoise(x, sigma)`
/// (the ideal `D`), starting from `sigma_max * noise`; the noise is seeded.
pub fn sample(
    edm: &EdmConfig,
    shape: &[i64],
    steps: usize,
    solver: Solver,
    seed: u64,
    device: tch::Device,
    denoise: &dyn Fn(&Tensor, f64) -> Tensor,
) -> Tensor {
    integrate(edm, crate::sys::normal(seed, shape, device), steps, solver, denoise)
}

/// Integrates the probability-flow ODE from `sigma_max` to 0 starting from
/// `sigma_max * start` (`start`: unit noise, or scaled noise for sampling
/// at a temperature).
pub fn integrate(
    edm: &EdmConfig,
    start: Tensor,
    steps: usize,
    solver: Solver,
    denoise: &dyn Fn(&Tensor, f64) -> Tensor,
) -> Tensor {
    let sigmas = edm.karras_sigmas(steps);
    let mut x = start * sigmas[0];
    tch::no_grad(|| {
        for w in sigmas.windows(2) {
            let (s, s_next) = (w[0], w[1]);
            let d = (&x - denoise(&x, s)) / s;
            let euler = &x + &d * (s_next - s);
            x = if solver == Solver::Heun && s_next > 0.0 {
                let d2 = (&euler - denoise(&euler, s_next)) / s_next;
                &x + (d + d2) * (0.5 * (s_next - s))
            } else {
                euler
            };
        }
    });
    x
}

/// A denoiser (the EMA weights of a trained UNet) ready to sample, with how
/// its condition is made and its latents are scaled.
pub struct Sampler {
    unet: Unet3d,
    _vs: tch::nn::VarStore,
    /// EDM settings it was trained with.
    pub edm: EdmConfig,
    norm: Option<LatentNorm>,
    encoder: Option<(RadarEncoder, Vec<f64>)>,
    temperature: f64,
}

impl Sampler {
    /// Wraps a built UNet whose weights live in `vs` (frozen here); the
    /// condition is the VAE's encoding of the radar, latents unscaled.
    pub fn new(mut vs: tch::nn::VarStore, unet: Unet3d, edm: EdmConfig) -> Sampler {
        vs.freeze();
        Sampler { unet, _vs: vs, edm, norm: None, encoder: None, temperature: 1.0 }
    }

    /// Sample from initial noise scaled by `temperature` (default 1: the
    /// model's distribution). Below 1 the ODE starts nearer the zero latent
    /// and ends nearer the condition's most likely latents, with less
    /// spread between seeds; 0 is deterministic (its first step is the
    /// denoiser's estimate at `sigma_max` from zero, the mean a direct
    /// baseline regresses). Refused unless finite and >= 0.
    pub fn set_temperature(&mut self, temperature: f64) -> Result<(), DiffusionError> {
        if !(temperature.is_finite() && temperature >= 0.0) {
            return Err(DiffusionError::Config(format!("temperature must be finite and >= 0, got {temperature}")));
        }
        self.temperature = temperature;
        Ok(())
    }

    /// Start the ODE at `sigma_max` instead of the training recipe's (the
    /// Karras schedule spans `[sigma_min, sigma_max]`): a lower start skips
    /// the top noise levels, where EDM's log-normal training noise rarely
    /// reaches (the initial noise, `sigma_max * n`, still dwarfs the
    /// data's spread down to a few `sigma_data`). Refused unless finite and
    /// above `sigma_min`.
    pub fn set_sigma_max(&mut self, sigma_max: f64) -> Result<(), DiffusionError> {
        if !(sigma_max.is_finite() && sigma_max > self.edm.sigma_min) {
            return Err(DiffusionError::Config(format!(
                "sigma_max must be finite and above sigma_min {}, got {sigma_max}",
                self.edm.sigma_min
            )));
        }
        self.edm.sigma_max = sigma_max;
        Ok(())
    }

    /// Latents scaled by `norm` (as in training).
    pub fn with_norm(mut self, norm: Option<LatentNorm>) -> Sampler {
        self.norm = norm;
        self
    }

    /// The condition made by a radar encoder (its weights in the same
    /// store) from radar grids scaled per channel by `radar_scale`.
    pub fn with_encoder(mut self, encoder: RadarEncoder, radar_scale: Vec<f64>) -> Sampler {
        self.encoder = Some((encoder, radar_scale));
        self
    }

    /// The network.
    pub fn unet(&self) -> &Unet3d {
        &self.unet
    }

    /// The condition for raw radar grids `(B, C, Z, H, W)`: the radar
    /// encoder's, or the VAE's encoding, scaled as in training.
    pub fn condition(&self, radar: &Tensor, vae: &dyn GridVae) -> Result<Tensor, ModelError> {
        match &self.encoder {
            Some((enc, scale)) => {
                let dev = vae.device();
                let s = Tensor::from_slice(scale).to_kind(Kind::Float).to_device(dev).view([1, -1, 1, 1, 1]);
                let x = radar.to_device(dev).to_kind(Kind::Float) * s;
                Ok(tch::no_grad(|| tch::nn::ModuleT::forward_t(enc, &x, false)))
            }
            None => Ok(self.normed(vae.encode_grid(radar)?)),
        }
    }

    /// [`Sampler::condition`] of frame `i`'s radar, read as the VAE's family
    /// reads frames (a sparse VAE: its sites, straight from the file).
    pub fn condition_frame(&self, ds: &Dataset, i: usize, vae: &dyn GridVae) -> Result<Tensor, DiffusionError> {
        if self.encoder.is_none() && vae.encodes_sites() {
            return Ok(self.normed(encode_frame(vae, ds, i, Modality::Radar)?));
        }
        Ok(self.condition(&ds.read(i, Modality::Radar)?.to_tensor(), vae)?)
    }

    fn normed(&self, c: Tensor) -> Tensor {
        self.norm.as_ref().map_or(c.shallow_clone(), |n| n.cond.apply(&c))
    }

    /// Samples target latents (in the VAE's scale) for conditions made by
    /// [`Sampler::condition`] with `steps` solver steps (at least 1), at the
    /// sampler's temperature.
    pub fn sample(&self, cond: &Tensor, steps: usize, solver: Solver, seed: u64) -> Tensor {
        let mut shape = cond.size();
        shape[1] = self.unet.config().latent_channels;
        let (edm, unet) = (self.edm, &self.unet);
        let b = shape[0];
        let denoise = |x: &Tensor, s: f64| {
            let sigma = Tensor::full([b], s, (Kind::Float, x.device()));
            edm.denoise(unet, x, &sigma, cond, false)
        };
        let start = crate::sys::normal(seed, &shape, cond.device()) * self.temperature;
        let z = integrate(&self.edm, start, steps, solver, &denoise);
        self.norm.as_ref().map_or(z.shallow_clone(), |n| n.target.invert(&z))
    }

    /// The direct baseline's latents for conditions made by
    /// [`Sampler::condition`]: one deterministic call (no seed).
    pub fn direct(&self, cond: &Tensor) -> Tensor {
        let z = tch::no_grad(|| self.edm.direct(&self.unet, cond, self.unet.config().latent_channels));
        self.norm.as_ref().map_or(z.shallow_clone(), |n| n.target.invert(&z))
    }

    /// How far the denoiser lands from clean target latents `y` (the VAE's
    /// scale) given conditions from [`Sampler::condition`]: the mean
    /// squared error of `D(y + sigma n; sigma)` against `y`, both in
    /// [`Sampler::training_scale`], unit noise `n` from `seed`. The ideal
    /// denoiser's error at any sigma is at most that of the condition's
    /// mean latent (what a direct baseline estimates), so a sigma where a
    /// model is worse than that is one it did not learn.
    pub fn denoising_error(&self, y: &Tensor, cond: &Tensor, sigma: f64, seed: u64) -> f64 {
        let y = self.training_scale(y);
        let s = Tensor::full([y.size()[0]], sigma, (Kind::Float, y.device()));
        let noisy = &y + crate::sys::normal(seed, &y.size(), y.device()) * sigma;
        let d = tch::no_grad(|| self.edm.denoise(&self.unet, &noisy, &s, cond, false));
        (d - y).square().mean(Kind::Float).double_value(&[])
    }

    /// Latents of the VAE's scale in the scale the model was trained in
    /// (normalised when its recipe normalises), where errors compare
    /// across noise levels and with the data's spread (`sigma_data`).
    pub fn training_scale(&self, y: &Tensor) -> Tensor {
        let y = y.to_kind(Kind::Float);
        self.norm.as_ref().map_or(y.shallow_clone(), |n| n.target.apply(&y))
    }

    /// Samples target latents with a consistency model (a network distilled
    /// by consistency distillation): one network call per noise level of
    /// `levels` (descending; see [`Consistency::sampling_levels`]).
    pub fn sample_consistency(&self, cond: &Tensor, levels: &[f64], seed: u64) -> Tensor {
        let c = Consistency { edm: self.edm };
        let z = c.sample(&self.unet, cond, self.unet.config().latent_channels, levels, seed);
        self.norm.as_ref().map_or(z.shallow_clone(), |n| n.target.invert(&z))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    /// For data ~ N(0, s^2) the ideal denoiser is `x s^2 / (s^2 + sigma^2)`:
    /// integrating the ODE from sigma_max must give samples of variance s^2.
    #[test]
    fn heun_integrates_a_gaussian_to_the_right_variance() {
        let edm = EdmConfig::default();
        for s in [0.5f64, 2.0] {
            let ideal = move |x: &Tensor, sigma: f64| x * (s * s / (s * s + sigma * sigma));
            // 18 Heun steps are 7-11% off for this toy (their discretisation error;
            // checked in numpy): 50 Heun or 200 Euler steps reach 5%.
            for (solver, steps, tol) in [(Solver::Heun, 50, 0.05), (Solver::Euler, 200, 0.05)] {
                let x = sample(&edm, &[40000], steps, solver, 3, Device::Cpu, &ideal);
                let var = x.var(true).double_value(&[]);
                assert!((var / (s * s) - 1.0).abs() < tol, "{solver:?} s={s}: variance {var}");
            }
        }
        // Heun with 18 steps is far closer than Euler with 18 steps.
        let ideal = |x: &Tensor, sigma: f64| x * (1.0 / (1.0 + sigma * sigma));
        let heun = sample(&edm, &[40000], 18, Solver::Heun, 3, Device::Cpu, &ideal).var(true).double_value(&[]);
        let euler = sample(&edm, &[40000], 18, Solver::Euler, 3, Device::Cpu, &ideal).var(true).double_value(&[]);
        assert!((heun - 1.0).abs() < (euler - 1.0).abs(), "heun {heun} euler {euler}");
    }

    /// For data ~ N(0, s^2) the ODE is linear: noise scaled by a temperature
    /// t ends as samples of variance t^2 s^2 (t = 0: exactly the data mean).
    #[test]
    fn a_temperature_scales_the_samples_spread() {
        let edm = EdmConfig::default();
        let s = 2.0f64;
        let ideal = move |x: &Tensor, sigma: f64| x * (s * s / (s * s + sigma * sigma));
        let var = |t: f64| {
            let start = crate::sys::normal(3, &[40000], Device::Cpu) * t;
            integrate(&edm, start, 50, Solver::Heun, &ideal).var(true).double_value(&[])
        };
        let (full, half) = (var(1.0), var(0.5));
        assert!((full / (s * s) - 1.0).abs() < 0.05, "t=1: variance {full}");
        assert!((half / (0.25 * s * s) - 1.0).abs() < 0.05, "t=0.5: variance {half}");
        assert_eq!(var(0.0), 0.0, "t=0: the data mean, every seed alike");
    }

    /// Starting lower loses nothing while the initial noise still dwarfs
    /// the data (sigma_max 10 for s = 0.5: 100 / 100.25 of s^2), and loses
    /// most of the spread once it does not (sigma_max 1 for s = 2: the ODE
    /// is linear, the samples' variance sigma_max^2 s^2 / (s^2 + sigma_max^2),
    /// 0.2 of s^2).
    #[test]
    fn a_lower_sigma_max_keeps_the_spread_while_noise_dominates() {
        let var = |s: f64, sigma_max: f64| {
            let edm = EdmConfig { sigma_max, ..EdmConfig::default() };
            let ideal = move |x: &Tensor, sigma: f64| x * (s * s / (s * s + sigma * sigma));
            sample(&edm, &[40000], 50, Solver::Heun, 3, Device::Cpu, &ideal).var(true).double_value(&[]) / (s * s)
        };
        let (high, low) = (var(0.5, 10.0), var(2.0, 1.0));
        assert!((high - 1.0).abs() < 0.05, "sigma_max 10, s = 0.5: variance ratio {high}");
        assert!(low < 0.5, "sigma_max 1, s = 2: variance ratio {low}");
    }

    #[test]
    fn sampling_is_reproducible_for_a_seed() {
        let edm = EdmConfig::default();
        let ideal = |x: &Tensor, sigma: f64| x / (1.0 + sigma * sigma);
        let a = sample(&edm, &[64], 18, Solver::Heun, 9, Device::Cpu, &ideal);
        let b = sample(&edm, &[64], 18, Solver::Heun, 9, Device::Cpu, &ideal);
        let c = sample(&edm, &[64], 18, Solver::Heun, 10, Device::Cpu, &ideal);
        assert!(a.equal(&b) && !a.equal(&c));
    }
}
