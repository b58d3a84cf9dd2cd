//! Host-side reductions behind the monitor's activation-sized metrics (RMS norms of
//! differences, cosines, sparsity) for CPU float32/float64 tensors.
//!
//! A measured step takes about thirty of these per layer on `[B, n]` activations. As
//! libtorch operations each is a few kernels with their dispatch and allocation, which at
//! probe sizes of 16-64 rows is most of their cost; here each is one pass over the
//! elements, differences formed in the tensors' precision (as libtorch would) and everything
//! summed in f64. `None` where they do not apply (other devices or kinds, shapes that do not
//! match); the callers then use libtorch.
use tch::{Device, Kind, Tensor};

use crate::simd::{simd, Level, Simd};
use crate::tensor::{elements, Real};

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

/// `sum_i (t0_i - t1_i - ... - t{N-1}_i)^2`, the differences in `T`, the sum in f64 (16
/// lanes), compiled for the kernels' level ([`simd`]).
struct SumSqOfDifference<'a, T, const N: usize>([&'a [T]; N]);

impl<T: Real, const N: usize> Simd for SumSqOfDifference<'_, T, N> {
    type Out = f64;
    #[inline(always)]
    fn run(self) -> f64 {
        let ts = self.0;
        let n = ts[0].len();
        assert!(ts.iter().all(|t| t.len() == n), "tensors of one size");
        // SAFETY: i < n, the length of every slice (checked above).
        let value = |i: usize| unsafe {
            let mut v = *ts[0].get_unchecked(i);
            for t in &ts[1..] {
                v = v - *t.get_unchecked(i);
            }
            v.to_f64()
        };
        let mut acc = [0f64; 16];
        let mut i = 0;
        while i + 16 <= n {
            for (l, a) in acc.iter_mut().enumerate() {
                let v = value(i + l);
                *a += v * v;
            }
            i += 16;
        }
        let mut s: f64 = acc.iter().sum();
        for j in i..n {
            s += value(j) * value(j);
        }
        s
    }
}

/// [`SumSqOfDifference`] for one to four tensors.
fn sum_sq_of_difference<T: Real>(ts: &[&[T]]) -> f64 {
    let level = Level::current();
    match *ts {
        [a] => simd(level, SumSqOfDifference([a])),
        [a, b] => simd(level, SumSqOfDifference([a, b])),
        [a, b, c] => simd(level, SumSqOfDifference([a, b, c])),
        [a, b, c, d] => simd(level, SumSqOfDifference([a, b, c, d])),
        _ => {
            let n = ts.first().map_or(0, |t| t.len());
            (0..n)
                .map(|i| {
                    let v = ts[1..].iter().fold(ts[0][i], |v, t| v - t[i]).to_f64();
                    v * v
                })
                .sum()
        }
    }
}

/// `sqrt(mean((t0 - t1 - ...)^2))` for CPU float tensors of one kind and size (see the module
/// docs); `None` otherwise.
pub(crate) fn rms_of_difference(ts: &[&Tensor]) -> Option<f64> {
    let n = ts.first()?.numel();
    let s = with_slices(ts, |v| sum_sq_of_difference(&v), |v| sum_sq_of_difference(&v))?;
    Some(if n == 0 { f64::NAN } else { (s / n as f64).sqrt() })
}

/// `(sum of squares, dot products with b, b's sum of squares)` of each row of `a`
/// (`[rows, n]` flattened), in f64, compiled for the kernels' level ([`simd`]).
struct RowSums<'a, T> {
    a: &'a [T],
    b: Option<&'a [T]>,
    n: usize,
}

impl<T: Real> Simd for RowSums<'_, T> {
    type Out = Vec<(f64, f64, f64)>;
    #[inline(always)]
    #[allow(clippy::needless_range_loop)]
    fn run(self) -> Self::Out {
        let (a, b, n) = (self.a, self.b, self.n.max(1));
        let mut out = Vec::with_capacity(a.len() / n);
        const L: usize = 16;
        if let Some(b) = b {
            assert_eq!(a.len(), b.len(), "rows of one size");
        }
        for r in 0..a.len() / n {
            let (mut aa, mut ab, mut bb) = ([0f64; L], [0f64; L], [0f64; L]);
            let base = r * n;
            let full = n / L * L;
            // SAFETY: base + n <= a.len() (= b.len(), asserted above).
            let at = |j: usize| unsafe { a.get_unchecked(base + j).to_f64() };
            match b {
                Some(b) => {
                    let bt = |j: usize| unsafe { b.get_unchecked(base + j).to_f64() };
                    let mut j = 0;
                    while j < full {
                        for l in 0..L {
                            let (x, y) = (at(j + l), bt(j + l));
                            aa[l] += x * x;
                            ab[l] += x * y;
                            bb[l] += y * y;
                        }
                        j += L;
                    }
                    for j in full..n {
                        let (x, y) = (at(j), bt(j));
                        aa[0] += x * x;
                        ab[0] += x * y;
                        bb[0] += y * y;
                    }
                }
                None => {
                    let mut j = 0;
                    while j < full {
                        for l in 0..L {
                            let x = at(j + l);
                            aa[l] += x * x;
                        }
                        j += L;
                    }
                    for j in full..n {
                        aa[0] += at(j) * at(j);
                    }
                }
            }
            out.push((aa.iter().sum(), ab.iter().sum(), bb.iter().sum()));
        }
        out
    }
}

fn row_sums<T: Real>(a: &[T], b: Option<&[T]>, n: usize) -> Vec<(f64, f64, f64)> {
    simd(Level::current(), RowSums { a, b, n })
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
        let inv: Vec<f64> = rows.iter().map(|&(aa, _, _)| 1.0 / aa.sqrt().max(1e-300)).collect();
        let diag: f64 = rows.iter().zip(&inv).map(|(&(aa, _, _), i)| aa * i * i).sum();
        let total = simd(Level::current(), SumOfUnitRows { a: v[0], n, inv: &inv });
        (total - diag) / (b * (b - 1)) as f64
    }
    with_slices(&[a], |v| go(v, n, b), |v| go(v, n, b))
}

/// `||sum_r inv_r a_r||^2` over the rows `a_r` of `a` (`[rows, n]` flattened), in f64.
struct SumOfUnitRows<'a, T> {
    a: &'a [T],
    n: usize,
    inv: &'a [f64],
}

impl<T: Real> Simd for SumOfUnitRows<'_, T> {
    type Out = f64;
    #[inline(always)]
    fn run(self) -> f64 {
        let mut total = vec![0f64; self.n];
        for (row, &inv) in self.a.chunks_exact(self.n.max(1)).zip(self.inv) {
            for (t, x) in total.iter_mut().zip(row) {
                *t += x.to_f64() * inv;
            }
        }
        total.iter().map(|t| t * t).sum()
    }
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

    /// Each reduction against its definition in libtorch (float64) at every level this CPU
    /// has, on float32 and float64 tensors with a zero row, exact zeros and a length that is
    /// not a multiple of the lanes.
    #[test]
    fn reductions_match_their_definitions_at_every_level() {
        crate::simd::at_every_level("reductions", |_| reductions_match_their_definitions());
    }

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
