//! The sparse VAE's losses: structure at every decoder level (BCE on every
//! candidate, with Dice or focal as options) against the target's sites at
//! that level (the block max of the native occupancy), the feature channels
//! on the target's occupied voxels, and the KL term.

use serde::{Deserialize, Serialize};
use tch::{Kind, Reduction, Tensor};

use super::coords::Coords;
use super::vae::{Decoded, Keep};
use super::SparseTensor;
use crate::model::vae::Posterior;
use std::rc::Rc;

/// How the structure logits are scored.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum StructureLoss {
    /// Binary cross-entropy on every candidate.
    Bce,
    /// BCE plus the soft Dice loss `1 - 2|p t| / (|p| + |t|)`.
    BceDice,
    /// Focal loss (Lin et al. 2017), `gamma` focusing.
    Focal {
        /// Focusing exponent (2 is the usual choice).
        gamma: f64,
    },
}

/// Weights of the sparse VAE's loss terms (saved in the recipe).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SparseLossConfig {
    /// Structure loss kind.
    pub structure: StructureLoss,
    /// Weight of the structure term (mean over levels).
    pub structure_weight: f64,
    /// Weight of the feature MSE on occupied voxels.
    pub feature_weight: f64,
}

impl Default for SparseLossConfig {
    fn default() -> Self {
        SparseLossConfig { structure: StructureLoss::Bce, structure_weight: 1.0, feature_weight: 1.0 }
    }
}

/// A sparse VAE loss, split in its parts (float32 scalars).
#[derive(Debug)]
pub struct SparseLoss {
    /// `structure_weight * structure + feature_weight * features + kl_weight * kl`.
    pub total: Tensor,
    /// Mean structure loss over the levels.
    pub structure: Tensor,
    /// Feature MSE on the target's voxels (zero with occupancy alone).
    pub features: Tensor,
    /// KL divergence (before its weight).
    pub kl: Tensor,
}

/// `(N,)` 1.0 where a candidate is a site of `target`, else 0.
pub fn labels(candidates: &Coords, target: &Coords, device: tch::Device) -> Tensor {
    let v: Vec<f32> = (0..candidates.len()).map(|i| target.find(candidates.site(i)).is_some() as u8 as f32).collect();
    Tensor::from_slice(&v).to_device(device)
}

/// The structure loss of `logits` against 0/1 `labels`.
pub fn structure_loss(kind: StructureLoss, logits: &Tensor, labels: &Tensor) -> Tensor {
    let x = logits.to_kind(Kind::Float);
    let bce = || x.binary_cross_entropy_with_logits::<Tensor>(labels, None, None, Reduction::Mean);
    match kind {
        StructureLoss::Bce => bce(),
        StructureLoss::BceDice => {
            let p = x.sigmoid();
            let inter = (&p * labels).sum(Kind::Float);
            let dice = 1.0 - (2.0 * inter + 1.0) / (p.sum(Kind::Float) + labels.sum(Kind::Float) + 1.0);
            bce() + dice
        }
        StructureLoss::Focal { gamma } => {
            let ce = x.binary_cross_entropy_with_logits::<Tensor>(labels, None, None, Reduction::None);
            let p = x.sigmoid();
            let pt: Tensor = &p * labels + (1.0 - &p) * (1.0 - labels);
            let w = pt.neg().g_add_scalar(1.0).pow_tensor_scalar(gamma);
            (w * ce).mean(Kind::Float)
        }
    }
}

impl SparseLossConfig {
    /// The loss of a teacher-forced decoding `dec` of target `x` (native
    /// sites, scaled features) whose levels are `targets` (native first),
    /// with posterior `post` and KL weight `kl_weight`.
    pub fn compute(
        &self,
        dec: &Decoded,
        x: &SparseTensor,
        targets: &[Rc<Coords>],
        post: &Posterior,
        kl_weight: f64,
    ) -> SparseLoss {
        let dev = x.feats.device();
        let n = dec.levels.len();
        // a level without candidates (an empty frame below the latent) has nothing to score
        let scored: Vec<Tensor> = (dec.levels.iter().enumerate())
            .filter(|(_, l)| !l.candidates.is_empty())
            .map(|(i, l)| structure_loss(self.structure, &l.logits, &labels(&l.candidates, &targets[n - 1 - i], dev)))
            .collect();
        let count = scored.len().max(1) as f64;
        let structure = scored.into_iter().fold(Tensor::zeros([], (Kind::Float, dev)), |a, b| a + b) / count;
        let c = x.feats.size()[1];
        let features = if c > 1 && !x.coords.is_empty() {
            // teacher forcing keeps exactly the target's sites, in its order
            debug_assert!(Rc::ptr_eq(&dec.output.coords, &x.coords));
            let pred = dec.output.feats.narrow(1, 1, c - 1).to_kind(Kind::Float);
            pred.mse_loss(&x.feats.narrow(1, 1, c - 1).to_kind(Kind::Float), Reduction::Mean)
        } else {
            Tensor::zeros([], (Kind::Float, dev))
        };
        let kl = post.kl();
        let total = &structure * self.structure_weight + &features * self.feature_weight + &kl * kl_weight;
        SparseLoss { total, structure, features, kl }
    }
}

/// The keep rule of training: the target's own levels.
pub fn teacher(targets: &[Rc<Coords>]) -> Keep<'_> {
    Keep::Target(targets)
}
