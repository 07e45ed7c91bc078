//! The Numenta Anomaly Benchmark's scoring rules (NAB 1.x `sweeper.py` / `optimizer.py`),
//! reimplemented so `vigil eval nab` needs no Python.
//!
//! # Rules
//! * **Probation:** the first `min(floor(0.15 · rows), 750)` rows of a file are not scored.
//! * **Windows:** a labelled window `[start, end]` (timestamps that must occur in the data)
//!   covers rows `l..=r`, width `w = r − l + 1`. A row `i` inside it has the relative position
//!   `−(r − i + 1) / w` and the sweep score `tp · σ(pos) / σ(−1)`, where
//!   `σ(x) = 2 / (1 + e^{5x}) − 1` (the *scaled sigmoid*; `σ(x) = −1` for `x ≥ 3`).
//! * **False positives:** a row outside every window scores `fp · σ(|r_prev − i| / (w_prev − 1))`
//!   relative to the previous window (`σ(3) = −1` before the first window): a detection just
//!   after a window costs little, far away costs `fp`.
//! * **Per threshold:** every row with anomaly score `≥ threshold` is a detection. A window
//!   counts its best (earliest) detection's sweep score, or `−fn` if it has none; every
//!   detection outside windows adds its (negative) sweep score. The raw score is the sum.
//! * **Threshold sweep:** one threshold for the whole corpus, the best over every distinct
//!   anomaly score (and 1.1: nothing detected), per profile.
//! * **Normalisation:** `100 · (raw − null) / (perfect − null)`, where *null* is a detector that
//!   never fires (the score at threshold 1.1: each window `−fn`) and *perfect* = `tp` × windows
//!   (one detection on each window's first row), as NAB's `runner.normalize`. Windows count
//!   when at least one of their rows is past probation.
//!
//! Windows and timestamps are compared as epoch milliseconds.

use std::collections::HashMap;

/// A NAB cost profile.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Profile {
    pub name: &'static str,
    pub tp: f64,
    pub fp: f64,
    pub fn_: f64,
}

/// NAB's three published profiles.
pub const PROFILES: [Profile; 3] = [
    Profile { name: "standard", tp: 1.0, fp: 0.11, fn_: 1.0 },
    Profile { name: "reward_low_FP_rate", tp: 1.0, fp: 0.22, fn_: 1.0 },
    Profile { name: "reward_low_FN_rate", tp: 1.0, fp: 0.11, fn_: 2.0 },
];

/// Share of a file that is probation, and the row count it is capped at (0.15 · 5000).
pub const PROBATION_PERCENT: f64 = 0.15;

/// A labelled window that cannot be located in its file.
#[derive(Debug, thiserror::Error)]
#[error("{file}: window {which} timestamp {ms} ms does not occur in the data")]
pub struct WindowNotInData {
    pub file: String,
    pub which: &'static str,
    pub ms: i64,
}

/// One file: its timestamps, the detector's scores (one per row) and its labelled windows.
#[derive(Debug, Clone)]
pub struct ScoredFile {
    pub name: String,
    pub timestamps: Vec<i64>,
    pub scores: Vec<f64>,
    pub windows: Vec<(i64, i64)>,
}

/// A scorable row (after probation).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub score: f64,
    /// The row's weighted sweep score (positive in windows, negative outside).
    pub sweep: f64,
    /// Corpus-wide window id, `None` outside windows.
    pub window: Option<usize>,
}

/// NAB's scaled sigmoid of a relative position.
pub fn scaled_sigmoid(position: f64) -> f64 {
    if position >= 3.0 {
        -1.0
    } else {
        2.0 / (1.0 + (5.0 * position).exp()) - 1.0
    }
}

/// Rows of probation for a file of `rows` rows.
pub fn probation_length(rows: usize) -> usize {
    ((PROBATION_PERCENT * rows as f64).floor()).min(PROBATION_PERCENT * 5000.0) as usize
}

/// The scorable points of one file, with window ids starting at `window_base`; the scores come
/// from `scores` (so the null and perfect detectors reuse the geometry).
pub fn sweep(file: &ScoredFile, scores: &[f64], profile: &Profile, window_base: usize) -> Result<Vec<Point>, WindowNotInData> {
    let index = |ms: i64, which| {
        file.timestamps.iter().position(|&t| t == ms).ok_or_else(|| WindowNotInData { file: file.name.clone(), which, ms })
    };
    // (left, right) row indices per window.
    let mut bounds = Vec::with_capacity(file.windows.len());
    for &(start, end) in &file.windows {
        bounds.push((index(start, "start")?, index(end, "end")?));
    }
    let max_tp = scaled_sigmoid(-1.0);
    let probation = probation_length(file.timestamps.len());
    let mut points = Vec::with_capacity(file.timestamps.len().saturating_sub(probation));
    let mut next = 0usize;
    let mut current: Option<(usize, usize, f64)> = None; // (window index, right, width)
    let mut previous: Option<(usize, f64)> = None; // (right, width)
    for (i, &score) in scores.iter().enumerate() {
        if current.is_none() && next < bounds.len() && bounds[next].0 == i {
            let (l, r) = bounds[next];
            current = Some((next, r, (r as f64) - (l as f64) + 1.0));
            next += 1;
        }
        let (sweep, window) = match current {
            Some((w, r, width)) => {
                let position = -((r as f64) - (i as f64) + 1.0) / width;
                (scaled_sigmoid(position) * profile.tp / max_tp, Some(window_base + w))
            }
            None => {
                let position = match previous {
                    None => 3.0,
                    Some((r, width)) => (r as f64 - i as f64).abs() / (width - 1.0),
                };
                (scaled_sigmoid(position) * profile.fp, None)
            }
        };
        if i >= probation {
            points.push(Point { score, sweep, window });
        }
        if let Some((_, r, width)) = current {
            if i == r {
                previous = Some((r, width));
                current = None;
            }
        }
    }
    Ok(points)
}

/// The raw score at every threshold: `(threshold, score)` from the highest threshold (1.1,
/// nothing detected) down to the lowest anomaly score.
pub fn score_by_threshold(points: &[Point], profile: &Profile) -> Vec<(f64, f64)> {
    let mut sorted: Vec<&Point> = points.iter().collect();
    sorted.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut best_in_window: HashMap<usize, f64> = HashMap::new();
    for p in &sorted {
        if let Some(w) = p.window {
            best_in_window.insert(w, -profile.fn_);
        }
    }
    let mut windows_sum: f64 = -profile.fn_ * best_in_window.len() as f64;
    let mut fp_sum = 0.0;
    let mut threshold = 1.1;
    let mut out = Vec::new();
    for p in sorted {
        if p.score != threshold {
            out.push((threshold, windows_sum + fp_sum));
            threshold = p.score;
        }
        match p.window {
            None => fp_sum += p.sweep,
            Some(w) => {
                // Every window id in `sorted` was inserted above.
                let best = best_in_window.entry(w).or_insert(-profile.fn_);
                if p.sweep > *best {
                    windows_sum += p.sweep - *best;
                    *best = p.sweep;
                }
            }
        }
    }
    out.push((threshold, windows_sum + fp_sum));
    out
}

/// One profile's result over a corpus.
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileScore {
    pub profile: Profile,
    /// The best corpus-wide threshold.
    pub threshold: f64,
    pub raw: f64,
    pub null: f64,
    pub perfect: f64,
    /// `100 · (raw − null) / (perfect − null)`.
    pub normalised: f64,
    /// Windows detected at the threshold, of all scorable windows.
    pub windows_detected: usize,
    pub windows: usize,
    /// Rows outside windows at or above the threshold.
    pub false_positive_rows: usize,
}

/// Scores a corpus for one profile (the first, highest, threshold wins ties).
pub fn score_corpus(files: &[ScoredFile], profile: &Profile) -> Result<ProfileScore, WindowNotInData> {
    let mut detector = Vec::new();
    let mut base = 0;
    for f in files {
        detector.extend(sweep(f, &f.scores, profile, base)?);
        base += f.windows.len();
    }
    let by_threshold = score_by_threshold(&detector, profile);
    // The first entry is threshold 1.1: nothing detected.
    let null_score = by_threshold.first().map_or(0.0, |t| t.1);
    let (threshold, raw) = by_threshold.into_iter().fold((1.1, f64::NEG_INFINITY), |b, c| if c.1 > b.1 { c } else { b });
    let mut detected: Vec<usize> = detector.iter().filter(|p| p.score >= threshold).filter_map(|p| p.window).collect();
    detected.sort_unstable();
    detected.dedup();
    let mut windows: Vec<usize> = detector.iter().filter_map(|p| p.window).collect();
    windows.sort_unstable();
    windows.dedup();
    let perfect_score = profile.tp * windows.len() as f64;
    Ok(ProfileScore {
        profile: *profile,
        threshold,
        raw,
        null: null_score,
        perfect: perfect_score,
        normalised: 100.0 * (raw - null_score) / (perfect_score - null_score),
        windows_detected: detected.len(),
        windows: windows.len(),
        false_positive_rows: detector.iter().filter(|p| p.window.is_none() && p.score >= threshold).count(),
    })
}

/// One labelled window of a file at a threshold (what `vigil eval nab --details` prints).
#[derive(Debug, Clone, PartialEq)]
pub struct WindowDetail {
    /// The earliest detection's reward in the standard profile (NAB's scaled sigmoid over
    /// `σ(−1)`: 1 at the window's first row, 0.86 at its middle, 0 at its last), `None` if missed.
    pub reward: Option<f64>,
    /// The highest anomaly score on the window's scorable rows.
    pub max_score: f64,
}

/// One file at a threshold: its scorable windows in order, and its false-positive rows.
#[derive(Debug, Clone, PartialEq)]
pub struct FileDetail {
    pub name: String,
    pub windows: Vec<WindowDetail>,
    /// Rows (0-based data rows, header not counted) outside windows at or above the threshold.
    pub false_positive_rows: Vec<usize>,
}

/// Where `file`'s detections fall at `threshold`: which windows are found how early, which are
/// missed (with the score that would have found them), and which rows are false positives —
/// the per-file view behind a corpus score. Windows wholly inside probation are left out, as
/// NAB leaves them out.
pub fn details(file: &ScoredFile, threshold: f64) -> Result<FileDetail, WindowNotInData> {
    let standard = &PROFILES[0];
    let points = sweep(file, &file.scores, standard, 0)?;
    // `sweep` returns the rows from the end of probation on, in order.
    let first_row = probation_length(file.timestamps.len());
    let mut windows: Vec<WindowDetail> = Vec::new();
    let mut current: Option<usize> = None;
    let mut false_positive_rows = Vec::new();
    for (k, p) in points.iter().enumerate() {
        match p.window {
            None => {
                current = None;
                if p.score >= threshold {
                    false_positive_rows.push(first_row + k);
                }
            }
            Some(w) => {
                if current != Some(w) {
                    current = Some(w);
                    windows.push(WindowDetail { reward: None, max_score: f64::NEG_INFINITY });
                }
                // The push above made `windows` non-empty.
                if let Some(d) = windows.last_mut() {
                    d.max_score = d.max_score.max(p.score);
                    if d.reward.is_none() && p.score >= threshold {
                        d.reward = Some(p.sweep / standard.tp);
                    }
                }
            }
        }
    }
    Ok(FileDetail { name: file.name.clone(), windows, false_positive_rows })
}

#[cfg(test)]
mod tests {
    use super::*;

    const STANDARD: Profile = PROFILES[0];

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn scaled_sigmoid_published_values() {
        // NAB's docstring: -1 -> 0.98661, -0.5 -> 0.84828, 0 -> 0, 1 -> -0.98661, >= 3 -> -1.
        assert!((scaled_sigmoid(-1.0) - 0.98661).abs() < 1e-5);
        assert!((scaled_sigmoid(-0.5) - 0.84828).abs() < 1e-5);
        assert_eq!(scaled_sigmoid(0.0), 0.0);
        assert!((scaled_sigmoid(1.0) + 0.98661).abs() < 1e-5);
        assert_eq!(scaled_sigmoid(3.0), -1.0);
    }

    #[test]
    fn probation_is_fifteen_percent_capped_at_750() {
        assert_eq!(probation_length(10), 1);
        assert_eq!(probation_length(4032), 604);
        assert_eq!(probation_length(22_695), 750);
    }

    /// 10 rows at t = 0..9, one window covering rows 5..=7; probation = 1 row.
    fn file(scores: Vec<f64>) -> ScoredFile {
        ScoredFile { name: "f.csv".into(), timestamps: (0..10).collect(), scores, windows: vec![(5, 7)] }
    }

    #[test]
    fn sweep_scores_by_hand() {
        let f = file(vec![0.0; 10]);
        let pts = sweep(&f, &f.scores, &STANDARD, 0).unwrap();
        assert_eq!(pts.len(), 9, "row 0 is probation");
        // Rows 1..=4 precede every window: fp · σ(3) = -0.11.
        for p in &pts[0..4] {
            assert!(close(p.sweep, -0.11) && p.window.is_none());
        }
        // Row 5 (window start): position -1 -> tp exactly; row 6: -2/3; row 7: -1/3.
        assert!(close(pts[4].sweep, 1.0));
        assert!(close(pts[5].sweep, (2.0 / (1.0 + (-10.0f64 / 3.0).exp()) - 1.0) / scaled_sigmoid(-1.0)));
        assert!(close(pts[6].sweep, 0.682_261_790_238_169_8 / 0.986_614_298_151_430_5));
        // Rows 8, 9 after the window (right 7, width 3): positions 1/2 and 1.
        assert!(close(pts[7].sweep, 0.11 * -0.848_283_639_957_512_9));
        assert!(close(pts[8].sweep, 0.11 * -0.986_614_298_151_430_3));
        assert_eq!(pts[6].window, Some(0));
    }

    #[test]
    fn threshold_sweep_and_normalisation_by_hand() {
        // Row 6 (in the window) scores 0.9, row 2 (before it) 0.5, the rest 0.
        let mut scores = vec![0.0; 10];
        scores[6] = 0.9;
        scores[2] = 0.5;
        let f = file(scores);
        let pts = sweep(&f, &f.scores, &STANDARD, 0).unwrap();
        let by = score_by_threshold(&pts, &STANDARD);
        let tp6 = (2.0 / (1.0 + (-10.0f64 / 3.0).exp()) - 1.0) / scaled_sigmoid(-1.0);
        assert_eq!(by.len(), 4);
        assert_eq!(by[0], (1.1, -1.0)); // nothing detected: the window is missed
        assert!(by[1].0 == 0.9 && close(by[1].1, tp6));
        assert!(by[2].0 == 0.5 && close(by[2].1, tp6 - 0.11));
        // Everything: window best is row 5 (1.0); FPs: 4 × -0.11 and rows 8, 9.
        let all = 1.0 - 0.44 + 0.11 * (-0.848_283_639_957_512_9 - 0.986_614_298_151_430_3);
        assert!(by[3].0 == 0.0 && close(by[3].1, all));
        let s = score_corpus(&[f], &STANDARD).unwrap();
        assert_eq!(s.threshold, 0.9);
        assert!(close(s.null, -1.0) && close(s.perfect, 1.0));
        assert!(close(s.normalised, 100.0 * (tp6 + 1.0) / 2.0));
        assert_eq!((s.windows_detected, s.windows, s.false_positive_rows), (1, 1, 0));
    }

    #[test]
    fn low_fn_profile_doubles_the_miss() {
        // Only row 7 (the window's last row, position -1/3) fires.
        let mut scores = vec![0.0; 10];
        scores[7] = 0.9;
        let late = 0.682_261_790_238_169_8 / 0.986_614_298_151_430_5;
        let standard = score_corpus(&[file(scores.clone())], &STANDARD).unwrap();
        let low_fn = score_corpus(&[file(scores)], &PROFILES[2]).unwrap();
        assert_eq!((standard.threshold, low_fn.threshold), (0.9, 0.9));
        // null: -fn per window; perfect: tp per window.
        assert!(close(standard.null, -1.0) && close(standard.perfect, 1.0));
        assert!(close(low_fn.null, -2.0) && close(low_fn.perfect, 1.0));
        assert!(close(standard.normalised, 100.0 * (late + 1.0) / 2.0));
        assert!(close(low_fn.normalised, 100.0 * (late + 2.0) / 3.0));
    }

    #[test]
    fn details_name_the_found_and_missed_windows_and_the_false_positive_rows() {
        // 40 rows (probation 6), windows on rows 10..=19 and 30..=39; detections at row 8
        // (before the first window), 15 (its middle) and 25; row 33 below the threshold.
        let mut scores = vec![0.0; 40];
        scores[8] = 0.9;
        scores[15] = 0.6;
        scores[25] = 0.7;
        scores[33] = 0.3;
        let f = ScoredFile { name: "f.csv".into(), timestamps: (0..40).collect(), scores, windows: vec![(10, 19), (30, 39)] };
        let d = details(&f, 0.5).unwrap();
        assert_eq!(d.false_positive_rows, vec![8, 25]);
        assert_eq!(d.windows.len(), 2);
        // Row 15 of 10..=19: position -(19 - 15 + 1) / 10 = -0.5.
        let reward = d.windows[0].reward.unwrap();
        assert!(close(reward, scaled_sigmoid(-0.5) / scaled_sigmoid(-1.0)), "{reward}");
        assert_eq!(d.windows[0].max_score, 0.6);
        assert_eq!(d.windows[1], WindowDetail { reward: None, max_score: 0.3 });
    }

    #[test]
    fn windows_get_corpus_wide_ids_and_missing_timestamps_are_errors() {
        let a = file(vec![0.0; 10]);
        let pts = sweep(&a, &a.scores, &STANDARD, 7).unwrap();
        assert_eq!(pts[4].window, Some(7));
        let bad = ScoredFile { windows: vec![(5, 70)], ..a };
        let e = sweep(&bad, &bad.scores, &STANDARD, 0).unwrap_err();
        assert_eq!((e.which, e.ms), ("end", 70));
    }
}
