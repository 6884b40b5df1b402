//! Measuring memory: resident set sizes from `/proc`, a peak sampler, the
//! budget a device offers, and the allocator settings that keep RSS close to
//! the tensors (CUDA caching allocator config, glibc returning large frees).

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

/// Large host blocks this size or above are mapped and unmapped on their
/// own (see [`return_large_frees`]).
pub const MMAP_THRESHOLD: usize = 4 << 20;

/// Makes glibc serve every allocation of [`MMAP_THRESHOLD`] bytes or more
/// with its own `mmap`, so a freed activation goes back to the OS at once.
/// By default glibc raises that threshold up to 32 MiB as blocks are freed
/// and keeps later ones in per-thread heaps, where they stay resident:
/// without this a bf16 step at (32, 128, 128) held 1.15 GiB of RSS for
/// 0.64 GiB of tensors (`benches/memory_plan.rs`). It costs page faults on
/// fresh mappings: ~9% longer CPU runs in three alternating runs.
/// Process-wide; returns false where it is not available (non-glibc).
pub fn return_large_frees() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes glibc's allocation policy for later
        // allocations; existing blocks are unaffected.
        unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD as libc::c_int) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// Bytes a run on `device` may use: the GPU's total memory, or on CPU the
/// RAM available now plus what this process already holds; `None` if unknown.
pub fn device_budget(device: tch::Device) -> Option<u64> {
    match device {
        tch::Device::Cpu => Some(kb_field("/proc/meminfo", "MemAvailable")? + rss_anon()),
        _ => crate::sys::shim::cuda_mem_info().map(|(_, total)| total),
    }
}

/// Reads one `kB` field of `/proc/self/status` (e.g. `RssAnon`, `VmHWM`) in bytes.
pub fn proc_status_bytes(field: &str) -> Option<u64> {
    kb_field("/proc/self/status", field)
}

/// A `Field:   123 kB` line of a /proc file, in bytes.
fn kb_field(path: &str, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))?;
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
    fn the_cpu_budget_is_available_ram_plus_our_own() {
        let total = kb_field("/proc/meminfo", "MemTotal").unwrap();
        let budget = device_budget(tch::Device::Cpu).unwrap();
        assert!(budget > rss_anon() && budget <= total + rss_anon(), "{budget} of {total}");
        assert_eq!(proc_status_bytes("NoSuchField"), None);
    }
}
