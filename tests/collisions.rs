//! Two processes, one resource (issue 25): every command that writes into a
//! folder owns it for its run, output folders refuse another run's outputs,
//! and a crop is checked against the frames before training. Each test
//! reproduces a case the probe found against the examples (spawned
//! processes); the data-parallel cases are in `tests/dist.rs`, the Python
//! one in `python/tests`.
#![allow(clippy::result_large_err)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use radvox::data::layout::Layout;
use radvox::train::{OptimRecipe, Trainer, VaeRecipe};
use radvox::{Dataset, DatasetConfig, Split};

mod common;
use common::{cpu_runtime, example, mini, stderr, train_vae, GRID};

fn rows(log: &Path) -> Vec<Vec<f64>> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .skip(1)
        .map(|l| l.split(',').map(|v| v.parse().unwrap()).collect())
        .collect()
}

/// A VAE checkpoint trained for one step on the fixtures.
fn vae(dir: &Path) -> PathBuf {
    let out = dir.join("vae");
    let o = train_vae(&out, &["--epochs", "1", "--max-steps", "1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    out.join("last.safetensors")
}

// Case 1: two train_vae into one --out at once both ran to the end, their
// log rows interleaved and best/last from whichever wrote last.
#[test]
fn a_second_writer_into_a_running_folder_is_refused_naming_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let mut first: Child = Command::new(example("train_vae"))
        .args(["--resample", GRID, "--device", "cpu", "--no-progress", "--no-amp", "--epochs", "400"])
        .args(["--save-every-steps", "1", "--out"])
        .arg(&out)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while rows(&out.join("train_log.csv")).is_empty() {
        assert!(first.try_wait().unwrap().is_none(), "the first run ended early");
        assert!(t.elapsed() < Duration::from_secs(120), "no step within 2 minutes");
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = format!("PID {}", first.id());
    // another trainer, a resume of the running one, a sample run: all refused, naming the holder
    let last = out.join("last.safetensors");
    let resume = ["--resume", last.to_str().unwrap()];
    for o in [
        train_vae(&out, &["--epochs", "1"]),
        train_vae(&out, &["--epochs", "1", "--overwrite"]),
        train_vae(&out, &resume),
    ] {
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        assert!(stderr(&o).contains("is in use by") && stderr(&o).contains(&pid), "{}", stderr(&o));
        assert!(stderr(&o).contains("training vae"), "{}", stderr(&o));
    }
    let sample = Command::new(example("sample"))
        .args(["--vae", last.to_str().unwrap(), "--reconstruct", "--dataset-dir", mini().to_str().unwrap()])
        .args(["--device", "cpu", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(!sample.status.success() && stderr(&sample).contains(&pid), "{}", stderr(&sample));
    assert!(first.try_wait().unwrap().is_none(), "the first run goes on");
    first.kill().unwrap();
    first.wait().unwrap();
    // its rows are its own: one per optimizer step, in order
    let steps: Vec<f64> = rows(&out.join("train_log.csv")).iter().map(|r| r[1]).collect();
    assert!(steps.windows(2).all(|w| w[1] == w[0] + 1.0), "{steps:?}");
    // a killed holder's lock is gone with it: the run resumes
    let o = train_vae(&out, &["--resume", last.to_str().unwrap(), "--max-steps", &(steps.len() + 1).to_string()]);
    assert!(o.status.success(), "{}", stderr(&o));
}

// Case 1 in one process: the library refuses a second trainer too.
#[test]
fn a_second_trainer_in_one_process_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = DatasetConfig { layout: Layout::Resample { zhw: [8, 16, 16] }, ..Default::default() };
    let ds = || Dataset::open(mini(), Split::Train, &cfg).unwrap();
    let recipe = VaeRecipe { optim: OptimRecipe { epochs: 1, ..Default::default() }, ..Default::default() };
    let held = Trainer::vae(ds(), None, recipe.clone(), cpu_runtime(dir.path())).unwrap();
    let err = Trainer::vae(ds(), None, recipe.clone(), cpu_runtime(dir.path())).unwrap_err().to_string();
    assert!(err.contains(&format!("PID {}", std::process::id())), "{err}");
    drop(held);
    Trainer::vae(ds(), None, recipe, cpu_runtime(dir.path())).unwrap();
}

fn sample(vae: &Path, out: &Path, extra: &[&str]) -> Output {
    Command::new(example("sample"))
        .args(["--vae", vae.to_str().unwrap(), "--reconstruct", "--dataset-dir", mini().to_str().unwrap()])
        .args(["--device", "cpu", "--out"])
        .arg(out)
        .args(extra)
        .output()
        .unwrap()
}

// Case 4: sample into a folder holding another sample run replaced its
// predictions, metrics.csv and report.md without a word.
#[test]
fn sample_and_evaluate_refuse_another_runs_outputs_unless_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let vae = vae(dir.path());
    let out = dir.path().join("samples");
    let o = sample(&vae, &out, &["--threshold", "0.5"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let report = std::fs::read(out.join("report.md")).unwrap();
    // a stray prediction the next run would not write
    std::fs::write(out.join("zzz_999999.npz"), b"old").unwrap();
    let o = sample(&vae, &out, &["--threshold", "0.3"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("holds another run's (threshold: theirs 0.5, this one 0.3)"), "{}", stderr(&o));
    assert!(stderr(&o).contains("--overwrite"), "{}", stderr(&o));
    assert_eq!(std::fs::read(out.join("report.md")).unwrap(), report, "nothing replaced");
    // the same run again is a rerun in place
    assert!(sample(&vae, &out, &["--threshold", "0.5"]).status.success());
    let o = sample(&vae, &out, &["--threshold", "0.3", "--overwrite"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(out.join("report.md").exists() && out.join("metrics.csv").exists());
    assert!(!out.join("zzz_999999.npz").exists(), "the earlier run's files are removed, not mixed in");

    let evaluate = |extra: &[&str]| {
        Command::new(example("evaluate"))
            .args(["--vae", vae.to_str().unwrap(), "--dataset-dir", mini().to_str().unwrap(), "--predictions"])
            .arg(&out)
            .args(extra)
            .output()
            .unwrap()
    };
    // evaluating a sample folder in place is the workflow; another evaluation of it is refused
    assert!(evaluate(&["--threshold", "0.5"]).status.success());
    let o = evaluate(&["--threshold", "0.4"]);
    assert!(!o.status.success() && stderr(&o).contains("another run's (settings"), "{}", stderr(&o));
    assert!(evaluate(&["--threshold", "0.4", "--overwrite"]).status.success());
    // predictions of a sample run that never finished are refused
    let rec = out.join(".radvox-sample.json");
    let text = std::fs::read_to_string(&rec).unwrap().replace("\"complete\": true", "\"complete\": false");
    std::fs::write(&rec, text).unwrap();
    let o = evaluate(&["--out", dir.path().join("eval").to_str().unwrap()]);
    assert!(!o.status.success() && stderr(&o).contains("has not finished"), "{}", stderr(&o));
}

// The latent cache: precompute over another VAE's cache rewrote it frame by
// frame while cache.json still named the old VAE (a reader, or a kill,
// saw a mix).
#[test]
fn precompute_refuses_another_vaes_cache_and_a_rerun_is_a_no_op() {
    let dir = tempfile::tempdir().unwrap();
    let a = vae(&dir.path().join("a"));
    let b = {
        let out = dir.path().join("b");
        let o = train_vae(&out, &["--epochs", "1", "--max-steps", "1", "--seed", "9"]);
        assert!(o.status.success(), "{}", stderr(&o));
        out.join("last.safetensors")
    };
    let cache = dir.path().join("cache");
    let run = |vae: &Path, extra: &[&str]| {
        Command::new(example("precompute_latents"))
            .args(["--vae", vae.to_str().unwrap(), "--dataset-dir", mini().to_str().unwrap(), "--device", "cpu"])
            .args(["--no-progress", "--out"])
            .arg(&cache)
            .args(extra)
            .output()
            .unwrap()
    };
    assert!(run(&a, &[]).status.success());
    let manifest = std::fs::read(cache.join("cache.json")).unwrap();
    let latent = cache.join("alpha").join("000000_target.npy");
    let modified = std::fs::metadata(&latent).unwrap().modified().unwrap();
    let o = run(&a, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::metadata(&latent).unwrap().modified().unwrap(), modified, "a rerun encodes nothing");
    assert_eq!(std::fs::read(cache.join("cache.json")).unwrap(), manifest);
    let o = run(&b, &[]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("holds the latents of another VAE") && stderr(&o).contains("--overwrite"),
        "{}",
        stderr(&o)
    );
    assert_eq!(std::fs::read(cache.join("cache.json")).unwrap(), manifest, "the cache is untouched");
    assert!(run(&b, &["--overwrite"]).status.success());
    assert_ne!(std::fs::read(cache.join("cache.json")).unwrap(), manifest);
}

// Case 5: a crop larger than the frame trained on crops that were mostly
// padding, silently; one the strides cannot process named no valid size.
#[test]
fn crops_larger_than_the_frame_or_off_the_strides_are_refused_naming_the_largest_valid() {
    let dir = tempfile::tempdir().unwrap();
    let crop = |c: &str| {
        Command::new(example("train_vae"))
            .args(["--crop", c, "--device", "cpu", "--no-progress", "--no-amp", "--epochs", "1", "--max-steps", "1"])
            .arg("--out")
            .arg(dir.path().join(c))
            .output()
            .unwrap()
    };
    // the fixtures' frames are (Z, H, W) = (10, 36, 20)
    let o = crop("64,64,64");
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("crop 64,64,64 is larger than the (Z, H, W) grid 10,36,20"), "{}", stderr(&o));
    assert!(stderr(&o).contains("the largest crop every frame holds is 10,36,20"), "{}", stderr(&o));
    let o = crop("9,36,20");
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("the largest valid crop is 8,36,20"), "{}", stderr(&o));
    let o = crop("8,36,20");
    assert!(o.status.success(), "the largest valid crop trains: {}", stderr(&o));
}

// Two simulate --if-missing into one folder (two test binaries, two scripts)
// deleted and rewrote each other's scenes; the second now waits and reuses.
#[test]
fn concurrent_simulate_if_missing_waits_and_reuses_one_complete_root() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sim");
    let spawn = || {
        Command::new(example("simulate"))
            .args(["--scenes", "2", "--frames", "3", "--seed", "4", "--if-missing", "--no-progress", "--out"])
            .arg(&out)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(a.status.success() && b.status.success(), "{} / {}", stderr(&a), stderr(&b));
    let said = |o: &Output| String::from_utf8_lossy(&o.stdout).contains("reused");
    assert!(said(&a) ^ said(&b), "exactly one simulated, the other reused its root");
    let ds = Dataset::open(out.join("ntu"), Split::All, &DatasetConfig::default()).unwrap();
    assert_eq!(ds.len(), 6);
}
