//! Features: what a window becomes before inference, and the per-entity rolling features kept
//! in the local feature store.
//!
//! Pure functions and small state structs; no I/O. The normalisations follow the model
//! manifest's `entity_ewma_zscore` and `entity_noise_zscore` contracts
//! (`models/MANIFEST-FORMAT.md`) exactly, so the training script and the agent compute the same
//! model input.

use serde::{Deserialize, Serialize};

use crate::inference::manifest::{Normalisation, NormalisationMethod};

/// `entity_noise_zscore`: a half squared first difference enters the noise EWMA capped at
/// `NOISE_CAP² · noise_var` (a fixed constant of the method), so regime steps and spikes barely
/// move the noise scale.
pub const NOISE_CAP: f64 = 4.0;

/// Per-entity normalisation statistics over all of an entity's readings (event-time order):
/// the exponentially weighted mean and variance (`entity_ewma_zscore`) and the noise variance
/// from first differences (`entity_noise_zscore`). Both are always maintained; the model's
/// manifest decides which one feeds the model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Ewma {
    pub count: u64,
    pub mean: f64,
    pub var: f64,
    /// Previous reading (`None` before the first one, and in checkpoints written before the
    /// noise statistics existed: the next reading then only seeds it).
    #[serde(default)]
    pub last: Option<f64>,
    /// Number of first differences folded into `noise_var`.
    #[serde(default)]
    pub diffs: u64,
    /// Noise variance: EWMA of capped `(x_t − x_{t−1})² / 2`.
    #[serde(default)]
    pub noise_var: f64,
}

impl Ewma {
    /// `mean += a·d; var = (1 − a)·(var + a·d²)` with `d = x − mean`; the first value seeds.
    ///
    /// Noise: with `n` = differences so far including this one, `q = (x − last)² / 2`, capped
    /// at `NOISE_CAP² · noise_var` when `noise_var > 0`, then
    /// `noise_var += max(a, 1/n) · (q − noise_var)`.
    pub fn update(&mut self, x: f64, alpha: f64) {
        if self.count == 0 {
            self.mean = x;
            self.var = 0.0;
        } else {
            let d = x - self.mean;
            self.mean += alpha * d;
            self.var = (1.0 - alpha) * (self.var + alpha * d * d);
        }
        if let Some(last) = self.last {
            let d = x - last;
            let mut q = 0.5 * d * d;
            if self.noise_var > 0.0 {
                q = q.min(NOISE_CAP * NOISE_CAP * self.noise_var);
            }
            self.diffs += 1;
            let a = alpha.max(1.0 / self.diffs as f64);
            self.noise_var += a * (q - self.noise_var);
        }
        self.last = Some(x);
        self.count += 1;
    }

    pub fn std(&self) -> f64 {
        self.var.max(0.0).sqrt()
    }

    /// Noise standard deviation (`entity_noise_zscore` scale before the `min_std` floor).
    pub fn noise_std(&self) -> f64 {
        self.noise_var.max(0.0).sqrt()
    }
}

/// Resamples `points` (event time ms, value; sorted by time, all inside
/// `(end − size, end]`) onto `width` equal slots, each `(slot start, slot end]` like the window
/// itself: each slot is the mean of its points; an
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
        let offset = (t - start - 1).clamp(0, size_ms - 1) as i128;
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

/// The model input for one resampled window, as the manifest's `normalisation.method` says.
pub fn normalise_window(norm: &Normalisation, values: &[f64], stats: &Ewma, out: &mut Vec<f32>) {
    match norm.method {
        NormalisationMethod::EntityEwmaZscore => normalise(values, stats, norm.min_std, norm.clip, out),
        NormalisationMethod::EntityNoiseZscore => {
            normalise_noise(values, stats, norm.min_std, norm.clip, norm.window_std_ratio.unwrap_or(0.0), out)
        }
        // A multivariate model scores assets (`pipeline::asset::normalise_asset_window`); the
        // worker never scores a single entity's window with it. Kept total with no output.
        NormalisationMethod::AssetWarmupZscore => out.clear(),
    }
}

/// `entity_ewma_zscore`: `z = clamp((x − mean) / max(std, min_std), −clip, clip)` as f32.
pub fn normalise(values: &[f64], stats: &Ewma, min_std: f64, clip: f64, out: &mut Vec<f32>) {
    let scale = stats.std().max(min_std);
    out.clear();
    out.extend(values.iter().map(|x| ((x - stats.mean) / scale).clamp(-clip, clip) as f32));
}

/// `entity_noise_zscore` into `out` as f32: the window is centred on its own mean `m`, and
/// `scale = max(noise_std, window_std_ratio · rms(residual), min_std)` where `residual` is the
/// centred window minus its least-squares line over the slot index; then
/// `z = clamp((x − m) / scale, −clip, clip)`.
pub fn normalise_noise(
    values: &[f64],
    stats: &Ewma,
    min_std: f64,
    clip: f64,
    window_std_ratio: f64,
    out: &mut Vec<f32>,
) {
    out.clear();
    if values.is_empty() {
        return;
    }
    let n = values.len() as f64;
    let centre = values.iter().sum::<f64>() / n;
    let tc = |i: usize| i as f64 - (n - 1.0) / 2.0;
    let (mut stx, mut stt) = (0.0, 0.0);
    for (i, x) in values.iter().enumerate() {
        stx += tc(i) * (x - centre);
        stt += tc(i) * tc(i);
    }
    let slope = if stt > 0.0 { stx / stt } else { 0.0 };
    let resid_ms = values.iter().enumerate().map(|(i, x)| (x - centre - slope * tc(i)).powi(2)).sum::<f64>() / n;
    let scale = stats.noise_std().max(window_std_ratio * resid_ms.sqrt()).max(min_std);
    out.extend(values.iter().map(|x| ((x - centre) / scale).clamp(-clip, clip) as f32));
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
    fn noise_variance_from_capped_first_differences() {
        let mut e = Ewma::default();
        e.update(10.0, 0.25);
        assert_eq!((e.last, e.diffs, e.noise_var), (Some(10.0), 0, 0.0));
        // d = 2: q = 2; n = 1 -> a = max(0.25, 1) = 1; noise_var = 2
        e.update(12.0, 0.25);
        assert_eq!((e.diffs, e.noise_var), (1, 2.0));
        // d = -1: q = 0.5; a = max(0.25, 1/2) = 0.5; noise_var = 2 + 0.5 * (0.5 - 2) = 1.25
        e.update(11.0, 0.25);
        assert_eq!(e.noise_var, 1.25);
        // d = 1: q = 0.5; a = max(0.25, 1/3) = 1/3; noise_var = 1.25 - 0.75 / 3 = 1.0
        e.update(12.0, 0.25);
        assert!((e.noise_var - 1.0).abs() < 1e-12);
        // d = 8: q = 32, capped at 16 * 1.0 = 16; a = max(0.25, 1/4) = 0.25; 1 + 0.25 * 15 = 4.75
        e.update(20.0, 0.25);
        assert_eq!(e.noise_var, 4.75);
        // n = 5: a = alpha = 0.25 from here on. d = 0: q = 0; 4.75 * 0.75 = 3.5625
        e.update(20.0, 0.25);
        assert_eq!((e.diffs, e.noise_var, e.count), (5, 3.5625, 6));
    }

    #[test]
    fn noise_statistics_start_after_an_old_checkpoint() {
        // A checkpoint from before the noise fields existed: only the next reading seeds `last`.
        let old: Ewma = serde_json::from_str(r#"{"count": 500, "mean": 3.0, "var": 1.0}"#).unwrap();
        let mut e = old;
        e.update(5.0, 0.5);
        assert_eq!((e.last, e.diffs, e.noise_var), (Some(5.0), 0, 0.0));
        e.update(6.0, 0.5);
        assert_eq!((e.diffs, e.noise_var), (1, 0.5));
    }

    #[test]
    fn normalise_noise_centres_on_the_window_mean() {
        // values = 10 + 2·t + r with t = (-1.5, -0.5, 0.5, 1.5) and r = (1, -1, -1, 1), so the
        // mean is 10, the centred window (-2, -2, 0, 4), the fitted slope 2 and rms(r) = 1.
        let values = [8.0, 8.0, 10.0, 14.0];
        let stats = Ewma { count: 300, mean: 100.0, var: 50.0, noise_var: 0.25, ..Default::default() };
        let mut out = Vec::new();
        // noise std 0.5 > 0.25 · 1: scale 0.5 -> (-4, -4, 0, 8 clipped to 5)
        normalise_noise(&values, &stats, 1e-3, 5.0, 0.25, &mut out);
        assert_eq!(out, vec![-4.0, -4.0, 0.0, 5.0]);
        // window floor 2 · 1 = 2 > 0.5: scale 2 -> (-1, -1, 0, 2)
        normalise_noise(&values, &stats, 1e-3, 5.0, 2.0, &mut out);
        assert_eq!(out, vec![-1.0, -1.0, 0.0, 2.0]);
        // a straight line has no residual; noise_var 0 -> the min_std floor 4 decides
        let flat = Ewma { noise_var: 0.0, ..stats };
        normalise_noise(&[1.0, 3.0, 5.0, 7.0], &flat, 4.0, 8.0, 0.5, &mut out);
        assert_eq!(out, vec![-0.75, -0.25, 0.25, 0.75]);
        normalise_noise(&[], &flat, 4.0, 8.0, 0.5, &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn resample_fills_gaps_forward_and_leading_backward() {
        let mut out = Vec::new();
        // window (0, 8000] on 4 slots of 2 s; points in slots 1 and 3 only.
        resample(&[(2500, 1.0), (3000, 3.0), (7000, 5.0)], 8000, 8000, 4, &mut out).unwrap();
        assert_eq!(out, vec![2.0, 2.0, 2.0, 5.0]);
        // A slot holds its end, not its start: 2000 is in the first slot, 8000 in the last.
        resample(&[(2000, 7.0), (8000, 9.0)], 8000, 8000, 4, &mut out).unwrap();
        assert_eq!(out, vec![7.0, 7.0, 7.0, 9.0]);
        assert!(resample(&[], 8000, 8000, 4, &mut out).is_none());
    }

    #[test]
    fn normalise_clips() {
        let stats = Ewma { count: 100, mean: 10.0, var: 4.0, ..Default::default() };
        let mut out = Vec::new();
        normalise(&[10.0, 12.0, 100.0], &stats, 1e-3, 3.0, &mut out);
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
            relative_std_floor: None,
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
