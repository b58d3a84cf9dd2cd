//! The safe interface widthlab's research code calls: the products it computes outside
//! autograd (evaluation, the MLP's hand-written backward and its fused SGD step, the RCC
//! monitor), the dense layer under autograd, and the monitor's fused passes and reductions.
//!
//! Every product here takes the path [`crate::dispatch`] chose for its shape, widthlab's
//! kernels or libtorch's `mm`, and falls back to libtorch where the kernels do not apply
//! (tensors not on the CPU, kinds other than float32/float64, mixed kinds, empty products).
//! The two paths agree to float rounding. The monitor's passes and reductions return `None`
//! where they do not apply or the kernels are off; the caller then computes the quantity
//! term by term through libtorch.
//!
//! Invariants: nothing here records an autograd graph except [`linear`] when gradients are
//! wanted; outputs never alias inputs; the same thread count and path give the same bits.
#![cfg_attr(not(feature = "kernels"), allow(unused_variables))]
use tch::Tensor;

#[cfg(feature = "kernels")]
use crate::gemm;
use crate::reference;

/// Whether autograd records operations on this thread (false inside [`tch::no_grad`]).
fn grad_enabled() -> bool {
    // SAFETY: sets the thread-local grad mode and restores the previous value it returned.
    unsafe {
        let prev = torch_sys::at_grad_set_enabled(1);
        torch_sys::at_grad_set_enabled(prev);
        prev != 0
    }
}

/// A dense layer, `alpha x W^T (+ b)`, for a weight `w: [fan_out, fan_in]` on inputs with any
/// leading dimensions. Where autograd records (grad mode on and `x` or `w` requiring
/// gradients, or any bias under grad mode with `alpha = 1`, fused into one kernel) it is
/// libtorch's `linear`; elsewhere the product takes its chosen path.
///
/// # Shapes
/// `x: [.., fan_in]`, `w: [fan_out, fan_in]`, `b: [fan_out]` -> `[.., fan_out]`.
pub fn linear(x: &Tensor, w: &Tensor, bias: Option<&Tensor>, alpha: f64) -> Tensor {
    crate::dispatch::log_once();
    let recording = grad_enabled();
    if let Some(b) = bias {
        if alpha == 1.0 && recording {
            return x.linear(w, Some(b));
        }
        return linear(x, w, None, alpha) + b;
    }
    if recording && (x.requires_grad() || w.requires_grad()) {
        let y = x.linear::<&Tensor>(w, None);
        return if alpha == 1.0 { y } else { y * alpha };
    }
    let size = x.size();
    let fan_in = *size.last().expect("linear: x has a feature dimension");
    let x2 = if size.len() == 2 { x.shallow_clone() } else { x.reshape([-1, fan_in]) };
    #[cfg(feature = "kernels")]
    let y = gemm::linear(&x2, w, alpha);
    #[cfg(not(feature = "kernels"))]
    let y = None;
    let y = y.unwrap_or_else(|| reference::linear(&x2, w, alpha));
    if size.len() == 2 {
        y
    } else {
        let mut out = size.clone();
        *out.last_mut().expect("nonempty") = w.size()[0];
        y.reshape(out)
    }
}

/// `alpha a b` as a new tensor.
///
/// # Shapes
/// `a: [m, k]`, `b: [k, n]` -> `[m, n]`.
pub fn mm(a: &Tensor, b: &Tensor, alpha: f64) -> Tensor {
    crate::dispatch::log_once();
    #[cfg(feature = "kernels")]
    if let Some(c) = gemm::mm(a, b, alpha) {
        return c;
    }
    reference::mm(a, b, alpha)
}

/// `c <- beta c + alpha a b` in place, for 2-D `a`, `b` (either may be a transposed view)
/// and `c`, which must not overlap them. With `beta = 1`, `alpha = -lr` and `a = g^T`,
/// `b = x` this is the fused SGD step `W <- W - lr g^T x` of a dense weight.
///
/// # Shapes
/// `a: [m, k]`, `b: [k, n]`, `c: [m, n]`.
pub fn gemm_into(c: &Tensor, a: &Tensor, b: &Tensor, alpha: f64, beta: f64) {
    crate::dispatch::log_once();
    #[cfg(feature = "kernels")]
    if gemm::gemm_into(c, a, b, alpha, beta) {
        return;
    }
    reference::gemm_into(c, a, b, alpha, beta)
}

/// Two independent [`gemm_into`] products, given as `(c, a, b, alpha, beta)`; on the kernels,
/// small ones run side by side, one per thread (the MLP's backward pairs a layer's input
/// gradient with the weight update of the layer above). The tensors of one product must not
/// overlap the other's output.
pub fn gemm_pair(p0: (&Tensor, &Tensor, &Tensor, f64, f64), p1: (&Tensor, &Tensor, &Tensor, f64, f64)) {
    crate::dispatch::log_once();
    #[cfg(feature = "kernels")]
    if gemm::gemm_pair(p0, p1) {
        return;
    }
    gemm_into(p0.0, p0.1, p0.2, p0.3, p0.4);
    gemm_into(p1.0, p1.1, p1.2, p1.3, p1.4);
}

/// `alpha a^T b`, for a short inner dimension (a batch, a probe, a readout's width) and a long
/// `n` (the RCC monitor's one-step products).
///
/// # Shapes
/// `a: [k, p]`, `b: [k, n]` -> `[p, n]`.
pub fn tn(a: &Tensor, b: &Tensor, alpha: f64) -> Tensor {
    crate::dispatch::log_once();
    #[cfg(feature = "kernels")]
    if let Some(c) = gemm::tn(a, b, alpha) {
        return c;
    }
    reference::tn(a, b, alpha)
}

/// The Gram matrix `f f^T`, computed in `f`'s precision and returned as float64.
///
/// # Shapes
/// `f: [B, n]` -> `[B, B]`.
pub fn gram(f: &Tensor) -> Tensor {
    crate::dispatch::log_once();
    #[cfg(feature = "kernels")]
    if let Some(g) = gemm::gram(f) {
        return g;
    }
    reference::gram(f)
}

/// What the monitor's fused pass over a dense weight and its reference measured (see
/// [`dense_change`]), unscaled by any multiplier except in `eff` and `out`.
pub struct DenseChange {
    /// `alpha (W_t - W_ref) x^T`, as `[P, fan_out]`.
    pub eff: Tensor,
    /// `(||W_t - W_ref||_F, ||W_t - W_ref||_2)`.
    pub diff: (f64, f64),
    /// `(||W_t||_F, ||W_t||_2)`, if asked for.
    pub current: Option<(f64, f64)>,
    /// `alpha W_t x^T`, as `[P, fan_out]`, if asked for (the site's output in a traced
    /// forward pass, from the same read of `W_t`).
    pub out: Option<Tensor>,
}

/// `$e` (an `Option`, computed on the kernels) when the monitor's passes run on the kernels
/// ([`crate::dispatch`]), else `None`.
macro_rules! monitor_pass {
    ($e:expr) => {{
        #[cfg(feature = "kernels")]
        let v = if crate::dispatch::fused() { $e } else { None };
        #[cfg(not(feature = "kernels"))]
        let v = None;
        v
    }};
}

/// The RCC monitor's fused pass for one dense weight: in one read of `w_t` and `w_ref`
/// (`[fan_out, fan_in]`), the effective update `alpha (W_t - W_ref) x^T` for the inputs `x`
/// (`[P, fan_in]`), the Frobenius and spectral norms of the difference (power iteration
/// warm-started from `v_diff` until two estimates agree to `tol`, at most `max_iter`
/// iterations), with `v_current` the same norms of `w_t` (warm-started from it), and with
/// `forward` the output `alpha W_t x^T`. The vectors are updated in place (replaced if their
/// kind or length do not fit). `None` when it does not apply (tensors not on the CPU, not
/// float32 or float64, kinds that differ, other shapes) or the kernels are off.
///
/// # Shapes
/// `w_t, w_ref: [fan_out, fan_in]`, `x: [P, fan_in]` -> `eff: [P, fan_out]`.
#[allow(clippy::too_many_arguments)]
pub fn dense_change(w_t: &Tensor, w_ref: &Tensor, x: &Tensor, alpha: f64, v_diff: &mut Tensor, v_current: Option<&mut Tensor>, tol: f64, max_iter: usize, forward: bool) -> Option<DenseChange> {
    crate::dispatch::log_once();
    monitor_pass!(crate::dense::dense_change(w_t, w_ref, x, alpha, v_diff, v_current, tol, max_iter, forward))
}

/// `sqrt(mean((t0 - t1 - ...)^2))` of CPU float tensors of one kind and size, in one pass:
/// the differences in the tensors' precision, left to right (as libtorch would form them),
/// the sum in float64; NaN for empty tensors. `None` where it does not apply (other devices
/// or kinds, sizes that differ) or the kernels are off.
pub fn rms_of_difference(ts: &[&Tensor]) -> Option<f64> {
    crate::dispatch::log_once();
    monitor_pass!(crate::stats::rms_of_difference(ts))
}

/// Mean cosine of matching rows of `a` and `b` (`[B, n]`; zero rows count as cosine 0), in
/// float64; `None` as [`rms_of_difference`].
pub fn cosine_rows(a: &Tensor, b: &Tensor) -> Option<f64> {
    crate::dispatch::log_once();
    monitor_pass!(crate::stats::cosine_rows(a, b))
}

/// Mean cosine between different rows of `a` (`[B, n]`, `B >= 2`), in float64; `None` as
/// [`rms_of_difference`].
pub fn cosine_cross(a: &Tensor) -> Option<f64> {
    crate::dispatch::log_once();
    monitor_pass!(crate::stats::cosine_cross(a))
}

/// Whether every entry is exactly 0 or 1 (stopping at the first that is not); `None` as
/// [`rms_of_difference`].
pub fn all_zero_or_one(a: &Tensor) -> Option<bool> {
    crate::dispatch::log_once();
    monitor_pass!(crate::stats::all_zero_or_one(a))
}

/// Fraction of exactly-zero entries; `None` as [`rms_of_difference`].
pub fn sparsity(a: &Tensor) -> Option<f64> {
    crate::dispatch::log_once();
    monitor_pass!(crate::stats::sparsity(a))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dispatch::{with_path, Path};
    use tch::{Device, Kind};

    fn close(a: &Tensor, b: &Tensor, tol: f64) -> bool {
        let scale = b.abs().max().double_value(&[]).max(1.0);
        (a - b).abs().max().double_value(&[]) <= tol * scale
    }

    /// Every product on each path and on the chosen one agrees with libtorch's definition to
    /// rounding; `linear` records a graph exactly where gradients are wanted.
    #[test]
    fn products_agree_on_every_path() {
        tch::manual_seed(7);
        let opts = (Kind::Float, Device::Cpu);
        let (x, w, b) = (Tensor::randn([2, 3, 40], opts), Tensor::randn([24, 40], opts), Tensor::randn([24], opts));
        let (a, g) = (Tensor::randn([64, 10], opts), Tensor::randn([64, 300], opts));
        let want_linear = x.matmul(&w.tr()) * 0.5 + &b;
        let run = || {
            let y = tch::no_grad(|| linear(&x, &w, Some(&b), 0.5));
            assert!(!y.requires_grad());
            assert!(close(&y, &want_linear, 1e-5));
            assert!(close(&mm(&a.tr(), &g, 2.0), &(a.tr().matmul(&g) * 2.0), 1e-5));
            assert!(close(&tn(&a, &g, -1.0), &(a.tr().matmul(&g) * -1.0), 1e-5));
            assert!(close(&gram(&g), &g.matmul(&g.tr()).to_kind(Kind::Double), 1e-5));
            let c = Tensor::ones([10, 300], opts);
            gemm_into(&c, &a.tr(), &g, 1.0, 1.0);
            assert!(close(&c, &(a.tr().matmul(&g) + 1.0), 1e-5));
            let (c0, c1) = (Tensor::zeros([10, 300], opts), Tensor::zeros([300, 10], opts));
            gemm_pair((&c0, &a.tr(), &g, 1.0, 0.0), (&c1, &g.tr(), &a, 1.0, 0.0));
            assert!(close(&c0, &c1.tr(), 1e-5));
        };
        run(); // the chosen paths
        with_path(Path::Libtorch, run).unwrap();
        if with_path(Path::Kernels, run).is_none() {
            eprintln!("kernels path: skipped (built without the kernels feature)");
        }
        // under autograd: libtorch's linear, recorded
        let wg = w.set_requires_grad(true);
        let y = linear(&x, &wg, None, 0.5);
        assert!(y.requires_grad());
        assert!(close(&y.detach(), &(x.matmul(&w.tr()) * 0.5), 1e-6));
        let y = linear(&x, &wg, Some(&b), 1.0);
        assert!(y.requires_grad());
    }

    /// With libtorch forced, the monitor's passes report that they do not apply.
    #[test]
    fn monitor_passes_decline_on_libtorch() {
        let a = Tensor::ones([4, 8], (Kind::Float, Device::Cpu));
        with_path(Path::Libtorch, || {
            assert!(rms_of_difference(&[&a]).is_none() && sparsity(&a).is_none() && all_zero_or_one(&a).is_none());
            assert!(cosine_rows(&a, &a).is_none() && cosine_cross(&a).is_none());
            let mut v = Tensor::ones([8], (Kind::Float, Device::Cpu));
            assert!(dense_change(&a, &a, &a, 1.0, &mut v, None, 1e-6, 10, false).is_none());
        })
        .unwrap();
        if cfg!(feature = "kernels") {
            with_path(Path::Kernels, || assert_eq!(sparsity(&a), Some(0.0))).unwrap();
        }
    }
}
