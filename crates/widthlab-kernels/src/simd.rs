//! The instruction sets the hand-written kernels are compiled for, and the one place that
//! picks one at run time.
//!
//! The crate is built for baseline x86-64 (SSE2), whose loops would be several times slower
//! than the memory the kernels read; so each kernel's loop is compiled three times, as
//! generic code inlined into a function compiled for AVX-512F+FMA, one for AVX2+FMA, and the
//! baseline itself ([`simd`] for loops written as a [`Simd`] type; `dense` and `gemm` have
//! their own copies where a const parameter selects explicit intrinsics). Which copy runs is
//! a [`Level`], read once on the calling thread at each public entry point and passed down,
//! so that the OpenMP threads a kernel splits over run the same copy.
//!
//! Invariant: a copy compiled for a level runs only on a CPU that has it. [`Level::current`]
//! never returns a level the CPU lacks, [`with_level`] refuses one, and [`simd`] checks again
//! before it enters a compiled copy (the check is a cached flag).
use std::cell::Cell;

/// A set of vector instructions the kernels have a compiled copy for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Baseline x86-64 (or any other architecture): what the compiler vectorises by itself.
    Portable,
    /// AVX2 with FMA.
    Avx2,
    /// AVX-512F with FMA.
    Avx512,
}

impl Level {
    /// Every level, widest first.
    pub const ALL: [Level; 3] = [Level::Avx512, Level::Avx2, Level::Portable];

    /// Whether this CPU has the level's instructions (`Portable`: always).
    pub fn available(self) -> bool {
        match self {
            Level::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Level::Avx2 => std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma"),
            #[cfg(target_arch = "x86_64")]
            Level::Avx512 => std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("fma"),
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// The widest level this CPU has.
    pub fn detected() -> Level {
        Level::ALL.into_iter().find(|l| l.available()).unwrap_or(Level::Portable)
    }

    /// The level kernels called on this thread run: [`Level::detected`], unless
    /// [`with_level`] set another.
    pub fn current() -> Level {
        FORCED.with(Cell::get).unwrap_or_else(Level::detected)
    }

    /// `AVX-512`, `AVX2` or `portable`.
    pub fn name(self) -> &'static str {
        match self {
            Level::Avx512 => "AVX-512",
            Level::Avx2 => "AVX2",
            Level::Portable => "portable",
        }
    }
}

impl std::fmt::Display for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

thread_local! {
    static FORCED: Cell<Option<Level>> = const { Cell::new(None) };
}

/// Runs `f` with the kernels it calls on this thread at `level` instead of the widest
/// (for tests and benchmarks: every level's loops can be checked on one machine); `None`,
/// without running `f`, when the CPU lacks the level.
pub fn with_level<R>(level: Level, f: impl FnOnce() -> R) -> Option<R> {
    if !level.available() {
        return None;
    }
    Some(forced(Some(level), f))
}

/// Runs `f` with this thread's forced level set to `level` (restored after).
pub(crate) fn forced<R>(level: Option<Level>, f: impl FnOnce() -> R) -> R {
    crate::dispatch::scoped(&FORCED, level, f)
}

/// Runs `f(level)` on the kernels (the path forced) at every level this CPU has, and says
/// which levels it skips: the tests' way to check every compiled copy on one machine.
#[cfg(all(test, feature = "kernels"))]
pub(crate) fn at_every_level(what: &str, f: impl Fn(Level)) {
    for level in Level::ALL {
        if with_level(level, || crate::dispatch::with_path(crate::dispatch::Path::Kernels, || f(level))).is_none() {
            eprintln!("{what}: skipped the {level} kernels (this CPU lacks them)");
        }
    }
}

/// This thread's forced level, if any (handed to the threads a kernel runs on).
pub(crate) fn forced_level() -> Option<Level> {
    FORCED.with(Cell::get)
}

#[cfg(feature = "kernels")]
/// A loop to compile once per [`Level`]: [`simd`] runs [`Simd::run`] inside a function
/// compiled for the level. `run` must be `#[inline(always)]`, like everything it calls, so
/// that it is compiled there (closures would not be).
pub(crate) trait Simd {
    type Out;
    fn run(self) -> Self::Out;
}

#[cfg(feature = "kernels")]
/// Runs `k` compiled for `level` (the portable copy if the CPU lacks it, which a `level`
/// from [`Level::current`] never does).
pub(crate) fn simd<K: Simd>(level: Level, k: K) -> K::Out {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f,fma")]
        unsafe fn avx512<K: Simd>(k: K) -> K::Out {
            k.run()
        }
        #[target_feature(enable = "avx2,fma")]
        unsafe fn avx2<K: Simd>(k: K) -> K::Out {
            k.run()
        }
        match level {
            // SAFETY: the CPU has AVX-512F and FMA (checked).
            Level::Avx512 if level.available() => return unsafe { avx512(k) },
            // SAFETY: the CPU has AVX2 and FMA (checked).
            Level::Avx2 if level.available() => return unsafe { avx2(k) },
            _ => {}
        }
    }
    k.run()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_are_detected_forced_and_restored() {
        assert!(Level::Portable.available());
        let best = Level::detected();
        assert!(best.available());
        assert_eq!(Level::current(), best);
        assert_eq!(with_level(Level::Portable, Level::current), Some(Level::Portable));
        assert_eq!(Level::current(), best, "restored after");
        for l in Level::ALL {
            match with_level(l, Level::current) {
                Some(got) => assert_eq!(got, l),
                None => {
                    assert!(!l.available());
                    eprintln!("skipped: this CPU has no {l}");
                }
            }
        }
    }
}
