//! The radar model: sparse, noisy detections concentrated on strong
//! reflectors, with Doppler.
//!
//! A jittered grid of probe rays covers the field of view; each probe that
//! hits a surface becomes a detection with probability `surface detect x
//! detect_scale x (0.3 + 0.7 cos incidence) x range factor` (1 up to 50 m,
//! falling linearly to 0.4 at 150 m), or `corner_detect` near a vertical box
//! edge (facade and vehicle corners). So poles, vehicles and corners dominate,
//! facades are sampled thinly and the ground rarely.
//!
//! Per detection: Gaussian noise in range, azimuth and elevation (an
//! `outlier_probability` share gets `outlier_scale` times more), intensity
//! `rcs_db + 100 - 40 log10(r) + 10 log10(cos)` plus 2 dB noise (clamped at
//! 0), and Doppler.
//!
//! **Doppler sign convention:** Doppler is the radial velocity, the rate of
//! change of range: `v_r = (v_target - v_ego) . u` with `u` the unit vector
//! from the sensor to the (true) reflecting point; positive = receding. A
//! static point therefore reads `-(v_ego . u)`: negative ahead of a forward
//! moving ego. Gaussian noise `doppler_sigma` is added.
//!
//! Artefacts: multipath ghosts (a detection on a vehicle, pole or building
//! spawns, with `ghost_probability`, a copy `ghost_range` metres further along
//! the same measured ray, 8 dB weaker, same Doppler), and `clutter_points`
//! uniform clutter detections per frame (static Doppler, low intensity).

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

use super::config::RadarConfig;
use super::geom::V3;
use super::view::{RayHit, View};
use crate::data::voxelize::{PointCloud, RADAR_COLS};

fn gauss(rng: &mut ChaCha8Rng) -> f64 {
    rng.sample(StandardNormal)
}

fn push(cloud: &mut PointCloud, p: V3, intensity: f64, doppler: f64) {
    cloud.push(&[p.x as f32, p.y as f32, p.z as f32, intensity as f32, doppler as f32]);
}

/// Simulates one radar frame (rows `x, y, z, intensity, doppler`). Expects a
/// validated config ([`super::SimConfig::validate`]).
pub fn scan_radar(view: &View, cfg: &RadarConfig, rng: &mut ChaCha8Rng) -> PointCloud {
    let mut cloud = PointCloud::empty(RADAR_COLS);
    let (h, v) = (cfg.h_fov_deg.to_radians() / 2.0, cfg.v_fov_deg.to_radians() / 2.0);
    let (da, de) = (cfg.probe_step_deg[0].to_radians().max(1e-4), cfg.probe_step_deg[1].to_radians().max(1e-4));
    let (na, ne) = ((2.0 * h / da).ceil() as usize, (2.0 * v / de).ceil() as usize);
    for i in 0..na {
        for j in 0..ne {
            let az = -h + (i as f64 + rng.random::<f64>()) * da;
            let el = -v + (j as f64 + rng.random::<f64>()) * de;
            let u = V3::from_angles(az, el);
            let Some(hit) = view.cast_dir(u, az, el, cfg.max_range) else { continue };
            let cos = hit.normal.dot(u).abs();
            let range_factor = if hit.t < 50.0 { 1.0 } else { (1.0 - 0.6 * (hit.t - 50.0) / 100.0).max(0.4) };
            let mut p = hit.surface.radar_detect() * cfg.detect_scale * (0.3 + 0.7 * cos) * range_factor;
            if hit.edge {
                p = p.max(cfg.corner_detect);
            }
            if rng.random::<f64>() < p {
                detection(&mut cloud, &hit, u, cos, cfg, rng);
            }
        }
    }
    for _ in 0..if h > 0.0 { cfg.clutter_points } else { 0 } {
        let az = rng.random_range(-h..h);
        let el = (gauss(rng) * 4f64.to_radians()).clamp(-v, v);
        let u = V3::from_angles(az, el);
        let r = rng.random_range(3.0..cfg.max_range.clamp(3.1, 100.0));
        let doppler = view.static_rel_vel().dot(u) + gauss(rng) * cfg.doppler_sigma;
        push(&mut cloud, u * r, rng.random_range(0.0..8.0), doppler);
    }
    cloud
}

fn detection(cloud: &mut PointCloud, hit: &RayHit, u: V3, cos: f64, cfg: &RadarConfig, rng: &mut ChaCha8Rng) {
    let (_, az, el) = u.to_spherical();
    let k = if rng.random::<f64>() < cfg.outlier_probability { cfg.outlier_scale } else { 1.0 };
    let r = (hit.t + gauss(rng) * cfg.range_sigma * k).max(0.1);
    let az = az + gauss(rng) * cfg.azimuth_sigma_deg.to_radians() * k;
    let el = el + gauss(rng) * cfg.elevation_sigma_deg.to_radians() * k;
    let dir = V3::from_angles(az, el);
    let doppler = hit.rel_vel.dot(u) + gauss(rng) * cfg.doppler_sigma;
    let intensity = (hit.surface.rcs_db() + 100.0 - 40.0 * hit.t.max(1.0).log10()
        + 10.0 * cos.max(0.05).log10()
        + 2.0 * gauss(rng))
    .max(0.0);
    push(cloud, dir * r, intensity, doppler);
    if hit.surface.ghosts() && rng.random::<f64>() < cfg.ghost_probability {
        let extra = rng.random_range(cfg.ghost_range[0]..cfg.ghost_range[1].max(cfg.ghost_range[0] + 1e-3));
        push(cloud, dir * (r + extra), (intensity - 8.0).max(0.0), doppler + gauss(rng) * cfg.doppler_sigma);
    }
}
