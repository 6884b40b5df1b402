//! Synthetic NTU4DRadLM_Pre frames at the real grid for the benches, written
//! once under `target/bench-data` with the crate's own `.npy`/`.npz` writers.
#![allow(dead_code)]

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use radvox::data::frame::{write_sparse as write_npz, SparseFrame};
use radvox::io::npy::write_npy;
use tch::Device;

/// The real grid `(H, W, Z, C)`.
pub const GRID: [usize; 4] = [600, 200, 80, 4];

/// SplitMix64: a tiny seeded generator for synthetic data.
pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e3779b97f4a7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
        z ^ (z >> 31)
    }
    pub fn uniform(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// `n` distinct occupied voxels with occupancy 1 and plausible features.
pub fn sparse_frame(n: usize, seed: u64) -> SparseFrame {
    let mut rng = Rng(seed);
    let [h, w, z, _] = GRID;
    let mut seen = HashSet::new();
    let (mut coords, mut features) = (Vec::with_capacity(n), Vec::with_capacity(4 * n));
    while coords.len() < n {
        let flat = rng.next() % (h * w * z) as u64;
        if seen.insert(flat) {
            let f = flat as usize;
            coords.push([(f / (w * z)) as u32, (f / z % w) as u32, (f % z) as u32]);
            features.extend([1.0, rng.uniform() * 100.0, (rng.uniform() - 0.5) * 8.0, rng.uniform()]);
        }
    }
    SparseFrame { shape: GRID, coords, features }
}

fn dense_of(frame: &SparseFrame) -> Vec<f32> {
    let [_, w, z, c] = GRID;
    let mut d = vec![0f32; GRID.iter().product()];
    for (i, xyz) in frame.coords.iter().enumerate() {
        let base = ((xyz[0] as usize * w + xyz[1] as usize) * z + xyz[2] as usize) * c;
        for ch in 0..c {
            d[base + ch] = frame.features[i * c + ch] as f32;
        }
    }
    d
}

/// Writes `frames` radar (~1,500 voxels) / target (~20,000 voxels) pairs as
/// `.npz` (sparse) or `.npy` (dense) under one scene; reuses an earlier copy.
pub fn dataset(dense: bool, frames: usize) -> PathBuf {
    let root = data_dir().join(if dense { format!("dense{frames}") } else { format!("sparse{frames}") });
    let done = root.join(".complete");
    if done.exists() {
        return root;
    }
    eprintln!("writing {frames} synthetic frame pairs to {}", root.display());
    for (dir, n, salt) in [("radar_voxel", 1_500, 1u64), ("target_voxel", 20_000, 2)] {
        let d = root.join("scene").join(dir);
        std::fs::create_dir_all(&d).unwrap();
        for i in 0..frames {
            let frame = sparse_frame(n, salt * 1000 + i as u64);
            if dense {
                write_npy(&d.join(format!("{i:06}.npy")), &GRID, &dense_of(&frame)).unwrap();
            } else {
                write_npz(&d.join(format!("{i:06}.npz")), &frame, true).unwrap();
            }
        }
    }
    std::fs::write(done, "").unwrap();
    root
}

/// Peak host memory of a stretch of work in this (fresh) process: the peak
/// RSS (`VmHWM`, reset at [`HostPeak::start`]) above the RSS then, and
/// libtorch's counted tensor peak above the count then (the counting
/// allocator must be in place: `count_host_tensors`).
pub struct HostPeak {
    /// RSS when measuring started: libtorch loaded, inputs resident.
    pub rss0: u64,
    host0: i64,
}

impl HostPeak {
    /// Resets both peaks to now.
    pub fn start() -> HostPeak {
        std::fs::write("/proc/self/clear_refs", "5").expect("clear_refs");
        let rss0 = radvox::memory::proc_status_bytes("VmRSS").unwrap();
        let (host0, _) = radvox::sys::shim::host_tensor_bytes();
        radvox::sys::shim::host_reset_peak();
        HostPeak { rss0, host0 }
    }

    /// `(peak RSS, counted tensor peak)` since [`HostPeak::start`], in bytes.
    pub fn peaks(&self) -> (u64, u64) {
        let rss = radvox::memory::proc_status_bytes("VmHWM").unwrap().saturating_sub(self.rss0);
        let (_, peak) = radvox::sys::shim::host_tensor_bytes();
        (rss, (peak - self.host0) as u64)
    }
}

/// Where the benches write their data: `RADVOX_BENCH_DATA`, else the
/// build's `target/` (a carried binary on another host names a folder there).
pub fn data_dir() -> PathBuf {
    std::env::var_os("RADVOX_BENCH_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-data"))
}

/// The device a bench runs on: `RADVOX_BENCH_DEVICE=cuda` (the first GPU),
/// else the CPU.
pub fn device() -> Device {
    match std::env::var("RADVOX_BENCH_DEVICE").as_deref() {
        Ok("cuda") => Device::Cuda(0),
        _ => Device::Cpu,
    }
}

/// Restarts the CUDA caching allocator's peaks (allocated and reserved).
pub fn cuda_reset_peak() {
    assert!(radvox::sys::shim::cuda_reset_peak(0), "no CUDA allocator");
}

/// The CUDA caching allocator's `(peak allocated, peak reserved)` bytes since
/// [`cuda_reset_peak`] (`torch.cuda.max_memory_allocated/reserved`).
pub fn cuda_peaks() -> (u64, u64) {
    let (_, allocated) = radvox::sys::shim::cuda_allocated(0).expect("CUDA allocator stats");
    let (_, reserved) = radvox::sys::shim::cuda_reserved(0).expect("CUDA allocator stats");
    (allocated as u64, reserved as u64)
}

/// A small simulated root at the native grid (2 scenes x 6 frames, seed 7),
/// made once under the bench data folder; its `ntu/` folder.
pub fn sim_root() -> PathBuf {
    use radvox::sim::root::{is_complete, simulate_root};
    let out = data_dir().join("sparse-bench-sim");
    let cfg = radvox::sim::SimConfig { seed: 7, scenes: 2, frames_per_scene: 6, ..Default::default() };
    if !is_complete(&cfg, &out) {
        simulate_root(&cfg, &out, Default::default(), false).expect("simulating the bench root");
    }
    out.join("ntu")
}

/// The quality benchmark's root (`simulate --scenes 12 --frames 24 --seed
/// 11`, made under the bench data folder unless `RADVOX_QUALITY_ROOT` names a
/// root).
pub fn quality_root() -> PathBuf {
    if let Some(r) = std::env::var_os("RADVOX_QUALITY_ROOT") {
        return PathBuf::from(r);
    }
    use radvox::sim::root::{is_complete, simulate_root};
    let out = data_dir().join("quality-sim");
    let cfg = radvox::sim::SimConfig { seed: 11, scenes: 12, frames_per_scene: 24, ..Default::default() };
    if !is_complete(&cfg, &out) {
        eprintln!("simulating the quality benchmark's root into {}", out.display());
        simulate_root(&cfg, &out, Default::default(), false).expect("simulating");
    }
    out.join("ntu")
}
