//! Experiment profiles: the same code at three scales. What a profile changes is widths,
//! seeds, steps and data, never code paths.
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// How big an experiment is: the same code at three scales.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Profile {
    /// Seconds: exercises every path (CI).
    Smoke,
    /// Minutes on a 2-core CPU: enough to see each claim.
    #[default]
    Quick,
    /// The paper's settings (a GPU machine).
    Paper,
}

impl std::str::FromStr for Profile {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "smoke" => Ok(Profile::Smoke),
            "quick" => Ok(Profile::Quick),
            "paper" => Ok(Profile::Paper),
            _ => Err(Error::config(format!("unknown profile `{s}` (use smoke, quick or paper)"))),
        }
    }
}

impl std::fmt::Display for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Profile::Smoke => "smoke",
            Profile::Quick => "quick",
            Profile::Paper => "paper",
        })
    }
}

impl Profile {
    /// The profile named by the environment variable `WIDTHLAB_PROFILE` (default `quick`);
    /// notebooks read their profile this way.
    pub fn from_env() -> Result<Self> {
        match std::env::var("WIDTHLAB_PROFILE") {
            Ok(s) if !s.is_empty() => s.parse(),
            _ => Ok(Profile::Quick),
        }
    }
}
