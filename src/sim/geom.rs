//! Minimal 3-vector algebra (float64) and yaw rotations.

use std::ops::{Add, Mul, Neg, Sub};

use serde::{Deserialize, Serialize};

/// A 3-vector.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct V3 {
    /// x (forward).
    pub x: f64,
    /// y (left).
    pub y: f64,
    /// z (up).
    pub z: f64,
}

/// Shorthand constructor.
pub const fn v3(x: f64, y: f64, z: f64) -> V3 {
    V3 { x, y, z }
}

impl V3 {
    /// Dot product.
    pub fn dot(self, o: V3) -> f64 {
        self.x * o.x + self.y * o.y + self.z * o.z
    }
    /// Cross product.
    pub fn cross(self, o: V3) -> V3 {
        v3(self.y * o.z - self.z * o.y, self.z * o.x - self.x * o.z, self.x * o.y - self.y * o.x)
    }
    /// Euclidean norm.
    pub fn norm(self) -> f64 {
        self.dot(self).sqrt()
    }
    /// Unit vector (the zero vector stays zero).
    pub fn unit(self) -> V3 {
        let n = self.norm();
        if n > 0.0 {
            self * (1.0 / n)
        } else {
            self
        }
    }
    /// Horizontal distance from the z axis.
    pub fn xy_norm(self) -> f64 {
        self.x.hypot(self.y)
    }
    /// Rotates about z by an angle given as `(cos, sin)`.
    pub fn rot_z(self, cs: (f64, f64)) -> V3 {
        v3(cs.0 * self.x - cs.1 * self.y, cs.1 * self.x + cs.0 * self.y, self.z)
    }
    /// Unit direction from azimuth (from +x towards +y) and elevation.
    pub fn from_angles(az: f64, el: f64) -> V3 {
        let (se, ce) = el.sin_cos();
        let (sa, ca) = az.sin_cos();
        v3(ce * ca, ce * sa, se)
    }
    /// `(range, azimuth, elevation)`.
    pub fn to_spherical(self) -> (f64, f64, f64) {
        let r = self.norm();
        let el = if r > 0.0 { (self.z / r).clamp(-1.0, 1.0).asin() } else { 0.0 };
        (r, self.y.atan2(self.x), el)
    }
}

impl Add for V3 {
    type Output = V3;
    fn add(self, o: V3) -> V3 {
        v3(self.x + o.x, self.y + o.y, self.z + o.z)
    }
}

impl Sub for V3 {
    type Output = V3;
    fn sub(self, o: V3) -> V3 {
        v3(self.x - o.x, self.y - o.y, self.z - o.z)
    }
}

impl Mul<f64> for V3 {
    type Output = V3;
    fn mul(self, k: f64) -> V3 {
        v3(self.x * k, self.y * k, self.z * k)
    }
}

impl Neg for V3 {
    type Output = V3;
    fn neg(self) -> V3 {
        v3(-self.x, -self.y, -self.z)
    }
}
