//! The monitor's fast path: a dense site's `Delta` measurement fused into the traced forward
//! pass of the probe batch ([`ops::dense_change`], see the module docs of [`crate::rcc`]). It
//! gives the same quantities as the definitions ([`super::site_metrics`]) to rounding, and
//! never forms the weight difference.
use std::collections::HashMap;

use tch::Tensor;

use super::definitions::{warm_start, warm_start_keys};
use crate::kernels::ops;
pub use crate::kernels::ops::DenseChange;
use crate::model::DenseProducts;

/// The monitor's [`DenseProducts`] for the traced forward of a measured step: each dense
/// site's output `a W_t x_t` comes from the same fused pass ([`ops::dense_change`]) that
/// measures the site against the initial weights, so `W_t` is read once for both; where the input
/// has not changed since initialisation (`x_t = x_0`: the input layer on the fixed probe),
/// the output is `a W_0 x_0 + a (W_t - W_0) x_0` from the initial trace and the effective
/// update, with no product by `W_t` at all (as accurate as the product: the sum rounds to
/// `eps |W_t x_0|`, less than the product's own rounding). The results wait in
/// `done` (by parameter index) for [`super::site_metrics`] ([`super::Change::Stored`]'s `measured`). It
/// takes exactly the sites `site_metrics` would fuse itself: dense weights whose initial
/// copy is stored, on CPU float inputs that are not one-hot (those are lookups there), under
/// power iteration; a weight used at a second site is left to the model there.
pub(super) struct FusedForward<'a> {
    /// The initial weights, by parameter index.
    pub(super) init: &'a [Option<Tensor>],
    /// The initial trace's dense sites, by parameter index: `(x_0, a W_0 x_0)`.
    pub(super) init_sites: HashMap<usize, (&'a Tensor, &'a Tensor)>,
    /// Parameter names (the sites' cache keys).
    pub(super) names: Vec<String>,
    pub(super) cache: &'a mut HashMap<String, Tensor>,
    /// Per parameter: also measure `W_t`'s norms (the next step's one-step reference).
    pub(super) keep_norms: Vec<bool>,
    pub(super) tol: f64,
    pub(super) max_iter: usize,
    pub(super) done: HashMap<usize, DenseChange>,
}

impl DenseProducts for FusedForward<'_> {
    fn product(&mut self, param: usize, w: &Tensor, multiplier: f64, x: &Tensor) -> Option<Tensor> {
        if self.done.contains_key(&param) || x.dim() < 2 || w.dim() != 2 || ops::all_zero_or_one(x) != Some(false) {
            return None;
        }
        // [.., fan_in] inputs (the GPT's [B, T, d]) as rows, the results shaped back
        let mut shape = x.size();
        *shape.last_mut()? = w.size()[0];
        let x = &x.reshape([-1, *x.size().last()?]);
        let w_ref = self.init.get(param)?.as_ref()?;
        let name = self.names.get(param)?;
        let current = self.keep_norms.get(param).copied().unwrap_or(false);
        // an input unchanged since initialisation: the output from the initial one
        let unchanged = self.init_sites.get(&param).filter(|(x0, _)| x0.numel() == x.numel() && x0.reshape(x.size()).equal(x)).map(|&(_, out0)| out0);
        let mut fused = fused_pass(self.cache, name, w, w_ref, x, multiplier, current, (self.tol, self.max_iter), unchanged.is_none())?;
        fused.eff = fused.eff.reshape(&shape[..]);
        let out = match unchanged {
            Some(out0) => out0 + &fused.eff,
            None => fused.out.take()?.reshape(&shape[..]),
        };
        self.done.insert(param, fused);
        Some(out)
    }
}

/// The fused pass ([`ops::dense_change`]) of the dense site `key`, warm-started from (and
/// leaving) its vectors in `cache`; with `current`, also `W_t`'s norms; with `forward`, also
/// the output `a W_t x_t`. `None` where the pass does not apply or the kernels are off.
#[allow(clippy::too_many_arguments)]
pub(super) fn fused_pass(
    cache: &mut HashMap<String, Tensor>,
    key: &str,
    w_t: &Tensor,
    w_ref: &Tensor,
    x: &Tensor,
    multiplier: f64,
    current: bool,
    (tol, max_iter): (f64, usize),
    forward: bool,
) -> Option<DenseChange> {
    let (key_dw, key_wt) = warm_start_keys(key);
    let mut v_d = warm_start(cache, &key_dw, w_t);
    let mut v_w = current.then(|| warm_start(cache, &key_wt, w_t));
    let fused = ops::dense_change(w_t, w_ref, x, multiplier, &mut v_d, v_w.as_mut(), tol, max_iter, forward);
    cache.insert(key_dw, v_d);
    if let Some(v) = v_w {
        cache.insert(key_wt, v);
    }
    fused
}
