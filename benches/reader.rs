//! Reader throughput (frames/s, a frame = target + radar) and peak anonymous
//! RSS at the real grid (600, 200, 80, 4), sparse `.npz` and dense `.npy`,
//! against a plain baseline in the same run: read the whole file into a
//! `Vec`, decode to dense f32, then permute and pad in separate passes (what
//! the reference Python loader does).
//!
//! `cargo bench --bench reader`

use std::io::{Cursor, Read};
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use half::f16;
use radvox::io::npy::NpyHeader;
use radvox::io::Source;
use radvox::memory::PeakSampler;
use radvox::{Dataset, DatasetConfig, Layout, Modality, Split};

mod common;

const FRAMES: usize = 4;

/// Baseline: whole file in memory, dense f32 decode, permute, pad.
fn baseline_read(path: &Path) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap();
    let src = Source { path: path.to_path_buf(), member: None };
    let [h, w, z, c] = common::GRID;
    let dense: Vec<f32> = if path.extension().unwrap() == "npz" {
        let mut zip = zip::ZipArchive::new(Cursor::new(&bytes)).unwrap();
        let mut member = |name: &str| {
            let mut raw = Vec::new();
            zip.by_name(name).unwrap().read_to_end(&mut raw).unwrap();
            let header = NpyHeader::read(&raw[..], &src).unwrap();
            raw.drain(..header.offset);
            raw
        };
        let coords: Vec<i64> =
            member("coords.npy").chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap())).collect();
        let feats: Vec<f32> =
            member("features.npy").chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
        let mut d = vec![0f32; h * w * z * c];
        for (i, xyz) in coords.chunks_exact(3).enumerate() {
            let base = ((xyz[0] as usize * w + xyz[1] as usize) * z + xyz[2] as usize) * c;
            d[base..base + c].copy_from_slice(&feats[i * c..(i + 1) * c]);
        }
        d
    } else {
        let header = NpyHeader::read(&bytes[..], &src).unwrap();
        bytes[header.offset..].chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()
    };
    drop(bytes);
    // Permute (H, W, Z, C) -> (C, Z, H, W).
    let mut perm = vec![0f32; dense.len()];
    for x in 0..h {
        for y in 0..w {
            for zi in 0..z {
                for ci in 0..c {
                    perm[((ci * z + zi) * h + x) * w + y] = dense[((x * w + y) * z + zi) * c + ci];
                }
            }
        }
    }
    drop(dense);
    // Pad each spatial dim to a multiple of 32.
    let [_, zo, ho, wo] = Layout::default().output_shape(common::GRID);
    let mut out = vec![0f32; c * zo * ho * wo];
    for ci in 0..c {
        for zi in 0..z {
            for x in 0..h {
                let src = ((ci * z + zi) * h + x) * w;
                let dst = ((ci * zo + zi) * ho + x) * wo;
                out[dst..dst + w].copy_from_slice(&perm[src..src + w]);
            }
        }
    }
    out
}

struct Reader {
    ds: Dataset,
    target: Vec<f16>,
    radar: Vec<f16>,
}

impl Reader {
    fn new(root: &Path, layout: Layout) -> Reader {
        let ds = Dataset::open(root, Split::All, &DatasetConfig { layout, ..Default::default() }).unwrap();
        let n = ds.output_shape(0).iter().product();
        Reader { ds, target: vec![f16::ZERO; n], radar: vec![f16::ZERO; n] }
    }
    fn read(&mut self, i: usize) {
        self.ds.read_into(i % FRAMES, Modality::Target, &mut self.target).unwrap();
        self.ds.read_into(i % FRAMES, Modality::Radar, &mut self.radar).unwrap();
    }
    fn baseline(&self, i: usize) -> usize {
        let f = &self.ds.frames()[i % FRAMES];
        baseline_read(f.target.path()).len() + baseline_read(f.radar.path()).len()
    }
}

fn one_thread() -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap()
}

fn throughput(c: &mut Criterion) {
    for (dense, name) in [(false, "sparse_npz"), (true, "dense_npy")] {
        let root = common::dataset(dense, FRAMES);
        let mut group = c.benchmark_group(name);
        group.throughput(Throughput::Elements(1)).sample_size(10).measurement_time(Duration::from_secs(8));
        let mut r = Reader::new(&root, Layout::default());
        let mut i = 0;
        group.bench_function("radvox", |b| b.iter(|| (r.read(i), i += 1)));
        let pool = one_thread();
        group.bench_function("radvox_1thread", |b| b.iter(|| pool.install(|| (r.read(i), i += 1))));
        group.bench_function("baseline", |b| b.iter(|| (r.baseline(i), i += 1)));
        let mut rs = Reader::new(&root, Layout::Resample { zhw: [32, 128, 128] });
        group.bench_function("radvox_resample_32x128x128", |b| b.iter(|| (rs.read(i), i += 1)));
        group.finish();
    }
}

/// Peak anonymous RSS above the starting point while reading every frame twice.
fn peak_rss(c: &mut Criterion) {
    let _ = c;
    let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
    println!("\npeak anonymous RSS over {} frame reads (above the process's RSS before)", 2 * FRAMES);
    for (dense, name) in [(false, "sparse_npz"), (true, "dense_npy")] {
        let root = common::dataset(dense, FRAMES);
        for (label, baseline) in [("radvox", false), ("baseline", true)] {
            let before = radvox::memory::rss_anon();
            let sampler = PeakSampler::start(Duration::from_millis(1));
            let t = Instant::now();
            let mut r = Reader::new(&root, Layout::default());
            for i in 0..2 * FRAMES {
                if baseline {
                    std::hint::black_box(r.baseline(i));
                } else {
                    r.read(i);
                }
            }
            let secs = t.elapsed().as_secs_f64();
            drop(r);
            let peak = sampler.stop();
            println!(
                "{name:<11} {label:<9} peak {:>8.1} MiB  ({:.2} frames/s incl. open)",
                mib(peak.saturating_sub(before)),
                2.0 * FRAMES as f64 / secs
            );
        }
    }
}

criterion_group!(benches, throughput, peak_rss);
criterion_main!(benches);
