//! The error type of the voxelizer: every variant names the file (or frame)
//! and the problem, so a failure can be acted on without a debugger.

use std::io;
use std::path::PathBuf;

/// Errors of reading, calibrating, pairing and voxelizing point clouds.
#[derive(Debug, thiserror::Error)]
pub enum VoxelizeError {
    /// A file or directory could not be opened, listed or read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Underlying I/O error.
        source: io::Error,
    },
    /// A KITTI-style `.bin` file is not a whole number of float32 rows.
    #[error("{}: {len} bytes is not a whole number of {cols}-column float32 rows ({} bytes each)", path.display(), cols * 4)]
    BinLength {
        /// The file.
        path: PathBuf,
        /// Its length in bytes.
        len: u64,
        /// Columns per row the caller expected.
        cols: usize,
    },
    /// A cloud has the wrong rank or column count.
    #[error("{}: expected a (N, {expected}) float32 cloud, found shape {shape:?}", path.display())]
    Columns {
        /// The file.
        path: PathBuf,
        /// Columns expected.
        expected: usize,
        /// Shape found.
        shape: Vec<usize>,
    },
    /// A `.npy` cloud could not be read (the format layer's error).
    #[error(transparent)]
    Format(#[from] crate::io::FormatError),
    /// A cloud file has an extension other than `.bin` or `.npy`.
    #[error("{}: unsupported point-cloud file (expected .bin or .npy)", path.display())]
    Extension {
        /// The file.
        path: PathBuf,
    },
    /// An in-memory cloud is malformed (fewer than 3 columns, or a length that
    /// is not a multiple of the column count).
    #[error("malformed point cloud: {values} values with {cols} columns (need cols >= 3 and whole rows)")]
    BadCloud {
        /// Column count.
        cols: usize,
        /// Number of values.
        values: usize,
    },
    /// The calibration file does not exist and identity was not asked for.
    #[error("{}: calibration file not found (use CalibSource::Identity to request the identity explicitly)", path.display())]
    CalibMissing {
        /// The expected file.
        path: PathBuf,
    },
    /// The calibration file is malformed.
    #[error("{}: {}{problem}", path.display(), line.map(|l| format!("line {l}: ")).unwrap_or_default())]
    Calib {
        /// The file.
        path: PathBuf,
        /// 1-based line of the problem, if it is on one line.
        line: Option<usize>,
        /// What is wrong.
        problem: String,
    },
    /// A sensor directory holds no frame named `<seconds>.<micros>.bin|npy`.
    #[error("{}: no point-cloud frames named <seconds>.<micros>.bin|npy", path.display())]
    NoFrames {
        /// The directory.
        path: PathBuf,
    },
    /// The grid specification is unusable.
    #[error("invalid grid spec: {0}")]
    Grid(String),
    /// The frame sink refused a frame; the run stops.
    #[error("frame {index:06}: sink failed: {reason}")]
    Sink {
        /// Pair index of the frame.
        index: usize,
        /// What the sink reported.
        reason: String,
    },
}

impl VoxelizeError {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        VoxelizeError::Io { path: path.into(), source }
    }
}
