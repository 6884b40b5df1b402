//! Prints one line per frame of an NTU4DRadLM_Pre tree:
//! `<scene>/<stem> shape=C,Z,H,W target_sum=.. radar_sum=.. target_nnz=n radar_nnz=n`,
//! and exits non-zero with the error on bad data. With `--crop Z,H,W`, also
//! the share of empty training crops at 0, 50 and 100 % focus.
#![allow(clippy::result_large_err)] // errors carry the file they are about, as the library's do
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use radvox::data::crop::CropAt;
use radvox::data::{Dataset, DatasetConfig, Layout, Modality, Split};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

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
    /// Also report the share of empty target crops of Z,H,W (8 seeded draws
    /// per frame at each focus: 0, 50 and 100 % centred on occupied voxels).
    #[arg(long, value_parser = common::zhw, conflicts_with = "resample")]
    crop: Option<[usize; 3]>,
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
    if let Some(zhw) = cli.crop {
        let crops =
            Dataset::open(&cli.root, cli.split, &DatasetConfig { layout: Layout::Crop { zhw, focus: 0 }, ..config })?;
        let per = zhw.iter().product::<usize>();
        let mut buf = vec![half::f16::ZERO; 4 * per];
        let mut shares = Vec::new();
        for focus in [0u8, 50, 100] {
            let mut rng = ChaCha8Rng::seed_from_u64(0);
            let (mut empty, mut draws) = (0, 0);
            for i in 0..crops.len() {
                for _ in 0..8 {
                    crops.read_crop_into(i, Modality::Target, CropAt::Draw { focus, rng: &mut rng }, &mut buf)?;
                    empty += buf[..per].iter().all(|v| v.to_f32() == 0.0) as usize;
                    draws += 1;
                }
            }
            shares.push(format!("{focus}% {:.3}", empty as f64 / draws as f64));
        }
        println!(
            "empty {} crops by focus: {} ({} draws each)",
            zhw.map(|d| d.to_string()).join(","),
            shares.join(", "),
            8 * crops.len()
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    common::main_with(run)
}
