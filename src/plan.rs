//! The compute plan of a reproduction: per notebook, the workloads it runs at a [`Profile`],
//! their runs, training steps and FLOPs, and an *estimated* GPU time on one modern GPU
//! (issue 17, item 5). These are estimates from a cost model, not measurements.
//!
//! # Enumeration
//! [`plan`] builds each notebook's workloads by calling the preset functions the notebook
//! calls (`sweep::presets`, `CoordCheck::preset`, `GptCheck::preset`, `RegimeScan::standard`,
//! `SharpnessCheck::*`), so the plan follows the presets when they change. Two notebooks
//! adjust a preset inline (01's Fig. 4 check on teacher data, its one-step checks); those
//! adjustments are repeated here and marked at [`notebook_01`]. The scalar uv recursions of
//! 03 and 10 are not listed (seconds on a CPU), and 07's readout operator-norm cells run on
//! the CPU (`theory::readout` draws them there): listed with their FLOPs, no GPU time.
//!
//! # FLOPs of one run
//! From the model's parameter layout (`MlpConfig::layout`, `GptConfig::layout`), per example
//! (MLP) or token (GPT), for a dense layer with `P = fan_in * fan_out` weights:
//! - forward `2P`; backward `2P` for the weight gradient if the layer trains, and `2P` for the
//!   gradient of its input if any layer below it trains (never for the data's input layer);
//!   an MLP with every layer trained costs `6 P_total - 2 P_input` per example
//!   ([`mlp_train_flops`]), a random-feature model `2 P_total + 2 P_readout`;
//! - the GPT's embedding is a lookup (no FLOPs); every other weight trains, so `6 P_dense` per
//!   token, plus attention `12 L T n` per token (`QK^T` and `AV`, `4 T n` forward per block,
//!   twice that backward; the causal mask's half is not subtracted) ([`gpt_train_flops`]);
//! - evaluations: forward passes over the configured evaluation sets (once at the end for
//!   every preset here);
//! - the RCC monitor, per measured step: the traced forward of the probe batch, the `Delta`
//!   products `(W_t - W_0) x_t` and, with one-step metrics, the `delta` products: each a
//!   forward's worth; plus [`POWER_ITERATIONS`] warm-started power iterations per spectral
//!   norm (`4P` each: `W v` and `W^T u`);
//! - sharpness, per measured step: `max_iter` (+1 for the explicit residual) Lanczos products,
//!   doubled with the Gauss-Newton part, each counted as twice a training step on the
//!   curvature batch (a Hessian-vector product by double backward); the iteration bound, so
//!   an upper estimate.
//!
//! # GPU time
//! `FLOPs / throughput + launch floors` ([`Work::new`]): the throughput is 30% of an A100's
//! dense peak at the run's precision ([`FP32_FLOPS`] for the MLPs, which train in FP32, and
//! for monitors and curvature products; [`BF16_FLOPS`] for GPT training under bf16 autocast),
//! and every
//! training step adds [`LAUNCH_PER_LAYER`] per weight matrix, every measured monitor step
//! [`MONITOR_FLOOR`], every curvature product [`PRODUCT_FLOOR`]: at the widths here most
//! steps are launch-bound, and FLOPs alone would underestimate them by orders of magnitude.
//! The floors are added to the FLOP time (they overlap in practice): an upper-side estimate
//! of one GPU running the runs one after another.
//!
//! # Searches: probe counts
//! A search's runs depend on where its edges and optima lie, so the plan bounds them under
//! stated assumptions (`search_probes`; lattice units as in `sweep::search::algo`):
//! - max-stable, per seed: `max(2 + ceil log2((hi - lo)/res), 3 + ceil log2(step/res))`
//!   probes, for an edge anywhere in `[lo - step, hi + step]` (the initial bracket moved for
//!   the width, or one extension step beyond it; each further `step` adds one probe);
//! - optimal, per width, every point run by every seed: `C + R` points, `C = (span + s)/coarse
//!   + 1` coarse points (`s = step` for an optimum-only search whose bracket top may need one
//!   step up, 0 with max-stable results), assuming the seed-averaged optimum lies within
//!   `span - margin` of the coarse pass's top, and `R = 2 k log2(coarse/refine)` refinement
//!   points around `k` distinct best points per level (`k = 1 + seeds` with per-seed
//!   refinement, the bound; 1 without). Probes shared between the two searches are counted
//!   twice. The tests compare the formula with the search engine on synthetic functions.
//!
//! A quick-profile search whose accuracy curve has wide plateaus can take more coarse points
//! (`presets::lr_variant_search` notes 86-105 probes per width before its coarse pass was
//! widened): the bound holds for unimodal curves only.
use serde::Serialize;

use crate::data::DatasetName;
use crate::loss::LossKind;
use crate::model::{GptConfig, MlpConfig};
use crate::param::ParamKind;
use crate::profile::Profile;
use crate::rcc::gpt::GptCheck;
use crate::rcc::runner::CoordCheck;
use crate::rcc::{MonitorConfig, Spectral, StepSchedule};
use crate::sharpness::runner::{SharpnessCheck, TrainSpec, EDGE_MULTIPLES};
use crate::sweep::presets::{self, GptLrSetting, LrVariant, ShallowSearch};
use crate::sweep::search::{Find, SearchSpec};
use crate::sweep::{RunKind, SweepSpec};
use crate::train::gpt::GptTrainConfig;
use crate::train::TrainConfig;
use crate::{Error, Result};

/// Sustained FP32 throughput assumed (the MLPs, the RCC monitor, curvature products): 30% of
/// an NVIDIA A100's dense FP32 peak (19.5 TFLOP/s; libtorch leaves TF32 matmuls off).
pub const FP32_FLOPS: f64 = 0.3 * 19.5e12;
/// Sustained bf16 throughput assumed (GPT training and evaluation, which run under bf16
/// autocast on CUDA, `device::Precision::Auto`): 30% of an A100's dense bf16 peak (312 TFLOP/s).
pub const BF16_FLOPS: f64 = 0.3 * 312e12;
/// Kernel launches per weight matrix and training step (forward, backward, optimizer: about
/// eight kernels of ~5 us): 0.32 ms for an 8-layer MLP.
pub const LAUNCH_PER_LAYER: f64 = 40e-6;
/// Launch floor of one measured RCC monitor step (per-site norms, alignments, power
/// iterations: hundreds of small kernels).
pub const MONITOR_FLOOR: f64 = 5e-3;
/// Launch floor of one Hessian(-vector) product (a double backward).
pub const PRODUCT_FLOOR: f64 = 1e-3;
/// Power iterations per spectral norm and measured step (warm-started from the previous step).
pub const POWER_ITERATIONS: f64 = 5.0;

/// The assumptions as one line, for table headers.
pub fn assumptions() -> String {
    format!(
        "Estimates, not measurements: FLOPs from each model's parameter layout (6 x weights per example or token for training, attention 12 x blocks x seq x width per token, evaluation and monitor passes, Lanczos products at their iteration bound), run one after another on one GPU sustaining 30% of an A100's peak ({:.2} TFLOP/s FP32 for the MLPs, monitors and curvature products; {:.0} TFLOP/s bf16 for GPT training), plus launch floors of {:.0} us per weight matrix per training step, {:.0} ms per measured RCC step and {:.0} ms per Hessian-vector product; searches at their probe bound (`widthlab::plan`).",
        FP32_FLOPS / 1e12,
        BF16_FLOPS / 1e12,
        LAUNCH_PER_LAYER * 1e6,
        MONITOR_FLOOR * 1e3,
        PRODUCT_FLOOR * 1e3
    )
}

// ---- FLOPs per example or token ----

/// Dense layers of an MLP as `(weights, trainable)`, input layer first (gains and biases are
/// left out: `O(n)` work).
fn mlp_dense(cfg: &MlpConfig) -> Vec<(f64, bool)> {
    cfg.layout().iter().filter(|p| p.kind == ParamKind::Weight).map(|p| (p.fan_in as f64 * p.fan_out as f64, p.trainable)).collect()
}

/// Forward FLOPs of an MLP per example: `2 P_total`.
pub fn mlp_forward_flops(cfg: &MlpConfig) -> f64 {
    mlp_dense(cfg).iter().map(|d| 2.0 * d.0).sum()
}

/// Training FLOPs of an MLP per example (forward and backward, see the module docs).
pub fn mlp_train_flops(cfg: &MlpConfig) -> f64 {
    let dense = mlp_dense(cfg);
    let lowest = dense.iter().position(|d| d.1);
    dense
        .iter()
        .enumerate()
        .map(|(l, &(p, trains))| {
            let weight_grad = if trains { 2.0 * p } else { 0.0 };
            let input_grad = if lowest.is_some_and(|k| l > k) { 2.0 * p } else { 0.0 };
            2.0 * p + weight_grad + input_grad
        })
        .sum()
}

/// Weights of the GPT's dense products (every weight but the embedding, a lookup).
fn gpt_dense(cfg: &GptConfig) -> f64 {
    cfg.layout().iter().filter(|p| p.kind == ParamKind::Weight && p.name != "wte.weight").map(|p| p.fan_in as f64 * p.fan_out as f64).sum()
}

/// Forward FLOPs of the GPT per token at sequence length `seq`: `2 P_dense + 4 L T n`.
pub fn gpt_forward_flops(cfg: &GptConfig, seq: i64) -> f64 {
    2.0 * gpt_dense(cfg) + 4.0 * cfg.depth as f64 * seq as f64 * cfg.width as f64
}

/// Training FLOPs of the GPT per token: `6 P_dense + 12 L T n`.
pub fn gpt_train_flops(cfg: &GptConfig, seq: i64) -> f64 {
    3.0 * gpt_forward_flops(cfg, seq)
}

/// Weight matrices of a model (what the launch floor counts).
fn weight_layers(layout: &[crate::model::ParamShape]) -> f64 {
    layout.iter().filter(|p| p.kind == ParamKind::Weight).count() as f64
}

// ---- the work of runs ----

/// The work of one or more runs: training steps, FLOPs and what the launch floors count.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Work {
    pub runs: f64,
    pub steps: f64,
    pub flops: f64,
    /// Estimated seconds on one GPU: FLOPs at their precision's throughput plus launch floors.
    pub seconds: f64,
}

impl Work {
    /// `flops` at `rate` FLOP/s plus `floor` seconds of launches.
    pub fn new(runs: f64, steps: f64, flops: f64, rate: f64, floor: f64) -> Work {
        Work { runs, steps, flops, seconds: flops / rate + floor }
    }

    /// Estimated seconds on one GPU.
    pub fn gpu_seconds(&self) -> f64 {
        self.seconds
    }

    fn add(&mut self, o: Work) {
        self.runs += o.runs;
        self.steps += o.steps;
        self.flops += o.flops;
        self.seconds += o.seconds;
    }

    /// `k` copies of `self`.
    pub fn times(self, k: f64) -> Work {
        Work { runs: self.runs * k, steps: self.steps * k, flops: self.flops * k, seconds: self.seconds * k }
    }
}

/// Measured steps of a schedule over steps `0..=steps`.
fn measured(schedule: &StepSchedule, steps: usize) -> f64 {
    (0..=steps).filter(|&t| schedule.contains(t)).count() as f64
}

/// One MLP training run of `steps` steps (the config's own count if `None`), with its
/// evaluation at the end.
pub fn mlp_run(c: &TrainConfig, steps: Option<usize>) -> Result<Work> {
    c.validate()?;
    let m = c.model_config();
    let (_, _, n_data, n_test) = c.data.shape();
    let n_train = c.data.train_subset.unwrap_or(n_data).min(n_data);
    let steps = match steps {
        Some(s) => s,
        None => c.planned_steps(n_train)?,
    } as f64;
    let evals = if c.eval.every == 0 { 1.0 } else { (steps / c.eval.every as f64).floor() + 1.0 };
    let eval_examples = c.eval.train_subset.unwrap_or(n_train).min(n_train) as f64 + if c.eval.test { c.data.test_subset.unwrap_or(n_test).min(n_test) as f64 } else { 0.0 };
    let flops = steps * c.batch_size as f64 * mlp_train_flops(&m) + evals * eval_examples * mlp_forward_flops(&m);
    Ok(Work::new(1.0, steps, flops, FP32_FLOPS, steps * LAUNCH_PER_LAYER * weight_layers(&m.layout())))
}

/// One GPT training run with its evaluation windows (both splits) at the end.
pub fn gpt_run(c: &GptTrainConfig) -> Result<Work> {
    c.validate()?;
    let m = c.model_config();
    let seq = c.data.seq_len;
    let tokens = (c.batch_size as i64 * seq) as f64;
    let steps = c.steps as f64;
    let evals = if c.eval.every == 0 { 1.0 } else { (steps / c.eval.every as f64).floor() + 1.0 };
    let flops = steps * tokens * gpt_train_flops(&m, seq) + evals * 2.0 * c.eval.batches as f64 * tokens * gpt_forward_flops(&m, seq);
    let rate = if c.precision == crate::device::Precision::Fp32 { FP32_FLOPS } else { BF16_FLOPS };
    Ok(Work::new(1.0, steps, flops, rate, steps * LAUNCH_PER_LAYER * weight_layers(&m.layout())))
}

/// The RCC monitor's work over a run of `steps` steps on a probe batch whose forward costs
/// `probe_forward` FLOPs, for a model with `dense` dense weights.
fn monitor(m: &MonitorConfig, steps: usize, probe_forward: f64, dense: f64) -> Work {
    let k = measured(&m.schedule, steps);
    let passes = 2.0 + f64::from(u8::from(m.one_step));
    let spectral = match m.spectral {
        Spectral::PowerIteration { max_iter, .. } => 4.0 * dense * POWER_ITERATIONS.min(max_iter as f64),
        // an SVD per weight: ~ 10 n^3 for n x n, far above the power iteration
        Spectral::Exact => 4.0 * dense * 100.0,
    } * (1.0 + f64::from(u8::from(m.one_step)));
    Work::new(0.0, 0.0, k * (passes * probe_forward + spectral), FP32_FLOPS, k * MONITOR_FLOOR)
}

/// One MLP coordinate check: every width and seed, its monitor on every measured step.
pub fn coord_check(cc: &CoordCheck) -> Result<Work> {
    let mut w = Work::default();
    for &n in &cc.widths {
        let mut c = cc.train.clone();
        c.model.width = n;
        let m = c.model_config();
        let run = mlp_run(&c, Some(cc.steps))?;
        let mon = monitor(&cc.monitor, cc.steps, cc.probe_size as f64 * mlp_forward_flops(&m), mlp_dense(&m).iter().map(|d| d.0).sum());
        let mut one = run;
        one.add(mon);
        w.add(one.times(cc.seeds.len() as f64));
    }
    Ok(w)
}

/// One GPT coordinate check (probe: `probe_size` sequences).
pub fn gpt_check(cc: &GptCheck) -> Result<Work> {
    let mut w = Work::default();
    for &n in &cc.widths {
        let mut c = cc.train.clone();
        c.model.width = n;
        c.steps = cc.steps;
        let m = c.model_config();
        let seq = c.data.seq_len;
        let run = gpt_run(&c)?;
        let mon = monitor(&cc.monitor, cc.steps, (cc.probe_size as i64 * seq) as f64 * gpt_forward_flops(&m, seq), gpt_dense(&m));
        let mut one = run;
        one.add(mon);
        w.add(one.times(cc.seeds.len() as f64));
    }
    Ok(w)
}

/// One sharpness check: training plus Lanczos products on the curvature batch at every
/// measured step (at the iteration bound).
pub fn sharpness_check(s: &SharpnessCheck) -> Result<Work> {
    let l = &s.sharpness.lanczos;
    let per_run_products = (l.max_iter as f64 + f64::from(u8::from(l.explicit_residual))) * (1.0 + f64::from(u8::from(s.sharpness.gauss_newton))) + s.sharpness.trace_samples as f64;
    let products = measured(&s.schedule, s.steps) * per_run_products;
    let mut w = Work::default();
    for &n in &s.widths {
        // (a check at initialisation trains no step: only its curvature products count)
        let trained = |w: Result<Work>| if s.steps == 0 { Ok(Work { runs: 1.0, ..Work::default() }) } else { w };
        let (mut run, product) = match &s.train {
            TrainSpec::Mlp(c) => {
                let mut c = c.clone();
                c.model.width = n;
                let batch = s.sharpness.batch_size.unwrap_or(1024) as f64;
                (trained(mlp_run(&c, Some(s.steps)))?, 2.0 * batch * mlp_train_flops(&c.model_config()))
            }
            TrainSpec::Gpt(c) => {
                let mut c = c.clone();
                c.model.width = n;
                c.steps = s.steps;
                let m = c.model_config();
                let tokens = (s.sharpness.batch_size.unwrap_or(8) as i64 * c.data.seq_len) as f64;
                (trained(gpt_run(&c))?, 2.0 * tokens * gpt_train_flops(&m, c.data.seq_len))
            }
        };
        run.add(Work::new(0.0, 0.0, products * product, FP32_FLOPS, products * PRODUCT_FLOOR));
        w.add(run.times(s.seeds.len() as f64));
    }
    Ok(w)
}

/// A grid sweep: every point once.
pub fn sweep(spec: &SweepSpec) -> Result<Work> {
    let mut w = Work::default();
    for p in spec.points()? {
        w.add(run_of(spec.kind, &p.config)?);
    }
    Ok(w)
}

/// A resolved run config (a sweep point's or a search group's) as its training config.
fn parse<T: serde::de::DeserializeOwned>(config: &serde_json::Value) -> Result<T> {
    serde_json::from_value(config.clone()).map_err(|e| Error::config(format!("plan: a resolved run config does not parse: {e}")))
}

fn run_of(kind: RunKind, config: &serde_json::Value) -> Result<Work> {
    match kind {
        RunKind::Mlp => mlp_run(&parse(config)?, None),
        RunKind::Gpt => gpt_run(&parse(config)?),
    }
}

// ---- searches ----

/// `ceil(log2(w / res))` for lattice lengths (0 for `w <= res`).
fn bisections(w: i64, res: i64) -> u64 {
    let mut cells = (w + res - 1) / res;
    let mut k = 0;
    while cells > 1 {
        cells = (cells + 1) / 2;
        k += 1;
    }
    k
}

/// Probe bound of one search group (module docs): `(max-stable probes per seed, optimal
/// points per width)`, each 0 when not searched. `centres` is the number of distinct best
/// points the optimum's refinement centres on per level.
pub(crate) fn search_probes(lat: &crate::sweep::search::algo::Lattice, find: Find, centres: u64) -> (u64, u64) {
    let ms = if find.max_stable() { (2 + bisections(lat.hi - lat.lo, lat.res)).max(3 + bisections(lat.step, lat.res)) } else { 0 };
    let opt = if find.optimal() {
        let extra = if find.max_stable() { 0 } else { lat.step };
        let coarse = (lat.span + extra + lat.coarse - 1) / lat.coarse + 1;
        let levels = bisections(lat.coarse, lat.refine);
        coarse as u64 + 2 * centres * levels
    } else {
        0
    };
    (ms, opt)
}

/// A search's runs at their bound: per group, its seeds' max-stable probes and its
/// optimum's points times its seeds, each run costed from the group's config.
pub fn search(spec: &SearchSpec) -> Result<Work> {
    let runner = spec.kind.runner();
    let mut w = Work::default();
    for g in spec.groups(runner.as_ref())? {
        let s = g.seeds.len() as u64;
        let centres = if spec.search.optimal.refine_each_seed { 1 + s } else { 1 };
        let (ms, opt) = search_probes(&g.lattice, spec.search.find, centres);
        let runs = s * ms + s * opt;
        let p = crate::sweep::resolve_point(runner.as_ref(), &spec.name, &spec.base, g.axes[0].clone())?;
        w.add(run_of(spec.kind, &p.config)?.times(runs as f64));
    }
    Ok(w)
}

// ---- the notebooks ----

/// Where a workload runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Runs {
    Gpu,
    /// Hard-wired to the CPU (no GPU time estimated).
    Cpu,
}

/// One workload of a notebook.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Workload {
    pub name: String,
    /// Model and optimizer, e.g. `MLP 8 x 256..16384, SGD`.
    pub model: String,
    /// How the runs come about, e.g. `7 widths x 4 seeds x 26 lrs` or `search, <= 27 points`.
    pub design: String,
    pub on: Runs,
    pub work: Work,
}

impl Workload {
    pub fn gpu_hours(&self) -> Option<f64> {
        (self.on == Runs::Gpu).then(|| self.work.gpu_seconds() / 3600.0)
    }
}

/// One notebook's workloads.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NotebookPlan {
    pub notebook: String,
    pub workloads: Vec<Workload>,
}

impl NotebookPlan {
    /// Sum of the GPU workloads.
    pub fn gpu_work(&self) -> Work {
        let mut w = Work::default();
        for x in self.workloads.iter().filter(|x| x.on == Runs::Gpu) {
            w.add(x.work);
        }
        w
    }
}

fn range(ws: &[i64]) -> String {
    match (ws.iter().min(), ws.iter().max()) {
        (Some(a), Some(b)) if a != b => format!("{a}..{b}"),
        (Some(a), _) => a.to_string(),
        _ => "-".into(),
    }
}

fn mlp_model(c: &TrainConfig, widths: &[i64]) -> String {
    format!("MLP {} x {}, {:?}, {}, batch {}", c.model.depth, range(widths), c.optim.kind, c.loss.kind, c.batch_size)
}

fn gpt_model(c: &GptTrainConfig, widths: &[i64]) -> String {
    format!("GPT {} blocks x {}, V {}, T {}, {:?}, batch {}", c.model.depth, range(widths), c.data.vocab_size, c.data.seq_len, c.optim.kind, c.batch_size)
}

fn from_check(name: &str, cc: &CoordCheck) -> Result<Workload> {
    Ok(Workload {
        name: name.into(),
        model: mlp_model(&cc.train, &cc.widths),
        design: format!("{} widths x {} seeds, {} steps, RCC at {} steps", cc.widths.len(), cc.seeds.len(), cc.steps, measured(&cc.monitor.schedule, cc.steps)),
        on: Runs::Gpu,
        work: coord_check(cc)?,
    })
}

fn from_gpt_check(name: &str, cc: &GptCheck) -> Result<Workload> {
    Ok(Workload {
        name: name.into(),
        model: gpt_model(&cc.train, &cc.widths),
        design: format!("{} widths x {} seeds, {} steps of {} x {} tokens, RCC at {} steps", cc.widths.len(), cc.seeds.len(), cc.steps, cc.train.batch_size, cc.train.data.seq_len, measured(&cc.monitor.schedule, cc.steps)),
        on: Runs::Gpu,
        work: gpt_check(cc)?,
    })
}

fn from_sharpness(name: &str, s: &SharpnessCheck) -> Result<Workload> {
    let model = match &s.train {
        TrainSpec::Mlp(c) => mlp_model(c, &s.widths),
        TrainSpec::Gpt(c) => gpt_model(c, &s.widths),
    };
    Ok(Workload {
        name: name.into(),
        model,
        design: format!("{} widths x {} seeds, {} steps, Lanczos at {} steps", s.widths.len(), s.seeds.len(), s.steps, measured(&s.schedule, s.steps)),
        on: Runs::Gpu,
        work: sharpness_check(s)?,
    })
}

/// Widths of a grid's points.
fn widths_of(points: &[crate::sweep::RunPoint]) -> Vec<i64> {
    let mut w: Vec<i64> = points.iter().filter_map(|p| p.config["model"]["width"].as_i64()).collect();
    w.sort();
    w.dedup();
    w
}

fn from_sweep(spec: &SweepSpec) -> Result<Workload> {
    let pts = spec.points()?;
    let widths = widths_of(&pts);
    let model = match spec.kind {
        RunKind::Mlp => mlp_model(&parse(&pts[0].config)?, &widths),
        RunKind::Gpt => gpt_model(&parse(&pts[0].config)?, &widths),
    };
    let axes: Vec<String> = spec.grid.iter().map(|(k, v)| format!("{} {k}", v.count())).collect();
    Ok(Workload { name: spec.name.clone(), model, design: format!("grid: {}", axes.join(" x ")), on: Runs::Gpu, work: sweep(spec)? })
}

fn from_search(spec: &SearchSpec) -> Result<Workload> {
    let pts = spec.grid_spec().points()?;
    let widths = widths_of(&pts);
    let c: TrainConfig = parse(&pts[0].config)?;
    let runner = spec.kind.runner();
    let groups = spec.groups(runner.as_ref())?;
    let seeds = groups.first().map_or(1, |g| g.seeds.len() as u64);
    let centres = if spec.search.optimal.refine_each_seed { 1 + seeds } else { 1 };
    let (ms, opt) = groups.first().map_or((0, 0), |g| search_probes(&g.lattice, spec.search.find, centres));
    let what = match (ms, opt) {
        (0, o) => format!("optimum <= {o} points"),
        (m, 0) => format!("max-stable <= {m} probes/seed"),
        (m, o) => format!("max-stable <= {m} probes/seed + optimum <= {o} points"),
    };
    let settings: f64 = spec.grid.iter().filter(|(k, _)| !["width", "seed"].contains(&k.as_str())).map(|(_, v)| v.count()).product();
    let all_seeds = spec.grid.get("seed").map_or(1.0, |v| v.count());
    let design = format!("search: {settings} setting(s) x {} widths x {all_seeds} seeds, {what}", widths.len());
    Ok(Workload { name: spec.name.clone(), model: mlp_model(&c, &widths), design, on: Runs::Gpu, work: search(spec)? })
}

/// 01_background: the RCC decomposition and the initialisation exponents (the checks the
/// notebook runs, [`CoordCheck::background`] and [`CoordCheck::one_step`]).
fn notebook_01(profile: Profile) -> Result<Vec<Workload>> {
    Ok(vec![
        from_check("e1 on teacher data", &CoordCheck::background(profile)?)?,
        from_check("e1 one step, SP", &CoordCheck::one_step(profile, "sp")?)?,
        from_check("e1 one step, muP", &CoordCheck::one_step(profile, "mup")?)?,
    ])
}

fn notebook_02(profile: Profile) -> Result<Vec<Workload>> {
    Ok(vec![from_gpt_check("fig2", &GptCheck::preset("fig2", profile)?)?, from_gpt_check("e18", &GptCheck::preset("e18", profile)?)?])
}

fn notebook_04(profile: Profile) -> Result<Vec<Workload>> {
    let mut out = vec![];
    for name in ["e1", "e2", "e3", "e4", "e7", "e8", "e9"] {
        out.push(from_check(name, &CoordCheck::preset(name, profile)?)?);
    }
    let scan = crate::rcc::regime::RegimeScan::standard(profile);
    let mut work = Work::default();
    let mut first = None;
    for &depth in &scan.depths {
        for &loss in &scan.losses {
            for &alpha in &scan.alphas {
                let cc = scan.cell_check(alpha, loss, depth)?;
                work.add(coord_check(&cc)?);
                first.get_or_insert(cc);
            }
        }
    }
    let cc = first.ok_or_else(|| Error::config("plan: the regime scan has no cells"))?;
    let cells = scan.depths.len() * scan.losses.len() * scan.alphas.len();
    out.push(Workload {
        name: "regime scan".into(),
        model: format!("MLP {:?} x {}, SGD, CE and MSE", scan.depths, range(&cc.widths)),
        design: format!("{cells} cells x {} widths x {} seeds, {} steps", cc.widths.len(), cc.seeds.len(), cc.steps),
        on: Runs::Gpu,
        work,
    });
    Ok(out)
}

fn notebook_05(profile: Profile) -> Result<Vec<Workload>> {
    let mut out = vec![];
    for loss in [LossKind::Ce, LossKind::Mse] {
        out.push(from_search(&presets::lr_search(profile, loss)?)?);
    }
    for v in [LrVariant::Depth, LrVariant::Adam, LrVariant::RandomFeatures] {
        out.push(from_search(&presets::lr_variant_search(profile, v)?)?);
    }
    Ok(out)
}

fn notebook_06(profile: Profile) -> Result<Vec<Workload>> {
    GptLrSetting::ALL.iter().map(|&s| from_sweep(&presets::gpt_lr_exponents(profile, s)?)).collect()
}

fn notebook_07(profile: Profile) -> Result<Vec<Workload>> {
    let (ns, d_outs, seeds) = presets::sp_full_align_op_norm_grid(profile)?;
    // SP on every seed, the proposed init on the first: at most 1000 iterations of `W v`, `W^T u`
    let flops: f64 = ns.iter().flat_map(|&n| d_outs.iter().map(move |&d| 4.0 * n as f64 * d as f64 * 1000.0)).sum::<f64>() * (seeds.len() + 1) as f64;
    let mut out = vec![Workload {
        name: "readout operator norms".into(),
        model: format!("random readouts n {} x d_out {}", range(&ns), range(&d_outs)),
        design: format!("{} x {} cells x {} seeds (+1 proposed), power iteration <= 1000", ns.len(), d_outs.len(), seeds.len()),
        on: Runs::Cpu,
        work: Work { runs: (ns.len() * d_outs.len() * (seeds.len() + 1)) as f64, steps: 0.0, flops, seconds: 0.0 },
    }];
    for p in presets::SP_FULL_ALIGN_MLP_PARAMS {
        out.push(from_check(&format!("check {p}"), &presets::sp_full_align_mlp_check(profile, p)?)?);
    }
    out.push(from_check("check musoli, first step", &presets::musoli_first_step_check(profile)?)?);
    out.push(from_gpt_check("GPT check sp-full-align", &presets::sp_full_align_gpt_check(profile)?)?);
    for p in presets::SP_FULL_ALIGN_MLP_PARAMS {
        out.push(from_search(&presets::sp_full_align_search(profile, p)?)?);
    }
    out.push(from_sweep(&presets::sp_full_align_gpt(profile)?)?);
    Ok(out)
}

fn notebook_08(profile: Profile) -> Result<Vec<Workload>> {
    let mut out = vec![];
    for dataset in [DatasetName::FashionMnist, DatasetName::Teacher] {
        for param in ["sp", "mup"] {
            for loss in [LossKind::Ce, LossKind::Mse] {
                out.push(from_search(&presets::ce_vs_mse_search(profile, dataset, param, loss)?)?);
            }
        }
    }
    for param in ["sp", "mup"] {
        for loss in [LossKind::Ce, LossKind::Mse] {
            out.push(from_search(&presets::ce_vs_mse_adam_search(profile, param, loss)?)?);
        }
    }
    Ok(out)
}

fn notebook_09(profile: Profile) -> Result<Vec<Workload>> {
    ShallowSearch::ALL.iter().map(|&w| from_search(&presets::shallow_search(profile, w)?)).collect()
}

fn notebook_10(profile: Profile) -> Result<Vec<Workload>> {
    let mut out = vec![];
    for loss in [LossKind::Ce, LossKind::Mse] {
        out.push(from_sharpness(&format!("sharpness at init, {loss}"), &SharpnessCheck::at_init(profile, loss)?)?);
    }
    // The trajectories' learning rates come from the measured sharpness at init; their cost
    // does not, so any positive rates stand in for them.
    let [w1, w2] = SharpnessCheck::trajectory_widths(profile);
    for loss in [LossKind::Ce, LossKind::Mse] {
        let check = SharpnessCheck::trajectory_at(profile, loss, [(w1, 1.0), (w2, 0.5)])?;
        let mut w = from_sharpness(&format!("trajectories, {loss}"), &check)?;
        let k = EDGE_MULTIPLES.len() as f64;
        w.work = w.work.times(k);
        w.design = format!("{} multiples of the edge x {}", EDGE_MULTIPLES.len(), w.design);
        out.push(w);
    }
    out.push(from_sharpness("GPT sharpness at init", &SharpnessCheck::gpt_at_init(profile)?)?);
    Ok(out)
}

/// The notebooks and their workload builders (03 has no GPU workload).
#[allow(clippy::type_complexity)]
const NOTEBOOKS: [(&str, Option<fn(Profile) -> Result<Vec<Workload>>>); 10] = [
    ("01_background", Some(notebook_01)),
    ("02_alignment", Some(notebook_02)),
    ("03_catapult_uv", None),
    ("04_controlled_divergence", Some(notebook_04)),
    ("05_lr_exponents", Some(notebook_05)),
    ("06_gpt_lr_exponents", Some(notebook_06)),
    ("07_sp_full_align", Some(notebook_07)),
    ("08_ce_vs_mse", Some(notebook_08)),
    ("09_mse_softmax", Some(notebook_09)),
    ("10_sharpness", Some(notebook_10)),
];

/// The plan of every notebook at `profile`.
pub fn plan(profile: Profile) -> Result<Vec<NotebookPlan>> {
    NOTEBOOKS
        .iter()
        .map(|(name, f)| Ok(NotebookPlan { notebook: name.to_string(), workloads: match f { Some(f) => f(profile)?, None => vec![] } }))
        .collect()
}

// ---- output ----

/// Hours to two significant digits (whole hours from 10 on).
fn hours(h: f64) -> String {
    if h >= 10.0 || h <= 0.0 {
        format!("{h:.0}")
    } else {
        format!("{h:.*}", (1.0 - h.log10().floor()).max(0.0) as usize)
    }
}

/// The per-notebook table in Markdown (GPU workloads; CPU-only ones in a note), with a total.
pub fn markdown(profile: Profile, plans: &[NotebookPlan]) -> String {
    let mut s = format!("Profile `{profile}`. {}\n\n", assumptions());
    s += "| notebook | runs | training steps | FLOPs | est. GPU hours |\n|---|---:|---:|---:|---:|\n";
    let mut total = Work::default();
    for p in plans {
        let w = p.gpu_work();
        total.add(w);
        if p.workloads.iter().all(|x| x.on != Runs::Gpu) {
            s += &format!("| `{}` | - | - | - | (CPU only) |\n", p.notebook);
            continue;
        }
        s += &format!("| `{}` | {:.0} | {:.2e} | {:.1e} | {} |\n", p.notebook, w.runs, w.steps, w.flops, hours(w.gpu_seconds() / 3600.0));
    }
    s += &format!("| all | {:.0} | {:.2e} | {:.1e} | {} |\n", total.runs, total.steps, total.flops, hours(total.gpu_seconds() / 3600.0));
    let cpu: Vec<String> = plans.iter().flat_map(|p| p.workloads.iter().filter(|x| x.on == Runs::Cpu).map(move |x| format!("{} {} ({:.1e} FLOPs)", p.notebook, x.name, x.work.flops))).collect();
    s += "\nNot included: the scalar uv recursions of `03_catapult_uv` and `10_sharpness` (seconds on a CPU)";
    if !cpu.is_empty() {
        s += &format!("; on the CPU: {}", cpu.join(", "));
    }
    s += ".\n";
    s
}

/// Every workload as CSV rows (notebook, workload, model, design, on, runs, steps, TFLOPs,
/// estimated GPU hours).
pub fn csv(plans: &[NotebookPlan]) -> Result<String> {
    let mut w = csv::Writer::from_writer(vec![]);
    let e = |e: csv::Error| Error::config(format!("plan: csv: {e}"));
    w.write_record(["notebook", "workload", "model", "design", "on", "runs", "steps", "tflops", "gpu_hours"]).map_err(e)?;
    for p in plans {
        for x in &p.workloads {
            let on = if x.on == Runs::Gpu { "gpu" } else { "cpu" };
            w.write_record([
                p.notebook.clone(),
                x.name.clone(),
                x.model.clone(),
                x.design.clone(),
                on.into(),
                format!("{:.0}", x.work.runs),
                format!("{:.0}", x.work.steps),
                format!("{:.4}", x.work.flops / 1e12),
                x.gpu_hours().map_or(String::new(), |h| format!("{h:.4}")),
            ])
            .map_err(e)?;
        }
    }
    String::from_utf8(w.into_inner().map_err(|e| Error::config(format!("plan: csv: {e}")))?).map_err(|e| Error::config(format!("plan: csv: {e}")))
}

/// The plan as JSON: profile, assumptions, notebooks with their workloads and totals.
pub fn json(profile: Profile, plans: &[NotebookPlan]) -> serde_json::Value {
    let mut total = Work::default();
    let notebooks: Vec<serde_json::Value> = plans
        .iter()
        .map(|p| {
            let w = p.gpu_work();
            total.add(w);
            serde_json::json!({
                "notebook": p.notebook,
                "gpu": { "runs": w.runs, "steps": w.steps, "flops": w.flops, "gpu_hours": w.gpu_seconds() / 3600.0 },
                "workloads": p.workloads.iter().map(|x| serde_json::json!({
                    "name": x.name, "model": x.model, "design": x.design, "on": x.on,
                    "runs": x.work.runs, "steps": x.work.steps, "flops": x.work.flops, "gpu_hours": x.gpu_hours(),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    serde_json::json!({
        "profile": profile,
        "estimate": true,
        "assumptions": {
            "text": assumptions(),
            "fp32_flops": FP32_FLOPS,
            "bf16_flops": BF16_FLOPS,
            "launch_per_layer_s": LAUNCH_PER_LAYER,
            "monitor_floor_s": MONITOR_FLOOR,
            "product_floor_s": PRODUCT_FLOOR,
        },
        "notebooks": notebooks,
        "total": { "runs": total.runs, "steps": total.steps, "flops": total.flops, "gpu_hours": total.gpu_seconds() / 3600.0 },
    })
}

/// The README section's markers.
pub const README_BEGIN: &str = "<!-- gpu-plan:begin -->";
pub const README_END: &str = "<!-- gpu-plan:end -->";

/// `text` with the part between [`README_BEGIN`] and [`README_END`] replaced by `section`.
pub fn replace_section(text: &str, section: &str) -> Result<String> {
    let (before, rest) = text.split_once(README_BEGIN).ok_or_else(|| Error::config(format!("no `{README_BEGIN}` marker")))?;
    let (_, after) = rest.split_once(README_END).ok_or_else(|| Error::config(format!("no `{README_END}` marker after `{README_BEGIN}`")))?;
    Ok(format!("{before}{README_BEGIN}\n{}\n{README_END}{after}", section.trim_end()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sweep::search::algo::{self, Lattice, Oracle, Probe};
    use crate::sweep::analysis::Objective;
    use std::cell::RefCell;

    #[test]
    fn mlp_flops_match_the_closed_form() {
        // 3 layers, d_in 5, width 7, d_out 3: P = 35 + 49 + 21 = 105.
        let cfg = MlpConfig { d_in: 5, d_out: 3, width: 7, depth: 3, ..MlpConfig::default() };
        assert_eq!(mlp_forward_flops(&cfg), 2.0 * 105.0);
        // forward 2P, weight grads 2P, input grads of layers 1 and 2 only: 2 (49 + 21)
        assert_eq!(mlp_train_flops(&cfg), 2.0 * 105.0 + 2.0 * 105.0 + 2.0 * 70.0);
        assert_eq!(mlp_train_flops(&cfg), 6.0 * 105.0 - 2.0 * 35.0);
        // random features: only the readout trains, no input gradients
        let rf = MlpConfig { freeze: crate::model::Freeze::RandomFeatures, depth: 2, ..cfg.clone() };
        assert_eq!(mlp_train_flops(&rf), 2.0 * (35.0 + 21.0) + 2.0 * 21.0);
        // biases and norm gains are not counted
        let b = MlpConfig { bias: true, ..cfg.clone() };
        assert_eq!(mlp_train_flops(&b), mlp_train_flops(&cfg));
        // a run: 10 steps of batch 4 plus one evaluation of 6 + 2 examples
        let mut c = TrainConfig { model: cfg, batch_size: 4, steps: Some(10), ..TrainConfig::default() };
        c.data.dataset = DatasetName::Teacher;
        c.data.teacher = crate::data::TeacherConfig { d_in: 5, n_train: 100, n_test: 2 };
        c.model.d_out = 2;
        c.eval = crate::train::EvalConfig { every: 0, train_subset: Some(6), test: true };
        let m = c.model_config();
        let p = 35.0 + 49.0 + 14.0;
        let w = mlp_run(&c, None).unwrap();
        assert_eq!(w.flops, 10.0 * 4.0 * (6.0 * p - 2.0 * 35.0) + 8.0 * 2.0 * p);
        assert_eq!(w.steps, 10.0);
        assert!((w.seconds - (w.flops / FP32_FLOPS + 10.0 * 3.0 * LAUNCH_PER_LAYER)).abs() < 1e-15);
        assert_eq!(mlp_forward_flops(&m), 2.0 * p);
    }

    #[test]
    fn gpt_flops_match_the_closed_form() {
        // 1 block, width 8, head 4, vocab 300, T 5: dense weights 4 n^2 + 2 * 4 n^2 + n V
        let cfg = GptConfig { vocab_size: 300, width: 8, depth: 1, head_dim: 4, ..GptConfig::default() };
        let dense = 12.0 * 64.0 + 8.0 * 300.0;
        let attention = 4.0 * 1.0 * 5.0 * 8.0;
        assert_eq!(gpt_forward_flops(&cfg, 5), 2.0 * dense + attention);
        assert_eq!(gpt_train_flops(&cfg, 5), 6.0 * dense + 12.0 * 5.0 * 8.0);
        // the closed form over blocks: 2 blocks double the block terms, not the readout
        let two = GptConfig { depth: 2, ..cfg.clone() };
        assert_eq!(gpt_train_flops(&two, 5), 6.0 * (2.0 * 12.0 * 64.0 + 2400.0) + 12.0 * 2.0 * 5.0 * 8.0);
        // a run: steps x batch x T tokens, plus 2 splits x eval batches at the end
        let mut c = GptTrainConfig { model: two.clone(), batch_size: 3, steps: 7, ..GptTrainConfig::default() };
        c.data.vocab_size = 300;
        c.data.seq_len = 5;
        c.eval.every = 0;
        c.eval.batches = 2;
        let w = gpt_run(&c).unwrap();
        let expect = 7.0 * 15.0 * gpt_train_flops(&two, 5) + 2.0 * 2.0 * 15.0 * gpt_forward_flops(&two, 5);
        assert!((w.flops - expect).abs() < 1e-6 * expect, "{} vs {expect}", w.flops);
        // bf16 autocast by default (the GPU's bf16 rate), fp32 when asked; 14 weight matrices
        // (embedding, 6 per block, readout) for the launch floor
        assert!((w.seconds - (expect / BF16_FLOPS + 7.0 * 14.0 * LAUNCH_PER_LAYER)).abs() < 1e-12, "{w:?}");
        c.precision = crate::device::Precision::Fp32;
        assert!((gpt_run(&c).unwrap().seconds - (expect / FP32_FLOPS + 7.0 * 14.0 * LAUNCH_PER_LAYER)).abs() < 1e-12);
    }

    /// The stability edge at `edge` (log2 lr), a unimodal accuracy peaking at `opt` below it,
    /// each seed's peak shifted by `shift[seed]`; counts the distinct runs asked for.
    struct Synthetic {
        edge: f64,
        opt: f64,
        shift: Vec<f64>,
        runs: RefCell<std::collections::BTreeSet<(i64, usize)>>,
    }

    impl Oracle for Synthetic {
        fn eval(&self, batch: &[(i64, usize)]) -> Result<Option<Vec<Probe>>> {
            Ok(Some(
                batch
                    .iter()
                    .map(|&(m, i)| {
                        self.runs.borrow_mut().insert((m, i));
                        let x = algo::octaves(m);
                        let unstable = x >= self.edge;
                        let value = if unstable { 0.1 } else { 0.9 - 0.1 * (x - self.opt - self.shift[i]).powi(2) };
                        Probe { m, lr: crate::sweep::pow2_lattice(m), seed: i as u64, unstable, value, key: String::new() }
                    })
                    .collect(),
            ))
        }
    }

    fn lattice(lo: f64, hi: f64, res: f64) -> Lattice {
        let u = |o: f64| (o * 64.0).round() as i64;
        Lattice { lo: u(lo), hi: u(hi), step: u(2.0), res: u(res), min: u(-20.0), max: u(20.0), coarse: u(0.5), refine: u(0.125), span: u(3.0), margin: u(1.0), refine_each_seed: true }
    }

    #[test]
    fn max_stable_probe_bound_holds_against_the_search_engine() {
        for (lo, hi, res) in [(-3.5, -1.5, 0.125), (-5.0, -3.0, 0.125), (-1.0, 2.0, 0.125), (0.0, 2.0, 0.5), (-6.0, 0.0, 0.125)] {
            let lat = lattice(lo, hi, res);
            let (bound, _) = search_probes(&lat, Find::MaxStable, 1);
            let mut worst = 0;
            // edges across [lo - step, hi + step] on a fine lattice
            let mut e = lo - 2.0 + 1.0 / 64.0;
            while e <= hi + 2.0 {
                let o = Synthetic { edge: e, opt: e - 1.0, shift: vec![0.0], runs: RefCell::default() };
                let r = algo::max_stable(&o, lat, &[0]).unwrap().unwrap().remove(0);
                assert_eq!(r.edge, algo::Edge::Bracketed);
                assert!(r.probes.len() as u64 <= bound, "bracket [{lo}, {hi}], edge {e}: {} probes > bound {bound}", r.probes.len());
                worst = worst.max(r.probes.len() as u64);
                e += 3.0 / 64.0;
            }
            // the bound is attained (tight), not merely an upper bound
            assert_eq!(worst, bound, "bracket [{lo}, {hi}] res {res}");
            // an edge inside the bracket costs 2 + log2((hi - lo)/res) for power-of-2 cell counts
            if ((hi - lo) / res).log2().fract() == 0.0 {
                let o = Synthetic { edge: (lo + hi) / 2.0 + 0.01, opt: lo, shift: vec![0.0], runs: RefCell::default() };
                let r = algo::max_stable(&o, lat, &[0]).unwrap().unwrap().remove(0);
                assert_eq!(r.probes.len() as f64, 2.0 + ((hi - lo) / res).log2());
            }
        }
    }

    #[test]
    fn optimal_probe_bound_holds_against_the_search_engine() {
        let lat = lattice(-6.0, 0.0, 0.125);
        for find in [Find::Both, Find::Optimal] {
            // optimum within span - margin = 2 octaves of the coarse pass's top
            for (edge, below) in [(-2.3, 0.4), (-2.3, 1.4), (-4.05, 0.9), (-1.0, 1.6)] {
                let opt = edge - below;
                // identical seeds: one centre per level, the count is the formula exactly
                let seeds = [0u64, 1, 2];
                let o = Synthetic { edge, opt, shift: vec![0.0; 3], runs: RefCell::default() };
                let top_lat = if find == Find::Optimal { Lattice { hi: (edge * 64.0).ceil() as i64, ..lat } } else { lat };
                let edges = if find.max_stable() { Some(algo::max_stable(&o, top_lat, &seeds).unwrap().unwrap()) } else { None };
                o.runs.borrow_mut().clear();
                let r = algo::optimal(&o, top_lat, Objective::TrainAcc, &seeds, edges.as_deref()).unwrap().unwrap();
                let points = r.curve.len() as u64;
                let (_, one) = search_probes(&top_lat, find, 1);
                assert!(points <= one, "{find:?} edge {edge} opt {opt}: {points} points > {one}");
                if find == Find::Both {
                    assert_eq!(points, one, "edge {edge} opt {opt}: the formula is exact for agreeing seeds");
                }
                // seeds disagreeing by up to half an octave: within the per-seed bound
                let o = Synthetic { edge, opt, shift: vec![-0.3, 0.0, 0.45], runs: RefCell::default() };
                let edges = if find.max_stable() { Some(algo::max_stable(&o, top_lat, &seeds).unwrap().unwrap()) } else { None };
                let ms_runs = o.runs.borrow().len() as u64;
                let r = algo::optimal(&o, top_lat, Objective::TrainAcc, &seeds, edges.as_deref()).unwrap().unwrap();
                let (ms, all) = search_probes(&top_lat, find, 1 + seeds.len() as u64);
                assert!(r.curve.len() as u64 <= all, "{find:?} edge {edge}: {} points > {all}", r.curve.len());
                // distinct runs of the whole group within the plan's count
                let runs = o.runs.borrow().len() as u64;
                assert!(ms_runs <= 3 * ms && runs <= 3 * ms + 3 * all, "{runs} runs");
            }
        }
        // an optimum-only search whose bracket top is stable steps up once: still within the bound
        let o = Synthetic { edge: -0.9, opt: -2.5, shift: vec![0.0], runs: RefCell::default() };
        let r = algo::optimal(&o, lattice(-4.0, -2.0, 0.125), Objective::TrainAcc, &[0], None).unwrap().unwrap();
        let (_, bound) = search_probes(&lattice(-4.0, -2.0, 0.125), Find::Optimal, 1);
        assert!(r.top_unstable && r.curve.len() as u64 <= bound, "{} > {bound}", r.curve.len());
    }

    #[test]
    fn every_notebook_has_a_plan_at_every_profile() {
        for profile in [Profile::Smoke, Profile::Quick, Profile::Paper] {
            let plans = plan(profile).unwrap();
            assert_eq!(plans.len(), 10);
            for p in &plans {
                assert_eq!(p.workloads.is_empty(), p.notebook == "03_catapult_uv", "{}", p.notebook);
                for w in &p.workloads {
                    assert!(w.work.runs > 0.0 && w.work.flops > 0.0, "{} {}: {:?}", p.notebook, w.name, w.work);
                    assert_eq!(w.gpu_hours().is_some_and(|h| h > 0.0), w.on == Runs::Gpu, "{} {}", p.notebook, w.name);
                }
            }
        }
        // the paper profile costs more than quick in every notebook
        let (q, p) = (plan(Profile::Quick).unwrap(), plan(Profile::Paper).unwrap());
        for (a, b) in q.iter().zip(&p).filter(|(a, _)| !a.workloads.is_empty()) {
            assert!(b.gpu_work().flops > a.gpu_work().flops, "{}", a.notebook);
        }
    }

    #[test]
    fn a_grid_plan_counts_every_point() {
        // notebook 06 at paper: its grids' points, each a 10681-step run of 256 x 512 tokens
        let spec = presets::gpt_lr_exponents(Profile::Paper, GptLrSetting::Sgd).unwrap();
        let w = sweep(&spec).unwrap();
        let (widths, seeds, lrs) = presets::gpt_lr_exponents_grid(Profile::Paper, GptLrSetting::Sgd);
        assert_eq!(w.runs as usize, widths.len() * seeds.len() * lrs.len());
        assert_eq!(w.steps, w.runs * 10_681.0);
        // the FLOPs of one width-256 run by hand: 6 blocks, V 8192, T 512
        let c = presets::gpt_lr_exponents_base(Profile::Paper, GptLrSetting::Sgd);
        let n = 256.0;
        let dense = 6.0 * 12.0 * n * n + n * 8192.0;
        let per_token = 6.0 * dense + 12.0 * 6.0 * 512.0 * n;
        let tokens = 256.0 * 512.0;
        let eval = 2.0 * c.eval.batches as f64 * tokens * per_token / 3.0;
        let mut c256 = c.clone();
        c256.model.width = 256;
        let one = gpt_run(&c256).unwrap();
        assert!((one.flops - (10_681.0 * tokens * per_token + eval)).abs() < 1e-9 * one.flops);
    }

    #[test]
    fn the_readme_section_is_replaced_between_its_markers() {
        let t = format!("a\n{README_BEGIN}\nold\n{README_END}\nb\n");
        assert_eq!(replace_section(&t, "new\n").unwrap(), format!("a\n{README_BEGIN}\nnew\n{README_END}\nb\n"));
        assert!(replace_section("no markers", "x").unwrap_err().to_string().contains("gpu-plan:begin"));
    }
}
