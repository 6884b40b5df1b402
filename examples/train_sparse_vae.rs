//! Trains the sparse occupancy VAE on whole native-resolution frames (the
//! occupied voxels only: no grid is ever built densely) of the bundled
//! fixtures, or of NTU4DRadLM_Pre with `--dataset-dir`. Frames are padded
//! to a multiple of `--alignment` (default 32: the real grid becomes
//! 96 x 608 x 224); the latent is dense at the model's stride (8 by default).
//!
//! The recipe comes from `--config FILE` (TOML or JSON) or the defaults;
//! flags override it; `--resume` continues a run with its checkpoint's
//! recipe. Validation IoU of the reconstructions is printed per epoch.
#![allow(clippy::result_large_err)] // errors carry the file they are about, as the library's do
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use radvox::data::{Dataset, Layout, Split};
use radvox::model::sparse::SparseVaeConfig;
use radvox::train::checkpoint::Checkpoint;
use radvox::train::recipe::read_file;
use radvox::train::sparse_vae::{SparseVaeObjective, SparseVaeRecipe};
use radvox::train::{Recipe, Trainer};

mod common;
use common::{apply, OptimArgs, RuntimeArgs, SceneArgs};

/// Train the sparse occupancy VAE on NTU4DRadLM_Pre target frames at native resolution.
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
    /// Pad Z, H and W to a multiple of this (the model's stride must divide
    /// nothing: odd grids round up level by level).
    #[arg(long)]
    alignment: Option<usize>,
    /// Preset: sparse_small, sparse_base, sparse_wide.
    #[arg(long)]
    preset: Option<String>,
    #[command(flatten)]
    optim: OptimArgs,
    #[command(flatten)]
    scenes: SceneArgs,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let cli = Cli::parse();
    let runtime = cli.runtime.runtime("runs/sparse_vae")?;
    let ckpt = cli.resume.as_deref().map(|p| Checkpoint::read(p, SparseVaeRecipe::KIND)).transpose()?;
    let resume = cli.resume.as_deref();
    if let (Some(path), Some(_)) = (resume, &cli.config) {
        return Err(format!("--config with --resume: a resumed run keeps the recipe of {}", path.display()).into());
    }
    let mut recipe = match &ckpt {
        Some(c) => c.recipe::<SparseVaeRecipe>()?,
        None => cli.config.as_deref().map(read_file::<SparseVaeRecipe>).transpose()?.unwrap_or_default(),
    };
    let asked = cli.alignment.map(|alignment| Layout::Pad { alignment });
    let layout = radvox::train::vae::layout_for(recipe.layout, asked, resume.unwrap_or("the recipe".as_ref()))?;
    recipe.layout = Some(layout);
    apply(&mut recipe.vae, cli.preset.as_deref().map(SparseVaeConfig::named).transpose()?, "preset", resume)?;
    cli.optim.apply_to(&mut recipe.optim, resume)?;
    recipe.validate()?;
    let ds_cfg = cli.scenes.config(layout);
    let train = Dataset::open(&cli.dataset_dir, Split::Train, &ds_cfg)?;
    let val = Dataset::open(&cli.dataset_dir, Split::Val, &ds_cfg)?;
    let out = runtime.out.clone();
    let mut trainer = match &ckpt {
        Some(c) => {
            log::info!("resuming from {} at epoch {} step {}", c.path.display(), c.state.epoch, c.state.step);
            Trainer::resume(SparseVaeObjective::new(train, Some(val), recipe, &runtime)?, runtime, c)?
        }
        None => Trainer::sparse_vae(train, Some(val), recipe, runtime)?,
    };
    let sites = trainer.objective().sites().clone();
    log::info!(
        "device {:?} amp {:?} | {} epochs, batch {} | {} train frames, worst frame {:?} sites per level | out {}",
        trainer.device(),
        trainer.amp(),
        trainer.recipe().optim.epochs,
        trainer.recipe().optim.batch_size,
        trainer.objective().train_loader().dataset().len(),
        sites.sites,
        out.display()
    );
    let reports = trainer.fit()?;
    if !trainer.runtime().dist.is_main() {
        return Ok(());
    }
    if let (Some(first), Some(last)) = (reports.first(), reports.last()) {
        let (a, b) = (first.loss("structure").unwrap_or(f64::NAN), last.loss("structure").unwrap_or(f64::NAN));
        println!("structure loss {a:.4e} -> {b:.4e}; checkpoints, train_log.csv and loss.png in {}", out.display());
    }
    let ious: Vec<String> = reports.iter().filter_map(|r| r.metric("iou")).map(|v| format!("{v:.3}")).collect();
    if !ious.is_empty() {
        println!("validation IoU per epoch (whole native frames): {}", ious.join(" "));
    }
    Ok(())
}

fn main() -> ExitCode {
    common::main_with(run)
}
