//! What only a GPU can show, run where CUDA exists and skipped (saying so)
//! elsewhere: float16 loss scaling under a forced overflow (the step is
//! skipped, the scale halves, training then goes on), and the dense and
//! sparse VAEs computing on CUDA what they compute on the CPU.
//!
//! On a GPU host without Rust: `scripts/gpu_check.sh` carries this binary
//! and runs it there.

use std::path::PathBuf;

use radvox::data::layout::Layout;
use radvox::model::sparse::{Coords, SparseLossConfig, SparseTensor, SparseVae, SparseVaeConfig};
use radvox::model::{Checkpointing, Vae3d, VaeConfig};
use radvox::train::sparse_vae::micro_step;
use radvox::train::{AmpMode, OptimRecipe, Runtime, Trainer, VaeRecipe};
use radvox::{Dataset, DatasetConfig, Split};
use tch::{nn, Device, Kind, Tensor};

fn cuda() -> bool {
    let ok = tch::Cuda::is_available();
    if !ok {
        eprintln!("no CUDA device: skipped");
    }
    ok
}

/// The fixture tree: beside the working directory first (a carried test
/// binary runs in another checkout), else this build's.
fn fixtures() -> PathBuf {
    let here = PathBuf::from("fixtures/ntu_mini");
    if here.exists() {
        here
    } else {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/ntu_mini")
    }
}

fn rel(a: &Tensor, b: &Tensor) -> f64 {
    let b = b.to_device(Device::Cpu).to_kind(Kind::Double);
    let d = (a.to_device(Device::Cpu).to_kind(Kind::Double) - &b).norm().double_value(&[]);
    d / b.norm().double_value(&[]).max(1e-30)
}

fn params(vs: &nn::VarStore) -> Vec<(String, Tensor)> {
    let mut v: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[test]
fn a_forced_f16_overflow_skips_the_step_halves_the_scale_and_training_goes_on() {
    if !cuda() {
        return;
    }
    let cfg = DatasetConfig { layout: Layout::Resample { zhw: [8, 16, 16] }, ..Default::default() };
    let ds = Dataset::open(fixtures(), Split::Train, &cfg).unwrap();
    let init = 2f64.powi(40); // loss x 2^40: the f16 activations' gradients overflow
    let recipe = VaeRecipe {
        optim: OptimRecipe {
            batch_size: 1,
            grad_accum: 1,
            init_scale: init,
            growth_interval: 1_000_000,
            ..Default::default()
        },
        ..Default::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime {
        out: dir.path().into(),
        device: "cuda".into(),
        amp: AmpMode::On,
        progress: false,
        ..Default::default()
    };
    let mut t = Trainer::vae(ds, None, recipe, runtime).unwrap();
    assert_eq!(t.state().scaler.scale, init);
    assert!(t.state().scaler.enabled, "f16 autocast scales the loss");
    let before: Vec<Tensor> = params(radvox::train::Objective::var_store(t.objective()))
        .into_iter()
        .map(|(_, p)| p.detach().copy())
        .collect();
    let (mut skipped, mut stepped_at) = (0, None);
    'epochs: for epoch in 0..40 {
        let batches: Vec<_> = t.objective().train_loader().epoch(epoch).map(|b| b.unwrap()).collect();
        for b in &batches {
            let losses = t.micro_step(b).unwrap().expect("the unscaled loss is finite");
            assert!(losses.iter().all(|l| l.is_finite()), "{losses:?}");
            let scale = t.state().scaler.scale;
            let (_, stepped) = t.optimizer_step(1e-3).unwrap();
            if stepped {
                stepped_at = Some(scale);
                break 'epochs;
            }
            skipped += 1;
            assert_eq!(t.state().scaler.scale, scale / 2.0, "an overflow halves the scale");
            let now = params(radvox::train::Objective::var_store(t.objective()));
            for ((name, p), b) in now.iter().zip(&before) {
                assert!(p.equal(b), "{name} changed on a skipped step");
            }
        }
    }
    let scale = stepped_at.expect("the scale came down far enough for a step");
    assert!(skipped >= 1 && scale < init, "skipped {skipped}, stepped at scale {scale}");
    assert_eq!(t.state().step, 1);
    let now = params(radvox::train::Objective::var_store(t.objective()));
    assert!(now.iter().zip(&before).any(|((_, p), b)| !p.equal(b)), "the clean step changed the weights");
    assert!(now.iter().all(|(_, p)| p.isfinite().all().int64_value(&[]) == 1), "weights stay finite");
    eprintln!("{skipped} steps skipped from 2^40, first step at scale 2^{}", scale.log2());
}

#[test]
fn the_dense_vae_computes_on_cuda_what_it_computes_on_the_cpu() {
    if !cuda() {
        return;
    }
    let cfg = VaeConfig::ultra_lightweight();
    let (cpu, mut gpu) = (nn::VarStore::new(Device::Cpu), nn::VarStore::new(Device::Cuda(0)));
    let vae_cpu = Vae3d::new(&cpu.root(), &cfg).unwrap();
    let vae_gpu = Vae3d::new(&gpu.root(), &cfg).unwrap();
    gpu.copy(&cpu).unwrap();
    let shape = [1, 4, 16, 32, 32];
    let x = radvox::sys::normal(1, &shape, Device::Cpu);
    let eps = radvox::sys::normal(2, &vae_cpu.latent_shape(shape), Device::Cpu);
    let mse = |r: &Tensor, t: &Tensor| r.to_kind(Kind::Float).mse_loss(t, tch::Reduction::Mean);
    let lc = vae_cpu.backward(&x, Some(&eps), Checkpointing::Off, 1.0, &mse);
    let (xg, eg) = (x.to_device(Device::Cuda(0)), eps.to_device(Device::Cuda(0)));
    let lg = vae_gpu.backward(&xg, Some(&eg), Checkpointing::PerBlock, 1.0, &mse);
    // cuDNN convolutions may use TF32: ~1e-3 relative, not f32's 1e-6
    for (c, g) in [(lc.recon, lg.recon), (lc.kl, lg.kl), (lc.total, lg.total)] {
        assert!((c - g).abs() <= 1e-2 * c.abs().max(1e-8), "losses cpu {lc:?} cuda {lg:?}");
    }
    let (pc, pg) = (params(&cpu), params(&gpu));
    for ((name, c), (_, g)) in pc.iter().zip(&pg) {
        let e = rel(&g.grad(), &c.grad());
        assert!(e < 2e-2, "{name}: gradient relative error {e:.2e}");
    }
}

#[test]
fn the_sparse_vae_computes_on_cuda_what_it_computes_on_the_cpu() {
    if !cuda() {
        return;
    }
    let grid = [24, 64, 48];
    let mut sites = Vec::new();
    for b in 0..2i64 {
        for y in 0..grid[1] {
            for x in 0..grid[2] {
                sites.push([b, 2 + b, y, x]);
                if x == 20 + 3 * b && y < 50 {
                    sites.extend((3..20).map(|z| [b, z, y, x]));
                }
            }
        }
    }
    sites.sort();
    sites.dedup();
    let cfg = SparseVaeConfig::small();
    let (cpu, mut gpu) = (nn::VarStore::new(Device::Cpu), nn::VarStore::new(Device::Cuda(0)));
    let vae_cpu = SparseVae::new(&cpu.root(), &cfg).unwrap();
    let vae_gpu = SparseVae::new(&gpu.root(), &cfg).unwrap();
    gpu.copy(&cpu).unwrap();
    let input = |device: Device| {
        let coords = Coords::new(&sites, 2, grid, [1; 3]).unwrap();
        let n = coords.len() as i64;
        let feats = radvox::sys::normal(4, &[n, 4], Device::Cpu).to_device(device);
        SparseTensor::new(coords, feats).unwrap()
    };
    let eps = radvox::sys::normal(5, &cfg.latent_shape(2, grid), Device::Cpu);
    let loss = SparseLossConfig::default();
    let lc = micro_step(&vae_cpu, &loss, &input(Device::Cpu), &eps, 1.0).unwrap();
    let lg = micro_step(&vae_gpu, &loss, &input(Device::Cuda(0)), &eps.to_device(Device::Cuda(0)), 1.0).unwrap();
    for (c, g) in lc.iter().zip(&lg) {
        assert!((c - g).abs() <= 1e-4 * c.abs().max(1e-6), "losses cpu {lc:?} cuda {lg:?}");
    }
    for ((name, c), (_, g)) in params(&cpu).iter().zip(&params(&gpu)) {
        let e = rel(&g.grad(), &c.grad());
        assert!(e < 1e-4, "{name}: gradient relative error {e:.2e}");
    }
}
