//! Mixed precision that fits the device: float16 autocast with loss scaling
//! on CUDA; bfloat16 autocast on a CPU that runs bf16 natively; float32 on a
//! CPU that would only emulate bf16 (~20x slower), unless asked for anyway.

use tch::Device;

use super::TrainError;
use crate::memory::Precision;
use crate::sys::{cpu_bf16, CpuBf16};

/// Mixed precision as asked for (a runtime choice, not part of the recipe).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AmpMode {
    /// On where the device runs half precision natively: CUDA, or a CPU with
    /// `avx512_bf16`/`amx_bf16`.
    #[default]
    Auto,
    /// On (forces emulated bf16 on a CPU without bf16 instructions).
    On,
    /// float32 throughout.
    Off,
}

impl std::str::FromStr for AmpMode {
    type Err = TrainError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(AmpMode::Auto),
            "on" | "true" => Ok(AmpMode::On),
            "off" | "false" => Ok(AmpMode::Off),
            other => Err(TrainError::Config(format!("amp {other:?}: use auto, on or off"))),
        }
    }
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
    /// The mode for `enabled` on `device` (no CPU check: `enabled` is obeyed).
    pub fn for_device(enabled: bool, device: Device) -> Amp {
        match (enabled, device) {
            (false, _) => Amp::Off,
            (true, Device::Cpu) => Amp::CpuBf16,
            (true, _) => Amp::CudaF16,
        }
    }

    /// Resolves `mode` on `device` for a CPU of kind `cpu`, with one line
    /// saying what was chosen and why.
    pub fn resolve_for(mode: AmpMode, device: Device, cpu: CpuBf16) -> (Amp, String) {
        match (mode, device) {
            (AmpMode::Off, _) => (Amp::Off, "precision f32 (amp off)".into()),
            (_, Device::Cuda(_)) => (Amp::CudaF16, "precision f16 autocast with loss scaling (CUDA)".into()),
            (AmpMode::On, _) if cpu == CpuBf16::Emulated => {
                (Amp::CpuBf16, format!("precision bf16 autocast, forced by --amp on, though {}", cpu.explain()))
            }
            (AmpMode::On, _) => (Amp::CpuBf16, format!("precision bf16 autocast ({})", cpu.explain())),
            (AmpMode::Auto, _) if cpu == CpuBf16::Native => {
                (Amp::CpuBf16, format!("precision bf16 autocast ({})", cpu.explain()))
            }
            (AmpMode::Auto, _) => (Amp::Off, format!("precision f32: {}; --amp on forces bf16", cpu.explain())),
        }
    }

    /// [`Amp::resolve_for`] on this machine's CPU.
    pub fn resolve(mode: AmpMode, device: Device) -> (Amp, String) {
        Amp::resolve_for(mode, device, cpu_bf16())
    }

    /// The planner's precision.
    pub fn precision(self) -> Precision {
        if self == Amp::Off {
            Precision::F32
        } else {
            Precision::Amp
        }
    }

    /// Runs `f` under this autocast mode; CPU autocast is switched off again
    /// even when `f` panics.
    pub fn run<T>(self, f: impl FnOnce() -> T) -> Result<T, TrainError> {
        match self {
            Amp::Off => Ok(f()),
            Amp::CudaF16 => Ok(tch::autocast(true, f)),
            Amp::CpuBf16 => {
                struct Reset;
                impl Drop for Reset {
                    fn drop(&mut self) {
                        // the switch only fails on a libtorch bug; nothing to do about it here
                        let _ = crate::sys::shim::set_cpu_autocast(false);
                    }
                }
                crate::sys::shim::set_cpu_autocast(true)?;
                let _reset = Reset;
                Ok(f())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amp_follows_the_cpu_unless_forced() {
        let cpu = Device::Cpu;
        assert_eq!(Amp::resolve_for(AmpMode::Auto, cpu, CpuBf16::Native).0, Amp::CpuBf16);
        let (amp, why) = Amp::resolve_for(AmpMode::Auto, cpu, CpuBf16::Emulated);
        assert_eq!(amp, Amp::Off);
        assert!(why.contains("f32") && why.contains("avx512_bf16"), "{why}");
        assert_eq!(Amp::resolve_for(AmpMode::On, cpu, CpuBf16::Emulated).0, Amp::CpuBf16);
        assert_eq!(Amp::resolve_for(AmpMode::Off, cpu, CpuBf16::Native).0, Amp::Off);
        assert_eq!(Amp::resolve_for(AmpMode::Auto, Device::Cuda(0), CpuBf16::Emulated).0, Amp::CudaF16);
        assert_eq!("on".parse::<AmpMode>().unwrap(), AmpMode::On);
        assert!("maybe".parse::<AmpMode>().is_err());
    }
}
