//! Samples LiDAR-like grids from radar with a trained VAE + latent diffusion
//! model, writes per frame the prediction as sparse `.npz` (the dataset's
//! format), an occupancy `.ply` and a bird's-eye-view PNG (radar |
//! prediction | target), and scores it against the target. The data layout
//! is the VAE's; a contradicting `--resample` is refused.
#![allow(clippy::result_large_err)] // errors carry the file they are about, as the library's do
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use radvox::data::{Dataset, DatasetConfig, Layout, Modality, Split};
use radvox::diffusion::Solver;
use radvox::eval::export::{bev_panels, centres, to_sparse, write_ply, write_prediction_npz};
use radvox::eval::{chamfer, Occupancy};
use radvox::train::vae::layout_for;
use radvox::train::{load_sampler, load_vae, parse_device};

mod common;

/// Densify radar frames with a trained VAE + latent diffusion model.
#[derive(Debug, Parser)]
#[command(version, about, allow_negative_numbers = true)]
struct Cli {
    /// The VAE checkpoint.
    #[arg(long)]
    vae: PathBuf,
    /// The latent diffusion checkpoint (trained on this VAE's latents).
    #[arg(long)]
    ldm: PathBuf,
    /// NTU4DRadLM_Pre root.
    #[arg(long)]
    dataset_dir: PathBuf,
    /// Split to densify: train, val or all.
    #[arg(long, default_value = "val")]
    split: Split,
    /// Output directory.
    #[arg(long, default_value = "runs/samples")]
    out: PathBuf,
    /// Solver steps (at least 1).
    #[arg(long, default_value_t = 18, value_parser = clap::value_parser!(u64).range(1..))]
    steps: u64,
    /// ODE solver: heun or euler.
    #[arg(long, default_value = "heun")]
    solver: Solver,
    /// Seed of the initial noise (frame i uses seed + i).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Occupancy threshold in (0, 1).
    #[arg(long, default_value_t = 0.5, value_parser = common::unit_interval)]
    threshold: f64,
    /// Must match the VAE's layout when given.
    #[arg(long, value_parser = common::zhw)]
    resample: Option<[usize; 3]>,
    /// Device: auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    device: String,
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let cli = Cli::parse();
    let device = parse_device(&cli.device)?;
    let (vae, vae_recipe) = load_vae(&cli.vae, None, device)?;
    let (sampler, _) = load_sampler(&cli.ldm, &vae.hash, device)?;
    let layout = layout_for(vae_recipe.layout, cli.resample.map(|zhw| Layout::Resample { zhw }), &cli.vae)?;
    let ds = Dataset::open(&cli.dataset_dir, cli.split, &DatasetConfig { layout, ..Default::default() })?;
    let s = ds.output_shape(0);
    vae_recipe.vae.check_grid([s[1] as i64, s[2] as i64, s[3] as i64])?;
    std::fs::create_dir_all(&cli.out)?;
    let (steps, threshold, out) = (cli.steps as usize, cli.threshold, &cli.out);
    let mut csv = vec!["frame,iou,precision,recall,f1,chamfer_m,pred_voxels,target_voxels".to_string()];
    let (mut tot, mut cham, mut n) = ((0.0, 0.0, 0.0), Vec::new(), 0usize);
    println!(
        "{:<16} {:>7} {:>9} {:>7} {:>7} {:>10} {:>7} {:>7}",
        "frame", "iou", "precision", "recall", "f1", "chamfer_m", "pred", "target"
    );
    for (i, f) in ds.frames().iter().enumerate() {
        let (radar, target) = (ds.read(i, Modality::Radar)?.to_tensor(), ds.read(i, Modality::Target)?.to_tensor());
        let cond = vae.encode(&radar);
        let z = sampler.sample(&cond, steps, cli.solver, cli.seed.wrapping_add(i as u64));
        let pred = vae.decode(&z).squeeze_dim(0);
        let [h, w, zd, _] = f.target.shape();
        let hwz = match layout {
            Layout::Pad { .. } => [h, w, zd],
            Layout::Resample { zhw } => [zhw[1], zhw[2], zhw[0]],
        };
        let p = to_sparse(&pred, hwz, threshold);
        let t = to_sparse(&target.squeeze_dim(0).to_kind(tch::Kind::Float), hwz, threshold);
        let r = to_sparse(&radar.squeeze_dim(0).to_kind(tch::Kind::Float), hwz, threshold);
        let stem = format!("{}_{}", f.id.scene, f.id.stem);
        write_prediction_npz(&out.join(format!("{stem}.npz")), &p)?;
        write_ply(&out.join(format!("{stem}.ply")), &p)?;
        bev_panels(&[("RADAR", &r), ("PREDICTION", &p), ("TARGET", &t)]).save_png(&out.join(format!("{stem}.png")))?;
        let (tp, fp, fn_) = Occupancy::counts(&pred.unsqueeze(0), &target.to_kind(tch::Kind::Float), threshold);
        let o = Occupancy::from_counts(tp, fp, fn_);
        let c = chamfer(&centres(&p), &centres(&t));
        println!(
            "{:<16} {:>7.4} {:>9.4} {:>7.4} {:>7.4} {:>10.4} {:>7} {:>7}",
            f.id.to_string(),
            o.iou,
            o.precision,
            o.recall,
            o.f1,
            c,
            p.len(),
            t.len()
        );
        csv.push(format!("{},{},{},{},{},{},{},{}", f.id, o.iou, o.precision, o.recall, o.f1, c, p.len(), t.len()));
        tot = (tot.0 + tp, tot.1 + fp, tot.2 + fn_);
        cham.push(c);
        n += 1;
    }
    let o = Occupancy::from_counts(tot.0, tot.1, tot.2);
    // Mean Chamfer over the split (infinite when any frame has an empty side).
    let cham = cham.iter().sum::<f64>() / cham.len().max(1) as f64;
    println!(
        "{:<16} {:>7.4} {:>9.4} {:>7.4} {:>7.4} {:>10.4}   ({n} frames, {steps} {:?} steps, seed {}; outputs in {})",
        "ALL",
        o.iou,
        o.precision,
        o.recall,
        o.f1,
        cham,
        cli.solver,
        cli.seed,
        out.display()
    );
    csv.push(format!("ALL,{},{},{},{},{},,", o.iou, o.precision, o.recall, o.f1, cham));
    let path = out.join("metrics.csv");
    radvox::io::write_atomic(&path, (csv.join("\n") + "\n").as_bytes())?;
    let _ = std::io::stdout().flush();
    Ok(())
}

fn main() -> ExitCode {
    common::main_with(run)
}
