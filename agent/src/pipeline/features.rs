//! Features: what a window becomes before inference, and the per-entity rolling features kept
//! in the local feature store.
//!
//! Pure functions and small state structs; no I/O. The normalisation follows the model
//! manifest's `entity_ewma_zscore` contract (`models/MANIFEST-FORMAT.md`) exactly, so the
//! training script and the agent compute the same model input.

use serde::{Deserialize, Serialize};

/// Exponentially weighted mean and variance of all of an entity's readings (event-time order).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Ewma {
    pub count: u64,
    pub mean: f64,
    pub var: f64,
}

impl Ewma {
    /// `mean += a·d; var = (1 − a)·(var + a·d²)` with `d = x − mean`; the first value seeds.
    pub fn update(&mut self, x: f64, alpha: f64) {
        if self.count == 0 {
            self.mean = x;
            self.var = 0.0;
        } else {
            let d = x - self.mean;
            self.mean += alpha * d;
            self.var = (1.0 - alpha) * (self.var + alpha * d * d);
        }
        self.count += 1;
    }

    pub fn std(&self) -> f64 {
        self.var.max(0.0).sqrt()
    }
}

/// Parameters of `entity_ewma_zscore` (from the manifest).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Normalisation {
    pub alpha: f64,
    pub min_std: f64,
    pub clip: f64,
    pub warmup: u64,
    /// Model input width (slots per window).
    pub width: usize,
}

/// Resamples `points` (event time ms, value; sorted by time, all inside
/// `[end − size, end)`) onto `width` equal slots: each slot is the mean of its points; an
/// empty slot repeats the previous slot; leading empty slots take the first non-empty slot.
/// Returns `None` when there are no points.
pub fn resample(points: &[(i64, f64)], end_ms: i64, size_ms: i64, width: usize, out: &mut Vec<f64>) -> Option<()> {
    if points.is_empty() || width == 0 || size_ms <= 0 {
        return None;
    }
    out.clear();
    out.resize(width, f64::NAN);
    let start = end_ms - size_ms;
    let mut sums = vec![(0.0f64, 0u32); width];
    for &(t, v) in points {
        // Slot index by integer arithmetic; points outside the window are clamped to the edge
        // slots rather than dropped (callers pass only window points).
        let offset = (t - start).clamp(0, size_ms - 1) as i128;
        let slot = ((offset * width as i128) / size_ms as i128) as usize;
        let s = &mut sums[slot.min(width - 1)];
        s.0 += v;
        s.1 += 1;
    }
    let mut last = f64::NAN;
    for (slot, (sum, n)) in out.iter_mut().zip(sums) {
        if n > 0 {
            last = sum / n as f64;
        }
        *slot = last;
    }
    let first = out.iter().copied().find(|v| !v.is_nan())?;
    for v in out.iter_mut() {
        if v.is_nan() {
            *v = first;
        } else {
            break;
        }
    }
    Some(())
}

/// `z = clamp((x − mean) / max(std, min_std), −clip, clip)` into `out` as f32.
pub fn normalise(values: &[f64], stats: &Ewma, norm: &Normalisation, out: &mut Vec<f32>) {
    let scale = stats.std().max(norm.min_std);
    out.clear();
    out.extend(values.iter().map(|x| ((x - stats.mean) / scale).clamp(-norm.clip, norm.clip) as f32));
}

/// Rolling features of an entity's latest window: the local feature store's row.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Features {
    /// End of the window these describe (epoch ms).
    pub window_end_ms: i64,
    /// Readings in the window.
    pub count: u32,
    pub mean: f64,
    pub std: f64,
    pub min: f64,
    pub max: f64,
    /// Least-squares slope in units per second.
    pub slope_per_s: f64,
    /// Long-run exponentially weighted mean and standard deviation (the normalisation stats).
    pub ewma_mean: f64,
    pub ewma_std: f64,
}

impl Features {
    pub fn of_window(points: &[(i64, f64)], end_ms: i64, ewma: &Ewma) -> Features {
        let n = points.len() as f64;
        let mut f = Features { window_end_ms: end_ms, count: points.len() as u32, ewma_mean: ewma.mean, ewma_std: ewma.std(), ..Default::default() };
        if points.is_empty() {
            return f;
        }
        f.mean = points.iter().map(|p| p.1).sum::<f64>() / n;
        f.std = (points.iter().map(|p| (p.1 - f.mean).powi(2)).sum::<f64>() / n).sqrt();
        f.min = points.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
        f.max = points.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
        let t0 = points[0].0;
        let mean_t = points.iter().map(|p| (p.0 - t0) as f64 / 1000.0).sum::<f64>() / n;
        let (mut sxy, mut sxx) = (0.0, 0.0);
        for &(t, v) in points {
            let dt = (t - t0) as f64 / 1000.0 - mean_t;
            sxy += dt * (v - f.mean);
            sxx += dt * dt;
        }
        f.slope_per_s = if sxx > 0.0 { sxy / sxx } else { 0.0 };
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ewma_matches_the_manifest_formula() {
        let mut e = Ewma::default();
        e.update(10.0, 0.5);
        assert_eq!((e.mean, e.var), (10.0, 0.0));
        e.update(12.0, 0.5);
        // d = 2, mean = 11, var = 0.5 * (0 + 0.5 * 4) = 1
        assert_eq!((e.mean, e.var, e.count), (11.0, 1.0, 2));
    }

    #[test]
    fn resample_fills_gaps_forward_and_leading_backward() {
        let mut out = Vec::new();
        // window [0, 8000) on 4 slots of 2 s; points in slots 1 and 3 only.
        resample(&[(2500, 1.0), (3000, 3.0), (7000, 5.0)], 8000, 8000, 4, &mut out).unwrap();
        assert_eq!(out, vec![2.0, 2.0, 2.0, 5.0]);
        assert!(resample(&[], 8000, 8000, 4, &mut out).is_none());
    }

    #[test]
    fn normalise_clips() {
        let stats = Ewma { count: 100, mean: 10.0, var: 4.0 };
        let norm = Normalisation { alpha: 0.1, min_std: 1e-3, clip: 3.0, warmup: 0, width: 3 };
        let mut out = Vec::new();
        normalise(&[10.0, 12.0, 100.0], &stats, &norm, &mut out);
        assert_eq!(out, vec![0.0, 1.0, 3.0]);
    }

    #[test]
    fn features_slope_and_spread() {
        let pts: Vec<(i64, f64)> = (0..10).map(|i| (i * 1000, 2.0 * i as f64)).collect();
        let f = Features::of_window(&pts, 10_000, &Ewma::default());
        assert!((f.slope_per_s - 2.0).abs() < 1e-9);
        assert_eq!((f.min, f.max, f.count), (0.0, 18.0, 10));
        assert!((f.mean - 9.0).abs() < 1e-9);
    }
}
