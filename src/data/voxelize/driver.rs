//! The dataset driver: lists and pairs the frames of a radar and a LiDAR
//! directory, processes all pairs in parallel (rayon) and hands each result to
//! a [`FrameSink`] (radvox writes the files, atomically, itself).
//!
//! A frame whose cloud cannot be read or is malformed is skipped and reported
//! in the [`Summary`]; a sink failure stops the run with an error.

use std::fmt;
use std::path::{Path, PathBuf};

use indicatif::ProgressBar;
use rayon::prelude::*;

use super::calib::CalibOptions;
use super::cloud::{CloudReader, FileReader, LIDAR_COLS, RADAR_COLS};
use super::error::VoxelizeError;
use super::frame::{FrameGrids, FrameProcessor};
use super::grid::{FrameStats, GridSpec};
use super::ground::GroundParams;
use super::pairing::{list_frames, pair_frames, Axis, Pair, PairingOptions, StampedFile};
use super::target::TargetPolicy;

/// One processed frame, as handed to the sink.
#[derive(Debug, Clone)]
pub struct FrameOutput {
    /// The pair (its `index` names the output files: `000000`, ...).
    pub pair: Pair,
    /// Radar source file.
    pub radar_path: PathBuf,
    /// LiDAR source file.
    pub lidar_path: PathBuf,
    /// The grids and statistics.
    pub grids: FrameGrids,
}

/// Receives processed frames, possibly from several threads at once and in
/// any order.
pub trait FrameSink: Sync {
    /// Stores one frame; an error stops the run.
    fn accept(&self, frame: FrameOutput) -> Result<(), VoxelizeError>;
}

impl<F: Fn(FrameOutput) -> Result<(), VoxelizeError> + Sync> FrameSink for F {
    fn accept(&self, frame: FrameOutput) -> Result<(), VoxelizeError> {
        self(frame)
    }
}

/// A frame that was not written, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedFrame {
    /// Pair index.
    pub index: usize,
    /// The reason (the error message, naming the file).
    pub reason: String,
}

/// Totals of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// The time-axis sensor.
    pub axis: Axis,
    /// Radar frame files found.
    pub radar_files: usize,
    /// LiDAR frame files found.
    pub lidar_files: usize,
    /// `.bin`/`.npy` files whose names are not timestamps (not read).
    pub unnamed_files: Vec<PathBuf>,
    /// Pairs formed (after gap drops).
    pub pairs: usize,
    /// Pairs dropped by `max_gap`.
    pub dropped_gap: usize,
    /// Frames handed to the sink.
    pub written: usize,
    /// Frames skipped, with reasons, by index.
    pub skipped: Vec<SkippedFrame>,
    /// Radar totals over written frames.
    pub radar: FrameStats,
    /// LiDAR totals over written frames (after ground removal).
    pub lidar: FrameStats,
    /// LiDAR points removed as ground.
    pub ground_removed: usize,
    /// Occupied target voxels over written frames.
    pub target_occupied: usize,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let axis = match self.axis {
            Axis::Radar => "radar",
            Axis::Lidar => "lidar",
        };
        writeln!(
            f,
            "{} radar + {} lidar files ({} unnamed ignored); time axis {axis}; {} pairs, {} dropped by max gap",
            self.radar_files,
            self.lidar_files,
            self.unnamed_files.len(),
            self.pairs,
            self.dropped_gap
        )?;
        writeln!(f, "frames written {}, skipped {}", self.written, self.skipped.len())?;
        for s in &self.skipped {
            writeln!(f, "  skipped {:06}: {}", s.index, s.reason)?;
        }
        for (name, s) in [("radar", &self.radar), ("lidar", &self.lidar)] {
            writeln!(
                f,
                "{name}: {} points, {} out of range, {} non-finite, {} occupied voxels",
                s.points_in, s.dropped_out_of_range, s.dropped_non_finite, s.occupied
            )?;
        }
        write!(
            f,
            "lidar ground removed: {} points; target occupied voxels: {}",
            self.ground_removed, self.target_occupied
        )
    }
}

/// Settings of a preprocessing run.
pub struct Voxelizer {
    /// Grid geometry.
    pub grid: GridSpec,
    /// Calibration source and options.
    pub calib: CalibOptions,
    /// Pairing options.
    pub pairing: PairingOptions,
    /// Target rule.
    pub policy: TargetPolicy,
    /// LiDAR ground removal (`None` disables it).
    pub ground: Option<GroundParams>,
    /// Cloud file reader (`.bin` and `.npy` by default).
    pub reader: Box<dyn CloudReader>,
    /// Progress bar, advanced once per frame.
    pub progress: Option<ProgressBar>,
}

impl Default for Voxelizer {
    fn default() -> Self {
        Voxelizer {
            grid: GridSpec::default(),
            calib: CalibOptions::identity(),
            pairing: PairingOptions::default(),
            policy: TargetPolicy::plain(),
            ground: Some(GroundParams::default()),
            reader: Box::new(FileReader),
            progress: None,
        }
    }
}

enum Outcome {
    Written(Box<(FrameStats, FrameStats, usize, usize)>),
    Skipped(SkippedFrame),
}

impl Voxelizer {
    /// Pairs the frames of `radar_dir` and `lidar_dir`, processes every pair
    /// in parallel and sends each to `sink`. Errors: an unreadable or empty
    /// directory, a calibration problem, a grid problem or a sink failure.
    pub fn run(&self, radar_dir: &Path, lidar_dir: &Path, sink: &dyn FrameSink) -> Result<Summary, VoxelizeError> {
        self.grid.validate()?;
        let processor =
            FrameProcessor { grid: self.grid, calib: self.calib.resolve()?, ground: self.ground, policy: self.policy };
        let (radar, mut unnamed) = list_frames(radar_dir)?;
        let (lidar, unnamed_lidar) = list_frames(lidar_dir)?;
        unnamed.extend(unnamed_lidar);
        let stamps = |v: &[StampedFile]| v.iter().map(|f| f.stamp).collect::<Vec<_>>();
        let pairing = pair_frames(&stamps(&radar), &stamps(&lidar), &self.pairing);
        if let Some(pb) = &self.progress {
            pb.set_length(pairing.pairs.len() as u64);
        }
        let outcomes: Vec<Outcome> = pairing
            .pairs
            .par_iter()
            .map(|pair| {
                let out = self.one(&processor, pair, &radar[pair.radar].path, &lidar[pair.lidar].path, sink);
                if let Some(pb) = &self.progress {
                    pb.inc(1);
                }
                out
            })
            .collect::<Result<_, _>>()?;
        let mut summary = Summary {
            axis: pairing.axis,
            radar_files: radar.len(),
            lidar_files: lidar.len(),
            unnamed_files: unnamed,
            pairs: pairing.pairs.len(),
            dropped_gap: pairing.dropped_gap,
            written: 0,
            skipped: Vec::new(),
            radar: FrameStats::default(),
            lidar: FrameStats::default(),
            ground_removed: 0,
            target_occupied: 0,
        };
        for o in outcomes {
            match o {
                Outcome::Written(w) => {
                    let (r, l, g, t) = *w;
                    summary.written += 1;
                    summary.radar += r;
                    summary.lidar += l;
                    summary.ground_removed += g;
                    summary.target_occupied += t;
                }
                Outcome::Skipped(s) => summary.skipped.push(s),
            }
        }
        if let Some(pb) = &self.progress {
            pb.finish();
        }
        Ok(summary)
    }

    fn one(
        &self,
        processor: &FrameProcessor,
        pair: &Pair,
        radar_path: &Path,
        lidar_path: &Path,
        sink: &dyn FrameSink,
    ) -> Result<Outcome, VoxelizeError> {
        let read = || -> Result<FrameGrids, VoxelizeError> {
            let radar = self.reader.read_cloud(radar_path, RADAR_COLS)?;
            let lidar = self.reader.read_cloud(lidar_path, LIDAR_COLS)?;
            processor.process(&radar, &lidar)
        };
        let grids = match read() {
            Ok(g) => g,
            Err(e) => return Ok(Outcome::Skipped(SkippedFrame { index: pair.index, reason: e.to_string() })),
        };
        let stats = (grids.radar_stats, grids.lidar_stats, grids.ground_removed, grids.target.len());
        let frame = FrameOutput {
            pair: *pair,
            radar_path: radar_path.to_path_buf(),
            lidar_path: lidar_path.to_path_buf(),
            grids,
        };
        sink.accept(frame).map_err(|e| VoxelizeError::Sink { index: pair.index, reason: e.to_string() })?;
        Ok(Outcome::Written(Box::new(stats)))
    }
}
