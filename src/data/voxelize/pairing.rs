//! Frame discovery and radar/LiDAR timestamp pairing.
//!
//! Frames are files named `<seconds>.<fraction>.bin|npy` (the fraction is
//! normally six digits of microseconds; up to nine digits are read as a
//! decimal fraction). Timestamps are kept as integer nanoseconds ([`Stamp`])
//! so that ties are decided exactly; [`Stamp::secs`] gives the float64 value.
//!
//! Rule (the original's, plus an optional maximum gap): the sensor with fewer
//! frames is the time axis (radar on equal counts); each of its frames takes
//! the other sensor's nearest frame, the later neighbour only if strictly
//! closer (on a tie the earlier frame wins; equal stamps resolve to the first
//! in time order, as `numpy.argmin` would). A frame of the other sensor may
//! serve several axis frames. Pairs whose gap exceeds `max_gap` are dropped
//! and counted. The remaining pairs are numbered 0, 1, ... in time order.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::VoxelizeError;

/// A timestamp in integer nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Stamp(pub i64);

impl Stamp {
    /// From whole seconds and microseconds.
    pub fn from_micros(secs: i64, micros: i64) -> Self {
        Stamp(secs * 1_000_000_000 + micros * 1_000)
    }

    /// Seconds as float64.
    pub fn secs(self) -> f64 {
        self.0 as f64 * 1e-9
    }

    /// The `<seconds>.<micros>` file stem (rounded down to microseconds).
    pub fn file_stem(self) -> String {
        let micros = self.0.div_euclid(1_000);
        format!("{}.{:06}", micros.div_euclid(1_000_000), micros.rem_euclid(1_000_000))
    }
}

/// Parses a `<seconds>.<fraction>` stem, or a file name with a `.bin`/`.npy`
/// extension; `None` if it does not match.
pub fn parse_stamp(name: &str) -> Option<Stamp> {
    let stem = name.strip_suffix(".bin").or_else(|| name.strip_suffix(".npy")).unwrap_or(name);
    let (secs, frac) = stem.split_once('.').unwrap_or((stem, ""));
    if secs.is_empty() || secs.len() > 12 || !secs.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let s: i64 = secs.parse().ok()?;
    let mut nanos: i64 = if frac.is_empty() { 0 } else { frac.parse().ok()? };
    for _ in frac.len()..9 {
        nanos *= 10;
    }
    Some(Stamp(s.checked_mul(1_000_000_000)?.checked_add(nanos)?))
}

/// A frame file and its timestamp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StampedFile {
    /// The file.
    pub path: PathBuf,
    /// Its timestamp.
    pub stamp: Stamp,
}

/// Lists a sensor directory: frames sorted by timestamp, and the `.bin`/`.npy`
/// files whose names are not timestamps (reported, not read). Other files are
/// ignored silently. An empty listing is [`VoxelizeError::NoFrames`].
pub fn list_frames(dir: &Path) -> Result<(Vec<StampedFile>, Vec<PathBuf>), VoxelizeError> {
    let mut frames = Vec::new();
    let mut unnamed = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| VoxelizeError::io(dir, e))? {
        let path = entry.map_err(|e| VoxelizeError::io(dir, e))?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else { continue };
        if !(name.ends_with(".bin") || name.ends_with(".npy")) || !path.is_file() {
            continue;
        }
        match parse_stamp(name) {
            Some(stamp) => frames.push(StampedFile { path, stamp }),
            None => unnamed.push(path),
        }
    }
    if frames.is_empty() {
        return Err(VoxelizeError::NoFrames { path: dir.to_path_buf() });
    }
    frames.sort_by(|a, b| a.stamp.cmp(&b.stamp).then_with(|| a.path.cmp(&b.path)));
    unnamed.sort();
    Ok((frames, unnamed))
}

/// Pairing options.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct PairingOptions {
    /// Largest accepted `|t_radar - t_lidar|` in seconds; `None` = no limit
    /// (the original's behaviour).
    pub max_gap: Option<f64>,
}

/// Which sensor provides the time axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Axis {
    /// The radar has fewer (or as many) frames.
    Radar,
    /// The LiDAR has fewer frames.
    Lidar,
}

/// One radar/LiDAR pair.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pair {
    /// Output frame number (0, 1, ... in time order, after gap drops).
    pub index: usize,
    /// Position in the radar input slice.
    pub radar: usize,
    /// Position in the LiDAR input slice.
    pub lidar: usize,
    /// Radar timestamp.
    pub radar_stamp: Stamp,
    /// LiDAR timestamp.
    pub lidar_stamp: Stamp,
}

impl Pair {
    /// `|t_radar - t_lidar|` in seconds.
    pub fn gap(&self) -> f64 {
        (self.radar_stamp.0 - self.lidar_stamp.0).abs() as f64 * 1e-9
    }
}

/// The result of pairing.
#[derive(Debug, Clone, PartialEq)]
pub struct Pairing {
    /// The time-axis sensor.
    pub axis: Axis,
    /// Pairs in time order.
    pub pairs: Vec<Pair>,
    /// Pairs dropped because their gap exceeded `max_gap`.
    pub dropped_gap: usize,
}

/// The first of a run of equal stamps ending at `i` (like numpy's `argmin`,
/// duplicates resolve to the first in time order).
fn first_equal(sorted: &[Stamp], mut i: usize) -> usize {
    while i > 0 && sorted[i - 1] == sorted[i] {
        i -= 1;
    }
    i
}

/// Pairs radar and LiDAR timestamps (inputs in any order; pair fields index
/// the input slices).
pub fn pair_frames(radar: &[Stamp], lidar: &[Stamp], opts: &PairingOptions) -> Pairing {
    let axis = if radar.len() <= lidar.len() { Axis::Radar } else { Axis::Lidar };
    let (ax, other) = match axis {
        Axis::Radar => (radar, lidar),
        Axis::Lidar => (lidar, radar),
    };
    let sorted = |s: &[Stamp]| {
        let mut idx: Vec<usize> = (0..s.len()).collect();
        idx.sort_by_key(|&i| (s[i], i));
        idx
    };
    let (ax_order, other_order) = (sorted(ax), sorted(other));
    let other_sorted: Vec<Stamp> = other_order.iter().map(|&i| other[i]).collect();
    let max_gap_ns = opts.max_gap.map(|g| (g * 1e9).round() as i64);
    let mut pairs = Vec::with_capacity(ax.len());
    let mut dropped_gap = 0;
    for &a in &ax_order {
        let t = ax[a];
        // First frame strictly later than t; the one before it is at or before t.
        let later = other_sorted.partition_point(|&s| s <= t);
        let pick = match (later.checked_sub(1), other_sorted.get(later)) {
            (None, None) => continue,
            (Some(e), None) => first_equal(&other_sorted, e),
            (None, Some(_)) => later,
            (Some(e), Some(&l)) => {
                if l.0 - t.0 < t.0 - other_sorted[e].0 {
                    later
                } else {
                    first_equal(&other_sorted, e)
                }
            }
        };
        let o = other_order[pick];
        if let Some(g) = max_gap_ns {
            if (other[o].0 - t.0).abs() > g {
                dropped_gap += 1;
                continue;
            }
        }
        let (r, l) = match axis {
            Axis::Radar => (a, o),
            Axis::Lidar => (o, a),
        };
        pairs.push(Pair { index: pairs.len(), radar: r, lidar: l, radar_stamp: radar[r], lidar_stamp: lidar[l] });
    }
    Pairing { axis, pairs, dropped_gap }
}
