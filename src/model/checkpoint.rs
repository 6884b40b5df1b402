//! Gradient checkpointing for chains of modules (tch has none): the forward
//! pass keeps only segment boundaries; backward recomputes each segment with
//! gradients on and chains them by back-propagating `sum(out * grad_out)`.
//! Memory falls from all activations to one segment's plus the boundaries.

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
    /// One segment per unit (each ResBlock, conv or head): least memory.
    PerBlock,
    /// The chain cut into this many segments of consecutive units.
    Segments(usize),
}

impl std::str::FromStr for Checkpointing {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "off" | "none" => Ok(Checkpointing::Off),
            "block" | "per-block" | "per_block" => Ok(Checkpointing::PerBlock),
            n => match n.parse::<usize>() {
                Ok(k) if k > 0 => Ok(Checkpointing::Segments(k)),
                _ => Err(format!("checkpointing {s:?}: use off, block or a segment count")),
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

/// A run of consecutive units.
pub type Segment<'a> = Vec<&'a dyn ModuleT>;

impl Checkpointing {
    /// Cuts `units` into segments (all in one when `Off`).
    pub fn segments<'a, M: AsRef<dyn ModuleT + 'a> + 'a>(&self, units: &'a [M]) -> Vec<Segment<'a>> {
        let n = units.len().max(1);
        let k = match *self {
            Checkpointing::Off => 1,
            Checkpointing::PerBlock => n,
            Checkpointing::Segments(s) => s.clamp(1, n),
        };
        let refs: Vec<&dyn ModuleT> = units.iter().map(|u| u.as_ref()).collect();
        (0..k).map(|i| refs[i * n / k..(i + 1) * n / k].to_vec()).collect()
    }
}

fn run(seg: &Segment, x: &Tensor, train: bool) -> Tensor {
    seg.iter().fold(x.shallow_clone(), |h, u| u.forward_t(&h, train))
}

/// Runs the segments without gradients; returns every boundary: the input,
/// then each segment's output.
pub fn forward_boundaries(segments: &[Segment], x: &Tensor, train: bool) -> Vec<Tensor> {
    tch::no_grad(|| {
        let mut bounds = vec![x.shallow_clone()];
        for seg in segments {
            let next = run(seg, bounds.last().expect("non-empty"), train);
            bounds.push(next);
        }
        bounds
    })
}

/// Back-propagates `grad_out` (the gradient of the loss at the last
/// boundary) through the segments in reverse, recomputing each; parameter
/// gradients accumulate. Returns the gradient at the input when
/// `need_input_grad`. Boundaries are freed as soon as they are used.
pub fn backward_segments(
    segments: &[Segment],
    bounds: &[Tensor],
    grad_out: Tensor,
    need_input_grad: bool,
    train: bool,
) -> Option<Tensor> {
    let mut grad = grad_out;
    for (i, seg) in segments.iter().enumerate().rev() {
        let want = i > 0 || need_input_grad;
        let input = bounds[i].detach().set_requires_grad(want);
        let out = run(seg, &input, train);
        (out * &grad).sum(Kind::Float).backward();
        if !want {
            return None;
        }
        grad = input.grad();
    }
    Some(grad)
}
