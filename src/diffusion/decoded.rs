//! The decoded-space loss of the latent models: the denoised estimate
//! `D(x; sigma)` is decoded by the frozen VAE (its weights fixed, the graph
//! kept so the gradient reaches the UNet) and its occupancy probability is
//! scored against the target frame's occupancy where the benchmark scores
//! it: binary cross-entropy, soft Dice, the voxel count and the height
//! distribution. Beside the latent EDM loss, never instead of it.
//!
//! Per sample `b`, with `p` the decoded occupancy probability and `t` the
//! target's occupancy (0 or 1) over the frame's voxels:
//! - `bce = mean(-(t ln p + (1 - t) ln(1 - p)))`, `p` clamped to
//!   `[1e-4, 1 - 1e-4]`;
//! - `dice = 1 - (2 sum(p t) + 1) / (sum(p) + sum(t) + 1)`;
//! - `count = ln((sum(p) + 1) / (sum(t) + 1))^2`;
//! - `height = mean over z of |P(z) - T(z)|`, with `P`, `T` the cumulative
//!   shares of `p` and `t` over the grid's z slices (bottom first): a
//!   one-dimensional Wasserstein distance in units of the grid's height.
//!
//! The term is `weight * sum(w_i term_i)`, weighted per sample by the noise
//! level: `c_skip(sigma) = sigma_data^2 / (sigma^2 + sigma_data^2)`, 1 for a
//! clean estimate and ~0 at large noise, where the estimate is a blurred
//! mean no decoder should be asked to sharpen. The direct baseline's one
//! call is a clean estimate: weight 1.

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use super::DiffusionError;

/// Weights of the decoded-space loss (recipe `[decoded]`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DecodedLossConfig {
    /// Weight of the whole term beside the latent loss.
    pub weight: f64,
    /// Binary cross-entropy of the occupancy.
    pub bce: f64,
    /// Soft Dice of the occupancy.
    pub dice: f64,
    /// Squared log ratio of predicted to target voxel count.
    pub count: f64,
    /// Distance between the height distributions.
    pub height: f64,
}

impl Default for DecodedLossConfig {
    /// BCE and Dice at 1, count and height at 0.1, the term at 1.
    fn default() -> Self {
        DecodedLossConfig { weight: 1.0, bce: 1.0, dice: 1.0, count: 0.1, height: 0.1 }
    }
}

impl DecodedLossConfig {
    /// Refuses negative or non-finite weights and an all-zero term.
    pub fn validate(&self) -> Result<(), DiffusionError> {
        let w = [self.weight, self.bce, self.dice, self.count, self.height];
        if w.iter().any(|v| !(v.is_finite() && *v >= 0.0)) || self.weight == 0.0 || w[1..].iter().all(|v| *v == 0.0) {
            return Err(DiffusionError::Config(format!(
                "decoded loss weights must be finite and >= 0, with weight > 0 and at least one term > 0: {self:?}"
            )));
        }
        Ok(())
    }

    /// The weighted sum of the terms per sample, `(B,)` float32, of
    /// occupancy probabilities `p` and target occupancy `t`, both
    /// `(B, 1, Z, H, W)` (see the module docs).
    pub fn per_sample(&self, p: &Tensor, t: &Tensor) -> Tensor {
        let b = p.size()[0];
        let p = p.to_kind(Kind::Float).clamp(1e-4, 1.0 - 1e-4).reshape([b, -1]);
        let t3 = t.to_kind(Kind::Float);
        let t = t3.reshape([b, -1]);
        let dims: &[i64] = &[1];
        let mut total = Tensor::zeros([b], (Kind::Float, p.device()));
        if self.bce > 0.0 {
            let (log_p, log_q) = (p.log(), (1.0f64 - &p).log());
            let bce = -(&t * log_p + (1.0f64 - &t) * log_q).mean_dim(dims, false, Kind::Float);
            total += bce * self.bce;
        }
        let (sp, st) = (p.sum_dim_intlist(dims, false, Kind::Float), t.sum_dim_intlist(dims, false, Kind::Float));
        if self.dice > 0.0 {
            let inter = (&p * &t).sum_dim_intlist(dims, false, Kind::Float);
            total += (1.0f64 - (inter * 2.0 + 1.0) / (&sp + &st + 1.0)) * self.dice;
        }
        if self.count > 0.0 {
            total += ((&sp + 1.0) / (&st + 1.0)).log().square() * self.count;
        }
        if self.height > 0.0 {
            let z = t3.size()[2];
            let profile = |x: &Tensor| {
                let per_z = x.reshape([b, z, -1]).sum_dim_intlist([2i64].as_slice(), false, Kind::Float);
                let share = &per_z / per_z.sum_dim_intlist(dims, true, Kind::Float).clamp_min(1e-6);
                share.cumsum(1, Kind::Float)
            };
            let gap = (profile(&p) - profile(&t)).abs().mean_dim(dims, false, Kind::Float);
            total += gap * self.height;
        }
        total
    }

    /// The noise-level weight of each sample: `c_skip(sigma)` for
    /// `sigma_data` (module docs).
    pub fn noise_weight(sigma: &Tensor, sigma_data: f64) -> Tensor {
        let sd2 = sigma_data * sigma_data;
        (sigma.to_kind(Kind::Float).square() + sd2).reciprocal() * sd2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The terms against the formulas written out in f64 loops.
    #[test]
    fn the_terms_equal_the_formulas() {
        let (b, z, h, w) = (2usize, 3usize, 4usize, 2usize);
        let n = z * h * w;
        let p: Vec<f32> = (0..b * n).map(|i| ((i * 37 % 101) as f32 / 101.0).clamp(0.0, 1.0)).collect();
        let t: Vec<f32> = (0..b * n).map(|i| ((i * 13 + 5) % 7 < 2) as u8 as f32).collect();
        let shape = [b as i64, 1, z as i64, h as i64, w as i64];
        let (pt, tt) = (Tensor::from_slice(&p).reshape(shape), Tensor::from_slice(&t).reshape(shape));
        let only = |bce, dice, count, height| {
            let cfg = DecodedLossConfig { weight: 1.0, bce, dice, count, height };
            Vec::<f64>::try_from(cfg.per_sample(&pt, &tt).to_kind(Kind::Double)).unwrap()
        };
        for s in 0..b {
            let (ps, ts) = (&p[s * n..(s + 1) * n], &t[s * n..(s + 1) * n]);
            let pc: Vec<f64> = ps.iter().map(|&v| (v as f64).clamp(1e-4, 1.0 - 1e-4)).collect();
            let tc: Vec<f64> = ts.iter().map(|&v| v as f64).collect();
            let bce =
                pc.iter().zip(&tc).map(|(p, t)| -(t * p.ln() + (1.0 - t) * (1.0 - p).ln())).sum::<f64>() / n as f64;
            let (sp, st) = (pc.iter().sum::<f64>(), tc.iter().sum::<f64>());
            let inter: f64 = pc.iter().zip(&tc).map(|(p, t)| p * t).sum();
            let dice = 1.0 - (2.0 * inter + 1.0) / (sp + st + 1.0);
            let count = ((sp + 1.0) / (st + 1.0)).ln().powi(2);
            let cum = |x: &[f64]| {
                let per: Vec<f64> = (0..z).map(|k| x[k * h * w..(k + 1) * h * w].iter().sum()).collect();
                let tot: f64 = per.iter().sum();
                let mut acc = 0.0;
                per.iter()
                    .map(|v| {
                        acc += v / tot.max(1e-6);
                        acc
                    })
                    .collect::<Vec<f64>>()
            };
            let (cp, ct) = (cum(&pc), cum(&tc));
            let height = cp.iter().zip(&ct).map(|(a, b)| (a - b).abs()).sum::<f64>() / z as f64;
            for (got, want) in [
                (only(1.0, 0.0, 0.0, 0.0)[s], bce),
                (only(0.0, 1.0, 0.0, 0.0)[s], dice),
                (only(0.0, 0.0, 1.0, 0.0)[s], count),
                (only(0.0, 0.0, 0.0, 1.0)[s], height),
                (only(1.0, 2.0, 0.5, 0.25)[s], bce + 2.0 * dice + 0.5 * count + 0.25 * height),
            ] {
                assert!((got - want).abs() <= 1e-5 * want.abs().max(1.0), "sample {s}: {got} vs {want}");
            }
        }
        // a perfect prediction scores (near) zero on every term but BCE's clamp
        let perfect = DecodedLossConfig { bce: 0.0, ..Default::default() }.per_sample(&tt, &tt);
        assert!(perfect.abs().max().double_value(&[]) < 1e-3, "{perfect:?}");
        let w = DecodedLossConfig::noise_weight(&Tensor::from_slice(&[0.0f32, 0.5, 80.0]), 0.5);
        let w: Vec<f64> = Vec::try_from(w.to_kind(Kind::Double)).unwrap();
        assert!((w[0] - 1.0).abs() < 1e-6 && (w[1] - 0.5).abs() < 1e-6 && w[2] < 1e-4, "{w:?}");
    }

    #[test]
    fn bad_weights_are_refused() {
        assert!(DecodedLossConfig::default().validate().is_ok());
        for bad in [
            DecodedLossConfig { weight: 0.0, ..Default::default() },
            DecodedLossConfig { bce: -1.0, ..Default::default() },
            DecodedLossConfig { count: f64::NAN, ..Default::default() },
            DecodedLossConfig { bce: 0.0, dice: 0.0, count: 0.0, height: 0.0, weight: 1.0 },
        ] {
            assert!(bad.validate().unwrap_err().to_string().contains("decoded loss"), "{bad:?}");
        }
    }
}
