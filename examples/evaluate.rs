//! Evaluates saved predictions (the `sample` output: per frame a sparse
//! `.npz` whose channel 0 holds occupancy scores) against the dataset's
//! targets and, side by side, the radar-only baseline, on the grid of the
//! VAE checkpoint's layout: voxel metrics, point metrics in metres (Chamfer,
//! Hausdorff, precision/recall/F at distance tolerances), centroid offsets,
//! count and z-spread ratios. Writes `metrics.csv` (a row per frame, a
//! summary row per scene and overall), `report.md` (flagged frames) and
//! projection pictures of the worst and best frames.
//!
//! `--calibrate` sweeps thresholds over these frames (use the validation
//! split), picks the F1-best (or IoU-best) and, with `--store-in CKPT`,
//! records it with the model so `sample` uses it by default.
//! `--adaptive RATIO` thresholds each frame to about RATIO x its radar
//! voxels; `--top-k K` keeps the K best voxels of a frame that would be empty.
#![allow(clippy::result_large_err)] // errors carry the file they are about, as the library's do
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use radvox::data::frame::read_sparse;
use radvox::data::{Dataset, DatasetConfig, Modality, Split};
use radvox::eval::frames::{geometry, layout_dims, occupied_frame, prediction};
use radvox::eval::projection::{save_projection, Layer, ProjectionConfig};
use radvox::eval::threshold::{Averaging, Objective};
use radvox::eval::{
    evaluate_frames, summarize, sweep, write_report, EvalConfig, ExpectedCount, FrameInput, PointConfig, Prediction,
    ReportConfig, SelectionConfig, SweepConfig, SweepFrame, ThresholdMode, Thresholds, VoxelSet,
};
use radvox::io::outputs::OutputRecord;
use radvox::io::{checkpoint_identity, Outputs};
use radvox::train::checkpoint::{set_metadata, THRESHOLD_KEY};
use radvox::train::load_any_vae;
use radvox::train::vae::frame_layout;

mod common;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Score {
    F1,
    Iou,
}

/// Evaluate saved predictions against targets and the radar baseline.
#[derive(Debug, Parser)]
#[command(version, allow_negative_numbers = true)]
struct Cli {
    /// The VAE checkpoint (its layout defines the grid).
    #[arg(long)]
    vae: PathBuf,
    /// NTU4DRadLM_Pre root.
    #[arg(long)]
    dataset_dir: PathBuf,
    /// Folder of predictions `<scene>_<stem>.npz` (the sample output).
    #[arg(long)]
    predictions: PathBuf,
    /// Split the predictions are of.
    #[arg(long, default_value = "val")]
    split: Split,
    /// Output folder (default: the predictions folder).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Fixed occupancy threshold in (0, 1).
    #[arg(long, default_value_t = 0.5, value_parser = common::unit_interval)]
    threshold: f64,
    /// Sweep thresholds on these frames and use the best.
    #[arg(long)]
    calibrate: bool,
    /// The score the calibration maximises.
    #[arg(long, value_enum, default_value = "f1")]
    objective: Score,
    /// Record the calibrated threshold with this model checkpoint (sample then uses it).
    #[arg(long, requires = "calibrate")]
    store_in: Option<PathBuf>,
    /// Per-frame threshold keeping about RATIO x the frame's radar voxel count.
    #[arg(long, value_parser = common::positive, conflicts_with = "calibrate")]
    adaptive: Option<f64>,
    /// Keep the K best voxels of a frame that would otherwise be empty.
    #[arg(long)]
    top_k: Option<usize>,
    /// Distance tolerances (metres) of the point metrics; frames are flagged
    /// against the radar at the first.
    #[arg(long, value_delimiter = ',', default_value = "0.5,1.0")]
    taus: Vec<f64>,
    /// Projection pictures of this many worst and best frames (by F1 against the radar's).
    #[arg(long, default_value_t = 2)]
    pictures: usize,
    /// These scenes instead of --split (comma-separated names).
    #[arg(long, value_delimiter = ',')]
    scenes: Option<Vec<String>>,
    /// Must match the VAE's layout when given.
    #[arg(long, value_parser = common::zhw)]
    resample: Option<[usize; 3]>,
    /// Replace the outputs of another evaluate run in the output folder.
    #[arg(long)]
    overwrite: bool,
    #[command(flatten)]
    regions: common::RegionArgs,
}

/// The files an evaluate run writes.
fn owned(name: &str) -> bool {
    ["metrics.csv", "report.md", "threshold_sweep.png", "bands.png", "reliability.png"].contains(&name)
        || (name.starts_with("projection_") && name.ends_with(".png"))
}

/// What the predictions folder holds: its sample run's record (refusing
/// one that has not finished: its predictions are partial or mixed).
fn predictions_identity(dir: &std::path::Path) -> Result<String, Box<dyn std::error::Error>> {
    let record = dir.join(".radvox-sample.json");
    let Ok(text) = std::fs::read_to_string(&record) else { return Ok(format!("{} (no sample record)", dir.display())) };
    let r: OutputRecord = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", record.display()))?;
    if !r.complete {
        return Err(format!(
            "{}: the sample run writing these predictions has not finished (still running, or killed): rerun it first",
            dir.display()
        )
        .into());
    }
    Ok(format!("{} (sample run {:016x})", dir.display(), radvox::sys::fnv1a(text.as_bytes())))
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let cli = Cli::parse();
    cli.regions.config().validate()?; // before any file is read or claimed
    let vae = load_any_vae(&cli.vae, tch::Device::Cpu)?;
    let layout = frame_layout(vae.layout, cli.resample, &cli.vae)?;
    let split = if cli.scenes.is_some() { Split::Val } else { cli.split };
    let ds = Dataset::open(
        &cli.dataset_dir,
        split,
        &DatasetConfig { layout, val_scenes: cli.scenes.clone(), ..Default::default() },
    )?;
    let file = ds.frames()[0].target.shape();
    let (dims, geom) = (layout_dims(file, layout), geometry(file, layout)?);
    let out = cli.out.clone().unwrap_or_else(|| cli.predictions.clone());
    let identity = BTreeMap::from([
        ("vae".to_string(), checkpoint_identity(&cli.vae)?),
        ("predictions".to_string(), predictions_identity(&cli.predictions)?),
        ("data".to_string(), ds.identity()),
        (
            "settings".to_string(),
            format!(
                "threshold {} calibrate {} {:?} adaptive {:?} top_k {:?} taus {:?} pictures {}",
                cli.threshold, cli.calibrate, cli.objective, cli.adaptive, cli.top_k, cli.taus, cli.pictures
            ),
        ),
    ]);
    let outputs = Outputs::claim(&out, "evaluate", identity, cli.overwrite, &owned)?;
    let mut frames: Vec<(String, String, Prediction, VoxelSet, VoxelSet)> = Vec::new();
    for (i, f) in ds.frames().iter().enumerate() {
        let path = cli.predictions.join(format!("{}_{}.npz", f.id.scene, f.id.stem));
        let pred = prediction(&read_sparse(&path)?)?;
        frames.push((
            f.id.scene.clone(),
            f.id.stem.clone(),
            pred,
            occupied_frame(&ds, i, Modality::Radar, dims)?,
            occupied_frame(&ds, i, Modality::Target, dims)?,
        ));
    }
    let mut threshold = cli.threshold as f32;
    if cli.calibrate {
        let objective = match cli.objective {
            Score::F1 => Objective::F1,
            Score::Iou => Objective::Iou,
        };
        let cfg = SweepConfig { thresholds: Thresholds::Even(99), objective, averaging: Averaging::Micro };
        let sweep_frames: Vec<SweepFrame> =
            frames.iter().map(|(_, _, p, _, t)| SweepFrame { prediction: p, target: t }).collect();
        let result = sweep(&sweep_frames, &cfg)?;
        threshold = result.best_threshold().ok_or("no threshold has a defined score on these frames")?;
        let best = result.best_point().expect("a best threshold has its point");
        println!(
            "calibrated threshold {threshold:.2} ({:?} {:?} {:.4})",
            cfg.averaging,
            objective,
            best.score.unwrap_or(0.0)
        );
        result.chart().save_png(&out.join("threshold_sweep.png"))?;
        if let Some(ckpt) = &cli.store_in {
            set_metadata(ckpt, THRESHOLD_KEY, &format!("{threshold}"))?;
            println!("recorded with {}: sample uses it by default", ckpt.display());
        }
    }
    let mode = match cli.adaptive {
        Some(r) => ThresholdMode::MatchCount(ExpectedCount::RadarRatio(r)),
        None => ThresholdMode::Fixed(threshold),
    };
    let config = EvalConfig {
        selection: SelectionConfig { mode, top_k_fallback: cli.top_k },
        points: PointConfig { taus: cli.taus.clone() },
        regions: cli.regions.config(),
    };
    let inputs: Vec<FrameInput> = frames
        .iter()
        .map(|(scene, stem, p, r, t)| FrameInput { frame: stem, scene, prediction: p, radar: r, target: t })
        .collect();
    let records = evaluate_frames(&geom, &inputs, &config)?;
    let tau = cli.taus.first().copied().unwrap_or(0.5);
    // frames are flagged against the radar's F-score at the first tolerance asked for
    let report = ReportConfig { worse_than_radar_tau_m: tau, ..ReportConfig::default() };
    let paths = write_report(&out, &records, &report)?;
    // Pictures: the frames where the prediction does worst and best against the radar's F1.
    let margin = |k: usize| {
        let r = &records[k];
        r.prediction.voxel.scores.f1.unwrap_or(0.0) - r.radar.voxel.scores.f1.unwrap_or(0.0)
    };
    let mut order: Vec<usize> = (0..records.len()).collect();
    order.sort_by(|&a, &b| margin(a).total_cmp(&margin(b)));
    let n = cli.pictures.min(order.len());
    let chosen: Vec<(usize, &str)> = order[..n]
        .iter()
        .map(|&k| (k, "worst"))
        .chain(order[order.len() - n..].iter().rev().map(|&k| (k, "best")))
        .collect();
    for (k, which) in chosen {
        let (scene, stem, p, r, t) = &frames[k];
        let png = out.join(format!("projection_{which}_{scene}_{stem}.png"));
        let title = format!("{which} {scene}/{stem}: radar | prediction | target");
        let occupied_pred = p.occupied(records[k].threshold.unwrap_or(threshold));
        let layers = [Layer::Set(r), Layer::Set(&occupied_pred), Layer::Set(t)];
        save_projection(&png, &geom, &title, layers, &ProjectionConfig::default())?;
    }
    let overall = summarize(&records).pop().expect("an overall row");
    let (p, r) = (&overall.prediction, &overall.radar);
    let show = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.4}"));
    println!("{:<10} {:>8} {:>8} {:>10} {:>8}", "", "IoU", "F1", "Chamfer_m", format!("F@{tau}m"));
    for (name, m) in [("prediction", p), ("radar", r)] {
        println!(
            "{name:<10} {:>8} {:>8} {:>10} {:>8}",
            show(m.voxel.iou.mean),
            show(m.voxel.f1.mean),
            show(m.chamfer.mean),
            show(m.at(tau).and_then(|f| f.fscore.mean))
        );
    }
    outputs.finish(&owned)?;
    println!("{} frames; {} and {} in {}", records.len(), paths.csv.display(), paths.markdown.display(), out.display());
    Ok(())
}

fn main() -> ExitCode {
    common::main_with(run)
}
