//! One LDM micro-step (EDM loss + backward) at the real latent size
//! `(1, 4, 48, 152, 56)` beside one VAE micro-step at the real grid
//! `(1, 4, 96, 608, 224)`, in the same run, each in its own process (so
//! each peak RSS is its own). CPU.
//!
//! `cargo bench --bench ldm_step` (`RADVOX_SKIP_VAE=1` skips the ~5 min VAE step)

use std::process::Command;
use std::time::Instant;

use radvox::diffusion::EdmConfig;
use radvox::model::{Checkpointing, Unet3d, UnetConfig, Vae3d, VaeConfig};
use radvox::train::Amp;
use tch::{nn, Device, Kind, Tensor};

fn ldm(mode: &str) -> (f64, usize) {
    let (ck, amp) = match mode {
        "ldm_f32" => (false, Amp::Off),
        "ldm_f32_ckpt" => (true, Amp::Off),
        "ldm_bf16" => (false, Amp::CpuBf16),
        m => panic!("{m}"),
    };
    let vs = nn::VarStore::new(Device::Cpu);
    let unet = Unet3d::new(&vs.root(), &UnetConfig::default()).unwrap();
    let shape = [1, 4, 48, 152, 56];
    let (y, c) = (Tensor::randn(shape, (Kind::Float, Device::Cpu)), Tensor::randn(shape, (Kind::Float, Device::Cpu)));
    let edm = EdmConfig::default();
    let mut times = Vec::new();
    for i in 0..3 {
        let draws = edm.draw(&y, i);
        let t = Instant::now();
        amp.run(|| edm.backward(&unet, &y, &c, &draws, ck, 1.0)).unwrap();
        times.push(t.elapsed().as_secs_f64());
    }
    (times[1..].iter().sum::<f64>() / 2.0, 2)
}

fn vae() -> (f64, usize) {
    let vs = nn::VarStore::new(Device::Cpu);
    let vae = Vae3d::new(&vs.root(), &VaeConfig::ultra_lightweight()).unwrap();
    let shape = [1, 4, 96, 608, 224];
    let x = Tensor::randn(shape, (Kind::Float, Device::Cpu));
    let eps = Tensor::randn(vae.latent_shape(shape), (Kind::Float, Device::Cpu));
    let mse = |r: &Tensor, t: &Tensor| r.to_kind(Kind::Float).mse_loss(t, tch::Reduction::Mean);
    let t = Instant::now();
    Amp::CpuBf16.run(|| vae.backward(&x, Some(&eps), Checkpointing::PerBlock, 1.0 / 8.0, &mse)).unwrap();
    (t.elapsed().as_secs_f64(), 1)
}

fn main() {
    if let Ok(mode) = std::env::var("RADVOX_STEP_CHILD") {
        let (s, n) = if mode == "vae_bf16_block_full_grid" { vae() } else { ldm(&mode) };
        let peak = radvox::memory::proc_status_bytes("VmHWM").unwrap_or(0);
        println!(r#"{{"mode": "{mode}", "seconds": {s}, "steps": {n}, "peak_rss": {peak}}}"#);
        return;
    }
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let me = std::env::current_exe().unwrap();
    let mut modes = vec!["ldm_f32", "ldm_f32_ckpt", "ldm_bf16"];
    if std::env::var_os("RADVOX_SKIP_VAE").is_none() {
        modes.push("vae_bf16_block_full_grid");
    }
    println!("micro-step, batch 1, CPU ({} threads): LDM UNet at latent (1,4,48,152,56); VAE ultra_lightweight at (1,4,96,608,224)", tch::get_num_threads());
    println!("{:<26} {:>10} {:>13}", "run", "s/step", "peak RSS GiB");
    for m in modes {
        let out = Command::new(&me).env("RADVOX_STEP_CHILD", m).output().expect("spawn");
        let line = String::from_utf8_lossy(&out.stdout);
        match line.lines().find(|l| l.starts_with('{')) {
            Some(j) => {
                let v: serde_json::Value = serde_json::from_str(j).unwrap();
                println!(
                    "{m:<26} {:>10.2} {:>13.2}",
                    v["seconds"].as_f64().unwrap(),
                    v["peak_rss"].as_f64().unwrap() / (1u64 << 30) as f64
                );
            }
            None => println!("{m:<26} failed: {}", String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or("")),
        }
    }
}
