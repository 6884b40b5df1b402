//! Helpers shared by integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The numpy-written fixture tree.
pub fn mini() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/ntu_mini")
}

/// Path of an example binary of this profile, built first if `cargo test`
/// was asked for a single test target (which does not build examples).
pub fn example(name: &str) -> PathBuf {
    let profile_dir = std::env::current_exe().unwrap().parent().unwrap().parent().unwrap().to_path_buf();
    let exe = profile_dir.join("examples").join(name);
    if !exe.exists() {
        let release = profile_dir.file_name().is_some_and(|n| n == "release");
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args(["build", "--example", name]).current_dir(env!("CARGO_MANIFEST_DIR"));
        if release {
            cmd.arg("--release");
        }
        assert!(cmd.status().unwrap().success(), "building example {name} failed");
    }
    exe
}
