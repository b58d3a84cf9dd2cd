//! Seeded randomness. Every random draw in widthlab comes from a ChaCha stream derived from a
//! user seed and a purpose tag, never from libtorch's global generator: runs in parallel
//! threads stay deterministic, and the same seed gives the same weights on CPU and CUDA.
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use tch::{Device, Kind, Tensor};

use crate::{Error, Result};

/// A deterministic generator for `(seed, stream)`. Different streams of one seed are
/// independent (ChaCha's stream parameter), so initialisation, data order and probe batches
/// never share random numbers.
pub fn rng(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    r.set_stream(stream);
    r
}

/// Named streams, so that callers do not invent clashing numbers.
pub mod stream {
    /// Weight initialisation.
    pub const INIT: u64 = 1;
    /// Shuffling of training data.
    pub const SHUFFLE: u64 = 2;
    /// Synthetic data generation (teacher data).
    pub const DATA: u64 = 3;
    /// Subset selection of real datasets.
    pub const SUBSET: u64 = 4;
    /// Probe batches of the coordinate checks.
    pub const PROBE: u64 = 5;
    /// Curvature estimates ([`crate::sharpness`]): Lanczos start vectors; `CURVATURE + 1`
    /// Hutchinson's probes, `CURVATURE + 2` SLQ's start vectors, `CURVATURE + 3` the batch.
    pub const CURVATURE: u64 = 6;
    /// Anything else (tests, examples).
    pub const MISC: u64 = 99;
}

/// `N(0, std^2)` samples of the given shape as an `f32` tensor on `device`; an allocation
/// that fails (host or device memory) is an error, not an abort.
pub fn try_normal(shape: &[i64], std: f64, rng: &mut impl Rng, device: Device) -> Result<Tensor> {
    let n = shape.iter().try_fold(1usize, |acc, &d| usize::try_from(d).ok().and_then(|d| acc.checked_mul(d)));
    let n = n.ok_or_else(|| Error::config(format!("tensor shape {shape:?} is invalid or too large")))?;
    let mut v = crate::limits::try_vec::<f32>(&format!("a {shape:?} tensor"), n)?;
    v.extend((0..n).map(|_| {
        let z: f64 = StandardNormal.sample(rng);
        (z * std) as f32
    }));
    Ok(Tensor::f_from_slice(&v)?.f_reshape(shape)?.f_to_device(device)?)
}

/// [`try_normal`] for tensors known to be small (test inputs, probe vectors): panics only if
/// their allocation fails. Model weights use [`try_normal`].
pub fn normal(shape: &[i64], std: f64, rng: &mut impl Rng, device: Device) -> Tensor {
    try_normal(shape, std, rng, device).expect("allocating a small random tensor")
}

/// `n` independent Rademacher signs (`+1` or `-1` with probability 1/2) as an `f32` tensor
/// `[n]` on `device`.
pub fn rademacher(n: i64, rng: &mut impl Rng, device: Device) -> Tensor {
    let v: Vec<f32> = (0..n).map(|_| if rng.random::<bool>() { 1.0 } else { -1.0 }).collect();
    Tensor::from_slice(&v).to_device(device)
}

/// A uniformly random permutation of `0..n` (Fisher-Yates).
pub fn permutation(n: usize, rng: &mut impl Rng) -> Vec<usize> {
    let mut p: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = rng.random_range(0..=i);
        p.swap(i, j);
    }
    p
}

/// Indices as an `i64` tensor (for `index_select`).
pub fn index_tensor(idx: &[usize], device: Device) -> Tensor {
    let v: Vec<i64> = idx.iter().map(|&i| i as i64).collect();
    Tensor::from_slice(&v).to_kind(Kind::Int64).to_device(device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_numbers_different_stream_different() {
        let a = normal(&[3, 4], 1.0, &mut rng(7, stream::INIT), Device::Cpu);
        let b = normal(&[3, 4], 1.0, &mut rng(7, stream::INIT), Device::Cpu);
        let c = normal(&[3, 4], 1.0, &mut rng(7, stream::DATA), Device::Cpu);
        assert!(a.equal(&b));
        assert!(!a.equal(&c));
    }

    #[test]
    fn normal_has_requested_std() {
        let t = normal(&[200_000], 0.5, &mut rng(1, stream::MISC), Device::Cpu);
        let std = t.std(true).double_value(&[]);
        assert!((std - 0.5).abs() < 0.005, "std {std}");
    }

    #[test]
    fn rademacher_signs_are_balanced_and_seeded() {
        let a = rademacher(100_000, &mut rng(2, stream::CURVATURE), Device::Cpu);
        assert!(a.abs().eq(1.0).all().int64_value(&[]) == 1);
        let mean = a.mean(Kind::Double).double_value(&[]);
        assert!(mean.abs() < 0.015, "mean {mean}");
        assert!(a.equal(&rademacher(100_000, &mut rng(2, stream::CURVATURE), Device::Cpu)));
    }

    #[test]
    fn permutation_is_a_permutation() {
        let mut p = permutation(100, &mut rng(3, stream::SHUFFLE));
        assert_ne!(p, (0..100).collect::<Vec<_>>());
        p.sort();
        assert_eq!(p, (0..100).collect::<Vec<_>>());
    }
}
