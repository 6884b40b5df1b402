//! The build links libtorch_cuda (the linker would drop it: no symbol of it is
//! referenced) and records an rpath, so binaries use a GPU when one exists
//! and run without LD_LIBRARY_PATH.

use std::process::Command;

fn dynamic_section() -> String {
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("readelf").arg("-d").arg(&exe).output().expect("readelf (binutils) is needed for this test");
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn libtorch_cuda_is_needed_when_libtorch_has_it() {
    let dynamic = dynamic_section();
    let needed: Vec<&str> = dynamic.lines().filter(|l| l.contains("(NEEDED)")).collect();
    assert!(needed.iter().any(|l| l.contains("libtorch_cpu.so")), "{dynamic}");
    let lib = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".libtorch/lib");
    if lib.join("libtorch_cuda.so").exists() {
        assert!(needed.iter().any(|l| l.contains("[libtorch_cuda.so]")), "libtorch_cuda.so not NEEDED:\n{dynamic}");
    }
}

#[test]
fn rpath_points_at_libtorch() {
    let dynamic = dynamic_section();
    let runpath = dynamic.lines().find(|l| l.contains("(RUNPATH)") || l.contains("(RPATH)")).expect("no RUNPATH");
    assert!(runpath.contains("torch/lib"), "{runpath}");
}

#[test]
fn libtorch_runs_on_cpu() {
    // Loads with libtorch_cuda linked and no GPU; a real op gives a real value.
    let t = tch::Tensor::from_slice(&[1.0f32, 2.0, 3.0]).to_kind(tch::Kind::Half);
    assert_eq!(f64::try_from(t.sum(tch::Kind::Float)).unwrap(), 6.0);
    if std::env::var_os("RADVOX_EXPECT_CUDA").is_some() {
        assert!(tch::Cuda::is_available(), "RADVOX_EXPECT_CUDA set but CUDA is unavailable");
    }
}
