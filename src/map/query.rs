//! Proximity queries (as NanoMap's): the distance from a point, or from a
//! segment of a planned path, to the nearest voxel the map holds occupied
//! (probability above the threshold now), with how sure the answer is.

use super::blocks::{unpack, voxel_of, EDGE};
use super::ray::{key, traverse, Key};
use super::voxel_map::VoxelMap;

/// The nearest occupied voxel.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Nearest {
    /// Distance to its centre (m).
    pub distance: f64,
    /// The voxel.
    pub voxel: Key,
    /// Its occupancy probability.
    pub probability: f64,
}

/// The answer for a segment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Clearance {
    /// The nearest occupied voxel within the search radius, if any.
    pub nearest: Option<Nearest>,
    /// Share of the voxels the segment crosses (both ends included) that
    /// were ever observed: the answer's confidence (unknown space may hide
    /// obstacles).
    pub known: f64,
}

fn dist2(a: [f64; 3], b: [f64; 3]) -> f64 {
    (0..3).map(|k| (a[k] - b[k]).powi(2)).sum()
}

/// The point of segment `a -> b` nearest to `p`.
fn closest_on_segment(p: [f64; 3], a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    let d: [f64; 3] = std::array::from_fn(|k| b[k] - a[k]);
    let len2 = dist2(a, b);
    let t = if len2 > 0.0 { ((0..3).map(|k| (p[k] - a[k]) * d[k]).sum::<f64>() / len2).clamp(0.0, 1.0) } else { 0.0 };
    std::array::from_fn(|k| a[k] + t * d[k])
}

impl VoxelMap {
    /// The occupied voxel nearest to the segment `a -> b` (a point when `a
    /// == b`) within `max_dist`: blocks are visited in order of a lower
    /// bound on their distance and the search stops once that bound passes
    /// the best distance found.
    fn nearest_to_segment(&self, a: [f64; 3], b: [f64; 3], max_dist: f64) -> Option<Nearest> {
        let side = f64::from(EDGE) * self.config().voxel;
        let radius = side * 3f64.sqrt() / 2.0;
        let mut cands: Vec<(f64, u64)> = (self.blocks().iter())
            .filter_map(|(bk, _)| {
                let c = unpack(bk).map(|v| (f64::from(v) + 0.5) * side);
                let bound = dist2(c, closest_on_segment(c, a, b)).sqrt() - radius;
                (bound <= max_dist).then_some((bound.max(0.0), bk))
            })
            .collect();
        cands.sort_unstable_by(|x, y| x.0.total_cmp(&y.0));
        let (rule, now, th) = (self.update_rule(), self.now(), self.config().threshold);
        let mut best: Option<Nearest> = None;
        for (bound, bk) in cands {
            if best.is_some_and(|n| n.distance < bound) {
                break;
            }
            let Some(block) = self.blocks().block(bk) else { continue };
            for (i, cell) in block.iter().enumerate().map(|(i, s)| (i, s.load())).filter(|(_, c)| c.known()) {
                let p = rule.probability(&cell, now);
                if p <= th {
                    continue;
                }
                let k = voxel_of(bk, i);
                let c = self.centre(k);
                let d = dist2(c, closest_on_segment(c, a, b)).sqrt();
                if d <= max_dist && best.is_none_or(|n| d < n.distance || (d == n.distance && k < n.voxel)) {
                    best = Some(Nearest { distance: d, voxel: k, probability: p });
                }
            }
        }
        best
    }

    /// The occupied voxel nearest to `p` within `max_dist` (m).
    pub fn nearest(&self, p: [f64; 3], max_dist: f64) -> Option<Nearest> {
        self.nearest_to_segment(p, p, max_dist)
    }

    /// The occupied voxel nearest to the segment `a -> b` within `max_dist`,
    /// and the share of the segment's voxels ever observed.
    pub fn clearance(&self, a: [f64; 3], b: [f64; 3], max_dist: f64) -> Clearance {
        let (mut seen, mut all) = (0usize, 0usize);
        let mut count = |k: Key| {
            all += 1;
            seen += usize::from(self.cell(k).is_some());
        };
        traverse(a, b, self.config().voxel, &mut count);
        count(key(b, self.config().voxel));
        Clearance { nearest: self.nearest_to_segment(a, b, max_dist), known: seen as f64 / all as f64 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::map::{MapConfig, Observation};
    use rand::{Rng, SeedableRng};

    #[test]
    fn queries_equal_brute_force() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let mut m = VoxelMap::new(MapConfig { voxel: 0.5, ..MapConfig::default() }).unwrap();
        for f in 0..3 {
            let pts: Vec<[f64; 3]> = (0..300).map(|_| std::array::from_fn(|_| rng.random_range(-15.0..15.0))).collect();
            let probs: Vec<f32> = (0..300).map(|_| rng.random_range(0.0..1.0)).collect();
            let o = [0.1 * f as f64, 0.2, 0.3];
            m.insert(&Observation { time: f as f64, origin: o, points: &pts, probs: Some(&probs), reliability: 0.9 })
                .unwrap();
        }
        let occ = m.occupied();
        assert!(occ.len() > 50 && occ.len() < 900, "{}", occ.len());
        for q in 0..60 {
            let a: [f64; 3] = std::array::from_fn(|_| rng.random_range(-18.0..18.0));
            let b = if q % 2 == 0 { a } else { std::array::from_fn(|_| rng.random_range(-18.0..18.0)) };
            let max = [1.0, 4.0, 100.0][q % 3];
            let want = (occ.iter())
                .map(|&(k, p)| {
                    let c = m.centre(k);
                    (dist2(c, closest_on_segment(c, a, b)).sqrt(), k, p)
                })
                .filter(|x| x.0 <= max)
                .min_by(|x, y| x.0.total_cmp(&y.0).then(x.1.cmp(&y.1)));
            let got = m.clearance(a, b, max);
            match (got.nearest, want) {
                (None, None) => {}
                (Some(n), Some((d, k, p))) => {
                    assert_eq!(n.voxel, k, "query {q}");
                    assert!((n.distance - d).abs() < 1e-12 && (n.probability - p).abs() < 1e-12);
                }
                other => panic!("query {q}: {other:?}"),
            }
            assert!((0.0..=1.0).contains(&got.known));
        }
        // the sensor's own voxel was crossed by every ray: known
        assert_eq!(m.clearance([0.2, 0.2, 0.3], [0.2, 0.2, 0.3], 0.1).known, 1.0);
    }
}
