//! The ego trajectory: world +x along the road, a gentle sinusoidal weave in
//! y, the sensor at a fixed height above the (sloped) ground, yaw along the
//! velocity, no roll or pitch (the sensor stays level).

use serde::{Deserialize, Serialize};

use super::config::EgoConfig;
use super::geom::{v3, V3};
use super::scene::GroundPlane;

/// The sensor pose at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Pose {
    /// Sensor position in the world (m).
    pub pos: V3,
    /// Heading: rotation about z from world +x (radians).
    pub yaw: f64,
    /// Sensor velocity in the world (m/s).
    pub vel: V3,
}

impl Pose {
    /// World point to sensor frame (`x` forward, `y` left, `z` up).
    pub fn to_sensor(&self, w: V3) -> V3 {
        (w - self.pos).rot_z((self.yaw.cos(), -self.yaw.sin()))
    }

    /// Sensor-frame point to world.
    pub fn to_world(&self, s: V3) -> V3 {
        s.rot_z((self.yaw.cos(), self.yaw.sin())) + self.pos
    }

    /// World vector (velocity, direction) to the sensor frame.
    pub fn vec_to_sensor(&self, w: V3) -> V3 {
        w.rot_z((self.yaw.cos(), -self.yaw.sin()))
    }
}

/// The ego path of one scene.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trajectory {
    /// Motion settings.
    pub ego: EgoConfig,
    /// Ground the sensor height refers to.
    pub ground: GroundPlane,
}

impl Trajectory {
    /// The pose at time `t` seconds after the scene start.
    pub fn pose(&self, t: f64) -> Pose {
        let e = &self.ego;
        let w = std::f64::consts::TAU / e.weave_period.max(1e-6);
        let (x, y) = (e.speed * t, e.lane_y + e.weave_amplitude * (w * t).sin());
        let (vx, vy) = (e.speed, e.weave_amplitude * w * (w * t).cos());
        let z = self.ground.height(x, y) + e.sensor_height;
        let vz = self.ground.slope[0] * vx + self.ground.slope[1] * vy;
        let yaw = if vx.abs() + vy.abs() > 1e-9 { vy.atan2(vx) } else { 0.0 };
        Pose { pos: v3(x, y, z), yaw, vel: v3(vx, vy, vz) }
    }

    /// Distance travelled along x in `duration` seconds.
    pub fn travel(&self, duration: f64) -> f64 {
        self.ego.speed * duration
    }
}
