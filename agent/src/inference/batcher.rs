//! Micro-batching: windows from all workers are scored in batches on one dedicated thread.
//!
//! The thread blocks for the first window, then collects more until it has `max_batch` windows
//! or `max_wait` has passed since the first one arrived, and runs them in one interpreter
//! invoke. Under load batches fill immediately (no added latency); at low rates a window waits
//! at most `max_wait`. Windows leave in arrival order, so per-entity order is kept.
//!
//! # Deployments
//! The thread owns the [`Deployment`]: the active model and at most one candidate (`shadow` or
//! `canary`). Lifecycle [`Command`]s (a verified model from the loader thread, promote, demote)
//! are applied only *between* batches, so every window of a batch is scored by the same
//! models and the version on scores switches at exactly one point. Each model normalises the
//! window itself (its manifest's normalisation and warm-up), so models with different
//! normalisations score the same windows. The active model scores every window; the candidate
//! scores every window (shadow) or its canary entities' windows; exactly one of the two
//! decides each window (see [`crate::inference::lifecycle`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use cloud_uplink::ModelRef;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use super::drift::DriftMonitor;
use super::lifecycle::{Command, Deployment, Slot};
use super::manifest::{Normalisation, ScoreSpec, Thresholds};
use super::{mse_ratio_score, window_error, InferenceError, ModelRuntime};
use crate::metrics::Metrics;
use crate::pipeline::features::normalise_window;
use crate::pipeline::warmup_pca::LongViewEvidence;
use crate::pipeline::{Emit, RawSummary, Stage, WindowInput, WindowJob};

/// A scored window, on its way to the alert stage.
#[derive(Debug, Clone)]
pub struct ScoredWindow {
    pub entity: Arc<str>,
    pub window_end_ms: i64,
    /// Reconstruction error (manifest `score.method`) of the deciding model.
    pub error: f64,
    /// Score in [0, 1) of the deciding model.
    pub score: f64,
    /// The window's raw readings (from [`WindowJob::raw`]).
    pub raw: RawSummary,
    /// The asset's long view that `score` combines with the model error
    /// (`[pipeline.warmup_pca]`), if any.
    pub long_view: Option<LongViewEvidence>,
    /// The model that decides this window.
    pub model: Arc<ModelRef>,
    /// Bands of the deciding model (config overrides its manifest).
    pub thresholds: Thresholds,
    /// The other deployed model's score of the same window, when it scored it (shadow, or the
    /// active model on a canary entity): uplinked and compared, never alerting.
    pub peer: Option<Box<PeerScore>>,
    pub trigger_ingest: Instant,
    /// Commit-log seq of the reading that closed the window.
    pub trigger_seq: u64,
    /// Emits that came before this window ([`WindowJob::before`]).
    pub before: Vec<Emit>,
}

impl ScoredWindow {
    /// `job` scored `(error, score)` by the deciding `model`; `carry` holds the emits of the
    /// unscored windows before it (emptied into this one's `before`).
    pub(crate) fn of(
        job: WindowJob,
        (error, score): (f64, f64),
        model: Arc<ModelRef>,
        thresholds: Thresholds,
        peer: Option<PeerScore>,
        carry: &mut Vec<Emit>,
    ) -> ScoredWindow {
        let long_view = match &job.input {
            WindowInput::Normalised { long_view, .. } => *long_view,
            WindowInput::Entity { .. } => None,
        };
        ScoredWindow {
            long_view,
            entity: job.entity,
            window_end_ms: job.window_end_ms,
            error,
            score,
            raw: job.raw,
            model,
            thresholds,
            peer: peer.map(Box::new),
            trigger_ingest: job.trigger_ingest,
            trigger_seq: job.trigger_seq,
            before: carry_emits(carry, job.before),
        }
    }
}

/// The non-deciding model's score of a window.
#[derive(Debug, Clone)]
pub struct PeerScore {
    pub model: Arc<ModelRef>,
    pub error: f64,
    pub score: f64,
    pub thresholds: Thresholds,
    /// `true`: the peer is the candidate (shadow); `false`: the peer is the active model and
    /// the candidate decided (canary).
    pub is_candidate: bool,
    /// The candidate's deployment mode (`shadow`, `canary`).
    pub mode: &'static str,
}

/// Batching limits.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    pub max_batch: usize,
    pub max_wait: Duration,
}

/// Runs until the workers disconnect. An interpreter error of the active model drops that
/// batch's scores with an error log (the readings are safe in the commit log and uplinked) and
/// keeps going; a candidate's error demotes it.
///
/// A [`Stage::Checkpoint`] closes the batch being collected: the batch is scored and sent
/// first, then the checkpoint, so checkpoints stay behind the windows they cover.
/// [`Stage::Emit`]s do not: each is attached to the next window of the batch
/// ([`WindowJob::before`]), and those after the last window follow the batch as one
/// `Stage::Emit`, so every emit keeps its place between the windows. The emits of a window
/// that gets no score (no model warm yet, an interpreter error) move to the next scored window,
/// or follow the batch ([`carry_emits`]).
pub fn run(
    mut deployment: Deployment,
    limits: BatchLimits,
    jobs: Receiver<Stage<WindowJob>>,
    commands: Receiver<Command>,
    scored: Sender<Stage<Vec<ScoredWindow>>>,
    metrics: Arc<Metrics>,
) {
    let mut batch: Vec<WindowJob> = Vec::with_capacity(limits.max_batch);
    let mut scratch = Scratch::default();
    let mut pending: Vec<Emit> = Vec::new();
    let take = |message: Stage<WindowJob>, batch: &mut Vec<WindowJob>, pending: &mut Vec<Emit>, checkpoint: &mut Option<crate::commit_log::Checkpoint>| match message {
        Stage::Item(mut job) => {
            job.before = std::mem::take(pending);
            batch.push(job);
        }
        Stage::Checkpoint(c) => *checkpoint = Some(c),
        Stage::Emit(e) => pending.extend(e),
    };
    loop {
        batch.clear();
        while let Ok(c) = commands.try_recv() {
            deployment.apply(c);
        }
        let mut checkpoint = None;
        let mut disconnected = false;
        // Wait for the first window; lifecycle commands are applied while idle.
        let first = crossbeam_channel::select_biased! {
            recv(jobs) -> m => m,
            recv(commands) -> c => {
                if let Ok(c) = c {
                    deployment.apply(c);
                }
                continue;
            }
        };
        match first {
            Ok(m) => take(m, &mut batch, &mut pending, &mut checkpoint),
            Err(_) => return,
        }
        let deadline = Instant::now() + limits.max_wait;
        while checkpoint.is_none() && batch.len() < limits.max_batch {
            // Take what is already queued without waiting, then wait out the deadline.
            let next = match jobs.try_recv() {
                Ok(m) => Ok(m),
                Err(crossbeam_channel::TryRecvError::Disconnected) => Err(RecvTimeoutError::Disconnected),
                Err(crossbeam_channel::TryRecvError::Empty) => {
                    jobs.recv_timeout(deadline.saturating_duration_since(Instant::now()))
                }
            };
            match next {
                Ok(m) => take(m, &mut batch, &mut pending, &mut checkpoint),
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => {
                    disconnected = true;
                    break;
                }
            }
        }
        if !batch.is_empty() {
            let (out, trailing) = deployment.score(&mut batch, &mut scratch, &metrics);
            if !out.is_empty() && scored.send(Stage::Item(out)).is_err() {
                return;
            }
            pending.splice(0..0, trailing);
        }
        if !pending.is_empty() && scored.send(Stage::Emit(std::mem::take(&mut pending))).is_err() {
            return;
        }
        if let Some(c) = checkpoint {
            if scored.send(Stage::Checkpoint(c)).is_err() {
                return;
            }
        }
        if disconnected {
            return;
        }
    }
}

/// What turns a window into a model input and model outputs into scores, for one model
/// (shared by the live stage and `vigil replay`).
pub(crate) struct Scoring {
    pub(crate) drift: Option<Arc<DriftMonitor>>,
    pub(crate) model: Arc<ModelRef>,
    pub(crate) spec: ScoreSpec,
    pub(crate) normalisation: Normalisation,
    pub(crate) thresholds: Thresholds,
    pub(crate) width: usize,
}

impl Scoring {
    /// `thresholds`: the effective bands for this model (config over manifest).
    pub(crate) fn new(runtime: &ModelRuntime, drift: Option<Arc<DriftMonitor>>, thresholds: Thresholds) -> Scoring {
        Scoring {
            model: Arc::new(ModelRef {
                name: runtime.name().to_string(),
                version: runtime.version().to_string(),
                sha256: runtime.sha256().to_string(),
            }),
            spec: runtime.manifest().score.clone(),
            normalisation: runtime.manifest().normalisation.clone(),
            thresholds,
            width: runtime.input_width(),
            drift,
        }
    }

    /// Whether the entity has seen enough readings for this model to score the window (asset
    /// windows come warmed up and normalised from the worker).
    pub(crate) fn warm(&self, job: &WindowJob) -> bool {
        match &job.input {
            WindowInput::Entity { values, stats } => stats.count >= self.normalisation.warmup && values.len() == self.width,
            WindowInput::Normalised { values, .. } => values.len() == self.width,
        }
    }
}

/// Reused buffers of the inference thread.
#[derive(Default)]
pub(crate) struct Scratch {
    inputs: Vec<f32>,
    outputs: Vec<f32>,
    one: Vec<f32>,
    rows: Vec<usize>,
}

/// `(error, score)` per window of a batch (`None`: the model did not score it).
pub(crate) type SlotScores = Vec<Option<(f64, f64)>>;

/// Runs one model over the windows of `batch` that `select` picks and that are past its
/// warm-up, in one invoke. Returns the scores aligned with `batch` and the time the invoke
/// (with normalisation) took.
pub(crate) fn run_slot(
    slot: &mut Slot,
    batch: &[WindowJob],
    select: impl Fn(&WindowJob) -> bool,
    scratch: &mut Scratch,
) -> Result<(SlotScores, usize, Duration), InferenceError> {
    let Scratch { inputs, outputs, one, rows } = scratch;
    let scoring = &slot.scoring;
    let width = scoring.width;
    inputs.clear();
    rows.clear();
    let started = Instant::now();
    for (i, job) in batch.iter().enumerate() {
        if select(job) && scoring.warm(job) {
            match &job.input {
                WindowInput::Entity { values, stats } => {
                    normalise_window(&scoring.normalisation, values, stats, one);
                    inputs.extend_from_slice(one);
                }
                WindowInput::Normalised { values, .. } => inputs.extend_from_slice(values),
            }
            rows.push(i);
        }
    }
    let mut scores: SlotScores = vec![None; batch.len()];
    if rows.is_empty() {
        return Ok((scores, 0, Duration::ZERO));
    }
    slot.runtime.run_batch(inputs, rows.len(), outputs)?;
    // `run_batch` returned Ok, so `outputs` holds exactly `rows.len() * width` values.
    for (k, &i) in rows.iter().enumerate() {
        let z = &inputs[k * width..(k + 1) * width];
        let error = window_error(&scoring.spec, z, &outputs[k * width..(k + 1) * width]);
        let model_score = mse_ratio_score(error, scoring.spec.error_scale);
        // The drift monitor compares the model's own score with its reference; alerts get the
        // score combined with the asset's long view (`[pipeline.warmup_pca]`) when it is on.
        if let Some(d) = &scoring.drift {
            d.observe(z, model_score);
        }
        let score = match &batch[i].input {
            WindowInput::Normalised { long_view: Some(l), .. } => mse_ratio_score(l.combined_error(error, scoring.spec.error_scale), scoring.spec.error_scale),
            _ => model_score,
        };
        scores[i] = Some((error, score));
    }
    Ok((scores, rows.len(), started.elapsed()))
}

/// Scores one batch with one model (no candidate) and sends it on, then the emits of windows
/// left unscored after the last scored one; `false` when the alert stage is gone. Used by
/// `vigil replay`, which runs exactly one model.
pub(crate) fn score_batch(
    slot: &mut Slot,
    batch: &mut Vec<WindowJob>,
    scratch: &mut Scratch,
    scored: &Sender<Stage<Vec<ScoredWindow>>>,
    metrics: &Metrics,
) -> bool {
    let (out, trailing) = score_active_only(slot, batch, scratch, metrics);
    (out.is_empty() || scored.send(Stage::Item(out)).is_ok()) && (trailing.is_empty() || scored.send(Stage::Emit(trailing)).is_ok())
}

/// The emits a scored window carries: those of the unscored windows before it (`carry`,
/// emptied), then its own.
pub(crate) fn carry_emits(carry: &mut Vec<Emit>, mut before: Vec<Emit>) -> Vec<Emit> {
    if carry.is_empty() {
        return before;
    }
    let mut all = std::mem::take(carry);
    all.append(&mut before);
    all
}

/// The active model's pass over a batch: metrics, and on an interpreter error an error log
/// (the batch stays unscored).
pub(crate) fn active_pass(slot: &mut Slot, batch: &[WindowJob], scratch: &mut Scratch, metrics: &Metrics) -> Option<SlotScores> {
    let started = Instant::now();
    for job in batch {
        metrics.ingest_to_inference.record(started.saturating_duration_since(job.trigger_ingest));
    }
    let result = run_slot(slot, batch, |_| true, scratch);
    let took = started.elapsed();
    metrics.inference_batch_time.record(took);
    metrics.inference_batches.inc();
    metrics.inference_batch_size.record_value(batch.len() as u64);
    if let Some(per_window) = took.checked_div(batch.len().max(1) as u32) {
        metrics.inference_window_time.record(per_window);
    }
    match result {
        Ok((scores, _, _)) => Some(scores),
        Err(e) => {
            let first = batch.first().map(|j| (j.entity.to_string(), j.trigger_seq)).unwrap_or_default();
            tracing::error!(error = %e, windows = batch.len(), first_entity = %first.0, first_seq = first.1, "inference failed; batch not scored");
            None
        }
    }
}

/// Scores a batch with one model: the scored windows and the emits that follow them.
fn score_active_only(slot: &mut Slot, batch: &mut Vec<WindowJob>, scratch: &mut Scratch, metrics: &Metrics) -> (Vec<ScoredWindow>, Vec<Emit>) {
    let mut carry = Vec::new();
    let Some(scores) = active_pass(slot, batch, scratch, metrics) else {
        carry.extend(batch.drain(..).flat_map(|j| j.before));
        return (Vec::new(), carry);
    };
    let mut out = Vec::with_capacity(batch.len());
    for (job, s) in batch.drain(..).zip(scores) {
        let Some(scored) = s else {
            carry.extend(job.before);
            continue;
        };
        out.push(ScoredWindow::of(job, scored, slot.scoring.model.clone(), slot.scoring.thresholds, None, &mut carry));
    }
    metrics.windows_scored.add(out.len() as u64);
    (out, carry)
}
