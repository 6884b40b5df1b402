//! What fits a memory budget: the smallest change that makes a run fit
//! ([`fit`]), the largest configuration that does, and the next thing to
//! try after a step ran out of memory ([`fallback`]).

use std::fmt;

use super::plan::{ModelConfig, ModelPlanner, Plan, Planner, Precision, Run};
use super::MemoryError;
use crate::model::{Checkpointing, VaeConfig};

/// One change to a run, as the seed made them by hand.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Turn on (or refine) gradient checkpointing.
    Checkpointing(Checkpointing),
    /// Turn on mixed precision.
    Amp,
    /// Smaller micro-batch, more accumulation (same effective batch).
    Batch(usize),
    /// Train on native-resolution crops of this `(Z, H, W)`.
    Crop([i64; 3]),
    /// A smaller preset.
    Preset(String),
    /// Resample the grid.
    Grid([i64; 3]),
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::Checkpointing(c) => write!(f, "--checkpointing {c}"),
            Change::Amp => f.write_str("--amp"),
            Change::Batch(b) => write!(f, "--batch-size {b} (raise --grad-accum to keep the effective batch)"),
            Change::Crop([z, h, w]) => write!(f, "--crop {z},{h},{w}"),
            Change::Preset(p) => write!(f, "--vae-type {p}"),
            Change::Grid([z, h, w]) => write!(f, "--resample {z},{h},{w}"),
        }
    }
}

/// What [`fit`] found.
#[derive(Debug, Clone)]
pub struct Fit {
    /// The run as asked.
    pub requested: Plan,
    /// Whether it fits.
    pub fits: bool,
    /// When it does not: the fewest changes that make it fit, and that plan.
    pub suggestion: Option<(Vec<Change>, Plan)>,
    /// The largest VAE preset and batch (then grid) that fits at the
    /// requested precision and checkpointing.
    pub largest: Option<Plan>,
}

/// VAE presets from largest to smallest.
pub const VAE_PRESETS: [&str; 4] = ["standard", "seed_baseline", "lightweight", "ultra_lightweight"];

/// Checkpointing options from coarsest to finest memory saving.
const CHECKPOINTING: [Checkpointing; 3] =
    [Checkpointing::PerBlock, Checkpointing::Segments(4), Checkpointing::Segments(8)];

fn halve_grid(g: [i64; 3]) -> [i64; 3] {
    // H and W first (they are the large ones), never below 32; then Z.
    if g[1] >= 64 && g[2] >= 64 {
        [g[0], g[1] / 2, g[2] / 2]
    } else {
        [(g[0] / 2).max(8), g[1], g[2]]
    }
}

/// The next smaller crop: the larger of H and W halved, else Z, each a
/// multiple of 32 and at least 32 (a fixed point at `[32, 32, 32]` or below).
fn smaller_crop(g: [i64; 3]) -> [i64; 3] {
    let half = |v: i64| (v / 2 / 32 * 32).max(32);
    let axis = if g[1] >= g[2] { 1 } else { 2 };
    let mut c = g;
    if g[axis] > 32 {
        c[axis] = half(g[axis]);
    } else if g[0] > 32 {
        c[0] = half(g[0]);
    }
    c
}

/// The crops of `grid` from the largest down (the larger of H and W halved,
/// else Z, in multiples of 32, down to 32 each), the grid itself excluded.
pub(crate) fn crops(grid: [i64; 3]) -> impl Iterator<Item = [i64; 3]> {
    std::iter::successors(Some(grid), |&g| Some(smaller_crop(g)).filter(|&c| c != g)).skip(1)
}

/// The largest crop of `grid` (the larger of H and W halved, else Z, in
/// multiples of 32; the grid itself excluded) that trains at batch 1 within
/// `budget`, and its plan.
pub fn largest_crop(
    budget: u64,
    mp: &ModelPlanner,
    grid: [i64; 3],
    precision: Precision,
    checkpointing: Checkpointing,
) -> Option<Plan> {
    crops(grid).map(|crop| mp.plan(crop, 1, precision, checkpointing)).find(|p| p.fits(budget))
}

/// Plans `run` against `budget` bytes: fits or not, the smallest change
/// that makes it fit (checkpointing, AMP, both, smaller batch; then for a
/// VAE the largest native-resolution crop, a smaller preset, a resampled
/// grid, in that order of preference), and the largest VAE preset/batch/grid
/// that fits.
pub fn fit(budget: u64, planner: &Planner, run: &Run) -> Result<Fit, MemoryError> {
    if matches!(run.model, ModelConfig::SparseVae(_)) {
        return fit_sparse(budget, planner, run);
    }
    let mp = planner.model(&run.model)?;
    let requested = mp.plan(run.grid, run.batch, run.precision, run.checkpointing);
    let fits = requested.fits(budget);
    let suggestion = if fits { None } else { suggest(budget, planner, &mp, run)? };
    let largest = largest(budget, planner, run)?;
    Ok(Fit { requested, fits, suggestion, largest })
}

/// [`fit`] of the sparse VAE (planned from its site counts): AMP, then
/// smaller batches; there is no larger preset search (the counts are the
/// root's, not the grid's).
fn fit_sparse(budget: u64, planner: &Planner, run: &Run) -> Result<Fit, MemoryError> {
    let requested = planner.plan(run)?;
    let fits = requested.fits(budget);
    let mut suggestion = None;
    if !fits {
        let precisions: &[Precision] =
            if run.precision == Precision::F32 { &[Precision::F32, Precision::Amp] } else { &[run.precision] };
        let batches = std::iter::successors(Some(run.batch), |&b| (b > 1).then_some(b / 2));
        'search: for batch in batches {
            for &precision in precisions {
                let p = planner.plan(&Run { batch, precision, ..run.clone() })?;
                let c = changes(run, run.checkpointing, precision, batch);
                if p.fits(budget) && !c.is_empty() {
                    suggestion = Some((c, p));
                    break 'search;
                }
            }
        }
    }
    Ok(Fit { requested, fits, suggestion, largest: None })
}

/// The changes from `run` to checkpointing `ck`, `precision` and `batch`.
fn changes(run: &Run, ck: Checkpointing, precision: Precision, batch: usize) -> Vec<Change> {
    let mut v = Vec::new();
    if ck != run.checkpointing {
        v.push(Change::Checkpointing(ck));
    }
    if precision != run.precision {
        v.push(Change::Amp);
    }
    if batch != run.batch {
        v.push(Change::Batch(batch));
    }
    v
}

fn suggest(
    budget: u64,
    planner: &Planner,
    mp: &ModelPlanner,
    run: &Run,
) -> Result<Option<(Vec<Change>, Plan)>, MemoryError> {
    let ck_options: Vec<Checkpointing> = CHECKPOINTING.iter().copied().filter(|c| *c != run.checkpointing).collect();
    let amp_options: &[bool] = if run.precision == Precision::F32 { &[false, true] } else { &[false] };
    // Same model and grid: checkpointing and/or AMP, then also smaller batches.
    let mut batches = vec![run.batch];
    let mut b = run.batch;
    while b > 1 {
        b /= 2;
        batches.push(b);
    }
    for &batch in &batches {
        for &amp in amp_options {
            for ck in std::iter::once(run.checkpointing).chain(ck_options.iter().copied()) {
                let precision = if amp { Precision::Amp } else { run.precision };
                let p = mp.plan(run.grid, batch, precision, ck);
                let changes = changes(run, ck, precision, batch);
                if p.fits(budget) && !changes.is_empty() {
                    return Ok(Some((changes, p)));
                }
            }
        }
    }
    // The largest crop (same preset, native voxels) at batch 1, AMP and
    // per-block checkpointing.
    if let ModelConfig::Vae(_) = &run.model {
        if let Some(p) = largest_crop(budget, mp, run.grid, Precision::Amp, Checkpointing::PerBlock) {
            let mut c = vec![Change::Crop(p.run.grid)];
            c.extend(changes(run, Checkpointing::PerBlock, Precision::Amp, 1));
            return Ok(Some((c, p)));
        }
    }
    // Smaller VAE presets at batch 1, AMP and per-block checkpointing.
    if let ModelConfig::Vae(current) = &run.model {
        let smaller = VAE_PRESETS.iter().skip_while(|n| VaeConfig::named(n).as_ref() != Ok(current)).skip(1);
        for name in smaller {
            let model = ModelConfig::Vae(VaeConfig::named(name)?);
            let p = planner.model(&model)?.plan(run.grid, 1, Precision::Amp, Checkpointing::PerBlock);
            if p.fits(budget) {
                let mut c = vec![Change::Preset(name.to_string())];
                c.extend(changes(run, Checkpointing::PerBlock, Precision::Amp, 1));
                return Ok(Some((c, p)));
            }
        }
    }
    // Resample the grid.
    let mut grid = run.grid;
    while grid != halve_grid(grid) {
        grid = halve_grid(grid);
        let p = mp.plan(grid, 1, Precision::Amp, Checkpointing::PerBlock);
        if p.fits(budget) {
            let mut c = vec![Change::Grid(grid)];
            c.extend(changes(run, Checkpointing::PerBlock, Precision::Amp, 1));
            return Ok(Some((c, p)));
        }
    }
    Ok(None)
}

fn largest(budget: u64, planner: &Planner, run: &Run) -> Result<Option<Plan>, MemoryError> {
    let ModelConfig::Vae(_) = run.model else {
        return Ok(None);
    };
    let models = VAE_PRESETS
        .iter()
        .map(|n| planner.model(&ModelConfig::Vae(VaeConfig::named(n)?)))
        .collect::<Result<Vec<_>, _>>()?;
    let mut grid = run.grid;
    loop {
        for mp in &models {
            // the batch doubles while it fits (up to 64)
            let mut best = None;
            let mut batch = 1;
            while batch <= 64 {
                let p = mp.plan(grid, batch, run.precision, run.checkpointing);
                if !p.fits(budget) {
                    break;
                }
                best = Some(p);
                batch *= 2;
            }
            if best.is_some() {
                return Ok(best);
            }
        }
        let next = halve_grid(grid);
        if next == grid {
            return Ok(None);
        }
        grid = next;
    }
}

/// The next configuration to try after an out-of-memory step: half the
/// micro-batch while it is above 1, else the checkpointing option with the
/// lowest planned peak below the current one; `None` when nothing is left.
pub fn fallback(
    mp: &ModelPlanner,
    grid: [i64; 3],
    batch: usize,
    precision: Precision,
    current: Checkpointing,
) -> Option<(usize, Checkpointing, Plan)> {
    if batch > 1 {
        let b = batch / 2;
        return Some((b, current, mp.plan(grid, b, precision, current)));
    }
    let now = mp.plan(grid, batch, precision, current).device_tensors();
    CHECKPOINTING
        .iter()
        .filter(|&&c| c != current)
        .map(|&c| (c, mp.plan(grid, batch, precision, c)))
        .filter(|(_, p)| p.device_tensors() < now)
        .min_by_key(|(_, p)| p.device_tensors())
        .map(|(c, p)| (batch, c, p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sparse_run_that_does_not_fit_is_offered_amp_or_a_smaller_batch() {
        use crate::memory::{SparseModel, SparseSites};
        use crate::model::sparse::{Coords, SparseVaeConfig};
        let vae = SparseVaeConfig::small();
        let mut v = Vec::new();
        for z in 0..10 {
            for y in 0..30 {
                for x in 0..10 {
                    v.push([0, z, y, x]);
                }
            }
        }
        let grid = [16, 64, 32];
        let sites = SparseSites::of(&vae, &Coords::new(&v, 1, grid, [1; 3]).unwrap()).unwrap();
        let model = ModelConfig::SparseVae(Box::new(SparseModel { vae, sites }));
        let run = Run { model, grid, batch: 8, precision: Precision::F32, checkpointing: Checkpointing::Off };
        let planner = Planner::new(super::super::Backend::Cuda);
        let need = planner.plan(&run).unwrap().total();
        let roomy = fit(need, &planner, &run).unwrap();
        assert!(roomy.fits && roomy.suggestion.is_none());
        let tight = fit(need - 1, &planner, &run).unwrap();
        let (changes, p) = tight.suggestion.expect("AMP or a smaller batch fits");
        assert!(!tight.fits && p.total() < need && !changes.is_empty(), "{changes:?}");
        assert!(p.run.batch < 8 || p.run.precision == Precision::Amp);
    }

    fn vae(name: &str) -> ModelConfig {
        ModelConfig::Vae(VaeConfig::named(name).unwrap())
    }

    #[test]
    fn fit_suggests_the_seed_changes() {
        let run = Run {
            model: vae("ultra_lightweight"),
            grid: [32, 128, 128],
            batch: 4,
            precision: Precision::F32,
            checkpointing: Checkpointing::Off,
        };
        let planner = Planner::default();
        let need = planner.plan(&run).unwrap().total();
        let roomy = fit(need + (1 << 20), &planner, &run).unwrap();
        assert!(roomy.fits && roomy.suggestion.is_none());
        let tight = fit(need * 7 / 10, &planner, &run).unwrap();
        assert!(!tight.fits);
        let (changes, p) = tight.suggestion.expect("a change fits");
        assert!(p.fits(need * 7 / 10));
        assert!(!changes.is_empty());
        let largest = tight.largest.expect("something fits");
        assert!(largest.fits(need * 7 / 10));
        let nothing = fit(1 << 20, &planner, &run).unwrap();
        assert!(nothing.suggestion.is_none() && nothing.largest.is_none());
    }

    #[test]
    fn the_largest_crop_that_fits_comes_before_a_smaller_preset() {
        let planner = Planner::default();
        let run = Run {
            model: vae("seed_baseline"),
            grid: [96, 608, 224],
            batch: 1,
            precision: Precision::Amp,
            checkpointing: Checkpointing::PerBlock,
        };
        let budget = 4 << 30;
        let f = fit(budget, &planner, &run).unwrap();
        assert!(!f.fits);
        let (changes, p) = f.suggestion.expect("a crop fits");
        let [Change::Crop(crop)] = changes.as_slice() else { panic!("{changes:?}") };
        assert!(p.fits(budget) && crop.iter().all(|d| d % 32 == 0), "{crop:?}");
        // the one before it in the sequence does not fit: it is the largest
        let prev = std::iter::once(run.grid).chain(crops(run.grid)).take_while(|c| c != crop).last().unwrap();
        let m = planner.model(&run.model).unwrap();
        assert!(!m.plan(prev, 1, Precision::Amp, Checkpointing::PerBlock).fits(budget), "{prev:?}");
        assert_eq!(Change::Crop(*crop).to_string(), format!("--crop {},{},{}", crop[0], crop[1], crop[2]));
        let all: Vec<_> = crops([96, 608, 224]).collect();
        assert_eq!(all[..3], [[96, 288, 224], [96, 128, 224], [96, 128, 96]]);
        assert_eq!(all.last(), Some(&[32, 32, 32]));
        assert_eq!(crops([32, 32, 32]).count(), 0);
    }

    #[test]
    fn a_crop_or_a_smaller_preset_is_suggested_with_only_what_changes() {
        let planner = Planner::default();
        let grid = [32, 128, 128];
        let run = |name: &str| Run {
            model: vae(name),
            grid,
            batch: 1,
            precision: Precision::Amp,
            checkpointing: Checkpointing::PerBlock,
        };
        let ultra = planner.plan(&run("ultra_lightweight")).unwrap().total();
        let seed = planner.plan(&run("seed_baseline")).unwrap();
        assert!(!seed.fits(ultra), "seed_baseline needs more than ultra");
        let f = fit(ultra, &planner, &run("seed_baseline")).unwrap();
        let (changes, p) = f.suggestion.expect("a smaller preset fits");
        // finer checkpointing is tried first; when it is not enough, a preset alone
        assert!(p.fits(ultra));
        assert!(
            matches!(changes.as_slice(), [Change::Checkpointing(_)] | [Change::Crop(_)] | [Change::Preset(_)]),
            "nothing else changes: {changes:?}"
        );
        assert_eq!(Change::Preset("lightweight".into()).to_string(), "--vae-type lightweight");
    }

    #[test]
    fn fallback_halves_the_batch_then_checkpoints() {
        let m = Planner::default().model(&vae("ultra_lightweight")).unwrap();
        let (b, c, _) = fallback(&m, [16, 64, 64], 4, Precision::F32, Checkpointing::Off).unwrap();
        assert_eq!((b, c), (2, Checkpointing::Off));
        let (b, c, p) = fallback(&m, [16, 64, 64], 1, Precision::F32, Checkpointing::Off).unwrap();
        assert_eq!(b, 1);
        assert_ne!(c, Checkpointing::Off);
        let off = m.plan([16, 64, 64], 1, Precision::F32, Checkpointing::Off);
        assert!(p.device_tensors() < off.device_tensors());
        // from the finest option nothing lowers the plan further, eventually
        let mut ck = c;
        let mut steps = 0;
        while let Some((_, next, _)) = fallback(&m, [16, 64, 64], 1, Precision::F32, ck) {
            ck = next;
            steps += 1;
            assert!(steps < 4, "fallbacks strictly lower the plan, so they end");
        }
    }
}
