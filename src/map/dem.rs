//! The 2.5D elevation map: per world column `(ix, iy)`, the mean and
//! variance of the top-surface height over the frames that saw it. A frame
//! observes a column's top surface at the centre height of its highest
//! occupied voxel there, weighted by that voxel's confidence (weighted
//! Welford / West 1979 running statistics, so the map never stores the
//! history).

use std::collections::HashMap;
use std::hash::BuildHasherDefault;

use super::blocks::KeyHasher;
use super::ray::Key;

/// One column's statistics.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Column {
    /// Sum of the observation weights.
    pub weight: f64,
    /// Weighted mean height (m).
    pub mean: f64,
    /// Weighted sum of squared deviations.
    m2: f64,
    /// Frames that observed the column.
    pub frames: u32,
}

impl Column {
    /// Weighted variance of the height (m^2).
    pub fn variance(&self) -> f64 {
        if self.weight > 0.0 {
            (self.m2 / self.weight).max(0.0) // rounding can leave -1e-16
        } else {
            0.0
        }
    }

    fn observe(&mut self, h: f64, w: f64) {
        self.weight += w;
        let d = h - self.mean;
        self.mean += d * w / self.weight;
        self.m2 += w * d * (h - self.mean);
        self.frames += 1;
    }
}

fn pack(x: i32, y: i32) -> u64 {
    (u64::from(x as u32) << 32) | u64::from(y as u32)
}

fn unpack(c: u64) -> (i32, i32) {
    ((c >> 32) as u32 as i32, c as u32 as i32)
}

/// The elevation map.
#[derive(Debug, Clone, Default)]
pub struct Dem {
    voxel: f64,
    cols: HashMap<u64, Column, BuildHasherDefault<KeyHasher>>,
}

impl Dem {
    /// An empty map of `voxel`-metre columns.
    pub fn new(voxel: f64) -> Dem {
        Dem { voxel, cols: HashMap::default() }
    }

    /// Adds one frame's occupied voxels `(key, confidence)`, sorted by key
    /// (so the last of each column is its highest); zero confidence is no
    /// observation.
    pub fn observe(&mut self, hits: &[(Key, f64)], voxel: f64) {
        for (i, &(k, c)) in hits.iter().enumerate() {
            let top = hits.get(i + 1).is_none_or(|n| n.0[0] != k[0] || n.0[1] != k[1]);
            if top && c > 0.0 {
                let h = (f64::from(k[2]) + 0.5) * voxel;
                self.cols.entry(pack(k[0], k[1])).or_default().observe(h, c);
            }
        }
    }

    /// The column `(ix, iy)`, if observed.
    pub fn get(&self, ix: i32, iy: i32) -> Option<&Column> {
        self.cols.get(&pack(ix, iy))
    }

    /// Every observed column `((ix, iy), column)`, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = ((i32, i32), &Column)> {
        self.cols.iter().map(|(&c, col)| (unpack(c), col))
    }

    /// Columns observed.
    pub fn len(&self) -> usize {
        self.cols.len()
    }

    /// Whether no column was observed.
    pub fn is_empty(&self) -> bool {
        self.cols.is_empty()
    }

    /// The column edge (m).
    pub fn voxel(&self) -> f64 {
        self.voxel
    }

    /// Heap bytes held.
    pub fn bytes(&self) -> usize {
        self.cols.capacity() * (std::mem::size_of::<(u64, Column)>() + 1)
    }

    /// Keeps the columns `keep(ix, iy)` accepts.
    pub fn retain(&mut self, mut keep: impl FnMut(i32, i32) -> bool) {
        self.cols.retain(|&c, _| {
            let (x, y) = unpack(c);
            keep(x, y)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_keep_the_weighted_mean_and_variance_of_their_tops() {
        let mut d = Dem::new(0.5);
        // frame 1: column (0, 0) has voxels at z 1 and 3 (top 3 -> 1.75 m); (-1, 2) top z 0
        d.observe(&[([-1, 2, 0], 1.0), ([0, 0, 1], 1.0), ([0, 0, 3], 0.5)], 0.5);
        // frame 2: (0, 0) top z 5 (2.75 m) with weight 1.5
        d.observe(&[([0, 0, 5], 1.5)], 0.5);
        let c = d.get(0, 0).unwrap();
        let (h, w): ([f64; 2], [f64; 2]) = ([1.75, 2.75], [0.5, 1.5]);
        let mean = (h[0] * w[0] + h[1] * w[1]) / 2.0;
        let var = (w[0] * (h[0] - mean).powi(2) + w[1] * (h[1] - mean).powi(2)) / 2.0;
        assert!((c.mean - mean).abs() < 1e-12 && (c.variance() - var).abs() < 1e-12 && c.frames == 2);
        assert_eq!(d.get(-1, 2).unwrap().mean, 0.25);
        d.retain(|x, _| x >= 0);
        assert_eq!(d.len(), 1);
    }
}
