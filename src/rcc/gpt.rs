//! Refined coordinate checks of the GPT: train a [`crate::model::Gpt`] at several widths on
//! text with the [`Monitor`] watching every layer, and collect the same tidy rows as the MLP
//! checks ([`CoordCheckResult`]), so fits and figures are shared.
//!
//! Presets (section 3.1 and appendix E of the paper, at CPU scale):
//! - `fig2`: SP, AdamW, `eta_n = 0.01 (n/256)^-1` (width-independent hidden-layer feature
//!   learning under Adam), the setting of Fig. 2, C.1, E.15 (bottom) and E.16.
//! - `e18`: SP-full-align, AdamW, width-independent `eta = 0.00316` (Fig. E.17, E.18).
//!
//! The probe batch is a fixed, seeded set of validation windows; a "width" here is the
//! residual width `n` (heads `n/32`).
use serde::{Deserialize, Serialize};

use super::runner::{collect_rows, monitored_run, run_grid, CheckSpec};
use super::{CoordCheckResult, MonitorConfig, Profile, Spectral, StepSchedule};
use crate::data::text::TextData;
use crate::model::GptConfig;
use crate::train::gpt::GptTrainConfig;
use crate::train::{ParamSpec, Trainer};
use crate::{Error, Result};

/// A coordinate check of the GPT: one training setup at several widths and seeds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GptCheck {
    pub name: String,
    /// Everything but the width, seed and number of steps (set per run).
    pub train: GptTrainConfig,
    pub widths: Vec<i64>,
    pub seeds: Vec<u64>,
    pub steps: usize,
    pub monitor: MonitorConfig,
    /// Number of validation windows in the probe batch.
    pub probe_size: usize,
}

impl CheckSpec for GptCheck {
    fn widths(&self) -> &[i64] {
        &self.widths
    }
}

/// Names of the GPT presets.
pub const GPT_PRESETS: &[&str] = &["fig2", "e18"];

impl GptCheck {
    /// A preset at a profile (see the module docs). `smoke` runs two tiny widths for a few
    /// steps; `quick` widths 32..256 (8x, the least span a GPT width exponent is decided
    /// on here) with 6 blocks, 3 seeds, 30 steps; `paper` the paper's widths 256..4096 (a GPU
    /// job). SP-full-align (`e18`) scales its per-layer rules relative to the base width 256,
    /// as the authors' GPT code (sbordt/litgpt, `width_multiplier = width / 256`) does.
    pub fn preset(name: &str, profile: Profile) -> Result<Self> {
        let (param, lr, alpha) = match name {
            "fig2" | "c1" | "e16" => ("sp", 0.01, 1.0),
            "e18" | "e17" => ("sp-full-align", 0.00316, 0.0),
            _ => return Err(Error::config(format!("unknown GPT check `{name}` (use {})", GPT_PRESETS.join(", ")))),
        };
        let (widths, depth, seq_len, batch, steps, probe, measured): (Vec<i64>, usize, i64, usize, usize, usize, Vec<usize>) = match profile {
            Profile::Smoke => (vec![32, 64], 2, 32, 4, 3, 2, vec![1, 2, 3]),
            Profile::Quick => (vec![32, 64, 128, 256], 6, 64, 8, 30, 4, vec![1, 2, 5, 10, 20, 30]),
            Profile::Paper => (vec![256, 512, 1024, 2048, 4096], 6, 512, 256, 2000, 16, vec![1, 2, 10, 100, 700, 2000]),
        };
        let mut train = GptTrainConfig {
            model: GptConfig { depth, ..GptConfig::default() },
            param: ParamSpec::Name(param.into()),
            alpha: Some(alpha),
            base_width: (param != "sp").then_some(256.0),
            lr,
            batch_size: batch,
            steps,
            device: crate::device::DeviceChoice::from_env()?,
            ..GptTrainConfig::default()
        };
        train.data.seq_len = seq_len;
        Ok(GptCheck {
            name: name.into(),
            train,
            widths,
            seeds: crate::profile::seeds(if profile == Profile::Smoke { 1 } else { 3 })?,
            steps,
            monitor: MonitorConfig {
                schedule: StepSchedule::List { steps: measured },
                spectral: Spectral::PowerIteration { tol: 1e-3, max_iter: 100 },
                one_step: false,
                gradients: true,
                dump_dir: None,
            },
            probe_size: probe,
        })
    }

    /// Checks the grid.
    pub fn validate(&self) -> Result<()> {
        if self.widths.is_empty() || self.seeds.is_empty() || self.steps == 0 || self.probe_size == 0 {
            return Err(Error::config("GPT check: need widths, seeds, steps >= 1 and probe_size >= 1"));
        }
        self.train.validate()
    }

    /// Runs every width and seed (in turn; libtorch uses all cores within a run) on text
    /// loaded and tokenized once.
    pub fn run(&self, progress: bool) -> Result<CoordCheckResult<GptCheck>> {
        self.validate()?;
        let started = std::time::Instant::now();
        let data = TextData::load(&self.train.data, self.train.seed)?;
        let runs = run_grid(&format!("gpt check {}", self.name), &self.widths, &self.seeds, progress, |width, seed| {
            let mut cfg = self.train.clone();
            (cfg.model.width, cfg.seed, cfg.steps) = (width, self.train.seed + seed, self.steps);
            monitored_run(Trainer::with_data(&cfg, data.shallow_clone())?, self.probe_size, self.monitor.clone(), None, false)
        })?;
        let (rows, diverged) = collect_rows(runs);
        Ok(CoordCheckResult { check: self.clone(), rows, diverged, seconds: started.elapsed().as_secs_f64() })
    }
}

/// Names of the layers the paper's Fig. 2 shows: the last LayerNorm (its gain), the first MLP
/// layer of block 2 and the readout, for a GPT of `depth` blocks (block 2 = index 1, or the
/// last block if there is only one).
pub fn fig2_layers(depth: usize) -> [String; 3] {
    let b = 1.min(depth.saturating_sub(1));
    ["ln_f.gain".to_string(), format!("blocks.{b}.mlp.fc.weight"), "lm_head.weight".to_string()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::text::TextSource;
    use crate::rcc::Metric;

    #[test]
    fn tiny_check_measures_every_layer_and_fits_exponents() {
        let mut cc = GptCheck::preset("fig2", Profile::Smoke).unwrap();
        cc.train.data.source = TextSource::Generated { chars: 30_000 };
        cc.train.data.vocab_size = 400;
        cc.train.threads = Some(1);
        let res = cc.run(false).unwrap();
        // every parameter of the model is a measured site
        let cfg = GptConfig { width: 32, depth: 2, vocab_size: 400, ..GptConfig::default() };
        let mut layers = res.layers();
        layers.retain(|l| l.contains('.') && !l.starts_with("act."));
        for p in cfg.layout() {
            assert!(layers.contains(&p.name), "{} not measured", p.name);
        }
        for l in fig2_layers(2) {
            for m in [Metric::AlignRmsEff, Metric::AlignOpEff, Metric::AlignOpProp, Metric::Effective, Metric::Propagating] {
                let fit = res.fit(&l, m, 1).unwrap();
                assert!(fit.exponent.is_finite(), "{l} {m}");
            }
        }
        // alpha-op is a ratio bounded by 1 (operator norm inequality)
        for (_, v) in res.points("lm_head.weight", Metric::AlignOpEff, 3) {
            assert!(v > 0.0 && v <= 1.0 + 1e-4, "{v}");
        }
        assert!(GptCheck::preset("nope", Profile::Smoke).is_err());
    }
}
