//! A second, longer view of an asset, checked against the asset's own warm-up: a PCA of the
//! channels' long-span means fitted on the warm-up, scored by Hotelling's T² and the Q statistic
//! (squared prediction error), and added to the model's evidence (`[pipeline.warmup_pca]`).
//!
//! # Design constraints and invariants
//! * **Only the warm-up fits.** The PCA and its two limits come from the windows that close
//!   while the asset's baselines are still folding, up to and including the window that
//!   completes them (on SKAB: the file's first 400 rows, the protocol's training part). After
//!   the fit nothing is learned: the view is a pure function of the frozen fit, the frozen
//!   baselines and the window sequence, so replay and a restored checkpoint score identically.
//! * **Long view** = the mean of `windows` back-to-back windows: the average of the raw channel
//!   means of the windows ending at `t`, `t − size`, …, `t − (windows − 1)·size` (`size_ms` must
//!   be a multiple of `hop_ms`). Those means are kept in a ring covering that span. When one of
//!   them is missing (a gap without readings skipped a window), the window has no long view:
//!   it is not recorded during the warm-up and is scored by the model alone afterwards.
//! * **Same baseline as the model's input**: `z = (mean − baseline mean) / scale` with the
//!   asset's frozen per-channel baseline and scale ([`super::asset::Baseline::scale`]), not
//!   clipped like the model's input (a long-span mean is already smooth) but bounded by
//!   ±[`MAX_Z`] so extreme finite readings keep T² and Q finite.
//! * **No NaN gets in.** Readings are finite (ingest rejects the rest); the means divide before
//!   they sum, so they stay finite too. Only a baseline broken by extreme readings makes a `z`
//!   NaN: such a view is left out of the fit, and a window whose evidence is not finite is
//!   scored by the model alone — a NaN in the covariance would otherwise poison the asset's
//!   fit, and every later score, for good.
//! * **Fit**: `μ` and covariance of the recorded `z` (population); eigen decomposition by
//!   cyclic Jacobi ([`symmetric_eigen`]; C ≤ a few dozen channels); the first `k` components
//!   explaining at least `variance` of the total; `T² = Σⱼ<k tⱼ² / λⱼ`, `Q = ‖d − Pₖ tₖ‖²` with
//!   `d = z − μ`, `t = Pᵀ d`. Limits = the `limit_quantile` of each over the recorded warm-up
//!   views (linear interpolation between order statistics). With fewer than two recorded views
//!   the asset gets no fit ([`Fit::Unavailable`], kept: it never re-fits) and is scored by the
//!   model alone.
//! * **Evidence** = `weight · (T² / T²_limit + Q / Q_limit)`. The inference stage combines it
//!   with the model: `e = model_weight · error / error_scale + evidence`, score `e / (1 + e)`
//!   (so the review threshold 0.5 is `e = 1`), see [`LongViewEvidence`]. A window without
//!   evidence (no fit, or no long view) is scored by the model alone, as without the view: the
//!   weights are a pair, and the model's weight alone would only make it less sensitive.
//! * **Bounded**: at most [`MAX_WARMUP_VIEWS`] views are recorded (the first ones; a channel
//!   that never completes its warm-up must not grow the state); the ring holds one long view's
//!   span: `(windows − 1) · size_ms / hop_ms + 1` window means of `C` channels (17 on SKAB), at
//!   most [`MAX_SPANNED_WINDOWS`] (config validation).
//! * **Checkpointed** with the asset ([`super::asset::AssetWindows::pca`], serde default: a state
//!   written before this view existed loads as "collecting"). The fit needs the warm-up's
//!   windows: an asset already past its warm-up when the view is turned on (or restored from
//!   such a state) records nothing before its next window, gets [`Fit::Unavailable`] and is
//!   scored by the model alone for as long as its state is kept (no command resets an asset's
//!   state; a fresh warm-up needs a fresh state). The worker logs each asset's outcome
//!   ([`Fit::log_outcome`]).
//! * **The fit is frozen with its settings.** `variance` and `limit_quantile` changed later do
//!   not re-fit an asset (they apply to a fresh warm-up); a fit is only compared with long
//!   views of the `windows` it was made on ([`PcaFit::windows`]) — with another span the asset
//!   is scored by the model alone. `weight` and `model_weight` apply to every window at once.
//! * **Every model gets the same evidence**: a shadow or canary candidate's score combines its
//!   own error (over its own `error_scale`) with the window's evidence, like the active model's,
//!   so the rollback comparison compares what each would alert on.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::config::WarmupPcaConfig;

/// `[pipeline.warmup_pca]` as the workers use it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WarmupPcaSettings {
    /// Back-to-back windows in the long view.
    pub windows: usize,
    pub variance: f64,
    pub limit_quantile: f64,
    pub weight: f64,
    pub model_weight: f64,
}

impl WarmupPcaSettings {
    pub fn new(c: &WarmupPcaConfig) -> WarmupPcaSettings {
        WarmupPcaSettings {
            windows: c.windows.max(1),
            variance: c.variance,
            limit_quantile: c.limit_quantile,
            weight: c.weight,
            model_weight: c.model_weight,
        }
    }
}

/// What a window's score combines besides the model error (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LongViewEvidence {
    /// Weight of the model's `error / error_scale`.
    pub model_weight: f64,
    /// `weight · (T² / T²_limit + Q / Q_limit)`.
    pub evidence: f64,
}

impl LongViewEvidence {
    /// The combined error in the model's units: `model_weight · error + evidence · error_scale`,
    /// so `error / (error + error_scale)` of it is the combined score.
    pub fn combined_error(&self, error: f64, error_scale: f64) -> f64 {
        self.model_weight * error + self.evidence * error_scale
    }
}

/// The fitted PCA of one asset's warm-up.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PcaFit {
    /// Mean of the warm-up views (z units).
    pub mean: Vec<f64>,
    /// The retained components, each a unit vector over the channels (largest variance first).
    pub components: Vec<Vec<f64>>,
    /// Their variances (eigenvalues), floored at [`MIN_VARIANCE`].
    pub variances: Vec<f64>,
    pub t2_limit: f64,
    pub q_limit: f64,
    /// The long view's `windows` the fit was made on: a fit is only compared with views of the
    /// same span (0: fitted before the span was recorded, taken as the configured one).
    #[serde(default)]
    pub windows: usize,
}

/// Most long views recorded during one warm-up (SKAB: 385).
pub const MAX_WARMUP_VIEWS: usize = 2048;

/// Most window means one long view may span (`(windows − 1) · size_ms / hop_ms + 1`, kept and
/// checkpointed per asset; config validation refuses more): the same bound as the warm-up's
/// record, so an asset's long-view state is at most twice that many means of its channels.
pub const MAX_SPANNED_WINDOWS: usize = MAX_WARMUP_VIEWS;

/// Floor of a component's variance and of the limits (a constant channel must not divide by 0).
pub const MIN_VARIANCE: f64 = 1e-9;

/// Where an asset's PCA stands.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub enum Fit {
    /// Warm-up: the raw long views recorded so far.
    #[default]
    Collecting,
    Fitted(PcaFit),
    /// The warm-up recorded fewer than two long views: the asset is scored by the model alone.
    Unavailable,
}

/// One asset's long view (checkpointed with the asset).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WarmupPca {
    /// `(end_ms, raw channel means)` of the latest windows, oldest first, covering the span of
    /// one long view.
    pub recent: VecDeque<(i64, Vec<f64>)>,
    /// Raw long views recorded during the warm-up (emptied by the fit).
    pub warmup: Vec<Vec<f64>>,
    pub fit: Fit,
}

impl Fit {
    /// Logs how an asset's warm-up ended for its long view (call when it leaves
    /// [`Fit::Collecting`]).
    pub fn log_outcome(&self, asset: &str) {
        match self {
            Fit::Collecting => {}
            Fit::Fitted(f) => tracing::info!(asset, components = f.components.len(), t2_limit = f.t2_limit, q_limit = f.q_limit, "warm-up PCA fitted"),
            Fit::Unavailable => tracing::warn!(
                asset,
                "warm-up PCA unavailable: fewer than two long views recorded during the asset's warm-up (it was already past it, e.g. a state from before [pipeline.warmup_pca] was on); the model alone scores it while its state is kept"
            ),
        }
    }
}

impl WarmupPca {
    /// Folds the window ending `end_ms` (raw values, time-major over `baselines.len()` channels;
    /// windows are `size_ms` long — the worker's geometry) and returns its evidence, `None`
    /// without a fit or a long view. `baselines` are the channels' `(mean, scale)`, meaningful
    /// once `warmed_up`; the first warmed-up window fits the PCA.
    pub fn observe(&mut self, s: &WarmupPcaSettings, size_ms: i64, end_ms: i64, values: &[f64], baselines: &[(f64, f64)], warmed_up: bool) -> Option<f64> {
        let n = baselines.len().max(1);
        let slots = values.len() / n;
        // Each term divided before summing: a mean of finite readings stays finite (a sum of
        // readings near f64::MAX would overflow to ±inf, and +inf and −inf windows to a NaN
        // long view).
        let means: Vec<f64> = (0..n).map(|c| values.iter().skip(c).step_by(n).map(|x| x / slots.max(1) as f64).sum()).collect();
        let oldest = end_ms - (s.windows as i64 - 1) * size_ms;
        while self.recent.front().is_some_and(|(t, _)| *t < oldest) {
            self.recent.pop_front();
        }
        self.recent.push_back((end_ms, means));
        let long = self.long_view(s.windows, size_ms, end_ms, n);
        match &self.fit {
            Fit::Collecting => {
                if let Some(long) = long.filter(|_| self.warmup.len() < MAX_WARMUP_VIEWS) {
                    self.warmup.push(long);
                }
                if warmed_up {
                    // A view whose z is not finite (a baseline broken by extreme readings) is
                    // left out: one NaN in the covariance would poison the fit for good.
                    let z: Vec<Vec<f64>> = self.warmup.iter().map(|m| to_z(m, baselines)).filter(|z| z.iter().all(|v| v.is_finite())).collect();
                    self.fit = fit(&z, s.variance, s.limit_quantile).map_or(Fit::Unavailable, |f| Fit::Fitted(PcaFit { windows: s.windows, ..f }));
                    self.warmup = Vec::new();
                    return self.evidence(s, size_ms, end_ms, baselines);
                }
                None
            }
            Fit::Fitted(_) => self.evidence(s, size_ms, end_ms, baselines),
            Fit::Unavailable => None,
        }
    }

    fn evidence(&self, s: &WarmupPcaSettings, size_ms: i64, end_ms: i64, baselines: &[(f64, f64)]) -> Option<f64> {
        let Fit::Fitted(f) = &self.fit else { return None };
        if f.windows != 0 && f.windows != s.windows {
            // `windows` changed since the fit: a longer (shorter) mean varies less (more) than
            // the warm-up's views, so the limits would not hold.
            return None;
        }
        let (t2, q) = f.t2_q(&to_z(&self.long_view(s.windows, size_ms, end_ms, baselines.len())?, baselines));
        // Not finite only when the baselines are (z is clamped, the fit is finite): the model
        // alone scores the window rather than a NaN score.
        Some(s.weight * (t2 / f.t2_limit + q / f.q_limit)).filter(|e| e.is_finite())
    }

    /// Mean of the windows ending `end_ms − j·size_ms`, `j < windows`, if all are in the ring.
    fn long_view(&self, windows: usize, size_ms: i64, end_ms: i64, n: usize) -> Option<Vec<f64>> {
        let mut sum = vec![0.0; n];
        for j in 0..windows as i64 {
            let t = end_ms - j * size_ms;
            let (_, m) = self.recent.iter().rev().find(|(e, _)| *e == t)?;
            sum.iter_mut().zip(m).for_each(|(a, b)| *a += b / windows as f64);
        }
        Some(sum)
    }
}

/// Bound of a long view's z (far beyond any real shift; keeps T² and Q finite for extreme but
/// finite readings).
pub const MAX_Z: f64 = 1e3;

fn to_z(raw: &[f64], baselines: &[(f64, f64)]) -> Vec<f64> {
    raw.iter().zip(baselines).map(|(x, (mean, scale))| ((x - mean) / scale).clamp(-MAX_Z, MAX_Z)).collect()
}

impl PcaFit {
    /// `(T², Q)` of one view `z`.
    pub fn t2_q(&self, z: &[f64]) -> (f64, f64) {
        let d: Vec<f64> = z.iter().zip(&self.mean).map(|(a, b)| a - b).collect();
        let mut residual = d.clone();
        let mut t2 = 0.0;
        for (p, var) in self.components.iter().zip(&self.variances) {
            let t: f64 = p.iter().zip(&d).map(|(a, b)| a * b).sum();
            t2 += t * t / var;
            residual.iter_mut().zip(p).for_each(|(r, pc)| *r -= t * pc);
        }
        (t2, residual.iter().map(|r| r * r).sum())
    }
}

/// Fits the PCA of the views `z` (see the module docs); `None` with fewer than two views or
/// views of different lengths.
pub fn fit(z: &[Vec<f64>], variance: f64, limit_quantile: f64) -> Option<PcaFit> {
    let n = z.first()?.len();
    if z.len() < 2 || z.iter().any(|v| v.len() != n) {
        return None;
    }
    // Indexing below cannot panic: every view has `n` values (checked above), `cov` is n × n,
    // and `symmetric_eigen` returns `n` values and vectors of `n`.
    let count = z.len() as f64;
    let mean: Vec<f64> = (0..n).map(|c| z.iter().map(|v| v[c]).sum::<f64>() / count).collect();
    let mut cov = vec![vec![0.0; n]; n];
    for v in z {
        for i in 0..n {
            for j in 0..n {
                cov[i][j] += (v[i] - mean[i]) * (v[j] - mean[j]) / count;
            }
        }
    }
    let (values, vectors) = symmetric_eigen(cov);
    let total: f64 = values.iter().map(|v| v.max(0.0)).sum();
    let mut k = 0;
    let mut cumulative = 0.0;
    while total > 0.0 && k < n && cumulative / total < variance {
        cumulative += values[k].max(0.0);
        k += 1;
    }
    let mut f = PcaFit {
        mean,
        components: vectors.into_iter().take(k).collect(),
        variances: values.iter().take(k).map(|v| v.max(MIN_VARIANCE)).collect(),
        t2_limit: 1.0,
        q_limit: 1.0,
        windows: 0,
    };
    let (mut t2s, mut qs): (Vec<f64>, Vec<f64>) = z.iter().map(|v| f.t2_q(v)).unzip();
    f.t2_limit = quantile(&mut t2s, limit_quantile).max(MIN_VARIANCE);
    f.q_limit = quantile(&mut qs, limit_quantile).max(MIN_VARIANCE);
    Some(f)
}

/// The `q` quantile of `v` by linear interpolation between order statistics (numpy's default);
/// 0 for an empty slice.
pub fn quantile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let h = (v.len() - 1) as f64 * q.clamp(0.0, 1.0);
    // In bounds: h ∈ [0, len − 1] (q clamped; a NaN q makes h NaN, which casts to 0).
    let lo = h.floor() as usize;
    let hi = (lo + 1).min(v.len() - 1);
    v[lo] + (h - lo as f64) * (v[hi] - v[lo])
}

/// Eigenvalues (descending) and unit eigenvectors of the symmetric matrix `a` (row-major,
/// `n × n`) by cyclic Jacobi rotations, until the off-diagonal sum of squares is at most 1e-22
/// of the whole matrix's (a relative Frobenius norm of 1e-11), or after 100 sweeps (which also
/// ends a matrix holding a NaN).
///
/// # Panics
/// When `a` is not square; [`fit`], its caller, builds it `n × n` (never from data's shape).
pub fn symmetric_eigen(mut a: Vec<Vec<f64>>) -> (Vec<f64>, Vec<Vec<f64>>) {
    let n = a.len();
    // v[i][k]: component i of eigenvector k.
    let mut v: Vec<Vec<f64>> = (0..n).map(|i| (0..n).map(|j| if i == j { 1.0 } else { 0.0 }).collect()).collect();
    let norm: f64 = a.iter().flatten().map(|x| x * x).sum();
    for _ in 0..100 {
        let off: f64 = (0..n).flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j))).map(|(i, j)| a[i][j] * a[i][j]).sum();
        if off <= 1e-22 * norm || off == 0.0 {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                if a[p][q] == 0.0 {
                    continue;
                }
                let theta = (a[q][q] - a[p][p]) / (2.0 * a[p][q]);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let (akp, akq) = (a[k][p], a[k][q]);
                    a[k][p] = c * akp - s * akq;
                    a[k][q] = s * akp + c * akq;
                }
                for k in 0..n {
                    let (apk, aqk) = (a[p][k], a[q][k]);
                    a[p][k] = c * apk - s * aqk;
                    a[q][k] = s * apk + c * aqk;
                }
                for row in v.iter_mut() {
                    let (vp, vq) = (row[p], row[q]);
                    row[p] = c * vp - s * vq;
                    row[q] = s * vp + c * vq;
                }
            }
        }
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&i, &j| a[j][j].total_cmp(&a[i][i]));
    let values = order.iter().map(|&k| a[k][k]).collect();
    let vectors = order.iter().map(|&k| (0..n).map(|i| v[i][k]).collect()).collect();
    (values, vectors)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(windows: usize) -> WarmupPcaSettings {
        WarmupPcaSettings { windows, variance: 0.99, limit_quantile: 0.99, weight: 0.5, model_weight: 0.25 }
    }

    #[test]
    fn jacobi_reconstructs_a_symmetric_matrix() {
        let a = vec![vec![4.0, 1.0, 0.5], vec![1.0, 3.0, 0.25], vec![0.5, 0.25, 1.0]];
        let (values, vectors) = symmetric_eigen(a.clone());
        assert!(values.windows(2).all(|w| w[0] >= w[1]), "{values:?}");
        // A v = λ v for each pair, and the vectors are orthonormal.
        for (l, vec) in values.iter().zip(&vectors) {
            for i in 0..3 {
                let av: f64 = (0..3).map(|j| a[i][j] * vec[j]).sum();
                assert!((av - l * vec[i]).abs() < 1e-10, "A v != λ v: {av} vs {}", l * vec[i]);
            }
        }
        for i in 0..3 {
            for j in 0..3 {
                let dot: f64 = (0..3).map(|k| vectors[i][k] * vectors[j][k]).sum();
                assert!((dot - if i == j { 1.0 } else { 0.0 }).abs() < 1e-10);
            }
        }
        assert!((values.iter().sum::<f64>() - 8.0).abs() < 1e-10, "trace preserved");
    }

    #[test]
    fn quantile_interpolates_like_numpy() {
        assert_eq!(quantile(&mut [3.0, 1.0, 2.0, 4.0], 0.5), 2.5);
        assert_eq!(quantile(&mut [5.0, 1.0], 1.0), 5.0);
        assert!((quantile(&mut (0..101).map(f64::from).collect::<Vec<_>>(), 0.99) - 99.0).abs() < 1e-12);
    }

    #[test]
    fn q_sees_a_break_of_the_correlation_and_t2_a_shift_along_it() {
        // Two channels moving together (b = a) plus small independent noise on b.
        let z: Vec<Vec<f64>> = (0..200).map(|i| {
            let a = (i as f64 * 0.37).sin();
            vec![a, a + 0.01 * (i as f64 * 1.3).cos()]
        }).collect();
        let f = fit(&z, 0.99, 1.0).expect("fit");
        assert_eq!(f.components.len(), 1, "one component explains the pair");
        let (t2_along, q_along) = f.t2_q(&[3.0, 3.0]);
        let (t2_across, q_across) = f.t2_q(&[1.0, -1.0]);
        assert!(t2_along / f.t2_limit > 5.0 && q_along / f.q_limit < 1.0, "along: T² {t2_along}, Q {q_along}, limits {} {}", f.t2_limit, f.q_limit);
        assert!(q_across / f.q_limit > 100.0, "across: Q {q_across} vs limit {}", f.q_limit);
        assert!(t2_across / f.t2_limit < 1.0);
    }

    #[test]
    fn too_few_views_do_not_fit() {
        assert!(fit(&[vec![1.0, 2.0]], 0.9, 0.99).is_none());
        assert!(fit(&[], 0.9, 0.99).is_none());
    }

    /// Feeds windows of one channel pair ending every second (size 4 s, hop 1 s); the
    /// baselines complete at `warm_end`.
    fn run(pca: &mut WarmupPca, s: &WarmupPcaSettings, ends: impl Iterator<Item = i64>, warm_end: i64, level: impl Fn(i64) -> f64) -> Vec<(i64, Option<f64>)> {
        let baselines = [(0.0, 1.0), (10.0, 2.0)];
        ends.map(|e| {
            let values: Vec<f64> = (0..4).flat_map(|slot| {
                let t = e - 4000 + slot * 1000;
                let x = level(t) + ((t / 1000) as f64 * 0.9).sin() * 0.3;
                [x, 10.0 + 2.0 * x]
            }).collect();
            (e, pca.observe(s, 4000, e, &values, &baselines, e >= warm_end))
        }).collect()
    }

    #[test]
    fn fits_on_the_warm_up_only_and_flags_a_later_shift() {
        let s = settings(2);
        let mut pca = WarmupPca::default();
        let out = run(&mut pca, &s, (1..=200).map(|i| i * 1000), 100_000, |_| 0.0);
        assert!(out.iter().filter(|(e, _)| *e < 100_000).all(|(_, ev)| ev.is_none()), "no evidence during the warm-up");
        assert!(out.iter().filter(|(e, _)| *e >= 100_000).all(|(_, ev)| ev.is_some()), "evidence from the fit on");
        let Fit::Fitted(f) = &pca.fit else { panic!("not fitted: {:?}", pca.fit) };
        assert_eq!(f.mean.len(), 2);
        assert!(pca.warmup.is_empty(), "the recorded views are dropped after the fit");
        assert!(pca.recent.len() <= 5, "the ring covers one long view: {}", pca.recent.len());
        let normal = out.iter().filter_map(|p| p.1).fold(0.0, f64::max);
        // The same process continues: evidence near the warm-up's own (limits at its p99).
        assert!(normal < 2.5 * s.weight, "normal evidence {normal}");
        // A sustained level shift of 1.5 (5 times the warm-up's swing).
        let mut pca2 = WarmupPca::default();
        let shifted = run(&mut pca2, &s, (1..=200).map(|i| i * 1000), 100_000, |t| if t >= 150_000 { -1.5 } else { 0.0 });
        let late = shifted.iter().filter(|(e, _)| *e >= 160_000).filter_map(|p| p.1).fold(f64::INFINITY, f64::min);
        assert!(late > 10.0 * normal.max(s.weight), "a shifted level must stand out: {late} vs {normal}");
    }

    #[test]
    fn a_gap_leaves_the_window_without_a_long_view() {
        let s = settings(2);
        let mut pca = WarmupPca::default();
        run(&mut pca, &s, (1..=100).map(|i| i * 1000), 100_000, |_| 0.0);
        assert!(matches!(pca.fit, Fit::Fitted(_)));
        // The window 4 s before 110 s never closed (a gap): 110 s has no long view.
        let out = run(&mut pca, &s, [105_000, 110_000, 114_000].into_iter(), 0, |_| 5.0);
        assert_eq!(out[1].1, None, "no long view: the model alone");
        assert!(out[2].1.is_some_and(|e| e > 0.0), "114 s pairs with 110 s");
    }

    #[test]
    fn a_warm_up_that_never_ends_records_a_bounded_number_of_views() {
        let s = settings(1);
        let mut pca = WarmupPca::default();
        run(&mut pca, &s, (1..=MAX_WARMUP_VIEWS as i64 + 500).map(|i| i * 1000), i64::MAX, |_| 0.0);
        assert_eq!(pca.warmup.len(), MAX_WARMUP_VIEWS);
        assert_eq!(pca.fit, Fit::Collecting);
        assert_eq!(pca.recent.len(), 1);
    }

    #[test]
    fn a_warm_up_without_views_is_unavailable_for_good() {
        let s = settings(3);
        let mut pca = WarmupPca::default();
        // Warmed up at the very first window: nothing recorded.
        let out = run(&mut pca, &s, (1..=50).map(|i| i * 1000), 0, |_| 3.0);
        assert_eq!(pca.fit, Fit::Unavailable);
        assert!(out.iter().all(|(_, ev)| ev.is_none()));
    }

    /// Windows of two channels ending every 4 s (size 4 s, 4 slots): channel 0 is `ch0(end)` in
    /// every slot, channel 1 a slow wobble.
    fn feed(pca: &mut WarmupPca, s: &WarmupPcaSettings, baselines: &[(f64, f64)], windows: std::ops::RangeInclusive<i64>, warm_from: i64, ch0: impl Fn(i64) -> f64) -> Vec<Option<f64>> {
        windows
            .map(|i| {
                let e = i * 4000;
                let values: Vec<f64> = (0..4).flat_map(|slot| [ch0(e), ((i * 4 + slot) as f64 * 0.3).sin()]).collect();
                pca.observe(s, 4000, e, &values, baselines, i >= warm_from)
            })
            .collect()
    }

    #[test]
    fn extreme_finite_readings_neither_overflow_nor_poison_the_fit() {
        // Channel 0 alternates between ±f64::MAX window by window: finite readings (ingest takes
        // them) whose window sums overflow to +inf and −inf, and whose long view was NaN, which
        // made the fit's mean NaN and every later evidence NaN.
        let s = settings(2);
        let mut pca = WarmupPca::default();
        let alternating = |e: i64| if (e / 4000) % 2 == 0 { f64::MAX } else { -f64::MAX };
        let out = feed(&mut pca, &s, &[(0.0, 1.0), (0.0, 1.0)], 1..=200, 100, alternating);
        let Fit::Fitted(f) = &pca.fit else { panic!("not fitted: {:?}", pca.fit) };
        assert!(f.mean.iter().chain([&f.t2_limit, &f.q_limit]).all(|v| v.is_finite()), "{f:?}");
        assert!(out[99..].iter().all(|e| e.is_some_and(f64::is_finite)), "{:?}", &out[99..]);
    }

    #[test]
    fn a_baseline_that_is_not_finite_gives_no_fit_and_no_nan_evidence() {
        // A baseline broken by extreme readings (its Welford mean overflowed): the views' z is
        // NaN. The fit used to take them (NaN mean, evidence Some(NaN) for every window, so a NaN
        // score); now they are left out and the model alone scores the asset.
        let s = settings(2);
        let mut pca = WarmupPca::default();
        let out = feed(&mut pca, &s, &[(f64::NAN, 1.0), (0.0, 1.0)], 1..=150, 100, |e| (e as f64 * 1e-3).cos());
        assert_eq!(pca.fit, Fit::Unavailable);
        assert!(out.iter().all(Option::is_none), "{out:?}");
    }

    #[test]
    fn degenerate_warm_ups_fit_and_terminate() {
        // Every view identical (constant channels): a zero covariance, no component, limits at
        // their floor; the same view scores 0, a moved one is far beyond the limits.
        let identical = vec![vec![1.0, -2.0, 0.5]; 50];
        let f = fit(&identical, 0.99, 0.99).expect("fit");
        assert!(f.components.is_empty());
        assert_eq!((f.t2_limit, f.q_limit), (MIN_VARIANCE, MIN_VARIANCE));
        assert_eq!(f.t2_q(&[1.0, -2.0, 0.5]), (0.0, 0.0));
        assert!(f.t2_q(&[1.1, -2.0, 0.5]).1 / f.q_limit > 1e6);
        // One constant channel next to two moving together: rank one, Jacobi still converges.
        let z: Vec<Vec<f64>> = (0..100).map(|i| { let a = (i as f64 * 0.21).sin(); vec![a, 3.0, -a] }).collect();
        let f = fit(&z, 0.99, 0.99).expect("fit");
        assert_eq!(f.components.len(), 1);
        let m = z.iter().map(|v| v[0]).sum::<f64>() / 100.0;
        let var = z.iter().map(|v| (v[0] - m) * (v[0] - m)).sum::<f64>() / 100.0;
        assert!((f.variances[0] - 2.0 * var).abs() < 1e-9, "{:?} vs 2 x {var}", f.variances);
        let (values, vectors) = symmetric_eigen(vec![vec![0.0; 4]; 4]);
        assert_eq!(values, vec![0.0; 4]);
        assert_eq!(vectors.len(), 4);
    }

    #[test]
    fn a_fit_is_only_compared_with_views_of_its_own_span() {
        let mut pca = WarmupPca::default();
        run(&mut pca, &settings(2), (1..=100).map(|i| i * 1000), 100_000, |_| 0.0);
        let Fit::Fitted(f) = &pca.fit else { panic!("not fitted: {:?}", pca.fit) };
        assert_eq!(f.windows, 2);
        // `windows` raised to 4 after the fit (a restart with another config): the 16 s view is
        // not what the limits were taken on; it used to be scored against them all the same.
        let out = run(&mut pca, &settings(4), (101..=110).map(|i| i * 1000), 0, |_| 0.0);
        assert!(out.iter().all(|(_, e)| e.is_none()), "{out:?}");
        let out = run(&mut pca, &settings(2), (111..=112).map(|i| i * 1000), 0, |_| 0.0);
        assert!(out.iter().all(|(_, e)| e.is_some()), "{out:?}");
        // A fit written before the span was recorded loads, and is taken as the configured one.
        let mut value = ciborium::Value::serialized(&pca).unwrap();
        let before = format!("{value:?}");
        strip_key(&mut value, "windows");
        assert_ne!(format!("{value:?}"), before, "the field is named `windows`");
        let mut bytes = Vec::new();
        ciborium::ser::into_writer(&value, &mut bytes).unwrap();
        let mut old: WarmupPca = crate::store::from_cbor("asset_state", "x", &bytes).unwrap();
        assert!(matches!(&old.fit, Fit::Fitted(f) if f.windows == 0));
        // (From 116 s on: the ring then holds the windows 4 and 8 s back.)
        let out = run(&mut old, &settings(3), (113..=120).map(|i| i * 1000), 0, |_| 0.0);
        assert!(out[3..].iter().all(|(_, e)| e.is_some()), "{out:?}");
    }

    /// Removes every map entry named `key`, at any depth.
    fn strip_key(v: &mut ciborium::Value, key: &str) {
        match v {
            ciborium::Value::Map(m) => {
                m.retain(|(k, _)| k.as_text() != Some(key));
                m.iter_mut().for_each(|(_, v)| strip_key(v, key));
            }
            ciborium::Value::Array(a) => a.iter_mut().for_each(|v| strip_key(v, key)),
            _ => {}
        }
    }

    #[test]
    fn the_combined_error_weights_both_parts() {
        let e = LongViewEvidence { model_weight: 0.25, evidence: 0.5 };
        assert_eq!(e.combined_error(4.0, 2.0), 2.0);
    }
}
