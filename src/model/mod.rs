//! Models on libtorch: shared 3D blocks, the VAE, the latent UNet, gradient checkpointing.

pub mod blocks;
pub mod checkpoint;
pub mod unet;
pub mod vae;

pub use checkpoint::Checkpointing;
pub use unet::{Unet3d, UnetConfig};
pub use vae::{Vae3d, VaeConfig};
