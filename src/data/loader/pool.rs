//! The loader's buffer pool: the only source of batch memory. At most
//! `prefetch + num_workers` buffer pairs exist; a batch returns its pair when
//! dropped, and a pair is handed out again only when nobody else (a view a
//! caller kept) shares its storage.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};

use tch::{Device, Kind, Tensor};

use crate::sys::shim::memory_owners;

/// One batch's target and radar buffers, f16 `(B, C, Z, H, W)` (radar
/// empty when the loader does not load it).
pub(crate) struct BufferPair {
    pub(crate) target: Tensor,
    pub(crate) radar: Tensor,
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
    /// Returned pairs a caller still shared (a view was kept): parked, never
    /// handed out while shared.
    pub escaped: usize,
    /// Escaped pairs taken back once nobody shared them any more.
    pub reclaimed: usize,
    /// Most pairs out of the pool at once (never above `capacity`).
    pub max_outstanding: usize,
    /// Pairs out of the pool now.
    pub outstanding: usize,
}

#[derive(Default)]
pub(crate) struct PoolState {
    free: Vec<BufferPair>,
    /// Escaped pairs, reclaimed when their last outside view is gone (a
    /// Python tensor freed); dropped instead when the pool is full.
    parked: Vec<BufferPair>,
    pub(crate) stats: PoolStats,
    pub(crate) with_consumer: usize,
    /// The consumer is blocked waiting for a batch: a worker may allocate
    /// past the parked pairs (they may be kept for good, e.g. a list of batches).
    consumer_waiting: bool,
}

pub(crate) struct Pool {
    state: Mutex<PoolState>,
    cond: Condvar,
    /// Batch shape `(B, C, Z, H, W)`.
    pub(crate) shape: [i64; 5],
    pinned: bool,
    radar: bool,
}

impl Pool {
    pub(crate) fn new(capacity: usize, shape: [i64; 5], pinned: bool, radar: bool) -> Pool {
        let state = PoolState { stats: PoolStats { capacity, ..Default::default() }, ..Default::default() };
        Pool { state: Mutex::new(state), cond: Condvar::new(), shape, pinned, radar }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
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
    pub(crate) fn acquire(&self, cancel: &AtomicBool) -> Option<BufferPair> {
        let mut st = self.lock();
        loop {
            if cancel.load(Ordering::Acquire) {
                return None;
            }
            Self::reclaim(&mut st);
            let cap = st.stats.capacity;
            if st.stats.outstanding < cap {
                if let Some(pair) = st.free.pop() {
                    st.stats.reused += 1;
                    return Some(Self::take(&mut st, pair));
                }
                // Still-shared parked pairs count against the capacity too, one
                // beyond it (the batch a consumer holds while it asks for the
                // next), unless the consumer has waited (it keeps them).
                if Self::live(&st) + st.parked.len() <= cap || st.consumer_waiting {
                    st.stats.allocated += 1;
                    drop(st);
                    let pair = BufferPair { target: self.alloc(true), radar: self.alloc(self.radar) };
                    let mut st = self.lock();
                    return Some(Self::take(&mut st, pair));
                }
            }
            st = self.cond.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Pairs in circulation: allocated, less those escaped and not reclaimed.
    fn live(st: &PoolState) -> usize {
        st.stats.allocated + st.stats.reclaimed - st.stats.escaped
    }

    /// Parked pairs nobody shares any more return to the free list (or are
    /// dropped, when the pool already holds its capacity and one more).
    fn reclaim(st: &mut PoolState) {
        let mut i = 0;
        while i < st.parked.len() {
            let p = &st.parked[i];
            if memory_owners(&p.target) != 1 || memory_owners(&p.radar) != 1 {
                i += 1;
                continue;
            }
            let pair = st.parked.swap_remove(i);
            if Self::live(st) <= st.stats.capacity {
                st.stats.reclaimed += 1;
                st.free.push(pair);
            }
        }
    }

    fn take(st: &mut PoolState, pair: BufferPair) -> BufferPair {
        st.stats.outstanding += 1;
        st.stats.max_outstanding = st.stats.max_outstanding.max(st.stats.outstanding);
        pair
    }

    /// Returns a pair; it is reused only if nobody else shares its storage.
    pub(crate) fn release(&self, pair: BufferPair, from_consumer: bool) {
        let exclusive = memory_owners(&pair.target) == 1 && memory_owners(&pair.radar) == 1;
        let mut st = self.lock();
        st.stats.outstanding -= 1;
        if from_consumer {
            st.with_consumer -= 1;
        }
        if exclusive {
            st.free.push(pair);
        } else {
            st.stats.escaped += 1; // a view escaped: park it until the view is gone
            st.parked.push(pair);
        }
        drop(st);
        self.cond.notify_all();
    }

    /// Marks the consumer as waiting for a batch (or not), waking workers.
    pub(crate) fn consumer_waiting(&self, waiting: bool) {
        self.lock().consumer_waiting = waiting;
        self.cond.notify_all();
    }

    pub(crate) fn wake_all(&self) {
        let _guard = self.lock();
        self.cond.notify_all();
    }
}
