//! Output folders that refuse to mix runs: a command that writes outputs
//! (`sample`, `evaluate`, `precompute_latents`) takes the folder's lock and
//! records what defines its run (the identity: checkpoints, data, settings)
//! in `.radvox-<command>.json`. A later run of the same command with another
//! identity is refused unless it asks to overwrite, which first removes the
//! earlier run's files; the same identity reruns in place. A folder holding
//! files the command writes but no record of who wrote them is refused the
//! same way. Trainers follow the same rule with their own run files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{write_atomic, FolderLock, FormatError};

/// What one run of a command recorded in its folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutputRecord {
    /// The command (`sample`, ...).
    pub command: String,
    /// What defines the run, by name.
    pub identity: BTreeMap<String, String>,
    /// Whether the run finished.
    pub complete: bool,
    /// The files it wrote (names inside the folder), once complete.
    pub files: Vec<String>,
}

/// A folder claimed for one run of a command; see the module docs.
#[derive(Debug)]
pub struct Outputs {
    lock: FolderLock,
    record: OutputRecord,
}

/// A checkpoint's identity for a run's record: its path and the hash of
/// its tensors (metadata such as a recorded threshold does not change it).
pub fn checkpoint_identity(path: &Path) -> Result<String, FormatError> {
    let file = super::safetensors::read(path)?;
    Ok(format!("{} (weights {})", path.display(), super::safetensors::weights_hash(&file.tensors)))
}

fn record_path(dir: &Path, command: &str) -> PathBuf {
    dir.join(format!(".radvox-{command}.json"))
}

fn names(dir: &Path, keep: impl Fn(&str) -> bool) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut v: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.') && keep(n))
        .collect();
    v.sort();
    v
}

impl Outputs {
    /// Claims `dir` for `command` with `identity`. `owned` tells the file
    /// names this command writes. Refuses ([`FormatError::OutputsExist`]) a
    /// folder holding another run's outputs of this command, or such files
    /// with no record, unless `overwrite`; then the earlier files are
    /// removed first.
    pub fn claim(
        dir: &Path,
        command: &str,
        identity: BTreeMap<String, String>,
        overwrite: bool,
        owned: &dyn Fn(&str) -> bool,
    ) -> Result<Outputs, FormatError> {
        let lock = FolderLock::acquire(dir, command)?;
        let path = record_path(dir, command);
        let earlier: Option<OutputRecord> = match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).ok(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(FormatError::io(&path, e)),
        };
        let any_record = std::fs::read_dir(dir).is_ok_and(|d| {
            d.filter_map(Result::ok).any(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n.starts_with(".radvox-") && n.ends_with(".json")
            })
        });
        let refuse = |why: String| FormatError::OutputsExist { dir: dir.to_path_buf(), command: command.into(), why };
        let to_remove: Vec<String> = match &earlier {
            Some(r) if r.identity == identity => Vec::new(), // the same run: rerun in place
            Some(r) => {
                if !overwrite {
                    let (k, theirs, ours) = first_difference(&r.identity, &identity)
                        .unwrap_or_else(|| ("identity".into(), "(none)".into(), "(none)".into()));
                    return Err(refuse(format!("another run's ({k}: theirs {theirs}, this one {ours})")));
                }
                if r.complete {
                    r.files.clone()
                } else {
                    names(dir, owned)
                }
            }
            None => {
                let found = names(dir, owned);
                if !found.is_empty() && !any_record && !overwrite {
                    let shown: Vec<&str> = found.iter().take(4).map(String::as_str).collect();
                    return Err(refuse(format!(
                        "files such a run writes ({}{}) with no record of the run that wrote them",
                        shown.join(", "),
                        if found.len() > 4 { ", ..." } else { "" }
                    )));
                }
                if overwrite {
                    found
                } else {
                    Vec::new()
                }
            }
        };
        for n in &to_remove {
            let p = dir.join(n);
            match std::fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(FormatError::io(&p, e)),
            }
        }
        if !to_remove.is_empty() {
            log::warn!(
                "--overwrite: removed {} file(s) of the previous {command} run in {}",
                to_remove.len(),
                dir.display()
            );
        }
        let record = OutputRecord { command: command.into(), identity, complete: false, files: Vec::new() };
        let out = Outputs { lock, record };
        out.save()?;
        Ok(out)
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        self.lock.dir()
    }

    fn save(&self) -> Result<(), FormatError> {
        let path = record_path(self.dir(), &self.record.command);
        let text = serde_json::to_string_pretty(&self.record).expect("records serialise");
        write_atomic(&path, text.as_bytes()).map_err(|e| FormatError::io(&path, e))
    }

    /// Marks the run complete, recording the files of the folder that
    /// `owned` claims (the lock is released when `self` drops).
    pub fn finish(mut self, owned: &dyn Fn(&str) -> bool) -> Result<(), FormatError> {
        self.record.files = names(self.dir(), owned);
        self.record.complete = true;
        self.save()
    }
}

/// The first field (in key order) where `other` differs from `first`:
/// (field, first's, other's), a missing field read as `(absent)`.
pub fn first_difference(
    first: &BTreeMap<String, String>,
    other: &BTreeMap<String, String>,
) -> Option<(String, String, String)> {
    let absent = || "(absent)".to_string();
    let keys: std::collections::BTreeSet<&String> = first.keys().chain(other.keys()).collect();
    keys.into_iter().find_map(|k| {
        let (a, b) = (first.get(k), other.get(k));
        (a != b).then(|| (k.clone(), a.cloned().unwrap_or_else(absent), b.cloned().unwrap_or_else(absent)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(seed: &str) -> BTreeMap<String, String> {
        BTreeMap::from([("seed".to_string(), seed.to_string()), ("model".to_string(), "m".to_string())])
    }

    fn npz(n: &str) -> bool {
        n.ends_with(".npz")
    }

    #[test]
    fn another_run_is_refused_the_same_reruns_and_overwrite_removes_the_old_files() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("out");
        let o = Outputs::claim(&d, "sample", id("0"), false, &npz).unwrap();
        for n in ["a.npz", "b.npz"] {
            std::fs::write(d.join(n), b"x").unwrap();
        }
        o.finish(&npz).unwrap();
        // the same identity reruns in place
        Outputs::claim(&d, "sample", id("0"), false, &npz).unwrap().finish(&npz).unwrap();
        assert!(d.join("b.npz").exists());
        let err = Outputs::claim(&d, "sample", id("1"), false, &npz).unwrap_err().to_string();
        assert!(err.contains("seed: theirs 0, this one 1") && err.contains("--overwrite"), "{err}");
        let o = Outputs::claim(&d, "sample", id("1"), true, &npz).unwrap();
        assert!(!d.join("a.npz").exists() && !d.join("b.npz").exists(), "the earlier run's files are gone");
        std::fs::write(d.join("a.npz"), b"y").unwrap();
        o.finish(&npz).unwrap();
        let rec: OutputRecord =
            serde_json::from_str(&std::fs::read_to_string(d.join(".radvox-sample.json")).unwrap()).unwrap();
        assert_eq!((rec.complete, rec.files, rec.identity), (true, vec!["a.npz".to_string()], id("1")));
        // a folder of such files nobody recorded
        let bare = dir.path().join("bare");
        std::fs::create_dir_all(&bare).unwrap();
        std::fs::write(bare.join("old.npz"), b"z").unwrap();
        std::fs::write(bare.join("notes.txt"), b"keep").unwrap();
        let err = Outputs::claim(&bare, "sample", id("0"), false, &npz).unwrap_err().to_string();
        assert!(err.contains("old.npz") && err.contains("no record"), "{err}");
        Outputs::claim(&bare, "sample", id("0"), true, &npz).unwrap();
        assert!(!bare.join("old.npz").exists() && bare.join("notes.txt").exists(), "only the command's own files go");
        // while claimed, the folder is locked
        let held = Outputs::claim(&d, "sample", id("1"), false, &npz).unwrap();
        assert!(Outputs::claim(&d, "evaluate", id("1"), false, &npz).unwrap_err().to_string().contains("in use"));
        drop(held);
    }
}
