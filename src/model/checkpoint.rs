//! Gradient checkpointing for chains of modules (tch has none). A
//! checkpointed segment runs without building a graph: only its input is
//! kept, and its output re-enters autograd as a fresh leaf. After the loss's
//! backward fills that leaf's gradient, the segment is recomputed with
//! gradients on and the chain continues by back-propagating
//! `sum(out * grad_out)`, then `sum(input * grad_in)` into whatever produced
//! its input. Units outside checkpointed segments keep their graph as usual.

use std::ops::Range;

use serde::{Deserialize, Serialize};
use tch::nn::ModuleT;
use tch::{Kind, Tensor};

/// How finely a chain is checkpointed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Checkpointing {
    /// Keep every activation (fastest, most memory).
    #[default]
    Off,
    /// Each ResBlock (and attention block) is a segment; convolutions between
    /// them keep their graph (as the reference's per-block checkpointing).
    PerBlock,
    /// Each half of the model cut into this many segments covering every unit.
    Segments(usize),
}

impl std::str::FromStr for Checkpointing {
    type Err = super::ModelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "off" | "none" => Ok(Checkpointing::Off),
            "block" | "per-block" | "per_block" => Ok(Checkpointing::PerBlock),
            n => match n.parse::<usize>() {
                Ok(k) if k > 0 => Ok(Checkpointing::Segments(k)),
                _ => Err(super::ModelError::Config(format!("checkpointing {s:?}: use off, block or a segment count"))),
            },
        }
    }
}

impl std::fmt::Display for Checkpointing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Checkpointing::Off => f.write_str("off"),
            Checkpointing::PerBlock => f.write_str("block"),
            Checkpointing::Segments(n) => write!(f, "{n}"),
        }
    }
}

/// A run of consecutive units and whether it is checkpointed.
pub struct Segment<'a> {
    /// The units, in order.
    pub units: Vec<&'a dyn ModuleT>,
    /// Recompute instead of keeping activations.
    pub checkpointed: bool,
}

impl Checkpointing {
    /// Cuts `n` units into runs `(range, checkpointed)`; `is_block[i]` marks
    /// the units that [`Checkpointing::PerBlock`] checkpoints.
    pub fn ranges(&self, n: usize, is_block: &[bool]) -> Vec<(Range<usize>, bool)> {
        match *self {
            Checkpointing::Off => vec![(0..n, false)],
            Checkpointing::PerBlock => (0..n).map(|i| (i..i + 1, is_block[i])).collect(),
            Checkpointing::Segments(s) => {
                let k = s.clamp(1, n.max(1));
                (0..k).map(|i| (i * n / k..(i + 1) * n / k, true)).collect()
            }
        }
    }

    /// Cuts `units` into [`Segment`]s as [`Checkpointing::ranges`] does.
    pub fn segments<'a>(&self, units: &[&'a dyn ModuleT], is_block: &[bool]) -> Vec<Segment<'a>> {
        self.ranges(units.len(), is_block)
            .into_iter()
            .map(|(r, checkpointed)| Segment { units: units[r].to_vec(), checkpointed })
            .collect()
    }
}

struct Record<'a> {
    units: Vec<&'a dyn ModuleT>,
    input: Tensor,
    leaf: Tensor,
}

/// The checkpointed segments run so far, to be replayed by [`Chain::backward`].
#[derive(Default)]
pub struct Chain<'a> {
    records: Vec<Record<'a>>,
}

fn run(units: &[&dyn ModuleT], x: &Tensor, train: bool) -> Tensor {
    units.iter().fold(x.shallow_clone(), |h, u| u.forward_t(&h, train))
}

impl<'a> Chain<'a> {
    /// Runs `segments` on `x`; checkpointed ones without a graph.
    pub fn forward(&mut self, segments: Vec<Segment<'a>>, x: &Tensor, train: bool) -> Tensor {
        let mut h = x.shallow_clone();
        for seg in segments {
            if seg.checkpointed {
                let out = tch::no_grad(|| run(&seg.units, &h, train));
                let leaf = out.set_requires_grad(true);
                self.records.push(Record { units: seg.units, input: h, leaf: leaf.shallow_clone() });
                h = leaf;
            } else {
                h = run(&seg.units, &h, train);
            }
        }
        h
    }

    /// After `loss.backward()`: recomputes each checkpointed segment, last
    /// first, and carries its gradient on to its input's producers.
    pub fn backward(self, train: bool) {
        for rec in self.records.into_iter().rev() {
            let grad = rec.leaf.grad();
            if !grad.defined() {
                continue; // no gradient reached this segment
            }
            // Upstream needs a gradient if the input came from parameters or an earlier leaf.
            let upstream = rec.input.requires_grad();
            let input = rec.input.detach().set_requires_grad(upstream);
            let out = run(&rec.units, &input, train);
            (out * &grad).sum(Kind::Float).backward();
            if upstream {
                (&rec.input * input.grad()).sum(Kind::Float).backward();
            }
        }
    }
}

type Recompute<'a> = Box<dyn Fn(&Tensor) -> Tensor + 'a>;

/// Checkpointing inside an arbitrary graph (skip connections, a shared
/// embedding): each checkpointed call keeps only its input; every backward
/// keeps the graph so the replays may traverse shared parts again, each
/// carrying its own gradient contribution. Replays run in reverse order of
/// the calls, which is a reverse topological order.
#[derive(Default)]
pub struct Recorder<'a> {
    records: Vec<(Recompute<'a>, Tensor, Tensor)>,
}

impl<'a> Recorder<'a> {
    /// Runs `f(x)` without a graph and returns its output as a leaf.
    pub fn checkpoint(&mut self, f: impl Fn(&Tensor) -> Tensor + 'a, x: &Tensor) -> Tensor {
        let leaf = tch::no_grad(|| f(x)).set_requires_grad(true);
        self.records.push((Box::new(f), x.shallow_clone(), leaf.shallow_clone()));
        leaf
    }

    /// Back-propagates `scale * loss` when `loss` is finite (through the
    /// recorded checkpoints, or plainly when none were recorded) and
    /// returns the loss; a non-finite loss changes no gradient.
    pub fn backward_finite(self, loss: &Tensor, scale: f64) -> f64 {
        let v = loss.double_value(&[]);
        if v.is_finite() {
            let scaled = loss * scale;
            if self.records.is_empty() {
                scaled.backward();
            } else {
                self.backward(&scaled);
            }
        }
        v
    }

    /// Back-propagates `loss`, then replays every checkpointed call.
    pub fn backward(self, loss: &Tensor) {
        crate::sys::shim::backward_keep_graph(loss).expect("backward of a checkpointed graph");
        for (f, input, leaf) in self.records.into_iter().rev() {
            let grad = leaf.grad();
            if !grad.defined() {
                continue;
            }
            let upstream = input.requires_grad();
            let x = input.detach().set_requires_grad(upstream);
            crate::sys::shim::backward_keep_graph(&(f(&x) * &grad).sum(Kind::Float)).expect("replay of a checkpoint");
            if upstream {
                crate::sys::shim::backward_keep_graph(&(&input * x.grad()).sum(Kind::Float))
                    .expect("chain of a checkpoint");
            }
        }
    }
}
