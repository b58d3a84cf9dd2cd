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
use super::{describe, RunPoint, ScheduleConfig, Shard, SweepSpec};
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
    let claims: std::collections::HashSet<String> = store.live_claims(reclaim_after(&spec.schedule))?.into_iter().map(|c| c.0).collect();
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
fn reclaim_after(schedule: &ScheduleConfig) -> Duration {
    Duration::from_secs_f64(schedule.reclaim_after_hours.clamp(0.0, 1e6) * 3600.0)
}

/// What [`Executor::execute`] did with one run.
pub(crate) enum Executed {
    /// Trained and recorded now.
    Trained(RunRecord),
    /// A record existed already (finished by another process since it was planned).
    Done,
    /// Another live process holds its claim.
    Taken,
    /// Its training returned this error (recorded as the run's failure in the store).
    Failed(String),
    /// Not attempted: the limit was reached or an error stopped the invocation.
    Stopped,
}

/// Claims, trains and records runs for one invocation: the part of the engine that grids and
/// searches ([`super::search`]) share. The first error stops every later run and is returned
/// by [`Executor::finish`].
pub(crate) struct Executor<'a> {
    runner: &'a dyn Runner,
    sweep: String,
    store: Mutex<Store>,
    owner: String,
    reclaim_after: Duration,
    stop: AtomicBool,
    error: Mutex<Option<Error>>,
    trained: AtomicUsize,
    diverged: AtomicUsize,
    limit: usize,
}

/// Counts of one invocation's [`Executor`].
pub(crate) struct Executions {
    pub trained: usize,
    pub diverged: usize,
}

impl<'a> Executor<'a> {
    /// An executor recording into `store` under the sweep name `sweep`; at most `limit` runs
    /// are trained.
    pub(crate) fn new(runner: &'a dyn Runner, sweep: &str, store: Store, schedule: &ScheduleConfig, limit: Option<usize>) -> Self {
        Executor {
            runner,
            sweep: sweep.to_string(),
            store: Mutex::new(store),
            owner: this_owner(),
            reclaim_after: reclaim_after(schedule),
            stop: AtomicBool::new(false),
            error: Mutex::new(None),
            trained: AtomicUsize::new(0),
            diverged: AtomicUsize::new(0),
            limit: limit.unwrap_or(usize::MAX),
        }
    }

    /// The store (one connection, shared by the workers).
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the limit or an error stopped this invocation.
    pub(crate) fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Stops the invocation with an error (the first one is kept).
    pub(crate) fn fail(&self, e: Error) {
        self.stop.store(true, Ordering::SeqCst);
        let mut slot = self.error.lock().unwrap_or_else(|p| p.into_inner());
        slot.get_or_insert(e);
    }

    /// Runs trained so far by this invocation.
    pub(crate) fn trained(&self) -> usize {
        self.trained.load(Ordering::SeqCst)
    }

    /// Claims, trains and records one run with `threads` libtorch threads (set on this thread).
    pub(crate) fn execute(&self, p: &RunPoint, threads: usize) -> Executed {
        if self.stopped() {
            return Executed::Stopped;
        }
        let claim = match self.lock().claim(&p.key, &self.owner, self.reclaim_after) {
            Ok(c) => c,
            Err(e) => {
                self.fail(e);
                return Executed::Stopped;
            }
        };
        match claim {
            Claim::Granted => {}
            Claim::Done => return Executed::Done,
            Claim::Taken { .. } => return Executed::Taken,
        }
        // Reserve a slot under the limit only once the run is ours.
        if self.trained.fetch_add(1, Ordering::SeqCst) >= self.limit {
            self.trained.fetch_sub(1, Ordering::SeqCst);
            self.stop.store(true, Ordering::SeqCst);
            let _ = self.lock().release(&p.key, &self.owner);
            return Executed::Stopped;
        }
        crate::device::set_threads(threads);
        let started = Instant::now();
        let output = match self.runner.run(&p.config, threads) {
            Ok(o) => o,
            Err(e) => {
                // This run's failure, recorded; the invocation goes on.
                self.trained.fetch_sub(1, Ordering::SeqCst);
                let msg = e.to_string();
                if let Err(e) = self.lock().record_failure(&p.key, &self.owner, &msg) {
                    self.fail(e);
                    return Executed::Stopped;
                }
                return Executed::Failed(msg);
            }
        };
        let result = (|| -> Result<RunRecord> {
            let rec = RunRecord {
                key: p.key.clone(),
                sweep: self.sweep.clone(),
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
                Executed::Trained(rec)
            }
            Err(e) => {
                self.trained.fetch_sub(1, Ordering::SeqCst);
                let _ = self.lock().release(&p.key, &self.owner);
                // The store could not record it: stop.
                self.fail(Error::Store { path: self.lock().path().to_path_buf(), reason: format!("recording run {} ({}): {e}", p.key, describe(&p.axes)) });
                Executed::Stopped
            }
        }
    }

    /// The counts, or the first error.
    pub(crate) fn finish(self) -> Result<Executions> {
        if let Some(e) = self.error.into_inner().unwrap_or_else(|p| p.into_inner()) {
            return Err(e);
        }
        Ok(Executions { trained: self.trained.into_inner(), diverged: self.diverged.into_inner() })
    }
}

/// The engine's scheduling, for any unit of work whose runs have one size (a run of a grid, a
/// search group): units below `alone_from_params` parameters run on a rayon pool of `jobs`
/// workers with one libtorch thread each, longest (`params x steps`) first, then the others
/// one at a time with every core. `work(unit, threads)` returns whether the unit counts;
/// returned: how many counted in parallel and alone.
pub(crate) fn schedule<T: Sync>(units: Vec<(T, RunCost)>, alone_from_params: u64, jobs: usize, work: impl Fn(&T, usize) -> bool + Sync) -> Result<(usize, usize)> {
    let (mut small, mut large): (Vec<_>, Vec<_>) = units.into_iter().partition(|(_, c)| c.params < alone_from_params);
    // Longest first, so the pool does not end waiting for one long unit (stable sort: ties
    // keep the caller's order).
    small.sort_by_key(|(_, c)| std::cmp::Reverse(c.params.saturating_mul(c.steps)));
    large.sort_by_key(|(_, c)| std::cmp::Reverse(c.params.saturating_mul(c.steps)));
    let mut parallel = 0;
    // The thread count of a run depends only on its size, never on `jobs`, so a record is the
    // same whichever invocation computed it.
    if !small.is_empty() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(jobs.max(1)).build().map_err(|e| Error::config(format!("thread pool: {e}")))?;
        parallel = pool.install(|| small.par_iter().with_max_len(1).filter(|(u, _)| work(u, 1)).count());
    }
    let all = cores();
    let alone = large.iter().filter(|(u, _)| work(u, all)).count();
    // libtorch's thread count is left as the last run set it (1 after a parallel phase):
    // restoring it here would change it under another sweep running in the same process.
    Ok((parallel, alone))
}

/// Runs every unfinished run of `spec` (in `opts.shard`) and records it in the store at
/// `store_path`. Safe to interrupt at any moment and to run in several processes at once.
pub fn run(spec: &SweepSpec, store_path: &Path, opts: &RunOptions) -> Result<SweepReport> {
    let runner = spec.runner();
    run_with(spec, runner.as_ref(), store_path, opts)
}

/// The number of parallel workers of an invocation (`opts.jobs`, else the spec's, else the
/// number of cores).
pub(crate) fn jobs(opts: &RunOptions, schedule: &ScheduleConfig) -> Result<usize> {
    if let Some(j) = opts.jobs.or(schedule.jobs) {
        crate::limits::check_threads("jobs", j)?;
    }
    Ok(opts.jobs.or(schedule.jobs).unwrap_or_else(cores).max(1))
}

/// [`run`] with an explicit runner (a run kind not yet in [`super::RunKind`], or a test double).
pub fn run_with(spec: &SweepSpec, runner: &dyn Runner, store_path: &Path, opts: &RunOptions) -> Result<SweepReport> {
    // The same allocator settings as the `widthlab` binary: without them the last bits of a
    // record differed between a notebook process and the binary (measured in tests/sweep.rs).
    crate::device::tune_allocator();
    let started = Instant::now();
    // Everything that can be checked without the store, before the store file is created.
    let jobs = jobs(opts, &spec.schedule)?;
    let points: Vec<RunPoint> = spec.points()?.into_iter().filter(|p| opts.shard.is_none_or(|s| s.contains(&p.key))).collect();
    // A run this machine cannot hold stops the sweep before anything trains.
    for p in &points {
        runner.check_fits(&p.config).map_err(|e| Error::config(format!("sweep `{}`, run {} ({}): {e}", spec.name, p.key, describe(&p.axes))))?;
    }
    let store = Store::open(store_path)?;
    let done = store.done_keys()?;
    let todo: Vec<&RunPoint> = points.iter().filter(|p| !done.contains(&p.key)).collect();
    let mut report = SweepReport { total: points.len(), already_done: points.len() - todo.len(), ..Default::default() };
    let mut units: Vec<(&RunPoint, RunCost)> = todo.into_iter().map(|p| Ok((p, runner.cost(&p.config)?))).collect::<Result<_>>()?;
    let bar = if opts.progress {
        let b = ProgressBar::new(units.len() as u64);
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
    let exec = Executor::new(runner, &spec.name, store, &spec.schedule, opts.limit);
    let (done_by_others, diverged) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let failures: Mutex<Vec<(String, String, String)>> = Mutex::new(vec![]);
    let held: Mutex<Vec<String>> = Mutex::new(vec![]);
    let mut wait = Duration::from_millis(200);
    loop {
        let (parallel, alone) = schedule(units.clone(), spec.schedule.alone_from_params, jobs, |p, threads| {
            let trained = match exec.execute(p, threads) {
                Executed::Trained(rec) => {
                    if rec.diverged() {
                        bar.set_message(format!("{} diverged", diverged.fetch_add(1, Ordering::SeqCst) + 1));
                    }
                    true
                }
                Executed::Done => {
                    done_by_others.fetch_add(1, Ordering::SeqCst);
                    false
                }
                Executed::Taken => {
                    held.lock().unwrap_or_else(|e| e.into_inner()).push(p.key.clone());
                    return false;
                }
                Executed::Failed(msg) => {
                    failures.lock().unwrap_or_else(|e| e.into_inner()).push((p.key.clone(), describe(&p.axes), msg));
                    false
                }
                Executed::Stopped => return false,
            };
            bar.inc(1);
            trained
        })?;
        report.parallel += parallel;
        report.alone += alone;
        // Runs held by other processes: wait until they are recorded, or take them over when
        // their process dies (or their claim goes stale).
        let held_now: std::collections::HashSet<String> = std::mem::take(&mut *held.lock().unwrap_or_else(|e| e.into_inner())).into_iter().collect();
        units.retain(|(p, _)| held_now.contains(&p.key));
        report.taken_by_others = units.len();
        if units.is_empty() || exec.stopped() {
            break;
        }
        bar.set_message(format!("waiting for {} runs held by other processes", units.len()));
        std::thread::sleep(wait);
        wait = (wait * 2).min(Duration::from_secs(10));
    }
    bar.finish_and_clear();
    let counts = exec.finish()?;
    report.trained = counts.trained;
    report.diverged = counts.diverged;
    report.done_by_others = done_by_others.into_inner();
    report.seconds = started.elapsed().as_secs_f64();
    let failures = failures.into_inner().unwrap_or_else(|p| p.into_inner());
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
