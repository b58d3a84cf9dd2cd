//! Metric names: what a [`Record`](super::Record) measured, shared by the monitor, the
//! curvature hook ([`crate::sharpness`]), the coordinate-check analysis and the theory's
//! predictions ([`crate::theory::predict::Exponents::get`]).
//!
//! A [`MetricId`] is a [`Metric`] and its reference ([`Since`]): the paper's `Delta`
//! (against the initial model) or `delta` (against the previous step). In CSV and JSON it is
//! written as the plain string of earlier versions (`effective`, `delta_effective`,
//! `eigenvalue_2_residual`, ...), so stored results stay readable, and parsed back with
//! [`str::parse`], which names every valid metric on a bad one.
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use strum::{EnumIter, IntoEnumIterator};

/// One measured quantity (definitions in the [`crate::rcc`] module docs, and for the
/// curvature in [`crate::sharpness`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, EnumIter)]
pub enum Metric {
    // per site (a weight, gain or bias and its input)
    /// `||W_t x_t||`, the site's output.
    Act,
    /// `||W_t x_t - W_0 x_0||`.
    ActUpdate,
    /// `||(W_t - W_0) x_t||`, the effective update.
    Effective,
    /// `||W_0 (x_t - x_0)||`, the propagating update.
    Propagating,
    /// `||x_t||`, the site's input.
    Input,
    /// `||x_t - x_0||`.
    InputUpdate,
    /// `||W_t - W_0||_RMS`.
    WeightUpdateRms,
    /// `||W_t - W_0||_op` (RMS -> RMS).
    WeightUpdateOp,
    /// RMS alignment of `(Delta W_t, x_t)`.
    AlignRmsEff,
    /// Operator-norm alignment (alpha-op) of `(Delta W_t, x_t)`.
    AlignOpEff,
    /// RMS alignment of `(W_0, Delta x_t)`.
    AlignRmsProp,
    /// Operator-norm alignment of `(W_0, Delta x_t)`.
    AlignOpProp,
    /// `||Delta W||_F / ||Delta W||_2`.
    UpdateRank,
    /// `||grad_W L||_RMS` of the step's training batch.
    Grad,
    // per hidden activation (layer `act.{l}`)
    /// Fraction of exact zeros.
    Sparsity,
    /// Mean cosine of `x_t(xi)` and `x_0(xi)` over the probe inputs.
    CosInit,
    /// Mean cosine between different probe inputs at step `t`.
    CosCross,
    // model level (layer `model`)
    /// `||f_t||_RMS`.
    Logits,
    /// `||f_t - f_0||_RMS` (predicted by the theory; not measured by the monitor).
    LogitUpdate,
    /// `||dl/df||_RMS` of the per-example loss.
    Chi,
    /// The loss on the probe batch.
    Loss,
    // curvature (crate::sharpness)
    /// A Lanczos estimate of the loss's curvature.
    Curvature(CurvatureEstimate),
    /// `||A y - theta y|| / |theta|` of a curvature estimate's Ritz pair.
    Residual(CurvatureEstimate),
    /// `tr H` by Hutchinson.
    Trace,
    /// The standard error of [`Metric::Trace`].
    TraceStderr,
    /// The loss on the curvature batch.
    HessianLoss,
    /// A metric of a [`StepHook`](crate::train::StepHook) of your own (a name that is none of
    /// the above). Read back from CSV/JSON, any name the crate does not know becomes one.
    Custom(&'static str),
}

/// The Lanczos estimates of [`crate::sharpness`] (each with a [`Metric::Residual`] row).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, EnumIter)]
pub enum CurvatureEstimate {
    /// `lambda_max(H)`.
    #[default]
    Sharpness,
    /// The `i`-th largest eigenvalue of `H` (`i >= 2`; the first is [`CurvatureEstimate::Sharpness`]).
    Eigenvalue(u32),
    /// `lambda_max(G)` of the Gauss-Newton part.
    SharpnessGn,
    /// `lambda_max(D H)`, learning rates `D`.
    EtaSharpness,
    /// `lambda_max(D G)`.
    EtaSharpnessGn,
    /// Adam's preconditioned sharpness.
    SharpnessPrecond,
    /// `lambda_max` of one weight's diagonal block of `H`.
    SharpnessLayer,
}

/// The reference a metric compares with: the paper's `Delta` (since initialisation) or
/// `delta` (since the previous step, names prefixed `delta_`). Metrics of the current step
/// alone (`act`, `logits`, ...) are recorded as `Init`, with the plain name.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, EnumIter)]
pub enum Since {
    #[default]
    Init,
    Previous,
}

/// What a row measured: a metric and its reference. Written as the metric's name, prefixed
/// `delta_` for [`Since::Previous`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MetricId {
    pub metric: Metric,
    pub since: Since,
}

impl Metric {
    /// The metrics the monitor records per site, in the order of its rows.
    pub const SITE: [Metric; 13] = [
        Metric::Act,
        Metric::ActUpdate,
        Metric::Effective,
        Metric::Propagating,
        Metric::Input,
        Metric::InputUpdate,
        Metric::WeightUpdateRms,
        Metric::WeightUpdateOp,
        Metric::AlignRmsEff,
        Metric::AlignOpEff,
        Metric::AlignRmsProp,
        Metric::AlignOpProp,
        Metric::UpdateRank,
    ];

    /// The one-step (`delta`) version of this metric.
    pub fn one_step(self) -> MetricId {
        MetricId { metric: self, since: Since::Previous }
    }

    /// This metric against `since`.
    pub fn since(self, since: Since) -> MetricId {
        MetricId { metric: self, since }
    }

    /// Whether the metric compares the model with a reference, so that the monitor records it
    /// against the previous step too (`delta_` name). The site's output and input norms
    /// (`act`, `input`) do not depend on the reference: they are recorded once.
    pub fn compares(self) -> bool {
        !matches!(self, Metric::Act | Metric::Input)
    }

    /// Whether the metric is an update (zero at initialisation, so nothing to draw at step 0
    /// on log axes).
    pub fn is_update(self) -> bool {
        matches!(
            self,
            Metric::Effective
                | Metric::Propagating
                | Metric::ActUpdate
                | Metric::InputUpdate
                | Metric::WeightUpdateRms
                | Metric::WeightUpdateOp
                | Metric::UpdateRank
                | Metric::LogitUpdate
        )
    }

    /// Whether the metric needs the weight difference `W_t - W_ref` itself, as a tensor. The
    /// monitor's fast paths never form it: a dense weight's `Delta` pass is fused into the
    /// traced forward (it yields the effective update and the difference's Frobenius and
    /// spectral norms, [`super::DenseChange`]), and a plain-SGD step's `delta` comes from its
    /// low-rank factors (the same quantities from `B x B` Grams). Every metric of the crate
    /// is computed from those; a site metric that needs more of the difference (its entries,
    /// another norm) answers `true` here, and the monitor then keeps weight copies and measures
    /// every site on the general path ([`super::Change::Stored`], the difference formed).
    pub fn needs_weight_difference(self) -> bool {
        // (every variant named: a new one must decide)
        match self {
            Metric::Act
            | Metric::ActUpdate
            | Metric::Effective
            | Metric::Propagating
            | Metric::Input
            | Metric::InputUpdate
            | Metric::WeightUpdateRms
            | Metric::WeightUpdateOp
            | Metric::AlignRmsEff
            | Metric::AlignOpEff
            | Metric::AlignRmsProp
            | Metric::AlignOpProp
            | Metric::UpdateRank => false,
            // not per-site metrics of the monitor
            Metric::Grad
            | Metric::Sparsity
            | Metric::CosInit
            | Metric::CosCross
            | Metric::Logits
            | Metric::LogitUpdate
            | Metric::Chi
            | Metric::Loss
            | Metric::Curvature(_)
            | Metric::Residual(_)
            | Metric::Trace
            | Metric::TraceStderr
            | Metric::HessianLoss
            | Metric::Custom(_) => false,
        }
    }

    /// The name of a metric without data.
    fn plain_name(self) -> Option<&'static str> {
        Some(match self {
            Metric::Act => "act",
            Metric::ActUpdate => "act_update",
            Metric::Effective => "effective",
            Metric::Propagating => "propagating",
            Metric::Input => "input",
            Metric::InputUpdate => "input_update",
            Metric::WeightUpdateRms => "weight_update_rms",
            Metric::WeightUpdateOp => "weight_update_op",
            Metric::AlignRmsEff => "align_rms_eff",
            Metric::AlignOpEff => "align_op_eff",
            Metric::AlignRmsProp => "align_rms_prop",
            Metric::AlignOpProp => "align_op_prop",
            Metric::UpdateRank => "update_rank",
            Metric::Grad => "grad",
            Metric::Sparsity => "sparsity",
            Metric::CosInit => "cos_init",
            Metric::CosCross => "cos_cross",
            Metric::Logits => "logits",
            Metric::LogitUpdate => "logit_update",
            Metric::Chi => "chi",
            Metric::Loss => "loss",
            Metric::Trace => "trace",
            Metric::TraceStderr => "trace_stderr",
            Metric::HessianLoss => "hessian_loss",
            Metric::Curvature(_) | Metric::Residual(_) | Metric::Custom(_) => return None,
        })
    }

    /// The metric named `name`, or a [`Metric::Custom`] one if the crate knows no such name.
    pub fn named(name: &str) -> Metric {
        name.parse().unwrap_or_else(|_| Metric::Custom(intern(name)))
    }
}

impl CurvatureEstimate {
    fn plain_name(self) -> Option<&'static str> {
        Some(match self {
            CurvatureEstimate::Sharpness => "sharpness",
            CurvatureEstimate::SharpnessGn => "sharpness_gn",
            CurvatureEstimate::EtaSharpness => "eta_sharpness",
            CurvatureEstimate::EtaSharpnessGn => "eta_sharpness_gn",
            CurvatureEstimate::SharpnessPrecond => "sharpness_precond",
            CurvatureEstimate::SharpnessLayer => "sharpness_layer",
            CurvatureEstimate::Eigenvalue(_) => return None,
        })
    }
}

impl MetricId {
    /// The metric against the initial model (or of the current step alone).
    pub fn new(metric: Metric) -> MetricId {
        MetricId { metric, since: Since::Init }
    }

    /// The metric named `name` (`delta_` prefix for the one-step reference), custom if the
    /// crate knows no such name: how stored rows are read back.
    pub fn named(name: &str) -> MetricId {
        name.parse().unwrap_or_else(|_| MetricId::new(Metric::Custom(intern(name))))
    }
}

impl From<Metric> for MetricId {
    fn from(metric: Metric) -> MetricId {
        MetricId::new(metric)
    }
}

impl From<CurvatureEstimate> for Metric {
    fn from(c: CurvatureEstimate) -> Metric {
        Metric::Curvature(c)
    }
}

impl From<CurvatureEstimate> for MetricId {
    fn from(c: CurvatureEstimate) -> MetricId {
        MetricId::new(Metric::Curvature(c))
    }
}

impl PartialEq<Metric> for MetricId {
    fn eq(&self, m: &Metric) -> bool {
        self.since == Since::Init && self.metric == *m
    }
}

/// The prefix of one-step (`delta`) names.
const DELTA: &str = "delta_";
/// The suffix of curvature residuals.
const RESIDUAL: &str = "_residual";
/// The prefix of the `i`-th eigenvalue.
const EIGENVALUE: &str = "eigenvalue_";

impl fmt::Display for CurvatureEstimate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self, self.plain_name()) {
            (_, Some(name)) => f.pad(name),
            (CurvatureEstimate::Eigenvalue(i), None) => f.pad(&format!("{EIGENVALUE}{i}")),
            _ => unreachable!("every other estimate has a plain name"),
        }
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self, self.plain_name()) {
            (_, Some(name)) => f.pad(name),
            (Metric::Curvature(c), None) => f.pad(&c.to_string()),
            (Metric::Residual(c), None) => f.pad(&format!("{c}{RESIDUAL}")),
            (Metric::Custom(name), None) => f.pad(name),
            _ => unreachable!("every other metric has a plain name"),
        }
    }
}

impl fmt::Display for MetricId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.since {
            Since::Init => self.metric.fmt(f),
            Since::Previous => f.pad(&format!("{DELTA}{}", self.metric)),
        }
    }
}

/// A metric name the crate does not know.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown metric `{0}`; metrics: {list} (each also with the prefix `delta_`, one step), eigenvalue_{{i}}, and a curvature estimate's `_residual`", list = valid_names().join(", "))]
pub struct UnknownMetric(pub String);

/// The names of every metric without data (the curvature estimates included).
pub fn valid_names() -> Vec<String> {
    let plain = Metric::iter().filter_map(Metric::plain_name).map(String::from);
    plain.chain(CurvatureEstimate::iter().filter_map(CurvatureEstimate::plain_name).map(String::from)).collect()
}

impl FromStr for CurvatureEstimate {
    type Err = UnknownMetric;
    fn from_str(s: &str) -> Result<Self, UnknownMetric> {
        if let Some(c) = CurvatureEstimate::iter().find(|c| c.plain_name() == Some(s)) {
            return Ok(c);
        }
        // (digits only: "eigenvalue_+2" and "eigenvalue_02" would not print back the same)
        match s.strip_prefix(EIGENVALUE) {
            Some(i) if !i.is_empty() && i.bytes().all(|b| b.is_ascii_digit()) && !(i.len() > 1 && i.starts_with('0')) => {
                i.parse().map(CurvatureEstimate::Eigenvalue).map_err(|_| UnknownMetric(s.into()))
            }
            _ => Err(UnknownMetric(s.into())),
        }
    }
}

impl FromStr for Metric {
    type Err = UnknownMetric;
    /// A name the crate knows (never [`Metric::Custom`]).
    fn from_str(s: &str) -> Result<Self, UnknownMetric> {
        if let Some(m) = Metric::iter().find(|m| m.plain_name() == Some(s)) {
            return Ok(m);
        }
        if let Ok(c) = s.parse() {
            return Ok(Metric::Curvature(c));
        }
        match s.strip_suffix(RESIDUAL).map(str::parse) {
            Some(Ok(c)) => Ok(Metric::Residual(c)),
            _ => Err(UnknownMetric(s.into())),
        }
    }
}

impl FromStr for MetricId {
    type Err = UnknownMetric;
    /// A name the crate knows, with or without the `delta_` prefix.
    fn from_str(s: &str) -> Result<Self, UnknownMetric> {
        let (since, name) = match s.strip_prefix(DELTA) {
            Some(rest) => (Since::Previous, rest),
            None => (Since::Init, s),
        };
        let metric = name.parse().map_err(|_| UnknownMetric(s.into()))?;
        Ok(MetricId { metric, since })
    }
}

/// A `&'static str` equal to `name`, allocated once per distinct name (custom metrics read
/// back from stored rows; there are few).
fn intern(name: &str) -> &'static str {
    use std::collections::BTreeSet;
    use std::sync::Mutex;
    static NAMES: Mutex<BTreeSet<&'static str>> = Mutex::new(BTreeSet::new());
    let mut names = NAMES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(&n) = names.get(name) {
        return n;
    }
    let n: &'static str = Box::leak(name.to_owned().into_boxed_str());
    names.insert(n);
    n
}

// serialised as their names (the strings of earlier versions)
macro_rules! serde_by_name {
    ($t:ty) => {
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let name = std::borrow::Cow::<'de, str>::deserialize(d)?;
                Ok(<$t>::named(&name))
            }
        }
    };
}
serde_by_name!(Metric);
serde_by_name!(MetricId);

#[cfg(test)]
mod tests {
    use super::*;

    /// Every name the crate writes, as earlier versions wrote it.
    const NAMES: &[&str] = &[
        "act",
        "act_update",
        "effective",
        "propagating",
        "input",
        "input_update",
        "weight_update_rms",
        "weight_update_op",
        "align_rms_eff",
        "align_op_eff",
        "align_rms_prop",
        "align_op_prop",
        "update_rank",
        "grad",
        "sparsity",
        "cos_init",
        "cos_cross",
        "logits",
        "logit_update",
        "chi",
        "loss",
        "sharpness",
        "eigenvalue_2",
        "sharpness_gn",
        "eta_sharpness",
        "eta_sharpness_gn",
        "sharpness_precond",
        "sharpness_layer",
        "sharpness_residual",
        "eigenvalue_2_residual",
        "sharpness_gn_residual",
        "eta_sharpness_residual",
        "eta_sharpness_gn_residual",
        "sharpness_precond_residual",
        "sharpness_layer_residual",
        "trace",
        "trace_stderr",
        "hessian_loss",
    ];

    /// Every variant, with data where it has some.
    fn every_metric() -> Vec<Metric> {
        let curvature: Vec<CurvatureEstimate> = CurvatureEstimate::iter().map(|c| if let CurvatureEstimate::Eigenvalue(_) = c { CurvatureEstimate::Eigenvalue(2) } else { c }).collect();
        Metric::iter()
            .flat_map(|m| match m {
                Metric::Curvature(_) => curvature.iter().map(|&c| Metric::Curvature(c)).collect(),
                Metric::Residual(_) => curvature.iter().map(|&c| Metric::Residual(c)).collect(),
                Metric::Custom(_) => vec![],
                m => vec![m],
            })
            .collect()
    }

    #[test]
    fn every_metric_has_the_name_of_earlier_versions_and_parses_back() {
        let all = every_metric();
        let names: Vec<String> = all.iter().map(Metric::to_string).collect();
        let mut want: Vec<&str> = NAMES.to_vec();
        let mut got: Vec<&str> = names.iter().map(String::as_str).collect();
        want.sort();
        got.sort();
        assert_eq!(got, want);
        for m in all {
            for since in Since::iter() {
                let id = m.since(since);
                let name = id.to_string();
                assert_eq!(name, if since == Since::Previous { format!("delta_{m}") } else { m.to_string() });
                assert_eq!(name.parse::<MetricId>(), Ok(id), "{name}");
                assert_eq!(MetricId::named(&name), id);
                // serde: the plain string, in JSON and CSV
                let json = serde_json::to_string(&id).unwrap();
                assert_eq!(json, format!("\"{name}\""));
                assert_eq!(serde_json::from_str::<MetricId>(&json).unwrap(), id);
            }
        }
        assert_eq!(Metric::Curvature(CurvatureEstimate::Eigenvalue(11)).to_string(), "eigenvalue_11");
        assert_eq!("eigenvalue_11_residual".parse::<Metric>(), Ok(Metric::Residual(CurvatureEstimate::Eigenvalue(11))));
        // padding, as table columns use it
        assert_eq!(format!("[{:<18}]", Metric::Effective.one_step()), "[delta_effective   ]");
    }

    #[test]
    fn unknown_names_are_errors_listing_the_valid_ones_and_custom_when_read_back() {
        for bad in ["efective", "delta_", "", "eigenvalue_", "eigenvalue_02", "eigenvalue_+2", "trace_residual", "delta_delta_act"] {
            let e = bad.parse::<MetricId>().unwrap_err().to_string();
            assert!(e.contains(&format!("`{bad}`")) && e.contains("effective, propagating") && e.contains("sharpness_layer"), "{e}");
        }
        let id: MetricId = serde_json::from_str("\"relative_effective\"").unwrap();
        assert_eq!(id, MetricId::new(Metric::Custom("relative_effective")));
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"relative_effective\"");
        assert_eq!(Metric::named("effective"), Metric::Effective);
    }

    #[test]
    fn declared_properties() {
        // the monitor's site metrics: all computed on its fast paths; act and input once
        assert!(Metric::SITE.iter().all(|m| !m.needs_weight_difference()));
        let once: Vec<Metric> = Metric::SITE.into_iter().filter(|m| !m.compares()).collect();
        assert_eq!(once, [Metric::Act, Metric::Input]);
        assert_eq!(Metric::Effective.one_step(), Metric::Effective.since(Since::Previous));
        assert!(MetricId::from(Metric::Chi) == Metric::Chi && Metric::Chi.one_step() != Metric::Chi);
    }
}
