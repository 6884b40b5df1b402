//! One epoch of a loader: the batches in order, and the [`Batch`] that
//! gives its buffers back to the pool when dropped. A batch that does not
//! arrive within the read timeout is an error naming its files, not a hang.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use tch::Tensor;

use super::pool::{BufferPair, Pool};
use super::worker::Built;
use crate::data::{DataError, Dataset, FrameId, Modality};

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

/// Wakes a loader's workers: for a holder of a batch's memory outside the
/// batch (a DLPack export) to call once it lets go, so a worker waiting for
/// that buffer takes it back at once.
#[derive(Clone)]
pub struct PoolWaker(Arc<Pool>);

impl PoolWaker {
    /// Wakes the workers.
    pub fn wake(&self) {
        self.0.wake_all();
    }
}

impl Batch {
    /// A waker of this batch's loader (`None` for a batch without one).
    pub fn waker(&self) -> Option<PoolWaker> {
        self.lease.as_ref().map(|(_, pool)| PoolWaker(pool.clone()))
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

/// The batches of one epoch, in order. Dropping it stops the workers.
pub struct Epoch {
    pub(crate) dataset: Arc<Dataset>,
    pub(crate) pool: Arc<Pool>,
    pub(crate) plan: Arc<Vec<Vec<usize>>>,
    pub(crate) next: usize,
    pub(crate) pending: BTreeMap<usize, Built>,
    pub(crate) results: Receiver<(usize, Built)>,
    pub(crate) cancel: Arc<AtomicBool>,
    pub(crate) threads: Vec<JoinHandle<()>>,
    pub(crate) read_timeout: Option<Duration>,
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

    fn make_batch(&self, b: usize, built: Built) -> Result<Batch, DataError> {
        let (pair, n) = built?;
        self.pool.lock().with_consumer += 1;
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

    fn timeout_error(&self, b: usize, waited: Duration) -> DataError {
        let files: Vec<String> = self.plan[b]
            .iter()
            .filter_map(|&i| self.dataset.file(i, Modality::Target).ok())
            .map(|f| f.path().display().to_string())
            .collect();
        DataError::Timeout { batch: b, seconds: waited.as_secs_f64(), frames: files.join(", ") }
    }

    /// Returns the buffers of finished but unconsumed batches to the pool.
    fn drain_results(&mut self) {
        let pending = std::mem::take(&mut self.pending).into_values();
        for (pair, _) in pending.chain(self.results.try_iter().map(|(_, built)| built)).flatten() {
            self.pool.release(pair, false);
        }
    }
}

impl Iterator for Epoch {
    type Item = Result<Batch, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.plan.len() {
            return None;
        }
        let b = self.next;
        self.next += 1;
        let start = Instant::now();
        let mut waiting = false;
        let result = loop {
            if let Some(built) = self.pending.remove(&b) {
                break self.make_batch(b, built);
            }
            {
                let st = self.pool.lock();
                if st.with_consumer >= st.stats.capacity {
                    break Err(DataError::AllBuffersHeld(st.stats.capacity));
                }
            }
            if let Some(limit) = self.read_timeout.filter(|&l| start.elapsed() > l) {
                break Err(self.timeout_error(b, limit));
            }
            match self.results.recv_timeout(Duration::from_millis(50)) {
                Ok((i, built)) => {
                    self.pending.insert(i, built);
                }
                Err(RecvTimeoutError::Timeout) if !waiting => {
                    // waited 50 ms: let workers allocate past pairs the consumer
                    // keeps (a buffer it is about to free would have come back)
                    self.pool.consumer_waiting(true);
                    waiting = true;
                }
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => break Err(DataError::Disconnected(b)),
            }
        };
        if waiting {
            self.pool.consumer_waiting(false);
        }
        Some(result)
    }
}

impl Drop for Epoch {
    fn drop(&mut self) {
        self.cancel.store(true, Ordering::Release);
        self.pool.wake_all();
        // Workers finish at most the frame they are decoding, then see the
        // flag; one stuck in a read that never returns (a hung file system)
        // is left behind after the read timeout rather than hanging the caller.
        let deadline = self.read_timeout.map(|t| Instant::now() + t);
        for t in std::mem::take(&mut self.threads) {
            while !t.is_finished() {
                if deadline.is_some_and(|d| Instant::now() > d) {
                    log::warn!("a loader worker is still blocked in a read: leaving it behind");
                    break;
                }
                // draining meanwhile lets the dispatcher's last job complete
                self.drain_results();
                std::thread::sleep(Duration::from_millis(1));
            }
            if t.is_finished() {
                let _ = t.join();
            }
        }
        self.drain_results();
    }
}
