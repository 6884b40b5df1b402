//! The memory planner's predictions against measured peaks, each
//! configuration in a fresh process running the real `VaeTrainer` (loader,
//! input scaling, loss, AdamW) for two micro-steps and an optimizer step on
//! synthetic frames of the real grid.
//!
//! Measured on CPU: the peak RSS (`VmHWM`, reset through
//! `/proc/self/clear_refs` once libtorch is loaded) minus the RSS at that
//! point, and the peak of libtorch's tensor bytes (counting allocator). On
//! CUDA: the caching allocator's peak allocated bytes. The prediction is
//! `Plan::device_tensors()` (the runtime reserve is not a tensor).
//!
//! `cargo bench --bench memory_plan` runs the CPU set at (32, 128, 128) and
//! native-resolution crops of full frames (`crop` in the label);
//! `RADVOX_MEMORY_FULL=1` adds three runs at the full grid (minutes each on a CPU);
//! `RADVOX_MEMORY_DEVICE=cuda` runs the set on the GPU (AMP on and off);
//! `RADVOX_MEMORY_ONLY=text` keeps the configurations whose label contains it;
//! `--plan` prints predictions only. Results go to `target/memory_measured.csv`
//! (`RADVOX_MEMORY_CSV` elsewhere; the committed figures are in
//! `docs/memory_measured.csv`). On a GPU host: `scripts/gpu_check.sh run memory`.

use std::io::Write;
use std::process::Command;
use std::time::Instant;

use radvox::data::layout::Layout;
use radvox::memory::{self, gib, Backend};
use radvox::model::{Checkpointing, VaeConfig};
use radvox::train::{AmpMode, OptimRecipe, Runtime, Trainer, VaeRecipe};
use radvox::{Dataset, DatasetConfig, Split};

mod common;

#[derive(Debug, Clone)]
struct Config {
    preset: &'static str,
    grid: [i64; 3],
    batch: usize,
    amp: bool,
    checkpointing: Checkpointing,
    /// Trained on `grid`-sized crops of full native frames (else the frames
    /// are laid out to `grid`).
    crop: bool,
}

impl Config {
    fn label(&self) -> String {
        format!(
            "{}{} {}x{}x{} b{} {} ck {}",
            self.preset,
            if self.crop { " crop" } else { "" },
            self.grid[0],
            self.grid[1],
            self.grid[2],
            self.batch,
            if self.amp { "amp" } else { "f32" },
            self.checkpointing
        )
    }

    fn encode(&self) -> String {
        format!(
            "{},{},{},{},{},{},{},{}",
            self.preset, self.grid[0], self.grid[1], self.grid[2], self.batch, self.amp, self.checkpointing, self.crop
        )
    }

    fn decode(s: &str) -> Config {
        let f: Vec<&str> = s.split(',').collect();
        let preset = ["ultra_lightweight", "seed_baseline", "lightweight", "standard"]
            .into_iter()
            .find(|p| *p == f[0])
            .expect("preset");
        Config {
            preset,
            grid: [f[1].parse().unwrap(), f[2].parse().unwrap(), f[3].parse().unwrap()],
            batch: f[4].parse().unwrap(),
            amp: f[5].parse().unwrap(),
            checkpointing: f[6].parse().unwrap(),
            crop: f[7].parse().unwrap(),
        }
    }

    fn run(&self) -> memory::Run {
        memory::Run {
            model: memory::ModelConfig::Vae(VaeConfig::named(self.preset).unwrap()),
            grid: self.grid,
            batch: self.batch,
            precision: if self.amp { memory::Precision::Amp } else { memory::Precision::F32 },
            checkpointing: self.checkpointing,
        }
    }

    fn recipe(&self) -> VaeRecipe {
        VaeRecipe {
            vae: VaeConfig::named(self.preset).unwrap(),
            optim: OptimRecipe {
                epochs: 1,
                batch_size: self.batch,
                grad_accum: 2,
                shuffle: false,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn runtime(&self, device: &str, out: &std::path::Path) -> Runtime {
        Runtime {
            out: out.into(),
            amp: if self.amp { AmpMode::On } else { AmpMode::Off },
            checkpointing: self.checkpointing,
            device: device.into(),
            progress: false,
            force: true,
            oom_fallback: false,
            ..Default::default()
        }
    }
}

const FULL: [i64; 3] = [96, 608, 224];

fn configs(full: bool) -> Vec<Config> {
    use Checkpointing::{Off, PerBlock, Segments};
    let small = [32, 128, 128];
    let c = |preset, grid, batch, amp, checkpointing| Config { preset, grid, batch, amp, checkpointing, crop: false };
    let crop = |preset, grid, checkpointing| Config { crop: true, ..c(preset, grid, 1, false, checkpointing) };
    let mut v = vec![
        c("ultra_lightweight", small, 1, false, Off),
        c("ultra_lightweight", small, 1, false, PerBlock),
        c("ultra_lightweight", small, 1, false, Segments(4)),
        c("ultra_lightweight", small, 1, true, Off),
        c("ultra_lightweight", small, 1, true, PerBlock),
        c("ultra_lightweight", small, 2, false, Off),
        c("seed_baseline", small, 1, false, Off),
        c("seed_baseline", small, 1, true, PerBlock),
        c("lightweight", small, 2, true, PerBlock),
        // native-resolution crops of full frames (f32: bf16 is emulated on many CPUs)
        crop("seed_baseline", [32, 128, 128], Off),
        crop("standard", [32, 64, 64], Off),
        crop("standard", [32, 64, 64], PerBlock),
    ];
    if full {
        v.push(c("ultra_lightweight", FULL, 1, true, PerBlock));
        v.push(c("ultra_lightweight", FULL, 1, true, Segments(4)));
        v.push(c("seed_baseline", FULL, 1, true, PerBlock));
    }
    v
}

fn dataset(cfg: &Config, frames: usize) -> Dataset {
    let root = common::dataset(false, frames);
    let zhw = cfg.grid.map(|d| d as usize);
    let layout = if cfg.grid == FULL {
        Layout::default()
    } else if cfg.crop {
        Layout::Crop { zhw, focus: 50 }
    } else {
        Layout::Resample { zhw }
    };
    Dataset::open(&root, Split::Train, &DatasetConfig { layout, ..Default::default() }).unwrap()
}

/// One configuration in this (fresh) process; prints one JSON line.
fn child(cfg: &Config, device: &str) {
    let cuda = device != "cpu";
    if !cuda {
        assert!(radvox::sys::shim::count_host_tensors());
    }
    let _warm = tch::Tensor::zeros([1], (tch::Kind::Float, tch::Device::Cpu)) + 1.0;
    let ds = dataset(cfg, 2 * cfg.batch);
    let out = tempfile::tempdir().unwrap();
    // Peaks from "libtorch loaded, dataset headers read".
    let window = common::HostPeak::start();
    if cuda {
        common::cuda_reset_peak();
    }
    let t0 = Instant::now();
    let mut trainer = Trainer::vae(ds, None, cfg.recipe(), cfg.runtime(device, out.path())).unwrap();
    let plan = trainer.plan().unwrap();
    let batches: Vec<_> = trainer.objective().train_loader().epoch(0).map(|b| b.unwrap()).collect();
    for b in &batches {
        trainer.micro_step(b).unwrap();
    }
    drop(batches);
    trainer.optimizer_step(1e-4).unwrap();
    let seconds = t0.elapsed().as_secs_f64();
    let (measured, counted, reserved) = if cuda {
        let (allocated, reserved) = common::cuda_peaks();
        (allocated, allocated, reserved)
    } else {
        let (rss, counted) = window.peaks();
        (rss, counted, 0)
    };
    println!(
        r#"{{"predicted": {}, "measured": {measured}, "counted": {counted}, "reserved": {reserved}, "baseline_rss": {}, "seconds": {seconds:.1}, "peak_at": "{}"}}"#,
        plan.device_tensors(),
        window.rss0,
        plan.peak_at
    );
}

fn main() {
    let device = std::env::var("RADVOX_MEMORY_DEVICE").unwrap_or_else(|_| "cpu".into());
    if let Ok(spec) = std::env::var("RADVOX_MEMORY_CHILD") {
        return child(&Config::decode(&spec), &device);
    }
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let full = std::env::var("RADVOX_MEMORY_FULL").is_ok_and(|v| v == "1");
    let only = std::env::var("RADVOX_MEMORY_ONLY").unwrap_or_default();
    let backend = if device == "cpu" { Backend::cpu() } else { Backend::Cuda };
    let mut list: Vec<Config> = configs(full).into_iter().filter(|c| c.label().contains(&only)).collect();
    if backend == Backend::Cuda {
        // the GPU run: every configuration with AMP off and on
        list = list
            .into_iter()
            .flat_map(|c| [Config { amp: false, ..c.clone() }, Config { amp: true, ..c }])
            .collect::<Vec<_>>();
        list.dedup_by(|a, b| a.label() == b.label());
    }
    if std::env::args().any(|a| a == "--plan") {
        let planner = memory::Planner::new(backend);
        for c in &list {
            let p = planner.plan(&c.run()).unwrap();
            println!("{:<48} {:>12}  at {}", c.label(), gib(p.device_tensors()), p.peak_at);
        }
        return;
    }
    let me = std::env::current_exe().unwrap();
    println!("memory plan vs measured peak, {device}, one process per configuration");
    let cuda = backend == Backend::Cuda;
    println!(
        "{:<48} {:>11} {:>11} {:>7} {:>11} {:>7} {:>8}{}",
        "configuration",
        "predicted",
        "measured",
        "error",
        "tensors",
        "error",
        "seconds",
        if cuda { "    reserved" } else { "" }
    );
    let csv_path = std::env::var("RADVOX_MEMORY_CSV")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/target/memory_measured.csv").into());
    let mut csv = std::fs::File::create(&csv_path).unwrap();
    writeln!(
        csv,
        "backend,model,grid,batch,precision,checkpointing,predicted_bytes,measured_bytes,counted_bytes,error_pct,seconds,reserved_bytes"
    )
    .unwrap();
    let mut worst: f64 = 0.0;
    for c in &list {
        let out = Command::new(&me)
            .env("RADVOX_MEMORY_CHILD", c.encode())
            .env("RADVOX_MEMORY_DEVICE", &device)
            .output()
            .expect("spawn");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let Some(json) = stdout.lines().find(|l| l.starts_with('{')) else {
            let err = String::from_utf8_lossy(&out.stderr);
            // the panic message is the line after "panicked at"
            let mut lines = err.lines().skip_while(|l| !l.contains("panicked at"));
            let why = lines.nth(1).or_else(|| err.lines().last()).unwrap_or("");
            println!("{:<48} failed: {}", c.label(), why.chars().take(200).collect::<String>());
            continue;
        };
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        let (p, m, t) =
            (v["predicted"].as_f64().unwrap(), v["measured"].as_f64().unwrap(), v["counted"].as_f64().unwrap());
        let (err, terr) = (100.0 * (p / m - 1.0), 100.0 * (p / t - 1.0));
        worst = worst.max(err.abs());
        let reserved = v["reserved"].as_u64().unwrap_or(0);
        println!(
            "{:<48} {:>11} {:>11} {:>+6.1}% {:>11} {:>+6.1}% {:>8.1}{}",
            c.label(),
            gib(p as u64),
            gib(m as u64),
            err,
            gib(t as u64),
            terr,
            v["seconds"].as_f64().unwrap(),
            if cuda { format!(" {:>11}", gib(reserved)) } else { String::new() }
        );
        let reserved = if cuda { reserved.to_string() } else { String::new() };
        writeln!(
            csv,
            "{},{},{},{},{:.2},{},{reserved}",
            c.run().key(backend),
            p as u64,
            m as u64,
            t as u64,
            err,
            v["seconds"]
        )
        .unwrap();
    }
    let what = if backend.is_cpu() {
        "peak RSS above the libtorch baseline; tensors = libtorch's counted tensor peak"
    } else {
        "tensors = the CUDA caching allocator's peak allocated bytes; reserved = its peak reserved bytes"
    };
    println!("measured = {what}; worst |error| vs measured {worst:.1}%");
    println!("wrote {csv_path}");
}
