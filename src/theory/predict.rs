//! Predicted width exponents of the refined coordinate check, derived step by step with the
//! heuristic scaling rules of appendix C.1 (Tensor-Program style), and Definition 1's
//! learning regimes.
//!
//! The engine tracks, for an MLP with `L+1` weight layers, the width exponent `e(v)` (`v =
//! Theta(n^e)` in RMS norm) of every forward and backward quantity through a few training
//! steps:
//!
//! - **Parameterization**: init std `sigma_l ~ n^{-b_l}` and learning rate `eta_l ~ n^{-c_l}`
//!   per layer are *read off a [`Parameterization`]* (its rules evaluated at two large widths),
//!   so user-defined parameterizations work too. Zero init is `b = +inf`.
//! - **Forward at init** (CLT over independent summands): `e(h^1) = -b_1`,
//!   `e(h^l) = e(x^{l-1}) + 1/2 - b_l`.
//! - **Backward**: `df/dx^L = W^{L+1}_t` has coordinates `max(n^{-b_{L+1}}, Delta W^{L+1})`; through a
//!   hidden layer `(W_0^l)^T g` is CLT-like (`+1/2 - b_l`) and `(Delta W^l)^T g` LLN-like
//!   (`+1 + e(Delta W^l)`: the update is an outer product correlated with `g`).
//! - **Updates**: SGD entries `e(Delta W^l) = -c_l + e(chi) + e(df/dh^l) + e(x^{l-1})`; Adam
//!   normalises, so `e(Delta W^l) = -c_l` (appendix C.1, "Adam").
//! - **Effective update** `Delta W^l x^{l-1}` is LLN-like: `+1` for width-sized fan-in (not
//!   for the input layer, whose fan-in is fixed). **Propagating update** `W_0^l Delta x^{l-1}`
//!   is CLT-like (`+1/2 - b_l`) in hidden layers and LLN-like (`+1 - b_{L+1}`) in the readout,
//!   where `Delta x^L` is aligned with `W_0^{L+1}` through the backward pass (alignment
//!   exponents `q_{1:L} = 1/2`, `q_{L+1} = 1`, section 3.1).
//! - **Loss**: `chi = dl/df` is bounded under cross-entropy even when logits diverge (the
//!   softmax saturates); under MSE `e(chi) = max(0, e(f))`, so logit growth feeds back into
//!   the next update. MSE on softmax outputs has bounded `chi`.
//!
//! Step 1 uses the initial weights only; later steps include the accumulated updates in the
//! backward pass, which is where the finite-width effects of appendix E.2/E.3 come from (at
//! moderate width the first-step exponents are what one measures under standard last-layer
//! initialisation).
use serde::{Deserialize, Serialize};

use crate::fit::PowerLaw;
use crate::loss::LossKind;
use crate::param::{OptimizerFamily, ParamKind, Parameterization, Role};
use crate::{Error, Result};

/// Which step the prediction is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepPhase {
    /// After the first update.
    First,
    /// After the second update, once the first update enters the backward pass: the
    /// infinite-width (Tensor Program) prediction of the paper's appendix E.
    Later,
}

/// The training setup a prediction is for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Setting {
    pub param: Parameterization,
    pub optimizer: OptimizerFamily,
    pub loss: LossKind,
    /// Number of weight layers `L+1` (>= 2).
    pub depth: usize,
    /// Only the last layer trains.
    pub random_features: bool,
    pub step: StepPhase,
}

/// Predicted width exponents; `f64::NEG_INFINITY` marks a quantity that is exactly zero.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Exponents {
    /// Per weight layer `l = 1..=L+1` (index 0 = input layer).
    pub effective: Vec<f64>,
    pub propagating: Vec<f64>,
    /// `||Delta h^l||`, the activation update.
    pub act_update: Vec<f64>,
    /// `||h^l_t||`, the pre-activation.
    pub act: Vec<f64>,
    /// Entry size of the accumulated update `Delta W^l` (RMS norm).
    pub weight_update: Vec<f64>,
    /// RMS of the gradient of layer `l`.
    pub grad: Vec<f64>,
    /// Logits `||f_t||`.
    pub logits: f64,
    pub chi: f64,
    /// Largest exponent of hidden activations `x^l`, `l <= L`, over all steps so far.
    pub max_activation: f64,
}

impl Exponents {
    /// The prediction for a monitor metric of a layer named `layers.{l}.weight` (0-based) or
    /// for `model`; `None` for metrics the engine does not predict.
    pub fn get(&self, layer: &str, metric: &str) -> Option<f64> {
        if layer == "model" {
            return match metric {
                "logits" => Some(self.logits),
                "chi" => Some(self.chi),
                _ => None,
            };
        }
        let l: usize = layer.strip_prefix("layers.")?.strip_suffix(".weight")?.parse().ok()?;
        let v = match metric {
            "effective" => &self.effective,
            "propagating" => &self.propagating,
            "act_update" => &self.act_update,
            "act" => &self.act,
            "weight_update_rms" => &self.weight_update,
            "grad" => &self.grad,
            _ => return None,
        };
        v.get(l).copied()
    }
}

/// Learning regimes of Definition 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Regime {
    /// Logits, activations and gradients bounded.
    Stable,
    /// Logits diverge, activations and gradients stay bounded.
    ControlledDivergence,
    /// Activations or gradients diverge.
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

/// Definition 1 from (measured or predicted) width exponents: activations or gradients
/// growing faster than `n^tol` is catastrophic; logits alone growing is controlled
/// divergence; otherwise stable.
pub fn classify(logit_exp: f64, activation_exp: f64, gradient_exp: f64, tol: f64) -> Regime {
    if activation_exp > tol || gradient_exp > tol {
        Regime::Catastrophic
    } else if logit_exp > tol {
        Regime::ControlledDivergence
    } else {
        Regime::Stable
    }
}

/// Width exponents `(-b_l, -c_l)` of init std and learning rate per layer of an MLP of
/// `depth` layers, read off the parameterization between widths 2^12 and 2^24 and rounded to
/// 1/20 (the proposed output init only approaches its asymptotic exponent slowly).
fn layer_exponents(p: &Parameterization, depth: usize, fam: OptimizerFamily) -> Vec<(f64, f64)> {
    let (d_in, d_out) = (784i64, 10i64);
    let (n1, n2) = (1i64 << 12, 1i64 << 24);
    let round = |e: f64| if e.is_finite() { (e * 20.0).round() / 20.0 } else { e };
    (0..depth)
        .map(|l| {
            let role = if l == 0 {
                Role::InputLike
            } else if l + 1 == depth {
                Role::OutputLike
            } else {
                Role::HiddenLike
            };
            let r = |n: i64| {
                let (a, b) = match role {
                    Role::InputLike => (d_in, n),
                    Role::OutputLike => (n, d_out),
                    Role::HiddenLike => (n, n),
                };
                p.resolve(role, ParamKind::Weight, a, b, n, fam)
            };
            let (r1, r2) = (r(n1), r(n2));
            let ln = ((n2 as f64) / (n1 as f64)).ln();
            let e = |a: f64, b: f64| if a == 0.0 || b == 0.0 { f64::NEG_INFINITY } else { round((b / a).ln() / ln) };
            // the effective std and rate include the forward multiplier (abc equivalence)
            let std = e(r1.init_std * r1.multiplier, r2.init_std * r2.multiplier);
            let mult = e(r1.multiplier, r2.multiplier);
            let lr = match fam {
                OptimizerFamily::Sgd => e(r1.lr_scale, r2.lr_scale) + 2.0 * mult,
                OptimizerFamily::Adam => e(r1.lr_scale, r2.lr_scale) + mult,
            };
            (std, lr)
        })
        .collect()
}

/// Runs the scaling recursion for `setting` and returns the exponents at the requested step.
pub fn predict(setting: &Setting) -> Result<Exponents> {
    let steps = match setting.step {
        StepPhase::First => 1,
        StepPhase::Later => 2,
    };
    predict_after(setting, steps)
}

/// The exponents after `steps` updates.
pub fn predict_after(setting: &Setting, steps: usize) -> Result<Exponents> {
    let depth = setting.depth;
    if depth < 2 {
        return Err(Error::config("prediction needs depth >= 2 (L + 1 weight layers)"));
    }
    let lay = layer_exponents(&setting.param, depth, setting.optimizer);
    let neg = f64::NEG_INFINITY;
    let max = |a: f64, b: f64| a.max(b);
    let std = |l: usize| lay[l].0; // = -b_l
    let lr = |l: usize| lay[l].1; // = -c_l
    let out = depth - 1;
    // activations x^l (l = 0: the input), at init and now
    let mut x0 = vec![0.0; depth];
    for l in 1..depth {
        x0[l] = if l == 1 { std(0) } else { x0[l - 1] + 0.5 + std(l - 1) };
    }
    let f0 = x0[out] + 0.5 + std(out);
    let mut x = x0.clone();
    let mut f = f0;
    let mut dw = vec![neg; depth];
    let trains = |l: usize| !setting.random_features || l == out;
    let mut res = Exponents {
        effective: vec![neg; depth],
        propagating: vec![neg; depth],
        act_update: vec![neg; depth],
        act: vec![neg; depth],
        weight_update: vec![neg; depth],
        grad: vec![neg; depth],
        logits: f0,
        chi: 0.0,
        max_activation: x0[1..].iter().cloned().fold(neg, f64::max),
    };
    for _ in 0..steps {
        let chi = match setting.loss {
            LossKind::Mse => max(0.0, f),
            LossKind::Ce | LossKind::MseSoftmax => 0.0,
        };
        // backward: gh[l] = e(df/dh^{l+1}) for weight layer l (0-based); the readout sees df/df = 1
        let mut gh = vec![neg; depth];
        gh[out] = 0.0;
        let mut gx = max(std(out), dw[out]); // df/dx^L = W^{L+1}_t
        for l in (0..out).rev() {
            gh[l] = gx;
            if l > 0 {
                gx = max(0.5 + std(l) + gx, 1.0 + dw[l] + gx);
            }
        }
        // updates
        for l in 0..depth {
            // layer l reads x^l (x[0] is the data)
            let input = if l == 0 { 0.0 } else { x[l] };
            res.grad[l] = chi + gh[l] + input;
            if trains(l) {
                let step = match setting.optimizer {
                    OptimizerFamily::Sgd => lr(l) + chi + gh[l] + input,
                    OptimizerFamily::Adam => lr(l),
                };
                dw[l] = max(dw[l], step);
            }
        }
        // forward at the new weights: layer l maps x^{l} (x[l], with x[0] the data) to h^{l+1}
        let mut new_dx = vec![neg; depth];
        for l in 0..depth {
            let input = if l == 0 { 0.0 } else { x[l] };
            let fan = if l == 0 { 0.0 } else { 1.0 };
            let eff = fan + dw[l] + input;
            let d_in = if l == 0 { neg } else { new_dx[l] };
            let q = if l == out { 1.0 } else { 0.5 };
            let prop = if l == 0 { neg } else { q + std(l) + d_in };
            let dh = max(eff, prop);
            let h0 = if l == out { f0 } else { x0[l + 1] };
            res.effective[l] = eff;
            res.propagating[l] = prop;
            res.act_update[l] = dh;
            res.act[l] = max(h0, dh);
            res.weight_update[l] = dw[l];
            if l < out {
                new_dx[l + 1] = dh;
            } else {
                f = max(f0, dh);
            }
        }
        for l in 1..depth {
            x[l] = max(x0[l], new_dx[l]);
            res.max_activation = res.max_activation.max(x[l]);
        }
        res.logits = f;
        res.chi = chi;
    }
    Ok(res)
}

/// Steps the regime prediction looks ahead: slow feedback (MSE with `alpha` just below 1
/// grows the logit exponent by `1 - alpha` per step) needs a long horizon to show.
pub const REGIME_HORIZON: usize = 64;

/// The predicted regime of a setting: Definition 1 applied to the exponents after
/// [`REGIME_HORIZON`] steps (activations tracked over all steps, so a transient blow-up
/// counts).
pub fn predicted_regime(setting: &Setting) -> Result<Regime> {
    let e = predict_after(setting, REGIME_HORIZON)?;
    let grad = e.grad.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    Ok(classify(e.logits, e.max_activation, grad, 1e-9))
}

/// A measured exponent against a prediction.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub predicted: f64,
    pub measured: f64,
    pub ci_low: f64,
    pub ci_high: f64,
    /// `|measured - predicted| <= tol`, or the prediction inside the CI widened by `tol`.
    pub holds: bool,
}

/// Compares a fitted exponent with a prediction.
pub fn verdict(predicted: f64, fit: &PowerLaw, tol: f64) -> Verdict {
    let holds = (fit.exponent - predicted).abs() <= tol || fit.agrees_with(predicted, tol);
    Verdict { predicted, measured: fit.exponent, ci_low: fit.ci_low, ci_high: fit.ci_high, holds }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setting(p: Parameterization, opt: OptimizerFamily, loss: LossKind, depth: usize, step: StepPhase) -> Setting {
        Setting { param: p, optimizer: opt, loss, depth, random_features: false, step }
    }
    fn sp(alpha: f64) -> Parameterization {
        Parameterization::sp().with_alpha(alpha)
    }
    use LossKind::{Ce, Mse};
    use OptimizerFamily::{Adam, Sgd};
    use StepPhase::{First, Later};

    #[test]
    fn prop4_sgd_sp_alpha_half() {
        // Fig. 4 / E.1: input n^-1 (= n^{-1/2-alpha}), hidden n^0, output n^{1/2}; logits n^{1/2}
        for step in [First, Later] {
            let e = predict(&setting(sp(0.5), Sgd, Ce, 3, step)).unwrap();
            assert_eq!(e.effective, vec![-1.0, 0.0, 0.5], "{step:?}");
            assert_eq!(e.logits, 0.5);
            assert!(e.max_activation <= 0.0);
        }
    }

    #[test]
    fn sgd_sp_alpha_one_is_a_kernel_regime() {
        let e = predict(&setting(sp(1.0), Sgd, Ce, 3, Later)).unwrap();
        assert_eq!(e.effective, vec![-1.5, -0.5, 0.0]);
        assert_eq!(e.logits, 0.0);
    }

    #[test]
    fn e2_vs_e3_first_step_vs_theory() {
        // width-independent eta: first step (W_0 dominates the backward pass) -1/2, +1/2;
        // the TP prediction (updates dominate) 0, +1 -- what zero init shows at once (E.3).
        let e = predict(&setting(sp(0.0), Sgd, Ce, 3, First)).unwrap();
        assert_eq!(&e.effective[..2], &[-0.5, 0.5]);
        let e = predict(&setting(sp(0.0), Sgd, Ce, 3, Later)).unwrap();
        assert!(e.effective[0] >= 0.0 && e.effective[1] >= 1.0);
        let z = Parameterization::builtin("sp-llzero").unwrap();
        let e1 = predict(&setting(z.clone(), Sgd, Ce, 3, First)).unwrap();
        assert_eq!(&e1.effective[..2], &[f64::NEG_INFINITY, f64::NEG_INFINITY], "no backprop signal through W_0 = 0");
        let e = predict(&Setting { step: StepPhase::Later, ..setting(z, Sgd, Ce, 3, First) }).unwrap();
        assert!(e.effective[0] >= 0.0 && e.effective[1] >= 1.0);
    }

    #[test]
    fn adam_sp_inverse_width_lr() {
        let e = predict(&setting(sp(1.0), Adam, Ce, 3, Later)).unwrap();
        assert_eq!(e.effective, vec![-1.0, 0.0, 0.0]);
    }

    #[test]
    fn mup_is_width_independent() {
        for opt in [Sgd, Adam] {
            for step in [First, Later] {
                let e = predict(&setting(Parameterization::mup(), opt, Mse, 3, step)).unwrap();
                assert_eq!(e.effective, vec![0.0, 0.0, 0.0], "{opt:?} {step:?}");
                assert!(e.propagating[1..].iter().all(|&p| p <= 0.0), "{:?}", e.propagating);
                assert_eq!(e.logits, 0.0);
                assert_eq!(e.max_activation, 0.0);
            }
        }
        let m = predict(&setting(Parameterization::mup_mult(), Sgd, Ce, 4, Later)).unwrap();
        assert_eq!(m.effective, vec![0.0; 4], "multiplier form predicts the same");
    }

    #[test]
    fn sp_full_align_and_musoli_readout() {
        // F.7: logits blow up as n^{1/2} through W_0 Delta x^L; the readout's own update has a
        // width-independent effect (SP-full-align) or n^{1/2} (MUSOLI).
        let e = predict(&setting(Parameterization::sp_full_align(), Sgd, Ce, 3, Later)).unwrap();
        assert_eq!(&e.effective, &[0.0, 0.0, 0.0]);
        assert_eq!(e.propagating[2], 0.5);
        assert_eq!(e.logits, 0.5);
        let m = predict(&setting(Parameterization::musoli(), Sgd, Ce, 3, Later)).unwrap();
        assert_eq!((m.effective[2], m.propagating[2]), (0.5, 0.5));
        assert_eq!(&m.effective[..2], &[0.0, 0.0]);
    }

    #[test]
    fn random_features_transfer_at_inverse_width() {
        let rf = |alpha: f64, loss| Setting { random_features: true, ..setting(sp(alpha), Sgd, loss, 2, Later) };
        let e = predict(&rf(1.0, Mse)).unwrap();
        assert_eq!(e.effective[1], 0.0);
        assert_eq!(e.effective[0], f64::NEG_INFINITY);
        assert_eq!(predicted_regime(&rf(1.0, Mse)).unwrap(), Regime::Stable);
        assert_eq!(predicted_regime(&rf(0.5, Mse)).unwrap(), Regime::Catastrophic);
        assert_eq!(predicted_regime(&rf(0.5, Ce)).unwrap(), Regime::ControlledDivergence);
    }

    #[test]
    fn prop2_regimes() {
        let alphas = [0.0, 0.25, 0.5, 0.75, 1.0, 1.25];
        for &a in &alphas {
            let r = |loss, depth| predicted_regime(&setting(sp(a), Sgd, loss, depth, Later)).unwrap();
            let ce3 = if a >= 1.0 { Regime::Stable } else if a >= 0.5 { Regime::ControlledDivergence } else { Regime::Catastrophic };
            let mse = if a >= 1.0 { Regime::Stable } else { Regime::Catastrophic };
            let ce2 = if a >= 1.0 { Regime::Stable } else { Regime::ControlledDivergence };
            assert_eq!(r(Ce, 3), ce3, "CE depth 3 alpha {a}");
            assert_eq!(r(Ce, 8), ce3, "CE depth 8 alpha {a}");
            assert_eq!(r(Mse, 3), mse, "MSE depth 3 alpha {a}");
            assert_eq!(r(Mse, 2), mse, "MSE depth 2 alpha {a}");
            assert_eq!(r(Ce, 2), ce2, "2-layer CE is stable down to alpha = 0, alpha {a}");
        }
    }

    #[test]
    fn classify_and_verdicts() {
        assert_eq!(classify(0.5, 0.0, 0.0, 0.1), Regime::ControlledDivergence);
        assert_eq!(classify(0.5, 0.3, 0.0, 0.1), Regime::Catastrophic);
        assert_eq!(classify(0.05, -0.2, 0.0, 0.1), Regime::Stable);
        let fit = crate::fit::fit_power_law(&[64.0, 128.0, 256.0], &[1.0, 1.45, 2.0]).unwrap();
        assert!(verdict(0.5, &fit, 0.1).holds);
        assert!(!verdict(-1.0, &fit, 0.1).holds);
        assert!(predict(&setting(sp(0.5), Sgd, Ce, 1, First)).is_err());
    }
}
