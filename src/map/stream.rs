//! A scene streamed into a map frame by frame, optionally beside a
//! reference map (same poses, same settings, fed by the LiDAR) that scores
//! it after every frame ([`super::compare()`]); per-frame latency and memory
//! are recorded.

use serde::Serialize;

use super::compare::{compare, MapScore};
use super::source::SceneFrames;
use super::voxel_map::{InsertStats, MapConfig, Observation, VoxelMap};
use super::MapError;

/// One frame of a streamed scene.
#[derive(Debug, Clone, Serialize)]
pub struct FrameLog {
    /// Frame stem.
    pub frame: String,
    /// The insertion.
    pub stats: InsertStats,
    /// Seconds reading the frame (not part of the insertion).
    pub read_s: f64,
    /// Blocks held after it.
    pub blocks: usize,
    /// Heap bytes held after it.
    pub bytes: usize,
}

/// A streamed scene: its map, the reference's (if any) and the frame logs.
#[derive(Debug)]
pub struct SceneMap {
    /// The map.
    pub map: VoxelMap,
    /// The reference map, when scored.
    pub reference: Option<VoxelMap>,
    /// One entry per frame.
    pub frames: Vec<FrameLog>,
}

/// Inserts every frame of `frames` into a new map of `cfg` with trust
/// `reliability`; with `reference`, builds the reference map in lockstep
/// (reliability 1) and adds the comparison after each frame to `score`.
/// `tick` is called after each frame.
pub fn stream_scene(
    frames: &SceneFrames,
    cfg: MapConfig,
    reliability: f64,
    reference: Option<(&SceneFrames, &mut MapScore)>,
    mut tick: impl FnMut(&FrameLog),
) -> Result<SceneMap, MapError> {
    let mut map = VoxelMap::new(cfg)?;
    let (mut ref_map, mut score, ref_frames) = match reference {
        Some((r, s)) => {
            if r.len() != frames.len() {
                return Err(MapError::Input(format!("reference has {} frames, the map {}", r.len(), frames.len())));
            }
            (Some(VoxelMap::new(cfg)?), Some(s), Some(r))
        }
        None => (None, None, None),
    };
    let mut logs = Vec::with_capacity(frames.len());
    for j in 0..frames.len() {
        let t0 = std::time::Instant::now();
        let f = frames.frame(j)?;
        let read_s = t0.elapsed().as_secs_f64();
        let obs =
            Observation { time: f.pose.stamp, origin: f.pose.t, points: &f.points, probs: Some(&f.probs), reliability };
        let stats = map.insert(&obs)?;
        if let (Some(rm), Some(rf), Some(s)) = (ref_map.as_mut(), ref_frames, score.as_deref_mut()) {
            let g = rf.frame(j)?;
            let obs =
                Observation { time: g.pose.stamp, origin: g.pose.t, points: &g.points, probs: None, reliability: 1.0 };
            rm.insert(&obs)?;
            compare(&map, rm, s);
        }
        let log = FrameLog { frame: f.stem, stats, read_s, blocks: map.blocks().len(), bytes: map.bytes() };
        tick(&log);
        logs.push(log);
    }
    Ok(SceneMap { map, reference: ref_map, frames: logs })
}
