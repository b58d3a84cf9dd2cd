//! The coordinate-check runner: trains a model over widths x seeds for a few steps under a
//! parameterization, records the [`Monitor`] at every step, and fits the width exponent of
//! every (layer, metric, step) across seeds.
//!
//! Presets reproduce appendix E of the paper at three profiles (`smoke`, `quick`, `paper`;
//! what a profile changes is widths, seeds and data, not code). The paper's MLP coordinate
//! checks use CIFAR-10, which no package registry ships; the presets use Fashion-MNIST
//! (Debian's `dataset-fashion-mnist`) instead, and CIFAR-10 when `--dataset cifar10` and
//! the files are present. Learning rates follow the authors' `coord_checks.py`:
//! `eta_n = eta (n/256)^(-alpha)`.
use std::path::Path;

use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::{Metric, MetricId, Monitor, MonitorConfig, Record, Since, StepSchedule};
use crate::data::DatasetName;
use crate::fit::{fit_power_law, PowerLaw};
use crate::loss::LossKind;
use crate::model::MlpConfig;
use crate::optim::OptimizerKind;
use crate::plot::{gradient, Figure, Panels, Style};
use crate::theory::predict::{predict, verdict, Setting, StepPhase, Verdict};
use crate::train::{ParamSpec, RunConfig, TrainConfig, Trainer};
pub use crate::profile::Profile;
use crate::{Error, Result};

/// A coordinate check: one training setup run at several widths and seeds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoordCheck {
    pub name: String,
    /// Everything but the width (overridden per run) and the seed (added to each seed).
    pub train: TrainConfig,
    pub widths: Vec<i64>,
    pub seeds: Vec<u64>,
    /// Training steps per run.
    pub steps: usize,
    pub monitor: MonitorConfig,
    /// Size of the fixed probe batch the RCC is measured on.
    pub probe_size: usize,
    /// Optional sharpness metrics (`sharpness`, `sharpness_gn`, `eta_sharpness`,
    /// `sharpness_layer`, ...: [`crate::sharpness`]) every few steps, on their own seeded
    /// curvature batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sharpness: Option<crate::sharpness::SharpnessEvery>,
}

/// Names of the presets (appendix E figures).
pub const PRESETS: &[&str] = &["e1", "e2", "e3", "e4", "e4-llzero", "e5", "e7", "e8", "e9"];

impl CoordCheck {
    /// A preset at a profile, on the device named by `WIDTHLAB_DEVICE` (default CPU). `e1`
    /// is Fig. 4 / E.1; `e6` shares its runs with `e5`.
    pub fn preset(name: &str, profile: Profile) -> Result<Self> {
        let (depth, opt, param, lr, alpha) = match name {
            "e1" | "fig4" => (3, OptimizerKind::Sgd, "sp", 1e-4, 0.5),
            "e2" => (3, OptimizerKind::Sgd, "sp", 1e-4, 0.0),
            "e3" => (3, OptimizerKind::Sgd, "sp-llzero", 1e-4, 0.0),
            "e4" => (2, OptimizerKind::Sgd, "sp", 3e-4, 0.0),
            "e4-llzero" => (2, OptimizerKind::Sgd, "sp-llzero", 3e-4, 0.0),
            "e5" | "e6" => (3, OptimizerKind::Sgd, "sp", 0.03, 0.0),
            "e7" => (3, OptimizerKind::Sgd, "mup", 0.03, 0.0),
            "e8" => (3, OptimizerKind::Adam, "sp", 1e-6, 0.5),
            "e9" => (3, OptimizerKind::Adam, "sp", 3e-4, 0.5),
            _ => {
                return Err(Error::config(format!(
                    "unknown coordinate-check preset `{name}`; presets: {}",
                    PRESETS.join(", ")
                )))
            }
        };
        let (widths, seeds, steps, subset): (Vec<i64>, Vec<u64>, usize, Option<usize>) = match profile {
            Profile::Smoke => (vec![32, 64, 128], crate::profile::seeds(1)?, 3, Some(1024)),
            Profile::Quick => (vec![64, 128, 256, 512, 1024], crate::profile::seeds(3)?, 10, Some(10_000)),
            Profile::Paper => ((6..=14).map(|k| 1i64 << k).collect(), crate::profile::seeds(4)?, 10, None),
        };
        let mut train = TrainConfig {
            model: MlpConfig { depth, ..MlpConfig::default() },
            param: ParamSpec::Name(param.into()),
            alpha: Some(alpha),
            lr,
            steps: Some(steps),
            batch_size: 64,
            device: crate::device::DeviceChoice::from_env()?,
            ..TrainConfig::default()
        };
        train.optim.kind = opt;
        train.loss.kind = LossKind::Ce;
        train.data.dataset = DatasetName::FashionMnist;
        train.data.train_subset = subset;
        train.eval.test = false;
        train.eval.train_subset = Some(256);
        Ok(CoordCheck {
            name: name.to_string(),
            train,
            widths,
            seeds,
            steps,
            monitor: MonitorConfig { schedule: StepSchedule::Every, ..MonitorConfig::default() },
            probe_size: 256,
            sharpness: None,
        })
    }

    /// Notebook 01's RCC decomposition (section 2): [`Self::preset`] `e1` on the teacher data
    /// of appendix D.2 with `d_in = 20` and 2048 training points, at `lr = 0.05` (so that a
    /// few steps move the weights measurably) and a probe of 128 points.
    pub fn background(profile: Profile) -> Result<Self> {
        let mut cc = Self::preset("e1", profile)?;
        cc.train.data.dataset = DatasetName::Teacher;
        cc.train.data.teacher = crate::data::TeacherConfig { d_in: 20, n_train: 2048, n_test: 256 };
        cc.train.data.train_subset = None;
        cc.train.lr = 0.05;
        cc.probe_size = 128;
        Ok(cc)
    }

    /// Notebook 01's initialisation exponents (Table C.1): [`Self::preset`] `e1` for one step
    /// under the named parameterization (step 0 is the initialisation).
    pub fn one_step(profile: Profile, param: &str) -> Result<Self> {
        let mut cc = Self::preset("e1", profile)?;
        cc.steps = 1;
        cc.train.param = ParamSpec::Name(param.into());
        Ok(cc)
    }

    /// Switches the check to another dataset. The presets train on a random subset of the
    /// real data (`data.train_subset`; all of it at `paper`); the generated teacher data
    /// (appendix D.2) is generated at that size instead (`data.teacher.n_train`, 60000 for
    /// the whole set), so every preset runs on it.
    pub fn set_dataset(&mut self, dataset: DatasetName) {
        let data = &mut self.train.data;
        if dataset == DatasetName::Teacher && data.dataset != DatasetName::Teacher {
            data.teacher.n_train = data.train_subset.take().unwrap_or(60_000);
        }
        data.dataset = dataset;
    }

    /// The theory engine's view of this check (see [`crate::theory::predict`]).
    pub fn setting(&self, step: StepPhase) -> Result<Setting> {
        Ok(Setting {
            param: self.train.parameterization()?,
            optimizer: self.train.optim.kind.family(),
            loss: self.train.loss.kind,
            depth: self.train.model.depth,
            random_features: self.train.model.freeze == crate::model::Freeze::RandomFeatures,
            step,
        })
    }

    /// Checks the grid.
    pub fn validate(&self) -> Result<()> {
        if self.widths.is_empty() || self.seeds.is_empty() {
            return Err(Error::config("coordinate check: need at least one width and one seed"));
        }
        if let Some(w) = self.widths.iter().find(|&&w| w < 1) {
            return Err(Error::config(format!("coordinate check: width {w} must be >= 1")));
        }
        if self.steps == 0 || self.probe_size == 0 {
            return Err(Error::config("coordinate check: steps and probe_size must be >= 1"));
        }
        if let Some(s) = &self.sharpness {
            s.validate()?;
        }
        crate::limits::check_runs("coordinate check (widths x seeds)", self.widths.len() as f64 * self.seeds.len() as f64)?;
        // Every width's run, the widest one included, before any of them starts.
        for &width in &self.widths {
            let mut train = self.train.clone();
            train.model.width = width;
            train.steps = Some(self.steps);
            train.check_fits()?;
        }
        Ok(())
    }
}

/// One tidy row of a coordinate check.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Row {
    pub width: i64,
    pub seed: u64,
    pub step: usize,
    pub layer: String,
    pub metric: MetricId,
    pub value: f64,
}

/// A fitted width exponent of one (layer, metric, step).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExponentFit {
    pub layer: String,
    pub metric: MetricId,
    pub step: usize,
    pub fit: PowerLaw,
}

/// A measured exponent next to the first-step and later-step predictions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VerdictRow {
    pub layer: String,
    pub metric: MetricId,
    pub step: usize,
    /// Against the first-step prediction (initial weights dominate the backward pass);
    /// `None` where that prediction is "exactly zero" (e.g. no backward signal through a
    /// zero-initialised readout).
    pub first: Option<Verdict>,
    /// Against the later-step (infinite-width, Tensor Program) prediction.
    pub later: Option<Verdict>,
}

/// What the analysis of a coordinate check needs to know about the check itself (the MLP's
/// [`CoordCheck`] and the GPT's [`super::gpt::GptCheck`]).
pub trait CheckSpec {
    /// The widths the check ran at, in order.
    fn widths(&self) -> &[i64];
}

impl CheckSpec for CoordCheck {
    fn widths(&self) -> &[i64] {
        &self.widths
    }
}

/// Everything a coordinate check measured (of the MLP by default; `C` is the check).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CoordCheckResult<C = CoordCheck> {
    pub check: C,
    pub rows: Vec<Row>,
    /// Runs that diverged: (width, seed, step).
    pub diverged: Vec<(i64, u64, usize)>,
    pub seconds: f64,
}

/// Trains one run of any kind under the RCC monitor (and the sharpness hook, if given) and
/// returns its records and the step it diverged at, if it did. The monitor measures on the
/// run's own probe batch ([`crate::train::Batches::probe`], seeded by the run's seed).
pub fn monitored_run<C: RunConfig>(trainer: Trainer<C>, probe_size: usize, monitor: MonitorConfig, sharpness: Option<&crate::sharpness::SharpnessEvery>, progress: bool) -> Result<(Vec<Record>, Option<usize>)> {
    let (px, py) = trainer.probe(probe_size, trainer.settings().seed);
    let mut mon = Monitor::new(monitor, px, py, trainer.settings().loss);
    let mut sharp = sharpness.map(|s| crate::sharpness::SharpnessHook::for_trainer(&trainer, s.config.clone(), s.schedule())).transpose()?;
    let result = match &mut sharp {
        Some(h) => trainer.run(progress, Some(&mut crate::train::Hooks(vec![&mut mon, h])))?,
        None => trainer.run(progress, Some(&mut mon))?,
    };
    let div = match result.outcome {
        crate::train::Outcome::Diverged { step, .. } => Some(step),
        crate::train::Outcome::Completed => None,
    };
    let mut records = mon.records;
    records.extend(sharp.map(|h| h.records).unwrap_or_default());
    Ok((records, div))
}

/// Runs `run(width, seed)` for every width and seed of a check, largest widths first (so that
/// the long runs do not end up last), with a progress bar counting the runs: in parallel on
/// rayon's pool with one libtorch thread each (results do not depend on the schedule: every
/// draw is seeded per run). Returns every run's output with its width and seed.
pub fn run_grid_parallel<T: Send>(label: &str, widths: &[i64], seeds: &[u64], progress: bool, run: impl Fn(i64, u64) -> Result<T> + Sync) -> Result<Vec<(i64, u64, T)>> {
    let jobs = grid_jobs(widths, seeds);
    if jobs.len() > 1 {
        crate::device::set_threads(1);
    }
    let bar = runs_bar(label, jobs.len(), progress);
    let outputs: Vec<Result<(i64, u64, T)>> = jobs
        .par_iter()
        .map(|&(w, s)| {
            let r = run(w, s).map(|out| (w, s, out));
            bar.inc(1);
            r
        })
        .collect();
    bar.finish_and_clear();
    outputs.into_iter().collect()
}

/// As [`run_grid_parallel`], the runs in turn (each on all of libtorch's threads; `run` may
/// hold what cannot be shared between threads, e.g. loaded text).
pub fn run_grid<T>(label: &str, widths: &[i64], seeds: &[u64], progress: bool, run: impl Fn(i64, u64) -> Result<T>) -> Result<Vec<(i64, u64, T)>> {
    let jobs = grid_jobs(widths, seeds);
    let bar = runs_bar(label, jobs.len(), progress);
    let outputs = jobs
        .iter()
        .map(|&(w, s)| {
            let r = run(w, s).map(|out| (w, s, out));
            bar.inc(1);
            r
        })
        .collect();
    bar.finish_and_clear();
    outputs
}

/// Every (width, seed), largest widths first.
fn grid_jobs(widths: &[i64], seeds: &[u64]) -> Vec<(i64, u64)> {
    let mut jobs: Vec<(i64, u64)> = widths.iter().flat_map(|&w| seeds.iter().map(move |&s| (w, s))).collect();
    jobs.sort_by_key(|&(w, s)| (std::cmp::Reverse(w), s));
    jobs
}

/// A progress bar counting `n` runs (hidden unless `progress`).
fn runs_bar(label: &str, n: usize, progress: bool) -> ProgressBar {
    if !progress {
        return ProgressBar::hidden();
    }
    let b = ProgressBar::new(n as u64);
    b.set_style(
        ProgressStyle::with_template("{spinner} {msg} [{elapsed_precise}] {bar:30} {pos}/{len} runs (eta {eta})").unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    b.set_message(label.to_string());
    b
}

/// The rows and diverged runs of a check from its runs' records, rows sorted by width, seed
/// and step.
pub(crate) fn collect_rows(runs: Vec<(i64, u64, (Vec<Record>, Option<usize>))>) -> (Vec<Row>, Vec<(i64, u64, usize)>) {
    let mut rows = vec![];
    let mut diverged = vec![];
    for (width, seed, (recs, div)) in runs {
        if let Some(step) = div {
            diverged.push((width, seed, step));
        }
        rows.extend(recs.into_iter().map(|r| Row { width, seed, step: r.step, layer: r.layer, metric: r.metric, value: r.value }));
    }
    rows.sort_by(|a, b| (a.width, a.seed, a.step).cmp(&(b.width, b.seed, b.step)));
    (rows, diverged)
}

/// Runs every width and seed, in parallel on rayon's pool with one libtorch thread each.
pub fn run(cc: &CoordCheck, progress: bool) -> Result<CoordCheckResult> {
    cc.validate()?;
    let started = std::time::Instant::now();
    let runs = run_grid_parallel(&format!("coord-check {}", cc.name), &cc.widths, &cc.seeds, progress, |width, seed| {
        let mut cfg = cc.train.clone();
        (cfg.model.width, cfg.seed, cfg.steps) = (width, seed, Some(cc.steps));
        let mut monitor = cc.monitor.clone();
        monitor.dump_dir = monitor.dump_dir.map(|d| d.join(format!("w{width}-s{seed}")));
        monitored_run(Trainer::new(&cfg)?, cc.probe_size, monitor, cc.sharpness.as_ref(), false)
    })?;
    let (rows, diverged) = collect_rows(runs);
    Ok(CoordCheckResult { check: cc.clone(), rows, diverged, seconds: started.elapsed().as_secs_f64() })
}

/// The width at which the power laws of one (layer, metric, step) in two coordinate checks
/// cross: appendix E.1's extrapolation of where the standard-initialisation law (E.2) meets
/// the faster zero-initialisation law (E.3). Returns the width and both fits.
pub fn phase_transition(
    a: &CoordCheckResult,
    b: &CoordCheckResult,
    layer: &str,
    metric: impl Into<MetricId>,
    step: usize,
) -> Result<(Option<f64>, PowerLaw, PowerLaw)> {
    let metric = metric.into();
    let (fa, fb) = (a.fit(layer, metric, step)?, b.fit(layer, metric, step)?);
    Ok((crate::fit::crossing_width(&fa, &fb), fa, fb))
}

impl<C: CheckSpec + Serialize> CoordCheckResult<C> {
    /// Values of one (layer, metric, step) as `(width, value)` over all seeds.
    pub fn points(&self, layer: &str, metric: impl Into<MetricId>, step: usize) -> Vec<(f64, f64)> {
        let metric = metric.into();
        self.rows
            .iter()
            .filter(|r| r.step == step && r.layer == layer && r.metric == metric)
            .map(|r| (r.width as f64, r.value))
            .collect()
    }

    /// The width exponent of one (layer, metric, step) fitted across widths and seeds.
    pub fn fit(&self, layer: &str, metric: impl Into<MetricId>, step: usize) -> Result<PowerLaw> {
        let metric = metric.into();
        let pts = self.points(layer, metric, step);
        if pts.is_empty() {
            return Err(Error::config(format!("no measurements of {layer}/{metric} at step {step}")));
        }
        let (ns, ys): (Vec<f64>, Vec<f64>) = pts.into_iter().unzip();
        fit_power_law(&ns, &ys)
    }

    /// Fits of every (layer, metric, step) that has positive values at two or more widths.
    pub fn fits(&self) -> Vec<ExponentFit> {
        let mut keys: Vec<(String, MetricId, usize)> = self.rows.iter().map(|r| (r.layer.clone(), r.metric, r.step)).collect();
        // (in the order of the metrics' names)
        keys.sort_by_cached_key(|(layer, metric, step)| (layer.clone(), metric.to_string(), *step));
        keys.dedup();
        keys.into_iter()
            .filter_map(|(layer, metric, step)| {
                self.fit(&layer, metric, step).ok().map(|fit| ExponentFit { layer, metric, step, fit })
            })
            .collect()
    }

    /// Mean, min and max over seeds of one (layer, metric, step), per width (sorted).
    pub fn seed_summary(&self, layer: &str, metric: impl Into<MetricId>, step: usize) -> Vec<(f64, f64, f64, f64)> {
        let pts = self.points(layer, metric, step);
        let mut widths: Vec<f64> = pts.iter().map(|p| p.0).collect();
        widths.sort_by(f64::total_cmp);
        widths.dedup();
        widths
            .into_iter()
            .filter_map(|w| {
                let v: Vec<f64> = pts.iter().filter(|p| p.0 == w && p.1.is_finite()).map(|p| p.1).collect();
                (!v.is_empty()).then(|| {
                    let mean = v.iter().sum::<f64>() / v.len() as f64;
                    let lo = v.iter().cloned().fold(f64::INFINITY, f64::min);
                    let hi = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    (w, mean, lo, hi)
                })
            })
            .collect()
    }

    /// Log-log plot of `metric` of `layer` against width: one line per measured step (dark
    /// = early, yellow = late), the seed range as a band, and, if given, the predicted slope
    /// as a dashed line through the last step's value at the smallest width.
    pub fn figure_vs_width(&self, layer: &str, metric: impl Into<MetricId>, predicted: Option<f64>) -> Figure {
        let metric = metric.into();
        let mut steps: Vec<usize> = self.rows.iter().filter(|r| r.layer == layer && r.metric == metric).map(|r| r.step).collect();
        steps.sort();
        steps.dedup();
        // (updates are zero at initialisation: nothing to draw at step 0)
        steps.retain(|&t| t > 0 || !metric.metric.is_update());
        let mut fig = Figure::new(format!("{layer}: {metric}")).x_label("width n").y_label(metric.to_string()).log_x().log_y();
        let n = steps.len();
        for (i, &t) in steps.iter().enumerate() {
            let sm = self.seed_summary(layer, metric, t);
            let name = if i == 0 || i + 1 == n { format!("step {t}") } else { String::new() };
            fig = fig
                .series_with(name, sm.iter().map(|p| p.0).collect(), sm.iter().map(|p| p.1).collect(), Style::Solid, gradient(i, n))
                .band(sm.iter().map(|p| p.2).collect(), sm.iter().map(|p| p.3).collect());
        }
        if let (Some(c), Some(&last)) = (predicted, steps.last()) {
            let sm = self.seed_summary(layer, metric, last);
            if let Some(&(w0, y0, _, _)) = sm.first() {
                let xs: Vec<f64> = sm.iter().map(|p| p.0).collect();
                let ys = xs.iter().map(|w| y0 * (w / w0).powf(c)).collect();
                fig = fig.series_with(format!("predicted n^{c:+}"), xs, ys, Style::Dashed, (0, 0, 0));
            }
        }
        fig
    }

    /// `metric` of `layer` against the step, one line per width (seed mean).
    pub fn figure_vs_step(&self, layer: &str, metric: impl Into<MetricId>) -> Figure {
        let metric = metric.into();
        let mut fig = Figure::new(format!("{layer}: {metric} over training")).x_label("step").y_label(metric.to_string()).log_y();
        let n = self.check.widths().len();
        for (i, &w) in self.check.widths().iter().enumerate() {
            let mut by_step: std::collections::BTreeMap<usize, Vec<f64>> = Default::default();
            for r in self.rows.iter().filter(|r| r.width == w && r.layer == layer && r.metric == metric && r.value.is_finite()) {
                by_step.entry(r.step).or_default().push(r.value);
            }
            let (xs, ys): (Vec<f64>, Vec<f64>) = by_step.into_iter().map(|(t, v)| (t as f64, v.iter().sum::<f64>() / v.len() as f64)).unzip();
            fig = fig.series_with(format!("n = {w}"), xs, ys, Style::Solid, gradient(i, n));
        }
        fig
    }

    /// One panel per weight layer of `metric` against width (see [`Self::figure_vs_width`]);
    /// `predicted(layer)` gives the slope to draw.
    pub fn panels_vs_width(&self, metric: impl Into<MetricId>, predicted: &dyn Fn(&str) -> Option<f64>) -> Panels {
        let metric = metric.into();
        let layers: Vec<String> = self.layers().into_iter().filter(|l| l.ends_with(".weight")).collect();
        // layers whose metric is identically zero (e.g. the input layer's propagating update)
        // have nothing to draw on log axes
        let figs = layers.iter().map(|l| self.figure_vs_width(l, metric, predicted(l))).filter(|f| f.is_drawable()).collect::<Vec<_>>();
        let cols = figs.len().clamp(1, 3);
        Panels::new(figs, cols)
    }

    /// The RCC decomposition of one layer at one width over training (seed means):
    /// `||Delta(W x)||` next to its two parts, the effective and the propagating update.
    pub fn figure_decomposition(&self, layer: &str, width: i64) -> Figure {
        let mut fig = Figure::new(format!("{layer}, n = {width}: RCC decomposition")).x_label("step").y_label("RMS norm").log_y();
        for (i, metric) in [Metric::ActUpdate, Metric::Effective, Metric::Propagating].into_iter().enumerate() {
            let mut by_step: std::collections::BTreeMap<usize, Vec<f64>> = Default::default();
            for r in self.rows.iter().filter(|r| r.width == width && r.layer == layer && r.metric == metric && r.value.is_finite()) {
                by_step.entry(r.step).or_default().push(r.value);
            }
            let (xs, ys): (Vec<f64>, Vec<f64>) = by_step.into_iter().map(|(t, v)| (t as f64, v.iter().sum::<f64>() / v.len() as f64)).unzip();
            let style = if i == 0 { Style::Dashed } else { Style::Solid };
            fig = fig.series_with(metric.to_string(), xs, ys, style, crate::plot::PALETTE[i]);
        }
        fig
    }

    /// Checks the decomposition on every recorded (width, seed, step, layer): since
    /// `Delta(W x) = Delta W x + W_0 Delta x`, the norms satisfy
    /// `|eff - prop| <= act_update <= eff + prop`, up to `rel_tol (eff + prop)` plus the
    /// float32 rounding of the activations themselves (`1e-5 ||W x||`: `act_update` is a
    /// difference of two activations, so tiny updates carry their rounding). Returns
    /// (checked, violations).
    pub fn decomposition_consistency(&self, rel_tol: f64) -> (usize, usize) {
        use std::collections::HashMap;
        let mut m: HashMap<(i64, u64, usize, &str), [f64; 4]> = HashMap::new();
        for r in &self.rows {
            let k = match (r.metric.since, r.metric.metric) {
                (Since::Init, Metric::ActUpdate) => 0,
                (Since::Init, Metric::Effective) => 1,
                (Since::Init, Metric::Propagating) => 2,
                (Since::Init, Metric::Act) => 3,
                _ => continue,
            };
            m.entry((r.width, r.seed, r.step, r.layer.as_str())).or_insert([f64::NAN; 4])[k] = r.value;
        }
        let mut checked = 0;
        let mut bad = 0;
        for [a, e, p, act] in m.into_values() {
            if !(a.is_finite() && e.is_finite() && p.is_finite() && act.is_finite()) {
                continue;
            }
            checked += 1;
            let slack = rel_tol * (e + p) + 1e-5 * act;
            if a > e + p + slack || a < (e - p).abs() - slack {
                bad += 1;
            }
        }
        (checked, bad)
    }

    /// Layer names in forward order.
    pub fn layers(&self) -> Vec<String> {
        let mut seen = vec![];
        for r in &self.rows {
            if !seen.contains(&r.layer) {
                seen.push(r.layer.clone());
            }
        }
        seen
    }

    /// Writes the tidy table (width, seed, step, layer, metric, value) as CSV.
    pub fn write_csv(&self, path: &Path) -> Result<()> {
        let mut w = csv::Writer::from_writer(vec![]);
        for r in &self.rows {
            w.serialize(r).map_err(|e| Error::Serde(e.to_string()))?;
        }
        let bytes = w.into_inner().map_err(|e| Error::Serde(e.to_string()))?;
        crate::files::write_atomic(path, &bytes)
    }

    /// Writes the fits (layer, metric, step, exponent, stderr, ci, r2, points) as CSV.
    pub fn write_fits_csv(&self, path: &Path) -> Result<()> {
        let mut s = String::from("layer,metric,step,exponent,stderr,ci_low,ci_high,r2,points\n");
        for e in self.fits() {
            let p = e.fit;
            s += &format!(
                "{},{},{},{},{},{},{},{},{}\n",
                e.layer, e.metric, e.step, p.exponent, p.stderr, p.ci_low, p.ci_high, p.r2, p.points
            );
        }
        crate::files::write_atomic(path, s.as_bytes())
    }

    /// Writes everything as JSON.
    pub fn write_json(&self, path: &Path) -> Result<()> {
        crate::files::write_atomic(path, serde_json::to_string(self)?.as_bytes())
    }
}

impl CoordCheckResult {
    /// Verdicts for `metrics` of every weight layer at the last step: measured exponent
    /// (with CI) against both predictions, decided within `tol` ([`verdict`]: holds, deviates
    /// or inconclusive).
    pub fn verdicts(&self, metrics: &[MetricId], tol: f64) -> Result<Vec<VerdictRow>> {
        let first = predict(&self.check.setting(StepPhase::First)?)?;
        let later = predict(&self.check.setting(StepPhase::Later)?)?;
        let step = self.check.steps;
        let mut out = vec![];
        for layer in self.layers().iter().filter(|l| l.ends_with(".weight")) {
            for &metric in metrics {
                let pf = first.get(layer, metric).filter(|e| e.is_finite());
                let pl = later.get(layer, metric).filter(|e| e.is_finite());
                if pf.is_none() && pl.is_none() {
                    continue;
                }
                let Ok(fit) = self.fit(layer, metric, step) else { continue };
                out.push(VerdictRow {
                    layer: layer.clone(),
                    metric,
                    step,
                    first: pf.map(|p| verdict(p, &fit, tol)),
                    later: pl.map(|p| verdict(p, &fit, tol)),
                });
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::TeacherConfig;

    /// A coordinate check on generated teacher data (needs no files).
    fn teacher_check(widths: Vec<i64>) -> CoordCheck {
        let mut cc = CoordCheck::preset("e1", Profile::Smoke).unwrap();
        cc.train.data.dataset = DatasetName::Teacher;
        cc.train.data.teacher = TeacherConfig { d_in: 16, n_train: 256, n_test: 64 };
        cc.train.data.train_subset = None;
        cc.widths = widths;
        cc.seeds = vec![0, 1];
        cc.probe_size = 64;
        cc
    }

    #[test]
    fn runs_are_deterministic_and_fit_every_metric() {
        let cc = teacher_check(vec![16, 32, 64]);
        let a = run(&cc, false).unwrap();
        let b = run(&cc, false).unwrap();
        // bitwise equal (NaN alignment ratios at step 0 included)
        let bits = |r: &CoordCheckResult| r.rows.iter().map(|x| (x.width, x.step, x.layer.clone(), x.metric, x.value.to_bits())).collect::<Vec<_>>();
        assert_eq!(bits(&a), bits(&b));
        assert!(a.diverged.is_empty());
        let fits = a.fits();
        assert!(fits.iter().any(|f| f.metric == Metric::Effective && f.layer == "layers.1.weight" && f.step == 3));
        // 3 widths x 2 seeds of each (layer, metric, step)
        assert_eq!(a.points("layers.0.weight", Metric::Effective, 2).len(), 6);
        let dir = tempfile::tempdir().unwrap();
        a.write_csv(&dir.path().join("rows.csv")).unwrap();
        a.write_fits_csv(&dir.path().join("fits.csv")).unwrap();
        let text = std::fs::read_to_string(dir.path().join("rows.csv")).unwrap();
        assert!(text.starts_with("width,seed,step,layer,metric,value"));
        let svg = a.panels_vs_width(Metric::Effective, &|l| (l == "layers.0.weight").then_some(-1.0)).to_svg().unwrap();
        assert!(svg.contains("layers.1.weight: effective") && svg.contains("predicted n^-1"));
        assert!(a.figure_vs_step("layers.1.weight", Metric::Act).to_svg().unwrap().contains("n = 64"));
        assert!(a.figure_decomposition("layers.1.weight", 32).to_svg().unwrap().contains("propagating"));
        let (checked, bad) = a.decomposition_consistency(1e-3);
        assert!(checked > 50 && bad == 0, "{checked} {bad}");
    }

    #[test]
    fn sharpness_metrics_every_k_steps_are_deterministic_per_seed() {
        let mut cc = teacher_check(vec![16, 32]);
        let plain = run(&cc, false).unwrap();
        let config = crate::sharpness::SharpnessConfig { batch_size: Some(64), layers: true, ..Default::default() };
        cc.sharpness = Some(crate::sharpness::SharpnessEvery { every: 2, config });
        let a = run(&cc, false).unwrap();
        let b = run(&cc, false).unwrap();
        let bits = |r: &[Row]| r.iter().map(|x| (x.width, x.seed, x.step, x.layer.clone(), x.metric, x.value.to_bits())).collect::<Vec<_>>();
        assert_eq!(bits(&a.rows), bits(&b.rows), "same seeds, same rows");
        // the monitor's rows are those of the check without sharpness
        let sharp = |r: &Row| matches!(r.metric.metric, Metric::Curvature(_) | Metric::Residual(_) | Metric::HessianLoss);
        let monitor: Vec<Row> = a.rows.iter().filter(|r| !sharp(r)).cloned().collect();
        assert_eq!(bits(&monitor), bits(&plain.rows));
        // every run at steps 0 and 2 (3 steps): model-level and per-layer rows
        for (w, s) in [(16, 0), (16, 1), (32, 0), (32, 1)] {
            let steps: Vec<usize> = a.rows.iter().filter(|r| r.width == w && r.seed == s && r.layer == "model" && r.metric == crate::sharpness::metric::SHARPNESS).map(|r| r.step).collect();
            assert_eq!(steps, [0, 2]);
            for m in [crate::sharpness::metric::SHARPNESS_GN, crate::sharpness::metric::ETA_SHARPNESS] {
                assert!(a.rows.iter().any(|r| r.width == w && r.seed == s && r.metric == m && r.value > 0.0), "{m}");
            }
            assert!(a.rows.iter().any(|r| r.width == w && r.seed == s && r.layer == "layers.1.weight" && r.metric == crate::sharpness::metric::SHARPNESS_LAYER));
        }
        // different seeds, different batches and weights
        let at = |s: u64| a.rows.iter().find(|r| r.width == 16 && r.seed == s && r.step == 0 && r.metric == crate::sharpness::metric::SHARPNESS).unwrap().value;
        assert_ne!(at(0), at(1));
        // and it fits like every metric
        assert!(a.fit("model", crate::sharpness::metric::SHARPNESS, 2).unwrap().exponent.is_finite());
        cc.sharpness = Some(crate::sharpness::SharpnessEvery { every: 0, config: Default::default() });
        assert!(cc.validate().unwrap_err().to_string().contains("every"));
    }

    #[test]
    fn presets_and_errors() {
        for p in PRESETS {
            for prof in [Profile::Smoke, Profile::Quick, Profile::Paper] {
                CoordCheck::preset(p, prof).unwrap().validate().unwrap();
            }
        }
        assert!(CoordCheck::preset("e42", Profile::Quick).unwrap_err().to_string().contains("presets"));
        // every preset runs on the teacher data: its size follows the preset's subset
        for p in PRESETS {
            for prof in [Profile::Smoke, Profile::Quick, Profile::Paper] {
                let mut cc = CoordCheck::preset(p, prof).unwrap();
                let subset = cc.train.data.train_subset;
                cc.set_dataset(DatasetName::Teacher);
                cc.validate().unwrap();
                assert_eq!(cc.train.data.teacher.n_train, subset.unwrap_or(60_000));
                if prof == Profile::Smoke {
                    let splits = crate::data::load(&cc.train.data, 0).unwrap();
                    assert!(splits.train.len() >= cc.train.batch_size && splits.train.len() >= cc.probe_size, "{p}");
                }
            }
        }
        let mut cc = teacher_check(vec![16]);
        cc.widths = vec![0];
        assert!(run(&cc, false).is_err());
        assert!("huge".parse::<Profile>().is_err());
    }
}
