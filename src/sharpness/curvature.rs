//! Hessian-vector and Gauss-Newton-vector products of a training loss by double backward
//! through libtorch's autograd, for any [`Model`] on its autograd forward ([`Model::forward`]).
//!
//! [`Curvature::new`] runs the forward pass on a fixed batch and one backward pass with
//! `create_graph`, keeping the graph of the gradient `g(theta) = dL/dtheta` with respect to
//! every trainable parameter. Each product is then one more backward pass through that graph:
//!
//! ```text
//! H v = d/dtheta <g(theta), v>                                  (Pearlmutter's trick)
//! G v = J^T H_out J v,   J = df/dtheta,   H_out = d^2 L / df^2  (Gauss-Newton / NTK part)
//! ```
//!
//! with `f` the logits. `J v` comes from the double-backward trick (no forward-mode AD in
//! tch): `J^T u` is built once with `create_graph` for a dummy `u` (zeros, requiring grad);
//! it is linear in `u`, so `J v = d/du <J^T u, v>`. `H_out w` is a double backward of the loss
//! with respect to a detached copy of the logits (cheap: `[B, C]`), so any loss works, with
//! no second copy of the loss formulas (CE gives `(diag(p) - p p^T) / B` per example, MSE the
//! constant `2 / (B C)`; the tests check both). A GN product costs three backward passes
//! (`J v` through the gradient graph, `H_out`, `J^T`), a Hessian product one.
//!
//! A *block* restricts either operator to a subset of the parameters (one layer's diagonal
//! block `H_ll`): `<g_l, v_l>` differentiated with respect to `theta_l` only, on the same graph,
//! so every block of one measurement shares one forward and backward pass.
//!
//! # Not the hand-written backward
//! The MLP's fast path ([`crate::model::Mlp::manual_gradients`], the fused SGD step) computes
//! first derivatives by hand, outside autograd: it records no graph, so it gives no second
//! derivatives. Curvature always goes through [`Model::forward`] under autograd (libtorch's
//! products, not widthlab's kernels), inside [`crate::model::twice_differentiable`] so that
//! every kernel's backward is itself differentiable (the GPT's attention, see there).
//!
//! Frozen parameters are not part of the parameter space. Vectors are flat (`[N]`, the
//! selected parameters' entries in model order), in the parameters' kind (f32, or f64 after
//! `to_kind`) on their device, CPU or CUDA. The graph lives as long as the [`Curvature`].
use std::cell::OnceCell;

use tch::{Device, Kind, Tensor};

use super::lanczos::Operator;
use crate::model::Model;
use crate::{Error, Result};

/// The graph of the loss gradient at the current weights on one batch (see module docs).
pub struct Curvature {
    /// The trainable parameters (shallow clones), in model order.
    params: Vec<Tensor>,
    /// Their names and indices in [`Model::params`].
    names: Vec<String>,
    index: Vec<usize>,
    /// `dL/dtheta` with its graph.
    grads: Vec<Tensor>,
    /// The logits with their graph.
    logits: Tensor,
    /// A detached copy of the logits (a leaf) and `dL/dz` on it, with its graph (`H_out`).
    z: Tensor,
    gz: Tensor,
    /// The dummy `u` and `J^T u` with its graph, built on the first GN product.
    jt: OnceCell<(Tensor, Vec<Tensor>)>,
    /// The loss on the batch.
    pub loss: f64,
}

/// Which curvature.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// The Hessian of the loss, `H`.
    Hessian,
    /// Its Gauss-Newton (NTK) part `G = J^T H_out J`.
    GaussNewton,
}

/// Gradients from `run_backward` with the parameters' shapes (undefined ones, of inputs the
/// root does not reach, as zeros).
fn backward(root: &Tensor, inputs: &[&Tensor], keep_graph: bool, create_graph: bool) -> Result<Vec<Tensor>> {
    if !root.requires_grad() {
        return Ok(inputs.iter().map(|t| t.zeros_like()).collect());
    }
    let gs = Tensor::f_run_backward(&[root], inputs, keep_graph, create_graph)?;
    Ok(gs.into_iter().zip(inputs).map(|(g, t)| if g.defined() { g } else { t.zeros_like() }).collect())
}

/// `sum_i <a_i, b_i>` as a 0-dim tensor (with the graph of the `a_i`).
fn inner(a: &[&Tensor], b: &[Tensor]) -> Tensor {
    let mut parts = a.iter().zip(b).map(|(a, b)| (*a * b).sum(a.kind()));
    let first = parts.next().unwrap_or_else(|| Tensor::from(0.0));
    parts.fold(first, |acc, p| acc + p)
}

impl Curvature {
    /// Forward and backward (with `create_graph`) of `objective(model.forward(x))` at the
    /// model's current weights; `objective` maps the logits to the scalar loss (e.g.
    /// `|f| loss.compute(f, &y)`).
    pub fn new(model: &dyn Model, x: &Tensor, objective: &dyn Fn(&Tensor) -> Tensor) -> Result<Self> {
        let trainable: Vec<(usize, &crate::model::Param)> = model.params().iter().enumerate().filter(|(_, p)| p.trainable).collect();
        if trainable.is_empty() {
            return Err(Error::config("curvature: the model has no trainable parameters"));
        }
        let params: Vec<Tensor> = trainable.iter().map(|(_, p)| p.tensor.shallow_clone()).collect();
        tch::with_grad(|| {
            crate::model::twice_differentiable(|| {
                let logits = model.forward(x);
                let loss = objective(&logits);
                let value = loss.double_value(&[]);
                let inputs: Vec<&Tensor> = params.iter().collect();
                let grads = backward(&loss, &inputs, true, true)?;
                let z = logits.detach().set_requires_grad(true);
                let gz = backward(&objective(&z), &[&z], true, true)?.remove(0);
                Ok(Curvature {
                    names: trainable.iter().map(|(_, p)| p.name.clone()).collect(),
                    index: trainable.iter().map(|(i, _)| *i).collect(),
                    params,
                    grads,
                    logits,
                    z,
                    gz,
                    jt: OnceCell::new(),
                    loss: value,
                })
            })
        })
    }

    /// Number of trainable parameter tensors (the blocks).
    pub fn len(&self) -> usize {
        self.params.len()
    }

    pub fn is_empty(&self) -> bool {
        self.params.is_empty()
    }

    /// The name of block `i` (its parameter's name).
    pub fn name(&self, i: usize) -> &str {
        &self.names[i]
    }

    /// The index in [`Model::params`] of block `i`.
    pub fn model_index(&self, i: usize) -> usize {
        self.index[i]
    }

    /// The blocks' shapes.
    pub fn shape(&self, i: usize) -> Vec<i64> {
        self.params[i].size()
    }

    /// `H_sel v` for the parameters `sel` (block indices), `v` one tensor per selected block.
    pub fn hvp(&self, sel: &[usize], v: &[Tensor]) -> Result<Vec<Tensor>> {
        tch::with_grad(|| {
            let g: Vec<&Tensor> = sel.iter().map(|&i| &self.grads[i]).collect();
            let p: Vec<&Tensor> = sel.iter().map(|&i| &self.params[i]).collect();
            backward(&inner(&g, v), &p, true, false)
        })
    }

    /// `G_sel v = J_sel^T H_out J_sel v` for the parameters `sel`.
    pub fn gnvp(&self, sel: &[usize], v: &[Tensor]) -> Result<Vec<Tensor>> {
        tch::with_grad(|| {
            if self.jt.get().is_none() {
                let u = self.logits.zeros_like().set_requires_grad(true);
                let inputs: Vec<&Tensor> = self.params.iter().collect();
                let jtu = backward(&(&self.logits * &u).sum(self.logits.kind()), &inputs, true, true)?;
                let _ = self.jt.set((u, jtu));
            }
            let (u, jtu) = self.jt.get().expect("set above");
            let parts: Vec<&Tensor> = sel.iter().map(|&i| &jtu[i]).collect();
            let jv = backward(&inner(&parts, v), &[u], true, false)?.remove(0); // [B, C]
            let hjv = backward(&(&self.gz * &jv).sum(jv.kind()), &[&self.z], true, false)?.remove(0); // [B, C]
            let p: Vec<&Tensor> = sel.iter().map(|&i| &self.params[i]).collect();
            backward(&(&self.logits * &hjv).sum(hjv.kind()), &p, true, false)
        })
    }

    /// The operator `D^1/2 A_sel D^1/2` on flat vectors (see [`Block`]).
    pub fn block(&self, part: Part, sel: Vec<usize>, precond: Option<&[Tensor]>) -> Result<Block<'_>> {
        if sel.is_empty() || sel.iter().any(|&i| i >= self.len()) {
            return Err(Error::config("curvature: empty or out-of-range block selection"));
        }
        let sizes: Vec<i64> = sel.iter().map(|&i| self.params[i].numel() as i64).collect();
        let shapes: Vec<Vec<i64>> = sel.iter().map(|&i| self.params[i].size()).collect();
        let scale = match precond {
            None => None,
            Some(d) => {
                if d.len() != self.len() {
                    return Err(Error::config(format!("curvature: {} preconditioner entries for {} blocks", d.len(), self.len())));
                }
                let flat: Vec<Tensor> = sel.iter().map(|&i| d[i].to_kind(self.params[i].kind()).expand(self.params[i].size(), false).reshape([-1])).collect();
                let flat = Tensor::cat(&flat, 0);
                if flat.lt(0.0).any().int64_value(&[]) != 0 {
                    return Err(Error::config("curvature: a preconditioner must be non-negative"));
                }
                Some(flat.sqrt())
            }
        };
        Ok(Block { curv: self, part, sel, sizes, shapes, scale })
    }
}

/// One curvature operator on flat vectors: `A_sel` (the Hessian or GN restricted to the
/// blocks `sel`), optionally preconditioned as `D^1/2 A_sel D^1/2` with a non-negative
/// diagonal `D` (same eigenvalues as `D A_sel`; for per-parameter learning rates `D = diag(lr)`
/// its top eigenvalue is the edge-of-stability quantity).
pub struct Block<'c> {
    curv: &'c Curvature,
    part: Part,
    sel: Vec<usize>,
    sizes: Vec<i64>,
    shapes: Vec<Vec<i64>>,
    /// `D^1/2` as a flat vector.
    scale: Option<Tensor>,
}

impl Block<'_> {
    /// A flat vector `[N]` as one tensor per selected block.
    fn split(&self, v: &Tensor) -> Vec<Tensor> {
        v.split_with_sizes(&self.sizes, 0).into_iter().zip(&self.shapes).map(|(p, s)| p.view(&s[..])).collect()
    }
}

impl Operator for Block<'_> {
    fn dim(&self) -> i64 {
        self.sizes.iter().sum()
    }
    fn kind(&self) -> Kind {
        self.curv.params[self.sel[0]].kind()
    }
    fn device(&self) -> Device {
        self.curv.params[self.sel[0]].device()
    }
    fn apply(&self, v: &Tensor) -> Result<Tensor> {
        let v = match &self.scale {
            Some(s) => v * s,
            None => v.shallow_clone(),
        };
        let parts = self.split(&v);
        let out = match self.part {
            Part::Hessian => self.curv.hvp(&self.sel, &parts)?,
            Part::GaussNewton => self.curv.gnvp(&self.sel, &parts)?,
        };
        let flat = Tensor::cat(&out.iter().map(|t| t.reshape([-1])).collect::<Vec<_>>(), 0);
        Ok(match &self.scale {
            Some(s) => flat * s,
            None => flat,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::loss::{Loss, LossKind};
    use crate::model::{Activation, Mlp, MlpConfig, Norm};
    use crate::param::Parameterization;
    use crate::rng::{self, stream};

    fn tiny(depth: usize, norm: Option<Norm>, bias: bool) -> Mlp {
        let cfg = MlpConfig { d_in: 5, d_out: 3, width: 6, depth, bias, norm, ..MlpConfig::default() };
        Mlp::new(&cfg, &Parameterization::sp(), 1, Device::Cpu).unwrap().to_kind(Kind::Double)
    }

    fn batch(b: i64) -> (Tensor, Tensor) {
        let x = rng::normal(&[b, 5], 1.0, &mut rng::rng(0, stream::MISC), Device::Cpu).to_kind(Kind::Double);
        let y = Tensor::from_slice(&(0..b).map(|i| i % 3).collect::<Vec<i64>>());
        (x, y)
    }

    /// The full Hessian of `loss(model(x))` by autograd, row by row (`d/dtheta` of each
    /// gradient entry), `[N, N]`: the independent reference for the products.
    pub(crate) fn full_hessian(model: &dyn Model, x: &Tensor, loss: &dyn Fn(&Tensor) -> Tensor) -> Tensor {
        let params: Vec<&Tensor> = model.params().iter().filter(|p| p.trainable).map(|p| &p.tensor).collect();
        let l = loss(&model.forward(x));
        let g = Tensor::cat(&Tensor::run_backward(&[l], &params, true, true).iter().map(|t| t.reshape([-1])).collect::<Vec<_>>(), 0);
        let n = g.size()[0];
        let rows: Vec<Tensor> = (0..n)
            .map(|i| Tensor::cat(&backward(&g.get(i), &params, true, false).unwrap().iter().map(|t| t.reshape([-1])).collect::<Vec<_>>(), 0))
            .collect();
        Tensor::stack(&rows, 0)
    }

    fn random_vec(n: i64, seed: u64) -> Tensor {
        rng::normal(&[n], 1.0, &mut rng::rng(seed, stream::MISC), Device::Cpu).to_kind(Kind::Double)
    }

    #[test]
    fn hessian_vector_products_match_the_full_hessian_and_finite_differences() {
        let (x, y) = batch(7);
        for (m, kind) in [
            (tiny(3, None, false), LossKind::Ce),
            (tiny(3, None, true), LossKind::Mse),
            (tiny(3, Some(Norm::LayerNorm), true), LossKind::Ce),
            (tiny(2, Some(Norm::RmsNorm), false), LossKind::MseSoftmax),
        ] {
            let loss = Loss::new(kind);
            let obj = |f: &Tensor| loss.compute(f, &y);
            let h = full_hessian(&m, &x, &obj);
            assert!((&h - h.tr()).abs().max().double_value(&[]) < 1e-12, "symmetric");
            let c = Curvature::new(&m, &x, &obj).unwrap();
            let op = c.block(Part::Hessian, (0..c.len()).collect(), None).unwrap();
            assert_eq!(op.dim(), h.size()[0]);
            let v = random_vec(op.dim(), 3);
            let hv = op.apply(&v).unwrap();
            let want = h.mv(&v);
            let err = (&hv - &want).norm().double_value(&[]) / want.norm().double_value(&[]);
            assert!(err < 1e-12, "{kind}: {err}");
            // and against central differences of the gradient (independent of autograd's
            // second derivatives)
            let eps = 1e-5;
            let grad_at = |s: f64| {
                let parts = op.split(&(&v * s));
                tch::no_grad(|| for (p, d) in m.params().iter().zip(&parts) { let mut t = p.tensor.shallow_clone(); t += d; });
                let params: Vec<&Tensor> = m.params().iter().map(|p| &p.tensor).collect();
                let g = Tensor::run_backward(&[obj(&m.forward(&x))], &params, false, false);
                tch::no_grad(|| for (p, d) in m.params().iter().zip(&parts) { let mut t = p.tensor.shallow_clone(); t -= d; });
                Tensor::cat(&g.iter().map(|t| t.reshape([-1])).collect::<Vec<_>>(), 0)
            };
            let fd = (grad_at(eps) - grad_at(-eps)) / (2.0 * eps);
            let err = (&fd - &want).norm().double_value(&[]) / want.norm().double_value(&[]);
            assert!(err < 1e-6, "{kind}: finite differences {err}");
            assert!((c.loss - obj(&m.forward(&x)).double_value(&[])).abs() < 1e-12);
        }
    }

    #[test]
    fn gauss_newton_is_j_transpose_output_hessian_j() {
        // J by autograd row by row, H_out in closed form: CE (diag p - p p^T)/B per example,
        // MSE 2/(B C) I
        let (x, y) = batch(7);
        let m = tiny(3, None, true);
        let params: Vec<&Tensor> = m.params().iter().map(|p| &p.tensor).collect();
        let f = m.forward(&x); // [B, C]
        let (b, k) = (f.size()[0], f.size()[1]);
        let flat = f.reshape([-1]);
        let rows: Vec<Tensor> = (0..b * k)
            .map(|i| Tensor::cat(&backward(&flat.get(i), &params, true, false).unwrap().iter().map(|t| t.reshape([-1])).collect::<Vec<_>>(), 0))
            .collect();
        let j = Tensor::stack(&rows, 0); // [B C, N]
        let fd = f.detach();
        for kind in [LossKind::Ce, LossKind::Mse] {
            let h_out = match kind {
                LossKind::Ce => {
                    let p = fd.softmax(-1, Kind::Double);
                    let blocks: Vec<Tensor> = (0..b).map(|i| (p.get(i).diag(0) - p.get(i).outer(&p.get(i))) / b as f64).collect();
                    Tensor::block_diag(&blocks)
                }
                _ => Tensor::eye(b * k, (Kind::Double, Device::Cpu)) * (2.0 / (b * k) as f64),
            };
            let g_want = j.tr().matmul(&h_out).matmul(&j);
            let loss = Loss::new(kind);
            let c = Curvature::new(&m, &x, &|f: &Tensor| loss.compute(f, &y)).unwrap();
            let op = c.block(Part::GaussNewton, (0..c.len()).collect(), None).unwrap();
            let v = random_vec(op.dim(), 5);
            let err = (op.apply(&v).unwrap() - g_want.mv(&v)).norm().double_value(&[]) / g_want.mv(&v).norm().double_value(&[]);
            assert!(err < 1e-12, "{kind}: {err}");
        }
    }

    #[test]
    fn gauss_newton_equals_the_hessian_of_a_linear_model_under_mse() {
        // f = W2 W1 x is not linear in theta, but a 2-layer model with a frozen first layer
        // is (random features): then H = G exactly
        let cfg = MlpConfig { d_in: 5, d_out: 3, width: 8, depth: 2, activation: Activation::Identity, freeze: crate::model::Freeze::RandomFeatures, ..MlpConfig::default() };
        let m = Mlp::new(&cfg, &Parameterization::sp(), 2, Device::Cpu).unwrap().to_kind(Kind::Double);
        let (x, y) = batch(9);
        let loss = Loss::new(LossKind::Mse);
        let c = Curvature::new(&m, &x, &|f: &Tensor| loss.compute(f, &y)).unwrap();
        assert_eq!(c.len(), 1, "only the readout trains");
        let h = c.block(Part::Hessian, vec![0], None).unwrap();
        let g = c.block(Part::GaussNewton, vec![0], None).unwrap();
        for seed in 0..3 {
            let v = random_vec(h.dim(), seed);
            let (a, b) = (h.apply(&v).unwrap(), g.apply(&v).unwrap());
            assert!((&a - &b).norm().double_value(&[]) <= 1e-13 * a.norm().double_value(&[]), "H v != G v");
        }
        // ...while in a deep linear net H - G is the residual term, non-zero away from a minimum
        let deep = tiny(3, None, false);
        let c = Curvature::new(&deep, &x, &|f: &Tensor| loss.compute(f, &y)).unwrap();
        let v = random_vec(c.block(Part::Hessian, (0..3).collect(), None).unwrap().dim(), 1);
        let (a, b) = (c.block(Part::Hessian, (0..3).collect(), None).unwrap().apply(&v).unwrap(), c.block(Part::GaussNewton, (0..3).collect(), None).unwrap().apply(&v).unwrap());
        assert!((&a - &b).norm().double_value(&[]) > 1e-3 * a.norm().double_value(&[]));
    }

    #[test]
    fn blocks_and_preconditioning_are_submatrices_and_congruences() {
        let (x, y) = batch(7);
        let m = tiny(3, None, true); // weights and biases: 6 blocks
        let loss = Loss::new(LossKind::Ce);
        let obj = |f: &Tensor| loss.compute(f, &y);
        let h = full_hessian(&m, &x, &obj);
        let c = Curvature::new(&m, &x, &obj).unwrap();
        let offsets: Vec<i64> = (0..c.len()).scan(0i64, |o, i| { let s = *o; *o += c.shape(i).iter().product::<i64>(); Some(s) }).collect();
        for i in 0..c.len() {
            let op = c.block(Part::Hessian, vec![i], None).unwrap();
            let n = op.dim();
            let sub = h.narrow(0, offsets[i], n).narrow(1, offsets[i], n);
            let v = random_vec(n, i as u64);
            let err = (op.apply(&v).unwrap() - sub.mv(&v)).norm().double_value(&[]);
            assert!(err <= 1e-12 * sub.mv(&v).norm().double_value(&[]).max(1e-300), "{}: {err}", c.name(i));
        }
        // D^1/2 H D^1/2 with per-block scalars (learning rates) and per-entry tensors (Adam)
        let d: Vec<Tensor> = (0..c.len())
            .map(|i| if i % 2 == 0 { Tensor::from(0.1 * (i + 1) as f64) } else { rng::normal(&c.shape(i), 1.0, &mut rng::rng(i as u64, 7), Device::Cpu).abs().to_kind(Kind::Double) })
            .collect();
        let dflat = Tensor::cat(&(0..c.len()).map(|i| d[i].expand(c.shape(i), false).reshape([-1]).to_kind(Kind::Double)).collect::<Vec<_>>(), 0);
        let s = dflat.sqrt();
        let want = (&s.unsqueeze(1) * &h) * s.unsqueeze(0);
        let op = c.block(Part::Hessian, (0..c.len()).collect(), Some(&d)).unwrap();
        let v = random_vec(op.dim(), 11);
        let err = (op.apply(&v).unwrap() - want.mv(&v)).norm().double_value(&[]) / want.mv(&v).norm().double_value(&[]);
        assert!(err < 1e-12, "{err}");
        assert!(c.block(Part::Hessian, vec![], None).is_err());
        assert!(c.block(Part::Hessian, vec![99], None).is_err());
        assert!(c.block(Part::Hessian, vec![0], Some(&d[..2])).is_err());
        let neg: Vec<Tensor> = d.iter().map(|t| -t).collect();
        assert!(c.block(Part::Hessian, vec![0], Some(&neg)).is_err());
    }

    #[test]
    fn frozen_parameters_are_not_in_the_space() {
        let cfg = MlpConfig { d_in: 5, d_out: 3, width: 6, depth: 3, freeze: crate::model::Freeze::FirstLayer, ..MlpConfig::default() };
        let m = Mlp::new(&cfg, &Parameterization::sp(), 0, Device::Cpu).unwrap();
        let (x, y) = batch(4);
        let loss = Loss::new(LossKind::Ce);
        let c = Curvature::new(&m, &x.to_kind(Kind::Float), &|f: &Tensor| loss.compute(f, &y)).unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!((c.name(0), c.model_index(0)), ("layers.1.weight", 1));
        let rf = Mlp::new(&MlpConfig { freeze: crate::model::Freeze::RandomFeatures, depth: 2, ..cfg }, &Parameterization::sp(), 0, Device::Cpu).unwrap();
        assert_eq!(Curvature::new(&rf, &x.to_kind(Kind::Float), &|f: &Tensor| loss.compute(f, &y)).unwrap().len(), 1);
    }
}
