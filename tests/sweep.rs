//! Reliability of the sweep engine (issue 6): SIGKILL at a random moment and resume, two
//! processes on one store, shards merged = one unsharded sweep, clear errors for malformed
//! sweep files and incompatible stores. Tiny runs on the generated teacher data (seconds).
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use widthlab::sweep::{self, RunOptions, RunRecord, Store, SweepSpec};

fn widthlab() -> Command {
    Command::new(env!("CARGO_BIN_EXE_widthlab"))
}

/// A small grid: 2 losses x 3 widths x 4 learning rates x 2 seeds = 48 runs of `steps` steps,
/// including diverging ones (MSE at lr 8).
fn spec_text(name: &str, steps: usize) -> String {
    format!(
        r#"
name = "{name}"
[base]
batch_size = 32
steps = {steps}
[base.model]
depth = 3
[base.data]
dataset = "teacher"
[base.data.teacher]
d_in = 8
n_train = 256
n_test = 64
[base.eval]
train_subset = 128
[grid]
width = [16, 32, 64]
lr = [0.03125, 0.25, 2.0, 8.0]
seed = [0, 1]
loss = ["ce", "mse"]
"#
    )
}

fn write_spec(dir: &Path, name: &str, steps: usize) -> (std::path::PathBuf, SweepSpec) {
    let p = dir.join(format!("{name}.toml"));
    std::fs::write(&p, spec_text(name, steps)).unwrap();
    let s = SweepSpec::from_file(&p).unwrap();
    (p, s)
}

fn quiet() -> RunOptions {
    RunOptions { progress: false, ..Default::default() }
}

fn by_key(store: &Path) -> BTreeMap<String, RunRecord> {
    Store::open_existing(store).unwrap().records().unwrap().into_iter().map(|r| (r.key.clone(), r)).collect()
}

/// Every run of `spec` has a record in both, with the same result.
fn assert_same_results(spec: &SweepSpec, a: &BTreeMap<String, RunRecord>, b: &BTreeMap<String, RunRecord>) {
    let keys: Vec<String> = spec.points().unwrap().into_iter().map(|p| p.key).collect();
    assert_eq!(a.len(), keys.len());
    assert_eq!(b.len(), keys.len());
    for k in &keys {
        let (x, y) = (&a[k], &b[k]);
        assert!(x.same_result(y), "run {k} differs:\n{:?}\n{:?}", x.output, y.output);
    }
}

/// An uninterrupted sweep by the binary. (References are computed by the binary, not in this
/// test process: records computed inside the test executable differed from the binary's in
/// the last float bits, independently of jobs and of concurrent tests; cause not found.)
fn run_binary(spec: &Path, store: &Path, jobs: &str) -> Output {
    let out = widthlab().args(["sweep", "run", spec.to_str().unwrap(), "--store", store.to_str().unwrap(), "--jobs", jobs, "--quiet"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    out
}

fn trained_of(o: &Output) -> usize {
    let s = String::from_utf8_lossy(&o.stdout);
    // "... N already done, M trained now ..."
    let i = s.find(" trained now").unwrap_or_else(|| panic!("no report in {s}"));
    s[..i].rsplit(' ').next().unwrap().parse().unwrap()
}

#[test]
fn sigkill_then_resume_gives_the_uninterrupted_results_without_recomputing() {
    let dir = tempfile::tempdir().unwrap();
    // 600 steps per run, so that the 48 runs outlast the kill window below (with 150 the
    // sweep sometimes finished before the kill once the MLP step got faster)
    let (spec_path, spec) = write_spec(dir.path(), "kill", 600);
    let reference = dir.path().join("reference.db");
    let out = run_binary(&spec_path, &reference, "2");
    assert_eq!(trained_of(&out), 48);
    assert!(Store::open_existing(&reference).unwrap().records().unwrap().iter().any(|r| r.diverged()), "the grid includes diverging runs");

    let store = dir.path().join("killed.db");
    let mut child = widthlab()
        .args(["sweep", "run", spec_path.to_str().unwrap(), "--store", store.to_str().unwrap(), "--jobs", "2", "--quiet"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait for a random number (3..20) of finished runs plus a random fraction of a run.
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos() as usize;
    let target = 3 + nanos % 18;
    let started = Instant::now();
    loop {
        let n = Store::open(&store).map(|s| s.len().unwrap_or(0)).unwrap_or(0);
        if n >= target || started.elapsed() > Duration::from_secs(120) {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis((nanos / 7 % 40) as u64));
    child.kill().unwrap(); // SIGKILL on Unix
    let status = child.wait().unwrap();
    assert!(!status.success(), "the sweep was killed, not finished");

    let before = by_key(&store);
    assert!(!before.is_empty() && before.len() < 48, "killed after {} runs", before.len());
    // Resume in another process: exactly the missing runs are trained.
    let out = widthlab().args(["sweep", "run", spec_path.to_str().unwrap(), "--store", store.to_str().unwrap(), "--quiet"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(trained_of(&out), 48 - before.len(), "{}", String::from_utf8_lossy(&out.stdout));
    let after = by_key(&store);
    // Nothing that had finished was recomputed: same owner (the killed process) and timestamps.
    for (k, r) in &before {
        assert_eq!((&after[k].owner, after[k].finished_at), (&r.owner, r.finished_at));
    }
    assert_same_results(&spec, &after, &by_key(&reference));
    assert!(Store::open_existing(&store).unwrap().claims().unwrap().is_empty(), "claims of the killed process were taken over");
    // A third run does nothing.
    let again = sweep::run(&spec, &store, &quiet()).unwrap();
    assert_eq!((again.already_done, again.trained), (48, 0));
}

#[test]
fn two_processes_share_one_store_without_duplicate_work() {
    let dir = tempfile::tempdir().unwrap();
    let (spec_path, spec) = write_spec(dir.path(), "two", 40);
    let store = dir.path().join("shared.db");
    let spawn = || {
        widthlab()
            .args(["sweep", "run", spec_path.to_str().unwrap(), "--store", store.to_str().unwrap(), "--jobs", "1", "--quiet"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (oa, ob) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(oa.status.success() && ob.status.success(), "{} {}", String::from_utf8_lossy(&oa.stderr), String::from_utf8_lossy(&ob.stderr));
    assert_eq!(trained_of(&oa) + trained_of(&ob), 48, "each run trained exactly once");
    let reference = dir.path().join("reference.db");
    run_binary(&spec_path, &reference, "2");
    assert_same_results(&spec, &by_key(&store), &by_key(&reference));
}

#[test]
fn merged_shards_equal_the_unsharded_sweep() {
    let dir = tempfile::tempdir().unwrap();
    let (spec_path, spec) = write_spec(dir.path(), "shards", 20);
    let full = dir.path().join("full.db");
    sweep::run(&spec, &full, &quiet()).unwrap();
    let mut shard_stores = vec![];
    let mut total = 0;
    for k in 0..3 {
        let p = dir.path().join(format!("shard{k}.db"));
        let opts = RunOptions { shard: Some(format!("{k}/3").parse().unwrap()), ..quiet() };
        let r = sweep::run(&spec, &p, &opts).unwrap();
        assert!(r.total > 0 && r.trained == r.total, "{r:?}");
        total += r.total;
        shard_stores.push(p);
    }
    assert_eq!(total, 48);
    let merged = dir.path().join("merged.db");
    let mut args = vec!["sweep".to_string(), "merge".into(), "--into".into(), merged.to_str().unwrap().into()];
    args.extend(shard_stores.iter().map(|p| p.to_str().unwrap().to_string()));
    let out = widthlab().args(&args).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("now holds 48 runs"));
    assert_same_results(&spec, &by_key(&merged), &by_key(&full));
    // Status and export of the merged store.
    let st = widthlab().args(["sweep", "status", spec_path.to_str().unwrap(), "--store", merged.to_str().unwrap()]).output().unwrap();
    assert!(String::from_utf8_lossy(&st.stdout).contains("48/48 runs done"), "{}", String::from_utf8_lossy(&st.stdout));
    let csv = dir.path().join("runs.csv");
    let ex = widthlab().args(["sweep", "export", "--store", merged.to_str().unwrap(), "-o", csv.to_str().unwrap()]).output().unwrap();
    assert!(ex.status.success());
    assert_eq!(std::fs::read_to_string(&csv).unwrap().lines().count(), 49);
}

fn assert_clean_error(o: &Output, needle: &str) {
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "exit code; stderr: {e}");
    assert!(!e.contains("panicked"), "panicked: {e}");
    assert!(e.contains(needle), "`{needle}` not in: {e}");
}

#[test]
fn malformed_sweeps_and_incompatible_stores_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (spec_path, _) = write_spec(dir.path(), "ok", 5);
    let store = dir.path().join("s.db");
    let run = |spec: &Path, store: &Path| widthlab().args(["sweep", "run", spec.to_str().unwrap(), "--store", store.to_str().unwrap(), "--quiet"]).output().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, spec_text("bad", 5).replace("width = [16, 32, 64]", "width = [16, \"wide\"]")).unwrap();
    assert_clean_error(&run(&bad, &store), "cannot parse config");
    std::fs::write(&bad, spec_text("bad", 5).replace("batch_size = 32", "batch_sise = 32")).unwrap();
    assert_clean_error(&run(&bad, &store), "batch_sise");
    std::fs::write(&bad, "name = \"x\"\n[grid\n").unwrap();
    assert_clean_error(&run(&bad, &store), "bad.toml");
    assert_clean_error(&run(&dir.path().join("missing.toml"), &store), "missing.toml");
    // A store from a future schema version.
    sweep::run(&SweepSpec::from_file(&spec_path).unwrap(), &store, &RunOptions { limit: Some(1), ..quiet() }).unwrap();
    set_schema_version(&store, 2);
    assert_clean_error(&run(&spec_path, &store), "schema version 2");
    // A file that is not a store.
    let junk = dir.path().join("junk.db");
    std::fs::write(&junk, "x".repeat(4096)).unwrap();
    assert_clean_error(&run(&spec_path, &junk), "not a SQLite database");
    assert_clean_error(&widthlab().args(["sweep", "run", spec_path.to_str().unwrap(), "--store", store.to_str().unwrap(), "--shard", "3/3"]).output().unwrap(), "k/N");
}

/// Overwrites the store's schema version, as a store written by another widthlab would have.
fn set_schema_version(store: &Path, v: i64) {
    let c = rusqlite::Connection::open(store).unwrap();
    assert_eq!(c.execute("UPDATE meta SET value = ?1 WHERE name = 'schema_version'", [v.to_string()]).unwrap(), 1);
}

/// `sweep analyze --instability` overrides the default rule (by loss: accuracy near chance
/// under CE, NaN under MSE), and a sweep over `model.logit_norm` (not a standard axis) is grouped,
/// labelled and exported by it.
#[test]
fn analyze_chooses_the_instability_rule_and_groups_by_logit_norm() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("ln.toml");
    let text = spec_text("ln", 4).replace("seed = [0, 1]", "seed = [0]").replace("loss = [\"ce\", \"mse\"]", "loss = [\"ce\", \"mse\"]\n\"model.logit_norm\" = [false, true]");
    std::fs::write(&spec, text).unwrap();
    let store = dir.path().join("s.db");
    run_binary(&spec, &store, "2");
    let analyze = |extra: &[&str]| {
        let mut args = vec!["sweep", "analyze", spec.to_str().unwrap(), "--store", store.to_str().unwrap()];
        args.extend_from_slice(extra);
        widthlab().args(&args).output().unwrap()
    };
    let out = analyze(&[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let s = String::from_utf8_lossy(&out.stdout);
    // Four groups: loss x logit_norm, labelled by both; the rule follows the loss.
    for label in ["logit_norm=false loss=ce", "logit_norm=true loss=ce", "logit_norm=false loss=mse", "logit_norm=true loss=mse"] {
        assert!(s.contains(label), "no group `{label}` in:\n{s}");
    }
    assert_eq!(s.matches("unstable: near-chance").count(), 2, "{s}");
    assert_eq!(s.matches("unstable: nan").count(), 2, "{s}");
    let out = analyze(&["--instability", "nan"]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).matches("unstable: nan").count(), 4);
    let out = analyze(&["--instability", "acc-below:0.5"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).matches("unstable: acc-below:0.5").count(), 4);
    assert_clean_error(&analyze(&["--instability", "loss-above:x"]), "instability rule");
    // The CSV export has a logit_norm column with both values.
    let csv = dir.path().join("r.csv");
    assert!(widthlab().args(["sweep", "export", "--store", store.to_str().unwrap(), "-o", csv.to_str().unwrap()]).output().unwrap().status.success());
    let text = std::fs::read_to_string(&csv).unwrap();
    let header: Vec<&str> = text.lines().next().unwrap().split(',').collect();
    let col = header.iter().position(|c| *c == "logit_norm").expect("logit_norm column");
    let vals: std::collections::BTreeSet<&str> = text.lines().skip(1).map(|l| l.split(',').nth(col).unwrap()).collect();
    assert_eq!(vals, ["false", "true"].into_iter().collect());
}
