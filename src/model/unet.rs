//! The latent 3D UNet of the diffusion stage: input = noised target latent
//! concatenated with the radar latent, output = the network part `F` of the
//! EDM denoiser. Sinusoidal noise embedding -> MLP (4x channels) added in
//! every ResBlock; downsampling halves Z only while Z is large (asymmetric
//! strides, as in the VAE); the up path upsamples to each skip's size.
//! With `cond_every_level` the condition also enters every level of the
//! down path: average-pooled to the level's grid, projected by a
//! zero-initialised 1x1x1 convolution, added before the level's first
//! ResBlock (so the network starts as the plain one).

use serde::{Deserialize, Serialize};
use tch::nn::{self, ModuleT};
use tch::{Kind, Tensor};

use super::blocks::{trace_tail, Conv3d, Linear, Norm, SelfAttention3d};
use super::checkpoint::Recorder;
use super::trace::{Dtype, Tape, Tid, Trace};
use super::ModelError;

/// Architecture of a [`Unet3d`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UnetConfig {
    /// Channels of the latent being denoised.
    pub latent_channels: i64,
    /// Channels of the condition latent concatenated to it.
    pub cond_channels: i64,
    /// Channels of the first level.
    pub model_channels: i64,
    /// Channel multiplier per level.
    pub channel_mult: Vec<i64>,
    /// ResBlocks per level on the way down (one more on the way up).
    pub num_res_blocks: usize,
    /// Self-attention at the lowest level and in the middle.
    pub attention: bool,
    /// Attention heads.
    pub attention_heads: i64,
    /// Dropout in ResBlocks.
    pub dropout: f64,
    /// Z is halved by a downsample only while it is at least this large.
    pub min_z_to_halve: i64,
    /// Inject the condition at every level of the down path, not only at
    /// the input (multi-scale conditioning; adds `cond_proj.{level}`).
    pub cond_every_level: bool,
}

impl Default for UnetConfig {
    /// model_channels 32, channel_mult (1, 2, 3), one ResBlock per level, no attention.
    fn default() -> Self {
        UnetConfig {
            latent_channels: 4,
            cond_channels: 4,
            model_channels: 32,
            channel_mult: vec![1, 2, 3],
            num_res_blocks: 1,
            attention: false,
            attention_heads: 4,
            dropout: 0.0,
            min_z_to_halve: 8,
            cond_every_level: false,
        }
    }
}

impl UnetConfig {
    /// Refuses settings that cannot build.
    pub fn validate(&self) -> Result<(), ModelError> {
        let err = |m: String| Err(ModelError::Config(m));
        if self.latent_channels <= 0 || self.cond_channels < 0 || self.model_channels <= 0 {
            return err("latent_channels and model_channels must be > 0, cond_channels >= 0".into());
        }
        if self.channel_mult.is_empty() || self.channel_mult.iter().any(|&m| m <= 0) {
            return err(format!("channel_mult {:?} needs >= 1 positive entries", self.channel_mult));
        }
        if self.num_res_blocks == 0 {
            return err("num_res_blocks must be >= 1".into());
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return err(format!("dropout must lie in [0, 1), got {}", self.dropout));
        }
        let last = self.model_channels * self.channel_mult[self.channel_mult.len() - 1];
        if self.attention && (self.attention_heads <= 0 || last % self.attention_heads != 0) {
            return err(format!("attention_heads {} must divide {last}", self.attention_heads));
        }
        if self.min_z_to_halve < 2 {
            return err("min_z_to_halve must be >= 2".into());
        }
        if self.cond_every_level && self.cond_channels == 0 {
            return err("cond_every_level needs cond_channels > 0".into());
        }
        Ok(())
    }

    fn emb_channels(&self) -> i64 {
        4 * self.model_channels
    }
}

/// Sinusoidal embedding of a `(B,)` noise level into `(B, dim)`.
pub fn sinusoidal(c_noise: &Tensor, dim: i64) -> Tensor {
    let half = dim / 2;
    let freqs = (Tensor::arange(half, (Kind::Float, c_noise.device())) * (-(10000f64.ln()) / half as f64)).exp();
    let args = c_noise.to_kind(Kind::Float).unsqueeze(1) * freqs.unsqueeze(0);
    Tensor::cat(&[args.cos(), args.sin()], 1)
}

/// A 1x1x1 convolution `cin -> cout` with zero weight and bias.
fn zero_conv(vs: nn::Path, cin: i64, cout: i64) -> Conv3d {
    let mut conv = Conv3d::new(vs, cin, cout, 1, [1; 3]);
    tch::no_grad(|| {
        let _ = conv.weight.zero_();
        let _ = conv.bias.zero_();
    });
    conv
}

/// ResBlock with the noise embedding added after the first convolution.
#[derive(Debug)]
struct EmbResBlock {
    norm1: Norm,
    conv1: Conv3d,
    emb: Linear,
    norm2: Norm,
    conv2: Conv3d,
    skip: Option<Conv3d>,
    dropout: f64,
}

impl EmbResBlock {
    fn new(vs: nn::Path, cin: i64, cout: i64, emb: i64, dropout: f64) -> Self {
        EmbResBlock {
            norm1: Norm::new(&vs / "norm1", cin),
            conv1: Conv3d::new(&vs / "conv1", cin, cout, 3, [1; 3]),
            emb: Linear::new(&vs / "emb_proj", emb, cout),
            norm2: Norm::new(&vs / "norm2", cout),
            conv2: Conv3d::new(&vs / "conv2", cout, cout, 3, [1; 3]),
            skip: (cin != cout).then(|| Conv3d::new(&vs / "skip", cin, cout, 1, [1; 3])),
            dropout,
        }
    }

    fn forward(&self, x: &Tensor, emb: &Tensor, train: bool) -> Tensor {
        let h = x.apply(&self.norm1).silu().apply(&self.conv1);
        let e = emb.silu().apply(&self.emb).to_kind(h.kind());
        let h = h + e.view([e.size()[0], e.size()[1], 1, 1, 1]);
        let h = h.apply(&self.norm2).silu().dropout(self.dropout, train).apply(&self.conv2);
        match &self.skip {
            Some(s) => x.apply(s) + h,
            None => x + h,
        }
    }
}

impl EmbResBlock {
    fn trace(&self, t: &mut Tape, x: Tid) -> Tid {
        let h = self.norm1.trace(t, x);
        let h = t.unary("silu", h, true);
        let h = self.conv1.trace(t, h);
        let s = t.shape(h).to_vec();
        let (kind, cout) = (t.dtype(h), s[1]);
        let e = t.op("emb_proj", &[], &[s[0], cout, 1, 1, 1], kind, &[], true, (0, 0));
        let h = t.add(h, e);
        trace_tail(t, x, h, (&self.norm2, &self.conv2, self.skip.as_ref()), self.dropout)
    }
}

#[derive(Debug)]
enum Layer {
    Res(EmbResBlock),
    Attn(SelfAttention3d),
    Down(Conv3d),
    Up(Conv3d),
}

/// The latent denoiser network.
#[derive(Debug)]
pub struct Unet3d {
    config: UnetConfig,
    time1: Linear,
    time2: Linear,
    conv_in: Conv3d,
    down: Vec<(Layer, bool)>,
    mid: Vec<Layer>,
    up: Vec<(Layer, bool)>,
    /// `(index in down, projection)`: the condition added before that layer.
    cond_proj: Vec<(usize, Conv3d)>,
    norm_out: Norm,
    conv_out: Conv3d,
}

impl Unet3d {
    /// Validates and builds the network under `vs`.
    pub fn new(vs: &nn::Path, config: &UnetConfig) -> Result<Unet3d, ModelError> {
        config.validate()?;
        let (mc, emb, dp) = (config.model_channels, config.emb_channels(), config.dropout);
        let levels = config.channel_mult.len();
        let mut down = Vec::new();
        let mut skips = vec![mc];
        let mut c = mc;
        let mut cond_at = Vec::new();
        for (i, &m) in config.channel_mult.iter().enumerate() {
            let out = mc * m;
            let p = vs / "down" / i;
            cond_at.push((down.len(), c));
            for j in 0..config.num_res_blocks {
                down.push((Layer::Res(EmbResBlock::new(&p / "res" / j, c, out, emb, dp)), true));
                c = out;
                skips.push(c);
            }
            if config.attention && i == levels - 1 {
                down.push((Layer::Attn(SelfAttention3d::new(&p / "attn", c, config.attention_heads)), false));
            }
            if i != levels - 1 {
                // Stride (2,2,2) or (1,2,2) is chosen by Z at run time (the weights do not depend on it).
                down.push((Layer::Down(Conv3d::new(&p / "downsample", c, c, 3, [2, 2, 2])), true));
                skips.push(c);
            }
        }
        let mut mid = vec![Layer::Res(EmbResBlock::new(vs / "mid" / "res0", c, c, emb, dp))];
        if config.attention {
            mid.push(Layer::Attn(SelfAttention3d::new(vs / "mid" / "attn", c, config.attention_heads)));
        }
        mid.push(Layer::Res(EmbResBlock::new(vs / "mid" / "res1", c, c, emb, dp)));
        let mut up = Vec::new();
        for (i, &m) in config.channel_mult.iter().enumerate().rev() {
            let out = mc * m;
            let p = vs / "up" / (levels - 1 - i);
            for j in 0..=config.num_res_blocks {
                let skip = skips.pop().expect("one skip per down output");
                up.push((Layer::Res(EmbResBlock::new(&p / "res" / j, c + skip, out, emb, dp)), true));
                c = out;
            }
            if config.attention && i == levels - 1 {
                up.push((Layer::Attn(SelfAttention3d::new(&p / "attn", c, config.attention_heads)), false));
            }
            if i != 0 {
                up.push((Layer::Up(Conv3d::new(&p / "upsample", c, c, 3, [1; 3])), false));
            }
        }
        // built last so the other variables draw what the plain network draws
        let cond_proj = match config.cond_every_level {
            true => cond_at
                .into_iter()
                .enumerate()
                .map(|(i, (at, c))| (at, zero_conv(vs / "cond_proj" / i, config.cond_channels, c)))
                .collect(),
            false => Vec::new(),
        };
        Ok(Unet3d {
            config: config.clone(),
            cond_proj,
            time1: Linear::new(vs / "time_mlp" / "0", mc, emb),
            time2: Linear::new(vs / "time_mlp" / "2", emb, emb),
            conv_in: Conv3d::new(vs / "conv_in", config.latent_channels + config.cond_channels, mc, 3, [1; 3]),
            down,
            mid,
            up,
            norm_out: Norm::new(vs / "norm_out", c),
            conv_out: Conv3d::new(vs / "conv_out", c, config.latent_channels, 3, [1; 3]),
        })
    }

    /// The architecture.
    pub fn config(&self) -> &UnetConfig {
        &self.config
    }

    /// `F(x, c_noise)`: `x` is `(B, latent + cond, D, H, W)`, `c_noise` `(B,)`.
    pub fn forward(&self, x: &Tensor, c_noise: &Tensor, train: bool) -> Tensor {
        self.run(x, c_noise, train, None)
    }

    /// Training forward with every ResBlock checkpointed into `rec`; call
    /// `rec.backward(loss)` instead of `loss.backward()`.
    pub fn forward_checkpointed<'a>(&'a self, x: &Tensor, c_noise: &Tensor, rec: &mut Recorder<'a>) -> Tensor {
        self.run(x, c_noise, true, Some(rec))
    }

    fn run<'a>(&'a self, x: &Tensor, c_noise: &Tensor, train: bool, mut rec: Option<&mut Recorder<'a>>) -> Tensor {
        let emb = sinusoidal(c_noise, self.config.model_channels).apply(&self.time1).silu().apply(&self.time2);
        let cond = x.narrow(1, self.config.latent_channels, self.config.cond_channels);
        let mut h = x.apply(&self.conv_in);
        let mut skips = vec![h.shallow_clone()];
        for (j, (layer, keep)) in self.down.iter().enumerate() {
            if let Some((_, proj)) = self.cond_proj.iter().find(|(at, _)| *at == j) {
                let s = h.size();
                let pooled = cond.adaptive_avg_pool3d([s[2], s[3], s[4]]);
                h = &h + pooled.apply(proj).to_kind(h.kind());
            }
            h = self.layer(layer, &h, &emb, None, train, rec.as_deref_mut());
            if *keep {
                skips.push(h.shallow_clone());
            }
        }
        for layer in &self.mid {
            h = self.layer(layer, &h, &emb, None, train, rec.as_deref_mut());
        }
        for (layer, takes_skip) in &self.up {
            if *takes_skip {
                let s = skips.pop().expect("skip");
                h = Tensor::cat(&[h, s], 1);
                h = self.layer(layer, &h, &emb, None, train, rec.as_deref_mut());
            } else {
                let target = skips.last().map(|s| s.size());
                h = self.layer(layer, &h, &emb, target, train, rec.as_deref_mut());
            }
        }
        h.apply(&self.norm_out).silu().apply(&self.conv_out)
    }

    /// Records one EDM training step ([`crate::diffusion::EdmConfig::loss`]
    /// and its backward) for clean latents of shape `latent` on `t`; with
    /// `checkpointed`, every ResBlock is recomputed and the graph is retained
    /// (as [`Recorder`] does).
    pub fn trace_step(&self, t: &mut Tape, latent: [i64; 5], checkpointed: bool) {
        let c = &self.config;
        let y = t.input(&latent, Dtype::F32);
        let noise = t.input(&latent, Dtype::F32);
        let cond = t.input(&[latent[0], c.cond_channels, latent[2], latent[3], latent[4]], Dtype::F32);
        t.retain_graph(checkpointed);
        t.set_scope("edm");
        let scaled = t.unary("scale", noise, false);
        let noisy = t.add(y, scaled);
        let x_in = t.unary("scale", noisy, false);
        let x = t.cat(x_in, cond);
        t.set_scope("conv_in");
        let mut h = self.conv_in.trace(t, x);
        let mut skips = vec![h];
        let trace_layer = |t: &mut Tape, layer: &Layer, h: Tid, size: Option<Vec<i64>>| match layer {
            Layer::Res(r) => {
                t.segment(checkpointed);
                let out = r.trace(t, h);
                t.segment(false);
                out
            }
            Layer::Attn(a) => a.trace(t, h),
            Layer::Down(conv) => {
                let sz = if t.shape(h)[2] >= c.min_z_to_halve { 2 } else { 1 };
                t.conv3d(h, conv.weight.size()[0], 3, [sz, 2, 2])
            }
            Layer::Up(conv) => {
                let s = size.expect("upsample target size");
                let u = t.upsample(h, [s[2], s[3], s[4]]);
                conv.trace(t, u)
            }
        };
        for (i, (layer, keep)) in self.down.iter().enumerate() {
            t.set_scope(&format!("down.{i}"));
            if let Some((_, proj)) = self.cond_proj.iter().find(|(at, _)| *at == i) {
                let s = t.shape(h).to_vec();
                let pooled = t.op(
                    "cond_pool",
                    &[cond],
                    &[s[0], c.cond_channels, s[2], s[3], s[4]],
                    Dtype::F32,
                    &[],
                    false,
                    (0, 0),
                );
                let p = t.conv3d(pooled, proj.weight.size()[0], 1, [1; 3]);
                let p = t.cast(p, t.dtype(h));
                h = t.add(h, p);
            }
            h = trace_layer(t, layer, h, None);
            if *keep {
                skips.push(h);
            }
        }
        for (i, layer) in self.mid.iter().enumerate() {
            t.set_scope(&format!("mid.{i}"));
            h = trace_layer(t, layer, h, None);
        }
        for (i, (layer, takes_skip)) in self.up.iter().enumerate() {
            t.set_scope(&format!("up.{i}"));
            if *takes_skip {
                let s = skips.pop().expect("skip");
                h = t.cat(h, s);
                h = trace_layer(t, layer, h, None);
            } else {
                let target = skips.last().map(|&s| t.shape(s).to_vec());
                h = trace_layer(t, layer, h, target);
            }
        }
        t.set_scope("out");
        let h = self.norm_out.trace(t, h);
        let h = t.unary("silu", h, true);
        let f = self.conv_out.trace(t, h);
        t.set_scope("edm");
        let f = t.cast(f, Dtype::F32);
        let f = t.unary("scale", f, false);
        let skip = t.unary("scale", noisy, false);
        let d = t.add(skip, f);
        let diff = t.add(d, y);
        let sq = t.unary("square", diff, true);
        let w = t.unary("weight", sq, false);
        t.op("mean", &[w], &[], Dtype::F32, &[], false, (0, 0));
    }

    fn layer<'a>(
        &'a self,
        layer: &'a Layer,
        h: &Tensor,
        emb: &Tensor,
        size: Option<Vec<i64>>,
        train: bool,
        rec: Option<&mut Recorder<'a>>,
    ) -> Tensor {
        match layer {
            Layer::Res(r) => match rec {
                Some(rec) => {
                    let e = emb.shallow_clone();
                    rec.checkpoint(move |x| r.forward(x, &e, true), h)
                }
                None => r.forward(h, emb, train),
            },
            Layer::Attn(a) => a.forward_t(h, train),
            Layer::Down(conv) => {
                let sz = if h.size()[2] >= self.config.min_z_to_halve { 2 } else { 1 };
                super::blocks::conv3d(h, &conv.weight, Some(&conv.bias), [sz, 2, 2], 1)
            }
            Layer::Up(conv) => {
                let s = size.expect("upsample target size");
                h.upsample_trilinear3d([s[2], s[3], s[4]], false, None, None, None).apply(conv)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn small(cond_every_level: bool) -> UnetConfig {
        UnetConfig { model_channels: 8, channel_mult: vec![1, 2], cond_every_level, ..Default::default() }
    }

    #[test]
    fn the_condition_at_every_level_starts_as_the_plain_network_and_learns_from_it() {
        tch::manual_seed(3);
        let plain_vs = nn::VarStore::new(Device::Cpu);
        let plain = Unet3d::new(&plain_vs.root(), &small(false)).unwrap();
        tch::manual_seed(3);
        let vs = nn::VarStore::new(Device::Cpu);
        let multi = Unet3d::new(&vs.root(), &small(true)).unwrap();
        let (ours, theirs) = (vs.variables(), plain_vs.variables());
        let extra: Vec<_> = ours.keys().filter(|k| !theirs.contains_key(*k)).cloned().collect();
        assert_eq!(extra.len(), 4, "{extra:?}");
        assert_eq!(ours["cond_proj.0.weight"].size(), [8, 4, 1, 1, 1]);
        assert_eq!(ours["cond_proj.1.weight"].size(), [8, 4, 1, 1, 1], "the level's input channels");
        for (k, v) in &theirs {
            assert!(ours[k].equal(v), "{k} differs");
        }
        let x = Tensor::randn([2, 8, 4, 8, 8], (Kind::Float, Device::Cpu));
        let c_noise = Tensor::from_slice(&[0.3f32, -1.0]);
        let out = multi.forward(&x, &c_noise, false);
        assert!(out.equal(&plain.forward(&x, &c_noise, false)), "zero projections change nothing");
        // the loss reaches the projections of both levels
        out.square().sum(Kind::Float).backward();
        for i in 0..2 {
            let g = ours[&format!("cond_proj.{i}.weight")].grad().abs().sum(Kind::Float).double_value(&[]);
            assert!(g > 1e-6, "level {i}: no gradient ({g})");
        }
        // once learnt, the deep level's condition changes the output, and only through the condition channels
        tch::no_grad(|| {
            ours["cond_proj.1.weight"]
                .shallow_clone()
                .copy_(&Tensor::randn([8, 4, 1, 1, 1], (Kind::Float, Device::Cpu)))
        });
        let moved = multi.forward(&x, &c_noise, false);
        assert!((&moved - &out).abs().max().double_value(&[]) > 1e-4);
        let x0 = Tensor::cat(&[x.narrow(1, 0, 4), Tensor::zeros([2, 4, 4, 8, 8], (Kind::Float, Device::Cpu))], 1);
        let (a, b) = (multi.forward(&x0, &c_noise, false), plain.forward(&x0, &c_noise, false));
        assert!((a - b).abs().max().double_value(&[]) < 1e-6, "a zero condition adds only the (zero) bias");
    }

    #[test]
    fn the_condition_at_every_level_needs_condition_channels() {
        let cfg = UnetConfig { cond_channels: 0, ..small(true) };
        assert!(matches!(cfg.validate(), Err(ModelError::Config(m)) if m.contains("cond_every_level")));
    }
}
