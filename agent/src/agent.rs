//! Wiring: starts every stage of the data path and stops them in order.
//!
//! ```text
//! sources ──IngestBatch──▶ commit log ──WorkerMsg──▶ workers ──WindowJob──▶ batcher
//! (mqtt, serial,           (redb group commit,         (windows,              (TFLite, micro-
//!  simulator)               acks after commit)          features)              batches)
//!    ▲
//!    └── PUBACK ◀──────────────┘   ▲                                             │
//!                                  └──── Outputs (scores, alerts) ◀── alert stage ◀┘
//!                                        outbox ──▶ sinks (directory, Kafka, S3; crate::uplink)
//! ```
//!
//! Worker checkpoints travel the same path as windows (behind them) to the commit log; alert and
//! review messages also go out on their own MQTT connection.
//!
//! Threads: the simulator, one per serial port, one per MQTT connection (ingest and alert publishing),
//! one for all Modbus links (a current-thread runtime; write-back commands reach it from the alert stage), the commit
//! log, `pipeline.workers` workers, the batcher and the alert stage; a small tokio runtime runs
//! the outbox sinks, signal handling and the status log.
//!
//! Shutdown (SIGINT/SIGTERM, or every source finished): sources stop taking input; the commit
//! log commits what it has and closes the workers' queues; workers write a final checkpoint;
//! inference and alerts drain; the commit log commits their outputs and exits; MQTT then sends
//! the remaining acks and disconnects. Anything not delivered by the sinks stays in the outbox.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cloud_uplink::{Outbox, OutboxConfig, QuotaPolicy};
use crossbeam_channel::{bounded, unbounded};
use redb::{ReadableDatabase, ReadableTable};

use crate::alerts::health::HealthReporter;
use crate::inference::drift::{DriftCollector, DriftMonitor};
use crate::alerts::publish::{MqttPublisher, Publisher, StdoutPublisher};
use crate::alerts::{self, EntityAlertState, Evaluator, Policy};
use crate::commit_log::CommitLog;
use crate::config::reload::ReloadOutcome;
use crate::config::{Config, WhenFull};
use crate::inference::batcher::{self, BatchLimits};
use crate::inference::manifest::{Manifest, ModelKind, Thresholds};
use crate::inference::lifecycle::{self, Command, Deployment, DeploymentRecord, LifecycleCollector, LifecycleError, Loader, PipelineShape, Rules, Slot};
use crate::inference::ModelRuntime;
use crate::ingest::modbus::{self, writeback::{AuditLog, WriteBackPublisher}};
use crate::ingest::{self, mqtt, serial, simulator_source, INGEST_QUEUE};
use crate::ingest::subscriptions::SubscriptionStatus;
use crate::alerts::publish::PublishRefusals;
use crate::api::live::LiveView;
use crate::api::{self, ApiState};
use crate::metrics::{HealthKind, Metrics, OutboxCollector, ProcessCollector, Registry};
use crate::pipeline::window::{EntityWindows, Geometry};
use crate::pipeline::asset::{AssetWindows, Routing};
use crate::pipeline::warmup_pca::WarmupPcaSettings;
use crate::pipeline::{partition_of, Worker, WorkerSettings};
use crate::store::{self, DbContext, StoreError};
use crate::uplink::{Uplink, UplinkSetupError};

/// Why the agent could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("model {path}: {source}")]
    Model { path: String, source: LifecycleError },
    #[error("model {model} {reason} (pipeline.assets)")]
    Assets { model: String, reason: String },
    #[error("MQTT: {0}")]
    Mqtt(#[from] mqtt::MqttSetupError),
    #[error("MQTT subscription: {0}")]
    Topic(#[from] ingest::topic::TemplateError),
    #[error(transparent)]
    Uplink(#[from] UplinkSetupError),
    #[error("cannot start a thread or runtime: {0}")]
    Spawn(std::io::Error),
    #[error("the {0} thread panicked")]
    Panicked(&'static str),
    #[error("outbox: {0}")]
    Outbox(#[from] cloud_uplink::OutboxError),
    #[error("cannot listen on {addr} (api.listen): {source}")]
    ApiListen { addr: std::net::SocketAddr, source: std::io::Error },
}

/// Loads the configured model (`inference.model_dir`), verifying golden vectors when
/// configured.
pub fn load_model(config: &Config) -> Result<ModelRuntime, AgentError> {
    let dir = &config.inference.model_dir;
    lifecycle::load_model(dir, config.inference.verify_golden, None).map_err(|source| AgentError::Model { path: dir.display().to_string(), source })
}

/// The asset routing for the loaded model: `pipeline.assets` with a multivariate model (every
/// asset must name as many channels as the model has; at least one asset), nothing with a
/// univariate one.
pub fn asset_routing(config: &Config, manifest: &Manifest) -> Result<Routing, AgentError> {
    if manifest.kind != ModelKind::Multivariate {
        return Ok(Routing::default());
    }
    let want = manifest.input.channels.len();
    let err = |reason: String| AgentError::Assets { model: format!("{} {}", manifest.name, manifest.version), reason };
    if config.uplink.policy.reading == crate::config::ReadingPolicy::AroundAlerts {
        // Its alerts name assets, while held readings wait under their own entity ids: they
        // would never be released. Refused rather than silently withheld.
        return Err(err("scores assets, and uplink.policy.reading = \"around_alerts\" follows the alerts of single entities: not supported with a multivariate model yet".into()));
    }
    if config.pipeline.assets.is_empty() {
        return Err(err(format!("is multivariate (channels {:?}) but no [[pipeline.assets]] is configured", manifest.input.channels)));
    }
    for a in &config.pipeline.assets {
        if a.channels.len() != want {
            return Err(err(format!("has {want} channels ({:?}) but asset `{}` names {}", manifest.input.channels, a.id, a.channels.len())));
        }
    }
    Ok(Routing::new(&config.pipeline.assets))
}

/// Effective thresholds: config overrides the manifest.
pub fn thresholds(config: &Config, runtime: &ModelRuntime) -> Thresholds {
    lifecycle::effective_thresholds(&config.alerts, runtime.manifest())
}

/// The models the agent starts with: the persisted deployment's (when `models.registry` is
/// set and they still load), else `inference.model_dir` alone.
fn startup_models(config: &Config, db: &redb::Database) -> Result<(ModelRuntime, Option<(ModelRuntime, crate::config::DeployMode)>, DeploymentRecord), AgentError> {
    let Some(registry) = &config.models.registry else {
        return Ok((load_model(config)?, None, DeploymentRecord::default()));
    };
    let verify = config.inference.verify_golden;
    let Some(record) = lifecycle::restore(db)? else {
        // First start with a registry: what is in it now is the baseline, not a deployment.
        let record = DeploymentRecord { seen: Loader::baseline(registry), ..Default::default() };
        return Ok((load_model(config)?, None, record));
    };
    let active = match &record.active {
        Some(dir) if *dir != config.inference.model_dir => match lifecycle::load_model(dir, verify, None) {
            Ok(rt) => rt,
            Err(e) => {
                tracing::warn!(error = %e, "the deployed active model does not load; starting with inference.model_dir");
                load_model(config)?
            }
        },
        _ => load_model(config)?,
    };
    let shape = PipelineShape::of(active.manifest());
    let candidate = record.candidate.as_ref().and_then(|(dir, mode)| match lifecycle::load_model(dir, verify, Some(&shape)) {
        Ok(rt) => Some((rt, *mode)),
        Err(e) => {
            tracing::warn!(error = %e, "the deployed {} candidate does not load; running without it", mode.as_str());
            None
        }
    });
    Ok((active, candidate, record))
}

/// Outbox settings from the config.
pub fn outbox_config(config: &Config) -> OutboxConfig {
    let mut c = OutboxConfig::default();
    if config.uplink.outbox.quota_bytes > 0 {
        c.quota_bytes = config.uplink.outbox.quota_bytes;
    } else {
        c.quota_bytes = u64::MAX / 4;
    }
    c.quota_policy = match config.uplink.outbox.when_full {
        WhenFull::DropOldestReadings => QuotaPolicy::DropOldestReadings,
        WhenFull::Backpressure => QuotaPolicy::Backpressure,
    };
    c.linger = Duration::from_millis(config.uplink.outbox.linger_ms);
    // Alerts' reserve: a sixteenth of the quota, at most the default 4 MiB.
    c.alert_reserve_bytes = c.alert_reserve_bytes.min(c.quota_bytes / 16);
    c
}

/// Runs the agent until a signal arrives or every source has finished.
pub fn run(config: Config) -> Result<Arc<Metrics>, AgentError> {
    let metrics = Arc::new(Metrics::default());
    crate::bench::spawn_metrics_snapshot(metrics.clone());
    let db = store::open(&config.agent.data_dir)?;
    let outbox = Arc::new(Outbox::open(db.clone(), config.agent.id.clone(), outbox_config(&config)).map_err(StoreError::from)?);
    crate::uplink_policy::settle_held(&db, &outbox, crate::uplink_policy::UplinkPolicy::new(&config))?;
    let (runtime, candidate, deployment_record) = startup_models(&config, &db)?;
    let manifest = runtime.manifest().clone();
    let api_listener = match config.api.enabled {
        true => {
            let addr = config.api.listen;
            let listener = std::net::TcpListener::bind(addr).map_err(|source| AgentError::ApiListen { addr, source })?;
            let local = listener.local_addr().map_err(|source| AgentError::ApiListen { addr, source })?;
            tracing::info!(address = %local, "HTTP API listening on http://{local}/");
            Some(listener)
        }
        false => None,
    };
    let live = config.api.enabled.then(|| Arc::new(LiveView::new(config.api.sparkline_points)));
    let drift = DriftMonitor::from_manifest(&manifest).map(Arc::new);
    if drift.is_none() {
        tracing::info!("the model manifest has no feature distributions: no drift monitoring");
    }
    let mut health = HealthReporter::new(config.agent.id.clone(), metrics.clone(), live.clone(), None);
    let policy = Policy::new(&config);

    let workers_n = config.pipeline.workers;
    let (ingest_tx, ingest_rx) = bounded(INGEST_QUEUE);
    let (internal_tx, internal_rx) = unbounded();
    // API requests to the commit log (DLQ replay); the API holds the only sender.
    let (control_tx, control_rx) = unbounded();
    let redecoder = crate::dlq::Redecoder::new(&config)?;
    let (jobs_tx, jobs_rx) = bounded(2048);
    let (scored_tx, scored_rx) = bounded(256);

    // Assets are joined only for a multivariate model, whose channel count they must match.
    let multivariate = manifest.kind == ModelKind::Multivariate;
    let routing = Arc::new(asset_routing(&config, &manifest)?);
    // Restore per-entity and per-asset state, partitioned like the live routing.
    let mut entity_states: Vec<HashMap<Arc<str>, Box<EntityWindows>>> = vec![HashMap::new(); workers_n];
    let mut asset_states: Vec<HashMap<Arc<str>, AssetWindows>> = vec![HashMap::new(); workers_n];
    let mut alert_states: HashMap<Arc<str>, Box<EntityAlertState>> = HashMap::new();
    // Restored states continue on the configured grid (it may have changed since they were written).
    let geometry = Geometry::from(&config.pipeline.window);
    {
        let txn = db.begin_read().doing("restoring state")?;
        let t = txn.open_table(store::ENTITY_STATE).doing("restoring state")?;
        for row in t.iter().doing("restoring state")? {
            let (k, v) = row.doing("restoring state")?;
            let mut state: Box<EntityWindows> = store::from_cbor("entity_state", k.value(), v.value())?;
            state.resume(&geometry);
            entity_states[routing.worker_of(k.value(), workers_n)].insert(Arc::from(k.value()), state);
        }
        let t = txn.open_table(store::ASSET_STATE).doing("restoring state")?;
        for row in t.iter().doing("restoring state")? {
            let (k, v) = row.doing("restoring state")?;
            let mut state: AssetWindows = store::from_cbor("asset_state", k.value(), v.value())?;
            state.resume(&geometry);
            // Only assets still configured, with the same channel count, continue.
            if routing.channels(k.value()) == Some(state.channels.len()) {
                asset_states[partition_of(k.value(), workers_n)].insert(Arc::from(k.value()), state);
            }
        }
        let t = txn.open_table(store::ALERT_STATE).doing("restoring state")?;
        for row in t.iter().doing("restoring state")? {
            let (k, v) = row.doing("restoring state")?;
            alert_states.insert(Arc::from(k.value()), store::from_cbor("alert_state", k.value(), v.value())?);
        }
        // Open alerts and their acknowledgements, for the API and the dashboard.
        if let Some(live) = &live {
            let acks = txn.open_table(store::ALERT_ACK).doing("restoring acknowledgements")?;
            for (entity, state) in &alert_states {
                let Some(open) = state.open.as_ref().filter(|_| state.raised) else { continue };
                let ack: Option<crate::alerts::Acknowledgement> = match acks.get(entity.as_ref()).doing("restoring acknowledgements")? {
                    Some(v) => Some(store::from_cbor("alert_ack", entity.as_ref(), v.value())?),
                    None => None,
                };
                live.restore_open(entity, open, ack.as_ref());
            }
        }
    }
    let restored: usize = entity_states.iter().map(|m| m.len()).sum();
    if restored > 0 {
        tracing::info!(entities = restored, "restored window and feature state");
    }

    let settings = WorkerSettings {
        geometry: Geometry::from(&config.pipeline.window),
        normalisation: manifest.normalisation.clone(),
        width: runtime.input_width(),
        checkpoint_interval: Duration::from_millis(config.pipeline.checkpoint_interval_ms),
        checkpoint_max_entities: config.pipeline.checkpoint_max_entities,
        aggregate: (&config.pipeline.aggregate).into(),
        session: config.pipeline.session.as_ref().map(Into::into),
        routing: routing.clone(),
        multivariate,
        warmup_pca: config.pipeline.warmup_pca.as_ref().map(|w| WarmupPcaSettings::new(w)),
    };
    let mut threads: Vec<(&'static str, std::thread::JoinHandle<()>)> = Vec::new();
    let stop = Arc::new(AtomicBool::new(false));
    let spawn = |name: &'static str, f: Box<dyn FnOnce() + Send>| {
        std::thread::Builder::new().name(format!("vigil-{name}")).spawn(f).map_err(AgentError::Spawn)
    };

    let mut worker_txs = Vec::with_capacity(workers_n);
    for (index, (entities, assets)) in entity_states.into_iter().zip(asset_states).enumerate() {
        // Each message holds up to one group commit's readings: a short queue bounds memory.
        let (tx, rx) = bounded(8);
        worker_txs.push(tx);
        let worker = Worker {
            index,
            settings: settings.clone(),
            entities,
            assets,
            inbox: rx,
            to_inference: jobs_tx.clone(),
            to_commit_log: internal_tx.clone(),
            metrics: metrics.clone(),
            live: live.clone(),
        };
        threads.push(("worker", spawn("worker", Box::new(move || worker.run()))?));
    }
    drop(jobs_tx);

    // Model lifecycle: the inference thread owns the deployment; the loader thread verifies
    // new versions (registry scans, API uploads) and hands them over.
    let (commands_tx, commands_rx) = unbounded::<Command>();
    let (uploads_tx, uploads_rx) = unbounded();
    let active_slot = Slot::new(runtime, &config.alerts, drift.clone());
    let lifecycle = Deployment::lifecycle(Rules::from_config(&config), commands_tx.clone(), uploads_tx.clone(), config.models.registry.clone(), config.models.deploy, &active_slot);
    let candidate_slot = candidate.map(|(rt, mode)| (Slot::new(rt, &config.alerts, None), mode));
    if let Some(registry) = config.models.registry.clone() {
        let loader = Loader {
            registry: Some(registry),
            scan_interval: Duration::from_millis(config.models.scan_interval_ms),
            deploy: config.models.deploy,
            verify_golden: config.inference.verify_golden,
            alerts: config.alerts.clone(),
            shape: PipelineShape::of(&manifest),
            seen: deployment_record.seen.clone(),
            uploads: uploads_rx,
            uploads_tx,
            commands: commands_tx,
            stop: stop.clone(),
        };
        threads.push(("model-loader", spawn("model-loader", Box::new(move || loader.run()))?));
    }

    // MQTT client (ingest and alert publishing share one connection).
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (drained_tx, drained_rx) = tokio::sync::watch::channel(false);
    let mut publishers: Vec<Box<dyn Publisher>> = Vec::new();
    if config.alerts.print {
        publishers.push(Box::new(StdoutPublisher));
    }
    // The broker's answers to the ingest connection's subscriptions (empty without MQTT).
    let subscriptions = Arc::new(SubscriptionStatus::default());
    // Alert publishes the broker refused (empty without MQTT).
    let publish_refusals = Arc::new(PublishRefusals::default());
    if let Some(mqtt_cfg) = &config.mqtt {
        let routes = config
            .ingest
            .mqtt
            .iter()
            .map(|s| mqtt::Route::new(s, &config.validation))
            .collect::<Result<Vec<_>, _>>()?;
        let (client, eventloop) = mqtt::client(mqtt::options(mqtt_cfg, &config.agent.id, mqtt::Role::Ingest)?);
        let ingest_outbound = mqtt::Outbound::new(client);
        let (pub_client, pub_eventloop) = mqtt::client(mqtt::options(mqtt_cfg, &config.agent.id, mqtt::Role::Publish)?);
        let pub_outbound = mqtt::Outbound::new(pub_client);
        publishers.push(Box::new(MqttPublisher {
            outbound: pub_outbound.clone(),
            agent: config.agent.id.clone(),
            alert_topic: config.alerts.topic.clone(),
            review_topic: config.alerts.review_topic.clone(),
        }));
        health.mqtt = Some((pub_outbound.clone(), config.alerts.topic.clone()));
        let watch = |broker_stats| mqtt::Watch { health: health.clone(), broker_stats, subscriptions: subscriptions.clone(), publishes: publish_refusals.clone() };
        let backoff = mqtt::Backoff { min: Duration::from_millis(mqtt_cfg.reconnect_min_ms), max: Duration::from_millis(mqtt_cfg.reconnect_max_ms) };
        let ingest_tx = ingest_tx.clone();
        // One thread per connection: the ingest loop blocks on the commit log when it is behind
        // (backpressure), which must not hold up alerts.
        let host = mqtt_cfg.sparkplug_host_id.as_deref().map(mqtt::HostSession::new);
        let connections = [
            ("mqtt", eventloop, ingest_outbound, routes, Some(ingest_tx), Some(watch(mqtt_cfg.broker_stats)), host),
            ("mqtt-pub", pub_eventloop, pub_outbound, Vec::new(), None, Some(watch(false)), None),
        ];
        for (name, eventloop, outbound, routes, ingest, watch, host) in connections {
            let metrics = metrics.clone();
            let shutdown = mqtt::Shutdown { stop: stop_rx.clone(), drained: drained_rx.clone() };
            threads.push((
                name,
                spawn(name, Box::new(move || {
                    match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                        Ok(rt) => rt.block_on(mqtt::run(eventloop, outbound, routes, ingest, metrics, backoff, shutdown, watch, host)),
                        Err(e) => tracing::error!(error = %e, "cannot start the MQTT runtime"),
                    }
                }))?,
            ));
        }
    }

    if !config.ingest.modbus.devices.is_empty() {
        let audit = AuditLog { to_commit_log: internal_tx.clone(), metrics: metrics.clone() };
        let running = modbus::spawn(&config.ingest.modbus, &config.validation, ingest_tx.clone(), audit.clone(), metrics.clone(), stop_rx.clone())
            .map_err(AgentError::Spawn)?;
        if !config.ingest.modbus.write_back.is_empty() {
            publishers.push(Box::new(WriteBackPublisher::new(&config.ingest.modbus.write_back, running.pollers, audit)));
        }
        threads.push(("modbus", running.thread));
    }

    // After the MQTT setup: the inference thread's health reporter publishes on it.
    let limits = BatchLimits { max_batch: config.inference.max_batch, max_wait: Duration::from_millis(config.inference.max_wait_ms) };
    {
        let deployment = Deployment::new(active_slot, candidate_slot, deployment_record, config.alerts.clone(), lifecycle.clone(), internal_tx.clone(), Some(health.clone()));
        let metrics = metrics.clone();
        threads.push(("inference", spawn("inference", Box::new(move || batcher::run(deployment, limits, jobs_rx, commands_rx, scored_tx, metrics)))?));
    }

    // A config reload's new alert policy, for the alert stage.
    let (policy_tx, policy_rx) = unbounded::<Policy>();
    let evaluator = Evaluator { agent: config.agent.id.clone(), policy, states: alert_states };
    {
        let (metrics, internal_tx, live, lifecycle) = (metrics.clone(), internal_tx.clone(), live.clone(), lifecycle.clone());
        threads.push(("alerts", spawn("alerts", Box::new(move || alerts::run(evaluator, scored_rx, internal_tx, publishers, metrics, live, Some(lifecycle), policy_rx)))?));
    }
    drop(internal_tx);

    if let Some(sim) = config.ingest.simulator.clone() {
        let (tx, stop) = (ingest_tx.clone(), stop.clone());
        threads.push(("simulator", spawn("simulator", Box::new(move || simulator_source::run(sim, tx, stop)))?));
    }
    for port in config.ingest.serial.clone() {
        let (tx, stop, metrics, validation) = (ingest_tx.clone(), stop.clone(), metrics.clone(), config.validation.clone());
        threads.push(("serial", spawn("serial", Box::new(move || serial::run(port, validation, tx, metrics, stop)))?));
    }
    drop(ingest_tx);

    let commit_log = CommitLog {
        db: db.clone(),
        outbox: outbox.clone(),
        ingest: ingest_rx,
        internal: internal_rx,
        workers: worker_txs,
        routing,
        metrics: metrics.clone(),
        commit_interval: Duration::from_millis(config.pipeline.commit_interval_ms),
        control: control_rx,
        redecoder,
        policy: crate::uplink_policy::UplinkPolicy::new(&config),
        review_capacity: config.alerts.review_queue_capacity,
    };
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let commit_handle = std::thread::Builder::new()
        .name("vigil-commit-log".into())
        .spawn(move || {
            let result = commit_log.run();
            let _ = done_tx.send(());
            result
        })
        .map_err(AgentError::Spawn)?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .thread_name("vigil-io")
        .build()
        .map_err(AgentError::Spawn)?;
    let mut uplink = Some(Uplink::start(&rt, &config, outbox.clone(), metrics.clone())?);
    // Config reloads (SIGHUP, POST /api/config/reload): see `crate::config::reload`.
    let (reload_tx, mut reload_rx) = tokio::sync::mpsc::channel::<ReloadRequest>(4);
    let mut running = config.clone();

    // Registered before the API answers (a supervisor or test may stop the agent as soon as it
    // does), and once: a signal between two loop iterations below must not be lost.
    let (mut shutdown, mut hangup) = {
        let _context = rt.enter();
        (ShutdownSignal::install(), hangup())
    };
    let api_task = match (api_listener, live) {
        (Some(listener), Some(live)) => {
            let mut registry = Registry::default();
            registry.register(metrics.clone());
            registry.register(Arc::new(OutboxCollector(outbox.clone())));
            registry.register(subscriptions.clone());
            registry.register(publish_refusals.clone());
            registry.register(Arc::new(LifecycleCollector(lifecycle.clone())));
            if let Some(monitor) = &drift {
                registry.register(Arc::new(DriftCollector { monitor: monitor.clone(), min_windows: config.alerts.drift_min_windows }));
            }
            registry.register(Arc::new(ProcessCollector));
            let state = Arc::new(ApiState {
                agent_id: config.agent.id.clone(),
                metrics: metrics.clone(),
                registry,
                live,
                db: db.clone(),
                outbox: outbox.clone(),
                token: config.api.token.clone(),
                lifecycle: lifecycle.clone(),
                // Readiness waits for the MQTT ingest connection when there is one to wait for.
                sources_optional: config.api.sources_optional || config.mqtt.is_none() || config.ingest.mqtt.is_empty(),
                mqtt_ingest: config.mqtt.is_some() && !config.ingest.mqtt.is_empty(),
                started_ms: crate::reading::now_ms(),
                drift: drift.clone(),
                subscriptions: subscriptions.clone(),
                publish_refusals: publish_refusals.clone(),
                commit_log: control_tx,
                reload: reload_tx,
            });
            Some(rt.spawn(api::serve(listener, state)))
        }
        _ => None,
    };

    let status_metrics = metrics.clone();
    rt.block_on(async {
        let mut status = tokio::time::interval(Duration::from_secs(10));
        status.tick().await;
        let mut drift_check = tokio::time::interval(Duration::from_secs(1));
        let mut done_rx = done_rx;
        loop {
            tokio::select! {
                _ = shutdown.recv() => {
                    tracing::info!("shutdown requested");
                    break;
                }
                _ = &mut done_rx => break,
                _ = status.tick() => {
                    log_status(&status_metrics);
                    release_free_memory();
                }
                _ = drift_check.tick(), if drift.is_some() && config.alerts.drift_psi > 0.0 => {
                    if let Some(d) = &drift {
                        check_drift(d, &health, config.alerts.drift_psi, config.alerts.drift_min_windows);
                    }
                }
                _ = hangup.recv() => {
                    let _ = reload(&rt, &mut running, &mut uplink, &outbox, &metrics, &policy_tx, &lifecycle).await;
                }
                Some(request) = reload_rx.recv() => {
                    let result = reload(&rt, &mut running, &mut uplink, &outbox, &metrics, &policy_tx, &lifecycle).await;
                    let _ = request.reply.send(result);
                }
            }
        }
    });
    if let Some(t) = api_task {
        t.abort();
    }
    stop.store(true, Ordering::Relaxed);
    let _ = stop_tx.send(true);
    let result = commit_handle.join().map_err(|_| AgentError::Panicked("commit-log"))?;
    let _ = drained_tx.send(true);
    for (name, handle) in threads {
        handle.join().map_err(|_| AgentError::Panicked(name))?;
    }
    if let Some(uplink) = uplink {
        rt.block_on(uplink.stop());
    }
    log_status(&metrics);
    result?;
    tracing::info!("stopped");
    Ok(metrics)
}

/// A config reload request from the API; the answer says what changed or why nothing did.
pub struct ReloadRequest {
    pub reply: tokio::sync::oneshot::Sender<Result<ReloadOutcome, String>>,
}

/// Reloads the config file (see [`crate::config::reload`] for what applies): the sinks restart
/// with the new settings, the alert stage and the inference thread get the new policy and
/// bands. On any error nothing changes (or, if the new sinks do not start, the previous ones
/// run again) and the error is returned.
async fn reload(
    rt: &tokio::runtime::Runtime,
    running: &mut Config,
    uplink: &mut Option<Uplink>,
    outbox: &Arc<Outbox>,
    metrics: &Arc<Metrics>,
    policy: &crossbeam_channel::Sender<Policy>,
    lifecycle: &Arc<crate::inference::lifecycle::Lifecycle>,
) -> Result<ReloadOutcome, String> {
    let result: Result<ReloadOutcome, String> = async {
        let Some(path) = running.source.clone() else {
            return Err("the agent was not started from a config file".into());
        };
        let new = tokio::task::spawn_blocking(move || Config::load(&path)).await.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
        let (next, outcome) = crate::config::reload::plan(running, new);
        if let Some(u) = uplink.take() {
            u.stop().await;
        }
        match Uplink::start(rt, &next, outbox.clone(), metrics.clone()) {
            Ok(u) => *uplink = Some(u),
            Err(e) => {
                match Uplink::start(rt, running, outbox.clone(), metrics.clone()) {
                    Ok(u) => *uplink = Some(u),
                    Err(again) => tracing::error!(error = %again, "cannot start the previous sinks again; records stay in the outbox until a restart"),
                }
                return Err(format!("the new sink settings do not start ({e}); the previous sinks run again"));
            }
        }
        // Both stages outlive this loop; a send fails only while the agent stops.
        let _ = policy.send(Policy::new(&next));
        let _ = lifecycle.commands.send(crate::inference::lifecycle::Command::Reconfigure { alerts: Box::new(next.alerts.clone()) });
        *running = next;
        Ok(outcome)
    }
    .await;
    match &result {
        Ok(o) if o.restart_needed.is_empty() => tracing::info!("config reloaded: applied {:?}", o.applied),
        Ok(o) => tracing::warn!("config reloaded: applied {:?}; these keys changed but need a restart and keep their running values: {:?}", o.applied, o.restart_needed),
        Err(e) => tracing::warn!("config reload rejected, the running config stays: {e}"),
    }
    result
}

/// Returns memory that bursts (a broker replaying a backlog, a recovery) left free inside the
/// allocator to the operating system, so a gateway's resident size falls back to the steady
/// state. glibc otherwise keeps freed chunks below the top of each arena indefinitely.
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory; it is thread-safe in glibc.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Raises a `model_drift` health alert (rate-limited by the reporter) for a drifted feature.
fn check_drift(d: &DriftMonitor, health: &HealthReporter, threshold: f64, min_windows: u64) {
    for r in d.readings() {
        if r.windows >= min_windows && r.psi > threshold {
            health.raise(
                HealthKind::ModelDrift,
                format!(
                    "model {} {}: live {} distribution drifted from the training distribution (PSI {:.2} > {threshold} over {} windows)",
                    d.model, d.version, r.feature, r.psi, r.windows
                ),
            );
        }
    }
}

fn log_status(m: &Metrics) {
    tracing::info!(
        readings = m.readings_in.get(),
        dlq = m.dlq.snapshot().iter().map(|(_, c)| c).sum::<u64>(),
        late = m.late_readings.get(),
        windows = m.windows_emitted.get(),
        scored = m.windows_scored.get(),
        batches = m.inference_batches.get(),
        alerts = m.alerts_raised.get(),
        modbus_down = m.modbus.devices_down.get(),
        modbus_degraded = m.modbus.devices_degraded.get(),
        score_p99_us = m.score_latency.quantile_us(0.99),
        "status"
    );
    for (port, node, c) in m.serial_nodes.snapshot() {
        tracing::info!(port = %port, node, frames = c.frames, missing_frames = c.missing_frames, duplicate_frames = c.duplicate_frames, restarts = c.restarts, "serial node status");
    }
}

/// A unix signal, registered when this is created, so one that arrives while nobody awaits
/// [`UnixSignal::recv`] is still seen by the next call. Never fires where it cannot be
/// registered (or off unix).
struct UnixSignal {
    #[cfg(unix)]
    signal: Option<tokio::signal::unix::Signal>,
}

impl UnixSignal {
    /// Must run inside the runtime's context. `name` and `instead` (what the operator can do
    /// instead) go into the warning when the signal cannot be registered.
    #[cfg_attr(not(unix), allow(unused_variables))]
    fn install(#[cfg(unix)] kind: tokio::signal::unix::SignalKind, name: &str, instead: &str) -> UnixSignal {
        #[cfg(unix)]
        {
            let signal = tokio::signal::unix::signal(kind);
            if let Err(e) = &signal {
                tracing::warn!(error = %e, "cannot listen for {name}; {instead}");
            }
            UnixSignal { signal: signal.ok() }
        }
        #[cfg(not(unix))]
        UnixSignal {}
    }

    async fn recv(&mut self) {
        #[cfg(unix)]
        if let Some(signal) = &mut self.signal {
            if signal.recv().await.is_some() {
                return;
            }
        }
        std::future::pending::<()>().await
    }
}

/// SIGTERM (unix) or Ctrl-C.
struct ShutdownSignal {
    term: UnixSignal,
}

impl ShutdownSignal {
    /// Must run inside the runtime's context.
    fn install() -> ShutdownSignal {
        ShutdownSignal {
            term: UnixSignal::install(
                #[cfg(unix)]
                tokio::signal::unix::SignalKind::terminate(),
                "SIGTERM",
                "stop with Ctrl-C",
            ),
        }
    }

    async fn recv(&mut self) {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = self.term.recv() => {}
        }
    }
}

/// SIGHUP: reload the config (unix only).
fn hangup() -> UnixSignal {
    UnixSignal::install(
        #[cfg(unix)]
        tokio::signal::unix::SignalKind::hangup(),
        "SIGHUP",
        "reload the config with POST /api/config/reload",
    )
}
