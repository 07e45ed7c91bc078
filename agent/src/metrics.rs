//! Counters and latency histograms shared by all stages.
//!
//! Every stage increments plain atomics; nothing here allocates on the hot path. The names of
//! the fields are the metric names (prefixed `vigil_`) that `vigil run` logs in its periodic
//! status line and that the observability issue exports in Prometheus format.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::dlq::DlqCounters;

/// A monotonically increasing counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    pub fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Latency histogram with fixed log-spaced buckets from 1 µs to ~67 s (powers of two).
#[derive(Debug)]
pub struct Histogram {
    buckets: [AtomicU64; 27],
    sum_us: AtomicU64,
    count: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram { buckets: std::array::from_fn(|_| AtomicU64::new(0)), sum_us: AtomicU64::new(0), count: AtomicU64::new(0) }
    }
}

impl Histogram {
    pub fn record(&self, d: Duration) {
        let us = d.as_micros().min(u64::MAX as u128) as u64;
        let bucket = (64 - us.leading_zeros() as usize).min(self.buckets.len() - 1);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Upper bound of the bucket holding quantile `q` (0..=1), in microseconds.
    pub fn quantile_us(&self, q: f64) -> u64 {
        Histogram::quantile_of(&self.buckets(), q)
    }

    /// Bucket counts (bucket `i` holds durations below 2^i µs).
    pub fn buckets(&self) -> Vec<u64> {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect()
    }

    /// Upper bound (µs) of the bucket holding quantile `q` of `buckets` (e.g. the difference of
    /// two [`Histogram::buckets`] readings: the quantile over an interval).
    pub fn quantile_of(buckets: &[u64], q: f64) -> u64 {
        let total: u64 = buckets.iter().sum();
        if total == 0 {
            return 0;
        }
        let rank = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, b) in buckets.iter().enumerate() {
            seen += b;
            if seen >= rank {
                return 1u64 << i;
            }
        }
        1u64 << (buckets.len().saturating_sub(1))
    }

    pub fn mean_us(&self) -> f64 {
        let n = self.count();
        if n == 0 { 0.0 } else { self.sum_us.load(Ordering::Relaxed) as f64 / n as f64 }
    }
}

/// All of the agent's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Readings committed to the commit log (all sources).
    pub readings_in: Counter,
    /// Dead letters per reason.
    pub dlq: DlqCounters,
    /// Group commits of the commit log, and how long each took (write + fsync).
    pub commits: Counter,
    pub commit_time: Histogram,
    /// Readings flagged `bad` by their source (kept and uplinked, not scored).
    pub bad_quality: Counter,
    /// Readings whose event time and value were already buffered (redeliveries), ignored.
    pub duplicate_readings: Counter,
    /// Readings older than their entity's last emitted window.
    pub late_readings: Counter,
    /// Windows closed by the watermark.
    pub windows_emitted: Counter,
    /// Interpreter invocations and windows scored.
    pub inference_batches: Counter,
    pub windows_scored: Counter,
    /// Interpreter time per batch.
    pub inference_batch_time: Histogram,
    /// From the ingest of the reading that closed a window to its score being evaluated.
    pub score_latency: Histogram,
    /// Alerts raised and cleared; review events.
    pub alerts_raised: Counter,
    pub alerts_cleared: Counter,
    pub review_events: Counter,
    /// MQTT messages received and MQTT (re)connections.
    pub mqtt_messages: Counter,
    pub mqtt_connects: Counter,
    /// MQTT acks and alert publishes waiting for room in the client (`ingest::mqtt::Outbound`).
    pub mqtt_outbound_backlog: Gauge,
}
