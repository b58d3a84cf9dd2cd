//! Krylov estimators of a symmetric operator known only by its products `A v`: top
//! eigenvalues by Lanczos with full reorthogonalisation, the trace by Hutchinson, and the
//! spectral density by stochastic Lanczos quadrature (SLQ). Written against [`Operator`], so
//! the same code runs on the Hessian, its Gauss-Newton part, one layer's block, a
//! preconditioned Hessian, or an explicit matrix (the tests' planted spectra).
//!
//! # Lanczos
//! From a unit start vector `q_0`, the iteration builds an orthonormal basis `Q_m` of the
//! Krylov space `span(q_0, A q_0, .., A^{m-1} q_0)` and the tridiagonal `T_m = Q_m^T A Q_m`
//! (diagonal `alpha`, off-diagonal `beta`). Every new vector is orthogonalised against the
//! whole basis, twice (classical Gram-Schmidt, "twice is enough": two matrix-vector products
//! with the basis per sweep), so the basis stays orthonormal to working precision and no
//! spurious copies of converged eigenvalues appear; the basis is one matrix of at most
//! `2 (m + 1)` rows of the operator's dimension (its capacity doubles). The eigenpairs `(theta_i, s_i)` of
//! `T_m` (ndarray-linalg's symmetric eigensolver) give the Ritz pairs `(theta_i, Q_m s_i)`,
//! whose residual is exactly `||A y_i - theta_i y_i|| = beta_m |s_{m,i}|` in exact arithmetic:
//! the iteration stops when that bound, relative to `|theta_i|`, is at most `tol` for each of
//! the top `k` Ritz values, after `max_iter` iterations, or when the Krylov space is exhausted
//! (`beta_m` at rounding level: `T_m`'s eigenvalues are then eigenvalues of `A`). With
//! `explicit_residual`, each returned pair's residual `||A y - theta y|| / |theta|` is then
//! computed with one more product instead of taken from the bound. Eigenvalues are the largest
//! *algebraic* ones (the sharpness is `lambda_max`, not the largest magnitude). From one start
//! vector Lanczos sees each distinct eigenvalue once: multiplicities are not resolved.
//!
//! # Hutchinson
//! `tr A = E[z^T A z]` for Rademacher `z` (independent `+-1` entries); the estimate is the mean
//! over `samples` draws with its standard error `sd / sqrt(samples)` (Hutchinson 1989; the
//! variance is `2 sum_{i != j} A_ij^2` per draw).
//!
//! # Stochastic Lanczos quadrature
//! For a unit start vector `q`, `q^T f(A) q = sum_j tau_j f(theta_j)` exactly for polynomials
//! `f` of degree below `2m` (Gauss quadrature), with nodes `theta_j` the eigenvalues of `T_m`
//! and weights `tau_j` the squared first components of its eigenvectors. Averaged over
//! Rademacher start vectors, `sum_j tau_j delta(x - theta_j)` estimates the spectral density
//! `(1/N) sum_i delta(x - lambda_i)` (Ubaru, Chen and Saad 2017; Ghorbani, Krishnan and Xiao
//! 2019, PyHessian's `density`).
//!
//! Everything random is drawn from widthlab's seeded streams ([`crate::rng`]); vectors live
//! on the operator's device in its kind, the scalars of the recursion are accumulated in f64.
use ndarray::Array2;
use ndarray_linalg::{Eigh, UPLO};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::rng::{self, stream};
use crate::{Error, Result};

/// A symmetric linear operator on vectors of length [`Operator::dim`].
pub trait Operator {
    /// The dimension `N` of the space it acts on.
    fn dim(&self) -> i64;
    /// The kind (f32 or f64) of its vectors.
    fn kind(&self) -> Kind;
    /// The device of its vectors.
    fn device(&self) -> Device;
    /// `A v`.
    ///
    /// # Shapes
    /// `v: [N]` -> `[N]`.
    fn apply(&self, v: &Tensor) -> Result<Tensor>;
}

/// An explicit symmetric matrix as an [`Operator`] (tests, small problems).
#[derive(Debug)]
pub struct Matrix(pub Tensor);

impl Operator for Matrix {
    fn dim(&self) -> i64 {
        self.0.size()[0]
    }
    fn kind(&self) -> Kind {
        self.0.kind()
    }
    fn device(&self) -> Device {
        self.0.device()
    }
    fn apply(&self, v: &Tensor) -> Result<Tensor> {
        Ok(self.0.mv(v))
    }
}

/// Settings of a Lanczos run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LanczosConfig {
    /// Number of top eigenvalues wanted.
    pub k: usize,
    /// Iterations at most (each one product and `m + 1` stored vectors).
    pub max_iter: usize,
    /// Stop when every top-`k` Ritz value has `beta |s_last| <= tol |theta|` (0: run all
    /// `max_iter` iterations).
    pub tol: f64,
    /// Compute each returned pair's residual with one more product (else the Lanczos bound).
    pub explicit_residual: bool,
}

impl Default for LanczosConfig {
    fn default() -> Self {
        LanczosConfig { k: 1, max_iter: 50, tol: 1e-3, explicit_residual: true }
    }
}

impl LanczosConfig {
    /// Checks ranges.
    pub fn validate(&self) -> Result<()> {
        if self.k == 0 || self.max_iter == 0 {
            return Err(Error::config(format!("lanczos: k and max_iter must be >= 1, got {} and {}", self.k, self.max_iter)));
        }
        if !(self.tol >= 0.0 && self.tol.is_finite()) {
            return Err(Error::config(format!("lanczos: tol must be finite and >= 0, got {}", self.tol)));
        }
        Ok(())
    }
}

/// A Ritz pair and how well it is converged.
#[derive(Debug)]
pub struct Eigenpair {
    pub value: f64,
    /// `||A y - theta y|| / |theta|` (explicit, or the Lanczos bound; see [`LanczosConfig`]).
    pub residual: f64,
    /// The Ritz vector `y` (unit norm), `[N]`.
    pub vector: Tensor,
}

/// What [`lanczos`] found.
#[derive(Debug)]
pub struct LanczosResult {
    /// The top eigenpairs, largest first (fewer than `k` if the Krylov space was smaller).
    pub pairs: Vec<Eigenpair>,
    /// Iterations (products) taken, not counting explicit residuals.
    pub iterations: usize,
    /// Whether every returned pair met the tolerance (or the space was exhausted).
    pub converged: bool,
}

impl LanczosResult {
    /// The largest eigenvalue (NaN if none was found).
    pub fn top(&self) -> f64 {
        self.pairs.first().map_or(f64::NAN, |p| p.value)
    }
    /// The residual of the largest eigenvalue (NaN if none).
    pub fn top_residual(&self) -> f64 {
        self.pairs.first().map_or(f64::NAN, |p| p.residual)
    }
}

/// A Rademacher vector (`+-1` entries) of the operator's length, kind and device.
pub fn rademacher(op: &dyn Operator, rng: &mut impl rand::Rng) -> Tensor {
    rng::rademacher(op.dim(), rng, op.device()).to_kind(op.kind())
}

fn dot(a: &Tensor, b: &Tensor) -> f64 {
    a.dot(b).double_value(&[])
}

/// The orthonormal Lanczos vectors as the rows of one matrix `[rows, N]` (capacity doubling
/// as it grows), so that orthogonalising against all of them is two matrix-vector products,
/// each one pass over the basis, instead of a dot product and an update per vector.
struct Basis {
    q: Tensor,
    rows: i64,
}

impl Basis {
    fn new(first: Tensor, capacity: i64) -> Self {
        let q = Tensor::empty([capacity.max(1), first.size()[0]], (first.kind(), first.device()));
        q.get(0).copy_(&first);
        Basis { q, rows: 1 }
    }

    /// The vectors so far, `[rows, N]`.
    fn matrix(&self) -> Tensor {
        self.q.narrow(0, 0, self.rows)
    }

    fn row(&self, j: i64) -> Tensor {
        self.q.get(j)
    }

    fn push(&mut self, v: &Tensor) {
        let cap = self.q.size()[0];
        if self.rows == cap {
            let grown = Tensor::empty([2 * cap, self.q.size()[1]], (self.q.kind(), self.q.device()));
            grown.narrow(0, 0, cap).copy_(&self.q);
            self.q = grown;
        }
        self.q.get(self.rows).copy_(v);
        self.rows += 1;
    }

    /// `w - Q^T (Q w)`, twice (classical Gram-Schmidt with reorthogonalisation).
    fn orthogonalise(&self, w: Tensor) -> Tensor {
        let q = self.matrix();
        let mut w = w;
        for _ in 0..2 {
            let c = q.mv(&w); // [rows]
            let _ = w.addmv_(&q.tr(), &c.neg());
        }
        w
    }
}

/// The Lanczos recursion from `start` for at most `max_iter` steps; `stop(theta, s, beta)` is
/// asked after each step whether to end.
struct Krylov {
    basis: Basis,
    /// `beta_m` after the last step (the residual scale).
    beta_last: f64,
    theta: Vec<f64>,
    /// Eigenvectors of `T_m` as columns, `[m, m]`.
    s: Array2<f64>,
    /// Whether the Krylov space was exhausted.
    exhausted: bool,
}

/// Eigenpairs of the symmetric tridiagonal matrix with diagonal `a` and off-diagonal `b`.
fn tridiagonal_eigh(a: &[f64], b: &[f64]) -> Result<(Vec<f64>, Array2<f64>)> {
    let m = a.len();
    let mut t = Array2::<f64>::zeros((m, m));
    for i in 0..m {
        t[[i, i]] = a[i];
        if i + 1 < m {
            t[[i + 1, i]] = b[i];
            t[[i, i + 1]] = b[i];
        }
    }
    let (w, v) = t.eigh(UPLO::Lower).map_err(|e| Error::config(format!("lanczos: tridiagonal eigenproblem failed: {e}")))?;
    Ok((w.to_vec(), v))
}

fn krylov(op: &dyn Operator, start: &Tensor, max_iter: usize, stop: &mut dyn FnMut(&[f64], &Array2<f64>, f64) -> bool) -> Result<Krylov> {
    let n = op.dim();
    let steps = max_iter.min(n.max(1) as usize);
    let start = start.to_kind(op.kind()).to_device(op.device());
    let norm = start.norm().double_value(&[]);
    if !(norm > 0.0 && norm.is_finite()) {
        return Err(Error::config("lanczos: the start vector is zero or not finite"));
    }
    let eps = match op.kind() {
        Kind::Double => f64::EPSILON,
        _ => f32::EPSILON as f64,
    };
    let mut basis = Basis::new(&start / norm, (steps as i64 + 1).min(16));
    let (mut alpha, mut beta): (Vec<f64>, Vec<f64>) = (vec![], vec![]);
    let mut scale = 0.0f64;
    loop {
        let j = alpha.len();
        let q = basis.row(j as i64);
        let w = op.apply(&q)?;
        let a = dot(&w, &q);
        // ||A q_j|| bounds the rounding left in w after orthogonalisation
        scale = scale.max(w.norm().double_value(&[]));
        if !a.is_finite() {
            return Err(Error::config("lanczos: the operator returned a non-finite product (diverged model?)"));
        }
        alpha.push(a);
        // full reorthogonalisation against the whole basis (its first sweep subtracts the
        // three-term recurrence's alpha q_j and beta q_{j-1})
        let w = basis.orthogonalise(w);
        let b = w.norm().double_value(&[]);
        let exhausted = b <= 8.0 * eps * scale * (j as f64 + 1.0).sqrt();
        let (theta, s) = tridiagonal_eigh(&alpha, &beta)?;
        if exhausted || alpha.len() >= steps || stop(&theta, &s, b) {
            return Ok(Krylov { basis, beta_last: if exhausted { 0.0 } else { b }, theta, s, exhausted });
        }
        beta.push(b);
        basis.push(&(w / b));
    }
}

/// The top `cfg.k` eigenvalues of `op` (largest algebraic first) by Lanczos with full
/// reorthogonalisation from a Rademacher start vector drawn from `(seed, CURVATURE)`.
pub fn lanczos(op: &dyn Operator, cfg: &LanczosConfig, seed: u64) -> Result<LanczosResult> {
    cfg.validate()?;
    let start = rademacher(op, &mut rng::rng(seed, stream::CURVATURE));
    lanczos_from(op, &start, cfg)
}

/// [`lanczos`] from a given start vector `[N]`.
pub fn lanczos_from(op: &dyn Operator, start: &Tensor, cfg: &LanczosConfig) -> Result<LanczosResult> {
    cfg.validate()?;
    let k = cfg.k;
    let converged = |theta: &[f64], s: &Array2<f64>, b: f64| {
        let m = theta.len();
        m >= k && (0..k).all(|i| b * s[[m - 1, m - 1 - i]].abs() <= cfg.tol * theta[m - 1 - i].abs())
    };
    let mut stop = |theta: &[f64], s: &Array2<f64>, b: f64| cfg.tol > 0.0 && converged(theta, s, b);
    let kr = krylov(op, start, cfg.max_iter, &mut stop)?;
    let m = kr.theta.len();
    let mut pairs = vec![];
    for i in 0..k.min(m) {
        let col = m - 1 - i;
        let theta = kr.theta[col];
        // y = Q^T s (unit norm, as the basis is orthonormal)
        let coef: Vec<f64> = (0..m).map(|j| kr.s[[j, col]]).collect();
        let q = kr.basis.matrix().narrow(0, 0, m as i64);
        let y = q.tr().mv(&Tensor::from_slice(&coef).to_kind(q.kind()).to_device(q.device()));
        let y = &y / y.norm().double_value(&[]).max(f64::MIN_POSITIVE);
        let residual = if cfg.explicit_residual {
            let r = op.apply(&y)? - &y * theta;
            r.norm().double_value(&[]) / theta.abs()
        } else {
            kr.beta_last * kr.s[[m - 1, col]].abs() / theta.abs()
        };
        pairs.push(Eigenpair { value: theta, residual, vector: y });
    }
    let converged = kr.exhausted || converged(&kr.theta, &kr.s, kr.beta_last);
    Ok(LanczosResult { pairs, iterations: m, converged })
}

/// A Hutchinson trace estimate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TraceEstimate {
    /// Mean of `z^T A z` over the draws.
    pub value: f64,
    /// Standard error of the mean (NaN for one draw).
    pub stderr: f64,
    /// Each draw's `z^T A z`.
    pub samples: Vec<f64>,
}

/// `tr A` by Hutchinson's estimator with `samples` Rademacher vectors from `(seed, CURVATURE)`.
pub fn hutchinson(op: &dyn Operator, samples: usize, seed: u64) -> Result<TraceEstimate> {
    if samples == 0 {
        return Err(Error::config("hutchinson: samples must be >= 1"));
    }
    // (a stream of its own: the draws must not repeat the Lanczos start vector of this seed)
    let mut r = rng::rng(seed, stream::CURVATURE + 1);
    let mut values = Vec::with_capacity(samples);
    for _ in 0..samples {
        let z = rademacher(op, &mut r);
        values.push(dot(&op.apply(&z)?, &z));
    }
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let stderr = if values.len() > 1 { (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0) / n).sqrt() } else { f64::NAN };
    Ok(TraceEstimate { value: mean, stderr, samples: values })
}

/// A spectral density estimate by stochastic Lanczos quadrature: per start vector, the
/// quadrature nodes and weights (each run's weights sum to 1).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Density {
    pub nodes: Vec<Vec<f64>>,
    pub weights: Vec<Vec<f64>>,
}

impl Density {
    /// The density smoothed by a Gaussian of width `sigma`, on `grid`: `(1/runs) sum_runs
    /// sum_j tau_j N(x; theta_j, sigma^2)`. Integrates to 1 over the real line.
    pub fn smoothed(&self, grid: &[f64], sigma: f64) -> Vec<f64> {
        let runs = self.nodes.len().max(1) as f64;
        let c = 1.0 / (sigma * (2.0 * std::f64::consts::PI).sqrt());
        grid.iter()
            .map(|&x| {
                let mut s = 0.0;
                for (nodes, weights) in self.nodes.iter().zip(&self.weights) {
                    for (t, w) in nodes.iter().zip(weights) {
                        s += w * c * (-0.5 * ((x - t) / sigma).powi(2)).exp();
                    }
                }
                s / runs
            })
            .collect()
    }

    /// The `p`-th moment `(1/runs) sum_runs sum_j tau_j theta_j^p` (an estimate of
    /// `tr(A^p) / N`).
    pub fn moment(&self, p: i32) -> f64 {
        let runs = self.nodes.len().max(1) as f64;
        self.nodes.iter().zip(&self.weights).map(|(n, w)| n.iter().zip(w).map(|(t, w)| w * t.powi(p)).sum::<f64>()).sum::<f64>() / runs
    }
}

/// The spectral density of `op` by SLQ: `runs` Rademacher start vectors from
/// `(seed, CURVATURE + 2)`, `steps` Lanczos steps each.
pub fn slq(op: &dyn Operator, runs: usize, steps: usize, seed: u64) -> Result<Density> {
    if runs == 0 || steps == 0 {
        return Err(Error::config("slq: runs and steps must be >= 1"));
    }
    let mut r = rng::rng(seed, stream::CURVATURE + 2);
    let (mut nodes, mut weights) = (vec![], vec![]);
    for _ in 0..runs {
        let z = rademacher(op, &mut r);
        let kr = krylov(op, &z, steps, &mut |_, _, _| false)?;
        let m = kr.theta.len();
        nodes.push(kr.theta.clone());
        weights.push((0..m).map(|j| kr.s[[0, j]].powi(2)).collect());
    }
    Ok(Density { nodes, weights })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `Q diag(spectrum) Q^T` with a seeded random orthogonal `Q` (f64).
    fn planted(spectrum: &[f64], seed: u64) -> Tensor {
        let n = spectrum.len() as i64;
        let g = rng::normal(&[n, n], 1.0, &mut rng::rng(seed, stream::MISC), Device::Cpu).to_kind(Kind::Double);
        let (q, _) = Tensor::linalg_qr(&g, "reduced");
        let d = Tensor::from_slice(spectrum);
        (&q * d.unsqueeze(0)).matmul(&q.tr())
    }

    fn spectrum(n: usize) -> Vec<f64> {
        // a gapped top, a bulk and negative eigenvalues (as in a Hessian away from a minimum)
        let mut s: Vec<f64> = (0..n).map(|i| 0.5 * ((i as f64) * 0.37).sin() + 0.01 * i as f64 - 0.3).collect();
        s[7] = 10.0;
        s[13] = 6.5;
        s[21] = 4.0;
        s
    }

    #[test]
    fn lanczos_finds_a_planted_spectrum_to_rounding() {
        let spec = spectrum(60);
        let a = Matrix(planted(&spec, 1));
        let cfg = LanczosConfig { k: 3, max_iter: 60, tol: 1e-12, explicit_residual: true };
        let r = lanczos(&a, &cfg, 0).unwrap();
        let want = [10.0, 6.5, 4.0];
        assert_eq!(r.pairs.len(), 3);
        for (p, w) in r.pairs.iter().zip(want) {
            assert!((p.value - w).abs() <= 1e-10 * w, "{} vs {w}", p.value);
            assert!(p.residual < 1e-9, "residual {}", p.residual);
            // the Ritz vector is an eigenvector: A y = lambda y
            let ay = a.0.mv(&p.vector);
            let err = (&ay - &p.vector * w).norm().double_value(&[]);
            assert!(err < 1e-8 * w, "{err}");
        }
        assert!(r.converged && r.iterations < 60, "{} iterations", r.iterations);
        // the same seed gives the same numbers
        let again = lanczos(&a, &cfg, 0).unwrap();
        assert_eq!(again.top().to_bits(), r.top().to_bits());
    }

    #[test]
    fn the_residual_bound_is_the_explicit_residual_and_tolerances_stop_early() {
        let spec = spectrum(80);
        let a = Matrix(planted(&spec, 2));
        let loose = LanczosConfig { k: 1, max_iter: 80, tol: 1e-3, explicit_residual: false };
        let r = lanczos(&a, &loose, 3).unwrap();
        let explicit = (a.0.mv(&r.pairs[0].vector) - &r.pairs[0].vector * r.top()).norm().double_value(&[]) / r.top();
        assert!((r.top_residual() - explicit).abs() <= 1e-6 * explicit.max(1e-12) + 1e-12, "{} vs {explicit}", r.top_residual());
        assert!(r.converged && r.top_residual() <= 1e-3);
        let tight = lanczos(&a, &LanczosConfig { tol: 1e-11, ..loose.clone() }, 3).unwrap();
        assert!(tight.iterations > r.iterations);
        // the accepted value is within the residual bound of the eigenvalue (symmetric A)
        assert!((r.top() - 10.0).abs() <= r.top_residual() * r.top() + 1e-12);
        // tol = 0 runs every iteration (the benchmark's fixed 20)
        let fixed = lanczos(&a, &LanczosConfig { tol: 0.0, max_iter: 20, ..loose }, 3).unwrap();
        assert_eq!(fixed.iterations, 20);
    }

    #[test]
    fn an_exhausted_krylov_space_gives_exact_eigenvalues() {
        // rank one: A = c c^T, the Krylov space is span(q_0, c), two iterations exhaust it,
        // lambda = |c|^2
        let c = Tensor::from_slice(&[1.0f64, -2.0, 0.5, 3.0]);
        let a = Matrix(c.outer(&c));
        let r = lanczos(&a, &LanczosConfig { k: 1, max_iter: 10, tol: 1e-12, explicit_residual: true }, 0).unwrap();
        assert_eq!(r.iterations, 2);
        assert!((r.top() - 14.25).abs() < 1e-12 && r.converged && r.top_residual() < 1e-14);
        // a dimension below max_iter caps the iterations
        let small = Matrix(planted(&[3.0, 1.0, -1.0], 0));
        let r = lanczos(&small, &LanczosConfig { k: 3, max_iter: 50, tol: 1e-12, explicit_residual: false }, 1).unwrap();
        assert!(r.iterations <= 3);
        let got: Vec<f64> = r.pairs.iter().map(|p| p.value).collect();
        for (g, w) in got.iter().zip([3.0, 1.0, -1.0]) {
            assert!((g - w).abs() < 1e-12, "{got:?}");
        }
    }

    #[test]
    fn hutchinson_is_within_its_stated_error() {
        let spec = spectrum(50);
        let a = Matrix(planted(&spec, 4));
        let trace: f64 = spec.iter().sum();
        // z-scores over independent seeds: |z| < 4 for each, and their spread is about 1
        let mut zs = vec![];
        for seed in 0..12u64 {
            let t = hutchinson(&a, 30, seed).unwrap();
            assert_eq!(t.samples.len(), 30);
            zs.push((t.value - trace) / t.stderr);
        }
        assert!(zs.iter().all(|z| z.abs() < 4.0), "{zs:?}");
        let rms = (zs.iter().map(|z| z * z).sum::<f64>() / zs.len() as f64).sqrt();
        assert!(rms > 0.4 && rms < 1.8, "z-scores {zs:?}");
        // a diagonal matrix has zero variance: z^T D z = tr D exactly
        let d = Matrix(Tensor::from_slice(&[1.0f64, 2.0, -0.5]).diag(0));
        let t = hutchinson(&d, 5, 0).unwrap();
        assert!((t.value - 2.5).abs() < 1e-14 && t.stderr < 1e-14);
        assert!(hutchinson(&d, 0, 0).is_err());
    }

    #[test]
    fn slq_is_gauss_quadrature_of_the_start_vectors() {
        let spec = spectrum(40);
        let a = Matrix(planted(&spec, 5));
        let steps = 6;
        let d = slq(&a, 3, steps, 9).unwrap();
        // reproduce the start vectors and check q^T A^p q = sum tau theta^p for p < 2m
        let mut r = rng::rng(9, stream::CURVATURE + 2);
        for run in 0..3 {
            let z = rademacher(&a, &mut r);
            let q = &z / z.norm().double_value(&[]);
            let w: f64 = d.weights[run].iter().sum();
            assert!((w - 1.0).abs() < 1e-12);
            let mut apq = q.shallow_clone();
            for p in 1..(2 * steps as i32) {
                apq = a.0.mv(&apq);
                let exact = dot(&q, &apq);
                let quad: f64 = d.nodes[run].iter().zip(&d.weights[run]).map(|(t, w)| w * t.powi(p)).sum();
                assert!((exact - quad).abs() <= 1e-9 * exact.abs().max(10f64.powi(p)), "p {p}: {exact} vs {quad}");
            }
        }
        // averaged over many runs the first moment estimates tr(A)/N; the density integrates to 1
        let many = slq(&a, 60, 4, 1).unwrap();
        let mean: f64 = spec.iter().sum::<f64>() / 40.0;
        assert!((many.moment(1) - mean).abs() < 0.15, "{} vs {mean}", many.moment(1));
        let grid: Vec<f64> = (0..2000).map(|i| -3.0 + 0.01 * i as f64).collect();
        let mass: f64 = many.smoothed(&grid, 0.1).iter().sum::<f64>() * 0.01;
        assert!((mass - 1.0).abs() < 1e-3, "{mass}");
    }

    #[test]
    fn bad_settings_are_errors() {
        let a = Matrix(Tensor::eye(3, (Kind::Double, Device::Cpu)));
        assert!(lanczos(&a, &LanczosConfig { k: 0, ..LanczosConfig::default() }, 0).is_err());
        assert!(lanczos(&a, &LanczosConfig { tol: f64::NAN, ..LanczosConfig::default() }, 0).is_err());
        assert!(lanczos_from(&a, &Tensor::zeros([3], (Kind::Double, Device::Cpu)), &LanczosConfig::default()).is_err());
        let nan = Matrix(Tensor::full([2, 2], f64::NAN, (Kind::Double, Device::Cpu)));
        let e = lanczos(&nan, &LanczosConfig::default(), 0).unwrap_err().to_string();
        assert!(e.contains("non-finite"), "{e}");
        assert!(slq(&a, 0, 3, 0).is_err());
    }
}
