//! Link-time setup for libtorch, as in the root crate's `build.rs`: an rpath to libtorch's
//! `lib/` directory on every binary and test of this crate, so its unit tests run without a
//! hand-set `LD_LIBRARY_PATH` (cargo does not pass the `[env]` value of `.cargo/config.toml`
//! to the test binaries it runs).
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-changed=build.rs");
    let Ok(libtorch) = std::env::var("LIBTORCH") else {
        println!("cargo:warning=LIBTORCH is not set: run `bash environment/setup.sh` first");
        return;
    };
    let root = PathBuf::from(libtorch);
    let lib = std::fs::canonicalize(root.join("lib")).unwrap_or_else(|_| root.join("lib"));
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
}
