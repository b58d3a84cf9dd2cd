//! Running a sweep on one machine: skip finished runs, claim the rest one by one, train small
//! runs in parallel (one libtorch thread each) and large runs alone (all threads), record
//! each finished run in its own transaction. See the [`super`] module docs.
//!
//! A run whose training returns an error (e.g. a subset larger than its data) is recorded as
//! that run's failure in the store and the sweep goes on; [`run`] returns
//! [`Error::RunsFailed`] at the end if any did. Errors of the store itself stop the sweep.
//! Runs held by other live processes are waited for (and taken over if their process dies),
//! so [`run`] returns when every run of the sweep (or shard) is recorded, failed, or left by
//! `limit`.
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::runner::{RunCost, RunRecord, Runner};
use super::store::{this_owner, Claim, Store};
use super::{describe, RunPoint, Shard, SweepSpec};
use crate::{Error, Result};

/// Options of one invocation (none of them changes any result).
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Only the runs of this shard.
    pub shard: Option<Shard>,
    /// Parallel workers (overrides the spec's `schedule.jobs`).
    pub jobs: Option<usize>,
    /// Stop after this many runs were trained (for tests and partial runs).
    pub limit: Option<usize>,
    /// Show a progress bar (runs done, ETA, divergences).
    pub progress: bool,
}

/// What one invocation did.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SweepReport {
    /// Runs of the sweep (in the shard).
    pub total: usize,
    /// Finished before this invocation.
    pub already_done: usize,
    /// Trained now.
    pub trained: usize,
    /// Of those, diverged.
    pub diverged: usize,
    /// Held by other live processes when this invocation stopped (only with `limit`, or
    /// when it failed: otherwise they are waited for).
    pub taken_by_others: usize,
    /// Finished by another process after this invocation planned them.
    pub done_by_others: usize,
    /// Runs whose training returned an error (recorded in the store's `failures`).
    pub failed: usize,
    /// Trained in parallel with one thread each / alone with all threads.
    pub parallel: usize,
    pub alone: usize,
    pub seconds: f64,
}

impl std::fmt::Display for SweepReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} runs: {} already done, {} trained now ({} diverged; {} in parallel, {} alone) in {:.1} s",
            self.total, self.already_done, self.trained, self.diverged, self.parallel, self.alone, self.seconds
        )?;
        if self.done_by_others > 0 {
            write!(f, "; {} trained by other processes", self.done_by_others)?;
        }
        if self.taken_by_others > 0 {
            write!(f, "; {} still held by other processes", self.taken_by_others)?;
        }
        if self.failed > 0 {
            write!(f, "; {} FAILED", self.failed)?;
        }
        Ok(())
    }
}

/// Progress of a sweep in a store.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SweepStatus {
    pub total: usize,
    pub done: usize,
    pub diverged: usize,
    /// Being trained by a live process (claims of killed processes, which the next `sweep
    /// run` takes over, are not counted).
    pub claimed: usize,
    /// Not done; their last attempt failed (and no live process holds them).
    pub failed: usize,
    /// Not done.
    pub missing: usize,
}

impl std::fmt::Display for SweepStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{} runs done ({} diverged), {} being trained", self.done, self.total, self.diverged, self.claimed)?;
        if self.failed > 0 {
            write!(f, ", {} FAILED", self.failed)?;
        }
        write!(f, ", {} not started", self.missing.saturating_sub(self.claimed + self.failed))
    }
}

/// Number of cores.
pub fn cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// Status of `spec` (or one shard of it) in the store at `store`.
pub fn status(spec: &SweepSpec, store: &Store, shard: Option<Shard>) -> Result<SweepStatus> {
    let points: Vec<RunPoint> = spec.points()?.into_iter().filter(|p| shard.is_none_or(|s| s.contains(&p.key))).collect();
    let done = store.done_keys()?;
    let claims: std::collections::HashSet<String> = store.live_claims(reclaim_after(spec))?.into_iter().map(|c| c.0).collect();
    let failures: std::collections::HashSet<String> = store.failures()?.into_iter().map(|c| c.0).collect();
    let keys: Vec<String> = points.iter().filter(|p| done.contains(&p.key)).map(|p| p.key.clone()).collect();
    let diverged = store.records_for(&keys)?.iter().filter(|r| r.diverged()).count();
    let n_done = keys.len();
    let open = |p: &&RunPoint| !done.contains(&p.key);
    Ok(SweepStatus {
        total: points.len(),
        done: n_done,
        diverged,
        claimed: points.iter().filter(open).filter(|p| claims.contains(&p.key)).count(),
        failed: points.iter().filter(open).filter(|p| !claims.contains(&p.key) && failures.contains(&p.key)).count(),
        missing: points.len() - n_done,
    })
}

/// How long a claim holds ([`super::ScheduleConfig::reclaim_after_hours`]).
fn reclaim_after(spec: &SweepSpec) -> Duration {
    Duration::from_secs_f64(spec.schedule.reclaim_after_hours.clamp(0.0, 1e6) * 3600.0)
}

/// What [`Shared::execute`] did with a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Done {
    /// Trained and recorded now.
    Trained,
    /// Recorded by another process meanwhile.
    ByOthers,
    /// Held by another live process.
    Taken,
    /// Its training returned an error (recorded as its failure).
    Failed,
    /// Not attempted: the sweep stops (`limit`, or an error of the store).
    Stopped,
}

struct Shared<'a> {
    runner: &'a dyn Runner,
    spec: &'a SweepSpec,
    store: Mutex<Store>,
    owner: String,
    reclaim_after: Duration,
    stop: AtomicBool,
    error: Mutex<Option<Error>>,
    /// Runs whose training failed: `(key, axes, error)`.
    failures: Mutex<Vec<(String, String, String)>>,
    trained: AtomicUsize,
    diverged: AtomicUsize,
    limit: usize,
    bar: ProgressBar,
}

impl Shared<'_> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn fail(&self, e: Error) {
        self.stop.store(true, Ordering::SeqCst);
        let mut slot = self.error.lock().unwrap_or_else(|p| p.into_inner());
        slot.get_or_insert(e);
    }

    /// Claims, trains and records one run with `threads` libtorch threads (set on this thread).
    fn execute(&self, p: &RunPoint, threads: usize) -> Done {
        if self.stop.load(Ordering::SeqCst) {
            return Done::Stopped;
        }
        let claim = match self.lock().claim(&p.key, &self.owner, self.reclaim_after) {
            Ok(c) => c,
            Err(e) => {
                self.fail(e);
                return Done::Stopped;
            }
        };
        match claim {
            Claim::Granted => {}
            Claim::Done => {
                self.bar.inc(1);
                return Done::ByOthers;
            }
            Claim::Taken { .. } => return Done::Taken,
        }
        // Reserve a slot under the limit only once the run is ours.
        if self.trained.fetch_add(1, Ordering::SeqCst) >= self.limit {
            self.trained.fetch_sub(1, Ordering::SeqCst);
            self.stop.store(true, Ordering::SeqCst);
            let _ = self.lock().release(&p.key, &self.owner);
            return Done::Stopped;
        }
        crate::device::set_threads(threads);
        let started = Instant::now();
        let output = match self.runner.run(&p.config, threads) {
            Ok(o) => o,
            Err(e) => {
                // This run's failure, recorded; the sweep goes on.
                self.trained.fetch_sub(1, Ordering::SeqCst);
                let msg = e.to_string();
                if let Err(e) = self.lock().record_failure(&p.key, &self.owner, &msg) {
                    self.fail(e);
                    return Done::Stopped;
                }
                self.failures.lock().unwrap_or_else(|p| p.into_inner()).push((p.key.clone(), describe(&p.axes), msg));
                self.bar.inc(1);
                return Done::Failed;
            }
        };
        let result = (|| -> Result<RunRecord> {
            let rec = RunRecord {
                key: p.key.clone(),
                sweep: self.spec.name.clone(),
                kind: self.runner.kind(),
                coords: self.runner.coords(&p.config)?,
                config: p.config.clone(),
                output,
                seconds: started.elapsed().as_secs_f64(),
                threads,
                owner: self.owner.clone(),
                finished_at: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0),
            };
            self.lock().insert(&rec)?;
            Ok(rec)
        })();
        match result {
            Ok(rec) => {
                if rec.diverged() {
                    self.diverged.fetch_add(1, Ordering::SeqCst);
                }
                self.bar.inc(1);
                self.bar.set_message(format!("{} diverged", self.diverged.load(Ordering::SeqCst)));
                Done::Trained
            }
            Err(e) => {
                // The store could not record it: stop.
                self.trained.fetch_sub(1, Ordering::SeqCst);
                let _ = self.lock().release(&p.key, &self.owner);
                self.fail(Error::Store { path: self.lock().path().to_path_buf(), reason: format!("recording run {} ({}): {e}", p.key, describe(&p.axes)) });
                Done::Stopped
            }
        }
    }
}

/// Runs to execute, with their sizes.
type Batch<'p> = Vec<(&'p RunPoint, RunCost)>;

impl Shared<'_> {
    /// Executes `small` runs on `jobs` workers with one libtorch thread each, then `large`
    /// ones one at a time with every core; counts them into `report` and returns those held
    /// by other processes.
    fn pass<'p>(&self, jobs: usize, small: &[(&'p RunPoint, RunCost)], large: &[(&'p RunPoint, RunCost)], report: &mut SweepReport) -> Result<(Batch<'p>, Batch<'p>)> {
        let mut held = (vec![], vec![]);
        let mut count = |d: Done, alone: bool| {
            match d {
                Done::Trained if alone => report.alone += 1,
                Done::Trained => report.parallel += 1,
                Done::ByOthers => report.done_by_others += 1,
                _ => {}
            }
            d == Done::Taken
        };
        if !small.is_empty() {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(jobs).build().map_err(|e| Error::config(format!("thread pool: {e}")))?;
            let done: Vec<Done> = pool.install(|| small.par_iter().with_max_len(1).map(|(p, _)| self.execute(p, 1)).collect());
            for (d, run) in done.into_iter().zip(small) {
                if count(d, false) {
                    held.0.push(*run);
                }
            }
        }
        let all = cores();
        for run in large {
            if count(self.execute(run.0, all), true) {
                held.1.push(*run);
            }
        }
        Ok(held)
    }
}

/// Runs every unfinished run of `spec` (in `opts.shard`) and records it in the store at
/// `store_path`. Safe to interrupt at any moment and to run in several processes at once.
pub fn run(spec: &SweepSpec, store_path: &Path, opts: &RunOptions) -> Result<SweepReport> {
    let runner = spec.runner();
    run_with(spec, runner.as_ref(), store_path, opts)
}

/// [`run`] with an explicit runner (a run kind not yet in [`super::RunKind`], or a test double).
pub fn run_with(spec: &SweepSpec, runner: &dyn Runner, store_path: &Path, opts: &RunOptions) -> Result<SweepReport> {
    // The same allocator settings as the `widthlab` binary: without them the last bits of a
    // record differed between a notebook process and the binary (measured in tests/sweep.rs).
    crate::device::tune_allocator();
    let started = Instant::now();
    // Everything that can be checked without the store, before the store file is created.
    if let Some(j) = opts.jobs.or(spec.schedule.jobs) {
        crate::limits::check_threads("jobs", j)?;
    }
    let jobs = opts.jobs.or(spec.schedule.jobs).unwrap_or_else(cores);
    let points: Vec<RunPoint> = spec.points()?.into_iter().filter(|p| opts.shard.is_none_or(|s| s.contains(&p.key))).collect();
    // A run this machine cannot hold stops the sweep before anything trains.
    for p in &points {
        runner.check_fits(&p.config).map_err(|e| Error::config(format!("sweep `{}`, run {} ({}): {e}", spec.name, p.key, describe(&p.axes))))?;
    }
    let store = Store::open(store_path)?;
    let done = store.done_keys()?;
    let todo: Vec<&RunPoint> = points.iter().filter(|p| !done.contains(&p.key)).collect();
    let mut report = SweepReport { total: points.len(), already_done: points.len() - todo.len(), ..Default::default() };
    let mut small = vec![];
    let mut large = vec![];
    for p in todo {
        let c = runner.cost(&p.config)?;
        if c.params >= spec.schedule.alone_from_params {
            large.push((p, c));
        } else {
            small.push((p, c));
        }
    }
    // Longest first, so the pool does not end waiting for one long run.
    small.sort_by_key(|(p, c)| (std::cmp::Reverse(c.params.saturating_mul(c.steps)), p.key.clone()));
    large.sort_by_key(|(p, c)| (std::cmp::Reverse(c.params.saturating_mul(c.steps)), p.key.clone()));
    let bar = if opts.progress {
        let b = ProgressBar::new((small.len() + large.len()) as u64);
        b.set_style(
            ProgressStyle::with_template("{spinner} sweep {prefix} [{elapsed_precise}] {bar:30} {pos}/{len} runs (eta {eta}) {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        b.set_prefix(spec.name.clone());
        b.set_message("0 diverged");
        b
    } else {
        ProgressBar::hidden()
    };
    let shared = Shared {
        runner,
        spec,
        store: Mutex::new(store),
        owner: this_owner(),
        reclaim_after: reclaim_after(spec),
        stop: AtomicBool::new(false),
        error: Mutex::new(None),
        failures: Mutex::new(vec![]),
        trained: AtomicUsize::new(0),
        diverged: AtomicUsize::new(0),
        limit: opts.limit.unwrap_or(usize::MAX),
        bar,
    };
    // Small runs: `jobs` workers, one libtorch thread each (set on each worker thread). The
    // thread count of a run depends only on its size, never on `jobs`, so a record is the
    // same whichever invocation computed it.
    let (mut small, mut large) = shared.pass(jobs, &small, &large, &mut report)?;
    // Runs held by other processes: wait until they are recorded, or take them over when
    // their process dies (or their claim goes stale).
    let mut wait = Duration::from_millis(200);
    while !(small.is_empty() && large.is_empty()) && !shared.stop.load(Ordering::SeqCst) {
        shared.bar.set_message(format!("waiting for {} runs held by other processes", small.len() + large.len()));
        std::thread::sleep(wait);
        wait = (wait * 2).min(Duration::from_secs(10));
        (small, large) = shared.pass(jobs, &small, &large, &mut report)?;
    }
    report.taken_by_others = small.len() + large.len();
    shared.bar.finish_and_clear();
    // libtorch's thread count is left as the last run set it (1 after a parallel phase):
    // restoring it here would change it under another sweep running in the same process.
    if let Some(e) = shared.error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    report.trained = shared.trained.load(Ordering::SeqCst);
    report.diverged = shared.diverged.load(Ordering::SeqCst);
    report.seconds = started.elapsed().as_secs_f64();
    let failures = shared.failures.into_inner().unwrap_or_else(|p| p.into_inner());
    report.failed = failures.len();
    if let Some((key, axes, error)) = failures.first() {
        return Err(Error::RunsFailed(format!(
            "sweep `{}`: {} of {} runs failed (recorded in {}; `sweep run` retries them): run {key} ({axes}): {error}{}; {report}",
            spec.name,
            failures.len(),
            report.total - report.already_done,
            store_path.display(),
            if failures.len() > 1 { format!(" (and {} more)", failures.len() - 1) } else { String::new() },
        )));
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{DatasetName, TeacherConfig};
    use crate::train::TrainConfig;

    /// Two tiny runs on 256 generated teacher points; `subsets` sets their training subsets.
    fn spec(subsets: &[usize]) -> SweepSpec {
        let mut base = TrainConfig { steps: Some(3), batch_size: 16, ..TrainConfig::default() };
        base.model.width = 16;
        base.model.depth = 2;
        base.data.dataset = DatasetName::Teacher;
        base.data.teacher = TeacherConfig { d_in: 4, n_train: 256, n_test: 32 };
        base.eval.train_subset = Some(32);
        SweepSpec::mlp("engine", &base).unwrap().axis("train_subset", subsets.iter().copied()).unwrap()
    }

    fn quiet() -> RunOptions {
        RunOptions { jobs: Some(1), ..RunOptions::default() }
    }

    #[test]
    fn a_run_that_fails_is_recorded_and_the_sweep_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("s.db");
        // a subset larger than the data fails at run time, not when the sweep is planned
        let s = spec(&[64, 1000, 128]);
        let e = run(&s, &store, &quiet()).unwrap_err();
        assert!(matches!(e, Error::RunsFailed(_)), "{e}");
        let e = e.to_string();
        assert!(e.contains("1 of 3 runs failed") && e.contains("train_subset=1000") && e.contains("exceeds the 256 training"), "{e}");
        let st = Store::open_existing(&store).unwrap();
        assert_eq!(st.len().unwrap(), 2, "the other runs finished");
        assert_eq!(st.failures().unwrap().len(), 1);
        let status = status(&s, &st, None).unwrap();
        assert_eq!((status.done, status.failed, status.claimed), (2, 1, 0), "{status}");
        assert!(status.to_string().contains("1 FAILED"), "{status}");
        // a second invocation retries only the failed run
        let e = run(&s, &store, &quiet()).unwrap_err().to_string();
        assert!(e.contains("1 of 1 runs failed") && e.contains("2 already done"), "{e}");
    }

    #[test]
    fn runs_held_by_another_process_are_waited_for_and_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("s.db");
        let s = spec(&[64, 128]);
        let held = s.points().unwrap()[0].key.clone();
        // pid 1 of this host: a live process holds one run ...
        let other = format!("{}:1", this_owner().rsplit_once(':').unwrap().0);
        Store::open(&store).unwrap().claim(&held, &other, Duration::from_secs(3600)).unwrap();
        // ... and gives it up (as a process does when it is killed) while we wait for it.
        let releaser = {
            let (store, held, other) = (store.clone(), held.clone(), other.clone());
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(600));
                Store::open(&store).unwrap().release(&held, &other).unwrap();
            })
        };
        let report = run(&s, &store, &quiet()).unwrap();
        releaser.join().unwrap();
        assert_eq!((report.trained, report.taken_by_others), (2, 0), "{report}");
        assert!(Store::open_existing(&store).unwrap().get(&held).unwrap().is_some());
    }

    #[test]
    fn status_counts_only_claims_that_hold() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("s.db");
        let s = spec(&[64, 128]);
        let keys: Vec<String> = s.points().unwrap().into_iter().map(|p| p.key).collect();
        let host = this_owner().rsplit_once(':').unwrap().0.to_string();
        let mut st = Store::open(&store).unwrap();
        st.claim(&keys[0], &format!("{host}:1"), Duration::from_secs(3600)).unwrap();
        st.claim(&keys[1], &format!("{host}:{}", i32::MAX - 1), Duration::from_secs(3600)).unwrap();
        let status = status(&s, &st, None).unwrap();
        assert_eq!((status.claimed, status.missing), (1, 2), "{status}");
        assert!(status.to_string().contains("1 being trained, 1 not started"), "{status}");
    }
}
