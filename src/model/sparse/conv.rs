//! Sparse 3D convolutions as gather -> GEMM -> scatter-add over libtorch
//! tensors (autograd, autocast and CUDA come from libtorch): submanifold,
//! down-sampling with kernel = stride, and its transpose. Weights keep the
//! dense layouts (`conv3d`: `[C_out, C_in, kz, ky, kx]`; transposed:
//! `conv_transpose3d`'s `[C_in, C_out, kz, ky, kx]`), so a sparse layer and
//! the dense op it equals share their weights and their PyTorch keys.

use std::rc::Rc;

use tch::nn;
use tch::Tensor;

use super::coords::{Coords, Dims3};
use super::kmap::{JoinedPairs, KernelMap, MapKind};
use super::SparseTensor;
use crate::model::init::uniform_var;
use crate::model::ModelError;

/// What a [`SparseConv3d`] does to the sites.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConvKind {
    /// `k`^3 kernel (odd), output sites = input sites.
    Submanifold(i64),
    /// Kernel = stride `s`, output sites `floor(p / s)`.
    Down(Dims3),
    /// Transposed, kernel = scale `s`, onto the children the caller names.
    Up(Dims3),
}

/// A sparse convolution with a bias, PyTorch's default init (uniform in
/// `+-1/sqrt(C_in * kernel volume)` for weight and bias).
#[derive(Debug)]
pub struct SparseConv3d {
    /// Dense-layout weight (see the module docs).
    pub weight: Tensor,
    /// `(C_out,)`.
    pub bias: Tensor,
    kind: ConvKind,
}

impl SparseConv3d {
    /// A convolution `cin -> cout` of `kind` under `vs` (`weight`, `bias`).
    pub fn new(vs: nn::Path, cin: i64, cout: i64, kind: ConvKind) -> Result<SparseConv3d, ModelError> {
        let kernel = match kind {
            ConvKind::Submanifold(k) if k >= 1 && k % 2 == 1 => [k; 3],
            ConvKind::Down(s) | ConvKind::Up(s) if s.iter().all(|&v| v >= 1) => s,
            _ => {
                return Err(ModelError::Config(format!(
                    "sparse convolution {kind:?}: kernels must be odd, strides >= 1"
                )))
            }
        };
        let bound = 1.0 / ((cin * kernel.iter().product::<i64>()) as f64).sqrt();
        let shape = match kind {
            ConvKind::Up(_) => [cin, cout, kernel[0], kernel[1], kernel[2]],
            _ => [cout, cin, kernel[0], kernel[1], kernel[2]],
        };
        Ok(SparseConv3d {
            weight: uniform_var(&vs, "weight", &shape, bound),
            bias: uniform_var(&vs, "bias", &[cout], bound),
            kind,
        })
    }

    /// What the convolution does to the sites.
    pub fn kind(&self) -> ConvKind {
        self.kind
    }

    /// Submanifold or down-sampling convolution of `x` (an up-sampling one
    /// needs its output sites: [`SparseConv3d::up`]).
    pub fn forward(&self, x: &SparseTensor) -> Result<SparseTensor, ModelError> {
        let dev = x.feats.device();
        let (out, kind) = match self.kind {
            ConvKind::Submanifold(k) => (x.coords.clone(), MapKind::Submanifold { k }),
            ConvKind::Down(s) => (x.coords.down(s), MapKind::Down { s }),
            ConvKind::Up(_) => {
                return Err(ModelError::Config("an up-sampling convolution needs its output sites: call up()".into()))
            }
        };
        let map = out.kernel_map(kind, &x.coords, dev);
        Ok(SparseTensor { feats: self.apply(&x.feats, &map, out.len()), coords: out })
    }

    /// Transposed convolution of `x` onto `to`, a set one level finer by the
    /// layer's scale (the children of `x`'s sites, all of them from
    /// [`Coords::children`] or any subset, or the finer set `x` came from).
    /// A site of `to` whose parent is inactive gets the bias alone.
    pub fn up(&self, x: &SparseTensor, to: &Rc<Coords>) -> Result<SparseTensor, ModelError> {
        let ConvKind::Up(s) = self.kind else {
            return Err(ModelError::Config(format!("{:?} is no up-sampling convolution", self.kind)));
        };
        let (c, f) = (&x.coords, to);
        let rounds_up = (0..3).all(|a| (f.shape()[a] + s[a] - 1) / s[a] == c.shape()[a]);
        if c.batch() != f.batch() || !rounds_up {
            return Err(ModelError::Sites {
                sites: f.len(),
                batch: f.batch(),
                grid: f.shape(),
                rule: format!("is not one level finer by {s:?} than {c:?}"),
            });
        }
        let map = f.kernel_map(MapKind::Up { s }, c, x.feats.device());
        Ok(SparseTensor { feats: self.apply(&x.feats, &map, f.len()), coords: to.clone() })
    }

    /// `out[o] = sum over offsets of in[i] . W_d` for every pair, plus bias.
    fn apply(&self, x: &Tensor, map: &KernelMap, n_out: usize) -> Tensor {
        let [a, b, kz, ky, kx] = self.weight.size()[..] else { unreachable!("5-D weight") };
        // (K, C_in, C_out): the weight of each kernel position, ready for mm
        let w = match self.kind {
            ConvKind::Up(_) => self.weight.permute([2, 3, 4, 0, 1]),
            _ => self.weight.permute([2, 3, 4, 1, 0]),
        };
        let (cin, cout) = if matches!(self.kind, ConvKind::Up(_)) { (a, b) } else { (b, a) };
        let w = w.reshape([kz * ky * kx, cin, cout]);
        // the identity offset (submanifold centre) starts the sum without a scatter
        let mut out = map.identity.map(|pos| x.mm(&w.get(pos)));
        if let Some(JoinedPairs { ins, outs, spans }) = &map.joined {
            // one gather, a GEMM per offset on its slice, one scatter
            let gathered = x.index_select(0, ins);
            let prods: Vec<Tensor> =
                spans.iter().map(|&(pos, start, n)| gathered.narrow(0, start, n).mm(&w.get(pos))).collect();
            let prod = Tensor::cat(&prods, 0);
            drop(prods);
            let acc = out.get_or_insert_with(|| Tensor::zeros([n_out as i64, cout], (prod.kind(), prod.device())));
            let _ = acc.index_add_(0, outs, &prod);
        } else {
            for (pos, i, o) in map.offsets.iter().filter(|(p, _, _)| Some(*p) != map.identity) {
                let prod = x.index_select(0, i).mm(&w.get(*pos));
                let acc = out.get_or_insert_with(|| Tensor::zeros([n_out as i64, cout], (prod.kind(), prod.device())));
                // autograd's index_add keeps its source (the product) for the
                // backward: an accumulating index_put_ would not, but measured
                // 2x slower on a whole frame (benches/sparse_step.rs)
                let _ = acc.index_add_(0, o, &prod);
            }
        }
        let out = out.unwrap_or_else(|| Tensor::zeros([n_out as i64, cout], (x.kind(), x.device())));
        let bias = self.bias.to_kind(out.kind());
        out + bias
    }
}
