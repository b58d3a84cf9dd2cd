//! The multilayer perceptron of the paper: `L+1` layers of width `n`,
//!
//! ```text
//! h^1 = a_1 W^1 xi,   x^l = phi(N(h^l)),   h^{l+1} = a_{l+1} W^{l+1} x^l,   f = a_{L+1} W^{L+1} x^L
//! ```
//!
//! with weight multipliers `a_l`, optional normalisation `N` (RMSNorm or LayerNorm) after
//! hidden layers, optional biases and an optional LayerNorm on the logits. `W^1` is
//! input-like, `W^2..W^L` hidden-like, `W^{L+1}` output-like; biases and norm gains are
//! input-like. Initialisation, multipliers and learning-rate factors come from a
//! [`Parameterization`]; random draws from the seeded ChaCha stream of [`crate::rng`].
use serde::{Deserialize, Serialize};
use strum::{EnumIter, IntoEnumIterator};
use tch::{Device, Tensor};

use super::{Affine, Core, Linear, Network, ParamBuilder, ParamShape, Trace};
use crate::kernels::ops;
use crate::loss::Loss;
use crate::optim::LowRankStep;
use crate::param::{Parameterization, Role};
use crate::{Error, Result};

/// What [`Mlp::manual_sgd_step`] returns: the loss before the update, one gradient per
/// parameter (the biases'; `None` for the weights and frozen parameters) and one
/// [`LowRankStep`] per parameter (the trained weights').
pub type FusedStep = (Tensor, Vec<Option<Tensor>>, Vec<Option<LowRankStep>>);

/// Nonlinearity `phi` between layers, with its derivative for the hand-written backward pass.
///
/// Adding one: a variant here (its serde name is the kebab-case of the variant), an arm in
/// [`Activation::forward`] and in [`Activation::derivative`] (the compiler asks for both),
/// and nothing else: [`Activation::all`] enumerates the variants (strum's `EnumIter`), and
/// the test of the hand-written backward against autograd runs on each. `derivative` may return
/// `None`: the MLP then trains by autograd ([`Mlp::supports_manual_backward`] is false, and
/// the training loop says so once on stderr, see [`crate::train::StepPath`]). The
/// initialisation's gain is the parameterization's (He's `c_phi = 2` for ReLU in the
/// built-ins; see [`crate::param::Scale::he`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, EnumIter)]
#[serde(rename_all = "kebab-case")]
pub enum Activation {
    /// `max(h, 0)`.
    #[default]
    Relu,
    /// `h`: linear networks (appendix F.5.2).
    Identity,
    /// `tanh(h)`.
    Tanh,
    /// `h Phi(h)` with `Phi` the standard normal CDF (exact, not the tanh approximation; the
    /// GPT's MLP uses the same function).
    Gelu,
}

/// How the hand-written backward pass turns `dL/dx` into `dL/dh` through `x = phi(h)`: a
/// function of the gradient and of what the forward pass keeps, the output `x` or the
/// pre-activation `h`.
#[derive(Clone, Copy, Debug)]
pub enum Derivative {
    /// `(dL/dx, x) -> dL/dh`, with `phi'` written in terms of the output (ReLU: `1[x > 0]`,
    /// tanh: `1 - x^2`); the forward pass keeps only the post-activations.
    FromOutput(fn(&Tensor, &Tensor) -> Tensor),
    /// `(dL/dx, h) -> dL/dh`, with `phi'` written in terms of the pre-activation (GELU); the
    /// forward pass also keeps the pre-activations.
    FromInput(fn(&Tensor, &Tensor) -> Tensor),
}

impl Activation {
    /// Every variant, in declaration order (derived: none can be left out).
    pub fn all() -> impl Iterator<Item = Activation> {
        <Activation as IntoEnumIterator>::iter()
    }

    /// `phi(h)`, elementwise, through operations autograd differentiates.
    pub fn forward(self, h: &Tensor) -> Tensor {
        match self {
            Activation::Relu => h.relu(),
            Activation::Identity => h.shallow_clone(),
            Activation::Tanh => h.tanh(),
            Activation::Gelu => h.gelu("none"),
        }
    }

    /// `phi'` for the hand-written backward pass ([`Mlp::manual_gradients`]), written out in
    /// closed form (tested against autograd), or `None` when there is none (then the MLP
    /// trains by autograd).
    pub fn derivative(self) -> Option<Derivative> {
        use Derivative::{FromInput, FromOutput};
        Some(match self {
            // threshold_backward(self = x, grad): grad where x > 0, else 0
            Activation::Relu => FromOutput(|g, x| x.threshold_backward(g, 0.0)),
            Activation::Identity => FromOutput(|g, _| g.shallow_clone()),
            Activation::Tanh => FromOutput(|g, x| g * (1.0 - x.square())),
            // d/dh [h Phi(h)] = Phi(h) + h phi(h), phi the standard normal density
            Activation::Gelu => FromInput(|g, h| {
                let cdf = ((h * std::f64::consts::FRAC_1_SQRT_2).erf() + 1.0) * 0.5;
                let pdf = (h.square() * -0.5).exp() * (0.5 * std::f64::consts::FRAC_2_SQRT_PI * std::f64::consts::FRAC_1_SQRT_2);
                g * (cdf + h * pdf)
            }),
        })
    }

    /// [`Activation::forward`] outside autograd, reusing `h`'s storage where the result
    /// allows (the same values).
    fn forward_owned(self, mut h: Tensor) -> Tensor {
        match self {
            Activation::Relu => {
                let _ = h.relu_();
                h
            }
            Activation::Tanh => {
                let _ = h.tanh_();
                h
            }
            _ => self.forward(&h),
        }
    }
}

/// Normalisation after each hidden layer's pre-activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Norm {
    /// `x / rms(x) * g` (gain only).
    RmsNorm,
    /// `(x - mean) / std * g + b`.
    LayerNorm,
}

/// Which layers are trained.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Freeze {
    /// Every parameter trains.
    #[default]
    None,
    /// Only the last layer trains: a random-feature model (appendix F.5.1).
    RandomFeatures,
    /// The first layer stays at its initialisation (the authors' NF-SGD/NF-ADAM).
    FirstLayer,
}

/// MLP hyper-parameters. Defaults are the paper's 8-layer MLP on 28x28 images.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MlpConfig {
    /// Input dimension (784 for MNIST-like data, 3072 for CIFAR-10, 100 for teacher data).
    pub d_in: i64,
    /// Output dimension (number of classes).
    pub d_out: i64,
    /// Width `n` of every hidden layer.
    pub width: i64,
    /// Number of weight layers `L+1` (>= 2; the paper uses 2, 3 and 8).
    pub depth: usize,
    pub activation: Activation,
    /// Biases on every layer (off by default, as in the paper's theory).
    pub bias: bool,
    /// Normalisation after hidden layers (off by default).
    pub norm: Option<Norm>,
    /// LayerNorm on the logits (appendix F.4, Fig. F.17).
    pub logit_norm: bool,
    pub freeze: Freeze,
}

impl Default for MlpConfig {
    fn default() -> Self {
        MlpConfig {
            d_in: 784,
            d_out: 10,
            width: 256,
            depth: 8,
            activation: Activation::Relu,
            bias: false,
            norm: None,
            logit_norm: false,
            freeze: Freeze::None,
        }
    }
}

impl MlpConfig {
    /// Declares every parameter of the model, in order, into `b` (the single source of the
    /// model's structure; [`MlpConfig::layout`] and [`Mlp::new`] both run it).
    pub fn declare(&self, b: &mut ParamBuilder) -> MlpLayers {
        let (n, depth) = (self.width, self.depth);
        let mut layers = MlpLayers { dense: Vec::with_capacity(depth), norms: vec![], logit_norm: None };
        for l in 0..depth {
            let last = l + 1 == depth;
            let (fan_in, fan_out, role) = match l {
                0 => (self.d_in, n, Role::InputLike),
                _ if last => (n, self.d_out, Role::OutputLike),
                _ => (n, n, Role::HiddenLike),
            };
            let trains = match self.freeze {
                Freeze::None => true,
                Freeze::RandomFeatures => last,
                Freeze::FirstLayer => l > 0,
            };
            layers.dense.push(b.trainable(trains, |b| b.linear(&format!("layers.{l}"), fan_in, fan_out, role, self.bias)));
            if let (Some(kind), false) = (self.norm, last) {
                let affine = b.trainable(self.freeze != Freeze::RandomFeatures, |b| b.affine(&format!("norms.{l}"), n, kind == Norm::LayerNorm));
                layers.norms.push(NormLayer { kind, affine });
            }
        }
        if self.logit_norm {
            layers.logit_norm = Some(NormLayer { kind: Norm::LayerNorm, affine: b.affine("logit_norm", self.d_out, true) });
        }
        layers
    }

    /// Every parameter of the model, in order, without allocating it: name, role, kind,
    /// fans and whether it trains ([`MlpConfig::declare`] as a dry run).
    pub fn layout(&self) -> Vec<ParamShape> {
        let mut b = ParamBuilder::default();
        self.declare(&mut b);
        b.into_layout()
    }

    /// Checks sizes; every error names the offending field.
    pub fn validate(&self) -> Result<()> {
        if self.width < 1 {
            return Err(Error::config(format!("model.width must be >= 1, got {}", self.width)));
        }
        if self.d_in < 1 || self.d_out < 1 {
            return Err(Error::config(format!(
                "model.d_in and model.d_out must be >= 1, got {} and {}",
                self.d_in, self.d_out
            )));
        }
        if self.depth < 2 {
            return Err(Error::config(format!(
                "model.depth (number of weight layers L+1) must be >= 2, got {}",
                self.depth
            )));
        }
        crate::limits::check_depth("model.depth", self.depth)
    }

    /// Number of parameters (trainable and frozen), in floating point so that absurd widths
    /// do not overflow (call [`MlpConfig::validate`] first: the depth bounds the work).
    pub fn num_params_f64(&self) -> f64 {
        self.layout().iter().map(|p| p.fan_in as f64 * p.fan_out as f64).sum()
    }
}

/// A normalisation layer: its kind and its affine part.
#[derive(Debug)]
pub struct NormLayer {
    kind: Norm,
    affine: Affine,
}

/// The MLP's layers as declared ([`MlpConfig::declare`]): handles to their parameters.
#[derive(Debug)]
pub struct MlpLayers {
    dense: Vec<Linear>,
    /// One per hidden layer when `cfg.norm` is set.
    norms: Vec<NormLayer>,
    logit_norm: Option<NormLayer>,
}

/// The MLP. Build with [`Mlp::new`].
#[derive(Debug)]
pub struct Mlp {
    cfg: MlpConfig,
    core: Core,
    layers: Vec<Linear>,
    /// One per hidden layer when `cfg.norm` is set.
    norms: Vec<NormLayer>,
    logit_norm: Option<NormLayer>,
}

const NORM_EPS: f64 = 1e-5;

impl Mlp {
    /// Builds and initialises an MLP under `param`, drawing weights from the seeded stream
    /// `(seed, INIT)` in the order of [`MlpConfig::layout`].
    pub fn new(cfg: &MlpConfig, param: &Parameterization, seed: u64, device: Device) -> Result<Self> {
        cfg.validate()?;
        param.validate()?;
        let mut b = ParamBuilder::default();
        let MlpLayers { dense, norms, logit_norm } = cfg.declare(&mut b);
        let core = Core { params: b.build(param, cfg.width, seed, device)?, width: cfg.width, device };
        Ok(Mlp { cfg: cfg.clone(), core, layers: dense, norms, logit_norm })
    }

    /// The same model with every parameter converted to `kind` (e.g. `Kind::Double` for
    /// checks against closed forms in f64; initial values are the f32 draws, cast).
    pub fn to_kind(mut self, kind: tch::Kind) -> Self {
        self.core.to_kind(kind);
        self
    }

    /// The configuration the model was built from.
    pub fn config(&self) -> &MlpConfig {
        &self.cfg
    }

    /// Whether [`Mlp::manual_gradients`] covers this model: every MLP without normalisation
    /// layers whose activation has a hand-written derivative ([`Activation::derivative`]; any
    /// depth, biases, multipliers, freeze mode).
    pub fn supports_manual_backward(&self) -> bool {
        self.manual_backward_refusal().is_none()
    }

    /// Why [`Mlp::manual_gradients`] does not cover this model, if it does not (for the
    /// training loop's note on the path it takes).
    pub fn manual_backward_refusal(&self) -> Option<String> {
        if !self.norms.is_empty() || self.logit_norm.is_some() {
            return Some("the hand-written backward pass has no normalisation layers".into());
        }
        if self.cfg.activation.derivative().is_none() {
            return Some(format!("activation {:?} has no hand-written derivative", self.cfg.activation));
        }
        None
    }

    /// The loss on `(x, y)` and its gradient with respect to every parameter (`None` for
    /// frozen ones), by a hand-written forward and backward pass instead of autograd; `None`
    /// when the model has normalisation layers (then use [`crate::optim::gradients`]).
    ///
    /// The same numbers as autograd up to rounding (unit-tested against it for every
    /// supported configuration), with no graph, fewer kernels and no gradient work for
    /// frozen layers or the data: with `g = dL/dh^{l}` of layer `l` (`h = a x W^T + b`),
    /// `dW = a g^T x`, `db = sum_batch g`, `dx = a g W`, then through the activation by its
    /// [`Activation::derivative`] (ReLU: `threshold_backward` on the post-activation); the
    /// logits' gradient comes from [`Loss::value_and_grad`]. `None` also when the activation
    /// has no hand-written derivative.
    ///
    /// # Shapes
    /// `x: [batch, d_in]`, `y: [batch]` int64 -> (loss, one gradient per parameter, shaped
    /// like it).
    pub fn manual_gradients(&self, x: &Tensor, y: &Tensor, loss: &Loss) -> Option<(Tensor, Vec<Option<Tensor>>)> {
        self.manual_backward(x, y, loss, None).map(|(value, grads, _)| (value, grads))
    }

    /// One plain SGD step `p <- p - lr_p dL/dp` fused into the hand-written backward of
    /// [`Mlp::manual_gradients`]: each weight's gradient is accumulated straight into the
    /// weight by one matrix product (`W += (-lr a g)^T x`, after `dx` has used the old `W`),
    /// so no gradient tensor is allocated and no separate update pass reads the weights.
    /// `lrs` holds one learning rate per parameter (as [`crate::optim::Optimizer::param_lrs`];
    /// frozen parameters are skipped). Returns the loss before the update, or `None` (and
    /// changes nothing) when the model has normalisation layers.
    ///
    /// Also returns what the step leaves for a monitor, one entry per parameter: the
    /// biases' gradients (the weights' are `None`) and each trained weight's step in its
    /// low-rank form [`LowRankStep`] (`delta W = -lr g^T x`; the factors are tensors the pass
    /// computes anyway).
    pub fn manual_sgd_step(&self, x: &Tensor, y: &Tensor, loss: &Loss, lrs: &[f64]) -> Option<FusedStep> {
        assert_eq!(lrs.len(), self.core.params.len(), "one learning rate per parameter");
        self.manual_backward(x, y, loss, Some(lrs))
    }

    /// The backward pass of [`Mlp::manual_gradients`]; with `sgd_lrs`, applies the SGD
    /// update in place instead of returning the weights' gradients ([`Mlp::manual_sgd_step`]).
    fn manual_backward(&self, x: &Tensor, y: &Tensor, loss: &Loss, sgd_lrs: Option<&[f64]>) -> Option<FusedStep> {
        if !self.supports_manual_backward() {
            return None;
        }
        let params = &self.core.params;
        let activation = self.cfg.activation;
        let derivative = activation.derivative()?;
        let depth = self.layers.len();
        Some(tch::no_grad(|| {
            // inputs[l]: the input of layer l (the data, then post-activations); pre[l]: its
            // pre-activation, kept only when the derivative is written in terms of it
            let mut inputs: Vec<Tensor> = Vec::with_capacity(depth);
            let mut pre: Vec<Option<Tensor>> = Vec::with_capacity(depth);
            let mut h = x.shallow_clone();
            let mut h_pre = None;
            for (l, layer) in self.layers.iter().enumerate() {
                let mut out = ops::linear(&h, &params[layer.weight].tensor, None, params[layer.weight].multiplier); // [batch, fan_out]
                if let Some(b) = layer.bias {
                    out += &params[b].tensor;
                }
                inputs.push(h);
                pre.push(h_pre.take());
                if l + 1 < depth {
                    if let Derivative::FromInput(_) = derivative {
                        h_pre = Some(out.shallow_clone());
                    }
                    out = activation.forward_owned(out);
                }
                h = out;
            }
            let (value, mut g) = loss.value_and_grad(&h, y); // g: [batch, d_out]
            // No gradient needs to flow below the lowest trainable layer.
            let lowest = self.layers.iter().position(|d| {
                params[d.weight].trainable || d.bias.is_some_and(|b| params[b].trainable)
            });
            let mut grads: Vec<Option<Tensor>> = params.iter().map(|_| None).collect();
            let mut low_rank: Vec<Option<LowRankStep>> = params.iter().map(|_| None).collect();
            // With fused SGD, layer l's weight update (W += -lr g^T x) waits until layer l-1's
            // input gradient is computed, and the two products then run side by side
            // (ops::gemm_pair). `pending` is that weight's index; its step is in `low_rank`.
            let mut pending: Option<usize> = None;
            // (W, g^T, x, -lr) of a pending update
            let update = |low_rank: &[Option<LowRankStep>], p: usize| {
                low_rank[p].as_ref().map(|s| (params[p].tensor.shallow_clone(), s.g.tr(), s.x.shallow_clone(), -s.lr))
            };
            for l in (0..depth).rev() {
                let Some(lowest) = lowest.filter(|&low| l >= low) else { break };
                let layer = &self.layers[l];
                if let Some(b) = layer.bias.filter(|&b| params[b].trainable) {
                    let db = g.sum_dim_intlist(&[0i64][..], false, g.kind()); // [fan_out]
                    if let Some(lrs) = sgd_lrs {
                        let mut bias = params[b].tensor.shallow_clone();
                        bias += &db * -lrs[b];
                    }
                    grads[b] = Some(db);
                }
                let multiplier = params[layer.weight].multiplier;
                if multiplier != 1.0 {
                    g *= multiplier;
                }
                let w = &params[layer.weight].tensor;
                // the input gradient uses W before its update
                let dx = (l > lowest).then(|| Tensor::empty([g.size()[0], w.size()[1]], (g.kind(), g.device()))); // [batch, fan_in]
                match (&dx, pending.take().and_then(|p| update(&low_rank, p))) {
                    (Some(dx), Some((pw, pgt, px, a))) => ops::gemm_pair((dx, &g, w, 1.0, 0.0), (&pw, &pgt, &px, a, 1.0)),
                    (Some(dx), None) => ops::gemm_into(dx, &g, w, 1.0, 0.0),
                    (None, Some((pw, pgt, px, a))) => ops::gemm_into(&pw, &pgt, &px, a, 1.0),
                    (None, None) => {}
                }
                if params[layer.weight].trainable {
                    match sgd_lrs {
                        Some(lrs) => {
                            low_rank[layer.weight] = Some(LowRankStep { lr: lrs[layer.weight], g: g.shallow_clone(), x: inputs[l].shallow_clone() });
                            pending = Some(layer.weight);
                        }
                        None => grads[layer.weight] = Some(ops::mm(&g.tr(), &inputs[l], 1.0)), // [fan_out, fan_in]
                    }
                }
                if let Some(dx) = dx {
                    g = match derivative {
                        Derivative::FromOutput(d) => d(&dx, &inputs[l]),
                        Derivative::FromInput(d) => d(&dx, pre[l].as_ref().expect("kept for every hidden layer")),
                    };
                }
            }
            if let Some((pw, pgt, px, a)) = pending.and_then(|p| update(&low_rank, p)) {
                ops::gemm_into(&pw, &pgt, &px, a, 1.0);
            }
            (value, grads, low_rank)
        }))
    }

    fn dense(&self, layer: Linear, x: &Tensor, rec: Option<&mut Trace>) -> Tensor {
        super::dense(&self.core.params, layer, x, rec)
    }

    fn norm(&self, norm: &NormLayer, x: &Tensor, rec: Option<&mut Trace>) -> Tensor {
        let dims: &[i64] = &[-1];
        let z = match norm.kind {
            Norm::RmsNorm => x / (x.square().mean_dim(dims, true, None) + NORM_EPS).sqrt(),
            Norm::LayerNorm => {
                let centred = x - x.mean_dim(dims, true, None);
                let var = centred.square().mean_dim(dims, true, None);
                centred / (var + NORM_EPS).sqrt()
            }
        };
        super::affine(&self.core.params, norm.affine, &z, rec)
    }
}

impl Network for Mlp {
    fn core(&self) -> &Core {
        &self.core
    }
    /// The forward pass; records sites when `rec` is given.
    ///
    /// # Shapes
    /// `x: [batch, d_in]` -> logits `[batch, d_out]`.
    fn run(&self, x: &Tensor, mut rec: Option<&mut Trace>) -> Tensor {
        let mut h = x.shallow_clone(); // [batch, d_in]
        let depth = self.layers.len();
        for (l, layer) in self.layers.iter().enumerate() {
            h = self.dense(*layer, &h, rec.as_deref_mut()); // [batch, fan_out]
            if l + 1 < depth {
                if let Some(norm) = self.norms.get(l) {
                    h = self.norm(norm, &h, rec.as_deref_mut()); // [batch, n]
                }
                h = self.cfg.activation.forward(&h);
                if let Some(r) = rec.as_deref_mut() {
                    r.activations.push(h.shallow_clone());
                }
            }
        }
        if let Some(norm) = &self.logit_norm {
            h = self.norm(norm, &h, rec.as_deref_mut()); // [batch, d_out]
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::param::ParamKind;
    use crate::model::Model;
    use tch::Kind;

    fn small(depth: usize, width: i64) -> MlpConfig {
        MlpConfig { d_in: 5, d_out: 3, width, depth, ..MlpConfig::default() }
    }

    #[test]
    fn roles_shapes_and_init_std() {
        let cfg = MlpConfig { width: 512, depth: 4, ..MlpConfig::default() };
        let m = Mlp::new(&cfg, &Parameterization::sp(), 0, Device::Cpu).unwrap();
        let p = m.params();
        assert_eq!(p.len(), 4);
        let roles: Vec<Role> = p.iter().map(|p| p.role).collect();
        assert_eq!(roles, [Role::InputLike, Role::HiddenLike, Role::HiddenLike, Role::OutputLike]);
        assert_eq!(p[0].tensor.size(), [512, 784]);
        assert_eq!(p[3].tensor.size(), [10, 512]);
        let std = p[1].tensor.std(true).double_value(&[]);
        assert!((std / (2.0f64 / 512.0).sqrt() - 1.0).abs() < 0.01, "{std}");
        let x = Tensor::randn([7, 784], (Kind::Float, Device::Cpu));
        assert_eq!(m.forward(&x).size(), [7, 10]);
    }

    #[test]
    fn bias_and_norm_params_are_input_like() {
        let cfg = MlpConfig { bias: true, norm: Some(Norm::LayerNorm), logit_norm: true, ..small(3, 8) };
        let m = Mlp::new(&cfg, &Parameterization::mup(), 0, Device::Cpu).unwrap();
        for p in m.params() {
            if p.kind != ParamKind::Weight {
                assert_eq!(p.role, Role::InputLike, "{}", p.name);
            }
        }
        // 3 weights + 3 biases + 2 x (gain, bias) + logit (gain, bias)
        assert_eq!(m.params().len(), 3 + 3 + 4 + 2);
        let t = m.forward_trace(&Tensor::randn([4, 5], (Kind::Float, Device::Cpu)));
        assert_eq!(t.sites.len(), m.params().len());
        assert_eq!(t.activations.len(), 2);
    }

    #[test]
    fn trace_sites_reproduce_outputs() {
        let cfg = MlpConfig { norm: Some(Norm::RmsNorm), ..small(3, 16) };
        let m = Mlp::new(&cfg, &Parameterization::mup_mult(), 1, Device::Cpu).unwrap();
        let x = Tensor::randn([6, 5], (Kind::Float, Device::Cpu));
        let t = m.forward_trace(&x);
        assert!(t.logits.allclose(&m.forward(&x), 1e-6, 1e-6, false));
        for s in &t.sites {
            let y = s.op.apply(&m.params()[s.param].tensor, &s.input);
            assert!(y.allclose(&s.output, 1e-6, 1e-6, false), "{}", s.name);
        }
        // the first site's input is the data itself
        assert!(t.sites[0].input.equal(&x));
    }

    #[test]
    fn freeze_modes() {
        let rf = Mlp::new(&MlpConfig { freeze: Freeze::RandomFeatures, ..small(3, 8) }, &Parameterization::sp(), 0, Device::Cpu).unwrap();
        let tr: Vec<bool> = rf.params().iter().map(|p| p.trainable).collect();
        assert_eq!(tr, [false, false, true]);
        assert!(!rf.params()[0].tensor.requires_grad());
        let nf = Mlp::new(&MlpConfig { freeze: Freeze::FirstLayer, ..small(3, 8) }, &Parameterization::sp(), 0, Device::Cpu).unwrap();
        let tr: Vec<bool> = nf.params().iter().map(|p| p.trainable).collect();
        assert_eq!(tr, [false, true, true]);
    }

    #[test]
    fn same_seed_same_weights() {
        let a = Mlp::new(&small(3, 32), &Parameterization::sp(), 42, Device::Cpu).unwrap();
        let b = Mlp::new(&small(3, 32), &Parameterization::sp(), 42, Device::Cpu).unwrap();
        let c = Mlp::new(&small(3, 32), &Parameterization::sp(), 43, Device::Cpu).unwrap();
        for (p, q) in a.params().iter().zip(b.params()) {
            assert!(p.tensor.equal(&q.tensor));
        }
        assert!(!a.params()[0].tensor.equal(&c.params()[0].tensor));
    }

    #[test]
    fn zero_readout_and_identity_activation() {
        let p = Parameterization::builtin("sp-llzero").unwrap();
        let cfg = MlpConfig { activation: Activation::Identity, ..small(2, 8) };
        let m = Mlp::new(&cfg, &p, 0, Device::Cpu).unwrap();
        let x = Tensor::randn([3, 5], (Kind::Float, Device::Cpu));
        assert_eq!(m.forward(&x).abs().sum(Kind::Float).double_value(&[]), 0.0);
        // linear network: forward is W2 W1 x
        let m = Mlp::new(&cfg, &Parameterization::sp(), 0, Device::Cpu).unwrap();
        let w = m.params()[1].tensor.matmul(&m.params()[0].tensor);
        assert!(m.forward(&x).allclose(&x.matmul(&w.tr()), 1e-5, 1e-5, false));
    }

    /// `||a - b|| / ||b||` (0 when both vanish).
    fn rel_err(a: &Tensor, b: &Tensor) -> f64 {
        let d = (a - b).norm().double_value(&[]);
        let n = b.norm().double_value(&[]);
        if n == 0.0 {
            d
        } else {
            d / n
        }
    }

    #[test]
    fn manual_gradients_match_autograd_for_every_supported_model() {
        use crate::loss::LossKind;
        let params = ["sp", "mup-mult", "ntp", "sp-llzero"];
        let mut checked = 0;
        let configs = [(2, false, Freeze::None), (4, false, Freeze::None), (4, true, Freeze::None), (3, true, Freeze::FirstLayer), (4, false, Freeze::FirstLayer), (4, true, Freeze::RandomFeatures)];
        // every activation (none can be missing: Activation::all is derived), every config
        for (activation, (depth, bias, freeze)) in Activation::all().flat_map(|a| configs.map(|c| (a, c))) {
            for (i, name) in params.iter().enumerate() {
                let p = Parameterization::builtin(name).unwrap();
                let cfg = MlpConfig { d_in: 6, d_out: 4, width: 16, depth, activation, bias, freeze, ..MlpConfig::default() };
                let x = crate::rng::normal(&[9, 6], 1.0, &mut crate::rng::rng(i as u64, 7), Device::Cpu);
                let y = Tensor::from_slice(&[0i64, 3, 1, 2, 3, 0, 1, 1, 2]);
                if activation.derivative().is_none() {
                    // no hand-written derivative: refused, never approximated
                    let m = Mlp::new(&cfg, &p, i as u64, Device::Cpu).unwrap();
                    assert!(!m.supports_manual_backward() && m.manual_gradients(&x, &y, &Loss::default()).is_none(), "{activation:?}");
                    continue;
                }
                for kind in [LossKind::Ce, LossKind::Mse, LossKind::MseSoftmax] {
                    let loss = Loss { kind, z_loss: if i % 2 == 0 { 0.0 } else { 0.1 } };
                    for (dtype, tol) in [(Kind::Float, 1e-5), (Kind::Double, 1e-12)] {
                        let m = Mlp::new(&cfg, &p, i as u64, Device::Cpu).unwrap().to_kind(dtype);
                        let x = x.to_kind(dtype);
                        let (want_loss, want) = crate::optim::gradients(m.params(), &mut || loss.compute(&m.forward(&x), &y)).unwrap();
                        let (got_loss, got) = m.manual_gradients(&x, &y, &loss).expect("supported");
                        // the fused SGD step moves every parameter by -lr_p times that gradient
                        let lrs: Vec<f64> = (0..got.len()).map(|k| 0.1 * (k + 1) as f64).collect();
                        let before = m.snapshot();
                        let (fused_loss, fused_grads, low_rank) = m.manual_sgd_step(&x, &y, &loss, &lrs).expect("supported");
                        assert!(fused_loss.equal(&got_loss), "{name}: loss before the update");
                        // what the fused step leaves: the biases' gradients, the weights' factors
                        for (k, q) in m.params().iter().enumerate() {
                            let is_weight = q.tensor.dim() == 2;
                            match (&got[k], &fused_grads[k], &low_rank[k]) {
                                (Some(g), None, Some(f)) if is_weight => {
                                    assert_eq!(f.lr, lrs[k]);
                                    assert!(rel_err(&f.g.tr().matmul(&f.x), g) <= tol, "{name} {}: g^T x", q.name);
                                }
                                (Some(g), Some(fg), None) if !is_weight => assert!(rel_err(fg, g) <= tol, "{name} {}", q.name),
                                (None, None, None) => {}
                                _ => panic!("{name} {}: fused step left the wrong things", q.name),
                            }
                        }
                        for (k, (q, w0)) in m.params().iter().zip(&before).enumerate() {
                            let want = match &got[k] {
                                Some(g) => w0 - g * lrs[k],
                                None => w0.shallow_clone(),
                            };
                            // in f64 compare the updates themselves; in f32 the weights
                            let err = match dtype {
                                Kind::Double => rel_err(&(&q.tensor - w0), &(&want - w0)),
                                _ => rel_err(&q.tensor, &want),
                            };
                            assert!(err <= 1e-6, "fused {name} {kind} {dtype:?} {}: {err}", q.name);
                        }
                        m.load_snapshot(&before);
                        let what = format!("{name} depth {depth} {activation:?} bias {bias} {freeze:?} {kind} {dtype:?}");
                        assert!((got_loss.double_value(&[]) - want_loss).abs() <= tol * want_loss.abs().max(1.0), "{what}");
                        assert_eq!(got.len(), want.len());
                        for ((g, w), q) in got.iter().zip(&want).zip(m.params()) {
                            match (g, w) {
                                (Some(g), Some(w)) => {
                                    assert_eq!(g.size(), q.tensor.size());
                                    assert!(rel_err(g, w) <= tol, "{what} {}: {}", q.name, rel_err(g, w));
                                    checked += 1;
                                }
                                (None, None) => assert!(!q.trainable),
                                _ => panic!("{what} {}: gradient presence differs", q.name),
                            }
                        }
                    }
                }
            }
        }
        assert!(checked > 500 * Activation::all().filter(|a| a.derivative().is_some()).count(), "{checked}");
        // normalisation layers: not covered, the caller falls back to autograd
        let m = Mlp::new(&MlpConfig { norm: Some(Norm::RmsNorm), ..small(3, 8) }, &Parameterization::sp(), 0, Device::Cpu).unwrap();
        assert!(!m.supports_manual_backward());
        assert!(m.manual_backward_refusal().unwrap().contains("normalisation"));
        let x = Tensor::randn([2, 5], (Kind::Float, Device::Cpu));
        assert!(m.manual_gradients(&x, &Tensor::from_slice(&[0i64, 1]), &Loss::default()).is_none());
    }

    #[test]
    fn every_derivative_matches_autograd_and_its_closed_form() {
        // pre-activations over the interesting range, in f64: -4..4 and 0 exactly
        let h = Tensor::linspace(-4.0, 4.0, 81, (Kind::Double, Device::Cpu));
        let upstream = Tensor::linspace(0.5, 1.5, 81, (Kind::Double, Device::Cpu)); // dL/dx
        for a in Activation::all() {
            let Some(derivative) = a.derivative() else { continue };
            let hv = h.detach().set_requires_grad(true);
            let x = a.forward(&hv);
            // autograd: d/dh sum(upstream * phi(h))
            let want = Tensor::run_backward(&[(&x * &upstream).sum(Kind::Double)], &[&hv], false, false).remove(0);
            let got = match derivative {
                Derivative::FromOutput(d) => d(&upstream, &x.detach()),
                Derivative::FromInput(d) => d(&upstream, &h),
            };
            assert!(rel_err(&got, &want) < 1e-12, "{a:?}: {}", rel_err(&got, &want));
            // phi'(h) by hand at h = -1, 0 (ReLU: 0 there, as libtorch's mask) and 1
            let phi_prime = |v: f64| {
                let (at, one) = (Tensor::from_slice(&[v]), Tensor::from_slice(&[1.0f64]));
                match derivative {
                    Derivative::FromOutput(d) => d(&one, &a.forward(&at)),
                    Derivative::FromInput(d) => d(&one, &at),
                }
                .double_value(&[0])
            };
            let normal_pdf = |v: f64| (-v * v / 2.0).exp() / (2.0 * std::f64::consts::PI).sqrt();
            let expected: [f64; 3] = match a {
                Activation::Relu => [0.0, 0.0, 1.0],
                Activation::Identity => [1.0; 3],
                Activation::Tanh => [-1.0f64, 0.0, 1.0].map(|v| 1.0 / v.cosh().powi(2)),
                // Phi(+-1) = 0.5 (1 +- erf(1/sqrt 2)), erf(1/sqrt 2) = 0.682689492137086 (68-95-99.7)
                Activation::Gelu => [0.5 * (1.0 - 0.682689492137086) - normal_pdf(1.0), 0.5, 0.5 * (1.0 + 0.682689492137086) + normal_pdf(1.0)],
            };
            for (v, e) in [-1.0, 0.0, 1.0].into_iter().zip(expected) {
                assert!((phi_prime(v) - e).abs() < 1e-12, "{a:?}'({v}) = {} vs {e}", phi_prime(v));
            }
        }
    }

    #[test]
    fn activations_keep_their_config_names() {
        // configs written before tanh and gelu existed still load; every name round-trips
        for (name, a) in [("relu", Activation::Relu), ("identity", Activation::Identity), ("tanh", Activation::Tanh), ("gelu", Activation::Gelu)] {
            let cfg: MlpConfig = toml::from_str(&format!("activation = \"{name}\"")).unwrap();
            assert_eq!(cfg.activation, a);
            assert_eq!(toml::to_string(&cfg).unwrap().lines().find(|l| l.starts_with("activation")), Some(format!("activation = \"{name}\"").as_str()));
        }
        assert_eq!(Activation::all().count(), 4);
        let e = toml::from_str::<MlpConfig>("activation = \"swish\"").unwrap_err().to_string();
        assert!(e.contains("relu") && e.contains("gelu"), "{e}");
    }

    #[test]
    fn bad_configs_are_errors() {
        let p = Parameterization::sp();
        for cfg in [
            MlpConfig { width: 0, ..MlpConfig::default() },
            MlpConfig { depth: 1, ..MlpConfig::default() },
            MlpConfig { d_out: 0, ..MlpConfig::default() },
        ] {
            let e = Mlp::new(&cfg, &p, 0, Device::Cpu).unwrap_err();
            assert!(matches!(e, Error::InvalidConfig(_)), "{e}");
        }
        let e = Mlp::new(&MlpConfig { width: 0, ..MlpConfig::default() }, &p, 0, Device::Cpu).unwrap_err();
        assert!(e.to_string().contains("model.width"), "{e}");
    }
}
