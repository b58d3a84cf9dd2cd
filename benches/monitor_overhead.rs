//! Cost of monitoring (the RCC [`Monitor`] measuring every step, Delta and delta, spectral
//! norms by warm-started power iteration) relative to a plain training step, measured side
//! by side in one run: 3-layer MLP, SGD in SP, batch 64, probe batch 64, width 1024 (set
//! `WIDTHLAB_BENCH_WIDTHS` to change). Target: monitored step <= 1.5x a plain step.
use std::time::Instant;

use tch::{Device, Kind, Tensor};
use widthlab::loss::{Loss, LossKind};
use widthlab::model::{Mlp, MlpConfig, Model};
use widthlab::optim::{OptimConfig, Optimizer};
use widthlab::param::Parameterization;
use widthlab::rcc::{Monitor, MonitorConfig, StepSchedule};
use widthlab::train::StepHook;

fn steps_per_second(n: i64, monitor: Option<MonitorConfig>, steps: usize) -> f64 {
    let cfg = MlpConfig { d_in: 784, d_out: 10, width: n, depth: 3, ..MlpConfig::default() };
    let model = Mlp::new(&cfg, &Parameterization::sp(), 0, Device::Cpu).expect("model");
    let mut opt = Optimizer::new(&OptimConfig::default(), 1e-2, model.params()).expect("opt");
    let loss = Loss::new(LossKind::Ce);
    let x = Tensor::randn([64, 784], (Kind::Float, Device::Cpu));
    let y = Tensor::randint(10, [64], (Kind::Int64, Device::Cpu));
    let mut mon = monitor.map(|c| Monitor::new(c, x.shallow_clone(), y.shallow_clone(), loss));
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
    let widths: Vec<i64> = std::env::var("WIDTHLAB_BENCH_WIDTHS")
        .ok()
        .map(|s| s.split(',').filter_map(|w| w.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1024]);
    println!("monitor_overhead: 3-layer MLP, SGD, batch 64, probe 64, monitor every step");
    println!("{:>6} {:>12} {:>14} {:>14} {:>9}", "width", "plain st/s", "monitored st/s", "Delta only", "ratio");
    for n in widths {
        let steps = if n >= 2048 { 10 } else { 40 };
        let every = MonitorConfig { schedule: StepSchedule::Every, ..MonitorConfig::default() };
        let no_delta = MonitorConfig { one_step: false, ..every.clone() };
        // interleave to share machine noise
        let plain = steps_per_second(n, None, steps);
        let full = steps_per_second(n, Some(every), steps);
        let light = steps_per_second(n, Some(no_delta), steps);
        println!("{:>6} {:>12.1} {:>14.1} {:>14.1} {:>8.2}x", n, plain, full, light, plain / full);
    }
    println!("ratio = time of a monitored step (Delta and delta) / time of a plain step; target <= 1.5x");
}
