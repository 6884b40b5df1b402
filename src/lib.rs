//! radvox: train generative models on 4D radar voxel grids.
//!
//! The pipeline, one module per stage: [`dataset`] finds and pairs
//! NTU4DRadLM_Pre frames, [`npy`] decodes their files (memory-mapped dense
//! `.npy`, sparse `.npz`), [`layout`] turns them into padded or resampled
//! f16 `(C, Z, H, W)` grids, [`augment`] perturbs radar/target pairs and
//! [`prefetch`] batches them into f16 tensors on worker threads with
//! bounded, recycled memory. [`model`] holds the 3D VAE and the latent UNet,
//! [`train`] and [`ldm`] train them, [`diffusion`] samples.
//!
//! ```no_run
//! use radvox::model::{Vae3d, VaeConfig};
//! use radvox::{Dataset, DatasetConfig, Modality, Split};
//! use tch::{nn, Device};
//!
//! let ds = Dataset::open("NTU4DRadLM_Pre", Split::Val, &DatasetConfig::default())?;
//! let grid = ds.read(0, Modality::Target)?; // f16 (4, 96, 608, 224)
//! let vs = nn::VarStore::new(Device::cuda_if_available());
//! let vae = Vae3d::new(&vs.root(), &VaeConfig::ultra_lightweight())?;
//! let x = grid.to_tensor().to_kind(tch::Kind::Float); // (1, 4, 96, 608, 224)
//! let z = tch::no_grad(|| vae.encode(&x.to_device(vs.device()), None, false)); // (1, 4, 48, 152, 56)
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![warn(missing_docs)]
// Errors carry the file, shape and dtype they are about (by design); they
// are the cold path, so their size does not matter.
#![allow(clippy::result_large_err)]

pub mod augment;
pub mod dataset;
pub mod diffusion;
pub mod export;
pub mod latents;
pub mod layout;
pub mod ldm;
pub mod loss;
pub mod memory;
pub mod metrics;
pub mod model;
pub mod npy;
pub mod optim;
pub mod plot;
pub mod prefetch;
pub mod shim;
pub mod train;
pub mod weights;

pub use dataset::{Dataset, DatasetConfig, DatasetError, FrameId, Modality, Split};
pub use layout::Layout;
pub use prefetch::{Batch, Loader, LoaderConfig, LoaderError};

/// Routes `log` records (info and above, or `RADVOX_LOG=debug`) to stderr;
/// for the examples and other binaries without a logger of their own.
pub fn init_logging() {
    struct Stderr;
    impl log::Log for Stderr {
        fn enabled(&self, m: &log::Metadata) -> bool {
            m.level() <= log::max_level()
        }
        fn log(&self, r: &log::Record) {
            if self.enabled(r.metadata()) {
                eprintln!("[{}] {}", r.level().as_str().to_lowercase(), r.args());
            }
        }
        fn flush(&self) {}
    }
    let level = match std::env::var("RADVOX_LOG").as_deref() {
        Ok("debug") => log::LevelFilter::Debug,
        Ok("warn") => log::LevelFilter::Warn,
        _ => log::LevelFilter::Info,
    };
    if log::set_logger(&Stderr).is_ok() {
        log::set_max_level(level);
    }
}

/// The README's Rust examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
