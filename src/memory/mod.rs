//! Layer 6, memory: the planner ([`plan()`], [`fit()`]) that predicts a run's
//! bytes from the model's own layers before it starts (the sparse VAE's from
//! the site counts of its frames, [`sparse`]), what to change when it
//! does not fit or runs out of memory, and measurement (resident set sizes,
//! a peak sampler, counted libtorch tensor bytes) to check it. Imports
//! [`crate::sys`] and [`crate::model`].

pub mod fit;
pub mod infer;
pub mod measure;
pub mod plan;
pub mod sparse;

pub use crate::model::trace::Backend;
pub use fit::{fallback, fit, largest_crop, Change, Fit, VAE_PRESETS};
pub use infer::{choose_tiling, InferencePlan, TILE_HEADROOM};
pub use measure::{
    configure_cuda_allocator, device_budget, proc_status_bytes, return_large_frees, rss_anon, PeakSampler,
    CUDA_ALLOC_CONF, MMAP_THRESHOLD,
};
pub use plan::{gib, gib_to_bytes, plan, ModelConfig, ModelPlanner, Plan, Planner, Precision, Run};
pub use sparse::{SparseModel, SparseSites};

/// Errors of the memory layer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MemoryError {
    /// The model to plan for cannot be built.
    #[error(transparent)]
    Model(#[from] crate::model::ModelError),
    /// Not even the smallest tile fits the budget.
    #[error("no tile fits {budget}: the smallest needs {smallest}")]
    NoTileFits {
        /// The budget (`x.xx GiB`).
        budget: String,
        /// The smallest tile's plan summary.
        smallest: String,
    },
}
