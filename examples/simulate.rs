//! Simulates radar/LiDAR scenes in the dataset's sensor geometry, writes
//! their raw point clouds, voxelizes them into an NTU4DRadLM_Pre root and
//! prints per-frame statistics and the throughput. With `--if-missing` a
//! complete root of the same config is reused.
#![allow(clippy::result_large_err)] // errors carry the file they are about, as the library's do
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use radvox::data::frame::read_sparse;
use radvox::data::voxelize::TargetPolicy;
use radvox::sim::root::{bev_picture, is_complete, scene_name, simulate_root};
use radvox::sim::SimConfig;

mod common;

/// Simulate radar/LiDAR scenes into an NTU4DRadLM_Pre root.
#[derive(Debug, Parser)]
#[command(version, allow_negative_numbers = true)]
struct Cli {
    /// Output folder: raw clouds in raw/, the dataset root in ntu/.
    #[arg(long, default_value = "runs/sim")]
    out: PathBuf,
    /// Scenes (the 80/20 split gives train and val scenes).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    scenes: u64,
    /// LiDAR frames per scene.
    #[arg(long, default_value_t = 24, value_parser = clap::value_parser!(u64).range(1..))]
    frames: u64,
    /// Seed (same seed and settings, same bytes).
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// The sensor-aware target (z >= -1 m, x <= 80 m, a radar voxel within 2 voxels).
    #[arg(long)]
    sensor_aware: bool,
    /// Scan the same scenes, poses and radar again with another draw of the
    /// LiDAR's chance (rosette pass, dropout, range noise): 0 is the
    /// recording; for the rescan oracle (examples/rescan_oracle.rs).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=1000))]
    lidar_rescan: u64,
    /// Reuse a complete root of the same config in --out.
    #[arg(long)]
    if_missing: bool,
    /// Print one line of statistics per frame.
    #[arg(long)]
    stats: bool,
    /// Also draw a bird's-eye view (radar over LiDAR) of the first frame to this PNG.
    #[arg(long)]
    bev: Option<PathBuf>,
    /// No progress bars.
    #[arg(long)]
    no_progress: bool,
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let cli = Cli::parse();
    let cfg = SimConfig {
        seed: cli.seed,
        scenes: cli.scenes as usize,
        frames_per_scene: cli.frames as usize,
        lidar_rescan: cli.lidar_rescan,
        ..Default::default()
    };
    let root = cli.out.join("ntu");
    if cli.if_missing {
        // another simulate may be writing this root: wait for it, then reuse its work
        let _wait = radvox::io::FolderLock::wait(&cli.out, "simulate --if-missing")?;
        if is_complete(&cfg, &cli.out) {
            println!("simulated dataset {} is complete (same config): reused", root.display());
            return Ok(());
        }
    }
    let policy = if cli.sensor_aware { TargetPolicy::sensor_aware() } else { TargetPolicy::plain() };
    let r = simulate_root(&cfg, &cli.out, policy, !cli.no_progress)?;
    for (k, s) in r.summaries.iter().enumerate() {
        println!("{}:\n{s}", scene_name(k));
    }
    if cli.stats {
        println!("scene frame  radar  lidar  target  masked  doppler[min,max]  radar_near_lidar");
        for f in &r.frames {
            println!(
                "{:5} {:5} {:6} {:6} {:7} {:7}  [{:6.2}, {:6.2}]  {:.3}",
                f.scene,
                f.frame,
                f.radar,
                f.lidar,
                f.target,
                f.masked,
                f.doppler_min,
                f.doppler_max,
                f.radar_near_lidar
            );
        }
    }
    let n = r.frames.len().max(1) as f64;
    let mean = |g: fn(&radvox::sim::root::FrameRow) -> f64| r.frames.iter().map(g).sum::<f64>() / n;
    let range = |g: fn(&radvox::sim::root::FrameRow) -> usize| {
        (r.frames.iter().map(g).min().unwrap_or(0), r.frames.iter().map(g).max().unwrap_or(0))
    };
    println!("--- {} frames, {} scenes, seed {}", r.frames.len(), cfg.scenes, cfg.seed);
    println!("radar occupied voxels:  mean {:8.0}  range {:?}", mean(|f| f.radar as f64), range(|f| f.radar));
    println!("lidar occupied voxels:  mean {:8.0}  range {:?}", mean(|f| f.lidar as f64), range(|f| f.lidar));
    println!("target occupied voxels: mean {:8.0}  range {:?}", mean(|f| f.target as f64), range(|f| f.target));
    println!(
        "doppler over all frames: [{:.2}, {:.2}] m/s; radar voxels with a LiDAR voxel within 1 voxel: {:.3}",
        r.frames.iter().map(|f| f.doppler_min).fold(f32::INFINITY, f32::min),
        r.frames.iter().map(|f| f.doppler_max).fold(f32::NEG_INFINITY, f32::max),
        mean(|f| f.radar_near_lidar)
    );
    println!(
        "time: simulate {:.2} s + voxelize {:.2} s on {} threads = {:.1} frames/s; dataset in {}",
        r.simulate_s,
        r.voxelize_s,
        rayon::current_num_threads(),
        n / (r.simulate_s + r.voxelize_s),
        root.display()
    );
    if let Some(png) = &cli.bev {
        let scene = root.join(scene_name(0));
        let (radar, lidar) =
            (read_sparse(&scene.join("radar_voxel/000000.npz"))?, read_sparse(&scene.join("lidar_voxel/000000.npz"))?);
        let [h, w, z, _] = lidar.shape;
        bev_picture(&lidar.coords, &radar.coords, [h, w, z], 2).save_png(png)?;
        println!("bird's-eye view of {}/000000 in {}", scene_name(0), png.display());
    }
    Ok(())
}

fn main() -> ExitCode {
    common::main_with(run)
}
