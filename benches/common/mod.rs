//! Shared by the benchmarks that time a Python reference in the same invocation (each bench
//! compiles this module and uses part of it).
#![allow(dead_code)]

/// The Python that runs the references: `WIDTHLAB_PYTHON`, else the project venv (which has
/// torch and numpy), else `python3` from PATH.
#[allow(dead_code)]
pub fn python() -> String {
    if let Ok(p) = std::env::var("WIDTHLAB_PYTHON") {
        return p;
    }
    let venv = concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/python");
    if std::path::Path::new(venv).exists() {
        venv.into()
    } else {
        "python3".into()
    }
}

/// The CPU, the kernels' instruction set and how this process computes its products, for a
/// bench's header.
#[allow(dead_code)]
pub fn machine() -> String {
    use widthlab::kernels::{dispatch, Level};
    format!("CPU: {} (kernels: {}); {}", dispatch::cpu_model(), Level::detected(), dispatch::describe())
}

/// The path each product shape of this process took, with both paths' times when they were
/// timed (a markdown table).
#[allow(dead_code)]
pub fn paths() -> String {
    use widthlab::kernels::dispatch;
    let choices = dispatch::choices();
    if choices.is_empty() {
        return format!("Every product on one path: {}.\n", dispatch::describe());
    }
    let mut s = String::from("| product (op, type, sizes, layouts, threads) | path | kernels us/call | libtorch us/call |\n|---|---|---:|---:|\n");
    for c in choices {
        let from = if c.timed_here { "" } else { " (kept)" };
        s += &format!("| `{}` | {}{from} | {:.1} | {:.1} |\n", c.product, c.path.name(), 1e6 * c.kernels_seconds, 1e6 * c.libtorch_seconds);
    }
    s
}

/// Writes `target/bench-results/{name}.md`, the bench's section of `docs/benchmarks.md`
/// (`docs/benchmarks.sh` collects them).
#[allow(dead_code)]
pub fn write_section(name: &str, markdown: &str) {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/target/bench-results");
    let path = format!("{dir}/{name}.md");
    match std::fs::create_dir_all(dir).and_then(|_| std::fs::write(&path, markdown)) {
        Ok(()) => println!("section written to {path}"),
        Err(e) => eprintln!("could not write {path}: {e}"),
    }
}

/// A Python reference script run as a child process that serves timing blocks on request:
/// it prints `ready` once set up, then answers every line written to its stdin with one JSON
/// line, and exits at the end of its input. It gets widthlab's glibc allocator settings
/// ([`widthlab::device::tune_allocator`]: no mmap for large blocks, no heap trimming) through
/// `MALLOC_*` variables, so that neither side pays page faults the other avoids.
#[allow(dead_code)]
pub struct Reference {
    child: std::process::Child,
    out: std::io::BufReader<std::process::ChildStdout>,
}

#[allow(dead_code)]
impl Reference {
    /// Starts `benches/reference/<script>` with `args`; `None` (with a message) if it does not
    /// start or does not get ready.
    pub fn start(script: &str, args: &[String]) -> Option<Reference> {
        use std::io::BufRead;
        let path = format!("{}/benches/reference/{script}", env!("CARGO_MANIFEST_DIR"));
        let mut child = std::process::Command::new(python())
            .arg(&path)
            .args(args)
            .env("MALLOC_MMAP_MAX_", "0")
            .env("MALLOC_TRIM_THRESHOLD_", i32::MAX.to_string())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| eprintln!("PyTorch reference did not start: {e}"))
            .ok()?;
        let mut out = std::io::BufReader::new(child.stdout.take()?);
        let mut line = String::new();
        out.read_line(&mut line).ok()?;
        if line.trim() != "ready" {
            eprintln!("PyTorch reference failed (its error is above)");
            return None;
        }
        Some(Reference { child, out })
    }

    /// Sends one request line and returns the JSON line it answers with.
    pub fn request(&mut self, line: &str) -> Option<serde_json::Value> {
        use std::io::{BufRead, Write};
        writeln!(self.child.stdin.as_mut()?, "{line}").ok()?;
        let mut answer = String::new();
        self.out.read_line(&mut answer).ok()?;
        serde_json::from_str(&answer).ok()
    }
}

impl Drop for Reference {
    fn drop(&mut self) {
        drop(self.child.stdin.take()); // end of input: the script exits
        let _ = self.child.wait();
    }
}
