//! Layer 6, evaluation: scores of predicted occupancy against targets and
//! the radar baseline, and exports for people and tools (sparse `.npz`,
//! `.ply`, bird's-eye-view pictures). Pure functions of grids and voxel
//! sets: imports [`crate::io`] and [`crate::data`], no model.

pub mod export;
pub mod metrics;

pub use metrics::{chamfer, Occupancy};
