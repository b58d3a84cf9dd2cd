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
use crate::model::{Freeze, MlpConfig};
use crate::optim::OptimizerKind;
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

/// Extras of section 5.1 and appendix F, built from [`lr_exponents`] with extra axes (grids
/// in [`lr_variant_grid`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LrVariant {
    /// Fig. F.22: 2- and 3-layer MLPs under CE (the 8-layer runs are [`lr_exponents`]'s).
    Depth,
    /// Fig. F.25: the 8-layer MLP trained with Adam in SP under CE and MSE.
    Adam,
    /// Fig. F.19: 2-layer random-feature models (`model.freeze = random-features`, only the
    /// last layer trains) under CE, MSE and MSE on softmax.
    RandomFeatures,
    /// Fig. 6, F.12, Table F.1: the 8-layer MLP in SP-full-align (SP init, muP SGD learning
    /// rates relative to width 256) under CE.
    SpFullAlign,
}

impl std::fmt::Display for LrVariant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LrVariant::Depth => "depth",
            LrVariant::Adam => "adam",
            LrVariant::RandomFeatures => "random_features",
            LrVariant::SpFullAlign => "sp_full_align",
        })
    }
}

/// Widths, seeds and learning rates of an [`LrVariant`]. Cheaper than the main sweep at
/// `quick` (widths 64, 256, 1024, one seed, octaves), with ranges that cover the optimum and
/// the first unstable point: shallow nets and SP-full-align stay stable up to `Theta(1)`
/// learning rates, Adam's rates are small.
pub fn lr_variant_grid(profile: Profile, variant: LrVariant) -> (Vec<i64>, Vec<u64>, Vec<f64>) {
    let (lo, hi) = match variant {
        LrVariant::Depth => (-6.0, 6.0),
        LrVariant::Adam => (-15.0, -3.0),
        LrVariant::RandomFeatures => (-10.0, 4.0),
        LrVariant::SpFullAlign => (-6.0, 4.0),
    };
    match profile {
        Profile::Smoke => (vec![32, 64], vec![0], log2_grid(lo, hi, 1).into_iter().step_by(3).collect()),
        Profile::Quick => (vec![64, 256, 1024], vec![0], log2_grid(lo, hi, 1)),
        Profile::Paper => (lr_exponents_grid(profile, LossKind::Ce).0, vec![0, 1, 2, 3], log2_grid(lo - 4.0, hi, 2)),
    }
}

/// The sweep of an [`LrVariant`]: [`lr_exponents`]'s CE sweep with the variant's axes.
pub fn lr_variant(profile: Profile, variant: LrVariant) -> Result<SweepSpec> {
    let (widths, seeds, lrs) = lr_variant_grid(profile, variant);
    let mut s = lr_exponents(profile, LossKind::Ce)?.axis("width", widths)?.axis("seed", seeds)?.axis("lr", lrs)?;
    s.name = format!("05_{variant}_{profile}");
    match variant {
        LrVariant::Depth => s.axis("depth", [2, 3]),
        LrVariant::Adam => s.axis("optimizer", [OptimizerKind::Adam])?.axis("loss", [LossKind::Ce, LossKind::Mse]),
        LrVariant::RandomFeatures => s.axis("depth", [2])?.axis("model.freeze", [Freeze::RandomFeatures])?.axis("loss", [LossKind::Ce, LossKind::Mse, LossKind::MseSoftmax]),
        LrVariant::SpFullAlign => s.axis("param", ["sp-full-align"]),
    }
}

/// The paper's exponents for the [`LrVariant`] rows: `(row, exponent, source)`. Only the
/// SP-full-align rows are Table F.1 numbers (Fashion-MNIST); the others are the clean
/// exponents the paper reports its figures to follow (other datasets, no fitted numbers).
pub const PAPER_VARIANT_EXPONENTS: [(&str, f64, &str); 8] = [
    ("2-layer CE max-stable", 0.0, "F.22 (MNIST): ~n^0"),
    ("3-layer CE max-stable", 0.0, "F.22 (MNIST): ~n^0"),
    ("Adam CE optimal", -1.0, "F.25: ~n^-1"),
    ("Adam MSE optimal", -1.0, "F.25: ~n^-1"),
    ("RF CE optimal", -1.0, "F.19 (CIFAR-10): n^-1"),
    ("RF MSE optimal", -1.0, "F.19 (CIFAR-10): n^-1"),
    ("RF MSE-softmax optimal", -1.0, "F.19 (CIFAR-10): n^-1"),
    ("SP-full-align max-stable", 0.0, "Table F.1"),
];

/// A row named `row` from an analysis' max-stable or optimal fit, with the paper's exponent
/// ([`PAPER_TABLE_F1_FASHION_MNIST`], then [`PAPER_VARIANT_EXPONENTS`]).
pub fn exponent_row(row: &str, a: &LrAnalysis) -> ExponentRow {
    let fit = if row.ends_with("max-stable") { a.max_stable_fit } else { a.optimal_fit };
    let paper = paper_exponent(row).or_else(|| PAPER_VARIANT_EXPONENTS.iter().find(|r| r.0 == row).map(|r| r.1));
    ExponentRow { row: row.into(), fit, paper }
}

/// Section 5.3 with Adam (Fig. F.18, right): [`ce_vs_mse`] on Fashion-MNIST with the Adam
/// learning rates of [`lr_variant_grid`]`(.., Adam)` (muP uses its Adam rules, `lr / fan_in`
/// relative to width 256, [`crate::param`]); the SP runs share their keys with 05's Adam sweep.
pub fn ce_vs_mse_adam(profile: Profile, param: &str) -> Result<SweepSpec> {
    let (widths, seeds, lrs) = lr_variant_grid(profile, LrVariant::Adam);
    let mut s = ce_vs_mse(profile, DatasetName::FashionMnist, param)?.axis("optimizer", [OptimizerKind::Adam])?.axis("width", widths)?.axis("seed", seeds)?.axis("lr", lrs)?;
    s.name = format!("08_ce_vs_mse_adam_{param}_{profile}");
    Ok(s)
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

/// Learning rates above [`mse_softmax_grid`] for the 3-layer CE sweep only: with 3 classes
/// the CE rule (training accuracy below 20%) is met only once training diverges, and at `quick`
/// no 3-layer CE run up to `2^4` did, so its max-stable exponent was undefined. `2^5 .. 2^12`
/// (quick; paper: `2^7 .. 2^12` above its wider grid) in octaves; smoke adds none.
pub fn mse_softmax_ce_high_lrs(profile: Profile) -> Vec<f64> {
    match profile {
        Profile::Smoke => vec![],
        Profile::Quick => log2_grid(5.0, 12.0, 1),
        Profile::Paper => log2_grid(7.0, 12.0, 1),
    }
}

/// The 3-layer CE runs at [`mse_softmax_ce_high_lrs`] (widths and seeds of
/// [`mse_softmax_grid`]); analysed together with [`mse_softmax`]`(.., 3)`'s CE runs.
pub fn mse_softmax_ce_high(profile: Profile) -> Result<SweepSpec> {
    let (widths, seeds, _) = mse_softmax_grid(profile);
    let lrs = mse_softmax_ce_high_lrs(profile);
    let mut s = mse_softmax(profile, 3)?.axis("loss", [LossKind::Ce])?.axis("width", widths)?.axis("seed", seeds)?;
    s.name = format!("09_mse_softmax_d3_ce_high_{profile}");
    // An empty axis is an error: at smoke the sweep repeats the top of the main grid (no new runs).
    s.axis("lr", if lrs.is_empty() { vec![*mse_softmax_grid(profile).2.last().unwrap_or(&1.0)] } else { lrs })
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
        for profile in [Profile::Smoke, Profile::Quick, Profile::Paper] {
            for variant in [LrVariant::Depth, LrVariant::Adam, LrVariant::RandomFeatures, LrVariant::SpFullAlign] {
                let pts = lr_variant(profile, variant).unwrap().points().unwrap();
                let (w, seeds, lrs) = lr_variant_grid(profile, variant);
                let per = w.len() * seeds.len() * lrs.len();
                let c = |p: &crate::sweep::RunPoint, a: &str, b: &str| p.config[a][b].clone();
                // Everything not set by the variant is the section 5.1 base (Fashion-MNIST, SP, SGD).
                assert!(pts.iter().all(|p| p.config["data"]["dataset"] == "fashion-mnist" && p.config["batch_size"] == 64));
                match variant {
                    LrVariant::Depth => {
                        assert_eq!(pts.len(), 2 * per);
                        assert!(pts.iter().all(|p| [2, 3].contains(&c(p, "model", "depth").as_i64().unwrap()) && c(p, "loss", "kind") == "ce"));
                    }
                    LrVariant::Adam => {
                        assert_eq!(pts.len(), 2 * per);
                        assert!(pts.iter().all(|p| c(p, "optim", "kind") == "adam" && c(p, "model", "depth") == 8 && p.config["param"] == "sp"));
                    }
                    LrVariant::RandomFeatures => {
                        assert_eq!(pts.len(), 3 * per);
                        assert!(pts.iter().all(|p| c(p, "model", "freeze") == "random-features" && c(p, "model", "depth") == 2));
                    }
                    LrVariant::SpFullAlign => {
                        assert_eq!(pts.len(), per);
                        assert!(pts.iter().all(|p| p.config["param"] == "sp-full-align" && c(p, "optim", "kind") == "sgd"));
                    }
                }
            }
            // 08 with Adam: SP runs are 05's Adam runs (same keys), muP differs.
            let adam05: std::collections::HashSet<_> = lr_variant(profile, LrVariant::Adam).unwrap().points().unwrap().into_iter().map(|p| p.key).collect();
            assert!(ce_vs_mse_adam(profile, "sp").unwrap().points().unwrap().iter().all(|p| adam05.contains(&p.key)));
            let mup = ce_vs_mse_adam(profile, "mup").unwrap().points().unwrap();
            assert!(mup.iter().all(|p| !adam05.contains(&p.key) && p.config["param"] == "mup" && p.config["optim"]["kind"] == "adam"));
            // 09's high CE learning rates extend the 3-layer CE grid upwards only.
            let high = mse_softmax_ce_high(profile).unwrap().points().unwrap();
            let top = *mse_softmax_grid(profile).2.last().unwrap();
            assert!(high.iter().all(|p| p.config["loss"]["kind"] == "ce" && p.config["model"]["depth"] == 3 && p.config["lr"].as_f64().unwrap() >= top));
            assert!(mse_softmax_ce_high_lrs(profile).iter().all(|&l| l > top));
            assert_eq!(high.len(), mse_softmax_grid(profile).0.len() * mse_softmax_grid(profile).1.len() * mse_softmax_ce_high_lrs(profile).len().max(1));
        }
        assert_eq!(mse_softmax_ce_high_lrs(Profile::Quick).last(), Some(&4096.0));
        assert_eq!(paper_exponent("CE max-stable"), Some(-0.7));
        assert_eq!(paper_exponent("nope"), None);
        let fit = crate::fit::fit_power_law(&[64.0, 128.0, 256.0], &[1.0, 0.7, 0.5]).unwrap();
        let t = format_table_f1(&[ExponentRow { row: "CE max-stable".into(), fit: Some(fit), paper: Some(-0.7) }, ExponentRow { row: "MSE optimal".into(), fit: None, paper: Some(-0.83) }]);
        assert!(t.contains("CE max-stable") && t.contains("-0.50") && t.contains("-0.70") && t.contains("n/a"), "{t}");
    }
}
