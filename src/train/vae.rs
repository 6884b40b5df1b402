//! The VAE objective: reconstruct the target grids (scaled per channel)
//! with the configured losses plus the weighted KL term, under the seed's
//! memory techniques (batch 1 + accumulation, mixed precision, gradient
//! checkpointing, a lean loader of targets only); validated by the
//! occupancy IoU of deterministic reconstructions.

use std::path::Path;

use serde::{Deserialize, Serialize};
use tch::nn::{self, ModuleT};
use tch::{Device, Kind, Tensor};

use super::checkpoint::Checkpoint;
use super::engine::Trainer;
use super::objective::{Column, Objective};
use super::precision::Amp;
use super::recipe::{OptimRecipe, Recipe};
use super::runtime::Runtime;
use super::TrainError;
use crate::data::{Batch, Dataset, Layout, Loader, LoaderConfig};
use crate::dist::{Dist, ReduceOp};
use crate::eval::Occupancy;
use crate::memory::{ModelConfig, Precision, Run};
use crate::model::loss::{LossConfig, ReconLoss};
use crate::model::{Checkpointing, Vae3d, VaeConfig};
use crate::sys::with_init_seed;

/// What defines a VAE run (saved in every checkpoint).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct VaeRecipe {
    /// Architecture.
    pub vae: VaeConfig,
    /// Reconstruction loss terms.
    pub loss: LossConfig,
    /// Optimiser, schedule and batches.
    #[serde(flatten)]
    pub optim: OptimRecipe,
    /// Per-channel factor applied to inputs before the model, so channels
    /// of very different ranges (intensity ~0-120, Doppler m/s) weigh
    /// comparably in the loss; losses are in these scaled units. Channel 0
    /// (occupancy, thresholded by the metrics) should stay 1.
    pub channel_scale: Vec<f64>,
    /// How frames were laid out (padding or the resampled grid); `None` in
    /// checkpoints written before it was recorded. Commands downstream use
    /// it and refuse a contradicting `--resample`.
    pub layout: Option<Layout>,
    /// Occupancy threshold of the validation metrics.
    pub iou_threshold: f64,
}

impl Default for VaeRecipe {
    /// The seed's recipe: ultra_lightweight, batch 1, accumulation 8, AdamW
    /// 1e-4 / wd 1e-4, clip 1.0, MSE.
    fn default() -> Self {
        VaeRecipe {
            vae: VaeConfig::ultra_lightweight(),
            loss: LossConfig::default(),
            optim: OptimRecipe::default(),
            channel_scale: vec![1.0, 0.01, 0.25, 1.0],
            layout: None,
            iou_threshold: 0.5,
        }
    }
}

impl Recipe for VaeRecipe {
    const KIND: &'static str = "vae";
    fn optim(&self) -> &OptimRecipe {
        &self.optim
    }
    fn optim_mut(&mut self) -> &mut OptimRecipe {
        &mut self.optim
    }
    fn validate(&self) -> Result<(), TrainError> {
        self.vae.validate()?;
        self.optim.validate()?;
        check_channel_scale(&self.channel_scale, self.vae.in_channels)?;
        if !(self.iou_threshold.is_finite() && self.iou_threshold > 0.0 && self.iou_threshold < 1.0) {
            return Err(TrainError::Config(format!("iou_threshold must lie in (0, 1), got {}", self.iou_threshold)));
        }
        Ok(())
    }
}

/// Refuses a `channel_scale` that is not one positive, finite factor per
/// input channel.
pub fn check_channel_scale(scale: &[f64], channels: i64) -> Result<(), TrainError> {
    if scale.len() != channels as usize || scale.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
        return Err(TrainError::Config(format!(
            "channel_scale {scale:?} needs {channels} positive factors, one per input channel"
        )));
    }
    Ok(())
}

/// Records the datasets' `layout` as a recipe's, refusing one that
/// contradicts what the recipe already records.
pub fn record_layout(recorded: &mut Option<Layout>, layout: Layout) -> Result<(), TrainError> {
    if let Some(r) = recorded.filter(|r| *r != layout) {
        return Err(TrainError::Contradiction {
            what: format!("layout {layout}"),
            recorded: format!("{r}"),
            path: "the recipe".into(),
        });
    }
    *recorded = Some(layout);
    Ok(())
}

/// Refuses a `--resample`/layout that contradicts the one a model was
/// trained with; returns the layout to use (the recorded one wins).
pub fn layout_for(recorded: Option<Layout>, asked: Option<Layout>, source: &Path) -> Result<Layout, TrainError> {
    match (recorded, asked) {
        (Some(r), Some(a)) if r != a => Err(TrainError::Contradiction {
            what: format!("layout {a}"),
            recorded: format!("{r}"),
            path: source.into(),
        }),
        (Some(r), _) => Ok(r),
        (None, Some(a)) => Ok(a),
        (None, None) => Ok(Layout::default()),
    }
}

/// The layout whole frames are read with for a model whose VAE was trained
/// with `recorded` (crops become whole padded frames), refusing a
/// `--resample` that contradicts it.
pub fn frame_layout(
    recorded: Option<Layout>,
    resample: Option<[usize; 3]>,
    source: &Path,
) -> Result<Layout, TrainError> {
    let asked = resample.map(|zhw| Layout::Resample { zhw });
    layout_for(recorded.map(Layout::whole_frame), asked, source)
}

/// The VAE objective; see the module docs.
pub struct VaeObjective {
    recipe: VaeRecipe,
    vs: nn::VarStore,
    vae: Vae3d,
    loss: ReconLoss,
    train: Loader,
    val: Option<Loader>,
    device: Device,
    threads: (usize, usize),
    /// This rank's place (validation statistics are summed over ranks).
    dist: Dist,
}

/// A batch on the device, scaled, with its sampling noise.
pub struct VaeStep {
    x: Tensor,
    eps: Tensor,
}

impl VaeObjective {
    /// Builds the model (seeded), loss and loaders. The recipe's layout
    /// must be the datasets' (it is recorded from them when unset), and the
    /// grid must suit the VAE.
    pub fn new(train: Dataset, val: Option<Dataset>, recipe: VaeRecipe, runtime: &Runtime) -> Result<Self, TrainError> {
        let mut recipe = recipe;
        recipe.validate()?;
        let layout = train.config().layout;
        record_layout(&mut recipe.layout, layout)?;
        let shape = train.output_shape(0);
        let zhw = [shape[1] as i64, shape[2] as i64, shape[3] as i64];
        recipe.vae.check_grid(zhw).map_err(|e| match layout {
            Layout::Crop { .. } => {
                // the largest crop the strides process that every frame holds
                let f = recipe.vae.downsampling();
                let s = train.frames()[0].target.shape();
                let native = [s[2] as i64, s[0] as i64, s[1] as i64];
                let fit: [i64; 3] = std::array::from_fn(|a| zhw[a].min(native[a]) / f[a] * f[a]);
                TrainError::Config(format!("{e}; the largest valid crop is {},{},{}", fit[0], fit[1], fit[2]))
            }
            _ => e.into(),
        })?;
        let device = super::runtime::parse_device(&runtime.device)?;
        let vs = nn::VarStore::new(device);
        let vae = with_init_seed(recipe.optim.seed, || Vae3d::new(&vs.root(), &recipe.vae))?;
        let loss = ReconLoss::new(&recipe.loss, recipe.vae.out_channels, device)?;
        let loader = |shuffle| LoaderConfig {
            batch_size: recipe.optim.batch_size,
            shuffle,
            rank: runtime.dist.rank(),
            world_size: runtime.dist.world_size(),
            seed: recipe.optim.seed,
            num_workers: runtime.num_workers,
            prefetch: runtime.prefetch,
            pin_memory: runtime.pin_memory,
            load_radar: false, // the VAE learns the targets alone
            read_timeout: runtime.read_timeout_s.map(std::time::Duration::from_secs_f64),
            ..Default::default()
        };
        let train = Loader::new(train, loader(recipe.optim.shuffle))?;
        let val = val.map(|v| Loader::new(v, LoaderConfig { pad_shards: false, ..loader(false) })).transpose()?;
        let threads = (runtime.num_workers, runtime.prefetch);
        Ok(VaeObjective { recipe, vs, vae, loss, train, val, device, threads, dist: runtime.dist.clone() })
    }

    /// The model.
    pub fn vae(&self) -> &Vae3d {
        &self.vae
    }

    /// The training loader.
    pub fn train_loader(&self) -> &Loader {
        &self.train
    }

    /// Share of validation voxels occupied at the IoU threshold: the IoU of
    /// predicting every voxel occupied (predicting none scores 0), over
    /// every rank's shard. `None` without a validation split.
    pub fn val_occupied_share(&self) -> Result<Option<f64>, TrainError> {
        let Some(val) = &self.val else { return Ok(None) };
        let mut counts = [0.0f64; 2]; // occupied, total
        for batch in val.epoch(0) {
            let occ = batch?.target.select(1, 0);
            counts[0] +=
                occ.to_kind(Kind::Float).gt(self.recipe.iou_threshold).sum(Kind::Int64).int64_value(&[]) as f64;
            counts[1] += occ.numel() as f64;
        }
        self.dist.all_reduce_f64(&mut counts, ReduceOp::Sum)?;
        Ok(Some(counts[0] / counts[1].max(1.0)))
    }

    /// A batch tensor on the device, float32, scaled per channel.
    pub fn input(&self, t: &Tensor) -> Tensor {
        let scale = Tensor::from_slice(&self.recipe.channel_scale)
            .to_kind(Kind::Float)
            .to_device(self.device)
            .reshape([1, -1, 1, 1, 1]);
        t.to_device(self.device).to_kind(Kind::Float) * scale
    }
}

impl Objective for VaeObjective {
    type Recipe = VaeRecipe;
    type Batch = Batch;
    type Step = VaeStep;

    fn recipe(&self) -> &VaeRecipe {
        &self.recipe
    }
    fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }
    fn batches_per_epoch(&self) -> usize {
        self.train.len()
    }
    fn batches(&self, epoch: usize, cursor: usize) -> Box<dyn Iterator<Item = Result<Batch, TrainError>>> {
        Box::new(self.train.epoch_from(epoch as u64, cursor).map(|b| b.map_err(TrainError::from)))
    }
    fn datasets(&self) -> Vec<(&'static str, &Dataset)> {
        let mut d = vec![("train", self.train.dataset())];
        d.extend(self.val.as_ref().map(|v| ("val", v.dataset())));
        d
    }

    fn batch_ids(&self, batch: &Batch) -> Vec<String> {
        batch.ids.iter().map(|i| i.to_string()).collect()
    }

    fn prepare(&self, batch: &Batch, seed: u64) -> Result<Option<VaeStep>, TrainError> {
        let x = self.input(&batch.target);
        if x.isfinite().all().int64_value(&[]) == 0 {
            return Ok(None);
        }
        let s = x.size();
        let shape = self.vae.latent_shape([s[0], s[1], s[2], s[3], s[4]]);
        let eps = crate::sys::normal(seed, &shape, self.device);
        Ok(Some(VaeStep { x, eps }))
    }

    fn step_len(&self, step: &VaeStep) -> i64 {
        step.x.size()[0]
    }

    fn backward(&self, step: &VaeStep, start: i64, len: i64, scale: f64, checkpointing: Checkpointing) -> Vec<f64> {
        let (x, eps) = (step.x.narrow(0, start, len), step.eps.narrow(0, start, len));
        let p = self.vae.backward(&x, Some(&eps), checkpointing, scale, &|r, t| self.loss.compute(r, t));
        vec![p.total, p.recon, p.kl]
    }

    fn loss_columns(&self) -> Vec<Column> {
        vec![
            ("loss".into(), "loss".into(), 1.0),
            ("recon".into(), "recon".into(), 1.0),
            ("kl".into(), "kl x weight".into(), self.recipe.vae.kl_weight),
        ]
    }

    fn metric_columns(&self) -> Vec<Column> {
        ["iou", "precision", "recall", "f1", "mse"].iter().map(|m| (m.to_string(), m.to_string(), 1.0)).collect()
    }

    /// Pooled counts (true/false positives, false negatives) of channel 0
    /// at the recipe's threshold, the squared error summed per frame, and
    /// the frames, of deterministic reconstructions of this rank's shard.
    fn validate(&self, amp: Amp) -> Result<Option<Vec<f64>>, TrainError> {
        let Some(val) = &self.val else { return Ok(None) };
        let (mut c, mut mse, mut n) = ((0.0, 0.0, 0.0), 0.0, 0usize);
        for batch in val.epoch(0) {
            let batch = batch?;
            let x = self.input(&batch.target);
            let recon = tch::no_grad(|| amp.run(|| self.vae.forward_t(&x, false)))?.to_kind(Kind::Float);
            let recon = crate::model::loss::occupancy_probability(recon, self.recipe.loss.occupancy_logits());
            let (tp, fp, fn_) = Occupancy::counts(&recon, &x, self.recipe.iou_threshold);
            c = (c.0 + tp, c.1 + fp, c.2 + fn_);
            mse += recon.mse_loss(&x, tch::Reduction::Mean).double_value(&[]) * batch.ids.len() as f64;
            n += batch.ids.len();
        }
        Ok(Some(vec![c.0, c.1, c.2, mse, n as f64]))
    }

    /// IoU, precision, recall and F1 over the whole split, and the mean
    /// squared error per frame.
    fn metrics(&self, sums: &[f64]) -> Vec<f64> {
        let o = Occupancy::from_counts(sums[0], sums[1], sums[2]);
        vec![o.iou, o.precision, o.recall, o.f1, sums[3] / sums[4].max(1.0)]
    }

    fn memory_run(&self, micro_batch: usize, precision: Precision, checkpointing: Checkpointing) -> Run {
        let s = self.train.sample_shape();
        Run {
            model: ModelConfig::Vae(self.recipe.vae.clone()),
            grid: [s[1] as i64, s[2] as i64, s[3] as i64],
            batch: micro_batch,
            precision,
            checkpointing,
        }
    }

    fn loader_threads(&self) -> (usize, usize) {
        self.threads
    }

    fn title(&self) -> String {
        "VAE TRAINING LOSS".into()
    }
}

/// The VAE trainer: the engine over [`VaeObjective`].
pub type VaeTrainer = Trainer<VaeObjective>;

impl Trainer<VaeObjective> {
    /// A new VAE run on `train` (validated on `val`).
    pub fn vae(train: Dataset, val: Option<Dataset>, recipe: VaeRecipe, runtime: Runtime) -> Result<Self, TrainError> {
        let objective = VaeObjective::new(train, val, recipe, &runtime)?;
        Trainer::new(objective, runtime)
    }

    /// Continues the VAE run of checkpoint `path` with its recipe, `edit`ed
    /// first (the caller decides which changes are allowed, e.g. more epochs).
    pub fn resume_vae(
        path: &Path,
        train: Dataset,
        val: Option<Dataset>,
        runtime: Runtime,
        edit: impl FnOnce(&mut VaeRecipe),
    ) -> Result<Self, TrainError> {
        let ckpt = Checkpoint::read(path, VaeRecipe::KIND)?;
        let mut recipe: VaeRecipe = ckpt.recipe()?;
        edit(&mut recipe);
        let objective = VaeObjective::new(train, val, recipe, &runtime)?;
        Trainer::resume(objective, runtime, &ckpt)
    }
}
