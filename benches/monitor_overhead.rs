//! Cost of monitoring (the RCC [`Monitor`] measuring every step) relative to a plain
//! training step, measured side by side in one run: 3-layer MLP, plain SGD in SP, batch 64,
//! width 1024 (set `WIDTHLAB_BENCH_WIDTHS` to change; `WIDTHLAB_BENCH_THREADS` sets
//! libtorch's thread count, `WIDTHLAB_BENCH_ROUNDS` the rounds, 7 by default). Issue
//! target: a monitored step <= 1.5x a plain step.
//!
//! Both sides step as [`widthlab::train::Trainer`] does: the plain step is the fused SGD step
//! ([`mlp_step`] without kept gradients), and the monitored one is the same step (the monitor
//! reads the weights' low-rank steps, not gradient tensors) plus the monitor. Each round runs
//! every configuration in turn and gives each a ratio to that round's plain step; the report
//! is the median ratio over the rounds and their range (the machine's speed drifts by up to
//! ~30% within minutes, and pairing by round keeps both sides of a ratio in one phase).
//!
//! Rows: the anchor's extra work on the training batch (its two extra forward passes, no
//! metric: see [`Watch::Anchor`]); Delta and delta on a probe batch of 64 (= the training
//! batch), Delta only, and Delta and delta on probes of 32 and 16. Each measured step costs a
//! traced forward of the probe in which every dense layer's output comes from one fused pass
//! over `W_t` and `W_0` (the output, the product `(W_t - W_0) x_t`, the difference's norms,
//! the norms of `W_t`), and the one-step metrics come from the SGD step's factors (see
//! [`widthlab::rcc`]). With the probe as large as the training batch the two products are
//! about two forward passes, as many as the anchor pays (one product fewer at the input
//! layer, whose probe input does not change), besides the norms and one-step metrics the
//! anchor does not measure: the anchor's row is about what the products alone cost the
//! monitor at probe 64. Only a smaller probe can go lower.
//!
//! The bench prints the CPU model and the path each product took (`widthlab::kernels::dispatch`).
//! Figures: `docs/benchmarks.md` (`bash docs/benchmarks.sh`).
use std::time::Instant;

use tch::{Device, Kind, Tensor};
use widthlab::loss::{Loss, LossKind};
use widthlab::model::{Mlp, MlpConfig, Model};
use widthlab::optim::{OptimConfig, Optimizer};
use widthlab::param::Parameterization;
use widthlab::rcc::{Monitor, MonitorConfig, StepSchedule};
use widthlab::train::{mlp_step, StepHook, StepOutput};

mod common;
use common::{machine, paths, write_section};

/// What runs beside each training step.
#[derive(Clone)]
enum Watch {
    /// Nothing: the plain step.
    Plain,
    /// widthlab's monitor on a probe of the first `probe` examples of the training batch.
    Monitor(MonitorConfig, i64),
    /// The anchor's extra work (the authors' torch-module-monitor RCC on the training batch):
    /// its two extra forward passes and nothing else, no metric. The initial model's forward
    /// gives `x_0` and `W_0 x_0`; the second forward applies each layer's initial weights to
    /// its current input `x_t`, which the anchor takes from the training forward's hooks.
    /// Here it multiplies the same `W_0` by the initial forward's inputs instead: the same
    /// shapes, products and cost, without a third forward to obtain `x_t`.
    Anchor,
}

/// Training steps per second under `watch`.
fn steps_per_second(n: i64, watch: Watch, steps: usize) -> f64 {
    let cfg = MlpConfig { d_in: 784, d_out: 10, width: n, depth: 3, ..MlpConfig::default() };
    let model = Mlp::new(&cfg, &Parameterization::sp(), 0, Device::Cpu).expect("model");
    let mut opt = Optimizer::new(&OptimConfig::default(), 1e-2, model.params()).expect("opt");
    let loss = Loss::new(LossKind::Ce);
    let x = Tensor::randn([64, 784], (Kind::Float, Device::Cpu));
    let y = Tensor::randint(10, [64], (Kind::Int64, Device::Cpu));
    let (mut mon, anchor) = match watch {
        Watch::Plain => (None, None),
        Watch::Monitor(c, k) => (Some(Monitor::new(c, x.narrow(0, 0, k), y.narrow(0, 0, k), loss)), None),
        // the same seed: the initial weights
        Watch::Anchor => (None, Some(Mlp::new(&cfg, &Parameterization::sp(), 0, Device::Cpu).expect("model"))),
    };
    if let Some(m) = mon.as_mut() {
        m.start(&model).expect("start");
    }
    let mut t0 = Instant::now();
    for s in 1..=steps + 2 {
        if s == 3 {
            t0 = Instant::now(); // two warm-up steps
        }
        if let Some(m) = mon.as_mut() {
            m.before_step(s, &model).expect("before");
        }
        // what Trainer::step does, with the gradients kept only if the hook needs them
        let keep = mon.as_ref().is_some_and(|m| m.needs_gradients());
        let st = mlp_step(&model, &mut opt, &loss, &x, &y, keep).expect("step");
        if let Some(m) = mon.as_mut() {
            m.after_step(s, &model, &StepOutput::of(&st, &opt)).expect("after");
        }
        if let Some(init) = &anchor {
            tch::no_grad(|| {
                let t = init.forward_trace(&x); // x_0 and W_0 x_0 at every layer
                for site in &t.sites {
                    let w0 = &init.params()[site.param].tensor;
                    let _ = std::hint::black_box(site.op.apply(w0, &site.input)); // W_0 x_t
                }
            });
        }
    }
    steps as f64 / t0.elapsed().as_secs_f64()
}

fn main() {
    widthlab::device::tune_allocator();
    if let Some(t) = std::env::var("WIDTHLAB_BENCH_THREADS").ok().and_then(|s| s.parse().ok()) {
        widthlab::device::set_threads(t);
    }
    let widths: Vec<i64> = std::env::var("WIDTHLAB_BENCH_WIDTHS")
        .ok()
        .map(|s| s.split(',').filter_map(|w| w.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1024]);
    println!(
        "monitor_overhead: 3-layer MLP, plain SGD as the Trainer runs it (fused step), batch 64, monitor every step, {} libtorch threads",
        tch::get_num_threads()
    );
    println!("{}", machine());
    let every = MonitorConfig { schedule: StepSchedule::Every, ..MonitorConfig::default() };
    let no_delta = MonitorConfig { one_step: false, ..every.clone() };
    let configs: Vec<(&str, Watch)> = vec![
        ("plain step", Watch::Plain),
        ("anchor, batch 64", Watch::Anchor),
        ("Delta+delta, probe 64", Watch::Monitor(every.clone(), 64)),
        ("Delta only,  probe 64", Watch::Monitor(no_delta, 64)),
        ("Delta+delta, probe 32", Watch::Monitor(every.clone(), 32)),
        ("Delta+delta, probe 16", Watch::Monitor(every, 16)),
    ];
    let rounds: usize = std::env::var("WIDTHLAB_BENCH_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(7).max(1);
    let mut md = format!(
        "## monitor_overhead\n\n3-layer MLP (784 -> n -> 10), plain SGD as the Trainer runs it (fused step), batch 64, the RCC monitor measuring every step; {} libtorch threads, {rounds} rounds. Ratio: time of a monitored step / time of a plain step in the same round; the median over rounds, and the range.\n",
        tch::get_num_threads()
    );
    for n in widths {
        let steps = if n >= 2048 { 10 } else { 40 };
        // interleaved rounds over all configurations, so that each round's plain step and
        // monitored steps see the same phase of the machine (whose speed drifts by up to
        // ~30% over minutes); each round gives a ratio per configuration, and the report is
        // the median of those ratios with their range
        let mut rates: Vec<Vec<f64>> = vec![vec![]; configs.len()];
        for _ in 0..rounds {
            for (k, (_, c)) in configs.iter().enumerate() {
                rates[k].push(steps_per_second(n, c.clone(), steps));
            }
        }
        let median = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            (v[v.len() / 2], v[0], v[v.len() - 1])
        };
        println!("width {n} ({rounds} rounds of {steps} steps; median, and min-max over rounds)");
        md += &format!("\nWidth {n}, {steps} steps per round:\n\n| configuration | steps/s | ratio | range |\n|---|---:|---:|---:|\n");
        for ((name, _), r) in configs.iter().zip(&rates) {
            let (rate, _, _) = median(r.clone());
            let (ratio, lo, hi) = median(rates[0].iter().zip(r).map(|(plain, x)| plain / x).collect());
            println!("  {name:<24} {rate:>8.1} st/s  {ratio:>5.2}x  ({lo:.2}-{hi:.2}x)");
            md += &format!("| {} | {rate:.1} | {ratio:.2}x | {lo:.2}-{hi:.2}x |\n", name.split_whitespace().collect::<Vec<_>>().join(" "));
        }
    }
    println!("ratio = time of a monitored step / time of a plain step, per round; target <= 1.5x (reachable only with a probe smaller than the batch, see the header)");
    let paths = paths();
    println!("paths taken:\n{paths}");
    md += &format!("\nTarget: <= 1.5x (reachable only with a probe smaller than the batch: with the probe as large as the batch the exact metrics need the anchor's two forward passes of products, plus norms).\n\nThe path each product took:\n\n{paths}\n");
    write_section("monitor_overhead", &md);
}
