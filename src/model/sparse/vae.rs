//! The sparse occupancy VAE (XCube / GSDN style). The encoder runs on the
//! occupied voxels at native resolution (submanifold residual blocks,
//! kernel = stride down-sampling) down to a *dense* latent grid, which the
//! LDM, CD, latent cache and samplers consume as they consume the dense
//! VAE's. The decoder goes back up through sparse levels: at each one it
//! subdivides every kept site into its children (transposed convolution),
//! refines them, predicts a structure logit per child ("occupied at this
//! level?") and keeps the children the target occupies (training: teacher
//! forcing, so every level learns) or the ones the prediction keeps
//! (inference: threshold, capped per frame). At the native level the kept
//! sites are the output voxels and a linear head regresses their feature
//! channels. Variable paths: `encoder.*`, `decoder.*` (see [`SparseVae::new`]).

use std::rc::Rc;

use tch::nn::{self, Module, ModuleT};
use tch::{Kind, Tensor};

use super::config::SparseVaeConfig;
use super::conv::{ConvKind, SparseConv3d};
use super::coords::{Coords, Dims3};
use super::{SparseResBlock, SparseTensor};
use crate::model::blocks::{Conv3d, ResBlock3d};
use crate::model::vae::Posterior;
use crate::model::ModelError;

/// One decoder level's structure prediction.
#[derive(Debug)]
pub struct LevelLogits {
    /// The candidates: every site of the latent grid, or the children of
    /// the sites kept one level coarser.
    pub candidates: Rc<Coords>,
    /// `(N,)` occupancy logits, one per candidate.
    pub logits: Tensor,
}

/// What the decoder produced.
#[derive(Debug)]
pub struct Decoded {
    /// Structure logits per level, the latent level first, native last.
    pub levels: Vec<LevelLogits>,
    /// The kept native sites; channel 0 is the occupancy probability, the
    /// others the regressed features (in the model's scaled units).
    pub output: SparseTensor,
}

/// Which children a decoder level keeps.
#[derive(Debug, Clone, Copy)]
pub enum Keep<'a> {
    /// The target's sites at each level, native first (teacher forcing).
    Target(&'a [Rc<Coords>]),
    /// The children the prediction keeps (threshold, capped).
    Predicted,
}

/// The sparse VAE; see the module docs.
#[derive(Debug)]
pub struct SparseVae {
    config: SparseVaeConfig,
    stem: SparseConv3d,
    enc_blocks: Vec<Vec<SparseResBlock>>,
    downs: Vec<SparseConv3d>,
    enc_mid: SparseResBlock,
    moments: Conv3d,
    dec_in: Conv3d,
    dec_mid: ResBlock3d,
    latent_head: Conv3d,
    ups: Vec<SparseConv3d>,
    dec_blocks: Vec<Vec<SparseResBlock>>,
    heads: Vec<SparseConv3d>,
    out: Option<SparseConv3d>,
}

impl SparseVae {
    /// Builds the model under `vs`: `encoder.stem`, `encoder.levels.{i}.blocks.{j}`,
    /// `encoder.levels.{i}.down`, `encoder.mid`, `encoder.moments` (dense),
    /// `decoder.input`, `decoder.mid` (dense), `decoder.head` (latent
    /// structure), `decoder.levels.{i}.up`, `.blocks.{j}`, `.head`, `decoder.out`.
    pub fn new(vs: &nn::Path, config: &SparseVaeConfig) -> Result<SparseVae, ModelError> {
        config.validate()?;
        let c = &config.channels;
        let last = *c.last().expect("validated");
        let (enc, dec) = (vs / "encoder", vs / "decoder");
        let blocks = |p: nn::Path, ch: i64| -> Result<Vec<SparseResBlock>, ModelError> {
            (0..config.blocks).map(|j| SparseResBlock::new(&p / "blocks" / j, ch, ch)).collect()
        };
        let levels = config.strides.len();
        let mut enc_blocks = Vec::new();
        let mut downs = Vec::new();
        let mut ups = Vec::new();
        let mut dec_blocks = Vec::new();
        let mut heads = Vec::new();
        for (i, &s) in config.strides.iter().enumerate() {
            let (e, d) = (&enc / "levels" / i, &dec / "levels" / i);
            enc_blocks.push(blocks(e.clone(), c[i])?);
            downs.push(SparseConv3d::new(&e / "down", c[i], c[i + 1], ConvKind::Down(s))?);
            ups.push(SparseConv3d::new(&d / "up", c[i + 1], c[i], ConvKind::Up(s))?);
            dec_blocks.push(blocks(d.clone(), c[i])?);
            heads.push(SparseConv3d::new(&d / "head", c[i], 1, ConvKind::Submanifold(1))?);
        }
        debug_assert_eq!(ups.len(), levels);
        let out = (config.in_channels > 1)
            .then(|| SparseConv3d::new(&dec / "out", c[0], config.in_channels - 1, ConvKind::Submanifold(1)))
            .transpose()?;
        Ok(SparseVae {
            stem: SparseConv3d::new(&enc / "stem", config.in_channels, c[0], ConvKind::Submanifold(3))?,
            enc_blocks,
            downs,
            enc_mid: SparseResBlock::new(&enc / "mid", last, last)?,
            moments: Conv3d::new(&enc / "moments", last, 2 * config.latent_channels, 3, [1; 3]),
            dec_in: Conv3d::new(&dec / "input", config.latent_channels, last, 3, [1; 3]),
            dec_mid: ResBlock3d::new(&dec / "mid", last, last, 0.0),
            latent_head: Conv3d::new(&dec / "head", last, 1, 1, [1; 3]),
            ups,
            dec_blocks,
            heads,
            out,
            config: config.clone(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &SparseVaeConfig {
        &self.config
    }

    /// Inference keeps a child whose probability is at least `t` from now
    /// on (an inference setting: the weights do not depend on it); refused
    /// outside (0, 1).
    pub fn set_keep_threshold(&mut self, t: f64) -> Result<(), ModelError> {
        let config = SparseVaeConfig { keep_threshold: t, ..self.config.clone() };
        config.validate()?;
        self.config = config;
        Ok(())
    }

    /// The target's sites at every level, native first: `native` and its
    /// down-sampled sets (the same `Rc`s the encoder runs on).
    pub fn target_levels(&self, native: &Rc<Coords>) -> Vec<Rc<Coords>> {
        self.config.target_levels(native)
    }

    /// The dense posterior of the native sparse input `x`.
    pub fn encode(&self, x: &SparseTensor) -> Result<Posterior, ModelError> {
        let mut h = self.stem.forward(x)?;
        for (blocks, down) in self.enc_blocks.iter().zip(&self.downs) {
            for b in blocks {
                h = b.forward(&h)?;
            }
            h = down.forward(&h)?;
        }
        h = self.enc_mid.forward(&h)?;
        let m = self.moments.forward(&h.to_dense());
        let parts = m.chunk(2, 1);
        Ok(Posterior { mean: parts[0].shallow_clone(), logvar: parts[1].clamp(-30.0, 20.0) })
    }

    /// Decodes a dense latent `z` `(B, latent_channels, Z', Y', X')` of
    /// native grids `zhw`, keeping children as `keep` says.
    pub fn decode(&self, z: &Tensor, zhw: Dims3, keep: Keep<'_>) -> Result<Decoded, ModelError> {
        let grids = self.config.level_grids(zhw);
        let top = grids.len() - 1;
        let size = z.size();
        let batch = size[0];
        if size.len() != 5 || size[1] != self.config.latent_channels || size[2..] != grids[top] {
            return Err(ModelError::Grid {
                grid: zhw,
                rule: format!(
                    "the latent {size:?} is not (B, {}, {:?}) for native grids {zhw:?}",
                    self.config.latent_channels, grids[top]
                ),
            });
        }
        if let Keep::Target(t) = keep {
            if t.len() != grids.len() || t.iter().zip(&grids).any(|(c, g)| c.shape() != *g || c.batch() != batch) {
                return Err(ModelError::Config("teacher-forced targets do not match the decoder's levels".into()));
            }
        }
        let stride = |level: usize| -> Dims3 {
            self.config.strides[..level].iter().fold([1; 3], |a, s| [a[0] * s[0], a[1] * s[1], a[2] * s[2]])
        };
        let h = self.dec_mid.forward_t(&self.dec_in.forward(z), true);
        let all = Coords::full(batch, grids[top], stride(top))?;
        let logits = self.latent_head.forward(&h).reshape([-1]);
        let mut levels = vec![LevelLogits { candidates: all.clone(), logits }];
        let mut kept = self.keep(&levels[0], keep, top)?;
        let mut h = SparseTensor::gather(&h, &kept.0)?;
        for level in (0..top).rev() {
            let candidates = h.coords.children(self.config.strides[level], grids[level])?;
            let mut f = self.ups[level].up(&h, &candidates)?;
            for b in &self.dec_blocks[level] {
                f = b.forward(&f)?;
            }
            let logits = self.heads[level].forward(&f)?.feats.reshape([-1]);
            levels.push(LevelLogits { candidates, logits });
            kept = self.keep(levels.last().expect("pushed"), keep, level)?;
            h = SparseTensor { feats: f.feats.index_select(0, &kept.1), coords: kept.0.clone() };
        }
        let prob = levels.last().expect("native level").logits.index_select(0, &kept.1).sigmoid().unsqueeze(1);
        let feats = match &self.out {
            Some(out) => Tensor::cat(&[prob.to_kind(h.feats.kind()), out.forward(&h)?.feats], 1),
            None => prob,
        };
        Ok(Decoded { levels, output: SparseTensor { feats, coords: kept.0 } })
    }

    /// The kept sites of a level and their rows among its candidates.
    fn keep(&self, l: &LevelLogits, keep: Keep<'_>, level: usize) -> Result<(Rc<Coords>, Tensor), ModelError> {
        let dev = l.logits.device();
        let c = &l.candidates;
        match keep {
            Keep::Target(t) => {
                let target = &t[level];
                let rows: Option<Vec<i64>> = (0..target.len()).map(|i| c.find(target.site(i)).map(i64::from)).collect();
                let rows = rows.ok_or_else(|| ModelError::Sites {
                    sites: target.len(),
                    batch: target.batch(),
                    grid: target.shape(),
                    rule: format!("a target site at level {level} is no candidate (not a child of a kept site)"),
                })?;
                Ok((target.clone(), Tensor::from_slice(&rows).to_device(dev)))
            }
            Keep::Predicted => {
                let p =
                    Vec::<f32>::try_from(l.logits.detach().to_kind(Kind::Float).sigmoid().to_device(tch::Device::Cpu))
                        .map_err(|e| ModelError::Config(e.to_string()))?;
                let mut keep = vec![false; c.len()];
                // per frame: the most probable first, at or above the threshold, at most max_sites
                let mut order: Vec<usize> =
                    (0..c.len()).filter(|&i| p[i] as f64 >= self.config.keep_threshold).collect();
                order.sort_by(|&a, &b| c.site(a)[0].cmp(&c.site(b)[0]).then(p[b].total_cmp(&p[a])));
                let mut taken = vec![0usize; c.batch() as usize];
                for i in order {
                    let b = c.site(i)[0] as usize;
                    if taken[b] < self.config.max_sites {
                        taken[b] += 1;
                        keep[i] = true;
                    }
                }
                let rows: Vec<i64> = (0..c.len() as i64).filter(|&i| keep[i as usize]).collect();
                Ok((c.select(&keep), Tensor::from_slice(&rows).to_device(dev)))
            }
        }
    }

    /// Deterministic reconstruction of `x` (posterior mean, predicted structure).
    pub fn reconstruct(&self, x: &SparseTensor) -> Result<Decoded, ModelError> {
        let post = self.encode(x)?;
        self.decode(&post.mean, x.coords.shape(), Keep::Predicted)
    }
}
