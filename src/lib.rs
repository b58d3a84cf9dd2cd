//! # widthlab
//!
//! A research environment for studying how neural networks behave as they get wider,
//! built around the NeurIPS 2025 paper "On the Surprising Effectiveness of Large Learning
//! Rates under Standard Width Scaling" (Haas, Bordt, von Luxburg, Vankadara).
//!
//! Vocabulary follows the paper: layer *roles* (input-like, hidden-like, output-like),
//! *effective* updates `Delta W_t x_t` vs *propagating* updates `W_0 Delta x_t`, `Delta`
//! (since initialisation) vs `delta` (one step).
//!
//! Modules:
//! - [`param`]: width parameterizations (SP, NTP, muP, SP-full-align, MUSOLI, any abc rule).
//! - [`model`]: the MLP (and, later, GPT), whose every weight knows its role.
//! - [`loss`], [`optim`]: losses and optimizers with per-layer learning rates.
//! - [`data`]: IDX / CIFAR-10 loaders and the multi-index teacher generator.
//! - [`train`]: the training loop, divergence as an outcome.
//! - [`sweep`]: learning-rate sweeps across widths (crash-safe SQLite store, shards,
//!   scheduler) and the optimal / max-stable learning-rate exponents.
//! - [`theory`]: closed-form dynamics (2-layer linear "uv" model).
//! - [`sharpness`]: Hessian top eigenvalues, Gauss-Newton part, trace and spectral density of
//!   the training loss by Lanczos on Hessian-vector products, across widths and over training.
//! - [`plan`]: the compute plan of a reproduction: per notebook, runs, FLOPs and estimated GPU
//!   time at a profile, from the presets the notebooks call.
//! - [`claims`]: the claim model of the reproduction report (paper and extension claims,
//!   95% confidence intervals, verdicts holds / deviates / inconclusive).
//! - [`report`]: where notebooks write claims and figures; [`files`]: atomic output files;
//!   [`limits`]: the sizes memory and time allow, checked before any work;
//!   [`notebook`]: the guard that makes every failing notebook cell visible to the runner.
//! - [`kernels`] (the workspace crate `widthlab-kernels`): the CPU kernels behind every product
//!   computed outside autograd and the RCC monitor's fused passes, the one place that chooses
//!   between them and libtorch, and every call through raw pointers or foreign functions.
//!   This crate has none of its own.
//! - [`extending_guide`]: how to add a parameterization, an activation, a layer type, an RCC
//!   metric and a notebook experiment (`docs/extending.md`, its examples compiled as doctests).
pub mod claims;
pub mod config;
pub mod data;
pub mod device;
pub mod error;
pub mod extending_guide;
pub mod files;
pub mod fit;
pub mod limits;
pub mod loss;
pub mod model;
pub mod notebook;
pub mod optim;
pub mod plan;
pub mod param;
pub mod plot;
pub mod profile;
pub mod rcc;
pub mod report;
pub mod rng;
pub mod sharpness;
pub mod sweep;
pub mod theory;
pub mod train;

pub use error::{Error, Result};
/// widthlab's CPU kernels and every call it makes through raw pointers or foreign functions
/// (products, the RCC monitor's fused passes, threads, libtorch calls tch does not wrap),
/// behind a safe interface; the path each product takes is chosen in [`kernels::dispatch`].
pub use widthlab_kernels as kernels;
/// The libtorch bindings widthlab is built on (so notebooks and users need no separate `:dep`).
pub use tch;
