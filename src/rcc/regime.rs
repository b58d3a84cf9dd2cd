//! The measured version of the paper's Fig. 3 (a schematic there): for SGD in SP with
//! `eta_n = eta (n/256)^(-alpha)`, train over widths for a fixed number of steps and fit the
//! width exponents of the logit update, the hidden activation updates and the gradients at
//! the last step. Updates rather than the quantities themselves, and each update through its
//! two RCC parts: at the widths a CPU reaches, the initial logits and activations (width-
//! independent under He init) still dominate their norms, and the sum `Delta(W x)` mixes a
//! propagating part that dominates at small width with an effective part that dominates at
//! large width; the larger of the two fitted exponents is what extrapolates. Definition 1 of the paper then classifies each (alpha, loss, depth) cell: growing
//! activations or gradients (or divergence) is catastrophic, growing logits alone is
//! controlled divergence, nothing growing is stable.
use serde::{Deserialize, Serialize};

use super::runner::{run, CoordCheck, CoordCheckResult, Profile};
use super::{Metric, MonitorConfig, StepSchedule};
use crate::fit::PowerLaw;
use crate::theory::predict::{classify, predicted_regime, Regime, StepPhase};
use crate::loss::LossKind;
use crate::Result;

/// One cell of the phase diagram.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RegimeCell {
    pub alpha: f64,
    pub loss: LossKind,
    pub depth: usize,
    /// Width exponent of the logit update at the last step: the larger of the readout's
    /// effective and propagating update exponents.
    pub logits: Option<PowerLaw>,
    /// Largest width exponent of the effective or propagating update over the hidden
    /// pre-activations `h^l`, l <= L (positive: activations blow up at large width).
    pub activations: Option<PowerLaw>,
    /// Largest width exponent over per-layer gradient norms.
    pub gradients: Option<PowerLaw>,
    /// Widths at which some seed diverged (NaN or inf loss).
    pub diverged_widths: Vec<i64>,
}

/// Settings of a scan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RegimeScan {
    pub alphas: Vec<f64>,
    pub losses: Vec<LossKind>,
    pub depths: Vec<usize>,
    /// Base learning rate `eta` at width 256.
    pub lr: f64,
    pub steps: usize,
    pub profile: Profile,
}

impl RegimeScan {
    /// The grid of the notebook: alpha in {0, 1/4, 1/2, 3/4, 1, 5/4}, CE and MSE, depth 2 and 3.
    pub fn standard(profile: Profile) -> Self {
        RegimeScan {
            alphas: vec![0.0, 0.25, 0.5, 0.75, 1.0, 1.25],
            losses: vec![LossKind::Ce, LossKind::Mse],
            depths: vec![2, 3],
            lr: 0.02,
            steps: if profile == Profile::Smoke { 3 } else { 20 },
            profile,
        }
    }

    /// The coordinate check of one cell.
    pub fn cell_check(&self, alpha: f64, loss: LossKind, depth: usize) -> Result<CoordCheck> {
        let mut cc = CoordCheck::preset("e1", self.profile)?;
        cc.name = format!("regime-a{alpha}-{loss}-d{depth}");
        cc.train.alpha = Some(alpha);
        cc.train.lr = self.lr;
        cc.train.loss.kind = loss;
        cc.train.model.depth = depth;
        cc.steps = self.steps;
        cc.train.steps = Some(self.steps);
        cc.monitor = MonitorConfig {
            schedule: StepSchedule::List { steps: vec![self.steps] },
            one_step: false,
            ..MonitorConfig::default()
        };
        Ok(cc)
    }

    /// Runs every cell (each a coordinate check over the profile's widths and seeds).
    pub fn run(&self, progress: bool) -> Result<Vec<RegimeCell>> {
        let mut cells = vec![];
        for &depth in &self.depths {
            for &loss in &self.losses {
                for &alpha in &self.alphas {
                    let cc = self.cell_check(alpha, loss, depth)?;
                    let res = run(&cc, progress)?;
                    cells.push(cell_from(&res, alpha, loss, depth));
                }
            }
        }
        Ok(cells)
    }
}

impl RegimeCell {
    /// Definition 1 from the measured exponents (divergence at any width is catastrophic).
    pub fn measured_regime(&self, tol: f64) -> Regime {
        if !self.diverged_widths.is_empty() {
            return Regime::Catastrophic;
        }
        let e = |p: &Option<PowerLaw>| p.map_or(f64::NEG_INFINITY, |f| f.exponent);
        classify(e(&self.logits), e(&self.activations), e(&self.gradients), tol)
    }
}

impl RegimeScan {
    /// Prop. 2's prediction for a cell (SGD in SP at this cell's alpha, loss and depth).
    pub fn predicted(&self, cell: &RegimeCell) -> Result<Regime> {
        let cc = self.cell_check(cell.alpha, cell.loss, cell.depth)?;
        predicted_regime(&cc.setting(StepPhase::Later)?)
    }
}

/// Largest-exponent fit among `layers` and `metrics` at `step`.
fn max_fit(res: &CoordCheckResult, layers: &[String], metrics: &[Metric], step: usize) -> Option<PowerLaw> {
    layers
        .iter()
        .flat_map(|l| metrics.iter().filter_map(move |&m| res.fit(l, m, step).ok()))
        .filter(|f| f.exponent.is_finite())
        .max_by(|a, b| a.exponent.total_cmp(&b.exponent))
}

/// Measured exponents of one finished coordinate check.
pub fn cell_from(res: &CoordCheckResult, alpha: f64, loss: LossKind, depth: usize) -> RegimeCell {
    let step = res.check.steps;
    let weights: Vec<String> = res.layers().into_iter().filter(|l| l.starts_with("layers.") && l.ends_with(".weight")).collect();
    let hidden: Vec<String> = weights.iter().take(weights.len().saturating_sub(1)).cloned().collect();
    let mut diverged: Vec<i64> = res.diverged.iter().map(|d| d.0).collect();
    diverged.sort();
    diverged.dedup();
    RegimeCell {
        alpha,
        loss,
        depth,
        logits: weights.last().and_then(|l| max_fit(res, &[l.clone()], &[Metric::Effective, Metric::Propagating], step)),
        activations: max_fit(res, &hidden, &[Metric::Effective, Metric::Propagating], step),
        gradients: max_fit(res, &weights, &[Metric::Grad], step),
        diverged_widths: diverged,
    }
}
