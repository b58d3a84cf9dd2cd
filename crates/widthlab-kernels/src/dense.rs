//! The fused weight pass of a dense site: everything the monitor needs from a weight `W_t`
//! and its reference `W_ref` in one read of the two matrices.
//!
//! Per measured step, a dense site's `Delta` metrics need the effective update
//! `(W_t - W_ref) x_t`, the Frobenius and spectral norms of `D = W_t - W_ref`, and, when the
//! next step's one-step metrics come from low-rank factors, the norms of `W_t` itself; the
//! traced forward needs the site's output `W_t x_t`. Done one at a time these are a
//! weight-sized difference, two matmuls, a norm and (per power-iteration step) two
//! matrix-vector products over `D`, plus two more and a norm over `W_t`: at width 1024 about
//! ten passes over 4 MB matrices. This module does them in one: the rows of `D` are formed
//! block by block in a per-thread scratch that stays in the L2 cache, and each block is used
//! for
//! - its rows' squared sums (`||D||_F^2`, and `||W_t||_F^2` from the rows of `W_t`);
//! - one power-iteration step: with the block's rows `d_i` and the current unit vector `v`,
//!   `a_i = d_i . v` gives `D v`, and `z += a_i d_i` accumulates `D^T D v` in the same pass
//!   (the same for `W_t` with its own vector);
//! - its columns of `(W_t - W_ref) x^T`, and if asked for of `W_t x^T` (the site's output in
//!   the monitor's traced forward), by the thin kernel for probes of up to 64 rows
//!   ([`crate::gemm::thin_product`]), matrixmultiply otherwise.
//!
//! Float32 rows run explicit AVX-512 (or AVX2) loops, one sweep over both matrices' rows; the
//! reference rows are prefetched two rows ahead, non-temporally (the pass reads them once per
//! measured step). Rows are split between libtorch's OpenMP threads (contiguous halves at two
//! threads), each with its own accumulators, merged in thread order: the same thread count
//! gives the same numbers. The iteration is that of widthlab's `rcc::power_iteration`: `u = D v`,
//! `y = D^T u / ||u||`, stop when `||y|| - ||u|| <= tol ||y||`. A warm-started vector of a
//! slowly changing matrix converges in the one iteration the pass makes; otherwise further
//! passes (power steps only, one pass for both chains while both need one) run until it does
//! or `max_iter` is reached. Sums of squares are accumulated in f64, the power-iteration
//! products in the weights' precision (16 lanes per row, f64 across rows).
use std::cell::RefCell;
use std::sync::Mutex;

use tch::{Device, Kind, Tensor};

use crate::gemm::{thin_product, THIN_MAX_ROWS, THIN_TILE_ROWS};
use crate::ops::DenseChange;
use crate::simd::Level;
use crate::tensor::{elements, Real};
use crate::threads::{on_threads, threads_if};

/// The fused pass (module docs) for `w_t`, `w_ref` (`[fan_out, fan_in]`) and inputs `x`
/// (`[P, fan_in]`): the effective update scaled by `alpha`, the norms of the difference with
/// power iteration warm-started from `v_diff`, and, if `v_current` is given, those of `w_t`
/// (warm-started from it), and, if `forward`, the output `alpha W_t x^T` (see
/// [`DenseChange::out`]). The vectors are updated in place (and replaced if their kind or
/// length do not fit). `None` when it does not apply: tensors not on the CPU, not float32 or
/// float64, kinds that differ, or other shapes; the caller then measures term by term.
///
/// # Shapes
/// `w_t, w_ref: [fan_out, fan_in]`, `x: [P, fan_in]` -> `eff: [P, fan_out]`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn dense_change(
    w_t: &Tensor,
    w_ref: &Tensor,
    x: &Tensor,
    alpha: f64,
    v_diff: &mut Tensor,
    v_current: Option<&mut Tensor>,
    tol: f64,
    max_iter: usize,
    forward: bool,
) -> Option<DenseChange> {
    let kind = w_t.kind();
    let on_cpu = [w_t, w_ref, x].iter().all(|t| t.device() == Device::Cpu);
    if !on_cpu || w_ref.kind() != kind || x.kind() != kind || w_t.dim() != 2 || x.dim() != 2 || w_ref.size() != w_t.size() {
        return None;
    }
    let (m, k) = (w_t.size()[0] as usize, w_t.size()[1] as usize);
    if x.size()[1] as usize != k || m == 0 || k == 0 {
        return None;
    }
    match kind {
        Kind::Float => Some(run::<f32>(w_t, w_ref, x, alpha, v_diff, v_current, tol, max_iter, forward)),
        Kind::Double => Some(run::<f64>(w_t, w_ref, x, alpha, v_diff, v_current, tol, max_iter, forward)),
        _ => None,
    }
}

/// A warm-start vector as a unit vector of `n` elements of kind `T` (a fresh all-ones
/// direction if it has the wrong length).
fn unit<T: Real>(v: &Tensor, n: usize) -> Vec<T> {
    let mut u: Vec<T> = if v.numel() == n && v.device() == Device::Cpu {
        let c = v.to_kind(T::KIND).contiguous();
        elements::<T>(&c).to_vec()
    } else {
        vec![T::from_f64(1.0); n]
    };
    let norm = u.iter().map(|a| a.to_f64() * a.to_f64()).sum::<f64>().sqrt();
    if norm > 0.0 && norm.is_finite() {
        let s = T::from_f64(1.0 / norm);
        u.iter_mut().for_each(|a| *a = *a * s);
    }
    u
}

/// One power-iteration chain: the unit vector in, and what the pass accumulated.
struct Chain<T> {
    v: Vec<T>,
    /// `||A v||^2`
    av2: f64,
    /// `A^T A v`
    z: Vec<T>,
}

impl<T: Real> Chain<T> {
    fn new(v: Vec<T>) -> Self {
        let n = v.len();
        Chain { v, av2: 0.0, z: vec![T::default(); n] }
    }

    /// Adds one row `a_i` of `A`, with `a = a_i . v`, to the step from `v`:
    /// `||A v||^2 += a^2` and `A^T A v += a a_i`. Inlined into the vectorised pass.
    #[inline(always)]
    fn add(&mut self, a: T, row: &[T]) {
        self.av2 += a.to_f64() * a.to_f64();
        axpy(a, row, &mut self.z);
    }

    /// [`Chain::add`] for two chains at once (either may be absent): the rows of both in one
    /// sweep over their accumulators.
    #[inline(always)]
    fn add_pair(c1: Option<&mut Self>, a1: T, row1: &[T], c2: Option<&mut Self>, a2: T, row2: &[T]) {
        match (c1, c2) {
            (Some(c1), Some(c2)) => {
                c1.av2 += a1.to_f64() * a1.to_f64();
                c2.av2 += a2.to_f64() * a2.to_f64();
                for ((z1, z2), (x1, x2)) in c1.z.iter_mut().zip(c2.z.iter_mut()).zip(row1.iter().zip(row2)) {
                    *z1 = a1.mul_add(*x1, *z1);
                    *z2 = a2.mul_add(*x2, *z2);
                }
            }
            (c1, c2) => {
                if let Some(c) = c1 {
                    c.add(a1, row1);
                }
                if let Some(c) = c2 {
                    c.add(a2, row2);
                }
            }
        }
    }

    /// `(||A v||, ||A^T A v|| / ||A v||)`: the iteration's two estimates of `||A||_2`.
    /// Also returns `||A^T A v||` (for [`Chain::advance`]).
    fn estimates(&self) -> (f64, f64, f64) {
        let un = self.av2.sqrt();
        let zn = self.z.iter().map(|a| a.to_f64() * a.to_f64()).sum::<f64>().sqrt();
        (un, if un > 0.0 { zn / un } else { un }, zn)
    }

    /// Moves `v` to `A^T A v / ||.||` (`zn = ||A^T A v||`) and clears the accumulators.
    fn advance(&mut self, zn: f64) {
        if zn > 0.0 && zn.is_finite() {
            let s = T::from_f64(1.0 / zn);
            for (v, z) in self.v.iter_mut().zip(&self.z) {
                *v = *z * s;
            }
        }
        self.av2 = 0.0;
        self.z.iter_mut().for_each(|z| *z = T::default());
    }
}

/// What one thread accumulates over its rows.
struct Acc<T> {
    fro_d: f64,
    fro_w: f64,
    d: Option<Chain<T>>,
    w: Option<Chain<T>>,
}

const LANES: usize = 16;

/// Instruction sets of the per-row loops (a const parameter, so each compiled copy of the
/// pass calls its own).
const PORTABLE: u8 = 0;
const AVX2: u8 = 1;
const AVX512: u8 = 2;

/// The per-row operations of the pass. Float32 rows run explicit AVX-512 or AVX2 code
/// (compiled generically, the float64 conversions of the squares came out as lane shuffles
/// and the pass cost several times its memory traffic); everything else the portable loops.
trait Rows: Real {
    /// `d = a - b` (written), and `(sum d_j^2, sum d_j v_j)` (`0` without `v`); `ahead`: the
    /// distance in elements from `b` to what to prefetch meanwhile (0: none; see
    /// `simd::both_avx512`).
    fn diff_sq_dot<const ISA: u8>(a: &[Self], b: &[Self], d: &mut [Self], v: Option<&[Self]>, _ahead: usize) -> (f64, Self) {
        diff_sq_dot(a, b, d, v)
    }
    /// `(sum a_j^2, sum a_j v_j)` (`0` without `v`).
    fn sq_dot<const ISA: u8>(a: &[Self], v: Option<&[Self]>) -> (f64, Self) {
        sq_dot(a, v)
    }
    /// Both at once, in one sweep: `d = a - b` (written) with `(sum d_j^2, sum d_j vd_j)`,
    /// and `(sum a_j^2, sum a_j va_j)`, returned as `(dd, aa, d.vd, a.va)`; `ahead`: the
    /// distance in elements from `b` to the row of `b` to prefetch meanwhile (0: none).
    fn both<const ISA: u8>(a: &[Self], b: &[Self], d: &mut [Self], vd: Option<&[Self]>, va: Option<&[Self]>, ahead: usize) -> (f64, f64, Self, Self) {
        both_in_two_sweeps::<Self, ISA>(a, b, d, vd, va, ahead)
    }
}

impl Rows for f64 {}

impl Rows for f32 {
    #[inline(always)]
    fn diff_sq_dot<const ISA: u8>(a: &[f32], b: &[f32], d: &mut [f32], v: Option<&[f32]>, ahead: usize) -> (f64, f32) {
        assert!(a.len() == d.len() && b.len() == d.len() && v.is_none_or(|v| v.len() == d.len()));
        // SAFETY: ISA is only AVX512 or AVX2 in functions compiled for (and called on
        // CPUs with) those features; the lengths are checked above.
        #[cfg(target_arch = "x86_64")]
        unsafe {
            match ISA {
                AVX512 => return simd::rows_avx512(a, Some(b), Some(d), v, ahead),
                AVX2 => return simd::rows_avx2(a, Some(b), Some(d), v, ahead),
                _ => {}
            }
        }
        diff_sq_dot(a, b, d, v)
    }
    #[inline(always)]
    fn sq_dot<const ISA: u8>(a: &[f32], v: Option<&[f32]>) -> (f64, f32) {
        assert!(v.is_none_or(|v| v.len() == a.len()));
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        unsafe {
            match ISA {
                AVX512 => return simd::rows_avx512(a, None, None, v, 0),
                AVX2 => return simd::rows_avx2(a, None, None, v, 0),
                _ => {}
            }
        }
        sq_dot(a, v)
    }
    #[inline(always)]
    fn both<const ISA: u8>(a: &[f32], b: &[f32], d: &mut [f32], vd: Option<&[f32]>, va: Option<&[f32]>, ahead: usize) -> (f64, f64, f32, f32) {
        assert!(a.len() == d.len() && b.len() == d.len() && vd.is_none_or(|v| v.len() == d.len()) && va.is_none_or(|v| v.len() == d.len()));
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        if ISA == AVX512 {
            return unsafe { simd::both_avx512(a, b, d, vd, va, ahead) };
        }
        both_in_two_sweeps::<Self, ISA>(a, b, d, vd, va, ahead)
    }
}

/// [`Rows::both`] as its two halves, one sweep each.
#[inline(always)]
fn both_in_two_sweeps<T: Rows, const ISA: u8>(a: &[T], b: &[T], d: &mut [T], vd: Option<&[T]>, va: Option<&[T]>, ahead: usize) -> (f64, f64, T, T) {
    let (dd, dv) = T::diff_sq_dot::<ISA>(a, b, d, vd, ahead);
    let (aa, av) = T::sq_dot::<ISA>(a, va);
    (dd, aa, dv, av)
}

/// The portable [`Rows::diff_sq_dot`]: `d = a - b`, then [`sq_dot`] of `d`.
#[inline(always)]
fn diff_sq_dot<T: Real>(a: &[T], b: &[T], d: &mut [T], v: Option<&[T]>) -> (f64, T) {
    for ((d, a), b) in d.iter_mut().zip(a).zip(b) {
        *d = *a - *b;
    }
    sq_dot(d, v)
}

/// `(sum a_j^2, sum a_j v_j)` over 16 lanes (so the compiler vectorises it); the squares
/// are summed in f64 (norms to float64 accuracy), the products (power iteration) in `T`.
#[inline(always)]
fn sq_dot<T: Real>(a: &[T], v: Option<&[T]>) -> (f64, T) {
    let (mut s, mut d) = ([0f64; LANES], [T::default(); LANES]);
    let ac = a.chunks_exact(LANES);
    let ar = ac.remainder();
    match v {
        Some(v) => {
            let vc = v.chunks_exact(LANES);
            let vr = vc.remainder();
            for (x, y) in ac.zip(vc) {
                let (x, y): (&[T; LANES], &[T; LANES]) = (x.try_into().expect("a full chunk"), y.try_into().expect("a full chunk"));
                for l in 0..LANES {
                    let xl = x[l].to_f64();
                    s[l] = xl.mul_add(xl, s[l]);
                    d[l] = x[l].mul_add(y[l], d[l]);
                }
            }
            for (l, (x, y)) in ar.iter().zip(vr).enumerate() {
                d[l] += *x * *y;
            }
        }
        None => {
            for x in ac {
                let x: &[T; LANES] = x.try_into().expect("a full chunk");
                for l in 0..LANES {
                    let xl = x[l].to_f64();
                    s[l] = xl.mul_add(xl, s[l]);
                }
            }
        }
    }
    for (l, x) in ar.iter().enumerate() {
        s[l] += x.to_f64() * x.to_f64();
    }
    (s.iter().sum(), T::from_f64(d.iter().fold(0.0, |acc, a| acc + a.to_f64())))
}

/// `z += c a`.
#[inline(always)]
fn axpy<T: Real>(c: T, a: &[T], z: &mut [T]) {
    for (z, a) in z.iter_mut().zip(a) {
        *z = c.mul_add(*a, *z);
    }
}

/// The float32 row loops in explicit vector instructions: one sweep over a row forms
/// `d = a - b` (if `b` is given, written to `d`), sums its squares in float64 (each 8-lane
/// half converted exactly) and its products with `v` in float32 lanes.
#[cfg(target_arch = "x86_64")]
mod simd {
    use std::arch::x86_64::*;

    /// Adds the squares of `x`'s 16 lanes, each 8-lane half converted to float64 (exactly),
    /// to `s0` and `s1` (inlined into its AVX-512 callers).
    ///
    /// # Safety
    /// The CPU has AVX-512F and FMA.
    #[inline(always)]
    unsafe fn squares(x: __m512, s0: &mut __m512d, s1: &mut __m512d) {
        let lo = _mm512_cvtps_pd(_mm512_castps512_ps256(x));
        let hi = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(x))));
        *s0 = _mm512_fmadd_pd(lo, lo, *s0);
        *s1 = _mm512_fmadd_pd(hi, hi, *s1);
    }

    /// # Safety
    /// The CPU has AVX-512F and FMA; `b`, `d` and `v`, where given, are as long as `a`.
    #[target_feature(enable = "avx512f,fma")]
    pub(super) unsafe fn rows_avx512(a: &[f32], b: Option<&[f32]>, d: Option<&mut [f32]>, v: Option<&[f32]>, ahead: usize) -> (f64, f32) {
        let k = a.len();
        let n = k / 16 * 16;
        let (pa, pb) = (a.as_ptr(), b.map(|b| b.as_ptr()));
        let pd = d.map(|d| d.as_mut_ptr());
        let pv = v.map(|v| v.as_ptr());
        // two independent sets of accumulators (the FMA latency would bound a single chain)
        let (mut s0, mut s1, mut s2, mut s3) = (_mm512_setzero_pd(), _mm512_setzero_pd(), _mm512_setzero_pd(), _mm512_setzero_pd());
        let (mut dot0, mut dot1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
        let step = |j: usize, s0: &mut __m512d, s1: &mut __m512d, dot: &mut __m512| {
            let mut x = _mm512_loadu_ps(pa.add(j));
            if let Some(pb) = pb {
                if ahead > 0 {
                    _mm_prefetch::<_MM_HINT_NTA>(pb.wrapping_add(j + ahead) as *const i8);
                }
                x = _mm512_sub_ps(x, _mm512_loadu_ps(pb.add(j)));
            }
            if let Some(pd) = pd {
                _mm512_storeu_ps(pd.add(j), x);
            }
            squares(x, s0, s1);
            if let Some(pv) = pv {
                *dot = _mm512_fmadd_ps(x, _mm512_loadu_ps(pv.add(j)), *dot);
            }
        };
        let mut j = 0;
        while j + 32 <= n {
            step(j, &mut s0, &mut s1, &mut dot0);
            step(j + 16, &mut s2, &mut s3, &mut dot1);
            j += 32;
        }
        if j < n {
            step(j, &mut s0, &mut s1, &mut dot0);
            j += 16;
        }
        let (s0, s1, dot) = (_mm512_add_pd(s0, s2), _mm512_add_pd(s1, s3), _mm512_add_ps(dot0, dot1));
        let (mut ss, mut dt) = (_mm512_reduce_add_pd(_mm512_add_pd(s0, s1)), _mm512_reduce_add_ps(dot));
        tail(j, k, pa, pb, pd, pv, &mut ss, &mut dt);
        (ss, dt)
    }

    /// [`super::Rows::both`] in one sweep over `a` and `b`; with `ahead > 0` it also
    /// prefetches the elements `ahead` past each of `b`'s (non-temporally: the reference
    /// weights are read once per measured step, and should not push the training step's
    /// data out of the caches).
    ///
    /// # Safety
    /// The CPU has AVX-512F and FMA; `b`, `d`, `vd` and `va` (where given) are as long as `a`.
    #[target_feature(enable = "avx512f,fma")]
    pub(super) unsafe fn both_avx512(a: &[f32], b: &[f32], d: &mut [f32], vd: Option<&[f32]>, va: Option<&[f32]>, ahead: usize) -> (f64, f64, f32, f32) {
        let k = a.len();
        let n = k / 16 * 16;
        let (pa, pb, pd) = (a.as_ptr(), b.as_ptr(), d.as_mut_ptr());
        let (pvd, pva) = (vd.map(|v| v.as_ptr()), va.map(|v| v.as_ptr()));
        let (mut d0, mut d1, mut a0, mut a1) = (_mm512_setzero_pd(), _mm512_setzero_pd(), _mm512_setzero_pd(), _mm512_setzero_pd());
        let (mut dot_d, mut dot_a) = (_mm512_setzero_ps(), _mm512_setzero_ps());
        let mut j = 0;
        while j < n {
            let x = _mm512_loadu_ps(pa.add(j));
            if ahead > 0 {
                _mm_prefetch::<_MM_HINT_NTA>(pb.wrapping_add(j + ahead) as *const i8);
            }
            let y = _mm512_sub_ps(x, _mm512_loadu_ps(pb.add(j)));
            _mm512_storeu_ps(pd.add(j), y);
            squares(y, &mut d0, &mut d1);
            squares(x, &mut a0, &mut a1);
            if let Some(p) = pvd {
                dot_d = _mm512_fmadd_ps(y, _mm512_loadu_ps(p.add(j)), dot_d);
            }
            if let Some(p) = pva {
                dot_a = _mm512_fmadd_ps(x, _mm512_loadu_ps(p.add(j)), dot_a);
            }
            j += 16;
        }
        let (mut dd, mut aa) = (_mm512_reduce_add_pd(_mm512_add_pd(d0, d1)), _mm512_reduce_add_pd(_mm512_add_pd(a0, a1)));
        let (mut dv, mut av) = (_mm512_reduce_add_ps(dot_d), _mm512_reduce_add_ps(dot_a));
        tail(j, k, pa, Some(pb), Some(pd), pvd, &mut dd, &mut dv);
        tail(j, k, pa, None, None, pva, &mut aa, &mut av);
        (dd, aa, dv, av)
    }

    /// # Safety
    /// The CPU has AVX2 and FMA; `b`, `d` and `v`, where given, are as long as `a`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn rows_avx2(a: &[f32], b: Option<&[f32]>, d: Option<&mut [f32]>, v: Option<&[f32]>, ahead: usize) -> (f64, f32) {
        let k = a.len();
        let n = k / 8 * 8;
        let (pa, pb) = (a.as_ptr(), b.map(|b| b.as_ptr()));
        let pd = d.map(|d| d.as_mut_ptr());
        let pv = v.map(|v| v.as_ptr());
        let (mut s0, mut s1, mut dot) = (_mm256_setzero_pd(), _mm256_setzero_pd(), _mm256_setzero_ps());
        let mut j = 0;
        while j < n {
            let mut x = _mm256_loadu_ps(pa.add(j));
            if let Some(pb) = pb {
                if ahead > 0 && j % 16 == 0 {
                    _mm_prefetch::<_MM_HINT_NTA>(pb.wrapping_add(j + ahead) as *const i8);
                }
                x = _mm256_sub_ps(x, _mm256_loadu_ps(pb.add(j)));
            }
            if let Some(pd) = pd {
                _mm256_storeu_ps(pd.add(j), x);
            }
            let lo = _mm256_cvtps_pd(_mm256_castps256_ps128(x));
            let hi = _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(x));
            s0 = _mm256_fmadd_pd(lo, lo, s0);
            s1 = _mm256_fmadd_pd(hi, hi, s1);
            if let Some(pv) = pv {
                dot = _mm256_fmadd_ps(x, _mm256_loadu_ps(pv.add(j)), dot);
            }
            j += 8;
        }
        let mut s = [0f64; 4];
        _mm256_storeu_pd(s.as_mut_ptr(), _mm256_add_pd(s0, s1));
        let mut t = [0f32; 8];
        _mm256_storeu_ps(t.as_mut_ptr(), dot);
        let (mut ss, mut dt) = (s.iter().sum::<f64>(), t.iter().sum::<f32>());
        tail(j, k, pa, pb, pd, pv, &mut ss, &mut dt);
        (ss, dt)
    }

    /// The elements `j..k` that do not fill a vector.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tail(j: usize, k: usize, pa: *const f32, pb: Option<*const f32>, pd: Option<*mut f32>, pv: Option<*const f32>, ss: &mut f64, dt: &mut f32) {
        for j in j..k {
            let mut x = *pa.add(j);
            if let Some(pb) = pb {
                x -= *pb.add(j);
            }
            if let Some(pd) = pd {
                *pd.add(j) = x;
            }
            *ss += x as f64 * x as f64;
            if let Some(pv) = pv {
                *dt += x * *pv.add(j);
            }
        }
    }
}

/// How many rows ahead the pass prefetches the reference weights (1-2 measured best; the
/// hardware prefetcher alone left the pass slower).
const PREFETCH_ROWS: usize = 2;

/// Rows of `D` formed at once by a thread: `~64K` elements (256 KB in float32), which stay in
/// the L2 cache between the row sums, the power step and the product.
///
/// With a probe of more than [`THIN_MAX_ROWS`] rows the block's product runs matrixmultiply,
/// whose per-call packing of the probe pays off only over larger blocks (`~256K` elements
/// measured best at `64 x 1024 x 1024`).
fn block_rows(k: usize, p: usize) -> usize {
    let elements = if p > THIN_MAX_ROWS { 256 * 1024 } else { 64 * 1024 };
    let rows = (elements / k).clamp(1, 4096);
    // (whole tiles of the thin kernel where there are enough rows)
    if rows >= THIN_TILE_ROWS {
        rows / THIN_TILE_ROWS * THIN_TILE_ROWS
    } else {
        rows
    }
}

thread_local! {
    /// Per-thread scratch for blocks of `D` (bytes, reused across calls).
    static SCRATCH: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
}

/// What a pass computes; `v_d`/`v_w` are the chains' input vectors.
struct Pass<'a, T> {
    wt: &'a [T],
    wr: &'a [T],
    m: usize,
    k: usize,
    /// `(x [P, k] contiguous, P, alpha, eff [P, m] output address)`
    product: Option<(&'a [T], usize, f64, usize)>,
    /// The output address of `alpha x W_t^T` (`[P, m]`, with `product`'s `x` and `alpha`).
    out: Option<usize>,
    /// Accumulate the squared sums.
    fro: bool,
    v_d: Option<&'a [T]>,
    v_w: Option<&'a [T]>,
    /// The instructions the rows' loops and the block products run.
    level: Level,
}

impl<T: Rows> Pass<'_, T> {
    /// Rows `lo..hi`, compiled for the pass's [`Level`] (the crate is built for baseline
    /// x86-64, whose SSE2 would make these loops several times slower than the memory they
    /// read).
    fn rows(&self, lo: usize, hi: usize) -> Acc<T> {
        #[cfg(target_arch = "x86_64")]
        match self.level {
            // SAFETY: the CPU has AVX-512F and FMA (checked).
            Level::Avx512 if self.level.available() => return unsafe { self.rows_avx512(lo, hi) },
            // SAFETY: the CPU has AVX2 and FMA (checked).
            Level::Avx2 if self.level.available() => return unsafe { self.rows_avx2(lo, hi) },
            _ => {}
        }
        self.rows_any::<PORTABLE>(lo, hi)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,fma")]
    unsafe fn rows_avx512(&self, lo: usize, hi: usize) -> Acc<T> {
        self.rows_any::<AVX512>(lo, hi)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn rows_avx2(&self, lo: usize, hi: usize) -> Acc<T> {
        self.rows_any::<AVX2>(lo, hi)
    }

    #[inline(always)]
    fn rows_any<const ISA: u8>(&self, lo: usize, hi: usize) -> Acc<T> {
        let k = self.k;
        let mut acc = Acc {
            fro_d: 0.0,
            fro_w: 0.0,
            d: self.v_d.map(|v| Chain { v: vec![], av2: 0.0, z: vec![T::default(); v.len()] }),
            w: self.v_w.map(|v| Chain { v: vec![], av2: 0.0, z: vec![T::default(); v.len()] }),
        };
        let need_d = self.fro || self.v_d.is_some() || self.product.is_some();
        let blk = block_rows(k, self.product.map_or(0, |p| p.1));
        // (taken out of the thread-local, so that the loops below are compiled in this
        // function, with its target features)
        let mut s = SCRATCH.with(|s| std::mem::take(&mut *s.borrow_mut()));
        {
            let words = (blk * k * std::mem::size_of::<T>()).div_ceil(8);
            if s.len() < words {
                s.resize(words, 0);
            }
            // SAFETY: the scratch holds at least blk * k elements of T (u64-aligned).
            let scratch = unsafe { std::slice::from_raw_parts_mut(s.as_mut_ptr() as *mut T, blk * k) };
            let mut r0 = lo;
            while r0 < hi {
                let r1 = (r0 + blk).min(hi);
                for i in r0..r1 {
                    let wt = &self.wt[i * k..(i + 1) * k];
                    if need_d && (self.fro || self.v_w.is_some()) {
                        // both matrices' rows in one sweep, both chains' steps in another
                        let d = &mut scratch[(i - r0) * k..(i - r0 + 1) * k];
                        let (dd, ww, ad, aw) = T::both::<ISA>(wt, &self.wr[i * k..(i + 1) * k], d, self.v_d, self.v_w, PREFETCH_ROWS * k);
                        acc.fro_d += dd;
                        acc.fro_w += ww;
                        Chain::add_pair(acc.d.as_mut(), ad, d, acc.w.as_mut(), aw, wt);
                        continue;
                    }
                    if need_d {
                        let d = &mut scratch[(i - r0) * k..(i - r0 + 1) * k];
                        let (ss, a) = T::diff_sq_dot::<ISA>(wt, &self.wr[i * k..(i + 1) * k], d, self.v_d, PREFETCH_ROWS * k);
                        acc.fro_d += ss;
                        if let Some(c) = acc.d.as_mut() {
                            c.add(a, d);
                        }
                    }
                    if self.fro || self.v_w.is_some() {
                        let (ss, a) = T::sq_dot::<ISA>(wt, self.v_w);
                        acc.fro_w += ss;
                        if let Some(c) = acc.w.as_mut() {
                            c.add(a, wt);
                        }
                    }
                }
                if let Some((x, p, alpha, eff)) = self.product {
                    // eff[:, r0..r1] = alpha x D_block^T (and out[:, r0..r1] = alpha x
                    // W_t_block^T, while the block is in cache): [P, k] x [k, r1 - r0]
                    let block = |w: &[T], y: usize| {
                        // SAFETY: x is [P, k] contiguous, w holds the block's r1 - r0 rows,
                        // and the threads write disjoint columns r0..r1 of y ([P, m]).
                        unsafe {
                            // (probes of up to THIN_MAX_ROWS by the thin kernel, which
                            // reads the block where it lies in cache; matrixmultiply would
                            // pack the block and the probe for every block: at
                            // 64 x 1024 x 1024 the block products were measured faster)
                            if p <= THIN_MAX_ROWS {
                                thin_product(self.level, w, r1 - r0, k, x, p, alpha, (y as *mut T).add(r0), (self.m as isize, 1));
                            } else {
                                T::gemm(p, k, r1 - r0, alpha, x.as_ptr(), (k as isize, 1), w.as_ptr(), (1, k as isize), 0.0, (y as *mut T).add(r0), (self.m as isize, 1));
                            }
                        }
                    };
                    block(&scratch[..(r1 - r0) * k], eff);
                    if let Some(out) = self.out {
                        block(&self.wt[r0 * k..r1 * k], out);
                    }
                }
                r0 = r1;
            }
        }
        SCRATCH.with(|cell| *cell.borrow_mut() = s);
        acc
    }

    /// All rows, split between the threads when the matrix is large enough to pay for it;
    /// the threads' accumulators are merged in thread order.
    fn run(&self) -> Acc<T> {
        let slots: Vec<Mutex<Option<Acc<T>>>> = (0..tch::get_num_threads().max(1)).map(|_| Mutex::new(None)).collect();
        on_threads(threads_if(self.m * self.k >= 1 << 16), &|t, nt| {
            // (halves in multiples of the thin kernel's tiles; blocks within them)
            let chunk = self.m.div_ceil(nt.max(1)).div_ceil(THIN_TILE_ROWS) * THIN_TILE_ROWS;
            let (lo, hi) = ((t * chunk).min(self.m), ((t + 1) * chunk).min(self.m));
            let acc = self.rows(lo, hi);
            if let Some(slot) = slots.get(t) {
                *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(acc);
            }
        });
        let mut total: Option<Acc<T>> = None;
        for acc in slots.into_iter().filter_map(|s| s.into_inner().unwrap_or_else(|e| e.into_inner())) {
            match total.as_mut() {
                None => total = Some(acc),
                Some(t) => {
                    t.fro_d += acc.fro_d;
                    t.fro_w += acc.fro_w;
                    for (a, b) in [(&mut t.d, acc.d), (&mut t.w, acc.w)] {
                        if let (Some(a), Some(b)) = (a.as_mut(), b) {
                            a.av2 += b.av2;
                            a.z.iter_mut().zip(&b.z).for_each(|(x, y)| *x += *y);
                        }
                    }
                }
            }
        }
        total.expect("on_threads ran thread 0")
    }
}

/// One convergence check of a chain whose step is accumulated: `Some(||A||_2)` when done
/// (the estimates agree to `tol`, or the last iteration), after moving the vector on.
fn check<T: Real>(chain: &mut Chain<T>, tol: f64, last: bool) -> Option<f64> {
    let (un, s, zn) = chain.estimates();
    if un == 0.0 || !un.is_finite() {
        return Some(un);
    }
    chain.advance(zn);
    (s - un <= tol * s || last).then_some(s)
}

#[allow(clippy::too_many_arguments)]
fn run<T: Rows>(w_t: &Tensor, w_ref: &Tensor, x: &Tensor, alpha: f64, v_diff: &mut Tensor, v_current: Option<&mut Tensor>, tol: f64, max_iter: usize, forward: bool) -> DenseChange {
    let (m, k) = (w_t.size()[0] as usize, w_t.size()[1] as usize);
    let (wt, wr, x) = (w_t.contiguous(), w_ref.contiguous(), x.contiguous());
    let p = x.size()[0] as usize;
    let eff = Tensor::empty([p as i64, m as i64], (T::KIND, Device::Cpu));
    let out = forward.then(|| Tensor::empty([p as i64, m as i64], (T::KIND, Device::Cpu)));
    let mut d = Chain::new(unit::<T>(v_diff, k));
    let mut w = v_current.as_ref().map(|v| Chain::new(unit::<T>(v, k)));
    let (wts, wrs) = (elements::<T>(&wt), elements::<T>(&wr));
    let level = Level::current();
    let first = Pass {
        wt: wts,
        wr: wrs,
        m,
        k,
        product: (p > 0).then(|| (elements::<T>(&x), p, alpha, eff.data_ptr() as usize)),
        out: out.as_ref().filter(|_| p > 0).map(|o| o.data_ptr() as usize),
        fro: true,
        level,
        v_d: Some(&d.v),
        v_w: w.as_ref().map(|c| c.v.as_slice()),
    }
    .run();
    let (fro_d, fro_w) = (first.fro_d.sqrt(), first.fro_w.sqrt());
    let take = |c: &mut Chain<T>, a: Option<Chain<T>>| {
        if let Some(a) = a {
            c.av2 = a.av2;
            c.z = a.z;
        }
    };
    take(&mut d, first.d);
    if let Some(w) = w.as_mut() {
        take(w, first.w);
    }
    // further power steps for the chains that have not converged, both in one pass when
    // both need one (a pass for W_t alone reads only W_t)
    let (mut sigma_d, mut sigma_w) = (None, if w.is_some() { None } else { Some(f64::NAN) });
    for it in 1..=max_iter.max(1) {
        let last = it == max_iter.max(1);
        if sigma_d.is_none() {
            sigma_d = check(&mut d, tol, last);
        }
        if let (None, Some(c)) = (sigma_w, w.as_mut()) {
            sigma_w = check(c, tol, last);
        }
        if sigma_d.is_some() && sigma_w.is_some() {
            break;
        }
        let pass = Pass {
            wt: wts,
            wr: wrs,
            m,
            k,
            product: None,
            out: None,
            fro: false,
            level,
            v_d: sigma_d.is_none().then_some(d.v.as_slice()),
            v_w: if sigma_w.is_none() { w.as_ref().map(|c| c.v.as_slice()) } else { None },
        };
        let acc = pass.run();
        take(&mut d, acc.d);
        if let Some(w) = w.as_mut() {
            take(w, acc.w);
        }
    }
    let sigma_d = sigma_d.unwrap_or(f64::NAN);
    let current = w.as_ref().map(|_| (fro_w, sigma_w.unwrap_or(f64::NAN)));
    let store = |t: &mut Tensor, v: &[T]| *t = Tensor::from_slice(v);
    store(v_diff, &d.v);
    if let (Some(t), Some(c)) = (v_current, w.as_ref()) {
        store(t, &c.v);
    }
    DenseChange { eff, diff: (fro_d, sigma_d), current, out }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `||a||_2`, and how far below it power iteration stopped at `iter_tol` may be, relative
    /// to it: with `v` weighing `p <= 1/2` on the second singular direction, the stopping
    /// rule's `s - ||A v||` is `p (1 - p) D^2 / ||A v||^2` (`D = s1^2 - s2^2`, `s` the
    /// estimate) while `s1^2 - s^2` is `p s2^2 D / ||A v||^2`: the estimate is within about
    /// `iter_tol 2 s2^2 / D` of `s1`, which is far from `iter_tol` when the top two singular
    /// values are close (as for random matrices: which those are depends on what other tests
    /// drew from the shared generator first).
    fn exact_2norm(a: &Tensor, iter_tol: f64) -> (f64, f64) {
        let s = a.to_kind(Kind::Double).svd(true, false).1;
        let (s1, s2) = (s.double_value(&[0]), if s.numel() > 1 { s.double_value(&[1]) } else { 0.0 });
        (s1, iter_tol * 2.0 * s2 * s2 / (s1 * s1 - s2 * s2))
    }

    /// The fused pass against the term-by-term definitions at every level this CPU has, in
    /// float64 and float32, on shapes that split into several blocks and between threads,
    /// with probes for the thin kernel and for matrixmultiply, and with a cold start.
    #[test]
    fn fused_pass_matches_the_definitions_at_every_level() {
        crate::simd::at_every_level("fused pass", |_| fused_pass_matches_the_definitions());
    }

    fn fused_pass_matches_the_definitions() {
        tch::manual_seed(3);
        // (power iteration to 1e-12 in float64; float32 estimates cannot agree that closely:
        // 1e-6, its error bounded as in `exact_2norm`)
        for (kind, tol, iter_tol) in [(Kind::Double, 1e-10, 1e-12), (Kind::Float, 2e-5, 1e-6)] {
            for (m, k, p) in [(300, 700, 5), (37, 3000, 16), (1, 9, 2), (80, 200, 70)] {
                let opts = (kind, Device::Cpu);
                let w0 = Tensor::randn([m, k], opts);
                let wt = &w0 + Tensor::randn([m, k], opts) * 0.01 + Tensor::randn([m, 1], opts).matmul(&Tensor::randn([1, k], opts)) * 0.05;
                let x = Tensor::randn([p, k], opts);
                let (mut vd, mut vw) = (Tensor::ones([k], opts), Tensor::ones([k], opts));
                let out = dense_change(&wt, &w0, &x, 0.5, &mut vd, Some(&mut vw), iter_tol, 5000, true).unwrap();
                let d = &wt - &w0;
                let eff = x.matmul(&d.tr()) * 0.5;
                let err = (&out.eff - &eff).abs().max().double_value(&[]) / eff.abs().max().double_value(&[]);
                assert!(err < tol * 10.0, "{kind:?} {m}x{k}: eff off by {err}");
                let y = x.matmul(&wt.tr()) * 0.5;
                let err = (out.out.as_ref().unwrap() - &y).abs().max().double_value(&[]) / y.abs().max().double_value(&[]);
                assert!(err < tol * 10.0, "{kind:?} {m}x{k}: output off by {err}");
                let near = |a: f64, b: f64, rel: f64, what: &str| assert!((a - b).abs() <= rel * b.abs(), "{kind:?} {m}x{k} {what}: {a} vs {b}");
                let close = |a: f64, b: f64, what: &str| near(a, b, tol * 10.0, what);
                let spectral = |a: f64, t: &Tensor, what: &str| {
                    let (s1, stop) = exact_2norm(t, iter_tol);
                    near(a, s1, tol * 10.0 + 1.5 * stop, what)
                };
                close(out.diff.0, d.norm().double_value(&[]), "||D||_F");
                spectral(out.diff.1, &d, "||D||_2");
                let (fw, sw) = out.current.unwrap();
                close(fw, wt.norm().double_value(&[]), "||W||_F");
                spectral(sw, &wt, "||W||_2");
                // warm started from the converged vectors, one pass suffices and agrees
                let again = dense_change(&wt, &w0, &x, 0.5, &mut vd, None, iter_tol, 1, false).unwrap();
                spectral(again.diff.1, &d, "||D||_2, warm");
                assert!(again.current.is_none());
            }
        }
    }

    /// The explicit float32 row loops (AVX-512 and AVX2, where the CPU has them) against the
    /// portable ones: differences written, squares summed in f64, products with `v`.
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn vector_row_loops_match_the_portable_ones() {
        tch::manual_seed(4);
        for k in [1usize, 15, 16, 17, 33, 1000] {
            let draw = || -> Vec<f32> { Tensor::randn([k as i64], (Kind::Float, Device::Cpu)).try_into().unwrap() };
            let (a, b, v) = (draw(), draw(), draw());
            let mut d_want = vec![0f32; k];
            let want = <f64 as Rows>::diff_sq_dot::<PORTABLE>(&[], &[], &mut [], None, 0); // (an empty row)
            assert_eq!(want, (0.0, 0.0));
            let want = <f32 as Rows>::diff_sq_dot::<PORTABLE>(&a, &b, &mut d_want, Some(&v), 0);
            let want_sq = <f32 as Rows>::sq_dot::<PORTABLE>(&a, None);
            let mut isas = vec![];
            for (level, isa) in [(Level::Avx512, AVX512), (Level::Avx2, AVX2)] {
                if level.available() {
                    isas.push(isa);
                } else if k == 1 {
                    eprintln!("row loops: skipped the {level} loops (this CPU lacks them)");
                }
            }
            for isa in isas {
                let mut d = vec![0f32; k];
                // SAFETY: the CPU has the ISA (checked above); all slices are k long.
                let (got, got_sq) = unsafe {
                    match isa {
                        AVX512 => (simd::rows_avx512(&a, Some(&b), Some(&mut d), Some(&v), 2 * k), simd::rows_avx512(&a, None, None, None, 0)),
                        _ => (simd::rows_avx2(&a, Some(&b), Some(&mut d), Some(&v), 2 * k), simd::rows_avx2(&a, None, None, None, 0)),
                    }
                };
                assert_eq!(d, d_want, "isa {isa}, k {k}: differences");
                assert!((got.0 - want.0).abs() <= 1e-12 * want.0, "isa {isa}, k {k}: {got:?} vs {want:?}");
                assert!((got.1 - want.1).abs() <= 1e-5 * (k as f32).sqrt(), "isa {isa}, k {k}: {got:?} vs {want:?}");
                assert!((got_sq.0 - want_sq.0).abs() <= 1e-12 * want_sq.0 && got_sq.1 == 0.0, "isa {isa}, k {k}");
            }
            // both rows in one sweep (AVX-512 where the CPU has it) against the two sweeps
            let va = draw();
            let (mut d0, mut d1) = (vec![0f32; k], vec![0f32; k]);
            let want = <f32 as Rows>::both::<PORTABLE>(&a, &b, &mut d0, Some(&v), Some(&va), 0);
            let got = if Level::Avx512.available() {
                // SAFETY: the CPU has AVX-512F and FMA; all slices are k long.
                unsafe { simd::both_avx512(&a, &b, &mut d1, Some(&v), Some(&va), 2 * k) }
            } else {
                <f32 as Rows>::both::<PORTABLE>(&a, &b, &mut d1, Some(&v), Some(&va), 0)
            };
            assert_eq!(d0, d1, "k {k}: both, differences");
            assert!((got.0 - want.0).abs() <= 1e-12 * want.0 && (got.1 - want.1).abs() <= 1e-12 * want.1, "k {k}: {got:?} vs {want:?}");
            assert!((got.2 - want.2).abs() <= 1e-5 * (k as f32).sqrt() && (got.3 - want.3).abs() <= 1e-5 * (k as f32).sqrt(), "k {k}: {got:?} vs {want:?}");
        }
    }

    #[test]
    fn zero_difference_and_unsupported_inputs() {
        let w = Tensor::randn([8, 4], (Kind::Float, Device::Cpu));
        let x = Tensor::randn([3, 4], (Kind::Float, Device::Cpu));
        let mut v = Tensor::ones([4], (Kind::Float, Device::Cpu));
        let out = dense_change(&w, &w, &x, 1.0, &mut v, None, 1e-3, 50, false).unwrap();
        assert_eq!(out.diff, (0.0, 0.0));
        assert_eq!(out.eff.abs().max().double_value(&[]), 0.0);
        // mixed kinds and mismatched shapes fall back to the term-by-term path
        assert!(dense_change(&w, &w.to_kind(Kind::Double), &x, 1.0, &mut v, None, 1e-3, 50, false).is_none());
        assert!(dense_change(&w, &w, &x.narrow(1, 0, 3), 1.0, &mut v, None, 1e-3, 50, false).is_none());
    }
}

