//! The training loop every trainer shares, over an [`Objective`]:
//! micro-steps with gradient accumulation (a shorter last group steps too),
//! mixed precision with loss scaling, clipping, AdamW on a cosine schedule,
//! an optional EMA of the weights, non-finite batches skipped (a streak
//! stops the run), the memory plan checked at start (a run that cannot fit
//! is refused unless forced), out-of-memory steps retried with the
//! planner's fallback, exact resume from any optimizer step, interruption
//! that saves first, CSV logs, a progress bar, a loss plot and atomic
//! checkpoints (`last` before validation, `best` by the validation score).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use tch::{Device, Tensor};

use super::agree::{agree, code_version, leaves};
use super::checkpoint::{self, Checkpoint, TrainState};
use super::logs::{self, CsvLog};
use super::objective::Objective;
use super::optim::{apply_accumulated, cosine_lr, AdamW, Ema, GradScaler};
use super::precision::{Amp, AmpMode};
use super::recipe::Recipe;
use super::runtime::Runtime;
use super::{signal, TrainError};
use crate::dist::{GradBuckets, ReduceOp, DEFAULT_BUCKET_BYTES};
use crate::io::safetensors::{load_into, named_variables};
use crate::io::FolderLock;
use crate::memory::{self, gib, Plan, Planner};
use crate::model::Checkpointing;
use crate::sys::mix_seed;

/// Files a run writes into its output directory.
pub const RUN_FILES: [&str; 5] = ["last.safetensors", "best.safetensors", "train_log.csv", "val_log.csv", "loss.png"];

/// One epoch's summary.
#[derive(Debug, Clone, PartialEq)]
pub struct EpochReport {
    /// Epoch index (0-based).
    pub epoch: usize,
    /// Learning rate used.
    pub lr: f64,
    /// Mean of each loss part over the finite batches, by column name.
    pub losses: Vec<(String, f64)>,
    /// Batches skipped this epoch.
    pub skipped: usize,
    /// Validation metrics by column name (empty without validation).
    pub val: Vec<(String, f64)>,
    /// Frames per second of training (this rank's).
    pub frames_per_s: f64,
    /// Seconds per optimizer step spent averaging gradients over ranks
    /// (packing, the all-reduce and waiting for the slowest rank; 0 in a
    /// world of one).
    pub allreduce_s_per_step: f64,
    /// Gradient bytes all-reduced per optimizer step.
    pub allreduce_bytes: u64,
}

impl EpochReport {
    /// A loss part's mean (`loss`, `recon`, `kl`, ...).
    pub fn loss(&self, name: &str) -> Option<f64> {
        self.losses.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
    }

    /// A validation metric (`iou`, ...).
    pub fn metric(&self, name: &str) -> Option<f64> {
        self.val.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
    }

    /// One line describing the epoch.
    pub fn summary(&self) -> String {
        let join = |v: &[(String, f64)]| v.iter().map(|(n, x)| format!("{n} {x:.4e}")).collect::<Vec<_>>().join(" ");
        let val = if self.val.is_empty() { String::new() } else { format!(" | val {}", join(&self.val)) };
        let comm = if self.allreduce_bytes == 0 {
            String::new()
        } else {
            let mib = self.allreduce_bytes as f64 / 1048576.0;
            format!(" | all-reduce {:.3} s/step ({mib:.1} MiB)", self.allreduce_s_per_step)
        };
        format!(
            "epoch {} lr {:.2e} {} skipped {} | {:.1} frames/s{comm}{val}",
            self.epoch,
            self.lr,
            join(&self.losses),
            self.skipped,
            self.frames_per_s
        )
    }
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

/// Trains an [`Objective`]; see the module docs.
pub struct Trainer<O: Objective> {
    objective: O,
    runtime: Runtime,
    device: Device,
    amp: Amp,
    opt: AdamW,
    ema: Option<Ema>,
    state: TrainState,
    /// Frames per forward/backward (the batch, or less after an
    /// out-of-memory fallback split it).
    micro_batch: usize,
    checkpointing: Checkpointing,
    train_log: CsvLog,
    val_log: CsvLog,
    started: Instant,
    /// Seconds of training before this process (the log's clock continues).
    elapsed_before: f64,
    fault_oom: Option<OomFault>,
    /// Gradient averaging over ranks.
    buckets: GradBuckets,
    /// This epoch's all-reduce seconds, bytes per step and steps.
    comm: (f64, u64, usize),
    /// The output folder's lock (rank 0), released when the trainer drops.
    _lock: Option<FolderLock>,
}

impl<O: Objective> std::fmt::Debug for Trainer<O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trainer").field("recipe", self.objective.recipe()).field("state", &self.state).finish()
    }
}

impl<O: Objective> Trainer<O> {
    /// A new run of `objective` (its model freshly initialised): checks the
    /// runtime, picks the precision, plans the memory and refuses a run
    /// that cannot fit (unless forced), and refuses an output directory
    /// holding another run's files (unless `overwrite`). Nothing is written
    /// before the first optimizer step.
    pub fn new(objective: O, runtime: Runtime) -> Result<Trainer<O>, TrainError> {
        let out = runtime.out.clone();
        let main = runtime.dist.is_main(); // rank 0 alone owns the files
        let lock = Self::lock(&runtime)?;
        let existing: Vec<&str> = RUN_FILES.iter().copied().filter(|f| main && out.join(f).exists()).collect();
        if !existing.is_empty() {
            if !runtime.overwrite {
                return Err(TrainError::OutputExists { dir: out, files: existing.join(", ") });
            }
            for f in existing {
                std::fs::remove_file(out.join(f)).map_err(|source| TrainError::Io { path: out.join(f), source })?;
            }
            log::warn!("--overwrite: removed the previous run's files in {}", out.display());
        }
        Self::build(objective, runtime, TrainState::default(), lock, None)
    }

    /// What every rank must share: each recipe field, the objective's
    /// metadata, the datasets, the resume checkpoint and the code's version.
    fn identity(objective: &O, resumed: Option<String>) -> BTreeMap<String, String> {
        let mut fields = BTreeMap::new();
        leaves("recipe", &serde_json::to_value(objective.recipe()).expect("recipes serialise"), &mut fields);
        for (k, v) in objective.metadata() {
            fields.insert(format!("metadata.{k}"), v);
        }
        for (name, ds) in objective.datasets() {
            fields.insert(format!("{name} data"), ds.identity());
        }
        fields.insert("resumed from".into(), resumed.unwrap_or_else(|| "(a new run)".into()));
        fields.insert("code version".into(), code_version());
        fields
    }

    /// Rank 0's hold on the output folder for the run's life: a second run
    /// into it, in any process, is refused naming this one.
    fn lock(runtime: &Runtime) -> Result<Option<FolderLock>, TrainError> {
        let what = format!("training {}", <O::Recipe as Recipe>::KIND);
        Ok(if runtime.dist.is_main() { Some(FolderLock::acquire(&runtime.out, &what)?) } else { None })
    }

    /// Continues the run saved in `ckpt` (its recipe built `objective`):
    /// weights, moments, EMA, loss scaler and counters are restored, the
    /// logs cut back to the checkpoint's step.
    pub fn resume(objective: O, runtime: Runtime, ckpt: &Checkpoint) -> Result<Trainer<O>, TrainError> {
        let lock = Self::lock(&runtime)?;
        let saved = ckpt.metadata.get("world_size").and_then(|w| w.parse::<usize>().ok()).unwrap_or(1);
        let now = runtime.dist.world_size();
        if saved != now {
            if ckpt.state.cursor != 0 {
                let path = ckpt.path.clone();
                return Err(TrainError::WorldSize { path, saved, now, cursor: ckpt.state.cursor });
            }
            log::warn!(
                "{} was saved by {saved} rank(s); continuing with {now} (the batch per step changes)",
                ckpt.path.display()
            );
        }
        let resumed = format!(
            "a checkpoint at epoch {} step {} (tensors hash {})",
            ckpt.state.epoch,
            ckpt.state.step,
            crate::io::safetensors::weights_hash(&ckpt.tensors)
        );
        let mut t = Self::build(objective, runtime, ckpt.state, lock, Some(resumed))?;
        load_into(t.objective.var_store(), "", &ckpt.model_tensors(), &ckpt.path)?;
        t.objective.load_aux(&ckpt.prefixed("aux"), &ckpt.path)?;
        t.opt.load_state(&ckpt.tensors, ckpt.state.step, &ckpt.path)?;
        if let Some(ema) = &mut t.ema {
            ema.load_state(&ckpt.tensors, &ckpt.path)?;
        }
        t.state = ckpt.state;
        let scaler_on = t.amp == Amp::CudaF16;
        if t.state.scaler.enabled != scaler_on {
            // the run moved between CUDA f16 and another precision: a fresh scaler
            let o = t.objective.recipe().optim();
            t.state.scaler = GradScaler::new(scaler_on, o.init_scale, o.growth_interval);
        }
        t.train_log.keep_upto("step", t.state.step as f64)?;
        t.val_log.keep_upto("epoch", t.state.epoch as f64 - 1.0)?;
        t.elapsed_before = t.train_log.last("elapsed_s").unwrap_or(0.0);
        Ok(t)
    }

    fn build(
        objective: O,
        runtime: Runtime,
        state: TrainState,
        lock: Option<FolderLock>,
        resumed: Option<String>,
    ) -> Result<Trainer<O>, TrainError> {
        let device = runtime.validate()?;
        objective.recipe().validate()?;
        memory::configure_cuda_allocator();
        if runtime.lean_host_memory {
            memory::return_large_frees();
        }
        let (amp, why) = match objective.cpu_autocast() {
            Err(reason) if runtime.amp == AmpMode::Auto && device == Device::Cpu => {
                (Amp::Off, format!("precision f32: {reason}; --amp on forces bf16"))
            }
            _ => Amp::resolve(runtime.amp, device),
        };
        log::info!("{why}");
        let removed = if runtime.dist.is_main() {
            crate::io::remove_stale_temps(&runtime.out).unwrap_or_default()
        } else {
            Vec::new()
        };
        for p in removed {
            log::warn!("removed {}, left by a writer that was killed", p.display());
        }
        agree(&runtime.dist, &Self::identity(&objective, resumed))?;
        let optim = objective.recipe().optim().clone();
        let params = named_variables(objective.var_store());
        // identical initial weights on every rank, before the EMA copies them
        for (_, p) in &params {
            runtime.dist.broadcast(p, 0)?;
        }
        let ema = optim.ema_decay.map(|d| Ema::new(&params, d, optim.ema_warmup));
        let opt = AdamW::new(params, optim.weight_decay);
        let mut state = state;
        state.scaler = GradScaler::new(amp == Amp::CudaF16, optim.init_scale, optim.growth_interval);
        let mut losses: Vec<String> = ["epoch", "step", "micro_step", "lr"].map(String::from).to_vec();
        losses.extend(objective.loss_columns().into_iter().map(|c| c.0));
        losses.extend(
            ["grad_norm", "loss_scale", "skipped_total", "frames_per_s", "rss_anon_mib", "elapsed_s"].map(String::from),
        );
        let mut metrics: Vec<String> = vec!["epoch".into(), "step".into()];
        metrics.extend(objective.metric_columns().into_iter().map(|c| c.0));
        fn cols(v: &[String]) -> Vec<&str> {
            v.iter().map(String::as_str).collect()
        }
        let train_log = CsvLog::new(&runtime.out.join("train_log.csv"), &cols(&losses));
        let val_log = CsvLog::new(&runtime.out.join("val_log.csv"), &cols(&metrics));
        let t = Trainer {
            micro_batch: optim.batch_size,
            checkpointing: runtime.checkpointing,
            objective,
            runtime,
            device,
            amp,
            opt,
            ema,
            state,
            train_log,
            val_log,
            started: Instant::now(),
            elapsed_before: 0.0,
            fault_oom: None,
            buckets: GradBuckets::new(DEFAULT_BUCKET_BYTES),
            comm: (0.0, 0, 0),
            _lock: lock,
        };
        t.check_memory()?;
        Ok(t)
    }

    /// The planner (device, loader settings) of this run.
    fn planner(&self) -> Planner {
        let (workers, prefetch) = self.objective.loader_threads();
        Planner { prefetch, workers, world_size: self.runtime.dist.world_size(), ..Planner::for_device(self.device) }
    }

    /// The memory plan of the current configuration (micro-batch and
    /// checkpointing included, after any out-of-memory fallback).
    pub fn plan(&self) -> Result<Plan, TrainError> {
        let run = self.objective.memory_run(self.micro_batch, self.amp.precision(), self.checkpointing);
        Ok(self.planner().plan(&run)?)
    }

    /// Logs the plan; refuses it when it exceeds the budget, unless forced.
    fn check_memory(&self) -> Result<(), TrainError> {
        let plan = self.plan()?;
        log::info!("{plan}");
        let budget = self.runtime.budget_bytes().or_else(|| memory::device_budget(self.device));
        let Some(budget) = budget.filter(|&b| !plan.fits(b)) else { return Ok(()) };
        let mut text = plan.to_string();
        let run = self.objective.memory_run(self.micro_batch, self.amp.precision(), self.checkpointing);
        if let Ok(f) = memory::fit(budget, &self.planner(), &run) {
            if let Some((changes, fixed)) = f.suggestion {
                let changes: Vec<String> = changes.iter().map(|c| c.to_string()).collect();
                text += &format!("\nfits with: {} ({})", changes.join(", "), gib(fixed.total()));
            }
        }
        if matches!(run.model, memory::ModelConfig::Vae(_)) {
            // the dense family's planner cannot know the frames' occupancy; say where the other one is
            text += "\nor the sparse VAE (train_sparse_vae), which computes on the occupied voxels alone and is \
                     planned from their counts (whole native frames in ~1 GiB on a CPU, README: Sparse models; \
                     `memory_plan --dataset-dir ROOT` plans it for these frames)";
        }
        if !self.runtime.force {
            return Err(TrainError::WontFit { budget: gib(budget), plan: text });
        }
        log::warn!("the plan exceeds {}; starting anyway (force)", gib(budget));
        Ok(())
    }

    /// The objective.
    pub fn objective(&self) -> &O {
        &self.objective
    }

    /// The recipe.
    pub fn recipe(&self) -> &O::Recipe {
        self.objective.recipe()
    }
    /// The runtime settings.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }
    /// Counters.
    pub fn state(&self) -> &TrainState {
        &self.state
    }
    /// Device in use.
    pub fn device(&self) -> Device {
        self.device
    }
    /// Mixed-precision mode in use.
    pub fn amp(&self) -> Amp {
        self.amp
    }
    /// Frames per forward/backward now.
    pub fn micro_batch(&self) -> usize {
        self.micro_batch
    }
    /// Checkpointing now (finer after an out-of-memory fallback).
    pub fn checkpointing(&self) -> Checkpointing {
        self.checkpointing
    }
    /// The EMA weights, when the recipe keeps an average.
    pub fn ema(&self) -> Option<&Ema> {
        self.ema.as_ref()
    }
    /// The output directory.
    pub fn out(&self) -> &Path {
        &self.runtime.out
    }

    /// Test hook: make steps fail with an out-of-memory error while `f(micro_batch, checkpointing)` is true.
    #[doc(hidden)]
    pub fn inject_out_of_memory(&mut self, f: impl Fn(usize, Checkpointing) -> bool + Send + 'static) {
        self.fault_oom = Some(Box::new(f));
    }

    /// One micro-step (forward + backward, gradients accumulate). `Ok(None)`:
    /// the input or loss was not finite and nothing changed. When an
    /// allocation fails mid-step, the gradients are restored, the planner's
    /// next fallback applied (half the micro-batch with the loss scaled to
    /// the same mean, or finer checkpointing) and the same step re-run with
    /// the same data and noise; with no fallback left the error carries the plan.
    pub fn micro_step(&mut self, batch: &O::Batch) -> Result<Option<Vec<f64>>, TrainError> {
        self.state.micro += 1;
        // seeded by the micro-step's place in the global order (ranks interleave
        // like their data shards), so N ranks draw what one process would
        let (rank, world) = (self.runtime.dist.rank() as u64, self.runtime.dist.world_size() as u64);
        let seed = mix_seed(self.objective.recipe().optim().seed, (self.state.micro - 1) * world + rank + 1);
        let Some(step) = self.objective.prepare(batch, seed)? else { return Ok(None) };
        // Gradients accumulated by earlier micro-steps, to restore when this
        // step fails after some of its backward ran (an allocation failure, or
        // a non-finite loss in a later part of a split batch).
        let grads_exist = self.opt.params().any(|p| p.grad().defined());
        let snapshot: Option<Vec<Tensor>> = (grads_exist && self.runtime.oom_fallback).then(|| {
            self.opt.params().map(|p| if p.grad().defined() { p.grad().copy() } else { Tensor::new() }).collect()
        });
        loop {
            let split = (self.micro_batch as i64) < self.objective.step_len(&step);
            let attempt = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.backward_split(&step)));
            let message = match attempt {
                Ok(Ok(Some(parts))) => return Ok(Some(parts)),
                Ok(Ok(None)) => {
                    if split {
                        self.restore_grads(snapshot.as_deref());
                    }
                    return Ok(None); // a non-finite loss: this batch contributes nothing
                }
                Ok(Err(e)) => return Err(e),
                Err(payload) => {
                    crate::sys::shim::reset_autocast()?;
                    let message = panic_message(payload.as_ref());
                    if !is_out_of_memory(&message) {
                        std::panic::resume_unwind(payload);
                    }
                    message
                }
            };
            if !self.runtime.oom_fallback {
                return Err(TrainError::OutOfMemory { message, plan: self.plan()?.to_string() });
            }
            self.restore_grads(snapshot.as_deref());
            self.apply_fallback(message)?;
        }
    }

    /// Forward and backward of a prepared step in micro-batches of
    /// `self.micro_batch` frames, each weighted by its share; `None` if a
    /// loss was not finite.
    fn backward_split(&self, step: &O::Step) -> Result<Option<Vec<f64>>, TrainError> {
        let n = self.objective.step_len(step);
        let base = self.state.scaler.scale / self.objective.recipe().optim().grad_accum as f64;
        let mut total: Vec<f64> = Vec::new();
        let mut start = 0;
        while start < n {
            let len = (self.micro_batch as i64).min(n - start);
            let share = len as f64 / n as f64;
            if self.fault_oom.as_ref().is_some_and(|f| f(self.micro_batch, self.checkpointing)) {
                panic!("CUDA out of memory (injected by a test) at micro-batch {len}");
            }
            let ck = self.checkpointing;
            let parts = self.amp.run(|| self.objective.backward(step, start, len, base * share, ck))?;
            if !parts.first().is_some_and(|t| t.is_finite()) {
                return Ok(None);
            }
            total.resize(parts.len(), 0.0);
            for (t, p) in total.iter_mut().zip(&parts) {
                *t += p * share;
            }
            start += len;
        }
        Ok(Some(total))
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
        let run = self.objective.memory_run(self.micro_batch, self.amp.precision(), self.checkpointing);
        let mp = self.planner().model(&run.model)?;
        let Some((batch, checkpointing, plan)) =
            memory::fallback(&mp, run.grid, run.batch, run.precision, run.checkpointing)
        else {
            let plan = mp.plan(run.grid, run.batch, run.precision, run.checkpointing);
            return Err(TrainError::OutOfMemory { message, plan: plan.to_string() });
        };
        self.micro_batch = batch;
        self.checkpointing = checkpointing;
        log::warn!("{message}: retrying the step with micro-batch {batch}, checkpointing {checkpointing}\n{plan}");
        Ok(())
    }

    /// Averages the accumulated gradients over the ranks (once per optimizer
    /// step: micro-steps do not communicate), then unscales, checks, clips
    /// and applies them and updates the EMA. Every rank holds the same
    /// gradients after the average, so the scaler's and the non-finite
    /// decisions agree. Returns the gradient norm and whether the step was taken.
    pub fn optimizer_step(&mut self, lr: f64) -> Result<(f64, bool), TrainError> {
        if self.runtime.dist.world_size() > 1 {
            let t0 = Instant::now();
            self.define_grads();
            let grads: Vec<Tensor> = self.opt.params().map(|p| p.grad()).collect();
            let done = self.buckets.average(&self.runtime.dist, &grads)?;
            self.comm = (self.comm.0 + t0.elapsed().as_secs_f64(), done.bytes, self.comm.2 + 1);
        }
        let clip = self.objective.recipe().optim().clip_grad_norm;
        let (norm, stepped) = apply_accumulated(&mut self.opt, &mut self.state.scaler, clip, lr);
        if stepped {
            if let Some(ema) = &mut self.ema {
                ema.update(&named_variables(self.objective.var_store()), self.state.step);
            }
            self.state.step += 1;
            self.objective.after_optimizer_step();
        }
        self.state.accum_phase = 0;
        Ok((norm, stepped))
    }

    /// Gives every parameter without a gradient (a rank whose micro-steps
    /// were all skipped) a zero one, so every rank reduces the same tensors.
    fn define_grads(&self) {
        let missing: Vec<Tensor> =
            self.opt.params().filter(|p| !p.grad().defined()).map(|p| p.shallow_clone()).collect();
        if missing.is_empty() {
            return;
        }
        let zero = missing.iter().map(|p| p.sum(p.kind()) * 0.0).reduce(|a, b| a + b).expect("not empty");
        zero.backward();
    }

    /// Whether any rank was asked to stop by a signal.
    fn stop_requested(&self) -> Result<Option<i32>, TrainError> {
        let local = signal::requested();
        if self.runtime.dist.world_size() == 1 {
            return Ok(local);
        }
        let mut v = [local.map_or(0.0, f64::from)];
        self.runtime.dist.all_reduce_f64(&mut v, ReduceOp::Max)?;
        Ok((v[0] > 0.0).then_some(v[0] as i32))
    }

    fn elapsed(&self) -> f64 {
        self.elapsed_before + self.started.elapsed().as_secs_f64()
    }

    /// Whether the runtime's step or time limit is reached (the time as
    /// rank 0 sees it, so every rank stops after the same step).
    fn at_step_limit(&self) -> Result<bool, TrainError> {
        if self.runtime.max_steps.is_some_and(|m| self.state.step >= m) {
            return Ok(true);
        }
        let Some(minutes) = self.runtime.max_minutes else { return Ok(false) };
        let mut v = [if self.runtime.dist.is_main() { self.elapsed() } else { 0.0 }];
        if self.runtime.dist.world_size() > 1 {
            self.runtime.dist.all_reduce_f64(&mut v, ReduceOp::Max)?;
        }
        Ok(v[0] >= minutes * 60.0)
    }

    /// Trains one epoch from the data cursor. Saves `last` every
    /// `save_every_steps` optimizer steps; when a signal asked to stop (and
    /// the runtime handles signals) saves `last` after the current optimizer
    /// step and returns [`TrainError::Interrupted`]; at the runtime's
    /// `max_steps` (or `max_minutes`) saves `last` and returns the epoch so far.
    pub fn train_epoch(&mut self) -> Result<EpochReport, TrainError> {
        let epoch = self.state.epoch;
        let optim = self.objective.recipe().optim().clone();
        let lr = cosine_lr(optim.lr, optim.min_lr, epoch, optim.epochs);
        let n = self.objective.batches_per_epoch();
        let parts = self.objective.loss_columns().len();
        let bar = logs::progress_bar(n, self.state.cursor, epoch, self.runtime.progress && self.runtime.dist.is_main());
        self.comm = (0.0, 0, 0);
        let (t0, mut frames, mut streak, mut skipped) = (Instant::now(), 0usize, 0usize, 0usize);
        let (mut sum, mut count) = (vec![0.0f64; parts], 0usize);
        let (mut group, mut group_n) = (vec![0.0f64; parts], 0usize);
        if n == 0 {
            return Err(TrainError::Config("the training split yields no batch".into()));
        }
        let mut it = self.objective.batches(epoch, self.state.cursor);
        for batch in it.by_ref() {
            let batch = batch?;
            let b = self.state.cursor;
            let ids = self.objective.batch_ids(&batch);
            frames += ids.len();
            match self.micro_step(&batch)? {
                Some(p) => {
                    streak = 0;
                    for (acc, v) in sum.iter_mut().zip(&p) {
                        *acc += v;
                    }
                    for (acc, v) in group.iter_mut().zip(&p) {
                        *acc += v;
                    }
                    count += 1;
                    group_n += 1;
                }
                None => {
                    streak += 1;
                    skipped += 1;
                    self.state.skipped += 1;
                    let ids = ids.join(", ");
                    log::warn!("epoch {epoch} batch {b} ({ids}): non-finite input or loss, batch skipped");
                    if streak >= self.runtime.max_nonfinite_streak {
                        return Err(TrainError::NonFinite { count: streak, epoch, batch: b, frames: ids });
                    }
                }
            }
            drop(batch);
            self.state.cursor += 1;
            self.state.accum_phase += 1;
            if self.state.accum_phase == optim.grad_accum || self.state.cursor == n {
                let (norm, _) = self.optimizer_step(lr)?;
                let k = group_n.max(1) as f64;
                let mut row = vec![epoch as f64, self.state.step as f64, self.state.micro as f64, lr];
                row.extend(group.iter().map(|v| v / k));
                row.extend([
                    norm,
                    self.state.scaler.scale,
                    self.state.skipped as f64,
                    frames as f64 / t0.elapsed().as_secs_f64(),
                    memory::rss_anon() as f64 / (1u64 << 20) as f64,
                    self.elapsed(),
                ]);
                if self.state.cursor == n {
                    // the epoch is complete: its `last` is saved as epoch + 1
                    self.state.cursor = 0;
                    self.state.epoch += 1;
                }
                if self.runtime.dist.is_main() {
                    self.train_log.row(&row)?;
                }
                (group, group_n) = (vec![0.0; parts], 0);
                if self.runtime.save_every_steps.is_some_and(|k| self.state.step.is_multiple_of(k)) {
                    self.save_checkpoint(&self.runtime.out.join("last.safetensors"))?;
                }
                let stop = if self.runtime.handle_signals { self.stop_requested()? } else { None };
                if let Some(sig) = stop {
                    let path = self.runtime.out.join("last.safetensors");
                    self.save_checkpoint(&path)?;
                    bar.abandon();
                    return Err(TrainError::Interrupted { signal: signal::name(sig), step: self.state.step, path });
                }
                if self.state.cursor != 0 && self.at_step_limit()? {
                    self.save_checkpoint(&self.runtime.out.join("last.safetensors"))?;
                    log::info!(
                        "stopped at optimizer step {} (step or time limit), mid-epoch; --resume continues",
                        self.state.step
                    );
                    bar.inc(1);
                    break;
                }
            }
            let k = count.max(1) as f64;
            let shown: Vec<String> = self
                .objective
                .loss_columns()
                .iter()
                .zip(&sum)
                .map(|((name, _, _), v)| format!("{name} {:.4e}", v / k))
                .collect();
            bar.set_message(format!(
                "{} | {:.1} fr/s | rss {} MiB",
                shown.join(" "),
                frames as f64 / t0.elapsed().as_secs_f64(),
                memory::rss_anon() >> 20
            ));
            bar.inc(1);
        }
        drop(it);
        bar.finish_and_clear();
        let k = count.max(1) as f64;
        let losses = self.objective.loss_columns().into_iter().zip(&sum).map(|(c, v)| (c.0, v / k)).collect();
        Ok(EpochReport {
            epoch,
            lr,
            losses,
            skipped,
            val: Vec::new(),
            frames_per_s: frames as f64 / t0.elapsed().as_secs_f64(),
            allreduce_s_per_step: self.comm.0 / self.comm.2.max(1) as f64,
            allreduce_bytes: self.comm.1,
        })
    }

    /// The objective's validation metrics (by column name), or empty: each
    /// rank sums its shard's statistics (with the EMA's weights in place
    /// when the run keeps an EMA), the sums are all-reduced, the objective
    /// turns them into metrics.
    pub fn validate(&self) -> Result<Vec<(String, f64)>, TrainError> {
        // on the EMA's weights when the run keeps one (the weights that sample)
        let run = || self.objective.validate(self.amp);
        let sums = match &self.ema {
            Some(ema) => ema.swapped(self.objective.var_store(), run),
            None => run(),
        };
        let Some(mut sums) = sums.map_err(|e| TrainError::Validation { source: Box::new(e) })? else {
            return Ok(Vec::new());
        };
        self.runtime.dist.all_reduce_f64(&mut sums, ReduceOp::Sum)?;
        let values = self.objective.metrics(&sums);
        Ok(self.objective.metric_columns().into_iter().map(|c| c.0).zip(values).collect())
    }

    /// Writes a checkpoint: the model, EMA, AdamW moments, and in the
    /// metadata the recipe and the counters (scaler, cursor, RNG counter).
    pub fn save_checkpoint(&self, path: &Path) -> Result<(), TrainError> {
        if !self.runtime.dist.is_main() {
            return Ok(()); // rank 0 writes; every rank holds the same state
        }
        let mut tensors = named_variables(self.objective.var_store());
        if let Some(ema) = &self.ema {
            tensors.extend(ema.state_tensors());
        }
        tensors.extend(self.opt.state_tensors());
        tensors.extend(self.objective.aux_tensors().into_iter().map(|(k, t)| (format!("aux.{k}"), t)));
        let kind = <O::Recipe as Recipe>::KIND;
        let mut metadata = self.objective.metadata();
        metadata.insert("world_size".into(), self.runtime.dist.world_size().to_string());
        checkpoint::write(path, kind, self.objective.recipe(), &self.state, &tensors, &metadata)
    }

    /// Trains until `epoch_end` epochs (at most the recipe's) are complete:
    /// `last` after each epoch, then validation, `best` when the score
    /// improves, and the loss plot. Returns each epoch's report.
    pub fn fit_until(&mut self, epoch_end: usize) -> Result<Vec<EpochReport>, TrainError> {
        let end = epoch_end.min(self.objective.recipe().optim().epochs);
        if self.state.epoch >= end {
            log::info!(
                "nothing to do: {} of {} epochs are complete (raise --epochs to train further)",
                self.state.epoch,
                self.objective.recipe().optim().epochs
            );
            return Ok(Vec::new());
        }
        if self.runtime.handle_signals {
            signal::install();
        }
        let last = self.runtime.out.join("last.safetensors");
        let mut reports = Vec::new();
        while self.state.epoch < end && !self.at_step_limit()? {
            let mut report = self.train_epoch()?;
            if self.state.epoch == report.epoch {
                log::info!("{} (partial epoch)", report.summary());
                reports.push(report); // stopped mid-epoch at the step limit, `last` saved
                break;
            }
            self.save_checkpoint(&last)?;
            report.val = self.validate()?;
            if let Some(&(_, score)) = report.val.first() {
                let mut row = vec![report.epoch as f64, self.state.step as f64];
                row.extend(report.val.iter().map(|(_, v)| *v));
                if self.runtime.dist.is_main() {
                    self.val_log.row(&row)?;
                }
                if self.state.best.is_none_or(|b| score > b) {
                    self.state.best = Some(score);
                    self.save_checkpoint(&self.runtime.out.join("best.safetensors"))?;
                    self.save_checkpoint(&last)?;
                }
            }
            log::info!("{}", report.summary());
            reports.push(report);
        }
        self.plot()?;
        Ok(reports)
    }

    /// Trains every remaining epoch of the recipe.
    pub fn fit(&mut self) -> Result<Vec<EpochReport>, TrainError> {
        self.fit_until(self.objective.recipe().optim().epochs)
    }

    /// Draws `loss.png` from the whole logs.
    pub fn plot(&self) -> Result<(), TrainError> {
        if !self.runtime.dist.is_main() {
            return Ok(());
        }
        logs::plot(
            &self.runtime.out,
            &self.objective.title(),
            self.train_log.path(),
            &self.objective.loss_columns(),
            self.val_log_path().as_path(),
            &self.objective.metric_columns(),
        )
    }

    fn val_log_path(&self) -> PathBuf {
        self.runtime.out.join("val_log.csv")
    }
}
