//! Bounded prefetching loader: worker threads decode frames into recycled
//! f16 batch tensors while the trainer consumes earlier batches.
//!
//! Memory is bounded by construction: a pool of `prefetch + num_workers`
//! buffer pairs is the only source of batch memory, and a batch returns its
//! buffers to the pool when dropped. A dispatcher hands buffers to batches
//! in batch order, so the batch the consumer waits for always gets one; the
//! consumer reorders results, so batches arrive in order whatever the
//! number of workers. Every random draw is seeded by (seed, epoch, position).

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use crossbeam_channel::{bounded, unbounded, Receiver};
use half::f16;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::{Device, Kind, Tensor};

use crate::augment::{AugmentError, Augmentation};
use crate::dataset::{Dataset, DatasetError, FrameId, Modality, Split};
use crate::shim::memory_owners;

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
    /// Decode the radar grids too (VAE training needs only the targets:
    /// without radar, `Batch::radar` is an empty tensor and decode work and
    /// batch memory halve).
    pub load_radar: bool,
    /// Augmentation, applied on the train split only.
    pub augmentation: Option<Augmentation>,
    /// Test hook: a worker panics when it reaches this dataset index.
    #[doc(hidden)]
    pub fault_panic_on_frame: Option<usize>,
}

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
            load_radar: true,
            augmentation: None,
            fault_panic_on_frame: None,
        }
    }
}

/// Errors of the loader.
#[derive(Debug, thiserror::Error)]
pub enum LoaderError {
    /// Reading a frame failed (the error names the file).
    #[error("batch {batch}: {source}")]
    Read {
        /// Batch index in the epoch.
        batch: usize,
        /// The reader's error.
        source: DatasetError,
    },
    /// A worker panicked while building a batch.
    #[error("batch {batch}: worker panicked: {message}")]
    WorkerPanic {
        /// Batch index in the epoch.
        batch: usize,
        /// The panic message.
        message: String,
    },
    /// Workers stopped before delivering a batch.
    #[error("batch {0}: the loader's workers stopped")]
    Disconnected(usize),
    /// The consumer holds every buffer, so no further batch can be built.
    #[error("all {0} batch buffers are held by the consumer: drop a batch before asking for the next")]
    AllBuffersHeld(usize),
    /// Frames of different output shapes cannot be batched.
    #[error("frame {a} has output shape {a_shape:?} but {b} has {b_shape:?}: cannot batch them")]
    MixedShapes {
        /// First frame.
        a: FrameId,
        /// Its shape.
        a_shape: [usize; 4],
        /// Differing frame.
        b: FrameId,
        /// Its shape.
        b_shape: [usize; 4],
    },
    /// An invalid option.
    #[error("invalid loader config: {0}")]
    Config(String),
    /// An invalid augmentation config.
    #[error(transparent)]
    Augment(#[from] AugmentError),
}

/// One batch: f16 `(B, C, Z, H, W)` target and radar tensors plus frame ids
/// (radar is empty when the loader was told not to load it).
/// Dropping it returns its memory to the loader's pool.
pub struct Batch {
    /// Training targets.
    pub target: Tensor,
    /// Radar conditions.
    pub radar: Tensor,
    /// Frames, in batch order.
    pub ids: Vec<FrameId>,
    /// Dataset indices of the frames.
    pub indices: Vec<usize>,
    lease: Option<(BufferPair, Arc<Pool>)>,
}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch").field("shape", &self.target.size()).field("ids", &self.ids).finish()
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        // Release the caller-facing handles first so the pool sees only its own.
        self.target = Tensor::new();
        self.radar = Tensor::new();
        if let Some((pair, pool)) = self.lease.take() {
            pool.release(pair, true);
        }
    }
}

struct BufferPair {
    target: Tensor,
    radar: Tensor,
}

/// Counters of the buffer pool, for tests and benches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Most buffer pairs that may exist: `prefetch + num_workers`.
    pub capacity: usize,
    /// Buffer pairs allocated so far.
    pub allocated: usize,
    /// Times a returned buffer pair was handed out again.
    pub reused: usize,
    /// Returned pairs not reused because a caller kept a view of them.
    pub escaped: usize,
    /// Most pairs out of the pool at once (never above `capacity`).
    pub max_outstanding: usize,
    /// Pairs out of the pool now.
    pub outstanding: usize,
}

#[derive(Default)]
struct PoolState {
    free: Vec<BufferPair>,
    stats: PoolStats,
    with_consumer: usize,
}

struct Pool {
    state: Mutex<PoolState>,
    cond: Condvar,
    shape: [i64; 5],
    pinned: bool,
    radar: bool,
}

impl Pool {
    fn new(capacity: usize, shape: [i64; 5], pinned: bool, radar: bool) -> Pool {
        let state = PoolState { stats: PoolStats { capacity, ..Default::default() }, ..Default::default() };
        Pool { state: Mutex::new(state), cond: Condvar::new(), shape, pinned, radar }
    }

    fn alloc(&self, used: bool) -> Tensor {
        if !used {
            return Tensor::empty([0], (Kind::Half, Device::Cpu));
        }
        let t = Tensor::empty(self.shape, (Kind::Half, Device::Cpu));
        if self.pinned {
            t.pin_memory(Device::Cuda(0))
        } else {
            t
        }
    }

    /// Blocks until a buffer pair is free (or may be allocated); `None` once cancelled.
    fn acquire(&self, cancel: &AtomicBool) -> Option<BufferPair> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if cancel.load(Ordering::Acquire) {
                return None;
            }
            if let Some(pair) = st.free.pop() {
                st.stats.reused += 1;
                return Some(Self::take(&mut st, pair));
            }
            if st.stats.allocated - st.stats.escaped < st.stats.capacity {
                st.stats.allocated += 1;
                drop(st);
                let pair = BufferPair { target: self.alloc(true), radar: self.alloc(self.radar) };
                let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
                return Some(Self::take(&mut st, pair));
            }
            st = self.cond.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn take(st: &mut PoolState, pair: BufferPair) -> BufferPair {
        st.stats.outstanding += 1;
        st.stats.max_outstanding = st.stats.max_outstanding.max(st.stats.outstanding);
        pair
    }

    /// Returns a pair; it is reused only if nobody else shares its storage.
    fn release(&self, pair: BufferPair, from_consumer: bool) {
        let exclusive = memory_owners(&pair.target) == 1 && memory_owners(&pair.radar) == 1;
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.stats.outstanding -= 1;
        if from_consumer {
            st.with_consumer -= 1;
        }
        if exclusive {
            st.free.push(pair);
        } else {
            st.stats.escaped += 1; // a view escaped: leave the memory to it
        }
        drop(st);
        self.cond.notify_all();
    }

    fn wake_all(&self) {
        let _guard = self.state.lock().unwrap_or_else(|e| e.into_inner());
        self.cond.notify_all();
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
    pub fn new(dataset: Dataset, config: LoaderConfig) -> Result<Loader, LoaderError> {
        let bad = |m: &str| Err(LoaderError::Config(m.into()));
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
                return Err(LoaderError::MixedShapes {
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
        self.pool.state.lock().unwrap_or_else(|e| e.into_inner()).stats
    }

    /// Frame indices of this rank for `epoch`, in order (DistributedSampler
    /// contract: the permutation is padded by wrapping to a multiple of
    /// `world_size`, and rank `r` takes every `world_size`-th entry from `r`).
    pub fn epoch_order(&self, epoch: u64) -> Vec<usize> {
        let n = self.dataset.len();
        let mut perm: Vec<usize> = (0..n).collect();
        if self.config.shuffle {
            perm.shuffle(&mut ChaCha8Rng::seed_from_u64(mix(self.config.seed, epoch, 0)));
        }
        let world = self.config.world_size;
        let total = n.div_ceil(world) * world;
        let padded: Vec<usize> = perm.iter().copied().cycle().take(total).collect();
        padded.into_iter().skip(self.config.rank).step_by(world).collect()
    }

    /// Batches of frame indices for `epoch`.
    pub fn epoch_batches(&self, epoch: u64) -> Vec<Vec<usize>> {
        let b = self.config.batch_size;
        let mut batches: Vec<Vec<usize>> = self.epoch_order(epoch).chunks(b).map(<[usize]>::to_vec).collect();
        if self.config.drop_last && batches.last().is_some_and(|l| l.len() < b) {
            batches.pop();
        }
        batches
    }

    /// Batches per epoch.
    pub fn len(&self) -> usize {
        self.epoch_batches(0).len()
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
        }
    }
}

/// SplitMix64 of (seed, epoch, index): independent seeds per draw site.
fn mix(seed: u64, epoch: u64, index: u64) -> u64 {
    let mut z = seed ^ epoch.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ index.wrapping_mul(0xc2b2_ae3d_27d4_eb4f);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

struct WorkerCtx {
    dataset: Arc<Dataset>,
    plan: Arc<Vec<Vec<usize>>>,
    pool: Arc<Pool>,
    augment: Option<Arc<Augmentation>>,
    shape: [usize; 4],
    seed: u64,
    epoch: u64,
    batch_size: usize,
    rank: usize,
    world: usize,
    cancel: Arc<AtomicBool>,
    fault: Option<usize>,
}

type Built = Result<(BufferPair, usize), LoaderError>;

impl WorkerCtx {
    /// Fills a buffer pair with batch `b`; on failure the pair goes back.
    fn build(&self, b: usize, mut pair: BufferPair) -> Built {
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| self.fill(b, &mut pair)));
        match outcome {
            Ok(Ok(n)) => Ok((pair, n)),
            Ok(Err(source)) => {
                self.pool.release(pair, false);
                Err(LoaderError::Read { batch: b, source })
            }
            Err(panic) => {
                self.pool.release(pair, false);
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                Err(LoaderError::WorkerPanic { batch: b, message })
            }
        }
    }

    fn fill(&self, b: usize, pair: &mut BufferPair) -> Result<usize, DatasetError> {
        let frames = &self.plan[b];
        let per: usize = self.shape.iter().product();
        let target = tensor_slice(&mut pair.target);
        let radar = tensor_slice(&mut pair.radar);
        let load_radar = !radar.is_empty();
        for (s, &i) in frames.iter().enumerate() {
            if self.cancel.load(Ordering::Acquire) {
                return Ok(0); // the epoch is being dropped: stop between frames
            }
            assert!(self.fault != Some(i), "injected fault at frame {i}");
            let t = &mut target[s * per..(s + 1) * per];
            self.dataset.read_into(i, Modality::Target, t)?;
            if !load_radar {
                continue; // Loader::new refuses augmentation without radar
            }
            let r = &mut radar[s * per..(s + 1) * per];
            self.dataset.read_into(i, Modality::Radar, r)?;
            if let Some(aug) = &self.augment {
                // Global position in the epoch's padded permutation: the same
                // frame slot gets the same draws whatever the worker count.
                let pos = (b * self.batch_size + s) * self.world + self.rank;
                let mut rng = ChaCha8Rng::seed_from_u64(mix(self.seed ^ 0xa5a5, self.epoch, pos as u64));
                aug.apply_sample(self.shape, t, r, &mut rng);
            }
        }
        if let (Some(aug), true) = (&self.augment, load_radar) {
            let n = frames.len();
            let mut rng = ChaCha8Rng::seed_from_u64(mix(self.seed ^ 0x5a5a, self.epoch, b as u64));
            aug.apply_batch(n, &mut target[..n * per], &mut radar[..n * per], &mut rng);
        }
        Ok(frames.len())
    }
}

/// The f16 elements of a pooled CPU buffer, writable.
fn tensor_slice(t: &mut Tensor) -> &mut [f16] {
    assert!(t.kind() == Kind::Half && t.device() == Device::Cpu && t.is_contiguous());
    let n = t.numel();
    if n == 0 {
        return &mut []; // an unused (radar) buffer: its data pointer may be null
    }
    // SAFETY: pooled buffers are contiguous CPU f16 tensors allocated by the
    // pool; the dispatcher hands each to exactly one job at a time and the
    // pool re-issues a buffer only when its storage has no other owner
    // (`memory_owners == 1`), so nobody else reads or writes this memory
    // while the worker fills it. The slice does not outlive `t`'s borrow.
    unsafe { std::slice::from_raw_parts_mut(t.data_ptr() as *mut f16, n) }
}

/// The batches of one epoch, in order. Dropping it stops the workers.
pub struct Epoch {
    dataset: Arc<Dataset>,
    pool: Arc<Pool>,
    plan: Arc<Vec<Vec<usize>>>,
    next: usize,
    pending: BTreeMap<usize, Built>,
    results: Receiver<(usize, Built)>,
    cancel: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Epoch {
    /// Batches left, including any prefetched.
    pub fn remaining(&self) -> usize {
        self.plan.len() - self.next
    }

    /// Index of the next batch in the epoch.
    pub fn position(&self) -> usize {
        self.next
    }

    fn make_batch(&self, b: usize, built: Built) -> Result<Batch, LoaderError> {
        let (pair, n) = built?;
        self.pool.state.lock().unwrap_or_else(|e| e.into_inner()).with_consumer += 1;
        let view = |t: &Tensor| {
            if n == self.pool.shape[0] as usize || t.numel() == 0 {
                t.shallow_clone()
            } else {
                t.narrow(0, 0, n as i64)
            }
        };
        let (target, radar) = (view(&pair.target), view(&pair.radar));
        let indices = self.plan[b].clone();
        Ok(Batch {
            target,
            radar,
            ids: indices.iter().map(|&i| self.dataset.frames()[i].id.clone()).collect(),
            indices,
            lease: Some((pair, self.pool.clone())),
        })
    }
}

impl Iterator for Epoch {
    type Item = Result<Batch, LoaderError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.plan.len() {
            return None;
        }
        let b = self.next;
        self.next += 1;
        loop {
            if let Some(built) = self.pending.remove(&b) {
                return Some(self.make_batch(b, built));
            }
            {
                let st = self.pool.state.lock().unwrap_or_else(|e| e.into_inner());
                if st.with_consumer >= st.stats.capacity {
                    return Some(Err(LoaderError::AllBuffersHeld(st.stats.capacity)));
                }
            }
            match self.results.recv_timeout(std::time::Duration::from_millis(50)) {
                Ok((i, built)) => {
                    self.pending.insert(i, built);
                }
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => continue,
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                    return Some(Err(LoaderError::Disconnected(b)));
                }
            }
        }
    }
}

impl Epoch {
    /// Returns the buffers of finished but unconsumed batches to the pool.
    fn drain_results(&mut self) {
        let pending = std::mem::take(&mut self.pending).into_values();
        for (pair, _) in pending.chain(self.results.try_iter().map(|(_, built)| built)).flatten() {
            self.pool.release(pair, false);
        }
    }
}

impl Drop for Epoch {
    fn drop(&mut self) {
        self.cancel.store(true, Ordering::Release);
        self.pool.wake_all();
        for t in std::mem::take(&mut self.threads) {
            // Workers finish at most the frame they are decoding, then see the flag;
            // draining meanwhile lets the dispatcher's last job complete.
            while !t.is_finished() {
                self.drain_results();
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            let _ = t.join();
        }
        self.drain_results();
    }
}
