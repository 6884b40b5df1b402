//! Sensor poses of a scene in the TUM trajectory format, one file per scene
//! beside its frames: `<root>/<scene>/poses.txt`.
//!
//! Format (TUM RGB-D): one pose per line, `timestamp tx ty tz qx qy qz qw`,
//! the sensor-to-world transform (`p_world = R(q) p_sensor + t`), timestamp
//! in seconds; blank lines and `#` comments are skipped. In a radvox root
//! line `i` (after comments) is the pose of frame `i` (`000000`, ...) at the
//! time of its target (the LiDAR); a scene's file must list exactly one pose
//! per frame, timestamps strictly increasing. Real NTU4DRadLM ground truth
//! comes at its own rate: sample it at the frame times to write this file.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::DataError;

/// File name of a scene's poses (at the frames' target times).
pub const POSES_FILE: &str = "poses.txt";

/// File name of a scene's poses at the frames' radar times, where the
/// radar is not synchronised with the LiDAR (the simulator writes it); a
/// radar map uses it when present.
pub const RADAR_POSES_FILE: &str = "radar_poses.txt";

/// One sensor-to-world pose.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TumPose {
    /// Seconds.
    pub stamp: f64,
    /// Sensor position in the world (m).
    pub t: [f64; 3],
    /// Unit quaternion `(qx, qy, qz, qw)`.
    pub q: [f64; 4],
}

impl TumPose {
    /// A pose turned by `yaw` radians about world z (the simulator's poses).
    pub fn from_yaw(stamp: f64, t: [f64; 3], yaw: f64) -> TumPose {
        TumPose { stamp, t, q: [0.0, 0.0, (yaw / 2.0).sin(), (yaw / 2.0).cos()] }
    }

    /// The rotation matrix of `q` (normalised), row-major.
    pub fn rotation(&self) -> [[f64; 3]; 3] {
        let n = self.q.iter().map(|v| v * v).sum::<f64>().sqrt();
        let [x, y, z, w] = self.q.map(|v| v / n);
        [
            [1.0 - 2.0 * (y * y + z * z), 2.0 * (x * y - z * w), 2.0 * (x * z + y * w)],
            [2.0 * (x * y + z * w), 1.0 - 2.0 * (x * x + z * z), 2.0 * (y * z - x * w)],
            [2.0 * (x * z - y * w), 2.0 * (y * z + x * w), 1.0 - 2.0 * (x * x + y * y)],
        ]
    }

    /// A sensor-frame point in the world.
    pub fn to_world(&self, p: [f64; 3]) -> [f64; 3] {
        let r = self.rotation();
        std::array::from_fn(|i| r[i][0] * p[0] + r[i][1] * p[1] + r[i][2] * p[2] + self.t[i])
    }
}

/// The poses file of `scene` under `root`.
pub fn poses_path(root: &Path, scene: &str) -> PathBuf {
    root.join(scene).join(POSES_FILE)
}

/// The poses for a scene's radar frames: `radar_poses.txt` when present,
/// else `poses.txt` (synchronised sensors).
pub fn radar_poses_path(root: &Path, scene: &str) -> PathBuf {
    let p = root.join(scene).join(RADAR_POSES_FILE);
    if p.is_file() {
        p
    } else {
        poses_path(root, scene)
    }
}

fn bad(path: &Path, line: Option<usize>, problem: impl Into<String>) -> DataError {
    DataError::Poses { path: path.to_path_buf(), line, problem: problem.into() }
}

/// Parses TUM text; `path` names the source in errors. Each line needs 8
/// finite numbers and a quaternion of norm within 1e-3 of 1; timestamps
/// must increase strictly.
pub fn parse_tum(text: &str, path: &Path) -> Result<Vec<TumPose>, DataError> {
    let mut poses: Vec<TumPose> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let v = line
            .split_whitespace()
            .map(|s| s.parse::<f64>().ok().filter(|x| x.is_finite()))
            .collect::<Option<Vec<f64>>>()
            .ok_or_else(|| bad(path, Some(i + 1), format!("not 8 finite numbers: {line:?}")))?;
        if v.len() != 8 {
            return Err(bad(
                path,
                Some(i + 1),
                format!("expected `timestamp tx ty tz qx qy qz qw`, found {} values", v.len()),
            ));
        }
        let q = [v[4], v[5], v[6], v[7]];
        let norm = q.iter().map(|x| x * x).sum::<f64>().sqrt();
        if (norm - 1.0).abs() > 1e-3 {
            return Err(bad(path, Some(i + 1), format!("quaternion {q:?} has norm {norm}, not 1")));
        }
        if let Some(prev) = poses.last().filter(|p| p.stamp >= v[0]) {
            return Err(bad(path, Some(i + 1), format!("timestamp {} not after {}", v[0], prev.stamp)));
        }
        poses.push(TumPose { stamp: v[0], t: [v[1], v[2], v[3]], q });
    }
    Ok(poses)
}

/// Reads a TUM file ([`parse_tum`]).
pub fn read_tum(path: &Path) -> Result<Vec<TumPose>, DataError> {
    let text = std::fs::read_to_string(path).map_err(|e| bad(path, None, e.to_string()))?;
    parse_tum(&text, path)
}

/// TUM text of `poses` (round trips through [`parse_tum`] exactly: floats
/// are written in their shortest exact form).
pub fn format_tum(poses: &[TumPose]) -> String {
    let mut s = String::from("# timestamp tx ty tz qx qy qz qw (sensor to world)\n");
    for p in poses {
        let _ = writeln!(s, "{} {} {} {} {} {} {} {}", p.stamp, p.t[0], p.t[1], p.t[2], p.q[0], p.q[1], p.q[2], p.q[3]);
    }
    s
}

/// Writes a TUM file atomically.
pub fn write_tum(path: &Path, poses: &[TumPose]) -> std::io::Result<()> {
    crate::io::write_atomic(path, format_tum(poses).as_bytes())
}

/// The poses of a scene's `frames` frames from `path` (one per frame), else
/// an error naming the file and both counts.
pub fn frame_poses(path: &Path, frames: usize) -> Result<Vec<TumPose>, DataError> {
    if !path.is_file() {
        return Err(bad(path, None, "missing: a map needs the scene's sensor poses (TUM format, one per frame)"));
    }
    let poses = read_tum(path)?;
    if poses.len() != frames {
        return Err(bad(path, None, format!("{} poses for {frames} frames: one pose per frame expected", poses.len())));
    }
    Ok(poses)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poses_round_trip_and_rotate() {
        let poses =
            vec![TumPose::from_yaw(1.5, [1.0, -2.25, 0.1], 0.3), TumPose::from_yaw(1.6, [2.0 / 3.0, 1e-9, -7.0], -2.9)];
        let text = format_tum(&poses);
        assert_eq!(parse_tum(&text, Path::new("p")).unwrap(), poses);
        // a quarter turn takes x forward to world +y
        let p = TumPose::from_yaw(0.0, [10.0, 0.0, 1.0], std::f64::consts::FRAC_PI_2).to_world([2.0, 0.0, 0.5]);
        assert!((p[0] - 10.0).abs() < 1e-12 && (p[1] - 2.0).abs() < 1e-12 && (p[2] - 1.5).abs() < 1e-12, "{p:?}");
    }

    #[test]
    fn bad_lines_name_the_line() {
        let p = Path::new("s/poses.txt");
        for (text, want) in [
            ("0 1 2 3 0 0 0 1\n0 1 2 3 0 0 0 1\n", "not after"),
            ("# c\n0 1 2 3 0 0 0\n", "found 7 values"),
            ("0 1 2 x 0 0 0 1\n", "finite numbers"),
            ("0 1 2 3 0 0 0 2\n", "norm"),
        ] {
            let e = parse_tum(text, p).unwrap_err().to_string();
            assert!(e.contains("s/poses.txt") && e.contains(want) && e.contains("line"), "{e}");
        }
    }
}
