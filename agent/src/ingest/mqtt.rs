//! MQTT ingest over rumqttc: subscriptions with topic templates, manual QoS 1 acks after commit.
//!
//! # Delivery guarantee
//!
//! The client speaks MQTT 5 with `manual_acks` and (by default) a persistent session
//! (`clean_start = false` and a session expiry interval). A QoS 1 PUBLISH is acknowledged only
//! from the commit log's `on_commit` callback, i.e. after its readings or dead letters are
//! durable. If the agent dies before that, the broker still holds the message in the session
//! and delivers it again on reconnect. The journal may then see a reading twice (at-least-once;
//! the windows ignore the duplicate); it is never lost.
//!
//! # Flow control
//!
//! The CONNECT carries MQTT 5's Receive Maximum (`mqtt.receive_maximum`): the broker must not
//! have more unacknowledged QoS 1 messages outstanding to the agent than that. This bounds
//! everything the agent holds for MQTT — decoded batches waiting for the commit log, and acks
//! waiting to be sent — whatever backlog the broker has queued. (MQTT 3.1.1 has no such limit;
//! Mosquitto's `max_inflight_messages` was measured not to hold it on session resume, so acks
//! piled up behind incoming traffic.)
//!
//! Brokers do not all honour it when they replay a resumed session's backlog (Mosquitto 2.0.11
//! was measured sending thousands of unacknowledged messages at once), and rumqttc sends one
//! request per poll while it reads up to ten packets. So an ack is never dropped when the
//! client's request channel is full: [`Acker`] keeps it, in order, and the event loop hands it
//! over as soon as there is room (PUBACKs must leave in the order the PUBLISHes arrived).
//!
//! # Threads
//!
//! The event loop runs on its own OS thread with a single-threaded tokio runtime, so blocking
//! on the bounded commit-log channel (backpressure) stalls only MQTT intake.

use std::io::BufReader;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::Sender;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, EventLoop, MqttOptions};
use rumqttc::{TlsConfiguration, Transport};
use tokio::sync::watch;

use super::decode::Decoder;
use super::topic::{render, TopicTemplate};
use super::IngestBatch;
use crate::config::{MqttConfig, MqttSubscription, ValidationConfig};
use crate::dlq::{DlqEntry, DlqReason};
use crate::metrics::Metrics;
use crate::reading::{now_ms, SourceKind};

/// Capacity of the rumqttc request channel (publishes, acks, subscribes). Larger than the
/// largest Receive Maximum (65 535) plus alert publishes, so an ack always fits.
pub const REQUEST_QUEUE: usize = 131_072;

/// MQTT set-up failures (configuration that cannot be used).
#[derive(Debug, thiserror::Error)]
pub enum MqttSetupError {
    #[error("cannot read {what} {path}: {source}")]
    Read { what: &'static str, path: String, source: std::io::Error },
    #[error("{what} {path} contains no usable PEM {expected}")]
    Pem { what: &'static str, path: String, expected: &'static str },
    #[error("TLS configuration rejected: {0}")]
    Tls(#[from] rustls::Error),
}

/// One subscription, compiled.
pub struct Route {
    pub template: TopicTemplate,
    pub entity: Option<String>,
    pub decoder: Decoder,
}

impl Route {
    pub fn new(sub: &MqttSubscription, validation: &ValidationConfig) -> Result<Route, super::topic::TemplateError> {
        Ok(Route {
            template: TopicTemplate::parse(&sub.topic)?,
            entity: sub.entity.clone(),
            decoder: Decoder { format: sub.format, fields: sub.fields.clone(), validation: validation.clone(), source: SourceKind::Mqtt },
        })
    }
}

/// Builds the client options (identity, session, credentials, TLS).
pub fn options(config: &MqttConfig, agent_id: &str) -> Result<MqttOptions, MqttSetupError> {
    let client_id = config.client_id.clone().unwrap_or_else(|| format!("vigil-{agent_id}"));
    let mut o = MqttOptions::new(client_id, config.host.clone(), config.port);
    o.set_keep_alive(Duration::from_secs(config.keep_alive_s.max(5)));
    o.set_clean_start(config.clean_session);
    if !config.clean_session {
        o.set_session_expiry_interval(Some(config.session_expiry_s));
    }
    o.set_receive_maximum(Some(config.receive_maximum));
    o.set_manual_acks(true);
    o.set_max_packet_size(Some(u32::try_from(config.max_packet_bytes).unwrap_or(u32::MAX)));
    if let Some(user) = &config.username {
        let password = config.password.as_ref().map(|p| p.expose().to_string()).unwrap_or_default();
        o.set_credentials(user.clone(), password);
    }
    if let Some(tls) = &config.tls {
        o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(Arc::new(tls_config(tls)?))));
    }
    Ok(o)
}

fn tls_config(tls: &crate::config::MqttTlsConfig) -> Result<rustls::ClientConfig, MqttSetupError> {
    let read = |what: &'static str, path: &std::path::Path| {
        std::fs::read(path).map_err(|source| MqttSetupError::Read { what, path: path.display().to_string(), source })
    };
    let ca = read("CA file", &tls.ca_file)?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut BufReader::new(ca.as_slice())).flatten() {
        roots.add(cert)?;
    }
    if roots.is_empty() {
        return Err(MqttSetupError::Pem { what: "CA file", path: tls.ca_file.display().to_string(), expected: "certificate" });
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    Ok(match (&tls.client_cert_file, &tls.client_key_file) {
        (Some(cert_path), Some(key_path)) => {
            let cert_pem = read("client certificate", cert_path)?;
            let certs: Vec<_> = rustls_pemfile::certs(&mut BufReader::new(cert_pem.as_slice())).flatten().collect();
            if certs.is_empty() {
                return Err(MqttSetupError::Pem { what: "client certificate", path: cert_path.display().to_string(), expected: "certificate" });
            }
            let key_pem = read("client key", key_path)?;
            let key = rustls_pemfile::private_key(&mut BufReader::new(key_pem.as_slice()))
                .ok()
                .flatten()
                .ok_or_else(|| MqttSetupError::Pem { what: "client key", path: key_path.display().to_string(), expected: "private key" })?;
            builder.with_client_auth_cert(certs, key)?
        }
        _ => builder.with_no_client_auth(),
    })
}

/// Creates the client and its event loop.
pub fn client(options: MqttOptions) -> (AsyncClient, EventLoop) {
    AsyncClient::new(options, REQUEST_QUEUE)
}

/// Decodes one PUBLISH with the first route whose template matches its topic.
pub fn decode_publish(routes: &[Route], topic: &str, payload: &[u8], now: i64) -> IngestBatch {
    for route in routes {
        if let Some(bound) = route.template.bind(topic) {
            let entity = match &route.entity {
                Some(t) => render(t, &bound),
                None => topic.to_string(),
            };
            let decoded = route.decoder.decode(topic, payload, &entity, now);
            return IngestBatch { readings: decoded.readings, rejects: decoded.rejects, on_commit: None };
        }
    }
    IngestBatch {
        readings: Vec::new(),
        rejects: vec![DlqEntry {
            source: SourceKind::Mqtt,
            topic: topic.to_string(),
            raw: payload.to_vec(),
            reason: DlqReason::NoRoute,
            detail: "no [[ingest.mqtt]] topic template matches this topic".into(),
            received_ms: now,
        }],
        on_commit: None,
    }
}

/// Sends QoS 1/2 acknowledgements in receive order without ever dropping one. Shared by the
/// commit log (which acks after a commit) and the event loop (which flushes the backlog).
#[derive(Clone)]
pub struct Acker {
    client: AsyncClient,
    /// Acks that did not fit into the client's request channel, oldest first.
    backlog: Arc<std::sync::Mutex<std::collections::VecDeque<(u16, QoS)>>>,
}

impl Acker {
    pub fn new(client: AsyncClient) -> Acker {
        Acker { client, backlog: Arc::default() }
    }

    fn try_send(&self, pkid: u16, qos: QoS) -> bool {
        let mut ack = rumqttc::v5::mqttbytes::v5::Publish::new("", qos, Vec::new(), None);
        ack.pkid = pkid;
        self.client.try_ack(&ack).is_ok()
    }

    /// Acknowledges one message (a no-op for QoS 0).
    pub fn ack(&self, pkid: u16, qos: QoS) {
        if qos == QoS::AtMostOnce {
            return;
        }
        // A poisoned lock means a panic elsewhere while holding it; the queue itself is intact.
        let mut backlog = self.backlog.lock().unwrap_or_else(|e| e.into_inner());
        // Behind a backlog, wait in line: acks must leave in receive order.
        if !backlog.is_empty() || !self.try_send(pkid, qos) {
            backlog.push_back((pkid, qos));
        }
    }

    /// Hands waiting acks to the client while its request channel has room; returns how many
    /// still wait.
    pub fn flush(&self) -> usize {
        let mut backlog = self.backlog.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(&(pkid, qos)) = backlog.front() {
            if !self.try_send(pkid, qos) {
                break;
            }
            backlog.pop_front();
        }
        backlog.len()
    }
}

/// Reconnect backoff bounds.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub min: Duration,
    pub max: Duration,
}

/// The event loop: runs until `stop` turns true, then keeps polling (so acks of batches still
/// being committed go out) until `drained` turns true, and disconnects.
pub async fn run(
    mut eventloop: EventLoop,
    client: AsyncClient,
    routes: Vec<Route>,
    ingest: Sender<IngestBatch>,
    metrics: Arc<Metrics>,
    backoff: Backoff,
    mut stop: watch::Receiver<bool>,
    mut drained: watch::Receiver<bool>,
) {
    let filters: Vec<String> = routes.iter().map(|r| r.template.filter()).collect();
    let acker = Acker::new(client.clone());
    let mut ingest = Some(ingest);
    let mut delay = backoff.min;
    loop {
        acker.flush();
        if ingest.is_some() && *stop.borrow() {
            // Stop intake: messages from now on are not acked and will be redelivered.
            ingest = None;
        }
        if ingest.is_none() && *drained.borrow() {
            break;
        }
        let event = tokio::select! {
            e = eventloop.poll() => e,
            _ = stop.changed(), if ingest.is_some() => continue,
            _ = drained.changed(), if ingest.is_none() => continue,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                metrics.mqtt_connects.inc();
                delay = backoff.min;
                tracing::info!(session_present = ack.session_present, "MQTT connected (MQTT 5)");
                for f in &filters {
                    if let Err(e) = client.try_subscribe(f.clone(), QoS::AtLeastOnce) {
                        tracing::error!(filter = %f, error = %e, "cannot queue MQTT subscribe");
                    }
                }
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                metrics.mqtt_messages.inc();
                let Some(tx) = ingest.as_ref() else { continue };
                let topic = String::from_utf8_lossy(&publish.topic);
                let mut batch = decode_publish(&routes, &topic, &publish.payload, now_ms());
                let (acker, pkid, qos) = (acker.clone(), publish.pkid, publish.qos);
                batch.on_commit = Some(Box::new(move || acker.ack(pkid, qos)));
                // Blocks this thread when the commit log is behind: backpressure.
                if tx.send(batch).is_err() {
                    ingest = None;
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "MQTT connection lost");
                if ingest.is_none() {
                    break;
                }
                // Reconnect backoff (not synchronisation): the next poll reconnects.
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(backoff.max);
            }
        }
    }
    // Hand over the acks still waiting, then disconnect (bounded: the broker may be gone; an
    // ack that does not make it only means a redelivery).
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while acker.flush() > 0 {
            if eventloop.poll().await.is_err() {
                break;
            }
        }
    })
    .await;
    let _ = client.try_disconnect();
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while let Ok(ev) = eventloop.poll().await {
            if matches!(ev, Event::Outgoing(rumqttc::Outgoing::Disconnect)) {
                break;
            }
        }
    })
    .await;
}
