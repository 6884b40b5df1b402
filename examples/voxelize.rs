//! Turns a recording's radar `(N, 5)` and LiDAR `(N, 4)` point-cloud frames
//! (`.npy` or KITTI-style `.bin`, named `<seconds>.<micros>`) into one
//! NTU4DRadLM_Pre scene: frames paired by timestamp, the radar moved into
//! the LiDAR frame by the calibration, the LiDAR ground removed, both
//! voxelized (0.2 m, x 0..120, y -20..20, z -6..10 m) and the target built
//! by the 3x3x3 radar-Doppler rule (or the sensor-aware rule), written as
//! sparse `.npz` (or dense `.npy`) under `<out>/<scene>/`, atomically, in
//! parallel, with `target_policy.json` and a summary.
#![allow(clippy::result_large_err)] // errors carry the file they are about, as the library's do
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use radvox::data::voxelize::{
    CalibOptions, CalibSource, Encoding, GroundParams, PairingOptions, PolicyFile, SceneWriter, TargetPolicy, Voxelizer,
};

mod common;

/// Voxelize radar/LiDAR point clouds into an NTU4DRadLM_Pre scene.
#[derive(Debug, Parser)]
#[command(version, allow_negative_numbers = true)]
struct Cli {
    /// Radar frames: `(N, 5)` float32 x, y, z, intensity, doppler.
    #[arg(long)]
    radar: PathBuf,
    /// LiDAR frames: `(N, 4)` float32 x, y, z, reflectivity.
    #[arg(long)]
    lidar: PathBuf,
    /// Dataset root to write into.
    #[arg(long)]
    out: PathBuf,
    /// Scene name (folder under --out).
    #[arg(long)]
    scene: String,
    /// Calibration file (`R: r11 .. r33`, `T: tx ty tz`; p_lidar = R p_radar + T).
    #[arg(long, conflicts_with = "identity")]
    calib: Option<PathBuf>,
    /// No calibration file: use the identity (must be asked for explicitly).
    #[arg(long)]
    identity: bool,
    /// Use the inverse of the calibration.
    #[arg(long)]
    invert: bool,
    /// Metres added to the radar's z after the transform.
    #[arg(long, default_value_t = 0.0)]
    z_shift: f64,
    /// Drop (and count) pairs further apart in time than this many seconds.
    #[arg(long, value_parser = common::positive)]
    max_gap: Option<f64>,
    /// Keep the LiDAR ground.
    #[arg(long)]
    no_ground_removal: bool,
    /// Write dense (H, W, Z, 4) float32 .npy instead of sparse .npz.
    #[arg(long)]
    dense: bool,
    /// The sensor-aware target: keep LiDAR voxels with centre z >= --z-min and x <= --x-max.
    #[arg(long)]
    sensor_aware: bool,
    /// With --sensor-aware: lowest kept voxel centre z (metres).
    #[arg(long, default_value_t = -1.0)]
    z_min: f64,
    /// With --sensor-aware: farthest kept voxel centre x (metres).
    #[arg(long, default_value_t = 80.0)]
    x_max: f64,
    /// With --sensor-aware: keep only LiDAR voxels with a radar voxel within R voxels.
    #[arg(long)]
    radar_visibility: Option<u32>,
    /// No progress bar.
    #[arg(long)]
    no_progress: bool,
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let cli = Cli::parse();
    let source = match (&cli.calib, cli.identity) {
        (Some(p), _) => CalibSource::File(p.clone()),
        (None, true) => CalibSource::Identity,
        (None, false) => return Err("give --calib FILE, or --identity to use no calibration".into()),
    };
    let policy = if cli.sensor_aware {
        TargetPolicy {
            z_min: Some(cli.z_min),
            x_max: Some(cli.x_max),
            radar_radius: cli.radar_visibility,
            doppler_radius: 1,
        }
    } else {
        TargetPolicy::plain()
    };
    let vox = Voxelizer {
        calib: CalibOptions { source, invert: cli.invert, z_shift: cli.z_shift },
        pairing: PairingOptions { max_gap: cli.max_gap },
        policy,
        ground: (!cli.no_ground_removal).then(GroundParams::default),
        progress: (!cli.no_progress).then(|| indicatif::ProgressBar::new(0)),
        ..Voxelizer::default()
    };
    let dir = cli.out.join(&cli.scene);
    let _lock = radvox::io::FolderLock::acquire(&dir, "voxelize")?;
    let encoding = if cli.dense { Encoding::Dense } else { Encoding::Sparse };
    let t = Instant::now();
    let summary = vox.run(&cli.radar, &cli.lidar, &SceneWriter::new(&dir, encoding)?)?;
    PolicyFile { policy, grid: vox.grid, frames: summary.written }.write(&dir)?;
    let secs = t.elapsed().as_secs_f64();
    println!("{summary}");
    println!(
        "{} frames in {secs:.2} s ({:.1} frames/s) -> {}",
        summary.written,
        summary.written as f64 / secs,
        dir.display()
    );
    Ok(())
}

fn main() -> ExitCode {
    common::main_with(run)
}
