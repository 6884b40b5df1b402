//! Helpers shared by integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The numpy-written fixture tree.
pub fn mini() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/ntu_mini")
}

/// Path of an example binary of this profile, (re)built first: `cargo test
/// --test X` alone does not build examples, and a stale one would test old code.
pub fn example(name: &str) -> PathBuf {
    let profile_dir = std::env::current_exe().unwrap().parent().unwrap().parent().unwrap().to_path_buf();
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args(["build", "--quiet", "--example", name]).current_dir(env!("CARGO_MANIFEST_DIR"));
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    assert!(cmd.status().unwrap().success(), "building example {name} failed");
    profile_dir.join("examples").join(name)
}

/// Copies a directory tree (fixtures into a scratch dir a test may change).
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

/// A quiet float32 CPU runtime writing to `out`.
pub fn cpu_runtime(out: &Path) -> radvox::train::Runtime {
    radvox::train::Runtime {
        out: out.to_path_buf(),
        device: "cpu".into(),
        amp: radvox::train::AmpMode::Off,
        progress: false,
        ..Default::default()
    }
}

/// The small resampled grid the example-driving tests train at.
pub const GRID: &str = "8,16,16";

/// `train_vae` on the fixtures at [`GRID`], quiet, float32 on CPU, into `out`.
pub fn train_vae(out: &Path, extra: &[&str]) -> Output {
    Command::new(example("train_vae"))
        .args(["--resample", GRID, "--device", "cpu", "--no-progress", "--no-amp", "--out"])
        .arg(out)
        .args(extra)
        .output()
        .unwrap()
}

/// A finished command's stderr, as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
