//! `widthlab train`: one training run with a readable summary and a JSON result file.
use std::path::PathBuf;

use anyhow::Context;
use widthlab::data::DatasetName;
use widthlab::device::DeviceChoice;
use widthlab::loss::LossKind;
use widthlab::optim::OptimizerKind;
use widthlab::train::{train, Outcome, ParamSpec, TrainConfig, TrainResult};

#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// Config file (TOML or JSON); flags below override it. Without it, the defaults apply
    /// (8-layer MLP, width 256, SP, SGD, batch 64, one epoch of Fashion-MNIST, CE).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Hidden width n.
    #[arg(long)]
    pub width: Option<i64>,
    /// Number of weight layers L+1.
    #[arg(long)]
    pub depth: Option<usize>,
    /// Parameterization: a built-in name (`widthlab params --list`).
    #[arg(long)]
    pub param: Option<String>,
    /// Global learning-rate exponent: eta_n = lr (n/256)^-alpha.
    #[arg(long)]
    pub alpha: Option<f64>,
    /// Base learning rate eta.
    #[arg(long)]
    pub lr: Option<f64>,
    /// ce, mse or mse-softmax.
    #[arg(long)]
    pub loss: Option<LossKind>,
    /// sgd, adam, adamw or sam-sgd.
    #[arg(long)]
    pub optimizer: Option<OptimizerKind>,
    /// fashion-mnist, mnist, cifar10 or teacher.
    #[arg(long)]
    pub dataset: Option<DatasetName>,
    /// Directory holding the dataset files.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Train on a random subset of this many points.
    #[arg(long)]
    pub train_subset: Option<usize>,
    #[arg(long)]
    pub steps: Option<usize>,
    #[arg(long)]
    pub epochs: Option<f64>,
    #[arg(long)]
    pub batch_size: Option<usize>,
    #[arg(long)]
    pub seed: Option<u64>,
    /// cpu, cuda or auto.
    #[arg(long)]
    pub device: Option<DeviceChoice>,
    /// libtorch threads.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Write the full result (config, curves, evaluations) here as JSON.
    #[arg(long, short)]
    pub out: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

impl TrainArgs {
    /// The config file (or defaults) with the flags applied.
    pub fn config(&self) -> anyhow::Result<TrainConfig> {
        let mut c = match &self.config {
            Some(p) => TrainConfig::from_file(p)?,
            None => TrainConfig::default(),
        };
        macro_rules! set {
            ($($flag:ident => $($field:ident).+),* $(,)?) => {
                $(if let Some(v) = &self.$flag { c.$($field).+ = v.clone().into(); })*
            };
        }
        set!(width => model.width, depth => model.depth, lr => lr, loss => loss.kind,
             optimizer => optim.kind, dataset => data.dataset, seed => seed, device => device,
             batch_size => batch_size, epochs => epochs);
        if let Some(p) = &self.param {
            c.param = ParamSpec::Name(p.clone());
        }
        if self.alpha.is_some() {
            c.alpha = self.alpha;
        }
        if self.data_dir.is_some() {
            c.data.data_dir = self.data_dir.clone();
        }
        if self.train_subset.is_some() {
            c.data.train_subset = self.train_subset;
        }
        if self.steps.is_some() {
            c.steps = self.steps;
        }
        if self.threads.is_some() {
            c.threads = self.threads;
        }
        Ok(c)
    }
}

pub fn run(args: &TrainArgs) -> anyhow::Result<()> {
    let cfg = args.config()?;
    let result = train(&cfg, !args.quiet)?;
    print!("{}", summary(&result));
    if let Some(out) = &args.out {
        if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let json = serde_json::to_string_pretty(&result)?;
        std::fs::write(out, json).with_context(|| format!("writing {}", out.display()))?;
        println!("result written to {}", out.display());
    }
    Ok(())
}

/// A short human-readable report of a run.
pub fn summary(r: &TrainResult) -> String {
    let c = &r.config;
    let mut s = String::new();
    s += &format!(
        "widthlab train: {}-layer MLP, width {}, {} parameters, {} (alpha {}), {:?}, lr {}, loss {}\n",
        c.model.depth,
        r.width,
        r.num_params,
        r.parameterization,
        c.alpha.unwrap_or(0.0),
        c.optim.kind,
        c.lr,
        c.loss.kind,
    );
    s += &format!(
        "data: {} ({} train points, batch {}), {} steps in {:.1} s ({:.1} steps/s)\n",
        c.data.dataset,
        c.data.train_subset.map_or("all".to_string(), |n| n.to_string()),
        c.batch_size,
        r.steps,
        r.seconds,
        r.steps_per_second
    );
    match &r.outcome {
        Outcome::Completed => s += "outcome: completed\n",
        Outcome::Diverged { step, reason } => s += &format!("outcome: DIVERGED at step {step}: {reason}\n"),
    }
    if let Some(e) = &r.last {
        s += &format!("train loss {:.4}, train accuracy {:.2}%", e.train_loss, 100.0 * e.train_acc);
        if let (Some(l), Some(a)) = (e.test_loss, e.test_acc) {
            s += &format!("; test loss {l:.4}, test accuracy {:.2}%", 100.0 * a);
        }
        s += "\n";
    }
    s
}
