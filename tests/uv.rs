//! The uv recursion against real training: widthlab's 2-layer linear MLP in libtorch (f64),
//! trained with widthlab's SGD on one point, must follow `(f_t, lambda_t)` of the closed-form
//! recursion step by step, from the network's own initial `(f_0, lambda_0)`, where `lambda_t`
//! of the network comes from autograd gradients.
use widthlab::theory::uv::{cross_check, UvConfig, UvNet, UvParam, UvSchedule};

#[test]
fn recursion_agrees_with_real_sgd_training_step_by_step() {
    let (mut checked, mut moved) = (0, 0);
    for param in UvParam::ALL {
        for (alpha, wd, sched) in [
            (0.0, 0.0, UvSchedule::default()),
            (1.0, 0.1, UvSchedule { warmup_steps: 3, cosine: true, ..UvSchedule::default() }),
        ] {
            for width in [8i64, 256, 4096] {
                let cfg = UvConfig { param, alpha, weight_decay: wd, schedule: sched.clone(), x: 1.2, y: 0.7, seed: 3, ..UvConfig::default() };
                // 0.5: gradient-flow-like; 1.4: above the edge of stability (catapult or divergence
                // at small width), where every nonlinear term matters
                for r in [0.5, 1.4] {
                    let c = cross_check(&cfg, width, r, 12).unwrap();
                    if c.real.iter().all(|s| s.is_finite() && s.f.abs() < 1e6) {
                        assert!(c.max_rel_f < 1e-10 && c.max_rel_lambda < 1e-10, "{param} alpha {alpha} wd {wd} n {width} r {r}: {c:?}");
                        checked += 1;
                        let (f0, f12) = (c.real[0].f, c.real[12].f);
                        moved += usize::from((f0 - f12).abs() > 1e-3 * f0.abs().max(1e-3));
                    }
                }
            }
        }
    }
    assert!(checked >= 24 && moved >= 20, "checked {checked}, training moved f in {moved} runs");
}

#[test]
fn the_network_uses_the_papers_initialisation() {
    // u ~ N(0,1) and v ~ N(0,1/n) (SP): lambda_0 = (|u|^2 + |v|^2) x^2 / n ~ 1; muP: ~ 2
    let n = 20000;
    let sp = UvNet::new(&UvConfig::new(UvParam::Sp), n).unwrap().state().unwrap();
    let mup = UvNet::new(&UvConfig::new(UvParam::Mup), n).unwrap().state().unwrap();
    assert!((sp.lambda - 1.0).abs() < 0.03, "{sp:?}");
    assert!((mup.lambda - 2.0).abs() < 0.05 && mup.f.abs() < 0.05, "{mup:?}");
    assert!(UvNet::new(&UvConfig::new(UvParam::Sp), 0).is_err());
}

#[test]
fn cli_writes_results_and_rejects_bad_input_cleanly() {
    use std::process::Command;
    let bin = env!("CARGO_BIN_EXE_widthlab");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("scan");
    let o = Command::new(bin).args(["uv", "scan", "--param", "sp", "--widths", "10,100,1000", "--seeds", "0", "--grid", "8", "--out"]).arg(&out).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for f in ["max_stable.csv", "scan.json", "max_stable.svg", "grid.csv", "fig_c2.svg"] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    let csv = std::fs::read_to_string(out.join("max_stable.csv")).unwrap();
    assert_eq!(csv.lines().count(), 4, "{csv}");
    for (args, needle) in [
        (vec!["uv", "scan", "--widths", "0,10"], "width must be a whole number >= 1"),
        (vec!["uv", "scan", "--widths", "31.6"], "width must be a whole number >= 1"),
        (vec!["uv", "dynamics", "--eta", "-1"], "learning rate > 0"),
        (vec!["uv", "convergence", "--param", "sp"], "no infinite-width limit"),
        (vec!["uv", "scan", "--param", "foo"], "unknown parameterization `foo`"),
        (vec!["uv", "scan", "--x", "0"], "x finite and non-zero"),
    ] {
        let o = Command::new(bin).args(&args).arg("--out").arg(dir.path().join("bad")).output().unwrap();
        let e = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {e}");
        assert!(!e.contains("panicked") && e.contains(needle), "{args:?}: {e}");
    }
}
