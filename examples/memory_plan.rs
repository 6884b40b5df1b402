//! Prints the seed's memory table for a device budget: each configuration
//! the seed tried, with and without checkpointing, its predicted peak, whether
//! it fits, the measured peak where `benches/memory_plan.rs` measured it, the
//! change that would make it fit, the largest native-resolution crop the
//! `standard` and `seed_baseline` presets train on, the tile each preset
//! encodes and decodes whole frames in, and the largest VAE that fits; with
//! `--dataset-dir`, the sparse VAE presets planned from the worst training
//! frame's site counts of that root, and which of them fits where a dense
//! configuration does not.
//!
#![allow(clippy::result_large_err)] // errors carry the file they are about, as the library's do
use std::process::ExitCode;

use clap::Parser;
use radvox::memory::{
    choose_tiling, fit, gib, gib_to_bytes, largest_crop, Backend, ModelConfig, Planner, Precision, Run, VAE_PRESETS,
};
use radvox::model::{Checkpointing, UnetConfig, VaeConfig};

mod common;

/// Print the seed's memory table for a budget: predicted peaks, what fits, what would.
#[derive(Debug, Parser)]
#[command(version, allow_negative_numbers = true)]
struct Cli {
    /// Memory budget in GiB.
    #[arg(long, default_value_t = 24.0, value_parser = common::positive)]
    budget_gb: f64,
    /// Padded input grid Z,H,W.
    #[arg(long, default_value = "96,608,224", value_parser = common::zhw)]
    grid: [usize; 3],
    /// cuda, or cpu (this machine's kind of bf16).
    #[arg(long, default_value = "cuda")]
    backend: String,
    /// Measured peaks (the memory_plan bench's CSV).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/memory_measured.csv"))]
    measured: std::path::PathBuf,
    /// Loader prefetch.
    #[arg(long, default_value_t = 2)]
    prefetch: usize,
    /// Loader workers.
    #[arg(long, default_value_t = 1)]
    num_workers: usize,
    /// Plan the sparse VAE presets too, from the site counts of this root's
    /// training frames (a scan of every frame, at native resolution).
    #[arg(long)]
    dataset_dir: Option<std::path::PathBuf>,
}

/// A sparse preset planned for a root: its name, the root's grid and the model with its site counts.
type SparseCandidate = (&'static str, [i64; 3], ModelConfig);

/// The sparse presets as planned for the worst training frame of `root`;
/// prints one row per preset, batch and precision.
fn sparse_rows(
    root: &std::path::Path,
    planner: &Planner,
    budget: u64,
) -> Result<Vec<SparseCandidate>, Box<dyn std::error::Error>> {
    use radvox::memory::SparseModel;
    use radvox::model::sparse::config::SPARSE_PRESETS;
    use radvox::model::sparse::SparseVaeConfig;
    let ds = radvox::Dataset::open(root, radvox::Split::Train, &Default::default())?;
    let s = ds.output_shape(0);
    let grid = [s[1] as i64, s[2] as i64, s[3] as i64];
    let mut models = Vec::new();
    for name in SPARSE_PRESETS {
        let vae = SparseVaeConfig::named(name)?;
        let sites = radvox::train::sparse_vae::scan_sites(&ds, &vae)?;
        let native = sites.sites.first().copied().unwrap_or(0);
        let model = ModelConfig::SparseVae(Box::new(SparseModel { vae, sites }));
        for batch in [1, 8, 32] {
            for precision in [Precision::F32, Precision::Amp] {
                let run = Run { model: model.clone(), grid, batch, precision, checkpointing: Checkpointing::Off };
                let p = planner.plan(&run)?;
                println!(
                    "| {name} (worst of {} frames: {native} native sites) | {batch} | {precision} | off | {} | {} | - | {} |",
                    ds.len(),
                    gib(p.total()),
                    if p.fits(budget) { "yes" } else { "no" },
                    p.peak_at
                );
            }
        }
        models.push((name, grid, model));
    }
    Ok(models)
}

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
    let cli = Cli::parse();
    let budget_gib = cli.budget_gb;
    let grid = cli.grid.map(|d| d as i64);
    let backend = match cli.backend.as_str() {
        "cuda" => Backend::Cuda,
        "cpu" => Backend::cpu(),
        other => return Err(format!("--backend {other:?}: use cuda or cpu").into()),
    };
    let (prefetch, workers) = (cli.prefetch, cli.num_workers);
    let measured_path = cli.measured.display().to_string();
    let budget = gib_to_bytes(budget_gib);
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
    let mut unfit = Vec::new();
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
            if !f.fits {
                unfit.push((name, batch, precision, checkpointing));
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
    // native-resolution crop training: the largest crop each preset trains on
    for name in ["standard", "seed_baseline"] {
        let mp = planner.model(&ModelConfig::Vae(VaeConfig::named(name)?))?;
        for (precision, checkpointing) in
            [(Precision::Amp, Checkpointing::PerBlock), (Precision::F32, Checkpointing::Off)]
        {
            match largest_crop(budget, &mp, grid, precision, checkpointing) {
                Some(p) => println!(
                    "| {name} --crop {} | 1 | {precision} | {checkpointing} | {} | yes | - | {} |",
                    p.run.grid.map(|d| d.to_string()).join(","),
                    gib(p.total()),
                    p.peak_at
                ),
                None => println!("| {name} crops | 1 | {precision} | {checkpointing} | - | no crop fits | - | - |"),
            }
        }
    }
    // whole frames through a frozen VAE: the largest tile each preset's
    // encode + decode fits in (no gradients, f32)
    for name in VAE_PRESETS {
        let mp = planner.model(&ModelConfig::Vae(VaeConfig::named(name)?))?;
        match choose_tiling(budget, &mp, grid, 8) {
            Ok(p) => println!(
                "| {name} encode + decode, {} ({} tiles) | 1 | f32 | no grad | {} | yes | - | {} |",
                p.tiles_flag(),
                p.tiles,
                gib(p.total()),
                p.peak_at
            ),
            Err(e) => println!("| {name} encode + decode | 1 | f32 | no grad | - | {e} | - | - |"),
        }
    }
    let sparse = match &cli.dataset_dir {
        Some(root) => sparse_rows(root, &planner, budget)?,
        None => Vec::new(),
    };
    println!("\npredicted = tensors at the step's peak + runtime reserve; measured = the bench's peak (tensors only) and the prediction's error against it.");
    for n in &notes {
        println!("{n}");
    }
    for (name, batch, precision, checkpointing) in unfit {
        // the widest sparse preset that fits at the same batch and precision
        let fitting = sparse.iter().rev().find_map(|(preset, grid, model)| {
            let run = Run { model: model.clone(), grid: *grid, batch, precision, checkpointing: Checkpointing::Off };
            planner.plan(&run).ok().filter(|p| p.fits(budget)).map(|p| (preset, p))
        });
        if let Some((preset, p)) = fitting {
            println!(
                "{name} batch {batch} {precision} ck {checkpointing} does not fit; the sparse family does: {preset} batch {batch} {precision} -> {}",
                gib(p.total())
            );
        }
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
