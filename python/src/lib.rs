//! `radvox._native`: radvox's reader, loader, voxelizer, memory planner and
//! obstacle map for Python. Tensors cross as DLPack capsules over radvox's own memory
//! (no copy); `radvox/__init__.py` turns them into `torch.Tensor`s. Every
//! Rust error becomes a Python exception with the same message: `OSError`
//! when a file could not be read, `ValueError` otherwise.

mod dlpack;
mod map;

use std::error::Error as StdError;
use std::path::PathBuf;
use std::time::Duration;

use pyo3::exceptions::{PyFileNotFoundError, PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use radvox::data::loader::Epoch;
use radvox::data::voxelize::{voxelize as voxelize_cloud, GridSpec, PointCloud};
use radvox::data::{Augmentation, DatasetConfig, Layout, LoaderConfig, Modality, Split};
use radvox::memory::{self, Backend, ModelConfig, Plan, Planner, Precision, Run};
use radvox::model::{Checkpointing, UnetConfig, VaeConfig};

/// The Python exception of a radvox error: `OSError` (`FileNotFoundError`)
/// when an I/O error is among its causes, else `ValueError`; same message.
fn py_err(e: &(dyn StdError + 'static)) -> PyErr {
    let message = e.to_string();
    let mut cause: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::NotFound => PyFileNotFoundError::new_err(message),
                _ => PyOSError::new_err(message),
            };
        }
        cause = c.source();
    }
    PyValueError::new_err(message)
}

fn err<E: StdError + 'static>(e: E) -> PyErr {
    py_err(&e)
}

fn value_err(m: impl Into<String>) -> PyErr {
    PyValueError::new_err(m.into())
}

/// One split of an NTU4DRadLM_Pre tree (see `radvox::data::Dataset`).
#[pyclass(unsendable, module = "radvox._native")]
struct Dataset {
    inner: radvox::data::Dataset,
}

#[pymethods]
impl Dataset {
    #[new]
    #[pyo3(signature = (root, split = "train", resample = None, alignment = 32))]
    fn new(root: PathBuf, split: &str, resample: Option<[usize; 3]>, alignment: usize) -> PyResult<Self> {
        let split: Split = split.parse().map_err(err)?;
        let layout = match resample {
            Some(zhw) => Layout::Resample { zhw },
            None => Layout::Pad { alignment },
        };
        let cfg = DatasetConfig { layout, ..Default::default() };
        let inner = radvox::data::Dataset::open(&root, split, &cfg).map_err(err)?;
        Ok(Dataset { inner })
    }

    fn __len__(&self) -> usize {
        self.inner.len()
    }

    /// `(target, radar)` capsules of frame `i` (f16, `(C, Z, H, W)`).
    fn get(&self, py: Python<'_>, i: isize) -> PyResult<(Py<PyAny>, Py<PyAny>)> {
        let j = self.index(i)?;
        let read = |m| -> PyResult<Py<PyAny>> {
            let grid = self.inner.read(j, m).map_err(err)?;
            dlpack::export(py, grid.to_tensor().squeeze_dim(0), None)
        };
        Ok((read(Modality::Target)?, read(Modality::Radar)?))
    }

    /// `(scene, stem)` of every frame, in order.
    fn ids(&self) -> Vec<(String, String)> {
        self.inner.frames().iter().map(|f| (f.id.scene.clone(), f.id.stem.clone())).collect()
    }

    /// `(C, Z, H, W)` of frame `i` as read.
    fn shape(&self, i: usize) -> PyResult<[usize; 4]> {
        Ok(self.inner.output_shape(self.index(isize::try_from(i).unwrap_or(isize::MAX))?))
    }
}

impl Dataset {
    /// Frame `i` (negative: from the end) as an index, or `IndexError`.
    fn index(&self, i: isize) -> PyResult<usize> {
        let n = self.inner.len() as isize;
        let j = if i < 0 { i + n } else { i };
        if !(0..n).contains(&j) {
            return Err(pyo3::exceptions::PyIndexError::new_err(format!("frame {i} of {n}")));
        }
        Ok(j as usize)
    }
}

/// The bounded prefetching loader (see `radvox::data::Loader`).
#[pyclass(unsendable, module = "radvox._native")]
struct Loader {
    inner: radvox::data::Loader,
}

#[pymethods]
impl Loader {
    #[new]
    #[pyo3(signature = (dataset, batch_size = 1, shuffle = false, seed = 0, num_workers = 1, prefetch = 2,
        rank = 0, world_size = 1, augmentation = None, drop_last = false, load_radar = true, read_timeout = 120.0))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        dataset: &Dataset,
        batch_size: usize,
        shuffle: bool,
        seed: u64,
        num_workers: usize,
        prefetch: usize,
        rank: usize,
        world_size: usize,
        augmentation: Option<&str>,
        drop_last: bool,
        load_radar: bool,
        read_timeout: Option<f64>,
    ) -> PyResult<Self> {
        let augmentation = augmentation.map(Augmentation::from_json).transpose().map_err(err)?;
        if let Some(t) = read_timeout.filter(|t| !(*t > 0.0 && t.is_finite())) {
            return Err(value_err(format!("read_timeout must be > 0 seconds, got {t}")));
        }
        let cfg = LoaderConfig {
            batch_size,
            shuffle,
            seed,
            drop_last,
            num_workers,
            prefetch,
            rank,
            world_size,
            load_radar,
            augmentation,
            read_timeout: read_timeout.map(Duration::from_secs_f64),
            ..Default::default()
        };
        let inner = radvox::data::Loader::new(dataset.inner.clone(), cfg).map_err(err)?;
        Ok(Loader { inner })
    }

    fn __len__(&self) -> usize {
        self.inner.len()
    }

    /// The batches of `epoch`, from batch `start`.
    #[pyo3(signature = (epoch, start = 0))]
    fn epoch(&self, epoch: u64, start: usize) -> EpochIter {
        EpochIter { inner: Some(self.inner.epoch_from(epoch, start)) }
    }

    /// Frame indices of this rank for `epoch`, in order.
    fn order(&self, epoch: u64) -> Vec<usize> {
        self.inner.epoch_order(epoch)
    }

    /// The buffer pool's counters.
    fn pool_stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.inner.pool_stats();
        let d = PyDict::new(py);
        d.set_item("capacity", s.capacity)?;
        d.set_item("allocated", s.allocated)?;
        d.set_item("reused", s.reused)?;
        d.set_item("escaped", s.escaped)?;
        d.set_item("reclaimed", s.reclaimed)?;
        d.set_item("max_outstanding", s.max_outstanding)?;
        d.set_item("outstanding", s.outstanding)?;
        Ok(d)
    }

    /// `(C, Z, H, W)` of every sample.
    fn sample_shape(&self) -> [usize; 4] {
        self.inner.sample_shape()
    }
}

/// `(target capsule, radar capsule, frame ids)`.
type PyBatch = (Py<PyAny>, Py<PyAny>, Vec<String>);

/// One epoch's batches; `close()` (or dropping it) stops the workers and
/// returns every buffer.
#[pyclass(unsendable, module = "radvox._native")]
struct EpochIter {
    inner: Option<Epoch>,
}

#[pymethods]
impl EpochIter {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    /// `(target, radar, ids)`: capsules over the pool's buffers (no copy) and
    /// the frames' `"scene/stem"`; the GIL is released while waiting. The
    /// batch goes back at once: its buffers, shared by the capsules, stay
    /// parked in the pool until PyTorch frees the tensors (then they are
    /// reused, the workers woken), so a kept batch is never overwritten.
    fn __next__(&mut self, py: Python<'_>) -> PyResult<Option<PyBatch>> {
        let Some(epoch) = self.inner.as_mut() else { return Ok(None) };
        let next = py.detach(|| epoch.next());
        let batch = match next {
            None => {
                self.inner = None;
                return Ok(None);
            }
            Some(b) => b.map_err(err)?,
        };
        let ids = batch.ids.iter().map(|i| i.to_string()).collect();
        let t = dlpack::export(py, batch.target.shallow_clone(), batch.waker())?;
        let r = dlpack::export(py, batch.radar.shallow_clone(), batch.waker())?;
        drop(batch); // returned to the pool, which sees the capsules' views
        Ok(Some((t, r, ids)))
    }

    /// Stops the epoch now: workers end, unconsumed buffers return to the pool.
    fn close(&mut self) {
        self.inner = None;
    }
}

/// Voxelizes an `(N, C)` float32 point cloud (rows of `x, y, z, ...`, as
/// little-endian bytes) into NTU4DRadLM_Pre's grid: `(coords (M, 3) int64
/// row-major, features (M, 4) float32 row-major, stats dict)`.
#[pyfunction]
#[pyo3(signature = (points, cols, range = None, voxel = None))]
fn voxelize<'py>(
    py: Python<'py>,
    points: &[u8],
    cols: usize,
    range: Option<[f32; 6]>,
    voxel: Option<f32>,
) -> PyResult<(Vec<i64>, Vec<f32>, Bound<'py, PyDict>)> {
    if cols == 0 || !points.len().is_multiple_of(4 * cols) {
        return Err(value_err(format!("points: {} bytes are not rows of {cols} float32", points.len())));
    }
    let data: Vec<f32> = points.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    let cloud = PointCloud::from_vec(cols, data).map_err(err)?;
    let d = GridSpec::default();
    let spec = match (range, voxel) {
        (None, None) => d,
        (r, v) => {
            let default_range = [d.min[0], d.min[1], d.min[2], d.max[0], d.max[1], d.max[2]];
            GridSpec::from_range(r.unwrap_or(default_range), v.unwrap_or(d.voxel)).map_err(err)?
        }
    };
    let (grid, stats) = voxelize_cloud(&cloud, &spec).map_err(err)?;
    let d = PyDict::new(py);
    d.set_item("points", stats.points_in)?;
    d.set_item("out_of_range", stats.dropped_out_of_range)?;
    d.set_item("non_finite", stats.dropped_non_finite)?;
    d.set_item("occupied", stats.occupied)?;
    d.set_item("shape", grid.shape.to_vec())?;
    Ok((grid.coords_i64(), grid.features.clone(), d))
}

fn model_config(model: &str) -> PyResult<ModelConfig> {
    match model {
        "unet" | "latent_unet" => Ok(ModelConfig::Unet(UnetConfig::default())),
        name => VaeConfig::named(name).map(ModelConfig::Vae).map_err(err),
    }
}

/// A sparse preset planned from the worst training frame of `root` (a scan
/// of its site counts), with the root's grid.
fn sparse_model(name: &str, root: Option<&str>) -> PyResult<(ModelConfig, [i64; 3])> {
    let Some(root) = root else {
        return Err(value_err(format!(
            "{name} is planned from the frames' occupied voxels: pass dataset_dir (a root whose training frames it scans)"
        )));
    };
    let vae = radvox::model::sparse::SparseVaeConfig::named(name).map_err(err)?;
    let ds = radvox::Dataset::open(root, Split::Train, &DatasetConfig::default()).map_err(err)?;
    let sites = radvox::train::sparse_vae::scan_sites(&ds, &vae).map_err(err)?;
    let s = ds.output_shape(0);
    let model = ModelConfig::SparseVae(Box::new(memory::SparseModel { vae, sites }));
    Ok((model, [s[1] as i64, s[2] as i64, s[3] as i64]))
}

fn plan_dict<'py>(py: Python<'py>, p: &Plan) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("model", p.run.model.name())?;
    d.set_item("grid", p.run.grid.to_vec())?;
    d.set_item("batch", p.run.batch)?;
    d.set_item("precision", p.run.precision.to_string())?;
    d.set_item("checkpointing", p.run.checkpointing.to_string())?;
    d.set_item("backend", format!("{:?}", p.backend))?;
    d.set_item("parameter_count", p.parameter_count)?;
    for (k, v) in [
        ("params", p.params),
        ("grads", p.grads),
        ("optimizer", p.optimizer),
        ("inputs", p.inputs),
        ("amp_weights", p.amp_weights),
        ("activations", p.activations),
        ("transient", p.transient),
        ("loader", p.loader),
        ("buckets", p.buckets),
        ("runtime", p.runtime),
        ("total", p.total()),
    ] {
        d.set_item(k, v)?;
    }
    d.set_item("peak_at", &p.peak_at)?;
    Ok(d)
}

fn run_of(
    model: &str,
    grid: [i64; 3],
    batch: usize,
    precision: &str,
    checkpointing: &str,
    backend: &str,
    dataset_dir: Option<&str>,
) -> PyResult<(Planner, Run)> {
    let precision = match precision {
        "f32" => Precision::F32,
        "amp" => Precision::Amp,
        p => return Err(value_err(format!("precision {p:?}: use \"f32\" or \"amp\""))),
    };
    let checkpointing: Checkpointing = checkpointing.parse().map_err(|e| value_err(format!("checkpointing: {e}")))?;
    let backend = match backend {
        "cuda" => Backend::Cuda,
        "cpu" => Backend::cpu(),
        b => return Err(value_err(format!("backend {b:?}: use \"cuda\" or \"cpu\""))),
    };
    let (model, grid) = if radvox::model::sparse::config::SPARSE_PRESETS.contains(&model) {
        sparse_model(model, dataset_dir)?
    } else if dataset_dir.is_some() {
        return Err(value_err(format!("dataset_dir is for the sparse presets; {model} is planned from the grid")));
    } else {
        (model_config(model)?, grid)
    };
    let run = Run { model, grid, batch, precision, checkpointing };
    Ok((Planner::new(backend), run))
}

/// The memory plan of one training step (bytes, by part) as a dict.
#[pyfunction]
#[pyo3(signature = (model = "ultra_lightweight", grid = [96, 608, 224], batch = 1, precision = "f32",
    checkpointing = "off", backend = "cuda", dataset_dir = None))]
#[allow(clippy::too_many_arguments)]
fn plan<'py>(
    py: Python<'py>,
    model: &str,
    grid: [i64; 3],
    batch: usize,
    precision: &str,
    checkpointing: &str,
    backend: &str,
    dataset_dir: Option<&str>,
) -> PyResult<Bound<'py, PyDict>> {
    let (planner, run) = run_of(model, grid, batch, precision, checkpointing, backend, dataset_dir)?;
    let p = planner.plan(&run).map_err(err)?;
    plan_dict(py, &p)
}

/// Whether a step fits `budget_gb`, the fewest changes that make it fit and
/// the largest configuration that does, as a dict of plans.
#[pyfunction]
#[pyo3(signature = (budget_gb, model = "ultra_lightweight", grid = [96, 608, 224], batch = 1, precision = "f32",
    checkpointing = "off", backend = "cuda", dataset_dir = None))]
#[allow(clippy::too_many_arguments)]
fn fit<'py>(
    py: Python<'py>,
    budget_gb: f64,
    model: &str,
    grid: [i64; 3],
    batch: usize,
    precision: &str,
    checkpointing: &str,
    backend: &str,
    dataset_dir: Option<&str>,
) -> PyResult<Bound<'py, PyDict>> {
    if !(budget_gb > 0.0 && budget_gb.is_finite()) {
        return Err(value_err(format!("budget_gb must be > 0, got {budget_gb}")));
    }
    let (planner, run) = run_of(model, grid, batch, precision, checkpointing, backend, dataset_dir)?;
    let f = memory::fit((budget_gb * (1u64 << 30) as f64) as u64, &planner, &run).map_err(err)?;
    let d = PyDict::new(py);
    d.set_item("fits", f.fits)?;
    d.set_item("requested", plan_dict(py, &f.requested)?)?;
    match &f.suggestion {
        Some((changes, p)) => {
            let c: Vec<String> = changes.iter().map(|c| c.to_string()).collect();
            d.set_item("changes", PyList::new(py, c)?)?;
            d.set_item("suggested", plan_dict(py, p)?)?;
        }
        None => {
            d.set_item("changes", PyList::empty(py))?;
            d.set_item("suggested", py.None())?;
        }
    }
    match &f.largest {
        Some(p) => d.set_item("largest", plan_dict(py, p)?)?,
        None => d.set_item("largest", py.None())?,
    }
    Ok(d)
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Dataset>()?;
    m.add_class::<Loader>()?;
    m.add_class::<EpochIter>()?;
    m.add_function(wrap_pyfunction!(voxelize, m)?)?;
    m.add_function(wrap_pyfunction!(plan, m)?)?;
    m.add_function(wrap_pyfunction!(fit, m)?)?;
    m.add_class::<map::Map>()?;
    m.add_function(wrap_pyfunction!(map::scene_frames, m)?)?;
    Ok(())
}
