//! Checks the process group torchrun describes: joins it (even a world of
//! one, so a single GPU exercises NCCL), checks a broadcast and an
//! all-reduce, and times all-reduces of a gradient bucket.
//!
//! `torchrun --no-python --nproc-per-node N target/release/examples/dist_check [--device cuda]`
#![allow(clippy::result_large_err)] // errors carry the file they are about, as the library's do

mod common;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use radvox::dist::{Dist, DistEnv, ReduceOp, DEFAULT_BUCKET_BYTES};
use tch::{Device, Kind, Tensor};

/// Check the c10d process group torchrun set up (Gloo on CPU, NCCL on CUDA) and time its all-reduce
#[derive(Parser, Debug)]
#[command(version)]
struct Cli {
    /// cpu (Gloo), cuda (NCCL, `cuda:LOCAL_RANK`) or auto.
    #[arg(long, default_value = "auto")]
    device: String,
    /// All-reduce size in MiB (default: one gradient bucket).
    #[arg(long, default_value_t = (DEFAULT_BUCKET_BYTES >> 20) as f64)]
    mib: f64,
    /// Timed all-reduces (after one warm-up).
    #[arg(long, default_value_t = 10)]
    iters: usize,
    /// Seconds to wait for the other ranks.
    #[arg(long, default_value_t = 300.0)]
    timeout: f64,
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let cli = Cli::parse();
    let env = DistEnv::from_env()?.ok_or("WORLD_SIZE is unset: run this under torchrun")?;
    let device = match cli.device.as_str() {
        "cpu" => Device::Cpu,
        "cuda" => Device::Cuda(env.local_rank),
        "auto" if tch::Cuda::is_available() => Device::Cuda(env.local_rank),
        "auto" => Device::Cpu,
        d => return Err(format!("--device {d}: use cpu, cuda or auto").into()),
    };
    let cuda = device != Device::Cpu;
    let dist = Dist::join(&env, Duration::from_secs_f64(cli.timeout), cuda)?;
    let (rank, world) = (dist.rank() as f64, dist.world_size() as f64);
    let sync = || {
        if let Device::Cuda(i) = device {
            tch::Cuda::synchronize(i as i64);
        }
    };
    let t = Tensor::full([4], rank, (Kind::Float, device));
    dist.broadcast(&t, 0)?;
    if t.abs().max().double_value(&[]) != 0.0 {
        return Err("broadcast: rank 0's values did not arrive".into());
    }
    let n = ((cli.mib * 1048576.0) / 4.0) as i64;
    let buf = Tensor::empty([n], (Kind::Float, device));
    let want = world * (world + 1.0) / 2.0; // ranks contribute 1, 2, ..., world
    let mut times = Vec::new();
    for i in 0..=cli.iters {
        let _ = buf.shallow_clone().fill_(rank + 1.0);
        sync();
        let t0 = Instant::now();
        dist.all_reduce(&buf, ReduceOp::Sum)?;
        sync();
        if i > 0 {
            times.push(t0.elapsed().as_secs_f64());
        }
        let (lo, hi) = (buf.min().double_value(&[]), buf.max().double_value(&[]));
        if lo != want || hi != want {
            return Err(format!("all-reduce: got [{lo}, {hi}], want {want}").into());
        }
    }
    dist.barrier()?;
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let bytes = (n * 4) as f64;
    let bus = 2.0 * (world - 1.0) / world * bytes / median / 1e9; // ring all-reduce traffic per rank
    if dist.is_main() {
        println!(
            "world {world} {} on {device:?}: broadcast ok, all-reduce ok; {:.1} MiB all-reduce median {:.2} ms \
             (min {:.2}, max {:.2}) over {} runs, bus bandwidth {bus:.2} GB/s",
            if cuda { "nccl" } else { "gloo" },
            bytes / 1048576.0,
            median * 1e3,
            times[0] * 1e3,
            times[times.len() - 1] * 1e3,
            times.len()
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    common::main_with(run)
}
