//! Whole frames through a fully convolutional model in overlapping tiles,
//! by halo cropping: the grid is cut into core tiles, each is run with a
//! halo of context on every side (clipped at the frame's borders), and only
//! the core of each output is kept. Every output voxel then comes from a
//! tile in which its receptive field is complete up to the halo, so there
//! is no seam to blend; what still differs from the untiled output is the
//! GroupNorm statistics, which each tile computes over its own extent
//! instead of the whole frame's (`tests/tiles.rs` measures it). Linear
//! ramps over an overlap were the alternative: they average two wrong
//! answers near a seam instead of taking one right one.

use serde::{Deserialize, Serialize};
use tch::Tensor;

use super::ModelError;

/// Core tile and halo sizes `(Z, H, W)` in the input's voxels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tiling {
    /// Core tile.
    pub tile: [i64; 3],
    /// Context on each side of a core tile.
    pub halo: [i64; 3],
}

/// One axis' piece: the core `[start, start + len)` and the extended range
/// run through the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    core: (i64, i64),
    ext: (i64, i64),
}

fn spans(len: i64, tile: i64, halo: i64) -> Vec<Span> {
    (0..len)
        .step_by(tile as usize)
        .map(|start| {
            let core_len = tile.min(len - start);
            let lo = (start - halo).max(0);
            let hi = (start + core_len + halo).min(len);
            Span { core: (start, core_len), ext: (lo, hi - lo) }
        })
        .collect()
}

impl Tiling {
    /// A tiling with the same halo on every axis.
    pub fn new(tile: [i64; 3], halo: i64) -> Tiling {
        Tiling { tile, halo: [halo; 3] }
    }

    /// Refuses tiles and halos that are not positive (halo: non-negative)
    /// multiples of `multiple` per axis (the encoder's downsampling, so a
    /// tile's latent is whole).
    pub fn validate(&self, multiple: [i64; 3]) -> Result<(), ModelError> {
        for a in 0..3 {
            let (t, h, m) = (self.tile[a], self.halo[a], multiple[a]);
            if t <= 0 || h < 0 || t % m != 0 || h % m != 0 {
                return Err(ModelError::Config(format!(
                    "tiles {:?} with halo {:?}: each must be a positive (halo: non-negative) multiple of the \
                     encoder's downsampling {multiple:?}",
                    self.tile, self.halo
                )));
            }
        }
        Ok(())
    }

    /// Number of tiles over a `(Z, H, W)` grid.
    pub fn count(&self, grid: [i64; 3]) -> usize {
        (0..3).map(|a| spans(grid[a], self.tile[a], self.halo[a]).len()).product()
    }

    /// The largest extended tile (core plus halos, clipped to the grid) run
    /// through the model over a `(Z, H, W)` grid: what bounds its memory.
    pub fn max_extent(&self, grid: [i64; 3]) -> [i64; 3] {
        [0, 1, 2].map(|a| spans(grid[a], self.tile[a], self.halo[a]).iter().map(|p| p.ext.1).max().unwrap_or(0))
    }

    /// The same tiling in a grid `factor` times coarser per axis (the
    /// latent of a VAE downsampling by `factor`).
    pub fn coarser(&self, factor: [i64; 3]) -> Tiling {
        Tiling { tile: [0, 1, 2].map(|a| self.tile[a] / factor[a]), halo: [0, 1, 2].map(|a| self.halo[a] / factor[a]) }
    }

    /// `f` applied tile by tile to `x` `(B, C, Z, H, W)`, whose output has
    /// `num / den` times the input's size per axis (the encoder: 1 / its
    /// downsampling; the decoder: the downsampling / 1). Tiles and halos
    /// are in `x`'s voxels and must be multiples of `den`.
    pub fn map(&self, x: &Tensor, num: [i64; 3], den: [i64; 3], f: &dyn Fn(&Tensor) -> Tensor) -> Tensor {
        let s = x.size();
        let grid = [s[2], s[3], s[4]];
        let axes: Vec<Vec<Span>> = (0..3).map(|a| spans(grid[a], self.tile[a], self.halo[a])).collect();
        let scale = |a: usize, v: i64| v * num[a] / den[a];
        let mut out: Option<Tensor> = None;
        for sz in &axes[0] {
            for sh in &axes[1] {
                for sw in &axes[2] {
                    let pieces = [sz, sh, sw];
                    let mut ext = x.shallow_clone();
                    for (a, p) in pieces.iter().enumerate() {
                        ext = ext.narrow(2 + a as i64, p.ext.0, p.ext.1);
                    }
                    let mut y = f(&ext);
                    for (a, p) in pieces.iter().enumerate() {
                        y = y.narrow(2 + a as i64, scale(a, p.core.0 - p.ext.0), scale(a, p.core.1));
                    }
                    let o = out.get_or_insert_with(|| {
                        let ys = y.size();
                        y.new_zeros(
                            [ys[0], ys[1], scale(0, grid[0]), scale(1, grid[1]), scale(2, grid[2])],
                            (y.kind(), y.device()),
                        )
                    });
                    let mut dst = o.shallow_clone();
                    for (a, p) in pieces.iter().enumerate() {
                        dst = dst.narrow(2 + a as i64, scale(a, p.core.0), scale(a, p.core.1));
                    }
                    dst.copy_(&y);
                }
            }
        }
        out.expect("a grid has at least one tile")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn spans_cover_the_axis_once_with_clipped_halos() {
        let s = spans(10, 4, 2);
        assert_eq!(s.iter().map(|p| p.core).collect::<Vec<_>>(), [(0, 4), (4, 4), (8, 2)]);
        assert_eq!(s.iter().map(|p| p.ext).collect::<Vec<_>>(), [(0, 6), (2, 8), (6, 4)]);
        assert_eq!(Tiling::new([4, 4, 16], 2).max_extent([10, 3, 16]), [8, 3, 16]);
        assert_eq!(Tiling::new([8, 16, 32], 4).coarser([2, 4, 4]).tile, [4, 4, 8]);
    }

    #[test]
    fn a_pointwise_map_is_exact_and_scales_apply() {
        let x = Tensor::randn([1, 2, 6, 8, 10], (Kind::Float, Device::Cpu));
        let t = Tiling::new([2, 4, 4], 2);
        assert_eq!(t.count([6, 8, 10]), 3 * 2 * 3);
        let y = t.map(&x, [1; 3], [1; 3], &|e| e * 2.0 + 1.0);
        assert!(y.equal(&(&x * 2.0 + 1.0)));
        // a 2x average pool per axis: output half the size, tiles even
        let pool = |e: &Tensor| e.avg_pool3d([2, 2, 2], [2, 2, 2], [0, 0, 0], false, true, None::<i64>);
        let y = t.map(&x, [1; 3], [2; 3], &pool);
        assert!((y - pool(&x)).abs().max().double_value(&[]) < 1e-6);
        assert!(Tiling::new([3, 4, 4], 0).validate([2, 2, 2]).is_err());
        assert!(Tiling::new([2, 4, 4], 2).validate([2, 2, 2]).is_ok());
    }
}
