//! Writing predictions for people and tools: the dataset's own sparse
//! `.npz` (numpy and the reader read it back), an occupancy point cloud
//! `.ply` of voxel centres, and bird's-eye-view PNG panels.

use std::io::Write;
use std::path::Path;

use super::geometry::{GridGeometry, Point};
use crate::data::frame::{write_sparse, SparseFrame};
use crate::io::atomic::write_atomic_with;
use crate::io::png::Canvas;

/// The voxels of `frame` whose channel 0 (the occupancy score) exceeds `threshold`.
pub fn above(frame: &SparseFrame, threshold: f64) -> SparseFrame {
    let c = frame.shape[3].max(1);
    let keep: Vec<usize> = (0..frame.len()).filter(|&i| frame.features[i * c] > threshold).collect();
    SparseFrame {
        shape: frame.shape,
        coords: keep.iter().map(|&i| frame.coords[i]).collect(),
        features: keep.iter().flat_map(|&i| frame.features[i * c..(i + 1) * c].iter().copied()).collect(),
    }
}

/// Writes a prediction in the dataset's sparse format (deflated).
pub fn write_prediction_npz(path: &Path, frame: &SparseFrame) -> std::io::Result<()> {
    write_sparse(path, frame, true)
}

/// ASCII PLY of the occupied voxel centres (metres, on `geom`), with
/// intensity; atomic.
pub fn write_ply(path: &Path, frame: &SparseFrame, geom: &GridGeometry) -> std::io::Result<()> {
    write_atomic_with(path, |out| write_ply_to(out, frame, geom))
}

fn write_ply_to(out: &mut dyn Write, frame: &SparseFrame, geom: &GridGeometry) -> std::io::Result<()> {
    let c = frame.shape[3];
    write!(
        out,
        "ply\nformat ascii 1.0\ncomment radvox occupancy, voxel centres in metres\nelement vertex {}\n\
         property float x\nproperty float y\nproperty float z\nproperty float intensity\nend_header\n",
        frame.len()
    )?;
    for (i, xyz) in frame.coords.iter().enumerate() {
        let p = geom.centre(*xyz);
        let intensity = if c > 1 { frame.features[i * c + 1] } else { 0.0 };
        writeln!(out, "{:.3} {:.3} {:.3} {}", p[0], p[1], p[2], intensity)?;
    }
    Ok(())
}

/// Occupied voxel centres of a sparse frame, in metres on `geom`.
pub fn centres(frame: &SparseFrame, geom: &GridGeometry) -> Vec<Point> {
    geom.centres(&frame.coords)
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
        let g = tch::Tensor::zeros([4, 4, 8, 8], (tch::Kind::Float, tch::Device::Cpu));
        let _ = g.get(0).get(2).get(5).get(1).fill_(1.0);
        let _ = g.get(1).get(2).get(5).get(1).fill_(7.5);
        let _ = g.get(0).get(3).get(7).get(7).fill_(1.0); // in the padding: cropped away
        let f = super::super::frames::scores_frame(&g, [6, 5, 3], 0.5);
        assert_eq!(f.coords, vec![[5, 1, 2]]);
        assert_eq!(f.features, vec![1.0, 7.5, 0.0, 0.0]);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("p.npz");
        write_prediction_npz(&p, &f).unwrap();
        assert_eq!(crate::data::frame::read_sparse(&p).unwrap(), f);
        let ply = dir.path().join("p.ply");
        let geom = GridGeometry { dims: [6, 5, 3], ..GridGeometry::NTU4DRADLM };
        write_ply(&ply, &f, &geom).unwrap();
        let text = std::fs::read_to_string(&ply).unwrap();
        assert!(text.contains("element vertex 1") && text.trim_end().ends_with("1.100 -19.700 -5.500 7.5"), "{text}");
    }
}
