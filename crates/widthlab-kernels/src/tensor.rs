//! Tensors as the kernels see them: element types and read-only slices of CPU tensors.
use tch::{Device, Tensor};

/// The element types the kernels run on (float32 and float64 tensors; `KIND` comes from
/// tch's `Element`), with matrixmultiply's single-threaded product.
pub(crate) trait Real: tch::kind::Element + Copy + Default + Send + Sync + std::ops::Sub<Output = Self> + std::ops::Mul<Output = Self> + std::ops::AddAssign + 'static {
    fn to_f64(self) -> f64;
    fn from_f64(v: f64) -> Self;
    /// `self * a + b`, fused (a single instruction where the CPU has FMA; callers run it
    /// only inside functions compiled for such CPUs).
    fn mul_add(self, a: Self, b: Self) -> Self;
    /// `c <- beta c + alpha a b` (`a: [m, k]`, `b: [k, n]`, `c: [m, n]` with (row, column)
    /// strides in elements), single-threaded.
    ///
    /// # Safety
    /// The pointers and strides describe valid buffers; `c` overlaps neither `a` nor `b`.
    #[allow(clippy::too_many_arguments)]
    unsafe fn gemm(m: usize, k: usize, n: usize, alpha: f64, a: *const Self, sa: (isize, isize), b: *const Self, sb: (isize, isize), beta: f64, c: *mut Self, sc: (isize, isize));
}

impl Real for f32 {
    fn to_f64(self) -> f64 {
        self as f64
    }
    fn from_f64(v: f64) -> Self {
        v as f32
    }
    #[inline(always)]
    fn mul_add(self, a: f32, b: f32) -> f32 {
        f32::mul_add(self, a, b)
    }
    unsafe fn gemm(m: usize, k: usize, n: usize, alpha: f64, a: *const f32, sa: (isize, isize), b: *const f32, sb: (isize, isize), beta: f64, c: *mut f32, sc: (isize, isize)) {
        matrixmultiply::sgemm(m, k, n, alpha as f32, a, sa.0, sa.1, b, sb.0, sb.1, beta as f32, c, sc.0, sc.1);
    }
}

impl Real for f64 {
    fn to_f64(self) -> f64 {
        self
    }
    fn from_f64(v: f64) -> Self {
        v
    }
    #[inline(always)]
    fn mul_add(self, a: f64, b: f64) -> f64 {
        f64::mul_add(self, a, b)
    }
    unsafe fn gemm(m: usize, k: usize, n: usize, alpha: f64, a: *const f64, sa: (isize, isize), b: *const f64, sb: (isize, isize), beta: f64, c: *mut f64, sc: (isize, isize)) {
        matrixmultiply::dgemm(m, k, n, alpha, a, sa.0, sa.1, b, sb.0, sb.1, beta, c, sc.0, sc.1);
    }
}

/// The elements of a contiguous CPU tensor of kind `T` (panics otherwise: callers check).
pub(crate) fn elements<T: Real>(t: &Tensor) -> &[T] {
    assert!(t.device() == Device::Cpu && t.is_contiguous() && t.kind() == T::KIND, "elements: a contiguous CPU tensor of the right kind");
    if t.numel() == 0 {
        return &[];
    }
    // SAFETY: such a tensor holds numel() elements of T at data_ptr(), alive as long as `t`.
    unsafe { std::slice::from_raw_parts(t.data_ptr() as *const T, t.numel()) }
}
