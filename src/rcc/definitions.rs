//! The metric definitions: norms, alignments, spectral norms and the low-rank norms of a
//! one-step update, and [`site_metrics`], every metric of one site against a reference (see
//! the module docs of [`crate::rcc`] for the conventions). Where a dense weight's pass can be
//! fused, [`site_metrics`] takes it from [`super::fast`]; everything else here is computed as
//! defined.
use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use super::fast::{fused_pass, DenseChange};
use super::{Metric, Since};
use crate::kernels::ops;
use crate::model::LinearOp;
use crate::optim::LowRankStep;

/// How spectral norms are computed.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "type")]
pub enum Spectral {
    /// Warm-started power iteration to relative tolerance `tol` (at most `max_iter` steps).
    /// Its rule (two successive lower bounds agree to `tol`) can stop short of `||A||_2`
    /// where the top singular values crowd together, as at the edge of a random matrix's
    /// spectrum. So the initial weights, whose norms are computed once per run, are
    /// converged by Lanczos instead ([`lanczos_norm`], to [`FIXED_WEIGHT_TOL`]), and their
    /// singular vectors warm-start the power iterations of `W_t` and `W_{t-1}`. The norms of
    /// updates `Delta W` (per step, fused into the monitor's pass over the weights) may
    /// still fall below `||Delta W||_2` by more than `tol`: use a smaller `tol`, or `Exact`,
    /// where a percent matters.
    PowerIteration { tol: f64, max_iter: usize },
    /// libtorch's exact matrix 2-norm (an SVD; slow at large width).
    Exact,
}

/// `sqrt(mean(v^2))` over all entries, summed in f64 (where the kernels' pass does not apply,
/// or they are off, by libtorch's 2-norm in float64, with cascade summation).
pub fn rms(v: &Tensor) -> f64 {
    rms_of_difference(&[v])
}

/// `sqrt(mean((t0 - t1 - ...)^2))`: the RMS norm of a difference without forming it as a
/// tensor (the differences in the tensors' precision, left to right, as libtorch would form
/// them; see [`ops::rms_of_difference`]), or through libtorch (the difference formed, its
/// norm in float64) on other devices and kinds or without the kernels.
pub(super) fn rms_of_difference(ts: &[&Tensor]) -> f64 {
    if let Some(v) = ops::rms_of_difference(ts) {
        return v;
    }
    let d = ts[1..].iter().fold(ts[0].shallow_clone(), |acc, t| acc - *t);
    let n = d.numel();
    if n == 0 {
        return f64::NAN;
    }
    d.norm_scalaropt_dtype(2.0, Kind::Double).double_value(&[]) / (n as f64).sqrt()
}

/// The RMS norm of a parameter tensor as the matrix it acts as (see module docs): weight
/// `[fan_out, fan_in]` -> `||W||_F / sqrt(numel)`; gains and biases likewise over their
/// entries.
pub fn weight_rms(w: &Tensor) -> f64 {
    rms(w)
}

/// Spectral norm `||A||_2` by power iteration, warm-started from `v` (updated in place).
///
/// Each iteration takes a unit vector `x` to `u = A x` and `y = A^T u / ||u||`, which gives
/// two successive estimates `||A x|| <= ||y|| <= sigma_max` (power iteration on `A^T A`
/// raises its Rayleigh quotient monotonically). It stops when they agree to the relative
/// tolerance `tol`, or after `max_iter` iterations, and returns `||y||`. A warm start from a
/// converged vector of a slightly changed matrix therefore costs one iteration (two
/// matrix-vector products). Works in the tensor's own precision.
pub fn power_iteration(a: &Tensor, v: &mut Tensor, tol: f64, max_iter: usize) -> f64 {
    tch::no_grad(|| {
        let v0 = v.to_kind(a.kind());
        let mut x = &v0 / v0.norm().double_value(&[]).max(f64::MIN_POSITIVE);
        let mut sigma = 0.0;
        for _ in 0..max_iter.max(1) {
            let u = a.mv(&x);
            let un = u.norm().double_value(&[]);
            if un == 0.0 || !un.is_finite() {
                sigma = un;
                break;
            }
            let y = a.tr().mv(&(u / un));
            let s = y.norm().double_value(&[]);
            x = y / s.max(f64::MIN_POSITIVE);
            sigma = s;
            if s - un <= tol * s {
                break;
            }
        }
        *v = x;
        sigma
    })
}

/// Relative residual to which the spectral norms of fixed weights (the initial weights, whose
/// norms are computed once per run) are converged, whatever the monitor's tolerance.
pub const FIXED_WEIGHT_TOL: f64 = 1e-6;
/// Iteration bound of [`lanczos_norm`] for fixed weights.
pub const FIXED_WEIGHT_MAX_ITER: usize = 1000;

/// `(||A||_2, v)`: the spectral norm of `a` and its top right singular vector, by Lanczos
/// on `A^T A` from `start`, with the basis kept in float64 and reorthogonalised in full
/// (two Gram-Schmidt sweeps); the products with `a` run in its own precision. Stops when the
/// top Ritz value `theta` of `A^T A` has a residual `beta_j |s_j|` of at most `tol theta`,
/// or after `max_iter` iterations (two matrix-vector products each) or an exhausted Krylov
/// space. Power iteration's rule (two successive lower bounds agree to `tol`) stalls at the
/// edge of a random matrix's spectrum, where the top singular values crowd together: on
/// Gaussian `n x n` matrices at `tol = 1e-3` it stopped 0.2-4% below `||A||_2` (about 2% at
/// `n = 1024`, more the wider), while Lanczos reaches `1e-6` in about 50 iterations there.
/// NaN for a non-finite `a`.
pub fn lanczos_norm(a: &Tensor, start: &Tensor, tol: f64, max_iter: usize) -> (f64, Tensor) {
    tch::no_grad(|| {
        let n = a.size()[1];
        let q0 = start.to_kind(Kind::Double);
        let q0n = q0.norm().double_value(&[]);
        let mut basis = vec![if q0n > 0.0 && q0n.is_finite() { q0 / q0n } else { Tensor::ones([n], (Kind::Double, a.device())) / (n as f64).sqrt() }];
        let (mut alpha, mut beta): (Vec<f64>, Vec<f64>) = (vec![], vec![]);
        let steps = max_iter.clamp(1, n.max(1) as usize);
        for j in 0..steps {
            let qj = &basis[j];
            let aq = a.mv(&qj.to_kind(a.kind()));
            let mut w = a.tr().mv(&aq).to_kind(Kind::Double); // A^T A q_j
            alpha.push(w.dot(qj).double_value(&[]));
            let q = Tensor::stack(&basis, 0); // [j + 1, n]
            for _ in 0..2 {
                w = &w - q.tr().mv(&q.mv(&w));
            }
            let bj = w.norm().double_value(&[]);
            let (theta, y) = tridiagonal_top_vector(&alpha, &beta, 1e-3 * tol);
            if !theta.is_finite() {
                return (f64::NAN, basis.swap_remove(0));
            }
            let last = j + 1 == steps || bj == 0.0 || !bj.is_finite();
            if last || bj * y[j].abs() <= tol * theta.abs() {
                let v = q.tr().mv(&Tensor::from_slice(&y).to_device(a.device()));
                return (theta.max(0.0).sqrt(), v.to_kind(start.kind()));
            }
            beta.push(bj);
            basis.push(w / bj);
        }
        unreachable!("the last iteration returns")
    })
}

/// `(||M||_F, ||M||_2)` of the rank-`B` matrix `M = g^T x` (`g: [B, m]`, `x: [B, k]`) from
/// its factors alone, without forming `M`: with the Gram matrices `G = g g^T` and
/// `X = x x^T` (`[B, B]`), `||M||_F^2 = sum_ij G_ij X_ij`, and `||M||_2^2` is the largest
/// eigenvalue of `G X` (the nonzero eigenvalues of `M^T M = x^T G x` are those of `G X`),
/// found by [`top_eigenvalue_of_product`] to the relative residual `spectral` (`Some(tol)`;
/// the monitor passes its power-iteration tolerance, or `1e-9` for [`Spectral::Exact`]; at
/// least [`LOW_RANK_TOL`]). The
/// Grams are formed in the factors' precision, everything after in float64. When a factor is
/// narrower than the batch (a readout's `g: [B, d_out]`), the problem has that factor's width
/// instead: `M M^T = g^T X g` (or `M^T M = x^T G x`), with the identity as the second
/// matrix. Costs `2 B^2 (m + k)` multiply-adds instead of the `m k B` of forming `M`. NaN
/// for non-finite factors. With `spectral = None` only the Frobenius norm is computed (the
/// second value is then NaN).
pub fn low_rank_norms(g: &Tensor, x: &Tensor, spectral: Option<f64>) -> (f64, f64) {
    low_rank_grams(g, x).map_or((f64::NAN, f64::NAN), |(p, q)| low_rank_norms_from(&p, &q, spectral))
}

/// The first half of [`low_rank_norms`]: the two small symmetric matrices `(P, Q)` (the
/// Grams `g g^T` and `x x^T`, or for a narrow factor the `[w, w]` problem and the identity)
/// whose product's eigenvalues are the squared singular values of `g^T x`. The products,
/// split between the threads; `None` if a factor is not finite.
pub(super) fn low_rank_grams(g: &Tensor, x: &Tensor) -> Option<(ndarray::Array2<f64>, ndarray::Array2<f64>)> {
    use ndarray::Array2;
    let as_array = |f: &Tensor| -> Option<Array2<f64>> {
        let f = f.to_kind(Kind::Double).contiguous();
        let (r, c) = (f.size()[0] as usize, f.size()[1] as usize);
        Array2::from_shape_vec((r, c), Vec::<f64>::try_from(f.view([-1])).ok()?).ok()
    };
    let gram = |f: &Tensor| as_array(&ops::gram(f)); // [B, B]
    // a factor narrower than the batch (a readout's g: [B, d_out]) gives a smaller problem:
    // with f that factor, M M^T (or M^T M) = f^T Gram(other) f, of f's width
    let (b, m, k) = (g.size()[0], g.size()[1], x.size()[1]);
    let (p, q) = if m.min(k) < b {
        let (narrow, other) = if m <= k { (g, x) } else { (x, g) };
        let small = if 2 * m.min(k) <= b {
            // much narrower: M = f^T other ([w, wide]) costs w B wide, less than the Gram
            let f = ops::tn(narrow, other, 1.0);
            gram(&f)? // [w, w]
        } else {
            let f = as_array(narrow)?; // [B, w]
            f.t().dot(&gram(other)?).dot(&f) // [w, w]
        };
        let eye = Array2::eye(small.nrows());
        (small, eye)
    } else {
        (gram(g)?, gram(x)?)
    };
    p.iter().chain(q.iter()).all(|v| v.is_finite()).then_some((p, q))
}

/// Relative residual to which [`low_rank_norms`] converges its eigenproblem at least. A
/// residual bounds the distance from the Ritz value to *an* eigenvalue, not to the top one:
/// on Gaussian factors (`B = 48`, width 300) Lanczos stopped at `1e-3` near the second
/// eigenvalue in 6 of 1500 cases (the spectral norm 0.2-2% low), at `1e-6` in none of 10000
/// (20 iterations instead of 13, each two `B x B` products: cheap next to the Grams).
pub const LOW_RANK_TOL: f64 = 1e-6;

/// The second half of [`low_rank_norms`]: `(||M||_F, ||M||_2)` from the matrices of
/// [`low_rank_grams`] (serial: the eigenproblem, to the relative residual `spectral`, or
/// [`LOW_RANK_TOL`] where that is finer; the second value is NaN without it).
pub(super) fn low_rank_norms_from(p: &ndarray::Array2<f64>, q: &ndarray::Array2<f64>, spectral: Option<f64>) -> (f64, f64) {
    let fro = (p * q).sum().max(0.0).sqrt();
    let Some(tol) = spectral else {
        return (fro, f64::NAN);
    };
    let top = top_eigenvalue_of_product(p, q, tol.min(LOW_RANK_TOL), 5000);
    (fro, top.max(0.0).sqrt())
}

/// The largest eigenvalue of `G X` for symmetric positive semi-definite `G`, `X` (`[B, B]`),
/// by Lanczos iteration on `P = G X` in the `X` inner product `<a, b>_X = a^T X b`, in which
/// `P` is self-adjoint. That is Lanczos on the symmetric `S = X^{1/2} G X^{1/2}` (same
/// eigenvalues) without forming `X^{1/2}`. Each iteration costs two matrix-vector products
/// (`G (X v)` and `X w` for the next vector's norm), and the basis is reorthogonalised in
/// full (two Gram-Schmidt sweeps), so the Krylov space, at most `B`-dimensional, is kept
/// exact. The top Ritz value `theta` of the tridiagonal matrix is accepted when its
/// residual `||P y - theta y||_X = beta_j |s_j|` (`s` the Ritz vector in the Krylov basis,
/// `||y||_X = 1`) is at most `tol * theta`, which bounds the distance from `theta` to an
/// eigenvalue; the iteration then runs on to `max_iter` or the exhausted Krylov space (at
/// most `B` steps), and the whole space's top Ritz value replaces the accepted one when it
/// is larger by more than `tol` (the residual test had passed near a lower eigenvalue: it
/// did so for Gaussian factors `48 x 300` in CI). Unlike power iteration it does not stall
/// when the top eigenvalues are close. Starts from a fixed vector, so results are
/// reproducible.
pub fn top_eigenvalue_of_product(g: &ndarray::Array2<f64>, x: &ndarray::Array2<f64>, tol: f64, max_iter: usize) -> f64 {
    use ndarray::Array1;
    let b = g.nrows();
    if b == 0 {
        return 0.0;
    }
    let v = Array1::from_shape_fn(b, |i| 1.0 + 0.1 * ((i as f64) * 0.7).sin());
    let u = x.dot(&v);
    let n2 = v.dot(&u);
    if !n2.is_finite() {
        return f64::NAN;
    }
    if n2 <= 0.0 {
        return 0.0;
    }
    let s = 1.0 / n2.sqrt();
    // the basis V and X V
    let (mut vs, mut us) = (vec![v * s], vec![u * s]);
    let (mut alpha, mut beta): (Vec<f64>, Vec<f64>) = (vec![], vec![]);
    // the Ritz value where the residual test first passed
    let mut early: Option<f64> = None;
    let mut scale = 0.0f64;
    let steps = max_iter.clamp(1, b);
    for j in 0..steps {
        let mut w = g.dot(&us[j]); // P v_j
        alpha.push(w.dot(&us[j]));
        for _ in 0..2 {
            for (v, u) in vs.iter().zip(&us) {
                let c = w.dot(u);
                w.scaled_add(-c, v);
            }
        }
        let xw = x.dot(&w);
        let bj = w.dot(&xw).max(0.0).sqrt();
        scale = scale.max(alpha[j].abs()).max(bj);
        // an exhausted Krylov space (an invariant subspace: its Ritz values are eigenvalues)
        let last = j + 1 == steps || !(bj > 1e-12 * scale) || !bj.is_finite();
        if early.is_none() {
            // (theta to a thousandth of the tolerance: finer digits of the Ritz value do not
            // bring it closer to the eigenvalue)
            let (t, s_last) = tridiagonal_top(&alpha, &beta, 1e-3 * tol);
            if last || bj * s_last.abs() <= tol * t.abs() {
                early = Some(t);
            }
        }
        if last {
            break;
        }
        beta.push(bj);
        vs.push(w / bj);
        us.push(xw / bj);
    }
    // A small residual bounds the distance to *an* eigenvalue: when the start vector's
    // component along the top eigenvector is small, the test can pass near the second one.
    // The Krylov space is at most B-dimensional, so it is run to its end (O(B^3), cheap next
    // to the Grams) and the early value is kept unless the whole space has a larger one.
    let early = early.unwrap_or(f64::NAN);
    let (full, _) = tridiagonal_top(&alpha, &beta, 1e-3 * tol);
    if full > early * (1.0 + tol) { full } else { early }
}

/// The largest eigenvalue of the symmetric tridiagonal matrix with diagonal `a` and
/// off-diagonal `b` (`a.len() - 1` entries) and the last component of its unit eigenvector
/// ([`tridiagonal_top_vector`]).
pub(super) fn tridiagonal_top(a: &[f64], b: &[f64], rel: f64) -> (f64, f64) {
    let (theta, y) = tridiagonal_top_vector(a, b, rel);
    (theta, y.last().copied().unwrap_or(1.0))
}

/// The largest eigenvalue of the symmetric tridiagonal matrix with diagonal `a` and
/// off-diagonal `b` (`a.len() - 1` entries), by bisection on Sturm sequence counts to the
/// relative precision `rel` (at least float64 resolution), and its unit eigenvector, by two
/// steps of inverse iteration (a tridiagonal solve each). `O(len)` per bisection step: for
/// the Lanczos matrices of [`top_eigenvalue_of_product`] and [`lanczos_norm`], cheaper than
/// a dense eigensolver call.
#[allow(clippy::needless_range_loop)]
pub(super) fn tridiagonal_top_vector(a: &[f64], b: &[f64], rel: f64) -> (f64, Vec<f64>) {
    let n = a.len();
    if n == 0 {
        return (0.0, vec![]);
    }
    let off = |i: usize| if i < b.len() { b[i].abs() } else { 0.0 };
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for i in 0..n {
        let r = off(i) + if i > 0 { off(i - 1) } else { 0.0 };
        lo = lo.min(a[i] - r);
        hi = hi.max(a[i] + r);
    }
    if !(lo.is_finite() && hi.is_finite()) {
        return (f64::NAN, vec![1.0; n]);
    }
    // number of eigenvalues below x (the negative pivots of T - x I)
    let below = |x: f64| {
        let mut count = 0;
        let mut q = 1.0;
        for i in 0..n {
            let b2 = if i > 0 { b[i - 1] * b[i - 1] } else { 0.0 };
            q = (a[i] - x) - if i > 0 { b2 / q } else { 0.0 };
            if q == 0.0 {
                q = -f64::EPSILON * (x.abs() + f64::MIN_POSITIVE);
            }
            if q < 0.0 {
                count += 1;
            }
        }
        count
    };
    // the top eigenvalue is the x where below(x) goes from n - 1 to n
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if mid <= lo || mid >= hi || hi - lo <= rel.max(4.0 * f64::EPSILON) * lo.abs().max(hi.abs()) {
            break;
        }
        if below(mid) == n {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    let theta = hi;
    // inverse iteration: solve (T - theta I) y = y_prev (Thomas algorithm; a pivot that
    // vanishes is replaced by a tiny one, the usual trick, as y only needs a direction)
    let tiny = f64::EPSILON * (theta.abs() + f64::MIN_POSITIVE);
    let mut y = vec![1.0; n];
    for _ in 0..2 {
        let (mut c, mut d) = (vec![0.0; n], vec![0.0; n]);
        for i in 0..n {
            let sub = if i > 0 { b[i - 1] } else { 0.0 };
            let mut piv = a[i] - theta - if i > 0 { sub * c[i - 1] } else { 0.0 };
            if piv.abs() < tiny {
                piv = tiny;
            }
            c[i] = if i + 1 < n { b[i] / piv } else { 0.0 };
            d[i] = (y[i] - if i > 0 { sub * d[i - 1] } else { 0.0 }) / piv;
        }
        for i in (0..n).rev() {
            y[i] = d[i] - if i + 1 < n { c[i] * y[i + 1] } else { 0.0 };
        }
        let norm = y.iter().map(|v| v * v).sum::<f64>().sqrt();
        if !(norm > 0.0 && norm.is_finite()) {
            let mut e = vec![0.0; n];
            e[n - 1] = 1.0;
            return (theta, e);
        }
        y.iter_mut().for_each(|v| *v /= norm);
    }
    (theta, y)
}

/// Spectral norm of a parameter *as the operator it applies* (see [`LinearOp`]); warm starts
/// are kept in `cache` under `key`.
pub(super) fn op_norm_2(op: LinearOp, w: &Tensor, spectral: Spectral, cache: &mut HashMap<String, Tensor>, key: &str) -> f64 {
    match op {
        LinearOp::Diagonal => w.abs().max().double_value(&[]),
        LinearOp::Bias => w.norm().double_value(&[]),
        LinearOp::Dense { multiplier } => {
            // The initial weights never change: their norm is computed once.
            // (a key `reference_key(site, Since::Init)`)
            let site = key.strip_suffix("/W0");
            let fixed = site.is_some();
            if fixed {
                if let Some(v) = cache.get(key) {
                    if v.numel() == 1 {
                        return v.double_value(&[]);
                    }
                }
            }
            let s = match spectral {
                Spectral::Exact => tch::no_grad(|| {
                    w.to_kind(Kind::Double).linalg_norm(2.0, &[-2i64, -1][..], false, Kind::Double).double_value(&[])
                }),
                // computed once per run: converged by Lanczos, and its singular vector
                // warm-starts the power iterations of the weights that stay near it
                Spectral::PowerIteration { tol, max_iter } if fixed => {
                    let start = warm_start(cache, key, w);
                    let (s, v) = lanczos_norm(w, &start, tol.min(FIXED_WEIGHT_TOL), max_iter.max(FIXED_WEIGHT_MAX_ITER));
                    if let Some(site) = site {
                        let current = warm_start_keys(site).1;
                        let previous = reference_key(&site_key(site, Since::Previous), Since::Previous);
                        for near in [current, previous] {
                            cache.entry(near).or_insert_with(|| v.shallow_clone());
                        }
                    }
                    s
                }
                Spectral::PowerIteration { tol, max_iter } => {
                    let mut v = warm_start(cache, key, w);
                    let s = power_iteration(w, &mut v, tol, max_iter);
                    cache.insert(key.to_string(), v);
                    s
                }
            };
            let s = multiplier.abs() * s;
            if fixed {
                cache.insert(key.to_string(), Tensor::from(s));
            }
            s
        }
    }
}

/// The cache key of a site measured against `since`: its name, or `delta_name` for the
/// one-step metrics (norms and warm starts are kept per site key).
pub(super) fn site_key(name: &str, since: Since) -> String {
    match since {
        Since::Init => name.to_string(),
        Since::Previous => format!("delta_{name}"),
    }
}

/// The cache key of the reference weight of a site key: `{key}/W0` for the initial weights
/// (fixed: their norms are computed once per run, see [`op_norm_2`]), `{key}/Wprev` for the
/// previous step's.
pub(super) fn reference_key(key: &str, since: Since) -> String {
    match since {
        Since::Init => format!("{key}/W0"),
        Since::Previous => format!("{key}/Wprev"),
    }
}

/// The cache keys of a dense site's power-iteration vectors, for the difference from its
/// reference and for the current weight.
pub(super) fn warm_start_keys(key: &str) -> (String, String) {
    (format!("{key}/dW"), format!("{key}/Wt"))
}

/// The power-iteration vector kept under `key` for a dense weight `w` (taken out of the
/// cache; the caller puts the updated one back), or a fresh seeded start.
pub(super) fn warm_start(cache: &mut HashMap<String, Tensor>, key: &str, w: &Tensor) -> Tensor {
    cache.remove(key).unwrap_or_else(|| {
        let n = w.size()[1];
        let mut r = crate::rng::rng(n as u64, crate::rng::stream::PROBE);
        crate::rng::normal(&[n], 1.0, &mut r, w.device())
    })
}

/// The RMS -> RMS operator norm `sqrt(fan_in / fan_out) ||a W||_2` of a site's weight
/// ([`op_norm_2`], warm starts under `key`).
pub(super) fn op_norm_rms(op: LinearOp, w: &Tensor, spectral: Spectral, cache: &mut HashMap<String, Tensor>, key: &str) -> f64 {
    let (fan_in, fan_out) = fans(op, w);
    (fan_in / fan_out).sqrt() * op_norm_2(op, w, spectral, cache, key)
}

/// `(fan_in, fan_out)` of the operator a site applies.
pub(super) fn fans(op: LinearOp, w: &Tensor) -> (f64, f64) {
    match op {
        LinearOp::Dense { .. } => (w.size()[1] as f64, w.size()[0] as f64),
        LinearOp::Diagonal => (w.size()[0] as f64, w.size()[0] as f64),
        LinearOp::Bias => (1.0, w.size()[0] as f64),
    }
}

/// RMS norm of the effective weight `a W` of a site.
pub(super) fn eff_weight_rms(op: LinearOp, w: &Tensor) -> f64 {
    match op {
        LinearOp::Dense { multiplier } => multiplier.abs() * weight_rms(w),
        _ => weight_rms(w),
    }
}

pub(super) fn ratio(num: f64, den: f64) -> f64 {
    if den > 0.0 {
        num / den
    } else {
        f64::NAN
    }
}

/// If every row of `x` (`[.., V]`) is a one-hot vector, the index of its 1 (`[..]`, int64).
/// Lets a dense site on one-hot inputs (the GPT's embedding) apply a weight by a lookup
/// instead of a `[rows, V] x [V, n]` matmul; the result is bitwise the same (a sum of one
/// product and zeros is exact).
pub(super) fn one_hot_indices(x: &Tensor) -> Option<Tensor> {
    if x.dim() < 2 || !x.is_floating_point() {
        return None;
    }
    let v = *x.size().last()?;
    if ops::all_zero_or_one(x) == Some(false) {
        return None; // (the common case, found without libtorch kernels)
    }
    let idx = x.argmax(-1, false);
    x.equal(&idx.one_hot(v).to_kind(x.kind())).then_some(idx)
}

/// `op(w, x)`; for a dense weight on one-hot rows, by a lookup (see [`one_hot_indices`]).
pub(super) fn apply_fast(op: LinearOp, w: &Tensor, x: &Tensor, one_hot: Option<&Tensor>) -> Tensor {
    match (op, one_hot) {
        (LinearOp::Dense { multiplier }, Some(idx)) => {
            let y = Tensor::embedding(&w.tr(), idx, -1, false, false);
            if multiplier == 1.0 {
                y
            } else {
                y * multiplier
            }
        }
        _ => op.apply(w, x),
    }
}

/// `f(w)`, computed once per `key` when `fixed` (a quantity of the initial weights, which
/// never change) and cached as a scalar tensor; recomputed otherwise.
pub(super) fn cached_scalar(cache: &mut HashMap<String, Tensor>, key: String, fixed: bool, f: impl FnOnce() -> f64) -> f64 {
    if !fixed {
        return f();
    }
    if let Some(v) = cache.get(&key) {
        return v.double_value(&[]);
    }
    let v = f();
    cache.insert(key, Tensor::from(v));
    v
}

/// How a site's weight changed against its reference, `dW = W_t - W_ref`.
pub enum Change<'a> {
    /// From the stored weights, `dW = w_t - w_ref`; the reference's norms are computed from
    /// `w_ref` (once, when it is the initial weights). If `norms_t` is given, it receives
    /// `(||a W_t||_RMS, ||a W_t||_op)` (for dense weights from the same fused pass, see
    /// below), which the monitor keeps as the next step's reference norms. `measured` holds
    /// the fused pass's results when it already ran (during the monitor's traced forward,
    /// for the same `x_t`, warm starts and `norms_t`); `None` runs it here if `fuse`
    /// allows. Without `fuse` the difference is formed (the general path, for metrics that
    /// [need it](Metric::needs_weight_difference)).
    Stored { w_t: &'a Tensor, w_ref: &'a Tensor, norms_t: Option<&'a std::cell::Cell<(f64, f64)>>, measured: Option<DenseChange>, fuse: bool },
    /// One fused plain-SGD step of a dense weight, `dW = -lr g^T x`, known by its factors.
    /// `norms` are `(||g^T x||_F, ||g^T x||_2)` ([`low_rank_norms`]); `ref_norms` are
    /// `(||a W_ref||_RMS, ||a W_ref||_op)` of the reference weights, measured when they were
    /// current (the weights are not copied).
    LowRank { step: &'a LowRankStep, norms: (f64, f64), ref_norms: (f64, f64) },
}

/// A site as traced on the probe batch at step `t` and at the reference (the initial model,
/// or the previous step): its operator, inputs `x: [B, fan_in]` and outputs `out: [B, fan_out]`.
pub struct Traced<'a> {
    pub op: LinearOp,
    pub x_t: &'a Tensor,
    pub x_ref: &'a Tensor,
    pub out_t: &'a Tensor,
    pub out_ref: &'a Tensor,
}

/// The metrics of one site ([`Metric::SITE`], in that order) against a reference (initial
/// or previous) weight and input, as its weight `change`d. Against the initial weights
/// (`since` [`Since::Init`]) their norms are computed once and cached under `key`, with the
/// power-iteration warm starts.
///
/// # How the two updates are computed (one matmul per dense site)
/// The effective update `(W_t - W_ref) x_t` is computed as defined (one matmul, or a lookup
/// on one-hot inputs). The propagating update then follows from the RCC identity,
/// `W_ref (x_t - x_ref) = (W_t x_t - W_ref x_ref) - (W_t - W_ref) x_t`, from the two traced
/// outputs, instead of a second matmul; it is exactly zero when `x_t == x_ref` (the input
/// layer, biases). Accuracy: the subtraction adds an absolute float32 error of order
/// `eps ||W x||` (`eps = 6e-8`), the same order as the error the definition itself carries
/// (`x_t - x_ref` is a difference of two float32 activations, each rounded to `eps ||x||`).
/// Checked against a float64 evaluation on the same float32 weights (3-layer MLP, width
/// 1024, one SGD step): at the paper's `eta = 5e-5` the hidden layer's propagating update
/// is `1e-5 ||W x||`, and its RMS is off by 1.0e-3 (relative) here vs 7e-4 by the
/// definition in float32; at `eta = 1e-3`, 7e-6 vs 1.1e-5; at `eta = 0.1`, 1e-7 both.
/// Gains and biases (elementwise, cheap) use the definition directly.
///
/// # One step from its factors ([`Change::LowRank`])
/// `dW x_t = -lr ((x_t x^T) g)` costs `2 B B_probe (fan_in + fan_out)` multiply-adds instead
/// of a weight-sized difference and matmul, and the update's norms come from `B x B` Gram
/// matrices ([`low_rank_norms`]; the spectral norm to a relative residual of `tol`). It
/// is the update the step computed, before it was rounded into the float32 weights; the
/// difference of two stored float32 weights carries an error of `eps |W_ij|` per entry,
/// which at small learning rates is a sizeable fraction of the one-step update itself.
///
pub fn site_metrics(site: Traced, change: Change, since: Since, spectral: Spectral, cache: &mut HashMap<String, Tensor>, key: &str) -> Vec<(Metric, f64)> {
    let Traced { op, x_t, x_ref, out_t, out_ref } = site;
    let ref_is_init = since == Since::Init;
    let ref_key = reference_key(key, since);
    tch::no_grad(|| {
        let same_input = x_t.size() == x_ref.size() && x_t.equal(x_ref);
        let dense = matches!(op, LinearOp::Dense { .. });
        // (effective update, fan_in, fan_out, ||a dW||_F, ||a dW||_2, ||a W_ref||_RMS,
        // ||a W_ref||_op, W_ref if stored)
        let (eff, fan_in, fan_out, fro, spec, w_ref_rms, w_ref_op, w_ref) = match change {
            Change::Stored { w_t, w_ref, norms_t, measured, fuse } => {
                let one_hot = if dense && same_input { one_hot_indices(x_t) } else { None };
                let (fan_in, fan_out) = fans(op, w_t);
                // dense weights: one fused pass over W_t and W_ref (see `dense`)
                let fused = match (op, spectral, &one_hot) {
                    (LinearOp::Dense { multiplier }, _, _) if measured.is_some() => measured.map(|c| (c, multiplier.abs())),
                    (LinearOp::Dense { multiplier }, Spectral::PowerIteration { tol, max_iter }, None) if fuse => {
                        fused_pass(cache, key, w_t, w_ref, x_t, multiplier, norms_t.is_some(), (tol, max_iter), false).map(|c| (c, multiplier.abs()))
                    }
                    _ => None,
                };
                let (eff, fro, spec) = match fused {
                    Some((c, a)) => {
                        if let (Some(cell), Some((f, s))) = (norms_t, c.current) {
                            cell.set((a * f / (fan_in * fan_out).sqrt(), (fan_in / fan_out).sqrt() * a * s));
                        }
                        (c.eff, a * c.diff.0, a * c.diff.1)
                    }
                    None => {
                        let (key_dw, key_wt) = warm_start_keys(key);
                        let dw = w_t - w_ref;
                        let eff = apply_fast(op, &dw, x_t, one_hot.as_ref());
                        let fro = eff_weight_rms(op, &dw) * (fan_in * fan_out).sqrt();
                        let spec = op_norm_2(op, &dw, spectral, cache, &key_dw);
                        if let Some(cell) = norms_t {
                            cell.set((eff_weight_rms(op, w_t), op_norm_rms(op, w_t, spectral, cache, &key_wt)));
                        }
                        (eff, fro, spec)
                    }
                };
                let w_ref_rms = cached_scalar(cache, format!("{ref_key}/rms"), ref_is_init, || eff_weight_rms(op, w_ref));
                let w_ref_op = op_norm_rms(op, w_ref, spectral, cache, &ref_key);
                (eff, fan_in, fan_out, fro, spec, w_ref_rms, w_ref_op, Some(w_ref))
            }
            Change::LowRank { step, norms: (fro, spec), ref_norms: (w_ref_rms, w_ref_op) } => {
                let a = match op {
                    LinearOp::Dense { multiplier } => multiplier,
                    _ => 1.0,
                };
                let xx = ops::linear(x_t, &step.x, None, 1.0); // [B_probe, B]
                let eff = ops::tn(&xx.tr(), &step.g, -step.lr * a); // [B_probe, fan_out]
                let (fan_in, fan_out) = (step.x.size()[1] as f64, step.g.size()[1] as f64);
                let scale = step.lr * a.abs();
                (eff, fan_in, fan_out, scale * fro, scale * spec, w_ref_rms, w_ref_op, None)
            }
        };
        let (dx_rms, prop_rms) = if same_input {
            (0.0, 0.0)
        } else {
            // dense: from the RCC identity (above), (out_t - out_ref) - eff; gains and
            // biases: as defined
            let prop = match w_ref {
                Some(w_ref) if !dense => rms(&op.apply(w_ref, &(x_t - x_ref))),
                _ => rms_of_difference(&[out_t, out_ref, &eff]),
            };
            (rms_of_difference(&[x_t, x_ref]), prop)
        };
        let to_rms_op = (fan_in / fan_out).sqrt();
        let dw_rms = fro / (fan_in * fan_out).sqrt();
        let dw_op = to_rms_op * spec;
        let x_rms = rms(x_t);
        let eff_rms = rms(&eff);
        let c = if dense { fan_in } else { 1.0 };
        vec![
            (Metric::Act, rms(out_t)),
            (Metric::ActUpdate, rms_of_difference(&[out_t, out_ref])),
            (Metric::Effective, eff_rms),
            (Metric::Propagating, prop_rms),
            (Metric::Input, x_rms),
            (Metric::InputUpdate, dx_rms),
            (Metric::WeightUpdateRms, dw_rms),
            (Metric::WeightUpdateOp, dw_op),
            (Metric::AlignRmsEff, ratio(eff_rms, c * dw_rms * x_rms)),
            (Metric::AlignOpEff, ratio(eff_rms, dw_op * x_rms)),
            (Metric::AlignRmsProp, ratio(prop_rms, c * w_ref_rms * dx_rms)),
            (Metric::AlignOpProp, ratio(prop_rms, w_ref_op * dx_rms)),
            (Metric::UpdateRank, ratio(fro, spec)),
        ]
    })
}

/// Mean cosine similarity between matching rows of `a` and `b` (`[B, n]`). On the CPU in
/// float64 ([`ops::cosine_rows`]); elsewhere products in the inputs' precision, sums in
/// float64.
pub fn cosine_rows(a: &Tensor, b: &Tensor) -> f64 {
    if let Some(c) = ops::cosine_rows(a, b) {
        return c;
    }
    let dim = &[-1i64][..];
    let num = (a * b).sum_dim_intlist(dim, false, Kind::Double); // [B]
    let sq = |t: &Tensor| t.square().sum_dim_intlist(dim, false, Kind::Double);
    let den = (sq(a) * sq(b)).sqrt();
    (num / den.clamp_min(1e-300)).mean(Kind::Double).double_value(&[])
}

/// Mean cosine similarity between different rows of `a` (`[B, n]`, `B >= 2`), without the
/// `B x B` Gram matrix: with unit rows `u_i` (zero rows stay zero),
/// `sum_{i != j} u_i . u_j = ||sum_i u_i||^2 - sum_i ||u_i||^2`. Sums in float64.
pub fn cosine_cross(a: &Tensor) -> f64 {
    let b = a.size()[0];
    if b < 2 {
        return f64::NAN;
    }
    if let Some(c) = ops::cosine_cross(a) {
        return c;
    }
    let dim = &[-1i64][..];
    let norms = a.square().sum_dim_intlist(dim, true, Kind::Double).sqrt(); // [B, 1]
    let u = a.to_kind(Kind::Double) / norms.clamp_min(1e-300); // [B, n]
    let total = u.sum_dim_intlist(&[0i64][..], false, Kind::Double).square().sum(Kind::Double).double_value(&[]);
    let diag = u.square().sum(Kind::Double).double_value(&[]);
    (total - diag) / (b * (b - 1)) as f64
}

/// Fraction of exactly-zero entries.
pub fn sparsity(a: &Tensor) -> f64 {
    if let Some(s) = ops::sparsity(a) {
        return s;
    }
    a.eq(0.0).sum(Kind::Int64).int64_value(&[]) as f64 / a.numel().max(1) as f64
}
