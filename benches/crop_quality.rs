//! Reconstruction quality at native resolution of VAEs trained for the same
//! wall-clock budget by `scripts/crop_quality.sh` (which runs this after
//! training): `ultra_resampled` (trained on whole frames resampled to
//! (32, 128, 128)), `ultra_crops` and `seed_crops` (trained on native
//! (32, 128, 128) crops).
//!
//! Scored on the held-out scenes (never trained on), every other frame: one
//! native (32, 128, 128) box per frame, centred (clamped to the grid) on an
//! occupied target voxel drawn with a fixed seed, the same box for every
//! model. A crop-trained model reconstructs the box itself; the resampled
//! model reconstructs its whole resampled frame, which is brought back to
//! the native grid by the inverse of the resampling windows (nearest: each
//! native voxel takes the score of the cell it was pooled into), then the
//! box is cut. Occupied = channel 0 of the reconstruction at or above a
//! threshold; IoU against the target's occupied voxels, summed over boxes.
//! Each model's threshold is the IoU-best of 0.05, 0.10, ... 0.95 on the
//! calibration scene; the test scenes are scored at it (and at 0.5).
//!
//! `CROP_QUALITY_DIR` (default `runs/crop_quality`) holds the runs,
//! `SIM_DIR` (default `runs/quality/sim/ntu`) the simulated scenes.

use std::path::PathBuf;
use std::time::Instant;

use radvox::data::layout::Layout;
use radvox::data::{Dataset, DatasetConfig, Modality, Split};
use radvox::model::FrozenVae;
use radvox::train::load_vae;
use rand::{Rng, SeedableRng};
use tch::{Device, Kind, Tensor};

const BOX: [i64; 3] = [32, 128, 128];
const RESAMPLED: [usize; 3] = [32, 128, 128];
const CALIBRATION: &[&str] = &["scene09"];
const TEST: &[&str] = &["scene10", "scene11"];
const THRESHOLDS: usize = 19;

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

struct Model {
    name: &'static str,
    vae: FrozenVae,
    resampled: bool,
    seconds: f64,
}

impl Model {
    /// Channel 0 of the reconstruction in each box of frame `i`.
    fn scores(&mut self, ds: &Dataset, rs: &Dataset, i: usize, boxes: &[[i64; 3]], target: &Tensor) -> Vec<Tensor> {
        let t0 = Instant::now();
        let out = tch::no_grad(|| {
            if self.resampled {
                let x = rs.read(i, Modality::Target).unwrap().to_tensor();
                let r = self.vae.decode(&self.vae.encode(&x)).narrow(1, 0, 1);
                let hwzc = ds.frames()[i].target.shape();
                let native = [hwzc[2] as i64, hwzc[0] as i64, hwzc[1] as i64];
                let up = r.upsample_nearest3d(native, None, None, None);
                let padded = target.size();
                let pad = [0, padded[4] - native[2], 0, padded[3] - native[1], 0, padded[2] - native[0]];
                let full = up.constant_pad_nd(pad);
                boxes.iter().map(|b| cut(&full, *b)).collect()
            } else {
                boxes.iter().map(|b| self.vae.decode(&self.vae.encode(&cut(target, *b))).narrow(1, 0, 1)).collect()
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
fn score(models: &mut [Model], root: &PathBuf, scenes: &[&str]) -> (Vec<Counts>, usize) {
    let ds = open(root, scenes, Layout::default());
    let rs = open(root, scenes, Layout::Resample { zhw: RESAMPLED });
    let mut counts = vec![Counts::default(); models.len()];
    let mut n = 0;
    for i in (0..ds.len()).step_by(2) {
        let target = ds.read(i, Modality::Target).unwrap().to_tensor().to_kind(Kind::Float);
        let b = boxes(&target, i as u64);
        for (m, c) in models.iter_mut().zip(&mut counts) {
            for (s, origin) in m.scores(&ds, &rs, i, &b, &target).iter().zip(&b) {
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
    let mut models: Vec<Model> = [("ultra_resampled", true), ("ultra_crops", false), ("seed_crops", false)]
        .into_iter()
        .filter_map(|(name, resampled)| {
            let path = dir.join(name).join("last.safetensors");
            let (vae, _) = load_vae(&path, None, Device::Cpu).map_err(|e| eprintln!("{name}: {e}")).ok()?;
            Some(Model { name, vae, resampled, seconds: 0.0 })
        })
        .collect();
    if models.is_empty() {
        eprintln!("no trained runs in {}: run scripts/crop_quality.sh", dir.display());
        return;
    }
    let (cal, n_cal) = score(&mut models, &root, CALIBRATION);
    let (test, n_test) = score(&mut models, &root, TEST);
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
        let steps = std::fs::read_to_string(dir.join(m.name).join("train_log.csv"))
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
}
