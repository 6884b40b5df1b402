//! The sparse occupancy VAE's configuration: widths per level, the strides
//! between levels, the dense latent, and the pruning rule of inference.
//!
//! Default stride: three levels of 2 on every axis, so the latent is the
//! native grid / 8 ((96, 608, 224) -> (12, 76, 28), 25.5 k latent voxels)
//! with 8 channels. Why: the latent is dense, and the LDM, CD and latent
//! cache pay for every latent voxel, so 25.5 k keeps them at the cost they
//! have today at the coarse (8, 64, 32) = 16 k grid, while the decoder
//! brings the structure back to 0.2 m; 8 x 25.5 k values hold a frame's
//! ~15 k occupied voxels with room to spare (an 8^3 block is 0.05 % of the
//! frame; a frame occupies a few thousand blocks).

use serde::{Deserialize, Serialize};

use std::rc::Rc;

use super::coords::{Coords, Dims3};
use crate::model::ModelError;

/// Architecture of a [`super::vae::SparseVae`] (saved in the recipe).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SparseVaeConfig {
    /// Input channels (occupancy first; the rest are regressed).
    pub in_channels: i64,
    /// Channels per level, native level first; one more entry than `strides`.
    pub channels: Vec<i64>,
    /// Stride from each level to the next coarser one (1 or 2 per axis).
    pub strides: Vec<Dims3>,
    /// Latent channels.
    pub latent_channels: i64,
    /// Residual blocks per level (encoder and decoder).
    pub blocks: usize,
    /// Weight of the KL term.
    pub kl_weight: f64,
    /// Inference keeps a child whose occupancy probability is at least this.
    pub keep_threshold: f64,
    /// Inference keeps at most this many sites per frame and level (the
    /// most probable), so an untrained decoder cannot explode.
    pub max_sites: usize,
}

impl Default for SparseVaeConfig {
    fn default() -> Self {
        SparseVaeConfig::base()
    }
}

/// The presets by width, narrowest first.
pub const SPARSE_PRESETS: [&str; 3] = ["sparse_small", "sparse_base", "sparse_wide"];

impl SparseVaeConfig {
    fn with_width(w: i64) -> SparseVaeConfig {
        SparseVaeConfig {
            in_channels: 4,
            channels: vec![w, 2 * w, 3 * w, 4 * w],
            strides: vec![[2, 2, 2]; 3],
            latent_channels: 8,
            blocks: 1,
            kl_weight: 1e-6,
            keep_threshold: 0.5,
            max_sites: 400_000,
        }
    }

    /// Widths 8-16-24-32: the CPU preset (main job, tests).
    pub fn small() -> SparseVaeConfig {
        SparseVaeConfig::with_width(8)
    }

    /// Widths 16-32-48-64.
    pub fn base() -> SparseVaeConfig {
        SparseVaeConfig::with_width(16)
    }

    /// Widths 32-64-96-128: the GPU preset.
    pub fn wide() -> SparseVaeConfig {
        SparseVaeConfig::with_width(32)
    }

    /// A preset by name: one of [`SPARSE_PRESETS`] (or without the `sparse_`).
    pub fn named(name: &str) -> Result<SparseVaeConfig, ModelError> {
        match name.replace('-', "_").as_str() {
            "sparse_small" | "small" => Ok(Self::small()),
            "sparse_base" | "base" => Ok(Self::base()),
            "sparse_wide" | "wide" => Ok(Self::wide()),
            other => Err(ModelError::Config(format!(
                "unknown sparse VAE preset {other:?}: use sparse_small, sparse_base or sparse_wide"
            ))),
        }
    }

    /// Refuses settings that cannot build.
    pub fn validate(&self) -> Result<(), ModelError> {
        let err = |m: String| Err(ModelError::Config(format!("sparse VAE: {m}")));
        if self.in_channels < 1 || self.latent_channels < 1 {
            return err("in_channels and latent_channels must be >= 1".into());
        }
        if self.channels.len() != self.strides.len() + 1 || self.strides.is_empty() {
            return err(format!(
                "channels ({}) must have one entry more than strides ({}), with at least one stride",
                self.channels.len(),
                self.strides.len()
            ));
        }
        if self.channels.iter().any(|&c| c < 1) {
            return err(format!("channels {:?} must be >= 1", self.channels));
        }
        if self.strides.iter().flatten().any(|&s| !(1..=2).contains(&s)) {
            return err(format!("strides {:?} must be 1 or 2 per axis", self.strides));
        }
        if !(self.keep_threshold > 0.0 && self.keep_threshold < 1.0) {
            return err(format!("keep_threshold must lie in (0, 1), got {}", self.keep_threshold));
        }
        if !(self.kl_weight >= 0.0 && self.kl_weight.is_finite()) || self.max_sites == 0 {
            return err("kl_weight must be finite and >= 0, max_sites >= 1".into());
        }
        Ok(())
    }

    /// Stride of the latent from the native grid, per axis.
    pub fn downsampling(&self) -> Dims3 {
        self.strides.iter().fold([1; 3], |a, s| [a[0] * s[0], a[1] * s[1], a[2] * s[2]])
    }

    /// The grid of each level for a native grid `zhw`, native first.
    pub fn level_grids(&self, zhw: Dims3) -> Vec<Dims3> {
        let mut grids = vec![zhw];
        for s in &self.strides {
            let g = *grids.last().expect("non-empty");
            grids.push([0, 1, 2].map(|a| (g[a] + s[a] - 1) / s[a]));
        }
        grids
    }

    /// The target's sites at every level, native first: `native` and its
    /// down-sampled sets (cached in the sets: the encoder runs on the same `Rc`s).
    pub fn target_levels(&self, native: &Rc<Coords>) -> Vec<Rc<Coords>> {
        let mut v = vec![native.clone()];
        for s in &self.strides {
            let next = v.last().expect("non-empty").down(*s);
            v.push(next);
        }
        v
    }

    /// The dense latent `(B, latent_channels, Z', Y', X')` of a batch of native grids.
    pub fn latent_shape(&self, batch: i64, zhw: Dims3) -> [i64; 5] {
        let g = *self.level_grids(zhw).last().expect("non-empty");
        [batch, self.latent_channels, g[0], g[1], g[2]]
    }
}
