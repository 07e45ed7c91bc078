//! Micro-batching: windows from all workers are scored in batches on one dedicated thread.
//!
//! The thread blocks for the first window, then collects more until it has `max_batch` windows
//! or `max_wait` has passed since the first one arrived, and runs them in one interpreter
//! invoke. Under load batches fill immediately (no added latency); at low rates a window waits
//! at most `max_wait`. Windows leave in arrival order, so per-entity order is kept.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cloud_uplink::ModelRef;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use super::{mse_ratio_score, window_error, ModelRuntime};
use crate::metrics::Metrics;
use super::drift::DriftMonitor;
use crate::pipeline::{Emit, RawSummary, Stage, WindowJob};

/// A scored window, on its way to the alert stage.
#[derive(Debug, Clone)]
pub struct ScoredWindow {
    pub entity: Arc<str>,
    pub window_end_ms: i64,
    /// Reconstruction error (manifest `score.method`).
    pub error: f64,
    /// Score in [0, 1).
    pub score: f64,
    /// The window's raw readings (from [`WindowJob::raw`]).
    pub raw: RawSummary,
    pub model: Arc<ModelRef>,
    pub trigger_ingest: Instant,
    /// Commit-log seq of the reading that closed the window.
    pub trigger_seq: u64,
    /// Emits that came before this window ([`WindowJob::before`]).
    pub before: Vec<Emit>,
}

/// Batching limits.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    pub max_batch: usize,
    pub max_wait: Duration,
}

/// Runs until the workers disconnect. An interpreter error drops that batch's scores with an
/// error log (the readings are safe in the commit log and uplinked) and keeps going.
///
/// A [`Stage::Checkpoint`] closes the batch being collected: the batch is scored and sent
/// first, then the checkpoint, so checkpoints stay behind the windows they cover.
/// [`Stage::Emit`]s do not: each is attached to the next window of the batch
/// ([`WindowJob::before`]), and those after the last window follow the batch as one
/// `Stage::Emit`, so every emit keeps its place between the windows.
pub fn run(
    mut runtime: ModelRuntime,
    limits: BatchLimits,
    jobs: Receiver<Stage<WindowJob>>,
    scored: Sender<Stage<Vec<ScoredWindow>>>,
    metrics: Arc<Metrics>,
    drift: Option<Arc<DriftMonitor>>,
) {
    let scoring = Scoring::new(&runtime, drift);
    let width = scoring.width;
    let mut batch: Vec<WindowJob> = Vec::with_capacity(limits.max_batch);
    let mut inputs: Vec<f32> = Vec::with_capacity(limits.max_batch * width);
    let mut outputs: Vec<f32> = Vec::new();
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
        let mut checkpoint = None;
        let mut disconnected = false;
        match jobs.recv() {
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
        if !batch.is_empty() && !score_batch(&mut runtime, &mut batch, &mut inputs, &mut outputs, &scoring, &scored, &metrics) {
            return;
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

/// What turns model outputs into scores (shared by the live stage and `vigil replay`).
pub(crate) struct Scoring {
    drift: Option<Arc<DriftMonitor>>,
    model: Arc<ModelRef>,
    spec: super::manifest::ScoreSpec,
    width: usize,
}

impl Scoring {
    pub(crate) fn new(runtime: &ModelRuntime, drift: Option<Arc<DriftMonitor>>) -> Scoring {
        Scoring {
            model: Arc::new(ModelRef {
                name: runtime.name().to_string(),
                version: runtime.version().to_string(),
                sha256: runtime.sha256().to_string(),
            }),
            spec: runtime.manifest().score.clone(),
            width: runtime.input_width(),
            drift,
        }
    }
}

/// Scores one batch in one invoke and sends it on. `false` when the alert stage is gone.
pub(crate) fn score_batch(
    runtime: &mut ModelRuntime,
    batch: &mut Vec<WindowJob>,
    inputs: &mut Vec<f32>,
    outputs: &mut Vec<f32>,
    scoring: &Scoring,
    scored: &Sender<Stage<Vec<ScoredWindow>>>,
    metrics: &Metrics,
) -> bool {
    let width = scoring.width;
    inputs.clear();
    for job in batch.iter() {
        inputs.extend_from_slice(&job.input);
    }
    let started = Instant::now();
    for job in batch.iter() {
        metrics.ingest_to_inference.record(started.saturating_duration_since(job.trigger_ingest));
    }
    let result = runtime.run_batch(inputs, batch.len(), outputs);
    let took = started.elapsed();
    metrics.inference_batch_time.record(took);
    metrics.inference_batches.inc();
    metrics.inference_batch_size.record_value(batch.len() as u64);
    if let Some(per_window) = took.checked_div(batch.len().max(1) as u32) {
        metrics.inference_window_time.record(per_window);
    }
    if let Err(e) = result {
        let first = batch.first().map(|j| (j.entity.to_string(), j.trigger_seq)).unwrap_or_default();
        tracing::error!(error = %e, windows = batch.len(), first_entity = %first.0, first_seq = first.1, "inference failed; batch not scored");
        // The emits riding on the windows are not scores: they go on.
        let emits: Vec<Emit> = batch.drain(..).flat_map(|j| j.before).collect();
        return emits.is_empty() || scored.send(Stage::Emit(emits)).is_ok();
    }
    // `run_batch` returned Ok, so `outputs` holds exactly `batch.len() * width` values.
    let out: Vec<ScoredWindow> = batch
        .drain(..)
        .enumerate()
        .map(|(i, job)| {
            let z = &inputs[i * width..(i + 1) * width];
            let error = window_error(&scoring.spec, z, &outputs[i * width..(i + 1) * width]);
            let score = mse_ratio_score(error, scoring.spec.error_scale);
            if let Some(d) = &scoring.drift {
                d.observe(z, score);
            }
            ScoredWindow {
                entity: job.entity,
                window_end_ms: job.window_end_ms,
                error,
                score,
                raw: job.raw,
                model: scoring.model.clone(),
                trigger_ingest: job.trigger_ingest,
                trigger_seq: job.trigger_seq,
                before: job.before,
            }
        })
        .collect();
    metrics.windows_scored.add(out.len() as u64);
    scored.send(Stage::Item(out)).is_ok()
}
