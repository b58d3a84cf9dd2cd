//! Sharpness across widths: the curvature of the training loss of real networks (MLPs with
//! or without norms, the GPT), measured on a fixed, seeded batch at chosen training steps, as
//! tidy rows next to the RCC monitor's.
//!
//! Section 3.2 of the paper asks whether a catapult / edge-of-stability mechanism explains
//! why SP tolerates large learning rates and answers with the 2-layer linear uv model under
//! MSE only ([`crate::theory::uv`]: the sharpness `lambda_t` grows in SP unless
//! `eta_n = O(n^-1)`). This module measures the same quantity in real networks.
//!
//! # What is measured (metric names in CSV/JSON)
//! With `H` the Hessian of the loss on the batch with respect to every trainable parameter
//! (frozen ones are not part of the space), `G = J^T H_out J` its Gauss-Newton (NTK) part
//! (`J` the Jacobian of the logits, `H_out` the loss's Hessian in the logits), and `D` the
//! diagonal of per-parameter learning rates of the next step (`eta * schedule(t) * lr_scale`,
//! [`crate::optim::OptimConfig::param_lrs`]); layer `model` unless said otherwise:
//!
//! | metric | definition |
//! |---|---|
//! | `sharpness` | `lambda_max(H)` (largest algebraic eigenvalue) |
//! | `eigenvalue_{i}` | the `i`-th largest eigenvalue of `H`, `i = 2..k` |
//! | `sharpness_gn` | `lambda_max(G)` |
//! | `eta_sharpness` | `lambda_max(D H)`: `eta * sharpness` when every parameter has the same rate (SP under SGD), else computed as `lambda_max(D^1/2 H D^1/2)`. Plain SGD on the quadratic model is stable iff it is below 2 (Cohen et al. 2021). SGD-like optimizers only |
//! | `eta_sharpness_gn` | the same for `G` |
//! | `sharpness_precond` | Adam's preconditioned sharpness `lambda_max(P^-1 H)` with `P^-1` from [`crate::optim::Optimizer::adam_preconditioner`] (Cohen et al. 2022, learning rate folded into `P^-1`): stable below `(2 + 2 beta1) / (1 - beta1)` (38 at `beta1 = 0.9`; their `38 / eta`). Adam-like optimizers, after the first step |
//! | `sharpness_layer` (layer = the weight's name) | `lambda_max(H_ll)` of each weight matrix's diagonal block (which layer's curvature grows with width?) |
//! | `trace`, `trace_stderr` | `tr H` by Hutchinson with its standard error |
//! | `hessian_loss` | the loss on the curvature batch |
//!
//! Every Lanczos estimate `x` comes with `x_residual = ||A y - theta y|| / |theta|` of its
//! Ritz pair (explicit by default, [`lanczos::LanczosConfig`]). The spectral density by
//! stochastic Lanczos quadrature is available as [`lanczos::Density`] (not a row).
//!
//! # The uv model's `lambda_t`
//! The recursion's `lambda_t` is the learning-rate-weighted NTK of the one training point,
//! normalised: `lambda = sum_l lr_l |df/dW_l|^2 / (n^-alpha n_sp)` (module docs of
//! [`crate::theory::uv`]). Under `L = (f - y)^2 / 2`, `G = J^T J` has rank one, so
//! `eta_sharpness_gn = eta sum_l lr_l |df/dW_l|^2 = eta n^-alpha n_sp lambda_t`, and the
//! linearised edge of stability `eta k_a lambda < 2` is `eta_sharpness_gn < 2`. [`uv`]
//! measures this along training, next to the recursion (`tests/sharpness.rs`: through a
//! catapult).
//!
//! # Design
//! - [`curvature`]: Hessian- and GN-vector products by double backward through libtorch's
//!   autograd on [`crate::model::Model::forward`] (the MLP's hand-written backward has no
//!   second derivatives), for the whole parameter space or one block, optionally
//!   preconditioned.
//! - [`lanczos`]: the estimators on any symmetric operator (Lanczos with full
//!   reorthogonalisation, Hutchinson, SLQ), seeded through [`crate::rng`].
//! - [`measure`]: one measurement, as rows; [`SharpnessHook`]: measurement at scheduled steps
//!   as a [`StepHook`], producing the RCC monitor's [`Record`] rows, so it runs next to the
//!   monitor through [`crate::train::Hooks`]; [`runner`]: widths x seeds from a training
//!   config (MLP or GPT), as [`crate::rcc::CoordCheckResult`] rows, which `widthlab
//!   sharpness` writes.
//!
//! Coupling to the rest of the crate (kept small): [`Record`], its [`Metric`] names (the
//! curvature estimates are [`CurvatureEstimate`]s, each with a [`Metric::Residual`] row) and
//! [`StepSchedule`] from `rcc`, the row type and result container of `rcc::runner`; [`crate::model::twice_differentiable`] (the
//! GPT's attention kernel); [`crate::train::StepOutput::optimizer`] for Adam's state.
//!
//! Everything random (the batch, start and probe vectors) derives from the run's seed, so the
//! same seed gives the same rows on CPU. Costs: one forward and one backward with
//! `create_graph` per measurement, then one double backward per Hessian product (three per GN
//! product); Lanczos keeps `iterations + 1` vectors of the parameter count.
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::data::Dataset;
use crate::loss::Loss;
use crate::model::Model;
use crate::optim::{OptimConfig, Optimizer};
use crate::param::OptimizerFamily;
use crate::param::ParamKind;
use crate::rcc::{CurvatureEstimate, Metric, MetricId, Record, StepSchedule};
use crate::rng::{self, stream};
use crate::train::{StepHook, StepOutput};
use crate::{Error, Result};

pub mod curvature;
pub mod lanczos;
pub mod runner;
pub mod uv;

use curvature::{Curvature, Part};
use lanczos::{hutchinson, lanczos, slq, Density, LanczosConfig, LanczosResult};

/// The metrics of the rows (see the module docs), as [`Metric`]s.
pub mod metric {
    use crate::rcc::{CurvatureEstimate, Metric};
    pub const SHARPNESS: Metric = Metric::Curvature(CurvatureEstimate::Sharpness);
    pub const SHARPNESS_GN: Metric = Metric::Curvature(CurvatureEstimate::SharpnessGn);
    pub const ETA_SHARPNESS: Metric = Metric::Curvature(CurvatureEstimate::EtaSharpness);
    pub const ETA_SHARPNESS_GN: Metric = Metric::Curvature(CurvatureEstimate::EtaSharpnessGn);
    pub const SHARPNESS_PRECOND: Metric = Metric::Curvature(CurvatureEstimate::SharpnessPrecond);
    pub const SHARPNESS_LAYER: Metric = Metric::Curvature(CurvatureEstimate::SharpnessLayer);
    pub const TRACE: Metric = Metric::Trace;
    pub const TRACE_STDERR: Metric = Metric::TraceStderr;
    pub const HESSIAN_LOSS: Metric = Metric::HessianLoss;
    /// The residual row of the estimate `c` (`{c}_residual`).
    pub fn residual(c: CurvatureEstimate) -> Metric {
        Metric::Residual(c)
    }
    /// The `i`-th largest eigenvalue (`i >= 2`; the first is [`SHARPNESS`]).
    pub fn eigenvalue(i: usize) -> Metric {
        Metric::Curvature(CurvatureEstimate::Eigenvalue(i as u32))
    }
}

/// The layer name of model-level rows.
pub const MODEL: &str = "model";

/// Stochastic Lanczos quadrature settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DensityConfig {
    /// Start vectors.
    pub runs: usize,
    /// Lanczos steps per start vector (quadrature nodes).
    pub steps: usize,
}

/// What to measure (see the module docs).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SharpnessConfig {
    /// Top eigenvalues, iterations, tolerance and residuals of every Lanczos run.
    pub lanczos: LanczosConfig,
    /// Also the Gauss-Newton part (`sharpness_gn`).
    pub gauss_newton: bool,
    /// Also every weight matrix's diagonal block (`sharpness_layer`).
    pub layers: bool,
    /// Hutchinson probes for the trace (0: no trace).
    pub trace_samples: usize,
    /// The spectral density by SLQ (not a row; kept by [`SharpnessHook::densities`]).
    pub density: Option<DensityConfig>,
    /// Examples (MLP) or sequences (GPT) in the curvature batch; `None`: 1024 examples of the
    /// MLP, 8 sequences of the GPT.
    pub batch_size: Option<usize>,
}

impl Default for SharpnessConfig {
    fn default() -> Self {
        SharpnessConfig { lanczos: LanczosConfig::default(), gauss_newton: true, layers: false, trace_samples: 0, density: None, batch_size: None }
    }
}

impl SharpnessConfig {
    /// Checks ranges.
    pub fn validate(&self) -> Result<()> {
        self.lanczos.validate()?;
        if self.batch_size == Some(0) {
            return Err(Error::config("sharpness: batch_size must be >= 1"));
        }
        if let Some(d) = &self.density {
            if d.runs == 0 || d.steps == 0 {
                return Err(Error::config("sharpness: density runs and steps must be >= 1"));
            }
        }
        if self.trace_samples == 1 {
            return Err(Error::config("sharpness: trace_samples must be 0 (off) or >= 2 (for its standard error)"));
        }
        Ok(())
    }
}

/// Sharpness as optional metrics of a coordinate check ([`crate::rcc::runner::CoordCheck`]):
/// a [`SharpnessHook`] next to the RCC monitor, measuring at step 0 and every `every` steps,
/// its rows merged into the check's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SharpnessEvery {
    pub every: usize,
    #[serde(default)]
    pub config: SharpnessConfig,
}

impl SharpnessEvery {
    /// Checks ranges.
    pub fn validate(&self) -> Result<()> {
        if self.every == 0 {
            return Err(Error::config("sharpness: `every` must be >= 1 (steps between measurements)"));
        }
        self.config.validate()
    }

    /// The measured steps: 0, `every`, `2 every`, ...
    pub fn schedule(&self) -> StepSchedule {
        StepSchedule::EarlyThenSparse { dense_until: 0, every: self.every }
    }
}

/// The learning rates (and Adam's state) the measured quantities refer to.
#[derive(Debug, Default)]
pub struct Rates {
    /// SGD-like optimizers: each parameter's learning rate in the next step (indexed like
    /// [`Model::params`]).
    pub sgd: Option<Vec<f64>>,
    /// Adam-like optimizers: the inverse preconditioner per parameter, once it exists.
    pub adam: Option<Vec<Option<Tensor>>>,
}

impl Rates {
    /// The rates of step `t` (0-based: the next step after `t` steps) of `optim` with base
    /// rate `eta`; Adam's preconditioner from `optimizer`'s state if given.
    pub fn at(optim: &OptimConfig, eta: f64, model: &dyn Model, t: usize, optimizer: Option<&Optimizer>) -> Rates {
        match optim.kind.family() {
            OptimizerFamily::Sgd => Rates { sgd: Some(optim.param_lrs(eta, model.params(), t)), adam: None },
            OptimizerFamily::Adam => Rates { sgd: None, adam: optimizer.and_then(Optimizer::adam_preconditioner) },
        }
    }
}

/// What one measurement gives: rows `(layer, metric, value)` and the density if asked for.
#[derive(Debug, Default)]
pub struct Measurement {
    pub rows: Vec<(String, Metric, f64)>,
    pub density: Option<Density>,
}

impl Measurement {
    fn push(&mut self, layer: &str, metric: impl Into<Metric>, value: f64) {
        self.rows.push((layer.to_string(), metric.into(), value));
    }

    /// The value of one row (`None` if absent).
    pub fn get(&self, layer: &str, metric: impl Into<Metric>) -> Option<f64> {
        let metric = metric.into();
        self.rows.iter().find(|r| r.0 == layer && r.1 == metric).map(|r| r.2)
    }

    /// The rows as monitor [`Record`]s of step `step`.
    pub fn records(&self, step: usize) -> Vec<Record> {
        self.rows.iter().map(|(layer, metric, value)| Record { step, layer: layer.clone(), metric: (*metric).into(), value: *value }).collect()
    }
}

/// Whether every trainable parameter has the same learning rate (to 1e-12 relative).
fn uniform(rates: &[f64], curv: &Curvature) -> Option<f64> {
    let lrs: Vec<f64> = (0..curv.len()).map(|i| rates[curv.model_index(i)]).collect();
    let first = *lrs.first()?;
    lrs.iter().all(|r| (r - first).abs() <= 1e-12 * first.abs()).then_some(first)
}

/// Measures `model` on the batch `x` under `objective` (logits -> loss) as configured:
/// rows of the module docs' metrics. `seed` seeds every random vector. A non-finite loss
/// (a diverged model) gives the `hessian_loss` row only.
pub fn measure(model: &dyn Model, x: &Tensor, objective: &dyn Fn(&Tensor) -> Tensor, cfg: &SharpnessConfig, rates: &Rates, seed: u64) -> Result<Measurement> {
    cfg.validate()?;
    let curv = Curvature::new(model, x, objective)?;
    let mut out = Measurement::default();
    out.push(MODEL, Metric::HessianLoss, curv.loss);
    if !curv.loss.is_finite() {
        return Ok(out);
    }
    let all: Vec<usize> = (0..curv.len()).collect();
    let run = |part: Part, sel: Vec<usize>, precond: Option<&[Tensor]>, k: usize| -> Result<LanczosResult> {
        let op = curv.block(part, sel, precond)?;
        lanczos(&op, &LanczosConfig { k, ..cfg.lanczos.clone() }, seed)
    };
    let record = |out: &mut Measurement, layer: &str, c: CurvatureEstimate, r: &LanczosResult| {
        out.push(layer, c, r.top());
        out.push(layer, Metric::Residual(c), r.top_residual());
    };
    let h = run(Part::Hessian, all.clone(), None, cfg.lanczos.k)?;
    record(&mut out, MODEL, CurvatureEstimate::Sharpness, &h);
    for (i, p) in h.pairs.iter().enumerate().skip(1) {
        let c = CurvatureEstimate::Eigenvalue(i as u32 + 1);
        out.push(MODEL, c, p.value);
        out.push(MODEL, Metric::Residual(c), p.residual);
    }
    let g = cfg.gauss_newton.then(|| run(Part::GaussNewton, all.clone(), None, 1)).transpose()?;
    if let Some(g) = &g {
        record(&mut out, MODEL, CurvatureEstimate::SharpnessGn, g);
    }
    if let Some(lrs) = &rates.sgd {
        if lrs.len() != model.params().len() {
            return Err(Error::config(format!("sharpness: {} learning rates for {} parameters", lrs.len(), model.params().len())));
        }
        match uniform(lrs, &curv) {
            Some(lr) => {
                // eta lambda_max(H): the same Ritz pair, scaled
                out.push(MODEL, CurvatureEstimate::EtaSharpness, lr * h.top());
                out.push(MODEL, Metric::Residual(CurvatureEstimate::EtaSharpness), h.top_residual());
                if let Some(g) = &g {
                    out.push(MODEL, CurvatureEstimate::EtaSharpnessGn, lr * g.top());
                    out.push(MODEL, Metric::Residual(CurvatureEstimate::EtaSharpnessGn), g.top_residual());
                }
            }
            None => {
                let d: Vec<Tensor> = (0..curv.len()).map(|i| Tensor::from(lrs[curv.model_index(i)])).collect();
                record(&mut out, MODEL, CurvatureEstimate::EtaSharpness, &run(Part::Hessian, all.clone(), Some(&d), 1)?);
                if cfg.gauss_newton {
                    record(&mut out, MODEL, CurvatureEstimate::EtaSharpnessGn, &run(Part::GaussNewton, all.clone(), Some(&d), 1)?);
                }
            }
        }
    }
    if let Some(pinv) = &rates.adam {
        let d: Option<Vec<Tensor>> = (0..curv.len()).map(|i| pinv.get(curv.model_index(i)).and_then(|t| t.as_ref()).map(|t| t.shallow_clone())).collect();
        let d = d.ok_or_else(|| Error::config("sharpness: Adam's preconditioner lacks a trainable parameter"))?;
        record(&mut out, MODEL, CurvatureEstimate::SharpnessPrecond, &run(Part::Hessian, all.clone(), Some(&d), 1)?);
    }
    if cfg.layers {
        for i in 0..curv.len() {
            if model.params()[curv.model_index(i)].kind == ParamKind::Weight {
                let name = curv.name(i).to_string();
                record(&mut out, &name, CurvatureEstimate::SharpnessLayer, &run(Part::Hessian, vec![i], None, 1)?);
            }
        }
    }
    let whole = curv.block(Part::Hessian, all, None)?;
    if cfg.trace_samples > 0 {
        let t = hutchinson(&whole, cfg.trace_samples, seed)?;
        out.push(MODEL, Metric::Trace, t.value);
        out.push(MODEL, Metric::TraceStderr, t.stderr);
    }
    if let Some(d) = &cfg.density {
        out.density = Some(slq(&whole, d.runs, d.steps, seed)?);
    }
    Ok(out)
}

/// A fixed, seeded batch of `size` examples (at most the dataset) for curvature estimates
/// of an MLP: `(x: [B, d], y: [B])`, drawn from the stream `(seed, CURVATURE + 3)`.
pub fn mlp_batch(train: &Dataset, size: usize, seed: u64) -> (Tensor, Tensor) {
    train.sample(size, &mut rng::rng(seed, stream::CURVATURE + 3))
}

/// A fixed, seeded batch of `size` training windows for curvature estimates of the GPT:
/// `(x: [B, T], y: [B*T])`.
pub fn gpt_batch(tokens: &Tensor, seq_len: i64, size: usize, seed: u64) -> (Tensor, Tensor) {
    crate::data::text::sample_windows(tokens, seq_len, size, &mut rng::rng(seed, stream::CURVATURE + 3))
}

/// Sharpness measurements at scheduled steps of a training run, as a [`StepHook`] (step 0,
/// the initialisation, is always measured). Produces the RCC monitor's [`Record`] rows; to
/// run both, pass `Hooks(vec![&mut monitor, &mut sharpness])`. Needs no gradients from the
/// step (plain SGD stays fused) and changes nothing in the model.
pub struct SharpnessHook {
    pub cfg: SharpnessConfig,
    pub schedule: StepSchedule,
    x: Tensor,
    y: Tensor,
    loss: Loss,
    optim: OptimConfig,
    eta: f64,
    seed: u64,
    /// Everything measured so far.
    pub records: Vec<Record>,
    /// SLQ densities by step (with [`SharpnessConfig::density`]).
    pub densities: Vec<(usize, Density)>,
}

impl SharpnessHook {
    /// Measures `loss` on the batch `(x, y)` (`y` as [`Loss::compute`] takes it); the learning
    /// rates of the `eta_` metrics come from `optim` and `eta` as the optimizer's.
    #[allow(clippy::too_many_arguments)]
    pub fn new(cfg: SharpnessConfig, schedule: StepSchedule, x: Tensor, y: Tensor, loss: Loss, optim: OptimConfig, eta: f64, seed: u64) -> Result<Self> {
        cfg.validate()?;
        Ok(SharpnessHook { cfg, schedule, x, y, loss, optim, eta, seed, records: vec![], densities: vec![] })
    }

    /// For a run of any kind ([`crate::train::Trainer`]): a fixed batch of its training data
    /// ([`crate::train::Batches::curvature_batch`]), its loss, optimizer (with the run's
    /// schedule) and seed.
    pub fn for_trainer<C: crate::train::RunConfig>(t: &crate::train::Trainer<C>, cfg: SharpnessConfig, schedule: StepSchedule) -> Result<Self> {
        use crate::train::Batches;
        let s = t.settings();
        let (x, y) = t.data.curvature_batch(cfg.batch_size, s.seed);
        Self::new(cfg, schedule, x, y, s.loss, s.optim.clone(), s.lr, s.seed)
    }

    /// Measures `model` after `step` steps now (whatever the schedule).
    pub fn measure(&mut self, step: usize, model: &dyn Model, optimizer: Option<&Optimizer>) -> Result<()> {
        let rates = Rates::at(&self.optim, self.eta, model, step, optimizer);
        let (loss, y) = (self.loss, &self.y);
        // in the parameters' kind (an f64 model measures in f64)
        let kind = model.params().first().map_or(Kind::Float, |p| p.tensor.kind());
        let x = if self.x.is_floating_point() { self.x.to_kind(kind) } else { self.x.shallow_clone() };
        let m = measure(model, &x, &|f: &Tensor| loss.compute(f, y), &self.cfg, &rates, self.seed)?;
        self.records.extend(m.records(step));
        if let Some(d) = m.density {
            self.densities.push((step, d));
        }
        Ok(())
    }

    /// All records of one layer and metric, as `(step, value)`.
    pub fn series(&self, layer: &str, metric: impl Into<MetricId>) -> Vec<(usize, f64)> {
        let metric = metric.into();
        self.records.iter().filter(|r| r.layer == layer && r.metric == metric).map(|r| (r.step, r.value)).collect()
    }
}

impl StepHook for SharpnessHook {
    fn start(&mut self, model: &dyn Model) -> Result<()> {
        self.measure(0, model, None)
    }

    fn after_step(&mut self, step: usize, model: &dyn Model, out: &StepOutput) -> Result<()> {
        if self.schedule.contains(step) {
            self.measure(step, model, out.optimizer)?;
        }
        Ok(())
    }

    fn needs_gradients(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests;
