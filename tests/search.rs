//! Learning-rate searches end to end (issue 17): a small real MLP search on the generated
//! teacher data through the `widthlab sweep search|status|export|analyze` commands. The search
//! logic itself (bisection, bracket extension, optimum over noisy seeds, resume, shards) is
//! tested with test doubles in `src/sweep/search`.
use std::path::Path;
use std::process::{Command, Output};

use widthlab::sweep::search::{self, Edge, SearchSpec};
use widthlab::sweep::Store;

fn widthlab() -> Command {
    Command::new(env!("CARGO_BIN_EXE_widthlab"))
}

/// 3-layer MLPs on 2-class teacher data (where chance is 50%: the rule is relative to it),
/// widths 16..64, two seeds, 150 steps (enough to learn the teacher to 95%). Both losses use
/// `near-chance`: under MSE these small ReLU nets die at large learning rates (constant
/// output, finite loss, chance accuracy) without a NaN, so the NaN rule would see them stable
/// up to `2^14` and the coarse pass would search that plateau.
const SPEC: &str = r#"
name = "teacher-search"
[base]
batch_size = 32
steps = 150
[base.model]
depth = 3
[base.data]
dataset = "teacher"
[base.data.teacher]
d_in = 4
n_train = 1024
n_test = 64
[base.eval]
train_subset = 256
[grid]
width = [16, 32, 64]
seed = [0, 1]
loss = ["ce", "mse"]
[search]
find = "both"
instability = "near-chance"
bracket = [-2, 2]
[search.optimal]
span = 2
refine = 0.25
"#;

fn ok(o: Output) -> String {
    assert!(o.status.success(), "{}\n{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn run(args: &[&str]) -> Output {
    widthlab().args(args).output().unwrap()
}

#[test]
fn a_real_mlp_search_runs_end_to_end_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("search.toml");
    std::fs::write(&spec, SPEC).unwrap();
    let store = dir.path().join("s.db");
    let (sp, st) = (spec.to_str().unwrap(), store.to_str().unwrap());
    let out = ok(run(&["sweep", "search", sp, "--store", st, "--jobs", "2", "--quiet"]));
    assert!(out.contains("6 groups: 0 already done, 6 completed now, 0 unfinished"), "{out}");
    assert!(out.contains("max-stable lr exponent") && out.contains("optimal (per seed) lr exponent"), "{out}");

    // Every bisection bracketed an edge to 1/8 octave; optima were found below the edges.
    let s = SearchSpec::from_file(&spec).unwrap();
    let a = search::analyse(&s, &Store::open_existing(&store).unwrap()).unwrap();
    assert!(a.is_complete());
    for setting in &a.settings {
        for w in &setting.widths {
            for m in &w.max_stable {
                assert_eq!((m.edge, m.octaves()), (Edge::Bracketed, Some(0.125)), "{}", setting.table(a.objective));
            }
            let o = w.optimum.as_ref().unwrap();
            let lowest_edge = w.max_stable.iter().filter_map(|m| m.first_unstable).fold(f64::INFINITY, f64::min);
            assert!(o.mean.lr < lowest_edge && o.top_unstable && o.mean.value > 0.5, "{}", setting.table(a.objective));
        }
        assert!(setting.max_stable_fit.as_ref().is_some_and(|f| f.low <= f.exponent && f.exponent <= f.high && f.resolution > 0.0));
    }
    // The probes are the store's runs: exported, and nothing is trained again.
    let again = ok(run(&["sweep", "search", sp, "--store", st, "--quiet"]));
    assert!(again.contains("6 already done, 0 completed now") && again.contains("0 probes trained"), "{again}");
    let status = ok(run(&["sweep", "status", sp, "--store", st]));
    assert!(status.contains("6/6 groups complete"), "{status}");
    let csv = dir.path().join("probes.csv");
    ok(run(&["sweep", "export", "--store", st, "--spec", sp, "-o", csv.to_str().unwrap()]));
    let n = Store::open_existing(&store).unwrap().len().unwrap();
    assert_eq!(std::fs::read_to_string(&csv).unwrap().lines().count(), n + 1);
    // Analysis with figures.
    let fig = dir.path().join("fig");
    let an = ok(run(&["sweep", "analyze", sp, "--store", st, "--out", fig.to_str().unwrap()]));
    assert!(an.contains("loss=ce") && an.contains("loss=mse"), "{an}");
    for f in ["curves_0.svg", "exponents_1.svg", "analysis.json"] {
        assert!(fig.join(f).is_file(), "{f}");
    }
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fig.join("analysis.json")).unwrap()).unwrap();
    assert_eq!(json["settings"].as_array().unwrap().len(), 2);
}

fn assert_clean_error(o: &Output, needle: &str) {
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "exit code; stderr: {e}");
    assert!(!e.contains("panicked"), "panicked: {e}");
    assert!(e.contains(needle), "`{needle}` not in: {e}");
}

#[test]
fn grids_and_searches_are_told_apart_and_bad_searches_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let search = write("search.toml", SPEC);
    let grid = write("grid.toml", &SPEC[..SPEC.find("[search]").unwrap()].replace("seed = [0, 1]", "seed = [0, 1]\nlr = [0.5]"));
    let store = dir.path().join("s.db");
    let arg = |p: &Path| p.to_str().unwrap().to_string();
    let (s, g, st) = (arg(&search), arg(&grid), arg(&store));
    assert_clean_error(&run(&["sweep", "run", &s, "--store", &st]), "is a search");
    assert_clean_error(&run(&["sweep", "search", &g, "--store", &st]), "is a grid");
    let bad = write("bad.toml", &SPEC.replace("bracket = [-2, 2]", "bracket = [2, -2]"));
    assert_clean_error(&run(&["sweep", "search", &arg(&bad), "--store", &st]), "lo < hi");
    let bad = write("bad.toml", &SPEC.replace("\"near-chance\"", "\"loss-above:1\""));
    assert_clean_error(&run(&["sweep", "search", &arg(&bad), "--store", &st]), "optimal loss");
    let bad = write("bad.toml", &SPEC.replace("seed = [0, 1]", "seed = [0, 1]\nlr = [0.1]"));
    assert_clean_error(&run(&["sweep", "search", &arg(&bad), "--store", &st]), "`lr` axis");
    assert_clean_error(&run(&["sweep", "search", &s, "--store", &st, "--shard", "2/2"]), "k/N");
    // A search's objective and rule are its own.
    ok(run(&["sweep", "search", &s, "--store", &st, "--quiet", "--limit", "3"]));
    assert_clean_error(&run(&["sweep", "analyze", &s, "--store", &st, "--instability", "nan"]), "--instability apply to grids");
    let status = ok(run(&["sweep", "status", &s, "--store", &st]));
    assert!(status.contains("0/6 groups complete") && status.contains("3 probes stored"), "{status}");
}

/// "N probes trained" of a search report.
fn trained_of(out: &str) -> usize {
    let i = out.find(" probes trained").unwrap_or_else(|| panic!("no report in {out}"));
    out[..i].rsplit(' ').next().unwrap().parse().unwrap()
}

/// Two processes search one store at once: each probe is trained once (claims), a process
/// waits for the probes the other holds, and both end with the whole search.
#[test]
fn two_processes_share_one_search_without_training_a_run_twice() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("search.toml");
    std::fs::write(&spec, SPEC).unwrap();
    let store = dir.path().join("s.db");
    let (sp, st) = (spec.to_str().unwrap(), store.to_str().unwrap());
    let spawn = || widthlab().args(["sweep", "search", sp, "--store", st, "--jobs", "1", "--quiet"]).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let (a, b) = (spawn(), spawn());
    let (a, b) = (ok(a.wait_with_output().unwrap()), ok(b.wait_with_output().unwrap()));
    let n = Store::open_existing(&store).unwrap().len().unwrap();
    assert_eq!(trained_of(&a) + trained_of(&b), n, "{a}\n{b}");
    // Both saw every group finish and print the same analysis.
    let table = |s: &str| s[s.find("search teacher-search: 6/6 groups complete").unwrap_or_else(|| panic!("{s}"))..].to_string();
    assert_eq!(table(&a), table(&b));
    // The same results as one process alone (records are bitwise reproducible).
    let alone = dir.path().join("alone.db");
    let c = ok(run(&["sweep", "search", sp, "--store", alone.to_str().unwrap(), "--jobs", "2", "--quiet"]));
    assert_eq!(trained_of(&c), n);
    assert_eq!(table(&c), table(&a));
}

/// The searches shipped under `configs/searches/` parse, resolve into groups and pass the
/// search's checks (they are documented commands; a renamed field must not break them).
#[test]
fn the_shipped_search_configs_are_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/searches");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let spec = SearchSpec::from_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            spec.validate().unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!(spec.name, path.file_stem().unwrap().to_str().unwrap(), "a search's name is its file's");
            n += 1;
        }
    }
    assert!(n >= 3, "{n} search configs in {}", dir.display());
}
