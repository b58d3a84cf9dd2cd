//! `widthlab plan`: each notebook's runs, training steps, FLOPs and estimated GPU time at a
//! profile ([`widthlab::plan`]); `--write-readme` puts the `paper` and `quick` tables into
//! `notebooks/README.md` between its `gpu-plan` markers.
use std::path::PathBuf;

use anyhow::Context;
use widthlab::plan;
use widthlab::profile::Profile;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Md,
    Json,
    Csv,
}

#[derive(clap::Args, Debug)]
pub struct PlanArgs {
    /// Profile to plan (smoke, quick, paper).
    #[arg(long, default_value = "paper")]
    pub profile: Profile,
    /// Output: a Markdown table per notebook, JSON (workloads and totals) or CSV (workloads).
    #[arg(long, value_enum, default_value = "md")]
    pub format: Format,
    /// Instead of printing, write the `paper` and `quick` tables into this README (between
    /// `<!-- gpu-plan:begin -->` and `<!-- gpu-plan:end -->`), e.g. notebooks/README.md.
    #[arg(long, value_name = "README")]
    pub write_readme: Option<PathBuf>,
}

pub fn run(args: &PlanArgs) -> anyhow::Result<()> {
    if let Some(path) = &args.write_readme {
        let mut section = String::new();
        for profile in [Profile::Paper, Profile::Quick] {
            section += &plan::markdown(profile, &plan::plan(profile)?);
            section += "\n";
        }
        section += "(written by `widthlab plan --write-readme notebooks/README.md`)\n";
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        let new = plan::replace_section(&text, &section).with_context(|| format!("{}", path.display()))?;
        widthlab::files::write_atomic(path, new.as_bytes())?;
        eprintln!("GPU plan (paper, quick) written to {}", path.display());
        return Ok(());
    }
    let plans = plan::plan(args.profile)?;
    match args.format {
        Format::Md => print!("{}", plan::markdown(args.profile, &plans)),
        Format::Json => println!("{}", serde_json::to_string_pretty(&plan::json(args.profile, &plans))?),
        Format::Csv => print!("{}", plan::csv(&plans)?),
    }
    Ok(())
}
