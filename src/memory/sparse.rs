//! Plans of the sparse VAE: bytes from the site counts of each level (the
//! worst frame of a dataset scan decides) and the channels, not from the
//! grid. What autograd keeps per op follows the layer's code (measured op
//! by op with the counting allocator): a submanifold convolution keeps the
//! gathered rows of every offset but the centre (`pairs - sites` rows of
//! `C_in`) and their products (`C_out`: `index_add` keeps its source), a
//! strided one every input row once and its product, a transposed one a
//! parent row and a product per candidate child; the sparse GroupNorm
//! keeps its centred and normalised copies and its output, SiLU its input;
//! the dense latent levels keep what the dense blocks keep.

use serde::{Deserialize, Serialize};
use tch::{nn, Device};

use super::plan::{Plan, Planner, Precision, Run};
use crate::model::sparse::{Coords, MapKind, SparseVae, SparseVaeConfig};
use crate::model::ModelError;
use std::rc::Rc;

/// Site counts of one frame (or the worst of many) at every level.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SparseSites {
    /// Target sites per level, native first.
    pub sites: Vec<u64>,
    /// Submanifold 3^3 pairs among them per level (the centre included).
    pub pairs: Vec<u64>,
    /// Decoder candidates per level below the latent, native first: the
    /// children of the next coarser level's sites.
    pub candidates: Vec<u64>,
    /// Submanifold pairs among the candidates per level.
    pub candidate_pairs: Vec<u64>,
}

impl SparseSites {
    /// The counts of the native sites `native` (one frame) under `config`.
    pub fn of(config: &SparseVaeConfig, native: &Rc<Coords>) -> Result<SparseSites, ModelError> {
        let grids = config.level_grids(native.shape());
        let levels = config.target_levels(native);
        let pairs = |c: &Rc<Coords>| c.kernel_map(MapKind::Submanifold { k: 3 }, c, Device::Cpu).pairs() as u64;
        let mut out = SparseSites::default();
        for c in &levels {
            out.sites.push(c.len() as u64);
            out.pairs.push(pairs(c));
        }
        for (l, s) in config.strides.iter().enumerate() {
            let cand = levels[l + 1].children(*s, grids[l])?;
            out.candidates.push(cand.len() as u64);
            out.candidate_pairs.push(pairs(&cand));
        }
        Ok(out)
    }

    /// The larger of each count (the worst frame decides each level).
    pub fn max(&self, other: &SparseSites) -> SparseSites {
        let m = |a: &[u64], b: &[u64]| -> Vec<u64> {
            (0..a.len().max(b.len()))
                .map(|i| a.get(i).copied().unwrap_or(0).max(b.get(i).copied().unwrap_or(0)))
                .collect()
        };
        SparseSites {
            sites: m(&self.sites, &other.sites),
            pairs: m(&self.pairs, &other.pairs),
            candidates: m(&self.candidates, &other.candidates),
            candidate_pairs: m(&self.candidate_pairs, &other.candidate_pairs),
        }
    }
}

/// A sparse VAE and the site counts its plan is for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SparseModel {
    /// Architecture.
    pub vae: SparseVaeConfig,
    /// Per-frame counts (multiplied by the batch).
    pub sites: SparseSites,
}

/// Floats a residual block keeps over `n` sites with `p` pairs and `c`
/// channels: (float32, autocast's half precision).
fn block_floats(n: u64, p: u64, c: u64) -> (u64, u64) {
    // two norms: centred and normalised copies in f32, the output in the
    // input's precision; two SiLUs (their input); the two convolutions'
    // gathered rows and products
    (2 * 2 * n * c, 2 * n * c + 2 * n * c + 2 * conv_floats(p.saturating_sub(n), c, c))
}

/// Floats a convolution keeps for `rows` gathered rows `c_in -> c_out`.
fn conv_floats(rows: u64, c_in: u64, c_out: u64) -> u64 {
    rows * (c_in + c_out)
}

/// The plan of a sparse VAE micro-step of `batch` frames of `grid`.
pub fn plan(planner: &Planner, model: &SparseModel, run: &Run) -> Result<Plan, ModelError> {
    let cfg = &model.vae;
    let vs = nn::VarStore::new(Device::Cpu);
    tch::no_grad(|| SparseVae::new(&vs.root(), cfg))?;
    let parameter_count: u64 = vs.trainable_variables().iter().map(|t| t.numel() as u64).sum();
    let b = run.batch as u64;
    let s = &model.sites;
    let levels = cfg.strides.len();
    if s.sites.len() != levels + 1 || s.candidates.len() != levels {
        return Err(ModelError::Config(format!("site counts {s:?} do not match the sparse VAE's {levels} levels")));
    }
    let c: Vec<u64> = cfg.channels.iter().map(|&v| v as u64).collect();
    let cin = cfg.in_channels as u64;
    let n = |l: usize| s.sites[l] * b;
    let (mut full, mut half) = (0u64, 0u64);
    let mut add = |(f, h): (u64, u64)| {
        full += f;
        half += h;
    };
    let mut widest = 0u64; // the most candidates x channels of a level, in floats
                           // encoder
    add((n(0) * c[0], conv_floats((s.pairs[0] * b).saturating_sub(n(0)), cin, c[0])));
    for l in 0..levels {
        for _ in 0..cfg.blocks {
            add(block_floats(n(l), s.pairs[l] * b, c[l]));
        }
        add((0, conv_floats(n(l), c[l], c[l + 1]))); // down: every input row gathered once
    }
    add(block_floats(n(levels), s.pairs[levels] * b, c[levels]));
    // the dense latent levels: densified features, moments, sample, decoder input, a dense block, head
    let grid_top = cfg.level_grids(run.grid).last().copied().expect("levels");
    let dense = b * grid_top.iter().product::<i64>() as u64;
    let (cl, lc) = (c[levels], cfg.latent_channels as u64);
    add((dense * (cl + 3 * lc + cl + 10 * cl + cl + 1), 0));
    // decoder levels, coarse to fine
    for l in (0..levels).rev() {
        let k = s.candidates[l] * b;
        add((0, conv_floats(k, c[l + 1], c[l]))); // up: a gathered parent row per candidate
        for _ in 0..cfg.blocks {
            add(block_floats(k, s.candidate_pairs[l] * b, c[l]));
        }
        add((k * c[l] + k + n(l) * c[l], 0)); // the head's input, logits, kept rows
        widest = widest.max(k * c[l]);
    }
    add((n(0) * (cin + 2), 0)); // output features, probabilities, targets
    let half_bytes = if run.precision == Precision::Amp { 2 } else { 4 };
    let activations = full * 4 + half * half_bytes;
    // index tensors of every kernel map (int64 input and output rows)
    let maps: u64 = s.pairs.iter().chain(&s.candidate_pairs).chain(&s.sites).chain(&s.candidates).sum::<u64>() * b * 16;
    let inputs = n(0) * cin * 4 + dense * lc * 4 + maps;
    let weights = parameter_count * 4;
    let site_bytes = (cin * 4 + 32) * s.sites[0];
    Ok(Plan {
        run: run.clone(),
        backend: planner.backend,
        parameter_count,
        params: weights,
        grads: weights * 2,
        optimizer: 2 * weights,
        inputs,
        amp_weights: if run.precision == Precision::Amp { parameter_count * 2 } else { 0 },
        activations,
        // backward at the widest level: gradients of its features in flight
        // (a block's input, output and the accumulating sum; one offset's rows)
        transient: 4 * widest * half_bytes,
        peak_at: "decoder backward".into(),
        loader: (planner.prefetch + planner.workers) as u64 * b * site_bytes,
        buckets: 0,
        runtime: planner.runtime,
    })
}
