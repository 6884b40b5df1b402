//! Safetensors files: strict loading into a `VarStore` (every key, every
//! shape, nothing extra, every value finite; as candle's VarBuilder), and a
//! deterministic atomic writer (tensors and metadata in sorted order, so the
//! same content gives the same bytes) that records a content checksum,
//! verified whenever the file is read.

use std::collections::BTreeMap;
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors};
use tch::{nn, Kind, Tensor};

use super::FormatError;

/// Metadata key of the content checksum.
pub const CHECKSUM_KEY: &str = "checksum";

/// Tensors and metadata read from a safetensors file.
pub struct WeightFile {
    /// Tensors by name.
    pub tensors: BTreeMap<String, Tensor>,
    /// The `__metadata__` map.
    pub metadata: BTreeMap<String, String>,
}

/// 64-bit FNV-1a, fed incrementally.
#[derive(Debug, Clone, Copy)]
pub struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    /// Mixes in `bytes`.
    pub fn eat(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= *b as u64;
            self.0 = self.0.wrapping_mul(0x100_0000_01b3);
        }
    }
    /// The hash as 16 hex digits.
    pub fn hex(self) -> String {
        format!("{:016x}", self.0)
    }
}

fn kind_of(dtype: Dtype) -> Option<Kind> {
    Some(match dtype {
        Dtype::F32 => Kind::Float,
        Dtype::F16 => Kind::Half,
        Dtype::BF16 => Kind::BFloat16,
        Dtype::F64 => Kind::Double,
        Dtype::I64 => Kind::Int64,
        _ => return None,
    })
}

fn dtype_of(kind: Kind) -> (Kind, &'static str) {
    match kind {
        Kind::Half => (Kind::Half, "F16"),
        Kind::BFloat16 => (Kind::BFloat16, "BF16"),
        Kind::Double => (Kind::Double, "F64"),
        Kind::Int64 => (Kind::Int64, "I64"),
        _ => (Kind::Float, "F32"),
    }
}

/// The checksum of named tensors given as `(name, dtype, shape, bytes)`.
fn checksum<'a>(items: impl Iterator<Item = (&'a str, &'a str, Vec<usize>, &'a [u8])>) -> String {
    let mut h = Fnv::default();
    for (name, dtype, shape, data) in items {
        h.eat(name.as_bytes());
        h.eat(dtype.as_bytes());
        for d in shape {
            h.eat(&(d as u64).to_le_bytes());
        }
        h.eat(data);
    }
    format!("fnv1a64:{}", h.hex())
}

/// Reads every tensor and the metadata of a safetensors file, verifying the
/// content checksum when the file records one.
pub fn read(path: &Path) -> Result<WeightFile, FormatError> {
    let mut file = super::open_regular(path)?;
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut file, &mut bytes).map_err(|e| FormatError::io(path, e))?;
    let format =
        |e: safetensors::SafeTensorError| FormatError::Safetensors { path: path.into(), reason: format!("{e:?}") };
    let (_, meta) = SafeTensors::read_metadata(&bytes).map_err(format)?;
    let st = SafeTensors::deserialize(&bytes).map_err(format)?;
    let metadata: BTreeMap<String, String> = meta.metadata().clone().unwrap_or_default().into_iter().collect();
    let mut views = st.tensors();
    views.sort_by(|a, b| a.0.cmp(&b.0));
    if let Some(expected) = metadata.get(CHECKSUM_KEY) {
        let actual = checksum(views.iter().map(|(n, v)| {
            let name = dtype_of(kind_of(v.dtype()).unwrap_or(Kind::Float)).1;
            (n.as_str(), name, v.shape().to_vec(), v.data())
        }));
        if &actual != expected {
            return Err(FormatError::Checksum { path: path.into(), expected: expected.clone(), actual });
        }
    }
    let mut tensors = BTreeMap::new();
    for (name, view) in views {
        let kind = kind_of(view.dtype()).ok_or_else(|| FormatError::Safetensors {
            path: path.into(),
            reason: format!("{name}: dtype {:?} is not one radvox writes", view.dtype()),
        })?;
        let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
        tensors.insert(name, Tensor::from_data_size(view.data(), &shape, kind));
    }
    Ok(WeightFile { tensors, metadata })
}

/// Refuses a floating-point tensor holding NaN or infinities, naming it.
pub fn check_finite<'a>(
    path: &Path,
    tensors: impl IntoIterator<Item = (&'a String, &'a Tensor)>,
) -> Result<(), FormatError> {
    for (name, t) in tensors {
        if t.is_floating_point() && t.numel() > 0 {
            let bad = t.isfinite().logical_not().sum(Kind::Int64).int64_value(&[]);
            if bad > 0 {
                return Err(FormatError::NonFinite { path: path.into(), tensor: name.clone(), count: bad });
            }
        }
    }
    Ok(())
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
/// refusing any missing, extra, mis-shaped or non-finite tensor (all the
/// mismatches listed at once).
pub fn load_into(
    vs: &nn::VarStore,
    prefix: &str,
    tensors: &BTreeMap<String, Tensor>,
    path: &Path,
) -> Result<(), FormatError> {
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
        return Err(FormatError::Mismatch { path: path.into(), problems: problems.join(", ") });
    }
    check_finite(path, tensors)?;
    tch::no_grad(|| {
        for (name, var) in &vars {
            let mut var = var.shallow_clone();
            var.copy_(&tensors[name].to_device(var.device()).to_kind(var.kind()));
        }
    });
    Ok(())
}

/// Strictly loads a safetensors file into all of `vs`; returns its metadata.
pub fn load_strict(vs: &nn::VarStore, path: &Path) -> Result<BTreeMap<String, String>, FormatError> {
    let file = read(path)?;
    load_into(vs, "", &file.tensors, path)?;
    Ok(file.metadata)
}

fn host_bytes(t: &Tensor) -> (Vec<usize>, &'static str, Vec<u8>) {
    let (kind, name) = dtype_of(t.kind());
    let t = t.to_device(tch::Device::Cpu).to_kind(kind).contiguous();
    let mut data = vec![0u8; t.numel() * kind.elt_size_in_bytes()];
    t.copy_data_u8(&mut data, t.numel());
    (t.size().iter().map(|&d| d as usize).collect(), name, data)
}

/// Serialises tensors and metadata (a content checksum added) in sorted
/// order: the same tensors and metadata always give the same bytes.
pub fn serialize(tensors: &[(String, Tensor)], metadata: &BTreeMap<String, String>) -> Vec<u8> {
    let mut items: Vec<(String, Vec<usize>, &'static str, Vec<u8>)> = tensors
        .iter()
        .map(|(n, t)| {
            let (shape, dtype, data) = host_bytes(t);
            (n.clone(), shape, dtype, data)
        })
        .collect();
    items.sort_by(|a, b| a.0.cmp(&b.0));
    let mut meta: serde_json::Map<String, serde_json::Value> =
        metadata.iter().map(|(k, v)| (k.clone(), v.clone().into())).collect();
    let sum = checksum(items.iter().map(|(n, s, d, b)| (n.as_str(), *d, s.clone(), b.as_slice())));
    meta.insert(CHECKSUM_KEY.into(), sum.into());
    // serde_json's Map is ordered by key: the header is deterministic.
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), meta.into());
    let mut offset = 0usize;
    for (name, shape, dtype, data) in &items {
        let entry =
            serde_json::json!({ "dtype": dtype, "shape": shape, "data_offsets": [offset, offset + data.len()] });
        header.insert(name.clone(), entry);
        offset += data.len();
    }
    let mut text = serde_json::to_string(&serde_json::Value::Object(header)).expect("JSON of strings and numbers");
    while !text.len().is_multiple_of(8) {
        text.push(' '); // the format pads the header to 8 bytes with spaces
    }
    let mut out = Vec::with_capacity(8 + text.len() + offset);
    out.extend_from_slice(&(text.len() as u64).to_le_bytes());
    out.extend_from_slice(text.as_bytes());
    for (_, _, _, data) in &items {
        out.extend_from_slice(data);
    }
    out
}

/// Writes tensors and metadata to `path` atomically (temp file, fsync,
/// rename), with a content checksum.
pub fn save_atomic(
    path: &Path,
    tensors: &[(String, Tensor)],
    metadata: &BTreeMap<String, String>,
) -> Result<(), FormatError> {
    super::write_atomic(path, &serialize(tensors, metadata)).map_err(|e| FormatError::io(path, e))
}

/// All variables of `vs` as `(name, tensor)` pairs, sorted by name.
pub fn named_variables(vs: &nn::VarStore) -> Vec<(String, Tensor)> {
    variables(vs, "").into_iter().collect()
}

/// FNV-1a over the names, shapes and float32 values of named tensors: the
/// identity of a model's weights (ties latent caches and LDM runs to the
/// VAE that made their latents).
pub fn weights_hash(tensors: &BTreeMap<String, Tensor>) -> String {
    let mut h = Fnv::default();
    for (name, t) in tensors {
        h.eat(name.as_bytes());
        for d in t.size() {
            h.eat(&d.to_le_bytes());
        }
        let t = t.to_kind(Kind::Float).contiguous();
        let mut v = vec![0f32; t.numel()];
        let n = v.len();
        t.copy_data(&mut v, n);
        for x in v {
            h.eat(&x.to_le_bytes());
        }
    }
    h.hex()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<(String, Tensor)> {
        vec![
            ("b.weight".into(), Tensor::from_slice(&[1.0f32, 2.0, 3.0]).view([3, 1])),
            ("a.bias".into(), Tensor::from_slice(&[0.5f64])),
            ("c.half".into(), Tensor::from_slice(&[1.0f32, -1.0]).to_kind(Kind::Half)),
        ]
    }

    #[test]
    fn same_content_same_bytes_whatever_the_order() {
        let meta: BTreeMap<String, String> = [("z".to_string(), "1".to_string()), ("a".into(), "2".into())].into();
        let mut rev = sample();
        rev.reverse();
        assert_eq!(serialize(&sample(), &meta), serialize(&rev, &meta));
    }

    #[test]
    fn round_trip_and_checksum_catches_a_flipped_bit() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("w.safetensors");
        save_atomic(&p, &sample(), &BTreeMap::from([("k".to_string(), "v".to_string())])).unwrap();
        let f = read(&p).unwrap();
        assert_eq!(f.metadata["k"], "v");
        assert!(f.metadata[CHECKSUM_KEY].starts_with("fnv1a64:"));
        assert!(f.tensors["b.weight"].equal(&sample()[0].1));
        assert_eq!(f.tensors["c.half"].kind(), Kind::Half);
        let mut bytes = std::fs::read(&p).unwrap();
        let last = bytes.len() - 3;
        bytes[last] ^= 0x10; // a bit of the last tensor's data
        std::fs::write(&p, &bytes).unwrap();
        assert!(matches!(read(&p), Err(FormatError::Checksum { .. })), "flipped bit detected");
    }

    #[test]
    fn non_finite_values_are_named() {
        let nan: BTreeMap<String, Tensor> =
            [("layer.weight".to_string(), Tensor::from_slice(&[1.0f32, f32::NAN, f32::INFINITY]))].into();
        match check_finite(Path::new("x.safetensors"), &nan) {
            Err(FormatError::NonFinite { tensor, count, .. }) => {
                assert_eq!((tensor.as_str(), count), ("layer.weight", 2))
            }
            other => panic!("{other:?}"),
        }
    }
}
