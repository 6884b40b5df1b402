//! Bit-for-bit parity of the voxelizer with the independent numpy
//! implementation in `fixtures/voxelize/make_voxelize_fixtures.py` (its
//! outputs beside it).

use std::path::{Path, PathBuf};

use radvox::data::voxelize::{
    build_target, voxelize, CloudReader, FileReader, GridSpec, SparseGrid, TargetPolicy, LIDAR_COLS, RADAR_COLS,
};
use radvox::io::npy::read_npy;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/voxelize")
}

fn expected(frame: usize, grid: &str) -> SparseGrid {
    let (ch, c) = read_npy(&dir().join(format!("frame{frame}_{grid}_coords.npy"))).expect("coords fixture");
    let (fh, f) = read_npy(&dir().join(format!("frame{frame}_{grid}_features.npy"))).expect("features fixture");
    assert_eq!(ch.shape.len(), 2);
    assert_eq!(fh.shape, vec![ch.shape[0], 4]);
    let ints = ch.c_order_i64(&c).unwrap();
    let coords = ints.chunks_exact(3).map(|v| [v[0] as u32, v[1] as u32, v[2] as u32]).collect();
    let features = fh.c_order_f64(&f).into_iter().map(|v| v as f32).collect();
    SparseGrid { shape: [600, 200, 80, 4], coords, features }
}

fn assert_bits(name: &str, got: &SparseGrid, want: &SparseGrid) {
    assert_eq!(got.shape, want.shape, "{name}: shape");
    assert_eq!(got.coords, want.coords, "{name}: coords");
    let bits = |g: &SparseGrid| g.features.iter().map(|v| v.to_bits()).collect::<Vec<u32>>();
    let (a, b) = (bits(got), bits(want));
    if let Some(i) = a.iter().zip(&b).position(|(x, y)| x != y) {
        panic!(
            "{name}: voxel {:?} channel {}: rust {} vs numpy {}",
            got.coords[i / 4],
            i % 4,
            got.features[i],
            want.features[i]
        );
    }
    assert_eq!(a.len(), b.len(), "{name}: feature count");
}

#[test]
fn voxelizer_matches_numpy_bit_for_bit() {
    let reader = FileReader;
    let spec = GridSpec::default();
    let aware = TargetPolicy { radar_radius: Some(2), ..TargetPolicy::sensor_aware() };
    let mut checked = 0;
    for frame in 0..3 {
        let radar = reader.read_cloud(&dir().join(format!("frame{frame}_radar.npy")), RADAR_COLS).expect("radar");
        let lidar = reader.read_cloud(&dir().join(format!("frame{frame}_lidar.npy")), LIDAR_COLS).expect("lidar");
        let (rg, rs) = voxelize(&radar, &spec).expect("radar voxelize");
        let (lg, _) = voxelize(&lidar, &spec).expect("lidar voxelize");
        assert_eq!(rs.points_in, radar.len());
        assert_bits(&format!("frame {frame} radar"), &rg, &expected(frame, "radar"));
        assert_bits(&format!("frame {frame} lidar"), &lg, &expected(frame, "lidar"));
        let t = build_target(&lg, &rg, &spec, &TargetPolicy::plain());
        assert_bits(&format!("frame {frame} target"), &t, &expected(frame, "target"));
        let a = build_target(&lg, &rg, &spec, &aware);
        assert_bits(&format!("frame {frame} aware"), &a, &expected(frame, "aware"));
        checked += rg.len() + lg.len() + t.len() + a.len();
    }
    assert!(checked > 2000, "fixtures too small: {checked} voxels");
}

#[test]
fn fixture_frame0_exercises_the_edge_cases() {
    let reader = FileReader;
    let radar = reader.read_cloud(&dir().join("frame0_radar.npy"), RADAR_COLS).expect("radar");
    let (g, s) = voxelize(&radar, &GridSpec::default()).expect("voxelize");
    assert_eq!(s.dropped_non_finite, 5);
    assert!(s.dropped_out_of_range >= 4, "{s:?}");
    assert!(g.find([0, 0, 0]).is_some(), "the lower corner is kept");
    assert!(g.find([599, 199, 79]).is_some(), "just below max is clipped into the last voxel");
    assert!(s.points_in - s.dropped_non_finite - s.dropped_out_of_range > g.len(), "some voxels hold several points");
}
