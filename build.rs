//! Links libtorch_cuda even though no symbol of it is referenced (so CUDA is
//! registered on GPU hosts) and records an rpath to the libtorch lib dir so
//! binaries, tests and benches run without LD_LIBRARY_PATH.
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
    if lib.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
}
