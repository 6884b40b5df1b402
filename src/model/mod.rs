//! Models on libtorch: shared 3D blocks, the VAE, gradient checkpointing.

pub mod blocks;
pub mod checkpoint;
pub mod vae;

pub use checkpoint::Checkpointing;
pub use vae::{Vae3d, VaeConfig};
