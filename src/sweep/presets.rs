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
        assert_eq!(paper_exponent("CE max-stable"), Some(-0.7));
        assert_eq!(paper_exponent("nope"), None);
        let fit = crate::fit::fit_power_law(&[64.0, 128.0, 256.0], &[1.0, 0.7, 0.5]).unwrap();
        let t = format_table_f1(&[ExponentRow { row: "CE max-stable".into(), fit: Some(fit), paper: Some(-0.7) }, ExponentRow { row: "MSE optimal".into(), fit: None, paper: Some(-0.83) }]);
        assert!(t.contains("CE max-stable") && t.contains("-0.50") && t.contains("-0.70") && t.contains("n/a"), "{t}");
    }
}
