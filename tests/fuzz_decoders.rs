//! Property-based fuzzing of the two decoders (dense `.npy`, sparse `.npz`)
//! and the header parser: mutated, truncated and garbage inputs must give an
//! error or a valid frame, never a panic, an out-of-bounds read or a huge
//! allocation. Cases are seeded by proptest; failures are persisted by it.

use std::path::Path;

use half::f16;
use proptest::prelude::*;
use radvox::data::frame::{read_sparse as read_npz, write_sparse as write_npz, SparseFrame};
use radvox::data::FrameFile;
use radvox::data::{layout::Layout, resample::Reduce};
use radvox::io::npy::{encode_npy, NpyHeader};
use radvox::io::Source;

fn small_frame() -> SparseFrame {
    SparseFrame {
        shape: [5, 4, 3, 4],
        coords: vec![[0, 0, 0], [4, 3, 2], [2, 1, 1]],
        features: vec![1.0, 2.5, -0.5, 1.0, 1.0, 7.0, 0.25, 0.0, 1.0, 3.0, 1.5, 1.0],
    }
}

fn valid_npz() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("f.npz");
    write_npz(&p, &small_frame(), true).unwrap();
    std::fs::read(p).unwrap()
}

fn valid_npy() -> Vec<u8> {
    let data: Vec<f32> = (0..5 * 4 * 3 * 4).map(|i| (i % 7) as f32 * 0.5).collect();
    encode_npy(&[5, 4, 3, 4], &data)
}

/// Opens and reads a file in both layouts; the output must be finite.
fn decode(dir: &Path, name: &str, bytes: &[u8]) {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    let Ok(file) = FrameFile::open(&p) else { return };
    for layout in [Layout::Pad { alignment: 4 }, Layout::Resample { zhw: [2, 3, 2] }] {
        let n =
            layout.output_shape(file.shape()).iter().try_fold(1usize, |a, &d| a.checked_mul(d)).unwrap_or(usize::MAX);
        if n > 1 << 24 {
            continue; // a valid header for a big grid: nothing to read in a fuzz case
        }
        let mut out = vec![f16::ZERO; n];
        if file.read_into(layout, &Reduce::for_channels(file.shape()[3], true), &mut out).is_ok() {
            assert!(out.iter().all(|v| v.is_finite()));
        }
    }
}

fn mutate(mut bytes: Vec<u8>, edits: &[(usize, u8)], cut: Option<usize>) -> Vec<u8> {
    for &(pos, val) in edits {
        let n = bytes.len();
        bytes[pos % n] = val;
    }
    if let Some(c) = cut {
        bytes.truncate(c % (bytes.len() + 1));
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn header_parser_never_panics(tail in proptest::collection::vec(any::<u8>(), 0..300), version in 0u8..5) {
        let mut bytes = b"\x93NUMPY".to_vec();
        bytes.push(version);
        bytes.push(0);
        bytes.extend(tail);
        let _ = NpyHeader::read(&bytes[..], &Source { path: "fuzz".into(), member: None });
    }

    #[test]
    fn header_with_random_fields(
        descr in prop::sample::select(vec!["<f4", ">f8", "<f2", "<i8", "|u1", "<c8", "O", "<U3", "xyz", ""]),
        dims in proptest::collection::vec(prop::sample::select(vec![0usize, 1, 3, 4, 5, 1 << 20, 1 << 40, usize::MAX]), 0..6),
        fortran in any::<bool>(),
        extra in 0usize..64,
    ) {
        let shape = dims.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ");
        let text = format!("{{'descr': '{descr}', 'fortran_order': {}, 'shape': ({shape},), }}\n", if fortran { "True" } else { "False" });
        let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
        bytes.extend((text.len() as u16).to_le_bytes());
        bytes.extend(text.as_bytes());
        bytes.extend(std::iter::repeat_n(0x3f, extra * 8));
        let dir = tempfile::tempdir().unwrap();
        decode(dir.path(), "h.npy", &bytes);
    }

    #[test]
    fn mutated_npy_never_panics(edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8), cut in proptest::option::of(any::<usize>())) {
        let dir = tempfile::tempdir().unwrap();
        decode(dir.path(), "m.npy", &mutate(valid_npy(), &edits, cut));
    }

    #[test]
    fn mutated_npz_never_panics(edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8), cut in proptest::option::of(any::<usize>())) {
        let dir = tempfile::tempdir().unwrap();
        let bytes = mutate(valid_npz(), &edits, cut);
        decode(dir.path(), "m.npz", &bytes);
        let p = dir.path().join("m.npz");
        if let Ok(frame) = read_npz(&p) {
            prop_assert_eq!(frame.features.len(), frame.coords.len() * frame.shape[3]);
        }
    }
}

/// A well-formed zip whose members are (mutated) `.npy` streams: the CRCs
/// are right, so the member decoders themselves are exercised.
fn npz_of(members: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, bytes) in members {
        zip.start_file(*name, zip::write::FileOptions::default()).unwrap();
        std::io::Write::write_all(&mut zip, bytes).unwrap();
    }
    zip.finish().unwrap().into_inner()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 600, ..ProptestConfig::default() })]

    #[test]
    fn mutated_npz_members_never_panic(
        member in 0usize..3,
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
        cut in proptest::option::of(any::<usize>()),
    ) {
        let f = small_frame();
        let coords: Vec<i64> = f.coords.iter().flat_map(|c| c.map(i64::from)).collect();
        let feats: Vec<f32> = f.features.iter().map(|&v| v as f32).collect();
        let mut members = vec![
            ("coords.npy", encode_npy(&[3, 3], &coords)),
            ("features.npy", encode_npy(&[3, 4], &feats)),
            ("shape.npy", encode_npy(&[4], &[5i64, 4, 3, 4])),
        ];
        members[member].1 = mutate(members[member].1.clone(), &edits, cut);
        let dir = tempfile::tempdir().unwrap();
        decode(dir.path(), "z.npz", &npz_of(&members));
    }
}

#[test]
fn round_trip_of_the_writers() {
    let dir = tempfile::tempdir().unwrap();
    for compressed in [true, false] {
        let p = dir.path().join(format!("rt{compressed}.npz"));
        write_npz(&p, &small_frame(), compressed).unwrap();
        assert_eq!(read_npz(&p).unwrap(), small_frame());
    }
}

/// An independent `.npy` encoder: any descr, either order, explicit loops.
fn npy_bytes(descr: &str, shape: &[usize], fortran: bool, values: &[f64]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let tuple = if dims.len() == 1 { format!("({},)", dims[0]) } else { format!("({})", dims.join(", ")) };
    let order = if fortran { "True" } else { "False" };
    let mut text = format!("{{'descr': '{descr}', 'fortran_order': {order}, 'shape': {tuple}, }}");
    while (10 + text.len() + 1) % 64 != 0 {
        text.push(' ');
    }
    text.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend((text.len() as u16).to_le_bytes());
    out.extend(text.as_bytes());
    // storage order: C is row-major; Fortran is column-major
    let n = values.len();
    let strides_c: Vec<usize> = (0..shape.len()).map(|k| shape[k + 1..].iter().product::<usize>()).collect::<Vec<_>>();
    for pos in 0..n {
        let c_index = if fortran {
            // the multi-index of column-major position `pos`, as a C index
            let (mut rest, mut ci) = (pos, 0);
            for (k, &d) in shape.iter().enumerate() {
                ci += (rest % d) * strides_c[k];
                rest /= d;
            }
            ci
        } else {
            pos
        };
        let v = values[c_index];
        let be = descr.starts_with('>');
        let mut b: Vec<u8> = match &descr[1..] {
            "i1" => vec![v as i8 as u8],
            "u1" => vec![v as u8],
            "i2" => (v as i16).to_le_bytes().to_vec(),
            "u2" => (v as u16).to_le_bytes().to_vec(),
            "i4" => (v as i32).to_le_bytes().to_vec(),
            "u4" => (v as u32).to_le_bytes().to_vec(),
            "i8" => (v as i64).to_le_bytes().to_vec(),
            "u8" => (v as u64).to_le_bytes().to_vec(),
            "f2" => f16::from_f64(v).to_le_bytes().to_vec(),
            "f4" => (v as f32).to_le_bytes().to_vec(),
            "f8" => v.to_le_bytes().to_vec(),
            other => panic!("{other}"),
        };
        if be {
            b.reverse();
        }
        out.extend(b);
    }
    out
}

const INT_DESCRS: [&str; 14] =
    ["|i1", "|u1", "<i2", ">i2", "<u2", ">u2", "<i4", ">i4", "<u4", ">u4", "<i8", ">i8", "<u8", ">u8"];
const FLOAT_DESCRS: [&str; 6] = ["<f2", ">f2", "<f4", ">f4", "<f8", ">f8"];

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Valid but unusual sparse frames (member order, dtype, byte order)
    /// decode to exactly the coordinates and values that were encoded.
    #[test]
    fn unusual_valid_npz_members_decode_exactly(
        cells in proptest::collection::btree_set(0usize..(7 * 5 * 6), 0..20),
        coords_descr in prop::sample::select(INT_DESCRS.to_vec()),
        features_descr in prop::sample::select(FLOAT_DESCRS.to_vec()),
        shape_descr in prop::sample::select(INT_DESCRS.to_vec()),
        (cf, ff) in (any::<bool>(), any::<bool>()),
        seed in any::<u64>(),
    ) {
        let grid = [7usize, 5, 6, 3];
        let coords: Vec<[u32; 3]> = cells.iter().map(|&f| [(f / 30) as u32, (f / 6 % 5) as u32, (f % 6) as u32]).collect();
        // values every float dtype holds exactly (multiples of 1/8 below 256)
        let features: Vec<f64> = (0..coords.len() * 3).map(|i| ((seed.wrapping_mul(i as u64 + 7) >> 40) % 2048) as f64 / 8.0).collect();
        let ints: Vec<f64> = coords.iter().flat_map(|c| c.map(f64::from)).collect();
        let members = vec![
            ("coords.npy", npy_bytes(coords_descr, &[coords.len(), 3], cf, &ints)),
            ("features.npy", npy_bytes(features_descr, &[coords.len(), 3], ff, &features)),
            ("shape.npy", npy_bytes(shape_descr, &[4], false, &grid.map(|d| d as f64))),
        ];
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("u.npz");
        std::fs::write(&p, npz_of(&members)).unwrap();
        let frame = read_npz(&p).unwrap();
        prop_assert_eq!(frame.shape, grid);
        prop_assert_eq!(frame.coords, coords);
        prop_assert_eq!(frame.features, features);
    }

    /// Valid but unusual dense frames (order, dtype, byte order) lay out to
    /// exactly the f16 grid of the encoded values.
    #[test]
    fn unusual_valid_dense_npy_lays_out_exactly(
        descr in prop::sample::select(FLOAT_DESCRS.to_vec()),
        fortran in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let shape = [5usize, 4, 3, 2];
        let n: usize = shape.iter().product();
        let values: Vec<f64> = (0..n)
            .map(|i| if (seed >> (i % 64)) & 1 == 1 { ((seed.wrapping_mul(i as u64 + 3) >> 44) % 4096) as f64 / 16.0 - 100.0 } else { 0.0 })
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.npy");
        std::fs::write(&p, npy_bytes(descr, &shape, fortran, &values)).unwrap();
        let file = FrameFile::open(&p).unwrap();
        let layout = Layout::Pad { alignment: 4 };
        let o = layout.output_shape(shape);
        let mut out = vec![f16::ZERO; o.iter().product()];
        file.read_into(layout, &Reduce::for_channels(2, false), &mut out).unwrap();
        for (i, got) in out.iter().enumerate() {
            let (c, z, x, y) = (i / (o[1] * o[2] * o[3]), i / (o[2] * o[3]) % o[1], i / o[3] % o[2], i % o[3]);
            let want = if x < 5 && y < 4 && z < 3 { values[((x * 4 + y) * 3 + z) * 2 + c] } else { 0.0 };
            prop_assert_eq!(got.to_bits(), f16::from_f32(want as f32).to_bits(), "c{} z{} x{} y{}", c, z, x, y);
        }
    }
}
