//! Subcommands of the `widthlab` binary; each is a thin layer over the library.
pub mod coord_check;
pub mod gpt_train;
pub mod params;
pub mod plan;
pub mod run_flags;
pub mod sharpness;
pub mod sweep;
pub mod train;
pub mod uv;
