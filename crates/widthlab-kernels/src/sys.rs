//! The libc and libtorch calls tch does not wrap: glibc's allocator settings, loading a
//! shared library, and libtorch's autocast dtype.
use std::ffi::CString;
use std::sync::Once;

static TUNE_ALLOC: Once = Once::new();

/// Makes glibc's allocator keep large blocks in the heap instead of mapping and unmapping
/// them for every tensor (process-wide; idempotent; no effect off glibc).
///
/// libtorch's CPU allocator calls `malloc`; gradients and activations of wide layers are
/// tens of MB, above glibc's mmap threshold, so every step maps fresh zeroed pages and pays
/// the page faults. With `mmap` disabled and heap trimming off, freed blocks are reused (the
/// 8-layer MLP step at width 4096 ran markedly faster).
pub fn tune_allocator() {
    TUNE_ALLOC.call_once(|| {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: mallopt only changes allocator parameters; it is called once, before the
        // large allocations it concerns.
        unsafe {
            libc::mallopt(libc::M_MMAP_MAX, 0);
            libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        }
    });
}

/// Loads the shared library at `path` (a path or a name the loader searches) for the life of
/// the process, its symbols global; whether it loaded.
pub fn load_library(path: &str) -> bool {
    let Ok(name) = CString::new(path) else { return false };
    // SAFETY: dlopen with a valid C string; the handle is intentionally leaked so the library
    // stays loaded for the life of the process.
    let h = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
    !h.is_null()
}

// libtorch's setter and getter of autocast's dtype per device type (C++ functions taking
// `c10::DeviceType` and `c10::ScalarType`, both `int8_t` enums; not exposed by tch).
extern "C" {
    #[link_name = "_ZN2at8autocast18set_autocast_dtypeEN3c1010DeviceTypeENS1_10ScalarTypeE"]
    fn at_autocast_set_dtype(device_type: i8, dtype: i8);
    #[link_name = "_ZN2at8autocast18get_autocast_dtypeEN3c1010DeviceTypeE"]
    fn at_autocast_get_dtype(device_type: i8) -> i8;
}

/// `c10::DeviceType::CUDA`.
const C10_CUDA: i8 = 1;

/// A number format of CUDA autocast, as libtorch numbers it (`c10::ScalarType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AutocastDtype {
    /// `c10::ScalarType::Half` (5), libtorch's default.
    Half,
    /// `c10::ScalarType::BFloat16` (15).
    BFloat16,
    /// Another scalar type, by its number.
    Other(i8),
}

impl AutocastDtype {
    fn code(self) -> i8 {
        match self {
            AutocastDtype::Half => 5,
            AutocastDtype::BFloat16 => 15,
            AutocastDtype::Other(c) => c,
        }
    }
}

/// Sets the number format of libtorch's CUDA autocast (a process-wide setting tch cannot
/// change; it exists in a CPU-only libtorch too).
pub fn set_cuda_autocast_dtype(dtype: AutocastDtype) {
    // SAFETY: sets a process-wide enum value in libtorch; no memory is passed.
    unsafe { at_autocast_set_dtype(C10_CUDA, dtype.code()) };
}

/// The number format of libtorch's CUDA autocast.
pub fn cuda_autocast_dtype() -> AutocastDtype {
    // SAFETY: reads a process-wide enum value in libtorch.
    match unsafe { at_autocast_get_dtype(C10_CUDA) } {
        5 => AutocastDtype::Half,
        15 => AutocastDtype::BFloat16,
        c => AutocastDtype::Other(c),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn autocast_dtype_round_trips_and_libraries_load() {
        let before = cuda_autocast_dtype();
        assert_eq!(before, AutocastDtype::Half, "libtorch's CUDA autocast default is fp16");
        set_cuda_autocast_dtype(AutocastDtype::BFloat16);
        assert_eq!(cuda_autocast_dtype(), AutocastDtype::BFloat16);
        set_cuda_autocast_dtype(before);
        assert_eq!(cuda_autocast_dtype(), before);
        assert!(load_library("libc.so.6"));
        assert!(!load_library("libwidthlab-does-not-exist.so"));
        assert!(!load_library("nul\0inside"));
    }
}
