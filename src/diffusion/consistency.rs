//! Consistency distillation (Song et al. 2023) on radvox's own EDM
//! denoiser: the parametrisation with the boundary condition
//! `f(x, smin) = x`, the discretisation of the noise levels, the frozen
//! teacher's ODE step that makes the distillation target, the losses, and
//! one- and multi-step sampling (Algorithm 1).
//!
//! What the original system got wrong is not reproduced: it enforced no
//! boundary condition, made the target with the EMA student instead of the
//! teacher, and sampled with the student rather than its EMA.

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use super::edm::EdmConfig;
use super::DiffusionError;
use crate::model::checkpoint::Recorder;
use crate::model::Unet3d;

/// The solver of the teacher's ODE step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TeacherSolver {
    /// Heun's second-order step (the paper's, EDM Algorithm 2).
    #[default]
    Heun,
    /// One Euler step.
    Euler,
}

/// The distance between the student's and the target's outputs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum CdLoss {
    /// Mean squared error.
    L2,
    /// `sqrt(||a - b||^2 + c^2) - c` per sample, `c = 0.00054 sqrt(d)` (d:
    /// the latent's dimensions) unless given.
    #[default]
    PseudoHuber,
}

/// Per-pair loss weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Weighting {
    /// 1.
    #[default]
    Uniform,
    /// `1 / (t_{n+1} - t_n)`.
    InverseGap,
}

/// Settings of consistency distillation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ConsistencyConfig {
    /// Points of the Karras discretisation `t_1 = smax > ... > t_N = smin`.
    pub n: usize,
    /// The teacher's solver.
    pub solver: TeacherSolver,
    /// Rate of the target network, an EMA of the student (0: the student itself).
    pub target_ema: f64,
    /// The loss.
    pub loss: CdLoss,
    /// Pseudo-Huber `c`; `None`: `0.00054 sqrt(d)`.
    pub huber_c: Option<f64>,
    /// The loss weights.
    pub weighting: Weighting,
}

impl Default for ConsistencyConfig {
    /// N = 40, Heun, target EMA 0.95, pseudo-Huber, uniform weights.
    fn default() -> Self {
        ConsistencyConfig {
            n: 40,
            solver: TeacherSolver::Heun,
            target_ema: 0.95,
            loss: CdLoss::PseudoHuber,
            huber_c: None,
            weighting: Weighting::Uniform,
        }
    }
}

impl ConsistencyConfig {
    /// Refuses settings no run can use.
    pub fn validate(&self) -> Result<(), DiffusionError> {
        let bad = |m: String| Err(DiffusionError::Config(m));
        if self.n < 2 {
            return bad(format!("consistency n must be >= 2 (pairs of noise levels), got {}", self.n));
        }
        if !(0.0..1.0).contains(&self.target_ema) {
            return bad(format!("target_ema must be in [0, 1), got {}", self.target_ema));
        }
        if let Some(c) = self.huber_c {
            if !(c.is_finite() && c > 0.0) {
                return bad(format!("huber_c must be finite and > 0, got {c}"));
            }
        }
        Ok(())
    }
}

/// One distillation pair per sample: the noisy latent at the higher level,
/// both levels, the target and the loss weight (all without gradients).
#[derive(Debug)]
pub struct CdPair {
    /// `y + t_hi z`.
    pub x: Tensor,
    /// `t_hi` `(B,)`.
    pub sigma: Tensor,
    /// `f_target(teacher_step(x, t_hi -> t_lo), t_lo)`.
    pub target: Tensor,
    /// The weight `(B,)`.
    pub weight: Tensor,
}

/// Coefficients of the consistency parametrisation at noise levels `sigma`
/// `(B,)`, each `(B, 1, 1, 1, 1)` (`c_noise` `(B,)`).
#[derive(Debug)]
pub struct CdPrecond {
    /// `sd^2 / ((s - smin)^2 + sd^2)`: 1 at `smin`.
    pub c_skip: Tensor,
    /// `(s - smin) sd / sqrt(s^2 + sd^2)`: 0 at `smin`.
    pub c_out: Tensor,
    /// `1 / sqrt(s^2 + sd^2)`, as the EDM's.
    pub c_in: Tensor,
    /// `ln(s) / 4`, as the EDM's.
    pub c_noise: Tensor,
}

/// The consistency function of a network on the EDM's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Consistency {
    /// Noise levels, `sigma_data` and the schedule's curvature.
    pub edm: EdmConfig,
}

impl Consistency {
    /// Coefficients for `sigma` `(B,)`.
    pub fn precond(&self, sigma: &Tensor) -> CdPrecond {
        let (sd, smin) = (self.edm.sigma_data, self.edm.sigma_min);
        let s = sigma.to_kind(Kind::Float).view([-1, 1, 1, 1, 1]);
        let gap = &s - smin;
        CdPrecond {
            c_skip: (gap.square() + sd * sd).reciprocal() * (sd * sd),
            c_out: &gap * sd / (s.square() + sd * sd).sqrt(),
            c_in: (s.square() + sd * sd).rsqrt(),
            c_noise: sigma.to_kind(Kind::Float).log() / 4.0,
        }
    }

    /// `f(x, s) = c_skip x + c_out F(c_in x ++ cond, c_noise)`; `f(x, smin) = x` exactly.
    pub fn f(&self, net: &Unet3d, x: &Tensor, sigma: &Tensor, cond: &Tensor, train: bool) -> Tensor {
        let p = self.precond(sigma);
        let input = Tensor::cat(&[&p.c_in * x, cond.to_kind(Kind::Float)], 1);
        let out = net.forward(&input, &p.c_noise, train).to_kind(Kind::Float);
        &p.c_skip * x + &p.c_out * out
    }

    /// The discretisation `t_1 = smax > ... > t_n = smin` (the Karras ramp).
    pub fn levels(&self, n: usize) -> Vec<f64> {
        let mut s = self.edm.karras_sigmas(n.max(2));
        s.pop(); // karras_sigmas ends with a 0
        s
    }

    /// The `k` noise levels of `k`-step sampling: the first `k` of `k + 1`
    /// Karras levels from `smax` to `smin` (the last would be `smin`, where
    /// `f` is the identity).
    pub fn sampling_levels(&self, k: usize) -> Vec<f64> {
        let mut s = self.levels(k + 1);
        s.truncate(k.max(1));
        s
    }

    /// Multistep consistency sampling (Algorithm 1): `x = f(T z, T)`, then
    /// for each later level `tau`: `x = f(x + sqrt(tau^2 - smin^2) z, tau)`.
    /// One network call per level; the noise is seeded.
    pub fn sample(&self, net: &Unet3d, cond: &Tensor, latent_channels: i64, levels: &[f64], seed: u64) -> Tensor {
        let mut shape = cond.size();
        shape[1] = latent_channels;
        let b = shape[0];
        let dev = cond.device();
        let noise: Vec<Tensor> =
            (0..levels.len()).map(|k| crate::sys::normal(crate::sys::mix_seed(seed, k as u64), &shape, dev)).collect();
        let smin = self.edm.sigma_min;
        tch::no_grad(|| {
            let mut x = Tensor::zeros(shape.as_slice(), (Kind::Float, dev));
            for (k, (&tau, z)) in levels.iter().zip(&noise).enumerate() {
                let xt = if k == 0 { z * tau } else { &x + z * (tau * tau - smin * smin).max(0.0).sqrt() };
                let sigma = Tensor::full([b], tau, (Kind::Float, dev));
                x = self.f(net, &xt, &sigma, cond, false);
            }
            x
        })
    }

    /// One step of the teacher's probability-flow ODE from `x` at `t_hi` to
    /// `t_lo` (per sample, `(B,)` each) with its denoiser `denoise(x, sigma)`.
    pub fn teacher_step(
        &self,
        solver: TeacherSolver,
        x: &Tensor,
        t_hi: &Tensor,
        t_lo: &Tensor,
        denoise: &dyn Fn(&Tensor, &Tensor) -> Tensor,
    ) -> Tensor {
        let view = |t: &Tensor| t.to_kind(Kind::Float).view([-1, 1, 1, 1, 1]);
        let (hi, lo) = (view(t_hi), view(t_lo));
        let d = (x - denoise(x, t_hi)) / &hi;
        let euler = x + &d * (&lo - &hi);
        match solver {
            TeacherSolver::Euler => euler,
            TeacherSolver::Heun => {
                let d2 = (&euler - denoise(&euler, t_lo)) / &lo;
                x + (d + d2) * ((&lo - &hi) * 0.5)
            }
        }
    }

    /// A training step's randomness for clean latents `y`: per sample the
    /// index `n ~ U{0 .. N-2}` of the pair `levels(N)[n] > levels(N)[n+1]`,
    /// and unit noise; seeded.
    pub fn draw(&self, n_levels: usize, y: &Tensor, seed: u64) -> (Tensor, Tensor) {
        let b = y.size()[0];
        let n = crate::sys::integers(crate::sys::mix_seed(seed, 1), b, n_levels as i64 - 1, y.device());
        (n, crate::sys::normal(crate::sys::mix_seed(seed, 2), &y.size(), y.device()))
    }

    /// The distillation pairs of clean latents `y` and draws `(n, z)` on
    /// `levels(cfg.n)`: the teacher's ODE step with `teacher(x, sigma)` (its
    /// denoiser), then the target network's consistency function
    /// `target(x, sigma)`, both without gradients.
    pub fn pairs(
        &self,
        cfg: &ConsistencyConfig,
        y: &Tensor,
        (n, z): (&Tensor, &Tensor),
        teacher: &dyn Fn(&Tensor, &Tensor) -> Tensor,
        target: &dyn Fn(&Tensor, &Tensor) -> Tensor,
    ) -> CdPair {
        let levels = Tensor::from_slice(&self.levels(cfg.n)).to_kind(Kind::Float).to_device(y.device());
        let hi = levels.index_select(0, n);
        let lo = levels.index_select(0, &(n + 1));
        tch::no_grad(|| {
            let x = y.to_kind(Kind::Float) + z * hi.view([-1, 1, 1, 1, 1]);
            let stepped = self.teacher_step(cfg.solver, &x, &hi, &lo, teacher);
            let weight = match cfg.weighting {
                Weighting::Uniform => hi.ones_like(),
                Weighting::InverseGap => (&hi - &lo).reciprocal(),
            };
            CdPair { target: target(&stepped, &lo), x, sigma: hi, weight }
        })
    }

    /// The distillation loss of `student` on `pair`: the weighted mean over
    /// samples of the distance of `f_student(x, t_hi)` to the target. With
    /// `rec`, the UNet's ResBlocks are checkpointed into it.
    pub fn loss<'a>(
        &self,
        cfg: &ConsistencyConfig,
        student: &'a Unet3d,
        pair: &CdPair,
        cond: &Tensor,
        rec: Option<&mut Recorder<'a>>,
    ) -> Tensor {
        let p = self.precond(&pair.sigma);
        let input = Tensor::cat(&[&p.c_in * &pair.x, cond.to_kind(Kind::Float)], 1);
        let out = match rec {
            Some(rec) => student.forward_checkpointed(&input, &p.c_noise, rec),
            None => student.forward(&input, &p.c_noise, true),
        };
        let f = &p.c_skip * &pair.x + &p.c_out * out.to_kind(Kind::Float);
        (self.distance(cfg.loss, cfg.huber_c, &f, &pair.target) * &pair.weight).mean(Kind::Float)
    }

    /// The per-sample distance of `a` and `b` (`(B,)`), by `loss`.
    pub fn distance(&self, loss: CdLoss, huber_c: Option<f64>, a: &Tensor, b: &Tensor) -> Tensor {
        let d = (a - b).square().flatten(1, -1);
        match loss {
            CdLoss::L2 => d.mean_dim(1, false, Kind::Float),
            CdLoss::PseudoHuber => {
                let c = huber_c.unwrap_or(0.00054 * (d.size()[1] as f64).sqrt());
                (d.sum_dim_intlist(1, false, Kind::Float) + c * c).sqrt() - c
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{nn, Device};

    #[test]
    fn the_boundary_condition_holds_exactly() {
        let vs = nn::VarStore::new(Device::Cpu);
        let cfg = crate::model::UnetConfig { model_channels: 8, channel_mult: vec![1, 2], ..Default::default() };
        let net = Unet3d::new(&vs.root(), &cfg).unwrap();
        let c = Consistency { edm: EdmConfig::default() };
        let x = Tensor::randn([2, 4, 4, 8, 8], (Kind::Float, Device::Cpu));
        let cond = Tensor::randn([2, 4, 4, 8, 8], (Kind::Float, Device::Cpu));
        let smin = Tensor::full([2], 0.002, (Kind::Float, Device::Cpu));
        let y = tch::no_grad(|| c.f(&net, &x, &smin, &cond, false));
        assert!(y.equal(&x), "f(x, smin) = x");
        let levels = c.levels(40);
        assert_eq!(levels.len(), 40);
        assert!((levels[0] - 80.0).abs() < 1e-9 && (levels[39] - 0.002).abs() < 1e-12);
        assert_eq!(c.sampling_levels(1), [80.0]);
        let four = c.sampling_levels(4);
        assert_eq!(four.len(), 4);
        assert!((four[1] - 17.528).abs() < 0.01 && (four[3] - 0.1698).abs() < 0.001, "{four:?}");
    }

    #[test]
    fn the_teacher_step_is_the_samplers_step() {
        // the ideal denoiser of N(0, s^2) data, as in the sampler's tests
        let s = 0.7f64;
        let ideal = move |x: &Tensor, sigma: &Tensor| {
            let v = sigma.to_kind(Kind::Float).view([-1, 1, 1, 1, 1]);
            x * (v.square() + s * s).reciprocal() * (s * s)
        };
        let c = Consistency { edm: EdmConfig::default() };
        let x = Tensor::randn([3, 1, 1, 2, 2], (Kind::Float, Device::Cpu));
        let (hi, lo) = (Tensor::from_slice(&[2.0f32; 3]), Tensor::from_slice(&[1.5f32; 3]));
        let step = c.teacher_step(TeacherSolver::Heun, &x, &hi, &lo, &ideal);
        // the sampler's Heun update, written out for the scalar sigmas
        let scalar = |x: &Tensor, t: f64| x * (s * s / (t * t + s * s));
        let d = (&x - scalar(&x, 2.0)) / 2.0;
        let e = &x + &d * -0.5;
        let d2 = (&e - scalar(&e, 1.5)) / 1.5;
        let want = &x + (d + d2) * -0.25;
        assert!((step - want).abs().max().double_value(&[]) < 1e-6);
    }
}
