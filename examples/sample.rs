//! Samples LiDAR-like grids from radar with a trained VAE + latent diffusion
//! model (an ODE solver, Heun by default) or its consistency distillation
//! (`--solver cd`: one network call per step, 1 step by default) and writes per frame the prediction as sparse `.npz` (the dataset's
//! format; channel 0 holds the occupancy score of every voxel scoring above
//! 0.01, so a threshold can be chosen later), an occupancy `.ply` and a
//! bird's-eye-view PNG (radar | prediction | target) at the threshold; then
//! scores every frame against the target beside the radar-only baseline
//! (`metrics.csv`, `report.md`). The threshold defaults to the one
//! `evaluate --calibrate` recorded with the model, else 0.5. With
//! `--samples K` the `.npz` holds the occupancy probability over K seeded
//! samples and its spread (see `--help`), and the report's calibration
//! block (Brier, ECE, `reliability.png`) scores that probability. The data layout
//! is the VAE's; a contradicting `--resample` is refused. A folder holding
//! another sample run's outputs is refused unless `--overwrite`.
#![allow(clippy::result_large_err)] // errors carry the file they are about, as the library's do
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use radvox::data::{Dataset, DatasetConfig, Modality, Split};
use radvox::diffusion::{encode_frame, Consistency, Solver};
use radvox::eval::export::{above, bev_panels, write_ply, write_prediction_npz};
use radvox::eval::frames::{geometry, layout_dims, occupied_frame, prediction, scores_frame, SampleMean};
use radvox::eval::{
    evaluate_frame, write_report, EvalConfig, FrameInput, ReportConfig, SelectionConfig, ThresholdMode,
};
use radvox::io::{checkpoint_identity, Outputs};
use radvox::model::GridVae;
use radvox::sys::mix_seed;
use radvox::train::vae::frame_layout;
use radvox::train::{load_any_vae, load_sampler_weights, parse_device, SamplerWeights};

mod common;

/// Scores below this are not written (a threshold below it cannot be chosen later).
const SCORE_FLOOR: f64 = 0.01;

/// Densify radar frames with a trained VAE + latent diffusion or consistency model.
#[derive(Debug, Parser)]
#[command(version, allow_negative_numbers = true)]
struct Cli {
    /// The VAE checkpoint.
    #[arg(long)]
    vae: PathBuf,
    /// The latent diffusion or consistency checkpoint (trained on this VAE's latents).
    #[arg(long, required_unless_present = "reconstruct")]
    ldm: Option<PathBuf>,
    /// Instead of sampling from radar, decode the VAE's encoding of the
    /// target itself: the reconstruction ceiling of any latent model.
    #[arg(long, conflicts_with = "ldm")]
    reconstruct: bool,
    /// NTU4DRadLM_Pre root.
    #[arg(long)]
    dataset_dir: PathBuf,
    /// Split to densify: train, val or all.
    #[arg(long, default_value = "val")]
    split: Split,
    /// Output directory.
    #[arg(long, default_value = "runs/samples")]
    out: PathBuf,
    /// Steps (at least 1); default 18 for heun and euler, 1 for cd.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    steps: Option<u64>,
    /// heun or euler (ODE solvers of a latent diffusion model), or cd (a
    /// consistency model from train_cd).
    #[arg(long, value_enum, default_value_t = Method::Heun)]
    solver: Method,
    /// The noise levels of multistep consistency sampling, descending
    /// (comma-separated; default: the first K of K + 1 Karras levels).
    #[arg(long, value_delimiter = ',', conflicts_with = "steps")]
    cd_sigmas: Option<Vec<f64>>,
    /// Seed of the initial noise (frame i uses seed + i; its sample k >= 1,
    /// with --samples, radvox::sys::mix_seed(seed + i, k)).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Draw K seeded samples per frame and write the per-voxel occupancy
    /// probability (the mean of the samples' scores clamped to [0, 1]) in
    /// channel 0, the mean features, and the spread (the scores' standard
    /// deviation) as an extra last channel; metrics threshold the
    /// probability. 1: the one sample's scores, as without the flag.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    samples: u64,
    /// Scale of the ODE sampler's initial noise (heun, euler): 1 samples
    /// the model's distribution; below 1 ends nearer the condition's most
    /// likely latents with less spread between seeds; 0 is deterministic
    /// (its first step is the denoiser's estimate from the zero latent).
    #[arg(long, default_value_t = 1.0)]
    temperature: f64,
    /// Start the ODE sampler (heun, euler) at this noise level instead of
    /// the model's sigma_max (default 80): the steps span the lower range.
    #[arg(long)]
    sigma_max: Option<f64>,
    /// Run the checkpoint's live weights instead of their EMA (to compare
    /// the two; sampling normally uses the EMA).
    #[arg(long, requires = "ldm")]
    live_weights: bool,
    /// Occupancy threshold in (0, 1); default: the model's calibrated one, else 0.5.
    #[arg(long, value_parser = common::unit_interval)]
    threshold: Option<f64>,
    /// A sparse VAE's decoder keeps the children whose probability is at
    /// least this at every level (default: the checkpoint's, 0.5); lower
    /// keeps more of an uncertain latent's structure for the threshold to cut.
    #[arg(long, value_parser = common::unit_interval)]
    keep_threshold: Option<f64>,
    /// These scenes instead of --split (comma-separated names).
    #[arg(long, value_delimiter = ',')]
    scenes: Option<Vec<String>>,
    /// Must match the VAE's layout when given.
    #[arg(long, value_parser = common::zhw)]
    resample: Option<[usize; 3]>,
    #[command(flatten)]
    tiles: common::TileArgs,
    /// Device: auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    device: String,
    /// Replace the outputs of another sample run in --out (removing its files).
    #[arg(long)]
    overwrite: bool,
    #[command(flatten)]
    regions: common::RegionArgs,
}

/// The files a sample run writes.
fn owned(name: &str) -> bool {
    [".npz", ".ply", ".png"].iter().any(|e| name.ends_with(e)) || name == "metrics.csv" || name == "report.md"
}

/// How latents are sampled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Method {
    /// Heun's ODE solver (EDM Algorithm 2).
    Heun,
    /// Euler's ODE solver.
    Euler,
    /// Multistep consistency sampling.
    Cd,
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let cli = Cli::parse();
    let device = parse_device(&cli.device)?;
    let mut vae_loaded = load_any_vae(&cli.vae, device)?;
    if let Some(t) = cli.keep_threshold {
        vae_loaded
            .vae
            .set_keep_threshold(t)
            .map_err(|e| format!("--keep-threshold with {}: {e}", cli.vae.display()))?;
    }
    let weights = if cli.live_weights { SamplerWeights::Live } else { SamplerWeights::Ema };
    let mut loaded = (cli.ldm.as_deref())
        .map(|p| load_sampler_weights(p, vae_loaded.vae.weights_hash(), device, weights))
        .transpose()?;
    if cli.temperature != 1.0 || cli.sigma_max.is_some() {
        let sampler = loaded.as_mut().filter(|l| !l.recipe.direct && !l.consistency && cli.solver != Method::Cd);
        let Some(l) = sampler else {
            return Err("--temperature and --sigma-max set an LDM's ODE sampler (heun, euler): not for a direct baseline, a consistency model or --reconstruct".into());
        };
        l.sampler.set_temperature(cli.temperature)?;
        if let Some(s) = cli.sigma_max {
            l.sampler.set_sigma_max(s)?;
        }
        if cli.temperature == 0.0 && cli.samples > 1 {
            return Err("--temperature 0 is deterministic: --samples > 1 would draw the same sample".into());
        }
    }
    if let (Some(l), Some(path)) = (&loaded, &cli.ldm) {
        if l.recipe.direct && !l.consistency {
            if cli.solver == Method::Cd || cli.samples > 1 {
                return Err(format!(
                    "{} is a direct baseline (train_ldm --direct): one deterministic call, no --solver cd or --samples",
                    path.display()
                )
                .into());
            }
            eprintln!("{} is a direct baseline: one network call a frame", path.display());
        }
        match (l.consistency, cli.solver) {
            (true, Method::Heun | Method::Euler) => {
                return Err(format!("{} is a consistency model: sample it with --solver cd", path.display()).into())
            }
            (false, Method::Cd) => {
                return Err(
                    format!("{} is a latent diffusion model: --solver cd needs train_cd's", path.display()).into()
                )
            }
            _ => {}
        }
    }
    let steps = cli.steps.unwrap_or(if cli.solver == Method::Cd { 1 } else { 18 }) as usize;
    let cd_levels = match (&cli.cd_sigmas, &loaded) {
        (Some(levels), _) => {
            if levels.is_empty()
                || levels.iter().any(|s| !(s.is_finite() && *s > 0.0))
                || levels.windows(2).any(|w| w[0] <= w[1])
            {
                return Err(format!("--cd-sigmas must be positive and descending, got {levels:?}").into());
            }
            levels.clone()
        }
        (None, Some(l)) => Consistency { edm: l.recipe.edm }.sampling_levels(steps),
        (None, None) => Vec::new(),
    };
    if cli.reconstruct && cli.samples > 1 {
        return Err("--samples > 1 needs --ldm: a reconstruction is deterministic".into());
    }
    let threshold = cli.threshold.or(loaded.as_ref().and_then(|l| l.threshold)).unwrap_or(0.5);
    let layout = frame_layout(vae_loaded.layout, cli.resample, &cli.vae)?;
    let split = if cli.scenes.is_some() { Split::Val } else { cli.split };
    let ds = Dataset::open(
        &cli.dataset_dir,
        split,
        &DatasetConfig { layout, val_scenes: cli.scenes.clone(), ..Default::default() },
    )?;
    let s = ds.output_shape(0);
    let grid = [s[1] as i64, s[2] as i64, s[3] as i64];
    vae_loaded.vae.check_grid(grid)?;
    let vae = cli.tiles.apply_any(vae_loaded.vae, grid)?;
    let file = ds.frames()[0].target.shape();
    let (dims, geom) = (layout_dims(file, layout), geometry(file, layout)?);
    let mut identity = BTreeMap::from([
        ("vae".to_string(), checkpoint_identity(&cli.vae)?),
        (
            "model".to_string(),
            cli.ldm.as_deref().map(checkpoint_identity).transpose()?.unwrap_or("--reconstruct".into()),
        ),
        ("data".to_string(), ds.identity()),
        ("method".to_string(), format!("{:?}, {steps} steps, sigmas {cd_levels:?}", cli.solver)),
        ("seed".to_string(), cli.seed.to_string()),
        ("threshold".to_string(), threshold.to_string()),
        ("tiles".to_string(), format!("{:?}", cli.tiles)),
    ]);
    if cli.samples > 1 {
        identity.insert("samples".into(), cli.samples.to_string());
    }
    if cli.temperature != 1.0 {
        identity.insert("temperature".into(), cli.temperature.to_string());
    }
    if let Some(s) = cli.sigma_max {
        identity.insert("sigma_max".into(), s.to_string());
    }
    if cli.live_weights {
        identity.insert("weights".into(), "live".into());
    }
    if let Some(t) = cli.keep_threshold {
        identity.insert("keep_threshold".into(), t.to_string());
    }
    let config = EvalConfig {
        selection: SelectionConfig { mode: ThresholdMode::Fixed(threshold as f32), ..Default::default() },
        regions: cli.regions.config(),
        ..Default::default()
    };
    config.validate()?; // before the folder is claimed
    let outputs = Outputs::claim(&cli.out, "sample", identity, cli.overwrite, &owned)?;
    let mut records = Vec::new();
    for (i, f) in ds.frames().iter().enumerate() {
        let decoded = match &loaded {
            Some(l) => {
                let cond = l.sampler.condition_frame(&ds, i, &vae)?;
                let direct = l.recipe.direct && !l.consistency;
                let draw = |seed: u64| -> Result<tch::Tensor, Box<dyn std::error::Error>> {
                    let z = match cli.solver {
                        _ if direct => l.sampler.direct(&cond),
                        Method::Cd => l.sampler.sample_consistency(&cond, &cd_levels, seed),
                        Method::Heun => l.sampler.sample(&cond, steps, Solver::Heun, seed),
                        Method::Euler => l.sampler.sample(&cond, steps, Solver::Euler, seed),
                    };
                    Ok(vae.decode_grid(&z, grid)?.squeeze_dim(0))
                };
                let seed = cli.seed + i as u64;
                if cli.samples == 1 {
                    draw(seed)?
                } else {
                    let mut mean = SampleMean::default();
                    for k in 0..cli.samples {
                        mean.push(&draw(if k == 0 { seed } else { mix_seed(seed, k) })?);
                    }
                    mean.finish().ok_or("no sample drawn")?
                }
            }
            None => vae.decode_grid(&encode_frame(&vae, &ds, i, Modality::Target)?, grid)?.squeeze_dim(0),
        };
        let scores = scores_frame(&decoded, dims, SCORE_FLOOR);
        let stem = format!("{}_{}", f.id.scene, f.id.stem);
        write_prediction_npz(&cli.out.join(format!("{stem}.npz")), &scores)?;
        let kept = above(&scores, threshold);
        write_ply(&cli.out.join(format!("{stem}.ply")), &kept, &geom)?;
        let (r, t) = (occupied_frame(&ds, i, Modality::Radar, dims)?, occupied_frame(&ds, i, Modality::Target, dims)?);
        let as_frame = |set: &radvox::eval::VoxelSet| radvox::data::SparseFrame {
            shape: [dims[0], dims[1], dims[2], 1],
            coords: set.coords().to_vec(),
            features: vec![1.0; set.len()],
        };
        let panels = [("RADAR", &as_frame(&r)), ("PREDICTION", &kept), ("TARGET", &as_frame(&t))];
        bev_panels(&panels).save_png(&cli.out.join(format!("{stem}.png")))?;
        let input = FrameInput {
            frame: &f.id.stem,
            scene: &f.id.scene,
            prediction: &prediction(&scores)?,
            radar: &r,
            target: &t,
        };
        let rec = evaluate_frame(&geom, &input, &config)?;
        let f1 = |m: &radvox::eval::MethodMetrics| m.voxel.scores.f1.map_or("-".into(), |v| format!("{v:.4}"));
        println!(
            "{:<18} pred {:>6} target {:>6} | F1 {} (radar {}) | Chamfer {} m",
            f.id.to_string(),
            rec.prediction.count,
            rec.target_count,
            f1(&rec.prediction),
            f1(&rec.radar),
            rec.prediction.points.chamfer.map_or("-".into(), |v| format!("{v:.3}"))
        );
        records.push(rec);
    }
    let paths = write_report(&cli.out, &records, &ReportConfig::default())?;
    outputs.finish(&owned)?;
    let mut how = match cli.solver {
        Method::Cd => format!("cd at sigmas {cd_levels:?}"),
        m => format!("{steps} {m:?} steps"),
    };
    if cli.temperature != 1.0 {
        how.push_str(&format!(" at temperature {}", cli.temperature));
    }
    if let Some(s) = cli.sigma_max {
        how.push_str(&format!(" from sigma {s}"));
    }
    if cli.live_weights {
        how.push_str(" (live weights)");
    }
    if cli.samples > 1 {
        how.push_str(&format!(", {} samples a frame (probability and spread)", cli.samples));
    }
    println!(
        "{} frames, {how}, seed {}, threshold {threshold}: {} and {} in {}",
        records.len(),
        cli.seed,
        paths.csv.display(),
        paths.markdown.display(),
        cli.out.display()
    );
    Ok(())
}

fn main() -> ExitCode {
    common::main_with(run)
}
