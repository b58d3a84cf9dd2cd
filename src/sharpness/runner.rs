//! Sharpness across widths and seeds from a training config (MLP or GPT), the engine of
//! `widthlab sharpness`: every (width, seed) trains for `steps` steps with a
//! [`SharpnessHook`] measuring at the scheduled steps, and the rows are collected as the
//! coordinate checks' tidy rows ([`crate::rcc::runner::Row`]: width, seed, step, layer,
//! metric, value) in a [`CoordCheckResult`], so its fits, seed summaries, figures and CSV/JSON
//! writers apply unchanged.
//!
//! Also from saved weights: widthlab writes a model's weights as safetensors under a
//! monitor's `dump_dir` (`widthlab coord-check --dump`: `init.safetensors`,
//! `step_{t}.safetensors`, tensors named as the model's parameters); [`measure_weights`]
//! loads such a file into the model its config builds and measures it. The optimizer's state
//! is not saved, so Adam's preconditioned sharpness is not available there.
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{SharpnessConfig, SharpnessHook};
use super::lanczos::LanczosConfig;
use crate::data::text::TextData;
use crate::loss::LossKind;
use crate::model::Model;
use crate::plot::{Figure, Style};
use crate::profile::Profile;
use crate::rcc::runner::{collect_rows, run_grid, run_grid_parallel, CheckSpec, Row};
use crate::rcc::{CoordCheckResult, MetricId, Record, StepSchedule};
use crate::train::gpt::GptTrainConfig;
use crate::train::{Outcome, RunConfig, StepHook, TrainConfig, Trainer};
use crate::{Error, Result};

/// The training setup: an MLP (`widthlab train`'s config) or a GPT (`widthlab gpt-train`'s).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "model", content = "config")]
pub enum TrainSpec {
    Mlp(TrainConfig),
    Gpt(GptTrainConfig),
}

impl TrainSpec {
    /// The base learning rate.
    pub fn lr(&self) -> f64 {
        match self {
            TrainSpec::Mlp(c) => c.lr,
            TrainSpec::Gpt(c) => c.lr,
        }
    }
}

/// Sharpness measurements over widths and seeds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SharpnessCheck {
    pub name: String,
    /// Everything but the width, seed and number of steps (set per run).
    pub train: TrainSpec,
    pub widths: Vec<i64>,
    pub seeds: Vec<u64>,
    /// Training steps per run.
    pub steps: usize,
    /// The measured steps (step 0 always).
    pub schedule: StepSchedule,
    pub sharpness: SharpnessConfig,
}

impl CheckSpec for SharpnessCheck {
    fn widths(&self) -> &[i64] {
        &self.widths
    }
}

/// One SLQ quadrature node of a run (with [`SharpnessConfig::density`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DensityRow {
    pub width: i64,
    pub seed: u64,
    pub step: usize,
    /// The start vector.
    pub run: usize,
    pub node: f64,
    pub weight: f64,
}

/// What [`SharpnessCheck::run`] gives: the rows (as a coordinate check's) and the densities.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SharpnessResult {
    pub result: CoordCheckResult<SharpnessCheck>,
    pub densities: Vec<DensityRow>,
}

/// What one run leaves: its records, densities and divergence step.
type RunOutput = (Vec<Record>, Vec<(usize, super::Density)>, Option<usize>);

impl SharpnessCheck {
    /// Checks the grid.
    pub fn validate(&self) -> Result<()> {
        if self.widths.is_empty() || self.seeds.is_empty() {
            return Err(Error::config("sharpness: need at least one width and one seed"));
        }
        if let Some(w) = self.widths.iter().find(|&&w| w < 1) {
            return Err(Error::config(format!("sharpness: width {w} must be >= 1")));
        }
        self.sharpness.validate()?;
        match &self.train {
            TrainSpec::Mlp(c) => c.validate(),
            TrainSpec::Gpt(c) => c.validate(),
        }
    }

    /// Trains one run of any kind with the hook, width, seed and steps set.
    fn run_one<C: RunConfig>(&self, t: Trainer<C>) -> Result<RunOutput> {
        let mut hook = SharpnessHook::for_trainer(&t, self.sharpness.clone(), self.schedule.clone())?;
        let r = t.run(false, Some(&mut hook as &mut dyn StepHook))?;
        Ok((hook.records, hook.densities, diverged_at(&r.outcome)))
    }

    /// `cfg` at `width` and `seed`, training `steps` steps.
    fn at<C: RunConfig>(cfg: &C, width: i64, seed: u64, steps: usize) -> C {
        let mut cfg = cfg.clone();
        cfg.set_width(width);
        cfg.set_seed(seed);
        cfg.set_steps(steps);
        cfg
    }

    /// Runs every width and seed: MLP runs in parallel on rayon's pool with one libtorch
    /// thread each (results do not depend on the schedule: every draw is seeded per run),
    /// GPT runs in turn on text loaded once. A progress bar counts the runs.
    pub fn run(&self, progress: bool) -> Result<SharpnessResult> {
        self.validate()?;
        let started = std::time::Instant::now();
        let label = format!("sharpness {}", self.name);
        let outputs = match &self.train {
            TrainSpec::Mlp(cfg) => run_grid_parallel(&label, &self.widths, &self.seeds, progress, |w, s| {
                let mut c = Self::at(cfg, w, s, self.steps);
                c.eval.test = false;
                self.run_one(Trainer::new(&c)?)
            })?,
            TrainSpec::Gpt(cfg) => {
                let data = TextData::load(&cfg.data, cfg.seed)?;
                // (a GPT run takes at least one step)
                let steps = self.steps.max(1);
                run_grid(&label, &self.widths, &self.seeds, progress, |w, s| self.run_one(Trainer::with_data(&Self::at(cfg, w, s, steps), data.shallow_clone())?))?
            }
        };
        let (mut runs, mut densities) = (vec![], vec![]);
        for (width, seed, (records, dens, div)) in outputs {
            for (step, d) in dens {
                for (run, (nodes, weights)) in d.nodes.iter().zip(&d.weights).enumerate() {
                    densities.extend(nodes.iter().zip(weights).map(|(&node, &weight)| DensityRow { width, seed, step, run, node, weight }));
                }
            }
            runs.push((width, seed, (records, div)));
        }
        let (rows, diverged) = collect_rows(runs);
        densities.sort_by(|a, b| (a.width, a.seed, a.step, a.run).cmp(&(b.width, b.seed, b.step, b.run)));
        let result = CoordCheckResult { check: self.clone(), rows, diverged, seconds: started.elapsed().as_secs_f64() };
        Ok(SharpnessResult { result, densities })
    }
}

/// The experiments of notebook `10_sharpness` at a profile (what a profile changes is widths,
/// seeds, steps and batch sizes, never code).
impl SharpnessCheck {
    /// Sharpness at initialisation of section 5.1's MLP (8 layers, SP, SGD, Fashion-MNIST,
    /// [`crate::sweep::presets::mlp_base`]) under `loss` across widths: `sharpness`,
    /// `sharpness_gn` and (with `lr` = 1) `eta_sharpness` = `sharpness`.
    ///
    /// Statistical design: a width exponent is claimed from `quick` on, so `quick` and `paper`
    /// have at least 5 widths spanning at least 16x and 3 seeds per width (every seed at
    /// every width a point of the power-law fit, 95% t interval); `smoke` (2 widths, 2
    /// seeds) only shows that the measurement runs.
    pub fn at_init(profile: Profile, loss: LossKind) -> Result<Self> {
        let (widths, seeds, batch): (Vec<i64>, Vec<u64>, usize) = match profile {
            Profile::Smoke => (vec![32, 64], crate::profile::seeds(2)?, 128),
            Profile::Quick => (vec![64, 128, 256, 512, 1024], crate::profile::seeds(3)?, 512),
            Profile::Paper => (vec![64, 128, 256, 512, 1024, 2048], crate::profile::seeds(3)?, 1024),
        };
        let mut train = crate::sweep::presets::mlp_base(profile, loss);
        train.lr = 1.0;
        train.device = crate::device::DeviceChoice::from_env()?;
        Ok(SharpnessCheck {
            name: format!("at_init_{loss}_{profile}"),
            train: TrainSpec::Mlp(train),
            widths,
            seeds,
            steps: 0,
            schedule: StepSchedule::List { steps: vec![0] },
            sharpness: SharpnessConfig { batch_size: Some(batch), ..SharpnessConfig::default() },
        })
    }

    /// `eta * lambda_max` over training of the same MLP under `loss` at two widths (smoke 32
    /// and 64, quick 64 and 256, paper 256 and 2048), each at `c` times its own edge of
    /// stability at initialisation: `eta_n = c * 2 / lambda_0(n)`, `lambda_0(n)` the seed-mean
    /// sharpness of `init` (an [`SharpnessCheck::at_init`] result under the same loss and
    /// profile, which measures both widths on the same curvature batch), through
    /// `eta_n = lr (n/256)^-alpha` ([`SharpnessCheck::trajectory_at`]). Nothing comes from
    /// another experiment: the learning rates are set by this notebook's own measurement, and
    /// the question is whether training survives `eta lambda_0 = 2c` beyond the edge
    /// (`c > 1`; [`EDGE_MULTIPLES`]).
    ///
    /// Statistical design: no width exponent is claimed from trajectories; their claims are
    /// shares of runs (diverged, learned: Wilson intervals) and means over runs of per-run
    /// summaries (t intervals), over 2 widths x 3 seeds = 6 runs per multiple at `quick`
    /// and `paper` (smoke: 1 seed, 4 steps).
    pub fn trajectory(profile: Profile, loss: LossKind, c: f64, init: &SharpnessResult) -> Result<Self> {
        let widths = Self::trajectory_widths(profile);
        let TrainSpec::Mlp(cfg) = &init.result.check.train else {
            return Err(Error::config("sharpness trajectory: `init` must be an MLP's sharpness at initialisation"));
        };
        if cfg.loss.kind != loss {
            return Err(Error::config(format!("sharpness trajectory: `init` was measured under {}, not {loss}", cfg.loss.kind)));
        }
        if !(c > 0.0 && c.is_finite()) {
            return Err(Error::config(format!("sharpness trajectory: the multiple of the edge must be positive, not {c}")));
        }
        let lambda = init.result.seed_summary(super::MODEL, super::metric::SHARPNESS, 0);
        let rate = |w: i64| -> Result<(i64, f64)> {
            let l = lambda.iter().find(|p| p.0 == w as f64).map(|p| p.1).filter(|l| *l > 0.0);
            let l = l.ok_or_else(|| Error::config(format!("sharpness trajectory: no positive sharpness at initialisation at width {w} (the `at_init` preset measures {:?})", init.result.check.widths)))?;
            Ok((w, c * 2.0 / l))
        };
        let mut check = Self::trajectory_at(profile, loss, [rate(widths[0])?, rate(widths[1])?])?;
        check.name = format!("trajectory_{loss}_c{c}_{profile}");
        // the same curvature batch as the measurement the rates come from
        check.sharpness.batch_size = init.result.check.sharpness.batch_size;
        Ok(check)
    }

    /// The two widths of [`SharpnessCheck::trajectory`] (a subset of [`SharpnessCheck::at_init`]'s).
    pub fn trajectory_widths(profile: Profile) -> [i64; 2] {
        match profile {
            Profile::Smoke => [32, 64],
            Profile::Quick => [64, 256],
            Profile::Paper => [256, 2048],
        }
    }

    /// [`SharpnessCheck::trajectory`] at given `(width, eta_n)` pairs, on the curvature batch
    /// of [`SharpnessCheck::at_init`]'s preset.
    pub fn trajectory_at(profile: Profile, loss: LossKind, rates: [(i64, f64); 2]) -> Result<Self> {
        let [(w1, e1), (w2, e2)] = rates;
        if !(w1 > 0 && w2 > w1 && e1 > 0.0 && e2 > 0.0) {
            return Err(Error::config("sharpness trajectory: need two increasing widths with positive learning rates"));
        }
        let alpha = -(e2 / e1).ln() / (w2 as f64 / w1 as f64).ln();
        let (seeds, steps, dense, every): (Vec<u64>, usize, usize, usize) = match profile {
            Profile::Smoke => (crate::profile::seeds(1)?, 4, 2, 2),
            Profile::Quick => (crate::profile::seeds(3)?, 64, 8, 8),
            Profile::Paper => (crate::profile::seeds(3)?, 938, 20, 20),
        };
        // the curvature batch of the measurement at initialisation the rates come from
        let batch = Self::at_init(profile, loss)?.sharpness.batch_size;
        let mut train = crate::sweep::presets::mlp_base(profile, loss);
        train.alpha = Some(alpha);
        train.lr = e1 * (w1 as f64 / 256.0).powf(alpha);
        train.device = crate::device::DeviceChoice::from_env()?;
        let lanczos = LanczosConfig { tol: 1e-2, ..LanczosConfig::default() };
        Ok(SharpnessCheck {
            name: format!("trajectory_{loss}_{profile}"),
            train: TrainSpec::Mlp(train),
            widths: vec![w1, w2],
            seeds,
            steps,
            schedule: StepSchedule::EarlyThenSparse { dense_until: dense, every },
            sharpness: SharpnessConfig { lanczos, gauss_newton: false, batch_size: batch, ..SharpnessConfig::default() },
        })
    }

    /// Sharpness at initialisation of the GPT (SP, AdamW's defaults, Shakespeare; a generated
    /// text at `smoke`) at the widths a CPU allows; the preconditioned sharpness needs Adam's state, so only the
    /// Hessian and its Gauss-Newton part.
    pub fn gpt_at_init(profile: Profile) -> Result<Self> {
        let (widths, seeds, depth, seq_len, batch): (Vec<i64>, Vec<u64>, usize, i64, usize) = match profile {
            Profile::Smoke => (vec![32, 64], crate::profile::seeds(1)?, 1, 16, 2),
            Profile::Quick => (vec![32, 64, 128], crate::profile::seeds(2)?, 2, 32, 4),
            Profile::Paper => (vec![64, 128, 256, 512], crate::profile::seeds(3)?, 6, 128, 8),
        };
        let mut train = GptTrainConfig { model: crate::model::GptConfig { depth, ..Default::default() }, device: crate::device::DeviceChoice::from_env()?, ..GptTrainConfig::default() };
        train.data.seq_len = seq_len;
        if profile == Profile::Smoke {
            // seconds, not the corpus' tokenizer: a generated text (the same code path)
            train.data.source = crate::data::text::TextSource::Generated { chars: 20_000 };
            train.data.vocab_size = 300;
        }
        Ok(SharpnessCheck {
            name: format!("gpt_at_init_{profile}"),
            train: TrainSpec::Gpt(train),
            widths,
            seeds,
            steps: 0,
            schedule: StepSchedule::List { steps: vec![0] },
            sharpness: SharpnessConfig { batch_size: Some(batch), ..SharpnessConfig::default() },
        })
    }
}

/// The multiples `c` of the edge of stability at initialisation that notebook 10 trains at
/// (`eta lambda_0 = 2c`): below the edge (0.5), inside the catapult window of ReLU networks
/// (2: `eta lambda_0 = 4 < c_arc = 12`, Lewkowycz et al. 2020) and beyond it (8:
/// `eta lambda_0 = 16`).
pub const EDGE_MULTIPLES: [f64; 3] = [0.5, 2.0, 8.0];

/// Summaries of one run's series `(step, value)` of a positive metric (for
/// [`SharpnessResult::per_run`]), in `log2` units; NaN where the series has no such point.
pub mod summary {
    /// `log2` of the value at initialisation (step 0).
    pub fn initial(s: &[(usize, f64)]) -> f64 {
        s.iter().find(|p| p.0 == 0).map_or(f64::NAN, |p| p.1.log2())
    }

    /// `log2` of the largest value after initialisation (the early spike).
    pub fn peak(s: &[(usize, f64)]) -> f64 {
        s.iter().filter(|p| p.0 > 0).map(|p| p.1).fold(f64::NAN, f64::max).log2()
    }

    /// `log2` of the median over the second half of the run (steps `t >= T/2`, `T` the last
    /// measured step).
    pub fn late_median(s: &[(usize, f64)]) -> f64 {
        let last = s.iter().map(|p| p.0).max().unwrap_or(0);
        let mut v: Vec<f64> = s.iter().filter(|p| p.0 > 0 && 2 * p.0 >= last).map(|p| p.1).collect();
        if v.is_empty() {
            return f64::NAN;
        }
        v.sort_by(f64::total_cmp);
        let m = v.len() / 2;
        let median = if v.len() % 2 == 1 { v[m] } else { 0.5 * (v[m - 1] + v[m]) };
        median.log2()
    }
}

impl SharpnessResult {
    /// The steps and values of a model-level metric in the run `(width, seed)`.
    pub fn series(&self, metric: impl Into<MetricId>, width: i64, seed: u64) -> Vec<(usize, f64)> {
        let metric = metric.into();
        self.result.rows.iter().filter(|r| r.width == width && r.seed == seed && r.layer == super::MODEL && r.metric == metric).map(|r| (r.step, r.value)).collect()
    }

    /// How many runs (width, seed) diverged, of all: `(k, n)`.
    pub fn diverged_count(&self) -> (usize, usize) {
        let c = &self.result.check;
        (self.result.diverged.len(), c.widths.len() * c.seeds.len())
    }

    /// How many runs learned, of all: `(k, n)`; a run learned if it did not diverge and its
    /// loss on the curvature batch (`hessian_loss`) at the last measured step is below the
    /// one at initialisation.
    pub fn learned_count(&self) -> (usize, usize) {
        let c = &self.result.check;
        let learned = |w: i64, s: u64| {
            let l = self.series(super::metric::HESSIAN_LOSS, w, s);
            let first = l.iter().find(|p| p.0 == 0).map(|p| p.1);
            let last = l.iter().max_by_key(|p| p.0).filter(|p| p.0 > 0).map(|p| p.1);
            !self.result.diverged.iter().any(|d| d.0 == w && d.1 == s) && matches!((first, last), (Some(a), Some(b)) if b < a)
        };
        let k = c.widths.iter().flat_map(|&w| c.seeds.iter().map(move |&s| (w, s))).filter(|&(w, s)| learned(w, s)).count();
        (k, c.widths.len() * c.seeds.len())
    }

    /// `f` of every run's series of a model-level metric, per width (runs that diverged are
    /// left out, see [`CoordCheckResult::diverged`]): `(width, values over seeds)`.
    pub fn per_run(&self, metric: impl Into<MetricId>, f: &dyn Fn(&[(usize, f64)]) -> f64) -> Vec<(i64, Vec<f64>)> {
        let metric = metric.into();
        let c = &self.result.check;
        c.widths
            .iter()
            .map(|&w| {
                let values = c.seeds.iter().filter(|&&s| !self.result.diverged.iter().any(|d| d.0 == w && d.1 == s)).map(|&s| f(&self.series(metric, w, s))).collect();
                (w, values)
            })
            .collect()
    }

    /// `metric` over training, one line per width (seed mean, log scale) and the stability
    /// threshold `edge` dashed (2 for `eta_sharpness` under SGD).
    pub fn trajectory_figure(&self, metric: impl Into<MetricId>, edge: f64) -> Figure {
        let last = self.result.rows.iter().map(|r| r.step).max().unwrap_or(0) as f64;
        self.result.figure_vs_step(super::MODEL, metric).series_with("edge of stability", vec![0.0, last], vec![edge, edge], Style::Dashed, (0, 0, 0))
    }
}

fn diverged_at(o: &Outcome) -> Option<usize> {
    match o {
        Outcome::Diverged { step, .. } => Some(*step),
        Outcome::Completed => None,
    }
}

/// Overwrites `model`'s parameters with the tensors of a safetensors file, matched by name
/// (other tensors in the file, such as a dump's probe batch, are ignored). Every parameter
/// must be present with its shape.
pub fn load_weights(model: &dyn Model, path: &Path) -> Result<()> {
    let named = tch::Tensor::read_safetensors(path).map_err(|e| Error::config(format!("cannot read weights {}: {e}", path.display())))?;
    let map: std::collections::HashMap<String, tch::Tensor> = named.into_iter().collect();
    let values = model
        .params()
        .iter()
        .map(|p| {
            let t = map.get(&p.name).ok_or_else(|| Error::config(format!("{}: no tensor named `{}` (the config must build the saved model)", path.display(), p.name)))?;
            if t.size() != p.tensor.size() {
                return Err(Error::config(format!("{}: `{}` has shape {:?}, the model's is {:?} (check the width)", path.display(), p.name, t.size(), p.tensor.size())));
            }
            Ok(t.to_device(p.tensor.device()))
        })
        .collect::<Result<Vec<_>>>()?;
    model.load_snapshot(&values);
    Ok(())
}

/// Measures the model of `check.train` at its first width with the weights of `path` (see
/// the module docs), recorded as step `step` of seed `check.seeds[0]` (which seeds the batch
/// and the random vectors); learning rates as at that step. No training.
pub fn measure_weights(check: &SharpnessCheck, path: &Path, step: usize) -> Result<SharpnessResult> {
    check.validate()?;
    let started = std::time::Instant::now();
    let (width, seed) = (check.widths[0], check.seeds[0]);
    /// The model of `cfg` with the weights of `path`, measured.
    fn measured<C: RunConfig>(check: &SharpnessCheck, cfg: &C, width: i64, seed: u64, path: &Path, step: usize) -> Result<(Vec<Record>, Vec<(usize, super::Density)>)> {
        let mut cfg = cfg.clone();
        cfg.set_width(width);
        cfg.set_seed(seed);
        let t = Trainer::new(&cfg)?;
        load_weights(&t.model, path)?;
        let mut hook = SharpnessHook::for_trainer(&t, check.sharpness.clone(), check.schedule.clone())?;
        hook.measure(step, &t.model, None)?;
        Ok((hook.records, hook.densities))
    }
    let (records, densities) = match &check.train {
        TrainSpec::Mlp(cfg) => measured(check, cfg, width, seed, path, step)?,
        TrainSpec::Gpt(cfg) => measured(check, cfg, width, seed, path, step)?,
    };
    let rows = records.into_iter().map(|r| Row { width, seed, step: r.step, layer: r.layer, metric: r.metric, value: r.value }).collect();
    let densities = densities
        .into_iter()
        .flat_map(|(step, d)| {
            d.nodes.into_iter().zip(d.weights).enumerate().flat_map(move |(run, (n, w))| n.into_iter().zip(w).map(move |(node, weight)| DensityRow { width, seed, step, run, node, weight }))
        })
        .collect();
    Ok(SharpnessResult { result: CoordCheckResult { check: check.clone(), rows, diverged: vec![], seconds: started.elapsed().as_secs_f64() }, densities })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::OptimizerKind;
    use crate::sharpness::{metric, MODEL};

    fn check(widths: Vec<i64>) -> SharpnessCheck {
        SharpnessCheck {
            name: "t".into(),
            train: TrainSpec::Mlp(crate::sharpness::tests::teacher_run(OptimizerKind::Sgd)),
            widths,
            seeds: vec![0, 1],
            steps: 3,
            schedule: StepSchedule::List { steps: vec![3] },
            sharpness: SharpnessConfig { batch_size: Some(64), density: Some(crate::sharpness::DensityConfig { runs: 1, steps: 4 }), ..SharpnessConfig::default() },
        }
    }

    #[test]
    fn runs_widths_and_seeds_and_fits_the_sharpness() {
        let c = check(vec![16, 32, 64]);
        let r = c.run(false).unwrap();
        let res = &r.result;
        assert_eq!(res.points(MODEL, metric::SHARPNESS, 0).len(), 6);
        assert_eq!(res.points(MODEL, metric::ETA_SHARPNESS, 3).len(), 6);
        assert!(res.fit(MODEL, metric::SHARPNESS, 0).unwrap().exponent.is_finite());
        // one SLQ run of 4 nodes per (width, seed, measured step)
        assert_eq!(r.densities.len(), 3 * 2 * 2 * 4);
        // deterministic: the parallel schedule changes nothing
        let again = c.run(false).unwrap();
        assert_eq!(again.result.rows, res.rows);
        let dir = tempfile::tempdir().unwrap();
        res.write_csv(&dir.path().join("rows.csv")).unwrap();
        assert!(std::fs::read_to_string(dir.path().join("rows.csv")).unwrap().starts_with("width,seed,step,layer,metric,value"));
    }

    #[test]
    fn saved_weights_are_measured_as_trained() {
        // the monitor's dump of step 3, measured from the file, gives the rows the hook gave
        // at step 3 of the same run
        let c = check(vec![16]);
        let TrainSpec::Mlp(cfg) = &c.train else { unreachable!() };
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = cfg.clone();
        (cfg.model.width, cfg.seed, cfg.steps) = (16, 0, Some(3));
        let t = Trainer::new(&cfg).unwrap();
        let (px, py) = crate::sharpness::mlp_batch(&t.data.train, 8, 0);
        let mcfg = crate::rcc::MonitorConfig { schedule: StepSchedule::List { steps: vec![3] }, dump_dir: Some(dir.path().into()), ..Default::default() };
        let mut mon = crate::rcc::Monitor::new(mcfg, px, py, cfg.loss);
        let mut hook = SharpnessHook::for_trainer(&t, c.sharpness.clone(), c.schedule.clone()).unwrap();
        t.run(false, Some(&mut crate::train::Hooks(vec![&mut mon, &mut hook]))).unwrap();
        let from_file = measure_weights(&SharpnessCheck { seeds: vec![0], ..c.clone() }, &dir.path().join("step_3.safetensors"), 3).unwrap();
        let want: Vec<(String, MetricId, f64)> = hook.records.iter().filter(|r| r.step == 3).map(|r| (r.layer.clone(), r.metric, r.value)).collect();
        let got: Vec<(String, MetricId, f64)> = from_file.result.rows.iter().map(|r| (r.layer.clone(), r.metric, r.value)).collect();
        assert_eq!(got, want);
        // a width that does not match the file is a clear error
        let e = measure_weights(&SharpnessCheck { widths: vec![32], ..c.clone() }, &dir.path().join("step_3.safetensors"), 3).unwrap_err().to_string();
        assert!(e.contains("check the width"), "{e}");
        let e = measure_weights(&c, &dir.path().join("missing.safetensors"), 0).unwrap_err().to_string();
        assert!(e.contains("cannot read weights"), "{e}");
    }

    /// A sharpness-at-initialisation result with the given seed values of `lambda_0` per width.
    fn init_result(loss: LossKind, lambdas: &[(i64, [f64; 2])]) -> SharpnessResult {
        let mut c = SharpnessCheck::at_init(Profile::Quick, loss).unwrap();
        c.widths = lambdas.iter().map(|p| p.0).collect();
        c.seeds = vec![0, 1];
        let row = |width, seed, value| Row { width, seed, step: 0, layer: MODEL.into(), metric: metric::SHARPNESS.into(), value };
        let rows = lambdas.iter().flat_map(|&(w, l)| [row(w, 0, l[0]), row(w, 1, l[1])]).collect();
        SharpnessResult { result: CoordCheckResult { check: c, rows, diverged: vec![], seconds: 0.0 }, densities: vec![] }
    }

    #[test]
    fn presets_set_each_widths_learning_rate_and_helpers_summarise_runs() {
        // the trajectory preset trains each width at its own eta_n
        let c = SharpnessCheck::trajectory_at(Profile::Quick, LossKind::Ce, [(64, 0.25), (256, 0.1)]).unwrap();
        let TrainSpec::Mlp(cfg) = &c.train else { unreachable!() };
        let p = cfg.parameterization().unwrap();
        for (w, want) in [(64i64, 0.25), (256, 0.1)] {
            let m = crate::model::Mlp::new(&crate::model::MlpConfig { width: w, ..cfg.model.clone() }, &p, 0, tch::Device::Cpu).unwrap();
            let got = cfg.lr * m.params()[1].lr_scale_sgd;
            assert!((got - want).abs() < 1e-12 * want, "width {w}: {got} vs {want}");
        }
        assert!(SharpnessCheck::trajectory_at(Profile::Quick, LossKind::Ce, [(256, 0.1), (64, 0.25)]).is_err());
        // ... at c times 2 / lambda_0, lambda_0 the seed mean of the measurement at init
        let init = init_result(LossKind::Mse, &[(64, [15.0, 17.0]), (128, [30.0, 30.0]), (256, [60.0, 68.0])]);
        let t = SharpnessCheck::trajectory(Profile::Quick, LossKind::Mse, 8.0, &init).unwrap();
        assert_eq!(t.widths, SharpnessCheck::trajectory_widths(Profile::Quick));
        assert_eq!(t.sharpness.batch_size, init.result.check.sharpness.batch_size);
        let TrainSpec::Mlp(cfg) = &t.train else { unreachable!() };
        let p = cfg.parameterization().unwrap();
        for (w, lambda) in [(64i64, 16.0), (256, 64.0)] {
            let m = crate::model::Mlp::new(&crate::model::MlpConfig { width: w, ..cfg.model.clone() }, &p, 0, tch::Device::Cpu).unwrap();
            let eta = cfg.lr * m.params()[1].lr_scale_sgd;
            assert!((eta * lambda - 16.0).abs() < 1e-9, "width {w}: eta lambda_0 = {}", eta * lambda);
        }
        // a measurement under the other loss, or without one of the widths, is an error
        assert!(SharpnessCheck::trajectory(Profile::Quick, LossKind::Ce, 8.0, &init).unwrap_err().to_string().contains("measured under mse"));
        let e = SharpnessCheck::trajectory(Profile::Quick, LossKind::Mse, 8.0, &init_result(LossKind::Mse, &[(64, [1.0, 1.0]), (128, [2.0, 2.0])])).unwrap_err().to_string();
        assert!(e.contains("width 256"), "{e}");
        assert!(SharpnessCheck::trajectory(Profile::Quick, LossKind::Mse, 0.0, &init).is_err());
        for profile in [Profile::Smoke, Profile::Quick, Profile::Paper] {
            for loss in [LossKind::Ce, LossKind::Mse] {
                let a = SharpnessCheck::at_init(profile, loss).unwrap();
                a.validate().unwrap();
                assert!(SharpnessCheck::trajectory_widths(profile).iter().all(|w| a.widths.contains(w)), "{profile}");
            }
            SharpnessCheck::gpt_at_init(profile).unwrap().sharpness.validate().unwrap();
        }
        // the statistical design of the claims at quick (preset docs)
        let q = SharpnessCheck::at_init(Profile::Quick, LossKind::Ce).unwrap();
        assert!(q.seeds.len() >= 3 && q.widths.len() >= 5 && q.widths[q.widths.len() - 1] >= 16 * q.widths[0]);
        assert!(SharpnessCheck::trajectory(Profile::Quick, LossKind::Mse, 2.0, &init).unwrap().seeds.len() >= 3);
        // per-run summaries leave diverged runs out
        let mut r = check(vec![16, 32]).run(false).unwrap();
        assert_eq!(r.learned_count().1, 4);
        r.result.diverged.push((32, 1, 2));
        assert_eq!(r.diverged_count(), (1, 4));
        let peaks = r.per_run(metric::SHARPNESS, &|s| s.iter().map(|p| p.1).fold(f64::MIN, f64::max));
        assert_eq!(peaks.iter().map(|(w, v)| (*w, v.len())).collect::<Vec<_>>(), [(16, 2), (32, 1)]);
        assert_eq!(r.series(metric::SHARPNESS, 16, 0).iter().map(|p| p.0).collect::<Vec<_>>(), [0, 3]);
        assert!(r.trajectory_figure(metric::ETA_SHARPNESS, 2.0).to_svg().unwrap().contains("edge of stability"));
    }

    #[test]
    fn runs_learn_when_their_curvature_batch_loss_falls() {
        let mut c = check(vec![16]);
        c.seeds = vec![0, 1, 2];
        let row = |seed, step, value| Row { width: 16, seed, step, layer: MODEL.into(), metric: metric::HESSIAN_LOSS.into(), value };
        // seed 0 learns; seed 1's loss rose; seed 2 fell but diverged
        let rows = vec![row(0, 0, 2.3), row(0, 8, 1.0), row(1, 0, 2.3), row(1, 8, 2.5), row(2, 0, 2.3), row(2, 4, 1.0)];
        let r = SharpnessResult { result: CoordCheckResult { check: c, rows, diverged: vec![(16, 2, 5)], seconds: 0.0 }, densities: vec![] };
        assert_eq!(r.learned_count(), (1, 3));
        assert_eq!(r.diverged_count(), (1, 3));
        // run summaries in log2 units
        let s = [(0, 4.0), (1, 64.0), (2, 8.0), (4, 2.0), (6, 4.0), (8, 1.0)];
        assert_eq!((summary::initial(&s), summary::peak(&s)), (2.0, 6.0));
        assert_eq!(summary::late_median(&s), 1.0); // steps 4, 6, 8: values 2, 4, 1
        assert!(summary::initial(&s[1..]).is_nan() && summary::peak(&s[..1]).is_nan());
    }

    #[test]
    fn bad_grids_are_errors() {
        assert!(check(vec![]).run(false).is_err());
        assert!(check(vec![0]).run(false).unwrap_err().to_string().contains("width 0"));
    }
}
