//! `widthlab train`: one training run with a readable summary and a JSON result file.
use std::path::PathBuf;

use widthlab::data::DatasetName;
use widthlab::train::{train, Outcome, TrainConfig, TrainResult};

use super::run_flags::{apply_run_flags, check_result_path, override_fields, write_result, RunFlags};

#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// Config file (TOML or JSON); flags below override it. Without it, the defaults apply
    /// (8-layer MLP, width 256, SP, SGD, batch 64, one epoch of Fashion-MNIST, CE).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub run: RunFlags,
    /// fashion-mnist, mnist, cifar10 or teacher.
    #[arg(long)]
    pub dataset: Option<DatasetName>,
    /// Train on a random subset of this many points.
    #[arg(long)]
    pub train_subset: Option<usize>,
    /// Number of epochs (ignored when --steps is given).
    #[arg(long)]
    pub epochs: Option<f64>,
}

impl TrainArgs {
    /// The config file (or defaults) with the flags applied.
    pub fn config(&self) -> anyhow::Result<TrainConfig> {
        let mut c = match &self.config {
            Some(p) => TrainConfig::from_file(p)?,
            None => TrainConfig::default(),
        };
        apply_run_flags!(self.run, c);
        override_fields!(self, c; dataset => data.dataset, epochs => epochs, train_subset => data.train_subset);
        Ok(c)
    }
}

pub fn run(args: &TrainArgs) -> anyhow::Result<()> {
    let cfg = args.config()?;
    cfg.check_fits()?;
    check_result_path(args.run.out.as_deref())?;
    let result = train(&cfg, !args.run.quiet)?;
    print!("{}", summary(&result));
    write_result(args.run.out.as_deref(), &result)?;
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
