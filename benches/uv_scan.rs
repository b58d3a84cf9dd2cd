//! The uv model's full learning-rate scan (Fig. C.2's grid): widths 10..10^6 x seeds x 30
//! learning rates, every run for `T(eta) = max(15, ceil(20/eta))` steps (the authors'
//! horizon), in widthlab (`theory::uv::lr_grid`: for each learning rate, 8 runs of equal
//! length in lockstep per task, rayon over tasks) and in NumPy
//! (`benches/reference/uv_scan.py`, run in the same invocation with the project venv's
//! python): the authors' approach (a Python loop of scalar updates per run) and the grid
//! vectorised with NumPy. Both sides do the same work: same initial states, every step, stop
//! only on non-finite states. Prints both times, the ratios, and the largest disagreement of
//! the final outputs.
//!
//! Workload: SP with `eta_n = eta_0 / n` (`alpha = 1`), `eta_0` log-spaced in [0.01, 10] so
//! that every width's edge of stability `eta_0 ~ 2` lies inside the grid. Environment:
//! `WIDTHLAB_BENCH_SEEDS` (default 10), `WIDTHLAB_BENCH_WIDTHS` (number of log-spaced widths,
//! default 21). Results also go to `target/bench-results/uv_scan.json`.
use std::process::Command;
use std::time::Instant;

use widthlab::theory::uv::{initial_state, log_widths, logspace, lr_grid, Stability, UvConfig, UvParam};

mod common;
use common::python;


fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

fn main() {
    let seeds: Vec<u64> = (0..env_usize("WIDTHLAB_BENCH_SEEDS", 10) as u64).collect();
    let widths = log_widths(10.0, 1e6, env_usize("WIDTHLAB_BENCH_WIDTHS", 21));
    let etas = logspace(0.01, 10.0, 30);
    let cfg = UvConfig { param: UvParam::Sp, alpha: 1.0, ..UvConfig::default() };
    let crit = Stability::default();
    let steps: Vec<usize> = etas.iter().map(|&e| crit.steps(e)).collect();
    let total_steps: usize = steps.iter().sum::<usize>() * widths.len() * seeds.len();
    println!(
        "uv scan: {} widths (10..1e6) x {} seeds x {} learning rates = {} runs, {:.2e} recursion steps",
        widths.len(),
        seeds.len(),
        etas.len(),
        widths.len() * seeds.len() * etas.len(),
        total_steps as f64
    );

    // widthlab: warm up once, then time the full grid
    let _ = lr_grid(&cfg, &widths[..2], &seeds[..1], &etas, &crit, false).expect("grid");
    let t0 = Instant::now();
    let pts = lr_grid(&cfg, &widths, &seeds, &etas, &crit, false).expect("grid");
    let rust_s = t0.elapsed().as_secs_f64();
    let t0 = Instant::now();
    let _ = lr_grid(&cfg, &widths, &seeds, &etas, &crit, true).expect("grid");
    let rust_early_s = t0.elapsed().as_secs_f64();
    let threads = rayon::current_num_threads();

    // the same runs for NumPy
    let dir = tempfile::tempdir().expect("tempdir");
    let runs: Vec<serde_json::Value> = widths
        .iter()
        .flat_map(|&w| seeds.iter().map(move |&s| (w, s)))
        .map(|(w, s)| {
            let init = initial_state(&cfg, w, s).expect("init");
            let co = cfg.coefficients(w).expect("coefficients");
            serde_json::json!({"f0": init.f, "lambda0": init.lambda, "k_a": co.k_a, "k_p": co.k_p, "k_q": co.k_q})
        })
        .collect();
    let jobs = serde_json::json!({"etas": etas, "steps": steps, "runs": runs, "y": cfg.y});
    let (jobs_path, out_path) = (dir.path().join("jobs.json"), dir.path().join("out.json"));
    std::fs::write(&jobs_path, jobs.to_string()).expect("write jobs");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/reference/uv_scan.py");
    let status = Command::new(python()).args([script, jobs_path.to_str().unwrap(), out_path.to_str().unwrap()]).status();
    let py: Option<serde_json::Value> = match status {
        Ok(s) if s.success() => serde_json::from_str(&std::fs::read_to_string(&out_path).expect("python output")).ok(),
        _ => {
            eprintln!("NumPy reference failed (is numpy in {}?)", python());
            None
        }
    };

    println!("widthlab (rayon, {threads} threads), every step:      {rust_s:>9.4} s");
    println!("widthlab, stopping at fixed points:             {rust_early_s:>9.4} s");
    let mut summary = serde_json::json!({"runs": pts.len(), "steps": total_steps, "widthlab_seconds": rust_s, "widthlab_early_exit_seconds": rust_early_s, "threads": threads});
    if let Some(py) = py {
        let max_dev = |key: &str| {
            py[key].as_array().map(|v| {
                let (mut worst, mut agree) = (0f64, 0usize);
                for (p, q) in pts.iter().zip(v) {
                    match q.as_f64() {
                        Some(q) if p.f.is_finite() => {
                            worst = worst.max((p.f - q).abs() / p.f.abs().max(q.abs()).max(1e-12));
                            agree += 1;
                        }
                        None if !p.f.is_finite() => agree += 1,
                        _ => {}
                    }
                }
                (worst, agree)
            })
        };
        for (label, time_key, f_key) in [("NumPy, authors' scalar loop", "scalar_seconds", "f_scalar"), ("NumPy, vectorised over the grid", "vector_seconds", "f_vector")] {
            if let Some(t) = py[time_key].as_f64() {
                let (dev, agree) = max_dev(f_key).unwrap_or((f64::NAN, 0));
                println!(
                    "{label:<40} {t:>9.4} s   ratio {:>8.1}x   (same outcome in {agree}/{} runs, max relative difference of f_T {dev:.1e})",
                    t / rust_s,
                    pts.len()
                );
                summary[time_key] = t.into();
                summary[format!("{time_key}_ratio")] = (t / rust_s).into();
            }
        }
    }
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/target/bench-results");
    let _ = std::fs::create_dir_all(dir);
    let _ = std::fs::write(format!("{dir}/uv_scan.json"), serde_json::to_string_pretty(&summary).unwrap());
}
