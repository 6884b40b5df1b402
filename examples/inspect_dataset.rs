//! Prints one line per frame of an NTU4DRadLM_Pre tree:
//! `<scene>/<stem> shape=C,Z,H,W target_sum=.. radar_sum=.. target_nnz=n radar_nnz=n`,
//! and exits non-zero with the error on bad data.
#![allow(clippy::result_large_err)] // errors carry the file they are about, as the library's do
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use radvox::data::{Dataset, DatasetConfig, Layout, Modality, Split};

mod common;

/// Print per-frame sums and occupancy of an NTU4DRadLM_Pre tree.
#[derive(Debug, Parser)]
#[command(version, allow_negative_numbers = true)]
struct Cli {
    /// NTU4DRadLM_Pre root.
    root: PathBuf,
    /// Split: train, val or all.
    #[arg(long, default_value = "all")]
    split: Split,
    /// Resample every frame to Z,H,W (default: pad to a multiple of 32).
    #[arg(long, value_parser = common::zhw)]
    resample: Option<[usize; 3]>,
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let cli = Cli::parse();
    let mut config = DatasetConfig::default();
    if let Some(zhw) = cli.resample {
        config.layout = Layout::Resample { zhw };
    }
    let ds = Dataset::open(&cli.root, cli.split, &config)?;
    for w in ds.warnings() {
        eprintln!("warning: {w}");
    }
    for (i, frame) in ds.frames().iter().enumerate() {
        let target = ds.read(i, Modality::Target)?;
        let radar = ds.read(i, Modality::Radar)?;
        let join = |v: &[f64]| v.iter().map(|s| format!("{s:.6e}")).collect::<Vec<_>>().join(",");
        let shape = target.shape.map(|d| d.to_string()).join(",");
        println!(
            "{} shape={shape} target_sum={} radar_sum={} target_nnz={} radar_nnz={}",
            frame.id,
            join(&target.channel_sums()),
            join(&radar.channel_sums()),
            target.occupied(),
            radar.occupied()
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    common::main_with(run)
}
