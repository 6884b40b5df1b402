//! A VAE checkpoint of either family, chosen by its kind (`vae` or
//! `sparse_vae`): what the commands downstream of the VAE load.

use std::path::Path;

use tch::Device;

use super::checkpoint::{load_vae, Checkpoint};
use super::sparse_vae::{load_sparse_vae, SparseVaeRecipe};
use super::{TrainError, VaeRecipe};
use crate::data::Layout;
use crate::model::AnyVae;

/// A loaded VAE and what its recipe says downstream needs.
#[derive(Debug)]
pub struct LoadedVae {
    /// The model, frozen.
    pub vae: AnyVae,
    /// The layout it was trained with (`None` in old checkpoints).
    pub layout: Option<Layout>,
    /// Per-channel input scaling it was trained with.
    pub channel_scale: Vec<f64>,
}

/// Loads the VAE of checkpoint `path`, dense or sparse by its kind.
pub fn load_any_vae(path: &Path, device: Device) -> Result<LoadedVae, TrainError> {
    let kinds = [<VaeRecipe as super::Recipe>::KIND, <SparseVaeRecipe as super::Recipe>::KIND];
    let kind = Checkpoint::read_kinds(path, &kinds)?.kind;
    if kind == kinds[1] {
        let (vae, recipe) = load_sparse_vae(path, device)?;
        Ok(LoadedVae { vae: AnyVae::Sparse(vae), layout: recipe.layout, channel_scale: recipe.channel_scale })
    } else {
        let (vae, recipe) = load_vae(path, None, device)?;
        Ok(LoadedVae { vae: AnyVae::Dense(vae), layout: recipe.layout, channel_scale: recipe.channel_scale })
    }
}
