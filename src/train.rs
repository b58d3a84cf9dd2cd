//! Training: one [`Trainer`] for every kind of run, stepped by hand (from a notebook) or run to
//! the end, with a JSON-serialisable [`TrainResult`].
//!
//! A kind of run is its config ([`RunConfig`]): [`TrainConfig`] trains an MLP on images,
//! [`gpt::GptTrainConfig`] a GPT on text. The config declares the model it builds, the data it
//! trains on ([`Batches`]: batches, evaluation, probe and curvature batches) and the settings
//! the trainer reads ([`Settings`]); how a model takes a step is its [`TrainStep`] (autograd by
//! default; the MLP's hand-written backward and fused SGD, [`mlp_step`]). The trainer, its
//! loop, the coordinate-check runner ([`crate::rcc::runner::monitored_run`]), the sharpness
//! runner and the sweep runner ([`crate::sweep::runner::ConfigRunner`]) are written once
//! against these traits, so a new model needs a config, its data and nothing else.
//!
//! Divergence is an outcome, not an error: a non-finite mini-batch loss (or, optionally, a
//! loss above `max_loss`) stops the run and is recorded in [`Outcome::Diverged`]; so does an
//! evaluation (periodic or final) with a non-finite training or test loss, whatever the step
//! count (the last step's update can blow the weights up after its batch loss was finite). Everything random
//! (init, data order, subsets) derives from `seed`, so the same config gives bitwise the same
//! weights on CPU.
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::data::{self, DataConfig, Dataset};
use crate::device::{with_autocast, DeviceChoice};
use crate::loss::{accuracy, Loss};
use crate::model::{Mlp, MlpConfig, Model, Network};
use crate::limits;
use crate::optim::{gradients, LowRankStep, OptimConfig, Optimizer, StepStats};
use crate::param::Parameterization;
use crate::rng::{self, stream};
use crate::{Error, Result};

pub mod gpt;

/// A parameterization given by built-in name (`"sp"`) or spelled out inline.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ParamSpec {
    Name(String),
    Inline(Box<Parameterization>),
}

impl Default for ParamSpec {
    fn default() -> Self {
        ParamSpec::Name("sp".into())
    }
}

impl ParamSpec {
    /// The parameterization this spec names.
    pub fn resolve(&self) -> Result<Parameterization> {
        match self {
            ParamSpec::Name(n) => Parameterization::builtin(n),
            ParamSpec::Inline(p) => {
                p.validate()?;
                Ok((**p).clone())
            }
        }
    }

    /// The parameterization with optional overrides of its global learning-rate exponent
    /// `alpha` and of the base width `n0` of its per-layer rules.
    pub fn resolve_with(&self, alpha: Option<f64>, base_width: Option<f64>) -> Result<Parameterization> {
        let mut p = self.resolve()?;
        if let Some(a) = alpha {
            p = p.with_alpha(a);
        }
        if let Some(n0) = base_width {
            p = p.with_base_width(n0);
        }
        p.validate()?;
        Ok(p)
    }

    /// The parameterization's name (without resolving it).
    pub fn name(&self) -> &str {
        match self {
            ParamSpec::Name(n) => n,
            ParamSpec::Inline(p) => &p.name,
        }
    }
}

/// Evaluation settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvalConfig {
    /// Evaluate every this many steps (0: only at the end).
    pub every: usize,
    /// Evaluate training metrics on a fixed random subset of this many training points
    /// (`None`: the whole training set).
    pub train_subset: Option<usize>,
    /// Also evaluate on the test split.
    pub test: bool,
}

impl Default for EvalConfig {
    fn default() -> Self {
        EvalConfig { every: 0, train_subset: Some(10_000), test: true }
    }
}

/// Everything that defines a training run. Defaults: the paper's MLP setting (8 layers,
/// width 256, SP, SGD without momentum, batch 64, one epoch of Fashion-MNIST, CE).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    pub seed: u64,
    pub device: DeviceChoice,
    /// libtorch threads (`None`: libtorch's default, all cores).
    pub threads: Option<usize>,
    /// `d_in`/`d_out` are taken from the dataset.
    pub model: MlpConfig,
    pub param: ParamSpec,
    /// Overrides the parameterization's global learning-rate exponent `alpha`
    /// (`eta_n = lr (n/256)^-alpha`).
    pub alpha: Option<f64>,
    /// Overrides the base width `n0` of the parameterization's per-layer rules (default: the
    /// parameterization's, 1 for the built-ins: absolute `n`, the paper's convention; e.g. 256
    /// makes every parameterization equal SP at width 256, see [`crate::param`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_width: Option<f64>,
    /// Base learning rate `eta`.
    pub lr: f64,
    pub loss: Loss,
    pub optim: OptimConfig,
    pub data: DataConfig,
    pub batch_size: usize,
    /// Number of steps; if unset, `epochs` passes over the training set.
    pub steps: Option<usize>,
    pub epochs: f64,
    pub eval: EvalConfig,
    /// Also stop as diverged when the training loss exceeds this.
    pub max_loss: Option<f64>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            seed: 0,
            device: DeviceChoice::Cpu,
            threads: None,
            model: MlpConfig::default(),
            param: ParamSpec::default(),
            alpha: None,
            base_width: None,
            lr: 0.1,
            loss: Loss::default(),
            optim: OptimConfig::default(),
            data: DataConfig::default(),
            batch_size: 64,
            steps: None,
            epochs: 1.0,
            eval: EvalConfig::default(),
            max_loss: None,
        }
    }
}

impl TrainConfig {
    /// Reads a config from a TOML or JSON file (by extension; TOML otherwise).
    pub fn from_file(path: &std::path::Path) -> Result<Self> {
        crate::config::read_config(path)
    }

    /// The parameterization with the `alpha` and `base_width` overrides applied.
    pub fn parameterization(&self) -> Result<Parameterization> {
        self.param.resolve_with(self.alpha, self.base_width)
    }

    /// Checks everything that can be checked without loading data, sizes included: steps,
    /// depth and threads against [`limits`]. Whether this machine can hold the run is
    /// [`TrainConfig::check_fits`] (a sweep's configs are validated wherever it is planned,
    /// but run where they fit).
    pub fn validate(&self) -> Result<()> {
        if self.batch_size == 0 {
            return Err(Error::config("batch_size must be >= 1"));
        }
        if !(self.lr.is_finite() && self.lr >= 0.0) {
            return Err(Error::config(format!("lr must be finite and >= 0, got {}", self.lr)));
        }
        if self.steps.is_none() && !(self.epochs > 0.0 && self.epochs.is_finite()) {
            return Err(Error::config(format!("epochs must be > 0, got {}", self.epochs)));
        }
        if let Some(t) = self.threads {
            limits::check_threads("threads", t)?;
        }
        self.parameterization()?;
        self.optim.validate()?;
        self.model_config().validate()?;
        self.planned_steps(self.n_train())?;
        Ok(())
    }

    /// Checks that a run fits in this machine's memory ([`TrainConfig::min_memory_bytes`]
    /// against [`limits::memory_bytes`]) when it runs on the CPU; on CUDA, whose memory
    /// libtorch does not report, a failed allocation of the weights is libtorch's error.
    pub fn check_fits(&self) -> Result<()> {
        self.validate()?;
        if self.device.resolve()? != Device::Cpu {
            return Ok(());
        }
        let steps = self.planned_steps(self.n_train())?;
        let c = &self.model;
        limits::check_memory(&format!("an MLP of width {} and depth {} (batch {}, {steps} steps)", c.width, c.depth, self.batch_size), self.min_memory_bytes(steps))
    }

    /// Training points before loading: the subset, or the dataset's standard size.
    fn n_train(&self) -> usize {
        let (_, _, n_data, _) = self.data.shape();
        self.data.train_subset.unwrap_or(n_data).min(n_data)
    }

    /// The model config with the dataset's input and output dimensions.
    pub fn model_config(&self) -> MlpConfig {
        let (d_in, d_out, _, _) = self.data.shape();
        MlpConfig { d_in, d_out, ..self.model.clone() }
    }

    /// The number of steps of a run on `n_train` points: `steps`, or `epochs` passes of
    /// `batch_size` (rounded up); more than [`limits::MAX_STEPS`] is an error.
    pub fn planned_steps(&self, n_train: usize) -> Result<usize> {
        let steps = match self.steps {
            Some(s) => s as f64,
            None => (self.epochs * n_train as f64 / self.batch_size as f64).ceil(),
        };
        limits::check_steps("the training run", steps)?;
        Ok(steps as usize)
    }

    /// A lower bound of the memory a run of `steps` steps needs: parameters with their
    /// gradients and optimizer state (4 bytes each), one batch of activations and their
    /// gradients, the data, the loss of every step, libtorch's bookkeeping per layer.
    pub fn min_memory_bytes(&self, steps: usize) -> f64 {
        let model = self.model_config();
        let params = model.num_params_f64() * 4.0 * (2 + self.optim.state_slots()) as f64;
        let activations = 2.0 * 4.0 * self.batch_size as f64 * model.width as f64 * model.depth as f64;
        let per_layer = limits::BYTES_PER_LAYER * model.depth as f64;
        params + activations + self.data.min_memory_bytes() + 8.0 * steps as f64 + per_layer
    }
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "status")]
pub enum Outcome {
    Completed,
    /// Stopped at `step` because the loss became non-finite or exceeded `max_loss`, or an
    /// evaluation after `step` steps had a non-finite loss. `reason` says which; it contains
    /// "non-finite" in the first and last case.
    Diverged { step: usize, reason: String },
}

/// Metrics at one evaluation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalRecord {
    /// Steps taken before this evaluation.
    pub step: usize,
    pub train_loss: f64,
    pub train_acc: f64,
    pub test_loss: Option<f64>,
    pub test_acc: Option<f64>,
}

/// The result of a run of any kind ([`TrainConfig`]: an MLP, [`gpt::GptTrainConfig`]: a
/// GPT), serialisable to JSON.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(bound(serialize = "C: Serialize", deserialize = "C: serde::de::DeserializeOwned"))]
pub struct TrainResult<C = TrainConfig> {
    pub config: C,
    pub parameterization: String,
    pub width: i64,
    pub num_params: i64,
    pub outcome: Outcome,
    pub steps: usize,
    /// Mini-batch loss of each step (before its update).
    pub batch_losses: Vec<f64>,
    pub evals: Vec<EvalRecord>,
    /// The last evaluation (at the end of training or at divergence).
    pub last: Option<EvalRecord>,
    pub seconds: f64,
    pub steps_per_second: f64,
    /// Training tokens per second (`batch_size * seq_len * steps_per_second`), for runs on
    /// token sequences (the GPT).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_second: Option<f64>,
}

impl<C> TrainResult<C> {
    /// Whether the run diverged.
    pub fn diverged(&self) -> bool {
        matches!(self.outcome, Outcome::Diverged { .. })
    }

    /// Test (for the GPT: validation) loss of the last evaluation.
    pub fn test_loss(&self) -> Option<f64> {
        self.last.as_ref().and_then(|e| e.test_loss)
    }
}

/// What a step leaves for a [`StepHook`].
pub struct StepOutput<'a> {
    pub stats: &'a StepStats,
    /// The gradients the optimizer applied, one per parameter (`None` for frozen parameters,
    /// and for weights whose step is in `low_rank`); empty when not kept.
    pub grads: &'a [Option<Tensor>],
    /// For a plain-SGD step fused into the MLP's backward pass, each trained weight's step
    /// in low-rank form (see [`LowRankStep`]); empty otherwise.
    pub low_rank: &'a [Option<LowRankStep>],
    /// The optimizer after the step (its learning rates and state, e.g. Adam's
    /// preconditioner for [`crate::sharpness`]), when the trainer exposes it.
    pub optimizer: Option<&'a Optimizer>,
}

impl<'a> StepOutput<'a> {
    /// What `optimizer`'s last step left.
    pub fn of(stats: &'a StepStats, optimizer: &'a Optimizer) -> Self {
        StepOutput { stats, grads: optimizer.last_gradients(), low_rank: optimizer.last_low_rank(), optimizer: Some(optimizer) }
    }
}

/// Something that watches training (e.g. the RCC monitor): called after every step.
///
/// Every hook states whether it reads the step's gradients ([`StepHook::needs_gradients`],
/// no default), because the answer decides the step's path ([`StepPath`]): plain-SGD steps of
/// an MLP run fused into its hand-written backward pass only while no hook needs gradient
/// tensors; a hook that says yes moves the run to the unfused path (the hand-written backward,
/// then the optimizer), which keeps every gradient for [`StepOutput::grads`] and is slower.
/// The training loop says once per process on stderr which path its steps take.
pub trait StepHook {
    /// Called once before the first step.
    fn start(&mut self, _model: &dyn Model) -> Result<()> {
        Ok(())
    }
    /// Called before step `step` (1-based: the step about to be taken), with the weights
    /// `W_{step-1}`.
    fn before_step(&mut self, _step: usize, _model: &dyn Model) -> Result<()> {
        Ok(())
    }
    /// Called after step `step` (1-based count of steps taken), with the weights `W_step`
    /// and what the step left (`out`).
    fn after_step(&mut self, step: usize, model: &dyn Model, out: &StepOutput) -> Result<()>;
    /// Whether the hook reads every parameter's gradient as a tensor. If not, plain-SGD steps
    /// stay fused and leave their weights' steps in low-rank form only
    /// ([`StepOutput::low_rank`]; the biases' gradients are still in [`StepOutput::grads`]).
    fn needs_gradients(&self) -> bool;
}

/// How a training step computes its update. The training loop says on stderr, once per
/// process for each path, which one its steps take and why (as nanoGPT prints "using fused
/// AdamW"), so a run that left the fast path is visible; notebooks see at most three lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepPath {
    /// Plain SGD fused into the MLP's hand-written backward pass ([`Mlp::manual_sgd_step`]):
    /// no gradient tensor for the weights, each weight updated by one matrix product.
    FusedSgd,
    /// The MLP's hand-written backward pass ([`Mlp::manual_gradients`]), then the optimizer's
    /// update (momentum, Adam, SAM; or plain SGD whose gradients a hook reads).
    ManualBackward,
    /// Autograd's backward pass, then the optimizer's update (the GPT; an MLP with
    /// normalisation layers or an activation without a hand-written derivative).
    Autograd,
}

impl StepPath {
    /// Says on stderr that training steps take this path, because `why`: once per process for
    /// each path (later reasons for the same path are not shown).
    pub fn announce(self, why: &str) {
        use std::sync::atomic::{AtomicBool, Ordering};
        static SAID: [AtomicBool; 3] = [const { AtomicBool::new(false) }; 3];
        if !SAID[self as usize].swap(true, Ordering::Relaxed) {
            eprintln!("widthlab: training steps {} ({why})", self.describe());
        }
    }

    /// What the path does, in words.
    pub fn describe(self) -> &'static str {
        match self {
            StepPath::FusedSgd => "run plain SGD fused into the MLP's hand-written backward pass",
            StepPath::ManualBackward => "take gradients from the MLP's hand-written backward pass, then the optimizer's update",
            StepPath::Autograd => "take gradients from autograd, then the optimizer's update",
        }
    }
}

/// Several hooks watching one run, called in order at every event (e.g. the RCC monitor and
/// the sharpness measurements, [`crate::sharpness::SharpnessHook`]); gradients are kept if
/// any of them needs them.
pub struct Hooks<'a>(pub Vec<&'a mut dyn StepHook>);

impl StepHook for Hooks<'_> {
    fn start(&mut self, model: &dyn Model) -> Result<()> {
        self.0.iter_mut().try_for_each(|h| h.start(model))
    }
    fn before_step(&mut self, step: usize, model: &dyn Model) -> Result<()> {
        self.0.iter_mut().try_for_each(|h| h.before_step(step, model))
    }
    fn after_step(&mut self, step: usize, model: &dyn Model, out: &StepOutput) -> Result<()> {
        self.0.iter_mut().try_for_each(|h| h.after_step(step, model, out))
    }
    fn needs_gradients(&self) -> bool {
        self.0.iter().any(|h| h.needs_gradients())
    }
}

/// What a kind of training run declares: the model it builds, the data it trains on, and the
/// settings the one [`Trainer`] reads. [`TrainConfig`] (an MLP on images) and
/// [`gpt::GptTrainConfig`] (a GPT on text) are the two built in; everything model-specific of a
/// run lives in its config, its [`Batches`] and its [`TrainStep`].
pub trait RunConfig: Clone + std::fmt::Debug + PartialEq + Serialize + serde::de::DeserializeOwned + Send + Sync + 'static {
    type Model: TrainStep;
    type Data: Batches;
    /// The data as loaded, before it moves to the run's device (shareable between runs).
    type Loaded;
    /// The settings every run has.
    fn settings(&self) -> Settings;
    /// Checks the config, and that the run fits this machine's memory on the CPU.
    fn check_fits(&self) -> Result<()>;
    /// Loads (and, for text, tokenizes) the data.
    fn load(&self) -> Result<Self::Loaded>;
    /// Builds the run on `device` from loaded data: the model, its batches, and the config
    /// completed with what the data fixes (input and output dimensions, vocabulary).
    fn setup(&self, loaded: Self::Loaded, device: Device) -> Result<Setup<Self>>;
    /// The name of the parameterization (with its overrides), for the result.
    fn parameterization_name(&self) -> Result<String>;
    /// The config with another width, seed or number of steps (for sweeps and checks).
    fn set_width(&mut self, width: i64);
    fn set_seed(&mut self, seed: u64);
    fn set_steps(&mut self, steps: usize);
}

/// The settings of a run that the [`Trainer`] reads, whatever the model.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    pub seed: u64,
    pub device: DeviceChoice,
    /// libtorch threads (`None`: libtorch's default).
    pub threads: Option<usize>,
    /// Base learning rate `eta`.
    pub lr: f64,
    pub loss: Loss,
    /// The optimizer, its schedule spanning the run.
    pub optim: OptimConfig,
    /// Evaluate every this many steps (0: only at the end).
    pub eval_every: usize,
    /// Stop as diverged above this training loss.
    pub max_loss: Option<f64>,
}

/// A run as [`RunConfig::setup`] builds it.
pub struct Setup<C: RunConfig> {
    /// The config completed with what the data fixes.
    pub cfg: C,
    pub model: C::Model,
    pub data: C::Data,
    pub total_steps: usize,
    /// Whether forward passes run in bf16 mixed precision.
    pub mixed: bool,
}

/// A run's data as the trainer sees it: training batches, evaluation, probe batches.
pub trait Batches {
    /// The next training batch: inputs and targets as [`Loss::compute`] takes them (`[B]`
    /// labels; for token sequences `[B, T]` inputs and `[B*T]` targets).
    fn next_batch(&mut self) -> (Tensor, Tensor);
    /// Training metrics (on a fixed subset) and test metrics of `model` after `step` steps.
    fn evaluate(&self, model: &dyn Model, loss: &Loss, mixed: bool, step: usize) -> EvalRecord;
    /// A fixed batch of `size` examples seeded by `seed`, on which the RCC monitor measures
    /// (training points; for text, validation windows).
    fn probe(&self, size: usize, seed: u64) -> (Tensor, Tensor);
    /// A fixed batch of training examples seeded by `seed` for curvature measurements
    /// ([`crate::sharpness`]); `size` defaults to the model's usual (1024 images, 8 windows).
    fn curvature_batch(&self, size: Option<usize>, seed: u64) -> (Tensor, Tensor);
    /// Training tokens per step, for runs on token sequences.
    fn tokens_per_step(&self) -> Option<f64> {
        None
    }
}

/// How a model takes one optimisation step. The default computes gradients by autograd (in
/// bf16 mixed precision if `mixed`) and applies the optimizer; a model with a faster path of
/// its own (the MLP's hand-written backward, [`mlp_step`]) overrides it.
pub trait TrainStep: Network + Sized {
    /// One step on the batch `(x, y)`; keeps every gradient it applied for
    /// [`Optimizer::last_gradients`] if `keep_gradients`.
    /// (Autograd's gradients are kept either way.)
    fn train_step(&self, optimizer: &mut Optimizer, loss: &Loss, x: &Tensor, y: &Tensor, _keep_gradients: bool, mixed: bool) -> Result<StepStats> {
        StepPath::Autograd.announce("the model has no hand-written backward pass");
        optimizer.step(self.params(), &mut || with_autocast(mixed, || loss.compute(&self.forward(x), y)))
    }
}

impl TrainStep for Mlp {
    fn train_step(&self, optimizer: &mut Optimizer, loss: &Loss, x: &Tensor, y: &Tensor, keep_gradients: bool, _mixed: bool) -> Result<StepStats> {
        mlp_step(self, optimizer, loss, x, y, keep_gradients)
    }
}

/// A model, its optimizer and its data, ready to be stepped (by hand, from a notebook, or to
/// the end by [`Trainer::run`]): the one trainer of every kind of run.
pub struct Trainer<C: RunConfig = TrainConfig> {
    /// The config, completed with what the data fixes.
    pub cfg: C,
    pub model: C::Model,
    pub optimizer: Optimizer,
    pub data: C::Data,
    pub device: Device,
    /// Whether forward passes run in bf16 mixed precision.
    pub mixed: bool,
    settings: Settings,
    total_steps: usize,
    keep_gradients: bool,
}

impl<C: RunConfig> Trainer<C> {
    /// Loads the data, builds the model and the optimizer.
    pub fn new(cfg: &C) -> Result<Self> {
        let settings = Self::prepare(cfg)?; // before the data is loaded
        Self::build(cfg, settings, cfg.load()?)
    }

    /// As [`Trainer::new`] with already loaded data (e.g. text shared by runs at several
    /// widths).
    pub fn with_data(cfg: &C, loaded: C::Loaded) -> Result<Self> {
        let settings = Self::prepare(cfg)?;
        Self::build(cfg, settings, loaded)
    }

    /// Checks that the run fits and sets libtorch's threads; the run's settings.
    fn prepare(cfg: &C) -> Result<Settings> {
        cfg.check_fits()?;
        let settings = cfg.settings();
        if let Some(t) = settings.threads {
            crate::device::set_threads(t);
        }
        Ok(settings)
    }

    /// The run on loaded data.
    fn build(cfg: &C, settings: Settings, loaded: C::Loaded) -> Result<Self> {
        let device = settings.device.resolve()?;
        let Setup { cfg, model, data, total_steps, mixed } = cfg.setup(loaded, device)?;
        let optimizer = Optimizer::new(&settings.optim, settings.lr, model.params())?;
        Ok(Trainer { cfg, model, optimizer, data, device, mixed, settings, total_steps, keep_gradients: true })
    }

    /// Total number of steps the run is configured for.
    pub fn total_steps(&self) -> usize {
        self.total_steps
    }

    /// The next training batch.
    pub fn next_batch(&mut self) -> (Tensor, Tensor) {
        self.data.next_batch()
    }

    /// One optimisation step on the next mini-batch ([`TrainStep::train_step`]).
    pub fn step(&mut self) -> Result<StepStats> {
        let (x, y) = self.data.next_batch();
        self.model.train_step(&mut self.optimizer, &self.settings.loss, &x, &y, self.keep_gradients, self.mixed)
    }

    /// Whether [`Trainer::step`] keeps the gradients it applied for
    /// [`Optimizer::last_gradients`] (default: yes). Without, plain-SGD steps of an MLP are
    /// fused into its backward pass (the weights' steps then stay in
    /// [`Optimizer::last_low_rank`]); [`Trainer::run`] turns this off unless a hook needs the
    /// gradients ([`StepHook::needs_gradients`]).
    pub fn set_keep_gradients(&mut self, keep: bool) {
        self.keep_gradients = keep;
    }

    /// Training and test metrics after `step` steps.
    pub fn evaluate(&self, step: usize) -> EvalRecord {
        self.data.evaluate(&self.model, &self.settings.loss, self.mixed, step)
    }

    /// The RCC monitor's probe batch ([`Batches::probe`]).
    pub fn probe(&self, size: usize, seed: u64) -> (Tensor, Tensor) {
        self.data.probe(size, seed)
    }

    /// The run's settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Runs all steps, evaluating as configured, with an optional progress bar and hook.
    pub fn run(mut self, progress: bool, hook: Option<&mut dyn StepHook>) -> Result<TrainResult<C>> {
        let log = self.run_loop(progress, hook)?;
        Ok(TrainResult {
            parameterization: self.cfg.parameterization_name()?,
            width: self.model.width(),
            num_params: self.model.num_params(),
            tokens_per_second: self.data.tokens_per_step().map(|t| t * log.steps_per_second),
            config: self.cfg,
            outcome: log.outcome,
            steps: log.steps,
            batch_losses: log.batch_losses,
            evals: log.evals,
            last: log.last,
            seconds: log.seconds,
            steps_per_second: log.steps_per_second,
        })
    }

    /// The training loop (the only one in widthlab): steps until done or diverged, calls the
    /// hook around every step, evaluates as configured, shows an optional progress bar.
    pub fn run_loop(&mut self, progress: bool, mut hook: Option<&mut dyn StepHook>) -> Result<RunLog> {
        let started = Instant::now();
        let total = self.total_steps;
        let bar = if progress {
            let b = ProgressBar::new(total as u64);
            b.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} steps ({per_sec}, eta {eta}) {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            b
        } else {
            ProgressBar::hidden()
        };
        if let Some(h) = hook.as_deref_mut() {
            h.start(&self.model)?;
        }
        self.set_keep_gradients(hook.as_deref().is_some_and(|h| h.needs_gradients()));
        // (grown as needed: `total` is bounded by limits::MAX_STEPS, not by what is free)
        let mut batch_losses = Vec::with_capacity(total.min(1 << 16));
        let mut evals = vec![];
        let mut outcome = Outcome::Completed;
        let mut steps = 0;
        let (every, max_loss) = (self.settings.eval_every, self.settings.max_loss);
        while steps < total {
            if let Some(h) = hook.as_deref_mut() {
                h.before_step(steps + 1, &self.model)?;
            }
            let stats = self.step()?;
            steps += 1;
            batch_losses.push(stats.loss);
            if let Some(h) = hook.as_deref_mut() {
                h.after_step(steps, &self.model, &StepOutput::of(&stats, &self.optimizer))?;
            }
            let too_big = max_loss.is_some_and(|m| stats.loss > m);
            if !stats.loss.is_finite() || too_big {
                let reason = if too_big {
                    format!("loss {:.3e} above max_loss", stats.loss)
                } else {
                    format!("non-finite loss ({})", stats.loss)
                };
                outcome = Outcome::Diverged { step: steps, reason };
                break;
            }
            if every > 0 && steps % every == 0 && steps < total {
                let e = self.evaluate(steps);
                let bad = non_finite_eval(&e);
                evals.push(e);
                if let Some(reason) = bad {
                    outcome = Outcome::Diverged { step: steps, reason };
                    break;
                }
            }
            bar.inc(1);
            if steps % 50 == 0 || steps < 50 {
                bar.set_message(format!("loss {:.4}", stats.loss));
            }
        }
        bar.finish_and_clear();
        // Evaluations stop the loop themselves; the final one is taken after every run that
        // ended without diverging, so only the last step's update is left to check here.
        let last = match evals.last() {
            Some(e) if e.step == steps && matches!(outcome, Outcome::Diverged { .. }) => e.clone(),
            _ => {
                let e = self.evaluate(steps);
                evals.push(e.clone());
                e
            }
        };
        if outcome == Outcome::Completed {
            if let Some(reason) = non_finite_eval(&last) {
                outcome = Outcome::Diverged { step: steps, reason };
            }
        }
        let seconds = started.elapsed().as_secs_f64();
        Ok(RunLog {
            outcome,
            steps,
            batch_losses,
            evals,
            last: Some(last),
            seconds,
            steps_per_second: steps as f64 / seconds.max(1e-9),
        })
    }
}

/// What [`Trainer::run_loop`] returns: the model-independent part of a result.
#[derive(Clone, Debug, PartialEq)]
pub struct RunLog {
    pub outcome: Outcome,
    pub steps: usize,
    pub batch_losses: Vec<f64>,
    pub evals: Vec<EvalRecord>,
    pub last: Option<EvalRecord>,
    pub seconds: f64,
    pub steps_per_second: f64,
}

/// Why an evaluation shows a diverged model (a non-finite training or test loss), if it does.
fn non_finite_eval(e: &EvalRecord) -> Option<String> {
    let bad: Vec<String> = [("train", Some(e.train_loss)), ("test", e.test_loss)]
        .into_iter()
        .filter_map(|(name, l)| l.filter(|l| !l.is_finite()).map(|l| format!("{name} loss {l}")))
        .collect();
    (!bad.is_empty()).then(|| format!("non-finite evaluation after step {} ({})", e.step, bad.join(", ")))
}

/// One optimisation step of an MLP on the batch `(x, y)`: gradients from the model's
/// hand-written backward pass ([`Mlp::manual_gradients`]) when it supports the model, from
/// autograd otherwise (normalisation layers). Without `keep_gradients`, a plain-SGD update
/// ([`Optimizer::is_plain_sgd`]) is fused into that backward pass ([`Mlp::manual_sgd_step`]):
/// [`Optimizer::last_gradients`] then holds only the biases' gradients, and
/// [`Optimizer::last_low_rank`] the weights' steps. The MLP's [`TrainStep`], so what
/// [`Trainer::step`] does every step; `benches/train_step.rs` times it.
/// Says which [`StepPath`] it takes (once per process).
pub fn mlp_step(model: &Mlp, optimizer: &mut Optimizer, loss: &Loss, x: &Tensor, y: &Tensor, keep_gradients: bool) -> Result<StepStats> {
    let refusal = model.manual_backward_refusal();
    if refusal.is_none() && !keep_gradients && optimizer.is_plain_sgd() {
        StepPath::FusedSgd.announce("no hook reads gradient tensors");
        if let Some((value, grads, low_rank)) = model.manual_sgd_step(x, y, loss, &optimizer.param_lrs()) {
            return Ok(optimizer.record_fused_step(value.double_value(&[]), grads, low_rank));
        }
    }
    match refusal {
        None if keep_gradients => StepPath::ManualBackward.announce("the gradients are kept for a hook (StepHook::needs_gradients) or the caller"),
        None => StepPath::ManualBackward.announce("the optimizer is not plain SGD"),
        Some(why) => StepPath::Autograd.announce(&why),
    }
    let params = model.params();
    optimizer.step_with(params, &mut || match model.manual_gradients(x, y, loss) {
        Some((value, grads)) => Ok((value.double_value(&[]), grads)),
        None => gradients(params, &mut || loss.compute(&model.forward(x), y)),
    })
}

/// Builds a [`Trainer`] for any kind of run and runs it.
pub fn train<C: RunConfig>(cfg: &C, progress: bool) -> Result<TrainResult<C>> {
    Trainer::new(cfg)?.run(progress, None)
}

/// An MLP's data: training and test images, shuffled each epoch.
pub struct ImageBatches {
    pub train: Dataset,
    pub test: Dataset,
    batch_size: usize,
    seed: u64,
    test_eval: bool,
    /// The fixed training subset that evaluations measure on (`None`: all of it).
    eval_idx: Option<Vec<usize>>,
    order: Vec<usize>,
    cursor: usize,
    epoch: u64,
}

impl ImageBatches {
    fn reshuffle(&mut self) {
        // One stream per epoch, so the order does not depend on how far earlier epochs got.
        let mut r = rng::rng(self.seed ^ (self.epoch << 32), stream::SHUFFLE);
        self.order = rng::permutation(self.train.len(), &mut r);
        self.cursor = 0;
        self.epoch += 1;
    }

    /// Loss and accuracy of `model` on a dataset (in chunks, without gradients).
    pub fn evaluate_on(model: &dyn Model, loss: &Loss, data: &Dataset, idx: Option<&[usize]>) -> (f64, f64) {
        const CHUNK: usize = 8192;
        let n = idx.map_or(data.len(), |i| i.len());
        let (mut loss_sum, mut acc_sum) = (0.0, 0.0);
        let device = data.x.device();
        tch::no_grad(|| {
            for start in (0..n).step_by(CHUNK) {
                let end = (start + CHUNK).min(n);
                let (x, y) = match idx {
                    Some(i) => {
                        let it = rng::index_tensor(&i[start..end], device);
                        (data.x.index_select(0, &it), data.y.index_select(0, &it))
                    }
                    None => (data.x.narrow(0, start as i64, (end - start) as i64), data.y.narrow(0, start as i64, (end - start) as i64)),
                };
                let f = model.forward(&x);
                let w = (end - start) as f64;
                loss_sum += loss.compute(&f, &y).to_kind(Kind::Double).double_value(&[]) * w;
                acc_sum += accuracy(&f, &y) * w;
            }
        });
        (loss_sum / n as f64, acc_sum / n as f64)
    }
}

impl Batches for ImageBatches {
    /// The next mini-batch (inputs `[B, d_in]`, labels `[B]`), reshuffling at epoch ends
    /// (incomplete last batches are dropped).
    fn next_batch(&mut self) -> (Tensor, Tensor) {
        let b = self.batch_size;
        if self.cursor + b > self.order.len() {
            self.reshuffle();
        }
        let idx = &self.order[self.cursor..self.cursor + b];
        self.cursor += b;
        self.train.batch(idx)
    }

    /// Train (on the fixed evaluation subset) and test metrics.
    fn evaluate(&self, model: &dyn Model, loss: &Loss, _mixed: bool, step: usize) -> EvalRecord {
        let (train_loss, train_acc) = Self::evaluate_on(model, loss, &self.train, self.eval_idx.as_deref());
        let (test_loss, test_acc) = if self.test_eval {
            let (l, a) = Self::evaluate_on(model, loss, &self.test, None);
            (Some(l), Some(a))
        } else {
            (None, None)
        };
        EvalRecord { step, train_loss, train_acc, test_loss, test_acc }
    }

    /// `size` training points (at most all), drawn by the seeded stream `(seed, PROBE)`.
    fn probe(&self, size: usize, seed: u64) -> (Tensor, Tensor) {
        self.train.sample(size, &mut rng::rng(seed, stream::PROBE))
    }

    fn curvature_batch(&self, size: Option<usize>, seed: u64) -> (Tensor, Tensor) {
        crate::sharpness::mlp_batch(&self.train, size.unwrap_or(1024), seed)
    }
}

impl RunConfig for TrainConfig {
    type Model = Mlp;
    type Data = ImageBatches;
    type Loaded = data::Splits;

    fn settings(&self) -> Settings {
        Settings {
            seed: self.seed,
            device: self.device,
            threads: self.threads,
            lr: self.lr,
            loss: self.loss,
            optim: self.optim.clone(),
            eval_every: self.eval.every,
            max_loss: self.max_loss,
        }
    }

    fn check_fits(&self) -> Result<()> {
        TrainConfig::check_fits(self)
    }

    fn load(&self) -> Result<data::Splits> {
        data::load(&self.data, self.seed)
    }

    fn setup(&self, splits: data::Splits, device: Device) -> Result<Setup<Self>> {
        let (train, test) = (splits.train.to_device(device), splits.test.to_device(device));
        if train.len() < self.batch_size {
            return Err(Error::config(format!(
                "batch_size {} exceeds the {} training points",
                self.batch_size,
                train.len()
            )));
        }
        let mut cfg = self.clone();
        cfg.model.d_in = train.input_dim();
        cfg.model.d_out = train.num_classes;
        let model = Mlp::new(&cfg.model, &cfg.parameterization()?, cfg.seed, device)?;
        let total_steps = cfg.planned_steps(train.len())?;
        let eval_idx = cfg.eval.train_subset.filter(|&k| k < train.len()).map(|k| {
            let mut p = rng::permutation(train.len(), &mut rng::rng(cfg.seed, stream::SUBSET + 100));
            p.truncate(k);
            p
        });
        let mut data = ImageBatches {
            train,
            test,
            batch_size: cfg.batch_size,
            seed: cfg.seed,
            test_eval: cfg.eval.test,
            eval_idx,
            order: vec![],
            cursor: 0,
            epoch: 0,
        };
        data.reshuffle();
        Ok(Setup { cfg, model, data, total_steps, mixed: false })
    }

    fn parameterization_name(&self) -> Result<String> {
        Ok(self.parameterization()?.name)
    }

    fn set_width(&mut self, width: i64) {
        self.model.width = width;
    }
    fn set_seed(&mut self, seed: u64) {
        self.seed = seed;
    }
    fn set_steps(&mut self, steps: usize) {
        self.steps = Some(steps);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{DatasetName, TeacherConfig};
    use crate::loss::LossKind;
    use crate::optim::OptimizerKind;

    /// A small problem that needs no files: the multi-index teacher data.
    pub(crate) fn teacher_cfg() -> TrainConfig {
        TrainConfig {
            model: MlpConfig { width: 64, depth: 3, ..MlpConfig::default() },
            lr: 0.2,
            data: DataConfig {
                dataset: DatasetName::Teacher,
                teacher: TeacherConfig { d_in: 4, n_train: 512, n_test: 256 },
                ..DataConfig::default()
            },
            batch_size: 32,
            epochs: 4.0,
            threads: Some(1),
            ..TrainConfig::default()
        }
    }

    #[test]
    fn training_lowers_the_loss() {
        let r = train(&teacher_cfg(), false).unwrap();
        assert_eq!(r.outcome, Outcome::Completed);
        assert_eq!(r.steps, 64);
        let first: f64 = r.batch_losses[..8].iter().sum::<f64>() / 8.0;
        let last: f64 = r.batch_losses[r.steps - 8..].iter().sum::<f64>() / 8.0;
        assert!(last < 0.8 * first, "first {first} last {last}");
        let acc = r.last.as_ref().unwrap().test_acc.unwrap();
        assert!(acc > 0.75, "test accuracy {acc}");
        let json = serde_json::to_string(&r).unwrap();
        let back: TrainResult = serde_json::from_str(&json).unwrap();
        assert_eq!(back.steps, r.steps);
    }

    #[test]
    fn same_seed_gives_bitwise_equal_weights() {
        let mut cfg = teacher_cfg();
        cfg.steps = Some(10);
        for kind in [OptimizerKind::Sgd, OptimizerKind::Adam] {
            cfg.optim.kind = kind;
            cfg.lr = if kind == OptimizerKind::Adam { 1e-3 } else { 0.05 };
            let run = |seed| {
                let mut c = cfg.clone();
                c.seed = seed;
                let mut t = Trainer::new(&c).unwrap();
                for _ in 0..10 {
                    t.step().unwrap();
                }
                t.model.snapshot()
            };
            let (a, b, c) = (run(3), run(3), run(4));
            assert!(a.iter().zip(&b).all(|(x, y)| x.equal(y)));
            assert!(!a[0].equal(&c[0]));
        }
    }

    #[test]
    fn mlp_step_matches_autograd_steps() {
        // The hand-written backward (manual path) against Optimizer::step with autograd, over
        // a few steps of every optimizer (SAM calls the gradient function twice).
        let (x, y) = {
            let mut t = Trainer::new(&teacher_cfg()).unwrap();
            t.next_batch()
        };
        for kind in [OptimizerKind::Sgd, OptimizerKind::SamSgd, OptimizerKind::Adam] {
            let mut cfg = teacher_cfg();
            cfg.optim = OptimConfig { kind, momentum: if kind == OptimizerKind::Sgd { 0.9 } else { 0.0 }, ..OptimConfig::default() };
            let (a, b) = (Trainer::new(&cfg).unwrap(), Trainer::new(&cfg).unwrap());
            assert!(a.model.supports_manual_backward());
            let (mut opt_a, mut opt_b) = (a.optimizer, b.optimizer);
            for _ in 0..3 {
                let sa = mlp_step(&a.model, &mut opt_a, &cfg.loss, &x, &y, true).unwrap();
                assert_eq!(opt_a.last_gradients().len(), a.model.params().len());
                let sb = opt_b.step(b.model.params(), &mut || cfg.loss.compute(&b.model.forward(&x), &y)).unwrap();
                assert!((sa.loss - sb.loss).abs() < 1e-5 * sb.loss.abs(), "{kind:?}: {} vs {}", sa.loss, sb.loss);
            }
            for (p, q) in a.model.params().iter().zip(b.model.params()) {
                let err = (&p.tensor - &q.tensor).norm().double_value(&[]) / q.tensor.norm().double_value(&[]);
                assert!(err < 1e-5, "{kind:?} {}: {err}", p.name);
            }
        }
    }

    #[test]
    fn fused_sgd_steps_match_autograd_steps() {
        // Without kept gradients, plain SGD is fused into the backward pass; the trajectory
        // is autograd's (to rounding), on a model with multipliers and biases.
        let mut cfg = teacher_cfg();
        cfg.param = ParamSpec::Name("mup-mult".into());
        cfg.model.bias = true;
        let (mut a, b) = (Trainer::new(&cfg).unwrap(), Trainer::new(&cfg).unwrap());
        a.set_keep_gradients(false);
        assert!(a.optimizer.is_plain_sgd());
        let mut opt_b = b.optimizer;
        let mut b_data = Trainer::new(&cfg).unwrap();
        for _ in 0..4 {
            let sa = a.step().unwrap();
            let (x, y) = b_data.next_batch();
            let sb = opt_b.step(b.model.params(), &mut || cfg.loss.compute(&b.model.forward(&x), &y)).unwrap();
            assert!((sa.loss - sb.loss).abs() < 1e-5 * sb.loss.abs(), "{} vs {}", sa.loss, sb.loss);
            // biases' gradients are kept; the weights' steps stay in low-rank form
            for (k, p) in a.model.params().iter().enumerate() {
                let is_weight = p.tensor.dim() == 2;
                assert_eq!(a.optimizer.last_gradients()[k].is_some(), !is_weight, "{}", p.name);
                assert_eq!(a.optimizer.last_low_rank()[k].is_some(), is_weight, "{}", p.name);
            }
        }
        assert_eq!(a.optimizer.steps_taken(), 4);
        for (p, q) in a.model.params().iter().zip(b.model.params()) {
            let err = (&p.tensor - &q.tensor).norm().double_value(&[]) / q.tensor.norm().double_value(&[]).max(1e-12);
            assert!(err < 1e-5, "{}: {err}", p.name);
        }
        // momentum is not plain SGD: gradients are kept even when not asked for
        cfg.optim.momentum = 0.5;
        let mut c = Trainer::new(&cfg).unwrap();
        c.set_keep_gradients(false);
        c.step().unwrap();
        assert_eq!(c.optimizer.last_gradients().len(), c.model.params().len());
    }

    /// A hook that records, after every step, which gradients and low-rank steps it was given.
    struct Watch {
        needs: bool,
        seen: Vec<(usize, usize)>,
    }

    impl StepHook for Watch {
        fn after_step(&mut self, _step: usize, _model: &dyn Model, out: &StepOutput) -> Result<()> {
            let count = |v: &[Option<Tensor>]| v.iter().filter(|g| g.is_some()).count();
            self.seen.push((count(out.grads), out.low_rank.iter().filter(|s| s.is_some()).count()));
            Ok(())
        }
        fn needs_gradients(&self) -> bool {
            self.needs
        }
    }

    #[test]
    fn a_hook_that_needs_gradients_gets_them_and_one_that_does_not_keeps_sgd_fused() {
        let mut cfg = teacher_cfg();
        cfg.steps = Some(3);
        cfg.model.bias = true;
        let (weights, biases) = (cfg.model.depth, cfg.model.depth);
        let mut runs = vec![];
        for needs in [true, false] {
            let mut hook = Watch { needs, seen: vec![] };
            let r = Trainer::new(&cfg).unwrap().run(false, Some(&mut hook)).unwrap();
            // one path or the other, the same training to rounding
            runs.push(r.batch_losses);
            let want = if needs { (weights + biases, 0) } else { (biases, weights) };
            assert_eq!(hook.seen, vec![want; 3], "needs_gradients {needs}");
        }
        for (a, b) in runs[0].iter().zip(&runs[1]) {
            assert!((a - b).abs() <= 1e-5 * b.abs(), "{a} vs {b}");
        }
        // a chain needs them if any hook does
        let (mut a, mut b) = (Watch { needs: false, seen: vec![] }, Watch { needs: true, seen: vec![] });
        assert!(Hooks(vec![&mut a, &mut b]).needs_gradients());
        assert!(!Hooks(vec![&mut a]).needs_gradients());
    }

    #[test]
    fn divergence_is_an_outcome_not_a_panic() {
        let mut cfg = teacher_cfg();
        cfg.loss = Loss::new(LossKind::Mse);
        cfg.lr = 1e4;
        let r = train(&cfg, false).unwrap();
        assert!(r.diverged(), "{:?}", r.outcome);
        let mut cfg = teacher_cfg();
        cfg.max_loss = Some(0.0);
        let r = train(&cfg, false).unwrap();
        assert!(matches!(r.outcome, Outcome::Diverged { step: 1, .. }));
    }

    #[test]
    fn a_non_finite_final_evaluation_is_divergence_whatever_the_step_count() {
        // One step at an absurd learning rate: its batch loss (before the update) is finite,
        // the weights after it are not.
        let mut cfg = teacher_cfg();
        cfg.steps = Some(1);
        cfg.lr = 1e30;
        let r = train(&cfg, false).unwrap();
        let last = r.last.as_ref().unwrap();
        assert!(r.batch_losses[0].is_finite() && !last.train_loss.is_finite(), "{:?} {last:?}", r.batch_losses);
        match &r.outcome {
            Outcome::Diverged { step: 1, reason } => assert!(reason.contains("non-finite evaluation"), "{reason}"),
            other => panic!("{other:?}"),
        }
        // ... and a periodic evaluation with a non-finite loss stops the run there.
        cfg.steps = Some(6);
        cfg.eval.every = 1;
        cfg.loss = Loss::new(LossKind::Mse);
        let r = train(&cfg, false).unwrap();
        match &r.outcome {
            Outcome::Diverged { step: 1, reason } => assert!(reason.contains("non-finite evaluation"), "{reason}"),
            other => panic!("{other:?}"),
        }
        assert_eq!((r.steps, r.evals.len()), (1, 1), "the evaluation after step 1 is the last");
        // A healthy run is still completed.
        assert_eq!(train(&teacher_cfg(), false).unwrap().outcome, Outcome::Completed);
    }

    #[test]
    fn bad_configs_give_clear_errors() {
        let err = |f: &dyn Fn(&mut TrainConfig)| {
            let mut c = teacher_cfg();
            f(&mut c);
            Trainer::new(&c).err().expect("should fail").to_string()
        };
        assert!(err(&|c| c.model.width = 0).contains("model.width"));
        assert!(err(&|c| c.param = ParamSpec::Name("mupp".into())).contains("unknown parameterization"));
        assert!(err(&|c| c.batch_size = 0).contains("batch_size"));
        assert!(err(&|c| c.batch_size = 100_000).contains("exceeds"));
        assert!(err(&|c| c.lr = f64::NAN).contains("lr"));
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.toml");
        std::fs::write(&p, "lr = \"fast\"").unwrap();
        let e = TrainConfig::from_file(&p).unwrap_err();
        assert!(matches!(e, Error::ConfigParse { .. }), "{e}");
        std::fs::write(&p, "widht = 3").unwrap();
        assert!(TrainConfig::from_file(&p).unwrap_err().to_string().contains("widht"));
        let e = TrainConfig::from_file(&dir.path().join("missing.toml")).unwrap_err();
        assert!(matches!(e, Error::Io { .. }));
    }
}
