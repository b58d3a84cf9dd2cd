//! Adaptive learning-rate searches (issue 17): the max-stable learning rate of every (setting,
//! width, seed) by bisection and the optimal learning rate of every (setting, width) over its
//! seeds, each probe a stored run, so a search is resumable, shardable, parallel and
//! multi-process safe like a grid ([`super::engine`]), and its runs are shared with grids.
//!
//! # A search
//! A [`SearchSpec`] is a grid without a learning-rate axis (run kind, `base` config, axes such
//! as `width`, `seed`, `loss`, `depth`, `param`, dotted paths) plus [`SearchParams`]: what to
//! find ([`Find`]: `max-stable`, `optimal` or `both`), the instability rule (default by loss:
//! NaN under MSE, accuracy near chance under CE, [`Instability`]), the objective (default
//! training accuracy), the initial bracket, the resolution and the limits:
//!
//! ```toml
//! name = "fmnist-ce"
//! [base]
//! batch_size = 64
//! [base.data]
//! train_subset = 4096
//! [grid]
//! width = [64, 128, 256, 512, 1024]
//! seed = [0, 1, 2]
//! loss = ["ce"]
//! [search]
//! find = "both"
//! bracket = [-4, 0]        # log2 lr at guess_width; moves by guess_exponent log2(n / guess_width)
//! guess_exponent = -0.5
//! resolution = 0.125       # max-stable bracket width, octaves (1/64 .. 1, a power of 2)
//! [search.optimal]
//! coarse = 0.5             # coarse pass spacing, octaves
//! refine = 0.125           # finest local spacing
//! ```
//!
//! # The learning-rate lattice
//! Every probed learning rate is a lattice point `2^(m/64)` ([`super::pow2_lattice`]), built
//! from the integer `m` with the same bits on every machine, so a probe's key is stable across
//! runs, processes and machines. A run of a search has the key of the same config in a grid
//! sweep (log grids of up to 64 points per octave lie on the lattice), so grids and searches
//! share runs through one store.
//!
//! # Max-stable learning rate: bisection
//! Per (setting, width, seed), [`algo::MaxStableSearch`]: probe the initial bracket's top; if
//! stable, extend up by `step` until a probe is unstable, else probe the bottom and extend
//! down until a probe is stable; then bisect in `log2 lr` (midpoints on the resolution
//! lattice) until the bracket `[last stable, first unstable]` is `resolution` wide. Past a
//! limit (`limits`, default `2^-20 .. 2^20`) the search gives up and records why
//! ([`Edge::NoUnstable`], [`Edge::NoStable`]); it never loops.
//!
//! It assumes monotonicity: runs are stable below an edge and unstable above it. The paper
//! (appendix D.4) measures the max-stable learning rate as the *smallest unstable learning
//! rate above the optimum* on its grid; under the assumption that is the first grid point
//! above the edge, and the bisection's `first_unstable` is the same quantity on a lattice of
//! the search's resolution (1/8 octave by default, the paper's grids are 1/2 to 1 octave).
//! Where monotonicity fails (e.g. a stable window above the first unstable point) the
//! bisection still ends, at *a* stable-to-unstable transition; when the optimum is searched
//! too, its probes of the same seed that contradict the bracket (stable above it, unstable
//! between the optimum and it) are reported as [`MaxStable::violations`]. A learning rate too
//! small to learn anything can look unstable under an accuracy rule: the bracket's bottom
//! must be a learning rate that learns, or the search extends down into that regime and
//! gives up with [`Edge::NoStable`]. Under MSE, small ReLU networks can also *die* at large
//! learning rates (constant output, finite loss, chance accuracy) without a NaN: the paper's
//! NaN rule calls them stable, its soft definition ("predictions degrade to random guessing",
//! appendix D) does not; `near-chance`, which also counts every diverged run, is the rule
//! for such settings (`tests/search.rs` shows the case on the teacher data).
//!
//! # Optimal learning rate: coarse pass and local refinement
//! Per (setting, width), every probe runs *all seeds at the same learning rate*
//! ([`algo::optimal`]): a coarse pass (spacing `optimal.coarse`, half an octave by default)
//! from the smallest coarse point at or above every seed's first unstable learning rate (or,
//! without max-stable results, from the bracket's top stepped up until every seed is
//! unstable) down until it spans `optimal.span` and the seed-averaged curve's best point lies
//! `optimal.margin` above its lowest point; then local grids of halving spacing down to
//! `optimal.refine` around the best point of the seed-averaged curve and of each seed's curve;
//! then the grid analysis's parabola refinement ([`super::analysis`]). Seed noise is handled
//! both ways: the optimum of the seed-averaged curve ([`Optimum::mean`]) and each seed's
//! optimum on its own curve ([`Optimum::per_seed`], their spread). With `find = "both"` the
//! max-stable searches of a width run first and the coarse pass starts from their brackets;
//! probes on a shared lattice point (the bisection's half-octave points) are reused. The
//! coarse pass's stopping rule compares points, so a flat plateau far below the optimum (runs
//! that all give the same accuracy) can end it early by noise; `span` and `margin` set how
//! far it reaches at least.
//!
//! # Groups, shards, scheduling
//! A search is a set of independent groups: (setting, width, seed) when only the max-stable
//! learning rate is searched, (setting, width) otherwise (the optimum needs all seeds of a
//! width, and `both` keeps a width's bisections with its optimum). `--shard k/N` takes the
//! groups whose id (a hash of the group's config without learning rate, and without seed for
//! width groups, like a run key) is `k` modulo `N`; merged shard stores hold exactly the runs
//! of an unsharded search. Groups run in parallel through the grid engine's scheduler
//! (`engine::schedule`: small groups on a pool of `jobs` workers, one libtorch thread per
//! run, a group's simultaneous probes spread over the pool; groups of large runs one at a
//! time with every core), and every probe goes through the engine's claim, train and record
//! step, so processes sharing a store never train a run twice. A group whose next probe
//! another live process holds is set aside and retried after the other groups (every 250 ms
//! once only such groups are left), so processes sharing a store split the groups between
//! them. A group is a deterministic function of its stored runs: a re-run replays it from the
//! store, training only what is missing, and [`analyse`] replays it without training.
//!
//! # Analysis
//! [`analyse`] gives, per setting ([`SettingSearch`]), per width the seeds' max-stable
//! brackets and the optima, and the fitted width exponents ([`ExponentFit`]) of the
//! max-stable learning rate (`first_unstable` of every seed at every width), the per-seed
//! optima and the seed-averaged optima, each with the 95% interval of the regression over its
//! points (seed spread included), the search's resolution as a worst-case bound
//! ([`crate::fit::resolution_bound`] with half a bracket, or half the local spacing at an
//! optimum) and the two combined. Brackets or optima at a limit of the searched range are
//! left out of the fits and counted.
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::analysis::{Instability, Objective};
use super::engine::{self, Executed, Executor, RunOptions};
use super::runner::{RunCost, RunKind, RunRecord, Runner};
use super::store::Store;
use super::{canonical_json, fnv1a64, pow2_lattice, resolve_point, AxisValues, RunPoint, ScheduleConfig, SweepSpec, LATTICE};
use crate::{Error, Result};

pub mod algo;
mod report;

pub use algo::{Edge, MaxStable, Optimum, Probe, SeedOptimum};
pub use report::{ExponentFit, SearchAnalysis, SettingSearch, WidthSearch};

/// What a search finds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Find {
    /// The max-stable learning rate of every (setting, width, seed).
    MaxStable,
    /// The optimal learning rate of every (setting, width).
    Optimal,
    /// Both: per width, the seeds' max-stable learning rates, then the optimum below them.
    #[default]
    Both,
}

impl Find {
    pub fn max_stable(self) -> bool {
        matches!(self, Find::MaxStable | Find::Both)
    }
    pub fn optimal(self) -> bool {
        matches!(self, Find::Optimal | Find::Both)
    }
}

/// Parameters of the optimal search (octaves).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OptimalParams {
    /// Spacing of the coarse pass (default 1/2).
    pub coarse: f64,
    /// Finest spacing of the local grids around the best points (default 1/8;
    /// `coarse = refine 2^k`).
    pub refine: f64,
    /// The coarse pass reaches at least this far below its top (default 3).
    pub span: f64,
    /// ... and at least this far below the seed-averaged curve's best point (default 1).
    pub margin: f64,
    /// Refine around each seed's best point too, so that per-seed optima have the finest
    /// resolution (default true; all seeds run at each new learning rate either way).
    pub refine_each_seed: bool,
}

impl Default for OptimalParams {
    fn default() -> Self {
        OptimalParams { coarse: 0.5, refine: 0.125, span: 3.0, margin: 1.0, refine_each_seed: true }
    }
}

/// What a search looks for and how (learning rates as `log2 lr`, lengths in octaves).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SearchParams {
    pub find: Find,
    /// The objective the optimum maximises (accuracies) or minimises (losses).
    pub objective: Objective,
    /// When a run is unstable (text as `--instability`: `nan`, `near-chance`, `acc-below:T`).
    /// Default: by loss ([`Instability::for_loss`]); GPT searches must name one. A search
    /// needs a rule that judges each run alone, so `loss-above:M` (relative to the width's
    /// optimum, the paper's GPT rule) is not available.
    #[serde(with = "rule_text", skip_serializing_if = "Option::is_none")]
    pub instability: Option<Instability>,
    /// Initial bracket `[lo, hi]` of `log2 lr` at width `guess_width` (default `[-6, 0]`).
    pub bracket: [f64; 2],
    /// The bracket moves by `guess_exponent log2(n / guess_width)` octaves at width `n`
    /// (rounded to the resolution): a guess of the width exponent saves probes (default 0).
    pub guess_exponent: f64,
    pub guess_width: f64,
    /// Width of the final max-stable bracket in octaves: `2^-k` for `k = 0..=6` (default 1/8).
    pub resolution: f64,
    /// Bracket extension step in octaves (default 2; a multiple of the resolution).
    pub step: f64,
    /// Nothing is probed outside `[2^lo, 2^hi]` (default `[-20, 20]`).
    pub limits: [f64; 2],
    pub optimal: OptimalParams,
}

impl Default for SearchParams {
    fn default() -> Self {
        SearchParams {
            find: Find::Both,
            objective: Objective::TrainAcc,
            instability: None,
            bracket: [-6.0, 0.0],
            guess_exponent: 0.0,
            guess_width: 256.0,
            resolution: 0.125,
            step: 2.0,
            limits: [-20.0, 20.0],
            optimal: OptimalParams::default(),
        }
    }
}

/// An instability rule as its text in spec files.
mod rule_text {
    use super::Instability;
    use serde::{de::Error as _, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Instability>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(r) => s.serialize_some(&r.to_string()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Instability>, D::Error> {
        let text: Option<String> = Option::deserialize(d)?;
        text.map(|t| t.parse().map_err(D::Error::custom)).transpose()
    }
}

/// A learning-rate search: a grid without an `lr` axis, and what to search per grid point.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchSpec {
    /// A name, stored with each record.
    pub name: String,
    #[serde(default)]
    pub kind: RunKind,
    /// Fixed settings: a (partial) config of the run kind.
    #[serde(default = "super::empty_object")]
    pub base: Value,
    /// Axes as in a [`SweepSpec`], except `lr`.
    #[serde(default)]
    pub grid: BTreeMap<String, AxisValues>,
    #[serde(default)]
    pub search: SearchParams,
    #[serde(default)]
    pub schedule: ScheduleConfig,
}

/// One independent group of a search: a width of a setting with its seeds (one seed when only
/// the max-stable learning rate is searched).
#[derive(Clone, Debug)]
pub(crate) struct Group {
    /// 16 hex digits, what shards split by.
    pub id: String,
    pub width: f64,
    /// The setting's coordinates (all but width, lr and seed).
    pub setting: BTreeMap<String, Value>,
    pub seeds: Vec<u64>,
    /// The grid axes of each seed's runs (without `lr`).
    pub axes: Vec<BTreeMap<String, Value>>,
    pub rule: Instability,
    pub lattice: algo::Lattice,
    pub cost: RunCost,
}

/// `x` octaves in lattice units, if `x` is a multiple of 1/64.
fn units(x: f64, what: &str) -> Result<i64> {
    let u = x * LATTICE as f64;
    if !u.is_finite() || (u - u.round()).abs() > 1e-9 || u.abs() > 1e6 {
        return Err(Error::config(format!("search.{what} = {x}: must be a multiple of 1/64 octave")));
    }
    Ok(u.round() as i64)
}

impl SearchSpec {
    /// A search over the grid of `grid` (its `lr` axis, if any, is dropped: the search
    /// chooses the learning rates), e.g. from a preset sweep.
    pub fn from_grid(grid: &SweepSpec, search: SearchParams) -> Self {
        let mut axes = grid.grid.clone();
        axes.remove("lr");
        SearchSpec { name: grid.name.clone(), kind: grid.kind, base: grid.base.clone(), grid: axes, search, schedule: grid.schedule.clone() }
    }

    /// An MLP search in code, e.g. `SearchSpec::mlp("ce", &base)?.axis("width", [64, 128])?`.
    pub fn mlp(name: &str, base: &crate::train::TrainConfig) -> Result<Self> {
        Ok(Self::from_grid(&SweepSpec::mlp(name, base)?, SearchParams::default()))
    }

    /// A GPT search in code (needs an explicit per-run instability rule).
    pub fn gpt(name: &str, base: &crate::train::gpt::GptTrainConfig) -> Result<Self> {
        Ok(Self::from_grid(&SweepSpec::gpt(name, base)?, SearchParams::default()))
    }

    /// Adds (or replaces) an axis.
    pub fn axis<T: Serialize>(self, name: &str, values: impl IntoIterator<Item = T>) -> Result<Self> {
        let grid = self.grid_spec().axis(name, values)?;
        Ok(SearchSpec { grid: grid.grid, ..self })
    }

    /// The same search with other parameters.
    pub fn with(self, search: SearchParams) -> Self {
        SearchSpec { search, ..self }
    }

    /// The grid of the search's settings (every run at the base config's learning rate).
    pub fn grid_spec(&self) -> SweepSpec {
        SweepSpec { name: self.name.clone(), kind: self.kind, base: self.base.clone(), grid: self.grid.clone(), schedule: self.schedule.clone() }
    }

    /// Reads a search from a TOML or JSON file (by extension) and checks it.
    pub fn from_file(path: &Path) -> Result<Self> {
        let spec: SearchSpec = crate::config::read_config(path)?;
        spec.groups(spec.kind.runner().as_ref()).map_err(|e| Error::ConfigParse { path: path.to_path_buf(), reason: e.to_string() })?;
        Ok(spec)
    }

    /// Writes the search as TOML (`.toml`) or JSON.
    pub fn save(&self, path: &Path) -> Result<()> {
        super::save_spec(self, path)
    }

    /// Checks the search parameters (the grid is checked by resolving it, [`Self::from_file`]).
    pub fn validate(&self) -> Result<()> {
        let p = &self.search;
        let bad = |m: String| Err(Error::config(format!("search `{}`: {m}", self.name)));
        if self.grid.contains_key("lr") {
            return bad("the grid has an `lr` axis; a search chooses the learning rates (remove the axis, or run it as a grid with `sweep run`)".into());
        }
        if let Some(r @ Instability::LossAbove(_)) = p.instability {
            return bad(format!("instability `{r}` compares a run with the width's optimal loss, which a search probing one run at a time does not know; use nan, near-chance or acc-below:T"));
        }
        let res = units(p.resolution, "resolution")?;
        if res < 1 || res > LATTICE || (res as u64).count_ones() != 1 {
            return bad(format!("resolution = {}: must be 1/64, 1/32, ..., 1/2 or 1 octave", p.resolution));
        }
        let on_res = |x: f64, what: &str| -> Result<i64> {
            let u = units(x, what)?;
            if u % res != 0 {
                return Err(Error::config(format!("search `{}`: {what} = {x} is not a multiple of the resolution {}", self.name, p.resolution)));
            }
            Ok(u)
        };
        let (lo, hi) = (on_res(p.bracket[0], "bracket")?, on_res(p.bracket[1], "bracket")?);
        let (min, max) = (on_res(p.limits[0], "limits")?, on_res(p.limits[1], "limits")?);
        let step = on_res(p.step, "step")?;
        if lo >= hi {
            return bad(format!("bracket = [{}, {}]: needs lo < hi", p.bracket[0], p.bracket[1]));
        }
        if !(min <= lo && hi <= max) {
            return bad(format!("bracket = [{}, {}] is not inside limits = [{}, {}]", p.bracket[0], p.bracket[1], p.limits[0], p.limits[1]));
        }
        if step <= 0 {
            return bad(format!("step = {}: must be positive", p.step));
        }
        if !(p.guess_width > 0.0 && p.guess_width.is_finite() && p.guess_exponent.is_finite()) {
            return bad(format!("guess_width = {} and guess_exponent = {} must be finite, guess_width > 0", p.guess_width, p.guess_exponent));
        }
        let o = &p.optimal;
        let (coarse, refine) = (units(o.coarse, "optimal.coarse")?, units(o.refine, "optimal.refine")?);
        if refine < 1 || coarse < refine || coarse % refine != 0 || ((coarse / refine) as u64).count_ones() != 1 {
            return bad(format!("optimal.coarse = {} and optimal.refine = {}: need coarse = refine 2^k with refine >= 1/64 octave", o.coarse, o.refine));
        }
        if units(o.span, "optimal.span")? < 0 || units(o.margin, "optimal.margin")? < 0 {
            return bad("optimal.span and optimal.margin must be >= 0".into());
        }
        Ok(())
    }

    /// The search's lattice parameters at width `n`.
    fn lattice(&self, width: f64) -> Result<algo::Lattice> {
        let p = &self.search;
        let res = units(p.resolution, "resolution")?;
        let shift = if p.guess_exponent == 0.0 { 0 } else { (p.guess_exponent * (width / p.guess_width).log2() / p.resolution).round() as i64 * res };
        let (min, max) = (units(p.limits[0], "limits")?, units(p.limits[1], "limits")?);
        // Moved for the width, kept inside the limits.
        let lo = (units(p.bracket[0], "bracket")? + shift).clamp(min, max - res);
        let hi = (units(p.bracket[1], "bracket")? + shift).clamp(lo + res, max);
        let o = &p.optimal;
        Ok(algo::Lattice {
            lo,
            hi,
            step: units(p.step, "step")?,
            res,
            min,
            max,
            coarse: units(o.coarse, "optimal.coarse")?,
            refine: units(o.refine, "optimal.refine")?,
            span: units(o.span, "optimal.span")?,
            margin: units(o.margin, "optimal.margin")?,
            refine_each_seed: o.refine_each_seed,
        })
    }

    /// The rule of a setting: the spec's, or by loss.
    fn rule(&self, setting: &BTreeMap<String, Value>) -> Result<Instability> {
        if let Some(r) = self.search.instability {
            return Ok(r);
        }
        if self.kind == RunKind::Gpt {
            return Err(Error::config(format!(
                "search `{}`: a GPT search needs an explicit per-run instability rule (search.instability = \"nan\", \"near-chance\" or \"acc-below:T\"); the paper's GPT rule compares with the width's optimal loss",
                self.name
            )));
        }
        let loss = setting.get("loss").map(super::plain).unwrap_or_else(|| "ce".into());
        Ok(Instability::for_loss(loss.parse()?))
    }

    /// The independent groups of the search, in grid order.
    pub(crate) fn groups(&self, runner: &dyn Runner) -> Result<Vec<Group>> {
        self.validate()?;
        let by_seed = !self.search.find.optimal();
        let mut groups: Vec<Group> = vec![];
        let mut index: BTreeMap<String, usize> = BTreeMap::new();
        for p in self.grid_spec().points()? {
            let mut config = p.config.clone();
            let seed = config.get("seed").and_then(Value::as_u64).ok_or_else(|| Error::config(format!("search `{}`: run {} has no seed", self.name, super::describe(&p.axes))))?;
            let obj = config.as_object_mut().ok_or_else(|| Error::config("a resolved config is not a table"))?;
            obj.remove("lr");
            if !by_seed {
                obj.remove("seed");
            }
            let id = format!("{:016x}", fnv1a64(format!("{}\n{}", runner.kind(), canonical_json(&config)).as_bytes()));
            let coords = runner.coords(&p.config)?;
            let width = coords.get("width").and_then(Value::as_f64).ok_or_else(|| Error::config(format!("search `{}`: run {} has no width", self.name, super::describe(&p.axes))))?;
            let setting: BTreeMap<String, Value> = coords.into_iter().filter(|(k, _)| !["width", "lr", "seed"].contains(&k.as_str())).collect();
            match index.get(&id) {
                Some(&i) => {
                    groups[i].seeds.push(seed);
                    groups[i].axes.push(p.axes.clone());
                }
                None => {
                    index.insert(id.clone(), groups.len());
                    groups.push(Group { id, width, rule: self.rule(&setting)?, setting, seeds: vec![seed], axes: vec![p.axes.clone()], lattice: self.lattice(width)?, cost: runner.cost(&p.config)? });
                }
            }
        }
        for g in &mut groups {
            // Seeds ascending, so a group's order of probes does not depend on the grid's.
            let mut both: Vec<(u64, BTreeMap<String, Value>)> = g.seeds.drain(..).zip(g.axes.drain(..)).collect();
            both.sort_by_key(|b| b.0);
            (g.seeds, g.axes) = both.into_iter().unzip();
        }
        Ok(groups)
    }
}

/// A group's view of the store: its probes' run points and their judgement.
struct GroupCtx<'a> {
    spec: &'a SearchSpec,
    runner: &'a dyn Runner,
    group: &'a Group,
}

impl GroupCtx<'_> {
    /// The run of seed `i` at lattice point `m`.
    fn point(&self, m: i64, i: usize) -> Result<RunPoint> {
        let mut axes = self.group.axes[i].clone();
        axes.insert("lr".into(), Value::from(pow2_lattice(m)));
        resolve_point(self.runner, &self.spec.name, &self.spec.base, axes)
    }

    fn judge(&self, m: i64, i: usize, r: &RunRecord) -> Result<Probe> {
        Ok(Probe {
            m,
            lr: pow2_lattice(m),
            seed: self.group.seeds[i],
            unstable: self.group.rule.unstable(r, f64::NAN)?,
            value: self.spec.search.objective.value(r),
            key: r.key.clone(),
        })
    }
}

/// Trains missing probes through the engine's [`Executor`] (claims, one transaction per run).
/// A probe claimed by another live process stops the group for now (`None`); the caller
/// comes back to it after the other groups.
struct TrainOracle<'a> {
    ctx: GroupCtx<'a>,
    exec: &'a Executor<'a>,
    threads: usize,
    reused: &'a AtomicUsize,
    waits: &'a AtomicUsize,
}

/// How long to wait before looking again at groups whose next probe another process holds.
const POLL: Duration = Duration::from_millis(250);

impl TrainOracle<'_> {
    /// The record of `p`: stored or trained now; `None` if the limit or an error stopped the
    /// invocation or another process holds `p`.
    fn fetch(&self, p: &RunPoint) -> Result<Option<RunRecord>> {
        loop {
            if let Some(r) = self.exec.lock().get(&p.key)? {
                self.reused.fetch_add(1, Ordering::SeqCst);
                return Ok(Some(r));
            }
            match self.exec.execute(p, self.threads) {
                Executed::Trained(r) => return Ok(Some(r)),
                // Recorded by another process since the lookup above.
                Executed::Done => continue,
                Executed::Taken => {
                    self.waits.fetch_add(1, Ordering::SeqCst);
                    return Ok(None);
                }
                Executed::Stopped => return Ok(None),
                // A probe that cannot train (recorded as its failure) ends the search.
                Executed::Failed(msg) => return Err(Error::config(format!("search `{}`, probe {} ({}): {msg}", self.ctx.spec.name, p.key, super::describe(&p.axes)))),
            }
        }
    }

    fn probe(&self, m: i64, i: usize) -> Result<Option<Probe>> {
        let p = self.ctx.point(m, i)?;
        self.fetch(&p)?.map(|r| self.ctx.judge(m, i, &r)).transpose()
    }
}

impl algo::Oracle for TrainOracle<'_> {
    fn eval(&self, batch: &[(i64, usize)]) -> Result<Option<Vec<Probe>>> {
        // Small runs: the batch's probes spread over the pool (one libtorch thread each);
        // large runs: one after the other with every core.
        let out: Vec<Option<Probe>> = if self.threads == 1 {
            batch.par_iter().with_max_len(1).map(|&(m, i)| self.probe(m, i)).collect::<Result<_>>()?
        } else {
            batch.iter().map(|&(m, i)| self.probe(m, i)).collect::<Result<_>>()?
        };
        Ok(out.into_iter().collect())
    }
}

/// Reads probes from a store without training: replays a group.
struct ReadOracle<'a> {
    ctx: GroupCtx<'a>,
    store: &'a Store,
    /// Keys found, in order; the first batch's keys that were missing.
    found: Mutex<Vec<String>>,
    missing: Mutex<Vec<String>>,
}

impl algo::Oracle for ReadOracle<'_> {
    fn eval(&self, batch: &[(i64, usize)]) -> Result<Option<Vec<Probe>>> {
        let mut out = vec![];
        let mut missing = vec![];
        for &(m, i) in batch {
            let p = self.ctx.point(m, i)?;
            match self.store.get(&p.key)? {
                Some(r) => {
                    out.push(self.ctx.judge(m, i, &r)?);
                    self.found.lock().unwrap_or_else(|e| e.into_inner()).push(p.key);
                }
                None => missing.push(p.key),
            }
        }
        if missing.is_empty() {
            return Ok(Some(out));
        }
        *self.missing.lock().unwrap_or_else(|e| e.into_inner()) = missing;
        Ok(None)
    }
}

/// The results of one group (`None` fields: not searched, or not finished).
#[derive(Clone, Debug)]
pub(crate) struct GroupResult {
    pub complete: bool,
    pub max_stable: Vec<MaxStable>,
    pub optimum: Option<Optimum>,
}

/// Runs a group's searches against an oracle. `None`: the oracle stopped.
fn search_group(spec: &SearchSpec, group: &Group, oracle: &dyn algo::Oracle) -> Result<Option<GroupResult>> {
    let find = spec.search.find;
    let mut edges = vec![];
    if find.max_stable() {
        match algo::max_stable(oracle, group.lattice, &group.seeds)? {
            Some(e) => edges = e,
            None => return Ok(None),
        }
    }
    let mut optimum = None;
    if find.optimal() {
        let Some(o) = algo::optimal(oracle, group.lattice, spec.search.objective, &group.seeds, find.max_stable().then_some(&edges[..]))? else { return Ok(None) };
        algo::find_violations(&mut edges, &o);
        optimum = Some(o);
    }
    Ok(Some(GroupResult { complete: true, max_stable: edges, optimum }))
}

/// A replayed group: its result (or an incomplete one), the keys of its stored probes and
/// the keys it waits for.
pub(crate) struct Replay {
    pub result: GroupResult,
    pub found: Vec<String>,
    pub missing: Vec<String>,
}

fn replay(spec: &SearchSpec, runner: &dyn Runner, group: &Group, store: &Store) -> Result<Replay> {
    let oracle = ReadOracle { ctx: GroupCtx { spec, runner, group }, store, found: Mutex::new(vec![]), missing: Mutex::new(vec![]) };
    let result = search_group(spec, group, &oracle)?.unwrap_or(GroupResult { complete: false, max_stable: vec![], optimum: None });
    let found = oracle.found.into_inner().unwrap_or_else(|e| e.into_inner());
    let missing = oracle.missing.into_inner().unwrap_or_else(|e| e.into_inner());
    Ok(Replay { result, found, missing })
}

/// What one invocation of [`run`] did.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SearchReport {
    /// Groups of the search (in the shard).
    pub groups: usize,
    /// Finished before this invocation.
    pub already_done: usize,
    /// Finished now.
    pub completed: usize,
    /// Left unfinished (the run limit, or an error).
    pub unfinished: usize,
    /// Probes trained now, and of those diverged.
    pub trained: usize,
    pub diverged: usize,
    /// Probes found in the store (trained earlier, by a grid, or by another group's phase).
    pub reused: usize,
    /// Times a group was left for a later round because another process held its next probe.
    pub waits: usize,
    /// Groups run in parallel / alone.
    pub parallel: usize,
    pub alone: usize,
    pub seconds: f64,
}

impl std::fmt::Display for SearchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} groups: {} already done, {} completed now, {} unfinished; {} probes trained ({} diverged), {} reused, in {:.1} s",
            self.groups, self.already_done, self.completed, self.unfinished, self.trained, self.diverged, self.reused, self.seconds
        )?;
        if self.waits > 0 {
            write!(f, "; {} times a group waited for a run of another process", self.waits)?;
        }
        Ok(())
    }
}

/// A finished invocation: what it did and the analysis of the whole search (every group in
/// the store, so a shard's analysis shows the other shards' groups as unfinished).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SearchOutput {
    pub report: SearchReport,
    pub analysis: SearchAnalysis,
}

/// Runs every unfinished group of `spec` (in `opts.shard`) with the store at `store_path`,
/// then analyses the search. Safe to interrupt and to run in several processes at once; a
/// re-run trains nothing that is stored.
pub fn run(spec: &SearchSpec, store_path: &Path, opts: &RunOptions) -> Result<SearchOutput> {
    let runner = spec.kind.runner();
    run_with(spec, runner.as_ref(), store_path, opts)
}

/// [`run`] with an explicit runner (a test double).
pub fn run_with(spec: &SearchSpec, runner: &dyn Runner, store_path: &Path, opts: &RunOptions) -> Result<SearchOutput> {
    crate::device::tune_allocator();
    let started = Instant::now();
    let groups: Vec<Group> = spec.groups(runner)?.into_iter().filter(|g| opts.shard.is_none_or(|s| s.contains(&g.id))).collect();
    let jobs = engine::jobs(opts, &spec.schedule)?;
    let store = Store::open(store_path)?;
    let mut report = SearchReport { groups: groups.len(), ..Default::default() };
    let mut todo = vec![];
    for g in &groups {
        if replay(spec, runner, g, &store)?.result.complete {
            report.already_done += 1;
        } else {
            todo.push((g, g.cost));
        }
    }
    let bar = if opts.progress {
        let b = ProgressBar::new(todo.len() as u64);
        b.set_style(
            ProgressStyle::with_template("{spinner} search {prefix} [{elapsed_precise}] {bar:30} {pos}/{len} groups (eta {eta}) {msg}").unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        b.set_prefix(spec.name.clone());
        b
    } else {
        ProgressBar::hidden()
    };
    let exec = Executor::new(runner, &spec.name, store, &spec.schedule, opts.limit);
    let (reused, waits) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let n_todo = todo.len();
    let finished: Mutex<std::collections::HashSet<String>> = Mutex::new(Default::default());
    // Rounds: a group whose next probe another process holds is left for a later round, so
    // processes sharing a store split the groups instead of waiting for each other.
    let mut pending = todo;
    loop {
        let (parallel, alone) = engine::schedule(pending.clone(), spec.schedule.alone_from_params, jobs, |g, threads| {
            let oracle = TrainOracle { ctx: GroupCtx { spec, runner, group: g }, exec: &exec, threads, reused: &reused, waits: &waits };
            let done = match search_group(spec, g, &oracle) {
                Ok(r) => r.is_some(),
                Err(e) => {
                    exec.fail(e);
                    false
                }
            };
            if done {
                finished.lock().unwrap_or_else(|e| e.into_inner()).insert(g.id.clone());
                bar.inc(1);
            }
            bar.set_message(format!("{} probes trained, {} reused", exec.trained(), reused.load(Ordering::SeqCst)));
            done
        })?;
        report.parallel += parallel;
        report.alone += alone;
        let finished = finished.lock().unwrap_or_else(|e| e.into_inner());
        pending.retain(|(g, _)| !finished.contains(&g.id));
        if pending.is_empty() || exec.stopped() {
            break;
        }
        std::thread::sleep(POLL);
    }
    bar.finish_and_clear();
    let counts = exec.finish()?;
    report.completed = report.parallel + report.alone;
    report.unfinished = n_todo - report.completed;
    report.trained = counts.trained;
    report.diverged = counts.diverged;
    report.reused = reused.into_inner();
    report.waits = waits.into_inner();
    report.seconds = started.elapsed().as_secs_f64();
    let analysis = analyse_with(spec, runner, &Store::open_existing(store_path)?)?;
    Ok(SearchOutput { report, analysis })
}

/// The analysis of a search from the runs in `store` (nothing is trained; unfinished groups
/// are marked and left out of the fits).
pub fn analyse(spec: &SearchSpec, store: &Store) -> Result<SearchAnalysis> {
    analyse_with(spec, spec.kind.runner().as_ref(), store)
}

fn analyse_with(spec: &SearchSpec, runner: &dyn Runner, store: &Store) -> Result<SearchAnalysis> {
    let groups = spec.groups(runner)?;
    let results = groups.iter().map(|g| Ok(replay(spec, runner, g, store)?.result)).collect::<Result<Vec<_>>>()?;
    report::build(spec, &groups, results)
}

/// Progress of a search in a store.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SearchStatus {
    pub groups: usize,
    pub complete: usize,
    /// Unfinished groups with at least one stored probe.
    pub started: usize,
    /// Unfinished groups whose next probe is claimed by a process (running, or killed).
    pub claimed: usize,
    /// Probes stored (each counted once per group that uses it).
    pub probes: usize,
}

impl std::fmt::Display for SearchStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{} groups complete, {} started ({} with a probe claimed), {} not started; {} probes stored",
            self.complete,
            self.groups,
            self.started,
            self.claimed,
            self.groups - self.complete - self.started,
            self.probes
        )
    }
}

/// Status of `spec` (or one shard of it) in `store`.
pub fn status(spec: &SearchSpec, store: &Store, shard: Option<super::Shard>) -> Result<SearchStatus> {
    let runner = spec.kind.runner();
    let claims: std::collections::HashSet<String> = store.claims()?.into_iter().map(|c| c.0).collect();
    let mut st = SearchStatus::default();
    for g in spec.groups(runner.as_ref())?.iter().filter(|g| shard.is_none_or(|s| s.contains(&g.id))) {
        let r = replay(spec, runner.as_ref(), g, store)?;
        st.groups += 1;
        st.probes += r.found.len();
        if r.result.complete {
            st.complete += 1;
        } else if !r.found.is_empty() || r.missing.iter().any(|k| claims.contains(k)) {
            st.started += 1;
            st.claimed += r.missing.iter().any(|k| claims.contains(k)) as usize;
        }
    }
    Ok(st)
}

/// The records of every stored probe of the search, in group order (for export).
pub fn records(spec: &SearchSpec, store: &Store) -> Result<Vec<RunRecord>> {
    let runner = spec.kind.runner();
    let mut seen = std::collections::HashSet::new();
    let mut keys = vec![];
    for g in spec.groups(runner.as_ref())? {
        keys.extend(replay(spec, runner.as_ref(), &g, store)?.found.into_iter().filter(|k| seen.insert(k.clone())));
    }
    store.records_for(&keys)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sweep::runner::{MlpRunner, RunOutput};
    use crate::train::{Outcome, TrainConfig};

    /// A test double: the MLP runner's configs, keys and coordinates, and a synthetic run.
    /// Width `n`: unstable from `log2 lr = edge0 - 0.5 log2(n/64)` (accuracy 0.1, or NaN under
    /// MSE), below it a training accuracy (at least 0.3, above chance) that is a parabola in
    /// `log2 lr` peaking at `opt0 - 0.75 log2(n/64)`, plus deterministic noise per seed.
    struct Fake {
        calls: AtomicUsize,
        edge0: f64,
        opt0: f64,
    }

    impl Fake {
        fn new() -> Self {
            Fake { calls: AtomicUsize::new(0), edge0: -1.3, opt0: -2.5 }
        }
        fn calls(&self) -> usize {
            self.calls.load(Ordering::SeqCst)
        }
    }

    impl Runner for Fake {
        fn kind(&self) -> RunKind {
            RunKind::Mlp
        }
        fn axis_path(&self, axis: &str) -> String {
            MlpRunner::default().axis_path(axis)
        }
        fn resolve(&self, base: &Value, axes: &BTreeMap<String, Value>) -> Result<Value> {
            MlpRunner::default().resolve(base, axes)
        }
        fn coords(&self, config: &Value) -> Result<BTreeMap<String, Value>> {
            MlpRunner::default().coords(config)
        }
        fn cost(&self, config: &Value) -> Result<RunCost> {
            MlpRunner::default().cost(config)
        }
        fn run(&self, config: &Value, _threads: usize) -> Result<RunOutput> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let c: TrainConfig = serde_json::from_value(config.clone()).map_err(|e| Error::config(e.to_string()))?;
            let (x, octs) = (c.lr.log2(), (c.model.width as f64 / 64.0).log2());
            let noise = (fnv1a64(format!("{}/{}/{}", c.lr, c.seed, c.model.width).as_bytes()) % 1000) as f64 / 1000.0 - 0.5;
            let unstable = x >= self.edge0 - 0.5 * octs;
            let nan = unstable && c.loss.kind == crate::loss::LossKind::Mse;
            let acc = if unstable { 0.1 } else { (0.9 - 0.1 * (x - (self.opt0 - 0.75 * octs)).powi(2)).max(0.3) + 0.004 * noise };
            Ok(RunOutput {
                outcome: if nan { Outcome::Diverged { step: 3, reason: "non-finite loss (NaN)".into() } } else { Outcome::Completed },
                steps: 10,
                train_loss: (!nan).then_some(1.0 - acc),
                train_acc: (!nan).then_some(acc),
                test_loss: None,
                test_acc: None,
                final_batch_loss: None,
                loss_curve: vec![],
            })
        }
    }

    fn spec(find: Find) -> SearchSpec {
        let base = TrainConfig { steps: Some(10), ..TrainConfig::default() };
        let params = SearchParams { find, bracket: [-4.0, 0.0], ..SearchParams::default() };
        SearchSpec::mlp("t", &base).unwrap().axis("width", [64, 128, 256, 512, 1024]).unwrap().axis("seed", [0, 1, 2]).unwrap().axis("loss", ["ce", "mse"]).unwrap().with(params)
    }

    fn quiet() -> RunOptions {
        RunOptions { progress: false, jobs: Some(2), ..Default::default() }
    }

    /// Analyses compared as their JSON (NaN, for quantities not searched, is null there).
    fn same(a: &SearchAnalysis, b: &SearchAnalysis) -> bool {
        serde_json::to_string(a).unwrap() == serde_json::to_string(b).unwrap()
    }

    #[test]
    fn a_search_finds_known_exponents_with_intervals_that_hold_them() {
        let dir = tempfile::tempdir().unwrap();
        let fake = Fake::new();
        let out = run_with(&spec(Find::Both), &fake, &dir.path().join("s.db"), &quiet()).unwrap();
        // 2 losses x 5 widths; every probe trained once.
        assert_eq!((out.report.groups, out.report.completed, out.report.unfinished), (10, 10, 0));
        assert_eq!(out.report.trained, fake.calls());
        assert!(out.report.reused > 0, "the optimal pass reuses bisection probes on its lattice");
        let a = &out.analysis;
        assert!(a.is_complete() && a.settings.len() == 2);
        for loss in ["ce", "mse"] {
            let st = a.find(&[("loss", loss)]).unwrap();
            assert_eq!(st.instability, if loss == "ce" { Instability::NearChance } else { Instability::Nan });
            for w in &st.widths {
                let edge = fake.edge0 - 0.5 * (w.width / 64.0).log2();
                assert_eq!(w.max_stable.len(), 3);
                for m in &w.max_stable {
                    let (lo, hi) = (m.last_stable.unwrap().log2(), m.first_unstable.unwrap().log2());
                    assert!(lo < edge && edge <= hi && m.octaves() == Some(0.125), "width {}: [{lo}, {hi}] vs {edge}", w.width);
                    assert!(m.violations.is_empty());
                }
                let o = w.optimum.as_ref().unwrap();
                let opt = fake.opt0 - 0.75 * (w.width / 64.0).log2();
                assert!((o.mean.lr.log2() - opt).abs() <= 0.0625, "width {}: {} vs {opt}", w.width, o.mean.lr.log2());
                assert!(o.curve.iter().all(|c| c.seeds == 3));
            }
            // Max-stable exponent -1/2 (its points are exact up to the bracket: CI from the
            // points tiny, the resolution bound 0.6 * 1/16 over 64..1024).
            let ms = st.max_stable_fit.as_ref().unwrap();
            assert!((ms.resolution - 0.0375).abs() < 1e-9, "{ms:?}");
            assert!(ms.low <= -0.5 && -0.5 <= ms.high && ms.high - ms.low < 0.15, "{}", ms.display());
            assert_eq!((ms.points, ms.widths, ms.excluded), (15, 5, 0));
            // Optimal exponent -3/4, per seed and seed-averaged.
            for f in [st.optimal_fit.as_ref().unwrap(), st.optimal_mean_fit.as_ref().unwrap()] {
                assert!(f.low <= -0.75 && -0.75 <= f.high && (f.exponent + 0.75).abs() < 0.05 && f.high - f.low < 0.3, "{}", f.display());
            }
            assert_eq!(st.optimal_fit.as_ref().unwrap().points, 15);
            assert_eq!(st.optimal_mean_fit.as_ref().unwrap().points, 5);
            let e = ms.estimate();
            assert!((e.low - ms.low).abs() < 1e-12 && (e.high - ms.high).abs() < 1e-12);
            // The grid analysis's view: table and figures work on it.
            assert_eq!(st.lr.widths.len(), 5);
            assert!(st.lr.exponents_figure(Some(-0.5)).to_svg().is_ok() && st.lr.curves_figure(0.5, 256.0).to_svg().is_ok());
        }
        let table = a.table();
        assert!(table.contains("max-stable lr exponent") && table.contains("optimal (seed-averaged) lr exponent") && table.contains("2^-1.375"), "{table}");
        // Nothing is recomputed on a re-run.
        let again = run_with(&spec(Find::Both), &fake, &dir.path().join("s.db"), &quiet()).unwrap();
        assert_eq!((again.report.already_done, again.report.trained), (10, 0));
        assert!(same(&again.analysis, &out.analysis));
    }

    #[test]
    fn an_interrupted_search_resumes_without_recomputing_stored_runs() {
        let dir = tempfile::tempdir().unwrap();
        let full = Fake::new();
        let reference = run_with(&spec(Find::Both), &full, &dir.path().join("full.db"), &quiet()).unwrap();
        let fake = Fake::new();
        let store = dir.path().join("s.db");
        let mut trained = 0;
        for round in 0.. {
            let out = run_with(&spec(Find::Both), &fake, &store, &RunOptions { limit: Some(37), ..quiet() }).unwrap();
            trained += out.report.trained;
            // Each invocation trains exactly what it reports, never a stored run again.
            assert_eq!(fake.calls(), trained, "round {round}");
            if out.report.unfinished == 0 {
                assert!(same(&out.analysis, &reference.analysis));
                break;
            }
            assert_eq!(out.report.trained, 37);
            assert!(!out.analysis.is_complete());
            let st = status(&spec(Find::Both), &Store::open_existing(&store).unwrap(), None).unwrap();
            assert_eq!(st.complete, out.analysis.complete);
            assert!(st.started + st.complete > 0 && st.claimed == 0, "{st}");
        }
        // Interrupted or not: the same runs.
        assert_eq!(trained, full.calls());
        let keys = |p: &Path| Store::open_existing(p).unwrap().done_keys().unwrap();
        assert_eq!(keys(&store), keys(&dir.path().join("full.db")));
    }

    #[test]
    fn shards_split_by_group_and_merge_to_the_unsharded_search() {
        let dir = tempfile::tempdir().unwrap();
        for find in [Find::MaxStable, Find::Both] {
            let s = spec(find);
            let groups = s.groups(&Fake::new()).unwrap();
            // (setting, width, seed) groups for max-stable only, (setting, width) otherwise.
            assert_eq!(groups.len(), if find == Find::MaxStable { 30 } else { 10 });
            let full = dir.path().join(format!("{find:?}-full.db"));
            let reference = run_with(&s, &Fake::new(), &full, &quiet()).unwrap();
            let merged = dir.path().join(format!("{find:?}-merged.db"));
            let mut m = Store::open(&merged).unwrap();
            let mut total = 0;
            for k in 0..3 {
                let p = dir.path().join(format!("{find:?}-{k}.db"));
                let out = run_with(&s, &Fake::new(), &p, &RunOptions { shard: Some(format!("{k}/3").parse().unwrap()), ..quiet() }).unwrap();
                assert!(out.report.groups > 0 && out.report.completed == out.report.groups);
                total += out.report.groups;
                m.merge_from(&p).unwrap();
            }
            assert_eq!(total, groups.len());
            assert!(same(&analyse_with(&s, &Fake::new(), &m).unwrap(), &reference.analysis));
            assert_eq!(m.done_keys().unwrap(), Store::open_existing(&full).unwrap().done_keys().unwrap());
        }
    }

    #[test]
    fn grids_and_searches_share_runs() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("s.db");
        // A half-octave grid over the same settings first.
        let grid = spec(Find::Both).grid_spec().axis("lr", crate::sweep::log2_grid(-8.0, 0.0, 2)).unwrap();
        let fake = Fake::new();
        let r = crate::sweep::engine::run_with(&grid, &fake, &store, &quiet()).unwrap();
        assert_eq!(r.trained, 2 * 5 * 3 * 17);
        let out = run_with(&spec(Find::Both), &fake, &store, &quiet()).unwrap();
        // The search's half-octave probes in [2^-8, 1] were the grid's runs.
        let fresh = Fake::new();
        let alone = run_with(&spec(Find::Both), &fresh, &dir.path().join("alone.db"), &quiet()).unwrap();
        assert!(out.report.reused >= 100 && out.report.trained + 100 <= alone.report.trained, "{} vs {}", out.report, alone.report);
        assert!(same(&out.analysis, &alone.analysis));
        // Export of a search: its probes' records.
        let recs = records(&spec(Find::Both), &Store::open_existing(&store).unwrap()).unwrap();
        assert_eq!(recs.len(), alone.report.trained);
    }

    #[test]
    fn max_stable_only_and_optimal_only() {
        let dir = tempfile::tempdir().unwrap();
        let fake = Fake::new();
        let ms = run_with(&spec(Find::MaxStable), &fake, &dir.path().join("a.db"), &quiet()).unwrap();
        let st = ms.analysis.find(&[("loss", "ce")]).unwrap();
        assert!(st.optimal_fit.is_none() && st.widths.iter().all(|w| w.optimum.is_none() && w.max_stable.len() == 3));
        assert!((st.max_stable_fit.as_ref().unwrap().exponent + 0.5).abs() < 0.05);
        assert!(st.table(Objective::TrainAcc).contains("max-stable lr exponent"));
        let opt = run_with(&spec(Find::Optimal), &fake, &dir.path().join("b.db"), &quiet()).unwrap();
        let st = opt.analysis.find(&[("loss", "mse")]).unwrap();
        assert!(st.max_stable_fit.is_none() && st.widths.iter().all(|w| w.max_stable.is_empty() && w.optimum.as_ref().unwrap().top_unstable));
        assert!((st.optimal_mean_fit.as_ref().unwrap().exponent + 0.75).abs() < 0.05, "{}", st.table(Objective::TrainAcc));
    }

    #[test]
    fn the_bracket_moves_with_the_guessed_exponent_and_stays_in_the_limits() {
        let s = spec(Find::Both).with(SearchParams { bracket: [-2.0, 0.0], guess_exponent: -0.5, guess_width: 64.0, limits: [-3.0, 10.0], ..SearchParams::default() });
        let at = |n: f64| s.lattice(n).unwrap();
        assert_eq!((at(64.0).lo, at(64.0).hi), (-128, 0));
        // 4x wider: one octave lower.
        assert_eq!((at(256.0).lo, at(256.0).hi), (-192, -64));
        // 16x: two octaves lower, the bottom held at the limit -3.
        assert_eq!((at(1024.0).lo, at(1024.0).hi), (-192, -128));
        // Shifts are rounded to the resolution: 128 = 2^(7/2) wider: -1.75 octaves.
        assert_eq!(at(128.0 * 64.0 / 45.254833995939045).lo % 8, 0);
    }

    #[test]
    fn bad_searches_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.toml");
        let err = |extra: &str| {
            std::fs::write(&p, format!("name = \"x\"\n[grid]\nwidth = [64]\n{extra}")).unwrap();
            SearchSpec::from_file(&p).unwrap_err().to_string()
        };
        assert!(err("lr = [0.1]\n[search]").contains("`lr` axis"));
        assert!(err("[search]\ninstability = \"loss-above:1\"").contains("optimal loss"));
        assert!(err("[search]\ninstability = \"sometimes\"").contains("instability rule"));
        assert!(err("[search]\nresolution = 0.3").contains("multiple of 1/64"));
        assert!(err("[search]\nresolution = 0.375").contains("1/64, 1/32"));
        assert!(err("[search]\nbracket = [-3.1, 0]").contains("multiple of 1/64"));
        assert!(err("[search]\nbracket = [-3.5, 0]\nresolution = 1").contains("not a multiple of the resolution"));
        assert!(err("[search]\nbracket = [0, -2]").contains("lo < hi"));
        assert!(err("[search]\nbracket = [-30, 0]").contains("inside limits"));
        assert!(err("[search]\nstep = 0").contains("positive"));
        assert!(err("[search.optimal]\ncoarse = 0.75\nrefine = 0.25").contains("coarse = refine 2^k"));
        assert!(err("[search]\nfind = \"fastest\"").contains("fastest"));
        assert!(err("[search]\nbrackett = [0, 1]").contains("brackett"));
        assert!(err("[search]\n[base]\nwidht = 3").contains("widht"));
        std::fs::write(&p, "name = \"g\"\nkind = \"gpt\"\n[search]\n").unwrap();
        assert!(SearchSpec::from_file(&p).unwrap_err().to_string().contains("explicit per-run instability rule"));
        // A spec round-trips through TOML and JSON, and SpecFile tells searches from grids.
        let s = spec(Find::Optimal).with(SearchParams { instability: Some(Instability::AccBelow(0.3)), ..SearchParams::default() });
        let ids = |s: &SearchSpec| s.groups(&MlpRunner::default()).unwrap().into_iter().map(|g| g.id).collect::<Vec<_>>();
        for name in ["s.toml", "s.json"] {
            let q = dir.path().join(name);
            s.save(&q).unwrap();
            let back = SearchSpec::from_file(&q).unwrap();
            // TOML drops the nulls of unset options: the same runs.
            assert_eq!((&back.search, &back.grid, ids(&back)), (&s.search, &s.grid, ids(&s)));
            assert!(matches!(crate::sweep::SpecFile::from_file(&q).unwrap(), crate::sweep::SpecFile::Search(_)));
        }
        assert_eq!(SearchSpec::from_file(&dir.path().join("s.json")).unwrap(), s);
        spec(Find::Both).grid_spec().save(&dir.path().join("g.toml")).unwrap();
        assert!(matches!(crate::sweep::SpecFile::from_file(&dir.path().join("g.toml")).unwrap(), crate::sweep::SpecFile::Grid(_)));
    }
}
