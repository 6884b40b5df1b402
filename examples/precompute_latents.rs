//! Encodes the target and radar grids of every frame once with a frozen VAE
//! (dense or sparse: the checkpoint says which)
//! and writes them as f16 `.npy` latents (memory-mapped by `train_ldm`). The
//! data layout is the VAE's; a contradicting `--resample` is refused.
#![allow(clippy::result_large_err)] // errors carry the file they are about, as the library's do
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use radvox::data::{Dataset, DatasetConfig, Split};
use radvox::diffusion::latents::precompute;
use radvox::train::vae::frame_layout;
use radvox::train::{load_any_vae, parse_device};

mod common;

/// Encode every frame's target and radar grids with a frozen VAE.
#[derive(Debug, Parser)]
#[command(version, allow_negative_numbers = true)]
struct Cli {
    /// The VAE checkpoint.
    #[arg(long)]
    vae: PathBuf,
    /// NTU4DRadLM_Pre root.
    #[arg(long)]
    dataset_dir: PathBuf,
    /// Cache directory to write.
    #[arg(long)]
    out: PathBuf,
    /// Split to encode: train, val or all.
    #[arg(long, default_value = "all")]
    split: Split,
    /// Must match the VAE's layout when given.
    #[arg(long, value_parser = common::zhw)]
    resample: Option<[usize; 3]>,
    #[command(flatten)]
    tiles: common::TileArgs,
    /// Device: auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    device: String,
    /// No progress bar.
    #[arg(long)]
    no_progress: bool,
    /// Replace a cache another VAE wrote in --out (its latents are removed).
    #[arg(long)]
    overwrite: bool,
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let cli = Cli::parse();
    let loaded = load_any_vae(&cli.vae, parse_device(&cli.device)?)?;
    let layout = frame_layout(loaded.layout, cli.resample, &cli.vae)?;
    let ds = Dataset::open(&cli.dataset_dir, cli.split, &DatasetConfig { layout, ..Default::default() })?;
    let s = ds.output_shape(0);
    let grid = [s[1] as i64, s[2] as i64, s[3] as i64];
    loaded.vae.check_grid(grid)?;
    let vae = cli.tiles.apply_any(loaded.vae, grid)?;
    let bar =
        if cli.no_progress { indicatif::ProgressBar::hidden() } else { indicatif::ProgressBar::new(ds.len() as u64) };
    let t = std::time::Instant::now();
    let m = precompute(&vae, &ds, &cli.out, &cli.vae, cli.overwrite, &|i| bar.set_position(i as u64))?;
    bar.finish_and_clear();
    println!(
        "{} frames -> latents {:?} (f16) in {} ({:.1} s); VAE hash {}",
        m.frames.len(),
        m.latent_shape,
        cli.out.display(),
        t.elapsed().as_secs_f64(),
        m.vae_hash
    );
    Ok(())
}

fn main() -> ExitCode {
    common::main_with(run)
}
