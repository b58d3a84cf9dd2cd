//! Cost of a top-eigenvalue estimate of the Hessian: 20 Lanczos iterations (full
//! reorthogonalisation, no early stop) on the paper's 8-layer ReLU MLP (SP, no biases,
//! 784 -> n -> ... -> 10) under CE on a fixed batch, widthlab ([`widthlab::sharpness`]:
//! `Curvature` + `lanczos_from`) against PyTorch eager in the PyHessian recipe
//! (`benches/reference/sharpness.py`), side by side in one run. Issue target: widthlab at
//! least 1.0x PyTorch's rate.
//!
//! Both sides do the same work per estimate: the forward pass and the gradient with its
//! graph (`create_graph`), then 20 Hessian-vector products by double backward, each new
//! vector orthogonalised twice against the whole basis, and the tridiagonal eigenproblem.
//! They start from the same weights, batch and start vector (written by this bench as raw
//! files the script reads), so their top Ritz values must agree to float32 rounding: the
//! bench checks that (relative difference below `1e-3`) before it reports a ratio.
//!
//! The PyTorch script runs as a child process serving timing blocks on request (as in
//! `benches/train_step.rs`); each round times one estimate of each side, the side that goes
//! first alternating between rounds, and gives the ratio of their rates. The report is the
//! median ratio over the rounds and its range (the shared machine's speed drifts within
//! minutes; pairing by round keeps both sides of a ratio in one phase). Both sides use
//! libtorch's thread count. Settings: `WIDTHLAB_BENCH_WIDTH` (1024), `WIDTHLAB_BENCH_BATCH`
//! (1024), `WIDTHLAB_BENCH_ITERS` (20), `WIDTHLAB_BENCH_ROUNDS` (5), `WIDTHLAB_BENCH_THREADS`.
//! Results go to `target/bench-results/sharpness.json` and, as a section,
//! `target/bench-results/sharpness.md`, which `bash docs/benchmarks.sh` puts in
//! `docs/benchmarks.md` (measured figures live there, not in these docs).
use std::path::Path;
use std::time::Instant;

use serde::Serialize;
use tch::{Device, Kind, Tensor};
use widthlab::loss::{Loss, LossKind};
use widthlab::model::{Mlp, MlpConfig, Model};
use widthlab::param::Parameterization;
use widthlab::rng::{self, stream};
use widthlab::sharpness::curvature::{Curvature, Part};
use widthlab::sharpness::lanczos::{lanczos_from, LanczosConfig, Operator};

mod common;
use common::Reference;

const DEPTH: usize = 8;
const D_IN: i64 = 784;
const D_OUT: i64 = 10;

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

/// Raw little-endian bytes of a tensor (f32 or i64), for the script's `np.fromfile`.
fn write_raw(path: &Path, t: &Tensor) {
    let t = t.contiguous().view([-1]);
    let bytes: Vec<u8> = match t.kind() {
        Kind::Int64 => Vec::<i64>::try_from(&t).expect("i64").iter().flat_map(|v| v.to_le_bytes()).collect(),
        _ => Vec::<f32>::try_from(&t.to_kind(Kind::Float)).expect("f32").iter().flat_map(|v| v.to_le_bytes()).collect(),
    };
    std::fs::write(path, bytes).expect("write bench input");
}

/// One estimate of the PyTorch reference (benches/reference/sharpness.py): (seconds, top
/// eigenvalue).
fn reference_estimate(r: &mut Reference) -> Option<(f64, f64)> {
    let v = r.request("1")?;
    Some((v["seconds"].as_f64()?, v["top"].as_f64()?))
}

#[derive(Serialize)]
struct Report {
    width: i64,
    batch: i64,
    iterations: usize,
    threads: i32,
    rounds: usize,
    widthlab_seconds: Vec<f64>,
    pytorch_seconds: Vec<f64>,
    /// Per round, PyTorch's time over widthlab's (> 1: widthlab faster).
    ratios: Vec<f64>,
    median_ratio: f64,
    widthlab_top: f64,
    pytorch_top: f64,
}

fn main() {
    widthlab::device::tune_allocator();
    if let Some(t) = std::env::var("WIDTHLAB_BENCH_THREADS").ok().and_then(|s| s.parse().ok()) {
        widthlab::device::set_threads(t);
    }
    let (n, batch, iters, rounds): (i64, i64, usize, usize) =
        (env("WIDTHLAB_BENCH_WIDTH", 1024), env("WIDTHLAB_BENCH_BATCH", 1024), env("WIDTHLAB_BENCH_ITERS", 20), env("WIDTHLAB_BENCH_ROUNDS", 5));
    let threads = tch::get_num_threads();
    let cfg = MlpConfig { d_in: D_IN, d_out: D_OUT, width: n, depth: DEPTH, ..MlpConfig::default() };
    let model = Mlp::new(&cfg, &Parameterization::sp(), 0, Device::Cpu).expect("model");
    let x = rng::normal(&[batch, D_IN], 1.0, &mut rng::rng(0, stream::MISC), Device::Cpu);
    let y = Tensor::randint(D_OUT, [batch], (Kind::Int64, Device::Cpu));
    let dim = model.num_params();
    let start = rng::rademacher(dim, &mut rng::rng(0, stream::CURVATURE), Device::Cpu);
    let dir = tempfile::tempdir().expect("temp dir");
    for (l, p) in model.params().iter().enumerate() {
        write_raw(&dir.path().join(format!("w{l}.bin")), &p.tensor.detach());
    }
    write_raw(&dir.path().join("x.bin"), &x);
    write_raw(&dir.path().join("y.bin"), &y);
    write_raw(&dir.path().join("v.bin"), &start);
    let loss = Loss::new(LossKind::Ce);
    let lanczos_cfg = LanczosConfig { k: 1, max_iter: iters, tol: 0.0, explicit_residual: false };
    let estimate = || -> (f64, f64) {
        let t0 = Instant::now();
        let curv = Curvature::new(&model, &x, &|f: &Tensor| loss.compute(f, &y)).expect("curvature");
        let op = curv.block(Part::Hessian, (0..curv.len()).collect(), None).expect("operator");
        assert_eq!(op.dim(), dim);
        let r = lanczos_from(&op, &start, &lanczos_cfg).expect("lanczos");
        assert_eq!(r.iterations, iters);
        (t0.elapsed().as_secs_f64(), r.top())
    };
    println!("sharpness: top Hessian eigenvalue, {iters} Lanczos iterations, 8-layer MLP width {n}, batch {batch}, CE, {dim} parameters, {threads} libtorch threads, {rounds} rounds");
    let (_, ours_top) = estimate(); // warm-up
    let args = [dir.path().to_string_lossy().into_owned(), n.to_string(), batch.to_string(), iters.to_string(), threads.to_string()];
    let Some(mut reference) = Reference::start("sharpness.py", &args) else {
        eprintln!("no PyTorch reference: nothing to compare");
        return;
    };
    let (mut ours, mut theirs, mut ratios) = (vec![], vec![], vec![]);
    let mut their_top = f64::NAN;
    for round in 0..rounds {
        let (a, b) = if round % 2 == 0 {
            let a = estimate();
            (a, reference_estimate(&mut reference))
        } else {
            let b = reference_estimate(&mut reference);
            (estimate(), b)
        };
        let Some(b) = b else {
            eprintln!("the PyTorch reference stopped answering");
            return;
        };
        their_top = b.1;
        println!("  round {round}: widthlab {:.2} s, PyTorch {:.2} s, ratio {:.3}x (top eigenvalues {:.6e} / {:.6e})", a.0, b.0, b.0 / a.0, a.1, b.1);
        ours.push(a.0);
        theirs.push(b.0);
        ratios.push(b.0 / a.0);
    }
    let agree = (ours_top - their_top).abs() <= 1e-3 * their_top.abs();
    assert!(agree, "the two sides computed different eigenvalues: {ours_top} vs {their_top}");
    let mut sorted = ratios.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    println!(
        "widthlab / PyTorch rate: median {median:.3}x (range {:.3}-{:.3}x over {rounds} rounds); target >= 1.0x; same top eigenvalue to {:.1e}",
        sorted[0],
        sorted[sorted.len() - 1],
        (ours_top - their_top).abs() / their_top.abs()
    );
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    common::write_section(
        "sharpness",
        &format!(
            "## sharpness: a top Hessian eigenvalue, widthlab against PyTorch (PyHessian recipe)\n\n\
             {iters} Lanczos iterations (full reorthogonalisation) of Hessian-vector products by double backward, \
             8-layer SP MLP at width {n}, batch {batch}, CE, {dim} parameters, {threads} libtorch threads, {rounds} rounds \
             (`cargo bench --bench sharpness`).\n\n\
             | widthlab s/estimate (mean) | PyTorch s/estimate (mean) | ratio (median) | range | top eigenvalue, relative difference |\n\
             |---:|---:|---:|---|---:|\n\
             | {:.2} | {:.2} | {median:.2}x | {:.2}-{:.2}x | {:.1e} |\n\n\
             Target: at least 1.0x.\n",
            mean(&ours),
            mean(&theirs),
            sorted[0],
            sorted[sorted.len() - 1],
            (ours_top - their_top).abs() / their_top.abs()
        ),
    );
    let report = Report { width: n, batch, iterations: iters, threads, rounds, widthlab_seconds: ours, pytorch_seconds: theirs, ratios, median_ratio: median, widthlab_top: ours_top, pytorch_top: their_top };
    let out = concat!(env!("CARGO_MANIFEST_DIR"), "/target/bench-results");
    if std::fs::create_dir_all(out).is_ok() {
        let path = format!("{out}/sharpness.json");
        if let Ok(json) = serde_json::to_string_pretty(&report) {
            let _ = std::fs::write(&path, json);
            println!("written to {path}");
        }
    }
}
