//! The sparse occupancy VAE: a dense latent of the configured stride,
//! teacher-forced decoding that keeps exactly the target's structure at
//! every level, pruning by prediction capped per frame, and a model that
//! learns to reconstruct a frame's occupancy.

use std::rc::Rc;

use radvox::model::sparse::{loss::labels, Coords, Keep, SparseLossConfig, SparseTensor, SparseVae, SparseVaeConfig};
use tch::nn::{self, OptimizerConfig};
use tch::{Device, Kind, Tensor};

/// Surface-like sites: two planes and a box edge, batch `b`.
fn scene(batch: i64, grid: [i64; 3]) -> Vec<[i64; 4]> {
    let mut v = Vec::new();
    for b in 0..batch {
        for y in 0..grid[1] {
            for x in 0..grid[2] {
                v.push([b, 1 + b, y, x]); // ground
                if x == grid[2] / 2 + b && y < grid[1] - 3 {
                    for z in 2..grid[0] - 2 {
                        v.push([b, z, y, x]); // wall
                    }
                }
            }
        }
    }
    v.sort();
    v.dedup();
    v
}

fn input(sites: &[[i64; 4]], batch: i64, grid: [i64; 3]) -> SparseTensor {
    let coords = Coords::new(sites, batch, grid, [1; 3]).unwrap();
    let n = coords.len() as i64;
    let feats = Tensor::cat(
        &[Tensor::ones([n, 1], (Kind::Float, Device::Cpu)), Tensor::full([n, 3], 0.5, (Kind::Float, Device::Cpu))],
        1,
    );
    SparseTensor::new(coords, feats).unwrap()
}

#[test]
fn the_latent_is_dense_at_the_configured_stride_and_teacher_forcing_keeps_the_target() {
    let grid = [13, 37, 21]; // odd: every level rounds up
    let cfg = SparseVaeConfig::small();
    let vs = nn::VarStore::new(Device::Cpu);
    let vae = SparseVae::new(&vs.root(), &cfg).unwrap();
    let x = input(&scene(2, grid), 2, grid);
    let post = vae.encode(&x).unwrap();
    assert_eq!(post.mean.size(), cfg.latent_shape(2, grid));
    assert_eq!(post.mean.size(), [2, 8, 2, 5, 3]);
    let targets = vae.target_levels(&x.coords);
    let dec = vae.decode(&post.sample(None), grid, Keep::Target(&targets)).unwrap();
    assert!(Rc::ptr_eq(&dec.output.coords, &x.coords), "the native output is the target's own set");
    assert_eq!(dec.output.feats.size(), [x.coords.len() as i64, 4]);
    assert_eq!(dec.levels.len(), 4);
    for (i, l) in dec.levels.iter().enumerate() {
        let t = &targets[3 - i];
        let positives = labels(&l.candidates, t, Device::Cpu).sum(Kind::Float).int64_value(&[]);
        assert_eq!(positives as usize, t.len(), "level {i}: every target site is a candidate");
        assert_eq!(l.logits.size(), [l.candidates.len() as i64]);
    }
    assert_eq!(dec.levels[0].candidates.len(), 2 * 2 * 5 * 3, "the latent level scores every latent voxel");
    // every level's candidates are the children of the target one level coarser
    let expect = targets[1].children([2, 2, 2], grid).unwrap();
    assert_eq!(dec.levels[3].candidates.keys(), expect.keys());
    // a latent of the wrong grid is refused
    let e = vae.decode(&Tensor::zeros([2, 8, 2, 5, 4], (Kind::Float, Device::Cpu)), grid, Keep::Predicted).unwrap_err();
    assert!(e.to_string().contains("is not (B, 8"), "{e}");
}

#[test]
fn prediction_keeps_at_most_max_sites_per_frame() {
    let grid = [16, 32, 32];
    let cfg = SparseVaeConfig { max_sites: 5, keep_threshold: 0.01, ..SparseVaeConfig::small() };
    let vs = nn::VarStore::new(Device::Cpu);
    let vae = SparseVae::new(&vs.root(), &cfg).unwrap();
    // a latent head biased to "occupied" everywhere: every candidate passes the threshold
    tch::no_grad(|| {
        for (name, t) in vs.variables() {
            if name.ends_with("head.bias") {
                let _ = t.shallow_clone().fill_(10.0);
            }
        }
    });
    let x = input(&scene(2, grid), 2, grid);
    let dec = vae.reconstruct(&x).unwrap();
    for l in &dec.levels[1..] {
        assert!(l.candidates.len() <= 2 * 5 * 8, "children of at most 5 kept sites per frame: {}", l.candidates.len());
    }
    let per_frame: Vec<usize> =
        (0..2).map(|b| (0..dec.output.coords.len()).filter(|&i| dec.output.coords.site(i)[0] == b).count()).collect();
    assert_eq!(per_frame, [5, 5]);
}

#[test]
fn the_sparse_vae_learns_to_reconstruct_occupancy() {
    let grid = [16, 32, 32];
    let cfg = SparseVaeConfig::small();
    let vs = nn::VarStore::new(Device::Cpu);
    let vae = SparseVae::new(&vs.root(), &cfg).unwrap();
    let x = input(&scene(1, grid), 1, grid);
    let targets = vae.target_levels(&x.coords);
    let loss_cfg = SparseLossConfig::default();
    let mut opt = nn::Adam::default().build(&vs, 3e-3).unwrap();
    let mut first = None;
    let mut last = 0.0;
    for _ in 0..120 {
        let post = vae.encode(&x).unwrap();
        let dec = vae.decode(&post.sample(Some(&post.mean.randn_like())), grid, Keep::Target(&targets)).unwrap();
        let l = loss_cfg.compute(&dec, &x, &targets, &post, cfg.kl_weight);
        opt.backward_step(&l.total);
        last = l.structure.double_value(&[]);
        first.get_or_insert(last);
    }
    let first = first.unwrap();
    assert!(last < 0.2 * first, "structure loss {first:.4} -> {last:.4}");
    let dec = tch::no_grad(|| vae.reconstruct(&x)).unwrap();
    let pred: std::collections::HashSet<u64> = dec.output.coords.keys().iter().copied().collect();
    let tp = x.coords.keys().iter().filter(|k| pred.contains(k)).count();
    let iou_v = tp as f64 / (pred.len() + x.coords.len() - tp) as f64;
    eprintln!("structure loss {first:.4} -> {last:.4}, reconstruction IoU {iou_v:.3}");
    assert!(iou_v > 0.8, "reconstruction IoU {iou_v:.3} ({} predicted, {} target)", pred.len(), x.coords.len());
}

mod common;

/// The sparse VAE on the one engine: a run stopped after 3 optimizer steps
/// and resumed from its checkpoint ends with the weights, moments and logs
/// of the run that went straight through; the checkpoint holds the recipe
/// (kind `sparse_vae`) and loads frozen for inference.
#[test]
fn a_sparse_vae_run_resumes_exactly_and_its_checkpoint_loads_frozen() {
    use radvox::data::{Dataset, DatasetConfig, Split};
    use radvox::train::checkpoint::Checkpoint;
    use radvox::train::sparse_vae::{load_sparse_vae, SparseVaeRecipe};
    use radvox::train::{OptimRecipe, Runtime, Trainer};
    let ds = |split| Dataset::open(common::mini(), split, &DatasetConfig::default()).unwrap();
    let recipe = SparseVaeRecipe {
        optim: OptimRecipe {
            epochs: 2,
            batch_size: 1,
            grad_accum: 2,
            lr: 2e-3,
            shuffle: true,
            ..OptimRecipe::default()
        },
        ..SparseVaeRecipe::default()
    };
    let straight = tempfile::tempdir().unwrap();
    let mut t = Trainer::sparse_vae(
        ds(Split::Train),
        Some(ds(Split::Val)),
        recipe.clone(),
        common::cpu_runtime(straight.path()),
    )
    .unwrap();
    let reports = t.fit().unwrap();
    assert_eq!(reports.len(), 2);
    assert!(reports[1].metric("iou").is_some());
    let split = tempfile::tempdir().unwrap();
    let rt = Runtime { max_steps: Some(3), ..common::cpu_runtime(split.path()) };
    Trainer::sparse_vae(ds(Split::Train), Some(ds(Split::Val)), recipe.clone(), rt).unwrap().fit().unwrap();
    let last = split.path().join("last.safetensors");
    assert_eq!(Checkpoint::read(&last, "sparse_vae").unwrap().state.step, 3);
    let mut r = Trainer::resume_sparse_vae(
        &last,
        ds(Split::Train),
        Some(ds(Split::Val)),
        common::cpu_runtime(split.path()),
        |_| {},
    )
    .unwrap();
    r.fit().unwrap();
    let a = Checkpoint::read(&straight.path().join("last.safetensors"), "sparse_vae").unwrap();
    let b = Checkpoint::read(&last, "sparse_vae").unwrap();
    assert_eq!(a.state.step, b.state.step);
    assert_eq!(a.tensors.len(), b.tensors.len());
    for (k, v) in &a.tensors {
        assert!(v.equal(&b.tensors[k]), "{k} differs after resume");
    }
    assert_eq!(a.recipe::<SparseVaeRecipe>().unwrap(), b.recipe::<SparseVaeRecipe>().unwrap());
    // a dense VAE reader refuses it by kind; the sparse loader takes it
    let err = Checkpoint::read(&last, "vae").err().expect("refused").to_string();
    assert!(err.contains("a sparse_vae checkpoint"), "{err}");
    let (frozen, rec) = load_sparse_vae(&last, Device::Cpu).unwrap();
    assert_eq!(rec.vae, recipe.vae);
    let x = input(&scene(1, [32, 64, 32]), 1, [32, 64, 32]);
    let z = frozen.encode(&x).unwrap();
    assert_eq!(z.size(), recipe.vae.latent_shape(1, [32, 64, 32]));
    let out = frozen.decode(&z, [32, 64, 32]).unwrap();
    assert_eq!(out.feats.size()[1], 4);
}

/// A frame with no occupied voxel (a radar frame can be one) encodes to a
/// finite latent, trains without a non-finite loss, and decodes.
#[test]
fn an_empty_frame_encodes_trains_and_decodes() {
    let grid = [16, 32, 32];
    let cfg = SparseVaeConfig::small();
    let vs = nn::VarStore::new(Device::Cpu);
    let vae = SparseVae::new(&vs.root(), &cfg).unwrap();
    let empty = SparseTensor::new(
        Coords::new(&[], 1, grid, [1; 3]).unwrap(),
        Tensor::zeros([0, 4], (Kind::Float, Device::Cpu)),
    )
    .unwrap();
    let post = vae.encode(&empty).unwrap();
    assert_eq!(post.mean.size(), cfg.latent_shape(1, grid));
    assert!(post.mean.isfinite().all().int64_value(&[]) == 1);
    let eps = post.mean.randn_like();
    let parts = radvox::train::sparse_vae::micro_step(&vae, &SparseLossConfig::default(), &empty, &eps, 1.0).unwrap();
    assert!(parts.iter().all(|p| p.is_finite()), "{parts:?}");
    let dec = vae.decode(&post.mean, grid, Keep::Predicted).unwrap();
    assert_eq!(dec.output.feats.size()[1], 4);
}
