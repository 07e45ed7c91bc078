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

use super::{mse_ratio_score, reconstruction_mse, ModelRuntime};
use crate::metrics::Metrics;
use crate::pipeline::WindowJob;

/// A scored window, on its way to the alert stage.
#[derive(Debug, Clone)]
pub struct ScoredWindow {
    pub entity: Arc<str>,
    pub window_end_ms: i64,
    /// Reconstruction error (manifest `score.method`).
    pub error: f64,
    /// Score in [0, 1).
    pub score: f64,
    pub model: Arc<ModelRef>,
    pub trigger_ingest: Instant,
}

/// Batching limits.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    pub max_batch: usize,
    pub max_wait: Duration,
}

/// Runs until the workers disconnect. An interpreter error drops that batch's scores with an
/// error log (the readings are safe in the commit log and uplinked) and keeps going.
pub fn run(
    mut runtime: ModelRuntime,
    limits: BatchLimits,
    jobs: Receiver<WindowJob>,
    scored: Sender<Vec<ScoredWindow>>,
    metrics: Arc<Metrics>,
) {
    let model = Arc::new(ModelRef {
        name: runtime.name().to_string(),
        version: runtime.version().to_string(),
        sha256: runtime.sha256().to_string(),
    });
    let error_scale = runtime.manifest().score.error_scale;
    let width = runtime.input_width();
    let mut batch: Vec<WindowJob> = Vec::with_capacity(limits.max_batch);
    let mut inputs: Vec<f32> = Vec::with_capacity(limits.max_batch * width);
    let mut outputs: Vec<f32> = Vec::new();
    loop {
        batch.clear();
        match jobs.recv() {
            Ok(job) => batch.push(job),
            Err(_) => return,
        }
        let deadline = Instant::now() + limits.max_wait;
        let mut disconnected = false;
        while batch.len() < limits.max_batch {
            // Take what is already queued without waiting, then wait out the deadline.
            match jobs.try_recv() {
                Ok(job) => {
                    batch.push(job);
                    continue;
                }
                Err(crossbeam_channel::TryRecvError::Disconnected) => {
                    disconnected = true;
                    break;
                }
                Err(crossbeam_channel::TryRecvError::Empty) => {}
            }
            match jobs.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(job) => batch.push(job),
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => {
                    disconnected = true;
                    break;
                }
            }
        }
        inputs.clear();
        for job in &batch {
            inputs.extend_from_slice(&job.input);
        }
        let started = Instant::now();
        let result = runtime.run_batch(&inputs, batch.len(), &mut outputs);
        metrics.inference_batch_time.record(started.elapsed());
        metrics.inference_batches.inc();
        match result {
            Ok(()) => {
                let out: Vec<ScoredWindow> = batch
                    .drain(..)
                    .enumerate()
                    .map(|(i, job)| {
                        let error = reconstruction_mse(&job.input, &outputs[i * width..(i + 1) * width]);
                        ScoredWindow {
                            entity: job.entity,
                            window_end_ms: job.window_end_ms,
                            error,
                            score: mse_ratio_score(error, error_scale),
                            model: model.clone(),
                            trigger_ingest: job.trigger_ingest,
                        }
                    })
                    .collect();
                metrics.windows_scored.add(out.len() as u64);
                if scored.send(out).is_err() {
                    return;
                }
            }
            Err(e) => tracing::error!(error = %e, windows = batch.len(), "inference failed; batch not scored"),
        }
        if disconnected {
            return;
        }
    }
}
