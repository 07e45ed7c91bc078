//! The Skoltech Anomaly Benchmark's outlier-detection evaluation (SKAB, `waico/SKAB`), through
//! [`crate::replay`] — the live pipeline's code.
//!
//! # Protocol and rules
//! * **Files:** every `<data>/<group>/*.csv` (`;`-separated, a `datetime` column, the value
//!   columns, an `anomaly` label column of 0/1) is one run of one machine. Files without the
//!   label column (SKAB's `anomaly-free/`) are training data and are skipped.
//! * **Training / test split:** SKAB trains on the first `train_rows` (400) rows of each file and
//!   tests on the rest. Here the whole file is replayed in event time as a *new asset*: the
//!   first rows are the asset's warm-up (the manifest's `normalisation.warmup`, which must not
//!   exceed `train_rows`, so the per-file calibration sees only training rows), and the replay
//!   is causal (a row's output depends only on that row and the rows before it). The model itself was
//!   trained without the test rows (see its model card).
//! * **Detection:** a row is detected as anomalous when an alert is raised for its asset as of
//!   that row (the alert stage's hysteresis, as live: `alerts.raise_after`, `clear_after`).
//! * **Scoring (point-wise on the test rows, SKAB's `binary` metric):** TP, FP, FN, TN over all
//!   test rows; F1 = 2·TP / (2·TP + FP + FN); false-alarm rate FAR = FP / (FP + TN); missed-alarm
//!   rate MAR = FN / (FN + TP). Reported per group (sub-directory) and overall (all files'
//!   test rows pooled, as SKAB's leaderboard).
//!
//! Generic: any folder of files in that format runs unchanged; the value columns are the
//! configured assets' channels (column name = channel entity id).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::EvalError;
use crate::config::Config;
use crate::replay::{ReplayOptions, Replayer, WindowChoice};

/// SKAB's training part: the first rows of every file.
pub const TRAIN_ROWS: usize = 400;
/// The label column.
pub const LABEL_COLUMN: &str = "anomaly";
/// The timestamp column.
pub const TIMESTAMP_COLUMN: &str = "datetime";

/// Confusion counts over test rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub tp: u64,
    pub fp: u64,
    pub fn_: u64,
    pub tn: u64,
}

impl Counts {
    pub fn add(&mut self, o: &Counts) {
        self.tp += o.tp;
        self.fp += o.fp;
        self.fn_ += o.fn_;
        self.tn += o.tn;
    }

    pub fn record(&mut self, detected: bool, anomalous: bool) {
        match (detected, anomalous) {
            (true, true) => self.tp += 1,
            (true, false) => self.fp += 1,
            (false, true) => self.fn_ += 1,
            (false, false) => self.tn += 1,
        }
    }

    fn ratio(a: u64, b: u64) -> f64 {
        if b == 0 {
            0.0
        } else {
            a as f64 / b as f64
        }
    }

    /// 2·TP / (2·TP + FP + FN) (0 when there is nothing to find and nothing found).
    pub fn f1(&self) -> f64 {
        Self::ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn_)
    }

    /// False-alarm rate FP / (FP + TN).
    pub fn far(&self) -> f64 {
        Self::ratio(self.fp, self.fp + self.tn)
    }

    /// Missed-alarm rate FN / (FN + TP).
    pub fn mar(&self) -> f64 {
        Self::ratio(self.fn_, self.fn_ + self.tp)
    }
}

/// What `vigil eval skab` measured.
#[derive(Debug, Clone, Default)]
pub struct SkabReport {
    pub files: usize,
    pub rows: usize,
    pub windows_scored: u64,
    /// Time spent replaying (model load excluded).
    pub replay_time: Duration,
    /// Per file (`group/name.csv`), in path order.
    pub per_file: Vec<(String, Counts)>,
    /// Per group (sub-directory).
    pub groups: BTreeMap<String, Counts>,
    pub overall: Counts,
    /// Files without a label column (training data), skipped.
    pub skipped: Vec<String>,
}

/// Replays every labelled file under `data` (one level of sub-directories), writes
/// `<out>/<group>/<name>.csv` (`datetime,score,band,alert,anomaly` per row) when `out` is given,
/// and counts detections on the test rows.
pub fn run_skab(config: &Config, data: &Path, out: Option<&Path>, window: WindowChoice) -> Result<SkabReport, EvalError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| EvalError::Io { path: path.clone(), source }
    };
    let mut files: Vec<PathBuf> = Vec::new();
    for group in std::fs::read_dir(data).map_err(io(data))? {
        let group = group.map_err(io(data))?.path();
        if !group.is_dir() {
            continue;
        }
        for f in std::fs::read_dir(&group).map_err(io(&group))? {
            let f = f.map_err(io(&group))?.path();
            if f.extension().is_some_and(|e| e == "csv") {
                files.push(f);
            }
        }
    }
    // Numeric file names sort numerically (valve1/2.csv before valve1/10.csv).
    files.sort_by_key(|p| {
        let stem = p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        (p.parent().map(Path::to_path_buf), stem.parse::<u64>().ok(), stem)
    });
    let mut replayer = Replayer::new(config)?;
    let warmup = replayer.runtime().manifest().normalisation.warmup as usize;
    if warmup > TRAIN_ROWS {
        return Err(EvalError::Labels {
            path: data.to_path_buf(),
            reason: format!("the model's warm-up ({warmup} readings) is longer than SKAB's training part ({TRAIN_ROWS} rows): the calibration would see test rows"),
        });
    }
    let mut report = SkabReport::default();
    for path in files {
        let text = std::fs::read_to_string(&path).map_err(io(&path))?;
        let group = path.parent().and_then(|p| p.file_name()).map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let name = format!("{group}/{}", path.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default());
        let Some(labels) = labels(&text, &path)? else {
            report.skipped.push(name);
            continue;
        };
        let opts = ReplayOptions { timestamp_column: Some(TIMESTAMP_COLUMN.into()), columns: Vec::new(), separator: b';', window };
        let mut writer = match out {
            Some(dir) => {
                let target = dir.join(&name);
                if let Some(parent) = target.parent() {
                    std::fs::create_dir_all(parent).map_err(io(parent))?;
                }
                let mut w = std::io::BufWriter::new(std::fs::File::create(&target).map_err(io(&target))?);
                writeln!(w, "datetime,score,band,alert,anomaly").map_err(io(&target))?;
                Some((target, w))
            }
            None => None,
        };
        let mut counts = Counts::default();
        let mut row = 0usize;
        let started = Instant::now();
        let summary = replayer.replay(&path.display().to_string(), text.as_bytes(), &opts, |r| {
            // `labels` has one entry per non-empty data line, as the replay emits rows.
            let anomalous = labels.get(row).copied().unwrap_or(false);
            if row >= TRAIN_ROWS {
                counts.record(r.alert, anomalous);
            }
            row += 1;
            match &mut writer {
                Some((_, w)) => writeln!(
                    w,
                    "{},{:.6},{},{},{}",
                    r.timestamp,
                    r.score,
                    r.band.map_or("none", crate::alerts::band_name),
                    u8::from(r.alert),
                    u8::from(anomalous)
                ),
                None => Ok(()),
            }
        })?;
        report.replay_time += started.elapsed();
        if let Some((target, mut w)) = writer {
            w.flush().map_err(io(&target))?;
        }
        report.files += 1;
        report.rows += summary.rows;
        report.windows_scored += summary.windows_scored;
        report.groups.entry(group).or_default().add(&counts);
        report.overall.add(&counts);
        report.per_file.push((name, counts));
    }
    Ok(report)
}

/// The `anomaly` column of a SKAB file, one entry per non-empty data line; `None` when the
/// file has no such column.
fn labels(text: &str, path: &Path) -> Result<Option<Vec<bool>>, EvalError> {
    let mut lines = text.lines().enumerate();
    let Some((_, header)) = lines.next() else { return Ok(None) };
    let Some(col) = header.split(';').position(|c| c.trim().trim_matches('"') == LABEL_COLUMN) else {
        return Ok(None);
    };
    let mut out = Vec::new();
    for (i, line) in lines {
        if line.trim().is_empty() {
            continue;
        }
        let cell = line.split(';').nth(col).map(str::trim).unwrap_or("");
        match cell.parse::<f64>() {
            Ok(v) if v == 0.0 || v == 1.0 => out.push(v == 1.0),
            _ => {
                return Err(EvalError::Labels {
                    path: path.to_path_buf(),
                    reason: format!("line {}: label `{cell}` in column `{LABEL_COLUMN}` is not 0 or 1", i + 1),
                })
            }
        }
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_follow_skab_definitions() {
        let mut c = Counts::default();
        for (d, a, n) in [(true, true, 6), (true, false, 2), (false, true, 4), (false, false, 8)] {
            for _ in 0..n {
                c.record(d, a);
            }
        }
        assert_eq!(c, Counts { tp: 6, fp: 2, fn_: 4, tn: 8 });
        assert!((c.f1() - 12.0 / 18.0).abs() < 1e-12);
        assert!((c.far() - 0.2).abs() < 1e-12);
        assert!((c.mar() - 0.4).abs() < 1e-12);
        assert_eq!(Counts::default().f1(), 0.0);
    }

    #[test]
    fn labels_are_read_per_data_line() {
        let text = "datetime;a;anomaly;changepoint\n2020-01-01 00:00:00;1;0.0;0\n\n2020-01-01 00:00:01;2;1.0;1\n";
        assert_eq!(labels(text, Path::new("x.csv")).unwrap(), Some(vec![false, true]));
        assert_eq!(labels("datetime;a\n2020-01-01 00:00:00;1\n", Path::new("x.csv")).unwrap(), None);
        let err = labels("datetime;anomaly\n2020-01-01 00:00:00;maybe\n", Path::new("x.csv")).unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
    }
}
