//! `widthlab coord-check`: a refined coordinate check over widths and seeds, written as tidy
//! CSV (rows and exponent fits) and JSON.
use std::path::PathBuf;

use anyhow::Context;
use widthlab::data::DatasetName;
use widthlab::rcc::runner::{run, CoordCheck, Profile, PRESETS};
use widthlab::rcc::{Metric, MetricId};

#[derive(clap::Args, Debug)]
pub struct CoordCheckArgs {
    /// Preset (appendix E figure): e1 (= Fig. 4), e2, e3, e4, e4-llzero, e5, e7, e8, e9.
    #[arg(long, default_value = "e1")]
    pub preset: String,
    /// smoke, quick or paper.
    #[arg(long, default_value = "quick")]
    pub profile: Profile,
    /// Override the widths (comma separated).
    #[arg(long, value_delimiter = ',')]
    pub widths: Option<Vec<i64>>,
    /// Override the seeds (comma separated).
    #[arg(long, value_delimiter = ',')]
    pub seeds: Option<Vec<u64>>,
    /// Override the number of steps.
    #[arg(long)]
    pub steps: Option<usize>,
    /// Dataset (default fashion-mnist; the paper used CIFAR-10). `teacher` generates as
    /// many points as the preset trains on.
    #[arg(long)]
    pub dataset: Option<DatasetName>,
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Output directory (default results/coord-check/PRESET-PROFILE).
    #[arg(long, short)]
    pub out: Option<PathBuf>,
    /// Also write the probe batch and the weights at every measured step as safetensors
    /// (OUT/dump/w{width}-s{seed}/), to recompute any metric elsewhere.
    #[arg(long)]
    pub dump: bool,
    /// Also the sharpness every K steps and at step 0 (rows `sharpness`, `sharpness_gn`,
    /// `eta_sharpness` or, under Adam, `sharpness_precond`, with residuals; widthlab sharpness
    /// --help lists them), on 1024 seeded training examples.
    #[arg(long, value_name = "K")]
    pub sharpness_every: Option<usize>,
    /// With --sharpness-every: also each weight matrix's block (`sharpness_layer`).
    #[arg(long, requires = "sharpness_every")]
    pub sharpness_layers: bool,
    /// Tolerance of the verdicts: a measured exponent `holds` when its 95% interval lies
    /// inside `predicted +- TOL`, `deviates` when it lies outside, and is `inconclusive`
    /// otherwise (the report's claim model). The default, half the distance between the
    /// half-integer exponents the theory predicts, makes `holds` exclude the neighbours
    /// `predicted +- 1/2`.
    #[arg(long, default_value_t = 0.25)]
    pub tol: f64,
    /// The metrics whose width exponents are compared with the theory's (verdicts.csv), comma
    /// separated; `delta_` names for one step (the theory predicts the `act`, `input`, update
    /// and `grad` metrics of weight layers).
    #[arg(long, value_delimiter = ',', default_value = "effective,propagating,act_update")]
    pub verdicts: Vec<MetricId>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// The files `coord-check` writes to its output folder.
const OUTPUTS: [&str; 8] = ["rows.csv", "fits.csv", "verdicts.csv", "result.json", "effective.svg", "propagating.svg", "act_update.svg", "weight_update_op.svg"];

pub fn run_cli(args: &CoordCheckArgs) -> anyhow::Result<()> {
    let mut cc = CoordCheck::preset(&args.preset, args.profile)
        .with_context(|| format!("presets: {}", PRESETS.join(", ")))?;
    if let Some(w) = &args.widths {
        cc.widths = w.clone();
    }
    if let Some(s) = &args.seeds {
        cc.seeds = s.clone();
    }
    if let Some(s) = args.steps {
        cc.steps = s;
        cc.train.steps = Some(s);
    }
    if let Some(d) = args.dataset {
        cc.set_dataset(d);
    }
    if args.data_dir.is_some() {
        cc.train.data.data_dir = args.data_dir.clone();
    }
    if let Some(every) = args.sharpness_every {
        let config = widthlab::sharpness::SharpnessConfig { layers: args.sharpness_layers, ..Default::default() };
        cc.sharpness = Some(widthlab::sharpness::SharpnessEvery { every, config });
    }
    let out = args.out.clone().unwrap_or_else(|| PathBuf::from(format!("results/coord-check/{}-{}", cc.name, args.profile)));
    cc.validate()?;
    for f in OUTPUTS.iter().chain(if args.dump { &["dump/probe"][..] } else { &[] }) {
        widthlab::files::check_writable(&out.join(f)).context("--out")?;
    }
    if args.dump {
        cc.monitor.dump_dir = Some(out.join("dump"));
    }
    let res = run(&cc, !args.quiet)?;
    res.write_csv(&out.join("rows.csv"))?;
    res.write_fits_csv(&out.join("fits.csv"))?;
    res.write_json(&out.join("result.json"))?;
    println!(
        "coord-check {} ({}): {} widths x {} seeds x {} steps in {:.1} s; {} diverged",
        cc.name,
        args.profile,
        cc.widths.len(),
        cc.seeds.len(),
        cc.steps,
        res.seconds,
        res.diverged.len()
    );
    let verdicts = res.verdicts(&args.verdicts, args.tol)?;
    println!(
        "width exponents at step {}: measured [95% CI] vs predicted after step 1 / after step 2 (infinite width); holds: CI inside predicted +- {}, deviates: CI outside, else inconclusive",
        cc.steps, args.tol
    );
    let show = |v: &Option<widthlab::theory::predict::Verdict>| {
        v.as_ref().map_or("     n/a            ".to_string(), |v| format!("{:+.2} {:<12}", v.predicted, v.verdict.to_string()))
    };
    let cell = |v: &Option<widthlab::theory::predict::Verdict>| v.as_ref().map_or(",".to_string(), |v| format!("{},{}", v.predicted, v.verdict));
    let mut csv = String::from("layer,metric,step,measured,ci_low,ci_high,predicted_first,verdict_first,predicted_later,verdict_later\n");
    let mut counts = std::collections::BTreeMap::new();
    for v in &verdicts {
        let m = v.first.as_ref().or(v.later.as_ref()).expect("a verdict has one prediction");
        println!(
            "  {:<16} {:<12} {:+.2} [{:+.2}, {:+.2}]  first {}  later {}",
            v.layer, v.metric, m.measured, m.ci_low, m.ci_high, show(&v.first), show(&v.later)
        );
        csv += &format!("{},{},{},{},{},{},{},{}\n", v.layer, v.metric, v.step, m.measured, m.ci_low, m.ci_high, cell(&v.first), cell(&v.later));
        if let Some(l) = &v.later {
            *counts.entry(l.verdict).or_insert(0usize) += 1;
        }
    }
    let counts: Vec<String> = counts.iter().map(|(v, k)| format!("{k} {v}")).collect();
    println!("against the infinite-width prediction: {}", if counts.is_empty() { "none".to_string() } else { counts.join(", ") });
    widthlab::files::write_atomic(&out.join("verdicts.csv"), csv.as_bytes())?;
    let later = widthlab::theory::predict::predict(&cc.setting(widthlab::theory::predict::StepPhase::Later)?)?;
    for metric in [Metric::Effective, Metric::Propagating, Metric::ActUpdate, Metric::WeightUpdateOp] {
        res.panels_vs_width(metric, &|l| later.get(l, metric).filter(|e| e.is_finite()))
            .save_svg(&out.join(format!("{metric}.svg")))?;
    }
    println!("written: {}/{{{}}}", out.display(), OUTPUTS.join(", "));
    Ok(())
}
