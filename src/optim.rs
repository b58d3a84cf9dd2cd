//! Optimizers with per-parameter learning rates from the parameterization.
//!
//! The learning rate of parameter `p` at step `t` (0-based) is
//! `eta * schedule(t) * p.lr_scale(family)`; see [`crate::param`] for `lr_scale`.
//! Implemented directly on tensors (no `tch::nn::Optimizer`, whose `set_lr` overwrites every
//! group): SGD (optional momentum, L2 weight decay), Adam (PyTorch defaults, bias-corrected,
//! L2 weight decay), AdamW (decoupled weight decay), SAM-SGD (Foret et al.: ascend to
//! `w + rho g/||g||`, take the gradient there, descend from `w`). Random-feature and
//! first-layer-frozen variants come from the model ([`crate::model::Freeze`]): frozen
//! parameters are skipped. Optional global-norm gradient clipping, as
//! `torch.nn.utils.clip_grad_norm_`.
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::model::Param;
use crate::param::OptimizerFamily;
use crate::{Error, Result};

/// The update rule. Names: `sgd`, `adam`, `adamw`, `sam-sgd`, in configs, sweep grids and on
/// the command line alike. AdamW is also accepted as `adam-w`, the name serialised configs
/// carry (kept so that the keys of stored sweep runs, hashes of their configs, do not change).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OptimizerKind {
    #[default]
    Sgd,
    Adam,
    #[serde(alias = "adamw")]
    AdamW,
    SamSgd,
}

impl OptimizerKind {
    /// Which learning-rate rules of the parameterization apply.
    pub fn family(self) -> OptimizerFamily {
        match self {
            OptimizerKind::Sgd | OptimizerKind::SamSgd => OptimizerFamily::Sgd,
            OptimizerKind::Adam | OptimizerKind::AdamW => OptimizerFamily::Adam,
        }
    }
}

impl std::str::FromStr for OptimizerKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "sgd" => Ok(OptimizerKind::Sgd),
            "adam" => Ok(OptimizerKind::Adam),
            "adamw" | "adam-w" => Ok(OptimizerKind::AdamW),
            "sam-sgd" | "sam" => Ok(OptimizerKind::SamSgd),
            _ => Err(Error::config(format!("unknown optimizer `{s}` (use sgd, adam, adamw or sam-sgd)"))),
        }
    }
}

/// Learning-rate schedule, a factor multiplying `eta`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "type")]
pub enum Schedule {
    /// Factor 1 throughout (the paper's MLP experiments).
    #[default]
    Constant,
    /// Linear warmup from `1/warmup` to 1 over `warmup` steps, then cosine decay to
    /// `final_frac` at step `total` (the paper's GPT runs: 700 warmup steps, decay to 10%).
    /// `warmup = 0` is cosine decay alone; `final_frac = 1` with `total = warmup` is warmup
    /// alone.
    WarmupCosine { warmup: usize, total: usize, final_frac: f64 },
}

impl Schedule {
    /// The factor at step `t` (0-based).
    pub fn factor(&self, t: usize) -> f64 {
        match *self {
            Schedule::Constant => 1.0,
            Schedule::WarmupCosine { warmup, total, final_frac } => {
                if t < warmup {
                    (t + 1) as f64 / warmup as f64
                } else if t >= total {
                    final_frac
                } else {
                    let span = (total - warmup).max(1) as f64;
                    let progress = (t - warmup) as f64 / span;
                    final_frac + (1.0 - final_frac) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
                }
            }
        }
    }
}

/// How weight decay relates to the learning rate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DecayMode {
    /// PyTorch's convention: the decay step is `lr_p(t) * wd` (so it scales per layer with
    /// the parameterization's learning rate).
    #[default]
    LrCoupled,
    /// Width- and layer-independent decay `eta * schedule(t) * wd`, the same for all layers,
    /// decoupled from the gradient (AdamW, and SGDW: `w <- (1 - eta schedule(t) wd) w - lr_p g`;
    /// the uv model's convention, appendix C.4).
    Independent,
}

/// Optimizer settings. Defaults are PyTorch's (SGD without momentum).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OptimConfig {
    pub kind: OptimizerKind,
    /// SGD momentum (0 = off, as in the paper).
    pub momentum: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// L2 (SGD, Adam) or decoupled (AdamW) weight decay.
    pub weight_decay: f64,
    pub decay_mode: DecayMode,
    /// SAM perturbation radius.
    pub sam_rho: f64,
    /// Clip the global gradient norm to this value.
    pub grad_clip: Option<f64>,
    pub schedule: Schedule,
}

impl Default for OptimConfig {
    fn default() -> Self {
        OptimConfig {
            kind: OptimizerKind::Sgd,
            momentum: 0.0,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            decay_mode: DecayMode::LrCoupled,
            sam_rho: 0.05,
            grad_clip: None,
            schedule: Schedule::Constant,
        }
    }
}

impl OptimConfig {
    /// Tensors of state the optimizer keeps per parameter tensor (Adam's two moments, SGD's
    /// momentum buffer): for memory estimates.
    pub fn state_slots(&self) -> usize {
        match self.kind {
            OptimizerKind::Adam | OptimizerKind::AdamW => 2,
            _ if self.momentum > 0.0 => 1,
            _ => 0,
        }
    }

    /// Checks ranges.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::config(m));
        if !(0.0..1.0).contains(&self.momentum) {
            return bad(format!("optim.momentum must be in [0, 1), got {}", self.momentum));
        }
        if !(0.0..1.0).contains(&self.beta1) || !(0.0..1.0).contains(&self.beta2) {
            return bad("optim.beta1 and optim.beta2 must be in [0, 1)".into());
        }
        if !(self.eps > 0.0) || self.weight_decay < 0.0 || self.sam_rho < 0.0 {
            return bad("optim.eps must be > 0; weight_decay and sam_rho >= 0".into());
        }
        if let Some(c) = self.grad_clip {
            if !(c > 0.0) {
                return bad(format!("optim.grad_clip must be > 0, got {c}"));
            }
        }
        if let Schedule::WarmupCosine { warmup, total, final_frac } = self.schedule {
            if total < warmup || !(0.0..=1.0).contains(&final_frac) {
                return bad("schedule: need total >= warmup, final_frac in [0, 1]".into());
            }
        }
        Ok(())
    }

    /// The learning rate of every parameter in step `t` (0-based) under base rate `eta`:
    /// `eta * schedule(t) * lr_scale` (0 for frozen parameters). What
    /// [`Optimizer::param_lrs`] returns before step `t`.
    pub fn param_lrs(&self, eta: f64, params: &[Param], t: usize) -> Vec<f64> {
        let lr = eta * self.schedule.factor(t);
        params.iter().map(|p| lr * lr_scale(self.kind, p)).collect()
    }
}

/// A parameter's learning-rate factor under optimizer `kind` (0 when frozen).
fn lr_scale(kind: OptimizerKind, p: &Param) -> f64 {
    if p.trainable {
        p.lr_scale(kind.family())
    } else {
        0.0
    }
}

/// What one step reports.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepStats {
    /// Loss at the current weights (before the update).
    pub loss: f64,
    /// Global gradient norm before clipping; computed only when the step needs it (SAM,
    /// clipping), since it costs one reduction per parameter. The RCC monitor records
    /// per-layer gradient norms.
    pub grad_norm: Option<f64>,
}

/// A dense weight's plain-SGD step as the MLP's fused backward pass takes it
/// ([`crate::model::Mlp::manual_sgd_step`]): the gradient is the rank-`B` product
/// `g^T x` (`B` = training batch) and is never materialised; the step adds
/// `delta W = -lr g^T x` to the weight. Kept so that a monitor can measure the one-step
/// update from its factors (see [`crate::rcc`]) instead of from weight copies.
#[derive(Debug)]
pub struct LowRankStep {
    /// The parameter's learning rate in this step.
    pub lr: f64,
    /// `[B, fan_out]`: `a dL/dh` of the training batch (`h = a x W^T`, multiplier included).
    pub g: Tensor,
    /// `[B, fan_in]`: the layer's input on the training batch.
    pub x: Tensor,
}

/// Per-parameter optimizer state.
#[derive(Debug, Default)]
struct State {
    /// Momentum buffer (SGD) or first moment (Adam).
    m: Option<Tensor>,
    /// Second moment (Adam).
    v: Option<Tensor>,
}

/// An optimizer bound to a model's parameter list.
#[derive(Debug)]
pub struct Optimizer {
    cfg: OptimConfig,
    eta: f64,
    /// `lr_scale` of each parameter (0 for frozen ones).
    scales: Vec<f64>,
    state: Vec<State>,
    t: usize,
    last_grads: Vec<Option<Tensor>>,
    last_low_rank: Vec<Option<LowRankStep>>,
    /// `-lr_p` as 0-dim tensors, reused while the learning rate does not change.
    neg_lrs: Vec<Option<(f64, Tensor)>>,
}

impl Optimizer {
    /// Creates the optimizer for `params` with base learning rate `eta`.
    pub fn new(cfg: &OptimConfig, eta: f64, params: &[Param]) -> Result<Self> {
        cfg.validate()?;
        if !(eta >= 0.0 && eta.is_finite()) {
            return Err(Error::config(format!("learning rate must be finite and >= 0, got {eta}")));
        }
        let scales = params.iter().map(|p| lr_scale(cfg.kind, p)).collect();
        let state = params.iter().map(|_| State::default()).collect();
        let neg_lrs = params.iter().map(|_| None).collect();
        Ok(Optimizer { cfg: cfg.clone(), eta, scales, state, t: 0, last_grads: vec![], last_low_rank: vec![], neg_lrs })
    }

    /// Number of steps taken.
    pub fn steps_taken(&self) -> usize {
        self.t
    }

    /// `eta * schedule(t)` for the next step.
    pub fn current_lr(&self) -> f64 {
        self.eta * self.cfg.schedule.factor(self.t)
    }

    /// The learning rate each parameter gets in the next step.
    pub fn param_lrs(&self) -> Vec<f64> {
        let lr = self.current_lr();
        self.scales.iter().map(|s| lr * s).collect()
    }

    /// The settings the optimizer was built with.
    pub fn config(&self) -> &OptimConfig {
        &self.cfg
    }

    /// Adam's inverse preconditioner for the next step, per parameter (`None` for frozen
    /// ones): with the state after `t >= 1` steps, the diagonal
    /// `P^-1 = lr_p / ((1 - beta1^(t+1)) (sqrt(v_t / (1 - beta2^t)) + eps))`, so that the next
    /// update is `-P^-1 m_{t+1}` with the second moment frozen at `v_t` (Cohen et al. 2022,
    /// "Adaptive gradient methods at the edge of stability": their `P_t`, with the learning
    /// rate folded in). `None` for SGD-like optimizers and before the first step.
    pub fn adam_preconditioner(&self) -> Option<Vec<Option<Tensor>>> {
        let c = &self.cfg;
        if c.kind.family() != OptimizerFamily::Adam || self.t == 0 {
            return None;
        }
        let t = self.t as i32;
        let (bc1, bc2) = (1.0 - c.beta1.powi(t + 1), 1.0 - c.beta2.powi(t));
        let lrs = self.param_lrs();
        Some(
            tch::no_grad(|| {
                self.state.iter().zip(&lrs).map(|(st, &lr)| st.v.as_ref().filter(|_| lr > 0.0).map(|v| ((v / bc2).sqrt() + c.eps).reciprocal() * (lr / bc1))).collect()
            }),
        )
    }

    /// Whether the update is plain SGD, `w <- w - lr_p g` (no momentum, weight decay,
    /// clipping or SAM), so that a caller may fuse it into its backward pass
    /// ([`crate::model::Mlp::manual_sgd_step`] at the rates [`Optimizer::param_lrs`]) and
    /// then record it with [`Optimizer::record_fused_step`].
    pub fn is_plain_sgd(&self) -> bool {
        let c = &self.cfg;
        c.kind == OptimizerKind::Sgd && c.momentum == 0.0 && c.weight_decay == 0.0 && c.grad_clip.is_none()
    }

    /// Records a plain-SGD step the caller applied itself at the rates
    /// [`Optimizer::param_lrs`] gave before it (see [`Optimizer::is_plain_sgd`]): advances
    /// the step count and keeps what the step leaves: `grads` (one per parameter; `None`
    /// where the gradient was not materialised) for [`Optimizer::last_gradients`] and
    /// `low_rank` (one per parameter, or empty) for [`Optimizer::last_low_rank`].
    pub fn record_fused_step(&mut self, loss: f64, grads: Vec<Option<Tensor>>, low_rank: Vec<Option<LowRankStep>>) -> StepStats {
        debug_assert!(self.is_plain_sgd());
        self.t += 1;
        self.last_grads = grads;
        self.last_low_rank = low_rank;
        StepStats { loss, grad_norm: None }
    }

    /// One optimisation step. `loss_fn` computes the loss at the current weights (SAM calls
    /// it twice). Gradients come from `torch.autograd.grad`-style backward passes, so nothing
    /// accumulates in `.grad` and nothing needs zeroing; the last ones stay available through
    /// [`Optimizer::last_gradients`].
    pub fn step(&mut self, params: &[Param], loss_fn: &mut dyn FnMut() -> Tensor) -> Result<StepStats> {
        self.step_with(params, &mut || gradients(params, loss_fn))
    }

    /// One optimisation step with gradients from `grad_fn`, which returns the loss at the
    /// current weights and one gradient per parameter (`None` for frozen ones), as
    /// [`gradients`] does; SAM calls it twice. Used with hand-written backward passes
    /// ([`crate::model::Mlp::manual_gradients`]).
    pub fn step_with(&mut self, params: &[Param], grad_fn: &mut dyn FnMut() -> Result<(f64, Vec<Option<Tensor>>)>) -> Result<StepStats> {
        let (loss, mut grads) = grad_fn()?;
        let sam = self.cfg.kind == OptimizerKind::SamSgd && self.cfg.sam_rho > 0.0;
        let grad_norm = (sam || self.cfg.grad_clip.is_some()).then(|| global_norm(&grads));
        if let (true, Some(grad_norm)) = (sam, grad_norm.filter(|g| g.is_finite())) {
            // Ascend to w + rho g / ||g||, take the gradient there, return to w.
            let scale = self.cfg.sam_rho / (grad_norm + 1e-12);
            let eps: Vec<Option<Tensor>> = grads.iter().map(|g| g.as_ref().map(|g| g * scale)).collect();
            let shift = |sign: f64| {
                tch::no_grad(|| {
                    for (p, e) in params.iter().zip(&eps) {
                        if let Some(e) = e {
                            let mut w = p.tensor.shallow_clone();
                            let _ = w.addcmul_(e, &scalar_like(e, sign));
                        }
                    }
                })
            };
            shift(1.0);
            let second = grad_fn();
            shift(-1.0);
            grads = second?.1;
        }
        if let Some(max) = self.cfg.grad_clip {
            let norm = if sam { global_norm(&grads) } else { grad_norm.unwrap_or(f64::NAN) };
            if norm.is_finite() && norm > max {
                let c = max / (norm + 1e-6);
                for g in grads.iter_mut().flatten() {
                    *g *= c;
                }
            }
        }
        self.update(params, &grads);
        self.last_grads = grads;
        self.last_low_rank.clear();
        Ok(StepStats { loss, grad_norm })
    }

    /// The gradients used by the last step (after SAM and clipping), `None` for frozen
    /// parameters and, after a fused plain-SGD step, for the weights (their gradients are
    /// in [`Optimizer::last_low_rank`]); empty before the first step.
    pub fn last_gradients(&self) -> &[Option<Tensor>] {
        &self.last_grads
    }

    /// The weights' low-rank steps of the last step when it was a fused plain-SGD step
    /// ([`Optimizer::record_fused_step`]; `None` for parameters without one), else empty.
    pub fn last_low_rank(&self) -> &[Option<LowRankStep>] {
        &self.last_low_rank
    }

    /// Applies the update rule with gradients `grads` (one per parameter).
    fn update(&mut self, params: &[Param], grads: &[Option<Tensor>]) {
        let lr = self.current_lr();
        self.t += 1;
        let cfg = &self.cfg;
        let t = self.t as f64;
        tch::no_grad(|| {
            let neg_lrs = self.neg_lrs.iter_mut();
            for ((((p, &scale), st), g), neg_lr) in params.iter().zip(&self.scales).zip(self.state.iter_mut()).zip(grads).zip(neg_lrs) {
                let Some(g) = g else { continue };
                let lr_p = lr * scale;
                let decay = match cfg.decay_mode {
                    DecayMode::LrCoupled => lr_p * cfg.weight_decay,
                    DecayMode::Independent => lr * cfg.weight_decay,
                };
                let mut w = p.tensor.shallow_clone();
                match cfg.kind {
                    OptimizerKind::Sgd | OptimizerKind::SamSgd => {
                        let decoupled = cfg.decay_mode == DecayMode::Independent;
                        let mut g = if cfg.weight_decay > 0.0 && !decoupled { g + &w * cfg.weight_decay } else { g.shallow_clone() };
                        if cfg.momentum > 0.0 {
                            let buf = match st.m.take() {
                                None => g.detach().copy(),
                                Some(mut b) => {
                                    b *= cfg.momentum;
                                    b += &g;
                                    b
                                }
                            };
                            g = buf.shallow_clone();
                            st.m = Some(buf);
                        }
                        if decoupled && decay > 0.0 {
                            w *= 1.0 - decay;
                        }
                        // w += (-lr_p) * g in one fused pass
                        if neg_lr.as_ref().is_none_or(|(v, _)| *v != lr_p) {
                            *neg_lr = Some((lr_p, scalar_like(&g, -lr_p)));
                        }
                        let (_, neg) = neg_lr.as_ref().expect("set above");
                        let _ = w.addcmul_(&g, neg);
                    }
                    OptimizerKind::Adam | OptimizerKind::AdamW => {
                        let g = if cfg.kind == OptimizerKind::Adam && cfg.weight_decay > 0.0 {
                            g + &w * cfg.weight_decay
                        } else {
                            g.shallow_clone()
                        };
                        if cfg.kind == OptimizerKind::AdamW && decay > 0.0 {
                            w *= 1.0 - decay;
                        }
                        let mut m = st.m.take().unwrap_or_else(|| g.zeros_like());
                        let mut v = st.v.take().unwrap_or_else(|| g.zeros_like());
                        let _ = m.lerp_(&g, 1.0 - cfg.beta1);
                        v *= cfg.beta2;
                        let _ = v.addcmul_(&g, &(&g * (1.0 - cfg.beta2)));
                        let bc1 = 1.0 - cfg.beta1.powf(t);
                        let bc2 = 1.0 - cfg.beta2.powf(t);
                        let denom = (&v / bc2).sqrt() + cfg.eps;
                        let _ = w.addcdiv_(&(&m * (-lr_p / bc1)), &denom);
                        st.m = Some(m);
                        st.v = Some(v);
                    }
                }
            }
        });
    }
}

/// A 0-dimensional tensor holding `v`, of the kind and device of `like`.
fn scalar_like(like: &Tensor, v: f64) -> Tensor {
    Tensor::from(v).to_kind(like.kind()).to_device(like.device())
}

/// The loss at the current weights and its gradient with respect to every trainable
/// parameter (`None` for frozen ones).
pub fn gradients(params: &[Param], loss_fn: &mut dyn FnMut() -> Tensor) -> Result<(f64, Vec<Option<Tensor>>)> {
    let loss = loss_fn();
    let inputs: Vec<&Tensor> = params.iter().filter(|p| p.trainable).map(|p| &p.tensor).collect();
    let mut gs = if inputs.is_empty() {
        vec![]
    } else {
        Tensor::f_run_backward(&[&loss], &inputs, false, false)?
    }
    .into_iter();
    let grads = params.iter().map(|p| if p.trainable { gs.next() } else { None }).collect();
    Ok((loss.double_value(&[]), grads))
}

/// `sqrt(sum ||g||^2)` over the gradients present (one synchronisation, no temporaries of
/// gradient size).
pub fn global_norm(grads: &[Option<Tensor>]) -> f64 {
    let norms: Vec<Tensor> = grads.iter().flatten().map(|g| g.norm().to_kind(Kind::Double)).collect();
    if norms.is_empty() {
        return 0.0;
    }
    Tensor::stack(&norms, 0).norm().double_value(&[])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::param::{ParamKind, Role};
    use tch::Device;

    #[test]
    fn every_optimizer_has_one_name_in_configs_grids_and_flags() {
        #[derive(serde::Deserialize)]
        struct C {
            kind: OptimizerKind,
        }
        for (name, kind) in [("sgd", OptimizerKind::Sgd), ("adam", OptimizerKind::Adam), ("adamw", OptimizerKind::AdamW), ("sam-sgd", OptimizerKind::SamSgd)] {
            assert_eq!(name.parse::<OptimizerKind>().unwrap(), kind);
            assert_eq!(toml::from_str::<C>(&format!("kind = \"{name}\"")).unwrap().kind, kind, "{name}");
            assert_eq!(serde_json::from_value::<OptimizerKind>(serde_json::Value::from(name)).unwrap(), kind, "{name}");
        }
        // the serialised spelling (in stored sweep configs) reads back and parses too
        let stored = serde_json::to_value(OptimizerKind::AdamW).unwrap();
        assert_eq!(serde_json::from_value::<OptimizerKind>(stored.clone()).unwrap(), OptimizerKind::AdamW);
        assert_eq!(stored.as_str().unwrap().parse::<OptimizerKind>().unwrap(), OptimizerKind::AdamW);
    }

    /// A one-parameter "model": w in R^3 with loss 0.5 ||w - c||^2 (gradient w - c).
    fn param(w: &[f64], scale: f64) -> Vec<Param> {
        vec![Param {
            name: "w".into(),
            role: Role::HiddenLike,
            kind: ParamKind::Weight,
            fan_in: 3,
            fan_out: 1,
            tensor: Tensor::from_slice(w).set_requires_grad(true),
            trainable: true,
            multiplier: 1.0,
            lr_scale_sgd: scale,
            lr_scale_adam: scale,
        }]
    }

    fn quad(p: &[Param], c: &[f64]) -> Tensor {
        let c = Tensor::from_slice(c);
        (&p[0].tensor - c).square().sum(Kind::Double) * 0.5
    }

    fn vals(p: &[Param]) -> Vec<f64> {
        Vec::<f64>::try_from(p[0].tensor.detach()).unwrap()
    }

    fn close(a: &[f64], b: &[f64]) {
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-12, "{a:?} vs {b:?}");
        }
    }

    const W: [f64; 3] = [1.0, -2.0, 0.5];
    const C: [f64; 3] = [0.0, 1.0, 1.0];

    fn grad() -> Vec<f64> {
        W.iter().zip(C).map(|(w, c)| w - c).collect()
    }

    #[test]
    fn sgd_step_with_layer_scale() {
        let p = param(&W, 0.5);
        let mut opt = Optimizer::new(&OptimConfig::default(), 0.1, &p).unwrap();
        let s = opt.step(&p, &mut || quad(&p, &C)).unwrap();
        let want: Vec<f64> = W.iter().zip(grad()).map(|(w, g)| w - 0.05 * g).collect();
        close(&vals(&p), &want);
        let gn = grad().iter().map(|g| g * g).sum::<f64>().sqrt();
        assert!(s.grad_norm.is_none(), "not computed when nothing needs it");
        assert!((global_norm(opt.last_gradients()) - gn).abs() < 1e-12);
    }

    #[test]
    fn sgd_momentum_two_steps() {
        let p = param(&W, 1.0);
        let cfg = OptimConfig { momentum: 0.9, ..OptimConfig::default() };
        let mut opt = Optimizer::new(&cfg, 0.1, &p).unwrap();
        opt.step(&p, &mut || quad(&p, &C)).unwrap();
        let w1: Vec<f64> = W.iter().zip(grad()).map(|(w, g)| w - 0.1 * g).collect();
        opt.step(&p, &mut || quad(&p, &C)).unwrap();
        let want: Vec<f64> = w1
            .iter()
            .zip(grad())
            .zip(&C)
            .map(|((w, g0), c)| w - 0.1 * (0.9 * g0 + (w - c)))
            .collect();
        close(&vals(&p), &want);
    }

    #[test]
    fn adam_two_steps_with_bias_correction() {
        let p = param(&W, 2.0);
        let cfg = OptimConfig { kind: OptimizerKind::Adam, ..OptimConfig::default() };
        let mut opt = Optimizer::new(&cfg, 0.01, &p).unwrap();
        let (b1, b2, eps, lr) = (0.9f64, 0.999f64, 1e-8, 0.02);
        let mut w = W.to_vec();
        let (mut m, mut v) = (vec![0.0; 3], vec![0.0; 3]);
        for t in 1..=2 {
            opt.step(&p, &mut || quad(&p, &C)).unwrap();
            for i in 0..3 {
                let g = w[i] - C[i];
                m[i] = b1 * m[i] + (1.0 - b1) * g;
                v[i] = b2 * v[i] + (1.0 - b2) * g * g;
                let mh = m[i] / (1.0 - b1.powi(t));
                let vh = v[i] / (1.0 - b2.powi(t));
                w[i] -= lr * mh / (vh.sqrt() + eps);
            }
            close(&vals(&p), &w);
        }
    }

    #[test]
    fn config_rates_and_adam_preconditioner() {
        // OptimConfig::param_lrs is what the optimizer uses, step by step under a schedule
        let p = param(&W, 0.5);
        let schedule = Schedule::WarmupCosine { warmup: 3, total: 8, final_frac: 0.1 };
        let cfg = OptimConfig { kind: OptimizerKind::Adam, schedule, ..OptimConfig::default() };
        let mut opt = Optimizer::new(&cfg, 0.01, &p).unwrap();
        assert!(opt.adam_preconditioner().is_none(), "no state before the first step");
        for t in 0..4 {
            assert_eq!(cfg.param_lrs(0.01, &p, t), opt.param_lrs());
            opt.step(&p, &mut || quad(&p, &C)).unwrap();
        }
        // after one step from W, v_1 = (1 - b2) g^2: P^-1 = lr / ((1 - b1^2) (|g| + eps))
        let p = param(&W, 0.5);
        let cfg = OptimConfig { kind: OptimizerKind::Adam, ..OptimConfig::default() };
        let mut opt = Optimizer::new(&cfg, 0.01, &p).unwrap();
        opt.step(&p, &mut || quad(&p, &C)).unwrap();
        let pinv = opt.adam_preconditioner().unwrap().remove(0).unwrap();
        let want: Vec<f64> = grad().iter().map(|g| 0.005 / ((1.0 - 0.81) * (g.abs() + 1e-8))).collect();
        close(&Vec::<f64>::try_from(pinv).unwrap(), &want);
        assert!(Optimizer::new(&OptimConfig::default(), 0.1, &p).unwrap().adam_preconditioner().is_none());
    }

    #[test]
    fn adamw_decouples_weight_decay() {
        let p = param(&W, 1.0);
        let cfg = OptimConfig { kind: OptimizerKind::AdamW, weight_decay: 0.1, ..OptimConfig::default() };
        let mut opt = Optimizer::new(&cfg, 0.01, &p).unwrap();
        opt.step(&p, &mut || quad(&p, &C)).unwrap();
        // First Adam step moves each coordinate by lr * g/(|g| + eps') = lr * sign(g).
        let want: Vec<f64> = W
            .iter()
            .zip(grad())
            .map(|(w, g)| {
                let m = 0.1 * g / 0.1;
                let v = (0.001 * g * g / 0.001f64).sqrt();
                w * (1.0 - 0.01 * 0.1) - 0.01 * m / (v + 1e-8)
            })
            .collect();
        close(&vals(&p), &want);
    }

    #[test]
    fn sgd_independent_decay_is_decoupled() {
        let p = param(&W, 0.5);
        let cfg = OptimConfig { weight_decay: 0.2, decay_mode: DecayMode::Independent, ..OptimConfig::default() };
        let mut opt = Optimizer::new(&cfg, 0.1, &p).unwrap();
        opt.step(&p, &mut || quad(&p, &C)).unwrap();
        // w <- (1 - 0.1 * 0.2) w - 0.05 g(w)
        let want: Vec<f64> = W.iter().zip(grad()).map(|(w, g)| w * (1.0 - 0.02) - 0.05 * g).collect();
        close(&vals(&p), &want);
        // lr-coupled (L2) decay: w - 0.05 (g + 0.2 w)
        let p = param(&W, 0.5);
        let cfg = OptimConfig { weight_decay: 0.2, ..OptimConfig::default() };
        let mut opt = Optimizer::new(&cfg, 0.1, &p).unwrap();
        opt.step(&p, &mut || quad(&p, &C)).unwrap();
        let want: Vec<f64> = W.iter().zip(grad()).map(|(w, g)| w - 0.05 * (g + 0.2 * w)).collect();
        close(&vals(&p), &want);
        let cos = Schedule::WarmupCosine { warmup: 0, total: 10, final_frac: 0.0 };
        assert!((cos.factor(0) - 1.0).abs() < 1e-12 && (cos.factor(5) - 0.5).abs() < 1e-12);
        assert!(OptimConfig { schedule: cos, ..OptimConfig::default() }.validate().is_ok());
    }

    #[test]
    fn sam_uses_gradient_at_perturbed_point() {
        let p = param(&W, 1.0);
        let cfg = OptimConfig { kind: OptimizerKind::SamSgd, sam_rho: 0.3, ..OptimConfig::default() };
        let mut opt = Optimizer::new(&cfg, 0.1, &p).unwrap();
        opt.step(&p, &mut || quad(&p, &C)).unwrap();
        let g = grad();
        let n = g.iter().map(|x| x * x).sum::<f64>().sqrt();
        // gradient of the quadratic at w + rho g/|g| is g (1 + rho/|g|)
        let want: Vec<f64> = W.iter().zip(&g).map(|(w, g)| w - 0.1 * g * (1.0 + 0.3 / n)).collect();
        close(&vals(&p), &want);
    }

    #[test]
    fn clipping_and_warmup_cosine() {
        let p = param(&W, 1.0);
        let cfg = OptimConfig { grad_clip: Some(0.5), ..OptimConfig::default() };
        let mut opt = Optimizer::new(&cfg, 1.0, &p).unwrap();
        opt.step(&p, &mut || quad(&p, &C)).unwrap();
        let g = grad();
        let n = g.iter().map(|x| x * x).sum::<f64>().sqrt();
        let want: Vec<f64> = W.iter().zip(&g).map(|(w, g)| w - g * 0.5 / (n + 1e-6)).collect();
        close(&vals(&p), &want);

        let s = Schedule::WarmupCosine { warmup: 4, total: 14, final_frac: 0.1 };
        assert!((s.factor(0) - 0.25).abs() < 1e-12 && (s.factor(3) - 1.0).abs() < 1e-12);
        assert!((s.factor(9) - 0.55).abs() < 1e-12);
        assert!((s.factor(14) - 0.1).abs() < 1e-12 && (s.factor(100) - 0.1).abs() < 1e-12);
    }

    #[test]
    fn adamw_with_warmup_and_clipping_two_steps_by_hand() {
        // The paper's GPT optimizer: AdamW (0.9, 0.95), eps 1e-12, wd 0.1, warmup + cosine,
        // clipping at 1; the loss 5 ||w - c||^2 has gradient 10 (w - c), norm > 1: clipped.
        let p = param(&W, 2.0);
        let schedule = Schedule::WarmupCosine { warmup: 4, total: 10, final_frac: 0.1 };
        let cfg = OptimConfig {
            kind: OptimizerKind::AdamW,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-12,
            weight_decay: 0.1,
            grad_clip: Some(1.0),
            schedule,
            ..OptimConfig::default()
        };
        let mut opt = Optimizer::new(&cfg, 0.01, &p).unwrap();
        let mut w = W.to_vec();
        let (mut m, mut v) = (vec![0.0; 3], vec![0.0; 3]);
        for t in 1..=2 {
            let lr = opt.current_lr() * 2.0;
            assert!((lr - 0.02 * t as f64 / 4.0).abs() < 1e-15, "warmup factor t/4");
            let s = opt.step(&p, &mut || quad(&p, &C) * 10.0).unwrap();
            let g: Vec<f64> = w.iter().zip(&C).map(|(w, c)| 10.0 * (w - c)).collect();
            let norm = g.iter().map(|x| x * x).sum::<f64>().sqrt();
            assert!((s.grad_norm.unwrap() - norm).abs() < 1e-12 && norm > 1.0);
            let clip = 1.0 / (norm + 1e-6);
            for i in 0..3 {
                let gi = g[i] * clip;
                w[i] *= 1.0 - lr * 0.1;
                m[i] = 0.9 * m[i] + 0.1 * gi;
                v[i] = 0.95 * v[i] + 0.05 * gi * gi;
                let mh = m[i] / (1.0 - 0.9f64.powi(t));
                let vh = v[i] / (1.0 - 0.95f64.powi(t));
                w[i] -= lr * mh / (vh.sqrt() + 1e-12);
            }
            close(&vals(&p), &w);
        }
    }

    #[test]
    fn frozen_params_do_not_move_and_bad_settings_error() {
        let mut p = param(&W, 1.0);
        p[0].trainable = false;
        p[0].tensor = p[0].tensor.detach().set_requires_grad(false);
        let mut opt = Optimizer::new(&OptimConfig::default(), 0.1, &p).unwrap();
        let c = Tensor::from_slice(&C).to_device(Device::Cpu);
        let extra = Tensor::from_slice(&[1.0f64]).set_requires_grad(true);
        opt.step(&p, &mut || (&p[0].tensor - &c).square().sum(Kind::Double) * &extra).unwrap();
        assert!(opt.last_gradients()[0].is_none());
        close(&vals(&p), &W);
        assert!(Optimizer::new(&OptimConfig::default(), -1.0, &p).is_err());
        assert!(Optimizer::new(&OptimConfig { momentum: 1.5, ..OptimConfig::default() }, 0.1, &p).is_err());
        assert!("lion".parse::<OptimizerKind>().is_err());
    }
}
