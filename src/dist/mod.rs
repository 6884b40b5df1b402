//! Layer 1, data parallelism across processes on PyTorch's c10d: the
//! process group torchrun's environment describes (a TCPStore, then Gloo
//! for CPU tensors or NCCL for CUDA ones, through the C++ shim), the
//! collectives the trainers use, and gradient averaging in flat buckets.
//! A process started without torchrun's variables is world size 1 and
//! communicates nothing. Imports only `sys`.

pub mod buckets;
pub mod env;
pub mod group;

pub use buckets::{GradBuckets, Reduced, DEFAULT_BUCKET_BYTES};
pub use env::{DistEnv, DEFAULT_TIMEOUT};
pub use group::{Dist, ReduceOp};

/// Errors of the `dist` layer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DistError {
    /// A torchrun variable is missing or malformed.
    #[error("torchrun environment: {var}={value:?}: {problem}")]
    Env {
        /// The variable.
        var: &'static str,
        /// Its value (empty when unset).
        value: String,
        /// What is wrong.
        problem: String,
    },
    /// Joining the process group failed (rendezvous timed out, address in
    /// use, backend missing).
    #[error(
        "rank {rank} of {world} could not join the process group at {addr} ({backend}, timeout {timeout_s} s): {message}"
    )]
    Init {
        /// This rank.
        rank: usize,
        /// World size.
        world: usize,
        /// `host:port` of the store.
        addr: String,
        /// `gloo` or `nccl`.
        backend: &'static str,
        /// The timeout.
        timeout_s: f64,
        /// libtorch's message.
        message: String,
    },
    /// A collective failed: a peer died or left, or the timeout passed.
    #[error(
        "rank {rank} of {world}: {op} failed (a peer rank died, left, or did not arrive within {timeout_s} s): {message}"
    )]
    Collective {
        /// The collective.
        op: &'static str,
        /// This rank.
        rank: usize,
        /// World size.
        world: usize,
        /// The timeout.
        timeout_s: f64,
        /// libtorch's message.
        message: String,
    },
}
