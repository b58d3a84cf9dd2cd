//! Claims checks for notebooks: every notebook ends by checking the paper's claims it
//! reproduces against what it measured, and writes them as JSON for the reproduction report.
//!
//! A failed claim prints a line starting with `WIDTHLAB CHECK FAILED:` and makes
//! [`Claims::finish`] return an error: the evcxr kernel does not fail a headless run on a
//! runtime error by itself, so `notebooks/run.py` scans the outputs for that marker.
//! Output locations: `WIDTHLAB_OUT` (default `<repo>/out`), claims under `claims/`, figures
//! under `figures/`.
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::plot::{Figure, Panels};
use crate::profile::Profile;
use crate::{Error, Result};

/// The marker `notebooks/run.py` looks for.
pub const FAILED_MARKER: &str = "WIDTHLAB CHECK FAILED:";

/// One checked claim.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Claim {
    pub id: String,
    pub claim: String,
    /// What the paper reports or predicts.
    pub paper: String,
    /// What this run measured.
    pub measured: String,
    pub holds: bool,
}

/// The claims of one notebook run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    pub notebook: String,
    pub profile: Profile,
    pub claims: Vec<Claim>,
    /// Seconds since the Unix epoch when written.
    pub written_at: u64,
}

/// The output root (`WIDTHLAB_OUT` or `<repo>/out`).
pub fn out_dir() -> PathBuf {
    std::env::var("WIDTHLAB_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/out")))
}

impl Claims {
    pub fn new(notebook: &str, profile: Profile) -> Self {
        Claims { notebook: notebook.into(), profile, claims: vec![], written_at: 0 }
    }

    /// Records a claim; `holds` must come from a comparison that can fail.
    pub fn check(&mut self, id: &str, claim: &str, paper: &str, measured: impl std::fmt::Display, holds: bool) -> bool {
        self.claims.push(Claim { id: id.into(), claim: claim.into(), paper: paper.into(), measured: measured.to_string(), holds });
        holds
    }

    /// Prints the table, writes `claims/<notebook>.json`, and returns an error naming the
    /// claims that do not hold.
    pub fn finish(&mut self) -> Result<()> {
        self.written_at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        println!("{:<8} {:<60} {:<22} {:<22} {}", "id", "claim", "paper", "measured", "holds");
        for c in &self.claims {
            println!("{:<8} {:<60} {:<22} {:<22} {}", c.id, c.claim, c.paper, c.measured, if c.holds { "yes" } else { "NO" });
        }
        let dir = out_dir().join("claims");
        let path = dir.join(format!("{}.json", self.notebook));
        crate::files::write_atomic(&path, serde_json::to_string_pretty(self)?.as_bytes())?;
        let failed: Vec<&Claim> = self.claims.iter().filter(|c| !c.holds).collect();
        for c in &failed {
            println!("{FAILED_MARKER} {} [{}]: paper {}, measured {}", c.claim, c.id, c.paper, c.measured);
        }
        if failed.is_empty() {
            println!("all {} claims hold ({} profile); written to {}", self.claims.len(), self.profile, path.display());
            Ok(())
        } else {
            Err(Error::config(format!("{} of {} claims do not hold", failed.len(), self.claims.len())))
        }
    }
}

/// Saves a figure under `figures/<name>.svg` for the report and shows it inline.
pub fn show(name: &str, fig: &Figure) -> Result<()> {
    fig.save_svg(&out_dir().join("figures").join(format!("{name}.svg")))?;
    fig.evcxr_display();
    Ok(())
}

/// [`show`] for panels.
pub fn show_panels(name: &str, p: &Panels) -> Result<()> {
    p.save_svg(&out_dir().join("figures").join(format!("{name}.svg")))?;
    p.evcxr_display();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_are_written_and_failures_reported() {
        let dir = tempfile::tempdir().unwrap();
        // (no other test reads WIDTHLAB_OUT)
        std::env::set_var("WIDTHLAB_OUT", dir.path());
        let mut c = Claims::new("t", Profile::Smoke);
        assert!(c.check("a", "exponent near -1", "-1", -0.98, (-0.98f64 + 1.0).abs() < 0.1));
        c.finish().unwrap();
        let j: Claims = serde_json::from_str(&std::fs::read_to_string(dir.path().join("claims/t.json")).unwrap()).unwrap();
        assert_eq!(j.claims.len(), 1);
        assert!(!c.check("b", "exponent near 0", "0", 0.7, false));
        let e = c.finish().unwrap_err();
        assert!(e.to_string().contains("1 of 2 claims"));
        std::env::remove_var("WIDTHLAB_OUT");
    }
}
