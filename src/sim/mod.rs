//! Layer 3, simulation: procedural outdoor scenes seen by a 4D radar and a
//! LiDAR, as raw point clouds for the voxelizer, and whole simulated
//! NTU4DRadLM_Pre roots ([`root`]). Imports [`crate::sys`], [`crate::io`]
//! and [`crate::data`].
//!
//! Geometry matches the dataset: both sensors at the origin of the sensor
//! frame (`x` forward, `y` left, `z` up), mounted 1.8 m above the ground
//! ([`EgoConfig::sensor_height`]), so the ground appears near `z = -1.8` and
//! the voxel grid (x 0..120, y -20..20, z -6..10 m) sees it. The calibration
//! between them is the identity.
//!
//! - [`scene`]: ground plane and objects (facades, walls, poles, trees,
//!   bushes, parked and moving vehicles) laid out along a road;
//! - [`trajectory`]: the ego path and poses;
//! - [`shapes`], [`geom`]: primitives and their ray intersections;
//! - [`view`]: the scene in the sensor frame with azimuth bins for fast
//!   ray casting, using [`bounds`] (angular extents of primitives);
//! - [`lidar`]: Livox-like rosette LiDAR;
//! - [`radar`]: sparse noisy radar with Doppler, ghosts and clutter;
//! - [`material`]: surface responses;
//! - [`dataset`]: timestamped frames, in memory or as `.bin` files;
//! - [`rng`]: deterministic per-frame random streams;
//! - [`config`]: the settings, [`SimConfig`] and its parts;
//! - [`root`]: a whole dataset root through the voxelizer, with statistics.
//!
//! The LiDAR target is learnable from the radar: both sensors observe the
//! same objects, the radar detections lie on (noisy copies of) the surfaces
//! the LiDAR samples, and their Doppler carries the ego motion.

pub mod bounds;
pub mod config;
pub mod dataset;
pub mod geom;
pub mod lidar;
pub mod material;
pub mod radar;
pub mod rng;
pub mod root;
pub mod scene;
pub mod shapes;
pub mod trajectory;
pub mod view;

pub use config::{ConfigError, EgoConfig, LidarConfig, RadarConfig, SceneConfig, SimConfig};
pub use dataset::{write_scene, SimFrame, SimScene, Simulator};
pub use geom::{v3, V3};
pub use material::Surface;
pub use scene::{GroundPlane, Object, Scene};
pub use shapes::Shape;
pub use trajectory::{Pose, Trajectory};
pub use view::{RayHit, View};
