//! Threads: the OpenMP runtime libtorch's own kernels use (libgomp), and OpenBLAS's thread
//! count.
//!
//! widthlab runs its parallel work on libgomp's threads, the pool libtorch's kernels use, so
//! that the two never compete for the cores (libgomp's threads spin for milliseconds after
//! each region; a second pool beside them runs several times slower on a busy machine).
//! libgomp is looked up in the process (`dlopen` with `RTLD_NOLOAD`: libtorch has loaded
//! it), not linked; without it everything runs on the calling thread. [`on_threads`] is the
//! one place a parallel region is opened: the kernels' splits by rows or columns, and
//! [`join`], which runs two independent serial pieces of work side by side.
//!
//! OpenBLAS: in a process that loads it before libtorch (every widthlab binary and the
//! notebook kernel, through ndarray-linalg's link), libtorch's own Fortran `sgemm_` calls
//! bind to OpenBLAS's, not MKL's, so libtorch's `mm` runs on OpenBLAS there. OpenBLAS keeps
//! one process-wide thread count, which [`set_threads`] sets together with libtorch's; its
//! entry points are looked up among the loaded libraries (`RTLD_DEFAULT`), so a process
//! without OpenBLAS (this crate's own tests) simply has none to set.
//!
//! Invariant: results never depend on how work is split between threads where the split is
//! by output (products); where threads accumulate partial sums (the monitor's fused pass)
//! they are merged in thread order, so the same thread count gives the same numbers.
use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::{Once, OnceLock};

/// Runs `f(t, nt)` once on each of `threads` OpenMP threads (libgomp's, which libtorch's
/// kernels use; `t = 0..nt`), or as `f(0, 1)` on the calling thread when `threads <= 1`, no
/// OpenMP runtime is loaded, or the caller already is inside a parallel region. The one
/// place widthlab opens a parallel region (its products and its own kernels).
pub(crate) fn on_threads(threads: usize, f: &(dyn Fn(usize, usize) + Sync)) {
    match openmp().filter(|_| threads > 1) {
        // SAFETY: in_parallel is a plain query.
        Some(omp) if unsafe { (omp.in_parallel)() } == 0 => {
            let data = &f as *const &(dyn Fn(usize, usize) + Sync) as *mut c_void;
            // SAFETY: `f` outlives the region, which GOMP_parallel joins before returning;
            // closure_worker reads `data` as the reference passed here.
            unsafe { (omp.parallel)(closure_worker, data, threads as u32, 0) };
        }
        _ => f(0, 1),
    }
}

/// Runs `a` on the calling thread and `b` on a second OpenMP thread at the same time, and
/// returns both results; one after the other on the calling thread when there is no second
/// thread (one thread configured, or already inside a parallel region). For two independent
/// serial pieces of work, so that neither core idles while the other runs one. Work inside
/// either that would open a parallel region runs single-threaded there. `b` runs with the
/// caller's forced path and level ([`crate::dispatch::with_path`],
/// [`crate::simd::with_level`]).
pub fn join<A, B: Send>(a: impl FnOnce() -> A, b: impl FnOnce() -> B + Send) -> (A, B) {
    use std::cell::RefCell;
    use std::sync::Mutex;
    /// Touched by OpenMP's thread 0 only, which is the thread that opened the region (the
    /// caller of `join`): `a` and its result never change threads.
    struct OnCaller<T>(RefCell<Option<T>>);
    // SAFETY: see above; the region is joined before `join` returns.
    unsafe impl<T> Sync for OnCaller<T> {}
    impl<T> OnCaller<T> {
        fn take(&self) -> Option<T> {
            self.0.borrow_mut().take()
        }
        fn put(&self, v: T) {
            *self.0.borrow_mut() = Some(v);
        }
    }
    let (fa, ra) = (OnCaller(RefCell::new(Some(a))), OnCaller(RefCell::new(None)));
    let (fb, rb) = (Mutex::new(Some(b)), Mutex::new(None));
    let overrides = crate::dispatch::Overrides::current();
    let run_b = || {
        if let Some(f) = fb.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let v = overrides.apply(f);
            *rb.lock().unwrap_or_else(|e| e.into_inner()) = Some(v);
        }
    };
    on_threads(threads_if(true).min(2), &|t, nt| {
        if t == 0 {
            if let Some(f) = fa.take() {
                ra.put(f());
            }
        }
        if t == 1 || nt == 1 {
            run_b();
        }
    });
    run_b(); // (if the region had no second thread)
    let a = ra.take().expect("join: the first task ran");
    let b = rb.into_inner().unwrap_or_else(|e| e.into_inner()).expect("join: the second task ran");
    (a, b)
}

/// libtorch's thread count if `parallel`, else 1: the `threads` argument of [`on_threads`]
/// for work that splits only above some size.
pub(crate) fn threads_if(parallel: bool) -> usize {
    if parallel {
        tch::get_num_threads().max(1) as usize
    } else {
        1
    }
}

/// The body of the OpenMP region of [`on_threads`].
extern "C" fn closure_worker(data: *mut c_void) {
    let Some(omp) = openmp() else { return };
    // SAFETY: `data` points to the closure reference on_threads passed, alive until
    // GOMP_parallel returns; the queries are plain getters.
    unsafe {
        let f = &*(data as *const &(dyn Fn(usize, usize) + Sync));
        let (t, nt) = ((omp.thread_num)().max(0) as usize, (omp.num_threads)().max(1) as usize);
        f(t, nt);
    }
}

/// libgomp's entry points (the runtime libtorch's own parallel kernels use), looked up in the
/// loaded library.
struct OpenMp {
    parallel: ParallelFn,
    in_parallel: QueryFn,
    thread_num: QueryFn,
    num_threads: QueryFn,
}
type ParallelFn = unsafe extern "C" fn(extern "C" fn(*mut c_void), *mut c_void, u32, u32);
type QueryFn = unsafe extern "C" fn() -> c_int;

fn openmp() -> Option<&'static OpenMp> {
    static OMP: OnceLock<Option<OpenMp>> = OnceLock::new();
    OMP.get_or_init(|| {
        // SAFETY: NOLOAD returns the already loaded runtime (or null).
        let h = unsafe { libc::dlopen(c"libgomp.so.1".as_ptr(), libc::RTLD_LAZY | libc::RTLD_NOLOAD) };
        if h.is_null() {
            return None;
        }
        // SAFETY: the symbols have the signatures declared in OpenMp (GOMP_parallel is what
        // `#pragma omp parallel` compiles to).
        unsafe {
            Some(OpenMp {
                parallel: std::mem::transmute::<*mut c_void, ParallelFn>(symbol(h, c"GOMP_parallel")?),
                in_parallel: std::mem::transmute::<*mut c_void, QueryFn>(symbol(h, c"omp_in_parallel")?),
                thread_num: std::mem::transmute::<*mut c_void, QueryFn>(symbol(h, c"omp_get_thread_num")?),
                num_threads: std::mem::transmute::<*mut c_void, QueryFn>(symbol(h, c"omp_get_num_threads")?),
            })
        }
    })
    .as_ref()
}

/// The address of `name` in the library `handle` (or among all loaded ones for
/// `RTLD_DEFAULT`), if it has it.
fn symbol(handle: *mut c_void, name: &CStr) -> Option<*mut c_void> {
    // SAFETY: dlsym with a handle from dlopen (or RTLD_DEFAULT) and a C string.
    let p = unsafe { libc::dlsym(handle, name.as_ptr()) };
    (!p.is_null()).then_some(p)
}

/// How the loaded OpenBLAS runs in parallel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Threading {
    /// Single-threaded build.
    Sequential,
    /// Its own pthreads pool (Debian's default `libopenblas0-pthread`).
    Pthreads,
    /// libgomp's threads, the pool libtorch uses too (`libopenblas0-openmp`).
    OpenMp,
}

/// OpenBLAS's settings, looked up among the loaded libraries.
struct OpenBlas {
    set_num_threads: unsafe extern "C" fn(c_int),
    get_parallel: QueryFn,
    get_corename: unsafe extern "C" fn() -> *const c_char,
}

fn openblas() -> Option<&'static OpenBlas> {
    static BLAS: OnceLock<Option<OpenBlas>> = OnceLock::new();
    BLAS.get_or_init(|| {
        // SAFETY: the symbols are OpenBLAS's, with the declared signatures.
        unsafe {
            Some(OpenBlas {
                set_num_threads: std::mem::transmute::<*mut c_void, unsafe extern "C" fn(c_int)>(symbol(libc::RTLD_DEFAULT, c"openblas_set_num_threads")?),
                get_parallel: std::mem::transmute::<*mut c_void, QueryFn>(symbol(libc::RTLD_DEFAULT, c"openblas_get_parallel")?),
                get_corename: std::mem::transmute::<*mut c_void, unsafe extern "C" fn() -> *const c_char>(symbol(libc::RTLD_DEFAULT, c"openblas_get_corename")?),
            })
        }
    })
    .as_ref()
}

/// The threading of the OpenBLAS this process loaded (`None`: no OpenBLAS loaded).
///
/// It matters: libtorch runs its own parallel kernels on libgomp's threads, which spin for
/// milliseconds after each parallel region. A pthreads OpenBLAS then competes with them for
/// the cores, and on a 2-core machine the MLP step ran several times slower. With the OpenMP
/// build both libraries share one pool, as PyTorch's MKL does. widthlab's
/// `environment/setup.sh` installs `libopenblas0-openmp` and its `build.rs` puts that
/// directory on the binaries' run path.
pub fn openblas_threading() -> Option<Threading> {
    // SAFETY: a plain getter.
    openblas().map(|b| match unsafe { (b.get_parallel)() } {
        2 => Threading::OpenMp,
        1 => Threading::Pthreads,
        _ => Threading::Sequential,
    })
}

/// OpenBLAS's core type name (e.g. `SkylakeX`), if an OpenBLAS is loaded and reports one.
pub fn openblas_core() -> Option<String> {
    let b = openblas()?;
    // SAFETY: returns a pointer to a static NUL-terminated string (or null).
    let p = unsafe { (b.get_corename)() };
    // SAFETY: checked not null; static.
    (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
}

/// Sets OpenBLAS's thread count: `n` for the OpenMP build (which also follows the calling
/// thread's OpenMP setting, like libtorch), and 1 for a pthreads build, whose own threads
/// would compete with libtorch's (see [`openblas_threading`]): slower products, but no
/// contention.
fn set_openblas_threads(n: usize) {
    let Some(b) = openblas() else { return };
    let n = if openblas_threading() == Some(Threading::Pthreads) { 1 } else { n.max(1) };
    // SAFETY: a plain setter.
    unsafe { (b.set_num_threads)(n as c_int) };
}

static INIT: Once = Once::new();

/// Sets OpenBLAS's thread count to libtorch's, once per process (libtorch's own products run
/// on OpenBLAS in widthlab processes, see the module docs). Called by every product and by
/// [`set_threads`].
pub(crate) fn init() {
    INIT.call_once(|| set_openblas_threads(tch::get_num_threads().max(1) as usize));
}

/// Sets libtorch's intra-op thread count for the calling thread and OpenBLAS's (process-wide).
/// Runs executed in parallel threads should use 1 each, or they oversubscribe the cores.
///
/// libtorch gives each OS thread its OpenMP count lazily, at the thread's first parallel op,
/// from the count last set by *any* thread. Were that first op to come after this call, a
/// concurrent `set_threads` in another thread (a parallel sweep worker, another test) could
/// change this thread's count mid-run, and with it the rounding of its reductions. So the
/// lazy initialisation runs first (`get_num_threads` triggers it), and the count set here stays.
pub fn set_threads(n: usize) {
    let _ = tch::get_num_threads();
    tch::set_num_threads(n.max(1) as i32);
    init(); // so that a later first product does not reset the count below
    set_openblas_threads(n);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn join_runs_both_and_on_threads_covers_every_thread() {
        let (a, b) = join(|| 1 + 1, || "b");
        assert_eq!((a, b), (2, "b"));
        // every thread of the region runs once, with its own index (no assertion inside:
        // a panic cannot unwind out of the OpenMP region)
        let seen = AtomicUsize::new(0);
        let bad = AtomicUsize::new(0);
        on_threads(2, &|t, nt| {
            if t >= nt || nt > 2 {
                bad.fetch_add(1, Ordering::SeqCst);
            }
            seen.fetch_add(1 << t, Ordering::SeqCst);
        });
        let n = seen.load(Ordering::SeqCst);
        assert_eq!(bad.load(Ordering::SeqCst), 0);
        assert!(n == 1 || n == 3, "thread 0, and thread 1 where there is one: {n}");
        // libtorch loads libgomp: the region is a real one when libtorch has two threads
        if tch::get_num_threads() >= 2 {
            assert!(openmp().is_some(), "libgomp is loaded with libtorch");
        }
    }

    #[test]
    fn a_threads_count_is_not_changed_by_another_threads_later_call() {
        use std::sync::mpsc::channel;
        // thread A sets 1 before any parallel op of its own; thread B then sets 2; A's first
        // parallel op must still run on 1 (libtorch's lazy per-thread initialisation would
        // otherwise take B's count)
        init(); // as after an earlier product: `set_threads` below does not run it
        let (a_set, b_wait) = channel();
        let (b_done, a_wait) = channel();
        let a = std::thread::spawn(move || {
            set_threads(1);
            a_set.send(()).unwrap();
            a_wait.recv().unwrap();
            tch::get_num_threads()
        });
        let b = std::thread::spawn(move || {
            b_wait.recv().unwrap();
            set_threads(2);
            b_done.send(()).unwrap();
        });
        b.join().unwrap();
        assert_eq!(a.join().unwrap(), 1);
    }
}
