//! A cache of latents: target and radar of every frame encoded once by a
//! frozen VAE and written as f16 `.npy`, memory-mapped at training time and
//! tied to the VAE by the hash of its weights (`cache.json`).

use std::path::{Path, PathBuf};

use half::f16;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use super::DiffusionError;
use crate::data::{Dataset, FrameId, Modality};
use crate::io::npy::{write_npy, MappedNpy, Scalar};
use crate::io::{write_atomic, FolderLock, FormatError};
use crate::model::GridVae;

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

/// The deterministic latent `(1, C, D, H, W)` of frame `i`'s `modality`:
/// from its occupied sites read straight from the file for a family that
/// encodes sites (the sparse VAE: the grid is never built), else from the
/// laid-out grid.
pub fn encode_frame(vae: &dyn GridVae, ds: &Dataset, i: usize, modality: Modality) -> Result<Tensor, DiffusionError> {
    if vae.encodes_sites() {
        let sites = ds.file(i, modality)?.read_sites(ds.config().layout)?;
        return Ok(vae.encode_sites(&sites)?);
    }
    Ok(vae.encode_grid(&ds.read(i, modality)?.to_tensor())?)
}

fn latent_path(dir: &Path, id: &FrameId, modality: &str) -> PathBuf {
    dir.join(&id.scene).join(format!("{}_{modality}.npy", id.stem))
}

/// Encodes target and radar of every frame once and writes them as f16
/// `.npy` under `dir`, with `cache.json` recording the VAE's hash; `progress`
/// is called after each frame. The folder is locked for the run. A cache of
/// the same VAE is extended: frames it lists are kept, not encoded again
/// (a rerun is a no-op). A cache of another VAE is refused unless
/// `overwrite`, which first removes its manifest (so it is no cache at all
/// until this run completes) and its latents.
pub fn precompute(
    vae: &dyn GridVae,
    ds: &Dataset,
    dir: &Path,
    checkpoint: &Path,
    overwrite: bool,
    progress: &dyn Fn(usize),
) -> Result<CacheManifest, DiffusionError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |e| DiffusionError::Format(FormatError::io(&path, e))
    };
    let _lock = FolderLock::acquire(dir, "precompute_latents")?;
    let m = dir.join("cache.json");
    let earlier: Option<CacheManifest> = std::fs::read_to_string(&m).ok().and_then(|t| serde_json::from_str(&t).ok());
    let mut frames = Vec::new();
    let mut latent_shape = Vec::new();
    match earlier {
        Some(e) if e.vae_hash == vae.weights_hash() => {
            (frames, latent_shape) = (e.frames, e.latent_shape);
        }
        Some(e) if !overwrite => {
            return Err(DiffusionError::Cache {
                dir: dir.into(),
                reason: format!(
                    "holds the latents of another VAE, {} ({}), not of this one {}: pass --overwrite to replace them, or choose another folder",
                    e.vae_hash,
                    e.vae_checkpoint,
                    vae.weights_hash()
                ),
            });
        }
        Some(e) => {
            std::fs::remove_file(&m).map_err(io(&m))?;
            for id in &e.frames {
                if let Some((scene, stem)) = id.split_once('/') {
                    let id = FrameId { scene: scene.into(), stem: stem.into() };
                    for name in ["target", "radar"] {
                        let _ = std::fs::remove_file(latent_path(dir, &id, name));
                    }
                }
            }
            log::warn!("--overwrite: removed the latents of VAE {} in {}", e.vae_hash, dir.display());
        }
        None => {}
    }
    let known: std::collections::HashSet<String> = frames.iter().cloned().collect();
    for (i, f) in ds.frames().iter().enumerate() {
        let id = f.id.to_string();
        let have = known.contains(&id) && ["target", "radar"].iter().all(|n| latent_path(dir, &f.id, n).is_file());
        if !have {
            for (modality, name) in [(Modality::Target, "target"), (Modality::Radar, "radar")] {
                let z = encode_frame(vae, ds, i, modality)?
                    .squeeze_dim(0)
                    .to_kind(Kind::Half)
                    .to_device(Device::Cpu)
                    .contiguous();
                latent_shape = z.size();
                let mut data = vec![f16::ZERO; z.numel()];
                let n = data.len();
                z.copy_data(&mut data, n);
                let p = latent_path(dir, &f.id, name);
                let shape: Vec<usize> = latent_shape.iter().map(|&d| d as usize).collect();
                write_npy(&p, &shape, &data).map_err(io(&p))?;
            }
            if !known.contains(&id) {
                frames.push(id);
            }
        }
        progress(i + 1);
    }
    let manifest = CacheManifest {
        vae_hash: vae.weights_hash().to_string(),
        vae_checkpoint: checkpoint.display().to_string(),
        latent_shape,
        frames,
    };
    write_atomic(&m, serde_json::to_string_pretty(&manifest).expect("serialises").as_bytes()).map_err(io(&m))?;
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
    pub fn open(dir: &Path, vae_hash: &str, ds: &Dataset) -> Result<LatentCache, DiffusionError> {
        let bad = |reason: String| DiffusionError::Cache { dir: dir.into(), reason };
        let m = dir.join("cache.json");
        let text = std::fs::read_to_string(&m).map_err(|e| bad(format!("cannot read {}: {e}", m.display())))?;
        let manifest: CacheManifest = serde_json::from_str(&text).map_err(|e| bad(format!("cache.json: {e}")))?;
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

    /// One latent, `(C, D, H, W)` float32: any float dtype and either element
    /// order is read (f16 C order, what [`precompute`] writes, without a copy).
    fn read_one(&self, id: &FrameId, name: &str) -> Result<Tensor, DiffusionError> {
        let p = latent_path(&self.dir, id, name);
        let map = MappedNpy::open(&p)?;
        let h = &map.header;
        let shape: Vec<i64> = h.shape.iter().map(|&d| d as i64).collect();
        if shape != self.manifest.latent_shape || !h.dtype.scalar.is_some_and(Scalar::is_float) {
            return Err(DiffusionError::Cache {
                dir: self.dir.clone(),
                reason: format!(
                    "{} is {} {:?}, not a float latent of shape {:?}",
                    p.display(),
                    h.dtype,
                    h.shape,
                    self.manifest.latent_shape
                ),
            });
        }
        if h.dtype.scalar == Some(Scalar::F16) && !h.dtype.big_endian && !h.fortran_order {
            return Ok(Tensor::from_data_size(map.data(), &shape, Kind::Half).to_kind(Kind::Float));
        }
        Ok(Tensor::from_slice(&h.c_order_f64(map.data())).to_kind(Kind::Float).view(shape.as_slice()))
    }

    /// `(target, radar)` latents of a frame, `(C, D, H, W)` float32.
    pub fn read(&self, id: &FrameId) -> Result<(Tensor, Tensor), DiffusionError> {
        Ok((self.read_one(id, "target")?, self.read_one(id, "radar")?))
    }
}
