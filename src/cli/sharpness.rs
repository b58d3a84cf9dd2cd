//! `widthlab sharpness`: Hessian sharpness of an MLP or a GPT across widths and seeds, at
//! chosen training steps, from a training config (or flags) or from saved weights, written as
//! tidy CSV and JSON (the coordinate checks' rows: width, seed, step, layer, metric, value).
use std::path::PathBuf;

use anyhow::Context;
use widthlab::data::text::TextSource;
use widthlab::data::DatasetName;
use widthlab::rcc::StepSchedule;
use widthlab::sharpness::lanczos::LanczosConfig;
use widthlab::sharpness::runner::{measure_weights, SharpnessCheck, SharpnessResult, TrainSpec};
use widthlab::sharpness::{metric, DensityConfig, SharpnessConfig, MODEL};
use widthlab::train::gpt::GptTrainConfig;
use widthlab::train::TrainConfig;

use super::run_flags::{apply_run_flags, override_fields, RunFlags};

/// Which model the config describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ModelKind {
    /// The MLP of `widthlab train`.
    Mlp,
    /// The GPT of `widthlab gpt-train`.
    Gpt,
}

#[derive(clap::Args, Debug)]
pub struct SharpnessArgs {
    /// Training config (TOML or JSON): `widthlab train`'s for the MLP, `widthlab gpt-train`'s
    /// with `--model gpt`; flags below override it. Without it, that command's defaults.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// mlp or gpt.
    #[arg(long, value_enum, default_value = "mlp")]
    pub model: ModelKind,
    /// Widths (comma separated; default: the config's width, or --width).
    #[arg(long, value_delimiter = ',')]
    pub widths: Option<Vec<i64>>,
    /// Seeds (comma separated; default: the config's seed, or --seed).
    #[arg(long, value_delimiter = ',')]
    pub seeds: Option<Vec<u64>>,
    /// Measure after these numbers of training steps (comma separated; 0 = initialisation);
    /// training runs to the largest. Default: 0.
    #[arg(long, value_delimiter = ',')]
    pub at: Option<Vec<usize>>,
    /// Measure every this many steps (and at 0) over --steps training steps, instead of --at.
    #[arg(long)]
    pub every: Option<usize>,

    /// Number of top Hessian eigenvalues (rows `sharpness`, `eigenvalue_2`, ...).
    #[arg(long, default_value_t = 1)]
    pub top_k: usize,
    /// Lanczos iterations at most.
    #[arg(long, default_value_t = 50)]
    pub max_iter: usize,
    /// Lanczos relative residual tolerance (0: always --max-iter iterations).
    #[arg(long, default_value_t = 1e-3)]
    pub tol: f64,
    /// Skip the Gauss-Newton part (`sharpness_gn`).
    #[arg(long)]
    pub no_gn: bool,
    /// Also each weight matrix's diagonal block (`sharpness_layer`).
    #[arg(long)]
    pub layers: bool,
    /// Hutchinson probes for the trace (`trace`, `trace_stderr`; 0: off).
    #[arg(long, default_value_t = 0)]
    pub trace: usize,
    /// Spectral density by stochastic Lanczos quadrature with this many start vectors
    /// (written to density.csv).
    #[arg(long)]
    pub density: Option<usize>,
    /// Lanczos steps per density start vector.
    #[arg(long, default_value_t = 30)]
    pub density_steps: usize,
    /// Examples (MLP, default 1024) or sequences (GPT, default 8) in the fixed curvature batch.
    #[arg(long)]
    pub sharpness_batch: Option<usize>,
    /// Measure these saved weights (safetensors, named as the model's parameters, e.g. a
    /// `coord-check --dump` file) instead of training; the config must build that model
    /// (first width, first seed).
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// The step to record --weights as.
    #[arg(long, default_value_t = 0)]
    pub step: usize,

    #[command(flatten)]
    pub run: RunFlags,
    /// MLP: fashion-mnist, mnist, cifar10 or teacher.
    #[arg(long)]
    pub dataset: Option<DatasetName>,
    /// MLP: train on a random subset of this many points.
    #[arg(long)]
    pub train_subset: Option<usize>,
    /// GPT: a generated toy text of this many characters instead of the corpus.
    #[arg(long)]
    pub generated_text: Option<usize>,
    /// GPT: BPE vocabulary size.
    #[arg(long)]
    pub vocab_size: Option<usize>,
    /// GPT: sequence length.
    #[arg(long)]
    pub seq_len: Option<i64>,
}

impl SharpnessArgs {
    /// The measurement schedule and the number of training steps.
    fn schedule(&self) -> anyhow::Result<(StepSchedule, usize)> {
        match (&self.at, self.every) {
            (Some(_), Some(_)) => anyhow::bail!("give either --at or --every, not both"),
            (Some(at), None) => Ok((StepSchedule::List { steps: at.clone() }, at.iter().copied().max().unwrap_or(0))),
            (None, Some(k)) => {
                anyhow::ensure!(k >= 1, "--every must be >= 1");
                let steps = self.run.steps.context("--every needs --steps (the number of training steps)")?;
                Ok((StepSchedule::EarlyThenSparse { dense_until: 0, every: k }, steps))
            }
            (None, None) => Ok((StepSchedule::List { steps: vec![0] }, 0)),
        }
    }

    /// The check the flags describe.
    pub fn check(&self) -> anyhow::Result<SharpnessCheck> {
        let (schedule, steps) = self.schedule()?;
        let (train, width, seed) = match self.model {
            ModelKind::Mlp => {
                let mut c = match &self.config {
                    Some(p) => TrainConfig::from_file(p)?,
                    None => TrainConfig::default(),
                };
                apply_run_flags!(self.run, c);
                override_fields!(self, c; dataset => data.dataset, train_subset => data.train_subset);
                let (w, s) = (c.model.width, c.seed);
                (TrainSpec::Mlp(c), w, s)
            }
            ModelKind::Gpt => {
                let mut c = match &self.config {
                    Some(p) => GptTrainConfig::from_file(p)?,
                    None => GptTrainConfig::default(),
                };
                apply_run_flags!(self.run, c);
                override_fields!(self, c; vocab_size => data.vocab_size, seq_len => data.seq_len);
                if let Some(chars) = self.generated_text {
                    c.data.source = TextSource::Generated { chars };
                }
                let (w, s) = (c.model.width, c.seed);
                (TrainSpec::Gpt(c), w, s)
            }
        };
        let sharpness = SharpnessConfig {
            lanczos: LanczosConfig { k: self.top_k, max_iter: self.max_iter, tol: self.tol, explicit_residual: true },
            gauss_newton: !self.no_gn,
            layers: self.layers,
            trace_samples: self.trace,
            density: self.density.map(|runs| DensityConfig { runs, steps: self.density_steps }),
            batch_size: self.sharpness_batch,
        };
        let name = self.config.as_ref().and_then(|p| p.file_stem()).map_or_else(|| format!("{:?}", self.model).to_lowercase(), |s| s.to_string_lossy().into_owned());
        Ok(SharpnessCheck {
            name,
            train,
            widths: self.widths.clone().unwrap_or(vec![width]),
            seeds: self.seeds.clone().unwrap_or(vec![seed]),
            steps,
            schedule,
            sharpness,
        })
    }
}

pub fn run(args: &SharpnessArgs) -> anyhow::Result<()> {
    let check = args.check()?;
    let out = args.run.out.clone().unwrap_or_else(|| PathBuf::from(format!("results/sharpness/{}", check.name)));
    let res = match &args.weights {
        Some(w) => measure_weights(&check, w, args.step)?,
        None => check.run(!args.run.quiet)?,
    };
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    write(&res, &out)?;
    print!("{}", summary(&res));
    println!("written: {}/{{rows.csv, fits.csv, result.json{}}}", out.display(), if res.densities.is_empty() { "" } else { ", density.csv" });
    Ok(())
}

fn write(res: &SharpnessResult, out: &std::path::Path) -> anyhow::Result<()> {
    res.result.write_csv(&out.join("rows.csv"))?;
    res.result.write_fits_csv(&out.join("fits.csv"))?;
    std::fs::write(out.join("result.json"), serde_json::to_string(res)?).with_context(|| format!("writing {}", out.display()))?;
    if !res.densities.is_empty() {
        let mut w = csv::Writer::from_path(out.join("density.csv")).context("writing density.csv")?;
        for d in &res.densities {
            w.serialize(d)?;
        }
        w.flush()?;
    }
    Ok(())
}

/// Per measured step: the seed mean of each model-level metric per width, and its fitted
/// width exponent when there are two or more widths.
fn summary(res: &SharpnessResult) -> String {
    let r = &res.result;
    let c = &r.check;
    let mut s = format!(
        "widthlab sharpness {}: widths {:?} x seeds {:?}, {} training steps, {:.1} s{}\n",
        c.name,
        c.widths,
        c.seeds,
        c.steps,
        r.seconds,
        if r.diverged.is_empty() { String::new() } else { format!("; diverged (width, seed, step): {:?}", r.diverged) }
    );
    let mut steps: Vec<usize> = r.rows.iter().map(|x| x.step).collect();
    steps.sort();
    steps.dedup();
    let metrics = [metric::SHARPNESS, metric::SHARPNESS_GN, metric::ETA_SHARPNESS, metric::SHARPNESS_PRECOND, metric::TRACE];
    for t in steps {
        s += &format!("step {t}:\n");
        for m in metrics {
            let per_width = r.seed_summary(MODEL, m, t);
            if per_width.is_empty() {
                continue;
            }
            let cells: Vec<String> = per_width.iter().map(|(w, mean, _, _)| format!("n={w}: {mean:.4e}")).collect();
            let fit = (per_width.len() > 1).then(|| r.fit(MODEL, m, t).ok()).flatten();
            let fit = fit.map_or(String::new(), |f| format!("  exponent {:+.3} [{:+.3}, {:+.3}]", f.exponent, f.ci_low, f.ci_high));
            s += &format!("  {m:<18} {}{fit}\n", cells.join("  "));
        }
    }
    s
}
