//! Layer 1, file formats: NumPy `.npy` arrays and `.npz` archives (generic,
//! no dataset rules), safetensors weight files, PNG pictures and charts,
//! person-written config documents, atomic writes, folder locks and output records. Imports only [`crate::sys`].
//!
//! Every reader is defensive: sizes come from untrusted headers, so each is
//! checked against the bytes that really exist before anything is allocated
//! or indexed, and every failure is a [`FormatError`] naming the file.

pub mod atomic;
pub mod chart;
pub mod config;
pub mod lock;
pub mod npy;
pub mod npz;
pub mod outputs;
pub mod png;
pub mod safetensors;

use std::fmt;
use std::path::{Path, PathBuf};

pub use atomic::{remove_stale_temps, write_atomic};
pub use lock::FolderLock;
pub use outputs::{checkpoint_identity, Outputs};

/// Where a problem was found: a file, and for `.npz` the member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// The file on disk.
    pub path: PathBuf,
    /// The archive member (`coords.npy`, ...) for `.npz` files.
    pub member: Option<&'static str>,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.member {
            Some(m) => write!(f, "{}[{m}]", self.path.display()),
            None => write!(f, "{}", self.path.display()),
        }
    }
}

impl Source {
    /// A whole file.
    pub fn file(path: &Path) -> Self {
        Source { path: path.to_path_buf(), member: None }
    }
    /// A member of an archive.
    pub fn member(path: &Path, member: &'static str) -> Self {
        Source { path: path.to_path_buf(), member: Some(member) }
    }
}

/// Errors of the file-format layer; each names the file (and member).
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// The file could not be opened, read or written.
    #[error("{src}: {source}")]
    Io {
        /// File that failed.
        src: Source,
        /// Underlying I/O error.
        source: std::io::Error,
    },
    /// Another process (or another run in this one) holds the folder's lock.
    #[error("{dir} is in use by {holder}: one run writes into a folder at a time; wait for it to end or choose another folder")]
    InUse {
        /// The folder.
        dir: PathBuf,
        /// Who holds it: PID, host, command and since when.
        holder: String,
    },
    /// An output folder holds another run's outputs of the same command.
    #[error("{dir} holds {why}: pass --overwrite to replace them, or choose another folder")]
    OutputsExist {
        /// The folder.
        dir: PathBuf,
        /// The command (`sample`, ...).
        command: String,
        /// Whose outputs, and the first difference.
        why: String,
    },
    /// Not a regular file (a FIFO, device or directory would block or mislead a reader).
    #[error("{src}: not a regular file ({kind})")]
    NotRegular {
        /// The path.
        src: Source,
        /// What it is instead.
        kind: &'static str,
    },
    /// Not an `.npy` stream, or its header cannot be parsed.
    #[error("{src}: not a valid .npy header: {reason}")]
    Header {
        /// File that failed.
        src: Source,
        /// What was wrong.
        reason: String,
    },
    /// The `.npz` archive itself is corrupt.
    #[error("{src}: corrupt .npz archive: {reason}")]
    Archive {
        /// File that failed.
        src: Source,
        /// What the zip reader reported.
        reason: String,
    },
    /// A required `.npz` member is absent.
    #[error("{src}: member missing from .npz archive")]
    MissingMember {
        /// File and missing member.
        src: Source,
    },
    /// The data is shorter (or longer) than the header says.
    #[error("{src}: data is {actual} bytes, header implies {expected} (truncated or corrupt)")]
    Truncated {
        /// File that failed.
        src: Source,
        /// Bytes implied by the header.
        expected: u64,
        /// Bytes present.
        actual: u64,
    },
    /// The element type is not one this reader accepts here.
    #[error("{src}: dtype {dtype} not supported here, expected {expected}")]
    Dtype {
        /// File that failed.
        src: Source,
        /// dtype found in the header (numpy spelling, e.g. `<i8`).
        dtype: String,
        /// Accepted dtypes.
        expected: &'static str,
    },
    /// The array has the wrong rank or shape.
    #[error("{src}: shape {shape:?} is invalid: expected {expected}")]
    Shape {
        /// File that failed.
        src: Source,
        /// Shape found.
        shape: Vec<usize>,
        /// What was expected.
        expected: String,
    },
    /// Not a valid safetensors file.
    #[error("{path}: not a valid safetensors file: {reason}")]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        reason: String,
    },
    /// The file's tensors do not match the model's variables.
    #[error("{path}: weights do not match the model: {problems}")]
    Mismatch {
        /// The file.
        path: PathBuf,
        /// Missing, unexpected and mis-shaped tensors, listed.
        problems: String,
    },
    /// A tensor holds NaN or infinite values (a corrupt or diverged checkpoint).
    #[error("{path}: tensor {tensor} holds {count} non-finite value(s)")]
    NonFinite {
        /// The file.
        path: PathBuf,
        /// The tensor's name.
        tensor: String,
        /// How many values are NaN or infinite.
        count: i64,
    },
    /// The content hash recorded at save time does not match the tensors read.
    #[error("{path}: content checksum {actual} differs from the recorded {expected}: the file is corrupt")]
    Checksum {
        /// The file.
        path: PathBuf,
        /// Recorded at save time.
        expected: String,
        /// Computed now.
        actual: String,
    },
}

impl FormatError {
    /// An I/O error about `path`.
    pub fn io(path: &Path, source: std::io::Error) -> FormatError {
        FormatError::Io { src: Source::file(path), source }
    }
}

/// Opens `path` for reading after checking it is a regular file: opening a
/// FIFO would block until a writer appears (a hang), a directory would fail
/// later with a confusing message.
pub fn open_regular(path: &Path) -> Result<std::fs::File, FormatError> {
    check_regular(path)?;
    std::fs::File::open(path).map_err(|e| FormatError::io(path, e))
}

/// Refuses a path that is not a regular file (following symlinks), naming what it is.
pub fn check_regular(path: &Path) -> Result<(), FormatError> {
    let meta = std::fs::metadata(path).map_err(|e| FormatError::io(path, e))?;
    let ft = meta.file_type();
    if !ft.is_file() {
        use std::os::unix::fs::FileTypeExt;
        let kind = if ft.is_dir() {
            "a directory"
        } else if ft.is_fifo() {
            "a FIFO"
        } else if ft.is_socket() {
            "a socket"
        } else if ft.is_block_device() || ft.is_char_device() {
            "a device"
        } else {
            "not a file"
        };
        return Err(FormatError::NotRegular { src: Source::file(path), kind });
    }
    Ok(())
}
