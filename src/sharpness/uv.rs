//! The uv model's sharpness measured, not derived: widthlab's 2-layer linear network
//! ([`UvNet`], libtorch, f64) trained with SGD on its one point, and at every step the top
//! eigenvalue of its learning-rate-preconditioned Gauss-Newton matrix `D^1/2 G D^1/2`
//! (`D` = the per-layer learning-rate factors) by Lanczos on Gauss-Newton-vector products,
//! normalised as the recursion's `lambda_t` (divided by `n^-alpha n_sp`, see the module docs
//! of [`super`]), next to the recursion of [`crate::theory::uv`] run from the network's own
//! initial state. The full Hessian's `lambda_max(D H)` is measured too: it differs from the
//! GN part by the residual term `chi d^2 f`, which matters while `chi` is large (the
//! catapult's loss spike).
use serde::{Deserialize, Serialize};
use tch::Tensor;

use super::curvature::{Curvature, Part};
use super::lanczos::{lanczos, LanczosConfig};
use crate::model::Model;
use crate::plot::{Figure, Style, PALETTE};
use crate::theory::uv::{simulate, UvConfig, UvNet, UvState};
use crate::Result;

/// A measured uv trajectory next to the recursion.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UvSharpness {
    pub config: UvConfig,
    pub width: i64,
    /// The base learning rate.
    pub eta: f64,
    /// `n^-alpha n_sp`: `eta * norm * lambda` is the edge-of-stability quantity (`< 2`).
    pub norm: f64,
    /// The network's `f_t` and the measured, normalised GN sharpness `lambda_t`.
    pub measured: Vec<UvState>,
    /// `lambda_max(D H) / norm` of the full Hessian.
    pub full: Vec<f64>,
    /// The recursion's `(f_t, lambda_t)` from the network's initial state.
    pub recursion: Vec<UvState>,
    /// `max_t |lambda_t^measured - lambda_t^recursion| / |lambda_t^recursion|`, likewise `f`.
    pub max_rel_lambda: f64,
    pub max_rel_f: f64,
}

impl UvSharpness {
    /// `eta * norm * lambda_t` measured (GN): the edge of stability is at 2.
    pub fn eta_sharpness_gn(&self) -> Vec<f64> {
        self.measured.iter().map(|s| self.eta * self.norm * s.lambda).collect()
    }

    /// Whether the run catapulted: above the edge of stability at initialisation, the loss
    /// rose (`|chi|` at least doubled), the sharpness fell below the edge and the loss then
    /// converged (`|chi_T| < 1e-3 |chi_0|`).
    pub fn catapult(&self) -> bool {
        let y = self.config.y;
        let chi: Vec<f64> = self.measured.iter().map(|s| (s.f - y).abs()).collect();
        let e = self.eta_sharpness_gn();
        let (first, last) = (chi[0], *chi.last().unwrap_or(&f64::NAN));
        e[0] > 2.0 && chi.iter().cloned().fold(0.0, f64::max) > 2.0 * first && *e.last().unwrap_or(&f64::NAN) < 2.0 && last < 1e-3 * first
    }

    /// Left: `eta * norm * lambda_t` measured (GN, solid; full Hessian, markers) and by the
    /// recursion (dashed), with the edge of stability at 2. Right: `|f_t - y|` (log).
    pub fn figures(&self) -> (Figure, Figure) {
        let t: Vec<f64> = (0..self.measured.len()).map(|i| i as f64).collect();
        let k = self.eta * self.norm;
        let title = format!("uv {} n = {}, eta = {:.3}", self.config.param, self.width, self.eta);
        let sharp = Figure::new(format!("{title}: sharpness"))
            .x_label("step")
            .y_label("eta * n^-alpha n_sp * lambda")
            .series_with("measured (Gauss-Newton)", t.clone(), self.eta_sharpness_gn(), Style::Solid, PALETTE[0])
            .series_with("measured (full Hessian)", t.clone(), self.full.iter().map(|l| k * l).collect(), Style::Points, PALETTE[1])
            .series_with("recursion", t.clone(), self.recursion.iter().map(|s| k * s.lambda).collect(), Style::Dashed, (0, 0, 0))
            .series_with("edge of stability", vec![0.0, *t.last().unwrap_or(&0.0)], vec![2.0, 2.0], Style::Dashed, PALETTE[3]);
        let y = self.config.y;
        let loss = Figure::new(format!("{title}: |f - y|"))
            .x_label("step")
            .y_label("|f_t - y|")
            .log_y()
            .series_with("network", t.clone(), self.measured.iter().map(|s| (s.f - y).abs()).collect(), Style::Solid, PALETTE[0])
            .series_with("recursion", t, self.recursion.iter().map(|s| (s.f - y).abs()).collect(), Style::Dashed, (0, 0, 0));
        (sharp, loss)
    }
}

/// Trains [`UvNet`] at `width` for `steps` steps at `eta_over_eos` times its linearised edge
/// of stability `2 / (k_a lambda_0)` and measures the sharpness at every step (see the module
/// docs). Lanczos runs to `1e-12` (the GN matrix has rank one: two iterations).
pub fn uv_sharpness(cfg: &UvConfig, width: i64, eta_over_eos: f64, steps: usize) -> Result<UvSharpness> {
    let net = UvNet::new(cfg, width)?;
    let init = net.state()?;
    let co = cfg.coefficients(width as f64)?;
    let eta = eta_over_eos * co.edge_of_stability(init.lambda);
    let norm = cfg.kernel_norm(width as f64);
    let lanczos_cfg = LanczosConfig { k: 1, max_iter: (2 * width as usize).min(200), tol: 1e-12, explicit_residual: false };
    // D: the per-layer learning-rate factors (the schedule's factor is common to both layers)
    let d: Vec<Tensor> = net.mlp.params().iter().map(|p| Tensor::from(p.lr_scale_sgd)).collect();
    let (mut measured, mut full) = (vec![], vec![]);
    let y = cfg.y;
    net.train_with(eta, steps, &mut |net| {
        let curv = Curvature::new(&net.mlp, net.input(), &|f: &Tensor| (f.sum(f.kind()) - y).square() * 0.5)?;
        let all: Vec<usize> = (0..curv.len()).collect();
        let gn = lanczos(&curv.block(Part::GaussNewton, all.clone(), Some(&d))?, &lanczos_cfg, 0)?.top();
        let h = lanczos(&curv.block(Part::Hessian, all, Some(&d))?, &lanczos_cfg, 0)?.top();
        measured.push(UvState { f: tch::no_grad(|| net.output().double_value(&[])), lambda: gn / norm });
        full.push(h / norm);
        Ok(())
    })?;
    let recursion = simulate(cfg, &co, init, eta, steps, true, false).states;
    let rel = |a: f64, b: f64| (a - b).abs() / a.abs().max(b.abs()).max(1e-12);
    let (mut ml, mut mf) = (0f64, 0f64);
    for (a, b) in measured.iter().zip(&recursion) {
        ml = ml.max(rel(a.lambda, b.lambda));
        mf = mf.max(rel(a.f, b.f));
    }
    Ok(UvSharpness { config: cfg.clone(), width, eta, norm, measured, full, recursion, max_rel_lambda: ml, max_rel_f: mf })
}
