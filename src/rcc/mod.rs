//! Refined coordinate checks (RCC): the one home of every per-layer metric of the paper's
//! central diagnostic (section 2, appendix C.1, appendix E).
//!
//! For every weight `W` acting linearly on its input `x` (a [`Site`](crate::model::Site) of a traced forward
//! pass: dense layers, norm gains, biases, and later attention projections),
//!
//! ```text
//! W_t x_t - W_0 x_0 = (Delta W_t) x_t  +  W_0 (Delta x_t)
//!                     effective update    propagating update
//! ```
//!
//! measured on a fixed, seeded probe batch; `x_0` is what the *initial* model computes for
//! the same probe batch. Each metric is recorded twice: against the initial model (`Delta`,
//! metric names as below) and against the previous step (`delta`, names prefixed `delta_`,
//! with `W_{t-1}` and `x_{t-1}` in place of `W_0` and `x_0`).
//!
//! # Norm conventions
//! - Activations (batches `[B, d]`): `||v||_RMS = sqrt(mean of v^2 over batch and coordinates)`.
//! - Weights `[fan_out, fan_in]`: `||W||_RMS = ||W||_F / sqrt(fan_in fan_out)`; operator norm
//!   RMS -> RMS: `||W||_op = sqrt(fan_in / fan_out) ||W||_2`. Norm gains act as diagonal
//!   matrices (`||diag g||_op = max |g_i|`), biases as `[n, 1]` matrices on the input 1.
//!   Weight norms are of the *effective* weight `a_l W` (including the forward multiplier).
//! - `align_rms_*`: `||A x||_RMS / (c ||A||_RMS ||x||_RMS)` with `c = fan_in` for dense
//!   weights and `c = 1` for gains and biases (paper, appendix D.4 on Figure 2), so it is
//!   `Theta(1)` under LLN-like (fully aligned) accumulation.
//! - `align_op_*`: `||A x||_RMS / (||A||_op ||x||_RMS)` (the paper's alpha-op).
//! - Spectral norms: power iteration, warm-started from the previous step's vector, until
//!   two successive estimates agree to the relative tolerance `tol` (see
//!   [`power_iteration`]); or exact via libtorch's matrix 2-norm ([`Spectral::Exact`], costly
//!   at large width). One-step updates known by their low-rank factors (below) get their
//!   spectral norm from a `B x B` problem instead, to a relative residual of `tol` (`1e-9`
//!   under [`Spectral::Exact`]).
//!
//! # One-step updates of plain SGD from their factors
//! Under a monitor the [`crate::train::Trainer`] keeps plain-SGD steps fused into the MLP's
//! backward pass ([`StepHook::needs_gradients`] is false), which leaves each dense weight's
//! step as `delta W = -lr g^T x` with `g: [B, fan_out]`, `x: [B, fan_in]` of the training
//! batch ([`LowRankStep`]). The `delta_` metrics of those weights are then computed from the
//! factors ([`Change::LowRank`]): no copy of the weights is kept between steps (only their
//! norms), no weight-sized difference is formed, `delta W x_t` costs two thin products, and
//! the update's Frobenius and spectral norms come from `B x B` Gram matrices
//! ([`low_rank_norms`]). This is the update as the step computed it; the difference of the
//! stored float32 weights would carry `eps |W_ij|` of rounding per entry, a sizeable fraction
//! of a small step. The `grad` metric of such a weight is `||g^T x||_RMS` from the same Grams.
//! Every other case (Adam, momentum, SAM, normalisation layers, the GPT) measures from
//! weight copies, as defined.
//!
//! # Metrics (names used in JSON/CSV)
//! Per site: `act` `||W_t x_t||`, `act_update` `||W_t x_t - W_0 x_0||`, `effective`,
//! `propagating`, `input` `||x_t||`, `input_update` `||x_t - x_0||`, `weight_update_rms`,
//! `weight_update_op`, `align_rms_eff` / `align_op_eff` for `(Delta W_t, x_t)`,
//! `align_rms_prop` / `align_op_prop` for `(W_0, Delta x_t)`, `update_rank`
//! `||Delta W||_F / ||Delta W||_2`, `grad` (`||grad_W L||_RMS` of the step's training batch,
//! as used by the optimizer).
//! Per hidden activation `x^l` (layer name `act.{l}`): `sparsity` (fraction of exact zeros),
//! `cos_init` (mean cosine of `x^l_t(xi)` and `x^l_0(xi)` over the probe inputs), `cos_cross`
//! (mean cosine between different inputs at time t). Model-level (layer `model`): `logits`
//! `||f_t||_RMS`, `chi` `||dl/df||_RMS` of the per-example loss, `loss` on the probe batch.
//!
//! # Cost
//! A measured step runs one traced forward of the probe batch and, per dense site, one
//! product `(W_t - W_0) x_t`; the propagating update comes from the RCC identity with the
//! cached reference outputs `W_ref x_ref` (see [`site_metrics`] for the accuracy), inputs
//! that did not change (the input layer, biases) cost nothing, one-hot inputs (the GPT's
//! embedding) are lookups, the initial weights' norms are computed once, and the previous
//! step's trace is kept as the next `delta` reference (no second traced forward). The
//! one-step metrics cost another product per dense site, or, for fused plain-SGD steps, two
//! thin products and two `B x B` Grams (above).
//!
//! Under power iteration the dense sites' `Delta` passes run inside the traced forward
//! ([`crate::model::DenseProducts`]): one pass per weight ([`ops::dense_change`]) reads `W_t` and
//! `W_0` once, forms the rows of the difference block by block in cache and uses them for the
//! site's output `a W_t x_t` (which the forward continues with), the effective update's
//! product, `||W_t - W_0||_F`, one warm-started power-iteration step on the difference and,
//! when the next step's one-step metrics need them, the norms of `W_t`; no weight-sized
//! difference is stored, the reference rows are prefetched ahead of the pass, and where the
//! input has not changed (the input layer) the output is `W_0 x_0` plus the effective update,
//! with no product by `W_t`. Probes of up to 64 rows multiply by widthlab's thin kernel there
//! (no packing of the weights). The one-step updates' Grams are computed on and below the
//! diagonal only ([`ops::gram`]), split between the threads; then the second thread solves
//! their `B x B` eigenproblems (Lanczos) and computes the activations' sparsity and cosines
//! while the first measures the `Delta` sites and chi ([`crate::kernels::threads::join`]).
//! Activation-sized norms, cosines and sparsity are single host passes
//! ([`ops::rms_of_difference`] and its neighbours), not chains of libtorch kernels. These
//! passes live in [`crate::kernels`]; where they do not apply (other devices or kinds) or the
//! kernels are off (`--no-default-features`, `WIDTHLAB_KERNELS=libtorch`) every quantity is
//! computed term by term through libtorch, as defined here: the same results to rounding.
//!
//! With a probe as large as the training batch, the two products per layer are about two
//! forward passes: as many as the anchor (torch-module-monitor's RCC on the training batch)
//! pays for its reference forward and `W_0 x_t` (one fewer at the input layer, whose probe
//! input does not change), besides the norms and one-step metrics it does not measure. So the
//! anchor's cost is about what the products alone cost the monitor at that probe; only a
//! smaller probe can go lower. `cargo bench --bench monitor_overhead` measures both, side by
//! side (figures in `docs/benchmarks.md`).
use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::kernels::ops;
use crate::loss::Loss;
use crate::model::{DenseProducts, LinearOp, Model};
use crate::optim::LowRankStep;
use crate::train::{StepHook, StepOutput};
use crate::Result;

pub use crate::kernels::ops::DenseChange;
pub mod gpt;
pub mod metric;
pub use metric::{CurvatureEstimate, Metric, MetricId, Since, UnknownMetric};
pub mod regime;
pub mod runner;
pub use runner::{CoordCheck, CoordCheckResult, Profile};

/// Which steps are measured (step 0 = initialisation is always measured).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "type")]
pub enum StepSchedule {
    /// Every step.
    Every,
    /// Every step up to `dense_until`, then every `every` steps.
    EarlyThenSparse { dense_until: usize, every: usize },
    /// Exactly these steps.
    List { steps: Vec<usize> },
}

impl StepSchedule {
    /// Whether step `t` is measured.
    pub fn contains(&self, t: usize) -> bool {
        match self {
            StepSchedule::Every => true,
            StepSchedule::EarlyThenSparse { dense_until, every } => {
                t <= *dense_until || (*every > 0 && t % every == 0)
            }
            StepSchedule::List { steps } => t == 0 || steps.contains(&t),
        }
    }
}

/// How spectral norms are computed.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "type")]
pub enum Spectral {
    /// Warm-started power iteration to relative tolerance `tol` (at most `max_iter` steps).
    PowerIteration { tol: f64, max_iter: usize },
    /// libtorch's exact matrix 2-norm (an SVD; slow at large width).
    Exact,
}

/// Monitor settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MonitorConfig {
    pub schedule: StepSchedule,
    pub spectral: Spectral,
    /// Also record `delta` (one-step) metrics.
    pub one_step: bool,
    /// Also record per-layer gradient norms (of the training batch of the step), and `chi`
    /// and the loss on the probe batch.
    pub gradients: bool,
    /// Write the probe batch and the initial weights (`init.safetensors`) and the weights
    /// at every measured step (`step_{t}.safetensors`) here, so any metric can be
    /// recomputed elsewhere (e.g. `safetensors.torch.load_file` in Python).
    pub dump_dir: Option<std::path::PathBuf>,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        MonitorConfig {
            schedule: StepSchedule::EarlyThenSparse { dense_until: 10, every: 10 },
            spectral: Spectral::PowerIteration { tol: 1e-3, max_iter: 50 },
            one_step: true,
            gradients: true,
            dump_dir: None,
        }
    }
}

/// One measurement: a tidy row.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub step: usize,
    /// Site (parameter) name, `act.{l}` or `model`.
    pub layer: String,
    pub metric: MetricId,
    pub value: f64,
}

/// What a traced forward pass on the probe batch leaves behind (detached).
struct ProbeState {
    /// Per site: (name, param index, op, input, output).
    sites: Vec<(String, usize, LinearOp, Tensor, Tensor)>,
    activations: Vec<Tensor>,
    logits: Tensor,
    /// Parameter values (snapshots for references, shallow views for the current step);
    /// `None` where a reference keeps only norms (`ref_norms`).
    weights: Vec<Option<Tensor>>,
    /// Per site name, `(||a W||_RMS, ||a W||_op)` of weights not copied (see
    /// [`Change::LowRank`]).
    ref_norms: HashMap<String, (f64, f64)>,
}

fn probe(model: &dyn Model, x: &Tensor, copy_weights: bool, products: Option<&mut dyn DenseProducts>) -> ProbeState {
    tch::no_grad(|| {
        let t = model.forward_trace_with(x, products);
        let weights = if copy_weights {
            model.snapshot().into_iter().map(Some).collect()
        } else {
            model.params().iter().map(|p| Some(p.tensor.detach())).collect()
        };
        ProbeState {
            sites: t.sites.into_iter().map(|s| (s.name, s.param, s.op, s.input, s.output)).collect(),
            activations: t.activations,
            logits: t.logits,
            weights,
            ref_norms: HashMap::new(),
        }
    })
}

/// The monitor's [`DenseProducts`] for the traced forward of a measured step: each dense
/// site's output `a W_t x_t` comes from the same fused pass ([`ops::dense_change`]) that
/// measures the site against the initial weights, so `W_t` is read once for both; where the input
/// has not changed since initialisation (`x_t = x_0`: the input layer on the fixed probe),
/// the output is `a W_0 x_0 + a (W_t - W_0) x_0` from the initial trace and the effective
/// update, with no product by `W_t` at all (as accurate as the product: the sum rounds to
/// `eps |W_t x_0|`, less than the product's own rounding). The results wait in
/// `done` (by parameter index) for [`site_metrics`] ([`Change::Stored`]'s `measured`). It
/// takes exactly the sites `site_metrics` would fuse itself: dense weights whose initial
/// copy is stored, on CPU float inputs that are not one-hot (those are lookups there), under
/// power iteration; a weight used at a second site is left to the model there.
struct FusedForward<'a> {
    /// The initial weights, by parameter index.
    init: &'a [Option<Tensor>],
    /// The initial trace's dense sites, by parameter index: `(x_0, a W_0 x_0)`.
    init_sites: HashMap<usize, (&'a Tensor, &'a Tensor)>,
    /// Parameter names (the sites' cache keys).
    names: Vec<String>,
    cache: &'a mut HashMap<String, Tensor>,
    /// Per parameter: also measure `W_t`'s norms (the next step's one-step reference).
    keep_norms: Vec<bool>,
    tol: f64,
    max_iter: usize,
    done: HashMap<usize, DenseChange>,
}

impl DenseProducts for FusedForward<'_> {
    fn product(&mut self, param: usize, w: &Tensor, multiplier: f64, x: &Tensor) -> Option<Tensor> {
        if self.done.contains_key(&param) || x.dim() < 2 || w.dim() != 2 || ops::all_zero_or_one(x) != Some(false) {
            return None;
        }
        // [.., fan_in] inputs (the GPT's [B, T, d]) as rows, the results shaped back
        let mut shape = x.size();
        *shape.last_mut()? = w.size()[0];
        let x = &x.reshape([-1, *x.size().last()?]);
        let w_ref = self.init.get(param)?.as_ref()?;
        let name = self.names.get(param)?;
        let current = self.keep_norms.get(param).copied().unwrap_or(false);
        // an input unchanged since initialisation: the output from the initial one
        let unchanged = self.init_sites.get(&param).filter(|(x0, _)| x0.numel() == x.numel() && x0.reshape(x.size()).equal(x)).map(|&(_, out0)| out0);
        let mut fused = fused_pass(self.cache, name, w, w_ref, x, multiplier, current, (self.tol, self.max_iter), unchanged.is_none())?;
        fused.eff = fused.eff.reshape(&shape[..]);
        let out = match unchanged {
            Some(out0) => out0 + &fused.eff,
            None => fused.out.take()?.reshape(&shape[..]),
        };
        self.done.insert(param, fused);
        Some(out)
    }
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
fn rms_of_difference(ts: &[&Tensor]) -> f64 {
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

/// `(||M||_F, ||M||_2)` of the rank-`B` matrix `M = g^T x` (`g: [B, m]`, `x: [B, k]`) from
/// its factors alone, without forming `M`: with the Gram matrices `G = g g^T` and
/// `X = x x^T` (`[B, B]`), `||M||_F^2 = sum_ij G_ij X_ij`, and `||M||_2^2` is the largest
/// eigenvalue of `G X` (the nonzero eigenvalues of `M^T M = x^T G x` are those of `G X`),
/// found by [`top_eigenvalue_of_product`] to the relative residual `spectral` (`Some(tol)`;
/// the monitor passes its power-iteration tolerance, or `1e-9` for [`Spectral::Exact`]). The
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
pub(crate) fn low_rank_grams(g: &Tensor, x: &Tensor) -> Option<(ndarray::Array2<f64>, ndarray::Array2<f64>)> {
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

/// The second half of [`low_rank_norms`]: `(||M||_F, ||M||_2)` from the matrices of
/// [`low_rank_grams`] (serial: the eigenproblem, to the relative residual `spectral`; the
/// second value is NaN without it).
pub(crate) fn low_rank_norms_from(p: &ndarray::Array2<f64>, q: &ndarray::Array2<f64>, spectral: Option<f64>) -> (f64, f64) {
    let fro = (p * q).sum().max(0.0).sqrt();
    let Some(tol) = spectral else {
        return (fro, f64::NAN);
    };
    let top = top_eigenvalue_of_product(p, q, tol, 5000);
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
/// eigenvalue; or after `max_iter` iterations or an exhausted Krylov space. Unlike power
/// iteration it does not stall when the top eigenvalues are close (Gaussian factors
/// `64 x 1024`: 15 iterations for `1e-3`, 33 for `1e-9`). Starts from a fixed vector, so
/// results are reproducible.
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
    let mut theta = 0.0;
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
        let last = j + 1 == steps || bj == 0.0 || !bj.is_finite();
        // (theta to a thousandth of the tolerance: finer digits of the Ritz value do not
        // bring it closer to the eigenvalue)
        let (t, s_last) = tridiagonal_top(&alpha, &beta, 1e-3 * tol);
        theta = t;
        if last || bj * s_last.abs() <= tol * theta.abs() {
            break;
        }
        beta.push(bj);
        vs.push(w / bj);
        us.push(xw / bj);
    }
    theta
}

/// The largest eigenvalue of the symmetric tridiagonal matrix with diagonal `a` and
/// off-diagonal `b` (`a.len() - 1` entries), by bisection on Sturm sequence counts to the
/// relative precision `rel` (at least float64 resolution), and the last component of its
/// unit eigenvector, by two steps of
/// inverse iteration (a tridiagonal solve each). `O(len)` per bisection step: for the
/// Lanczos matrices of [`top_eigenvalue_of_product`], cheaper than a dense eigensolver call.
#[allow(clippy::needless_range_loop)]
fn tridiagonal_top(a: &[f64], b: &[f64], rel: f64) -> (f64, f64) {
    let n = a.len();
    if n == 0 {
        return (0.0, 1.0);
    }
    let off = |i: usize| if i < b.len() { b[i].abs() } else { 0.0 };
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for i in 0..n {
        let r = off(i) + if i > 0 { off(i - 1) } else { 0.0 };
        lo = lo.min(a[i] - r);
        hi = hi.max(a[i] + r);
    }
    if !(lo.is_finite() && hi.is_finite()) {
        return (f64::NAN, 1.0);
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
            return (theta, 1.0);
        }
        y.iter_mut().for_each(|v| *v /= norm);
    }
    (theta, y[n - 1])
}

/// Spectral norm of a parameter *as the operator it applies* (see [`LinearOp`]); warm starts
/// are kept in `cache` under `key`.
fn op_norm_2(op: LinearOp, w: &Tensor, spectral: Spectral, cache: &mut HashMap<String, Tensor>, key: &str) -> f64 {
    match op {
        LinearOp::Diagonal => w.abs().max().double_value(&[]),
        LinearOp::Bias => w.norm().double_value(&[]),
        LinearOp::Dense { multiplier } => {
            // The initial weights never change: their norm is computed once.
            let fixed = key.ends_with("/W0");
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

/// The cache keys of a dense site's power-iteration vectors, for the difference from its
/// reference and for the current weight.
fn warm_start_keys(key: &str) -> (String, String) {
    (format!("{key}/dW"), format!("{key}/Wt"))
}

/// The fused pass ([`ops::dense_change`]) of the dense site `key`, warm-started from (and
/// leaving) its vectors in `cache`; with `current`, also `W_t`'s norms; with `forward`, also
/// the output `a W_t x_t`. `None` where the pass does not apply or the kernels are off.
#[allow(clippy::too_many_arguments)]
fn fused_pass(
    cache: &mut HashMap<String, Tensor>,
    key: &str,
    w_t: &Tensor,
    w_ref: &Tensor,
    x: &Tensor,
    multiplier: f64,
    current: bool,
    (tol, max_iter): (f64, usize),
    forward: bool,
) -> Option<DenseChange> {
    let (key_dw, key_wt) = warm_start_keys(key);
    let mut v_d = warm_start(cache, &key_dw, w_t);
    let mut v_w = current.then(|| warm_start(cache, &key_wt, w_t));
    let fused = ops::dense_change(w_t, w_ref, x, multiplier, &mut v_d, v_w.as_mut(), tol, max_iter, forward);
    cache.insert(key_dw, v_d);
    if let Some(v) = v_w {
        cache.insert(key_wt, v);
    }
    fused
}

/// The power-iteration vector kept under `key` for a dense weight `w` (taken out of the
/// cache; the caller puts the updated one back), or a fresh seeded start.
fn warm_start(cache: &mut HashMap<String, Tensor>, key: &str, w: &Tensor) -> Tensor {
    cache.remove(key).unwrap_or_else(|| {
        let n = w.size()[1];
        let mut r = crate::rng::rng(n as u64, crate::rng::stream::PROBE);
        crate::rng::normal(&[n], 1.0, &mut r, w.device())
    })
}

/// The RMS -> RMS operator norm `sqrt(fan_in / fan_out) ||a W||_2` of a site's weight
/// ([`op_norm_2`], warm starts under `key`).
fn op_norm_rms(op: LinearOp, w: &Tensor, spectral: Spectral, cache: &mut HashMap<String, Tensor>, key: &str) -> f64 {
    let (fan_in, fan_out) = fans(op, w);
    (fan_in / fan_out).sqrt() * op_norm_2(op, w, spectral, cache, key)
}

/// `(fan_in, fan_out)` of the operator a site applies.
fn fans(op: LinearOp, w: &Tensor) -> (f64, f64) {
    match op {
        LinearOp::Dense { .. } => (w.size()[1] as f64, w.size()[0] as f64),
        LinearOp::Diagonal => (w.size()[0] as f64, w.size()[0] as f64),
        LinearOp::Bias => (1.0, w.size()[0] as f64),
    }
}

/// RMS norm of the effective weight `a W` of a site.
fn eff_weight_rms(op: LinearOp, w: &Tensor) -> f64 {
    match op {
        LinearOp::Dense { multiplier } => multiplier.abs() * weight_rms(w),
        _ => weight_rms(w),
    }
}

fn ratio(num: f64, den: f64) -> f64 {
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
fn one_hot_indices(x: &Tensor) -> Option<Tensor> {
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
fn apply_fast(op: LinearOp, w: &Tensor, x: &Tensor, one_hot: Option<&Tensor>) -> Tensor {
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
fn cached_scalar(cache: &mut HashMap<String, Tensor>, key: String, fixed: bool, f: impl FnOnce() -> f64) -> f64 {
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
    /// for the same `x_t`, warm starts and `norms_t`); `None` runs it here.
    Stored { w_t: &'a Tensor, w_ref: &'a Tensor, norms_t: Option<&'a std::cell::Cell<(f64, f64)>>, measured: Option<DenseChange> },
    /// One fused plain-SGD step of a dense weight, `dW = -lr g^T x`, known by its factors.
    /// `norms` are `(||g^T x||_F, ||g^T x||_2)` ([`low_rank_norms`]); `ref_norms` are
    /// `(||a W_ref||_RMS, ||a W_ref||_op)` of the reference weights, measured when they were
    /// current (the weights are not copied).
    LowRank { step: &'a LowRankStep, norms: (f64, f64), ref_norms: (f64, f64) },
}

/// Metrics of one site against a reference (initial or previous) weight and input.
/// `ref_is_init` marks the reference as the (fixed) initial weights, whose norms are then
/// computed once and cached under `key`.
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
/// # Shapes
/// `x_t, x_ref: [B, fan_in]`, `out_t, out_ref: [B, fan_out]`.
#[allow(clippy::too_many_arguments)]
pub fn site_metrics(
    op: LinearOp,
    change: Change,
    x_t: &Tensor,
    x_ref: &Tensor,
    out_t: &Tensor,
    out_ref: &Tensor,
    spectral: Spectral,
    cache: &mut HashMap<String, Tensor>,
    key: &str,
    ref_is_init: bool,
) -> Vec<(Metric, f64)> {
    let ref_tag = if ref_is_init { "W0" } else { "Wprev" };
    tch::no_grad(|| {
        let same_input = x_t.size() == x_ref.size() && x_t.equal(x_ref);
        let dense = matches!(op, LinearOp::Dense { .. });
        // (effective update, fan_in, fan_out, ||a dW||_F, ||a dW||_2, ||a W_ref||_RMS,
        // ||a W_ref||_op, W_ref if stored)
        let (eff, fan_in, fan_out, fro, spec, w_ref_rms, w_ref_op, w_ref) = match change {
            Change::Stored { w_t, w_ref, norms_t, measured } => {
                let one_hot = if dense && same_input { one_hot_indices(x_t) } else { None };
                let (fan_in, fan_out) = fans(op, w_t);
                // dense weights: one fused pass over W_t and W_ref (see `dense`)
                let fused = match (op, spectral, &one_hot) {
                    (LinearOp::Dense { multiplier }, _, _) if measured.is_some() => measured.map(|c| (c, multiplier.abs())),
                    (LinearOp::Dense { multiplier }, Spectral::PowerIteration { tol, max_iter }, None) => {
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
                let w_ref_rms = cached_scalar(cache, format!("{key}/{ref_tag}/rms"), ref_is_init, || eff_weight_rms(op, w_ref));
                let w_ref_op = op_norm_rms(op, w_ref, spectral, cache, &format!("{key}/{ref_tag}"));
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

/// One measured value before it becomes a [`Record`]: `(layer, metric, value)`.
type Row = (String, MetricId, f64);

/// The metrics of every site of `now` against the reference `r` (the initial trace for
/// `prefix = ""`, the previous step's for `"delta_"`), appended to `rows` as
/// `(site, metric, value)`. For `Delta`, the norms of `W_t` of the weights `keep_norms`
/// selects go to `kept_norms` (the next step's one-step reference), and `measured` holds the
/// fused passes the traced forward ran. For `delta`, weights whose step came in low-rank form
/// are measured from its factors, with `lr_norms` their `(||g^T x||_F, ||g^T x||_2)`.
#[allow(clippy::too_many_arguments)]
fn sites_against(
    now: &ProbeState,
    r: &ProbeState,
    since: Since,
    spectral: Spectral,
    cache: &mut HashMap<String, Tensor>,
    low_rank: &[Option<LowRankStep>],
    lr_norms: &[Option<(f64, f64)>],
    keep_norms: &dyn Fn(usize) -> bool,
    measured: &mut HashMap<usize, DenseChange>,
    rows: &mut Vec<Row>,
    kept_norms: &mut Vec<(String, (f64, f64))>,
) {
    let one_step = since == Since::Previous;
    // (the warm starts' cache keys)
    let prefix = if one_step { "delta_" } else { "" };
    for (i, (name, p, op, x, out)) in now.sites.iter().enumerate() {
        let (_, _, _, x_ref, out_ref) = &r.sites[i];
        let key = format!("{prefix}{name}");
        let dense = matches!(op, LinearOp::Dense { .. });
        let factored = match (one_step && dense, low_rank.get(*p).and_then(Option::as_ref), r.ref_norms.get(name)) {
            (true, Some(step), Some(&ref_norms)) => lr_norms.get(*p).copied().flatten().map(|norms| Change::LowRank { step, norms, ref_norms }),
            _ => None,
        };
        // the norms of W_t, kept as the next step's one-step reference when that step's
        // update of this weight comes in low-rank form
        let norms_t = (!one_step && keep_norms(*p)).then(|| std::cell::Cell::new((f64::NAN, f64::NAN)));
        let change = match (factored, &now.weights[*p], &r.weights[*p]) {
            (Some(c), _, _) => c,
            (None, Some(w_t), Some(w_ref)) => Change::Stored { w_t, w_ref, norms_t: norms_t.as_ref(), measured: if one_step { None } else { measured.remove(p) } },
            // a reference kept as norms only, but the step left no factors: the one-step
            // metrics of this site cannot be measured
            _ => continue,
        };
        let ms = site_metrics(*op, change, x, x_ref, out, out_ref, spectral, cache, &key, !one_step);
        if let (Some(cell), true) = (norms_t, dense) {
            kept_norms.push((name.clone(), cell.get()));
        }
        for (m, v) in ms {
            // input/act norms do not depend on the reference: record them once
            if one_step && !m.compares() {
                continue;
            }
            rows.push((name.clone(), m.since(since), v));
        }
    }
}

/// Watches a training run and records the RCC at the scheduled steps. Implements
/// [`StepHook`], so `Trainer::run(progress, Some(&mut monitor))` is all it takes.
pub struct Monitor {
    pub cfg: MonitorConfig,
    probe_x: Tensor,
    probe_y: Tensor,
    loss: Loss,
    init: Option<ProbeState>,
    prev: Option<ProbeState>,
    cache: HashMap<String, Tensor>,
    /// Everything measured so far.
    pub records: Vec<Record>,
}

impl Monitor {
    /// A monitor for the probe batch `(x, y)` (`[B, d_in]`, `[B]`) under `loss`.
    pub fn new(cfg: MonitorConfig, probe_x: Tensor, probe_y: Tensor, loss: Loss) -> Self {
        Monitor { cfg, probe_x, probe_y, loss, init: None, prev: None, cache: HashMap::new(), records: vec![] }
    }

    /// Measures the model at step `step` against the stored references; returns the probe
    /// state it measured (weights as shallow views). `out` is what the step left (`None` at
    /// initialisation).
    fn measure(&mut self, step: usize, model: &dyn Model, out: Option<&StepOutput>) -> Result<ProbeState> {
        let spectral = self.cfg.spectral;
        let (grads, low_rank) = out.map_or((&[][..], &[][..]), |o| (o.grads, o.low_rank));
        let next_one_step = self.cfg.one_step && self.cfg.schedule.contains(step + 1);
        let keep_norms = |p: usize| next_one_step && low_rank.get(p).is_some_and(Option::is_some);
        // the traced forward, with the dense sites' Delta passes fused into it
        let mut fused = match (&self.init, spectral) {
            (Some(init), Spectral::PowerIteration { tol, max_iter }) => Some(FusedForward {
                init: &init.weights,
                init_sites: init
                    .sites
                    .iter()
                    .rev() // (the first site of a parameter wins)
                    .filter(|s| matches!(s.2, LinearOp::Dense { .. }))
                    .map(|(_, p, _, x0, out0)| (*p, (x0, out0)))
                    .collect(),
                names: model.params().iter().map(|p| p.name.clone()).collect(),
                cache: &mut self.cache,
                keep_norms: (0..model.params().len()).map(keep_norms).collect(),
                tol,
                max_iter,
                done: HashMap::new(),
            }),
            _ => None,
        };
        let now = probe(model, &self.probe_x, false, fused.as_mut().map(|f| f as &mut dyn DenseProducts));
        let mut measured = fused.map(|f| f.done).unwrap_or_default();
        // (||g^T x||_F, ||g^T x||_2) of each low-rank step: the one-step update's norms and
        // the gradient's norm (the spectral norm only if the one-step metrics are measured).
        // The B x B eigenproblems are serial, so they run on the second thread (with the
        // activations' sparsity and cosines) while this one measures the Delta sites and chi.
        let spec = self.prev.is_some();
        let tol = match spectral {
            Spectral::PowerIteration { tol, .. } => tol,
            Spectral::Exact => 1e-9,
        };
        // (the Grams split between the threads here, the eigenproblems in the join below)
        let grams: Vec<Option<Option<_>>> = (0..model.params().len())
            .map(|p| {
                let step = low_rank.get(p).and_then(Option::as_ref)?;
                (spec || self.cfg.gradients).then(|| low_rank_grams(&step.g, &step.x))
            })
            .collect();
        // (and the activations' sparsity and cosines: host passes over the activations,
        // handed over as shallow copies)
        let acts: Vec<(Tensor, Tensor)> = match &self.init {
            Some(init) => now.activations.iter().zip(&init.activations).map(|(a, a0)| (a.shallow_clone(), a0.shallow_clone())).collect(),
            None => vec![],
        };
        let low_rank_task = move || -> (Vec<Option<(f64, f64)>>, Vec<Row>) {
            let norms = grams
                .iter()
                .map(|pq| pq.as_ref().map(|pq| pq.as_ref().map_or((f64::NAN, f64::NAN), |(p, q)| low_rank_norms_from(p, q, spec.then_some(tol)))))
                .collect();
            let mut rows = vec![];
            for (l, (a, a0)) in acts.iter().enumerate() {
                let layer = format!("act.{l}");
                rows.push((layer.clone(), Metric::Sparsity.into(), sparsity(a)));
                rows.push((layer.clone(), Metric::CosInit.into(), cosine_rows(a, a0)));
                rows.push((layer, Metric::CosCross.into(), cosine_cross(a)));
            }
            (norms, rows)
        };
        let (init, cache, loss, probe_y, gradients) = (self.init.as_ref(), &mut self.cache, self.loss, &self.probe_y, self.cfg.gradients);
        let now_ref = &now;
        let measured_ref = &mut measured;
        // (the Delta rows, the norms of W_t kept for the next step, the model rows)
        type Measured = (Vec<Row>, Vec<(String, (f64, f64))>, Vec<Row>);
        let this_task = move || -> Result<Measured> {
            let (mut delta_rows, mut kept_norms, mut rows) = (vec![], vec![], vec![]);
            if let Some(r) = init {
                sites_against(now_ref, r, Since::Init, spectral, cache, low_rank, &[], &keep_norms, measured_ref, &mut delta_rows, &mut kept_norms);
            }
            rows.push(("model".into(), Metric::Logits.into(), rms(&now_ref.logits)));
            if gradients {
                // chi = dl/df of the per-example loss, from the probe logits alone (no
                // backward pass through the network): in closed form for [B, C] logits
                // (Loss::value_and_grad), by autograd on a detached leaf otherwise
                let logits = &now_ref.logits;
                let (l, g) = if logits.dim() == 2 {
                    loss.value_and_grad(logits, probe_y)
                } else {
                    let f = logits.detach().set_requires_grad(true);
                    let l = loss.compute(&f, probe_y);
                    let mut g = Tensor::f_run_backward(&[&l], &[&f], false, false)?;
                    (l, g.swap_remove(0))
                };
                // per-example loss: one example per logit row (a token, for the GPT)
                let batch = logits.size()[0] as f64;
                rows.push(("model".into(), Metric::Chi.into(), rms(&g) * batch));
                rows.push(("model".into(), Metric::Loss.into(), l.double_value(&[])));
            }
            Ok((delta_rows, kept_norms, rows))
        };
        let (this, (lr_norms, act_rows)) = crate::kernels::threads::join(this_task, low_rank_task);
        let (mut all_rows, kept_norms, rows) = this?;
        if let Some(r) = self.prev.as_ref() {
            sites_against(&now, r, Since::Previous, spectral, &mut self.cache, low_rank, &lr_norms, &keep_norms, &mut measured, &mut all_rows, &mut vec![]);
        }
        all_rows.extend(act_rows);
        all_rows.extend(rows);
        let mut rows = all_rows;
        if self.cfg.gradients {
            // per-layer gradient norms of the training batch of this step (of g^T x for a
            // weight whose step was fused)
            for (k, p) in model.params().iter().enumerate() {
                let value = match (grads.get(k).and_then(Option::as_ref), lr_norms[k]) {
                    (Some(g), _) => rms(g),
                    (None, Some((fro, _))) => fro / (p.tensor.numel() as f64).sqrt(),
                    (None, None) => continue,
                };
                rows.push((p.name.clone(), Metric::Grad.into(), value));
            }
        }
        self.records.extend(rows.into_iter().map(|(layer, metric, value)| Record { step, layer, metric, value }));
        let mut now = now;
        now.ref_norms.extend(kept_norms);
        Ok(now)
    }

    /// Writes `tensors` of `model` (named as its parameters) to `dump_dir/file`, if set.
    fn dump(&self, file: &str, model: &dyn Model, probe: bool) -> Result<()> {
        let Some(dir) = &self.cfg.dump_dir else { return Ok(()) };
        std::fs::create_dir_all(dir).map_err(|e| crate::Error::io(dir, e))?;
        let mut named: Vec<(String, Tensor)> =
            model.params().iter().map(|p| (p.name.clone(), p.tensor.detach().to_device(tch::Device::Cpu))).collect();
        if probe {
            named.push(("probe.x".into(), self.probe_x.to_device(tch::Device::Cpu)));
            named.push(("probe.y".into(), self.probe_y.to_device(tch::Device::Cpu)));
        }
        crate::files::write_atomic_with(&dir.join(file), |tmp| Ok(Tensor::write_safetensors(&named, tmp)?))
    }

    /// All records of one layer and metric, as `(step, value)`.
    pub fn series(&self, layer: &str, metric: impl Into<MetricId>) -> Vec<(usize, f64)> {
        let metric = metric.into();
        self.records.iter().filter(|r| r.layer == layer && r.metric == metric).map(|r| (r.step, r.value)).collect()
    }
}

impl StepHook for Monitor {
    fn start(&mut self, model: &dyn Model) -> Result<()> {
        self.init = Some(probe(model, &self.probe_x, true, None));
        self.prev = None;
        self.dump("init.safetensors", model, true)?;
        self.measure(0, model, None).map(|_| ())
    }

    fn before_step(&mut self, step: usize, model: &dyn Model) -> Result<()> {
        // The one-step reference W_{t-1}, x_{t-1} is needed only before measured steps, and
        // only if after_step did not keep it already.
        if self.cfg.one_step && self.cfg.schedule.contains(step) && self.prev.is_none() {
            self.prev = Some(probe(model, &self.probe_x, true, None));
        }
        Ok(())
    }

    fn after_step(&mut self, step: usize, model: &dyn Model, out: &StepOutput) -> Result<()> {
        if self.cfg.schedule.contains(step) {
            let mut now = self.measure(step, model, Some(out))?;
            self.dump(&format!("step_{step}.safetensors"), model, false)?;
            self.prev = None;
            if self.cfg.one_step && self.cfg.schedule.contains(step + 1) {
                // Keep this step's trace as the next step's reference. The optimizer updates
                // the weights in place, so they are copied, except the dense weights whose
                // steps come in low-rank form (plain SGD): the next step's update is then
                // measured from its factors, and of these weights only the norms are kept.
                let low_rank = |p: usize| out.low_rank.get(p).is_some_and(Option::is_some);
                let spectral = self.cfg.spectral;
                for (name, p, op, _, _) in &now.sites {
                    if now.ref_norms.contains_key(name) {
                        continue; // measured in the Delta pass (see measure)
                    }
                    if let (LinearOp::Dense { .. }, true, Some(w)) = (op, low_rank(*p), &now.weights[*p]) {
                        let w_op = op_norm_rms(*op, w, spectral, &mut self.cache, &format!("{name}/Wt"));
                        now.ref_norms.insert(name.clone(), (eff_weight_rms(*op, w), w_op));
                    }
                }
                now.weights = model
                    .params()
                    .iter()
                    .enumerate()
                    .map(|(p, param)| (!low_rank(p)).then(|| param.tensor.detach().copy()))
                    .collect();
                self.prev = Some(now);
            }
        } else {
            self.prev = None;
        }
        Ok(())
    }

    fn needs_gradients(&self) -> bool {
        // the gradient norms of fused steps come from their low-rank factors
        false
    }
}

#[cfg(test)]
mod tests;

