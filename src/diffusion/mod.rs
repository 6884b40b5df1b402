//! Layer 5, diffusion in the VAE's latent space: the EDM objective and
//! preconditioning ([`edm`]), ODE samplers ([`sampler`]), consistency
//! distillation's parametrisation, teacher step and sampler
//! ([`consistency`]), the decoded-space loss ([`decoded`]), latent
//! normalisation ([`norm`]), and the cache of
//! latents a frozen VAE wrote ([`latents`]). Imports [`crate::sys`],
//! [`crate::io`], [`crate::data`] and [`crate::model`].

pub mod consistency;
pub mod decoded;
pub mod edm;
pub mod latents;
pub mod norm;
pub mod sampler;

use std::path::PathBuf;

pub use consistency::{CdLoss, Consistency, ConsistencyConfig, TeacherSolver, Weighting};
pub use decoded::DecodedLossConfig;
pub use edm::{EdmConfig, ExtraLoss};
pub use latents::{encode_frame, CacheManifest, LatentCache};
pub use norm::{ChannelMoments, ChannelNorm, LatentNorm};
pub use sampler::{integrate, sample, Sampler, Solver};

/// Errors of the diffusion layer.
#[derive(Debug, thiserror::Error)]
pub enum DiffusionError {
    /// An invalid setting.
    #[error("invalid diffusion config: {0}")]
    Config(String),
    /// The latent cache was written with another VAE, is incomplete, or damaged.
    #[error("latent cache {dir}: {reason}")]
    Cache {
        /// Cache directory.
        dir: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A latent file failed to read or decode.
    #[error(transparent)]
    Format(#[from] crate::io::FormatError),
    /// Reading frames failed.
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
    /// The VAE could not encode or decode a grid.
    #[error(transparent)]
    Model(#[from] crate::model::ModelError),
}
