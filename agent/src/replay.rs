//! `vigil replay`: a recorded CSV stream through the live pipeline's code, in event time, as
//! fast as the machine allows.
//!
//! # Invariants
//! * **Same code path as live.** Every row becomes [`Reading`]s (one per mapped value column,
//!   source `replay`) that go through [`Worker::apply`] — admission, windows, features,
//!   normalisation —, the micro-batched TF Lite scoring of the inference stage
//!   ([`batcher::score_batch`]) and the alert stage's hysteresis ([`Evaluator`]). There is no
//!   separate offline scorer; only the commit log, the threads and the publishers are left
//!   out (nothing is persisted or published).
//! * **Deterministic.** One thread, rows in file order, batches cut at `inference.max_batch`
//!   windows (never by wall-clock time), per-row results written only after their windows are
//!   scored. The same input and model give byte-identical output.
//! * **One output row per input row**, in input order: the row's timestamp exactly as read, its
//!   values, then the score, band and alert flag of the windows the row's readings closed
//!   (with several value columns: the highest score and band, and whether any of them has a
//!   raised alert). A window `(end − size, end]` is closed by the first reading at or after its
//!   end (the replay's allowed lateness is 0): a reading on the window grid closes the window
//!   it is the newest reading of, so its row's score includes it; a reading between grid points
//!   is scored in the row of the next one at or after the window's end. (An asset's window
//!   closes at its end once every channel has a reading there, else with the first reading
//!   after it: a row with an empty cell does not close its own.) An entity's windows are
//!   emitted only when they hold a new reading (as live, [`crate::pipeline::window`]); a
//!   reading after a gap can close two: the window of the last reading before the gap, when
//!   that one was between grid points, and its own (if it is on the grid). An asset's windows
//!   are emitted every hop while any reading is in view. The row gets the highest of their
//!   scores (the live agent evaluates each, so a detection in any must show: the latest alone
//!   would hide a spike just before the gap). A row that closed no window repeats its
//!   entity's latest result. Rows before an entity's first scored window
//!   (the model's warm-up) get score 0 and band `none`.
//! * **Assets.** With a multivariate model (manifest `kind = "multivariate"`) the value
//!   columns are the channels of the assets in `pipeline.assets` (column name = channel entity
//!   id, unless `--entity` maps them), joined per asset exactly as live
//!   ([`crate::pipeline::asset`]); a row's score is its asset's.
//! * **Window geometry.** Recorded data has its own sampling (NAB: 5-minute and irregular
//!   series). With [`WindowChoice::Auto`] (the default) the window size is `model window slots
//!   ×` the file's median positive timestamp step, so every model slot sees about one reading
//!   whatever the sampling; the hop is the steps' resolution (their greatest common divisor:
//!   the median step for a regular file) and the grid's phase (`offset`) the rows' common one,
//!   so every reading closes the window ending at its own time — the only one emitted for it,
//!   since windows without a new reading are not ([`crate::pipeline::window`]). Assets keep
//!   hop = the median step on the rows' most common phase (their windows are emitted every
//!   hop); see `auto_geometry`.
//!   [`WindowChoice::Config`] keeps `pipeline.window`.
//! * **Bad input is an error, never a panic:** a row with an unparsable timestamp or value, or
//!   with a value the live sources would dead-letter (not finite, or beyond
//!   `validation.max_abs_value`: the same check), fails the replay with `file:line: reason`.
//!   An empty cell is a missing value (that column has no reading in that row).

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Receiver};

use crate::agent::{load_model, AgentError};
use crate::alerts::{band_name, Evaluation, Evaluator, Policy};
use crate::config::{Config, LatePolicy};
use crate::inference::batcher::{score_batch, Scratch, ScoredWindow};
use crate::inference::lifecycle::Slot;
use crate::inference::manifest::{Band, ModelKind};
use crate::inference::ModelRuntime;
use crate::metrics::Metrics;
use crate::pipeline::window::Geometry;
use crate::pipeline::warmup_pca::WarmupPcaSettings;
use crate::pipeline::{Stage, WindowJob, Worker, WorkerMsg, WorkerSettings};
use crate::reading::{Quality, Reading, SourceKind};

/// Errors of `vigil replay` and of the evaluations built on it.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Agent(#[from] AgentError),
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path}:{line}: {reason}")]
    BadRow { path: String, line: usize, reason: String },
    #[error("{path}: {reason}")]
    BadInput { path: String, reason: String },
}

/// How the replay chooses its window geometry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WindowChoice {
    /// Size = model width × the input's median positive timestamp step, hop = the steps'
    /// resolution, phase = the rows' common one, lateness 0 ([`auto_geometry`]).
    #[default]
    Auto,
    /// `pipeline.window` from the config, as the live agent uses it.
    Config,
}

/// What to replay from one CSV file.
#[derive(Debug, Clone, Default)]
pub struct ReplayOptions {
    /// The timestamp column (default: the first column).
    pub timestamp_column: Option<String>,
    /// `(column, entity id)` pairs; empty: every other column, entity id = column name.
    pub columns: Vec<(String, String)>,
    /// The CSV field separator (`,` for NAB, `;` for SKAB).
    pub separator: u8,
    pub window: WindowChoice,
}

/// One output row.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayRow {
    /// The timestamp as read.
    pub timestamp: String,
    pub event_time_ms: i64,
    /// One per mapped column; `None` for an empty cell.
    pub values: Vec<Option<f64>>,
    /// In [0, 1), rounded to 6 decimals (what the CSV holds).
    pub score: f64,
    /// `None` before the first scored window.
    pub band: Option<Band>,
    /// An alert is raised for one of the row's entities.
    pub alert: bool,
}

/// What a replay did.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReplaySummary {
    pub rows: usize,
    pub readings: u64,
    pub windows_scored: u64,
    pub batches: u64,
    /// Readings at or before a closed window's end (out-of-order input): not in any window.
    pub late: u64,
    pub hop_ms: i64,
    pub size_ms: i64,
    /// The grid's phase (`pipeline.window.offset_ms`).
    pub offset_ms: i64,
    pub elapsed: Duration,
}

/// A loaded model plus the alert policy: replays any number of files (each from fresh state).
pub struct Replayer {
    slot: Slot,
    config: Config,
    policy: Policy,
}

/// The latest scored window of one entity.
#[derive(Debug, Clone, Copy)]
struct Latest {
    score: f64,
    band: Band,
    raised: bool,
}

impl Latest {
    /// Two results that make one row (two windows, or two columns): the higher score and band,
    /// raised if either is.
    fn higher(a: Option<Latest>, b: Option<Latest>) -> Option<Latest> {
        match (a, b) {
            (Some(a), Some(b)) => Some(Latest { score: a.score.max(b.score), band: a.band.max(b.band), raised: a.raised || b.raised }),
            (a, None) => a,
            (None, b) => b,
        }
    }
}

/// A row waiting for its batch to be scored: per column, which results make its score.
struct PendingRow {
    row: ReplayRow,
    refs: Vec<Ref>,
}

/// Where one column's result for a row comes from.
enum Ref {
    /// The row closed windows of the column's entity (or asset), `entity`: those at batch
    /// indices `from..to`.
    Closed { entity: Arc<str>, from: usize, to: usize },
    /// It closed none: the entity's latest window, still in the batch.
    Pending(usize),
    /// It closed none: the entity's latest result (`None` before its first scored window).
    Done(Option<Latest>),
}

impl Replayer {
    /// Loads and verifies the configured model.
    pub fn new(config: &Config) -> Result<Replayer, ReplayError> {
        let runtime = load_model(config)?;
        let policy = Policy::new(config);
        let slot = Slot::new(runtime, &config.alerts, None);
        Ok(Replayer { slot, config: config.clone(), policy })
    }

    pub fn runtime(&self) -> &ModelRuntime {
        &self.slot.runtime
    }

    /// Replays the CSV in `input` (named `path` in errors); calls `emit` once per input row,
    /// in order.
    pub fn replay(
        &mut self,
        path: &str,
        input: impl BufRead,
        opts: &ReplayOptions,
        mut emit: impl FnMut(&ReplayRow) -> std::io::Result<()>,
    ) -> Result<ReplaySummary, ReplayError> {
        let started = Instant::now();
        let io = |source| ReplayError::Io { path: path.to_string(), source };
        let sep = if opts.separator == 0 { ',' } else { opts.separator as char };
        let mut lines = input.lines();
        let header = match lines.next() {
            Some(h) => h.map_err(io)?,
            None => return Err(ReplayError::BadInput { path: path.into(), reason: "empty file (no header row)".into() }),
        };
        let names: Vec<&str> = header.split(sep).map(|s| s.trim().trim_matches('"')).collect();
        let find = |c: &str| {
            names.iter().position(|n| *n == c).ok_or_else(|| ReplayError::BadInput {
                path: path.into(),
                reason: format!("no column `{c}` in the header ({})", names.join(", ")),
            })
        };
        let ts_col = match &opts.timestamp_column {
            Some(c) => find(c)?,
            None => 0,
        };
        let routing = crate::agent::asset_routing(&self.config, self.slot.runtime.manifest())?;
        let multivariate = self.slot.runtime.manifest().kind == ModelKind::Multivariate;
        let columns: Vec<(usize, Arc<str>)> = if opts.columns.is_empty() && multivariate {
            // The configured assets' channels, by column name.
            let mut cols = Vec::new();
            for a in &self.config.pipeline.assets {
                for c in &a.channels {
                    cols.push((find(c)?, Arc::from(c.as_str())));
                }
            }
            cols
        } else if opts.columns.is_empty() {
            names.iter().enumerate().filter(|(i, _)| *i != ts_col).map(|(i, n)| (i, Arc::from(*n))).collect()
        } else {
            opts.columns.iter().map(|(c, e)| Ok((find(c)?, Arc::from(e.as_str())))).collect::<Result<_, ReplayError>>()?
        };
        if columns.is_empty() {
            return Err(ReplayError::BadInput { path: path.into(), reason: "no value column".into() });
        }

        // Parse every row first: the automatic geometry needs the sampling step.
        let mut rows: Vec<ReplayRow> = Vec::new();
        for (i, line) in lines.enumerate() {
            let line = line.map_err(io)?;
            let lineno = i + 2;
            if line.trim().is_empty() {
                continue;
            }
            let bad = |reason: String| ReplayError::BadRow { path: path.into(), line: lineno, reason };
            let cells: Vec<&str> = line.split(sep).map(|s| s.trim().trim_matches('"')).collect();
            let ts = cells.get(ts_col).ok_or_else(|| bad("no timestamp cell".into()))?;
            let t = parse_timestamp(ts).ok_or_else(|| bad(format!("unparsable timestamp `{ts}`")))?;
            let mut values = Vec::with_capacity(columns.len());
            for (c, _) in &columns {
                let cell = cells.get(*c).copied().unwrap_or("");
                if cell.is_empty() {
                    values.push(None);
                    continue;
                }
                let v = cell.parse::<f64>().map_err(|_| bad(format!("value `{cell}` in column `{}` is not a number", names[*c])))?;
                // The live sources' value check (finite, within `validation.max_abs_value`).
                crate::ingest::decode::check_value(&self.config.validation, v).map_err(|r| bad(format!("value `{cell}` in column `{}`: {}", names[*c], r.detail)))?;
                values.push(Some(v));
            }
            rows.push(ReplayRow { timestamp: ts.to_string(), event_time_ms: t, values, score: 0.0, band: None, alert: false });
        }

        let width = self.slot.runtime.input_width();
        let slots = self.slot.runtime.manifest().input.window;
        // What a row's score is read from: its columns' entities, or their assets.
        let score_keys: Vec<Arc<str>> = columns
            .iter()
            .map(|(_, e)| match routing.channel_of(e) {
                Some((asset, _)) if multivariate => asset.clone(),
                _ => e.clone(),
            })
            .collect();
        let geometry = match opts.window {
            WindowChoice::Config => Geometry::from(&self.config.pipeline.window),
            WindowChoice::Auto => auto_geometry(rows.iter().map(|r| r.event_time_ms), slots, !multivariate),
        };
        let metrics = Arc::new(Metrics::default());
        let (jobs_tx, jobs_rx) = unbounded();
        // Late readings are counted (`late` in the summary); with `late_policy = "dlq"` the worker
        // also sends a dead letter, which replay does not keep: the receiver is dropped here,
        // so those sends fail at once instead of piling up.
        let (internal_tx, _) = unbounded();
        let (_inbox_tx, inbox) = unbounded::<WorkerMsg>();
        let mut worker = Worker {
            index: 0,
            settings: WorkerSettings {
                geometry,
                normalisation: self.slot.runtime.manifest().normalisation.clone(),
                width,
                checkpoint_interval: Duration::from_secs(3600),
                checkpoint_max_entities: usize::MAX,
                // Replay scores windows; aggregates and sessions are for the live uplink.
                aggregate: Default::default(),
                session: None,
                routing: Arc::new(routing),
                multivariate,
                warmup_pca: self.config.pipeline.warmup_pca.as_ref().map(|w| WarmupPcaSettings::new(w)),
            },
            entities: HashMap::new(),
            assets: HashMap::new(),
            inbox,
            to_inference: jobs_tx,
            to_commit_log: internal_tx,
            metrics: metrics.clone(),
            live: None,
        };
        let mut evaluator = Evaluator { agent: self.config.agent.id.clone(), policy: self.policy, states: HashMap::new() };
        let max_batch = self.config.inference.max_batch.max(1);
        let mut driver = Driver {
            slot: &mut self.slot,
            metrics: metrics.clone(),
            batch: Vec::with_capacity(max_batch),
            scratch: Scratch::default(),
            latest: HashMap::new(),
            pending_latest: HashMap::new(),
            pending_rows: Vec::new(),
            rows_emitted: 0,
        };
        let mut summary = ReplaySummary { hop_ms: geometry.hop_ms, size_ms: geometry.size_ms, offset_ms: geometry.offset_ms, ..Default::default() };
        let (mut scratch_dirty, mut scratch_resampled, mut scratch_applied) = (HashMap::new(), Vec::new(), Vec::new());
        let received = Instant::now();
        for row in rows {
            let row_from = driver.batch.len();
            for ((_, entity), value) in columns.iter().zip(&row.values) {
                if let Some(v) = value {
                    let reading = Reading {
                        entity: entity.to_string(),
                        event_time_ms: row.event_time_ms,
                        value: *v,
                        quality: Quality::Good,
                        source: SourceKind::Replay,
                        ingest_time_ms: row.event_time_ms,
                        // One seq per reading, as the commit log assigns them (an asset's
                        // channels in one row are distinct readings).
                        seq: summary.readings + 1,
                        source_seq: None,
                    };
                    summary.readings += 1;
                    worker.apply(reading, received, &mut scratch_dirty, &mut scratch_resampled, &mut scratch_applied);
                    scratch_dirty.clear();
                    driver.take_jobs(&jobs_rx);
                }
            }
            // Per column, once the whole row is applied (an asset's window may be closed by a
            // later column of the row than this one): the windows of its entity or asset that
            // the row closed, or else its latest result. `batch` only grows while a row is
            // applied (it is flushed between rows), so `row_from <= to` and the slice is in range.
            let to = driver.batch.len();
            let refs = score_keys
                .iter()
                .map(|key| match driver.batch[row_from..].iter().any(|job| job.entity == *key) {
                    true => Ref::Closed { entity: key.clone(), from: row_from, to },
                    false => driver.reference(key),
                })
                .collect();
            driver.pending_rows.push(PendingRow { row, refs });
            if driver.batch.len() >= max_batch {
                driver.flush(&mut evaluator, &mut emit).map_err(io)?;
            }
        }
        driver.flush(&mut evaluator, &mut emit).map_err(io)?;
        summary.rows = driver.rows_emitted;
        summary.windows_scored = metrics.windows_scored.get();
        summary.batches = metrics.inference_batches.get();
        summary.late = metrics.late_readings.get();
        summary.elapsed = started.elapsed();
        Ok(summary)
    }
}

/// The replay's inference and alert stages, run inline.
struct Driver<'a> {
    slot: &'a mut Slot,
    metrics: Arc<Metrics>,
    batch: Vec<WindowJob>,
    scratch: Scratch,
    /// Per entity: the latest scored window's result.
    latest: HashMap<Arc<str>, Latest>,
    /// Per entity: index of its latest window in `batch` (not scored yet).
    pending_latest: HashMap<Arc<str>, usize>,
    pending_rows: Vec<PendingRow>,
    rows_emitted: usize,
}

impl Driver<'_> {
    fn take_jobs(&mut self, jobs: &Receiver<Stage<WindowJob>>) {
        while let Ok(message) = jobs.try_recv() {
            // `Worker::apply` sends only windows; checkpoints come from `Worker::run`.
            // Windows before the model's warm-up are not scored (the live stage drops them too).
            if let Stage::Item(job) = message {
                if !self.slot.scoring.warm(&job) {
                    continue;
                }
                self.pending_latest.insert(job.entity.clone(), self.batch.len());
                self.batch.push(job);
            }
        }
    }

    fn reference(&self, entity: &Arc<str>) -> Ref {
        match self.pending_latest.get(entity) {
            Some(i) => Ref::Pending(*i),
            None => Ref::Done(self.latest.get(entity).copied()),
        }
    }

    /// Scores the pending batch, evaluates it in order, and emits the rows waiting for it.
    fn flush(&mut self, evaluator: &mut Evaluator, emit: &mut impl FnMut(&ReplayRow) -> std::io::Result<()>) -> std::io::Result<()> {
        let mut results: Vec<Option<Latest>> = Vec::with_capacity(self.batch.len());
        let entities: Vec<Arc<str>> = self.batch.iter().map(|job| job.entity.clone()).collect();
        if !self.batch.is_empty() {
            let n = self.batch.len();
            let (tx, rx) = unbounded();
            // The receiver lives until the end of this function: the send cannot fail.
            score_batch(self.slot, &mut self.batch, &mut self.scratch, &tx, &self.metrics);
            let scored: Vec<ScoredWindow> = match rx.try_recv() {
                Ok(Stage::Item(scored)) => scored,
                // An interpreter error: the batch is logged and left unscored, like live.
                _ => Vec::new(),
            };
            let mut out = Evaluation::default();
            for w in &scored {
                // Each window is new to this fresh evaluator, so `evaluate` scores it; a `None`
                // still takes its slot so results stay aligned with the batch.
                let Some((score, band)) = evaluator.evaluate(w, &mut out) else {
                    results.push(None);
                    continue;
                };
                let raised = evaluator.states.get(&w.entity).is_some_and(|s| s.raised);
                let latest = Latest { score, band, raised };
                self.latest.insert(w.entity.clone(), latest);
                results.push(Some(latest));
            }
            results.resize(n, None);
            self.batch.clear();
            self.pending_latest.clear();
        }
        for mut pending in self.pending_rows.drain(..) {
            let mut best: Option<Latest> = None;
            for r in &pending.refs {
                match r {
                    Ref::Closed { entity, from, to } => {
                        // The highest score and band of the windows it closed, raised if any
                        // of them was (a raise and clear inside one gap still shows).
                        for i in (*from..*to).filter(|&i| entities.get(i) == Some(entity)) {
                            best = Latest::higher(best, results.get(i).copied().flatten());
                        }
                    }
                    Ref::Pending(i) => best = Latest::higher(best, results.get(*i).copied().flatten()),
                    Ref::Done(l) => best = Latest::higher(best, *l),
                }
            }
            if let Some(b) = best {
                pending.row.score = (b.score * 1e6).round() / 1e6;
                pending.row.band = Some(b.band);
                pending.row.alert = b.raised;
            }
            self.rows_emitted += 1;
            emit(&pending.row)?;
        }
        Ok(())
    }
}

/// Writes a replay row as CSV: `timestamp,<values…>,score,band,alert`.
pub fn write_row(out: &mut impl Write, row: &ReplayRow) -> std::io::Result<()> {
    write!(out, "{}", row.timestamp)?;
    for v in &row.values {
        match v {
            Some(v) => write!(out, ",{v}")?,
            None => write!(out, ",")?,
        }
    }
    writeln!(out, ",{:.6},{},{}", row.score, row.band.map_or("none", band_name), u8::from(row.alert))
}

/// Parses a `COLUMN=ENTITY` pair (`--entity`, `replay.entities`).
pub fn column_entity(pair: &str) -> Result<(String, String), String> {
    match pair.split_once('=') {
        Some((column, entity)) if !column.trim().is_empty() && !entity.trim().is_empty() => {
            Ok((column.trim().to_string(), entity.trim().to_string()))
        }
        _ => Err(format!("`{pair}`: expected COLUMN=ENTITY")),
    }
}

/// [`WindowChoice::Auto`]'s geometry for rows at `times` (file order) and a model of `slots`
/// slots: size = `slots ×` the median positive step (1 s without one), so a slot holds about
/// one reading; lateness 0. For entity windows (`per_reading`) the hop is the timestamps'
/// resolution (the greatest common divisor of the steps, backwards ones too: the median step
/// itself for a regular file) and the phase the rows' (every row is on that grid), so every
/// reading closes the window ending at its own time, and — entity windows being emitted only
/// with a new reading — that one window only. Asset windows are emitted every hop while any
/// reading is in view: for them the hop stays the median step (a resolution of 1 ms would
/// make thousands of windows per reading), on the rows' most common phase (the first row's on
/// a tie).
fn auto_geometry(times: impl Iterator<Item = i64> + Clone, slots: usize, per_reading: bool) -> Geometry {
    let steps: Vec<i64> = times.clone().zip(times.clone().skip(1)).map(|(a, b)| b.saturating_sub(a)).collect();
    let mut forward: Vec<i64> = steps.iter().copied().filter(|d| *d > 0).collect();
    let Some(median) = (!forward.is_empty()).then(|| {
        let mid = forward.len() / 2;
        *forward.select_nth_unstable(mid).1
    }) else {
        return Geometry { size_ms: 1000 * slots as i64, hop_ms: 1000, offset_ms: 0, lateness_ms: 0, late_policy: LatePolicy::Drop };
    };
    fn gcd(a: i64, b: i64) -> i64 {
        if b == 0 { a } else { gcd(b, a % b) }
    }
    let first = times.clone().next().unwrap_or(0);
    let (hop, offset_ms) = if per_reading {
        let resolution = steps.iter().filter(|d| **d != 0).fold(0, |g, d| gcd(d.saturating_abs(), g));
        // Steps are differences of two rows: every row is `first` + a multiple of it.
        (resolution, first.rem_euclid(resolution))
    } else {
        let mut phases: HashMap<i64, usize> = HashMap::new();
        for t in times.clone() {
            *phases.entry(t.rem_euclid(median)).or_default() += 1;
        }
        let first = first.rem_euclid(median);
        // A total order over distinct phases: the choice does not depend on the map's order.
        (median, phases.iter().map(|(p, n)| (*n, *p == first, *p)).max().map_or(first, |m| m.2))
    };
    Geometry { size_ms: median.saturating_mul(slots as i64), hop_ms: hop, offset_ms, lateness_ms: 0, late_policy: LatePolicy::Drop }
}

/// The end of year 9999 in epoch milliseconds: the latest timestamp either form can give.
const LAST_TIMESTAMP_MS: i64 = 253_402_300_799_999;

/// Parses `YYYY-MM-DD[ T]HH:MM:SS[.fff…][Z]` (UTC; NAB and SKAB timestamps) or integer epoch
/// milliseconds, up to the end of year 9999 (window arithmetic stays far from i64's ends).
pub fn parse_timestamp(s: &str) -> Option<i64> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().ok().filter(|t| *t <= LAST_TIMESTAMP_MS);
    }
    let t = humantime::parse_rfc3339_weak(s).ok()?;
    let d = t.duration_since(std::time::UNIX_EPOCH).ok()?;
    i64::try_from(d.as_millis()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_entity_pairs() {
        assert_eq!(column_entity("value=plant.a"), Ok(("value".into(), "plant.a".into())));
        assert_eq!(column_entity(" a = b=c "), Ok(("a".into(), "b=c".into())));
        assert!(column_entity("value").unwrap_err().contains("expected COLUMN=ENTITY"));
        assert!(column_entity("=x").is_err() && column_entity("x=").is_err());
    }

    #[test]
    fn auto_geometry_follows_the_files_own_grid() {
        // Every 5 minutes at :02, :07, …, one step missing: size 32 median steps, hop 5 min,
        // phase 2 min.
        let mut times: Vec<i64> = (0..20).map(|k| 120_000 + k * 300_000).filter(|t| *t != 1_320_000).collect();
        let g = auto_geometry(times.iter().copied(), 32, true);
        assert_eq!((g.hop_ms, g.offset_ms, g.size_ms, g.lateness_ms), (300_000, 120_000, 9_600_000, 0));
        // A first row 2 minutes early: entity windows on the 1-minute resolution, phase 0;
        // asset windows keep the median step, on the rows' most common phase.
        times.insert(0, 0);
        let g = auto_geometry(times.iter().copied(), 32, true);
        assert_eq!((g.hop_ms, g.offset_ms, g.size_ms), (60_000, 0, 9_600_000));
        let g = auto_geometry(times.iter().copied(), 32, false);
        assert_eq!((g.hop_ms, g.offset_ms, g.size_ms), (300_000, 120_000, 9_600_000));
        // A step backwards counts for the resolution: 1700 and 2700 are on the grid too.
        let g = auto_geometry([0, 1000, 700, 1700, 2700].into_iter(), 4, true);
        assert_eq!((g.hop_ms, g.offset_ms, g.size_ms), (100, 0, 4000));
        // Asset windows, a tie of phases: the first row's.
        let g = auto_geometry([500, 1000, 2000, 3500].into_iter(), 4, false);
        assert_eq!((g.hop_ms, g.offset_ms), (1000, 500));
        let g = auto_geometry(std::iter::empty(), 4, true);
        assert_eq!((g.hop_ms, g.offset_ms, g.size_ms), (1000, 0, 4000));
    }

    #[test]
    fn timestamps_of_nab_and_skab() {
        assert_eq!(parse_timestamp("1970-01-01 00:00:01"), Some(1000));
        assert_eq!(parse_timestamp("2014-04-10 07:15:00.000000"), parse_timestamp("2014-04-10T07:15:00Z"));
        assert_eq!(parse_timestamp("2014-04-10 07:15:00.250000").zip(parse_timestamp("2014-04-10 07:15:00")).map(|(a, b)| a - b), Some(250));
        assert_eq!(parse_timestamp("1700000000000"), Some(1_700_000_000_000));
        assert_eq!(parse_timestamp("yesterday"), None);
        assert_eq!(parse_timestamp("9999-12-31 23:59:59.999"), Some(LAST_TIMESTAMP_MS));
        assert_eq!(parse_timestamp(&LAST_TIMESTAMP_MS.to_string()), Some(LAST_TIMESTAMP_MS));
        assert_eq!(parse_timestamp(&(LAST_TIMESTAMP_MS + 1).to_string()), None);
        assert_eq!(parse_timestamp(&i64::MAX.to_string()), None);
    }
}
