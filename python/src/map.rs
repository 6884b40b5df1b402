//! `radvox._native.Map` and `scene_frames`: the streaming obstacle map
//! (`radvox::map`) for Python. Arrays cross as little-endian bytes
//! (`radvox/map.py` makes and reads them with numpy).

use std::path::PathBuf;

use pyo3::prelude::*;
use pyo3::types::PyDict;
use radvox::data::Layout;
use radvox::map::export::{write_bev, write_ply};
use radvox::map::{
    DempsterShafer, Evidence, FrameSource, LogOdds, MapConfig, Nearest, Observation, SceneFrames, VoxelMap,
};

use crate::{err, value_err};

fn f64s(b: &[u8], what: &str) -> PyResult<Vec<f64>> {
    if !b.len().is_multiple_of(8) {
        return Err(value_err(format!("{what}: {} bytes are not float64 values", b.len())));
    }
    Ok(b.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes"))).collect())
}

fn points(b: &[u8], what: &str) -> PyResult<Vec<[f64; 3]>> {
    let v = f64s(b, what)?;
    if !v.len().is_multiple_of(3) {
        return Err(value_err(format!("{what}: {} values are not rows of x, y, z", v.len())));
    }
    Ok(v.chunks_exact(3).map(|c| [c[0], c[1], c[2]]).collect())
}

fn nearest_tuple(n: Option<Nearest>) -> Option<(f64, [i32; 3], f64)> {
    n.map(|n| (n.distance, n.voxel, n.probability))
}

/// A streaming probabilistic voxel map (see `radvox::map::VoxelMap`).
#[pyclass(unsendable, module = "radvox._native")]
pub struct Map {
    inner: VoxelMap,
}

#[pymethods]
impl Map {
    #[new]
    #[pyo3(signature = (voxel = 0.2, model = "log_odds", decay_s = None, max_range = None, window = Some(200.0), threshold = 0.5))]
    fn new(
        voxel: f64,
        model: &str,
        decay_s: Option<f64>,
        max_range: Option<f64>,
        window: Option<f64>,
        threshold: f64,
    ) -> PyResult<Self> {
        let evidence = match model {
            "log_odds" => Evidence::LogOdds(LogOdds::default()),
            "dempster_shafer" => Evidence::DempsterShafer(DempsterShafer::default()),
            other => return Err(value_err(format!("model {other:?}: log_odds or dempster_shafer"))),
        };
        let cfg = MapConfig { voxel, evidence, decay_s, max_range, window, threshold };
        Ok(Map { inner: VoxelMap::new(cfg).map_err(err)? })
    }

    /// Inserts one frame: world points (float64 bytes, rows of x, y, z),
    /// the sensor position, the time (s), optional float32 probabilities.
    #[pyo3(signature = (points, origin, time, probs = None, reliability = 1.0))]
    fn insert<'py>(
        &mut self,
        py: Python<'py>,
        points: &[u8],
        origin: [f64; 3],
        time: f64,
        probs: Option<&[u8]>,
        reliability: f64,
    ) -> PyResult<Bound<'py, PyDict>> {
        let pts = self::points(points, "points")?;
        let probs: Option<Vec<f32>> =
            probs.map(|b| b.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes"))).collect());
        let obs = Observation { time, origin, points: &pts, probs: probs.as_deref(), reliability };
        let s = self.inner.insert(&obs).map_err(err)?;
        let d = PyDict::new(py);
        d.set_item("points", s.points)?;
        d.set_item("occupied", s.occupied)?;
        d.set_item("free", s.free)?;
        d.set_item("traversed", s.traversed)?;
        d.set_item("evicted", s.evicted)?;
        d.set_item("seconds", s.seconds)?;
        Ok(d)
    }

    /// `(keys, probabilities)` of the voxels above the threshold: keys flat
    /// int32 `(M * 3)`, sorted.
    fn occupied(&self) -> (Vec<i32>, Vec<f64>) {
        let occ = self.inner.occupied();
        (occ.iter().flat_map(|v| v.0).collect(), occ.iter().map(|v| v.1).collect())
    }

    /// The occupancy probability now at each world point (0.5 if unknown).
    fn probability(&self, points: &[u8]) -> PyResult<Vec<f64>> {
        let voxel = self.inner.config().voxel;
        Ok(self::points(points, "points")?
            .iter()
            .map(|&p| self.inner.probability(radvox::map::ray::key(p, voxel)))
            .collect())
    }

    /// `(distance, voxel, probability)` of the occupied voxel nearest to
    /// `point` within `max_dist`, or `None`.
    fn nearest(&self, point: [f64; 3], max_dist: f64) -> Option<(f64, [i32; 3], f64)> {
        nearest_tuple(self.inner.nearest(point, max_dist))
    }

    /// `(nearest or None, known share)` for the segment `a -> b`.
    fn clearance(&self, a: [f64; 3], b: [f64; 3], max_dist: f64) -> (Option<(f64, [i32; 3], f64)>, f64) {
        let c = self.inner.clearance(a, b, max_dist);
        (nearest_tuple(c.nearest), c.known)
    }

    /// The DEM: `(columns flat int32 (K * 2), mean, variance, frames)`.
    fn dem(&self) -> (Vec<i32>, Vec<f64>, Vec<f64>, Vec<u32>) {
        let mut cols: Vec<_> = self.inner.dem().iter().map(|(k, c)| (k, *c)).collect();
        cols.sort_unstable_by_key(|c| c.0);
        (
            cols.iter().flat_map(|c| [c.0 .0, c.0 .1]).collect(),
            cols.iter().map(|c| c.1.mean).collect(),
            cols.iter().map(|c| c.1.variance()).collect(),
            cols.iter().map(|c| c.1.frames).collect(),
        )
    }

    /// Writes the occupied voxels as `.ply`; returns how many.
    fn write_ply(&self, path: PathBuf) -> PyResult<usize> {
        write_ply(&self.inner, &path).map_err(err)
    }

    /// Writes the bird's-eye PNG (probability and elevation).
    #[pyo3(signature = (path, title = "MAP"))]
    fn write_bev(&self, path: PathBuf, title: &str) -> PyResult<()> {
        write_bev(&self.inner, &path, title).map_err(err)
    }

    /// Blocks held.
    #[getter]
    fn blocks(&self) -> usize {
        self.inner.blocks().len()
    }

    /// Heap bytes held.
    #[getter]
    fn bytes(&self) -> usize {
        self.inner.bytes()
    }

    /// Frames inserted.
    #[getter]
    fn frames(&self) -> u32 {
        self.inner.frames()
    }

    /// Voxel edge (m).
    #[getter]
    fn voxel(&self) -> f64 {
        self.inner.config().voxel
    }
}

/// One frame for Python: `(stem, time, origin, points float64 bytes,
/// probabilities float32 bytes)`.
type PyFrame = (String, f64, [f64; 3], Vec<u8>, Vec<u8>);

/// The frames of `scene` of `root` in the world ([`PyFrame`]s).
#[pyfunction]
#[pyo3(signature = (root, scene, source = "radar", resample = None, min_probability = 0.5))]
pub fn scene_frames(
    root: PathBuf,
    scene: &str,
    source: &str,
    resample: Option<[usize; 3]>,
    min_probability: f32,
) -> PyResult<Vec<PyFrame>> {
    let source: FrameSource = source.parse().map_err(err)?;
    let layout = resample.map_or(Layout::default(), |zhw| Layout::Resample { zhw });
    let frames = SceneFrames::open(&root, scene, source, layout, min_probability).map_err(err)?;
    (0..frames.len())
        .map(|j| {
            let f = frames.frame(j).map_err(err)?;
            let pts: Vec<u8> = f.points.iter().flatten().flat_map(|v| v.to_le_bytes()).collect();
            let probs: Vec<u8> = f.probs.iter().flat_map(|v| v.to_le_bytes()).collect();
            Ok((f.stem, f.pose.stamp, f.pose.t, pts, probs))
        })
        .collect()
}
