//! What a trainer trains. The [`super::Trainer`] engine owns the loop every
//! trainer shares (micro-steps and accumulation, AMP and loss scaling,
//! clipping, AdamW and its schedule, EMA, non-finite batches, out-of-memory
//! fallback, the memory-plan refusal, exact resume, logs, checkpoints); an
//! objective says what one micro-step computes and what validation reports.

use std::collections::BTreeMap;
use std::path::Path;

use tch::{nn, Tensor};

use super::precision::Amp;
use super::recipe::Recipe;
use super::TrainError;
use crate::data::Dataset;
use crate::memory::{Precision, Run};
use crate::model::Checkpointing;

/// A named series of the logs: `(column, legend, factor drawn on the plot)`.
pub type Column = (String, String, f64);

/// One trainer's part of the loop; see the module docs.
pub trait Objective {
    /// What defines the run.
    type Recipe: Recipe;
    /// One batch of the data source.
    type Batch;
    /// A batch made ready for a micro-step (on the device, its noise drawn
    /// once), so a step split after an out-of-memory error reruns identically.
    type Step;

    /// The recipe.
    fn recipe(&self) -> &Self::Recipe;
    /// The trainable variables.
    fn var_store(&self) -> &nn::VarStore;
    /// Batches per epoch.
    fn batches_per_epoch(&self) -> usize;
    /// The batches of `epoch` from position `cursor` on, in order (the
    /// iterator owns what it reads from, so the loop may change the trainer).
    fn batches(&self, epoch: usize, cursor: usize) -> Box<dyn Iterator<Item = Result<Self::Batch, TrainError>>>;
    /// The datasets the run reads, named (`train`, `val`): data-parallel
    /// ranks must agree on each one's [`Dataset::identity`].
    fn datasets(&self) -> Vec<(&'static str, &Dataset)>;
    /// The frames of a batch, for messages.
    fn batch_ids(&self, batch: &Self::Batch) -> Vec<String>;
    /// Prepares a micro-step with its own `seed`; `None` when the input is
    /// not finite (the batch is skipped).
    fn prepare(&self, batch: &Self::Batch, seed: u64) -> Result<Option<Self::Step>, TrainError>;
    /// Frames in a prepared step.
    fn step_len(&self, step: &Self::Step) -> i64;
    /// Forward and backward of frames `start .. start + len` of `step`, the
    /// loss multiplied by `scale`, accumulating gradients. Returns the loss
    /// parts (see [`Objective::loss_columns`]); when the total is not finite
    /// nothing is back-propagated.
    fn backward(&self, step: &Self::Step, start: i64, len: i64, scale: f64, checkpointing: Checkpointing) -> Vec<f64>;
    /// The loss parts' columns; the first is the total that is optimised.
    fn loss_columns(&self) -> Vec<Column>;
    /// Validation metrics' columns; the first is the score that picks
    /// `best` (higher is better). Empty: the objective does not validate.
    fn metric_columns(&self) -> Vec<Column> {
        Vec::new()
    }
    /// Additive statistics of this rank's validation shard (counts, sums),
    /// which the engine sums over ranks; `None` without a validation split.
    fn validate(&self, _amp: Amp) -> Result<Option<Vec<f64>>, TrainError> {
        Ok(None)
    }
    /// The metrics, in the order of [`Objective::metric_columns`], of the
    /// statistics [`Objective::validate`] summed over every rank.
    fn metrics(&self, sums: &[f64]) -> Vec<f64> {
        sums.to_vec()
    }
    /// What the memory planner plans for a micro-step of `micro_batch`
    /// frames at `precision` and `checkpointing`.
    fn memory_run(&self, micro_batch: usize, precision: Precision, checkpointing: Checkpointing) -> Run;
    /// Loader threads and prefetch that hold batches in host memory (0, 0
    /// when batches are read synchronously).
    fn loader_threads(&self) -> (usize, usize);
    /// Metadata saved with every checkpoint besides the recipe and counters.
    fn metadata(&self) -> BTreeMap<String, String> {
        BTreeMap::new()
    }
    /// Title of the loss plot.
    fn title(&self) -> String;
    /// Whether `auto` precision may use bf16 autocast on a CPU that runs it
    /// natively; `Err` says why not (the objective measured f32 faster).
    fn cpu_autocast(&self) -> Result<(), String> {
        Ok(())
    }
    /// Runs after every optimizer step that was taken (the weights updated).
    fn after_optimizer_step(&mut self) {}
    /// State besides the trained variables that a checkpoint must hold for
    /// an exact resume (saved under `aux.`).
    fn aux_tensors(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }
    /// Restores [`Objective::aux_tensors`] (their `aux.` prefix stripped)
    /// from the checkpoint at `path`.
    fn load_aux(&mut self, _tensors: &BTreeMap<String, Tensor>, _path: &Path) -> Result<(), TrainError> {
        Ok(())
    }
}
