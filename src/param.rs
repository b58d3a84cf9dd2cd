//! Width parameterizations: the one home of every initialisation, weight-multiplier and
//! learning-rate rule in widthlab.
//!
//! A parameterization is *data*: for each layer role (input-like, hidden-like, output-like,
//! appendix C.1 of the paper) it gives
//! - the initialisation standard deviation of weight matrices,
//! - a constant weight multiplier `alpha_l` applied in the forward pass (`alpha_l W^l x`),
//! - a learning-rate factor for SGD and one for Adam(W),
//!
//! each as a [`Scale`]: a small expression in the layer's `fan_in`, `fan_out` and the width
//! ratio `n / n0`. Biases and normalisation gains are input-like (their input is the constant
//! 1); they are initialised to 0 and 1 and take the input-like learning-rate factor.
//!
//! # Conventions (stated once, used everywhere)
//! - **Initialisation** is written in absolute fans, as PyTorch and He et al. do:
//!   SP uses `std = sqrt(c_phi / fan_in)` with `c_phi = 2` for ReLU (appendix D.1).
//! - **Per-layer width factors** of a rule are powers of `n / n0` with the base width `n0`
//!   (`base_width`). The default `n0 = 1` is the paper's convention: per-layer rules in the
//!   *absolute* width `n`, as the authors' MLP code does (`lr * width**(-c_l)`, muP readout
//!   init `sqrt(2)/fan_in`), so at `n = 256` muP's input, hidden and output SGD learning rates
//!   stand in the ratio `256 : 1 : 1/256`. A base width `n0 > 1` (muP-package style, e.g. 256)
//!   is a different finite-width model with the same exponents: every parameterization then
//!   coincides with SP at `n = n0`, which is what transfer studies from a tuned base model
//!   want. The authors' GPT code (sbordt/litgpt) uses that style, with `n0` the base model's
//!   width; configs override `n0` with `base_width` ([`crate::train::TrainConfig`]).
//! - **Rules may use the model's output dimension** `d_out` (a [`Monomial`]'s `d_out`
//!   exponent): the paper's proposed last-layer init and the learning rates derived from it
//!   (below) depend on whether `n >> d_out` or `n << d_out`.
//! - **The global learning rate** of the paper's section 4 is `eta_n = eta (n/n_lr)^(-alpha)`
//!   (`alpha`, default 0; the paper's `alpha = 1/2` is the authors' `--lrexp -0.5`), with its
//!   own reference width `n_lr = lr_base_width` (default 256, as in the paper).
//! - The learning rate of parameter `p` at step `t` is therefore
//!   `eta * schedule(t) * (n/lr_base_width)^(-alpha) * lr_rule_{role(p)}(fan_in, fan_out, n/n0, d_out)`.
//!
//! The authors' Adam rule for muP is `eta / fan_in` applied literally to every weight,
//! including the input layer (a constant factor `1/d_in` there); write it as
//! `lr_adam.input = "fan_in^-1"` style rules (see [`Monomial`]) if you need it literally.
//!
//! # Built-in parameterizations
//! | name | init (in / hid / out) | SGD lr (in / hid / out) | Adam lr (in / hid / out) |
//! |---|---|---|---|
//! | `sp` | He / He / He | 1 / 1 / 1 | 1 / 1 / 1 |
//! | `ntp` | He / He / He | 1 / r^-1 / r^-1 | 1 / r^-1/2 / r^-1/2 |
//! | `mup` | He / He / He r^-1/2 | r / 1 / r^-1 | 1 / r^-1 / r^-1 |
//! | `mup-mult` | weight-multiplier form of `mup` (Table C.1, left) | | |
//! | `sp-full-align` | He / He / He | r^1/2 / r^-1/2 / r^-1 | 1 / r^-1 / r^-1 |
//! | `musoli` | He / He / He | r^1/2 / r^-1/2 / r^-1/2 | 1 / r^-1 / r^-1/2 |
//! | `sp-llzero` | He / He / 0 | as `sp` | as `sp` |
//! | `mup-llzero` | He / He / 0 | as `mup` | as `mup` |
//! | `sp-proposed-init` | He / He / (fan_in/sqrt(fan_out) + sqrt(fan_in))^-1 | as `sp` | as `sp` |
//! | `sp-full-align-proposed-init` | He / He / (fan_in/sqrt(fan_out) + sqrt(fan_in))^-1 | r/sqrt(d_out) + r^1/2 / 1/sqrt(d_out) + r^-1/2 / r^-1 | as `sp-full-align` |
//!
//! with `r = n/n0` (`= n` by default) and He `= sqrt(2/fan_in)`. SP-full-align and MUSOLI
//! follow section F.7 of the paper: with standard last-layer initialisation the hidden and
//! input rates are scaled down by `n^{-1/2}` relative to muP, and MUSOLI raises the last-layer
//! rate to `Theta(n^{-1/2})`. `sp-full-align-proposed-init` is the paper's proposal of section
//! 5.2 and appendix F.7 (left to future work there): the last-layer init
//! `sigma = (fan_in/sqrt(fan_out) + sqrt(fan_in))^-1`, SP-like (`b_{L+1} = 1/2`) while
//! `n << d_out` and muP-like (`b_{L+1} = 1`) once `n >> d_out`, with SP-full-align's readout
//! rate `n^-1`. Its SGD input and hidden rates follow F.7's rule for any last-layer scaling,
//! `eta_1 = n^{min(b_{L+1}, c_{L+1})}` and `eta_l = n^{min(b_{L+1}, c_{L+1}) - 1}`, evaluated
//! smoothly: the hidden rate is `1/(n sigma) = 1/sqrt(d_out) + n^-1/2` (muP's `n^0` for
//! `n >> d_out`, SP-full-align's `n^-1/2` for `n << d_out`) and the input rate `n` times that.
//! Its Adam rates are SP-full-align's (muP's): Adam normalises the backward pass, so they do
//! not depend on the last-layer init (F.7). NTP's Adam column is derived from its weight-multiplier form (Adam
//! updates are invariant to gradient scale, so a multiplier `a` yields an effective rate `a`);
//! Table C.1 only lists SGD.
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// What a weight maps from and to, in terms of width (appendix C.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Fixed dimension -> width (first layer, embeddings; biases and norm gains).
    InputLike,
    /// Width -> width (hidden layers, attention and MLP projections).
    HiddenLike,
    /// Width -> fixed dimension (the readout).
    OutputLike,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::InputLike => "input-like",
            Role::HiddenLike => "hidden-like",
            Role::OutputLike => "output-like",
        })
    }
}

/// What kind of tensor a parameter is; decides initialisation (weights follow the
/// parameterization, biases start at 0, norm gains at 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ParamKind {
    Weight,
    Bias,
    NormGain,
}

/// One factor `coef * fan_in^fan_in * fan_out^fan_out * (n/n0)^width * d_out^d_out` of a
/// [`Scale`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Monomial {
    pub coef: f64,
    /// Exponent of the layer's fan-in (absolute).
    pub fan_in: f64,
    /// Exponent of the layer's fan-out (absolute).
    pub fan_out: f64,
    /// Exponent of the width ratio `n / base_width`.
    pub width: f64,
    /// Exponent of the model's output dimension.
    pub d_out: f64,
}

impl Default for Monomial {
    fn default() -> Self {
        Monomial { coef: 1.0, fan_in: 0.0, fan_out: 0.0, width: 0.0, d_out: 0.0 }
    }
}

/// A scaling rule `coef * (sum of monomials)^power`; with no monomials it is `coef`.
///
/// This covers every rule of the paper: He init `sqrt(2) * fan_in^-1/2`, muP's
/// `(n/n0)^-1`, zero init (`coef = 0`) and the proposed last-layer init
/// `(fan_in/sqrt(fan_out) + sqrt(fan_in))^-1`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Scale {
    pub coef: f64,
    pub terms: Vec<Monomial>,
    pub power: f64,
}

impl Default for Scale {
    fn default() -> Self {
        Scale::constant(1.0)
    }
}

/// The shape information a [`Scale`] is evaluated at.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ScaleCtx {
    pub fan_in: f64,
    pub fan_out: f64,
    /// `n / n0`.
    pub width_ratio: f64,
    /// The model's output dimension.
    pub d_out: f64,
}

/// Where a parameter sits: its fans and the model's width and output dimension (what a
/// parameterization's rules are evaluated at). For biases and gains `fan_in = 1`,
/// `fan_out = len`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fans {
    pub fan_in: i64,
    pub fan_out: i64,
    /// The width `n` the parameterization scales with.
    pub width: i64,
    /// The model's output dimension (classes, vocabulary).
    pub d_out: i64,
}

impl Fans {
    /// The three weight matrices of an MLP `d_in -> n -> ... -> n -> d_out` by role.
    pub fn mlp(role: Role, d_in: i64, n: i64, d_out: i64) -> Self {
        let (fan_in, fan_out) = match role {
            Role::InputLike => (d_in, n),
            Role::HiddenLike => (n, n),
            Role::OutputLike => (n, d_out),
        };
        Fans { fan_in, fan_out, width: n, d_out }
    }
}

impl Scale {
    /// The constant `c`.
    pub fn constant(c: f64) -> Self {
        Scale { coef: c, terms: vec![], power: 1.0 }
    }
    /// Zero (used for zero initialisation).
    pub fn zero() -> Self {
        Scale::constant(0.0)
    }
    /// `c * (n/n0)^p`.
    pub fn width_pow(c: f64, p: f64) -> Self {
        Scale { coef: c, terms: vec![Monomial { width: p, ..Monomial::default() }], power: 1.0 }
    }
    /// `c * fan_in^p`.
    pub fn fan_in_pow(c: f64, p: f64) -> Self {
        Scale { coef: c, terms: vec![Monomial { fan_in: p, ..Monomial::default() }], power: 1.0 }
    }
    /// He initialisation `sqrt(c_phi / fan_in)`.
    pub fn he(c_phi: f64) -> Self {
        Scale::fan_in_pow(c_phi.sqrt(), -0.5)
    }
    /// Multiplies the rule by `(n/n0)^p`.
    pub fn times_width_pow(mut self, p: f64) -> Self {
        if self.terms.is_empty() {
            self.terms.push(Monomial { width: p / self.power, ..Monomial::default() });
        } else {
            // (sum m_k)^power * r^p = (sum m_k r^{p/power})^power
            for m in &mut self.terms {
                m.width += p / self.power;
            }
        }
        self
    }
    /// The proposed last-layer init of the paper, `(fan_in/sqrt(fan_out) + sqrt(fan_in))^-1`.
    pub fn proposed_output_init() -> Self {
        Scale {
            coef: 1.0,
            terms: vec![
                Monomial { fan_in: 1.0, fan_out: -0.5, ..Monomial::default() },
                Monomial { fan_in: 0.5, ..Monomial::default() },
            ],
            power: -1.0,
        }
    }
    /// The SGD rates the paper's F.7 derives for the proposed last-layer init with readout
    /// rate `n^-1`, per role: hidden `1/sqrt(d_out) + r^-1/2`, input `r` times that, readout
    /// `r^-1` (see the module docs).
    pub fn proposed_init_sgd_rates() -> PerRole<Scale> {
        let m = |width: f64, d_out: f64| Monomial { width, d_out, ..Monomial::default() };
        PerRole::new(
            Scale { coef: 1.0, terms: vec![m(1.0, -0.5), m(0.5, 0.0)], power: 1.0 },
            Scale { coef: 1.0, terms: vec![m(0.0, -0.5), m(-0.5, 0.0)], power: 1.0 },
            Scale::width_pow(1.0, -1.0),
        )
    }
    /// The value of the rule for a layer.
    pub fn eval(&self, ctx: ScaleCtx) -> f64 {
        if self.terms.is_empty() {
            return self.coef;
        }
        let s: f64 = self
            .terms
            .iter()
            .map(|m| {
                m.coef
                    * ctx.fan_in.powf(m.fan_in)
                    * ctx.fan_out.powf(m.fan_out)
                    * ctx.width_ratio.powf(m.width)
                    * ctx.d_out.powf(m.d_out)
            })
            .sum();
        self.coef * s.powf(self.power)
    }
    fn check(&self, what: &str) -> Result<()> {
        let finite = self.coef.is_finite()
            && self.power.is_finite()
            && self.terms.iter().all(|m| {
                m.coef.is_finite() && m.fan_in.is_finite() && m.fan_out.is_finite() && m.width.is_finite() && m.d_out.is_finite()
            });
        if !finite {
            return Err(Error::config(format!("{what}: rule has a non-finite number")));
        }
        if self.coef < 0.0 || self.terms.iter().any(|m| m.coef < 0.0) {
            return Err(Error::config(format!("{what}: coefficients must be >= 0")));
        }
        Ok(())
    }
}

/// One value per layer role.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PerRole<T> {
    pub input: T,
    pub hidden: T,
    pub output: T,
}

impl<T: Clone> PerRole<T> {
    /// The same value for every role.
    pub fn all(v: T) -> Self {
        PerRole { input: v.clone(), hidden: v.clone(), output: v }
    }
}

impl<T> PerRole<T> {
    pub fn new(input: T, hidden: T, output: T) -> Self {
        PerRole { input, hidden, output }
    }
    pub fn get(&self, role: Role) -> &T {
        match role {
            Role::InputLike => &self.input,
            Role::HiddenLike => &self.hidden,
            Role::OutputLike => &self.output,
        }
    }
}

/// The optimizer family a learning-rate rule is for: SGD-like (SGD, SAM-SGD) or Adam-like
/// (Adam, AdamW), whose updates are normalised per coordinate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OptimizerFamily {
    Sgd,
    Adam,
}

/// A width parameterization (Definition C.4 of the paper, with weight multipliers).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Parameterization {
    pub name: String,
    /// `n0` of the per-layer width factors of every rule (default 1: absolute `n`, the paper's
    /// convention; see the module docs).
    #[serde(default = "default_base_width")]
    pub base_width: f64,
    /// Global learning-rate exponent: `eta_n = eta (n / lr_base_width)^(-alpha)`.
    #[serde(default)]
    pub alpha: f64,
    /// Reference width of the global learning-rate scaling (default 256, as in the paper).
    #[serde(default = "default_lr_base_width")]
    pub lr_base_width: f64,
    /// Initialisation std of weight matrices.
    pub init_std: PerRole<Scale>,
    /// Forward-pass weight multipliers `alpha_l`.
    #[serde(default = "unit_rules")]
    pub multiplier: PerRole<Scale>,
    /// Learning-rate factors under SGD-like optimizers.
    pub lr_sgd: PerRole<Scale>,
    /// Learning-rate factors under Adam-like optimizers.
    pub lr_adam: PerRole<Scale>,
}

/// The paper's per-layer convention: absolute powers of `n`.
fn default_base_width() -> f64 {
    1.0
}
/// Reference width of the global `(n/256)^-alpha`.
fn default_lr_base_width() -> f64 {
    256.0
}
fn unit_rules() -> PerRole<Scale> {
    PerRole::all(Scale::constant(1.0))
}

/// What a parameterization resolves to for one parameter tensor at one width.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Resolved {
    /// Initialisation std (weights only; biases start at 0, gains at 1).
    pub init_std: f64,
    /// Forward multiplier (weights only; 1 for biases and gains).
    pub multiplier: f64,
    /// Learning-rate factor including the global `(n/n0)^(-alpha)`; multiply by `eta`.
    pub lr_scale: f64,
}

/// One built-in parameterization: its name and how to build it.
#[derive(Clone, Copy, Debug)]
pub struct Builtin {
    pub name: &'static str,
    pub build: fn() -> Parameterization,
}

/// Every built-in parameterization (the table of the module docs), in listing order: the one
/// source of [`Parameterization::builtin`], [`builtin_names`] and `widthlab params`. A new
/// rule that is a function of role, fans and width needs no entry here: write it as TOML
/// ([`Parameterization::from_toml`], see `docs/extending.md`).
pub const BUILTIN: &[Builtin] = &[
    Builtin { name: "sp", build: Parameterization::sp },
    Builtin { name: "ntp", build: Parameterization::ntp },
    Builtin { name: "mup", build: Parameterization::mup },
    Builtin { name: "mup-mult", build: Parameterization::mup_mult },
    Builtin { name: "sp-full-align", build: Parameterization::sp_full_align },
    Builtin { name: "musoli", build: Parameterization::musoli },
    Builtin { name: "sp-llzero", build: || Parameterization::sp().with_output_init("sp-llzero", Scale::zero()) },
    Builtin { name: "mup-llzero", build: || Parameterization::mup().with_output_init("mup-llzero", Scale::zero()) },
    Builtin { name: "sp-proposed-init", build: || Parameterization::sp().with_output_init("sp-proposed-init", Scale::proposed_output_init()) },
    Builtin {
        name: "sp-full-align-proposed-init",
        build: || {
            let mut p = Parameterization::sp_full_align().with_output_init("sp-full-align-proposed-init", Scale::proposed_output_init());
            p.lr_sgd = Scale::proposed_init_sgd_rates();
            p
        },
    },
];

/// The names of the built-in parameterizations, in listing order.
pub fn builtin_names() -> impl Iterator<Item = &'static str> {
    BUILTIN.iter().map(|b| b.name)
}

impl Parameterization {
    /// A parameterization with He init everywhere and the given learning-rate rules.
    fn he_init(name: &str, lr_sgd: PerRole<Scale>, lr_adam: PerRole<Scale>) -> Self {
        Parameterization {
            name: name.into(),
            base_width: default_base_width(),
            alpha: 0.0,
            lr_base_width: default_lr_base_width(),
            init_std: PerRole::all(Scale::he(2.0)),
            multiplier: unit_rules(),
            lr_sgd,
            lr_adam,
        }
    }

    /// Standard parameterization: He init, one global learning rate.
    pub fn sp() -> Self {
        let one = PerRole::all(Scale::constant(1.0));
        Self::he_init("sp", one.clone(), one)
    }

    /// Neural tangent parameterization in its multiplier-free form (Table C.1, right).
    pub fn ntp() -> Self {
        let w = Scale::width_pow;
        Self::he_init(
            "ntp",
            PerRole::new(w(1.0, 0.0), w(1.0, -1.0), w(1.0, -1.0)),
            PerRole::new(w(1.0, 0.0), w(1.0, -0.5), w(1.0, -0.5)),
        )
    }

    /// Maximal update parameterization in its multiplier-free form (Table C.1, right; Adam:
    /// `lr ~ 1/fan_in` for width-scaling fan-ins).
    pub fn mup() -> Self {
        let w = Scale::width_pow;
        let mut p = Self::he_init(
            "mup",
            PerRole::new(w(1.0, 1.0), w(1.0, 0.0), w(1.0, -1.0)),
            PerRole::new(w(1.0, 0.0), w(1.0, -1.0), w(1.0, -1.0)),
        );
        p.init_std.output = Scale::he(2.0).times_width_pow(-0.5);
        p
    }

    /// muP in its weight-multiplier form (Table C.1, left): multipliers `r^1/2, 1, r^-1/2`,
    /// global SGD learning rate. Trains exactly like [`Parameterization::mup`].
    pub fn mup_mult() -> Self {
        let w = Scale::width_pow;
        Parameterization {
            name: "mup-mult".into(),
            init_std: PerRole::new(
                Scale::he(2.0).times_width_pow(-0.5),
                Scale::he(2.0),
                Scale::he(2.0),
            ),
            multiplier: PerRole::new(w(1.0, 0.5), w(1.0, 0.0), w(1.0, -0.5)),
            lr_sgd: PerRole::all(Scale::constant(1.0)),
            lr_adam: PerRole::new(w(1.0, -0.5), w(1.0, -1.0), w(1.0, -0.5)),
            ..Self::sp()
        }
    }

    /// SP initialisation with the effective-update learning rates of section F.7
    /// (Everett et al.'s SP-full-align).
    pub fn sp_full_align() -> Self {
        let w = Scale::width_pow;
        Self::he_init(
            "sp-full-align",
            PerRole::new(w(1.0, 0.5), w(1.0, -0.5), w(1.0, -1.0)),
            PerRole::new(w(1.0, 0.0), w(1.0, -1.0), w(1.0, -1.0)),
        )
    }

    /// MUSOLI (section F.7): SP-full-align with last-layer rate `Theta(n^-1/2)`.
    pub fn musoli() -> Self {
        let w = Scale::width_pow;
        Self::he_init(
            "musoli",
            PerRole::new(w(1.0, 0.5), w(1.0, -0.5), w(1.0, -0.5)),
            PerRole::new(w(1.0, 0.0), w(1.0, -1.0), w(1.0, -0.5)),
        )
    }

    /// A built-in parameterization by name (see [`BUILTIN`]).
    pub fn builtin(name: &str) -> Result<Self> {
        match BUILTIN.iter().find(|b| b.name == name) {
            Some(b) => Ok((b.build)()),
            None => Err(Error::UnknownParameterization { name: name.into(), known: builtin_names().collect::<Vec<_>>().join(", ") }),
        }
    }

    /// Same rules with another last-layer initialisation.
    pub fn with_output_init(mut self, name: &str, init: Scale) -> Self {
        self.name = name.into();
        self.init_std.output = init;
        self
    }

    /// Sets the global learning-rate exponent `alpha` (`eta_n = eta (n/n0)^-alpha`).
    pub fn with_alpha(mut self, alpha: f64) -> Self {
        self.alpha = alpha;
        self
    }

    /// Sets the base width `n0` of the per-layer rules.
    pub fn with_base_width(mut self, n0: f64) -> Self {
        self.base_width = n0;
        self
    }

    /// Sets the reference width of the global learning-rate scaling
    /// (`eta_n = eta (n / lr_base_width)^-alpha`).
    pub fn with_lr_base_width(mut self, n0: f64) -> Self {
        self.lr_base_width = n0;
        self
    }

    /// Multiplies every initialisation std by `factor` (e.g. `1/sqrt(2)` turns He's ReLU gain
    /// `c_phi = 2` into the gain `c_phi = 1` of linear networks, as in the uv model of
    /// appendix C.4).
    pub fn scale_init(mut self, factor: f64) -> Self {
        for rule in [&mut self.init_std.input, &mut self.init_std.hidden, &mut self.init_std.output] {
            rule.coef *= factor;
        }
        self
    }

    /// Reads a user-defined parameterization from TOML text (same fields as this struct).
    pub fn from_toml(text: &str) -> Result<Self> {
        let p: Parameterization =
            toml::from_str(text).map_err(|e| Error::config(format!("parameterization: {e}")))?;
        p.validate()?;
        Ok(p)
    }

    /// Checks that every rule is finite and non-negative and the widths positive.
    pub fn validate(&self) -> Result<()> {
        if !(self.base_width > 0.0 && self.lr_base_width > 0.0) {
            return Err(Error::config(format!(
                "parameterization {}: base widths must be > 0",
                self.name
            )));
        }
        if !self.alpha.is_finite() {
            return Err(Error::config("alpha must be finite"));
        }
        for (what, rules) in [
            ("init_std", &self.init_std),
            ("multiplier", &self.multiplier),
            ("lr_sgd", &self.lr_sgd),
            ("lr_adam", &self.lr_adam),
        ] {
            for role in [Role::InputLike, Role::HiddenLike, Role::OutputLike] {
                rules.get(role).check(&format!("{}.{what}.{role}", self.name))?;
            }
        }
        Ok(())
    }

    /// Resolves the rules for one parameter at `fans` (its fans, the model's width and output
    /// dimension).
    pub fn resolve(&self, role: Role, kind: ParamKind, fans: Fans, family: OptimizerFamily) -> Resolved {
        let ctx = ScaleCtx {
            fan_in: fans.fan_in as f64,
            fan_out: fans.fan_out as f64,
            width_ratio: fans.width as f64 / self.base_width,
            d_out: fans.d_out as f64,
        };
        let global = (fans.width as f64 / self.lr_base_width).powf(-self.alpha);
        let lr_rule = match family {
            OptimizerFamily::Sgd => &self.lr_sgd,
            OptimizerFamily::Adam => &self.lr_adam,
        };
        let (init_std, multiplier) = match kind {
            ParamKind::Weight => {
                (self.init_std.get(role).eval(ctx), self.multiplier.get(role).eval(ctx))
            }
            ParamKind::Bias => (0.0, 1.0),
            ParamKind::NormGain => (1.0, 1.0),
        };
        Resolved { init_std, multiplier, lr_scale: global * lr_rule.get(role).eval(ctx) }
    }
}

/// A text table of what parameterizations resolve to for every parameter of an MLP of
/// `depth` layers (784 -> n -> 10) at each width: init std, multiplier, SGD and Adam
/// learning-rate factors.
pub fn table(names: &[&str], widths: &[i64], depth: usize) -> Result<String> {
    use std::fmt::Write;
    let mut s = format!(
        "{:<17} {:>6} {:<16} {:<12} {:>11} {:>10} {:>11} {:>11}\n",
        "param", "width", "parameter", "role", "init std", "multiplier", "lr SGD", "lr Adam"
    );
    for name in names {
        let p = Parameterization::builtin(name)?;
        for &n in widths {
            let cfg = crate::model::MlpConfig { width: n, depth, ..crate::model::MlpConfig::default() };
            cfg.validate()?;
            for sh in cfg.layout() {
                let fans = Fans { fan_in: sh.fan_in, fan_out: sh.fan_out, width: n, d_out: cfg.d_out };
                let r = |fam| p.resolve(sh.role, sh.kind, fans, fam);
                let (sgd, adam) = (r(OptimizerFamily::Sgd), r(OptimizerFamily::Adam));
                let _ = writeln!(
                    s,
                    "{:<17} {:>6} {:<16} {:<12} {:>11.4e} {:>10.4} {:>11.4e} {:>11.4e}",
                    name, n, sh.name, sh.role.to_string(), sgd.init_std, sgd.multiplier, sgd.lr_scale, adam.lr_scale
                );
            }
        }
    }
    Ok(s)
}

impl std::str::FromStr for Parameterization {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::builtin(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use OptimizerFamily::{Adam, Sgd};
    use ParamKind::Weight;
    use Role::*;

    const D_IN: i64 = 784;
    const D_OUT: i64 = 10;

    /// (init_std, lr_scale) of the three roles of a 3-layer MLP at width `n`.
    fn mlp_rules(p: &Parameterization, n: i64, fam: OptimizerFamily) -> [(f64, f64); 3] {
        let r = |role| {
            let x = p.resolve(role, Weight, Fans::mlp(role, D_IN, n, D_OUT), fam);
            (x.init_std, x.lr_scale)
        };
        [r(InputLike), r(HiddenLike), r(OutputLike)]
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12 * a.abs().max(b.abs()).max(1e-300)
    }

    /// Width exponent of each role's init std and lr between widths 256 and 4096.
    fn exponents(p: &Parameterization, fam: OptimizerFamily) -> [(f64, f64); 3] {
        let a = mlp_rules(p, 256, fam);
        let b = mlp_rules(p, 4096, fam);
        let e = |x: f64, y: f64| if x == 0.0 && y == 0.0 { 0.0 } else { (y / x).ln() / 16f64.ln() };
        [0, 1, 2].map(|i| (e(a[i].0, b[i].0), e(a[i].1, b[i].1)))
    }

    fn assert_exponents(p: &Parameterization, fam: OptimizerFamily, want: [(f64, f64); 3]) {
        let got = exponents(p, fam);
        for i in 0..3 {
            assert!(
                (got[i].0 - want[i].0).abs() < 1e-9 && (got[i].1 - want[i].1).abs() < 1e-9,
                "{} {:?} role {i}: got {:?} want {:?}",
                p.name,
                fam,
                got[i],
                want[i]
            );
        }
    }

    #[test]
    fn table_c1_width_exponents_sgd() {
        // (init std exponent, lr exponent) per role, Table C.1 right (multiplier-free).
        assert_exponents(&Parameterization::sp(), Sgd, [(0.0, 0.0), (-0.5, 0.0), (-0.5, 0.0)]);
        assert_exponents(&Parameterization::ntp(), Sgd, [(0.0, 0.0), (-0.5, -1.0), (-0.5, -1.0)]);
        assert_exponents(&Parameterization::mup(), Sgd, [(0.0, 1.0), (-0.5, 0.0), (-1.0, -1.0)]);
        // Section F.7.
        assert_exponents(
            &Parameterization::sp_full_align(),
            Sgd,
            [(0.0, 0.5), (-0.5, -0.5), (-0.5, -1.0)],
        );
        assert_exponents(&Parameterization::musoli(), Sgd, [(0.0, 0.5), (-0.5, -0.5), (-0.5, -0.5)]);
    }

    #[test]
    fn adam_rules_scale_like_inverse_fan_in() {
        assert_exponents(&Parameterization::mup(), Adam, [(0.0, 0.0), (-0.5, -1.0), (-1.0, -1.0)]);
        assert_exponents(
            &Parameterization::sp_full_align(),
            Adam,
            [(0.0, 0.0), (-0.5, -1.0), (-0.5, -1.0)],
        );
        assert_exponents(&Parameterization::musoli(), Adam, [(0.0, 0.0), (-0.5, -1.0), (-0.5, -0.5)]);
        assert_exponents(&Parameterization::sp(), Adam, [(0.0, 0.0), (-0.5, 0.0), (-0.5, 0.0)]);
    }

    #[test]
    fn absolute_values_at_two_widths() {
        // Per-layer rules in absolute n (the paper's convention, base_width = 1).
        for n in [256i64, 1024] {
            let nf = n as f64;
            let sp = mlp_rules(&Parameterization::sp(), n, Sgd);
            assert!(close(sp[0].0, (2.0 / 784.0f64).sqrt()));
            assert!(close(sp[1].0, (2.0 / nf).sqrt()));
            assert!(close(sp[2].0, (2.0 / nf).sqrt()));
            assert!(sp.iter().all(|x| close(x.1, 1.0)));
            // muP as the authors' code: readout init sqrt(2)/fan_in, rates n, 1, 1/n
            let mup = mlp_rules(&Parameterization::mup(), n, Sgd);
            assert!(close(mup[2].0, 2f64.sqrt() / nf));
            assert!(close(mup[0].1, nf) && close(mup[1].1, 1.0) && close(mup[2].1, 1.0 / nf));
            let mup_adam = mlp_rules(&Parameterization::mup(), n, Adam);
            assert!(close(mup_adam[1].1, 1.0 / nf) && close(mup_adam[0].1, 1.0));
            let llz = mlp_rules(&Parameterization::builtin("sp-llzero").unwrap(), n, Sgd);
            assert_eq!(llz[2].0, 0.0);
            let prop = mlp_rules(&Parameterization::builtin("sp-proposed-init").unwrap(), n, Sgd);
            let want = 1.0 / (nf / (D_OUT as f64).sqrt() + nf.sqrt());
            assert!(close(prop[2].0, want), "{} vs {want}", prop[2].0);
        }
        // at n = 256: muP's input, hidden and output SGD rates stand as 256 : 1 : 1/256
        let m = mlp_rules(&Parameterization::mup(), 256, Sgd);
        assert!(close(m[0].1 / m[1].1, 256.0) && close(m[1].1 / m[2].1, 256.0));
    }

    #[test]
    fn a_base_width_makes_every_parameterization_sp_at_that_width() {
        // The muP-package convention for transfer studies: rules relative to n0.
        for name in ["ntp", "mup", "sp-full-align", "musoli"] {
            let p = Parameterization::builtin(name).unwrap().with_base_width(256.0);
            for (i, r) in mlp_rules(&p, 256, Sgd).iter().enumerate() {
                assert!(close(r.1, 1.0), "{name} role {i}: {}", r.1);
            }
            // the exponents do not depend on n0
            let a = exponents(&p, Sgd);
            let b = exponents(&Parameterization::builtin(name).unwrap(), Sgd);
            assert_eq!(a.map(|x| (x.0 * 1e9).round()), b.map(|x| (x.0 * 1e9).round()));
            assert_eq!(a.map(|x| (x.1 * 1e9).round()), b.map(|x| (x.1 * 1e9).round()));
        }
        // without n0 muP differs from SP at 256 by 256x in the input and output rates
        let m = mlp_rules(&Parameterization::mup(), 256, Sgd);
        assert!(close(m[0].1, 256.0) && close(m[2].1, 1.0 / 256.0));
    }

    #[test]
    fn full_align_proposed_init_derives_its_sgd_rates_from_its_init() {
        let p = Parameterization::builtin("sp-full-align-proposed-init").unwrap();
        let fa = Parameterization::sp_full_align();
        assert_eq!((&p.lr_adam, &p.init_std.hidden, &p.lr_sgd.output), (&fa.lr_adam, &fa.init_std.hidden, &fa.lr_sgd.output));
        // sigma sqrt(n) (1 + sqrt(n/d_out)) = 1 in both regimes (n >> d_out and n << d_out)
        for (n, d) in [(4096i64, 10i64), (64, 8192), (256, 256)] {
            let s = p.resolve(OutputLike, Weight, Fans::mlp(OutputLike, 784, n, d), Sgd).init_std;
            let (nf, df) = (n as f64, d as f64);
            assert!(close(s * nf.sqrt() * (1.0 + (nf / df).sqrt()), 1.0), "n {n} d_out {d}: {s}");
            // F.7: hidden rate n^{min(b, c) - 1} = 1/(n sigma), input rate n times that
            let hid = p.resolve(HiddenLike, Weight, Fans::mlp(HiddenLike, 784, n, d), Sgd).lr_scale;
            let inp = p.resolve(InputLike, Weight, Fans::mlp(InputLike, 784, n, d), Sgd).lr_scale;
            assert!(close(hid, 1.0 / (nf * s)) && close(inp, nf * hid), "n {n} d_out {d}: {hid} {inp}");
        }
        // Regimes, as width exponents between n and 16 n: muP's rates for n >> d_out,
        // SP-full-align's for n << d_out.
        let e = |n: i64, d: i64, role: Role| {
            let r = |n| p.resolve(role, Weight, Fans::mlp(role, 784, n, d), Sgd).lr_scale;
            (r(16 * n) / r(n)).ln() / 16f64.ln()
        };
        assert!((e(1 << 20, 10, HiddenLike) - 0.0).abs() < 0.01 && (e(1 << 20, 10, InputLike) - 1.0).abs() < 0.01);
        assert!((e(16, 1 << 30, HiddenLike) + 0.5).abs() < 0.01 && (e(16, 1 << 30, InputLike) - 0.5).abs() < 0.01);
    }

    #[test]
    fn scale_init_and_lr_base_width() {
        let p = Parameterization::mup().with_lr_base_width(1.0).with_alpha(1.0).scale_init(0.5f64.sqrt());
        let n = 400i64;
        let u = p.resolve(InputLike, Weight, Fans { fan_in: 1, fan_out: n, width: n, d_out: 1 }, Sgd);
        let v = p.resolve(OutputLike, Weight, Fans { fan_in: n, fan_out: 1, width: n, d_out: 1 }, Sgd);
        // unit-gain init: u ~ N(0, 1), v ~ N(0, 1/n^2); lr n * n^-1 and n^-1 * n^-1
        assert!(close(u.init_std, 1.0) && close(v.init_std, 1.0 / 400.0));
        assert!(close(u.lr_scale, 1.0) && close(v.lr_scale, 1.0 / 160000.0));
    }

    #[test]
    fn global_alpha_is_relative_to_lr_base_width() {
        let p = Parameterization::sp().with_alpha(0.5);
        let at = |n| p.resolve(HiddenLike, Weight, Fans::mlp(HiddenLike, 784, n, 10), Sgd).lr_scale;
        assert!(close(at(256), 1.0));
        assert!(close(at(1024), 0.5));
    }

    #[test]
    fn biases_and_gains_are_input_like() {
        let p = Parameterization::mup();
        let fans = Fans { fan_in: 1, fan_out: 1024, width: 1024, d_out: 10 };
        let b = p.resolve(InputLike, ParamKind::Bias, fans, Sgd);
        let g = p.resolve(InputLike, ParamKind::NormGain, fans, Sgd);
        assert_eq!((b.init_std, g.init_std), (0.0, 1.0));
        assert!(close(b.lr_scale, 1024.0) && close(g.lr_scale, 1024.0));
    }

    #[test]
    fn mup_mult_matches_mup_effective_rules() {
        // Effective weight alpha*W: init alpha*sigma, SGD rate alpha^2 * lr, Adam rate alpha*lr.
        for n in [128i64, 2048] {
            for role in [InputLike, HiddenLike, OutputLike] {
                let fans = Fans::mlp(role, D_IN, n, D_OUT);
                let a = Parameterization::mup_mult().resolve(role, Weight, fans, Sgd);
                let b = Parameterization::mup().resolve(role, Weight, fans, Sgd);
                assert!(close(a.multiplier * a.init_std, b.init_std));
                assert!(close(a.multiplier * a.multiplier * a.lr_scale, b.lr_scale));
                let a = Parameterization::mup_mult().resolve(role, Weight, fans, Adam);
                let b = Parameterization::mup().resolve(role, Weight, fans, Adam);
                assert!(close(a.multiplier * a.lr_scale, b.lr_scale));
            }
        }
    }

    #[test]
    fn user_defined_from_toml() {
        let text = r#"
            name = "my-param"
            alpha = 0.5
            [init_std.input]
            coef = 1.4142135623730951
            power = 1.0
            terms = [{ fan_in = -0.5 }]
            [init_std.hidden]
            coef = 1.4142135623730951
            terms = [{ fan_in = -0.5 }]
            [init_std.output]
            coef = 0.0
            [lr_sgd.input]
            terms = [{ width = 1.0 }]
            [lr_sgd.hidden]
            [lr_sgd.output]
            terms = [{ width = -1.0 }]
            [lr_adam.input]
            [lr_adam.hidden]
            [lr_adam.output]
        "#;
        let p = Parameterization::from_toml(text).unwrap();
        let r = mlp_rules(&p, 1024, Sgd);
        assert!(close(r[1].0, (2.0 / 1024.0f64).sqrt()));
        assert_eq!(r[2].0, 0.0);
        // absolute n by default: input rate n, readout n^-1, times (1024/256)^-1/2
        assert!(close(r[0].1, 1024.0 * 0.5) && close(r[2].1, 0.5 / 1024.0));
        // base_width in the file: relative rules
        let rel = Parameterization::from_toml(&format!("base_width = 256.0\n{text}")).unwrap();
        let r = mlp_rules(&rel, 1024, Sgd);
        assert!(close(r[0].1, 4.0 * 0.5) && close(r[2].1, 0.25 * 0.5));
    }

    #[test]
    fn bad_inputs_give_errors() {
        let e = Parameterization::builtin("mupp").unwrap_err();
        assert!(e.to_string().contains("unknown parameterization `mupp`"), "{e}");
        assert!(e.to_string().contains("sp-full-align"));
        assert!(Parameterization::from_toml("name = 3").is_err());
        let mut p = Parameterization::sp();
        p.base_width = 0.0;
        assert!(p.validate().is_err());
        p = Parameterization::sp();
        p.lr_sgd.hidden.coef = -1.0;
        assert!(p.validate().is_err());
    }

    #[test]
    fn serde_round_trip_of_every_builtin() {
        for name in builtin_names() {
            let p = Parameterization::builtin(name).unwrap();
            p.validate().unwrap();
            let s = toml::to_string(&p).unwrap();
            assert_eq!(Parameterization::from_toml(&s).unwrap(), p, "{name}");
        }
    }

    #[test]
    fn the_builtin_table_names_each_entry_once_as_it_calls_itself() {
        let names: Vec<&str> = builtin_names().collect();
        assert_eq!(names.len(), 10);
        for (i, b) in BUILTIN.iter().enumerate() {
            assert_eq!((b.build)().name, b.name, "the parameterization calls itself by its table name");
            assert!(!names[..i].contains(&b.name), "{} listed twice", b.name);
        }
        // every name of the module docs' table is built in, and nothing else
        let docs: Vec<&str> = include_str!("param.rs")
            .lines()
            .filter_map(|l| l.strip_prefix("//! | `")?.split('`').next())
            .collect();
        assert_eq!(docs, names);
    }
}
