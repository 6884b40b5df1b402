//! Atomic file replacement: write a temp file beside the target, fsync,
//! rename. A crash or kill never leaves a torn file; a killed writer leaves
//! at most a `.<name>.tmp<pid>` file, which [`remove_stale_temps`] deletes.

use std::io::Write;
use std::path::{Path, PathBuf};

fn temp_path(path: &Path) -> PathBuf {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    dir.join(format!(".{name}.tmp{}", std::process::id()))
}

/// Atomically replaces `path` with the bytes `write` produces (creating the
/// parent directory): temp file, fsync, rename; the temp file is removed on
/// failure.
pub fn write_atomic_with(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let tmp = temp_path(path);
    if let Some(dir) = tmp.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let result = (|| {
        let file = std::fs::File::create(&tmp)?;
        let mut w = std::io::BufWriter::new(file);
        write(&mut w)?;
        let file = w.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Atomically replaces `path` with `data`.
pub fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    write_atomic_with(path, |w| w.write_all(data))
}

/// Deletes temp files of [`write_atomic`] left in `dir` by writers that no
/// longer run (killed mid-write). Returns the paths removed.
pub fn remove_stale_temps(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return Ok(removed) };
    for entry in entries {
        let path = entry?.path();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let Some(pid) = name.strip_prefix('.').and_then(|n| n.rsplit_once(".tmp")).map(|(_, pid)| pid) else {
            continue;
        };
        let Ok(pid) = pid.parse::<u32>() else { continue };
        let alive = pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists();
        if !alive && path.is_file() {
            std::fs::remove_file(&path)?;
            removed.push(path);
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.bin");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let failed = write_atomic_with(&p, |_| Err(std::io::Error::other("disk full")));
        assert!(failed.is_err());
        assert_eq!(std::fs::read(&p).unwrap(), b"two", "a failed write leaves the old file");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "and no temp file");
    }

    #[test]
    fn stale_temps_of_dead_writers_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        // pid 4194304 is above the kernel's pid_max limit: never alive
        let dead = dir.path().join(".last.safetensors.tmp4194304");
        let mine = dir.path().join(format!(".best.safetensors.tmp{}", std::process::id()));
        let other = dir.path().join("notes.tmp1");
        for p in [&dead, &mine, &other] {
            std::fs::write(p, b"x").unwrap();
        }
        assert_eq!(remove_stale_temps(dir.path()).unwrap(), vec![dead.clone()]);
        assert!(!dead.exists() && mine.exists() && other.exists());
    }
}
