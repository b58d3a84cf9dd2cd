//! The `widthlab` binary: bad input gives a clear message and exit code 2, never a panic.
use std::process::{Command, Output};

fn widthlab(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_widthlab")).args(args).output().expect("run widthlab")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// Fails the test if the process panicked or did not exit with code 2 and `needle` in stderr.
fn assert_clean_error(o: &Output, needle: &str) {
    let e = stderr(o);
    assert_eq!(o.status.code(), Some(2), "exit code; stderr: {e}");
    assert!(!e.contains("panicked"), "panicked: {e}");
    assert!(e.contains(needle), "`{needle}` not in: {e}");
}

const TEACHER: &[&str] = &["train", "--dataset", "teacher", "--depth", "2", "--steps", "20", "--quiet"];

#[test]
fn bad_inputs_are_clean_errors() {
    let with = |extra: &[&str]| {
        let mut a = TEACHER.to_vec();
        a.extend_from_slice(extra);
        widthlab(&a)
    };
    assert_clean_error(&with(&["--width", "0"]), "model.width must be >= 1");
    assert_clean_error(&with(&["--param", "mupp"]), "unknown parameterization `mupp`");
    assert_clean_error(&with(&["--lr=-1"]), "lr must be");
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "lr = [1, 2").unwrap();
    assert_clean_error(&widthlab(&["train", "--config", bad.to_str().unwrap()]), "cannot parse config");
    let o = widthlab(&["train", "--config", "/nonexistent/x.toml"]);
    assert_clean_error(&o, "/nonexistent/x.toml");
    // the cause is said once, not repeated by the error chain
    assert_eq!(stderr(&o).matches("No such file or directory").count(), 1, "{}", stderr(&o));
    let empty = dir.path().join("no-data");
    std::fs::create_dir_all(&empty).unwrap();
    let o = widthlab(&["train", "--dataset", "mnist", "--data-dir", empty.to_str().unwrap(), "--quiet"]);
    assert_clean_error(&o, "not found");
    // clap rejects unknown enum values itself (exit code 2 as well)
    let o = widthlab(&["train", "--loss", "hinge"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("hinge"));
}

#[test]
fn a_small_run_writes_a_json_result() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r.json");
    let mut a = TEACHER.to_vec();
    a.extend_from_slice(&["--width", "32", "--out", out.to_str().unwrap()]);
    let o = widthlab(&a);
    assert!(o.status.success(), "{}", stderr(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("outcome: completed"), "{stdout}");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(v["steps"], 20);
    assert_eq!(v["width"], 32);
}

#[test]
fn base_width_sets_the_width_where_rules_coincide_with_sp() {
    let dir = tempfile::tempdir().unwrap();
    let run = |name: &str, extra: &[&str]| -> serde_json::Value {
        let out = dir.path().join(format!("{name}.json"));
        let mut a = TEACHER.to_vec();
        a.extend_from_slice(&["--width", "256", "--lr", "0.05", "--out", out.to_str().unwrap()]);
        a.extend_from_slice(extra);
        let o = widthlab(&a);
        assert!(o.status.success(), "{}", stderr(&o));
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap()
    };
    let loss = |v: &serde_json::Value| v["last"]["train_loss"].as_f64().unwrap();
    let sp = run("sp", &["--param", "sp"]);
    let mup_256 = run("mup256", &["--param", "mup", "--base-width", "256"]);
    let mup = run("mup", &["--param", "mup"]);
    assert_eq!((&mup_256["config"]["base_width"], &mup["config"]["base_width"]), (&serde_json::json!(256.0), &serde_json::Value::Null));
    // per-layer rules in powers of n/n0: at n = n0 muP's init and rates are SP's
    assert_eq!(loss(&mup_256), loss(&sp));
    assert_ne!(loss(&mup), loss(&sp));
    let mut a = TEACHER.to_vec();
    a.extend_from_slice(&["--param", "mup", "--base-width", "0"]);
    assert_clean_error(&widthlab(&a), "base widths must be > 0");
}

#[test]
fn params_lists_every_builtin() {
    let o = widthlab(&["params", "--list"]);
    assert!(o.status.success());
    let s = String::from_utf8_lossy(&o.stdout);
    for name in ["sp", "ntp", "mup", "sp-full-align", "musoli"] {
        assert!(s.lines().any(|l| l == name), "{name} missing");
    }
}

#[test]
fn the_extending_guides_toml_parameterization_runs_as_documented() {
    // docs/extending.md, section 1: `widthlab train --config my-param.toml --width 256 --out run.json`
    let guide = include_str!("../docs/extending.md");
    let toml = guide.split("```toml\n").nth(1).and_then(|rest| rest.split("\n```").next()).expect("a TOML block");
    assert!(guide.contains("widthlab train --config my-param.toml --width 256 --out run.json"));
    let dir = tempfile::tempdir().unwrap();
    let (cfg, out) = (dir.path().join("my-param.toml"), dir.path().join("run.json"));
    std::fs::write(&cfg, toml).unwrap();
    let o = widthlab(&["train", "--config", cfg.to_str().unwrap(), "--width", "256", "--out", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!((v["parameterization"].as_str(), v["width"].as_i64(), v["steps"].as_i64()), (Some("mup-slow-readout"), Some(256), Some(20)));
    assert_eq!(v["outcome"]["status"], "completed", "{v}");
}

#[test]
fn gpt_train_errors_are_clean_and_a_generated_text_run_writes_json() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("no-text");
    std::fs::create_dir_all(&empty).unwrap();
    let o = widthlab(&["gpt-train", "--data-dir", empty.to_str().unwrap(), "--quiet"]);
    assert_clean_error(&o, "bash environment/setup.sh");
    assert_clean_error(&widthlab(&["gpt-train", "--width", "40", "--quiet"]), "head_dim");
    // a tiny run on generated text (a config file selects the source)
    let cfg = dir.path().join("gpt.toml");
    std::fs::write(
        &cfg,
        "steps = 4\nbatch_size = 2\nthreads = 1\n[model]\nwidth = 32\ndepth = 1\n[data]\nvocab_size = 300\nseq_len = 16\n[data.source]\ntype = \"generated\"\nchars = 6000\n",
    )
    .unwrap();
    let out = dir.path().join("g.json");
    let o = widthlab(&["gpt-train", "--config", cfg.to_str().unwrap(), "--quiet", "--out", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(v["steps"], 4);
    assert!(v["tokens_per_second"].as_f64().unwrap() > 0.0);
}

// ---- issue 18: every absurd size, bad path and odd name is a clean error (exit 2) ----

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

/// Absurd sizes: refused before any work with a message naming the limit (they aborted with
/// an out-of-memory backtrace, a capacity-overflow panic, or ran without end).
#[test]
fn absurd_sizes_are_refused_before_work() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = d.join("o").to_str().unwrap().to_string();
    let cases: &[(&[&str], &str)] = &[
        (&["train", "--dataset", "teacher", "--width", "1000000000000", "--steps", "1"], "needs at least"),
        (&["train", "--width", "100000000"], "needs at least"),
        (&["train", "--dataset", "teacher", "--depth", "100000000"], "exceeds the limit of 10000"),
        (&["train", "--dataset", "teacher", "--epochs", "1e12"], "steps exceed the limit of 100000000"),
        (&["train", "--dataset", "teacher", "--epochs", "1e300"], "steps exceed the limit"),
        (&["train", "--dataset", "teacher", "--steps", "1000000000000"], "steps exceed the limit"),
        (&["train", "--dataset", "teacher", "--batch-size", "1000000000000", "--steps", "1"], "needs at least"),
        (&["train", "--dataset", "teacher", "--threads", "100000", "--steps", "1"], "threads must be between 1 and 1024"),
        (&["gpt-train", "--width", "1000000000000"], "needs at least"),
        (&["gpt-train", "--seq-len", "1000000000000"], "needs at least"),
        (&["gpt-train", "--depth", "100000000"], "exceeds the limit of 10000"),
        (&["coord-check", "--profile", "smoke", "--widths", "16,1000000000000", "--out", &out], "needs at least"),
        (&["coord-check", "--profile", "smoke", "--steps", "1000000000000", "--out", &out], "steps exceed the limit"),
        (&["coord-check", "--profile", "smoke", "--verdicts", "effective,efective", "--out", &out], "unknown metric `efective`; metrics: act, act_update, effective"),
        (&["uv", "dynamics", "--steps", "1000000000000", "--out", &out], "steps exceed the limit"),
        (&["uv", "dynamics", "--steps", "100000000", "--out", &out], "needs at least"),
        (&["uv", "convergence", "--times", "1000000000000", "--out", &out], "steps exceed the limit"),
        (&["uv", "convergence", "--seeds", "1000000000000", "--out", &out], "runs exceed the limit"),
        (&["uv", "scan", "--grid", "10000000000", "--out", &out], "runs exceed the limit"),
        (&["uv", "scan", "--min-steps", "1000000000000", "--out", &out], "steps exceed the limit"),
    ];
    for (args, needle) in cases {
        let o = widthlab(args);
        assert_clean_error(&o, needle);
        assert!(!stdout(&o).contains("widthlab train:"), "{args:?} trained: {}", stdout(&o));
    }
    assert!(!d.join("o").exists(), "no output folder is made for refused work");
    // sweep grids: a run too large for this machine, a 2e10-point log grid
    let spec = d.join("huge.toml");
    let store = d.join("s.db");
    for (grid, needle) in [("width = [64, 1000000000000]", "needs at least"), ("lr = { log2 = [0, 20000000000] }", "runs exceed the limit of 1000000")] {
        std::fs::write(&spec, format!("name = \"huge\"\n[base.data]\ndataset = \"teacher\"\n[grid]\n{grid}\n")).unwrap();
        assert_clean_error(&widthlab(&["sweep", "run", spec.to_str().unwrap(), "--store", store.to_str().unwrap(), "--quiet"]), needle);
        assert!(!store.exists(), "no store is created for a sweep that cannot run");
    }
}

/// Output paths are checked before training, and results are written whole.
#[test]
fn outputs_are_checked_before_the_work() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for bad in ["/proc/widthlab-x.json", d.to_str().unwrap()] {
        let o = widthlab(&["train", "--dataset", "teacher", "--steps", "2", "--quiet", "--out", bad]);
        assert_clean_error(&o, "--out");
        assert!(!stdout(&o).contains("widthlab train:"), "trained before failing: {}", stdout(&o));
    }
    let file = d.join("a-file");
    std::fs::write(&file, "x").unwrap();
    let under = file.join("r.json");
    assert_clean_error(&widthlab(&["coord-check", "--profile", "smoke", "--dataset", "teacher", "--quiet", "--out", under.to_str().unwrap()]), "--out");
    assert_clean_error(&widthlab(&["uv", "dynamics", "--out", under.to_str().unwrap()]), "--out");
    // a written result leaves no temporary file behind
    let ok = d.join("r/result.json");
    let o = widthlab(&["train", "--dataset", "teacher", "--steps", "2", "--quiet", "--out", ok.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read_dir(d.join("r")).unwrap().count(), 1);
}

/// The rest of issue 18's list, each with the behaviour it has now.
#[test]
fn issue_18_cases_behave() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = |name: &str| d.join(name).to_str().unwrap().to_string();
    // a run whose final evaluation is NaN diverged, whatever the step count
    let o = widthlab(&["train", "--dataset", "teacher", "--steps", "1", "--lr", "1e30", "--quiet"]);
    assert!(o.status.success() && stdout(&o).contains("DIVERGED at step 1: non-finite evaluation"), "{}", stdout(&o));
    // adamw on the command line and in configs
    std::fs::write(p("adamw.toml"), "steps = 2\n[optim]\nkind = \"adamw\"\n[data]\ndataset = \"teacher\"\n").unwrap();
    for args in [&["train", "--config", &p("adamw.toml"), "--quiet"][..], &["train", "--dataset", "teacher", "--steps", "2", "--optimizer", "adamw", "--quiet"]] {
        let o = widthlab(args);
        assert!(o.status.success() && stdout(&o).contains("AdamW"), "{args:?}: {}{}", stdout(&o), stderr(&o));
    }
    // coord-check on the teacher data runs
    let o = widthlab(&["coord-check", "--profile", "smoke", "--dataset", "teacher", "--quiet", "--out", &p("cc")]);
    assert!(o.status.success(), "{}", stderr(&o));
    // ... and decides its verdicts as the report's claims: holds, deviates or inconclusive
    let verdicts = std::fs::read_to_string(dir.path().join("cc/verdicts.csv")).unwrap();
    let mut lines = verdicts.lines();
    assert!(lines.next().unwrap().ends_with("predicted_first,verdict_first,predicted_later,verdict_later"));
    let cells: Vec<&str> = lines.flat_map(|l| l.split(',').skip(6).skip(1).step_by(2).collect::<Vec<_>>()).collect();
    assert!(!cells.is_empty() && cells.iter().all(|c| ["holds", "deviates", "inconclusive", ""].contains(c)), "{verdicts}");
    assert!(stdout(&o).contains("against the infinite-width prediction:"), "{}", stdout(&o));
    // an empty config is refused, not run with every default
    std::fs::write(p("empty.toml"), "").unwrap();
    assert_clean_error(&widthlab(&["train", "--config", &p("empty.toml")]), "sets nothing");
    // nan in a sweep grid is named
    std::fs::write(p("nan.toml"), "name = \"n\"\n[grid]\nlr = [nan]\n").unwrap();
    let o = widthlab(&["sweep", "run", &p("nan.toml"), "--store", &p("n.db")]);
    assert_clean_error(&o, "`grid.lr[0]` is NaN");
    assert!(!stderr(&o).contains("null"));
    // status and export leave a 0-byte file alone
    std::fs::write(p("zero.db"), "").unwrap();
    std::fs::write(p("ok.toml"), "name = \"ok\"\n[base]\nsteps = 2\n[base.data]\ndataset = \"teacher\"\n[grid]\nwidth = [8, 16]\n").unwrap();
    assert_clean_error(&widthlab(&["sweep", "status", &p("ok.toml"), "--store", &p("zero.db")]), "empty file");
    assert_clean_error(&widthlab(&["sweep", "export", "--store", &p("zero.db"), "-o", &p("x.csv")]), "empty file");
    assert_eq!(std::fs::metadata(p("zero.db")).unwrap().len(), 0);
    // merge and --jobs 0 create no store before failing
    assert_clean_error(&widthlab(&["sweep", "merge", "--into", &p("m.db"), &p("missing.db")]), "no such store");
    assert_clean_error(&widthlab(&["sweep", "run", &p("ok.toml"), "--store", &p("j.db"), "--jobs", "0"]), "jobs must be between");
    assert!(!d.join("m.db").exists() && !d.join("j.db").exists());
    // a run that fails is that run's failure: the others finish, the exit code says so
    std::fs::write(p("fail.toml"), "name = \"f\"\n[base]\nsteps = 2\n[base.data]\ndataset = \"teacher\"\n[grid]\ntrain_subset = [64, 100000]\n").unwrap();
    let o = widthlab(&["sweep", "run", &p("fail.toml"), "--store", &p("f.db"), "--quiet"]);
    assert_clean_error(&o, "1 of 2 runs failed");
    let o = widthlab(&["sweep", "status", &p("fail.toml"), "--store", &p("f.db")]);
    assert!(o.status.success() && stdout(&o).contains("1/2 runs done") && stdout(&o).contains("1 FAILED"), "{}", stdout(&o));
    // export names its format by extension; anything else is refused before reading
    let o = widthlab(&["sweep", "export", "--store", &p("f.db"), "-o", &p("out.txt")]);
    assert_clean_error(&o, ".csv or .json");
    assert!(!d.join("out.txt").exists());
    // analyze --n0 0: a clear message first, no folder left behind
    let o = widthlab(&["sweep", "analyze", &p("fail.toml"), "--store", &p("f.db"), "--n0", "0", "--out", &p("an")]);
    assert_clean_error(&o, "--n0");
    assert!(!d.join("an").exists());
}

#[test]
fn plan_prints_estimates_and_refuses_bad_input() {
    assert_clean_error(&widthlab(&["plan", "--profile", "huge"]), "huge");
    assert_clean_error(&widthlab(&["plan", "--format", "xml"]), "xml");
    // JSON parses, has every notebook, and its total is the sum of the notebooks'
    let o = widthlab(&["plan", "--profile", "paper", "--format", "json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("plan JSON parses");
    assert_eq!((v["profile"].as_str(), v["estimate"].as_bool()), (Some("paper"), Some(true)));
    let nbs = v["notebooks"].as_array().unwrap();
    assert_eq!(nbs.len(), 10);
    let sum: f64 = nbs.iter().map(|n| n["gpu"]["gpu_hours"].as_f64().unwrap()).sum();
    let total = v["total"]["gpu_hours"].as_f64().unwrap();
    assert!(total > 0.0 && (sum - total).abs() < 1e-9 * total, "{sum} vs {total}");
    // Markdown: a header saying these are estimates, one row per notebook and a total
    let md = stdout(&widthlab(&["plan", "--profile", "quick"]));
    assert!(md.starts_with("Profile `quick`. Estimates, not measurements"), "{md}");
    assert_eq!(md.lines().filter(|l| l.starts_with("| `")).count(), 10, "{md}");
    assert!(md.contains("| all |"));
    // CSV: a header and one row per workload
    let csv = stdout(&widthlab(&["plan", "--profile", "smoke", "--format", "csv"]));
    assert!(csv.starts_with("notebook,workload,model,design,on,runs,steps,tflops,gpu_hours\n") && csv.lines().count() > 30, "{csv}");
    // --write-readme replaces only its section, and refuses a file without the markers
    let dir = tempfile::tempdir().unwrap();
    let readme = dir.path().join("README.md");
    std::fs::write(&readme, "# x\n<!-- gpu-plan:begin -->\nold\n<!-- gpu-plan:end -->\nafter\n").unwrap();
    let o = widthlab(&["plan", "--write-readme", readme.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = std::fs::read_to_string(&readme).unwrap();
    assert!(text.starts_with("# x\n<!-- gpu-plan:begin -->\nProfile `paper`.") && text.ends_with("<!-- gpu-plan:end -->\nafter\n") && text.contains("Profile `quick`.") && !text.contains("old"), "{text}");
    std::fs::write(&readme, "no markers\n").unwrap();
    assert_clean_error(&widthlab(&["plan", "--write-readme", readme.to_str().unwrap()]), "gpu-plan:begin");
}

/// `gpt-train --data-dir X` keeps its tokenizer cache with X, not in the repository.
#[test]
fn gpt_train_caches_the_tokenizer_with_its_corpus() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus");
    std::fs::create_dir_all(&corpus).unwrap();
    let text: String = (0..4000).map(|i| format!("line {i} of a small corpus, with words {} and {}\n", i % 7, i % 13)).collect();
    std::fs::write(corpus.join("a.txt"), text).unwrap();
    let cfg = dir.path().join("g.toml");
    std::fs::write(&cfg, "steps = 2\nbatch_size = 2\n[model]\nwidth = 32\ndepth = 1\n[data]\nvocab_size = 300\nseq_len = 16\n").unwrap();
    let repo_cache = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/tokenizers");
    let before = std::fs::read_dir(&repo_cache).map(|r| r.count()).unwrap_or(0);
    let o = widthlab(&["gpt-train", "--config", cfg.to_str().unwrap(), "--data-dir", corpus.to_str().unwrap(), "--quiet"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read_dir(corpus.join(".tokenizers")).unwrap().count(), 1);
    assert_eq!(std::fs::read_dir(&repo_cache).map(|r| r.count()).unwrap_or(0), before, "nothing written into the repository");
}

mod fuzz {
    //! Argument values and config files drawn from edge values of every size and number:
    //! the binary exits 0 or 2, never panics or aborts. Values that are valid stay small, so
    //! every case runs in well under a second.
    use proptest::prelude::*;
    use proptest::sample::select;

    use super::*;

    /// An edge value of a count: invalid, tiny, or far beyond every limit (never a valid but
    /// slow size).
    fn count() -> impl Strategy<Value = &'static str> {
        select(vec!["0", "1", "2", "8", "-1", "1000000000000", "9223372036854775807", "18446744073709551616", "1e3", "nan", "x", ""])
    }
    /// A depth: a count, or one layer beyond the depth limit.
    fn depth() -> impl Strategy<Value = &'static str> {
        prop_oneof![count(), Just("10001")]
    }
    fn real() -> impl Strategy<Value = &'static str> {
        select(vec!["0", "1e-9", "0.5", "1", "1e6", "1e30", "1e300", "-1", "nan", "inf", "-inf", "x"])
    }
    /// Epochs: invalid, a fraction of one, or beyond the step limit (1e6 epochs of the
    /// teacher's 1000 points would be valid and take hours).
    fn epochs() -> impl Strategy<Value = &'static str> {
        select(vec!["0", "1e-9", "0.5", "1e12", "1e300", "-1", "nan", "inf", "x"])
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn train_flags_never_panic(
            width in proptest::option::of(count()), depth in proptest::option::of(depth()), steps in proptest::option::of(count()),
            batch in proptest::option::of(count()), threads in proptest::option::of(count()), epochs in proptest::option::of(epochs()),
            lr in proptest::option::of(real()), alpha in proptest::option::of(real()),
        ) {
            let mut args: Vec<String> = ["train", "--dataset", "teacher", "--quiet"].map(String::from).to_vec();
            if steps.is_none() && epochs.is_none() {
                args.push("--steps=2".into());
            }
            // `--flag=value`, so that negative numbers are read as values
            for (flag, v) in [("--width", width), ("--depth", depth), ("--steps", steps), ("--batch-size", batch), ("--threads", threads), ("--epochs", epochs), ("--lr", lr), ("--alpha", alpha)] {
                if let Some(v) = v {
                    args.push(format!("{flag}={v}"));
                }
            }
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            let o = widthlab(&refs);
            let e = stderr(&o);
            prop_assert!(matches!(o.status.code(), Some(0) | Some(2)), "{refs:?}: exit {:?}: {e}", o.status.code());
            prop_assert!(!e.contains("panicked") && !e.contains("backtrace"), "{refs:?}: {e}");
        }

        #[test]
        fn train_configs_never_panic(
            width in count(), depth in depth(), batch in count(), steps in count(), every in count(),
            n_train in count(), d_in in count(), lr in real(), kind in select(vec!["sgd", "adam", "adamw", "adam-w", "sam-sgd", "rmsprop", ""]),
            loss in select(vec!["ce", "mse", "mse-softmax", "hinge"]),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let cfg = dir.path().join("c.toml");
            let num = |v: &str| if v.parse::<f64>().is_ok() || v == "nan" || v == "inf" || v == "-inf" { v.to_string() } else { format!("\"{v}\"") };
            std::fs::write(&cfg, format!(
                "lr = {}\nbatch_size = {}\nsteps = {}\n[model]\nwidth = {}\ndepth = {}\n[optim]\nkind = \"{kind}\"\n[loss]\nkind = \"{loss}\"\n[eval]\nevery = {}\n[data]\ndataset = \"teacher\"\n[data.teacher]\nn_train = {}\nd_in = {}\nn_test = 16\n",
                num(lr), num(batch), num(steps), num(width), num(depth), num(every), num(n_train), num(d_in)
            )).unwrap();
            let o = widthlab(&["train", "--config", cfg.to_str().unwrap(), "--quiet"]);
            let e = stderr(&o);
            prop_assert!(matches!(o.status.code(), Some(0) | Some(2)), "exit {:?}: {e}\n{}", o.status.code(), std::fs::read_to_string(&cfg).unwrap());
            prop_assert!(!e.contains("panicked"), "{e}");
        }

        #[test]
        fn uv_flags_never_panic(
            steps in count(), widths in select(vec!["10,100", "0", "-5", "1e12", "nan", "inf", "1e300,1", "x"]), seeds in count(),
            times in select(vec!["2,5", "0", "1000000000000", "x"]), eta in real(), alpha in real(),
            which in select(vec!["dynamics", "convergence"]),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let out = dir.path().join("o");
            let mut args: Vec<String> = vec!["uv".into(), which.into(), "--out".into(), out.to_str().unwrap().into(), format!("--widths={widths}"), format!("--alpha={alpha}")];
            if which == "dynamics" {
                args.extend([format!("--steps={steps}"), format!("--eta={eta}")]);
            } else {
                args.extend([format!("--seeds={seeds}"), format!("--times={times}"), format!("--eta={eta}")]);
            }
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            let o = widthlab(&refs);
            let e = stderr(&o);
            prop_assert!(matches!(o.status.code(), Some(0) | Some(2)), "{refs:?}: exit {:?}: {e}", o.status.code());
            prop_assert!(!e.contains("panicked"), "{refs:?}: {e}");
        }
    }
}
