//! Heavy, `#[ignore]`d: trains ultra_lightweight at the real padded grid
//! `(1, 4, 96, 608, 224)` for a few micro-steps on CPU and checks peak RSS
//! stays under 16 GiB (the reference needs an estimated ~40 GB).
//!
//! `cargo test --release --test full_grid -- --ignored --nocapture`

use std::collections::HashSet;
use std::time::Instant;

use radvox::data::frame::{write_sparse, SparseFrame};
use radvox::model::Checkpointing;
use radvox::train::{AmpMode, OptimRecipe, Runtime, Trainer, VaeRecipe};
use radvox::{Dataset, DatasetConfig, Split};

fn frame(n: usize, seed: u64) -> SparseFrame {
    let grid = [600usize, 200, 80, 4];
    let mut s = seed;
    let mut next = || {
        s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        s >> 11
    };
    let mut seen = HashSet::new();
    let (mut coords, mut features) = (Vec::new(), Vec::new());
    while coords.len() < n {
        let f = next() as usize % (600 * 200 * 80);
        if seen.insert(f) {
            coords.push([(f / 16000) as u32, (f / 80 % 200) as u32, (f % 80) as u32]);
            features.extend([1.0, (next() % 100) as f64, (next() % 9) as f64 - 4.0, (next() % 2) as f64]);
        }
    }
    SparseFrame { shape: grid, coords, features }
}

#[test]
#[ignore = "heavy: full 96x608x224 grid, minutes of CPU and ~10 GB RAM"]
fn ultra_lightweight_trains_at_the_full_grid_under_16_gib() {
    let dir = tempfile::tempdir().unwrap();
    for (sub, n) in [("radar_voxel", 1_500), ("target_voxel", 20_000)] {
        let d = dir.path().join("scene").join(sub);
        std::fs::create_dir_all(&d).unwrap();
        for i in 0..2 {
            write_sparse(&d.join(format!("{i:06}.npz")), &frame(n, i * 7 + n as u64), true).unwrap();
        }
    }
    let ds = Dataset::open(dir.path(), Split::Train, &DatasetConfig::default()).unwrap();
    assert_eq!(ds.output_shape(0), [4, 96, 608, 224]);
    let steps: usize = std::env::var("RADVOX_FULL_GRID_STEPS").ok().and_then(|s| s.parse().ok()).unwrap_or(2);
    let ck =
        std::env::var("RADVOX_FULL_GRID_CKPT").ok().and_then(|s| s.parse().ok()).unwrap_or(Checkpointing::PerBlock);
    let amp = std::env::var("RADVOX_FULL_GRID_AMP").map(|v| v != "0").unwrap_or(true);
    let recipe =
        VaeRecipe { optim: OptimRecipe { epochs: 1, grad_accum: 2, ..Default::default() }, ..Default::default() };
    let runtime = Runtime {
        out: dir.path().join("run"),
        checkpointing: ck,
        amp: if amp { AmpMode::On } else { AmpMode::Off },
        device: "cpu".into(),
        progress: false,
        ..Default::default()
    };
    let mut trainer = Trainer::vae(ds, None, recipe, runtime).unwrap();
    let loader = trainer.objective().train_loader();
    let mut epoch = loader.epoch(0);
    let mut times = Vec::new();
    for _ in 0..steps {
        let batch = epoch.next().unwrap().unwrap();
        let t = Instant::now();
        let parts = trainer.micro_step(&batch).unwrap().expect("finite loss");
        times.push(t.elapsed().as_secs_f64());
        println!("micro-step {:.1} s, loss {:.4e}", times.last().unwrap(), parts[0]);
    }
    drop(epoch);
    trainer.optimizer_step(1e-4).unwrap();
    let peak = radvox::memory::proc_status_bytes("VmHWM").unwrap();
    println!(
        "full grid (1, 4, 96, 608, 224), checkpointing {ck}, amp {amp}: {:.1} s/micro-step, peak RSS {:.2} GiB",
        times.iter().sum::<f64>() / times.len() as f64,
        peak as f64 / (1u64 << 30) as f64
    );
    assert!(peak < 16 << 30, "peak RSS {peak} bytes");
}
