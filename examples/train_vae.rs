//! Trains the 3D VAE with the seed's recipe (ultra_lightweight, batch 1,
//! gradient accumulation 8, AMP, one loader worker, no pinned memory, no
//! augmentation) on the bundled fixtures, or on NTU4DRadLM_Pre with
//! `--dataset-dir`.
//!
//! `cargo run --release --example train_vae -- [--dataset-dir DIR] [--vae-type NAME]
//!  [--batch-size N] [--grad-accum N] [--amp|--no-amp] [--checkpointing off|block|N]
//!  [--epochs N] [--lr X] [--resample Z,H,W] [--device auto|cpu|cuda] [--resume CKPT]
//!  [--out DIR] [--seed N] [--num-workers N] [--config FILE.json] [--loss-occupancy W]
//!  [--loss-edge W] [--loss-perceptual W] [--memory-budget-gb GiB] [--force] [--no-progress]`
//!
//! The memory plan is printed at start; a run whose plan exceeds the budget
//! (the GPU's memory, or the RAM available) is refused with the plan and the
//! change that would fit, unless `--force`.
use std::path::PathBuf;
use std::process::ExitCode;

use radvox::layout::{parse_zhw, Layout};
use radvox::model::VaeConfig;
use radvox::train::{summary_line, TrainConfig, VaeTrainer};
use radvox::{Dataset, DatasetConfig, Split};

mod common;

const USAGE: &str =
    "usage: train_vae [--dataset-dir DIR] [--vae-type ultra_lightweight|seed_baseline|lightweight|standard] \
[--batch-size N] [--grad-accum N] [--amp|--no-amp] [--checkpointing off|block|N] [--epochs N] [--lr X] \
[--resample Z,H,W] [--device auto|cpu|cuda] [--resume CKPT] [--out DIR] [--seed N] [--num-workers N] \
[--config FILE.json] [--loss-occupancy W] [--loss-edge W] [--loss-perceptual W] [--memory-budget-gb GiB] \
[--force] [--no-progress]";

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut cfg = TrainConfig::default();
    let mut dataset_dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/ntu_mini"));
    let (mut out, mut resume, mut resample, mut epochs_flag) = (PathBuf::from("runs/vae"), None, None, None);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || common::value(&mut args, &flag);
        match flag.as_str() {
            "--dataset-dir" => dataset_dir = value()?.into(),
            "--vae-type" => cfg.vae = VaeConfig::named(&value()?)?,
            "--batch-size" => cfg.batch_size = value()?.parse()?,
            "--grad-accum" => cfg.grad_accum = value()?.parse()?,
            "--amp" => cfg.amp = true,
            "--no-amp" => cfg.amp = false,
            "--checkpointing" => cfg.checkpointing = value()?.parse()?,
            "--epochs" => epochs_flag = Some(value()?.parse()?),
            "--lr" => cfg.lr = value()?.parse()?,
            "--resample" => resample = Some(parse_zhw(&value()?)?),
            "--device" => cfg.device = value()?,
            "--resume" => resume = Some(PathBuf::from(value()?)),
            "--out" => out = value()?.into(),
            "--seed" => cfg.seed = value()?.parse()?,
            "--num-workers" => cfg.num_workers = value()?.parse()?,
            "--config" => cfg = serde_json::from_str(&std::fs::read_to_string(value()?)?)?,
            "--loss-occupancy" => cfg.loss.occupancy_mse = value()?.parse()?,
            "--loss-edge" => cfg.loss.edge = value()?.parse()?,
            "--loss-perceptual" => cfg.loss.perceptual = value()?.parse()?,
            "--memory-budget-gb" => cfg.memory_budget_gib = Some(value()?.parse()?),
            "--force" => cfg.force = true,
            "--no-progress" => cfg.progress = false,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => return Err(format!("unknown flag {other}\n{USAGE}").into()),
        }
    }
    if let Some(e) = epochs_flag {
        cfg.epochs = e;
    }
    let mut ds_cfg = DatasetConfig::default();
    if let Some(zhw) = resample {
        ds_cfg.layout = Layout::Resample { zhw };
    }
    let train = Dataset::open(&dataset_dir, Split::Train, &ds_cfg)?;
    let val = Dataset::open(&dataset_dir, Split::Val, &ds_cfg)?;
    let mut trainer = match &resume {
        Some(ckpt) => {
            log::info!("resuming from {} (its config; --epochs, --force, --memory-budget-gb apply)", ckpt.display());
            // the checkpoint's config, with --epochs, --force and --memory-budget-gb applied
            VaeTrainer::resume_with(ckpt, train, Some(val), &out, |c| {
                c.epochs = epochs_flag.unwrap_or(c.epochs);
                c.force |= cfg.force;
                c.memory_budget_gib = cfg.memory_budget_gib.or(c.memory_budget_gib);
            })?
        }
        None => VaeTrainer::new(train, Some(val), cfg, &out)?,
    };
    let c = trainer.config();
    let shape = trainer.train_loader().sample_shape();
    log::info!(
        "device {:?} amp {:?} | {} epochs, batch {} x accum {}, checkpointing {} | {} train frames of shape {:?} | out {}",
        trainer.device(),
        trainer.amp(),
        c.epochs,
        c.batch_size,
        c.grad_accum,
        c.checkpointing,
        trainer.train_loader().dataset().len(),
        shape,
        out.display()
    );
    let reports = trainer.fit()?;
    for r in &reports {
        println!("{}", summary_line(r));
    }
    if let (Some(first), Some(last)) = (reports.first(), reports.last()) {
        println!(
            "reconstruction loss {:.4e} -> {:.4e} ({:.1}x lower); checkpoints, train_log.csv and loss.png in {}",
            first.recon,
            last.recon,
            first.recon / last.recon,
            out.display()
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    common::main_with(run)
}
