//! The `widthlab` command-line program: standalone runs, sweeps and plots on the widthlab
//! crate. Every error is reported as a message with a non-zero exit code, never a panic.
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cli;

/// widthlab: how neural networks behave as they get wider.
#[derive(Parser)]
#[command(name = "widthlab", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train one model from a config file (TOML or JSON) with flag overrides.
    Train(cli::train::TrainArgs),
    /// Train a Pythia-style GPT on the Shakespeare corpus (or a config's text).
    GptTrain(cli::gpt_train::GptTrainArgs),
    /// Refined coordinate check over widths and seeds (appendix E presets).
    CoordCheck(cli::coord_check::CoordCheckArgs),
    /// Learning-rate sweeps across widths: run (resumable, sharded), status, merge, export, analyze.
    Sweep(cli::sweep::SweepArgs),
    /// Print what a parameterization resolves to (init std, multiplier, learning rate) per layer.
    Params(cli::params::ParamsArgs),
    /// The 2-layer linear uv model (appendix C.4): dynamics, max-stable learning rates, limit.
    Uv(cli::uv::UvArgs),
    /// Hessian sharpness (top eigenvalues, Gauss-Newton part, per layer, trace) across widths
    /// and seeds at chosen training steps, of the MLP or the GPT.
    Sharpness(cli::sharpness::SharpnessArgs),
    /// Each notebook's runs, FLOPs and estimated GPU time at a profile (estimates, not
    /// measurements); `--write-readme` updates notebooks/README.md.
    Plan(cli::plan::PlanArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    widthlab::device::tune_allocator();
    let result = match &cli.command {
        Command::Train(a) => cli::train::run(a),
        Command::GptTrain(a) => cli::gpt_train::run(a),
        Command::Params(a) => cli::params::run(a),
        Command::CoordCheck(a) => cli::coord_check::run_cli(a),
        Command::Uv(a) => cli::uv::run(a),
        Command::Sweep(a) => cli::sweep::run(a),
        Command::Sharpness(a) => cli::sharpness::run(a),
        Command::Plan(a) => cli::plan::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
