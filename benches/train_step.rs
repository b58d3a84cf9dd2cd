//! Training-step throughput of the paper's 8-layer MLP (SGD, SP, CE, batch 64, 784 -> n -> 10),
//! widthlab vs PyTorch eager (benches/reference/mlp_step.py, run in the same invocation), and
//! widthlab's achieved GFLOP/s vs the GFLOP/s of the step's own matrix products timed bare.
//!
//! Run: `cargo bench --bench train_step` (widths via `WIDTHLAB_BENCH_WIDTHS=64,256`; seconds
//! per measurement via `WIDTHLAB_BENCH_SECONDS`, default 3). Results also go to
//! `target/bench-results/train_step.json`. Timings are only comparable within one run: the
//! two implementations are measured in alternating blocks per width (the PyTorch script runs
//! as a child process serving blocks on request), on the same threads (libtorch's count, so
//! `OMP_NUM_THREADS=1` runs both single-threaded: do that on a busy machine, where two-thread
//! timings collapse whenever the other core is taken). The bare products are timed twice:
//! through `widthlab::kernels::ops` (what the step uses; the "of bare" column) and through
//! libtorch's `mm`.
//!
//! Both sides do the same work per step: an 8-layer bias-free ReLU MLP in f32, He init, SGD
//! without momentum at lr 1e-3, CE averaged over the batch, the batch a slice of a
//! preallocated random dataset (no data loading), and the loss read back as a number. The
//! widthlab side is [`widthlab::train::mlp_step`] as `Trainer::step` calls it without a hook (the
//! MLP's hand-written backward with the SGD update fused into it); the Python side gets
//! widthlab's glibc allocator settings ([`widthlab::device::tune_allocator`]) through
//! `MALLOC_*` variables.
//!
//! The products take the path `widthlab::kernels::dispatch` chose for each shape (the
//! kernels, or libtorch's `mm` where it timed faster on this CPU); the bench prints the CPU
//! model and the path each product took. Targets: ratio >= 1.0x at every width, >= 1.5x at
//! widths <= 256, widthlab at >= 80% of the bare products' GFLOP/s at 4096. Figures:
//! `docs/benchmarks.md` (`bash docs/benchmarks.sh`).
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Instant;

use serde::Serialize;
use tch::{Device, Kind, Tensor};
use widthlab::kernels::ops;
use widthlab::loss::{Loss, LossKind};
use widthlab::model::{Mlp, MlpConfig, Model};
use widthlab::optim::{OptimConfig, Optimizer};
use widthlab::param::Parameterization;
use widthlab::train::mlp_step;

mod common;
use common::{machine, paths, python, write_section};

const DEPTH: usize = 8;
const D_IN: i64 = 784;
const D_OUT: i64 = 10;
const BATCH: i64 = 64;
const N_DATA: i64 = 4096;

/// (fan_in, fan_out) of every layer.
fn shapes(n: i64) -> Vec<(i64, i64)> {
    (0..DEPTH)
        .map(|l| match l {
            0 => (D_IN, n),
            l if l + 1 == DEPTH => (n, D_OUT),
            _ => (n, n),
        })
        .collect()
}

/// Floating-point operations of one step's matrix products: forward, weight gradient, and
/// input gradient for every layer but the first (the data needs no gradient).
fn step_flops(n: i64) -> f64 {
    shapes(n)
        .iter()
        .enumerate()
        .map(|(l, &(i, o))| {
            let mm = 2.0 * (BATCH * i * o) as f64;
            if l == 0 {
                2.0 * mm
            } else {
                3.0 * mm
            }
        })
        .sum()
}

/// Timing blocks per measurement; each measurement reports its fastest block (as Python's
/// `timeit` does), on both sides, so that bursts of load from other processes on a shared
/// machine bias neither.
const BLOCKS: usize = 5;

/// After 2 warm-up calls, repeats `f` in [`BLOCKS`] blocks of `seconds / BLOCKS` each (at least
/// `min` calls per block); returns the calls per second of the fastest block.
fn rate(seconds: f64, min: usize, mut f: impl FnMut()) -> f64 {
    f();
    f();
    let mut best = 0.0f64;
    for _ in 0..BLOCKS {
        best = best.max(block(seconds / BLOCKS as f64, min, &mut f));
    }
    best
}

/// Calls `f` for at least `seconds` and `min` calls; returns calls per second.
fn block(seconds: f64, min: usize, f: &mut impl FnMut()) -> f64 {
    let t0 = Instant::now();
    let mut k = 0;
    while k < min || t0.elapsed().as_secs_f64() < seconds {
        f();
        k += 1;
    }
    k as f64 / t0.elapsed().as_secs_f64()
}

/// The PyTorch reference (benches/reference/mlp_step.py) as a child process serving timing
/// blocks on request.
struct Reference {
    child: std::process::Child,
    out: BufReader<std::process::ChildStdout>,
}

impl Reference {
    fn start(n: i64, threads: i32) -> Option<Reference> {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/reference/mlp_step.py");
        // The same glibc allocator settings as widthlab's (device::tune_allocator: no mmap for
        // large blocks, no heap trimming), so that neither side pays page faults the other avoids.
        let mut child = Command::new(python())
            .args([script, &n.to_string(), &threads.to_string()])
            .env("MALLOC_MMAP_MAX_", "0")
            .env("MALLOC_TRIM_THRESHOLD_", i32::MAX.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| eprintln!("PyTorch reference did not start: {e}"))
            .ok()?;
        let mut out = BufReader::new(child.stdout.take()?);
        let mut line = String::new();
        out.read_line(&mut line).ok()?;
        if line.trim() != "ready" {
            eprintln!("PyTorch reference failed (its error is above)");
            return None;
        }
        Some(Reference { child, out })
    }

    /// Runs `steps` steps; returns steps per second.
    fn block(&mut self, steps: usize) -> Option<f64> {
        writeln!(self.child.stdin.as_mut()?, "{steps}").ok()?;
        let mut line = String::new();
        self.out.read_line(&mut line).ok()?;
        let v: serde_json::Value = serde_json::from_str(&line).ok()?;
        Some(steps as f64 / v["seconds"].as_f64()?)
    }
}

impl Drop for Reference {
    fn drop(&mut self) {
        drop(self.child.stdin.take()); // end of input: the script exits
        let _ = self.child.wait();
    }
}

/// widthlab's and PyTorch's steps per second, measured in alternating blocks of about
/// `seconds / BLOCKS` each (so that both see the same machine, also when its speed drifts),
/// fastest block of each side.
fn step_rates(n: i64, seconds: f64, threads: i32) -> (f64, Option<f64>) {
    let cfg = MlpConfig { d_in: D_IN, d_out: D_OUT, width: n, depth: DEPTH, ..MlpConfig::default() };
    let model = Mlp::new(&cfg, &Parameterization::sp(), 0, Device::Cpu).expect("model");
    let mut opt = Optimizer::new(&OptimConfig::default(), 1e-3, model.params()).expect("optimizer");
    let loss = Loss::new(LossKind::Ce);
    let x_all = Tensor::randn([N_DATA, D_IN], (Kind::Float, Device::Cpu));
    let y_all = Tensor::randint(D_OUT, [N_DATA], (Kind::Int64, Device::Cpu));
    let per_epoch = N_DATA / BATCH;
    let mut i = 0;
    let mut step = || {
        let j = (i % per_epoch) * BATCH;
        let (x, y) = (x_all.narrow(0, j, BATCH), y_all.narrow(0, j, BATCH));
        mlp_step(&model, &mut opt, &loss, &x, &y, false).expect("step");
        i += 1;
    };
    step();
    step();
    let mut reference = Reference::start(n, threads);
    let per_block = seconds / BLOCKS as f64;
    // PyTorch's block length in steps, from a short calibration block
    let mut py_steps = reference.as_mut().and_then(|r| r.block(2)).map(|r| (r * per_block).ceil().max(1.0) as usize);
    let (mut ours, mut theirs) = (0.0f64, None::<f64>);
    for _ in 0..BLOCKS {
        ours = ours.max(block(per_block, 1, &mut step));
        if let (Some(r), Some(k)) = (reference.as_mut(), py_steps) {
            py_steps = r.block(k).map(|rate| {
                theirs = Some(theirs.unwrap_or(0.0).max(rate));
                (rate * per_block).ceil().max(1.0) as usize
            });
        }
    }
    (ours, theirs)
}

/// The step's matrix products alone: through libtorch's `mm` into preallocated outputs when
/// `libtorch`, else through [`ops`] as the step itself calls it (the forward by
/// [`ops::linear`], the two gradient products into preallocated outputs), each on the path
/// chosen for its shape.
fn bare_matmul_rate(n: i64, seconds: f64, libtorch: bool) -> f64 {
    let opts = (Kind::Float, Device::Cpu);
    let sets: Vec<_> = shapes(n)
        .into_iter()
        .map(|(i, o)| {
            let x = Tensor::randn([BATCH, i], opts);
            let w = Tensor::randn([o, i], opts);
            let g = Tensor::randn([BATCH, o], opts);
            let (y, gw, gx) = (Tensor::empty([BATCH, o], opts), Tensor::empty([o, i], opts), Tensor::empty([BATCH, i], opts));
            (x, w.tr(), w, g.tr(), g, y, gw, gx)
        })
        .collect();
    let calls = rate(seconds, 1, || {
        for (l, (x, wt, w, gt, g, y, gw, gx)) in sets.iter().enumerate() {
            // forward [B,i] x [i,o]; weight grad [o,B] x [B,i]; input grad [B,o] x [o,i]
            let mut products = vec![(y, x, wt), (gw, gt, x)];
            if l > 0 {
                products.push((gx, g, w));
            }
            for (k, (out, a, b)) in products.into_iter().enumerate() {
                if libtorch {
                    let _ = a.matmul_out(out, b);
                } else if k == 0 {
                    let _ = ops::linear(x, w, None, 1.0); // the forward, as the step runs it
                } else {
                    ops::gemm_into(out, a, b, 1.0, 0.0);
                }
            }
        }
    });
    calls * step_flops(n) / 1e9
}

#[derive(Serialize)]
struct Row {
    width: i64,
    widthlab_steps_per_s: f64,
    pytorch_steps_per_s: Option<f64>,
    ratio: Option<f64>,
    widthlab_gflops: f64,
    /// The step's products through widthlab::kernels::ops (what the step uses).
    bare_matmul_gflops: f64,
    /// The same products through libtorch's mm.
    bare_libtorch_mm_gflops: f64,
    fraction_of_bare: f64,
}


fn main() {
    widthlab::device::tune_allocator();
    let widths: Vec<i64> = std::env::var("WIDTHLAB_BENCH_WIDTHS")
        .ok()
        .map(|s| s.split(',').filter_map(|w| w.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![64, 256, 1024, 4096]);
    let seconds: f64 = std::env::var("WIDTHLAB_BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(3.0);
    let threads = tch::get_num_threads();
    println!("train_step: 8-layer MLP, SGD, SP, CE, batch 64, {threads} libtorch threads, ~{seconds} s per measurement, fastest of {BLOCKS} blocks");
    println!("{}", machine());
    println!(
        "{:>6} {:>14} {:>14} {:>8} {:>14} {:>14} {:>9} {:>16}",
        "width", "widthlab st/s", "pytorch st/s", "ratio", "widthlab GF/s", "bare mm GF/s", "of bare", "libtorch mm GF/s"
    );
    let mut rows = vec![];
    for &n in &widths {
        let (ours, theirs) = step_rates(n, seconds, threads);
        let bare = bare_matmul_rate(n, seconds, false);
        let bare_torch = bare_matmul_rate(n, seconds, true);
        let gflops = ours * step_flops(n) / 1e9;
        let row = Row {
            width: n,
            widthlab_steps_per_s: ours,
            pytorch_steps_per_s: theirs,
            ratio: theirs.map(|t| ours / t),
            widthlab_gflops: gflops,
            bare_matmul_gflops: bare,
            bare_libtorch_mm_gflops: bare_torch,
            fraction_of_bare: gflops / bare,
        };
        println!(
            "{:>6} {:>14.1} {:>14} {:>8} {:>14.1} {:>14.1} {:>8.0}% {:>16.1}",
            n,
            ours,
            theirs.map_or("n/a".into(), |t| format!("{t:.1}")),
            row.ratio.map_or("n/a".into(), |r| format!("{r:.2}x")),
            gflops,
            bare,
            100.0 * row.fraction_of_bare,
            bare_torch
        );
        rows.push(row);
    }
    let targets = "targets: ratio >= 1.0x at every width, >= 1.5x at widths <= 256; >= 80% of bare matmul GF/s at 4096";
    println!("{targets}");
    let paths = paths();
    println!("paths taken:\n{paths}");
    let mut md = format!(
        "## train_step\n\n8-layer MLP (784 -> n -> 10), SGD, SP, CE, batch 64, widthlab vs PyTorch eager in one invocation; {threads} libtorch threads, ~{seconds} s per measurement, fastest of {BLOCKS} blocks.\n\n\
         | width | widthlab steps/s | PyTorch steps/s | ratio | widthlab GFLOP/s | bare products GFLOP/s | of bare | libtorch mm GFLOP/s |\n|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    );
    for r in &rows {
        md += &format!(
            "| {} | {:.1} | {} | {} | {:.1} | {:.1} | {:.0}% | {:.1} |\n",
            r.width,
            r.widthlab_steps_per_s,
            r.pytorch_steps_per_s.map_or("n/a".into(), |t| format!("{t:.1}")),
            r.ratio.map_or("n/a".into(), |x| format!("{x:.2}x")),
            r.widthlab_gflops,
            r.bare_matmul_gflops,
            100.0 * r.fraction_of_bare,
            r.bare_libtorch_mm_gflops
        );
    }
    md += &format!("\n{targets}.\n\nThe path each product took:\n\n{paths}\n");
    write_section("train_step", &md);
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/target/bench-results");
    if std::fs::create_dir_all(dir).is_ok() {
        let path = format!("{dir}/train_step.json");
        if let Ok(json) = serde_json::to_string_pretty(&rows) {
            let _ = std::fs::write(&path, json);
            println!("written to {path}");
        }
    }
}
