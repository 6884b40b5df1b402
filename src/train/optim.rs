//! Optimisation state that must survive a resume: AdamW with its own
//! moments (tch's optimizers cannot save theirs), an exponential moving
//! average of the weights, the dynamic loss scaler of mixed precision,
//! gradient clipping and the cosine schedule.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use super::TrainError;

/// AdamW (decoupled weight decay, as `torch.optim.AdamW`) over named parameters.
#[derive(Debug)]
pub struct AdamW {
    params: Vec<(String, Tensor)>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    /// Steps taken.
    pub steps: u64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
    betas: (f64, f64),
    eps: f64,
}

impl AdamW {
    /// AdamW over `params` (betas 0.9, 0.999; eps 1e-8).
    pub fn new(params: Vec<(String, Tensor)>, weight_decay: f64) -> AdamW {
        let zeros = |p: &Tensor| Tensor::zeros_like(p).to_kind(Kind::Float);
        let m = params.iter().map(|(_, p)| zeros(p)).collect();
        let v = params.iter().map(|(_, p)| zeros(p)).collect();
        AdamW { params, m, v, steps: 0, weight_decay, betas: (0.9, 0.999), eps: 1e-8 }
    }

    /// The parameters.
    pub fn params(&self) -> impl Iterator<Item = &Tensor> {
        self.params.iter().map(|(_, p)| p)
    }

    /// Clears every gradient.
    pub fn zero_grad(&mut self) {
        for (_, p) in &mut self.params {
            p.zero_grad();
        }
    }

    /// One update with learning rate `lr` from the current gradients.
    pub fn step(&mut self, lr: f64) {
        self.steps += 1;
        let (b1, b2) = self.betas;
        let bc1 = 1.0 - b1.powi(self.steps as i32);
        let bc2 = 1.0 - b2.powi(self.steps as i32);
        tch::no_grad(|| {
            for (((_, p), m), v) in self.params.iter_mut().zip(&mut self.m).zip(&mut self.v) {
                let g = p.grad();
                if !g.defined() {
                    continue;
                }
                let g = g.to_kind(Kind::Float);
                let _ = p.g_mul_scalar_(1.0 - lr * self.weight_decay);
                let _ = m.g_mul_scalar_(b1).g_add_(&(&g * (1.0 - b1)));
                let _ = v.g_mul_scalar_(b2).g_add_(&(g.square() * (1.0 - b2)));
                let update = (&*m / bc1) / ((&*v / bc2).sqrt() + self.eps) * lr;
                let _ = p.g_sub_(&update.to_kind(p.kind()));
            }
        });
    }

    /// Moments as `(adamw.m.<name>, adamw.v.<name>)` tensors for a checkpoint.
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for (((name, _), m), v) in self.params.iter().zip(&self.m).zip(&self.v) {
            out.push((format!("adamw.m.{name}"), m.shallow_clone()));
            out.push((format!("adamw.v.{name}"), v.shallow_clone()));
        }
        out
    }

    /// Restores the moments from the tensors of checkpoint `path`; every one
    /// must be present and shaped like its parameter.
    pub fn load_state(
        &mut self,
        tensors: &BTreeMap<String, Tensor>,
        steps: u64,
        path: &Path,
    ) -> Result<(), TrainError> {
        let fail = |reason: String| TrainError::Checkpoint { path: path.into(), reason };
        for (((name, p), m), v) in self.params.iter().zip(&mut self.m).zip(&mut self.v) {
            for (kind, dst) in [("m", &mut *m), ("v", &mut *v)] {
                let key = format!("adamw.{kind}.{name}");
                let src = tensors.get(&key).ok_or_else(|| fail(format!("checkpoint lacks {key}")))?;
                if src.size() != p.size() {
                    return Err(fail(format!("{key} has shape {:?}, parameter has {:?}", src.size(), p.size())));
                }
                *dst = src.to_device(p.device()).to_kind(Kind::Float);
            }
        }
        self.steps = steps;
        Ok(())
    }
}

/// An exponential moving average of named parameters (the weights used
/// for sampling): `shadow = d * shadow + (1 - d) * live` after each
/// optimizer step. With warm-up, `d = min(decay, (1 + t) / (10 + t))` at
/// the `t`-th update (counted from 0; TensorFlow's `num_updates` and
/// diffusers' `EMAModel` default), so the average forgets the random
/// initial weights in a short run: without it, decay 0.995 still holds
/// 0.995^270 = 26 % of them after 270 steps.
#[derive(Debug)]
pub struct Ema {
    /// The decay.
    pub decay: f64,
    /// Whether the decay ramps up from 0.1 (see above).
    pub warmup: bool,
    shadow: Vec<(String, Tensor)>,
}

impl Ema {
    /// Starts as a copy of `params`.
    pub fn new(params: &[(String, Tensor)], decay: f64, warmup: bool) -> Ema {
        let shadow = tch::no_grad(|| params.iter().map(|(n, p)| (n.clone(), p.detach().copy())).collect());
        Ema { decay, warmup, shadow }
    }

    /// The decay of update `t` (counted from 0).
    pub fn decay_at(&self, t: u64) -> f64 {
        match self.warmup {
            true => self.decay.min((1.0 + t as f64) / (10.0 + t as f64)),
            false => self.decay,
        }
    }

    /// Update `t` (counted from 0; the optimizer steps taken before this
    /// one) from the live parameters (same names, same order).
    pub fn update(&mut self, live: &[(String, Tensor)], t: u64) {
        let d = self.decay_at(t);
        tch::no_grad(|| {
            for ((_, e), (_, p)) in self.shadow.iter_mut().zip(live) {
                let _ = e.g_mul_scalar_(d).g_add_(&(p * (1.0 - d)));
            }
        });
    }

    /// The averaged weights as `(ema.<name>, tensor)` for a checkpoint.
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        self.shadow.iter().map(|(n, t)| (format!("ema.{n}"), t.shallow_clone())).collect()
    }

    /// The averaged weights by name.
    pub fn weights(&self) -> &[(String, Tensor)] {
        &self.shadow
    }

    /// Runs `f` with the averaged weights in `vs` (matched by name), the
    /// live weights restored after.
    pub fn swapped<T>(&self, vs: &tch::nn::VarStore, f: impl FnOnce() -> T) -> T {
        let vars = vs.variables();
        let live: Vec<(Tensor, Tensor)> = tch::no_grad(|| {
            (self.shadow.iter())
                .filter_map(|(n, e)| vars.get(n).map(|v| (v.shallow_clone(), e)))
                .map(|(v, e)| {
                    let keep = v.detach().copy();
                    let mut v2 = v.shallow_clone();
                    v2.copy_(e);
                    (v, keep)
                })
                .collect()
        });
        let out = f();
        tch::no_grad(|| {
            for (mut v, keep) in live {
                v.copy_(&keep);
            }
        });
        out
    }

    /// Restores the averages from the `ema.*` tensors of checkpoint `path`.
    pub fn load_state(&mut self, tensors: &BTreeMap<String, Tensor>, path: &Path) -> Result<(), TrainError> {
        for (name, e) in &mut self.shadow {
            let key = format!("ema.{name}");
            let src = tensors
                .get(&key)
                .filter(|t| t.size() == e.size())
                .ok_or_else(|| TrainError::Checkpoint { path: path.into(), reason: format!("lacks {key}") })?;
            tch::no_grad(|| e.copy_(src));
        }
        Ok(())
    }
}

/// Global L2 norm of all gradients (inf or NaN if any is).
pub fn grad_norm<'a>(params: impl Iterator<Item = &'a Tensor>) -> f64 {
    let sq: f64 = params
        .map(|p| p.grad())
        .filter(|g| g.defined())
        .map(|g| g.to_kind(Kind::Float).square().sum(Kind::Float).double_value(&[]))
        .sum();
    sq.sqrt()
}

/// Scales all gradients by `factor`.
pub fn scale_grads<'a>(params: impl Iterator<Item = &'a Tensor>, factor: f64) {
    tch::no_grad(|| {
        for p in params {
            let mut g = p.grad();
            if g.defined() {
                let _ = g.g_mul_scalar_(factor);
            }
        }
    });
}

/// Dynamic loss scaling for float16 mixed precision (as `torch.amp.GradScaler`):
/// the loss is multiplied by `scale`; a step whose gradients overflow is
/// skipped and the scale halved; after `growth_interval` clean steps it doubles.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GradScaler {
    /// Current scale (1 when disabled).
    pub scale: f64,
    /// Clean steps since the last change.
    pub growth_tracker: u64,
    /// Steps between doublings.
    pub growth_interval: u64,
    /// Whether scaling is on (CUDA float16 AMP).
    pub enabled: bool,
}

impl GradScaler {
    /// A scaler starting at `init_scale` (2^16 by default), or a disabled one.
    pub fn new(enabled: bool, init_scale: f64, growth_interval: u64) -> GradScaler {
        GradScaler { scale: if enabled { init_scale } else { 1.0 }, growth_tracker: 0, growth_interval, enabled }
    }

    /// After unscaling: records whether the step's gradients were finite,
    /// adjusting the scale. Returns whether the optimizer may step.
    pub fn update(&mut self, finite: bool) -> bool {
        if !self.enabled {
            return finite;
        }
        if finite {
            self.growth_tracker += 1;
            if self.growth_tracker >= self.growth_interval {
                self.scale *= 2.0;
                self.growth_tracker = 0;
            }
        } else {
            self.scale *= 0.5;
            self.growth_tracker = 0;
        }
        finite
    }
}

/// Ends an accumulation group: unscales the gradients (when the scaler is
/// on), checks them, clips their global norm to `clip`, steps AdamW with
/// `lr` unless they overflowed (the scaler then backs off), and clears
/// them. Returns the gradient norm and whether the optimizer stepped.
pub fn apply_accumulated(opt: &mut AdamW, scaler: &mut GradScaler, clip: f64, lr: f64) -> (f64, bool) {
    if scaler.enabled {
        scale_grads(opt.params(), 1.0 / scaler.scale);
    }
    let norm = grad_norm(opt.params());
    let stepped = scaler.update(norm.is_finite());
    if stepped {
        if norm > clip {
            scale_grads(opt.params(), clip / (norm + 1e-6));
        }
        opt.step(lr);
    } else {
        log::warn!("non-finite gradients (norm {norm}): step skipped, loss scale now {}", scaler.scale);
    }
    opt.zero_grad();
    (norm, stepped)
}

/// Cosine annealing from `lr` at epoch 0 to `min_lr` at epoch `epochs`
/// (as `CosineAnnealingLR(T_max=epochs, eta_min=min_lr)` stepped per epoch).
pub fn cosine_lr(lr: f64, min_lr: f64, epoch: usize, epochs: usize) -> f64 {
    let t = epoch.min(epochs) as f64 / epochs.max(1) as f64;
    min_lr + (lr - min_lr) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn adamw_matches_the_closed_form_first_step() {
        let p = Tensor::from_slice(&[1.0f32, -2.0]).set_requires_grad(true);
        let mut opt = AdamW::new(vec![("p".into(), p.shallow_clone())], 0.1);
        (&p * &Tensor::from_slice(&[3.0f32, 0.5])).sum(Kind::Float).backward();
        opt.step(0.01);
        // Step 1: m_hat = g, v_hat = g^2, update = lr * g / (|g| + eps) = lr * sign(g).
        let want = [1.0 * (1.0 - 0.001) - 0.01, -2.0 * (1.0 - 0.001) - 0.01];
        for (i, w) in want.iter().enumerate() {
            assert!((p.double_value(&[i as i64]) - w).abs() < 1e-6);
        }
        let state = opt.state_tensors();
        assert_eq!(state.len(), 2);
        let mut fresh = AdamW::new(vec![("p".into(), p.shallow_clone())], 0.1);
        let map = state.into_iter().collect();
        fresh.load_state(&map, 1, Path::new("c.safetensors")).unwrap();
        assert!(fresh.m[0].equal(&opt.m[0]) && fresh.v[0].equal(&opt.v[0]) && fresh.steps == 1);
        let err = fresh.load_state(&Default::default(), 1, Path::new("c.safetensors")).unwrap_err();
        assert!(err.to_string().contains("adamw.m.p"), "{err}");
    }

    #[test]
    fn ema_moves_towards_the_live_weights() {
        let p = Tensor::from_slice(&[1.0f32, 2.0]);
        let params = vec![("w".to_string(), p.shallow_clone())];
        let mut ema = Ema::new(&params, 0.9, false);
        let mut warm = Ema::new(&params, 0.9, true);
        tch::no_grad(|| p.shallow_clone().copy_(&Tensor::from_slice(&[11.0f32, 2.0])));
        ema.update(&params, 0);
        warm.update(&params, 0);
        let w = &ema.weights()[0].1;
        assert!((w.double_value(&[0]) - 2.0).abs() < 1e-6 && (w.double_value(&[1]) - 2.0).abs() < 1e-6);
        // the warm-up's first update keeps 0.1 of the start: 0.1 * 1 + 0.9 * 11
        assert!((warm.weights()[0].1.double_value(&[0]) - 10.0).abs() < 1e-5);
        let mut back = Ema::new(&params, 0.9, false);
        back.load_state(&ema.state_tensors().into_iter().collect(), Path::new("c")).unwrap();
        assert!(back.weights()[0].1.equal(w));
    }

    #[test]
    fn ema_warmup_ramps_the_decay_up_to_its_cap() {
        let p = vec![("w".to_string(), Tensor::from_slice(&[0.0f32]))];
        let warm = Ema::new(&p, 0.995, true);
        let got: Vec<f64> = [0, 1, 10, 90, 269, 1790, 100_000].map(|t| warm.decay_at(t)).to_vec();
        let want = [0.1, 2.0 / 11.0, 11.0 / 20.0, 0.91, 270.0 / 279.0, 0.995, 0.995];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-12, "{got:?}");
        }
        // what the initial weights still weigh after 270 steps: the product of the decays
        let kept = |e: &Ema| (0..270).map(|t| e.decay_at(t)).product::<f64>();
        assert!(kept(&warm) < 1e-3 && (kept(&Ema::new(&p, 0.995, false)) - 0.995f64.powi(270)).abs() < 1e-12);
        assert_eq!(Ema::new(&p, 0.995, false).decay_at(0), 0.995);
    }

    #[test]
    fn scaler_halves_on_overflow_and_doubles_after_clean_steps() {
        let mut s = GradScaler::new(true, 65536.0, 3);
        assert!(!s.update(false));
        assert_eq!(s.scale, 32768.0);
        for _ in 0..3 {
            assert!(s.update(true));
        }
        assert_eq!(s.scale, 65536.0);
        let mut off = GradScaler::new(false, 65536.0, 3);
        assert_eq!(off.scale, 1.0);
        off.update(false);
        assert_eq!(off.scale, 1.0);
    }

    #[test]
    fn cosine_runs_from_lr_to_min() {
        assert_eq!(cosine_lr(1e-4, 1e-6, 0, 10), 1e-4);
        assert!((cosine_lr(1e-4, 1e-6, 10, 10) - 1e-6).abs() < 1e-15);
        assert!((cosine_lr(1e-4, 1e-6, 5, 10) - (1e-4 + 1e-6) / 2.0).abs() < 1e-12);
    }

    #[test]
    fn grad_norm_and_scaling() {
        let p = Tensor::zeros([2], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        (&p * &Tensor::from_slice(&[3.0f32, 4.0])).sum(Kind::Float).backward();
        assert!((grad_norm([&p].into_iter()) - 5.0).abs() < 1e-6);
        scale_grads([&p].into_iter(), 0.5);
        assert!((grad_norm([&p].into_iter()) - 2.5).abs() < 1e-6);
    }
}
