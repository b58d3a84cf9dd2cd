//! Training the GPT on text: a serde [`GptTrainConfig`] whose defaults are the paper's
//! language setting scaled to a CPU (appendix D.3: AdamW with betas (0.9, 0.95), eps 1e-12,
//! weight decay 0.1, warmup then cosine decay to 10%, gradient clipping) and the GPT's data
//! ([`TextBatches`]); the run itself is the one [`Trainer`](super::Trainer) of every model,
//! its result a [`TrainResult<GptTrainConfig>`](super::TrainResult).
//!
//! Losses are those of [`crate::loss`] on the flattened logits `[B*T, V]` and targets
//! `[B*T]`: every predicted token counts as one example (CE averages over tokens; MSE over
//! tokens and the `V` classes). Evaluation: loss and next-token accuracy on a fixed, seeded
//! set of `eval.batches` training windows and of validation windows.
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use super::{Batches, EvalRecord, ParamSpec, RunConfig, Settings, Setup, TrainStep};
use crate::data::text::{random_starts, sample_windows, windows, TextConfig, TextData};
use crate::device::{with_autocast, DeviceChoice, Precision};
use crate::loss::{accuracy, Loss};
use crate::model::{Gpt, GptConfig, Model};
use crate::optim::{OptimConfig, OptimizerKind, Schedule};
use crate::param::Parameterization;
use crate::rng::{self, stream};
use crate::{Error, Result};

/// Evaluation settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GptEvalConfig {
    /// Evaluate every this many steps (0: only at the end).
    pub every: usize,
    /// Number of fixed windows (of the training batch size) per split.
    pub batches: usize,
}

impl Default for GptEvalConfig {
    fn default() -> Self {
        GptEvalConfig { every: 0, batches: 4 }
    }
}

/// Everything that defines a GPT training run. Defaults: 6 blocks of width 256 on
/// Shakespeare (V = 8192, T = 128), SP, AdamW (0.9, 0.95, eps 1e-12, wd 0.1), lr 3e-3,
/// clipping at 1.0, 10% warmup then cosine to 10%, batch 16, 500 steps.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GptTrainConfig {
    pub seed: u64,
    pub device: DeviceChoice,
    /// Forward-pass number format: `auto` (bf16 mixed precision on CUDA, fp32 on the CPU),
    /// `fp32` or `bf16` (see [`crate::device::Precision`]).
    #[serde(skip_serializing_if = "Precision::is_auto")]
    pub precision: Precision,
    /// libtorch threads (`None`: libtorch's default).
    pub threads: Option<usize>,
    /// `vocab_size` is taken from `data`.
    pub model: GptConfig,
    pub param: ParamSpec,
    /// Overrides the parameterization's global learning-rate exponent `alpha`.
    pub alpha: Option<f64>,
    /// Overrides the base width `n0` of the parameterization's per-layer rules (see
    /// [`crate::train::TrainConfig::base_width`]; the authors' GPT code scales muP-like rules
    /// relative to its base model's width 256).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_width: Option<f64>,
    /// Base (maximal) learning rate `eta`.
    pub lr: f64,
    pub loss: Loss,
    /// With `schedule = warmup-cosine`, `total` is set to the number of steps.
    pub optim: OptimConfig,
    pub data: TextConfig,
    /// Sequences per batch.
    pub batch_size: usize,
    pub steps: usize,
    /// Warmup as a fraction of `steps` (the paper: 700 of 10681, ~6.5%); `None` keeps
    /// `optim.schedule` as given.
    pub warmup_frac: Option<f64>,
    pub eval: GptEvalConfig,
    /// Also stop as diverged when the training loss exceeds this.
    pub max_loss: Option<f64>,
}

impl Default for GptTrainConfig {
    fn default() -> Self {
        GptTrainConfig {
            seed: 0,
            device: DeviceChoice::Cpu,
            precision: Precision::Auto,
            threads: None,
            model: GptConfig::default(),
            param: ParamSpec::default(),
            alpha: None,
            base_width: None,
            lr: 3e-3,
            loss: Loss::default(),
            optim: OptimConfig {
                kind: OptimizerKind::AdamW,
                beta1: 0.9,
                beta2: 0.95,
                eps: 1e-12,
                weight_decay: 0.1,
                grad_clip: Some(1.0),
                ..OptimConfig::default()
            },
            data: TextConfig::default(),
            batch_size: 16,
            steps: 500,
            warmup_frac: Some(0.1),
            eval: GptEvalConfig::default(),
            max_loss: None,
        }
    }
}

impl GptTrainConfig {
    /// Reads a config from a TOML or JSON file (by extension; TOML otherwise).
    pub fn from_file(path: &std::path::Path) -> Result<Self> {
        crate::config::read_config(path)
    }

    /// The parameterization with the `alpha` and `base_width` overrides applied.
    pub fn parameterization(&self) -> Result<Parameterization> {
        self.param.resolve_with(self.alpha, self.base_width)
    }

    /// The optimizer settings with the warmup-cosine schedule spanning the run.
    pub fn optim_config(&self) -> OptimConfig {
        let mut o = self.optim.clone();
        if let Some(f) = self.warmup_frac {
            let warmup = ((f * self.steps as f64).round() as usize).clamp(1, self.steps.max(1));
            o.schedule = Schedule::WarmupCosine { warmup, total: self.steps.max(warmup), final_frac: 0.1 };
        }
        o
    }

    /// Checks everything that can be checked without loading data.
    pub fn validate(&self) -> Result<()> {
        if self.batch_size == 0 || self.steps == 0 {
            return Err(Error::config("batch_size and steps must be >= 1"));
        }
        if !(self.lr.is_finite() && self.lr >= 0.0) {
            return Err(Error::config(format!("lr must be finite and >= 0, got {}", self.lr)));
        }
        if let Some(f) = self.warmup_frac {
            if !(0.0..=1.0).contains(&f) {
                return Err(Error::config(format!("warmup_frac must be in [0, 1], got {f}")));
            }
        }
        if let Some(t) = self.threads {
            crate::limits::check_threads("threads", t)?;
        }
        self.parameterization()?;
        self.optim_config().validate()?;
        self.data.validate()?;
        self.model_config().validate()?;
        crate::limits::check_steps("the training run", self.steps as f64)
    }

    /// Checks that a run fits in this machine's memory ([`GptTrainConfig::min_memory_bytes`])
    /// when it runs on the CPU (as [`crate::train::TrainConfig::check_fits`]).
    pub fn check_fits(&self) -> Result<()> {
        self.validate()?;
        if self.device.resolve()? != Device::Cpu {
            return Ok(());
        }
        let c = &self.model;
        crate::limits::check_memory(
            &format!("a GPT of width {} and depth {} (batch {} x seq_len {}, vocabulary {})", c.width, c.depth, self.batch_size, self.data.seq_len, self.data.vocab_size),
            self.min_memory_bytes(),
        )
    }

    /// The model config with the tokenizer's vocabulary size.
    pub fn model_config(&self) -> GptConfig {
        GptConfig { vocab_size: self.data.vocab_size as i64, ..self.model.clone() }
    }

    /// A lower bound of the memory a run needs: parameters with their gradients and
    /// optimizer state, one batch's logits (with softmax and gradient) and activations, the
    /// attention scores, the fixed evaluation windows, generated text, the loss of every step,
    /// libtorch's bookkeeping per block.
    pub fn min_memory_bytes(&self) -> f64 {
        let m = self.model_config();
        let tokens = self.batch_size as f64 * self.data.seq_len as f64;
        let (n, depth) = (m.width as f64, m.depth as f64);
        let params = m.num_params_f64() * 4.0 * (2 + self.optim.state_slots()) as f64;
        let logits = 3.0 * 4.0 * tokens * m.vocab_size as f64;
        let activations = 2.0 * 4.0 * tokens * n * depth;
        let attention = 4.0 * tokens * self.data.seq_len as f64 * (n / m.head_dim.max(1) as f64) * depth;
        let eval = 2.0 * 8.0 * self.eval.batches as f64 * self.batch_size as f64;
        let text = match self.data.source {
            crate::data::text::TextSource::Generated { chars } => chars as f64,
            crate::data::text::TextSource::Shakespeare => 0.0,
        };
        params + logits + activations + attention + eval + text + 8.0 * self.steps as f64 + crate::limits::BYTES_PER_LAYER * depth
    }
}

/// The GPT's data: tokenized text, training windows at seeded random positions, and fixed
/// windows of the training and validation text for evaluation.
pub struct TextBatches {
    pub text: TextData,
    batch_size: usize,
    rng: rand_chacha::ChaCha8Rng,
    eval_train: Vec<i64>,
    eval_val: Vec<i64>,
}

impl TextBatches {
    /// Loss and next-token accuracy of `model` on windows at `starts` of `tokens` (no gradients).
    fn evaluate_on(&self, model: &dyn Model, loss: &Loss, mixed: bool, tokens: &Tensor, starts: &[i64]) -> (f64, f64) {
        let (mut loss_sum, mut acc_sum, mut n) = (0.0, 0.0, 0.0);
        tch::no_grad(|| {
            for chunk in starts.chunks(self.batch_size.max(1)) {
                let (x, y) = windows(tokens, chunk, self.text.seq_len);
                let y = y.reshape([-1]); // [B*T]
                let (f, l) = with_autocast(mixed, || {
                    let f = model.forward(&x); // [B*T, V]
                    let l = loss.compute(&f, &y);
                    (f, l)
                });
                let w = chunk.len() as f64;
                loss_sum += l.to_kind(Kind::Double).double_value(&[]) * w;
                acc_sum += accuracy(&f, &y) * w;
                n += w;
            }
        });
        (loss_sum / n, acc_sum / n)
    }
}

impl Batches for TextBatches {
    /// `batch_size` training windows at seeded random positions.
    ///
    /// # Shapes
    /// -> (`x: [B, T]`, targets flattened `[B*T]`).
    fn next_batch(&mut self) -> (Tensor, Tensor) {
        sample_windows(&self.text.train, self.text.seq_len, self.batch_size, &mut self.rng)
    }

    /// Loss and accuracy on the fixed training windows as `train_*`, on the fixed validation
    /// windows as `test_*`.
    fn evaluate(&self, model: &dyn Model, loss: &Loss, mixed: bool, step: usize) -> EvalRecord {
        let (train_loss, train_acc) = self.evaluate_on(model, loss, mixed, &self.text.train, &self.eval_train);
        let (val_loss, val_acc) = self.evaluate_on(model, loss, mixed, &self.text.val, &self.eval_val);
        EvalRecord { step, train_loss, train_acc, test_loss: Some(val_loss), test_acc: Some(val_acc) }
    }

    /// A fixed batch of `size` validation windows, seeded by `seed`.
    ///
    /// # Shapes
    /// -> (`[size, T]`, targets flattened `[size * T]`).
    fn probe(&self, size: usize, seed: u64) -> (Tensor, Tensor) {
        sample_windows(&self.text.val, self.text.seq_len, size, &mut rng::rng(seed, stream::PROBE))
    }

    fn curvature_batch(&self, size: Option<usize>, seed: u64) -> (Tensor, Tensor) {
        crate::sharpness::gpt_batch(&self.text.train, self.text.seq_len, size.unwrap_or(8), seed)
    }

    fn tokens_per_step(&self) -> Option<f64> {
        Some((self.batch_size as i64 * self.text.seq_len) as f64)
    }
}

impl TrainStep for Gpt {}

impl RunConfig for GptTrainConfig {
    type Model = Gpt;
    type Data = TextBatches;
    type Loaded = TextData;

    fn settings(&self) -> Settings {
        Settings {
            seed: self.seed,
            device: self.device,
            threads: self.threads,
            lr: self.lr,
            loss: self.loss,
            optim: self.optim_config(),
            eval_every: self.eval.every,
            max_loss: self.max_loss,
        }
    }

    fn check_fits(&self) -> Result<()> {
        GptTrainConfig::check_fits(self)
    }

    fn load(&self) -> Result<TextData> {
        TextData::load(&self.data, self.seed)
    }

    fn setup(&self, data: TextData, device: Device) -> Result<Setup<Self>> {
        let mixed = self.precision.mixed_on(device)?;
        let text = data.to_device(device);
        let mut cfg = self.clone();
        cfg.model.vocab_size = text.vocab_size;
        cfg.data.seq_len = text.seq_len;
        let model = Gpt::new(&cfg.model, &cfg.parameterization()?, cfg.seed, device)?;
        let k = cfg.eval.batches * cfg.batch_size;
        let mut er = rng::rng(cfg.seed, stream::SUBSET + 100);
        let eval_train = random_starts(text.train.size()[0], text.seq_len, k, &mut er);
        let eval_val = random_starts(text.val.size()[0], text.seq_len, k, &mut er);
        let rng = rng::rng(cfg.seed, stream::SHUFFLE);
        let data = TextBatches { text, batch_size: cfg.batch_size, rng, eval_train, eval_val };
        let total_steps = cfg.steps;
        Ok(Setup { cfg, model, data, total_steps, mixed })
    }

    fn parameterization_name(&self) -> Result<String> {
        Ok(self.parameterization()?.name)
    }

    fn set_width(&mut self, width: i64) {
        self.model.width = width;
    }
    fn set_seed(&mut self, seed: u64) {
        self.seed = seed;
    }
    fn set_steps(&mut self, steps: usize) {
        self.steps = steps;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::{train, Outcome, TrainResult, Trainer};
    use crate::data::text::TextSource;
    use crate::loss::LossKind;

    /// A tiny GPT on generated text: needs no files.
    pub(crate) fn tiny_cfg() -> GptTrainConfig {
        GptTrainConfig {
            model: GptConfig { width: 32, depth: 2, head_dim: 16, ..GptConfig::default() },
            data: TextConfig { source: TextSource::Generated { chars: 40_000 }, vocab_size: 400, seq_len: 32, ..TextConfig::default() },
            lr: 1e-2,
            batch_size: 8,
            steps: 60,
            threads: Some(1),
            ..GptTrainConfig::default()
        }
    }

    #[test]
    fn short_run_lowers_validation_loss() {
        let cfg = tiny_cfg();
        let t = Trainer::new(&cfg).unwrap();
        let before = t.evaluate(0).test_loss.unwrap();
        let r = t.run(false, None).unwrap();
        assert_eq!(r.outcome, Outcome::Completed);
        let after = r.test_loss().unwrap();
        // at init the loss is near ln(V); training on the toy language must beat that clearly
        assert!(after < before - 1.0, "val loss {before} -> {after}");
        assert!(r.tokens_per_second.unwrap() > 0.0 && r.steps == 60);
        let json = serde_json::to_string(&r).unwrap();
        let back: TrainResult<GptTrainConfig> = serde_json::from_str(&json).unwrap();
        assert_eq!(back.steps, 60);
    }

    #[test]
    fn same_seed_same_weights_and_mse_and_sgd_run() {
        let mut cfg = tiny_cfg();
        cfg.steps = 3;
        let run = |c: &GptTrainConfig| {
            let mut t = Trainer::new(c).unwrap();
            for _ in 0..3 {
                t.step().unwrap();
            }
            t.model.snapshot()
        };
        let (a, b) = (run(&cfg), run(&cfg));
        assert!(a.iter().zip(&b).all(|(x, y)| x.equal(y)));
        let c = run(&GptTrainConfig { seed: 1, ..cfg.clone() });
        assert!(!a[0].equal(&c[0]));
        for (kind, loss) in [(OptimizerKind::Sgd, LossKind::Ce), (OptimizerKind::AdamW, LossKind::Mse)] {
            let mut c = cfg.clone();
            c.optim.kind = kind;
            c.loss = Loss::new(loss);
            let r = train(&c, false).unwrap();
            assert!(r.batch_losses.iter().all(|l| l.is_finite()), "{kind:?} {loss:?}");
        }
    }

    #[test]
    fn schedule_spans_the_run_and_bad_configs_error() {
        let cfg = GptTrainConfig { steps: 100, ..GptTrainConfig::default() };
        let o = cfg.optim_config();
        assert_eq!(o.schedule, Schedule::WarmupCosine { warmup: 10, total: 100, final_frac: 0.1 });
        assert_eq!((o.beta1, o.beta2, o.eps, o.weight_decay), (0.9, 0.95, 1e-12, 0.1));
        let bad = |f: &dyn Fn(&mut GptTrainConfig)| {
            let mut c = tiny_cfg();
            f(&mut c);
            Trainer::new(&c).err().expect("should fail").to_string()
        };
        assert!(bad(&|c| c.model.width = 40).contains("head_dim"));
        assert!(bad(&|c| c.batch_size = 0).contains("batch_size"));
        assert!(bad(&|c| c.data.seq_len = 100_000).contains("seq_len"));
        assert!(bad(&|c| c.param = ParamSpec::Name("nope".into())).contains("unknown parameterization"));
        assert!(bad(&|c| c.precision = Precision::Bf16).contains("needs a CUDA device"));
    }

    #[test]
    fn precision_auto_is_fp32_on_cpu_and_absent_from_the_json() {
        let cfg = tiny_cfg();
        assert!(!serde_json::to_string(&cfg).unwrap().contains("precision"), "run keys must not change");
        let t = Trainer::new(&cfg).unwrap();
        assert!(!t.mixed);
        let back: GptTrainConfig = serde_json::from_str(r#"{"precision": "bf16"}"#).unwrap();
        assert_eq!(back.precision, Precision::Bf16);
    }
}
