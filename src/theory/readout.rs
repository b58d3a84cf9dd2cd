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

use crate::param::{Fans, OptimizerFamily, ParamKind, Parameterization, Role};
use crate::plot::{gradient, Figure, Style};
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
    let sigma = param.resolve(Role::OutputLike, ParamKind::Weight, Fans::mlp(Role::OutputLike, 1, n, d_out), OptimizerFamily::Sgd).init_std;
    let mut r = rng::rng(seed, rng::stream::MISC);
    let w = rng::normal(&[d_out, n], sigma, &mut r, Device::Cpu); // [d_out, n]
    let mut v = rng::normal(&[n], 1.0, &mut r, Device::Cpu);
    let s2 = crate::rcc::power_iteration(&w, &mut v, 1e-4, 1000);
    let measured = (n as f64 / d_out as f64).sqrt() * s2;
    Ok((sigma, measured, predicted_op_norm(sigma, n, d_out)))
}

/// Which summand of `1 + sqrt(n/d_out)` dominates the readout's operator norm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Regime {
    /// `d_out >= 16 n` (language models): `||W_0||_op ~ sigma sqrt(n)`, about constant.
    LargeOutput,
    /// `n >= 16 d_out` (image classifiers): `||W_0||_op ~ sigma n / sqrt(d_out)`, growing.
    LargeWidth,
}

impl Regime {
    /// The regime of a readout `[d_out, n]`, `None` when neither dimension is 16x the other
    /// (the two summands within a factor of 4 of each other).
    pub fn of(n: i64, d_out: i64) -> Option<Regime> {
        if d_out >= 16 * n {
            Some(Regime::LargeOutput)
        } else if n >= 16 * d_out {
            Some(Regime::LargeWidth)
        } else {
            None
        }
    }
}

impl std::fmt::Display for Regime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Regime::LargeOutput => "d_out >> n",
            Regime::LargeWidth => "n >> d_out",
        })
    }
}

/// One cell of a readout operator-norm table ([`op_norm_grid`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OpNormPoint {
    pub n: i64,
    pub d_out: i64,
    pub seed: u64,
    pub sigma: f64,
    /// Measured `||W_0||_op` (RMS -> RMS).
    pub measured: f64,
    /// [`predicted_op_norm`].
    pub predicted: f64,
}

impl OpNormPoint {
    /// `||W_0||_op / (sigma sqrt(n))`: the measured norm in the paper's convention
    /// `sigma = n^-1/2`, to compare with `1 + sqrt(n/d_out)`.
    pub fn normalised(&self) -> f64 {
        self.measured / (self.sigma * (self.n as f64).sqrt())
    }
    /// `measured / predicted - 1`.
    pub fn rel_error(&self) -> f64 {
        self.measured / self.predicted - 1.0
    }
    /// [`Regime::of`] this cell.
    pub fn regime(&self) -> Option<Regime> {
        Regime::of(self.n, self.d_out)
    }
}

/// [`readout_op_norm`] for every seed in `seeds`, output dimension in `d_outs` and width in
/// `ns` (one seeded draw each).
pub fn op_norm_grid(param: &Parameterization, ns: &[i64], d_outs: &[i64], seeds: &[u64]) -> Result<Vec<OpNormPoint>> {
    let mut out = vec![];
    for &seed in seeds {
        for &d_out in d_outs {
            for &n in ns {
                let (sigma, measured, predicted) = readout_op_norm(param, n, d_out, seed)?;
                out.push(OpNormPoint { n, d_out, seed, sigma, measured, predicted });
            }
        }
    }
    Ok(out)
}

/// Log-log figure of the measured `||W_0||_op` against `n`, one colour per `d_out`: measured
/// (points) and [`predicted_op_norm`] (dashed).
pub fn op_norm_figure(title: &str, points: &[OpNormPoint]) -> Figure {
    let mut d_outs: Vec<i64> = points.iter().map(|p| p.d_out).collect();
    d_outs.sort();
    d_outs.dedup();
    let mut f = Figure::new(title.to_string()).x_label("width n").y_label("||W_0||_op (RMS -> RMS)").log_x().log_y();
    for (i, &d) in d_outs.iter().enumerate() {
        let pts: Vec<&OpNormPoint> = points.iter().filter(|p| p.d_out == d).collect();
        let ns: Vec<f64> = pts.iter().map(|p| p.n as f64).collect();
        let c = gradient(i, d_outs.len());
        f = f
            .series_with(format!("d_out = {d}"), ns.clone(), pts.iter().map(|p| p.measured).collect(), Style::Points, c)
            .series_with("", ns, pts.iter().map(|p| p.predicted).collect(), Style::Dashed, c);
    }
    f
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

    #[test]
    fn grid_and_figure() {
        let pts = op_norm_grid(&Parameterization::sp(), &[32, 256], &[10, 1000], &[3, 4]).unwrap();
        assert_eq!(pts.len(), 8);
        // seeds are distinct draws
        assert!(pts[0].measured != pts[4].measured && (pts[0].n, pts[0].d_out) == (pts[4].n, pts[4].d_out));
        let regimes: Vec<Option<Regime>> = pts[..4].iter().map(|p| p.regime()).collect();
        // (32, 10), (256, 10), (32, 1000), (256, 1000)
        assert_eq!(regimes, [None, Some(Regime::LargeWidth), Some(Regime::LargeOutput), None]);
        for p in &pts {
            // He init: sigma sqrt(n) = sqrt 2, so normalised ~ 1 + sqrt(n/d_out)
            let want = 1.0 + (p.n as f64 / p.d_out as f64).sqrt();
            assert!((p.normalised() / want - 1.0).abs() < 0.15 && p.rel_error().abs() < 0.15, "{p:?}");
        }
        let svg = op_norm_figure("t", &pts).to_svg().unwrap();
        assert!(svg.contains("d_out = 1000"));
    }
}
