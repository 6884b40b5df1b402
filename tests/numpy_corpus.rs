//! The reader against the valid variations numpy itself writes
//! (`fixtures/numpy_corpus/make_corpus.py`): every `.npz` member in C and
//! Fortran order, every integer dtype for coords, f2/f4/f8 features in both
//! byte orders, shape members of several dtypes, extra members, stored and
//! deflated archives, dense `.npy` in both orders: each read bit for bit as
//! numpy reads it. Files that are valid numpy but not valid frames are
//! refused with the real reason.
#![allow(clippy::result_large_err)]

use std::path::{Path, PathBuf};
use std::process::Command;

use half::f16;
use radvox::data::{layout::Layout, resample::Reduce, DataError, FrameFile};
use serde_json::Value;

mod common;

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/numpy_corpus")
}

fn expected() -> Value {
    serde_json::from_str(&std::fs::read_to_string(corpus().join("expected.json")).unwrap()).unwrap()
}

fn read(path: &Path) -> Result<Vec<f16>, DataError> {
    let file = FrameFile::open(path)?;
    let layout = Layout::Pad { alignment: 32 };
    let mut out = vec![f16::ZERO; layout.output_shape(file.shape()).iter().product()];
    file.read_into(layout, &Reduce::for_channels(file.shape()[3], true), &mut out)?;
    Ok(out)
}

#[test]
fn every_numpy_variation_reads_as_numpy_reads_it() {
    let exp = expected();
    let variants = exp["variants"].as_object().unwrap();
    assert!(variants.len() >= 60, "{} variants", variants.len());
    let mut fortran_members = 0;
    for (name, v) in variants {
        let path = corpus().join("tree/corpus/target_voxel").join(v["file"].as_str().unwrap());
        let got = read(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        let want: Vec<(usize, u16)> = v["target"]["nonzero"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p[0].as_u64().unwrap() as usize, p[1].as_u64().unwrap() as u16))
            .collect();
        let nonzero: Vec<(usize, u16)> =
            got.iter().enumerate().filter(|(_, h)| h.to_bits() & 0x7fff != 0).map(|(i, h)| (i, h.to_bits())).collect();
        assert_eq!(nonzero.len(), want.len(), "{name}: non-zero count");
        assert!(nonzero == want, "{name}: first difference {:?}", nonzero.iter().zip(&want).find(|(a, b)| a != b));
        fortran_members += name.contains("_F") as usize;
    }
    assert!(fortran_members >= 20, "the corpus covers Fortran order: {fortran_members}");
}

#[test]
fn valid_numpy_that_is_no_frame_is_refused_with_the_reason() {
    let exp = expected();
    for (file, why) in exp["refused"].as_object().unwrap() {
        let path = corpus().join("refused").join(file);
        let err = read(&path).expect_err(file).to_string();
        assert!(err.contains(file.as_str()), "{file}: the error names the file: {err}");
        assert!(err.contains(why.as_str().unwrap()), "{file}: {err} (expected: {why})");
    }
}

#[test]
fn inspect_dataset_prints_numpys_figures_for_each_variation() {
    let out = Command::new(common::example("inspect_dataset")).arg(corpus().join("tree")).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let want = std::fs::read_to_string(corpus().join("expected_inspect.txt")).unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), want);
}
