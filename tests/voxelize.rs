//! Rules of the voxelizer: channels, indices, non-finite and empty clouds,
//! the target rule, pairing, calibration, file reading and the driver.

use std::path::Path;
use std::sync::Mutex;

mod common;

use radvox::data::voxelize::{
    build_target, near_fraction, pair_frames, parse_stamp, read_bin, voxelize, write_bin, Axis, CalibOptions,
    Calibration, CloudReader, FileReader, FrameOutput, GridSpec, PairingOptions, PointCloud, PolicyFile, SparseGrid,
    Stamp, TargetPolicy, VoxelizeError, Voxelizer, LIDAR_COLS, RADAR_COLS,
};
use radvox::io::npy::write_npy;

fn cloud(cols: usize, rows: &[&[f32]]) -> PointCloud {
    PointCloud::from_vec(cols, rows.iter().flat_map(|r| r.iter().copied()).collect()).expect("well-formed cloud")
}

fn vox(c: &PointCloud) -> SparseGrid {
    voxelize(c, &GridSpec::default()).expect("voxelize").0
}

// ---------------------------------------------------------------- channels

#[test]
fn radar_channels_are_count_mean_doppler_and_variance() {
    let c = cloud(5, &[&[1.05, 0.05, 0.05, 10.0, 1.0], &[1.1, 0.1, 0.1, 20.0, 3.0], &[5.0, 5.0, 5.0, 7.0, -2.0]]);
    let g = vox(&c);
    assert_eq!(g.len(), 2);
    let i = g.find([5, 100, 30]).expect("voxel of the first two points");
    assert_eq!(g.feature(i), [1.0, 15.0, 2.0, 1.0]);
    let j = g.find([25, 125, 55]).expect("voxel of the third point");
    assert_eq!(g.feature(j), [1.0, 7.0, -2.0, 0.0]);
}

#[test]
fn lidar_has_zero_doppler_channels_and_xyz_only_has_unit_intensity() {
    let l = vox(&cloud(4, &[&[2.0, 0.0, 0.0, 40.0], &[2.01, 0.01, 0.01, 60.0]]));
    assert_eq!(l.features, vec![1.0, 50.0, 0.0, 0.0]);
    let x = vox(&cloud(3, &[&[2.0, 0.0, 0.0], &[2.01, 0.01, 0.01]]));
    assert_eq!(x.features, vec![1.0, 1.0, 0.0, 0.0]);
}

#[test]
fn variance_round_off_is_clamped_at_zero() {
    // Identical Doppler values: mean(d^2) - mean(d)^2 may round below zero.
    let rows: Vec<[f32; 5]> = (0..7).map(|_| [3.0, 0.0, 0.0, 1.0, 0.1]).collect();
    let c = PointCloud::from_vec(5, rows.iter().flatten().copied().collect()).expect("cloud");
    let f = vox(&c).feature(0);
    assert!(f[3] >= 0.0 && f[3] < 1e-6, "{f:?}");
}

#[test]
fn sums_are_float32_in_point_order() {
    // 1e8 + 1 - 1e8 in float32 depends on order: (1e8 + 1) rounds to 1e8.
    let c = cloud(5, &[&[1.0, 0.0, 0.0, 1e8, 0.0], &[1.0, 0.0, 0.0, 1.0, 0.0], &[1.0, 0.0, 0.0, -1e8, 0.0]]);
    assert_eq!(vox(&c).feature(0)[1], 0.0);
    let c = cloud(5, &[&[1.0, 0.0, 0.0, 1e8, 0.0], &[1.0, 0.0, 0.0, -1e8, 0.0], &[1.0, 0.0, 0.0, 1.0, 0.0]]);
    assert_eq!(vox(&c).feature(0)[1], 1.0 / 3.0);
}

#[test]
fn output_is_sorted_in_c_order_and_unique() {
    let c = cloud(4, &[&[50.0, 3.0, 1.0, 1.0], &[1.0, 3.0, 1.0, 1.0], &[1.0, -3.0, 1.0, 1.0], &[1.0, -3.0, -1.0, 1.0]]);
    let g = vox(&c);
    let keys: Vec<u64> = (0..g.len()).map(|i| g.key(i)).collect();
    assert!(keys.windows(2).all(|w| w[0] < w[1]), "{:?}", g.coords);
}

// ------------------------------------------------------------- indices

#[test]
fn index_is_float32_floor_and_clipped_to_the_grid() {
    let s = GridSpec::default();
    assert_eq!(s.index([0.0, -20.0, -6.0]), [0, 0, 0]);
    // Just below the upper bound: (120 - eps) / 0.2 rounds to 600 in float32.
    let below = |v: f32| f32::from_bits(v.to_bits() - 1);
    assert_eq!(s.index([below(120.0), below(20.0), below(10.0)]), [599, 199, 79]);
    // Boundary values land where float32 rounding puts them.
    for k in 1..100u32 {
        let p = k as f32 * 0.2f32;
        let want = (p / 0.2f32).floor() as u32;
        assert_eq!(s.index([p, 0.0, 0.0])[0], want);
    }
    // 1.4f32 / 0.2f32 rounds to 7 in float32 but is 6.99999... in float64.
    assert_eq!(s.index([1.4, 0.0, 0.0])[0], 7);
    assert_eq!(((1.4f32 as f64) / 0.2f64).floor(), 6.0);
}

#[test]
fn range_is_half_open() {
    let c = cloud(
        4,
        &[
            &[0.0, -20.0, -6.0, 1.0],
            &[120.0, 0.0, 0.0, 1.0],
            &[1.0, 20.0, 0.0, 1.0],
            &[1.0, 0.0, 10.0, 1.0],
            &[-1e-6, 0.0, 0.0, 1.0],
        ],
    );
    let (g, s) = voxelize(&c, &GridSpec::default()).expect("voxelize");
    assert_eq!(g.coords, vec![[0, 0, 0]]);
    assert_eq!((s.points_in, s.dropped_out_of_range, s.dropped_non_finite, s.occupied), (5, 4, 0, 1));
}

#[test]
fn custom_grid_spec() {
    let s = GridSpec::from_range([0.0, -10.0, -2.0, 20.0, 10.0, 2.0], 0.5).expect("spec");
    assert_eq!(s.dims, [40, 40, 8]);
    let (g, _) = voxelize(&cloud(3, &[&[19.99, 9.99, 1.99]]), &s).expect("voxelize");
    assert_eq!(g.coords, vec![[39, 39, 7]]);
    assert_eq!(g.shape, [40, 40, 8, 4]);
    assert!(GridSpec::from_range([0.0, 0.0, 0.0, -1.0, 1.0, 1.0], 0.2).is_err());
    assert!(GridSpec { voxel: 0.0, ..GridSpec::default() }.validate().is_err());
}

// ------------------------------------------------- non-finite and empty

#[test]
fn non_finite_points_are_dropped_and_counted() {
    let c = cloud(
        5,
        &[
            &[f32::NAN, 0.0, 0.0, 1.0, 1.0],
            &[1.0, f32::INFINITY, 0.0, 1.0, 1.0],
            &[1.0, 0.0, f32::NEG_INFINITY, 1.0, 1.0],
            &[1.0, 0.0, 0.0, f32::NAN, 1.0],
            &[1.0, 0.0, 0.0, 1.0, f32::NAN],
            &[1.0, 0.0, 0.0, 2.0, 4.0],
        ],
    );
    let (g, s) = voxelize(&c, &GridSpec::default()).expect("voxelize");
    assert_eq!(s.dropped_non_finite, 5);
    assert_eq!(g.features, vec![1.0, 2.0, 4.0, 0.0]);
    assert!(g.features.iter().all(|v| v.is_finite()));
}

#[test]
fn empty_cloud_gives_an_empty_frame() {
    let (g, s) = voxelize(&PointCloud::empty(5), &GridSpec::default()).expect("voxelize");
    assert!(g.is_empty());
    assert_eq!(g.shape, [600, 200, 80, 4]);
    assert_eq!(s.points_in, 0);
    let t = build_target(&g, &g, &GridSpec::default(), &TargetPolicy::plain());
    assert!(t.is_empty());
}

#[test]
fn malformed_in_memory_cloud_is_an_error_not_a_panic() {
    let bad = PointCloud { cols: 5, data: vec![1.0; 7] };
    assert!(matches!(voxelize(&bad, &GridSpec::default()), Err(VoxelizeError::BadCloud { cols: 5, values: 7 })));
    let zero = PointCloud { cols: 0, data: vec![] };
    assert!(voxelize(&zero, &GridSpec::default()).is_err());
    assert!(PointCloud::from_vec(2, vec![1.0, 2.0]).is_err());
}

// ---------------------------------------------------------------- target

fn grid(voxels: &[([u32; 3], [f32; 4])]) -> SparseGrid {
    let mut v = voxels.to_vec();
    v.sort_by_key(|e| e.0);
    SparseGrid {
        shape: [600, 200, 80, 4],
        coords: v.iter().map(|e| e.0).collect(),
        features: v.iter().flat_map(|e| e.1).collect(),
    }
}

#[test]
fn target_takes_plain_mean_of_radar_doppler_in_3x3x3() {
    let lidar = grid(&[([10, 10, 10], [1.0, 42.0, 0.0, 0.0]), ([20, 20, 20], [1.0, 7.0, 0.0, 0.0])]);
    // Two neighbours (one holding many points: the mean is per voxel, not
    // per point) and one radar voxel two cells away (ignored).
    let radar = grid(&[
        ([9, 11, 10], [1.0, 5.0, 1.0, 0.0]),
        ([11, 9, 11], [1.0, 5.0, 4.0, 0.5]),
        ([12, 10, 10], [1.0, 5.0, 100.0, 0.0]),
    ]);
    let t = build_target(&lidar, &radar, &GridSpec::default(), &TargetPolicy::plain());
    assert_eq!(t.coords, lidar.coords);
    assert_eq!(t.feature(0), [1.0, 42.0, 2.5, 1.0]);
    assert_eq!(t.feature(1), [1.0, 7.0, 0.0, 0.0]);
}

#[test]
fn target_neighbourhood_is_clipped_at_the_borders() {
    let lidar = grid(&[([0, 0, 0], [1.0, 1.0, 0.0, 0.0]), ([599, 199, 79], [1.0, 2.0, 0.0, 0.0])]);
    let radar = grid(&[([1, 1, 1], [1.0, 1.0, -3.0, 0.0]), ([598, 199, 78], [1.0, 1.0, 6.0, 0.0])]);
    let t = build_target(&lidar, &radar, &GridSpec::default(), &TargetPolicy::plain());
    assert_eq!(t.feature(0), [1.0, 1.0, -3.0, 1.0]);
    assert_eq!(t.feature(1), [1.0, 2.0, 6.0, 1.0]);
    // A radar voxel at the far x border does not wrap to the near one.
    let radar = grid(&[([599, 0, 0], [1.0, 1.0, 9.0, 0.0])]);
    let t = build_target(&lidar, &radar, &GridSpec::default(), &TargetPolicy::plain());
    assert_eq!(t.feature(0), [1.0, 1.0, 0.0, 0.0]);
}

#[test]
fn sensor_aware_target_cuts_by_centre_and_radar_proximity() {
    let s = GridSpec::default();
    // z index 25 has centre -0.9 (kept), 24 has -1.1 (cut); x index 399 has
    // centre 79.9 (kept), 400 has 80.1 (cut).
    let lidar = grid(&[
        ([100, 100, 25], [1.0, 3.0, 0.0, 0.0]),
        ([100, 100, 24], [1.0, 3.0, 0.0, 0.0]),
        ([399, 100, 40], [1.0, 4.0, 0.0, 0.0]),
        ([400, 100, 40], [1.0, 4.0, 0.0, 0.0]),
    ]);
    let t = build_target(&lidar, &SparseGrid::empty(&s), &s, &TargetPolicy::sensor_aware());
    assert_eq!(t.coords, vec![[100, 100, 25], [399, 100, 40]]);
    let radar = grid(&[([102, 98, 27], [1.0, 1.0, 2.0, 0.0])]);
    let policy = TargetPolicy { radar_radius: Some(2), ..TargetPolicy::sensor_aware() };
    let t = build_target(&lidar, &radar, &s, &policy);
    assert_eq!(t.coords, vec![[100, 100, 25]]);
    // Radius 2 keeps it, but the Doppler rule stays radius 1: no mask.
    assert_eq!(t.feature(0), [1.0, 3.0, 0.0, 0.0]);
}

#[test]
fn policy_file_round_trips_as_json() {
    let p = PolicyFile { policy: TargetPolicy::sensor_aware(), grid: GridSpec::default(), frames: 12 };
    let json = p.to_json();
    assert!(json.contains("\"z_min\": -1.0") && json.contains("\"frames\": 12"), "{json}");
    let back: PolicyFile = serde_json::from_str(&json).expect("parse");
    assert_eq!(back, p);
    let dir = tempfile::tempdir().expect("tempdir");
    p.write(dir.path()).expect("write");
    assert!(dir.path().join("target_policy.json").is_file());
}

#[test]
fn near_fraction_counts_voxels_within_one() {
    let radar = grid(&[([5, 5, 5], [1.0; 4]), ([50, 5, 5], [1.0; 4])]);
    let lidar = grid(&[([6, 4, 6], [1.0; 4])]);
    assert_eq!(near_fraction(&radar, &lidar, 1), 0.5);
    assert_eq!(near_fraction(&SparseGrid::default(), &lidar, 1), 0.0);
}

// --------------------------------------------------------------- pairing

fn ms(v: &[i64]) -> Vec<Stamp> {
    v.iter().map(|&m| Stamp(m * 1_000_000)).collect()
}

#[test]
fn stamps_parse_from_file_names() {
    assert_eq!(parse_stamp("1650000000.123456.bin"), Some(Stamp(1_650_000_000_123_456_000)));
    assert_eq!(parse_stamp("1650000000.5.npy"), Some(Stamp(1_650_000_000_500_000_000)));
    assert_eq!(parse_stamp("12.npy"), Some(Stamp(12_000_000_000)));
    for bad in ["abc.bin", "12.3x.bin", ".5.bin", "1.2.3.bin", "-1.0.bin", "1.1234567890.bin"] {
        assert_eq!(parse_stamp(bad), None, "{bad}");
    }
    assert_eq!(Stamp(1_650_000_000_000_042_000).file_stem(), "1650000000.000042");
    assert_eq!(Stamp::from_micros(3, 250_000).secs(), 3.25);
}

#[test]
fn fewer_frames_sensor_is_the_axis_and_takes_the_nearest() {
    // LiDAR has fewer frames: it is the axis.
    let radar = ms(&[0, 70, 140, 210, 280]);
    let lidar = ms(&[10, 100, 250]);
    let p = pair_frames(&radar, &lidar, &PairingOptions::default());
    assert_eq!(p.axis, Axis::Lidar);
    let got: Vec<(usize, usize, usize)> = p.pairs.iter().map(|q| (q.index, q.radar, q.lidar)).collect();
    assert_eq!(got, vec![(0, 0, 0), (1, 1, 1), (2, 4, 2)]);
    // Radar fewer: radar axis, and a LiDAR frame may serve two radar frames.
    let p = pair_frames(&ms(&[0, 5]), &ms(&[1, 100, 200]), &PairingOptions::default());
    assert_eq!(p.axis, Axis::Radar);
    assert_eq!(p.pairs.iter().map(|q| q.lidar).collect::<Vec<_>>(), vec![0, 0]);
}

#[test]
fn ties_go_to_the_earlier_frame_and_later_only_if_strictly_closer() {
    let axis = ms(&[50]);
    let p = pair_frames(&axis, &ms(&[40, 60, 100]), &PairingOptions::default());
    assert_eq!(p.pairs[0].lidar, 0, "tie: earlier wins");
    let p = pair_frames(&axis, &ms(&[40, 59, 100]), &PairingOptions::default());
    assert_eq!(p.pairs[0].lidar, 1, "later strictly closer");
    let p = pair_frames(&axis, &ms(&[50, 50, 100]), &PairingOptions::default());
    assert_eq!(p.pairs[0].lidar, 0, "exact match");
    // Equal counts: the radar is the axis.
    assert_eq!(pair_frames(&ms(&[1]), &ms(&[2]), &PairingOptions::default()).axis, Axis::Radar);
}

#[test]
fn pairs_come_in_time_order_from_unsorted_input() {
    let p = pair_frames(&ms(&[200, 0, 100]), &ms(&[101, 1, 199, 300]), &PairingOptions::default());
    let t: Vec<i64> = p.pairs.iter().map(|q| q.radar_stamp.0).collect();
    assert_eq!(t, ms(&[0, 100, 200]).iter().map(|s| s.0).collect::<Vec<_>>());
    assert_eq!(p.pairs.iter().map(|q| q.lidar).collect::<Vec<_>>(), vec![1, 0, 2]);
}

#[test]
fn max_gap_drops_and_counts_pairs() {
    let opts = PairingOptions { max_gap: Some(0.02) };
    let p = pair_frames(&ms(&[0, 100, 200]), &ms(&[5, 150, 210, 400]), &opts);
    assert_eq!(p.dropped_gap, 1);
    assert_eq!(p.pairs.iter().map(|q| (q.index, q.radar)).collect::<Vec<_>>(), vec![(0, 0), (1, 2)]);
    assert!(p.pairs.iter().all(|q| q.gap() <= 0.02));
    assert!(pair_frames(&ms(&[1]), &[], &PairingOptions::default()).pairs.is_empty());
}

// ----------------------------------------------------------- calibration

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write");
    p
}

#[test]
fn calibration_parses_applies_inverts_and_shifts() {
    let dir = tempfile::tempdir().expect("tempdir");
    // 90 degrees about z, then a translation.
    let p = write(dir.path(), "calib.txt", "# radar to lidar\nR: 0 -1 0 1 0 0 0 0 1\nT: 1, 2, 3\nP0: ignored\n");
    let c = Calibration::read(&p).expect("parse");
    assert_eq!(c.apply_point([1.0, 0.0, 0.0]), [1.0, 3.0, 3.0]);
    let inv = CalibOptions { invert: true, ..CalibOptions::file(&p) }.resolve().expect("invert");
    assert_eq!(inv.apply_point([1.0, 3.0, 3.0]), [1.0, 0.0, 0.0]);
    let shifted = CalibOptions { z_shift: 0.5, ..CalibOptions::file(&p) }.resolve().expect("shift");
    assert_eq!(shifted.apply_point([1.0, 0.0, 0.0]), [1.0, 3.0, 3.5]);
    let inv_shift = CalibOptions { invert: true, z_shift: -1.0, ..CalibOptions::file(&p) }.resolve().expect("both");
    assert_eq!(inv_shift.apply_point([1.0, 3.0, 3.0]), [1.0, 0.0, -1.0], "shift is added after inversion");
    let mut cloud = cloud(5, &[&[1.0, 0.0, 0.0, 7.0, 8.0]]);
    c.apply(&mut cloud);
    assert_eq!(cloud.data, vec![1.0, 3.0, 3.0, 7.0, 8.0], "features untouched");
}

#[test]
fn identity_is_explicit_and_a_missing_file_is_an_error() {
    assert!(CalibOptions::identity().resolve().expect("identity").is_identity());
    let err = CalibOptions::file("/nonexistent/calib.txt").resolve().unwrap_err();
    assert!(matches!(err, VoxelizeError::CalibMissing { .. }), "{err}");
    assert!(err.to_string().contains("/nonexistent/calib.txt"));
    let mut c = cloud(4, &[&[0.1, 0.2, 0.3, 1.0]]);
    Calibration::identity().apply(&mut c);
    assert_eq!(c.data, vec![0.1, 0.2, 0.3, 1.0]);
}

#[test]
fn malformed_calibration_names_file_line_and_problem() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        ("short.txt", "R: 1 0 0 0 1 0 0 0\nT: 0 0 0\n", "line 1", "needs 9 values"),
        ("nan.txt", "R: 1 0 0 0 1 0 0 0 1\nT: 0 x 0\n", "line 2", "not a number"),
        ("inf.txt", "R: 1 0 0 0 1 0 0 0 inf\nT: 0 0 0\n", "line 1", "non-finite"),
        ("dup.txt", "R: 1 0 0 0 1 0 0 0 1\nR: 1 0 0 0 1 0 0 0 1\nT: 0 0 0\n", "line 2", "twice"),
        ("not.txt", "R: 1 0 0 0 1 0 0 0 1\ngarbage\n", "line 2", "KEY: values"),
        ("not_t.txt", "R: 1 0 0 0 1 0 0 0 1\n", "", "no `T:`"),
    ];
    for (name, text, line, problem) in cases {
        let p = write(dir.path(), name, text);
        let err = Calibration::read(&p).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, VoxelizeError::Calib { .. }), "{msg}");
        assert!(msg.contains(name) && msg.contains(line) && msg.contains(problem), "{msg}");
    }
    let p = write(dir.path(), "shear.txt", "R: 1 1 0 0 1 0 0 0 1\nT: 0 0 0\n");
    let err = CalibOptions { invert: true, ..CalibOptions::file(&p) }.resolve().unwrap_err();
    assert!(err.to_string().contains("not a rotation"), "{err}");
    let bin = dir.path().join("binary.txt");
    std::fs::write(&bin, [0xffu8, 0xfe, 0x00]).expect("write");
    assert!(matches!(Calibration::read(&bin), Err(VoxelizeError::Calib { .. })));
}

// ------------------------------------------------------------ file input

#[test]
fn bin_round_trip_and_bad_length_names_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = cloud(5, &[&[1.0, 2.0, 3.0, 4.0, 5.0], &[6.0, 7.0, 8.0, 9.0, 10.0]]);
    let p = dir.path().join("1.000000.bin");
    write_bin(&p, &c).expect("write");
    assert_eq!(read_bin(&p, 5).expect("read"), c);
    let err = read_bin(&p, 4).unwrap_err();
    assert!(matches!(err, VoxelizeError::BinLength { len: 40, cols: 4, .. }), "{err}");
    assert!(err.to_string().contains("1.000000.bin"));
    let empty = dir.path().join("2.000000.bin");
    std::fs::write(&empty, b"").expect("write");
    assert!(read_bin(&empty, 4).expect("empty").is_empty());
    let missing = read_bin(&dir.path().join("missing.bin"), 4).unwrap_err();
    assert!(matches!(missing, VoxelizeError::Format(radvox::io::FormatError::Io { .. })), "{missing}");
    assert!(missing.to_string().contains("missing.bin"));
}

#[test]
fn npy_clouds_are_read_in_any_order_and_dtype_and_columns_are_checked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("1.0.npy");
    write_npy(&p, &[2, 4], &[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]).expect("write");
    let reader = FileReader;
    assert_eq!(reader.read_cloud(&p, 4).expect("read").len(), 2);
    let err = reader.read_cloud(&p, 5).unwrap_err();
    assert!(matches!(err, VoxelizeError::Columns { expected: 5, .. }), "{err}");
    // a Fortran-ordered float64 cloud (what numpy writes for a transposed stack)
    let fortran = dir.path().join("4.0.npy");
    let mut bytes = radvox::io::npy::encode_npy(&[4, 2], &[1.0f64, 5.0, 2.0, 6.0, 3.0, 7.0, 4.0, 8.0]);
    let text =
        String::from_utf8_lossy(&bytes[10..74]).replace("'shape': (4, 2)", "'shape': (2, 4)").replace("False", "True ");
    bytes.splice(10..74, text.bytes());
    std::fs::write(&fortran, &bytes).unwrap();
    assert_eq!(reader.read_cloud(&fortran, 4).unwrap().data, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]);
    let empty = dir.path().join("2.0.npy");
    write_npy::<f32>(&empty, &[0, 5], &[]).expect("write");
    assert!(reader.read_cloud(&empty, 5).expect("empty").is_empty());
    let junk = dir.path().join("3.0.npy");
    std::fs::write(&junk, b"not numpy").expect("write");
    assert!(matches!(reader.read_cloud(&junk, 4), Err(VoxelizeError::Format(_))));
    assert!(matches!(reader.read_cloud(&dir.path().join("x.txt"), 4), Err(VoxelizeError::Extension { .. })));
}

// ---------------------------------------------------------------- driver

#[test]
fn driver_pairs_processes_skips_bad_frames_and_summarises() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (rd, ld) = (dir.path().join("radar"), dir.path().join("lidar"));
    std::fs::create_dir_all(&rd).expect("mkdir");
    std::fs::create_dir_all(&ld).expect("mkdir");
    let r = cloud(5, &[&[10.0, 0.0, 0.0, 5.0, -1.0], &[f32::NAN, 0.0, 0.0, 1.0, 1.0], &[500.0, 0.0, 0.0, 1.0, 1.0]]);
    let l = cloud(4, &[&[10.1, 0.1, 0.1, 30.0], &[10.3, 0.0, 0.0, 31.0]]);
    for (i, name) in ["100.000000", "100.100000", "100.200000"].iter().enumerate() {
        write_bin(&rd.join(format!("{name}.bin")), &r).expect("write");
        if i < 2 {
            write_bin(&ld.join(format!("{name}.bin")), &l).expect("write");
        }
    }
    // A third LiDAR frame with a broken length, an unparseable name, and a
    // file that is not a cloud.
    std::fs::write(ld.join("100.210000.bin"), [0u8; 10]).expect("write");
    std::fs::write(ld.join("notes.bin"), [0u8; 16]).expect("write");
    std::fs::write(ld.join("README"), b"hi").expect("write");
    let got = Mutex::new(Vec::new());
    let sink = |f: FrameOutput| -> Result<(), VoxelizeError> {
        got.lock().unwrap().push((f.pair.index, f.grids.radar.len(), f.grids.target.feature(0)));
        Ok(())
    };
    let vox = Voxelizer { ground: None, ..Voxelizer::default() };
    let summary = vox.run(&rd, &ld, &sink).expect("run");
    assert_eq!(summary.axis, Axis::Radar);
    assert_eq!((summary.pairs, summary.written, summary.skipped.len()), (3, 2, 1));
    assert!(summary.skipped[0].reason.contains("100.210000.bin"), "{summary}");
    assert_eq!(summary.unnamed_files.len(), 1);
    assert_eq!((summary.radar.dropped_non_finite, summary.radar.dropped_out_of_range), (2, 2));
    assert_eq!(summary.lidar.occupied, 4);
    let text = summary.to_string();
    assert!(text.contains("frames written 2, skipped 1") && text.contains("non-finite"), "{text}");
    let mut got = got.lock().expect("lock").clone();
    got.sort_by_key(|g| g.0);
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].2, [1.0, 30.0, -1.0, 1.0]);
    // Sink failures stop the run with a typed error.
    let failing = |_: FrameOutput| -> Result<(), VoxelizeError> {
        Err(VoxelizeError::io("out", std::io::Error::other("disk full")))
    };
    let err = vox.run(&rd, &ld, &failing).unwrap_err();
    assert!(matches!(err, VoxelizeError::Sink { .. }) && err.to_string().contains("disk full"), "{err}");
    // Missing calibration file, empty directory.
    let bad = Voxelizer { calib: CalibOptions::file(dir.path().join("calib.txt")), ..Voxelizer::default() };
    assert!(matches!(bad.run(&rd, &ld, &sink), Err(VoxelizeError::CalibMissing { .. })));
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).expect("mkdir");
    assert!(matches!(vox.run(&rd, &empty, &sink), Err(VoxelizeError::NoFrames { .. })));
}

#[test]
fn driver_max_gap_and_sensor_aware_policy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (rd, ld) = (dir.path().join("radar"), dir.path().join("lidar"));
    std::fs::create_dir_all(&rd).expect("mkdir");
    std::fs::create_dir_all(&ld).expect("mkdir");
    let r = cloud(RADAR_COLS, &[&[10.0, 0.0, 0.0, 5.0, -1.0]]);
    let l = cloud(LIDAR_COLS, &[&[10.1, 0.1, 0.1, 30.0], &[90.0, 0.0, 0.0, 1.0], &[10.0, 0.0, -3.0, 1.0]]);
    write_bin(&rd.join("5.000000.bin"), &r).expect("write");
    write_bin(&rd.join("6.000000.bin"), &r).expect("write");
    write_bin(&ld.join("5.010000.bin"), &l).expect("write");
    write_bin(&ld.join("5.900000.bin"), &l).expect("write");
    write_bin(&ld.join("7.000000.bin"), &l).expect("write");
    let count = Mutex::new(0usize);
    let sink = |f: FrameOutput| -> Result<(), VoxelizeError> {
        assert_eq!(f.grids.target.len(), 1, "only the voxel at x 10, z 0 survives the cut");
        *count.lock().unwrap() += 1;
        Ok(())
    };
    let vox = Voxelizer {
        ground: None,
        pairing: PairingOptions { max_gap: Some(0.05) },
        policy: TargetPolicy::sensor_aware(),
        ..Voxelizer::default()
    };
    let s = vox.run(&rd, &ld, &sink).expect("run");
    assert_eq!((s.pairs, s.dropped_gap, s.written), (1, 1, 1));
    assert_eq!(*count.lock().expect("lock"), 1);
}

/// The voxelize example on simulated raw frames: the scene it writes reads
/// back through radvox's reader as the voxelizer made it (counts and values),
/// and a missing calibration must be asked for.
#[test]
fn voxelize_example_writes_a_scene_the_reader_reads_back() {
    use radvox::data::{Dataset, DatasetConfig, Modality, Split};
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = radvox::sim::SimConfig { seed: 5, scenes: 1, frames_per_scene: 3, ..Default::default() };
    let sim = radvox::sim::Simulator::new(cfg).expect("config");
    let raw = dir.path().join("raw");
    radvox::sim::write_scene(&raw, &sim.simulate_scene(0)).expect("write");
    let exe = common::example("voxelize");
    let run = |extra: &[&str]| {
        std::process::Command::new(&exe)
            .args(["--radar", raw.join("radar").to_str().unwrap(), "--lidar", raw.join("lidar").to_str().unwrap()])
            .args(["--out", dir.path().join("ntu").to_str().unwrap(), "--scene", "s0", "--no-progress"])
            .args(extra)
            .output()
            .expect("spawn")
    };
    let no_calib = run(&[]);
    assert!(!no_calib.status.success());
    assert!(String::from_utf8_lossy(&no_calib.stderr).contains("--identity"));
    let ok = run(&["--calib", raw.join("calib.txt").to_str().unwrap()]);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert!(stdout.contains("frames written 3, skipped 0") && stdout.contains("frames/s"), "{stdout}");
    let ds = Dataset::open(dir.path().join("ntu"), Split::All, &DatasetConfig::default()).expect("open");
    assert_eq!(ds.len(), 3);
    // the same grids, computed in memory
    let vox = Voxelizer { calib: CalibOptions::file(raw.join("calib.txt")), ..Voxelizer::default() };
    let grids = Mutex::new(Vec::new());
    let sink = |f: FrameOutput| -> Result<(), VoxelizeError> {
        grids.lock().unwrap().push((f.pair.index, f.grids));
        Ok(())
    };
    vox.run(&raw.join("radar"), &raw.join("lidar"), &sink).expect("run");
    let mut grids = grids.into_inner().unwrap();
    grids.sort_by_key(|g| g.0);
    for (i, (_, g)) in grids.iter().enumerate() {
        let target = ds.read(i, Modality::Target).expect("read");
        let radar = ds.read(i, Modality::Radar).expect("read");
        assert_eq!((target.occupied(), radar.occupied()), (g.target.len(), g.radar.len()), "frame {i}");
        let want: f64 = (0..g.target.len()).map(|k| half::f16::from_f32(g.target.feature(k)[1]).to_f64()).sum();
        assert!((target.channel_sums()[1] - want).abs() < 1e-6 * want.max(1.0), "frame {i} intensity sums");
    }
    let policy = std::fs::read_to_string(dir.path().join("ntu/s0/target_policy.json")).expect("policy");
    assert!(policy.contains("\"frames\": 3"), "{policy}");
}
