//! Sweep throughput (issue 6): runs per minute of the sweep engine's scheduler (small runs in
//! parallel, one libtorch thread each) vs the same runs one after another with libtorch using
//! all threads, measured back to back in one invocation; prints the ratio (target >= 1.5x on a
//! grid dominated by small widths, on this 2-core machine).
//!
//! The grid: 8-layer ReLU MLPs in SP on the generated teacher data (no files needed), widths
//! 64, 128, 256 x 4 learning rates x 2 seeds, 60 SGD steps of batch 64 each. The sequential
//! side calls the same runner directly (the work per run is identical; it skips only the store).
//!
//! Run: `cargo bench --bench sweep_throughput` (`WIDTHLAB_BENCH_WIDTHS=64,128` to change the
//! widths). Results also go to `target/bench-results/sweep_throughput.json`.
use std::time::Instant;

use serde::Serialize;
use widthlab::sweep::engine::cores;
use widthlab::sweep::{self, MlpRunner, RunOptions, Runner, SweepSpec};

#[derive(Serialize)]
struct Result {
    runs: usize,
    cores: usize,
    sequential_seconds: f64,
    sequential_one_thread_seconds: f64,
    engine_seconds: f64,
    sequential_runs_per_minute: f64,
    engine_runs_per_minute: f64,
    ratio: f64,
}

fn main() -> anyhow::Result<()> {
    widthlab::device::tune_allocator();
    let widths: Vec<i64> = std::env::var("WIDTHLAB_BENCH_WIDTHS")
        .ok()
        .map(|s| s.split(',').filter_map(|w| w.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![64, 128, 256]);
    let base = serde_json::json!({
        "batch_size": 64, "steps": 60,
        "model": {"depth": 8},
        "data": {"dataset": "teacher", "teacher": {"d_in": 100, "n_train": 2048, "n_test": 256}},
        "eval": {"train_subset": 512}
    });
    let spec = SweepSpec { name: "bench".into(), base, ..SweepSpec::mlp("bench", &Default::default())? }
        .axis("width", widths.clone())?
        .axis("lr", [0.01, 0.03, 0.1, 0.3])?
        .axis("seed", [0, 1])?;
    let points = spec.points()?;
    let n = points.len();
    let all = cores();
    println!("sweep throughput: {n} runs (8-layer MLP, widths {widths:?}, 60 steps), {all} cores");

    // Warm-up (libtorch's lazy initialisation, page faults) outside both timings.
    widthlab::device::set_threads(all);
    MlpRunner::default().run(&points[0].config, all)?;

    // Sequential, libtorch with all threads.
    let t0 = Instant::now();
    for p in &points {
        MlpRunner::default().run(&p.config, all)?;
    }
    let seq = t0.elapsed().as_secs_f64();

    // The engine (fresh store).
    let dir = tempfile::tempdir()?;
    let t0 = Instant::now();
    let report = sweep::run(&spec, &dir.path().join("bench.db"), &RunOptions { progress: false, ..Default::default() })?;
    let eng = t0.elapsed().as_secs_f64();
    anyhow::ensure!(report.trained == n, "engine trained {} of {n} runs", report.trained);

    // For reference: sequential with one libtorch thread (separates the gain from parallel
    // runs from the cost of libtorch's intra-op threads on small matrices).
    widthlab::device::set_threads(1);
    let t0 = Instant::now();
    for p in &points {
        MlpRunner::default().run(&p.config, 1)?;
    }
    let seq1 = t0.elapsed().as_secs_f64();

    let r = Result {
        sequential_one_thread_seconds: seq1,
        runs: n,
        cores: all,
        sequential_seconds: seq,
        engine_seconds: eng,
        sequential_runs_per_minute: 60.0 * n as f64 / seq,
        engine_runs_per_minute: 60.0 * n as f64 / eng,
        ratio: seq / eng,
    };
    println!("sequential, {all} libtorch threads: {:>7.1} runs/min ({seq:.1} s)", r.sequential_runs_per_minute);
    println!("sweep engine ({} in parallel, {} alone): {:>7.1} runs/min ({eng:.1} s)", report.parallel, report.alone, r.engine_runs_per_minute);
    println!("(reference) sequential, 1 libtorch thread: {:>7.1} runs/min ({seq1:.1} s)", 60.0 * n as f64 / seq1);
    println!("ratio engine / sequential: {:.2}x (target >= 1.5x)", r.ratio);
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-results");
    std::fs::create_dir_all(&out)?;
    std::fs::write(out.join("sweep_throughput.json"), serde_json::to_string_pretty(&r)?)?;
    Ok(())
}
