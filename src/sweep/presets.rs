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
use crate::train::gpt::GptTrainConfig;
use crate::train::{EvalConfig, ParamSpec, TrainConfig};
use serde::{Deserialize, Serialize};
use crate::Result;

use super::analysis::{closest_clean, Instability, LrAnalysis, Objective};
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

/// Widths and seeds of section 5.1's learning-rate searches (notebook 05) at a profile.
///
/// Statistical design (issue 17): every exponent is a regression of `log2 lr` on `log2 n`
/// over every seed at every width, so its 95% interval carries the seed spread; the search's
/// resolution (1/8 octave) is added as a worst-case bound ([`crate::fit::resolution_bound`]).
///
/// - `quick`: widths 32, 64, 128, 256, 512 (16x, 5 widths) and 3 seeds. The paper's widths
///   start at 256; the narrow widths are where the 2-core budget buys points (a width-1024
///   run costs as much as all narrower ones together). Training: one epoch of a 4096-image
///   Fashion-MNIST subset at batch 64 (64 SGD steps) instead of the paper's 938 steps on all
///   60k images. At these widths the exponents are pre-asymptotic (the input layer's fan-in,
///   784, exceeds every width): the same max-stable searches at widths 256..4096
///   (`configs/searches/table-f1-{ce,mse}-wide.toml`, minutes each on 2 cores but more
///   than the notebooks' budget leaves) move both exponents toward the paper's, and so does a
///   full epoch instead of 64 steps for CE. Notebook 05's claims are therefore often
///   inconclusive at `quick`; its caveat names the widths and steps.
/// - `paper`: the paper's widths 256..16384, 4 seeds, the full training set (one epoch).
/// - `smoke`: widths 64 and 128, one seed, 1/2-octave resolution: the machinery only.
pub fn lr_search_design(profile: Profile) -> Result<(Vec<i64>, Vec<u64>)> {
    Ok(match profile {
        // (8 steps at smoke: at width 32 the 8-layer net learns nothing at any learning rate)
        Profile::Smoke => (vec![64, 128], crate::profile::seeds(1)?),
        Profile::Quick => (vec![32, 64, 128, 256, 512], crate::profile::seeds(3)?),
        Profile::Paper => (vec![256, 512, 1024, 2048, 4096, 8192, 16384], crate::profile::seeds(4)?),
    })
}

/// Search parameters at a profile: 1/8-octave resolution (1/2 at `smoke`), the initial
/// bracket `[lo, hi]` of `log2 lr` at width 256 moved by `guess_exponent log2(n/256)` (the
/// bracket extends itself when the guess is wrong; a good guess only saves probes).
pub fn search_params(profile: Profile, find: super::search::Find, bracket: [f64; 2], guess_exponent: f64) -> super::search::SearchParams {
    let (resolution, coarse, refine) = if profile == Profile::Smoke { (0.5, 1.0, 0.5) } else { (0.125, 0.5, 0.125) };
    super::search::SearchParams {
        find,
        bracket,
        guess_exponent,
        guess_width: 256.0,
        resolution,
        optimal: super::search::OptimalParams { coarse, refine, ..Default::default() },
        ..Default::default()
    }
}

/// `p` with an octave-spaced coarse pass refined to 1/4 octave (a profile's `smoke` spacing is
/// kept when it is coarser).
fn coarser(mut p: super::search::SearchParams) -> super::search::SearchParams {
    p.optimal.coarse = p.optimal.coarse.max(1.0);
    p.optimal.refine = p.optimal.refine.max(0.25);
    p
}

/// Section 5.1's learning-rate search for one loss (Fig. 1, 6, F.10-F.13, Table F.1): the
/// 8-layer SP MLP of [`mlp_base`], the max-stable learning rate of every (width, seed) and the
/// optimum of every width ([`lr_search_design`] for widths, seeds and training length). The
/// brackets come from the grid sweeps this search replaced (64 steps: the first unstable
/// learning rate near `2^-2.25` under CE and `2^-4` under MSE at width 256).
pub fn lr_search(profile: Profile, loss: LossKind) -> Result<super::search::SearchSpec> {
    let (widths, seeds) = lr_search_design(profile)?;
    let (bracket, guess) = match loss {
        LossKind::Ce => ([-3.5, -1.5], -0.5),
        LossKind::Mse | LossKind::MseSoftmax => ([-5.0, -3.0], -1.0),
    };
    let grid = SweepSpec::mlp(&format!("05_lr_search_{loss}_{profile}"), &mlp_base(profile, loss))?.axis("width", widths)?.axis("seed", seeds)?;
    Ok(super::search::SearchSpec::from_grid(&grid, search_params(profile, super::search::Find::Both, bracket, guess)))
}

/// The search of an [`LrVariant`] (same design as [`lr_search`]): the max-stable learning
/// rate for `Depth` (F.22's claim is about it), the optimum for `Adam` (F.25) and
/// `RandomFeatures` (F.19). The optimum-only searches step their coarse pass by an octave and
/// refine to 1/4 octave: without max-stable brackets to start from, the half-octave pass of
/// [`search_params`] took 86 probes per width for Adam and 105 for random features at
/// `quick` (their accuracy curves have wide plateaus), most of the notebook's time; a quarter
/// octave is still finer than the paper's grids and enters the intervals as resolution.
pub fn lr_variant_search(profile: Profile, variant: LrVariant) -> Result<super::search::SearchSpec> {
    use super::search::Find;
    let (widths, seeds) = lr_search_design(profile)?;
    let base = SweepSpec::mlp(&format!("05_{variant}_search_{profile}"), &mlp_base(profile, LossKind::Ce))?.axis("width", widths)?.axis("seed", seeds)?;
    let (grid, params) = match variant {
        // shallow nets stay stable up to Theta(1) learning rates (F.22)
        LrVariant::Depth => (base.axis("depth", [2, 3])?, search_params(profile, Find::MaxStable, [0.0, 2.0], 0.0)),
        // Adam's rates are small; its optimum is expected near n^-1 (F.25)
        LrVariant::Adam => (base.axis("optimizer", [OptimizerKind::Adam])?.axis("loss", [LossKind::Ce, LossKind::Mse])?, coarser(search_params(profile, Find::Optimal, [-10.0, -7.0], -1.0))),
        LrVariant::RandomFeatures => (
            base.axis("depth", [2])?.axis("model.freeze", [Freeze::RandomFeatures])?.axis("loss", [LossKind::Ce, LossKind::Mse, LossKind::MseSoftmax])?,
            coarser(search_params(profile, Find::Optimal, [-2.0, 1.0], -1.0)),
        ),
        LrVariant::SpFullAlign => return Err(crate::Error::config("SP-full-align's learning rates are notebook 07's (presets::sp_full_align_mlp)")),
    };
    Ok(super::search::SearchSpec::from_grid(&grid, params))
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

// ---- Section 5.3 (notebook 08) and appendix F.4 (notebook 09): learning-rate searches ----

/// The 8-layer MLP of section 5.3 (Fig. 7, F.18) on `dataset` (learning rate unset):
/// Fashion-MNIST as in [`mlp_base`]; the multi-index teacher data as [`teacher_data`].
pub fn ce_vs_mse_base(profile: Profile, dataset: DatasetName) -> TrainConfig {
    let mut c = mlp_base(profile, LossKind::Ce);
    if dataset == DatasetName::Teacher {
        c.model.d_in = 100;
        c.model.d_out = 2;
        c.data = teacher_data(profile);
        c.eval = EvalConfig { every: 0, train_subset: None, test: true };
    }
    c
}

/// The multi-index teacher data of appendix D.2 (`d_in = 100`, 2 classes) at a profile:
/// 10,000 training points and 1,000 test points at `quick` and `paper`, one epoch at batch 64
/// (157 SGD steps); `smoke`: 2,048 and 256 (32 steps: enough to learn above the near-chance
/// threshold, so that the searches find stable learning rates).
///
/// This follows the authors' code (`10^4` train, `10^3` test) rather than the paper's D.2
/// text (`10^3` train, `10^4` test): with about 1,000 points (16 SGD steps) the input layer of
/// a 2-layer net barely moves, so the 2-layer CE optimum follows the random-feature law
/// `n^-1` instead of the paper's `n^0` (F.15 measured `-1.00` that way). The test
/// `teacher_input_layer_learns_with_10k_points` shows the difference.
pub fn teacher_data(profile: Profile) -> DataConfig {
    let (n_train, n_test) = if profile == Profile::Smoke { (2_048, 256) } else { (10_000, 1_000) };
    let mut d = DataConfig { dataset: DatasetName::Teacher, train_subset: None, test_subset: None, ..DataConfig::default() };
    d.teacher.d_in = 100;
    d.teacher.n_train = n_train;
    d.teacher.n_test = n_test;
    d
}

/// Widths and seeds of section 5.3's searches (notebook 08).
///
/// Statistical design (issue 17): the claims compare optimal training accuracies at the
/// largest width, CE minus MSE (Fig. 7, F.18), and the size of that gap between SP and muP
/// and between SGD and Adam. Each seed's accuracy is read at the optimum of the seed-averaged
/// curve of its (setting, width) ([`optimal_gap`]), so each gap has one value per seed and
/// its 95% interval is Student's t over the seeds (paired by seed).
///
/// - `quick`: widths 32, 64, 128, 256, 512 (16x, 5 widths: the accuracy-vs-width curves of
///   Fig. 7), 3 seeds; Fashion-MNIST for one epoch of a 4096-image subset (64 steps, as in
///   [`mlp_base`]), the teacher data as in [`teacher_data`] (157 steps). The paper: MNIST,
///   CIFAR-10 and Fashion-MNIST on all their images, widths up to 16384, 4 seeds; it shows
///   the gap growing with width, so at width 512 the gaps are expected smaller than the
///   paper's.
/// - `paper`: widths 256..16384, 4 seeds, the full data.
/// - `smoke`: two widths, one seed: the machinery only.
///
/// Only the optimal accuracy is claimed, so the searches use half-octave local grids
/// ([`ce_vs_mse_search`]): the accuracy at an optimum is flat on that scale.
pub fn ce_vs_mse_design(profile: Profile) -> Result<(Vec<i64>, Vec<u64>)> {
    Ok(match profile {
        Profile::Smoke => (vec![32, 64], crate::profile::seeds(1)?),
        Profile::Quick => (vec![32, 64, 128, 256, 512], crate::profile::seeds(3)?),
        Profile::Paper => (vec![256, 512, 1024, 2048, 4096, 8192, 16384], crate::profile::seeds(4)?),
    })
}

/// Section 5.3 (Fig. 7, F.18 left): the optimal learning rate and training accuracy of the
/// 8-layer MLP with SGD in `param` (`sp` or `mup`, absolute-width rules) on `dataset`, for
/// CE and MSE ([`ce_vs_mse_design`]). The instability rule is `near-chance` for both losses:
/// it only sets where the coarse pass starts (every seed failing), and under MSE ReLU nets can
/// die at large learning rates without a NaN. Brackets at width 256: SP as in section 5.1's
/// searches (first unstable near `2^-2.25` under CE, `2^-4` under MSE, 64 steps), muP's
/// width-independent hidden-layer rate around `2^-1`.
pub fn ce_vs_mse_search(profile: Profile, dataset: DatasetName, param: &str, loss: LossKind) -> Result<super::search::SearchSpec> {
    ce_vs_mse_search_with(profile, dataset, param, loss, OptimizerKind::Sgd)
}

/// Section 5.3 with Adam (Fig. F.18 right, Fashion-MNIST): [`ce_vs_mse_search`] with Adam in
/// SP (global learning rate, optimum near `2^-9` at width 256, exponent about `-1`, F.25) or
/// muP (its Adam rules, [`crate::param`]).
pub fn ce_vs_mse_adam_search(profile: Profile, param: &str, loss: LossKind) -> Result<super::search::SearchSpec> {
    ce_vs_mse_search_with(profile, DatasetName::FashionMnist, param, loss, OptimizerKind::Adam)
}

fn ce_vs_mse_search_with(profile: Profile, dataset: DatasetName, param: &str, loss: LossKind, optimizer: OptimizerKind) -> Result<super::search::SearchSpec> {
    use super::search::Find;
    crate::param::Parameterization::builtin(param)?;
    let (widths, seeds) = ce_vs_mse_design(profile)?;
    let sgd = optimizer == OptimizerKind::Sgd;
    let (bracket, guess) = match (param, sgd, loss) {
        ("sp", true, LossKind::Ce) => ([-4.0, -2.0], -0.5),
        ("sp", true, _) => ([-5.0, -3.0], -1.0),
        ("sp", false, _) => ([-10.0, -7.0], -1.0),
        (_, true, _) => ([-3.0, 1.0], 0.0),
        (_, false, _) => ([-4.0, -1.0], 0.0),
    };
    let opt = if sgd { "" } else { "_adam" };
    let mut c = ce_vs_mse_base(profile, dataset);
    c.loss = Loss::new(loss);
    c.optim.kind = optimizer;
    c.param = ParamSpec::Name(param.into());
    let grid = SweepSpec::mlp(&format!("08_ce_vs_mse{opt}_{dataset}_{param}_{loss}_{profile}"), &c)?.axis("width", widths)?.axis("seed", seeds)?;
    let mut p = search_params(profile, Find::Optimal, bracket, guess);
    p.instability = Some(Instability::NearChance);
    p.optimal.refine = p.optimal.coarse;
    p.optimal.refine_each_seed = false;
    Ok(super::search::SearchSpec::from_grid(&grid, p))
}

/// The gap of the optimal objective between two searched settings (section 5.3: CE minus
/// MSE) at the largest width both have an optimum at: per seed, `a`'s value minus `b`'s, each
/// read at the optimum of its setting's seed-averaged curve (the seeds' values at one learning
/// rate, so the per-seed maximum's upward bias does not enter).
#[derive(Clone, Debug, PartialEq)]
pub struct OptimalGap {
    pub width: f64,
    /// `(seed, a - b)` for the seeds both settings have.
    pub per_seed: Vec<(u64, f64)>,
}

impl OptimalGap {
    /// The mean gap with its 95% t interval over seeds.
    pub fn estimate(&self) -> crate::claims::Estimate {
        let v: Vec<f64> = self.per_seed.iter().map(|s| s.1).collect();
        crate::claims::Estimate::mean(&v, &format!("per-seed gaps at width {}", self.width))
    }

    /// `|self| - |other|` per seed (paired by seed; both at their own largest width), as the
    /// mean with its 95% t interval: positive when `self`'s gap is the larger one.
    pub fn abs_excess(&self, other: &OptimalGap) -> crate::claims::Estimate {
        let v: Vec<f64> = self.per_seed.iter().filter_map(|(s, g)| other.per_seed.iter().find(|o| o.0 == *s).map(|o| g.abs() - o.1.abs())).collect();
        crate::claims::Estimate::mean(&v, &format!("per-seed |gap| differences at widths {} and {}", self.width, other.width))
    }
}

/// [`OptimalGap`] of `a` minus `b` (`None` if they share no width with an optimum).
pub fn optimal_gap(a: &super::search::SettingSearch, b: &super::search::SettingSearch) -> Option<OptimalGap> {
    let at_optimum = |s: &super::search::SettingSearch, width: f64| -> Option<Vec<(u64, f64)>> {
        let o = s.widths.iter().find(|w| w.width == width)?.optimum.as_ref()?;
        Some(o.probes.iter().filter(|p| p.m == o.mean.best_m).map(|p| (p.seed, p.value)).collect())
    };
    let width = a.widths.iter().rev().map(|w| w.width).find(|&n| at_optimum(a, n).is_some() && at_optimum(b, n).is_some())?;
    let (va, vb) = (at_optimum(a, width)?, at_optimum(b, width)?);
    let per_seed = va.iter().filter_map(|(s, x)| vb.iter().find(|v| v.0 == *s).map(|v| (*s, x - v.1))).collect();
    Some(OptimalGap { width, per_seed })
}

/// The searches of appendix F.4 (Fig. F.14-F.17, notebook 09): SP MLPs with SGD, each with
/// what its claim needs; on the teacher data ([`teacher_data`]) except the F.17 pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShallowSearch {
    /// 2 layers, CE: the optimum (F.14/F.15: transfers at `n^0`).
    Ce2,
    /// 2 layers, MSE: the max-stable learning rate (F.15: `n^-1`).
    Mse2,
    /// 2 layers, MSE on softmax outputs: the optimum (F.14: not CE's scaling).
    MseSoftmax2,
    /// 3 layers, CE: the max-stable learning rate (F.16: `n^-1/2`).
    Ce3,
    /// 3 layers, MSE: the max-stable learning rate (F.16: `n^-1`).
    Mse3,
    /// F.17 without LayerNorm on the logits: 3 layers, MSE, Fashion-MNIST ([`mlp_base`]), the
    /// max-stable learning rate. Not on the teacher data: LayerNorm over its 2 logits maps
    /// them to `+-1`, whose gradient vanishes almost everywhere (nothing trains).
    MseFmnist3,
    /// F.17: [`ShallowSearch::MseFmnist3`] with LayerNorm on the logits.
    MseFmnist3LogitNorm,
}

impl ShallowSearch {
    pub const ALL: [ShallowSearch; 7] = [ShallowSearch::Ce2, ShallowSearch::Mse2, ShallowSearch::MseSoftmax2, ShallowSearch::Ce3, ShallowSearch::Mse3, ShallowSearch::MseFmnist3, ShallowSearch::MseFmnist3LogitNorm];

    pub fn name(self) -> &'static str {
        match self {
            ShallowSearch::Ce2 => "d2_ce",
            ShallowSearch::Mse2 => "d2_mse",
            ShallowSearch::MseSoftmax2 => "d2_mse-softmax",
            ShallowSearch::Ce3 => "d3_ce",
            ShallowSearch::Mse3 => "d3_mse",
            ShallowSearch::MseFmnist3 => "fmnist_d3_mse",
            ShallowSearch::MseFmnist3LogitNorm => "fmnist_d3_mse_logit-norm",
        }
    }

    pub fn depth(self) -> usize {
        match self {
            ShallowSearch::Ce2 | ShallowSearch::Mse2 | ShallowSearch::MseSoftmax2 => 2,
            _ => 3,
        }
    }

    /// The instability rule: the paper's NaN rule for the MSE max-stable searches (appendix
    /// D.4); `near-chance` for CE and for the optimal searches (there it only sets where the
    /// coarse pass starts). Near chance under MSE also catches nets that merely have not
    /// learned yet, which at large widths and small learning rates (157 steps) is every run.
    fn instability(self) -> Instability {
        match self {
            ShallowSearch::Mse2 | ShallowSearch::Mse3 | ShallowSearch::MseFmnist3 | ShallowSearch::MseFmnist3LogitNorm => Instability::Nan,
            _ => Instability::NearChance,
        }
    }

    pub fn loss(self) -> LossKind {
        match self {
            ShallowSearch::Ce2 | ShallowSearch::Ce3 => LossKind::Ce,
            ShallowSearch::MseSoftmax2 => LossKind::MseSoftmax,
            _ => LossKind::Mse,
        }
    }

    /// The paper's width exponent of the searched learning rate (the transfer exponent of
    /// F.14/F.16's x-axes; F.17's LayerNorm: like CE, `-1/2`).
    pub fn paper_exponent(self) -> f64 {
        match self {
            ShallowSearch::Ce2 => 0.0,
            ShallowSearch::Ce3 | ShallowSearch::MseFmnist3LogitNorm => -0.5,
            _ => -1.0,
        }
    }

    fn find(self) -> super::search::Find {
        match self {
            ShallowSearch::Ce2 | ShallowSearch::MseSoftmax2 => super::search::Find::Optimal,
            _ => super::search::Find::MaxStable,
        }
    }

    /// Initial bracket of `log2 lr` at width 256 and the guessed exponent.
    fn bracket(self) -> ([f64; 2], f64) {
        match self {
            ShallowSearch::Ce2 => ([0.0, 4.0], 0.0),
            ShallowSearch::Mse2 => ([0.0, 2.0], -1.0),
            ShallowSearch::MseSoftmax2 => ([-2.0, 2.0], -1.0),
            ShallowSearch::Ce3 => ([-1.0, 2.0], -0.5),
            ShallowSearch::Mse3 => ([0.0, 2.0], -1.0),
            ShallowSearch::MseFmnist3 => ([-3.0, -1.0], -1.0),
            ShallowSearch::MseFmnist3LogitNorm => ([-1.0, 2.0], -0.5),
        }
    }
}

impl std::fmt::Display for ShallowSearch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Widths and seeds of appendix F.4's searches (notebook 09) at a profile, per depth.
///
/// Statistical design (issue 17): each exponent is a regression of `log2 lr` on `log2 n`
/// over every seed at every width (its interval carries the seed spread) plus the search's
/// resolution as a worst-case bound; the ordinal claims (F.14, F.16) take the difference of
/// two such exponents, F.17 the per-seed difference of `log2` first unstable learning rates
/// at the largest width (Student t over seeds) widened by the resolution.
///
/// - `quick`: 3 seeds; 2 layers at widths 64..1024 and 3 layers at widths 32..512 (16x, 5
///   widths each: a 3-layer net costs `n^2` per step, a 2-layer one `n`); one epoch of 10,000
///   teacher points ([`teacher_data`], 157 steps). The paper: 4 seeds, widths up to 16384,
///   1,000 training points in its text (10,000 in the authors' code, followed here).
/// - `paper`: widths 256..16384 (both depths), 4 seeds.
/// - `smoke`: two widths, one seed: the machinery only.
///
/// The F.17 pair trains 3-layer MLPs on Fashion-MNIST as [`mlp_base`] (4096 images, 64 steps
/// at `quick`; the paper: 8-layer MLPs on CIFAR-10) at the 3-layer widths. Instability
/// rules: [`ShallowSearch`]'s (CE: training accuracy below 55.6% on these 2-class data, or
/// diverged; MSE max-stable: NaN).
pub fn shallow_search_design(profile: Profile, depth: usize) -> Result<(Vec<i64>, Vec<u64>)> {
    Ok(match (profile, depth) {
        (Profile::Smoke, _) => (vec![32, 64], crate::profile::seeds(1)?),
        (Profile::Quick, 2) => (vec![64, 128, 256, 512, 1024], crate::profile::seeds(3)?),
        (Profile::Quick, _) => (vec![32, 64, 128, 256, 512], crate::profile::seeds(3)?),
        (Profile::Paper, _) => (vec![256, 1024, 4096, 16384], crate::profile::seeds(4)?),
    })
}

/// One search of appendix F.4 ([`ShallowSearch`], [`shallow_search_design`]). The search range
/// is limited to `2^-16 .. 2^16`: a setting that stays stable up to the top (MSE with logit
/// LayerNorm may) ends there ([`super::search::Edge::NoUnstable`]).
pub fn shallow_search(profile: Profile, which: ShallowSearch) -> Result<super::search::SearchSpec> {
    let (widths, seeds) = shallow_search_design(profile, which.depth())?;
    let fmnist = matches!(which, ShallowSearch::MseFmnist3 | ShallowSearch::MseFmnist3LogitNorm);
    let mut c = ce_vs_mse_base(profile, if fmnist { DatasetName::FashionMnist } else { DatasetName::Teacher });
    c.model.depth = which.depth();
    c.model.logit_norm = which == ShallowSearch::MseFmnist3LogitNorm;
    c.loss = Loss::new(which.loss());
    let grid = SweepSpec::mlp(&format!("09_teacher_{which}_{profile}"), &c)?.axis("width", widths)?.axis("seed", seeds)?;
    let (bracket, guess) = which.bracket();
    let mut p = search_params(profile, which.find(), bracket, guess);
    p.instability = Some(which.instability());
    p.limits = [-16.0, 16.0];
    Ok(super::search::SearchSpec::from_grid(&grid, p))
}

/// F.17: per seed, `log2` of `b`'s first unstable learning rate minus `a`'s at the largest
/// width both searched, as the mean with its 95% t interval over seeds, widened by the
/// search's `resolution` (each first unstable learning rate lies within it of the edge). A
/// seed of `b` stable up to the search's limit counts at its last stable learning rate: a
/// lower bound, which can only make a claim that `b` lies above `a` harder to hold.
pub fn max_stable_shift(a: &super::search::SettingSearch, b: &super::search::SettingSearch, resolution: f64) -> Option<crate::claims::Estimate> {
    let width = a.widths.iter().rev().map(|w| w.width).find(|n| b.widths.iter().any(|w| w.width == *n))?;
    let (wa, wb) = (a.widths.iter().find(|w| w.width == width)?, b.widths.iter().find(|w| w.width == width)?);
    let diffs: Vec<f64> = wa
        .max_stable
        .iter()
        .filter_map(|ma| {
            let mb = wb.max_stable.iter().find(|m| m.seed == ma.seed)?;
            Some(mb.first_unstable.or(mb.last_stable)?.log2() - ma.first_unstable?.log2())
        })
        .collect();
    Some(crate::claims::Estimate::mean(&diffs, &format!("per-seed log2 differences of the first unstable learning rate at width {width}")).widen(resolution, "the search's resolution"))
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

// ---- 06_gpt_lr_exponents: GPT learning-rate sweeps (section 5.1, Fig. 5, F.2-F.4, F.8) ----

/// The four GPT settings of section 5.1 (Fig. 5, F.2-F.4, F.8), all in SP with a global
/// learning rate, CE loss unless stated: SGD, AdamW with trainable LayerNorm gains and biases,
/// AdamW with frozen LayerNorm parameters, and SGD under MSE loss.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GptLrSetting {
    /// SGD (no momentum, no weight decay, gradient clipping at 1), Fig. 5 left, F.4/F.5.
    Sgd,
    /// AdamW with trainable LayerNorm parameters, Fig. 5 center-left, F.2.
    Adam,
    /// AdamW with every LayerNorm gain and bias frozen at 1 and 0, Fig. 5 center-right, F.3.
    AdamFrozenLn,
    /// SGD as in [`GptLrSetting::Sgd`] under MSE loss, F.8.
    Mse,
}

impl GptLrSetting {
    pub const ALL: [GptLrSetting; 4] = [GptLrSetting::Sgd, GptLrSetting::Adam, GptLrSetting::AdamFrozenLn, GptLrSetting::Mse];

    /// Short name (store and sweep names, table rows).
    pub fn name(self) -> &'static str {
        match self {
            GptLrSetting::Sgd => "sgd",
            GptLrSetting::Adam => "adam",
            GptLrSetting::AdamFrozenLn => "adam-frozen-ln",
            GptLrSetting::Mse => "sgd-mse",
        }
    }

    /// The clean width exponent the paper reports for both the optimal and the max-stable
    /// learning rate (section 5.1 and the captions of Fig. 5 and F.2-F.8; the paper gives
    /// these as clean exponents, not as fitted numbers): SGD `-1/2`, Adam with trainable
    /// LayerNorm `-1/2`, Adam with frozen LayerNorm `-1`, MSE `-1` (F.8 states it for the
    /// optimal learning rate; the theory predicts it for the max-stable one).
    pub fn paper_exponent(self) -> f64 {
        match self {
            GptLrSetting::Sgd | GptLrSetting::Adam => -0.5,
            GptLrSetting::AdamFrozenLn | GptLrSetting::Mse => -1.0,
        }
    }
}

impl std::fmt::Display for GptLrSetting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The GPT of section 5.1 in one setting at a profile (learning rate unset). The optimizer
/// settings are the authors' (`sbordt/litgpt`, `pretrain-experiment.py`): AdamW with betas
/// (0.9, 0.95), eps 1e-12, weight decay 0.1; SGD without momentum and weight decay; gradient
/// clipping at 1 and warmup then cosine decay to 10% for both.
/// - `paper`: 6 blocks, sequence length 512, batch 256, 10681 steps with 700 warmup steps
///   (appendix D.3; DCLM-Baseline there, Shakespeare here).
/// - `quick`: 2 blocks, sequence length 32, batch 8, 64 steps (10% warmup): one to two
///   seconds per run at width 128 on one core, so four settings x 3 widths fit in minutes.
/// - `smoke`: 1 block, sequence length 16, batch 4, 8 steps.
///
/// The head dimension stays 32 (heads proportional to width) and the vocabulary is the
/// 8192-token BPE, much larger than every width (the `d_out >> n` regime of language).
pub fn gpt_lr_exponents_base(profile: Profile, setting: GptLrSetting) -> GptTrainConfig {
    let (depth, seq_len, batch_size, steps, warmup_frac) = match profile {
        Profile::Smoke => (1, 16, 4, 8, 0.1),
        Profile::Quick => (2, 32, 8, 64, 0.1),
        Profile::Paper => (6, 512, 256, 10_681, 700.0 / 10_681.0),
    };
    let mut c = GptTrainConfig { batch_size, steps, warmup_frac: Some(warmup_frac), ..GptTrainConfig::default() };
    c.model.depth = depth;
    c.data.seq_len = seq_len;
    c.eval.batches = if profile == Profile::Paper { 16 } else { 2 };
    match setting {
        GptLrSetting::Sgd | GptLrSetting::Mse => {
            c.optim.kind = OptimizerKind::Sgd;
            c.optim.weight_decay = 0.0;
        }
        GptLrSetting::Adam => {}
        GptLrSetting::AdamFrozenLn => c.model.train_norms = false,
    }
    if setting == GptLrSetting::Mse {
        c.loss = Loss::new(LossKind::Mse);
    }
    c
}

/// Widths, seeds and learning rates of a setting at a profile. The learning-rate ranges are
/// meant to cover the optimum and the first unstable point at every quick width; they were
/// chosen from a calibration sweep at widths 32 and 128 with the quick settings: SGD optimum
/// near 4, first unstable lr 16-32; Adam optimum 2^-7..2^-4 with losses rising slowly above
/// it (no unstable lr up to 1 at width 32); MSE (mean over tokens and the 8192 classes, so
/// gradients are 8192 times smaller than for a summed loss) optimum 16-32, blow-up between
/// 2^7 and 2^12. `paper` extends the ranges by two octaves downwards for the larger widths.
/// The paper averages SGD over 3 seeds and runs Adam once (appendix D.4).
pub fn gpt_lr_exponents_grid(profile: Profile, setting: GptLrSetting) -> (Vec<i64>, Vec<u64>, Vec<f64>) {
    let (lo, hi) = match setting {
        GptLrSetting::Sgd => (-1.0, 6.0),
        GptLrSetting::Adam | GptLrSetting::AdamFrozenLn => (-9.0, 3.0),
        GptLrSetting::Mse => (0.0, 12.0),
    };
    let sgd = matches!(setting, GptLrSetting::Sgd | GptLrSetting::Mse);
    match profile {
        // every other octave: the top of SGD's range must be reached for a first unstable rate
        Profile::Smoke => (vec![32, 64], vec![0], log2_grid(lo, hi, 1).into_iter().step_by(2).collect()),
        Profile::Quick => (vec![32, 64, 128], vec![0], log2_grid(lo, hi, 1)),
        Profile::Paper => (vec![256, 512, 1024, 2048, 4096], if sgd { vec![0, 1, 2] } else { vec![0] }, log2_grid(lo - 2.0, hi, 2)),
    }
}

/// The section 5.1 GPT sweep of one setting: widths x seeds x learning rates, stored under
/// the name `06_gpt_lr_exponents_<setting>_<profile>`.
pub fn gpt_lr_exponents(profile: Profile, setting: GptLrSetting) -> Result<SweepSpec> {
    let (widths, seeds, lrs) = gpt_lr_exponents_grid(profile, setting);
    SweepSpec::gpt(&format!("06_gpt_lr_exponents_{setting}_{profile}"), &gpt_lr_exponents_base(profile, setting))?.axis("width", widths)?.axis("seed", seeds)?.axis("lr", lrs)
}

/// The paper's analysis of a GPT sweep (Fig. 5, appendix D.4): the optimum minimises the
/// final training loss, a run is unstable if its training loss is worse than the width's
/// optimal loss + 1 (or it diverged). The analysis is labelled with the setting's name.
pub fn gpt_lr_exponents_analysis(setting: GptLrSetting, records: &[super::RunRecord]) -> Result<LrAnalysis> {
    let mut a = super::analysis::analyse(records, Objective::TrainLoss, Some(Instability::LossAbove(1.0)))?;
    if a.len() != 1 {
        return Err(crate::Error::config(format!("GPT sweep `{setting}`: expected one setting in the records, found {}", a.len())));
    }
    let mut a = a.remove(0);
    a.label = setting.name().to_string();
    Ok(a)
}

/// The optimal and max-stable rows of each analysed setting next to the paper's clean exponent.
pub fn gpt_lr_exponent_rows(analyses: &[(GptLrSetting, &LrAnalysis)]) -> Vec<ExponentRow> {
    analyses
        .iter()
        .flat_map(|(s, a)| {
            [("max-stable", a.max_stable_fit), ("optimal", a.optimal_fit)].map(|(what, fit)| ExponentRow { row: format!("{s} {what}"), fit, paper: Some(s.paper_exponent()) })
        })
        .collect()
}

// ---- Section 5.2 (notebook 07): SP-full-align, MUSOLI and the proposed last-layer init ----
//
// `sp_full_align_search` (Fig. 6, F.12, F.33-F.35 on Fashion-MNIST): learning-rate searches
// on the 8-layer SGD MLP of `mlp_base` (`n >> d_out = 10`) in SP-full-align, MUSOLI and
// SP-full-align with the proposed last-layer init; `sp_full_align_gpt`: the GPT on Shakespeare (`d_out = 8192 >> n`) with AdamW
// in SP-full-align and with the proposed init; `sp_full_align_mlp_check` /
// `sp_full_align_gpt_check`, `musoli_first_step_check`: refined coordinate checks (Fig.
// F.31/F.32, E.17) for the readout's propagating and effective updates; `sp_full_align_op_norm_grid`: widths and output
// dimensions of the `||W_0||_op ~ 1 + sqrt(n/d_out)` table (`crate::theory::readout`).
// (Paths are written out in this block instead of `use`d, so that parallel additions to the
// imports at the top cannot clash with it.)

/// Parameterizations of 07's MLP searches: SP-full-align and MUSOLI (standard last-layer
/// init) and the proposed last-layer init with the SGD rates F.7 derives from it.
pub const SP_FULL_ALIGN_MLP_PARAMS: [&str; 3] = ["sp-full-align", "musoli", "sp-full-align-proposed-init"];
/// Parameterizations of 07's GPT sweep (MUSOLI's larger readout rate matters once logits
/// blow up, which they do not at `d_out >> n`).
pub const SP_FULL_ALIGN_GPT_PARAMS: [&str; 2] = ["sp-full-align", "sp-full-align-proposed-init"];

/// Statistical design of 07's MLP learning-rate searches (Fig. 6, F.12, F.33-F.35, Table F.1
/// row "SP-full-align"), one search per parameterization of [`SP_FULL_ALIGN_MLP_PARAMS`].
///
/// Widths and seeds are section 5.1's ([`lr_search_design`]: `quick` 32..512, 16x over 5
/// widths, 3 seeds; the paper 256..16384, 4 seeds), and so is the training ([`mlp_base`]:
/// 8-layer ReLU MLP, SGD, CE, batch 64, one epoch; `quick` trains on a 4096-image
/// Fashion-MNIST subset, 64 steps, where the paper trains 938 steps on all 60k images). Each
/// exponent is a regression over every seed at every width, its interval widened by the
/// search's resolution (1/8 octave). What is searched follows the claims: SP-full-align both
/// (Table F.1: max-stable `0`, optimal `-0.35`), MUSOLI the max-stable learning rate
/// (F.33/F.34: width-independent), the proposed init the optimum (does it transfer?).
/// Per-layer rules are in absolute `n` (the paper's convention, `base_width = 1`): at width 256
/// SP-full-align's input rate is `16 eta`, its hidden rates `eta/16` and its readout rate
/// `eta/256`, so the initial brackets sit above SP's (`2^-2.25` at 256); they extend
/// themselves when the guess is wrong. `smoke` takes widths 64 and 128: in 8 steps an 8-layer
/// SP-full-align MLP of width 32 stays at chance at every learning rate, so it has no
/// stable learning rate to find.
pub fn sp_full_align_search(profile: Profile, param: &str) -> Result<super::search::SearchSpec> {
    use super::search::Find;
    let (find, bracket) = match param {
        "sp-full-align" => (Find::Both, [-1.0, 2.0]),
        "musoli" => (Find::MaxStable, [-1.0, 2.0]),
        "sp-full-align-proposed-init" => (Find::Optimal, [-2.0, 1.0]),
        _ => return Err(crate::Error::config(format!("07's MLP searches are for {}, not `{param}`", SP_FULL_ALIGN_MLP_PARAMS.join(", ")))),
    };
    let (mut widths, seeds) = lr_search_design(profile)?;
    if profile == Profile::Smoke {
        widths = vec![64, 128];
    }
    let grid = SweepSpec::mlp(&format!("07_sp_full_align_search_{param}_{profile}"), &mlp_base(profile, LossKind::Ce))?
        .axis("param", [param])?
        .axis("width", widths)?
        .axis("seed", seeds)?;
    Ok(super::search::SearchSpec::from_grid(&grid, search_params(profile, find, bracket, 0.0)))
}

/// The GPT of 07 (learning rate unset): AdamW with the paper's settings
/// ([`crate::train::gpt::GptTrainConfig::default`]), Shakespeare with the 8192-token BPE, so `d_out = 8192`.
/// `quick`: 2 blocks, 40 steps of 8 x 32 tokens (a CPU budget; the paper trains 6 blocks for
/// 10681 steps on DCLM); `paper`: 6 blocks, 2000 steps of 256 x 512 tokens; `smoke`: a generated
/// corpus with a 400-token vocabulary (structure only). Per-layer rules relative to the base
/// width 256 (`base_width`), as the authors' GPT code and the `e18` check: at 256 SP-full-align
/// uses one learning rate for every layer, so `eta` is comparable across the widths' curves.
pub fn sp_full_align_gpt_base(profile: Profile) -> crate::train::gpt::GptTrainConfig {
    let (depth, seq_len, batch, steps, eval) = match profile {
        Profile::Smoke => (2, 16, 4, 4, 1),
        Profile::Quick => (2, 32, 8, 40, 2),
        Profile::Paper => (6, 512, 256, 2000, 8),
    };
    let mut c = crate::train::gpt::GptTrainConfig {
        model: crate::model::GptConfig { depth, ..crate::model::GptConfig::default() },
        param: ParamSpec::Name("sp-full-align".into()),
        base_width: Some(256.0),
        batch_size: batch,
        steps,
        eval: crate::train::gpt::GptEvalConfig { every: 0, batches: eval },
        ..crate::train::gpt::GptTrainConfig::default()
    };
    c.data.seq_len = seq_len;
    if profile == Profile::Smoke {
        // smoke checks the code path only: a small generated corpus and vocabulary, because
        // every sweep run loads and tokenizes its corpus (Shakespeare: seconds per run)
        c.data.source = crate::data::text::TextSource::Generated { chars: 30_000 };
        c.data.vocab_size = 400;
    }
    c
}

/// Widths, seeds and base learning rates of 07's GPT grids (Everett et al.'s transfer of
/// SP-full-align on language data, section 5.2; the proposed init's transfer, left open by the
/// paper).
///
/// Statistical design: widths spanning 8x (`quick` 32..256, 4 widths; the paper's 256..4096),
/// 3 seeds, the optimum of every seed located on the grid and refined by the parabola through
/// its neighbours; the exponent is a regression over every seed at every width, its interval
/// widened by the grid's resolution ([`crate::fit::resolution_bound`] with half a grid step).
/// The optimum is the final validation loss's; the paper's loss-above rule (relative to the
/// width's optimum) needs a grid, which is why these are grids and not searches. At `quick`
/// the grid has one point per octave (a half-step bound of `+-0.4` on the exponent over 8x)
/// and 40 steps of a 2-block model: an optimum mostly reflecting the first phase of training,
/// which cannot decide between `0` and `-1/2`. A `paper` run (half-octave grid, 2000 steps,
/// 6 blocks, widths to 4096) can. The `quick` range `2^-10..2^-5` brackets the optima measured
/// with `2^-8..2^-4` (about `2^-7` at width 32, at or below `2^-8` at 256, where that grid's
/// lowest point was the optimum).
pub fn sp_full_align_gpt_grid(profile: Profile) -> Result<(Vec<i64>, Vec<u64>, Vec<f64>)> {
    Ok(match profile {
        Profile::Smoke => (vec![32, 64], crate::profile::seeds(1)?, log2_grid(-9.0, -2.0, 1).into_iter().step_by(4).collect()),
        Profile::Quick => (vec![32, 64, 128, 256], crate::profile::seeds(3)?, log2_grid(-10.0, -5.0, 1)),
        Profile::Paper => (vec![256, 512, 1024, 2048, 4096], crate::profile::seeds(3)?, log2_grid(-13.0, -4.0, 2)),
    })
}

/// Half a step of [`sp_full_align_gpt_grid`]'s learning rates in octaves (the resolution an
/// optimum on the grid is known to).
pub fn sp_full_align_gpt_half_step(profile: Profile) -> Result<f64> {
    let lrs = sp_full_align_gpt_grid(profile)?.2;
    Ok(lrs.windows(2).map(|w| (w[1] / w[0]).log2()).fold(0.0, f64::max) / 2.0)
}

/// Section 5.2 on language data: the GPT of [`sp_full_align_gpt_base`] with the
/// parameterizations of [`SP_FULL_ALIGN_GPT_PARAMS`] as an axis.
pub fn sp_full_align_gpt(profile: Profile) -> Result<SweepSpec> {
    let (widths, seeds, lrs) = sp_full_align_gpt_grid(profile)?;
    SweepSpec::gpt(&format!("07_sp_full_align_gpt_{profile}"), &sp_full_align_gpt_base(profile))?
        .axis("param", SP_FULL_ALIGN_GPT_PARAMS)?
        .axis("width", widths)?
        .axis("seed", seeds)?
        .axis("lr", lrs)
}

/// Fig. F.31/F.32 on Fashion-MNIST: the coordinate check `e7` (3-layer MLP, SGD, CE,
/// `eta = 0.03`, 10 steps; `quick`: widths 64..1024, 16x over 5 widths, 3 seeds) in `param`.
/// SP-full-align is predicted to update every layer width-independently while the readout's
/// propagating update `W_0 Delta x` grows as `n^1/2` (`crate::theory::predict`); with the
/// proposed last-layer init (muP-like at `n >> d_out = 10`) it stays width-independent.
pub fn sp_full_align_mlp_check(profile: Profile, param: &str) -> Result<crate::rcc::CoordCheck> {
    crate::param::Parameterization::builtin(param)?;
    let mut cc = crate::rcc::CoordCheck::preset("e7", profile)?;
    cc.name = format!("07_{param}");
    cc.train.param = ParamSpec::Name(param.into());
    Ok(cc)
}

/// MUSOLI's readout effective update `Delta W x` at the first step (F.7: `n^1/2`, raised from
/// SP-full-align's `n^0` by the readout rate `n^-1/2`): the check of
/// [`sp_full_align_mlp_check`] for one step at the small learning rate `eta = 1e-3`. Later
/// steps are not the claim's: under CE the readout's gradient shrinks as the logits grow
/// through `W_0 Delta x`, so by step 10 the measured exponent has decayed towards 0.
pub fn musoli_first_step_check(profile: Profile) -> Result<crate::rcc::CoordCheck> {
    let mut cc = sp_full_align_mlp_check(profile, "musoli")?;
    cc.name = "07_musoli_first_step".into();
    cc.train.lr = 1e-3;
    cc.steps = 1;
    cc.train.steps = Some(1);
    Ok(cc)
}

/// Fig. E.17 at 07's GPT scale: the `e18` GPT check (SP-full-align, AdamW, `eta = 0.00316`,
/// base width 256) on the model, data, widths and seeds of [`sp_full_align_gpt`] (8x, 3 seeds
/// at `quick`), measured at four steps.
pub fn sp_full_align_gpt_check(profile: Profile) -> Result<crate::rcc::gpt::GptCheck> {
    let mut cc = crate::rcc::gpt::GptCheck::preset("e18", profile)?;
    let base = sp_full_align_gpt_base(profile);
    cc.name = "07_sp_full_align_gpt".into();
    cc.train = crate::train::gpt::GptTrainConfig { param: cc.train.param.clone(), alpha: cc.train.alpha, lr: cc.train.lr, device: cc.train.device, ..base };
    (cc.widths, cc.seeds, _) = sp_full_align_gpt_grid(profile)?;
    cc.steps = cc.train.steps;
    let t = cc.steps;
    let mut at = vec![1, 2, t / 4, t];
    at.retain(|&s| s >= 1);
    at.dedup();
    cc.monitor.schedule = crate::rcc::StepSchedule::List { steps: at };
    Ok(cc)
}

/// Widths, output dimensions and seeds of the readout operator-norm measurement (section
/// 5.2): from `d_out >> n` (language) to `n >> d_out` (image classifiers), each regime
/// ([`crate::theory::readout::Regime`]) with several widths, 3 seeds at `quick`.
pub fn sp_full_align_op_norm_grid(profile: Profile) -> Result<(Vec<i64>, Vec<i64>, Vec<u64>)> {
    Ok(match profile {
        Profile::Smoke => (vec![32, 64, 512, 1024], vec![10, 2048], crate::profile::seeds(1)?),
        Profile::Quick => (vec![32, 64, 256, 1024, 2048], vec![10, 100, 1000, 8192], crate::profile::seeds(3)?),
        Profile::Paper => (vec![256, 1024, 4096, 16384], vec![10, 100, 1000, 8192, 50304], crate::profile::seeds(4)?),
    })
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
        }
        assert_eq!(paper_exponent("CE max-stable"), Some(-0.7));
        assert_eq!(paper_exponent("nope"), None);
        let fit = crate::fit::fit_power_law(&[64.0, 128.0, 256.0], &[1.0, 0.7, 0.5]).unwrap();
        let t = format_table_f1(&[ExponentRow { row: "CE max-stable".into(), fit: Some(fit), paper: Some(-0.7) }, ExponentRow { row: "MSE optimal".into(), fit: None, paper: Some(-0.83) }]);
        assert!(t.contains("CE max-stable") && t.contains("-0.50") && t.contains("-0.70") && t.contains("n/a"), "{t}");
    }

    #[test]
    fn ce_vs_mse_and_shallow_searches_follow_their_designs() {
        use crate::sweep::search::Find;
        for profile in [Profile::Smoke, Profile::Quick, Profile::Paper] {
            let mut keys = std::collections::HashSet::new();
            let mut check = |s: &crate::sweep::search::SearchSpec, widths: &[i64], seeds: &[u64]| {
                s.validate().unwrap();
                let mse_edge = s.search.find == Find::MaxStable && s.base["loss"]["kind"] == "mse";
                assert_eq!(s.search.instability, Some(if mse_edge { Instability::Nan } else { Instability::NearChance }), "{}", s.name);
                let pts = s.grid_spec().points().unwrap();
                assert_eq!(pts.len(), widths.len() * seeds.len(), "{}", s.name);
                // every search trains its own runs (no two presets share a key)
                assert!(pts.iter().all(|p| keys.insert(p.key.clone())), "{}", s.name);
                if profile == Profile::Quick {
                    // issue 17: >= 3 seeds, >= 5 widths spanning >= 16x
                    assert!(seeds.len() >= 3 && widths.len() >= 5 && widths[widths.len() - 1] >= 16 * widths[0]);
                }
                pts
            };
            let (w, seeds) = ce_vs_mse_design(profile).unwrap();
            for dataset in [DatasetName::FashionMnist, DatasetName::Teacher] {
                for param in ["sp", "mup"] {
                    for loss in [LossKind::Ce, LossKind::Mse] {
                        let s = ce_vs_mse_search(profile, dataset, param, loss).unwrap();
                        assert_eq!(s.search.find, Find::Optimal);
                        let pts = check(&s, &w, &seeds);
                        for p in &pts {
                            let c = &p.config;
                            assert_eq!((c["param"].as_str(), c["loss"]["kind"].as_str(), c["model"]["depth"].as_i64()), (Some(param), Some(loss.to_string().as_str()), Some(8)));
                            assert_eq!(c["optim"]["kind"], "sgd");
                            if dataset == DatasetName::Teacher {
                                assert_eq!((c["model"]["d_in"].as_i64(), c["model"]["d_out"].as_i64()), (Some(100), Some(2)));
                                let n = if profile == Profile::Smoke { 2_048 } else { 10_000 };
                                assert_eq!(c["data"]["teacher"]["n_train"].as_i64(), Some(n));
                            } else {
                                assert_eq!(c["data"]["dataset"], "fashion-mnist");
                            }
                        }
                    }
                }
            }
            for param in ["sp", "mup"] {
                for loss in [LossKind::Ce, LossKind::Mse] {
                    let pts = check(&ce_vs_mse_adam_search(profile, param, loss).unwrap(), &w, &seeds);
                    assert!(pts.iter().all(|p| p.config["optim"]["kind"] == "adam" && p.config["data"]["dataset"] == "fashion-mnist"));
                }
            }
            assert!(ce_vs_mse_search(profile, DatasetName::FashionMnist, "nope", LossKind::Ce).is_err());
            for which in ShallowSearch::ALL {
                let s = shallow_search(profile, which).unwrap();
                let (w, seeds) = shallow_search_design(profile, which.depth()).unwrap();
                assert_eq!(s.search.find.optimal(), matches!(which, ShallowSearch::Ce2 | ShallowSearch::MseSoftmax2));
                for p in check(&s, &w, &seeds) {
                    let c = &p.config;
                    assert_eq!(c["model"]["depth"].as_u64(), Some(which.depth() as u64));
                    assert_eq!(c["model"]["logit_norm"], which == ShallowSearch::MseFmnist3LogitNorm);
                    assert_eq!(c["loss"]["kind"], which.loss().to_string());
                    let fmnist = matches!(which, ShallowSearch::MseFmnist3 | ShallowSearch::MseFmnist3LogitNorm);
                    assert_eq!((c["data"]["dataset"].as_str(), c["param"].as_str()), (Some(if fmnist { "fashion-mnist" } else { "teacher" }), Some("sp")));
                }
            }
        }
    }

    /// A searched setting with one width's max-stable results and optimum, for the helpers.
    fn searched(width: f64, first_unstable: &[(u64, Option<f64>, Option<f64>)], at_best: &[(u64, f64)]) -> crate::sweep::search::SettingSearch {
        use crate::sweep::search::{Edge, MaxStable, Optimum, Probe, SeedOptimum, SettingSearch, WidthSearch};
        let probe = |m: i64, seed: u64, value: f64| Probe { m, lr: crate::sweep::pow2_lattice(m), seed, unstable: false, value, key: String::new() };
        // the best point of the seed-averaged curve is m = 0; other seeds' values elsewhere
        let mut probes: Vec<Probe> = at_best.iter().map(|&(s, v)| probe(0, s, v)).collect();
        probes.extend(at_best.iter().map(|&(s, v)| probe(-32, s, v + 0.5)));
        let mean = SeedOptimum { seed: None, lr: 1.0, value: 0.0, best_m: 0, resolution: 0.25, bracketed: true };
        let max_stable = first_unstable
            .iter()
            .map(|&(seed, last_stable, first_unstable)| MaxStable {
                seed,
                edge: if first_unstable.is_some() { Edge::Bracketed } else { Edge::NoUnstable },
                last_stable,
                first_unstable,
                last_stable_m: None,
                first_unstable_m: None,
                probes: vec![],
                violations: vec![],
            })
            .collect();
        let small = WidthSearch { width: width / 2.0, complete: true, max_stable: vec![], optimum: None };
        let w = WidthSearch { width, complete: true, max_stable, optimum: Some(Optimum { curve: vec![], mean, per_seed: vec![], top_unstable: true, probes }) };
        SettingSearch {
            label: String::new(),
            coords: Default::default(),
            instability: Instability::NearChance,
            widths: vec![small, w],
            max_stable_fit: None,
            optimal_fit: None,
            optimal_mean_fit: None,
            lr: LrAnalysis { label: String::new(), coords: Default::default(), objective: Objective::TrainAcc, instability: Instability::NearChance, widths: vec![], optimal_fit: None, max_stable_fit: None },
        }
    }

    #[test]
    fn optimal_gaps_pair_seeds_at_the_seed_averaged_optimum() {
        let ce = searched(512.0, &[], &[(0, 0.9), (1, 0.8), (2, 0.85)]);
        let mse = searched(512.0, &[], &[(0, 0.7), (1, 0.7), (2, 0.6), (3, 0.1)]);
        let g = optimal_gap(&ce, &mse).unwrap();
        // seed 3 has no CE run; values at m = -32 (not the seed-averaged optimum) are ignored
        assert_eq!(g.width, 512.0);
        assert_eq!(g.per_seed.iter().map(|s| s.0).collect::<Vec<_>>(), [0, 1, 2]);
        let e = g.estimate();
        // gaps 0.2, 0.1, 0.25: mean 0.55/3, t(2) = 4.303 times the standard error
        let m = 0.55 / 3.0;
        assert!((e.value - m).abs() < 1e-12, "{e:?}");
        let sd = (([0.2, 0.1, 0.25f64].iter().map(|g| (g - m).powi(2)).sum::<f64>()) / 2.0).sqrt();
        let half = 4.302_652_729_911_275 * sd / 3f64.sqrt();
        assert!((e.high - e.value - half).abs() < 1e-3, "{e:?} {half}");
        let small = OptimalGap { width: 512.0, per_seed: vec![(0, -0.05), (1, 0.05), (2, 0.0)] };
        let d = g.abs_excess(&small);
        assert!((d.value - (0.15 + 0.05 + 0.25) / 3.0).abs() < 1e-12, "{d:?}");
        // no shared width with an optimum: no gap
        let other = searched(1024.0, &[], &[(0, 0.5)]);
        assert!(optimal_gap(&ce, &other).is_none());
    }

    #[test]
    fn max_stable_shift_is_the_per_seed_log2_difference_widened_by_the_resolution() {
        let off = searched(512.0, &[(0, Some(0.5), Some(1.0)), (1, Some(1.0), Some(2.0)), (2, None, None)], &[]);
        // seed 1 of `on` never became unstable: its last stable rate 2^5 is a lower bound
        let on = searched(512.0, &[(0, Some(4.0), Some(8.0)), (1, Some(32.0), None), (2, Some(1.0), Some(2.0))], &[]);
        let e = max_stable_shift(&off, &on, 0.125).unwrap();
        // seeds 0 and 1: 3 and 4 octaves (seed 2 has no edge without LayerNorm)
        assert!((e.value - 3.5).abs() < 1e-12, "{e:?}");
        let half = 12.706_204_736_174_7 * 0.5f64.sqrt() / 2f64.sqrt() + 0.125;
        assert!((e.high - 3.5 - half).abs() < 1e-3 && (3.5 - e.low - half).abs() < 1e-3, "{e:?}");
        assert!(e.method.contains("resolution"));
    }

    /// Issue 16, defect 4: with 1,024 teacher points (16 SGD steps) the input layer of a 2-layer
    /// SP net barely moves; with [`teacher_data`]'s 10,000 points (157 steps) it learns. At
    /// width 256, CE, `lr = 1` (stable at every width: the 2-layer CE rate transfers at `n^0`),
    /// after one epoch, the relative change `||W_1 - W_1(0)||_F / ||W_1(0)||_F` of the input
    /// layer's columns of the two signal coordinates (the teacher depends on `xi_1, xi_2` only;
    /// the other 98 columns see isotropic noise) is above 0.1 with 10k points and below 0.05
    /// with 1k (measured: 0.20 and 0.025; over all columns 0.054 and 0.016).
    #[test]
    fn teacher_input_layer_learns_with_10k_points() {
        use crate::model::Model;
        let input_change = |n_train: usize| {
            let mut c = ce_vs_mse_base(Profile::Quick, DatasetName::Teacher);
            c.model.depth = 2;
            c.model.width = 256;
            c.lr = 1.0;
            c.threads = Some(1);
            c.data.teacher.n_train = n_train;
            c.data.teacher.n_test = 64;
            let mut t = crate::train::Trainer::new(&c).unwrap();
            let w0 = t.model.params().iter().find(|p| p.name == "layers.0.weight").unwrap().tensor.detach().copy();
            for _ in 0..t.total_steps() {
                t.step().unwrap();
            }
            let w = &t.model.params().iter().find(|p| p.name == "layers.0.weight").unwrap().tensor;
            let signal = |m: &tch::Tensor| m.narrow(1, 0, 2);
            ((w - &w0).norm().double_value(&[]) / w0.norm().double_value(&[]), (signal(w) - signal(&w0)).norm().double_value(&[]) / signal(&w0).norm().double_value(&[]))
        };
        let (small, large) = (input_change(1_024), input_change(10_000));
        assert!(large.1 > 0.1 && small.1 < 0.05, "relative change of W_1 (all, signal columns): {small:.3?} with 1k points, {large:.3?} with 10k");
    }

    #[test]
    fn gpt_lr_exponents_presets_follow_the_paper_settings() {
        for profile in [Profile::Smoke, Profile::Quick, Profile::Paper] {
            let mut all_keys = std::collections::HashSet::new();
            for setting in GptLrSetting::ALL {
                let spec = gpt_lr_exponents(profile, setting).unwrap();
                assert_eq!(spec.kind, super::super::RunKind::Gpt);
                assert!(spec.name.contains(setting.name()) && spec.name.ends_with(&profile.to_string()), "{}", spec.name);
                let pts = spec.points().unwrap();
                let (w, seeds, lrs) = gpt_lr_exponents_grid(profile, setting);
                assert_eq!(pts.len(), w.len() * seeds.len() * lrs.len());
                // widths span a factor >= 4 and stay far below the vocabulary (d_out >> n)
                assert!(w[w.len() - 1] >= 4 * w[0] || profile == Profile::Smoke);
                for p in &pts {
                    let c = &p.config;
                    assert_eq!(c["model"]["vocab_size"], 8192);
                    // vocabulary >> width at the CPU profiles (the paper: 50k tokens, widths <= 4096)
                    assert!(profile == Profile::Paper || c["model"]["width"].as_i64().unwrap() * 32 <= 8192);
                    assert_eq!(c["model"]["head_dim"], 32);
                    assert_eq!(c["optim"]["grad_clip"], 1.0);
                    assert_eq!(c["model"]["train_norms"], setting != GptLrSetting::AdamFrozenLn);
                    assert_eq!(c["loss"]["kind"], if setting == GptLrSetting::Mse { "mse" } else { "ce" });
                    let sgd = matches!(setting, GptLrSetting::Sgd | GptLrSetting::Mse);
                    assert_eq!(c["optim"]["kind"], if sgd { "sgd" } else { "adam-w" });
                    if sgd {
                        assert_eq!((c["optim"]["weight_decay"].as_f64(), c["optim"]["momentum"].as_f64()), (Some(0.0), Some(0.0)));
                    } else {
                        assert_eq!((c["optim"]["beta2"].as_f64(), c["optim"]["eps"].as_f64(), c["optim"]["weight_decay"].as_f64()), (Some(0.95), Some(1e-12), Some(0.1)));
                    }
                    // the four settings never share a run
                    assert!(all_keys.insert(p.key.clone()));
                }
            }
        }
        let paper = gpt_lr_exponents_base(Profile::Paper, GptLrSetting::Adam);
        assert_eq!((paper.model.depth, paper.data.seq_len, paper.batch_size, paper.steps), (6, 512, 256, 10_681));
        assert_eq!(paper.optim_config().schedule, crate::optim::Schedule::WarmupCosine { warmup: 700, total: 10_681, final_frac: 0.1 });
        assert_eq!(gpt_lr_exponents_grid(Profile::Paper, GptLrSetting::Sgd).1.len(), 3);
        assert_eq!(GptLrSetting::ALL.map(|s| s.paper_exponent()), [-0.5, -0.5, -1.0, -1.0]);
        // Rows: max-stable and optimal per setting, each with the paper's clean exponent.
        let fit = crate::fit::fit_power_law(&[32.0, 64.0, 128.0], &[1.0, 0.5, 0.25]).unwrap();
        let a = LrAnalysis {
            label: "x".into(),
            coords: Default::default(),
            objective: Objective::TrainLoss,
            instability: Instability::LossAbove(1.0),
            widths: vec![],
            optimal_fit: Some(fit),
            max_stable_fit: None,
        };
        let rows = gpt_lr_exponent_rows(&[(GptLrSetting::AdamFrozenLn, &a)]);
        assert_eq!(rows.iter().map(|r| r.row.as_str()).collect::<Vec<_>>(), ["adam-frozen-ln max-stable", "adam-frozen-ln optimal"]);
        assert_eq!((rows[0].fit, rows[1].paper), (None, Some(-1.0)));
        assert!((rows[1].fit.unwrap().exponent + 1.0).abs() < 1e-9);
    }

    #[test]
    fn sp_full_align_presets() {
        use crate::sweep::search::Find;
        for profile in [Profile::Smoke, Profile::Quick, Profile::Paper] {
            let (mut widths, seeds) = lr_search_design(profile).unwrap();
            if profile == Profile::Smoke {
                widths = vec![64, 128];
            }
            for (p, find) in SP_FULL_ALIGN_MLP_PARAMS.into_iter().zip([Find::Both, Find::MaxStable, Find::Optimal]) {
                let s = sp_full_align_search(profile, p).unwrap();
                s.validate().unwrap();
                assert_eq!((s.search.find, s.search.resolution), (find, if profile == Profile::Smoke { 0.5 } else { 0.125 }));
                let c = s.grid_spec().points().unwrap();
                let mut w: Vec<i64> = c.iter().map(|x| x.config["model"]["width"].as_i64().unwrap()).collect();
                w.dedup();
                w.sort();
                w.dedup();
                assert_eq!((w, c.len()), (widths.clone(), widths.len() * seeds.len()));
                assert!(c.iter().all(|x| x.config["param"] == p && x.config["model"]["depth"] == 8 && x.config["optim"]["kind"] == "sgd" && x.config["loss"]["kind"] == "ce"));
            }
            let (w, seeds, lrs) = sp_full_align_gpt_grid(profile).unwrap();
            assert!(w[w.len() - 1] >= 8 * w[0] || profile == Profile::Smoke);
            assert!(seeds.len() >= 3 || profile == Profile::Smoke);
            let g = sp_full_align_gpt(profile).unwrap().points().unwrap();
            assert!(g.iter().all(|x| x.config["base_width"] == 256.0));
            assert_eq!(g.len(), SP_FULL_ALIGN_GPT_PARAMS.len() * w.len() * seeds.len() * lrs.len());
            // the language regime: vocabulary above every width (32x at quick, 2x at paper widths, 4x at smoke)
            let k = match profile {
                Profile::Smoke => 4,
                Profile::Quick => 32,
                Profile::Paper => 2,
            };
            assert!(g.iter().all(|x| x.config["model"]["vocab_size"].as_i64().unwrap() >= k * w.iter().max().unwrap()));
            let cc = sp_full_align_mlp_check(profile, "musoli").unwrap();
            cc.validate().unwrap();
            assert_eq!(cc.train.param, ParamSpec::Name("musoli".into()));
            let gc = sp_full_align_gpt_check(profile).unwrap();
            gc.validate().unwrap();
            assert_eq!((gc.widths.clone(), gc.seeds.clone(), gc.steps, gc.train.model.depth), (w, seeds, sp_full_align_gpt_base(profile).steps, sp_full_align_gpt_base(profile).model.depth));
            assert_eq!((gc.train.param.clone(), gc.train.base_width), (ParamSpec::Name("sp-full-align".into()), Some(256.0)));
            let m = musoli_first_step_check(profile).unwrap();
            m.validate().unwrap();
            assert_eq!((m.steps, m.train.lr, m.widths.clone()), (1, 1e-3, cc.widths.clone()));
            let crate::rcc::StepSchedule::List { steps } = &gc.monitor.schedule else { panic!("schedule") };
            assert_eq!(steps.last(), Some(&gc.steps));
            // both regimes, each at two or more widths
            let (ns, ds, _) = sp_full_align_op_norm_grid(profile).unwrap();
            for r in [crate::theory::readout::Regime::LargeOutput, crate::theory::readout::Regime::LargeWidth] {
                let at: std::collections::BTreeSet<i64> = ns.iter().filter(|&&n| ds.iter().any(|&d| crate::theory::readout::Regime::of(n, d) == Some(r))).copied().collect();
                assert!(at.len() >= 2, "{profile}: {r:?} at {at:?}");
            }
        }
        assert_eq!(sp_full_align_gpt_half_step(Profile::Quick).unwrap(), 0.5);
        assert!(sp_full_align_mlp_check(Profile::Quick, "nope").is_err());
        assert!(sp_full_align_search(Profile::Quick, "sp").is_err());
    }
}
