//! Prints the seed's memory table for a device budget: each configuration
//! the seed tried, with and without checkpointing, its predicted peak, whether
//! it fits, the measured peak where `benches/memory_plan.rs` measured it, the
//! change that would make it fit, and the largest VAE that fits.
//!
//! `cargo run --release --example memory_plan -- --budget-gb 24 [--grid Z,H,W]
//!  [--backend cuda|cpu] [--measured FILE.csv] [--prefetch N] [--num-workers N]`
use std::process::ExitCode;

use radvox::layout::parse_zhw;
use radvox::memory::plan::{gib, Planner, VAE_PRESETS};
use radvox::memory::{fit, Backend, ModelConfig, Precision, Run};
use radvox::model::{Checkpointing, UnetConfig, VaeConfig};

mod common;

const USAGE: &str = "usage: memory_plan [--budget-gb GiB] [--grid Z,H,W] [--backend cuda|cpu] [--measured FILE.csv] \
[--prefetch N] [--num-workers N]";

/// A measured peak from the validation bench's CSV.
struct Measured {
    key: String,
    bytes: u64,
}

fn read_measured(path: &str) -> Vec<Measured> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    // backend,model,grid,batch,precision,checkpointing,predicted_bytes,measured_bytes,...
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            let bytes = f.get(7)?.parse().ok()?;
            Some(Measured { key: f[..6].join(",").to_lowercase(), bytes })
        })
        .collect()
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let (mut budget_gib, mut grid, mut backend) = (24.0f64, [96, 608, 224], Backend::Cuda);
    let mut measured_path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/memory_measured.csv").to_string();
    let (mut prefetch, mut workers) = (2, 1);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || common::value(&mut args, &flag);
        match flag.as_str() {
            "--budget-gb" => budget_gib = value()?.parse()?,
            "--grid" => {
                let g = parse_zhw(&value()?)?;
                grid = [g[0] as i64, g[1] as i64, g[2] as i64];
            }
            "--backend" => {
                backend = match value()?.as_str() {
                    "cuda" => Backend::Cuda,
                    "cpu" => Backend::Cpu,
                    other => return Err(format!("--backend {other:?}: use cuda or cpu").into()),
                }
            }
            "--measured" => measured_path = value()?,
            "--prefetch" => prefetch = value()?.parse()?,
            "--num-workers" => workers = value()?.parse()?,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => return Err(format!("unknown flag {other}\n{USAGE}").into()),
        }
    }
    if !(budget_gib > 0.0 && budget_gib.is_finite()) {
        return Err(format!("--budget-gb must be > 0, got {budget_gib}").into());
    }
    let budget = (budget_gib * (1u64 << 30) as f64) as u64;
    let planner = Planner { prefetch, workers, ..Planner::new(backend) };
    let measured = read_measured(&measured_path);
    println!(
        "memory plan: {backend:?} budget {budget_gib} GiB (runtime reserve {}), grid {grid:?}, loader {prefetch} prefetch + {workers} worker(s)\n",
        gib(planner.runtime)
    );
    println!("| config | batch | precision | checkpointing | predicted | fits | measured peak | peak at |");
    println!("|---|---|---|---|---|---|---|---|");
    let rows = [
        ("seed_baseline", 8, Precision::F32),
        ("lightweight", 2, Precision::F32),
        ("ultra_lightweight", 1, Precision::F32),
        ("ultra_lightweight", 1, Precision::Amp),
    ];
    let mut notes = Vec::new();
    for (name, batch, precision) in rows {
        for checkpointing in [Checkpointing::Off, Checkpointing::PerBlock] {
            let run = Run { model: ModelConfig::Vae(VaeConfig::named(name)?), grid, batch, precision, checkpointing };
            let f = fit(budget, &planner, &run)?;
            let p = &f.requested;
            let m = measured.iter().find(|m| m.key == run.key(backend)).map_or("-".to_string(), |m| {
                format!("{} ({:+.1}%)", gib(m.bytes), 100.0 * (p.device_tensors() as f64 / m.bytes as f64 - 1.0))
            });
            println!(
                "| {name} | {batch} | {precision} | {checkpointing} | {} | {} | {m} | {} |",
                gib(p.total()),
                if f.fits { "yes" } else { "no" },
                p.peak_at
            );
            if let Some((changes, fixed)) = &f.suggestion {
                let changes: Vec<String> = changes.iter().map(|c| c.to_string()).collect();
                notes.push(format!(
                    "{name} batch {batch} {precision} ck {checkpointing}: fits with {} -> {}",
                    changes.join(", "),
                    gib(fixed.total())
                ));
            } else if !f.fits {
                notes.push(format!(
                    "{name} batch {batch} {precision} ck {checkpointing}: no change in the planner's list fits"
                ));
            }
        }
    }
    let latent = [grid[0] / 2, grid[1] / 4, grid[2] / 4];
    let unet = ModelConfig::Unet(UnetConfig::default());
    for precision in [Precision::F32, Precision::Amp] {
        for checkpointing in [Checkpointing::Off, Checkpointing::PerBlock] {
            let p = planner.plan(&Run { model: unet.clone(), grid: latent, batch: 1, precision, checkpointing })?;
            println!(
                "| latent unet {latent:?} | 1 | {precision} | {checkpointing} | {} | {} | - | {} |",
                gib(p.total()),
                if p.fits(budget) { "yes" } else { "no" },
                p.peak_at
            );
        }
    }
    println!("\npredicted = tensors at the step's peak + runtime reserve; measured = the bench's peak (tensors only) and the prediction's error against it.");
    for n in &notes {
        println!("{n}");
    }
    for precision in [Precision::F32, Precision::Amp] {
        for checkpointing in [Checkpointing::Off, Checkpointing::PerBlock] {
            let run = Run {
                model: ModelConfig::Vae(VaeConfig::named(VAE_PRESETS[0])?),
                grid,
                batch: 1,
                precision,
                checkpointing,
            };
            match fit(budget, &planner, &run)?.largest {
                Some(p) => println!("largest that fits at {precision}, checkpointing {checkpointing}: {}", p.summary()),
                None => println!("nothing fits at {precision}, checkpointing {checkpointing}"),
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    common::main_with(run)
}
