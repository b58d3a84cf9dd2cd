//! Shared by the benchmarks that time a Python reference in the same invocation.

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
