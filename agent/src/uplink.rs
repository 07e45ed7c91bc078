//! Uplink: the sinks that drain the outbox to the central platform, and the agent heartbeat.
//!
//! The outbox (crate `cloud_uplink`) is the durable store-and-forward buffer; this module only
//! turns `[uplink.*]` configuration into sinks and runs each on its own drain loop on the
//! agent's I/O runtime:
//!
//! | sink | config | sink name (keys its cursors) |
//! |---|---|---|
//! | [`DirectorySink`] | `[uplink.directory]` | `directory` |
//! | [`KafkaSink`] | `[uplink.kafka]` | `kafka` |
//! | [`S3Sink`] | `[uplink.s3]` | `s3` |
//! | [`WebhookSink`] (alert records) | `[[alerts.webhook]]` | `webhook:<name>` |
//!
//! A record leaves the outbox only when every registered sink that wants its kind has confirmed
//! it (see [`cloud_uplink::Sink`] for when exactly that is). A sink removed from the
//! configuration is unregistered at start-up — otherwise the records it never confirms would be
//! kept forever — and that is logged. Every configured sink is registered before any drain
//! loop starts: a sink that registered late (the S3 client takes a moment to build) would find
//! the records the others had already confirmed deleted, and never receive them.
//!
//! Heartbeats (`[uplink.heartbeat]`) are appended to the outbox like any record, so they travel
//! every sink that wants them and report the agent's counters (readings, DLQ, alerts, outbox
//! drops) even when nothing else happens.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cloud_uplink::{
    AvroEncoding, BatchLimits, Body, ClassSet, DirectorySink, KafkaCompression, KafkaSasl, KafkaSink, KafkaSinkConfig,
    KafkaTopics, Outbox, RecordClass, S3Sink, S3SinkConfig, SchemaRegistryConfig, Sink, ValueEncoding,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::alerts::webhook::WebhookSink;
use crate::config::{
    AvroSettings, CompressionSetting, Config, KafkaSinkSettings, RecordKind, S3SinkSettings, SaslMechanism,
    ValueEncodingSetting,
};
use crate::metrics::Metrics;

/// Why the uplink could not start.
#[derive(Debug, thiserror::Error)]
pub enum UplinkSetupError {
    #[error("uplink.directory: {0}")]
    Directory(#[from] cloud_uplink::SinkError),
    #[error("uplink.kafka.tls: {0}")]
    KafkaTls(#[from] crate::tls::TlsSetupError),
    #[error("uplink.kafka.avro.tls: {0}")]
    RegistryTls(#[source] crate::tls::TlsSetupError),
    #[error("uplink.kafka: {0}")]
    Kafka(#[from] cloud_uplink::KafkaSetupError),
    #[error("uplink.s3: {0}")]
    S3(#[from] cloud_uplink::S3SetupError),
    #[error("uplink.s3.ca_file {path}: {source}")]
    S3Ca { path: String, source: std::io::Error },
    #[error("outbox: {0}")]
    Outbox(#[from] cloud_uplink::OutboxError),
    #[error("alerts.webhook: {0}")]
    Webhook(#[from] crate::alerts::webhook::WebhookError),
}

/// The running sink drain loops and heartbeat.
pub struct Uplink {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Uplink {
    /// Starts every configured sink and the heartbeat on `rt`.
    pub fn start(
        rt: &tokio::runtime::Runtime,
        config: &Config,
        outbox: Arc<Outbox>,
        metrics: Arc<Metrics>,
    ) -> Result<Uplink, UplinkSetupError> {
        let (stop, stop_rx) = watch::channel(false);
        // The drain loops wait for `go`, sent once every configured sink is registered; if setup
        // fails half-way, dropping it ends them before they deliver anything.
        let (go, go_rx) = watch::channel(false);
        let mut uplink = Uplink { stop, tasks: Vec::new() };
        let mut names: Vec<String> = Vec::new();
        if let Some(dir) = &config.uplink.directory {
            let limits = BatchLimits { max_records: dir.max_batch, ..outbox.config().batch_limits() };
            let sink = DirectorySink::new("directory", dir.path.clone())?.with_batch_limits(limits);
            names.push("directory".into());
            uplink.spawn(rt, &outbox, sink, &stop_rx, &go_rx)?;
        }
        if let Some(k) = &config.uplink.kafka {
            names.push("kafka".into());
            let limits = BatchLimits { max_records: k.max_batch_records, ..outbox.config().batch_limits() };
            let sink = KafkaSink::new("kafka", config.agent.id.clone(), kafka_config(config, k)?)?.with_batch_limits(limits);
            uplink.spawn(rt, &outbox, sink, &stop_rx, &go_rx)?;
        }
        if let Some(s3) = &config.uplink.s3 {
            names.push("s3".into());
            let _guard = rt.enter(); // the S3 client is created inside the runtime
            let sink = S3Sink::new("s3", s3_config(config, s3)?)?;
            uplink.spawn(rt, &outbox, sink, &stop_rx, &go_rx)?;
        }
        for w in &config.alerts.webhook {
            let sink = WebhookSink::new(w, &config.alerts.route, &config.agent.id)?;
            names.push(sink.name().to_string());
            uplink.spawn(rt, &outbox, sink, &stop_rx, &go_rx)?;
        }
        for (name, _) in outbox.registered_sinks()? {
            if !names.contains(&name) {
                tracing::warn!(sink = %name, "sink no longer configured: unregistering it (its undelivered records are released to the remaining sinks)");
                outbox.unregister_sink(&name)?;
            }
        }
        let _ = go.send(true);
        let interval = config.uplink.heartbeat.interval_s;
        if interval > 0 {
            let outbox = Arc::clone(&outbox);
            let mut stop = stop_rx.clone();
            uplink.tasks.push(rt.spawn(async move {
                let started = Instant::now();
                let mut tick = tokio::time::interval(Duration::from_secs(interval));
                loop {
                    tokio::select! {
                        _ = stop.wait_for(|s| *s) => return,
                        _ = tick.tick() => {}
                    }
                    let (outbox, metrics) = (Arc::clone(&outbox), Arc::clone(&metrics));
                    let uptime_s = started.elapsed().as_secs();
                    let appended = tokio::task::spawn_blocking(move || {
                        let body = Body::Heartbeat { uptime_s, counters: heartbeat_counters(&outbox, &metrics) };
                        outbox.append_batch(vec![(now_ms(), body)])
                    })
                    .await;
                    match appended {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => tracing::warn!(error = %e, "heartbeat not appended"),
                        Err(e) => tracing::warn!(error = %e, "heartbeat task failed"),
                    }
                }
            }));
        }
        Ok(uplink)
    }

    /// Registers `sink` with the outbox now and starts its drain loop once `go` turns true.
    fn spawn<S: Sink>(
        &mut self,
        rt: &tokio::runtime::Runtime,
        outbox: &Arc<Outbox>,
        sink: S,
        stop: &watch::Receiver<bool>,
        go: &watch::Receiver<bool>,
    ) -> Result<(), UplinkSetupError> {
        outbox.register_sink(sink.name(), ClassSet::from_sink(&sink))?;
        let outbox = Arc::clone(outbox);
        let mut stop = stop.clone();
        let mut go = go.clone();
        let name = sink.name().to_string();
        self.tasks.push(rt.spawn(async move {
            if go.wait_for(|g| *g).await.is_err() {
                return; // setup failed: nothing was started
            }
            let shutdown = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            if let Err(e) = outbox.run_sink(sink, shutdown).await {
                tracing::error!(sink = %name, error = %e, "sink stopped; its records stay in the outbox");
            }
        }));
        Ok(())
    }

    /// Stops the drain loops (an in-flight delivery counts as not delivered) and the heartbeat.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Counters reported in heartbeats: `readings_in`, `dlq`, `late`, `windows_scored`,
/// `alerts_raised`, and per record kind `outbox_pending_<kind>`, `outbox_dropped_<kind>` and
/// `outbox_appended_bytes_<kind>` (CBOR bytes ever appended: the uplink volume).
fn heartbeat_counters(outbox: &Outbox, m: &Metrics) -> BTreeMap<String, u64> {
    let mut c = BTreeMap::new();
    c.insert("readings_in".into(), m.readings_in.get());
    c.insert("dlq".into(), m.dlq.snapshot().iter().map(|(_, n)| n).sum());
    c.insert("late".into(), m.late_readings.get());
    c.insert("windows_scored".into(), m.windows_scored.get());
    c.insert("alerts_raised".into(), m.alerts_raised.get());
    if let Ok(stats) = outbox.stats() {
        for class in &stats.classes {
            c.insert(format!("outbox_pending_{}", class.class), class.records);
            c.insert(format!("outbox_dropped_{}", class.class), class.dropped);
            c.insert(format!("outbox_appended_bytes_{}", class.class), class.appended_bytes);
        }
    }
    c
}

fn class_of(kind: RecordKind) -> RecordClass {
    match kind {
        RecordKind::Reading => RecordClass::Reading,
        RecordKind::Score => RecordClass::Score,
        RecordKind::Alert => RecordClass::Alert,
        RecordKind::Dlq => RecordClass::Dlq,
        RecordKind::Heartbeat => RecordClass::Heartbeat,
        RecordKind::Aggregate => RecordClass::Aggregate,
        RecordKind::Session => RecordClass::Session,
    }
}

fn kafka_config(config: &Config, k: &KafkaSinkSettings) -> Result<KafkaSinkConfig, UplinkSetupError> {
    let tls = match &k.tls {
        Some(t) => Some(Arc::new(crate::tls::client_config(t)?)),
        None => None,
    };
    let sasl = k.sasl.as_ref().map(|s| {
        let (username, password) = (s.username.clone(), s.password.as_ref().map(|p| p.expose().to_string()).unwrap_or_default());
        match s.mechanism {
            SaslMechanism::Plain => KafkaSasl::Plain { username, password },
            SaslMechanism::ScramSha256 => KafkaSasl::ScramSha256 { username, password },
            SaslMechanism::ScramSha512 => KafkaSasl::ScramSha512 { username, password },
        }
    });
    Ok(KafkaSinkConfig {
        brokers: k.brokers.clone(),
        client_id: k.client_id.clone().unwrap_or_else(|| format!("vigil-{}", config.agent.id)),
        topics: KafkaTopics {
            reading: k.topics.reading.clone(),
            score: k.topics.score.clone(),
            alert: k.topics.alert.clone(),
            dlq: k.topics.dlq.clone(),
            heartbeat: k.topics.heartbeat.clone(),
            aggregate: k.topics.aggregate.clone(),
            session: k.topics.session.clone(),
        },
        encoding: match k.encoding {
            ValueEncodingSetting::Cbor => ValueEncoding::Cbor,
            ValueEncodingSetting::Json => ValueEncoding::Json,
            ValueEncodingSetting::Avro => ValueEncoding::Avro(avro_encoding(k.avro.as_ref())?),
        },
        compression: match k.compression {
            CompressionSetting::None => KafkaCompression::None,
            CompressionSetting::Lz4 => KafkaCompression::Lz4,
            CompressionSetting::Zstd => KafkaCompression::Zstd,
        },
        tls,
        sasl,
        create_topics: (k.create_partitions > 0).then_some((k.create_partitions, k.create_replication_factor)),
        request_timeout: Duration::from_millis(k.request_timeout_ms),
        max_request_bytes: k.max_request_bytes,
    })
}

/// `[uplink.kafka.avro]` as the sink's [`AvroEncoding`] (validated by the config loader).
fn avro_encoding(a: Option<&AvroSettings>) -> Result<AvroEncoding, UplinkSetupError> {
    let Some(a) = a else { return Ok(AvroEncoding::default()) };
    let registry = match &a.registry_url {
        Some(url) => Some(SchemaRegistryConfig {
            url: url.clone(),
            basic_auth: a
                .registry_username
                .clone()
                .map(|u| (u, a.registry_password.as_ref().map(|p| p.expose().to_string()).unwrap_or_default())),
            tls: match &a.tls {
                Some(t) => Some(Arc::new(crate::tls::client_config(t).map_err(UplinkSetupError::RegistryTls)?)),
                None => None,
            },
            timeout: Duration::from_millis(a.registry_timeout_ms),
        }),
        None => None,
    };
    Ok(AvroEncoding { registry, schema_ids: a.schema_ids.clone() })
}

fn s3_config(config: &Config, s: &S3SinkSettings) -> Result<S3SinkConfig, UplinkSetupError> {
    let ca_pem = match &s.ca_file {
        Some(p) => Some(std::fs::read(p).map_err(|source| UplinkSetupError::S3Ca { path: p.display().to_string(), source })?),
        None => None,
    };
    Ok(S3SinkConfig {
        bucket: s.bucket.clone(),
        prefix: s.prefix.clone(),
        site: s.site.clone(),
        agent_id: config.agent.id.clone(),
        region: s.region.clone(),
        endpoint: s.endpoint.clone(),
        access_key_id: s.access_key_id.clone(),
        secret_access_key: s.secret_access_key.as_ref().map(|k| k.expose().to_string()),
        allow_http: s.allow_http,
        ca_pem,
        classes: s.kinds.iter().fold(ClassSet::NONE, |set, &k| set.with(class_of(k))),
        max_object_records: s.max_object_records,
        max_object_bytes: s.max_object_bytes,
        max_object_age: Duration::from_secs(s.max_object_age_s),
        multipart_threshold: s.multipart_threshold_bytes,
        request_timeout: Duration::from_millis(s.request_timeout_ms),
        zstd_level: s.zstd_level,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records the directory sink confirms before the S3 sink (slow to build, its store
    /// unreachable) has registered must still be kept for S3: every sink is registered before
    /// any drain loop runs. (Before, each loop registered itself: the directory sink could
    /// deliver and delete records S3 then never saw — `tests/uplink_s3.rs` lost 5 of 592 once.)
    #[test]
    fn every_sink_is_registered_before_any_drain_loop_delivers() {
        let dir = tempfile::tempdir().unwrap();
        let lake = dir.path().join("lake");
        let text = format!(
            "[agent]\nid = \"gw1\"\ndata_dir = \"state\"\n\n[ingest.simulator]\nmachines = 1\n\n[inference]\nmodel_dir = \"m\"\n\n\
             [uplink.directory]\npath = \"{}\"\n\n[uplink.s3]\nbucket = \"b\"\nsite = \"s\"\nendpoint = \"http://127.0.0.1:9\"\nallow_http = true\nregion = \"r\"\n\n[uplink.heartbeat]\ninterval_s = 0\n",
            lake.display()
        );
        let config = Config::from_toml(&text, &dir.path().join("vigil.toml"), |_| None).unwrap();
        let db = Arc::new(redb::Database::create(dir.path().join("outbox.redb")).unwrap());
        let outbox = Arc::new(Outbox::open(db, "gw1".into(), cloud_uplink::OutboxConfig::default()).unwrap());
        let heartbeats = (0..5).map(|i| (1_000 + i, Body::Heartbeat { uptime_s: i as u64, counters: BTreeMap::new() })).collect();
        outbox.append_batch(heartbeats).unwrap();

        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let uplink = Uplink::start(&rt, &config, Arc::clone(&outbox), Arc::new(Metrics::default())).unwrap();
        let mut names: Vec<String> = outbox.registered_sinks().unwrap().into_iter().map(|(n, _)| n).collect();
        names.sort();
        assert_eq!(names, ["directory", "s3"], "both sinks are registered when start returns");

        // The directory sink delivers all five; S3 cannot, so the outbox keeps them.
        let deadline = Instant::now() + Duration::from_secs(30);
        let cursor = |name: &str| {
            outbox.stats().unwrap().sinks.iter().find(|s| s.name == name).and_then(|s| s.cursors.iter().find(|(c, _)| *c == RecordClass::Heartbeat).map(|(_, seq)| *seq))
        };
        while cursor("directory") != Some(5) {
            assert!(Instant::now() < deadline, "the directory sink never confirmed the five heartbeats");
            std::thread::sleep(Duration::from_millis(20)); // polling a cursor: no event to await here
        }
        assert_eq!(outbox.stats().unwrap().class(RecordClass::Heartbeat).records, 5, "kept for S3, which has confirmed nothing");
        rt.block_on(uplink.stop());
    }
}
