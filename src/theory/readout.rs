//! The initial readout's operator norm, the quantity that decides whether propagating
//! updates `W_0^{L+1} Delta x_t` blow the logits up (section 5.2, appendix F.7).
//!
//! For `W: [d_out, n]` with i.i.d. `N(0, sigma^2)` entries, `||W||_2 ~ sigma (sqrt(n) +
//! sqrt(d_out))` (Vershynin 2010), so in RMS -> RMS operator norm
//!
//! ```text
//! ||W||_op = sqrt(n / d_out) ||W||_2  ~  sigma sqrt(n) (1 + sqrt(n / d_out)).
//! ```
//!
//! With `sigma = n^-1/2` (the paper's convention; He adds a factor `sqrt 2`) this is
//! `1 + sqrt(n/d_out)`: about 1 while `d_out >> n` (language models: no logit blow-up at
//! realistic widths) and `sqrt(n/d_out)`, growing as `n^1/2`, once `n >> d_out` (image
//! classifiers). The paper's proposed last-layer init `sigma = (n/sqrt(d_out) + sqrt(n))^-1`
//! makes it exactly `1` in both regimes.
use tch::Device;

use crate::param::{OptimizerFamily, ParamKind, Parameterization, Role};
use crate::rng;
use crate::Result;

/// The predicted `||W_0||_op` (RMS -> RMS) of a readout `[d_out, n]` initialised with
/// standard deviation `sigma`: `sigma sqrt(n) (1 + sqrt(n/d_out))`.
pub fn predicted_op_norm(sigma: f64, n: i64, d_out: i64) -> f64 {
    let (n, d) = (n as f64, d_out as f64);
    sigma * n.sqrt() * (1.0 + (n / d).sqrt())
}

/// One draw of the readout of width `n` and output dimension `d_out` under `param` (seeded):
/// `(sigma, measured ||W_0||_op, predicted ||W_0||_op)`. The spectral norm is computed by
/// power iteration to relative tolerance 1e-4.
pub fn readout_op_norm(param: &Parameterization, n: i64, d_out: i64, seed: u64) -> Result<(f64, f64, f64)> {
    param.validate()?;
    let sigma = param.resolve(Role::OutputLike, ParamKind::Weight, n, d_out, n, OptimizerFamily::Sgd).init_std;
    let mut r = rng::rng(seed, rng::stream::MISC);
    let w = rng::normal(&[d_out, n], sigma, &mut r, Device::Cpu); // [d_out, n]
    let mut v = rng::normal(&[n], 1.0, &mut r, Device::Cpu);
    let s2 = crate::rcc::power_iteration(&w, &mut v, 1e-4, 1000);
    let measured = (n as f64 / d_out as f64).sqrt() * s2;
    Ok((sigma, measured, predicted_op_norm(sigma, n, d_out)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sp_readout_norm_follows_one_plus_sqrt_n_over_dout() {
        let sp = Parameterization::sp();
        for (n, d) in [(64, 8192), (256, 8192), (512, 10), (256, 256)] {
            let (sigma, m, p) = readout_op_norm(&sp, n, d, 0).unwrap();
            assert!((sigma - (2.0 / n as f64).sqrt()).abs() < 1e-12);
            assert!((m / p - 1.0).abs() < 0.1, "n {n} d_out {d}: measured {m} predicted {p}");
        }
        // the two regimes: ~sqrt 2 when d_out >> n, growing like n^1/2 when n >> d_out
        let at = |n, d| readout_op_norm(&sp, n, d, 1).unwrap().1;
        assert!(at(64, 8192) < 1.7);
        assert!((at(1024, 10) / at(256, 10) - 2.0).abs() < 0.25);
    }

    #[test]
    fn proposed_init_makes_the_readout_norm_one_in_both_regimes() {
        let p = Parameterization::builtin("sp-proposed-init").unwrap();
        for (n, d) in [(64, 8192), (512, 10), (1024, 10)] {
            let (_, m, pred) = readout_op_norm(&p, n, d, 2).unwrap();
            assert!((pred - 1.0).abs() < 1e-12, "{pred}");
            assert!((m - 1.0).abs() < 0.1, "n {n} d_out {d}: {m}");
        }
    }
}
