//! Golden values: same-seed CPU results of a few small runs, recorded in
//! `tests/golden/results.json` by the code before the kernels moved into
//! `crates/widthlab-kernels` (commit cde86f5; the muP case re-recorded by main at b88cb64,
//! whose per-layer rules in absolute width changed it; all cases re-recorded on an AVX2 CPU
//! when the initial weights' spectral norms came to be converged by Lanczos, which moved the
//! `align_op_prop` rows by up to 8.2e-3 relative; every other value moved by at most 9.1e-5,
//! the AVX-512 -> AVX2 rounding): training losses of MLP runs (plain SGD fused
//! into the hand-written backward, at one and two threads; SGD with biases and muP
//! multipliers; Adam, whose weight gradients are products of their own), every RCC row of two
//! small coordinate checks (a probe larger than the thin kernel's 64 rows and one below it;
//! plain SGD measured from the step's low-rank factors, Adam from weight copies), and the
//! records of one small learning-rate sweep. See `tests/golden/cases.rs`.
//!
//! This test runs them on the default path. Before the move every product ran on widthlab's
//! kernels; now each product shape takes the faster of the kernels and libtorch's `mm`,
//! timed on this CPU (`widthlab::kernels::dispatch`). Where every product the runs computed
//! took the kernels, the results must be bitwise the fixture's. Where some took libtorch
//! (on an Intel Xeon with AVX-512, OpenBLAS's and MKL's products beat the kernels for some
//! small shapes), those products sum in another order and the results can only agree to float
//! rounding: relative `1e-3`, far below any effect these runs measure and above what rounding
//! grows to in them (the RCC's update metrics are differences of nearby numbers, where the
//! products' rounding of `1e-7` shows as up to `1.2e-4`). The test then says which products
//! took libtorch. `tests/golden_kernels.rs` forces the kernels throughout, the code path of
//! before the move, and requires bitwise equality.
//!
//! Bits also depend on the vector instructions the kernels run (the summation order of their
//! tiles): the fixture stores the instruction set it was written under, and on a CPU with
//! another one both tests compare to rounding and say so.
//!
//! Rewrite the fixture only for a change meant to change results, and say why in its commit:
//! `WIDTHLAB_GOLDEN_WRITE=1 cargo test --release --test golden_kernels`.
#[path = "golden/cases.rs"]
mod cases;

use widthlab::kernels::dispatch::{self, Path};

#[test]
fn same_seed_results_are_unchanged_on_the_default_path() {
    let got = cases::compute();
    let on_libtorch: Vec<String> = dispatch::choices().into_iter().filter(|c| c.path == Path::Libtorch).map(|c| c.product).collect();
    if !on_libtorch.is_empty() {
        eprintln!(
            "{} product shapes took libtorch's mm on this CPU (faster when timed), so the results are compared to rounding, not bitwise: {}",
            on_libtorch.len(),
            on_libtorch.join("; ")
        );
    }
    cases::check(&got, on_libtorch.is_empty());
}
