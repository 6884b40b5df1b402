//! The latent-diffusion objective: the UNet learns to denoise the target
//! latent given a radar condition (EDM), in a frozen VAE's latent space,
//! from a latent cache or encoding on the fly. The condition is the VAE's
//! encoding of the radar, or a radar encoder trained jointly; latents may be
//! normalised to the EDM's `sigma_data` (statistics measured on the training
//! latents when a run starts, stored in its recipe). An EMA of the weights
//! (used for sampling) is kept by the engine. With `direct` the same UNet
//! is the direct baseline instead: condition to latent in one call, no
//! diffusion. With `decoded` a decoded-space loss through the frozen
//! decoder ([`crate::diffusion::decoded`]) joins the latent loss.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use tch::{nn, Device, Tensor};

use super::checkpoint::{check_vae_hash, Checkpoint};
use super::engine::Trainer;
use super::geometry_val::GeometryVal;
use super::latents::{LatentBatch, LatentData, LatentSource};
use super::objective::{Column, Objective};
use super::precision::Amp;
use super::recipe::{OptimRecipe, Recipe};
use super::runtime::Runtime;
use super::TrainError;
use crate::data::loader::Sampler as Order;
use crate::data::Dataset;
use crate::diffusion::{DecodedLossConfig, EdmConfig, ExtraLoss, LatentNorm, Sampler, Solver};
use crate::memory::{ModelConfig, Precision, Run};
use crate::model::{Checkpointing, GridVae, RadarEncoder, RadarEncoderConfig, Unet3d, UnetConfig};
use crate::sys::with_init_seed;

/// What defines a latent-diffusion run (saved in every checkpoint).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LdmRecipe {
    /// Denoiser architecture.
    pub unet: UnetConfig,
    /// EDM settings.
    pub edm: EdmConfig,
    /// Optimiser, schedule, batches and the EMA decay.
    #[serde(flatten)]
    pub optim: OptimRecipe,
    /// Normalise latents: targets to mean 0, std `sigma_data`; the VAE
    /// condition to mean 0, std 1 (per channel).
    pub normalize_latents: bool,
    /// The normalisation's statistics, measured on the training latents
    /// when a run with `normalize_latents` starts.
    pub latent_norm: Option<LatentNorm>,
    /// Condition on a radar encoder trained jointly instead of the VAE's
    /// encoding of the radar.
    pub radar_encoder: Option<RadarEncoderConfig>,
    /// Per-channel scale of raw radar grids fed to the radar encoder (the
    /// VAE's `channel_scale`, recorded when a run starts).
    pub radar_scale: Vec<f64>,
    /// The direct baseline: the same UNet trained to map the condition to
    /// the target latent in one call (`EdmConfig::direct_loss`), no
    /// diffusion; sampled by that one call.
    pub direct: bool,
    /// Validation frames sampled and decoded after each epoch to pick
    /// `best` by their F1 ([`super::geometry_val`]; 0: none).
    pub val_frames: usize,
    /// Heun steps of those samples (the direct baseline takes its one call).
    pub val_steps: usize,
    /// A decoded-space loss beside the latent loss: the denoised estimate
    /// decoded by the frozen (dense) VAE, scored against the target frame
    /// ([`crate::diffusion::decoded`]); `None`: the latent loss alone.
    pub decoded: Option<DecodedLossConfig>,
}

impl Default for LdmRecipe {
    /// The default UNet and EDM settings, the seed's optimiser, EMA 0.999.
    fn default() -> Self {
        LdmRecipe {
            unet: UnetConfig::default(),
            edm: EdmConfig::default(),
            optim: OptimRecipe { ema_decay: Some(0.999), ..OptimRecipe::default() },
            normalize_latents: false,
            latent_norm: None,
            radar_encoder: None,
            radar_scale: Vec::new(),
            direct: false,
            val_frames: 8,
            val_steps: 4,
            decoded: None,
        }
    }
}

impl Recipe for LdmRecipe {
    const KIND: &'static str = "ldm";
    fn optim(&self) -> &OptimRecipe {
        &self.optim
    }
    fn optim_mut(&mut self) -> &mut OptimRecipe {
        &mut self.optim
    }
    fn validate(&self) -> Result<(), TrainError> {
        self.unet.validate()?;
        self.optim.validate()?;
        if let Some(enc) = &self.radar_encoder {
            enc.validate()?;
            if enc.out_channels != self.unet.cond_channels {
                return Err(TrainError::Config(format!(
                    "radar encoder gives {} channels, the UNet takes cond_channels {}",
                    enc.out_channels, self.unet.cond_channels
                )));
            }
        }
        if let Some(d) = &self.decoded {
            d.validate()?;
        }
        if self.val_steps == 0 {
            return Err(TrainError::Config("val_steps must be at least 1".into()));
        }
        let e = &self.edm;
        let positive = [e.sigma_min, e.sigma_max, e.sigma_data, e.rho, e.p_std];
        if positive.iter().any(|v| !(v.is_finite() && *v > 0.0)) || e.sigma_min >= e.sigma_max || !e.p_mean.is_finite()
        {
            return Err(TrainError::Config(format!(
                "EDM settings need finite sigma_min < sigma_max, sigma_data, rho, p_std > 0: {e:?}"
            )));
        }
        Ok(())
    }
}

/// The denoiser of `recipe` (and its radar encoder, under `radar_encoder`)
/// at `root`: the variables of an LDM checkpoint, of its EMA, and of a
/// consistency model distilled from it.
pub fn build_denoiser(root: &nn::Path, recipe: &LdmRecipe) -> Result<(Unet3d, Option<RadarEncoder>), TrainError> {
    let unet = Unet3d::new(root, &recipe.unet)?;
    let enc = recipe.radar_encoder.as_ref().map(|c| RadarEncoder::new(&(root / "radar_encoder"), c)).transpose()?;
    Ok((unet, enc))
}

/// A sampler over the denoiser of `recipe` built in `vs` (its condition and
/// latent scaling as in training).
pub fn sampler_of(vs: nn::VarStore, unet: Unet3d, encoder: Option<RadarEncoder>, recipe: &LdmRecipe) -> Sampler {
    let s = Sampler::new(vs, unet, recipe.edm).with_norm(recipe.latent_norm.clone());
    match encoder {
        Some(enc) => s.with_encoder(enc, recipe.radar_scale.clone()),
        None => s,
    }
}

/// A batch on the device with its noise levels and noise (none for the
/// direct baseline), and the target occupancy of a decoded-space loss.
pub struct LdmStep {
    y: Tensor,
    cond: Tensor,
    draws: Option<(Tensor, Tensor)>,
    occupancy: Option<Tensor>,
}

/// The latent-diffusion objective; see the module docs.
pub struct LdmObjective {
    recipe: LdmRecipe,
    vs: nn::VarStore,
    unet: Unet3d,
    encoder: Option<RadarEncoder>,
    data: LatentData,
    vae_hash: String,
    device: Device,
    latent_grid: [i64; 3],
    val: Option<GeometryVal>,
    decoder: Option<Box<dyn GridVae>>,
}

impl LdmObjective {
    /// Builds the UNet (and the radar encoder, when the recipe has one;
    /// seeded); `vae_hash` ties the run to the VAE that defines the latent
    /// space. With `normalize_latents` and no statistics yet, measures them
    /// on every training frame's latents (recorded in the recipe).
    pub fn new(
        dataset: Dataset,
        source: LatentSource,
        vae_hash: &str,
        recipe: LdmRecipe,
        runtime: &Runtime,
    ) -> Result<Self, TrainError> {
        let mut recipe = recipe;
        recipe.validate()?;
        if recipe.radar_encoder.is_some()
            && recipe.radar_scale.len() != recipe.radar_encoder.as_ref().map_or(0, |e| e.in_channels as usize)
        {
            return Err(TrainError::Config(format!(
                "a radar encoder needs radar_scale, one factor per radar channel (the VAE's channel_scale), got {:?}",
                recipe.radar_scale
            )));
        }
        let device = super::runtime::parse_device(&runtime.device)?;
        let vs = nn::VarStore::new(device);
        let (unet, encoder) = with_init_seed(recipe.optim.seed, || build_denoiser(&vs.root(), &recipe))?;
        let data = LatentData::new(dataset, source, encoder.is_some(), runtime.dist.clone());
        if recipe.normalize_latents && recipe.latent_norm.is_none() {
            recipe.latent_norm = Some(data.measure_norm(recipe.edm.sigma_data)?);
        }
        Ok(LdmObjective {
            latent_grid: data.latent_grid()?,
            recipe,
            vs,
            unet,
            encoder,
            data,
            vae_hash: vae_hash.into(),
            device,
            val: None,
            decoder: None,
        })
    }

    /// The frozen VAE the recipe's decoded-space loss decodes through (the
    /// VAE of the latents); the batches then carry the target frames'
    /// occupancy. Refused without `decoded` in the recipe, and for a VAE
    /// whose decoder is not differentiable in the latent (the sparse one).
    pub fn with_decoder(mut self, vae: Box<dyn GridVae>) -> Result<Self, TrainError> {
        if self.recipe.decoded.is_none() {
            return Err(TrainError::Config("a decoder was given but the recipe has no [decoded] loss".into()));
        }
        let [z, h, w] = self.latent_grid;
        let c = self.recipe.unet.latent_channels;
        let probe = Tensor::zeros([1, c, z, h, w], (tch::Kind::Float, vae.device()));
        let _ = tch::no_grad(|| vae.decode_occupancy(&probe))?;
        self.data.occupancy = true;
        self.decoder = Some(vae);
        Ok(self)
    }

    /// The decoded-space loss of the denoised estimates `d` (normalised
    /// latents when the recipe normalises) at `sigma`, against `occupancy`.
    fn decoded_loss(&self, d: &Tensor, sigma: &Tensor, occupancy: &Tensor) -> Tensor {
        let (Some(cfg), Some(vae)) = (&self.recipe.decoded, &self.decoder) else {
            return Tensor::from(f32::NAN); // prepare refuses a decoded loss without its decoder
        };
        let z = match &self.recipe.latent_norm {
            Some(n) => n.target.invert(d),
            None => d.shallow_clone(),
        };
        // a decode error is a NaN loss: the engine skips the step and counts it
        let Ok(p) = vae.decode_occupancy(&z) else { return Tensor::from(f32::NAN) };
        let w = if self.recipe.direct {
            sigma.ones_like()
        } else {
            DecodedLossConfig::noise_weight(sigma, self.recipe.edm.sigma_data)
        };
        (cfg.per_sample(&p, occupancy) * w).mean(tch::Kind::Float) * cfg.weight
    }

    /// Validates by decoded geometry after each epoch (`best` by val F1)
    /// on the recipe's `val_frames` of `ds`, decoded by `vae` (the VAE of
    /// the latents); nothing when `val_frames` is 0.
    pub fn with_validation(
        mut self,
        ds: Dataset,
        vae: Box<dyn GridVae>,
        rank: usize,
        world: usize,
    ) -> Result<Self, TrainError> {
        self.val = GeometryVal::new(ds, vae, self.recipe.val_frames, rank, world)?;
        Ok(self)
    }

    /// The network being trained.
    pub fn unet(&self) -> &Unet3d {
        &self.unet
    }

    /// Parameters of the UNet.
    pub fn parameter_count(&self) -> i64 {
        self.vs.trainable_variables().iter().map(|t| t.numel() as i64).sum()
    }

    fn order(&self) -> Order {
        let o = &self.recipe.optim;
        self.data.order(o.batch_size, o.shuffle, o.seed)
    }
}

impl Objective for LdmObjective {
    type Recipe = LdmRecipe;
    type Batch = LatentBatch;
    type Step = LdmStep;

    fn recipe(&self) -> &LdmRecipe {
        &self.recipe
    }
    fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }
    fn batches_per_epoch(&self) -> usize {
        self.order().len()
    }
    fn batches(&self, epoch: usize, cursor: usize) -> Box<dyn Iterator<Item = Result<LatentBatch, TrainError>>> {
        self.data.batches(self.order(), epoch, cursor)
    }
    fn datasets(&self) -> Vec<(&'static str, &Dataset)> {
        vec![("train", self.data.dataset())]
    }

    fn batch_ids(&self, batch: &LatentBatch) -> Vec<String> {
        batch.ids.clone()
    }

    fn prepare(&self, batch: &LatentBatch, seed: u64) -> Result<Option<LdmStep>, TrainError> {
        let r = &self.recipe;
        let Some((y, cond)) = self.data.tensors(batch, r.latent_norm.as_ref(), &r.radar_scale, self.device) else {
            return Ok(None);
        };
        let draws = (!r.direct).then(|| self.recipe.edm.draw(&y, seed));
        let occupancy = match (&r.decoded, &self.decoder, &batch.occupancy) {
            (None, _, _) => None,
            (Some(_), Some(_), Some(o)) => Some(o.to_device(self.device)),
            _ => {
                return Err(TrainError::Config(
                    "the recipe's [decoded] loss needs its decoder (LdmObjective::with_decoder)".into(),
                ))
            }
        };
        Ok(Some(LdmStep { y, cond, draws, occupancy }))
    }

    fn step_len(&self, step: &LdmStep) -> i64 {
        step.y.size()[0]
    }

    fn backward(&self, step: &LdmStep, start: i64, len: i64, scale: f64, checkpointing: Checkpointing) -> Vec<f64> {
        let cut = |t: &Tensor| t.narrow(0, start, len);
        let draws = step.draws.as_ref().map(|(s, n)| (cut(s), cut(n)));
        let ck = checkpointing != Checkpointing::Off;
        // the encoder runs inside the step so the loss trains it too
        let cond = match &self.encoder {
            Some(enc) => tch::nn::ModuleT::forward_t(enc, &cut(&step.cond), true),
            None => cut(&step.cond),
        };
        let occupancy = step.occupancy.as_ref().map(cut);
        let decoded = occupancy.as_ref().map(|o| move |d: &Tensor, s: &Tensor| self.decoded_loss(d, s, o));
        let extra = decoded.as_ref().map(|f| f as ExtraLoss<'_>);
        self.recipe.edm.backward_with(&self.unet, &cut(&step.y), &cond, draws.as_ref(), ck, scale, extra)
    }

    fn loss_columns(&self) -> Vec<Column> {
        let mut c = vec![("loss".into(), "loss".into(), 1.0)];
        if self.recipe.decoded.is_some() {
            c.push(("latent".into(), "latent (EDM)".into(), 1.0));
            c.push(("decoded".into(), "decoded x weight".into(), 1.0));
        }
        c
    }

    fn metric_columns(&self) -> Vec<Column> {
        self.val.as_ref().map_or(Vec::new(), |_| GeometryVal::columns())
    }

    fn validate(&self, _amp: Amp) -> Result<Option<Vec<f64>>, TrainError> {
        let Some(val) = &self.val else { return Ok(None) };
        let (direct, steps) = (self.recipe.direct, self.recipe.val_steps);
        let draw = |s: &Sampler, cond: &Tensor, seed: u64| {
            if direct {
                s.direct(cond)
            } else {
                s.sample(cond, steps, Solver::Heun, seed)
            }
        };
        Ok(Some(val.counts_of(&self.vs, &self.recipe, &draw)?))
    }

    fn metrics(&self, sums: &[f64]) -> Vec<f64> {
        GeometryVal::metrics(sums)
    }

    fn memory_run(&self, micro_batch: usize, precision: Precision, checkpointing: Checkpointing) -> Run {
        Run {
            model: ModelConfig::Unet(self.recipe.unet.clone()),
            grid: self.latent_grid,
            batch: micro_batch,
            precision,
            checkpointing,
        }
    }

    fn loader_threads(&self) -> (usize, usize) {
        (0, 0) // latents are read synchronously, per batch
    }

    fn metadata(&self) -> BTreeMap<String, String> {
        BTreeMap::from([("vae_hash".to_string(), self.vae_hash.clone())])
    }

    fn title(&self) -> String {
        if self.recipe.direct { "DIRECT BASELINE LOSS" } else { "LATENT DIFFUSION EDM LOSS" }.into()
    }
}

/// The latent-diffusion trainer: the engine over [`LdmObjective`].
pub type LdmTrainer = Trainer<LdmObjective>;

impl Trainer<LdmObjective> {
    /// A new latent-diffusion run.
    pub fn ldm(
        dataset: Dataset,
        source: LatentSource,
        vae_hash: &str,
        recipe: LdmRecipe,
        runtime: Runtime,
    ) -> Result<Self, TrainError> {
        let objective = LdmObjective::new(dataset, source, vae_hash, recipe, &runtime)?;
        Trainer::new(objective, runtime)
    }

    /// Continues the run of checkpoint `path` (which must have been trained
    /// on the latents of the VAE `vae_hash`) with its recipe, `edit`ed first.
    pub fn resume_ldm(
        path: &Path,
        dataset: Dataset,
        source: LatentSource,
        vae_hash: &str,
        runtime: Runtime,
        edit: impl FnOnce(&mut LdmRecipe),
    ) -> Result<Self, TrainError> {
        let ckpt = Checkpoint::read(path, LdmRecipe::KIND)?;
        check_vae_hash(&ckpt, vae_hash)?;
        let mut recipe: LdmRecipe = ckpt.recipe()?;
        edit(&mut recipe);
        let objective = LdmObjective::new(dataset, source, vae_hash, recipe, &runtime)?;
        Trainer::resume(objective, runtime, &ckpt)
    }
}
