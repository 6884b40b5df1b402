//! The latent diffusion stage on the fixtures: UNet, checkpointing,
//! denoiser limits, the latent cache and its VAE hash, training, and the
//! sample example end to end (sparse npz readable by the reader and numpy).

use std::path::Path;
use std::process::Command;

use radvox::data::layout::Layout;
use radvox::diffusion::latents::precompute;
use radvox::diffusion::{EdmConfig, LatentCache, Solver};
use radvox::model::{Unet3d, UnetConfig, VaeConfig};
use radvox::train::{load_sampler, load_vae, LatentSource, LdmRecipe, OptimRecipe, Trainer, VaeRecipe};
use radvox::{Dataset, DatasetConfig, Split};
use tch::{nn, Device, Kind, Tensor};

mod common;
use common::{example, mini};

const GRID: [usize; 3] = [8, 32, 16];

fn ds(split: Split) -> Dataset {
    Dataset::open(mini(), split, &DatasetConfig { layout: Layout::Resample { zhw: GRID }, ..Default::default() })
        .unwrap()
}

/// A VAE trained for two quick epochs, saved under `dir`.
fn vae_checkpoint(dir: &Path) -> std::path::PathBuf {
    let cfg = VaeRecipe {
        optim: OptimRecipe { epochs: 2, grad_accum: 1, lr: 2e-3, ..Default::default() },
        ..Default::default()
    };
    let mut t = Trainer::vae(ds(Split::Train), Some(ds(Split::Val)), cfg, common::cpu_runtime(dir)).unwrap();
    t.fit().unwrap();
    dir.join("last.safetensors")
}

#[test]
fn unet_shapes_parameter_count_and_validation() {
    let vs = nn::VarStore::new(Device::Cpu);
    let unet = Unet3d::new(&vs.root(), &UnetConfig::default()).unwrap();
    let params: i64 = vs.variables().values().map(|t| t.numel() as i64).sum();
    assert_eq!(params, 4_595_844, "ours; the reference of the same settings has 4,732,356");
    for shape in [[1, 8, 16, 32, 32], [2, 8, 4, 8, 4], [1, 8, 3, 8, 8]] {
        let x = Tensor::randn(shape, (Kind::Float, Device::Cpu));
        let c = Tensor::from_slice(&vec![0.1f32; shape[0] as usize]);
        let y = tch::no_grad(|| unet.forward(&x, &c, false));
        assert_eq!(y.size(), [shape[0], 4, shape[2], shape[3], shape[4]]);
    }
    for (cfg, needle) in [
        (UnetConfig { channel_mult: vec![], ..Default::default() }, "channel_mult"),
        (UnetConfig { num_res_blocks: 0, ..Default::default() }, "num_res_blocks"),
        (UnetConfig { attention: true, attention_heads: 5, ..Default::default() }, "attention_heads"),
        (UnetConfig { dropout: 1.5, ..Default::default() }, "dropout"),
    ] {
        assert!(cfg.validate().unwrap_err().to_string().contains(needle), "{needle}");
    }
    let attn = UnetConfig { attention: true, ..Default::default() };
    let vs = nn::VarStore::new(Device::Cpu);
    let u = Unet3d::new(&vs.root(), &attn).unwrap();
    let x = Tensor::randn([1, 8, 4, 8, 8], (Kind::Float, Device::Cpu));
    assert_eq!(tch::no_grad(|| u.forward(&x, &Tensor::from_slice(&[0.0f32]), false)).size(), [1, 4, 4, 8, 8]);
}

#[test]
fn checkpointed_unet_gradients_equal_the_plain_path() {
    let vs = nn::VarStore::new(Device::Cpu);
    let unet = radvox::sys::with_init_seed(65, || Unet3d::new(&vs.root(), &UnetConfig::default()).unwrap());
    let y = radvox::sys::normal(65, &[2, 4, 4, 8, 4], Device::Cpu);
    let c = radvox::sys::normal(66, &[2, 4, 4, 8, 4], Device::Cpu);
    let edm = EdmConfig::default();
    let grads = |ck: bool| {
        for (_, mut t) in vs.variables() {
            t.zero_grad();
        }
        let draws = edm.draw(&y, 11);
        let loss = edm.backward(&unet, &y, &c, Some(&draws), ck, 1.0);
        let mut g: Vec<(String, Tensor)> = vs.variables().into_iter().map(|(k, t)| (k, t.grad().copy())).collect();
        g.sort_by(|a, b| a.0.cmp(&b.0));
        (loss, g)
    };
    let (l0, g0) = grads(false);
    let (l1, g1) = grads(true);
    // the recomputed segments may reduce in another order across threads:
    // float32 agreement (failed once at 1e-6 in a loaded CI run)
    assert!((l0 - l1).abs() <= 1e-5 * l0.abs(), "loss {l0} plain vs {l1} checkpointed");
    // Biases and embedding projections right before a GroupNorm add a
    // per-channel constant the norm removes: their gradient is zero up to
    // rounding noise, which is measured against the largest gradient.
    let global = g0.iter().map(|(_, g)| g.abs().max().double_value(&[])).fold(0.0, f64::max);
    for ((name, a), (_, b)) in g0.iter().zip(&g1) {
        let scale = a.abs().max().double_value(&[]);
        let diff = (a - b).abs().max().double_value(&[]);
        assert!(diff <= 1e-5 * scale + 1e-6 * global, "{name}: {diff} vs scale {scale} (global {global})");
    }
}

#[test]
fn the_denoiser_recovers_a_clean_latent_at_small_sigma() {
    let vs = nn::VarStore::new(Device::Cpu);
    let unet = Unet3d::new(&vs.root(), &UnetConfig::default()).unwrap();
    let edm = EdmConfig::default();
    let y = Tensor::randn([1, 4, 4, 8, 4], (Kind::Float, Device::Cpu)) * 0.5;
    let cond = Tensor::randn([1, 4, 4, 8, 4], (Kind::Float, Device::Cpu));
    // |D - y| <= |c_skip - 1| |y| + c_skip sigma |n| + c_out |F|, all O(sigma):
    // the error vanishes with sigma even for an untrained network.
    let err = |sigma: f64| {
        let noisy = &y + y.randn_like() * sigma;
        let d = tch::no_grad(|| edm.denoise(&unet, &noisy, &Tensor::from_slice(&[sigma as f32]), &cond, false));
        (&d - &y).abs().max().double_value(&[])
    };
    let (small, larger) = (err(0.002), err(0.02));
    assert!(small < 0.01, "sigma 0.002: max error {small}");
    assert!(small < larger / 5.0, "error shrinks with sigma: {small} vs {larger}");
    // At large sigma the skip vanishes: D is the network's (scaled) guess, not the input.
    let noisy = &y + y.randn_like() * 80.0;
    let d = tch::no_grad(|| edm.denoise(&unet, &noisy, &Tensor::from_slice(&[80f32]), &cond, false));
    assert!((&d - &noisy).abs().mean(Kind::Float).double_value(&[]) > 10.0);
}

#[test]
fn latent_cache_is_tied_to_its_vae_and_training_loss_falls_and_sampling_repeats() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = vae_checkpoint(&dir.path().join("vae"));
    let (vae, _) = load_vae(&ckpt, Some(&VaeConfig::ultra_lightweight()), Device::Cpu).unwrap();
    let err = load_vae(&ckpt, Some(&VaeConfig::seed_baseline()), Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("VAE config differs") && err.contains("\"base_channels\":16"), "{err}");
    let train = ds(Split::Train);
    let cache_dir = dir.path().join("latents");
    let m = precompute(&vae, &ds(Split::All), &cache_dir, &ckpt, false, &|_| {}).unwrap();
    assert_eq!(m.latent_shape, [4, 4, 8, 4]);
    let cache = LatentCache::open(&cache_dir, &vae.hash, &train).unwrap();
    let (t, r) = cache.read(&train.frames()[0].id).unwrap();
    let want = vae.encode(&{
        let g = train.read(0, radvox::Modality::Target).unwrap();
        g.to_tensor()
    });
    assert!((t - want.squeeze_dim(0)).abs().max().double_value(&[]) < 1e-2, "cached latent = f16 of the encoding");
    assert_eq!(r.size(), [4, 4, 8, 4]);
    let err = LatentCache::open(&cache_dir, "0123456789abcdef", &train).unwrap_err().to_string();
    assert!(err.contains("not by this VAE 0123456789abcdef"), "{err}");

    // Train on the cache; the loss falls (seeded, so this is deterministic).
    let cfg = LdmRecipe {
        optim: OptimRecipe { epochs: 12, grad_accum: 1, lr: 1e-3, ..LdmRecipe::default().optim },
        ..Default::default()
    };
    let out = dir.path().join("ldm");
    let runtime = common::cpu_runtime(&out);
    let mut trainer = Trainer::ldm(train, LatentSource::Cache(cache), &vae.hash, cfg, runtime).unwrap();
    let losses: Vec<f64> = trainer.fit().unwrap().iter().map(|r| r.loss("loss").unwrap()).collect();
    let (first, last) = (losses[..3].iter().sum::<f64>() / 3.0, losses[9..].iter().sum::<f64>() / 3.0);
    assert!(last < first, "EDM loss {losses:?}");
    assert!(out.join("loss.png").exists() && out.join("train_log.csv").exists());

    let mut sampler = load_sampler(&out.join("last.safetensors"), &vae.hash, Device::Cpu).unwrap().sampler;
    let cond = Tensor::randn([2, 4, 4, 8, 4], (Kind::Float, Device::Cpu));
    let a = sampler.sample(&cond, 18, Solver::Heun, 5);
    assert!(a.equal(&sampler.sample(&cond, 18, Solver::Heun, 5)), "same seed, same sample");
    assert!(!a.equal(&sampler.sample(&cond, 18, Solver::Heun, 6)));
    assert!(!a.equal(&sampler.sample(&cond, 18, Solver::Euler, 5)));
    // A temperature scales the initial noise: 0 ignores the seed, 0.5 lies
    // between it and the full draw, and a negative one is refused.
    let spread = |t: f64, sampler: &mut radvox::diffusion::Sampler| {
        sampler.set_temperature(t).unwrap();
        let (x, y) = (sampler.sample(&cond, 18, Solver::Heun, 5), sampler.sample(&cond, 18, Solver::Heun, 6));
        (x - y).abs().mean(Kind::Float).double_value(&[])
    };
    let (cold, half, full) = (spread(0.0, &mut sampler), spread(0.5, &mut sampler), spread(1.0, &mut sampler));
    assert!(cold == 0.0 && 0.0 < half && half < full, "seed-to-seed spread at t = 0, 0.5, 1: {cold} {half} {full}");
    assert!(sampler.sample(&cond, 18, Solver::Heun, 5).equal(&a), "temperature 1 is the plain sampler");
    let err = sampler.set_temperature(-0.1).unwrap_err().to_string();
    assert!(err.contains("temperature must be finite and >= 0, got -0.1"), "{err}");
    // A lower sigma_max starts the ODE lower: the recipe's own is the plain
    // sampler, another changes the sample, one at or under sigma_min is refused.
    sampler.set_sigma_max(80.0).unwrap();
    assert!(sampler.sample(&cond, 18, Solver::Heun, 5).equal(&a), "sigma_max 80 is the recipe's");
    sampler.set_sigma_max(10.0).unwrap();
    assert!(!sampler.sample(&cond, 18, Solver::Heun, 5).equal(&a), "sigma_max 10 changed nothing");
    let err = sampler.set_sigma_max(0.002).unwrap_err().to_string();
    assert!(err.contains("sigma_max must be finite and above sigma_min 0.002, got 0.002"), "{err}");
    assert!(load_sampler(&out.join("last.safetensors"), "ffffffffffffffff", Device::Cpu).is_err(), "other VAE refused");
    // The live weights are another network than their average.
    let live = radvox::train::load_sampler_weights(
        &out.join("last.safetensors"),
        &vae.hash,
        Device::Cpu,
        radvox::train::SamplerWeights::Live,
    )
    .unwrap()
    .sampler;
    let y = Tensor::randn([2, 4, 4, 8, 4], (Kind::Float, Device::Cpu));
    let (e_ema, e_live) = (sampler.denoising_error(&y, &cond, 1.0, 3), live.denoising_error(&y, &cond, 1.0, 3));
    assert!(e_ema != e_live && e_live.is_finite(), "EMA {e_ema}, live {e_live}");
}

#[test]
fn sample_example_writes_npz_ply_png_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = vae_checkpoint(&dir.path().join("vae"));
    let ldm = dir.path().join("ldm");
    let run = |exe: &str, args: &[&str]| {
        let out = Command::new(example(exe)).args(args).output().unwrap();
        assert!(out.status.success(), "{exe}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let (v, m) = (ckpt.to_str().unwrap(), mini());
    let m = m.to_str().unwrap();
    run(
        "train_ldm",
        &[
            "--vae",
            v,
            "--dataset-dir",
            m,
            "--resample",
            "8,32,16",
            "--epochs",
            "1",
            "--grad-accum",
            "1",
            "--device",
            "cpu",
            "--no-progress",
            "--out",
            ldm.to_str().unwrap(),
        ],
    );
    let ldm_ckpt = ldm.join("last.safetensors");
    let samples = dir.path().join("samples");
    let args = [
        "--vae",
        v,
        "--ldm",
        ldm_ckpt.to_str().unwrap(),
        "--dataset-dir",
        m,
        "--resample",
        "8,32,16",
        "--device",
        "cpu",
        "--threshold",
        "0.05",
        "--out",
        samples.to_str().unwrap(),
    ];
    let stdout = run("sample", &args);
    assert!(
        stdout.lines().any(|l| l.starts_with("beta/000000") && l.contains("(radar "))
            && stdout.contains("2 frames, 18 Heun steps, seed 0, threshold 0.05"),
        "{stdout}"
    );
    for f in ["beta_000000.npz", "beta_000000.ply", "beta_000000.png", "beta_000001.npz", "metrics.csv", "report.md"] {
        assert!(samples.join(f).exists(), "{f}");
    }
    let csv = std::fs::read_to_string(samples.join("metrics.csv")).unwrap();
    assert!(csv.lines().last().unwrap().starts_with("overall"), "{csv}");
    assert!(!csv.contains("NaN") && !csv.contains("inf"), "{csv}");
    let frame = radvox::data::frame::read_sparse(&samples.join("beta_000000.npz")).unwrap();
    assert_eq!(frame.shape, [32, 16, 8, 4]);
    // Same seed, same files.
    let first = std::fs::read(samples.join("beta_000000.npz")).unwrap();
    run("sample", &args);
    assert!(std::fs::read(samples.join("beta_000000.npz")).unwrap() == first, "same seed, same bytes");
    // --samples 1 is the plain run, byte for byte; --samples 3 writes the
    // occupancy probability over three samples and its spread
    run("sample", &[&args[..], &["--samples", "1"]].concat());
    assert!(std::fs::read(samples.join("beta_000000.npz")).unwrap() == first, "--samples 1 changed the output");
    // --temperature: reported, and refused where nothing is sampled from noise
    let cold = dir.path().join("cold");
    let mut t0: Vec<&str> = args.to_vec();
    *t0.last_mut().unwrap() = cold.to_str().unwrap();
    t0.extend(["--temperature", "0"]);
    assert!(run("sample", &t0).contains("18 Heun steps at temperature 0, seed 0"));
    assert_ne!(std::fs::read(cold.join("beta_000000.npz")).unwrap(), first);
    let refused = |extra: &[&str]| {
        let out = Command::new(example("sample")).args(&t0).args(extra).output().unwrap();
        assert!(!out.status.success(), "{extra:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    assert!(refused(&["--samples", "2", "--overwrite"]).contains("--temperature 0 is deterministic"));
    assert!(refused(&["--solver", "cd", "--sigma-max", "10", "--overwrite"])
        .contains("--temperature and --sigma-max set an LDM's ODE sampler"));
    // denoise_curve: the LDM's error grows from sigma 0.01 to 80 (at 0.01
    // its input is the clean latent); its sample's and the zero latent's
    // errors are lines, the same at every sigma.
    let curve = dir.path().join("curve");
    let curve_args = ["--vae", v, "--ldm", ldm_ckpt.to_str().unwrap(), "--dataset-dir", m, "--scenes", "beta"];
    let more = ["--sigmas", "0.01,80", "--sample-steps", "2", "--device", "cpu", "--out", curve.to_str().unwrap()];
    assert!(run("denoise_curve", &[&curve_args[..], &more].concat()).contains("2 frames of beta"));
    let csv = std::fs::read_to_string(curve.join("curve.csv")).unwrap();
    let mut lines = csv.lines();
    assert_eq!(lines.next().unwrap(), "sigma,ldm ldm,ldm ldm sample (heun 2),ldm ldm sample mean square,zero latent");
    let rows: Vec<Vec<f64>> = lines.map(|l| l.split(',').map(|v| v.parse().unwrap()).collect()).collect();
    assert_eq!((rows[0][0], rows[1][0]), (0.01, 80.0));
    assert!(rows[0][1] < 0.1 * rows[1][1], "error at 0.01 and 80: {rows:?}");
    assert!((2..5).all(|c| rows[0][c] == rows[1][c] && rows[0][c] > 0.0), "{rows:?}");
    assert!(curve.join("curve.png").exists());
    let three = dir.path().join("samples3");
    let mut k3: Vec<&str> = args.to_vec();
    *k3.last_mut().unwrap() = three.to_str().unwrap();
    k3.extend(["--samples", "3"]);
    let stdout = run("sample", &k3);
    assert!(stdout.contains("3 samples a frame"), "{stdout}");
    let p = radvox::data::frame::read_sparse(&three.join("beta_000000.npz")).unwrap();
    assert_eq!(p.shape, [32, 16, 8, 5], "probability, 3 features, spread");
    let (occ, spread): (Vec<f64>, Vec<f64>) = p.features.chunks_exact(5).map(|v| (v[0], v[4])).unzip();
    assert!(occ.iter().all(|v| (0.0..=1.0).contains(v)), "probabilities in [0, 1]");
    assert!(spread.iter().all(|v| *v >= 0.0) && spread.iter().any(|v| *v > 1e-4), "the samples differ");
    assert_ne!(std::fs::read(three.join("beta_000000.npz")).unwrap(), first);
    let md = std::fs::read_to_string(three.join("report.md")).unwrap();
    assert!(md.contains("## Calibration") && md.contains("## By region"), "{md}");
    assert!(three.join("reliability.png").exists() && three.join("bands.png").exists());
    // numpy reads it too (the test command installs numpy with libtorch).
    let py = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-python");
    if py.exists() {
        let code = "import numpy as np,sys; z=np.load(sys.argv[1]); print(z['coords'].shape[0], tuple(int(d) for d in z['shape']))";
        let out = Command::new(py).args(["-c", code]).arg(samples.join("beta_000000.npz")).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("{} (32, 16, 8, 4)", frame.len()));
    }
    // Evaluate the saved predictions, calibrate a threshold and record it
    // with the model: sample then uses it without --threshold.
    let eval_dir = dir.path().join("eval");
    let stdout = run(
        "evaluate",
        &[
            "--vae",
            v,
            "--dataset-dir",
            m,
            "--predictions",
            samples.to_str().unwrap(),
            "--out",
            eval_dir.to_str().unwrap(),
            "--calibrate",
            "--store-in",
            ldm_ckpt.to_str().unwrap(),
        ],
    );
    let calibrated: f64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("calibrated threshold ").and_then(|r| r.split(' ').next()))
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(stdout.contains("prediction") && stdout.contains("radar"), "{stdout}");
    for f in ["metrics.csv", "report.md", "threshold_sweep.png"] {
        assert!(eval_dir.join(f).exists(), "{f}");
    }
    assert!(std::fs::read_dir(&eval_dir).unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .starts_with("projection_")));
    // another threshold is another run: it replaces the first one's outputs
    let mut again: Vec<&str> = args.iter().copied().filter(|a| *a != "--threshold" && *a != "0.05").collect();
    again.push("--overwrite");
    let stdout = run("sample", &again);
    assert!(stdout.contains(&format!("threshold {calibrated}")), "{calibrated}: {stdout}");
}

/// A VAE trained under `dir` and its latents of every fixture frame, cached.
fn cached_latents(dir: &Path) -> (radvox::model::FrozenVae, std::path::PathBuf) {
    let ckpt = vae_checkpoint(&dir.join("vae"));
    let (vae, _) = load_vae(&ckpt, None, Device::Cpu).unwrap();
    let cache_dir = dir.join("latents");
    precompute(&vae, &ds(Split::All), &cache_dir, &ckpt, false, &|_| {}).unwrap();
    (vae, cache_dir)
}

/// The LDM trainer's live weights, by name.
fn vars(t: &radvox::train::LdmTrainer) -> Vec<(String, Tensor)> {
    radvox::io::safetensors::named_variables(radvox::train::Objective::var_store(t.objective()))
}

fn small_ldm(epochs: usize) -> LdmRecipe {
    LdmRecipe {
        unet: UnetConfig { model_channels: 8, channel_mult: vec![1, 2], ..Default::default() },
        optim: OptimRecipe { epochs, grad_accum: 1, lr: 1e-3, ..LdmRecipe::default().optim },
        ..Default::default()
    }
}

/// Exact resume of the latent-diffusion run: stopped mid-epoch (at an
/// optimizer-step limit) and at an epoch end, then resumed, it ends where a
/// straight run ends: same counters, same weights, same EMA.
#[test]
fn ldm_resume_mid_epoch_and_at_epoch_ends_equals_a_straight_run() {
    let dir = tempfile::tempdir().unwrap();
    let (vae, cache_dir) = cached_latents(dir.path());
    let source = || LatentSource::Cache(LatentCache::open(&cache_dir, &vae.hash, &ds(Split::Train)).unwrap());
    let straight_out = dir.path().join("straight");
    let mut straight =
        Trainer::ldm(ds(Split::Train), source(), &vae.hash, small_ldm(4), common::cpu_runtime(&straight_out)).unwrap();
    straight.fit().unwrap();

    let out = dir.path().join("resumed");
    // 4 frames, batch 1, no accumulation: 4 steps an epoch; stop at step 6, mid-epoch 1.
    let limited = radvox::train::Runtime { max_steps: Some(6), ..common::cpu_runtime(&out) };
    let mut first = Trainer::ldm(ds(Split::Train), source(), &vae.hash, small_ldm(4), limited).unwrap();
    first.fit().unwrap();
    assert_eq!((first.state().epoch, first.state().cursor, first.state().step), (1, 2, 6));
    drop(first);
    let last = out.join("last.safetensors");
    let resume = |rt| Trainer::resume_ldm(&last, ds(Split::Train), source(), &vae.hash, rt, |_| {}).unwrap();
    let mut second = resume(common::cpu_runtime(&out));
    second.fit_until(2).unwrap();
    assert_eq!((second.state().epoch, second.state().cursor), (2, 0));
    drop(second);
    let mut third = resume(common::cpu_runtime(&out));
    third.fit().unwrap();

    assert_eq!(straight.state(), third.state());
    for ((name, a), (_, b)) in vars(&straight).iter().zip(vars(&third)) {
        let diff = (a - &b).abs().max().double_value(&[]);
        assert!(diff <= 1e-6, "{name} differs by {diff}");
    }
    let (ea, eb) = (straight.ema().unwrap().weights(), third.ema().unwrap().weights());
    for ((name, a), (_, b)) in ea.iter().zip(eb) {
        let diff = (a - b).abs().max().double_value(&[]);
        assert!(diff <= 1e-6, "EMA {name} differs by {diff}");
    }
    // The log has one row per optimizer step, in order, whatever the interruptions.
    let log = std::fs::read_to_string(out.join("train_log.csv")).unwrap();
    let steps: Vec<u64> = log.lines().skip(1).map(|l| l.split(',').nth(1).unwrap().parse().unwrap()).collect();
    assert_eq!(steps, (1..=16).collect::<Vec<u64>>());
    // A resume against another VAE's latents is refused.
    let other =
        Trainer::resume_ldm(&last, ds(Split::Train), source(), "0000000000000000", common::cpu_runtime(&out), |_| {});
    assert!(other.unwrap_err().to_string().contains("not of this VAE"));
}

/// The EMA's warm-up, through the trainer: after one optimizer step the
/// average holds 0.1 of the initial weights (decay min(0.999, 1 / 10)),
/// without warm-up 0.999 of them.
#[test]
fn the_ema_warms_up_from_its_first_step() {
    let dir = tempfile::tempdir().unwrap();
    let (vae, cache_dir) = cached_latents(dir.path());
    for (warmup, kept) in [(true, 0.1), (false, 0.999)] {
        let mut recipe = small_ldm(1);
        recipe.optim.ema_warmup = warmup;
        let source = LatentSource::Cache(LatentCache::open(&cache_dir, &vae.hash, &ds(Split::Train)).unwrap());
        let rt = radvox::train::Runtime {
            max_steps: Some(1),
            ..common::cpu_runtime(&dir.path().join(format!("ldm_{warmup}")))
        };
        let mut t = Trainer::ldm(ds(Split::Train), source, &vae.hash, recipe, rt).unwrap();
        let init: Vec<Tensor> = vars(&t).iter().map(|(_, p)| p.detach().copy()).collect();
        t.fit().unwrap();
        assert_eq!(t.state().step, 1);
        let (live, ema) = (vars(&t), t.ema().unwrap().weights());
        let moved: f64 =
            live.iter().zip(&init).map(|((_, l), i)| (l - i).abs().sum(Kind::Double).double_value(&[])).sum();
        assert!(moved > 1e-3, "the step moved the weights by {moved}");
        for (((name, l), (_, e)), i) in live.iter().zip(ema).zip(&init) {
            let want = i * kept + l * (1.0 - kept);
            let diff = (e - want).abs().max().double_value(&[]);
            assert!(diff <= 1e-6, "warm-up {warmup}: EMA {name} is off by {diff}");
        }
    }
}

/// The two conditioning variants of the benchmark: latents normalised to
/// the EDM's sigma_data (statistics measured at the start, stored with the
/// model, applied by the sampler), and a radar encoder trained jointly
/// (its weights move, are saved, and make the sampler's condition).
#[test]
fn normalised_latents_and_a_joint_radar_encoder_train_save_and_sample() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = vae_checkpoint(&dir.path().join("vae"));
    let (vae, vae_recipe) = load_vae(&ckpt, None, Device::Cpu).unwrap();
    let hash = vae.hash.clone();
    let vae = std::rc::Rc::new(vae);
    let mut recipe = small_ldm(2);
    recipe.normalize_latents = true;
    let out = dir.path().join("norm");
    let source = || LatentSource::OnTheFly(Box::new(load_vae(&ckpt, None, Device::Cpu).unwrap().0));
    let mut t = Trainer::ldm(ds(Split::Train), source(), &hash, recipe, common::cpu_runtime(&out)).unwrap();
    let norm = t.recipe().latent_norm.clone().expect("measured at the start");
    assert!(norm.target.std.iter().all(|s| *s > 0.0) && norm.target.scale == 0.5);
    let r = t.fit().unwrap();
    assert!(r.iter().all(|e| e.loss("loss").unwrap().is_finite()));
    let loaded = load_sampler(&out.join("last.safetensors"), &hash, Device::Cpu).unwrap();
    assert_eq!(loaded.recipe.latent_norm, Some(norm));
    let radar = ds(Split::Val).read(0, radvox::Modality::Radar).unwrap().to_tensor();
    let z = loaded.sampler.sample(&loaded.sampler.condition(&radar, &vae).unwrap(), 4, Solver::Heun, 1);
    assert_eq!(z.size(), [1, 4, 4, 8, 4]);

    let mut recipe = small_ldm(2);
    recipe.radar_encoder = Some(radvox::model::RadarEncoderConfig::default());
    let missing = Trainer::ldm(ds(Split::Train), source(), &hash, recipe.clone(), common::cpu_runtime(&out));
    assert!(missing.unwrap_err().to_string().contains("radar_scale"));
    recipe.radar_scale = vae_recipe.channel_scale.clone();
    let out = dir.path().join("encoder");
    let mut t = Trainer::ldm(ds(Split::Train), source(), &hash, recipe, common::cpu_runtime(&out)).unwrap();
    let encoder_weight = |t: &radvox::train::LdmTrainer| {
        radvox::train::Objective::var_store(t.objective()).variables()["radar_encoder.conv_in.weight"].copy()
    };
    let before = encoder_weight(&t);
    t.fit().unwrap();
    assert!(!encoder_weight(&t).equal(&before), "the loss trains the encoder");
    let loaded = load_sampler(&out.join("last.safetensors"), &hash, Device::Cpu).unwrap();
    let cond = loaded.sampler.condition(&radar, &vae).unwrap();
    assert_eq!(cond.size(), [1, 4, 4, 8, 4]);
    assert!(!cond.equal(&vae.encode(&radar)), "the encoder's condition, not the VAE's");
    assert_eq!(loaded.sampler.sample(&cond, 4, Solver::Heun, 1).size(), [1, 4, 4, 8, 4]);
}

/// The direct baseline (`train_ldm --direct`): its loss sees nothing of the
/// target in its input, it trains on the engine, samples in one
/// deterministic call, and the commands that need an ODE refuse it.
#[test]
fn the_direct_baseline_regresses_in_one_call_and_is_refused_where_an_ode_is_needed() {
    let edm = EdmConfig::default();
    let vs = nn::VarStore::new(Device::Cpu);
    let unet = Unet3d::new(&vs.root(), &small_ldm(1).unet).unwrap();
    let cond = Tensor::randn([2, 4, 4, 8, 4], (Kind::Float, Device::Cpu));
    let d = tch::no_grad(|| edm.direct(&unet, &cond, 4));
    let w = (80.0f64.powi(2) + 0.25) / (80.0 * 0.5f64).powi(2); // the EDM weight at sigma_max
    for shift in [0.0, 5.0] {
        let y = Tensor::randn([2, 4, 4, 8, 4], (Kind::Float, Device::Cpu)) + shift;
        let l = tch::no_grad(|| edm.direct_loss(&unet, &y, &cond, None)).double_value(&[]);
        let want = (&d - &y).square().mean(Kind::Float).double_value(&[]) * w;
        assert!((l - want).abs() < 1e-4 * want, "shift {shift}: {l} vs {want}");
    }

    let dir = tempfile::tempdir().unwrap();
    let ckpt = vae_checkpoint(&dir.path().join("vae"));
    let (vae, _) = load_vae(&ckpt, None, Device::Cpu).unwrap();
    let source = LatentSource::OnTheFly(Box::new(load_vae(&ckpt, None, Device::Cpu).unwrap().0));
    let recipe = LdmRecipe { direct: true, ..small_ldm(3) };
    let out = dir.path().join("direct");
    let mut t = Trainer::ldm(ds(Split::Train), source, &vae.hash, recipe, common::cpu_runtime(&out)).unwrap();
    let losses: Vec<f64> = t.fit().unwrap().iter().map(|e| e.loss("loss").unwrap()).collect();
    assert!(losses.iter().all(|l| l.is_finite()) && losses[2] < losses[0], "{losses:?}");
    let direct = out.join("last.safetensors");
    let loaded = load_sampler(&direct, &vae.hash, Device::Cpu).unwrap();
    assert!(loaded.recipe.direct);

    let m = mini();
    let sample = |seed: &str, extra: &[&str], out: &Path| {
        Command::new(example("sample"))
            .args(["--vae", ckpt.to_str().unwrap(), "--ldm", direct.to_str().unwrap(), "--dataset-dir"])
            .args([m.to_str().unwrap(), "--split", "val", "--seed", seed, "--device", "cpu", "--out"])
            .arg(out)
            .args(extra)
            .output()
            .unwrap()
    };
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    for (seed, out) in [("1", &a), ("2", &b)] {
        let o = sample(seed, &[], out);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert!(String::from_utf8_lossy(&o.stderr).contains("direct baseline"));
    }
    let npz = |d: &Path| {
        let mut v: Vec<_> = std::fs::read_dir(d).unwrap().map(|e| e.unwrap().path()).collect();
        v.retain(|p| p.extension().is_some_and(|x| x == "npz"));
        v.sort();
        v.iter().map(|p| std::fs::read(p).unwrap()).collect::<Vec<_>>()
    };
    let (na, nb) = (npz(&a), npz(&b));
    assert!(!na.is_empty() && na == nb, "one deterministic call: the seed changes nothing");
    for extra in [&["--solver", "cd"][..], &["--samples", "2"][..]] {
        let o = sample("1", extra, &dir.path().join("c"));
        assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("direct baseline"), "{extra:?}");
    }
    let cd = radvox::train::CdRecipe { teacher: loaded.recipe.clone(), ..Default::default() };
    assert!(radvox::train::Recipe::validate(&cd).unwrap_err().to_string().contains("direct baseline"));
}

/// `best` by decoded geometry: after each epoch a fixed subset of
/// validation frames is sampled (on the EMA's weights, the live ones
/// restored after), decoded and scored; the log and `best` follow it.
#[test]
fn latent_models_validate_by_decoded_geometry_on_the_ema_weights() {
    assert_eq!(radvox::train::geometry_val::GeometryVal::metrics(&[2.0, 1.0, 1.0]), vec![4.0 / 6.0, 0.5]);
    assert_eq!(radvox::train::geometry_val::GeometryVal::metrics(&[0.0, 0.0, 0.0]), vec![0.0, 0.0]);
    let dir = tempfile::tempdir().unwrap();
    let ckpt = vae_checkpoint(&dir.path().join("vae"));
    let (vae, _) = load_vae(&ckpt, None, Device::Cpu).unwrap();
    for direct in [false, true] {
        let recipe = LdmRecipe { val_frames: 2, val_steps: 2, direct, ..small_ldm(2) };
        let out = dir.path().join(format!("ldm-{direct}"));
        let objective = radvox::train::LdmObjective::new(
            ds(Split::Train),
            source_clone(&ckpt),
            &vae.hash,
            recipe,
            &common::cpu_runtime(&out),
        )
        .unwrap()
        .with_validation(ds(Split::Val), decoder_clone(&ckpt), 0, 1)
        .unwrap();
        let mut t = Trainer::new(objective, common::cpu_runtime(&out)).unwrap();
        t.fit_until(1).unwrap(); // the EMA now differs from the live weights
        let live = vars(&t);
        let v = t.validate().unwrap();
        assert_eq!(v.iter().map(|c| c.0.as_str()).collect::<Vec<_>>(), ["f1", "iou"]);
        let (f1, iou) = (v[0].1, v[1].1);
        assert!((0.0..=1.0).contains(&f1) && iou <= f1 + 1e-12, "{v:?}");
        for ((name, a), (_, b)) in live.iter().zip(vars(&t)) {
            assert!(a.equal(&b), "{name}: the live weights are restored after validation");
        }
        t.fit().unwrap();
        let log = std::fs::read_to_string(out.join("val_log.csv")).unwrap();
        assert_eq!(log.lines().count(), 3, "a header and one row an epoch: {log}");
        assert!(log.lines().next().unwrap().contains("f1") && out.join("best.safetensors").is_file());
    }
}

fn source_clone(ckpt: &Path) -> LatentSource {
    LatentSource::OnTheFly(Box::new(load_vae(ckpt, None, Device::Cpu).unwrap().0))
}

fn decoder_clone(ckpt: &Path) -> Box<dyn radvox::model::GridVae> {
    Box::new(radvox::train::load_any_vae(ckpt, Device::Cpu).unwrap().vae)
}

/// The decoded-space loss (`[decoded]`, `train_ldm --decoded-loss`): its
/// gradient reaches the UNet through the frozen decoder (whose weights get
/// none), its parts are logged, training with it lowers the decoded term at
/// fixed noise below a run without it from the same seed, and a recipe with
/// it but no decoder is refused by name.
#[test]
fn the_decoded_loss_trains_the_unet_through_the_frozen_decoder() {
    use radvox::diffusion::DecodedLossConfig;
    use radvox::train::LdmObjective;
    let dir = tempfile::tempdir().unwrap();
    let ckpt = vae_checkpoint(&dir.path().join("vae"));
    let (vae, _) = load_vae(&ckpt, None, Device::Cpu).unwrap();
    let cfg = DecodedLossConfig::default();
    // one backward by hand: the decoded term moves the UNet's gradient, not the VAE's
    let vs = nn::VarStore::new(Device::Cpu);
    let unet = radvox::sys::with_init_seed(3, || {
        Unet3d::new(&vs.root(), &UnetConfig { model_channels: 8, channel_mult: vec![1, 2], ..Default::default() })
    })
    .unwrap();
    let frame = ds(Split::Train).read(0, radvox::Modality::Target).unwrap().to_tensor().to_kind(Kind::Float);
    let y = vae.encode(&frame);
    let occupancy = frame.narrow(1, 0, 1).ge(0.5).to_kind(Kind::Float);
    let edm = EdmConfig::default();
    let draws = (Tensor::from_slice(&[0.05f32]), radvox::sys::normal(4, &y.size(), Device::Cpu));
    let grads = |with: bool| {
        vs.variables().values_mut().for_each(|t| t.zero_grad());
        let extra = |d: &Tensor, s: &Tensor| {
            (cfg.per_sample(&vae.decode_occupancy(d), &occupancy) * DecodedLossConfig::noise_weight(s, 0.5))
                .mean(Kind::Float)
        };
        let extra: &dyn Fn(&Tensor, &Tensor) -> Tensor = &extra;
        let parts = edm.backward_with(&unet, &y, &y.zeros_like(), Some(&draws), false, 1.0, with.then_some(extra));
        let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        let flat: Vec<Tensor> = named
            .iter()
            .map(|(_, t)| if t.grad().defined() { t.grad().flatten(0, -1) } else { t.zeros_like().flatten(0, -1) })
            .collect();
        (parts, Tensor::cat(&flat, 0).to_kind(Kind::Double))
    };
    let ((plain, g0), (parts, g1)) = (grads(false), grads(true));
    assert_eq!((plain.len(), parts.len()), (1, 3));
    // the total is summed in f32: equal to its parts up to f32 rounding
    let rounding = 1e-6 * parts[0].abs().max(1.0);
    assert!(
        (parts[0] - parts[1] - parts[2]).abs() < rounding && (parts[1] - plain[0]).abs() < 1e-9,
        "{parts:?} {plain:?}"
    );
    // the difference of the two gradients is the decoded term's own gradient
    let (n0, nd) = (g0.norm().double_value(&[]), (&g1 - &g0).norm().double_value(&[]));
    assert!(parts[2] > 0.0 && nd > 1e-4 * n0, "decoded {parts:?}: |grad| {n0}, |grad of the decoded term| {nd}");
    assert!(vae.vs.variables().values().all(|t| !t.grad().defined()), "the frozen VAE gets no gradient");
    // training runs with and without it, from one seed
    let decoded_at_fixed_noise = |t: &radvox::train::LdmTrainer| {
        let sigma = Tensor::from_slice(&[0.05f32, 0.2, 0.5]);
        let mut sum = 0.0;
        for i in 0..4 {
            let f = ds(Split::Train).read(i, radvox::Modality::Target).unwrap().to_tensor().to_kind(Kind::Float);
            let r = ds(Split::Train).read(i, radvox::Modality::Radar).unwrap().to_tensor().to_kind(Kind::Float);
            let (y, c) = (vae.encode(&f).repeat([3, 1, 1, 1, 1]), vae.encode(&r).repeat([3, 1, 1, 1, 1]));
            let noisy = &y + radvox::sys::normal(i as u64, &y.size(), Device::Cpu) * sigma.view([-1, 1, 1, 1, 1]);
            let d = tch::no_grad(|| edm.denoise(t.objective().unet(), &noisy, &sigma, &c, false));
            let o = f.narrow(1, 0, 1).ge(0.5).to_kind(Kind::Float).repeat([3, 1, 1, 1, 1]);
            sum += cfg.per_sample(&tch::no_grad(|| vae.decode_occupancy(&d)), &o).sum(Kind::Double).double_value(&[]);
        }
        sum
    };
    let mut scores = Vec::new();
    for with in [false, true] {
        let recipe = LdmRecipe { val_frames: 0, decoded: with.then_some(cfg), ..small_ldm(8) };
        let out = dir.path().join(format!("ldm-{with}"));
        let mut o = LdmObjective::new(
            ds(Split::Train),
            source_clone(&ckpt),
            &vae.hash,
            recipe.clone(),
            &common::cpu_runtime(&out),
        )
        .unwrap();
        if with {
            // the recipe's loss without its decoder is refused at the first step
            let bare = dir.path().join("bare");
            let mut t = Trainer::new(o, common::cpu_runtime(&bare)).unwrap();
            let err = t.fit().err().map(|e| e.to_string()).unwrap_or_default();
            assert!(err.contains("with_decoder"), "{err}");
            o = LdmObjective::new(ds(Split::Train), source_clone(&ckpt), &vae.hash, recipe, &common::cpu_runtime(&out))
                .unwrap()
                .with_decoder(decoder_clone(&ckpt))
                .unwrap();
        } else {
            let err = o.with_decoder(decoder_clone(&ckpt)).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(err.contains("no [decoded] loss"), "{err}");
            o = LdmObjective::new(ds(Split::Train), source_clone(&ckpt), &vae.hash, recipe, &common::cpu_runtime(&out))
                .unwrap();
        }
        let mut t = Trainer::new(o, common::cpu_runtime(&out)).unwrap();
        t.fit().unwrap();
        let head = std::fs::read_to_string(out.join("train_log.csv")).unwrap();
        assert_eq!(head.lines().next().unwrap().contains(",latent,decoded,"), with, "{}", head.lines().next().unwrap());
        scores.push(decoded_at_fixed_noise(&t));
    }
    assert!(scores[1] < scores[0], "decoded term at fixed noise: without {} vs with {}", scores[0], scores[1]);
}
