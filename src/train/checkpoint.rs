//! The one checkpoint format of every trainer: a safetensors file with the
//! model's variables (PyTorch state_dict names), `ema.*` averages,
//! `adamw.{m,v}.*` moments, an objective's own state under `aux.*` (the
//! consistency target network), and in the metadata the format, the kind of run,
//! its versioned recipe (JSON), the counters that make a resume exact, and a
//! content checksum. One writer, one reader, one format check; format-1
//! files (written before recipes) are still read.
//!
//! Downstream commands build what they need from a checkpoint here:
//! [`load_vae`] (a frozen VAE with its channel scale and data layout) and
//! [`load_sampler`] (the EMA weights of an LDM or of its consistency
//! distillation, tied to their VAE).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::{nn, Device, Tensor};

use super::cd::CdRecipe;
use super::ldm::{build_denoiser, LdmRecipe};
use super::optim::GradScaler;
use super::recipe::{read_stored, Recipe, RECIPE_VERSION};
use super::vae::VaeRecipe;
use super::TrainError;
use crate::diffusion::Sampler;
use crate::io::safetensors::{self, check_finite, weights_hash};
use crate::model::{FrozenVae, Vae3d, VaeConfig};

/// The `format` metadata of radvox checkpoints.
pub const FORMAT: &str = "radvox-checkpoint";

/// Counters that, with the weights and moments, make a resume exact.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainState {
    /// Completed epochs.
    pub epoch: usize,
    /// Optimizer steps taken.
    pub step: u64,
    /// Micro-steps taken (seeds each step's sampling noise: the RNG state).
    pub micro: u64,
    /// Next batch within the epoch (the data cursor).
    pub cursor: usize,
    /// Micro-batches accumulated since the last optimizer step.
    pub accum_phase: usize,
    /// Best validation score so far (the objective's, higher is better).
    #[serde(alias = "best_iou")]
    pub best: Option<f64>,
    /// Batches skipped as non-finite.
    pub skipped: u64,
    /// Loss scaler.
    pub scaler: GradScaler,
}

impl Default for TrainState {
    fn default() -> Self {
        TrainState {
            epoch: 0,
            step: 0,
            micro: 0,
            cursor: 0,
            accum_phase: 0,
            best: None,
            skipped: 0,
            scaler: GradScaler::new(false, 1.0, 2000),
        }
    }
}

/// A checkpoint read back: checked for format, kind, checksum and finite values.
pub struct Checkpoint {
    /// The file.
    pub path: PathBuf,
    /// `vae`, `ldm`, ...
    pub kind: String,
    /// Recipe version it was written with (1: before recipes).
    pub version: u32,
    /// The recipe, JSON.
    pub recipe_json: String,
    /// Counters.
    pub state: TrainState,
    /// Every tensor by name.
    pub tensors: BTreeMap<String, Tensor>,
    /// Every metadata entry.
    pub metadata: BTreeMap<String, String>,
}

impl Checkpoint {
    /// Reads `path`, requiring a radvox checkpoint of `kind`.
    pub fn read(path: &Path, kind: &str) -> Result<Checkpoint, TrainError> {
        Self::read_kinds(path, &[kind])
    }

    /// Reads `path`, requiring a radvox checkpoint of one of `kinds`.
    pub fn read_kinds(path: &Path, kinds: &[&str]) -> Result<Checkpoint, TrainError> {
        let fail = |reason: String| TrainError::Checkpoint { path: path.into(), reason };
        let file = safetensors::read(path)?;
        let meta = &file.metadata;
        let format = meta.get("format").map(String::as_str).unwrap_or("");
        let (found, version, recipe_key) = match format {
            FORMAT => {
                let v = meta.get("version").and_then(|v| v.parse().ok()).ok_or_else(|| fail("no version".into()))?;
                (meta.get("kind").cloned().unwrap_or_default(), v, "recipe")
            }
            "radvox-vae-checkpoint-1" => ("vae".to_string(), 1, "config"),
            "radvox-ldm-checkpoint-1" => ("ldm".to_string(), 1, "config"),
            "" => return Err(fail("not a radvox checkpoint (no format in its metadata)".into())),
            other => return Err(fail(format!("unknown checkpoint format {other:?}"))),
        };
        if !kinds.contains(&found.as_str()) {
            return Err(fail(format!("a {found} checkpoint, expected a {} checkpoint", kinds.join(" or "))));
        }
        check_finite(path, &file.tensors)?;
        let recipe_json = meta.get(recipe_key).cloned().ok_or_else(|| fail(format!("metadata lacks {recipe_key}")))?;
        let state = match meta.get("state") {
            Some(s) => serde_json::from_str(s).map_err(|e| fail(format!("state: {e}")))?,
            None => TrainState::default(),
        };
        Ok(Checkpoint {
            path: path.into(),
            kind: found,
            version,
            recipe_json,
            state,
            tensors: file.tensors,
            metadata: file.metadata,
        })
    }

    /// The recipe, read tolerantly (see [`super::recipe`]); ignored keys are logged.
    pub fn recipe<R: Recipe>(&self) -> Result<R, TrainError> {
        let (recipe, ignored) = read_stored::<R>(&self.recipe_json, self.version, &self.path)?;
        for key in ignored {
            log::warn!("{}: recipe {key} ignored", self.path.display());
        }
        Ok(recipe)
    }

    /// The model's own tensors (no `ema.`, `adamw.` or `aux.` prefix).
    pub fn model_tensors(&self) -> BTreeMap<String, Tensor> {
        self.tensors
            .iter()
            .filter(|(k, _)| !["ema.", "adamw.", "aux."].iter().any(|p| k.starts_with(p)))
            .map(|(k, t)| (k.clone(), t.shallow_clone()))
            .collect()
    }

    /// Tensors under `prefix.`, the prefix stripped.
    pub fn prefixed(&self, prefix: &str) -> BTreeMap<String, Tensor> {
        let p = format!("{prefix}.");
        self.tensors
            .iter()
            .filter_map(|(k, t)| k.strip_prefix(&p).map(|s| (s.to_string(), t.shallow_clone())))
            .collect()
    }
}

/// Writes a checkpoint of `kind` atomically: `tensors` (model, EMA, moments)
/// and the recipe, counters and `extra` metadata.
pub fn write(
    path: &Path,
    kind: &str,
    recipe: &impl Serialize,
    state: &TrainState,
    tensors: &[(String, Tensor)],
    extra: &BTreeMap<String, String>,
) -> Result<(), TrainError> {
    let mut meta = extra.clone();
    meta.insert("format".into(), FORMAT.into());
    meta.insert("version".into(), RECIPE_VERSION.to_string());
    meta.insert("kind".into(), kind.into());
    meta.insert("recipe".into(), serde_json::to_string(recipe).expect("recipes serialise"));
    meta.insert("state".into(), serde_json::to_string(state).expect("state serialises"));
    Ok(safetensors::save_atomic(path, tensors, &meta)?)
}

/// Metadata key of an occupancy threshold calibrated for a model (the
/// `evaluate` example's `--calibrate`); `sample` uses it by default.
pub const THRESHOLD_KEY: &str = "calibrated_threshold";

/// Records `value` under `key` in the metadata of the checkpoint at `path`
/// (rewritten atomically; tensors untouched), holding its folder's lock: a
/// trainer still writing that folder would replace the file and lose the
/// entry, so the change is refused while one runs.
pub fn set_metadata(path: &Path, key: &str, value: &str) -> Result<(), TrainError> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let _lock = crate::io::FolderLock::acquire(dir, "recording checkpoint metadata")?;
    let file = safetensors::read(path)?;
    let mut meta = file.metadata;
    meta.remove(safetensors::CHECKSUM_KEY);
    meta.insert(key.into(), value.into());
    let tensors: Vec<(String, Tensor)> = file.tensors.into_iter().collect();
    Ok(safetensors::save_atomic(path, &tensors, &meta)?)
}

/// Loads a trained VAE from its checkpoint, frozen, with its recipe. The
/// model's tensors must match the recipe's architecture exactly; `expect`,
/// when given, must equal it (the difference is named otherwise).
pub fn load_vae(path: &Path, expect: Option<&VaeConfig>, device: Device) -> Result<(FrozenVae, VaeRecipe), TrainError> {
    let ckpt = Checkpoint::read(path, "vae")?;
    let recipe: VaeRecipe = ckpt.recipe()?;
    if let Some(want) = expect {
        if want != &recipe.vae {
            return Err(TrainError::Checkpoint {
                path: path.into(),
                reason: format!(
                    "VAE config differs: checkpoint has {}, expected {}",
                    serde_json::to_string(&recipe.vae).unwrap_or_default(),
                    serde_json::to_string(want).unwrap_or_default()
                ),
            });
        }
    }
    let mut vs = nn::VarStore::new(device);
    let vae = Vae3d::new(&vs.root(), &recipe.vae)?;
    let model = ckpt.model_tensors();
    safetensors::load_into(&vs, "", &model, path)?;
    vs.freeze();
    let frozen = FrozenVae {
        vs,
        vae,
        channel_scale: recipe.channel_scale.clone(),
        hash: weights_hash(&model),
        tiling: None,
        occupancy_logits: recipe.loss.occupancy_logits(),
    };
    Ok((frozen, recipe))
}

/// A sampler and what its checkpoint records.
pub struct LoadedSampler {
    /// The network (its EMA weights unless loaded with [`SamplerWeights::Live`]).
    pub sampler: Sampler,
    /// The recipe of the network: the LDM's (for a distilled model, its teacher's).
    pub recipe: LdmRecipe,
    /// A consistency model (kind `cd`): sampled by
    /// [`Sampler::sample_consistency`], not by an ODE solver.
    pub consistency: bool,
    /// An occupancy threshold calibrated for it, if one was recorded.
    pub threshold: Option<f64>,
}

/// Refuses a checkpoint whose `vae_hash` is not `vae_hash`.
pub fn check_vae_hash(ckpt: &Checkpoint, vae_hash: &str) -> Result<(), TrainError> {
    let theirs = ckpt.metadata.get("vae_hash").map(String::as_str).unwrap_or("");
    if theirs != vae_hash {
        return Err(TrainError::Checkpoint {
            path: ckpt.path.clone(),
            reason: format!("trained on latents of VAE {theirs}, not of this VAE {vae_hash}"),
        });
    }
    Ok(())
}

/// Which of a checkpoint's weights a sampler runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SamplerWeights {
    /// The exponential moving average (`ema.*`): what sampling uses.
    #[default]
    Ema,
    /// The optimizer's live weights at the checkpoint, to compare with
    /// their average.
    Live,
}

/// Loads the EMA weights of an LDM or consistency checkpoint as a
/// [`Sampler`], refusing one trained on another VAE's latents.
pub fn load_sampler(path: &Path, vae_hash: &str, device: Device) -> Result<LoadedSampler, TrainError> {
    load_sampler_weights(path, vae_hash, device, SamplerWeights::Ema)
}

/// [`load_sampler`] with the checkpoint's `weights`.
pub fn load_sampler_weights(
    path: &Path,
    vae_hash: &str,
    device: Device,
    weights: SamplerWeights,
) -> Result<LoadedSampler, TrainError> {
    let ckpt = Checkpoint::read_kinds(path, &[LdmRecipe::KIND, CdRecipe::KIND])?;
    check_vae_hash(&ckpt, vae_hash)?;
    let consistency = ckpt.kind == CdRecipe::KIND;
    let recipe = if consistency { ckpt.recipe::<CdRecipe>()?.teacher } else { ckpt.recipe::<LdmRecipe>()? };
    let vs = nn::VarStore::new(device);
    let (unet, encoder) = build_denoiser(&vs.root(), &recipe)?;
    let tensors = match weights {
        SamplerWeights::Ema => ckpt.prefixed("ema"),
        SamplerWeights::Live => ckpt.model_tensors(),
    };
    safetensors::load_into(&vs, "", &tensors, path)?;
    let threshold = ckpt.metadata.get(THRESHOLD_KEY).and_then(|t| t.parse().ok());
    let sampler = super::ldm::sampler_of(vs, unet, encoder, &recipe);
    Ok(LoadedSampler { sampler, recipe, consistency, threshold })
}
