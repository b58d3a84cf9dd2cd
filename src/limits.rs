//! What memory and time allow: sizes (widths, depths, steps, seeds, grid sizes) are checked
//! against these limits before any work starts, so an absurd size is a one-line error naming
//! the limit, never an out-of-memory abort, a capacity-overflow panic or a run that cannot end.
//!
//! - **Memory**: a run's configuration gives a *lower bound* of the memory it needs (its
//!   parameters with their gradients and optimizer state, one batch of activations, generated
//!   data, the per-step loss record, libtorch's bookkeeping per layer). A bound above the
//!   machine's memory ([`memory_bytes`]: physical memory, or the cgroup's limit if lower) is
//!   refused. Being a lower bound, it never refuses a run that would fit; a run it lets
//!   through can still fail to allocate, and then libtorch's error is returned (the
//!   allocation sites use tch's fallible `f_` functions), not a panic.
//! - **Steps**: at most [`MAX_STEPS`] per run. Every run keeps a value per step (the
//!   mini-batch loss, the uv model's state), 0.8 GB at the limit; and at 10^4 steps per second,
//!   more than the smallest MLP manages, 10^8 steps take hours.
//! - **Runs**: at most [`MAX_RUNS`] runs in one sweep, coordinate check or uv study (grid
//!   points, widths x seeds): every run is a record kept in memory and in the store.
//! - **Depth**: at most [`MAX_DEPTH`] layers (blocks): libtorch's bookkeeping costs tens of
//!   kilobytes and milliseconds per layer and step, so even a width-2 MLP of that depth takes
//!   seconds per step.
//! - **Threads**: at most [`MAX_THREADS`] libtorch threads or sweep workers: more only
//!   oversubscribes the cores, and libgomp fails to create them long before 10^5.
//!
//! These bounds reject what could never fit or finish; they do not predict run times.
use crate::{Error, Result};

/// Most optimizer steps of one run (and of one uv trajectory).
pub const MAX_STEPS: usize = 100_000_000;
/// Most runs in one sweep, coordinate check or uv study.
pub const MAX_RUNS: usize = 1_000_000;
/// Most weight layers of an MLP, or transformer blocks of a GPT.
pub const MAX_DEPTH: usize = 10_000;
/// Most libtorch threads of a run, or parallel workers of a sweep.
pub const MAX_THREADS: usize = 1024;
/// Memory libtorch and widthlab keep per layer besides its tensors: a lower bound, well below
/// what a deep, narrow MLP uses per layer.
pub const BYTES_PER_LAYER: f64 = 16.0 * 1024.0;

/// The memory this process may use: physical memory, or the cgroup's limit if lower.
pub fn memory_bytes() -> u64 {
    // (what sysconf's _SC_PHYS_PAGES x _SC_PAGESIZE computes from)
    let info = rustix::system::sysinfo();
    let physical = match (info.totalram as u64).checked_mul(info.mem_unit.max(1) as u64) {
        Some(b) if b > 0 => b,
        _ => u64::MAX,
    };
    let cgroup = ["/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok()?.trim().parse::<u64>().ok())
        .min()
        .unwrap_or(u64::MAX);
    physical.min(cgroup)
}

/// Human-readable bytes (`1.5 GiB`).
pub fn show_bytes(b: f64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut v = b;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if !b.is_finite() {
        "more than 2^64 B".into()
    } else if v >= 1024.0 {
        format!("{b:.1e} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Refuses `what` if it needs at least `bytes` (a lower bound) and that exceeds the memory.
pub fn check_memory(what: &str, bytes: f64) -> Result<()> {
    let have = memory_bytes();
    if bytes.is_nan() || bytes > have as f64 {
        return Err(Error::config(format!(
            "{what} needs at least {} of memory, more than this machine's {}",
            show_bytes(bytes),
            show_bytes(have as f64)
        )));
    }
    Ok(())
}

/// Refuses more than [`MAX_STEPS`] steps; `steps` may be computed in floating point (e.g.
/// `epochs * n / batch`), so it is checked before any conversion to an integer.
pub fn check_steps(what: &str, steps: f64) -> Result<()> {
    if !(steps <= MAX_STEPS as f64) {
        return Err(Error::config(format!(
            "{what}: {} steps exceed the limit of {MAX_STEPS} steps per run (a run keeps a value per step and could not finish)",
            show_count(steps)
        )));
    }
    Ok(())
}

/// Refuses more than [`MAX_RUNS`] runs.
pub fn check_runs(what: &str, runs: f64) -> Result<()> {
    if !(runs <= MAX_RUNS as f64) {
        return Err(Error::config(format!("{what}: {} runs exceed the limit of {MAX_RUNS} runs", show_count(runs))));
    }
    Ok(())
}

/// Refuses more than [`MAX_DEPTH`] layers.
pub fn check_depth(field: &str, depth: usize) -> Result<()> {
    if depth > MAX_DEPTH {
        return Err(Error::config(format!(
            "{field} {depth} exceeds the limit of {MAX_DEPTH} (libtorch's bookkeeping per layer makes deeper networks impractical)"
        )));
    }
    Ok(())
}

/// Refuses 0 or more than [`MAX_THREADS`] threads.
pub fn check_threads(field: &str, threads: usize) -> Result<()> {
    if threads == 0 || threads > MAX_THREADS {
        return Err(Error::config(format!("{field} must be between 1 and {MAX_THREADS}, got {threads}")));
    }
    Ok(())
}

/// A count for messages: exact below 10^15, else in scientific notation.
fn show_count(x: f64) -> String {
    if x.is_finite() && x.abs() < 1e15 {
        format!("{}", x as u64)
    } else {
        format!("{x:e}")
    }
}

/// Reserves room for `n` elements in a new vector, or says how much memory `what` needed
/// (instead of Rust's abort on a failed allocation).
pub fn try_vec<T>(what: &str, n: usize) -> Result<Vec<T>> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| {
        Error::config(format!("{what}: cannot allocate {} ({n} values)", show_bytes(n as f64 * std::mem::size_of::<T>() as f64)))
    })?;
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_refuse_with_a_message_naming_the_limit() {
        let m = memory_bytes();
        assert!(m > 1 << 28 && m < u64::MAX, "{m}");
        check_memory("x", 1e6).unwrap();
        let e = check_memory("a model", m as f64 * 2.0).unwrap_err().to_string();
        assert!(e.contains("a model needs at least") && e.contains("more than this machine's"), "{e}");
        assert!(check_memory("x", f64::INFINITY).unwrap_err().to_string().contains("more than 2^64"));
        check_steps("s", MAX_STEPS as f64).unwrap();
        let e = check_steps("train", 1e300).unwrap_err().to_string();
        assert!(e.contains("1e300 steps exceed the limit of 100000000"), "{e}");
        assert!(check_steps("s", f64::NAN).is_err());
        assert!(check_runs("grid", 2e10).unwrap_err().to_string().contains("20000000000 runs exceed the limit of 1000000"));
        assert!(check_depth("model.depth", MAX_DEPTH + 1).unwrap_err().to_string().contains("limit of 10000"));
        assert!(check_threads("threads", 0).is_err() && check_threads("threads", 5000).is_err());
        check_threads("threads", 2).unwrap();
        assert_eq!(show_bytes(1536.0), "1.5 KiB");
        assert_eq!(show_bytes(3e25), "3.0e25 B");
        assert!(try_vec::<f64>("huge", usize::MAX / 2).unwrap_err().to_string().contains("cannot allocate"));
        assert!(try_vec::<f64>("small", 10).unwrap().capacity() >= 10);
    }
}
