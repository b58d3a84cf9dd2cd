//! Which path each product takes, widthlab's kernels or libtorch: decided here and nowhere
//! else, and said once per process on stderr.
//!
//! # Products: by measurement
//! A product with a libtorch equivalent ([`crate::ops`]: `x W^T`, `a b` into a new or an
//! existing output, `a^T b` for a short inner dimension, `f f^T`) is timed once per *shape*
//! (operation, element type, sizes, operand layouts) on both paths, and from then on takes
//! the faster. The kernels' advantage depends on the CPU and the BLAS libtorch runs on: on an
//! AMD EPYC, where MKL takes its AVX2 path, they won at every width of the MLP step; on an
//! Intel Xeon with AVX-512, libtorch's products win for some shapes at every width.
//!
//! Timing: on one thread ([`crate::threads::join`]'s first task, inside a parallel region,
//! where libtorch, OpenBLAS and the kernels all run single-threaded), because on a machine
//! whose other cores are busy a multi-threaded product waits for a descheduled thread and
//! its time says nothing about the product; both paths split their output between threads
//! alike, so the faster on one thread is the faster on several. One warm-up call of each
//! path, then rounds that sample both paths back to back (each sample at least 50 us of
//! calls; nine rounds, five for products slower than 5 ms); libtorch is taken when the median
//! over the rounds of its time over the kernels' is below 1 (pairing by round keeps both
//! samples of a ratio in one phase of a shared machine's load); ties go to the kernels.
//!
//! # The same numbers in every process
//! The two paths agree to float rounding, not bitwise (their sums run in other orders). A
//! choice made by timing alone could flip between two processes where both paths are close,
//! and the same seed would then give other bits: so each choice is also appended to a file
//! (one line per shape, keyed by CPU model, instruction set and the OpenBLAS libtorch runs
//! on), and every later process on the machine reads it instead of timing again. The first
//! line for a shape wins, also between processes that timed it at once: each appends its
//! line in one `O_APPEND` write and then re-reads the file, so processes racing on a shape
//! with an empty file all take the path of whichever line landed first (a test races four
//! processes that each time the other path as faster). The file is
//! `$XDG_CACHE_HOME/widthlab/` (or `~/.cache/widthlab/`) `kernel-choices-<fingerprint>.tsv`,
//! never a relative path (so never inside a checkout a process runs in);
//! `WIDTHLAB_KERNELS_CACHE` names another absolute file, or `off` keeps choices in the
//! process only. Delete the file to time again.
//!
//! Without a usable file (no absolute cache directory, or one that cannot be created or
//! written) a process says so in one stderr line and keeps its choices to itself: never an
//! error. Its choices are then its own timings, consistent within the process but not
//! necessarily with other processes: the same seed gives the same numbers to float rounding
//! between them, bitwise within a process and between processes that share a file. A fresh
//! machine (CI) starts with no file and creates it at the first product.
//!
//! # The monitor's fused passes: by construction
//! The RCC monitor's fused passes and reductions ([`crate::ops::dense_change`] and the
//! activation statistics) replace chains of libtorch operations, not one product, so there is
//! nothing of the same shape to time them against: they run on the kernels whenever the
//! kernels are on.
//!
//! # Forcing a path
//! For tests and benchmarks only, never as the way the default is set: the environment
//! variable `WIDTHLAB_KERNELS` (`auto`, the default; `kernels`; `libtorch`), read once per
//! process, and [`with_path`] for the calling thread (and the second task of
//! [`crate::threads::join`]). Built without the `kernels` feature everything is libtorch.
// (without the kernels nothing is timed: the measuring half of this module is unused)
#![cfg_attr(not(feature = "kernels"), allow(dead_code))]
use std::cell::Cell;
use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, Once, OnceLock};
use std::time::Instant;

use crate::simd::Level;

/// Where a product is computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Path {
    /// widthlab's kernels (and matrixmultiply's for general products), split over libtorch's
    /// OpenMP threads.
    Kernels,
    /// libtorch's operations (`mm`).
    Libtorch,
}

impl Path {
    pub fn name(self) -> &'static str {
        match self {
            Path::Kernels => "kernels",
            Path::Libtorch => "libtorch",
        }
    }

    fn parse(s: &str) -> Option<Path> {
        match s {
            "kernels" => Some(Path::Kernels),
            "libtorch" => Some(Path::Libtorch),
            _ => None,
        }
    }
}

/// How this process chooses (from `WIDTHLAB_KERNELS`, read once).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Each product shape by timing (the default).
    Measured,
    /// One path throughout.
    Forced(Path),
}

/// The process's settings, from the environment (the one place this crate reads it).
struct Settings {
    mode: Mode,
    /// Why the mode is what it is, for the log line.
    why: &'static str,
    /// Where choices are kept across processes, if anywhere.
    file: Option<PathBuf>,
}

fn settings() -> &'static Settings {
    static S: OnceLock<Settings> = OnceLock::new();
    S.get_or_init(|| {
        let (mode, why) = if !cfg!(feature = "kernels") {
            (Mode::Forced(Path::Libtorch), "built without the `kernels` feature")
        } else {
            match std::env::var("WIDTHLAB_KERNELS").unwrap_or_default().to_ascii_lowercase().as_str() {
                "" | "auto" => (Mode::Measured, ""),
                "kernels" => (Mode::Forced(Path::Kernels), "WIDTHLAB_KERNELS=kernels"),
                "libtorch" => (Mode::Forced(Path::Libtorch), "WIDTHLAB_KERNELS=libtorch"),
                other => {
                    eprintln!("widthlab-kernels: ignoring WIDTHLAB_KERNELS={other:?} (use auto, kernels or libtorch)");
                    (Mode::Measured, "")
                }
            }
        };
        // (absolute paths only: XDG says to ignore a relative XDG_CACHE_HOME, and a relative
        // file would land in whatever directory, perhaps a checkout, the process runs in)
        let absolute = |v: std::ffi::OsString| Some(PathBuf::from(v)).filter(|p| p.is_absolute());
        let file = match std::env::var_os("WIDTHLAB_KERNELS_CACHE") {
            Some(v) if v.eq_ignore_ascii_case("off") || v.is_empty() => None,
            Some(v) => absolute(v.clone()).or_else(|| {
                cannot_keep(&format!("WIDTHLAB_KERNELS_CACHE={v:?} is not an absolute path"));
                None
            }),
            None => {
                let dir = std::env::var_os("XDG_CACHE_HOME").and_then(absolute).or_else(|| std::env::var_os("HOME").and_then(absolute).map(|h| h.join(".cache")));
                if dir.is_none() {
                    cannot_keep("no absolute XDG_CACHE_HOME or HOME");
                }
                dir.map(|dir| dir.join("widthlab").join(format!("kernel-choices-{:016x}.tsv", fnv1a(machine().as_bytes()))))
            }
        };
        Settings { mode, why, file }
    })
}

/// This process's mode.
pub fn mode() -> Mode {
    settings().mode
}

/// What the choices depend on besides the shape: this crate's version, the CPU, the
/// instruction set the kernels run, and the OpenBLAS libtorch's products run on.
fn machine() -> String {
    let cpu = cpu_model();
    let blas = crate::threads::openblas_core().unwrap_or_else(|| "no OpenBLAS".into());
    format!("widthlab-kernels {}, {cpu}, {}, libtorch mm on {blas}", env!("CARGO_PKG_VERSION"), Level::detected())
}

/// The CPU model name (or the architecture where the system does not say).
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("model name")).and_then(|l| l.split_once(':')).map(|(_, v)| v.trim().to_string()))
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, &b| (h ^ b as u64).wrapping_mul(0x100000001b3))
}

thread_local! {
    static FORCED: Cell<Option<Path>> = const { Cell::new(None) };
}

/// Runs `f` with every product it starts on this thread on `path` (for tests and benchmarks);
/// `None`, without running `f`, for [`Path::Kernels`] in a build without them.
pub fn with_path<R>(path: Path, f: impl FnOnce() -> R) -> Option<R> {
    if path == Path::Kernels && !cfg!(feature = "kernels") {
        return None;
    }
    Some(forced(Some(path), f))
}

fn forced<R>(path: Option<Path>, f: impl FnOnce() -> R) -> R {
    scoped(&FORCED, path, f)
}

/// Runs `f` with the thread-local `key` set to `value`, restored after (also if `f` panics).
pub(crate) fn scoped<T: Copy + 'static, R>(key: &'static std::thread::LocalKey<Cell<T>>, value: T, f: impl FnOnce() -> R) -> R {
    struct Restore<T: Copy + 'static>(&'static std::thread::LocalKey<Cell<T>>, T);
    impl<T: Copy + 'static> Drop for Restore<T> {
        fn drop(&mut self) {
            self.0.with(|c| c.set(self.1));
        }
    }
    let _restore = Restore(key, key.with(|c| c.replace(value)));
    f()
}

/// The calling thread's forced path and level, to run work handed to another thread under.
pub(crate) struct Overrides {
    path: Option<Path>,
    level: Option<Level>,
}

impl Overrides {
    pub(crate) fn current() -> Self {
        Overrides { path: FORCED.with(Cell::get), level: crate::simd::forced_level() }
    }

    pub(crate) fn apply<R>(&self, f: impl FnOnce() -> R) -> R {
        forced(self.path, || crate::simd::forced(self.level, f))
    }
}

/// The path forced on this thread or process, if any.
fn forced_path() -> Option<Path> {
    FORCED.with(Cell::get).or(match mode() {
        Mode::Forced(p) => Some(p),
        Mode::Measured => None,
    })
}

/// Whether the monitor's fused passes run on the kernels (see the module docs).
pub(crate) fn fused() -> bool {
    cfg!(feature = "kernels") && forced_path() != Some(Path::Libtorch)
}

/// One product shape's choice.
#[derive(Clone, Debug, PartialEq)]
pub struct Choice {
    /// The shape, e.g. `linear f32 64x1024x1024 NN` (operation, element type, sizes, operand
    /// layouts: `N` row-major, `T` a transposed view, `S` other strides, `+` accumulating).
    pub product: String,
    pub path: Path,
    /// Seconds per call on each path when it was timed.
    pub kernels_seconds: f64,
    pub libtorch_seconds: f64,
    /// Timed by this process (else read from the choices file).
    pub timed_here: bool,
}

/// The choices of every product shape this process has computed (not forced), sorted by
/// product.
pub fn choices() -> Vec<Choice> {
    let mut v: Vec<Choice> = table().lock().unwrap_or_else(|e| e.into_inner()).used.values().cloned().collect();
    v.sort_by(|a, b| a.product.cmp(&b.product));
    v
}

/// A product's shape, under which its choice is kept: the operation (`linear`, `mm`, `gemm`,
/// `tn`, `gram`), the element type, the sizes, and the operands' layouts (`N` row-major, `T`
/// a transposed view, `S` other strides; `+` for a product accumulated into its output).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Shape {
    pub(crate) op: &'static str,
    pub(crate) double: bool,
    /// The sizes (`m, k, n` of `[m, k] x [k, n]`; unused ones 0).
    pub(crate) dims: [usize; 3],
    pub(crate) layout: [u8; 3],
}

impl std::fmt::Display for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let dims: Vec<String> = self.dims.iter().filter(|&&d| d > 0).map(usize::to_string).collect();
        let layout: String = self.layout.iter().filter(|&&c| c != 0).map(|&c| c as char).collect();
        write!(f, "{} {} {} {layout}", self.op, if self.double { "f64" } else { "f32" }, dims.join("x"))
    }
}

/// This process's choices by shape, and those of the choices file not used yet, by text.
#[derive(Default)]
struct Table {
    used: HashMap<Shape, Choice>,
    kept: HashMap<String, Choice>,
}

fn table() -> &'static Mutex<Table> {
    static T: OnceLock<Mutex<Table>> = OnceLock::new();
    T.get_or_init(|| Mutex::new(Table { used: HashMap::new(), kept: settings().file.as_ref().map(|f| read_choices(f)).unwrap_or_default() }))
}

/// The choices in a file (the first line of a product wins; lines that do not parse, and a
/// last line another process is still writing, are skipped).
fn read_choices(file: &std::path::Path) -> HashMap<String, Choice> {
    let mut out = HashMap::new();
    let Ok(text) = std::fs::read_to_string(file) else { return out };
    let whole = text.split_inclusive('\n').filter_map(|l| l.strip_suffix('\n'));
    for line in whole.filter(|l| !l.starts_with('#')) {
        let f: Vec<&str> = line.split('\t').collect();
        let [product, path, k, l] = f[..] else { continue };
        let (Some(path), Ok(k), Ok(l)) = (Path::parse(path), k.parse(), l.parse()) else { continue };
        out.entry(product.to_string()).or_insert(Choice { product: product.to_string(), path, kernels_seconds: k, libtorch_seconds: l, timed_here: false });
    }
    out
}

/// Appends a choice to the file (creating it and its directory, with a header), then returns
/// the file's choice for the product: the first line for it, which may be another process's.
fn persist(file: &std::path::Path, c: &Choice) -> std::io::Result<Choice> {
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(file)?;
    if f.metadata()?.len() == 0 {
        let header = format!("# {}\n# product\tpath\tkernels s/call\tlibtorch s/call\n", machine());
        f.write_all(header.as_bytes())?;
    }
    // one write of one short line: appended whole, also beside another process's
    f.write_all(format!("{}\t{}\t{:e}\t{:e}\n", c.product, c.path.name(), c.kernels_seconds, c.libtorch_seconds).as_bytes())?;
    read_choices(file).remove(&c.product).ok_or_else(|| std::io::Error::other("the line just appended does not read back"))
}

/// Set once the choices file failed: the process keeps its choices to itself from then on.
static FILE_FAILED: AtomicBool = AtomicBool::new(false);

/// Says once per process, on stderr, that choices are not kept across processes, and why.
fn cannot_keep(why: &str) {
    static SAID: Once = Once::new();
    FILE_FAILED.store(true, Ordering::Relaxed);
    SAID.call_once(|| eprintln!("widthlab-kernels: cannot keep kernel choices across processes ({why}); this process keeps its own"));
}

/// The path of a product of `shape`: forced, chosen before (in this process or, from the
/// choices file, in an earlier one), or timed now by calling the runner `make` returns
/// (which computes the product on the path it is given, into scratch outputs) and kept.
pub(crate) fn choose<'a>(shape: Shape, make: impl FnOnce() -> Box<dyn FnMut(Path) + 'a>) -> Path {
    if let Some(p) = forced_path() {
        return p;
    }
    {
        let mut t = table().lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = t.used.get(&shape) {
            return c.path;
        }
        if let Some(c) = t.kept.remove(&shape.to_string()) {
            let path = c.path;
            t.used.insert(shape, c);
            return path;
        }
    }
    // (timed without the lock: another thread may time the same shape; the first kept wins)
    let t = crate::threads::join(|| time(&mut *make()), || ()).0;
    let path = if t.ratio < 1.0 { Path::Libtorch } else { Path::Kernels };
    let mut choice = Choice { product: shape.to_string(), path, kernels_seconds: t.kernels, libtorch_seconds: t.libtorch, timed_here: true };
    if let Some(file) = settings().file.as_deref().filter(|_| !FILE_FAILED.load(Ordering::Relaxed)) {
        match persist(file, &choice) {
            Ok(kept) => choice.path = kept.path,
            Err(e) => cannot_keep(&format!("{}: {e}", file.display())),
        }
    }
    table().lock().unwrap_or_else(|e| e.into_inner()).used.entry(shape).or_insert(choice).path
}

/// Shortest duration of one timing sample.
const SAMPLE_SECONDS: f64 = 50e-6;

/// Rounds of timing samples (one per path each), and for products slower than 5 ms.
const ROUNDS: usize = 9;
const ROUNDS_SLOW: usize = 5;

/// Times `run` on both paths: after a warm-up call of each, [`ROUNDS`] rounds
/// ([`ROUNDS_SLOW`] for products slower than 5 ms), each a sample
/// of one path and then of the other (in alternating order), each sample enough calls to
/// last [`SAMPLE_SECONDS`]. Returns each path's fastest time per call and the median over the
/// rounds of the ratio libtorch / kernels: the two samples of a round see the machine in the
/// same phase, so the ratio is robust to its drift and to bursts of other work.
pub(crate) fn time(run: &mut dyn FnMut(Path)) -> Timing {
    let mut once = |p: Path| {
        let t = Instant::now();
        run(p);
        t.elapsed().as_secs_f64()
    };
    once(Path::Kernels);
    once(Path::Libtorch);
    let fastest = once(Path::Kernels).min(once(Path::Libtorch)).max(1e-9);
    let calls = (SAMPLE_SECONDS / fastest).ceil().clamp(1.0, 1000.0) as usize;
    let mut sample = |p: Path| {
        let t = Instant::now();
        for _ in 0..calls {
            run(p);
        }
        t.elapsed().as_secs_f64() / calls as f64
    };
    let rounds = if fastest > 5e-3 { ROUNDS_SLOW } else { ROUNDS };
    let (mut kernels, mut libtorch, mut ratios) = (f64::INFINITY, f64::INFINITY, Vec::with_capacity(rounds));
    for round in 0..rounds {
        let (k, l) = if round % 2 == 0 {
            let k = sample(Path::Kernels);
            (k, sample(Path::Libtorch))
        } else {
            let l = sample(Path::Libtorch);
            (sample(Path::Kernels), l)
        };
        kernels = kernels.min(k);
        libtorch = libtorch.min(l);
        ratios.push(l / k.max(1e-12));
    }
    ratios.sort_by(f64::total_cmp);
    Timing { kernels, libtorch, ratio: ratios[rounds / 2] }
}

/// What [`time`] measured.
pub(crate) struct Timing {
    /// Fastest seconds per call on each path.
    pub(crate) kernels: f64,
    pub(crate) libtorch: f64,
    /// Median over rounds of libtorch's time / the kernels' time: below 1, libtorch is faster.
    pub(crate) ratio: f64,
}

/// One line on how this process computes its products.
pub fn describe() -> String {
    let s = settings();
    let level = Level::detected();
    let blas = crate::threads::openblas_core().map(|c| format!(" (OpenBLAS {c} here)")).unwrap_or_default();
    match s.mode {
        Mode::Forced(Path::Libtorch) => format!("products and monitor passes on libtorch{blas} throughout ({})", s.why),
        Mode::Forced(Path::Kernels) => format!("products on widthlab-kernels ({level}) throughout ({})", s.why),
        Mode::Measured => {
            let kept = match &s.file {
                Some(f) if !FILE_FAILED.load(Ordering::Relaxed) => format!("kept in {}", f.display()),
                _ => "in this process only".to_string(),
            };
            format!("each product shape on widthlab-kernels ({level}) or libtorch's mm{blas}, whichever timed faster (once per shape, {kept}); monitor passes on widthlab-kernels")
        }
    }
}

/// Says on stderr, once per process, how products are computed (called by every function of
/// [`crate::ops`]).
pub(crate) fn log_once() {
    static LOG: Once = Once::new();
    LOG.call_once(|| eprintln!("widthlab: {}", describe()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choices_are_read_first_line_first_and_persisted() {
        let dir = std::env::temp_dir().join(format!("widthlab-kernels-test-{}", std::process::id()));
        let file = dir.join("choices.tsv");
        let _ = std::fs::remove_file(&file);
        let c = |product: &str, path| Choice { product: product.into(), path, kernels_seconds: 1e-3, libtorch_seconds: 2e-3, timed_here: true };
        // the first line for a product wins: a second process's later line does not
        assert_eq!(persist(&file, &c("mm f32 2x3x4 NN", Path::Libtorch)).unwrap().path, Path::Libtorch);
        assert_eq!(persist(&file, &c("mm f32 2x3x4 NN", Path::Kernels)).unwrap().path, Path::Libtorch);
        assert_eq!(persist(&file, &c("mm f32 2x3x5 NN", Path::Kernels)).unwrap().path, Path::Kernels);
        // garbage lines are skipped; the header is a comment
        std::fs::OpenOptions::new().append(true).open(&file).unwrap().write_all(b"nonsense\nmm\tkernels\tx\t1\n").unwrap();
        let read = read_choices(&file);
        assert_eq!(read.len(), 2);
        assert_eq!(read["mm f32 2x3x4 NN"].kernels_seconds, 1e-3);
        assert!(!read["mm f32 2x3x4 NN"].timed_here);
        assert!(std::fs::read_to_string(&file).unwrap().starts_with("# widthlab-kernels"));
        // a last line without its newline (another process mid-write) is not read yet
        std::fs::OpenOptions::new().append(true).open(&file).unwrap().write_all(b"mm f32 9x9x9 NN\tkernels\t1e-3\t2").unwrap();
        assert!(!read_choices(&file).contains_key("mm f32 9x9x9 NN"));
        // a file that cannot be written (its directory is a file) is an error, not a panic
        let blocked = file.join("choices.tsv");
        assert!(persist(&blocked, &c("mm f32 2x3x4 NN", Path::Kernels)).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// What a child process of [`processes_racing_on_an_empty_file_agree`] prints.
    const CHILD_SAYS: &str = "widthlab-kernels race child chose:";

    /// Runs this test binary's [`race_child`] in `n` processes with `env`, the `i`-th told to
    /// find `prefer(i)` faster; returns each one's choice and its stderr.
    #[cfg(feature = "kernels")]
    fn race(n: usize, env: &[(&str, &std::ffi::OsStr)], prefer: impl Fn(usize) -> Path) -> Vec<(Path, String)> {
        let dir = tempfile_dir("race");
        let children: Vec<_> = (0..n)
            .map(|i| {
                let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
                cmd.args(["--exact", "dispatch::tests::race_child", "--ignored", "--nocapture", "--test-threads", "1"])
                    .env_remove("WIDTHLAB_KERNELS")
                    .env("WIDTHLAB_RACE_PREFER", prefer(i).name())
                    .env("WIDTHLAB_RACE_DIR", &dir)
                    .env("WIDTHLAB_RACE_N", n.to_string())
                    .env("WIDTHLAB_RACE_I", i.to_string())
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped());
                for (k, v) in env {
                    cmd.env(k, v);
                }
                cmd.spawn().unwrap()
            })
            .collect();
        let out = children
            .into_iter()
            .map(|c| {
                let o = c.wait_with_output().unwrap();
                let (stdout, stderr) = (String::from_utf8_lossy(&o.stdout).to_string(), String::from_utf8_lossy(&o.stderr).to_string());
                assert!(o.status.success(), "child failed: {stdout}\n{stderr}");
                // (libtest prints the test's name in front of its output on the same line)
                let chose = stdout.lines().find_map(|l| l.split_once(CHILD_SAYS).map(|(_, p)| p)).and_then(|p| Path::parse(p.trim()));
                (chose.unwrap_or_else(|| panic!("child said no choice: {stdout}")), stderr)
            })
            .collect();
        let _ = std::fs::remove_dir_all(&dir);
        out
    }

    /// A fresh directory of this test process (one per call).
    fn tempfile_dir(what: &str) -> PathBuf {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("widthlab-kernels-{what}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// The guarantee of "The same numbers in every process": processes that start with no
    /// choices file and time one shape at once, half of them finding the kernels faster and
    /// half libtorch, all take the path of the file's first line. Every child has loaded the
    /// (empty) file before any times, so all of them time and append: the race is real.
    #[test]
    #[cfg(feature = "kernels")]
    fn processes_racing_on_an_empty_file_agree() {
        let dir = tempfile_dir("race-file");
        let file = dir.join("choices.tsv");
        for _ in 0..2 {
            let _ = std::fs::remove_file(&file);
            let chose = race(4, &[("WIDTHLAB_KERNELS_CACHE", file.as_os_str())], |i| if i % 2 == 0 { Path::Kernels } else { Path::Libtorch });
            let text = std::fs::read_to_string(&file).unwrap();
            let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("race-op ")).collect();
            assert_eq!(lines.len(), 4, "every child timed and appended:\n{text}");
            let first = Path::parse(lines[0].split('\t').nth(1).unwrap()).unwrap();
            assert!(lines.iter().any(|l| l.contains("\tkernels\t")) && lines.iter().any(|l| l.contains("\tlibtorch\t")), "the children timed different paths faster:\n{text}");
            for (path, stderr) in &chose {
                assert_eq!(*path, first, "every child takes the first line's path");
                assert!(!stderr.contains("cannot keep"), "{stderr}");
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Without a usable file (its directory is a file; a relative path) a process says so
    /// in one stderr line and chooses by its own timing: never an error.
    #[test]
    #[cfg(feature = "kernels")]
    fn an_unusable_file_leaves_choices_in_the_process() {
        let dir = tempfile_dir("blocked");
        let not_a_dir = dir.join("a-file");
        std::fs::write(&not_a_dir, "").unwrap();
        let blocked = not_a_dir.join("choices.tsv");
        for (file, why) in [(blocked.as_os_str(), "a-file/choices.tsv"), (std::ffi::OsStr::new("relative/choices.tsv"), "not an absolute path")] {
            let chose = race(2, &[("WIDTHLAB_KERNELS_CACHE", file)], |_| Path::Libtorch);
            for (path, stderr) in chose {
                assert_eq!(path, Path::Libtorch, "its own timing");
                let said: Vec<&str> = stderr.lines().filter(|l| l.contains("cannot keep kernel choices")).collect();
                assert_eq!(said.len(), 1, "one line: {stderr}");
                assert!(said[0].contains(why), "{stderr}");
            }
        }
        assert!(!std::path::Path::new("relative").exists(), "nothing written relative to the working directory");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A child of [`processes_racing_on_an_empty_file_agree`]: loads the choices file, waits
    /// for its siblings, times shape `race-op` on a runner whose `WIDTHLAB_RACE_PREFER` path
    /// is 4x faster (twice, so the second is a lookup), and prints its choice.
    #[test]
    #[ignore = "a child process of the tests above, run by them"]
    fn race_child() {
        let var = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} is set by the parent test"));
        let (dir, n, i) = (PathBuf::from(var("WIDTHLAB_RACE_DIR")), var("WIDTHLAB_RACE_N").parse::<usize>().unwrap(), var("WIDTHLAB_RACE_I"));
        let prefer = Path::parse(&var("WIDTHLAB_RACE_PREFER")).unwrap();
        drop(table().lock()); // the file as it is before any sibling appends
        std::fs::write(dir.join(format!("ready-{i}")), "").unwrap();
        let t = Instant::now();
        while std::fs::read_dir(&dir).unwrap().count() < n {
            assert!(t.elapsed().as_secs() < 60, "siblings did not start");
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        let spin = |s: f64| {
            let t = Instant::now();
            while t.elapsed().as_secs_f64() < s {}
        };
        let shape = Shape { op: "race-op", double: false, dims: [1, 2, 3], layout: *b"NN+" };
        let runner = || -> Box<dyn FnMut(Path)> { Box::new(move |p| spin(if p == prefer { 2e-5 } else { 8e-5 })) };
        let path = choose(shape, runner);
        assert_eq!(choose(shape, || panic!("chosen before")), path);
        println!("{CHILD_SAYS} {}", path.name());
    }

    #[test]
    fn timing_picks_the_faster_path() {
        // a runner whose libtorch path is slower: the kernels win, and the other way round
        let spin = |s: f64| {
            let t = Instant::now();
            while t.elapsed().as_secs_f64() < s {}
        };
        let t = time(&mut |p| spin(if p == Path::Kernels { 2e-5 } else { 6e-5 }));
        assert!(t.kernels < t.libtorch && t.ratio > 1.0, "{} {} {}", t.kernels, t.libtorch, t.ratio);
        let t = time(&mut |p| spin(if p == Path::Kernels { 6e-5 } else { 2e-5 }));
        assert!(t.libtorch < t.kernels && t.ratio < 1.0, "{} {} {}", t.kernels, t.libtorch, t.ratio);
    }

    #[test]
    fn a_forced_path_wins_and_is_restored() {
        let p = Shape { op: "test-op", double: false, dims: [1, 2, 3], layout: *b"NT+" };
        assert_eq!(p.to_string(), "test-op f32 1x2x3 NT+");
        assert_eq!(Shape { op: "gram", double: true, dims: [4, 5, 0], layout: [b'N', 0, 0] }.to_string(), "gram f64 4x5 N");
        let never = || -> Box<dyn FnMut(Path)> { panic!("a forced path times nothing") };
        assert_eq!(with_path(Path::Libtorch, || choose(p, never)), Some(Path::Libtorch));
        if cfg!(feature = "kernels") {
            assert_eq!(with_path(Path::Kernels, || choose(p, never)), Some(Path::Kernels));
        } else {
            assert_eq!(with_path(Path::Kernels, || ()), None);
        }
        assert_eq!(FORCED.with(Cell::get), None, "restored");
    }
}
