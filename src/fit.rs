//! Width-exponent fits: least squares in log-log space, `log y = a + b log n`, with the
//! standard error and a 95% confidence interval of the exponent `b` (Student t with `k - 2`
//! degrees of freedom over all `k` points, i.e. every seed at every width counts), and the
//! crossing width of two power laws (the phase-transition extrapolation of appendix E.1).
use ndarray::{Array1, Array2};
use ndarray_linalg::{Inverse, LeastSquaresSvd};
use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, StudentsT};

use crate::{Error, Result};

/// A fitted power law `y = exp(intercept) * n^exponent`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct PowerLaw {
    pub exponent: f64,
    /// `a` in `log y = a + b log n`.
    pub intercept: f64,
    /// Standard error of the exponent (NaN with fewer than 3 points).
    pub stderr: f64,
    /// 95% confidence interval of the exponent.
    pub ci_low: f64,
    pub ci_high: f64,
    /// Coefficient of determination in log space.
    pub r2: f64,
    /// Points used (positive, finite values only).
    pub points: usize,
    /// Points dropped for being zero, negative or non-finite.
    pub dropped: usize,
}

impl PowerLaw {
    /// The fitted value at width `n`.
    pub fn predict(&self, n: f64) -> f64 {
        (self.intercept + self.exponent * n.ln()).exp()
    }
    /// Whether `value` lies in the 95% confidence interval widened by `tol` on each side.
    pub fn agrees_with(&self, value: f64, tol: f64) -> bool {
        value >= self.ci_low - tol && value <= self.ci_high + tol
    }
}

/// Fits `y ~ n^b` to `(n_i, y_i)` pairs (repeated widths = seeds).
pub fn fit_power_law(widths: &[f64], values: &[f64]) -> Result<PowerLaw> {
    if widths.len() != values.len() {
        return Err(Error::config("fit: widths and values differ in length"));
    }
    let pts: Vec<(f64, f64)> = widths
        .iter()
        .zip(values)
        .filter(|(n, y)| **n > 0.0 && **y > 0.0 && n.is_finite() && y.is_finite())
        .map(|(n, y)| (n.ln(), y.ln()))
        .collect();
    let k = pts.len();
    let distinct = {
        let mut xs: Vec<f64> = pts.iter().map(|p| p.0).collect();
        xs.sort_by(f64::total_cmp);
        xs.dedup();
        xs.len()
    };
    if distinct < 2 {
        return Err(Error::config(format!("fit: need positive values at >= 2 distinct widths, got {distinct}")));
    }
    let x = Array2::from_shape_fn((k, 2), |(i, j)| if j == 0 { 1.0 } else { pts[i].0 });
    let y = Array1::from_iter(pts.iter().map(|p| p.1));
    let sol = x.least_squares(&y).map_err(|e| Error::config(format!("fit: {e}")))?;
    let (a, b) = (sol.solution[0], sol.solution[1]);
    let resid: Vec<f64> = pts.iter().map(|(lx, ly)| ly - a - b * lx).collect();
    let sse: f64 = resid.iter().map(|r| r * r).sum();
    let mean_y = y.mean().unwrap_or(0.0);
    let sst: f64 = y.iter().map(|v| (v - mean_y).powi(2)).sum();
    let (stderr, half) = if k > 2 {
        let s2 = sse / (k - 2) as f64;
        let cov = x.t().dot(&x).inv().map_err(|e| Error::config(format!("fit: {e}")))?;
        let se = (s2 * cov[[1, 1]]).sqrt();
        (se, t_quantile_975(k - 2) * se)
    } else {
        (f64::NAN, f64::NAN)
    };
    Ok(PowerLaw {
        exponent: b,
        intercept: a,
        stderr,
        ci_low: b - half,
        ci_high: b + half,
        r2: if sst > 0.0 { 1.0 - sse / sst } else { 1.0 },
        points: k,
        dropped: widths.len() - k,
    })
}

/// The 97.5% quantile of Student's t with `dof` degrees of freedom (the half-width factor of a
/// two-sided 95% interval); NaN for `dof = 0`.
pub fn t_quantile_975(dof: usize) -> f64 {
    if dof == 0 {
        return f64::NAN;
    }
    StudentsT::new(0.0, 1.0, dof as f64).map(|d| d.inverse_cdf(0.975)).unwrap_or(f64::NAN)
}

/// The largest change of a fitted width exponent when every point's value may be off by a
/// factor of up to `2^(half_octave)` either way (a learning rate known to within a search's
/// resolution, e.g. `half_octave = 1/16` for a bisection bracket of 1/8 octave): the slope of
/// a least-squares fit is `sum_i w_i log y_i` with `w_i = (x_i - mean x) / S_xx` in
/// `x = log n`, so its worst case is `half_octave * ln 2 * sum_i |w_i|`. `widths` lists the
/// width of every fitted point (repeated for seeds). Two widths a factor `2^R` apart give
/// `2 half_octave / R`: a one-octave grid (half-octave 1/2) over a 4x range resolves an
/// exponent to `+- 1/2`.
pub fn resolution_bound(widths: &[f64], half_octave: f64) -> f64 {
    let xs: Vec<f64> = widths.iter().filter(|n| **n > 0.0 && n.is_finite()).map(|n| n.ln()).collect();
    if xs.len() < 2 {
        return f64::NAN;
    }
    let mean = xs.iter().sum::<f64>() / xs.len() as f64;
    let sxx: f64 = xs.iter().map(|x| (x - mean).powi(2)).sum();
    if sxx <= 0.0 {
        return f64::NAN;
    }
    half_octave * std::f64::consts::LN_2 * xs.iter().map(|x| (x - mean).abs()).sum::<f64>() / sxx
}

/// The width at which two fitted power laws cross, `exp((a2 - a1) / (b1 - b2))`, equal to
/// the paper's `n0 (D2/D1)^(1/(c1 - c2))` with `D_i` the values at `n0`. `None` when the
/// exponents are equal.
pub fn crossing_width(p1: &PowerLaw, p2: &PowerLaw) -> Option<f64> {
    let db = p1.exponent - p2.exponent;
    (db.abs() > 1e-12).then(|| ((p2.intercept - p1.intercept) / db).exp())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    #[test]
    fn recovers_a_known_exponent_from_noisy_data() {
        let mut r = crate::rng::rng(1, crate::rng::stream::MISC);
        let (mut ns, mut ys) = (vec![], vec![]);
        for &n in &[64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0] {
            for _seed in 0..4 {
                let noise: f64 = r.random_range(-0.1..0.1);
                ns.push(n);
                ys.push(3.0 * f64::powf(n, -0.5) * noise.exp());
            }
        }
        let f = fit_power_law(&ns, &ys).unwrap();
        assert!((f.exponent + 0.5).abs() < 0.03, "{f:?}");
        assert!(f.ci_low < -0.5 && f.ci_high > -0.5, "{f:?}");
        assert!((f.intercept - 3f64.ln()).abs() < 0.2);
        assert!(f.r2 > 0.95 && f.points == 24);
    }

    #[test]
    fn exact_data_and_crossing() {
        let ns = [100.0, 1000.0, 10000.0];
        let f1 = fit_power_law(&ns, &ns.map(|n: f64| 2.0 * n.powf(1.0))).unwrap();
        let f2 = fit_power_law(&ns, &ns.map(|n: f64| 50.0 * n.powf(0.5))).unwrap();
        assert!((f1.exponent - 1.0).abs() < 1e-10 && f1.stderr < 1e-8);
        // 2 n = 50 sqrt(n) at n = 625
        let c = crossing_width(&f1, &f2).unwrap();
        assert!((c - 625.0).abs() < 1e-6, "{c}");
        assert!((f1.predict(625.0) - f2.predict(625.0)).abs() < 1e-6);
        assert!(crossing_width(&f1, &f1).is_none());
    }

    #[test]
    fn resolution_bound_is_the_worst_case_slope_error() {
        // Two widths 4x apart, values known to half an octave: +- 1/2 (the example).
        assert!((resolution_bound(&[64.0, 256.0], 0.5) - 0.5).abs() < 1e-12);
        // The bound is attained: perturb each point by +-half an octave against the slope.
        let ns = [64.0, 128.0, 256.0, 512.0, 1024.0];
        let h = 1.0 / 16.0;
        let b = resolution_bound(&ns, h);
        let clean: Vec<f64> = ns.iter().map(|n: &f64| n.powf(-0.5)).collect();
        let mean = ns.iter().map(|n: &f64| n.ln()).sum::<f64>() / 5.0;
        let worst: Vec<f64> = ns.iter().zip(&clean).map(|(n, y)| y * 2f64.powf(if n.ln() > mean { h } else { -h })).collect();
        let e = fit_power_law(&ns, &worst).unwrap().exponent;
        assert!((e - (-0.5 + b)).abs() < 1e-9, "{e} vs {}", -0.5 + b);
        // seeds repeat widths without changing the bound
        let rep: Vec<f64> = ns.iter().flat_map(|n| [*n, *n, *n]).collect();
        assert!((resolution_bound(&rep, h) - b).abs() < 1e-12);
        assert!(resolution_bound(&[64.0], h).is_nan());
        assert!((t_quantile_975(2) - 4.302_652_729_911_275).abs() < 1e-9 && t_quantile_975(0).is_nan());
    }

    #[test]
    fn bad_inputs_are_errors_or_dropped() {
        assert!(fit_power_law(&[1.0, 2.0], &[1.0]).is_err());
        assert!(fit_power_law(&[64.0, 64.0], &[1.0, 2.0]).is_err());
        let f = fit_power_law(&[64.0, 128.0, 256.0], &[1.0, 0.0, 4.0]).unwrap();
        assert_eq!((f.points, f.dropped), (2, 1));
        assert!(f.stderr.is_nan());
    }
}
