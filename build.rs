//! Links libtorch_cuda even though no symbol of it is referenced (so CUDA is
//! registered on GPU hosts) and records an rpath to the libtorch lib dir so
//! binaries, tests and benches run without LD_LIBRARY_PATH; compiles the
//! C++ shim (`csrc/shim.cpp`) against the same libtorch headers.
use std::path::Path;

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        return;
    };
    // Resolve the checkout's `.libtorch` link so binaries keep working if it moves.
    let lib = Path::new(&lib).canonicalize().unwrap_or_else(|_| Path::new(&lib).to_path_buf());
    let lib = lib.as_path();
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    let include = lib.parent().expect("libtorch lib dir has a parent").join("include");
    println!("cargo:rerun-if-changed=csrc/shim.cpp");
    cc::Build::new()
        .cpp(true)
        .pic(true)
        .warnings(false)
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag("-D_GLIBCXX_USE_CXX11_ABI=1")
        .file("csrc/shim.cpp")
        .compile("radvox_shim");
    if lib.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
}
