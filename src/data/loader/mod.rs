//! Bounded prefetching loader: worker threads decode frames into recycled
//! f16 batch tensors while the trainer consumes earlier batches.
//!
//! Memory is bounded by construction: a [`pool`] of `prefetch + num_workers`
//! buffer pairs is the only source of batch memory, and a batch returns its
//! buffers to the pool when dropped. A dispatcher hands buffers to batches
//! in batch order, so the batch the consumer waits for always gets one; the
//! consumer ([`epoch`]) reorders results, so batches arrive in order
//! whatever the number of workers ([`worker`]). The [`sampler`] decides the
//! order; every random draw is seeded by (seed, epoch, position).

pub mod epoch;
pub mod pool;
pub mod sampler;
pub mod site_augment;
pub mod sparse;
pub mod worker;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{bounded, unbounded};

pub use epoch::{Batch, Epoch, PoolWaker};
pub use pool::PoolStats;
pub use sampler::Sampler;
pub use sparse::{SiteBatch, SparseBatch, SparseLoader, SparseLoaderConfig};

use self::pool::{BufferPair, Pool};
use self::worker::WorkerCtx;
use crate::data::augment::{AugmentError, Augmentation};
use crate::data::{DataError, Dataset, Split};

/// Options of a [`Loader`]. Defaults follow the seed's lean loader: batch 1,
/// one worker, prefetch 2, no pinned memory, no augmentation, no shuffle.
#[derive(Debug, Clone, PartialEq)]
pub struct LoaderConfig {
    /// Frames per batch.
    pub batch_size: usize,
    /// New seeded permutation each epoch.
    pub shuffle: bool,
    /// Seed of the permutation and of augmentation.
    pub seed: u64,
    /// Drop a last batch smaller than `batch_size`.
    pub drop_last: bool,
    /// Decoding threads.
    pub num_workers: usize,
    /// Batches decoded ahead of the consumer.
    pub prefetch: usize,
    /// Page-locked batch memory (honoured only when CUDA is available).
    pub pin_memory: bool,
    /// This process's rank for data-parallel sharding.
    pub rank: usize,
    /// Number of ranks.
    pub world_size: usize,
    /// Give every rank as many batches, repeating frames to pad (training;
    /// see [`Sampler::pad_shards`]); without, each frame is read once.
    pub pad_shards: bool,
    /// Decode the radar grids too (VAE training needs only the targets:
    /// without radar, `Batch::radar` is an empty tensor and decode work and
    /// batch memory halve).
    pub load_radar: bool,
    /// Augmentation, applied on the train split only.
    pub augmentation: Option<Augmentation>,
    /// Longest wait for one batch before the epoch yields
    /// [`DataError::Timeout`] naming its files (`None`: wait forever).
    pub read_timeout: Option<Duration>,
    /// Test hook: a worker panics when it reaches this dataset index.
    #[doc(hidden)]
    pub fault_panic_on_frame: Option<usize>,
}

/// Default [`LoaderConfig::read_timeout`]: far above any real frame read
/// (a full-grid dense frame reads in about a second).
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(120);

impl Default for LoaderConfig {
    fn default() -> Self {
        LoaderConfig {
            batch_size: 1,
            shuffle: false,
            seed: 0,
            drop_last: false,
            num_workers: 1,
            prefetch: 2,
            pin_memory: false,
            rank: 0,
            world_size: 1,
            pad_shards: true,
            load_radar: true,
            augmentation: None,
            read_timeout: Some(DEFAULT_READ_TIMEOUT),
            fault_panic_on_frame: None,
        }
    }
}

/// Iterates a [`Dataset`] in batches of f16 tensors, decoding ahead on
/// worker threads with bounded memory.
pub struct Loader {
    dataset: Arc<Dataset>,
    config: LoaderConfig,
    shape: [usize; 4],
    pool: Arc<Pool>,
    augment: Option<Arc<Augmentation>>,
}

impl std::fmt::Debug for Loader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loader").field("frames", &self.dataset.len()).field("config", &self.config).finish()
    }
}

impl Loader {
    /// Checks the config (and the augmentation against the grid) and sizes
    /// the buffer pool; no memory is allocated until the first batch.
    pub fn new(dataset: Dataset, config: LoaderConfig) -> Result<Loader, DataError> {
        let bad = |m: &str| Err(DataError::Config(m.into()));
        if config.batch_size == 0 {
            return bad("batch_size must be >= 1");
        }
        if config.num_workers == 0 {
            return bad("num_workers must be >= 1");
        }
        if config.world_size == 0 || config.rank >= config.world_size {
            return bad("rank must be < world_size");
        }
        let shape = dataset.output_shape(0);
        for i in 1..dataset.len() {
            let s = dataset.output_shape(i);
            if s != shape {
                let f = dataset.frames();
                return Err(DataError::MixedShapes {
                    a: f[0].id.clone(),
                    a_shape: shape,
                    b: f[i].id.clone(),
                    b_shape: s,
                });
            }
        }
        let augment = match &config.augmentation {
            Some(a) if a.is_active() && dataset.split() == Split::Train => {
                if !config.load_radar {
                    return bad("augmentation moves target and radar together: it needs load_radar");
                }
                a.validate(Some((shape[2], shape[3])))?;
                if a.mixup.as_ref().is_some_and(|m| m.prob > 0.0) && config.batch_size < 2 {
                    return Err(AugmentError::MixupNeedsBatch(config.batch_size).into());
                }
                Some(Arc::new(a.clone()))
            }
            _ => None,
        };
        let capacity = config.prefetch + config.num_workers;
        let pinned = config.pin_memory && tch::Cuda::is_available();
        let dims = [config.batch_size, shape[0], shape[1], shape[2], shape[3]].map(|d| d as i64);
        Ok(Loader {
            dataset: Arc::new(dataset),
            pool: Arc::new(Pool::new(capacity, dims, pinned, config.load_radar)),
            config,
            shape,
            augment,
        })
    }

    /// The dataset.
    pub fn dataset(&self) -> &Dataset {
        &self.dataset
    }

    /// The config.
    pub fn config(&self) -> &LoaderConfig {
        &self.config
    }

    /// `(C, Z, H, W)` of each sample.
    pub fn sample_shape(&self) -> [usize; 4] {
        self.shape
    }

    /// Bytes of one batch (target, and radar when loaded).
    pub fn batch_bytes(&self) -> usize {
        let grids = if self.config.load_radar { 2 } else { 1 };
        grids * 2 * self.config.batch_size * self.shape.iter().product::<usize>()
    }

    /// Pool counters.
    pub fn pool_stats(&self) -> PoolStats {
        self.pool.lock().stats
    }

    /// The order of frames and batches.
    pub fn sampler(&self) -> Sampler {
        let c = &self.config;
        Sampler {
            frames: self.dataset.len(),
            batch_size: c.batch_size,
            shuffle: c.shuffle,
            seed: c.seed,
            drop_last: c.drop_last,
            rank: c.rank,
            world_size: c.world_size,
            pad_shards: c.pad_shards,
        }
    }

    /// Frame indices of this rank for `epoch`, in order (see [`Sampler::order`]).
    pub fn epoch_order(&self, epoch: u64) -> Vec<usize> {
        self.sampler().order(epoch)
    }

    /// Batches of frame indices for `epoch`.
    pub fn epoch_batches(&self, epoch: u64) -> Vec<Vec<usize>> {
        self.sampler().batches(epoch)
    }

    /// Batches per epoch.
    pub fn len(&self) -> usize {
        self.sampler().len()
    }

    /// Whether an epoch yields no batch.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Starts the workers of one epoch; the iterator yields its batches in
    /// order. Dropping the iterator stops and joins the workers.
    pub fn epoch(&self, epoch: u64) -> Epoch {
        self.epoch_from(epoch, 0)
    }

    /// Like [`Loader::epoch`], skipping the first `start` batches (resume).
    pub fn epoch_from(&self, epoch: u64, start: usize) -> Epoch {
        let plan: Arc<Vec<Vec<usize>>> = Arc::new(self.epoch_batches(epoch));
        let cancel = Arc::new(AtomicBool::new(false));
        let (job_tx, job_rx) = bounded::<(usize, BufferPair)>(0);
        let (res_tx, res_rx) = unbounded();
        let mut threads = Vec::new();
        {
            let (pool, plan, cancel) = (self.pool.clone(), plan.clone(), cancel.clone());
            threads.push(std::thread::spawn(move || {
                for b in start..plan.len() {
                    let Some(pair) = pool.acquire(&cancel) else { return };
                    if let Err(e) = job_tx.send((b, pair)) {
                        pool.release(e.into_inner().1, false);
                        return;
                    }
                }
            }));
        }
        for _ in 0..self.config.num_workers {
            let job_rx = job_rx.clone();
            let res_tx = res_tx.clone();
            let ctx = WorkerCtx {
                dataset: self.dataset.clone(),
                plan: plan.clone(),
                pool: self.pool.clone(),
                augment: self.augment.clone(),
                shape: self.shape,
                seed: self.config.seed,
                epoch,
                batch_size: self.config.batch_size,
                rank: self.config.rank,
                world: self.config.world_size,
                cancel: cancel.clone(),
                fault: self.config.fault_panic_on_frame,
            };
            threads.push(std::thread::spawn(move || {
                while let Ok((b, pair)) = job_rx.recv() {
                    if ctx.cancel.load(Ordering::Acquire) {
                        ctx.pool.release(pair, false);
                        continue;
                    }
                    let result = ctx.build(b, pair);
                    if res_tx.send((b, result)).is_err() {
                        return;
                    }
                }
            }));
        }
        Epoch {
            dataset: self.dataset.clone(),
            pool: self.pool.clone(),
            plan,
            next: start,
            pending: BTreeMap::new(),
            results: res_rx,
            cancel,
            threads,
            read_timeout: self.config.read_timeout,
        }
    }
}
