//! A whole simulated NTU4DRadLM_Pre root: every scene simulated, its raw
//! radar/LiDAR clouds written as timestamped `.bin` frames (`<out>/raw/`), then
//! voxelized from disk by the voxelizer, as a user's recordings would be
//! (`<out>/ntu/`), with per-frame statistics and each scene's sensor poses
//! (`<scene>/poses.txt` at the frames' LiDAR times, `radar_poses.txt` at
//! their radar times; TUM format, [`crate::data::poses`]). `<out>/sim.json` records the
//! config of a complete root, so a cached root is reused only when it
//! matches.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::config::SimConfig;
use super::dataset::{write_scene, SimFrame, SimScene, Simulator};
use crate::data::poses::{poses_path, write_tum, TumPose, POSES_FILE, RADAR_POSES_FILE};
use crate::data::voxelize::{
    near_fraction, CalibOptions, Encoding, FrameOutput, FrameSink, PolicyFile, SceneWriter, Summary, TargetPolicy,
    VoxelizeError, Voxelizer,
};
use crate::io::png::Canvas;

/// Statistics of one voxelized frame.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct FrameRow {
    /// Scene index.
    pub scene: usize,
    /// Frame (pair) index.
    pub frame: usize,
    /// Occupied radar voxels.
    pub radar: usize,
    /// Occupied LiDAR voxels (ground removed).
    pub lidar: usize,
    /// Occupied target voxels.
    pub target: usize,
    /// Target voxels with the Doppler-valid mask.
    pub masked: usize,
    /// Smallest radar voxel Doppler (m/s).
    pub doppler_min: f32,
    /// Largest radar voxel Doppler (m/s).
    pub doppler_max: f32,
    /// Share of radar voxels with a LiDAR voxel within 1 voxel.
    pub radar_near_lidar: f64,
}

/// What [`simulate_root`] did.
#[derive(Debug, Clone)]
pub struct RootReport {
    /// `<out>/ntu`, the dataset root.
    pub root: PathBuf,
    /// Per-frame statistics, by scene then frame.
    pub frames: Vec<FrameRow>,
    /// The voxelizer's summary of each scene.
    pub summaries: Vec<Summary>,
    /// Seconds spent simulating (and writing the raw clouds).
    pub simulate_s: f64,
    /// Seconds spent voxelizing from disk (and writing the grids).
    pub voxelize_s: f64,
}

/// The name of scene `k`.
pub fn scene_name(k: usize) -> String {
    format!("scene{k:02}")
}

fn marker(out: &Path) -> PathBuf {
    out.join("sim.json")
}

/// Whether `out` holds a complete root simulated with exactly `cfg`.
pub fn is_complete(cfg: &SimConfig, out: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(marker(out)) else { return false };
    serde_json::from_str::<SimConfig>(&text).is_ok_and(|c| &c == cfg)
        && (0..cfg.scenes).all(|k| poses_path(&out.join("ntu"), &scene_name(k)).is_file())
}

/// Collects statistics of each frame on the way to the writer.
struct Recording<'a> {
    writer: SceneWriter,
    scene: usize,
    rows: &'a Mutex<Vec<FrameRow>>,
    /// `(frame, radar input, lidar input)` of each written pair.
    pairs: &'a Mutex<Vec<[usize; 3]>>,
}

impl FrameSink for Recording<'_> {
    fn accept(&self, f: FrameOutput) -> Result<(), VoxelizeError> {
        let g = &f.grids;
        let dops = (0..g.radar.len()).map(|i| g.radar.feature(i)[2]);
        let (dmin, dmax) = dops.fold((f32::INFINITY, f32::NEG_INFINITY), |a, d| (a.0.min(d), a.1.max(d)));
        let row = FrameRow {
            scene: self.scene,
            frame: f.pair.index,
            radar: g.radar.len(),
            lidar: g.lidar.len(),
            target: g.target.len(),
            masked: (0..g.target.len()).filter(|&i| g.target.feature(i)[3] > 0.0).count(),
            doppler_min: if g.radar.is_empty() { 0.0 } else { dmin },
            doppler_max: if g.radar.is_empty() { 0.0 } else { dmax },
            radar_near_lidar: near_fraction(&g.radar, &g.lidar, 1),
        };
        let pair = [f.pair.index, f.pair.radar, f.pair.lidar];
        self.writer.accept(f)?;
        self.pairs.lock().unwrap_or_else(|e| e.into_inner()).push(pair);
        self.rows.lock().unwrap_or_else(|e| e.into_inner()).push(row);
        Ok(())
    }
}

/// Simulates every scene of `cfg` into `out` (see the module docs), with the
/// target rule `policy`; `progress` shows a bar per scene. Replaces what an
/// earlier, different or unfinished run left in `out`.
pub fn simulate_root(
    cfg: &SimConfig,
    out: &Path,
    policy: TargetPolicy,
    progress: bool,
) -> Result<RootReport, VoxelizeError> {
    let sim = Simulator::new(cfg.clone()).map_err(|e| VoxelizeError::Grid(e.to_string()))?;
    let _lock = crate::io::FolderLock::acquire(out, "simulate")?;
    let _ = std::fs::remove_file(marker(out));
    for sub in ["raw", "ntu"] {
        let d = out.join(sub);
        if d.exists() {
            std::fs::remove_dir_all(&d).map_err(|e| VoxelizeError::io(&d, e))?;
        }
    }
    let root = out.join("ntu");
    let rows = Mutex::new(Vec::new());
    let (mut simulate_s, mut voxelize_s, mut summaries) = (0.0, 0.0, Vec::new());
    for k in 0..cfg.scenes {
        let t0 = Instant::now();
        let raw = out.join("raw").join(scene_name(k));
        let scene = sim.simulate_scene(k);
        write_scene(&raw, &scene)?;
        let t1 = Instant::now();
        let bar = progress.then(|| {
            let b = indicatif::ProgressBar::new(0);
            b.set_prefix(scene_name(k));
            b
        });
        let vox =
            Voxelizer { calib: CalibOptions::file(raw.join("calib.txt")), policy, progress: bar, ..Default::default() };
        let scene_dir = root.join(scene_name(k));
        let pairs = Mutex::new(Vec::new());
        let writer = SceneWriter::new(&scene_dir, Encoding::Sparse)?;
        let sink = Recording { writer, scene: k, rows: &rows, pairs: &pairs };
        let summary = vox.run(&raw.join("radar"), &raw.join("lidar"), &sink)?;
        write_poses(&scene_dir, &scene, pairs.into_inner().unwrap_or_else(|e| e.into_inner()))?;
        PolicyFile { policy, grid: vox.grid, frames: summary.written }.write(&scene_dir)?;
        simulate_s += (t1 - t0).as_secs_f64();
        voxelize_s += t1.elapsed().as_secs_f64();
        summaries.push(summary);
    }
    let mut frames = rows.into_inner().unwrap_or_else(|e| e.into_inner());
    frames.sort_by_key(|r| (r.scene, r.frame));
    let json = serde_json::to_string_pretty(cfg).expect("configs serialise");
    crate::io::write_atomic(&marker(out), json.as_bytes()).map_err(|e| VoxelizeError::io(marker(out), e))?;
    Ok(RootReport { root, frames, summaries, simulate_s, voxelize_s })
}

/// Writes `poses.txt` (each frame's LiDAR pose) and `radar_poses.txt` (its
/// radar pose) from the simulated frames of the written `pairs`.
fn write_poses(scene_dir: &Path, scene: &SimScene, mut pairs: Vec<[usize; 3]>) -> Result<(), VoxelizeError> {
    pairs.sort_unstable();
    let tum = |f: &SimFrame| {
        TumPose::from_yaw(f.stamp.0 as f64 / 1e9, [f.pose.pos.x, f.pose.pos.y, f.pose.pos.z], f.pose.yaw)
    };
    let lidar: Vec<TumPose> = pairs.iter().map(|p| tum(&scene.lidar[p[2]])).collect();
    let radar: Vec<TumPose> = pairs.iter().map(|p| tum(&scene.radar[p[1]])).collect();
    for (name, poses) in [(POSES_FILE, lidar), (RADAR_POSES_FILE, radar)] {
        let path = scene_dir.join(name);
        write_tum(&path, &poses).map_err(|e| VoxelizeError::io(path, e))?;
    }
    Ok(())
}

/// A bird's-eye view (x forward = up, y left = left) of one frame: LiDAR
/// voxels in grey, radar voxels in red on top; `zoom` pixels per voxel.
pub fn bev_picture(lidar: &[[u32; 3]], radar: &[[u32; 3]], dims: [usize; 3], zoom: usize) -> Canvas {
    let z = zoom.max(1);
    let (h, w) = (dims[0] * z, dims[1] * z);
    let mut c = Canvas::new(w.max(300) + 20, h + 40);
    c.text(10, 10, "LIDAR (GREY) + RADAR (RED), TOP VIEW", [0, 0, 0], 1);
    let put = |c: &mut Canvas, xyz: &[u32; 3], colour: [u8; 3]| {
        let (row, col) = ((dims[0] - 1 - xyz[0] as usize) * z, (dims[1] - 1 - xyz[1] as usize) * z);
        for a in 0..z {
            for b in 0..z {
                c.put((10 + col + b) as i64, (30 + row + a) as i64, colour);
            }
        }
    };
    for v in lidar {
        put(&mut c, v, [150, 150, 150]);
    }
    for v in radar {
        put(&mut c, v, [220, 30, 30]);
    }
    c
}
