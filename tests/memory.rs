//! The memory planner against libtorch's real allocations (every CPU
//! tensor counted by the shim's allocator) for each VAE preset and the
//! latent UNet (diffusion and consistency distillation), with and without
//! AMP and checkpointing; the trainer's plan
//! check at start; and surviving an out-of-memory step (injected).

#![allow(clippy::result_large_err)] // errors carry the file, as the library's do

use std::sync::Mutex;

use radvox::data::layout::Layout;
use radvox::diffusion::{Consistency, ConsistencyConfig, EdmConfig};
use radvox::io::safetensors::named_variables;
use radvox::memory::{measure, ModelConfig, Planner, Precision};
use radvox::model::trace::{Backend, Tape};
use radvox::model::{Checkpointing, FrozenVae, Tiling, Unet3d, UnetConfig, Vae3d, VaeConfig};
use radvox::sys::{cpu_bf16, shim, CpuBf16};
use radvox::train::engine::is_out_of_memory;
use radvox::train::{Amp, Objective, OptimRecipe, Runtime, TrainError, Trainer, VaeRecipe, VaeTrainer};
use radvox::{Dataset, DatasetConfig, Split};
use tch::{nn, Device, Kind, Tensor};

mod common;

/// The counting allocator sees every thread's tensors: tests here run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Peak counted tensor bytes of `step` (run once before, so gradients exist),
/// plus `held`: the inputs allocated before counting started.
fn counted_peak(held: u64, step: &dyn Fn()) -> u64 {
    step();
    shim::host_reset_peak();
    let (before, _) = shim::host_tensor_bytes();
    step();
    let (_, peak) = shim::host_tensor_bytes();
    (peak - before) as u64 + held
}

fn check(what: &str, predicted: u64, measured: u64, failures: &mut Vec<String>) {
    let err = predicted as f64 / measured as f64 - 1.0;
    let line = format!("{what}: predicted {} measured {} ({:+.1}%)", predicted >> 10, measured >> 10, 100.0 * err);
    println!("{line} KiB");
    if err.abs() > 0.08 {
        failures.push(line);
    }
}

/// The counting allocator sees an allocation and its free (process-wide,
/// so it runs here, one test at a time, not beside the library's tests).
#[test]
fn counting_allocator_tracks_tensor_bytes() {
    let _g = serial();
    assert!(shim::count_host_tensors());
    let a = Tensor::zeros([1000], (Kind::Float, Device::Cpu));
    shim::host_reset_peak();
    let (before, _) = shim::host_tensor_bytes();
    let b = Tensor::zeros([250_000], (Kind::Float, Device::Cpu));
    let (during, peak) = shim::host_tensor_bytes();
    assert!(during - before >= 1_000_000, "{before} -> {during}");
    drop(b);
    let (after, peak_after) = shim::host_tensor_bytes();
    assert!(during - after >= 1_000_000, "the free is counted: {during} -> {after}");
    assert!(peak >= during && peak_after == peak);
    assert_eq!((&a + 1.0).sum(Kind::Float).double_value(&[]), 1000.0, "tensors still work");
    assert!(shim::cuda_allocated(0).is_none() || tch::Cuda::is_available());
    assert!(shim::cuda_reserved(0).is_none() || tch::Cuda::is_available());
}

/// With [`measure::return_large_frees`] a large free leaves the resident set
/// at once, and the peak sampler sees a large allocation while it lives.
#[test]
fn large_frees_return_to_the_os_and_the_sampler_sees_them() {
    let _g = serial();
    assert!(measure::return_large_frees());
    // black_box: in a release build the optimiser may drop an unread allocation
    let v = std::hint::black_box(vec![1u8; 16 << 20]); // above the threshold: its own mapping
    let during = measure::rss_anon();
    drop(v);
    let after = measure::rss_anon();
    assert!(during >= after + (12 << 20), "unmapped at once: {during} -> {after}");

    let sampler = measure::PeakSampler::start(std::time::Duration::from_millis(1));
    let before = measure::rss_anon();
    let v = std::hint::black_box(vec![1u8; 64 << 20]); // touched: 64 MiB resident
    std::thread::sleep(std::time::Duration::from_millis(30));
    drop(v);
    let peak = sampler.stop();
    assert!(peak >= before + (60 << 20), "peak {peak} before {before}");
}

/// The simulation against libtorch's counted tensor peak of a real step, on
/// this machine's kind of CPU (`Backend::cpu()`: bf16 convolutions run in
/// oneDNN where the CPU has bf16 instructions, unfold their input where it
/// only emulates bf16). Float32 cases use the grids that prove the
/// activation model; bf16 cases, ~20x slower where emulated, use the
/// smallest grid at which activations still dominate the weight copies.
#[test]
fn planned_activation_peaks_match_counted_allocations() {
    let _g = serial();
    assert!(shim::count_host_tensors());
    let backend = Backend::cpu();
    let emulated = cpu_bf16() == CpuBf16::Emulated;
    let mut failures = Vec::new();
    // Float32 CPU convolutions of small inputs unfold them (slow): the larger
    // grid runs bf16 only; `standard` (attention) runs on a small grid.
    let (both, bf16, f32): (&[Amp], &[Amp], &[Amp]) = (&[Amp::Off, Amp::CpuBf16], &[Amp::CpuBf16], &[Amp::Off]);
    let cases: Vec<(&str, [i64; 3], &[Amp])> = if emulated {
        vec![
            ("ultra_lightweight", [8, 32, 32], f32),
            ("ultra_lightweight", [4, 16, 16], bf16),
            ("seed_baseline", [8, 32, 32], f32),
            ("seed_baseline", [4, 16, 16], bf16),
            ("lightweight", [8, 32, 32], f32),
            ("lightweight", [4, 16, 16], bf16),
            ("standard", [4, 16, 16], f32),
            ("standard", [2, 8, 8], bf16),
        ]
    } else {
        vec![
            ("ultra_lightweight", [8, 32, 32], both),
            ("ultra_lightweight", [16, 64, 64], bf16),
            ("seed_baseline", [8, 32, 32], both),
            ("lightweight", [8, 32, 32], both),
            ("standard", [4, 16, 16], both),
        ]
    };
    for (name, grid, amps) in cases {
        let vs = nn::VarStore::new(Device::Cpu);
        let vae = Vae3d::new(&vs.root(), &VaeConfig::named(name).unwrap()).unwrap();
        let shape = [1, 4, grid[0], grid[1], grid[2]];
        let x = Tensor::rand(shape, (Kind::Float, Device::Cpu));
        let eps = Tensor::randn(vae.latent_shape(shape), (Kind::Float, Device::Cpu));
        let held = (x.numel() + eps.numel()) as u64 * 4;
        let mse = |r: &Tensor, t: &Tensor| r.to_kind(Kind::Float).mse_loss(t, tch::Reduction::Mean);
        for &amp in amps {
            for ck in [Checkpointing::Off, Checkpointing::PerBlock, Checkpointing::Segments(4)] {
                if name == "standard" && amp == Amp::CpuBf16 && ck == Checkpointing::Segments(4) {
                    // At this tiny grid the 78 MB of bf16 weight copies dominate, and
                    // replaying a quarter of the model holds ~15-20% more than modelled.
                    continue;
                }
                let measured = counted_peak(held, &|| {
                    amp.run(|| vae.backward(&x, Some(&eps), ck, 1.0, &mse)).unwrap();
                });
                let mut tape = Tape::new(backend, amp != Amp::Off);
                vae.trace_step(&mut tape, shape, ck);
                check(&format!("{name} {grid:?} {amp:?} {ck}"), tape.simulate().peak(), measured, &mut failures);
            }
        }
    }
    let edm = EdmConfig::default();
    for every_level in [false, true] {
        let vs = nn::VarStore::new(Device::Cpu);
        let unet =
            Unet3d::new(&vs.root(), &UnetConfig { cond_every_level: every_level, ..Default::default() }).unwrap();
        for amp in [Amp::Off, Amp::CpuBf16] {
            let shape = if emulated && amp == Amp::CpuBf16 { [1, 4, 8, 16, 16] } else { [1, 4, 16, 32, 32] };
            let (y, c) =
                (Tensor::randn(shape, (Kind::Float, Device::Cpu)), Tensor::randn(shape, (Kind::Float, Device::Cpu)));
            let draws = edm.draw(&y, 1);
            let held = 3 * y.numel() as u64 * 4;
            for ck in [false, true] {
                let measured = counted_peak(held, &|| {
                    amp.run(|| edm.backward(&unet, &y, &c, Some(&draws), ck, 1.0)).unwrap();
                });
                let mut tape = Tape::new(backend, amp != Amp::Off);
                unet.trace_step(&mut tape, shape, ck);
                let what = format!("unet {shape:?} {amp:?} ck {ck} cond every level {every_level}");
                check(&what, tape.simulate().peak(), measured, &mut failures);
            }
        }
    }
    // consistency distillation: the teacher's Heun step and the target run
    // without gradients before the student's step, which adds the noisy
    // latent and the target to what a diffusion step holds
    let nets: Vec<(nn::VarStore, Unet3d)> = (0..3)
        .map(|_| {
            let vs = nn::VarStore::new(Device::Cpu);
            let u = Unet3d::new(&vs.root(), &UnetConfig::default()).unwrap();
            (vs, u)
        })
        .collect();
    let (teacher, target, student) = (&nets[0].1, &nets[1].1, &nets[2].1);
    let cd = Consistency { edm };
    let cfg = ConsistencyConfig::default();
    let shape = [1, 4, 16, 32, 32];
    let (y, c) = (Tensor::randn(shape, (Kind::Float, Device::Cpu)), Tensor::randn(shape, (Kind::Float, Device::Cpu)));
    let (n, z) = cd.draw(cfg.n, &y, 1);
    let held = 3 * y.numel() as u64 * 4;
    for ck in [false, true] {
        let measured = counted_peak(held, &|| {
            let denoise = |x: &Tensor, s: &Tensor| edm.denoise(teacher, x, s, &c, false);
            let f_target = |x: &Tensor, s: &Tensor| cd.f(target, x, s, &c, false);
            let pair = cd.pairs(&cfg, &y, (&n, &z), &denoise, &f_target);
            let mut rec = radvox::model::checkpoint::Recorder::default();
            let loss = cd.loss(&cfg, student, &pair, &c, ck.then_some(&mut rec));
            if ck {
                rec.backward(&loss);
            } else {
                loss.backward();
            }
        });
        let planner = Planner::new(backend).model(&ModelConfig::Consistency(UnetConfig::default())).unwrap();
        let plan = planner.plan(
            [16, 32, 32],
            1,
            Precision::F32,
            if ck { Checkpointing::PerBlock } else { Checkpointing::Off },
        );
        let predicted = plan.inputs + plan.activations + plan.transient;
        check(&format!("consistency {shape:?} ck {ck}"), predicted, measured, &mut failures);
    }
    assert!(failures.is_empty(), "beyond 8% on {backend:?}:\n{}", failures.join("\n"));
}

/// The inference plan (a frozen VAE encoding then decoding a whole frame,
/// no gradients, float32) against libtorch's counted peak, for every
/// preset, whole and in tiles; the caller's f16 frame is held throughout.
#[test]
fn planned_inference_peaks_match_counted_allocations() {
    let _g = serial();
    assert!(shim::count_host_tensors());
    let planner = Planner::new(Backend::cpu());
    let mut failures = Vec::new();
    for (name, grid, tile) in [
        ("ultra_lightweight", [16, 64, 64], [8, 32, 32]),
        ("seed_baseline", [16, 64, 64], [8, 32, 32]),
        ("lightweight", [16, 64, 64], [8, 32, 32]),
        // attention's n x n matrices dominate from here (n = 1024 at the lowest level)
        ("standard", [16, 64, 64], [16, 32, 32]),
    ] {
        let cfg = VaeConfig::named(name).unwrap();
        let mp = planner.model(&ModelConfig::Vae(cfg.clone())).unwrap();
        let vs = nn::VarStore::new(Device::Cpu);
        let vae = Vae3d::new(&vs.root(), &cfg).unwrap();
        let mut frozen = FrozenVae {
            vs,
            vae,
            channel_scale: vec![1.0, 0.5, 0.25, 1.0],
            hash: String::new(),
            tiling: None,
            occupancy_logits: false,
        };
        let frame = Tensor::rand([1, 4, grid[0], grid[1], grid[2]], (Kind::Half, Device::Cpu));
        for tiling in [None, Some(Tiling::new(tile, 8))] {
            frozen = frozen.with_tiling(tiling).unwrap();
            let plan = mp.plan_inference(grid, tiling).unwrap();
            let measured = counted_peak(plan.frame, &|| {
                let _ = frozen.decode(&frozen.encode(&frame));
            });
            let what = format!("{name} {grid:?} {}", plan.tiles_flag());
            check(&what, plan.device_tensors() - plan.params, measured, &mut failures);
        }
    }
    assert!(failures.is_empty(), "beyond 8%:\n{}", failures.join("\n"));
}

/// Scene beta: two frames, both occupied (an empty frame's GroupNorm has
/// zero variance, which makes `conv_in.bias`'s gradient depend on the
/// summation order, so it would differ between batch 2 and two batches of 1).
fn beta() -> Dataset {
    let cfg = DatasetConfig {
        layout: Layout::Resample { zhw: [8, 16, 16] },
        train_scenes: Some(vec!["beta".into()]),
        val_scenes: Some(vec!["alpha".into()]),
        ..Default::default()
    };
    Dataset::open(common::mini(), Split::Train, &cfg).unwrap()
}

fn optim() -> OptimRecipe {
    OptimRecipe { epochs: 1, batch_size: 2, grad_accum: 1, seed: 3, lr: 1e-3, shuffle: false, ..Default::default() }
}

fn config() -> VaeRecipe {
    VaeRecipe { optim: optim(), ..Default::default() }
}

fn trainer(recipe: VaeRecipe, runtime: Runtime) -> Result<VaeTrainer, TrainError> {
    Trainer::vae(beta(), None, recipe, runtime)
}

fn vars(t: &VaeTrainer) -> Vec<(String, Tensor)> {
    named_variables(t.objective().var_store())
}

/// Micro-steps over the whole (beta) epoch: their losses and the accumulated gradients.
fn accumulate(mut trainer: VaeTrainer) -> (VaeTrainer, Vec<f64>, Vec<(String, Tensor)>) {
    let batches: Vec<_> = trainer.objective().train_loader().epoch(0).map(|b| b.unwrap()).collect();
    let mut losses = Vec::new();
    for b in &batches {
        losses.push(trainer.micro_step(b).unwrap().expect("finite")[0]);
    }
    drop(batches);
    let grads = vars(&trainer).into_iter().map(|(k, t)| (k, t.grad().copy())).collect();
    (trainer, losses, grads)
}

fn assert_same(clean: &(Vec<f64>, Vec<(String, Tensor)>), other: &(Vec<f64>, Vec<(String, Tensor)>)) {
    for (a, b) in clean.0.iter().zip(&other.0) {
        assert!((a - b).abs() <= 1e-6 * a.abs(), "same data and noise: loss {a} vs {b}");
    }
    let global = clean.1.iter().map(|(_, g)| g.abs().max().double_value(&[])).fold(0.0, f64::max);
    for ((name, a), (_, b)) in clean.1.iter().zip(&other.1) {
        let diff = (a - b).abs().max().double_value(&[]);
        let scale = a.abs().max().double_value(&[]);
        assert!(diff <= 1e-5 * scale + 1e-6 * global, "{name}: {diff} (scale {scale})");
    }
}

#[test]
fn an_out_of_memory_step_is_rerun_with_half_the_micro_batch() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let (_, l, g) = accumulate(trainer(config(), common::cpu_runtime(&dir.path().join("a"))).unwrap());
    let mut faulty = trainer(config(), common::cpu_runtime(&dir.path().join("b"))).unwrap();
    // Fails whenever two frames run at once.
    faulty.inject_out_of_memory(|micro_batch, _| micro_batch > 1);
    let (faulty, fl, fg) = accumulate(faulty);
    assert_eq!(faulty.micro_batch(), 1, "halved from 2");
    assert_eq!(faulty.checkpointing(), Checkpointing::Off, "no finer checkpointing needed");
    assert_eq!(faulty.plan().unwrap().run.batch, 1, "the plan follows the fallback");
    // Same data, noise and mean loss: the gradients match the unbroken run.
    assert_same(&(l, g), &(fl, fg));
}

#[test]
fn a_failed_step_is_undone_then_rerun_with_finer_checkpointing() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let cfg = VaeRecipe { optim: OptimRecipe { batch_size: 1, grad_accum: 2, ..optim() }, ..config() };
    let (_, l, g) = accumulate(trainer(cfg.clone(), common::cpu_runtime(&dir.path().join("a"))).unwrap());
    let mut faulty = trainer(cfg, common::cpu_runtime(&dir.path().join("b"))).unwrap();
    // The second micro-step fails once, with the first one's gradients accumulated.
    let calls = std::sync::atomic::AtomicUsize::new(0);
    faulty.inject_out_of_memory(move |_, _| calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 1);
    let (faulty, fl, fg) = accumulate(faulty);
    assert_eq!(faulty.micro_batch(), 1);
    assert_ne!(faulty.checkpointing(), Checkpointing::Off, "batch 1 cannot halve: checkpointing instead");
    assert_same(&(l, g), &(fl, fg));
}

#[test]
fn with_no_fallback_left_the_error_carries_the_plan() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let mut trainer = trainer(config(), common::cpu_runtime(dir.path())).unwrap();
    let tried = std::sync::Arc::new(Mutex::new(Vec::new()));
    let log = tried.clone();
    trainer.inject_out_of_memory(move |b, ck| {
        log.lock().unwrap().push((b, ck));
        true
    });
    let before: Vec<Tensor> = vars(&trainer).iter().map(|(_, t)| t.copy()).collect();
    let batch = trainer.objective().train_loader().epoch(0).next().unwrap().unwrap();
    let err = trainer.micro_step(&batch).unwrap_err();
    drop(batch);
    let TrainError::OutOfMemory { message, plan } = &err else { panic!("{err}") };
    assert!(message.contains("out of memory"), "{message}");
    assert!(plan.contains("memory plan") && plan.contains("peak transient"), "{plan}");
    let tried = tried.lock().unwrap().clone();
    assert_eq!(tried[0], (2, Checkpointing::Off));
    assert_eq!(tried[1], (1, Checkpointing::Off), "the micro-batch halves first");
    assert!(tried[2..].iter().all(|&(b, ck)| b == 1 && ck != Checkpointing::Off), "then checkpointing: {tried:?}");
    // Nothing changed: gradients restored, no update.
    for (p, b) in vars(&trainer).iter().zip(&before) {
        assert!(p.1.equal(b));
        let g = p.1.grad();
        assert!(!g.defined() || g.abs().max().double_value(&[]) == 0.0, "{} has a gradient left", p.0);
    }
}

#[test]
fn a_run_that_cannot_fit_is_refused_with_its_plan_unless_forced() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let tiny = Runtime { memory_budget_gib: Some(0.001), ..common::cpu_runtime(dir.path()) };
    let err = trainer(config(), tiny.clone()).unwrap_err();
    let TrainError::WontFit { budget, plan } = &err else { panic!("{err}") };
    assert_eq!(budget, "1.0 MiB");
    assert!(plan.contains("activations kept") && plan.contains("total"), "{plan}");
    assert!(err.to_string().contains("--force"));
    assert!(plan.contains("train_sparse_vae"), "a dense VAE that cannot fit names the sparse family: {plan}");
    let forced = Runtime { force: true, ..tiny };
    assert!(trainer(config(), forced).is_ok());
    let roomy = Runtime { memory_budget_gib: Some(64.0), ..common::cpu_runtime(dir.path()) };
    let t = trainer(config(), roomy).unwrap();
    assert!(t.plan().unwrap().total() < 64 << 30);
    assert_eq!(t.plan().unwrap().run.grid, [8, 16, 16]);
}

#[test]
fn refused_allocations_are_recognised_as_out_of_memory() {
    // A real host allocation libtorch cannot get (128 TiB).
    let err = Tensor::f_zeros([1i64 << 45], (Kind::Float, Device::Cpu)).unwrap_err().to_string();
    assert!(is_out_of_memory(&err), "{err}");
    // The CUDA caching allocator's wording.
    assert!(is_out_of_memory("CUDA out of memory. Tried to allocate 2.00 GiB"));
    let shape_err =
        Tensor::zeros([2, 3], (Kind::Float, Device::Cpu)).f_matmul(&Tensor::zeros([2, 3], (Kind::Float, Device::Cpu)));
    assert!(!is_out_of_memory(&shape_err.unwrap_err().to_string()));
}

#[test]
fn a_resumed_run_is_checked_against_the_budget_too() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let mut t = trainer(config(), common::cpu_runtime(dir.path())).unwrap();
    t.fit().unwrap();
    drop(t);
    let ckpt = dir.path().join("last.safetensors");
    let tiny = Runtime { memory_budget_gib: Some(0.001), ..common::cpu_runtime(dir.path()) };
    let err = Trainer::resume_vae(&ckpt, beta(), None, tiny.clone(), |_| {}).unwrap_err();
    assert!(matches!(err, TrainError::WontFit { .. }), "{err}");
    let forced = Runtime { force: true, ..tiny };
    let forced = Trainer::resume_vae(&ckpt, beta(), None, forced, |r| r.optim.epochs = 2).unwrap();
    assert_eq!((forced.state().epoch, forced.recipe().optim.epochs), (1, 2));
}

/// The sparse VAE's plan from site counts against the counted allocations
/// of a float32 micro-step (the default precision of the sparse family on
/// a CPU), on a surface-like frame, per preset: within 10 %.
#[test]
fn sparse_plans_match_counted_allocations() {
    use radvox::memory::{Run, SparseModel, SparseSites};
    use radvox::model::sparse::{Coords, SparseLossConfig, SparseTensor, SparseVae, SparseVaeConfig};
    use radvox::train::sparse_vae::micro_step;
    let _g = serial();
    assert!(shim::count_host_tensors());
    let grid = [32, 128, 96];
    let mut sites = Vec::new();
    for y in 0..grid[1] {
        for x in 0..grid[2] {
            sites.push([0, 2 + (x / 24), y, x]); // a stepped ground
            if x % 11 == 0 && y % 3 != 0 {
                sites.extend((3..24).map(|z| [0, z, y, x])); // walls
            }
        }
    }
    sites.sort();
    sites.dedup();
    let coords = Coords::new(&sites, 1, grid, [1; 3]).unwrap();
    let mut failures = Vec::new();
    for name in ["sparse_small", "sparse_base"] {
        let cfg = SparseVaeConfig::named(name).unwrap();
        let vs = nn::VarStore::new(Device::Cpu);
        let vae = SparseVae::new(&vs.root(), &cfg).unwrap();
        let feats = Tensor::rand([coords.len() as i64, 4], (Kind::Float, Device::Cpu));
        let x = SparseTensor::new(coords.clone(), feats).unwrap();
        let eps = Tensor::randn(cfg.latent_shape(1, grid), (Kind::Float, Device::Cpu));
        let held = (x.feats.numel() + eps.numel()) as u64 * 4;
        let loss = SparseLossConfig::default();
        // a fresh set per step, as the trainer builds one per batch (its maps are counted)
        let step = || {
            let fresh = Coords::new(&sites, 1, grid, [1; 3]).unwrap();
            let x = SparseTensor::new(fresh, x.feats.shallow_clone()).unwrap();
            micro_step(&vae, &loss, &x, &eps, 1.0).unwrap();
        };
        let measured = counted_peak(held, &step);
        let model = SparseModel { vae: cfg.clone(), sites: SparseSites::of(&cfg, &coords).unwrap() };
        let run = Run {
            model: ModelConfig::SparseVae(Box::new(model)),
            grid,
            batch: 1,
            precision: Precision::F32,
            checkpointing: Checkpointing::Off,
        };
        let plan = Planner::new(Backend::cpu()).plan(&run).unwrap();
        let predicted = plan.activations + plan.transient + plan.inputs;
        let err = predicted as f64 / measured as f64 - 1.0;
        let line = format!(
            "{name} {} sites: predicted {} measured {} KiB ({:+.1}%)",
            coords.len(),
            predicted >> 10,
            measured >> 10,
            100.0 * err
        );
        println!("{line}");
        if err.abs() > 0.10 {
            failures.push(line);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `memory_plan --dataset-dir` plans the sparse presets from the root's
/// site counts and names the one that fits where a dense run does not.
#[test]
fn memory_plan_plans_the_sparse_family_from_a_root_and_offers_it() {
    let out = std::process::Command::new(common::example("memory_plan"))
        .args(["--budget-gb", "24", "--dataset-dir"])
        .arg(common::mini())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    for preset in ["sparse_small", "sparse_base", "sparse_wide"] {
        let rows = text.lines().filter(|l| l.starts_with(&format!("| {preset} (worst of "))).count();
        assert_eq!(rows, 6, "{preset}: batch 1/8/32 x f32/amp\n{text}");
    }
    // ultra_lightweight f32 without checkpointing needs more than 24 GiB at the full grid
    assert!(
        text.lines().any(|l| l.starts_with(
            "ultra_lightweight batch 1 f32 ck off does not fit; the sparse family does: sparse_wide batch 1 f32"
        )),
        "{text}"
    );
}
