//! Experiment profiles: the same code at three scales. What a profile changes is widths,
//! seeds, steps and data, never code paths.
//!
//! Seeds of every preset come from [`seeds`]: `k` consecutive seeds from the *seed base*
//! `WIDTHLAB_SEED_BASE` (default 0), so a whole reproduction can be repeated on disjoint seeds
//! (`WIDTHLAB_SEED_BASE=100 bash environment/main.sh`) to see which verdicts depend on them.
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

/// The seed base: `WIDTHLAB_SEED_BASE` (default 0).
pub fn seed_base() -> Result<u64> {
    match std::env::var("WIDTHLAB_SEED_BASE") {
        Ok(s) if !s.trim().is_empty() => s.trim().parse().map_err(|_| Error::config(format!("WIDTHLAB_SEED_BASE must be a non-negative integer, got `{s}`"))),
        _ => Ok(0),
    }
}

/// `k` consecutive seeds from the seed base ([`seed_base`]); a malformed
/// `WIDTHLAB_SEED_BASE` is an error.
pub fn seeds(k: usize) -> Result<Vec<u64>> {
    let b = seed_base()?;
    Ok((0..k as u64).map(|i| b + i).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_shift_with_the_seed_base() {
        // (no other test reads WIDTHLAB_SEED_BASE)
        std::env::remove_var("WIDTHLAB_SEED_BASE");
        assert_eq!(seeds(3).unwrap(), vec![0, 1, 2]);
        std::env::set_var("WIDTHLAB_SEED_BASE", "100");
        assert_eq!(seeds(2).unwrap(), vec![100, 101]);
        std::env::set_var("WIDTHLAB_SEED_BASE", "-1");
        assert!(seeds(2).unwrap_err().to_string().contains("WIDTHLAB_SEED_BASE"));
        std::env::remove_var("WIDTHLAB_SEED_BASE");
        assert_eq!("quick".parse::<Profile>().unwrap(), Profile::Quick);
    }
}
