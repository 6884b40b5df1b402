//! radvox: train generative models on 4D radar voxel grids.
//!
//! The pipeline, one module per stage: [`dataset`] finds and pairs
//! NTU4DRadLM_Pre frames, [`npy`] decodes their files (memory-mapped dense
//! `.npy`, sparse `.npz`), [`layout`] turns them into padded or resampled
//! f16 `(C, Z, H, W)` grids, [`augment`] perturbs radar/target pairs and
//! [`prefetch`] batches them into f16 tensors on worker threads with
//! bounded, recycled memory. [`shim`] reaches libtorch calls tch lacks.
#![warn(missing_docs)]

pub mod augment;
pub mod dataset;
pub mod layout;
pub mod memory;
pub mod model;
pub mod npy;
pub mod prefetch;
pub mod shim;
pub mod weights;

pub use dataset::{Dataset, DatasetConfig, DatasetError, FrameId, Modality, Split};
pub use layout::Layout;
pub use prefetch::{Batch, Loader, LoaderConfig, LoaderError};
