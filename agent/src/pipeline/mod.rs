//! The stateful stream-processing stage: partitioned workers that own per-entity windows and
//! features.
//!
//! The commit log hands every committed reading to worker `fnv1a(entity) % workers`, so one
//! entity is always processed by one worker thread, in commit order. A worker:
//!
//! 1. admits the reading into the entity's [`window::EntityWindows`] (late readings are counted
//!    and dropped, dead-lettered or kept, per `pipeline.window.late_policy`);
//! 2. closes every window the entity's watermark has passed, computing its [`features`] and the
//!    window resampled onto the model's input width;
//! 3. sends each such window with the entity's normalisation statistics to inference as a
//!    [`WindowJob`]. Normalisation and the warm-up gate belong to each model (its manifest) and
//!    are applied in the inference stage, so models with different normalisations (a shadow or
//!    canary candidate beside the active model) score the same windows;
//! 4. feeds the reading to the entity's tumbling windows ([`aggregate`]) and activity sessions
//!    ([`session`]) and sends what they produce as [`Stage::Emit`] down the same path, in
//!    order with the windows: the alert stage folds scores into sessions and commits the
//!    records with its own outputs. Every [`Emit`] carries a per-entity counter, so the alert
//!    stage drops what recovery produces a second time (exactly once, like scores).
//!
//! With a multivariate model (manifest `kind = "multivariate"`) the entity windows still keep
//! features, but the model scores *assets* instead: the readings of an asset's channels
//! (`pipeline.assets`) are also admitted into the asset's [`asset::AssetWindows`] — routed by
//! asset id, so one worker owns each asset — and its closed windows go to inference with the
//! asset id as their entity. With `[pipeline.warmup_pca]`, each asset window also carries the
//! evidence of the asset's longer view checked against its warm-up ([`warmup_pca`]), which the
//! inference stage adds to the model's error.
//!
//! Every `checkpoint_interval_ms` a worker sends the state of the entities it changed — at most
//! `checkpoint_max_entities`, those changed longest ago first, so one checkpoint never stalls
//! the group commit — plus the commit-log seq through which its readings are all persisted in
//! entity state (the journal may be trimmed up to there), down the same path as its windows
//! ([`Stage::Checkpoint`]); the commit log writes it after the scores of those windows (see
//! [`crate::commit_log`] for recovery).

pub mod aggregate;
pub mod asset;
pub mod features;
pub mod session;
pub mod warmup_pca;
pub mod window;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cloud_uplink::Body;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use crate::commit_log::{Checkpoint, InternalWrite};
use crate::inference::manifest::Normalisation;
use crate::config::LatePolicy;
use crate::dlq::{DlqEntry, DlqReason};
use crate::api::live::AppliedReading;
use crate::metrics::Metrics;
use crate::reading::{Quality, Reading};
use features::{resample, Ewma};
use aggregate::AggregateSettings;
use session::{SessionEvent, SessionSettings};
use asset::{normalise_asset_window, AssetWindows, Routing};
use warmup_pca::{Fit, LongViewEvidence, WarmupPcaSettings};
use window::{Admission, EntityWindows, Geometry};

/// Stable partitioning hash (FNV-1a, 64 bit): the same entity maps to the same worker on every
/// run and every platform.
pub fn partition_of(entity: &str, partitions: usize) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in entity.as_bytes() {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h % partitions.max(1) as u64) as usize
}

/// The range of a window's raw (un-normalised) readings and of their moving average over
/// `width / 2` consecutive readings: what `alerts.score = "novelty"` compares with the entity's
/// history ([`crate::alerts::Novelty`]). Non-finite (±∞) for a window without readings, and
/// [`RawSummary::NONE`] for an asset window (its channels have different units: `novelty`
/// scores it by its model error alone).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RawSummary {
    pub min: f64,
    pub max: f64,
    pub mean_min: f64,
    pub mean_max: f64,
}

impl RawSummary {
    /// No readings to compare: the range parts of `novelty` score 0.
    pub const NONE: RawSummary = RawSummary { min: f64::INFINITY, max: f64::NEG_INFINITY, mean_min: f64::INFINITY, mean_max: f64::NEG_INFINITY };

    /// Of the window's values in event order; the moving average spans `span` readings (all of
    /// them in a shorter window).
    pub fn of(values: impl ExactSizeIterator<Item = f64> + Clone, span: usize) -> RawSummary {
        let n = values.len();
        let span = span.clamp(1, n.max(1));
        let mut r = RawSummary::NONE;
        let (mut sum, mut tail) = (0.0, values.clone());
        for (i, v) in values.enumerate() {
            r.min = r.min.min(v);
            r.max = r.max.max(v);
            sum += v;
            if i + 1 > span {
                // `tail` trails `values` by `span` items, so it has an item here.
                sum -= tail.next().unwrap_or(0.0);
            }
            if i + 1 >= span {
                let mean = sum / span as f64;
                r.mean_min = r.mean_min.min(mean);
                r.mean_max = r.mean_max.max(mean);
            }
        }
        r
    }
}

/// A window's model input.
#[derive(Debug, Clone)]
pub enum WindowInput {
    /// An entity window: its raw values resampled onto the model's input width and the entity's
    /// normalisation statistics after the reading that closed it. Each deployed model normalises
    /// them as its manifest says and scores only past its own warm-up (`stats.count`).
    Entity { values: Vec<f64>, stats: Ewma },
    /// An asset window, already normalised and past the warm-up by the worker (asset
    /// normalisation needs the asset's state; every deployed multivariate model shares the
    /// pipeline's normalisation, see [`crate::inference::lifecycle`]), and what the score
    /// combines besides the model's error when `[pipeline.warmup_pca]` is on.
    Normalised { values: Vec<f32>, long_view: Option<LongViewEvidence> },
}

/// Messages from the commit log to a worker.
pub enum WorkerMsg {
    /// Committed readings for this worker, in commit order, and the highest seq committed so far
    /// (every reading for this worker with seq <= `through` is in this or an earlier message).
    Readings { readings: Vec<Reading>, through: u64 },
}

/// A closed window on its way to inference.
#[derive(Debug, Clone)]
pub struct WindowJob {
    pub entity: Arc<str>,
    pub window_end_ms: i64,
    /// What the models get (see [`WindowInput`]).
    pub input: WindowInput,
    /// The window's raw readings, summarised for `alerts.score = "novelty"`.
    pub raw: RawSummary,
    /// When the reading that closed the window entered the agent (for latency metrics).
    pub trigger_ingest: Instant,
    /// Commit-log seq of the reading that closed the window (log spans; 0 outside the agent).
    pub trigger_seq: u64,
    /// What the workers emitted before this window and after the previous one in the batch
    /// (attached by the batcher, so emits keep their place without splitting batches).
    pub before: Vec<Emit>,
}

/// What flows from the workers through inference and the alert stage to the commit log.
///
/// A worker's [`Checkpoint`] travels the same path as its windows, behind them: the commit log
/// receives it only after the scores of every window the checkpointed state has already
/// emitted, so a crash can never leave a checkpoint that claims windows whose scores were lost.
pub enum Stage<T> {
    Item(T),
    Checkpoint(Checkpoint),
    /// Aggregates and session marks, in order with the windows around them.
    Emit(Vec<Emit>),
}

/// Something a worker produced besides windows (see the module docs).
#[derive(Debug, Clone)]
pub struct Emit {
    pub entity: Arc<str>,
    /// The entity's emission counter: 1, 2, … over its whole life (checkpointed), so a replay
    /// after a crash reproduces the same numbers for the same emits.
    pub seq: u64,
    pub what: Emitted,
}

/// See [`Emit`].
#[derive(Debug, Clone)]
pub enum Emitted {
    /// A finished record (an aggregate) and its event time.
    Record { event_time_ms: i64, body: Body },
    /// A session started: windows ending at or after `start_ms` count towards it.
    SessionOpened { start_ms: i64 },
    /// A session ended: `body` is its `Body::Session` without scores; the alert stage adds the
    /// scores and alerts of windows ending in `[start_ms, windows_through_ms]`.
    SessionClosed { body: Body, windows_through_ms: i64 },
}

/// A session event of `entity` (an entity or an asset id) as what the alert stage receives: the
/// closed session's record waits for the scores of the windows ending up to its end + the
/// window size.
fn session_emitted(e: SessionEvent, entity: &str, s: &WorkerSettings) -> Emitted {
    match e {
        SessionEvent::Opened { start_ms } => Emitted::SessionOpened { start_ms },
        SessionEvent::Closed(c) => Emitted::SessionClosed {
            // The last window holding the session's last reading ends before end + size (a
            // window `(e − size, e]` ending at end + size no longer holds it).
            windows_through_ms: c.end_ms + s.geometry.size_ms - 1,
            body: Body::Session {
                entity: entity.to_string(),
                start_ms: c.start_ms,
                end_ms: c.end_ms,
                duration_ms: c.end_ms - c.start_ms,
                stats: c.summary.stats(&s.aggregate.quantiles, s.aggregate.accuracy),
                max_score: None,
                alerts: Vec::new(),
            },
        },
    }
}

/// Numbers `emits` with the entity's counter and sends them to inference (in order with the
/// windows). Inference only disconnects when the agent is shutting down.
fn send_emits(to_inference: &Sender<Stage<WindowJob>>, entity: &Arc<str>, counter: &mut u64, emits: Vec<Emitted>) {
    if emits.is_empty() {
        return;
    }
    let emits = emits
        .into_iter()
        .map(|what| {
            *counter += 1;
            Emit { entity: entity.clone(), seq: *counter, what }
        })
        .collect();
    let _ = to_inference.send(Stage::Emit(emits));
}

/// Settings a worker needs.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    pub geometry: Geometry,
    /// The model's normalisation (manifest) and input width.
    pub normalisation: Normalisation,
    pub width: usize,
    pub checkpoint_interval: Duration,
    /// Most entity states written per checkpoint.
    pub checkpoint_max_entities: usize,
    /// Tumbling windows (no sizes = none).
    pub aggregate: AggregateSettings,
    /// Activity sessions, when configured.
    pub session: Option<SessionSettings>,
    /// Which entities are channels of which asset (empty with a univariate model).
    pub routing: Arc<Routing>,
    /// The model scores assets (`kind = "multivariate"`), not single entities.
    pub multivariate: bool,
    /// `[pipeline.warmup_pca]`: the assets' long view checked against their warm-up.
    pub warmup_pca: Option<WarmupPcaSettings>,
}

/// One worker thread's state and loop.
pub struct Worker {
    pub index: usize,
    pub settings: WorkerSettings,
    /// Window state per entity, boxed: the map keeps up to half its buckets empty, and an
    /// empty bucket then costs a pointer, not a state (see [`crate::memory`]).
    pub entities: HashMap<Arc<str>, Box<EntityWindows>>,
    /// Join state of the assets routed to this worker.
    pub assets: HashMap<Arc<str>, AssetWindows>,
    pub inbox: Receiver<WorkerMsg>,
    pub to_inference: Sender<Stage<WindowJob>>,
    pub to_commit_log: Sender<InternalWrite>,
    pub metrics: Arc<Metrics>,
    /// The API's live view (latest readings and features), when the API is enabled.
    pub live: Option<Arc<crate::api::live::LiveView>>,
}

impl Worker {
    /// Runs until the commit log drops its sender; then writes a final checkpoint.
    pub fn run(mut self) {
        // Entities changed since their last checkpoint, with the seq of their oldest reading
        // not yet persisted in a checkpoint.
        let mut dirty: HashMap<Arc<str>, u64> = HashMap::new();
        let mut through = 0u64;
        let mut next_checkpoint = Instant::now() + self.settings.checkpoint_interval;
        let mut resampled = Vec::new();
        let mut applied = Vec::new();
        loop {
            let timeout = next_checkpoint.saturating_duration_since(Instant::now());
            match self.inbox.recv_timeout(timeout) {
                Ok(WorkerMsg::Readings { readings, through: t }) => {
                    let received = Instant::now();
                    for reading in readings {
                        self.apply(reading, received, &mut dirty, &mut resampled, &mut applied);
                    }
                    if let Some(live) = &self.live {
                        live.readings(&mut applied);
                    }
                    through = through.max(t);
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    // Final checkpoint: everything, however many.
                    while !dirty.is_empty() {
                        self.checkpoint(&mut dirty, through);
                    }
                    return;
                }
            }
            if Instant::now() >= next_checkpoint {
                self.checkpoint(&mut dirty, through);
                next_checkpoint = Instant::now() + self.settings.checkpoint_interval;
            }
        }
    }

    /// Applies one reading: admission, window closing, model input; closed windows go to
    /// `to_inference`. Also driven directly by `vigil replay` ([`crate::replay`]).
    pub(crate) fn apply(
        &mut self,
        reading: Reading,
        received: Instant,
        dirty: &mut HashMap<Arc<str>, u64>,
        resampled: &mut Vec<f64>,
        applied: &mut Vec<AppliedReading>,
    ) {
        if reading.quality != Quality::Bad {
            self.apply_to_asset(&reading, received, dirty);
        }
        let s = &self.settings;
        let key: Arc<str> = match self.entities.get_key_value(reading.entity.as_str()) {
            Some((k, _)) => k.clone(),
            None => Arc::from(reading.entity.as_str()),
        };
        let state = self.entities.entry(key.clone()).or_default();
        if reading.seq != 0 && reading.seq <= state.applied_through {
            // Recovery replays the journal from the oldest checkpoint; this entity's state
            // already contains the reading.
            return;
        }
        dirty.entry(key.clone()).or_insert(reading.seq);
        state.applied_through = state.applied_through.max(reading.seq);
        if reading.quality == Quality::Bad {
            self.metrics.bad_quality.inc();
            return;
        }
        let alpha = s.normalisation.alpha;
        let admission = state.admit(reading.event_time_ms, reading.value, &s.geometry, alpha);
        if admission == Admission::Duplicate {
            self.metrics.duplicate_readings.inc();
            return;
        }
        let mut emits: Vec<Emitted> = Vec::new();
        let mut aggregates = Vec::new();
        let too_late = if s.aggregate.sizes_ms.is_empty() {
            Vec::new()
        } else {
            state.tumbling.get_mut().add(reading.event_time_ms, reading.value, &s.aggregate, &mut aggregates)
        };
        let sliding_late = matches!(admission, Admission::Late { .. });
        if sliding_late || !too_late.is_empty() {
            self.metrics.late_readings.inc();
            let _span = tracing::debug_span!("reading", entity = %reading.entity, seq = reading.seq).entered();
            tracing::debug!(event_time_ms = reading.event_time_ms, policy = ?s.geometry.late_policy, "late reading");
            if s.geometry.late_policy == LatePolicy::Dlq {
                let detail = if sliding_late {
                    format!(
                        "event time {} ms is at or before the last closed window end {} ms",
                        reading.event_time_ms,
                        state.closed_through_ms
                    )
                } else {
                    format!(
                        "event time {} ms is in a final aggregate window (sizes {:?} ms): the watermark passed its end",
                        reading.event_time_ms, too_late
                    )
                };
                let entry = DlqEntry {
                    source: reading.source,
                    topic: reading.entity.clone(),
                    raw: crate::store::to_cbor(&reading),
                    reason: DlqReason::Late,
                    detail,
                    received_ms: reading.ingest_time_ms,
                };
                let _ = self.to_commit_log.send(InternalWrite::DeadLetters(vec![entry]));
            }
        }
        let watermark = state.max_event_ms.map(|m| (m, m - s.geometry.lateness_ms));
        if let Some((max_event, watermark)) = watermark.filter(|_| !s.aggregate.sizes_ms.is_empty()) {
            state.tumbling.get_mut().advance(max_event, watermark, &s.aggregate, &mut aggregates);
        }
        for a in aggregates {
            emits.push(Emitted::Record {
                event_time_ms: a.window_start_ms,
                body: Body::Aggregate {
                    entity: key.to_string(),
                    window_start_ms: a.window_start_ms,
                    size_ms: a.size_ms,
                    version: a.version,
                    stats: a.stats,
                },
            });
        }
        let sessions = s.session.as_ref().filter(|ss| ss.applies_to(&key));
        let mut session_events = Vec::new();
        if let (Some(ss), Some((_, watermark)), false) = (sessions, watermark, sliding_late) {
            let sessions = state.sessions.get_mut();
            sessions.walk(state.buffer.iter().copied(), watermark, ss, s.aggregate.accuracy, &mut session_events);
        }
        let size_ms = s.geometry.size_ms;
        let session_emit = |e: SessionEvent| session_emitted(e, &key, s);
        emits.extend(session_events.drain(..).map(session_emit));
        send_emits(&self.to_inference, &key, &mut state.emitted, emits);
        if sliding_late {
            return;
        }
        let to_inference = &self.to_inference;
        let metrics = &self.metrics;
        let trigger_seq = reading.seq;
        let scored = !s.multivariate;
        state.close_ready(&s.geometry, alpha, |window, ewma| {
            metrics.windows_emitted.inc();
            if !scored {
                return;
            }
            if resample(&window.points, window.end_ms, s.geometry.size_ms, s.width, resampled).is_none() {
                return;
            }
            let input = WindowInput::Entity { values: resampled.clone(), stats: *ewma };
            let raw = RawSummary::of(window.points.iter().map(|p| p.1), s.width / 2);
            let job = WindowJob { entity: key.clone(), window_end_ms: window.end_ms, input, raw, trigger_ingest: received, trigger_seq, before: Vec::new() };
            // Inference only disconnects when the agent is shutting down.
            let _ = to_inference.send(Stage::Item(job));
        });
        if let (Some(ss), Some((_, watermark))) = (sessions, watermark) {
            state.sessions.get_mut().release(watermark, size_ms, ss, &mut session_events);
            let closed = session_events.drain(..).map(session_emit).collect();
            send_emits(&self.to_inference, &key, &mut state.emitted, closed);
        }
        if self.live.is_some() {
            applied.push(AppliedReading { entity: key, event_time_ms: reading.event_time_ms, value: reading.value });
        }
    }

    /// Admits an asset channel's reading into its asset and sends the asset's complete, warmed-up
    /// windows to inference (entity = asset id). Nothing for entities outside assets, or with a
    /// univariate model. Independent of the entity's own state (both are checkpointed
    /// separately, so each skips only the journal readings it already holds); late readings are
    /// counted and dead-lettered by the entity path.
    fn apply_to_asset(&mut self, reading: &Reading, received: Instant, dirty: &mut HashMap<Arc<str>, u64>) {
        let s = &self.settings;
        if !s.multivariate {
            return;
        }
        let Some((asset, channel)) = s.routing.channel_of(&reading.entity) else { return };
        let channels = s.routing.channels(asset).unwrap_or(0);
        let state = self.assets.entry(asset.clone()).or_insert_with(|| AssetWindows::new(channels));
        if reading.seq != 0 && reading.seq <= state.applied_through {
            return;
        }
        // Asset states share the worker's dirty map under their asset id (asset ids are never
        // entity ids: config validation); `checkpoint` looks them up in `assets`.
        dirty.entry(asset.clone()).or_insert(reading.seq);
        state.applied_through = state.applied_through.max(reading.seq);
        if !state.admit(*channel, reading.event_time_ms, reading.value, &s.geometry) {
            return;
        }
        // Sessions: opened before the windows after their start go out, released after the
        // windows overlapping them (as on the entity path).
        let sessions = s.session.as_ref().zip(s.routing.session_channel(asset));
        let mut events = Vec::new();
        if let Some((ss, session_channel)) = sessions {
            state.walk_sessions(session_channel, &s.geometry, ss, s.aggregate.accuracy, &mut events);
            let opened = events.drain(..).map(|e| session_emitted(e, asset, s)).collect();
            send_emits(&self.to_inference, asset, &mut state.emitted, opened);
        }
        let (to_inference, norm, width) = (&self.to_inference, &s.normalisation, s.width / channels.max(1));
        let trigger_seq = reading.seq;
        state.close_ready(&s.geometry, width, norm.warmup, |window, state| {
            let warmed_up = state.warmed_up(norm.warmup);
            // The long view records the warm-up's windows too (it fits on them).
            // Without evidence (no fit, or no long view) the model alone scores the window.
            let long_view = s.warmup_pca.as_ref().and_then(|p| {
                let baselines: Vec<(f64, f64)> = state.channels.iter().map(|c| (c.baseline.mean, c.baseline.scale(norm))).collect();
                let collecting = state.pca.fit == Fit::Collecting;
                let evidence = state.pca.observe(p, s.geometry.size_ms, window.end_ms, &window.values, &baselines, warmed_up);
                if collecting {
                    state.pca.fit.log_outcome(asset);
                }
                Some(LongViewEvidence { model_weight: p.model_weight, evidence: evidence? })
            });
            if !warmed_up {
                return;
            }
            let mut normalised = Vec::with_capacity(s.width);
            normalise_asset_window(norm, &window, state, &mut normalised);
            let input = WindowInput::Normalised { values: normalised, long_view };
            let raw = RawSummary::NONE;
            let job = WindowJob { entity: asset.clone(), window_end_ms: window.end_ms, input, raw, trigger_ingest: received, trigger_seq, before: Vec::new() };
            // Inference only disconnects when the agent is shutting down.
            let _ = to_inference.send(Stage::Item(job));
        });
        if let (Some((ss, _)), Some(watermark)) = (sessions, state.watermark(&s.geometry)) {
            state.sessions.release(watermark, s.geometry.size_ms, ss, &mut events);
            let closed = events.drain(..).map(|e| session_emitted(e, asset, s)).collect();
            send_emits(&self.to_inference, asset, &mut state.emitted, closed);
        }
    }

    /// Writes the states of up to `checkpoint_max_entities` dirty entities, oldest first.
    /// `through` is the highest seq routed to this worker; the checkpoint's own `through` is
    /// lowered to just below the oldest reading still only in memory.
    fn checkpoint(&mut self, dirty: &mut HashMap<Arc<str>, u64>, through: u64) {
        let max = self.settings.checkpoint_max_entities.max(1);
        let chosen: Vec<Arc<str>> = if dirty.len() <= max {
            dirty.keys().cloned().collect()
        } else {
            let mut by_age: Vec<(u64, Arc<str>)> = dirty.iter().map(|(k, s)| (*s, k.clone())).collect();
            by_age.select_nth_unstable_by_key(max - 1, |(s, _)| *s);
            by_age.truncate(max);
            by_age.into_iter().map(|(_, k)| k).collect()
        };
        let mut rows = Vec::with_capacity(chosen.len());
        let mut asset_rows = Vec::new();
        for key in chosen {
            dirty.remove(&key);
            if let Some(state) = self.entities.get(&key) {
                rows.push((key.to_string(), crate::store::to_cbor(state), state.features.clone()));
            }
            if let Some(state) = self.assets.get(&key) {
                asset_rows.push((key.to_string(), crate::store::to_cbor(state)));
            }
        }
        // Seq 0 marks readings that never went through the commit log (none today); they
        // cannot hold the journal back.
        let oldest_unsaved = dirty.values().copied().filter(|&s| s > 0).min();
        let through = oldest_unsaved.map_or(through, |s| s - 1);
        // Behind this worker's windows, through inference and alerts: see [`Stage`].
        let _ = self.to_inference.send(Stage::Checkpoint(Checkpoint { worker: self.index, through, rows, asset_rows }));
    }
}
