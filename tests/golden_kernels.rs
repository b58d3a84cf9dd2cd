//! The golden runs of `tests/golden.rs` with every product forced onto widthlab's kernels
//! (`WIDTHLAB_KERNELS=kernels`), the code path every product took before the kernels moved
//! into `crates/widthlab-kernels`: the results must be bitwise those the code of before the
//! move recorded (on a CPU with the instruction set they were written under; see
//! `tests/golden/cases.rs`).
//!
//! `WIDTHLAB_GOLDEN_WRITE=1` rewrites the fixture instead (only for a change meant to change
//! results; say why in its commit).
#[path = "golden/cases.rs"]
mod cases;

use widthlab::kernels::dispatch::{self, Mode, Path};

#[test]
fn same_seed_results_are_bitwise_unchanged_on_the_kernels() {
    // (read once per process, at the first product: this binary's only test sets it first)
    std::env::set_var("WIDTHLAB_KERNELS", "kernels");
    assert_eq!(dispatch::mode(), Mode::Forced(Path::Kernels));
    let got = cases::compute();
    if std::env::var("WIDTHLAB_GOLDEN_WRITE").is_ok() {
        cases::write(&got);
        return;
    }
    cases::check(&got, true);
}
