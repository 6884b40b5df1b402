//! Shared by the examples: the exit-code wrapper and the flags every
//! training command takes (how this process runs: never saved with a run).
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use radvox::data::layout::parse_zhw;
use radvox::model::Checkpointing;
use radvox::train::{AmpMode, Runtime};

/// Runs `run` after setting up logging; prints its error (one line per
/// cause) and exits non-zero on failure.
pub fn main_with(run: impl FnOnce() -> Result<(), Box<dyn std::error::Error>>) -> ExitCode {
    radvox::init_logging();
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `Z,H,W` for clap.
pub fn zhw(s: &str) -> Result<[usize; 3], String> {
    parse_zhw(s).map_err(|e| e.to_string())
}

/// Where the evaluation's region scores are computed (`radvox::eval::regions`).
#[derive(Debug, Args)]
pub struct RegionArgs {
    /// Range band edges along the sensor's forward axis x (metres).
    #[arg(long, value_delimiter = ',', default_value = "0,20,40,80,120")]
    pub range_bands: Vec<f64>,
    /// Height band edges along z (metres).
    #[arg(long, value_delimiter = ',', default_value = "-6,-1,2,5,10")]
    pub height_bands: Vec<f64>,
    /// Leave voxels below this height (metres) out of every region score
    /// (the whole-frame scores keep them); e.g. -1 as the seed's author.
    #[arg(long)]
    pub z_min: Option<f64>,
    /// The shared-visible region: voxels within this many voxels of a radar voxel.
    #[arg(long, default_value_t = 2)]
    pub visible_radius: u32,
    /// Tolerances (metres) of the match ratios.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    pub match_taus: Vec<f64>,
    /// Whole-frame metrics only: no bands, no shared-visible region.
    #[arg(long)]
    pub no_regions: bool,
}

impl RegionArgs {
    /// The library's settings (checked when the evaluation starts).
    pub fn config(&self) -> radvox::eval::RegionConfig {
        if self.no_regions {
            return radvox::eval::RegionConfig::none();
        }
        radvox::eval::RegionConfig {
            range_edges: self.range_bands.clone(),
            height_edges: self.height_bands.clone(),
            z_min: self.z_min,
            visible_radius: Some(self.visible_radius),
            match_taus: self.match_taus.clone(),
        }
    }
}

/// How a frozen VAE runs on whole frames: in one piece, or in tiles.
#[derive(Debug, Args)]
pub struct TileArgs {
    /// Encode and decode whole frames in Z,H,W tiles (input voxels, each a
    /// multiple of the VAE's downsampling). Default: the whole frame when
    /// its memory plan fits --memory-budget-gb, else the largest tile that does.
    #[arg(long, value_parser = zhw)]
    pub tile: Option<[usize; 3]>,
    /// Context voxels around each tile (a multiple of the downsampling); the
    /// output keeps only tile interiors.
    #[arg(long, default_value_t = 8)]
    pub halo: usize,
    /// Memory (GiB) the automatic tile is chosen for; default: the GPU's
    /// memory, or the RAM available on CPU.
    #[arg(long, value_parser = positive, conflicts_with = "tile")]
    pub memory_budget_gb: Option<f64>,
}

impl TileArgs {
    /// `vae` set up for frames of `grid` `(Z, H, W)`: in the tiles asked
    /// for, or as the memory planner chooses (logged).
    pub fn apply(
        &self,
        vae: radvox::model::FrozenVae,
        grid: [i64; 3],
    ) -> Result<radvox::model::FrozenVae, Box<dyn std::error::Error>> {
        use radvox::memory::{choose_tiling, device_budget, gib, gib_to_bytes, ModelConfig, Planner};
        let halo = self.halo as i64;
        if let Some(t) = self.tile {
            return Ok(vae.with_tiling(Some(radvox::model::Tiling::new(t.map(|v| v as i64), halo)))?);
        }
        let budget = match self.memory_budget_gb {
            Some(g) => gib_to_bytes(g),
            None => device_budget(vae.device())
                .ok_or("the device's memory is unknown: give --memory-budget-gb or --tile")?,
        };
        let mp = Planner::for_device(vae.device()).model(&ModelConfig::Vae(vae.vae.config().clone()))?;
        let plan = choose_tiling(budget, &mp, grid, halo)?;
        log::info!("{} fits {}", plan.summary(), gib(budget));
        Ok(vae.with_tiling(plan.tiling)?)
    }
}

impl TileArgs {
    /// [`TileArgs::apply`] for a VAE of either family: a sparse VAE runs whole
    /// frames on their occupied voxels, so tiles are refused for it.
    pub fn apply_any(
        &self,
        vae: radvox::model::AnyVae,
        grid: [i64; 3],
    ) -> Result<radvox::model::AnyVae, Box<dyn std::error::Error>> {
        use radvox::model::AnyVae;
        match vae {
            AnyVae::Dense(v) => Ok(AnyVae::Dense(self.apply(v, grid)?)),
            AnyVae::Sparse(_) if self.tile.is_some() || self.memory_budget_gb.is_some() => Err(
                "a sparse VAE runs whole frames on their occupied voxels: --tile and --memory-budget-gb do not apply"
                    .into(),
            ),
            sparse => Ok(sparse),
        }
    }
}

/// A finite number in (0, 1), for clap.
pub fn unit_interval(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("{s:?}: {e}"))?;
    if v.is_finite() && v > 0.0 && v < 1.0 {
        Ok(v)
    } else {
        Err(format!("{s} is not in (0, 1)"))
    }
}

/// A number in (0, 1], for clap.
pub fn fraction(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("{s:?}: {e}"))?;
    if v > 0.0 && v <= 1.0 {
        Ok(v)
    } else {
        Err(format!("{s} is not in (0, 1]"))
    }
}

/// A probability in [0, 1], for clap.
pub fn probability(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("{s:?}: {e}"))?;
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{s} is not in [0, 1]"))
    }
}

/// A finite positive number, for clap.
pub fn positive(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("{s:?}: {e}"))?;
    if v.is_finite() && v > 0.0 {
        Ok(v)
    } else {
        Err(format!("{s} is not a finite number > 0"))
    }
}

/// The optimiser flags every trainer takes; each overrides its recipe's value.
#[derive(Debug, Args)]
pub struct OptimArgs {
    /// Epochs (the learning-rate schedule spans them; with --resume, extends the run).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub epochs: Option<u64>,
    /// Peak learning rate.
    #[arg(long, value_parser = positive)]
    pub lr: Option<f64>,
    /// Frames per micro-batch.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub batch_size: Option<u64>,
    /// Micro-batches per optimizer step.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub grad_accum: Option<u64>,
    /// Seed of data order, noise and initialisation.
    #[arg(long)]
    pub seed: Option<u64>,
}

impl OptimArgs {
    /// Applies the flags given to `o` (see [`apply`]); `--epochs` may extend a resumed run.
    pub fn apply_to(
        &self,
        o: &mut radvox::train::OptimRecipe,
        resume: Option<&std::path::Path>,
    ) -> Result<(), radvox::train::TrainError> {
        apply(&mut o.lr, self.lr, "lr", resume)?;
        apply(&mut o.batch_size, self.batch_size.map(|v| v as usize), "batch-size", resume)?;
        apply(&mut o.grad_accum, self.grad_accum.map(|v| v as usize), "grad-accum", resume)?;
        apply(&mut o.seed, self.seed, "seed", resume)?;
        if let Some(e) = self.epochs {
            if resume.is_some() && e as usize != o.epochs {
                log::info!("--epochs {e}: the run continues to {e} epochs (recorded {})", o.epochs);
            }
            o.epochs = e as usize;
        }
        Ok(())
    }
}

/// How this process runs (see `radvox::train::Runtime`).
#[derive(Debug, Args)]
pub struct RuntimeArgs {
    /// Output directory.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Device: auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Force mixed precision (bf16 on CPU even where it is emulated, f16 on CUDA).
    #[arg(long, conflicts_with = "no_amp")]
    pub amp: bool,
    /// float32 throughout. Default: AMP where the device runs it natively.
    #[arg(long)]
    pub no_amp: bool,
    /// Gradient checkpointing: off, block (per ResBlock) or a segment count.
    #[arg(long, default_value = "off")]
    pub checkpointing: Checkpointing,
    /// Loader threads.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub num_workers: u64,
    /// Batches decoded ahead.
    #[arg(long, default_value_t = 2)]
    pub prefetch: usize,
    /// Page-locked batch memory (CUDA only).
    #[arg(long)]
    pub pin_memory: bool,
    /// No progress bar.
    #[arg(long)]
    pub no_progress: bool,
    /// Memory budget the plan must fit (GiB); default: the GPU's memory or the RAM available.
    #[arg(long, value_parser = positive)]
    pub memory_budget_gb: Option<f64>,
    /// Start even when the memory plan exceeds the budget.
    #[arg(long)]
    pub force: bool,
    /// Fail on out of memory instead of retrying with a smaller micro-batch or finer checkpointing.
    #[arg(long)]
    pub no_oom_fallback: bool,
    /// Also save `last` every N optimizer steps (mid-epoch; resumable exactly).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub save_every_steps: Option<u64>,
    /// Stop after this many optimizer steps in all (mid-epoch if need be; `--resume` continues).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_steps: Option<u64>,
    /// Stop the same way at the first optimizer step ending after this many
    /// minutes of the run (wall clock, over resumes, validation included).
    #[arg(long, value_parser = positive)]
    pub max_minutes: Option<f64>,
    /// Seconds to wait for one batch of frames before failing with the files named.
    #[arg(long, default_value_t = 120.0, value_parser = positive)]
    pub read_timeout: f64,
    /// Non-finite batches in a row that stop the run.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_nonfinite_streak: u64,
    /// Replace the run already in --out (its files are removed first).
    #[arg(long)]
    pub overwrite: bool,
    /// Under torchrun: seconds a rank waits for the others (rendezvous, each
    /// gradient all-reduce) before it stops with an error.
    #[arg(long, default_value_t = radvox::dist::DEFAULT_TIMEOUT.as_secs_f64(), value_parser = positive)]
    pub dist_timeout: f64,
}

impl RuntimeArgs {
    /// The runtime, with `default_out` when `--out` is not given; under
    /// torchrun (its environment variables set) this process joins the
    /// process group: Gloo on CPU, NCCL on `cuda:LOCAL_RANK`.
    pub fn runtime(&self, default_out: &str) -> Result<Runtime, radvox::train::TrainError> {
        let env = radvox::dist::DistEnv::from_env()?;
        let mut device = self.device.clone();
        if let Some(e) = env.as_ref().filter(|e| e.world_size > 1) {
            let gpu = matches!(device.as_str(), "cuda" | "gpu") || (device == "auto" && tch::Cuda::is_available());
            if gpu {
                device = format!("cuda:{}", e.local_rank);
            }
        }
        let timeout = std::time::Duration::from_secs_f64(self.dist_timeout);
        let dist = radvox::dist::Dist::for_env(env.as_ref(), timeout, device.starts_with("cuda"))?;
        let amp = match (self.amp, self.no_amp) {
            (true, _) => AmpMode::On,
            (_, true) => AmpMode::Off,
            _ => AmpMode::Auto,
        };
        Ok(Runtime {
            out: self.out.clone().unwrap_or_else(|| default_out.into()),
            device,
            amp,
            checkpointing: self.checkpointing,
            num_workers: self.num_workers as usize,
            prefetch: self.prefetch,
            pin_memory: self.pin_memory,
            progress: !self.no_progress,
            memory_budget_gib: self.memory_budget_gb,
            force: self.force,
            oom_fallback: !self.no_oom_fallback,
            max_nonfinite_streak: self.max_nonfinite_streak as usize,
            save_every_steps: self.save_every_steps,
            max_steps: self.max_steps,
            max_minutes: self.max_minutes,
            read_timeout_s: Some(self.read_timeout),
            handle_signals: true,
            overwrite: self.overwrite,
            dist,
            ..Runtime::default()
        })
    }
}

/// Which scenes make the train and val splits (default: the root's first
/// 80 % of scenes by name, and the rest).
#[derive(Debug, Args)]
pub struct SceneArgs {
    /// Scenes of the train split instead of the 80/20 rule (comma-separated names).
    #[arg(long, value_delimiter = ',')]
    pub train_scenes: Option<Vec<String>>,
    /// Scenes of the val split (validation each epoch) instead of the 80/20 rule.
    #[arg(long, value_delimiter = ',')]
    pub val_scenes: Option<Vec<String>>,
}

impl SceneArgs {
    /// The dataset config of frames laid out by `layout` with these splits.
    pub fn config(&self, layout: radvox::data::Layout) -> radvox::data::DatasetConfig {
        radvox::data::DatasetConfig {
            layout,
            train_scenes: self.train_scenes.clone(),
            val_scenes: self.val_scenes.clone(),
            ..Default::default()
        }
    }
}

/// What the LDM and CD trainers read besides their recipe: the train split
/// and its latents (the cache in `latents`, or the VAE encoding on the fly),
/// the VAE's weights hash, and the val split with a second copy of the VAE
/// that decodes the validation samples.
pub struct LatentInputs {
    /// The train split.
    pub train: radvox::data::Dataset,
    /// Its latents.
    pub source: radvox::train::LatentSource,
    /// The VAE's weights hash (the latent cache and the teacher are checked against it).
    pub hash: String,
    /// The val split.
    pub val: radvox::data::Dataset,
    /// The VAE that decodes validation samples.
    pub decoder: Box<dyn radvox::model::GridVae>,
}

impl SceneArgs {
    /// The splits of `dataset_dir` laid out by `layout`, the latents of the
    /// train split and the decoder, from the VAE loaded from `vae_path`.
    pub fn latent_inputs(
        &self,
        dataset_dir: &std::path::Path,
        layout: radvox::data::Layout,
        vae: radvox::model::AnyVae,
        vae_path: &std::path::Path,
        latents: Option<&std::path::Path>,
        device: tch::Device,
    ) -> Result<LatentInputs, Box<dyn std::error::Error>> {
        use radvox::data::{Dataset, Split};
        use radvox::model::GridVae;
        use radvox::train::LatentSource;
        let cfg = self.config(layout);
        let train = Dataset::open(dataset_dir, Split::Train, &cfg)?;
        let hash = vae.weights_hash().to_string();
        let source = match latents {
            Some(dir) => LatentSource::Cache(radvox::diffusion::LatentCache::open(dir, &hash, &train)?),
            None => LatentSource::OnTheFly(Box::new(vae)),
        };
        let val = Dataset::open(dataset_dir, Split::Val, &cfg)?;
        let decoder = Box::new(radvox::train::load_any_vae(vae_path, device)?.vae);
        Ok(LatentInputs { train, source, hash, val, decoder })
    }
}

/// Overrides `field` with a flag's value when the flag was given; with
/// `resume`, a value that differs from the checkpoint's is refused instead.
pub fn apply<T: PartialEq + std::fmt::Debug + Clone>(
    field: &mut T,
    flag: Option<T>,
    name: &str,
    resume: Option<&std::path::Path>,
) -> Result<(), radvox::train::TrainError> {
    let Some(v) = flag else { return Ok(()) };
    match resume {
        Some(path) if *field != v => Err(radvox::train::TrainError::Contradiction {
            what: format!("--{name} {v:?}"),
            recorded: format!("{name} {:?}", field),
            path: path.into(),
        }),
        _ => {
            *field = v;
            Ok(())
        }
    }
}
