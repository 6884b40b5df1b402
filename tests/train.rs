//! The VAE trainer on the fixtures (resampled small so CPU runs are quick):
//! exact resume, accumulation and partial groups, checkpoint contents, best
//! by validation IoU, non-finite handling, AMP plumbing, the example.

use std::path::Path;
use std::process::Command;

use radvox::data::layout::Layout;
use radvox::io::safetensors;
use radvox::model::blocks::Norm;
use radvox::train::{Amp, AmpMode, OptimRecipe, Runtime, TrainError, Trainer, VaeRecipe, VaeTrainer};
use radvox::{Dataset, DatasetConfig, Split};
use tch::nn::Module;
use tch::{nn, Device, Kind, Tensor};

mod common;
use common::mini;

fn small(split: Split) -> Dataset {
    let cfg = DatasetConfig { layout: Layout::Resample { zhw: [8, 16, 16] }, ..Default::default() };
    Dataset::open(mini(), split, &cfg).unwrap()
}

fn optim() -> OptimRecipe {
    OptimRecipe { epochs: 4, grad_accum: 3, seed: 5, lr: 1e-3, ..Default::default() }
}

fn config() -> VaeRecipe {
    VaeRecipe { optim: optim(), ..Default::default() }
}

fn with(o: OptimRecipe) -> VaeRecipe {
    VaeRecipe { optim: o, ..Default::default() }
}

fn trainer(cfg: VaeRecipe, out: &Path) -> VaeTrainer {
    Trainer::vae(small(Split::Train), Some(small(Split::Val)), cfg, common::cpu_runtime(out)).unwrap()
}

fn params(t: &VaeTrainer) -> Vec<(String, Tensor)> {
    safetensors::named_variables(radvox::train::Objective::var_store(t.objective()))
}

#[test]
fn resume_two_plus_two_equals_four_straight() {
    let dir = tempfile::tempdir().unwrap();
    let mut straight = trainer(config(), &dir.path().join("a"));
    straight.fit().unwrap();

    let mut first = trainer(config(), &dir.path().join("b"));
    first.fit_until(2).unwrap();
    assert_eq!(first.state().epoch, 2);
    drop(first);
    let ckpt = dir.path().join("b/last.safetensors");
    let runtime = common::cpu_runtime(&dir.path().join("b"));
    let mut resumed =
        Trainer::resume_vae(&ckpt, small(Split::Train), Some(small(Split::Val)), runtime, |_| {}).unwrap();
    assert_eq!(resumed.state().epoch, 2);
    resumed.fit().unwrap();

    assert_eq!(straight.state(), resumed.state());
    for ((name, a), (_, b)) in params(&straight).iter().zip(params(&resumed)) {
        let diff = (a - &b).abs().max().double_value(&[]);
        assert!(diff <= 1e-6, "{name} differs by {diff}");
    }
    // Something was learned, so equality is not trivial.
    let fresh = trainer(config(), &dir.path().join("c"));
    let moved: f64 = params(&fresh)
        .iter()
        .zip(params(&straight))
        .map(|((_, a), (_, b))| (a - &b).abs().max().double_value(&[]))
        .fold(0.0, f64::max);
    assert!(moved > 1e-4, "weights barely moved: {moved}");
}

#[test]
fn accumulation_steps_on_the_last_partial_group_and_logs_each_step() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = trainer(with(OptimRecipe { epochs: 2, ..optim() }), dir.path());
    let reports = t.fit().unwrap();
    // 4 train frames, accumulation 3: steps after frames 3 and 4, each epoch.
    assert_eq!(t.state().step, 4);
    assert_eq!(t.state().micro, 8);
    assert_eq!(t.state().accum_phase, 0);
    let log = std::fs::read_to_string(dir.path().join("train_log.csv")).unwrap();
    let rows: Vec<&str> = log.lines().collect();
    assert!(rows[0].starts_with("epoch,step,micro_step,lr,loss,recon,kl,grad_norm"));
    assert_eq!(rows.len(), 1 + 4);
    let micro: Vec<&str> = rows[1..].iter().map(|r| r.split(',').nth(2).unwrap()).collect();
    assert_eq!(micro, ["3", "4", "7", "8"]);
    assert!(reports.iter().all(|r| r.loss("loss").unwrap().is_finite() && r.metric("iou").is_some()));
    let png = std::fs::read(dir.path().join("loss.png")).unwrap();
    assert_eq!(&png[1..4], b"PNG");
}

#[test]
fn checkpoints_hold_model_optimizer_and_counters_and_best_follows_val_iou() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = trainer(with(OptimRecipe { epochs: 3, ..optim() }), dir.path());
    let reports = t.fit().unwrap();
    let last = safetensors::read(&dir.path().join("last.safetensors")).unwrap();
    let model_keys = last.tensors.keys().filter(|k| !k.starts_with("adamw.")).count();
    assert_eq!(model_keys, 132);
    assert_eq!(last.tensors.keys().filter(|k| k.starts_with("adamw.m.")).count(), 132);
    assert_eq!(last.tensors.keys().filter(|k| k.starts_with("adamw.v.")).count(), 132);
    for key in ["format", "version", "kind", "recipe", "state", "checksum"] {
        assert!(last.metadata.contains_key(key), "{key}");
    }
    let best_iou = reports.iter().map(|r| r.metric("iou").unwrap()).fold(f64::MIN, f64::max);
    assert_eq!(t.state().best, Some(best_iou));
    let best = safetensors::read(&dir.path().join("best.safetensors")).unwrap();
    let state: serde_json::Value = serde_json::from_str(&best.metadata["state"]).unwrap();
    let best_epoch = reports.iter().position(|r| r.metric("iou").unwrap() == best_iou).unwrap();
    assert_eq!(state["epoch"].as_u64().unwrap() as usize, best_epoch + 1, "best is the epoch with the top IoU");
    // No temp files left behind by the atomic writes.
    // (the one hidden file is the folder's lock, kept for the next writer)
    let hidden: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert_eq!(hidden, [radvox::io::lock::LOCK_FILE]);
}

#[test]
fn three_non_finite_batches_in_a_row_stop_with_the_place() {
    let dir = tempfile::tempdir().unwrap();
    // An absurd learning rate sends the weights to infinity after the first step.
    let cfg = with(OptimRecipe { epochs: 1, grad_accum: 1, lr: 1e30, min_lr: 0.0, ..optim() });
    let mut t = trainer(cfg, dir.path());
    match t.fit() {
        Err(e @ TrainError::NonFinite { count: 3, epoch: 0, batch: 3, .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("epoch 0 batch 3") && msg.contains("alpha/"), "{msg}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(t.state().skipped, 3);
}

#[test]
fn cpu_amp_runs_convs_in_bf16_and_norms_in_f32() {
    assert_eq!(Amp::for_device(true, Device::Cpu), Amp::CpuBf16);
    assert_eq!(Amp::for_device(true, Device::Cuda(0)), Amp::CudaF16);
    assert_eq!(Amp::for_device(false, Device::Cpu), Amp::Off);
    let x = Tensor::randn([1, 8, 4, 4, 4], (Kind::Float, Device::Cpu));
    let w = Tensor::randn([8, 8, 3, 3, 3], (Kind::Float, Device::Cpu));
    let y = Amp::CpuBf16.run(|| x.conv3d(&w, None::<&Tensor>, [1; 3], [1; 3], [1; 3], 1)).unwrap();
    assert_eq!(y.kind(), Kind::BFloat16);
    assert!(!radvox::sys::shim::cpu_autocast_enabled(), "autocast is switched off again");
    // GroupNorm of a bf16 activation: computed in f32, rounded once to bf16.
    let vs = nn::VarStore::new(Device::Cpu);
    let norm = Norm::new(vs.root(), 8);
    let out = norm.forward(&y);
    assert_eq!(out.kind(), Kind::BFloat16);
    let want =
        y.to_kind(Kind::Float).group_norm(8, None::<&Tensor>, None::<&Tensor>, 1e-5, false).to_kind(Kind::BFloat16);
    assert!(out.equal(&want));
    // A bf16 training epoch (forced: this CPU may only emulate bf16) runs and
    // learns finite values, at the smallest grid of the fixtures' tests.
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime { amp: AmpMode::On, ..common::cpu_runtime(dir.path()) };
    let ds = |split| {
        let cfg = DatasetConfig { layout: Layout::Resample { zhw: [4, 8, 8] }, ..Default::default() };
        Dataset::open(common::mini(), split, &cfg).unwrap()
    };
    let mut t =
        Trainer::vae(ds(Split::Train), Some(ds(Split::Val)), with(OptimRecipe { epochs: 1, ..optim() }), runtime)
            .unwrap();
    assert_eq!(t.amp(), Amp::CpuBf16);
    let r = t.fit().unwrap();
    assert!(r[0].loss("loss").unwrap().is_finite());
}

#[test]
fn train_vae_example_runs_and_refuses_bad_flags() {
    let exe = common::example("train_vae");
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(&exe)
        .args(["--epochs", "2", "--resample", "8,16,16", "--no-progress", "--device", "cpu", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("validation IoU per epoch"), "{stdout}");
    // the log has every epoch with its validation, and the precision chosen for this CPU
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("epoch 1 ") && stderr.contains("val iou"), "{stderr}");
    assert!(stderr.contains("precision "), "{stderr}");
    for f in ["last.safetensors", "best.safetensors", "train_log.csv", "loss.png"] {
        assert!(dir.path().join(f).exists(), "{f}");
    }
    let bad = Command::new(&exe).args(["--vae-type", "huge"]).output().unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown VAE preset"));
    let bad = Command::new(&exe).args(["--epochz", "2"]).output().unwrap();
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unexpected argument '--epochz'"));
}

#[test]
fn bad_training_configs_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let rt = common::cpu_runtime(dir.path());
    for (cfg, runtime, needle) in [
        (with(OptimRecipe { grad_accum: 0, ..optim() }), rt.clone(), "grad_accum"),
        (with(OptimRecipe { lr: -1.0, ..optim() }), rt.clone(), "lr"),
        (with(OptimRecipe { lr: f64::NAN, ..optim() }), rt.clone(), "lr"),
        (config(), Runtime { device: "tpu".into(), ..rt.clone() }, "unknown device"),
    ] {
        let err = Trainer::vae(small(Split::Train), None, cfg, runtime).unwrap_err().to_string();
        assert!(err.contains(needle), "{err}");
    }
    // A recipe file a person writes refuses unknown keys, naming the closest.
    let file = dir.path().join("r.json");
    std::fs::write(&file, r#"{"epochs": 2, "grad_acum": 4}"#).unwrap();
    let err = radvox::train::recipe::read_file::<VaeRecipe>(&file).unwrap_err().to_string();
    assert!(err.contains("grad_acum") && err.contains("did you mean `grad_accum`"), "{err}");
    std::fs::write(&file, r#"{"device": "cpu"}"#).unwrap();
    let err = radvox::train::recipe::read_file::<VaeRecipe>(&file).unwrap_err().to_string();
    assert!(err.contains("pass --device"), "{err}");
}
