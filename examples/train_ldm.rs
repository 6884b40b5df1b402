//! Trains the radar-conditioned latent diffusion model (EDM) in a frozen
//! VAE's latent space, from a latent cache (`precompute_latents`) or
//! encoding on the fly.
//!
//! `cargo run --release --example train_ldm -- --vae CKPT --dataset-dir DIR [--latents DIR]
//!  [--epochs N] [--lr X] [--batch-size N] [--grad-accum N] [--amp|--no-amp] [--checkpointing]
//!  [--resample Z,H,W] [--device auto|cpu|cuda] [--seed N] [--resume CKPT] [--out DIR] [--no-progress]`
use std::path::PathBuf;
use std::process::ExitCode;

use radvox::latents::{FrozenVae, LatentCache};
use radvox::layout::{parse_zhw, Layout};
use radvox::ldm::{LatentSource, LdmConfig, LdmTrainer};
use radvox::train::parse_device;
use radvox::{Dataset, DatasetConfig, Split};

mod common;

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut cfg = LdmConfig::default();
    let (mut vae, mut dir, mut latents, mut resume) = (None, None, None, None);
    let mut out = PathBuf::from("runs/ldm");
    let mut ds_cfg = DatasetConfig::default();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || common::value(&mut args, &flag);
        match flag.as_str() {
            "--vae" => vae = Some(PathBuf::from(value()?)),
            "--dataset-dir" => dir = Some(PathBuf::from(value()?)),
            "--latents" => latents = Some(PathBuf::from(value()?)),
            "--epochs" => cfg.epochs = value()?.parse()?,
            "--lr" => cfg.lr = value()?.parse()?,
            "--batch-size" => cfg.batch_size = value()?.parse()?,
            "--grad-accum" => cfg.grad_accum = value()?.parse()?,
            "--amp" => cfg.amp = true,
            "--no-amp" => cfg.amp = false,
            "--checkpointing" => cfg.checkpointing = true,
            "--resample" => ds_cfg.layout = Layout::Resample { zhw: parse_zhw(&value()?)? },
            "--device" => cfg.device = value()?,
            "--seed" => cfg.seed = value()?.parse()?,
            "--resume" => resume = Some(PathBuf::from(value()?)),
            "--out" => out = value()?.into(),
            "--no-progress" => cfg.progress = false,
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    let vae_path = vae.ok_or("--vae is required")?;
    let dir = dir.ok_or("--dataset-dir is required")?;
    let vae = FrozenVae::load(&vae_path, None, parse_device(&cfg.device)?)?;
    let ds = Dataset::open(&dir, Split::Train, &ds_cfg)?;
    let hash = vae.hash.clone();
    let source = match latents {
        Some(l) => LatentSource::Cache(LatentCache::open(&l, &hash, &ds)?),
        None => LatentSource::OnTheFly(Box::new(vae)),
    };
    let mut trainer = LdmTrainer::new(ds, source, &hash, cfg, &out)?;
    if let Some(r) = resume {
        trainer.load_checkpoint(&r)?;
    }
    println!("UNet parameters: {}", trainer.parameter_count());
    let losses = trainer.fit()?;
    if let (Some(a), Some(b)) = (losses.first(), losses.last()) {
        println!(
            "EDM loss {a:.4e} -> {b:.4e} over {} epochs; last.safetensors, ldm_log.csv, loss.png in {}",
            losses.len(),
            out.display()
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    common::main_with(run)
}
