//! Detection quality measured with public benchmarks' own rules, through [`crate::replay`]
//! (the live pipeline's code), never a separate scorer.
//!
//! * [`nab`] — the Numenta Anomaly Benchmark's scoring; [`run_nab`] replays a NAB corpus
//!   (`data/<category>/<name>.csv` + `labels/combined_windows.json`), writes NAB result files
//!   and scores the three profiles. Generic: it runs unchanged on any corpus in that layout.
//! * [`skab`] — the Skoltech Anomaly Benchmark's outlier-detection rules; [`skab::run_skab`]
//!   replays every labelled file of a SKAB folder as a new asset and reports F1, false- and
//!   missed-alarm rates per group and overall.

pub mod nab;
pub mod skab;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::replay::{parse_timestamp, ReplayError, ReplayOptions, Replayer, WindowChoice};

/// Errors of `vigil eval`.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    Replay(#[from] ReplayError),
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: {reason}", path.display())]
    Labels { path: PathBuf, reason: String },
    #[error(transparent)]
    Window(#[from] nab::WindowNotInData),
}

/// Half of a corpus: the files at even or odd (0-based) positions of the sorted label list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Half {
    Even,
    Odd,
}

/// What `vigil eval nab` measured.
#[derive(Debug, Clone)]
pub struct NabReport {
    pub files: usize,
    pub rows: usize,
    pub windows_scored: u64,
    /// Time spent replaying (model load excluded).
    pub replay_time: Duration,
    pub scores: Vec<nab::ProfileScore>,
    /// Per file, at `details_threshold`: found and missed windows, false positives.
    pub details: Vec<nab::FileDetail>,
    /// The standard profile's threshold.
    pub details_threshold: f64,
}

/// Replays every file named in `<data>/labels/combined_windows.json` (from `<data>/data/`; with
/// `half`, only that half of them),
/// writes `<out>/<category>/vigil_<name>.csv` (`timestamp,anomaly_score`, one row per data row)
/// when `out` is given, and scores the corpus for NAB's three profiles.
pub fn run_nab(config: &Config, data: &Path, out: Option<&Path>, window: WindowChoice, half: Option<Half>) -> Result<NabReport, EvalError> {
    let labels_path = data.join("labels/combined_windows.json");
    let text = std::fs::read_to_string(&labels_path).map_err(|source| EvalError::Io { path: labels_path.clone(), source })?;
    let labels: BTreeMap<String, Vec<(String, String)>> =
        serde_json::from_str(&text).map_err(|e| EvalError::Labels { path: labels_path.clone(), reason: e.to_string() })?;
    let mut replayer = Replayer::new(config)?;
    let mut files = Vec::with_capacity(labels.len());
    let mut report = NabReport { files: 0, rows: 0, windows_scored: 0, replay_time: Duration::ZERO, scores: Vec::new(), details: Vec::new(), details_threshold: 1.1 };
    let chosen = labels.iter().enumerate().filter(|(i, _)| match half {
        None => true,
        Some(Half::Even) => i % 2 == 0,
        Some(Half::Odd) => i % 2 == 1,
    });
    for (_, (name, windows)) in chosen {
        let mut parsed = Vec::with_capacity(windows.len());
        for (start, end) in windows {
            let ms = |s: &str| {
                parse_timestamp(s).ok_or_else(|| EvalError::Labels { path: labels_path.clone(), reason: format!("{name}: bad window timestamp `{s}`") })
            };
            parsed.push((ms(start)?, ms(end)?));
        }
        let path = data.join("data").join(name);
        let input = std::fs::File::open(&path).map_err(|source| EvalError::Io { path: path.clone(), source })?;
        let opts = ReplayOptions {
            timestamp_column: Some("timestamp".into()),
            columns: vec![("value".into(), name.clone())],
            separator: b',',
            window,
        };
        let mut result = match out {
            Some(dir) => {
                let (category, file) = name.rsplit_once('/').unwrap_or(("", name.as_str()));
                let target = dir.join(category).join(format!("vigil_{file}"));
                let io = |source| EvalError::Io { path: target.clone(), source };
                if let Some(parent) = target.parent() {
                    std::fs::create_dir_all(parent).map_err(io)?;
                }
                let mut w = std::io::BufWriter::new(std::fs::File::create(&target).map_err(io)?);
                writeln!(w, "timestamp,anomaly_score").map_err(io)?;
                Some((target.clone(), w))
            }
            None => None,
        };
        let (mut timestamps, mut scores) = (Vec::new(), Vec::new());
        let started = Instant::now();
        let summary = replayer.replay(&path.display().to_string(), std::io::BufReader::new(input), &opts, |row| {
            timestamps.push(row.event_time_ms);
            scores.push(row.score);
            match &mut result {
                Some((_, w)) => writeln!(w, "{},{:.6}", row.timestamp, row.score),
                None => Ok(()),
            }
        })?;
        report.replay_time += started.elapsed();
        if let Some((target, mut w)) = result {
            w.flush().map_err(|source| EvalError::Io { path: target, source })?;
        }
        report.files += 1;
        report.rows += summary.rows;
        report.windows_scored += summary.windows_scored;
        files.push(nab::ScoredFile { name: name.clone(), timestamps, scores, windows: parsed });
    }
    for profile in &nab::PROFILES {
        report.scores.push(nab::score_corpus(&files, profile)?);
    }
    // PROFILES[0] is the standard profile, scored first.
    report.details_threshold = report.scores.first().map_or(1.1, |s| s.threshold);
    report.details = files.iter().map(|f| nab::details(f, report.details_threshold)).collect::<Result<_, _>>()?;
    Ok(report)
}
