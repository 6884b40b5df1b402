//! Samples LiDAR-like grids from radar with a trained VAE + latent diffusion
//! model, writes per frame the prediction as sparse `.npz` (the dataset's
//! format), an occupancy `.ply` and a bird's-eye-view PNG (radar |
//! prediction | target), and scores it against the target.
//!
//! `cargo run --release --example sample -- --vae CKPT --ldm CKPT --dataset-dir DIR
//!  [--split val] [--out DIR] [--steps 18] [--solver heun|euler] [--seed N]
//!  [--threshold 0.5] [--resample Z,H,W] [--device auto|cpu|cuda]`
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use radvox::diffusion::Solver;
use radvox::export::{bev_panels, centres, to_sparse, write_ply, write_prediction_npz};
use radvox::latents::FrozenVae;
use radvox::layout::{parse_zhw, Layout};
use radvox::ldm::Sampler;
use radvox::metrics::{chamfer, Occupancy};
use radvox::train::parse_device;
use radvox::{Dataset, DatasetConfig, Modality, Split};

mod common;

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let (mut vae, mut ldm, mut dir, mut split) = (None, None, None, Split::Val);
    let (mut out, mut steps, mut solver, mut seed, mut threshold) =
        (PathBuf::from("runs/samples"), 18, Solver::Heun, 0u64, 0.5);
    let mut device = "auto".to_string();
    let mut ds_cfg = DatasetConfig::default();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || common::value(&mut args, &flag);
        match flag.as_str() {
            "--vae" => vae = Some(PathBuf::from(value()?)),
            "--ldm" => ldm = Some(PathBuf::from(value()?)),
            "--dataset-dir" => dir = Some(PathBuf::from(value()?)),
            "--split" => split = value()?.parse()?,
            "--out" => out = value()?.into(),
            "--steps" => steps = value()?.parse()?,
            "--solver" => solver = value()?.parse()?,
            "--seed" => seed = value()?.parse()?,
            "--threshold" => threshold = value()?.parse()?,
            "--resample" => ds_cfg.layout = Layout::Resample { zhw: parse_zhw(&value()?)? },
            "--device" => device = value()?,
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    let device = parse_device(&device)?;
    let vae = FrozenVae::load(&vae.ok_or("--vae is required")?, None, device)?;
    let sampler = Sampler::load(&ldm.ok_or("--ldm is required")?, &vae.hash, device)?;
    let ds = Dataset::open(dir.ok_or("--dataset-dir is required")?, split, &ds_cfg)?;
    std::fs::create_dir_all(&out)?;
    let mut csv = std::fs::File::create(out.join("metrics.csv"))?;
    writeln!(csv, "frame,iou,precision,recall,f1,chamfer_m,pred_voxels,target_voxels")?;
    let (mut tot, mut cham, mut n) = ((0.0, 0.0, 0.0), Vec::new(), 0usize);
    println!(
        "{:<16} {:>7} {:>9} {:>7} {:>7} {:>10} {:>7} {:>7}",
        "frame", "iou", "precision", "recall", "f1", "chamfer_m", "pred", "target"
    );
    for (i, f) in ds.frames().iter().enumerate() {
        let (radar, target) = (ds.read(i, Modality::Radar)?.to_tensor(), ds.read(i, Modality::Target)?.to_tensor());
        let cond = vae.encode(&radar);
        let z = sampler.sample(&cond, steps, solver, seed.wrapping_add(i as u64));
        let pred = vae.decode(&z).squeeze_dim(0);
        let [h, w, zd, _] = f.target.shape();
        let hwz = match ds_cfg.layout {
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
        writeln!(csv, "{},{},{},{},{},{},{},{}", f.id, o.iou, o.precision, o.recall, o.f1, c, p.len(), t.len())?;
        tot = (tot.0 + tp, tot.1 + fp, tot.2 + fn_);
        cham.push(c);
        n += 1;
    }
    let o = Occupancy::from_counts(tot.0, tot.1, tot.2);
    // Mean Chamfer over the split (infinite when any frame has an empty side).
    let cham = cham.iter().sum::<f64>() / cham.len().max(1) as f64;
    println!(
        "{:<16} {:>7.4} {:>9.4} {:>7.4} {:>7.4} {:>10.4}   ({n} frames, {steps} {solver:?} steps, seed {seed}; outputs in {})",
        "ALL",
        o.iou,
        o.precision,
        o.recall,
        o.f1,
        cham,
        out.display()
    );
    writeln!(csv, "ALL,{},{},{},{},{},,", o.iou, o.precision, o.recall, o.f1, cham)?;
    Ok(())
}

fn main() -> ExitCode {
    common::main_with(run)
}
