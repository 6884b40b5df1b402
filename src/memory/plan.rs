//! The memory planner: bytes a training configuration needs, before it runs,
//! and the largest or nearest configuration that fits a budget.
//!
//! Parameters, gradients and AdamW moments come from the built model's
//! variables; activations from a [`Tape`] the model records of itself (see
//! [`crate::model::trace`]); loader buffers from the loader's bound (`prefetch +
//! workers` batches of f16 grids, host memory).

use std::fmt;

use serde::{Deserialize, Serialize};
use tch::{nn, Device};

use super::MemoryError;
use crate::dist::{GradBuckets, DEFAULT_BUCKET_BYTES};
use crate::model::sparse::SparseVaeConfig;
use crate::model::trace::{Backend, Tape};
use crate::model::{Checkpointing, ModelError, Unet3d, UnetConfig, Vae3d, VaeConfig};

/// The model a plan is for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelConfig {
    /// The 3D VAE, trained on grids.
    Vae(VaeConfig),
    /// The latent UNet, trained on VAE latents (EMA copy included).
    Unet(UnetConfig),
    /// A consistency student of this UNet: the student, its EMA, the target
    /// network and the frozen teacher are held, the teacher's solver step
    /// and the target run without gradients before the student's step.
    Consistency(UnetConfig),
    /// The sparse occupancy VAE and the site counts of its worst frame.
    SparseVae(Box<super::sparse::SparseModel>),
}

impl ModelConfig {
    /// A short name: the VAE preset's (or `custom`), or `unet`.
    pub fn name(&self) -> String {
        match self {
            ModelConfig::Vae(v) => ["standard", "seed_baseline", "lightweight", "ultra_lightweight"]
                .into_iter()
                .find(|n| VaeConfig::named(n).as_ref() == Ok(v))
                .unwrap_or("custom_vae")
                .to_string(),
            ModelConfig::Unet(_) => "unet".into(),
            ModelConfig::Consistency(_) => "consistency".into(),
            ModelConfig::SparseVae(m) => crate::model::sparse::config::SPARSE_PRESETS
                .into_iter()
                .find(|n| SparseVaeConfig::named(n).as_ref() == Ok(&m.vae))
                .unwrap_or("custom_sparse_vae")
                .to_string(),
        }
    }
}

/// Numeric precision of the step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    /// float32 throughout.
    F32,
    /// Autocast: f16 on CUDA, bf16 on CPU; norms and losses in f32.
    Amp,
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Precision::F32 => "f32",
            Precision::Amp => "amp",
        })
    }
}

/// One training configuration to plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    /// The model.
    pub model: ModelConfig,
    /// Padded grid `(Z, H, W)` of the input (the VAE's) or latent (the UNet's).
    pub grid: [i64; 3],
    /// Frames per micro-batch.
    pub batch: usize,
    /// Precision.
    pub precision: Precision,
    /// Checkpointing (the UNet checkpoints per ResBlock whenever it is not off).
    pub checkpointing: Checkpointing,
}

impl Run {
    /// `backend,model,ZxHxW,batch,precision,checkpointing` (lower case): the
    /// key of a row of `docs/memory_measured.csv`.
    pub fn key(&self, backend: Backend) -> String {
        let [z, h, w] = self.grid;
        format!(
            "{backend:?},{},{z}x{h}x{w},{},{},{}",
            self.model.name(),
            self.batch,
            self.precision,
            self.checkpointing
        )
        .to_lowercase()
    }
}

/// Device and loader facts the plan depends on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Planner {
    /// Where the step runs.
    pub backend: Backend,
    /// Batches decoded ahead by the loader.
    pub prefetch: usize,
    /// Loader workers (each holds one batch being filled).
    pub workers: usize,
    /// Bytes the runtime takes before any tensor: the CUDA context, or the
    /// libtorch process on CPU.
    pub runtime: u64,
    /// Data-parallel ranks: above one, gradients are averaged through one
    /// reused bucket buffer ([`crate::dist::GradBuckets`]).
    pub world_size: usize,
}

/// CUDA context with lazy module loading (PyTorch 2.11, cu130), an
/// estimate: it is not a tensor and no allocator reports it.
pub const CUDA_RUNTIME_BYTES: u64 = 600 << 20;
/// Resident memory of a libtorch process before any tensor (measured on the
/// 2-core CPU machine: `baseline_rss` in `benches/memory_plan.rs`).
pub const CPU_RUNTIME_BYTES: u64 = 345 << 20;

impl Default for Planner {
    /// CUDA, the loader defaults (prefetch 2, one worker).
    fn default() -> Self {
        Planner::new(Backend::Cuda)
    }
}

/// A configuration's predicted memory, in bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// What was planned.
    pub run: Run,
    /// Where.
    pub backend: Backend,
    /// Trainable parameters (count).
    pub parameter_count: u64,
    /// float32 parameters (plus the EMA copy for the UNet).
    pub params: u64,
    /// float32 gradients (for the VAE trainer, plus the copy it keeps while
    /// a micro-step runs, so a step that fails half-way can be undone).
    pub grads: u64,
    /// AdamW's two moments.
    pub optimizer: u64,
    /// The batch on the device (float32) and the noise drawn for it.
    pub inputs: u64,
    /// Autocast's half copies of the weights, held through the step.
    pub amp_weights: u64,
    /// Activations kept for backward at the end of the forward pass.
    pub activations: u64,
    /// Peak transient on top: gradients in flight, recomputed segments,
    /// convolution scratch of the largest layer.
    pub transient: u64,
    /// The op at which the peak happens.
    pub peak_at: String,
    /// Loader buffers: `(prefetch + workers)` batches of f16 grids (host memory).
    pub loader: u64,
    /// The gradient bucket of data-parallel averaging (0 in a world of one).
    pub buckets: u64,
    /// Runtime before any tensor (see [`Planner::runtime`]).
    pub runtime: u64,
}

impl Plan {
    /// Peak bytes of tensors on the step's device: everything but the
    /// loader (on CPU the loader shares the memory: included).
    pub fn device_tensors(&self) -> u64 {
        let step = self.params
            + self.grads
            + self.optimizer
            + self.inputs
            + self.amp_weights
            + self.activations
            + self.transient
            + self.buckets;
        step + if self.backend.is_cpu() { self.loader } else { 0 }
    }

    /// What the budget must hold: tensors plus the runtime.
    pub fn total(&self) -> u64 {
        self.device_tensors() + self.runtime
    }

    /// Whether it fits `budget` bytes.
    pub fn fits(&self, budget: u64) -> bool {
        self.total() <= budget
    }

    /// One line: model, batch, precision, checkpointing, total.
    pub fn summary(&self) -> String {
        format!(
            "{} batch {} {} checkpointing {} grid {:?}: {} ({} tensors + {} runtime)",
            self.run.model.name(),
            self.run.batch,
            self.run.precision,
            self.run.checkpointing,
            self.run.grid,
            gib(self.total()),
            gib(self.device_tensors()),
            gib(self.runtime)
        )
    }
}

/// Bytes in `gib` GiB (a budget given in GiB).
pub fn gib_to_bytes(gib: f64) -> u64 {
    (gib * (1u64 << 30) as f64) as u64
}

/// `x.xx GiB`, or `x.x MiB` below 1 GiB.
pub fn gib(bytes: u64) -> String {
    if bytes >= 1 << 30 {
        format!("{:.2} GiB", bytes as f64 / (1u64 << 30) as f64)
    } else {
        format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
    }
}

impl fmt::Display for Plan {
    /// The breakdown, one item per line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let device = if self.backend.is_cpu() { "RAM" } else { "GPU" };
        writeln!(f, "memory plan ({device}): {}", self.summary())?;
        let rows = [
            ("parameters", self.params, format!("{} f32", self.parameter_count)),
            ("gradients", self.grads, String::new()),
            ("AdamW moments", self.optimizer, String::new()),
            ("batch + noise", self.inputs, String::new()),
            ("autocast weights", self.amp_weights, String::new()),
            ("activations kept", self.activations, String::new()),
            ("peak transient", self.transient, format!("at {}", self.peak_at)),
            ("gradient bucket", self.buckets, "data-parallel averaging".into()),
            (
                "loader buffers",
                self.loader,
                if self.backend.is_cpu() { "host".into() } else { "host, not on the GPU".into() },
            ),
            ("runtime", self.runtime, String::new()),
        ];
        for (name, bytes, note) in rows {
            if name == "gradient bucket" && bytes == 0 {
                continue; // a world of one
            }
            writeln!(f, "{}", format!("  {name:<18} {:>10}  {note}", gib(bytes)).trim_end())?;
        }
        write!(f, "  {:<18} {:>10}", "total", gib(self.total()))
    }
}

/// A model built once for planning many shapes.
enum Built {
    Vae(Vae3d),
    Unet(Unet3d),
}

/// Plans for one model config; builds the model (on CPU, no gradients) once.
pub struct ModelPlanner {
    planner: Planner,
    model: ModelConfig,
    built: Built,
    parameter_count: u64,
    _vs: nn::VarStore,
}

impl Planner {
    /// Loader defaults (prefetch 2, one worker) and the backend's runtime.
    pub fn new(backend: Backend) -> Planner {
        let runtime = if backend.is_cpu() { CPU_RUNTIME_BYTES } else { CUDA_RUNTIME_BYTES };
        Planner { backend, prefetch: 2, workers: 1, runtime, world_size: 1 }
    }

    /// The backend of a libtorch device (on CPU, this machine's kind of bf16).
    pub fn for_device(device: Device) -> Planner {
        Planner::new(if device == Device::Cpu { Backend::cpu() } else { Backend::Cuda })
    }

    /// Builds `model` for planning; fails on an invalid config.
    pub fn model(&self, model: &ModelConfig) -> Result<ModelPlanner, MemoryError> {
        let vs = nn::VarStore::new(Device::Cpu);
        let built = tch::no_grad(|| match model {
            ModelConfig::Vae(c) => Vae3d::new(&vs.root(), c).map(Built::Vae),
            ModelConfig::Unet(c) | ModelConfig::Consistency(c) => Unet3d::new(&vs.root(), c).map(Built::Unet),
            ModelConfig::SparseVae(_) => {
                Err(ModelError::Config("a sparse VAE is planned from site counts: use Planner::plan".into()))
            }
        })?;
        let parameter_count = vs.trainable_variables().iter().map(|t| t.numel() as u64).sum();
        Ok(ModelPlanner { planner: *self, model: model.clone(), built, parameter_count, _vs: vs })
    }

    /// Plans `run` (builds its model; use [`Planner::model`] to plan many shapes).
    pub fn plan(&self, run: &Run) -> Result<Plan, MemoryError> {
        if let ModelConfig::SparseVae(m) = &run.model {
            return Ok(super::sparse::plan(self, m, run)?);
        }
        Ok(self.model(&run.model)?.plan(run.grid, run.batch, run.precision, run.checkpointing))
    }
}

impl ModelPlanner {
    /// The planner's device and loader facts.
    pub fn planner(&self) -> &Planner {
        &self.planner
    }

    /// The model planned for.
    pub fn model_config(&self) -> &ModelConfig {
        &self.model
    }

    /// Trainable parameters (count).
    pub fn parameter_count(&self) -> u64 {
        self.parameter_count
    }

    /// The VAE, when this planner holds one.
    pub(crate) fn vae(&self) -> Option<&Vae3d> {
        match &self.built {
            Built::Vae(v) => Some(v),
            Built::Unet(_) => None,
        }
    }

    /// The plan for this model at `grid`, `batch`, `precision`, `checkpointing`.
    pub fn plan(&self, grid: [i64; 3], batch: usize, precision: Precision, checkpointing: Checkpointing) -> Plan {
        let p = &self.planner;
        let mut tape = Tape::new(p.backend, precision == Precision::Amp);
        let b = batch as i64;
        let weights = self.parameter_count * 4;
        let mut pairs = 0; // distillation: the noisy latent and the target, held through the step
        let (loader, ema, snapshot) = match &self.built {
            Built::Vae(vae) => {
                let c = vae.config().in_channels;
                vae.trace_step(&mut tape, [b, c, grid[0], grid[1], grid[2]], checkpointing);
                let frame = (c * grid.iter().product::<i64>()) as u64 * 2;
                // the VAE loader decodes targets only; the trainer copies the
                // accumulated gradients while a micro-step runs (to undo a failed one)
                ((p.prefetch + p.workers) as u64 * batch as u64 * frame, 0, weights)
            }
            Built::Unet(unet) => {
                let c = unet.config().latent_channels;
                unet.trace_step(&mut tape, [b, c, grid[0], grid[1], grid[2]], checkpointing != Checkpointing::Off);
                // latents are read per step (no prefetch); the EMA copy is f32,
                // distillation adds the target network and the teacher
                let copies = if let ModelConfig::Consistency(_) = self.model {
                    pairs = 2 * (b * c * grid.iter().product::<i64>()) as u64 * 4;
                    3
                } else {
                    1
                };
                (0, copies * weights, 0)
            }
        };
        let act = tape.simulate();
        Plan {
            run: Run { model: self.model.clone(), grid, batch, precision, checkpointing },
            backend: p.backend,
            parameter_count: self.parameter_count,
            params: weights + ema,
            grads: weights + snapshot,
            optimizer: 2 * weights,
            inputs: act.inputs + pairs,
            amp_weights: act.constant,
            activations: act.kept,
            transient: act.transient,
            peak_at: act.peak_at,
            loader,
            buckets: if p.world_size > 1 { GradBuckets::buffer_bytes(DEFAULT_BUCKET_BYTES, weights) } else { 0 },
            runtime: p.runtime,
        }
    }
}

/// [`Planner::plan`] on the default planner (CUDA, loader defaults).
pub fn plan(
    model: &ModelConfig,
    grid: [i64; 3],
    batch: usize,
    precision: Precision,
    checkpointing: Checkpointing,
) -> Result<Plan, MemoryError> {
    Planner::default().plan(&Run { model: model.clone(), grid, batch, precision, checkpointing })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vae(name: &str) -> ModelConfig {
        ModelConfig::Vae(VaeConfig::named(name).unwrap())
    }

    #[test]
    fn parameters_come_from_the_model() {
        let p = plan(&vae("ultra_lightweight"), [32, 64, 64], 1, Precision::F32, Checkpointing::Off).unwrap();
        assert_eq!(p.parameter_count, 694_788);
        assert_eq!(p.params, 694_788 * 4);
        assert_eq!(p.optimizer, 2 * p.params);
        let s = plan(&vae("seed_baseline"), [32, 64, 64], 1, Precision::F32, Checkpointing::Off).unwrap();
        assert_eq!(s.parameter_count, 7_652_628);
        let u = plan(&ModelConfig::Unet(UnetConfig::default()), [8, 16, 16], 1, Precision::F32, Checkpointing::Off)
            .unwrap();
        assert_eq!(u.parameter_count, 4_595_844);
        assert_eq!(u.params, 2 * u.grads, "the EMA copy");
        assert_eq!(u.loader, 0);
    }

    #[test]
    fn activations_scale_with_batch_and_grid() {
        let m = Planner::default().model(&vae("ultra_lightweight")).unwrap();
        let a = m.plan([16, 64, 64], 1, Precision::F32, Checkpointing::Off);
        let b = m.plan([16, 64, 64], 2, Precision::F32, Checkpointing::Off);
        let g = m.plan([32, 64, 64], 1, Precision::F32, Checkpointing::Off);
        assert_eq!(b.activations, 2 * a.activations);
        assert_eq!(g.activations, 2 * a.activations);
        assert_eq!(b.loader, 2 * a.loader);
        assert_eq!(a.loader, 3 * 4 * 16 * 64 * 64 * 2, "(prefetch 2 + 1 worker) f16 target grids");
    }

    #[test]
    fn checkpointing_and_amp_lower_the_plan() {
        let m = Planner::default().model(&vae("seed_baseline")).unwrap();
        let plain = m.plan([32, 128, 128], 1, Precision::F32, Checkpointing::Off);
        let ck = m.plan([32, 128, 128], 1, Precision::F32, Checkpointing::PerBlock);
        let amp = m.plan([32, 128, 128], 1, Precision::Amp, Checkpointing::Off);
        assert!(ck.device_tensors() < plain.device_tensors());
        assert!(amp.device_tensors() < plain.device_tensors());
        assert!(amp.amp_weights > 0 && plain.amp_weights == 0);
        assert!(ck.activations * 2 < plain.activations);
    }
}
