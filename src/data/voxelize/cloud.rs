//! Point clouds in memory and on disk.
//!
//! A cloud is a row-major float32 matrix: radar rows are `x, y, z, intensity,
//! doppler` (5 columns), LiDAR rows `x, y, z, reflectivity` (4 columns).
//! KITTI-style `.bin` files (raw little-endian float32 rows) and `.npy`
//! files (any float or integer dtype, either byte order, C or Fortran order:
//! radvox's general `.npy` reader) are read here.

use std::path::Path;

use super::error::VoxelizeError;

/// Columns of a radar cloud: `x, y, z, intensity, doppler`.
pub const RADAR_COLS: usize = 5;
/// Columns of a LiDAR cloud: `x, y, z, reflectivity`.
pub const LIDAR_COLS: usize = 4;

/// A point cloud: `data.len() / cols` rows of `cols` float32 values, row-major.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PointCloud {
    /// Values per point (at least 3: `x, y, z`).
    pub cols: usize,
    /// Row-major values.
    pub data: Vec<f32>,
}

impl PointCloud {
    /// An empty cloud with `cols` columns.
    pub fn empty(cols: usize) -> Self {
        PointCloud { cols, data: Vec::new() }
    }

    /// An empty cloud with room for `rows` points.
    pub fn with_capacity(cols: usize, rows: usize) -> Self {
        PointCloud { cols, data: Vec::with_capacity(cols * rows) }
    }

    /// Builds a cloud, checking that `cols >= 3` and `data` holds whole rows.
    pub fn from_vec(cols: usize, data: Vec<f32>) -> Result<Self, VoxelizeError> {
        let cloud = PointCloud { cols, data };
        cloud.validate()?;
        Ok(cloud)
    }

    /// Checks `cols >= 3` and that `data` holds whole rows.
    pub fn validate(&self) -> Result<(), VoxelizeError> {
        if self.cols < 3 || !self.data.len().is_multiple_of(self.cols) {
            return Err(VoxelizeError::BadCloud { cols: self.cols, values: self.data.len() });
        }
        Ok(())
    }

    /// Number of points.
    pub fn len(&self) -> usize {
        self.data.len().checked_div(self.cols).unwrap_or(0)
    }

    /// Whether the cloud holds no point.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Row `i` (panics if out of bounds, like slice indexing).
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.cols..(i + 1) * self.cols]
    }

    /// Iterates over the rows (a trailing partial row is ignored).
    pub fn rows(&self) -> std::slice::ChunksExact<'_, f32> {
        self.data.chunks_exact(self.cols.max(1))
    }

    /// Appends one row; `row.len()` must equal `cols`.
    pub fn push(&mut self, row: &[f32]) {
        debug_assert_eq!(row.len(), self.cols, "row length must equal the column count");
        self.data.extend_from_slice(row);
    }

    /// Keeps the rows for which `keep(row)` is true.
    pub fn retain_rows(&self, mut keep: impl FnMut(usize, &[f32]) -> bool) -> PointCloud {
        let mut out = PointCloud::with_capacity(self.cols, self.len());
        for (i, r) in self.rows().enumerate() {
            if keep(i, r) {
                out.push(r);
            }
        }
        out
    }

    /// The cloud as little-endian bytes (the `.bin` layout).
    pub fn to_le_bytes(&self) -> Vec<u8> {
        self.data.iter().flat_map(|v| v.to_le_bytes()).collect()
    }
}

/// Decodes raw little-endian float32 rows; `None` when `bytes` is not a whole
/// number of `cols`-column rows (or `cols == 0`).
pub fn decode_bin(bytes: &[u8], cols: usize) -> Option<PointCloud> {
    if cols == 0 || !bytes.len().is_multiple_of(cols * 4) {
        return None;
    }
    let data = bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    Some(PointCloud { cols, data })
}

/// Reads a KITTI-style `.bin` cloud of `cols` float32 columns.
pub fn read_bin(path: &Path, cols: usize) -> Result<PointCloud, VoxelizeError> {
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut crate::io::open_regular(path)?, &mut bytes)
        .map_err(|e| VoxelizeError::io(path, e))?;
    decode_bin(&bytes, cols).ok_or_else(|| VoxelizeError::BinLength {
        path: path.to_path_buf(),
        len: bytes.len() as u64,
        cols,
    })
}

/// Writes a cloud as a KITTI-style `.bin` file.
pub fn write_bin(path: &Path, cloud: &PointCloud) -> Result<(), VoxelizeError> {
    crate::io::write_atomic(path, &cloud.to_le_bytes()).map_err(|e| VoxelizeError::io(path, e))
}

/// Reads point-cloud files. Implement it to plug in another storage format.
pub trait CloudReader: Sync {
    /// Reads the cloud at `path`, which must have exactly `cols` columns.
    fn read_cloud(&self, path: &Path, cols: usize) -> Result<PointCloud, VoxelizeError>;
}

/// The default reader: `.bin` and `.npy` clouds.
#[derive(Debug, Clone, Copy, Default)]
pub struct FileReader;

/// Reads a `.npy` cloud `(N, cols)` as float32, whatever its dtype, byte
/// order or element order.
pub fn read_npy_cloud(path: &Path, cols: usize) -> Result<PointCloud, VoxelizeError> {
    let (header, raw) = crate::io::npy::read_npy(path)?;
    let data = header.c_order_f64(&raw).into_iter().map(|v| v as f32).collect();
    cloud_from_array(path, &header.shape, data, cols)
}

impl CloudReader for FileReader {
    fn read_cloud(&self, path: &Path, cols: usize) -> Result<PointCloud, VoxelizeError> {
        match path.extension().and_then(|e| e.to_str()) {
            Some("bin") => read_bin(path, cols),
            Some("npy") => read_npy_cloud(path, cols),
            _ => Err(VoxelizeError::Extension { path: path.to_path_buf() }),
        }
    }
}

/// Checks a decoded array is `(N, cols)` (an empty `(0,)` array is accepted as
/// an empty cloud) and wraps it.
pub fn cloud_from_array(
    path: &Path,
    shape: &[usize],
    data: Vec<f32>,
    cols: usize,
) -> Result<PointCloud, VoxelizeError> {
    let columns = || VoxelizeError::Columns { path: path.to_path_buf(), expected: cols, shape: shape.to_vec() };
    let rows = match shape {
        [n, c] if *c == cols => *n,
        [0] => 0,
        _ => return Err(columns()),
    };
    if rows.checked_mul(cols) != Some(data.len()) {
        return Err(columns());
    }
    Ok(PointCloud { cols, data })
}
