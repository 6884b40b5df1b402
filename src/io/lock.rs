//! One writer per output folder: an advisory lock (`flock`) on
//! `<dir>/.radvox.lock`, held for the life of a [`FolderLock`] and released
//! by the kernel when its process ends, killed or not. The file records the
//! holder (PID, host, what it runs, since when), which a refused writer
//! names. The file is never deleted: removing a lock file races with a
//! second writer opening it.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::FormatError;

/// The lock file's name inside a locked folder.
pub const LOCK_FILE: &str = ".radvox.lock";

/// An output folder this process owns until the value is dropped.
#[derive(Debug)]
pub struct FolderLock {
    _file: File,
    dir: PathBuf,
}

fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "an unknown host".into())
}

impl FolderLock {
    /// Creates `dir` if needed and takes its lock for `what` (e.g.
    /// `"train_vae"`), or fails at once with [`FormatError::InUse`] naming
    /// the process that holds it. Another lock on the same folder in this
    /// process is refused too.
    pub fn acquire(dir: &Path, what: &str) -> Result<FolderLock, FormatError> {
        let path = dir.join(LOCK_FILE);
        let io = |e| FormatError::io(&path, e);
        std::fs::create_dir_all(dir).map_err(io)?;
        let mut file =
            OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(FormatError::InUse { dir: dir.to_path_buf(), holder: holder_of(&mut file) })
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let line = format!("PID {} on {} ({what}, since unix time {since})\n", std::process::id(), host());
        file.set_len(0).and_then(|_| file.rewind()).and_then(|_| file.write_all(line.as_bytes())).map_err(io)?;
        Ok(FolderLock { _file: file, dir: dir.to_path_buf() })
    }

    /// Like [`FolderLock::acquire`], but waits for a holder to finish
    /// (logging who it waits for) instead of failing.
    pub fn wait(dir: &Path, what: &str) -> Result<FolderLock, FormatError> {
        match Self::acquire(dir, what) {
            Err(FormatError::InUse { holder, .. }) => {
                log::info!("waiting for {holder} to release {}", dir.display());
                let path = dir.join(LOCK_FILE);
                let file =
                    OpenOptions::new().read(true).write(true).open(&path).map_err(|e| FormatError::io(&path, e))?;
                file.lock().map_err(|e| FormatError::io(&path, e))?;
                drop(file);
                Self::acquire(dir, what)
            }
            other => other,
        }
    }

    /// The folder held.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// The holder's line; the holder may not have written it yet, so it is
/// read again for a moment before giving up on it.
fn holder_of(file: &mut File) -> String {
    for _ in 0..20 {
        let mut s = String::new();
        if file.rewind().is_ok() && file.read_to_string(&mut s).is_ok() && !s.trim().is_empty() {
            return s.trim().to_string();
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    "a process that has not written its name yet".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_naming_the_holder_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("run");
        let first = FolderLock::acquire(&d, "train_vae").unwrap();
        assert_eq!(first.dir(), d.as_path());
        let err = FolderLock::acquire(&d, "sample").unwrap_err().to_string();
        assert!(err.contains(&format!("PID {}", std::process::id())) && err.contains("train_vae"), "{err}");
        assert!(err.contains(&d.display().to_string()), "{err}");
        drop(first);
        let again = FolderLock::acquire(&d, "sample").unwrap();
        let line = std::fs::read_to_string(d.join(LOCK_FILE)).unwrap();
        assert!(line.contains("(sample, since") && !line.contains("train_vae"), "{line}");
        drop(again);
    }
}
