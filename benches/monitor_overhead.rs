//! Cost of monitoring (the RCC [`Monitor`] measuring every step, spectral norms by
//! warm-started power iteration) relative to a plain training step, measured side by side in
//! one run: 3-layer MLP, SGD in SP, batch 64, width 1024 (set `WIDTHLAB_BENCH_WIDTHS` to
//! change; `WIDTHLAB_BENCH_THREADS` sets libtorch's thread count). Issue target: a monitored
//! step <= 1.5x a plain step.
//!
//! Rows: Delta and delta on a probe batch of 64 (= the training batch), Delta only, and
//! Delta and delta on a probe of 16. Each measured step costs a traced forward of the probe
//! plus, per reference (initial, previous step) and dense layer, one matmul `(W_t - W_ref)
//! x_t` (the propagating update follows from the RCC identity, see [`widthlab::rcc`]).
//! With the probe as large as the training batch that is 3 forward-equivalents of matmuls
//! beside the ~3 of a plain step (forward + backward), so the exact metrics cost at least
//! ~2x a plain step in FLOPs (~1.7x Delta only); only a smaller probe gets under 1.5x.
//! Measured on the quiet 2-core machine (2026-11-26, 2 threads): Delta and delta 3.15x,
//! Delta only 2.20x, probe 16 2.25x. Earlier, on the shared machine (Nov 2026, load ~10,
//! `WIDTHLAB_BENCH_THREADS=1`),
//! four runs: Delta and delta 2.8-3.1x (3.5-3.6x before the fast path), Delta only
//! 2.1-2.5x, probe 16 2.0-2.2x; with the default 2 threads on the loaded machine OpenMP
//! spin-waiting makes every number erratic (2.7-4.8x for Delta and delta).
use std::time::Instant;

use tch::{Device, Kind, Tensor};
use widthlab::loss::{Loss, LossKind};
use widthlab::model::{Mlp, MlpConfig, Model};
use widthlab::optim::{OptimConfig, Optimizer};
use widthlab::param::Parameterization;
use widthlab::rcc::{Monitor, MonitorConfig, StepSchedule};
use widthlab::train::StepHook;

/// Training steps per second; the monitor (if any) watches a probe of the first `probe`
/// examples of the training batch.
fn steps_per_second(n: i64, monitor: Option<(MonitorConfig, i64)>, steps: usize) -> f64 {
    let cfg = MlpConfig { d_in: 784, d_out: 10, width: n, depth: 3, ..MlpConfig::default() };
    let model = Mlp::new(&cfg, &Parameterization::sp(), 0, Device::Cpu).expect("model");
    let mut opt = Optimizer::new(&OptimConfig::default(), 1e-2, model.params()).expect("opt");
    let loss = Loss::new(LossKind::Ce);
    let x = Tensor::randn([64, 784], (Kind::Float, Device::Cpu));
    let y = Tensor::randint(10, [64], (Kind::Int64, Device::Cpu));
    let mut mon = monitor.map(|(c, k)| Monitor::new(c, x.narrow(0, 0, k), y.narrow(0, 0, k), loss));
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
        let st = opt.step(model.params(), &mut || loss.compute(&model.forward(&x), &y)).expect("step");
        if let Some(m) = mon.as_mut() {
            m.after_step(s, &model, &st, opt.last_gradients()).expect("after");
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
    println!("monitor_overhead: 3-layer MLP, SGD, batch 64, monitor every step, {} libtorch threads", tch::get_num_threads());
    println!("{:>6} {:>10} {:>22} {:>22} {:>22}", "width", "plain st/s", "Delta+delta, probe 64", "Delta only, probe 64", "Delta+delta, probe 16");
    for n in widths {
        let steps = if n >= 2048 { 10 } else { 40 };
        let every = MonitorConfig { schedule: StepSchedule::Every, ..MonitorConfig::default() };
        let no_delta = MonitorConfig { one_step: false, ..every.clone() };
        // plain before and after the monitored runs (averaged), to share machine noise
        let plain_a = steps_per_second(n, None, steps);
        let full = steps_per_second(n, Some((every.clone(), 64)), steps);
        let light = steps_per_second(n, Some((no_delta, 64)), steps);
        let small = steps_per_second(n, Some((every, 16)), steps);
        let plain_b = steps_per_second(n, None, steps);
        let plain = 2.0 / (1.0 / plain_a + 1.0 / plain_b);
        let cell = |r: f64| format!("{r:.1} st/s = {:.2}x", plain / r);
        println!("{:>6} {:>10.1} {:>22} {:>22} {:>22}", n, plain, cell(full), cell(light), cell(small));
    }
    println!("ratio = time of a monitored step / time of a plain step; target <= 1.5x");
}
