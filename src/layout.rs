//! From the file's `(H, W, Z, C)` order to the model's `(C, Z, H, W)` f16
//! tensor: permute, zero-pad each spatial dim to a multiple of `alignment`,
//! or resample to a fixed grid with the occupancy-preserving rule.
//!
//! Every output element is written exactly once, so output buffers can be
//! recycled without clearing them first.

use half::f16;
use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;

use crate::npy::{Scalar, SparseFrame};

/// Largest finite float16.
pub const F16_MAX: f64 = 65504.0;

/// How a frame is brought to the output grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Zero-pad Z, H and W at the end to a multiple of `alignment` (the
    /// reference loader's behaviour; 32 turns the real grid into 96x608x224).
    Pad {
        /// Multiple each spatial dim is padded to (>= 1).
        alignment: usize,
    },
    /// Resample to exactly `(Z, H, W)`: max for occupancy/mask channels,
    /// occupancy-weighted mean for feature channels (adaptive-pooling windows).
    Resample {
        /// Output `(Z, H, W)`.
        zhw: [usize; 3],
    },
}

impl Default for Layout {
    fn default() -> Self {
        Layout::Pad { alignment: 32 }
    }
}

impl Layout {
    /// Output `(C, Z, H, W)` for a file of shape `(H, W, Z, C)`.
    pub fn output_shape(&self, hwzc: [usize; 4]) -> [usize; 4] {
        let [h, w, z, c] = hwzc;
        match *self {
            Layout::Pad { alignment: a } => {
                let up = |n: usize| n.div_ceil(a.max(1)) * a.max(1);
                [c, up(z), up(h), up(w)]
            }
            Layout::Resample { zhw: [zo, ho, wo] } => [c, zo, ho, wo],
        }
    }
}

/// Parses `Z,H,W` (e.g. `32,128,128`) for a [`Layout::Resample`] grid.
pub fn parse_zhw(s: &str) -> Result<[usize; 3], String> {
    let dims: Vec<usize> =
        s.split(',').map(|d| d.trim().parse::<usize>()).collect::<Result<_, _>>().map_err(|e| format!("{s:?}: {e}"))?;
    match dims.as_slice() {
        &[z, h, w] if z > 0 && h > 0 && w > 0 => Ok([z, h, w]),
        _ => Err(format!("{s:?}: expected three positive dims Z,H,W")),
    }
}

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

/// A value the output cannot hold, found while converting.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BadValue {
    /// `(x, y, z)` of the voxel in the file's grid.
    pub voxel: [usize; 3],
    /// Channel.
    pub channel: usize,
    /// The value as stored.
    pub value: f64,
}

impl BadValue {
    /// `non-finite` or `float16-overflowing`.
    pub fn problem(&self) -> &'static str {
        if self.value.is_finite() {
            "float16-overflowing"
        } else {
            "non-finite"
        }
    }
}

/// A dense `(H, W, Z, C)` array in a byte buffer (usually a memory map).
#[derive(Debug, Clone, Copy)]
pub struct DenseView<'a> {
    /// Element bytes.
    pub data: &'a [u8],
    /// Element type (a float type).
    pub scalar: Scalar,
    /// Big-endian elements.
    pub big_endian: bool,
    /// `(H, W, Z, C)`.
    pub shape: [usize; 4],
    /// Column-major element order.
    pub fortran_order: bool,
}

/// Loads element `i` of a buffer as f64 (exact for every supported type).
pub fn load_f64(raw: &[u8], i: usize, scalar: Scalar, big_endian: bool) -> f64 {
    let n = scalar.size();
    let b = &raw[i * n..(i + 1) * n];
    macro_rules! get {
        ($t:ty) => {{
            let a = b.try_into().expect("element width");
            (if big_endian { <$t>::from_be_bytes(a) } else { <$t>::from_le_bytes(a) }) as f64
        }};
    }
    match scalar {
        Scalar::F16 => {
            let a = [b[0], b[1]];
            let bits = if big_endian { u16::from_be_bytes(a) } else { u16::from_le_bytes(a) };
            f16::from_bits(bits).to_f64()
        }
        Scalar::F32 => get!(f32),
        Scalar::F64 => get!(f64),
        Scalar::I32 => get!(i32),
        Scalar::I64 => get!(i64),
    }
}

/// Correctly rounded f64 -> f16 (round to nearest even, like numpy).
/// Goes through f32 with round-to-odd, which cannot double-round.
pub fn f64_to_f16(v: f64) -> f16 {
    let f = v as f32;
    if !f.is_finite() || f as f64 == v {
        return f16::from_f32(f);
    }
    let mut bits = f.to_bits();
    if (f as f64).abs() > v.abs() {
        bits -= 1; // step back towards zero: truncation
    }
    f16::from_f32(f32::from_bits(bits | 1))
}

fn is_inf_or_nan(h: f16) -> bool {
    h.to_bits() & 0x7c00 == 0x7c00
}

impl DenseView<'_> {
    fn row_len(&self) -> usize {
        self.shape[1] * self.shape[2] * self.shape[3]
    }

    /// Flat element index of `(x, y, z, c)`.
    fn index(&self, x: usize, rest: usize) -> usize {
        let [h, w, z, c] = self.shape;
        if self.fortran_order {
            let (yi, zi, ci) = (rest / (z * c), rest / c % z, rest % c);
            x + h * (yi + w * (zi + z * ci))
        } else {
            x * w * z * c + rest
        }
    }

    /// Decodes source row `x` (all `(y, z, c)`, in that order) into f16,
    /// refusing NaN, infinities and values beyond the f16 range.
    fn decode_row(&self, x: usize, out: &mut [f16], f32_buf: &mut Vec<f32>) -> Result<(), BadValue> {
        let n = self.row_len();
        if self.scalar == Scalar::F32 && !self.big_endian && !self.fortran_order {
            let bytes = &self.data[x * n * 4..(x + 1) * n * 4];
            f32_buf.clear();
            f32_buf.extend(bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])));
            out.convert_from_f32_slice(f32_buf);
        } else {
            for (i, o) in out.iter_mut().enumerate() {
                *o = f64_to_f16(load_f64(self.data, self.index(x, i), self.scalar, self.big_endian));
            }
        }
        if out.iter().any(|&h| is_inf_or_nan(h)) {
            let i = out.iter().position(|&h| is_inf_or_nan(h)).expect("found above");
            let [_, _, z, c] = self.shape;
            return Err(BadValue {
                voxel: [x, i / (z * c), i / c % z],
                channel: i % c,
                value: load_f64(self.data, self.index(x, i), self.scalar, self.big_endian),
            });
        }
        Ok(())
    }
}

/// Writes a dense frame into `out` (`layout.output_shape(view.shape)`).
/// Padding runs in parallel over H rows; resampling accumulates serially.
pub fn dense_into(view: &DenseView, layout: Layout, reduce: &[Reduce], out: &mut [f16]) -> Result<(), BadValue> {
    let oshape = layout.output_shape(view.shape);
    assert_eq!(out.len(), oshape.iter().product::<usize>(), "output buffer size");
    assert!(view.data.len() >= view.shape.iter().product::<usize>() * view.scalar.size());
    match layout {
        Layout::Pad { .. } => pad_dense(view, oshape, out),
        Layout::Resample { .. } => {
            let mut acc = Resampler::new(view.shape, oshape, reduce);
            let [_, w, z, c] = view.shape;
            let (mut row, mut buf) = (vec![f16::ZERO; view.row_len()], Vec::new());
            let mut vals = vec![0f64; c];
            for x in 0..view.shape[0] {
                view.decode_row(x, &mut row, &mut buf)?;
                for y in 0..w {
                    for zi in 0..z {
                        let base = (y * z + zi) * c;
                        if row[base..base + c].iter().all(|v| v.to_bits() & 0x7fff == 0) {
                            continue;
                        }
                        for (ci, v) in vals.iter_mut().enumerate() {
                            *v = load_f64(view.data, view.index(x, base + ci), view.scalar, view.big_endian);
                        }
                        acc.add([x, y, zi], &vals);
                    }
                }
            }
            acc.finish(out);
            Ok(())
        }
    }
}

fn pad_dense(view: &DenseView, oshape: [usize; 4], out: &mut [f16]) -> Result<(), BadValue> {
    let [h, w, z, c] = view.shape;
    let [_, zo, ho, wo] = oshape;
    // Group output rows (c, z, x, :) by x so each task owns its rows.
    let mut by_x: Vec<Vec<&mut [f16]>> = (0..ho).map(|_| Vec::with_capacity(c * zo)).collect();
    for (r, row) in out.chunks_mut(wo).enumerate() {
        by_x[r % ho].push(row);
    }
    by_x.into_par_iter().enumerate().try_for_each_init(
        || (Vec::new(), Vec::new()),
        |(scratch, buf): &mut (Vec<f16>, Vec<f32>), (x, mut rows)| {
            if x >= h {
                rows.iter_mut().for_each(|r| r.fill(f16::ZERO));
                return Ok(());
            }
            scratch.resize(view.row_len(), f16::ZERO);
            view.decode_row(x, scratch, buf)?;
            for (k, row) in rows.iter_mut().enumerate() {
                let (ci, zi) = (k / zo, k % zo);
                if zi >= z {
                    row.fill(f16::ZERO);
                    continue;
                }
                for (y, o) in row[..w].iter_mut().enumerate() {
                    *o = scratch[(y * z + zi) * c + ci];
                }
                row[w..].fill(f16::ZERO);
            }
            Ok(())
        },
    )
}

/// Writes a sparse frame into `out` (`layout.output_shape(frame.shape)`).
pub fn sparse_into(frame: &SparseFrame, layout: Layout, reduce: &[Reduce], out: &mut [f16]) -> Result<(), BadValue> {
    let oshape = layout.output_shape(frame.shape);
    assert_eq!(out.len(), oshape.iter().product::<usize>(), "output buffer size");
    let c = frame.shape[3];
    let values = |i: usize| &frame.features[i * c..(i + 1) * c];
    // Validate every value before touching the output.
    for (i, xyz) in frame.coords.iter().enumerate() {
        for (ci, &v) in values(i).iter().enumerate() {
            if is_inf_or_nan(f64_to_f16(v)) {
                let voxel = [xyz[0] as usize, xyz[1] as usize, xyz[2] as usize];
                return Err(BadValue { voxel, channel: ci, value: v });
            }
        }
    }
    match layout {
        Layout::Pad { .. } => {
            let [_, zo, ho, wo] = oshape;
            out.par_chunks_mut(1 << 16).for_each(|ch| ch.fill(f16::ZERO));
            for (i, xyz) in frame.coords.iter().enumerate() {
                let [x, y, z] = xyz.map(|v| v as usize);
                for (ci, &v) in values(i).iter().enumerate() {
                    out[((ci * zo + z) * ho + x) * wo + y] = f64_to_f16(v);
                }
            }
        }
        Layout::Resample { .. } => {
            let mut acc = Resampler::new(frame.shape, oshape, reduce);
            for (i, xyz) in frame.coords.iter().enumerate() {
                acc.add(xyz.map(|v| v as usize), values(i));
            }
            acc.finish(out);
        }
    }
    Ok(())
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
struct Resampler<'r> {
    cover: [Vec<(usize, usize)>; 3],
    oshape: [usize; 4],
    reduce: &'r [Reduce],
    acc: Vec<f64>,
    occ: Vec<f64>,
}

impl<'r> Resampler<'r> {
    fn new(hwzc: [usize; 4], oshape: [usize; 4], reduce: &'r [Reduce]) -> Self {
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

    fn add(&mut self, [x, y, z]: [usize; 3], vals: &[f64]) {
        let [c, zo, ho, wo] = self.oshape;
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
                    for ci in 0..c {
                        let a = &mut self.acc[ci * plane + cell];
                        match self.reduce[ci] {
                            Reduce::Max => *a = a.max(vals[ci]),
                            Reduce::OccMean => *a += vals[ci] * occ,
                        }
                    }
                }
            }
        }
    }

    fn finish(self, out: &mut [f16]) {
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
    fn f64_to_f16_rounds_once() {
        // 1 + 2^-11 is exactly halfway between two f16 values: ties to even (1.0).
        let half_ulp = 1.0 + 2f64.powi(-11);
        assert_eq!(f64_to_f16(half_ulp), f16::from_f32(1.0));
        // A hair above halfway must round up, even though f64 -> f32 alone
        // would land exactly on the tie and then round down.
        let above = half_ulp + 2f64.powi(-40);
        assert_eq!(f64_to_f16(above).to_f64(), 1.0 + 2f64.powi(-10));
        assert_eq!(f64_to_f16(-above).to_f64(), -(1.0 + 2f64.powi(-10)));
        assert!(f64_to_f16(65520.0).is_infinite());
        assert_eq!(f64_to_f16(65519.0).to_f64(), F16_MAX);
        assert!(f64_to_f16(f64::NAN).is_nan());
    }

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

    #[test]
    fn pad_and_output_shape() {
        assert_eq!(Layout::default().output_shape([600, 200, 80, 4]), [4, 96, 608, 224]);
        assert_eq!(Layout::Resample { zhw: [32, 128, 128] }.output_shape([600, 200, 80, 4]), [4, 32, 128, 128]);
    }
}
