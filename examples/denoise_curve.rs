//! The denoising error of latent diffusion models per noise level, beside
//! the one call of direct baselines, on held-out frames: for each sigma the
//! mean squared error of `D(y + sigma n; sigma)` against the frame's target
//! latent `y` (in the training's normalised scale, noise seeded), averaged
//! over the frames. Three lines for scale:
//! - a direct baseline's one call, which estimates the condition's mean
//!   latent. The ideal denoiser's error at any sigma is at most that mean's,
//!   so where an LDM's curve lies above a direct baseline's line, its
//!   denoiser does worse than one call that ignores the noisy latent;
//! - each LDM's sample (`--sample-steps` Heun steps): a perfect sampler
//!   draws from the posterior, whose samples' expected squared error is
//!   twice the posterior mean's, and the sample's mean square (the data's
//!   is the zero latent's error);
//! - the zero latent (the data's per-channel mean): no information.
//!
//! Writes `curve.csv` (a row per sigma, a column per line) and `curve.png`
//! (log-log).
#![allow(clippy::result_large_err)] // errors carry the file they are about, as the library's do
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use radvox::data::{Dataset, DatasetConfig, Modality, Split};
use radvox::diffusion::{encode_frame, Solver};
use radvox::io::chart::{line_chart, Series, COLORS};
use radvox::io::write_atomic;
use radvox::model::GridVae;
use radvox::sys::mix_seed;
use radvox::train::vae::frame_layout;
use radvox::train::{load_any_vae, load_sampler_weights, parse_device, SamplerWeights};

mod common;

/// Denoising error per noise level of LDMs, beside direct baselines.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// The VAE checkpoint the models were trained on.
    #[arg(long)]
    vae: PathBuf,
    /// LDM or direct-baseline checkpoints (comma-separated).
    #[arg(long, value_delimiter = ',', required = true)]
    ldm: Vec<PathBuf>,
    /// NTU4DRadLM_Pre root.
    #[arg(long)]
    dataset_dir: PathBuf,
    /// Scenes to measure on (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "scene09")]
    scenes: Vec<String>,
    /// Measure on the first N frames of the scenes only.
    #[arg(long)]
    max_frames: Option<usize>,
    /// Noise levels (comma-separated, positive).
    #[arg(long, value_delimiter = ',', value_parser = common::positive,
          default_value = "0.01,0.03,0.1,0.3,1,3,10,30,80")]
    sigmas: Vec<f64>,
    /// Heun steps of the sample whose error is drawn beside each LDM's
    /// curve (0: none).
    #[arg(long, default_value_t = 8)]
    sample_steps: usize,
    /// Seed of the noise (frame i, level k: radvox::sys::mix_seed(seed + i, k)).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output folder (curve.csv, curve.png).
    #[arg(long, default_value = "runs/denoise_curve")]
    out: PathBuf,
    /// Measure the checkpoints' live weights instead of their EMA (what
    /// sampling uses).
    #[arg(long)]
    live_weights: bool,
    /// Device: auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    device: String,
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let cli = Cli::parse();
    let device = parse_device(&cli.device)?;
    let vae_loaded = load_any_vae(&cli.vae, device)?;
    let vae = vae_loaded.vae;
    let weights = if cli.live_weights { SamplerWeights::Live } else { SamplerWeights::Ema };
    let models = cli
        .ldm
        .iter()
        .map(|p| load_sampler_weights(p, vae.weights_hash(), device, weights).map(|l| (p, l)))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some((p, _)) = models.iter().find(|(_, l)| l.consistency) {
        return Err(format!("{} is a consistency model: it has no denoiser to measure", p.display()).into());
    }
    let layout = frame_layout(vae_loaded.layout, None, &cli.vae)?;
    let config = DatasetConfig { layout, val_scenes: Some(cli.scenes.clone()), ..Default::default() };
    let ds = Dataset::open(&cli.dataset_dir, Split::Val, &config)?;
    let frames = cli.max_frames.map_or(ds.len(), |m| m.min(ds.len()));
    // Per model its curve (or direct line), then for an LDM its sample's
    // line; last the zero latent's line: summed over frames.
    let mut curves: Vec<(String, Vec<f64>)> = Vec::new();
    for (p, l) in &models {
        let run =
            p.parent().and_then(|d| d.file_name()).map_or(p.display().to_string(), |d| d.to_string_lossy().into());
        curves.push((format!("{} {run}", if l.recipe.direct { "direct" } else { "ldm" }), vec![0.0; cli.sigmas.len()]));
        if !l.recipe.direct && cli.sample_steps > 0 {
            curves.push((format!("ldm {run} sample (heun {})", cli.sample_steps), vec![0.0; cli.sigmas.len()]));
            curves.push((format!("ldm {run} sample mean square"), vec![0.0; cli.sigmas.len()]));
        }
    }
    curves.push(("zero latent".into(), vec![0.0; cli.sigmas.len()]));
    let mse = |a: &tch::Tensor, b: &tch::Tensor| (a - b).square().mean(tch::Kind::Float).double_value(&[]);
    let bar = indicatif::ProgressBar::new(frames as u64);
    for i in 0..frames {
        let y = encode_frame(&vae, &ds, i, Modality::Target)?;
        let seed = cli.seed + i as u64;
        // One value a frame for each line (the same at every sigma).
        let mut lines = Vec::new();
        let mut next = 0; // the curve being filled
        for (_, l) in &models {
            let s = &l.sampler;
            let cond = s.condition_frame(&ds, i, &vae)?;
            let yn = s.training_scale(&y);
            if l.recipe.direct {
                lines.push((next, mse(&s.training_scale(&s.direct(&cond)), &yn)));
                next += 1;
                continue;
            }
            for (k, (r, &sigma)) in curves[next].1.iter_mut().zip(&cli.sigmas).enumerate() {
                *r += s.denoising_error(&y, &cond, sigma, mix_seed(seed, k as u64));
            }
            next += 1;
            if cli.sample_steps > 0 {
                let z = s.training_scale(&s.sample(&cond, cli.sample_steps, Solver::Heun, seed));
                lines.push((next, mse(&z, &yn)));
                lines.push((next + 1, z.square().mean(tch::Kind::Float).double_value(&[])));
                next += 2;
            }
        }
        // The first model's per-channel mean latent: 0 in its scale.
        lines.push((next, models[0].1.sampler.training_scale(&y).square().mean(tch::Kind::Float).double_value(&[])));
        for (j, e) in lines {
            curves[j].1.iter_mut().for_each(|r| *r += e);
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    let n = frames as f64;
    let names: Vec<&str> = curves.iter().map(|(name, _)| name.as_str()).collect();
    let errors: Vec<&Vec<f64>> = curves.iter().map(|(_, e)| e).collect();
    let mut csv = format!("sigma,{}\n", names.join(","));
    println!("| sigma | {} |\n|---:|{}", names.join(" | "), "---:|".repeat(names.len()));
    for (k, sigma) in cli.sigmas.iter().enumerate() {
        let row: Vec<String> = errors.iter().map(|e| format!("{:.5}", e[k] / n)).collect();
        csv.push_str(&format!("{sigma},{}\n", row.join(",")));
        println!("| {sigma} | {} |", row.join(" | "));
    }
    std::fs::create_dir_all(&cli.out).map_err(|e| format!("{}: {e}", cli.out.display()))?;
    let csv_path = cli.out.join("curve.csv");
    write_atomic(&csv_path, csv.as_bytes()).map_err(|e| format!("{}: {e}", csv_path.display()))?;
    let series: Vec<Series> = names
        .iter()
        .zip(&errors)
        .enumerate()
        .map(|(m, (name, e))| Series {
            name: name.to_uppercase(),
            points: cli.sigmas.iter().zip(e.iter()).map(|(s, v)| (s.log10(), v / n)).collect(),
            color: COLORS[m % COLORS.len()],
        })
        .collect();
    let png = cli.out.join("curve.png");
    line_chart("DENOISING ERROR (MSE, NORMALISED LATENTS)", "LOG10 SIGMA", &series, true)
        .save_png(&png)
        .map_err(|e| format!("{}: {e}", png.display()))?;
    println!("{frames} frames of {}: {} and {}", cli.scenes.join(","), csv_path.display(), png.display());
    Ok(())
}

fn main() -> ExitCode {
    common::main_with(run)
}
