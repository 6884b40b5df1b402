//! A training run that survives its user (issue 17): one test per defect the
//! hostile-user probe found, each reproducing it against the examples or the
//! library. Kill and signal cases spawn the example and signal it.
#![allow(clippy::result_large_err)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use radvox::data::layout::Layout;
use radvox::io::safetensors;
use radvox::train::{load_vae, Checkpoint, Objective, OptimRecipe, Runtime, TrainError, Trainer, VaeRecipe};
use radvox::{Dataset, DatasetConfig, Split};
use tch::Device;

mod common;
use common::{copy_tree, cpu_runtime, example, mini, stderr, train_vae};

fn ds(split: Split) -> Dataset {
    let cfg = DatasetConfig { layout: Layout::Resample { zhw: [8, 16, 16] }, ..Default::default() };
    Dataset::open(mini(), split, &cfg).unwrap()
}

fn recipe(epochs: usize) -> VaeRecipe {
    VaeRecipe { optim: OptimRecipe { epochs, grad_accum: 2, lr: 1e-3, ..Default::default() }, ..Default::default() }
}

/// A trained VAE checkpoint (library run).
fn vae_checkpoint(dir: &Path) -> PathBuf {
    let mut t = Trainer::vae(ds(Split::Train), Some(ds(Split::Val)), recipe(1), cpu_runtime(dir)).unwrap();
    t.fit().unwrap();
    dir.join("last.safetensors")
}

fn data_rows(path: &Path) -> Vec<Vec<f64>> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split(',').map(|v| v.parse().unwrap()).collect())
        .collect()
}

// 1. A new run into an existing --out overwrote the old run.
#[test]
fn a_new_run_never_replaces_a_finished_one_without_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    assert!(train_vae(&out, &["--epochs", "1"]).status.success());
    let best = std::fs::read(out.join("best.safetensors")).unwrap();
    let log = std::fs::read(out.join("train_log.csv")).unwrap();
    let rows = data_rows(&out.join("train_log.csv")).len();
    let again = train_vae(&out, &["--epochs", "1", "--seed", "9"]);
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains("already holds a run") && stderr(&again).contains("--overwrite"),
        "{}",
        stderr(&again)
    );
    assert_eq!(std::fs::read(out.join("best.safetensors")).unwrap(), best, "the old run is untouched");
    assert_eq!(std::fs::read(out.join("train_log.csv")).unwrap(), log);
    let replaced = train_vae(&out, &["--epochs", "1", "--seed", "9", "--overwrite"]);
    assert!(replaced.status.success(), "{}", stderr(&replaced));
    assert_eq!(data_rows(&out.join("train_log.csv")).len(), rows, "a fresh log, not appended");
}

fn wait_for_rows(log: &Path, n: usize, child: &mut Child) {
    let t = Instant::now();
    while std::fs::read_to_string(log).map_or(0, |s| s.lines().count().saturating_sub(1)) < n {
        assert!(child.try_wait().unwrap().is_none(), "the run ended before it was signalled");
        assert!(t.elapsed() < Duration::from_secs(120), "no optimizer step within 2 minutes");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn spawn_long_run(out: &Path, grad_accum: &str) -> Child {
    Command::new(example("train_vae"))
        .args(["--resample", "8,32,32", "--device", "cpu", "--no-progress", "--no-amp", "--epochs", "40"])
        .args(["--grad-accum", grad_accum, "--out"])
        .arg(out)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: sending a signal to our own child process.
    assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
}

// 2. Interruption lost everything since the last epoch end.
#[test]
fn sigint_saves_last_mid_epoch_and_the_run_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let mut child = spawn_long_run(&out, "1");
    wait_for_rows(&out.join("train_log.csv"), 1, &mut child);
    signal(&child, libc::SIGINT);
    let t = Instant::now();
    let o = child.wait_with_output().unwrap();
    assert!(t.elapsed() < Duration::from_secs(60), "stopped after its step, promptly");
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("stopped by SIGINT") && err.contains("last.safetensors"), "{err}");
    let saved = Checkpoint::read(&out.join("last.safetensors"), "vae").unwrap();
    assert!(saved.state.step >= 1 && saved.state.accum_phase == 0, "{:?}", saved.state);
    let rows = data_rows(&out.join("train_log.csv"));
    let resumed = Command::new(example("train_vae"))
        .args(["--resume", out.join("last.safetensors").to_str().unwrap(), "--epochs", "2"])
        .args(["--device", "cpu", "--no-progress", "--no-amp", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    let after = data_rows(&out.join("train_log.csv"));
    let steps: Vec<f64> = after.iter().map(|r| r[1]).collect();
    let want: Vec<f64> = (1..=steps.len()).map(|s| s as f64).collect();
    assert_eq!(steps, want, "one row per optimizer step across the interruption");
    assert!(after.len() >= rows.len());
}

#[test]
fn a_second_signal_exits_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    // long optimizer steps (8 micro-steps each), so the second signal lands mid-step
    let mut child = spawn_long_run(&out, "8");
    wait_for_rows(&out.join("train_log.csv"), 1, &mut child);
    signal(&child, libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(50));
    signal(&child, libc::SIGTERM);
    let t = Instant::now();
    let status = child.wait().unwrap();
    assert!(t.elapsed() < Duration::from_secs(5), "exited at once");
    assert_eq!(status.code(), Some(128 + libc::SIGTERM));
}

#[test]
fn a_failing_validation_keeps_the_epoch_just_trained() {
    let tmp = tempfile::tempdir().unwrap();
    copy_tree(&mini(), &tmp.path().join("data"));
    let cfg = DatasetConfig { layout: Layout::Resample { zhw: [8, 16, 16] }, ..Default::default() };
    let open = |s| Dataset::open(tmp.path().join("data"), s, &cfg).unwrap();
    let (train, val) = (open(Split::Train), open(Split::Val));
    let victim = val.frames()[0].target.path().to_path_buf();
    let out = tmp.path().join("run");
    let mut t = Trainer::vae(train, Some(val), recipe(2), cpu_runtime(&out)).unwrap();
    std::fs::write(&victim, b"not a frame any more").unwrap();
    let err = t.fit().unwrap_err();
    assert!(matches!(err, TrainError::Validation { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.starts_with("validation: ") && msg.contains(victim.to_str().unwrap()), "{msg}");
    let saved = Checkpoint::read(&out.join("last.safetensors"), "vae").unwrap();
    assert_eq!((saved.state.epoch, saved.state.cursor), (1, 0), "the trained epoch is saved");
}

// 3. An odd grid panicked mid-run. 16. Failed runs left debris.
#[test]
fn an_odd_grid_is_refused_up_front_leaving_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let o = Command::new(example("train_vae"))
        .args(["--resample", "7,31,15", "--device", "cpu", "--no-progress", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "an error, not a panic: {}", stderr(&o));
    assert!(stderr(&o).contains("multiple of the VAE's downsampling"), "{}", stderr(&o));
    assert!(!out.exists(), "no output of a run that never started");
    // A failed --resume leaves nothing either.
    let o = train_vae(&out, &["--resume", dir.path().join("missing.safetensors").to_str().unwrap()]);
    assert!(!o.status.success() && stderr(&o).contains("missing.safetensors"), "{}", stderr(&o));
    assert!(!out.exists());
}

// 4. --device cuda without a GPU panicked.
#[test]
fn a_missing_gpu_is_a_one_line_error_in_every_command() {
    if tch::Cuda::is_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let any = dir.path().join("x.safetensors");
    let (any, m) = (any.to_str().unwrap(), mini());
    let m = m.to_str().unwrap();
    for (exe, args) in [
        ("train_vae", vec!["--dataset-dir", m]),
        ("train_ldm", vec!["--vae", any, "--dataset-dir", m]),
        ("precompute_latents", vec!["--vae", any, "--dataset-dir", m, "--out", any]),
        ("sample", vec!["--vae", any, "--ldm", any, "--dataset-dir", m]),
    ] {
        let o = Command::new(example(exe)).args(&args).args(["--device", "cuda"]).output().unwrap();
        assert_eq!(o.status.code(), Some(1), "{exe}");
        let err = stderr(&o);
        let errors: Vec<&str> = err.lines().filter(|l| !l.starts_with("[warn]") && !l.starts_with("[info]")).collect();
        assert_eq!(errors.len(), 1, "{exe}: one line, no panic: {err}");
        assert!(errors[0].starts_with("error: ") && errors[0].contains("no CUDA GPU"), "{exe}: {err}");
    }
}

// 5. Corrupt weights loaded silently.
#[test]
fn corrupt_weights_are_refused_naming_the_tensor_or_the_damage() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = vae_checkpoint(&dir.path().join("vae"));
    let file = safetensors::read(&ckpt).unwrap();
    // A NaN inside an otherwise valid file (its checksum recomputed to match).
    let mut tensors: Vec<(String, tch::Tensor)> = file.tensors.iter().map(|(k, t)| (k.clone(), t.copy())).collect();
    let victim = "decoder.conv_out.weight";
    let t = &mut tensors.iter_mut().find(|(k, _)| k == victim).unwrap().1;
    let _ = t.view(-1).get(3).fill_(f64::NAN);
    let mut meta = file.metadata.clone();
    meta.remove("checksum");
    let nan = dir.path().join("nan.safetensors");
    safetensors::save_atomic(&nan, &tensors, &meta).unwrap();
    let err = load_vae(&nan, None, Device::Cpu).unwrap_err().to_string();
    assert!(err.contains(victim) && err.contains("non-finite"), "{err}");
    let o = Command::new(example("precompute_latents"))
        .args(["--vae", nan.to_str().unwrap(), "--dataset-dir", mini().to_str().unwrap()])
        .args(["--out", dir.path().join("lat").to_str().unwrap(), "--device", "cpu"])
        .output()
        .unwrap();
    assert!(!o.status.success() && stderr(&o).contains(victim), "{}", stderr(&o));
    // A flipped bit: the content checksum catches it, at load and at resume.
    let mut bytes = std::fs::read(&ckpt).unwrap();
    let n = bytes.len();
    bytes[n - 1000] ^= 0x04;
    let flipped = dir.path().join("flipped.safetensors");
    std::fs::write(&flipped, &bytes).unwrap();
    let err = load_vae(&flipped, None, Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("checksum") && err.contains("flipped.safetensors"), "{err}");
    let runtime = cpu_runtime(&dir.path().join("resumed"));
    let err = Trainer::resume_vae(&flipped, ds(Split::Train), None, runtime, |_| {}).unwrap_err().to_string();
    assert!(err.contains("checksum"), "{err}");
}

// 6. `train_ldm --lr nan` was accepted.
#[test]
fn a_nan_learning_rate_is_refused_by_every_trainer() {
    for (exe, args) in [("train_vae", vec![]), ("train_ldm", vec!["--vae", "x", "--dataset-dir", "y"])] {
        let o = Command::new(example(exe)).args(args).args(["--lr", "nan"]).output().unwrap();
        assert!(!o.status.success());
        assert!(stderr(&o).contains("--lr"), "{exe}: {}", stderr(&o));
    }
    let bad =
        radvox::train::LdmRecipe { optim: OptimRecipe { lr: f64::NAN, ..Default::default() }, ..Default::default() };
    assert!(radvox::train::Recipe::validate(&bad).unwrap_err().to_string().contains("lr"));
    let bad = VaeRecipe { optim: OptimRecipe { min_lr: f64::INFINITY, ..Default::default() }, ..Default::default() };
    assert!(radvox::train::Recipe::validate(&bad).is_err());
}

// 7. Resume silently changed or ignored settings.
#[test]
fn resume_refuses_recipe_flags_that_contradict_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    assert!(train_vae(&out, &["--epochs", "1", "--max-steps", "1"]).status.success());
    let last = out.join("last.safetensors");
    for flag in [["--vae-type", "standard"], ["--batch-size", "2"], ["--grad-accum", "3"]] {
        let o = train_vae(&out, &["--resume", last.to_str().unwrap(), flag[0], flag[1]]);
        assert!(!o.status.success(), "{flag:?}");
        assert!(stderr(&o).contains("contradicts"), "{flag:?}: {}", stderr(&o));
    }
    // without --resample the resumed run keeps its grid (it is recorded)
    let o = Command::new(example("train_vae"))
        .args(["--resume", last.to_str().unwrap(), "--device", "cpu", "--no-progress", "--no-amp", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("resampled to 8,16,16"), "{}", stderr(&o));
}

// 8. train_log.csv got duplicated and backwards rows. 11. loss.png was wrong after a resume.
#[test]
fn logs_and_plot_cover_the_whole_run_once_and_a_no_op_resume_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    // 4 frames, accumulation 2: 2 optimizer steps an epoch; stop at step 3, mid-epoch 1
    assert!(train_vae(&out, &["--epochs", "3", "--grad-accum", "2", "--max-steps", "3"]).status.success());
    let last = out.join("last.safetensors");
    let resumed = train_vae(&out, &["--resume", last.to_str().unwrap()]);
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    let rows = data_rows(&out.join("train_log.csv"));
    let steps: Vec<f64> = rows.iter().map(|r| r[1]).collect();
    assert_eq!(steps, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0], "one row per optimizer step");
    let elapsed: Vec<f64> = rows.iter().map(|r| *r.last().unwrap()).collect();
    assert!(elapsed.windows(2).all(|w| w[1] >= w[0]), "the clock continues: {elapsed:?}");
    assert_eq!(data_rows(&out.join("val_log.csv")).len(), 3, "one validation row per epoch");
    let png = std::fs::read(out.join("loss.png")).unwrap();
    let noop = train_vae(&out, &["--resume", last.to_str().unwrap()]);
    assert!(noop.status.success());
    assert!(stderr(&noop).contains("nothing to do"), "{}", stderr(&noop));
    assert_eq!(std::fs::read(out.join("loss.png")).unwrap(), png, "the picture is not replaced by an empty one");
    assert_eq!(data_rows(&out.join("train_log.csv")).len(), 6);
}

// 9. sample accepted nonsense.
#[test]
fn sample_refuses_nonsense_and_empty_frames_score_no_perfect_marks() {
    let m = mini();
    for (flag, value) in [("--threshold", "nan"), ("--threshold", "1.5"), ("--steps", "0")] {
        let o = Command::new(example("sample"))
            .args(["--vae", "v", "--ldm", "l", "--dataset-dir", m.to_str().unwrap(), flag, value])
            .output()
            .unwrap();
        assert!(!o.status.success());
        assert!(stderr(&o).contains(flag), "{flag} {value}: {}", stderr(&o));
    }
    let nothing = radvox::eval::Occupancy::from_counts(0.0, 0.0, 0.0);
    assert!(nothing.iou == 0.0 && nothing.f1 == 0.0, "no perfect score from nothing: {nothing:?}");
}

// 10. Temp files leaked when a checkpoint write was killed.
#[test]
fn stale_temp_files_of_killed_writers_are_removed_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = vae_checkpoint(&dir.path().join("run"));
    // pid 4194304 is above the kernel's pid limit: a writer that no longer runs
    let stale = dir.path().join("run/.best.safetensors.tmp4194304");
    std::fs::write(&stale, b"half a checkpoint").unwrap();
    let runtime = Runtime { max_steps: Some(1), ..cpu_runtime(&dir.path().join("run")) };
    let _t = Trainer::resume_vae(&ckpt, ds(Split::Train), None, runtime, |r| r.optim.epochs = 2).unwrap();
    assert!(!stale.exists());
}

/// A time budget (`--max-minutes`) stops a run like a step limit: at the
/// first check after the budget ran out (each optimizer step, each epoch's
/// end), `last` saved; a budget already spent trains nothing.
#[test]
fn a_time_budget_stops_the_run_once_it_is_spent() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let budget_s = 1.5;
    let runtime = Runtime { max_minutes: Some(budget_s / 60.0), ..cpu_runtime(&out) };
    let mut t = Trainer::vae(ds(Split::Train), Some(ds(Split::Val)), recipe(200), runtime).unwrap();
    let all_steps = 200 * t.objective().batches_per_epoch() as u64;
    t.fit().unwrap();
    assert!(t.state().step >= 1 && t.state().step < all_steps, "stopped early: {}", t.state().step);
    assert!(out.join("last.safetensors").exists());
    // the last column is the run's elapsed seconds when the row was logged
    let rows = data_rows(&out.join("train_log.csv"));
    let elapsed: Vec<f64> = rows.iter().map(|r| *r.last().unwrap()).collect();
    assert!(elapsed[..elapsed.len() - 1].iter().all(|&e| e < budget_s), "{elapsed:?}");
    let spent = Runtime { max_minutes: Some(1e-9), ..cpu_runtime(&dir.path().join("spent")) };
    let mut t = Trainer::vae(ds(Split::Train), None, recipe(1), spent).unwrap();
    t.fit().unwrap();
    assert_eq!(t.state().step, 0);
    let bad = Runtime { max_minutes: Some(f64::NAN), ..cpu_runtime(&dir.path().join("bad")) };
    assert!(Trainer::vae(ds(Split::Train), None, recipe(1), bad).is_err());
}

// 12. --help was missing.
#[test]
fn every_example_has_help() {
    for exe in [
        "train_vae",
        "train_ldm",
        "train_cd",
        "precompute_latents",
        "sample",
        "evaluate",
        "simulate",
        "voxelize",
        "inspect_dataset",
        "memory_plan",
    ] {
        let o = Command::new(example(exe)).arg("--help").output().unwrap();
        assert!(o.status.success(), "{exe}");
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(text.contains("Usage:") && text.contains("--"), "{exe}: {text}");
        assert!(!text.starts_with(env!("CARGO_PKG_DESCRIPTION")), "{exe} says what it does, not what the crate is");
    }
}

// 13. Errors without context.
#[test]
fn errors_name_the_flag_or_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let o = train_vae(&dir.path().join("a"), &["--epochs", "-1"]);
    assert!(stderr(&o).contains("--epochs"), "{}", stderr(&o));
    let missing = dir.path().join("nope.toml");
    let o = train_vae(&dir.path().join("b"), &["--config", missing.to_str().unwrap()]);
    assert!(!o.status.success() && stderr(&o).contains("nope.toml"), "{}", stderr(&o));
    // a VAE checkpoint given as --ldm says what it is, not "cannot resume"
    let ckpt = vae_checkpoint(&dir.path().join("vae"));
    let o = Command::new(example("sample"))
        .args(["--vae", ckpt.to_str().unwrap(), "--ldm", ckpt.to_str().unwrap()])
        .args(["--dataset-dir", mini().to_str().unwrap(), "--device", "cpu"])
        .output()
        .unwrap();
    let err = stderr(&o);
    assert!(
        err.contains("a vae checkpoint, expected a ldm or cd checkpoint") && err.contains("last.safetensors"),
        "{err}"
    );
}

// 14. A blocking read hung training forever.
#[test]
fn a_fifo_in_place_of_a_frame_is_an_error_not_a_hang() {
    let tmp = tempfile::tempdir().unwrap();
    copy_tree(&mini(), tmp.path());
    let victim = tmp.path().join("alpha/target_voxel/000000.npz");
    let make_fifo = |p: &Path| {
        std::fs::remove_file(p).unwrap();
        let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    };
    // replaced after the dataset was opened: the read refuses it
    let ds = Dataset::open(tmp.path(), Split::All, &DatasetConfig::default()).unwrap();
    make_fifo(&victim);
    let t = Instant::now();
    let err = ds.read(0, radvox::Modality::Target).unwrap_err().to_string();
    assert!(t.elapsed() < Duration::from_secs(5));
    assert!(err.contains("not a regular file (a FIFO)") && err.contains("000000.npz"), "{err}");
    // present when the dataset opens: refused there
    let err = Dataset::open(tmp.path(), Split::All, &DatasetConfig::default()).unwrap_err().to_string();
    assert!(err.contains("a FIFO"), "{err}");
}

// 15. Checkpoints were not byte-reproducible.
#[test]
fn same_seed_same_checkpoint_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let a = vae_checkpoint(&dir.path().join("a"));
    let b = vae_checkpoint(&dir.path().join("b"));
    assert!(std::fs::read(a).unwrap() == std::fs::read(b).unwrap());
}
