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
fn params_lists_every_builtin() {
    let o = widthlab(&["params", "--list"]);
    assert!(o.status.success());
    let s = String::from_utf8_lossy(&o.stdout);
    for name in ["sp", "ntp", "mup", "sp-full-align", "musoli"] {
        assert!(s.lines().any(|l| l == name), "{name} missing");
    }
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
