//! `widthlab sweep run|status|merge|export|analyze`: learning-rate sweeps over a SQLite store.
use std::path::PathBuf;

use anyhow::Context;
use widthlab::sweep::analysis::{analyse, Instability, Objective};
use widthlab::sweep::{self, export, RunOptions, Shard, Store, SweepSpec};

#[derive(clap::Args, Debug)]
pub struct SweepArgs {
    #[command(subcommand)]
    pub command: SweepCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum SweepCommand {
    /// Train every unfinished run of a sweep (safe to interrupt and re-run; several processes
    /// may share a store).
    Run {
        /// Sweep file (TOML or JSON).
        spec: PathBuf,
        /// SQLite store (created if missing).
        #[arg(long)]
        store: PathBuf,
        /// Only shard k of N (0-based), e.g. `--shard $SLURM_ARRAY_TASK_ID/8`.
        #[arg(long)]
        shard: Option<Shard>,
        /// Parallel workers for small runs (default: the spec's, else the number of cores).
        #[arg(long)]
        jobs: Option<usize>,
        /// Stop after training this many runs.
        #[arg(long)]
        limit: Option<usize>,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// How much of a sweep is done.
    Status {
        spec: PathBuf,
        #[arg(long)]
        store: PathBuf,
        #[arg(long)]
        shard: Option<Shard>,
    },
    /// Copy the records of several stores (e.g. shards) into one.
    Merge {
        /// The merged store (created if missing).
        #[arg(long)]
        into: PathBuf,
        /// Stores to merge.
        #[arg(required = true)]
        stores: Vec<PathBuf>,
    },
    /// Write records as CSV (`.csv`) or JSON for pandas.
    Export {
        #[arg(long)]
        store: PathBuf,
        /// Output file: `.csv` or `.json`.
        #[arg(long, short)]
        out: PathBuf,
        /// Only the runs of this sweep (default: every record).
        #[arg(long)]
        spec: Option<PathBuf>,
    },
    /// Optimal and max-stable learning rates per width and their fitted width exponents.
    Analyze {
        spec: PathBuf,
        #[arg(long)]
        store: PathBuf,
        /// train-acc, train-loss, test-acc or test-loss.
        #[arg(long, default_value = "train-acc")]
        objective: Objective,
        /// When a run counts as unstable: nan, near-chance, acc-below[:T] or loss-above[:M]
        /// (appendix D.4). Default: by run kind and loss (NaN under MSE; under CE training
        /// accuracy below chance + (1 - chance)/9, i.e. 20% on 10 classes; loss above the
        /// optimum + 1 for GPT).
        #[arg(long)]
        instability: Option<Instability>,
        /// Write SVG figures (curves and exponents per setting) and analysis.json here.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Base width n0 of the width-scaled learning rate axis.
        #[arg(long, default_value_t = 256.0)]
        n0: f64,
    },
}

pub fn run(args: &SweepArgs) -> anyhow::Result<()> {
    match &args.command {
        SweepCommand::Run { spec, store, shard, jobs, limit, quiet } => {
            let s = SweepSpec::from_file(spec)?;
            let opts = RunOptions { shard: *shard, jobs: *jobs, limit: *limit, progress: !quiet };
            let report = sweep::run(&s, store, &opts)?;
            println!("sweep {}{}: {report}", s.name, shard.map_or(String::new(), |k| format!(" (shard {k})")));
        }
        SweepCommand::Status { spec, store, shard } => {
            let s = SweepSpec::from_file(spec)?;
            let st = sweep::status(&s, &Store::open_existing(store)?, *shard)?;
            println!("sweep {}: {st}", s.name);
        }
        SweepCommand::Merge { into, stores } => {
            let mut out = Store::open(into)?;
            for p in stores {
                let m = out.merge_from(p).with_context(|| format!("merging {}", p.display()))?;
                println!("{}: {} added, {} already present, {} conflicting (kept the existing record)", p.display(), m.added, m.present, m.conflicts);
            }
            println!("{} now holds {} runs", into.display(), out.len()?);
        }
        SweepCommand::Export { store, out, spec } => {
            let st = Store::open_existing(store)?;
            let records = match spec {
                Some(p) => st.records_for(&SweepSpec::from_file(p)?.points()?.into_iter().map(|p| p.key).collect::<Vec<_>>())?,
                None => st.records()?,
            };
            export::write(&records, out)?;
            println!("{} runs written to {}", records.len(), out.display());
        }
        SweepCommand::Analyze { spec, store, objective, instability, out, n0 } => {
            let s = SweepSpec::from_file(spec)?;
            let keys: Vec<String> = s.points()?.into_iter().map(|p| p.key).collect();
            let records = Store::open_existing(store)?.records_for(&keys)?;
            if records.is_empty() {
                anyhow::bail!("no finished runs of sweep `{}` in {}", s.name, store.display());
            }
            let groups = analyse(&records, *objective, *instability)?;
            for g in &groups {
                println!("{}", g.table());
            }
            if let Some(dir) = out {
                std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
                for (i, g) in groups.iter().enumerate() {
                    let alpha = g.max_stable_fit.or(g.optimal_fit).map_or(0.0, |f| -sweep::analysis::closest_clean(f.exponent));
                    g.curves_figure(alpha, *n0).save_svg(&dir.join(format!("curves_{i}.svg")))?;
                    g.exponents_figure(None).save_svg(&dir.join(format!("exponents_{i}.svg")))?;
                }
                let path = dir.join("analysis.json");
                std::fs::write(&path, serde_json::to_string_pretty(&groups)?).with_context(|| format!("writing {}", path.display()))?;
                println!("figures and analysis.json written to {}", dir.display());
            }
        }
    }
    Ok(())
}
