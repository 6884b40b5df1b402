//! Memory of a frozen VAE encoding and decoding whole frames (no
//! gradients, float32, as [`crate::model::FrozenVae`] runs): in one piece or
//! in tiles ([`Tiling`]), and the largest tile that fits a budget.
//!
//! Encoding holds the caller's frame, its scaled float32 copy and the whole
//! frame's latent while one tile at a time goes through the encoder;
//! decoding holds the latent and the reconstruction being assembled while
//! one tile goes through the decoder. A tile's own peak comes from the
//! model's [`Tape`] of that tile (its contiguous input copy, the
//! activations alive at once, convolution scratch).

use std::fmt;

use super::fit::crops;
use super::plan::{gib, ModelPlanner};
use super::MemoryError;
use crate::model::trace::{Backend, Tape};
use crate::model::{ModelError, Tiling};

/// Predicted bytes of encoding then decoding one whole frame.
#[derive(Debug, Clone, PartialEq)]
pub struct InferencePlan {
    /// The VAE preset's name (or `custom_vae`).
    pub model: String,
    /// Where it runs.
    pub backend: Backend,
    /// The padded frame `(Z, H, W)`.
    pub grid: [i64; 3],
    /// The tiles (`None`: the whole frame at once).
    pub tiling: Option<Tiling>,
    /// Number of tiles (1 when whole).
    pub tiles: usize,
    /// float32 weights.
    pub params: u64,
    /// The frame as the caller holds it (float16, as the loader yields it).
    pub frame: u64,
    /// The scaled float32 copy of the whole frame encoding reads.
    pub frame_f32: u64,
    /// The whole reconstruction (float32) decoding assembles.
    pub recon: u64,
    /// The whole frame's latent (float32).
    pub latent: u64,
    /// Peak of encoding beyond the weights and the caller's frame: the
    /// float32 frame, the latent and one (the largest) tile through the
    /// encoder.
    pub encode: u64,
    /// Peak of decoding beyond the weights and the caller's frame: the
    /// latent, the reconstruction and one tile through the decoder.
    pub decode: u64,
    /// The op at which the larger of the two peaks happens.
    pub peak_at: String,
    /// Runtime before any tensor.
    pub runtime: u64,
}

impl InferencePlan {
    /// Peak bytes of tensors: weights, the caller's frame, and the larger
    /// of the encoding and the decoding phase.
    pub fn device_tensors(&self) -> u64 {
        self.params + self.frame + self.encode.max(self.decode)
    }

    /// What the budget must hold: tensors plus the runtime.
    pub fn total(&self) -> u64 {
        self.device_tensors() + self.runtime
    }

    /// Whether it fits `budget` bytes.
    pub fn fits(&self, budget: u64) -> bool {
        self.total() <= budget
    }

    /// `--tile Z,H,W --halo N` (or `whole frames`), for messages.
    pub fn tiles_flag(&self) -> String {
        match &self.tiling {
            Some(t) => format!(
                "--tile {} --halo {}",
                t.tile.map(|v| v.to_string()).join(","),
                t.halo.iter().max().copied().unwrap_or(0)
            ),
            None => "whole frames".into(),
        }
    }

    /// One line: model, tiles, total.
    pub fn summary(&self) -> String {
        format!(
            "{} encode + decode of a {:?} frame, {} ({} tile{}): {} ({} tensors + {} runtime)",
            self.model,
            self.grid,
            self.tiles_flag(),
            self.tiles,
            if self.tiles == 1 { "" } else { "s" },
            gib(self.total()),
            gib(self.device_tensors()),
            gib(self.runtime)
        )
    }
}

impl fmt::Display for InferencePlan {
    /// The breakdown, one item per line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "memory plan ({}): {}", if self.backend.is_cpu() { "RAM" } else { "GPU" }, self.summary())?;
        let rows = [
            ("parameters", self.params, ""),
            ("frame (f16)", self.frame, "held by the caller"),
            ("encoding", self.encode, "f32 frame + latent + one tile"),
            ("decoding", self.decode, "latent + reconstruction + one tile"),
            ("  f32 frame", self.frame_f32, "the scaled input"),
            ("  reconstruction", self.recon, "f32"),
            ("  latent", self.latent, ""),
            ("runtime", self.runtime, ""),
        ];
        for (name, bytes, note) in rows {
            writeln!(f, "{}", format!("  {name:<16} {:>10}  {note}", gib(bytes)).trim_end())?;
        }
        write!(f, "  {:<16} {:>10}  peak at {}", "total", gib(self.total()), self.peak_at)
    }
}

impl ModelPlanner {
    /// The plan of encoding then decoding one `(Z, H, W)` frame with this
    /// VAE, whole (`tiling` `None`) or in `tiling`'s tiles.
    pub fn plan_inference(&self, grid: [i64; 3], tiling: Option<Tiling>) -> Result<InferencePlan, MemoryError> {
        let vae = self.vae().ok_or_else(|| {
            MemoryError::Model(ModelError::Config("an inference plan is for a VAE; this planner holds a UNet".into()))
        })?;
        let cfg = vae.config();
        let f = cfg.downsampling();
        cfg.check_grid(grid)?;
        if let Some(t) = &tiling {
            t.validate(f)?;
        }
        let backend = self.planner().backend;
        let voxels = grid.iter().product::<i64>() as u64;
        let latent_voxels = voxels / f.iter().product::<i64>() as u64;
        let latent = latent_voxels * cfg.latent_dim as u64 * 4;
        let c = cfg.in_channels;
        let ext = tiling.map_or(grid, |t| t.max_extent(grid));
        let ext_latent = [0, 1, 2].map(|a| ext[a] / f[a]);
        let mut enc = Tape::no_grad(backend);
        vae.trace_encode(&mut enc, [1, c, ext[0], ext[1], ext[2]]);
        let enc = enc.simulate();
        let mut dec = Tape::no_grad(backend);
        vae.trace_decode(&mut dec, [1, cfg.latent_dim, ext_latent[0], ext_latent[1], ext_latent[2]]);
        let dec = dec.simulate();
        let frame_f32 = voxels * c as u64 * 4;
        // Whole, the tapes' inputs are the frame and the latent and their
        // outputs the latent and the reconstruction. Tiled, those are held
        // besides, and a tile is a copy of its part of the frame (or latent)
        // as its first convolution reads it.
        let recon = voxels * cfg.out_channels as u64 * 4;
        let (held_enc, held_dec) = if tiling.is_some() { (frame_f32 + latent, latent + recon) } else { (0, 0) };
        let (encode, decode) = (held_enc + enc.peak(), held_dec + dec.peak());
        let peak_at = if encode >= decode { enc.peak_at } else { dec.peak_at };
        Ok(InferencePlan {
            model: self.model_config().name(),
            backend,
            grid,
            tiling,
            tiles: tiling.map_or(1, |t| t.count(grid)),
            params: self.parameter_count() * 4,
            frame: voxels * c as u64 * 2,
            frame_f32,
            recon,
            latent,
            encode,
            decode,
            peak_at,
            runtime: self.planner().runtime,
        })
    }
}

/// Share of a budget [`choose_tiling`] fills. The plans match libtorch's
/// counted tensor peak (within 1 % on every preset, whole and tiled:
/// `tests/memory.rs`, `benches/tiled_inference.rs`); the rest is for what
/// they do not hold: allocator slack (peak RSS 1 % above the counted
/// tensors), the runtime reserve (an estimate on CUDA) and cuDNN's
/// workspace (not modelled).
pub const TILE_HEADROOM: f64 = 0.9;

/// The cheapest way to encode and decode whole `grid` frames within
/// `budget`: the whole frame when its plan fits [`TILE_HEADROOM`] of it,
/// else the largest tile (the larger of H and W halved, else Z, in
/// multiples of 32, as crops are chosen) with `halo` voxels of context that
/// does; [`MemoryError::NoTileFits`] when not even the smallest does.
pub fn choose_tiling(budget: u64, mp: &ModelPlanner, grid: [i64; 3], halo: i64) -> Result<InferencePlan, MemoryError> {
    let usable = (budget as f64 * TILE_HEADROOM) as u64;
    let mut plan = mp.plan_inference(grid, None)?;
    for tile in crops(grid) {
        if plan.fits(usable) {
            return Ok(plan);
        }
        plan = mp.plan_inference(grid, Some(Tiling::new(tile, halo)))?;
    }
    if plan.fits(usable) {
        Ok(plan)
    } else {
        Err(MemoryError::NoTileFits { budget: gib(budget), smallest: plan.summary() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{ModelConfig, Planner};
    use crate::model::VaeConfig;

    fn planner(name: &str) -> ModelPlanner {
        Planner::new(Backend::Cuda).model(&ModelConfig::Vae(VaeConfig::named(name).unwrap())).unwrap()
    }

    #[test]
    fn tiles_bound_the_peak_and_the_frame_buffers_stay() {
        let mp = planner("seed_baseline");
        let grid = [96, 608, 224];
        let whole = mp.plan_inference(grid, None).unwrap();
        let tiled = mp.plan_inference(grid, Some(Tiling::new([32, 128, 128], 8))).unwrap();
        let small = mp.plan_inference(grid, Some(Tiling::new([32, 64, 64], 8))).unwrap();
        assert_eq!((whole.tiles, tiled.tiles, small.tiles), (1, 3 * 5 * 2, 3 * 10 * 4));
        assert!(small.total() < tiled.total() && tiled.total() < whole.total());
        assert_eq!(tiled.frame_f32, 4 * 96 * 608 * 224 * 4);
        assert_eq!(tiled.latent, whole.latent);
        assert!(tiled.encode > tiled.frame_f32 + tiled.latent && tiled.decode > tiled.recon + tiled.latent);
        assert!(tiled.summary().contains("--tile 32,128,128 --halo 8 (30 tiles)"), "{}", tiled.summary());
        let unet = Planner::new(Backend::Cuda).model(&ModelConfig::Unet(Default::default())).unwrap();
        assert!(unet.plan_inference([8, 16, 16], None).is_err());
        assert!(mp.plan_inference(grid, Some(Tiling::new([32, 128, 126], 8))).is_err(), "not a multiple");
    }

    #[test]
    fn the_chosen_tile_is_the_largest_that_fits() {
        let mp = planner("standard");
        let grid = [96, 608, 224];
        let whole = mp.plan_inference(grid, None).unwrap();
        let roomy = choose_tiling((whole.total() as f64 / TILE_HEADROOM) as u64 + 1, &mp, grid, 8).unwrap();
        assert_eq!(roomy.tiling, None);
        let budget = whole.total() / 4;
        let chosen = choose_tiling(budget, &mp, grid, 8).unwrap();
        let t = chosen.tiling.expect("tiles");
        let budget = (budget as f64 * TILE_HEADROOM) as u64;
        assert!(chosen.fits(budget));
        // the tile before it in the sequence does not fit
        let prev = std::iter::once(grid).chain(crops(grid)).take_while(|c| *c != t.tile).last().unwrap();
        assert!(!mp.plan_inference(grid, Some(Tiling::new(prev, 8))).unwrap().fits(budget) || prev == grid);
        let none = choose_tiling(1 << 20, &mp, grid, 8).unwrap_err().to_string();
        assert!(none.starts_with("no tile fits 1.0 MiB: the smallest needs"), "{none}");
        assert!(none.contains("--tile 32,32,32"), "{none}");
    }
}
