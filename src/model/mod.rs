//! Layer 4, the models on libtorch: shared 3D blocks, the VAE, the latent
//! UNet, the radar encoder, reconstruction losses, gradient checkpointing,
//! sparse networks on active voxels ([`sparse`]),
//! whole frames in [`tiles`], and [`trace`]: each block records its own
//! forward pass op by op for the memory planner. Imports [`crate::sys`] and
//! [`crate::io`].

pub mod blocks;
pub mod checkpoint;
pub mod cond;
pub mod frozen;
pub mod grid_vae;
pub mod init;
pub mod loss;
pub mod sparse;
pub mod tiles;
pub mod trace;
pub mod unet;
pub mod vae;

pub use checkpoint::Checkpointing;
pub use cond::{RadarEncoder, RadarEncoderConfig};
pub use frozen::FrozenVae;
pub use grid_vae::{AnyVae, GridVae};
pub use tiles::Tiling;
pub use unet::{Unet3d, UnetConfig};
pub use vae::{Vae3d, VaeConfig};

/// Errors of the model layer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ModelError {
    /// A setting that cannot build or run.
    #[error("invalid model config: {0}")]
    Config(String),
    /// A grid the model cannot process.
    #[error("grid (Z, H, W) = {grid:?} does not fit the model: {rule}")]
    Grid {
        /// The grid.
        grid: [i64; 3],
        /// The rule it breaks.
        rule: String,
    },
    /// Sparse sites that break a rule of their set.
    #[error("sparse sites ({sites} sites, batch {batch}, grid {grid:?}): {rule}")]
    Sites {
        /// Number of sites.
        sites: usize,
        /// Batch size.
        batch: i64,
        /// The grid `(Z, Y, X)`.
        grid: [i64; 3],
        /// The rule they break.
        rule: String,
    },
}
