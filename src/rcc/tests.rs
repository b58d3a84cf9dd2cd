//! Tests of the RCC metrics against hand computations and of the monitor's bookkeeping.
use std::collections::HashMap;

use super::definitions::{apply_fast, eff_weight_rms, fans, one_hot_indices, op_norm_rms, ratio, tridiagonal_top};
use super::monitor::probe;
use super::*;
use crate::loss::Loss;
use crate::model::{LinearOp, Model};
use crate::train::StepHook;
use tch::{Kind, Tensor};
use crate::loss::LossKind;
use crate::model::{Mlp, MlpConfig, Norm};
use crate::optim::{OptimConfig, Optimizer};
use crate::param::Parameterization;
use crate::train::StepOutput;
use tch::Device;

fn t(v: &[f64], shape: &[i64]) -> Tensor {
    Tensor::from_slice(v).reshape(shape)
}

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * b.abs().max(1e-12)
}

/// A small model, its optimizer, and a data batch.
fn setup(seed: u64) -> (Mlp, Optimizer, Tensor, Tensor) {
    let cfg = MlpConfig { d_in: 6, d_out: 4, width: 32, depth: 3, bias: true, norm: Some(Norm::LayerNorm), ..MlpConfig::default() };
    let m = Mlp::new(&cfg, &Parameterization::sp(), seed, Device::Cpu).unwrap();
    let opt = Optimizer::new(&OptimConfig::default(), 0.5, m.params()).unwrap();
    let mut r = crate::rng::rng(seed, crate::rng::stream::MISC);
    let x = crate::rng::normal(&[16, 6], 1.0, &mut r, Device::Cpu);
    let y = Tensor::from_slice(&(0..16).map(|i| i % 4).collect::<Vec<i64>>());
    (m, opt, x, y)
}

fn train_steps(m: &Mlp, opt: &mut Optimizer, x: &Tensor, y: &Tensor, k: usize, hook: Option<&mut Monitor>) {
    let loss = Loss::new(LossKind::Ce);
    let mut hook = hook;
    if let Some(h) = hook.as_deref_mut() {
        h.start(m).unwrap();
    }
    for s in 1..=k {
        if let Some(h) = hook.as_deref_mut() {
            h.before_step(s, m).unwrap();
        }
        let st = opt.step(m.params(), &mut || loss.compute(&m.forward(x), y)).unwrap();
        if let Some(h) = hook.as_deref_mut() {
            h.after_step(s, m, &StepOutput::of(&st, opt)).unwrap();
        }
    }
}

#[test]
fn rcc_identity_holds_after_training() {
    let (m, mut opt, x, y) = setup(0);
    let init = probe(&m, &x, true, None);
    train_steps(&m, &mut opt, &x, &y, 5, None);
    let now = probe(&m, &x, false, None);
    assert!(now.sites.len() >= 8);
    for ((name, p, op, x_t, out_t), (_, _, _, x_0, out_0)) in now.sites.iter().zip(&init.sites) {
        let (w_t, w_0) = (now.weights[*p].as_ref().unwrap(), init.weights[*p].as_ref().unwrap());
        let eff = op.apply(&(w_t - w_0), x_t);
        let prop = op.apply(w_0, &(x_t - x_0));
        let lhs = out_t - out_0;
        let err = (&lhs - eff - prop).abs().max().double_value(&[]);
        let scale = lhs.abs().max().double_value(&[]);
        assert!(scale > 0.0, "{name} did not move");
        assert!(err <= 1e-5 * scale.max(1.0), "{name}: {err} vs {scale}");
    }
}

#[test]
fn metrics_of_a_tiny_dense_layer_by_hand() {
    // W0 = [[1,0,0],[0,1,0]], Wt = W0 + [[1,1,1],[0,0,0]]; x0 = [1,2,2], xt = [1,2,3].
    let w0 = t(&[1., 0., 0., 0., 1., 0.], &[2, 3]);
    let dw = t(&[1., 1., 1., 0., 0., 0.], &[2, 3]);
    let wt = &w0 + &dw;
    let (x0, xt) = (t(&[1., 2., 2.], &[1, 3]), t(&[1., 2., 3.], &[1, 3]));
    let op = LinearOp::Dense { multiplier: 1.0 };
    let (out0, outt) = (op.apply(&w0, &x0), op.apply(&wt, &xt));
    // exact norms (term by term), and power iteration (the fused pass over W_t and W_0,
    // which also measures W_t's norms)
    for spectral in [Spectral::Exact, Spectral::PowerIteration { tol: 1e-14, max_iter: 10_000 }] {
    let mut cache = HashMap::new();
    let norms_t = std::cell::Cell::new((f64::NAN, f64::NAN));
    let ms: HashMap<_, _> = site_metrics(Traced { op, x_t: &xt, x_ref: &x0, out_t: &outt, out_ref: &out0 }, Change::Stored { w_t: &wt, w_ref: &w0, norms_t: Some(&norms_t), measured: None, fuse: true }, Since::Init, spectral, &mut cache, "k").into_iter().collect();
    // W_t = [[2,1,1],[0,1,0]]: ||W_t||_RMS = sqrt(7/6); W_t W_t^T = [[6,1],[1,1]], so
    // ||W_t||_2^2 = (7 + sqrt(29)) / 2
    let (w_rms, w_op) = norms_t.get();
    assert!(close(w_rms, (7f64 / 6.).sqrt(), 1e-12), "{spectral:?}: {w_rms}");
    assert!(close(w_op, 1.5f64.sqrt() * ((7. + 29f64.sqrt()) / 2.).sqrt(), 1e-9), "{spectral:?}: {w_op}");
    // dW x_t = [6, 0] -> RMS sqrt(18); W0 dx = [0, 0] since dx = [0,0,1]
    assert!(close(ms[&Metric::Effective], 18f64.sqrt(), 1e-12));
    assert_eq!(ms[&Metric::Propagating], 0.0);
    // W_t x_t = [7, 2], W_0 x_0 = [1, 2]
    assert!(close(ms[&Metric::Act], ((49. + 4.) / 2f64).sqrt(), 1e-12));
    assert!(close(ms[&Metric::ActUpdate], 18f64.sqrt(), 1e-12));
    assert!(close(ms[&Metric::Input], (14f64 / 3.).sqrt(), 1e-12));
    assert!(close(ms[&Metric::InputUpdate], (1f64 / 3.).sqrt(), 1e-12));
    // ||dW||_RMS = sqrt(3/6); ||dW||_2 = sqrt(3); op RMS->RMS = sqrt(3/2) sqrt(3)
    assert!(close(ms[&Metric::WeightUpdateRms], 0.5f64.sqrt(), 1e-12));
    assert!(close(ms[&Metric::WeightUpdateOp], 1.5f64.sqrt() * 3f64.sqrt(), 1e-9));
    assert!(close(ms[&Metric::UpdateRank], 1.0, 1e-9));
    let x_rms = (14f64 / 3.).sqrt();
    assert!(close(ms[&Metric::AlignRmsEff], 18f64.sqrt() / (3.0 * 0.5f64.sqrt() * x_rms), 1e-9));
    assert!(close(ms[&Metric::AlignOpEff], 18f64.sqrt() / (4.5f64.sqrt() * x_rms), 1e-9));
    }
}

#[test]
fn diagonal_and_bias_sites() {
    let (g0, gt) = (t(&[1., 1., 1., 1.], &[4]), t(&[1., 2., 1., 1.], &[4]));
    let x = t(&[1., 1., 1., 1.], &[1, 4]);
    let op = LinearOp::Diagonal;
    let mut c = HashMap::new();
    // every site metric, in the order of Metric::SITE
    let rows = site_metrics(Traced { op, x_t: &x, x_ref: &x, out_t: &op.apply(&gt, &x), out_ref: &op.apply(&g0, &x) }, Change::Stored { w_t: &gt, w_ref: &g0, norms_t: None, measured: None, fuse: true }, Since::Previous, Spectral::Exact, &mut c, "g0");
    assert_eq!(rows.iter().map(|r| r.0).collect::<Vec<_>>(), Metric::SITE);
    let ms: HashMap<_, _> = site_metrics(Traced { op, x_t: &x, x_ref: &x, out_t: &op.apply(&gt, &x), out_ref: &op.apply(&g0, &x) }, Change::Stored { w_t: &gt, w_ref: &g0, norms_t: None, measured: None, fuse: true }, Since::Init, Spectral::Exact, &mut c, "g").into_iter().collect();
    assert!(close(ms[&Metric::WeightUpdateOp], 1.0, 1e-12)); // max |dg|
    assert!(close(ms[&Metric::Effective], 0.5, 1e-12)); // [0,1,0,0] -> rms 1/2
    assert!(close(ms[&Metric::AlignRmsEff], 1.0, 1e-12)); // c = 1 for gains
    let b = LinearOp::Bias;
    let (b0, bt) = (t(&[0., 0.], &[2]), t(&[3., 4.], &[2]));
    let ones = t(&[1., 1.], &[1, 2]);
    let ms: HashMap<_, _> = site_metrics(Traced { op: b, x_t: &ones, x_ref: &ones, out_t: &b.apply(&bt, &ones), out_ref: &b.apply(&b0, &ones) }, Change::Stored { w_t: &bt, w_ref: &b0, norms_t: None, measured: None, fuse: true }, Since::Init, Spectral::Exact, &mut c, "b").into_iter().collect();
    assert!(close(ms[&Metric::Effective], 12.5f64.sqrt(), 1e-12));
    assert!(close(ms[&Metric::AlignOpEff], 1.0, 1e-12));
    assert_eq!(ms[&Metric::Propagating], 0.0);
    // a bias acts on the constant 1: no propagating update, whatever the reference bias
    let ms: HashMap<_, _> = site_metrics(Traced { op: b, x_t: &ones, x_ref: &ones, out_t: &b.apply(&bt, &ones), out_ref: &b.apply(&bt.ones_like(), &ones) }, Change::Stored { w_t: &bt, w_ref: &bt.ones_like(), norms_t: None, measured: None, fuse: true }, Since::Previous, Spectral::Exact, &mut c, "b2").into_iter().collect();
    assert_eq!(ms[&Metric::Propagating], 0.0);
    assert!(close(ms[&Metric::Effective], 6.5f64.sqrt(), 1e-12)); // [2, 3]
}

#[test]
fn power_iteration_matches_exact_norm() {
    let mut r = crate::rng::rng(5, crate::rng::stream::MISC);
    let a = crate::rng::normal(&[60, 40], 1.0, &mut r, Device::Cpu).to_kind(Kind::Double);
    let exact = a.linalg_norm(2.0, &[-2i64, -1][..], false, Kind::Double).double_value(&[]);
    let mut v = crate::rng::normal(&[40], 1.0, &mut r, Device::Cpu);
    let est = power_iteration(&a, &mut v, 1e-10, 5000);
    assert!(close(est, exact, 1e-6), "{est} vs {exact}");
    // a warm start converges at once
    let again = power_iteration(&a, &mut v, 1e-10, 2);
    assert!(close(again, exact, 1e-6));
}

/// Lanczos against the exact norm where power iteration's rule stalls: Gaussian matrices,
/// whose top singular values crowd at the edge of their spectrum (square and both
/// rectangular shapes, float32 as the weights are). Power iteration at the monitor's
/// default `1e-3` stops measurably low on the square one; Lanczos reaches `1e-6`.
#[test]
fn lanczos_norm_converges_where_power_iteration_stalls() {
    use super::definitions::lanczos_norm;
    let mut r = crate::rng::rng(6, crate::rng::stream::MISC);
    for (m, n) in [(512, 512), (300, 120), (120, 300)] {
        let a = crate::rng::normal(&[m, n], 1.0 / (n as f64).sqrt(), &mut r, Device::Cpu);
        let exact = a.to_kind(Kind::Double).linalg_norm(2.0, &[-2i64, -1][..], false, Kind::Double).double_value(&[]);
        let start = crate::rng::normal(&[n], 1.0, &mut r, Device::Cpu);
        let (s, v) = lanczos_norm(&a, &start, 1e-6, 1000);
        assert!(close(s, exact, 2e-6), "{m}x{n}: {s} vs {exact}");
        // v is the top right singular vector: a unit vector that a stretches by sigma
        assert!(close(v.norm().double_value(&[]), 1.0, 1e-6) && close(a.mv(&v).norm().double_value(&[]), exact, 1e-5), "{m}x{n}");
        if m == n {
            let stalled = power_iteration(&a, &mut start.copy(), 1e-3, 50);
            assert!((exact - stalled) / exact > 2e-3, "power iteration at 1e-3: {stalled} vs {exact}");
        }
    }
    // a non-finite matrix gives NaN, not a loop to the bound
    let bad = Tensor::from_slice(&[1.0f32, f32::NAN, 0.0, 1.0]).view([2, 2]);
    assert!(lanczos_norm(&bad, &Tensor::ones([2], (Kind::Float, Device::Cpu)), 1e-6, 1000).0.is_nan());
}

/// The initial weights' operator norms are converged whatever the monitor's tolerance: the
/// propagating alignment against `W_0` (whose denominator is `||W_0||_op`) of a monitor at
/// the default `1e-3` equals an exact-SVD monitor's.
#[test]
fn initial_weight_norms_are_exact_at_the_default_tolerance() {
    let cfg = MlpConfig { d_in: 6, d_out: 4, width: 256, depth: 3, ..MlpConfig::default() };
    let measure = |spectral: Spectral| {
        let m = Mlp::new(&cfg, &Parameterization::sp(), 3, Device::Cpu).unwrap();
        let mut opt = Optimizer::new(&OptimConfig::default(), 0.5, m.params()).unwrap();
        let mut r = crate::rng::rng(3, crate::rng::stream::MISC);
        let x = crate::rng::normal(&[16, 6], 1.0, &mut r, Device::Cpu);
        let y = Tensor::from_slice(&(0..16).map(|i| i % 4).collect::<Vec<i64>>());
        let mcfg = MonitorConfig { schedule: StepSchedule::Every, spectral, ..MonitorConfig::default() };
        let mut mon = Monitor::new(mcfg, x.shallow_clone(), y.shallow_clone(), Loss::new(LossKind::Ce));
        train_steps(&m, &mut opt, &x, &y, 2, Some(&mut mon));
        mon.series("layers.1.weight", Metric::AlignOpProp)
    };
    let (default, exact) = (measure(MonitorConfig::default().spectral), measure(Spectral::Exact));
    assert_eq!(default.len(), 3);
    for ((s, a), (_, b)) in default.iter().zip(&exact).skip(1) {
        assert!(close(*a, *b, 1e-5), "step {s}: {a} vs {b}");
    }
}

#[test]
fn cosine_and_sparsity_by_hand() {
    let a = t(&[1., 0., 0., 1.], &[2, 2]);
    let b = t(&[1., 1., 0., 2.], &[2, 2]);
    assert!(close(cosine_rows(&a, &b), (0.5f64.sqrt() + 1.0) / 2.0, 1e-12));
    assert!(cosine_cross(&a).abs() < 1e-15);
    assert!(close(cosine_cross(&b), 2.0 / (2f64.sqrt() * 2.0), 1e-12));
    assert!(close(sparsity(&a), 0.5, 1e-15));
}

#[test]
fn delta_and_one_step_bookkeeping_over_three_steps() {
    let (m, mut opt, x, y) = setup(1);
    let cfg = MonitorConfig { schedule: StepSchedule::Every, spectral: Spectral::Exact, ..MonitorConfig::default() };
    let mut mon = Monitor::new(cfg, x.shallow_clone(), y.shallow_clone(), Loss::new(LossKind::Ce));
    // manual snapshots to compare with
    let mut snaps = vec![m.snapshot()];
    let loss = Loss::new(LossKind::Ce);
    mon.start(&m).unwrap();
    for s in 1..=3 {
        mon.before_step(s, &m).unwrap();
        let st = opt.step(m.params(), &mut || loss.compute(&m.forward(&x), &y)).unwrap();
        mon.after_step(s, &m, &StepOutput::of(&st, &opt)).unwrap();
        snaps.push(m.snapshot());
    }
    let name = "layers.1.weight";
    let big = mon.series(name, Metric::WeightUpdateRms);
    let small = mon.series(name, Metric::WeightUpdateRms.one_step());
    assert_eq!(big.iter().map(|r| r.0).collect::<Vec<_>>(), [0, 1, 2, 3]);
    assert_eq!(small.iter().map(|r| r.0).collect::<Vec<_>>(), [1, 2, 3]);
    let i = m.params().iter().position(|p| p.name == name).unwrap();
    for s in 1..=3 {
        let want_big = rms(&(&snaps[s][i] - &snaps[0][i]));
        let want_small = rms(&(&snaps[s][i] - &snaps[s - 1][i]));
        assert!(close(big[s].1, want_big, 1e-9), "step {s}");
        assert!(close(small[s - 1].1, want_small, 1e-9), "step {s}");
    }
    // after one step, Delta and delta coincide
    assert!(close(big[1].1, small[0].1, 1e-12));
    // the model-level and activation metrics exist
    assert_eq!(mon.series("model", Metric::Logits).len(), 4);
    let cos = mon.series("act.0", Metric::CosInit);
    assert_eq!(cos.len(), 4);
    assert!(close(cos[0].1, 1.0, 1e-9), "same weights, same input: cosine 1");
    assert!(cos[3].1 < 1.0 - 1e-6 && cos[3].1 > 0.0, "{cos:?}");
    // gradients are those of the training steps (none at initialisation)
    assert_eq!(mon.series(name, Metric::Grad).len(), 3);
}

#[test]
fn sparse_schedule_measures_only_scheduled_steps() {
    let (m, mut opt, x, y) = setup(2);
    let cfg = MonitorConfig { schedule: StepSchedule::List { steps: vec![2, 5] }, ..MonitorConfig::default() };
    let mut mon = Monitor::new(cfg, x.shallow_clone(), y.shallow_clone(), Loss::new(LossKind::Ce));
    train_steps(&m, &mut opt, &x, &y, 6, Some(&mut mon));
    let steps: Vec<usize> = mon.series("layers.0.weight", Metric::Effective).iter().map(|r| r.0).collect();
    assert_eq!(steps, [0, 2, 5]);
    assert_eq!(mon.series("layers.0.weight", Metric::Effective.one_step()).len(), 2);
}

#[test]
fn dump_writes_safetensors_that_reproduce_the_metrics() {
    let (m, mut opt, x, y) = setup(3);
    let dir = tempfile::tempdir().unwrap();
    let cfg = MonitorConfig { schedule: StepSchedule::List { steps: vec![2] }, dump_dir: Some(dir.path().into()), ..MonitorConfig::default() };
    let mut mon = Monitor::new(cfg, x.shallow_clone(), y.shallow_clone(), Loss::new(LossKind::Ce));
    train_steps(&m, &mut opt, &x, &y, 2, Some(&mut mon));
    let init: HashMap<String, Tensor> = Tensor::read_safetensors(dir.path().join("init.safetensors")).unwrap().into_iter().collect();
    let now: HashMap<String, Tensor> = Tensor::read_safetensors(dir.path().join("step_2.safetensors")).unwrap().into_iter().collect();
    assert!(init["probe.x"].equal(&x) && init["probe.y"].equal(&y));
    // recompute the weight-update RMS of the readout from the files
    let name = "layers.2.weight";
    let want = mon.series(name, Metric::WeightUpdateRms).last().unwrap().1;
    // (the squares summed in float64, as the monitor does)
    let got = rms(&(&now[name] - &init[name]).to_kind(Kind::Double));
    assert!(close(got, want, 1e-9), "{got} vs {want}");
}

/// Runs the monitor for three steps (Delta and delta) and checks the metrics whose fast path
/// differs from the definition (one matmul per dense site, the propagating update from the
/// RCC identity, lookups on one-hot inputs, cached initial norms; under power iteration the
/// fused pass inside the traced forward, whose site outputs feed the rest of the forward)
/// against the definitions `(W_t - W_ref) x_t` and `W_ref (x_t - x_ref)` on snapshots and
/// the plain traced forward, to 1e-5 relative.
fn check_fast_path_against_definitions(m: &dyn Model, opt: &mut Optimizer, x: &Tensor, y: &Tensor, want_sites: usize, spectral: Spectral) {
    let loss = Loss::new(LossKind::Ce);
    let cfg = MonitorConfig { schedule: StepSchedule::Every, spectral, ..MonitorConfig::default() };
    let mut mon = Monitor::new(cfg, x.shallow_clone(), y.shallow_clone(), loss);
    let mut states = vec![probe(m, x, true, None)];
    mon.start(m).unwrap();
    for s in 1..=3 {
        mon.before_step(s, m).unwrap();
        let st = opt.step(m.params(), &mut || loss.compute(&m.forward(x), y)).unwrap();
        mon.after_step(s, m, &StepOutput::of(&st, opt)).unwrap();
        states.push(probe(m, x, true, None));
    }
    let same = |a: f64, b: f64| (a.is_nan() && b.is_nan()) || (a - b).abs() <= 1e-5 * a.abs().max(b.abs()).max(1e-30);
    let mut checked = 0;
    for s in 1..=3 {
        let now = &states[s];
        assert_eq!(now.sites.len(), want_sites);
        for (since, r) in [(Since::Init, &states[0]), (Since::Previous, &states[s - 1])] {
            for ((name, p, op, x_t, out_t), (_, _, _, x_r, out_r)) in now.sites.iter().zip(&r.sites) {
                let (w_t, w_r) = (now.weights[*p].as_ref().unwrap(), r.weights[*p].as_ref().unwrap());
                let eff = rms(&op.apply(&(w_t - w_r), x_t));
                // a bias acts on the constant 1, so W_ref (1 - 1) = 0 (`LinearOp::apply` of
                // a bias ignores its input)
                let prop = if *op == LinearOp::Bias { 0.0 } else { rms(&op.apply(w_r, &(x_t - x_r))) };
                let dx = rms(&(x_t - x_r));
                let c = if matches!(op, LinearOp::Dense { .. }) { fans(*op, w_t).0 } else { 1.0 };
                let to_op = |w: &Tensor| match op {
                    LinearOp::Dense { .. } => op_norm_rms(*op, w, Spectral::Exact, &mut HashMap::new(), "exact"),
                    _ => f64::NAN,
                };
                let mut want = vec![
                    (Metric::Effective, eff),
                    (Metric::Propagating, prop),
                    (Metric::InputUpdate, dx),
                    (Metric::ActUpdate, rms(&(out_t - out_r))),
                    (Metric::WeightUpdateRms, eff_weight_rms(*op, &(w_t - w_r))),
                    (Metric::AlignRmsProp, ratio(prop, c * eff_weight_rms(*op, w_r) * dx)),
                ];
                if since == Since::Init {
                    want.push((Metric::Act, rms(out_t)));
                }
                if matches!(op, LinearOp::Dense { .. }) {
                    want.push((Metric::WeightUpdateOp, to_op(&(w_t - w_r))));
                }
                for (metric, v) in want {
                    let metric = metric.since(since);
                    let got = mon.series(name, metric);
                    let got = got.iter().find(|r| r.0 == s).unwrap_or_else(|| panic!("{name} {metric} at {s}")).1;
                    assert!(same(got, v), "step {s}, {name}, {metric}: fast {got} vs definition {v}");
                    checked += 1;
                }
            }
        }
    }
    // per step and site: 6 metrics against each reference, act once, and for dense sites
    // weight_update_op against each reference
    let dense = states[0].sites.iter().filter(|s| matches!(s.2, LinearOp::Dense { .. })).count();
    assert_eq!(checked, 3 * (13 * want_sites + 2 * dense));
}

/// Spectral norms exact, and by power iteration (then the dense sites' Delta passes run
/// inside the traced forward), to a tolerance below the comparison's.
const BOTH: [Spectral; 2] = [Spectral::Exact, Spectral::PowerIteration { tol: 1e-9, max_iter: 5000 }];

#[test]
fn fast_path_equals_the_definitions_on_an_mlp() {
    for spectral in BOTH {
        let (m, mut opt, x, y) = setup(4);
        // 3 dense layers with biases, 2 LayerNorms (gain and bias): 10 sites
        check_fast_path_against_definitions(&m, &mut opt, &x, &y, 10, spectral);
    }
    // without normalisation layers: under power iteration every dense site's input is the
    // output of the fused pass of the layer below
    let cfg = MlpConfig { d_in: 6, d_out: 4, width: 40, depth: 3, ..MlpConfig::default() };
    for spectral in BOTH {
        let m = Mlp::new(&cfg, &Parameterization::sp(), 2, Device::Cpu).unwrap();
        let mut opt = Optimizer::new(&OptimConfig::default(), 0.5, m.params()).unwrap();
        let (_, _, x, y) = setup(2);
        check_fast_path_against_definitions(&m, &mut opt, &x, &y, 3, spectral);
    }
}

#[test]
fn fast_path_equals_the_definitions_on_a_gpt() {
    use crate::model::{Gpt, GptConfig};
    let cfg = GptConfig { vocab_size: 50, width: 64, depth: 1, head_dim: 16, ..GptConfig::default() };
    let m = Gpt::new(&cfg, &Parameterization::sp(), 0, Device::Cpu).unwrap();
    let ids: Vec<i64> = (0..2 * 9).map(|i| (i * 7 + 3) % 50).collect();
    let all = Tensor::from_slice(&ids).view([2, 9]);
    let (x, y) = (all.narrow(1, 0, 8), all.narrow(1, 1, 8).reshape([-1]));
    let sites = m.forward_trace(&x).sites.len();
    assert!(sites > 10);
    for spectral in BOTH {
        let m = Gpt::new(&cfg, &Parameterization::sp(), 0, Device::Cpu).unwrap();
        let mut opt = Optimizer::new(&OptimConfig::default(), 0.1, m.params()).unwrap();
        check_fast_path_against_definitions(&m, &mut opt, &x, &y, sites, spectral);
    }
}

#[test]
fn one_hot_inputs_are_detected_and_applied_by_lookup() {
    let idx = Tensor::from_slice(&[2i64, 0, 3]);
    let x = idx.one_hot(4).to_kind(Kind::Float);
    assert!(one_hot_indices(&x).unwrap().equal(&idx));
    assert!(one_hot_indices(&(&x * 2.0)).is_none());
    assert!(one_hot_indices(&Tensor::ones([3, 4], (Kind::Float, Device::Cpu))).is_none());
    let mut r = crate::rng::rng(9, crate::rng::stream::MISC);
    let w = crate::rng::normal(&[5, 4], 1.0, &mut r, Device::Cpu);
    let op = LinearOp::Dense { multiplier: 0.3 };
    assert!(apply_fast(op, &w, &x, Some(&idx)).equal(&op.apply(&w, &x)));
}

/// The symmetric tridiagonal eigen-solver behind the Lanczos iteration against a dense
/// eigen-decomposition (LAPACK): the top eigenvalue and its eigenvector's last component.
#[test]
fn tridiagonal_top_matches_a_dense_solver() {
    use ndarray_linalg::{Eigh, UPLO};
    let mut r = crate::rng::rng(12, crate::rng::stream::MISC);
    for n in [1usize, 2, 5, 17, 40] {
        let a: Vec<f64> = crate::rng::normal(&[n as i64], 1.0, &mut r, Device::Cpu).to_kind(Kind::Double).try_into().unwrap();
        let b: Vec<f64> = crate::rng::normal(&[n as i64 - 1], 1.0, &mut r, Device::Cpu).to_kind(Kind::Double).try_into().unwrap();
        let t = ndarray::Array2::from_shape_fn((n, n), |(i, j)| match i.abs_diff(j) {
            0 => a[i],
            1 => b[i.min(j)],
            _ => 0.0,
        });
        let (e, v) = t.eigh(UPLO::Lower).unwrap();
        let (theta, last) = tridiagonal_top(&a, &b, 0.0);
        assert!((theta - e[n - 1]).abs() <= 1e-12 * e[n - 1].abs().max(1.0), "{n}: {theta} vs {}", e[n - 1]);
        assert!((last.abs() - v[[n - 1, n - 1]].abs()).abs() <= 1e-8, "{n}: {last} vs {}", v[[n - 1, n - 1]]);
    }
}

#[test]
fn low_rank_norms_match_the_formed_matrix() {
    let mut r = crate::rng::rng(11, crate::rng::stream::MISC);
    // (the second and fourth: a factor narrower than the batch, the smaller problem)
    for (b, m, k) in [(5, 7, 9), (12, 4, 30), (3, 40, 40), (20, 30, 6)] {
        let g = crate::rng::normal(&[b, m], 1.0, &mut r, Device::Cpu).to_kind(Kind::Double);
        let x = crate::rng::normal(&[b, k], 1.0, &mut r, Device::Cpu).to_kind(Kind::Double);
        let full = g.tr().matmul(&x); // [m, k]
        let (fro, spec) = low_rank_norms(&g, &x, Some(1e-9));
        assert!(close(fro, full.norm().double_value(&[]), 1e-12), "{b} {m} {k}: fro");
        let exact = full.linalg_norm(2.0, &[-2i64, -1][..], false, Kind::Double).double_value(&[]);
        assert!(close(spec, exact, 1e-10), "{b} {m} {k}: {spec} vs {exact}");
    }
    // a full batch of Gaussian factors, whose top eigenvalues are close (the slow case of
    // power iteration), at the monitor's default tolerance and at 1e-9
    for (b, m, k) in [(64, 200, 150), (48, 300, 300)] {
        let g = crate::rng::normal(&[b, m], 1.0, &mut r, Device::Cpu).to_kind(Kind::Double);
        let x = crate::rng::normal(&[b, k], 1.0, &mut r, Device::Cpu).to_kind(Kind::Double);
        let exact = g.tr().matmul(&x).linalg_norm(2.0, &[-2i64, -1][..], false, Kind::Double).double_value(&[]);
        for tol in [1e-3, 1e-9] {
            let (_, spec) = low_rank_norms(&g, &x, Some(tol));
            // (converged to at least LOW_RANK_TOL, whose residual bounds the eigenvalue's
            // error once it is the top one; its square root halves it)
            assert!(close(spec, exact, tol.min(super::definitions::LOW_RANK_TOL)), "{b} {m} {k} at {tol}: {spec} vs {exact}");
        }
    }
    // a rank-one product: Frobenius = spectral
    let g = t(&[1., 2.], &[1, 2]);
    let x = t(&[3., 0., 4.], &[1, 3]);
    let (fro, spec) = low_rank_norms(&g, &x, Some(1e-9));
    assert!(close(fro, 5f64.sqrt() * 5.0, 1e-14) && close(spec, fro, 1e-12));
    let (fro_only, none) = low_rank_norms(&g, &x, None);
    assert!(fro_only == fro && none.is_nan());
    let nan = Tensor::from_slice(&[f64::NAN, 1.0]).view([1, 2]);
    assert!(low_rank_norms(&nan, &x, Some(1e-9)).0.is_nan());
}

#[test]
fn one_step_metrics_from_fused_sgd_factors_equal_the_definitions() {
    // exact spectral norms, and power iteration (then also the fused pass inside the traced
    // forward) to a tolerance below the comparison's
    for spectral in [Spectral::Exact, Spectral::PowerIteration { tol: 1e-13, max_iter: 100_000 }] {
        one_step_metrics_from_fused_sgd_factors(spectral);
    }
}

fn one_step_metrics_from_fused_sgd_factors(spectral: Spectral) {
    // A float64 MLP trained by fused plain SGD (what the Trainer does under a monitor): the
    // one-step metrics come from the steps' low-rank factors and the previous weights'
    // kept norms; check them, and the gradient norms, against snapshots.
    let cfg = MlpConfig { d_in: 6, d_out: 4, width: 24, depth: 3, bias: true, ..MlpConfig::default() };
    let p = Parameterization::builtin("mup-mult").unwrap();
    let m = Mlp::new(&cfg, &p, 5, Device::Cpu).unwrap().to_kind(Kind::Double);
    let mut opt = Optimizer::new(&OptimConfig::default(), 0.3, m.params()).unwrap();
    let loss = Loss::new(LossKind::Ce);
    let mut r = crate::rng::rng(5, crate::rng::stream::MISC);
    let x = crate::rng::normal(&[16, 6], 1.0, &mut r, Device::Cpu).to_kind(Kind::Double);
    let y = Tensor::from_slice(&(0..16).map(|i| i % 4).collect::<Vec<i64>>());
    let probe_x = x.narrow(0, 0, 8);
    let mcfg = MonitorConfig { schedule: StepSchedule::Every, spectral, ..MonitorConfig::default() };
    let mut mon = Monitor::new(mcfg, probe_x.shallow_clone(), y.narrow(0, 0, 8), loss);
    assert!(!mon.needs_gradients());
    mon.start(&m).unwrap();
    let mut states = vec![probe(&m, &probe_x, true, None)];
    let mut grads = vec![];
    for s in 1..=3 {
        mon.before_step(s, &m).unwrap();
        let (_, g) = m.manual_gradients(&x, &y, &loss).unwrap();
        grads.push(g);
        let st = crate::train::mlp_step(&m, &mut opt, &loss, &x, &y, false).unwrap();
        assert!(opt.last_low_rank().iter().any(Option::is_some), "the step was fused");
        mon.after_step(s, &m, &StepOutput::of(&st, &opt)).unwrap();
        states.push(probe(&m, &probe_x, true, None));
    }
    let mut checked = 0;
    for s in 2..=3 {
        let (now, prev) = (&states[s], &states[s - 1]);
        for ((name, p, op, x_t, out_t), (_, _, _, x_r, out_r)) in now.sites.iter().zip(&prev.sites) {
            let (w_t, w_r) = (now.weights[*p].as_ref().unwrap(), prev.weights[*p].as_ref().unwrap());
            let dw = w_t - w_r;
            let (fan_in, fan_out) = fans(*op, w_t);
            let to_op = (fan_in / fan_out).sqrt();
            let norm2 = |w: &Tensor| match op {
                LinearOp::Dense { multiplier } => multiplier.abs() * w.linalg_norm(2.0, &[-2i64, -1][..], false, Kind::Double).double_value(&[]),
                _ => f64::NAN,
            };
            let eff = rms(&op.apply(&dw, x_t));
            let prop = if x_t.equal(x_r) { 0.0 } else { rms(&(out_t - out_r - op.apply(&dw, x_t))) };
            let dx = rms(&(x_t - x_r));
            let mut want = vec![(Metric::Effective, eff), (Metric::Propagating, prop), (Metric::WeightUpdateRms, eff_weight_rms(*op, &dw))];
            if matches!(op, LinearOp::Dense { .. }) {
                let (dw_op, wr_op) = (to_op * norm2(&dw), to_op * norm2(w_r));
                want.push((Metric::WeightUpdateOp, dw_op));
                want.push((Metric::AlignOpEff, ratio(eff, dw_op * rms(x_t))));
                want.push((Metric::AlignOpProp, ratio(prop, wr_op * dx)));
                want.push((Metric::AlignRmsProp, ratio(prop, fan_in * eff_weight_rms(*op, w_r) * dx)));
            }
            for (metric, v) in want {
                let got = mon.series(name, metric.one_step()).iter().find(|r| r.0 == s).unwrap().1;
                assert!((got.is_nan() && v.is_nan()) || close(got, v, 1e-9), "step {s}, {name}, delta_{metric}: {got} vs definition {v}");
                checked += 1;
            }
        }
        // gradient norms: of g^T x for the fused weights, of the kept gradient for biases
        for (k, param) in m.params().iter().enumerate() {
            let want = rms(grads[s - 1][k].as_ref().unwrap());
            let got = mon.series(&param.name, Metric::Grad).iter().find(|r| r.0 == s).unwrap().1;
            assert!(close(got, want, 1e-9), "step {s}, {}: grad {got} vs {want}", param.name);
        }
    }
    // 3 dense sites x 7 metrics + 3 bias sites x 3, per step
    assert_eq!(checked, 2 * (3 * 7 + 3 * 3));
}

#[test]
fn the_general_path_measures_what_the_fast_paths_measure() {
    // A float32 MLP trained by fused plain SGD (one-step updates in low-rank form) under power
    // iteration (Delta passes fused into the traced forward): a monitor on the general path
    // (weight copies, differences formed), as a metric that needs the weight difference
    // would put it on, records the same rows, the same values to float32 rounding.
    let cfg = MlpConfig { d_in: 6, d_out: 4, width: 32, depth: 3, bias: true, ..MlpConfig::default() };
    let m = Mlp::new(&cfg, &Parameterization::sp(), 3, Device::Cpu).unwrap();
    let mut opt = Optimizer::new(&OptimConfig::default(), 0.3, m.params()).unwrap();
    let loss = Loss::new(LossKind::Ce);
    let (_, _, x, y) = setup(3);
    let mcfg = MonitorConfig { schedule: StepSchedule::Every, spectral: Spectral::PowerIteration { tol: 1e-9, max_iter: 5000 }, ..MonitorConfig::default() };
    let mut fast = Monitor::new(mcfg.clone(), x.shallow_clone(), y.shallow_clone(), loss);
    let mut general = Monitor::new(mcfg, x.shallow_clone(), y.shallow_clone(), loss).on_the_general_path();
    assert!(!fast.general && Metric::SITE.iter().all(|m| !m.needs_weight_difference()));
    for mon in [&mut fast, &mut general] {
        mon.start(&m).unwrap();
    }
    for s in 1..=3 {
        for mon in [&mut fast, &mut general] {
            mon.before_step(s, &m).unwrap();
        }
        let st = crate::train::mlp_step(&m, &mut opt, &loss, &x, &y, false).unwrap();
        assert!(opt.last_low_rank().iter().any(Option::is_some), "the step was fused");
        let out = StepOutput::of(&st, &opt);
        for mon in [&mut fast, &mut general] {
            mon.after_step(s, &m, &out).unwrap();
        }
    }
    assert_eq!(fast.records.len(), general.records.len());
    let mut one_step = 0;
    for (a, b) in fast.records.iter().zip(&general.records) {
        assert_eq!((a.step, &a.layer, a.metric), (b.step, &b.layer, b.metric));
        let same = (a.value.is_nan() && b.value.is_nan()) || (a.value - b.value).abs() <= 1e-4 * a.value.abs().max(b.value.abs()) + 1e-12;
        assert!(same, "step {}, {} {}: fast {} vs general {}", a.step, a.layer, a.metric, a.value, b.value);
        one_step += usize::from(a.metric.since == Since::Previous);
    }
    assert!(one_step > 0);
}
