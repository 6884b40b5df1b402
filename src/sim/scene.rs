//! Scene content: a sloped ground plane and static or moving objects built
//! from analytic primitives, laid out procedurally along a straight campus
//! road (world +x, centre line `y = 0`, lanes at `y = +-1.75`).
//!
//! Layout per side of the road (distances from the centre line): parked
//! vehicles at 4.1-4.6 m, poles at ~6.5 m, trees and bushes at 7.5-9 m, low
//! walls and building facades from `building_setback` outwards. Moving
//! vehicles drive in both lanes (oncoming, or faster than the ego so they
//! never run into it). Objects are static in the world unless they have a
//! velocity; their shapes are given at scene time 0.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::config::SceneConfig;
use super::geom::{v3, V3};
use super::material::Surface;
use super::shapes::Shape;

/// The ground: `z = z0 + slope[0] x + slope[1] y` (world frame).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GroundPlane {
    /// Height at the world origin.
    pub z0: f64,
    /// Slopes along x and y.
    pub slope: [f64; 2],
}

impl GroundPlane {
    /// Ground height at `(x, y)`.
    pub fn height(&self, x: f64, y: f64) -> f64 {
        self.z0 + self.slope[0] * x + self.slope[1] * y
    }
}

/// One object of a scene.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Object {
    /// Shape at scene time 0 (world frame).
    pub shape: Shape,
    /// Material.
    pub surface: Surface,
    /// World velocity (m/s); zero for static objects.
    pub velocity: V3,
}

impl Object {
    /// A static object.
    pub fn fixed(shape: Shape, surface: Surface) -> Self {
        Object { shape, surface, velocity: V3::default() }
    }

    /// The shape at scene time `t`.
    pub fn shape_at(&self, t: f64) -> Shape {
        if self.velocity == V3::default() {
            self.shape
        } else {
            self.shape.translated(self.velocity * t)
        }
    }
}

/// A scene: ground and objects.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scene {
    /// The ground plane.
    pub ground: GroundPlane,
    /// All objects.
    pub objects: Vec<Object>,
}

fn uniform(rng: &mut ChaCha8Rng, r: [f64; 2]) -> f64 {
    if r[1] > r[0] {
        rng.random_range(r[0]..r[1])
    } else {
        r[0]
    }
}

impl Scene {
    /// Generates a street scene covering world `x` in `[-20, length + 140]`
    /// for an ego driving at `ego_speed` (used for overtaking vehicles).
    pub fn generate(cfg: &SceneConfig, length: f64, ego_speed: f64, seed: u64) -> Scene {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let slope = [0, 1].map(|k| uniform(&mut rng, [-cfg.max_slope[k], cfg.max_slope[k]]));
        let ground = GroundPlane { z0: 0.0, slope };
        let mut scene = Scene { ground, objects: Vec::new() };
        let (x0, x1) = (-20.0, length + 140.0);
        for side in [1.0, -1.0] {
            scene.buildings(cfg, &mut rng, side, x0, x1);
            scene.poles(cfg, &mut rng, side, x0, x1);
            scene.trees(cfg, &mut rng, side, x0, x1);
            scene.parked(cfg, &mut rng, side, x0, x1);
        }
        for _ in 0..cfg.moving_vehicles {
            let oncoming = rng.random_bool(0.5);
            let (y, vx, x) = if oncoming {
                (1.75, -rng.random_range(5.0..10.0), rng.random_range(40.0..x1.max(41.0)))
            } else {
                (-1.75, ego_speed + rng.random_range(2.0..5.0), rng.random_range(15.0..100.0))
            };
            scene.vehicle(&mut rng, x, y, 0.0, v3(vx, 0.0, 0.0));
        }
        scene
    }

    fn ground_at(&self, x: f64, y: f64) -> f64 {
        self.ground.height(x, y)
    }

    fn push(&mut self, shape: Shape, surface: Surface) {
        self.objects.push(Object::fixed(shape, surface));
    }

    fn buildings(&mut self, cfg: &SceneConfig, rng: &mut ChaCha8Rng, side: f64, x0: f64, x1: f64) {
        let mut x = x0 + uniform(rng, [0.0, cfg.building_gap[1]]);
        while x < x1 {
            let len = uniform(rng, cfg.building_length);
            let depth = rng.random_range(6.0..14.0);
            let h = uniform(rng, cfg.building_height);
            let setback = uniform(rng, cfg.building_setback);
            let (cx, cy) = (x + len / 2.0, side * (setback + depth / 2.0));
            let g = self.ground_at(cx, cy);
            let yaw = rng.random_range(-4.0f64..4.0).to_radians();
            // Sunk 1 m so the sloped ground never shows under the facade.
            let half = v3(len / 2.0, depth / 2.0, (h + 1.0) / 2.0);
            self.push(Shape::Cuboid { c: v3(cx, cy, g + (h - 1.0) / 2.0), half, yaw }, Surface::Building);
            let gap = uniform(rng, cfg.building_gap);
            if rng.random_bool(cfg.wall_probability.clamp(0.0, 1.0)) && gap > 2.0 {
                let wx = x + len + gap / 2.0;
                let wy = side * (setback - 0.5);
                let wh = rng.random_range(1.0..2.2);
                let g = self.ground_at(wx, wy);
                let half = v3(gap / 2.0, 0.15, (wh + 0.5) / 2.0);
                self.push(Shape::Cuboid { c: v3(wx, wy, g + (wh - 0.5) / 2.0), half, yaw: 0.0 }, Surface::Wall);
            }
            x += (len + gap).max(0.5);
        }
    }

    fn poles(&mut self, cfg: &SceneConfig, rng: &mut ChaCha8Rng, side: f64, x0: f64, x1: f64) {
        let mut x = x0 + uniform(rng, [0.0, cfg.pole_spacing[1]]);
        while x < x1 {
            let y = side * (6.5 + rng.random_range(-0.3..0.3));
            let r = rng.random_range(0.08..0.2);
            let h = rng.random_range(4.0..8.0);
            let g = self.ground_at(x, y);
            self.push(Shape::Cylinder { base: v3(x, y, g - 0.5), r, h: h + 0.5 }, Surface::Pole);
            x += uniform(rng, cfg.pole_spacing).max(0.5);
        }
    }

    fn trees(&mut self, cfg: &SceneConfig, rng: &mut ChaCha8Rng, side: f64, x0: f64, x1: f64) {
        let mut x = x0 + uniform(rng, [0.0, cfg.tree_spacing[1]]);
        while x < x1 {
            let y = side * rng.random_range(7.5..8.8);
            let g = self.ground_at(x, y);
            let (r, h) = (rng.random_range(0.12..0.3), rng.random_range(1.8..3.2));
            self.push(Shape::Cylinder { base: v3(x, y, g - 0.5), r, h: h + 0.5 }, Surface::Trunk);
            let cr = rng.random_range(1.5..3.2);
            self.push(Shape::Sphere { c: v3(x, y, g + h + 0.7 * cr), r: cr }, Surface::Foliage);
            if rng.random_bool(cfg.bush_probability.clamp(0.0, 1.0)) {
                let (bx, by) = (x + rng.random_range(2.0..4.0), side * rng.random_range(7.5..9.0));
                let br = rng.random_range(0.4..1.0);
                let bg = self.ground_at(bx, by);
                self.push(Shape::Sphere { c: v3(bx, by, bg + 0.6 * br), r: br }, Surface::Foliage);
            }
            x += uniform(rng, cfg.tree_spacing).max(0.5);
        }
    }

    fn parked(&mut self, cfg: &SceneConfig, rng: &mut ChaCha8Rng, side: f64, x0: f64, x1: f64) {
        let mut x = x0;
        while x < x1 {
            if rng.random_bool(cfg.parked_probability.clamp(0.0, 1.0)) {
                let y = side * rng.random_range(4.1..4.6);
                let yaw = rng.random_range(-3.0f64..3.0).to_radians();
                self.vehicle(rng, x + 3.0, y, yaw, V3::default());
            }
            x += 6.0;
        }
    }

    /// Adds a vehicle (body and cabin boxes) with its centre at `(x, y)`.
    fn vehicle(&mut self, rng: &mut ChaCha8Rng, x: f64, y: f64, yaw: f64, velocity: V3) {
        let g = self.ground_at(x, y);
        let (len, wid) = (rng.random_range(4.0..4.9), rng.random_range(1.7..1.95));
        let body_h = rng.random_range(0.7..0.95);
        let cabin_h = rng.random_range(0.45..0.6);
        let clearance = 0.25;
        let body = Shape::Cuboid {
            c: v3(x, y, g + clearance + body_h / 2.0),
            half: v3(len / 2.0, wid / 2.0, body_h / 2.0),
            yaw,
        };
        let cabin = Shape::Cuboid {
            c: v3(x - 0.2, y, g + clearance + body_h + cabin_h / 2.0),
            half: v3(len * 0.28, wid / 2.0 - 0.08, cabin_h / 2.0),
            yaw,
        };
        for shape in [body, cabin] {
            self.objects.push(Object { shape, surface: Surface::Vehicle, velocity });
        }
    }
}
