//! 3D building blocks shared by the VAE and the latent UNet. Variable paths
//! equal the reference PyTorch `state_dict` keys (`norm1`, `conv1`, ...).

use tch::nn::{self, ModuleT};
use tch::{Device, Kind, Tensor};

use super::init::uniform_var;
use super::trace::{Dtype, Tape, Tid, Trace};

/// `[D, H, W]` triple.
pub type Dims3 = [i64; 3];

/// Strides (encoder) or scales (decoder) of level `i`: `(1,2,2)`, then
/// `(2,2,2)`, then `(1,2,2)` for every further level (order D, H, W).
pub fn level_stride(i: usize) -> Dims3 {
    if i == 1 {
        [2, 2, 2]
    } else {
        [1, 2, 2]
    }
}

/// Groups of a GroupNorm over `c` channels: the largest divisor of `c`
/// that is <= 32. The reference uses `min(32, c)`, which crashes when it
/// does not divide `c` (48, 72 in its "lightweight" config); for every `c`
/// where the reference works the two agree, and no parameter count changes.
pub fn norm_groups(c: i64) -> i64 {
    (1..=c.min(32)).rev().find(|g| c % g == 0).unwrap_or(1)
}

/// A 3D convolution with per-dimension stride; PyTorch's default init
/// (uniform in `+-1/sqrt(fan_in)` for weight and bias).
#[derive(Debug)]
pub struct Conv3d {
    /// `(out, in, k, k, k)`.
    pub weight: Tensor,
    /// `(out,)`.
    pub bias: Tensor,
    stride: Dims3,
    padding: i64,
}

impl Conv3d {
    /// `k`x`k`x`k` convolution `cin -> cout`, padding `k / 2`.
    pub fn new(vs: nn::Path, cin: i64, cout: i64, k: i64, stride: Dims3) -> Conv3d {
        let bound = 1.0 / ((cin * k * k * k) as f64).sqrt();
        Conv3d {
            weight: uniform_var(&vs, "weight", &[cout, cin, k, k, k], bound),
            bias: uniform_var(&vs, "bias", &[cout], bound),
            stride,
            padding: k / 2,
        }
    }
}

impl nn::Module for Conv3d {
    fn forward(&self, x: &Tensor) -> Tensor {
        conv3d(x, &self.weight, Some(&self.bias), self.stride, self.padding)
    }
}

/// Whether libtorch would run a float32 CPU convolution of input shape `s`
/// in its unfolding `slow_conv3d` rather than oneDNN: batch 1 and
/// `C * D * H <= 20480` (libtorch 2.11's `use_mkldnn` rule for kernels up
/// to 3; [`crate::model::trace`] plans each path's bytes).
pub fn unfolds_on_cpu(s: &[i64]) -> bool {
    s.len() == 5 && s[0] == 1 && s[1] * s[2] * s[3] <= 20480
}

/// `x.conv3d(weight, bias, stride, padding)` (dilation 1, one group), except
/// that outside autograd (`tch::no_grad`: sampling, evaluation, latents,
/// validation) a float32 CPU input libtorch would unfold
/// ([`unfolds_on_cpu`]; all but pointwise ones, outside CPU autocast) runs
/// in oneDNN as larger inputs do: the same convolution, measured 3-11x faster per
/// call on a 2-core AVX2 CPU at the coarse grid (a unit test here checks it
/// against `conv3d`). Training keeps libtorch's choice: oneDNN's batch-1
/// backward held twice the memory the planner allows for it.
pub fn conv3d(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>, stride: Dims3, padding: i64) -> Tensor {
    let pointwise = weight.size()[2..].iter().all(|&k| k == 1) && stride == [1; 3];
    let to_onednn = x.device() == Device::Cpu
        && x.kind() == Kind::Float
        && weight.kind() == Kind::Float
        && !pointwise
        && unfolds_on_cpu(&x.size())
        && !crate::sys::shim::grad_enabled()
        && !crate::sys::shim::cpu_autocast_enabled();
    if to_onednn {
        x.mkldnn_convolution(weight, bias, [padding; 3], stride, [1; 3], 1)
    } else {
        x.conv3d(weight, bias, stride, [padding; 3], [1; 3], 1)
    }
}

/// A linear layer `cin -> cout` (`weight` `(cout, cin)`, `bias`) with
/// PyTorch's default init (uniform in `+-1/sqrt(cin)`), seeded.
#[derive(Debug)]
pub struct Linear {
    weight: Tensor,
    bias: Tensor,
}

impl Linear {
    /// The layer under `vs`.
    pub fn new(vs: nn::Path, cin: i64, cout: i64) -> Linear {
        let bound = 1.0 / (cin as f64).sqrt();
        Linear {
            weight: uniform_var(&vs, "weight", &[cout, cin], bound),
            bias: uniform_var(&vs, "bias", &[cout], bound),
        }
    }
}

impl nn::Module for Linear {
    fn forward(&self, x: &Tensor) -> Tensor {
        x.linear(&self.weight, Some(&self.bias))
    }
}

/// GroupNorm (eps 1e-5, affine) computed in float32 and cast back to the
/// input dtype, so it stays exact under mixed precision.
#[derive(Debug)]
pub struct Norm {
    weight: Tensor,
    bias: Tensor,
    groups: i64,
}

impl Norm {
    /// Norm over `c` channels with [`norm_groups`] groups.
    pub fn new(vs: nn::Path, c: i64) -> Norm {
        Norm { weight: vs.ones("weight", &[c]), bias: vs.zeros("bias", &[c]), groups: norm_groups(c) }
    }
}

impl nn::Module for Norm {
    fn forward(&self, x: &Tensor) -> Tensor {
        let y = x.to_kind(Kind::Float).group_norm(
            self.groups,
            Some(&self.weight.to_kind(Kind::Float)),
            Some(&self.bias.to_kind(Kind::Float)),
            1e-5,
            true,
        );
        y.to_kind(x.kind())
    }
}

/// `h = conv1(silu(norm1(x)))`, `h = conv2(dropout(silu(norm2(h))))`,
/// `skip(x) + h`, the skip a 1x1x1 conv when channels change.
#[derive(Debug)]
pub struct ResBlock3d {
    norm1: Norm,
    conv1: Conv3d,
    norm2: Norm,
    conv2: Conv3d,
    skip: Option<Conv3d>,
    dropout: f64,
}

impl ResBlock3d {
    /// A block `cin -> cout`.
    pub fn new(vs: nn::Path, cin: i64, cout: i64, dropout: f64) -> ResBlock3d {
        ResBlock3d {
            norm1: Norm::new(&vs / "norm1", cin),
            conv1: Conv3d::new(&vs / "conv1", cin, cout, 3, [1; 3]),
            norm2: Norm::new(&vs / "norm2", cout),
            conv2: Conv3d::new(&vs / "conv2", cout, cout, 3, [1; 3]),
            skip: (cin != cout).then(|| Conv3d::new(&vs / "skip", cin, cout, 1, [1; 3])),
            dropout,
        }
    }
}

impl ModuleT for ResBlock3d {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        // one assignment per op: each intermediate is dropped once the next
        // exists (a method chain would keep every temporary to the end of
        // the statement, one activation more than needed without gradients)
        let mut h = x.apply(&self.norm1);
        h = h.silu();
        h = h.apply(&self.conv1);
        h = h.apply(&self.norm2);
        h = h.silu();
        h = h.dropout(self.dropout, train);
        h = h.apply(&self.conv2);
        match &self.skip {
            Some(s) => x.apply(s) + h,
            None => x + h,
        }
    }
}

/// One strided 3x3x3 convolution (`conv`).
#[derive(Debug)]
pub struct Downsample3d {
    conv: Conv3d,
}

impl Downsample3d {
    /// Downsample `c` channels by `stride`.
    pub fn new(vs: nn::Path, c: i64, stride: Dims3) -> Downsample3d {
        Downsample3d { conv: Conv3d::new(&vs / "conv", c, c, 3, stride) }
    }
}

impl ModuleT for Downsample3d {
    fn forward_t(&self, x: &Tensor, _train: bool) -> Tensor {
        x.apply(&self.conv)
    }
}

/// Trilinear interpolation by `scale` (align_corners false), then a 3x3x3 conv.
#[derive(Debug)]
pub struct Upsample3d {
    conv: Conv3d,
    scale: Dims3,
}

impl Upsample3d {
    /// Upsample `c` channels by `scale`.
    pub fn new(vs: nn::Path, c: i64, scale: Dims3) -> Upsample3d {
        Upsample3d { conv: Conv3d::new(&vs / "conv", c, c, 3, [1; 3]), scale }
    }
}

impl ModuleT for Upsample3d {
    fn forward_t(&self, x: &Tensor, _train: bool) -> Tensor {
        let s = x.size();
        let out = [s[2] * self.scale[0], s[3] * self.scale[1], s[4] * self.scale[2]];
        let [d, h, w] = self.scale.map(|v| Some(v as f64));
        x.upsample_trilinear3d(out, false, d, h, w).apply(&self.conv)
    }
}

/// Multi-head self-attention over all `D*H*W` positions, residual; the
/// softmax runs in float32.
#[derive(Debug)]
pub struct SelfAttention3d {
    norm: Norm,
    qkv: Conv3d,
    proj: Conv3d,
    heads: i64,
}

impl SelfAttention3d {
    /// Attention over `c` channels with `heads` heads.
    pub fn new(vs: nn::Path, c: i64, heads: i64) -> SelfAttention3d {
        SelfAttention3d {
            norm: Norm::new(&vs / "norm", c),
            qkv: Conv3d::new(&vs / "qkv", c, 3 * c, 1, [1; 3]),
            proj: Conv3d::new(&vs / "proj", c, c, 1, [1; 3]),
            heads,
        }
    }
}

impl ModuleT for SelfAttention3d {
    fn forward_t(&self, x: &Tensor, _train: bool) -> Tensor {
        let s = x.size();
        let (b, c) = (s[0], s[1]);
        let n = s[2] * s[3] * s[4];
        let dh = c / self.heads;
        // Op by op, each n x n matrix dropped once the next exists: a
        // method chain would keep every temporary to the end of the statement.
        let h = x.apply(&self.norm);
        let qkv = h.apply(&self.qkv).reshape([b, 3, self.heads, dh, n]);
        drop(h);
        let (q, k, v) = (qkv.select(1, 0), qkv.select(1, 1), qkv.select(1, 2));
        let mut scores = q.transpose(-1, -2).matmul(&k);
        // in place: the matmul's backward needs q and k, not its output
        scores *= (dh as f64).powf(-0.5);
        let attn = scores.softmax(-1, Kind::Float);
        drop(scores);
        let attn = attn.to_kind(v.kind());
        let out = v.matmul(&attn.transpose(-1, -2));
        drop(attn);
        let out = out.reshape([b, c, s[2], s[3], s[4]]).apply(&self.proj);
        x + out
    }
}

impl Trace for Conv3d {
    fn trace(&self, t: &mut Tape, x: Tid) -> Tid {
        let w = self.weight.size();
        t.conv3d(x, w[0], w[2], self.stride)
    }
}

impl Trace for Norm {
    fn trace(&self, t: &mut Tape, x: Tid) -> Tid {
        t.group_norm(x)
    }
}

impl Trace for ResBlock3d {
    fn trace(&self, t: &mut Tape, x: Tid) -> Tid {
        let h = self.norm1.trace(t, x);
        let h = t.unary("silu", h, true);
        let h = self.conv1.trace(t, h);
        trace_tail(t, x, h, (&self.norm2, &self.conv2, self.skip.as_ref()), self.dropout)
    }
}

/// The second half of a ResBlock: `conv2(dropout(silu(norm2(h))))` plus the
/// skip path of `x`.
pub(crate) fn trace_tail(t: &mut Tape, x: Tid, h: Tid, layers: (&Norm, &Conv3d, Option<&Conv3d>), p: f64) -> Tid {
    let (norm2, conv2, skip) = layers;
    let h = norm2.trace(t, h);
    let h = t.unary("silu", h, true);
    let h = trace_dropout(t, h, p);
    let h = conv2.trace(t, h);
    let skip = match skip {
        Some(s) => s.trace(t, x),
        None => x,
    };
    t.add(skip, h)
}

/// Dropout in training saves its mask; at p = 0 it is the identity.
fn trace_dropout(t: &mut Tape, x: Tid, p: f64) -> Tid {
    if p == 0.0 {
        return x;
    }
    let (shape, dtype) = (t.shape(x).to_vec(), t.dtype(x));
    let mask = t.op("dropout.mask", &[], &shape, dtype, &[], false, (0, 0));
    t.op("dropout", &[x, mask], &shape, dtype, &[mask], false, (0, 0))
}

impl Trace for Downsample3d {
    fn trace(&self, t: &mut Tape, x: Tid) -> Tid {
        self.conv.trace(t, x)
    }
}

impl Trace for Upsample3d {
    fn trace(&self, t: &mut Tape, x: Tid) -> Tid {
        let s = t.shape(x).to_vec();
        let h = t.upsample(x, [s[2] * self.scale[0], s[3] * self.scale[1], s[4] * self.scale[2]]);
        self.conv.trace(t, h)
    }
}

impl Trace for SelfAttention3d {
    fn trace(&self, t: &mut Tape, x: Tid) -> Tid {
        let s = t.shape(x).to_vec();
        let (b, c, n) = (s[0], s[1], s[2] * s[3] * s[4]);
        let (heads, dh) = (self.heads, c / self.heads);
        let h = self.norm.trace(t, x);
        let qkv = self.qkv.trace(t, h);
        let (q, k, v) =
            (t.view(qkv, &[b, heads, dh, n]), t.view(qkv, &[b, heads, dh, n]), t.view(qkv, &[b, heads, dh, n]));
        let cd = t.compute_dtype();
        let scores = t.op("scores", &[q, k], &[b, heads, n, n], cd, &[q, k], false, (0, 0));
        let scores = t.unary("scale", scores, false);
        let scores = t.cast(scores, Dtype::F32);
        let attn = t.unary_saving_output("softmax", scores);
        let attn = t.cast(attn, cd);
        let out = t.op("attend", &[v, attn], &[b, heads, dh, n], cd, &[v, attn], false, (0, 0));
        let out = t.view(out, &s);
        let out = self.proj.trace(t, out);
        t.add(x, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_are_the_largest_divisor_up_to_32() {
        assert_eq!(norm_groups(16), 16);
        assert_eq!(norm_groups(64), 32);
        assert_eq!(norm_groups(24), 24);
        assert_eq!(norm_groups(48), 24); // min(32, 48) = 32 does not divide 48
        assert_eq!(norm_groups(72), 24);
        assert_eq!(norm_groups(7), 7);
        for c in 1..200 {
            let g = norm_groups(c);
            assert!(c % g == 0 && g <= 32);
            if c % 32 == 0 || c <= 32 {
                assert_eq!(g, c.min(32), "agrees with the reference where it works");
            }
        }
    }

    #[test]
    fn small_cpu_convolutions_equal_libtorchs_conv3d() {
        // batch-1 f32 inputs libtorch unfolds (slow_conv3d), kernels 3 and
        // strides 1 and (1, 2, 2) as the models use them: under no_grad the
        // oneDNN route must agree with libtorch's own conv3d
        tch::manual_seed(3);
        for (shape, stride) in [([1, 8, 5, 13, 7], [1, 1, 1]), ([1, 6, 4, 10, 6], [1, 2, 2])] {
            assert!(unfolds_on_cpu(&shape));
            let x = Tensor::randn(shape, (Kind::Float, Device::Cpu));
            let w = Tensor::randn([5, shape[1], 3, 3, 3], (Kind::Float, Device::Cpu)).set_requires_grad(true);
            let b = Tensor::randn([5], (Kind::Float, Device::Cpu)).set_requires_grad(true);
            let ours = tch::no_grad(|| conv3d(&x, &w, Some(&b), stride, 1));
            let theirs = tch::no_grad(|| x.conv3d(&w, Some(&b), stride, [1; 3], [1; 3], 1));
            let rel = (&ours - &theirs).abs().max().double_value(&[]) / theirs.abs().max().double_value(&[]);
            assert_eq!(ours.size(), theirs.size());
            assert!(rel < 1e-5, "forward {rel}");
            // with autograd on it is libtorch's op itself: equal to the bit, and differentiable
            let trained = conv3d(&x, &w, Some(&b), stride, 1);
            assert!(trained.requires_grad());
            assert!(trained.equal(&x.conv3d(&w, Some(&b), stride, [1; 3], [1; 3], 1)));
        }
        assert!(crate::sys::shim::grad_enabled() && !tch::no_grad(crate::sys::shim::grad_enabled));
        // the rule's edge: C * D * H = 20480 unfolds, one row more does not, nor batch 2
        assert!(unfolds_on_cpu(&[1, 32, 8, 80, 32]) && !unfolds_on_cpu(&[1, 32, 8, 81, 32]));
        assert!(!unfolds_on_cpu(&[2, 8, 5, 13, 7]));
    }
}
