//! Device selection (CPU by default, CUDA when present) and thread settings.
//!
//! # CUDA on Linux
//! libtorch's CUDA backend lives in `libtorch_cuda.so`, whose symbols no widthlab code
//! references directly. With as-needed linking (Debian's default) the linker may drop it, and
//! then `tch::Cuda::is_available()` is false even on a GPU machine (tch-rs issues 201, 980).
//! widthlab guards against this twice: `build.rs` links with `-Wl,--no-as-needed`, and
//! [`cuda_available`] `dlopen`s `libtorch_cuda.so` (from the libtorch found at build time,
//! then by name) before asking libtorch (tch-rs issue 988). Neither path has been exercised on
//! a GPU in this project's CI (it has none): treat CUDA support as implemented, not verified.
//!
//! # Mixed precision
//! [`Precision`] chooses the forward pass' number format. `bf16` runs it under libtorch's
//! CUDA autocast with bfloat16 (matmuls in bf16, reductions, softmax and the loss in fp32,
//! weights, gradients and optimizer state in fp32, as LitGPT's `bf16-mixed`; bfloat16 has
//! fp32's exponent range, so no loss scaling is needed). Autocast exists only for CUDA here
//! (tch's `autocast` is a no-op without it), so on a CPU `auto` means fp32 and `bf16` is a
//! configuration error. tch cannot choose autocast's dtype (its default is fp16), so
//! [`with_autocast`] sets it through libtorch's own `at::autocast::set_autocast_dtype`
//! ([`crate::kernels::sys`]; tested there on every build). The CUDA path is implemented, not
//! verified (no GPU here).
//!
//! # Threads and memory
//! [`set_threads`] sets libtorch's thread count and OpenBLAS's (libtorch's own products run
//! on OpenBLAS in widthlab processes, see [`crate::kernels::threads`]); [`tune_allocator`]
//! keeps glibc from mapping fresh pages for every large tensor.
use std::str::FromStr;
use std::sync::Once;

use serde::{Deserialize, Serialize};
use tch::Device;

use crate::kernels::sys::{self, AutocastDtype};
pub use crate::kernels::sys::tune_allocator;
pub use crate::kernels::threads::set_threads;
use crate::{Error, Result};

/// Where to run, as written in configs and on the command line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeviceChoice {
    /// The CPU (the default: results are reproducible bit for bit).
    #[default]
    Cpu,
    /// CUDA device 0, or an error if there is none.
    Cuda,
    /// CUDA if available, else CPU.
    Auto,
}

impl FromStr for DeviceChoice {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" | "gpu" | "cuda:0" => Ok(DeviceChoice::Cuda),
            "auto" => Ok(DeviceChoice::Auto),
            other => Err(Error::config(format!("unknown device `{other}` (use cpu, cuda or auto)"))),
        }
    }
}

impl std::fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DeviceChoice::Cpu => "cpu",
            DeviceChoice::Cuda => "cuda",
            DeviceChoice::Auto => "auto",
        })
    }
}

impl DeviceChoice {
    /// The device named by the environment variable `WIDTHLAB_DEVICE` (`cpu`, `cuda`, `auto`;
    /// default `cpu`); notebooks and presets read their device this way, next to
    /// [`crate::profile::Profile::from_env`].
    pub fn from_env() -> Result<Self> {
        Self::from_env_value(std::env::var("WIDTHLAB_DEVICE").ok().as_deref())
    }

    /// [`Self::from_env`] given the variable's value (`None` or empty: CPU).
    fn from_env_value(value: Option<&str>) -> Result<Self> {
        match value {
            Some(s) if !s.is_empty() => s.parse().map_err(|e: Error| Error::config(format!("WIDTHLAB_DEVICE: {e}"))),
            _ => Ok(DeviceChoice::Cpu),
        }
    }

    /// The tch device, or [`Error::DeviceUnavailable`] for `cuda` without a GPU.
    pub fn resolve(self) -> Result<Device> {
        match self {
            DeviceChoice::Cpu => Ok(Device::Cpu),
            DeviceChoice::Cuda if cuda_available() => Ok(Device::Cuda(0)),
            DeviceChoice::Cuda => Err(Error::DeviceUnavailable(
                "cuda (no CUDA device visible to libtorch; see README, GPU path)".into(),
            )),
            DeviceChoice::Auto => Ok(if cuda_available() { Device::Cuda(0) } else { Device::Cpu }),
        }
    }
}

static LOAD_CUDA: Once = Once::new();

/// Loads `libtorch_cuda.so` if it exists (see the module docs), once per process.
fn preload_cuda_backend() {
    LOAD_CUDA.call_once(|| {
        let mut candidates = vec![];
        if let Some(dir) = option_env!("WIDTHLAB_LIBTORCH_LIB") {
            candidates.push(format!("{dir}/libtorch_cuda.so"));
        }
        candidates.push("libtorch_cuda.so".to_string());
        for c in candidates {
            if sys::load_library(&c) {
                break;
            }
        }
    });
}

/// Whether a CUDA device is usable, after making sure libtorch's CUDA backend is loaded.
pub fn cuda_available() -> bool {
    preload_cuda_backend();
    tch::Cuda::is_available()
}

/// Number format of the forward pass (see the module docs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Precision {
    /// bf16 mixed precision on CUDA, fp32 elsewhere.
    #[default]
    Auto,
    /// fp32 everywhere (bit-for-bit reproducible on CPU).
    Fp32,
    /// bf16 mixed precision; an error on a device without autocast (the CPU).
    Bf16,
}

impl Precision {
    /// Whether runs on `device` use bf16 autocast, or an error for `Bf16` off CUDA.
    pub fn mixed_on(self, device: Device) -> Result<bool> {
        match (self, device.is_cuda()) {
            (Precision::Fp32, _) => Ok(false),
            (_, true) => Ok(true),
            (Precision::Auto, false) => Ok(false),
            (Precision::Bf16, false) => Err(Error::config(format!(
                "precision = \"bf16\" needs a CUDA device (got {device:?}); use \"auto\" or \"fp32\""
            ))),
        }
    }

    /// `Auto` is the default and is left out of serialised configs, so adding this setting
    /// did not change the keys of stored sweep runs.
    pub fn is_auto(&self) -> bool {
        *self == Precision::Auto
    }
}

impl FromStr for Precision {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Precision::Auto),
            "fp32" | "32" | "float32" => Ok(Precision::Fp32),
            "bf16" | "bf16-mixed" | "bfloat16" => Ok(Precision::Bf16),
            other => Err(Error::config(format!("unknown precision `{other}` (use auto, fp32 or bf16)"))),
        }
    }
}

/// Runs `f` (a forward pass and loss) under CUDA autocast in bfloat16 when `mixed`, else
/// as it is.
pub fn with_autocast<T>(mixed: bool, f: impl FnOnce() -> T) -> T {
    if !mixed {
        return f();
    }
    sys::set_cuda_autocast_dtype(AutocastDtype::BFloat16);
    tch::autocast(true, f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_resolves() {
        assert_eq!("CPU".parse::<DeviceChoice>().unwrap(), DeviceChoice::Cpu);
        assert_eq!(DeviceChoice::Cpu.resolve().unwrap(), Device::Cpu);
        assert!("tpu".parse::<DeviceChoice>().unwrap_err().to_string().contains("unknown device"));
        // Auto never fails; Cuda fails exactly when no GPU is visible.
        let auto = DeviceChoice::Auto.resolve().unwrap();
        assert_eq!(DeviceChoice::Cuda.resolve().is_ok(), auto != Device::Cpu);
    }

    #[test]
    fn precision_resolves_per_device_and_sets_bf16() {
        assert!(!Precision::Auto.mixed_on(Device::Cpu).unwrap());
        assert!(!Precision::Fp32.mixed_on(Device::Cuda(0)).unwrap());
        assert!(Precision::Auto.mixed_on(Device::Cuda(0)).unwrap());
        assert!(Precision::Bf16.mixed_on(Device::Cuda(0)).unwrap());
        assert!(Precision::Bf16.mixed_on(Device::Cpu).unwrap_err().to_string().contains("needs a CUDA device"));
        // with_autocast sets bf16 (the setting is a plain global, also in a CPU-only
        // libtorch): read it back, restore
        let before = sys::cuda_autocast_dtype();
        let out = with_autocast(true, || 7);
        assert_eq!(out, 7);
        assert_eq!(sys::cuda_autocast_dtype(), AutocastDtype::BFloat16);
        sys::set_cuda_autocast_dtype(before);
        assert_eq!(with_autocast(false, || 3), 3);
        assert_eq!("BF16".parse::<Precision>().unwrap(), Precision::Bf16);
        assert!("fp8".parse::<Precision>().unwrap_err().to_string().contains("unknown precision"));
    }

    /// libtorch's own products run on the system OpenBLAS (linked through ndarray-linalg):
    /// `environment/setup.sh` installs its OpenMP build and `build.rs` puts it on the run path.
    #[test]
    fn openblas_is_the_openmp_build() {
        use crate::kernels::threads::{openblas_core, openblas_threading, Threading};
        assert_eq!(openblas_threading(), Some(Threading::OpenMp));
        assert!(openblas_core().is_some());
    }

    #[test]
    fn device_from_environment_value() {
        assert_eq!(DeviceChoice::from_env_value(None).unwrap(), DeviceChoice::Cpu);
        assert_eq!(DeviceChoice::from_env_value(Some("")).unwrap(), DeviceChoice::Cpu);
        assert_eq!(DeviceChoice::from_env_value(Some("auto")).unwrap(), DeviceChoice::Auto);
        let e = DeviceChoice::from_env_value(Some("tpu")).unwrap_err().to_string();
        assert!(e.contains("WIDTHLAB_DEVICE") && e.contains("unknown device `tpu`"), "{e}");
    }
}
