//! A map for people and tools: the occupied voxels as `.ply` (centres in
//! metres with their probability) and a bird's-eye PNG with two panels, the
//! occupancy probability (the most likely occupied voxel of each column) and
//! the elevation map.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use super::voxel_map::VoxelMap;
use super::MapError;
use crate::io::atomic::write_atomic_with;
use crate::io::png::Canvas;

/// ASCII PLY of the occupied voxels (centre, probability); atomic.
pub fn write_ply(map: &VoxelMap, path: &Path) -> Result<usize, MapError> {
    let occ = map.occupied();
    write_atomic_with(path, |out: &mut dyn Write| {
        write!(
            out,
            "ply\nformat ascii 1.0\ncomment radvox map, occupied voxel centres in metres (world)\nelement vertex {}\n\
             property float x\nproperty float y\nproperty float z\nproperty float probability\nend_header\n",
            occ.len()
        )?;
        for (k, p) in &occ {
            let c = map.centre(*k);
            writeln!(out, "{:.3} {:.3} {:.3} {:.4}", c[0], c[1], c[2], p)?;
        }
        Ok(())
    })
    .map_err(|source| MapError::Io { path: path.to_path_buf(), source })?;
    Ok(occ.len())
}

/// Colour of a probability: unknown grey; free white to pale blue; occupied
/// orange to black.
fn prob_colour(p: Option<f64>) -> [u8; 3] {
    match p {
        None => [200, 200, 200],
        Some(p) if p < 0.5 => {
            let s = ((0.5 - p) * 2.0 * 80.0) as u8;
            [255 - s, 255 - s / 2, 255]
        }
        Some(p) => {
            let s = ((p - 0.5) * 2.0).clamp(0.0, 1.0);
            [(230.0 * (1.0 - s)) as u8, (120.0 * (1.0 - s)) as u8, 0]
        }
    }
}

/// A blue-green-yellow ramp over `t` in [0, 1].
fn ramp(t: f64) -> [u8; 3] {
    let t = t.clamp(0.0, 1.0);
    [(255.0 * t) as u8, (60.0 + 160.0 * t.min(0.6) / 0.6) as u8, (200.0 * (1.0 - t)) as u8]
}

/// The bird's-eye PNG: world x to the right, y up; a column is one pixel,
/// a square of pixels on a small map, or shares a pixel with its
/// neighbours on a wide one (the most likely of them is drawn).
pub fn write_bev(map: &VoxelMap, path: &Path, title: &str) -> Result<(), MapError> {
    // per column: the highest probability among its observed voxels
    let mut cols: HashMap<(i32, i32), f64> = HashMap::new();
    let (rule, now) = (map.update_rule(), map.now());
    for (k, c) in map.voxels() {
        let p = rule.probability(&c, now);
        cols.entry((k[0], k[1])).and_modify(|q| *q = q.max(p)).or_insert(p);
    }
    let keys = cols.keys().copied().chain(map.dem().iter().map(|(k, _)| k));
    let (mut lo, mut hi) = ((i32::MAX, i32::MAX), (i32::MIN, i32::MIN));
    for (x, y) in keys {
        (lo, hi) = ((lo.0.min(x), lo.1.min(y)), (hi.0.max(x), hi.1.max(y)));
    }
    if lo.0 > hi.0 {
        (lo, hi) = ((0, 0), (0, 0));
    }
    let (nx, ny) = ((hi.0 - lo.0 + 1) as usize, (hi.1 - lo.1 + 1) as usize);
    // one pixel a column, several on a small map, the most likely of a
    // few columns on a wide one
    let step = nx.div_ceil(1600).max(ny.div_ceil(600)).max(1);
    let zoom = if step == 1 { (1600 / nx).min(300 / ny).max(1) } else { 1 };
    let (w, h) = (nx.div_ceil(step), ny.div_ceil(step));
    let cell = |x: i32, y: i32| (((x - lo.0) as usize) / step, h - 1 - ((y - lo.1) as usize) / step);
    let mut prob: Vec<Option<f64>> = vec![None; w * h];
    for (&(x, y), &p) in &cols {
        let (px, py) = cell(x, y);
        let slot = &mut prob[py * w + px];
        *slot = Some(slot.map_or(p, |q: f64| q.max(p)));
    }
    let mut dem: Vec<Option<f64>> = vec![None; w * h];
    let (mut zmin, mut zmax) = (f64::INFINITY, f64::NEG_INFINITY);
    for ((x, y), col) in map.dem().iter() {
        let (px, py) = cell(x, y);
        let slot = &mut dem[py * w + px];
        *slot = Some(slot.map_or(col.mean, |m: f64| m.max(col.mean)));
        (zmin, zmax) = (zmin.min(col.mean), zmax.max(col.mean));
    }
    let (pw, ph, top) = (w * zoom, h * zoom, 30);
    let mut c = Canvas::new(pw.max(700) + 20, 2 * (ph + top) + 40);
    c.text(10, 8, &format!("{title}: OCCUPANCY PROBABILITY (GREY UNKNOWN, BLUE FREE, BLACK OCCUPIED)"), [0, 0, 0], 1);
    let span = (zmax - zmin).max(1e-6);
    let dem_title = format!("ELEVATION (TOP SURFACE) {zmin:.1} M BLUE .. {zmax:.1} M YELLOW, GREY UNOBSERVED");
    c.text(10, (ph + top + 18) as i64, &dem_title, [0, 0, 0], 1);
    for yy in 0..ph {
        for xx in 0..pw {
            let i = (yy / zoom) * w + xx / zoom;
            c.put((10 + xx) as i64, (top + yy) as i64, prob_colour(prob[i]));
            let d = dem[i].map_or([200, 200, 200], |m| ramp((m - zmin) / span));
            c.put((10 + xx) as i64, (2 * top + ph + 10 + yy) as i64, d);
        }
    }
    c.save_png(path).map_err(|source| MapError::Io { path: path.to_path_buf(), source })
}
