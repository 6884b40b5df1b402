//! What this CPU runs natively. libtorch's bfloat16 kernels are fast only on
//! CPUs with bf16 instructions (`avx512_bf16` or `amx_bf16`); elsewhere they
//! are emulated (~20x slower than float32) and take other code paths
//! (bf16 convolutions fall back to `slow_conv3d`, which unfolds its input),
//! so both the default precision and the memory plan depend on it.

use std::sync::OnceLock;

/// How this CPU runs bfloat16.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CpuBf16 {
    /// `avx512_bf16` or `amx_bf16`: oneDNN runs bf16 convolutions.
    Native,
    /// No bf16 instructions: libtorch emulates bf16 (slow, more scratch).
    Emulated,
}

impl CpuBf16 {
    /// The kind described by a `/proc/cpuinfo` `flags` line (or the whole file).
    pub fn from_flags(flags: &str) -> CpuBf16 {
        let native = flags.split_whitespace().any(|f| f == "avx512_bf16" || f == "amx_bf16");
        if native {
            CpuBf16::Native
        } else {
            CpuBf16::Emulated
        }
    }

    /// One line saying why, for logs: which flag was (not) found.
    pub fn explain(self) -> &'static str {
        match self {
            CpuBf16::Native => "this CPU has avx512_bf16/amx_bf16: bf16 runs natively",
            CpuBf16::Emulated => "this CPU has no avx512_bf16/amx_bf16: libtorch emulates bf16 (~20x slower than f32)",
        }
    }
}

impl std::fmt::Display for CpuBf16 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CpuBf16::Native => "native bf16",
            CpuBf16::Emulated => "emulated bf16",
        })
    }
}

/// This machine's kind, read once from `/proc/cpuinfo`; `RADVOX_CPU_BF16=native|emulated`
/// overrides it (to plan for another machine). Where cpuinfo cannot be
/// read, emulated (the safe assumption: f32 by default).
pub fn cpu_bf16() -> CpuBf16 {
    static KIND: OnceLock<CpuBf16> = OnceLock::new();
    *KIND.get_or_init(|| match std::env::var("RADVOX_CPU_BF16").as_deref() {
        Ok("native") => CpuBf16::Native,
        Ok("emulated") => CpuBf16::Emulated,
        _ => {
            let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
            info.lines().find(|l| l.starts_with("flags")).map(CpuBf16::from_flags).unwrap_or(CpuBf16::Emulated)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_decide_the_kind() {
        let avx2 = "flags\t: fpu vme sse sse2 avx avx2 fma avx512f avx512bw avx512_vnni";
        assert_eq!(CpuBf16::from_flags(avx2), CpuBf16::Emulated);
        assert_eq!(CpuBf16::from_flags(&format!("{avx2} avx512_bf16")), CpuBf16::Native);
        assert_eq!(CpuBf16::from_flags("flags : amx_bf16 amx_tile"), CpuBf16::Native);
        // a flag that merely contains the name does not count
        assert_eq!(CpuBf16::from_flags("flags : xavx512_bf16y"), CpuBf16::Emulated);
    }

    #[test]
    fn this_machine_agrees_with_cpuinfo() {
        if std::env::var("RADVOX_CPU_BF16").is_ok() {
            return;
        }
        let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let native = info.contains(" avx512_bf16") || info.contains(" amx_bf16");
        assert_eq!(cpu_bf16() == CpuBf16::Native, native);
    }
}
