//! The claim model of the reproduction report: what the paper (or widthlab's extension of it)
//! asserts, what was measured with its 95% confidence interval, and the verdict.
//!
//! A [`Claim`] is a statement a measurement could contradict. It has a [`Kind`] (`paper`: the
//! paper states it, with its section or figure; `extension`: beyond the paper, e.g. NTP
//! results, the proposed init's transfer, widthlab's convergence studies, a documented
//! disagreement with a caption) and an [`Expectation`]:
//!
//! - [`Expectation::Near`]: the quantity is `value` within `tolerance` (with a one-line reason),
//!   and the claim excludes the `alternatives` (for a max-stable exponent under CE: `-1/2`
//!   against `-1` and `0`);
//! - [`Expectation::Above`] / [`Expectation::Below`]: an ordinal claim (A above B) on the
//!   difference `A - B` and its own confidence interval.
//!
//! The measurement is an [`Estimate`]: a value and its 95% confidence interval, with a word on
//! how the interval was obtained (a regression over seeds, a resolution bound, an exact
//! computation). The verdict ([`Verdict`]) follows from the interval alone:
//!
//! | expectation | `holds` | `deviates` | `inconclusive` |
//! |---|---|---|---|
//! | `Near` | CI inside `value +- tolerance` and no alternative in the CI | CI outside `value +- tolerance` | otherwise |
//! | `Above b` | CI above `b` | CI below `b` | CI contains `b` |
//! | `Below b` | CI below `b` | CI above `b` | CI contains `b` |
//!
//! A measurement without a finite interval (too few points, not measured) is `inconclusive`.
//! Inconclusive is an honest answer: tolerances are stated with their reasons and are never
//! widened to make a claim hold.
//!
//! # Profiles
//! At `quick` and `paper` every claim gets its verdict; claims never fail a notebook (a
//! deviation is a result, shown in the report). At `smoke` the measurements are too small to
//! mean anything: a claim is *structural* there, it checks that the measurement exists (a
//! finite value), and [`Claims::finish`] fails the notebook when one does not. Notebooks add
//! their claims the same way at every profile.
//!
//! # Output
//! [`Claims::finish`] prints one table and writes `claims/<notebook>.json` under
//! [`crate::report::out_dir`]; `notebooks/report.py` reads those files into the report.
use serde::{Deserialize, Serialize};

use crate::fit::PowerLaw;
use crate::profile::Profile;
use crate::{Error, Result};

/// Printed before a structural failure at `smoke` (and found by `notebooks/run.py`).
pub const FAILED_MARKER: &str = "WIDTHLAB CHECK FAILED:";

/// Who asserts a claim.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// The paper states it (section / figure in [`Claim::source`]).
    Paper,
    /// Beyond the paper: widthlab's own studies, open questions the paper leaves, documented
    /// disagreements with the paper's text.
    Extension,
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::Paper => "paper",
            Kind::Extension => "extension",
        })
    }
}

/// What the measurement says about a claim.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// The confidence interval supports the claim and excludes its alternatives.
    Holds,
    /// The confidence interval excludes the claim.
    Deviates,
    /// Neither: the interval is too wide, or reaches an alternative, or is missing.
    Inconclusive,
    /// `smoke` profile: only the existence of the measurement was checked.
    Structural,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Verdict::Holds => "holds",
            Verdict::Deviates => "deviates",
            Verdict::Inconclusive => "inconclusive",
            Verdict::Structural => "structural",
        })
    }
}

/// A measured value with its 95% confidence interval.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    #[serde(with = "nan_as_null")]
    pub value: f64,
    #[serde(with = "nan_as_null")]
    pub low: f64,
    #[serde(with = "nan_as_null")]
    pub high: f64,
    /// How the interval was obtained (one line).
    pub method: String,
}

impl Estimate {
    /// A value with an explicit interval.
    pub fn new(value: f64, low: f64, high: f64, method: impl Into<String>) -> Self {
        Estimate { value, low: low.min(high), high: high.max(low), method: method.into() }
    }

    /// A deterministic quantity (an exact computation, no sampling): the interval is the value.
    pub fn exact(value: f64, method: impl Into<String>) -> Self {
        Estimate { value, low: value, high: value, method: method.into() }
    }

    /// A value known only to lie within `+- half` (a bound, e.g. a grid's resolution).
    pub fn bounded(value: f64, half: f64, method: impl Into<String>) -> Self {
        Estimate::new(value, value - half, value + half, method)
    }

    /// The exponent of a fitted power law with its 95% interval (least squares over every
    /// seed at every width, Student t with `k - 2` degrees of freedom; no interval with
    /// fewer than 3 points).
    pub fn exponent(fit: &PowerLaw) -> Self {
        Estimate {
            value: fit.exponent,
            low: fit.ci_low,
            high: fit.ci_high,
            method: format!("power-law fit over {} points (95% t interval)", fit.points),
        }
    }

    /// The mean of `samples` with its 95% Student t interval (no interval for one sample).
    pub fn mean(samples: &[f64], what: &str) -> Self {
        let n = samples.len();
        if n == 0 {
            return Estimate::missing(format!("mean of {what}: no samples"));
        }
        let m = samples.iter().sum::<f64>() / n as f64;
        let half = if n > 1 {
            let var = samples.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1) as f64;
            crate::fit::t_quantile_975(n - 1) * (var / n as f64).sqrt()
        } else {
            f64::NAN
        };
        Estimate::new(m, m - half, m + half, format!("mean of {n} {what} (95% t interval)"))
    }

    /// A proportion `k / n` with its 95% Wilson score interval.
    pub fn proportion(k: usize, n: usize, what: &str) -> Self {
        if n == 0 {
            return Estimate::missing(format!("{what}: no trials"));
        }
        let (p, nf, z) = (k as f64 / n as f64, n as f64, 1.959_963_984_540_054);
        let denom = 1.0 + z * z / nf;
        let centre = (p + z * z / (2.0 * nf)) / denom;
        let half = z * (p * (1.0 - p) / nf + z * z / (4.0 * nf * nf)).sqrt() / denom;
        Estimate::new(p, (centre - half).max(0.0), (centre + half).min(1.0), format!("{k} of {n} {what} (95% Wilson interval)"))
    }

    /// No measurement (NaN), with the reason.
    pub fn missing(reason: impl Into<String>) -> Self {
        Estimate { value: f64::NAN, low: f64::NAN, high: f64::NAN, method: reason.into() }
    }

    /// `self - other` for independent estimates: half-widths add in quadrature (each side's
    /// interval is taken as symmetric about its value by its larger half).
    pub fn minus(&self, other: &Estimate) -> Self {
        let (a, b) = (self.half_width(), other.half_width());
        let half = (a * a + b * b).sqrt();
        let v = self.value - other.value;
        Estimate::new(v, v - half, v + half, format!("difference: ({}) minus ({})", self.method, other.method))
    }

    /// The larger distance from the value to an end of the interval.
    pub fn half_width(&self) -> f64 {
        (self.value - self.low).max(self.high - self.value)
    }

    /// The interval widened by `half` on both sides, e.g. by the resolution of the search that
    /// produced the points the estimate was fitted to ([`crate::fit::resolution_bound`]).
    pub fn widen(mut self, half: f64, why: &str) -> Self {
        if half > 0.0 {
            self.low -= half;
            self.high += half;
            self.method = format!("{}, widened by {half:.3} for {why}", self.method);
        }
        self
    }

    /// Whether the value and both ends of the interval are finite.
    pub fn has_interval(&self) -> bool {
        self.value.is_finite() && self.low.is_finite() && self.high.is_finite()
    }

    /// `+0.52 [+0.40, +0.64]`.
    pub fn display(&self) -> String {
        if !self.value.is_finite() {
            return "not measured".into();
        }
        if self.low.is_finite() && self.high.is_finite() {
            format!("{} [{}, {}]", num(self.value), num(self.low), num(self.high))
        } else {
            format!("{} (no interval)", num(self.value))
        }
    }
}

impl From<PowerLaw> for Estimate {
    fn from(f: PowerLaw) -> Self {
        Estimate::exponent(&f)
    }
}

impl From<&PowerLaw> for Estimate {
    fn from(f: &PowerLaw) -> Self {
        Estimate::exponent(f)
    }
}

/// JSON has no NaN: a missing number is written as `null` and read back as NaN.
mod nan_as_null {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_nan() {
            s.serialize_none()
        } else {
            s.serialize_f64(*v)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
    }
}

/// A number for tables: 3 significant digits, signed for moderate magnitudes.
fn num(v: f64) -> String {
    if v == 0.0 || (v.abs() >= 1e-2 && v.abs() < 1e4) {
        format!("{v:+.2}")
    } else {
        format!("{v:+.2e}")
    }
}

/// What a claim expects of its measurement.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "type")]
pub enum Expectation {
    /// The quantity is `value` within `tolerance`, and none of `alternatives`.
    Near { value: f64, tolerance: f64, alternatives: Vec<f64> },
    /// The quantity (usually a difference `A - B`) is above `bound`.
    Above { bound: f64 },
    /// The quantity is below `bound`.
    Below { bound: f64 },
}

impl Expectation {
    /// The verdict for an estimate, and a sentence saying why.
    pub fn judge(&self, e: &Estimate) -> (Verdict, String) {
        if !e.value.is_finite() {
            return (Verdict::Inconclusive, format!("not measured ({})", e.method));
        }
        if !e.has_interval() {
            return (Verdict::Inconclusive, "the measurement has no confidence interval (too few points)".into());
        }
        let ci = format!("CI [{}, {}]", num(e.low), num(e.high));
        match self {
            Expectation::Near { value, tolerance, alternatives } => {
                let (lo, hi) = (value - tolerance, value + tolerance);
                if e.high < lo || e.low > hi {
                    return (Verdict::Deviates, format!("{ci} lies outside [{}, {}], the tolerance around {}", num(lo), num(hi), num(*value)));
                }
                let inside = e.low >= lo && e.high <= hi;
                let hit: Vec<String> = alternatives.iter().filter(|a| **a >= e.low && **a <= e.high).map(|a| num(*a)).collect();
                if inside && hit.is_empty() {
                    (Verdict::Holds, format!("{ci} lies inside [{}, {}]", num(lo), num(hi)))
                } else if !hit.is_empty() {
                    (Verdict::Inconclusive, format!("{ci} contains the alternative {}", hit.join(" and ")))
                } else {
                    (Verdict::Inconclusive, format!("{ci} reaches outside [{}, {}], the tolerance around {}", num(lo), num(hi), num(*value)))
                }
            }
            Expectation::Above { bound } => {
                if e.low > *bound {
                    (Verdict::Holds, format!("{ci} lies above {}", num(*bound)))
                } else if e.high < *bound {
                    (Verdict::Deviates, format!("{ci} lies below {}", num(*bound)))
                } else {
                    (Verdict::Inconclusive, format!("{ci} contains {}", num(*bound)))
                }
            }
            Expectation::Below { bound } => {
                if e.high < *bound {
                    (Verdict::Holds, format!("{ci} lies below {}", num(*bound)))
                } else if e.low > *bound {
                    (Verdict::Deviates, format!("{ci} lies above {}", num(*bound)))
                } else {
                    (Verdict::Inconclusive, format!("{ci} contains {}", num(*bound)))
                }
            }
        }
    }

    /// `-0.50 +- 0.25 (not -1.00, +0.00)`, `> +0.00`.
    pub fn display(&self) -> String {
        match self {
            Expectation::Near { value, tolerance, alternatives } => {
                let alt = if alternatives.is_empty() { String::new() } else { format!(" (not {})", alternatives.iter().map(|a| num(*a)).collect::<Vec<_>>().join(", ")) };
                format!("{} +- {:.2}{alt}", num(*value), tolerance)
            }
            Expectation::Above { bound } => format!("> {}", num(*bound)),
            Expectation::Below { bound } => format!("< {}", num(*bound)),
        }
    }
}

/// The clean width exponents the paper's learning-rate and update claims choose between.
pub const CLEAN_EXPONENTS: [f64; 7] = [-1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5];

/// One claim: what is asserted, by whom, and (once measured) the evidence and verdict.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Claim {
    /// Short id, unique within its notebook (`5.1-CE-max`).
    pub id: String,
    pub kind: Kind,
    /// Where the paper says it (`Table F.1`, `Fig. 4 / E.1`), or what widthlab's extension
    /// builds on.
    pub source: String,
    /// The claim in one sentence.
    pub statement: String,
    /// The paper's own number or wording, where it gives one (`-0.70 (Table F.1)`).
    pub paper: String,
    /// What the measurement must show (set by [`Claim::near`], [`Claim::exponent`],
    /// [`Claim::above`] or [`Claim::below`]).
    pub expectation: Option<Expectation>,
    /// Why the tolerance is what it is (one line); empty for ordinal claims.
    pub tolerance_reason: String,
    /// What limits this measurement at the profile it ran (scale, steps, seeds, grid), shown
    /// when the claim does not hold.
    pub caveat: String,
    /// The measurement (set by [`Claims::add`]).
    pub measured: Option<Estimate>,
    pub verdict: Option<Verdict>,
    /// Why the verdict is what it is, from the interval.
    pub reason: String,
}

impl Claim {
    fn new(kind: Kind, id: &str, source: &str, statement: &str) -> Self {
        Claim {
            id: id.into(),
            kind,
            source: source.into(),
            statement: statement.into(),
            paper: String::new(),
            expectation: None,
            tolerance_reason: String::new(),
            caveat: String::new(),
            measured: None,
            verdict: None,
            reason: String::new(),
        }
    }

    /// A claim the paper makes (`source`: its section, figure or table).
    pub fn paper(id: &str, source: &str, statement: &str) -> Self {
        Claim::new(Kind::Paper, id, source, statement)
    }

    /// A claim beyond the paper.
    pub fn extension(id: &str, source: &str, statement: &str) -> Self {
        Claim::new(Kind::Extension, id, source, statement)
    }

    /// The quantity is `value +- tolerance` (`reason`: why that tolerance) and none of
    /// `alternatives`.
    pub fn near(mut self, value: f64, tolerance: f64, reason: &str, alternatives: &[f64]) -> Self {
        self.expectation = Some(Expectation::Near { value, tolerance, alternatives: alternatives.to_vec() });
        self.tolerance_reason = reason.into();
        self
    }

    /// A width exponent `e` decided against the neighbouring clean exponents in
    /// [`CLEAN_EXPONENTS`] (`e +- 1/2`): the tolerance is half the distance to them, so a
    /// claim holds only when its interval lies nearer `e` than any neighbour.
    pub fn exponent(self, e: f64) -> Self {
        let alts: Vec<f64> = CLEAN_EXPONENTS.iter().copied().filter(|a| (a - e).abs() > 1e-9 && (a - e).abs() <= 0.5 + 1e-9).collect();
        self.near(e, 0.25, "half the distance to the neighbouring clean exponents", &alts)
    }

    /// An ordinal claim: the quantity (a difference `A - B`) is above `bound`.
    pub fn above(mut self, bound: f64) -> Self {
        self.expectation = Some(Expectation::Above { bound });
        self
    }

    /// An ordinal claim: the quantity is below `bound`.
    pub fn below(mut self, bound: f64) -> Self {
        self.expectation = Some(Expectation::Below { bound });
        self
    }

    /// The paper's own number or wording.
    pub fn paper_says(mut self, text: &str) -> Self {
        self.paper = text.into();
        self
    }

    /// What limits the measurement at this profile (shown when the claim does not hold).
    pub fn caveat(mut self, text: &str) -> Self {
        self.caveat = text.into();
        self
    }

    /// The verdict of this claim for `estimate` at `profile` (structural at smoke).
    fn judge(&mut self, expectation: &Expectation, estimate: Estimate, profile: Profile) {
        let (v, reason) = expectation.judge(&estimate);
        self.verdict = Some(if profile == Profile::Smoke { Verdict::Structural } else { v });
        self.reason = reason;
        self.measured = Some(estimate);
    }
}

/// The claims of one notebook run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    pub notebook: String,
    pub profile: Profile,
    pub claims: Vec<Claim>,
    /// Seconds since the Unix epoch when written.
    pub written_at: u64,
}

impl Claims {
    pub fn new(notebook: &str, profile: Profile) -> Self {
        Claims { notebook: notebook.into(), profile, claims: vec![], written_at: 0 }
    }

    /// Records `claim` with its measurement and returns the verdict (`Structural` at smoke).
    /// An id used twice is an error.
    pub fn add(&mut self, mut claim: Claim, estimate: impl Into<Option<Estimate>>) -> Result<Verdict> {
        if self.claims.iter().any(|c| c.id == claim.id) {
            return Err(Error::config(format!("claim id `{}` used twice in {}", claim.id, self.notebook)));
        }
        let expectation = claim.expectation.clone().ok_or_else(|| Error::config(format!("claim `{}` has no expectation (near, exponent, above or below)", claim.id)))?;
        let estimate = estimate.into().unwrap_or_else(|| Estimate::missing("no measurement"));
        claim.judge(&expectation, estimate, self.profile);
        let v = claim.verdict.unwrap_or(Verdict::Inconclusive);
        println!("claim {} [{}]: {} -> {}", claim.id, claim.kind, claim.measured.as_ref().map_or(String::new(), |m| m.display()), v);
        self.claims.push(claim);
        Ok(v)
    }

    /// Counts of `(kind, verdict)`.
    pub fn counts(&self) -> std::collections::BTreeMap<(Kind, Verdict), usize> {
        let mut m = std::collections::BTreeMap::new();
        for c in &self.claims {
            *m.entry((c.kind, c.verdict.unwrap_or(Verdict::Inconclusive))).or_insert(0) += 1;
        }
        m
    }

    /// The claims as a text table: id, kind, measured value and CI, expectation, verdict.
    pub fn table(&self) -> String {
        let mut s = format!("{:<22} {:<9} {:<30} {:<28} {}\n", "id", "kind", "measured [95% CI]", "expected", "verdict");
        for c in &self.claims {
            let m = c.measured.as_ref().map_or("-".into(), |m| m.display());
            s += &format!("{:<22} {:<9} {:<30} {:<28} {}\n", c.id, c.kind.to_string(), m, c.expectation.as_ref().map_or("-".into(), |e| e.display()), c.verdict.map_or("-".into(), |v| v.to_string()));
        }
        s
    }

    /// Prints the table, writes `claims/<notebook>.json` (atomically), and at `smoke` fails
    /// when a measurement is missing (the structure of the notebook is broken). At `quick` and
    /// `paper` verdicts are results and never fail the notebook.
    pub fn finish(&mut self) -> Result<()> {
        self.written_at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        print!("{}", self.table());
        let dir = crate::report::out_dir().join("claims");
        let path = dir.join(format!("{}.json", self.notebook));
        crate::files::write_atomic(&path, serde_json::to_string_pretty(self)?.as_bytes())?;
        let counts = self.counts();
        let line: Vec<String> = counts.iter().map(|((k, v), n)| format!("{n} {k} {v}")).collect();
        println!("{} claims ({} profile): {}; written to {}", self.claims.len(), self.profile, line.join(", "), path.display());
        if self.profile == Profile::Smoke {
            let missing: Vec<&Claim> = self.claims.iter().filter(|c| !c.measured.as_ref().is_some_and(|m| m.value.is_finite())).collect();
            for c in &missing {
                println!("{FAILED_MARKER} {} [{}]: no measurement ({})", c.statement, c.id, c.measured.as_ref().map_or("", |m| m.method.as_str()));
            }
            if !missing.is_empty() {
                return Err(Error::config(format!("{} of {} claims have no measurement", missing.len(), self.claims.len())));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn est(v: f64, lo: f64, hi: f64) -> Estimate {
        Estimate::new(v, lo, hi, "test")
    }

    #[test]
    fn exponent_claims_decide_between_clean_exponents() {
        let c = Claim::paper("x", "Table F.1", "CE max-stable exponent -1/2").exponent(-0.5);
        let Some(Expectation::Near { value, tolerance, alternatives }) = &c.expectation else { panic!() };
        assert_eq!((*value, *tolerance), (-0.5, 0.25));
        assert_eq!(alternatives, &vec![-1.0, 0.0]);
        let e = c.expectation.as_ref().unwrap();
        // inside the band
        assert_eq!(e.judge(&est(-0.55, -0.7, -0.4)).0, Verdict::Holds);
        // a CI that straddles two alternatives is inconclusive
        let (v, why) = e.judge(&est(-0.5, -1.1, 0.1));
        assert_eq!(v, Verdict::Inconclusive);
        assert!(why.contains("-1.00") && why.contains("+0.00"), "{why}");
        // reaching out of the band without an alternative: inconclusive
        assert_eq!(e.judge(&est(-0.6, -0.8, -0.4)).0, Verdict::Inconclusive);
        // a CI beyond the tolerance deviates
        let (v, why) = e.judge(&est(-0.95, -1.05, -0.85));
        assert_eq!(v, Verdict::Deviates);
        assert!(why.contains("outside"), "{why}");
        assert_eq!(e.judge(&est(0.1, -0.2, 0.3)).0, Verdict::Deviates);
        // no interval, or no value
        assert_eq!(e.judge(&est(-0.5, f64::NAN, f64::NAN)).0, Verdict::Inconclusive);
        assert_eq!(e.judge(&Estimate::missing("none")).0, Verdict::Inconclusive);
    }

    #[test]
    fn near_with_an_alternative_inside_the_band_needs_the_ci_to_exclude_it() {
        let e = Expectation::Near { value: 0.0, tolerance: 0.3, alternatives: vec![0.2] };
        assert_eq!(e.judge(&est(0.0, -0.1, 0.1)).0, Verdict::Holds);
        assert_eq!(e.judge(&est(0.1, 0.0, 0.25)).0, Verdict::Inconclusive);
    }

    #[test]
    fn ordinal_claims_use_the_difference_interval() {
        let ce = est(-0.5, -0.6, -0.4);
        let mse = est(-1.0, -1.1, -0.9);
        let d = ce.minus(&mse);
        assert!((d.value - 0.5).abs() < 1e-12);
        let half = (0.1f64 * 0.1 + 0.1 * 0.1).sqrt();
        assert!((d.low - (0.5 - half)).abs() < 1e-12 && (d.high - (0.5 + half)).abs() < 1e-12);
        let above = Expectation::Above { bound: 0.0 };
        assert_eq!(above.judge(&d).0, Verdict::Holds);
        // the same exponents with wide intervals: the difference's CI contains 0
        let wide = est(-0.5, -1.0, 0.0).minus(&est(-0.7, -1.2, -0.2));
        assert_eq!(above.judge(&wide).0, Verdict::Inconclusive);
        assert_eq!(above.judge(&mse.minus(&ce)).0, Verdict::Deviates);
        let below = Expectation::Below { bound: 0.0 };
        assert_eq!(below.judge(&mse.minus(&ce)).0, Verdict::Holds);
        assert_eq!(below.judge(&d).0, Verdict::Deviates);
    }

    #[test]
    fn estimates_from_samples_fits_and_proportions() {
        let m = Estimate::mean(&[1.0, 2.0, 3.0], "seeds");
        // t_{0.975, 2} = 4.303
        let half = 4.302_652_729_911_275 * (1.0f64 / 3.0).sqrt();
        assert!((m.value - 2.0).abs() < 1e-12 && (m.high - 2.0 - half).abs() < 1e-9, "{m:?}");
        assert!(!Estimate::mean(&[1.0], "seeds").has_interval());
        let p = Estimate::proportion(18, 20, "seeds");
        // Wilson interval of 18/20: [0.699, 0.972]
        assert!((p.low - 0.699).abs() < 1e-3 && (p.high - 0.972).abs() < 1e-3, "{p:?}");
        let fit = crate::fit::fit_power_law(&[64.0, 128.0, 256.0, 512.0], &[1.0, 0.72, 0.49, 0.36]).unwrap();
        let e = Estimate::from(fit);
        assert_eq!((e.value, e.low, e.high), (fit.exponent, fit.ci_low, fit.ci_high));
        let w = e.clone().widen(0.1, "the grid");
        assert!((w.low - e.low + 0.1).abs() < 1e-12 && w.method.contains("grid"));
        assert_eq!(Estimate::exact(2.0, "x").half_width(), 0.0);
    }

    #[test]
    fn smoke_is_structural_and_fails_only_on_missing_measurements() {
        let dir = tempfile::tempdir().unwrap();
        // (no other test reads WIDTHLAB_OUT)
        std::env::set_var("WIDTHLAB_OUT", dir.path());
        let claim = || Claim::paper("a", "Fig. 4", "readout effective update n^1/2").exponent(0.5);
        let mut quick = Claims::new("t-quick", Profile::Quick);
        assert_eq!(quick.add(claim(), est(0.1, 0.0, 0.2)).unwrap(), Verdict::Deviates);
        assert!(quick.add(claim(), est(0.5, 0.4, 0.6)).is_err(), "duplicate id");
        assert_eq!(quick.add(Claim::extension("b", "-", "x").above(0.0), None).unwrap(), Verdict::Inconclusive);
        assert!(quick.add(Claim::paper("c", "-", "no expectation"), est(1.0, 0.0, 2.0)).is_err());
        quick.finish().unwrap();
        let back: Claims = serde_json::from_str(&std::fs::read_to_string(dir.path().join("claims/t-quick.json")).unwrap()).unwrap();
        // NaN (not measured) round-trips through null
        assert_eq!(serde_json::to_string(&back).unwrap(), serde_json::to_string(&quick).unwrap());
        assert!(back.claims[1].measured.as_ref().unwrap().value.is_nan());
        assert_eq!(back.claims[0].verdict, Some(Verdict::Deviates));
        assert_eq!(back.counts()[&(Kind::Paper, Verdict::Deviates)], 1);
        let mut smoke = Claims::new("t-smoke", Profile::Smoke);
        assert_eq!(smoke.add(claim(), est(0.1, f64::NAN, f64::NAN)).unwrap(), Verdict::Structural);
        smoke.finish().unwrap();
        smoke.add(Claim::paper("b", "-", "missing").exponent(0.0), Estimate::missing("fit failed")).unwrap();
        assert!(smoke.finish().unwrap_err().to_string().contains("1 of 2 claims have no measurement"));
        std::env::remove_var("WIDTHLAB_OUT");
    }
}
