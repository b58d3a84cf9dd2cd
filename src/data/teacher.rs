//! The multi-index teacher data of appendix D.2: covariates uniform on the unit sphere in
//! `R^{d_in}` (normalised Gaussians) and labels of the deterministic shallow ReLU teacher
//! `f*(xi) = sign(sum_i s_i relu(w_i . xi))` with `w = e1, e2, -e1, -e2`, `s = +1, -1, +1, -1`.
//! Since `relu(v) + relu(-v) = |v|`, the teacher is `f*(xi) = sign(|xi_1| - |xi_2|)`. The
//! paper's text (D.2) states the closed form `sign(xi_1 - xi_2)` whenever `xi_1 > 0` or
//! `xi_2 > 0`; that holds where both coordinates are positive (and its second case where both
//! are negative) but not in the mixed quadrants (e.g. `xi = (0.2, -0.5)`: the teacher gives
//! -1, the sentence +1). widthlab implements the teacher neurons as defined, as the authors'
//! code (`kunin_utils.TeacherNetwork`, `unit_teachers`) does.
//! Classes: `f* = -1` is class 0, `f* = +1` is class 1 (`f* = 0`, a measure-zero event, is
//! class 1). CE uses the classes; MSE uses their one-hot encoding like every dataset here.
use rand::Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};
use tch::Tensor;

use super::{Dataset, Splits};
use crate::rng::{self, stream};
use crate::{Error, Result};

/// Sizes of the generated data (the paper: 100, 1000, 10000).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TeacherConfig {
    pub d_in: usize,
    pub n_train: usize,
    pub n_test: usize,
}

impl Default for TeacherConfig {
    fn default() -> Self {
        TeacherConfig { d_in: 100, n_train: 1000, n_test: 10_000 }
    }
}

/// The teacher `f*(xi) in {-1, 0, +1}` (needs `xi.len() >= 2`).
pub fn teacher_label(xi: &[f64]) -> f64 {
    let relu = |v: f64| v.max(0.0);
    let s = relu(xi[0]) - relu(xi[1]) + relu(-xi[0]) - relu(-xi[1]);
    if s > 0.0 {
        1.0
    } else if s < 0.0 {
        -1.0
    } else {
        0.0
    }
}

fn sample(n: usize, d: usize, r: &mut impl Rng, name: &str) -> Result<Dataset> {
    let mut xs = crate::limits::try_vec::<f32>("teacher data", n.saturating_mul(d))?;
    let mut ys = crate::limits::try_vec::<i64>("teacher labels", n)?;
    for _ in 0..n {
        let v: Vec<f64> = (0..d).map(|_| StandardNormal.sample(r)).collect();
        let norm = v.iter().map(|a| a * a).sum::<f64>().sqrt().max(f64::MIN_POSITIVE);
        let v: Vec<f64> = v.into_iter().map(|a| a / norm).collect();
        ys.push(if teacher_label(&v) < 0.0 { 0i64 } else { 1 });
        xs.extend(v.into_iter().map(|a| a as f32));
    }
    let x = Tensor::f_from_slice(&xs)?.f_reshape([n as i64, d as i64])?;
    Ok(Dataset { x, y: Tensor::f_from_slice(&ys)?, num_classes: super::DatasetName::Teacher.num_classes(), name: name.into() })
}

/// Generates train and test sets from independent seeded streams.
pub fn generate(cfg: &TeacherConfig, seed: u64) -> Result<Splits> {
    if cfg.d_in < 2 || cfg.n_train == 0 || cfg.n_test == 0 {
        return Err(Error::config(format!("teacher data needs d_in >= 2 and n_train, n_test >= 1, got {cfg:?}")));
    }
    let data = crate::data::DataConfig { dataset: crate::data::DatasetName::Teacher, teacher: cfg.clone(), ..Default::default() };
    crate::limits::check_memory(&format!("teacher data of {} + {} points in {} dimensions", cfg.n_train, cfg.n_test, cfg.d_in), data.min_memory_bytes())?;
    let train = sample(cfg.n_train, cfg.d_in, &mut rng::rng(seed, stream::DATA), "teacher")?;
    let test = sample(cfg.n_test, cfg.d_in, &mut rng::rng(seed, stream::DATA + 1000), "teacher")?;
    Ok(Splits { train, test })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    #[test]
    fn teacher_matches_its_closed_form() {
        let mut r = rng::rng(0, stream::MISC);
        for _ in 0..10_000 {
            let (a, b): (f64, f64) = (r.random_range(-1.0..1.0), r.random_range(-1.0..1.0));
            assert_eq!(teacher_label(&[a, b, 0.3]), (a.abs() - b.abs()).signum(), "{a} {b}");
            // the paper's sentence holds where both coordinates share a sign
            if a > 0.0 && b > 0.0 {
                assert_eq!(teacher_label(&[a, b]), (a - b).signum());
            }
            if a < 0.0 && b < 0.0 {
                assert_eq!(teacher_label(&[a, b]), (b - a).signum());
            }
        }
        assert_eq!(teacher_label(&[0.5, 0.2]), 1.0);
        assert_eq!(teacher_label(&[0.2, 0.5]), -1.0);
        assert_eq!(teacher_label(&[-0.5, -0.2]), 1.0);
        assert_eq!(teacher_label(&[-0.2, -0.5]), -1.0);
        assert_eq!(teacher_label(&[0.7, -0.1]), 1.0);
        assert_eq!(teacher_label(&[0.2, -0.5]), -1.0);
    }

    #[test]
    fn points_on_the_sphere_labels_consistent_and_seeded() {
        let cfg = TeacherConfig { d_in: 100, n_train: 500, n_test: 50 };
        let s = generate(&cfg, 3).unwrap();
        let norms = s.train.x.square().sum_dim_intlist(&[1i64][..], false, Kind::Float).sqrt();
        assert!((norms - 1.0).abs().max().double_value(&[]) < 1e-5);
        for i in 0..50 {
            let row: Vec<f64> = Vec::<f32>::try_from(s.train.x.get(i)).unwrap().into_iter().map(f64::from).collect();
            let want = if teacher_label(&row) < 0.0 { 0 } else { 1 };
            assert_eq!(s.train.y.int64_value(&[i]), want);
        }
        let frac = s.train.y.to_kind(Kind::Double).mean(Kind::Double).double_value(&[]);
        assert!((frac - 0.5).abs() < 0.1, "classes roughly balanced: {frac}");
        let again = generate(&cfg, 3).unwrap();
        assert!(again.train.x.equal(&s.train.x) && again.test.y.equal(&s.test.y));
        assert!(!generate(&cfg, 4).unwrap().train.x.equal(&s.train.x));
        assert!(!s.train.x.narrow(0, 0, 50).equal(&s.test.x), "train and test streams differ");
        assert!(generate(&TeacherConfig { d_in: 1, ..cfg }, 0).is_err());
    }
}
