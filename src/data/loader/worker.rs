//! A loader worker: fills a pooled buffer pair with one batch (decoding
//! each frame straight into it, then augmenting with per-sample seeded
//! draws), turning read errors and panics into typed errors.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use half::f16;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::{Device, Kind, Tensor};

use super::pool::{BufferPair, Pool};
use crate::data::augment::Augmentation;
use crate::data::crop::CropAt;
use crate::data::{DataError, Dataset, Layout, Modality, Split};
use crate::sys::mix;

pub(crate) struct WorkerCtx {
    pub(crate) dataset: Arc<Dataset>,
    pub(crate) plan: Arc<Vec<Vec<usize>>>,
    pub(crate) pool: Arc<Pool>,
    pub(crate) augment: Option<Arc<Augmentation>>,
    pub(crate) shape: [usize; 4],
    pub(crate) seed: u64,
    pub(crate) epoch: u64,
    pub(crate) batch_size: usize,
    pub(crate) rank: usize,
    pub(crate) world: usize,
    pub(crate) cancel: Arc<AtomicBool>,
    pub(crate) fault: Option<usize>,
}

/// A filled pair and how many frames it holds, or the error.
pub(crate) type Built = Result<(BufferPair, usize), DataError>;

impl WorkerCtx {
    /// Fills a buffer pair with batch `b`; on failure the pair goes back.
    pub(crate) fn build(&self, b: usize, mut pair: BufferPair) -> Built {
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| self.fill(b, &mut pair)));
        match outcome {
            Ok(Ok(n)) => Ok((pair, n)),
            Ok(Err(source)) => {
                self.pool.release(pair, false);
                Err(DataError::Batch { batch: b, source: Box::new(source) })
            }
            Err(panic) => {
                self.pool.release(pair, false);
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                Err(DataError::WorkerPanic { batch: b, message })
            }
        }
    }

    fn fill(&self, b: usize, pair: &mut BufferPair) -> Result<usize, DataError> {
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
            let origin = self.read_target(i, t)?;
            if !load_radar {
                continue; // Loader::new refuses augmentation without radar
            }
            let r = &mut radar[s * per..(s + 1) * per];
            match origin {
                Some(o) => self.dataset.read_crop_into(i, Modality::Radar, CropAt::<ChaCha8Rng>::Origin(o), r)?,
                None => self.dataset.read_into(i, Modality::Radar, r).map(|()| [0; 3])?,
            };
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

impl WorkerCtx {
    /// Reads frame `i`'s target; under a crop layout, cut where a draw
    /// seeded by (seed, epoch, frame) says (validation: by frame alone, so
    /// its crops are fixed), returning the corner for the radar.
    fn read_target(&self, i: usize, out: &mut [f16]) -> Result<Option<[usize; 3]>, DataError> {
        let Layout::Crop { focus, .. } = self.dataset.config().layout else {
            return self.dataset.read_into(i, Modality::Target, out).map(|()| None);
        };
        let epoch = if self.dataset.split() == Split::Train { self.epoch } else { u64::MAX };
        let mut rng = ChaCha8Rng::seed_from_u64(mix(self.seed ^ 0xc0c0, epoch, i as u64));
        let at = CropAt::Draw { focus, rng: &mut rng };
        self.dataset.read_crop_into(i, Modality::Target, at, out).map(Some)
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
