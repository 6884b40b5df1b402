//! The sparse loader: batches of occupied voxels (batched `(b, z, y, x)`
//! sites and their float16-rounded features) read by worker threads
//! straight from the frames' sites ([`crate::data::sites`]) into a bounded
//! channel: at most `prefetch` batches wait decoded, so host memory scales
//! with the occupied voxels, never with the grid. The same [`Sampler`] as
//! the dense loader decides the order (seeded permutation per epoch, rank
//! shards); batches arrive in order whatever the number of workers. Of the
//! augmentations only flips are defined on sites; the others are refused
//! by name.

use std::collections::BTreeMap;
use std::sync::Arc;

use crossbeam_channel::{bounded, Receiver};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::Sampler;
use crate::data::augment::Augmentation;
use crate::data::{DataError, Dataset, FrameId, Modality};
use crate::sys::mix;

/// The sites of one modality of a batch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SiteBatch {
    /// `[b, z, y, x]` per occupied voxel, `b` the frame's place in the batch.
    pub sites: Vec<[i64; 4]>,
    /// `channels` values per site, row-major.
    pub feats: Vec<f32>,
    /// Channels per site.
    pub channels: usize,
}

/// One batch of sparse frames.
#[derive(Debug, Clone, PartialEq)]
pub struct SparseBatch {
    /// The frames, in batch order.
    pub ids: Vec<FrameId>,
    /// Their dataset indices.
    pub indices: Vec<usize>,
    /// `(Z, H, W)` of the padded grid every site lies in.
    pub grid: [usize; 3],
    /// The training targets.
    pub target: SiteBatch,
    /// The radar conditions (when loaded).
    pub radar: Option<SiteBatch>,
}

/// Options of a [`SparseLoader`].
#[derive(Debug, Clone, PartialEq)]
pub struct SparseLoaderConfig {
    /// Frames per batch.
    pub batch_size: usize,
    /// New seeded permutation each epoch.
    pub shuffle: bool,
    /// Seed of the permutation and of the flips.
    pub seed: u64,
    /// Decoding threads.
    pub num_workers: usize,
    /// Batches decoded ahead of the consumer.
    pub prefetch: usize,
    /// This process's rank.
    pub rank: usize,
    /// Number of ranks.
    pub world_size: usize,
    /// Give every rank as many batches (see [`Sampler::pad_shards`]).
    pub pad_shards: bool,
    /// Read the radar sites too.
    pub load_radar: bool,
    /// Probability of a flip per frame (half along H, half along W, over
    /// the padded grid, as the dense augmentation flips); 0 = off.
    pub flip_prob: f32,
}

impl Default for SparseLoaderConfig {
    fn default() -> Self {
        SparseLoaderConfig {
            batch_size: 1,
            shuffle: false,
            seed: 0,
            num_workers: 1,
            prefetch: 2,
            rank: 0,
            world_size: 1,
            pad_shards: true,
            load_radar: false,
            flip_prob: 0.0,
        }
    }
}

impl SparseLoaderConfig {
    /// The flip probability of `aug`, refusing every augmentation that is
    /// not defined on sites (named in the error).
    pub fn flips_of(aug: &Augmentation) -> Result<f32, DataError> {
        let mut refused = Vec::new();
        if aug.cutout.is_some() {
            refused.push("cutout");
        }
        if aug.mixup.is_some() {
            refused.push("mixup");
        }
        let mut flip = 0.0;
        if let Some(v) = &aug.voxel {
            for (on, name) in [
                (v.enable_rotate, "rotate"),
                (v.enable_noise, "noise"),
                (v.enable_dropout, "dropout"),
                (v.enable_intensity_jitter, "intensity_jitter"),
                (v.enable_doppler_jitter, "doppler_jitter"),
            ] {
                if on {
                    refused.push(name);
                }
            }
            if v.enable_flip {
                flip = v.flip_prob;
            }
        }
        if !refused.is_empty() {
            return Err(DataError::Config(format!(
                "sparse frames support flips only; turn off: {} (enable_* = false, or remove the section)",
                refused.join(", ")
            )));
        }
        Ok(flip)
    }
}

/// Batches of sparse frames; see the module docs.
#[derive(Debug, Clone)]
pub struct SparseLoader {
    dataset: Arc<Dataset>,
    sampler: Sampler,
    config: SparseLoaderConfig,
}

impl SparseLoader {
    /// A loader over `dataset`, which must use a pad layout and one grid.
    pub fn new(dataset: Dataset, config: SparseLoaderConfig) -> Result<SparseLoader, DataError> {
        if config.batch_size == 0 || config.world_size == 0 || config.rank >= config.world_size {
            return Err(DataError::Config(format!(
                "batch_size >= 1 and rank < world_size needed, got batch {} rank {} of {}",
                config.batch_size, config.rank, config.world_size
            )));
        }
        if !(0.0..=1.0).contains(&config.flip_prob) {
            return Err(DataError::Config(format!("flip_prob must lie in [0, 1], got {}", config.flip_prob)));
        }
        if let Some(i) = (1..dataset.len()).find(|&i| dataset.output_shape(i) != dataset.output_shape(0)) {
            return Err(DataError::Config(format!(
                "frame {} has grid {:?}, frame {} has {:?}: one batch needs one grid",
                dataset.frames()[i].id,
                dataset.output_shape(i),
                dataset.frames()[0].id,
                dataset.output_shape(0)
            )));
        }
        let sampler = Sampler {
            frames: dataset.len(),
            batch_size: config.batch_size,
            shuffle: config.shuffle,
            seed: config.seed,
            drop_last: false,
            rank: config.rank,
            world_size: config.world_size,
            pad_shards: config.pad_shards,
        };
        Ok(SparseLoader { dataset: Arc::new(dataset), sampler, config })
    }

    /// Batches per epoch on this rank.
    pub fn len(&self) -> usize {
        self.sampler.len()
    }

    /// Whether an epoch has no batch.
    pub fn is_empty(&self) -> bool {
        self.sampler.is_empty()
    }

    /// The dataset.
    pub fn dataset(&self) -> &Dataset {
        &self.dataset
    }

    /// The batches of `epoch` from batch `cursor` on, in order.
    pub fn epoch_from(&self, epoch: u64, cursor: usize) -> impl Iterator<Item = Result<SparseBatch, DataError>> {
        let batches: Vec<(usize, Vec<usize>)> =
            self.sampler.batches(epoch).into_iter().enumerate().skip(cursor).collect();
        let (jobs_tx, jobs_rx) = crossbeam_channel::unbounded();
        for job in &batches {
            jobs_tx.send(job.clone()).expect("receiver alive");
        }
        drop(jobs_tx);
        let (tx, rx) = bounded(self.config.prefetch.max(1));
        for _ in 0..self.config.num_workers.max(1) {
            let (jobs, tx, ds, cfg) = (jobs_rx.clone(), tx.clone(), self.dataset.clone(), self.config.clone());
            std::thread::spawn(move || {
                for (pos, frames) in jobs.iter() {
                    let batch = read_batch(&ds, &frames, &cfg, epoch, pos);
                    if tx.send((pos, batch)).is_err() {
                        return; // the epoch was dropped
                    }
                }
            });
        }
        InOrder { rx, next: cursor, end: cursor + batches.len(), waiting: BTreeMap::new() }
    }
}

/// Reorders the workers' results by batch position.
struct InOrder {
    rx: Receiver<(usize, Result<SparseBatch, DataError>)>,
    next: usize,
    end: usize,
    waiting: BTreeMap<usize, Result<SparseBatch, DataError>>,
}

impl Iterator for InOrder {
    type Item = Result<SparseBatch, DataError>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.end {
            return None;
        }
        loop {
            if let Some(b) = self.waiting.remove(&self.next) {
                self.next += 1;
                return Some(b);
            }
            match self.rx.recv() {
                Ok((pos, b)) => {
                    self.waiting.insert(pos, b);
                }
                Err(_) => {
                    self.next = self.end;
                    return Some(Err(DataError::Config("the sparse loader's workers stopped early".into())));
                }
            }
        }
    }
}

fn read_batch(
    ds: &Dataset,
    frames: &[usize],
    cfg: &SparseLoaderConfig,
    epoch: u64,
    pos: usize,
) -> Result<SparseBatch, DataError> {
    let layout = ds.config().layout;
    let mut target = SiteBatch::default();
    let mut radar = cfg.load_radar.then(SiteBatch::default);
    let mut grid = [0; 3];
    for (b, &i) in frames.iter().enumerate() {
        let mut rng = ChaCha8Rng::seed_from_u64(mix(cfg.seed, epoch, (pos * cfg.batch_size + b) as u64 + 1));
        let flip = (cfg.flip_prob > 0.0 && rng.random::<f32>() < cfg.flip_prob).then(|| rng.random::<f32>() < 0.5);
        let mut push = |m: Modality, into: &mut SiteBatch| -> Result<(), DataError> {
            let s = ds.file(i, m)?.read_sites(layout)?;
            grid = s.grid;
            into.channels = s.channels;
            let [_, gh, gw] = s.grid.map(|v| v as i64);
            into.sites.extend(s.batched(b as i64).map(|[b, z, h, w]| match flip {
                Some(true) => [b, z, h, gw - 1 - w],
                Some(false) => [b, z, gh - 1 - h, w],
                None => [b, z, h, w],
            }));
            into.feats.extend_from_slice(&s.feats);
            Ok(())
        };
        push(Modality::Target, &mut target)?;
        if let Some(r) = radar.as_mut() {
            push(Modality::Radar, r)?;
        }
    }
    let ids = frames.iter().map(|&i| ds.frames()[i].id.clone()).collect();
    Ok(SparseBatch { ids, indices: frames.to_vec(), grid, target, radar })
}
