//! Reconstruction losses for 3D occupancy grids: MSE, occupancy-aware MSE,
//! 3D Sobel edge loss and `Perceptual3DLoss` (a frozen, seeded 3D feature
//! extractor replacing 2D LPIPS, which does not apply to volumes). All are
//! computed in float32.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Uniform};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Reduction, Tensor};

use super::ModelError;

/// Weights of each reconstruction term (0 turns a term off).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LossConfig {
    /// Plain mean squared error.
    pub mse: f64,
    /// Occupancy-aware MSE (5 occupied, 1 empty, +2 on boundaries).
    pub occupancy_mse: f64,
    /// L1 between 3D Sobel magnitudes of the occupancy channel.
    pub edge: f64,
    /// Perceptual3DLoss.
    pub perceptual: f64,
    /// Seed of the perceptual extractor's frozen weights.
    pub perceptual_seed: u64,
    /// Per-level perceptual weights (normalised to sum 1).
    pub perceptual_levels: [f64; 4],
    /// Occupancy as classification: binary cross-entropy of the occupancy
    /// channel read as a logit against the target's occupancy (> 0.5). Any
    /// of `occupancy_bce`/`occupancy_dice` > 0 makes channel 0 a logit
    /// (decoders then return `sigmoid` of it, a probability), and the
    /// regression terms above must be 0.
    pub occupancy_bce: f64,
    /// Soft Dice loss `1 - 2 sum(p t) / (sum p + sum t)` of `p = sigmoid(logit)`.
    pub occupancy_dice: f64,
    /// With a logit head: MSE of the feature channels (1..C) on the voxels
    /// within one voxel of an occupied one (elsewhere they are undefined).
    pub feature_mse: f64,
}

impl Default for LossConfig {
    fn default() -> Self {
        LossConfig {
            mse: 1.0,
            occupancy_mse: 0.0,
            edge: 0.0,
            perceptual: 0.0,
            perceptual_seed: 0,
            perceptual_levels: [0.5, 1.0, 1.0, 0.5],
            occupancy_bce: 0.0,
            occupancy_dice: 0.0,
            feature_mse: 0.0,
        }
    }
}

impl LossConfig {
    /// Whether channel 0 is a logit (a classification head).
    pub fn occupancy_logits(&self) -> bool {
        self.occupancy_bce > 0.0 || self.occupancy_dice > 0.0
    }
}

/// The configured reconstruction loss.
pub struct ReconLoss {
    config: LossConfig,
    perceptual: Option<Perceptual3d>,
}

impl std::fmt::Debug for ReconLoss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReconLoss").field("config", &self.config).finish()
    }
}

impl ReconLoss {
    /// Builds the loss (and the perceptual extractor when used) on `device`.
    pub fn new(config: &LossConfig, in_channels: i64, device: Device) -> Result<ReconLoss, ModelError> {
        let regression = [config.mse, config.occupancy_mse, config.edge, config.perceptual];
        let head = [config.occupancy_bce, config.occupancy_dice, config.feature_mse];
        let weights: Vec<f64> = regression.iter().chain(&head).copied().collect();
        if weights.iter().any(|w| !(w.is_finite() && *w >= 0.0)) || weights.iter().all(|w| *w == 0.0) {
            return Err(ModelError::Config(format!("loss weights must be finite, >= 0 and not all 0: {weights:?}")));
        }
        if config.occupancy_logits() && regression.iter().any(|w| *w > 0.0) {
            return Err(ModelError::Config(format!(
                "occupancy_bce/occupancy_dice make channel 0 a logit: the regression terms (mse, occupancy_mse, \
                 edge, perceptual) must be 0, got {regression:?}; use feature_mse for the features"
            )));
        }
        if config.feature_mse > 0.0 && !config.occupancy_logits() {
            return Err(ModelError::Config(
                "feature_mse goes with a logit head (occupancy_bce or occupancy_dice)".into(),
            ));
        }
        let perceptual = (config.perceptual > 0.0)
            .then(|| Perceptual3d::new(in_channels, config.perceptual_seed, config.perceptual_levels, device))
            .transpose()?;
        Ok(ReconLoss { config: config.clone(), perceptual })
    }

    /// The weighted sum of the configured terms.
    pub fn compute(&self, pred: &Tensor, target: &Tensor) -> Tensor {
        let (p, t) = (pred.to_kind(Kind::Float), target.to_kind(Kind::Float));
        let c = &self.config;
        let mut total = Tensor::zeros([], (Kind::Float, p.device()));
        if c.mse > 0.0 {
            total += p.mse_loss(&t, Reduction::Mean) * c.mse;
        }
        if c.occupancy_mse > 0.0 {
            total += occupancy_mse(&p, &t) * c.occupancy_mse;
        }
        if c.edge > 0.0 {
            total += edge_loss(&p, &t) * c.edge;
        }
        if let Some(perc) = &self.perceptual {
            total += perc.loss(&p, &t) * c.perceptual;
        }
        if c.occupancy_logits() {
            total += occupancy_head(&p, &t, c);
        }
        total
    }
}

/// The classification head's terms: BCE and soft Dice of the occupancy
/// logit, masked MSE of the features near occupied voxels.
pub fn occupancy_head(pred: &Tensor, target: &Tensor, c: &LossConfig) -> Tensor {
    let occ = occupancy(target);
    let logit = pred.narrow(1, 0, 1);
    let mut total = Tensor::zeros([], (Kind::Float, pred.device()));
    if c.occupancy_bce > 0.0 {
        total += logit.binary_cross_entropy_with_logits::<Tensor>(&occ, None, None, Reduction::Mean) * c.occupancy_bce;
    }
    if c.occupancy_dice > 0.0 {
        let p = logit.sigmoid();
        let dice = (&p * &occ).sum(Kind::Float) * 2.0 / (p.sum(Kind::Float) + occ.sum(Kind::Float) + 1e-6);
        total += (dice.neg() + 1.0) * c.occupancy_dice;
    }
    let ch = pred.size()[1];
    if c.feature_mse > 0.0 && ch > 1 {
        let near = occ.max_pool3d([3; 3], [1; 3], [1; 3], [1; 3], false);
        let d = (pred.narrow(1, 1, ch - 1) - target.narrow(1, 1, ch - 1)).square() * &near;
        total += d.sum(Kind::Float) / (near.sum(Kind::Float) * (ch - 1) as f64 + 1e-6) * c.feature_mse;
    }
    total
}

/// Channel 0 of raw VAE output `(B, C, ...)` as a probability: `sigmoid` of
/// the logit when `logits`, else as is.
pub fn occupancy_probability(out: Tensor, logits: bool) -> Tensor {
    if !logits {
        return out;
    }
    let c = out.size()[1];
    Tensor::cat(&[out.narrow(1, 0, 1).sigmoid(), out.narrow(1, 1, c - 1)], 1)
}

fn occupancy(t: &Tensor) -> Tensor {
    t.narrow(1, 0, 1).gt(0.5).to_kind(Kind::Float)
}

/// Weight map of [`occupancy_mse`]: 5 on occupied voxels, 1 on empty ones,
/// plus 2 where the 3x3x3 neighbourhood is partly occupied.
pub fn occupancy_weights(target: &Tensor) -> Tensor {
    let occ = occupancy(target);
    let any = occ.max_pool3d([3; 3], [1; 3], [1; 3], [1; 3], false);
    let all = -(-&occ).max_pool3d([3; 3], [1; 3], [1; 3], [1; 3], false);
    let boundary = (any - all).gt(0.0).to_kind(Kind::Float);
    occ * 4.0 + 1.0 + boundary * 2.0
}

/// `mean(w * (pred - target)^2)` with [`occupancy_weights`].
pub fn occupancy_mse(pred: &Tensor, target: &Tensor) -> Tensor {
    let w = occupancy_weights(target);
    ((pred - target).square() * w).mean(Kind::Float)
}

/// Gradient magnitude of the occupancy channel with 3D Sobel kernels.
pub fn sobel_magnitude(x: &Tensor) -> Tensor {
    let occ = x.narrow(1, 0, 1);
    let (d, s) = ([-1.0f32, 0.0, 1.0], [1.0f32, 2.0, 1.0]);
    let mut kernels = Vec::with_capacity(81);
    for axis in 0..3 {
        for i in 0..3 {
            for j in 0..3 {
                for k in 0..3 {
                    let idx = [i, j, k];
                    let v: f32 = (0..3).map(|a| if a == axis { d[idx[a]] } else { s[idx[a]] }).product();
                    kernels.push(v);
                }
            }
        }
    }
    let w = Tensor::from_slice(&kernels).reshape([3, 1, 3, 3, 3]).to_device(x.device()).to_kind(occ.kind());
    let g = occ.conv3d(&w, None::<&Tensor>, [1; 3], [1; 3], [1; 3], 1);
    (g.square().sum_dim_intlist([1].as_slice(), true, Kind::Float) + 1e-12).sqrt()
}

/// L1 between the Sobel magnitudes of prediction and target occupancy.
pub fn edge_loss(pred: &Tensor, target: &Tensor) -> Tensor {
    sobel_magnitude(pred).l1_loss(&sobel_magnitude(target), Reduction::Mean)
}

/// `Perceptual3DLoss`: a frozen 4-level 3D feature extractor with weights
/// drawn from a seeded generator (there are no pretrained 3D weights).
#[derive(Debug)]
pub struct Perceptual3d {
    convs: Vec<(Tensor, Tensor, Tensor, Tensor)>,
    weights: [f64; 4],
}

impl Perceptual3d {
    /// Channels of the four levels.
    pub const CHANNELS: [i64; 4] = [32, 64, 128, 128];

    /// The extractor for `in_channels` inputs, weights fixed by `seed`;
    /// `levels` are normalised to sum 1.
    pub fn new(in_channels: i64, seed: u64, levels: [f64; 4], device: Device) -> Result<Perceptual3d, ModelError> {
        let sum: f64 = levels.iter().sum();
        if levels.iter().any(|w| !(w.is_finite() && *w >= 0.0)) || sum <= 0.0 {
            return Err(ModelError::Config(format!(
                "perceptual level weights must be >= 0 with a positive sum: {levels:?}"
            )));
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut conv = |cin: i64, cout: i64| {
            let bound = (6.0 / (cin * 27) as f64).sqrt() as f32; // He-uniform, for LeakyReLU stacks
            let u = Uniform::new_inclusive(-bound, bound).expect("bound > 0");
            let w: Vec<f32> = (0..cout * cin * 27).map(|_| u.sample(&mut rng)).collect();
            let w = Tensor::from_slice(&w).reshape([cout, cin, 3, 3, 3]).to_device(device);
            (w, Tensor::zeros([cout], (Kind::Float, device)))
        };
        let mut cin = in_channels;
        let mut convs = Vec::new();
        for &cout in &Self::CHANNELS {
            let (w1, b1) = conv(cin, cout);
            let (w2, b2) = conv(cout, cout);
            convs.push((w1, b1, w2, b2));
            cin = cout;
        }
        Ok(Perceptual3d { convs, weights: levels.map(|w| w / sum) })
    }

    /// Features of every level.
    pub fn features(&self, x: &Tensor) -> Vec<Tensor> {
        let block = |h: &Tensor, w: &Tensor, b: &Tensor, stride: i64| {
            let y = h.conv3d(w, Some(b), [stride; 3], [1; 3], [1; 3], 1).instance_norm(
                None::<&Tensor>,
                None::<&Tensor>,
                None::<&Tensor>,
                None::<&Tensor>,
                true,
                0.1,
                1e-5,
                false,
            );
            y.maximum(&(&y * 0.2)) // LeakyReLU(0.2): tch's leaky_relu has a fixed slope
        };
        let mut h = x.to_kind(Kind::Float);
        let mut out = Vec::new();
        for (w1, b1, w2, b2) in &self.convs {
            h = block(&block(&h, w1, b1, 2), w2, b2, 1);
            out.push(h.shallow_clone());
        }
        out
    }

    /// `sum_i w_i * mean(|f_i(pred) - f_i(target)| * (occ_i + 0.1))`, with
    /// `occ_i` the target occupancy max-pooled to level `i`'s grid.
    pub fn loss(&self, pred: &Tensor, target: &Tensor) -> Tensor {
        let fp = self.features(pred);
        let ft = tch::no_grad(|| self.features(target));
        let occ = occupancy(&target.to_kind(Kind::Float));
        let mut total = Tensor::zeros([], (Kind::Float, pred.device()));
        for ((a, b), w) in fp.iter().zip(&ft).zip(self.weights) {
            let s = a.size();
            let occ_i = occ.adaptive_max_pool3d([s[2], s[3], s[4]]).0;
            total += ((a - b).abs() * (occ_i + 0.1)).mean(Kind::Float) * w;
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_occupancy_head_is_bce_dice_and_masked_feature_mse() {
        // (1, 2, 1, 1, 3): logits 2, -1, 0; target occupancy 1, 0, 0; features
        let pred = Tensor::from_slice(&[2.0f32, -1.0, 0.0, 0.5, 0.2, 9.0]).view([1, 2, 1, 1, 3]);
        let target = Tensor::from_slice(&[1.0f32, 0.0, 0.0, 0.4, 0.0, 0.0]).view([1, 2, 1, 1, 3]);
        let sig = |x: f64| 1.0 / (1.0 + (-x).exp());
        let bce = -((sig(2.0)).ln() + (1.0 - sig(-1.0)).ln() + (1.0 - sig(0.0)).ln()) / 3.0;
        let p = [sig(2.0), sig(-1.0), sig(0.0)];
        let dice = 1.0 - 2.0 * p[0] / (p.iter().sum::<f64>() + 1.0 + 1e-6);
        // features near the occupied voxel: voxels 0 and 1 (3x3x3 neighbourhood), not 2
        let fmse = ((0.5f64 - 0.4).powi(2) + 0.2f64.powi(2)) / (2.0 + 1e-6);
        let c =
            LossConfig { mse: 0.0, occupancy_bce: 1.0, occupancy_dice: 0.5, feature_mse: 2.0, ..Default::default() };
        let got = occupancy_head(&pred, &target, &c).double_value(&[]);
        let want = bce + 0.5 * dice + 2.0 * fmse;
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        let loss = ReconLoss::new(&c, 2, Device::Cpu).unwrap();
        assert!((loss.compute(&pred, &target).double_value(&[]) - want).abs() < 1e-5);
        // a logit head leaves no room for the regression terms
        let mixed = LossConfig { mse: 1.0, occupancy_bce: 1.0, ..Default::default() };
        assert!(ReconLoss::new(&mixed, 2, Device::Cpu).unwrap_err().to_string().contains("logit"));
        let lone = LossConfig { mse: 1.0, feature_mse: 1.0, ..Default::default() };
        assert!(ReconLoss::new(&lone, 2, Device::Cpu).is_err());
        let probs = occupancy_probability(pred.shallow_clone(), true);
        assert!((probs.double_value(&[0, 0, 0, 0, 0]) - sig(2.0)).abs() < 1e-6);
        assert_eq!(probs.double_value(&[0, 1, 0, 0, 2]), 9.0, "features untouched");
        assert!(occupancy_probability(pred.shallow_clone(), false).equal(&pred));
    }

    fn grid(seed: i64) -> Tensor {
        let occ = crate::sys::uniform(seed as u64, &[1, 1, 8, 16, 16], 0.0, 1.0, Device::Cpu);
        let feats = crate::sys::normal(seed as u64 + 1000, &[1, 3, 8, 16, 16], Device::Cpu);
        let occ = occ.gt(0.8).to_kind(Kind::Float);
        let feats = feats * &occ;
        Tensor::cat(&[occ, feats], 1)
    }

    #[test]
    fn occupancy_weights_follow_the_rule() {
        let t = Tensor::zeros([1, 4, 5, 5, 5], (Kind::Float, Device::Cpu));
        let _ = t.get(0).get(0).get(2).get(2).get(2).fill_(1.0);
        let w = occupancy_weights(&t);
        let at = |z: i64, y: i64, x: i64| w.double_value(&[0, 0, z, y, x]);
        assert_eq!(at(2, 2, 2), 7.0, "occupied and on the boundary");
        assert_eq!(at(1, 1, 1), 3.0, "empty next to an occupied voxel");
        assert_eq!(at(0, 0, 0), 1.0, "empty and far");
        let _ = t.narrow(1, 0, 1).fill_(1.0);
        let w = occupancy_weights(&t);
        assert_eq!(w.double_value(&[0, 0, 2, 2, 2]), 5.0, "occupied inside a full block");
    }

    #[test]
    fn edge_loss_sees_moved_surfaces() {
        let t = grid(1);
        assert!(edge_loss(&t, &t).double_value(&[]) < 1e-6);
        let moved = t.roll([1], [4]);
        assert!(edge_loss(&moved, &t).double_value(&[]) > 0.01);
        // A constant grid has no edges inside (away from the zero padding).
        let ones = Tensor::ones([1, 1, 6, 6, 6], (Kind::Float, Device::Cpu));
        assert!(sobel_magnitude(&ones).get(0).get(0).get(3).get(3).get(3).double_value(&[]) < 1e-5);
    }

    #[test]
    fn perceptual_is_seeded_frozen_and_zero_on_equal_inputs() {
        let (a, b) = (grid(2), grid(3));
        let p = Perceptual3d::new(4, 7, [0.5, 1.0, 1.0, 0.5], Device::Cpu).unwrap();
        assert!(p.loss(&a, &a).double_value(&[]) < 1e-6);
        let l = p.loss(&a, &b).double_value(&[]);
        assert!(l > 0.0);
        let same = Perceptual3d::new(4, 7, [1.0, 2.0, 2.0, 1.0], Device::Cpu).unwrap();
        assert!((same.loss(&a, &b).double_value(&[]) - l).abs() < 1e-6, "weights are normalised");
        let other = Perceptual3d::new(4, 8, [0.5, 1.0, 1.0, 0.5], Device::Cpu).unwrap();
        assert!((other.loss(&a, &b).double_value(&[]) - l).abs() > 1e-6, "the seed fixes the extractor");
        assert_eq!(p.features(&a).iter().map(|f| f.size()[1]).collect::<Vec<_>>(), Perceptual3d::CHANNELS);
        let x = a.set_requires_grad(true);
        p.loss(&x, &b).backward();
        assert!(x.grad().abs().sum(Kind::Float).double_value(&[]) > 0.0, "gradients reach the prediction");
        assert!(p.convs.iter().all(|(w, _, _, _)| !w.requires_grad()), "extractor is frozen");
    }

    #[test]
    fn config_combines_terms() {
        let (a, b) = (grid(4), grid(5));
        let mse = ReconLoss::new(&LossConfig::default(), 4, Device::Cpu).unwrap();
        let want = a.mse_loss(&b, Reduction::Mean).double_value(&[]);
        assert!((mse.compute(&a, &b).double_value(&[]) - want).abs() < 1e-7);
        let cfg = LossConfig { mse: 1.0, occupancy_mse: 2.0, edge: 0.5, ..Default::default() };
        let all = ReconLoss::new(&cfg, 4, Device::Cpu).unwrap().compute(&a, &b).double_value(&[]);
        let parts = want + 2.0 * occupancy_mse(&a, &b).double_value(&[]) + 0.5 * edge_loss(&a, &b).double_value(&[]);
        assert!((all - parts).abs() < 1e-5);
        assert!(ReconLoss::new(&LossConfig { mse: 0.0, ..Default::default() }, 4, Device::Cpu).is_err());
        assert!(serde_json::from_str::<LossConfig>(r#"{"lpips": 1.0}"#).is_err(), "unknown key refused");
    }
}
