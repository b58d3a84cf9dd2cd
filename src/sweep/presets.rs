//! Sweeps of the paper's section 5.1 at the three profiles, and the paper's Table F.1 for
//! comparison. Notebooks build their sweeps here, so the settings are documented and tested
//! in one place.
//!
//! `lr_exponents` (Fig. 1, 6, F.10-F.13, Table F.1): 8-layer ReLU MLPs, SGD without momentum in
//! SP, batch 64, one epoch, Fashion-MNIST, CE or MSE, grid of learning rates in powers of
//! `sqrt 2` (quick) or 2 (smoke) per width. The paper uses widths 256..16384 and the full
//! 60k training set with 4 seeds; quick uses widths 64..1024, a 4096-image training subset
//! (64 steps) and 2 seeds so the whole notebook fits in about 10 minutes on 2 cores.
use crate::data::{DataConfig, DatasetName};
use crate::loss::{Loss, LossKind};
use crate::model::MlpConfig;
use crate::profile::Profile;
use crate::train::{EvalConfig, ParamSpec, TrainConfig};
use crate::Result;

use super::analysis::{closest_clean, LrAnalysis};
use super::{log2_grid, SweepSpec};
use crate::fit::PowerLaw;

/// Table F.1 of the paper, Fashion-MNIST column: `(row, exponent)`.
pub const PAPER_TABLE_F1_FASHION_MNIST: [(&str, f64); 6] = [
    ("CE max-stable", -0.7),
    ("CE optimal", -0.55),
    ("MSE max-stable", -0.89),
    ("MSE optimal", -0.83),
    ("SP-full-align max-stable", 0.0),
    ("SP-full-align optimal", -0.35),
];

/// The paper's exponent of a Table F.1 row (Fashion-MNIST).
pub fn paper_exponent(row: &str) -> Option<f64> {
    PAPER_TABLE_F1_FASHION_MNIST.iter().find(|r| r.0 == row).map(|r| r.1)
}

/// The 8-layer SP MLP on Fashion-MNIST of section 5.1 at a profile (learning rate unset).
pub fn mlp_base(profile: Profile, loss: LossKind) -> TrainConfig {
    let (subset, eval, test) = match profile {
        Profile::Smoke => (Some(512), 512, 256),
        Profile::Quick => (Some(4096), 2048, 1024),
        Profile::Paper => (None, 10_000, 10_000),
    };
    TrainConfig {
        model: MlpConfig { depth: 8, ..MlpConfig::default() },
        param: ParamSpec::Name("sp".into()),
        loss: Loss::new(loss),
        data: DataConfig { dataset: DatasetName::FashionMnist, train_subset: subset, test_subset: Some(test), ..DataConfig::default() },
        batch_size: 64,
        epochs: 1.0,
        eval: EvalConfig { every: 0, train_subset: Some(eval), test: true },
        ..TrainConfig::default()
    }
}

/// Widths, seeds and learning rates of the section 5.1 sweep at a profile, per loss.
pub fn lr_exponents_grid(profile: Profile, loss: LossKind) -> (Vec<i64>, Vec<u64>, Vec<f64>) {
    // Learning-rate ranges cover the optimum and the first unstable point at every width
    // (measured here with 64 steps: the first unstable learning rate at n = 64 is about 2^-1.5
    // under CE and 2^-2.5 under MSE, and at n = 1024 about 2^-3 and 2^-5.5).
    let (lo, hi) = match loss {
        LossKind::Ce => (-7.0, -1.0),
        LossKind::Mse | LossKind::MseSoftmax => (-8.0, -2.0),
    };
    match profile {
        Profile::Smoke => (vec![32, 64], vec![0], log2_grid(lo, hi, 1).into_iter().step_by(3).collect()),
        Profile::Quick => (vec![64, 128, 256, 512, 1024], vec![0, 1], log2_grid(lo, hi, 2)),
        Profile::Paper => (vec![256, 512, 1024, 2048, 4096, 8192, 16384], vec![0, 1, 2, 3], log2_grid(lo - 4.0, hi, 2)),
    }
}

/// The section 5.1 sweep (8-layer MLP, SGD, SP, Fashion-MNIST) for one loss.
pub fn lr_exponents(profile: Profile, loss: LossKind) -> Result<SweepSpec> {
    let (widths, seeds, lrs) = lr_exponents_grid(profile, loss);
    SweepSpec::mlp(&format!("05_lr_exponents_{loss}_{profile}"), &mlp_base(profile, loss))?.axis("width", widths)?.axis("seed", seeds)?.axis("lr", lrs)
}

/// Section 5.3 (Fig. 7, F.18): the 8-layer MLP trained with SGD in SP and muP under CE and MSE
/// on `dataset` (Fashion-MNIST or the multi-index teacher of appendix D.2), learning rate unset.
/// Fashion-MNIST as in [`mlp_base`]; the teacher data uses `d_in = 100`, 3 classes and a
/// training set of 1024 points (smoke: 256) with one epoch at batch 64, like the paper's
/// appendix D.2 setting but smaller.
pub fn ce_vs_mse_base(profile: Profile, dataset: DatasetName) -> TrainConfig {
    let mut c = mlp_base(profile, LossKind::Ce);
    if dataset == DatasetName::Teacher {
        let n = if profile == Profile::Smoke { 256 } else { 1024 };
        c.model.d_in = 100;
        c.model.d_out = 3;
        c.data = DataConfig { dataset, train_subset: None, test_subset: None, ..DataConfig::default() };
        c.data.teacher.n_train = n;
        c.data.teacher.n_test = n;
        c.eval = EvalConfig { every: 0, train_subset: None, test: true };
    }
    c
}

/// Widths, seeds and base learning rates of the section 5.3 sweep per parameterization. The
/// grid covers SP's optimum and first unstable point (05's ranges at these widths) and muP's
/// width-independent optimum (muP's hidden-layer learning rate does not scale with width).
pub fn ce_vs_mse_grid(profile: Profile, param: &str) -> (Vec<i64>, Vec<u64>, Vec<f64>) {
    let (lo, hi) = if param == "mup" { (-6.0, 2.0) } else { (-8.0, 0.0) };
    match profile {
        Profile::Smoke => (vec![32, 64], vec![0], log2_grid(lo, hi, 1).into_iter().step_by(2).collect()),
        Profile::Quick => (vec![64, 256, 1024], vec![0], log2_grid(lo, hi, 1)),
        Profile::Paper => (vec![256, 512, 1024, 2048, 4096, 8192, 16384], vec![0, 1, 2, 3], log2_grid(lo - 4.0, hi, 2)),
    }
}

/// The section 5.3 sweep of one parameterization on one dataset: losses CE and MSE as an axis
/// (the notebook analyses them as two groups).
pub fn ce_vs_mse(profile: Profile, dataset: DatasetName, param: &str) -> Result<SweepSpec> {
    let (widths, seeds, lrs) = ce_vs_mse_grid(profile, param);
    SweepSpec::mlp(&format!("08_ce_vs_mse_{dataset}_{param}_{profile}"), &ce_vs_mse_base(profile, dataset))?
        .axis("param", [param])?
        .axis("loss", [LossKind::Ce, LossKind::Mse])?
        .axis("width", widths)?
        .axis("seed", seeds)?
        .axis("lr", lrs)
}

/// Appendix F.4 (Fig. F.14-F.16): widths, seeds and learning rates of the shallow teacher
/// sweeps. 2- and 3-layer nets are cheap, so `quick` reaches width 2048; the grid is wide
/// because the 2-layer CE optimum does not shrink with width (`eta_n = Theta(1)`).
pub fn mse_softmax_grid(profile: Profile) -> (Vec<i64>, Vec<u64>, Vec<f64>) {
    match profile {
        Profile::Smoke => (vec![32, 128], vec![0], log2_grid(-8.0, 4.0, 1).into_iter().step_by(3).collect()),
        Profile::Quick => (vec![128, 512, 2048], vec![0, 1], log2_grid(-10.0, 4.0, 1)),
        Profile::Paper => (vec![256, 1024, 4096, 16384], vec![0, 1, 2, 3], log2_grid(-14.0, 6.0, 2)),
    }
}

/// Appendix F.4, Fig. F.14-F.16: `depth`-layer (2 or 3) SP MLPs on the multi-index teacher
/// data ([`ce_vs_mse_base`]), SGD, one epoch, losses CE, MSE and MSE on softmax outputs.
pub fn mse_softmax(profile: Profile, depth: usize) -> Result<SweepSpec> {
    let (widths, seeds, lrs) = mse_softmax_grid(profile);
    SweepSpec::mlp(&format!("09_mse_softmax_d{depth}_{profile}"), &ce_vs_mse_base(profile, DatasetName::Teacher))?
        .axis("depth", [depth])?
        .axis("loss", [LossKind::Ce, LossKind::Mse, LossKind::MseSoftmax])?
        .axis("width", widths)?
        .axis("seed", seeds)?
        .axis("lr", lrs)
}

/// Fig. F.17 on the teacher data: MSE with and without LayerNorm on the logits
/// (`model.logit_norm`), `depth`-layer SP MLPs, the grid of [`mse_softmax_grid`] (the runs
/// without LayerNorm are those of [`mse_softmax`] and share their keys). The paper's F.17
/// uses 8-layer MLPs on CIFAR-10.
pub fn logit_norm(profile: Profile, depth: usize) -> Result<SweepSpec> {
    let (widths, seeds, lrs) = mse_softmax_grid(profile);
    SweepSpec::mlp(&format!("09_logit_norm_d{depth}_{profile}"), &ce_vs_mse_base(profile, DatasetName::Teacher))?
        .axis("depth", [depth])?
        .axis("loss", [LossKind::Mse])?
        .axis("model.logit_norm", [false, true])?
        .axis("width", widths)?
        .axis("seed", seeds)?
        .axis("lr", lrs)
}

/// One row of a Table F.1-style comparison.
#[derive(Clone, Debug, PartialEq)]
pub struct ExponentRow {
    pub row: String,
    pub fit: Option<PowerLaw>,
    pub paper: Option<f64>,
}

/// The CE and MSE rows of Table F.1 from two analyses (max-stable and optimal each).
pub fn table_f1_rows(ce: &LrAnalysis, mse: &LrAnalysis) -> Vec<ExponentRow> {
    let row = |name: &str, fit: &Option<PowerLaw>| ExponentRow { row: name.into(), fit: *fit, paper: paper_exponent(name) };
    vec![
        row("CE max-stable", &ce.max_stable_fit),
        row("CE optimal", &ce.optimal_fit),
        row("MSE max-stable", &mse.max_stable_fit),
        row("MSE optimal", &mse.optimal_fit),
    ]
}

/// The rows as a text table: measured exponent with 95% CI, closest clean exponent, paper.
pub fn format_table_f1(rows: &[ExponentRow]) -> String {
    let mut s = format!("{:<26} {:>9} {:>18} {:>7} {:>7}\n", "exponent", "measured", "95% CI", "clean", "paper");
    for r in rows {
        let (m, ci, clean) = match &r.fit {
            Some(f) => (format!("{:+.2}", f.exponent), format!("[{:+.2}, {:+.2}]", f.ci_low, f.ci_high), format!("{:+}", closest_clean(f.exponent))),
            None => ("n/a".into(), String::new(), String::new()),
        };
        s += &format!("{:<26} {:>9} {:>18} {:>7} {:>7}\n", r.row, m, ci, clean, r.paper.map_or("-".into(), |p| format!("{p:+.2}")));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_resolve_and_differ_by_profile() {
        for profile in [Profile::Smoke, Profile::Quick, Profile::Paper] {
            for loss in [LossKind::Ce, LossKind::Mse] {
                let s = lr_exponents(profile, loss).unwrap();
                let pts = s.points().unwrap();
                let (w, seeds, lrs) = lr_exponents_grid(profile, loss);
                assert_eq!(pts.len(), w.len() * seeds.len() * lrs.len());
                assert_eq!(pts[0].config["model"]["depth"], 8);
            }
        }
        for (profile, dataset) in [Profile::Smoke, Profile::Quick, Profile::Paper].into_iter().flat_map(|p| [(p, DatasetName::FashionMnist), (p, DatasetName::Teacher)]) {
            for param in ["sp", "mup"] {
                let s = ce_vs_mse(profile, dataset, param).unwrap();
                let pts = s.points().unwrap();
                let (w, seeds, lrs) = ce_vs_mse_grid(profile, param);
                assert_eq!(pts.len(), 2 * w.len() * seeds.len() * lrs.len());
                assert_eq!(pts[0].config["param"], param);
                let d_in = if dataset == DatasetName::Teacher { 100 } else { 784 };
                assert!(pts.iter().all(|p| p.config["model"]["d_in"] == d_in && p.config["model"]["depth"] == 8));
            }
        }
        for profile in [Profile::Smoke, Profile::Quick, Profile::Paper] {
            let (w, seeds, lrs) = mse_softmax_grid(profile);
            let pts = mse_softmax(profile, 3).unwrap().points().unwrap();
            assert_eq!(pts.len(), 3 * w.len() * seeds.len() * lrs.len());
            assert!(pts.iter().all(|p| p.config["model"]["depth"] == 3 && p.config["data"]["dataset"] == "teacher"));
            let ln = logit_norm(profile, 3).unwrap().points().unwrap();
            assert_eq!(ln.iter().filter(|p| p.config["model"]["logit_norm"] == true).count(), w.len() * seeds.len() * lrs.len());
            // The runs without LayerNorm are the MSE runs of `mse_softmax`: same keys.
            let keys: std::collections::HashSet<_> = pts.iter().map(|p| &p.key).collect();
            assert!(ln.iter().filter(|p| p.config["model"]["logit_norm"] == false).all(|p| keys.contains(&p.key)));
        }
        assert_eq!(paper_exponent("CE max-stable"), Some(-0.7));
        assert_eq!(paper_exponent("nope"), None);
        let fit = crate::fit::fit_power_law(&[64.0, 128.0, 256.0], &[1.0, 0.7, 0.5]).unwrap();
        let t = format_table_f1(&[ExponentRow { row: "CE max-stable".into(), fit: Some(fit), paper: Some(-0.7) }, ExponentRow { row: "MSE optimal".into(), fit: None, paper: Some(-0.83) }]);
        assert!(t.contains("CE max-stable") && t.contains("-0.50") && t.contains("-0.70") && t.contains("n/a"), "{t}");
    }
}
