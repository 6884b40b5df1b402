//! The sparse VAE objective: occupancy structure per level, features on
//! occupied voxels and KL, on whole native-resolution frames read as sites
//! (the [`SparseLoader`]); validated by the occupancy IoU of deterministic
//! reconstructions (posterior mean, structure kept by the prediction). The
//! memory plan comes from the site counts of the worst training frame, found
//! by a scan at start.

use std::path::Path;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use tch::nn;
use tch::{Device, Tensor};

use super::checkpoint::Checkpoint;
use super::engine::Trainer;
use super::objective::{Column, Objective};
use super::precision::Amp;
use super::recipe::{OptimRecipe, Recipe};
use super::runtime::Runtime;
use super::vae::{check_channel_scale, record_layout};
use super::TrainError;
use crate::data::loader::{SiteBatch, SparseBatch, SparseLoader, SparseLoaderConfig};
use crate::data::{Dataset, Layout, Modality};
use crate::eval::Occupancy;
use crate::memory::{ModelConfig, Precision, Run, SparseModel, SparseSites};
use crate::model::sparse::{Coords, FrozenSparseVae, Keep, SparseLossConfig, SparseTensor, SparseVae, SparseVaeConfig};
use crate::model::{Checkpointing, ModelError};
use crate::sys::with_init_seed;

/// What defines a sparse VAE run (saved in every checkpoint).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SparseVaeRecipe {
    /// Architecture.
    pub vae: SparseVaeConfig,
    /// Loss terms.
    pub loss: SparseLossConfig,
    /// Optimiser, schedule and batches.
    #[serde(flatten)]
    pub optim: OptimRecipe,
    /// Per-channel factor applied to the features before the model (as the
    /// dense VAE's recipe); channel 0 stays 1.
    pub channel_scale: Vec<f64>,
    /// The frames' layout (a pad layout: sparse models run at native resolution).
    pub layout: Option<Layout>,
}

impl Default for SparseVaeRecipe {
    /// The small preset, batch 1 without accumulation, AdamW 2e-3.
    fn default() -> Self {
        SparseVaeRecipe {
            vae: SparseVaeConfig::small(),
            loss: SparseLossConfig::default(),
            optim: OptimRecipe { lr: 2e-3, grad_accum: 1, ..OptimRecipe::default() },
            channel_scale: vec![1.0, 0.01, 0.25, 1.0],
            layout: None,
        }
    }
}

impl Recipe for SparseVaeRecipe {
    const KIND: &'static str = "sparse_vae";
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
        if let Some(l @ (Layout::Resample { .. } | Layout::Crop { .. })) = self.layout {
            return Err(TrainError::Config(format!(
                "the sparse VAE runs at native resolution: layout {l} cannot apply"
            )));
        }
        Ok(())
    }
}

/// A batch's sites (on the host) and its latent noise.
pub struct SparseVaeStep {
    batch: SparseBatch,
    eps: Tensor,
}

/// The sparse VAE objective; see the module docs.
pub struct SparseVaeObjective {
    recipe: SparseVaeRecipe,
    vs: nn::VarStore,
    vae: SparseVae,
    train: SparseLoader,
    val: Option<SparseLoader>,
    device: Device,
    threads: (usize, usize),
    sites: SparseSites,
    grid: [i64; 3],
}

/// The worst frame's site counts per level of `ds` under `config` (a scan
/// of every frame's target, in parallel).
pub fn scan_sites(ds: &Dataset, config: &SparseVaeConfig) -> Result<SparseSites, TrainError> {
    let layout = ds.config().layout;
    let per_frame: Result<Vec<SparseSites>, TrainError> = (0..ds.len())
        .into_par_iter()
        .map(|i| {
            let s = ds.file(i, Modality::Target)?.read_sites(layout)?;
            let sites: Vec<[i64; 4]> = s.batched(0).collect();
            let grid = s.grid.map(|v| v as i64);
            Ok(SparseSites::of(config, &Coords::new(&sites, 1, grid, [1; 3])?)?)
        })
        .collect();
    Ok(per_frame?.iter().fold(SparseSites::default(), |a, b| a.max(b)))
}

impl SparseVaeObjective {
    /// Builds the model (seeded) and the loaders, and scans the training
    /// frames for the plan's site counts.
    pub fn new(
        train: Dataset,
        val: Option<Dataset>,
        recipe: SparseVaeRecipe,
        runtime: &Runtime,
    ) -> Result<Self, TrainError> {
        let mut recipe = recipe;
        let layout = train.config().layout;
        record_layout(&mut recipe.layout, layout)?;
        recipe.validate()?;
        if let Some(f) = train.frames().iter().find(|f| f.target.shape()[3] as i64 != recipe.vae.in_channels) {
            return Err(TrainError::Config(format!(
                "the sparse VAE takes {} channels; {} has {}",
                recipe.vae.in_channels,
                f.target.path().display(),
                f.target.shape()[3]
            )));
        }
        let s = train.output_shape(0);
        let grid = [s[1] as i64, s[2] as i64, s[3] as i64];
        let sites = scan_sites(&train, &recipe.vae)?;
        let device = super::runtime::parse_device(&runtime.device)?;
        if device == Device::Cpu && tch::get_num_threads() > 1 && std::env::var_os("OMP_NUM_THREADS").is_none() {
            // measured on 2 cores: a whole-frame step runs 1.7-2.2x faster with one
            // intra-op thread (its ops are small; libtorch's threads wait on the
            // loader's and the kernel maps' threads)
            tch::set_num_threads(1);
            log::info!("libtorch intra-op threads: 1 (sparse ops are small; OMP_NUM_THREADS overrides)");
        }
        let vs = nn::VarStore::new(device);
        let vae = with_init_seed(recipe.optim.seed, || SparseVae::new(&vs.root(), &recipe.vae))?;
        let loader = |shuffle| SparseLoaderConfig {
            batch_size: recipe.optim.batch_size,
            shuffle,
            seed: recipe.optim.seed,
            num_workers: runtime.num_workers,
            prefetch: runtime.prefetch,
            rank: runtime.dist.rank(),
            world_size: runtime.dist.world_size(),
            ..Default::default()
        };
        let train = SparseLoader::new(train, loader(recipe.optim.shuffle))?;
        let val =
            val.map(|v| SparseLoader::new(v, SparseLoaderConfig { pad_shards: false, ..loader(false) })).transpose()?;
        let threads = (runtime.num_workers, runtime.prefetch);
        Ok(SparseVaeObjective { recipe, vs, vae, train, val, device, threads, sites, grid })
    }

    /// The model.
    pub fn vae(&self) -> &SparseVae {
        &self.vae
    }

    /// The training loader.
    pub fn train_loader(&self) -> &SparseLoader {
        &self.train
    }

    /// The worst training frame's site counts per level.
    pub fn sites(&self) -> &SparseSites {
        &self.sites
    }

    /// Frames `start .. start + len` of `t` as a sparse tensor on the
    /// device, features scaled per channel.
    pub fn input(&self, t: &SiteBatch, start: i64, len: i64) -> Result<SparseTensor, TrainError> {
        Ok(SparseTensor::of_sites(t, start..start + len, self.grid, &self.recipe.channel_scale, self.device)?)
    }
}

/// Forward and backward of one teacher-forced micro-step on `x` (native
/// sites, scaled features) with latent noise `eps`, the loss multiplied by
/// `scale`; returns the total, structure, feature and KL parts (nothing is
/// back-propagated when the total is not finite).
pub fn micro_step(
    vae: &SparseVae,
    loss: &SparseLossConfig,
    x: &SparseTensor,
    eps: &Tensor,
    scale: f64,
) -> Result<Vec<f64>, ModelError> {
    let post = vae.encode(x)?;
    let z = post.sample(Some(eps));
    let targets = vae.target_levels(&x.coords);
    let dec = vae.decode(&z, x.coords.shape(), Keep::Target(&targets))?;
    let l = loss.compute(&dec, x, &targets, &post, vae.config().kl_weight);
    let total = l.total.double_value(&[]);
    if total.is_finite() {
        (&l.total * scale).backward();
    }
    Ok(vec![total, l.structure.double_value(&[]), l.features.double_value(&[]), l.kl.double_value(&[])])
}

/// True positives, false positives and false negatives of two sorted key sets.
pub fn key_counts(pred: &[u64], target: &[u64]) -> (f64, f64, f64) {
    let tp = crate::eval::voxel::sorted_intersection(pred, target);
    (tp as f64, (pred.len() - tp) as f64, (target.len() - tp) as f64)
}

impl Objective for SparseVaeObjective {
    type Recipe = SparseVaeRecipe;
    type Batch = SparseBatch;
    type Step = SparseVaeStep;

    fn recipe(&self) -> &SparseVaeRecipe {
        &self.recipe
    }
    fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }
    fn batches_per_epoch(&self) -> usize {
        self.train.len()
    }
    fn batches(&self, epoch: usize, cursor: usize) -> Box<dyn Iterator<Item = Result<SparseBatch, TrainError>>> {
        Box::new(self.train.epoch_from(epoch as u64, cursor).map(|b| b.map_err(TrainError::from)))
    }
    fn datasets(&self) -> Vec<(&'static str, &Dataset)> {
        let mut d = vec![("train", self.train.dataset())];
        d.extend(self.val.as_ref().map(|v| ("val", v.dataset())));
        d
    }

    fn batch_ids(&self, batch: &SparseBatch) -> Vec<String> {
        batch.ids.iter().map(|i| i.to_string()).collect()
    }

    fn prepare(&self, batch: &SparseBatch, seed: u64) -> Result<Option<SparseVaeStep>, TrainError> {
        // values were checked finite when read
        let shape = self.recipe.vae.latent_shape(batch.ids.len() as i64, self.grid);
        let eps = crate::sys::normal(seed, &shape, self.device);
        Ok(Some(SparseVaeStep { batch: batch.clone(), eps }))
    }

    fn step_len(&self, step: &SparseVaeStep) -> i64 {
        step.batch.ids.len() as i64
    }

    fn backward(&self, step: &SparseVaeStep, start: i64, len: i64, scale: f64, _: Checkpointing) -> Vec<f64> {
        let run = || -> Result<Vec<f64>, TrainError> {
            let x = self.input(&step.batch.target, start, len)?;
            let eps = step.eps.narrow(0, start, len);
            Ok(micro_step(&self.vae, &self.recipe.loss, &x, &eps, scale)?)
        };
        // the engine reads a non-finite total as a skipped batch; an error here is a bug in the sites
        run().unwrap_or_else(|e| panic!("sparse VAE step on {:?}: {e}", step.batch.ids))
    }

    fn loss_columns(&self) -> Vec<Column> {
        vec![
            ("loss".into(), "loss".into(), 1.0),
            ("structure".into(), "structure x weight".into(), self.recipe.loss.structure_weight),
            ("features".into(), "features x weight".into(), self.recipe.loss.feature_weight),
            ("kl".into(), "kl x weight".into(), self.recipe.vae.kl_weight),
        ]
    }

    fn metric_columns(&self) -> Vec<Column> {
        ["iou", "precision", "recall", "f1", "count_ratio"]
            .iter()
            .map(|m| (m.to_string(), m.to_string(), 1.0))
            .collect()
    }

    /// Pooled voxel counts of deterministic reconstructions of this rank's
    /// shard: true and false positives, false negatives.
    fn validate(&self, amp: Amp) -> Result<Option<Vec<f64>>, TrainError> {
        let Some(val) = &self.val else { return Ok(None) };
        let mut c = (0.0, 0.0, 0.0);
        for batch in val.epoch_from(0, 0) {
            let batch = batch?;
            let x = self.input(&batch.target, 0, batch.ids.len() as i64)?;
            let dec = tch::no_grad(|| amp.run(|| self.vae.reconstruct(&x)))??;
            let (tp, fp, fn_) = key_counts(dec.output.coords.keys(), x.coords.keys());
            c = (c.0 + tp, c.1 + fp, c.2 + fn_);
        }
        Ok(Some(vec![c.0, c.1, c.2]))
    }

    /// IoU, precision, recall, F1, and predicted / target voxels.
    fn metrics(&self, sums: &[f64]) -> Vec<f64> {
        let o = Occupancy::from_counts(sums[0], sums[1], sums[2]);
        vec![o.iou, o.precision, o.recall, o.f1, (sums[0] + sums[1]) / (sums[0] + sums[2]).max(1.0)]
    }

    fn memory_run(&self, micro_batch: usize, precision: Precision, checkpointing: Checkpointing) -> Run {
        let model = SparseModel { vae: self.recipe.vae.clone(), sites: self.sites.clone() };
        Run {
            model: ModelConfig::SparseVae(Box::new(model)),
            grid: self.grid,
            batch: micro_batch,
            precision,
            checkpointing,
        }
    }

    fn loader_threads(&self) -> (usize, usize) {
        self.threads
    }

    /// Measured (`benches/sparse_step.rs`, avx512_bf16 CPU): a whole-frame
    /// step takes 0.27 s in f32 and 0.5-0.9 s under bf16 autocast, whose
    /// oneDNN kernels are built per matrix shape (every frame has its own
    /// site counts) and grow the resident memory by ~250 MiB a frame at first.
    fn cpu_autocast(&self) -> Result<(), String> {
        Err("the sparse VAE runs about 2x faster in f32 than under bf16 autocast on a CPU".into())
    }

    fn title(&self) -> String {
        "SPARSE VAE TRAINING LOSS".into()
    }
}

/// Loads a trained sparse VAE from its checkpoint, frozen, with its recipe
/// (the tensors must match the recipe's architecture exactly).
pub fn load_sparse_vae(path: &Path, device: Device) -> Result<(FrozenSparseVae, SparseVaeRecipe), TrainError> {
    let ckpt = Checkpoint::read(path, SparseVaeRecipe::KIND)?;
    let recipe: SparseVaeRecipe = ckpt.recipe()?;
    let mut vs = nn::VarStore::new(device);
    let vae = SparseVae::new(&vs.root(), &recipe.vae)?;
    let model = ckpt.model_tensors();
    crate::io::safetensors::load_into(&vs, "", &model, path)?;
    vs.freeze();
    let hash = crate::io::safetensors::weights_hash(&model);
    Ok((FrozenSparseVae { vs, vae, channel_scale: recipe.channel_scale.clone(), hash }, recipe))
}

impl Trainer<SparseVaeObjective> {
    /// A new sparse VAE run on `train` (validated on `val`).
    pub fn sparse_vae(
        train: Dataset,
        val: Option<Dataset>,
        recipe: SparseVaeRecipe,
        runtime: Runtime,
    ) -> Result<Self, TrainError> {
        let objective = SparseVaeObjective::new(train, val, recipe, &runtime)?;
        Trainer::new(objective, runtime)
    }

    /// Continues the sparse VAE run of checkpoint `path` with its recipe, `edit`ed first.
    pub fn resume_sparse_vae(
        path: &Path,
        train: Dataset,
        val: Option<Dataset>,
        runtime: Runtime,
        edit: impl FnOnce(&mut SparseVaeRecipe),
    ) -> Result<Self, TrainError> {
        let ckpt = Checkpoint::read(path, SparseVaeRecipe::KIND)?;
        let mut recipe: SparseVaeRecipe = ckpt.recipe()?;
        edit(&mut recipe);
        let objective = SparseVaeObjective::new(train, val, recipe, &runtime)?;
        Trainer::resume(objective, runtime, &ckpt)
    }
}
