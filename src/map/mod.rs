//! Layer 8, the map: a streaming probabilistic obstacle map in the world
//! frame, fed frame by frame with occupied voxels (radar, LiDAR or densified
//! predictions with their probabilities) and the scene's sensor poses.
//! Imports [`crate::data`], [`crate::io`] and [`crate::eval`].
//!
//! - [`ray`]: world voxel keys and the 3D DDA ray traversal;
//! - [`evidence`]: log-odds with clamping or Dempster-Shafer masses, time
//!   decay towards unknown;
//! - [`blocks`]: hashed 8^3 blocks (as Bonxai / VDB);
//! - [`voxel_map`]: insertion (occupied endpoints, free rays, one update a
//!   voxel a frame), the sliding window;
//! - [`dem`]: the 2.5D elevation map (top-surface height mean and variance);
//! - [`query`]: distance to the nearest obstacle from a point or a segment;
//! - [`export`]: `.ply` and bird's-eye PNGs of probability and elevation;
//! - [`source`]: a dataset root's frames (radar, LiDAR, target or a `sample`
//!   predictions folder) with the scene's poses, as observations;
//! - [`mod@compare`]: a map against a reference map, per range band;
//! - [`stream`]: a scene streamed into a map (and its reference), with
//!   per-frame latency and memory.

pub mod blocks;
pub mod compare;
pub mod dem;
pub mod evidence;
pub mod export;
pub mod query;
pub mod ray;
pub mod source;
pub mod stream;
pub mod voxel_map;

use std::path::PathBuf;

pub use compare::{compare, MapScore};
pub use dem::Dem;
pub use evidence::{DempsterShafer, Evidence, LogOdds};
pub use query::{Clearance, Nearest};
pub use source::{FrameSource, SceneFrames};
pub use voxel_map::{InsertStats, MapConfig, Observation, VoxelMap};

/// Errors of the map layer.
#[derive(Debug, thiserror::Error)]
pub enum MapError {
    /// An invalid setting.
    #[error("invalid map config: {0}")]
    Config(String),
    /// A frame's input is unusable.
    #[error("map input: {0}")]
    Input(String),
    /// Reading frames or poses failed (the error names the file).
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
    /// A predictions folder lacks a frame or holds another grid.
    #[error("{path}: {problem}")]
    Predictions {
        /// The file or folder.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// Writing an export failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
}
