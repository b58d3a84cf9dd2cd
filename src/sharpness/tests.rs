//! Tests of the measurements against independent computations: the full Hessian of tiny
//! models built by autograd (f64) and diagonalised, finite differences for the GPT, and the
//! hook's determinism and composition with the RCC monitor.
use ndarray::Array2;
use ndarray_linalg::{Eigh, UPLO};
use tch::{Device, Kind, Tensor};

use super::curvature::tests::full_hessian;
use super::*;
use crate::loss::LossKind;
use crate::model::{Mlp, MlpConfig, Norm};
use crate::optim::OptimizerKind;
use crate::param::Parameterization;
use crate::train::{Hooks, ParamSpec, Trainer};

/// Eigenvalues (descending) of a symmetric `[N, N]` f64 tensor by LAPACK.
fn eigenvalues(a: &Tensor) -> Vec<f64> {
    let n = a.size()[0] as usize;
    let v = Vec::<f64>::try_from(a.to_kind(Kind::Double).contiguous().view([-1])).unwrap();
    let m = Array2::from_shape_vec((n, n), v).unwrap();
    let (w, _) = m.eigh(UPLO::Lower).unwrap();
    let mut w = w.to_vec();
    w.reverse();
    w
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-300)
}

fn tiny_mlp(param: &str, norm: Option<Norm>, seed: u64) -> Mlp {
    let cfg = MlpConfig { d_in: 6, d_out: 4, width: 8, depth: 3, bias: norm.is_some(), norm, ..MlpConfig::default() };
    Mlp::new(&cfg, &Parameterization::builtin(param).unwrap(), seed, Device::Cpu).unwrap().to_kind(Kind::Double)
}

fn data(b: i64) -> (Tensor, Tensor) {
    let x = rng::normal(&[b, 6], 1.0, &mut rng::rng(3, stream::MISC), Device::Cpu).to_kind(Kind::Double);
    let y = Tensor::from_slice(&(0..b).map(|i| (i * 7) % 4).collect::<Vec<i64>>());
    (x, y)
}

fn tight() -> SharpnessConfig {
    SharpnessConfig { lanczos: LanczosConfig { k: 3, max_iter: 300, tol: 1e-10, explicit_residual: true }, layers: true, ..SharpnessConfig::default() }
}

#[test]
fn top_eigenvalues_of_tiny_mlps_match_the_diagonalised_hessian() {
    let (x, y) = data(16);
    let mut checked = 0;
    for (param, norm, kind) in [("sp", None, LossKind::Ce), ("sp", None, LossKind::Mse), ("mup", Some(Norm::LayerNorm), LossKind::Ce), ("ntp", Some(Norm::RmsNorm), LossKind::MseSoftmax)] {
        let m = tiny_mlp(param, norm, 1);
        let loss = Loss::new(kind);
        let obj = |f: &Tensor| loss.compute(f, &y);
        let h = full_hessian(&m, &x, &obj);
        let want = eigenvalues(&h);
        let lrs: Vec<f64> = m.params().iter().map(|p| 0.3 * p.lr_scale_sgd).collect();
        let rates = Rates { sgd: Some(lrs.clone()), adam: None };
        let got = measure(&m, &x, &obj, &tight(), &rates, 5).unwrap();
        let what = format!("{param} {norm:?} {kind}");
        assert!(rel(got.get(MODEL, metric::SHARPNESS).unwrap(), want[0]) < 1e-6, "{what}: {:?} vs {}", got.get(MODEL, metric::SHARPNESS), want[0]);
        assert!(rel(got.get(MODEL, metric::eigenvalue(2)).unwrap(), want[1]) < 1e-6, "{what}");
        assert!(rel(got.get(MODEL, metric::eigenvalue(3)).unwrap(), want[2]) < 1e-6, "{what}");
        assert!(got.get(MODEL, metric::residual(crate::rcc::CurvatureEstimate::Sharpness)).unwrap() < 1e-8, "{what}");
        // eta lambda_max(D H) from the congruence D^1/2 H D^1/2 (per-layer rates differ in muP
        // and NTP; frozen parameters have none)
        let d = Tensor::cat(&m.params().iter().zip(&lrs).map(|(p, lr)| Tensor::full([p.tensor.numel() as i64], *lr, (Kind::Double, Device::Cpu))).collect::<Vec<_>>(), 0);
        let s = d.sqrt();
        let want_eta = eigenvalues(&((&s.unsqueeze(1) * &h) * s.unsqueeze(0)))[0];
        assert!(rel(got.get(MODEL, metric::ETA_SHARPNESS).unwrap(), want_eta) < 1e-6, "{what}: eta sharpness");
        // each weight's diagonal block
        let mut offset = 0;
        for p in m.params() {
            let n = p.tensor.numel() as i64;
            if p.kind == crate::param::ParamKind::Weight {
                let sub = h.narrow(0, offset, n).narrow(1, offset, n);
                let w = eigenvalues(&sub)[0];
                assert!(rel(got.get(&p.name, metric::SHARPNESS_LAYER).unwrap(), w) < 1e-6, "{what} {}", p.name);
                checked += 1;
            }
            offset += n;
        }
        // the Gauss-Newton part: positive semi-definite for CE and MSE, its top eigenvalue
        // below the Hessian's only where H - G has positive directions
        let gn = got.get(MODEL, metric::SHARPNESS_GN).unwrap();
        assert!(gn.is_finite() && (kind == LossKind::MseSoftmax || gn > 0.0), "{what}: {gn}");
    }
    assert_eq!(checked, 12);
}

#[test]
fn uniform_rates_scale_the_sharpness_and_adam_preconditions_it() {
    let (x, y) = data(16);
    let m = tiny_mlp("sp", None, 2);
    let loss = Loss::new(LossKind::Ce);
    let obj = |f: &Tensor| loss.compute(f, &y);
    let cfg = SharpnessConfig { lanczos: LanczosConfig { max_iter: 300, tol: 1e-10, ..LanczosConfig::default() }, ..SharpnessConfig::default() };
    // SP under SGD: one rate, so eta_sharpness is lr * sharpness exactly (the same Ritz pair)
    let rates = Rates::at(&OptimConfig::default(), 0.25, &m, 0, None);
    let got = measure(&m, &x, &obj, &cfg, &rates, 0).unwrap();
    assert_eq!(got.get(MODEL, metric::ETA_SHARPNESS).unwrap(), 0.25 * got.get(MODEL, metric::SHARPNESS).unwrap());
    assert_eq!(got.get(MODEL, metric::ETA_SHARPNESS_GN).unwrap(), 0.25 * got.get(MODEL, metric::SHARPNESS_GN).unwrap());
    assert!(got.get(MODEL, metric::SHARPNESS_PRECOND).is_none());
    // Adam after three steps: lambda_max(P^-1/2 H P^-1/2) with the optimizer's own P^-1
    let ocfg = OptimConfig { kind: OptimizerKind::Adam, ..OptimConfig::default() };
    let mut opt = crate::optim::Optimizer::new(&ocfg, 1e-3, m.params()).unwrap();
    assert!(Rates::at(&ocfg, 1e-3, &m, 0, Some(&opt)).adam.is_none(), "no state at initialisation");
    for _ in 0..3 {
        opt.step(m.params(), &mut || obj(&m.forward(&x))).unwrap();
    }
    let rates = Rates::at(&ocfg, 1e-3, &m, 3, Some(&opt));
    let got = measure(&m, &x, &obj, &cfg, &rates, 0).unwrap();
    let pinv = Tensor::cat(&opt.adam_preconditioner().unwrap().iter().map(|t| t.as_ref().unwrap().reshape([-1])).collect::<Vec<_>>(), 0);
    let s = pinv.sqrt();
    let h = full_hessian(&m, &x, &obj);
    let want = eigenvalues(&((&s.unsqueeze(1) * &h) * s.unsqueeze(0)))[0];
    assert!(rel(got.get(MODEL, metric::SHARPNESS_PRECOND).unwrap(), want) < 1e-6, "{:?} vs {want}", got.get(MODEL, metric::SHARPNESS_PRECOND));
    assert!(got.get(MODEL, metric::ETA_SHARPNESS).is_none(), "SGD's quantity is not Adam's");
}

#[test]
fn hutchinson_trace_of_a_tiny_mlp_is_within_its_error() {
    let (x, y) = data(16);
    let m = tiny_mlp("sp", None, 4);
    let loss = Loss::new(LossKind::Ce);
    let obj = |f: &Tensor| loss.compute(f, &y);
    let trace = full_hessian(&m, &x, &obj).trace().double_value(&[]);
    let cfg = SharpnessConfig { trace_samples: 40, gauss_newton: false, density: Some(DensityConfig { runs: 2, steps: 8 }), ..SharpnessConfig::default() };
    let mut zs = vec![];
    for seed in 0..8 {
        let got = measure(&m, &x, &obj, &cfg, &Rates::default(), seed).unwrap();
        let (t, se) = (got.get(MODEL, metric::TRACE).unwrap(), got.get(MODEL, metric::TRACE_STDERR).unwrap());
        zs.push((t - trace) / se);
        let d = got.density.unwrap();
        assert_eq!(d.nodes.len(), 2);
        // SLQ's nodes lie in the spectrum's range; its first moment is a trace estimate too
        assert!(d.nodes.iter().flatten().all(|t| t.is_finite()));
    }
    assert!(zs.iter().all(|z| z.abs() < 4.0), "z-scores {zs:?}");
    let rms = (zs.iter().map(|z| z * z).sum::<f64>() / zs.len() as f64).sqrt();
    assert!(rms > 0.3 && rms < 2.0, "z-scores {zs:?}");
}

#[test]
fn gpt_hessian_vector_products_match_finite_differences() {
    use crate::model::{Gpt, GptConfig};
    let cfg = GptConfig { vocab_size: 20, width: 16, depth: 1, head_dim: 8, ..GptConfig::default() };
    let m = Gpt::new(&cfg, &Parameterization::sp(), 0, Device::Cpu).unwrap().to_kind(Kind::Double);
    let ids: Vec<i64> = (0..2 * 6).map(|i| (i * 7 + 3) % 20).collect();
    let x = Tensor::from_slice(&ids).view([2, 6]);
    let y = Tensor::from_slice(&ids.iter().map(|i| (i + 1) % 20).collect::<Vec<i64>>());
    let loss = Loss::new(LossKind::Ce);
    let obj = |f: &Tensor| loss.compute(f, &y);
    let curv = Curvature::new(&m, &x, &obj).unwrap();
    let op = curv.block(Part::Hessian, (0..curv.len()).collect(), None).unwrap();
    use lanczos::Operator;
    let v = rng::normal(&[op.dim()], 1.0, &mut rng::rng(1, stream::MISC), Device::Cpu).to_kind(Kind::Double);
    let hv = op.apply(&v).unwrap();
    let eps = 1e-5;
    let params: Vec<&Tensor> = m.params().iter().map(|p| &p.tensor).collect();
    let sizes: Vec<i64> = params.iter().map(|p| p.numel() as i64).collect();
    let grad_at = |s: f64| {
        let parts = (&v * s).split_with_sizes(&sizes, 0);
        let shift = |sign: f64| tch::no_grad(|| for (p, d) in params.iter().zip(&parts) { let mut t = p.shallow_clone(); t += d.view(&p.size()[..]) * sign; });
        shift(1.0);
        let g = Tensor::run_backward(&[obj(&m.forward(&x))], &params, false, false);
        shift(-1.0);
        Tensor::cat(&g.iter().map(|t| t.reshape([-1])).collect::<Vec<_>>(), 0)
    };
    let fd = (grad_at(eps) - grad_at(-eps)) / (2.0 * eps);
    let err = (&fd - &hv).norm().double_value(&[]) / hv.norm().double_value(&[]);
    assert!(err < 1e-6, "GPT H v vs finite differences: {err}");
    // and a whole measurement with per-layer blocks and the GN part
    let got = measure(&m, &x, &obj, &SharpnessConfig { layers: true, ..SharpnessConfig::default() }, &Rates::default(), 0).unwrap();
    assert!(got.get(MODEL, metric::SHARPNESS).unwrap() > 0.0);
    assert!(got.get("lm_head.weight", metric::SHARPNESS_LAYER).unwrap() > 0.0);
    assert!(got.get("blocks.0.attn.q.weight", metric::SHARPNESS_LAYER).is_some());
    assert!(got.get("blocks.0.norm_1.gain", metric::SHARPNESS_LAYER).is_none(), "weights only");
}

/// A small MLP run on teacher data (no files).
pub(crate) fn teacher_run(optim: OptimizerKind) -> crate::train::TrainConfig {
    use crate::data::{DataConfig, DatasetName, TeacherConfig};
    let mut cfg = crate::train::TrainConfig {
        model: MlpConfig { width: 32, depth: 3, ..MlpConfig::default() },
        param: ParamSpec::Name("sp".into()),
        lr: if optim == OptimizerKind::Sgd { 0.2 } else { 1e-3 },
        data: DataConfig { dataset: DatasetName::Teacher, teacher: TeacherConfig { d_in: 4, n_train: 512, n_test: 64 }, ..DataConfig::default() },
        batch_size: 32,
        steps: Some(6),
        threads: Some(1),
        ..crate::train::TrainConfig::default()
    };
    cfg.optim.kind = optim;
    cfg
}

/// A tiny GPT run on generated text (no files).
pub(crate) fn tiny_gpt_run() -> crate::train::gpt::GptTrainConfig {
    use crate::data::text::{TextConfig, TextSource};
    crate::train::gpt::GptTrainConfig {
        model: crate::model::GptConfig { width: 32, depth: 1, head_dim: 16, ..crate::model::GptConfig::default() },
        data: TextConfig { source: TextSource::Generated { chars: 20_000 }, vocab_size: 300, seq_len: 16, ..TextConfig::default() },
        lr: 1e-2,
        batch_size: 4,
        steps: 2,
        threads: Some(1),
        ..crate::train::gpt::GptTrainConfig::default()
    }
}

fn hook_cfg() -> SharpnessConfig {
    SharpnessConfig { batch_size: Some(128), layers: true, lanczos: LanczosConfig { max_iter: 30, ..LanczosConfig::default() }, ..SharpnessConfig::default() }
}

#[test]
fn the_hook_is_deterministic_per_seed_and_leaves_training_alone() {
    let schedule = StepSchedule::List { steps: vec![2, 5] };
    let run = |seed: u64, with_hook: bool| {
        let mut cfg = teacher_run(OptimizerKind::Sgd);
        cfg.seed = seed;
        let t = Trainer::new(&cfg).unwrap();
        let mut hook = SharpnessHook::for_trainer(&t, hook_cfg(), schedule.clone()).unwrap();
        let r = t.run(false, with_hook.then_some(&mut hook as &mut dyn StepHook)).unwrap();
        (r.batch_losses, hook.records)
    };
    let (losses_a, a) = run(0, true);
    let (_, b) = run(0, true);
    let (_, c) = run(1, true);
    let (losses_plain, _) = run(0, false);
    let bits = |r: &[Record]| r.iter().map(|x| (x.step, x.layer.clone(), x.metric, x.value.to_bits())).collect::<Vec<_>>();
    assert_eq!(bits(&a), bits(&b), "same seed, same rows");
    assert_ne!(bits(&a), bits(&c));
    assert_eq!(losses_a, losses_plain, "measuring does not change training");
    let steps: Vec<usize> = a.iter().filter(|r| r.metric == metric::SHARPNESS).map(|r| r.step).collect();
    assert_eq!(steps, [0, 2, 5]);
    // SP, SGD, constant schedule: eta_sharpness = lr * sharpness at every step
    for s in [0, 2, 5] {
        let get = |m: crate::rcc::Metric| a.iter().find(|r| r.step == s && r.layer == MODEL && r.metric == m).unwrap().value;
        assert!((get(metric::ETA_SHARPNESS) - 0.2 * get(metric::SHARPNESS)).abs() < 1e-12 * get(metric::SHARPNESS));
        assert!(get(metric::SHARPNESS) > 0.0 && get(metric::residual(crate::rcc::CurvatureEstimate::Sharpness)) < 1e-2);
    }
    assert!(a.iter().any(|r| r.layer == "layers.2.weight" && r.metric == metric::SHARPNESS_LAYER));
}

#[test]
fn the_hook_composes_with_the_rcc_monitor() {
    use crate::rcc::{Monitor, MonitorConfig};
    let cfg = teacher_run(OptimizerKind::Adam);
    let schedule = StepSchedule::List { steps: vec![3] };
    let t = Trainer::new(&cfg).unwrap();
    let (px, py) = mlp_batch(&t.data.train, 32, 9);
    let mut mon = Monitor::new(MonitorConfig { schedule: schedule.clone(), ..MonitorConfig::default() }, px, py, cfg.loss);
    let mut sharp = SharpnessHook::for_trainer(&t, hook_cfg(), schedule.clone()).unwrap();
    t.run(false, Some(&mut Hooks(vec![&mut mon, &mut sharp]))).unwrap();
    // the same monitor rows as without the sharpness hook
    let t2 = Trainer::new(&cfg).unwrap();
    let (px, py) = mlp_batch(&t2.data.train, 32, 9);
    let mut alone = Monitor::new(MonitorConfig { schedule, ..MonitorConfig::default() }, px, py, cfg.loss);
    t2.run(false, Some(&mut alone)).unwrap();
    let bits = |r: &[Record]| r.iter().map(|x| (x.step, x.layer.clone(), x.metric, x.value.to_bits())).collect::<Vec<_>>();
    assert_eq!(bits(&mon.records), bits(&alone.records));
    // Adam: the preconditioned sharpness after the first step, never eta_sharpness
    assert!(sharp.series(MODEL, metric::SHARPNESS_PRECOND).iter().map(|p| p.0).eq([3]));
    assert!(sharp.series(MODEL, metric::ETA_SHARPNESS).is_empty());
    assert_eq!(sharp.series(MODEL, metric::SHARPNESS).len(), 2);
    // the same row type and layer naming as the monitor's
    assert!(mon.records.iter().any(|r| r.layer == MODEL) && sharp.records.iter().all(|r| r.layer == MODEL || r.layer.ends_with(".weight")));
}

#[test]
fn the_hook_measures_the_gpt_and_bad_settings_are_errors() {
    let t = crate::train::Trainer::new(&tiny_gpt_run()).unwrap();
    let mut hook = SharpnessHook::for_trainer(&t, SharpnessConfig { batch_size: Some(2), ..SharpnessConfig::default() }, StepSchedule::Every).unwrap();
    t.run(false, Some(&mut hook)).unwrap();
    // AdamW (the GPT's default): sharpness at 0, 1, 2; the preconditioned one after steps 1, 2
    assert_eq!(hook.series(MODEL, metric::SHARPNESS).len(), 3);
    assert_eq!(hook.series(MODEL, metric::SHARPNESS_PRECOND).len(), 2);
    assert!(hook.records.iter().all(|r| r.value.is_finite()), "{:?}", hook.records);
    let bad = |c: SharpnessConfig| SharpnessHook::new(c, StepSchedule::Every, Tensor::zeros([1, 1], (Kind::Float, Device::Cpu)), Tensor::zeros([1], (Kind::Int64, Device::Cpu)), Loss::default(), OptimConfig::default(), 0.1, 0).err().unwrap().to_string();
    assert!(bad(SharpnessConfig { batch_size: Some(0), ..SharpnessConfig::default() }).contains("batch_size"));
    assert!(bad(SharpnessConfig { trace_samples: 1, ..SharpnessConfig::default() }).contains("trace_samples"));
    assert!(bad(SharpnessConfig { lanczos: LanczosConfig { k: 0, ..LanczosConfig::default() }, ..SharpnessConfig::default() }).contains("k and max_iter"));
}

#[test]
fn a_diverged_model_gives_its_loss_only() {
    let m = tiny_mlp("sp", None, 0);
    tch::no_grad(|| {
        let mut w = m.params()[0].tensor.shallow_clone();
        let _ = w.fill_(f64::NAN);
    });
    let (x, y) = data(4);
    let loss = Loss::default();
    let got = measure(&m, &x, &|f: &Tensor| loss.compute(f, &y), &SharpnessConfig::default(), &Rates::default(), 0).unwrap();
    assert_eq!(got.rows.len(), 1);
    assert!(got.get(MODEL, metric::HESSIAN_LOSS).unwrap().is_nan());
}
