//! Recipes travel with checkpoints: checkpoints written before recipes
//! existed (format 1, committed fixtures) still load and resume; stored
//! recipes tolerate fields added later and refuse a newer format; the layout
//! recorded with a VAE is the one every downstream command uses, and a
//! contradicting `--resample` is refused; flags override a recipe file.
#![allow(clippy::result_large_err)]

use std::path::{Path, PathBuf};
use std::process::Command;

use radvox::data::layout::Layout;
use radvox::data::Modality;
use radvox::diffusion::Solver;
use radvox::train::recipe::read_stored;
use radvox::train::{load_sampler, load_vae, Checkpoint, LdmRecipe, Recipe, TrainError, Trainer, VaeRecipe};
use radvox::{Dataset, DatasetConfig, Split};
use tch::{Device, Kind};

mod common;
use common::{cpu_runtime, example, mini};

fn legacy(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/legacy").join(name)
}

fn ds(split: Split, zhw: [usize; 3]) -> Dataset {
    Dataset::open(mini(), split, &DatasetConfig { layout: Layout::Resample { zhw }, ..Default::default() }).unwrap()
}

#[test]
fn format_1_checkpoints_still_load_sample_and_resume() {
    let (vae, recipe) = load_vae(&legacy("vae_v1.safetensors"), None, Device::Cpu).unwrap();
    assert_eq!((recipe.vae.base_channels, recipe.vae.encoder_mult.clone()), (4, vec![1, 2]));
    assert_eq!((recipe.optim.grad_accum, recipe.optim.lr, recipe.optim.epochs), (2, 1e-3, 1));
    assert_eq!(recipe.layout, None, "format 1 did not record the layout");
    let frame = ds(Split::Val, [8, 16, 16]).read(0, Modality::Radar).unwrap().to_tensor();
    let z = vae.encode(&frame);
    assert_eq!(z.size(), [1, 4, 8, 8, 8]);
    assert_eq!(z.isfinite().all().int64_value(&[]), 1);
    let loaded = load_sampler(&legacy("ldm_v1.safetensors"), &vae.hash, Device::Cpu).unwrap();
    let (sampler, ldm) = (loaded.sampler, loaded.recipe);
    assert_eq!((ldm.unet.model_channels, ldm.optim.ema_decay), (8, Some(0.999)));
    let x = sampler.sample(&z, 2, Solver::Heun, 0);
    assert_eq!(x.kind(), Kind::Float);
    assert_eq!(vae.decode(&x).size(), [1, 4, 8, 16, 16]);

    // Both runs continue one more epoch from their format-1 checkpoints.
    let dir = tempfile::tempdir().unwrap();
    let (train, val) = (ds(Split::Train, [8, 16, 16]), ds(Split::Val, [8, 16, 16]));
    let runtime = cpu_runtime(&dir.path().join("vae"));
    let mut t =
        Trainer::resume_vae(&legacy("vae_v1.safetensors"), train, Some(val), runtime, |r| r.optim.epochs = 2).unwrap();
    assert_eq!(t.state().epoch, 1);
    t.fit().unwrap();
    assert_eq!(t.state().epoch, 2);
    let saved = Checkpoint::read(&dir.path().join("vae/last.safetensors"), "vae").unwrap();
    assert_eq!(saved.version, radvox::train::recipe::RECIPE_VERSION);
    assert_eq!(saved.recipe::<VaeRecipe>().unwrap().layout, Some(Layout::Resample { zhw: [8, 16, 16] }));
    let hash = vae.hash.clone();
    let source = radvox::train::LatentSource::OnTheFly(Box::new(vae));
    let runtime = cpu_runtime(&dir.path().join("ldm"));
    let mut l = Trainer::resume_ldm(
        &legacy("ldm_v1.safetensors"),
        ds(Split::Train, [8, 16, 16]),
        source,
        &hash,
        runtime,
        |r| r.optim.epochs = 2,
    )
    .unwrap();
    l.fit().unwrap();
    assert_eq!(l.state().epoch, 2);
}

#[test]
fn stored_recipes_tolerate_the_past_and_refuse_the_future() {
    let path = Path::new("x.safetensors");
    // A recipe with a field this radvox does not know (ignored, reported)
    // and without fields added since (defaults).
    let json = r#"{"vae": {"base_channels": 8}, "lr": 0.002, "future_knob": 3, "device": "cuda"}"#;
    let (r, ignored) = read_stored::<VaeRecipe>(json, 2, path).unwrap();
    assert_eq!((r.vae.base_channels, r.optim.lr), (8, 0.002));
    assert_eq!(r.vae.latent_dim, VaeRecipe::default().vae.latent_dim);
    assert_eq!(r.channel_scale, VaeRecipe::default().channel_scale);
    assert_eq!(ignored, ["unknown key `future_knob`"], "runtime keys of format 1 are dropped silently");
    match read_stored::<VaeRecipe>(json, 3, path) {
        Err(TrainError::Checkpoint { reason, .. }) => assert!(reason.contains("newer radvox"), "{reason}"),
        other => panic!("{other:?}"),
    }
    // What cannot run is refused, naming the field.
    let err = read_stored::<LdmRecipe>(r#"{"lr": -1}"#, 2, path).unwrap_err().to_string();
    assert!(err.contains("lr"), "{err}");
    assert_eq!(VaeRecipe::KIND, "vae");
}

#[test]
fn downstream_commands_take_the_vae_layout_and_refuse_a_contradicting_resample() {
    let dir = tempfile::tempdir().unwrap();
    let vae_dir = dir.path().join("vae");
    let recipe = VaeRecipe {
        optim: radvox::train::OptimRecipe { epochs: 1, grad_accum: 4, ..Default::default() },
        ..Default::default()
    };
    let (train, val) = (ds(Split::Train, [8, 16, 16]), ds(Split::Val, [8, 16, 16]));
    Trainer::vae(train, Some(val), recipe, cpu_runtime(&vae_dir)).unwrap().fit().unwrap();
    let vae = vae_dir.join("last.safetensors");
    let run = |args: &[&str]| {
        Command::new(example("precompute_latents"))
            .args(["--vae", vae.to_str().unwrap(), "--dataset-dir", mini().to_str().unwrap(), "--device", "cpu"])
            .args(args)
            .output()
            .unwrap()
    };
    let out = dir.path().join("latents");
    let bad = run(&["--out", out.to_str().unwrap(), "--resample", "8,32,32"]);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("layout resampled to 8,32,32 contradicts resampled to 8,16,16"), "{err}");
    assert!(!out.exists(), "nothing written by a refused command");
    let ok = run(&["--out", out.to_str().unwrap(), "--no-progress"]);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let manifest = std::fs::read_to_string(out.join("cache.json")).unwrap();
    assert!(manifest.contains("\"latent_shape\": [\n    4,\n    4,\n    4,\n    4\n  ]"), "{manifest}");
}

#[test]
fn flags_override_a_recipe_file_wherever_they_stand() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("recipe.toml");
    std::fs::write(&file, "lr = 0.0005\ngrad_accum = 2\nepochs = 3\n[vae]\nbase_channels = 8\n").unwrap();
    let out = dir.path().join("run");
    let status = Command::new(example("train_vae"))
        .args(["--lr", "0.002", "--config", file.to_str().unwrap(), "--resample", "8,16,16", "--epochs", "1"])
        .args(["--device", "cpu", "--no-progress", "--max-steps", "1", "--out", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    let r: VaeRecipe = Checkpoint::read(&out.join("last.safetensors"), "vae").unwrap().recipe().unwrap();
    assert_eq!((r.optim.lr, r.optim.grad_accum, r.optim.epochs, r.vae.base_channels), (0.002, 2, 1, 8));
    // --resume keeps the recipe: a contradicting flag is refused, the same value is fine.
    let resume = |extra: &[&str]| {
        Command::new(example("train_vae"))
            .args(["--resume", out.join("last.safetensors").to_str().unwrap(), "--device", "cpu", "--no-progress"])
            .args(["--max-steps", "2", "--out", out.to_str().unwrap()])
            .args(extra)
            .output()
            .unwrap()
    };
    let bad = resume(&["--lr", "0.1"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--lr 0.1 contradicts lr 0.002"));
    let bad = resume(&["--resample", "8,32,32"]);
    assert!(!bad.status.success(), "a resumed run keeps its grid");
    let ok = resume(&["--lr", "0.002"]);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
}
