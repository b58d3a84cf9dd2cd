//! A search's results per setting and width, the fitted width exponents with intervals that
//! hold the seed spread and the search's resolution, and the text table. See [`super`].
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::algo::{curve_of, Edge, MaxStable, Optimum, Probe, SeedOptimum};
use super::{Find, Group, GroupResult, SearchSpec};
use crate::fit::{fit_power_law, resolution_bound, PowerLaw};
use crate::sweep::analysis::{group_labels, Instability, LrAnalysis, Objective, WidthLr};
use crate::Result;

/// A fitted width exponent of searched learning rates.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExponentFit {
    pub exponent: f64,
    /// The 95% interval of the least-squares fit over the points (every seed at every width,
    /// Student t): holds the spread over seeds and widths.
    pub ci_low: f64,
    pub ci_high: f64,
    /// The worst-case change of the exponent from the search's resolution
    /// ([`crate::fit::resolution_bound`] of the points' widths, with the largest half-bracket
    /// or half local spacing among the points).
    pub resolution: f64,
    /// `[ci_low - resolution, ci_high + resolution]`: the interval to judge claims by.
    pub low: f64,
    pub high: f64,
    /// Points fitted, distinct widths among them, and points left out (an edge or optimum at
    /// a limit of the searched range).
    pub points: usize,
    pub widths: usize,
    pub excluded: usize,
    pub fit: PowerLaw,
}

impl ExponentFit {
    /// Fits `values ~ widths^e`; each value known to within `+- half_octave` (log2).
    fn new(widths: &[f64], values: &[f64], half_octave: f64, excluded: usize) -> Option<ExponentFit> {
        let fit = fit_power_law(widths, values).ok()?;
        let resolution = resolution_bound(widths, half_octave);
        let mut distinct: Vec<i64> = widths.iter().map(|w| w.round() as i64).collect();
        distinct.sort_unstable();
        distinct.dedup();
        Some(ExponentFit {
            exponent: fit.exponent,
            ci_low: fit.ci_low,
            ci_high: fit.ci_high,
            resolution,
            low: fit.ci_low - resolution,
            high: fit.ci_high + resolution,
            points: fit.points,
            widths: distinct.len(),
            excluded,
            fit,
        })
    }

    /// As a claim's estimate: the fit's interval widened by the resolution.
    pub fn estimate(&self) -> crate::claims::Estimate {
        crate::claims::Estimate::exponent(&self.fit).widen(self.resolution, "the search's resolution")
    }

    /// `-0.52 [-0.60, -0.44] +- 0.04 resolution = [-0.64, -0.40] (15 points, 5 widths)`.
    pub fn display(&self) -> String {
        let mut s = format!(
            "{:+.3} [{:+.3}, {:+.3}] +- {:.3} resolution = [{:+.3}, {:+.3}] ({} points, {} widths",
            self.exponent, self.ci_low, self.ci_high, self.resolution, self.low, self.high, self.points, self.widths
        );
        if self.excluded > 0 {
            s += &format!(", {} at a limit left out", self.excluded);
        }
        s + ")"
    }
}

/// One width of a setting.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WidthSearch {
    pub width: f64,
    /// Every group of this width finished.
    pub complete: bool,
    /// Per seed (ascending), if searched.
    pub max_stable: Vec<MaxStable>,
    pub optimum: Option<Optimum>,
}

impl WidthSearch {
    /// The seeds' first unstable learning rates' median-like value: the smallest learning
    /// rate at which at least half of the seeds are unstable (under monotonicity), the
    /// seed-averaged curve's minimal unstable learning rate in the grid analysis's sense.
    pub fn max_stable_lr(&self) -> Option<f64> {
        let mut us: Vec<f64> = self.max_stable.iter().map(|m| m.first_unstable.unwrap_or(f64::INFINITY)).collect();
        us.sort_by(f64::total_cmp);
        us.get(us.len().div_ceil(2).max(1) - 1).copied().filter(|u| u.is_finite())
    }
}

/// One setting (everything but width, lr and seed fixed) across widths.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SettingSearch {
    /// The coordinates that vary between the search's settings (or the main ones).
    pub label: String,
    pub coords: BTreeMap<String, Value>,
    pub instability: Instability,
    pub widths: Vec<WidthSearch>,
    /// Width exponent of the max-stable learning rate (every seed's first unstable learning
    /// rate at every width).
    pub max_stable_fit: Option<ExponentFit>,
    /// Width exponent of the per-seed optima.
    pub optimal_fit: Option<ExponentFit>,
    /// Width exponent of the seed-averaged curves' optima (one point per width).
    pub optimal_mean_fit: Option<ExponentFit>,
    /// The same results in the grid analysis's form, for its table, figures and helpers
    /// ([`crate::sweep::analysis::optimal_gap`], `curves_figure`, `exponents_figure`): the
    /// seed-averaged curve of every width's probes, optima, minimal unstable learning rates.
    pub lr: LrAnalysis,
}

/// The analysis of a search.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SearchAnalysis {
    pub name: String,
    pub find: Find,
    pub objective: Objective,
    /// Groups of the search and how many finished.
    pub groups: usize,
    pub complete: usize,
    pub settings: Vec<SettingSearch>,
}

impl SearchAnalysis {
    /// Whether every group finished.
    pub fn is_complete(&self) -> bool {
        self.complete == self.groups
    }

    /// The setting whose coordinates match every `(name, value)` (values as plain text:
    /// `("loss", "ce")`).
    pub fn find(&self, want: &[(&str, &str)]) -> Option<&SettingSearch> {
        self.settings.iter().find(|s| want.iter().all(|(k, v)| s.coords.get(*k).is_some_and(|c| crate::sweep::plain(c) == *v)))
    }

    /// Every setting's table.
    pub fn table(&self) -> String {
        let mut s = format!("search {}: {}/{} groups complete\n", self.name, self.complete, self.groups);
        for st in &self.settings {
            s += &st.table(self.objective);
            s += "\n";
        }
        s
    }
}

/// `2^-1.125`.
fn pow2(lr: f64) -> String {
    format!("2^{:+.3}", lr.log2())
}

impl SettingSearch {
    /// Per width and seed the max-stable bracket and the optimum, per width the seed-averaged
    /// optimum, then the exponents and any monotonicity violations.
    pub fn table(&self, objective: Objective) -> String {
        let mut s = format!("{} ({}; unstable: {})\n", self.label, objective.label(), self.instability);
        s += &format!("{:>7} {:>6} {:>26} {:>14} {:>9}\n", "width", "seed", "max-stable bracket", "optimal lr", "value");
        let opt = |o: &SeedOptimum| format!("{:>14} {:>9.4}{}", pow2(o.lr), o.value, if o.bracketed { "" } else { " (at a limit)" });
        for w in &self.widths {
            let seeds: Vec<u64> = if !w.max_stable.is_empty() { w.max_stable.iter().map(|m| m.seed).collect() } else { w.optimum.iter().flat_map(|o| o.per_seed.iter().filter_map(|p| p.seed)).collect() };
            for (i, seed) in seeds.iter().enumerate() {
                let bracket = w.max_stable.get(i).map_or(String::new(), |m| match m.edge {
                    Edge::Bracketed => format!("[{}, {}]", pow2(m.last_stable.unwrap_or(f64::NAN)), pow2(m.first_unstable.unwrap_or(f64::NAN))),
                    Edge::NoUnstable => format!("stable up to {}", pow2(m.last_stable.unwrap_or(f64::NAN))),
                    Edge::NoStable => format!("unstable down to {}", pow2(m.first_unstable.unwrap_or(f64::NAN))),
                });
                let o = w.optimum.as_ref().and_then(|o| o.per_seed.get(i)).map_or(String::new(), opt);
                s += &format!("{:>7} {:>6} {:>26} {}\n", w.width, seed, bracket, o);
            }
            if let Some(o) = &w.optimum {
                s += &format!("{:>7} {:>6} {:>26} {}  (+- {} octave)\n", w.width, "mean", "", opt(&o.mean), o.mean.resolution);
            }
            if !w.complete {
                s += &format!("{:>7} unfinished\n", w.width);
            }
        }
        for (name, f) in [("max-stable", &self.max_stable_fit), ("optimal (per seed)", &self.optimal_fit), ("optimal (seed-averaged)", &self.optimal_mean_fit)] {
            if let Some(f) = f {
                s += &format!("{name} lr exponent {}\n", f.display());
            }
        }
        let violations: Vec<String> = self
            .widths
            .iter()
            .flat_map(|w| w.max_stable.iter().flat_map(move |m| m.violations.iter().map(move |p: &Probe| format!("width {} seed {}: {} at {}", w.width, m.seed, if p.unstable { "unstable" } else { "stable" }, pow2(p.lr)))))
            .collect();
        if !violations.is_empty() {
            s += &format!("{} probes contradict the monotonicity assumption: {}\n", violations.len(), violations.join("; "));
        }
        s
    }
}

/// Groups' results by setting and width, with fits.
pub(super) fn build(spec: &SearchSpec, groups: &[Group], results: Vec<GroupResult>) -> Result<SearchAnalysis> {
    let complete = results.iter().filter(|r| r.complete).count();
    // setting id -> (coords, rule, width -> results)
    let mut settings: BTreeMap<String, (BTreeMap<String, Value>, Instability, BTreeMap<i64, Vec<(&Group, GroupResult)>>)> = BTreeMap::new();
    for (g, r) in groups.iter().zip(results) {
        let id = crate::sweep::canonical_json(&serde_json::to_value(&g.setting)?);
        let entry = settings.entry(id).or_insert_with(|| (g.setting.clone(), g.rule, BTreeMap::new()));
        entry.2.entry(g.width as i64).or_default().push((g, r));
    }
    let labels = group_labels(&settings.values().map(|s| &s.0).collect::<Vec<_>>());
    let mut out = vec![];
    for ((coords, rule, by_width), label) in settings.into_values().zip(labels) {
        let mut widths = vec![];
        for (w, parts) in by_width {
            let mut max_stable: Vec<MaxStable> = parts.iter().flat_map(|(_, r)| r.max_stable.clone()).collect();
            max_stable.sort_by_key(|m| m.seed);
            let optimum = parts.iter().find_map(|(_, r)| r.optimum.clone());
            widths.push(WidthSearch { width: w as f64, complete: parts.iter().all(|(_, r)| r.complete), max_stable, optimum });
        }
        out.push(setting(spec, label, coords, rule, widths));
    }
    Ok(SearchAnalysis { name: spec.name.clone(), find: spec.search.find, objective: spec.search.objective, groups: groups.len(), complete, settings: out })
}

fn setting(spec: &SearchSpec, label: String, coords: BTreeMap<String, Value>, instability: Instability, widths: Vec<WidthSearch>) -> SettingSearch {
    // Max-stable: every bracketed seed's first unstable lr, known to within half a bracket.
    let (mut ns, mut ys, mut half, mut out) = (vec![], vec![], 0f64, 0);
    for w in widths.iter().filter(|w| w.complete) {
        for m in &w.max_stable {
            match (m.edge, m.first_unstable, m.octaves()) {
                (Edge::Bracketed, Some(u), Some(o)) => {
                    ns.push(w.width);
                    ys.push(u);
                    half = half.max(o / 2.0);
                }
                _ => out += 1,
            }
        }
    }
    let max_stable_fit = ExponentFit::new(&ns, &ys, half, out);
    // Optima: bracketed ones, known to within their resolution.
    let optima = |pick: &dyn Fn(&Optimum) -> Vec<&SeedOptimum>| {
        let (mut ns, mut ys, mut half, mut out) = (vec![], vec![], 0f64, 0);
        for w in widths.iter().filter(|w| w.complete) {
            for o in w.optimum.iter().flat_map(pick) {
                if o.bracketed {
                    ns.push(w.width);
                    ys.push(o.lr);
                    half = half.max(o.resolution);
                } else {
                    out += 1;
                }
            }
        }
        ExponentFit::new(&ns, &ys, half, out)
    };
    let optimal_fit = optima(&|o| o.per_seed.iter().collect());
    let optimal_mean_fit = optima(&|o| vec![&o.mean]);
    // The grid analysis's view.
    let lr_widths = widths
        .iter()
        .filter(|w| w.complete)
        .map(|w| {
            let probes: Vec<Probe> = match &w.optimum {
                Some(o) => o.probes.clone(),
                None => w.max_stable.iter().flat_map(|m| m.probes.clone()).collect(),
            };
            let per_seed = match &w.optimum {
                Some(o) => o.per_seed.iter().map(|p| (p.seed.unwrap_or(0), p.lr, w.max_stable.iter().find(|m| Some(m.seed) == p.seed).and_then(|m| m.first_unstable))).collect(),
                None => w.max_stable.iter().map(|m| (m.seed, f64::NAN, m.first_unstable)).collect(),
            };
            WidthLr {
                width: w.width,
                curve: curve_of(&probes),
                optimal_lr: w.optimum.as_ref().map_or(f64::NAN, |o| o.mean.lr),
                optimal_value: w.optimum.as_ref().map_or(f64::NAN, |o| o.mean.value),
                max_stable_lr: w.max_stable_lr(),
                per_seed,
            }
        })
        .collect();
    let lr = LrAnalysis {
        label: label.clone(),
        coords: coords.clone(),
        objective: spec.search.objective,
        instability,
        widths: lr_widths,
        optimal_fit: optimal_fit.as_ref().map(|f| f.fit),
        max_stable_fit: max_stable_fit.as_ref().map(|f| f.fit),
    };
    SettingSearch { label, coords, instability, widths, max_stable_fit, optimal_fit, optimal_mean_fit, lr }
}
