//! The two searches on the learning-rate lattice `lr = 2^(m/64)` ([`crate::sweep::pow2_lattice`]),
//! written against an [`Oracle`] that returns the stability and objective of runs: the
//! store-backed oracle of [`super`] trains or reads stored runs, the tests' oracles are
//! synthetic functions. All positions are lattice points (integers `m`, 64ths of an octave),
//! so the arithmetic is exact and the probed learning rates are bit-exact.
//!
//! - [`MaxStableSearch`]: one seed's stability edge by a bracket that extends itself and
//!   bisection, a state machine so that the seeds of a width advance in lockstep and their
//!   probes run in parallel ([`max_stable`]).
//! - [`optimal`]: the optimum of a width over its seeds: a coarse pass that brackets the
//!   optimum of the seed-averaged curve, then local grids that halve their spacing around the
//!   best points down to the finest spacing.
//!
//! Both give up with a record, never loop: every probe moves a bracket end by at least one
//! resolution step or a coarse step towards a limit.
use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::sweep::analysis::{optimum, CurvePoint, Objective};
use crate::sweep::{pow2_lattice, LATTICE};
use crate::Result;

/// One probe: a run of one seed at one learning rate, judged.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Probe {
    /// The lattice point: `lr = 2^(m/64)`.
    pub m: i64,
    pub lr: f64,
    pub seed: u64,
    /// Unstable by the search's rule.
    pub unstable: bool,
    /// The objective (the worst value for a diverged run).
    pub value: f64,
    /// The run's key in the store.
    pub key: String,
}

/// Evaluates probes: `(m, i)` is seed `i` of the group (an index into its seeds) at lattice
/// point `m`. Returns the probes in the order asked, or `None` when the search cannot go on
/// now (the invocation's run limit, a run left to another process, a run missing from a
/// store that is only read).
pub(crate) trait Oracle {
    fn eval(&self, batch: &[(i64, usize)]) -> Result<Option<Vec<Probe>>>;
}

/// The search parameters of one width, in lattice units (64ths of an octave).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Lattice {
    /// Initial bracket of the max-stable search, moved for the width (`lo < hi`).
    pub lo: i64,
    pub hi: i64,
    /// Bracket extension step.
    pub step: i64,
    /// Final bracket width of the bisection.
    pub res: i64,
    /// The range searched: nothing is probed outside `[min, max]`.
    pub min: i64,
    pub max: i64,
    /// Optimal search: coarse spacing, finest local spacing (`coarse = refine 2^k`), the
    /// least extent of the coarse pass below its top, and how far below the best coarse
    /// point it reaches at least.
    pub coarse: i64,
    pub refine: i64,
    pub span: i64,
    pub margin: i64,
    /// Refine around every seed's best point too (not only the seed-averaged one).
    pub refine_each_seed: bool,
}

/// Lattice units as octaves.
pub fn octaves(m: i64) -> f64 {
    m as f64 / LATTICE as f64
}

/// How a max-stable search ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Edge {
    /// A stable and an unstable probe at most the resolution apart: the edge is in between.
    Bracketed,
    /// Every probe up to the upper limit was stable (the search gave up).
    NoUnstable,
    /// Every probe down to the lower limit was unstable (the search gave up).
    NoStable,
}

/// The max-stable learning rate of one seed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MaxStable {
    pub seed: u64,
    pub edge: Edge,
    /// The highest stable probe below the edge (`None` for [`Edge::NoStable`]).
    pub last_stable: Option<f64>,
    /// The lowest unstable probe above it (`None` for [`Edge::NoUnstable`]): the paper's
    /// "minimal unstable learning rate", on a lattice of the search's resolution.
    pub first_unstable: Option<f64>,
    /// Both as lattice points (`log2 lr` in 64ths of an octave).
    pub last_stable_m: Option<i64>,
    pub first_unstable_m: Option<i64>,
    /// Every probe of the search, in the order made.
    pub probes: Vec<Probe>,
    /// Probes of the optimal search (same seed) that contradict the monotonicity assumption:
    /// stable above `first_unstable`, or unstable between this seed's optimum and
    /// `last_stable`. Empty when the optimum was not searched.
    pub violations: Vec<Probe>,
}

impl MaxStable {
    /// `log2(first_unstable / last_stable)`, the bracket's width in octaves.
    pub fn octaves(&self) -> Option<f64> {
        Some(octaves(self.first_unstable_m? - self.last_stable_m?))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Probe the bracket's top.
    Start,
    /// The top was unstable: probe the bracket's bottom.
    CheckLow { hi: i64 },
    /// Stable at `lo`: probe one step up.
    Up { lo: i64 },
    /// Unstable at `hi`: probe one step down.
    Down { hi: i64 },
    Bisect { lo: i64, hi: i64 },
    Done(Edge, Option<i64>, Option<i64>),
}

/// The max-stable search of one seed as a state machine: [`MaxStableSearch::next`] names the
/// lattice point to probe, [`MaxStableSearch::feed`] takes its result.
///
/// Assumption (monotonicity): runs are stable below some edge and unstable above it. Then
/// the bracket `[last stable, first unstable]` holds the edge. Start: probe the top `hi` of
/// the initial bracket; if stable, step up by `step` until a probe is unstable (the last
/// stable one is the bracket's bottom); if unstable, probe the bottom `lo` and step down
/// until a probe is stable. Then bisect (midpoints on the resolution lattice) until the
/// bracket is `res` wide. When the assumption fails the search still ends, at *a*
/// stable-to-unstable transition; the optimal search's extra probes reveal violations
/// ([`MaxStable::violations`]).
#[derive(Clone, Debug)]
pub(crate) struct MaxStableSearch {
    lat: Lattice,
    seed: u64,
    phase: Phase,
    probes: Vec<Probe>,
}

impl MaxStableSearch {
    pub fn new(lat: Lattice, seed: u64) -> Self {
        MaxStableSearch { lat, seed, phase: Phase::Start, probes: vec![] }
    }

    /// The next lattice point to probe (`None`: done).
    pub fn next(&self) -> Option<i64> {
        let l = &self.lat;
        match self.phase {
            Phase::Start => Some(l.hi),
            Phase::CheckLow { .. } => Some(l.lo),
            Phase::Up { lo } => Some((lo + l.step).min(l.max)),
            Phase::Down { hi } => Some((hi - l.step).max(l.min)),
            // hi - lo is a multiple of res and at least 2 res: the midpoint is inside.
            Phase::Bisect { lo, hi } => Some(lo + (hi - lo) / l.res / 2 * l.res),
            Phase::Done(..) => None,
        }
    }

    fn up_from(&self, m: i64) -> Phase {
        if m >= self.lat.max {
            Phase::Done(Edge::NoUnstable, Some(m), None)
        } else {
            Phase::Up { lo: m }
        }
    }

    fn down_from(&self, m: i64) -> Phase {
        if m <= self.lat.min {
            Phase::Done(Edge::NoStable, None, Some(m))
        } else {
            Phase::Down { hi: m }
        }
    }

    fn bisect(&self, lo: i64, hi: i64) -> Phase {
        if hi - lo <= self.lat.res {
            Phase::Done(Edge::Bracketed, Some(lo), Some(hi))
        } else {
            Phase::Bisect { lo, hi }
        }
    }

    /// Takes the result of the probe at [`MaxStableSearch::next`].
    pub fn feed(&mut self, p: Probe) {
        let (m, unstable) = (p.m, p.unstable);
        debug_assert_eq!(Some(m), self.next());
        self.probes.push(p);
        self.phase = match self.phase {
            Phase::Start if unstable => Phase::CheckLow { hi: m },
            Phase::Start => self.up_from(m),
            Phase::CheckLow { .. } if unstable => self.down_from(m),
            Phase::CheckLow { hi } => self.bisect(m, hi),
            Phase::Up { lo } if unstable => self.bisect(lo, m),
            Phase::Up { .. } => self.up_from(m),
            Phase::Down { .. } if unstable => self.down_from(m),
            Phase::Down { hi } => self.bisect(m, hi),
            Phase::Bisect { lo, .. } if unstable => self.bisect(lo, m),
            Phase::Bisect { hi, .. } => self.bisect(m, hi),
            done @ Phase::Done(..) => done,
        };
    }

    /// The result, once done.
    pub fn result(&self) -> Option<MaxStable> {
        let Phase::Done(edge, lo, hi) = self.phase else { return None };
        Some(MaxStable {
            seed: self.seed,
            edge,
            last_stable: lo.map(pow2_lattice),
            first_unstable: hi.map(pow2_lattice),
            last_stable_m: lo,
            first_unstable_m: hi,
            probes: self.probes.clone(),
            violations: vec![],
        })
    }
}

/// The max-stable searches of several seeds (`seeds[i]` is seed index `i` of the oracle), in
/// lockstep: each round probes every unfinished seed at once. `None` if the oracle stopped.
pub(crate) fn max_stable(oracle: &dyn Oracle, lat: Lattice, seeds: &[u64]) -> Result<Option<Vec<MaxStable>>> {
    let mut searches: Vec<MaxStableSearch> = seeds.iter().map(|&s| MaxStableSearch::new(lat, s)).collect();
    loop {
        let batch: Vec<(i64, usize)> = searches.iter().enumerate().filter_map(|(i, s)| s.next().map(|m| (m, i))).collect();
        if batch.is_empty() {
            return Ok(Some(searches.iter().filter_map(MaxStableSearch::result).collect()));
        }
        let Some(probes) = oracle.eval(&batch)? else { return Ok(None) };
        for ((_, i), p) in batch.iter().zip(probes) {
            searches[*i].feed(p);
        }
    }
}

/// The optimum of one seed, or of the seed-averaged curve.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SeedOptimum {
    /// The seed (`None`: the seed-averaged curve).
    pub seed: Option<u64>,
    /// The best probe refined by the parabola through it and its neighbours in `log lr`
    /// ([`crate::sweep::analysis`]'s rule: only between stable neighbours, clamped to them).
    pub lr: f64,
    /// The objective at the best probe (the mean over seeds for the seed-averaged curve).
    pub value: f64,
    /// The best probe itself.
    pub best_m: i64,
    /// Half the larger gap from the best probe to its neighbours, in octaves: the optimum's
    /// resolution (the best lattice point is the one nearest to the optimum of a peak that
    /// is locally symmetric in `log lr`).
    pub resolution: f64,
    /// Whether the best probe has a probe on each side (an optimum at the end of the probed
    /// range lies possibly beyond it).
    pub bracketed: bool,
}

/// The optimal learning rate of one width over its seeds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Optimum {
    /// The seed-averaged curve at every probed learning rate (all seeds at each).
    pub curve: Vec<CurvePoint>,
    /// The optimum of the seed-averaged curve.
    pub mean: SeedOptimum,
    /// Each seed's optimum on its own curve (same learning rates).
    pub per_seed: Vec<SeedOptimum>,
    /// Whether every seed was unstable at the top of the coarse pass (otherwise the top is a
    /// limit and the curve may go on improving above it).
    pub top_unstable: bool,
    /// Every probe, in the order made.
    pub probes: Vec<Probe>,
}

/// The best lattice point of `points` (ascending `m`) by `value`, refined.
fn locate(objective: Objective, seed: Option<u64>, points: &[(i64, f64, bool)]) -> SeedOptimum {
    let lrs: Vec<f64> = points.iter().map(|p| pow2_lattice(p.0)).collect();
    let vals: Vec<f64> = points.iter().map(|p| p.1).collect();
    let stable: Vec<bool> = points.iter().map(|p| p.2).collect();
    let (best, lr) = optimum(objective, &lrs, &vals, &stable);
    let gap = |a: usize, b: usize| points[b].0 - points[a].0;
    let left = (best > 0).then(|| gap(best - 1, best));
    let right = (best + 1 < points.len()).then(|| gap(best, best + 1));
    let widest = left.into_iter().chain(right).max().unwrap_or(0);
    SeedOptimum { seed, lr, value: vals[best], best_m: points[best].0, resolution: octaves(widest) / 2.0, bracketed: left.is_some() && right.is_some() }
}

/// The seed-averaged curve of probes (any seeds, any learning rates), ascending.
pub fn curve_of(probes: &[Probe]) -> Vec<CurvePoint> {
    let mut at: BTreeMap<i64, Vec<&Probe>> = BTreeMap::new();
    for p in probes {
        at.entry(p.m).or_default().push(p);
    }
    at.into_iter()
        .map(|(m, ps)| {
            let xs: Vec<f64> = ps.iter().map(|p| p.value).collect();
            CurvePoint {
                lr: pow2_lattice(m),
                mean: xs.iter().sum::<f64>() / xs.len() as f64,
                min: xs.iter().copied().fold(f64::INFINITY, f64::min),
                max: xs.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                seeds: xs.len(),
                unstable: ps.iter().filter(|p| p.unstable).count() as f64 / ps.len() as f64,
            }
        })
        .collect()
}

/// Rounds `m` up to a multiple of `c`.
fn ceil_to(m: i64, c: i64) -> i64 {
    m.div_euclid(c) * c + if m.rem_euclid(c) > 0 { c } else { 0 }
}

/// The optimal search of one width (`seeds[i]` is seed index `i` of the oracle; every probe
/// runs all seeds at one learning rate). `edges`: the seeds' max-stable results, if searched.
///
/// 1. Top: the coarse lattice point at or above the largest first unstable learning rate of
///    the seeds; without max-stable results, the initial bracket's top, stepped up by `step`
///    until every seed is unstable there (or the upper limit).
/// 2. Coarse pass: down from the top by `coarse` until the pass spans `span`, the
///    seed-averaged curve's best point lies at least `margin` above the lowest point, and
///    that lowest point is worse than the best (or the lower limit).
/// 3. Refinement: local grids of half the previous spacing (`coarse/2`, `coarse/4`, ...,
///    `refine`) around the best point of the seed-averaged curve (and of each seed's curve
///    with `refine_each_seed`), one new point on each side, inside the coarse pass's range.
pub(crate) fn optimal(oracle: &dyn Oracle, lat: Lattice, objective: Objective, seeds: &[u64], edges: Option<&[MaxStable]>) -> Result<Option<Optimum>> {
    let all: Vec<usize> = (0..seeds.len()).collect();
    let mut curve: BTreeMap<i64, Vec<Probe>> = BTreeMap::new();
    let mut order: Vec<Probe> = vec![];
    // Probes every seed at each of `ms`; false if the oracle stopped.
    let mut eval = |ms: &[i64], curve: &mut BTreeMap<i64, Vec<Probe>>| -> Result<bool> {
        let batch: Vec<(i64, usize)> = ms.iter().flat_map(|&m| all.iter().map(move |&i| (m, i))).collect();
        if batch.is_empty() {
            return Ok(true);
        }
        let Some(probes) = oracle.eval(&batch)? else { return Ok(false) };
        for p in probes {
            order.push(p.clone());
            curve.entry(p.m).or_default().push(p);
        }
        Ok(true)
    };
    let all_unstable = |curve: &BTreeMap<i64, Vec<Probe>>, m: i64| curve.get(&m).is_some_and(|ps| ps.iter().all(|p| p.unstable));
    let mean = |ps: &[Probe]| ps.iter().map(|p| p.value).sum::<f64>() / ps.len() as f64;
    let best_mean = |curve: &BTreeMap<i64, Vec<Probe>>| {
        let mut best: Option<(i64, f64)> = None;
        for (m, ps) in curve {
            let v = mean(ps);
            if best.is_none_or(|(_, b)| objective.better(v, b)) {
                best = Some((*m, v));
            }
        }
        best
    };
    let c = lat.coarse;
    // 1. The top.
    let known_top = edges.and_then(|es| es.iter().filter_map(|e| e.first_unstable_m).max());
    let mut top = ceil_to(known_top.unwrap_or(lat.hi), c).min(lat.max);
    if !eval(&[top], &mut curve)? {
        return Ok(None);
    }
    if known_top.is_none() {
        while !all_unstable(&curve, top) && top < lat.max {
            top = ceil_to(top + lat.step, c).min(lat.max);
            if !eval(&[top], &mut curve)? {
                return Ok(None);
            }
        }
    }
    // 2. Down from the top (the points between earlier tops are filled in on the way).
    let mut low = top;
    loop {
        let next = low - c;
        if next < lat.min {
            break;
        }
        if !curve.contains_key(&next) && !eval(&[next], &mut curve)? {
            return Ok(None);
        }
        low = next;
        let (bm, bv) = best_mean(&curve).expect("the curve has points");
        if top - low >= lat.span && bm - low >= lat.margin && objective.better(bv, mean(&curve[&low])) {
            break;
        }
    }
    // 3. Local grids of halving spacing around the best points.
    let mut h = c / 2;
    while h >= lat.refine && h > 0 {
        let mut centers = BTreeSet::new();
        centers.insert(best_mean(&curve).expect("the curve has points").0);
        if lat.refine_each_seed {
            for i in 0..seeds.len() {
                let mut best: Option<(i64, f64)> = None;
                for (m, ps) in &curve {
                    if best.is_none_or(|(_, b)| objective.better(ps[i].value, b)) {
                        best = Some((*m, ps[i].value));
                    }
                }
                centers.extend(best.map(|b| b.0));
            }
        }
        let new: BTreeSet<i64> = centers.iter().flat_map(|&x| [x - h, x + h]).filter(|m| (low..=top).contains(m) && !curve.contains_key(m)).collect();
        if !eval(&new.into_iter().collect::<Vec<_>>(), &mut curve)? {
            return Ok(None);
        }
        h /= 2;
    }
    let points = |value: &dyn Fn(&[Probe]) -> (f64, bool)| curve.iter().map(|(m, ps)| (*m, value(ps).0, value(ps).1)).collect::<Vec<_>>();
    let mean_opt = locate(objective, None, &points(&|ps| (mean(ps), ps.iter().all(|p| !p.unstable))));
    let per_seed = seeds.iter().enumerate().map(|(i, &s)| locate(objective, Some(s), &points(&|ps| (ps[i].value, !ps[i].unstable)))).collect();
    Ok(Some(Optimum { curve: curve_of(&order), mean: mean_opt, per_seed, top_unstable: all_unstable(&curve, top), probes: order }))
}

/// Fills in each seed's [`MaxStable::violations`] from the optimal search's probes.
pub(crate) fn find_violations(edges: &mut [MaxStable], opt: &Optimum) {
    for (e, o) in edges.iter_mut().zip(&opt.per_seed) {
        let lowest_ok = o.best_m;
        e.violations = opt
            .probes
            .iter()
            .filter(|p| p.seed == e.seed)
            .filter(|p| {
                let above = e.first_unstable_m.is_some_and(|u| p.m > u) && !p.unstable;
                let below = e.last_stable_m.is_some_and(|s| p.m < s && p.m >= lowest_ok) && p.unstable;
                above || below
            })
            .cloned()
            .collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// A synthetic oracle: `f(lr, seed) -> (unstable, value)`, counting evaluations.
    struct Synthetic<F: Fn(f64, u64) -> (bool, f64)> {
        f: F,
        seeds: Vec<u64>,
        calls: RefCell<Vec<(i64, u64)>>,
        budget: usize,
    }

    impl<F: Fn(f64, u64) -> (bool, f64)> Synthetic<F> {
        fn new(seeds: &[u64], f: F) -> Self {
            Synthetic { f, seeds: seeds.to_vec(), calls: RefCell::new(vec![]), budget: usize::MAX }
        }
    }

    impl<F: Fn(f64, u64) -> (bool, f64)> Oracle for Synthetic<F> {
        fn eval(&self, batch: &[(i64, usize)]) -> Result<Option<Vec<Probe>>> {
            if self.calls.borrow().len() + batch.len() > self.budget {
                return Ok(None);
            }
            Ok(Some(
                batch
                    .iter()
                    .map(|&(m, i)| {
                        let seed = self.seeds[i];
                        self.calls.borrow_mut().push((m, seed));
                        let lr = pow2_lattice(m);
                        let (unstable, value) = (self.f)(lr, seed);
                        Probe { m, lr, seed, unstable, value, key: format!("{m}/{seed}") }
                    })
                    .collect(),
            ))
        }
    }

    fn lattice(lo: f64, hi: f64) -> Lattice {
        let u = |o: f64| (o * 64.0) as i64;
        Lattice { lo: u(lo), hi: u(hi), step: u(2.0), res: u(0.125), min: u(-20.0), max: u(20.0), coarse: u(0.5), refine: u(0.125), span: u(3.0), margin: u(1.0), refine_each_seed: true }
    }

    #[test]
    fn bisection_finds_a_threshold_to_the_resolution() {
        // Unstable from 2^-2.3 on: the bracket is the 1/8-octave cell holding -2.3.
        for &edge in &[-2.3f64, -5.0, -0.0625, -3.99] {
            let o = Synthetic::new(&[0], |lr, _| (lr.log2() >= edge, 0.0));
            let r = max_stable(&o, lattice(-6.0, 0.0), &[0]).unwrap().unwrap().remove(0);
            assert_eq!(r.edge, Edge::Bracketed);
            let (lo, hi) = (r.last_stable.unwrap().log2(), r.first_unstable.unwrap().log2());
            assert!(lo < edge && edge <= hi && (hi - lo - 0.125).abs() < 1e-12, "edge {edge}: [{lo}, {hi}]");
            assert_eq!(r.octaves(), Some(0.125));
            // Each probe agrees with the rule; 2 bracket probes + log2(6 / (1/8)) ~ 6 bisections.
            assert!(r.probes.iter().all(|p| p.unstable == (p.lr.log2() >= edge)));
            assert!(r.probes.len() <= 2 + 6, "{} probes", r.probes.len());
            assert_eq!(o.calls.borrow().len(), r.probes.len());
        }
        // Finer resolution: 1/64 octave.
        let o = Synthetic::new(&[0], |lr, _| (lr.log2() >= -1.337, 0.0));
        let r = max_stable(&o, Lattice { res: 1, ..lattice(-6.0, 0.0) }, &[0]).unwrap().unwrap().remove(0);
        let (lo, hi) = (r.last_stable_m.unwrap(), r.first_unstable_m.unwrap());
        assert_eq!(hi - lo, 1);
        assert!(octaves(lo) < -1.337 && -1.337 <= octaves(hi));
    }

    #[test]
    fn the_bracket_extends_in_both_directions_and_gives_up_at_the_limits() {
        for &edge in &[11.3f64, -14.6] {
            let o = Synthetic::new(&[0], |lr, _| (lr.log2() >= edge, 0.0));
            let r = max_stable(&o, lattice(-6.0, 0.0), &[0]).unwrap().unwrap().remove(0);
            let (lo, hi) = (r.last_stable.unwrap().log2(), r.first_unstable.unwrap().log2());
            assert!(lo < edge && edge <= hi && hi - lo <= 0.125 + 1e-12, "edge {edge}: [{lo}, {hi}]");
            // Steps of 2 octaves to reach the edge, then 4 bisections of a 2-octave bracket.
            let steps = ((edge.abs() - if edge > 0.0 { 0.0 } else { 6.0 }) / 2.0).ceil() as usize;
            assert_eq!(r.probes.len(), 1 + (edge < 0.0) as usize + steps + 4, "edge {edge}");
        }
        // Never unstable / always unstable: a clear record at the limit, not a loop.
        let o = Synthetic::new(&[0], |_, _| (false, 0.0));
        let r = max_stable(&o, lattice(-6.0, 0.0), &[0]).unwrap().unwrap().remove(0);
        assert_eq!((r.edge, r.last_stable, r.first_unstable), (Edge::NoUnstable, Some(2f64.powi(20)), None));
        assert_eq!(r.probes.len(), 11);
        let o = Synthetic::new(&[0], |_, _| (true, 0.0));
        let r = max_stable(&o, lattice(-6.0, 0.0), &[0]).unwrap().unwrap().remove(0);
        assert_eq!((r.edge, r.last_stable, r.first_unstable), (Edge::NoStable, None, Some(2f64.powi(-20))));
        assert!(r.octaves().is_none());
    }

    #[test]
    fn seeds_advance_in_lockstep_and_a_stopped_oracle_stops_the_search() {
        let edges = [-2.3f64, -1.1, -4.7];
        let o = Synthetic::new(&[0, 1, 2], |lr, s| (lr.log2() >= edges[s as usize], 0.0));
        let rs = max_stable(&o, lattice(-6.0, 0.0), &[0, 1, 2]).unwrap().unwrap();
        for (r, e) in rs.iter().zip(edges) {
            assert!(r.last_stable.unwrap().log2() < e && e <= r.first_unstable.unwrap().log2());
        }
        let mut o = Synthetic::new(&[0, 1, 2], |lr, s| (lr.log2() >= edges[s as usize], 0.0));
        o.budget = 7;
        assert!(max_stable(&o, lattice(-6.0, 0.0), &[0, 1, 2]).unwrap().is_none());
        assert!(o.calls.borrow().len() <= 7);
    }

    /// A noisy unimodal curve: accuracy `0.9 - 0.2 (log2 lr - opt)^2` (at least 0.15) plus a
    /// seed's offset and deterministic noise in `[-noise, noise]`, unstable (0.1) from `edge`.
    fn noisy(opt: f64, edge: f64, noise: f64) -> impl Fn(f64, u64) -> (bool, f64) {
        move |lr: f64, seed: u64| {
            let x = lr.log2();
            if x >= edge {
                return (true, 0.1);
            }
            let h = crate::sweep::fnv1a64(format!("{x}/{seed}").as_bytes());
            let e = ((h % 10_000) as f64 / 10_000.0 - 0.5) * 2.0 * noise;
            (false, (0.9 - 0.2 * (x - opt).powi(2)).max(0.15) + 0.01 * seed as f64 + e)
        }
    }

    #[test]
    fn the_optimum_of_a_noisy_curve_is_found_over_seeds() {
        let seeds = [0, 1, 2, 3];
        for &(opt, edge) in &[(-3.4f64, -1.6f64), (-7.2, -1.0), (-2.05, -1.9)] {
            let o = Synthetic::new(&seeds, noisy(opt, edge, 0.005));
            let lat = lattice(-6.0, 0.0);
            let edges = max_stable(&o, lat, &seeds).unwrap().unwrap();
            let r = optimal(&o, lat, Objective::TrainAcc, &seeds, Some(&edges)).unwrap().unwrap();
            let found = r.mean.lr.log2();
            // Within the resolution (half the finest spacing), or at the edge when the peak
            // lies beyond it.
            assert!((found - opt).abs() <= 0.0625 || (opt > edge - 0.2 && (found - (edge - 0.125)).abs() < 0.07), "opt {opt}: found {found}, {:?}", r.mean);
            assert_eq!(r.mean.resolution, 0.0625, "{:?}", r.mean);
            assert!(r.mean.bracketed && r.top_unstable);
            assert_eq!(r.per_seed.len(), 4);
            for s in &r.per_seed {
                assert!((s.lr.log2() - found).abs() <= 0.25, "{s:?}");
            }
            // Every probe ran all seeds at the same learning rate.
            assert!(r.curve.iter().all(|c| c.seeds == seeds.len()));
            // The coarse pass reaches below the optimum by at least the margin.
            assert!(r.curve[0].lr.log2() <= found - 0.75, "{:?}", r.curve[0]);
        }
        // Without max-stable results the top steps up until every seed is unstable.
        let o = Synthetic::new(&seeds, noisy(3.0, 5.2, 0.0));
        let r = optimal(&o, lattice(-6.0, 0.0), Objective::TrainAcc, &seeds, None).unwrap().unwrap();
        assert!((r.mean.lr.log2() - 3.0).abs() <= 0.07 && r.top_unstable, "{:?}", r.mean);
    }

    #[test]
    fn violations_of_monotonicity_are_reported() {
        // Unstable in [-2, -1.25) and from 0 on: stable again in a window above the edge.
        let f = |lr: f64, _s: u64| {
            let x = lr.log2();
            let unstable = (-2.0..-1.25).contains(&x) || x >= 0.0;
            (unstable, if unstable { 0.1 } else { 0.9 - 0.05 * (x + 4.0).powi(2) })
        };
        let o = Synthetic::new(&[0], f);
        let lat = lattice(-6.0, -1.5);
        let mut edges = max_stable(&o, lat, &[0]).unwrap().unwrap();
        // The top -1.5 is unstable, the bottom stable: the bisection finds the edge at -2.
        assert_eq!(edges[0].first_unstable_m, Some(-2 * 64));
        // An optimal search from that edge probes nothing above it: no violation visible.
        let opt = optimal(&o, lat, Objective::TrainAcc, &[0], Some(&edges)).unwrap().unwrap();
        find_violations(&mut edges, &opt);
        assert!(edges[0].violations.is_empty());
        assert!((opt.mean.lr.log2() + 4.0).abs() < 1e-9, "{:?}", opt.mean);
        // A pass that starts above the window (stable at -1, so it steps up to the unstable
        // +1) probes the window: its stable points are reported.
        let opt = optimal(&o, lattice(-6.0, -1.0), Objective::TrainAcc, &[0], None).unwrap().unwrap();
        find_violations(&mut edges, &opt);
        // (Its coarse pass stops at the window's local optimum, -1: non-monotonic stability
        // misleads the optimum too, which the violations make visible.)
        let v: Vec<i64> = edges[0].violations.iter().map(|p| p.m).collect();
        assert!(v.contains(&-64) && v.contains(&-32) && v.iter().all(|m| (-80..0).contains(m)) && edges[0].violations.iter().all(|p| !p.unstable), "{v:?}");
    }
}
