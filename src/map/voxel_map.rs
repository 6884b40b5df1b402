//! The streaming map: frames of occupied voxels (with probabilities) and the
//! sensor's position go in, one frame at a time; hashed blocks of evidence,
//! a DEM and the queries come out.
//!
//! Insertion of a frame (OctoMap's `insertPointCloud` semantics, plus
//! probabilities, reliability and decay):
//! 1. the occupied set: the voxels of the endpoints, each observed once with
//!    the largest confidence `reliability * p` among its endpoints; an
//!    endpoint farther than `max_range` is not occupied and its ray stops at
//!    `max_range`;
//! 2. the free set: every voxel a ray from the sensor to an endpoint crosses,
//!    the endpoint's own voxel excluded, less the occupied set (occupied
//!    wins), each observed once;
//! 3. the updates of [`super::evidence`], at the frame's time;
//! 4. the sliding window: blocks (and DEM columns) whose centre lies farther
//!    than `window` from the sensor, horizontally, are dropped.
//!
//! Rays are traced and applied in parallel (rayon, the caller's pool; the
//! voxels are atomics, see [`super::blocks`]): each free voxel is updated
//! once a frame by whichever ray claims it first, with the same update, so
//! the result does not depend on the thread count.

use std::time::Instant;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use super::blocks::{block_key, block_of, in_range, local, unpack, voxel_of, Block, Blocks, EDGE};
use super::dem::Dem;
use super::evidence::{Cell, Evidence, Observed, Update};
use super::ray::{centre, key, Dda, Key};
use super::MapError;

/// The map's settings (saved beside a map; runtime wiring is not).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MapConfig {
    /// Voxel edge (m).
    pub voxel: f64,
    /// Evidence model and its parameters.
    pub evidence: Evidence,
    /// Time constant of the decay towards unknown (s); `None`: none.
    pub decay_s: Option<f64>,
    /// Rays longer than this are cut (m); `None`: no limit.
    pub max_range: Option<f64>,
    /// Horizontal radius of the sliding window around the sensor (m);
    /// `None`: keep everything.
    pub window: Option<f64>,
    /// Probability above which a voxel counts as occupied in the products.
    pub threshold: f64,
}

impl Default for MapConfig {
    fn default() -> Self {
        MapConfig {
            voxel: 0.2,
            evidence: Evidence::default(),
            decay_s: None,
            max_range: None,
            window: Some(200.0),
            threshold: 0.5,
        }
    }
}

impl MapConfig {
    /// Checks every value (the evidence model's too).
    pub fn validate(&self) -> Result<(), MapError> {
        let bad = |what: String| Err(MapError::Config(what));
        if !(self.voxel.is_finite() && self.voxel > 0.0) {
            return bad(format!("voxel {}: need a positive edge in metres", self.voxel));
        }
        for (name, v) in [("max_range", self.max_range), ("window", self.window)] {
            if let Some(v) = v.filter(|v| !(v.is_finite() && *v > 0.0)) {
                return bad(format!("{name} {v}: need a positive distance in metres"));
            }
        }
        if !(self.threshold > 0.0 && self.threshold < 1.0) {
            return bad(format!("threshold {}: need a probability in (0, 1)", self.threshold));
        }
        Update::new(self.evidence, self.decay_s).map(|_| ())
    }
}

/// One frame's input, in the world frame.
#[derive(Debug, Clone, Copy)]
pub struct Observation<'a> {
    /// Seconds (any origin; frames must not go back in time).
    pub time: f64,
    /// Sensor position.
    pub origin: [f64; 3],
    /// Occupied points (e.g. voxel centres of a frame, in the world).
    pub points: &'a [[f64; 3]],
    /// Occupancy probability of each point; `None`: all 1.
    pub probs: Option<&'a [f32]>,
    /// Trust in the source, in (0, 1].
    pub reliability: f64,
}

/// What one insertion did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct InsertStats {
    /// Points given.
    pub points: usize,
    /// Voxels observed occupied.
    pub occupied: usize,
    /// Voxels observed free.
    pub free: usize,
    /// Voxels the rays crossed (before removing repeats).
    pub traversed: usize,
    /// Blocks evicted by the window.
    pub evicted: usize,
    /// Wall time (s).
    pub seconds: f64,
}

impl InsertStats {
    /// Voxel updates (occupied + free).
    pub fn updates(&self) -> usize {
        self.occupied + self.free
    }
}

/// Fewest rays a parallel task traces.
const CHUNK: usize = 256;

/// A streaming probabilistic voxel map.
#[derive(Debug, Clone)]
pub struct VoxelMap {
    cfg: MapConfig,
    update: Update,
    blocks: Blocks,
    dem: Dem,
    /// Time of the first frame (s) and of the last (s since the first).
    start: Option<f64>,
    now: f32,
    frame: u32,
    ego: [f64; 3],
}

impl VoxelMap {
    /// An empty map with `cfg`, after [`MapConfig::validate`].
    pub fn new(cfg: MapConfig) -> Result<VoxelMap, MapError> {
        cfg.validate()?;
        let update = Update::new(cfg.evidence, cfg.decay_s)?;
        let dem = Dem::new(cfg.voxel);
        Ok(VoxelMap { cfg, update, blocks: Blocks::default(), dem, start: None, now: 0.0, frame: 0, ego: [0.0; 3] })
    }

    /// The settings.
    pub fn config(&self) -> &MapConfig {
        &self.cfg
    }

    /// The update rule.
    pub fn update_rule(&self) -> &Update {
        &self.update
    }

    /// The blocks.
    pub fn blocks(&self) -> &Blocks {
        &self.blocks
    }

    /// The elevation map.
    pub fn dem(&self) -> &Dem {
        &self.dem
    }

    /// Frames inserted.
    pub fn frames(&self) -> u32 {
        self.frame
    }

    /// The last frame's time (s since the first).
    pub fn now(&self) -> f32 {
        self.now
    }

    /// The last sensor position.
    pub fn ego(&self) -> [f64; 3] {
        self.ego
    }

    /// Heap bytes held (blocks and DEM).
    pub fn bytes(&self) -> usize {
        self.blocks.bytes() + self.dem.bytes()
    }

    /// The cell of voxel `k`, if observed.
    pub fn cell(&self, k: Key) -> Option<Cell> {
        self.blocks.cell(k).filter(Cell::known)
    }

    /// The occupancy probability of voxel `k` now (0.5 if unknown).
    pub fn probability(&self, k: Key) -> f64 {
        self.cell(k).map_or(0.5, |c| self.update.probability(&c, self.now))
    }

    /// Every observed voxel with its cell.
    pub fn voxels(&self) -> impl Iterator<Item = (Key, Cell)> + '_ {
        self.blocks.iter().flat_map(|(b, block)| {
            block
                .iter()
                .enumerate()
                .map(|(i, s)| (i, s.load()))
                .filter(|(_, c)| c.known())
                .map(move |(i, c)| (voxel_of(b, i), c))
        })
    }

    /// The voxels whose probability now exceeds the threshold, with it.
    pub fn occupied(&self) -> Vec<(Key, f64)> {
        let mut v: Vec<(Key, f64)> = self
            .voxels()
            .map(|(k, c)| (k, self.update.probability(&c, self.now)))
            .filter(|(_, p)| *p > self.cfg.threshold)
            .collect();
        v.sort_unstable_by_key(|(k, _)| *k);
        v
    }

    /// Checks a frame's input; its time since the map's first frame.
    fn check(&self, obs: &Observation) -> Result<(f64, f32), MapError> {
        if let Some(p) = obs.probs.filter(|p| p.len() != obs.points.len()) {
            return Err(MapError::Input(format!("{} probabilities for {} points", p.len(), obs.points.len())));
        }
        if !(obs.reliability > 0.0 && obs.reliability <= 1.0) {
            return Err(MapError::Input(format!("reliability {}: need a value in (0, 1]", obs.reliability)));
        }
        if !(obs.time.is_finite() && obs.origin.iter().all(|v| v.is_finite())) {
            return Err(MapError::Input(format!("time {} / origin {:?} not finite", obs.time, obs.origin)));
        }
        let start = self.start.unwrap_or(obs.time);
        let now = (obs.time - start) as f32;
        if now < self.now {
            return Err(MapError::Input(format!(
                "frame at {} s is earlier than the last one ({} s)",
                obs.time,
                f64::from(self.now) + start
            )));
        }
        let voxel = self.cfg.voxel;
        if !in_range(key(obs.origin, voxel)) {
            return Err(MapError::Input(format!("origin {:?} beyond the map's reach", obs.origin)));
        }
        if let Some(i) = obs.points.iter().position(|p| !(p.iter().all(|v| v.is_finite()) && in_range(key(*p, voxel))))
        {
            return Err(MapError::Input(format!(
                "point {i} {:?} is not finite or beyond the map's reach",
                obs.points[i]
            )));
        }
        Ok((start, now))
    }

    /// Inserts one frame (see the module docs).
    pub fn insert(&mut self, obs: &Observation) -> Result<InsertStats, MapError> {
        let t0 = Instant::now();
        let (start, now) = self.check(obs)?;
        let voxel = self.cfg.voxel;
        self.start = Some(start);
        self.frame += 1;
        self.now = now;
        self.ego = obs.origin;
        let (frame, o) = (self.frame, obs.origin);
        // endpoints: the occupied ones (with confidence) and each ray's end
        let mut hits: Vec<(Key, f64)> = Vec::with_capacity(obs.points.len());
        let ends: Vec<[f64; 3]> = (obs.points.iter().enumerate())
            .map(|(i, &p)| {
                let d = [p[0] - o[0], p[1] - o[1], p[2] - o[2]];
                let len = (d[0] * d[0] + d[1] * d[1] + d[2] * d[2]).sqrt();
                match self.cfg.max_range {
                    Some(r) if len > r => std::array::from_fn(|k| o[k] + d[k] * r / len),
                    _ => {
                        let prob = obs.probs.map_or(1.0, |p| f64::from(p[i]).clamp(0.0, 1.0));
                        hits.push((key(p, voxel), obs.reliability * prob));
                        p
                    }
                }
            })
            .collect();
        // one hit per voxel, the largest confidence
        hits.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(b.1.total_cmp(&a.1)));
        hits.dedup_by_key(|h| h.0);
        let mut stats = InsertStats { points: obs.points.len(), occupied: hits.len(), ..InsertStats::default() };
        let rule = self.update;
        self.apply_hits(&hits, now, frame);
        self.dem.observe(&hits, voxel);
        // the rays, on every thread; a ray that meets a block not made yet
        // stops there, its blocks are made (walked at block resolution) and
        // it is traced again (the voxels it already updated skip)
        let miss = rule.observation(false, obs.reliability);
        let (free, traversed) = (AtomicUsize::new(0), AtomicUsize::new(0));
        let cast = |m: &VoxelMap, i: usize| m.cast(o, ends[i], miss, now, frame, &free, &traversed).map(|b| (i, b));
        let mut pending: Vec<(usize, u64)> =
            (0..ends.len()).into_par_iter().with_min_len(CHUNK).filter_map(|i| cast(self, i)).collect();
        while !pending.is_empty() {
            let side = voxel * f64::from(EDGE);
            let mut new: Vec<u64> = (pending.par_iter())
                .flat_map_iter(|&(i, b)| {
                    Dda::new(o, ends[i], side).chain([key(ends[i], side)]).map(block_key).chain([b])
                })
                .collect();
            new.par_sort_unstable();
            new.dedup();
            self.blocks.reserve(new.len());
            for b in new {
                self.blocks.get_or_insert(b);
            }
            pending = pending.into_par_iter().with_min_len(CHUNK / 4).filter_map(|(i, _)| cast(self, i)).collect();
        }
        stats.free = free.into_inner();
        stats.traversed = traversed.into_inner();
        if let Some(w) = self.cfg.window {
            stats.evicted = self.evict(w);
        }
        stats.seconds = t0.elapsed().as_secs_f64();
        Ok(stats)
    }

    /// One hit per voxel of `hits` (sorted by key), block by block.
    fn apply_hits(&mut self, hits: &[(Key, f64)], t: f32, frame: u32) {
        let rule = self.update;
        let mut hits = hits.iter().peekable();
        while let Some(&&(k, _)) = hits.peek() {
            let b = block_of(k);
            let block = self.blocks.get_or_insert(b);
            while let Some(&(k, c)) = hits.next_if(|h| block_of(h.0) == b) {
                let slot = &block[local(k)];
                let mut cell = slot.load();
                rule.apply(&mut cell, rule.observation(true, c), t, frame);
                slot.store(cell);
            }
        }
    }

    /// Traces the free ray `o -> e`, claiming each voxel not yet updated in
    /// this frame and applying `miss` to it; stops at the first block that
    /// does not exist yet and returns its key (the rest untouched), else adds
    /// its steps to `traversed`.
    #[allow(clippy::too_many_arguments)]
    fn cast(
        &self,
        o: [f64; 3],
        e: [f64; 3],
        miss: Observed,
        t: f32,
        frame: u32,
        free: &AtomicUsize,
        traversed: &AtomicUsize,
    ) -> Option<u64> {
        let (mut cached, mut freed, mut steps): (Option<(u64, &Block)>, usize, usize) = (None, 0, 0);
        let mut missing = None;
        for k in Dda::new(o, e, self.cfg.voxel) {
            let b = block_of(k);
            let block = match cached {
                Some((cb, blk)) if cb == b => blk,
                _ => match self.blocks.block(b) {
                    Some(blk) => {
                        cached = Some((b, blk));
                        blk
                    }
                    None => {
                        missing = Some(b);
                        break;
                    }
                },
            };
            steps += 1;
            let slot = &block[local(k)];
            if let Some(mut cell) = slot.claim(frame) {
                self.update.apply(&mut cell, miss, t, frame);
                slot.store(cell);
                freed += 1;
            }
        }
        free.fetch_add(freed, Relaxed);
        if missing.is_none() {
            traversed.fetch_add(steps, Relaxed);
        }
        missing
    }

    /// Drops blocks and DEM columns beyond `radius` (horizontal) of the ego.
    fn evict(&mut self, radius: f64) -> usize {
        let half = f64::from(EDGE) * self.cfg.voxel / 2.0;
        let (ex, ey, side) = (self.ego[0], self.ego[1], f64::from(EDGE) * self.cfg.voxel);
        let near = |bx: i32, by: i32| {
            let (cx, cy) = (f64::from(bx) * side + half, f64::from(by) * side + half);
            (cx - ex).powi(2) + (cy - ey).powi(2) <= radius * radius
        };
        self.dem.retain(|x, y| near(x.div_euclid(EDGE), y.div_euclid(EDGE)));
        self.blocks.retain(|b| {
            let [bx, by, _] = unpack(b);
            near(bx, by)
        })
    }

    /// The centre of voxel `k` (m).
    pub fn centre(&self, k: Key) -> [f64; 3] {
        centre(k, self.cfg.voxel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs<'a>(t: f64, o: [f64; 3], pts: &'a [[f64; 3]]) -> Observation<'a> {
        Observation { time: t, origin: o, points: pts, probs: None, reliability: 1.0 }
    }

    #[test]
    fn a_ray_frees_its_way_and_occupies_its_end() {
        let mut m = VoxelMap::new(MapConfig { voxel: 1.0, ..MapConfig::default() }).unwrap();
        let s = m.insert(&obs(0.0, [0.5, 0.5, 0.5], &[[4.5, 0.5, 0.5], [2.5, 0.5, 0.5]])).unwrap();
        // occupied 2 and 4; free 0, 1, 3 (2 is occupied, once)
        assert_eq!((s.occupied, s.free, s.traversed), (2, 3, 6));
        assert!((m.probability([4, 0, 0]) - 0.7).abs() < 1e-6 && (m.probability([3, 0, 0]) - 0.4).abs() < 1e-6);
        assert_eq!(m.occupied().iter().map(|v| v.0).collect::<Vec<_>>(), vec![[2, 0, 0], [4, 0, 0]]);
        assert!(m.insert(&obs(-1.0, [0.0; 3], &[])).unwrap_err().to_string().contains("earlier"));
        let probs = [0.5f32];
        let bad = Observation { probs: Some(&probs), ..obs(1.0, [0.0; 3], &[]) };
        assert!(m.insert(&bad).unwrap_err().to_string().contains("1 probabilities for 0 points"));
        assert!(m.insert(&obs(1.0, [0.0; 3], &[[f64::NAN, 0.0, 0.0]])).is_err());
    }

    #[test]
    fn the_window_keeps_memory_bounded_on_an_endless_drive() {
        let cfg = MapConfig { voxel: 0.5, window: Some(30.0), ..MapConfig::default() };
        let mut m = VoxelMap::new(cfg).unwrap();
        // a wall 20 m ahead and 10 m to each side, driving +x at 10 m/s, 10 Hz
        let (mut peak_early, mut peak_late) = (0, 0);
        for f in 0..10_000 {
            let x = f as f64;
            let pts: Vec<[f64; 3]> = (0..40).map(|i| [x + 20.0, -10.0 + 0.5 * i as f64, 1.2]).collect();
            m.insert(&obs(f as f64 * 0.1, [x, 0.3, 1.0], &pts)).unwrap();
            let b = m.bytes();
            if f < 1_000 {
                peak_early = peak_early.max(b);
            } else {
                peak_late = peak_late.max(b);
            }
        }
        // blocks of 4 m: at most the ones within 30 m of the ego (plus one ring)
        let bound = std::f64::consts::PI * (30.0f64 / 4.0 + 1.5).powi(2) * 2.0;
        assert!((m.blocks().len() as f64) < bound, "{} blocks", m.blocks().len());
        assert!(peak_late <= peak_early * 5 / 4, "memory grew: {peak_early} -> {peak_late} bytes");
        assert!(m.blocks().iter().all(|(b, _)| (f64::from(unpack(b)[0]) * 4.0 - 9_999.0).abs() < 40.0));
    }
}
