//! Radar-to-LiDAR extrinsic calibration.
//!
//! File format (text): a line `R: r11 r12 r13 r21 r22 r23 r31 r32 r33`
//! (row-major) and a line `T: tx ty tz`, so that `p_lidar = R p_radar + T`.
//! Values may be separated by spaces, tabs or commas; blank lines, `#`
//! comments and other `key:` lines are ignored. Options: invert
//! (`R^T, -R^T T`, i.e. transform the other way) and a z shift added after.
//!
//! Arithmetic: each point is transformed in float64 and rounded once to
//! float32. The identity (without shift) leaves every float32 value unchanged.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::cloud::PointCloud;
use super::error::VoxelizeError;

/// A rigid transform `p' = R p + T`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// Rotation, row-major.
    pub r: [[f64; 3]; 3],
    /// Translation.
    pub t: [f64; 3],
}

impl Default for Calibration {
    fn default() -> Self {
        Calibration::identity()
    }
}

impl Calibration {
    /// The identity transform.
    pub fn identity() -> Self {
        Calibration { r: [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], t: [0.0; 3] }
    }

    /// Whether this is exactly the identity.
    pub fn is_identity(&self) -> bool {
        *self == Calibration::identity()
    }

    /// Parses calibration text; `path` names the source in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, VoxelizeError> {
        let err =
            |line: Option<usize>, problem: String| VoxelizeError::Calib { path: path.to_path_buf(), line, problem };
        let (mut r, mut t): (Option<Vec<f64>>, Option<Vec<f64>>) = (None, None);
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((key, rest)) = line.split_once(':') else {
                return Err(err(Some(i + 1), format!("expected `KEY: values`, found {line:?}")));
            };
            let (slot, want) = match key.trim() {
                "R" => (&mut r, 9),
                "T" => (&mut t, 3),
                _ => continue,
            };
            if slot.is_some() {
                return Err(err(Some(i + 1), format!("{} given twice", key.trim())));
            }
            let values = rest
                .split(|c: char| c.is_whitespace() || c == ',')
                .filter(|s| !s.is_empty())
                .map(|s| s.parse::<f64>().map_err(|_| err(Some(i + 1), format!("{s:?} is not a number"))))
                .collect::<Result<Vec<f64>, _>>()?;
            if values.len() != want {
                return Err(err(Some(i + 1), format!("{} needs {want} values, found {}", key.trim(), values.len())));
            }
            if let Some(v) = values.iter().find(|v| !v.is_finite()) {
                return Err(err(Some(i + 1), format!("non-finite value {v}")));
            }
            *slot = Some(values);
        }
        let r = r.ok_or_else(|| err(None, "no `R:` line (9 values, row-major)".into()))?;
        let t = t.ok_or_else(|| err(None, "no `T:` line (3 values)".into()))?;
        Ok(Calibration { r: [[r[0], r[1], r[2]], [r[3], r[4], r[5]], [r[6], r[7], r[8]]], t: [t[0], t[1], t[2]] })
    }

    /// Reads a calibration file; a missing file is [`VoxelizeError::CalibMissing`].
    pub fn read(path: &Path) -> Result<Self, VoxelizeError> {
        let text = std::fs::read_to_string(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => VoxelizeError::CalibMissing { path: path.to_path_buf() },
            std::io::ErrorKind::InvalidData => {
                VoxelizeError::Calib { path: path.to_path_buf(), line: None, problem: "file is not UTF-8 text".into() }
            }
            _ => VoxelizeError::io(path, e),
        })?;
        Calibration::parse(&text, path)
    }

    /// The inverse of a rigid transform: `(R^T, -R^T T)`.
    pub fn inverse(&self) -> Self {
        let mut r = [[0.0; 3]; 3];
        for (i, row) in r.iter_mut().enumerate() {
            for (j, v) in row.iter_mut().enumerate() {
                *v = self.r[j][i];
            }
        }
        let t = [0, 1, 2].map(|i| -(r[i][0] * self.t[0] + r[i][1] * self.t[1] + r[i][2] * self.t[2]));
        Calibration { r, t }
    }

    /// Adds `dz` to the z of every transformed point.
    pub fn with_z_shift(mut self, dz: f64) -> Self {
        self.t[2] += dz;
        self
    }

    /// Largest deviation of `R R^T` from the identity (0 for a rotation).
    pub fn orthonormality_error(&self) -> f64 {
        let mut worst: f64 = 0.0;
        for i in 0..3 {
            for j in 0..3 {
                let dot: f64 = (0..3).map(|k| self.r[i][k] * self.r[j][k]).sum();
                worst = worst.max((dot - if i == j { 1.0 } else { 0.0 }).abs());
            }
        }
        worst
    }

    /// Transforms one point (float64 arithmetic, one rounding to float32).
    pub fn apply_point(&self, p: [f32; 3]) -> [f32; 3] {
        let [x, y, z] = p.map(f64::from);
        [0, 1, 2].map(|i| (self.r[i][0] * x + self.r[i][1] * y + self.r[i][2] * z + self.t[i]) as f32)
    }

    /// Transforms the `x, y, z` of every point of a cloud in place (other
    /// columns untouched). The exact identity is a no-op.
    pub fn apply(&self, cloud: &mut PointCloud) {
        if self.is_identity() || cloud.cols < 3 {
            return;
        }
        let cols = cloud.cols;
        for row in cloud.data.chunks_exact_mut(cols) {
            let q = self.apply_point([row[0], row[1], row[2]]);
            row[..3].copy_from_slice(&q);
        }
    }
}

/// Where the calibration comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CalibSource {
    /// No file: the identity, asked for explicitly.
    Identity,
    /// A calibration text file (a missing file is an error).
    File(PathBuf),
}

/// How to obtain and adjust the radar-to-LiDAR transform.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalibOptions {
    /// The file, or the identity.
    pub source: CalibSource,
    /// Use the inverse transform (`R^T, -R^T T`).
    pub invert: bool,
    /// Added to z after the transform (metres).
    pub z_shift: f64,
}

impl CalibOptions {
    /// The identity, without inversion or shift.
    pub fn identity() -> Self {
        CalibOptions { source: CalibSource::Identity, invert: false, z_shift: 0.0 }
    }

    /// A calibration file, without inversion or shift.
    pub fn file(path: impl Into<PathBuf>) -> Self {
        CalibOptions { source: CalibSource::File(path.into()), invert: false, z_shift: 0.0 }
    }

    /// Reads the file (if any) and applies inversion and z shift. Inverting a
    /// matrix that is not a rotation (`|R R^T - I| > 1e-3`) is an error, since
    /// `R^T` would not be its inverse.
    pub fn resolve(&self) -> Result<Calibration, VoxelizeError> {
        let (calib, path) = match &self.source {
            CalibSource::Identity => (Calibration::identity(), None),
            CalibSource::File(p) => (Calibration::read(p)?, Some(p)),
        };
        let calib = if self.invert {
            let e = calib.orthonormality_error();
            if e > 1e-3 {
                return Err(VoxelizeError::Calib {
                    path: path.cloned().unwrap_or_default(),
                    line: None,
                    problem: format!("cannot invert: R is not a rotation (|R R^T - I| = {e:.3e})"),
                });
            }
            calib.inverse()
        } else {
            calib
        };
        if !self.z_shift.is_finite() {
            return Err(VoxelizeError::Calib {
                path: path.cloned().unwrap_or_default(),
                line: None,
                problem: format!("z shift {} is not finite", self.z_shift),
            });
        }
        Ok(if self.z_shift != 0.0 { calib.with_z_shift(self.z_shift) } else { calib })
    }
}

/// Formats a calibration in the file format (used by the simulator).
pub fn format_calibration(c: &Calibration) -> String {
    let r: Vec<String> = c.r.iter().flatten().map(|v| v.to_string()).collect();
    let t: Vec<String> = c.t.iter().map(|v| v.to_string()).collect();
    format!("R: {}\nT: {}\n", r.join(" "), t.join(" "))
}
