//! From the file's `(H, W, Z, C)` order to the model's `(C, Z, H, W)` f16
//! tensor: permute, zero-pad each spatial dim to a multiple of `alignment`,
//! resample to a fixed grid with the occupancy-preserving rule, or cut a
//! crop at native resolution ([`super::crop`]).
//!
//! Every output element is written exactly once, so output buffers can be
//! recycled without clearing them first.

use half::f16;
use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;

use super::crop;
use super::frame::SparseFrame;
use super::resample::{Reduce, Resampler};
use super::DataError;
use crate::io::npy::{load_f64, Scalar};

/// Largest finite float16.
pub const F16_MAX: f64 = 65504.0;

/// How a frame is brought to the output grid (part of a run's recipe: a
/// model trained on one layout expects it downstream).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
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
    /// Crops of `(Z, H, W)` at native resolution: random ones for training
    /// (seeded, drawn afresh each epoch), fixed ones for validation, the
    /// centre one for a plain read. Models trained on crops are applied to
    /// whole frames ([`Layout::whole_frame`]).
    Crop {
        /// Crop `(Z, H, W)`.
        zhw: [usize; 3],
        /// Percentage of training crops centred on an occupied voxel (the
        /// rest are uniform over the grid).
        #[serde(default = "default_focus")]
        focus: u8,
    },
}

fn default_focus() -> u8 {
    50
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
            Layout::Resample { zhw: [zo, ho, wo] } | Layout::Crop { zhw: [zo, ho, wo], .. } => [c, zo, ho, wo],
        }
    }

    /// The layout a model trained with this one is applied to whole frames
    /// with: crops become the default padding (fully convolutional models
    /// run on any aligned grid); others are unchanged.
    pub fn whole_frame(self) -> Layout {
        match self {
            Layout::Crop { .. } => Layout::default(),
            other => other,
        }
    }
}

/// Parses `Z,H,W` (e.g. `32,128,128`) for a [`Layout::Resample`] grid.
pub fn parse_zhw(s: &str) -> Result<[usize; 3], DataError> {
    let bad = || DataError::Config(format!("{s:?}: expected three positive dims Z,H,W"));
    let dims: Vec<usize> =
        s.split(',').map(|d| d.trim().parse::<usize>()).collect::<Result<_, _>>().map_err(|_| bad())?;
    match dims.as_slice() {
        &[z, h, w] if z > 0 && h > 0 && w > 0 => Ok([z, h, w]),
        _ => Err(bad()),
    }
}

impl std::fmt::Display for Layout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Layout::Pad { alignment } => write!(f, "padded to a multiple of {alignment}"),
            Layout::Resample { zhw: [z, h, w] } => write!(f, "resampled to {z},{h},{w}"),
            Layout::Crop { zhw: [z, h, w], focus } => write!(f, "{z},{h},{w} crops ({focus}% on occupied voxels)"),
        }
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

/// Views little-endian f32 bytes as `&[f32]` without copying, when the
/// host is little-endian and the bytes are 4-byte aligned (numpy pads the
/// `.npy` header to 64 bytes, so a mapped file's data always is).
fn as_f32_slice(bytes: &[u8]) -> Option<&[f32]> {
    if cfg!(target_endian = "big") {
        return None;
    }
    // SAFETY: every 4-byte pattern is a valid f32, and `align_to` only
    // yields the middle part that is correctly aligned for f32; we use it
    // only when there is no unaligned prefix or suffix.
    let (pre, mid, post) = unsafe { bytes.align_to::<f32>() };
    (pre.is_empty() && post.is_empty()).then_some(mid)
}

pub(crate) fn is_inf_or_nan(h: f16) -> bool {
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

    /// Source row `x` as `&[f32]` when the file is aligned little-endian
    /// C-order float32 (the preprocessing's own format).
    fn f32_row(&self, x: usize) -> Option<&[f32]> {
        if self.scalar != Scalar::F32 || self.big_endian || self.fortran_order {
            return None;
        }
        let n = self.row_len();
        as_f32_slice(&self.data[x * n * 4..(x + 1) * n * 4])
    }

    /// The error for element `i` of source row `x`.
    fn bad_value(&self, x: usize, i: usize, value: f32) -> BadValue {
        let [_, _, z, c] = self.shape;
        BadValue { voxel: [x, i / (z * c), i / c % z], channel: i % c, value: value as f64 }
    }

    /// Decodes source row `x` (all `(y, z, c)`, in that order) into f16,
    /// refusing NaN, infinities and values beyond the f16 range.
    pub(crate) fn decode_row(&self, x: usize, out: &mut [f16], f32_buf: &mut Vec<f32>) -> Result<(), BadValue> {
        let n = self.row_len();
        if let Some(floats) = self.f32_row(x) {
            out.convert_from_f32_slice(floats);
        } else if self.scalar == Scalar::F32 && !self.big_endian && !self.fortran_order {
            let bytes = &self.data[x * n * 4..(x + 1) * n * 4];
            f32_buf.clear();
            f32_buf.extend(bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])));
            out.convert_from_f32_slice(f32_buf);
        } else {
            for (i, o) in out.iter_mut().enumerate() {
                *o = f64_to_f16(load_f64(self.data, self.index(x, i), self.scalar, self.big_endian));
            }
        }
        if let Some(i) = out.iter().position(|&h| is_inf_or_nan(h)) {
            let value = load_f64(self.data, self.index(x, i), self.scalar, self.big_endian);
            return Err(BadValue { value, ..self.bad_value(x, i, 0.0) });
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
        Layout::Crop { zhw, .. } => crop::dense_crop_into(view, crop::centre(view.shape, zhw), zhw, out),
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
            if let Some(floats) = view.f32_row(x) {
                if scatter_sparse_row(floats, &mut rows, [z, c, zo]).map_err(|(i, v)| view.bad_value(x, i, v))? {
                    return Ok(());
                }
            }
            scratch.resize(view.row_len(), f16::ZERO);
            view.decode_row(x, scratch, buf)?;
            transpose_row(scratch, &mut rows, [w, z, c, zo]);
            Ok(())
        },
    )
}

/// Occupancy grids are mostly empty: when at most 1/8 of a row's 16-value
/// chunks hold a non-zero, zero the output rows and write only the non-zero
/// values (bit patterns, so -0.0 stays -0.0 as in numpy). Returns `false`,
/// having written nothing, for a row too dense for this to pay.
fn scatter_sparse_row(floats: &[f32], rows: &mut [&mut [f16]], [z, c, zo]: [usize; 3]) -> Result<bool, (usize, f32)> {
    let nonzero = |ch: &[f32]| ch.iter().fold(0u32, |a, v| a | v.to_bits()) != 0;
    let busy = floats.chunks(16).filter(|ch| nonzero(ch)).count();
    if busy * 8 > floats.len().div_ceil(16) {
        return Ok(false);
    }
    rows.iter_mut().for_each(|r| r.fill(f16::ZERO));
    for (k, ch) in floats.chunks(16).enumerate().filter(|(_, ch)| nonzero(ch)) {
        for (j, &v) in ch.iter().enumerate().filter(|(_, v)| v.to_bits() != 0) {
            let i = k * 16 + j;
            let hv = f16::from_f32(v);
            if is_inf_or_nan(hv) {
                return Err((i, v));
            }
            rows[(i % c) * zo + i / c % z][i / (z * c)] = hv;
        }
    }
    Ok(true)
}

/// Writes a decoded `(y, z, c)` source row into its `C * Zo` output rows
/// (and their padding), in tiles of 32 y values: a tile of the source (32 *
/// Z * C values) stays in L1 while each output row receives one cache line
/// (output rows are a page-multiple apart; writing all of them per y value
/// would thrash the cache sets).
fn transpose_row(scratch: &[f16], rows: &mut [&mut [f16]], [w, z, c, zo]: [usize; 4]) {
    const TILE: usize = 32;
    for y0 in (0..w).step_by(TILE) {
        let y1 = (y0 + TILE).min(w);
        for (k, row) in rows.iter_mut().enumerate() {
            let (ci, zi) = (k / zo, k % zo);
            if zi < z {
                let column = scratch[(y0 * z + zi) * c + ci..].iter().step_by(z * c);
                for (o, &v) in row[y0..y1].iter_mut().zip(column) {
                    *o = v;
                }
            }
        }
    }
    for (k, row) in rows.iter_mut().enumerate() {
        if k % zo >= z {
            row.fill(f16::ZERO);
        } else {
            row[w..].fill(f16::ZERO);
        }
    }
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
        Layout::Crop { zhw, .. } => crop::sparse_crop_into(frame, crop::centre(frame.shape, zhw), zhw, out)?,
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

    fn f32_bytes(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|f| f.to_le_bytes()).collect()
    }

    #[test]
    fn f32_view_refuses_misaligned_bytes() {
        let bytes = f32_bytes(&[1.5, -2.0, 3.25, 4.0]);
        let off = (4 - bytes.as_ptr() as usize % 4) % 4; // first 4-aligned offset
        assert_eq!(as_f32_slice(&bytes[off..off + 4]).map(|s| s.len()), Some(1));
        assert!(as_f32_slice(&bytes[off + 1..off + 5]).is_none());
    }

    /// A mostly empty f32 grid takes the scatter path; one dense row takes
    /// the transpose path; both must agree with a plain permute + pad.
    #[test]
    fn sparse_and_dense_rows_pad_identically() {
        let shape = [3, 40, 10, 4];
        let mut src = vec![0f32; shape.iter().product()];
        src[(40 * 10 + 7 * 10 + 3) * 4 + 2] = -0.0; // row 1: sparse, a negative zero
        src[(40 * 10 + 7 * 10 + 3) * 4 + 1] = 3.3;
        for (i, v) in src[2 * 1600..].iter_mut().enumerate() {
            *v = i as f32 * 0.25 - 7.0; // row 2: dense
        }
        let bytes = f32_bytes(&src);
        let mut aligned = vec![0u32; bytes.len() / 4]; // 4-aligned storage for the bytes
        for (a, b) in aligned.iter_mut().zip(bytes.chunks_exact(4)) {
            *a = u32::from_ne_bytes(b.try_into().unwrap());
        }
        let data: Vec<u8> = aligned.iter().flat_map(|a| a.to_ne_bytes()).collect();
        let view = DenseView { data: &data, scalar: Scalar::F32, big_endian: false, shape, fortran_order: false };
        let layout = Layout::Pad { alignment: 8 };
        let o = layout.output_shape(shape);
        let mut out = vec![f16::from_f32(9.0); o.iter().product()];
        dense_into(&view, layout, &[], &mut out).unwrap();
        for (i, got) in out.iter().enumerate() {
            let (ci, zi, x, y) = (i / (o[1] * o[2] * o[3]), i / (o[2] * o[3]) % o[1], i / o[3] % o[2], i % o[3]);
            let want = if x < 3 && y < 40 && zi < 10 { src[((x * 40 + y) * 10 + zi) * 4 + ci] } else { 0.0 };
            assert_eq!(got.to_bits(), f16::from_f32(want).to_bits(), "c{ci} z{zi} x{x} y{y}");
        }
        // A NaN in a sparse row is found by the scatter path.
        let mut bad = aligned.clone();
        bad[(40 * 10 + 5 * 10 + 2) * 4 + 3] = f32::NAN.to_bits();
        let data: Vec<u8> = bad.iter().flat_map(|a| a.to_ne_bytes()).collect();
        let view = DenseView { data: &data, ..view };
        let err = dense_into(&view, layout, &[], &mut out).unwrap_err();
        assert_eq!((err.voxel, err.channel, err.problem()), ([1, 5, 2], 3, "non-finite"));
    }

    #[test]
    fn pad_and_output_shape() {
        assert_eq!(Layout::default().output_shape([600, 200, 80, 4]), [4, 96, 608, 224]);
        assert_eq!(Layout::Resample { zhw: [32, 128, 128] }.output_shape([600, 200, 80, 4]), [4, 32, 128, 128]);
    }
}
