//! Conservative angular bounds of primitives seen from the sensor origin:
//! the azimuth interval, the elevation interval and the nearest distance, so
//! that a ray outside them cannot hit the primitive.

use std::f64::consts::PI;

use super::geom::v3;
use super::shapes::Shape;

/// Where a primitive can be hit from the origin.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AngularBounds {
    /// Azimuth interval `[lo, hi]` (radians, unwrapped: `hi - lo < 2 pi`);
    /// `None` when the origin lies inside the footprint (every azimuth).
    pub az: Option<[f64; 2]>,
    /// Elevation interval (radians).
    pub el: [f64; 2],
    /// Smallest distance from the origin to the primitive.
    pub dmin: f64,
}

/// Elevations of a vertical extent `[z_lo, z_hi]` at horizontal distances in
/// `[dxy_min, dxy_max]`.
fn el_range(z_lo: f64, z_hi: f64, dxy_min: f64, dxy_max: f64) -> [f64; 2] {
    let hi = z_hi.atan2(if z_hi >= 0.0 { dxy_min } else { dxy_max });
    let lo = z_lo.atan2(if z_lo <= 0.0 { dxy_min } else { dxy_max });
    [lo, hi]
}

fn wrap(a: f64) -> f64 {
    (a + PI).rem_euclid(2.0 * PI) - PI
}

/// The bounds of a shape given in the sensor frame.
pub fn angular_bounds(shape: &Shape) -> AngularBounds {
    match *shape {
        Shape::Cuboid { c, half, yaw } => {
            let (cy, sy) = (yaw.cos(), yaw.sin());
            // The origin in the box frame.
            let o = (-c).rot_z((cy, -sy));
            let gap = [(o.x.abs() - half.x).max(0.0), (o.y.abs() - half.y).max(0.0), (o.z.abs() - half.z).max(0.0)];
            let dxy_min = gap[0].hypot(gap[1]);
            let corners = [(1.0, 1.0), (1.0, -1.0), (-1.0, 1.0), (-1.0, -1.0)]
                .map(|(a, b)| c + v3(a * half.x, b * half.y, 0.0).rot_z((cy, sy)) - v3(0.0, 0.0, c.z));
            let dxy_max = corners.iter().map(|p| p.xy_norm()).fold(0.0, f64::max);
            let az = (dxy_min > 0.0).then(|| {
                let ac = c.y.atan2(c.x);
                let rel = corners.map(|p| wrap(p.y.atan2(p.x) - ac));
                let lo = rel.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = rel.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                [ac + lo, ac + hi]
            });
            let el = el_range(c.z - half.z, c.z + half.z, dxy_min, dxy_max);
            AngularBounds { az, el, dmin: dxy_min.hypot(gap[2]) }
        }
        Shape::Cylinder { base, r, h } => {
            let dxy = base.xy_norm();
            let (dxy_min, dxy_max) = ((dxy - r).max(0.0), dxy + r);
            let az = (dxy > r).then(|| {
                let (ac, half) = (base.y.atan2(base.x), (r / dxy).asin());
                [ac - half, ac + half]
            });
            let dz = (base.z.max(0.0) - (base.z + h).min(0.0)).max(0.0);
            let el = el_range(base.z, base.z + h, dxy_min, dxy_max);
            AngularBounds { az, el, dmin: dxy_min.hypot(dz) }
        }
        Shape::Sphere { c, r } => {
            let (d, dxy) = (c.norm(), c.xy_norm());
            let az = (dxy > r).then(|| {
                let (ac, half) = (c.y.atan2(c.x), (r / dxy).asin());
                [ac - half, ac + half]
            });
            let el = if d > r {
                let (ec, half) = ((c.z / d).asin(), (r / d).asin());
                [ec - half, ec + half]
            } else {
                [-PI, PI]
            };
            AngularBounds { az, el, dmin: (d - r).max(0.0) }
        }
    }
}
