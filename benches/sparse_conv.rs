//! One sparse convolution layer, radvox against spconv's CPU build on the
//! same sites (the target voxels of a whole native frame of a simulated
//! root) in the same run: seconds of forward + backward (the loss is the sum
//! of the outputs) for a 3^3 submanifold, a kernel-2 stride-2 down-sampling
//! and a kernel-2 stride-2 transposed convolution onto every child, float32,
//! median of `RADVOX_STEPS` (default 15: with 5 the figures moved by up to 50 % between runs) after a warm-up, 2 threads, channel
//! widths 16, 32 and 64. radvox's kernel maps are built once per set and
//! reused (as spconv reuses its indice pairs by key); the first call's map
//! building is timed apart.
//!
//! `bash scripts/sparse_bench.sh` installs spconv (PyPI, CPU) into the
//! project's PyTorch environment and runs this; without spconv the radvox
//! rows are printed alone.

use std::process::Command;
use std::time::Instant;

use radvox::data::{Dataset, DatasetConfig, Modality, Split};
use radvox::io::npy::write_npy;
use radvox::model::sparse::{ConvKind, Coords, MapKind, SparseConv3d, SparseTensor};
use tch::{nn, Device, Kind, Tensor};

mod common;

const WIDTHS: [i64; 3] = [16, 32, 64];

fn median_time(steps: usize, f: &mut dyn FnMut()) -> f64 {
    f();
    let mut t: Vec<f64> = (0..steps)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let steps: usize = std::env::var("RADVOX_STEPS").ok().and_then(|s| s.parse().ok()).unwrap_or(15);
    tch::set_num_threads(2);
    let ds = Dataset::open(common::sim_root(), Split::Train, &DatasetConfig::default()).unwrap();
    let s = ds.file(0, Modality::Target).unwrap().read_sites(ds.config().layout).unwrap();
    let sites: Vec<[i64; 4]> = s.batched(0).collect();
    let grid = s.grid.map(|v| v as i64);
    let t = Instant::now();
    let coords = Coords::new(&sites, 1, grid, [1; 3]).unwrap();
    let hash_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let map = coords.kernel_map(MapKind::Submanifold { k: 3 }, &coords, Device::Cpu);
    let map_s = t.elapsed().as_secs_f64();
    println!(
        "one sparse convolution, {} sites of a whole {grid:?} frame ({:.1} neighbours per site), f32, 2 threads, median of {steps}",
        coords.len(),
        map.pairs() as f64 / coords.len() as f64
    );
    println!(
        "radvox: hashing the sites {:.2} ms, the 3^3 submanifold map {:.2} ms (once per set)",
        hash_s * 1e3,
        map_s * 1e3
    );
    println!("| layer | channels | radvox s | spconv s | radvox / spconv |");
    println!("|---|---|---|---|---|");
    let mut rows = Vec::new();
    for c in WIDTHS {
        let vs = nn::VarStore::new(Device::Cpu);
        let feats = radvox::sys::normal(0, &[coords.len() as i64, c], Device::Cpu).set_requires_grad(true);
        let x = SparseTensor::new(coords.clone(), feats.shallow_clone()).unwrap();
        let subm = SparseConv3d::new(vs.root() / "s", c, c, ConvKind::Submanifold(3)).unwrap();
        let down = SparseConv3d::new(vs.root() / "d", c, c, ConvKind::Down([2; 3])).unwrap();
        let up = SparseConv3d::new(vs.root() / "u", c, c, ConvKind::Up([2; 3])).unwrap();
        let coarse = coords.down([2; 3]);
        let children = coarse.children([2; 3], grid).unwrap();
        let cf = Tensor::randn([coarse.len() as i64, c], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let xc = SparseTensor::new(coarse.clone(), cf).unwrap();
        rows.push((
            "submanifold",
            c,
            median_time(steps, &mut || subm.forward(&x).unwrap().feats.sum(Kind::Float).backward()),
        ));
        rows.push(("down", c, median_time(steps, &mut || down.forward(&x).unwrap().feats.sum(Kind::Float).backward())));
        rows.push((
            "up (all children)",
            c,
            median_time(steps, &mut || up.up(&xc, &children).unwrap().feats.sum(Kind::Float).backward()),
        ));
    }
    // spconv on the same sites
    let dir = std::env::temp_dir().join(format!("radvox-sparse-conv-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let npy = dir.join("coords.npy");
    let flat: Vec<i64> = sites.iter().flatten().copied().collect();
    write_npy(&npy, &[sites.len(), 4], &flat).unwrap();
    let python = concat!(env!("CARGO_MANIFEST_DIR"), "/.venv-python");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/reference/sparse_conv_spconv.py");
    let widths: Vec<String> = WIDTHS.iter().map(|c| c.to_string()).collect();
    let shape = format!("{},{},{}", grid[0], grid[1], grid[2]);
    let out = Command::new(python)
        .args([script, npy.to_str().unwrap(), &shape, &widths.join(","), &steps.to_string()])
        .output();
    let _ = std::fs::remove_dir_all(&dir);
    let theirs: Vec<serde_json::Value> = match out {
        Ok(o) if o.status.success() => {
            String::from_utf8_lossy(&o.stdout).lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
        }
        Ok(o) => {
            let err = String::from_utf8_lossy(&o.stderr);
            eprintln!(
                "spconv did not run (bash scripts/sparse_bench.sh installs it): {}",
                err.lines().last().unwrap_or("")
            );
            Vec::new()
        }
        Err(e) => {
            eprintln!("no Python environment ({e}): bash scripts/libtorch.sh makes it");
            Vec::new()
        }
    };
    for (layer, c, ours) in rows {
        let spc = theirs.iter().find(|v| v["layer"] == layer && v["channels"] == c).and_then(|v| v["seconds"].as_f64());
        let (s, ratio) = match spc {
            Some(t) => (format!("{t:.4}"), format!("{:.2}", ours / t)),
            None => ("-".into(), "-".into()),
        };
        println!("| {layer} | {c} | {ours:.4} | {s} | {ratio} |");
    }
    if let Some(v) = theirs.first() {
        println!("spconv: {}", v["impl"].as_str().unwrap_or("?"));
    }
}
