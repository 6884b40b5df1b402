//! The family is the VAE checkpoint's: a sparse VAE trained by
//! `train_sparse_vae` feeds `precompute_latents`, `train_ldm` (cached and
//! on-the-fly latents), `train_cd`, `sample` and `evaluate` unchanged, as
//! the dense VAE does; options that cannot apply to it are refused by name.

use std::path::Path;
use std::process::{Command, Output};

use radvox::data::frame::read_sparse;

mod common;

fn run(name: &str, args: &[&str]) -> Output {
    let out = Command::new(common::example(name)).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{name} {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn a_sparse_vae_checkpoint_switches_every_command_downstream() {
    let dir = tempfile::tempdir().unwrap();
    let root = common::mini();
    let (vae_dir, latents, ldm, cd, samples) =
        ["vae", "latents", "ldm", "cd", "samples"].map(|d| dir.path().join(d)).into();
    let common_flags = ["--device", "cpu", "--no-progress"];
    let mut args = vec!["--dataset-dir", s(&root), "--out", s(&vae_dir), "--epochs", "1", "--no-progress"];
    args.extend(["--device", "cpu"]);
    run("train_sparse_vae", &args);
    let vae = vae_dir.join("last.safetensors");
    let o = run(
        "precompute_latents",
        &[&["--vae", s(&vae), "--dataset-dir", s(&root), "--out", s(&latents)], &common_flags[..]].concat(),
    );
    // the fixtures' (32, 64, 32) grid at the sparse VAE's stride 8, 8 latent channels
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("latents [8, 4, 8, 4]"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let ldm_args = ["--vae", s(&vae), "--dataset-dir", s(&root), "--epochs", "1", "--no-progress", "--device", "cpu"];
    run("train_ldm", &[&ldm_args[..], &["--latents", s(&latents), "--out", s(&ldm)]].concat());
    // on the fly, the same VAE encodes the frames itself
    run("train_ldm", &[&ldm_args[..], &["--out", s(&dir.path().join("ldm_fly"))]].concat());
    let ldm_ckpt = ldm.join("last.safetensors");
    let cd_args = ["--vae", s(&vae), "--ldm", s(&ldm_ckpt), "--dataset-dir", s(&root), "--latents", s(&latents)];
    run("train_cd", &[&cd_args[..], &["--epochs", "1", "--out", s(&cd), "--no-progress", "--device", "cpu"]].concat());
    let sample_args =
        ["--vae", s(&vae), "--ldm", s(&ldm_ckpt), "--dataset-dir", s(&root), "--steps", "2", "--device", "cpu"];
    run("sample", &[&sample_args[..], &["--out", s(&samples)]].concat());
    assert!(samples.join("metrics.csv").exists() && samples.join("report.md").exists());
    let report = std::fs::read_to_string(samples.join("report.md")).unwrap();
    assert!(report.contains("radar"), "{report}");
    run("evaluate", &["--vae", s(&vae), "--dataset-dir", s(&root), "--predictions", s(&samples)]);
    // a lower keep threshold keeps more of the decoder's structure
    let loose = dir.path().join("loose");
    run("sample", &[&sample_args[..], &["--out", s(&loose), "--keep-threshold", "0.05"]].concat());
    let voxels = |d: &Path| -> usize {
        let files = std::fs::read_dir(d).unwrap().map(|e| e.unwrap().path());
        files.filter(|p| p.extension().is_some_and(|x| x == "npz")).map(|p| read_sparse(&p).unwrap().len()).sum()
    };
    let (strict, kept) = (voxels(&samples), voxels(&loose));
    assert!(kept > strict, "keep 0.05 wrote {kept} voxels, the default 0.5 {strict}");
    // what a sparse VAE cannot do is refused by name
    let tiled = Command::new(common::example("sample"))
        .args([&sample_args[..], &["--out", s(&dir.path().join("tiled")), "--tile", "32,32,32"]].concat())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&tiled.stderr);
    assert!(!tiled.status.success() && err.contains("--tile and --memory-budget-gb do not apply"), "{err}");
    let enc = Command::new(common::example("train_ldm"))
        .args([&ldm_args[..], &["--out", s(&dir.path().join("enc")), "--radar-encoder"]].concat())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&enc.stderr);
    assert!(!enc.status.success() && err.contains("--radar-encoder"), "{err}");
    let dec = Command::new(common::example("train_ldm"))
        .args([&ldm_args[..], &["--out", s(&dir.path().join("dec")), "--decoded-loss"]].concat())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&dec.stderr);
    assert!(!dec.status.success() && err.contains("a decoded-space loss needs a dense VAE"), "{err}");
}

/// A sparse VAE encodes a frame's sites read straight from its file (no
/// dense grid) to the latent it gives the frame's grid, and the evaluation
/// reads the same occupied voxels from the sites as from the grid.
#[test]
fn sites_read_from_the_file_encode_and_score_as_the_grid_does() {
    use radvox::data::{Dataset, DatasetConfig, Modality, Split};
    use radvox::diffusion::encode_frame;
    use radvox::eval::frames::{layout_dims, occupied, occupied_frame};
    use radvox::model::sparse::{FrozenSparseVae, SparseVae, SparseVaeConfig};
    use radvox::model::GridVae;

    let ds = Dataset::open(common::mini(), Split::All, &DatasetConfig::default()).unwrap();
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let vae = SparseVae::new(&vs.root(), &SparseVaeConfig::small()).unwrap();
    let vae = FrozenSparseVae { vs, vae, channel_scale: vec![1.0, 0.01, 0.25, 1.0], hash: "test".into() };
    assert!(vae.encodes_sites());
    let dims = layout_dims(ds.frames()[0].target.shape(), ds.config().layout);
    let mut voxels = 0;
    for i in 0..ds.len().min(3) {
        for m in [Modality::Radar, Modality::Target] {
            let grid = ds.read(i, m).unwrap();
            let from_sites = encode_frame(&vae, &ds, i, m).unwrap();
            let from_grid = vae.encode_grid(&grid.to_tensor()).unwrap();
            assert_eq!(from_sites.size(), from_grid.size());
            let err = (&from_sites - &from_grid).abs().max().double_value(&[]);
            assert!(err < 1e-5, "frame {i} {m:?}: latents differ by {err}");
            let set = occupied_frame(&ds, i, m, dims).unwrap();
            voxels += set.len();
            assert_eq!(set, occupied(&grid, dims, 0.5), "frame {i} {m:?}: occupied voxels");
        }
    }
    assert!(voxels > 0, "the frames hold occupied voxels");
}
