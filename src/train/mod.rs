//! Layer 9, training: one engine ([`Trainer`]) runs the loop every trainer
//! shares over an [`Objective`] (the VAE's in [`vae`], the sparse VAE's in
//! [`sparse_vae`], latent diffusion's in
//! [`ldm`], consistency distillation's in [`cd`]); a run's [`recipe`] (what is trained) travels with every
//! [`checkpoint`], its [`Runtime`] (how this process runs it) does not.
//! Imports every layer below.

pub mod agree;
pub mod any_vae;
pub mod cd;
pub mod checkpoint;
pub mod engine;
pub mod geometry_val;
pub mod latents;
pub mod ldm;
pub mod logs;
pub mod objective;
pub mod optim;
pub mod precision;
pub mod recipe;
pub mod runtime;
pub mod signal;
pub mod sparse_vae;
pub mod vae;

use std::path::PathBuf;

pub use any_vae::{load_any_vae, LoadedVae};
pub use cd::{CdObjective, CdRecipe, CdTrainer, Teacher};
pub use checkpoint::{
    load_sampler, load_sampler_weights, load_vae, Checkpoint, LoadedSampler, SamplerWeights, TrainState,
};
pub use engine::{EpochReport, Trainer};
pub use latents::LatentSource;
pub use ldm::{LdmObjective, LdmRecipe, LdmTrainer};
pub use objective::Objective;
pub use precision::{Amp, AmpMode};
pub use recipe::{OptimRecipe, Recipe};
pub use runtime::{parse_device, Runtime};
pub use sparse_vae::{SparseVaeObjective, SparseVaeRecipe};
pub use vae::{VaeObjective, VaeRecipe, VaeTrainer};

/// Errors of training and of using trained models.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// An invalid recipe or runtime setting.
    #[error("invalid training config: {0}")]
    Config(String),
    /// The device asked for is not available.
    #[error("{0}")]
    Device(String),
    /// Reading or batching data failed (the file is named inside).
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
    /// A file could not be read or written (the file is named inside).
    #[error(transparent)]
    Format(#[from] crate::io::FormatError),
    /// A model could not be built.
    #[error(transparent)]
    Model(#[from] crate::model::ModelError),
    /// The memory planner failed.
    #[error(transparent)]
    Memory(#[from] crate::memory::MemoryError),
    /// The latent stage failed.
    #[error(transparent)]
    Diffusion(#[from] crate::diffusion::DiffusionError),
    /// A libtorch call failed in the shim.
    #[error(transparent)]
    Sys(#[from] crate::sys::SysError),
    /// Data-parallel communication failed (a peer died, left or timed out).
    #[error(transparent)]
    Dist(#[from] crate::dist::DistError),
    /// A mid-epoch checkpoint resumed with another number of ranks.
    #[error(
        "{path} was saved by {saved} rank(s) mid-epoch (batch {cursor}); resuming with {now} would replay other frames: resume with {saved} rank(s), or from an epoch's end"
    )]
    WorldSize {
        /// The checkpoint.
        path: PathBuf,
        /// Ranks that saved it.
        saved: usize,
        /// Ranks now.
        now: usize,
        /// Its data cursor.
        cursor: usize,
    },
    /// A data-parallel rank holds another recipe, data or code than rank 0.
    #[error(
        "rank {rank} disagrees with rank 0 on {field}: rank 0 has {rank0}, rank {rank} has {other}; every rank must run the same recipe, data, checkpoint and code"
    )]
    RanksDisagree {
        /// The first rank that differs.
        rank: usize,
        /// The field (`recipe.optim.lr`, `train data`, ...).
        field: String,
        /// Rank 0's value.
        rank0: String,
        /// That rank's value.
        other: String,
    },
    /// Validation failed (after the epoch's `last` checkpoint was saved).
    #[error("validation: {source}")]
    Validation {
        /// What failed.
        source: Box<TrainError>,
    },
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
    /// A checkpoint that cannot be used for what was asked.
    #[error("checkpoint {path}: {reason}")]
    Checkpoint {
        /// The checkpoint.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A setting given contradicts the one recorded with a model or run.
    #[error("{what} contradicts {recorded}, recorded in {path}: a trained model keeps its recipe")]
    Contradiction {
        /// The setting given.
        what: String,
        /// The recorded one.
        recorded: String,
        /// Where it is recorded.
        path: PathBuf,
    },
    /// The output directory holds another run.
    #[error(
        "{dir} already holds a run ({files}): pass --resume {dir}/last.safetensors to continue it, \
         --overwrite to replace it, or another --out"
    )]
    OutputExists {
        /// The directory.
        dir: PathBuf,
        /// The run files found.
        files: String,
    },
    /// The memory plan exceeds the budget (`force` starts anyway).
    #[error("the run does not fit in {budget}:\n{plan}\n(pass --force to start anyway)")]
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
    /// A signal stopped the run after it saved its progress.
    #[error("stopped by {signal} after optimizer step {step}; progress saved to {path} (resume with --resume)")]
    Interrupted {
        /// The signal's name.
        signal: &'static str,
        /// Optimizer steps done.
        step: u64,
        /// The checkpoint written.
        path: PathBuf,
    },
    /// A log, plot or output file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
}
