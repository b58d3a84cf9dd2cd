//! Models whose every parameter knows its layer role, and whose forward pass can report, for
//! every weight acting linearly on its input, that input and output (tch has no forward
//! hooks, so models record them explicitly). The RCC monitor is written against [`Model`] and
//! [`Trace`] only, so it sees MLPs and transformers alike.
use serde::{Deserialize, Serialize};
use tch::{Device, Tensor};

use crate::param::{OptimizerFamily, ParamKind, Role};

pub mod mlp;
pub use mlp::{Activation, Freeze, Mlp, MlpConfig, Norm, ParamShape};

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
            LinearOp::Dense { multiplier } => {
                let y = x.linear::<&Tensor>(w, None);
                if multiplier == 1.0 {
                    y
                } else {
                    y * multiplier
                }
            }
            LinearOp::Diagonal => x * w,
            LinearOp::Bias => x.ones_like() * w,
        }
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

/// What a traced forward pass records.
#[derive(Debug)]
pub struct Trace {
    /// In forward order.
    pub sites: Vec<Site>,
    /// Post-activations of hidden layers `x^l` (for sparsity and cosine metrics).
    pub activations: Vec<Tensor>,
    /// The network output (logits).
    pub logits: Tensor,
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
    fn forward_trace(&self, x: &Tensor) -> Trace;

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
