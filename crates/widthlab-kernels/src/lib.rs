//! # widthlab-kernels
//!
//! widthlab's hand-written CPU kernels and everything that touches raw memory or foreign
//! functions, behind a small safe interface on [`tch`] tensors. The research crate
//! (`widthlab`) calls [`ops`], [`threads`], [`dispatch`] and [`sys`] and contains no
//! `unsafe` of its own: every `unsafe` block of widthlab lives in this crate, each with its
//! reason.
//!
//! - [`ops`]: the interface. Products outside autograd (`x W^T`, `a b` into a new or an
//!   existing output, pairs of them, `a^T b` for a short inner dimension, Gram matrices), the
//!   dense layer under autograd, and the RCC monitor's fused pass over a dense weight and its
//!   activation reductions.
//! - [`dispatch`]: the one place that decides, per product shape, between the kernels and
//!   libtorch's `mm` (by timing both once, kept across processes so that the same seed gives
//!   the same bits), and says so once per process.
//! - [`simd`]: the instruction sets (AVX-512, AVX2, portable) the kernels are compiled for,
//!   picked at run time, and forced per thread in tests.
//! - [`threads`]: libgomp (the OpenMP runtime libtorch uses), looked up with `dlsym`, on
//!   which every parallel region of the kernels runs; OpenBLAS's thread count.
//! - [`sys`]: glibc's allocator settings, `dlopen`, libtorch's autocast dtype.
//! - private: `gemm` (products), `dense` (the monitor's fused pass), `stats` (reductions),
//!   `reference` (the libtorch path), `tensor` (element types, slices of tensors).
//!
//! The kernels are behind the default feature `kernels`; without it nothing hand-written or
//! SIMD is compiled, every product runs libtorch's operations and the monitor's passes
//! return `None` (their callers then compute term by term).
//!
//! Invariants: the kernels' results agree with libtorch's up to float rounding (tested at
//! every instruction-set level against libtorch); products split their output between
//! threads, never a sum, and the fused pass merges its threads' partial sums in thread
//! order, so the same thread count, path and level give the same bits run to run.
pub mod dispatch;
pub mod ops;
pub mod simd;
pub mod sys;
pub mod threads;

#[cfg(feature = "kernels")]
mod dense;
#[cfg(feature = "kernels")]
mod gemm;
mod reference;
#[cfg(feature = "kernels")]
mod stats;
#[cfg(feature = "kernels")]
mod tensor;

pub use dispatch::Path;
pub use simd::Level;
