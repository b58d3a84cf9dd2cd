//! Refined coordinate checks (RCC): the one home of every per-layer metric of the paper's
//! central diagnostic (section 2, appendix C.1, appendix E).
//!
//! For every weight `W` acting linearly on its input `x` (a [`Site`](crate::model::Site) of a traced forward
//! pass: dense layers, norm gains, biases, and later attention projections),
//!
//! ```text
//! W_t x_t - W_0 x_0 = (Delta W_t) x_t  +  W_0 (Delta x_t)
//!                     effective update    propagating update
//! ```
//!
//! measured on a fixed, seeded probe batch; `x_0` is what the *initial* model computes for
//! the same probe batch. Each metric is recorded twice: against the initial model (`Delta`,
//! metric names as below) and against the previous step (`delta`, names prefixed `delta_`,
//! with `W_{t-1}` and `x_{t-1}` in place of `W_0` and `x_0`).
//!
//! # Norm conventions
//! - Activations (batches `[B, d]`): `||v||_RMS = sqrt(mean of v^2 over batch and coordinates)`.
//! - Weights `[fan_out, fan_in]`: `||W||_RMS = ||W||_F / sqrt(fan_in fan_out)`; operator norm
//!   RMS -> RMS: `||W||_op = sqrt(fan_in / fan_out) ||W||_2`. Norm gains act as diagonal
//!   matrices (`||diag g||_op = max |g_i|`), biases as `[n, 1]` matrices on the input 1.
//!   Weight norms are of the *effective* weight `a_l W` (including the forward multiplier).
//! - `align_rms_*`: `||A x||_RMS / (c ||A||_RMS ||x||_RMS)` with `c = fan_in` for dense
//!   weights and `c = 1` for gains and biases (paper, appendix D.4 on Figure 2), so it is
//!   `Theta(1)` under LLN-like (fully aligned) accumulation.
//! - `align_op_*`: `||A x||_RMS / (||A||_op ||x||_RMS)` (the paper's alpha-op).
//! - Spectral norms: power iteration, warm-started from the previous step's vector, until
//!   two successive estimates agree to the relative tolerance `tol` (see
//!   [`power_iteration`]); or exact via libtorch's matrix 2-norm ([`Spectral::Exact`], costly
//!   at large width). One-step updates known by their low-rank factors (below) get their
//!   spectral norm from a `B x B` problem instead, to a relative residual of `tol` (`1e-9`
//!   under [`Spectral::Exact`]).
//!
//! # One-step updates of plain SGD from their factors
//! Under a monitor the [`crate::train::Trainer`] keeps plain-SGD steps fused into the MLP's
//! backward pass ([`StepHook::needs_gradients`](crate::train::StepHook::needs_gradients) is false), which leaves each dense weight's
//! step as `delta W = -lr g^T x` with `g: [B, fan_out]`, `x: [B, fan_in]` of the training
//! batch ([`LowRankStep`](crate::optim::LowRankStep)). The `delta_` metrics of those weights are then computed from the
//! factors ([`Change::LowRank`]): no copy of the weights is kept between steps (only their
//! norms), no weight-sized difference is formed, `delta W x_t` costs two thin products, and
//! the update's Frobenius and spectral norms come from `B x B` Gram matrices
//! ([`low_rank_norms`]). This is the update as the step computed it; the difference of the
//! stored float32 weights would carry `eps |W_ij|` of rounding per entry, a sizeable fraction
//! of a small step. The `grad` metric of such a weight is `||g^T x||_RMS` from the same Grams.
//! Every other case (Adam, momentum, SAM, normalisation layers, the GPT) measures from
//! weight copies, as defined.
//!
//! # Metrics (names used in JSON/CSV)
//! Each is a [`Metric`]; with its reference ([`Since`]) a [`MetricId`], written as the names
//! below (`delta_` prefixed for one step).
//! Per site ([`Metric::SITE`]): `act` `||W_t x_t||`, `act_update` `||W_t x_t - W_0 x_0||`, `effective`,
//! `propagating`, `input` `||x_t||`, `input_update` `||x_t - x_0||`, `weight_update_rms`,
//! `weight_update_op`, `align_rms_eff` / `align_op_eff` for `(Delta W_t, x_t)`,
//! `align_rms_prop` / `align_op_prop` for `(W_0, Delta x_t)`, `update_rank`
//! `||Delta W||_F / ||Delta W||_2`, `grad` (`||grad_W L||_RMS` of the step's training batch,
//! as used by the optimizer).
//! Per hidden activation `x^l` (layer name `act.{l}`): `sparsity` (fraction of exact zeros),
//! `cos_init` (mean cosine of `x^l_t(xi)` and `x^l_0(xi)` over the probe inputs), `cos_cross`
//! (mean cosine between different inputs at time t). Model-level (layer `model`): `logits`
//! `||f_t||_RMS`, `chi` `||dl/df||_RMS` of the per-example loss, `loss` on the probe batch.
//!
//! # Cost
//! A measured step runs one traced forward of the probe batch and, per dense site, one
//! product `(W_t - W_0) x_t`; the propagating update comes from the RCC identity with the
//! cached reference outputs `W_ref x_ref` (see [`site_metrics`] for the accuracy), inputs
//! that did not change (the input layer, biases) cost nothing, one-hot inputs (the GPT's
//! embedding) are lookups, the initial weights' norms are computed once, and the previous
//! step's trace is kept as the next `delta` reference (no second traced forward). The
//! one-step metrics cost another product per dense site, or, for fused plain-SGD steps, two
//! thin products and two `B x B` Grams (above).
//!
//! Under power iteration the dense sites' `Delta` passes run inside the traced forward
//! ([`crate::model::DenseProducts`]): one pass per weight ([`ops::dense_change`](crate::kernels::ops::dense_change)) reads `W_t` and
//! `W_0` once, forms the rows of the difference block by block in cache and uses them for the
//! site's output `a W_t x_t` (which the forward continues with), the effective update's
//! product, `||W_t - W_0||_F`, one warm-started power-iteration step on the difference and,
//! when the next step's one-step metrics need them, the norms of `W_t`; no weight-sized
//! difference is stored, the reference rows are prefetched ahead of the pass, and where the
//! input has not changed (the input layer) the output is `W_0 x_0` plus the effective update,
//! with no product by `W_t`. Probes of up to 64 rows multiply by widthlab's thin kernel there
//! (no packing of the weights). The one-step updates' Grams are computed on and below the
//! diagonal only ([`ops::gram`](crate::kernels::ops::gram)), split between the threads; then the second thread solves
//! their `B x B` eigenproblems (Lanczos) and computes the activations' sparsity and cosines
//! while the first measures the `Delta` sites and chi ([`crate::kernels::threads::join`]).
//! Activation-sized norms, cosines and sparsity are single host passes
//! ([`ops::rms_of_difference`](crate::kernels::ops::rms_of_difference) and its neighbours), not chains of libtorch kernels. These
//! passes live in [`crate::kernels`]; where they do not apply (other devices or kinds) or the
//! kernels are off (`--no-default-features`, `WIDTHLAB_KERNELS=libtorch`) every quantity is
//! computed term by term through libtorch, as defined here: the same results to rounding.
//!
//! With a probe as large as the training batch, the two products per layer are about two
//! forward passes: as many as the anchor (torch-module-monitor's RCC on the training batch)
//! pays for its reference forward and `W_0 x_t` (one fewer at the input layer, whose probe
//! input does not change), besides the norms and one-step metrics it does not measure. So the
//! anchor's cost is about what the products alone cost the monitor at that probe; only a
//! smaller probe can go lower. `cargo bench --bench monitor_overhead` measures both, side by
//! side (figures in `docs/benchmarks.md`).
//!
//! # Layout
//! - [`metric`]: the metric names ([`Metric`], [`MetricId`]) and what each declares.
//! - [`definitions`]: the norms, alignments and spectral norms, and [`site_metrics`], every
//!   metric of one site against a reference, as defined above.
//! - [`fast`]: the dense sites' `Delta` pass fused into the traced forward.
//! - [`monitor`]: the [`Monitor`] ([`StepHook`](crate::train::StepHook)), its settings and
//!   [`Record`] rows; it takes the fast paths (the fused pass, one-step updates from their
//!   factors) unless a site metric [needs the weight difference](Metric::needs_weight_difference).
//! - [`runner`], [`gpt`], [`regime`]: coordinate checks over widths and seeds, and their fits.

pub mod definitions;
pub mod fast;
pub mod gpt;
pub mod metric;
pub mod monitor;
pub mod regime;
pub mod runner;

pub use definitions::{cosine_cross, cosine_rows, low_rank_norms, power_iteration, rms, site_metrics, sparsity, top_eigenvalue_of_product, weight_rms, Change, Spectral, Traced};
pub use fast::DenseChange;
pub use metric::{CurvatureEstimate, Metric, MetricId, Since, UnknownMetric};
pub use monitor::{Monitor, MonitorConfig, Record, StepSchedule};
pub use runner::{CoordCheck, CoordCheckResult, Profile};

#[cfg(test)]
mod tests;
