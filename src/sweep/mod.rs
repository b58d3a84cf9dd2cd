//! Learning-rate sweeps across widths (section 5.1, appendix F): a grid of training runs
//! declared in a serde file or built in code, a crash-safe store, shards for clusters, a
//! scheduler for one machine, export and analysis (optimal and max-stable learning-rate
//! exponents, [`analysis`]), and adaptive learning-rate searches over the same store
//! ([`search`]).
//!
//! # A sweep
//! A [`SweepSpec`] holds a run kind ([`RunKind`]: `mlp`, the MLP of [`crate::train`], or
//! `gpt`, the GPT of [`crate::train::gpt`]), the fixed settings (`base`, a partial
//! [`crate::train::TrainConfig`] or [`crate::train::gpt::GptTrainConfig`]: omitted fields take
//! their defaults) and the grid axes. An axis is a standard name (`width`, `depth`,
//! `lr`, `seed`, `loss`, `optimizer`, `param`, `alpha`, `dataset`) or a dotted path into the base
//! config (`optim.momentum`, `model.freeze`); its values are a list or a log grid
//! (`{ log2 = [-8, 2], per_octave = 2 }`). Every combination is one run. In TOML, quote dotted
//! paths (`"optim.momentum" = [0.0, 0.9]`): unquoted dots make nested tables.
//!
//! Records carry *coordinates* derived from the resolved config ([`Runner::coords`]: for the
//! MLP `width`, `depth`, `lr`, `seed`, `loss`, `optimizer`, `param`, `alpha`, `dataset`,
//! `logit_norm`, `freeze`); analysis groups and CSV columns come from them. A dotted-path axis
//! that is not a coordinate (e.g. `optim.momentum`) changes the runs' keys but not their
//! coordinates, so its runs fall into one analysis group: select them by key (as the notebooks
//! do with `records_for`) or add the field to the runner's coordinates.
//!
//! # Keys
//! Each run's key is a 64-bit FNV-1a hash (16 hex digits) of its run kind and its resolved
//! config serialised canonically (all defaults filled in, object keys sorted, `threads`
//! removed because the scheduler chooses it). Two sweeps that share a run share its key, so
//! re-running a sweep or a larger sweep around it skips what is done; a config written in TOML
//! or built in code gives the same key. Learning rates computed in code (`2f64.powf(..)`) can
//! differ from the literal in a file in the last bit, and then give another key; log grids
//! with up to 64 points per octave and searches use the lattice `2^(m/64)`
//! ([`pow2_lattice`]), the same bits on every machine.
//!
//! # Searches
//! A [`SearchSpec`] (a file with a `[search]` table) finds the max-stable learning rate of
//! every (setting, width, seed) by bisection and the optimal one of every (setting, width) by
//! a coarse pass and local refinement, each probe a run of this store with its key: see
//! [`search`].
//!
//! # The store: SQLite, and why
//! Results go to a SQLite file ([`store::Store`], rusqlite with the bundled library):
//! - crash safety comes from SQLite's transactions: each finished run is one transaction
//!   (`INSERT` of the record and removal of its claim), so kill -9 or a power loss at any
//!   moment leaves either the whole record or none of it, never a partial or corrupt one
//!   (write-ahead log, `synchronous = FULL`);
//! - several processes can write at once: WAL mode lets readers proceed during a write, and
//!   writers wait for each other (busy timeout of 60 s; a transaction takes milliseconds);
//! - a process claims a run (a row in `claims`, in a transaction that also checks that no
//!   record exists) before it trains it, so two processes on one store do not train the same
//!   run; claims of a process that died on this host (its pid is gone) or older than
//!   `reclaim_after` are taken over;
//! - a `meta` table holds the schema version: a store written by an incompatible widthlab, or
//!   a file that is not a widthlab store, is refused with a message that says so;
//! - pandas reads it directly (`pd.read_sql("select * from runs", sqlite3.connect(path))`), and
//!   `widthlab sweep export` writes CSV/JSON.
//!
//! Append-only JSON-lines files with atomic renames would also be crash safe, but concurrent
//! writers, claims and "is this key done" lookups would each need their own locking code;
//! SQLite provides all three and is one file that is easy to copy from a cluster.
//!
//! # Shards
//! [`Shard`] `k/N` (0-based `k`, as SLURM's `--array=0-(N-1)`) takes the runs whose key, read
//! as a number, is `k` modulo `N`: a deterministic split that needs no coordination. Each
//! shard writes its own store (or one shared store on a file system with working locks), and
//! [`store::Store::merge_from`] joins them; merged shards hold exactly the records of one
//! unsharded run (checked in `tests/sweep.rs`).
//!
//! # Scheduling
//! [`engine::run`] trains the runs whose parameter count is below `alone_from_params` in
//! parallel on a rayon pool of `jobs` workers with one libtorch thread each (libtorch's
//! intra-op threads oversubscribe 2 cores otherwise, see ENVIRONMENT.md), largest first, then
//! the large ones one at a time with all threads. Divergence is an outcome: the training loop
//! stops a run at a non-finite loss (or above `max_loss`) and the record says so. Every run is
//! seeded and its libtorch thread count depends only on its size (never on `jobs`), so a record
//! does not depend on which process or worker computed it: bitwise, between processes of the
//! same executable (`tests/sweep.rs`). One open observation: records computed inside the
//! integration-test executable differed from those of the `widthlab` binary in the last float
//! bits (relative 1e-7), independently of `jobs`, concurrency and the allocator settings; the
//! cause was not found. Keys are unaffected, so a store never holds both versions of a run.
use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{Error, Result};

pub mod analysis;
pub mod engine;
pub mod export;
pub mod presets;
pub mod runner;
pub mod search;
pub mod store;

pub use analysis::analyse_spec;
pub use engine::{run, status, RunOptions, SweepReport, SweepStatus};
pub use search::SearchSpec;
pub use runner::{GptRunner, MlpRunner, RunKind, RunOutput, RunRecord, Runner};
pub use store::Store;

/// Values of one grid axis: a list, or a log grid `base^(k / per_octave)` for
/// `k = from*per_octave ..= to*per_octave` (base 2 unless `base` is set).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum AxisValues {
    List(Vec<Value>),
    Log2 {
        /// `[from, to]` exponents (inclusive).
        log2: [f64; 2],
        /// Grid points per factor of 2 (default 1).
        #[serde(default = "one")]
        per_octave: u32,
    },
}

fn one() -> u32 {
    1
}

impl AxisValues {
    /// The axis values in order.
    pub fn values(&self) -> Result<Vec<Value>> {
        match self {
            AxisValues::List(v) => Ok(v.clone()),
            AxisValues::Log2 { log2: [from, to], per_octave } => {
                if *per_octave == 0 || !(from.is_finite() && to.is_finite()) || from > to {
                    return Err(Error::config(format!("log2 grid needs finite from <= to and per_octave >= 1, got [{from}, {to}] per_octave {per_octave}")));
                }
                crate::limits::check_runs(&format!("log2 grid [{from}, {to}] with {per_octave} per octave"), self.count())?;
                Ok(log2_grid(*from, *to, *per_octave).into_iter().map(Value::from).collect())
            }
        }
    }

    /// The number of values (in floating point: a log grid's count is known before it is
    /// built, and can be absurd).
    pub fn count(&self) -> f64 {
        match self {
            AxisValues::List(v) => v.len() as f64,
            AxisValues::Log2 { log2: [from, to], per_octave } => {
                let p = (*per_octave).max(1) as f64;
                ((to * p).round() - (from * p).round() + 1.0).max(0.0)
            }
        }
    }
}

/// `2^(k/per_octave)` for `k` from `from*per_octave` to `to*per_octave` (rounded), ascending.
/// With `per_octave` a divisor of [`LATTICE`] (1, 2, 4, ..., 64) the values are lattice points
/// ([`pow2_lattice`]), bit for bit the learning rates a search probes.
pub fn log2_grid(from: f64, to: f64, per_octave: u32) -> Vec<f64> {
    let p = per_octave.max(1) as i64;
    let (a, b) = ((from * p as f64).round() as i64, (to * p as f64).round() as i64);
    if LATTICE % p == 0 {
        (a..=b).map(|k| pow2_lattice(k * (LATTICE / p))).collect()
    } else {
        (a..=b).map(|k| 2f64.powf(k as f64 / p as f64)).collect()
    }
}

/// Points per octave of the learning-rate lattice `2^(m/64)` on which searches probe and log
/// grids with up to 64 points per octave lie.
pub const LATTICE: i64 = 64;

/// `2^(r/64)` for `r = 0..64`, correctly rounded (computed once in 80-digit decimal
/// arithmetic; glibc's `pow` gives the same bits for all 64).
const POW2_64THS: [u64; 64] = [
    0x3ff0000000000000, 0x3ff02c9a3e778061, 0x3ff059b0d3158574, 0x3ff0874518759bc8,
    0x3ff0b5586cf9890f, 0x3ff0e3ec32d3d1a2, 0x3ff11301d0125b51, 0x3ff1429aaea92de0,
    0x3ff172b83c7d517b, 0x3ff1a35beb6fcb75, 0x3ff1d4873168b9aa, 0x3ff2063b88628cd6,
    0x3ff2387a6e756238, 0x3ff26b4565e27cdd, 0x3ff29e9df51fdee1, 0x3ff2d285a6e4030b,
    0x3ff306fe0a31b715, 0x3ff33c08b26416ff, 0x3ff371a7373aa9cb, 0x3ff3a7db34e59ff7,
    0x3ff3dea64c123422, 0x3ff4160a21f72e2a, 0x3ff44e086061892d, 0x3ff486a2b5c13cd0,
    0x3ff4bfdad5362a27, 0x3ff4f9b2769d2ca7, 0x3ff5342b569d4f82, 0x3ff56f4736b527da,
    0x3ff5ab07dd485429, 0x3ff5e76f15ad2148, 0x3ff6247eb03a5585, 0x3ff6623882552225,
    0x3ff6a09e667f3bcd, 0x3ff6dfb23c651a2f, 0x3ff71f75e8ec5f74, 0x3ff75feb564267c9,
    0x3ff7a11473eb0187, 0x3ff7e2f336cf4e62, 0x3ff82589994cce13, 0x3ff868d99b4492ed,
    0x3ff8ace5422aa0db, 0x3ff8f1ae99157736, 0x3ff93737b0cdc5e5, 0x3ff97d829fde4e50,
    0x3ff9c49182a3f090, 0x3ffa0c667b5de565, 0x3ffa5503b23e255d, 0x3ffa9e6b5579fdbf,
    0x3ffae89f995ad3ad, 0x3ffb33a2b84f15fb, 0x3ffb7f76f2fb5e47, 0x3ffbcc1e904bc1d2,
    0x3ffc199bdd85529c, 0x3ffc67f12e57d14b, 0x3ffcb720dcef9069, 0x3ffd072d4a07897c,
    0x3ffd5818dcfba487, 0x3ffda9e603db3285, 0x3ffdfc97337b9b5f, 0x3ffe502ee78b3ff6,
    0x3ffea4afa2a490da, 0x3ffefa1bee615a27, 0x3fff50765b6e4540, 0x3fffa7c1819e90d8,
];

/// `2^(m/64)` with the same bits on every IEEE-754 machine: `2^floor(m/64)` (exact) times the
/// correctly rounded `2^(r/64)`, `r = m mod 64`, from a table. A computed learning rate is
/// part of its run's key, so a search's probes (and log grids) must not depend on a
/// platform's `pow`.
pub fn pow2_lattice(m: i64) -> f64 {
    let (q, r) = (m.div_euclid(LATTICE), m.rem_euclid(LATTICE));
    let frac = f64::from_bits(POW2_64THS[r as usize]);
    if (-1022..=1023).contains(&q) {
        frac * f64::from_bits(((1023 + q) as u64) << 52)
    } else {
        frac * 2f64.powi(q as i32)
    }
}

/// How the runs of a sweep are scheduled on one machine (not part of any run's key).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScheduleConfig {
    /// Parallel workers for small runs (`None`: the number of cores).
    pub jobs: Option<usize>,
    /// Runs with at least this many parameters run alone with all threads
    /// (default 4M: the 8-layer MLP from width ~800 on).
    pub alone_from_params: u64,
    /// Claims older than this many hours are taken over (default 12).
    pub reclaim_after_hours: f64,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        ScheduleConfig { jobs: None, alone_from_params: 4_000_000, reclaim_after_hours: 12.0 }
    }
}

/// A sweep: fixed settings and grid axes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepSpec {
    /// A name, stored with each record (records are found by key, not by name).
    pub name: String,
    /// What each run trains (default `mlp`).
    #[serde(default)]
    pub kind: RunKind,
    /// Fixed settings: a (partial) config of the run kind; omitted fields take defaults.
    #[serde(default = "empty_object")]
    pub base: Value,
    /// Axis name -> values; every combination is a run.
    #[serde(default)]
    pub grid: BTreeMap<String, AxisValues>,
    #[serde(default)]
    pub schedule: ScheduleConfig,
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

/// A sweep file: a grid ([`SweepSpec`]) or a search ([`SearchSpec`], a file with a `[search]`
/// table).
#[derive(Clone, Debug, PartialEq)]
pub enum SpecFile {
    Grid(SweepSpec),
    Search(SearchSpec),
}

impl SpecFile {
    /// Reads a grid or a search from a TOML or JSON file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let v: Value = crate::config::read_config(path)?;
        if v.get("search").is_some() {
            Ok(SpecFile::Search(SearchSpec::from_file(path)?))
        } else {
            Ok(SpecFile::Grid(SweepSpec::from_file(path)?))
        }
    }

    pub fn name(&self) -> &str {
        match self {
            SpecFile::Grid(s) => &s.name,
            SpecFile::Search(s) => &s.name,
        }
    }
}

/// One run of a sweep, resolved.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunPoint {
    pub key: String,
    /// The axis values of this run, by axis name.
    pub axes: BTreeMap<String, Value>,
    /// The canonical, fully resolved config.
    pub config: Value,
}

impl SweepSpec {
    /// A sweep in code from a typed base config, e.g.
    /// `SweepSpec::mlp("ce", &base)?.axis("width", [64, 128])?.axis("lr", lrs)?`.
    pub fn mlp(name: &str, base: &crate::train::TrainConfig) -> Result<Self> {
        Ok(SweepSpec { name: name.into(), kind: RunKind::Mlp, base: serde_json::to_value(base)?, grid: BTreeMap::new(), schedule: ScheduleConfig::default() })
    }

    /// A GPT sweep in code from a typed base config (axes as for [`GptRunner`]).
    pub fn gpt(name: &str, base: &crate::train::gpt::GptTrainConfig) -> Result<Self> {
        Ok(SweepSpec { name: name.into(), kind: RunKind::Gpt, base: serde_json::to_value(base)?, grid: BTreeMap::new(), schedule: ScheduleConfig::default() })
    }

    /// Adds (or replaces) an axis.
    pub fn axis<T: Serialize>(mut self, name: &str, values: impl IntoIterator<Item = T>) -> Result<Self> {
        let v = values.into_iter().map(serde_json::to_value).collect::<std::result::Result<Vec<_>, _>>()?;
        self.grid.insert(name.into(), AxisValues::List(v));
        Ok(self)
    }

    /// Reads a sweep from a TOML or JSON file (by extension; TOML otherwise). TOML's `nan` and
    /// `inf` are refused with their place named: the resolved configs are JSON, which has
    /// neither (they would silently become `null`).
    pub fn from_file(path: &Path) -> Result<Self> {
        let spec: SweepSpec = crate::config::read_config(path)?;
        if !path.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
            let doc: toml::Value = toml::from_str(&text).map_err(|e| Error::ConfigParse { path: path.to_path_buf(), reason: e.to_string() })?;
            if let Some((at, x)) = non_finite(&doc, String::new()) {
                return Err(Error::ConfigParse { path: path.to_path_buf(), reason: format!("`{at}` is {x}: a sweep takes finite numbers only") });
            }
        }
        // Resolve every run now, so a bad value is reported before anything trains.
        spec.points().map_err(|e| Error::ConfigParse { path: path.to_path_buf(), reason: e.to_string() })?;
        Ok(spec)
    }

    /// Writes the sweep as TOML (`.toml`) or JSON.
    pub fn save(&self, path: &Path) -> Result<()> {
        save_spec(self, path)
    }

    /// The runner of this sweep's kind.
    pub fn runner(&self) -> Box<dyn Runner> {
        self.kind.runner()
    }

    /// Every run of the grid, in a fixed order (axes by name, values in their order), with
    /// keys. Duplicate combinations (same resolved config) are listed once.
    pub fn points(&self) -> Result<Vec<RunPoint>> {
        let runner = self.runner();
        let size: f64 = self.grid.values().map(AxisValues::count).product();
        crate::limits::check_runs(&format!("sweep `{}` (the product of its axes' lengths)", self.name), size)?;
        let axes: Vec<(String, Vec<Value>)> = self.grid.iter().map(|(k, v)| Ok((k.clone(), v.values()?))).collect::<Result<_>>()?;
        if let Some((name, _)) = axes.iter().find(|(_, v)| v.is_empty()) {
            return Err(Error::config(format!("sweep `{}`: axis `{name}` has no values", self.name)));
        }
        let total: usize = axes.iter().map(|(_, v)| v.len()).product();
        let mut out = Vec::with_capacity(total);
        let mut seen = std::collections::HashSet::new();
        for i in 0..total {
            let mut rem = i;
            let mut assign = BTreeMap::new();
            for (name, vals) in axes.iter().rev() {
                assign.insert(name.clone(), vals[rem % vals.len()].clone());
                rem /= vals.len();
            }
            let p = resolve_point(runner.as_ref(), &self.name, &self.base, assign)?;
            if seen.insert(p.key.clone()) {
                out.push(p);
            }
        }
        Ok(out)
    }
}

/// The first non-finite float in a TOML document, with its path (`grid.lr[0]`).
fn non_finite(v: &toml::Value, at: String) -> Option<(String, f64)> {
    let join = |k: &str| if at.is_empty() { k.to_string() } else { format!("{at}.{k}") };
    match v {
        toml::Value::Float(x) if !x.is_finite() => Some((at, *x)),
        toml::Value::Array(a) => a.iter().enumerate().find_map(|(i, x)| non_finite(x, format!("{at}[{i}]"))),
        toml::Value::Table(t) => t.iter().find_map(|(k, x)| non_finite(x, join(k))),
        _ => None,
    }
}

/// The run of `runner` with the axis values `axes` set in `base`: its canonical config and key
/// (errors name the sweep and the axis values).
pub fn resolve_point(runner: &dyn Runner, sweep: &str, base: &Value, axes: BTreeMap<String, Value>) -> Result<RunPoint> {
    let config = runner.resolve(base, &axes).map_err(|e| Error::config(format!("sweep `{sweep}`, run {}: {e}", describe(&axes))))?;
    Ok(RunPoint { key: run_key(runner.kind(), &config), axes, config })
}

/// Writes a sweep or search file: TOML (`.toml`, without the `null`s of unset optional
/// fields, which TOML cannot hold and reading fills in again) or JSON.
pub(crate) fn save_spec<T: Serialize>(spec: &T, path: &Path) -> Result<()> {
    fn drop_nulls(v: &mut Value) {
        match v {
            Value::Object(m) => {
                m.retain(|_, x| !x.is_null());
                m.values_mut().for_each(drop_nulls);
            }
            Value::Array(a) => a.iter_mut().for_each(drop_nulls),
            _ => {}
        }
    }
    let text = if path.extension().is_some_and(|e| e == "toml") {
        let mut v = serde_json::to_value(spec)?;
        drop_nulls(&mut v);
        toml::to_string_pretty(&v).map_err(|e| Error::Serde(e.to_string()))?
    } else {
        serde_json::to_string_pretty(spec)?
    };
    crate::files::write_atomic(path, text.as_bytes())
}

/// `width=64 lr=0.1` for messages.
pub fn describe(axes: &BTreeMap<String, Value>) -> String {
    axes.iter().map(|(k, v)| format!("{k}={}", plain(v))).collect::<Vec<_>>().join(" ")
}

/// A JSON value as plain text (strings without quotes).
pub fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// JSON with object keys sorted at every level (serde_json's map order is not relied on).
pub fn canonical_json(v: &Value) -> String {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let body: Vec<String> = keys.iter().map(|k| format!("{}:{}", Value::String((*k).clone()), canonical_json(&m[*k]))).collect();
            format!("{{{}}}", body.join(","))
        }
        Value::Array(a) => format!("[{}]", a.iter().map(canonical_json).collect::<Vec<_>>().join(",")),
        other => other.to_string(),
    }
}

/// 64-bit FNV-1a.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The stable key of a run: hash of its kind and canonical config, 16 hex digits.
pub fn run_key(kind: RunKind, config: &Value) -> String {
    format!("{:016x}", fnv1a64(format!("{kind}\n{}", canonical_json(config)).as_bytes()))
}

/// Shard `index` of `count` (0-based), parsed from `k/N`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    pub index: u64,
    pub count: u64,
}

impl std::str::FromStr for Shard {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::config(format!("shard `{s}`: expected k/N with 0 <= k < N (0-based, e.g. $SLURM_ARRAY_TASK_ID/4)"));
        let (k, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count): (u64, u64) = (k.trim().parse().map_err(|_| bad())?, n.trim().parse().map_err(|_| bad())?);
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl Shard {
    /// Whether the run with this key belongs to the shard.
    pub fn contains(&self, key: &str) -> bool {
        u64::from_str_radix(key, 16).map_or(false, |h| h % self.count == self.index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::TrainConfig;

    fn spec() -> SweepSpec {
        SweepSpec::mlp("t", &TrainConfig::default()).unwrap().axis("width", [64, 128]).unwrap().axis("lr", [0.1, 1.0, 10.0]).unwrap().axis("loss", ["ce", "mse"]).unwrap()
    }

    #[test]
    fn grid_expands_to_every_combination_with_distinct_stable_keys() {
        let pts = spec().points().unwrap();
        assert_eq!(pts.len(), 12);
        let keys: std::collections::HashSet<_> = pts.iter().map(|p| p.key.clone()).collect();
        assert_eq!(keys.len(), 12);
        assert!(pts.iter().all(|p| p.key.len() == 16));
        // The same runs declared in TOML with defaults omitted: the same keys.
        let toml = r#"
            name = "other name"
            [base]
            lr = 0.5
            [grid]
            width = [64, 128]
            lr = [0.1, 1.0, 10.0]
            loss = ["ce", "mse"]
        "#;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.toml");
        std::fs::write(&p, toml).unwrap();
        let from_file = SweepSpec::from_file(&p).unwrap().points().unwrap();
        assert_eq!(from_file.iter().map(|p| &p.key).collect::<Vec<_>>(), pts.iter().map(|p| &p.key).collect::<Vec<_>>());
        // threads are the scheduler's business: not part of the key.
        let mut base = TrainConfig::default();
        base.threads = Some(2);
        let s2 = SweepSpec { base: serde_json::to_value(&base).unwrap(), ..spec() };
        assert_eq!(s2.points().unwrap()[0].key, pts[0].key);
        let c = &pts[0].config;
        assert_eq!(c["model"]["width"], 64);
        assert!(c.get("threads").is_none_or(|t| t.is_null()));
    }

    #[test]
    fn log_grid_and_canonical_json() {
        let g = log2_grid(-2.0, 1.0, 2);
        assert_eq!(g.len(), 7);
        assert!((g[0] - 0.25).abs() < 1e-15 && (g[6] - 2.0).abs() < 1e-15 && (g[1] - 0.25 * 2f64.sqrt()).abs() < 1e-15);
        let a: Value = serde_json::from_str(r#"{"b":1,"a":{"d":[1,{"z":0,"y":1}],"c":null}}"#).unwrap();
        assert_eq!(canonical_json(&a), r#"{"a":{"c":null,"d":[1,{"y":1,"z":0}]},"b":1}"#);
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
    }

    #[test]
    fn lattice_learning_rates_are_exact_powers_of_two() {
        // Whole octaves are exact; every 64th of an octave is within 1 ulp of pow (equal to
        // glibc's, checked when the table was made) and the table's values multiply up to 2.
        for m in -1280..=1280i64 {
            let v = pow2_lattice(m);
            let p = 2f64.powf(m as f64 / 64.0);
            assert!((v - p).abs() <= p * f64::EPSILON, "{m}: {v} vs {p}");
            if m % 64 == 0 {
                assert_eq!(v, 2f64.powi((m / 64) as i32));
            }
            assert_eq!(pow2_lattice(m + 64), 2.0 * v, "{m}");
        }
        assert_eq!(pow2_lattice(32), std::f64::consts::SQRT_2);
        assert_eq!(pow2_lattice(-32), std::f64::consts::FRAC_1_SQRT_2);
        assert!((f64::from_bits(POW2_64THS[1]).powi(64) - 2.0).abs() < 1e-13);
        // Log grids with a power-of-two density are lattice points; others use pow.
        assert_eq!(log2_grid(-3.0, 1.0, 8), (-24..=8).map(|k| pow2_lattice(8 * k)).collect::<Vec<_>>());
        assert_eq!(log2_grid(0.0, 1.0, 3), vec![1.0, 2f64.powf(1.0 / 3.0), 2f64.powf(2.0 / 3.0), 2.0]);
    }

    #[test]
    fn shards_partition_the_grid() {
        let pts = spec().points().unwrap();
        let shards: Vec<Shard> = (0..3).map(|k| format!("{k}/3").parse().unwrap()).collect();
        for p in &pts {
            assert_eq!(shards.iter().filter(|s| s.contains(&p.key)).count(), 1);
        }
        for bad in ["3/3", "1", "a/2", "0/0", "-1/2"] {
            assert!(bad.parse::<Shard>().unwrap_err().to_string().contains("k/N"), "{bad}");
        }
    }

    #[test]
    fn bad_sweeps_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.toml");
        let err = |text: &str| {
            std::fs::write(&p, text).unwrap();
            SweepSpec::from_file(&p).unwrap_err().to_string()
        };
        assert!(err("name = \"x\"\n[grid]\nwidth = [64, \"wide\"]").contains("width"));
        assert!(err("name = \"x\"\n[base]\nwidht = 3").contains("widht"));
        assert!(err("name = \"x\"\n[grid]\nlr = []").contains("no values"));
        assert!(err("name = \"x\"\nkind = \"rnn\"").contains("rnn"));
        assert!(err("name = \"x\"\n[grid]\nlr = { log2 = [2, -2] }").contains("log2"));
        assert!(err("[grid\n").contains("cannot parse"));
        assert!(err("name = \"x\"\n[grid]\n\"model.nope\" = [1]").contains("nope"));
        // NaN and infinity are named, not turned into null
        let e = err("name = \"x\"\n[grid]\nlr = [0.1, nan]");
        assert!(e.contains("`grid.lr[1]` is NaN") && !e.contains("null"), "{e}");
        assert!(err("name = \"x\"\n[base]\nlr = inf").contains("`base.lr` is inf"));
        // sizes are checked before a grid is built
        let e = err("name = \"x\"\n[grid]\nlr = { log2 = [-1e10, 1e10] }");
        assert!(e.contains("runs exceed the limit of 1000000"), "{e}");
        let e = err("name = \"x\"\n[grid]\nlr = { log2 = [0, 1000], per_octave = 100 }\nseed = { log2 = [0, 1000], per_octave = 100 }");
        assert!(e.contains("product of its axes"), "{e}");
        // a run this machine cannot hold: the sweep plans (status, keys), but does not run,
        // and creates no store
        std::fs::write(&p, "name = \"x\"\n[grid]\nwidth = [64, 1000000000000]").unwrap();
        let huge = SweepSpec::from_file(&p).unwrap();
        let store = dir.path().join("s.db");
        let e = run(&huge, &store, &RunOptions::default()).unwrap_err().to_string();
        assert!(e.contains("width 1000000000000") && e.contains("needs at least"), "{e}");
        assert!(!store.exists());
        // nor does --jobs 0
        let e = run(&spec(), &store, &RunOptions { jobs: Some(0), ..RunOptions::default() }).unwrap_err().to_string();
        assert!(e.contains("jobs must be between 1 and"), "{e}");
        assert!(!store.exists());
        // AdamW's name in a grid
        std::fs::write(&p, "name = \"x\"\n[grid]\noptimizer = [\"adamw\", \"adam-w\"]").unwrap();
        assert_eq!(SweepSpec::from_file(&p).unwrap().points().unwrap().len(), 1, "one run: both names are AdamW");
    }
}
