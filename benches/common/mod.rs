//! Shared by the benchmarks that time a Python reference in the same invocation.

/// The Python that runs the references: `WIDTHLAB_PYTHON`, else the project venv (which has
/// torch and numpy), else `python3` from PATH.
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
