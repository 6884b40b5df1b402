//! Ground removal for LiDAR clouds (the radar is never ground-filtered).
//!
//! # Method: seeded RANSAC prior + cell-wise least-squares planes
//!
//! 1. **Seeds.** The x-y plane is cut into square cells of `cell` metres;
//!    the lowest finite point of each cell is a ground seed candidate.
//! 2. **Global prior.** A RANSAC plane (ChaCha8, fixed `seed`, so results are
//!    reproducible) is fitted to the seeds: planes tilted more than
//!    `max_tilt_deg` are rejected; the best (most inliers within
//!    `ransac_inlier`) is refined by least squares `z = a x + b y + c` on its
//!    inliers. Being fitted to per-cell minima, it sits a few noise sigmas low;
//!    the local planes remove that bias.
//! 3. **Local planes, grown outwards.** Cells are visited in order of
//!    distance from the sensor. Each cell's *prior* is the plane of an
//!    already fitted neighbouring cell (edge neighbours first), else the
//!    global plane. Points within `local_band` of the prior are fitted by
//!    least squares, then refitted on the points within `local_band / 2` of
//!    that fit. The fit is accepted when it has at least `local_min_points`
//!    support, a tilt below `max_tilt_deg` and an offset from the prior (at
//!    the cell centre) below `local_max_offset`; otherwise the cell uses its
//!    prior. Planes thus follow gentle curvature and ramps outwards from the
//!    sensor, where one global plane drifts off.
//! 4. **Labels.** A point is ground when its height above its cell's plane is
//!    below `threshold` (points below the plane, e.g. reflection noise, are
//!    ground too). Non-finite points are never labelled ground, so the
//!    voxelizer still counts them.
//!
//! # How it differs from Patchwork++ (the original pipeline's filter)
//!
//! Patchwork++ splits the scan into a *concentric zone model* (rings of
//! polar bins whose size grows with range), fits each bin's plane by
//! *region-wise PCA* on seeds selected from the lowest points, and accepts or
//! rejects each bin by *adaptive thresholds* (uprightness, elevation and
//! flatness learned online from previous scans), with reflected-noise removal
//! and temporal ground revert. This module uses a uniform Cartesian grid
//! (fine near the sensor and far alike), least-squares height fits instead of
//! PCA, one fixed height threshold, a global RANSAC plane as the prior and
//! fallback instead of per-ring adaptivity, and keeps no state between frames.
//! It is therefore simpler and fully deterministic per frame, but less
//! adaptive on steep or strongly curved terrain, kerbs and very sparse far
//! bins (where it falls back to the global plane).

use std::collections::HashMap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::cloud::PointCloud;

/// Parameters of [`remove_ground`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GroundParams {
    /// Cell edge in metres (seeds and local planes).
    pub cell: f64,
    /// RANSAC iterations.
    pub ransac_iters: usize,
    /// RANSAC inlier distance (metres, vertical).
    pub ransac_inlier: f64,
    /// Largest accepted plane tilt from horizontal (degrees).
    pub max_tilt_deg: f64,
    /// Band around the global plane used for local fits (metres).
    pub local_band: f64,
    /// Fewest points supporting a local plane.
    pub local_min_points: usize,
    /// Largest offset of a local plane from the global one (metres).
    pub local_max_offset: f64,
    /// Height above the plane below which a point is ground (metres).
    pub threshold: f64,
    /// RANSAC seed.
    pub seed: u64,
}

impl Default for GroundParams {
    fn default() -> Self {
        GroundParams {
            cell: 4.0,
            ransac_iters: 200,
            ransac_inlier: 0.15,
            max_tilt_deg: 15.0,
            local_band: 0.3,
            local_min_points: 20,
            local_max_offset: 0.5,
            threshold: 0.25,
            seed: 0x5eed,
        }
    }
}

/// What ground removal found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct GroundStats {
    /// Points labelled ground (removed).
    pub removed: usize,
    /// Global plane `z = a x + b y + c` as `[a, b, c]`, if one was found.
    pub plane: Option<[f64; 3]>,
    /// Cells that used a local plane.
    pub local_planes: usize,
}

type Plane = [f64; 3];

fn height(p: &Plane, x: f64, y: f64, z: f64) -> f64 {
    z - (p[0] * x + p[1] * y + p[2])
}

fn tilt_ok(p: &Plane, max_tilt_deg: f64) -> bool {
    (p[0] * p[0] + p[1] * p[1]).sqrt() <= max_tilt_deg.to_radians().tan()
}

/// Least-squares `z = a x + b y + c` (coordinates centred for conditioning).
fn fit_plane(pts: &[[f64; 3]]) -> Option<Plane> {
    if pts.len() < 3 {
        return None;
    }
    let n = pts.len() as f64;
    let (mx, my, mz) = pts.iter().fold((0.0, 0.0, 0.0), |a, p| (a.0 + p[0], a.1 + p[1], a.2 + p[2]));
    let (mx, my, mz) = (mx / n, my / n, mz / n);
    let (mut sxx, mut sxy, mut syy, mut sxz, mut syz) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for p in pts {
        let (x, y, z) = (p[0] - mx, p[1] - my, p[2] - mz);
        sxx += x * x;
        sxy += x * y;
        syy += y * y;
        sxz += x * z;
        syz += y * z;
    }
    let det = sxx * syy - sxy * sxy;
    if det.abs() < 1e-9 * (sxx * syy).max(1e-12) {
        return None;
    }
    let a = (sxz * syy - syz * sxy) / det;
    let b = (syz * sxx - sxz * sxy) / det;
    Some([a, b, mz - a * mx - b * my])
}

fn plane_through(p: [f64; 3], q: [f64; 3], r: [f64; 3]) -> Option<Plane> {
    let (u, v) = ([q[0] - p[0], q[1] - p[1], q[2] - p[2]], [r[0] - p[0], r[1] - p[1], r[2] - p[2]]);
    let n = [u[1] * v[2] - u[2] * v[1], u[2] * v[0] - u[0] * v[2], u[0] * v[1] - u[1] * v[0]];
    if n[2].abs() < 1e-9 {
        return None;
    }
    let (a, b) = (-n[0] / n[2], -n[1] / n[2]);
    Some([a, b, p[2] - a * p[0] - b * p[1]])
}

fn ransac(seeds: &[[f64; 3]], prm: &GroundParams) -> Option<Plane> {
    if seeds.len() < 3 {
        return None;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(prm.seed);
    let mut best: Option<(usize, Plane)> = None;
    for _ in 0..prm.ransac_iters {
        let i = rng.random_range(0..seeds.len());
        let j = rng.random_range(0..seeds.len());
        let k = rng.random_range(0..seeds.len());
        if i == j || j == k || i == k {
            continue;
        }
        let Some(p) = plane_through(seeds[i], seeds[j], seeds[k]) else { continue };
        if !tilt_ok(&p, prm.max_tilt_deg) {
            continue;
        }
        let inliers = seeds.iter().filter(|s| height(&p, s[0], s[1], s[2]).abs() < prm.ransac_inlier).count();
        if best.is_none_or(|(n, _)| inliers > n) {
            best = Some((inliers, p));
        }
    }
    let (_, mut plane) = best?;
    for _ in 0..2 {
        let inl: Vec<[f64; 3]> =
            seeds.iter().copied().filter(|s| height(&plane, s[0], s[1], s[2]).abs() < prm.ransac_inlier).collect();
        match fit_plane(&inl) {
            Some(p) if tilt_ok(&p, prm.max_tilt_deg) => plane = p,
            _ => break,
        }
    }
    Some(plane)
}

/// Labels each point of a cloud: `true` = ground. See the module docs.
pub fn classify_ground(cloud: &PointCloud, prm: &GroundParams) -> (Vec<bool>, GroundStats) {
    let mut labels = vec![false; cloud.len()];
    let mut stats = GroundStats::default();
    if cloud.cols < 3 || prm.cell.is_nan() || prm.cell <= 0.0 {
        return (labels, stats);
    }
    let mut cells: HashMap<(i64, i64), Vec<usize>> = HashMap::new();
    for (i, r) in cloud.rows().enumerate() {
        if r[..3].iter().all(|v| v.is_finite()) {
            let key = ((f64::from(r[0]) / prm.cell).floor() as i64, (f64::from(r[1]) / prm.cell).floor() as i64);
            cells.entry(key).or_default().push(i);
        }
    }
    let xyz = |i: usize| {
        let r = cloud.row(i);
        [f64::from(r[0]), f64::from(r[1]), f64::from(r[2])]
    };
    let mut keys: Vec<(i64, i64)> = cells.keys().copied().collect();
    keys.sort_unstable();
    let seeds: Vec<[f64; 3]> =
        keys.iter().filter_map(|k| cells[k].iter().map(|&i| xyz(i)).min_by(|a, b| a[2].total_cmp(&b[2]))).collect();
    let Some(global) = ransac(&seeds, prm) else { return (labels, stats) };
    stats.plane = Some(global);
    // Cells in order of distance from the sensor, so each can take its prior
    // from an already fitted neighbour nearer to the sensor.
    let centre = |k: &(i64, i64)| ((k.0 as f64 + 0.5) * prm.cell, (k.1 as f64 + 0.5) * prm.cell);
    keys.sort_by(|a, b| {
        let (da, db) = (centre(a), centre(b));
        (da.0.hypot(da.1)).total_cmp(&db.0.hypot(db.1)).then(a.cmp(b))
    });
    let mut fitted: HashMap<(i64, i64), Plane> = HashMap::new();
    for key in &keys {
        let prior = NEIGHBOURS.iter().find_map(|d| fitted.get(&(key.0 + d.0, key.1 + d.1)).copied()).unwrap_or(global);
        let idx = &cells[key];
        let pts: Vec<[f64; 3]> = idx.iter().map(|&i| xyz(i)).collect();
        let plane = match local_plane(&pts, &prior, centre(key), prm) {
            Some(p) => {
                stats.local_planes += 1;
                fitted.insert(*key, p);
                p
            }
            None => prior,
        };
        for (&i, p) in idx.iter().zip(&pts) {
            if height(&plane, p[0], p[1], p[2]) < prm.threshold {
                labels[i] = true;
                stats.removed += 1;
            }
        }
    }
    (labels, stats)
}

/// Neighbour offsets, edge-sharing first, then diagonals.
const NEIGHBOURS: [(i64, i64); 8] = [(-1, 0), (1, 0), (0, -1), (0, 1), (-1, -1), (-1, 1), (1, -1), (1, 1)];

fn local_plane(pts: &[[f64; 3]], prior: &Plane, (cx, cy): (f64, f64), prm: &GroundParams) -> Option<Plane> {
    let band = |p: &Plane, w: f64| -> Vec<[f64; 3]> {
        pts.iter().copied().filter(|q| height(p, q[0], q[1], q[2]).abs() < w).collect()
    };
    let first = band(prior, prm.local_band);
    if first.len() < prm.local_min_points {
        return None;
    }
    let p1 = fit_plane(&first)?;
    let second = band(&p1, prm.local_band / 2.0);
    if second.len() < prm.local_min_points {
        return None;
    }
    let p2 = fit_plane(&second)?;
    let offset = (p2[0] * cx + p2[1] * cy + p2[2]) - (prior[0] * cx + prior[1] * cy + prior[2]);
    (tilt_ok(&p2, prm.max_tilt_deg) && offset.abs() < prm.local_max_offset).then_some(p2)
}

/// Removes the ground points of a LiDAR cloud (non-finite points are kept
/// for the voxelizer to count).
pub fn remove_ground(cloud: &PointCloud, prm: &GroundParams) -> (PointCloud, GroundStats) {
    let (labels, stats) = classify_ground(cloud, prm);
    (cloud.retain_rows(|i, _| !labels[i]), stats)
}
