//! Point clouds to NTU4DRadLM_Pre voxel grids.
//!
//! The pipeline of the original preprocessing, one idea per file:
//!
//! - [`cloud`]: point clouds, `.bin` and `.npy` reading, the [`CloudReader`] trait;
//! - [`pairing`]: timestamps from file names and radar/LiDAR pairing;
//! - [`calib`]: the `R:`/`T:` calibration file and its options;
//! - [`ground`]: LiDAR ground removal (RANSAC prior + cell-wise planes);
//! - [`grid`]: [`GridSpec`], [`SparseGrid`] and the float32 voxelization rule;
//! - [`occupancy`]: a dense bitset for neighbourhood tests;
//! - [`target`]: the target rule (plain and sensor-aware) and its policy file;
//! - [`frame`]: one pair to its three grids;
//! - [`driver`]: directories to frames, in parallel, with a [`Summary`];
//! - [`tree`]: frames written as an NTU4DRadLM_Pre scene.

pub mod calib;
pub mod cloud;
pub mod driver;
pub mod error;
pub mod frame;
pub mod grid;
pub mod ground;
pub mod occupancy;
pub mod pairing;
pub mod target;
pub mod tree;

pub use calib::{CalibOptions, CalibSource, Calibration};
pub use cloud::{read_bin, read_npy_cloud, write_bin, CloudReader, FileReader, PointCloud, LIDAR_COLS, RADAR_COLS};
pub use driver::{FrameOutput, FrameSink, SkippedFrame, Summary, Voxelizer};
pub use error::VoxelizeError;
pub use frame::{FrameGrids, FrameProcessor};
pub use grid::{voxelize, FrameStats, GridSpec, SparseGrid, CHANNELS};
pub use ground::{classify_ground, remove_ground, GroundParams, GroundStats};
pub use occupancy::{dilated_iou, near_fraction, Occupancy};
pub use pairing::{pair_frames, parse_stamp, Axis, Pair, Pairing, PairingOptions, Stamp};
pub use target::{build_target, PolicyFile, TargetPolicy};
pub use tree::{Encoding, SceneWriter};
