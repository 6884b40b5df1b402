//! Analytic primitives and their ray intersections: yawed boxes, vertical
//! cylinders (with a top cap) and spheres.

use serde::{Deserialize, Serialize};

use super::geom::{v3, V3};

/// Rays starting this close to a surface (or inside a shape) do not hit it.
const EPS: f64 = 1e-6;
/// Distance (m) from a vertical box edge within which a hit counts as a
/// corner (a strong radar reflector).
const EDGE_BAND: f64 = 0.4;

/// A primitive.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Shape {
    /// A box rotated about z.
    Cuboid {
        /// Centre.
        c: V3,
        /// Half extents along the box's own axes.
        half: V3,
        /// Yaw (rotation about z, radians).
        yaw: f64,
    },
    /// A vertical cylinder from `base.z` to `base.z + h`.
    Cylinder {
        /// Centre of the bottom disc.
        base: V3,
        /// Radius.
        r: f64,
        /// Height.
        h: f64,
    },
    /// A sphere.
    Sphere {
        /// Centre.
        c: V3,
        /// Radius.
        r: f64,
    },
}

/// A ray-primitive intersection.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ShapeHit {
    /// Distance along the (unit) ray.
    pub t: f64,
    /// Outward unit normal at the hit.
    pub normal: V3,
    /// Whether the hit is near a vertical edge of a box (a corner).
    pub edge: bool,
}

impl Shape {
    /// The shape moved by `d`.
    pub fn translated(&self, d: V3) -> Shape {
        match *self {
            Shape::Cuboid { c, half, yaw } => Shape::Cuboid { c: c + d, half, yaw },
            Shape::Cylinder { base, r, h } => Shape::Cylinder { base: base + d, r, h },
            Shape::Sphere { c, r } => Shape::Sphere { c: c + d, r },
        }
    }

    /// The shape in a frame translated by `-origin`, then rotated about z by
    /// `-yaw` (`cs` = `(cos yaw, sin yaw)` of the frame).
    pub fn to_frame(&self, origin: V3, yaw: f64, cs: (f64, f64)) -> Shape {
        let inv = (cs.0, -cs.1);
        let p = |q: V3| (q - origin).rot_z(inv);
        match *self {
            Shape::Cuboid { c, half, yaw: y } => Shape::Cuboid { c: p(c), half, yaw: y - yaw },
            Shape::Cylinder { base, r, h } => Shape::Cylinder { base: p(base), r, h },
            Shape::Sphere { c, r } => Shape::Sphere { c: p(c), r },
        }
    }

    /// A bounding sphere `(centre, radius)`.
    pub fn bounds(&self) -> (V3, f64) {
        match *self {
            Shape::Cuboid { c, half, .. } => (c, half.norm()),
            Shape::Cylinder { base, r, h } => (base + v3(0.0, 0.0, h / 2.0), r.hypot(h / 2.0)),
            Shape::Sphere { c, r } => (c, r),
        }
    }

    /// Nearest intersection of the ray `o + t u` (`u` unit) with `EPS < t <
    /// t_max`; rays starting inside the shape do not hit it.
    pub fn intersect(&self, o: V3, u: V3, t_max: f64) -> Option<ShapeHit> {
        Prepared::new(*self).intersect(o, u, t_max)
    }
}

/// A shape with its yaw's cosine and sine precomputed, for casting many rays.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prepared {
    shape: Shape,
    cs: (f64, f64),
}

impl Prepared {
    /// Prepares a shape.
    pub fn new(shape: Shape) -> Self {
        let yaw = if let Shape::Cuboid { yaw, .. } = shape { yaw } else { 0.0 };
        Prepared { shape, cs: (yaw.cos(), yaw.sin()) }
    }

    /// The shape.
    pub fn shape(&self) -> &Shape {
        &self.shape
    }

    /// As [`Shape::intersect`].
    pub fn intersect(&self, o: V3, u: V3, t_max: f64) -> Option<ShapeHit> {
        match self.shape {
            Shape::Cuboid { c, half, .. } => cuboid(c, half, self.cs, o, u, t_max),
            Shape::Cylinder { base, r, h } => cylinder(base, r, h, o, u, t_max),
            Shape::Sphere { c, r } => {
                let d = o - c;
                let b = d.dot(u);
                let disc = b * b - (d.dot(d) - r * r);
                if disc < 0.0 || d.dot(d) < r * r {
                    return None;
                }
                let t = -b - disc.sqrt();
                (t > EPS && t < t_max).then(|| ShapeHit { t, normal: (d + u * t) * (1.0 / r), edge: false })
            }
        }
    }
}

fn cuboid(c: V3, half: V3, yaw_cs: (f64, f64), o: V3, u: V3, t_max: f64) -> Option<ShapeHit> {
    let cs = (yaw_cs.0, -yaw_cs.1);
    let (lo, lu) = ((o - c).rot_z(cs), u.rot_z(cs));
    let (oa, ua, ha) = ([lo.x, lo.y, lo.z], [lu.x, lu.y, lu.z], [half.x, half.y, half.z]);
    let (mut t0, mut t1, mut axis) = (f64::NEG_INFINITY, f64::INFINITY, 0);
    for k in 0..3 {
        if ua[k].abs() < 1e-12 {
            if oa[k].abs() > ha[k] {
                return None;
            }
            continue;
        }
        let inv = 1.0 / ua[k];
        let (a, b) = ((-ha[k] - oa[k]) * inv, (ha[k] - oa[k]) * inv);
        let (near, far) = if a < b { (a, b) } else { (b, a) };
        if near > t0 {
            t0 = near;
            axis = k;
        }
        t1 = t1.min(far);
    }
    if t0 > t1 || t0 <= EPS || t0 >= t_max {
        return None;
    }
    let mut n = [0.0; 3];
    n[axis] = -ua[axis].signum();
    let q = [oa[0] + ua[0] * t0, oa[1] + ua[1] * t0];
    let edge = (0..2).all(|k| q[k].abs() > ha[k] - EDGE_BAND);
    Some(ShapeHit { t: t0, normal: v3(n[0], n[1], n[2]).rot_z((cs.0, -cs.1)), edge })
}

fn cylinder(base: V3, r: f64, h: f64, o: V3, u: V3, t_max: f64) -> Option<ShapeHit> {
    let (dx, dy) = (o.x - base.x, o.y - base.y);
    let mut best: Option<ShapeHit> = None;
    let a = u.x * u.x + u.y * u.y;
    let cc = dx * dx + dy * dy - r * r;
    if a > 1e-12 && cc > 0.0 {
        let b = dx * u.x + dy * u.y;
        let disc = b * b - a * cc;
        if disc >= 0.0 {
            let t = (-b - disc.sqrt()) / a;
            let z = o.z + u.z * t;
            if t > EPS && t < t_max && z >= base.z && z <= base.z + h {
                let n = v3(dx + u.x * t, dy + u.y * t, 0.0) * (1.0 / r);
                best = Some(ShapeHit { t, normal: n, edge: false });
            }
        }
    }
    if u.z < -1e-12 && o.z > base.z + h {
        let t = (base.z + h - o.z) / u.z;
        let (x, y) = (dx + u.x * t, dy + u.y * t);
        if t > EPS && t < best.map_or(t_max, |b| b.t) && x * x + y * y <= r * r {
            best = Some(ShapeHit { t, normal: v3(0.0, 0.0, 1.0), edge: false });
        }
    }
    best
}
