//! VAE training with the seed's memory techniques: batch 1 with gradient
//! accumulation, mixed precision (f16 + loss scaling on CUDA, bf16 on CPU),
//! gradient checkpointing, AdamW + cosine schedule + clipping, a lean
//! prefetching loader; progress bar, CSV log, loss plot, validation IoU,
//! atomic `last`/`best` checkpoints and exact resume.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tch::nn::{self, ModuleT};
use tch::{Device, Kind, Tensor};

use crate::dataset::{Dataset, DatasetError};
use crate::loss::{LossConfig, ReconLoss};
use crate::memory::{gib, ModelConfig, Plan, Planner, Precision, Run};
pub use crate::metrics::Occupancy;
use crate::model::vae::LossParts;
use crate::model::{Checkpointing, Vae3d, VaeConfig};
use crate::optim::{apply_accumulated, cosine_lr, AdamW, GradScaler};
use crate::plot::{line_chart, Canvas, Series, COLORS};
use crate::prefetch::{Batch, Loader, LoaderConfig, LoaderError};
use crate::weights::{self, WeightsError};

/// Everything that defines a VAE training run (saved in every checkpoint).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Architecture.
    pub vae: VaeConfig,
    /// Reconstruction loss terms.
    pub loss: LossConfig,
    /// Epochs (the cosine schedule spans them).
    pub epochs: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Final learning rate of the cosine schedule.
    pub min_lr: f64,
    /// AdamW decoupled weight decay.
    pub weight_decay: f64,
    /// Frames per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per optimizer step (the loss is divided by this).
    pub grad_accum: usize,
    /// Mixed precision: f16 autocast + loss scaling on CUDA, bf16 autocast on CPU.
    pub amp: bool,
    /// Gradient checkpointing granularity.
    pub checkpointing: Checkpointing,
    /// Gradient-norm clipping threshold.
    pub clip_grad_norm: f64,
    /// Seed of data order, sampling noise and initialisation.
    pub seed: u64,
    /// Loader threads.
    pub num_workers: usize,
    /// Batches decoded ahead.
    pub prefetch: usize,
    /// Page-locked batches (CUDA only).
    pub pin_memory: bool,
    /// Reshuffle the train split every epoch.
    pub shuffle: bool,
    /// `auto`, `cpu`, `cuda` or `cuda:N`.
    pub device: String,
    /// Non-finite batches in a row that stop the run.
    pub max_nonfinite_streak: usize,
    /// Occupancy threshold of the validation metrics.
    pub iou_threshold: f64,
    /// Initial loss scale (float16 AMP).
    pub init_scale: f64,
    /// Clean steps before the loss scale doubles.
    pub growth_interval: u64,
    /// Draw a progress bar on a terminal.
    pub progress: bool,
    /// Per-channel factor applied to inputs before the model, so channels
    /// of very different ranges (intensity ~0-120, Doppler m/s) weigh
    /// comparably in the loss; losses are in these scaled units. Channel 0
    /// (occupancy, thresholded by the metrics) should stay 1.
    pub channel_scale: Vec<f64>,
    /// Memory budget (GiB) the plan is checked against at start; `None`:
    /// the GPU's memory, or the RAM available on CPU.
    pub memory_budget_gib: Option<f64>,
    /// Start even when the memory plan exceeds the budget.
    pub force: bool,
    /// Retry an out-of-memory step with the planner's next fallback (half
    /// the micro-batch, then finer checkpointing) instead of failing.
    pub oom_fallback: bool,
    /// Return freed large host blocks to the OS at once
    /// ([`crate::memory::return_large_frees`]): host RSS then follows the
    /// tensors (and the plan), at a few percent of CPU step time.
    pub lean_host_memory: bool,
}

impl Default for TrainConfig {
    /// The seed's recipe: ultra_lightweight, batch 1, accumulation 8, AMP on,
    /// one worker, no pinned memory, AdamW 1e-4 / wd 1e-4, clip 1.0.
    fn default() -> Self {
        TrainConfig {
            vae: VaeConfig::ultra_lightweight(),
            loss: LossConfig::default(),
            epochs: 10,
            lr: 1e-4,
            min_lr: 1e-6,
            weight_decay: 1e-4,
            batch_size: 1,
            grad_accum: 8,
            amp: true,
            checkpointing: Checkpointing::Off,
            clip_grad_norm: 1.0,
            seed: 0,
            num_workers: 1,
            prefetch: 2,
            pin_memory: false,
            shuffle: true,
            device: "auto".into(),
            max_nonfinite_streak: 3,
            iou_threshold: 0.5,
            init_scale: 65536.0,
            growth_interval: 2000,
            progress: true,
            channel_scale: vec![1.0, 0.01, 0.25, 1.0],
            memory_budget_gib: None,
            force: false,
            oom_fallback: true,
            lean_host_memory: true,
        }
    }
}

impl TrainConfig {
    /// Checks everything that can be checked before building anything.
    pub fn validate(&self) -> Result<(), TrainError> {
        let bad = |m: String| Err(TrainError::Config(m));
        self.vae.validate().map_err(|e| TrainError::Config(e.to_string()))?;
        if self.epochs == 0 || self.batch_size == 0 || self.grad_accum == 0 || self.num_workers == 0 {
            return bad("epochs, batch_size, grad_accum and num_workers must be >= 1".into());
        }
        if !(self.lr > 0.0 && self.lr.is_finite() && self.min_lr >= 0.0 && self.min_lr <= self.lr) {
            return bad(format!("need 0 <= min_lr ({}) <= lr ({}), lr finite", self.min_lr, self.lr));
        }
        if !(self.weight_decay >= 0.0 && self.clip_grad_norm > 0.0 && self.init_scale >= 1.0) {
            return bad("weight_decay must be >= 0, clip_grad_norm > 0, init_scale >= 1".into());
        }
        if self.max_nonfinite_streak == 0 || self.growth_interval == 0 {
            return bad("max_nonfinite_streak and growth_interval must be >= 1".into());
        }
        if self.channel_scale.len() != self.vae.in_channels as usize
            || self.channel_scale.iter().any(|s| !(s.is_finite() && *s > 0.0))
        {
            return bad(format!(
                "channel_scale {:?} needs {} positive factors, one per input channel",
                self.channel_scale, self.vae.in_channels
            ));
        }
        if let Some(b) = self.memory_budget_gib {
            if !(b > 0.0 && b.is_finite()) {
                return bad(format!("memory_budget_gib must be > 0, got {b}"));
            }
        }
        parse_device(&self.device)?;
        Ok(())
    }
}

/// Resolves a device name.
pub fn parse_device(name: &str) -> Result<Device, TrainError> {
    match name {
        "auto" => Ok(Device::cuda_if_available()),
        "cpu" => Ok(Device::Cpu),
        "cuda" | "gpu" => Ok(Device::Cuda(0)),
        n => n
            .strip_prefix("cuda:")
            .and_then(|i| i.parse().ok())
            .map(Device::Cuda)
            .ok_or_else(|| TrainError::Config(format!("unknown device {n:?}: use auto, cpu, cuda or cuda:N"))),
    }
}

/// Errors of training.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// An invalid setting.
    #[error("invalid training config: {0}")]
    Config(String),
    /// The loader failed (a file is named inside).
    #[error(transparent)]
    Loader(#[from] LoaderError),
    /// Opening the dataset failed.
    #[error(transparent)]
    Dataset(#[from] DatasetError),
    /// Reading or writing weights failed.
    #[error(transparent)]
    Weights(#[from] WeightsError),
    /// Too many non-finite batches in a row.
    #[error(
        "{count} non-finite batches in a row, the last at epoch {epoch} batch {batch} (frames {frames}): stopping"
    )]
    NonFinite {
        /// Consecutive failures.
        count: usize,
        /// Epoch.
        epoch: usize,
        /// Batch index in the epoch.
        batch: usize,
        /// Frame ids of that batch.
        frames: String,
    },
    /// A checkpoint that cannot be resumed from.
    #[error("cannot resume from {path}: {reason}")]
    Resume {
        /// The checkpoint.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The memory plan exceeds the budget (`force` starts anyway).
    #[error("the run does not fit in {budget}:\n{plan}\n(set force / pass --force to start anyway)")]
    WontFit {
        /// The budget.
        budget: String,
        /// The plan, with the change that would fit.
        plan: String,
    },
    /// A step ran out of memory and no fallback was left.
    #[error("out of memory with no fallback left ({message}); the last plan:\n{plan}")]
    OutOfMemory {
        /// The allocator's message.
        message: String,
        /// The plan of the last configuration tried.
        plan: String,
    },
    /// Log or plot output failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
}

/// Counters that, with the weights and moments, make a resume exact.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Completed epochs.
    pub epoch: usize,
    /// Optimizer steps taken.
    pub step: u64,
    /// Micro-steps taken (seeds each step's sampling noise: the RNG state).
    pub micro: u64,
    /// Next batch within the epoch (the data cursor).
    pub cursor: usize,
    /// Micro-batches accumulated since the last optimizer step.
    pub accum_phase: usize,
    /// Best validation IoU so far.
    pub best_iou: Option<f64>,
    /// Batches skipped as non-finite.
    pub skipped: u64,
    /// Loss scaler.
    pub scaler: GradScaler,
}

/// One epoch's summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochReport {
    /// Epoch index (0-based).
    pub epoch: usize,
    /// Learning rate used.
    pub lr: f64,
    /// Mean training loss over finite batches.
    pub loss: f64,
    /// Mean reconstruction loss.
    pub recon: f64,
    /// Mean KL.
    pub kl: f64,
    /// Batches skipped this epoch.
    pub skipped: usize,
    /// Validation metrics.
    pub val: Option<Occupancy>,
    /// Mean validation reconstruction MSE.
    pub val_mse: Option<f64>,
    /// Frames per second of training.
    pub frames_per_s: f64,
}

/// How mixed precision runs on this device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Amp {
    /// Plain float32.
    Off,
    /// CUDA float16 autocast with loss scaling.
    CudaF16,
    /// CPU bfloat16 autocast (no scaling needed: bf16 has f32's range).
    CpuBf16,
}

impl Amp {
    /// The mode for `enabled` on `device`.
    pub fn for_device(enabled: bool, device: Device) -> Amp {
        match (enabled, device) {
            (false, _) => Amp::Off,
            (true, Device::Cpu) => Amp::CpuBf16,
            (true, _) => Amp::CudaF16,
        }
    }

    /// Runs `f` under this autocast mode.
    pub fn run<T>(self, f: impl FnOnce() -> T) -> T {
        match self {
            Amp::Off => f(),
            Amp::CudaF16 => tch::autocast(true, f),
            Amp::CpuBf16 => {
                struct Reset;
                impl Drop for Reset {
                    fn drop(&mut self) {
                        crate::shim::set_cpu_autocast(false);
                    }
                }
                crate::shim::set_cpu_autocast(true);
                let _reset = Reset;
                f()
            }
        }
    }
}

/// Runs `f` with libtorch's global generator seeded to `seed`, holding a
/// process-wide lock: the generator is shared by every thread, so without
/// the lock concurrent runs (tests, two trainers) would interleave draws
/// and lose reproducibility. Keep `f` to the random draws themselves.
pub fn with_torch_seed<T>(seed: u64, f: impl FnOnce() -> T) -> T {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    tch::manual_seed(seed as i64);
    f()
}

/// SplitMix64 mixing of a seed and a counter.
pub fn mix_seed(seed: u64, n: u64) -> u64 {
    let mut z = seed ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

const FORMAT: &str = "radvox-vae-checkpoint-1";

/// `(step, loss, recon, kl)` of one optimizer step.
type StepPoint = (f64, f64, f64, f64);

#[derive(Default)]
struct History {
    steps: Vec<StepPoint>,
    epochs: Vec<(f64, Occupancy)>,
}

/// Trains a [`Vae3d`] on the target grids of a dataset.
pub struct VaeTrainer {
    config: TrainConfig,
    device: Device,
    amp: Amp,
    vs: nn::VarStore,
    vae: Vae3d,
    loss: ReconLoss,
    opt: AdamW,
    state: TrainState,
    train: Loader,
    val: Option<Loader>,
    out: PathBuf,
    history: History,
    started: Instant,
    /// Frames per forward/backward (the loader's batch, or less after an
    /// out-of-memory fallback split it).
    micro_batch: usize,
    fault_oom: Option<OomFault>,
}

/// Test hook: whether to fail a step with an injected out-of-memory error,
/// given the micro-batch and checkpointing it runs with.
type OomFault = Box<dyn Fn(usize, Checkpointing) -> bool + Send>;

/// Whether a libtorch error message reports a refused allocation.
pub fn is_out_of_memory(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("out of memory") || m.contains("can't allocate memory") || m.contains("cannot allocate memory")
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".into())
}

impl std::fmt::Debug for VaeTrainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaeTrainer").field("config", &self.config).field("state", &self.state).finish()
    }
}

impl VaeTrainer {
    /// Validates the config, sets the CUDA allocator config, builds the model
    /// (seeded), loss, optimizer and loaders. Outputs go to `out`.
    pub fn new(
        train: Dataset,
        val: Option<Dataset>,
        config: TrainConfig,
        out: &Path,
    ) -> Result<VaeTrainer, TrainError> {
        config.validate()?;
        crate::memory::configure_cuda_allocator();
        if config.lean_host_memory {
            crate::memory::return_large_frees();
        }
        let device = parse_device(&config.device)?;
        let (planner, run) = Self::memory_setup(&config, device, &train, config.batch_size);
        let plan = planner.plan(&run).map_err(|e| TrainError::Config(e.to_string()))?;
        log::info!("{plan}");
        let budget = match config.memory_budget_gib {
            Some(g) => Some((g * (1u64 << 30) as f64) as u64),
            None => crate::memory::device_budget(device),
        };
        if let Some(budget) = budget.filter(|&b| !plan.fits(b)) {
            let mut text = plan.to_string();
            if let Ok(f) = crate::memory::fit(budget, &planner, &run) {
                if let Some((changes, fixed)) = f.suggestion {
                    let changes: Vec<String> = changes.iter().map(|c| c.to_string()).collect();
                    text += &format!("\nfits with: {} ({})", changes.join(", "), gib(fixed.total()));
                }
            }
            if !config.force {
                return Err(TrainError::WontFit { budget: gib(budget), plan: text });
            }
            log::warn!("the plan exceeds {}; starting anyway (force)", gib(budget));
        }
        let vs = nn::VarStore::new(device);
        let vae = with_torch_seed(config.seed, || Vae3d::new(&vs.root(), &config.vae))
            .map_err(|e| TrainError::Config(e.to_string()))?;
        let loss = ReconLoss::new(&config.loss, config.vae.out_channels, device).map_err(TrainError::Config)?;
        let opt = AdamW::new(weights::named_variables(&vs), config.weight_decay);
        let amp = Amp::for_device(config.amp, device);
        let loader_cfg = |shuffle| LoaderConfig {
            batch_size: config.batch_size,
            shuffle,
            seed: config.seed,
            num_workers: config.num_workers,
            prefetch: config.prefetch,
            pin_memory: config.pin_memory,
            load_radar: false, // the VAE learns the targets alone
            ..Default::default()
        };
        let train = Loader::new(train, loader_cfg(config.shuffle))?;
        let val = val.map(|v| Loader::new(v, loader_cfg(false))).transpose()?;
        let config_batch = config.batch_size;
        let state = TrainState {
            epoch: 0,
            step: 0,
            micro: 0,
            cursor: 0,
            accum_phase: 0,
            best_iou: None,
            skipped: 0,
            scaler: GradScaler::new(amp == Amp::CudaF16, config.init_scale, config.growth_interval),
        };
        std::fs::create_dir_all(out).map_err(|source| TrainError::Io { path: out.into(), source })?;
        Ok(VaeTrainer {
            config,
            device,
            amp,
            vs,
            vae,
            loss,
            opt,
            state,
            train,
            val,
            out: out.into(),
            history: History::default(),
            started: Instant::now(),
            micro_batch: config_batch,
            fault_oom: None,
        })
    }

    /// The planner (device, loader settings) and the run `config` asks for
    /// on `train`'s grid with `batch` frames per forward/backward.
    fn memory_setup(config: &TrainConfig, device: Device, train: &Dataset, batch: usize) -> (Planner, Run) {
        let shape = train.output_shape(0);
        let planner = Planner { prefetch: config.prefetch, workers: config.num_workers, ..Planner::for_device(device) };
        let run = Run {
            model: ModelConfig::Vae(config.vae.clone()),
            grid: [shape[1] as i64, shape[2] as i64, shape[3] as i64],
            batch,
            precision: if config.amp { Precision::Amp } else { Precision::F32 },
            checkpointing: config.checkpointing,
        };
        (planner, run)
    }

    /// The memory plan of the current configuration (micro-batch and
    /// checkpointing included, after any out-of-memory fallback).
    pub fn plan(&self) -> Plan {
        let (planner, run) = Self::memory_setup(&self.config, self.device, self.train.dataset(), self.micro_batch);
        planner.plan(&run).expect("the config was validated")
    }

    /// Frames per forward/backward now.
    pub fn micro_batch(&self) -> usize {
        self.micro_batch
    }

    /// Test hook: make steps fail with an out-of-memory error while `f(micro_batch, checkpointing)` is true.
    #[doc(hidden)]
    pub fn inject_out_of_memory(&mut self, f: impl Fn(usize, Checkpointing) -> bool + Send + 'static) {
        self.fault_oom = Some(Box::new(f));
    }

    /// Rebuilds a trainer from a checkpoint (its config, weights, moments,
    /// scaler and counters); `epochs` may extend the run.
    pub fn resume(
        checkpoint: &Path,
        train: Dataset,
        val: Option<Dataset>,
        epochs: Option<usize>,
        out: &Path,
    ) -> Result<VaeTrainer, TrainError> {
        Self::resume_with(checkpoint, train, val, out, |c| {
            if let Some(e) = epochs {
                c.epochs = e;
            }
        })
    }

    /// [`VaeTrainer::resume`], with `edit` applied to the checkpoint's config
    /// first (more epochs, `force`, a memory budget).
    pub fn resume_with(
        checkpoint: &Path,
        train: Dataset,
        val: Option<Dataset>,
        out: &Path,
        edit: impl FnOnce(&mut TrainConfig),
    ) -> Result<VaeTrainer, TrainError> {
        let fail = |reason: String| TrainError::Resume { path: checkpoint.into(), reason };
        let file = weights::read(checkpoint)?;
        if file.metadata.get("format").map(String::as_str) != Some(FORMAT) {
            return Err(fail(format!("not a {FORMAT} file")));
        }
        let json = |key: &str| file.metadata.get(key).ok_or_else(|| fail(format!("metadata lacks {key}")));
        let mut config: TrainConfig = serde_json::from_str(json("config")?).map_err(|e| fail(e.to_string()))?;
        let state: TrainState = serde_json::from_str(json("state")?).map_err(|e| fail(e.to_string()))?;
        edit(&mut config);
        let mut trainer = VaeTrainer::new(train, val, config, out)?;
        let model: BTreeMap<String, Tensor> = file
            .tensors
            .iter()
            .filter(|(k, _)| !k.starts_with("adamw."))
            .map(|(k, t)| (k.clone(), t.shallow_clone()))
            .collect();
        weights::load_into(&trainer.vs, "", &model, checkpoint)?;
        trainer.opt.load_state(&file.tensors, state.step).map_err(fail)?;
        trainer.state = state;
        Ok(trainer)
    }

    /// The model.
    pub fn vae(&self) -> &Vae3d {
        &self.vae
    }
    /// Its variables.
    pub fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }
    /// Counters.
    pub fn state(&self) -> &TrainState {
        &self.state
    }
    /// The config.
    pub fn config(&self) -> &TrainConfig {
        &self.config
    }
    /// Device in use.
    pub fn device(&self) -> Device {
        self.device
    }
    /// Mixed-precision mode in use.
    pub fn amp(&self) -> Amp {
        self.amp
    }
    /// The training loader.
    pub fn train_loader(&self) -> &Loader {
        &self.train
    }

    /// A batch tensor on the device, float32, scaled per channel.
    pub fn input(&self, t: &Tensor) -> Tensor {
        let scale = Tensor::from_slice(&self.config.channel_scale)
            .to_kind(Kind::Float)
            .to_device(self.device)
            .reshape([1, -1, 1, 1, 1]);
        t.to_device(self.device).to_kind(Kind::Float) * scale
    }

    /// One micro-step (forward + backward, gradients accumulate). `Ok(None)`:
    /// the input or loss was not finite and nothing changed. When an
    /// allocation fails mid-step, the gradients are restored, the planner's
    /// next fallback applied (half the micro-batch with the loss scaled to
    /// the same mean, or finer checkpointing) and the same step re-run with
    /// the same data and noise; with no fallback left the error carries the plan.
    pub fn micro_step(&mut self, batch: &Batch) -> Result<Option<LossParts>, TrainError> {
        let x = self.input(&batch.target);
        self.state.micro += 1;
        if x.isfinite().all().int64_value(&[]) == 0 {
            return Ok(None);
        }
        let size = x.size();
        let shape = self.vae.latent_shape([size[0], size[1], size[2], size[3], size[4]]);
        let eps = with_torch_seed(mix_seed(self.config.seed, self.state.micro), || {
            Tensor::randn(shape, (Kind::Float, self.device))
        });
        // Gradients accumulated by earlier micro-steps, to restore when this
        // step fails after some of its backward ran (an allocation failure, or
        // a non-finite loss in a later part of a split batch).
        let grads_exist = self.opt.params().any(|p| p.grad().defined());
        let snapshot: Option<Vec<Tensor>> = (grads_exist && self.config.oom_fallback).then(|| {
            self.opt.params().map(|p| if p.grad().defined() { p.grad().copy() } else { Tensor::new() }).collect()
        });
        loop {
            let split = (self.micro_batch as i64) < x.size()[0];
            let attempt = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.backward_split(&x, &eps)));
            let message = match attempt {
                Ok(Some(parts)) => return Ok(Some(parts)),
                Ok(None) => {
                    if split {
                        self.restore_grads(snapshot.as_deref());
                    }
                    return Ok(None); // a non-finite loss: this batch contributes nothing
                }
                Err(payload) => {
                    crate::shim::reset_autocast();
                    let message = panic_message(payload.as_ref());
                    if !is_out_of_memory(&message) {
                        std::panic::resume_unwind(payload);
                    }
                    message
                }
            };
            if !self.config.oom_fallback {
                return Err(TrainError::OutOfMemory { message, plan: self.plan().to_string() });
            }
            self.restore_grads(snapshot.as_deref());
            self.apply_fallback(message)?;
        }
    }

    /// Forward and backward of `x` in micro-batches of `self.micro_batch`
    /// frames, each weighted by its share of the batch; `None` if a loss
    /// was not finite.
    fn backward_split(&self, x: &Tensor, eps: &Tensor) -> Option<LossParts> {
        let n = x.size()[0];
        let (vae, loss, ck) = (&self.vae, &self.loss, self.config.checkpointing);
        let base = self.state.scaler.scale / self.config.grad_accum as f64;
        let mut total = LossParts { recon: 0.0, kl: 0.0, total: 0.0 };
        let mut start = 0;
        while start < n {
            let len = (self.micro_batch as i64).min(n - start);
            let share = len as f64 / n as f64;
            let (xs, es) = (x.narrow(0, start, len), eps.narrow(0, start, len));
            let fail = self.fault_oom.as_ref().is_some_and(|f| f(self.micro_batch, ck));
            let recon_loss = |r: &Tensor, t: &Tensor| {
                if fail {
                    panic!("CUDA out of memory (injected by a test) at micro-batch {len}");
                }
                loss.compute(r, t)
            };
            let parts = self.amp.run(|| vae.backward(&xs, Some(&es), ck, base * share, &recon_loss));
            if !parts.total.is_finite() {
                return None;
            }
            total.recon += parts.recon * share;
            total.kl += parts.kl * share;
            total.total += parts.total * share;
            start += len;
        }
        Some(total)
    }

    fn restore_grads(&mut self, snapshot: Option<&[Tensor]>) {
        match snapshot {
            Some(saved) => tch::no_grad(|| {
                for (p, g) in self.opt.params().zip(saved) {
                    let mut grad = p.grad();
                    if g.defined() {
                        grad.copy_(g);
                    } else if grad.defined() {
                        let _ = grad.zero_();
                    }
                }
            }),
            None => self.opt.zero_grad(),
        }
    }

    fn apply_fallback(&mut self, message: String) -> Result<(), TrainError> {
        let (planner, run) = Self::memory_setup(&self.config, self.device, self.train.dataset(), self.micro_batch);
        let mp = planner.model(&run.model).map_err(|e| TrainError::Config(e.to_string()))?;
        let next = crate::memory::fallback(&mp, run.grid, run.batch, run.precision, run.checkpointing);
        let Some((batch, checkpointing, plan)) = next else {
            let plan = mp.plan(run.grid, run.batch, run.precision, run.checkpointing);
            return Err(TrainError::OutOfMemory { message, plan: plan.to_string() });
        };
        self.micro_batch = batch;
        self.config.checkpointing = checkpointing;
        log::warn!("{message}: retrying the step with micro-batch {batch}, checkpointing {checkpointing}\n{plan}");
        Ok(())
    }

    /// Unscales, checks, clips and applies the accumulated gradients.
    /// Returns the gradient norm and whether the step was taken.
    pub fn optimizer_step(&mut self, lr: f64) -> (f64, bool) {
        let (norm, stepped) = apply_accumulated(&mut self.opt, &mut self.state.scaler, self.config.clip_grad_norm, lr);
        self.state.step += stepped as u64;
        self.state.accum_phase = 0;
        (norm, stepped)
    }

    /// Trains one epoch from the data cursor.
    pub fn train_epoch(&mut self) -> Result<EpochReport, TrainError> {
        let epoch = self.state.epoch;
        let lr = cosine_lr(self.config.lr, self.config.min_lr, epoch, self.config.epochs);
        let n = self.train.len();
        let bar = progress_bar(n, self.state.cursor, epoch, self.config.progress);
        let (t0, mut frames, mut streak, mut skipped) = (Instant::now(), 0usize, 0usize, 0usize);
        let (mut sum, mut count) = ([0.0f64; 3], 0usize);
        let (mut group, mut group_n) = ([0.0f64; 3], 0usize);
        let mut log = CsvLog::open(&self.out.join("train_log.csv"), CSV_HEADER)?;
        let mut it = self.train.epoch_from(epoch as u64, self.state.cursor);
        for batch in it.by_ref() {
            let batch = batch?;
            let b = self.state.cursor;
            frames += batch.ids.len();
            match self.micro_step(&batch)? {
                Some(p) => {
                    streak = 0;
                    for acc in [&mut sum, &mut group] {
                        acc[0] += p.total;
                        acc[1] += p.recon;
                        acc[2] += p.kl;
                    }
                    count += 1;
                    group_n += 1;
                }
                None => {
                    streak += 1;
                    skipped += 1;
                    self.state.skipped += 1;
                    let ids = batch.ids.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(", ");
                    log::warn!("epoch {epoch} batch {b} ({ids}): non-finite input or loss, batch skipped");
                    if streak >= self.config.max_nonfinite_streak {
                        return Err(TrainError::NonFinite { count: streak, epoch, batch: b, frames: ids });
                    }
                }
            }
            drop(batch);
            self.state.cursor += 1;
            self.state.accum_phase += 1;
            if self.state.accum_phase == self.config.grad_accum || self.state.cursor == n {
                let (norm, _) = self.optimizer_step(lr);
                let k = group_n.max(1) as f64;
                let row = [group[0] / k, group[1] / k, group[2] / k];
                let fps = frames as f64 / t0.elapsed().as_secs_f64();
                log.row(&[
                    epoch as f64,
                    self.state.step as f64,
                    self.state.micro as f64,
                    lr,
                    row[0],
                    row[1],
                    row[2],
                    norm,
                    self.state.scaler.scale,
                    self.state.skipped as f64,
                    fps,
                    crate::memory::rss_anon() as f64 / (1u64 << 20) as f64,
                    self.started.elapsed().as_secs_f64(),
                ])?;
                if group_n > 0 {
                    self.history.steps.push((self.state.step as f64, row[0], row[1], row[2]));
                }
                (group, group_n) = ([0.0; 3], 0);
            }
            let k = count.max(1) as f64;
            bar.set_message(format!(
                "loss {:.4e} rec {:.4e} kl {:.3} | {:.1} fr/s | rss {} MiB",
                sum[0] / k,
                sum[1] / k,
                sum[2] / k,
                frames as f64 / t0.elapsed().as_secs_f64(),
                crate::memory::rss_anon() >> 20
            ));
            bar.inc(1);
        }
        drop(it);
        bar.finish_and_clear();
        self.state.cursor = 0;
        self.state.epoch += 1;
        let k = count.max(1) as f64;
        Ok(EpochReport {
            epoch,
            lr,
            loss: sum[0] / k,
            recon: sum[1] / k,
            kl: sum[2] / k,
            skipped,
            val: None,
            val_mse: None,
            frames_per_s: frames as f64 / t0.elapsed().as_secs_f64(),
        })
    }

    /// Occupancy metrics and MSE of deterministic reconstructions of the val split.
    pub fn validate(&self) -> Result<Option<(Occupancy, f64)>, TrainError> {
        let Some(val) = &self.val else { return Ok(None) };
        let (mut c, mut mse, mut n) = ((0.0, 0.0, 0.0), 0.0, 0usize);
        for batch in val.epoch(0) {
            let batch = batch?;
            let x = self.input(&batch.target);
            let recon = tch::no_grad(|| self.amp.run(|| self.vae.forward_t(&x, false))).to_kind(Kind::Float);
            let (tp, fp, fn_) = Occupancy::counts(&recon, &x, self.config.iou_threshold);
            c = (c.0 + tp, c.1 + fp, c.2 + fn_);
            mse += recon.mse_loss(&x, tch::Reduction::Mean).double_value(&[]) * batch.ids.len() as f64;
            n += batch.ids.len();
        }
        Ok(Some((Occupancy::from_counts(c.0, c.1, c.2), mse / n.max(1) as f64)))
    }

    /// Writes a checkpoint: model, AdamW moments, and in the metadata the
    /// config and counters (scaler, cursor, accumulation phase, RNG counter).
    pub fn save_checkpoint(&self, path: &Path) -> Result<(), TrainError> {
        let mut tensors = weights::named_variables(&self.vs);
        tensors.extend(self.opt.state_tensors());
        let meta = HashMap::from([
            ("format".to_string(), FORMAT.to_string()),
            ("config".to_string(), serde_json::to_string(&self.config).expect("config serialises")),
            ("state".to_string(), serde_json::to_string(&self.state).expect("state serialises")),
        ]);
        Ok(weights::save_atomic(path, &tensors, &meta)?)
    }

    /// Trains until `epoch_end` epochs are complete: validation, `last`
    /// checkpoint every epoch, `best` when validation IoU improves, and the
    /// loss plot. Returns each epoch's report.
    pub fn fit_until(&mut self, epoch_end: usize) -> Result<Vec<EpochReport>, TrainError> {
        let mut reports = Vec::new();
        while self.state.epoch < epoch_end.min(self.config.epochs) {
            let mut report = self.train_epoch()?;
            if let Some((occ, mse)) = self.validate()? {
                report.val = Some(occ);
                report.val_mse = Some(mse);
                self.history.epochs.push((report.epoch as f64, occ));
                if self.state.best_iou.is_none_or(|b| occ.iou > b) {
                    self.state.best_iou = Some(occ.iou);
                    self.save_checkpoint(&self.out.join("best.safetensors"))?;
                }
            }
            self.save_checkpoint(&self.out.join("last.safetensors"))?;
            log::info!("{}", summary_line(&report));
            reports.push(report);
        }
        self.plot()?;
        Ok(reports)
    }

    /// Trains every remaining epoch of the config.
    pub fn fit(&mut self) -> Result<Vec<EpochReport>, TrainError> {
        self.fit_until(self.config.epochs)
    }

    /// Loss curves (per optimizer step) and validation metrics (per epoch)
    /// as `loss.png` in the output directory.
    pub fn plot(&self) -> Result<(), TrainError> {
        let steps = &self.history.steps;
        let kl_w = self.config.vae.kl_weight;
        let series = |name: &str, k: usize, f: &dyn Fn(&StepPoint) -> f64| Series {
            name: name.into(),
            points: steps.iter().map(|s| (s.0, f(s))).collect(),
            color: COLORS[k],
        };
        let top = line_chart(
            "VAE TRAINING LOSS",
            "OPTIMIZER STEP",
            &[series("LOSS", 0, &|s| s.1), series("RECON", 1, &|s| s.2), series("KL X WEIGHT", 2, &|s| s.3 * kl_w)],
            true,
        );
        let ep = &self.history.epochs;
        let metric = |name: &str, k: usize, f: fn(&Occupancy) -> f64| Series {
            name: name.into(),
            points: ep.iter().map(|(e, o)| (*e, f(o))).collect(),
            color: COLORS[k],
        };
        let bottom = line_chart(
            "VALIDATION OCCUPANCY AT THRESHOLD",
            "EPOCH",
            &[metric("IOU", 0, |o| o.iou), metric("PRECISION", 1, |o| o.precision), metric("RECALL", 2, |o| o.recall)],
            false,
        );
        let mut c = Canvas::new(top.width, top.height + bottom.height);
        c.blit(&top, 0, 0);
        c.blit(&bottom, 0, top.height);
        let path = self.out.join("loss.png");
        c.save_png(&path).map_err(|source| TrainError::Io { path, source })
    }
}

/// One line describing an epoch.
pub fn summary_line(r: &EpochReport) -> String {
    let val = match (r.val, r.val_mse) {
        (Some(o), Some(m)) => {
            format!(" | val iou {:.4} precision {:.4} recall {:.4} mse {:.4e}", o.iou, o.precision, o.recall, m)
        }
        _ => String::new(),
    };
    format!(
        "epoch {} lr {:.2e} loss {:.4e} recon {:.4e} kl {:.4} skipped {} | {:.1} frames/s{val}",
        r.epoch, r.lr, r.loss, r.recon, r.kl, r.skipped, r.frames_per_s
    )
}

pub(crate) fn progress_bar(n: usize, start: usize, epoch: usize, enabled: bool) -> indicatif::ProgressBar {
    let bar = if enabled { indicatif::ProgressBar::new(n as u64) } else { indicatif::ProgressBar::hidden() };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {elapsed_precise} {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(format!("epoch {epoch}"));
    bar.set_position(start as u64);
    bar
}

/// Appends rows to a CSV log, writing the header when the file is new.
pub(crate) struct CsvLog {
    file: std::fs::File,
    path: PathBuf,
}

const CSV_HEADER: &str =
    "epoch,step,micro_step,lr,loss,recon,kl,grad_norm,loss_scale,skipped_total,frames_per_s,rss_anon_mib,elapsed_s";

impl CsvLog {
    pub(crate) fn open(path: &Path, header: &str) -> Result<CsvLog, TrainError> {
        let io = |source| TrainError::Io { path: path.into(), source };
        let new = !path.exists();
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(io)?;
        if new {
            writeln!(file, "{header}").map_err(io)?;
        }
        Ok(CsvLog { file, path: path.into() })
    }

    pub(crate) fn row(&mut self, values: &[f64]) -> Result<(), TrainError> {
        let line = values.iter().map(|v| format!("{v}")).collect::<Vec<_>>().join(",");
        writeln!(self.file, "{line}").map_err(|source| TrainError::Io { path: self.path.clone(), source })
    }
}
