//! A map against a reference map built from the same poses (the LiDAR's),
//! scored around the ego after each frame, per range band (horizontal
//! distance of a voxel centre from the sensor):
//! - obstacle recall: share of the reference's occupied voxels with an
//!   occupied voxel of the map within `tol` voxels (Chebyshev);
//! - obstacle precision: share of the map's occupied voxels with a reference
//!   occupied voxel within `tol`;
//! - false occupancy in free space: share of the voxels the reference holds
//!   free (observed, probability below 0.5) that the map holds occupied;
//! - DEM error: mean |height difference| over the columns both DEMs hold.
//!
//! Counts are summed over frames (and scenes) before the ratios.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::ray::Key;
use super::voxel_map::VoxelMap;

/// Sums of one range band.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct BandCounts {
    /// Reference occupied voxels.
    pub reference: u64,
    /// Of them, matched by the map.
    pub recalled: u64,
    /// The map's occupied voxels.
    pub occupied: u64,
    /// Of them, matched by the reference.
    pub precise: u64,
    /// Voxels the reference holds free.
    pub free: u64,
    /// Of them, occupied in the map.
    pub false_occupied: u64,
    /// Columns in both DEMs.
    pub columns: u64,
    /// Sum of |height difference| over them (m).
    pub height_error: f64,
}

impl BandCounts {
    fn add(&mut self, o: &BandCounts) {
        self.reference += o.reference;
        self.recalled += o.recalled;
        self.occupied += o.occupied;
        self.precise += o.precise;
        self.free += o.free;
        self.false_occupied += o.false_occupied;
        self.columns += o.columns;
        self.height_error += o.height_error;
    }

    fn ratio(a: u64, b: u64) -> Option<f64> {
        (b > 0).then(|| a as f64 / b as f64)
    }

    /// Obstacle recall.
    pub fn recall(&self) -> Option<f64> {
        Self::ratio(self.recalled, self.reference)
    }

    /// Obstacle precision.
    pub fn precision(&self) -> Option<f64> {
        Self::ratio(self.precise, self.occupied)
    }

    /// Harmonic mean of recall and precision (0 when both are 0).
    pub fn f1(&self) -> Option<f64> {
        let (r, p) = (self.recall()?, self.precision()?);
        Some(if r + p > 0.0 { 2.0 * r * p / (r + p) } else { 0.0 })
    }

    /// False occupancy in the reference's free space.
    pub fn false_free(&self) -> Option<f64> {
        Self::ratio(self.false_occupied, self.free)
    }

    /// Mean absolute DEM height difference (m).
    pub fn dem_error(&self) -> Option<f64> {
        (self.columns > 0).then(|| self.height_error / self.columns as f64)
    }
}

/// Scores pooled over frames, one entry per band plus the whole window last.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MapScore {
    /// Band edges (m): band `b` is `[edges[b], edges[b + 1])`.
    pub edges: Vec<f64>,
    /// Match tolerance (voxels).
    pub tol: i32,
    /// Per band, then the union of all bands.
    pub bands: Vec<BandCounts>,
}

impl MapScore {
    /// Empty sums for `edges` (increasing, at least two) and tolerance `tol`.
    pub fn new(edges: &[f64], tol: i32) -> MapScore {
        MapScore { edges: edges.to_vec(), tol, bands: vec![BandCounts::default(); edges.len()] }
    }

    /// Band labels, `0-20 m`, ..., then `all`.
    pub fn labels(&self) -> Vec<String> {
        let mut l: Vec<String> = self.edges.windows(2).map(|w| format!("{}-{} m", w[0], w[1])).collect();
        l.push("all".into());
        l
    }

    /// Adds another score's sums (same bands).
    pub fn merge(&mut self, o: &MapScore) {
        for (a, b) in self.bands.iter_mut().zip(&o.bands) {
            a.add(b);
        }
    }
}

fn near(set: &HashSet<Key>, k: Key, tol: i32) -> bool {
    if tol == 0 {
        return set.contains(&k);
    }
    (-tol..=tol)
        .any(|dx| (-tol..=tol).any(|dy| (-tol..=tol).any(|dz| set.contains(&[k[0] + dx, k[1] + dy, k[2] + dz]))))
}

/// Scores `map` against `reference` around the reference's ego now, adding
/// to `score`.
pub fn compare(map: &VoxelMap, reference: &VoxelMap, score: &mut MapScore) {
    let ego = reference.ego();
    let (edges, nb) = (&score.edges, score.edges.len() - 1);
    let band_of = |c: [f64; 3]| {
        let d = ((c[0] - ego[0]).powi(2) + (c[1] - ego[1]).powi(2)).sqrt();
        (d >= edges[0] && d < edges[nb]).then(|| edges.partition_point(|&e| e <= d) - 1)
    };
    let banded = |m: &VoxelMap| -> HashMap<Key, (usize, f64)> {
        let (rule, now) = (m.update_rule(), m.now());
        m.voxels().filter_map(|(k, c)| band_of(m.centre(k)).map(|b| (k, (b, rule.probability(&c, now))))).collect()
    };
    let (mine, theirs) = (banded(map), banded(reference));
    let occupied = |v: &HashMap<Key, (usize, f64)>, th: f64| -> HashSet<Key> {
        v.iter().filter(|(_, (_, p))| *p > th).map(|(k, _)| *k).collect()
    };
    let (my_occ, ref_occ) = (occupied(&mine, map.config().threshold), occupied(&theirs, reference.config().threshold));
    let mut add = |b: usize, f: &dyn Fn(&mut BandCounts)| {
        f(&mut score.bands[b]);
        f(&mut score.bands[nb]);
    };
    for k in &ref_occ {
        let hit = near(&my_occ, *k, score.tol);
        add(theirs[k].0, &|c| {
            c.reference += 1;
            c.recalled += u64::from(hit);
        });
    }
    for k in &my_occ {
        let hit = near(&ref_occ, *k, score.tol);
        add(mine[k].0, &|c| {
            c.occupied += 1;
            c.precise += u64::from(hit);
        });
    }
    for (k, &(b, p)) in &theirs {
        if p < 0.5 {
            let fp = my_occ.contains(k);
            add(b, &|c| {
                c.free += 1;
                c.false_occupied += u64::from(fp);
            });
        }
    }
    let voxel = map.config().voxel;
    for ((x, y), col) in map.dem().iter() {
        let centre = [(f64::from(x) + 0.5) * voxel, (f64::from(y) + 0.5) * voxel, 0.0];
        if let (Some(r), Some(b)) = (reference.dem().get(x, y), band_of(centre)) {
            let e = (col.mean - r.mean).abs();
            add(b, &|c| {
                c.columns += 1;
                c.height_error += e;
            });
        }
    }
}

/// The score as a markdown table: a row per band.
pub fn table(score: &MapScore, method: &str, reference: &str) -> String {
    let num = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.3}"));
    let mut s = format!(
        "map of {method} against the map of {reference} (same poses; match within {} voxel(s))\n\n\
         | band | reference voxels | map voxels | recall | precision | F1 | false occupied in free | DEM error (m) |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|\n",
        score.tol
    );
    for (label, b) in score.labels().iter().zip(&score.bands) {
        s += &format!(
            "| {label} | {} | {} | {} | {} | {} | {} | {} |\n",
            b.reference,
            b.occupied,
            num(b.recall()),
            num(b.precision()),
            num(b.f1()),
            num(b.false_free()),
            num(b.dem_error())
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::map::{MapConfig, Observation};

    #[test]
    fn a_map_scores_against_its_reference_by_band() {
        let cfg = MapConfig { voxel: 1.0, ..MapConfig::default() };
        let (mut a, mut r) = (VoxelMap::new(cfg).unwrap(), VoxelMap::new(cfg).unwrap());
        let o = [0.5, 0.5, 0.5];
        // reference: obstacles at x = 5 (band 0-10) and x = 15 (band 10-20)
        r.insert(&Observation {
            time: 0.0,
            origin: o,
            points: &[[5.5, 0.5, 0.5], [15.5, 0.5, 0.5]],
            probs: None,
            reliability: 1.0,
        })
        .unwrap();
        // map: the near one a voxel off, a false one at x = 3 inside the reference's free space
        a.insert(&Observation {
            time: 0.0,
            origin: o,
            points: &[[6.5, 0.5, 0.5], [3.5, 0.5, 0.5]],
            probs: None,
            reliability: 1.0,
        })
        .unwrap();
        let mut s = MapScore::new(&[0.0, 10.0, 20.0], 1);
        compare(&a, &r, &mut s);
        let (near, far, all) = (s.bands[0], s.bands[1], s.bands[2]);
        assert_eq!((near.reference, near.recalled, near.occupied, near.precise), (1, 1, 2, 1));
        assert_eq!((far.reference, far.recalled, far.occupied), (1, 0, 0));
        assert_eq!(all.recall(), Some(0.5));
        // the reference's free voxels: x 0..=14 except 5 -> 14, of which x 3 and 6 are occupied in the map
        assert_eq!((all.free, all.false_occupied), (14, 2));
        assert_eq!(all.dem_error(), None); // no column in both
        assert_eq!(s.labels(), ["0-10 m", "10-20 m", "all"]);
        // one column, 2 m apart
        let (mut a, mut r) = (VoxelMap::new(cfg).unwrap(), VoxelMap::new(cfg).unwrap());
        r.insert(&Observation { time: 0.0, origin: o, points: &[[2.5, 0.5, 3.5]], probs: None, reliability: 1.0 })
            .unwrap();
        a.insert(&Observation { time: 0.0, origin: o, points: &[[2.5, 0.5, 1.5]], probs: None, reliability: 1.0 })
            .unwrap();
        let mut s = MapScore::new(&[0.0, 10.0], 0);
        compare(&a, &r, &mut s);
        assert_eq!(s.bands[1].dem_error(), Some(2.0));
    }
}
