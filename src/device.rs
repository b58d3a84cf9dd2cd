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
use std::ffi::CString;
use std::str::FromStr;
use std::sync::Once;

use serde::{Deserialize, Serialize};
use tch::Device;

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
            let Ok(name) = CString::new(c) else { continue };
            // SAFETY: dlopen with a valid C string; the handle is intentionally leaked so the
            // library stays loaded for the life of the process.
            let h = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
            if !h.is_null() {
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

static TUNE_ALLOC: Once = Once::new();

/// Makes glibc's allocator keep large blocks in the heap instead of mapping and unmapping
/// them for every tensor (process-wide; idempotent; no effect off glibc).
///
/// libtorch's CPU allocator calls `malloc`; gradients and activations of wide layers are
/// tens of MB, above glibc's mmap threshold, so every step maps fresh zeroed pages and pays
/// the page faults. With `mmap` disabled and heap trimming off, freed blocks are reused:
/// measured here on the 8-layer width-4096 MLP step, about 30% faster. The `widthlab`
/// binary, the benches and the Trainer-based runners call this; call it at the start of your
/// own program if you train wide models.
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

/// Sets libtorch's intra-op thread count (per process). Runs executed in parallel threads
/// should use 1 each, or they oversubscribe the cores.
pub fn set_threads(n: usize) {
    tch::set_num_threads(n.max(1) as i32);
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
    fn device_from_environment_value() {
        assert_eq!(DeviceChoice::from_env_value(None).unwrap(), DeviceChoice::Cpu);
        assert_eq!(DeviceChoice::from_env_value(Some("")).unwrap(), DeviceChoice::Cpu);
        assert_eq!(DeviceChoice::from_env_value(Some("auto")).unwrap(), DeviceChoice::Auto);
        let e = DeviceChoice::from_env_value(Some("tpu")).unwrap_err().to_string();
        assert!(e.contains("WIDTHLAB_DEVICE") && e.contains("unknown device `tpu`"), "{e}");
    }
}
