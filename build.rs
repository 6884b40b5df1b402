//! Links libtorch_cuda even though no symbol of it is referenced (so CUDA is
//! registered on GPU hosts) and records an rpath to the libtorch lib dir so
//! binaries, tests and benches run without LD_LIBRARY_PATH; compiles the
//! C++ shim (`csrc/shim.cpp`) against the same libtorch headers. Fails the
//! build, saying what to do, when libtorch or its headers cannot be found.
use std::path::Path;

fn fail(msg: String) -> ! {
    panic!("radvox build: {msg}\n(run `bash scripts/libtorch.sh`, which installs libtorch and links it as .libtorch)")
}

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    println!("cargo:rerun-if-changed=csrc");
    git_commit();
    let lib = std::env::var("DEP_TCH_LIBTORCH_LIB")
        .unwrap_or_else(|_| fail("torch-sys did not report libtorch's lib dir (DEP_TCH_LIBTORCH_LIB)".into()));
    // Resolve the checkout's `.libtorch` link so binaries keep working if it moves.
    let lib = Path::new(&lib).canonicalize().unwrap_or_else(|e| fail(format!("libtorch lib dir {lib}: {e}")));
    let include = lib.parent().map(|p| p.join("include")).unwrap_or_default();
    for header in ["ATen/ATen.h", "ATen/autocast_mode.h", "c10/core/CPUAllocator.h", "torch/csrc/api/include"] {
        if !include.join(header).exists() {
            fail(format!("libtorch header {} not found", include.join(header).display()));
        }
    }
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .pic(true)
        .warnings(false)
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        // the wheel ships ProcessGroupGloo.hpp without the gloo headers it names
        .include("csrc/gloo_decls")
        .flag("-std=c++17")
        .flag("-D_GLIBCXX_USE_CXX11_ABI=1")
        .define("USE_C10D_GLOO", None)
        .file("csrc/shim.cpp")
        .file("csrc/dist.cpp");
    // NCCL: ProcessGroupNCCL.hpp needs nccl.h and the CUDA headers (crt/ and
    // nv/target come from the nvidia-cuda-crt/-cccl wheels scripts/libtorch.sh adds).
    let nvidia = lib.parent().and_then(Path::parent).map(|p| p.join("nvidia")).unwrap_or_default();
    let cuda_inc = nvidia.join("cu13/include");
    let nccl_inc = nvidia.join("nccl/include");
    let nccl = lib.join("libtorch_cuda.so").exists()
        && ["nccl.h"].iter().all(|h| nccl_inc.join(h).exists())
        && ["cuda_runtime_api.h", "crt/host_config.h", "nv/target"].iter().all(|h| cuda_inc.join(h).exists());
    if nccl {
        build.include(&nccl_inc).include(&cuda_inc).define("USE_C10D_NCCL", None).define("RADVOX_NCCL", None);
    } else {
        println!("cargo:warning=radvox: NCCL headers not found under {}: data parallelism on CUDA is unavailable (Gloo/CPU works)", nvidia.display());
    }
    build.compile("radvox_shim");
    if lib.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
}

/// Records the commit being built as `RADVOX_GIT_COMMIT` (data-parallel ranks
/// compare it); nothing when this is not a git checkout.
fn git_commit() {
    let git = Path::new(".git");
    if !git.is_dir() {
        return;
    }
    println!("cargo:rerun-if-changed=.git/HEAD");
    if let Some(r) = std::fs::read_to_string(git.join("HEAD"))
        .ok()
        .and_then(|h| h.strip_prefix("ref: ").map(|r| r.trim().to_string()))
    {
        // only files that exist: a missing one would rerun this script on every build
        for f in [r.as_str(), "packed-refs"].map(|f| git.join(f)).iter().filter(|f| f.exists()) {
            println!("cargo:rerun-if-changed={}", f.display());
        }
    }
    let out = std::process::Command::new("git").args(["rev-parse", "--short=12", "HEAD"]).output();
    if let Some(o) = out.ok().filter(|o| o.status.success()) {
        println!("cargo:rustc-env=RADVOX_GIT_COMMIT=commit {}", String::from_utf8_lossy(&o.stdout).trim());
    }
}
