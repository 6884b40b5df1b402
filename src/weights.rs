//! Safetensors files: strict loading into a `VarStore` (every key, every
//! shape, nothing extra; as candle's VarBuilder) and atomic saving with
//! metadata (temp file, fsync, rename: a crash never leaves a torn file).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, SafeTensors, View};
use tch::{nn, Kind, Tensor};

/// Errors of weight files.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// Not a valid safetensors file.
    #[error("{path}: not a valid safetensors file: {reason}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        reason: String,
    },
    /// The file's tensors do not match the model's variables.
    #[error("{path}: weights do not match the model: {problems}")]
    Mismatch {
        /// The file.
        path: PathBuf,
        /// Missing, unexpected and mis-shaped tensors, listed.
        problems: String,
    },
}

/// Tensors and metadata read from a safetensors file.
pub struct WeightFile {
    /// Tensors by name.
    pub tensors: BTreeMap<String, Tensor>,
    /// The `__metadata__` map.
    pub metadata: HashMap<String, String>,
}

/// Reads every tensor and the metadata of a safetensors file.
pub fn read(path: &Path) -> Result<WeightFile, WeightsError> {
    let bytes = std::fs::read(path).map_err(|source| WeightsError::Io { path: path.into(), source })?;
    let format = |e: safetensors::SafeTensorError| WeightsError::Format { path: path.into(), reason: format!("{e:?}") };
    let (_, meta) = SafeTensors::read_metadata(&bytes).map_err(format)?;
    let st = SafeTensors::deserialize(&bytes).map_err(format)?;
    let mut tensors = BTreeMap::new();
    for (name, view) in st.tensors() {
        let kind = match view.dtype() {
            Dtype::F32 => Kind::Float,
            Dtype::F16 => Kind::Half,
            Dtype::BF16 => Kind::BFloat16,
            Dtype::F64 => Kind::Double,
            Dtype::I64 => Kind::Int64,
            other => {
                return Err(WeightsError::Format { path: path.into(), reason: format!("{name}: dtype {other:?}") })
            }
        };
        let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
        tensors.insert(name, Tensor::from_data_size(view.data(), &shape, kind));
    }
    Ok(WeightFile { tensors, metadata: meta.metadata().clone().unwrap_or_default() })
}

/// Names of `vs`'s variables with `prefix.` stripped, for those under it.
fn variables(vs: &nn::VarStore, prefix: &str) -> BTreeMap<String, Tensor> {
    vs.variables()
        .into_iter()
        .filter_map(|(k, t)| match prefix {
            "" => Some((k, t)),
            p => k.strip_prefix(&format!("{p}.")).map(|s| (s.to_string(), t)),
        })
        .collect()
}

/// Copies `tensors` into the variables of `vs` (those under `prefix`),
/// refusing any missing, extra or mis-shaped tensor, all listed at once.
pub fn load_into(
    vs: &nn::VarStore,
    prefix: &str,
    tensors: &BTreeMap<String, Tensor>,
    path: &Path,
) -> Result<(), WeightsError> {
    let vars = variables(vs, prefix);
    let mut problems = Vec::new();
    for (name, var) in &vars {
        match tensors.get(name) {
            None => problems.push(format!("missing {name}")),
            Some(t) if t.size() != var.size() => {
                problems.push(format!("{name} has shape {:?}, model expects {:?}", t.size(), var.size()))
            }
            Some(_) => {}
        }
    }
    problems.extend(tensors.keys().filter(|k| !vars.contains_key(*k)).map(|k| format!("unexpected {k}")));
    if !problems.is_empty() {
        return Err(WeightsError::Mismatch { path: path.into(), problems: problems.join(", ") });
    }
    tch::no_grad(|| {
        for (name, var) in &vars {
            let mut var = var.shallow_clone();
            var.copy_(&tensors[name].to_device(var.device()).to_kind(var.kind()));
        }
    });
    Ok(())
}

/// Strictly loads a safetensors file into all of `vs`.
pub fn load_strict(vs: &nn::VarStore, path: &Path) -> Result<HashMap<String, String>, WeightsError> {
    let file = read(path)?;
    load_into(vs, "", &file.tensors, path)?;
    Ok(file.metadata)
}

struct Bytes {
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl View for &Bytes {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        (&self.data[..]).into()
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

fn to_bytes(t: &Tensor) -> Bytes {
    let t = t.to_device(tch::Device::Cpu).contiguous();
    let (t, dtype) = match t.kind() {
        Kind::Half => (t, Dtype::F16),
        Kind::BFloat16 => (t, Dtype::BF16),
        Kind::Double => (t, Dtype::F64),
        Kind::Int64 => (t, Dtype::I64),
        _ => (t.to_kind(Kind::Float), Dtype::F32),
    };
    let n = t.numel() * t.kind().elt_size_in_bytes();
    let mut data = vec![0u8; n];
    t.copy_data_u8(&mut data, t.numel());
    Bytes { dtype, shape: t.size().iter().map(|&d| d as usize).collect(), data }
}

/// Writes tensors and metadata to `path` atomically: a temp file in the
/// same directory, fsync, then rename over `path`.
pub fn save_atomic(
    path: &Path,
    tensors: &[(String, Tensor)],
    metadata: &HashMap<String, String>,
) -> Result<(), WeightsError> {
    let io = |source| WeightsError::Io { path: path.into(), source };
    let bytes: Vec<(String, Bytes)> = tensors.iter().map(|(n, t)| (n.clone(), to_bytes(t))).collect();
    let views: Vec<(&str, &Bytes)> = bytes.iter().map(|(n, b)| (n.as_str(), b)).collect();
    let meta = (!metadata.is_empty()).then(|| metadata.clone());
    let data = safetensors::tensor::serialize(views, &meta)
        .map_err(|e| WeightsError::Format { path: path.into(), reason: format!("{e:?}") })?;
    write_atomic(path, &data).map_err(io)
}

/// Atomically replaces `path` with `data`.
pub fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        std::io::Write::write_all(&mut f, data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// All variables of `vs` as `(name, tensor)` pairs, sorted by name.
pub fn named_variables(vs: &nn::VarStore) -> Vec<(String, Tensor)> {
    variables(vs, "").into_iter().collect()
}
