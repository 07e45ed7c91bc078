//! The agent's local HTTP server: `/metrics`, `/health`, `/ready`, the JSON API and the
//! dashboard.
//!
//! # Design constraints
//!
//! - **Local by default.** It binds `api.listen` (default `127.0.0.1:9464`); exposing it on a
//!   plant network is an explicit choice. Plain HTTP/1: put a TLS reverse proxy in front for
//!   anything leaving the box.
//! - **Reading is open, changing state needs the token.** Every `GET` is unauthenticated (what
//!   a Prometheus scraper or a wall display needs). Every request that changes state (`POST`)
//!   needs `Authorization: Bearer <api.token>`: a missing header is `401`, a wrong token `403`,
//!   and without a configured token such requests are refused (`403`). Tokens are compared in
//!   constant time and never logged.
//! - **Never in the data path's way.** Handlers run on the agent's small I/O runtime and read
//!   atomics ([`crate::metrics`]), the [`live::LiveView`] (short locks) and redb read
//!   transactions (which do not block the commit log's writer).
//! - The dashboard ([`dashboard`]) is one HTML page compiled into the binary: no build step, no
//!   CDN, works offline.
//!
//! # Endpoints
//!
//! | method | path                 | what                                                        |
//! |--------|----------------------|-------------------------------------------------------------|
//! | GET    | `/`                  | the dashboard                                               |
//! | GET    | `/metrics`           | Prometheus text format ([`crate::metrics`] documents names) |
//! | GET    | `/health`            | liveness: `200` while the agent runs; `ok`, or `degraded` and one line per problem (an MQTT subscription or alert publish the broker refused) |
//! | GET    | `/ready`             | readiness: store open, model loaded, a source connected; `degraded` lists the problems |
//! | GET    | `/api/state`         | everything the dashboard shows, in one document             |
//! | GET    | `/api/entities`      | per entity: latest reading, features, score (`?filter=&limit=`) |
//! | GET    | `/api/scores`        | the most recent scores (`?limit=`)                          |
//! | GET    | `/api/alerts`        | open alerts, recent review and health events                |
//! | POST   | `/api/alerts/ack`    | acknowledge `{"entity": "...", "by": "..."}` (token)        |
//! | GET    | `/api/review`        | the human review queue: pending review-band windows (entity, window, score, model), oldest first (`?limit=`, default 100) |
//! | POST   | `/api/review/{id}`   | label item `id` `{"label": "normal"|"anomaly", "by": "..."}` (token): stored and uplinked as a `review_label` record; `404` for an unknown id |
//! | GET    | `/api/dlq`           | dead letters: counts per reason, the latest entries         |
//! | POST   | `/api/dlq/replay`    | decode dead letters again with the running config and commit what decodes (`{"id": N}` for one; token) |
//! | GET    | `/api/uplink`        | outbox depth and per-sink delivery                          |
//! | GET    | `/api/models`        | deployed models, candidate vs active comparison, lifecycle events, registry versions |
//! | POST   | `/api/models`        | upload a version `{"manifest": {..}, "model_hex": "..", "golden": {..}}` into the registry and deploy it (`?mode=active|shadow|canary`, default `models.deploy`; token) |
//! | POST   | `/api/models/promote`| make the candidate the active model (token)                 |
//! | POST   | `/api/models/demote` | demote the candidate (token)                                 |
//! | POST   | `/api/config/reload` | reload the config file (as SIGHUP; token): `{"applied": [keys], "restart_needed": [keys]}`, or `422` with `file:line: key` and nothing changed |
//! | GET    | `/api/events`        | server-sent events: `state` (as `/api/state`) on change and every second |

pub mod dashboard;
pub mod live;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use cloud_uplink::Outbox;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata};
use serde::{Deserialize, Serialize};

use crate::config::Secret;
use crate::dlq::{DlqEntry, DlqReason};
use crate::metrics::{Metrics, Registry};
use crate::store;
use live::LiveView;

/// Entities in `/api/state` and each dashboard update (open alerts and highest scores first).
pub const STATE_ENTITIES: usize = 60;

/// Everything the handlers read.
pub struct ApiState {
    pub agent_id: String,
    pub metrics: Arc<Metrics>,
    pub registry: Registry,
    pub live: Arc<LiveView>,
    pub db: Arc<Database>,
    pub outbox: Arc<Outbox>,
    pub token: Option<Secret>,
    /// Deployed models, their comparison and lifecycle requests.
    pub lifecycle: Arc<crate::inference::lifecycle::Lifecycle>,
    /// Readiness without a connected source (`api.sources_optional`, or the simulator).
    pub sources_optional: bool,
    /// An MQTT ingest connection is configured (readiness waits for it).
    pub mqtt_ingest: bool,
    pub started_ms: i64,
    /// Model drift (when the manifest has reference distributions).
    pub drift: Option<Arc<crate::inference::drift::DriftMonitor>>,
    /// The broker's answers to the MQTT subscriptions (a refused one makes the agent degraded).
    pub subscriptions: Arc<crate::ingest::subscriptions::SubscriptionStatus>,
    /// Alert publishes the broker refused (degraded until it accepts one again).
    pub publish_refusals: Arc<crate::alerts::publish::PublishRefusals>,
    /// Requests to the commit log (the single writer), e.g. a DLQ replay.
    pub commit_log: crossbeam_channel::Sender<crate::commit_log::Control>,
    /// Config reload requests to the agent's main loop.
    pub reload: tokio::sync::mpsc::Sender<crate::agent::ReloadRequest>,
}

/// Builds the router.
pub fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/", get(dashboard::page))
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/api/state", get(api_state))
        .route("/api/entities", get(entities))
        .route("/api/scores", get(scores))
        .route("/api/alerts", get(alerts))
        .route("/api/alerts/ack", post(ack))
        .route("/api/review", get(review_queue))
        .route("/api/review/{id}", post(review_label))
        .route("/api/dlq", get(dlq))
        .route("/api/dlq/replay", post(dlq_replay))
        .route("/api/uplink", get(uplink))
        .route("/api/models", get(models).post(model_upload))
        .route("/api/models/promote", post(model_promote))
        .route("/api/models/demote", post(model_demote))
        .route("/api/config/reload", post(config_reload))
        .route("/api/events", get(events))
        .with_state(state)
}

/// Serves on `listener` until the task is aborted.
pub async fn serve(listener: std::net::TcpListener, state: Arc<ApiState>) {
    let listener = match listener.set_nonblocking(true).and_then(|()| tokio::net::TcpListener::from_std(listener)) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "cannot serve the HTTP API");
            return;
        }
    };
    if let Err(e) = axum::serve(listener, router(state)).await {
        tracing::error!(error = %e, "HTTP API stopped");
    }
}

async fn metrics(State(s): State<Arc<ApiState>>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], s.registry.render()).into_response()
}

#[derive(Serialize)]
struct Readiness {
    ready: bool,
    store_open: bool,
    model_loaded: bool,
    source_connected: bool,
    sources_optional: bool,
    /// Problems that leave the agent running but blind to part of its input (empty: none).
    degraded: Vec<String>,
}

/// What keeps the agent from seeing all its input, or from being heard, while it runs: MQTT
/// subscriptions the broker refused, one line each, naming the filter and the broker's reason
/// code; alert publishes the broker refused, until it accepts one again.
fn degraded(s: &ApiState) -> Vec<String> {
    let mut lines: Vec<String> = s.subscriptions.refused().iter().map(|r| format!("MQTT subscription refused by the broker: {r}")).collect();
    lines.extend(s.publish_refusals.degraded());
    lines
}

/// Liveness stays `200` while the agent runs (restarting it does not fix a broker's ACL); the
/// body says `ok`, or `degraded` followed by one line per problem.
async fn health(State(s): State<Arc<ApiState>>) -> String {
    let problems = degraded(&s);
    if problems.is_empty() {
        return "ok\n".into();
    }
    let mut body = String::from("degraded\n");
    for p in problems {
        body += &p;
        body.push('\n');
    }
    body
}

fn readiness(s: &ApiState) -> Readiness {
    // The store is open and the model loaded for as long as the server runs: it starts after
    // both and stops before either is dropped.
    let source_connected = s.mqtt_ingest && s.metrics.mqtt_ingest_connected.get() == 1;
    Readiness {
        ready: source_connected || s.sources_optional,
        store_open: true,
        model_loaded: true,
        source_connected,
        sources_optional: s.sources_optional,
        degraded: degraded(s),
    }
}

async fn ready(State(s): State<Arc<ApiState>>) -> Response {
    let r = readiness(&s);
    let code = if r.ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, Json(r)).into_response()
}

#[derive(Deserialize)]
struct ListQuery {
    limit: Option<usize>,
    filter: Option<String>,
}

/// Entities from the live view, with their features from the feature store.
fn entity_views(s: &ApiState, limit: usize, filter: Option<&str>) -> Vec<live::EntityView> {
    let mut views = s.live.entities(limit, filter);
    let table = s.db.begin_read().ok().and_then(|t| t.open_table(store::FEATURES).ok());
    if let Some(table) = table {
        for v in &mut views {
            v.features = table.get(v.entity.as_str()).ok().flatten().and_then(|g| serde_json::from_slice(g.value()).ok());
        }
    }
    views
}

async fn entities(State(s): State<Arc<ApiState>>, Query(q): Query<ListQuery>) -> Response {
    Json(entity_views(&s, q.limit.unwrap_or(1000), q.filter.as_deref())).into_response()
}

async fn scores(State(s): State<Arc<ApiState>>, Query(q): Query<ListQuery>) -> Response {
    Json(s.live.recent_scores(q.limit.unwrap_or(100))).into_response()
}

#[derive(Serialize)]
struct AlertsView {
    open: Vec<live::OpenAlert>,
    reviews: Vec<live::Event>,
    health: Vec<live::Event>,
}

fn alerts_view(s: &ApiState) -> AlertsView {
    AlertsView { open: s.live.open_alerts(), reviews: s.live.reviews(), health: s.live.health_events() }
}

async fn alerts(State(s): State<Arc<ApiState>>) -> Response {
    Json(alerts_view(&s)).into_response()
}

/// Why a state-changing request was refused.
fn authorize(headers: &HeaderMap, token: Option<&Secret>) -> Result<(), (StatusCode, &'static str)> {
    let Some(token) = token else {
        return Err((StatusCode::FORBIDDEN, "state-changing requests are disabled: set api.token (or VIGIL_API_TOKEN)\n"));
    };
    let Some(given) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer ")) else {
        return Err((StatusCode::UNAUTHORIZED, "missing Authorization: Bearer <api.token>\n"));
    };
    if constant_time_eq(given.trim().as_bytes(), token.expose().as_bytes()) {
        Ok(())
    } else {
        Err((StatusCode::FORBIDDEN, "wrong token\n"))
    }
}

/// Compares without an early exit on the first differing byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() ^ b.len()) as u8;
    for (i, x) in a.iter().enumerate() {
        diff |= x ^ b.get(i % b.len().max(1)).copied().unwrap_or(0);
    }
    diff == 0 && a.len() == b.len()
}

#[derive(Deserialize)]
struct AckRequest {
    entity: String,
    /// Who acknowledges (shown on the dashboard). Default `api`.
    by: Option<String>,
}

async fn ack(State(s): State<Arc<ApiState>>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    if let Err(refused) = authorize(&headers, s.token.as_ref()) {
        return refused.into_response();
    }
    let req: AckRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("expected {{\"entity\": \"...\", \"by\": \"...\"}}: {e}\n")).into_response(),
    };
    let not_open = || (StatusCode::NOT_FOUND, format!("no open alert for entity {:?}\n", req.entity)).into_response();
    let Some(open) = s.live.open_alert(&req.entity) else { return not_open() };
    let ack = crate::alerts::Acknowledgement { window_end_ms: open.window_end_ms, by: req.by.unwrap_or_else(|| "api".into()), acked_ms: crate::reading::now_ms() };
    // Durable first (the `alert_ack` table, by the commit log), then shown.
    let (reply, committed) = tokio::sync::oneshot::channel();
    let control = crate::commit_log::Control::Acknowledge { entity: req.entity.clone(), ack: ack.clone(), reply };
    if let Err(refused) = ask_commit_log(&s, control, committed).await {
        return refused;
    }
    if s.live.acknowledge(&req.entity, &ack) {
        tracing::info!(entity = %req.entity, by = %ack.by, "alert acknowledged");
        (StatusCode::OK, Json(serde_json::json!({"acknowledged": req.entity}))).into_response()
    } else {
        // Cleared (or raised again) meanwhile; the stored acknowledgement names the old raise.
        not_open()
    }
}

#[derive(Deserialize)]
struct ReviewQuery {
    limit: Option<usize>,
}

#[derive(Serialize)]
struct ReviewItemView {
    id: u64,
    #[serde(flatten)]
    item: crate::alerts::review::ReviewItem,
}

async fn review_queue(State(s): State<Arc<ApiState>>, Query(q): Query<ReviewQuery>) -> Response {
    match crate::alerts::review::pending(&s.db, q.limit.unwrap_or(100)) {
        Ok(items) => Json(serde_json::json!({
            "pending": items.into_iter().map(|(id, item)| ReviewItemView { id, item }).collect::<Vec<_>>(),
        }))
        .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("cannot read the review queue: {e}\n")).into_response(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LabelRequest {
    label: crate::alerts::review::Verdict,
    /// Who labels (uplinked with the label). Default `api`.
    by: Option<String>,
}

async fn review_label(State(s): State<Arc<ApiState>>, axum::extract::Path(id): axum::extract::Path<String>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    if let Err(refused) = authorize(&headers, s.token.as_ref()) {
        return refused.into_response();
    }
    let unknown = || (StatusCode::NOT_FOUND, format!("no review queue item {id:?}\n")).into_response();
    let Ok(n) = id.parse::<u64>() else { return unknown() };
    let req: LabelRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("expected {{\"label\": \"normal\" | \"anomaly\", \"by\": \"...\"}}: {e}\n")).into_response(),
    };
    let label = crate::alerts::review::Label { verdict: req.label, by: req.by.unwrap_or_else(|| "api".into()), labelled_ms: crate::reading::now_ms() };
    let (reply, committed) = tokio::sync::oneshot::channel();
    let control = crate::commit_log::Control::Label { id: n, label: label.clone(), reply };
    match ask_commit_log(&s, control, committed).await {
        Err(refused) => refused,
        Ok(None) => unknown(),
        Ok(Some(item)) => {
            tracing::info!(id = n, entity = %item.entity, label = label.verdict.as_str(), by = %label.by, "review item labelled");
            (StatusCode::OK, Json(ReviewItemView { id: n, item })).into_response()
        }
    }
}

/// Longest wait for a model to be verified and swapped in (`POST /api/models`).
const MODEL_DEPLOY_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Serialize)]
struct ModelsView {
    #[serde(flatten)]
    deployment: crate::inference::lifecycle::DeploymentView,
    /// Registry folders (`name/version`), when `models.registry` is set.
    registry: Vec<String>,
}

async fn models(State(s): State<Arc<ApiState>>) -> Response {
    let registry = s.lifecycle.registry.as_deref().map(crate::inference::lifecycle::registry_versions).unwrap_or_default();
    Json(ModelsView { deployment: s.lifecycle.view(), registry: registry.into_iter().map(|(k, _)| k).collect() }).into_response()
}

#[derive(Deserialize)]
struct DeployQuery {
    mode: Option<crate::config::DeployMode>,
}

/// Waits for the inference thread's (or the loader's) answer to a lifecycle request.
async fn lifecycle_answer(answer: tokio::sync::oneshot::Receiver<Result<crate::inference::lifecycle::DeploymentView, String>>) -> Response {
    match tokio::time::timeout(MODEL_DEPLOY_TIMEOUT, answer).await {
        Ok(Ok(Ok(view))) => (StatusCode::OK, Json(view)).into_response(),
        Ok(Ok(Err(refused))) => (StatusCode::UNPROCESSABLE_ENTITY, format!("{refused}\n")).into_response(),
        Ok(Err(_)) => (StatusCode::SERVICE_UNAVAILABLE, "the agent is stopping: nothing was changed\n").into_response(),
        Err(_) => (StatusCode::GATEWAY_TIMEOUT, "no answer in time; the change may still happen\n").into_response(),
    }
}

async fn model_upload(State(s): State<Arc<ApiState>>, Query(q): Query<DeployQuery>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    if let Err(refused) = authorize(&headers, s.token.as_ref()) {
        return refused.into_response();
    }
    let Some(registry) = s.lifecycle.registry.clone() else {
        return (StatusCode::CONFLICT, "models.registry is not configured: uploads need a registry\n").into_response();
    };
    let upload: crate::inference::lifecycle::UploadBody = match serde_json::from_slice(&body) {
        Ok(u) => u,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("expected {{\"manifest\": {{..}}, \"model_hex\": \"..\", \"golden\": {{..}}}}: {e}\n")).into_response(),
    };
    let staged = match tokio::task::spawn_blocking(move || crate::inference::lifecycle::stage_upload(&registry, &upload)).await {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    };
    let (reply, answer) = tokio::sync::oneshot::channel();
    let mode = q.mode.unwrap_or(s.lifecycle.deploy);
    if s.lifecycle.uploads.send(crate::inference::lifecycle::Upload { staged, mode, reply }).is_err() {
        return (StatusCode::SERVICE_UNAVAILABLE, "the agent is stopping: nothing was changed\n").into_response();
    }
    lifecycle_answer(answer).await
}

async fn model_promote(State(s): State<Arc<ApiState>>, headers: HeaderMap) -> Response {
    if let Err(refused) = authorize(&headers, s.token.as_ref()) {
        return refused.into_response();
    }
    let (reply, answer) = tokio::sync::oneshot::channel();
    let _ = s.lifecycle.commands.send(crate::inference::lifecycle::Command::Promote { reply: Some(reply) });
    lifecycle_answer(answer).await
}

async fn model_demote(State(s): State<Arc<ApiState>>, headers: HeaderMap) -> Response {
    if let Err(refused) = authorize(&headers, s.token.as_ref()) {
        return refused.into_response();
    }
    let (reply, answer) = tokio::sync::oneshot::channel();
    let reason = "demoted through the API".to_string();
    let _ = s.lifecycle.commands.send(crate::inference::lifecycle::Command::Demote { reason, sha256: None, reply: Some(reply) });
    lifecycle_answer(answer).await
}

async fn config_reload(State(s): State<Arc<ApiState>>, headers: HeaderMap) -> Response {
    if let Err(refused) = authorize(&headers, s.token.as_ref()) {
        return refused.into_response();
    }
    let (reply, answer) = tokio::sync::oneshot::channel();
    if s.reload.send(crate::agent::ReloadRequest { reply }).await.is_err() {
        return (StatusCode::SERVICE_UNAVAILABLE, "the agent is stopping: nothing was changed\n").into_response();
    }
    match tokio::time::timeout(MODEL_DEPLOY_TIMEOUT, answer).await {
        Ok(Ok(Ok(outcome))) => (StatusCode::OK, Json(outcome)).into_response(),
        Ok(Ok(Err(rejected))) => (StatusCode::UNPROCESSABLE_ENTITY, format!("{rejected}\n")).into_response(),
        Ok(Err(_)) => (StatusCode::SERVICE_UNAVAILABLE, "the agent is stopping: nothing was changed\n").into_response(),
        Err(_) => (StatusCode::GATEWAY_TIMEOUT, "no answer in time; the reload may still happen\n").into_response(),
    }
}

/// Sends `control` to the commit log and waits for its answer on `answer`.
async fn ask_commit_log<T>(s: &ApiState, control: crate::commit_log::Control, answer: tokio::sync::oneshot::Receiver<T>) -> Result<T, Response> {
    let stopping = || (StatusCode::SERVICE_UNAVAILABLE, "the agent is stopping: nothing was changed\n").into_response();
    if s.commit_log.send(control).is_err() {
        return Err(stopping());
    }
    match tokio::time::timeout(COMMIT_LOG_TIMEOUT, answer).await {
        Ok(Ok(v)) => Ok(v),
        // The commit log stopped before it took the request: nothing was committed.
        Ok(Err(_)) => Err(stopping()),
        Err(_) => Err((StatusCode::GATEWAY_TIMEOUT, "the commit log did not answer in time; the change may still be committed\n").into_response()),
    }
}

#[derive(Serialize)]
struct DlqEntryView {
    id: u64,
    received_ms: i64,
    source: &'static str,
    reason: DlqReason,
    topic: String,
    bytes: usize,
    detail: String,
}

#[derive(Serialize)]
struct DlqView {
    /// Dead letters stored (kept until replayed with `vigil dlq replay`).
    stored: u64,
    /// Per reason, since the agent started.
    since_start: std::collections::BTreeMap<&'static str, u64>,
    /// The latest entries, newest first.
    latest: Vec<DlqEntryView>,
}

fn dlq_view(s: &ApiState, latest: usize) -> Result<DlqView, String> {
    let txn = s.db.begin_read().map_err(|e| e.to_string())?;
    let table = txn.open_table(store::DLQ).map_err(|e| e.to_string())?;
    let stored = table.len().map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for row in table.iter().map_err(|e| e.to_string())?.rev().take(latest) {
        let (k, v) = row.map_err(|e| e.to_string())?;
        let e: DlqEntry = store::from_cbor("dlq", k.value(), v.value()).map_err(|e| e.to_string())?;
        out.push(DlqEntryView {
            id: k.value(),
            received_ms: e.received_ms,
            source: e.source.as_str(),
            reason: e.reason,
            topic: e.topic,
            bytes: e.raw.len(),
            detail: e.detail,
        });
    }
    let since_start = DlqReason::ALL.iter().map(|r| (r.as_str(), s.metrics.dlq.get(*r))).collect();
    Ok(DlqView { stored, since_start, latest: out })
}

async fn dlq(State(s): State<Arc<ApiState>>) -> Response {
    match dlq_view(&s, 20) {
        Ok(v) => Json(v).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("cannot read the DLQ: {e}\n")).into_response(),
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ReplayRequest {
    /// Only this dead letter (default: all).
    id: Option<u64>,
}

/// How long a request waits for the commit log's answer; what it asked for is committed (or
/// not) in one transaction regardless.
const COMMIT_LOG_TIMEOUT: Duration = Duration::from_secs(60);

async fn dlq_replay(State(s): State<Arc<ApiState>>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    if let Err(refused) = authorize(&headers, s.token.as_ref()) {
        return refused.into_response();
    }
    let req: ReplayRequest = match body.iter().all(u8::is_ascii_whitespace) {
        true => ReplayRequest::default(),
        false => match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => return (StatusCode::BAD_REQUEST, format!("expected {{}} or {{\"id\": N}}: {e}\n")).into_response(),
        },
    };
    let (reply, answer) = tokio::sync::oneshot::channel();
    match ask_commit_log(&s, crate::commit_log::Control::ReplayDlq { only: req.id, reply }, answer).await {
        Ok(outcome) => Json(outcome).into_response(),
        Err(refused) => refused,
    }
}

#[derive(Serialize)]
struct SinkView {
    name: String,
    oldest_undelivered_age_ms: Option<u64>,
    delivered_records: u64,
    failures: u64,
    consecutive_failures: u64,
    last_error: Option<String>,
}

#[derive(Serialize)]
struct UplinkView {
    used_bytes: u64,
    quota_bytes: u64,
    /// Records stored per class.
    records: std::collections::BTreeMap<&'static str, u64>,
    dropped: std::collections::BTreeMap<&'static str, u64>,
    sinks: Vec<SinkView>,
}

fn uplink_view(s: &ApiState) -> Result<UplinkView, String> {
    let stats = s.outbox.stats().map_err(|e| e.to_string())?;
    Ok(UplinkView {
        used_bytes: stats.used_bytes,
        quota_bytes: stats.quota_bytes,
        records: stats.classes.iter().map(|c| (c.class.as_str(), c.records)).collect(),
        dropped: stats.classes.iter().map(|c| (c.class.as_str(), c.dropped)).collect(),
        sinks: stats
            .sinks
            .into_iter()
            .map(|k| SinkView {
                name: k.name,
                oldest_undelivered_age_ms: k.oldest_undelivered_age_ms,
                delivered_records: k.delivered_records,
                failures: k.failures,
                consecutive_failures: k.consecutive_failures,
                last_error: k.last_error,
            })
            .collect(),
    })
}

async fn uplink(State(s): State<Arc<ApiState>>) -> Response {
    match uplink_view(&s) {
        Ok(v) => Json(v).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("cannot read the outbox: {e}\n")).into_response(),
    }
}

#[derive(Serialize)]
struct Counts {
    readings_in: u64,
    windows_scored: u64,
    late_readings: u64,
    alerts_raised: u64,
    mqtt_connected: bool,
    broker_dropped: Option<u64>,
    sequence_gaps: u64,
}

/// What the dashboard shows, in one document.
#[derive(Serialize)]
struct StateView {
    agent: String,
    now_ms: i64,
    started_ms: i64,
    model: cloud_uplink::ModelRef,
    /// PSI per feature against the manifest's distributions.
    drift: Vec<crate::inference::drift::DriftReading>,
    ready: Readiness,
    counts: Counts,
    entity_count: usize,
    entities: Vec<live::EntityView>,
    alerts: AlertsView,
    dlq: Option<DlqView>,
    uplink: Option<UplinkView>,
}

fn state_view(s: &ApiState) -> StateView {
    let m = &s.metrics;
    StateView {
        agent: s.agent_id.clone(),
        now_ms: crate::reading::now_ms(),
        started_ms: s.started_ms,
        model: {
            let a = s.lifecycle.view().active;
            cloud_uplink::ModelRef { name: a.name, version: a.version, sha256: a.sha256 }
        },
        drift: s.drift.as_ref().map(|d| d.readings()).unwrap_or_default(),
        ready: readiness(s),
        counts: Counts {
            readings_in: m.readings_in.get(),
            windows_scored: m.windows_scored.get(),
            late_readings: m.late_readings.get(),
            alerts_raised: m.alerts_raised.get(),
            mqtt_connected: m.mqtt_ingest_connected.get() == 1,
            broker_dropped: (m.broker_dropped_seen.get() > 0).then(|| m.broker_dropped.get()),
            sequence_gaps: m.seq_gaps.get(),
        },
        entity_count: s.live.entity_count(),
        entities: entity_views(s, STATE_ENTITIES, None),
        alerts: alerts_view(s),
        dlq: dlq_view(s, 5).ok(),
        uplink: uplink_view(s).ok(),
    }
}

async fn api_state(State(s): State<Arc<ApiState>>) -> Response {
    Json(state_view(&s)).into_response()
}

/// `state` events: at once, on every alert change, and at least every second.
async fn events(State(s): State<Arc<ApiState>>) -> Sse<impl futures_util::Stream<Item = Result<SseEvent, std::convert::Infallible>>> {
    let changes = s.live.subscribe();
    let tick = tokio::time::interval(Duration::from_secs(1));
    let stream = futures_util::stream::unfold((s, changes, tick), |(s, mut changes, mut tick)| async move {
        tokio::select! {
            _ = tick.tick() => {}
            _ = changes.changed() => {}
        }
        let data = serde_json::to_string(&state_view(&s)).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
        Some((Ok(SseEvent::default().event("state").data(data)), (s, changes, tick)))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorization_needs_the_exact_bearer_token() {
        let token = Secret::new("s3cret");
        let mut h = HeaderMap::new();
        assert_eq!(authorize(&h, Some(&token)).unwrap_err().0, StatusCode::UNAUTHORIZED);
        h.insert(header::AUTHORIZATION, "Bearer s3cre".parse().unwrap());
        assert_eq!(authorize(&h, Some(&token)).unwrap_err().0, StatusCode::FORBIDDEN);
        h.insert(header::AUTHORIZATION, "Bearer s3cret".parse().unwrap());
        assert!(authorize(&h, Some(&token)).is_ok());
        assert_eq!(authorize(&h, None).unwrap_err().0, StatusCode::FORBIDDEN);
        assert!(!constant_time_eq(b"", b"x") && constant_time_eq(b"", b""));
    }
}
