//! Writing predictions for people and tools: the dataset's own sparse
//! `.npz` (numpy and the reader read it back), an occupancy point cloud
//! `.ply` of voxel centres, and bird's-eye-view PNG panels.

use std::io::Write;
use std::path::Path;

use tch::{Kind, Tensor};

use super::metrics::voxel_centre;
use crate::data::frame::{write_sparse, SparseFrame};
use crate::io::atomic::write_atomic_with;
use crate::io::png::Canvas;

/// Voxels of a `(C, Z, H, W)` grid whose occupancy exceeds `threshold`,
/// cropped to the file grid `(H, W, Z)`, as a sparse frame in file order.
pub fn to_sparse(grid: &Tensor, hwz: [usize; 3], threshold: f64) -> SparseFrame {
    let [h, w, z] = hwz;
    let g = grid
        .to_kind(Kind::Float)
        .to_device(tch::Device::Cpu)
        .narrow(1, 0, z as i64)
        .narrow(2, 0, h as i64)
        .narrow(3, 0, w as i64);
    let c = g.size()[0] as usize;
    // (C, Z, H, W) -> (H, W, Z, C), the file's order.
    let hwzc = g.permute([2, 3, 1, 0]).contiguous();
    let mut v = vec![0f32; hwzc.numel()];
    let n = v.len();
    hwzc.copy_data(&mut v, n);
    let (mut coords, mut features) = (Vec::new(), Vec::new());
    for (i, vox) in v.chunks_exact(c).enumerate() {
        if vox[0] as f64 > threshold {
            coords.push([(i / (w * z)) as u32, (i / z % w) as u32, (i % z) as u32]);
            features.extend(vox.iter().map(|&f| f as f64));
        }
    }
    SparseFrame { shape: [h, w, z, c], coords, features }
}

/// Writes a prediction in the dataset's sparse format (deflated).
pub fn write_prediction_npz(path: &Path, frame: &SparseFrame) -> std::io::Result<()> {
    write_sparse(path, frame, true)
}

/// ASCII PLY of the occupied voxel centres (metres), with intensity; atomic.
pub fn write_ply(path: &Path, frame: &SparseFrame) -> std::io::Result<()> {
    write_atomic_with(path, |out| write_ply_to(out, frame))
}

fn write_ply_to(out: &mut dyn Write, frame: &SparseFrame) -> std::io::Result<()> {
    let c = frame.shape[3];
    write!(
        out,
        "ply\nformat ascii 1.0\ncomment radvox occupancy, voxel centres in metres\nelement vertex {}\n\
         property float x\nproperty float y\nproperty float z\nproperty float intensity\nend_header\n",
        frame.len()
    )?;
    for (i, xyz) in frame.coords.iter().enumerate() {
        let p = voxel_centre(xyz.map(|v| v as usize));
        let intensity = if c > 1 { frame.features[i * c + 1] } else { 0.0 };
        writeln!(out, "{} {} {} {}", p[0], p[1], p[2], intensity)?;
    }
    Ok(())
}

/// Occupied voxel centres of a sparse frame.
pub fn centres(frame: &SparseFrame) -> Vec<[f32; 3]> {
    frame.coords.iter().map(|xyz| voxel_centre(xyz.map(|v| v as usize))).collect()
}

/// One bird's-eye-view panel (max occupancy over Z, x forward = up) per
/// titled frame, side by side.
pub fn bev_panels(panels: &[(&str, &SparseFrame)]) -> Canvas {
    let [h, w, _, _] = panels.first().map(|p| p.1.shape).unwrap_or([1, 1, 1, 1]);
    let scale = (600 / h.max(1)).max(1);
    let (pw, ph) = (w * scale, h * scale);
    let mut c = Canvas::new(panels.len() * (pw + 20) + 20, ph + 50);
    for (k, (title, frame)) in panels.iter().enumerate() {
        let x0 = 20 + k * (pw + 20);
        c.text(x0 as i64, 10, title, [0, 0, 0], 2);
        for yy in 0..ph {
            for xx in 0..pw {
                c.put((x0 + xx) as i64, (40 + yy) as i64, [235, 235, 235]);
            }
        }
        for xyz in &frame.coords {
            let (row, col) = (h - 1 - xyz[0] as usize, xyz[1] as usize);
            for a in 0..scale {
                for b in 0..scale {
                    c.put((x0 + col * scale + b) as i64, (40 + row * scale + a) as i64, [20, 20, 120]);
                }
            }
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_export_round_trips_through_the_reader() {
        // (C, Z, H, W) = (4, 4, 8, 8) padded grid of a (6, 5, 3) file grid.
        let g = Tensor::zeros([4, 4, 8, 8], (Kind::Float, tch::Device::Cpu));
        let _ = g.get(0).get(2).get(5).get(1).fill_(1.0);
        let _ = g.get(1).get(2).get(5).get(1).fill_(7.5);
        let _ = g.get(0).get(3).get(7).get(7).fill_(1.0); // in the padding: cropped away
        let f = to_sparse(&g, [6, 5, 3], 0.5);
        assert_eq!(f.coords, vec![[5, 1, 2]]);
        assert_eq!(f.features, vec![1.0, 7.5, 0.0, 0.0]);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("p.npz");
        write_prediction_npz(&p, &f).unwrap();
        assert_eq!(crate::data::frame::read_sparse(&p).unwrap(), f);
        let ply = dir.path().join("p.ply");
        write_ply(&ply, &f).unwrap();
        let text = std::fs::read_to_string(&ply).unwrap();
        assert!(text.contains("element vertex 1") && text.trim_end().ends_with("1.1 -19.7 -5.5 7.5"), "{text}");
    }
}
