//! Seconds per frame and peak memory of a VAE training micro-step (forward +
//! backward, batch 1) on whole native-resolution frames of a simulated root:
//! the sparse VAE on the frames' occupied voxels beside the dense
//! ultra_lightweight VAE with per-block checkpointing, each in its own
//! process. The dense VAE runs on a `RADVOX_DENSE_CROP=Z,H,W` crop (default
//! 32,128,128) and its time is scaled by voxels to the whole grid (said so
//! in the table), beside the planner's bytes for the whole grid;
//! `RADVOX_DENSE_CROP=full` runs the whole grid (~4 min a step on a CPU,
//! ~14 GiB).
//! Precision: what `auto` picks for each trainer: on a CPU the dense VAE
//! runs bf16 autocast where the CPU has it natively and the sparse VAE f32
//! (faster); `RADVOX_SPARSE_AMP=on|off` overrides the sparse VAE's.
//! `RADVOX_BENCH_DEVICE=cuda` runs both on the GPU (f16 autocast unless
//! `RADVOX_SPARSE_AMP=off`); memory is then the caching allocator's peak
//! allocated (and reserved) bytes, planned with the CUDA backend.
//!
//! `cargo bench --bench sparse_step` (`RADVOX_STEPS=N` timed steps, default 4;
//! `RADVOX_SPARSE_PRESETS=sparse_small,sparse_base`).

use std::process::Command;
use std::time::Instant;

use radvox::data::loader::{SparseLoader, SparseLoaderConfig};
use radvox::data::{Dataset, DatasetConfig, Split};
use radvox::memory::{Backend, ModelConfig, Planner, Precision, Run, SparseModel, SparseSites};
use radvox::model::sparse::{SparseLossConfig, SparseTensor, SparseVae, SparseVaeConfig};
use radvox::model::{Checkpointing, Vae3d, VaeConfig};
use radvox::train::sparse_vae::micro_step;
use radvox::train::{Amp, AmpMode};
use tch::{nn, Device, Kind, Tensor};

mod common;

const FULL: [i64; 3] = [96, 608, 224];

/// The dense VAE's precision: `auto` on the bench's device.
fn amp() -> Amp {
    Amp::resolve(AmpMode::Auto, common::device()).0
}

/// The sparse VAE's precision: the trainer's `auto` (f32 on a CPU, f16 on
/// CUDA) unless `RADVOX_SPARSE_AMP=on|off`.
fn sparse_amp() -> Amp {
    let device = common::device();
    match std::env::var("RADVOX_SPARSE_AMP").as_deref() {
        Ok("on") => Amp::resolve(AmpMode::On, device).0,
        Ok("off") => Amp::Off,
        _ if device.is_cuda() => Amp::CudaF16,
        _ => Amp::Off,
    }
}

fn precision() -> Precision {
    sparse_amp().precision()
}

/// Peak bytes of the step just run in this process: CUDA's peak allocated
/// and reserved, or the peak RSS (twice) on a CPU.
fn peaks(device: Device) -> (u64, u64) {
    if device.is_cuda() {
        common::cuda_peaks()
    } else {
        let rss = radvox::memory::proc_status_bytes("VmHWM").unwrap_or(0);
        (rss, rss)
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn sparse_child(preset: &str, steps: usize) {
    let device = common::device();
    radvox::memory::return_large_frees();
    radvox::sys::shim::count_host_tensors();
    let ds = Dataset::open(common::sim_root(), Split::Train, &DatasetConfig::default()).unwrap();
    let loader = SparseLoader::new(ds, SparseLoaderConfig::default()).unwrap();
    let cfg = SparseVaeConfig::named(preset).unwrap();
    let vs = nn::VarStore::new(device);
    let vae = SparseVae::new(&vs.root(), &cfg).unwrap();
    let loss = SparseLossConfig::default();
    let (mut times, mut sites, mut planned) = (Vec::new(), 0, 0u64);
    for batch in loader.epoch_from(0, 0).take(steps + 1) {
        let batch = batch.unwrap();
        let grid = batch.grid.map(|v| v as i64);
        let t = Instant::now();
        let x = SparseTensor::of_sites(&batch.target, 0..1, grid, &[1.0, 0.01, 0.25, 1.0], device).unwrap();
        let eps = Tensor::randn(cfg.latent_shape(1, grid), (Kind::Float, device));
        sparse_amp().run(|| micro_step(&vae, &loss, &x, &eps, 1.0)).unwrap().unwrap();
        if device.is_cuda() {
            tch::Cuda::synchronize(0);
        }
        times.push(t.elapsed().as_secs_f64());
        if x.coords.len() > sites {
            sites = x.coords.len();
            let model = SparseModel { vae: cfg.clone(), sites: SparseSites::of(&cfg, &x.coords).unwrap() };
            let run = Run {
                model: ModelConfig::SparseVae(Box::new(model)),
                grid,
                batch: 1,
                precision: precision(),
                checkpointing: Checkpointing::Off,
            };
            planned = Planner::for_device(common::device()).plan(&run).unwrap().device_tensors();
        }
    }
    let (peak, reserved) = peaks(device);
    let counted = if device.is_cuda() { peak } else { radvox::sys::shim::host_tensor_bytes().1 as u64 };
    let s = median(times[1..].to_vec());
    println!(
        r#"{{"mode": "{preset}", "grid": "whole frame", "seconds": {s}, "per_frame": {s}, "peak": {peak}, "reserved": {reserved}, "sites": {sites}, "counted": {counted}, "planned": {planned}}}"#
    );
}

fn dense_child(crop: [i64; 3], steps: usize) {
    let device = common::device();
    let vs = nn::VarStore::new(device);
    let vae = Vae3d::new(&vs.root(), &VaeConfig::ultra_lightweight()).unwrap();
    let x = radvox::sys::normal(0, &[1, 4, crop[0], crop[1], crop[2]], device);
    let eps = Tensor::randn(vae.latent_shape([1, 4, crop[0], crop[1], crop[2]]), (Kind::Float, device));
    let mse = |r: &Tensor, t: &Tensor| r.to_kind(Kind::Float).mse_loss(t, tch::Reduction::Mean);
    let mut times = Vec::new();
    for _ in 0..=steps {
        let t = Instant::now();
        amp().run(|| vae.backward(&x, Some(&eps), Checkpointing::PerBlock, 1.0, &mse)).unwrap();
        if device.is_cuda() {
            tch::Cuda::synchronize(0);
        }
        times.push(t.elapsed().as_secs_f64());
    }
    let (peak, reserved) = peaks(device);
    let s = median(times[1..].to_vec());
    let scale = FULL.iter().product::<i64>() as f64 / crop.iter().product::<i64>() as f64;
    println!(
        r#"{{"mode": "ultra_lightweight", "grid": "{crop:?}", "seconds": {s}, "per_frame": {}, "peak": {peak}, "reserved": {reserved}, "sites": 0, "counted": 0, "planned": 0}}"#,
        s * scale
    );
}

fn main() {
    let steps: usize = std::env::var("RADVOX_STEPS").ok().and_then(|s| s.parse().ok()).unwrap_or(4);
    let crop_env = std::env::var("RADVOX_DENSE_CROP").unwrap_or("32,128,128".into());
    let crop: [i64; 3] = if crop_env == "full" {
        FULL
    } else {
        let v: Vec<i64> = crop_env.split(',').map(|v| v.parse().expect("RADVOX_DENSE_CROP=Z,H,W")).collect();
        [v[0], v[1], v[2]]
    };
    if let Ok(mode) = std::env::var("RADVOX_SPARSE_STEP_CHILD") {
        return match mode.as_str() {
            "dense" => dense_child(crop, steps.min(2)),
            preset => sparse_child(preset, steps),
        };
    }
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    common::sim_root(); // simulated once, before any timing
    let presets = std::env::var("RADVOX_SPARSE_PRESETS").unwrap_or("sparse_small,sparse_base".into());
    let me = std::env::current_exe().unwrap();
    let flags = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let bf16 = ["avx512_bf16", "amx_bf16"].iter().filter(|f| flags.contains(*f)).copied().collect::<Vec<_>>();
    let on = if common::device().is_cuda() {
        "CUDA".to_string()
    } else {
        format!("CPU ({} threads)", tch::get_num_threads())
    };
    println!(
        "VAE training micro-step, batch 1, whole (96, 608, 224) frames of a simulated root, {on}, dense {:?}, sparse {:?} ({})",
        amp(),
        sparse_amp(),
        if bf16.is_empty() { "no native bf16: f32".to_string() } else { bf16.join(" ") }
    );
    let mut rows = Vec::new();
    for mode in presets.split(',').chain(["dense"]) {
        let out = Command::new(&me).env("RADVOX_SPARSE_STEP_CHILD", mode).output().unwrap();
        assert!(out.status.success(), "{mode}: {}", String::from_utf8_lossy(&out.stderr));
        let line = String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or_default().to_string();
        rows.push(serde_json::from_str::<serde_json::Value>(&line).unwrap());
    }
    let dense = rows.last().unwrap().clone();
    let dense_precision = amp().precision();
    let dense_plan = Planner::for_device(common::device())
        .plan(&Run {
            model: ModelConfig::Vae(VaeConfig::ultra_lightweight()),
            grid: FULL,
            batch: 1,
            precision: dense_precision,
            checkpointing: Checkpointing::PerBlock,
        })
        .map(|p| p.total())
        .unwrap_or(0);
    let peak = if common::device().is_cuda() { "peak allocated (reserved)" } else { "peak RSS" };
    println!("| model | run on | sites | s per step | s per whole frame | {peak} | speed-up | memory ratio | counted tensors | planned tensors |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        let gib = r["peak"].as_f64().unwrap() / (1u64 << 30) as f64;
        let reserved = if common::device().is_cuda() {
            format!(" ({:.2} GiB)", r["reserved"].as_f64().unwrap() / (1u64 << 30) as f64)
        } else {
            String::new()
        };
        let per_frame = r["per_frame"].as_f64().unwrap();
        let scaled = if r["grid"] == "whole frame" || crop == FULL { "" } else { " (scaled by voxels)" };
        println!(
            "| {} | {} | {} | {:.3} | {:.2}{scaled} | {gib:.2} GiB{reserved} | {:.0}x | {:.3} | {:.1} MiB | {:.1} MiB |",
            r["mode"].as_str().unwrap(),
            r["grid"].as_str().unwrap(),
            r["sites"],
            r["seconds"].as_f64().unwrap(),
            per_frame,
            dense["per_frame"].as_f64().unwrap() / per_frame,
            r["peak"].as_f64().unwrap() / (dense_plan as f64).max(1.0),
            r["counted"].as_f64().unwrap() / 1048576.0,
            r["planned"].as_f64().unwrap() / 1048576.0,
        );
    }
    println!(
        "dense ultra_lightweight on the whole grid, planned: {:.2} GiB (memory ratio = peak / this plan)",
        dense_plan as f64 / (1u64 << 30) as f64
    );
    cuda_plans();
}

/// The CUDA plans of each preset on this root's worst training frame, for a 24 GiB card.
fn cuda_plans() {
    let ds = Dataset::open(common::sim_root(), Split::Train, &DatasetConfig::default()).unwrap();
    println!("planned on CUDA (f16 autocast) for the worst training frame of the root, per micro-batch:");
    for preset in ["sparse_small", "sparse_base", "sparse_wide"] {
        let cfg = SparseVaeConfig::named(preset).unwrap();
        let sites = radvox::train::sparse_vae::scan_sites(&ds, &cfg).unwrap();
        let plans: Vec<String> = [1usize, 8, 32]
            .iter()
            .map(|&batch| {
                let model = SparseModel { vae: cfg.clone(), sites: sites.clone() };
                let run = Run {
                    model: ModelConfig::SparseVae(Box::new(model)),
                    grid: FULL,
                    batch,
                    precision: Precision::Amp,
                    checkpointing: Checkpointing::Off,
                };
                let p = Planner::new(Backend::Cuda).plan(&run).unwrap();
                format!("batch {batch}: {:.2} GiB", p.total() as f64 / (1u64 << 30) as f64)
            })
            .collect();
        println!("  {preset}: {} (24 GiB card)", plans.join(", "));
    }
}
