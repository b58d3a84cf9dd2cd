//! Refined coordinate checks (RCC): the one home of every per-layer metric of the paper's
//! central diagnostic (section 2, appendix C.1, appendix E).
//!
//! For every weight `W` acting linearly on its input `x` (a [`Site`] of a traced forward
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
//!   the estimate changes by less than `power_tol` (relative) between iterations; or exact
//!   via libtorch's matrix 2-norm ([`Spectral::Exact`], costly at large width).
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
//! A measured step runs one traced forward of the probe batch and, per reference (initial,
//! previous step) and dense site, one matmul `(W_t - W_ref) x_t`; the propagating update
//! comes from the RCC identity with the cached reference outputs `W_ref x_ref` (see
//! [`site_metrics`] for the accuracy), inputs that did not change (the input layer, biases)
//! cost nothing, one-hot inputs (the GPT's embedding) are lookups, the initial weights' norms
//! are computed once, and the previous step's trace is kept as the next `delta` reference
//! (no second traced forward). With a probe as large as the training batch that is about
//! three forward passes of matmuls beside the ~three of a plain SGD step, so the exact
//! metrics cost >= ~2x a plain step. `cargo bench --bench monitor_overhead` (3-layer MLP,
//! width 1024, batch 64, every step; quiet 2-core machine, 2 threads, 2026-11-26): Delta and
//! delta 3.15x, Delta only 2.20x, probe of 16 2.25x; earlier on the shared machine (load ~10,
//! one libtorch thread):
//! Delta and delta 2.8-3.1x a plain step (3.5-3.6x before this fast path, same
//! conditions), Delta only 2.1-2.5x, Delta and delta on a probe of 16 2.0-2.2x (weight-sized passes: differences,
//! matmul packing, power iterations, the snapshot, dominate there). The issue's 1.5x target
//! is not met; with libtorch's default 2 threads on the loaded machine OpenMP spin-waiting
//! makes both sides, and the ratio, erratic (2.7-4.8x).
use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::loss::Loss;
use crate::model::{LinearOp, Model};
use crate::optim::StepStats;
use crate::train::StepHook;
use crate::Result;

pub mod gpt;
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
    pub metric: String,
    pub value: f64,
}

/// What a traced forward pass on the probe batch leaves behind (detached).
struct ProbeState {
    /// Per site: (name, param index, op, input, output).
    sites: Vec<(String, usize, LinearOp, Tensor, Tensor)>,
    activations: Vec<Tensor>,
    logits: Tensor,
    /// Parameter values (snapshots for references, shallow views for the current step).
    weights: Vec<Tensor>,
}

fn probe(model: &dyn Model, x: &Tensor, copy_weights: bool) -> ProbeState {
    tch::no_grad(|| {
        let t = model.forward_trace(x);
        let weights = if copy_weights {
            model.snapshot()
        } else {
            model.params().iter().map(|p| p.tensor.detach()).collect()
        };
        ProbeState {
            sites: t.sites.into_iter().map(|s| (s.name, s.param, s.op, s.input, s.output)).collect(),
            activations: t.activations,
            logits: t.logits,
            weights,
        }
    })
}

/// `sqrt(mean(v^2))` over all entries (libtorch's 2-norm, which accumulates in a wider type
/// with cascade summation, so no f64 copy is made).
pub fn rms(v: &Tensor) -> f64 {
    let n = v.numel();
    if n == 0 {
        return f64::NAN;
    }
    v.norm().double_value(&[]) / (n as f64).sqrt()
}

/// The RMS norm of a parameter tensor as the matrix it acts as (see module docs): weight
/// `[fan_out, fan_in]` -> `||W||_F / sqrt(numel)`; gains and biases likewise over their
/// entries.
pub fn weight_rms(w: &Tensor) -> f64 {
    rms(w)
}

/// Spectral norm `||A||_2` by power iteration, warm-started from `v` (updated in place).
/// Returns the estimate after its relative change between two iterations is below `tol`,
/// or after `max_iter` iterations. Works in the tensor's own precision.
pub fn power_iteration(a: &Tensor, v: &mut Tensor, tol: f64, max_iter: usize) -> f64 {
    tch::no_grad(|| {
        let mut x = v.to_kind(a.kind());
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
            // ||A^T (A x / ||A x||)|| increases to sigma_max
            let done = (s - sigma).abs() <= tol * s;
            sigma = s;
            if done {
                break;
            }
        }
        *v = x;
        sigma
    })
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
                    let v = cache.entry(key.to_string()).or_insert_with(|| {
                        let n = w.size()[1];
                        let mut r = crate::rng::rng(n as u64, crate::rng::stream::PROBE);
                        crate::rng::normal(&[n], 1.0, &mut r, w.device())
                    });
                    power_iteration(w, v, tol, max_iter)
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

/// The accumulation constant `c` of `align_rms`: fan-in for dense weights, 1 otherwise.
fn align_c(op: LinearOp, w: &Tensor) -> f64 {
    match op {
        LinearOp::Dense { .. } => w.size()[1] as f64,
        _ => 1.0,
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
/// # Shapes
/// `x_t, x_ref: [B, fan_in]`, `out_t, out_ref: [B, fan_out]`.
#[allow(clippy::too_many_arguments)]
pub fn site_metrics(
    op: LinearOp,
    w_t: &Tensor,
    w_ref: &Tensor,
    x_t: &Tensor,
    x_ref: &Tensor,
    out_t: &Tensor,
    out_ref: &Tensor,
    spectral: Spectral,
    cache: &mut HashMap<String, Tensor>,
    key: &str,
    ref_is_init: bool,
) -> Vec<(&'static str, f64)> {
    let ref_tag = if ref_is_init { "W0" } else { "Wprev" };
    tch::no_grad(|| {
        let dw = w_t - w_ref;
        let same_input = x_t.size() == x_ref.size() && x_t.equal(x_ref);
        let dense = matches!(op, LinearOp::Dense { .. });
        let one_hot = if dense && same_input { one_hot_indices(x_t) } else { None };
        let eff = apply_fast(op, &dw, x_t, one_hot.as_ref());
        let d_out = out_t - out_ref;
        let (dx_rms, prop_rms) = if same_input {
            (0.0, 0.0)
        } else {
            let dx = x_t - x_ref;
            let prop = if dense { &d_out - &eff } else { op.apply(w_ref, &dx) };
            (rms(&dx), rms(&prop))
        };
        let (fan_in, fan_out) = fans(op, w_t);
        let to_rms_op = (fan_in / fan_out).sqrt();
        let dw_rms = eff_weight_rms(op, &dw);
        let w_ref_rms = cached_scalar(cache, format!("{key}/{ref_tag}/rms"), ref_is_init, || eff_weight_rms(op, w_ref));
        let dw_op = to_rms_op * op_norm_2(op, &dw, spectral, cache, &format!("{key}/dW"));
        let w_ref_op = to_rms_op * op_norm_2(op, w_ref, spectral, cache, &format!("{key}/{ref_tag}"));
        let x_rms = rms(x_t);
        let eff_rms = rms(&eff);
        let c = align_c(op, w_t);
        // Frobenius / spectral of the effective update, as a matrix.
        let fro = dw_rms * (fan_in * fan_out).sqrt();
        let spec = dw_op / to_rms_op;
        vec![
            ("act", rms(out_t)),
            ("act_update", rms(&d_out)),
            ("effective", eff_rms),
            ("propagating", prop_rms),
            ("input", x_rms),
            ("input_update", dx_rms),
            ("weight_update_rms", dw_rms),
            ("weight_update_op", dw_op),
            ("align_rms_eff", ratio(eff_rms, c * dw_rms * x_rms)),
            ("align_op_eff", ratio(eff_rms, dw_op * x_rms)),
            ("align_rms_prop", ratio(prop_rms, c * w_ref_rms * dx_rms)),
            ("align_op_prop", ratio(prop_rms, w_ref_op * dx_rms)),
            ("update_rank", ratio(fro, spec)),
        ]
    })
}

/// Mean cosine similarity between matching rows of `a` and `b` (`[B, n]`).
pub fn cosine_rows(a: &Tensor, b: &Tensor) -> f64 {
    let (a, b) = (a.to_kind(Kind::Double), b.to_kind(Kind::Double));
    let num = (&a * &b).sum_dim_intlist(&[-1i64][..], false, Kind::Double);
    let den = a.norm_scalaropt_dim(2, &[-1i64][..], false) * b.norm_scalaropt_dim(2, &[-1i64][..], false);
    (num / den.clamp_min(1e-300)).mean(Kind::Double).double_value(&[])
}

/// Mean cosine similarity between different rows of `a` (`[B, n]`, `B >= 2`).
pub fn cosine_cross(a: &Tensor) -> f64 {
    let a = a.to_kind(Kind::Double);
    let b = a.size()[0];
    if b < 2 {
        return f64::NAN;
    }
    let u = &a / a.norm_scalaropt_dim(2, &[-1i64][..], true).clamp_min(1e-300);
    let g = u.matmul(&u.tr()); // [B, B]
    let off = g.sum(Kind::Double).double_value(&[]) - g.trace().double_value(&[]);
    off / (b * (b - 1)) as f64
}

/// Fraction of exactly-zero entries.
pub fn sparsity(a: &Tensor) -> f64 {
    a.eq(0.0).to_kind(Kind::Double).mean(Kind::Double).double_value(&[])
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

    fn push(&mut self, step: usize, layer: &str, metric: &str, value: f64) {
        self.records.push(Record { step, layer: layer.to_string(), metric: metric.to_string(), value });
    }

    /// Measures the model at step `step` against the stored references; returns the probe
    /// state it measured (weights as shallow views).
    fn measure(&mut self, step: usize, model: &dyn Model, grads: &[Option<Tensor>]) -> Result<ProbeState> {
        let now = probe(model, &self.probe_x, false);
        let spectral = self.cfg.spectral;
        let mut rows: Vec<(String, String, f64)> = vec![];
        for (prefix, reference) in [("", self.init.as_ref()), ("delta_", self.prev.as_ref())] {
            let Some(r) = reference else { continue };
            for (i, (name, p, op, x, out)) in now.sites.iter().enumerate() {
                let (_, _, _, x_ref, out_ref) = &r.sites[i];
                let key = format!("{prefix}{name}");
                let ms = site_metrics(*op, &now.weights[*p], &r.weights[*p], x, x_ref, out, out_ref, spectral, &mut self.cache, &key, prefix.is_empty());
                for (m, v) in ms {
                    // input/act norms do not depend on the reference: record them once
                    if prefix == "delta_" && (m == "act" || m == "input") {
                        continue;
                    }
                    rows.push((name.clone(), format!("{prefix}{m}"), v));
                }
            }
        }
        if let Some(init) = &self.init {
            for (l, (a, a0)) in now.activations.iter().zip(&init.activations).enumerate() {
                let layer = format!("act.{l}");
                rows.push((layer.clone(), "sparsity".into(), sparsity(a)));
                rows.push((layer.clone(), "cos_init".into(), cosine_rows(a, a0)));
                rows.push((layer, "cos_cross".into(), cosine_cross(a)));
            }
        }
        rows.push(("model".into(), "logits".into(), rms(&now.logits)));
        if self.cfg.gradients {
            // chi = dl/df of the per-example loss, from the probe logits alone (a detached
            // leaf: no backward pass through the network).
            let f = now.logits.detach().set_requires_grad(true);
            let l = self.loss.compute(&f, &self.probe_y);
            let g = Tensor::f_run_backward(&[&l], &[&f], false, false)?;
            // per-example loss: one example per logit row (a token, for the GPT)
            let batch = now.logits.size()[0] as f64;
            rows.push(("model".into(), "chi".into(), rms(&g[0]) * batch));
            rows.push(("model".into(), "loss".into(), l.double_value(&[])));
            // per-layer gradient norms of the training batch of this step
            for (p, g) in model.params().iter().zip(grads) {
                if let Some(g) = g {
                    rows.push((p.name.clone(), "grad".into(), rms(g)));
                }
            }
        }
        for (layer, metric, v) in rows {
            self.push(step, &layer, &metric, v);
        }
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
        Tensor::write_safetensors(&named, dir.join(file))?;
        Ok(())
    }

    /// All records of one layer and metric, as `(step, value)`.
    pub fn series(&self, layer: &str, metric: &str) -> Vec<(usize, f64)> {
        self.records.iter().filter(|r| r.layer == layer && r.metric == metric).map(|r| (r.step, r.value)).collect()
    }
}

impl StepHook for Monitor {
    fn start(&mut self, model: &dyn Model) -> Result<()> {
        self.init = Some(probe(model, &self.probe_x, true));
        self.prev = None;
        self.dump("init.safetensors", model, true)?;
        self.measure(0, model, &[]).map(|_| ())
    }

    fn before_step(&mut self, step: usize, model: &dyn Model) -> Result<()> {
        // The one-step reference W_{t-1}, x_{t-1} is needed only before measured steps, and
        // only if after_step did not keep it already.
        if self.cfg.one_step && self.cfg.schedule.contains(step) && self.prev.is_none() {
            self.prev = Some(probe(model, &self.probe_x, true));
        }
        Ok(())
    }

    fn after_step(&mut self, step: usize, model: &dyn Model, _stats: &StepStats, grads: &[Option<Tensor>]) -> Result<()> {
        if self.cfg.schedule.contains(step) {
            let mut now = self.measure(step, model, grads)?;
            self.dump(&format!("step_{step}.safetensors"), model, false)?;
            self.prev = None;
            if self.cfg.one_step && self.cfg.schedule.contains(step + 1) {
                // Keep this step's trace as the next step's reference: only the weights need
                // copying (the optimizer updates them in place).
                now.weights = model.snapshot();
                self.prev = Some(now);
            }
        } else {
            self.prev = None;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
