//! Link-time setup for libtorch (see README, "How libtorch is found").
//!
//! * Adds an rpath to libtorch's `lib/` directory to every binary, test and bench of this
//!   package, so they run without a hand-set `LD_LIBRARY_PATH`, and one to OpenBLAS's
//!   OpenMP build when it is installed (see `crates/widthlab-kernels/src/threads.rs`).
//! * Links `libtorch_cuda.so` (when the libtorch has it) under `--no-as-needed`, so it is
//!   kept as a dependency although no symbol of it is referenced directly (tch-rs issues 201
//!   and 980); without it `tch::Cuda::is_available()` is false on GPU machines. `widthlab::device` also
//!   `dlopen`s the library at run time as a second line of defence (tch-rs issue 988).
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-changed=build.rs");
    let Ok(libtorch) = std::env::var("LIBTORCH") else {
        println!("cargo:warning=LIBTORCH is not set: run `bash environment/setup.sh` first");
        return;
    };
    let root = PathBuf::from(libtorch);
    // Resolve the `.libtorch` symlink so the rpath survives a re-created link.
    let lib = std::fs::canonicalize(root.join("lib")).unwrap_or_else(|_| root.join("lib"));
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    // rustc passes `--as-needed` before its libraries and appends link-args at the end, so
    // the CUDA libraries are named again after `--no-as-needed` to keep them as NEEDED.
    if lib.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-L{}", lib.display());
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch_cuda");
        println!("cargo:rustc-link-arg=-ltorch");
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
    }
    // libtorch's own libgomp as a direct dependency, so the loader maps it (through the rpath)
    // before OpenBLAS's OpenMP build asks for a `libgomp.so.1` of its own: one OpenMP runtime,
    // libtorch's, serves both.
    if lib.join("libgomp.so.1").exists() {
        println!("cargo:rustc-link-arg=-L{}", lib.display());
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-l:libgomp.so.1");
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
    }
    println!("cargo:rustc-env=WIDTHLAB_LIBTORCH_LIB={}", lib.display());
    // OpenBLAS's OpenMP build (Debian's libopenblas0-openmp, installed by
    // environment/setup.sh) ahead of the system default, the pthreads build: it shares
    // libgomp's threads with libtorch instead of competing with them (see
    // crates/widthlab-kernels/src/threads.rs).
    for dir in ["/usr/lib/x86_64-linux-gnu/openblas-openmp", "/usr/lib/aarch64-linux-gnu/openblas-openmp"] {
        let so = std::path::Path::new(dir).join("libopenblas.so.0");
        if so.exists() {
            println!("cargo:rerun-if-changed={}", so.display());
            println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
        }
    }
}
