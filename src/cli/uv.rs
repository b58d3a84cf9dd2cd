//! `widthlab uv`: the 2-layer linear uv model of appendix C.4 from its exact recursions
//! (`widthlab::theory::uv`): dynamics over training, the max-stable learning rate per width
//! (and the authors' learning-rate grid), and the distance to the infinite-width limit.
//! Every subcommand writes CSV, JSON and SVG to its output directory.
use std::path::{Path, PathBuf};

use anyhow::Context;
use widthlab::plot::Panels;
use widthlab::theory::uv::{
    convergence, dynamics, grid_figures, largest_stable_on_grid, log_widths, logspace, lr_grid, max_stable_scan, ConvergenceConfig, ScanConfig, Stability, UvConfig,
    UvParam,
};

#[derive(clap::Args, Debug)]
pub struct UvArgs {
    #[command(subcommand)]
    pub command: UvCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum UvCommand {
    /// f_t and lambda_t over training at several widths (Fig. C.3), with the infinite-width run.
    Dynamics(DynamicsArgs),
    /// Max-stable learning rate per width by bisection and its width exponent (Fig. C.2).
    Scan(ScanArgs),
    /// Distance of finite widths to the infinite-width limit at chosen steps.
    Convergence(ConvergenceArgs),
}

/// Settings shared by every subcommand (the model, schedule and seed).
#[derive(clap::Args, Debug)]
pub struct ModelArgs {
    /// A UvConfig as TOML (fields param, alpha, x, y, weight_decay, schedule, seed); flags override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// sp, ntp or mup.
    #[arg(long)]
    pub param: Option<UvParam>,
    /// Global learning-rate exponent: eta_n = eta n^-alpha.
    #[arg(long, allow_hyphen_values = true)]
    pub alpha: Option<f64>,
    /// Training input x.
    #[arg(long, allow_hyphen_values = true)]
    pub x: Option<f64>,
    /// Label y.
    #[arg(long, allow_hyphen_values = true)]
    pub y: Option<f64>,
    /// Decoupled weight decay (weights shrink by 1 - wd eta_t per step).
    #[arg(long = "wd", allow_hyphen_values = true)]
    pub weight_decay: Option<f64>,
    /// Linear warmup steps.
    #[arg(long)]
    pub warmup_steps: Option<usize>,
    /// Linear warmup as a fraction of each run (overrides --warmup-steps).
    #[arg(long, allow_hyphen_values = true)]
    pub warmup_frac: Option<f64>,
    /// Cosine decay to --final-frac of the peak at the end of each run.
    #[arg(long)]
    pub cosine: bool,
    #[arg(long, allow_hyphen_values = true)]
    pub final_frac: Option<f64>,
    /// Seed of the initial weights.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Output directory (default results/uv/SUBCOMMAND-PARAM).
    #[arg(long, short)]
    pub out: Option<PathBuf>,
}

impl ModelArgs {
    fn config(&self) -> anyhow::Result<UvConfig> {
        let mut c = match &self.config {
            Some(p) => widthlab::config::read_config::<UvConfig>(p)?,
            None => UvConfig::default(),
        };
        if let Some(v) = self.param {
            c.param = v;
        }
        macro_rules! set {
            ($($f:ident => $t:expr),*) => {$(if let Some(v) = self.$f { $t = v; })*};
        }
        set!(alpha => c.alpha, x => c.x, y => c.y, weight_decay => c.weight_decay, warmup_steps => c.schedule.warmup_steps,
             warmup_frac => c.schedule.warmup_frac, final_frac => c.schedule.final_frac, seed => c.seed);
        c.schedule.cosine |= self.cosine;
        c.validate()?;
        Ok(c)
    }
    /// The output folder, once every file the subcommand writes there was checked writable.
    fn out(&self, what: &str, cfg: &UvConfig, files: &[&str]) -> anyhow::Result<PathBuf> {
        let out = self.out.clone().unwrap_or_else(|| PathBuf::from(format!("results/uv/{what}-{}", cfg.param)));
        for f in files {
            widthlab::files::check_writable(&out.join(f)).context("--out")?;
        }
        Ok(out)
    }
}

#[derive(clap::Args, Debug)]
pub struct DynamicsArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Base learning rates, one panel column each (Fig. C.3 uses 1, 1.9, 2.1 with --alpha 1).
    #[arg(long, value_delimiter = ',', allow_hyphen_values = true, default_values_t = [1.0, 1.9, 2.1])]
    pub eta: Vec<f64>,
    /// Widths (comma separated; 1e4 is fine).
    #[arg(long, value_delimiter = ',', default_values_t = [10.0, 100.0, 1000.0, 10000.0, 100000.0])]
    pub widths: Vec<f64>,
    /// Steps.
    #[arg(long, default_value_t = 50)]
    pub steps: usize,
    /// Curves are cut where |f| exceeds this (diverged).
    #[arg(long, default_value_t = 100.0)]
    pub clip: f64,
}

#[derive(clap::Args, Debug)]
pub struct ScanArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Widths (default 13 log-spaced from 10 to 10^6).
    #[arg(long, value_delimiter = ',')]
    pub widths: Option<Vec<f64>>,
    /// Seeds of the initial weights.
    #[arg(long, value_delimiter = ',', default_values_t = [0u64, 1, 2])]
    pub seeds: Vec<u64>,
    /// Relative resolution of the bisection.
    #[arg(long, default_value_t = 1e-3)]
    pub rtol: f64,
    /// Stable iff |f_T| < threshold after T = max(min_steps, ceil(phys_time / eta)) steps.
    #[arg(long, default_value_t = 100.0)]
    pub threshold: f64,
    #[arg(long, default_value_t = 15)]
    pub min_steps: usize,
    #[arg(long, default_value_t = 20.0)]
    pub phys_time: f64,
    /// Also run the authors' grid of this many learning rates (f_T, lambda_T vs eta; Fig. C.2).
    #[arg(long)]
    pub grid: Option<usize>,
    /// Grid range (the authors: 1e-5 .. 10).
    #[arg(long, default_value_t = 1e-5)]
    pub grid_min: f64,
    #[arg(long, default_value_t = 10.0)]
    pub grid_max: f64,
}

#[derive(clap::Args, Debug)]
pub struct ConvergenceArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Base learning rate (0.5 would be one-step convergence for NTP and muP, lambda ~ 2).
    #[arg(long, default_value_t = 0.3, allow_hyphen_values = true)]
    pub eta: f64,
    /// Widths.
    #[arg(long, value_delimiter = ',', default_values_t = [64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0])]
    pub widths: Vec<f64>,
    /// Number of seeds (0..seeds).
    #[arg(long, default_value_t = 20)]
    pub seeds: u64,
    /// Steps at which distances are reported.
    #[arg(long, value_delimiter = ',', default_values_t = [2usize, 5, 10, 20])]
    pub times: Vec<usize>,
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    Ok(widthlab::files::write_atomic(path, text.as_bytes())?)
}

pub fn run(args: &UvArgs) -> anyhow::Result<()> {
    match &args.command {
        UvCommand::Dynamics(a) => run_dynamics(a),
        UvCommand::Scan(a) => run_scan(a),
        UvCommand::Convergence(a) => run_convergence(a),
    }
}

fn run_dynamics(a: &DynamicsArgs) -> anyhow::Result<()> {
    let cfg = a.model.config()?;
    widthlab::theory::uv::check_dynamics_size(a.widths.len(), a.steps, a.eta.len())?;
    let out = a.model.out("dynamics", &cfg, &["dynamics.csv", "dynamics.json", "dynamics.svg"])?;
    let mut csv = String::new();
    let (mut top, mut bottom) = (vec![], vec![]);
    let mut all = vec![];
    for &eta in &a.eta {
        let d = dynamics(&cfg, &a.widths, eta, a.steps)?;
        let body = d.to_csv();
        csv += if csv.is_empty() { &body } else { body.split_once('\n').map_or("", |x| x.1) };
        for (w, r) in &d.runs {
            println!("{} alpha {} eta {eta}: width {w:>9}: f_T = {:+.6e}, lambda_T = {:.6e} ({:?})", cfg.param, cfg.alpha, r.last.f, r.last.lambda, r.exit);
        }
        let (f, l) = d.figures(a.clip);
        top.push(f);
        bottom.push(l);
        all.push(d);
    }
    let cols = top.len();
    top.extend(bottom);
    write(&out.join("dynamics.csv"), &csv)?;
    write(&out.join("dynamics.json"), &serde_json::to_string_pretty(&all)?)?;
    Panels::new(top, cols).save_svg(&out.join("dynamics.svg"))?;
    println!("written: {}/{{dynamics.csv, dynamics.json, dynamics.svg}}", out.display());
    Ok(())
}

fn run_scan(a: &ScanArgs) -> anyhow::Result<()> {
    let cfg = a.model.config()?;
    let stability = Stability { threshold: a.threshold, min_steps: a.min_steps, phys_time: a.phys_time, ..Stability::default() };
    let scan = ScanConfig { widths: a.widths.clone().unwrap_or_else(|| log_widths(10.0, 1e6, 13)), seeds: a.seeds.clone(), rtol: a.rtol, stability: stability.clone() };
    if let Some(k) = a.grid {
        if k < 2 || !(a.grid_min > 0.0 && a.grid_max > a.grid_min) {
            anyhow::bail!("--grid needs >= 2 learning rates and 0 < --grid-min < --grid-max");
        }
        widthlab::limits::check_runs("uv scan --grid (widths x learning rates)", scan.widths.len() as f64 * k as f64)?;
    }
    scan.validate()?;
    let files: &[&str] = if a.grid.is_some() { &["max_stable.csv", "scan.json", "max_stable.svg", "grid.csv", "fig_c2.svg"] } else { &["max_stable.csv", "scan.json", "max_stable.svg"] };
    let out = a.model.out("scan", &cfg, files)?;
    let r = max_stable_scan(&cfg, &scan)?;
    println!("max-stable learning rate, {} (alpha {}), {} widths x {} seeds in {:.2} s:", cfg.param, cfg.alpha, scan.widths.len(), scan.seeds.len(), r.seconds);
    for (w, m) in r.mean_per_width() {
        println!("  width {w:>9}: eta_max = {m:.4e}");
    }
    println!("width exponent {:+.3} [{:+.3}, {:+.3}] (r2 {:.4})", r.fit.exponent, r.fit.ci_low, r.fit.ci_high, r.fit.r2);
    write(&out.join("max_stable.csv"), &r.to_csv())?;
    write(&out.join("scan.json"), &serde_json::to_string_pretty(&r)?)?;
    r.figure().save_svg(&out.join("max_stable.svg"))?;
    if let Some(k) = a.grid {
        let pts = lr_grid(&cfg, &scan.widths, &scan.seeds[..1], &logspace(a.grid_min, a.grid_max, k), &stability, true)?;
        let mut csv = String::from("width,seed,eta,steps,f,lambda,stable\n");
        for p in &pts {
            csv += &format!("{},{},{},{},{},{},{}\n", p.width, p.seed, p.eta, p.steps, p.f, p.lambda, p.stable);
        }
        write(&out.join("grid.csv"), &csv)?;
        for (w, _, best) in largest_stable_on_grid(&pts) {
            println!("  grid: width {w:>9}: largest stable grid eta {}", best.map_or("none".into(), |b| format!("{b:.4e}")));
        }
        let (f, l) = grid_figures(&pts, cfg.y);
        Panels::new(vec![f, l, r.figure()], 3).save_svg(&out.join("fig_c2.svg"))?;
    }
    println!("written: {}/{{max_stable.csv, scan.json, max_stable.svg{}}}", out.display(), if a.grid.is_some() { ", grid.csv, fig_c2.svg" } else { "" });
    Ok(())
}

fn run_convergence(a: &ConvergenceArgs) -> anyhow::Result<()> {
    let cfg = a.model.config()?;
    widthlab::limits::check_runs("uv convergence (widths x seeds)", a.widths.len() as f64 * a.seeds as f64)?;
    let study = ConvergenceConfig { widths: a.widths.clone(), seeds: (0..a.seeds).collect(), eta: a.eta, times: a.times.clone() };
    study.validate()?;
    let out = a.model.out("convergence", &cfg, &["convergence.csv", "convergence.json", "convergence.svg"])?;
    let r = convergence(&cfg, &study)?;
    println!("distance to the infinite-width limit, {} (alpha {}, eta {}), {} seeds:", cfg.param, cfg.alpha, a.eta, a.seeds);
    for (t, df, dl) in &r.fits {
        let show = |p: &Option<widthlab::fit::PowerLaw>| p.as_ref().map_or("  n/a ".to_string(), |p| format!("{:+.3}", p.exponent));
        println!("  t = {t:>4}: |f_t - f_t^inf| ~ n^{}, |lambda_t - lambda_t^inf| ~ n^{}", show(df), show(dl));
    }
    write(&out.join("convergence.csv"), &r.to_csv())?;
    write(&out.join("convergence.json"), &serde_json::to_string_pretty(&r)?)?;
    r.figure().save_svg(&out.join("convergence.svg"))?;
    println!("written: {}/{{convergence.csv, convergence.json, convergence.svg}}", out.display());
    Ok(())
}
