//! A scene as seen from the sensor at one instant, with an acceleration
//! structure for ray casting.
//!
//! Every object within range is moved to its position at that time and
//! transformed into the sensor frame; [`super::bounds`] gives its azimuth
//! and elevation intervals and nearest distance. Objects are binned by azimuth
//! (0.25-degree bins over the full circle); each bin lists its objects by
//! increasing nearest distance, so a ray visits only the
//! objects of its bin and stops as soon as the next one starts beyond the
//! nearest hit so far; a ray above or below every object of its bin (sky)
//! skips the bin at once. The ground plane is intersected analytically.

use std::f64::consts::{PI, TAU};

use super::bounds::angular_bounds;
use super::geom::{v3, V3};
use super::material::Surface;
use super::scene::Scene;
use super::shapes::Prepared;
use super::trajectory::Pose;

const BINS: usize = 1440;

/// What a ray hit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RayHit {
    /// Distance along the ray (m).
    pub t: f64,
    /// Outward unit normal (sensor frame).
    pub normal: V3,
    /// Surface class.
    pub surface: Surface,
    /// Velocity of the hit surface relative to the sensor, in the sensor
    /// frame (m/s): `R^T (v_object - v_ego)`.
    pub rel_vel: V3,
    /// Near a vertical box edge (a corner reflector).
    pub edge: bool,
    /// Index of the object in the scene (`None` for the ground).
    pub object: Option<usize>,
}

struct ViewObject {
    shape: Prepared,
    surface: Surface,
    rel_vel: V3,
    el: [f64; 2],
    id: usize,
}

/// The scene in the sensor frame at one instant.
pub struct View {
    objects: Vec<ViewObject>,
    bins: Vec<Vec<(f64, u32)>>,
    /// Per bin, the elevation interval covered by its objects.
    bin_el: Vec<[f64; 2]>,
    ground_n: V3,
    ground_d: f64,
    ego_rel: V3,
}

/// Unwrapped bin number of an azimuth (radians).
fn bin_index(az: f64) -> i64 {
    ((az + PI) / TAU * BINS as f64).floor() as i64
}

fn bin_of(az: f64) -> usize {
    bin_index(az).rem_euclid(BINS as i64) as usize
}

impl View {
    /// Builds the view of `scene` at time `t` from `pose`; objects further
    /// than `max_range` are left out.
    pub fn new(scene: &Scene, pose: &Pose, t: f64, max_range: f64) -> View {
        let cs = (pose.yaw.cos(), pose.yaw.sin());
        let mut objects = Vec::new();
        let mut bins: Vec<Vec<(f64, u32)>> = vec![Vec::new(); BINS];
        for (id, obj) in scene.objects.iter().enumerate() {
            let shape = obj.shape_at(t).to_frame(pose.pos, pose.yaw, cs);
            let b = angular_bounds(&shape);
            if b.dmin > max_range {
                continue;
            }
            let k = objects.len() as u32;
            match b.az {
                Some([lo, hi]) => {
                    let (lo, hi) = (bin_index(lo), bin_index(hi));
                    for j in lo..=hi.min(lo + BINS as i64 - 1) {
                        bins[j.rem_euclid(BINS as i64) as usize].push((b.dmin, k));
                    }
                }
                None => bins.iter_mut().for_each(|bin| bin.push((b.dmin, k))),
            }
            let el = b.el;
            objects.push(ViewObject {
                shape: Prepared::new(shape),
                surface: obj.surface,
                rel_vel: pose.vec_to_sensor(obj.velocity - pose.vel),
                el,
                id,
            });
        }
        for b in &mut bins {
            b.sort_by(|a, b| a.0.total_cmp(&b.0));
        }
        let bin_el = bins
            .iter()
            .map(|b| {
                b.iter().fold([f64::INFINITY, f64::NEG_INFINITY], |e, &(_, k)| {
                    let o: &ViewObject = &objects[k as usize];
                    [e[0].min(o.el[0]), e[1].max(o.el[1])]
                })
            })
            .collect();
        // Ground: n . w = d in the world with n = (-sx, -sy, 1) / |.|.
        let g = &scene.ground;
        let n = v3(-g.slope[0], -g.slope[1], 1.0).unit();
        let d = g.z0 * n.z;
        View {
            objects,
            bins,
            bin_el,
            ground_n: pose.vec_to_sensor(n),
            ground_d: d - n.dot(pose.pos),
            ego_rel: pose.vec_to_sensor(-pose.vel),
        }
    }

    /// Sensor-frame velocity of static things relative to the sensor
    /// (`-R^T v_ego`).
    pub fn static_rel_vel(&self) -> V3 {
        self.ego_rel
    }

    /// Objects in range.
    pub fn len(&self) -> usize {
        self.objects.len()
    }

    /// Whether no object is in range.
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    /// Casts a unit ray `u` from the sensor origin; the nearest hit before
    /// `t_max`, if any.
    pub fn cast(&self, u: V3, t_max: f64) -> Option<RayHit> {
        self.cast_dir(u, u.y.atan2(u.x), u.z.clamp(-1.0, 1.0).asin(), t_max)
    }

    /// As [`View::cast`], with the ray's azimuth and elevation already known
    /// (saves two inverse trigonometric calls per ray).
    pub fn cast_dir(&self, u: V3, az: f64, el: f64, t_max: f64) -> Option<RayHit> {
        let mut best: Option<RayHit> = None;
        let mut t_best = t_max;
        let denom = self.ground_n.dot(u);
        if denom < -1e-9 {
            let t = self.ground_d / denom;
            if t > 0.0 && t < t_best {
                t_best = t;
                best = Some(RayHit {
                    t,
                    normal: self.ground_n,
                    surface: Surface::Ground,
                    rel_vel: self.ego_rel,
                    edge: false,
                    object: None,
                });
            }
        }
        let bin = bin_of(az);
        if el < self.bin_el[bin][0] || el > self.bin_el[bin][1] {
            return best;
        }
        for &(dmin, k) in &self.bins[bin] {
            if dmin >= t_best {
                break;
            }
            let o = &self.objects[k as usize];
            if el < o.el[0] || el > o.el[1] {
                continue;
            }
            if let Some(h) = o.shape.intersect(V3::default(), u, t_best) {
                t_best = h.t;
                best = Some(RayHit {
                    t: h.t,
                    normal: h.normal,
                    surface: o.surface,
                    rel_vel: o.rel_vel,
                    edge: h.edge,
                    object: Some(o.id),
                });
            }
        }
        best
    }
}
