//! Loader throughput (batches/s, batch 1) and peak anonymous RSS at the real
//! grid (600, 200, 80, 4) with prefetch 1, 2, 4 and 1 or 2 workers, beside
//! the reader alone (same frames, same process, decoding into two reused
//! buffers). Sparse `.npz` frames, ~1,500 radar / ~20,000 target voxels.
//!
//! `cargo bench --bench loader`

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use half::f16;
use radvox::memory::{rss_anon, PeakSampler};
use radvox::{Dataset, DatasetConfig, Loader, LoaderConfig, Modality, Split};

mod common;

const FRAMES: usize = 4;
const CONFIGS: [(usize, usize); 5] = [(1, 1), (2, 1), (4, 1), (2, 2), (4, 2)];

fn open() -> Dataset {
    Dataset::open(common::dataset(false, FRAMES), Split::All, &DatasetConfig::default()).unwrap()
}

fn loader(prefetch: usize, workers: usize) -> Loader {
    Loader::new(open(), LoaderConfig { prefetch, num_workers: workers, ..Default::default() }).unwrap()
}

/// Consumes `n` batches across as many epochs as needed, holding each for
/// `hold` (a training step) so the workers run ahead until the bound stops them.
fn consume_slowly(l: &Loader, n: u64, hold: Duration) {
    let (mut left, mut epoch) = (n, 0);
    while left > 0 {
        for b in l.epoch(epoch) {
            let b = b.unwrap();
            std::thread::sleep(hold);
            drop(b);
            left -= 1;
            if left == 0 {
                break;
            }
        }
        epoch += 1;
    }
}

/// The reader alone: sequential decode into two reused buffers.
struct Reader(Dataset, Vec<f16>, Vec<f16>);
impl Reader {
    fn new() -> Reader {
        let ds = open();
        let n = ds.output_shape(0).iter().product();
        Reader(ds, vec![f16::ZERO; n], vec![f16::ZERO; n])
    }
    fn read(&mut self, n: u64) {
        for i in 0..n as usize {
            self.0.read_into(i % FRAMES, Modality::Target, &mut self.1).unwrap();
            self.0.read_into(i % FRAMES, Modality::Radar, &mut self.2).unwrap();
        }
    }
}

fn throughput(c: &mut Criterion) {
    let mut group = c.benchmark_group("loader");
    group.throughput(Throughput::Elements(1)).sample_size(10).measurement_time(Duration::from_secs(6));
    let mut reader = Reader::new();
    group.bench_function("reader_alone", |b| {
        b.iter_custom(|iters| {
            let t = Instant::now();
            reader.read(iters);
            t.elapsed()
        })
    });
    for (prefetch, workers) in CONFIGS {
        let l = loader(prefetch, workers);
        group.bench_function(format!("prefetch{prefetch}_workers{workers}"), |b| {
            b.iter_custom(|iters| {
                let t = Instant::now();
                consume_slowly(&l, iters, Duration::ZERO);
                t.elapsed()
            })
        });
    }
    group.finish();
}

fn peak_rss(_c: &mut Criterion) {
    let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
    let batches = 12;
    let probe = loader(1, 1);
    let batch = probe.batch_bytes() as u64;
    drop(probe);
    let hold = Duration::from_millis(150);
    println!(
        "\npeak anonymous RSS over {batches} batches (batch 1 = {:.1} MiB), consumer holding each batch {hold:?}, above the RSS before",
        mib(batch)
    );
    let measure = |f: &mut dyn FnMut()| {
        let before = rss_anon();
        let sampler = PeakSampler::start(Duration::from_millis(1));
        let t = Instant::now();
        f();
        let secs = t.elapsed().as_secs_f64();
        (sampler.stop().saturating_sub(before), batches as f64 / secs)
    };
    let (peak, rate) = measure(&mut || Reader::new().read(batches));
    println!(
        "reader alone           peak {:>7.1} MiB  expected {:>7.1} MiB  {rate:.1} frames/s",
        mib(peak),
        mib(batch)
    );
    for (prefetch, workers) in CONFIGS {
        let l = loader(prefetch, workers);
        let (peak, rate) = measure(&mut || consume_slowly(&l, batches, hold));
        let s = l.pool_stats();
        let bound = (prefetch + workers) as u64 * batch;
        println!(
            "prefetch {prefetch} workers {workers}   peak {:>7.1} MiB  bound {:>7.1} MiB  {rate:.1} batches/s  (allocated {}, reused {})",
            mib(peak),
            mib(bound),
            s.allocated,
            s.reused
        );
    }
}

criterion_group!(benches, throughput, peak_rss);
criterion_main!(benches);
