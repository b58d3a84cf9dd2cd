//! A Pythia-style GPT (decoder-only transformer) whose every weight knows its layer role, in
//! the spirit of nanoGPT's `model.py`: one file, read top to bottom.
//!
//! ```text
//! h_0     = a_emb W_emb onehot(tokens)                      (embedding, input-like)
//! block b:  u = LN_1(h), v = LN_2(h)                          (pre-LayerNorm)
//!           h = h + Attn(u) + MLP(v)                          (parallel residual, Pythia)
//!          [h = h + Attn(LN_1(h)); h = h + MLP(LN_2(h))       (sequential, `parallel_residual = false`)]
//! Attn(u) = W_o softmax_causal(rope(LN_q(W_q u)) rope(LN_k(W_k u))^T / sqrt(d_head)) W_v u
//! MLP(v)  = W_2 GELU(W_1 v)                                   (hidden 4n)
//! f       = a_out W_out LN_f(h)                               (readout, output-like)
//! ```
//!
//! # Architecture (the paper's appendix D.3, and where it comes from)
//! - Width `n = d_model`; the head dimension is fixed (`d_head = 32`) and the number of heads
//!   is `n / 32` (8 heads at width 256, 32 at 1024, as in the paper); MLP hidden size `4n`;
//!   attention scale `d_head^-1/2`; no dropout; depth configurable (paper: 6 blocks).
//! - qk-LayerNorm (Wortsman et al. 2024; switchable): a LayerNorm over each head's `d_head`
//!   coordinates of queries and keys, its gain and bias shared by the heads, applied before
//!   the rotary embedding (as in the authors' LitGPT fork `sbordt/litgpt`, `model.py`).
//! - Positions: rotary embeddings (RoPE) on the first quarter of each head's dimensions
//!   (`rotary_frac = 0.25`, base 10000), the "rotate half" convention, as Pythia and LitGPT.
//!   No learned position embedding.
//! - Pythia's parallel residual (`parallel_residual = true`, LitGPT's Pythia default) with
//!   separate LayerNorms for attention and MLP; biases on all projections (`bias = true`) and
//!   none on the readout (`lm_head_bias = false` in LitGPT); LayerNorm `eps = 1e-5`; exact
//!   (erf) GELU; untied embedding and readout.
//! - LayerNorm gains and biases trainable, or frozen at 1 and 0 (`train_norms = false`, the
//!   paper's Fig. F.3 setting).
//!
//! # Layer roles and the parameterization
//! The embedding is the dense map `W_emb: [n, V]` applied to one-hot tokens (`fan_in = V`),
//! computed as a lookup; it is input-like. LayerNorm gains and biases (including qk-norm and
//! the final norm) and projection biases are input-like; `W_q, W_k, W_v, W_o` and both MLP
//! weights are hidden-like (width to width, fan-in `n` or `4n`); the readout `W_out: [V, n]`
//! is output-like. Initialisation, multipliers and learning-rate factors all come from
//! [`Parameterization`] through [`super::build_params`], exactly as for the MLP, so SP, muP,
//! SP-full-align, MUSOLI and the proposed last-layer init apply unchanged.
//!
//! # Differences from the authors' setup (stated, not hidden)
//! - Initialisation follows widthlab's parameterizations (SP: He, `sqrt(2/fan_in)`), not
//!   LitGPT's constant `std = 0.02`. For the embedding at `V = 8192`, He gives
//!   `sqrt(2/8192) = 0.0156`, close to 0.02; hidden weights at width 256 get
//!   `sqrt(2/256) = 0.088` instead of 0.02 (larger, width-dependent as SP prescribes).
//! - Separate `W_q, W_k, W_v` (LitGPT fuses them into one `[3n, n]` matrix) so that the RCC
//!   monitor sees each projection on its own; mathematically the same network.
//! - The vocabulary is our own 8192-token BPE on Shakespeare ([`crate::data::text`]), not
//!   Pythia's 50k GPT-NeoX tokenizer on DCLM.
//!
//! # Traced forward pass
//! [`Model::forward_trace`] records every weight acting linearly on its input as a [`Site`](super::Site)
//! (embedding with its one-hot input, every LayerNorm gain and bias, the q/k/v/out projections
//! and their biases, qk-norms, both MLP layers, the final norm and the readout), so the RCC
//! monitor of [`crate::rcc`] covers every layer. Logits are returned flattened to `[B*T, V]`
//! (one row per predicted token), so losses and the monitor treat a token like an example.
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use super::{affine, dense, Activation, Affine, Core, Linear, Network, ParamBuilder, ParamShape, Trace};
use crate::param::{Parameterization, Role};
use crate::{Error, Result};

/// GPT hyper-parameters. Defaults: the paper's 6-block Pythia-style model at width 256 with
/// our 8192-token vocabulary.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GptConfig {
    /// Vocabulary size `V` (8192: the BPE tokenizer of [`crate::data::text`]).
    pub vocab_size: i64,
    /// Width `n` (`d_model`), a multiple of `head_dim` (paper: 256 .. 4096).
    pub width: i64,
    /// Number of transformer blocks (paper: 6).
    pub depth: usize,
    /// Per-head dimension, fixed while the width grows (paper: 32).
    pub head_dim: i64,
    /// MLP hidden size as a multiple of the width (4).
    pub mlp_ratio: i64,
    /// LayerNorm on queries and keys (paper: on; Fig. F.1 turns it off).
    pub qk_norm: bool,
    /// Fraction of each head's dimensions rotated by RoPE (Pythia: 0.25).
    pub rotary_frac: f64,
    /// RoPE base (10000).
    pub rope_base: f64,
    /// Pythia's parallel residual `h + Attn(LN_1 h) + MLP(LN_2 h)` (true) or sequential.
    pub parallel_residual: bool,
    /// Biases on the attention and MLP projections (Pythia: true; never on the readout).
    pub bias: bool,
    /// LayerNorm gains and biases train (false: frozen at 1 and 0, Fig. F.3).
    pub train_norms: bool,
    /// LayerNorm epsilon (1e-5).
    pub norm_eps: f64,
}

impl Default for GptConfig {
    fn default() -> Self {
        GptConfig {
            vocab_size: 8192,
            width: 256,
            depth: 6,
            head_dim: 32,
            mlp_ratio: 4,
            qk_norm: true,
            rotary_frac: 0.25,
            rope_base: 10000.0,
            parallel_residual: true,
            bias: true,
            train_norms: true,
            norm_eps: 1e-5,
        }
    }
}

impl GptConfig {
    /// Number of attention heads `n / d_head`.
    pub fn heads(&self) -> i64 {
        self.width / self.head_dim
    }

    /// Number of rotated dimensions per head (even).
    pub fn rotary_dims(&self) -> i64 {
        let r = (self.rotary_frac * self.head_dim as f64).round() as i64;
        (r / 2) * 2
    }

    /// Declares every parameter in order (the order weights are drawn in) into `b`: the
    /// single source of the model's structure ([`GptConfig::layout`] and [`Gpt::new`] both
    /// run it). LayerNorms train unless `train_norms` is off; projections carry biases if
    /// `bias`, the embedding and the readout never.
    pub fn declare(&self, b: &mut ParamBuilder) -> GptLayers {
        let (n, v, hd) = (self.width, self.vocab_size, self.head_dim);
        let hidden = self.mlp_ratio * n;
        let norm = |b: &mut ParamBuilder, name: &str, len| b.trainable(self.train_norms, |b| b.affine(name, len, true));
        let hidden_like = |b: &mut ParamBuilder, name: &str, fan_in, fan_out| b.linear(name, fan_in, fan_out, Role::HiddenLike, self.bias);
        let wte = b.linear("wte", v, n, Role::InputLike, false);
        let blocks = (0..self.depth)
            .map(|i| {
                let p = format!("blocks.{i}");
                let norm_1 = norm(b, &format!("{p}.norm_1"), n);
                let [q, k, v] = ["q", "k", "v"].map(|w| hidden_like(b, &format!("{p}.attn.{w}"), n, n));
                let (q_norm, k_norm) = match self.qk_norm {
                    true => (Some(norm(b, &format!("{p}.attn.q_norm"), hd)), Some(norm(b, &format!("{p}.attn.k_norm"), hd))),
                    false => (None, None),
                };
                let proj = hidden_like(b, &format!("{p}.attn.proj"), n, n);
                let norm_2 = norm(b, &format!("{p}.norm_2"), n);
                let fc = hidden_like(b, &format!("{p}.mlp.fc"), n, hidden);
                let mlp_proj = hidden_like(b, &format!("{p}.mlp.proj"), hidden, n);
                Block { norm_1, q, k, v, q_norm, k_norm, proj, norm_2, fc, mlp_proj }
            })
            .collect();
        let ln_f = norm(b, "ln_f", n);
        let lm_head = b.linear("lm_head", n, v, Role::OutputLike, false);
        GptLayers { wte, blocks, ln_f, lm_head }
    }

    /// Every parameter in order, without allocating it ([`GptConfig::declare`] as a dry run).
    pub fn layout(&self) -> Vec<ParamShape> {
        let mut b = ParamBuilder::default();
        self.declare(&mut b);
        b.into_layout()
    }

    /// The number of scalar parameters in closed form:
    /// `2 V n + 2n + L (12 n^2 + 4n [norms] + 9n [biases, if any] + 4 d_head [qk-norm, if any])`
    /// for `mlp_ratio = 4` (generally `(4 + 2r) n^2` weights per block).
    pub fn num_params(&self) -> i64 {
        let (n, v, hd, r) = (self.width, self.vocab_size, self.head_dim, self.mlp_ratio);
        let weights = (4 + 2 * r) * n * n;
        let norms = 4 * n + if self.qk_norm { 4 * hd } else { 0 };
        let biases = if self.bias { 4 * n + r * n + n } else { 0 };
        2 * v * n + 2 * n + self.depth as i64 * (weights + norms + biases)
    }

    /// [`GptConfig::num_params`] in floating point, from the layout, so that absurd widths do
    /// not overflow (call [`GptConfig::validate`] first: the depth bounds the work).
    pub fn num_params_f64(&self) -> f64 {
        self.layout().iter().map(|p| p.fan_in as f64 * p.fan_out as f64).sum()
    }

    /// Checks sizes; every error names the offending field.
    pub fn validate(&self) -> Result<()> {
        if self.vocab_size < 2 {
            return Err(Error::config(format!("model.vocab_size must be >= 2, got {}", self.vocab_size)));
        }
        if self.head_dim < 2 || self.width < self.head_dim || self.width % self.head_dim != 0 {
            return Err(Error::config(format!(
                "model.width ({}) must be a positive multiple of model.head_dim ({}): heads = width / head_dim",
                self.width, self.head_dim
            )));
        }
        if self.depth < 1 || self.mlp_ratio < 1 {
            return Err(Error::config(format!(
                "model.depth and model.mlp_ratio must be >= 1, got {} and {}",
                self.depth, self.mlp_ratio
            )));
        }
        crate::limits::check_depth("model.depth", self.depth)?;
        if !(0.0..=1.0).contains(&self.rotary_frac) || !(self.rope_base > 1.0) || !(self.norm_eps > 0.0) {
            return Err(Error::config("model.rotary_frac must be in [0, 1], rope_base > 1 and norm_eps > 0"));
        }
        Ok(())
    }
}

/// One transformer block's layers (handles to its parameters).
#[derive(Debug)]
pub struct Block {
    norm_1: Affine,
    q: Linear,
    k: Linear,
    v: Linear,
    q_norm: Option<Affine>,
    k_norm: Option<Affine>,
    proj: Linear,
    norm_2: Affine,
    fc: Linear,
    mlp_proj: Linear,
}

/// The GPT's layers as declared ([`GptConfig::declare`]).
#[derive(Debug)]
pub struct GptLayers {
    wte: Linear,
    blocks: Vec<Block>,
    ln_f: Affine,
    lm_head: Linear,
}

/// The GPT. Build with [`Gpt::new`].
#[derive(Debug)]
pub struct Gpt {
    cfg: GptConfig,
    core: Core,
    layers: GptLayers,
}

impl Gpt {
    /// Builds and initialises a GPT under `param`, drawing weights from the seeded stream
    /// `(seed, INIT)` in the order of [`GptConfig::layout`].
    pub fn new(cfg: &GptConfig, param: &Parameterization, seed: u64, device: Device) -> Result<Self> {
        cfg.validate()?;
        param.validate()?;
        let mut b = ParamBuilder::default();
        let layers = cfg.declare(&mut b);
        let core = Core { params: b.build(param, cfg.width, seed, device)?, width: cfg.width, device };
        Ok(Gpt { cfg: cfg.clone(), core, layers })
    }

    /// The configuration the model was built from.
    pub fn config(&self) -> &GptConfig {
        &self.cfg
    }

    /// The same model with every parameter converted to `kind` (e.g. `Kind::Double` for
    /// checks in f64; initial values are the f32 draws, cast). Tokens stay integers; the
    /// RoPE tables are promoted to the queries' kind where they meet them.
    pub fn to_kind(mut self, kind: Kind) -> Self {
        self.core.to_kind(kind);
        self
    }

    /// Logits for every position, unflattened.
    ///
    /// # Shapes
    /// `tokens: [B, T]` int64 -> `[B, T, V]`.
    pub fn forward_seq(&self, tokens: &Tensor) -> Tensor {
        let (b, t) = tokens.size2().expect("tokens must be [B, T]");
        self.run(tokens, None).view([b, t, self.cfg.vocab_size])
    }

    fn linear(&self, l: Linear, x: &Tensor, rec: Option<&mut Trace>) -> Tensor {
        dense(&self.core.params, l, x, rec)
    }

    /// LayerNorm over the last dimension: `g * (x - mean) / sqrt(var + eps) + b`.
    fn norm(&self, ln: Affine, x: &Tensor, rec: Option<&mut Trace>) -> Tensor {
        let d = *x.size().last().expect("norm input has a last dimension");
        if rec.is_none() {
            let params = &self.core.params;
            let (g, b) = (&params[ln.gain].tensor, ln.bias.map(|b| &params[b].tensor));
            return x.layer_norm([d], Some(g), b, self.cfg.norm_eps, false);
        }
        let z = x.layer_norm::<&Tensor>([d], None, None, self.cfg.norm_eps, false); // normalised, [.., d]
        affine(&self.core.params, ln, &z, rec)
    }

    /// RoPE tables for `t` positions: `(cos, sin)`, each `[t, r]` with `r` rotated dims.
    fn rope_cache(&self, t: i64) -> (Tensor, Tensor) {
        let r = self.cfg.rotary_dims();
        let opts = (Kind::Float, self.core.device);
        let inv_freq = Tensor::arange_start_step(0, r, 2, (Kind::Double, self.core.device)) // [r/2]
            .divide_scalar(r as f64)
            .negative()
            .multiply_scalar(self.cfg.rope_base.ln())
            .exp();
        let pos = Tensor::arange(t, (Kind::Double, self.core.device)); // [t]
        let angles = pos.outer(&inv_freq); // [t, r/2]
        let angles = Tensor::cat(&[&angles, &angles], -1); // [t, r]
        (angles.cos().to_kind(opts.0), angles.sin().to_kind(opts.0))
    }

    /// Rotates the first `r` dims of every head ("rotate half": pairs `(i, i + r/2)`).
    ///
    /// # Shapes
    /// `x: [B, H, T, d_head]`, `cos, sin: [T, r]` -> `[B, H, T, d_head]`.
    fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Tensor {
        let r = cos.size()[1];
        if r == 0 {
            return x.shallow_clone();
        }
        let d = x.size()[3];
        let xr = x.narrow(-1, 0, r); // [B, H, T, r]
        let (x1, x2) = (xr.narrow(-1, 0, r / 2), xr.narrow(-1, r / 2, r / 2));
        let rotated = Tensor::cat(&[&x2.neg(), &x1], -1); // [B, H, T, r]
        let roped = xr * cos + rotated * sin;
        if r == d {
            roped
        } else {
            Tensor::cat(&[&roped, &x.narrow(-1, r, d - r)], -1)
        }
    }

    /// Causal multi-head self-attention.
    ///
    /// # Shapes
    /// `u: [B, T, n]` -> `[B, T, n]`.
    fn attention(&self, blk: &Block, u: &Tensor, rope: &(Tensor, Tensor), mut rec: Option<&mut Trace>) -> Tensor {
        let (b, t, n) = u.size3().expect("[B, T, n]");
        let (h, hd) = (self.cfg.heads(), self.cfg.head_dim);
        let heads = |x: Tensor| x.view([b, t, h, hd]).transpose(1, 2); // [B, H, T, d_head]
        let mut q = heads(self.linear(blk.q, u, rec.as_deref_mut()));
        let mut k = heads(self.linear(blk.k, u, rec.as_deref_mut()));
        let v = heads(self.linear(blk.v, u, rec.as_deref_mut()));
        if let (Some(qn), Some(kn)) = (blk.q_norm, blk.k_norm) {
            q = self.norm(qn, &q, rec.as_deref_mut()); // [B, H, T, d_head]
            k = self.norm(kn, &k, rec.as_deref_mut());
        }
        let (q, k) = (Self::rope(&q, &rope.0, &rope.1), Self::rope(&k, &rope.0, &rope.1));
        // softmax(q k^T / sqrt(d_head) + causal mask) v
        let scale = 1.0 / (hd as f64).sqrt();
        // (the fused kernel's backward is not differentiable: Hessians take the composite one)
        let y = if super::in_twice_differentiable() {
            Tensor::internal_scaled_dot_product_attention_math::<&Tensor>(&q, &k, &v, None, 0.0, true, None, scale, false).0
        } else {
            Tensor::scaled_dot_product_attention::<&Tensor>(&q, &k, &v, None, 0.0, true, scale, false)
        }; // [B, H, T, d_head]
        let y = y.transpose(1, 2).contiguous().view([b, t, n]); // [B, T, n]
        self.linear(blk.proj, &y, rec)
    }

    /// The MLP `W_2 GELU(W_1 v)`; records the GELU output as the block's hidden activation.
    ///
    /// # Shapes
    /// `v: [B, T, n]` -> `[B, T, n]`.
    fn mlp(&self, blk: &Block, v: &Tensor, mut rec: Option<&mut Trace>) -> Tensor {
        let a = Activation::Gelu.forward(&self.linear(blk.fc, v, rec.as_deref_mut())); // [B, T, 4n]
        if let Some(r) = rec.as_deref_mut() {
            let hidden = *a.size().last().expect("[B, T, 4n]");
            r.activations.push(a.reshape([-1, hidden])); // [B*T, 4n]
        }
        self.linear(blk.mlp_proj, &a, rec)
    }
}

impl Network for Gpt {
    fn core(&self) -> &Core {
        &self.core
    }

    /// Forward pass; records sites when `rec` is given.
    ///
    /// # Shapes
    /// `tokens: [B, T]` int64 -> logits `[B*T, V]`.
    fn run(&self, tokens: &Tensor, mut rec: Option<&mut Trace>) -> Tensor {
        let (b, t) = tokens.size2().expect("tokens must be [B, T]");
        let v = self.cfg.vocab_size;
        // Embedding: a lookup, i.e. W_emb onehot(tokens); traced as the dense site it is.
        let (params, wte) = (&self.core.params, self.layers.wte.weight);
        let (w, multiplier) = (&params[wte].tensor, params[wte].multiplier); // [n, V]
        let mut h = Tensor::embedding(&w.tr(), tokens, -1, false, false); // [B, T, n]
        if multiplier != 1.0 {
            h = h * multiplier;
        }
        if let Some(r) = rec.as_deref_mut() {
            let onehot = tokens.one_hot(v).to_kind(Kind::Float); // [B, T, V]
            super::record(params, Some(r), wte, super::LinearOp::Dense { multiplier }, &onehot, &h);
        }
        let rope = self.rope_cache(t); // ([T, r], [T, r])
        for blk in &self.layers.blocks {
            let u = self.norm(blk.norm_1, &h, rec.as_deref_mut()); // [B, T, n]
            if self.cfg.parallel_residual {
                let a = self.attention(blk, &u, &rope, rec.as_deref_mut());
                let m_in = self.norm(blk.norm_2, &h, rec.as_deref_mut());
                let m = self.mlp(blk, &m_in, rec.as_deref_mut());
                h = h + a + m; // [B, T, n]
            } else {
                h = &h + self.attention(blk, &u, &rope, rec.as_deref_mut());
                let m_in = self.norm(blk.norm_2, &h, rec.as_deref_mut());
                h = &h + self.mlp(blk, &m_in, rec.as_deref_mut());
            }
        }
        let x = self.norm(self.layers.ln_f, &h, rec.as_deref_mut()); // [B, T, n]
        self.linear(self.layers.lm_head, &x, rec).view([b * t, v]) // [B*T, V]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::param::ParamKind;
    use crate::model::Model;
    use crate::rng;

    fn tiny() -> GptConfig {
        GptConfig { vocab_size: 50, width: 64, depth: 2, head_dim: 16, ..GptConfig::default() }
    }

    fn tokens(b: i64, t: i64, v: i64, seed: u64) -> Tensor {
        let mut r = rng::rng(seed, rng::stream::MISC);
        let ids: Vec<i64> = (0..b * t).map(|_| rand::Rng::random_range(&mut r, 0..v)).collect();
        Tensor::from_slice(&ids).view([b, t])
    }

    #[test]
    fn output_at_t_ignores_tokens_after_t() {
        for parallel in [true, false] {
            let cfg = GptConfig { parallel_residual: parallel, ..tiny() };
            let m = Gpt::new(&cfg, &Parameterization::sp(), 0, Device::Cpu).unwrap();
            let x = tokens(2, 12, 50, 1);
            let f = m.forward_seq(&x);
            for t in [0i64, 5, 10] {
                // change every token after position t
                let y = x.copy();
                let tail = tokens(2, 11 - t, 50, 7 + t as u64);
                y.narrow(1, t + 1, 11 - t).copy_(&((tail + 1) .remainder(50)));
                let g = m.forward_seq(&y);
                let same = f.narrow(1, 0, t + 1).allclose(&g.narrow(1, 0, t + 1), 1e-5, 1e-5, false);
                assert!(same, "position <= {t} changed (parallel {parallel})");
                // ...while later positions do depend on them
                let diff = (f.narrow(1, t + 1, 1) - g.narrow(1, t + 1, 1)).abs().max().double_value(&[]);
                assert!(diff > 1e-4, "position {} ignores its own token", t + 1);
            }
        }
    }

    #[test]
    fn parameter_count_formula() {
        for cfg in [
            tiny(),
            GptConfig { qk_norm: false, bias: false, ..tiny() },
            GptConfig { depth: 3, mlp_ratio: 2, ..tiny() },
        ] {
            let m = Gpt::new(&cfg, &Parameterization::sp(), 0, Device::Cpu).unwrap();
            assert_eq!(m.num_params(), cfg.num_params(), "{cfg:?}");
        }
        // by hand: V = 50, n = 64, L = 2, d_head = 16, biases and qk-norm on
        let (v, n, l, hd) = (50i64, 64i64, 2i64, 16i64);
        let per_block = 12 * n * n + 4 * n + 9 * n + 4 * hd;
        assert_eq!(tiny().num_params(), 2 * v * n + 2 * n + l * per_block);
        // the paper's width-256 model with Pythia's padded 50304-token vocabulary: ~30M
        let paper = GptConfig { vocab_size: 50304, ..GptConfig::default() };
        let count = paper.num_params() as f64;
        assert!((count / 30e6 - 1.0).abs() < 0.03, "{count}");
        assert_eq!(paper.heads(), 8);
        assert_eq!(GptConfig { width: 1024, ..paper }.heads(), 32);
    }

    #[test]
    fn every_parameter_has_its_role() {
        let m = Gpt::new(&tiny(), &Parameterization::mup(), 0, Device::Cpu).unwrap();
        for p in m.params() {
            let want = if p.name == "wte.weight" {
                Role::InputLike
            } else if p.name == "lm_head.weight" {
                Role::OutputLike
            } else if p.kind == ParamKind::Weight {
                Role::HiddenLike
            } else {
                Role::InputLike // gains and biases
            };
            assert_eq!(p.role, want, "{}", p.name);
            let kind_ok = match p.kind {
                ParamKind::NormGain => p.name.ends_with(".gain"),
                ParamKind::Bias => p.name.ends_with(".bias"),
                ParamKind::Weight => p.name.ends_with(".weight"),
            };
            assert!(kind_ok, "{}", p.name);
        }
        let names: Vec<&str> = m.params().iter().map(|p| p.name.as_str()).collect();
        for n in ["wte.weight", "blocks.1.attn.q.weight", "blocks.1.attn.k_norm.gain", "blocks.0.mlp.fc.bias", "ln_f.gain", "lm_head.weight"] {
            assert!(names.contains(&n), "{n} missing");
        }
        // shapes [fan_out, fan_in]; readout has no bias
        let get = |name: &str| m.params().iter().find(|p| p.name == name).unwrap();
        assert_eq!(get("wte.weight").tensor.size(), [64, 50]);
        assert_eq!(get("blocks.0.mlp.fc.weight").tensor.size(), [256, 64]);
        assert_eq!(get("blocks.0.mlp.proj.weight").tensor.size(), [64, 256]);
        assert_eq!(get("lm_head.weight").tensor.size(), [50, 64]);
        assert!(!names.contains(&"lm_head.bias"));
        // muP rules as for the MLP: readout init std shrinks as n^-1
        let p = Parameterization::mup();
        let fans = crate::param::Fans { fan_in: 64, fan_out: 50, width: 64, d_out: 50 };
        let want = p.resolve(Role::OutputLike, ParamKind::Weight, fans, crate::param::OptimizerFamily::Sgd);
        let got = get("lm_head.weight");
        assert!((got.lr_scale_sgd - want.lr_scale).abs() < 1e-12);
        let std = got.tensor.std(true).double_value(&[]);
        assert!((std / want.init_std - 1.0).abs() < 0.1, "{std} vs {}", want.init_std);
        // frozen LayerNorms
        let frozen = Gpt::new(&GptConfig { train_norms: false, ..tiny() }, &p, 0, Device::Cpu).unwrap();
        for q in frozen.params() {
            assert_eq!(q.trainable, q.kind == ParamKind::Weight || (q.kind == ParamKind::Bias && !q.name.contains("norm") && q.name != "ln_f.bias"), "{}", q.name);
        }
    }

    #[test]
    fn trace_covers_every_parameter_and_reproduces_outputs() {
        for p in [Parameterization::sp(), Parameterization::mup_mult()] {
            let m = Gpt::new(&tiny(), &p, 3, Device::Cpu).unwrap();
            let x = tokens(3, 9, 50, 2);
            let t = m.forward_trace(&x);
            assert!(t.logits.allclose(&m.forward(&x), 1e-5, 1e-5, false));
            assert_eq!(t.logits.size(), [27, 50]);
            // every parameter appears at exactly one site (each weight acts once per forward)
            let mut seen = vec![0; m.params().len()];
            for s in &t.sites {
                seen[s.param] += 1;
                let y = s.op.apply(&m.params()[s.param].tensor, &s.input);
                assert!(y.allclose(&s.output, 1e-5, 1e-5, false), "{}", s.name);
            }
            assert!(seen.iter().all(|&c| c == 1), "{seen:?}");
            assert_eq!(t.activations.len(), 2);
        }
    }

    #[test]
    fn rope_is_a_rotation_by_position() {
        let m = Gpt::new(&GptConfig { rotary_frac: 1.0, ..tiny() }, &Parameterization::sp(), 0, Device::Cpu).unwrap();
        let (cos, sin) = m.rope_cache(5);
        let x = rng::normal(&[1, 1, 5, 16], 1.0, &mut rng::rng(0, 9), Device::Cpu);
        let y = Gpt::rope(&x, &cos, &sin);
        // norms are preserved, position 0 is unchanged
        let nx = x.square().sum_dim_intlist(&[-1i64][..], false, Kind::Float);
        let ny = y.square().sum_dim_intlist(&[-1i64][..], false, Kind::Float);
        assert!(nx.allclose(&ny, 1e-5, 1e-5, false));
        assert!(x.narrow(2, 0, 1).allclose(&y.narrow(2, 0, 1), 1e-6, 1e-6, false));
        // dims 0 and 8 of position 1 rotate by angle 1 (frequency base^0 = 1)
        let (a, b) = (x.double_value(&[0, 0, 1, 0]), x.double_value(&[0, 0, 1, 8]));
        let want = a * 1f64.cos() - b * 1f64.sin();
        assert!((y.double_value(&[0, 0, 1, 0]) - want).abs() < 1e-5);
        assert_eq!(GptConfig::default().rotary_dims(), 8);
    }

    #[test]
    fn twice_differentiable_attention_is_the_same_function() {
        // inside the scope attention is libtorch's composite math kernel: the same logits, and
        // a backward pass that can be differentiated again (in f64, to rounding)
        let m = Gpt::new(&tiny(), &Parameterization::sp(), 0, Device::Cpu).unwrap().to_kind(Kind::Double);
        assert_eq!(m.params()[0].tensor.kind(), Kind::Double);
        let x = tokens(2, 9, 50, 3);
        let fused = m.forward(&x);
        let (math, hv) = crate::model::twice_differentiable(|| {
            let f = m.forward(&x);
            let w = &m.params()[m.layers.blocks[0].q.weight].tensor;
            let g = Tensor::run_backward(&[f.square().sum(Kind::Double)], &[w], true, true).remove(0);
            let hv = Tensor::run_backward(&[g.sum(Kind::Double)], &[w], false, false).remove(0);
            (f, hv)
        });
        assert!(math.allclose(&fused, 1e-12, 1e-12, false));
        assert!(hv.abs().sum(Kind::Double).double_value(&[]) > 0.0);
        assert!(!crate::model::in_twice_differentiable());
    }

    #[test]
    fn bad_configs_are_errors() {
        let p = Parameterization::sp();
        for cfg in [GptConfig { width: 40, ..tiny() }, GptConfig { depth: 0, ..tiny() }, GptConfig { vocab_size: 1, ..tiny() }] {
            let e = Gpt::new(&cfg, &p, 0, Device::Cpu).unwrap_err();
            assert!(matches!(e, Error::InvalidConfig(_)), "{e}");
        }
        assert!(Gpt::new(&GptConfig { width: 40, ..tiny() }, &p, 0, Device::Cpu).unwrap_err().to_string().contains("head_dim"));
    }
}
