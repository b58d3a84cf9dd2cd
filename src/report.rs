//! Where notebooks put what they show: the output root ([`out_dir`]: `WIDTHLAB_OUT`, default
//! `<repo>/out`) and figures under `figures/`, saved for the reproduction report and shown
//! inline ([`show`], [`show_panels`]). The claims a notebook checks and their verdicts are
//! [`crate::claims`]'s.
use std::path::PathBuf;

use crate::plot::{Figure, Panels};
use crate::Result;

/// The output root (`WIDTHLAB_OUT` or `<repo>/out`).
pub fn out_dir() -> PathBuf {
    std::env::var("WIDTHLAB_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/out")))
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
