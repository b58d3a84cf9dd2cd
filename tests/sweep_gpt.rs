//! The GPT run kind of the sweep engine (issue 7): a GPT sweep declared in TOML runs, an
//! interrupted sweep resumes to the results of an uninterrupted one without recomputing, and
//! the analysis applies the paper's GPT instability rule (training loss worse than the
//! width's optimum + 1, or diverged). Tiny GPTs on generated text (seconds).
use std::collections::BTreeMap;

use widthlab::sweep::analysis::{analyse, Instability, Objective};
use widthlab::sweep::{self, RunKind, RunOptions, RunRecord, Store, SweepSpec};

/// 2 widths x 4 learning rates of Adam on a 1-block GPT: the largest lr is far beyond stable.
const SPEC: &str = r#"
name = "gpt-tiny"
kind = "gpt"
[base]
batch_size = 4
steps = 12
warmup_frac = 0.1
[base.model]
depth = 1
head_dim = 16
[base.data]
vocab_size = 300
seq_len = 16
[base.data.source]
type = "generated"
chars = 6000
[base.eval]
batches = 2
[grid]
width = [16, 32]
lr = [0.001, 0.01, 0.1, 100.0]
optimizer = ["adam"]
train_norms = [false]
"#;

fn quiet() -> RunOptions {
    RunOptions { progress: false, jobs: Some(2), ..Default::default() }
}

fn records(store: &std::path::Path) -> BTreeMap<String, RunRecord> {
    Store::open_existing(store).unwrap().records().unwrap().into_iter().map(|r| (r.key.clone(), r)).collect()
}

#[test]
fn gpt_sweep_runs_resumes_and_analyses() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("gpt.toml");
    std::fs::write(&p, SPEC).unwrap();
    let spec = SweepSpec::from_file(&p).unwrap();
    assert_eq!(spec.kind, RunKind::Gpt);
    assert_eq!(spec.points().unwrap().len(), 8);

    // Uninterrupted.
    let full = dir.path().join("full.db");
    let rep = sweep::run(&spec, &full, &quiet()).unwrap();
    assert_eq!((rep.total, rep.trained), (8, 8));
    // Interrupted after 3 runs, then resumed: only the rest is trained, results equal.
    let part = dir.path().join("part.db");
    assert_eq!(sweep::run(&spec, &part, &RunOptions { limit: Some(3), ..quiet() }).unwrap().trained, 3);
    let rep = sweep::run(&spec, &part, &quiet()).unwrap();
    assert_eq!((rep.already_done, rep.trained), (3, 5));
    assert_eq!(sweep::run(&spec, &part, &quiet()).unwrap().trained, 0);
    let (a, b) = (records(&full), records(&part));
    assert_eq!(a.len(), 8);
    for (k, r) in &a {
        assert!(r.same_result(&b[k]), "run {k} differs after resuming");
        assert_eq!(r.kind, RunKind::Gpt);
        assert_eq!(r.coords["train_norms"], false);
        assert_eq!(r.coords["optimizer"], "adam");
        assert!(r.diverged() || (r.output.train_loss.is_some() && r.output.test_loss.is_some()));
        if r.num("lr").unwrap() <= 0.1 {
            // small learning rates: final validation and training loss near ln(300) or below
            let (tl, vl) = (r.output.train_loss.unwrap(), r.output.test_loss.unwrap());
            assert!(tl.is_finite() && vl.is_finite() && tl < 2.0 * 300f64.ln(), "{tl} {vl}");
        }
    }

    // Analysis with the GPT rule: the max-stable lr of each width is the first lr above the
    // optimum whose training loss exceeds the optimum's by more than 1 (or that diverged).
    let recs: Vec<RunRecord> = a.into_values().collect();
    let an = analyse(&recs, Objective::TestLoss, Some(Instability::LossAbove(1.0))).unwrap();
    assert_eq!(an.len(), 1);
    // GPT records default to the same rule.
    let by_default = analyse(&recs, Objective::TestLoss, None).unwrap();
    assert_eq!(by_default[0].instability, Instability::LossAbove(1.0));
    assert_eq!(by_default[0].widths.iter().map(|w| w.max_stable_lr).collect::<Vec<_>>(), an[0].widths.iter().map(|w| w.max_stable_lr).collect::<Vec<_>>());
    assert_eq!(an[0].widths.len(), 2);
    for w in &an[0].widths {
        let mut runs: Vec<&RunRecord> = recs.iter().filter(|r| r.num("width") == Some(w.width)).collect();
        runs.sort_by(|x, y| x.num("lr").unwrap().total_cmp(&y.num("lr").unwrap()));
        let best_train = runs.iter().filter(|r| !r.diverged()).filter_map(|r| r.output.train_loss).fold(f64::INFINITY, f64::min);
        // optimal lr: the smallest validation loss among completed runs
        let opt = runs.iter().filter(|r| !r.diverged() && r.output.train_loss.is_some_and(|l| l <= best_train + 1.0)).min_by(|x, y| x.output.test_loss.unwrap().total_cmp(&y.output.test_loss.unwrap())).unwrap();
        let opt_lr = opt.num("lr").unwrap();
        assert_eq!(w.optimal_lr, opt_lr, "width {}", w.width);
        let expect = runs.iter().filter(|r| r.num("lr").unwrap() > opt_lr).find(|r| r.diverged() || r.output.train_loss.is_none_or(|l| l > best_train + 1.0)).map(|r| r.num("lr").unwrap());
        assert_eq!(w.max_stable_lr, expect, "width {}", w.width);
        // Adam at lr 100 on a tiny GPT is far beyond stable: the rule must flag it.
        assert!(w.max_stable_lr.is_some(), "width {}: no unstable lr found", w.width);
    }
}
