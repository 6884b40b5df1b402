//! Kernel maps: for each kernel offset, the pairs `(input row, output row)`
//! it connects, built in Rust (rayon over offsets or rows) from the two
//! coordinate sets' hash tables and kept as int64 index tensors on the
//! device of the features, ready for gather -> GEMM -> scatter-add.

use rayon::prelude::*;
use tch::{Device, Tensor};

use super::coords::{parent, Coords, Dims3, SiteView};

/// Which rule connects the input and output sites.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MapKind {
    /// Output sites = input sites; offsets `{-k/2..k/2}^3` (odd `k`).
    Submanifold {
        /// Kernel size.
        k: i64,
    },
    /// Down-sampling with kernel = stride: input `p` feeds output
    /// `q = floor(p / s)` through offset `d = p - s * q`.
    Down {
        /// Stride per axis.
        s: Dims3,
    },
    /// Up-sampling (transposed, kernel = stride): input `q` feeds each
    /// active child `p = s * q + d` through offset `d`.
    Up {
        /// Scale per axis.
        s: Dims3,
    },
}

/// The pairs of every offset that connects any.
#[derive(Debug)]
pub struct KernelMap {
    /// `(kernel position, input rows, output rows)`; the position indexes the
    /// weight's flattened `(kz, ky, kx)` kernel.
    pub offsets: Vec<(i64, Tensor, Tensor)>,
    /// The kernel position that maps every row to itself, if any (the
    /// submanifold centre): no gather or scatter is needed for it.
    pub identity: Option<i64>,
    /// For down-sampling maps (every input row in one pair): all pairs in
    /// one list, for one gather and one scatter per convolution. Measured 1.4-2.5x faster there (`benches/sparse_conv.rs`),
    /// but slower for transposed (1.1-1.2x) and submanifold maps (1.2-5.6x:
    /// a list of ~10 pairs per site leaves the caches), which keep one list
    /// per offset.
    pub joined: Option<JoinedPairs>,
}

/// Every offset's pairs in one list.
#[derive(Debug)]
pub struct JoinedPairs {
    /// Input rows, offset after offset.
    pub ins: Tensor,
    /// Output rows, in the same order.
    pub outs: Tensor,
    /// `(kernel position, first pair, pairs)` per offset.
    pub spans: Vec<(i64, i64, i64)>,
}

/// The offsets' pairs joined (see [`KernelMap::joined`]).
fn join(offsets: &[(i64, Tensor, Tensor)]) -> Option<JoinedPairs> {
    let parts: Vec<&(i64, Tensor, Tensor)> = offsets.iter().collect();
    if parts.is_empty() {
        return None;
    }
    let mut spans = Vec::with_capacity(parts.len());
    let mut start = 0;
    for (pos, i, _) in &parts {
        let n = i.size()[0];
        spans.push((*pos, start, n));
        start += n;
    }
    let ins: Vec<&Tensor> = parts.iter().map(|(_, i, _)| i).collect();
    let outs: Vec<&Tensor> = parts.iter().map(|(_, _, o)| o).collect();
    Some(JoinedPairs { ins: Tensor::cat(&ins, 0), outs: Tensor::cat(&outs, 0), spans })
}

/// Rows as a `(n,)` int64 tensor on `device`.
fn rows(v: &[i64], device: Device) -> Tensor {
    Tensor::from_slice(v).to_device(device)
}

impl KernelMap {
    /// The map of `kind` from the input set `from` to the output set `to`
    /// (pairs run input row -> output row).
    pub fn build(kind: MapKind, from: &Coords, to: &Coords, device: Device) -> KernelMap {
        match kind {
            MapKind::Submanifold { k } => submanifold(from.view(), k, device),
            MapKind::Down { s } | MapKind::Up { s } => {
                let down = matches!(kind, MapKind::Down { .. });
                let (fine, coarse) = if down { (from, to) } else { (to, from) };
                let pairs = stride_pairs(fine.view(), coarse.view(), s);
                let offsets: Vec<(i64, Tensor, Tensor)> = pairs
                    .into_iter()
                    .enumerate()
                    .filter(|(_, (f, _))| !f.is_empty())
                    .map(|(pos, (f, c))| {
                        let (i, o) = if down { (f, c) } else { (c, f) };
                        (pos as i64, rows(&i, device), rows(&o, device))
                    })
                    .collect();
                let joined = if down { join(&offsets) } else { None };
                KernelMap { offsets, identity: None, joined }
            }
        }
    }

    /// Number of (input, output) pairs over all offsets (the identity counted once per row).
    pub fn pairs(&self) -> i64 {
        self.offsets.iter().map(|(_, i, _)| i.size()[0]).sum()
    }
}

fn submanifold(c: SiteView<'_>, k: i64, device: Device) -> KernelMap {
    let h = k / 2;
    let deltas: Vec<[i64; 3]> = (0..k * k * k).map(|pos| [pos / (k * k) - h, pos / k % k - h, pos % k - h]).collect();
    let centre = (k * k * k) / 2;
    let pairs: Vec<(Vec<i64>, Vec<i64>)> = deltas
        .par_iter()
        .enumerate()
        .map(|(pos, d)| {
            let mut i_rows = Vec::new();
            let mut o_rows = Vec::new();
            if pos as i64 != centre {
                for o in 0..c.keys.len() {
                    let [b, z, y, x] = c.site(o);
                    if let Some(i) = c.find([b, z + d[0], y + d[1], x + d[2]]) {
                        i_rows.push(i as i64);
                        o_rows.push(o as i64);
                    }
                }
            }
            (i_rows, o_rows)
        })
        .collect();
    let mut offsets: Vec<(i64, Tensor, Tensor)> = pairs
        .into_iter()
        .enumerate()
        .filter(|(pos, (i, _))| !i.is_empty() && *pos as i64 != centre)
        .map(|(pos, (i, o))| (pos as i64, rows(&i, device), rows(&o, device)))
        .collect();
    let identity = (!c.keys.is_empty()).then(|| {
        let all: Vec<i64> = (0..c.keys.len() as i64).collect();
        offsets.push((centre, rows(&all, device), rows(&all, device)));
        centre
    });
    KernelMap { offsets, identity, joined: None }
}

/// Per kernel position (`d` in `[0, s)` flattened), the fine rows and their
/// parents' rows: every fine site whose parent `floor(p / s)` is active.
fn stride_pairs(fine: SiteView<'_>, coarse: SiteView<'_>, s: Dims3) -> Vec<(Vec<i64>, Vec<i64>)> {
    let kk = s.iter().product::<i64>() as usize;
    let per_row: Vec<Option<(usize, i64)>> = (0..fine.keys.len())
        .into_par_iter()
        .map(|f| {
            let p = fine.site(f);
            let q = parent(p, s);
            coarse.find(q).map(|c| {
                let d = [p[1] - q[1] * s[0], p[2] - q[2] * s[1], p[3] - q[3] * s[2]];
                (((d[0] * s[1] + d[1]) * s[2] + d[2]) as usize, c as i64)
            })
        })
        .collect();
    let mut out = vec![(Vec::new(), Vec::new()); kk];
    for (f, hit) in per_row.into_iter().enumerate() {
        if let Some((pos, c)) = hit {
            out[pos].0.push(f as i64);
            out[pos].1.push(c);
        }
    }
    out
}
