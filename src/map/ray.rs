//! Voxel keys of world points and the voxels a ray crosses (3D DDA,
//! Amanatides & Woo 1987).

/// A voxel index in the world: `floor(p / voxel)` per axis.
pub type Key = [i32; 3];

/// The voxel holding world point `p` on a grid of edge `voxel`.
pub fn key(p: [f64; 3], voxel: f64) -> Key {
    p.map(|x| (x / voxel).floor() as i32)
}

/// The centre of voxel `k`.
pub fn centre(k: Key, voxel: f64) -> [f64; 3] {
    k.map(|i| (f64::from(i) + 0.5) * voxel)
}

/// The voxels a segment crosses, one step at a time: from `from`'s voxel up
/// to but excluding `to`'s (none when both share one), the free space of a
/// ray ending on an occupied voxel, as OctoMap's `computeRayKeys`. It takes
/// exactly the L1 distance between the two keys in steps, so it ends even
/// where rounding meets a corner.
#[derive(Debug, Clone)]
pub struct Dda {
    cur: Key,
    left: u32,
    step: [i32; 3],
    t_max: [f64; 3],
    t_delta: [f64; 3],
}

impl Dda {
    /// The walk along `from -> to` on a grid of edge `voxel`.
    pub fn new(from: [f64; 3], to: [f64; 3], voxel: f64) -> Dda {
        let (cur, end) = (key(from, voxel), key(to, voxel));
        let left = (0..3).map(|k| end[k].abs_diff(cur[k])).sum();
        let (mut step, mut t_max, mut t_delta) = ([0i32; 3], [f64::INFINITY; 3], [f64::INFINITY; 3]);
        for k in 0..3 {
            let d = to[k] - from[k];
            if end[k] != cur[k] && d != 0.0 {
                step[k] = if d > 0.0 { 1 } else { -1 };
                let boundary = f64::from(cur[k] + i32::from(d > 0.0)) * voxel;
                t_max[k] = (boundary - from[k]) / d;
                t_delta[k] = voxel / d.abs();
            }
        }
        Dda { cur, left, step, t_max, t_delta }
    }
}

impl Iterator for Dda {
    type Item = Key;

    #[inline]
    fn next(&mut self) -> Option<Key> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let out = self.cur;
        let t = &self.t_max;
        let k = if t[0] < t[1] {
            if t[0] < t[2] {
                0
            } else {
                2
            }
        } else if t[1] < t[2] {
            1
        } else {
            2
        };
        self.cur[k] += self.step[k];
        self.t_max[k] += self.t_delta[k];
        Some(out)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left as usize, Some(self.left as usize))
    }
}

/// Calls `visit` on every voxel of [`Dda`]`::new(from, to, voxel)`, in order.
pub fn traverse(from: [f64; 3], to: [f64; 3], voxel: f64, visit: impl FnMut(Key)) {
    Dda::new(from, to, voxel).for_each(visit);
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// Whether the segment passes through the voxel's box with a positive
    /// length (slab test).
    fn crosses(from: [f64; 3], to: [f64; 3], k: Key, voxel: f64) -> bool {
        let (mut lo, mut hi) = (0f64, 1f64);
        for a in 0..3 {
            let (b0, b1) = (f64::from(k[a]) * voxel, f64::from(k[a] + 1) * voxel);
            let d = to[a] - from[a];
            if d == 0.0 {
                if from[a] < b0 || from[a] >= b1 {
                    return false;
                }
            } else {
                let (t0, t1) = ((b0 - from[a]) / d, (b1 - from[a]) / d);
                lo = lo.max(t0.min(t1));
                hi = hi.min(t0.max(t1));
            }
        }
        hi - lo > 1e-12
    }

    #[test]
    fn dda_visits_exactly_the_crossed_voxels() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(28);
        for case in 0..400 {
            let voxel = [0.2, 0.25, 1.0][case % 3];
            let span = if case % 2 == 0 { 3.0 } else { 12.0 };
            let p = |rng: &mut rand_chacha::ChaCha8Rng| std::array::from_fn(|_| rng.random_range(-span..span));
            let (from, mut to): ([f64; 3], [f64; 3]) = (p(&mut rng), p(&mut rng));
            if case % 7 == 0 {
                to[2] = from[2]; // a flat ray
            }
            let mut got = Vec::new();
            traverse(from, to, voxel, |k| got.push(k));
            let (a, b) = (key(from, voxel), key(to, voxel));
            let mut want = Vec::new();
            for x in a[0].min(b[0])..=a[0].max(b[0]) {
                for y in a[1].min(b[1])..=a[1].max(b[1]) {
                    for z in a[2].min(b[2])..=a[2].max(b[2]) {
                        if [x, y, z] != b && crosses(from, to, [x, y, z], voxel) {
                            want.push([x, y, z]);
                        }
                    }
                }
            }
            let mut sorted = got.clone();
            sorted.sort_unstable();
            want.sort_unstable();
            assert_eq!(sorted, want, "case {case}: {from:?} -> {to:?}");
            // in order: each step moves to a face neighbour
            assert!(got.windows(2).all(|w| (0..3).map(|k| w[0][k].abs_diff(w[1][k])).sum::<u32>() == 1));
        }
        let mut n = 0;
        traverse([0.01, 0.01, 0.01], [0.1, 0.1, 0.1], 0.2, |_| n += 1);
        assert_eq!(n, 0);
    }
}
