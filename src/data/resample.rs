//! Resampling a frame to a fixed `(Z, H, W)` with the occupancy-preserving
//! rule: occupancy and mask channels keep any occupied input voxel (max),
//! features are occupancy-weighted means over adaptive-pooling windows.

use half::f16;

use super::layout::f64_to_f16;

/// How resampling reduces one channel over the cells an output cell covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reduce {
    /// Keep any occupied voxel: the maximum (empty voxels count as 0).
    Max,
    /// `sum(value * occ) / sum(occ)`, 0 where nothing is occupied.
    OccMean,
}

impl Reduce {
    /// Channel rules: occupancy is `Max`, features `OccMean`, and with
    /// `mask_last` (target frames, whose channel 3 is the Doppler-valid mask)
    /// the last channel is `Max` too.
    pub fn for_channels(c: usize, mask_last: bool) -> Vec<Reduce> {
        (0..c).map(|i| if i == 0 || (mask_last && i == 3 && c == 4) { Reduce::Max } else { Reduce::OccMean }).collect()
    }
}

/// Adaptive-pooling windows: output cell `o` of `n_out` covers source
/// `[floor(o*n_in/n_out), ceil((o+1)*n_in/n_out))`; for each source index,
/// the (contiguous) range of output cells that cover it.
fn windows(n_in: usize, n_out: usize) -> Vec<(usize, usize)> {
    let mut cover = vec![(usize::MAX, 0); n_in];
    for o in 0..n_out {
        let (s, e) = (o * n_in / n_out, ((o + 1) * n_in).div_ceil(n_out));
        for c in &mut cover[s..e.min(n_in)] {
            c.0 = c.0.min(o);
            c.1 = c.1.max(o + 1);
        }
    }
    cover
}

/// Accumulates voxels into an output grid for [`Layout::Resample`], in f64.
pub(crate) struct Resampler<'r> {
    cover: [Vec<(usize, usize)>; 3],
    oshape: [usize; 4],
    reduce: &'r [Reduce],
    acc: Vec<f64>,
    occ: Vec<f64>,
}

impl<'r> Resampler<'r> {
    pub(crate) fn new(hwzc: [usize; 4], oshape: [usize; 4], reduce: &'r [Reduce]) -> Self {
        let [c, zo, ho, wo] = oshape;
        assert_eq!(reduce.len(), c, "one reduction per channel");
        Resampler {
            cover: [windows(hwzc[0], ho), windows(hwzc[1], wo), windows(hwzc[2], zo)],
            oshape,
            reduce,
            acc: vec![0.0; c * zo * ho * wo],
            occ: vec![0.0; zo * ho * wo],
        }
    }

    pub(crate) fn add(&mut self, [x, y, z]: [usize; 3], vals: &[f64]) {
        let [_, zo, ho, wo] = self.oshape;
        let plane = zo * ho * wo;
        let occ = vals[0];
        let ([xs, xe], [ys, ye], [zs, ze]) = (
            [self.cover[0][x].0, self.cover[0][x].1],
            [self.cover[1][y].0, self.cover[1][y].1],
            [self.cover[2][z].0, self.cover[2][z].1],
        );
        for zi in zs..ze {
            for xi in xs..xe {
                for yi in ys..ye {
                    let cell = (zi * ho + xi) * wo + yi;
                    self.occ[cell] += occ;
                    for (ci, (&v, reduce)) in vals.iter().zip(self.reduce).enumerate() {
                        let a = &mut self.acc[ci * plane + cell];
                        match reduce {
                            Reduce::Max => *a = a.max(v),
                            Reduce::OccMean => *a += v * occ,
                        }
                    }
                }
            }
        }
    }

    pub(crate) fn finish(self, out: &mut [f16]) {
        let plane = self.occ.len();
        for (i, o) in out.iter_mut().enumerate() {
            let (ci, cell) = (i / plane, i % plane);
            let v = match self.reduce[ci] {
                Reduce::Max => self.acc[i],
                Reduce::OccMean if self.occ[cell] != 0.0 => self.acc[i] / self.occ[cell],
                Reduce::OccMean => 0.0,
            };
            *o = f64_to_f16(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_cover_every_source_index() {
        for (n_in, n_out) in [(600, 128), (80, 32), (7, 3), (3, 7), (5, 5)] {
            let w = windows(n_in, n_out);
            assert!(w.iter().all(|&(s, e)| s < e && e <= n_out), "{n_in}->{n_out}");
            assert_eq!(w[0].0, 0);
            assert_eq!(w[n_in - 1].1, n_out);
        }
        // Integer ratio: each source index maps to exactly one output cell.
        assert!(windows(8, 4).iter().enumerate().all(|(i, &(s, e))| s == i / 2 && e == s + 1));
    }
}
