//! Tiled encoding + decoding of a whole native frame `(96, 608, 224)`: the
//! tile the memory planner picks for a budget, its planned peak, and the
//! measured one, for every VAE preset (random weights: memory and time do
//! not depend on them), each in a fresh process.
//!
//! Measured on CPU as `benches/memory_plan.rs` does: peak RSS (`VmHWM`,
//! reset once libtorch is loaded) above the RSS at that point, and
//! libtorch's counted tensor peak. The prediction is
//! `InferencePlan::device_tensors()`. Beside it, the CUDA plan for a
//! 24 GiB card.
//!
//! `cargo bench --bench tiled_inference`; `RADVOX_TILES_BUDGET_GB` (default
//! 4) is the CPU budget the tile is chosen for, `RADVOX_TILES_ONLY=name`
//! keeps the presets whose name contains it, `--plan` prints plans only.

use std::process::Command;
use std::time::Instant;

use radvox::memory::{self, choose_tiling, gib, Backend, InferencePlan, ModelConfig, Planner, VAE_PRESETS};
use radvox::model::{FrozenVae, Tiling, Vae3d, VaeConfig};
use tch::{nn, Device, Kind, Tensor};

mod common;

const GRID: [i64; 3] = [96, 608, 224];
const HALO: i64 = 8;

/// The plan chosen for `preset` within `gb` GiB on `backend`.
fn chosen(preset: &str, backend: Backend, gb: f64) -> Result<InferencePlan, memory::MemoryError> {
    let mp = Planner::new(backend).model(&ModelConfig::Vae(VaeConfig::named(preset).unwrap())).unwrap();
    choose_tiling(memory::gib_to_bytes(gb), &mp, GRID, HALO)
}

/// Encodes and decodes one synthetic frame with `tiling`; prints one JSON line.
fn child(preset: &str, tiling: Option<Tiling>) {
    assert!(radvox::sys::shim::count_host_tensors());
    memory::return_large_frees();
    let cfg = VaeConfig::named(preset).unwrap();
    let vs = nn::VarStore::new(Device::Cpu);
    let vae = Vae3d::new(&vs.root(), &cfg).unwrap();
    let frozen =
        FrozenVae { vs, vae, channel_scale: vec![1.0; 4], hash: String::new(), tiling: None, occupancy_logits: false }
            .with_tiling(tiling)
            .unwrap();
    // a sparse occupancy-like frame, as the loader yields it (f16)
    let frame =
        Tensor::rand([1, 4, GRID[0], GRID[1], GRID[2]], (Kind::Float, Device::Cpu)).lt(0.02).to_kind(Kind::Half);
    let window = common::HostPeak::start();
    let t0 = Instant::now();
    let recon = frozen.decode(&frozen.encode(&frame));
    let seconds = t0.elapsed().as_secs_f64();
    assert_eq!(recon.size(), frame.size());
    let (rss, counted) = window.peaks();
    // the frame and the weights were resident before the reset: add them back
    let held =
        (frame.numel() * 2) as u64 + frozen.vs.trainable_variables().iter().map(|t| t.numel() as u64 * 4).sum::<u64>();
    println!(r#"{{"measured": {}, "counted": {}, "seconds": {seconds:.1}}}"#, rss + held, counted + held);
}

fn main() {
    if let Ok(spec) = std::env::var("RADVOX_TILES_CHILD") {
        let (preset, tile) = spec.split_once(':').unwrap();
        let tiling = (tile != "whole").then(|| {
            let v: Vec<i64> = tile.split(',').map(|s| s.parse().unwrap()).collect();
            Tiling::new([v[0], v[1], v[2]], HALO)
        });
        return child(preset, tiling);
    }
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let gb: f64 = std::env::var("RADVOX_TILES_BUDGET_GB").ok().and_then(|v| v.parse().ok()).unwrap_or(4.0);
    let only = std::env::var("RADVOX_TILES_ONLY").unwrap_or_default();
    let plan_only = std::env::args().any(|a| a == "--plan");
    let backend = Backend::cpu();
    println!(
        "tiled encode + decode of a {GRID:?} frame, halo {HALO}: tile chosen for {gb} GiB on {backend:?} (measured) \
         and for 24 GiB on CUDA (planned); f32, random weights"
    );
    println!("| preset | CPU tile (tiles) | planned | peak RSS | error | counted tensors | error | seconds | CUDA 24 GiB: tile (tiles) | planned |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let me = std::env::current_exe().unwrap();
    for preset in VAE_PRESETS.iter().rev().filter(|p| p.contains(&only)) {
        let cuda = match chosen(preset, Backend::Cuda, 24.0) {
            Ok(p) => format!("{} ({}) | {}", tile_of(&p), p.tiles, gib(p.total())),
            Err(e) => format!("{e} | -"),
        };
        let plan = match chosen(preset, backend, gb) {
            Ok(p) => p,
            Err(e) => {
                println!("| {preset} | {e} | | | | | | | {cuda} |");
                continue;
            }
        };
        let predicted = plan.device_tensors();
        let mut row = format!("| {preset} | {} ({}) | {} |", tile_of(&plan), plan.tiles, gib(predicted));
        if plan_only {
            println!("{row} | | | | | {cuda} |");
            continue;
        }
        let out = Command::new(&me).env("RADVOX_TILES_CHILD", format!("{preset}:{}", tile_of(&plan))).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        match stdout.lines().find(|l| l.starts_with('{')) {
            Some(json) => {
                let v: serde_json::Value = serde_json::from_str(json).unwrap();
                let (m, c) = (v["measured"].as_f64().unwrap(), v["counted"].as_f64().unwrap());
                let p = predicted as f64;
                row += &format!(
                    " {} | {:+.1}% | {} | {:+.1}% | {:.0} | {cuda} |",
                    gib(m as u64),
                    100.0 * (p / m - 1.0),
                    gib(c as u64),
                    100.0 * (p / c - 1.0),
                    v["seconds"].as_f64().unwrap()
                );
            }
            None => {
                let err = String::from_utf8_lossy(&out.stderr);
                row += &format!(" failed: {} | {cuda} |", err.lines().last().unwrap_or(""));
            }
        }
        println!("{row}");
    }
    println!("planned and measured include the weights, the caller's f16 frame and every tensor at the peak; not the runtime (libtorch's own RSS before any tensor)");
}

/// `Z,H,W` of the plan's tile, or `whole`.
fn tile_of(p: &InferencePlan) -> String {
    p.tiling.map_or("whole".into(), |t| t.tile.map(|v| v.to_string()).join(","))
}
