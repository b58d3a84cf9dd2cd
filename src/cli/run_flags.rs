//! Flags shared by `widthlab train` (MLP), `widthlab gpt-train` and `widthlab sharpness`, how
//! they override a training config, and how a run's result is written. Both configs name
//! these settings alike (`model.width`, `optim.kind`, `data.data_dir`, ...), so one macro applies them to
//! either.
use std::path::{Path, PathBuf};

use anyhow::Context;
use widthlab::device::DeviceChoice;
use widthlab::loss::LossKind;
use widthlab::optim::OptimizerKind;

#[derive(clap::Args, Debug)]
pub struct RunFlags {
    /// Width n.
    #[arg(long)]
    pub width: Option<i64>,
    /// Depth: weight layers L+1 of the MLP, transformer blocks of the GPT.
    #[arg(long)]
    pub depth: Option<usize>,
    /// Parameterization: a built-in name (`widthlab params --list`).
    #[arg(long)]
    pub param: Option<String>,
    /// Global learning-rate exponent: eta_n = lr (n/256)^-alpha.
    #[arg(long)]
    pub alpha: Option<f64>,
    /// Base width n0 of the per-layer width rules, powers of n/n0 (default 1: absolute n, the
    /// paper's convention); e.g. 256 to coincide with SP at width 256 (transfer studies).
    #[arg(long)]
    pub base_width: Option<f64>,
    /// Base learning rate eta (the maximal one after warmup, under a schedule).
    #[arg(long)]
    pub lr: Option<f64>,
    /// ce, mse or mse-softmax.
    #[arg(long)]
    pub loss: Option<LossKind>,
    /// sgd, adam, adamw or sam-sgd.
    #[arg(long)]
    pub optimizer: Option<OptimizerKind>,
    /// Directory holding the dataset files (the corpus' *.txt files for the GPT).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Number of optimizer steps.
    #[arg(long)]
    pub steps: Option<usize>,
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
    /// Where to write results: the full result (config, curves, evaluations) as a JSON file
    /// (train, gpt-train), or a directory of CSV and JSON files (sharpness).
    #[arg(long, short)]
    pub out: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// `override_fields!(flags, config; flag => field.path, ...)`: every flag that is set
/// overwrites its field (through `Into`, so `usize` fills an `Option<usize>` field too).
macro_rules! override_fields {
    ($f:expr, $c:expr; $($flag:ident => $($field:ident).+),* $(,)?) => {
        $(if let Some(v) = &$f.$flag { $c.$($field).+ = v.clone().into(); })*
    };
}
pub(crate) use override_fields;

/// `apply_run_flags!(flags, config)`: applies the [`RunFlags`] to a `TrainConfig` or a
/// `GptTrainConfig`.
macro_rules! apply_run_flags {
    ($f:expr, $c:expr) => {{
        let (f, c) = (&$f, &mut $c);
        $crate::cli::run_flags::override_fields!(f, c;
            width => model.width, depth => model.depth, lr => lr, alpha => alpha, base_width => base_width,
            loss => loss.kind, optimizer => optim.kind, data_dir => data.data_dir,
            steps => steps, batch_size => batch_size, seed => seed, device => device,
            threads => threads);
        if let Some(p) = &f.param {
            c.param = widthlab::train::ParamSpec::Name(p.clone());
        }
    }};
}
pub(crate) use apply_run_flags;

/// Checks, before training, that the result file `out` (if any) can be written.
pub fn check_result_path(out: Option<&Path>) -> anyhow::Result<()> {
    if let Some(out) = out {
        widthlab::files::check_writable(out).context("--out")?;
    }
    Ok(())
}

/// Writes a run's result as pretty JSON to `out` (atomically, creating its folder) and says so.
pub fn write_result<T: serde::Serialize>(out: Option<&Path>, result: &T) -> anyhow::Result<()> {
    let Some(out) = out else { return Ok(()) };
    widthlab::files::write_atomic(out, serde_json::to_string_pretty(result)?.as_bytes())?;
    println!("result written to {}", out.display());
    Ok(())
}
