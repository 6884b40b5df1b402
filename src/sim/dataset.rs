//! Scenes to timestamped frames, in memory or on disk.
//!
//! Timing: LiDAR frame `k` of scene `s` is taken at `k / lidar_hz` seconds
//! after the scene start, radar frame `j` at `radar_offset + j / radar_hz`,
//! as long as it is not later than the last LiDAR frame plus half a radar
//! period. With the defaults (10 Hz LiDAR, 13 Hz radar, 21 ms offset) the
//! LiDAR has fewer frames and becomes the pairing time axis. File stamps are
//! `start_time + 3600 s * s` plus the frame time, rounded to microseconds.
//!
//! On disk (`write_scene`): `radar/<sec>.<usec>.bin` (float32 `(N, 5)`),
//! `lidar/<sec>.<usec>.bin` (float32 `(N, 4)`) and `calib.txt` (identity:
//! both sensors share the origin).

use std::path::Path;

use rayon::prelude::*;

use super::config::{ConfigError, SimConfig};
use super::lidar::scan_lidar;
use super::radar::scan_radar;
use super::rng::{derive_seed, frame_rng, Purpose};
use super::scene::Scene;
use super::trajectory::{Pose, Trajectory};
use super::view::View;
use crate::data::voxelize::calib::format_calibration;
use crate::data::voxelize::{write_bin, Calibration, PointCloud, Stamp, VoxelizeError};

/// One simulated sensor frame.
#[derive(Debug, Clone, PartialEq)]
pub struct SimFrame {
    /// File timestamp.
    pub stamp: Stamp,
    /// Seconds since the scene start.
    pub time: f64,
    /// Sensor pose at that time.
    pub pose: Pose,
    /// The cloud (sensor frame).
    pub cloud: PointCloud,
}

/// A simulated scene: its layout, ego path and frames.
#[derive(Debug, Clone, PartialEq)]
pub struct SimScene {
    /// Scene number.
    pub index: usize,
    /// Layout.
    pub scene: Scene,
    /// Ego path.
    pub trajectory: Trajectory,
    /// Radar frames in time order.
    pub radar: Vec<SimFrame>,
    /// LiDAR frames in time order.
    pub lidar: Vec<SimFrame>,
}

/// Simulates scenes from a validated [`SimConfig`].
#[derive(Debug, Clone)]
pub struct Simulator {
    cfg: SimConfig,
}

impl Simulator {
    /// A simulator for `cfg`, after [`SimConfig::validate`].
    pub fn new(cfg: SimConfig) -> Result<Self, ConfigError> {
        cfg.validate()?;
        Ok(Simulator { cfg })
    }

    /// The configuration.
    pub fn config(&self) -> &SimConfig {
        &self.cfg
    }

    /// Seconds from the first to the last LiDAR frame.
    pub fn duration(&self) -> f64 {
        self.cfg.frames_per_scene.saturating_sub(1) as f64 / self.cfg.lidar_hz
    }

    /// The layout and ego path of scene `k`.
    pub fn layout(&self, k: usize) -> (Scene, Trajectory) {
        let length = self.cfg.ego.speed * self.duration();
        let seed = derive_seed(self.cfg.seed, k, Purpose::Layout);
        let scene = Scene::generate(&self.cfg.scene, length, self.cfg.ego.speed, seed);
        let trajectory = Trajectory { ego: self.cfg.ego.clone(), ground: scene.ground };
        (scene, trajectory)
    }

    fn stamp(&self, scene: usize, t: f64) -> Stamp {
        let micros = (t * 1e6).round() as i64;
        Stamp::from_micros(self.cfg.start_time + 3600 * scene as i64, micros)
    }

    /// Scene times of the LiDAR frames.
    pub fn lidar_times(&self) -> Vec<f64> {
        (0..self.cfg.frames_per_scene).map(|k| k as f64 / self.cfg.lidar_hz).collect()
    }

    /// Scene times of the radar frames.
    pub fn radar_times(&self) -> Vec<f64> {
        let end = self.duration() + 0.5 / self.cfg.radar_hz;
        (0..).map(|j| self.cfg.radar_offset + j as f64 / self.cfg.radar_hz).take_while(|&t| t <= end).collect()
    }

    /// One LiDAR frame of scene `k` (of rescan [`SimConfig::lidar_rescan`]:
    /// the rosette's pass and the random stream move on, the view stays).
    pub fn lidar_frame(&self, k: usize, scene: &Scene, traj: &Trajectory, frame: usize, t: f64) -> SimFrame {
        let pose = traj.pose(t);
        let view = View::new(scene, &pose, t, self.cfg.lidar.range[1]);
        let rescan = self.cfg.lidar_rescan as usize;
        let (purpose, pass) = match rescan {
            0 => (Purpose::Lidar, frame),
            r => (Purpose::LidarRescan, frame + r * self.cfg.frames_per_scene),
        };
        let mut rng = frame_rng(self.cfg.seed, k, purpose, pass);
        let cloud = scan_lidar(&view, &self.cfg.lidar, pass, &mut rng);
        SimFrame { stamp: self.stamp(k, t), time: t, pose, cloud }
    }

    /// One radar frame of scene `k`.
    pub fn radar_frame(&self, k: usize, scene: &Scene, traj: &Trajectory, frame: usize, t: f64) -> SimFrame {
        let pose = traj.pose(t);
        let view = View::new(scene, &pose, t, self.cfg.radar.max_range);
        let mut rng = frame_rng(self.cfg.seed, k, Purpose::Radar, frame);
        let cloud = scan_radar(&view, &self.cfg.radar, &mut rng);
        SimFrame { stamp: self.stamp(k, t), time: t, pose, cloud }
    }

    /// Simulates every frame of scene `k` (frames in parallel; the result
    /// does not depend on the thread count).
    pub fn simulate_scene(&self, k: usize) -> SimScene {
        let (scene, trajectory) = self.layout(k);
        let lidar = self
            .lidar_times()
            .into_par_iter()
            .enumerate()
            .map(|(f, t)| self.lidar_frame(k, &scene, &trajectory, f, t))
            .collect();
        let radar = self
            .radar_times()
            .into_par_iter()
            .enumerate()
            .map(|(f, t)| self.radar_frame(k, &scene, &trajectory, f, t))
            .collect();
        SimScene { index: k, scene, trajectory, radar, lidar }
    }
}

/// Writes a scene as `radar/*.bin`, `lidar/*.bin` and an identity
/// `calib.txt` under `dir` (created if needed).
pub fn write_scene(dir: &Path, scene: &SimScene) -> Result<(), VoxelizeError> {
    for (sub, frames) in [("radar", &scene.radar), ("lidar", &scene.lidar)] {
        let d = dir.join(sub);
        std::fs::create_dir_all(&d).map_err(|e| VoxelizeError::io(&d, e))?;
        for f in frames {
            write_bin(&d.join(format!("{}.bin", f.stamp.file_stem())), &f.cloud)?;
        }
    }
    let calib = dir.join("calib.txt");
    crate::io::write_atomic(&calib, format_calibration(&Calibration::identity()).as_bytes())
        .map_err(|e| VoxelizeError::io(calib, e))
}
