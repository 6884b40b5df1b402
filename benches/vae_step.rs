//! Seconds per VAE micro-step (forward + backward, batch 1) and peak memory,
//! radvox beside the PyTorch reference (`benches/reference/`), each
//! configuration in its own process so its peak is its own. CPU (peak RSS);
//! `RADVOX_BENCH_DEVICE=cuda` on the GPU (peak allocated bytes; half
//! precision is f16 autocast with loss scaling on both sides; the reference
//! runs under `RADVOX_TORCH_PYTHON`, default the checkout's `.venv-python`).
//!
//! `cargo bench --bench vae_step` (grid `RADVOX_GRID=Z,H,W`, default 32,128,128;
//! `RADVOX_STEPS=N` timed steps, default 3).

use std::process::Command;
use std::time::Instant;

use radvox::model::{Checkpointing, Vae3d, VaeConfig};
use radvox::train::Amp;
use tch::{nn, Device, Kind, Tensor};

mod common;

fn child(mode: &str, grid: [i64; 3], steps: usize, device: Device) {
    let half = Amp::for_device(true, device);
    let (ck, amp) = match mode {
        "plain" => (Checkpointing::Off, Amp::Off),
        "block" => (Checkpointing::PerBlock, Amp::Off),
        "segments4" => (Checkpointing::Segments(4), Amp::Off),
        "bf16" | "f16" => (Checkpointing::Off, half),
        "bf16_block" | "f16_block" => (Checkpointing::PerBlock, half),
        m => panic!("unknown mode {m}"),
    };
    let vs = nn::VarStore::new(device);
    let vae = Vae3d::new(&vs.root(), &VaeConfig::ultra_lightweight()).unwrap();
    let x = radvox::sys::normal(0, &[1, 4, grid[0], grid[1], grid[2]], device);
    let eps = radvox::sys::normal(1, &vae.latent_shape([1, 4, grid[0], grid[1], grid[2]]), device);
    let mse = |r: &Tensor, t: &Tensor| r.to_kind(Kind::Float).mse_loss(t, tch::Reduction::Mean);
    let mut times = Vec::new();
    for _ in 0..=steps {
        let t = Instant::now();
        amp.run(|| vae.backward(&x, Some(&eps), ck, 1.0 / 8.0, &mse)).unwrap();
        if device.is_cuda() {
            tch::Cuda::synchronize(0);
        }
        times.push(t.elapsed().as_secs_f64());
    }
    let mut timed = times[1..].to_vec();
    timed.sort_by(f64::total_cmp);
    let peak =
        if device.is_cuda() { common::cuda_peaks().0 } else { radvox::memory::proc_status_bytes("VmHWM").unwrap_or(0) };
    println!(r#"{{"impl": "radvox", "mode": "{mode}", "seconds": {}, "peak": {peak}}}"#, timed[timed.len() / 2]);
}

fn main() {
    let grid: Vec<i64> =
        std::env::var("RADVOX_GRID").unwrap_or("32,128,128".into()).split(',').map(|v| v.parse().unwrap()).collect();
    let grid = [grid[0], grid[1], grid[2]];
    let steps: usize = std::env::var("RADVOX_STEPS").ok().and_then(|s| s.parse().ok()).unwrap_or(3);
    let device = common::device();
    if let Ok(mode) = std::env::var("RADVOX_VAE_STEP_CHILD") {
        return child(&mode, grid, steps, device);
    }
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let me = std::env::current_exe().unwrap();
    let python = std::env::var("RADVOX_TORCH_PYTHON")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/.venv-python").into());
    // the script beside the working directory first (a carried binary runs in another checkout)
    let script = [
        "benches/reference/vae3d_reference.py",
        concat!(env!("CARGO_MANIFEST_DIR"), "/benches/reference/vae3d_reference.py"),
    ]
    .into_iter()
    .find(|p| std::path::Path::new(p).exists())
    .expect("benches/reference/vae3d_reference.py");
    let cuda = device.is_cuda();
    let (on, torch_modes, modes): (String, &[&str], &[&str]) = if cuda {
        ("CUDA".into(), &["plain", "checkpoint", "f16", "f16_checkpoint"], &["plain", "block", "f16", "f16_block"])
    } else {
        (
            format!("CPU ({} threads)", tch::get_num_threads()),
            &["plain", "checkpoint"],
            &["plain", "block", "segments4", "bf16", "bf16_block"],
        )
    };
    println!("VAE micro-step, ultra_lightweight, batch 1, grid {grid:?}, {on}, median of {steps}");
    let mut rows = Vec::new();
    let runs: Vec<(String, Command)> = torch_modes
        .iter()
        .map(|m| {
            let mut c = Command::new(&python);
            c.arg(script).arg(m).args(grid.map(|v| v.to_string())).arg(steps.to_string());
            c.arg(if cuda { "cuda" } else { "cpu" });
            (format!("pytorch {m}"), c)
        })
        .chain(modes.iter().map(|m| {
            let mut c = Command::new(&me);
            c.env("RADVOX_VAE_STEP_CHILD", m);
            (format!("radvox {m}"), c)
        }))
        .collect();
    for (name, mut cmd) in runs {
        let out = cmd.output().expect("spawn");
        let line = String::from_utf8_lossy(&out.stdout);
        let Some(json) = line.lines().find(|l| l.starts_with('{')) else {
            println!("{name:<22} failed: {}", String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or(""));
            continue;
        };
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        let (s, rss) = (v["seconds"].as_f64().unwrap(), v["peak"].as_f64().unwrap() / 1e9);
        rows.push((name.clone(), s, rss));
    }
    let base = rows.iter().find(|r| r.0 == "pytorch plain").map(|r| (r.1, r.2));
    let peak = if cuda { "peak alloc GB" } else { "peak RSS GB" };
    println!("{:<22} {:>10} {:>13} {:>14} {:>14}", "run", "s/step", peak, "time vs torch", "peak vs torch");
    for (name, s, rss) in &rows {
        let (rt, rm) = base.map(|(bs, br)| (s / bs, rss / br)).unwrap_or((f64::NAN, f64::NAN));
        println!("{name:<22} {s:>10.4} {rss:>13.3} {rt:>13.2}x {rm:>13.2}x");
    }
}
