//! Reconstruction quality at native resolution of VAEs trained for the same
//! wall-clock budget by `scripts/crop_quality.sh` (which runs this after
//! training): every run folder under `CROP_QUALITY_DIR`, e.g.
//! `ultra_resampled` (trained on whole frames resampled to (32, 128, 128)),
//! `ultra_crops` and `seed_crops` (trained on native (32, 128, 128) crops),
//! and sparse VAEs (trained on whole native frames).
//!
//! Scored on the held-out scenes (never trained on), every other frame: one
//! native (32, 128, 128) box per frame, centred (clamped to the grid) on an
//! occupied target voxel drawn with a fixed seed, the same box for every
//! model. A crop-trained model reconstructs the box itself; the resampled
//! model reconstructs its whole resampled frame, which is brought back to
//! the native grid by the inverse of the resampling windows (nearest: each
//! native voxel takes the score of the cell it was pooled into), then the
//! box is cut. A sparse VAE reconstructs the whole native frame from its
//! occupied voxels (the structure its decoder keeps), then the box is cut;
//! sparse models are also scored on the whole test frames (IoU, F1,
//! Chamfer, F at 0.5 and 1 m, predicted / target voxels) and level by level
//! (of the target's sites at each stride: the share among the decoder's
//! candidates, i.e. under a parent it kept, and the recall and precision
//! of the children it keeps: where the structure is lost). Occupied =
//! channel 0 of the reconstruction at or above a
//! threshold; IoU against the target's occupied voxels, summed over boxes.
//! Each model's threshold is the IoU-best of 0.05, 0.10, ... 0.95 on the
//! calibration scene; the test scenes are scored at it (and at 0.5).
//!
//! `SPARSE_KEEP` (e.g. `0.5,0.3`): each sparse model is also scored with
//! these inference keep thresholds (rows `name@keepT`), to tell whether
//! pruning limits the reconstruction.
//!
//! `CROP_QUALITY_DIR` (default `runs/crop_quality`) holds the runs,
//! `SIM_DIR` (default `runs/quality/sim/ntu`) the simulated scenes.

use std::path::PathBuf;
use std::time::Instant;

use radvox::data::layout::Layout;
use radvox::data::loader::SiteBatch;
use radvox::data::{Dataset, DatasetConfig, Modality, Split};
use radvox::eval::points::{point_metrics, PointConfig, PointMetrics};
use radvox::model::sparse::hash::unpack;
use radvox::model::sparse::SparseTensor;
use radvox::model::sparse::{FrozenSparseVae, Keep};
use radvox::model::FrozenVae;
use radvox::train::checkpoint::Checkpoint;
use radvox::train::load_vae;
use radvox::train::sparse_vae::{key_counts, load_sparse_vae};
use rand::{Rng, SeedableRng};
use tch::{Device, Kind, Tensor};

const BOX: [i64; 3] = [32, 128, 128];
const RESAMPLED: [usize; 3] = [32, 128, 128];
const CALIBRATION: &[&str] = &["scene09"];
const TEST: &[&str] = &["scene10", "scene11"];
const THRESHOLDS: usize = 19;
/// Voxel size of the simulated native grid, metres.
const VOXEL: f64 = 0.2;

fn threshold(k: usize) -> f64 {
    0.05 * (k + 1) as f64
}

/// True positives, false positives, false negatives per threshold.
#[derive(Default, Clone)]
struct Counts(Vec<[f64; 3]>);

impl Counts {
    fn add(&mut self, scores: &Tensor, target: &Tensor) {
        if self.0.is_empty() {
            self.0 = vec![[0.0; 3]; THRESHOLDS];
        }
        let t = target.ge(0.5);
        let n_t = t.sum(Kind::Int64).int64_value(&[]) as f64;
        for (k, c) in self.0.iter_mut().enumerate() {
            let p = scores.ge(threshold(k));
            let tp = p.logical_and(&t).sum(Kind::Int64).int64_value(&[]) as f64;
            let n_p = p.sum(Kind::Int64).int64_value(&[]) as f64;
            c[0] += tp;
            c[1] += n_p - tp;
            c[2] += n_t - tp;
        }
    }

    fn iou(&self, k: usize) -> f64 {
        let [tp, fp, fn_] = self.0[k];
        tp / (tp + fp + fn_).max(1.0)
    }

    fn best(&self) -> usize {
        (0..THRESHOLDS).max_by(|&a, &b| self.iou(a).total_cmp(&self.iou(b))).unwrap()
    }
}

enum Vae {
    Dense { vae: Box<FrozenVae>, resampled: bool },
    Sparse(Box<FrozenSparseVae>),
}

struct Model {
    name: String,
    vae: Vae,
    seconds: f64,
    /// Whole-frame counts and point metrics (sparse models, test scenes).
    whole: Vec<(f64, f64, f64, PointMetrics)>,
    /// Per decoder level, native first: target sites, those among the
    /// candidates, kept sites, kept target sites (sparse models, test scenes).
    levels: Vec<[f64; 4]>,
}

/// Per decoder level (native first) of the reconstruction of `x`: target
/// sites, target sites among the candidates, kept sites, kept target sites.
fn level_counts(vae: &FrozenSparseVae, x: &SparseTensor) -> Vec<[f64; 4]> {
    let z = vae.encode(x).unwrap();
    let decoded = tch::no_grad(|| vae.vae.decode(&z, x.coords.shape(), Keep::Predicted)).unwrap();
    let targets = vae.vae.target_levels(&x.coords);
    let threshold = vae.vae.config().keep_threshold;
    decoded
        .levels
        .iter()
        .rev()
        .zip(&targets)
        .map(|(l, t)| {
            let p = Vec::<f32>::try_from(l.logits.sigmoid().to_kind(Kind::Float)).unwrap();
            let kept = l.candidates.select(&p.iter().map(|&v| v as f64 >= threshold).collect::<Vec<_>>());
            let (among, _, _) = key_counts(l.candidates.keys(), t.keys());
            let (tp, fp, _) = key_counts(kept.keys(), t.keys());
            [t.len() as f64, among, tp + fp, tp]
        })
        .collect()
}

/// Frame `i`'s target sites as a sparse tensor.
fn site_tensor(ds: &Dataset, i: usize) -> SparseTensor {
    let s = ds.file(i, Modality::Target).unwrap().read_sites(ds.config().layout).unwrap();
    let sites = SiteBatch { sites: s.batched(0).collect(), feats: s.feats.clone(), channels: s.channels };
    SparseTensor::of_sites(&sites, 0..1, s.grid.map(|v| v as i64), &vec![1.0; s.channels], Device::Cpu).unwrap()
}

/// The sparse reconstruction of `x` as a dense `(1, 1, Z, H, W)`
/// probability grid, and its kept sites.
fn sparse_scores(vae: &FrozenSparseVae, x: &SparseTensor) -> (Tensor, Vec<u64>, Vec<u64>) {
    let out = vae.reconstruct(x).unwrap();
    let prob = out.map(|f| f.narrow(1, 0, 1)).to_dense();
    (prob, out.coords.keys().to_vec(), x.coords.keys().to_vec())
}

/// Voxel-centre points (metres) of packed site keys.
fn points(keys: &[u64]) -> Vec<[f64; 3]> {
    keys.iter().map(|&k| unpack(k)).map(|[_, z, h, w]| [h as f64 * VOXEL, w as f64 * VOXEL, z as f64 * VOXEL]).collect()
}

impl Model {
    /// Channel 0 of the reconstruction in each box of frame `i`.
    fn scores(
        &mut self,
        ds: &Dataset,
        rs: &Dataset,
        i: usize,
        boxes: &[[i64; 3]],
        target: &Tensor,
        whole: bool,
    ) -> Vec<Tensor> {
        let t0 = Instant::now();
        let out = tch::no_grad(|| match &self.vae {
            Vae::Sparse(vae) => {
                let x = site_tensor(ds, i);
                let (prob, pred, truth) = sparse_scores(vae, &x);
                if whole {
                    let (tp, fp, fn_) = key_counts(&pred, &truth);
                    let pm = point_metrics(&points(&pred), &points(&truth), &PointConfig::default());
                    self.whole.push((tp, fp, fn_, pm));
                    let counts = level_counts(vae, &x);
                    self.levels.resize(counts.len(), [0.0; 4]);
                    for (acc, c) in self.levels.iter_mut().zip(counts) {
                        (0..4).for_each(|k| acc[k] += c[k]);
                    }
                }
                boxes.iter().map(|b| cut(&prob, *b)).collect()
            }
            Vae::Dense { vae, resampled: true } => {
                let x = rs.read(i, Modality::Target).unwrap().to_tensor();
                let r = vae.decode(&vae.encode(&x)).narrow(1, 0, 1);
                let hwzc = ds.frames()[i].target.shape();
                let native = [hwzc[2] as i64, hwzc[0] as i64, hwzc[1] as i64];
                let up = r.upsample_nearest3d(native, None, None, None);
                let padded = target.size();
                let pad = [0, padded[4] - native[2], 0, padded[3] - native[1], 0, padded[2] - native[0]];
                let full = up.constant_pad_nd(pad);
                boxes.iter().map(|b| cut(&full, *b)).collect()
            }
            Vae::Dense { vae, resampled: false } => {
                boxes.iter().map(|b| vae.decode(&vae.encode(&cut(target, *b))).narrow(1, 0, 1)).collect()
            }
        });
        self.seconds += t0.elapsed().as_secs_f64();
        out
    }
}

/// The `BOX` at `origin` of a `(1, C, Z, H, W)` tensor.
fn cut(x: &Tensor, origin: [i64; 3]) -> Tensor {
    (0..3).fold(x.shallow_clone(), |t, a| t.narrow(2 + a as i64, origin[a], BOX[a]))
}

/// One box per frame, centred on an occupied voxel drawn with a seed fixed per frame.
fn boxes(target: &Tensor, seed: u64) -> Vec<[i64; 3]> {
    let s = target.size();
    let occupied = target.get(0).get(0).ge(0.5).nonzero();
    let n = occupied.size()[0];
    if n == 0 {
        return Vec::new();
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let v = occupied.get(rng.random_range(0..n));
    vec![std::array::from_fn(|a| (v.int64_value(&[a as i64]) - BOX[a] / 2).clamp(0, s[2 + a] - BOX[a]))]
}

fn open(root: &PathBuf, scenes: &[&str], layout: Layout) -> Dataset {
    let cfg = DatasetConfig {
        layout,
        val_scenes: Some(scenes.iter().map(|s| s.to_string()).collect()),
        ..Default::default()
    };
    Dataset::open(root, Split::Val, &cfg).unwrap()
}

/// Counts per model over every other frame of `scenes`.
fn score(models: &mut [Model], root: &PathBuf, scenes: &[&str], whole: bool) -> (Vec<Counts>, usize) {
    let ds = open(root, scenes, Layout::default());
    let rs = open(root, scenes, Layout::Resample { zhw: RESAMPLED });
    let mut counts = vec![Counts::default(); models.len()];
    let mut n = 0;
    for i in (0..ds.len()).step_by(2) {
        let target = ds.read(i, Modality::Target).unwrap().to_tensor().to_kind(Kind::Float);
        let b = boxes(&target, i as u64);
        for (m, c) in models.iter_mut().zip(&mut counts) {
            for (s, origin) in m.scores(&ds, &rs, i, &b, &target, whole).iter().zip(&b) {
                c.add(s, &cut(&target, *origin).narrow(1, 0, 1));
            }
        }
        n += b.len();
    }
    (counts, n)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let dir = PathBuf::from(std::env::var("CROP_QUALITY_DIR").unwrap_or_else(|_| "runs/crop_quality".into()));
    let root = PathBuf::from(std::env::var("SIM_DIR").unwrap_or_else(|_| "runs/quality/sim/ntu".into()));
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.sort();
    let keeps: Vec<f64> = std::env::var("SPARSE_KEEP")
        .map(|v| v.split(',').map(|t| t.trim().parse().expect("SPARSE_KEEP: comma-separated thresholds")).collect())
        .unwrap_or_default();
    let mut models: Vec<Model> = Vec::new();
    for name in names {
        let path = dir.join(&name).join("last.safetensors");
        let Ok(kind) = Checkpoint::read_kinds(&path, &["vae", "sparse_vae"]).map(|c| c.kind) else { continue };
        let model = |name: String, vae| Model { name, vae, seconds: 0.0, whole: Vec::new(), levels: Vec::new() };
        if kind == "sparse_vae" {
            let Ok((vae, _)) = load_sparse_vae(&path, Device::Cpu).map_err(|e| eprintln!("{name}: {e}")) else {
                continue;
            };
            for &t in &keeps {
                let (mut v, _) = load_sparse_vae(&path, Device::Cpu).unwrap();
                v.vae.set_keep_threshold(t).unwrap();
                models.push(model(format!("{name}@keep{t}"), Vae::Sparse(Box::new(v))));
            }
            models.insert(models.len() - keeps.len(), model(name, Vae::Sparse(Box::new(vae))));
        } else {
            let Ok((vae, recipe)) = load_vae(&path, None, Device::Cpu).map_err(|e| eprintln!("{name}: {e}")) else {
                continue;
            };
            let resampled = matches!(recipe.layout, Some(Layout::Resample { .. }));
            models.push(model(name, Vae::Dense { vae: Box::new(vae), resampled }));
        }
    }
    if models.is_empty() {
        eprintln!("no trained runs in {}: run scripts/crop_quality.sh", dir.display());
        return;
    }
    let (cal, n_cal) = score(&mut models, &root, CALIBRATION, false);
    let (test, n_test) = score(&mut models, &root, TEST, true);
    println!(
        "native-resolution reconstruction, one {BOX:?} box per frame: {n_cal} boxes of {CALIBRATION:?} choose the \
         threshold (IoU-best), {n_test} boxes of {TEST:?} are scored"
    );
    println!(
        "| model | steps trained | threshold | test IoU | test IoU at 0.5 | calibration IoU | inference s per box |"
    );
    println!("|---|---|---|---|---|---|---|");
    for ((m, c), t) in models.iter().zip(&cal).zip(&test) {
        let k = c.best();
        let run = m.name.split('@').next().unwrap_or(&m.name);
        let steps = std::fs::read_to_string(dir.join(run).join("train_log.csv"))
            .ok()
            .and_then(|s| s.lines().last().and_then(|l| l.split(',').nth(1).map(str::to_owned)))
            .unwrap_or_else(|| "?".into());
        println!(
            "| {} | {steps} | {:.2} | {:.4} | {:.4} | {:.4} | {:.2} |",
            m.name,
            threshold(k),
            t.iou(k),
            t.iou(9),
            c.iou(k),
            m.seconds / (n_cal + n_test) as f64
        );
    }
    let sparse: Vec<&Model> = models.iter().filter(|m| !m.whole.is_empty()).collect();
    if sparse.is_empty() {
        return;
    }
    println!("\nwhole native frames of {TEST:?} (every other frame), sparse models at their own keep rule:");
    println!("| model | frames | IoU | F1 | Chamfer (m) | F@0.5 m | F@1 m | predicted / target voxels |");
    println!("|---|---|---|---|---|---|---|---|");
    for m in sparse {
        let (tp, fp, fn_) = m.whole.iter().fold((0.0, 0.0, 0.0), |a, w| (a.0 + w.0, a.1 + w.1, a.2 + w.2));
        let mean = |f: &dyn Fn(&PointMetrics) -> Option<f64>| {
            let v: Vec<f64> = m.whole.iter().filter_map(|w| f(&w.3)).collect();
            v.iter().sum::<f64>() / v.len().max(1) as f64
        };
        println!(
            "| {} | {} | {:.4} | {:.4} | {:.3} | {:.4} | {:.4} | {:.3} |",
            m.name,
            m.whole.len(),
            tp / (tp + fp + fn_).max(1.0),
            2.0 * tp / (2.0 * tp + fp + fn_).max(1.0),
            mean(&|p| p.chamfer),
            mean(&|p| p.fscores[0].fscore),
            mean(&|p| p.fscores[1].fscore),
            (tp + fp) / (tp + fn_).max(1.0)
        );
    }
    println!("\nwhere the structure is lost, decoder level by level (summed over those frames):");
    println!("| model | level (0 = native) | target sites | under a kept parent | kept | recall of kept | precision of kept |");
    println!("|---|---|---|---|---|---|---|");
    for m in models.iter().filter(|m| !m.levels.is_empty()) {
        for (k, [t, among, kept, tp]) in m.levels.iter().enumerate() {
            println!(
                "| {} | {} | {t:.0} | {:.4} | {kept:.0} | {:.4} | {:.4} |",
                m.name,
                k,
                among / t.max(1.0),
                tp / t.max(1.0),
                tp / kept.max(1.0)
            );
        }
    }
}
