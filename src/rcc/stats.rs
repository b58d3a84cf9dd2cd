//! Host-side reductions behind the monitor's activation-sized metrics (RMS norms of
//! differences, cosines, sparsity) for CPU float32/float64 tensors.
//!
//! A measured step takes about thirty of these per layer on `[B, n]` activations. As
//! libtorch operations each is a few kernels with ~5-20 us of dispatch and allocation,
//! which at probe sizes of 16-64 rows is most of their cost; here each is one pass over the
//! elements, differences formed in the tensors' precision (as libtorch would) and everything
//! summed in f64. `None` where they do not apply (other devices or kinds, shapes that do not
//! match); the callers then use libtorch.
use tch::{Device, Kind, Tensor};

use crate::gemm::{elements, Real};

/// The contiguous CPU tensors `ts`, all of one kind (float32 or float64) and one number of
/// elements, as slices for `f`.
fn with_slices<R>(ts: &[&Tensor], f32s: impl FnOnce(Vec<&[f32]>) -> R, f64s: impl FnOnce(Vec<&[f64]>) -> R) -> Option<R> {
    let first = ts.first()?;
    let (kind, n) = (first.kind(), first.numel());
    if ts.iter().any(|t| t.device() != Device::Cpu || t.kind() != kind || t.numel() != n) {
        return None;
    }
    let owned: Vec<Tensor> = ts.iter().map(|t| t.contiguous()).collect();
    fn slices<T: Real>(ts: &[Tensor]) -> Vec<&[T]> {
        ts.iter().map(elements::<T>).collect()
    }
    match kind {
        Kind::Float => Some(f32s(slices::<f32>(&owned))),
        Kind::Double => Some(f64s(slices::<f64>(&owned))),
        _ => None,
    }
}

/// `sum_i (t0_i - t1_i - t2_i - ...)^2`, the differences in `T`, the sum in f64 (8 lanes).
fn sum_sq_of_difference<T: Real>(ts: &[&[T]]) -> f64 {
    let n = ts[0].len();
    let mut acc = [0f64; 8];
    let mut i = 0;
    while i + 8 <= n {
        for (l, a) in acc.iter_mut().enumerate() {
            let mut v = ts[0][i + l];
            for t in &ts[1..] {
                v = v - t[i + l];
            }
            let v = v.to_f64();
            *a += v * v;
        }
        i += 8;
    }
    let mut s: f64 = acc.iter().sum();
    for j in i..n {
        let mut v = ts[0][j];
        for t in &ts[1..] {
            v = v - t[j];
        }
        s += v.to_f64() * v.to_f64();
    }
    s
}

/// `sqrt(mean((t0 - t1 - ...)^2))` for CPU float tensors of one kind and size (see the module
/// docs); `None` otherwise.
pub(crate) fn rms_of_difference(ts: &[&Tensor]) -> Option<f64> {
    let n = ts.first()?.numel();
    let s = with_slices(ts, |v| sum_sq_of_difference(&v), |v| sum_sq_of_difference(&v))?;
    Some(if n == 0 { f64::NAN } else { (s / n as f64).sqrt() })
}

/// `(sum of squares, dot products with b)` of each row of `a` (`[rows, n]` flattened).
fn row_sums<T: Real>(a: &[T], b: Option<&[T]>, n: usize) -> Vec<(f64, f64, f64)> {
    a.chunks_exact(n.max(1))
        .enumerate()
        .map(|(r, row)| {
            let (mut aa, mut ab, mut bb) = (0.0, 0.0, 0.0);
            match b {
                Some(b) => {
                    for (x, y) in row.iter().zip(&b[r * n..(r + 1) * n]) {
                        let (x, y) = (x.to_f64(), y.to_f64());
                        aa += x * x;
                        ab += x * y;
                        bb += y * y;
                    }
                }
                None => aa = row.iter().map(|x| x.to_f64() * x.to_f64()).sum(),
            }
            (aa, ab, bb)
        })
        .collect()
}

/// Mean cosine of matching rows of `a` and `b` (`[B, n]`; zero rows count as cosine 0).
pub(crate) fn cosine_rows(a: &Tensor, b: &Tensor) -> Option<f64> {
    let n = *a.size().last()? as usize;
    if a.size() != b.size() || n == 0 {
        return None;
    }
    fn go<T: Real>(v: Vec<&[T]>, n: usize) -> f64 {
        let rows = row_sums(v[0], Some(v[1]), n);
        let sum: f64 = rows.iter().map(|&(aa, ab, bb)| ab / (aa * bb).sqrt().max(1e-300)).sum();
        sum / rows.len() as f64
    }
    with_slices(&[a, b], |v| go(v, n), |v| go(v, n))
}

/// Mean cosine between different rows of `a` (`[B, n]`, `B >= 2`), via
/// `sum_{i != j} u_i . u_j = ||sum_i u_i||^2 - sum_i ||u_i||^2` for the unit rows `u_i`.
pub(crate) fn cosine_cross(a: &Tensor) -> Option<f64> {
    let size = a.size();
    let n = *size.last()? as usize;
    let b = a.numel() / n.max(1);
    if n == 0 || b < 2 {
        return None;
    }
    fn go<T: Real>(v: Vec<&[T]>, n: usize, b: usize) -> f64 {
        let rows = row_sums(v[0], None, n);
        let mut total = vec![0f64; n];
        let mut diag = 0.0;
        for (r, &(aa, _, _)) in rows.iter().enumerate() {
            let inv = 1.0 / aa.sqrt().max(1e-300);
            for (t, x) in total.iter_mut().zip(&v[0][r * n..(r + 1) * n]) {
                *t += x.to_f64() * inv;
            }
            diag += aa * inv * inv;
        }
        let total: f64 = total.iter().map(|t| t * t).sum();
        (total - diag) / (b * (b - 1)) as f64
    }
    with_slices(&[a], |v| go(v, n, b), |v| go(v, n, b))
}

/// Whether every entry is exactly 0 or 1 (stops at the first that is not).
pub(crate) fn all_zero_or_one(a: &Tensor) -> Option<bool> {
    fn go<T: Real>(v: Vec<&[T]>) -> bool {
        v[0].iter().all(|x| {
            let x = x.to_f64();
            x == 0.0 || x == 1.0
        })
    }
    with_slices(&[a], go, go)
}

/// Fraction of exactly-zero entries.
pub(crate) fn sparsity(a: &Tensor) -> Option<f64> {
    let n = a.numel();
    fn go<T: Real>(v: Vec<&[T]>) -> usize {
        v[0].iter().filter(|x| x.to_f64() == 0.0).count()
    }
    with_slices(&[a], go, go).map(|zeros| zeros as f64 / n.max(1) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each reduction against its definition in libtorch (float64), on float32 and float64
    /// tensors with a zero row, exact zeros and a length that is not a multiple of the lanes.
    #[test]
    fn reductions_match_their_definitions() {
        tch::manual_seed(5);
        for kind in [Kind::Float, Kind::Double] {
            let opts = (kind, Device::Cpu);
            let a = Tensor::randn([6, 37], opts).relu();
            let _ = a.get(2).zero_();
            let (b, c) = (Tensor::randn([6, 37], opts), Tensor::randn([6, 37], opts));
            let d = |t: &Tensor| t.to_kind(Kind::Double);
            let close = |x: f64, y: f64| (x - y).abs() <= 1e-6 * y.abs().max(1e-12);
            let want = (d(&(&a - &b - &c)).square().mean(Kind::Double)).sqrt().double_value(&[]);
            assert!(close(rms_of_difference(&[&a, &b, &c]).unwrap(), want), "{kind:?}");
            let want = d(&a).square().mean(Kind::Double).sqrt().double_value(&[]);
            assert!(close(rms_of_difference(&[&a]).unwrap(), want));
            // cosines by the Gram matrix of unit rows
            let n = d(&a).square().sum_dim_intlist(&[1i64][..], true, Kind::Double).sqrt().clamp_min(1e-300);
            let u = d(&a) / &n;
            let g = u.matmul(&u.tr());
            let want = (g.sum(Kind::Double) - g.trace()).double_value(&[]) / 30.0;
            assert!(close(cosine_cross(&a).unwrap(), want));
            let nb = d(&b).square().sum_dim_intlist(&[1i64][..], true, Kind::Double).sqrt();
            let want = (u * (d(&b) / nb)).sum_dim_intlist(&[1i64][..], false, Kind::Double).mean(Kind::Double).double_value(&[]);
            assert!(close(cosine_rows(&a, &b).unwrap(), want));
            let want = a.eq(0.0).sum(Kind::Int64).int64_value(&[]) as f64 / a.numel() as f64;
            assert_eq!(sparsity(&a).unwrap(), want);
            assert_eq!(all_zero_or_one(&a), Some(false));
            assert_eq!(all_zero_or_one(&a.gt(0.5).to_kind(kind)), Some(true));
        }
        // what they do not take: mixed kinds, other kinds, mismatched sizes
        let a = Tensor::ones([2, 3], (Kind::Float, Device::Cpu));
        assert!(rms_of_difference(&[&a, &a.to_kind(Kind::Double)]).is_none());
        assert!(rms_of_difference(&[&a.to_kind(Kind::Half)]).is_none());
        assert!(cosine_rows(&a, &Tensor::ones([3, 2], (Kind::Float, Device::Cpu))).is_none());
    }
}
