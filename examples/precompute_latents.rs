//! Encodes the target and radar grids of every frame once with a frozen VAE
//! and writes them as f16 `.npy` latents (memory-mapped by `train_ldm`).
//!
//! `cargo run --release --example precompute_latents -- --vae CKPT --dataset-dir DIR --out DIR
//!  [--split train|val|all] [--resample Z,H,W] [--device auto|cpu|cuda]`
use std::path::PathBuf;
use std::process::ExitCode;

use radvox::latents::{precompute, FrozenVae};
use radvox::layout::{parse_zhw, Layout};
use radvox::train::parse_device;
use radvox::{Dataset, DatasetConfig, Split};

mod common;

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let (mut vae, mut dir, mut out, mut split, mut device) = (None, None, None, Split::All, "auto".to_string());
    let mut ds_cfg = DatasetConfig::default();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || common::value(&mut args, &flag);
        match flag.as_str() {
            "--vae" => vae = Some(PathBuf::from(value()?)),
            "--dataset-dir" => dir = Some(PathBuf::from(value()?)),
            "--out" => out = Some(PathBuf::from(value()?)),
            "--split" => split = value()?.parse()?,
            "--resample" => ds_cfg.layout = Layout::Resample { zhw: parse_zhw(&value()?)? },
            "--device" => device = value()?,
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    let (vae_path, dir, out) =
        (vae.ok_or("--vae is required")?, dir.ok_or("--dataset-dir is required")?, out.ok_or("--out is required")?);
    let vae = FrozenVae::load(&vae_path, None, parse_device(&device)?)?;
    let ds = Dataset::open(&dir, split, &ds_cfg)?;
    let t = std::time::Instant::now();
    let m = precompute(&vae, &ds, &out, &vae_path)?;
    println!(
        "{} frames -> latents {:?} (f16) in {} ({:.1} s); VAE hash {}",
        m.frames.len(),
        m.latent_shape,
        out.display(),
        t.elapsed().as_secs_f64(),
        m.vae_hash
    );
    Ok(())
}

fn main() -> ExitCode {
    common::main_with(run)
}
