//! Models whose every parameter knows its layer role, and whose forward pass can report, for
//! every weight acting linearly on its input, that input and output (tch has no forward
//! hooks, so models record them explicitly). The RCC monitor is written against [`Model`] and
//! [`Trace`] only, so it sees MLPs and transformers alike.
//!
//! A model declares its parameters once into a [`ParamBuilder`] (name, role, fans; typed
//! handles back), keeps them in a [`Core`] and implements [`Network`] (its core and one
//! forward pass that records sites when traced); every `Network` is a [`Model`].
use serde::{Deserialize, Serialize};
use tch::{Device, Tensor};

use crate::kernels::ops;
use crate::param::{Fans, OptimizerFamily, ParamKind, Parameterization, Role};
use crate::rng::{self, stream};

pub mod gpt;
pub mod mlp;
pub use gpt::{Gpt, GptConfig};
pub use mlp::{Activation, Derivative, Freeze, Mlp, MlpConfig, Norm};

/// The static description of one parameter (see [`MlpConfig::layout`], [`GptConfig::layout`]):
/// everything the parameterization needs, before any tensor exists.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ParamShape {
    pub name: String,
    pub role: Role,
    pub kind: ParamKind,
    /// Fan-in of a weight `[fan_out, fan_in]`; 1 for biases and gains.
    pub fan_in: i64,
    pub fan_out: i64,
    pub trainable: bool,
}

/// Declares a model's parameters, each once, and hands back typed handles to them: the
/// single source of a model's structure. A model's config declares its layers into a builder
/// (`MlpConfig::declare`, `GptConfig::declare`); its `layout()` is that declaration as a dry run
/// (shapes only, nothing allocated), and its `new()` builds the parameters from the same run and
/// keeps the handles, so no parameter is ever looked up by name.
///
/// ```
/// use widthlab::model::ParamBuilder;
/// use widthlab::param::Role;
/// let mut b = ParamBuilder::default();
/// let input = b.linear("input", 784, 256, Role::InputLike, false);
/// let readout = b.trainable(false, |b| b.linear("readout", 256, 10, Role::OutputLike, true));
/// let layout = b.into_layout();
/// assert_eq!((input.weight, readout.weight, readout.bias), (0, 1, Some(2)));
/// assert_eq!((layout[1].fan_in, layout[1].fan_out, layout[1].trainable), (256, 10, false));
/// ```
#[derive(Debug)]
pub struct ParamBuilder {
    layout: Vec<ParamShape>,
    trainable: bool,
}

impl Default for ParamBuilder {
    fn default() -> Self {
        ParamBuilder { layout: vec![], trainable: true }
    }
}

/// A dense layer `a W x (+ b)`: the indices of its weight and optional bias in the model's
/// parameters (the multiplier `a` is the weight's, [`Param::multiplier`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Linear {
    pub weight: usize,
    pub bias: Option<usize>,
}

/// The affine part `g * z (+ b)` of a normalisation layer: indices of its gain and optional bias.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Affine {
    pub gain: usize,
    pub bias: Option<usize>,
}

impl ParamBuilder {
    /// Declares one parameter (trainable unless declared inside [`ParamBuilder::trainable`]
    /// with `false`); returns its index.
    pub fn param(&mut self, name: impl Into<String>, role: Role, kind: ParamKind, fan_in: i64, fan_out: i64) -> usize {
        let trainable = self.trainable;
        self.layout.push(ParamShape { name: name.into(), role, kind, fan_in, fan_out, trainable });
        self.layout.len() - 1
    }

    /// A dense weight `{name}.weight: [fan_out, fan_in]` of `role` and, if `bias`, its bias
    /// `{name}.bias` (input-like: its input is the constant 1).
    pub fn linear(&mut self, name: &str, fan_in: i64, fan_out: i64, role: Role, bias: bool) -> Linear {
        let weight = self.param(format!("{name}.weight"), role, ParamKind::Weight, fan_in, fan_out);
        let bias = bias.then(|| self.param(format!("{name}.bias"), Role::InputLike, ParamKind::Bias, 1, fan_out));
        Linear { weight, bias }
    }

    /// A normalisation layer's gain `{name}.gain` over `len` coordinates (initialised to 1)
    /// and, if `bias`, its bias `{name}.bias`; both input-like.
    pub fn affine(&mut self, name: &str, len: i64, bias: bool) -> Affine {
        let gain = self.param(format!("{name}.gain"), Role::InputLike, ParamKind::NormGain, 1, len);
        let bias = bias.then(|| self.param(format!("{name}.bias"), Role::InputLike, ParamKind::Bias, 1, len));
        Affine { gain, bias }
    }

    /// Declares what `f` declares as trainable only if `trainable` (frozen otherwise: kept at
    /// its initial value, e.g. random features); nests (frozen inside stays frozen).
    pub fn trainable<R>(&mut self, trainable: bool, f: impl FnOnce(&mut Self) -> R) -> R {
        let before = self.trainable;
        self.trainable = before && trainable;
        let out = f(self);
        self.trainable = before;
        out
    }

    /// The declared parameters, in order (the order weights are drawn in).
    pub fn into_layout(self) -> Vec<ParamShape> {
        self.layout
    }

    /// Allocates and initialises the declared parameters ([`build_params`]).
    pub fn build(self, param: &Parameterization, n: i64, seed: u64, device: Device) -> crate::Result<Vec<Param>> {
        build_params(self.layout, param, n, seed, device)
    }
}

/// Allocates and initialises the parameters of a layout under `param` at width `n`: weights
/// `N(0, init_std^2)` drawn in layout order from the seeded stream `(seed, INIT)`, biases 0,
/// gains 1, with the forward multiplier and the SGD and Adam learning-rate factors of their
/// role. The model's output dimension (for rules that use it) is the fan-out of its
/// output-like weight. The one place where a model's parameters meet the parameterization's
/// rules (every model calls it). A failed allocation is an error (host memory, or libtorch's
/// on the device), not an abort.
pub fn build_params(layout: Vec<ParamShape>, param: &Parameterization, n: i64, seed: u64, device: Device) -> crate::Result<Vec<Param>> {
    let mut rng = rng::rng(seed, stream::INIT);
    let d_out = layout.iter().filter(|s| s.role == Role::OutputLike && s.kind == ParamKind::Weight).map(|s| s.fan_out).max().unwrap_or(1);
    layout
        .into_iter()
        .map(|s| {
            let fans = Fans { fan_in: s.fan_in, fan_out: s.fan_out, width: n, d_out };
            let sgd = param.resolve(s.role, s.kind, fans, OptimizerFamily::Sgd);
            let adam = param.resolve(s.role, s.kind, fans, OptimizerFamily::Adam);
            let tensor = match s.kind {
                ParamKind::Weight => rng::try_normal(&[s.fan_out, s.fan_in], sgd.init_std, &mut rng, device)?,
                ParamKind::Bias => Tensor::f_zeros([s.fan_out], (tch::Kind::Float, device))?,
                ParamKind::NormGain => Tensor::f_ones([s.fan_out], (tch::Kind::Float, device))?,
            };
            Ok(Param {
                name: s.name,
                role: s.role,
                kind: s.kind,
                fan_in: s.fan_in,
                fan_out: s.fan_out,
                tensor: tensor.set_requires_grad(s.trainable),
                trainable: s.trainable,
                multiplier: sgd.multiplier,
                lr_scale_sgd: sgd.lr_scale,
                lr_scale_adam: adam.lr_scale,
            })
        })
        .collect()
}

thread_local! {
    static TWICE_DIFFERENTIABLE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with every model's forward pass built from operations whose backward pass libtorch
/// can differentiate again (for Hessian-vector products by double backward, see
/// [`crate::sharpness`]). Most of libtorch's kernels are; the exception in widthlab's models
/// is the fused CPU attention kernel behind `scaled_dot_product_attention` (its backward has
/// no derivative), so inside this scope the GPT computes attention by libtorch's composite
/// `_scaled_dot_product_attention_math` (the same function). Applies to this thread; nests.
pub fn twice_differentiable<R>(f: impl FnOnce() -> R) -> R {
    let before = TWICE_DIFFERENTIABLE.with(|c| c.replace(true));
    let out = f();
    TWICE_DIFFERENTIABLE.with(|c| c.set(before));
    out
}

/// Whether forward passes must be twice differentiable (see [`twice_differentiable`]).
pub(crate) fn in_twice_differentiable() -> bool {
    TWICE_DIFFERENTIABLE.with(|c| c.get())
}

/// A trainable (or frozen) tensor with everything the parameterization and the monitors need.
#[derive(Debug)]
pub struct Param {
    /// Unique, stable name (`layers.0.weight`, `norms.1.gain`, ...).
    pub name: String,
    pub role: Role,
    pub kind: ParamKind,
    /// Fan-in of a weight matrix `[fan_out, fan_in]`; 1 for biases and gains.
    pub fan_in: i64,
    pub fan_out: i64,
    /// The tensor itself (`requires_grad` iff trainable).
    pub tensor: Tensor,
    pub trainable: bool,
    /// Forward multiplier `a_l` (`a_l W x`; 1 for biases and gains).
    pub multiplier: f64,
    /// Learning-rate factor under SGD-like optimizers (multiply by `eta * schedule(t)`).
    pub lr_scale_sgd: f64,
    /// Learning-rate factor under Adam-like optimizers.
    pub lr_scale_adam: f64,
}

impl Param {
    /// The learning-rate factor for an optimizer family.
    pub fn lr_scale(&self, family: OptimizerFamily) -> f64 {
        match family {
            OptimizerFamily::Sgd => self.lr_scale_sgd,
            OptimizerFamily::Adam => self.lr_scale_adam,
        }
    }
}

/// How a parameter acts linearly on its input at a [`Site`].
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum LinearOp {
    /// `y = m * x W^T` for `W: [fan_out, fan_in]`, `x: [.., fan_in]`.
    Dense { multiplier: f64 },
    /// `y = g * x` elementwise (normalisation gains).
    Diagonal,
    /// `y = b`, broadcast over the batch (its input is the constant 1).
    Bias,
}

impl LinearOp {
    /// Applies the operation with weight `w` to input `x`.
    ///
    /// # Shapes
    /// `x: [.., fan_in]` -> `[.., fan_out]`; for `Bias` the output has the shape of `x`
    /// with the last dimension replaced by `len(b)`.
    pub fn apply(&self, w: &Tensor, x: &Tensor) -> Tensor {
        match *self {
            // libtorch's linear where autograd records; outside it (evaluation, the RCC
            // monitor) the product on the path chosen for its shape (crate::kernels::dispatch)
            LinearOp::Dense { multiplier } => ops::linear(x, w, None, multiplier),
            LinearOp::Diagonal => x * w,
            LinearOp::Bias => x.ones_like() * w,
        }
    }
}

/// Records one site into a trace (if tracing).
pub fn record(params: &[Param], rec: Option<&mut Trace>, param: usize, op: LinearOp, input: &Tensor, output: &Tensor) {
    if let Some(r) = rec {
        r.sites.push(Site {
            name: params[param].name.clone(),
            param,
            op,
            input: input.shallow_clone(),
            output: output.shallow_clone(),
        });
    }
}

/// `a W x (+ b)`: a dense layer's weight (with its multiplier `a`) and optional bias, as two
/// sites.
///
/// # Shapes
/// `x: [.., fan_in]` -> `[.., fan_out]`.
pub fn dense(params: &[Param], layer: Linear, x: &Tensor, mut rec: Option<&mut Trace>) -> Tensor {
    let Linear { weight, bias } = layer;
    let multiplier = params[weight].multiplier;
    let op = LinearOp::Dense { multiplier };
    let w = &params[weight].tensor;
    if rec.is_none() {
        // (under autograd with no multiplier, weight and bias in one fused kernel)
        return ops::linear(x, w, bias.map(|b| &params[b].tensor), multiplier);
    }
    let taken = rec.as_deref_mut().and_then(|r| r.products.as_deref_mut()).and_then(|p| p.product(weight, w, multiplier, x));
    let y = taken.unwrap_or_else(|| op.apply(w, x));
    record(params, rec.as_deref_mut(), weight, op, x, &y);
    match bias {
        Some(b) => {
            let yb = LinearOp::Bias.apply(&params[b].tensor, &y);
            record(params, rec, b, LinearOp::Bias, &y.ones_like(), &yb);
            y + yb
        }
        None => y,
    }
}

/// `g * z (+ b)`: the affine part of a normalisation layer, on the normalised `z`, as two sites.
pub fn affine(params: &[Param], norm: Affine, z: &Tensor, mut rec: Option<&mut Trace>) -> Tensor {
    let Affine { gain, bias } = norm;
    let y = LinearOp::Diagonal.apply(&params[gain].tensor, z);
    record(params, rec.as_deref_mut(), gain, LinearOp::Diagonal, z, &y);
    match bias {
        Some(b) => {
            if rec.is_none() {
                return y + &params[b].tensor;
            }
            let yb = LinearOp::Bias.apply(&params[b].tensor, &y);
            record(params, rec, b, LinearOp::Bias, &y.ones_like(), &yb);
            y + yb
        }
        None => y,
    }
}

/// One weight acting on one input during a traced forward pass.
#[derive(Debug)]
pub struct Site {
    /// Name of the site (usually the parameter's name).
    pub name: String,
    /// Index into [`Model::params`].
    pub param: usize,
    pub op: LinearOp,
    /// The input `x` of the weight (for `Bias`, a tensor shaped like the output, of ones).
    pub input: Tensor,
    /// The output `op(W, x)`.
    pub output: Tensor,
}

/// Computes the products of a traced forward pass's dense sites in place of the model, so
/// that whoever traces can read each weight once for both the site's output and its own
/// measurements (the RCC monitor's fused pass, see [`crate::rcc`]).
pub trait DenseProducts {
    /// `a x W^T` for the dense weight with parameter index `param` (`w: [fan_out, fan_in]`,
    /// `x: [.., fan_in]`, `a` the multiplier), or `None` to leave it to the model.
    fn product(&mut self, param: usize, w: &Tensor, multiplier: f64, x: &Tensor) -> Option<Tensor>;
}

/// What a traced forward pass records.
pub struct Trace<'p> {
    /// In forward order.
    pub sites: Vec<Site>,
    /// Post-activations of hidden layers `x^l` (for sparsity and cosine metrics).
    pub activations: Vec<Tensor>,
    /// The network output (logits).
    pub logits: Tensor,
    /// Computes the dense sites' products, if set.
    pub products: Option<&'p mut dyn DenseProducts>,
}

impl<'p> Trace<'p> {
    /// An empty trace whose dense products `products` computes (if given).
    pub fn new(products: Option<&'p mut dyn DenseProducts>) -> Self {
        Trace { sites: vec![], activations: vec![], logits: Tensor::new(), products }
    }
}

impl std::fmt::Debug for Trace<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trace")
            .field("sites", &self.sites)
            .field("activations", &self.activations)
            .field("logits", &self.logits)
            .field("products", &self.products.is_some())
            .finish()
    }
}

/// What every widthlab model offers to the trainer and the monitors.
pub trait Model {
    /// All parameters, in a stable order.
    fn params(&self) -> &[Param];
    /// The width `n` the parameterization scales with.
    fn width(&self) -> i64;
    /// The device the parameters live on.
    fn device(&self) -> Device;
    /// Plain forward pass: logits.
    fn forward(&self, x: &Tensor) -> Tensor;
    /// Forward pass that records every [`Site`].
    fn forward_trace(&self, x: &Tensor) -> Trace<'static> {
        self.forward_trace_with(x, None)
    }
    /// [`Model::forward_trace`], with the dense sites' products computed by `products`
    /// where it takes them (see [`DenseProducts`]).
    fn forward_trace_with<'p>(&self, x: &Tensor, products: Option<&'p mut dyn DenseProducts>) -> Trace<'p>;

    /// Detached copies of all parameter values (a snapshot, not sharing storage).
    fn snapshot(&self) -> Vec<Tensor> {
        tch::no_grad(|| self.params().iter().map(|p| p.tensor.detach().copy()).collect())
    }
    /// Overwrites all parameter values from a snapshot of the same model.
    fn load_snapshot(&self, values: &[Tensor]) {
        tch::no_grad(|| {
            for (p, v) in self.params().iter().zip(values) {
                let mut t = p.tensor.shallow_clone();
                t.copy_(v);
            }
        })
    }
    /// Number of scalar parameters.
    fn num_params(&self) -> i64 {
        self.params().iter().map(|p| p.tensor.numel() as i64).sum()
    }
}

/// What every model holds: its parameters, the width its parameterization scales with, and
/// the device they live on.
#[derive(Debug)]
pub struct Core {
    pub params: Vec<Param>,
    pub width: i64,
    pub device: Device,
}

impl Core {
    /// Every parameter converted to `kind` (e.g. `Kind::Double` for checks against closed
    /// forms in f64; values are the f32 draws, cast), still requiring gradients where trainable.
    pub fn to_kind(&mut self, kind: tch::Kind) {
        for p in &mut self.params {
            let t = tch::no_grad(|| p.tensor.to_kind(kind));
            p.tensor = t.detach().set_requires_grad(p.trainable);
        }
    }
}

/// A network: its [`Core`] and a forward pass that records its sites when given a trace.
/// Every `Network` is a [`Model`] by the one implementation below (the MLP, the GPT, and a
/// model of your own, see `docs/extending.md`).
pub trait Network {
    fn core(&self) -> &Core;
    /// The forward pass: logits. With `trace`, records every [`Site`] (in forward order) and
    /// the hidden activations into it.
    fn run(&self, x: &Tensor, trace: Option<&mut Trace>) -> Tensor;
}

impl<N: Network> Model for N {
    fn params(&self) -> &[Param] {
        &self.core().params
    }
    fn width(&self) -> i64 {
        self.core().width
    }
    fn device(&self) -> Device {
        self.core().device
    }
    fn forward(&self, x: &Tensor) -> Tensor {
        self.run(x, None)
    }
    fn forward_trace_with<'p>(&self, x: &Tensor, products: Option<&'p mut dyn DenseProducts>) -> Trace<'p> {
        let mut t = Trace::new(products);
        t.logits = self.run(x, Some(&mut t));
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_allocations_of_parameters_are_errors_not_aborts() {
        let p = Parameterization::sp();
        let shape = |kind, fan_in, fan_out| ParamShape { name: "x".into(), role: Role::HiddenLike, kind, fan_in, fan_out, trainable: true };
        // the weights' draws in host memory
        let e = build_params(vec![shape(ParamKind::Weight, 1 << 26, 1 << 30)], &p, 256, 0, Device::Cpu).unwrap_err().to_string();
        assert!(e.contains("cannot allocate"), "{e}");
        // libtorch's allocator, reported on one line
        let e = build_params(vec![shape(ParamKind::Bias, 1, 1 << 60)], &p, 256, 0, Device::Cpu).unwrap_err().to_string();
        assert!(e.starts_with("libtorch: ") && !e.contains('\n'), "{e}");
        // what fits is built as before
        assert_eq!(build_params(vec![shape(ParamKind::Weight, 3, 2)], &p, 256, 0, Device::Cpu).unwrap()[0].tensor.size(), [2, 3]);
    }
}
