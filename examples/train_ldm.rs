//! Trains the radar-conditioned latent diffusion model (EDM) in a frozen
//! VAE's latent space, from a latent cache (`precompute_latents`) or
//! encoding on the fly. The data layout is the VAE's (a contradicting
//! `--resample` is refused); `--resume` continues a run exactly (its recipe;
//! `--epochs` may extend it). `--direct` trains the direct baseline
//! instead: the same UNet from the condition to the latent in one call.
//! `--decoded-loss` adds the decoded-space loss through the frozen decoder;
//! `--cond-every-level` injects the condition at every UNet level.
//! After each epoch `val_frames` validation frames (`--val-scenes`, default
//! the val split) are sampled in `val_steps` Heun steps and decoded; `best`
//! is the epoch of the best F1 of their occupied voxels.
#![allow(clippy::result_large_err)] // errors carry the file they are about, as the library's do
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use radvox::train::checkpoint::Checkpoint;
use radvox::train::recipe::read_file;
use radvox::train::vae::frame_layout;
use radvox::train::{load_any_vae, parse_device, LdmObjective, LdmRecipe, Recipe, Trainer};

mod common;
use common::{apply, LatentInputs, OptimArgs, RuntimeArgs, SceneArgs};

/// Train the latent diffusion model on a frozen VAE's latents.
#[derive(Debug, Parser)]
#[command(version, allow_negative_numbers = true)]
struct Cli {
    /// The VAE checkpoint whose latent space the model learns.
    #[arg(long)]
    vae: PathBuf,
    /// NTU4DRadLM_Pre root.
    #[arg(long)]
    dataset_dir: PathBuf,
    /// A latent cache written by precompute_latents (default: encode on the fly).
    #[arg(long)]
    latents: Option<PathBuf>,
    /// Recipe file (TOML, or JSON by extension); flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Continue the run of this checkpoint.
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Must match the VAE's layout when given.
    #[arg(long, value_parser = common::zhw)]
    resample: Option<[usize; 3]>,
    #[command(flatten)]
    optim: OptimArgs,
    /// Normalise latents to the EDM's sigma_data (statistics of the training latents).
    #[arg(long)]
    normalize_latents: bool,
    /// Condition on a radar encoder trained jointly instead of the VAE's encoding of the radar.
    #[arg(long)]
    radar_encoder: bool,
    /// Inject the condition at every level of the UNet's down path (multi-scale conditioning).
    #[arg(long)]
    cond_every_level: bool,
    /// The direct baseline: the same UNet maps the condition to the latent in one call (no diffusion).
    #[arg(long)]
    direct: bool,
    /// Add the decoded-space loss (recipe `[decoded]`, default weights): the
    /// denoised estimate decoded by the frozen VAE, scored against the
    /// target frame (BCE, Dice, count, height); dense VAEs only.
    #[arg(long)]
    decoded_loss: bool,
    /// The splits (--val-scenes: the frames that validate each epoch by decoded geometry).
    #[command(flatten)]
    scenes: SceneArgs,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let cli = Cli::parse();
    let runtime = cli.runtime.runtime("runs/ldm")?;
    let device = parse_device(&runtime.device)?;
    let loaded = load_any_vae(&cli.vae, device)?;
    let layout = frame_layout(loaded.layout, cli.resample, &cli.vae)?;
    let ckpt = cli.resume.as_deref().map(|p| Checkpoint::read(p, LdmRecipe::KIND)).transpose()?;
    let resume = cli.resume.as_deref();
    if let (Some(path), Some(_)) = (resume, &cli.config) {
        return Err(format!("--config with --resume: a resumed run keeps the recipe of {}", path.display()).into());
    }
    let mut recipe = match &ckpt {
        Some(c) => c.recipe::<LdmRecipe>()?,
        None => cli.config.as_deref().map(read_file::<LdmRecipe>).transpose()?.unwrap_or_default(),
    };
    cli.optim.apply_to(&mut recipe.optim, resume)?;
    apply(&mut recipe.normalize_latents, cli.normalize_latents.then_some(true), "normalize-latents", resume)?;
    let encoder = cli.radar_encoder.then(radvox::model::RadarEncoderConfig::default);
    apply(&mut recipe.radar_encoder, encoder.map(Some), "radar-encoder", resume)?;
    apply(&mut recipe.direct, cli.direct.then_some(true), "direct", resume)?;
    apply(&mut recipe.unet.cond_every_level, cli.cond_every_level.then_some(true), "cond-every-level", resume)?;
    let decoded = cli.decoded_loss.then(radvox::diffusion::DecodedLossConfig::default);
    apply(&mut recipe.decoded, decoded.map(Some), "decoded-loss", resume)?;
    if recipe.radar_encoder.is_some() && recipe.radar_scale.is_empty() {
        recipe.radar_scale = loaded.channel_scale.clone();
    }
    if recipe.radar_encoder.is_some() && loaded.vae.family() == "sparse" {
        return Err("--radar-encoder is a dense network at the frame's grid: with a sparse VAE the condition is the VAE's encoding of the radar".into());
    }
    // the UNet denoises the VAE's latents: its channels are the VAE's
    let c = loaded.vae.latent_channels();
    if (recipe.unet.latent_channels, recipe.unet.cond_channels) != (c, c) {
        if resume.is_some() {
            return Err(format!(
                "{}: a UNet of {} latent channels cannot denoise this VAE's {c}",
                cli.vae.display(),
                recipe.unet.latent_channels
            )
            .into());
        }
        log::info!("UNet latent and condition channels set to the VAE's {c}");
        (recipe.unet.latent_channels, recipe.unet.cond_channels) = (c, c);
    }
    recipe.validate()?;
    let LatentInputs { train: ds, source, hash, val, decoder } =
        cli.scenes.latent_inputs(&cli.dataset_dir, layout, loaded.vae, &cli.vae, cli.latents.as_deref(), device)?;
    let out = runtime.out.clone();
    let main = runtime.dist.is_main(); // rank 0 alone reports
    let (rank, world) = (runtime.dist.rank(), runtime.dist.world_size());
    let decoded = recipe.decoded.is_some();
    let mut objective =
        LdmObjective::new(ds, source, &hash, recipe, &runtime)?.with_validation(val, decoder, rank, world)?;
    if decoded {
        objective = objective.with_decoder(Box::new(load_any_vae(&cli.vae, device)?.vae))?;
    }
    if main {
        println!("UNet parameters: {}", objective.parameter_count());
    }
    let mut trainer = match &ckpt {
        Some(c) => {
            let theirs = c.metadata.get("vae_hash").map(String::as_str).unwrap_or("");
            if theirs != hash {
                return Err(format!("{}: trained on latents of VAE {theirs}, not of {hash}", c.path.display()).into());
            }
            Trainer::resume(objective, runtime, c)?
        }
        None => Trainer::new(objective, runtime)?,
    };
    let reports = trainer.fit()?;
    if let (Some(a), Some(b), true) = (reports.first(), reports.last(), main) {
        println!(
            "loss {:.4e} -> {:.4e} over {} epochs; last.safetensors, best.safetensors (by val F1), train_log.csv, val_log.csv, loss.png in {}",
            a.loss("loss").unwrap_or(f64::NAN),
            b.loss("loss").unwrap_or(f64::NAN),
            reports.len(),
            out.display()
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    common::main_with(run)
}
