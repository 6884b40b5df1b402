//! The sparse loader: batches of occupied voxels (batched `(b, z, y, x)`
//! sites and their float16-rounded features) read by worker threads
//! straight from the frames' sites ([`crate::data::sites`]) into a bounded
//! channel: at most `prefetch` batches wait decoded, so host memory scales
//! with the occupied voxels, never with the grid. The same [`Sampler`] as
//! the dense loader decides the order (seeded permutation per epoch, rank
//! shards); batches arrive in order whatever the number of workers. The
//! voxel augmentations and the cutout apply to the sites as they do to the
//! dense grid ([`super::site_augment`]); mixup is refused by name.

use std::collections::BTreeMap;
use std::sync::Arc;

use crossbeam_channel::{bounded, Receiver};
use rand::SeedableRng;
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
    /// Augmentation of each frame's sites, drawn per (seed, epoch, frame)
    /// ([`super::site_augment`]: the dense augmentation's steps and draws;
    /// mixup is refused); `None` = off.
    pub augmentation: Option<Augmentation>,
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
            augmentation: None,
        }
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
        if let Some(i) = (1..dataset.len()).find(|&i| dataset.output_shape(i) != dataset.output_shape(0)) {
            return Err(DataError::Config(format!(
                "frame {} has grid {:?}, frame {} has {:?}: one batch needs one grid",
                dataset.frames()[i].id,
                dataset.output_shape(i),
                dataset.frames()[0].id,
                dataset.output_shape(0)
            )));
        }
        if let (Some(aug), true) = (&config.augmentation, !dataset.is_empty()) {
            let [_, z, h, w] = dataset.output_shape(0);
            super::site_augment::check(aug, [z, h, w])?;
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
        let mut t = ds.file(i, Modality::Target)?.read_sites(layout)?;
        let mut r = radar.as_ref().map(|_| ds.file(i, Modality::Radar)?.read_sites(layout)).transpose()?;
        if let Some(aug) = &cfg.augmentation {
            super::site_augment::augment_sites(aug, &mut t, r.as_mut(), &mut rng);
        }
        grid = t.grid;
        for (s, into) in [(Some(&t), Some(&mut target)), (r.as_ref(), radar.as_mut())] {
            if let (Some(s), Some(into)) = (s, into) {
                into.channels = s.channels;
                into.sites.extend(s.batched(b as i64));
                into.feats.extend_from_slice(&s.feats);
            }
        }
    }
    let ids = frames.iter().map(|&i| ds.frames()[i].id.clone()).collect();
    Ok(SparseBatch { ids, indices: frames.to_vec(), grid, target, radar })
}
