//! Latents of a frozen VAE: loading the VAE from its checkpoint (refusing a
//! mismatch, naming it), deterministic encoding (`quant_conv(mean)`), and a
//! cache of f16 `.npy` latents per frame, memory-mapped at training time and
//! tied to the VAE checkpoint by a hash of its weights.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use half::f16;
use serde::{Deserialize, Serialize};
use tch::{nn, Device, Kind, Tensor};

use crate::dataset::{Dataset, FrameId, Modality};
use crate::model::{Vae3d, VaeConfig};
use crate::npy::{write_npy, NpyHeader, Source};
use crate::train::TrainConfig;
use crate::weights::{self, WeightsError};

/// Errors of the latent stage.
#[derive(Debug, thiserror::Error)]
pub enum LatentError {
    /// Weights could not be read or did not match.
    #[error(transparent)]
    Weights(#[from] WeightsError),
    /// The checkpoint is not a radvox VAE checkpoint or its config is wrong.
    #[error("{path}: {reason}")]
    Checkpoint {
        /// The checkpoint.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The cache was written with another VAE, or is incomplete.
    #[error("latent cache {dir}: {reason}")]
    Cache {
        /// Cache directory.
        dir: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Reading frames failed.
    #[error(transparent)]
    Dataset(#[from] crate::dataset::DatasetError),
    /// A latent file failed to decode.
    #[error(transparent)]
    Npy(#[from] crate::npy::NpyError),
    /// Filesystem error.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
}

/// A frozen VAE with the input scaling it was trained with.
pub struct FrozenVae {
    /// Weights (no gradients).
    pub vs: nn::VarStore,
    /// The model.
    pub vae: Vae3d,
    /// The training config stored in the checkpoint.
    pub train_config: TrainConfig,
    /// Hash of the weights (FNV-1a over names, shapes and f32 values).
    pub hash: String,
}

impl std::fmt::Debug for FrozenVae {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrozenVae").field("hash", &self.hash).field("vae", &self.train_config.vae).finish()
    }
}

/// FNV-1a over the names, shapes and values of named tensors.
pub fn weights_hash(tensors: &BTreeMap<String, Tensor>) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h ^= *b as u64;
            h = h.wrapping_mul(0x100000001b3);
        }
    };
    for (name, t) in tensors {
        eat(name.as_bytes());
        for d in t.size() {
            eat(&d.to_le_bytes());
        }
        let t = t.to_kind(Kind::Float).contiguous();
        let mut v = vec![0f32; t.numel()];
        let n = v.len();
        t.copy_data(&mut v, n);
        for x in v {
            eat(&x.to_le_bytes());
        }
    }
    format!("{h:016x}")
}

impl FrozenVae {
    /// Loads a VAE from a `train_vae` checkpoint. The model part must match
    /// the config stored with it exactly; `expect`, when given, must equal
    /// that config (the difference is named otherwise).
    pub fn load(path: &Path, expect: Option<&VaeConfig>, device: Device) -> Result<FrozenVae, LatentError> {
        let bad = |reason: String| LatentError::Checkpoint { path: path.into(), reason };
        let file = weights::read(path)?;
        let config = file.metadata.get("config").ok_or_else(|| bad("no training config in the metadata".into()))?;
        let train_config: TrainConfig = serde_json::from_str(config).map_err(|e| bad(format!("bad config: {e}")))?;
        if let Some(want) = expect {
            if want != &train_config.vae {
                return Err(bad(format!(
                    "VAE config differs: checkpoint has {}, expected {}",
                    serde_json::to_string(&train_config.vae).unwrap_or_default(),
                    serde_json::to_string(want).unwrap_or_default()
                )));
            }
        }
        let mut vs = nn::VarStore::new(device);
        let vae = Vae3d::new(&vs.root(), &train_config.vae).map_err(|e| bad(e.to_string()))?;
        let model: BTreeMap<String, Tensor> =
            file.tensors.into_iter().filter(|(k, _)| !k.starts_with("adamw.")).collect();
        weights::load_into(&vs, "", &model, path)?;
        vs.freeze();
        Ok(FrozenVae { vs, vae, train_config, hash: weights_hash(&model) })
    }

    fn scale(&self, device: Device) -> Tensor {
        Tensor::from_slice(&self.train_config.channel_scale)
            .to_kind(Kind::Float)
            .to_device(device)
            .reshape([1, -1, 1, 1, 1])
    }

    /// Deterministic latent `quant_conv(mean)` of a raw f16/f32 grid batch.
    pub fn encode(&self, grid: &Tensor) -> Tensor {
        let dev = self.vs.device();
        let x = grid.to_device(dev).to_kind(Kind::Float) * self.scale(dev);
        tch::no_grad(|| self.vae.encode(&x, None, false))
    }

    /// Decodes latents back to grids in the dataset's raw units.
    pub fn decode(&self, z: &Tensor) -> Tensor {
        let dev = self.vs.device();
        tch::no_grad(|| self.vae.decode(&z.to_device(dev).to_kind(Kind::Float), false)) / self.scale(dev)
    }
}

/// `cache.json` of a latent cache.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheManifest {
    /// Hash of the VAE weights that wrote the latents.
    pub vae_hash: String,
    /// The VAE checkpoint path (informative).
    pub vae_checkpoint: String,
    /// Latent shape `(C, D, H, W)`.
    pub latent_shape: Vec<i64>,
    /// Frames, as `scene/stem`.
    pub frames: Vec<String>,
}

fn latent_path(dir: &Path, id: &FrameId, modality: &str) -> PathBuf {
    dir.join(&id.scene).join(format!("{}_{modality}.npy", id.stem))
}

/// Encodes target and radar of every frame once and writes them as f16
/// `.npy` under `dir`, with `cache.json` recording the VAE's hash.
pub fn precompute(vae: &FrozenVae, ds: &Dataset, dir: &Path, checkpoint: &Path) -> Result<CacheManifest, LatentError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| LatentError::Io { path: path.clone(), source }
    };
    let mut frames = Vec::new();
    let mut latent_shape = Vec::new();
    for (i, f) in ds.frames().iter().enumerate() {
        for (modality, name) in [(Modality::Target, "target"), (Modality::Radar, "radar")] {
            let g = ds.read(i, modality)?;
            let t = g.to_tensor();
            let z = vae.encode(&t).squeeze_dim(0).to_kind(Kind::Half).to_device(Device::Cpu).contiguous();
            latent_shape = z.size();
            let mut data = vec![f16::ZERO; z.numel()];
            let n = data.len();
            z.copy_data(&mut data, n);
            let p = latent_path(dir, &f.id, name);
            std::fs::create_dir_all(p.parent().expect("has parent")).map_err(io(&p))?;
            let shape: Vec<usize> = latent_shape.iter().map(|&d| d as usize).collect();
            write_npy(&p, &shape, &data).map_err(io(&p))?;
        }
        frames.push(f.id.to_string());
    }
    let manifest = CacheManifest {
        vae_hash: vae.hash.clone(),
        vae_checkpoint: checkpoint.display().to_string(),
        latent_shape,
        frames,
    };
    let m = dir.join("cache.json");
    weights::write_atomic(&m, serde_json::to_string_pretty(&manifest).expect("serialises").as_bytes())
        .map_err(io(&m))?;
    Ok(manifest)
}

/// A latent cache checked against a VAE: reads latents by memory map.
#[derive(Debug, Clone)]
pub struct LatentCache {
    dir: PathBuf,
    /// Its manifest.
    pub manifest: CacheManifest,
}

impl LatentCache {
    /// Opens `dir`, refusing a cache written by another VAE or lacking a frame of `ds`.
    pub fn open(dir: &Path, vae_hash: &str, ds: &Dataset) -> Result<LatentCache, LatentError> {
        let bad = |reason: String| LatentError::Cache { dir: dir.into(), reason };
        let m = dir.join("cache.json");
        let text = std::fs::read_to_string(&m).map_err(|e| bad(format!("cannot read cache.json: {e}")))?;
        let manifest: CacheManifest = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        if manifest.vae_hash != vae_hash {
            return Err(bad(format!(
                "written by VAE {} ({}), not by this VAE {vae_hash}: recompute the latents",
                manifest.vae_hash, manifest.vae_checkpoint
            )));
        }
        for f in ds.frames() {
            if !manifest.frames.contains(&f.id.to_string()) {
                return Err(bad(format!("frame {} is not cached", f.id)));
            }
        }
        Ok(LatentCache { dir: dir.into(), manifest })
    }

    /// `(target, radar)` latents of a frame, `(C, D, H, W)` float32.
    pub fn read(&self, id: &FrameId) -> Result<(Tensor, Tensor), LatentError> {
        let one = |name: &str| -> Result<Tensor, LatentError> {
            let p = latent_path(&self.dir, id, name);
            let src = Source { path: p.clone(), member: None };
            let file = std::fs::File::open(&p).map_err(|source| LatentError::Io { path: p.clone(), source })?;
            // SAFETY: read-only private map of a cache file this process does
            // not modify; its length is checked against the header below.
            let map =
                unsafe { memmap2::Mmap::map(&file) }.map_err(|source| LatentError::Io { path: p.clone(), source })?;
            let h = NpyHeader::read(&map[..], &src)?;
            let n = h.len().unwrap_or(0);
            if h.dtype.descr != "<f2"
                || map.len() != h.offset + 2 * n
                || h.shape.iter().map(|&d| d as i64).collect::<Vec<_>>() != self.manifest.latent_shape
            {
                return Err(LatentError::Cache {
                    dir: self.dir.clone(),
                    reason: format!("{} is not a {:?} <f2 latent", p.display(), self.manifest.latent_shape),
                });
            }
            let t = Tensor::from_data_size(&map[h.offset..], &self.manifest.latent_shape, Kind::Half);
            Ok(t.to_kind(Kind::Float))
        };
        Ok((one("target")?, one("radar")?))
    }
}
