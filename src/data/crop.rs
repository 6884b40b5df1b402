//! Random crops at native resolution, cut straight from the frame file: a
//! sparse `.npz` contributes only its listed voxels inside the box, a dense
//! `.npy` only the H rows the box spans (the rest of the map is never
//! decoded, except to find occupied voxels when a crop is centred on one).
//! A box reaching past the grid is zero there, as padding would be.
//!
//! Origins are `(z, h, w)` corners in the output grid; `(h, w)` are the
//! file's `(x, y)`. A draw picks, with probability `focus`%, a box centred
//! (clamped into the grid) on a uniformly chosen occupied target voxel
//! (channel 0 non-zero), otherwise a uniform corner; an empty frame always
//! gets a uniform one.

use half::f16;
use rand::Rng;

use super::frame::SparseFrame;
use super::layout::{f64_to_f16, is_inf_or_nan, BadValue, DenseView};

/// Where a crop is cut.
#[derive(Debug)]
pub enum CropAt<'r, R: Rng> {
    /// The centre of the grid (deterministic reads: `Dataset::read`).
    Centre,
    /// This `(z, h, w)` corner (the radar of a frame whose target was drawn).
    Origin([usize; 3]),
    /// A seeded draw, `focus`% of them centred on an occupied voxel.
    Draw {
        /// Percentage of draws centred on an occupied voxel.
        focus: u8,
        /// The draw's generator.
        rng: &'r mut R,
    },
}

/// `(Z, H, W)` of a file of shape `(H, W, Z, C)`.
fn grid_zhw(hwzc: [usize; 4]) -> [usize; 3] {
    [hwzc[2], hwzc[0], hwzc[1]]
}

/// The corner of a `zhw` box centred on the grid (clamped at 0).
pub fn centre(hwzc: [usize; 4], zhw: [usize; 3]) -> [usize; 3] {
    let g = grid_zhw(hwzc);
    std::array::from_fn(|a| g[a].saturating_sub(zhw[a]) / 2)
}

/// Draws a corner (see the module docs); `occupied` lists `(x, y, z)`.
pub fn draw(hwzc: [usize; 4], zhw: [usize; 3], focus: u8, occupied: &[[u32; 3]], rng: &mut impl Rng) -> [usize; 3] {
    let g = grid_zhw(hwzc);
    let span: [usize; 3] = std::array::from_fn(|a| g[a].saturating_sub(zhw[a]));
    if !occupied.is_empty() && rng.random_range(0..100u32) < focus as u32 {
        let [x, y, z] = occupied[rng.random_range(0..occupied.len())].map(|v| v as usize);
        let at = [z, x, y];
        return std::array::from_fn(|a| at[a].saturating_sub(zhw[a] / 2).min(span[a]));
    }
    std::array::from_fn(|a| rng.random_range(0..=span[a]))
}

/// Whether `(x, y, z)` lies in the box at `origin`; its offset there.
fn inside(xyz: [usize; 3], origin: [usize; 3], zhw: [usize; 3]) -> Option<[usize; 3]> {
    let [x, y, z] = xyz;
    let at = [z, x, y];
    let mut off = [0; 3];
    for a in 0..3 {
        off[a] = at[a].checked_sub(origin[a]).filter(|&o| o < zhw[a])?;
    }
    Some(off)
}

/// Occupied voxels (channel 0 non-zero) of a sparse frame.
pub fn sparse_occupied(frame: &SparseFrame) -> Vec<[u32; 3]> {
    let c = frame.shape[3];
    frame.coords.iter().enumerate().filter(|(i, _)| frame.features[i * c] != 0.0).map(|(_, &xyz)| xyz).collect()
}

/// Writes the box of a sparse frame at `origin` into `out` `(C, Z, H, W)`.
pub fn sparse_crop_into(
    frame: &SparseFrame,
    origin: [usize; 3],
    zhw: [usize; 3],
    out: &mut [f16],
) -> Result<(), BadValue> {
    let c = frame.shape[3];
    let [zo, ho, wo] = zhw;
    assert_eq!(out.len(), c * zo * ho * wo, "crop buffer size");
    out.fill(f16::ZERO);
    for (i, xyz) in frame.coords.iter().enumerate() {
        let voxel = xyz.map(|v| v as usize);
        let Some([z, h, w]) = inside(voxel, origin, zhw) else { continue };
        for (ci, &v) in frame.features[i * c..(i + 1) * c].iter().enumerate() {
            let hv = f64_to_f16(v);
            if is_inf_or_nan(hv) {
                return Err(BadValue { voxel, channel: ci, value: v });
            }
            out[((ci * zo + z) * ho + h) * wo + w] = hv;
        }
    }
    Ok(())
}

/// Occupied voxels (channel 0 non-zero) of a dense frame: reads every row.
pub fn dense_occupied(view: &DenseView) -> Result<Vec<[u32; 3]>, BadValue> {
    let [h, w, z, c] = view.shape;
    let (mut row, mut buf, mut found) = (vec![f16::ZERO; w * z * c], Vec::new(), Vec::new());
    for x in 0..h {
        view.decode_row(x, &mut row, &mut buf)?;
        for (k, v) in row.iter().step_by(c).enumerate() {
            if v.to_bits() & 0x7fff != 0 {
                found.push([x as u32, (k / z) as u32, (k % z) as u32]);
            }
        }
    }
    Ok(found)
}

/// Writes the box of a dense frame at `origin` into `out`, decoding only
/// the rows it spans.
pub fn dense_crop_into(view: &DenseView, origin: [usize; 3], zhw: [usize; 3], out: &mut [f16]) -> Result<(), BadValue> {
    let [h, w, z, c] = view.shape;
    let [zo, ho, wo] = zhw;
    assert_eq!(out.len(), c * zo * ho * wo, "crop buffer size");
    out.fill(f16::ZERO);
    let mut row = vec![f16::ZERO; w * z * c];
    let mut buf = Vec::new();
    for hi in 0..ho.min(h.saturating_sub(origin[1])) {
        let x = origin[1] + hi;
        view.decode_row(x, &mut row, &mut buf)?;
        for wi in 0..wo.min(w.saturating_sub(origin[2])) {
            let y = origin[2] + wi;
            for zi in 0..zo.min(z.saturating_sub(origin[0])) {
                let src = (y * z + origin[0] + zi) * c;
                for ci in 0..c {
                    out[((ci * zo + zi) * ho + hi) * wo + wi] = row[src + ci];
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn draws_stay_in_the_grid_and_focus_lands_on_occupied_voxels() {
        let shape = [40, 30, 10, 4];
        let occupied = [[35u32, 2, 9]];
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for _ in 0..200 {
            let o = draw(shape, [8, 16, 16], 100, &occupied, &mut rng);
            // clamped so the box stays inside, and it contains the voxel
            assert_eq!(o, [2, 24, 0]);
            assert!(inside([35, 2, 9], o, [8, 16, 16]).is_some());
            let u = draw(shape, [8, 16, 16], 0, &occupied, &mut rng);
            assert!(u[0] <= 2 && u[1] <= 24 && u[2] <= 14, "{u:?}");
        }
        // a box larger than the grid starts at 0
        assert_eq!(draw(shape, [16, 64, 64], 0, &[], &mut rng), [0, 0, 0]);
        assert_eq!(centre(shape, [8, 16, 16]), [1, 12, 7]);
    }
}
