//! The evaluation protocol on the quality benchmark's held-out scenes
//! (scene10-11 of `simulate --scenes 12 --frames 24 --seed 11`, made under
//! the bench data folder unless `RADVOX_QUALITY_ROOT` names a root): the
//! radar alone scored per range band, height band and in the shared-visible
//! region against the target, with the target's share in each, at native
//! resolution (0.2 m) and at the benchmark's coarse grid (8, 64, 32); and the
//! evaluation's run time per native frame (a target-sized prediction: the
//! target itself) with the whole-frame metrics only ("before") and with
//! every region ("after"), in the same run.
//!
//! `cargo bench --bench eval_regions` (`RADVOX_Z_MIN=-1` sets the regions' z filter).

use std::time::Instant;

use radvox::data::layout::Layout;
use radvox::data::{Dataset, DatasetConfig, Modality, Split};
use radvox::eval::frames::{geometry, layout_dims, occupied};
use radvox::eval::summary::{summarize_scope, Scope};
use radvox::eval::{evaluate_frame, EvalConfig, FrameInput, Prediction, RegionConfig, VoxelSet};

mod common;

/// The held-out frames' radar and target sets under `layout`, with the geometry.
fn frames(layout: Layout) -> (radvox::eval::GridGeometry, Vec<(String, VoxelSet, VoxelSet)>) {
    let scenes = Some(vec!["scene10".to_string(), "scene11".to_string()]);
    let ds = Dataset::open(
        common::quality_root(),
        Split::Val,
        &DatasetConfig { layout, val_scenes: scenes, ..Default::default() },
    )
    .expect("the quality root");
    let file = ds.frames()[0].target.shape();
    let (dims, geom) = (layout_dims(file, layout), geometry(file, layout).unwrap());
    let sets = (0..ds.len())
        .map(|i| {
            let (r, t) = (ds.read(i, Modality::Radar).unwrap(), ds.read(i, Modality::Target).unwrap());
            (ds.frames()[i].id.to_string(), occupied(&r, dims, 0.5), occupied(&t, dims, 0.5))
        })
        .collect();
    (geom, sets)
}

fn num(v: Option<f64>) -> String {
    v.map_or("n/a".into(), |v| format!("{v:.3}"))
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let regions =
        RegionConfig { z_min: std::env::var("RADVOX_Z_MIN").ok().map(|z| z.parse().unwrap()), ..Default::default() };
    let flags = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let bf16 = ["avx512_bf16", "amx_bf16"].iter().any(|f| flags.contains(f));
    println!(
        "held-out scene10-11 of the quality root, regions {:?} (z_min {:?}, visible radius {:?}), CPU {} threads ({})",
        regions.regions().iter().map(|r| r.name()).collect::<Vec<_>>(),
        regions.z_min,
        regions.visible_radius,
        rayon::current_num_threads(),
        if bf16 { "avx512_bf16" } else { "no native bf16" }
    );
    let points = radvox::eval::PointConfig { taus: vec![1.0, 2.0] };
    let cfg = EvalConfig { regions: regions.clone(), points, ..Default::default() };
    for (name, layout) in
        [("native 0.2 m", Layout::default()), ("coarse (8, 64, 32)", Layout::Resample { zhw: [8, 64, 32] })]
    {
        let (geom, sets) = frames(layout);
        let empty = Prediction::default();
        let records: Vec<_> = sets
            .iter()
            .map(|(id, r, t)| {
                let input = FrameInput { frame: id, scene: "", prediction: &empty, radar: r, target: t };
                evaluate_frame(&geom, &input, &cfg).unwrap()
            })
            .collect();
        let o = summarize_scope(Scope::Overall, &records.iter().collect::<Vec<_>>());
        println!("\n{name}, {} frames, {} target voxels; radar alone:", o.frames, o.target_count);
        println!("| region | target voxels | share | radar IoU | F1 | Chamfer (m) | NN (m) | match@1 m | match@2 m | rmatch@2 m | BEV IoU | BEV F1 |");
        println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        let all = &o.radar;
        let at = |tau: f64| all.at(tau);
        println!(
            "| whole frame | {} | 1.000 | {} | {} | {} | - | {} | {} | {} | - | - |",
            o.target_count,
            num(all.voxel.iou.mean),
            num(all.voxel.f1.mean),
            num(all.chamfer.mean),
            num(at(1.0).and_then(|f| f.precision.mean)),
            num(at(2.0).and_then(|f| f.precision.mean)),
            num(at(2.0).and_then(|f| f.recall.mean)),
        );
        for g in &o.radar.regions {
            let (m1, m2) = (g.at(1.0), g.at(2.0));
            println!(
                "| {} | {} | {:.3} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                g.region,
                g.target_count,
                g.target_count as f64 / o.target_count.max(1) as f64,
                num(g.iou.mean),
                num(g.f1.mean),
                num(g.chamfer.mean),
                num(g.nn.mean),
                num(m1.and_then(|m| m.0.mean)),
                num(m2.and_then(|m| m.0.mean)),
                num(m2.and_then(|m| m.1.mean)),
                num(g.bev_iou.mean),
                num(g.bev_f1.mean)
            );
        }
        if name.starts_with("native") {
            let time = |cfg: &EvalConfig| {
                let mut t: Vec<f64> = sets
                    .iter()
                    .map(|(id, r, target)| {
                        let p = Prediction::from_set(target);
                        let input = FrameInput { frame: id, scene: "", prediction: &p, radar: r, target };
                        let t0 = Instant::now();
                        evaluate_frame(&geom, &input, cfg).unwrap();
                        t0.elapsed().as_secs_f64()
                    })
                    .collect();
                t.sort_by(f64::total_cmp);
                (t[t.len() / 2], t.iter().sum::<f64>() / t.len() as f64)
            };
            let before = time(&EvalConfig { regions: RegionConfig::none(), ..cfg.clone() });
            let after = time(&cfg);
            println!(
                "\nevaluation per native frame (prediction = the target, {} voxels on average): whole-frame metrics only {:.1} ms median ({:.1} mean); with the {} regions {:.1} ms median ({:.1} mean): {:.2}x",
                sets.iter().map(|s| s.2.len()).sum::<usize>() / sets.len().max(1),
                before.0 * 1e3,
                before.1 * 1e3,
                regions.regions().len(),
                after.0 * 1e3,
                after.1 * 1e3,
                after.0 / before.0
            );
        }
    }
}
