//! The data of the latent-space objectives (diffusion and consistency):
//! where the target and radar latents come from, the seeded order of
//! batches, and how a batch becomes the tensors a step takes (latents
//! normalised as the model's recipe says; the radar as a latent, or as its
//! raw grid for a radar encoder).

use std::rc::Rc;

use tch::{Device, Kind, Tensor};

use super::TrainError;
use crate::data::loader::Sampler as Order;
use crate::data::{Dataset, Modality};
use crate::diffusion::{ChannelMoments, LatentCache, LatentNorm};
use crate::dist::Dist;
use crate::model::GridVae;

/// Where the training latents come from.
pub enum LatentSource {
    /// A precomputed cache (memory-mapped reads).
    Cache(LatentCache),
    /// Encoded on the fly by the frozen VAE (either family) from the dataset.
    OnTheFly(Box<dyn GridVae>),
    /// Made elsewhere and held in memory: `(target, radar)` per frame of
    /// the dataset, in its order.
    Memory(Vec<(Tensor, Tensor)>),
}

impl LatentSource {
    /// `(target, radar)` latents of frame `i` of `ds`, `(C, D, H, W)` float32.
    pub fn read(&self, ds: &Dataset, i: usize) -> Result<(Tensor, Tensor), TrainError> {
        match self {
            LatentSource::Cache(c) => Ok(c.read(&ds.frames()[i].id)?),
            LatentSource::OnTheFly(vae) => {
                let enc = |m| -> Result<Tensor, TrainError> {
                    Ok(crate::diffusion::encode_frame(vae.as_ref(), ds, i, m)?.squeeze_dim(0))
                };
                Ok((enc(Modality::Target)?, enc(Modality::Radar)?))
            }
            LatentSource::Memory(latents) => latents
                .get(i)
                .map(|(y, c)| (y.shallow_clone(), c.shallow_clone()))
                .ok_or_else(|| TrainError::Config(format!("{} latents in memory, no frame {i}", latents.len()))),
        }
    }
}

/// Clean target latents and the radar of a batch: its latents, or its raw
/// grids when a radar encoder makes the condition; and the target frames'
/// occupancy `(B, 1, Z, H, W)` (0 or 1) when a decoded-space loss needs it.
pub struct LatentBatch {
    pub(crate) y: Tensor,
    pub(crate) cond: Tensor,
    pub(crate) ids: Vec<String>,
    pub(crate) occupancy: Option<Tensor>,
}

/// A dataset and its latents.
pub(crate) struct LatentData {
    dataset: Rc<Dataset>,
    source: Rc<LatentSource>,
    /// Batches carry the raw radar grids (for a radar encoder).
    raw_radar: bool,
    /// Batches carry the target frames' occupancy (for a decoded-space loss).
    pub(crate) occupancy: bool,
    /// This rank's shard of every epoch.
    dist: Dist,
}

impl LatentData {
    pub(crate) fn new(dataset: Dataset, source: LatentSource, raw_radar: bool, dist: Dist) -> LatentData {
        LatentData { dataset: Rc::new(dataset), source: Rc::new(source), raw_radar, occupancy: false, dist }
    }

    /// The frames read.
    pub(crate) fn dataset(&self) -> &Dataset {
        &self.dataset
    }

    /// `(D, H, W)` of the latents.
    pub(crate) fn latent_grid(&self) -> Result<[i64; 3], TrainError> {
        let s = self.source.read(&self.dataset, 0)?.0.size();
        Ok([s[1], s[2], s[3]])
    }

    /// Statistics of every frame's latents: targets scaled to `sigma_data`,
    /// conditions to 1.
    pub(crate) fn measure_norm(&self, sigma_data: f64) -> Result<LatentNorm, TrainError> {
        let (mut ys, mut cs) = (ChannelMoments::default(), ChannelMoments::default());
        for i in 0..self.dataset.len() {
            let (y, c) = self.source.read(&self.dataset, i)?;
            ys.push(&y);
            cs.push(&c);
        }
        let norm = LatentNorm { target: ys.finish(sigma_data), cond: cs.finish(1.0) };
        log::info!(
            "latent statistics of {} frames: target std {:?}, condition std {:?} (normalised to {sigma_data} and 1)",
            self.dataset.len(),
            norm.target.std,
            norm.cond.std
        );
        Ok(norm)
    }

    /// The seeded order of batches of `batch_size` frames, this rank's shard.
    pub(crate) fn order(&self, batch_size: usize, shuffle: bool, seed: u64) -> Order {
        Order {
            frames: self.dataset.len(),
            batch_size,
            shuffle,
            seed,
            drop_last: false,
            rank: self.dist.rank(),
            world_size: self.dist.world_size(),
            pad_shards: true,
        }
    }

    /// The batches of `epoch` from `cursor` on.
    pub(crate) fn batches(
        &self,
        order: Order,
        epoch: usize,
        cursor: usize,
    ) -> Box<dyn Iterator<Item = Result<LatentBatch, TrainError>>> {
        let (ds, source, raw, occ) = (self.dataset.clone(), self.source.clone(), self.raw_radar, self.occupancy);
        Box::new(order.batches(epoch as u64).into_iter().skip(cursor).map(move |idx| {
            let (mut ys, mut cs, mut os) = (Vec::new(), Vec::new(), Vec::new());
            for &i in &idx {
                let (y, c) = source.read(&ds, i)?;
                ys.push(y);
                cs.push(if raw { ds.read(i, Modality::Radar)?.to_tensor().squeeze_dim(0) } else { c });
                if occ {
                    let t = ds.read(i, Modality::Target)?.to_tensor().squeeze_dim(0);
                    os.push(t.narrow(0, 0, 1).ge(0.5).to_kind(Kind::Float));
                }
            }
            let ids = idx.iter().map(|&i| ds.frames()[i].id.to_string()).collect();
            let occupancy = occ.then(|| Tensor::stack(&os, 0));
            Ok(LatentBatch { y: Tensor::stack(&ys, 0), cond: Tensor::stack(&cs, 0), ids, occupancy })
        }))
    }

    /// A batch on `device`: target latents and the condition's input,
    /// normalised by `norm` (a raw radar grid scaled per channel by
    /// `radar_scale` instead); `None` when anything is not finite.
    pub(crate) fn tensors(
        &self,
        batch: &LatentBatch,
        norm: Option<&LatentNorm>,
        radar_scale: &[f64],
        device: Device,
    ) -> Option<(Tensor, Tensor)> {
        let (mut y, mut cond) = (batch.y.to_device(device), batch.cond.to_device(device).to_kind(Kind::Float));
        let finite = |t: &Tensor| t.isfinite().all().int64_value(&[]) != 0;
        if !finite(&y) || !finite(&cond) {
            return None;
        }
        if let Some(n) = norm {
            y = n.target.apply(&y);
            if !self.raw_radar {
                cond = n.cond.apply(&cond);
            }
        }
        if self.raw_radar {
            let s = Tensor::from_slice(radar_scale).to_kind(Kind::Float).to_device(device);
            cond *= s.view([1, -1, 1, 1, 1]);
        }
        Some((y, cond))
    }
}
