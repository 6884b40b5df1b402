//! radvox: train generative models on 4D radar voxel grids.
//!
//! The pipeline, one module per stage: [`dataset`] finds and pairs
//! NTU4DRadLM_Pre frames, [`npy`] decodes their files (memory-mapped dense
//! `.npy`, sparse `.npz`), [`layout`] turns them into padded or resampled
//! f16 `(C, Z, H, W)` grids.
#![warn(missing_docs)]

pub mod dataset;
pub mod layout;
pub mod memory;
pub mod npy;

pub use dataset::{Dataset, DatasetConfig, DatasetError, FrameId, Modality, Split};
pub use layout::Layout;
