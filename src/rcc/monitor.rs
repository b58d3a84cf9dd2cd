//! The [`Monitor`]: a [`StepHook`] that traces the probe batch at the scheduled steps and
//! records every metric ([`site_metrics`] per site, the activations' and the model's) against
//! the initial model and the previous step, on the fast paths where they apply
//! ([`super::fast`], the low-rank factors of fused plain-SGD steps) and on the general path
//! where a metric [needs the weight difference](Metric::needs_weight_difference).
use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use tch::Tensor;

use super::definitions::{cosine_cross, cosine_rows, eff_weight_rms, low_rank_grams, low_rank_norms_from, op_norm_rms, reference_key, rms, site_key, site_metrics, sparsity, warm_start_keys, Change, Spectral, Traced};
use super::fast::{DenseChange, FusedForward};
use super::{Metric, MetricId, Since};
use crate::loss::Loss;
use crate::model::{DenseProducts, LinearOp, Model};
use crate::optim::LowRankStep;
use crate::train::{StepHook, StepOutput};
use crate::Result;

/// Which steps are measured (step 0 = initialisation is always measured).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "type")]
pub enum StepSchedule {
    /// Every step.
    Every,
    /// Every step up to `dense_until`, then every `every` steps.
    EarlyThenSparse { dense_until: usize, every: usize },
    /// Exactly these steps.
    List { steps: Vec<usize> },
}

impl StepSchedule {
    /// Whether step `t` is measured.
    pub fn contains(&self, t: usize) -> bool {
        match self {
            StepSchedule::Every => true,
            StepSchedule::EarlyThenSparse { dense_until, every } => {
                t <= *dense_until || (*every > 0 && t % every == 0)
            }
            StepSchedule::List { steps } => t == 0 || steps.contains(&t),
        }
    }
}

/// Monitor settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MonitorConfig {
    pub schedule: StepSchedule,
    pub spectral: Spectral,
    /// Also record `delta` (one-step) metrics.
    pub one_step: bool,
    /// Also record per-layer gradient norms (of the training batch of the step), and `chi`
    /// and the loss on the probe batch.
    pub gradients: bool,
    /// Write the probe batch and the initial weights (`init.safetensors`) and the weights
    /// at every measured step (`step_{t}.safetensors`) here, so any metric can be
    /// recomputed elsewhere (e.g. `safetensors.torch.load_file` in Python).
    pub dump_dir: Option<std::path::PathBuf>,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        MonitorConfig {
            schedule: StepSchedule::EarlyThenSparse { dense_until: 10, every: 10 },
            spectral: Spectral::PowerIteration { tol: 1e-3, max_iter: 50 },
            one_step: true,
            gradients: true,
            dump_dir: None,
        }
    }
}

/// One measurement: a tidy row.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub step: usize,
    /// Site (parameter) name, `act.{l}` or `model`.
    pub layer: String,
    pub metric: MetricId,
    pub value: f64,
}

/// What a traced forward pass on the probe batch leaves behind (detached).
pub(super) struct ProbeState {
    /// Per site: (name, param index, op, input, output).
    pub(super) sites: Vec<(String, usize, LinearOp, Tensor, Tensor)>,
    pub(super) activations: Vec<Tensor>,
    pub(super) logits: Tensor,
    /// Parameter values (snapshots for references, shallow views for the current step);
    /// `None` where a reference keeps only norms (`ref_norms`).
    pub(super) weights: Vec<Option<Tensor>>,
    /// Per site name, `(||a W||_RMS, ||a W||_op)` of weights not copied (see
    /// [`Change::LowRank`]).
    pub(super) ref_norms: HashMap<String, (f64, f64)>,
}

pub(super) fn probe(model: &dyn Model, x: &Tensor, copy_weights: bool, products: Option<&mut dyn DenseProducts>) -> ProbeState {
    tch::no_grad(|| {
        let t = model.forward_trace_with(x, products);
        let weights = if copy_weights {
            model.snapshot().into_iter().map(Some).collect()
        } else {
            model.params().iter().map(|p| Some(p.tensor.detach())).collect()
        };
        ProbeState {
            sites: t.sites.into_iter().map(|s| (s.name, s.param, s.op, s.input, s.output)).collect(),
            activations: t.activations,
            logits: t.logits,
            weights,
            ref_norms: HashMap::new(),
        }
    })
}

/// One measured value before it becomes a [`Record`]: `(layer, metric, value)`.
type Row = (String, MetricId, f64);

/// The metrics of every site of `now` against the reference `r` (the initial trace for
/// [`Since::Init`], the previous step's for [`Since::Previous`]), appended to `rows` as
/// `(site, metric, value)`. For `Delta`, the norms of `W_t` of the weights `keep_norms`
/// selects go to `kept_norms` (the next step's one-step reference), and `measured` holds the
/// fused passes the traced forward ran. For `delta`, weights whose step came in low-rank form
/// are measured from its factors, with `lr_norms` their `(||g^T x||_F, ||g^T x||_2)`.
/// Without `fuse` (the general path) no dense pass is fused and the differences are formed.
#[allow(clippy::too_many_arguments)]
fn sites_against(
    now: &ProbeState,
    r: &ProbeState,
    since: Since,
    spectral: Spectral,
    cache: &mut HashMap<String, Tensor>,
    low_rank: &[Option<LowRankStep>],
    lr_norms: &[Option<(f64, f64)>],
    keep_norms: &dyn Fn(usize) -> bool,
    measured: &mut HashMap<usize, DenseChange>,
    fuse: bool,
    rows: &mut Vec<Row>,
    kept_norms: &mut Vec<(String, (f64, f64))>,
) {
    let one_step = since == Since::Previous;
    for (i, (name, p, op, x, out)) in now.sites.iter().enumerate() {
        let (_, _, _, x_ref, out_ref) = &r.sites[i];
        let key = site_key(name, since);
        let dense = matches!(op, LinearOp::Dense { .. });
        let factored = match (one_step && dense, low_rank.get(*p).and_then(Option::as_ref), r.ref_norms.get(name)) {
            (true, Some(step), Some(&ref_norms)) => lr_norms.get(*p).copied().flatten().map(|norms| Change::LowRank { step, norms, ref_norms }),
            _ => None,
        };
        // the norms of W_t, kept as the next step's one-step reference when that step's
        // update of this weight comes in low-rank form
        let norms_t = (!one_step && keep_norms(*p)).then(|| std::cell::Cell::new((f64::NAN, f64::NAN)));
        let change = match (factored, &now.weights[*p], &r.weights[*p]) {
            (Some(c), _, _) => c,
            (None, Some(w_t), Some(w_ref)) => Change::Stored { w_t, w_ref, norms_t: norms_t.as_ref(), measured: if one_step { None } else { measured.remove(p) }, fuse },
            // a reference kept as norms only, but the step left no factors: the one-step
            // metrics of this site cannot be measured
            _ => continue,
        };
        let site = Traced { op: *op, x_t: x, x_ref, out_t: out, out_ref };
        let ms = site_metrics(site, change, since, spectral, cache, &key);
        if let (Some(cell), true) = (norms_t, dense) {
            kept_norms.push((name.clone(), cell.get()));
        }
        for (m, v) in ms {
            // input/act norms do not depend on the reference: record them once
            if one_step && !m.compares() {
                continue;
            }
            rows.push((name.clone(), m.since(since), v));
        }
    }
}

/// Watches a training run and records the RCC at the scheduled steps. Implements
/// [`StepHook`], so `Trainer::run(progress, Some(&mut monitor))` is all it takes.
pub struct Monitor {
    pub cfg: MonitorConfig,
    probe_x: Tensor,
    probe_y: Tensor,
    loss: Loss,
    init: Option<ProbeState>,
    prev: Option<ProbeState>,
    cache: HashMap<String, Tensor>,
    /// Measure on the general path: keep weight copies (no low-rank references), fuse no
    /// dense pass, form the weight differences. Taken when a site metric
    /// [needs the weight difference](Metric::needs_weight_difference).
    pub(super) general: bool,
    /// Everything measured so far.
    pub records: Vec<Record>,
}

impl Monitor {
    /// A monitor for the probe batch `(x, y)` (`[B, d_in]`, `[B]`) under `loss`.
    pub fn new(cfg: MonitorConfig, probe_x: Tensor, probe_y: Tensor, loss: Loss) -> Self {
        let general = Metric::SITE.iter().any(|m| m.needs_weight_difference());
        Monitor { cfg, probe_x, probe_y, loss, init: None, prev: None, cache: HashMap::new(), general, records: vec![] }
    }

    /// This monitor on the general path whatever the metrics declare (to check the fast paths
    /// against it).
    #[cfg(test)]
    pub(super) fn on_the_general_path(mut self) -> Self {
        self.general = true;
        self
    }

    /// Measures the model at step `step` against the stored references; returns the probe
    /// state it measured (weights as shallow views). `out` is what the step left (`None` at
    /// initialisation).
    fn measure(&mut self, step: usize, model: &dyn Model, out: Option<&StepOutput>) -> Result<ProbeState> {
        let spectral = self.cfg.spectral;
        let (grads, low_rank) = out.map_or((&[][..], &[][..]), |o| (o.grads, o.low_rank));
        // the fast paths (fused dense passes, one-step references from low-rank factors), or
        // the general path
        let fuse = !self.general;
        let low_rank_refs = if fuse { low_rank } else { &[][..] };
        let next_one_step = self.cfg.one_step && self.cfg.schedule.contains(step + 1);
        let keep_norms = |p: usize| next_one_step && low_rank_refs.get(p).is_some_and(Option::is_some);
        // the traced forward, with the dense sites' Delta passes fused into it
        let mut fused = match (&self.init, spectral, fuse) {
            (Some(init), Spectral::PowerIteration { tol, max_iter }, true) => Some(FusedForward {
                init: &init.weights,
                init_sites: init
                    .sites
                    .iter()
                    .rev() // (the first site of a parameter wins)
                    .filter(|s| matches!(s.2, LinearOp::Dense { .. }))
                    .map(|(_, p, _, x0, out0)| (*p, (x0, out0)))
                    .collect(),
                names: model.params().iter().map(|p| p.name.clone()).collect(),
                cache: &mut self.cache,
                keep_norms: (0..model.params().len()).map(keep_norms).collect(),
                tol,
                max_iter,
                done: HashMap::new(),
            }),
            _ => None,
        };
        let now = probe(model, &self.probe_x, false, fused.as_mut().map(|f| f as &mut dyn DenseProducts));
        let mut measured = fused.map(|f| f.done).unwrap_or_default();
        // (||g^T x||_F, ||g^T x||_2) of each low-rank step: the one-step update's norms and
        // the gradient's norm (the spectral norm only if the one-step metrics are measured).
        // The B x B eigenproblems are serial, so they run on the second thread (with the
        // activations' sparsity and cosines) while this one measures the Delta sites and chi.
        let spec = self.prev.is_some() && fuse;
        let tol = match spectral {
            Spectral::PowerIteration { tol, .. } => tol,
            Spectral::Exact => 1e-9,
        };
        // (the Grams split between the threads here, the eigenproblems in the join below)
        let grams: Vec<Option<Option<_>>> = (0..model.params().len())
            .map(|p| {
                let step = low_rank.get(p).and_then(Option::as_ref)?;
                (spec || self.cfg.gradients).then(|| low_rank_grams(&step.g, &step.x))
            })
            .collect();
        // (and the activations' sparsity and cosines: host passes over the activations,
        // handed over as shallow copies)
        let acts: Vec<(Tensor, Tensor)> = match &self.init {
            Some(init) => now.activations.iter().zip(&init.activations).map(|(a, a0)| (a.shallow_clone(), a0.shallow_clone())).collect(),
            None => vec![],
        };
        let low_rank_task = move || -> (Vec<Option<(f64, f64)>>, Vec<Row>) {
            let norms = grams
                .iter()
                .map(|pq| pq.as_ref().map(|pq| pq.as_ref().map_or((f64::NAN, f64::NAN), |(p, q)| low_rank_norms_from(p, q, spec.then_some(tol)))))
                .collect();
            let mut rows = vec![];
            for (l, (a, a0)) in acts.iter().enumerate() {
                let layer = format!("act.{l}");
                rows.push((layer.clone(), Metric::Sparsity.into(), sparsity(a)));
                rows.push((layer.clone(), Metric::CosInit.into(), cosine_rows(a, a0)));
                rows.push((layer, Metric::CosCross.into(), cosine_cross(a)));
            }
            (norms, rows)
        };
        let (init, cache, loss, probe_y, gradients) = (self.init.as_ref(), &mut self.cache, self.loss, &self.probe_y, self.cfg.gradients);
        let now_ref = &now;
        let measured_ref = &mut measured;
        // (the Delta rows, the norms of W_t kept for the next step, the model rows)
        type Measured = (Vec<Row>, Vec<(String, (f64, f64))>, Vec<Row>);
        let this_task = move || -> Result<Measured> {
            let (mut delta_rows, mut kept_norms, mut rows) = (vec![], vec![], vec![]);
            if let Some(r) = init {
                sites_against(now_ref, r, Since::Init, spectral, cache, low_rank_refs, &[], &keep_norms, measured_ref, fuse, &mut delta_rows, &mut kept_norms);
            }
            rows.push(("model".into(), Metric::Logits.into(), rms(&now_ref.logits)));
            if gradients {
                // chi = dl/df of the per-example loss, from the probe logits alone (no
                // backward pass through the network): in closed form for [B, C] logits
                // (Loss::value_and_grad), by autograd on a detached leaf otherwise
                let logits = &now_ref.logits;
                let (l, g) = if logits.dim() == 2 {
                    loss.value_and_grad(logits, probe_y)
                } else {
                    let f = logits.detach().set_requires_grad(true);
                    let l = loss.compute(&f, probe_y);
                    let mut g = Tensor::f_run_backward(&[&l], &[&f], false, false)?;
                    (l, g.swap_remove(0))
                };
                // per-example loss: one example per logit row (a token, for the GPT)
                let batch = logits.size()[0] as f64;
                rows.push(("model".into(), Metric::Chi.into(), rms(&g) * batch));
                rows.push(("model".into(), Metric::Loss.into(), l.double_value(&[])));
            }
            Ok((delta_rows, kept_norms, rows))
        };
        let (this, (lr_norms, act_rows)) = crate::kernels::threads::join(this_task, low_rank_task);
        let (mut all_rows, kept_norms, rows) = this?;
        if let Some(r) = self.prev.as_ref() {
            sites_against(&now, r, Since::Previous, spectral, &mut self.cache, low_rank_refs, &lr_norms, &keep_norms, &mut measured, fuse, &mut all_rows, &mut vec![]);
        }
        all_rows.extend(act_rows);
        all_rows.extend(rows);
        let mut rows = all_rows;
        if self.cfg.gradients {
            // per-layer gradient norms of the training batch of this step (of g^T x for a
            // weight whose step was fused)
            for (k, p) in model.params().iter().enumerate() {
                let value = match (grads.get(k).and_then(Option::as_ref), lr_norms[k]) {
                    (Some(g), _) => rms(g),
                    (None, Some((fro, _))) => fro / (p.tensor.numel() as f64).sqrt(),
                    (None, None) => continue,
                };
                rows.push((p.name.clone(), Metric::Grad.into(), value));
            }
        }
        self.records.extend(rows.into_iter().map(|(layer, metric, value)| Record { step, layer, metric, value }));
        let mut now = now;
        now.ref_norms.extend(kept_norms);
        Ok(now)
    }

    /// Writes `tensors` of `model` (named as its parameters) to `dump_dir/file`, if set.
    fn dump(&self, file: &str, model: &dyn Model, probe: bool) -> Result<()> {
        let Some(dir) = &self.cfg.dump_dir else { return Ok(()) };
        std::fs::create_dir_all(dir).map_err(|e| crate::Error::io(dir, e))?;
        let mut named: Vec<(String, Tensor)> =
            model.params().iter().map(|p| (p.name.clone(), p.tensor.detach().to_device(tch::Device::Cpu))).collect();
        if probe {
            named.push(("probe.x".into(), self.probe_x.to_device(tch::Device::Cpu)));
            named.push(("probe.y".into(), self.probe_y.to_device(tch::Device::Cpu)));
        }
        crate::files::write_atomic_with(&dir.join(file), |tmp| Ok(Tensor::write_safetensors(&named, tmp)?))
    }

    /// All records of one layer and metric, as `(step, value)`.
    pub fn series(&self, layer: &str, metric: impl Into<MetricId>) -> Vec<(usize, f64)> {
        let metric = metric.into();
        self.records.iter().filter(|r| r.layer == layer && r.metric == metric).map(|r| (r.step, r.value)).collect()
    }
}

impl StepHook for Monitor {
    fn start(&mut self, model: &dyn Model) -> Result<()> {
        let init = probe(model, &self.probe_x, true, None);
        // the initial weights' spectral norms, converged once (op_norm_2), before the first
        // measurement: their singular vectors warm-start the power iterations of W_t
        for (name, p, op, _, _) in &init.sites {
            if let (LinearOp::Dense { .. }, Some(w0)) = (op, &init.weights[*p]) {
                op_norm_rms(*op, w0, self.cfg.spectral, &mut self.cache, &reference_key(name, Since::Init));
            }
        }
        self.init = Some(init);
        self.prev = None;
        self.dump("init.safetensors", model, true)?;
        self.measure(0, model, None).map(|_| ())
    }

    fn before_step(&mut self, step: usize, model: &dyn Model) -> Result<()> {
        // The one-step reference W_{t-1}, x_{t-1} is needed only before measured steps, and
        // only if after_step did not keep it already.
        if self.cfg.one_step && self.cfg.schedule.contains(step) && self.prev.is_none() {
            self.prev = Some(probe(model, &self.probe_x, true, None));
        }
        Ok(())
    }

    fn after_step(&mut self, step: usize, model: &dyn Model, out: &StepOutput) -> Result<()> {
        if self.cfg.schedule.contains(step) {
            let mut now = self.measure(step, model, Some(out))?;
            self.dump(&format!("step_{step}.safetensors"), model, false)?;
            self.prev = None;
            if self.cfg.one_step && self.cfg.schedule.contains(step + 1) {
                // Keep this step's trace as the next step's reference. The optimizer updates
                // the weights in place, so they are copied, except the dense weights whose
                // steps come in low-rank form (plain SGD): the next step's update is then
                // measured from its factors, and of these weights only the norms are kept.
                let low_rank = |p: usize| !self.general && out.low_rank.get(p).is_some_and(Option::is_some);
                let spectral = self.cfg.spectral;
                for (name, p, op, _, _) in &now.sites {
                    if now.ref_norms.contains_key(name) {
                        continue; // measured in the Delta pass (see measure)
                    }
                    if let (LinearOp::Dense { .. }, true, Some(w)) = (op, low_rank(*p), &now.weights[*p]) {
                        let w_op = op_norm_rms(*op, w, spectral, &mut self.cache, &warm_start_keys(name).1);
                        now.ref_norms.insert(name.clone(), (eff_weight_rms(*op, w), w_op));
                    }
                }
                now.weights = model
                    .params()
                    .iter()
                    .enumerate()
                    .map(|(p, param)| (!low_rank(p)).then(|| param.tensor.detach().copy()))
                    .collect();
                self.prev = Some(now);
            }
        } else {
            self.prev = None;
        }
        Ok(())
    }

    fn needs_gradients(&self) -> bool {
        // the gradient norms of fused steps come from their low-rank factors
        false
    }
}
