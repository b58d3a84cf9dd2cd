//! The library's error type. Binaries wrap it in `anyhow`; the library never panics on bad
//! input (configs, files, widths), it returns one of these with a message a user can act on.
use std::path::PathBuf;

/// Everything that can go wrong in widthlab for reasons outside the code itself.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A dataset's files are not where we looked. `hint` says how to get them.
    #[error("dataset {name} not found at {path}: {hint}")]
    DatasetMissing { name: String, path: PathBuf, hint: String },

    /// A data file exists but cannot be parsed (wrong magic number, truncated, ...).
    #[error("corrupt data file {path}: {reason}")]
    CorruptData { path: PathBuf, reason: String },

    /// A configuration value is out of range or inconsistent (width 0, empty grid, ...).
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),

    /// A configuration file could not be parsed.
    #[error("cannot parse config {path}: {reason}")]
    ConfigParse { path: PathBuf, reason: String },

    /// A parameterization name that is neither built in nor defined by the user.
    #[error("unknown parameterization `{name}`; built-in ones are: {known}")]
    UnknownParameterization { name: String, known: String },

    /// A requested device is not available (e.g. `cuda` on a machine without a GPU).
    #[error("device {0} is not available")]
    DeviceUnavailable(String),

    /// File-system errors, with the path involved. The I/O error is part of the message, not
    /// a `source`, so `anyhow`'s `{:#}` chain does not print it twice.
    #[error("{path}: {error}")]
    Io { path: PathBuf, error: std::io::Error },

    /// An error raised inside libtorch (e.g. a failed allocation). Shown as its first line:
    /// libtorch appends a C++ backtrace to its messages.
    #[error("libtorch: {}", first_line(.0))]
    Torch(tch::TchError),

    /// A sweep store cannot be read or written (locked beyond the busy timeout, disk full, ...).
    #[error("sweep store {path}: {reason}")]
    Store { path: PathBuf, reason: String },

    /// A file that is not a sweep store of this widthlab version.
    #[error("incompatible sweep store {path}: {reason}")]
    IncompatibleStore { path: PathBuf, reason: String },

    /// Runs of a sweep whose training returned an error (the other runs finished).
    #[error("{0}")]
    RunsFailed(String),

    /// Serialisation of results failed.
    #[error("serialisation: {0}")]
    Serde(String),
}

fn first_line(e: &tch::TchError) -> String {
    e.to_string().lines().find(|l| !l.trim().is_empty()).unwrap_or("").trim().to_string()
}

/// Short alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps an `std::io::Error` with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), error: source }
    }
    /// Shorthand for [`Error::InvalidConfig`].
    pub fn config(msg: impl Into<String>) -> Self {
        Error::InvalidConfig(msg.into())
    }
}

impl From<tch::TchError> for Error {
    fn from(e: tch::TchError) -> Self {
        Error::Torch(e)
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::Serde(e.to_string())
    }
}
