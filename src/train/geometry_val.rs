//! Validation by decoded geometry for the latent models (the LDM, the
//! direct baseline and the consistency model): after each epoch a fixed subset of validation frames
//! is sampled from the model's current weights (the EMA's when the run keeps
//! one: the weights sampling uses) in a few solver steps, decoded by the
//! frozen VAE, and its occupied voxels (decoded occupancy above 0.5) scored
//! against the target's. `best.safetensors` is then the epoch of the best
//! validation F1, not of the lowest training loss.

use tch::{nn, Tensor};

use super::ldm::{build_denoiser, sampler_of, LdmRecipe};
use super::objective::Column;
use super::TrainError;
use crate::data::{Dataset, Modality};
use crate::diffusion::Sampler;
use crate::eval::frames::{layout_dims, occupied_frame, scores_frame};
use crate::model::GridVae;

/// The validation frames, the VAE that decodes them, and the grid.
pub struct GeometryVal {
    ds: Dataset,
    vae: Box<dyn GridVae>,
    frames: Vec<usize>,
    grid: [i64; 3],
    dims: [usize; 3],
}

impl GeometryVal {
    /// `count` frames spread evenly over `ds` (all if fewer), this rank's
    /// share of them (`rank` of `world`), decoded by `vae`; `None` (no
    /// validation) when `count` is 0.
    pub fn new(
        ds: Dataset,
        vae: Box<dyn GridVae>,
        count: usize,
        rank: usize,
        world: usize,
    ) -> Result<Option<Self>, TrainError> {
        if count == 0 {
            return Ok(None);
        }
        let n = ds.len();
        let mut picked: Vec<usize> = (0..count.min(n)).map(|k| k * n / count.min(n).max(1)).collect();
        picked.dedup();
        let frames = picked.into_iter().enumerate().filter(|(k, _)| k % world.max(1) == rank).map(|(_, i)| i).collect();
        let s = ds.output_shape(0);
        let grid = [s[1] as i64, s[2] as i64, s[3] as i64];
        let dims = layout_dims(ds.frames()[0].target.shape(), ds.config().layout);
        Ok(Some(GeometryVal { ds, vae, frames, grid, dims }))
    }

    /// The columns of [`GeometryVal::metrics`]: F1 first (it picks `best`).
    pub fn columns() -> Vec<Column> {
        vec![("f1".into(), "val F1".into(), 1.0), ("iou".into(), "val IoU".into(), 1.0)]
    }

    /// `[tp, fp, fn]` of this rank's frames sampled by `draw` from a copy
    /// of the denoiser of `recipe` whose weights are in `weights` (the
    /// training store: the engine has put the EMA's in place).
    pub fn counts_of(
        &self,
        weights: &nn::VarStore,
        recipe: &LdmRecipe,
        draw: &dyn Fn(&Sampler, &Tensor, u64) -> Tensor,
    ) -> Result<Vec<f64>, TrainError> {
        let mut vs = nn::VarStore::new(weights.device());
        let (unet, encoder) = build_denoiser(&vs.root(), recipe)?;
        vs.copy(weights).map_err(|e| TrainError::Config(format!("copying the weights for validation: {e}")))?;
        self.counts(&sampler_of(vs, unet, encoder, recipe), draw)
    }

    /// `[tp, fp, fn]` of this rank's frames, each sampled by `draw(sampler,
    /// condition, seed)` (the seed fixed per frame, so epochs compare).
    pub fn counts(
        &self,
        sampler: &Sampler,
        draw: &dyn Fn(&Sampler, &Tensor, u64) -> Tensor,
    ) -> Result<Vec<f64>, TrainError> {
        let mut sums = vec![0.0; 3];
        for &i in &self.frames {
            let cond = sampler.condition_frame(&self.ds, i, self.vae.as_ref())?;
            let z = draw(sampler, &cond, 7919 + i as u64);
            let decoded = tch::no_grad(|| self.vae.decode_grid(&z, self.grid))?.squeeze_dim(0);
            let pred = scores_frame(&decoded, self.dims, 0.5);
            let target = occupied_frame(&self.ds, i, Modality::Target, self.dims)?;
            let tp = pred.coords.iter().filter(|c| target.contains(**c)).count();
            sums[0] += tp as f64;
            sums[1] += (pred.coords.len() - tp) as f64;
            sums[2] += (target.len() - tp) as f64;
        }
        Ok(sums)
    }

    /// F1 and IoU of summed `[tp, fp, fn]` (0 when nothing is occupied).
    pub fn metrics(sums: &[f64]) -> Vec<f64> {
        let (tp, fp, fn_) = (sums[0], sums[1], sums[2]);
        let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
        vec![ratio(2.0 * tp, 2.0 * tp + fp + fn_), ratio(tp, tp + fp + fn_)]
    }
}
