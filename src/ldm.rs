//! Latent diffusion training: the UNet learns to denoise the target latent
//! given the radar latent (EDM objective), with the VAE trainer's machinery:
//! AMP, accumulation, clipping, AdamW + cosine, an EMA of the weights (used
//! for sampling), resumable atomic checkpoints, progress bar, CSV log, plot.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tch::{nn, Device, Kind, Tensor};

use crate::dataset::{Dataset, FrameId, Modality};
use crate::diffusion::{sample, EdmConfig, Solver};
use crate::latents::{FrozenVae, LatentCache, LatentError};
use crate::memory::{ModelConfig, Planner, Precision, Run};
use crate::model::{Checkpointing, Unet3d, UnetConfig};
use crate::optim::{apply_accumulated, cosine_lr, AdamW, GradScaler};
use crate::plot::{line_chart, Series, COLORS};
use crate::train::{mix_seed, parse_device, progress_bar, Amp, CsvLog, TrainError};
use crate::weights;

/// Everything that defines a latent-diffusion run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LdmConfig {
    /// Denoiser architecture.
    pub unet: UnetConfig,
    /// EDM settings.
    pub edm: EdmConfig,
    /// Epochs (the cosine schedule spans them).
    pub epochs: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Final learning rate.
    pub min_lr: f64,
    /// AdamW weight decay.
    pub weight_decay: f64,
    /// Frames per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per optimizer step.
    pub grad_accum: usize,
    /// Mixed precision (f16 + scaling on CUDA, bf16 on CPU).
    pub amp: bool,
    /// Checkpoint every UNet ResBlock.
    pub checkpointing: bool,
    /// Gradient clipping threshold.
    pub clip_grad_norm: f64,
    /// EMA decay of the sampling weights.
    pub ema_decay: f64,
    /// Seed of order, noise and initialisation.
    pub seed: u64,
    /// `auto`, `cpu`, `cuda`, `cuda:N`.
    pub device: String,
    /// Non-finite batches in a row that stop the run.
    pub max_nonfinite_streak: usize,
    /// Draw a progress bar.
    pub progress: bool,
}

impl Default for LdmConfig {
    fn default() -> Self {
        LdmConfig {
            unet: UnetConfig::default(),
            edm: EdmConfig::default(),
            epochs: 10,
            lr: 1e-4,
            min_lr: 1e-6,
            weight_decay: 1e-4,
            batch_size: 1,
            grad_accum: 8,
            amp: true,
            checkpointing: false,
            clip_grad_norm: 1.0,
            ema_decay: 0.999,
            seed: 0,
            device: "auto".into(),
            max_nonfinite_streak: 3,
            progress: true,
        }
    }
}

/// Where the training latents come from.
pub enum LatentSource {
    /// A precomputed cache (memory-mapped reads).
    Cache(LatentCache),
    /// Encoded on the fly by the frozen VAE from the dataset.
    OnTheFly(Box<FrozenVae>),
}

const FORMAT: &str = "radvox-ldm-checkpoint-1";
const CSV_HEADER: &str = "epoch,step,micro_step,lr,loss,grad_norm,loss_scale,skipped_total,frames_per_s,elapsed_s";

/// Counters saved with a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LdmState {
    /// Completed epochs.
    pub epoch: usize,
    /// Optimizer steps.
    pub step: u64,
    /// Micro-steps (seeds each step's noise).
    pub micro: u64,
    /// Batches skipped as non-finite.
    pub skipped: u64,
    /// Loss scaler.
    pub scaler: GradScaler,
}

/// Trains the latent UNet.
pub struct LdmTrainer {
    config: LdmConfig,
    device: Device,
    amp: Amp,
    vs: nn::VarStore,
    unet: Unet3d,
    ema_vs: nn::VarStore,
    ema: Unet3d,
    opt: AdamW,
    state: LdmState,
    dataset: Dataset,
    source: LatentSource,
    vae_hash: String,
    out: PathBuf,
    history: Vec<(f64, f64)>,
    started: Instant,
}

impl LdmTrainer {
    /// Builds the UNet (seeded) and its EMA copy; `vae_hash` ties the run to
    /// the VAE that defines the latent space.
    pub fn new(
        dataset: Dataset,
        source: LatentSource,
        vae_hash: &str,
        config: LdmConfig,
        out: &Path,
    ) -> Result<LdmTrainer, TrainError> {
        config.unet.validate().map_err(|e| TrainError::Config(e.to_string()))?;
        if config.epochs == 0
            || config.batch_size == 0
            || config.grad_accum == 0
            || !(0.0..1.0).contains(&config.ema_decay)
        {
            return Err(TrainError::Config(
                "epochs, batch_size, grad_accum >= 1 and ema_decay in [0, 1) required".into(),
            ));
        }
        crate::memory::configure_cuda_allocator();
        let device = parse_device(&config.device)?;
        let vs = nn::VarStore::new(device);
        let unet = crate::train::with_torch_seed(config.seed, || Unet3d::new(&vs.root(), &config.unet))
            .map_err(|e| TrainError::Config(e.to_string()))?;
        let mut ema_vs = nn::VarStore::new(device);
        let ema = Unet3d::new(&ema_vs.root(), &config.unet).map_err(|e| TrainError::Config(e.to_string()))?;
        ema_vs.copy(&vs).map_err(|e| TrainError::Config(e.to_string()))?;
        ema_vs.freeze();
        let opt = AdamW::new(weights::named_variables(&vs), config.weight_decay);
        let amp = Amp::for_device(config.amp, device);
        let scaler = GradScaler::new(amp == Amp::CudaF16, 65536.0, 2000);
        std::fs::create_dir_all(out).map_err(|source| TrainError::Io { path: out.into(), source })?;
        let trainer = LdmTrainer {
            config,
            device,
            amp,
            vs,
            unet,
            ema_vs,
            ema,
            opt,
            state: LdmState { epoch: 0, step: 0, micro: 0, skipped: 0, scaler },
            dataset,
            source,
            vae_hash: vae_hash.into(),
            out: out.into(),
            history: Vec::new(),
            started: Instant::now(),
        };
        trainer.log_plan()?;
        Ok(trainer)
    }

    /// Logs the memory plan of a step at the first frame's latent shape, and
    /// warns when it exceeds the device's memory.
    fn log_plan(&self) -> Result<(), TrainError> {
        let Some(first) = self.dataset.frames().first() else { return Ok(()) };
        let (y, _) = self.latents(&first.id.clone(), 0)?;
        let s = y.size();
        let run = Run {
            model: ModelConfig::Unet(self.config.unet.clone()),
            grid: [s[1], s[2], s[3]],
            batch: self.config.batch_size,
            precision: if self.config.amp { Precision::Amp } else { Precision::F32 },
            checkpointing: if self.config.checkpointing { Checkpointing::PerBlock } else { Checkpointing::Off },
        };
        let plan = Planner::for_device(self.device).plan(&run).map_err(|e| TrainError::Config(e.to_string()))?;
        log::info!("{plan}");
        if let Some(budget) = crate::memory::device_budget(self.device).filter(|&b| !plan.fits(b)) {
            log::warn!("the plan exceeds the device's {}", crate::memory::gib(budget));
        }
        Ok(())
    }

    /// Parameters of the UNet.
    pub fn parameter_count(&self) -> i64 {
        self.vs.variables().values().map(|t| t.numel() as i64).sum()
    }

    /// The EMA network used for sampling.
    pub fn ema(&self) -> &Unet3d {
        &self.ema
    }

    /// Counters.
    pub fn state(&self) -> &LdmState {
        &self.state
    }

    fn latents(&self, id: &FrameId, i: usize) -> Result<(Tensor, Tensor), TrainError> {
        let err = |e: LatentError| TrainError::Config(e.to_string());
        match &self.source {
            LatentSource::Cache(c) => c.read(id).map_err(err),
            LatentSource::OnTheFly(vae) => {
                let enc = |m| -> Result<Tensor, TrainError> {
                    let g = self.dataset.read(i, m)?;
                    let t = g.to_tensor();
                    Ok(vae.encode(&t).squeeze_dim(0))
                };
                Ok((enc(Modality::Target)?, enc(Modality::Radar)?))
            }
        }
    }

    /// One epoch; returns the mean loss.
    pub fn train_epoch(&mut self) -> Result<f64, TrainError> {
        let epoch = self.state.epoch;
        let lr = cosine_lr(self.config.lr, self.config.min_lr, epoch, self.config.epochs);
        let n = self.dataset.len();
        let mut order: Vec<usize> = (0..n).collect();
        use rand::seq::SliceRandom;
        use rand::SeedableRng;
        order.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(mix_seed(self.config.seed, epoch as u64)));
        let batches: Vec<Vec<usize>> = order.chunks(self.config.batch_size).map(<[usize]>::to_vec).collect();
        let bar = progress_bar(batches.len(), 0, epoch, self.config.progress);
        let mut log = CsvLog::open(&self.out.join("ldm_log.csv"), CSV_HEADER)?;
        let (t0, mut frames, mut streak, mut phase) = (Instant::now(), 0usize, 0usize, 0usize);
        let (mut sum, mut count, mut group, mut group_n) = (0.0, 0usize, 0.0, 0usize);
        for (b, idx) in batches.iter().enumerate() {
            let mut ys = Vec::new();
            let mut cs = Vec::new();
            for &i in idx {
                let (y, c) = self.latents(&self.dataset.frames()[i].id.clone(), i)?;
                ys.push(y);
                cs.push(c);
            }
            let (y, c) = (Tensor::stack(&ys, 0).to_device(self.device), Tensor::stack(&cs, 0).to_device(self.device));
            frames += idx.len();
            self.state.micro += 1;
            let draws = self.config.edm.draw(&y, mix_seed(self.config.seed, self.state.micro));
            let scale = self.state.scaler.scale / self.config.grad_accum as f64;
            let (unet, edm, ck) = (&self.unet, self.config.edm, self.config.checkpointing);
            let loss = self.amp.run(|| edm.backward(unet, &y, &c, &draws, ck, scale));
            if loss.is_finite() {
                streak = 0;
                (sum, count, group, group_n) = (sum + loss, count + 1, group + loss, group_n + 1);
            } else {
                streak += 1;
                self.state.skipped += 1;
                if streak >= self.config.max_nonfinite_streak {
                    let frames =
                        idx.iter().map(|&i| self.dataset.frames()[i].id.to_string()).collect::<Vec<_>>().join(", ");
                    return Err(TrainError::NonFinite { count: streak, epoch, batch: b, frames });
                }
            }
            phase += 1;
            if phase == self.config.grad_accum || b + 1 == batches.len() {
                let norm = self.optimizer_step(lr);
                phase = 0;
                let mean = group / group_n.max(1) as f64;
                if group_n > 0 {
                    self.history.push((self.state.step as f64, mean));
                }
                let fps = frames as f64 / t0.elapsed().as_secs_f64();
                log.row(&[
                    epoch as f64,
                    self.state.step as f64,
                    self.state.micro as f64,
                    lr,
                    mean,
                    norm,
                    self.state.scaler.scale,
                    self.state.skipped as f64,
                    fps,
                    self.started.elapsed().as_secs_f64(),
                ])?;
                (group, group_n) = (0.0, 0);
            }
            bar.set_message(format!(
                "loss {:.4e} | {:.1} fr/s",
                sum / count.max(1) as f64,
                frames as f64 / t0.elapsed().as_secs_f64()
            ));
            bar.inc(1);
        }
        bar.finish_and_clear();
        self.state.epoch += 1;
        Ok(sum / count.max(1) as f64)
    }

    fn optimizer_step(&mut self, lr: f64) -> f64 {
        let (norm, stepped) = apply_accumulated(&mut self.opt, &mut self.state.scaler, self.config.clip_grad_norm, lr);
        if stepped {
            self.state.step += 1;
            let d = self.config.ema_decay;
            let live = self.vs.variables();
            tch::no_grad(|| {
                for (name, mut e) in self.ema_vs.variables() {
                    let _ = e.g_mul_scalar_(d).g_add_(&(&live[&name] * (1.0 - d)));
                }
            });
        }
        norm
    }

    /// Writes model, EMA, AdamW moments and counters atomically.
    pub fn save_checkpoint(&self, path: &Path) -> Result<(), TrainError> {
        let mut tensors = weights::named_variables(&self.vs);
        tensors.extend(weights::named_variables(&self.ema_vs).into_iter().map(|(k, t)| (format!("ema.{k}"), t)));
        tensors.extend(self.opt.state_tensors());
        let meta = HashMap::from([
            ("format".to_string(), FORMAT.to_string()),
            ("config".to_string(), serde_json::to_string(&self.config).expect("serialises")),
            ("state".to_string(), serde_json::to_string(&self.state).expect("serialises")),
            ("vae_hash".to_string(), self.vae_hash.clone()),
        ]);
        Ok(weights::save_atomic(path, &tensors, &meta)?)
    }

    /// Restores weights, EMA, moments and counters from a checkpoint of this config.
    pub fn load_checkpoint(&mut self, path: &Path) -> Result<(), TrainError> {
        let fail = |reason: String| TrainError::Resume { path: path.into(), reason };
        let file = weights::read(path)?;
        if file.metadata.get("format").map(String::as_str) != Some(FORMAT) {
            return Err(fail(format!("not a {FORMAT} file")));
        }
        if file.metadata.get("vae_hash") != Some(&self.vae_hash) {
            return Err(fail("trained on another VAE's latents".into()));
        }
        let split = |prefix: &str| -> BTreeMap<String, Tensor> {
            file.tensors
                .iter()
                .filter_map(|(k, t)| k.strip_prefix(prefix).map(|s| (s.to_string(), t.shallow_clone())))
                .collect()
        };
        let model: BTreeMap<String, Tensor> = file
            .tensors
            .iter()
            .filter(|(k, _)| !k.starts_with("ema.") && !k.starts_with("adamw."))
            .map(|(k, t)| (k.clone(), t.shallow_clone()))
            .collect();
        weights::load_into(&self.vs, "", &model, path)?;
        weights::load_into(&self.ema_vs, "", &split("ema."), path)?;
        let state: LdmState = serde_json::from_str(file.metadata.get("state").ok_or_else(|| fail("no state".into()))?)
            .map_err(|e| fail(e.to_string()))?;
        self.opt.load_state(&file.tensors, state.step).map_err(fail)?;
        self.state = state;
        Ok(())
    }

    /// Trains every remaining epoch, checkpointing `last` each epoch, then plots.
    pub fn fit(&mut self) -> Result<Vec<f64>, TrainError> {
        let mut losses = Vec::new();
        while self.state.epoch < self.config.epochs {
            let l = self.train_epoch()?;
            log::info!("ldm epoch {} loss {l:.4e}", self.state.epoch - 1);
            losses.push(l);
            self.save_checkpoint(&self.out.join("last.safetensors"))?;
        }
        let chart = line_chart(
            "LATENT DIFFUSION EDM LOSS",
            "OPTIMIZER STEP",
            &[Series { name: "LOSS".into(), points: self.history.clone(), color: COLORS[0] }],
            true,
        );
        let path = self.out.join("loss.png");
        chart.save_png(&path).map_err(|source| TrainError::Io { path, source })?;
        Ok(losses)
    }
}

/// A trained denoiser (EMA weights) ready to sample.
pub struct Sampler {
    unet: Unet3d,
    _vs: nn::VarStore,
    /// EDM settings it was trained with.
    pub edm: EdmConfig,
}

impl Sampler {
    /// Loads the EMA weights of an LDM checkpoint, refusing one trained on
    /// another VAE's latents.
    pub fn load(path: &Path, vae_hash: &str, device: Device) -> Result<Sampler, TrainError> {
        let fail = |reason: String| TrainError::Resume { path: path.into(), reason };
        let file = weights::read(path)?;
        if file.metadata.get("format").map(String::as_str) != Some(FORMAT) {
            return Err(fail(format!("not a {FORMAT} file")));
        }
        if file.metadata.get("vae_hash").map(String::as_str) != Some(vae_hash) {
            return Err(fail(format!(
                "trained on latents of VAE {}, not of this VAE {vae_hash}",
                file.metadata.get("vae_hash").cloned().unwrap_or_default()
            )));
        }
        let config: LdmConfig =
            serde_json::from_str(file.metadata.get("config").ok_or_else(|| fail("no config".into()))?)
                .map_err(|e| fail(e.to_string()))?;
        let mut vs = nn::VarStore::new(device);
        let unet = Unet3d::new(&vs.root(), &config.unet).map_err(|e| fail(e.to_string()))?;
        let ema: BTreeMap<String, Tensor> = file
            .tensors
            .iter()
            .filter_map(|(k, t)| k.strip_prefix("ema.").map(|s| (s.to_string(), t.shallow_clone())))
            .collect();
        weights::load_into(&vs, "", &ema, path)?;
        vs.freeze();
        Ok(Sampler { unet, _vs: vs, edm: config.edm })
    }

    /// Samples target latents for a batch of radar latents `cond`.
    pub fn sample(&self, cond: &Tensor, steps: usize, solver: Solver, seed: u64) -> Tensor {
        let mut shape = cond.size();
        shape[1] = self.unet.config().latent_channels;
        let (edm, unet) = (self.edm, &self.unet);
        let b = shape[0];
        let denoise = |x: &Tensor, s: f64| {
            let sigma = Tensor::full([b], s, (Kind::Float, x.device()));
            edm.denoise(unet, x, &sigma, cond, false)
        };
        sample(&self.edm, &shape, steps, solver, seed, cond.device(), &denoise)
    }
}
