//! Dense matrix products on the CPU outside autograd: the one home of the GEMM calls of the
//! MLP's hand-written backward ([`crate::model::Mlp::manual_gradients`]), of every dense
//! layer evaluated without gradients ([`crate::model::LinearOp::apply`]: evaluation, the RCC
//! monitor's probe passes and update products).
//!
//! On the CPU these run the [`matrixmultiply`] crate's kernels (already ndarray's matmul
//! backend), which dispatch at run time to AVX-512 kernels on CPUs that have AVX-512F (built
//! with rustc >= 1.89) and to AVX2/FMA ones otherwise. They are single-threaded; widthlab
//! splits each product of at least 2^20 multiply-adds between libtorch's OpenMP
//! threads, by blocks of output rows or columns, one call per thread. [`gemm_pair`] runs two
//! independent small products side by side, one per thread (the backward pairs a layer's
//! input gradient with the layer above's weight update).
//!
//! Thin products `x W^T` with at most `THIN_MAX_ROWS` (64) rows of `x` (the RCC monitor's probe
//! passes, and the forward pass of a training batch of up to 64, the paper's batch size) run
//! widthlab's own tile kernel (`thin_product`) instead: a GEMM library packs the whole weight
//! for them, which costs several times the arithmetic for a few rows (`16 x 1024 x 1024`, 2
//! threads: ~92 us against matrixmultiply's ~300) and still ~1.5x at 64 rows
//! (`64 x 1024 x 1024`: 0.33-0.45 ms against 0.55-0.66; `64 x 784 x 1024`: 0.25 against 0.38;
//! no slower up to `64 x 8192 x 2048`). [`gram`] computes `f f^T` by the same
//! tiles on and below the diagonal (64 x 1024: ~31 us against ~65), and [`tn`] computes
//! `a^T b` for a short inner dimension (a batch) without packing `b`.
//!
//! widthlab's own loops are compiled for AVX-512 or AVX2+FMA and picked at run time (the
//! private `Simd` trait; the crate itself is built for baseline x86-64), and one private
//! function, `on_threads`, opens every OpenMP region: products split by rows or columns, and
//! `join`, which runs two independent serial pieces of work on the two threads.
//!
//! Why not OpenBLAS or MKL: on this machine (AMD EPYC, Zen 5), single-threaded, matrixmultiply
//! ran the 8-layer MLP step's products at 157-232 GFLOP/s; OpenBLAS 0.3.21's Haswell kernels
//! (the image pins `OPENBLAS_CORETYPE=Haswell`, as that release predates Zen 4/5) at
//! 115-125; MKL inside libtorch takes its AVX2 path on AMD processors. With two threads the
//! train step at widths 256-4096 runs at ~275-280 GFLOP/s (`benches/train_step.rs`).
//! `WIDTHLAB_GEMM=openblas` selects OpenBLAS's CBLAS instead (row-split for short inner
//! dimensions); `WIDTHLAB_GEMM=libtorch` selects `Tensor::mm`.
//!
//! Everything else (CUDA tensors, dtypes other than f32/f64, mixed dtypes, outputs that are
//! not contiguous) goes through libtorch. Results agree with libtorch's up to float rounding
//! (tested); the same thread count gives the same numbers run to run (threads split the
//! output, never a sum).
//!
//! A side effect worth knowing: in a process that loads OpenBLAS before libtorch (every
//! widthlab binary and the notebook kernel, through ndarray-linalg's link), libtorch's own
//! Fortran `sgemm_` calls bind to OpenBLAS's, not MKL's, so autograd paths (the GPT, models
//! with normalisation layers) run their products on OpenBLAS (`MKL_VERBOSE=1` prints no SGEMM
//! line there). `environment/setup.sh` installs OpenBLAS's OpenMP build so that it shares
//! libgomp's threads with libtorch (see [`threading`]).
//!
//! OpenBLAS keeps one process-wide thread count; [`crate::device::set_threads`] sets it
//! together with libtorch's, so the sweep and coordinate-check runners, which run one
//! single-threaded job per core, also run single-threaded products.
//!
//! These functions write into tensors through raw pointers: no autograd graph records them,
//! and they are meant for code that runs under [`tch::no_grad`] on tensors it owns.
use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::{Once, OnceLock};

use tch::{Device, Kind, Tensor};

// CBLAS enums.
const ROW_MAJOR: c_int = 101;
const NO_TRANS: c_int = 111;
const TRANS: c_int = 112;

// OpenBLAS's CBLAS products and its settings, resolved by the `-lopenblas` that
// openblas-src (ndarray-linalg's backend) links; libtorch exports MKL's Fortran `sgemm_` but
// not these CBLAS names, so they cannot bind to MKL.
extern "C" {
    fn cblas_sgemm(layout: c_int, ta: c_int, tb: c_int, m: c_int, n: c_int, k: c_int, alpha: f32, a: *const f32, lda: c_int, b: *const f32, ldb: c_int, beta: f32, c: *mut f32, ldc: c_int);
    fn cblas_dgemm(layout: c_int, ta: c_int, tb: c_int, m: c_int, n: c_int, k: c_int, alpha: f64, a: *const f64, lda: c_int, b: *const f64, ldb: c_int, beta: f64, c: *mut f64, ldc: c_int);
    fn openblas_set_num_threads(n: c_int);
    fn openblas_get_corename() -> *const c_char;
    fn openblas_get_parallel() -> c_int;
}

/// Which library computes the products.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// The `matrixmultiply` crate's kernels (the default), one single-threaded call per
    /// OpenMP thread.
    MatrixMultiply,
    /// OpenBLAS's CBLAS.
    OpenBlas,
    /// libtorch's `mm`.
    Libtorch,
}

/// The backend for CPU products: matrixmultiply, unless `WIDTHLAB_GEMM` says `openblas` or
/// `libtorch`.
pub fn backend() -> Backend {
    static B: OnceLock<Backend> = OnceLock::new();
    *B.get_or_init(|| match std::env::var("WIDTHLAB_GEMM") {
        Ok(v) if v.eq_ignore_ascii_case("libtorch") => Backend::Libtorch,
        Ok(v) if v.eq_ignore_ascii_case("openblas") => Backend::OpenBlas,
        _ => Backend::MatrixMultiply,
    })
}

/// Whether matrixmultiply runs its AVX-512 kernels here (it picks them at run time when the
/// CPU has AVX-512F and it was built with rustc >= 1.89; AVX2+FMA kernels otherwise).
pub fn avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// OpenBLAS's core type name (e.g. `SkylakeX`), if it reports one.
pub fn core_name() -> Option<String> {
    // SAFETY: returns a pointer to a static NUL-terminated string.
    let p = unsafe { openblas_get_corename() };
    (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
}

static INIT: Once = Once::new();

/// Sets OpenBLAS's thread count to libtorch's, once per process (see [`threading`]; libtorch's
/// own products run on OpenBLAS in widthlab processes, see the module docs). Called by every
/// product and by [`crate::device::set_threads`].
pub fn init() {
    INIT.call_once(|| set_openblas_threads(tch::get_num_threads().max(1) as usize));
}

/// How the loaded OpenBLAS runs in parallel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Threading {
    /// Single-threaded build.
    Sequential,
    /// Its own pthreads pool (Debian's default `libopenblas0-pthread`).
    Pthreads,
    /// libgomp's threads, the pool libtorch uses too (`libopenblas0-openmp`).
    OpenMp,
}

/// The threading of the OpenBLAS this process loaded.
///
/// It matters: libtorch runs its own parallel kernels on libgomp's threads, which spin for
/// milliseconds after each parallel region. A pthreads OpenBLAS then competes with them for
/// the cores, and on this 2-core machine the MLP step ran up to 10x slower (measured at
/// width 256: 92 steps/s with the pthreads build, 974 with the OpenMP build). With the
/// OpenMP build both libraries share one pool, as PyTorch's MKL does.
/// `environment/setup.sh` installs `libopenblas0-openmp` and `build.rs` puts its directory on
/// the binaries' run path (`environment/env.sh` and the notebook kernel on
/// `LD_LIBRARY_PATH`).
pub fn threading() -> Threading {
    // SAFETY: plain getter.
    match unsafe { openblas_get_parallel() } {
        2 => Threading::OpenMp,
        1 => Threading::Pthreads,
        _ => Threading::Sequential,
    }
}

/// Sets OpenBLAS's thread count: `n` for the OpenMP build (which also follows the calling
/// thread's OpenMP setting, like libtorch), and 1 for a pthreads build, whose own threads would
/// compete with libtorch's (see [`threading`]): slower products, but no contention.
pub(crate) fn set_openblas_threads(n: usize) {
    let n = if threading() == Threading::Pthreads { 1 } else { n.max(1) };
    // SAFETY: plain setter.
    unsafe { openblas_set_num_threads(n as c_int) };
}

/// One line for logs and benchmarks: the backend, its kernels and threading.
pub fn describe() -> String {
    init();
    let omp = if openmp().is_some() { "split over libtorch's OpenMP threads" } else { "single-threaded (no OpenMP runtime found)" };
    match backend() {
        Backend::Libtorch => "libtorch mm".to_string(),
        Backend::MatrixMultiply => {
            let isa = if avx512() { "AVX-512" } else { "AVX2/FMA or portable" };
            format!("matrixmultiply {isa} kernels, {omp}")
        }
        Backend::OpenBlas => {
            let core = core_name().unwrap_or_else(|| "?".into());
            let threads = match threading() {
                Threading::OpenMp => "OpenMP threads shared with libtorch",
                Threading::Pthreads => "pthreads build, so single-threaded (install libopenblas0-openmp)",
                Threading::Sequential => "sequential build",
            };
            format!("OpenBLAS {core} kernels, {threads}")
        }
    }
}

/// How BLAS reads a 2-D operand: `(transposed, leading dimension)`, or `None` if its
/// strides are neither row- nor column-major.
fn layout(t: &Tensor) -> Option<(bool, i64)> {
    let (size, stride) = (t.size(), t.stride());
    layout_of(size[0], size[1], (stride[0] as isize, stride[1] as isize)).map(|(tr, ld)| (tr, ld as i64))
}

/// [`layout`] of an `rows x cols` operand with (row, column) strides `s`.
fn layout_of(rows: i64, cols: i64, s: (isize, isize)) -> Option<(bool, isize)> {
    if s.1 == 1 && s.0 >= cols.max(1) as isize {
        Some((false, s.0))
    } else if s.0 == 1 && s.1 >= rows.max(1) as isize {
        Some((true, s.1))
    } else {
        None
    }
}

/// `c <- beta c + alpha a b` in place, for 2-D `a: [m, k]`, `b: [k, n]`, `c: [m, n]` (`a`
/// and `b` may be transposed views; `c` must not overlap them).
///
/// # Shapes
/// `a: [m, k]`, `b: [k, n]`, `c: [m, n]`.
pub fn gemm_into(c: &Tensor, a: &Tensor, b: &Tensor, alpha: f64, beta: f64) {
    if try_blas(c, a, b, alpha, beta) {
        return;
    }
    tch::no_grad(|| {
        let prod = a.mm(b) * alpha;
        let mut c = c.shallow_clone();
        if beta == 0.0 {
            c.copy_(&prod);
        } else {
            if beta != 1.0 {
                c *= beta;
            }
            c += prod;
        }
    });
}

/// Products up to this many multiply-adds are paired by [`gemm_pair`]. Measured on the
/// 8-layer MLP step, 2 threads: at width 256 (4.2M per product) pairing gained ~15%, at
/// width 1024 (67M) it lost ~10%.
const PAIR_MAX_MACS: f64 = 16.0 * 1024.0 * 1024.0;

/// Two independent products, `c0 <- beta0 c0 + alpha0 a0 b0` and the same for `c1`, run at
/// the same time on two OpenMP threads, one single-threaded BLAS call each, when libtorch
/// has at least 2 threads; one after the other otherwise. For small products two
/// single-threaded calls side by side use the cores better than two split ones in a row
/// (the MLP backward pairs a layer's input gradient with the layer above's weight update).
/// The four tensors of one product must not overlap the other's output.
pub fn gemm_pair(p0: (&Tensor, &Tensor, &Tensor, f64, f64), p1: (&Tensor, &Tensor, &Tensor, f64, f64)) {
    let (Some(c0), Some(c1)) = (prepare(backend(), p0.0, p0.1, p0.2, p0.3, p0.4), prepare(backend(), p1.0, p1.1, p1.2, p1.3, p1.4)) else {
        // (at least one goes through libtorch)
        gemm_into(p0.0, p0.1, p0.2, p0.3, p0.4);
        gemm_into(p1.0, p1.1, p1.2, p1.3, p1.4);
        return;
    };
    // Large products scale well on their own (and two side by side contend for the caches).
    let small = |c: &Call| (c.m * c.n) as f64 * c.k as f64 <= PAIR_MAX_MACS;
    let side_by_side = tch::get_num_threads() >= 2 && small(&c0) && small(&c1);
    // SAFETY: both calls were checked by prepare and their tensors outlive the region (or
    // the two sequential calls).
    unsafe {
        if side_by_side {
            // thread t runs product t (a team of one thread runs both)
            let pair = [&c0, &c1];
            on_threads(2, &|t, nt| {
                for call in pair.iter().skip(t).step_by(nt) {
                    call.block(0, call.m, 0, call.n);
                }
            });
        } else {
            c0.run();
            c1.run();
        }
    }
}

/// The BLAS path of [`gemm_into`]; false (and nothing written) when it does not apply.
fn try_blas(c: &Tensor, a: &Tensor, b: &Tensor, alpha: f64, beta: f64) -> bool {
    match prepare(backend(), c, a, b, alpha, beta) {
        // SAFETY: prepare checked the operands, which outlive this call.
        Some(call) => unsafe { call.run() },
        None => return false,
    }
    true
}

/// The checked call for `c <- beta c + alpha a b`, or `None` when neither kernel library
/// applies (then libtorch computes it).
fn prepare(backend: Backend, c: &Tensor, a: &Tensor, b: &Tensor, alpha: f64, beta: f64) -> Option<Call> {
    if backend == Backend::Libtorch || c.device() != Device::Cpu || a.device() != Device::Cpu || b.device() != Device::Cpu {
        return None;
    }
    let kind = c.kind();
    if !matches!(kind, Kind::Float | Kind::Double) || a.kind() != kind || b.kind() != kind {
        return None;
    }
    if a.dim() != 2 || b.dim() != 2 || c.dim() != 2 || !c.is_contiguous() {
        return None;
    }
    let (m, k, n) = (a.size()[0], a.size()[1], b.size()[1]);
    assert_eq!(b.size()[0], k, "gemm: inner dimensions differ");
    assert_eq!(c.size(), [m, n], "gemm: output shape");
    let fits = |v: i64| (1..=i32::MAX as i64).contains(&v);
    if !(fits(m) && fits(n) && fits(k)) {
        return None; // empty or huge: libtorch handles both
    }
    // OpenBLAS needs row- or column-major operands; matrixmultiply takes any strides.
    if backend == Backend::OpenBlas {
        let (Some((_, lda)), Some((_, ldb))) = (layout(a), layout(b)) else { return None };
        if !(fits(lda) && fits(ldb)) {
            return None;
        }
    }
    init();
    let strides = |t: &Tensor| (t.stride()[0] as isize, t.stride()[1] as isize);
    Some(Call {
        backend,
        double: kind == Kind::Double,
        m: m as usize,
        n: n as usize,
        k: k as usize,
        alpha,
        beta,
        a: a.data_ptr() as usize,
        sa: strides(a),
        b: b.data_ptr() as usize,
        sb: strides(b),
        c: c.data_ptr() as usize,
    })
}

/// One checked product (pointers as addresses, so that the threads of a split can share
/// it): `c <- beta c + alpha a b`, `a: [m, k]`, `b: [k, n]` with (row, column) strides
/// `sa`, `sb` in elements, `c: [m, n]` contiguous.
struct Call {
    backend: Backend,
    double: bool,
    m: usize,
    n: usize,
    k: usize,
    alpha: f64,
    beta: f64,
    a: usize,
    sa: (isize, isize),
    b: usize,
    sb: (isize, isize),
    c: usize,
}

/// OpenBLAS: products with an inner dimension up to this (the batch, in a weight gradient
/// `g^T x`) are split by rows of the output between the OpenMP threads, each running a
/// single-threaded OpenBLAS call: OpenBLAS's own threading scales poorly there. Measured
/// at batch 64 with 2 threads (Haswell kernels): `[256, 64] x [64, 256]` 153 -> 219
/// GFLOP/s, `[1024, 64] x [64, 1024]` 204 -> 248; forward and input-gradient products
/// (inner dimension = width) gain nothing from it.
const SPLIT_MAX_K: usize = 256;

/// matrixmultiply (single-threaded kernels): products of at least this many multiply-adds
/// are split between the OpenMP threads (below it, a parallel region costs more than it
/// saves; `64 x 64 x 64` is 0.26M).
const SPLIT_MIN_MACS: usize = 1 << 20;

impl Call {
    /// Runs the product, split over libtorch's OpenMP threads when that pays (see
    /// [`SPLIT_MIN_MACS`], [`SPLIT_MAX_K`]).
    ///
    /// # Safety
    /// The fields describe valid, live, non-overlapping (`c` vs `a`, `b`) CPU buffers.
    unsafe fn run(&self) {
        let threads = tch::get_num_threads().max(1) as usize;
        let split = threads > 1
            && match self.backend {
                Backend::MatrixMultiply => self.m * self.n * self.k >= SPLIT_MIN_MACS,
                _ => self.k <= SPLIT_MAX_K && self.m >= 64 && threading() == Threading::OpenMp,
            };
        // SAFETY (of the closure): as for this function; each thread writes its own share.
        on_threads(if split { threads } else { 1 }, &|t, nt| unsafe { self.share(t, nt) });
    }

    /// Thread `t` of `nt`'s share of the output: blocks of rows (OpenBLAS; matrixmultiply
    /// when the output has at least as many rows as columns) or of columns, in multiples of
    /// 16 (the kernels' unrolling).
    unsafe fn share(&self, t: usize, nt: usize) {
        let by_rows = self.backend != Backend::MatrixMultiply || self.m >= self.n;
        let len = if by_rows { self.m } else { self.n };
        let chunk = len.div_ceil(nt).div_ceil(16) * 16;
        let (lo, hi) = ((t * chunk).min(len), ((t + 1) * chunk).min(len));
        if by_rows {
            self.block(lo, hi, 0, self.n)
        } else {
            self.block(0, self.m, lo, hi)
        }
    }

    /// The output block of rows `r0..r1` and columns `c0..c1`, by one single-threaded call
    /// when inside a parallel region.
    unsafe fn block(&self, r0: usize, r1: usize, c0: usize, c1: usize) {
        if r0 >= r1 || c0 >= c1 {
            return;
        }
        // row r0 of a, column c0 of b, element (r0, c0) of c
        let a_off = r0 as isize * self.sa.0;
        let b_off = c0 as isize * self.sb.1;
        let c_off = (r0 * self.n + c0) as isize;
        let (m, n, k) = (r1 - r0, c1 - c0, self.k);
        match self.backend {
            Backend::MatrixMultiply => {
                let (sa, sb, sc) = (self.sa, self.sb, (self.n as isize, 1));
                if self.double {
                    let (a, b, c) = (self.a as *const f64, self.b as *const f64, self.c as *mut f64);
                    f64::gemm(m, k, n, self.alpha, a.offset(a_off), sa, b.offset(b_off), sb, self.beta, c.offset(c_off), sc);
                } else {
                    let (a, b, c) = (self.a as *const f32, self.b as *const f32, self.c as *mut f32);
                    f32::gemm(m, k, n, self.alpha, a.offset(a_off), sa, b.offset(b_off), sb, self.beta, c.offset(c_off), sc);
                }
            }
            _ => {
                // CBLAS row-major: an operand stored column-major is a transposed one (prepare
                // checked that both have a BLAS layout)
                let blas = |rows: usize, cols: usize, s: (isize, isize)| {
                    let (tr, ld) = layout_of(rows as i64, cols as i64, s).unwrap_or((false, s.0));
                    (if tr { TRANS } else { NO_TRANS }, ld as c_int)
                };
                let ((ta, lda), (tb, ldb)) = (blas(self.m, self.k, self.sa), blas(self.k, self.n, self.sb));
                let (m, n, k, ldc) = (m as c_int, n as c_int, k as c_int, self.n as c_int);
                if self.double {
                    let (a, b, c) = (self.a as *const f64, self.b as *const f64, self.c as *mut f64);
                    cblas_dgemm(ROW_MAJOR, ta, tb, m, n, k, self.alpha, a.offset(a_off), lda, b.offset(b_off), ldb, self.beta, c.offset(c_off), ldc);
                } else {
                    let (a, b, c) = (self.a as *const f32, self.b as *const f32, self.c as *mut f32);
                    cblas_sgemm(ROW_MAJOR, ta, tb, m, n, k, self.alpha as f32, a.offset(a_off), lda, b.offset(b_off), ldb, self.beta as f32, c.offset(c_off), ldc);
                }
            }
        }
    }
}

/// The element types widthlab's own kernels run on (float32 and float64 tensors; `KIND`
/// comes from tch's `Element`), with matrixmultiply's single-threaded product.
pub(crate) trait Real: tch::kind::Element + Copy + Default + Send + Sync + std::ops::Sub<Output = Self> + std::ops::Mul<Output = Self> + std::ops::AddAssign + 'static {
    fn to_f64(self) -> f64;
    fn from_f64(v: f64) -> Self;
    /// `self * a + b`, fused (a single instruction where the CPU has FMA; callers run it
    /// only inside functions compiled for such CPUs).
    fn mul_add(self, a: Self, b: Self) -> Self;
    /// `c <- beta c + alpha a b` (`a: [m, k]`, `b: [k, n]`, `c: [m, n]` with (row, column)
    /// strides in elements), single-threaded.
    ///
    /// # Safety
    /// The pointers and strides describe valid buffers; `c` overlaps neither `a` nor `b`.
    #[allow(clippy::too_many_arguments)]
    unsafe fn gemm(m: usize, k: usize, n: usize, alpha: f64, a: *const Self, sa: (isize, isize), b: *const Self, sb: (isize, isize), beta: f64, c: *mut Self, sc: (isize, isize));
}

impl Real for f32 {
    fn to_f64(self) -> f64 {
        self as f64
    }
    fn from_f64(v: f64) -> Self {
        v as f32
    }
    #[inline(always)]
    fn mul_add(self, a: f32, b: f32) -> f32 {
        f32::mul_add(self, a, b)
    }
    unsafe fn gemm(m: usize, k: usize, n: usize, alpha: f64, a: *const f32, sa: (isize, isize), b: *const f32, sb: (isize, isize), beta: f64, c: *mut f32, sc: (isize, isize)) {
        matrixmultiply::sgemm(m, k, n, alpha as f32, a, sa.0, sa.1, b, sb.0, sb.1, beta as f32, c, sc.0, sc.1);
    }
}

impl Real for f64 {
    fn to_f64(self) -> f64 {
        self
    }
    fn from_f64(v: f64) -> Self {
        v
    }
    #[inline(always)]
    fn mul_add(self, a: f64, b: f64) -> f64 {
        f64::mul_add(self, a, b)
    }
    unsafe fn gemm(m: usize, k: usize, n: usize, alpha: f64, a: *const f64, sa: (isize, isize), b: *const f64, sb: (isize, isize), beta: f64, c: *mut f64, sc: (isize, isize)) {
        matrixmultiply::dgemm(m, k, n, alpha, a, sa.0, sa.1, b, sb.0, sb.1, beta, c, sc.0, sc.1);
    }
}

/// Products `x W^T` with at most this many rows of `x` run [`thin_product`] (see there). At
/// 64 it takes the training forward of the paper's batch size: the 3-layer MLP's SGD step at
/// width 1024 ran 21-23% faster than with 32, side by side.
pub(crate) const THIN_MAX_ROWS: usize = 64;

/// Rows of `w` per tile of [`thin_product`] at its fastest (float32 under AVX-512): callers
/// that split `w` into pieces split it in multiples of this.
pub(crate) const THIN_TILE_ROWS: usize = 8;

/// `y[q, i] = alpha sum_j x[q, j] w[i, j]` for the `rows` rows of `w` (row-major `[rows, k]`)
/// and the `p` rows of `x` (row-major `[p, k]`), written to `y` with (row, column) strides
/// `ys`, single-threaded. For thin products (`p` up to [`THIN_MAX_ROWS`]: the RCC monitor's
/// probe passes, small training batches): a GEMM library packs all of `w` into its panel
/// layout, gathering across rows because `w` enters transposed; for a handful of rows of `x`
/// that packing costs several times the arithmetic (matrixmultiply: ~300 us for `16 x 1024 x
/// 1024` on this machine). Here each tile of rows of `w` and rows of `x` is accumulated over
/// 16-lane chunks straight from the row-major data (`w`'s rows are read once, `x` stays in
/// L1/L2), in the widest vector instructions the CPU has (checked at run time): float32 under
/// AVX-512 in explicit `8 x 2` tiles ([`thin_f32_avx512`]), everything else in `4 x 4` tiles
/// the compiler vectorises. Sums run over 16 lanes in `T`, so results differ from a GEMM
/// library's by float rounding only.
///
/// # Safety
/// `y` with strides `ys` addresses a valid `[p, rows]` buffer that overlaps neither input.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn thin_product<T: Real>(w: &[T], rows: usize, k: usize, x: &[T], p: usize, alpha: f64, y: *mut T, ys: (isize, isize)) {
    debug_assert!(w.len() >= rows * k && x.len() >= p * k);
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("fma") {
            return thin_avx512(w, rows, k, x, p, alpha, y, ys);
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            return thin_avx2(w, rows, k, x, p, alpha, y, ys);
        }
    }
    thin_any(w, rows, k, x, p, alpha, y, ys)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn thin_avx512<T: Real>(w: &[T], rows: usize, k: usize, x: &[T], p: usize, alpha: f64, y: *mut T, ys: (isize, isize)) {
    if T::KIND == Kind::Float {
        // SAFETY: T is f32 (the only Real of that kind), so the slices are reinterpreted as
        // what they are.
        let (w, x) = (std::slice::from_raw_parts(w.as_ptr() as *const f32, w.len()), std::slice::from_raw_parts(x.as_ptr() as *const f32, x.len()));
        return thin_f32_avx512(w, rows, k, x, p, alpha, y as *mut f32, ys);
    }
    thin_any(w, rows, k, x, p, alpha, y, ys)
}

/// [`thin_product`] for float32 under AVX-512, in explicit tiles of 8 rows of `w` by 2 rows
/// of `x` (16 accumulator registers; per 16-lane chunk 10 loads for 16 FMAs). Taller tiles
/// read `x`, which streams from L2 once per tile, less often: at `16 x 1024 x 1024` (2
/// threads) 92 us against 123 us for the compiler-vectorised `4 x 4` tiles, and 165 against
/// 206 us for 32 rows (tiles of 6 x 4 measured the same, 12 x 2 and 5 x 4 slower). Rows of
/// `w` or `x` that do not fill a tile go to [`thin_any`].
///
/// # Safety
/// As [`thin_product`]; the CPU has AVX-512F and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn thin_f32_avx512(w: &[f32], rows: usize, k: usize, x: &[f32], p: usize, alpha: f64, y: *mut f32, ys: (isize, isize)) {
    const R: usize = THIN_TILE_ROWS;
    const Q: usize = 2;
    let (full_r, full_q) = (rows / R * R, p / Q * Q);
    let mut i = 0;
    while i < full_r {
        let mut q = 0;
        while q < full_q {
            tile_f32::<R, Q>(w.as_ptr().add(i * k), x.as_ptr().add(q * k), k, alpha as f32, y.offset(q as isize * ys.0 + i as isize * ys.1), ys);
            q += Q;
        }
        if q < p {
            thin_any(&w[i * k..(i + R) * k], R, k, &x[q * k..], p - q, alpha, y.offset(q as isize * ys.0 + i as isize * ys.1), ys);
        }
        i += R;
    }
    if i < rows {
        thin_any(&w[i * k..], rows - i, k, x, p, alpha, y.offset(i as isize * ys.1), ys);
    }
}

/// One `R x Q` tile of [`thin_f32_avx512`]: `out[q, r] = alpha sum_j x[q, j] w[r, j]` for the
/// `R` rows of `w` and `Q` rows of `x` at the given addresses (row stride `k`), each sum over
/// 16 lanes, then the lanes, then the `k % 16` remaining products; `alpha` applied last, in
/// float32 (as in [`thin_tile`]).
///
/// # Safety
/// As [`thin_f32_avx512`], for `R` rows of `w` and `Q` of `x`; inlined into it.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
#[allow(clippy::needless_range_loop)]
unsafe fn tile_f32<const R: usize, const Q: usize>(w: *const f32, x: *const f32, k: usize, alpha: f32, out: *mut f32, ys: (isize, isize)) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm512_setzero_ps(); Q]; R];
    let n = k / 16 * 16;
    let mut j = 0;
    while j < n {
        let mut xv = [_mm512_setzero_ps(); Q];
        for q in 0..Q {
            xv[q] = _mm512_loadu_ps(x.add(q * k + j));
        }
        for r in 0..R {
            let wv = _mm512_loadu_ps(w.add(r * k + j));
            for q in 0..Q {
                acc[r][q] = _mm512_fmadd_ps(wv, xv[q], acc[r][q]);
            }
        }
        j += 16;
    }
    for r in 0..R {
        for q in 0..Q {
            let mut v = _mm512_reduce_add_ps(acc[r][q]);
            for jj in n..k {
                v += *w.add(r * k + jj) * *x.add(q * k + jj);
            }
            *out.offset(q as isize * ys.0 + r as isize * ys.1) = if alpha == 1.0 { v } else { v * alpha };
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn thin_avx2<T: Real>(w: &[T], rows: usize, k: usize, x: &[T], p: usize, alpha: f64, y: *mut T, ys: (isize, isize)) {
    thin_any(w, rows, k, x, p, alpha, y, ys)
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn thin_any<T: Real>(w: &[T], rows: usize, k: usize, x: &[T], p: usize, alpha: f64, y: *mut T, ys: (isize, isize)) {
    let mut i = 0;
    while i < rows {
        let r = (rows - i).min(4);
        let mut q = 0;
        while q < p {
            let n = (p - q).min(4);
            let wr = &w[i * k..(i + r) * k];
            let xr = &x[q * k..(q + n) * k];
            let out = y.offset(q as isize * ys.0 + i as isize * ys.1);
            match (r, n) {
                (4, 4) => thin_tile::<T, 4, 4>(wr, xr, k, alpha, out, ys),
                (4, 3) => thin_tile::<T, 4, 3>(wr, xr, k, alpha, out, ys),
                (4, 2) => thin_tile::<T, 4, 2>(wr, xr, k, alpha, out, ys),
                (4, 1) => thin_tile::<T, 4, 1>(wr, xr, k, alpha, out, ys),
                (3, 4) => thin_tile::<T, 3, 4>(wr, xr, k, alpha, out, ys),
                (2, 4) => thin_tile::<T, 2, 4>(wr, xr, k, alpha, out, ys),
                (1, 4) => thin_tile::<T, 1, 4>(wr, xr, k, alpha, out, ys),
                _ => {
                    for a in 0..r {
                        for b in 0..n {
                            thin_tile::<T, 1, 1>(&wr[a * k..(a + 1) * k], &xr[b * k..(b + 1) * k], k, alpha, out.offset(b as isize * ys.0 + a as isize * ys.1), ys);
                        }
                    }
                }
            }
            q += n;
        }
        i += r;
    }
}

/// One `R x Q` tile of [`thin_product`]: rows `w[0..R]` against `x[0..Q]`. (Indexed loops
/// over fixed-size arrays: the form the compiler turns into one vector register per
/// accumulator.)
#[inline(always)]
#[allow(clippy::needless_range_loop)]
unsafe fn thin_tile<T: Real, const R: usize, const Q: usize>(w: &[T], x: &[T], k: usize, alpha: f64, out: *mut T, ys: (isize, isize)) {
    const L: usize = 16;
    let mut acc = [[[T::default(); L]; Q]; R];
    let chunks = k / L;
    let (wp, xp) = (w.as_ptr(), x.as_ptr());
    for c in 0..chunks {
        let base = c * L;
        let mut wv = [[T::default(); L]; R];
        let mut xv = [[T::default(); L]; Q];
        for r in 0..R {
            wv[r] = std::ptr::read_unaligned(wp.add(r * k + base) as *const [T; L]);
        }
        for q in 0..Q {
            xv[q] = std::ptr::read_unaligned(xp.add(q * k + base) as *const [T; L]);
        }
        for r in 0..R {
            for q in 0..Q {
                for l in 0..L {
                    acc[r][q][l] = wv[r][l].mul_add(xv[q][l], acc[r][q][l]);
                }
            }
        }
    }
    for r in 0..R {
        for q in 0..Q {
            let mut tail = T::default();
            for j in chunks * L..k {
                tail += w[r * k + j] * x[q * k + j];
            }
            // the lanes summed pairwise in T (a vector shuffle tree; a scalar float64 sum of
            // the 16 lanes cost a third of the tile's time)
            let mut s = acc[r][q];
            let mut width = L / 2;
            while width > 0 {
                for l in 0..width {
                    let hi = s[l + width];
                    s[l] += hi;
                }
                width /= 2;
            }
            // alpha applied in T, as a GEMM library does (so a one-hot row times alpha is
            // bitwise the lookup times alpha)
            let mut v = s[0];
            v += tail;
            *out.offset(q as isize * ys.0 + r as isize * ys.1) = if alpha == 1.0 { v } else { v * T::from_f64(alpha) };
        }
    }
}

/// `alpha x w^T` by [`thin_product`] for at most [`THIN_MAX_ROWS`] rows of `x` (rows of `w`
/// split between the OpenMP threads); `None` when it does not apply (another backend, not
/// on the CPU, kinds other than one of f32/f64, a `w` that is not contiguous).
fn thin_linear(x: &Tensor, w: &Tensor, alpha: f64) -> Option<Tensor> {
    let (p, k, m) = (x.size()[0] as usize, x.size()[1] as usize, w.size()[0] as usize);
    let kind = x.kind();
    if backend() != Backend::MatrixMultiply || p == 0 || p > THIN_MAX_ROWS || x.device() != Device::Cpu || w.device() != Device::Cpu || w.kind() != kind || !w.is_contiguous() || w.dim() != 2 {
        return None;
    }
    let x = x.contiguous();
    let y = Tensor::empty([p as i64, m as i64], (kind, Device::Cpu));
    fn run<T: Real>(x: &Tensor, w: &Tensor, y: &Tensor, alpha: f64, (p, k, m): (usize, usize, usize)) {
        let (xs, ws) = (elements::<T>(x), elements::<T>(w));
        let out = y.data_ptr() as usize;
        // (the threads write disjoint columns of y)
        on_threads(threads_if(p * k * m >= SPLIT_MIN_MACS), &|t, nt| {
            let chunk = m.div_ceil(nt).div_ceil(4) * 4;
            let (lo, hi) = ((t * chunk).min(m), ((t + 1) * chunk).min(m));
            if lo < hi {
                // SAFETY: rows lo..hi of w, columns lo..hi of y ([p, m]).
                unsafe { thin_product(&ws[lo * k..hi * k], hi - lo, k, xs, p, alpha, (out as *mut T).add(lo), (m as isize, 1)) };
            }
        });
    }
    match kind {
        Kind::Float => run::<f32>(&x, w, &y, alpha, (p, k, m)),
        Kind::Double => run::<f64>(&x, w, &y, alpha, (p, k, m)),
        _ => return None,
    }
    Some(y)
}

/// `alpha a^T b` for a short inner dimension: `a: [k, p]`, `b: [k, n]`, `k` and `p` small
/// (a batch, a probe or a readout's width), `n` large. The RCC monitor's one-step products
/// `(x_t x^T) g` and a readout's `g^T x` have this shape; a GEMM library packs all of `b` for
/// them (matrixmultiply: ~20 us for `[64, 10]^T [64, 1024]` against the ~2 of the
/// arithmetic). Here tiles of 4 columns of `a` by 32 of `b` are accumulated over `k` straight
/// from the row-major data, the columns of `b` split between the OpenMP threads. Float32/float64 CPU tensors of one kind; `None`
/// otherwise (or with another backend selected: the caller then uses [`mm`]).
///
/// # Shapes
/// `a: [k, p]`, `b: [k, n]` -> `[p, n]`.
pub fn tn(a: &Tensor, b: &Tensor, alpha: f64) -> Option<Tensor> {
    let kind = b.kind();
    if backend() != Backend::MatrixMultiply || a.dim() != 2 || b.dim() != 2 || a.kind() != kind || [a, b].iter().any(|t| t.device() != Device::Cpu) {
        return None;
    }
    let (k, p, n) = (a.size()[0] as usize, a.size()[1] as usize, b.size()[1] as usize);
    if b.size()[0] as usize != k {
        return None;
    }
    let (a, b) = (a.contiguous(), b.contiguous());
    let c = Tensor::zeros([p as i64, n as i64], (kind, Device::Cpu));
    fn run<T: Real>(a: &Tensor, b: &Tensor, c: &Tensor, alpha: f64, (k, p, n): (usize, usize, usize)) {
        if k == 0 || p == 0 || n == 0 {
            return;
        }
        let bs = elements::<T>(b);
        let (ap, cp) = (a.data_ptr() as usize, c.data_ptr() as usize);
        // (the threads write disjoint columns of c)
        on_threads(threads_if(k * p * n >= SPLIT_MIN_MACS), &|t, nt| {
            let chunk = n.div_ceil(nt).div_ceil(TN_COLS) * TN_COLS;
            let (lo, hi) = ((t * chunk).min(n), ((t + 1) * chunk).min(n));
            // (a is a contiguous [k, p]; c is a contiguous [p, n] of which this thread writes
            // columns lo..hi only)
            simd(TnTile { a: ap as *const T, b: bs, c: cp as *mut T, k, p, n, lo, hi, alpha: T::from_f64(alpha) });
        });
    }
    match kind {
        Kind::Float => run::<f32>(&a, &b, &c, alpha, (k, p, n)),
        Kind::Double => run::<f64>(&a, &b, &c, alpha, (k, p, n)),
        _ => return None,
    }
    Some(c)
}

/// Columns of `b` per tile of [`tn`].
const TN_COLS: usize = 32;

/// Columns `lo..hi` of [`tn`]'s product: for each tile of up to 4 columns `i` of `a` and
/// 32 columns `j` of `b`, `c[i, j] = alpha sum_r a[r, i] b[r, j]` in `4 x 32` accumulators
/// (vector registers), with `a`'s entries broadcast and `b`'s rows read in place.
struct TnTile<'a, T> {
    /// `a`, contiguous `[k, p]`.
    a: *const T,
    b: &'a [T],
    c: *mut T,
    k: usize,
    p: usize,
    n: usize,
    lo: usize,
    hi: usize,
    alpha: T,
}

impl<T: Real> Simd for TnTile<'_, T> {
    type Out = ();
    #[inline(always)]
    fn run(self) {
        let mut j0 = self.lo;
        while j0 + TN_COLS <= self.hi {
            let mut i0 = 0;
            while i0 < self.p {
                let q = match self.p - i0 {
                    4.. => 4,
                    2..=3 => 2,
                    _ => 1,
                };
                match q {
                    4 => self.tile::<4>(i0, j0),
                    2 => self.tile::<2>(i0, j0),
                    _ => self.tile::<1>(i0, j0),
                }
                i0 += q;
            }
            j0 += TN_COLS;
        }
        // the last columns, fewer than a tile
        for i in 0..self.p {
            for j in j0..self.hi {
                let mut v = T::default();
                for r in 0..self.k {
                    v = self.at(r, i).mul_add(self.b[r * self.n + j], v);
                }
                // SAFETY: row i < p, column j < hi <= n of c.
                unsafe { *self.c.add(i * self.n + j) = self.alpha * v };
            }
        }
    }
}

impl<T: Real> TnTile<'_, T> {
    /// `a[r, i]`.
    #[inline(always)]
    fn at(&self, r: usize, i: usize) -> T {
        // SAFETY: r < k, i < p: inside a's contiguous [k, p] (see tn).
        unsafe { *self.a.add(r * self.p + i) }
    }

    /// Columns `i0..i0 + Q` of `a` against `j0..j0 + 32` of `b`.
    #[inline(always)]
    #[allow(clippy::needless_range_loop)]
    fn tile<const Q: usize>(&self, i0: usize, j0: usize) {
        let mut acc = [[T::default(); TN_COLS]; Q];
        let bp = self.b.as_ptr();
        assert!(self.b.len() >= (self.k.max(1) - 1) * self.n + j0 + TN_COLS, "b holds the tile");
        for r in 0..self.k {
            // SAFETY: row r < k, columns j0..j0 + TN_COLS <= n of b (asserted above).
            let row: [T; TN_COLS] = unsafe { std::ptr::read_unaligned(bp.add(r * self.n + j0) as *const [T; TN_COLS]) };
            // SAFETY: a is a contiguous [k, p] (see tn) and i0 + Q <= p.
            let ar: [T; Q] = unsafe { std::ptr::read_unaligned(self.a.add(r * self.p + i0) as *const [T; Q]) };
            for i in 0..Q {
                for l in 0..TN_COLS {
                    acc[i][l] = ar[i].mul_add(row[l], acc[i][l]);
                }
            }
        }
        for i in 0..Q {
            for l in 0..TN_COLS {
                // SAFETY: row i0 + i < p, column j0 + l < hi <= n of c.
                unsafe { *self.c.add((i0 + i) * self.n + j0 + l) = self.alpha * acc[i][l] };
            }
        }
    }
}

/// The Gram matrix `f f^T` (`[B, B]`) of a float32 or float64 CPU matrix `f` (`[B, n]`),
/// computed in `f`'s precision by the thin kernel's tiles on and below the diagonal only
/// (half the multiply-adds of a GEMM), split between the OpenMP threads by blocks of 4 rows,
/// mirrored, and returned in float64. `None` for other kinds or devices.
///
/// # Shapes
/// `f: [B, n]` -> `[B, B]`.
pub fn gram(f: &Tensor) -> Option<ndarray::Array2<f64>> {
    if f.device() != Device::Cpu || f.dim() != 2 {
        return None;
    }
    let (b, n) = (f.size()[0] as usize, f.size()[1] as usize);
    let f = f.contiguous();
    fn run<T: Real>(f: &Tensor, b: usize, n: usize) -> ndarray::Array2<f64> {
        let mut out = vec![T::default(); b * b];
        let fs = elements::<T>(f);
        let o = out.as_mut_ptr() as usize;
        let blocks = b.div_ceil(4);
        // (each block row q0..q0+4 of `out` is written by one thread only)
        on_threads(threads_if(b * b * n >= 2 * SPLIT_MIN_MACS), &|t, nt| {
            for blk in (t..blocks).step_by(nt) {
                let q0 = blk * 4;
                let q1 = (q0 + 4).min(b);
                // rows q0.. of f against rows q0..q1: out[q, i] for i >= q0
                // SAFETY: `out` is [b, b]; this writes rows q0..q1, columns q0..b of it.
                unsafe { thin_product(&fs[q0 * n..], b - q0, n, &fs[q0 * n..q1 * n], q1 - q0, 1.0, (o as *mut T).add(q0 * b + q0), (b as isize, 1)) };
            }
        });
        // row q holds out[q, i] for i >= q (and a few below, within its block): mirror the
        // upper triangle
        ndarray::Array2::from_shape_fn((b, b), |(r, c)| if r <= c { out[r * b + c] } else { out[c * b + r] }.to_f64())
    }
    match f.kind() {
        Kind::Float => Some(run::<f32>(&f, b, n)),
        Kind::Double => Some(run::<f64>(&f, b, n)),
        _ => None,
    }
}

/// A loop to compile for the widest vector instructions the CPU has: [`simd`] runs
/// [`Simd::run`] inside a function compiled for AVX-512 or AVX2+FMA (picked at run time;
/// the crate itself is built for baseline x86-64). `run` must be `#[inline(always)]`, like
/// everything it calls, so that it is compiled there (closures would not be).
pub(crate) trait Simd {
    type Out;
    fn run(self) -> Self::Out;
}

/// Runs `k` compiled for AVX-512F or AVX2+FMA where the CPU has them (see [`Simd`]).
pub(crate) fn simd<K: Simd>(k: K) -> K::Out {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f,fma")]
        unsafe fn avx512<K: Simd>(k: K) -> K::Out {
            k.run()
        }
        #[target_feature(enable = "avx2,fma")]
        unsafe fn avx2<K: Simd>(k: K) -> K::Out {
            k.run()
        }
        if std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has AVX-512F and FMA.
            return unsafe { avx512(k) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has AVX2 and FMA.
            return unsafe { avx2(k) };
        }
    }
    k.run()
}

/// Runs `f(t, nt)` once on each of `threads` OpenMP threads (libgomp's, which libtorch's
/// kernels use; `t = 0..nt`), or as `f(0, 1)` on the calling thread when `threads <= 1`, no
/// OpenMP runtime is loaded, or the caller already is inside a parallel region. The one
/// place widthlab opens a parallel region (its products and its own kernels).
pub(crate) fn on_threads(threads: usize, f: &(dyn Fn(usize, usize) + Sync)) {
    // SAFETY: in_parallel is a plain query; `f` outlives the region, which GOMP_parallel
    // joins before returning.
    unsafe {
        match openmp().filter(|_| threads > 1) {
            Some(omp) if (omp.in_parallel)() == 0 => {
                let data = &f as *const &(dyn Fn(usize, usize) + Sync) as *mut c_void;
                (omp.parallel)(closure_worker, data, threads as u32, 0);
            }
            _ => f(0, 1),
        }
    }
}

/// Runs `a` on the calling thread and `b` on a second OpenMP thread at the same time, and
/// returns both results; one after the other on the calling thread when there is no second
/// thread (one thread configured, or already inside a parallel region). For two independent
/// serial pieces of work, so that neither core idles while the other runs one. Work inside
/// either that would open a parallel region runs single-threaded there.
pub(crate) fn join<A, B: Send>(a: impl FnOnce() -> A, b: impl FnOnce() -> B + Send) -> (A, B) {
    use std::cell::RefCell;
    use std::sync::Mutex;
    /// Touched by OpenMP's thread 0 only, which is the thread that opened the region (the
    /// caller of `join`): `a` and its result never change threads.
    struct OnCaller<T>(RefCell<Option<T>>);
    // SAFETY: see above; the region is joined before `join` returns.
    unsafe impl<T> Sync for OnCaller<T> {}
    impl<T> OnCaller<T> {
        fn take(&self) -> Option<T> {
            self.0.borrow_mut().take()
        }
        fn put(&self, v: T) {
            *self.0.borrow_mut() = Some(v);
        }
    }
    let (fa, ra) = (OnCaller(RefCell::new(Some(a))), OnCaller(RefCell::new(None)));
    let (fb, rb) = (Mutex::new(Some(b)), Mutex::new(None));
    let run_b = || {
        if let Some(f) = fb.lock().unwrap_or_else(|e| e.into_inner()).take() {
            *rb.lock().unwrap_or_else(|e| e.into_inner()) = Some(f());
        }
    };
    on_threads(threads_if(true).min(2), &|t, nt| {
        if t == 0 {
            if let Some(f) = fa.take() {
                ra.put(f());
            }
        }
        if t == 1 || nt == 1 {
            run_b();
        }
    });
    run_b(); // (if the region had no second thread)
    let a = ra.take().expect("join: the first task ran");
    let b = rb.into_inner().unwrap_or_else(|e| e.into_inner()).expect("join: the second task ran");
    (a, b)
}

/// libtorch's thread count if `parallel`, else 1: the `threads` argument of [`on_threads`]
/// for work that splits only above some size.
pub(crate) fn threads_if(parallel: bool) -> usize {
    if parallel {
        tch::get_num_threads().max(1) as usize
    } else {
        1
    }
}

/// The elements of a contiguous CPU tensor of kind `T` (panics otherwise: callers check).
pub(crate) fn elements<T: Real>(t: &Tensor) -> &[T] {
    assert!(t.device() == Device::Cpu && t.is_contiguous() && t.kind() == T::KIND, "elements: a contiguous CPU tensor of the right kind");
    // SAFETY: such a tensor holds numel() elements of T at data_ptr(), alive as long as `t`.
    unsafe { std::slice::from_raw_parts(t.data_ptr() as *const T, t.numel()) }
}

/// The body of the OpenMP region of [`on_threads`].
extern "C" fn closure_worker(data: *mut c_void) {
    // SAFETY: `data` points to the closure reference on_threads passed, alive until
    // GOMP_parallel returns.
    unsafe {
        let f = &*(data as *const &(dyn Fn(usize, usize) + Sync));
        let Some(omp) = openmp() else { return };
        let (t, nt) = ((omp.thread_num)().max(0) as usize, (omp.num_threads)().max(1) as usize);
        f(t, nt);
    }
}

/// libgomp's entry points (the runtime libtorch's own parallel kernels use), looked up in the
/// loaded library.
struct OpenMp {
    parallel: ParallelFn,
    in_parallel: QueryFn,
    thread_num: QueryFn,
    num_threads: QueryFn,
}
type ParallelFn = unsafe extern "C" fn(extern "C" fn(*mut c_void), *mut c_void, u32, u32);
type QueryFn = unsafe extern "C" fn() -> c_int;

fn openmp() -> Option<&'static OpenMp> {
    static OMP: OnceLock<Option<OpenMp>> = OnceLock::new();
    OMP.get_or_init(|| unsafe {
        // SAFETY: NOLOAD returns the already loaded runtime; the symbols have the
        // signatures declared in OpenMp (GOMP_parallel is what `#pragma omp parallel`
        // compiles to).
        let h = libc::dlopen(c"libgomp.so.1".as_ptr(), libc::RTLD_LAZY | libc::RTLD_NOLOAD);
        if h.is_null() {
            return None;
        }
        let get = |name: &CStr| {
            let p = libc::dlsym(h, name.as_ptr());
            (!p.is_null()).then_some(p)
        };
        Some(OpenMp {
            parallel: std::mem::transmute::<*mut c_void, ParallelFn>(get(c"GOMP_parallel")?),
            in_parallel: std::mem::transmute::<*mut c_void, QueryFn>(get(c"omp_in_parallel")?),
            thread_num: std::mem::transmute::<*mut c_void, QueryFn>(get(c"omp_get_thread_num")?),
            num_threads: std::mem::transmute::<*mut c_void, QueryFn>(get(c"omp_get_num_threads")?),
        })
    })
    .as_ref()
}

/// `alpha a b` as a new tensor.
///
/// # Shapes
/// `a: [m, k]`, `b: [k, n]` -> `[m, n]`.
pub fn mm(a: &Tensor, b: &Tensor, alpha: f64) -> Tensor {
    let c = Tensor::empty([a.size()[0], b.size()[1]], (a.kind(), a.device()));
    if try_blas(&c, a, b, alpha, 0.0) {
        return c;
    }
    tch::no_grad(|| {
        let y = a.mm(b);
        if alpha == 1.0 {
            y
        } else {
            y * alpha
        }
    })
}

/// Whether autograd records operations on this thread (false inside [`tch::no_grad`]).
pub fn grad_enabled() -> bool {
    // SAFETY: sets the thread-local grad mode and restores the previous value it returned.
    unsafe {
        let prev = torch_sys::at_grad_set_enabled(1);
        torch_sys::at_grad_set_enabled(prev);
        prev != 0
    }
}

/// `alpha x W^T` for a dense weight `w` (`[fan_out, fan_in]`) on inputs with any leading
/// dimensions.
///
/// # Shapes
/// `x: [.., fan_in]`, `w: [fan_out, fan_in]` -> `[.., fan_out]`.
pub fn linear(x: &Tensor, w: &Tensor, alpha: f64) -> Tensor {
    let size = x.size();
    let fan_in = *size.last().expect("linear: x has a feature dimension");
    let x2 = if size.len() == 2 { x.shallow_clone() } else { x.reshape([-1, fan_in]) };
    let y = thin_linear(&x2, w, alpha).unwrap_or_else(|| mm(&x2, &w.tr(), alpha));
    if size.len() == 2 {
        y
    } else {
        let mut out = size.clone();
        *out.last_mut().expect("nonempty") = w.size()[0];
        y.reshape(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: &Tensor, b: &Tensor, tol: f64) -> bool {
        let scale = b.abs().max().double_value(&[]).max(1.0);
        (a - b).abs().max().double_value(&[]) <= tol * scale
    }

    /// `c <- beta c + alpha a b` through `backend` (libtorch when it does not apply).
    fn product(backend: Backend, c: &Tensor, a: &Tensor, b: &Tensor, alpha: f64, beta: f64) {
        match prepare(backend, c, a, b, alpha, beta) {
            // SAFETY: checked by prepare; the tensors outlive the call.
            Some(call) => unsafe { call.run() },
            None => gemm_into(c, a, b, alpha, beta),
        }
    }

    /// The thin kernel (via `linear`, at most THIN_MAX_ROWS rows: float32 tiles of 8 x 2 under
    /// AVX-512, tiles of 4 x 4 otherwise, and every remainder; odd inner dimensions) and the
    /// half-computed Gram against libtorch.
    #[test]
    fn thin_products_and_grams_match_libtorch() {
        tch::manual_seed(1);
        for kind in [Kind::Float, Kind::Double] {
            let tol = if kind == Kind::Float { 1e-5 } else { 1e-12 };
            let opts = (kind, Device::Cpu);
            for (p, k, m) in [(1, 5, 3), (3, 37, 9), (6, 16, 7), (7, 48, 24), (16, 100, 33), (32, 1030, 1027), (64, 70, 17)] {
                let x = Tensor::randn([p, k], opts);
                let w = Tensor::randn([m, k], opts);
                let want = x.matmul(&w.tr()) * 0.7;
                if backend() == Backend::MatrixMultiply {
                    assert!(thin_linear(&x, &w, 0.7).is_some(), "{p}x{k}x{m}");
                }
                assert!(close(&linear(&x, &w, 0.7), &want, tol), "{kind:?} {p}x{k}x{m}");
                // a transposed weight is not row-major: the general path
                let wt = Tensor::randn([k, m], opts);
                assert!(thin_linear(&x, &wt.tr(), 1.0).is_none());
                assert!(close(&linear(&x, &wt.tr(), 1.0), &x.matmul(&wt), tol));
            }
            for (b, n) in [(1, 3), (5, 17), (64, 300), (70, 1024)] {
                let f = Tensor::randn([b, n], opts);
                let g = gram(&f).unwrap();
                assert_eq!(g, g.t(), "symmetric");
                let g = Tensor::from_slice(g.as_slice().unwrap()).reshape([b, b]);
                assert!(close(&g, &f.matmul(&f.tr()).to_kind(Kind::Double), tol), "{kind:?} {b}x{n}");
            }
        }
        assert!(gram(&Tensor::ones([3, 3], (Kind::Int64, Device::Cpu))).is_none());
    }

    /// `tn` (a^T b for a short inner dimension) against libtorch: every tile height (4, 2, 1
    /// columns of a), column counts below, at and past a tile, a transposed view for a, the
    /// split between threads, and what it does not take.
    #[test]
    fn short_inner_products_match_libtorch() {
        tch::manual_seed(2);
        if backend() != Backend::MatrixMultiply {
            return;
        }
        for kind in [Kind::Float, Kind::Double] {
            let tol = if kind == Kind::Float { 1e-5 } else { 1e-12 };
            let opts = (kind, Device::Cpu);
            for (k, p, n) in [(1, 1, 1), (5, 3, 31), (64, 10, 1024), (7, 7, 33), (64, 16, 1030), (3, 9, 64)] {
                let a = Tensor::randn([k, p], opts);
                let b = Tensor::randn([k, n], opts);
                let want = a.tr().matmul(&b) * -0.3;
                assert!(close(&tn(&a, &b, -0.3).unwrap(), &want, tol), "{kind:?} {k}x{p}x{n}");
                // a as a transposed view ([p, k] row-major underneath)
                let at = Tensor::randn([p, k], opts);
                assert!(close(&tn(&at.tr(), &b, 1.0).unwrap(), &at.matmul(&b), tol), "{kind:?} {k}x{p}x{n}, view");
            }
        }
        let a = Tensor::ones([3, 2], (Kind::Float, Device::Cpu));
        assert!(tn(&a, &a.to_kind(Kind::Double), 1.0).is_none());
        assert!(tn(&a, &Tensor::ones([4, 2], (Kind::Float, Device::Cpu)), 1.0).is_none());
    }

    #[test]
    fn products_match_libtorch_for_every_layout_kind_and_backend() {
        tch::manual_seed(0);
        for backend in [Backend::MatrixMultiply, Backend::OpenBlas] {
            for kind in [Kind::Float, Kind::Double] {
                let tol = if kind == Kind::Float { 1e-5 } else { 1e-12 };
                let opts = (kind, Device::Cpu);
                // unsplit; split by rows (OpenBLAS: k <= SPLIT_MAX_K; matrixmultiply: >= 1M
                // multiply-adds, m >= n); split by columns (matrixmultiply, m < n)
                for (m, k, n) in [(37, 53, 29), (200, 64, 50), (300, 64, 70), (64, 200, 130)] {
                    let a = Tensor::randn([m, k], opts);
                    let at = Tensor::randn([k, m], opts); // used as at.tr()
                    let b = Tensor::randn([k, n], opts);
                    let bt = Tensor::randn([n, k], opts);
                    for (aa, bb) in [(a.shallow_clone(), b.shallow_clone()), (at.tr(), b.shallow_clone()), (a.shallow_clone(), bt.tr()), (at.tr(), bt.tr())] {
                        let want = aa.mm(&bb);
                        let c = Tensor::empty([m, n], opts);
                        product(backend, &c, &aa, &bb, -0.5, 0.0);
                        assert!(close(&c, &(&want * -0.5), tol), "{backend:?} {m}x{k}x{n}");
                        // accumulate: c <- 2 c + 3 a b
                        let c0 = Tensor::randn([m, n], opts);
                        let c = c0.copy();
                        product(backend, &c, &aa, &bb, 3.0, 2.0);
                        assert!(close(&c, &(&c0 * 2.0 + &want * 3.0), tol), "{backend:?} {m}x{k}x{n} accumulate");
                    }
                    // a strided (sliced) operand whose leading dimension exceeds its width
                    let sl = Tensor::randn([m, 2 * k], opts).narrow(1, 3, k);
                    let c = Tensor::empty([m, n], opts);
                    product(backend, &c, &sl, &b, 1.0, 0.0);
                    assert!(close(&c, &sl.mm(&b), tol));
                    // every other column: not a BLAS layout (OpenBLAS falls back to libtorch),
                    // any strides for matrixmultiply
                    let every_other = Tensor::randn([m, 2 * k], opts).slice(1, 0, 2 * k, 2);
                    assert_eq!(layout(&every_other), None);
                    let c = Tensor::zeros([m, n], opts);
                    assert_eq!(prepare(backend, &c, &every_other, &b, 2.0, 0.0).is_some(), backend == Backend::MatrixMultiply);
                    product(backend, &c, &every_other, &b, 2.0, 0.0);
                    assert!(close(&c, &(every_other.mm(&b) * 2.0), tol));
                }
            }
        }
        // the public entry points, through the default backend
        let (a, b) = (Tensor::randn([70, 40], (Kind::Float, Device::Cpu)), Tensor::randn([40, 90], (Kind::Float, Device::Cpu)));
        assert!(close(&mm(&a, &b, 2.0), &(a.mm(&b) * 2.0), 1e-5));
        let (c0, c1) = (Tensor::zeros([70, 90], (Kind::Float, Device::Cpu)), Tensor::ones([40, 40], (Kind::Float, Device::Cpu)));
        gemm_pair((&c0, &a, &b, 1.0, 0.0), (&c1, &a.tr(), &a, -1.0, 1.0));
        assert!(close(&c0, &a.mm(&b), 1e-5) && close(&c1, &(1.0 - a.tr().mm(&a)), 1e-5));
    }

    #[test]
    fn linear_takes_leading_dimensions() {
        let x = Tensor::randn([2, 3, 5], (Kind::Float, Device::Cpu));
        let w = Tensor::randn([4, 5], (Kind::Float, Device::Cpu));
        let y = linear(&x, &w, 2.0);
        assert_eq!(y.size(), [2, 3, 4]);
        assert!(close(&y, &(x.matmul(&w.tr()) * 2.0), 1e-5));
    }

    #[test]
    fn backend_is_matrixmultiply_and_openblas_is_the_openmp_build() {
        if std::env::var("WIDTHLAB_GEMM").is_err() {
            assert_eq!(backend(), Backend::MatrixMultiply);
            assert!(describe().starts_with("matrixmultiply"), "{}", describe());
        }
        // libtorch's own products run on the system OpenBLAS (linked through ndarray-linalg):
        // environment/setup.sh installs its OpenMP build and build.rs links to it
        assert_eq!(threading(), Threading::OpenMp);
        assert!(core_name().is_some());
    }
}
