//! Predicted width exponents of the refined coordinate check (RCC), derived step by step with
//! the heuristic Tensor-Program scaling rules of appendix C.1, and the learning regimes of
//! Definition 1.
//!
//! This is a small *derivation engine*, not a table of answers: it reads per-layer init and
//! learning-rate exponents off a [`Parameterization`] and pushes width exponents (`v =
//! Theta(n^e)` in RMS norm) through the forward and backward passes of an MLP with `L+1`
//! weight layers for a few SGD or Adam steps. Every exponent the paper states (Prop. 2 and 4,
//! Fig. 4 / E.1, E.2 / E.3, Remarks C.14 / C.15, section F.7, "Random feature models") comes
//! out of these rules; the tests at the bottom check each against the line it is stated on.
//!
//! # The rules
//! - **Parameterization** (any, built-in or user-defined): the init std `sigma_l ~ n^{-b_l}`,
//!   learning rate `eta_l ~ n^{-c_l}` (including the global `n^{-alpha}`) and forward
//!   multiplier of each layer are evaluated at widths `2^20` and `2^40` (fixed `d_in`,
//!   `d_out`) and their log-ratio is rounded to the grid `1/240` (which holds halves,
//!   quarters, thirds, fifths; the proposed output init only reaches its exponent `-1`
//!   asymptotically). Multipliers are folded in by abc-equivalence: a weight `a W` has
//!   effective init `a sigma`, SGD rate `a^2 eta` and Adam rate `a eta`. Zero init is
//!   `b = +inf` (exponent `-inf`).
//! - **Sums over the width** (appendix C.1, "Predicting scaling exponents"): an inner product
//!   of two width-sized vectors accumulates `n` (LLN-like) when the vectors are correlated and
//!   `n^{1/2}` (CLT-like) when they are independent. To know which, every width-sized vector
//!   carries two components ([`Tagged`]): the part aligned with the readout's initial weights
//!   `W_0^{L+1}` (created by backpropagating through `W_0^{L+1}`; `r`) and the part correlated
//!   with the activations (`x`; activations themselves, and everything backpropagated through
//!   last-layer *updates* `Delta W^{L+1} ~ chi x^T`). Same-tag pairs are LLN-like, all others
//!   CLT-like. So:
//!   - effective updates `Delta W^l x^{l-1} = sum_s c_s g_s (x_s . x)` accumulate `n` (the
//!     activations at two times are correlated; `p_{1:L+1} = 1`, section 3.1), except in the
//!     input layer whose fan-in is fixed;
//!   - propagating updates `W_0^l Delta x^{l-1}` are CLT-like in hidden layers
//!     (`q_{1:L} = 1/2`), and in the readout LLN-like for the part of `Delta x^L` that the
//!     backward pass through `W_0^{L+1}` created (`q_{L+1} = 1`, section 3.1, F.7);
//!   - in the backward pass `(W_0^l)^T g` is CLT-like and `(Delta W^l)^T g = sum_s c_s x_s
//!     (g_s . g)` is LLN-like only if the gradient `g` is aligned with the gradients `g_s`
//!     that built the update.
//! - **Backward pass** (C.1, "Backward pass"): `df/dx^L = W^{L+1}_t = W_0^{L+1} + Delta
//!   W^{L+1}_t`; in the first step only `W_0^{L+1}` exists, afterwards the larger of the two
//!   dominates. `phi'` of ReLU is `Theta(1)` and keeps the tags.
//! - **Updates**: SGD `Delta W^l += -eta_l chi (df/dh^l) (x^{l-1})^T` (entries
//!   `-c_l + e(chi) + e(df/dh^l) + e(x^{l-1})`); Adam normalises the gradient (C.1, "Adam":
//!   sign-like, entries `eta_l`, directions of the normalised `g` and `x`), so its update size
//!   does not depend on the gradient scale. A layer with an exactly zero gradient (zero
//!   last-layer init, first step) is not updated by either.
//! - **Loss**: `chi = dl/df`. Cross-entropy: `sigma(f) - y` stays `Theta(1)` however large
//!   the logits (the softmax saturates; C.1, section 4). MSE: `chi = f - y`, so `e(chi) =
//!   max(0, e(f))` and logit growth feeds back into the next update. MSE on the softmax: the
//!   softmax Jacobian vanishes (exponentially, i.e. faster than any power) once logits
//!   diverge (section F.4), so `e(chi) = -inf` then.
//! - **Nonlinearity**: `Delta x = phi'(h) Delta h` keeps the tags; in addition ReLU's kink
//!   gives `Delta x` a mean, i.e. an activation-correlated part of size `d^2 / h` (`d =
//!   ||Delta h|| <= h = ||h||`) or `d` once the update dominates the pre-activation.
//! - **Random features**: only the readout trains (C.1, "Random feature models").
//!
//! The first step uses the initial weights only ([`StepPhase::First`]); after the second step
//! the accumulated last-layer update enters the backward pass ([`StepPhase::Later`], the
//! infinite-width prediction). Under standard last-layer initialisation at realistic widths
//! the measured exponents often stay the first-step ones for many steps (appendix E.1, E.2).
//!
//! # Regimes
//! [`classify`] is Definition 1 on (measured or predicted) exponents; [`predicted_regime`]
//! runs the engine for [`REGIME_HORIZON`] steps and classifies what it predicts (Prop. 2 for
//! SGD in SP, Remark C.14 for 2-layer nets, Remark C.15 for Adam).
//!
//! # Known disagreements with the paper's text
//! - C.1 ("Concrete examples") states `W_0^{L+1} delta x^L = Theta(1)` for SGD in SP at
//!   `alpha = 1/2`; the engine gives `n^{1/2}` (readout `propagating`), following the
//!   alignment exponent `q_{L+1} = 1` of section 3.1 and the identical situation in F.7 and
//!   Remark C.15. The logit update is `n^{1/2}` either way.
//! - C.1 ("Backward pass") states `df/dx^{L-k}_1 = Theta(n^{2k-1})` for `eta = Theta(1)`; the
//!   rules give `Theta(1)` for `k = 1` (the hidden update built from the `W_0^{L+1}` gradient
//!   is uncorrelated with the new, update-dominated gradient). Both are catastrophic; the
//!   engine's value reproduces the TP prediction of E.2 (input layer width-independent).
//! - Remark C.14 gives the 2-layer controlled-divergence regime as `0 <= alpha < 1/2`,
//!   Remark 3 as `0 <= alpha < 1`; the rules give `0 <= alpha < 1` (logits grow as
//!   `n^{1-alpha}` for every `alpha < 1`).
use serde::{Deserialize, Serialize};

use crate::rcc::{Metric, MetricId, Since};
use crate::fit::PowerLaw;
use crate::loss::LossKind;
use crate::param::{Fans, OptimizerFamily, ParamKind, Parameterization, Role};
use crate::{Error, Result};

const NEG: f64 = f64::NEG_INFINITY;
/// Exponents are kept on this grid (`1/GRID`) so that ties compare exactly.
const GRID: f64 = 240.0;
/// Exponents beyond this are "infinitely divergent"; capping avoids `inf - inf`.
const CAP: f64 = 1e9;

/// Snaps an exponent to the grid (and `-0` to `0`).
fn q(e: f64) -> f64 {
    if e.is_finite() {
        ((e * GRID).round() / GRID).min(CAP) + 0.0
    } else if e > 0.0 {
        CAP
    } else {
        NEG
    }
}

fn maxf(a: f64, b: f64) -> f64 {
    a.max(b)
}

/// Which step the prediction is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepPhase {
    /// After the first update (the backward pass saw only the initial weights).
    First,
    /// After the second update, once the first update enters the backward pass: the
    /// infinite-width (Tensor Program) prediction of the paper's appendix E.
    Later,
}

impl StepPhase {
    /// Number of updates the phase stands for.
    pub fn steps(self) -> usize {
        match self {
            StepPhase::First => 1,
            StepPhase::Later => 2,
        }
    }
}

/// The training setup a prediction is for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Setting {
    /// Init, multiplier and learning-rate rules, including the global exponent `alpha`.
    pub param: Parameterization,
    pub optimizer: OptimizerFamily,
    pub loss: LossKind,
    /// Number of weight layers `L+1` (>= 2).
    pub depth: usize,
    /// Only the last layer trains.
    pub random_features: bool,
    pub step: StepPhase,
}

impl Setting {
    /// A fully trained MLP, predicted after the second step.
    pub fn new(param: Parameterization, optimizer: OptimizerFamily, loss: LossKind, depth: usize) -> Self {
        Setting { param, optimizer, loss, depth, random_features: false, step: StepPhase::Later }
    }
}

/// Width exponents of one weight layer's rules (effective weight, multiplier folded in).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerScaling {
    pub role: Role,
    /// Exponent of the effective init std (`-b_l`; `-inf` for zero init).
    pub init: f64,
    /// Exponent of the effective learning rate (`-c_l`, global `n^{-alpha}` included).
    pub lr: f64,
    /// Exponent of the forward multiplier (raw gradients scale with it).
    pub multiplier: f64,
}

/// Reads the width exponents of every weight layer of a `depth`-layer MLP off `p`, between
/// widths `2^20` and `2^40` (input dimension 784, output dimension 10).
pub fn layer_scalings(p: &Parameterization, depth: usize, fam: OptimizerFamily) -> Vec<LayerScaling> {
    let (d_in, d_out) = (784i64, 10i64);
    let (n1, n2) = (1i64 << 20, 1i64 << 40);
    let ln = ((n2 as f64) / (n1 as f64)).ln();
    let e = |a: f64, b: f64| if a == 0.0 || b == 0.0 { NEG } else { q((b.abs() / a.abs()).ln() / ln) };
    (0..depth)
        .map(|l| {
            let role = if l == 0 {
                Role::InputLike
            } else if l + 1 == depth {
                Role::OutputLike
            } else {
                Role::HiddenLike
            };
            let r = |n: i64| p.resolve(role, ParamKind::Weight, Fans::mlp(role, d_in, n, d_out), fam);
            let (r1, r2) = (r(n1), r(n2));
            let mult = e(r1.multiplier, r2.multiplier);
            let lr = e(r1.lr_scale, r2.lr_scale);
            LayerScaling {
                role,
                init: e(r1.init_std * r1.multiplier, r2.init_std * r2.multiplier),
                lr: match fam {
                    OptimizerFamily::Sgd => q(lr + 2.0 * mult),
                    OptimizerFamily::Adam => q(lr + mult),
                },
                multiplier: mult,
            }
        })
        .collect()
}

/// Width exponents of a width-sized vector, split by what it is correlated with (see the
/// module docs): `r` = aligned with the readout's initial weights `W_0^{L+1}` (what
/// backpropagation through `W_0^{L+1}` creates), `x` = correlated with the activations.
/// `-inf` marks an absent component. For fixed-dimension vectors (logits) only `x` is used.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tagged {
    pub r: f64,
    pub x: f64,
}

impl Tagged {
    /// The zero vector.
    pub const ZERO: Tagged = Tagged { r: NEG, x: NEG };
    fn x(e: f64) -> Self {
        Tagged { r: NEG, x: q(e) }
    }
    fn r(e: f64) -> Self {
        Tagged { r: q(e), x: NEG }
    }
    /// RMS exponent of the whole vector.
    pub fn size(&self) -> f64 {
        maxf(self.r, self.x)
    }
    /// Times `n^e`.
    fn shift(self, e: f64) -> Self {
        if e == NEG {
            return Tagged::ZERO;
        }
        Tagged { r: q(self.r + e), x: q(self.x + e) }
    }
    /// The sum of two vectors (no cancellation between width exponents).
    fn plus(self, o: Tagged) -> Self {
        Tagged { r: maxf(self.r, o.r), x: maxf(self.x, o.x) }
    }
    /// Normalised to RMS `Theta(1)` (Adam's sign-like update direction).
    fn normalized(self) -> Self {
        let s = self.size();
        if s == NEG {
            Tagged::ZERO
        } else {
            self.shift(-s)
        }
    }
}

/// Exponent of the inner product of two width-sized vectors: LLN-like (`n`) over the
/// components correlated with each other, CLT-like (`n^{1/2}`) otherwise.
fn dot(a: Tagged, b: Tagged) -> f64 {
    let lln = maxf(1.0 + a.r + b.r, 1.0 + a.x + b.x);
    q(maxf(lln, 0.5 + a.size() + b.size()))
}

/// `Delta x = phi(h + Delta h) - phi(h)` for ReLU: the tags of `Delta h` plus the mean the
/// kink adds, `d^2/h` for `d <= h`, `d` beyond.
fn relu_update(dh: Tagged, h: f64) -> Tagged {
    let d = dh.size();
    if d == NEG {
        return Tagged::ZERO;
    }
    let mean = if d >= h { d } else { 2.0 * d - h };
    dh.plus(Tagged::x(mean))
}

/// One rank-one summand `coef * left * right^T` of an accumulated weight update (one step).
#[derive(Clone, Copy, Debug)]
struct Term {
    coef: f64,
    /// Output side: the backpropagated gradient (hidden and input layers) or the unit
    /// fixed-dimension `chi` direction (readout, `Tagged::x(0)`).
    left: Tagged,
    /// Input side: the incoming activations; `None` for the data (fixed dimension).
    right: Option<Tagged>,
}

impl Term {
    /// `(coef left right^T) v`.
    fn apply(&self, v: Option<Tagged>) -> Tagged {
        let s = match (self.right, v) {
            (Some(r), Some(v)) => dot(r, v),
            // data . data: a fixed-dimensional inner product
            _ => 0.0,
        };
        self.left.shift(q(self.coef + s))
    }
    /// RMS of the entries.
    fn entries(&self) -> f64 {
        q(self.coef + self.left.size() + self.right.map_or(0.0, |r| r.size()))
    }
}

/// Predicted width exponents of every RCC term; `f64::NEG_INFINITY` marks a quantity that is
/// exactly zero. Per-layer vectors are indexed by the 0-based weight layer `l` (monitor name
/// `layers.{l}.weight`): index 0 is the input layer, `depth - 1` the readout, whose "output"
/// is the logits.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Exponents {
    pub depth: usize,
    /// Updates taken.
    pub steps: usize,
    /// The rules the prediction was derived from.
    pub layers: Vec<LayerScaling>,
    /// `||Delta W_t x_t||_RMS` (effective update).
    pub effective: Vec<f64>,
    /// `||W_0 Delta x_t||_RMS` (propagating update; `-inf` for the input layer).
    pub propagating: Vec<f64>,
    /// `||Delta(W_t x_t)||_RMS`, the larger of the two.
    pub act_update: Vec<f64>,
    /// `||W_t x_t||_RMS`, the layer's output (pre-activation or logits).
    pub act: Vec<f64>,
    /// `||x_t||_RMS`, the layer's input (0 for the data).
    pub input: Vec<f64>,
    /// `||Delta x_t||_RMS`, the layer's input update (`-inf` for the data).
    pub input_update: Vec<f64>,
    /// `||Delta W_t||_RMS` (entry size of the accumulated update).
    pub weight_update: Vec<f64>,
    /// `||Delta W_t||_{RMS -> RMS}` (low-rank updates: `fan_in` times the entry size).
    pub weight_update_op: Vec<f64>,
    /// One-step versions (`delta`, the last update only): `delta W_t x_t`,
    /// `W_{t-1} delta x_t`, `delta(W_t x_t)`, `delta x_t`, `delta W_t` (RMS and operator norm).
    pub delta_effective: Vec<f64>,
    pub delta_propagating: Vec<f64>,
    pub delta_act_update: Vec<f64>,
    pub delta_input_update: Vec<f64>,
    pub delta_weight_update: Vec<f64>,
    pub delta_weight_update_op: Vec<f64>,
    /// RMS of the raw parameter gradient of the last update (computed at `W_{t-1}`);
    /// `-inf` for frozen layers.
    pub grad: Vec<f64>,
    /// `df/dh` of the layer's output in the last backward pass (`-inf` for the readout,
    /// whose output gradient is `chi` itself).
    pub backward: Vec<f64>,
    /// `||f_t||_RMS`.
    pub logits: f64,
    /// `||f_t - f_0||_RMS`.
    pub logit_update: f64,
    /// `||chi_t||_RMS = ||dl/df (f_t)||_RMS`.
    pub chi: f64,
    /// Largest exponent of the hidden activations `x^l_s`, `l in [L]`, over all `s <= t`.
    pub max_activation: f64,
    /// Largest exponent of a trained layer's gradient over all updates so far.
    pub max_gradient: f64,
}

impl Exponents {
    /// The prediction for a monitor metric of a layer named `layers.{l}.weight` (0-based) or
    /// of `model` (`logits`, `logit_update`, `chi`); `None` for metrics the engine does not
    /// predict. Per layer: `effective`, `propagating`, `act_update`, `act`, `input`,
    /// `input_update`, `weight_update_rms`, `weight_update_op`, `grad`, and the one-step
    /// ([`Since::Previous`]) versions of the update metrics.
    pub fn get(&self, layer: &str, metric: impl Into<MetricId>) -> Option<f64> {
        let MetricId { metric, since } = metric.into();
        if layer == "model" {
            return match (since, metric) {
                (Since::Init, Metric::Logits) => Some(self.logits),
                (Since::Init, Metric::LogitUpdate) => Some(self.logit_update),
                (Since::Init, Metric::Chi) => Some(self.chi),
                _ => None,
            };
        }
        let l: usize = layer.strip_prefix("layers.")?.strip_suffix(".weight")?.parse().ok()?;
        let v = match (since, metric) {
            (Since::Init, Metric::Effective) => &self.effective,
            (Since::Init, Metric::Propagating) => &self.propagating,
            (Since::Init, Metric::ActUpdate) => &self.act_update,
            (Since::Init, Metric::Act) => &self.act,
            (Since::Init, Metric::Input) => &self.input,
            (Since::Init, Metric::InputUpdate) => &self.input_update,
            (Since::Init, Metric::WeightUpdateRms) => &self.weight_update,
            (Since::Init, Metric::WeightUpdateOp) => &self.weight_update_op,
            (Since::Init, Metric::Grad) => &self.grad,
            (Since::Previous, Metric::Effective) => &self.delta_effective,
            (Since::Previous, Metric::Propagating) => &self.delta_propagating,
            (Since::Previous, Metric::ActUpdate) => &self.delta_act_update,
            (Since::Previous, Metric::InputUpdate) => &self.delta_input_update,
            (Since::Previous, Metric::WeightUpdateRms) => &self.delta_weight_update,
            (Since::Previous, Metric::WeightUpdateOp) => &self.delta_weight_update_op,
            _ => return None,
        };
        v.get(l).copied()
    }

    /// A plain-text table of the main exponents per layer (for notebooks and the CLI).
    pub fn table(&self) -> String {
        use std::fmt::Write;
        let f = |e: f64| if e == NEG { "0 (exact)".to_string() } else { format!("{e:+.3}") };
        let mut s = format!(
            "{:<16} {:<12} {:>10} {:>12} {:>11} {:>10} {:>10}\n",
            "layer", "role", "effective", "propagating", "act_update", "act", "grad"
        );
        for l in 0..self.depth {
            let _ = writeln!(
                s,
                "{:<16} {:<12} {:>10} {:>12} {:>11} {:>10} {:>10}",
                format!("layers.{l}.weight"),
                self.layers[l].role.to_string(),
                f(self.effective[l]),
                f(self.propagating[l]),
                f(self.act_update[l]),
                f(self.act[l]),
                f(self.grad[l])
            );
        }
        let _ = writeln!(s, "logits {}, logit update {}, chi {}", f(self.logits), f(self.logit_update), f(self.chi));
        s
    }
}

/// Exponent of `chi = dl/df` at logits of exponent `f` (see the module docs).
fn chi_exponent(loss: LossKind, f: f64) -> f64 {
    match loss {
        LossKind::Ce => 0.0,
        LossKind::Mse => maxf(0.0, f),
        LossKind::MseSoftmax => {
            if f > 0.0 {
                NEG
            } else {
                0.0
            }
        }
    }
}

fn check(setting: &Setting) -> Result<()> {
    if setting.depth < 2 {
        return Err(Error::config(format!(
            "prediction needs depth >= 2 (L + 1 weight layers), got {}",
            setting.depth
        )));
    }
    setting.param.validate()
}

/// Runs the scaling recursion for `setting` and returns the exponents at its step.
pub fn predict(setting: &Setting) -> Result<Exponents> {
    predict_after(setting, setting.step.steps())
}

/// The exponents after `steps` updates (`steps = 0`: at initialisation).
pub fn predict_after(setting: &Setting, steps: usize) -> Result<Exponents> {
    check(setting)?;
    let depth = setting.depth;
    let out = depth - 1;
    let lay = layer_scalings(&setting.param, depth, setting.optimizer);
    let std = |l: usize| lay[l].init;
    let trains = |l: usize| !setting.random_features || l == out;
    let fan = |l: usize| if l == 0 { 0.0 } else { 1.0 };

    // W_0 applied to a width-sized (l >= 1) input vector: CLT-like in hidden layers, and in
    // the readout LLN-like for the part aligned with W_0^{L+1}.
    let w0 = |l: usize, v: Tagged| -> Tagged {
        if l == out {
            Tagged::x(maxf(1.0 + std(l) + v.r, 0.5 + std(l) + v.size()))
        } else {
            v.shift(0.5 + std(l))
        }
    };

    // initialisation: h0[l] = exponent of W_0^l x_0 (l's output)
    let mut h0 = vec![0.0; depth];
    h0[0] = std(0);
    for l in 1..depth {
        h0[l] = q(0.5 + std(l) + h0[l - 1]);
    }
    let f0 = h0[out];
    // state at the current step t: inputs x_t of every layer (index 0 unused: the data),
    // their updates since init, and the current output sizes
    let mut x: Vec<Tagged> = (0..depth).map(|l| if l == 0 { Tagged::ZERO } else { Tagged::x(h0[l - 1]) }).collect();
    let mut dx = vec![Tagged::ZERO; depth];
    let mut h_now = h0.clone();
    let mut terms: Vec<Vec<Term>> = vec![vec![]; depth];
    let mut f = f0;

    let mut res = Exponents {
        depth,
        steps,
        layers: lay.clone(),
        effective: vec![NEG; depth],
        propagating: vec![NEG; depth],
        act_update: vec![NEG; depth],
        act: h0.clone(),
        input: x.iter().enumerate().map(|(l, v)| if l == 0 { 0.0 } else { v.size() }).collect(),
        input_update: vec![NEG; depth],
        weight_update: vec![NEG; depth],
        weight_update_op: vec![NEG; depth],
        delta_effective: vec![NEG; depth],
        delta_propagating: vec![NEG; depth],
        delta_act_update: vec![NEG; depth],
        delta_input_update: vec![NEG; depth],
        delta_weight_update: vec![NEG; depth],
        delta_weight_update_op: vec![NEG; depth],
        grad: vec![NEG; depth],
        backward: vec![NEG; depth],
        logits: f0,
        logit_update: NEG,
        chi: chi_exponent(setting.loss, f0),
        max_activation: h0[..out].iter().cloned().fold(NEG, maxf),
        max_gradient: NEG,
    };

    for _ in 0..steps {
        let chi = chi_exponent(setting.loss, f);
        // ---- backward pass at W_{t-1}: gh[l] = df/dh of layer l's output (width-sized) ----
        let mut gh = vec![Tagged::ZERO; depth];
        // df/dx^L = (W_0^{L+1} + Delta W^{L+1})^T chi_hat
        let mut gx = Tagged::r(std(out));
        for t in &terms[out] {
            gx = gx.plus(t.right.expect("readout input is width-sized").shift(t.coef));
        }
        for l in (0..out).rev() {
            gh[l] = gx; // phi' = Theta(1) keeps the tags
            if l > 0 {
                let mut next = gh[l].shift(0.5 + std(l));
                for t in &terms[l] {
                    let r = t.right.expect("hidden input is width-sized");
                    next = next.plus(r.shift(q(t.coef + dot(t.left, gh[l]))));
                }
                gx = next;
            }
        }
        // ---- updates ----
        let mut last: Vec<Option<Term>> = vec![None; depth];
        for l in 0..depth {
            let input = if l == 0 { None } else { Some(x[l]) };
            // output side of the gradient: df/dh (hidden, input layer) or chi's unit direction
            let left = if l == out { Tagged::x(0.0) } else { gh[l] };
            let g = q(chi + left.size() + input.map_or(0.0, |v| v.size()));
            res.backward[l] = if l == out { NEG } else { gh[l].size() };
            if !trains(l) {
                res.grad[l] = NEG;
                continue;
            }
            res.grad[l] = q(lay[l].multiplier + g);
            res.max_gradient = maxf(res.max_gradient, res.grad[l]);
            if g == NEG {
                continue; // zero gradient: neither SGD nor Adam moves
            }
            let term = match setting.optimizer {
                OptimizerFamily::Sgd => Term { coef: q(lay[l].lr + chi), left, right: input },
                OptimizerFamily::Adam => {
                    Term { coef: lay[l].lr, left: left.normalized(), right: input.map(Tagged::normalized) }
                }
            };
            if term.coef != NEG {
                last[l] = Some(term);
            }
        }
        // ---- forward pass at W_t ----
        let mut new_x = x.clone();
        let mut new_dx = dx.clone();
        let mut ddx = vec![Tagged::ZERO; depth]; // delta x_t of each layer's input
        for l in 0..depth {
            let (xi, dxi, ddxi) = if l == 0 { (None, Tagged::ZERO, Tagged::ZERO) } else { (Some(new_x[l]), new_dx[l], ddx[l]) };
            // W_{t-1} delta x (before adding this step's term)
            let mut dprop = if l == 0 { Tagged::ZERO } else { w0(l, ddxi) };
            for t in &terms[l] {
                if l > 0 {
                    dprop = dprop.plus(t.apply(Some(ddxi)));
                }
            }
            if let Some(t) = last[l] {
                terms[l].push(t);
            }
            let mut eff = Tagged::ZERO;
            let mut dw = NEG;
            for t in &terms[l] {
                eff = eff.plus(t.apply(xi));
                dw = maxf(dw, t.entries());
            }
            let prop = if l == 0 { Tagged::ZERO } else { w0(l, dxi) };
            let dh = eff.plus(prop);
            let deff = last[l].map_or(Tagged::ZERO, |t| t.apply(xi));
            let ddh = deff.plus(dprop);

            res.effective[l] = eff.size();
            res.propagating[l] = prop.size();
            res.act_update[l] = dh.size();
            res.act[l] = maxf(h0[l], dh.size());
            res.input[l] = xi.map_or(0.0, |v| v.size());
            res.input_update[l] = if l == 0 { NEG } else { dxi.size() };
            res.weight_update[l] = dw;
            res.weight_update_op[l] = q(fan(l) + dw);
            res.delta_effective[l] = deff.size();
            res.delta_propagating[l] = if l == 0 { NEG } else { dprop.size() };
            res.delta_act_update[l] = ddh.size();
            res.delta_input_update[l] = if l == 0 { NEG } else { ddxi.size() };
            let dlast = last[l].map_or(NEG, |t| t.entries());
            res.delta_weight_update[l] = dlast;
            res.delta_weight_update_op[l] = q(fan(l) + dlast);

            if l < out {
                // the next layer's input: x_t = x_0 + Delta x_t through the ReLU
                let d = relu_update(dh, h0[l]);
                new_dx[l + 1] = d;
                new_x[l + 1] = Tagged { r: d.r, x: maxf(h0[l], d.x) };
                ddx[l + 1] = relu_update(ddh, h_now[l]);
                h_now[l] = maxf(h0[l], dh.size());
            } else {
                f = maxf(f0, dh.size());
                res.logit_update = dh.size();
                h_now[l] = f;
            }
        }
        x = new_x;
        dx = new_dx;
        res.logits = f;
        res.chi = chi_exponent(setting.loss, f);
        res.max_activation = (1..depth).map(|l| x[l].size()).fold(res.max_activation, maxf);
    }
    Ok(res)
}

/// Learning regimes of Definition 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Regime {
    /// Logits `O(1)`, activations `Theta(1)` (and gradients bounded).
    Stable,
    /// Logits diverge, activations and gradients stay bounded.
    ControlledDivergence,
    /// Activations (or, under SGD, gradients) diverge.
    Catastrophic,
}

impl std::fmt::Display for Regime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Regime::Stable => "stable",
            Regime::ControlledDivergence => "controlled divergence",
            Regime::Catastrophic => "catastrophic",
        })
    }
}

/// Definition 1 from (measured or predicted) width exponents of the logits, the hidden
/// activations and the gradients: activations or gradients growing faster than `n^tol` is
/// catastrophic; logits alone growing is controlled divergence; otherwise stable.
pub fn classify(logit_exp: f64, activation_exp: f64, gradient_exp: f64, tol: f64) -> Regime {
    if activation_exp > tol || gradient_exp > tol {
        Regime::Catastrophic
    } else if logit_exp > tol {
        Regime::ControlledDivergence
    } else {
        Regime::Stable
    }
}

/// Steps the regime prediction looks ahead: slow feedback (MSE with `alpha` just below 1
/// grows the logit exponent by `1 - alpha` per step) needs a long horizon to show.
pub const REGIME_HORIZON: usize = 64;

/// The regime the engine predicts: Definition 1 ([`classify`]) applied to the exponents after
/// [`REGIME_HORIZON`] steps, with activations and gradients tracked over all steps (a
/// transient blow-up counts). Under Adam the gradient scale is normalised away and does not
/// enter (only activations and logits decide, as in Definition 1); under SGD an exploding
/// gradient (e.g. `chi` under MSE, Prop. 2) is catastrophic.
pub fn predicted_regime(setting: &Setting) -> Result<Regime> {
    let e = predict_after(setting, REGIME_HORIZON)?;
    let grad = match setting.optimizer {
        OptimizerFamily::Sgd => e.max_gradient,
        OptimizerFamily::Adam => NEG,
    };
    Ok(classify(e.logits, e.max_activation, grad, 1e-9))
}

/// A measured exponent against a prediction, decided by the claim model of the report
/// ([`crate::claims::Expectation::judge`]): `holds` when the exponent's 95% interval lies inside
/// `predicted +- tol`, `deviates` when it lies outside, `inconclusive` otherwise. With
/// `tol = 1/4`, half the distance between the exponents of the half-integer lattice the
/// engine predicts for SP, NTP and muP, a claim holds only when its interval excludes the
/// neighbouring exponents `predicted +- 1/2` (as [`crate::claims::Claim::exponent`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub predicted: f64,
    pub measured: f64,
    /// 95% confidence interval of the measured exponent.
    pub ci_low: f64,
    pub ci_high: f64,
    pub verdict: crate::claims::Verdict,
    /// Why, in one sentence (`CI [-0.92, -0.61] lies outside [-0.25, +0.25], ...`).
    pub reason: String,
}

impl Verdict {
    /// The confidence interval as a pair.
    pub fn ci(&self) -> (f64, f64) {
        (self.ci_low, self.ci_high)
    }
}

/// Compares a fitted exponent with a prediction within `tol` (see [`Verdict`]).
pub fn verdict(predicted: f64, fit: &PowerLaw, tol: f64) -> Verdict {
    let expectation = crate::claims::Expectation::Near { value: predicted, tolerance: tol, alternatives: vec![] };
    let (verdict, reason) = expectation.judge(&crate::claims::Estimate::exponent(fit));
    Verdict { predicted, measured: fit.exponent, ci_low: fit.ci_low, ci_high: fit.ci_high, verdict, reason }
}

#[cfg(test)]
mod tests {
    use super::*;
    use LossKind::{Ce, Mse, MseSoftmax};
    use OptimizerFamily::{Adam, Sgd};
    use StepPhase::{First, Later};

    fn setting(p: Parameterization, opt: OptimizerFamily, loss: LossKind, depth: usize, step: StepPhase) -> Setting {
        Setting { param: p, optimizer: opt, loss, depth, random_features: false, step }
    }
    fn sp(alpha: f64) -> Parameterization {
        Parameterization::sp().with_alpha(alpha)
    }
    fn run(p: Parameterization, opt: OptimizerFamily, loss: LossKind, depth: usize, step: StepPhase) -> Exponents {
        predict(&setting(p, opt, loss, depth, step)).unwrap()
    }
    fn regime(p: Parameterization, opt: OptimizerFamily, loss: LossKind, depth: usize) -> Regime {
        predicted_regime(&setting(p, opt, loss, depth, Later)).unwrap()
    }
    const Z: f64 = f64::NEG_INFINITY;

    #[test]
    fn rules_are_read_off_the_parameterization() {
        let r = layer_scalings(&sp(0.5), 3, Sgd);
        assert_eq!(r.iter().map(|s| (s.init, s.lr)).collect::<Vec<_>>(), vec![(0.0, -0.5), (-0.5, -0.5), (-0.5, -0.5)]);
        let m = layer_scalings(&Parameterization::mup(), 3, Sgd);
        assert_eq!(m.iter().map(|s| (s.init, s.lr)).collect::<Vec<_>>(), vec![(0.0, 1.0), (-0.5, 0.0), (-1.0, -1.0)]);
        // multiplier form folds into the same effective rules (abc-equivalence)
        for fam in [Sgd, Adam] {
            let a = layer_scalings(&Parameterization::mup_mult(), 3, fam);
            let b = layer_scalings(&Parameterization::mup(), 3, fam);
            assert_eq!(a.iter().map(|s| (s.init, s.lr)).collect::<Vec<_>>(), b.iter().map(|s| (s.init, s.lr)).collect::<Vec<_>>());
        }
        // proposed output init (fan_in/sqrt(fan_out) + sqrt(fan_in))^-1 -> n^-1; zero init -> -inf
        assert_eq!(layer_scalings(&Parameterization::builtin("sp-proposed-init").unwrap(), 3, Sgd)[2].init, -1.0);
        assert_eq!(layer_scalings(&Parameterization::builtin("sp-llzero").unwrap(), 3, Sgd)[2].init, Z);
        // a user-defined rule with a third
        let mut p = sp(1.0 / 3.0);
        p.lr_sgd.hidden = crate::param::Scale::width_pow(1.0, 0.2);
        let r = layer_scalings(&p, 3, Sgd);
        assert!((r[1].lr - (0.2 - 1.0 / 3.0)).abs() < 1e-12, "{}", r[1].lr);
    }

    #[test]
    fn prop4_sgd_sp_alpha_half() {
        // Fig. 4 / E.1 (paper.txt l. 831): input n^-1, hidden n^0, output n^{1/2}; logits n^{1/2}
        for step in [First, Later] {
            let e = run(sp(0.5), Sgd, Ce, 3, step);
            assert_eq!(e.effective, vec![-1.0, 0.0, 0.5], "{step:?}");
            assert_eq!(e.logits, 0.5);
            assert_eq!(e.chi, 0.0);
            assert!(e.max_activation <= 0.0);
            // Prop. 2(b) (l. 121): gradients O(n^{-1/2}) in l in [L]
            assert_eq!(&e.grad[..2], &[-0.5, -0.5]);
            // readout: W_0^{L+1} Delta x^L is LLN-like (q_{L+1} = 1, l. 90), n^{1/2}
            assert_eq!(e.propagating, vec![Z, -1.0, 0.5]);
        }
        // Prop. 4(b) / C.13(b) (l. 141, 592): Delta x^1 = n^{-1/2-alpha},
        // Delta x^l = n^{1/2-alpha} for l in [2, L]; logits n^{1-alpha} (Prop. 2(b))
        for alpha in [0.5, 0.75] {
            for depth in [3usize, 5] {
                let e = run(sp(alpha), Sgd, Ce, depth, Later);
                assert_eq!(e.input_update[1], -0.5 - alpha, "alpha {alpha} depth {depth}");
                for l in 2..depth {
                    assert_eq!(e.input_update[l], 0.5 - alpha, "alpha {alpha} depth {depth} l {l}");
                }
                assert_eq!(e.logits, 1.0 - alpha);
            }
        }
        // one-step increments scale like the accumulated ones
        let e = run(sp(0.5), Sgd, Ce, 3, Later);
        assert_eq!(e.delta_effective, e.effective);
        assert_eq!(e.delta_act_update, e.act_update);
    }

    #[test]
    fn sgd_sp_alpha_one_is_a_kernel_regime() {
        // Prop. 2(a) / 4(a) (l. 117, 137): logits O(1), Delta x^l = O(n^{-1/2}), grads n^{-1/2}
        for step in [First, Later] {
            let e = run(sp(1.0), Sgd, Ce, 3, step);
            assert_eq!(e.effective, vec![-1.5, -0.5, 0.0]);
            assert_eq!(e.logits, 0.0);
            assert!(e.input_update[1..].iter().all(|&d| d <= -0.5), "{:?}", e.input_update);
            assert_eq!(&e.grad[..2], &[-0.5, -0.5]);
        }
        // NTP is a kernel regime too (Table C.1)
        assert_eq!(run(Parameterization::ntp(), Sgd, Ce, 3, Later).effective, vec![-0.5, -0.5, 0.0]);
    }

    #[test]
    fn e2_vs_e3_first_step_vs_theory() {
        // width-independent eta: first step (W_0^{L+1} dominates the backward pass) input
        // n^{-1/2}, hidden n^{1/2} (E.2, l. 840); the TP prediction input n^0, hidden n^1 (E.2
        // text, E.3: what zero init shows at once).
        let e = run(sp(0.0), Sgd, Ce, 3, First);
        assert_eq!(&e.effective[..2], &[-0.5, 0.5]);
        let e = run(sp(0.0), Sgd, Ce, 3, Later);
        assert_eq!(&e.effective[..2], &[0.0, 1.0]);
        let z = Parameterization::builtin("sp-llzero").unwrap();
        let e1 = run(z.clone(), Sgd, Ce, 3, First);
        assert_eq!(&e1.effective[..2], &[Z, Z], "no backprop signal through W_0^{{L+1}} = 0 (E.3 caption)");
        assert_eq!(e1.effective[2], 1.0);
        let e = run(z, Sgd, Ce, 3, Later);
        assert_eq!(&e.effective[..2], &[0.0, 1.0]);
    }

    #[test]
    fn adam_sp_inverse_width_lr() {
        // C.1 "Adam" (l. 443), Remark C.15 (l. 606), section 5.1 (l. 177): eta = n^-1 gives
        // width-independent hidden and output updates, vanishing input updates, and logits
        // n^{1/2} only through W_0^{L+1} Delta x^L
        for step in [First, Later] {
            let e = run(sp(1.0), Adam, Ce, 3, step);
            assert_eq!(e.effective, vec![-1.0, 0.0, 0.0], "{step:?}");
            assert_eq!(e.propagating[2], 0.5);
            assert_eq!(e.logits, 0.5);
            assert!(e.max_activation <= 0.0);
        }
        // eta = Theta(1) recovers input-layer feature learning with f = Theta(n) (l. 443; in
        // a 2-layer net: with hidden layers their n^1 updates blow up the activations)
        let e = run(sp(0.0), Adam, Ce, 2, Later);
        assert_eq!((e.effective[0], e.logits, e.max_activation), (0.0, 1.0, 0.0));
        assert_eq!(run(sp(0.0), Adam, Ce, 3, First).effective[1], 1.0);
        // C.15: controlled divergence for 1 <= alpha < 3/2, stable at 3/2, catastrophic below 1
        let r = |a: f64| regime(sp(a), Adam, Ce, 3);
        assert_eq!(r(0.5), Regime::Catastrophic);
        assert_eq!(r(1.0), Regime::ControlledDivergence);
        assert_eq!(r(1.25), Regime::ControlledDivergence);
        assert_eq!(r(1.5), Regime::Stable);
        // Adam normalises chi away: MSE behaves like CE (F.25, l. 179)
        assert_eq!(regime(sp(1.0), Adam, Mse, 3), Regime::ControlledDivergence);
    }

    #[test]
    fn mup_is_width_independent() {
        // C.1 (l. 401) and F.7 (l. 1216): every effective and propagating term Theta(1)
        for opt in [Sgd, Adam] {
            for loss in [Ce, Mse] {
                for depth in [2usize, 3, 5] {
                    for step in [First, Later] {
                        for p in [Parameterization::mup(), Parameterization::mup_mult()] {
                            let e = run(p, opt, loss, depth, step);
                            let what = format!("{opt:?} {loss:?} depth {depth} {step:?}");
                            assert_eq!(e.effective, vec![0.0; depth], "{what}");
                            assert_eq!(e.propagating[0], Z);
                            assert!(e.propagating[1..].iter().all(|&p| p == 0.0), "{what}: {:?}", e.propagating);
                            assert_eq!((e.logits, e.max_activation), (0.0, 0.0), "{what}");
                        }
                    }
                }
            }
        }
        assert_eq!(regime(Parameterization::mup(), Sgd, Mse, 3), Regime::Stable);
        // zero readout init: nothing but the readout moves in step 1, then muP scaling
        let z = Parameterization::builtin("mup-llzero").unwrap();
        assert_eq!(run(z.clone(), Sgd, Ce, 3, First).effective, vec![Z, Z, 0.0]);
        assert_eq!(run(z, Sgd, Ce, 3, Later).effective, vec![0.0; 3]);
    }

    #[test]
    fn sp_full_align_and_musoli_readout() {
        // F.7 (l. 1212-1216, Fig. F.32): SP-full-align updates every layer width-independently
        // but the logits blow up as n^{1/2} through W_0^{L+1} delta x^L; MUSOLI's readout rate
        // n^{-1/2} matches it with Delta W^{L+1} x^L = n^{1/2}.
        for opt in [Sgd, Adam] {
            for step in [First, Later] {
                let e = run(Parameterization::sp_full_align(), opt, Ce, 3, step);
                assert_eq!(e.effective, vec![0.0, 0.0, 0.0], "{opt:?} {step:?}");
                assert_eq!(e.propagating, vec![Z, 0.0, 0.5]);
                assert_eq!(e.logits, 0.5);
                let m = run(Parameterization::musoli(), opt, Ce, 3, step);
                assert_eq!(m.effective, vec![0.0, 0.0, 0.5], "{opt:?} {step:?}");
                assert_eq!(m.propagating, vec![Z, 0.0, 0.5]);
                assert_eq!(m.max_activation, 0.0);
            }
        }
        // F.7: df/dx^L = n^{-min(b_{L+1}, c_{L+1})} = n^{-1/2} in both
        assert_eq!(run(Parameterization::musoli(), Sgd, Ce, 3, Later).backward[1], -0.5);
    }

    #[test]
    fn two_layer_nets() {
        // C.1 "2 layer networks" (l. 439), Remark C.14 (l. 603), Fig. E.4: eta = Theta(1) gives
        // delta h^1 = n^{-1/2} in step 1, Theta(1) feature learning from step 2, f = Theta(n)
        let e = run(sp(0.0), Sgd, Ce, 2, First);
        assert_eq!(e.effective, vec![-0.5, 1.0]);
        let e = run(sp(0.0), Sgd, Ce, 2, Later);
        assert_eq!(e.effective, vec![0.0, 1.0]);
        assert_eq!((e.logits, e.max_activation), (1.0, 0.0));
        // "activation stability requires eta = O(1)": the gradient grows as n^c after step 1
        assert_eq!(regime(sp(-0.5), Sgd, Ce, 2), Regime::Catastrophic);
        assert_eq!(regime(sp(0.0), Sgd, Ce, 2), Regime::ControlledDivergence);
        assert_eq!(regime(sp(0.0), Sgd, Ce, 3), Regime::Catastrophic, "a hidden layer breaks it");
    }

    #[test]
    fn random_features() {
        // C.1 "Random feature models" (l. 441), F.5.1 (l. 1100): only the readout trains,
        // delta W^{L+1} x^L = n^{1-alpha}; alpha = 1 is width-independent
        let rf = |alpha: f64, loss, depth| Setting { random_features: true, ..setting(sp(alpha), Sgd, loss, depth, Later) };
        for depth in [2usize, 3] {
            for (alpha, want) in [(0.5, 0.5), (1.0, 0.0), (1.25, -0.25)] {
                let e = predict(&rf(alpha, Ce, depth)).unwrap();
                assert_eq!(e.effective[depth - 1], want, "alpha {alpha}");
                assert!(e.effective[..depth - 1].iter().all(|&x| x == Z));
                assert_eq!(e.max_activation, 0.0);
                assert!(e.grad[..depth - 1].iter().all(|&g| g == Z), "frozen layers have no gradient");
            }
            let r = |alpha, loss| predicted_regime(&rf(alpha, loss, depth)).unwrap();
            assert_eq!(r(1.0, Mse), Regime::Stable);
            assert_eq!(r(1.25, Ce), Regime::Stable);
            // "larger learning rates ... no instability caused by activation blowup" under CE
            assert_eq!(r(0.5, Ce), Regime::ControlledDivergence);
            assert_eq!(r(0.0, Ce), Regime::ControlledDivergence);
            // "under MSE loss ... training diverges above the edge of stability"
            assert_eq!(r(0.5, Mse), Regime::Catastrophic);
        }
    }

    #[test]
    fn prop2_regimes() {
        // Prop. 2 / C.12 (l. 113-125, 567-590), Fig. 3; 2-layer CE per Remark 3 / C.14
        let alphas = [0.0, 0.25, 0.5, 0.75, 1.0, 1.25];
        for &a in &alphas {
            let r = |loss, depth| regime(sp(a), Sgd, loss, depth);
            let ce = if a >= 1.0 {
                Regime::Stable
            } else if a >= 0.5 {
                Regime::ControlledDivergence
            } else {
                Regime::Catastrophic
            };
            let mse = if a >= 1.0 { Regime::Stable } else { Regime::Catastrophic };
            let ce2 = if a >= 1.0 { Regime::Stable } else { Regime::ControlledDivergence };
            for depth in [3usize, 4, 8] {
                assert_eq!(r(Ce, depth), ce, "CE depth {depth} alpha {a}");
                assert_eq!(r(Mse, depth), mse, "MSE depth {depth} alpha {a}");
            }
            assert_eq!(r(Mse, 2), mse, "MSE depth 2 alpha {a}");
            assert_eq!(r(Ce, 2), ce2, "2-layer CE is stable or controlled down to alpha = 0, alpha {a}");
        }
        // MSE just below 1: the slow chi feedback still ends catastrophically (Prop. 2)
        let e = predict_after(&setting(sp(0.9), Sgd, Mse, 3, Later), REGIME_HORIZON).unwrap();
        assert!(e.max_activation > 0.0 && e.chi > 0.0);
        // Prop. 2(c): chi bounded under CE even when everything else explodes
        let e = predict_after(&setting(sp(0.25), Sgd, Ce, 3, Later), 4).unwrap();
        assert_eq!(e.chi, 0.0);
        assert!(e.max_activation > 0.0);
    }

    #[test]
    fn mse_on_softmax_stalls_once_logits_diverge() {
        // F.4 (l. 147, 1053): exploding logits make the softmax-MSE gradient vanish
        let e = run(sp(0.5), Sgd, MseSoftmax, 3, Later);
        assert_eq!(e.chi, Z);
        assert_eq!(e.delta_effective, vec![Z; 3], "no update in step 2");
        assert_eq!(e.effective, vec![-1.0, 0.0, 0.5], "the first step's update remains");
        assert_eq!(regime(sp(1.0), Sgd, MseSoftmax, 3), Regime::Stable);
    }

    #[test]
    fn lookup_by_monitor_names() {
        let e = run(sp(0.5), Sgd, Ce, 3, Later);
        assert_eq!(e.get("layers.0.weight", Metric::Effective), Some(-1.0));
        assert_eq!(e.get("layers.2.weight", Metric::Propagating), Some(0.5));
        assert_eq!(e.get("layers.1.weight", Metric::Act), Some(0.0));
        assert_eq!(e.get("layers.1.weight", Metric::WeightUpdateOp), Some(0.0));
        assert_eq!(e.get("layers.1.weight", Metric::WeightUpdateRms), Some(-1.0));
        assert_eq!(e.get("layers.2.weight", Metric::Grad), Some(0.0));
        assert_eq!(e.get("layers.1.weight", Metric::Effective.one_step()), Some(e.delta_effective[1]));
        assert_eq!(e.get("model", Metric::Logits), Some(0.5));
        assert_eq!(e.get("model", Metric::Chi), Some(0.0));
        assert_eq!(e.get("model", Metric::Chi.one_step()), None);
        assert_eq!(e.get("layers.3.weight", Metric::Effective), None);
        assert_eq!(e.get("layers.0.bias", Metric::Effective), None);
        assert_eq!(e.get("layers.0.weight", Metric::Sparsity), None);
        assert_eq!(e.get("layers.0.weight", Metric::Act.one_step()), None);
        assert!(e.table().contains("layers.2.weight"));
    }

    #[test]
    fn classify_and_verdicts() {
        assert_eq!(classify(0.5, 0.0, 0.0, 0.1), Regime::ControlledDivergence);
        assert_eq!(classify(0.5, 0.3, 0.0, 0.1), Regime::Catastrophic);
        assert_eq!(classify(0.0, 0.0, 0.4, 0.1), Regime::Catastrophic);
        assert_eq!(classify(0.05, -0.2, 0.0, 0.1), Regime::Stable);
        assert_eq!(Regime::ControlledDivergence.to_string(), "controlled divergence");
        assert_eq!(serde_json::to_string(&Regime::ControlledDivergence).unwrap(), "\"controlled-divergence\"");
        // four widths, slope about 0.5 with a little noise: a CI of about +-0.07
        let fit = crate::fit::fit_power_law(&[64.0, 128.0, 256.0, 512.0], &[1.0, 1.45, 2.0, 2.85]).unwrap();
        let v = verdict(0.5, &fit, 0.25);
        assert_eq!(v.verdict, crate::claims::Verdict::Holds, "{v:?}");
        assert!(v.ci().0 <= v.measured && v.measured <= v.ci().1 && v.ci().1 - v.ci().0 < 0.3);
        assert_eq!(verdict(-1.0, &fit, 0.25).verdict, crate::claims::Verdict::Deviates);
        // a prediction inside a CI that reaches beyond the tolerance is not a "holds"
        let wide = crate::fit::fit_power_law(&[64.0, 128.0, 256.0], &[1.0, 2.0, 1.6]).unwrap();
        assert!(wide.ci_low <= 0.5 && 0.5 <= wide.ci_high && wide.ci_high - wide.ci_low > 1.0, "{wide:?}");
        let w = verdict(0.5, &wide, 0.25);
        assert_eq!(w.verdict, crate::claims::Verdict::Inconclusive, "{w:?}");
        assert!(w.reason.contains("reaches outside"), "{}", w.reason);
        assert!(predict(&setting(sp(0.5), Sgd, Ce, 1, First)).is_err());
        let mut bad = sp(0.5);
        bad.lr_sgd.hidden.coef = -1.0;
        assert!(predict(&setting(bad, Sgd, Ce, 3, First)).is_err());
    }
}
