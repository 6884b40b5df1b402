//! The 3D VAE of `shared/spec/vae3d.md`: encoder, decoder, `quant_conv` and
//! `post_quant_conv`, with var paths equal to the reference `state_dict` keys
//! so safetensors weights move between PyTorch and radvox unchanged.
//!
//! Both halves are flat lists of units (conv_in, each block, the output
//! head) so gradient checkpointing can cut them into segments.

use serde::{Deserialize, Serialize};
use tch::nn::{self, ModuleT};
use tch::{Kind, Tensor};

use super::blocks::{level_stride, Conv3d, Downsample3d, Norm, ResBlock3d, SelfAttention3d, Upsample3d};
use super::checkpoint::{Chain, Checkpointing};
use super::trace::{Dtype, Tape, Tid, Trace};
use super::ModelError;

/// Architecture of a [`Vae3d`]; see the named presets. Fields missing from
/// a stored config take the `ultra_lightweight` values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VaeConfig {
    /// Input channels (4: occupancy, intensity, Doppler, var/mask).
    pub in_channels: i64,
    /// Output channels.
    pub out_channels: i64,
    /// Latent channels.
    pub latent_dim: i64,
    /// Channels of the first level.
    pub base_channels: i64,
    /// Channel multiplier per encoder level.
    pub encoder_mult: Vec<i64>,
    /// Channel multiplier per decoder level (the encoder's, reversed).
    pub decoder_mult: Vec<i64>,
    /// ResBlocks per encoder level (the decoder has one more).
    pub num_res_blocks: usize,
    /// Self-attention at the lowest level and in the middle blocks.
    pub attention: bool,
    /// Attention heads.
    pub attention_heads: i64,
    /// Dropout inside ResBlocks.
    pub dropout: f64,
    /// Weight of the KL term.
    pub kl_weight: f64,
}

impl Default for VaeConfig {
    fn default() -> Self {
        VaeConfig::ultra_lightweight()
    }
}

impl VaeConfig {
    fn preset(base: i64, mult: &[i64], res: usize, attention: bool) -> VaeConfig {
        VaeConfig {
            in_channels: 4,
            out_channels: 4,
            latent_dim: 4,
            base_channels: base,
            encoder_mult: mult.to_vec(),
            decoder_mult: mult.iter().rev().copied().collect(),
            num_res_blocks: res,
            attention,
            attention_heads: 4,
            dropout: 0.0,
            kl_weight: 1e-6,
        }
    }

    /// The 0.69 M model that let the seed train on a 24 GB card (694,788 parameters).
    pub fn ultra_lightweight() -> VaeConfig {
        Self::preset(16, &[1, 2, 2], 1, false)
    }

    /// The 7.65 M model that ran out of memory (7,652,628 parameters).
    pub fn seed_baseline() -> VaeConfig {
        Self::preset(32, &[1, 2, 4], 1, false)
    }

    /// Base 24, mult (1, 2, 3): crashes in the reference (GroupNorm(32, 48)),
    /// works here through [`super::blocks::norm_groups`].
    pub fn lightweight() -> VaeConfig {
        Self::preset(24, &[1, 2, 3], 1, false)
    }

    /// The full model with attention (40,847,092 parameters).
    pub fn standard() -> VaeConfig {
        Self::preset(64, &[1, 2, 4], 2, true)
    }

    /// A preset by name: `ultra_lightweight`, `seed_baseline`, `lightweight`, `standard`.
    pub fn named(name: &str) -> Result<VaeConfig, ModelError> {
        match name.replace('-', "_").as_str() {
            "ultra_lightweight" | "ultra" => Ok(Self::ultra_lightweight()),
            "seed_baseline" => Ok(Self::seed_baseline()),
            "lightweight" => Ok(Self::lightweight()),
            "standard" => Ok(Self::standard()),
            other => Err(ModelError::Config(format!(
                "unknown VAE preset {other:?}: use ultra_lightweight, seed_baseline, lightweight or standard"
            ))),
        }
    }

    /// Channels of encoder level `i`.
    pub fn level_channels(&self, i: usize) -> i64 {
        self.base_channels * self.encoder_mult[i]
    }

    /// Refuses settings that cannot build or run, before any weight exists.
    pub fn validate(&self) -> Result<(), ModelError> {
        let err = |m: String| Err(ModelError::Config(m));
        for (name, v) in [
            ("in_channels", self.in_channels),
            ("out_channels", self.out_channels),
            ("latent_dim", self.latent_dim),
            ("base_channels", self.base_channels),
        ] {
            if v <= 0 {
                return err(format!("{name} must be > 0, got {v}"));
            }
        }
        if self.encoder_mult.is_empty() {
            return err("encoder_mult must have at least one level".into());
        }
        if let Some(m) = self.encoder_mult.iter().chain(&self.decoder_mult).find(|&&m| m <= 0) {
            return err(format!("channel multipliers must be > 0, got {m}"));
        }
        let reversed: Vec<i64> = self.encoder_mult.iter().rev().copied().collect();
        if self.decoder_mult != reversed {
            return err(format!(
                "decoder_mult {:?} must be encoder_mult {:?} reversed, or the shapes do not mirror",
                self.decoder_mult, self.encoder_mult
            ));
        }
        if self.num_res_blocks == 0 {
            return err("num_res_blocks must be >= 1".into());
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return err(format!("dropout must lie in [0, 1), got {}", self.dropout));
        }
        if !(self.kl_weight >= 0.0 && self.kl_weight.is_finite()) {
            return err(format!("kl_weight must be finite and >= 0, got {}", self.kl_weight));
        }
        if self.attention {
            let c = self.level_channels(self.encoder_mult.len() - 1);
            if self.attention_heads <= 0 || c % self.attention_heads != 0 {
                return err(format!(
                    "attention_heads {} must divide the {c} channels it attends over",
                    self.attention_heads
                ));
            }
        }
        Ok(())
    }

    /// Total downsampling factor `(D, H, W)` of the encoder.
    pub fn downsampling(&self) -> [i64; 3] {
        (0..self.encoder_mult.len() - 1).fold([1; 3], |acc, i| {
            let s = level_stride(i);
            [acc[0] * s[0], acc[1] * s[1], acc[2] * s[2]]
        })
    }

    /// Refuses a `(Z, H, W)` grid the model cannot reconstruct: each dim must
    /// be a positive multiple of the encoder's downsampling (otherwise the
    /// decoder's output differs in size from its input).
    pub fn check_grid(&self, zhw: [i64; 3]) -> Result<(), ModelError> {
        let f = self.downsampling();
        if (0..3).any(|i| zhw[i] <= 0 || zhw[i] % f[i] != 0) {
            return Err(ModelError::Grid {
                grid: zhw,
                rule: format!(
                    "each of Z, H, W must be a positive multiple of the VAE's downsampling {f:?} (e.g. {:?})",
                    [0, 1, 2].map(|i| (zhw[i].max(1) + f[i] - 1) / f[i] * f[i])
                ),
            });
        }
        Ok(())
    }
}

/// `norm_out`, SiLU, `conv_out`: the last unit of encoder and decoder.
#[derive(Debug)]
struct OutHead {
    norm: Norm,
    conv: Conv3d,
}

impl ModuleT for OutHead {
    fn forward_t(&self, x: &Tensor, _train: bool) -> Tensor {
        let mut h = x.apply(&self.norm);
        h = h.silu(); // the norm's output is dropped here, not at the end
        h.apply(&self.conv)
    }
}

impl Trace for OutHead {
    fn trace(&self, t: &mut Tape, x: Tid) -> Tid {
        let h = self.norm.trace(t, x);
        let h = t.unary("silu", h, true);
        self.conv.trace(t, h)
    }
}

/// A module that is only a 3x3x3 conv (`conv_in`).
#[derive(Debug)]
struct ConvUnit(Conv3d);

impl ModuleT for ConvUnit {
    fn forward_t(&self, x: &Tensor, _train: bool) -> Tensor {
        x.apply(&self.0)
    }
}

impl Trace for ConvUnit {
    fn trace(&self, t: &mut Tape, x: Tid) -> Tid {
        self.0.trace(t, x)
    }
}

/// A unit of the VAE: runs, and records itself for the memory planner.
trait Unit: ModuleT + Trace {}
impl<T: ModuleT + Trace> Unit for T {}

/// Units of one half of the model, with their state_dict prefixes and the
/// per-block checkpointing mask (true for ResBlocks and attention, false
/// for plain convolutions).
#[derive(Debug, Default)]
struct Units {
    units: Vec<Box<dyn Unit>>,
    names: Vec<String>,
    blocks: Vec<bool>,
}

impl Units {
    fn push<U: Unit + 'static>(&mut self, path: nn::Path, build: impl FnOnce(nn::Path) -> U, block: bool) {
        self.names.push(path.components().collect::<Vec<_>>().join("."));
        self.units.push(Box::new(build(path)));
        self.blocks.push(block);
    }

    fn modules(&self) -> Vec<&dyn ModuleT> {
        self.units.iter().map(|u| u.as_ref() as &dyn ModuleT).collect()
    }

    /// Records the units on `t`, cut into segments by `checkpointing`.
    fn trace(&self, t: &mut Tape, x: Tid, checkpointing: Checkpointing) -> Tid {
        let mut h = x;
        for (range, checkpointed) in checkpointing.ranges(self.units.len(), &self.blocks) {
            t.segment(checkpointed);
            for i in range {
                t.set_scope(&self.names[i]);
                h = self.units[i].trace(t, h);
            }
        }
        t.segment(false);
        h
    }
}

fn mid_block(vs: &nn::Path, c: i64, cfg: &VaeConfig, units: &mut Units) {
    let mid = vs / "mid_block";
    units.push(&mid / "0", |p| ResBlock3d::new(p, c, c, cfg.dropout), true);
    if cfg.attention {
        units.push(&mid / "1", |p| SelfAttention3d::new(p, c, cfg.attention_heads), true);
    }
    units.push(&mid / "2", |p| ResBlock3d::new(p, c, c, cfg.dropout), true);
}

fn encoder_units(vs: nn::Path, cfg: &VaeConfig) -> Units {
    let levels = cfg.encoder_mult.len();
    let mut units = Units::default();
    units.push(&vs / "conv_in", |p| ConvUnit(Conv3d::new(p, cfg.in_channels, cfg.base_channels, 3, [1; 3])), false);
    let mut c = cfg.base_channels;
    for i in 0..levels {
        let out = cfg.level_channels(i);
        let level = &vs / "down_blocks" / i;
        let mut j = 0;
        for _ in 0..cfg.num_res_blocks {
            units.push(&level / j, |p| ResBlock3d::new(p, c, out, cfg.dropout), true);
            c = out;
            j += 1;
        }
        if cfg.attention && i == levels - 1 {
            units.push(&level / j, |p| SelfAttention3d::new(p, c, cfg.attention_heads), true);
            j += 1;
        }
        if i != levels - 1 {
            units.push(&level / j, |p| Downsample3d::new(p, c, level_stride(i)), false);
        }
    }
    mid_block(&vs, c, cfg, &mut units);
    let head = OutHead {
        norm: Norm::new(&vs / "norm_out", c),
        conv: Conv3d::new(&vs / "conv_out", c, 2 * cfg.latent_dim, 3, [1; 3]),
    };
    units.push(&vs / "out_head", |_| head, false);
    units
}

fn decoder_units(vs: nn::Path, cfg: &VaeConfig) -> Units {
    let levels = cfg.decoder_mult.len();
    let mut c = cfg.base_channels * cfg.decoder_mult[0];
    let mut units = Units::default();
    units.push(&vs / "conv_in", |p| ConvUnit(Conv3d::new(p, cfg.latent_dim, c, 3, [1; 3])), false);
    mid_block(&vs, c, cfg, &mut units);
    for i in 0..levels {
        let out = cfg.base_channels * cfg.decoder_mult[i];
        let level = &vs / "up_blocks" / i;
        let mut j = 0;
        for _ in 0..=cfg.num_res_blocks {
            units.push(&level / j, |p| ResBlock3d::new(p, c, out, cfg.dropout), true);
            c = out;
            j += 1;
        }
        if cfg.attention && i == 0 {
            units.push(&level / j, |p| SelfAttention3d::new(p, c, cfg.attention_heads), true);
            j += 1;
        }
        if i != levels - 1 {
            units.push(&level / j, |p| Upsample3d::new(p, c, level_stride(i)), false);
        }
    }
    let head = OutHead {
        norm: Norm::new(&vs / "norm_out", c),
        conv: Conv3d::new(&vs / "conv_out", c, cfg.out_channels, 3, [1; 3]),
    };
    units.push(&vs / "out_head", |_| head, false);
    units
}

/// The 3D VAE.
#[derive(Debug)]
pub struct Vae3d {
    config: VaeConfig,
    encoder: Units,
    decoder: Units,
    quant_conv: Conv3d,
    post_quant_conv: Conv3d,
}

/// Encoder statistics of an input.
#[derive(Debug)]
pub struct Posterior {
    /// Mean, `(B, latent, D', H', W')`.
    pub mean: Tensor,
    /// Log-variance, clamped to [-30, 20].
    pub logvar: Tensor,
}

impl Posterior {
    /// `mean` (eps `None`) or `mean + eps * exp(logvar / 2)`.
    pub fn sample(&self, eps: Option<&Tensor>) -> Tensor {
        match eps {
            Some(e) => &self.mean + e * (&self.logvar * 0.5).exp(),
            None => self.mean.shallow_clone(),
        }
    }

    /// `-0.5 * mean(1 + logvar - mean^2 - exp(logvar))`, in float32.
    pub fn kl(&self) -> Tensor {
        let (m, lv) = (self.mean.to_kind(Kind::Float), self.logvar.to_kind(Kind::Float));
        ((&lv + 1.0) - m.square() - lv.exp()).mean(Kind::Float) * -0.5
    }
}

/// Loss values of one step (unscaled).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossParts {
    /// Reconstruction loss.
    pub recon: f64,
    /// KL divergence (before `kl_weight`).
    pub kl: f64,
    /// `recon + kl_weight * kl`.
    pub total: f64,
}

impl Vae3d {
    /// Validates `config` and builds the model under `vs` (paths `encoder.*`,
    /// `decoder.*`, `quant_conv`, `post_quant_conv`).
    pub fn new(vs: &nn::Path, config: &VaeConfig) -> Result<Vae3d, ModelError> {
        config.validate()?;
        let l = config.latent_dim;
        Ok(Vae3d {
            config: config.clone(),
            encoder: encoder_units(vs / "encoder", config),
            decoder: decoder_units(vs / "decoder", config),
            quant_conv: Conv3d::new(vs / "quant_conv", l, l, 1, [1; 3]),
            post_quant_conv: Conv3d::new(vs / "post_quant_conv", l, l, 1, [1; 3]),
        })
    }

    /// The architecture.
    pub fn config(&self) -> &VaeConfig {
        &self.config
    }

    /// Encoder statistics of `x` `(B, C, D, H, W)`.
    pub fn posterior(&self, x: &Tensor, train: bool) -> Posterior {
        let h = run(&self.encoder.units, x, train);
        moments(&h, self.config.latent_dim)
    }

    /// `quant_conv(mean)` (deterministic, `eps` None) or of a sample.
    pub fn encode(&self, x: &Tensor, eps: Option<&Tensor>, train: bool) -> Tensor {
        self.posterior(x, train).sample(eps).apply(&self.quant_conv)
    }

    /// Decodes a latent (after `quant_conv`) to a grid.
    pub fn decode(&self, z: &Tensor, train: bool) -> Tensor {
        run(&self.decoder.units, &z.apply(&self.post_quant_conv), train)
    }

    /// Reconstruction and posterior of `x`.
    pub fn forward(&self, x: &Tensor, eps: Option<&Tensor>, train: bool) -> (Tensor, Posterior) {
        let post = self.posterior(x, train);
        let z = post.sample(eps).apply(&self.quant_conv);
        (self.decode(&z, train), post)
    }

    /// Latent shape for an input shape `(B, C, D, H, W)`.
    pub fn latent_shape(&self, input: [i64; 5]) -> [i64; 5] {
        let f = self.config.downsampling();
        [input[0], self.config.latent_dim, input[2] / f[0], input[3] / f[1], input[4] / f[2]]
    }

    /// Forward and backward of `scale * (recon_loss(recon, x) + kl_weight * kl)`,
    /// accumulating parameter gradients. With checkpointing, only segment
    /// boundaries are kept and each segment is recomputed during backward.
    /// A non-finite loss is returned without any backward (no gradient changes).
    pub fn backward(
        &self,
        x: &Tensor,
        eps: Option<&Tensor>,
        checkpointing: Checkpointing,
        scale: f64,
        recon_loss: &dyn Fn(&Tensor, &Tensor) -> Tensor,
    ) -> LossParts {
        let kl_w = self.config.kl_weight;
        let latent = self.config.latent_dim;
        // The encoder output re-enters autograd as a leaf, and the KL term
        // gets its own copy of the (cheap) moment ops: the loss's backward
        // and the decoder's chained backward then never share a graph.
        let mut enc_chain = Chain::default();
        let h = enc_chain.forward(checkpointing.segments(&self.encoder.modules(), &self.encoder.blocks), x, true);
        let h_leaf = h.detach().set_requires_grad(true);
        let kl = moments(&h_leaf, latent).kl();
        let z = moments(&h_leaf, latent).sample(eps).apply(&self.quant_conv).apply(&self.post_quant_conv);
        let mut dec_chain = Chain::default();
        let recon = dec_chain.forward(checkpointing.segments(&self.decoder.modules(), &self.decoder.blocks), &z, true);
        let rl = recon_loss(&recon, x);
        let total = &rl + &kl * kl_w;
        let parts = LossParts { recon: rl.double_value(&[]), kl: kl.double_value(&[]), total: total.double_value(&[]) };
        if parts.total.is_finite() {
            (&total * scale).backward();
            dec_chain.backward(true);
            (h * h_leaf.grad()).sum(Kind::Float).backward();
            enc_chain.backward(true);
        }
        parts
    }

    /// Records [`Vae3d::encode`]'s deterministic path (`quant_conv(mean)`)
    /// of an `input`-shaped batch on `t` (a [`Tape::no_grad`] one for a
    /// frozen model); the batch is caller-held. Returns the latent.
    pub fn trace_encode(&self, t: &mut Tape, input: [i64; 5]) -> Tid {
        let x = t.input(&input, Dtype::F32);
        let h = self.encoder.trace(t, x, Checkpointing::Off);
        t.set_scope("quant_conv");
        let mut half = t.shape(h).to_vec();
        half[1] /= 2;
        let mean = t.view(h, &half);
        let z = self.quant_conv.trace(t, mean);
        t.set_scope("");
        z
    }

    /// Records [`Vae3d::decode`] of a `latent`-shaped batch on `t`; the
    /// latent is caller-held. Returns the grid.
    pub fn trace_decode(&self, t: &mut Tape, latent: [i64; 5]) -> Tid {
        let z = t.input(&latent, Dtype::F32);
        t.set_scope("post_quant_conv");
        let z = self.post_quant_conv.trace(t, z);
        let y = self.decoder.trace(t, z, Checkpointing::Off);
        t.set_scope("");
        y
    }

    /// Records one training step ([`Vae3d::backward`] with the MSE loss) on
    /// `t` for the memory planner; the batch and the noise are caller-held.
    pub fn trace_step(&self, t: &mut Tape, input: [i64; 5], checkpointing: Checkpointing) {
        let x = t.input(&input, Dtype::F32);
        let eps = t.input(&self.latent_shape(input), Dtype::F32);
        let h = self.encoder.trace(t, x, checkpointing);
        t.set_scope("posterior");
        let mut half = t.shape(h).to_vec();
        half[1] /= 2;
        let (mean, logvar) = (t.view(h, &half), t.view(h, &half));
        let logvar = t.unary("clamp", logvar, true);
        let logvar = t.unary("scale", logvar, false);
        let std = t.unary_saving_output("exp", logvar);
        let noise = t.op("mul", &[eps, std], &half, t.dtype(std), &[eps, std], false, (0, 0));
        let z = t.add(mean, noise);
        t.set_scope("quant_conv");
        let z = self.quant_conv.trace(t, z);
        t.set_scope("post_quant_conv");
        let z = self.post_quant_conv.trace(t, z);
        let recon = self.decoder.trace(t, z, checkpointing);
        t.set_scope("");
        t.mse(recon, x);
    }
}

fn run(units: &[Box<dyn Unit>], x: &Tensor, train: bool) -> Tensor {
    units.iter().fold(x.shallow_clone(), |h, u| u.forward_t(&h, train))
}

fn moments(h: &Tensor, latent: i64) -> Posterior {
    let parts = h.split(latent, 1);
    Posterior { mean: parts[0].shallow_clone(), logvar: parts[1].clamp(-30.0, 20.0) }
}

impl ModuleT for Vae3d {
    /// Deterministic reconstruction (posterior mean).
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        self.forward(x, None, train).0
    }
}
