//! Training throughput (tokens/s) of widthlab's GPT vs the same model in PyTorch eager
//! (benches/reference/gpt_step.py, run in the same invocation): 6 blocks, V = 8192,
//! sequences of 128 tokens, batch 8, SP, AdamW (0.9, 0.95, eps 1e-12, wd 0.1) with gradient
//! clipping at 1, CE on random tokens.
//!
//! Run: `cargo bench --bench gpt_step` (widths via `WIDTHLAB_BENCH_WIDTHS=64,256`, the
//! default; seconds per measurement via `WIDTHLAB_BENCH_SECONDS`, default 5; the Python
//! interpreter via `WIDTHLAB_PYTHON`, else the crate's `.venv`, else `python3`). Results also
//! go to `target/bench-results/gpt_step.json`. Timings are comparable only within one run.
use std::process::Command;
use std::time::Instant;

use serde::Serialize;
use tch::{Device, Kind, Tensor};
use widthlab::loss::{Loss, LossKind};
use widthlab::model::{Gpt, GptConfig, Model};
use widthlab::optim::Optimizer;
use widthlab::train::gpt::GptTrainConfig;
use widthlab::param::Parameterization;

mod common;
use common::python;

const DEPTH: usize = 6;
const VOCAB: i64 = 8192;
const SEQ: i64 = 128;
const BATCH: i64 = 8;

/// Steps per second of widthlab's GPT; returns (tokens/s, steps measured).
fn widthlab_rate(n: i64, seconds: f64) -> (f64, usize) {
    let cfg = GptConfig { width: n, depth: DEPTH, vocab_size: VOCAB, ..GptConfig::default() };
    let model = Gpt::new(&cfg, &Parameterization::sp(), 0, Device::Cpu).expect("model");
    // the paper's AdamW settings (betas 0.9/0.95, eps 1e-12, wd 0.1, clipping at 1)
    let ocfg = GptTrainConfig::default().optim;
    let mut opt = Optimizer::new(&ocfg, 1e-3, model.params()).expect("optimizer");
    let loss = Loss::new(LossKind::Ce);
    let data = Tensor::randint(VOCAB, [64, BATCH, SEQ + 1], (Kind::Int64, Device::Cpu));
    let mut i = 0;
    let mut step = || {
        let w = data.get(i % 64);
        let (x, y) = (w.narrow(1, 0, SEQ), w.narrow(1, 1, SEQ).reshape([-1]));
        opt.step(model.params(), &mut || loss.compute(&model.forward(&x), &y)).expect("step");
        i += 1;
    };
    step();
    step();
    let t0 = Instant::now();
    let mut k = 0;
    while k < 3 || t0.elapsed().as_secs_f64() < seconds {
        step();
        k += 1;
    }
    (k as f64 * (BATCH * SEQ) as f64 / t0.elapsed().as_secs_f64(), k)
}


fn pytorch_rate(n: i64, steps: usize, threads: i32) -> Option<f64> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/reference/gpt_step.py");
    let args: Vec<String> = [n, DEPTH as i64, VOCAB, SEQ, BATCH, steps as i64, threads as i64].iter().map(|v| v.to_string()).collect();
    let out = Command::new(python()).arg(script).args(&args).output().ok()?;
    if !out.status.success() {
        eprintln!("PyTorch reference failed: {}", String::from_utf8_lossy(&out.stderr));
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v["tokens_per_s"].as_f64()
}

#[derive(Serialize)]
struct Row {
    width: i64,
    widthlab_tokens_per_s: f64,
    pytorch_tokens_per_s: Option<f64>,
    ratio: Option<f64>,
}

fn main() {
    widthlab::device::tune_allocator();
    let widths: Vec<i64> = std::env::var("WIDTHLAB_BENCH_WIDTHS")
        .ok()
        .map(|s| s.split(',').filter_map(|w| w.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![64, 256]);
    let seconds: f64 = std::env::var("WIDTHLAB_BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(5.0);
    let threads = tch::get_num_threads();
    println!("gpt_step: {DEPTH}-block GPT, V {VOCAB}, seq {SEQ}, batch {BATCH}, AdamW + clipping, SP, CE, {threads} libtorch threads");
    println!("{:>6} {:>18} {:>18} {:>8}", "width", "widthlab tokens/s", "pytorch tokens/s", "ratio");
    let mut rows = vec![];
    for &n in &widths {
        let (ours, steps) = widthlab_rate(n, seconds);
        let theirs = pytorch_rate(n, steps, threads);
        let row = Row { width: n, widthlab_tokens_per_s: ours, pytorch_tokens_per_s: theirs, ratio: theirs.map(|t| ours / t) };
        println!(
            "{:>6} {:>18.0} {:>18} {:>8}",
            n,
            ours,
            theirs.map_or("n/a".into(), |t| format!("{t:.0}")),
            row.ratio.map_or("n/a".into(), |r| format!("{r:.2}x"))
        );
        rows.push(row);
    }
    println!("target: ratio >= 1.0x");
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/target/bench-results");
    if std::fs::create_dir_all(dir).is_ok() {
        let path = format!("{dir}/gpt_step.json");
        if let Ok(json) = serde_json::to_string_pretty(&rows) {
            let _ = std::fs::write(&path, json);
            println!("written to {path}");
        }
    }
}
