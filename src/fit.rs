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
    /// Standard error of the intercept and the covariance of intercept and exponent (NaN
    /// with fewer than 3 points).
    #[serde(default = "nan")]
    pub intercept_stderr: f64,
    #[serde(default = "nan")]
    pub covariance: f64,
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
    let (stderr, half, intercept_stderr, covariance) = if k > 2 {
        let s2 = sse / (k - 2) as f64;
        let cov = x.t().dot(&x).inv().map_err(|e| Error::config(format!("fit: {e}")))?;
        let se = (s2 * cov[[1, 1]]).sqrt();
        (se, t_quantile_975(k - 2) * se, (s2 * cov[[0, 0]]).sqrt(), s2 * cov[[0, 1]])
    } else {
        (f64::NAN, f64::NAN, f64::NAN, f64::NAN)
    };
    Ok(PowerLaw {
        exponent: b,
        intercept: a,
        stderr,
        intercept_stderr,
        covariance,
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

fn nan() -> f64 {
    f64::NAN
}

/// The crossing width of two independent fits ([`crossing_width`]) in `log10`, with a 95%
/// interval from `draws` Monte Carlo draws of each fit's `(intercept, exponent)` from its
/// sampling distribution (normal with the fit's covariance, standard errors inflated to the
/// Student t quantile of its degrees of freedom), seeded. `None` when a fit has no
/// covariance (fewer than 3 points) or the exponents do not differ.
pub fn crossing_log10_interval(p1: &PowerLaw, p2: &PowerLaw, draws: usize, seed: u64) -> Option<(f64, f64, f64)> {
    use rand_distr::{Distribution, StandardNormal};
    let centre = crossing_width(p1, p2)?.log10();
    if !(p1.covariance.is_finite() && p2.covariance.is_finite()) || draws < 40 {
        return None;
    }
    let mut r = crate::rng::rng(seed, crate::rng::stream::MISC);
    // a draw of (a, b) with Cov = [[sa^2, c], [c, sb^2]] by the Cholesky factor, scaled to t
    let draw = |p: &PowerLaw, r: &mut rand_chacha::ChaCha8Rng| {
        let scale = t_quantile_975(p.points.saturating_sub(2)) / 1.959_963_984_540_054;
        let (sa, sb, c) = (p.intercept_stderr, p.stderr, p.covariance);
        let l21 = if sa > 0.0 { c / sa } else { 0.0 };
        let l22 = (sb * sb - l21 * l21).max(0.0).sqrt();
        let (z1, z2): (f64, f64) = (StandardNormal.sample(r), StandardNormal.sample(r));
        (p.intercept + scale * sa * z1, p.exponent + scale * (l21 * z1 + l22 * z2))
    };
    let mut logs: Vec<f64> = (0..draws)
        .filter_map(|_| {
            let ((a1, b1), (a2, b2)) = (draw(p1, &mut r), draw(p2, &mut r));
            let db = b1 - b2;
            // a draw whose slopes (nearly) agree has no crossing: it lies beyond any width
            let lx = if db.abs() > 1e-12 { (a2 - a1) / db / std::f64::consts::LN_10 } else { f64::INFINITY };
            Some(if lx.is_nan() { f64::INFINITY } else { lx })
        })
        .collect();
    logs.sort_by(f64::total_cmp);
    let q = |p: f64| logs[((p * (logs.len() - 1) as f64).round() as usize).min(logs.len() - 1)];
    Some((centre, q(0.025), q(0.975)))
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
    fn crossing_interval_covers_the_true_crossing() {
        // y1 = 2 n^0.5, y2 = 0.02 n^1 (cross at n = 10^4), 5% noise, 3 seeds at 5 widths.
        let mut r = crate::rng::rng(7, crate::rng::stream::MISC);
        let (mut covered, trials) = (0, 40);
        for _ in 0..trials {
            let (mut ns, mut y1, mut y2) = (vec![], vec![], vec![]);
            for &n in &[64.0, 128.0, 256.0, 512.0, 1024.0] {
                for _ in 0..3 {
                    let (e1, e2): (f64, f64) = (r.random_range(-0.05..0.05), r.random_range(-0.05..0.05));
                    ns.push(n);
                    y1.push(2.0 * f64::powf(n, 0.5) * e1.exp());
                    y2.push(0.02 * n * e2.exp());
                }
            }
            let (a, b) = (fit_power_law(&ns, &y1).unwrap(), fit_power_law(&ns, &y2).unwrap());
            let (c, lo, hi) = crossing_log10_interval(&a, &b, 2000, 1).unwrap();
            assert!(lo <= c && c <= hi, "{lo} {c} {hi}");
            covered += usize::from(lo <= 4.0 && 4.0 <= hi);
        }
        // a 95% interval covers the truth in most trials (allowing for Monte Carlo error)
        assert!(covered >= 33, "{covered} of {trials}");
        let exact = fit_power_law(&[1.0, 2.0], &[1.0, 2.0]).unwrap();
        assert!(crossing_log10_interval(&exact, &exact, 100, 0).is_none());
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
