//! Sharpness measurements against the theory and through the command line: the uv network
//! trained in libtorch has the recursion's `lambda_t` as its measured Gauss-Newton sharpness
//! along whole trajectories (including a catapult); `widthlab sharpness` writes the rows and
//! rejects bad input cleanly.
use std::process::Command;

use widthlab::sharpness::uv::uv_sharpness;
use widthlab::theory::uv::{UvConfig, UvParam};

#[test]
fn measured_gauss_newton_sharpness_is_the_recursions_lambda_through_a_catapult() {
    // SP with eta_n = eta_0 / n (Fig. C.3's scaling) at 1.5 times the edge of stability:
    // eta lambda_0 = 3, the loss spikes, the sharpness falls below the edge, the loss converges
    let sp = UvConfig { alpha: 1.0, ..UvConfig::new(UvParam::Sp) };
    let mut catapults = 0;
    for width in [16i64, 32] {
        let r = uv_sharpness(&sp, width, 1.5, 40).unwrap();
        assert_eq!(r.measured.len(), 41);
        assert!(r.max_rel_lambda < 1e-9 && r.max_rel_f < 1e-9, "n {width}: lambda {:.1e}, f {:.1e}", r.max_rel_lambda, r.max_rel_f);
        let e = r.eta_sharpness_gn();
        assert!((e[0] - 3.0).abs() < 1e-9, "eta_sharpness_gn at init is 2 x 1.5: {}", e[0]);
        catapults += usize::from(r.catapult());
        // the full Hessian differs from its GN part by chi d^2 f: small once chi has decayed
        let last = r.measured.len() - 1;
        assert!((r.full[last] - r.measured[last].lambda).abs() < 1e-3 * r.measured[last].lambda, "n {width}: {} vs {}", r.full[last], r.measured[last].lambda);
        assert!(r.full.iter().zip(&r.measured).any(|(h, g)| (h - g.lambda).abs() > 0.1 * g.lambda), "the spike's residual term is visible");
    }
    assert_eq!(catapults, 2);
    // per-layer learning rates (muP, NTP) enter through the preconditioner D
    for param in [UvParam::Mup, UvParam::Ntp] {
        let r = uv_sharpness(&UvConfig::new(param), 64, 0.9, 25).unwrap();
        assert!(r.max_rel_lambda < 1e-9 && r.max_rel_f < 1e-9, "{param}: {:.1e} {:.1e}", r.max_rel_lambda, r.max_rel_f);
        let moved = (r.measured[0].lambda - r.measured[25].lambda).abs() > 1e-3 * r.measured[0].lambda;
        assert!(moved, "{param}: the sharpness evolves");
    }
}

#[test]
fn cli_measures_the_mlp_and_the_gpt_and_rejects_bad_input_cleanly() {
    let bin = env!("CARGO_BIN_EXE_widthlab");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("mlp");
    let o = Command::new(bin)
        .args(["sharpness", "--dataset", "teacher", "--depth", "3", "--widths", "16,32", "--seeds", "0,1", "--at", "0,2", "--lr", "0.1", "--sharpness-batch", "64", "--layers", "--trace", "4", "--threads", "1", "--quiet", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("sharpness") && stdout.contains("exponent"), "{stdout}");
    let csv = std::fs::read_to_string(out.join("rows.csv")).unwrap();
    assert!(csv.starts_with("width,seed,step,layer,metric,value"));
    for m in ["sharpness", "sharpness_gn", "eta_sharpness", "sharpness_layer", "trace", "sharpness_residual"] {
        assert!(csv.lines().any(|l| l.split(',').nth(4) == Some(m)), "{m} missing");
    }
    // 2 widths x 2 seeds x 2 steps of the top eigenvalue
    assert_eq!(csv.lines().filter(|l| l.split(',').nth(4) == Some("sharpness")).count(), 8);
    assert!(out.join("result.json").exists());

    let gpt = dir.path().join("gpt");
    let o = Command::new(bin)
        .args(["sharpness", "--model", "gpt", "--generated-text", "20000", "--vocab-size", "300", "--seq-len", "16", "--depth", "1", "--widths", "32", "--seeds", "0", "--at", "1", "--sharpness-batch", "2", "--threads", "1", "--quiet", "--out"])
        .arg(&gpt)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let csv = std::fs::read_to_string(gpt.join("rows.csv")).unwrap();
    assert!(csv.lines().any(|l| l.contains(",sharpness_precond,")), "AdamW: the preconditioned sharpness after step 1");

    for (args, needle) in [
        (vec!["sharpness", "--widths", "0", "--dataset", "teacher"], "width 0"),
        (vec!["sharpness", "--dataset", "teacher", "--top-k", "0"], "k and max_iter"),
        (vec!["sharpness", "--dataset", "teacher", "--at", "1", "--every", "2"], "either --at or --every"),
        (vec!["sharpness", "--model", "transformer"], "invalid value"),
        (vec!["sharpness", "--dataset", "teacher", "--weights", "/nonexistent.safetensors"], "cannot read weights"),
        (vec!["sharpness", "--config", "/nonexistent.toml"], "nonexistent.toml"),
    ] {
        let o = Command::new(bin).args(&args).arg("--out").arg(dir.path().join("bad")).output().unwrap();
        let e = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {e}");
        assert!(!e.contains("panicked") && e.contains(needle), "{args:?}: {e}");
    }
    let help = Command::new(bin).args(["sharpness", "--help"]).output().unwrap();
    assert!(help.status.success() && String::from_utf8_lossy(&help.stdout).contains("--at"));
}
