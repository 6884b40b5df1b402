//! radvox: train generative models on 4D radar voxel grids.
//!
//! The crate is layered; each layer imports only from the layers below it
//! (`tests/layers.rs` checks this):
//!
//! | layer | owns |
//! |---|---|
//! | [`sys`] | the C++ shim over libtorch, CPU facts, seeded randomness |
//! | [`dist`] | data parallelism on c10d (torchrun's environment, Gloo/NCCL collectives, gradient buckets) |
//! | [`io`] | `.npy`/`.npz`, safetensors, PNG and charts, config documents, atomic writes |
//! | [`data`] | NTU4DRadLM_Pre frames and scenes, grid layout, augmentation, the prefetching loader, the voxelizer |
//! | [`sim`] | simulated radar/LiDAR scenes: raw point clouds to feed the voxelizer |
//! | [`model`] | 3D blocks, the VAE, the latent UNet, losses, gradient checkpointing, op traces, sparse networks and the sparse VAE |
//! | [`diffusion`] | EDM preconditioning and loss, samplers, the latent cache |
//! | [`memory`] | the memory planner, fallbacks, measurement |
//! | [`eval`] | metrics and exports of predictions |
//! | [`map`] | the streaming probabilistic obstacle map: poses, hashed blocks, ray casting, DEM, proximity queries |
//! | [`train`] | the training engine, the VAE, sparse VAE, LDM and CD objectives, recipes, checkpoints |
//!
//! ```no_run
//! use radvox::model::{Vae3d, VaeConfig};
//! use radvox::data::{Dataset, DatasetConfig, Modality, Split};
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

pub mod data;
pub mod diffusion;
pub mod dist;
pub mod eval;
pub mod io;
pub mod map;
pub mod memory;
pub mod model;
pub mod sim;
pub mod sys;
pub mod train;

pub use data::{Dataset, DatasetConfig, FrameId, Layout, Loader, LoaderConfig, Modality, Split};

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
                eprintln!("[{}{}] {}", r.level().as_str().to_lowercase(), rank_tag(), r.args());
            }
        }
        fn flush(&self) {}
    }
    // under torchrun every rank logs its warnings, rank 0 alone the rest
    let quiet_rank = !rank_tag().is_empty() && std::env::var("RANK").is_ok_and(|r| r != "0");
    let level = match std::env::var("RADVOX_LOG").as_deref() {
        Ok("debug") => log::LevelFilter::Debug,
        Ok("warn") => log::LevelFilter::Warn,
        _ if quiet_rank => log::LevelFilter::Warn,
        _ => log::LevelFilter::Info,
    };
    if log::set_logger(&Stderr).is_ok() {
        log::set_max_level(level);
    }
}

/// ` rank N` in a data-parallel run (torchrun's `RANK`, `WORLD_SIZE` > 1), else empty.
fn rank_tag() -> String {
    match (std::env::var("RANK"), std::env::var("WORLD_SIZE")) {
        (Ok(r), Ok(w)) if w.trim() != "1" => format!(" rank {r}"),
        _ => String::new(),
    }
}

/// The README's Rust examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
