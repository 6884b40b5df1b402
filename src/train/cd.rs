//! The consistency-distillation objective (Song et al. 2023): a student
//! with the boundary-condition parametrisation learns to map any point of
//! the frozen teacher's probability-flow ODE to its end in one call. Per
//! sample a pair of neighbouring noise levels is drawn, the teacher takes
//! one solver step from the higher to the lower, and the student at the
//! higher level is pulled to the target network (an EMA of the student,
//! kept under `aux.`) at the lower. Student and target start from the
//! teacher LDM's EMA weights (its radar encoder included); the engine keeps
//! the student's own EMA, which is what sampling uses.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::{nn, Device, Tensor};

use super::checkpoint::{check_vae_hash, Checkpoint};
use super::engine::Trainer;
use super::geometry_val::GeometryVal;
use super::latents::{LatentBatch, LatentData, LatentSource};
use super::ldm::{build_denoiser, LdmRecipe};
use super::objective::{Column, Objective};
use super::precision::Amp;
use super::recipe::{OptimRecipe, Recipe};
use super::runtime::Runtime;
use super::TrainError;
use crate::data::loader::Sampler as Order;
use crate::data::Dataset;
use crate::diffusion::consistency::CdPair;
use crate::diffusion::{Consistency, ConsistencyConfig, Sampler};
use crate::io::safetensors::{self, load_into, named_variables, weights_hash};
use crate::memory::{ModelConfig, Precision, Run};
use crate::model::checkpoint::Recorder;
use crate::model::{Checkpointing, GridVae, RadarEncoder, Unet3d};
use crate::sys::with_init_seed;

/// What defines a consistency-distillation run (saved in every checkpoint).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CdRecipe {
    /// Discretisation, teacher solver, target EMA, loss and weighting.
    pub consistency: ConsistencyConfig,
    /// Optimiser, schedule, batches and the student's EMA (for sampling).
    #[serde(flatten)]
    pub optim: OptimRecipe,
    /// The teacher's recipe (network, EDM, condition, latent scaling),
    /// copied from its checkpoint when a run starts: the student shares it.
    pub teacher: LdmRecipe,
}

impl Default for CdRecipe {
    /// The paper's CD settings ([`ConsistencyConfig::default`]); AdamW 1e-4
    /// without weight decay, constant rate, batch 1 x accumulation 8, EMA 0.999.
    fn default() -> Self {
        CdRecipe {
            consistency: ConsistencyConfig::default(),
            optim: OptimRecipe { weight_decay: 0.0, min_lr: 1e-4, ema_decay: Some(0.999), ..OptimRecipe::default() },
            teacher: LdmRecipe::default(),
        }
    }
}

impl Recipe for CdRecipe {
    const KIND: &'static str = "cd";
    fn optim(&self) -> &OptimRecipe {
        &self.optim
    }
    fn optim_mut(&mut self) -> &mut OptimRecipe {
        &mut self.optim
    }
    fn validate(&self) -> Result<(), TrainError> {
        self.consistency.validate()?;
        self.optim.validate()?;
        self.teacher.validate()?;
        if self.teacher.direct {
            return Err(TrainError::Config("the teacher is a direct baseline (no ODE to distil): give an LDM".into()));
        }
        if self.optim.ema_decay.is_none() {
            return Err(TrainError::Config(
                "consistency distillation samples with the student's EMA: set ema_decay".into(),
            ));
        }
        Ok(())
    }
}

/// The frozen teacher whose ODE the student distils.
pub enum Teacher {
    /// A trained LDM: the EMA weights of its checkpoint.
    Ldm {
        /// The checkpoint.
        path: PathBuf,
        /// Its recipe.
        recipe: Box<LdmRecipe>,
        /// Its EMA weights by name (they also initialise student and target).
        weights: BTreeMap<String, Tensor>,
        /// Their identity ([`weights_hash`]).
        hash: String,
        /// The built network, frozen.
        net: Box<(nn::VarStore, Unet3d, Option<RadarEncoder>)>,
    },
    /// The ideal denoiser of Gaussian data `N(0, s^2)` (every element
    /// independent): `D(x, sigma) = x s^2 / (s^2 + sigma^2)`, whose
    /// probability-flow map is known in closed form. Checks the method;
    /// the student starts from a fresh network of `recipe`.
    Gaussian {
        /// The data's standard deviation.
        s: f64,
        /// The student's network and EDM settings.
        recipe: Box<LdmRecipe>,
    },
}

impl Teacher {
    /// Loads the EMA weights of the LDM checkpoint `path`, refusing one
    /// trained on the latents of another VAE than `vae_hash`.
    pub fn load(path: &Path, vae_hash: &str, device: Device) -> Result<Teacher, TrainError> {
        let ckpt = Checkpoint::read(path, LdmRecipe::KIND)?;
        check_vae_hash(&ckpt, vae_hash)?;
        let recipe: LdmRecipe = ckpt.recipe()?;
        let weights = ckpt.prefixed("ema");
        if weights.is_empty() {
            return Err(TrainError::Checkpoint { path: path.into(), reason: "has no EMA weights to distil".into() });
        }
        let mut vs = nn::VarStore::new(device);
        let (unet, encoder) = build_denoiser(&vs.root(), &recipe)?;
        load_into(&vs, "", &weights, path)?;
        vs.freeze();
        let hash = weights_hash(&weights);
        let weights = weights.into_iter().map(|(k, t)| (k, t.to_device(device))).collect();
        Ok(Teacher::Ldm {
            path: path.into(),
            recipe: Box::new(recipe),
            weights,
            hash,
            net: Box::new((vs, unet, encoder)),
        })
    }

    /// The recipe of the teacher's network.
    pub fn recipe(&self) -> &LdmRecipe {
        match self {
            Teacher::Ldm { recipe, .. } | Teacher::Gaussian { recipe, .. } => recipe,
        }
    }

    /// The identity of the teacher's weights.
    pub fn hash(&self) -> String {
        match self {
            Teacher::Ldm { hash, .. } => hash.clone(),
            Teacher::Gaussian { s, .. } => format!("gaussian:{s}"),
        }
    }

    /// The teacher's denoiser at `sigma` `(B,)` for the condition input `cond`.
    fn denoise(&self, x: &Tensor, sigma: &Tensor, cond: &Tensor) -> Tensor {
        match self {
            Teacher::Ldm { recipe, net, .. } => {
                let (_, unet, encoder) = net.as_ref();
                let c = match encoder {
                    Some(enc) => nn::ModuleT::forward_t(enc, cond, false),
                    None => cond.shallow_clone(),
                };
                recipe.edm.denoise(unet, x, sigma, &c, false)
            }
            Teacher::Gaussian { s, .. } => {
                let v = sigma.view([-1, 1, 1, 1, 1]);
                x * (v.square() + s * s).reciprocal() * (s * s)
            }
        }
    }
}

/// A batch on the device with its pair indices and noise.
pub struct CdStep {
    y: Tensor,
    cond: Tensor,
    n: Tensor,
    noise: Tensor,
}

/// The consistency-distillation objective; see the module docs.
pub struct CdObjective {
    recipe: CdRecipe,
    vs: nn::VarStore,
    unet: Unet3d,
    encoder: Option<RadarEncoder>,
    target: (nn::VarStore, Unet3d, Option<RadarEncoder>),
    teacher: Teacher,
    data: LatentData,
    vae_hash: String,
    device: Device,
    latent_grid: [i64; 3],
    val: Option<GeometryVal>,
}

impl CdObjective {
    /// Builds student and target from the teacher (copies of its EMA
    /// weights; a Gaussian teacher's student is freshly initialised,
    /// seeded); the recipe's `teacher` becomes the teacher's.
    pub fn new(
        dataset: Dataset,
        source: LatentSource,
        vae_hash: &str,
        teacher: Teacher,
        recipe: CdRecipe,
        runtime: &Runtime,
    ) -> Result<Self, TrainError> {
        let mut recipe = recipe;
        recipe.teacher = teacher.recipe().clone();
        recipe.validate()?;
        let device = super::runtime::parse_device(&runtime.device)?;
        let build = || -> Result<_, TrainError> {
            let vs = nn::VarStore::new(device);
            let (unet, enc) = with_init_seed(recipe.optim.seed, || build_denoiser(&vs.root(), &recipe.teacher))?;
            if let Teacher::Ldm { weights, path, .. } = &teacher {
                load_into(&vs, "", weights, path)?;
            }
            Ok((vs, unet, enc))
        };
        let (vs, unet, encoder) = build()?;
        let (mut target_vs, target_unet, target_enc) = build()?;
        target_vs.freeze();
        let data = LatentData::new(dataset, source, encoder.is_some(), runtime.dist.clone());
        Ok(CdObjective {
            latent_grid: data.latent_grid()?,
            recipe,
            vs,
            unet,
            encoder,
            target: (target_vs, target_unet, target_enc),
            teacher,
            data,
            vae_hash: vae_hash.into(),
            device,
            val: None,
        })
    }

    /// Validates by decoded geometry after each epoch (`best` by val F1):
    /// the teacher recipe's `val_frames` of `ds`, each sampled by the
    /// student in one call and decoded by `vae`; nothing when `val_frames`
    /// is 0.
    pub fn with_validation(
        mut self,
        ds: Dataset,
        vae: Box<dyn GridVae>,
        rank: usize,
        world: usize,
    ) -> Result<Self, TrainError> {
        self.val = GeometryVal::new(ds, vae, self.recipe.teacher.val_frames, rank, world)?;
        Ok(self)
    }

    /// The objective of the run of checkpoint `path` (distilling `teacher`
    /// on the latents of the VAE `vae_hash`) with its recipe, `edit`ed
    /// first, and the checkpoint to resume from.
    pub fn resumed(
        path: &Path,
        dataset: Dataset,
        source: LatentSource,
        vae_hash: &str,
        teacher: Teacher,
        runtime: &Runtime,
        edit: impl FnOnce(&mut CdRecipe),
    ) -> Result<(CdObjective, Checkpoint), TrainError> {
        let ckpt = Checkpoint::read(path, CdRecipe::KIND)?;
        check_vae_hash(&ckpt, vae_hash)?;
        let theirs = ckpt.metadata.get("teacher_hash").map(String::as_str).unwrap_or("");
        if theirs != teacher.hash() {
            return Err(TrainError::Checkpoint {
                path: path.into(),
                reason: format!("distils teacher {theirs}, not the teacher given ({})", teacher.hash()),
            });
        }
        let mut recipe: CdRecipe = ckpt.recipe()?;
        edit(&mut recipe);
        Ok((CdObjective::new(dataset, source, vae_hash, teacher, recipe, runtime)?, ckpt))
    }

    /// The student.
    pub fn unet(&self) -> &Unet3d {
        &self.unet
    }

    /// Parameters of the student's network.
    pub fn parameter_count(&self) -> i64 {
        self.vs.trainable_variables().iter().map(|t| t.numel() as i64).sum()
    }

    fn order(&self) -> Order {
        let o = &self.recipe.optim;
        self.data.order(o.batch_size, o.shuffle, o.seed)
    }

    fn consistency(&self) -> Consistency {
        Consistency { edm: self.recipe.teacher.edm }
    }

    /// The distillation pairs of frames `start .. start + len` of `step`.
    fn pairs(&self, step: &CdStep, start: i64, len: i64) -> CdPair {
        let cut = |t: &Tensor| t.narrow(0, start, len);
        let cond = cut(&step.cond);
        let c = self.consistency();
        let (_, target_unet, target_enc) = &self.target;
        let target_cond = tch::no_grad(|| match target_enc {
            Some(enc) => nn::ModuleT::forward_t(enc, &cond, false),
            None => cond.shallow_clone(),
        });
        let teacher = |x: &Tensor, s: &Tensor| self.teacher.denoise(x, s, &cond);
        let target = |x: &Tensor, s: &Tensor| c.f(target_unet, x, s, &target_cond, false);
        c.pairs(&self.recipe.consistency, &cut(&step.y), (&cut(&step.n), &cut(&step.noise)), &teacher, &target)
    }
}

impl Objective for CdObjective {
    type Recipe = CdRecipe;
    type Batch = LatentBatch;
    type Step = CdStep;

    fn recipe(&self) -> &CdRecipe {
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

    fn prepare(&self, batch: &LatentBatch, seed: u64) -> Result<Option<CdStep>, TrainError> {
        let t = &self.recipe.teacher;
        let Some((y, cond)) = self.data.tensors(batch, t.latent_norm.as_ref(), &t.radar_scale, self.device) else {
            return Ok(None);
        };
        let (n, noise) = self.consistency().draw(self.recipe.consistency.n, &y, seed);
        Ok(Some(CdStep { y, cond, n, noise }))
    }

    fn step_len(&self, step: &CdStep) -> i64 {
        step.y.size()[0]
    }

    fn backward(&self, step: &CdStep, start: i64, len: i64, scale: f64, checkpointing: Checkpointing) -> Vec<f64> {
        let pair = self.pairs(step, start, len);
        let cond_in = step.cond.narrow(0, start, len);
        let cond = match &self.encoder {
            Some(enc) => nn::ModuleT::forward_t(enc, &cond_in, true),
            None => cond_in,
        };
        let mut rec = Recorder::default();
        let ck = checkpointing != Checkpointing::Off;
        let c = self.consistency();
        let loss = c.loss(&self.recipe.consistency, &self.unet, &pair, &cond, ck.then_some(&mut rec));
        vec![rec.backward_finite(&loss, scale)]
    }

    fn loss_columns(&self) -> Vec<Column> {
        vec![("loss".into(), "consistency loss".into(), 1.0)]
    }

    fn memory_run(&self, micro_batch: usize, precision: Precision, checkpointing: Checkpointing) -> Run {
        Run {
            model: ModelConfig::Consistency(self.recipe.teacher.unet.clone()),
            grid: self.latent_grid,
            batch: micro_batch,
            precision,
            checkpointing,
        }
    }

    fn loader_threads(&self) -> (usize, usize) {
        (0, 0) // latents are read synchronously, per batch
    }

    fn metric_columns(&self) -> Vec<Column> {
        self.val.as_ref().map_or(Vec::new(), |_| GeometryVal::columns())
    }

    fn validate(&self, _amp: Amp) -> Result<Option<Vec<f64>>, TrainError> {
        let Some(val) = &self.val else { return Ok(None) };
        let levels = self.consistency().sampling_levels(1);
        let draw = |s: &Sampler, cond: &Tensor, seed: u64| s.sample_consistency(cond, &levels, seed);
        Ok(Some(val.counts_of(&self.vs, &self.recipe.teacher, &draw)?))
    }

    fn metrics(&self, sums: &[f64]) -> Vec<f64> {
        GeometryVal::metrics(sums)
    }

    fn metadata(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("vae_hash".to_string(), self.vae_hash.clone()),
            ("teacher_hash".to_string(), self.teacher.hash()),
        ])
    }

    fn title(&self) -> String {
        "CONSISTENCY DISTILLATION LOSS".into()
    }

    /// The target network moves towards the student: `mu target + (1 - mu) student`.
    fn after_optimizer_step(&mut self) {
        let mu = self.recipe.consistency.target_ema;
        let student = named_variables(&self.vs);
        tch::no_grad(|| {
            for ((_, t), (_, s)) in named_variables(&self.target.0).iter_mut().zip(&student) {
                let _ = t.g_mul_scalar_(mu).g_add_(&(s * (1.0 - mu)));
            }
        });
    }

    fn aux_tensors(&self) -> Vec<(String, Tensor)> {
        named_variables(&self.target.0).into_iter().map(|(k, t)| (format!("target.{k}"), t)).collect()
    }

    fn load_aux(&mut self, tensors: &BTreeMap<String, Tensor>, path: &Path) -> Result<(), TrainError> {
        let target: BTreeMap<String, Tensor> = tensors
            .iter()
            .filter_map(|(k, t)| k.strip_prefix("target.").map(|k| (k.to_string(), t.shallow_clone())))
            .collect();
        Ok(safetensors::load_into(&self.target.0, "", &target, path)?)
    }
}

/// The consistency-distillation trainer: the engine over [`CdObjective`].
pub type CdTrainer = Trainer<CdObjective>;

impl Trainer<CdObjective> {
    /// A new distillation run of `teacher`.
    pub fn cd(
        dataset: Dataset,
        source: LatentSource,
        vae_hash: &str,
        teacher: Teacher,
        recipe: CdRecipe,
        runtime: Runtime,
    ) -> Result<Self, TrainError> {
        let objective = CdObjective::new(dataset, source, vae_hash, teacher, recipe, &runtime)?;
        Trainer::new(objective, runtime)
    }

    /// Continues the run of checkpoint `path` with its recipe, `edit`ed
    /// first; refuses another VAE or another teacher than the run's.
    pub fn resume_cd(
        path: &Path,
        dataset: Dataset,
        source: LatentSource,
        vae_hash: &str,
        teacher: Teacher,
        runtime: Runtime,
        edit: impl FnOnce(&mut CdRecipe),
    ) -> Result<Self, TrainError> {
        let (objective, ckpt) = CdObjective::resumed(path, dataset, source, vae_hash, teacher, &runtime, edit)?;
        Trainer::resume(objective, runtime, &ckpt)
    }
}
