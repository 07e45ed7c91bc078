//! Per-entity event-time tumbling windows and their statistics (`aggregate` records).
//!
//! # Design constraints
//!
//! - **Same watermark as the sliding windows.** An entity's watermark is its largest event
//!   time minus `pipeline.window.allowed_lateness_ms`. Unlike the sliding windows (`(end −
//!   size, end]`, labelled by their end so a reading closes its own window), these are time
//!   buckets labelled by their start, as a data lake's are: `[start, start + size)` with starts
//!   on multiples of `size` since the epoch, one set per configured size.
//! - **Emit early, correct late.** A window is emitted (version 1) as soon as the entity's
//!   largest event time reaches its end — the first answer is not held back by the lateness
//!   bound. A reading that arrives later for a window whose end is still above the watermark
//!   updates it and emits it again with `version + 1` (a *corrected* aggregate; consumers keep
//!   the highest version). Once the watermark reaches a window's end it is final and dropped
//!   from memory; a reading for it is *too late* and handled by `pipeline.window.late_policy`
//!   (`dlq`: a dead letter with reason `late`; otherwise counted and dropped).
//! - **Bounded state.** Per entity and size at most `lateness / size + 2` windows are open; each
//!   holds a constant-size summary plus a quantile sketch whose bucket count is capped
//!   ([`Sketch::MAX_BUCKETS`]). No reading is kept.
//! - **Deterministic.** The state is plain data, checkpointed with the entity's sliding windows
//!   ([`super::window::EntityWindows`]); fed the same readings, a restored state emits the same
//!   records as an uninterrupted run (recovery relies on this to skip what was already
//!   committed).
//!
//! Quantiles come from [`Sketch`], a small DDSketch (Masson, Rim, Lee: "DDSketch: a fast and
//! fully-mergeable quantile sketch with relative-error guarantees", VLDB 2019): logarithmic
//! buckets give every quantile within a relative error `α` of the true value, and two sketches
//! with the same `α` merge by adding bucket counts. Written here (≈100 lines) rather than taken
//! from a crate so it serialises into the checkpoint with the rest of the state and its bucket
//! cap is ours.

use std::collections::{BTreeMap, VecDeque};

use cloud_uplink::{Quantile, Stats};
use serde::{Deserialize, Serialize};

/// Tumbling-window settings, from `[pipeline.aggregate]`.
#[derive(Debug, Clone, Default)]
pub struct AggregateSettings {
    /// Window sizes (ms), in configuration order.
    pub sizes_ms: Vec<i64>,
    /// Quantile ranks reported.
    pub quantiles: Vec<f64>,
    /// Sketch relative accuracy `α`.
    pub accuracy: f64,
}

impl From<&crate::config::AggregateConfig> for AggregateSettings {
    fn from(c: &crate::config::AggregateConfig) -> Self {
        AggregateSettings {
            sizes_ms: c.sizes_ms.iter().map(|&s| s as i64).collect(),
            quantiles: c.quantiles.clone(),
            accuracy: c.sketch_accuracy,
        }
    }
}

/// A DDSketch with relative accuracy `α`: value `x > 0` falls in bucket `⌈log_γ x⌉`,
/// `γ = (1 + α) / (1 − α)`; negative values likewise by `|x|` in their own store; values with
/// `|x| <` [`Sketch::MIN_MAGNITUDE`] count as zero.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Sketch {
    positive: BTreeMap<i32, u64>,
    negative: BTreeMap<i32, u64>,
    zero: u64,
}

impl Sketch {
    /// Smallest magnitude with its own bucket.
    pub const MIN_MAGNITUDE: f64 = 1e-9;
    /// Most buckets per sign; beyond it the two lowest-magnitude buckets are merged (their
    /// quantiles lose accuracy first, as in DDSketch's "collapsing lowest" store).
    pub const MAX_BUCKETS: usize = 2048;

    fn gamma(alpha: f64) -> f64 {
        (1.0 + alpha) / (1.0 - alpha)
    }

    /// Adds one finite value.
    pub fn add(&mut self, x: f64, alpha: f64) {
        if x.abs() < Self::MIN_MAGNITUDE || !x.is_finite() {
            self.zero += 1;
            return;
        }
        let index = (x.abs().ln() / Self::gamma(alpha).ln()).ceil() as i32;
        let store = if x > 0.0 { &mut self.positive } else { &mut self.negative };
        *store.entry(index).or_insert(0) += 1;
        if store.len() > Self::MAX_BUCKETS {
            // The map has > 2 entries here, so both lowest keys exist.
            if let (Some((&k0, &c0)), Some(&k1)) = (store.iter().next(), store.keys().nth(1)) {
                store.remove(&k0);
                *store.entry(k1).or_insert(0) += c0;
            }
        }
    }

    /// Adds every bucket of `other` (same `α`): the sketch of the union of both inputs.
    pub fn merge(&mut self, other: &Sketch) {
        for (k, c) in &other.positive {
            *self.positive.entry(*k).or_insert(0) += c;
        }
        for (k, c) in &other.negative {
            *self.negative.entry(*k).or_insert(0) += c;
        }
        self.zero += other.zero;
    }

    /// The value at rank `q` (0 = smallest, 1 = largest) of `count` values; `None` when empty.
    pub fn quantile(&self, q: f64, alpha: f64) -> Option<f64> {
        let count: u64 = self.zero + self.positive.values().sum::<u64>() + self.negative.values().sum::<u64>();
        if count == 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * (count - 1) as f64).floor() as u64;
        let gamma = Self::gamma(alpha);
        let value = |index: i32| 2.0 * gamma.powi(index) / (gamma + 1.0);
        let mut seen = 0u64;
        for (&k, &c) in self.negative.iter().rev() {
            seen += c;
            if seen > rank {
                return Some(-value(k));
            }
        }
        seen += self.zero;
        if seen > rank {
            return Some(0.0);
        }
        for (&k, &c) in &self.positive {
            seen += c;
            if seen > rank {
                return Some(value(k));
            }
        }
        // Unreachable: the counts add up to `count` > rank; the largest bucket is the answer.
        self.positive.keys().next_back().map(|&k| value(k))
    }
}

/// Running statistics of a set of readings (order-independent except for float rounding;
/// deterministic for the same input order).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub count: u64,
    pub mean: f64,
    /// Welford's sum of squared deviations.
    pub m2: f64,
    pub min: f64,
    pub max: f64,
    /// `(event time, value)` of the earliest and the latest reading.
    pub first: (i64, f64),
    pub last: (i64, f64),
    pub sketch: Sketch,
}

impl Summary {
    pub fn new(t: i64, v: f64) -> Summary {
        Summary { count: 0, mean: 0.0, m2: 0.0, min: v, max: v, first: (t, v), last: (t, v), sketch: Sketch::default() }
    }

    pub fn add(&mut self, t: i64, v: f64, alpha: f64) {
        self.count += 1;
        let d = v - self.mean;
        self.mean += d / self.count as f64;
        self.m2 += d * (v - self.mean);
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        if t < self.first.0 {
            self.first = (t, v);
        }
        if t >= self.last.0 {
            self.last = (t, v);
        }
        self.sketch.add(v, alpha);
    }

    /// The uplinked form.
    pub fn stats(&self, quantiles: &[f64], alpha: f64) -> Stats {
        let n = self.count.max(1) as f64;
        Stats {
            count: self.count,
            mean: self.mean,
            min: self.min,
            max: self.max,
            std: (self.m2 / n).max(0.0).sqrt(),
            first: self.first.1,
            last: self.last.1,
            quantiles: quantiles
                .iter()
                .filter_map(|&q| {
                    // The sketch's estimate, kept inside the exact range.
                    let value = self.sketch.quantile(q, alpha)?.clamp(self.min, self.max);
                    Some(Quantile { q, value })
                })
                .collect(),
        }
    }
}

/// One open window of one size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpenWindow {
    pub start_ms: i64,
    /// 0 until first emitted, then the version last emitted.
    pub version: u32,
    pub summary: Summary,
}

/// One entity's tumbling windows of one size.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SizeState {
    pub size_ms: i64,
    /// Open windows, by start.
    pub open: VecDeque<OpenWindow>,
    /// Windows ending at or before this are final (the watermark when they were dropped).
    pub final_through_ms: Option<i64>,
}

/// One entity's tumbling windows (checkpointed inside its `EntityWindows`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Tumbling {
    pub sizes: Vec<SizeState>,
}

/// An aggregate ready to uplink.
#[derive(Debug, Clone, PartialEq)]
pub struct Emitted {
    pub size_ms: i64,
    pub window_start_ms: i64,
    pub version: u32,
    pub stats: Stats,
}

impl Tumbling {
    /// Adds one reading to every size's window. Returns the sizes for which it is too late
    /// (its window is final). A reading for a window already emitted emits a correction.
    pub fn add(&mut self, t: i64, v: f64, s: &AggregateSettings, out: &mut Vec<Emitted>) -> Vec<i64> {
        self.align(s);
        let mut too_late = Vec::new();
        for size in &mut self.sizes {
            let start = t.div_euclid(size.size_ms) * size.size_ms;
            if size.final_through_ms.is_some_and(|f| start + size.size_ms <= f) {
                too_late.push(size.size_ms);
                continue;
            }
            let pos = size.open.partition_point(|w| w.start_ms < start);
            if size.open.get(pos).is_none_or(|w| w.start_ms != start) {
                size.open.insert(pos, OpenWindow { start_ms: start, version: 0, summary: Summary::new(t, v) });
            }
            // Just found or inserted at `pos`.
            let Some(w) = size.open.get_mut(pos) else { continue };
            w.summary.add(t, v, s.accuracy);
            if w.version > 0 {
                w.version += 1;
                out.push(Emitted {
                    size_ms: size.size_ms,
                    window_start_ms: start,
                    version: w.version,
                    stats: w.summary.stats(&s.quantiles, s.accuracy),
                });
            }
        }
        too_late
    }

    /// Emits (version 1) every window whose end the largest event time has reached, then
    /// drops every window the watermark has reached.
    pub fn advance(&mut self, max_event_ms: i64, watermark_ms: i64, s: &AggregateSettings, out: &mut Vec<Emitted>) {
        self.align(s);
        for size in &mut self.sizes {
            for w in size.open.iter_mut().filter(|w| w.version == 0 && w.start_ms + size.size_ms <= max_event_ms) {
                w.version = 1;
                out.push(Emitted {
                    size_ms: size.size_ms,
                    window_start_ms: w.start_ms,
                    version: 1,
                    stats: w.summary.stats(&s.quantiles, s.accuracy),
                });
            }
            while size.open.front().is_some_and(|w| w.start_ms + size.size_ms <= watermark_ms && w.version > 0) {
                size.open.pop_front();
            }
            size.final_through_ms = Some(size.final_through_ms.map_or(watermark_ms, |f| f.max(watermark_ms)));
        }
    }

    /// Makes the state's sizes match the configuration (a size added or removed since the
    /// state was checkpointed starts empty or is dropped).
    fn align(&mut self, s: &AggregateSettings) {
        if self.sizes.len() == s.sizes_ms.len() && self.sizes.iter().zip(&s.sizes_ms).all(|(a, b)| a.size_ms == *b) {
            return;
        }
        let mut old = std::mem::take(&mut self.sizes);
        self.sizes = s
            .sizes_ms
            .iter()
            .map(|&size_ms| match old.iter().position(|o| o.size_ms == size_ms) {
                Some(i) => old.swap_remove(i),
                None => SizeState { size_ms, ..SizeState::default() },
            })
            .collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(sizes: &[i64]) -> AggregateSettings {
        AggregateSettings { sizes_ms: sizes.to_vec(), quantiles: vec![0.0, 0.5, 1.0], accuracy: 0.01 }
    }

    #[test]
    fn sketch_quantiles_are_within_the_relative_accuracy() {
        let mut s = Sketch::default();
        let values: Vec<f64> = (1..=1000).map(|i| i as f64 * 0.37 - 50.0).collect();
        for &v in &values {
            s.add(v, 0.01);
        }
        let mut sorted = values.clone();
        sorted.sort_by(f64::total_cmp);
        for q in [0.0, 0.1, 0.25, 0.5, 0.9, 0.99, 1.0] {
            let exact = sorted[(q * 999.0) as usize];
            let est = s.quantile(q, 0.01).unwrap();
            assert!((est - exact).abs() <= 0.0101 * exact.abs() + 1e-9, "q {q}: {est} vs {exact}");
        }
        // Merging two halves equals the sketch of everything.
        let (mut a, mut b) = (Sketch::default(), Sketch::default());
        values.iter().take(400).for_each(|&v| a.add(v, 0.01));
        values.iter().skip(400).for_each(|&v| b.add(v, 0.01));
        a.merge(&b);
        assert_eq!(a, s);
    }

    #[test]
    fn windows_emit_then_correct_then_close() {
        let s = settings(&[1000]);
        let mut t = Tumbling::default();
        let mut out = Vec::new();
        for (time, v) in [(100, 1.0), (600, 3.0), (1200, 5.0)] {
            assert!(t.add(time, v, &s, &mut out).is_empty());
            t.advance(time, time - 500, &s, &mut out);
        }
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].window_start_ms, out[0].version, out[0].stats.count, out[0].stats.mean), (0, 1, 2, 2.0));
        // Late but within lateness (watermark 700 < end 1000): a correction.
        out.clear();
        assert!(t.add(900, 8.0, &s, &mut out).is_empty());
        assert_eq!((out[0].version, out[0].stats.count, out[0].stats.max, out[0].stats.last), (2, 3, 8.0, 8.0));
        // Watermark passes 1000: window 0 is final, a reading for it is too late.
        out.clear();
        t.add(1600, 1.0, &s, &mut out);
        t.advance(1600, 1100, &s, &mut out);
        assert_eq!(t.add(999, 1.0, &s, &mut out), vec![1000]);
        assert!(out.is_empty());
    }
}
