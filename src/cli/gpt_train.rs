//! `widthlab gpt-train`: one GPT training run on text with a progress bar, a readable
//! summary and a JSON result file.
use std::path::PathBuf;

use widthlab::train::gpt::GptTrainConfig;
use widthlab::train::{train, TrainResult};
use widthlab::device::Precision;
use widthlab::train::Outcome;

use super::run_flags::{apply_run_flags, check_result_path, override_fields, write_result, RunFlags};

#[derive(clap::Args, Debug)]
pub struct GptTrainArgs {
    /// Config file (TOML or JSON); flags below override it. Without it, the defaults apply
    /// (6 blocks, width 256, Shakespeare with an 8192-token BPE, SP, AdamW, 500 steps).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub run: RunFlags,
    /// Freeze all LayerNorm gains and biases at initialisation.
    #[arg(long)]
    pub frozen_norms: bool,
    /// Turn qk-LayerNorm off.
    #[arg(long)]
    pub no_qk_norm: bool,
    /// Forward-pass precision: auto (bf16 mixed on CUDA, fp32 on CPU), fp32 or bf16.
    #[arg(long)]
    pub precision: Option<Precision>,
    /// Sequence length.
    #[arg(long)]
    pub seq_len: Option<i64>,
    /// Evaluate every this many steps (0: only at the end).
    #[arg(long)]
    pub eval_every: Option<usize>,
}

impl GptTrainArgs {
    /// The config file (or defaults) with the flags applied.
    pub fn config(&self) -> anyhow::Result<GptTrainConfig> {
        let mut c = match &self.config {
            Some(p) => GptTrainConfig::from_file(p)?,
            None => GptTrainConfig::default(),
        };
        apply_run_flags!(self.run, c);
        override_fields!(self, c; seq_len => data.seq_len, eval_every => eval.every, precision => precision);
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
    cfg.check_fits()?;
    check_result_path(args.run.out.as_deref())?;
    let result = train(&cfg, !args.run.quiet)?;
    print!("{}", summary(&result));
    write_result(args.run.out.as_deref(), &result)?;
    Ok(())
}

/// A short human-readable report of a run.
pub fn summary(r: &TrainResult<GptTrainConfig>) -> String {
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
        c.data.source, c.model.vocab_size, c.data.seq_len, c.batch_size, r.steps, r.seconds, r.tokens_per_second.unwrap_or(0.0)
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
