//! Distils a trained latent diffusion model (the teacher, its EMA weights)
//! into a consistency model that densifies a frame in one to a few network
//! calls (`sample --solver cd --steps K`). Student and target start from
//! the teacher; the teacher must have been trained on this VAE's latents.
//! `--resume` continues a run exactly (its recipe; `--epochs` may extend it).
#![allow(clippy::result_large_err)] // errors carry the file they are about, as the library's do
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use radvox::diffusion::{CdLoss, TeacherSolver};
use radvox::model::GridVae;
use radvox::train::recipe::read_file;
use radvox::train::vae::frame_layout;
use radvox::train::{load_any_vae, parse_device, CdObjective, CdRecipe, Teacher, TrainError, Trainer};

mod common;
use common::{apply, LatentInputs, OptimArgs, RuntimeArgs, SceneArgs};

/// Distil a latent diffusion model into a one/few-step consistency model.
#[derive(Debug, Parser)]
#[command(version, allow_negative_numbers = true)]
struct Cli {
    /// The VAE checkpoint whose latent space the models share.
    #[arg(long)]
    vae: PathBuf,
    /// The teacher: a latent diffusion checkpoint (train_ldm) of this VAE.
    #[arg(long)]
    ldm: PathBuf,
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
    /// The splits (--val-scenes: the frames that validate each epoch by decoded geometry).
    #[command(flatten)]
    scenes: SceneArgs,
    /// Points N of the noise-level discretisation.
    #[arg(long, value_parser = clap::value_parser!(u64).range(2..))]
    n: Option<u64>,
    /// The teacher's ODE step: heun or euler.
    #[arg(long)]
    teacher_solver: Option<String>,
    /// Rate of the target network (EMA of the student; 0: the student).
    #[arg(long)]
    target_ema: Option<f64>,
    /// The loss: pseudo_huber or l2.
    #[arg(long)]
    loss: Option<String>,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

fn parse<T: serde::de::DeserializeOwned>(flag: &str, value: &Option<String>) -> Result<Option<T>, String> {
    value
        .as_ref()
        .map(|v| serde_json::from_value(serde_json::Value::String(v.clone())).map_err(|e| format!("--{flag} {v}: {e}")))
        .transpose()
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let cli = Cli::parse();
    let runtime = cli.runtime.runtime("runs/cd")?;
    let device = parse_device(&runtime.device)?;
    let loaded = load_any_vae(&cli.vae, device)?;
    let layout = frame_layout(loaded.layout, cli.resample, &cli.vae)?;
    let vae = loaded.vae;
    let teacher = Teacher::load(&cli.ldm, vae.weights_hash(), device)?;
    let resume = cli.resume.as_deref();
    if let (Some(path), Some(_)) = (resume, &cli.config) {
        return Err(format!("--config with --resume: a resumed run keeps the recipe of {}", path.display()).into());
    }
    let solver: Option<TeacherSolver> = parse("teacher-solver", &cli.teacher_solver)?;
    let loss: Option<CdLoss> = parse("loss", &cli.loss)?;
    let edit = |recipe: &mut CdRecipe| -> Result<(), TrainError> {
        cli.optim.apply_to(&mut recipe.optim, resume)?;
        let c = &mut recipe.consistency;
        apply(&mut c.n, cli.n.map(|v| v as usize), "n", resume)?;
        apply(&mut c.solver, solver, "teacher-solver", resume)?;
        apply(&mut c.target_ema, cli.target_ema, "target-ema", resume)?;
        apply(&mut c.loss, loss, "loss", resume)?;
        Ok(())
    };
    let LatentInputs { train: ds, source, hash, val, decoder } =
        cli.scenes.latent_inputs(&cli.dataset_dir, layout, vae, &cli.vae, cli.latents.as_deref(), device)?;
    let out = runtime.out.clone();
    let (rank, world) = (runtime.dist.rank(), runtime.dist.world_size());
    let mut trainer = match resume {
        Some(path) => {
            let mut failed = Ok(());
            let (objective, ckpt) =
                CdObjective::resumed(path, ds, source, &hash, teacher, &runtime, |r| failed = edit(r))?;
            failed?;
            Trainer::resume(objective.with_validation(val, decoder, rank, world)?, runtime, &ckpt)?
        }
        None => {
            let mut recipe = cli.config.as_deref().map(read_file::<CdRecipe>).transpose()?.unwrap_or_default();
            edit(&mut recipe)?;
            let objective = CdObjective::new(ds, source, &hash, teacher, recipe, &runtime)?;
            Trainer::new(objective.with_validation(val, decoder, rank, world)?, runtime)?
        }
    };
    let main = trainer.runtime().dist.is_main(); // rank 0 alone reports
    if main {
        println!("student parameters: {}", trainer.objective().parameter_count());
    }
    let reports = trainer.fit()?;
    if let (Some(a), Some(b), true) = (reports.first(), reports.last(), main) {
        println!(
            "consistency loss {:.4e} -> {:.4e} over {} epochs; last.safetensors, train_log.csv, loss.png in {}",
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
