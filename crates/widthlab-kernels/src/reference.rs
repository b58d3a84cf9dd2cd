//! The libtorch path of every product: what [`crate::ops`] computes when the kernels do not
//! apply to the operands, are off, or are slower for the shape ([`crate::dispatch`]), and
//! what the kernels are timed and tested against. Outside autograd, like the kernels.
use tch::{Kind, Tensor};

/// `alpha a b`.
pub(crate) fn mm(a: &Tensor, b: &Tensor, alpha: f64) -> Tensor {
    tch::no_grad(|| {
        let y = a.mm(b);
        if alpha == 1.0 {
            y
        } else {
            y * alpha
        }
    })
}

/// `alpha x w^T` for 2-D `x`.
pub(crate) fn linear(x: &Tensor, w: &Tensor, alpha: f64) -> Tensor {
    mm(x, &w.tr(), alpha)
}

/// `c <- beta c + alpha a b` in place.
pub(crate) fn gemm_into(c: &Tensor, a: &Tensor, b: &Tensor, alpha: f64, beta: f64) {
    tch::no_grad(|| {
        let prod = a.mm(b) * alpha;
        let mut c = c.shallow_clone();
        if beta == 0.0 {
            c.copy_(&prod);
        } else {
            if beta != 1.0 {
                c *= beta;
            }
            c += prod;
        }
    });
}

/// `alpha a^T b`.
pub(crate) fn tn(a: &Tensor, b: &Tensor, alpha: f64) -> Tensor {
    mm(&a.tr(), b, alpha)
}

/// `f f^T` in `f`'s precision, as float64.
pub(crate) fn gram(f: &Tensor) -> Tensor {
    tch::no_grad(|| f.matmul(&f.tr())).to_kind(Kind::Double).contiguous()
}
