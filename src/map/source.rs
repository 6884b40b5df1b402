//! A scene's frames as map observations: the occupied voxels of the radar,
//! target or LiDAR grids (probability 1), or of a `sample` predictions
//! folder (`<scene>_<stem>.npz`, channel 0 the occupancy probability), their
//! centres carried into the world by the scene's poses.
//!
//! Frame `<stem>` takes pose line `stem` of `<scene>/poses.txt` (radar
//! frames: `radar_poses.txt` where it exists); the voxel centres are the
//! sensor-frame points of the frame's metric grid (its layout's geometry:
//! native 0.2 m voxels, or the larger cells of a resampled layout).

use std::path::{Path, PathBuf};
use std::str::FromStr;

use super::MapError;
use crate::data::frame::read_sparse;
use crate::data::poses::{frame_poses, poses_path, radar_poses_path, TumPose};
use crate::data::{Dataset, DatasetConfig, Layout, Modality, Split};
use crate::eval::frames::{geometry, occupied_frame};
use crate::eval::GridGeometry;

/// Where a map's frames come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameSource {
    /// The radar grids.
    Radar,
    /// The training targets (LiDAR, sensor-aware).
    Target,
    /// The LiDAR grids (ground removed).
    Lidar,
    /// A `sample` predictions folder.
    Predictions(PathBuf),
}

impl FromStr for FrameSource {
    type Err = MapError;
    fn from_str(s: &str) -> Result<Self, MapError> {
        Ok(match s {
            "radar" => FrameSource::Radar,
            "target" => FrameSource::Target,
            "lidar" => FrameSource::Lidar,
            dir if Path::new(dir).is_dir() => FrameSource::Predictions(dir.into()),
            other => {
                return Err(MapError::Predictions {
                    path: other.into(),
                    problem: "neither radar, target, lidar nor a predictions folder".into(),
                })
            }
        })
    }
}

impl FrameSource {
    /// A short name for logs and tables.
    pub fn name(&self) -> String {
        match self {
            FrameSource::Radar => "radar".into(),
            FrameSource::Target => "target".into(),
            FrameSource::Lidar => "lidar".into(),
            FrameSource::Predictions(p) => p.display().to_string(),
        }
    }
}

/// The layout of a predictions folder's frames, from the grid of one of its
/// `.npz` files: the native grid is the pad layout, any other a resample.
pub fn predictions_layout(dir: &Path) -> Result<Layout, MapError> {
    let entries = std::fs::read_dir(dir).map_err(|source| MapError::Io { path: dir.to_path_buf(), source })?;
    let first = (entries.filter_map(|e| e.ok().map(|e| e.path())))
        .find(|p| p.extension().is_some_and(|x| x == "npz"))
        .ok_or_else(|| MapError::Predictions { path: dir.to_path_buf(), problem: "no .npz prediction".into() })?;
    let [h, w, z, _] = read_sparse(&first)?.shape;
    Ok(if [h, w, z] == GridGeometry::NTU4DRADLM.dims { Layout::default() } else { Layout::Resample { zhw: [z, h, w] } })
}

/// One frame, ready for [`super::VoxelMap::insert`].
#[derive(Debug, Clone, PartialEq)]
pub struct WorldFrame {
    /// Frame stem.
    pub stem: String,
    /// The sensor pose.
    pub pose: TumPose,
    /// Occupied voxel centres in the world.
    pub points: Vec<[f64; 3]>,
    /// Their occupancy probabilities.
    pub probs: Vec<f32>,
}

/// The frames of one scene of a root, in time order.
#[derive(Debug, Clone)]
pub struct SceneFrames {
    ds: Dataset,
    /// Dataset indices of the scene's frames.
    frames: Vec<usize>,
    poses: Vec<TumPose>,
    source: FrameSource,
    geom: GridGeometry,
    min_probability: f32,
}

impl SceneFrames {
    /// Opens `scene` of `root` under `layout`; predictions keep the voxels
    /// whose probability is at least `min_probability`.
    pub fn open(
        root: &Path,
        scene: &str,
        source: FrameSource,
        layout: Layout,
        min_probability: f32,
    ) -> Result<SceneFrames, MapError> {
        let cfg = DatasetConfig {
            layout,
            val_scenes: Some(vec![scene.to_string()]),
            with_lidar: source == FrameSource::Lidar,
            ..DatasetConfig::default()
        };
        let ds = Dataset::open(root, Split::Val, &cfg)?;
        let frames: Vec<usize> = (0..ds.len()).filter(|&i| ds.frames()[i].id.scene == scene).collect();
        let stems = frames.iter().map(|&i| ds.frames()[i].id.stem.parse::<usize>());
        let last = stems.clone().map(|s| s.unwrap_or(usize::MAX)).max().unwrap_or(0);
        let path = if source == FrameSource::Radar { radar_poses_path(root, scene) } else { poses_path(root, scene) };
        if stems.clone().any(|s| s.is_err()) || last == usize::MAX {
            return Err(MapError::Input(format!("{scene}: frame stems must be frame numbers (000000, ...)")));
        }
        let poses = frame_poses(&path, last + 1)?;
        let file = ds.file(frames[0], Modality::Radar)?.shape();
        let geom = geometry(file, layout).map_err(|e| MapError::Input(e.to_string()))?;
        Ok(SceneFrames { ds, frames, poses, source, geom, min_probability })
    }

    /// Frames in the scene.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// Whether the scene has no frame.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// The frames' metric grid (sensor frame).
    pub fn geometry(&self) -> &GridGeometry {
        &self.geom
    }

    /// The dataset (the scene's frames only).
    pub fn dataset(&self) -> &Dataset {
        &self.ds
    }

    /// Frame `j` of the scene in the world.
    pub fn frame(&self, j: usize) -> Result<WorldFrame, MapError> {
        let i = self.frames[j];
        let id = &self.ds.frames()[i].id;
        let pose = self.poses[id.stem.parse::<usize>().unwrap_or(0)];
        let (coords, probs) = match &self.source {
            FrameSource::Predictions(dir) => self.predicted(dir, &id.scene, &id.stem)?,
            src => {
                let m = match src {
                    FrameSource::Radar => Modality::Radar,
                    FrameSource::Lidar => Modality::Lidar,
                    _ => Modality::Target,
                };
                let set = occupied_frame(&self.ds, i, m, self.geom.dims)?;
                (set.coords().to_vec(), vec![1.0; set.len()])
            }
        };
        let points = coords.iter().map(|&c| pose.to_world(self.geom.centre(c))).collect();
        Ok(WorldFrame { stem: id.stem.clone(), pose, points, probs })
    }

    fn predicted(&self, dir: &Path, scene: &str, stem: &str) -> Result<(Vec<[u32; 3]>, Vec<f32>), MapError> {
        let path = dir.join(format!("{scene}_{stem}.npz"));
        if !path.is_file() {
            return Err(MapError::Predictions { path, problem: "missing: `sample` writes one per frame".into() });
        }
        let f = read_sparse(&path)?;
        if f.shape[..3] != self.geom.dims {
            let problem = format!(
                "grid {:?}, but the frames' layout gives {:?} (pass the same --resample)",
                &f.shape[..3],
                self.geom.dims
            );
            return Err(MapError::Predictions { path, problem });
        }
        let c = f.shape[3].max(1);
        let keep: Vec<usize> = (0..f.len()).filter(|&i| f.features[i * c] as f32 >= self.min_probability).collect();
        Ok((keep.iter().map(|&i| f.coords[i]).collect(), keep.iter().map(|&i| f.features[i * c] as f32).collect()))
    }
}
