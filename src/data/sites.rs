//! A frame as its occupied voxels: `(z, h, w)` sites of the padded
//! `(Z, H, W)` grid and their channel values, straight from a sparse
//! `.npz` frame's members or from a dense `.npy` by a non-zero scan of the
//! memory map, one H row at a time: the dense grid is never built. Values
//! round to float16 once (as the dense loader's batches do) and must be
//! finite and fit it. A voxel is occupied when channel 0 > 0.

use half::f16;

use super::frame::read_sparse_as;
use super::layout::{f64_to_f16, is_inf_or_nan, BadValue, Layout};
use super::{DataError, FrameFile};
use crate::io::npy::MappedNpy;

/// The occupied voxels of one frame.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FrameSites {
    /// `(Z, H, W)` of the padded layout the sites live in.
    pub grid: [usize; 3],
    /// `(Z, H, W)` of the file itself (the sites all lie inside it).
    pub native: [usize; 3],
    /// `(z, h, w)` per occupied voxel, in the file's order.
    pub sites: Vec<[u32; 3]>,
    /// `C` values per site, row-major, rounded to float16.
    pub feats: Vec<f32>,
    /// Channels `C`.
    pub channels: usize,
}

impl FrameSites {
    /// Number of occupied voxels.
    pub fn len(&self) -> usize {
        self.sites.len()
    }

    /// Whether no voxel is occupied.
    pub fn is_empty(&self) -> bool {
        self.sites.is_empty()
    }

    /// The sites as `[b, z, h, w]` rows of frame `b` of a batch.
    pub fn batched(&self, b: i64) -> impl Iterator<Item = [i64; 4]> + '_ {
        self.sites.iter().map(move |&[z, h, w]| [b, z as i64, h as i64, w as i64])
    }
}

impl FrameFile {
    /// The occupied voxels of this frame under `layout`, which must be
    /// [`Layout::Pad`]: sparse models run at native resolution, so a
    /// resampled or cropped layout is refused by name.
    pub fn read_sites(&self, layout: Layout) -> Result<FrameSites, DataError> {
        let Layout::Pad { .. } = layout else {
            return Err(DataError::Config(format!(
                "{}: sparse frames are read at native resolution (a pad layout); layout {layout} cannot apply",
                self.path().display()
            )));
        };
        let [h, w, z, c] = self.shape();
        let out = layout.output_shape(self.shape());
        let mut s = FrameSites { grid: [out[1], out[2], out[3]], native: [z, h, w], channels: c, ..Default::default() };
        match self {
            FrameFile::Sparse { path, shape } => {
                let frame = read_sparse_as(path, *shape)?;
                for (xyz, vals) in frame.coords.iter().zip(frame.features.chunks_exact(c)) {
                    let mut row = Vec::with_capacity(c);
                    for (ch, &v) in vals.iter().enumerate() {
                        let half = f64_to_f16(v);
                        if is_inf_or_nan(half) {
                            let voxel = [xyz[0] as usize, xyz[1] as usize, xyz[2] as usize];
                            return Err(self.bad_value(BadValue { voxel, channel: ch, value: v }));
                        }
                        row.push(half.to_f32());
                    }
                    if row[0] > 0.0 {
                        s.sites.push([xyz[2], xyz[0], xyz[1]]);
                        s.feats.extend(row);
                    }
                }
            }
            FrameFile::Dense { path, header } => {
                let map = MappedNpy::map(path, header)?;
                let view = self.view(&map, header);
                let mut row = vec![f16::ZERO; w * z * c];
                let mut buf = Vec::new();
                for x in 0..h {
                    view.decode_row(x, &mut row, &mut buf).map_err(|b| self.bad_value(b))?;
                    // row order (y, z, c)
                    for (cell, vals) in row.chunks_exact(c).enumerate() {
                        if vals[0].to_f32() > 0.0 {
                            let (y, zz) = (cell / z, cell % z);
                            s.sites.push([zz as u32, x as u32, y as u32]);
                            s.feats.extend(vals.iter().map(|v| v.to_f32()));
                        }
                    }
                }
            }
        }
        Ok(s)
    }
}
