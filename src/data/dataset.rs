//! NTU4DRadLM_Pre discovery: scenes, the train/val split, radar/target
//! pairing by stem, and reading a frame into an f16 `(C, Z, H, W)` buffer.
//! Only regular files are considered frames (a FIFO would block a reader).
//!
//! Headers are parsed once at [`Dataset::open`] (so shape mismatches fail
//! early); reading maps or decodes the file each time.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use half::f16;
use rayon::prelude::*;

use super::crop::CropAt;
use super::frame::{FrameFile, FrameId, Grid};
use super::layout::Layout;
use super::resample::Reduce;
use super::DataError;

/// Which part of the dataset to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Split {
    /// The first `max(1, floor(0.8 n))` scenes by name.
    Train,
    /// The remaining scenes.
    Val,
    /// Every scene.
    All,
}

impl FromStr for Split {
    type Err = DataError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "train" => Ok(Split::Train),
            "val" => Ok(Split::Val),
            "all" => Ok(Split::All),
            other => Err(DataError::Config(format!("unknown split {other:?}: use train, val or all"))),
        }
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Split::Train => "train",
            Split::Val => "val",
            Split::All => "all",
        })
    }
}

/// The three voxel grids a frame may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Modality {
    /// `radar_voxel`: the condition `[Occ, Int, Dop, Var]`.
    Radar,
    /// `target_voxel`: the training target `[Occ, Int, Dop, Mask]`.
    Target,
    /// `lidar_voxel`: LiDAR alone `[Occ, Int, 0, 0]` (needs `with_lidar`).
    Lidar,
}

impl Modality {
    fn dir(self) -> &'static str {
        match self {
            Modality::Radar => "radar_voxel",
            Modality::Target => "target_voxel",
            Modality::Lidar => "lidar_voxel",
        }
    }
}

/// Options of [`Dataset::open`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DatasetConfig {
    /// Output layout: pad (default, alignment 32) or resample.
    pub layout: Layout,
    /// Scenes of the train split, overriding the 80/20 rule.
    pub train_scenes: Option<Vec<String>>,
    /// Scenes of the val split, overriding the 80/20 rule.
    pub val_scenes: Option<Vec<String>>,
    /// Also pair `lidar_voxel` frames (each paired frame must have one).
    pub with_lidar: bool,
}

/// One paired frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameEntry {
    /// Scene and stem.
    pub id: FrameId,
    /// Radar condition.
    pub radar: FrameFile,
    /// Training target.
    pub target: FrameFile,
    /// LiDAR-only grid, when opened `with_lidar`.
    pub lidar: Option<FrameFile>,
}

/// The frames of one split of an NTU4DRadLM_Pre tree.
#[derive(Debug, Clone)]
pub struct Dataset {
    root: PathBuf,
    split: Split,
    config: DatasetConfig,
    scenes: Vec<String>,
    frames: Vec<FrameEntry>,
    warnings: Vec<String>,
}

impl Dataset {
    /// Discovers scenes under `root`, picks those of `split`, pairs frames
    /// by stem and parses every header (in parallel), checking that the
    /// radar and target grids of each frame agree.
    pub fn open(root: impl AsRef<Path>, split: Split, config: &DatasetConfig) -> Result<Dataset, DataError> {
        let root = root.as_ref().to_path_buf();
        validate_layout(config.layout)?;
        if !root.is_dir() {
            return Err(DataError::MissingRoot(root));
        }
        let mut warnings = Vec::new();
        let all = list_scenes(&root)?;
        if all.is_empty() {
            return Err(DataError::NoScenes(root));
        }
        let scenes = select_scenes(&root, &all, split, config, &mut warnings)?;
        let mut frames = Vec::new();
        for scene in &scenes {
            frames.extend(pair_scene(&root, scene, config.with_lidar, &mut warnings)?);
        }
        if frames.is_empty() {
            return Err(DataError::NoPairs { root, split });
        }
        check_crop(config.layout, &frames)?;
        for w in &warnings {
            log::warn!("{w}");
        }
        Ok(Dataset { root, split, config: config.clone(), scenes, frames, warnings })
    }

    /// Dataset root.
    pub fn root(&self) -> &Path {
        &self.root
    }
    /// The split this dataset serves.
    pub fn split(&self) -> Split {
        self.split
    }
    /// Options it was opened with.
    pub fn config(&self) -> &DatasetConfig {
        &self.config
    }
    /// Scenes of this split, sorted by name.
    pub fn scenes(&self) -> &[String] {
        &self.scenes
    }
    /// Paired frames, by scene then stem.
    pub fn frames(&self) -> &[FrameEntry] {
        &self.frames
    }
    /// Number of frames.
    pub fn len(&self) -> usize {
        self.frames.len()
    }
    /// Whether there is no frame (never true for an opened dataset).
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }
    /// What ranks of one run must agree on about this dataset: the frame
    /// count, a hash of every frame's id and file sizes, and the layout.
    pub fn identity(&self) -> String {
        let mut text = String::new();
        for f in &self.frames {
            let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
            text.push_str(&format!("{}:{}:{};", f.id, size(f.target.path()), size(f.radar.path())));
        }
        format!(
            "{} frames (hash {:016x}), layout {}",
            self.len(),
            crate::sys::fnv1a(text.as_bytes()),
            self.config.layout
        )
    }
    /// Things worth knowing that were not errors (single scene, unpaired files).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Output `(C, Z, H, W)` of frame `i` (all modalities agree).
    pub fn output_shape(&self, i: usize) -> [usize; 4] {
        self.config.layout.output_shape(self.frames[i].target.shape())
    }

    /// The file of one modality of frame `i`.
    pub fn file(&self, i: usize, modality: Modality) -> Result<&FrameFile, DataError> {
        let f = &self.frames[i];
        match modality {
            Modality::Radar => Ok(&f.radar),
            Modality::Target => Ok(&f.target),
            Modality::Lidar => f.lidar.as_ref().ok_or_else(|| DataError::MissingLidar(f.target.path().into())),
        }
    }

    /// Decodes one modality of frame `i` into `out` (length: the product of
    /// [`Dataset::output_shape`]); every element is overwritten.
    pub fn read_into(&self, i: usize, modality: Modality, out: &mut [f16]) -> Result<(), DataError> {
        let file = self.file(i, modality)?;
        let reduce = Reduce::for_channels(file.shape()[3], modality == Modality::Target);
        file.read_into(self.config.layout, &reduce, out)
    }

    /// Cuts the crop of one modality of frame `i` (the layout must be
    /// [`Layout::Crop`]) at `at` into `out`; returns the corner used, so the
    /// other modality can be cut at the same place.
    pub fn read_crop_into<R: rand::Rng>(
        &self,
        i: usize,
        modality: Modality,
        at: CropAt<R>,
        out: &mut [f16],
    ) -> Result<[usize; 3], DataError> {
        let Layout::Crop { zhw, .. } = self.config.layout else {
            return Err(DataError::Config(format!("read_crop_into needs a crop layout, not {}", self.config.layout)));
        };
        self.file(i, modality)?.read_crop_into(zhw, at, out)
    }

    /// Decodes one modality of frame `i` into a new [`Grid`].
    pub fn read(&self, i: usize, modality: Modality) -> Result<Grid, DataError> {
        let shape = self.output_shape(i);
        let mut data = vec![f16::ZERO; shape.iter().product()];
        self.read_into(i, modality, &mut data)?;
        Ok(Grid { shape, data })
    }
}

fn validate_layout(layout: Layout) -> Result<(), DataError> {
    match layout {
        Layout::Pad { alignment: 0 } => Err(DataError::Config("alignment must be >= 1".into())),
        Layout::Resample { zhw } if zhw.contains(&0) => {
            Err(DataError::Config(format!("resample grid {zhw:?} has a zero dimension")))
        }
        Layout::Crop { zhw, .. } if zhw.contains(&0) => {
            Err(DataError::Config(format!("crop {zhw:?} has a zero dimension")))
        }
        Layout::Crop { focus, .. } if focus > 100 => {
            Err(DataError::Config(format!("crop focus {focus} is a percentage: 0 to 100")))
        }
        _ => Ok(()),
    }
}

/// Refuses a crop larger than some frame's grid (it would train on
/// padding), naming the largest crop every frame holds.
fn check_crop(layout: Layout, frames: &[FrameEntry]) -> Result<(), DataError> {
    let Layout::Crop { zhw, .. } = layout else { return Ok(()) };
    let grid = |f: &FrameEntry| {
        let s = f.target.shape();
        [s[2], s[0], s[1]]
    };
    let Some(small) = frames.iter().find(|f| (0..3).any(|a| zhw[a] > grid(f)[a])) else { return Ok(()) };
    let fit: [usize; 3] = std::array::from_fn(|a| frames.iter().map(|f| grid(f)[a]).min().unwrap_or(0).min(zhw[a]));
    let g = grid(small);
    Err(DataError::Config(format!(
        "crop {},{},{} is larger than the (Z, H, W) grid {},{},{} of frame {} ({}): the largest crop every frame holds is {},{},{}",
        zhw[0],
        zhw[1],
        zhw[2],
        g[0],
        g[1],
        g[2],
        small.id,
        small.target.path().display(),
        fit[0],
        fit[1],
        fit[2]
    )))
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let io = |source| DataError::Io { path: dir.to_path_buf(), source };
    let mut entries =
        std::fs::read_dir(dir).map_err(io)?.map(|e| e.map(|e| e.path())).collect::<Result<Vec<_>, _>>().map_err(io)?;
    entries.sort();
    Ok(entries)
}

fn list_scenes(root: &Path) -> Result<Vec<String>, DataError> {
    Ok(read_dir_sorted(root)?
        .into_iter()
        .filter(|p| p.join(Modality::Radar.dir()).is_dir() && p.join(Modality::Target.dir()).is_dir())
        .filter_map(|p| p.file_name().and_then(|n| n.to_str()).map(str::to_owned))
        .collect())
}

fn select_scenes(
    root: &Path,
    all: &[String],
    split: Split,
    config: &DatasetConfig,
    warnings: &mut Vec<String>,
) -> Result<Vec<String>, DataError> {
    let explicit = match split {
        Split::Train => config.train_scenes.as_ref(),
        Split::Val => config.val_scenes.as_ref(),
        Split::All => None,
    };
    if let Some(names) = explicit {
        for name in names {
            if !all.contains(name) {
                return Err(DataError::UnknownScene {
                    root: root.to_path_buf(),
                    name: name.clone(),
                    available: all.to_vec(),
                });
            }
        }
        return Ok(names.clone());
    }
    if all.len() == 1 {
        if split != Split::All {
            warnings.push(format!(
                "only one scene ({}) under {}: it serves the {split} split and every other split",
                all[0],
                root.display()
            ));
        }
        return Ok(all.to_vec());
    }
    let n_train = ((all.len() as f64 * 0.8).floor() as usize).max(1);
    Ok(match split {
        Split::Train => all[..n_train].to_vec(),
        Split::Val => all[n_train..].to_vec(),
        Split::All => all.to_vec(),
    })
}

/// Frame files of one modality folder by stem (`.npy` or `.npz`).
fn frames_by_stem(dir: &Path) -> Result<BTreeMap<String, PathBuf>, DataError> {
    let mut map = BTreeMap::new();
    if !dir.is_dir() {
        return Ok(map);
    }
    for path in read_dir_sorted(dir)? {
        let ext = path.extension().and_then(|e| e.to_str());
        if !matches!(ext, Some("npy") | Some("npz")) {
            continue;
        }
        crate::io::check_regular(&path)?;
        let Some(stem) = path.file_stem().and_then(|s| s.to_str()).map(str::to_owned) else {
            continue;
        };
        if let Some(prev) = map.insert(stem, path.clone()) {
            return Err(DataError::Ambiguous(prev, path));
        }
    }
    Ok(map)
}

fn pair_scene(
    root: &Path,
    scene: &str,
    with_lidar: bool,
    warnings: &mut Vec<String>,
) -> Result<Vec<FrameEntry>, DataError> {
    let dir = root.join(scene);
    let radar = frames_by_stem(&dir.join(Modality::Radar.dir()))?;
    let target = frames_by_stem(&dir.join(Modality::Target.dir()))?;
    let lidar = if with_lidar { frames_by_stem(&dir.join(Modality::Lidar.dir()))? } else { BTreeMap::new() };
    let unpaired = radar.keys().filter(|s| !target.contains_key(*s)).count()
        + target.keys().filter(|s| !radar.contains_key(*s)).count();
    if unpaired > 0 {
        warnings.push(format!("scene {scene}: {unpaired} frame file(s) without a radar/target partner skipped"));
    }
    let pairs: Vec<(&String, &PathBuf, &PathBuf)> =
        radar.iter().filter_map(|(stem, r)| target.get(stem).map(|t| (stem, r, t))).collect();
    pairs
        .into_par_iter()
        .map(|(stem, r, t)| {
            let (radar, target) = (FrameFile::open(r)?, FrameFile::open(t)?);
            check_same_shape(&radar, &target)?;
            let lidar = if with_lidar {
                let path = lidar.get(stem).ok_or_else(|| DataError::MissingLidar(t.clone()))?;
                let l = FrameFile::open(path)?;
                check_same_shape(&l, &target)?;
                Some(l)
            } else {
                None
            };
            Ok(FrameEntry { id: FrameId { scene: scene.to_owned(), stem: stem.clone() }, radar, target, lidar })
        })
        .collect()
}

fn check_same_shape(a: &FrameFile, b: &FrameFile) -> Result<(), DataError> {
    if a.shape() != b.shape() {
        return Err(DataError::ShapeMismatch {
            a: a.path().to_path_buf(),
            a_shape: a.shape(),
            b: b.path().to_path_buf(),
            b_shape: b.shape(),
        });
    }
    Ok(())
}
