//! From the data layer's frames to what the metrics take: occupied voxel
//! sets of decoded grids, predictions (voxels with their occupancy scores) of
//! sparse frames, the metric geometry of a layout, and the sparse frame of a
//! predicted grid tensor.

use tch::{Kind, Tensor};

use super::geometry::GridGeometry;
use super::voxels::{Prediction, VoxelSet};
use super::EvalError;
use crate::data::{DataError, Dataset, Grid, Layout, Modality, SparseFrame};

/// The `(H, W, Z)` grid of frames with file grid `(H, W, Z, C)` = `file`
/// laid out by `layout` (padding cropped away; a crop-trained model is
/// evaluated on whole frames).
pub fn layout_dims(file: [usize; 4], layout: Layout) -> [usize; 3] {
    match layout {
        Layout::Pad { .. } | Layout::Crop { .. } => [file[0], file[1], file[2]],
        Layout::Resample { zhw: [z, h, w] } => [h, w, z],
    }
}

/// The voxels of a decoded `(C, Z, H, W)` grid whose channel 0 exceeds
/// `threshold`, within `dims` = `(H, W, Z)` (padding ignored).
pub fn occupied(grid: &Grid, dims: [usize; 3], threshold: f32) -> VoxelSet {
    let [_, zo, ho, wo] = grid.shape;
    let [h, w, z] = dims;
    let mut coords = Vec::new();
    for zi in 0..z.min(zo) {
        for x in 0..h.min(ho) {
            let row = &grid.data[(zi * ho + x) * wo..(zi * ho + x) * wo + w.min(wo)];
            for (y, v) in row.iter().enumerate() {
                if v.to_f32() > threshold {
                    coords.push([x as u32, y as u32, zi as u32]);
                }
            }
        }
    }
    VoxelSet::new(coords)
}

/// [`occupied`] at 0.5 of frame `i`'s `modality`, within `dims` = `(H, W,
/// Z)`: under a pad layout read as the frame's sites (the grid is never
/// built), else from the laid-out grid.
pub fn occupied_frame(ds: &Dataset, i: usize, modality: Modality, dims: [usize; 3]) -> Result<VoxelSet, DataError> {
    let layout = ds.config().layout;
    if !matches!(layout, Layout::Pad { .. }) {
        return Ok(occupied(&ds.read(i, modality)?, dims, 0.5));
    }
    let s = ds.file(i, modality)?.read_sites(layout)?;
    let inside = |c: &[u32; 3]| (0..3).all(|k| (c[k] as usize) < dims[k]);
    let coords = (s.sites.iter().zip(s.feats.chunks_exact(s.channels.max(1))))
        .filter(|(_, f)| f[0] > 0.5)
        .map(|(&[z, h, w], _)| [h, w, z])
        .filter(inside)
        .collect();
    Ok(VoxelSet::new(coords))
}

/// A prediction from a sparse frame whose channel 0 holds occupancy scores.
pub fn prediction(frame: &SparseFrame) -> Result<Prediction, EvalError> {
    let c = frame.shape[3].max(1);
    let values = (0..frame.len()).map(|i| frame.features[i * c] as f32).collect();
    Prediction::new(frame.coords.clone(), values)
}

/// The voxels of a predicted `(C, Z, H, W)` grid whose occupancy score
/// (channel 0) exceeds `floor`, within `dims` = `(H, W, Z)` (padding
/// cropped), as a sparse frame in file order: channel 0 keeps the score,
/// the others the decoded features.
pub fn scores_frame(grid: &Tensor, dims: [usize; 3], floor: f64) -> SparseFrame {
    let [h, w, z] = dims;
    let g = grid
        .to_kind(Kind::Float)
        .to_device(tch::Device::Cpu)
        .narrow(1, 0, z as i64)
        .narrow(2, 0, h as i64)
        .narrow(3, 0, w as i64);
    let c = g.size()[0] as usize;
    // (C, Z, H, W) -> (H, W, Z, C), the file's order
    let hwzc = g.permute([2, 3, 1, 0]).contiguous();
    let mut v = vec![0f32; hwzc.numel()];
    let n = v.len();
    hwzc.copy_data(&mut v, n);
    let (mut coords, mut features) = (Vec::new(), Vec::new());
    for (i, vox) in v.chunks_exact(c).enumerate() {
        if vox[0] as f64 > floor {
            coords.push([(i / (w * z)) as u32, (i / z % w) as u32, (i % z) as u32]);
            features.extend(vox.iter().map(|&f| f as f64));
        }
    }
    SparseFrame { shape: [h, w, z, c], coords, features }
}

/// The per-voxel occupancy probability of several decoded samples of one
/// frame, accumulated one `(C, Z, H, W)` sample at a time (running sums: K
/// samples cost one grid's memory, not K).
#[derive(Debug, Default)]
pub struct SampleMean {
    n: usize,
    occ: Option<Tensor>,
    occ_sq: Option<Tensor>,
    feats: Option<Tensor>,
}

impl SampleMean {
    /// Adds one decoded sample `(C, Z, H, W)`.
    pub fn push(&mut self, grid: &Tensor) {
        let g = grid.to_kind(Kind::Float);
        let occ = g.select(0, 0).clamp(0.0, 1.0);
        let add =
            |acc: &mut Option<Tensor>, t: Tensor| *acc = Some(acc.take().map_or_else(|| t.shallow_clone(), |a| a + &t));
        add(&mut self.occ_sq, &occ * &occ);
        add(&mut self.occ, occ);
        add(&mut self.feats, g.narrow(0, 1, g.size()[0] - 1));
        self.n += 1;
    }

    /// `(C + 1, Z, H, W)`: channel 0 the occupancy probability (the mean of
    /// the samples' occupancy scores clamped to [0, 1]), channels 1..C the
    /// mean decoded features, channel C the spread (the population standard
    /// deviation of the clamped scores); `None` before the first sample.
    pub fn finish(&self) -> Option<Tensor> {
        let k = self.n as f64;
        let (occ, sq, feats) = (self.occ.as_ref()? / k, self.occ_sq.as_ref()? / k, self.feats.as_ref()? / k);
        let spread = (sq - &occ * &occ).clamp_min(0.0).sqrt();
        Some(Tensor::cat(&[occ.unsqueeze(0), feats, spread.unsqueeze(0)], 0))
    }
}

/// The share of `sets` holding each voxel of their union, within `dims` =
/// `(H, W, Z)`, as a one-channel sparse frame in file order (the vote of
/// several scans of one scene: channel 0 a frequency in (0, 1]).
pub fn vote(sets: &[VoxelSet], dims: [usize; 3]) -> SparseFrame {
    let mut counts = std::collections::BTreeMap::<[u32; 3], usize>::new();
    for c in sets.iter().flat_map(|s| s.coords()) {
        *counts.entry(*c).or_default() += 1;
    }
    let k = sets.len().max(1) as f64;
    let (coords, features) = counts.into_iter().map(|(c, n)| (c, n as f64 / k)).unzip();
    SparseFrame { shape: [dims[0], dims[1], dims[2], 1], coords, features }
}

/// The geometry of frames with file grid `file` laid out by `layout`.
pub fn geometry(file: [usize; 4], layout: Layout) -> Result<GridGeometry, EvalError> {
    GridGeometry::of_frames([file[0], file[1], file[2]], layout)
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::f16;

    #[test]
    fn grids_and_frames_become_sets_and_predictions() {
        // (C, Z, H, W) = (2, 2, 3, 4) padded grid of a (2, 3, 1) file grid
        let mut data = vec![f16::ZERO; 2 * 2 * 3 * 4];
        data[4 + 2] = f16::from_f32(1.0); // z 0, x 1, y 2
        data[3 * 4] = f16::from_f32(1.0); // z 1: in the padding
        let grid = Grid { shape: [2, 2, 3, 4], data };
        assert_eq!(occupied(&grid, [2, 3, 1], 0.5).coords(), &[[1, 2, 0]]);
        let t = Tensor::zeros([2, 2, 3, 4], (Kind::Float, tch::Device::Cpu));
        let _ = t.get(0).get(0).get(1).get(2).fill_(0.75);
        let _ = t.get(0).get(0).get(0).get(0).fill_(0.005);
        let f = scores_frame(&t, [2, 3, 1], 0.01);
        assert_eq!((f.coords.clone(), f.shape), (vec![[1, 2, 0]], [2, 3, 1, 2]));
        let p = prediction(&f).unwrap();
        assert_eq!(p.values(), &[0.75]);
        assert_eq!(layout_dims([36, 20, 10, 4], Layout::Resample { zhw: [4, 8, 8] }), [8, 8, 4]);
    }

    #[test]
    fn votes_are_shares_of_the_sets_in_file_order() {
        let a = VoxelSet::new(vec![[1, 0, 0], [0, 2, 1]]);
        let b = VoxelSet::new(vec![[0, 2, 1]]);
        let f = vote(&[a, b, VoxelSet::new(vec![])], [2, 3, 2]);
        assert_eq!((f.shape, f.coords.clone()), ([2, 3, 2, 1], vec![[0, 2, 1], [1, 0, 0]]));
        assert_eq!(f.features, [2.0 / 3.0, 1.0 / 3.0]);
        assert!(vote(&[], [1, 1, 1]).is_empty());
    }

    #[test]
    fn samples_average_to_a_probability_and_a_spread() {
        let grid =
            |occ: [f32; 2], feat: [f32; 2]| Tensor::from_slice(&[occ[0], occ[1], feat[0], feat[1]]).view([2, 1, 1, 2]);
        let mut m = SampleMean::default();
        assert!(m.finish().is_none());
        m.push(&grid([1.3, 0.2], [2.0, 4.0])); // 1.3 counts as 1
        m.push(&grid([0.0, 0.4], [4.0, 8.0]));
        let out = m.finish().unwrap();
        assert_eq!(out.size(), [3, 1, 1, 2]);
        let v = Vec::<f32>::try_from(out.view([-1])).unwrap();
        let want = [0.5, 0.3, 3.0, 6.0, 0.5, 0.1];
        assert!(v.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-6), "{v:?}");
    }
}
