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

use super::manifest::{Normalisation, NormalisationMethod};
use super::{mse_ratio_score, window_error, ModelRuntime};
use crate::metrics::Metrics;
use crate::pipeline::features::{self, Ewma};
use crate::pipeline::WindowJob;

/// Normalises one resampled window as the manifest's `normalisation.method` says.
pub fn normalise_window(norm: &Normalisation, values: &[f64], stats: &Ewma, out: &mut Vec<f32>) {
    match norm.method {
        NormalisationMethod::EntityEwmaZscore => {
            let params = features::Normalisation {
                alpha: norm.alpha,
                min_std: norm.min_std,
                clip: norm.clip,
                warmup: norm.warmup,
                width: values.len(),
            };
            features::normalise(values, stats, &params, out)
        }
        NormalisationMethod::EntityNoiseZscore => features::normalise_noise(
            values,
            stats,
            norm.min_std,
            norm.clip,
            norm.window_std_ratio.unwrap_or(0.0),
            out,
        ),
    }
}

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
    let score_spec = runtime.manifest().score.clone();
    let norm = runtime.manifest().normalisation.clone();
    let mut one: Vec<f32> = Vec::with_capacity(runtime.input_width());
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
            normalise_window(&norm, &job.values, &job.stats, &mut one);
            inputs.extend_from_slice(&one);
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
                        let z = &inputs[i * width..(i + 1) * width];
                        let error = window_error(&score_spec, z, &outputs[i * width..(i + 1) * width]);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_by_the_manifest_method() {
        let stats = Ewma { count: 300, mean: 10.0, var: 4.0, noise_var: 0.25, ..Default::default() };
        let mut norm = Normalisation {
            method: NormalisationMethod::EntityEwmaZscore,
            alpha: 0.1,
            min_std: 1e-3,
            clip: 8.0,
            warmup: 0,
            window_std_ratio: None,
        };
        let mut out = Vec::new();
        // (x - 10) / 2
        normalise_window(&norm, &[8.0, 8.0, 10.0, 14.0], &stats, &mut out);
        assert_eq!(out, vec![-1.0, -1.0, 0.0, 2.0]);
        // (x - window mean 10) / max(0.5, 2 · 1): see features::normalise_noise's test
        norm.method = NormalisationMethod::EntityNoiseZscore;
        norm.window_std_ratio = Some(2.0);
        normalise_window(&norm, &[8.0, 8.0, 10.0, 14.0], &stats, &mut out);
        assert_eq!(out, vec![-1.0, -1.0, 0.0, 2.0]);
        norm.window_std_ratio = Some(0.0);
        normalise_window(&norm, &[8.0, 8.0, 10.0, 14.0], &stats, &mut out);
        assert_eq!(out, vec![-4.0, -4.0, 0.0, 8.0]);
    }
}
