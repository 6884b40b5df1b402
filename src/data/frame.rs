//! One NTU4DRadLM_Pre frame file and the rules of its two encodings (see
//! `shared/spec/ntu4dradlm_pre.md`): a dense `(H, W, Z, C)` float `.npy`,
//! memory-mapped; or a sparse `.npz` with `coords` `(N, 3)` (any integer
//! dtype), `features` `(N, C)` (f2/f4/f8) and `shape` `(4,)`, in C or
//! Fortran order, each member. Coordinates must lie in the grid and be
//! distinct; values must be finite and fit float16.

use std::fmt;
use std::path::{Path, PathBuf};

use half::f16;

use super::crop::{self, CropAt};
use super::layout::{self, DenseView, Layout};
use super::resample::Reduce;
use super::DataError;
use crate::io::npy::{encode_npy, MappedNpy, NpyHeader, Scalar};
use crate::io::npz::{write_npz, NpzArchive};
use crate::io::{FormatError, Source};

/// Most channels a frame may have (the format has 4); bounds the output size.
pub const MAX_CHANNELS: usize = 64;
/// Largest spatial dimension accepted (the real grid's largest is 600).
pub const MAX_DIM: usize = 1 << 16;

const GRID_RULE: &str = "rank 4 (H, W, Z, C), each dim >= 1, H, W, Z <= 65536, C <= 64";

fn valid_grid(shape: &[usize]) -> bool {
    shape.len() == 4
        && shape.iter().all(|&d| d >= 1)
        && shape[..3].iter().all(|&d| d <= MAX_DIM)
        && shape[3] <= MAX_CHANNELS
}

/// Identifies a frame: scene folder and file stem.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FrameId {
    /// Scene folder name.
    pub scene: String,
    /// File stem, e.g. `000042`.
    pub stem: String,
}

impl fmt::Display for FrameId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.scene, self.stem)
    }
}

/// A frame file, its header already parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameFile {
    /// Dense `.npy`, memory-mapped when read.
    Dense {
        /// The file.
        path: PathBuf,
        /// Its parsed header.
        header: NpyHeader,
    },
    /// Sparse `.npz`, decoded when read.
    Sparse {
        /// The archive.
        path: PathBuf,
        /// Its `(H, W, Z, C)` from `shape.npy`.
        shape: [usize; 4],
    },
}

impl FrameFile {
    /// Parses the header of a `.npy` or `.npz` frame and checks it against
    /// the frame rules (a dense file's length against its header too).
    pub fn open(path: &Path) -> Result<FrameFile, DataError> {
        if path.extension().is_some_and(|e| e == "npz") {
            let mut zip = NpzArchive::open(path)?;
            return Ok(FrameFile::Sparse { path: path.to_path_buf(), shape: read_shape_member(&mut zip)? });
        }
        let header = NpyHeader::read_file(path)?;
        let src = Source::file(path);
        header.expect_scalar(&src, Scalar::is_float, "<f2, <f4 or <f8 (either byte order)")?;
        if !valid_grid(&header.shape) {
            return Err(FormatError::Shape { src, shape: header.shape.clone(), expected: GRID_RULE.into() }.into());
        }
        let len = std::fs::metadata(path).map_err(|e| FormatError::io(path, e))?.len();
        crate::io::npy::check_len(path, &header, len)?;
        Ok(FrameFile::Dense { path: path.to_path_buf(), header })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        match self {
            FrameFile::Dense { path, .. } | FrameFile::Sparse { path, .. } => path,
        }
    }

    /// `(H, W, Z, C)`.
    pub fn shape(&self) -> [usize; 4] {
        match self {
            FrameFile::Dense { header, .. } => {
                let s = &header.shape;
                [s[0], s[1], s[2], s[3]]
            }
            FrameFile::Sparse { shape, .. } => *shape,
        }
    }

    /// Decodes into `out`, which must hold `layout.output_shape(self.shape())`.
    pub fn read_into(&self, layout: Layout, reduce: &[Reduce], out: &mut [f16]) -> Result<(), DataError> {
        let result = match self {
            FrameFile::Dense { path, header } => {
                let map = MappedNpy::map(path, header)?;
                layout::dense_into(&self.view(&map, header), layout, reduce, out)
            }
            FrameFile::Sparse { path, shape } => {
                layout::sparse_into(&read_sparse_as(path, *shape)?, layout, reduce, out)
            }
        };
        result.map_err(|b| self.bad_value(b))
    }

    /// Cuts a `zhw` crop at `at` into `out` (`C * Z * H * W` values; see
    /// [`super::crop`]); returns the corner used.
    pub fn read_crop_into<R: rand::Rng>(
        &self,
        zhw: [usize; 3],
        at: CropAt<R>,
        out: &mut [f16],
    ) -> Result<[usize; 3], DataError> {
        let shape = self.shape();
        let result = match self {
            FrameFile::Dense { path, header } => {
                let map = MappedNpy::map(path, header)?;
                let view = self.view(&map, header);
                let origin = match at {
                    CropAt::Centre => crop::centre(shape, zhw),
                    CropAt::Origin(o) => o,
                    CropAt::Draw { focus: 0, rng } => crop::draw(shape, zhw, 0, &[], rng),
                    CropAt::Draw { focus, rng } => {
                        let occupied = crop::dense_occupied(&view).map_err(|b| self.bad_value(b))?;
                        crop::draw(shape, zhw, focus, &occupied, rng)
                    }
                };
                crop::dense_crop_into(&view, origin, zhw, out).map(|()| origin)
            }
            FrameFile::Sparse { path, shape } => {
                let frame = read_sparse_as(path, *shape)?;
                let origin = match at {
                    CropAt::Centre => crop::centre(*shape, zhw),
                    CropAt::Origin(o) => o,
                    CropAt::Draw { focus, rng } => crop::draw(*shape, zhw, focus, &crop::sparse_occupied(&frame), rng),
                };
                crop::sparse_crop_into(&frame, origin, zhw, out).map(|()| origin)
            }
        };
        result.map_err(|b| self.bad_value(b))
    }

    pub(super) fn view<'m>(&self, map: &'m MappedNpy, header: &NpyHeader) -> DenseView<'m> {
        DenseView {
            data: map.data(),
            scalar: header.dtype.scalar.expect("checked at open"),
            big_endian: header.dtype.big_endian,
            shape: self.shape(),
            fortran_order: header.fortran_order,
        }
    }

    pub(super) fn bad_value(&self, b: layout::BadValue) -> DataError {
        DataError::BadValue {
            src: Source::file(self.path()),
            voxel: b.voxel,
            channel: b.channel,
            value: b.value,
            problem: b.problem(),
        }
    }
}

/// [`read_sparse`], refusing a shape other than the one seen at open.
pub(super) fn read_sparse_as(path: &Path, shape: [usize; 4]) -> Result<SparseFrame, DataError> {
    let frame = read_sparse(path)?;
    if frame.shape != shape {
        return Err(FormatError::Shape {
            src: Source::member(path, "shape.npy"),
            shape: frame.shape.to_vec(),
            expected: format!("{shape:?} as when the dataset was opened"),
        }
        .into());
    }
    Ok(frame)
}

/// A decoded sparse frame: occupied voxels and their channel values.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SparseFrame {
    /// Dense shape `(H, W, Z, C)`.
    pub shape: [usize; 4],
    /// `(x, y, z)` per listed voxel, validated to lie inside the grid.
    pub coords: Vec<[u32; 3]>,
    /// `C` values per voxel, row-major, widened to f64 so every source dtype
    /// rounds to f16 exactly once, as numpy's `astype` does.
    pub features: Vec<f64>,
}

impl SparseFrame {
    /// Number of listed voxels.
    pub fn len(&self) -> usize {
        self.coords.len()
    }
    /// Whether no voxel is listed.
    pub fn is_empty(&self) -> bool {
        self.coords.is_empty()
    }
}

/// Reads the `(H, W, Z, C)` of a sparse frame from its `shape.npy` member
/// (any integer dtype, 1-d `(4,)`).
fn read_shape_member(zip: &mut NpzArchive) -> Result<[usize; 4], DataError> {
    let src = Source::member(zip.path(), "shape.npy");
    let (h, raw) = zip.member("shape.npy")?;
    h.expect_scalar(&src, Scalar::is_int, "an integer dtype")?;
    if h.shape.as_slice() != [4] {
        let expected = "(4,) holding (H, W, Z, C)".into();
        return Err(FormatError::Shape { src, shape: h.shape, expected }.into());
    }
    let dims = h.c_order_i64(&raw).unwrap_or_default();
    let shape: Vec<usize> = dims.iter().map(|&d| usize::try_from(d).unwrap_or(0)).collect();
    if !valid_grid(&shape) {
        return Err(FormatError::Shape { src, shape, expected: GRID_RULE.into() }.into());
    }
    Ok([shape[0], shape[1], shape[2], shape[3]])
}

/// Decodes a sparse `.npz` frame written by `numpy.savez` or
/// `numpy.savez_compressed`, checking that members agree, coordinates lie
/// inside the grid and no voxel repeats. Values are checked when laid out.
pub fn read_sparse(path: &Path) -> Result<SparseFrame, DataError> {
    let mut zip = NpzArchive::open(path)?;
    let shape = read_shape_member(&mut zip)?;
    let coords_src = Source::member(path, "coords.npy");
    let (ch, coords_raw) = zip.member("coords.npy")?;
    ch.expect_scalar(&coords_src, Scalar::is_int, "an integer dtype (i1-i8 or u1-u8)")?;
    let features_src = Source::member(path, "features.npy");
    let (fh, features_raw) = zip.member("features.npy")?;
    fh.expect_scalar(&features_src, Scalar::is_float, "<f2, <f4 or <f8 (either byte order)")?;
    let n = match ch.shape.as_slice() {
        [n, 3] => *n,
        _ => return Err(FormatError::Shape { src: coords_src, shape: ch.shape, expected: "(N, 3)".into() }.into()),
    };
    if fh.shape.as_slice() != [n, shape[3]] {
        let expected = format!("({n}, {}) to match coords.npy and shape.npy", shape[3]);
        return Err(FormatError::Shape { src: features_src, shape: fh.shape, expected }.into());
    }
    let grid = [shape[0], shape[1], shape[2]];
    // An unsigned 8-byte coordinate beyond i64 is outside any grid.
    let ints = ch.c_order_i64(&coords_raw).map_err(|i| DataError::OutOfGrid {
        src: coords_src.clone(),
        index: i / 3,
        coord: [i64::MAX; 3],
        grid,
    })?;
    let mut coords = Vec::with_capacity(n);
    for (index, c) in ints.chunks_exact(3).enumerate() {
        let coord = [c[0], c[1], c[2]];
        if (0..3).any(|k| coord[k] < 0 || coord[k] as u64 >= grid[k] as u64) {
            return Err(DataError::OutOfGrid { src: coords_src, index, coord, grid });
        }
        coords.push([coord[0] as u32, coord[1] as u32, coord[2] as u32]);
    }
    check_unique(&coords, grid, &coords_src)?;
    Ok(SparseFrame { shape, coords, features: fh.c_order_f64(&features_raw) })
}

fn check_unique(coords: &[[u32; 3]], grid: [usize; 3], src: &Source) -> Result<(), DataError> {
    let key = |c: &[u32; 3]| (c[0] as u64 * grid[1] as u64 + c[1] as u64) * grid[2] as u64 + c[2] as u64;
    let mut keys: Vec<u64> = coords.iter().map(key).collect();
    keys.sort_unstable();
    if let Some(w) = keys.windows(2).find(|w| w[0] == w[1]) {
        let k = w[0];
        let (zs, ws) = (grid[2] as u64, grid[1] as u64);
        let coord = [(k / zs / ws) as usize, (k / zs % ws) as usize, (k % zs) as usize];
        return Err(DataError::Duplicate { src: src.clone(), coord });
    }
    Ok(())
}

/// Writes a sparse frame in the preprocessing's `.npz` format (`coords`
/// int64 `(N, 3)`, `features` float32 `(N, C)`, `shape` int64 `(4,)`),
/// atomically, deflated like `numpy.savez_compressed` or stored like
/// `numpy.savez`.
pub fn write_sparse(path: &Path, frame: &SparseFrame, compressed: bool) -> std::io::Result<()> {
    let c = frame.shape[3];
    let coords: Vec<i64> = frame.coords.iter().flat_map(|xyz| xyz.map(i64::from)).collect();
    let features: Vec<f32> = frame.features.iter().map(|&v| v as f32).collect();
    let shape: Vec<i64> = frame.shape.iter().map(|&d| d as i64).collect();
    write_npz(
        path,
        &[
            ("coords.npy", encode_npy(&[frame.len(), 3], &coords)),
            ("features.npy", encode_npy(&[frame.len(), c], &features)),
            ("shape.npy", encode_npy(&[4], &shape)),
        ],
        compressed,
    )
}

/// A decoded grid: f16 values in `(C, Z, H, W)` order.
#[derive(Debug, Clone, PartialEq)]
pub struct Grid {
    /// `(C, Z, H, W)`.
    pub shape: [usize; 4],
    /// Row-major values.
    pub data: Vec<f16>,
}

impl Grid {
    /// The grid as an f16 `(1, C, Z, H, W)` tensor (a batch of one).
    pub fn to_tensor(&self) -> tch::Tensor {
        tch::Tensor::from_slice(&self.data).view(self.shape.map(|d| d as i64)).unsqueeze(0)
    }

    /// Per-channel sums of the f16 values, accumulated in f64.
    pub fn channel_sums(&self) -> Vec<f64> {
        let plane = self.data.len() / self.shape[0].max(1);
        self.data.chunks(plane.max(1)).map(|c| c.iter().map(|v| v.to_f64()).sum()).collect()
    }

    /// Number of occupied voxels (channel 0 > 0).
    pub fn occupied(&self) -> usize {
        let plane = self.data.len() / self.shape[0].max(1);
        self.data[..plane].iter().filter(|v| v.to_f32() > 0.0).count()
    }
}
