//! How one process runs a recipe: device, precision mode, memory
//! techniques, loader threads, progress, budget and safety switches. Never
//! saved with a checkpoint: a run may resume on another machine.

use std::path::PathBuf;

use tch::Device;

use super::precision::AmpMode;
use super::TrainError;
use crate::dist::Dist;
use crate::model::Checkpointing;

/// Runtime wiring of a training run; see the module docs.
#[derive(Debug, Clone, PartialEq)]
pub struct Runtime {
    /// Output directory (checkpoints, logs, plots).
    pub out: PathBuf,
    /// `auto`, `cpu`, `cuda` or `cuda:N`.
    pub device: String,
    /// Mixed precision: auto (where the device runs it natively), on, off.
    pub amp: AmpMode,
    /// Gradient checkpointing granularity.
    pub checkpointing: Checkpointing,
    /// Loader threads.
    pub num_workers: usize,
    /// Batches decoded ahead.
    pub prefetch: usize,
    /// Page-locked batches (CUDA only).
    pub pin_memory: bool,
    /// Draw a progress bar.
    pub progress: bool,
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
    /// Non-finite batches in a row that stop the run.
    pub max_nonfinite_streak: usize,
    /// Also save `last` every this many optimizer steps (mid-epoch).
    pub save_every_steps: Option<u64>,
    /// Stop (saving `last`, resumable exactly) once the run has taken this
    /// many optimizer steps in all, mid-epoch if need be.
    pub max_steps: Option<u64>,
    /// Stop the same way at the first optimizer step that ends after this
    /// many minutes of the run (wall clock, summed over resumes; validation
    /// included): equal time budgets for runs that compare.
    pub max_minutes: Option<f64>,
    /// Longest wait for a batch from the loader, in seconds (`None`: forever).
    pub read_timeout_s: Option<f64>,
    /// On SIGINT/SIGTERM finish the optimizer step, save `last` and stop
    /// (a second signal exits at once). For programs, not libraries.
    pub handle_signals: bool,
    /// Start a new run in an `out` that holds another run's files (they are
    /// removed first); without it such a start is refused.
    pub overwrite: bool,
    /// This process's rank in a data-parallel run ([`Dist::single`]: alone).
    /// Rank 0 alone writes files; gradients are averaged once per optimizer step.
    pub dist: Dist,
}

impl Default for Runtime {
    /// One loader worker, prefetch 2, no pinned memory, AMP where native,
    /// no checkpointing, out-of-memory fallback and lean host memory on.
    fn default() -> Self {
        Runtime {
            out: PathBuf::from("runs/train"),
            device: "auto".into(),
            amp: AmpMode::Auto,
            checkpointing: Checkpointing::Off,
            num_workers: 1,
            prefetch: 2,
            pin_memory: false,
            progress: true,
            memory_budget_gib: None,
            force: false,
            oom_fallback: true,
            lean_host_memory: true,
            max_nonfinite_streak: 3,
            save_every_steps: None,
            max_steps: None,
            max_minutes: None,
            read_timeout_s: Some(crate::data::loader::DEFAULT_READ_TIMEOUT.as_secs_f64()),
            handle_signals: false,
            overwrite: false,
            dist: Dist::single(),
        }
    }
}

impl Runtime {
    /// Refuses values that cannot run; resolves the device (which must exist).
    pub fn validate(&self) -> Result<Device, TrainError> {
        let bad = |m: String| Err(TrainError::Config(m));
        if self.num_workers == 0 || self.max_nonfinite_streak == 0 {
            return bad("num_workers and max_nonfinite_streak must be >= 1".into());
        }
        if let Some(b) = self.memory_budget_gib {
            if !(b > 0.0 && b.is_finite()) {
                return bad(format!("memory budget must be > 0 GiB, got {b}"));
            }
        }
        if self.save_every_steps == Some(0) || self.max_steps == Some(0) {
            return bad("save_every_steps and max_steps must be >= 1".into());
        }
        if let Some(m) = self.max_minutes {
            if !(m > 0.0 && m.is_finite()) {
                return bad(format!("max minutes must be > 0, got {m}"));
            }
        }
        if let Some(t) = self.read_timeout_s {
            if !(t > 0.0 && t.is_finite()) {
                return bad(format!("read timeout must be > 0 s, got {t}"));
            }
        }
        parse_device(&self.device)
    }

    /// The memory budget in bytes, when one was given.
    pub fn budget_bytes(&self) -> Option<u64> {
        self.memory_budget_gib.map(crate::memory::gib_to_bytes)
    }
}

/// Resolves a device name, refusing a CUDA device this machine does not have.
pub fn parse_device(name: &str) -> Result<Device, TrainError> {
    let device = match name {
        "auto" => return Ok(Device::cuda_if_available()),
        "cpu" => Device::Cpu,
        "cuda" | "gpu" => Device::Cuda(0),
        n => n
            .strip_prefix("cuda:")
            .and_then(|i| i.parse().ok())
            .map(Device::Cuda)
            .ok_or_else(|| TrainError::Device(format!("unknown device {n:?}: use auto, cpu, cuda or cuda:N")))?,
    };
    if let Device::Cuda(i) = device {
        let n = if tch::Cuda::is_available() { tch::Cuda::device_count() as usize } else { 0 };
        if i >= n {
            return Err(TrainError::Device(match n {
                0 => format!("--device {name}: no CUDA GPU is available here (use --device cpu or auto)"),
                n => format!("--device {name}: this machine has {n} CUDA device(s), 0..{}", n - 1),
            }));
        }
    }
    Ok(device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_resolve_or_are_refused_in_one_line() {
        assert_eq!(parse_device("cpu").unwrap(), Device::Cpu);
        assert!(matches!(parse_device("tpu"), Err(TrainError::Device(_))));
        if !tch::Cuda::is_available() {
            let e = parse_device("cuda").unwrap_err().to_string();
            assert!(e.contains("no CUDA GPU") && !e.contains('\n'), "{e}");
            assert_eq!(parse_device("auto").unwrap(), Device::Cpu);
        }
        let bad = Runtime { memory_budget_gib: Some(f64::NAN), ..Default::default() };
        assert!(bad.validate().is_err());
    }
}
