//! Dense products on the CPU: matrixmultiply's kernels for general products, split between
//! libtorch's OpenMP threads, and widthlab's own kernels for the thin shapes a GEMM library
//! handles badly. Each function here computes its product on the kernels when they apply to
//! the operands *and* [`crate::dispatch`] chose the kernels for the product's shape; it
//! returns `None` (or `false`) otherwise, and [`crate::ops`] then runs libtorch's
//! ([`crate::reference`]).
//!
//! - General products `c <- beta c + alpha a b` ([`gemm_into`], [`mm`], [`gemm_pair`], and
//!   `x W^T` of more than [`THIN_MAX_ROWS`] rows): the [`matrixmultiply`] crate (ndarray's
//!   matmul backend), which picks AVX-512, AVX2/FMA or SSE kernels itself at run time. It is
//!   single-threaded; products of at least 2^20 multiply-adds are split between libtorch's
//!   OpenMP threads by blocks of output rows or columns, one call per thread.
//!   [`gemm_pair`] runs two independent small products side by side, one per thread (the
//!   MLP's backward pairs a layer's input gradient with the weight update of the layer above).
//! - Thin products `x W^T` with at most [`THIN_MAX_ROWS`] rows of `x` (the RCC monitor's
//!   probe passes, the forward pass of a training batch of up to 64): a GEMM library packs
//!   the whole weight for them, which costs several times the arithmetic for a few rows;
//!   [`thin_product`] reads `W` in place, in tiles.
//! - [`gram`] computes `f f^T` by the thin tiles on and below the diagonal, and [`tn`]
//!   computes `a^T b` for a short inner dimension (a batch) without packing `b`.
//!
//! Invariants: results agree with libtorch's up to float rounding (tested at every level);
//! threads split the output, never a sum, so results do not depend on the thread count.
//! These functions write into tensors through raw pointers: no autograd graph records them,
//! and [`crate::ops`] calls them only outside autograd, on operands it has checked.
use tch::{Device, Kind, Tensor};

use crate::dispatch::{self, Path, Shape};
use crate::reference;
use crate::simd::{simd, Level, Simd};
use crate::tensor::{elements, Real};
use crate::threads::{init, on_threads, threads_if};

/// How an operand's strides lay it out: `N` row-major, `T` column-major (a transposed
/// view), `S` other strides. Part of a product's [`Shape`].
fn layout(t: &Tensor) -> u8 {
    let (size, s) = (t.size(), t.stride());
    let (rows, cols) = (size[0].max(1), size[1].max(1));
    if s[1] == 1 && s[0] >= cols {
        b'N'
    } else if s[0] == 1 && s[1] >= rows {
        b'T'
    } else {
        b'S'
    }
}

/// `c <- beta c + alpha a b` on the kernels; `false` (and nothing written) when they do not
/// apply or libtorch is faster for the shape.
pub(crate) fn gemm_into(c: &Tensor, a: &Tensor, b: &Tensor, alpha: f64, beta: f64) -> bool {
    let Some(call) = prepare(c, a, b, alpha, beta) else { return false };
    if choose(&call, "gemm", c, a, b) != Path::Kernels {
        return false;
    }
    // SAFETY: prepare checked the operands, which outlive this call.
    unsafe { call.run() };
    true
}

/// `alpha a b` as a new tensor on the kernels, or `None` (see [`gemm_into`]).
pub(crate) fn mm(a: &Tensor, b: &Tensor, alpha: f64) -> Option<Tensor> {
    let (m, _, n) = check(a, b)?;
    let c = Tensor::empty([m as i64, n as i64], (a.kind(), Device::Cpu));
    let call = prepare(&c, a, b, alpha, 0.0)?;
    if choose(&call, "mm", &c, a, b) != Path::Kernels {
        return None;
    }
    // SAFETY: prepare checked the operands, which outlive this call.
    unsafe { call.run() };
    Some(c)
}

/// The path of a checked general product: forced, chosen, or timed now on scratch outputs
/// (`op` is `gemm`, into `c`, or `mm`, into a new tensor).
fn choose(call: &Call, op: &'static str, c: &Tensor, a: &Tensor, b: &Tensor) -> Path {
    let accumulate = if call.beta != 0.0 { b'+' } else { 0 };
    let shape = Shape { op, double: call.double, dims: [call.m, call.k, call.n], layout: [layout(a), layout(b), accumulate] };
    let (alpha, beta) = (call.alpha, call.beta);
    let into = op == "gemm";
    dispatch::choose(shape, || {
        let scratch = c.zeros_like();
        let on_scratch = Call { c: scratch.data_ptr() as usize, ..*call };
        Box::new(move |path| match (path, into) {
            // SAFETY: as `call`, with a fresh output of the same shape.
            (Path::Kernels, true) => unsafe { on_scratch.run() },
            (Path::Kernels, false) => {
                let fresh = scratch.empty_like();
                // SAFETY: as `call`, with a fresh output of the same shape.
                unsafe { Call { c: fresh.data_ptr() as usize, ..on_scratch }.run() };
            }
            (Path::Libtorch, true) => reference::gemm_into(&scratch, a, b, alpha, beta),
            (Path::Libtorch, false) => drop(reference::mm(a, b, alpha)),
        })
    })
}

/// Products up to this many multiply-adds are paired by [`gemm_pair`]: on the 8-layer MLP
/// step with 2 threads pairing was measured faster at width 256 (4.2M per product) and
/// slower at width 1024 (67M).
const PAIR_MAX_MACS: f64 = 16.0 * 1024.0 * 1024.0;

/// Two independent products, `c0 <- beta0 c0 + alpha0 a0 b0` and the same for `c1`, run at
/// the same time on two OpenMP threads, one single-threaded call each, when libtorch has at
/// least 2 threads; one after the other otherwise. For small products two single-threaded
/// calls side by side use the cores better than two split ones in a row. `false` (nothing
/// written) unless both take the kernels. The four tensors of one product must not overlap
/// the other's output.
pub(crate) fn gemm_pair(p0: (&Tensor, &Tensor, &Tensor, f64, f64), p1: (&Tensor, &Tensor, &Tensor, f64, f64)) -> bool {
    let (Some(c0), Some(c1)) = (prepare(p0.0, p0.1, p0.2, p0.3, p0.4), prepare(p1.0, p1.1, p1.2, p1.3, p1.4)) else { return false };
    if choose(&c0, "gemm", p0.0, p0.1, p0.2) != Path::Kernels || choose(&c1, "gemm", p1.0, p1.1, p1.2) != Path::Kernels {
        return false;
    }
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
    true
}

/// `(m, k, n)` of a product `a b` the kernels take: operands on the CPU, of one kind
/// (float32 or float64), 2-D, with matching inner dimensions, none empty or beyond `i32`.
fn check(a: &Tensor, b: &Tensor) -> Option<(usize, usize, usize)> {
    let kind = a.kind();
    if a.device() != Device::Cpu || b.device() != Device::Cpu || !matches!(kind, Kind::Float | Kind::Double) || b.kind() != kind || a.dim() != 2 || b.dim() != 2 {
        return None;
    }
    let (m, k, n) = (a.size()[0], a.size()[1], b.size()[1]);
    let fits = |v: i64| (1..=i32::MAX as i64).contains(&v);
    // (libtorch reports mismatches; empty and huge products are libtorch's too)
    (b.size()[0] == k && fits(m) && fits(n) && fits(k)).then_some((m as usize, k as usize, n as usize))
}

/// The checked call for `c <- beta c + alpha a b`, or `None` when the kernels do not apply
/// ([`check`], and `c` a contiguous CPU `[m, n]` of the same kind).
fn prepare(c: &Tensor, a: &Tensor, b: &Tensor, alpha: f64, beta: f64) -> Option<Call> {
    let (m, k, n) = check(a, b)?;
    if c.device() != Device::Cpu || c.kind() != a.kind() || c.size() != [m as i64, n as i64] || !c.is_contiguous() {
        return None;
    }
    init();
    let strides = |t: &Tensor| (t.stride()[0] as isize, t.stride()[1] as isize);
    Some(Call {
        double: c.kind() == Kind::Double,
        m,
        n,
        k,
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
#[derive(Clone, Copy)]
struct Call {
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

/// Products of at least this many multiply-adds are split between the OpenMP threads
/// (below it, a parallel region costs more than it saves; `64 x 64 x 64` is 0.26M).
const SPLIT_MIN_MACS: usize = 1 << 20;

impl Call {
    /// Runs the product, split over libtorch's OpenMP threads when that pays (see
    /// [`SPLIT_MIN_MACS`]).
    ///
    /// # Safety
    /// The fields describe valid, live, non-overlapping (`c` vs `a`, `b`) CPU buffers.
    unsafe fn run(&self) {
        let threads = tch::get_num_threads().max(1) as usize;
        let split = threads > 1 && self.m * self.n * self.k >= SPLIT_MIN_MACS;
        // SAFETY (of the closure): as for this function; each thread writes its own share.
        on_threads(if split { threads } else { 1 }, &|t, nt| unsafe { self.share(t, nt) });
    }

    /// Thread `t` of `nt`'s share of the output: blocks of rows (when the output has at least
    /// as many rows as columns) or of columns, in multiples of 16 (the kernels' unrolling).
    unsafe fn share(&self, t: usize, nt: usize) {
        let by_rows = self.m >= self.n;
        let len = if by_rows { self.m } else { self.n };
        let chunk = len.div_ceil(nt).div_ceil(16) * 16;
        let (lo, hi) = ((t * chunk).min(len), ((t + 1) * chunk).min(len));
        if by_rows {
            self.block(lo, hi, 0, self.n)
        } else {
            self.block(0, self.m, lo, hi)
        }
    }

    /// The output block of rows `r0..r1` and columns `c0..c1`, by one single-threaded call.
    unsafe fn block(&self, r0: usize, r1: usize, c0: usize, c1: usize) {
        if r0 >= r1 || c0 >= c1 {
            return;
        }
        // row r0 of a, column c0 of b, element (r0, c0) of c
        let a_off = r0 as isize * self.sa.0;
        let b_off = c0 as isize * self.sb.1;
        let c_off = (r0 * self.n + c0) as isize;
        let (m, n, k) = (r1 - r0, c1 - c0, self.k);
        let (sa, sb, sc) = (self.sa, self.sb, (self.n as isize, 1));
        if self.double {
            let (a, b, c) = (self.a as *const f64, self.b as *const f64, self.c as *mut f64);
            f64::gemm(m, k, n, self.alpha, a.offset(a_off), sa, b.offset(b_off), sb, self.beta, c.offset(c_off), sc);
        } else {
            let (a, b, c) = (self.a as *const f32, self.b as *const f32, self.c as *mut f32);
            f32::gemm(m, k, n, self.alpha, a.offset(a_off), sa, b.offset(b_off), sb, self.beta, c.offset(c_off), sc);
        }
    }
}

/// Products `x W^T` with at most this many rows of `x` run [`thin_product`] (see there): 64
/// takes the training forward of the paper's batch size (measured faster than 32 on the
/// 3-layer MLP's SGD step, side by side).
pub(crate) const THIN_MAX_ROWS: usize = 64;

/// Rows of `w` per tile of [`thin_product`] at its fastest (float32 under AVX-512): callers
/// that split `w` into pieces split it in multiples of this.
pub(crate) const THIN_TILE_ROWS: usize = 8;

/// `y[q, i] = alpha sum_j x[q, j] w[i, j]` for the `rows` rows of `w` (row-major `[rows, k]`)
/// and the `p` rows of `x` (row-major `[p, k]`), written to `y` with (row, column) strides
/// `ys`, single-threaded. For thin products (`p` up to [`THIN_MAX_ROWS`]: the RCC monitor's
/// probe passes, small training batches): a GEMM library packs all of `w` into its panel
/// layout, gathering across rows because `w` enters transposed; for a handful of rows of `x`
/// that packing costs several times the arithmetic. Here each tile of rows of `w` and rows of
/// `x` is accumulated over 16-lane chunks straight from the row-major data (`w`'s rows are
/// read once, `x` stays in L1/L2), in the instructions of `level` ([`crate::simd`]): float32
/// under AVX-512 in explicit `8 x 2` tiles ([`thin_f32_avx512`]), everything else in `4 x 4`
/// tiles the compiler vectorises (compiled for AVX2+FMA, or portable). Sums run over 16 lanes
/// in `T`, so results differ from a GEMM library's by float rounding only.
///
/// # Safety
/// `y` with strides `ys` addresses a valid `[p, rows]` buffer that overlaps neither input.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn thin_product<T: Real>(level: Level, w: &[T], rows: usize, k: usize, x: &[T], p: usize, alpha: f64, y: *mut T, ys: (isize, isize)) {
    debug_assert!(w.len() >= rows * k && x.len() >= p * k);
    #[cfg(target_arch = "x86_64")]
    match level {
        Level::Avx512 if level.available() => return thin_avx512(w, rows, k, x, p, alpha, y, ys),
        Level::Avx2 if level.available() => return thin_avx2(w, rows, k, x, p, alpha, y, ys),
        _ => {}
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
/// read `x`, which streams from L2 once per tile, less often (measured faster than the
/// compiler-vectorised `4 x 4` tiles at 16 and 32 rows; `6 x 4` the same, `12 x 2` and
/// `5 x 4` slower). Rows of `w` or `x` that do not fill a tile go to [`thin_any`].
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

/// `alpha x w^T` (`x: [p, k]`, `w: [m, k]`) on the kernels: [`thin_product`] for at most
/// [`THIN_MAX_ROWS`] rows of `x` and a contiguous `w` (rows of `w` split between the OpenMP
/// threads), matrixmultiply otherwise; `None` when neither applies or libtorch is faster for
/// the shape.
pub(crate) fn linear(x: &Tensor, w: &Tensor, alpha: f64) -> Option<Tensor> {
    let wt = w.tr();
    let (p, k, m) = check(x, &wt)?;
    let kind = x.kind();
    let thin = p <= THIN_MAX_ROWS && w.is_contiguous();
    let level = Level::current();
    let run = || {
        if thin {
            return thin_linear(level, x, w, alpha);
        }
        let c = Tensor::empty([p as i64, m as i64], (kind, Device::Cpu));
        let call = prepare(&c, x, &wt, alpha, 0.0).expect("checked: a fresh output fits");
        // SAFETY: prepare checked the operands, which outlive this call.
        unsafe { call.run() };
        c
    };
    let shape = Shape { op: "linear", double: kind == Kind::Double, dims: [p, k, m], layout: [layout(x), layout(w), 0] };
    if_chosen(shape, &run, &|| reference::linear(x, w, alpha))
}

/// `run()` when [`dispatch`] chose the kernels for `shape` (timing `run` against `torch`, the
/// same product by libtorch, if the shape is new), else `None`.
fn if_chosen(shape: Shape, run: &dyn Fn() -> Tensor, torch: &dyn Fn() -> Tensor) -> Option<Tensor> {
    let path = dispatch::choose(shape, || Box::new(|path| drop(if path == Path::Kernels { run() } else { torch() })));
    (path == Path::Kernels).then(run)
}

/// `alpha x w^T` by [`thin_product`] at `level` (see [`linear`], which checked the operands).
fn thin_linear(level: Level, x: &Tensor, w: &Tensor, alpha: f64) -> Tensor {
    let (p, k, m) = (x.size()[0] as usize, x.size()[1] as usize, w.size()[0] as usize);
    let kind = x.kind();
    let x = x.contiguous();
    let y = Tensor::empty([p as i64, m as i64], (kind, Device::Cpu));
    fn run<T: Real>(level: Level, x: &Tensor, w: &Tensor, y: &Tensor, alpha: f64, (p, k, m): (usize, usize, usize)) {
        let (xs, ws) = (elements::<T>(x), elements::<T>(w));
        let out = y.data_ptr() as usize;
        // (the threads write disjoint columns of y)
        on_threads(threads_if(p * k * m >= SPLIT_MIN_MACS), &|t, nt| {
            let chunk = m.div_ceil(nt).div_ceil(4) * 4;
            let (lo, hi) = ((t * chunk).min(m), ((t + 1) * chunk).min(m));
            if lo < hi {
                // SAFETY: rows lo..hi of w, columns lo..hi of y ([p, m]).
                unsafe { thin_product(level, &ws[lo * k..hi * k], hi - lo, k, xs, p, alpha, (out as *mut T).add(lo), (m as isize, 1)) };
            }
        });
    }
    match kind {
        Kind::Float => run::<f32>(level, &x, w, &y, alpha, (p, k, m)),
        _ => run::<f64>(level, &x, w, &y, alpha, (p, k, m)),
    }
    y
}

/// `alpha a^T b` for a short inner dimension: `a: [k, p]`, `b: [k, n]`, `k` and `p` small
/// (a batch, a probe or a readout's width), `n` large. The RCC monitor's one-step products
/// `(x_t x^T) g` and a readout's `g^T x` have this shape; a GEMM library packs all of `b` for
/// them, several times the arithmetic. Here tiles of 4 columns of `a` by 32 of `b` are
/// accumulated over `k` straight from the row-major data, the columns of `b` split between
/// the OpenMP threads. Non-empty float32/float64 CPU tensors of one kind; `None` otherwise
/// or when libtorch is faster for the shape.
pub(crate) fn tn(a: &Tensor, b: &Tensor, alpha: f64) -> Option<Tensor> {
    let kind = b.kind();
    if !matches!(kind, Kind::Float | Kind::Double) || a.dim() != 2 || b.dim() != 2 || a.kind() != kind || [a, b].iter().any(|t| t.device() != Device::Cpu) {
        return None;
    }
    let (k, p, n) = (a.size()[0] as usize, a.size()[1] as usize, b.size()[1] as usize);
    if b.size()[0] as usize != k || k == 0 || p == 0 || n == 0 {
        return None;
    }
    let level = Level::current();
    let run = || {
        let (a, b) = (a.contiguous(), b.contiguous());
        let c = Tensor::zeros([p as i64, n as i64], (kind, Device::Cpu));
        fn go<T: Real>(level: Level, a: &Tensor, b: &Tensor, c: &Tensor, alpha: f64, (k, p, n): (usize, usize, usize)) {
            let bs = elements::<T>(b);
            let (ap, cp) = (a.data_ptr() as usize, c.data_ptr() as usize);
            // (the threads write disjoint columns of c)
            on_threads(threads_if(k * p * n >= SPLIT_MIN_MACS), &|t, nt| {
                let chunk = n.div_ceil(nt).div_ceil(TN_COLS) * TN_COLS;
                let (lo, hi) = ((t * chunk).min(n), ((t + 1) * chunk).min(n));
                // (a is a contiguous [k, p]; c is a contiguous [p, n] of which this thread
                // writes columns lo..hi only)
                simd(level, TnTile { a: ap as *const T, b: bs, c: cp as *mut T, k, p, n, lo, hi, alpha: T::from_f64(alpha) });
            });
        }
        match kind {
            Kind::Float => go::<f32>(level, &a, &b, &c, alpha, (k, p, n)),
            _ => go::<f64>(level, &a, &b, &c, alpha, (k, p, n)),
        }
        c
    };
    let shape = Shape { op: "tn", double: kind == Kind::Double, dims: [k, p, n], layout: [layout(a), layout(b), 0] };
    if_chosen(shape, &run, &|| reference::tn(a, b, alpha))
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
/// mirrored, and returned as a float64 tensor. `None` for other kinds or devices, or when
/// libtorch is faster for the shape.
///
/// # Shapes
/// `f: [B, n]` -> `[B, B]`.
pub(crate) fn gram(f: &Tensor) -> Option<Tensor> {
    if f.device() != Device::Cpu || f.dim() != 2 || !matches!(f.kind(), Kind::Float | Kind::Double) {
        return None;
    }
    let (b, n) = (f.size()[0] as usize, f.size()[1] as usize);
    let level = Level::current();
    let run = || {
        let f = f.contiguous();
        fn go<T: Real>(level: Level, f: &Tensor, b: usize, n: usize) -> Vec<f64> {
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
                    unsafe { thin_product(level, &fs[q0 * n..], b - q0, n, &fs[q0 * n..q1 * n], q1 - q0, 1.0, (o as *mut T).add(q0 * b + q0), (b as isize, 1)) };
                }
            });
            // row q holds out[q, i] for i >= q (and a few below, within its block): mirror
            // the upper triangle
            (0..b * b).map(|i| (i / b, i % b)).map(|(r, c)| if r <= c { out[r * b + c] } else { out[c * b + r] }.to_f64()).collect()
        }
        let v = match f.kind() {
            Kind::Float => go::<f32>(level, &f, b, n),
            _ => go::<f64>(level, &f, b, n),
        };
        Tensor::from_slice(&v).reshape([b as i64, b as i64])
    };
    let shape = Shape { op: "gram", double: f.kind() == Kind::Double, dims: [b, n, 0], layout: [layout(f), 0, 0] };
    if_chosen(shape, &run, &|| reference::gram(f))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dispatch::with_path;
    use crate::simd::at_every_level;

    fn close(a: &Tensor, b: &Tensor, tol: f64) -> bool {
        let scale = b.abs().max().double_value(&[]).max(1.0);
        (a - b).abs().max().double_value(&[]) <= tol * scale
    }

    /// The thin kernel (via `linear`, at most THIN_MAX_ROWS rows: float32 tiles of 8 x 2 under
    /// AVX-512, tiles of 4 x 4 otherwise, and every remainder; odd inner dimensions), the
    /// general path of `linear`, and the half-computed Gram, against libtorch at every level.
    #[test]
    fn thin_products_and_grams_match_libtorch_at_every_level() {
        at_every_level("thin products", |level| {
            tch::manual_seed(1);
            for kind in [Kind::Float, Kind::Double] {
                let tol = if kind == Kind::Float { 1e-5 } else { 1e-12 };
                let opts = (kind, Device::Cpu);
                for (p, k, m) in [(1, 5, 3), (3, 37, 9), (6, 16, 7), (7, 48, 24), (16, 100, 33), (32, 1030, 1027), (64, 70, 17), (65, 40, 9)] {
                    let x = Tensor::randn([p, k], opts);
                    let w = Tensor::randn([m, k], opts);
                    let want = x.matmul(&w.tr()) * 0.7;
                    assert!(close(&linear(&x, &w, 0.7).unwrap(), &want, tol), "{level} {kind:?} {p}x{k}x{m}");
                    // a transposed weight is not row-major: the general path
                    let wt = Tensor::randn([k, m], opts);
                    assert!(close(&linear(&x, &wt.tr(), 1.0).unwrap(), &x.matmul(&wt), tol));
                }
                for (b, n) in [(1, 3), (5, 17), (64, 300), (70, 1024)] {
                    let f = Tensor::randn([b, n], opts);
                    let g = gram(&f).unwrap();
                    assert_eq!(g, g.tr(), "symmetric");
                    assert!(close(&g, &f.matmul(&f.tr()).to_kind(Kind::Double), tol), "{level} {kind:?} {b}x{n}");
                }
            }
            assert!(gram(&Tensor::ones([3, 3], (Kind::Int64, Device::Cpu))).is_none());
        });
    }

    /// `tn` (a^T b for a short inner dimension) against libtorch at every level: every tile
    /// height (4, 2, 1 columns of a), column counts below, at and past a tile, a transposed
    /// view for a, the split between threads, and what it does not take.
    #[test]
    fn short_inner_products_match_libtorch_at_every_level() {
        at_every_level("short inner products", |level| {
            tch::manual_seed(2);
            for kind in [Kind::Float, Kind::Double] {
                let tol = if kind == Kind::Float { 1e-5 } else { 1e-12 };
                let opts = (kind, Device::Cpu);
                for (k, p, n) in [(1, 1, 1), (5, 3, 31), (64, 10, 1024), (7, 7, 33), (64, 16, 1030), (3, 9, 64)] {
                    let a = Tensor::randn([k, p], opts);
                    let b = Tensor::randn([k, n], opts);
                    let want = a.tr().matmul(&b) * -0.3;
                    assert!(close(&tn(&a, &b, -0.3).unwrap(), &want, tol), "{level} {kind:?} {k}x{p}x{n}");
                    // a as a transposed view ([p, k] row-major underneath)
                    let at = Tensor::randn([p, k], opts);
                    assert!(close(&tn(&at.tr(), &b, 1.0).unwrap(), &at.matmul(&b), tol), "{level} {kind:?} {k}x{p}x{n}, view");
                }
            }
            let a = Tensor::ones([3, 2], (Kind::Float, Device::Cpu));
            assert!(tn(&a, &a.to_kind(Kind::Double), 1.0).is_none());
            assert!(tn(&a, &Tensor::ones([4, 2], (Kind::Float, Device::Cpu)), 1.0).is_none());
        });
    }

    /// General products (matrixmultiply, which picks its own instructions) for every layout
    /// of the operands, both kinds, into a new and an existing output (accumulating), split by
    /// rows and by columns, and paired; against libtorch.
    #[test]
    fn general_products_match_libtorch_for_every_layout_and_kind() {
        with_path(Path::Kernels, || {
            tch::manual_seed(0);
            for kind in [Kind::Float, Kind::Double] {
                let tol = if kind == Kind::Float { 1e-5 } else { 1e-12 };
                let opts = (kind, Device::Cpu);
                // unsplit; split by rows (>= 1M multiply-adds, m >= n); split by columns
                for (m, k, n) in [(37, 53, 29), (200, 64, 50), (300, 64, 70), (64, 200, 130)] {
                    let a = Tensor::randn([m, k], opts);
                    let at = Tensor::randn([k, m], opts); // used as at.tr()
                    let b = Tensor::randn([k, n], opts);
                    let bt = Tensor::randn([n, k], opts);
                    let every_other = Tensor::randn([m, 2 * k], opts).slice(1, 0, 2 * k, 2);
                    let sliced = Tensor::randn([m, 2 * k], opts).narrow(1, 3, k);
                    assert_eq!((layout(&at.tr()), layout(&every_other), layout(&sliced)), (b'T', b'S', b'N'));
                    for (aa, bb) in [(a.shallow_clone(), b.shallow_clone()), (at.tr(), b.shallow_clone()), (a.shallow_clone(), bt.tr()), (at.tr(), bt.tr()), (every_other.shallow_clone(), b.shallow_clone()), (sliced.shallow_clone(), bt.tr())] {
                        let want = aa.mm(&bb);
                        assert!(close(&mm(&aa, &bb, -0.5).unwrap(), &(&want * -0.5), tol), "{m}x{k}x{n}");
                        // accumulate: c <- 2 c + 3 a b
                        let c0 = Tensor::randn([m, n], opts);
                        let c = c0.copy();
                        assert!(gemm_into(&c, &aa, &bb, 3.0, 2.0));
                        assert!(close(&c, &(&c0 * 2.0 + &want * 3.0), tol), "{m}x{k}x{n} accumulate");
                    }
                }
            }
            let opts = (Kind::Float, Device::Cpu);
            let (a, b) = (Tensor::randn([70, 40], opts), Tensor::randn([40, 90], opts));
            let (c0, c1) = (Tensor::zeros([70, 90], opts), Tensor::ones([40, 40], opts));
            assert!(gemm_pair((&c0, &a, &b, 1.0, 0.0), (&c1, &a.tr(), &a, -1.0, 1.0)));
            assert!(close(&c0, &a.mm(&b), 1e-5) && close(&c1, &(1.0 - a.tr().mm(&a)), 1e-5));
            // what the kernels do not take: mixed kinds, a non-contiguous output, other kinds
            assert!(mm(&a, &b.to_kind(Kind::Double), 1.0).is_none());
            assert!(!gemm_into(&Tensor::zeros([90, 70], opts).tr(), &a, &b, 1.0, 0.0));
            assert!(mm(&a.to_kind(Kind::Half), &b.to_kind(Kind::Half), 1.0).is_none());
        })
        .unwrap();
    }

    /// Not a test: prints both paths' times for the MLP step's products at each width
    /// (`cargo test --release -p widthlab-kernels -- --ignored --nocapture step_products`).
    #[test]
    #[ignore]
    fn step_products() {
        let opts = (Kind::Float, Device::Cpu);
        for n in [64i64, 256, 1024, 4096] {
            let (x, w, g) = (Tensor::randn([64, n], opts), Tensor::randn([n, n], opts), Tensor::randn([64, n], opts));
            let dx = Tensor::empty([64, n], opts);
            let wc = w.copy();
            let report = |what: &str, t: crate::dispatch::Timing| println!("n {n:>5} {what:<22} kernels {:>9.1} us  libtorch {:>9.1} us  median ratio l/k {:.2}", 1e6 * t.kernels, 1e6 * t.libtorch, t.ratio);
            report("forward x W^T", crate::dispatch::time(&mut |p| match p {
                Path::Kernels => drop(with_path(Path::Kernels, || linear(&x, &w, 1.0))),
                Path::Libtorch => drop(reference::linear(&x, &w, 1.0)),
            }));
            report("input grad g W", crate::dispatch::time(&mut |p| match p {
                Path::Kernels => drop(with_path(Path::Kernels, || gemm_into(&dx, &g, &w, 1.0, 0.0))),
                Path::Libtorch => reference::gemm_into(&dx, &g, &w, 1.0, 0.0),
            }));
            report("update W += a g^T x", crate::dispatch::time(&mut |p| match p {
                Path::Kernels => drop(with_path(Path::Kernels, || gemm_into(&wc, &g.tr(), &x, -1e-9, 1.0))),
                Path::Libtorch => reference::gemm_into(&wc, &g.tr(), &x, -1e-9, 1.0),
            }));
        }
    }

    /// With libtorch forced, every product declines (and `ops` then computes it by libtorch).
    #[test]
    fn a_forced_libtorch_path_declines_every_product() {
        with_path(Path::Libtorch, || {
            let opts = (Kind::Float, Device::Cpu);
            let (x, w) = (Tensor::randn([8, 16], opts), Tensor::randn([4, 16], opts));
            assert!(linear(&x, &w, 1.0).is_none());
            assert!(mm(&x, &w.tr(), 1.0).is_none());
            assert!(!gemm_into(&Tensor::zeros([8, 4], opts), &x, &w.tr(), 1.0, 0.0));
            assert!(tn(&x, &x, 1.0).is_none());
            assert!(gram(&x).is_none());
        });
    }
}
