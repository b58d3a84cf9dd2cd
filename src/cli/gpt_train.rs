//! `widthlab gpt-train`: one GPT training run on text with a progress bar, a readable
//! summary and a JSON result file.
use std::path::PathBuf;

use anyhow::Context;
use widthlab::device::DeviceChoice;
use widthlab::loss::LossKind;
use widthlab::optim::OptimizerKind;
use widthlab::train::gpt::{train_gpt, GptTrainConfig, GptTrainResult};
use widthlab::train::{Outcome, ParamSpec};

#[derive(clap::Args, Debug)]
pub struct GptTrainArgs {
    /// Config file (TOML or JSON); flags below override it. Without it, the defaults apply
    /// (6 blocks, width 256, Shakespeare with an 8192-token BPE, SP, AdamW, 500 steps).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Width n (a multiple of the head dimension 32).
    #[arg(long)]
    pub width: Option<i64>,
    /// Number of transformer blocks.
    #[arg(long)]
    pub depth: Option<usize>,
    /// Parameterization: a built-in name (`widthlab params --list`).
    #[arg(long)]
    pub param: Option<String>,
    /// Global learning-rate exponent: eta_n = lr (n/256)^-alpha.
    #[arg(long)]
    pub alpha: Option<f64>,
    /// Maximal learning rate eta (after warmup).
    #[arg(long)]
    pub lr: Option<f64>,
    /// ce, mse or mse-softmax.
    #[arg(long)]
    pub loss: Option<LossKind>,
    /// sgd, adam, adamw or sam-sgd.
    #[arg(long)]
    pub optimizer: Option<OptimizerKind>,
    /// Freeze all LayerNorm gains and biases at initialisation.
    #[arg(long)]
    pub frozen_norms: bool,
    /// Turn qk-LayerNorm off.
    #[arg(long)]
    pub no_qk_norm: bool,
    /// Folder of the corpus' *.txt files.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Sequence length.
    #[arg(long)]
    pub seq_len: Option<i64>,
    #[arg(long)]
    pub steps: Option<usize>,
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Evaluate every this many steps (0: only at the end).
    #[arg(long)]
    pub eval_every: Option<usize>,
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

impl GptTrainArgs {
    /// The config file (or defaults) with the flags applied.
    pub fn config(&self) -> anyhow::Result<GptTrainConfig> {
        let mut c = match &self.config {
            Some(p) => GptTrainConfig::from_file(p)?,
            None => GptTrainConfig::default(),
        };
        macro_rules! set {
            ($($flag:ident => $($field:ident).+),* $(,)?) => {
                $(if let Some(v) = &self.$flag { c.$($field).+ = v.clone().into(); })*
            };
        }
        set!(width => model.width, depth => model.depth, lr => lr, loss => loss.kind,
             optimizer => optim.kind, seq_len => data.seq_len, steps => steps, seed => seed,
             device => device, batch_size => batch_size, eval_every => eval.every);
        if let Some(p) = &self.param {
            c.param = ParamSpec::Name(p.clone());
        }
        if self.alpha.is_some() {
            c.alpha = self.alpha;
        }
        if self.data_dir.is_some() {
            c.data.data_dir = self.data_dir.clone();
        }
        if self.threads.is_some() {
            c.threads = self.threads;
        }
        if self.frozen_norms {
            c.model.train_norms = false;
        }
        if self.no_qk_norm {
            c.model.qk_norm = false;
        }
        Ok(c)
    }
}

pub fn run(args: &GptTrainArgs) -> anyhow::Result<()> {
    let cfg = args.config()?;
    let result = train_gpt(&cfg, !args.quiet)?;
    print!("{}", summary(&result));
    if let Some(out) = &args.out {
        if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        std::fs::write(out, serde_json::to_string_pretty(&result)?).with_context(|| format!("writing {}", out.display()))?;
        println!("result written to {}", out.display());
    }
    Ok(())
}

/// A short human-readable report of a run.
pub fn summary(r: &GptTrainResult) -> String {
    let c = &r.config;
    let mut s = format!(
        "widthlab gpt-train: {}-block GPT, width {} ({} heads), {} parameters, {} (alpha {}), {:?}, lr {}, loss {}\n",
        c.model.depth,
        r.width,
        c.model.heads(),
        r.num_params,
        r.parameterization,
        c.alpha.unwrap_or(0.0),
        c.optim.kind,
        c.lr,
        c.loss.kind,
    );
    s += &format!(
        "data: {:?} (vocab {}, seq {}, batch {}), {} steps in {:.1} s ({:.0} tokens/s)\n",
        c.data.source, c.model.vocab_size, c.data.seq_len, c.batch_size, r.steps, r.seconds, r.tokens_per_second
    );
    match &r.outcome {
        Outcome::Completed => s += "outcome: completed\n",
        Outcome::Diverged { step, reason } => s += &format!("outcome: DIVERGED at step {step}: {reason}\n"),
    }
    if let Some(e) = &r.last {
        s += &format!("train loss {:.4} (next-token accuracy {:.2}%)", e.train_loss, 100.0 * e.train_acc);
        if let (Some(l), Some(a)) = (e.test_loss, e.test_acc) {
            s += &format!("; validation loss {l:.4} ({:.2}%)", 100.0 * a);
        }
        s += "\n";
    }
    s
}
