//! Model lifecycle: the on-disk registry, deployments (`active` / `shadow` / `canary`), their
//! comparison, and automatic rollback.
//!
//! # Invariants
//! * **One owner.** The inference thread ([`super::batcher`]) owns the [`Deployment`] and is
//!   the only place models are swapped, promoted or demoted, always *between* two batches:
//!   every window of a batch is scored by the same models, every window gets exactly one
//!   deciding score, and the model version on scores switches at one point.
//! * **Nothing unverified runs.** A version is loaded on the dedicated loader thread
//!   ([`run_loader`]), never on the inference thread: manifest, sha256 of the model file, the
//!   tensors against the manifest, the golden vectors (with `inference.verify_golden`), and
//!   compatibility with the running pipeline (same input width and normalisation `alpha`: the
//!   workers keep one set of entity statistics for every model). A version that fails is
//!   refused with the reason (a `model_event` record, a `model_lifecycle` health alert, the
//!   API's reply); the running models stay.
//! * **Durable.** Every change commits the deployment state (`model_deployment` table: active
//!   and candidate folders, registry folders already handled) together with its `model_event`
//!   record through the commit log, the single writer. A restart runs the same models; the
//!   canary cohort is a pure function of the entity id and the candidate's sha256, so the same
//!   entities stay on the candidate.
//! * **A candidate never alerts unless it decides.** In `shadow` the active model decides
//!   every window and the candidate's scores become `shadow_score` records. In `canary` the
//!   candidate decides for its cohort's windows and the active model's score of those windows
//!   becomes the `shadow_score`; the active model also scores every window, so a candidate that
//!   fails is replaced in the same batch and no window goes unscored.
//!
//! # Rollback rules (`[models]`)
//! A candidate is demoted when it errors (at once), or — once it scored
//! `rollback_min_windows` windows — when its mean inference time per window exceeds
//! `latency_budget_us`, or its alert-band rate on the compared windows differs from the active
//! model's by more than `alert_rate_tolerance`.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use cloud_uplink::{Body, ModelRef};
use crossbeam_channel::{Receiver, Sender};
use serde::{Deserialize, Serialize};

use super::batcher::{active_pass, carry_emits, run_slot, PeerScore, Scoring, Scratch, ScoredWindow};
use super::drift::DriftMonitor;
use super::manifest::{sha256_hex, Manifest, ModelKind, Normalisation, Thresholds, MANIFEST_FILE};
use super::{InferenceError, ModelRuntime};
use crate::alerts::health::HealthReporter;
use crate::commit_log::InternalWrite;
use crate::config::{AlertsConfig, Config, DeployMode};
use crate::metrics::{Collector, Exposition, HealthKind, Kind, Metrics};
use crate::pipeline::{Emit, WindowJob};
use crate::reading::now_ms;

/// Lifecycle events kept for the API.
const EVENTS_KEPT: usize = 50;

/// Why a model version was not deployed.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    /// The version does not verify (manifest, sha256, tensors, golden vectors).
    #[error(transparent)]
    Verify(#[from] InferenceError),
    /// It verifies but does not fit the running pipeline.
    #[error("model {name} {version} ({dir}) does not fit the running pipeline: {reason}; deploying it needs a restart with it as inference.model_dir")]
    Incompatible { name: String, version: String, dir: String, reason: String },
    /// A registry operation failed.
    #[error("model registry {path}: {reason}")]
    Registry { path: String, reason: String },
}

/// One loaded, verified model and how it scores.
pub struct Slot {
    pub(crate) runtime: ModelRuntime,
    pub(crate) scoring: Scoring,
    pub dir: PathBuf,
}

impl Slot {
    /// Builds the slot of an already loaded model. `drift` only for the model the agent
    /// started with (its collector is registered once).
    pub fn new(runtime: ModelRuntime, alerts: &AlertsConfig, drift: Option<Arc<DriftMonitor>>) -> Slot {
        let thresholds = effective_thresholds(alerts, runtime.manifest());
        let dir = runtime.dir().to_path_buf();
        let scoring = Scoring::new(&runtime, drift, thresholds);
        Slot { runtime, scoring, dir }
    }

    pub fn model(&self) -> &ModelRef {
        &self.scoring.model
    }

    pub fn thresholds(&self) -> Thresholds {
        self.scoring.thresholds
    }
}

/// Effective thresholds of a model: `[alerts]` overrides its manifest.
pub fn effective_thresholds(alerts: &AlertsConfig, manifest: &Manifest) -> Thresholds {
    let m = manifest.thresholds;
    Thresholds { review: alerts.review_threshold.unwrap_or(m.review), alert: alerts.alert_threshold.unwrap_or(m.alert) }
}

/// What every deployed model must share with the running pipeline.
#[derive(Debug, Clone)]
pub struct PipelineShape {
    pub width: usize,
    pub alpha: f64,
    pub kind: ModelKind,
    /// Asset windows are normalised by the workers: a multivariate model must use exactly
    /// the pipeline's normalisation.
    pub normalisation: Normalisation,
}

impl PipelineShape {
    pub fn of(manifest: &Manifest) -> PipelineShape {
        PipelineShape {
            width: manifest.input_width(),
            alpha: manifest.normalisation.alpha,
            kind: manifest.kind,
            normalisation: manifest.normalisation.clone(),
        }
    }
}

/// Loads and verifies the model folder `dir` and checks it fits `shape`.
pub fn load_model(dir: &Path, verify_golden: bool, shape: Option<&PipelineShape>) -> Result<ModelRuntime, LifecycleError> {
    let runtime = if verify_golden {
        let (runtime, report) = ModelRuntime::load_verified(dir)?;
        tracing::info!(model = runtime.name(), version = runtime.version(), max_abs_diff = report.max_abs_diff, "model loaded; golden vectors verified");
        runtime
    } else {
        ModelRuntime::load(dir)?
    };
    if let Some(shape) = shape {
        let m = runtime.manifest();
        let incompatible = |reason: String| LifecycleError::Incompatible {
            name: m.name.clone(),
            version: m.version.clone(),
            dir: dir.display().to_string(),
            reason,
        };
        if m.input_width() != shape.width {
            return Err(incompatible(format!("input width {} (window x channels), the pipeline resamples windows onto {}", m.input_width(), shape.width)));
        }
        if m.kind != shape.kind {
            return Err(incompatible(format!("kind {:?}, the pipeline runs {:?} models", m.kind, shape.kind)));
        }
        if m.kind == ModelKind::Multivariate && m.normalisation != shape.normalisation {
            return Err(incompatible("a multivariate model's normalisation must equal the pipeline's (asset windows are normalised by the workers)".into()));
        }
        if m.normalisation.alpha != shape.alpha {
            return Err(incompatible(format!("normalisation.alpha {}, the pipeline's entity statistics use {}", m.normalisation.alpha, shape.alpha)));
        }
    }
    Ok(runtime)
}

/// Stable canary membership: FNV-1a over the candidate's sha256 and the entity id.
pub fn canary_member(entity: &str, candidate_sha256: &str, fraction: f64) -> bool {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in candidate_sha256.as_bytes().iter().chain([0u8].iter()).chain(entity.as_bytes()) {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // Scramble the low bits (FNV's last byte dominates them).
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    ((h % 1_000_000) as f64) < fraction * 1_000_000.0
}

/// The persisted deployment (`model_deployment` table).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeploymentRecord {
    /// Folder of the active model.
    pub active: Option<PathBuf>,
    /// Folder and mode of the candidate.
    pub candidate: Option<(PathBuf, DeployMode)>,
    /// Registry folders already handled (`name/version` → the signature they had then): not
    /// deployed again unless they change.
    #[serde(default)]
    pub seen: BTreeMap<String, String>,
}

/// Reads the persisted deployment, if any.
pub fn restore(db: &redb::Database) -> Result<Option<DeploymentRecord>, crate::store::StoreError> {
    use crate::store::{self, DbContext};
    use redb::ReadableDatabase;
    let txn = db.begin_read().doing("restoring the model deployment")?;
    let table = txn.open_table(store::MODEL_DEPLOYMENT).doing("restoring the model deployment")?;
    match table.get(store::DEPLOYMENT_KEY).doing("restoring the model deployment")? {
        Some(v) => Ok(Some(store::from_cbor("model_deployment", store::DEPLOYMENT_KEY, v.value())?)),
        None => Ok(None),
    }
}

/// Rollback rules (`[models]`).
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    pub canary_fraction: f64,
    pub min_windows: u64,
    pub latency_budget_us: f64,
    pub alert_rate_tolerance: f64,
}

impl Rules {
    pub fn from_config(config: &Config) -> Rules {
        let m = &config.models;
        Rules {
            canary_fraction: m.canary_fraction,
            min_windows: m.rollback_min_windows,
            latency_budget_us: m.latency_budget_us,
            alert_rate_tolerance: m.alert_rate_tolerance,
        }
    }
}

/// Requests to the inference thread, applied between batches.
pub enum Command {
    /// A verified model from the loader.
    Install { slot: Box<Slot>, mode: DeployMode, seen: Option<(String, String)>, reply: Option<Reply> },
    /// A version that failed verification (recorded and reported; nothing changes).
    Refused { model: ModelRef, dir: PathBuf, error: String, seen: Option<(String, String)> },
    /// Make the candidate the active model.
    Promote { reply: Option<Reply> },
    /// Demote the candidate (only if it is still the one with this sha256, when given).
    Demote { reason: String, sha256: Option<String>, reply: Option<Reply> },
    /// New `[alerts]` settings (config reload): every deployed model's bands again.
    Reconfigure { alerts: Box<AlertsConfig> },
}

/// The answer to an API request: the deployment after the change, or why nothing changed.
pub type Reply = tokio::sync::oneshot::Sender<Result<DeploymentView, String>>;

/// One deployed model, as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ModelView {
    pub name: String,
    pub version: String,
    pub sha256: String,
    pub dir: String,
    pub mode: &'static str,
    pub review_threshold: f64,
    pub alert_threshold: f64,
}

/// A lifecycle event, as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct EventView {
    pub at_ms: i64,
    pub event: &'static str,
    pub model: ModelRef,
    pub mode: &'static str,
    pub message: String,
}

/// Candidate vs active on the windows both scored (reset when the candidate changes).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Comparison {
    /// Windows scored by both models.
    pub windows: u64,
    /// Fraction of those windows where both models gave the same band.
    pub agreement: f64,
    /// Pearson correlation of the two scores (0 until both vary).
    pub score_correlation: f64,
    /// Fraction of the windows in the alert band, per model.
    pub active_alert_rate: f64,
    pub candidate_alert_rate: f64,
    /// `candidate_alert_rate − active_alert_rate`.
    pub alert_rate_difference: f64,
    /// Mean inference time per window (normalisation + invoke), µs.
    pub active_latency_us: f64,
    pub candidate_latency_us: f64,
    #[serde(skip)]
    sums: Sums,
}

#[derive(Debug, Clone, Copy, Default)]
struct Sums {
    agree: u64,
    alerts_a: u64,
    alerts_c: u64,
    sa: f64,
    sc: f64,
    saa: f64,
    scc: f64,
    sac: f64,
    active_us: f64,
    active_windows: u64,
    candidate_us: f64,
    candidate_windows: u64,
}

impl Comparison {
    fn add_pair(&mut self, active: (f64, bool, u8), candidate: (f64, bool, u8)) {
        let s = &mut self.sums;
        let (a, c) = (active.0, candidate.0);
        if !(a.is_finite() && c.is_finite()) {
            return;
        }
        self.windows += 1;
        s.agree += u64::from(active.2 == candidate.2);
        s.alerts_a += u64::from(active.1);
        s.alerts_c += u64::from(candidate.1);
        s.sa += a;
        s.sc += c;
        s.saa += a * a;
        s.scc += c * c;
        s.sac += a * c;
        let n = self.windows as f64;
        self.agreement = s.agree as f64 / n;
        self.active_alert_rate = s.alerts_a as f64 / n;
        self.candidate_alert_rate = s.alerts_c as f64 / n;
        self.alert_rate_difference = self.candidate_alert_rate - self.active_alert_rate;
        let va = s.saa / n - (s.sa / n).powi(2);
        let vc = s.scc / n - (s.sc / n).powi(2);
        let cov = s.sac / n - (s.sa / n) * (s.sc / n);
        self.score_correlation = if va > 1e-18 && vc > 1e-18 { (cov / (va * vc).sqrt()).clamp(-1.0, 1.0) } else { 0.0 };
    }

    fn add_latency(&mut self, candidate: bool, took: Duration, windows: usize) {
        if windows == 0 {
            return;
        }
        let s = &mut self.sums;
        let us = took.as_secs_f64() * 1e6;
        if candidate {
            s.candidate_us += us;
            s.candidate_windows += windows as u64;
            self.candidate_latency_us = s.candidate_us / s.candidate_windows as f64;
        } else {
            s.active_us += us;
            s.active_windows += windows as u64;
            self.active_latency_us = s.active_us / s.active_windows as f64;
        }
    }

    /// Windows the candidate has scored since it was deployed.
    pub fn candidate_windows(&self) -> u64 {
        self.sums.candidate_windows
    }
}

/// What `GET /api/models` shows.
#[derive(Debug, Clone, Serialize)]
pub struct DeploymentView {
    pub active: ModelView,
    pub candidate: Option<ModelView>,
    /// Fraction of entities a `canary` candidate decides for.
    pub canary_fraction: f64,
    pub comparison: Option<Comparison>,
    /// Newest first.
    pub events: Vec<EventView>,
}

/// Counters of lifecycle events (`vigil_model_events_total{event}`).
const EVENT_NAMES: [&str; 4] = ["deployed", "promoted", "demoted", "refused"];

struct Shared {
    view: DeploymentView,
    events: VecDeque<EventView>,
    counts: [u64; EVENT_NAMES.len()],
    /// The candidate whose demotion the alert stage already asked for.
    demotion_asked: Option<String>,
}

/// The lifecycle as the API, the metrics and the alert stage see it; changed only by the
/// inference thread (the comparison's band statistics by the alert stage).
pub struct Lifecycle {
    shared: Mutex<Shared>,
    pub rules: Rules,
    /// To the inference thread.
    pub commands: Sender<Command>,
    /// To the loader thread (uploads).
    pub uploads: Sender<Upload>,
    /// The registry folder, when configured.
    pub registry: Option<PathBuf>,
    /// Mode of an upload that names none (`models.deploy`).
    pub deploy: DeployMode,
}

impl Lifecycle {
    fn lock(&self) -> MutexGuard<'_, Shared> {
        // A panic while holding this lock cannot leave it inconsistent in a way that matters
        // (views and counters only): keep serving.
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The current deployment, comparison and recent events.
    pub fn view(&self) -> DeploymentView {
        let s = self.lock();
        let mut v = s.view.clone();
        v.events = s.events.iter().rev().cloned().collect();
        v
    }

    /// The alert stage's half of the comparison: one window scored by both models, with each
    /// model's final score (per `alerts.score`) and band. Returns a demotion request when the
    /// alert-rate rule fires (once per candidate).
    pub fn compare(&self, pairs: &[((f64, bool, u8), (f64, bool, u8))], candidate_sha: &str) -> Option<String> {
        let mut s = self.lock();
        let rules = self.rules;
        let Some(c) = s.view.comparison.as_mut() else { return None };
        for &(a, cand) in pairs {
            c.add_pair(a, cand);
        }
        let diff = c.alert_rate_difference;
        let n = c.windows;
        if n >= rules.min_windows && diff.abs() > rules.alert_rate_tolerance && s.demotion_asked.as_deref() != Some(candidate_sha) {
            s.demotion_asked = Some(candidate_sha.to_string());
            return Some(format!(
                "alert-band rate {:.3} vs the active model's {:.3} over {n} windows (difference {diff:+.3} outside ±{})",
                s.view.comparison.as_ref().map_or(0.0, |c| c.candidate_alert_rate),
                s.view.comparison.as_ref().map_or(0.0, |c| c.active_alert_rate),
                rules.alert_rate_tolerance
            ));
        }
        None
    }
}

fn model_view(slot: &Slot, mode: DeployMode) -> ModelView {
    let m = slot.model();
    let t = slot.thresholds();
    ModelView {
        name: m.name.clone(),
        version: m.version.clone(),
        sha256: m.sha256.clone(),
        dir: slot.dir.display().to_string(),
        mode: mode.as_str(),
        review_threshold: t.review,
        alert_threshold: t.alert,
    }
}

/// The models in use: owned by the inference thread.
pub struct Deployment {
    pub active: Slot,
    pub candidate: Option<(Slot, DeployMode)>,
    /// The `[alerts]` settings the bands come from (replaced by a config reload).
    alerts: AlertsConfig,
    record: DeploymentRecord,
    lifecycle: Arc<Lifecycle>,
    to_commit_log: Sender<InternalWrite>,
    health: Option<HealthReporter>,
}

impl Deployment {
    /// The deployment the agent starts with. `record` is the restored (or fresh) state; it is
    /// committed again so that it names exactly these models.
    pub fn new(
        active: Slot,
        candidate: Option<(Slot, DeployMode)>,
        mut record: DeploymentRecord,
        alerts: AlertsConfig,
        lifecycle: Arc<Lifecycle>,
        to_commit_log: Sender<InternalWrite>,
        health: Option<HealthReporter>,
    ) -> Deployment {
        record.active = Some(active.dir.clone());
        record.candidate = candidate.as_ref().map(|(s, m)| (s.dir.clone(), *m));
        let mut d = Deployment { active, candidate, alerts, record, lifecycle, to_commit_log, health };
        d.refresh_view(true);
        d.persist(Vec::new());
        d
    }

    /// A shared view for the API and metrics, before any deployment exists (the inference
    /// thread fills it in [`Deployment::new`]).
    pub fn lifecycle(rules: Rules, commands: Sender<Command>, uploads: Sender<Upload>, registry: Option<PathBuf>, deploy: DeployMode, active: &Slot) -> Arc<Lifecycle> {
        Arc::new(Lifecycle {
            shared: Mutex::new(Shared {
                view: DeploymentView {
                    active: model_view(active, DeployMode::Active),
                    candidate: None,
                    canary_fraction: rules.canary_fraction,
                    comparison: None,
                    events: Vec::new(),
                },
                events: VecDeque::new(),
                counts: [0; EVENT_NAMES.len()],
                demotion_asked: None,
            }),
            rules,
            commands,
            uploads,
            registry,
            deploy,
        })
    }

    fn refresh_view(&mut self, reset_comparison: bool) {
        let mut s = self.lifecycle.lock();
        s.view.active = model_view(&self.active, DeployMode::Active);
        s.view.candidate = self.candidate.as_ref().map(|(slot, mode)| model_view(slot, *mode));
        if reset_comparison {
            s.view.comparison = self.candidate.as_ref().map(|_| Comparison::default());
            s.demotion_asked = None;
        }
    }

    fn persist(&mut self, records: Vec<(i64, Body)>) {
        let state = crate::store::to_cbor(&self.record);
        // The commit log outlives this thread (it waits for every internal sender).
        let _ = self.to_commit_log.send(InternalWrite::Deployment { state, records });
    }

    /// Records an event: log, API view, counter, health alert (refusals and demotions), and
    /// the `model_event` record committed with the new deployment state.
    fn event(&mut self, event: &'static str, model: ModelRef, mode: DeployMode, message: String) {
        let at = now_ms();
        match event {
            "refused" | "demoted" => {
                tracing::warn!(event, model = %model.name, version = %model.version, mode = mode.as_str(), "model {event}: {message}");
                if let Some(h) = &self.health {
                    h.raise(HealthKind::ModelLifecycle, format!("model {} {} {event}: {message}", model.name, model.version));
                }
            }
            _ => tracing::info!(event, model = %model.name, version = %model.version, mode = mode.as_str(), "model {event}: {message}"),
        }
        {
            let mut s = self.lifecycle.lock();
            if let Some(i) = EVENT_NAMES.iter().position(|e| *e == event) {
                s.counts[i] += 1;
            }
            s.events.push_back(EventView { at_ms: at, event, model: model.clone(), mode: mode.as_str(), message: message.clone() });
            while s.events.len() > EVENTS_KEPT {
                s.events.pop_front();
            }
        }
        let body = Body::ModelEvent { event: event.to_string(), model, mode: mode.as_str().to_string(), message };
        self.persist(vec![(at, body)]);
    }

    /// Applies one lifecycle command (between batches).
    pub fn apply(&mut self, command: Command) {
        match command {
            Command::Install { mut slot, mode, seen, reply } => {
                if let Some((k, v)) = seen {
                    self.record.seen.insert(k, v);
                }
                // The bands of the settings in force now (a reload may have come after loading).
                slot.scoring.thresholds = effective_thresholds(&self.alerts, slot.runtime.manifest());
                let model = slot.model().clone();
                let message = format!("{} from {}", mode.as_str(), slot.dir.display());
                match mode {
                    DeployMode::Active => {
                        self.active = *slot;
                        // A candidate that is now the active model is no longer a candidate.
                        if self.candidate.as_ref().is_some_and(|(c, _)| c.model().sha256 == model.sha256) {
                            self.candidate = None;
                        }
                    }
                    DeployMode::Shadow | DeployMode::Canary => self.candidate = Some((*slot, mode)),
                }
                self.record.active = Some(self.active.dir.clone());
                self.record.candidate = self.candidate.as_ref().map(|(s, m)| (s.dir.clone(), *m));
                self.refresh_view(mode != DeployMode::Active || self.candidate.is_none());
                self.event("deployed", model, mode, message);
                answer(reply, Ok(self.lifecycle.view()));
            }
            Command::Reconfigure { alerts } => {
                self.alerts = *alerts;
                for slot in std::iter::once(&mut self.active).chain(self.candidate.as_mut().map(|(s, _)| s)) {
                    slot.scoring.thresholds = effective_thresholds(&self.alerts, slot.runtime.manifest());
                }
                self.refresh_view(false);
            }
            Command::Refused { model, dir, error, seen } => {
                if let Some((k, v)) = seen {
                    self.record.seen.insert(k, v);
                }
                self.event("refused", model, DeployMode::Active, format!("{}: {error}", dir.display()));
            }
            Command::Promote { reply } => match self.candidate.take() {
                Some((slot, mode)) => {
                    let model = slot.model().clone();
                    self.active = slot;
                    self.record.active = Some(self.active.dir.clone());
                    self.record.candidate = None;
                    self.refresh_view(true);
                    self.event("promoted", model, mode, format!("{} candidate is now the active model", mode.as_str()));
                    answer(reply, Ok(self.lifecycle.view()));
                }
                None => answer(reply, Err("there is no candidate to promote".into())),
            },
            Command::Demote { reason, sha256, reply } => {
                let matches = self.candidate.as_ref().is_some_and(|(c, _)| sha256.as_deref().is_none_or(|s| s == c.model().sha256));
                if !matches {
                    answer(reply, Err("there is no such candidate to demote".into()));
                    return;
                }
                if let Some((slot, mode)) = self.candidate.take() {
                    let model = slot.model().clone();
                    self.record.candidate = None;
                    self.refresh_view(true);
                    self.event("demoted", model, mode, reason);
                    answer(reply, Ok(self.lifecycle.view()));
                }
            }
        }
    }

    /// Scores one batch with the deployed models. Every window past the deciding model's
    /// warm-up gets exactly one deciding score. Returns the scored windows and the emits of
    /// unscored windows after the last scored one (see [`carry_emits`]).
    pub(crate) fn score(&mut self, batch: &mut Vec<WindowJob>, scratch: &mut Scratch, metrics: &Metrics) -> (Vec<ScoredWindow>, Vec<Emit>) {
        // Windows no deployed model is warm for yet never count as inference work.
        let mut carry: Vec<Emit> = Vec::new();
        {
            let candidate = self.candidate.as_ref().map(|(c, _)| &c.scoring);
            let mut kept = Vec::with_capacity(batch.len());
            for mut job in batch.drain(..) {
                if self.active.scoring.warm(&job) || candidate.is_some_and(|c| c.warm(&job)) {
                    job.before = carry_emits(&mut carry, std::mem::take(&mut job.before));
                    kept.push(job);
                } else {
                    carry.extend(job.before);
                }
            }
            *batch = kept;
        }
        if batch.is_empty() {
            return (Vec::new(), carry);
        }
        let started = std::time::Instant::now();
        let Some(active) = active_pass(&mut self.active, batch, scratch, metrics) else {
            carry.extend(batch.drain(..).flat_map(|j| j.before));
            return (Vec::new(), carry);
        };
        let active_took = started.elapsed();
        let active_n = active.iter().filter(|s| s.is_some()).count();
        let fraction = self.lifecycle.rules.canary_fraction;
        let mut candidate_scores = None;
        let mut demote = None;
        if let Some((slot, mode)) = &mut self.candidate {
            let mode = *mode;
            let sha = slot.model().sha256.clone();
            let select = |job: &WindowJob| mode == DeployMode::Shadow || canary_member(&job.entity, &sha, fraction);
            match run_slot(slot, batch, select, scratch) {
                Ok((scores, n, took)) => {
                    let rules = self.lifecycle.rules;
                    let mut s = self.lifecycle.lock();
                    if let Some(c) = s.view.comparison.as_mut() {
                        c.add_latency(false, active_took, active_n);
                        c.add_latency(true, took, n);
                        let windows = c.candidate_windows();
                        if rules.latency_budget_us > 0.0 && windows >= rules.min_windows && c.candidate_latency_us > rules.latency_budget_us {
                            demote = Some(format!(
                                "mean inference time {:.2} µs per window over {windows} windows exceeds models.latency_budget_us = {}",
                                c.candidate_latency_us, rules.latency_budget_us
                            ));
                        }
                    }
                    candidate_scores = Some((scores, mode, slot.scoring.model.clone(), slot.thresholds()));
                }
                Err(e) => demote = Some(format!("inference failed: {e}")),
            }
        }
        if let Some(reason) = demote {
            // The active model already scored this batch: no window goes without a decision.
            self.apply(Command::Demote { reason, sha256: None, reply: None });
            candidate_scores = None;
        }
        let active_model = self.active.scoring.model.clone();
        let active_t = self.active.thresholds();
        let mut out = Vec::with_capacity(batch.len());
        for (i, job) in batch.drain(..).enumerate() {
            let a = active[i];
            let c = candidate_scores.as_ref().and_then(|(s, mode, model, t)| s[i].map(|v| (v, *mode, model.clone(), *t)));
            let (decider, peer) = match (a, c) {
                (None, None) => {
                    carry.extend(job.before);
                    continue;
                }
                // Canary: the candidate decides its cohort; the active model's score is the peer.
                (a, Some((cv, DeployMode::Canary, cm, ct))) => (
                    (cv, cm, ct),
                    a.map(|(error, score)| PeerScore { model: active_model.clone(), error, score, thresholds: active_t, is_candidate: false, mode: "canary" }),
                ),
                (Some(av), Some(((error, score), mode, cm, ct))) => (
                    (av, active_model.clone(), active_t),
                    Some(PeerScore { model: cm, error, score, thresholds: ct, is_candidate: true, mode: mode.as_str() }),
                ),
                (Some(av), None) => ((av, active_model.clone(), active_t), None),
                // Shadow only (the active model is still warming up): nothing decides.
                (None, Some(_)) => {
                    carry.extend(job.before);
                    continue;
                }
            };
            let (scored, model, thresholds) = decider;
            out.push(ScoredWindow::of(job, scored, model, thresholds, peer, &mut carry));
        }
        metrics.windows_scored.add(out.len() as u64);
        (out, carry)
    }
}

fn answer(reply: Option<Reply>, result: Result<DeploymentView, String>) {
    if let Some(r) = reply {
        // The requester may have given up (timeout): nothing to do then.
        let _ = r.send(result);
    }
}

// ---------------------------------------------------------------------------------------------
// The registry and the loader thread.
// ---------------------------------------------------------------------------------------------

/// An uploaded version (`POST /api/models`), already written to a hidden folder inside the
/// registry.
pub struct Upload {
    /// `<registry>/.upload-*` holding the three files.
    pub staged: PathBuf,
    pub mode: DeployMode,
    pub reply: Reply,
}

/// The files of an upload, as `POST /api/models` takes them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadBody {
    /// `manifest.json` (its `file` and `golden` name the other two files).
    pub manifest: serde_json::Value,
    /// The model file, hex-encoded.
    pub model_hex: String,
    /// `golden.json`.
    pub golden: serde_json::Value,
}

/// Writes an upload into a hidden staging folder of the registry (the loader moves it into
/// place once it verifies).
pub fn stage_upload(registry: &Path, body: &UploadBody) -> Result<PathBuf, LifecycleError> {
    let bad = |reason: String| LifecycleError::Registry { path: registry.display().to_string(), reason };
    let name_of = |key: &str| -> Result<String, LifecycleError> {
        let v = body.manifest.get(key).and_then(|v| v.as_str()).ok_or_else(|| bad(format!("manifest has no string `{key}`")))?;
        if v.is_empty() || v.starts_with('.') || v.contains(['/', '\\', '\0']) {
            return Err(bad(format!("manifest `{key}` {v:?} is not a plain name")));
        }
        Ok(v.to_string())
    };
    let (file, golden) = (name_of("file")?, name_of("golden")?);
    name_of("name")?;
    name_of("version")?;
    let model = hex::decode(body.model_hex.trim()).map_err(|e| bad(format!("model_hex is not hex: {e}")))?;
    let staged = registry.join(format!(".upload-{}-{}", std::process::id(), &sha256_hex(&model)[..16]));
    let io = |e: std::io::Error| bad(format!("cannot write {}: {e}", staged.display()));
    let _ = std::fs::remove_dir_all(&staged);
    std::fs::create_dir_all(&staged).map_err(io)?;
    let json = |v: &serde_json::Value| serde_json::to_vec_pretty(v).unwrap_or_default();
    std::fs::write(staged.join(MANIFEST_FILE), json(&body.manifest)).map_err(io)?;
    std::fs::write(staged.join(&file), &model).map_err(io)?;
    std::fs::write(staged.join(&golden), json(&body.golden)).map_err(io)?;
    Ok(staged)
}

/// What the loader thread needs.
pub struct Loader {
    pub registry: Option<PathBuf>,
    pub scan_interval: Duration,
    pub deploy: DeployMode,
    pub verify_golden: bool,
    pub alerts: AlertsConfig,
    pub shape: PipelineShape,
    /// Registry folders already handled.
    pub seen: BTreeMap<String, String>,
    pub uploads: Receiver<Upload>,
    /// Kept so that `uploads` never disconnects (the API may hold no sender).
    pub uploads_tx: Sender<Upload>,
    pub commands: Sender<Command>,
    pub stop: Arc<AtomicBool>,
}

/// Identity of a version folder's contents: names, sizes and modification times.
fn signature(dir: &Path) -> Option<String> {
    let mut parts = Vec::new();
    for e in std::fs::read_dir(dir).ok()? {
        let e = e.ok()?;
        let md = e.metadata().ok()?;
        let mtime = md.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map_or(0, |d| d.as_nanos());
        parts.push(format!("{}:{}:{}", e.file_name().to_string_lossy(), md.len(), mtime));
    }
    parts.sort();
    Some(sha256_hex(parts.join("\n").as_bytes()))
}

/// Every `<registry>/<name>/<version>/` folder with a manifest (hidden names skipped).
pub fn registry_versions(registry: &Path) -> Vec<(String, PathBuf)> {
    let visible = |e: &std::fs::DirEntry| !e.file_name().to_string_lossy().starts_with('.') && e.path().is_dir();
    let mut out = Vec::new();
    let Ok(names) = std::fs::read_dir(registry) else { return out };
    for name in names.flatten().filter(visible) {
        let Ok(versions) = std::fs::read_dir(name.path()) else { continue };
        for v in versions.flatten().filter(visible) {
            if v.path().join(MANIFEST_FILE).is_file() {
                out.push((format!("{}/{}", name.file_name().to_string_lossy(), v.file_name().to_string_lossy()), v.path()));
            }
        }
    }
    out.sort();
    out
}

/// What a folder's manifest says it is (for refusals), as far as it can be read.
fn claimed_model(dir: &Path) -> ModelRef {
    let v: serde_json::Value = std::fs::read(dir.join(MANIFEST_FILE)).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("?").to_string();
    ModelRef { name: s("name"), version: s("version"), sha256: s("sha256") }
}

impl Loader {
    /// Marks every version already in the registry as handled (first start: only versions
    /// that appear later are deployed).
    pub fn baseline(registry: &Path) -> BTreeMap<String, String> {
        registry_versions(registry).into_iter().filter_map(|(k, dir)| signature(&dir).map(|s| (k, s))).collect()
    }

    fn load(&self, dir: &Path) -> Result<Slot, LifecycleError> {
        let runtime = load_model(dir, self.verify_golden, Some(&self.shape))?;
        Ok(Slot::new(runtime, &self.alerts, None))
    }

    /// Runs until `stop`: scans the registry every `scan_interval` and serves uploads.
    pub fn run(mut self) {
        // key -> signature seen at the previous scan (a folder is loaded once it is stable).
        let mut pending: BTreeMap<String, String> = BTreeMap::new();
        while !self.stop.load(Ordering::Relaxed) {
            match self.uploads.recv_timeout(self.scan_interval) {
                Ok(upload) => self.upload(upload),
                Err(_) => self.scan(&mut pending),
            }
        }
    }

    fn scan(&mut self, pending: &mut BTreeMap<String, String>) {
        let Some(registry) = self.registry.clone() else { return };
        let mut now = BTreeMap::new();
        for (key, dir) in registry_versions(&registry) {
            let Some(sig) = signature(&dir) else { continue };
            if self.seen.get(&key) == Some(&sig) {
                continue;
            }
            if pending.get(&key) == Some(&sig) {
                self.seen.insert(key.clone(), sig.clone());
                self.deploy(&dir, self.deploy, Some((key, sig)), None);
            } else {
                now.insert(key, sig);
            }
        }
        *pending = now;
    }

    fn deploy(&self, dir: &Path, mode: DeployMode, seen: Option<(String, String)>, reply: Option<Reply>) {
        match self.load(dir) {
            Ok(slot) => {
                let _ = self.commands.send(Command::Install { slot: Box::new(slot), mode, seen, reply });
            }
            Err(e) => {
                let error = e.to_string();
                if let Some(r) = reply {
                    let _ = r.send(Err(error.clone()));
                }
                let _ = self.commands.send(Command::Refused { model: claimed_model(dir), dir: dir.to_path_buf(), error, seen });
            }
        }
    }

    fn upload(&mut self, upload: Upload) {
        let Upload { staged, mode, reply } = upload;
        let Some(registry) = self.registry.clone() else {
            let _ = reply.send(Err("models.registry is not configured".into()));
            return;
        };
        // Verify in the staging folder; move into place only what verifies.
        match self.load(&staged) {
            Ok(slot) => {
                let m = slot.model().clone();
                let key = format!("{}/{}", m.name, m.version);
                let target = registry.join(&m.name).join(&m.version);
                if target.exists() {
                    let _ = std::fs::remove_dir_all(&staged);
                    let _ = reply.send(Err(format!("{} already exists in the registry: a version is immutable, upload a new version", target.display())));
                    return;
                }
                let moved = std::fs::create_dir_all(registry.join(&m.name)).and_then(|()| std::fs::rename(&staged, &target));
                if let Err(e) = moved {
                    let _ = std::fs::remove_dir_all(&staged);
                    let _ = reply.send(Err(format!("cannot move the upload to {}: {e}", target.display())));
                    return;
                }
                // The slot was loaded from the staging folder: name the registry folder.
                let mut slot = slot;
                slot.dir = target.clone();
                let sig = signature(&target).unwrap_or_default();
                self.seen.insert(key.clone(), sig.clone());
                let _ = self.commands.send(Command::Install { slot: Box::new(slot), mode, seen: Some((key, sig)), reply: Some(reply) });
            }
            Err(e) => {
                let error = e.to_string();
                let model = claimed_model(&staged);
                let _ = std::fs::remove_dir_all(&staged);
                let _ = reply.send(Err(error.clone()));
                let _ = self.commands.send(Command::Refused { model, dir: staged, error, seen: None });
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Metrics.
// ---------------------------------------------------------------------------------------------

/// `vigil_model_*` families: the deployed models, their comparison and lifecycle events.
pub struct LifecycleCollector(pub Arc<Lifecycle>);

impl Collector for LifecycleCollector {
    fn collect(&self, out: &mut Exposition) {
        let (view, counts) = {
            let s = self.0.lock();
            (s.view.clone(), s.counts)
        };
        out.family("vigil_model_info", Kind::Gauge, "Deployed models (always 1), with their role (active, shadow, canary).");
        for m in std::iter::once(&view.active).chain(view.candidate.as_ref()) {
            out.sample("vigil_model_info", &[("name", &m.name), ("version", &m.version), ("sha256", &m.sha256), ("role", m.mode)], 1.0);
        }
        out.family("vigil_model_threshold", Kind::Gauge, "Score thresholds of the active model in effect, per band.");
        out.sample("vigil_model_threshold", &[("band", "review")], view.active.review_threshold);
        out.sample("vigil_model_threshold", &[("band", "alert")], view.active.alert_threshold);
        out.family("vigil_model_events_total", Kind::Counter, "Model lifecycle events since start: deployed, promoted, demoted (rolled back), refused.");
        for (name, n) in EVENT_NAMES.iter().zip(counts) {
            out.sample("vigil_model_events_total", &[("event", name)], n as f64);
        }
        if let Some(c) = &view.comparison {
            out.family("vigil_model_comparison_windows", Kind::Gauge, "Windows scored by both the active model and the candidate.");
            out.sample("vigil_model_comparison_windows", &[], c.windows as f64);
            out.family("vigil_model_comparison_agreement", Kind::Gauge, "Fraction of compared windows where both models gave the same band.");
            out.sample("vigil_model_comparison_agreement", &[], c.agreement);
            out.family("vigil_model_comparison_score_correlation", Kind::Gauge, "Pearson correlation of the two models' scores on the compared windows.");
            out.sample("vigil_model_comparison_score_correlation", &[], c.score_correlation);
            out.family("vigil_model_comparison_alert_rate", Kind::Gauge, "Fraction of compared windows in the alert band, per model role.");
            out.sample("vigil_model_comparison_alert_rate", &[("role", "active")], c.active_alert_rate);
            out.sample("vigil_model_comparison_alert_rate", &[("role", "candidate")], c.candidate_alert_rate);
            out.family("vigil_model_comparison_latency_us", Kind::Gauge, "Mean inference time per window (normalisation and invoke), per model role.");
            out.sample("vigil_model_comparison_latency_us", &[("role", "active")], c.active_latency_us);
            out.sample("vigil_model_comparison_latency_us", &[("role", "candidate")], c.candidate_latency_us);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canary_cohort_is_stable_and_near_the_fraction() {
        let sha = "ab".repeat(32);
        let n = 20_000;
        let members: Vec<bool> = (0..n).map(|i| canary_member(&format!("line{}.sensor{}", i % 97, i), &sha, 0.1)).collect();
        let frac = members.iter().filter(|m| **m).count() as f64 / n as f64;
        assert!((frac - 0.1).abs() < 0.01, "{frac}");
        // Pure function of (entity, sha): the same answer every time.
        assert!((0..n).all(|i| canary_member(&format!("line{}.sensor{}", i % 97, i), &sha, 0.1) == members[i]));
        assert!(!canary_member("x", &sha, 0.0));
        assert!(canary_member("x", &sha, 1.0));
    }

    #[test]
    fn comparison_statistics() {
        let mut c = Comparison::default();
        // (score, alert band?, band id)
        c.add_pair((0.1, false, 0), (0.2, false, 0));
        c.add_pair((0.9, true, 2), (0.8, true, 2));
        c.add_pair((0.5, false, 1), (0.9, true, 2));
        c.add_pair((0.2, false, 0), (0.1, false, 0));
        assert_eq!(c.windows, 4);
        assert_eq!(c.agreement, 0.75);
        assert_eq!((c.active_alert_rate, c.candidate_alert_rate), (0.25, 0.5));
        assert_eq!(c.alert_rate_difference, 0.25);
        // numpy.corrcoef([.1,.9,.5,.2],[.2,.8,.9,.1])[0,1] = 0.81786504...
        assert!((c.score_correlation - 0.817_865_041).abs() < 1e-6, "{}", c.score_correlation);
        c.add_latency(true, Duration::from_micros(30), 3);
        c.add_latency(true, Duration::from_micros(10), 1);
        assert!((c.candidate_latency_us - 10.0).abs() < 1e-9);
        assert_eq!(c.candidate_windows(), 4);
    }
}
