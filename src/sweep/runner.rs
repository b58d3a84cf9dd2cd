//! What a sweep trains: the [`Runner`] trait (resolve a config, estimate its cost, train it)
//! and its one implementation, [`ConfigRunner`], for every kind of run whose config is
//! [`Sweepable`]: [`MlpRunner`] for [`TrainConfig`] and [`GptRunner`] for [`GptTrainConfig`],
//! both trained by the one [`crate::train::Trainer`]. Both produce records with the same coordinates (`width`, `lr`,
//! `seed`, `loss`, `optimizer`, ...) and metrics (`train_loss`, `test_loss`, ...), so the
//! engine, store, export and analysis work unchanged. For the GPT, `test_*` is the final
//! validation loss/accuracy and `train_*` the loss/accuracy on fixed training windows (the
//! quantity the paper's GPT instability rule "loss worse than the optimum + 1" reads).
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::train::gpt::GptTrainConfig;
use crate::train::{EvalRecord, Outcome, RunConfig, TrainConfig};
use crate::{Error, Result};

/// The kind of run a sweep trains.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunKind {
    /// An MLP trained by [`crate::train`]; `base` is a [`TrainConfig`].
    #[default]
    Mlp,
    /// A GPT trained by [`crate::train::gpt`]; `base` is a [`GptTrainConfig`].
    Gpt,
}

impl std::fmt::Display for RunKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RunKind::Mlp => "mlp",
            RunKind::Gpt => "gpt",
        })
    }
}

impl RunKind {
    /// The runner for this kind.
    pub fn runner(self) -> Box<dyn Runner> {
        match self {
            RunKind::Mlp => Box::new(ConfigRunner::<TrainConfig>::default()),
            RunKind::Gpt => Box::new(ConfigRunner::<GptTrainConfig>::default()),
        }
    }
}

/// Size of a run, for scheduling.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RunCost {
    /// Trainable and frozen parameters.
    pub params: u64,
    pub steps: u64,
}

/// What a run produced (metrics `None` when not finite).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunOutput {
    pub outcome: Outcome,
    pub steps: usize,
    pub train_loss: Option<f64>,
    pub train_acc: Option<f64>,
    pub test_loss: Option<f64>,
    pub test_acc: Option<f64>,
    /// Mini-batch loss of the last step.
    pub final_batch_loss: Option<f64>,
    /// The mini-batch loss curve, averaged into at most [`CURVE_POINTS`] windows
    /// (`None` where a window holds a non-finite loss).
    pub loss_curve: Vec<Option<f64>>,
}

/// Length of the stored loss curve.
pub const CURVE_POINTS: usize = 64;

/// A finished run as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub key: String,
    /// Name of the sweep that computed it.
    pub sweep: String,
    pub kind: RunKind,
    /// Standard coordinates of the run (`width`, `depth`, `lr`, `seed`, `loss`, ...).
    pub coords: BTreeMap<String, Value>,
    /// The canonical resolved config.
    pub config: Value,
    pub output: RunOutput,
    /// Wall time of the run.
    pub seconds: f64,
    /// libtorch threads it used.
    pub threads: usize,
    /// `host:pid` of the process that computed it.
    pub owner: String,
    /// Seconds since the Unix epoch at the end of the run.
    pub finished_at: f64,
}

impl RunRecord {
    /// Whether two records hold the same result (everything but timing and provenance).
    pub fn same_result(&self, other: &RunRecord) -> bool {
        self.key == other.key && self.kind == other.kind && self.coords == other.coords && self.config == other.config && self.output == other.output
    }
    pub fn diverged(&self) -> bool {
        matches!(self.output.outcome, Outcome::Diverged { .. })
    }
    /// A numeric coordinate (`width`, `lr`, `seed`, `depth`).
    pub fn num(&self, name: &str) -> Option<f64> {
        self.coords.get(name).and_then(Value::as_f64)
    }
    /// A coordinate as text.
    pub fn text(&self, name: &str) -> Option<String> {
        self.coords.get(name).map(super::plain)
    }
    /// Number of classes of the run's targets (chance accuracy is its inverse): from the
    /// `dataset` coordinate of an MLP run, the tokenizer's vocabulary of a GPT run.
    pub fn num_classes(&self) -> Option<i64> {
        match self.kind {
            RunKind::Mlp => self.text("dataset")?.parse::<crate::data::DatasetName>().ok().map(crate::data::DatasetName::num_classes),
            RunKind::Gpt => self.config.get("data")?.get("vocab_size")?.as_i64(),
        }
    }
    /// Adds the coordinates its run kind derives from its config today that the record lacks
    /// (a record written before a coordinate such as `logit_norm` existed). Coordinates are
    /// a function of the config, so this is what the run would record now; records whose
    /// config cannot be read are left as they are.
    pub fn fill_coords(&mut self) {
        if !self.config.is_object() {
            return;
        }
        if let Ok(now) = self.kind.runner().coords(&self.config) {
            for (k, v) in now {
                self.coords.entry(k).or_insert(v);
            }
        }
    }
}

/// Trains one kind of run for the sweep engine.
pub trait Runner: Sync + Send {
    fn kind(&self) -> RunKind;
    /// The config path an axis name stands for (`width` -> `model.width`); other names are
    /// dotted paths already.
    fn axis_path(&self, axis: &str) -> String;
    /// The canonical config of `base` with the axis values set: validated, defaults filled
    /// in, scheduler-only fields (threads) removed.
    fn resolve(&self, base: &Value, axes: &BTreeMap<String, Value>) -> Result<Value>;
    /// Standard coordinates of a resolved config (for records, export and analysis).
    fn coords(&self, config: &Value) -> Result<BTreeMap<String, Value>>;
    /// Size of the run.
    fn cost(&self, config: &Value) -> Result<RunCost>;
    /// Checks, before a sweep trains anything, that this machine can hold the run (memory);
    /// [`Runner::resolve`] checks only what holds anywhere. Default: nothing to check.
    fn check_fits(&self, _config: &Value) -> Result<()> {
        Ok(())
    }
    /// Trains the run with `threads` libtorch threads (set by the caller's thread).
    fn run(&self, config: &Value, threads: usize) -> Result<RunOutput>;
}

/// Sets `path` (dot-separated) in a JSON object, creating objects on the way.
pub fn set_path(root: &mut Value, path: &str, value: Value) -> Result<()> {
    let mut cur = root;
    let parts: Vec<&str> = path.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        if part.is_empty() {
            return Err(Error::config(format!("axis path `{path}` has an empty component")));
        }
        let obj = match cur {
            Value::Object(m) => m,
            Value::Null => {
                *cur = Value::Object(Default::default());
                match cur {
                    Value::Object(m) => m,
                    _ => unreachable!("just set"),
                }
            }
            _ => return Err(Error::config(format!("axis path `{path}`: `{}` is not a table", parts[..i].join(".")))),
        };
        if i + 1 == parts.len() {
            obj.insert(part.to_string(), value);
            return Ok(());
        }
        cur = obj.entry(part.to_string()).or_insert(Value::Object(Default::default()));
    }
    Ok(())
}

/// `base` (or an empty object) with every axis value set at its config path.
fn apply_axes(base: &Value, axes: &BTreeMap<String, Value>, path: impl Fn(&str) -> String) -> Result<Value> {
    let mut v = if base.is_null() { Value::Object(Default::default()) } else { base.clone() };
    for (name, value) in axes {
        set_path(&mut v, &path(name), value.clone())?;
    }
    Ok(v)
}

/// `common_coords!(config)`: the coordinates every run kind records, from a `TrainConfig`
/// or a `GptTrainConfig` (both name these settings alike).
fn typed<T: serde::de::DeserializeOwned>(config: &Value) -> Result<T> {
    serde_json::from_value(config.clone()).map_err(|e| Error::config(e.to_string()))
}

/// What a sweep needs of a kind of run beyond training it: its kind, the config paths of the
/// axes it names, its coordinates and its cost. [`TrainConfig`] and [`GptTrainConfig`]; one
/// [`ConfigRunner`] runs either.
pub trait Sweepable: RunConfig {
    const KIND: RunKind;
    /// The config path an axis sets (`width` -> `model.width`); other names are paths.
    fn axis_path(axis: &str) -> Option<&'static str>;
    /// Completes a resolved config (e.g. the GPT's vocabulary from its tokenizer).
    fn complete(&mut self) {}
    /// Validates the config (without loading data).
    fn validate_config(&self) -> Result<()>;
    /// The record's coordinates (width, lr, seed, loss, ... and what this kind varies).
    fn coords(&self) -> Result<BTreeMap<String, Value>>;
    /// The size of the run, for scheduling.
    fn cost(&self) -> Result<RunCost>;
    fn set_threads(&mut self, threads: Option<usize>);
}

/// The coordinates every kind of run has.
fn common_coords(width: i64, depth: usize, s: &crate::train::Settings, param: &crate::train::ParamSpec, alpha: Option<f64>, base_width: Option<f64>) -> Result<BTreeMap<String, Value>> {
    let mut m = BTreeMap::new();
    m.insert("width".to_string(), Value::from(width));
    m.insert("depth".into(), Value::from(depth));
    m.insert("lr".into(), Value::from(s.lr));
    m.insert("seed".into(), Value::from(s.seed));
    m.insert("loss".into(), Value::from(s.loss.kind.to_string()));
    m.insert("optimizer".into(), serde_json::to_value(s.optim.kind)?);
    m.insert("param".into(), Value::from(param.name()));
    m.insert("alpha".into(), alpha.map_or(Value::Null, Value::from));
    m.insert("base_width".into(), base_width.map_or(Value::Null, Value::from));
    Ok(m)
}

impl Sweepable for TrainConfig {
    const KIND: RunKind = RunKind::Mlp;

    fn axis_path(axis: &str) -> Option<&'static str> {
        Some(match axis {
            "width" => "model.width",
            "depth" => "model.depth",
            "loss" => "loss.kind",
            "optimizer" => "optim.kind",
            "dataset" => "data.dataset",
            "train_subset" => "data.train_subset",
            _ => return None,
        })
    }

    fn validate_config(&self) -> Result<()> {
        self.validate()
    }

    fn coords(&self) -> Result<BTreeMap<String, Value>> {
        let mut m = common_coords(self.model.width, self.model.depth, &self.settings(), &self.param, self.alpha, self.base_width)?;
        m.insert("dataset".into(), Value::from(self.data.dataset.to_string()));
        // Model switches that sweeps vary (Fig. F.17, F.19): coordinates too, so analysis
        // groups and CSV columns carry them.
        m.insert("logit_norm".into(), Value::from(self.model.logit_norm));
        m.insert("freeze".into(), serde_json::to_value(self.model.freeze)?);
        Ok(m)
    }

    fn cost(&self) -> Result<RunCost> {
        self.validate()?;
        let (_, _, n_data, _) = self.data.shape();
        let steps = self.planned_steps(self.data.train_subset.unwrap_or(n_data).min(n_data))?;
        Ok(RunCost { params: self.model_config().num_params_f64() as u64, steps: steps as u64 })
    }

    fn set_threads(&mut self, threads: Option<usize>) {
        self.threads = threads;
    }
}

impl Sweepable for GptTrainConfig {
    const KIND: RunKind = RunKind::Gpt;

    fn axis_path(axis: &str) -> Option<&'static str> {
        Some(match axis {
            "width" => "model.width",
            "depth" => "model.depth",
            "train_norms" => "model.train_norms",
            "loss" => "loss.kind",
            "optimizer" => "optim.kind",
            "seq_len" => "data.seq_len",
            _ => return None,
        })
    }

    /// The model's vocabulary is the tokenizer's: one value in the key.
    fn complete(&mut self) {
        self.model.vocab_size = self.data.vocab_size as i64;
    }

    fn validate_config(&self) -> Result<()> {
        self.validate()
    }

    fn coords(&self) -> Result<BTreeMap<String, Value>> {
        let text = match self.data.source {
            crate::data::text::TextSource::Shakespeare => "shakespeare",
            crate::data::text::TextSource::Generated { .. } => "generated",
        };
        let mut m = common_coords(self.model.width, self.model.depth, &self.settings(), &self.param, self.alpha, self.base_width)?;
        m.insert("train_norms".into(), Value::from(self.model.train_norms));
        m.insert("text".into(), Value::from(text));
        Ok(m)
    }

    fn cost(&self) -> Result<RunCost> {
        self.validate()?;
        Ok(RunCost { params: self.model_config().num_params_f64() as u64, steps: self.steps as u64 })
    }

    fn set_threads(&mut self, threads: Option<usize>) {
        self.threads = threads;
    }
}

/// The MLP's runner.
pub type MlpRunner = ConfigRunner<TrainConfig>;
/// The GPT's runner.
pub type GptRunner = ConfigRunner<GptTrainConfig>;

/// The sweep runner of every kind of run: resolves, prices and trains configs of type `C` by
/// the one [`crate::train::Trainer`].
pub struct ConfigRunner<C>(std::marker::PhantomData<fn() -> C>);

impl<C> Default for ConfigRunner<C> {
    fn default() -> Self {
        ConfigRunner(std::marker::PhantomData)
    }
}

impl<C: Sweepable> Runner for ConfigRunner<C> {
    fn kind(&self) -> RunKind {
        C::KIND
    }

    fn axis_path(&self, axis: &str) -> String {
        C::axis_path(axis).unwrap_or(axis).to_string()
    }

    fn resolve(&self, base: &Value, axes: &BTreeMap<String, Value>) -> Result<Value> {
        let v = apply_axes(base, axes, |a| self.axis_path(a))?;
        let mut cfg = typed::<C>(&v)?;
        cfg.set_threads(None);
        cfg.complete();
        cfg.validate_config()?;
        Ok(serde_json::to_value(&cfg)?)
    }

    fn coords(&self, config: &Value) -> Result<BTreeMap<String, Value>> {
        typed::<C>(config)?.coords()
    }

    fn check_fits(&self, config: &Value) -> Result<()> {
        RunConfig::check_fits(&typed::<C>(config)?)
    }

    fn cost(&self, config: &Value) -> Result<RunCost> {
        typed::<C>(config)?.cost()
    }

    fn run(&self, config: &Value, threads: usize) -> Result<RunOutput> {
        let mut cfg = typed::<C>(config)?;
        cfg.set_threads(Some(threads.max(1)));
        let r = crate::train::train(&cfg, false)?;
        Ok(output(r.outcome.clone(), r.steps, r.last.as_ref(), &r.batch_losses))
    }
}

fn output(outcome: Outcome, steps: usize, last: Option<&EvalRecord>, batch_losses: &[f64]) -> RunOutput {
    let fin = |x: f64| x.is_finite().then_some(x);
    RunOutput {
        outcome,
        steps,
        train_loss: last.and_then(|e| fin(e.train_loss)),
        train_acc: last.and_then(|e| fin(e.train_acc)),
        test_loss: last.and_then(|e| e.test_loss.and_then(fin)),
        test_acc: last.and_then(|e| e.test_acc.and_then(fin)),
        final_batch_loss: batch_losses.last().copied().and_then(fin),
        loss_curve: thin_curve(batch_losses, CURVE_POINTS),
    }
}

/// Averages `xs` into at most `points` consecutive windows of equal length (`None` for a
/// window with a non-finite value).
pub fn thin_curve(xs: &[f64], points: usize) -> Vec<Option<f64>> {
    if xs.is_empty() || points == 0 {
        return vec![];
    }
    let w = xs.len().div_ceil(points);
    xs.chunks(w)
        .map(|c| {
            let m = c.iter().sum::<f64>() / c.len() as f64;
            m.is_finite().then_some(m)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_path_creates_and_refuses() {
        let mut v = serde_json::json!({"model": {"depth": 3}});
        set_path(&mut v, "model.width", Value::from(64)).unwrap();
        set_path(&mut v, "optim.momentum", Value::from(0.9)).unwrap();
        assert_eq!(v, serde_json::json!({"model": {"depth": 3, "width": 64}, "optim": {"momentum": 0.9}}));
        assert!(set_path(&mut v, "model.width.x", Value::from(1)).unwrap_err().to_string().contains("not a table"));
        assert!(set_path(&mut v, "a..b", Value::from(1)).is_err());
    }

    #[test]
    fn thin_curve_averages_windows() {
        // windows of ceil(5/2) = 3: [1, 3, 5], [7, 9]
        assert_eq!(thin_curve(&[1.0, 3.0, 5.0, 7.0, 9.0], 2), vec![Some(3.0), Some(8.0)]);
        assert_eq!(thin_curve(&[1.0, f64::NAN], 4), vec![Some(1.0), None]);
        assert!(thin_curve(&[], 4).is_empty());
    }

    #[test]
    fn mlp_cost_and_coords() {
        let r = MlpRunner::default();
        let axes: BTreeMap<String, Value> = [("width".to_string(), Value::from(100)), ("depth".to_string(), Value::from(3)), ("loss".to_string(), Value::from("mse"))].into();
        let base = serde_json::json!({"data": {"train_subset": 640}, "batch_size": 64});
        let c = r.resolve(&base, &axes).unwrap();
        let cost = r.cost(&c).unwrap();
        // 784*100 + 100*100 + 100*10
        assert_eq!(cost.params, 78_400 + 10_000 + 1_000);
        assert_eq!(cost.steps, 10);
        let co = r.coords(&c).unwrap();
        assert_eq!(co["width"], 100);
        assert_eq!(co["loss"], "mse");
        assert_eq!(co["optimizer"], "sgd");
        assert_eq!((co["logit_norm"].clone(), co["freeze"].clone()), (Value::from(false), Value::from("none")));
        let ln = r.resolve(&base, &[("model.logit_norm".to_string(), Value::from(true)), ("model.freeze".to_string(), Value::from("random-features"))].into()).unwrap();
        let co = r.coords(&ln).unwrap();
        assert_eq!((co["logit_norm"].clone(), co["freeze"].clone()), (Value::from(true), Value::from("random-features")));
        // A record written before these coordinates existed gets them from its config.
        let mut old = RunRecord {
            key: "k".into(),
            sweep: "s".into(),
            kind: RunKind::Mlp,
            coords: [("width".to_string(), Value::from(100))].into(),
            config: ln,
            output: RunOutput { outcome: Outcome::Completed, steps: 1, train_loss: None, train_acc: None, test_loss: None, test_acc: None, final_batch_loss: None, loss_curve: vec![] },
            seconds: 0.0,
            threads: 1,
            owner: "h:1".into(),
            finished_at: 0.0,
        };
        old.fill_coords();
        assert_eq!((old.coords["logit_norm"].clone(), old.coords["depth"].clone(), old.coords["width"].clone()), (Value::from(true), Value::from(8), Value::from(100)));
        assert!(r.resolve(&base, &[("width".to_string(), Value::from(0))].into()).unwrap_err().to_string().contains("width"));
    }

    #[test]
    fn gpt_cost_coords_and_axes() {
        let r = GptRunner::default();
        let axes: BTreeMap<String, Value> = [("width".to_string(), Value::from(64)), ("train_norms".to_string(), Value::from(false)), ("optimizer".to_string(), Value::from("sgd"))].into();
        let base = serde_json::json!({"model": {"depth": 2, "head_dim": 16}, "data": {"source": {"type": "generated", "chars": 1000}, "vocab_size": 400, "seq_len": 16}, "steps": 7});
        let c = r.resolve(&base, &axes).unwrap();
        let cost = r.cost(&c).unwrap();
        // closed form of GptConfig::num_params at V = 400, n = 64, L = 2, d_head = 16
        let (v, n) = (400u64, 64u64);
        assert_eq!(cost.params, 2 * v * n + 2 * n + 2 * (12 * n * n + 4 * n + 4 * 16 + 9 * n));
        assert_eq!(cost.steps, 7);
        assert_eq!(c["model"]["vocab_size"], 400);
        let co = r.coords(&c).unwrap();
        assert_eq!((co["width"].clone(), co["train_norms"].clone(), co["optimizer"].clone(), co["text"].clone()), (Value::from(64), Value::from(false), Value::from("sgd"), Value::from("generated")));
        assert_eq!(co["loss"], "ce");
        assert!(r.resolve(&base, &[("width".to_string(), Value::from(40))].into()).unwrap_err().to_string().contains("head_dim"));
        assert!(r.resolve(&base, &[("model.nope".to_string(), Value::from(1))].into()).unwrap_err().to_string().contains("nope"));
    }
}
