//! One LDM micro-step (EDM loss + backward) at the real latent size
//! `(1, 4, 48, 152, 56)` beside one VAE micro-step at the real grid
//! `(1, 4, 96, 608, 224)`, in the same run, each in its own process (so
//! each peak is its own). CPU; `RADVOX_BENCH_DEVICE=cuda` on the GPU, where
//! half precision is f16 autocast and the peak is the caching allocator's.
//!
//! `cargo bench --bench ldm_step` (`RADVOX_SKIP_VAE=1` skips the ~5 min CPU VAE step)

use std::process::Command;
use std::time::Instant;

use radvox::diffusion::EdmConfig;
use radvox::model::{Checkpointing, Unet3d, UnetConfig, Vae3d, VaeConfig};
use radvox::train::Amp;
use tch::{nn, Device, Kind, Tensor};

mod common;

/// Half precision on the bench's device: bf16 autocast on a CPU, f16 on CUDA.
fn half(device: Device) -> Amp {
    Amp::for_device(true, device)
}

fn sync(device: Device) {
    if device.is_cuda() {
        tch::Cuda::synchronize(0);
    }
}

fn ldm(mode: &str, device: Device) -> (f64, usize) {
    let (ck, amp) = match mode {
        "ldm_f32" => (false, Amp::Off),
        "ldm_f32_ckpt" => (true, Amp::Off),
        "ldm_half" => (false, half(device)),
        m => panic!("{m}"),
    };
    let vs = nn::VarStore::new(device);
    let unet = Unet3d::new(&vs.root(), &UnetConfig::default()).unwrap();
    let shape = [1, 4, 48, 152, 56];
    let (y, c) = (Tensor::randn(shape, (Kind::Float, device)), Tensor::randn(shape, (Kind::Float, device)));
    let edm = EdmConfig::default();
    let mut times = Vec::new();
    for i in 0..3 {
        let draws = edm.draw(&y, i);
        let t = Instant::now();
        amp.run(|| edm.backward(&unet, &y, &c, Some(&draws), ck, 1.0)).unwrap();
        sync(device);
        times.push(t.elapsed().as_secs_f64());
    }
    (times[1..].iter().sum::<f64>() / 2.0, 2)
}

fn vae(device: Device) -> (f64, usize) {
    let vs = nn::VarStore::new(device);
    let vae = Vae3d::new(&vs.root(), &VaeConfig::ultra_lightweight()).unwrap();
    let shape = [1, 4, 96, 608, 224];
    let x = Tensor::randn(shape, (Kind::Float, device));
    let eps = Tensor::randn(vae.latent_shape(shape), (Kind::Float, device));
    let mse = |r: &Tensor, t: &Tensor| r.to_kind(Kind::Float).mse_loss(t, tch::Reduction::Mean);
    // on a GPU the first step (cuDNN's choices) is not timed
    let steps = if device.is_cuda() { 3 } else { 1 };
    let mut times = Vec::new();
    for _ in 0..steps {
        let t = Instant::now();
        half(device).run(|| vae.backward(&x, Some(&eps), Checkpointing::PerBlock, 1.0 / 8.0, &mse)).unwrap();
        sync(device);
        times.push(t.elapsed().as_secs_f64());
    }
    let timed = &times[(steps - 1).min(1)..];
    (timed.iter().sum::<f64>() / timed.len() as f64, timed.len())
}

fn main() {
    let device = common::device();
    if let Ok(mode) = std::env::var("RADVOX_STEP_CHILD") {
        let (s, n) = if mode == "vae_half_block_full_grid" { vae(device) } else { ldm(&mode, device) };
        let peak = if device.is_cuda() {
            common::cuda_peaks().0
        } else {
            radvox::memory::proc_status_bytes("VmHWM").unwrap_or(0)
        };
        println!(r#"{{"mode": "{mode}", "seconds": {s}, "steps": {n}, "peak": {peak}}}"#);
        return;
    }
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let me = std::env::current_exe().unwrap();
    let mut modes = vec!["ldm_f32", "ldm_f32_ckpt", "ldm_half"];
    if std::env::var_os("RADVOX_SKIP_VAE").is_none() {
        modes.push("vae_half_block_full_grid");
    }
    let (on, peak) = if device.is_cuda() {
        ("CUDA".to_string(), "peak alloc GiB")
    } else {
        (format!("CPU ({} threads)", tch::get_num_threads()), "peak RSS GiB")
    };
    println!(
        "micro-step, batch 1, {on}, half = {:?}: LDM UNet at latent (1,4,48,152,56); VAE ultra_lightweight at (1,4,96,608,224)",
        half(device)
    );
    println!("{:<26} {:>10} {:>14}", "run", "s/step", peak);
    for m in modes {
        let out = Command::new(&me).env("RADVOX_STEP_CHILD", m).output().expect("spawn");
        let line = String::from_utf8_lossy(&out.stdout);
        match line.lines().find(|l| l.starts_with('{')) {
            Some(j) => {
                let v: serde_json::Value = serde_json::from_str(j).unwrap();
                println!(
                    "{m:<26} {:>10.3} {:>14.2}",
                    v["seconds"].as_f64().unwrap(),
                    v["peak"].as_f64().unwrap() / (1u64 << 30) as f64
                );
            }
            None => println!("{m:<26} failed: {}", String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or("")),
        }
    }
}
