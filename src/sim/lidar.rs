//! The LiDAR model: a Livox-like non-repetitive rosette scan over a forward
//! field of view, ray cast against the scene.
//!
//! Beam pattern: sample `s` (counted across frames, so consecutive frames
//! cover different directions) points at `p = (e^{i w1 s} + e^{i w2 s}) / 2`,
//! the sum of two counter-rotating prism deflections, mapped to azimuth
//! `Re p * h_fov / 2` and elevation `Im p * v_fov / 2`. Per return: Gaussian
//! range noise, dropout (base + surface + grazing), foliage penetration
//! (exponential, mean 0.3 m), and reflectivity from the surface scaled by
//! incidence (`0.35 + 0.65 cos`) with 10 % multiplicative noise, clamped to
//! 0-255. The scan is instantaneous (no motion distortion).

use std::f64::consts::TAU;

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Exp1, StandardNormal};

use super::config::LidarConfig;
use super::geom::V3;
use super::material::Surface;
use super::view::View;
use crate::data::voxelize::{PointCloud, LIDAR_COLS};

/// Azimuth and elevation (radians) of rosette sample `s`.
pub fn rosette_angles(cfg: &LidarConfig, s: u64) -> (f64, f64) {
    let s = s as f64;
    let (a1, a2) = (TAU * s / cfg.prism_periods[0], TAU * s / cfg.prism_periods[1]);
    let (px, py) = (0.5 * (a1.cos() + a2.cos()), 0.5 * (a1.sin() + a2.sin()));
    (px * cfg.h_fov_deg.to_radians() / 2.0, py * cfg.v_fov_deg.to_radians() / 2.0)
}

/// Unit direction of rosette sample `s` (sensor frame).
pub fn rosette_direction(cfg: &LidarConfig, s: u64) -> V3 {
    let (az, el) = rosette_angles(cfg, s);
    V3::from_angles(az, el)
}

/// Rosette angles of consecutive samples, by rotating the two prism phasors
/// (one complex multiplication each per sample instead of two sines and
/// cosines; re-anchored exactly every 4096 samples).
struct Rosette {
    s: u64,
    p: [(f64, f64); 2],
    step: [(f64, f64); 2],
    scale: (f64, f64),
    periods: [f64; 2],
}

impl Rosette {
    fn new(cfg: &LidarConfig, start: u64) -> Self {
        let step = [0, 1].map(|k| (TAU / cfg.prism_periods[k]).sin_cos()).map(|(s, c)| (c, s));
        let scale = (cfg.h_fov_deg.to_radians() / 2.0, cfg.v_fov_deg.to_radians() / 2.0);
        let mut r = Rosette { s: start, p: [(1.0, 0.0); 2], step, scale, periods: cfg.prism_periods };
        r.anchor();
        r
    }

    fn anchor(&mut self) {
        let s = self.s as f64;
        self.p = [0, 1].map(|k| (TAU * s / self.periods[k]).sin_cos()).map(|(s, c)| (c, s));
    }

    fn next_angles(&mut self) -> (f64, f64) {
        let [(c1, s1), (c2, s2)] = self.p;
        let out = (0.5 * (c1 + c2) * self.scale.0, 0.5 * (s1 + s2) * self.scale.1);
        self.s += 1;
        if self.s.is_multiple_of(4096) {
            self.anchor();
        } else {
            for k in 0..2 {
                let ((c, s), (dc, ds)) = (self.p[k], self.step[k]);
                self.p[k] = (c * dc - s * ds, s * dc + c * ds);
            }
        }
        out
    }
}

/// Simulates one LiDAR frame (rows `x, y, z, reflectivity`, sensor frame).
/// Expects a validated config ([`super::SimConfig::validate`]).
pub fn scan_lidar(view: &View, cfg: &LidarConfig, frame: usize, rng: &mut ChaCha8Rng) -> PointCloud {
    let n = cfg.points_per_frame;
    let mut cloud = PointCloud::with_capacity(LIDAR_COLS, n);
    let mut rosette = Rosette::new(cfg, (frame * n) as u64);
    for _ in 0..n {
        let (az, el) = rosette.next_angles();
        let u = V3::from_angles(az, el);
        let Some(hit) = view.cast_dir(u, az, el, cfg.range[1]) else { continue };
        if hit.t < cfg.range[0] {
            continue;
        }
        let cos = hit.normal.dot(u).abs();
        let dropout = cfg.dropout + hit.surface.lidar_dropout() + 0.2 * (1.0 - cos);
        if rng.random::<f64>() < dropout {
            continue;
        }
        let noise: f64 = rng.sample(StandardNormal);
        let mut t = hit.t + noise * cfg.range_sigma;
        if hit.surface == Surface::Foliage {
            let depth: f64 = rng.sample(Exp1);
            t += 0.3 * depth;
        }
        let jitter: f64 = rng.sample(StandardNormal);
        let refl = (hit.surface.reflectivity() * (0.35 + 0.65 * cos) * (1.0 + 0.1 * jitter)).clamp(0.0, 255.0);
        let p = u * t;
        cloud.push(&[p.x as f32, p.y as f32, p.z as f32, refl.round() as f32]);
    }
    cloud
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incremental_rosette_matches_direct_evaluation() {
        let cfg = LidarConfig::default();
        let start = 7 * cfg.points_per_frame as u64 + 4000;
        let mut r = Rosette::new(&cfg, start);
        for s in start..start + 20_000 {
            let (a, b) = (r.next_angles(), rosette_angles(&cfg, s));
            assert!((a.0 - b.0).abs() < 1e-9 && (a.1 - b.1).abs() < 1e-9, "sample {s}: {a:?} vs {b:?}");
        }
    }
}
