//! Training memory: the planner ([`plan`], [`fit`]) that predicts a run's
//! bytes from the model's own layers before it starts, and measurement
//! (resident set sizes from `/proc/self/status`, a peak sampler, counted
//! libtorch tensor bytes) to check it.

pub mod plan;
pub mod tape;

pub use plan::{fallback, fit, plan, Change, Fit, ModelConfig, ModelPlanner, Plan, Planner, Precision, Run};
pub use tape::Backend;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// The seed's CUDA caching-allocator settings: expandable segments avoid
/// fragmentation, and a 128 MB split limit keeps large blocks whole.
pub const CUDA_ALLOC_CONF: &str = "expandable_segments:True,max_split_size_mb:128";

/// Sets `PYTORCH_CUDA_ALLOC_CONF` to [`CUDA_ALLOC_CONF`] unless the user set
/// it; libtorch reads it at its first CUDA allocation, so call this before
/// any CUDA use. Returns the value in effect.
pub fn configure_cuda_allocator() -> String {
    match std::env::var("PYTORCH_CUDA_ALLOC_CONF") {
        Ok(v) => v,
        Err(_) => {
            std::env::set_var("PYTORCH_CUDA_ALLOC_CONF", CUDA_ALLOC_CONF);
            CUDA_ALLOC_CONF.to_string()
        }
    }
}

/// Reads one `kB` field of `/proc/self/status` (e.g. `RssAnon`, `VmHWM`) in bytes.
pub fn proc_status_bytes(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))?;
    let kb: u64 = line[field.len() + 1..].trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb * 1024)
}

/// Current anonymous resident memory (heap, stacks; not mapped files).
pub fn rss_anon() -> u64 {
    proc_status_bytes("RssAnon").unwrap_or(0)
}

/// Samples [`rss_anon`] on a background thread until stopped, keeping the peak.
/// Sampling (every `interval`) can miss spikes shorter than the interval.
pub struct PeakSampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    handle: Option<JoinHandle<()>>,
}

impl PeakSampler {
    /// Starts sampling.
    pub fn start(interval: Duration) -> PeakSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(rss_anon()));
        let (s, p) = (stop.clone(), peak.clone());
        let handle = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                p.fetch_max(rss_anon(), Ordering::Relaxed);
                std::thread::sleep(interval);
            }
        });
        PeakSampler { stop, peak, handle: Some(handle) }
    }

    /// Stops sampling and returns the peak anonymous RSS seen, in bytes.
    pub fn stop(mut self) -> u64 {
        self.finish()
    }

    fn finish(&mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        self.peak.fetch_max(rss_anon(), Ordering::Relaxed);
        self.peak.load(Ordering::Relaxed)
    }
}

impl Drop for PeakSampler {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampler_sees_a_large_allocation() {
        let sampler = PeakSampler::start(Duration::from_millis(1));
        let before = rss_anon();
        let v = vec![1u8; 64 << 20]; // touched: 64 MiB resident
        std::thread::sleep(Duration::from_millis(30));
        drop(v);
        let peak = sampler.stop();
        assert!(peak >= before + (60 << 20), "peak {peak} before {before}");
    }
}
