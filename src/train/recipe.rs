//! A run's recipe: everything that defines what is trained (model,
//! optimiser, schedule, losses, channel scale, data layout), saved in every
//! checkpoint, as opposed to the [`super::Runtime`] of one process (device,
//! workers, progress, budget), which is never saved.
//!
//! Two ways in, with different strictness:
//! - from a checkpoint ([`read_stored`]): tolerant of the past. Fields a
//!   later radvox added take their defaults (which reproduce the old
//!   behaviour); a recipe written by a newer radvox is refused, since it may
//!   hold settings this one cannot honour.
//! - from a file a person wrote ([`read_file`]): strict. An unknown key is
//!   refused with the closest valid one; a runtime setting is refused with
//!   the flag to use instead.

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::TrainError;
use crate::io::config::{parse_document, unknown_keys};

/// Version of the recipe and checkpoint format this radvox writes. Format 1
/// (radvox before recipes) stored a config mixing recipe and runtime.
pub const RECIPE_VERSION: u32 = 2;

/// Settings of format-1 configs that are runtime settings now: ignored in
/// old checkpoints, refused (with the flag to use) in files people write.
pub const RUNTIME_KEYS: &[(&str, &str)] = &[
    ("amp", "--amp on|off|auto"),
    ("checkpointing", "--checkpointing"),
    ("num_workers", "--num-workers"),
    ("prefetch", "--prefetch"),
    ("pin_memory", "--pin-memory"),
    ("device", "--device"),
    ("max_nonfinite_streak", "--max-nonfinite-streak"),
    ("progress", "--no-progress"),
    ("memory_budget_gib", "--memory-budget-gb"),
    ("force", "--force"),
    ("oom_fallback", "--no-oom-fallback"),
    ("lean_host_memory", "--no-lean-host-memory"),
];

/// What every trainer's recipe shares: the optimiser, its schedule and the
/// batch layout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct OptimRecipe {
    /// Epochs (the cosine schedule spans them).
    pub epochs: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Final learning rate of the cosine schedule.
    pub min_lr: f64,
    /// AdamW decoupled weight decay.
    pub weight_decay: f64,
    /// Frames per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per optimizer step (the loss is divided by this).
    pub grad_accum: usize,
    /// Gradient-norm clipping threshold.
    pub clip_grad_norm: f64,
    /// Seed of data order, sampling noise and initialisation.
    pub seed: u64,
    /// Reshuffle the train split every epoch.
    pub shuffle: bool,
    /// Decay of an exponential moving average of the weights (used for
    /// sampling); `None`: no average kept.
    pub ema_decay: Option<f64>,
    /// Ramps the EMA's decay up from 0.1 as `min(ema_decay, (1 + t) / (10 + t))`
    /// at step `t`, so a short run's average forgets the initial weights
    /// (default; a recipe saved before this field reads as `true` too).
    pub ema_warmup: bool,
    /// Initial loss scale (float16 AMP on CUDA).
    pub init_scale: f64,
    /// Clean steps before the loss scale doubles.
    pub growth_interval: u64,
}

impl Default for OptimRecipe {
    /// The seed's optimiser: AdamW 1e-4 / wd 1e-4, cosine to 1e-6 over 10
    /// epochs, batch 1 x accumulation 8, clip 1.0.
    fn default() -> Self {
        OptimRecipe {
            epochs: 10,
            lr: 1e-4,
            min_lr: 1e-6,
            weight_decay: 1e-4,
            batch_size: 1,
            grad_accum: 8,
            clip_grad_norm: 1.0,
            seed: 0,
            shuffle: true,
            ema_decay: None,
            ema_warmup: true,
            init_scale: 65536.0,
            growth_interval: 2000,
        }
    }
}

impl OptimRecipe {
    /// Refuses values no run can use (every trainer checks the same way).
    pub fn validate(&self) -> Result<(), TrainError> {
        let bad = |m: String| Err(TrainError::Config(m));
        if self.epochs == 0 || self.batch_size == 0 || self.grad_accum == 0 {
            return bad(format!(
                "epochs ({}), batch_size ({}) and grad_accum ({}) must be >= 1",
                self.epochs, self.batch_size, self.grad_accum
            ));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad(format!("lr must be finite and > 0, got {}", self.lr));
        }
        if !(self.min_lr.is_finite() && self.min_lr >= 0.0 && self.min_lr <= self.lr) {
            return bad(format!("need 0 <= min_lr ({}) <= lr ({})", self.min_lr, self.lr));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad(format!("weight_decay must be finite and >= 0, got {}", self.weight_decay));
        }
        if !(self.clip_grad_norm.is_finite() && self.clip_grad_norm > 0.0) {
            return bad(format!("clip_grad_norm must be finite and > 0, got {}", self.clip_grad_norm));
        }
        if !(self.init_scale.is_finite() && self.init_scale >= 1.0) || self.growth_interval == 0 {
            return bad(format!(
                "init_scale must be finite and >= 1 ({}), growth_interval >= 1 ({})",
                self.init_scale, self.growth_interval
            ));
        }
        if let Some(d) = self.ema_decay {
            if !(0.0..1.0).contains(&d) {
                return bad(format!("ema_decay must lie in [0, 1), got {d}"));
            }
        }
        Ok(())
    }
}

/// A trainer's recipe.
pub trait Recipe: Serialize + DeserializeOwned + Default + Clone + PartialEq + std::fmt::Debug {
    /// The checkpoint kind: `vae`, `ldm`, ...
    const KIND: &'static str;
    /// The shared optimiser part.
    fn optim(&self) -> &OptimRecipe;
    /// The shared optimiser part, to edit.
    fn optim_mut(&mut self) -> &mut OptimRecipe;
    /// Refuses settings that cannot run (the optimiser's included).
    fn validate(&self) -> Result<(), TrainError>;
}

/// Reads a recipe stored in a checkpoint written with recipe `version`
/// (see the module docs). Returns it and the keys it ignored.
pub fn read_stored<R: Recipe>(json: &str, version: u32, path: &Path) -> Result<(R, Vec<String>), TrainError> {
    let fail = |reason: String| TrainError::Checkpoint { path: path.into(), reason };
    if version > RECIPE_VERSION {
        return Err(fail(format!(
            "written by a newer radvox (recipe version {version}; this one reads up to {RECIPE_VERSION})"
        )));
    }
    let mut doc: Value = serde_json::from_str(json).map_err(|e| fail(format!("recipe is not JSON: {e}")))?;
    if let Value::Object(map) = &mut doc {
        for (key, _) in RUNTIME_KEYS {
            map.remove(*key); // format 1 kept runtime settings with the recipe
        }
    }
    let template = serde_json::to_value(R::default()).expect("recipes serialise");
    let unknown = unknown_keys(&doc, &template);
    for u in &unknown {
        let mut table = &mut doc;
        for part in u.section.split('.').filter(|p| !p.is_empty()) {
            table = &mut table[part];
        }
        if let Value::Object(map) = table {
            map.remove(&u.name);
        }
    }
    let ignored: Vec<String> = unknown.iter().map(|u| u.to_string()).collect();
    let recipe: R = serde_json::from_value(doc).map_err(|e| fail(format!("recipe: {e}")))?;
    recipe.validate().map_err(|e| fail(e.to_string()))?;
    Ok((recipe, ignored))
}

/// Reads a recipe file a person wrote: TOML, or JSON by its extension.
/// Keys not given take their defaults; unknown and runtime keys are refused.
pub fn read_file<R: Recipe>(path: &Path) -> Result<R, TrainError> {
    let fail = |reason: String| TrainError::Config(format!("{}: {reason}", path.display()));
    let text = std::fs::read_to_string(path).map_err(|e| fail(format!("cannot read the recipe file: {e}")))?;
    let json = path.extension().is_some_and(|e| e == "json");
    let doc = parse_document(&text, json).map_err(fail)?;
    let template = serde_json::to_value(R::default()).expect("recipes serialise");
    if let Some(u) = unknown_keys(&doc, &template).into_iter().next() {
        if let Some((_, flag)) = RUNTIME_KEYS.iter().find(|(k, _)| u.section.is_empty() && *k == u.name) {
            return Err(fail(format!(
                "`{}` is not part of a recipe but a setting of this process: pass {flag}",
                u.name
            )));
        }
        return Err(fail(u.to_string()));
    }
    let recipe: R = serde_json::from_value(doc).map_err(|e| fail(e.to_string()))?;
    recipe.validate().map_err(|e| fail(e.to_string()))?;
    Ok(recipe)
}
