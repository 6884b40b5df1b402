//! Streams the frames of a dataset root's scenes into a probabilistic
//! obstacle map in the world frame (the scene's `poses.txt`, TUM format):
//! the radar, the targets, the LiDAR or a `sample` predictions folder (each
//! voxel with its probability). Writes per scene the occupied voxels
//! (`<scene>.ply`) and a bird's-eye PNG of occupancy probability and
//! elevation (`<scene>_bev.png`), a `frames.csv` of per-frame latency and
//! memory, `map.json` (the settings); with `--compare-to`, the map is
//! scored after each frame against a reference map built from the LiDAR
//! with the same poses, per range band, into `compare.md`.
//!
//! ```text
//! cargo run --release --example build_map -- --dataset-dir runs/quality/sim/ntu \
//!     --scenes scene10,scene11 --source radar --compare-to target --out runs/map/radar
//! ```
#![allow(clippy::result_large_err)]
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use radvox::data::{Layout, Split};
use radvox::map::compare::MapScore;
use radvox::map::export::{write_bev, write_ply};
use radvox::map::source::predictions_layout;
use radvox::map::stream::stream_scene;
use radvox::map::{DempsterShafer, Evidence, FrameSource, LogOdds, MapConfig, SceneFrames};

mod common;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Model {
    /// Log-odds with clamping (OctoMap's).
    LogOdds,
    /// Dempster-Shafer masses.
    Ds,
}

/// Build a streaming obstacle map from a root's frames and poses.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// NTU4DRadLM_Pre root (each scene with its poses.txt).
    #[arg(long)]
    dataset_dir: PathBuf,
    /// Scenes to map, comma-separated (default: the val split's).
    #[arg(long, value_delimiter = ',')]
    scenes: Option<Vec<String>>,
    /// `radar`, `target`, `lidar` or a `sample` predictions folder.
    #[arg(long, default_value = "radar")]
    source: String,
    /// Resample frames to Z,H,W (a predictions folder's grid is read from its files).
    #[arg(long, value_parser = common::zhw)]
    resample: Option<[usize; 3]>,
    /// Map voxel edge in metres (default: the frames' smallest voxel edge).
    #[arg(long, value_parser = common::positive)]
    voxel: Option<f64>,
    /// Evidence model.
    #[arg(long, value_enum, default_value = "log-odds")]
    model: Model,
    /// Decay towards unknown with this time constant (s).
    #[arg(long, value_parser = common::positive)]
    decay_s: Option<f64>,
    /// Cut rays longer than this (m).
    #[arg(long, value_parser = common::positive)]
    max_range: Option<f64>,
    /// Sliding-window radius around the ego (m).
    #[arg(long, default_value_t = 200.0, value_parser = common::positive)]
    window: f64,
    /// Trust in the source, in (0, 1].
    #[arg(long, default_value_t = 1.0, value_parser = common::fraction)]
    reliability: f64,
    /// Predictions: voxels below this probability are not observations.
    #[arg(long, default_value_t = 0.5, value_parser = common::probability)]
    min_probability: f64,
    /// Score against a reference map from `target` or `lidar` frames.
    #[arg(long)]
    compare_to: Option<String>,
    /// Range band edges from the ego (m) for the comparison.
    #[arg(long, value_delimiter = ',', default_value = "0,20,40,80,120")]
    bands: Vec<f64>,
    /// Match tolerance of the comparison (voxels, Chebyshev).
    #[arg(long, default_value_t = 1)]
    tol: i32,
    /// Output folder.
    #[arg(long)]
    out: PathBuf,
    /// No progress bar.
    #[arg(long)]
    no_progress: bool,
}

fn main() -> ExitCode {
    common::main_with(|| run(Cli::parse()))
}

fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    let source: FrameSource = cli.source.parse()?;
    let layout = match (cli.resample, &source) {
        (Some(zhw), _) => Layout::Resample { zhw },
        (None, FrameSource::Predictions(dir)) => predictions_layout(dir)?,
        _ => Layout::default(),
    };
    let reference: Option<FrameSource> = cli.compare_to.as_deref().map(str::parse).transpose()?;
    if matches!(reference, Some(FrameSource::Radar | FrameSource::Predictions(_))) {
        return Err("--compare-to takes target or lidar".into());
    }
    if cli.bands.len() < 2 || cli.bands.windows(2).any(|w| w[0] >= w[1]) {
        return Err(format!("--bands {:?}: need at least two increasing edges", cli.bands).into());
    }
    let scenes = match &cli.scenes {
        Some(s) => s.clone(),
        None => radvox::Dataset::open(&cli.dataset_dir, Split::Val, &Default::default())?.scenes().to_vec(),
    };
    std::fs::create_dir_all(&cli.out)?;
    let mut csv = String::from("scene,frame,points,occupied,free,traversed,insert_ms,read_ms,blocks,map_mib\n");
    let mut score = MapScore::new(&cli.bands, cli.tol);
    let mut totals = (0usize, 0usize, 0.0f64, 0.0f64, 0usize); // points, updates, seconds, worst ms, peak bytes
    let mut cfg_used = None;
    for scene in &scenes {
        let frames = SceneFrames::open(&cli.dataset_dir, scene, source.clone(), layout, cli.min_probability as f32)?;
        let g = frames.geometry();
        let voxel = cli.voxel.unwrap_or_else(|| f64::from(g.voxel.iter().copied().fold(f32::INFINITY, f32::min)));
        let evidence = match cli.model {
            Model::LogOdds => Evidence::LogOdds(LogOdds::default()),
            Model::Ds => Evidence::DempsterShafer(DempsterShafer::default()),
        };
        let cfg = MapConfig {
            voxel,
            evidence,
            decay_s: cli.decay_s,
            max_range: cli.max_range,
            window: Some(cli.window),
            ..MapConfig::default()
        };
        cfg_used = Some(cfg);
        let ref_frames = reference
            .as_ref()
            .map(|r| SceneFrames::open(&cli.dataset_dir, scene, r.clone(), layout, 0.5))
            .transpose()?;
        let bar = if cli.no_progress {
            indicatif::ProgressBar::hidden()
        } else {
            indicatif::ProgressBar::new(frames.len() as u64)
        };
        bar.set_prefix(scene.clone());
        let reliability = cli.reliability;
        let scored = ref_frames.as_ref().map(|r| (r, &mut score));
        let done = stream_scene(&frames, cfg, reliability, scored, |f| {
            bar.set_message(format!("{:.1} ms, {} blocks", f.stats.seconds * 1e3, f.blocks));
            bar.inc(1);
        })?;
        bar.finish_and_clear();
        for f in &done.frames {
            let s = &f.stats;
            let _ = writeln!(
                csv,
                "{scene},{},{},{},{},{},{:.3},{:.3},{},{:.3}",
                f.frame,
                s.points,
                s.occupied,
                s.free,
                s.traversed,
                s.seconds * 1e3,
                f.read_s * 1e3,
                f.blocks,
                f.bytes as f64 / (1 << 20) as f64
            );
            totals.0 += s.points;
            totals.1 += s.updates();
            totals.2 += s.seconds;
            totals.3 = totals.3.max(s.seconds * 1e3);
            totals.4 = totals.4.max(f.bytes);
        }
        let n = write_ply(&done.map, &cli.out.join(format!("{scene}.ply")))?;
        write_bev(
            &done.map,
            &cli.out.join(format!("{scene}_bev.png")),
            &format!("{scene} {}", source.name().to_uppercase()),
        )?;
        if let Some(r) = &done.reference {
            write_bev(r, &cli.out.join(format!("{scene}_reference_bev.png")), &format!("{scene} REFERENCE"))?;
        }
        println!(
            "{scene}: {} frames, {n} occupied voxels, {} DEM columns, {} blocks ({:.1} MiB)",
            done.frames.len(),
            done.map.dem().len(),
            done.map.blocks().len(),
            done.map.bytes() as f64 / (1 << 20) as f64
        );
    }
    radvox::io::write_atomic(&cli.out.join("frames.csv"), csv.as_bytes())?;
    let settings = serde_json::json!({ "source": source.name(), "reliability": cli.reliability, "min_probability": cli.min_probability, "map": cfg_used });
    radvox::io::write_atomic(&cli.out.join("map.json"), serde_json::to_string_pretty(&settings)?.as_bytes())?;
    let (points, updates, secs, worst, peak) = totals;
    println!(
        "insertion: {points} points, {updates} voxel updates in {secs:.3} s: {:.2} M points/s, {:.1} M updates/s; worst frame {worst:.1} ms; peak map {:.1} MiB ({} threads)",
        points as f64 / secs.max(1e-9) / 1e6,
        updates as f64 / secs.max(1e-9) / 1e6,
        peak as f64 / (1 << 20) as f64,
        rayon::current_num_threads()
    );
    if let Some(r) = &reference {
        let table = radvox::map::compare::table(&score, &source.name(), &r.name());
        println!("{table}");
        radvox::io::write_atomic(&cli.out.join("compare.md"), table.as_bytes())?;
    }
    Ok(())
}
