//! A memory model of one training step at the level of libtorch ops.
//!
//! Models record their forward pass into a [`Tape`] through [`Trace`]
//! (each block mirrors its own `forward_t`, op for op), so the planner walks
//! the model's real layer list instead of a table. Each op states what
//! autograd saves for backward and the scratch memory it needs; the
//! simulation then replays forward, checkpoint recomputation and backward,
//! tracking which tensors and gradients are alive at every moment:
//! - a tensor lives until its last forward use, or while an op that saved it
//!   still has to run its backward (all step long when the graph is retained);
//! - a checkpointed segment saves nothing in the first forward; its input and
//!   output stay alive until its backward, which recomputes it first;
//! - the gradient of a tensor lives from the backward of its last consumer to
//!   the backward of its producer.
//!
//! The op facts (which inputs each op saves, float32 CPU convolutions of
//! small inputs unfolding them `k^3` times, oneDNN's reorder buffers, norms
//! running in float32 under AMP) were measured on libtorch 2.11 with the
//! shim's counting allocator; `tests/memory.rs` holds the simulation to that
//! allocator for every preset. Not modelled: cuDNN's workspace on CUDA.

use std::ops::Range;

/// Where the step runs: it decides the convolution scratch memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// libtorch CPU kernels on a CPU with native bf16: float32 3D
    /// convolutions of small inputs unfold them in training (`vol2col`,
    /// `k^3 * C_in * N_out` floats; inference sends them to oneDNN, see
    /// [`super::blocks::conv3d`]); bfloat16 ones run in oneDNN.
    Cpu,
    /// libtorch CPU kernels on a CPU without native bf16: float32 as
    /// [`Backend::Cpu`], but bfloat16 convolutions fall back to
    /// `slow_conv3d` at every size, unfolding their input in bf16.
    CpuEmulatedBf16,
    /// CUDA with cuDNN (workspace bounded by the allocator, not modelled).
    Cuda,
}

impl Backend {
    /// The CPU backend of this machine (by its bf16 instructions).
    pub fn cpu() -> Backend {
        match crate::sys::cpu_bf16() {
            crate::sys::CpuBf16::Native => Backend::Cpu,
            crate::sys::CpuBf16::Emulated => Backend::CpuEmulatedBf16,
        }
    }

    /// A CPU backend (either kind).
    pub fn is_cpu(self) -> bool {
        self != Backend::Cuda
    }
}

/// Element type of a traced tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    /// float32.
    F32,
    /// float16 or bfloat16 (autocast's compute type).
    Half,
}

impl Dtype {
    /// Bytes per element.
    pub fn bytes(self) -> u64 {
        match self {
            Dtype::F32 => 4,
            Dtype::Half => 2,
        }
    }
}

/// Handle of a tensor recorded on a [`Tape`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tid(usize);

#[derive(Debug, Clone)]
struct TensorRec {
    shape: Vec<i64>,
    dtype: Dtype,
    /// Index of the storage (views share their base's).
    storage: usize,
    needs_grad: bool,
    producer: Option<usize>,
}

#[derive(Debug, Clone)]
struct Op {
    name: String,
    inputs: Vec<usize>,
    output: usize,
    saves: Vec<usize>,
    fwd_tmp: u64,
    bwd_tmp: u64,
    segment: usize,
}

#[derive(Debug, Clone)]
struct Storage {
    bytes: u64,
    /// Alive all step (held by the caller: the batch, the target).
    pinned: bool,
}

/// Records the ops of one forward pass; see the module docs.
#[derive(Debug, Clone)]
pub struct Tape {
    backend: Backend,
    amp: bool,
    tensors: Vec<TensorRec>,
    storages: Vec<Storage>,
    ops: Vec<Op>,
    /// Checkpointed flag of each segment; ops belong to the last one opened.
    segments: Vec<bool>,
    retain_graph: bool,
    scope: String,
    /// Bytes alive all step that are not tensors of the graph (autocast's
    /// half copies of the weights).
    constant: u64,
    /// Inference (`no_grad`): nothing is saved, there is no backward, and a
    /// tensor is freed after its last use.
    no_grad: bool,
}

/// A model part that can record its forward pass.
pub trait Trace {
    /// Records `forward_t(x)` on `tape` and returns the output.
    fn trace(&self, tape: &mut Tape, x: Tid) -> Tid;
}

fn numel(shape: &[i64]) -> u64 {
    shape.iter().map(|&d| d.max(0) as u64).product()
}

impl Tape {
    /// An empty tape for `backend`, with autocast on or off.
    pub fn new(backend: Backend, amp: bool) -> Tape {
        Tape {
            backend,
            amp,
            tensors: Vec::new(),
            storages: Vec::new(),
            ops: Vec::new(),
            segments: vec![false],
            retain_graph: false,
            scope: String::new(),
            constant: 0,
            no_grad: false,
        }
    }

    /// An empty tape of a float32 forward pass without gradients (a frozen
    /// model encoding or decoding): its [`Activations::peak`] is the
    /// forward peak.
    pub fn no_grad(backend: Backend) -> Tape {
        Tape { no_grad: true, ..Tape::new(backend, false) }
    }

    /// Backward keeps the graph until the step ends (the UNet's checkpointing
    /// replays through shared parts, so nothing is freed early).
    pub fn retain_graph(&mut self, on: bool) {
        self.retain_graph = on;
    }

    /// Compute dtype of autocast ops (convolutions, matmuls).
    pub fn compute_dtype(&self) -> Dtype {
        if self.amp {
            Dtype::Half
        } else {
            Dtype::F32
        }
    }

    /// Names later ops `scope.op` (a unit's state_dict prefix).
    pub fn set_scope(&mut self, scope: &str) {
        self.scope = scope.to_string();
    }

    /// Starts a segment of ops; a checkpointed one saves nothing until its
    /// recomputation in backward.
    pub fn segment(&mut self, checkpointed: bool) {
        self.segments.push(checkpointed);
    }

    /// A tensor given to the step (data: no gradient), held all step.
    pub fn input(&mut self, shape: &[i64], dtype: Dtype) -> Tid {
        let id = self.new_tensor(shape, dtype, false, None, None);
        self.storages[self.tensors[id].storage].pinned = true;
        Tid(id)
    }

    /// Shape of a traced tensor.
    pub fn shape(&self, t: Tid) -> &[i64] {
        &self.tensors[t.0].shape
    }

    /// Dtype of a traced tensor.
    pub fn dtype(&self, t: Tid) -> Dtype {
        self.tensors[t.0].dtype
    }

    /// Bytes of a traced tensor's storage.
    pub fn bytes(&self, t: Tid) -> u64 {
        self.storages[self.tensors[t.0].storage].bytes
    }

    fn new_tensor(
        &mut self,
        shape: &[i64],
        dtype: Dtype,
        grad: bool,
        producer: Option<usize>,
        base: Option<usize>,
    ) -> usize {
        let storage = base.unwrap_or_else(|| {
            self.storages.push(Storage { bytes: numel(shape) * dtype.bytes(), pinned: false });
            self.storages.len() - 1
        });
        self.tensors.push(TensorRec { shape: shape.to_vec(), dtype, storage, needs_grad: grad, producer });
        self.tensors.len() - 1
    }

    /// Records a generic op. `params`: the op has trainable weights (its
    /// output needs a gradient). Scratch bytes are alive only while the op runs.
    #[allow(clippy::too_many_arguments)]
    pub fn op(
        &mut self,
        name: &str,
        inputs: &[Tid],
        out_shape: &[i64],
        out_dtype: Dtype,
        saves: &[Tid],
        params: bool,
        (fwd_tmp, bwd_tmp): (u64, u64),
    ) -> Tid {
        let grad = !self.no_grad && (params || inputs.iter().any(|t| self.tensors[t.0].needs_grad));
        let (saves, bwd_tmp) = if self.no_grad { (&[][..], 0) } else { (saves, bwd_tmp) };
        let j = self.ops.len();
        let out = self.new_tensor(out_shape, out_dtype, grad, Some(j), None);
        self.ops.push(Op {
            name: if self.scope.is_empty() { name.to_string() } else { format!("{}.{name}", self.scope) },
            inputs: inputs.iter().map(|t| t.0).collect(),
            output: out,
            saves: saves.iter().map(|t| self.tensors[t.0].storage).collect(),
            fwd_tmp,
            bwd_tmp,
            segment: self.segments.len() - 1,
        });
        Tid(out)
    }

    /// A view (reshape, select, split) sharing `x`'s memory.
    pub fn view(&mut self, x: Tid, shape: &[i64]) -> Tid {
        let (storage, grad, producer, dtype) = {
            let r = &self.tensors[x.0];
            (r.storage, r.needs_grad, r.producer, r.dtype)
        };
        Tid(self.new_tensor(shape, dtype, grad, producer, Some(storage)))
    }

    /// `x.to_kind(dtype)`: a copy unless it already has that dtype; saves nothing.
    pub fn cast(&mut self, x: Tid, dtype: Dtype) -> Tid {
        if self.dtype(x) == dtype {
            return x;
        }
        let shape = self.shape(x).to_vec();
        self.op("cast", &[x], &shape, dtype, &[], false, (0, 0))
    }

    /// An elementwise op on one tensor (`silu` saves its input; a scalar
    /// multiply saves nothing).
    pub fn unary(&mut self, name: &str, x: Tid, saves_input: bool) -> Tid {
        let (shape, dtype) = (self.shape(x).to_vec(), self.dtype(x));
        let saves: &[Tid] = if saves_input { &[x] } else { &[] };
        self.op(name, &[x], &shape, dtype, saves, false, (0, 0))
    }

    /// `a + b` (broadcasting `b`); saves nothing.
    pub fn add(&mut self, a: Tid, b: Tid) -> Tid {
        let (shape, dtype) = (self.shape(a).to_vec(), self.dtype(a));
        self.op("add", &[a, b], &shape, dtype, &[], false, (0, 0))
    }

    /// GroupNorm in float32, cast back: saves its float32 input (a copy
    /// when `x` is half precision).
    pub fn group_norm(&mut self, x: Tid) -> Tid {
        let dtype = self.dtype(x);
        let x32 = self.cast(x, Dtype::F32);
        let shape = self.shape(x).to_vec();
        let y = self.op("norm", &[x32], &shape, Dtype::F32, &[x32], true, (0, 0));
        self.cast(y, dtype)
    }

    /// A 3D convolution `C_in -> cout`, kernel `k`, `stride`, padding `k/2`,
    /// in the compute dtype; saves its (cast) input.
    pub fn conv3d(&mut self, x: Tid, cout: i64, k: i64, stride: [i64; 3]) -> Tid {
        let cd = self.compute_dtype();
        let xc = self.cast(x, cd);
        let s = self.shape(xc).to_vec();
        let out_dims: Vec<i64> = (0..3).map(|i| (s[2 + i] + 2 * (k / 2) - k) / stride[i] + 1).collect();
        let out = [s[0], cout, out_dims[0], out_dims[1], out_dims[2]];
        if self.amp {
            // autocast caches a half copy of the weight for the whole step
            self.constant += (cout * s[1] * k * k * k + cout) as u64 * 2;
        }
        let (fwd, bwd) = self.conv_scratch((self.bytes(xc), numel(&out) * cd.bytes()), &s, &out, k, stride);
        // backward also makes the weight's gradient (in the compute dtype, then f32 to accumulate)
        let weight_grad = (cout * s[1] * k * k * k) as u64 * (4 + if self.amp { 2 } else { 0 });
        self.op("conv", &[xc], &out, cd, &[xc], true, (fwd, bwd + weight_grad))
    }

    /// Forward and backward scratch bytes of a convolution with input shape
    /// `s` and output shape `out`, measured on libtorch 2.11 CPU kernels with
    /// the counting allocator. libtorch runs float32 in oneDNN unless the
    /// input is small (batch 1 and `C*D*H <= 20480`), where the fallback
    /// unfolds the input `k^3` times (in training: inference sends all but
    /// pointwise ones to oneDNN, [`super::blocks::conv3d`]); bfloat16 runs
    /// in oneDNN on a CPU with native bf16 (measured on an AVX512-BF16
    /// machine) and in the unfolding fallback on one without (measured on an
    /// AVX2 machine: within 6% of the counted peak for single convolutions,
    /// `tests/memory.rs` for whole models). On CUDA cuDNN's workspace is not
    /// modelled (0).
    fn conv_scratch(
        &self,
        (input, output): (u64, u64),
        s: &[i64],
        out: &[i64],
        k: i64,
        stride: [i64; 3],
    ) -> (u64, u64) {
        if self.backend == Backend::Cuda {
            return (0, 0);
        }
        let pointwise = k == 1 && stride == [1; 3];
        // slow_conv3d: a `k^3 C_in x N_out` column matrix per batch, in the
        // compute dtype (a view of the input for a pointwise convolution)
        let unfold = |elem: u64| {
            if pointwise {
                (0, input + output)
            } else {
                let columns = (k * k * k * s[1]) as u64 * numel(&out[2..]) * s[0] as u64 * elem;
                (columns, columns + output)
            }
        };
        match self.compute_dtype() {
            // inference routes the non-pointwise ones to oneDNN (blocks::conv3d)
            Dtype::F32 if super::blocks::unfolds_on_cpu(s) && (!self.no_grad || pointwise) => unfold(4),
            Dtype::Half if self.backend == Backend::CpuEmulatedBf16 => unfold(2),
            Dtype::F32 => (input.max(output), input + 2 * output),
            Dtype::Half if pointwise => (input + 4 * output, 4 * input + 2 * output),
            Dtype::Half => (input.max(output), 3 * input + 4 * output),
        }
    }

    /// Trilinear upsampling to `size` (saves nothing but shapes).
    pub fn upsample(&mut self, x: Tid, size: [i64; 3]) -> Tid {
        let s = self.shape(x);
        let out = [s[0], s[1], size[0], size[1], size[2]];
        let dtype = self.dtype(x);
        self.op("upsample", &[x], &out, dtype, &[], false, (0, 0))
    }

    /// An elementwise op whose backward needs its output (`exp`, `softmax`).
    pub fn unary_saving_output(&mut self, name: &str, x: Tid) -> Tid {
        let out = self.unary(name, x, false);
        if !self.no_grad {
            let storage = self.tensors[out.0].storage;
            self.ops.last_mut().expect("just recorded").saves.push(storage);
        }
        out
    }

    /// Concatenation along channels (saves nothing).
    pub fn cat(&mut self, a: Tid, b: Tid) -> Tid {
        let (sa, sb) = (self.shape(a).to_vec(), self.shape(b));
        let mut out = sa.clone();
        out[1] += sb[1];
        let dtype = self.dtype(a);
        self.op("cat", &[a, b], &out, dtype, &[], false, (0, 0))
    }

    /// `mse_loss(pred.float(), target)`: saves the float32 difference.
    pub fn mse(&mut self, pred: Tid, target: Tid) -> Tid {
        let p = self.cast(pred, Dtype::F32);
        let shape = self.shape(p).to_vec();
        let diff = self.op("loss.sub", &[p, target], &shape, Dtype::F32, &[], false, (0, 0));
        let tmp = self.bytes(diff);
        self.op("loss.mean_square", &[diff], &[], Dtype::F32, &[diff], false, (tmp, tmp))
    }

    /// Runs a forward-backward simulation and returns its activation memory.
    pub fn simulate(&self) -> Activations {
        Sim::new(self).run()
    }
}

/// Activation memory of one step, from [`Tape::simulate`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Activations {
    /// Tensors held all step by the caller (the batch on the device).
    pub inputs: u64,
    /// Bytes held all step outside the graph (autocast weight copies).
    pub constant: u64,
    /// Kept for backward at the end of the forward pass (saved tensors and
    /// checkpoint boundaries), beyond `inputs` and `constant`.
    pub kept: u64,
    /// Peak of everything above plus gradients, recomputed segments and
    /// scratch, minus `inputs + constant + kept`: the step's transient.
    pub transient: u64,
    /// Where the peak happens (`name (forward|backward|recompute)`).
    pub peak_at: String,
}

impl Activations {
    /// The step's peak activation bytes.
    pub fn peak(&self) -> u64 {
        self.inputs + self.constant + self.kept + self.transient
    }
}

/// Per-storage lifetimes, precomputed so each moment costs O(storages).
struct Sim<'a> {
    tape: &'a Tape,
    /// Op that creates the storage (`None`: before the step).
    created: Vec<Option<usize>>,
    /// Last forward use of any tensor of the storage (`usize::MAX`: the loss, kept to the end).
    last_use: Vec<usize>,
    /// First non-checkpointed op that saves the storage.
    first_saver: Vec<Option<usize>>,
    /// Ops saving the storage inside checkpointed segments (replayed in backward).
    ck_savers: Vec<Vec<usize>>,
    /// Earliest start of a checkpointed segment the storage is a boundary of.
    boundary_from: Vec<Option<usize>>,
    /// Earliest start of a later checkpointed segment the storage feeds.
    feeds_from: Vec<Option<usize>>,
    /// `(producer, last consumer)` backward window of the storage's gradient.
    grad_window: Vec<Option<(usize, usize)>>,
    /// Op range of each segment.
    seg_ops: Vec<Range<usize>>,
}

fn min_opt(a: Option<usize>, b: usize) -> Option<usize> {
    Some(a.map_or(b, |a| a.min(b)))
}

impl<'a> Sim<'a> {
    fn new(tape: &'a Tape) -> Sim<'a> {
        let ns = tape.storages.len();
        let mut created = vec![None; ns];
        let mut last_use = vec![0usize; ns];
        for rec in &tape.tensors {
            if let Some(p) = rec.producer {
                created[rec.storage] = min_opt(created[rec.storage], p);
                last_use[rec.storage] = last_use[rec.storage].max(p);
            }
        }
        let mut grad_window: Vec<Option<(usize, usize)>> = vec![None; ns];
        // ops of a segment are consecutive: first and one-past-last index
        let mut seg_ops: Vec<Range<usize>> = vec![0..0; tape.segments.len()];
        let (mut first_saver, mut ck_savers) = (vec![None; ns], vec![Vec::new(); ns]);
        for (j, op) in tape.ops.iter().enumerate() {
            let r = &mut seg_ops[op.segment];
            *r = if r.start == r.end { j..j + 1 } else { r.start..j + 1 };
            for &i in &op.inputs {
                let rec = &tape.tensors[i];
                last_use[rec.storage] = last_use[rec.storage].max(j);
                if let (true, true, Some(p)) = (tape.tensors[op.output].needs_grad, rec.needs_grad, rec.producer) {
                    let w = grad_window[rec.storage].get_or_insert((p, j));
                    *w = (w.0.min(p), w.1.max(j));
                }
            }
            for &st in &op.saves {
                if tape.segments[op.segment] {
                    ck_savers[st].push(j);
                } else {
                    first_saver[st] = min_opt(first_saver[st], j);
                }
            }
        }
        if let Some(op) = tape.ops.last() {
            last_use[tape.tensors[op.output].storage] = usize::MAX;
        }
        let (mut boundary_from, mut feeds_from) = (vec![None; ns], vec![None; ns]);
        for (s, &ck) in tape.segments.iter().enumerate() {
            let r = seg_ops[s].clone();
            if !ck || r.is_empty() {
                continue;
            }
            for j in r.clone() {
                for &i in &tape.ops[j].inputs {
                    let rec = &tape.tensors[i];
                    if rec.producer.is_none_or(|p| p < r.start) {
                        boundary_from[rec.storage] = min_opt(boundary_from[rec.storage], r.start);
                        feeds_from[rec.storage] = min_opt(feeds_from[rec.storage], r.start);
                    }
                }
            }
            let out = tape.tensors[tape.ops[r.end - 1].output].storage;
            boundary_from[out] = min_opt(boundary_from[out], r.start);
        }
        Sim { tape, created, last_use, first_saver, ck_savers, boundary_from, feeds_from, grad_window, seg_ops }
    }

    fn bytes(&self, s: usize) -> u64 {
        self.tape.storages[s].bytes
    }

    /// Unpinned bytes of the storages for which `alive` holds.
    fn total(&self, alive: impl Fn(usize) -> bool) -> u64 {
        (0..self.tape.storages.len())
            .filter(|&s| !self.tape.storages[s].pinned && alive(s))
            .map(|s| self.bytes(s))
            .sum()
    }

    fn exists_at(&self, s: usize, j: usize) -> bool {
        self.created[s].is_none_or(|c| c <= j)
    }

    /// Alive during forward op `j`: used later, saved already, or a checkpoint boundary.
    fn forward_alive(&self, s: usize, j: usize) -> bool {
        self.exists_at(s, j)
            && (self.last_use[s] >= j
                || self.first_saver[s].is_some_and(|k| k <= j)
                || self.boundary_from[s].is_some_and(|k| k <= j))
    }

    /// Held while the backward of op `j` runs (outside a replayed segment's own saves).
    fn backward_held(&self, s: usize, j: usize) -> bool {
        self.first_saver[s].is_some_and(|k| k <= j || self.tape.retain_graph)
            || self.boundary_from[s].is_some_and(|k| k <= j)
    }

    /// Saved by an op of `range` at or before `upto` (a replayed segment).
    fn replay_saved(&self, s: usize, range: &Range<usize>, upto: usize) -> bool {
        self.ck_savers[s].iter().any(|&k| range.contains(&k) && k <= upto)
    }

    fn grads_at(&self, j: usize) -> u64 {
        self.total(|s| self.grad_window[s].is_some_and(|(p, c)| p <= j && j <= c))
    }

    fn run(&self) -> Activations {
        let t = self.tape;
        let n = t.ops.len();
        let inputs: u64 = t.storages.iter().filter(|s| s.pinned).map(|s| s.bytes).sum();
        let mut best = (0u64, String::new());
        let mut consider = |v: u64, at: String| {
            if v > best.0 {
                best = (v, at);
            }
        };
        for j in 0..n {
            let v = self.total(|s| self.forward_alive(s, j));
            consider(v + t.ops[j].fwd_tmp, format!("{} (forward)", t.ops[j].name));
        }
        let kept = self.total(|s| self.first_saver[s].is_some() || self.boundary_from[s].is_some());
        // Backward (none without gradients), last op first; a checkpointed
        // segment is recomputed when reached.
        let backward_ops = if t.no_grad { 0 } else { n };
        for j in (0..backward_ops).rev() {
            let seg = t.ops[j].segment;
            let ck = t.segments[seg];
            let range = self.seg_ops[seg].clone();
            let upto = if t.retain_graph { range.end } else { j };
            let held = |s: usize| self.backward_held(s, j) || (ck && self.replay_saved(s, &range, upto));
            if ck && j + 1 == range.end {
                let grads = self.grads_at(j);
                for r in range.clone() {
                    let live = |s: usize| {
                        self.backward_held(s, j)
                            || self.replay_saved(s, &range, r)
                            || (self.created[s].is_some_and(|c| range.contains(&c) && c <= r) && self.last_use[s] >= r)
                    };
                    consider(self.total(live) + grads + t.ops[r].fwd_tmp, format!("{} (recompute)", t.ops[r].name));
                }
            }
            let mut extra = t.ops[j].bwd_tmp;
            let out = t.tensors[t.ops[j].output].storage;
            if ck {
                // the replay's `sum(out * grad)` product lives through the segment's backward
                extra += self.bytes(t.tensors[t.ops[range.end - 1].output].storage);
            }
            if self.feeds_from[out].is_some_and(|k| k > j) {
                // `sum(input * input.grad)` chains into this op: the product and input.grad
                extra += 2 * self.bytes(out);
            }
            consider(self.total(held) + self.grads_at(j) + extra, format!("{} (backward)", t.ops[j].name));
        }
        let transient = best.0.saturating_sub(kept);
        Activations { inputs, constant: t.constant, kept, transient, peak_at: best.1 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mib(x: u64) -> f64 {
        x as f64 / (1 << 20) as f64
    }

    #[test]
    fn a_chain_keeps_saved_inputs_and_frees_the_rest() {
        // x -> silu (saves x) -> scalar mul (saves nothing) -> silu (saves its input)
        let mut t = Tape::new(Backend::Cuda, false);
        let x = t.input(&[1, 1, 1, 1, 1 << 18], Dtype::F32); // 1 MiB, pinned
        let w = t.op("param", &[], &[1, 1, 1, 1, 1 << 18], Dtype::F32, &[], true, (0, 0));
        let a = t.add(x, w); // needs grad
        let b = t.unary("silu", a, true);
        let c = t.unary("scale", b, false);
        let _d = t.unary("silu", c, true);
        let act = t.simulate();
        assert_eq!(mib(act.inputs), 1.0);
        // kept: a (saved by silu) and c (saved by silu); w and b are freed
        assert_eq!(mib(act.kept), 2.0, "{act:?}");
    }

    #[test]
    fn without_gradients_nothing_is_kept_and_each_output_frees_its_input() {
        // softmax saves its output for backward; without gradients it must not
        for no_grad in [false, true] {
            let mut t = if no_grad { Tape::no_grad(Backend::Cuda) } else { Tape::new(Backend::Cuda, false) };
            let x = t.input(&[1, 1, 1, 1, 1 << 18], Dtype::F32);
            let w = t.op("param", &[], &[1, 1, 1, 1, 1 << 18], Dtype::F32, &[], true, (0, 0));
            let mut h = t.add(x, w);
            for _ in 0..4 {
                h = t.unary_saving_output("softmax", h);
            }
            let act = t.simulate();
            if no_grad {
                assert_eq!((mib(act.kept), mib(act.transient)), (0.0, 2.0), "{act:?}");
            } else {
                assert_eq!(mib(act.kept), 4.0, "the four outputs: {act:?}");
            }
        }
    }

    #[test]
    fn checkpointed_segments_keep_only_boundaries() {
        let build = |ck: bool| {
            let mut t = Tape::new(Backend::Cuda, false);
            let x = t.input(&[1, 1, 1, 1, 1 << 18], Dtype::F32);
            let w = t.op("param", &[], &[1, 1, 1, 1, 1 << 18], Dtype::F32, &[], true, (0, 0));
            let mut h = t.add(x, w);
            for _ in 0..4 {
                t.segment(ck);
                for _ in 0..4 {
                    h = t.unary("silu", h, true);
                }
            }
            t.segment(false);
            t.unary("silu", h, true);
            t.simulate()
        };
        let (plain, ck) = (build(false), build(true));
        assert_eq!(mib(plain.kept), 17.0, "{plain:?}");
        // boundaries: the segments' inputs and the last output (also saved by the last silu)
        assert_eq!(mib(ck.kept), 5.0, "{ck:?}");
        assert!(ck.peak() > ck.kept + ck.inputs, "recompute needs memory");
        assert!(ck.peak() < plain.peak());
        assert!(ck.peak_at.contains("recompute") || ck.peak_at.contains("backward"));
    }

    #[test]
    fn float32_cpu_convolutions_unfold_their_input() {
        let conv = |backend, amp| {
            let mut t = Tape::new(backend, amp);
            let x = t.input(&[1, 16, 8, 32, 32], Dtype::F32);
            let y = t.conv3d(x, 16, 3, [1, 1, 1]);
            t.unary("sum", y, false);
            t.simulate()
        };
        let cpu = conv(Backend::Cpu, false);
        // vol2col: 27 * 16 * 8192 floats = 13.5 MiB
        assert!(cpu.transient >= 27 * 16 * 8192 * 4, "{cpu:?}");
        let cuda = conv(Backend::Cuda, false);
        assert!(cuda.transient < 27 * 16 * 8192 * 4 / 4, "{cuda:?}");
        assert_eq!(cuda.kept, 0, "the saved input is the caller's");
        let amp = conv(Backend::Cuda, true);
        assert_eq!(amp.kept, 16 * 8192 * 2, "autocast saves a half copy of the input");
        assert!(amp.constant > 0, "autocast caches weight copies");
    }
}
