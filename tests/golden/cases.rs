//! The golden runs and their comparison, shared by `tests/golden.rs` (the default path) and
//! `tests/golden_kernels.rs` (the kernels forced: the code path of before the move).
use std::collections::BTreeMap;
use std::path::PathBuf;

use widthlab::data::{DataConfig, DatasetName, TeacherConfig};
use widthlab::model::MlpConfig;
use widthlab::optim::OptimizerKind;
use widthlab::rcc::runner::{run as coord_check, CoordCheck, Profile};
use widthlab::sweep::{self, RunOptions, Store, SweepSpec};
use widthlab::train::{train, ParamSpec, TrainConfig};

/// Each case's values, as Rust prints an `f64` (shortest text that reads back to the same
/// bits; `NaN`, `inf`).
pub type Golden = BTreeMap<String, Vec<String>>;

pub fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/results.json")
}

/// The widest vector instructions of this CPU that widthlab's kernels use.
pub fn isa() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("fma") {
            return "avx512";
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            return "avx2";
        }
    }
    "portable"
}

fn teacher(d_in: usize) -> DataConfig {
    DataConfig { dataset: DatasetName::Teacher, teacher: TeacherConfig { d_in, n_train: 1024, n_test: 256 }, ..DataConfig::default() }
}

/// A short MLP run on teacher data.
fn mlp_run(width: i64, depth: usize, threads: usize, lr: f64, f: impl FnOnce(&mut TrainConfig)) -> TrainConfig {
    let mut cfg = TrainConfig {
        seed: 3,
        threads: Some(threads),
        model: MlpConfig { width, depth, ..MlpConfig::default() },
        lr,
        data: teacher(32),
        batch_size: 64,
        steps: Some(25),
        ..TrainConfig::default()
    };
    cfg.eval.every = 10;
    cfg.eval.train_subset = Some(256);
    f(&mut cfg);
    cfg
}

fn text(v: f64) -> String {
    format!("{v:?}")
}

/// Runs every case.
pub fn compute() -> Golden {
    let mut out = Golden::new();
    let runs = [
        ("mlp sgd fused, width 96, 1 thread", mlp_run(96, 3, 1, 0.5, |_| {})),
        ("mlp sgd fused, width 256, 2 threads", mlp_run(256, 4, 2, 0.3, |_| {})),
        (
            "mlp sgd fused, mup with biases, width 128, 2 threads",
            mlp_run(128, 3, 2, 0.05, |c| {
                c.param = ParamSpec::Name("mup".into());
                c.model.bias = true;
            }),
        ),
        ("mlp adam, width 128, 2 threads", mlp_run(128, 3, 2, 1e-3, |c| c.optim.kind = OptimizerKind::Adam)),
    ];
    for (name, cfg) in runs {
        let r = train(&cfg, false).unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut v: Vec<String> = r.batch_losses.iter().map(|&l| text(l)).collect();
        for e in &r.evals {
            v.push(text(e.train_loss));
            v.push(text(e.train_acc));
            v.extend(e.test_loss.map(text));
        }
        out.insert(name.to_string(), v);
    }
    // coordinate checks: every row (width, seed, step, layer, metric, value)
    for (name, preset, widths, probe) in [("rcc e1 sgd, probe 96", "e1", vec![32, 96], 96), ("rcc e9 adam, probe 48", "e9", vec![64], 48)] {
        let mut cc = CoordCheck::preset(preset, Profile::Smoke).unwrap();
        cc.train.data = teacher(24);
        cc.train.device = widthlab::device::DeviceChoice::Cpu;
        cc.widths = widths;
        cc.probe_size = probe;
        let res = coord_check(&cc, false).unwrap_or_else(|e| panic!("{name}: {e}"));
        let rows = res.rows.iter().map(|r| format!("{} {} {} {} {} {}", r.width, r.seed, r.step, r.layer, r.metric, text(r.value))).collect();
        out.insert(name.to_string(), rows);
    }
    // a small learning-rate sweep, every record's result
    let dir = tempfile::tempdir().unwrap();
    let spec_path = dir.path().join("golden.toml");
    std::fs::write(
        &spec_path,
        r#"
name = "golden"
[base]
batch_size = 32
steps = 12
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
width = [16, 48]
lr = [0.25, 8.0]
seed = [0]
loss = ["ce", "mse"]
"#,
    )
    .unwrap();
    let spec = SweepSpec::from_file(&spec_path).unwrap();
    let store = dir.path().join("store.sqlite");
    sweep::run(&spec, &store, &RunOptions { progress: false, jobs: Some(2), ..Default::default() }).unwrap();
    let mut records = Store::open_existing(&store).unwrap().records().unwrap();
    records.sort_by(|a, b| a.key.cmp(&b.key));
    let rows = records.iter().map(|r| format!("{} {}", r.key, serde_json::to_string(&r.output).unwrap())).collect();
    out.insert("sweep, 8 runs".to_string(), rows);
    out
}

/// `(bitwise equal, largest relative difference)` of two cases' values (numbers are compared
/// where both texts end in one; other text must match).
pub fn compare(want: &[String], got: &[String]) -> (bool, f64) {
    let mut worst = 0f64;
    let numbers = |s: &str| -> Vec<f64> {
        s.split(|c: char| c == ' ' || c == ',' || c == ':' || c == '[' || c == ']' || c == '{' || c == '}')
            .filter_map(|t| t.parse::<f64>().ok())
            .collect()
    };
    for (w, g) in want.iter().zip(got) {
        if w == g {
            continue;
        }
        let (a, b) = (numbers(w), numbers(g));
        if a.len() != b.len() {
            return (false, f64::INFINITY);
        }
        for (x, y) in a.iter().zip(&b) {
            let d = if x.is_nan() && y.is_nan() { 0.0 } else { (x - y).abs() / x.abs().max(y.abs()).max(1e-30) };
            worst = worst.max(if d.is_nan() { f64::INFINITY } else { d });
        }
    }
    (want == got, worst)
}


/// Compares `got` with the fixture: bitwise when `bitwise`, else to relative `1e-3` (see
/// `tests/golden.rs`); panics with every case that differs.
pub fn check(got: &Golden, bitwise: bool) {
    let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fixture()).unwrap()).unwrap();
    let want: Golden = serde_json::from_value(doc["cases"].clone()).unwrap();
    let bitwise = bitwise && doc["isa"].as_str() == Some(isa());
    if doc["isa"].as_str() != Some(isa()) {
        eprintln!("golden values written under {}, this CPU runs {}: comparing to rounding (1e-3), not bitwise", doc["isa"], isa());
    }
    assert_eq!(want.keys().collect::<Vec<_>>(), got.keys().collect::<Vec<_>>(), "the same cases");
    let mut failures = vec![];
    for (case, w) in &want {
        let g = &got[case];
        assert_eq!(w.len(), g.len(), "{case}: number of values");
        let (same, worst) = compare(w, g);
        let ok = if bitwise { same } else { worst <= 1e-3 };
        if !ok {
            let first = w.iter().zip(g).position(|(a, b)| a != b).unwrap_or(0);
            failures.push(format!("{case}: largest relative difference {worst:.3e}; first differing value #{first}: want {} got {}", w[first], g[first]));
        }
    }
    assert!(failures.is_empty(), "results changed ({}):\n{}", if bitwise { "bitwise" } else { "beyond rounding" }, failures.join("\n"));
}

/// Writes the fixture from `got` (only for a change meant to change results).
#[allow(dead_code)] // (golden_kernels writes the fixture)
pub fn write(got: &Golden) {
    let mut doc = serde_json::Map::new();
    doc.insert("isa".into(), isa().into());
    doc.insert("cases".into(), serde_json::to_value(got).unwrap());
    std::fs::create_dir_all(fixture().parent().unwrap()).unwrap();
    std::fs::write(fixture(), serde_json::to_string_pretty(&doc).unwrap() + "\n").unwrap();
    eprintln!("wrote {}", fixture().display());
}
