//! The rescan oracle of a simulated root: how much of a frame is the scan's
//! chance. Every frame of the chosen scenes is scanned again in K rescanned
//! roots (`simulate --lidar-rescan k`, the same scenes, poses and radar,
//! another draw of the rosette's pass, the dropout and the range noise);
//! their targets are voted voxel by voxel (channel 0 = the share of the K
//! rescans that occupy it) and written as predictions in `sample`'s format,
//! so `evaluate` scores them against the recording beside the radar. That
//! is the score of a model that knows the scene exactly but not the draw:
//! K = 1 is one other scan (what a perfect sampler's one sample would
//! score), a large K approaches the per-voxel hit probability (the best a
//! thresholded prediction can do). The grid is the VAE checkpoint's, as
//! `evaluate`'s.
#![allow(clippy::result_large_err)] // errors carry the file they are about, as the library's do
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use radvox::data::{Dataset, DatasetConfig, Modality, Split};
use radvox::eval::export::write_prediction_npz;
use radvox::eval::frames::{layout_dims, occupied_frame, vote};
use radvox::io::{checkpoint_identity, Outputs};
use radvox::train::load_any_vae;
use radvox::train::vae::frame_layout;

mod common;

/// Vote the targets of rescanned simulated roots into predictions of the recording.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// The recorded root (`simulate`'s `ntu/`): the frames to predict.
    #[arg(long)]
    dataset_dir: PathBuf,
    /// Rescanned roots of the same simulation (`simulate --lidar-rescan k`'s `ntu/`), one or more.
    #[arg(long, num_args = 1.., required = true)]
    rescans: Vec<PathBuf>,
    /// The scenes to predict (comma-separated names).
    #[arg(long, value_delimiter = ',', required = true)]
    scenes: Vec<String>,
    /// The VAE checkpoint whose layout defines the grid (as `evaluate`'s).
    #[arg(long)]
    vae: PathBuf,
    /// Output folder of the predictions.
    #[arg(long)]
    out: PathBuf,
    /// Replace the outputs of another oracle run in --out.
    #[arg(long)]
    overwrite: bool,
    /// No progress bar.
    #[arg(long)]
    no_progress: bool,
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let cli = Cli::parse();
    let layout = frame_layout(load_any_vae(&cli.vae, tch::Device::Cpu)?.layout, None, &cli.vae)?;
    let config = DatasetConfig { layout, val_scenes: Some(cli.scenes.clone()), ..Default::default() };
    let recorded = Dataset::open(&cli.dataset_dir, Split::Val, &config)?;
    let rescans = (cli.rescans.iter().map(|r| Dataset::open(r, Split::Val, &config))).collect::<Result<Vec<_>, _>>()?;
    for (r, path) in rescans.iter().zip(&cli.rescans) {
        let ids = |d: &Dataset| d.frames().iter().map(|f| f.id.clone()).collect::<Vec<_>>();
        if ids(r) != ids(&recorded) {
            return Err(format!(
                "{} does not hold the frames of {} in scenes {:?}: not a rescan of the same simulation",
                path.display(),
                cli.dataset_dir.display(),
                cli.scenes
            )
            .into());
        }
    }
    let dims = layout_dims(recorded.frames()[0].target.shape(), layout);
    let mut identity = BTreeMap::from([
        ("vae".to_string(), checkpoint_identity(&cli.vae)?),
        ("data".to_string(), recorded.identity()),
    ]);
    for (k, r) in rescans.iter().enumerate() {
        identity.insert(format!("rescan{k}"), r.identity());
    }
    let owned = |name: &str| name.ends_with(".npz");
    let outputs = Outputs::claim(&cli.out, "rescan_oracle", identity, cli.overwrite, &owned)?;
    let n = recorded.len() as u64;
    let bar = if cli.no_progress { indicatif::ProgressBar::hidden() } else { indicatif::ProgressBar::new(n) };
    for (i, f) in recorded.frames().iter().enumerate() {
        let sets =
            rescans.iter().map(|r| occupied_frame(r, i, Modality::Target, dims)).collect::<Result<Vec<_>, _>>()?;
        write_prediction_npz(&cli.out.join(format!("{}_{}.npz", f.id.scene, f.id.stem)), &vote(&sets, dims))?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    outputs.finish(&owned)?;
    println!(
        "{} frames of {:?}, votes of {} rescans, in {} (score them with evaluate --predictions)",
        recorded.len(),
        cli.scenes,
        rescans.len(),
        cli.out.display()
    );
    Ok(())
}

fn main() -> ExitCode {
    common::main_with(run)
}
