//! Paired radar/target augmentation with the spec's exact parameter names
//! (`VoxelAugmentation`, `Cutout`, `Mixup`). Off by default, never applied
//! to VAE training or to the val split (the loader decides that).
//!
//! Configs load from TOML or JSON; an unknown or misspelled name is an
//! error naming the closest valid one (the reference crashed on exactly such
//! mismatched names). Every random draw comes from the generator passed in,
//! which the loader seeds per sample, so results do not depend on workers.

use std::collections::BTreeMap;
use std::path::Path;

use half::f16;
use rand::Rng;
use rand_distr::{Beta, Distribution, Normal};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::io::config::closest;

/// Errors of augmentation configs.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AugmentError {
    /// A parameter name the section does not have.
    #[error("unknown augmentation parameter `{name}` in [{section}]{}", closest.as_ref().map(|c| format!(": did you mean `{c}`?")).unwrap_or_default())]
    UnknownParameter {
        /// Section (`voxel`, `cutout`, `mixup` or the top level).
        section: String,
        /// The name given.
        name: String,
        /// The closest valid name, if any is close.
        closest: Option<String>,
    },
    /// A value outside its allowed range.
    #[error("augmentation parameter `{name}` = {value} is invalid: {rule}")]
    OutOfRange {
        /// Parameter name.
        name: &'static str,
        /// Value given.
        value: f64,
        /// What is allowed.
        rule: &'static str,
    },
    /// A `(lo, hi)` range with `lo > hi`.
    #[error("augmentation range `{name}` = ({lo}, {hi}) is inverted")]
    InvertedRange {
        /// Parameter name.
        name: &'static str,
        /// Lower end.
        lo: f32,
        /// Upper end.
        hi: f32,
    },
    /// 90/270-degree rotations would change a non-square grid's shape.
    #[error(
        "rotate_prob > 0 on a non-square H x W grid ({h} x {w}): 90/270-degree rotations swap H and W and \
         break batching; set enable_rotate = false or resample to a square grid"
    )]
    NonSquareRotation {
        /// Grid height.
        h: usize,
        /// Grid width.
        w: usize,
    },
    /// Mixup needs a partner sample in the batch.
    #[error("mixup blends two samples of a batch: it needs batch_size >= 2 (got {0})")]
    MixupNeedsBatch(usize),
    /// The file or value could not be parsed.
    #[error("cannot parse augmentation config: {0}")]
    Parse(String),
}

/// Per-sample geometric and photometric augmentation (`VoxelAugmentation`).
/// `Default` gives the reference class's defaults; [`Self::dataset_defaults`]
/// the values the reference dataset passed when augmentation was on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct VoxelAugmentation {
    /// Enable flips.
    pub enable_flip: bool,
    /// Probability of a flip: along W (p 0.5) or else along H.
    pub flip_prob: f32,
    /// Enable rotations.
    pub enable_rotate: bool,
    /// Probability of a k*90 degree rotation in the H-W plane, k in {1, 2, 3}.
    pub rotate_prob: f32,
    /// Enable condition noise.
    pub enable_noise: bool,
    /// Probability of adding N(0, noise_std) to the condition's occupied voxels.
    pub noise_prob: f32,
    /// Standard deviation of that noise.
    pub noise_std: f32,
    /// Enable condition point dropout.
    pub enable_dropout: bool,
    /// Probability of dropping condition points.
    pub dropout_prob: f32,
    /// Chance each occupied condition voxel is zeroed when dropout happens.
    pub point_dropout_rate: f32,
    /// Enable intensity jitter.
    pub enable_intensity_jitter: bool,
    /// Probability of scaling channel 1 of both grids.
    pub intensity_jitter_prob: f32,
    /// Range of that scale.
    pub intensity_scale_range: (f32, f32),
    /// Enable Doppler jitter.
    pub enable_doppler_jitter: bool,
    /// Probability of shifting channel 2 of both grids (occupied voxels).
    pub doppler_jitter_prob: f32,
    /// Range of that shift (m/s).
    pub doppler_shift_range: (f32, f32),
}

impl Default for VoxelAugmentation {
    fn default() -> Self {
        VoxelAugmentation {
            enable_flip: true,
            flip_prob: 0.5,
            enable_rotate: true,
            rotate_prob: 0.5,
            enable_noise: true,
            noise_prob: 0.3,
            noise_std: 0.05,
            enable_dropout: true,
            dropout_prob: 0.2,
            point_dropout_rate: 0.1,
            enable_intensity_jitter: true,
            intensity_jitter_prob: 0.3,
            intensity_scale_range: (0.9, 1.1),
            enable_doppler_jitter: true,
            doppler_jitter_prob: 0.3,
            doppler_shift_range: (-0.1, 0.1),
        }
    }
}

impl VoxelAugmentation {
    /// Valid parameter names, in the spec's order.
    pub const FIELDS: &'static [&'static str] = &[
        "enable_flip",
        "flip_prob",
        "enable_rotate",
        "rotate_prob",
        "enable_noise",
        "noise_prob",
        "noise_std",
        "enable_dropout",
        "dropout_prob",
        "point_dropout_rate",
        "enable_intensity_jitter",
        "intensity_jitter_prob",
        "intensity_scale_range",
        "enable_doppler_jitter",
        "doppler_jitter_prob",
        "doppler_shift_range",
    ];

    /// The reference dataset's values when augmentation is on.
    pub fn dataset_defaults() -> Self {
        VoxelAugmentation {
            flip_prob: 0.5,
            rotate_prob: 0.3,
            noise_prob: 0.2,
            noise_std: 0.02,
            dropout_prob: 0.1,
            point_dropout_rate: 0.05,
            intensity_jitter_prob: 0.1,
            doppler_jitter_prob: 0.05,
            ..Default::default()
        }
    }

    fn validate(&self, grid_hw: Option<(usize, usize)>) -> Result<(), AugmentError> {
        for (name, p) in [
            ("flip_prob", self.flip_prob),
            ("rotate_prob", self.rotate_prob),
            ("noise_prob", self.noise_prob),
            ("dropout_prob", self.dropout_prob),
            ("point_dropout_rate", self.point_dropout_rate),
            ("intensity_jitter_prob", self.intensity_jitter_prob),
            ("doppler_jitter_prob", self.doppler_jitter_prob),
        ] {
            check_prob(name, p)?;
        }
        if !(self.noise_std >= 0.0 && self.noise_std.is_finite()) {
            return Err(AugmentError::OutOfRange {
                name: "noise_std",
                value: self.noise_std as f64,
                rule: "must be >= 0",
            });
        }
        check_range("intensity_scale_range", self.intensity_scale_range)?;
        check_range("doppler_shift_range", self.doppler_shift_range)?;
        if let Some((h, w)) = grid_hw {
            if self.enable_rotate && self.rotate_prob > 0.0 && h != w {
                return Err(AugmentError::NonSquareRotation { h, w });
            }
        }
        Ok(())
    }
}

/// Zero random boxes of the condition (`CutoutAugmentation`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CutoutAugmentation {
    /// Probability of applying cutout to a sample.
    pub prob: f32,
    /// Each box side is this fraction of D, H, W (drawn per side).
    pub cutout_size_range: (f32, f32),
    /// Boxes per sample.
    pub num_cutouts: usize,
}

impl Default for CutoutAugmentation {
    fn default() -> Self {
        CutoutAugmentation { prob: 0.3, cutout_size_range: (0.1, 0.3), num_cutouts: 1 }
    }
}

impl CutoutAugmentation {
    /// Valid parameter names.
    pub const FIELDS: &'static [&'static str] = &["prob", "cutout_size_range", "num_cutouts"];

    fn validate(&self) -> Result<(), AugmentError> {
        check_prob("prob", self.prob)?;
        check_range("cutout_size_range", self.cutout_size_range)?;
        let (lo, hi) = self.cutout_size_range;
        if lo < 0.0 || hi > 1.0 {
            return Err(AugmentError::OutOfRange {
                name: "cutout_size_range",
                value: if lo < 0.0 { lo as f64 } else { hi as f64 },
                rule: "fractions must lie in [0, 1]",
            });
        }
        Ok(())
    }
}

/// Blend two samples of a batch (`MixupAugmentation`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MixupAugmentation {
    /// Beta(alpha, alpha) parameter of the blend weight.
    pub alpha: f32,
    /// Probability of mixing a sample.
    pub prob: f32,
}

impl Default for MixupAugmentation {
    fn default() -> Self {
        MixupAugmentation { alpha: 0.2, prob: 0.3 }
    }
}

impl MixupAugmentation {
    /// Valid parameter names.
    pub const FIELDS: &'static [&'static str] = &["alpha", "prob"];

    fn validate(&self) -> Result<(), AugmentError> {
        check_prob("prob", self.prob)?;
        if !(self.alpha > 0.0 && self.alpha.is_finite()) {
            return Err(AugmentError::OutOfRange { name: "alpha", value: self.alpha as f64, rule: "must be > 0" });
        }
        Ok(())
    }
}

fn check_prob(name: &'static str, p: f32) -> Result<(), AugmentError> {
    if (0.0..=1.0).contains(&p) {
        Ok(())
    } else {
        Err(AugmentError::OutOfRange { name, value: p as f64, rule: "a probability must lie in [0, 1]" })
    }
}

fn check_range(name: &'static str, (lo, hi): (f32, f32)) -> Result<(), AugmentError> {
    if !(lo.is_finite() && hi.is_finite()) {
        return Err(AugmentError::OutOfRange { name, value: f64::NAN, rule: "ends must be finite" });
    }
    if lo > hi {
        return Err(AugmentError::InvertedRange { name, lo, hi });
    }
    Ok(())
}

/// The whole augmentation pipeline; a missing section is off.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Augmentation {
    /// Per-sample voxel augmentation.
    pub voxel: Option<VoxelAugmentation>,
    /// Condition cutout.
    pub cutout: Option<CutoutAugmentation>,
    /// Batch mixup.
    pub mixup: Option<MixupAugmentation>,
}

const SECTIONS: &[&str] = &["voxel", "cutout", "mixup"];

impl Augmentation {
    /// Parses a TOML document, refusing unknown names.
    pub fn from_toml(text: &str) -> Result<Self, AugmentError> {
        Self::from_value(crate::io::config::parse_document(text, false).map_err(AugmentError::Parse)?)
    }

    /// Parses a JSON document, refusing unknown names.
    pub fn from_json(text: &str) -> Result<Self, AugmentError> {
        Self::from_value(crate::io::config::parse_document(text, true).map_err(AugmentError::Parse)?)
    }

    /// Reads a `.toml` or `.json` file (by extension).
    pub fn from_file(path: &Path) -> Result<Self, AugmentError> {
        let text =
            std::fs::read_to_string(path).map_err(|e| AugmentError::Parse(format!("{}: {e}", path.display())))?;
        match path.extension().and_then(|e| e.to_str()) {
            Some("json") => Self::from_json(&text),
            _ => Self::from_toml(&text),
        }
    }

    /// Serialises to TOML (round-trips through [`Self::from_toml`]).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("augmentation config serialises")
    }

    fn from_value(value: Value) -> Result<Self, AugmentError> {
        check_keys(&value, "top level", SECTIONS)?;
        for (section, fields) in [
            ("voxel", VoxelAugmentation::FIELDS),
            ("cutout", CutoutAugmentation::FIELDS),
            ("mixup", MixupAugmentation::FIELDS),
        ] {
            if let Some(v) = value.get(section) {
                check_keys(v, section, fields)?;
            }
        }
        let aug: Augmentation = serde_json::from_value(value).map_err(|e| AugmentError::Parse(e.to_string()))?;
        aug.validate(None)?;
        Ok(aug)
    }

    /// Sets one parameter from the command line: `flip-prob` (voxel),
    /// `cutout.num-cutouts`, `mixup.alpha`; kebab-case, values like
    /// `0.3`, `true` or `0.9,1.1`. Setting a name enables its section.
    pub fn set_cli(&mut self, key: &str, value: &str) -> Result<(), AugmentError> {
        let (section, name) = match key.split_once('.') {
            Some((s, n)) => (s.to_string(), n),
            None => ("voxel".to_string(), key),
        };
        let name = name.trim_start_matches("--").replace('-', "_");
        let mut doc = serde_json::to_value(&*self).expect("serialises");
        let parsed: Value =
            if value.contains(',') { serde_json::from_str(&format!("[{value}]")) } else { serde_json::from_str(value) }
                .map_err(|e| AugmentError::Parse(format!("--{key} {value}: {e}")))?;
        let obj = doc.as_object_mut().expect("struct");
        if !SECTIONS.contains(&section.as_str()) {
            return Err(unknown("top level", &section, SECTIONS));
        }
        let entry = obj.entry(section.clone()).or_insert(Value::Null);
        if entry.is_null() {
            *entry = Value::Object(Default::default());
        }
        entry.as_object_mut().expect("section").insert(name, parsed);
        *self = Self::from_value(doc)?;
        Ok(())
    }

    /// Checks every value; with the output `(H, W)` grid, also refuses
    /// 90/270-degree rotations on a non-square grid.
    pub fn validate(&self, grid_hw: Option<(usize, usize)>) -> Result<(), AugmentError> {
        if let Some(v) = &self.voxel {
            v.validate(grid_hw)?;
        }
        if let Some(c) = &self.cutout {
            c.validate()?;
        }
        if let Some(m) = &self.mixup {
            m.validate()?;
        }
        Ok(())
    }

    /// Whether anything is switched on.
    pub fn is_active(&self) -> bool {
        self.voxel.is_some() || self.cutout.is_some() || self.mixup.is_some()
    }

    /// Augments one `(C, D, H, W)` sample pair in place: voxel augmentation
    /// (flip, rotate, noise, dropout, intensity, Doppler), then cutout.
    pub fn apply_sample(
        &self,
        shape: [usize; 4],
        target: &mut [f16],
        radar: &mut [f16],
        rng: &mut impl Rng,
    ) -> Applied {
        let mut applied = Applied::default();
        let mut g = Pair { shape, target, radar };
        if let Some(v) = &self.voxel {
            if v.enable_flip && rng.random::<f32>() < v.flip_prob {
                let along_w = rng.random::<f32>() < 0.5;
                g.each(|grid| flip(grid, shape, along_w));
                applied.flip = Some(if along_w { Axis::W } else { Axis::H });
            }
            if v.enable_rotate && rng.random::<f32>() < v.rotate_prob {
                let k = rng.random_range(1..=3u8);
                if k % 2 == 1 {
                    assert_eq!(
                        shape[2], shape[3],
                        "90/270-degree rotation needs a square grid (validate() refuses this)"
                    );
                }
                g.each(|grid| rotate(grid, shape, k));
                applied.rotate = Some(k);
            }
            if v.enable_noise && rng.random::<f32>() < v.noise_prob {
                let normal = Normal::new(0.0, v.noise_std).expect("validated std");
                for_occupied(g.radar, shape, |vals| vals.iter_mut().for_each(|x| add(x, normal.sample(rng))));
                applied.noise = true;
            }
            if v.enable_dropout && rng.random::<f32>() < v.dropout_prob {
                let rate = v.point_dropout_rate;
                for_occupied(g.radar, shape, |vals| {
                    if rng.random::<f32>() < rate {
                        vals.iter_mut().for_each(|x| *x = f16::ZERO);
                    }
                });
                applied.dropout = true;
            }
            if v.enable_intensity_jitter && rng.random::<f32>() < v.intensity_jitter_prob && shape[0] > 1 {
                let u = uniform(rng, v.intensity_scale_range);
                g.each(|grid| channel(grid, shape, 1).iter_mut().for_each(|x| *x = f16::from_f32(x.to_f32() * u)));
                applied.intensity_scale = Some(u);
            }
            if v.enable_doppler_jitter && rng.random::<f32>() < v.doppler_jitter_prob && shape[0] > 2 {
                let s = uniform(rng, v.doppler_shift_range);
                g.each(|grid| for_occupied(grid, shape, |vals| add(&mut vals[2], s)));
                applied.doppler_shift = Some(s);
            }
        }
        if let Some(c) = &self.cutout {
            if rng.random::<f32>() < c.prob {
                for _ in 0..c.num_cutouts {
                    let bx = cutout_box(shape, c.cutout_size_range, rng);
                    zero_box(g.radar, shape, bx);
                    applied.cutouts.push(bx);
                }
            }
        }
        applied
    }

    /// Mixup over a batch of `n` samples of `per_sample` values each: sample
    /// `i` is blended with sample `(i + 1) % n` (drawn before any blending)
    /// with one `lam ~ Beta(alpha, alpha)` for its target and condition.
    /// Returns the `lam` used per sample (`None`: not mixed).
    pub fn apply_batch(&self, n: usize, target: &mut [f16], radar: &mut [f16], rng: &mut impl Rng) -> Vec<Option<f32>> {
        let Some(m) = &self.mixup else { return vec![None; n] };
        if n < 2 {
            return vec![None; n];
        }
        let beta = Beta::new(m.alpha, m.alpha).expect("validated alpha");
        let lams: Vec<Option<f32>> = (0..n).map(|_| (rng.random::<f32>() < m.prob).then(|| beta.sample(rng))).collect();
        let per = target.len() / n;
        for data in [target, radar] {
            let orig: Vec<f16> = data.to_vec();
            for (i, lam) in lams.iter().enumerate() {
                if let Some(lam) = lam {
                    let j = (i + 1) % n;
                    for (k, x) in data[i * per..(i + 1) * per].iter_mut().enumerate() {
                        *x = f16::from_f32(lam * orig[i * per + k].to_f32() + (1.0 - lam) * orig[j * per + k].to_f32());
                    }
                }
            }
        }
        lams
    }
}

/// Flip axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Axis {
    /// Along H (rows reversed).
    H,
    /// Along W (each row reversed).
    W,
}

/// What [`Augmentation::apply_sample`] did, for logs and tests.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Applied {
    /// Flip axis, if flipped.
    pub flip: Option<Axis>,
    /// Rotation by `k * 90` degrees.
    pub rotate: Option<u8>,
    /// Condition noise added.
    pub noise: bool,
    /// Condition dropout applied.
    pub dropout: bool,
    /// Intensity scale used.
    pub intensity_scale: Option<f32>,
    /// Doppler shift used.
    pub doppler_shift: Option<f32>,
    /// Cutout boxes `[(start, end); 3]` over (D, H, W).
    pub cutouts: Vec<[(usize, usize); 3]>,
}

struct Pair<'a> {
    shape: [usize; 4],
    target: &'a mut [f16],
    radar: &'a mut [f16],
}

impl Pair<'_> {
    fn each(&mut self, mut f: impl FnMut(&mut [f16])) {
        debug_assert_eq!(self.target.len(), self.shape.iter().product::<usize>());
        f(self.target);
        f(self.radar);
    }
}

fn add(x: &mut f16, d: f32) {
    *x = f16::from_f32(x.to_f32() + d);
}

pub(crate) fn uniform(rng: &mut impl Rng, (lo, hi): (f32, f32)) -> f32 {
    if lo == hi {
        lo
    } else {
        rng.random_range(lo..hi)
    }
}

fn channel(grid: &mut [f16], [_, d, h, w]: [usize; 4], c: usize) -> &mut [f16] {
    let plane = d * h * w;
    &mut grid[c * plane..(c + 1) * plane]
}

/// Calls `f` with the `C` values of every voxel whose occupancy is > 0.
fn for_occupied(grid: &mut [f16], [c, d, h, w]: [usize; 4], mut f: impl FnMut(&mut [f16])) {
    let plane = d * h * w;
    let mut vals = vec![f16::ZERO; c];
    for i in 0..plane {
        if grid[i].to_f32() > 0.0 {
            for (ci, v) in vals.iter_mut().enumerate() {
                *v = grid[ci * plane + i];
            }
            f(&mut vals);
            for (ci, v) in vals.iter().enumerate() {
                grid[ci * plane + i] = *v;
            }
        }
    }
}

fn flip(grid: &mut [f16], [_, _, h, w]: [usize; 4], along_w: bool) {
    for plane in grid.chunks_mut(h * w) {
        if along_w {
            plane.chunks_mut(w).for_each(|row| row.reverse());
        } else {
            for r in 0..h / 2 {
                let (top, bottom) = plane.split_at_mut((h - 1 - r) * w);
                top[r * w..(r + 1) * w].swap_with_slice(&mut bottom[..w]);
            }
        }
    }
}

/// Rotates every H-W plane by `k * 90` degrees counter-clockwise
/// (`out[i][j] = in[j][n-1-i]` for k = 1, as `torch.rot90(x, k, (-2, -1))`).
fn rotate(grid: &mut [f16], [_, _, h, w]: [usize; 4], k: u8) {
    let mut tmp = vec![f16::ZERO; h * w];
    for plane in grid.chunks_mut(h * w) {
        tmp.copy_from_slice(plane);
        for i in 0..h {
            for j in 0..w {
                plane[i * w + j] = match k % 4 {
                    1 => tmp[j * w + (w - 1 - i)],
                    2 => tmp[(h - 1 - i) * w + (w - 1 - j)],
                    3 => tmp[(h - 1 - j) * w + i],
                    _ => tmp[i * w + j],
                };
            }
        }
    }
}

pub(crate) fn cutout_box(shape: [usize; 4], (lo, hi): (f32, f32), rng: &mut impl Rng) -> [(usize, usize); 3] {
    let mut bx = [(0, 0); 3];
    for (k, b) in bx.iter_mut().enumerate() {
        let n = shape[k + 1];
        let len = ((uniform(rng, (lo, hi)) * n as f32).round() as usize).min(n);
        let start = rng.random_range(0..=n - len);
        *b = (start, start + len);
    }
    bx
}

fn zero_box(grid: &mut [f16], [_, d, h, w]: [usize; 4], [(z0, z1), (y0, y1), (x0, x1)]: [(usize, usize); 3]) {
    for vol in grid.chunks_mut(d * h * w) {
        for z in z0..z1 {
            for y in y0..y1 {
                vol[(z * h + y) * w + x0..(z * h + y) * w + x1].fill(f16::ZERO);
            }
        }
    }
}

fn check_keys(value: &Value, section: &str, allowed: &[&str]) -> Result<(), AugmentError> {
    match value {
        Value::Object(map) => {
            for key in map.keys() {
                if !allowed.contains(&key.as_str()) {
                    return Err(unknown(section, key, allowed));
                }
            }
            Ok(())
        }
        Value::Null => Ok(()),
        other => Err(AugmentError::Parse(format!("[{section}] must be a table, got {other}"))),
    }
}

fn unknown(section: &str, name: &str, allowed: &[&str]) -> AugmentError {
    AugmentError::UnknownParameter { section: section.into(), name: name.into(), closest: closest(name, allowed) }
}

/// Field names as serialised, for the test that [`VoxelAugmentation::FIELDS`] etc. cannot drift.
pub fn serialized_fields<T: Serialize>(value: &T) -> Vec<String> {
    match serde_json::to_value(value).expect("serialises") {
        Value::Object(m) => {
            let order: BTreeMap<String, Value> = m.into_iter().collect();
            order.into_keys().collect()
        }
        _ => Vec::new(),
    }
}
