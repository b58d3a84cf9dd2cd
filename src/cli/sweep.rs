//! `widthlab sweep run|search|status|merge|export|analyze`: learning-rate sweeps and searches
//! over a SQLite store.
use std::path::{Path, PathBuf};

use anyhow::Context;
use widthlab::sweep::analysis::{analyse_spec, Instability, LrAnalysis, Objective};
use widthlab::sweep::{self, export, search, RunOptions, SearchSpec, Shard, SpecFile, Store, SweepSpec};

#[derive(clap::Args, Debug)]
pub struct SweepArgs {
    #[command(subcommand)]
    pub command: SweepCommand,
}

/// How `sweep run` and `sweep search` train (none of it changes a result).
#[derive(clap::Args, Debug)]
pub struct RunFlags {
    /// SQLite store (created if missing; grids and searches may share one).
    #[arg(long)]
    store: PathBuf,
    /// Only shard k of N (0-based), e.g. `--shard $SLURM_ARRAY_TASK_ID/8`.
    #[arg(long)]
    shard: Option<Shard>,
    /// Parallel workers for small runs (default: the spec's, else the number of cores).
    #[arg(long)]
    jobs: Option<usize>,
    /// Stop after training this many runs (re-run to resume).
    #[arg(long)]
    limit: Option<usize>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

impl RunFlags {
    fn options(&self) -> RunOptions {
        RunOptions { shard: self.shard, jobs: self.jobs, limit: self.limit, progress: !self.quiet }
    }

    /// ` (shard k/N)` or nothing.
    fn shard_note(&self) -> String {
        self.shard.map_or(String::new(), |k| format!(" (shard {k})"))
    }
}

#[derive(clap::Subcommand, Debug)]
pub enum SweepCommand {
    /// Train every unfinished run of a sweep (safe to interrupt and re-run; several processes
    /// may share a store).
    Run {
        /// Sweep file (TOML or JSON).
        spec: PathBuf,
        #[command(flatten)]
        run: RunFlags,
    },
    /// Search learning rates adaptively (a spec with a `[search]` table): the max-stable one
    /// per (setting, width, seed) by bisection and the optimal one per (setting, width) over
    /// seeds; every probe is a stored run (resumable, safe to run in several processes).
    /// `--shard` splits by group: (setting, width, seed) when only max-stable learning rates
    /// are searched, (setting, width) otherwise. Prints the analysis when done.
    Search {
        /// Search file (TOML or JSON) with a `[search]` table.
        spec: PathBuf,
        #[command(flatten)]
        run: RunFlags,
    },
    /// How much of a sweep or search is done.
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
        /// Only the runs of this sweep or search (default: every record).
        #[arg(long)]
        spec: Option<PathBuf>,
    },
    /// Optimal and max-stable learning rates per width and their fitted width exponents (a
    /// search: its brackets and optima, exponents with 95% CIs widened by the resolution).
    Analyze {
        spec: PathBuf,
        #[arg(long)]
        store: PathBuf,
        /// train-acc, train-loss, test-acc or test-loss (default train-acc; a search uses its
        /// own).
        #[arg(long)]
        objective: Option<Objective>,
        /// When a run counts as unstable: nan, near-chance, acc-below[:T] or loss-above[:M]
        /// (appendix D.4). Default: by run kind and loss (NaN under MSE; under CE training
        /// accuracy below chance + (1 - chance)/9, i.e. 20% on 10 classes; loss above the
        /// optimum + 1 for GPT). A search uses its own.
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

/// The spec at `path` as a grid, with a pointer to `sweep search` for a search.
fn grid(path: &Path) -> anyhow::Result<SweepSpec> {
    match SpecFile::from_file(path)? {
        SpecFile::Grid(s) => Ok(s),
        SpecFile::Search(s) => anyhow::bail!("{} is a search (`{}` has a [search] table): run it with `widthlab sweep search`", path.display(), s.name),
    }
}

/// Writes the figures of `groups` and `json` (the analysis) to `dir`.
fn write_figures(dir: &Path, groups: &[&LrAnalysis], n0: f64, json: String) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for (i, g) in groups.iter().enumerate() {
        let alpha = g.max_stable_fit.or(g.optimal_fit).map_or(0.0, |f| -sweep::analysis::closest_clean(f.exponent));
        g.curves_figure(alpha, n0).save_svg(&dir.join(format!("curves_{i}.svg")))?;
        g.exponents_figure(None).save_svg(&dir.join(format!("exponents_{i}.svg")))?;
    }
    widthlab::files::write_atomic(&dir.join("analysis.json"), json.as_bytes())?;
    println!("figures and analysis.json written to {}", dir.display());
    Ok(())
}

pub fn run(args: &SweepArgs) -> anyhow::Result<()> {
    match &args.command {
        SweepCommand::Run { spec, run } => {
            let s = grid(spec)?;
            let report = sweep::run(&s, &run.store, &run.options())?;
            println!("sweep {}{}: {report}", s.name, run.shard_note());
        }
        SweepCommand::Search { spec, run } => {
            let s = match SpecFile::from_file(spec)? {
                SpecFile::Search(s) => s,
                SpecFile::Grid(g) => anyhow::bail!("{} is a grid (`{}` has no [search] table): run it with `widthlab sweep run`", spec.display(), g.name),
            };
            let out = search::run(&s, &run.store, &run.options())?;
            println!("search {}{}: {}", s.name, run.shard_note(), out.report);
            print!("{}", out.analysis.table());
        }
        SweepCommand::Status { spec, store, shard } => {
            let st = Store::open_existing(store)?;
            match SpecFile::from_file(spec)? {
                SpecFile::Grid(s) => println!("sweep {}: {}", s.name, sweep::status(&s, &st, *shard)?),
                SpecFile::Search(s) => println!("search {}: {}", s.name, search::status(&s, &st, *shard)?),
            }
        }
        SweepCommand::Merge { into, stores } => {
            // Every source is checked to be a readable store before the target is created.
            for p in stores {
                Store::open_existing(p)?;
            }
            let mut out = Store::open(into)?;
            for p in stores {
                let m = out.merge_from(p).with_context(|| format!("merging {}", p.display()))?;
                println!("{}: {} added, {} already present, {} conflicting (kept the existing record)", p.display(), m.added, m.present, m.conflicts);
            }
            println!("{} now holds {} runs", into.display(), out.len()?);
        }
        SweepCommand::Export { store, out, spec } => {
            export::Format::of(out)?;
            let spec = spec.as_deref().map(SpecFile::from_file).transpose()?;
            let st = Store::open_existing(store)?;
            widthlab::files::check_writable(out).context("--out")?;
            let records = match spec {
                Some(SpecFile::Grid(s)) => st.records_for(&s.points()?.into_iter().map(|p| p.key).collect::<Vec<_>>())?,
                Some(SpecFile::Search(s)) => search::records(&s, &st)?,
                None => st.records()?,
            };
            export::write(&records, out)?;
            println!("{} runs written to {}", records.len(), out.display());
        }
        SweepCommand::Analyze { spec, store, objective, instability, out, n0 } => {
            if !(n0.is_finite() && *n0 > 0.0) {
                anyhow::bail!("--n0 (the base width of the learning-rate axis) must be a width > 0, got {n0}");
            }
            if let Some(dir) = out {
                widthlab::files::check_writable(&dir.join("analysis.json")).context("--out")?;
            }
            match SpecFile::from_file(spec)? {
            SpecFile::Grid(s) => {
                let groups = analyse_spec(&s, &Store::open_existing(store)?, objective.unwrap_or_default(), *instability)?;
                for g in &groups {
                    println!("{}", g.table());
                }
                if let Some(dir) = out {
                    write_figures(dir, &groups.iter().collect::<Vec<_>>(), *n0, serde_json::to_string_pretty(&groups)?)?;
                }
            }
            SpecFile::Search(s) => analyze_search(&s, store, *objective, *instability, out.as_deref(), *n0)?,
            }
        }
    }
    Ok(())
}

fn analyze_search(s: &SearchSpec, store: &Path, objective: Option<Objective>, instability: Option<Instability>, out: Option<&Path>, n0: f64) -> anyhow::Result<()> {
    if objective.is_some_and(|o| o != s.search.objective) || instability.is_some_and(|i| Some(i) != s.search.instability) {
        anyhow::bail!("`{}` is a search: its objective and instability rule are part of it (search.objective, search.instability); --objective and --instability apply to grids", s.name);
    }
    let a = search::analyse(s, &Store::open_existing(store)?)?;
    if a.complete == 0 {
        anyhow::bail!("no finished group of search `{}` in {}", s.name, store.display());
    }
    print!("{}", a.table());
    if let Some(dir) = out {
        write_figures(dir, &a.settings.iter().map(|st| &st.lr).collect::<Vec<_>>(), n0, serde_json::to_string_pretty(&a)?)?;
    }
    Ok(())
}
