//! Trains the 3D VAE with the seed's recipe (ultra_lightweight, batch 1,
//! gradient accumulation 8, one loader worker, no pinned memory, no
//! augmentation; AMP where the device runs it natively) on the bundled
//! fixtures, or on NTU4DRadLM_Pre with `--dataset-dir`.
//!
//! The recipe comes from `--config FILE` (TOML or JSON, unknown keys refused)
//! or the defaults; a recipe flag given anywhere overrides the file. With
//! `--resume` the recipe is the checkpoint's: a recipe flag that contradicts
//! it is refused, `--epochs` may extend the run. The memory plan is printed
//! at start; a run whose plan exceeds the budget is refused with the change
//! that would fit, unless `--force`. SIGINT/SIGTERM save `last` after the
//! current optimizer step; a second signal exits at once.
#![allow(clippy::result_large_err)] // errors carry the file they are about, as the library's do
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use radvox::data::{Dataset, Layout, Split};
use radvox::model::VaeConfig;
use radvox::train::checkpoint::Checkpoint;
use radvox::train::recipe::read_file;
use radvox::train::vae::layout_for;
use radvox::train::{Recipe, Trainer, VaeObjective, VaeRecipe};

mod common;
use common::{apply, OptimArgs, RuntimeArgs, SceneArgs};

/// Train the 3D VAE on NTU4DRadLM_Pre target grids.
#[derive(Debug, Parser)]
#[command(version, allow_negative_numbers = true)]
struct Cli {
    /// NTU4DRadLM_Pre root (default: the bundled fixtures).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/ntu_mini"))]
    dataset_dir: PathBuf,
    /// Recipe file (TOML, or JSON by extension); flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Continue the run of this checkpoint (its recipe; `--epochs` may extend it).
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Resample every frame to Z,H,W (default: pad each dim to a multiple of 32).
    #[arg(long, value_parser = common::zhw, conflicts_with = "crop")]
    resample: Option<[usize; 3]>,
    /// Train on random Z,H,W crops at native resolution (validation: fixed
    /// crops); the model is then applied to whole frames (see --tile of
    /// precompute_latents and sample).
    #[arg(long, value_parser = common::zhw)]
    crop: Option<[usize; 3]>,
    /// Percentage of crops centred on an occupied voxel (the rest uniform).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u8).range(0..=100), requires = "crop")]
    crop_focus: u8,
    /// VAE preset: ultra_lightweight, seed_baseline, lightweight, standard.
    #[arg(long)]
    vae_type: Option<String>,
    #[command(flatten)]
    optim: OptimArgs,
    #[command(flatten)]
    scenes: SceneArgs,
    /// Weight of the occupancy-aware MSE.
    #[arg(long)]
    loss_occupancy: Option<f64>,
    /// Weight of the 3D Sobel edge loss.
    #[arg(long)]
    loss_edge: Option<f64>,
    /// Weight of the perceptual loss.
    #[arg(long)]
    loss_perceptual: Option<f64>,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let cli = Cli::parse();
    let runtime = cli.runtime.runtime("runs/vae")?;
    let asked = cli
        .resample
        .map(|zhw| Layout::Resample { zhw })
        .or(cli.crop.map(|zhw| Layout::Crop { zhw, focus: cli.crop_focus }));
    let ckpt = cli.resume.as_deref().map(|p| Checkpoint::read(p, VaeRecipe::KIND)).transpose()?;
    let resume = cli.resume.as_deref();
    let mut recipe = match &ckpt {
        Some(c) => c.recipe::<VaeRecipe>()?,
        None => cli.config.as_deref().map(read_file::<VaeRecipe>).transpose()?.unwrap_or_default(),
    };
    if let (Some(path), Some(_)) = (resume, &cli.config) {
        return Err(format!("--config with --resume: a resumed run keeps the recipe of {}", path.display()).into());
    }
    let layout = layout_for(recipe.layout, asked, resume.unwrap_or(std::path::Path::new("the recipe")))?;
    recipe.layout = Some(layout);
    apply(&mut recipe.vae, cli.vae_type.as_deref().map(VaeConfig::named).transpose()?, "vae-type", resume)?;
    cli.optim.apply_to(&mut recipe.optim, resume)?;
    apply(&mut recipe.loss.occupancy_mse, cli.loss_occupancy, "loss-occupancy", resume)?;
    apply(&mut recipe.loss.edge, cli.loss_edge, "loss-edge", resume)?;
    apply(&mut recipe.loss.perceptual, cli.loss_perceptual, "loss-perceptual", resume)?;
    recipe.validate()?;
    let ds_cfg = cli.scenes.config(layout);
    let train = Dataset::open(&cli.dataset_dir, Split::Train, &ds_cfg)?;
    let val = Dataset::open(&cli.dataset_dir, Split::Val, &ds_cfg)?;
    let out = runtime.out.clone();
    let mut trainer = match &ckpt {
        Some(c) => {
            log::info!("resuming from {} at epoch {} step {}", c.path.display(), c.state.epoch, c.state.step);
            Trainer::resume(VaeObjective::new(train, Some(val), recipe, &runtime)?, runtime, c)?
        }
        None => Trainer::vae(train, Some(val), recipe, runtime)?,
    };
    let r = trainer.recipe();
    let shape = trainer.objective().train_loader().sample_shape();
    log::info!(
        "device {:?} amp {:?} | {} epochs, batch {} x accum {}, checkpointing {} | {} train frames of shape {:?} ({}) | out {}",
        trainer.device(),
        trainer.amp(),
        r.optim.epochs,
        r.optim.batch_size,
        r.optim.grad_accum,
        trainer.checkpointing(),
        trainer.objective().train_loader().dataset().len(),
        shape,
        layout,
        out.display()
    );
    let reports = trainer.fit()?; // each epoch's summary is logged as it ends
    let main = trainer.runtime().dist.is_main(); // rank 0 alone reports
    if let (Some(first), Some(last), true) = (reports.first(), reports.last(), main) {
        let (a, b) = (first.loss("recon").unwrap_or(f64::NAN), last.loss("recon").unwrap_or(f64::NAN));
        println!(
            "reconstruction loss {a:.4e} -> {b:.4e} ({:.1}x lower); checkpoints, train_log.csv and loss.png in {}",
            a / b,
            out.display()
        );
    }
    let ious: Vec<String> = reports.iter().filter_map(|r| r.metric("iou")).map(|v| format!("{v:.3}")).collect();
    // (every rank takes part: the share is summed over their shards)
    if let (false, Some(share), true) = (ious.is_empty(), trainer.objective().val_occupied_share()?, main) {
        println!(
            "validation IoU per epoch: {}; baselines: predicting no voxel 0.000, every voxel {share:.3}",
            ious.join(" ")
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    common::main_with(run)
}
