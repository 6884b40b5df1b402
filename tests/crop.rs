//! Native-resolution crops: cut straight from sparse and dense files of
//! every dtype/order in the numpy-written fixtures, equal to the slice of
//! the whole frame; seeded draws (fresh per training epoch, fixed for
//! validation, the radar cut where the target was); and a crop-trained VAE
//! applied to whole frames in tiles.
use std::process::Command;

use half::f16;
use radvox::data::crop::CropAt;
use radvox::data::{Dataset, DatasetConfig, Grid, Layout, Loader, LoaderConfig, Modality, Split};
use radvox::memory::{ModelConfig, Planner, TILE_HEADROOM};
use radvox::model::Tiling;
use rand_chacha::ChaCha8Rng;

mod common;
use common::{example, mini};

const CROP: [usize; 3] = [8, 16, 16];

fn open(layout: Layout, split: Split) -> Dataset {
    Dataset::open(mini(), split, &DatasetConfig { layout, with_lidar: true, ..Default::default() }).unwrap()
}

/// The `zhw` box at `origin` of a whole `(C, Z, H, W)` grid, zero outside it.
fn slice(whole: &Grid, origin: [usize; 3], zhw: [usize; 3]) -> Vec<f16> {
    let [c, z, h, w] = whole.shape;
    let mut out = Vec::new();
    for ci in 0..c {
        for zi in origin[0]..origin[0] + zhw[0] {
            for hi in origin[1]..origin[1] + zhw[1] {
                for wi in origin[2]..origin[2] + zhw[2] {
                    let inside = zi < z && hi < h && wi < w;
                    out.push(if inside { whole.data[((ci * z + zi) * h + hi) * w + wi] } else { f16::ZERO });
                }
            }
        }
    }
    out
}

fn bits(v: &[f16]) -> Vec<u16> {
    v.iter().map(|h| h.to_bits()).collect()
}

#[test]
fn a_crop_is_the_slice_of_the_whole_frame_in_every_format() {
    let whole = open(Layout::Pad { alignment: 1 }, Split::All);
    let crops = open(Layout::Crop { zhw: CROP, focus: 50 }, Split::All);
    let n = CROP.iter().product::<usize>() * 4;
    let mut checked = 0;
    for i in 0..whole.len() {
        for m in [Modality::Target, Modality::Radar, Modality::Lidar] {
            let w = whole.read(i, m).unwrap();
            // inside, at the far corner, and reaching past the grid (10, 36, 20)
            for origin in [[0, 0, 0], [2, 20, 4], [1, 7, 3], [4, 30, 10]] {
                let mut out = vec![f16::from_f32(7.0); n];
                let at = CropAt::<ChaCha8Rng>::Origin(origin);
                assert_eq!(crops.read_crop_into(i, m, at, &mut out).unwrap(), origin);
                assert_eq!(bits(&out), bits(&slice(&w, origin, CROP)), "{} {m:?} at {origin:?}", whole.frames()[i].id);
                checked += 1;
            }
            // a plain read is the centre crop
            assert_eq!(bits(&crops.read(i, m).unwrap().data), bits(&slice(&w, [1, 10, 2], CROP)));
        }
    }
    assert_eq!(checked, whole.len() * 3 * 4);
}

/// The corners at which the target crop `t` is the slice of `whole`.
fn origins_of(t: &[f16], whole: &Grid) -> Vec<[usize; 3]> {
    let [_, z, h, w] = whole.shape;
    let mut found = Vec::new();
    for oz in 0..=z - CROP[0] {
        for oh in 0..=h - CROP[1] {
            for ow in 0..=w - CROP[2] {
                if bits(t) == bits(&slice(whole, [oz, oh, ow], CROP)) {
                    found.push([oz, oh, ow]);
                }
            }
        }
    }
    found
}

/// Per batch of one epoch: the frame, its target and radar crops.
fn epoch(loader: &Loader, e: u64) -> Vec<(usize, Vec<f16>, Vec<f16>)> {
    let to_vec = |t: &tch::Tensor| {
        let f: Vec<f32> = Vec::try_from(t.to_kind(tch::Kind::Float).flatten(0, -1)).unwrap();
        f.into_iter().map(f16::from_f32).collect::<Vec<f16>>()
    };
    loader.epoch(e).map(|b| b.unwrap()).map(|b| (b.indices[0], to_vec(&b.target), to_vec(&b.radar))).collect()
}

#[test]
fn crops_are_drawn_per_epoch_fixed_for_validation_and_cut_alike_in_target_and_radar() {
    let whole = open(Layout::Pad { alignment: 1 }, Split::All);
    let layout = Layout::Crop { zhw: CROP, focus: 100 };
    let cfg = LoaderConfig { seed: 5, ..Default::default() };
    let train = Loader::new(open(layout, Split::Train), cfg.clone()).unwrap();
    assert_eq!(train.sample_shape(), [4, 8, 16, 16]);
    assert_eq!(train.batch_bytes(), 2 * 2 * 4 * 8 * 16 * 16, "the pool holds crops, not frames");
    let (e0, e1) = (epoch(&train, 0), epoch(&train, 1));
    assert_eq!(e0, epoch(&Loader::new(open(layout, Split::Train), cfg.clone()).unwrap(), 0), "seeded");
    assert_ne!(e0, e1, "a new epoch draws new crops");
    let id = |i: usize| whole.frames().iter().position(|f| f.id == train.dataset().frames()[i].id).unwrap();
    for (i, t, r) in e0.iter().chain(&e1) {
        let j = id(*i);
        let (wt, wr) = (whole.read(j, Modality::Target).unwrap(), whole.read(j, Modality::Radar).unwrap());
        let at = origins_of(t, &wt);
        assert!(at.iter().any(|&o| bits(r) == bits(&slice(&wr, o, CROP))), "radar cut where the target was");
        // focus 100: a frame with occupied voxels never gets an empty crop
        let occupied = wt.data.iter().take(wt.data.len() / 4).any(|v| v.to_f32() != 0.0);
        assert!(!occupied || t.iter().take(t.len() / 4).any(|v| v.to_f32() != 0.0), "empty crop of a full frame");
    }
    let val = Loader::new(open(layout, Split::Val), cfg).unwrap();
    assert_eq!(epoch(&val, 0), epoch(&val, 3), "validation crops are fixed");
}

#[test]
fn a_crop_trained_vae_runs_on_whole_frames_in_tiles() {
    let dir = tempfile::tempdir().unwrap();
    let vae_dir = dir.path().join("vae");
    let o = Command::new(example("train_vae"))
        .args(["--epochs", "1", "--crop", "8,16,16", "--crop-focus", "80", "--no-progress", "--device", "cpu"])
        .arg("--out")
        .arg(&vae_dir)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("of shape [4, 8, 16, 16] (8,16,16 crops (80% on occupied voxels))"), "{err}");
    let o = Command::new(example("train_vae")).args(["--crop", "8,16,16", "--resample", "8,16,16"]).output().unwrap();
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("--crop"));
    let latents = |tile: &[&str], out: &str| {
        Command::new(example("precompute_latents"))
            .arg("--vae")
            .arg(vae_dir.join("last.safetensors"))
            .arg("--dataset-dir")
            .arg(mini())
            .arg("--out")
            .arg(dir.path().join(out))
            .args(["--device", "cpu", "--no-progress"])
            .args(tile)
            .output()
            .unwrap()
    };
    // whole padded frames (32, 64, 32) -> latents (16, 16, 8), in 2 x 2 x 1 tiles
    let o = latents(&["--tile", "16,32,32"], "tiled");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.contains("latents [4, 16, 16, 8]"), "{out}");
    let o = latents(&["--tile", "3,32,32"], "bad");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("tiles [3, 32, 32]"), "{err}");
    // no --tile: the planner's choice for the budget, whole frames when they fit
    let (vae, _) = radvox::train::load_vae(&vae_dir.join("last.safetensors"), None, tch::Device::Cpu).unwrap();
    let mp = Planner::for_device(tch::Device::Cpu).model(&ModelConfig::Vae(vae.vae.config().clone())).unwrap();
    let needs =
        |tiling| mp.plan_inference([32, 64, 32], tiling).unwrap().total() as f64 / (1u64 << 30) as f64 / TILE_HEADROOM;
    // else the largest tile that fits (two (32, 32, 32) tiles here: cheaper
    // than the frame, every inference convolution running in oneDNN), else
    // a refusal
    let (whole, tiled) = (needs(None), needs(Some(Tiling::new([32, 32, 32], 0))));
    assert!(tiled < whole, "{tiled} {whole}");
    for (gb, expect, ok) in [
        (whole * 1.001, "whole frames (1 tile)", true),
        (whole * 0.999, "--tile 32,32,32 --halo 0 (2 tiles)", true),
        (tiled * 0.999, "no tile fits", false),
    ] {
        let o = latents(&["--halo", "0", "--memory-budget-gb", &format!("{gb}")], "auto");
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.success(), ok, "{err}");
        assert!(err.contains(expect), "{gb} GiB: {err}");
    }
}
