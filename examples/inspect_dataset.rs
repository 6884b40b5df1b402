//! Prints one line per frame of an NTU4DRadLM_Pre tree:
//! `<scene>/<stem> shape=C,Z,H,W target_sum=.. radar_sum=.. target_nnz=n radar_nnz=n`.
//!
//! `cargo run --release --example inspect_dataset -- <root> [--split train|val|all] [--resample Z,H,W]`
use std::process::ExitCode;

use radvox::{Dataset, DatasetConfig, Layout, Modality, Split};

mod common;

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (mut root, mut split, mut config) = (None, Split::All, DatasetConfig::default());
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--split" => split = args.next().ok_or("--split needs a value")?.parse()?,
            "--resample" => {
                let zhw = radvox::layout::parse_zhw(&args.next().ok_or("--resample needs Z,H,W")?)?;
                config.layout = Layout::Resample { zhw };
            }
            "-h" | "--help" => {
                println!("usage: inspect_dataset <root> [--split train|val|all] [--resample Z,H,W]");
                return Ok(());
            }
            _ if root.is_none() && !arg.starts_with('-') => root = Some(arg),
            other => return Err(format!("unexpected argument {other:?}").into()),
        }
    }
    let root = root.ok_or("usage: inspect_dataset <root> [--split train|val|all] [--resample Z,H,W]")?;
    let ds = Dataset::open(&root, split, &config)?;
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
