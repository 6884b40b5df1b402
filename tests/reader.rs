//! The reader against the numpy-written fixtures (`fixtures/make_fixtures.py`):
//! values bit for bit after f16 rounding, split and pairing rules, and a
//! typed error for every kind of bad input.

#![allow(clippy::result_large_err)] // errors carry the file, as the library's do

use std::path::{Path, PathBuf};
use std::process::Command;

use radvox::data::DataError;
use radvox::data::FrameFile;
use radvox::data::{layout::Layout, resample::Reduce};
use radvox::io::FormatError;
use radvox::{Dataset, DatasetConfig, Modality, Split};
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

fn mini() -> PathBuf {
    fixtures().join("ntu_mini")
}

fn expected() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join("expected.json")).unwrap()).unwrap()
}

fn check_against_numpy(layout: Layout, key: &str) {
    let exp = expected();
    let config = DatasetConfig { layout, with_lidar: true, ..Default::default() };
    let ds = Dataset::open(mini(), Split::All, &config).unwrap();
    assert_eq!(ds.len(), 6);
    for (i, frame) in ds.frames().iter().enumerate() {
        for (modality, name) in [(Modality::Target, "target"), (Modality::Radar, "radar"), (Modality::Lidar, "lidar")] {
            let want = &exp["frames"][frame.id.to_string()][name][key];
            let grid = ds.read(i, modality).unwrap();
            let ctx = format!("{} {name} {key}", frame.id);
            let shape: Vec<usize> =
                want["shape"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
            assert_eq!(grid.shape.to_vec(), shape, "{ctx}");
            // Every non-zero element, bit for bit; everything else exactly zero.
            let nonzero: Vec<(usize, u16)> = grid
                .data
                .iter()
                .enumerate()
                .filter(|(_, v)| v.to_bits() & 0x7fff != 0)
                .map(|(i, v)| (i, v.to_bits()))
                .collect();
            let want_nz: Vec<(usize, u16)> = want["nonzero"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| (p[0].as_u64().unwrap() as usize, p[1].as_u64().unwrap() as u16))
                .collect();
            assert_eq!(nonzero.len(), want_nz.len(), "{ctx}: non-zero count");
            assert!(
                nonzero == want_nz,
                "{ctx}: first difference {:?}",
                nonzero.iter().zip(&want_nz).find(|(a, b)| a != b)
            );
            assert_eq!(grid.occupied() as u64, want["nnz"].as_u64().unwrap(), "{ctx}");
            for (got, want) in grid.channel_sums().iter().zip(want["sums"].as_array().unwrap()) {
                let want = want.as_f64().unwrap();
                assert!((got - want).abs() <= 1e-9 * want.abs().max(1.0), "{ctx}: sum {got} vs {want}");
            }
        }
    }
}

#[test]
fn padded_frames_match_numpy_bit_for_bit() {
    check_against_numpy(Layout::Pad { alignment: 32 }, "pad");
}

#[test]
fn resampled_frames_match_numpy_bit_for_bit() {
    check_against_numpy(Layout::Resample { zhw: [4, 8, 8] }, "resample");
}

#[test]
fn fixtures_cover_every_encoding() {
    let ds = Dataset::open(mini(), Split::All, &DatasetConfig { with_lidar: true, ..Default::default() }).unwrap();
    let mut kinds = std::collections::BTreeSet::new();
    for f in ds.frames() {
        for file in [&f.radar, &f.target, f.lidar.as_ref().unwrap()] {
            kinds.insert(match file {
                FrameFile::Dense { header, .. } => format!("{} fortran={}", header.dtype, header.fortran_order),
                FrameFile::Sparse { .. } => "npz".to_string(),
            });
        }
    }
    for k in
        ["<f4 fortran=false", "<f4 fortran=true", "<f8 fortran=false", "<f2 fortran=false", ">f4 fortran=false", "npz"]
    {
        assert!(kinds.contains(k), "fixtures lack {k}: {kinds:?}");
    }
}

#[test]
fn eighty_twenty_scene_split_sorted_by_name() {
    let cfg = DatasetConfig::default();
    let train = Dataset::open(mini(), Split::Train, &cfg).unwrap();
    let val = Dataset::open(mini(), Split::Val, &cfg).unwrap();
    let all = Dataset::open(mini(), Split::All, &cfg).unwrap();
    assert_eq!(train.scenes(), ["alpha"]);
    assert_eq!(val.scenes(), ["beta"]);
    let ids = |d: &Dataset| d.frames().iter().map(|f| f.id.to_string()).collect::<Vec<_>>();
    assert_eq!(ids(&train), ["alpha/000000", "alpha/000001", "alpha/000002", "alpha/000003"]);
    assert_eq!(ids(&val), ["beta/000000", "beta/000001"]);
    assert_eq!(ids(&all).len(), 6);
    // 000009 has no target: skipped, and said so.
    assert!(train.warnings().iter().any(|w| w.contains("1 frame file(s) without a radar/target partner")));
    // Mixed extensions pair by stem.
    let f1 = &train.frames()[1];
    assert!(f1.radar.path().ends_with("000001.npy") && f1.target.path().ends_with("000001.npz"));
}

#[test]
fn scene_split_for_five_scenes_and_for_one() {
    let tmp = tempfile::tempdir().unwrap();
    for name in ["e", "a", "d", "b", "c"] {
        copy_tree(&mini().join("beta"), &tmp.path().join(name));
    }
    std::fs::write(tmp.path().join("README.txt"), "not a scene").unwrap();
    std::fs::create_dir(tmp.path().join("not_a_scene")).unwrap();
    let cfg = DatasetConfig::default();
    assert_eq!(Dataset::open(tmp.path(), Split::Train, &cfg).unwrap().scenes(), ["a", "b", "c", "d"]);
    assert_eq!(Dataset::open(tmp.path(), Split::Val, &cfg).unwrap().scenes(), ["e"]);

    let one = tempfile::tempdir().unwrap();
    copy_tree(&mini().join("beta"), &one.path().join("solo"));
    for split in [Split::Train, Split::Val] {
        let ds = Dataset::open(one.path(), split, &cfg).unwrap();
        assert_eq!(ds.scenes(), ["solo"]);
        assert!(ds.warnings().iter().any(|w| w.contains("only one scene")), "{split}: {:?}", ds.warnings());
    }
}

#[test]
fn explicit_scene_lists_override_the_split() {
    let cfg = DatasetConfig {
        train_scenes: Some(vec!["beta".into()]),
        val_scenes: Some(vec!["alpha".into()]),
        ..Default::default()
    };
    assert_eq!(Dataset::open(mini(), Split::Train, &cfg).unwrap().scenes(), ["beta"]);
    assert_eq!(Dataset::open(mini(), Split::Val, &cfg).unwrap().scenes(), ["alpha"]);
    let bad = DatasetConfig { train_scenes: Some(vec!["gamma".into()]), ..Default::default() };
    match Dataset::open(mini(), Split::Train, &bad) {
        Err(DataError::UnknownScene { name, available, .. }) => {
            assert_eq!(name, "gamma");
            assert_eq!(available, ["alpha", "beta"]);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn lidar_is_read_only_on_request() {
    let ds = Dataset::open(mini(), Split::All, &DatasetConfig::default()).unwrap();
    assert!(matches!(ds.read(0, Modality::Lidar), Err(DataError::MissingLidar(_))));
    let tmp = tempfile::tempdir().unwrap();
    copy_tree(&mini(), tmp.path());
    std::fs::remove_file(tmp.path().join("beta/lidar_voxel/000001.npz")).unwrap();
    let cfg = DatasetConfig { with_lidar: true, ..Default::default() };
    match Dataset::open(tmp.path(), Split::Val, &cfg) {
        Err(DataError::MissingLidar(p)) => assert!(p.ends_with("beta/target_voxel/000001.npz")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn missing_root_no_scenes_no_pairs() {
    let cfg = DatasetConfig::default();
    let missing = Path::new("/definitely/not/here");
    assert!(matches!(Dataset::open(missing, Split::All, &cfg), Err(DataError::MissingRoot(p)) if p == missing));
    let empty = tempfile::tempdir().unwrap();
    assert!(matches!(Dataset::open(empty.path(), Split::All, &cfg), Err(DataError::NoScenes(_))));
    std::fs::create_dir_all(empty.path().join("s/radar_voxel")).unwrap();
    std::fs::create_dir_all(empty.path().join("s/target_voxel")).unwrap();
    std::fs::copy(mini().join("alpha/radar_voxel/000009.npz"), empty.path().join("s/radar_voxel/000009.npz")).unwrap();
    assert!(matches!(Dataset::open(empty.path(), Split::All, &cfg), Err(DataError::NoPairs { .. })));
    let zero = DatasetConfig { layout: Layout::Pad { alignment: 0 }, ..Default::default() };
    assert!(matches!(Dataset::open(mini(), Split::All, &zero), Err(DataError::Config(_))));
}

#[test]
fn same_stem_twice_is_ambiguous() {
    let tmp = tempfile::tempdir().unwrap();
    copy_tree(&mini(), tmp.path());
    std::fs::copy(mini().join("beta/radar_voxel/000001.npz"), tmp.path().join("beta/radar_voxel/000000.npz")).unwrap();
    assert!(matches!(Dataset::open(tmp.path(), Split::Val, &DatasetConfig::default()), Err(DataError::Ambiguous(..))));
}

#[test]
fn radar_target_shape_mismatch_is_refused() {
    match Dataset::open(fixtures().join("bad/mismatch"), Split::All, &DatasetConfig::default()) {
        Err(DataError::ShapeMismatch { a_shape, b_shape, a, b }) => {
            assert_eq!((a_shape, b_shape), ([6, 5, 4, 4], [6, 5, 8, 4]));
            assert!(a.ends_with("radar_voxel/000000.npz") && b.ends_with("target_voxel/000000.npz"));
        }
        other => panic!("{other:?}"),
    }
}

/// Opens and reads one file the way the dataset does.
fn read_file(path: &Path) -> Result<Vec<half::f16>, DataError> {
    let file = FrameFile::open(path)?;
    let layout = Layout::default();
    let mut out = vec![half::f16::ZERO; layout.output_shape(file.shape()).iter().product()];
    file.read_into(layout, &Reduce::for_channels(file.shape()[3], true), &mut out)?;
    Ok(out)
}

fn bad(name: &str) -> DataError {
    let path = fixtures().join("bad").join(name);
    let err = read_file(&path).expect_err(name);
    let msg = err.to_string();
    assert!(msg.contains(name), "error does not name the file: {msg}");
    err
}

#[test]
fn bad_dense_files_get_typed_errors() {
    assert!(matches!(bad("dense_int32.npy"), DataError::Format(FormatError::Dtype { dtype, .. }) if dtype == "<i4"));
    assert!(
        matches!(bad("dense_rank3.npy"), DataError::Format(FormatError::Shape { shape, .. }) if shape == [6, 5, 4])
    );
    let e = bad("dense_nan.npy");
    assert!(matches!(e, DataError::BadValue { voxel: [2, 1, 0], channel: 2, problem: "non-finite", .. }), "{e}");
    let e = bad("dense_inf.npy");
    assert!(matches!(e, DataError::BadValue { voxel: [0, 4, 1], channel: 1, problem: "non-finite", .. }), "{e}");
    let e = bad("dense_overflow.npy");
    assert!(
        matches!(e, DataError::BadValue { voxel: [5, 0, 2], channel: 1, value, problem: "float16-overflowing", .. } if value == 1e6),
        "{e}"
    );
}

#[test]
fn bad_sparse_files_get_typed_errors() {
    let e = bad("sparse_features_mismatch.npz");
    assert!(
        matches!(&e, DataError::Format(FormatError::Shape { src, shape, .. }) if src.member == Some("features.npy") && shape == &[2, 3]),
        "{e}"
    );
    assert!(
        matches!(bad("sparse_count_mismatch.npz"), DataError::Format(FormatError::Shape { shape, .. }) if shape == [1, 4])
    );
    assert!(matches!(
        bad("sparse_out_of_grid.npz"),
        DataError::OutOfGrid { index: 1, coord: [6, 0, 1], grid: [6, 5, 4], .. }
    ));
    assert!(matches!(bad("sparse_negative.npz"), DataError::OutOfGrid { index: 1, coord: [0, -1, 1], .. }));
    assert!(matches!(
        bad("sparse_nan.npz"),
        DataError::BadValue { voxel: [4, 0, 1], channel: 2, problem: "non-finite", .. }
    ));
    assert!(matches!(
        bad("sparse_overflow.npz"),
        DataError::BadValue { voxel: [1, 2, 3], channel: 1, problem: "float16-overflowing", .. }
    ));
    assert!(matches!(bad("sparse_duplicate.npz"), DataError::Duplicate { coord: [1, 2, 3], .. }));
    assert!(
        matches!(bad("sparse_missing_features.npz"), DataError::Format(FormatError::MissingMember { src }) if src.member == Some("features.npy"))
    );
    assert!(
        matches!(bad("sparse_float_coords.npz"), DataError::Format(FormatError::Dtype { dtype, .. }) if dtype == "<f4")
    );
    assert!(
        matches!(bad("sparse_int_features.npz"), DataError::Format(FormatError::Dtype { dtype, .. }) if dtype == "<i4")
    );
    assert!(
        matches!(bad("sparse_shape_rank.npz"), DataError::Format(FormatError::Shape { shape, .. }) if shape == [3])
    );
    assert!(
        matches!(bad("sparse_coords_rank.npz"), DataError::Format(FormatError::Shape { shape, .. }) if shape == [2, 2])
    );
}

#[test]
fn truncated_and_corrupt_files_are_refused_without_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let dense = std::fs::read(mini().join("alpha/radar_voxel/000001.npy")).unwrap();
    let sparse = std::fs::read(mini().join("alpha/target_voxel/000000.npz")).unwrap();
    let stored = std::fs::read(mini().join("alpha/target_voxel/000001.npz")).unwrap();
    let write = |name: &str, bytes: &[u8]| {
        let p = tmp.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    // Dense: every truncation point, a few bytes of garbage appended.
    for cut in [0, 5, 9, 60, 127, 128, dense.len() / 2, dense.len() - 1] {
        let p = write("t.npy", &dense[..cut]);
        let err = read_file(&p).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::Format(FormatError::Header { .. }) | DataError::Format(FormatError::Truncated { .. })
            ),
            "cut {cut}: {err}"
        );
    }
    let mut longer = dense.clone();
    longer.extend_from_slice(b"junk");
    assert!(matches!(read_file(&write("l.npy", &longer)), Err(DataError::Format(FormatError::Truncated { .. }))));
    let mut bad_magic = dense.clone();
    bad_magic[1] = b'X';
    assert!(matches!(read_file(&write("m.npy", &bad_magic)), Err(DataError::Format(FormatError::Header { .. }))));
    // Sparse: truncations and flipped bytes anywhere give an error, never a panic.
    for (name, bytes) in [("d.npz", &sparse), ("s.npz", &stored)] {
        for cut in (0..bytes.len()).step_by(bytes.len() / 40 + 1) {
            assert!(read_file(&write(name, &bytes[..cut])).is_err(), "{name} cut at {cut} accepted");
        }
        for pos in (0..bytes.len()).step_by(bytes.len() / 60 + 1) {
            let mut b = bytes.to_vec();
            b[pos] ^= 0x5a;
            let _ = read_file(&write(name, &b)); // may be accepted if the byte is unused; must not panic
        }
    }
    // A file that changes after the dataset opened it is caught at read time.
    let p = write("shrink.npy", &dense);
    let file = FrameFile::open(&p).unwrap();
    std::fs::write(&p, &dense[..dense.len() - 4]).unwrap();
    let mut out = vec![half::f16::ZERO; Layout::default().output_shape(file.shape()).iter().product()];
    let err = file.read_into(Layout::default(), &Reduce::for_channels(4, false), &mut out).unwrap_err();
    assert!(matches!(err, DataError::Format(FormatError::Truncated { .. })), "{err}");
}

mod common;
use common::{copy_tree, example};

#[test]
fn inspect_dataset_prints_the_numpy_lines() {
    let out = Command::new(example("inspect_dataset")).arg(mini()).args(["--split", "all"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let want = std::fs::read_to_string(fixtures().join("expected_inspect_all.txt")).unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), want);

    let out = Command::new(example("inspect_dataset"))
        .arg(mini())
        .args(["--split", "val", "--resample", "4,8,8"])
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success());
    assert_eq!(stdout.lines().count(), 2);
    assert!(stdout.lines().all(|l| l.starts_with("beta/") && l.contains(" shape=4,4,8,8 ")), "{stdout}");

    let out = Command::new(example("inspect_dataset")).arg(fixtures().join("bad/mismatch")).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("shape mismatch"));
}
