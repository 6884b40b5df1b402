//! Layer 2, the data: NTU4DRadLM_Pre frames (the sparse/dense frame rules,
//! scene discovery and pairing), their layout as f16 `(C, Z, H, W)` grids
//! (padding, occupancy-preserving resampling or native-resolution crops), a frame's occupied sites
//! ([`sites`]), augmentation, the bounded prefetching loader and its sparse twin, and the voxelizer that makes frames from point clouds. Imports [`crate::sys`] and [`crate::io`].

pub mod augment;
pub mod crop;
pub mod dataset;
pub mod frame;
pub mod layout;
pub mod loader;
pub mod poses;
pub mod resample;
pub mod sites;
pub mod voxelize;

use std::path::PathBuf;

pub use augment::{AugmentError, Augmentation};
pub use dataset::{Dataset, DatasetConfig, Modality, Split};
pub use frame::{FrameFile, FrameId, Grid, SparseFrame};
pub use layout::Layout;
pub use loader::{Batch, Loader, LoaderConfig};
pub use sites::FrameSites;

use crate::io::{FormatError, Source};

/// Errors of the data layer: finding, decoding and batching frames. Every
/// variant names the file, frame or batch it is about.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The root directory does not exist or is not a directory.
    #[error("dataset root {0} does not exist or is not a directory")]
    MissingRoot(PathBuf),
    /// No scene folder (with `radar_voxel/` and `target_voxel/`) was found.
    #[error("no scene under {0}: expected folders holding radar_voxel/ and target_voxel/")]
    NoScenes(PathBuf),
    /// A configured scene name does not exist.
    #[error("scene {name:?} not found under {root}; available: {available:?}")]
    UnknownScene {
        /// Dataset root.
        root: PathBuf,
        /// The name asked for.
        name: String,
        /// Scenes that exist.
        available: Vec<String>,
    },
    /// The split has scenes but no radar/target pair.
    #[error("no radar/target frame pair in the {split} split under {root}")]
    NoPairs {
        /// Dataset root.
        root: PathBuf,
        /// The split.
        split: Split,
    },
    /// Two files share a stem in one folder.
    #[error("{0} and {1} share a stem: remove one")]
    Ambiguous(PathBuf, PathBuf),
    /// A paired frame lacks its `lidar_voxel` file.
    #[error("{0} has no lidar_voxel frame")]
    MissingLidar(PathBuf),
    /// Radar, target (or lidar) grids of one frame disagree.
    #[error("shape mismatch: {a} is {a_shape:?} but {b} is {b_shape:?} (H, W, Z, C)")]
    ShapeMismatch {
        /// First file.
        a: PathBuf,
        /// Its shape.
        a_shape: [usize; 4],
        /// Second file.
        b: PathBuf,
        /// Its shape.
        b_shape: [usize; 4],
    },
    /// A directory could not be listed.
    #[error("{path}: {source}")]
    Io {
        /// The directory.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The file is not a valid array or archive (the format layer's error).
    #[error(transparent)]
    Format(#[from] FormatError),
    /// A sparse coordinate lies outside the dense grid.
    #[error("{src}: voxel {index} has coordinate {coord:?} outside the grid {grid:?}")]
    OutOfGrid {
        /// File that failed.
        src: Source,
        /// Row of `coords.npy`.
        index: usize,
        /// The coordinate (saturated to i64).
        coord: [i64; 3],
        /// The `(H, W, Z)` grid.
        grid: [usize; 3],
    },
    /// The same voxel is listed twice in a sparse frame.
    #[error("{src}: voxel {coord:?} is listed more than once")]
    Duplicate {
        /// File that failed.
        src: Source,
        /// The repeated `(x, y, z)` coordinate.
        coord: [usize; 3],
    },
    /// A value is NaN or infinite, or overflows float16.
    #[error("{src}: {problem} value {value} at voxel {voxel:?} channel {channel}")]
    BadValue {
        /// File that failed.
        src: Source,
        /// `(x, y, z)` index of the voxel.
        voxel: [usize; 3],
        /// Channel of the value.
        channel: usize,
        /// The offending value.
        value: f64,
        /// `non-finite` or `float16-overflowing`.
        problem: &'static str,
    },
    /// A scene's sensor poses are missing, malformed or do not match its frames.
    #[error("{path}{}: {problem}", line.map(|l| format!(" line {l}")).unwrap_or_default())]
    Poses {
        /// The poses file.
        path: PathBuf,
        /// 1-based line, when one line is at fault.
        line: Option<usize>,
        /// What is wrong.
        problem: String,
    },
    /// An invalid dataset or loader option.
    #[error("invalid data config: {0}")]
    Config(String),
    /// An invalid augmentation config.
    #[error(transparent)]
    Augment(#[from] AugmentError),
    /// Turning point clouds into frames failed.
    #[error(transparent)]
    Voxelize(#[from] voxelize::VoxelizeError),
    /// Reading a frame of a batch failed (the error names the file).
    #[error("batch {batch}: {source}")]
    Batch {
        /// Batch index in the epoch.
        batch: usize,
        /// The reader's error.
        source: Box<DataError>,
    },
    /// A loader worker panicked while building a batch.
    #[error("batch {batch}: worker panicked: {message}")]
    WorkerPanic {
        /// Batch index in the epoch.
        batch: usize,
        /// The panic message.
        message: String,
    },
    /// Workers stopped before delivering a batch.
    #[error("batch {0}: the loader's workers stopped")]
    Disconnected(usize),
    /// No batch arrived within the read timeout (a blocking file system?).
    #[error("batch {batch}: no data after {seconds} s (read timeout) while reading {frames}")]
    Timeout {
        /// Batch index in the epoch.
        batch: usize,
        /// The timeout.
        seconds: f64,
        /// The frames of that batch.
        frames: String,
    },
    /// The consumer holds every buffer, so no further batch can be built.
    #[error("all {0} batch buffers are held by the consumer: drop a batch before asking for the next")]
    AllBuffersHeld(usize),
    /// Frames of different output shapes cannot be batched.
    #[error("frame {a} has output shape {a_shape:?} but {b} has {b_shape:?}: cannot batch them")]
    MixedShapes {
        /// First frame.
        a: FrameId,
        /// Its shape.
        a_shape: [usize; 4],
        /// Differing frame.
        b: FrameId,
        /// Its shape.
        b_shape: [usize; 4],
    },
}
