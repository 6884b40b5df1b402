//! Layer 0, the machine: the C++ shim for the few libtorch calls tch lacks,
//! what this CPU can do natively, and seeded randomness shared by every
//! layer above. Imports nothing from the crate.

pub mod cpu;
pub mod seed;
pub mod shim;

pub use cpu::{cpu_bf16, CpuBf16};
pub use seed::{fnv1a, init_seed, integers, mix, mix_seed, normal, uniform, with_init_seed};

/// Errors the shim reports: a libtorch (C++) exception, caught on the C++
/// side and carried here as its message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SysError {
    /// A libtorch call threw; the shim caught it.
    #[error("libtorch {call} failed: {message}")]
    Torch {
        /// The shim entry point.
        call: &'static str,
        /// The exception's `what()`.
        message: String,
    },
}
