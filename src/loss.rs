//! Losses on logits `f: [batch, C]` and integer labels `y: [batch]`.
//!
//! # Reduction convention
//! As in PyTorch (and the authors' code): cross-entropy is averaged over the batch; both MSE
//! losses are averaged over batch *and* classes, `mean_{i,c} (g(f)_{ic} - onehot(y)_{ic})^2`
//! with `g` the identity (MSE) or the softmax (MSE on softmax, appendix F.4). Gradients with
//! respect to the logits are therefore (B = batch, C = classes, p = softmax(f), e = onehot(y)):
//! - CE: `(p - e) / B`
//! - MSE: `2 (f - e) / (B C)`
//! - MSE on softmax: `2/(B C) * J_p^T (p - e)` with `J_p = diag(p) - p p^T`, i.e.
//!   `2/(B C) * p * ((p - e) - <p, p - e>)`, which vanishes when the softmax saturates.
//!
//! The optional z-loss adds `z * mean_i logsumexp(f_i)^2`.
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// The training objective.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LossKind {
    /// Softmax cross-entropy.
    #[default]
    Ce,
    /// Squared error on one-hot targets.
    Mse,
    /// Squared error between the softmax output and one-hot targets.
    MseSoftmax,
}

impl std::str::FromStr for LossKind {
    type Err = crate::Error;
    fn from_str(s: &str) -> crate::Result<Self> {
        match s {
            "ce" | "cross-entropy" => Ok(LossKind::Ce),
            "mse" => Ok(LossKind::Mse),
            "mse-softmax" => Ok(LossKind::MseSoftmax),
            _ => Err(crate::Error::config(format!("unknown loss `{s}` (use ce, mse or mse-softmax)"))),
        }
    }
}

impl std::fmt::Display for LossKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LossKind::Ce => "ce",
            LossKind::Mse => "mse",
            LossKind::MseSoftmax => "mse-softmax",
        })
    }
}

/// A loss with its optional z-loss coefficient.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Loss {
    pub kind: LossKind,
    /// Coefficient of the z-loss `mean logsumexp(f)^2` (0 = off).
    pub z_loss: f64,
}

impl Loss {
    pub fn new(kind: LossKind) -> Self {
        Loss { kind, z_loss: 0.0 }
    }

    /// The scalar loss.
    ///
    /// # Shapes
    /// `logits: [B, C]` float, `labels: [B]` int64 -> `[]`.
    pub fn compute(&self, logits: &Tensor, labels: &Tensor) -> Tensor {
        let (c, k) = (logits.size()[1], logits.kind());
        let target = || one_hot(labels, c).to_kind(k);
        let base = match self.kind {
            LossKind::Ce => logits.log_softmax(-1, k).nll_loss(labels),
            LossKind::Mse => (logits - target()).square().mean(k),
            LossKind::MseSoftmax => (logits.softmax(-1, k) - target()).square().mean(k),
        };
        if self.z_loss > 0.0 {
            base + logits.logsumexp([-1], false).square().mean(k) * self.z_loss
        } else {
            base
        }
    }

    /// The scalar loss and its gradient with respect to the logits in closed form (the
    /// formulas of the module docs; z-loss adds `2 z lse(f_i) softmax(f_i) / B`), without
    /// autograd: the last link of the hand-written MLP backward
    /// ([`crate::model::Mlp::manual_gradients`]). Call under `no_grad` if the logits require
    /// gradients.
    ///
    /// # Shapes
    /// `logits: [B, C]` float, `labels: [B]` int64 -> (`[]`, `[B, C]`).
    pub fn value_and_grad(&self, logits: &Tensor, labels: &Tensor) -> (Tensor, Tensor) {
        let (b, c, k) = (logits.size()[0], logits.size()[1], logits.kind());
        let target = one_hot(labels, c).to_kind(k);
        let (value, mut grad) = match self.kind {
            LossKind::Ce => {
                let log_p = logits.log_softmax(-1, k);
                let value = log_p.nll_loss(labels);
                let mut g = log_p.exp();
                g -= &target;
                g *= 1.0 / b as f64;
                (value, g)
            }
            LossKind::Mse => {
                let r = logits - &target;
                let value = r.square().mean(k);
                (value, r * (2.0 / (b * c) as f64))
            }
            LossKind::MseSoftmax => {
                let p = logits.softmax(-1, k);
                let r = &p - &target;
                let value = r.square().mean(k);
                let inner = (&p * &r).sum_dim_intlist(&[-1i64][..], true, k);
                (value, p * (r - inner) * (2.0 / (b * c) as f64))
            }
        };
        if self.z_loss > 0.0 {
            let lse = logits.logsumexp([-1], true); // [B, 1]
            let value = value + lse.square().mean(k) * self.z_loss;
            grad += logits.softmax(-1, k) * lse * (2.0 * self.z_loss / b as f64);
            return (value, grad);
        }
        (value, grad)
    }
}

/// One-hot encoding as float.
///
/// # Shapes
/// `labels: [B]` -> `[B, C]`.
pub fn one_hot(labels: &Tensor, num_classes: i64) -> Tensor {
    labels.one_hot(num_classes).to_kind(Kind::Float)
}

/// Fraction of rows whose arg-max equals the label.
pub fn accuracy(logits: &Tensor, labels: &Tensor) -> f64 {
    logits.argmax(-1, false).eq_tensor(labels).to_kind(Kind::Double).mean(Kind::Double).double_value(&[])
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn setup() -> (Tensor, Tensor) {
        let f = crate::rng::normal(&[6, 4], 2.0, &mut crate::rng::rng(0, 99), Device::Cpu)
            .to_kind(Kind::Double)
            .set_requires_grad(true);
        let y = Tensor::from_slice(&[0i64, 3, 1, 2, 3, 0]);
        (f, y)
    }

    fn grad_of(loss: Loss) -> (Tensor, Tensor, Tensor) {
        let (f, y) = setup();
        loss.compute(&f, &y).backward();
        (f.grad(), f.detach(), y)
    }

    #[test]
    fn ce_gradient_is_softmax_minus_onehot() {
        let (g, f, y) = grad_of(Loss::new(LossKind::Ce));
        let want = (f.softmax(-1, Kind::Double) - one_hot(&y, 4).to_kind(Kind::Double)) / 6.0;
        assert!(g.allclose(&want, 1e-12, 1e-12, false));
    }

    #[test]
    fn mse_gradient() {
        let (g, f, y) = grad_of(Loss::new(LossKind::Mse));
        let want = (f - one_hot(&y, 4).to_kind(Kind::Double)) * (2.0 / 24.0);
        assert!(g.allclose(&want, 1e-12, 1e-12, false));
    }

    #[test]
    fn mse_softmax_gradient_is_jacobian_transpose_residual() {
        let (g, f, y) = grad_of(Loss::new(LossKind::MseSoftmax));
        let p = f.softmax(-1, Kind::Double);
        let r = &p - one_hot(&y, 4).to_kind(Kind::Double);
        let inner = (&p * &r).sum_dim_intlist(&[-1i64][..], true, Kind::Double);
        let want = &p * (r - inner) * (2.0 / 24.0);
        assert!(g.allclose(&want, 1e-12, 1e-12, false));
    }

    #[test]
    fn mse_softmax_gradient_vanishes_under_logit_blowup() {
        // Appendix F.4: with saturated softmax the gradient goes to zero even when wrong.
        let y = Tensor::from_slice(&[1i64]);
        let small = Tensor::from_slice(&[1.0f64, 0.0]).reshape([1, 2]);
        let huge = &small * 100.0;
        let g = |f: Tensor| {
            let f = f.set_requires_grad(true);
            Loss::new(LossKind::MseSoftmax).compute(&f, &y).backward();
            f.grad().abs().max().double_value(&[])
        };
        assert!(g(huge) < 1e-30 && g(small) > 0.05);
    }

    #[test]
    fn z_loss_adds_logsumexp_squared() {
        let (f, y) = setup();
        let l0 = Loss::new(LossKind::Ce).compute(&f, &y).double_value(&[]);
        let l1 = Loss { kind: LossKind::Ce, z_loss: 0.5 }.compute(&f, &y).double_value(&[]);
        let z = f.logsumexp([-1], false).square().mean(Kind::Double).double_value(&[]);
        assert!((l1 - l0 - 0.5 * z).abs() < 1e-12);
    }

    #[test]
    fn value_and_grad_matches_autograd_for_every_loss() {
        for kind in [LossKind::Ce, LossKind::Mse, LossKind::MseSoftmax] {
            for z_loss in [0.0, 0.3] {
                let loss = Loss { kind, z_loss };
                let (f, y) = setup();
                let want_value = loss.compute(&f, &y);
                want_value.backward();
                let (value, grad) = tch::no_grad(|| loss.value_and_grad(&f, &y));
                let (a, b) = (value.double_value(&[]), want_value.double_value(&[]));
                assert!((a - b).abs() < 1e-12 * b.abs().max(1.0), "{kind} z={z_loss}: {a} vs {b}");
                assert!(grad.allclose(&f.grad(), 1e-12, 1e-12, false), "{kind} z={z_loss}");
                assert_eq!(grad.size(), f.size());
            }
        }
    }

    #[test]
    fn accuracy_counts_argmax_hits() {
        let f = Tensor::from_slice(&[1.0f32, 0.0, 0.0, 2.0, 5.0, 1.0]).reshape([3, 2]);
        let y = Tensor::from_slice(&[0i64, 1, 1]);
        assert!((accuracy(&f, &y) - 2.0 / 3.0).abs() < 1e-12);
        assert!("hinge".parse::<LossKind>().is_err());
    }
}
