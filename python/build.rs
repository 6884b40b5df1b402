//! Links the extension the way radvox's own binaries are linked: an rpath
//! to the libtorch it was built against (`import torch` loads the same
//! files first) and libtorch_cuda kept (radvox's NCCL process group and
//! CUDA registration need it; the linker would drop it as unreferenced).
fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") else { return };
    let lib = std::path::Path::new(&lib).canonicalize().unwrap_or_else(|_| lib.into());
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    if lib.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-search=native={}", lib.display());
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
}
