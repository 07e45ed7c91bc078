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
//! client's request channel is full: [`Outbound`] keeps it, in order, and the event loop hands
//! it over as soon as there is room (PUBACKs must leave in the order the PUBLISHes arrived).
//!
//! # Subscriptions
//!
//! After every CONNACK the ingest connection subscribes to each of its filters (the own
//! Sparkplug STATE topic, every route's filter, the `$SYS` drop counter), one SUBSCRIBE per
//! filter (a broker may limit the filters per SUBSCRIBE), put at the head of the event
//! loop's queue (`EventLoop::pending`) so they neither wait behind nor fail on a full request
//! channel; SUBSCRIBEs left over from an earlier connection are dropped, as the new connection
//! asks for everything again. Each SUBACK's reason codes are mapped back to their filters
//! ([`super::subscriptions`]): a filter the broker refuses is logged as an ERROR, counted,
//! raises a `subscription_refused` health alert and makes `/health` degraded, until a SUBACK on
//! a later connection grants it.
//!
//! # Sparkplug host application (`mqtt.sparkplug_host_id`)
//!
//! The ingest connection carries the agent's host STATE ([`super::sparkplug::HostApplication`]
//! has the payloads and the protocol rules): before every connection attempt the will in
//! `EventLoop::options` is renewed with a new timestamp; after the CONNACK the agent subscribes
//! to its own STATE topic and its routes, and once every SUBACK is in it publishes the birth,
//! the first message it publishes on that connection (rebirth requests decided earlier wait
//! for it). The birth and the shutdown death are put at the head of the event loop's queue
//! (`EventLoop::pending`), so they neither wait behind nor fail on a full request channel.
//! On an orderly shutdown the death goes out once the last acks are handed to the client
//! (rumqttc sends `pending` first, so acks still in its request channel follow the death, all
//! before the DISCONNECT) and the loop waits (bounded) for the broker's PUBACK before it
//! disconnects. A connection lost before the birth keeps the rebirth requests not yet sent
//! for the next birth ([`HostSession::lost`]). Messages on the own STATE topic are not
//! measurements: they are acknowledged in order through the commit log with nothing in them.
//!
//! # Threads
//!
//! The event loop runs on its own OS thread with a single-threaded tokio runtime, so blocking
//! on the bounded commit-log channel (backpressure) stalls only MQTT intake.

use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::Sender;
use rumqttc::v5::mqttbytes::v5::{Filter, LastWill, Packet, SubAck, Subscribe, SubscribeReasonCode};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, EventLoop, MqttOptions, Request};
use rumqttc::{TlsConfiguration, Transport};
use tokio::sync::watch;

use super::decode::Decoder;
use super::sequence::{SeqEvent, SequenceTracker};
use super::sparkplug::{Command, Effects, HostApplication, SparkplugState};
use super::subscriptions::{Answer, Change, Ledger, Requested, SubscriptionStatus};
use super::topic::{render, TopicTemplate};
use super::IngestBatch;
use crate::config::{MqttConfig, MqttSubscription, PayloadFormat, ValidationConfig};
use crate::dlq::{DlqEntry, DlqReason};
use crate::alerts::health::HealthReporter;
use crate::alerts::publish::PublishRefusals;
use crate::metrics::{HealthKind, Metrics};
use crate::reading::{now_ms, SourceKind};

/// The broker's count of messages it dropped (Mosquitto, EMQX's Mosquitto-compatible `$SYS`):
/// a decimal number, retained, updated every `sys_interval`.
pub const BROKER_DROPPED_TOPIC: &str = "$SYS/broker/publish/messages/dropped";

/// Most QoS 1 publishes (alerts) in flight to the broker per connection.
const OUTGOING_INFLIGHT: u16 = 100;

/// Capacity of the rumqttc request channel (publishes, acks, subscribes). Kept small: what
/// does not fit waits in [`Outbound`], where it is counted (`mqtt_outbound_backlog`).
pub const REQUEST_QUEUE: usize = 4096;

/// MQTT set-up failures (configuration that cannot be used).
#[derive(Debug, thiserror::Error)]
pub enum MqttSetupError {
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsSetupError),
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
            decoder: Decoder { format: sub.format, fields: sub.fields.clone().unwrap_or_default(), validation: validation.clone(), source: SourceKind::Mqtt },
        })
    }
}

/// Which of the agent's two connections to the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Subscriptions, with the persistent session; client id `mqtt.client_id`.
    Ingest,
    /// Alert and review messages, on a connection of their own so they never queue behind
    /// ingest acks; client id `<mqtt.client_id>-pub`, no persistent session.
    Publish,
}

/// Builds the client options (identity, session, credentials, TLS).
pub fn options(config: &MqttConfig, agent_id: &str, role: Role) -> Result<MqttOptions, MqttSetupError> {
    let client_id = config.client_id.clone().unwrap_or_else(|| format!("vigil-{agent_id}"));
    let client_id = match role {
        Role::Ingest => client_id,
        Role::Publish => format!("{client_id}-pub"),
    };
    let mut o = MqttOptions::new(client_id, config.host.clone(), config.port);
    o.set_keep_alive(Duration::from_secs(config.keep_alive_s.max(5)));
    let persistent = role == Role::Ingest && !config.clean_session;
    o.set_clean_start(!persistent);
    if persistent {
        o.set_session_expiry_interval(Some(config.session_expiry_s));
    }
    o.set_receive_maximum(Some(config.receive_maximum));
    // rumqttc preallocates a slot per possible outgoing in-flight publish (65 536 by default,
    // ~16 MB per connection). The agent publishes only alerts, and only on the `Publish`
    // connection: a hundred in flight is plenty.
    o.set_outgoing_inflight_upper_limit(OUTGOING_INFLIGHT);
    o.set_manual_acks(true);
    o.set_max_packet_size(Some(u32::try_from(config.max_packet_bytes).unwrap_or(u32::MAX)));
    if let Some(user) = &config.username {
        let password = config.password.as_ref().map(|p| p.expose().to_string()).unwrap_or_default();
        o.set_credentials(user.clone(), password);
    }
    if let Some(tls) = &config.tls {
        o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(Arc::new(crate::tls::client_config(tls)?))));
    }
    Ok(o)
}

/// Creates the client and its event loop.
pub fn client(options: MqttOptions) -> (AsyncClient, EventLoop) {
    AsyncClient::new(options, REQUEST_QUEUE)
}

/// Decodes one PUBLISH with the first route whose template matches its topic. Sparkplug B
/// routes go through `sparkplug` (aliases, sequence numbers, online state), whose other
/// effects (rebirth requests, presence changes) are returned beside the batch.
pub fn decode_publish(routes: &[Route], sparkplug: &mut SparkplugState, topic: &str, payload: &[u8], now: i64) -> (IngestBatch, Effects) {
    for route in routes {
        if let Some(bound) = route.template.bind(topic) {
            let (decoded, effects) = if route.decoder.format == PayloadFormat::SparkplugB {
                sparkplug.decode(&route.decoder.validation, topic, payload, now)
            } else {
                let entity = match &route.entity {
                    Some(t) => render(t, &bound),
                    None => topic.to_string(),
                };
                (route.decoder.decode(topic, payload, &entity, now), Effects::default())
            };
            return (IngestBatch { readings: decoded.readings, rejects: decoded.rejects, on_commit: None }, effects);
        }
    }
    let batch =     IngestBatch {
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
    };
    (batch, Effects::default())
}

/// Everything the agent sends over the MQTT connection besides subscriptions: acks (from the
/// commit log, after a commit) and alert messages (from the alert stage). Nothing is dropped
/// when the client's request channel is full: requests wait here, in order, and the event loop
/// hands them over as room frees up ([`Outbound::flush`]). Order matters for acks: PUBACKs
/// must leave in the order the PUBLISHes arrived.
#[derive(Clone)]
pub struct Outbound {
    client: AsyncClient,
    /// Requests that did not fit into the client's request channel, oldest first.
    backlog: Arc<std::sync::Mutex<Backlog>>,
}

/// Waiting requests. Acks are compact (a broker replaying a large session backlog can leave
/// hundreds of thousands waiting) and keep their order among themselves; publishes (alerts)
/// go first, since nothing orders them relative to acks.
#[derive(Default)]
struct Backlog {
    publishes: std::collections::VecDeque<(String, Vec<u8>)>,
    acks: std::collections::VecDeque<(u16, QoS)>,
}

impl Backlog {
    fn len(&self) -> usize {
        self.publishes.len() + self.acks.len()
    }
}

impl Outbound {
    pub fn new(client: AsyncClient) -> Outbound {
        Outbound { client, backlog: Arc::default() }
    }

    /// The client, for subscriptions and disconnecting.
    pub fn client(&self) -> &AsyncClient {
        &self.client
    }

    fn backlog(&self) -> std::sync::MutexGuard<'_, Backlog> {
        // A poisoned lock means a panic elsewhere while holding it; the queues are intact.
        self.backlog.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn try_ack(&self, pkid: u16, qos: QoS) -> bool {
        let mut ack = rumqttc::v5::mqttbytes::v5::Publish::new("", qos, Vec::new(), None);
        ack.pkid = pkid;
        self.client.try_ack(&ack).is_ok()
    }

    fn try_publish(&self, topic: &str, payload: &[u8]) -> bool {
        self.client.try_publish(topic, QoS::AtLeastOnce, false, payload.to_vec()).is_ok()
    }

    /// Acknowledges one message (a no-op for QoS 0).
    pub fn ack(&self, pkid: u16, qos: QoS) {
        if qos == QoS::AtMostOnce {
            return;
        }
        let mut b = self.backlog();
        // Behind waiting acks, wait in line.
        if !b.acks.is_empty() || !self.try_ack(pkid, qos) {
            b.acks.push_back((pkid, qos));
        }
    }

    /// Publishes with QoS 1.
    pub fn publish(&self, topic: String, payload: Vec<u8>) {
        let mut b = self.backlog();
        if !b.publishes.is_empty() || !self.try_publish(&topic, &payload) {
            b.publishes.push_back((topic, payload));
        }
    }

    /// Publishes a command with QoS 0 (Sparkplug NCMD); when the client's request channel is
    /// full it waits in line like an alert, with QoS 1.
    pub fn command(&self, topic: String, payload: Vec<u8>) {
        let mut b = self.backlog();
        if !b.publishes.is_empty() || self.client.try_publish(topic.as_str(), QoS::AtMostOnce, false, payload.clone()).is_err() {
            b.publishes.push_back((topic, payload));
        }
    }

    /// Takes the publishes still waiting in line, oldest first (the host application holds
    /// them for the next connection's birth: [`HostSession::lost`]).
    fn take_publishes(&self) -> Vec<(String, Vec<u8>)> {
        std::mem::take(&mut self.backlog().publishes).into()
    }

    /// Hands waiting requests to the client while its request channel has room; returns how
    /// many still wait.
    pub fn flush(&self) -> usize {
        let mut b = self.backlog();
        while let Some((topic, payload)) = b.publishes.front() {
            if !self.try_publish(topic, payload) {
                return b.len();
            }
            b.publishes.pop_front();
        }
        while let Some(&(pkid, qos)) = b.acks.front() {
            if !self.try_ack(pkid, qos) {
                break;
            }
            b.acks.pop_front();
        }
        // After a burst the queues would keep their peak capacity (a million acks: 4 MiB).
        if b.acks.is_empty() && b.acks.capacity() > 1024 {
            b.acks.shrink_to_fit();
        }
        if b.publishes.is_empty() && b.publishes.capacity() > 64 {
            b.publishes.shrink_to_fit();
        }
        b.len()
    }
}

/// The two shutdown signals of a connection loop: `stop` (stop taking input) and `drained`
/// (the commit log has finished: send what is left and disconnect).
#[derive(Clone)]
pub struct Shutdown {
    pub stop: watch::Receiver<bool>,
    pub drained: watch::Receiver<bool>,
}

/// Loss watching. On the ingest connection: the broker's own drop counter (`$SYS`, when
/// `mqtt.broker_stats`), publisher sequence gaps ([`super::sequence`]) and subscriptions the
/// broker refused ([`super::subscriptions`]); all raise agent health alerts. On the publish
/// connection: publishes the broker refused in its PUBACK ([`PublishRefusals`]).
pub struct Watch {
    pub health: HealthReporter,
    pub broker_stats: bool,
    /// The broker's last answer per filter (shared with the HTTP API and `/metrics`).
    pub subscriptions: Arc<SubscriptionStatus>,
    /// Alert publishes the broker refused (shared with the HTTP API and `/metrics`).
    pub publishes: Arc<PublishRefusals>,
}

impl Watch {
    /// The answers of one SUBACK: logs refusals (filter and reason code, nothing else about
    /// the connection) and grants after a refusal, and raises one health alert per SUBACK
    /// that refused anything.
    fn subscription_answers(&self, answers: &[Answer]) {
        let mut refused = Vec::new();
        for a in answers {
            match self.subscriptions.record(a) {
                Change::Refused(r) => {
                    tracing::error!(
                        filter = %r.filter,
                        code = format_args!("0x{:02X}", r.code),
                        reason = r.reason,
                        "the MQTT broker refused the subscription: nothing matching this filter will arrive (check the broker's ACL for this agent's user; the agent asks again on its next connection)"
                    );
                    refused.push(r.to_string());
                }
                Change::GrantedAgain => tracing::info!(filter = %a.filter, "the MQTT broker granted the subscription it had refused"),
                Change::Granted => {}
            }
            if let SubscribeReasonCode::Success(granted) = a.code {
                if (granted as u8) < (a.requested as u8) {
                    tracing::warn!(filter = %a.filter, granted = granted as u8, requested = a.requested as u8, "the MQTT broker granted the subscription with a lower QoS: messages may be lost");
                }
            }
        }
        if !refused.is_empty() {
            self.health.raise(HealthKind::SubscriptionRefused, format!("the MQTT broker refused the subscription to {}: nothing matching it arrives", refused.join(", ")));
        }
    }

    /// A `$SYS` message: the broker's drop counter.
    fn broker_report(&self, metrics: &Metrics, topic: &str, payload: &[u8]) {
        if topic != BROKER_DROPPED_TOPIC {
            return;
        }
        let Some(total) = std::str::from_utf8(payload).ok().and_then(|s| s.trim().parse::<u64>().ok()) else {
            tracing::debug!(topic, "unparseable $SYS value");
            return;
        };
        let previous = (metrics.broker_dropped_seen.get() > 0).then(|| metrics.broker_dropped.get());
        metrics.broker_dropped.set(total);
        metrics.broker_dropped_seen.set(1);
        match previous {
            Some(p) if total > p => {
                self.health.raise(
                    HealthKind::BrokerDrops,
                    format!(
                        "the MQTT broker dropped {} messages since its last report ({total} since it started); \
                         a subscriber is too slow or offline beyond the broker's queue limit (max_queued_messages)",
                        total - p
                    ),
                );
            }
            None if total > 0 => tracing::warn!(dropped = total, "the MQTT broker has dropped messages since it started"),
            _ => {}
        }
    }

    /// Publisher sequence numbers of one message's readings.
    fn sequences(&self, metrics: &Metrics, tracker: &mut SequenceTracker, readings: &[crate::reading::Reading]) {
        for r in readings {
            let Some(seq) = r.source_seq else { continue };
            match tracker.observe(&r.entity, seq) {
                SeqEvent::InOrder => {}
                SeqEvent::Gap(n) => {
                    metrics.seq_gaps.add(n);
                    self.health.raise(HealthKind::SequenceGap, format!("{n} messages missing from {} before sequence number {seq}", r.entity));
                }
                SeqEvent::Reset => metrics.seq_resets.inc(),
            }
        }
    }
}

/// Acts on what a Sparkplug B message changed: counts a sequence gap, publishes rebirth
/// requests (QoS 0, as the specification asks of NCMD; into `held` while the host birth is not
/// out yet) and re-exports the online state.
fn sparkplug_effects(metrics: &Metrics, outbound: &Outbound, state: &SparkplugState, effects: Effects, held: Option<&mut Vec<Command>>) {
    if effects.gap > 0 {
        metrics.sparkplug_seq_gaps.add(effects.gap);
    }
    for c in &effects.commands {
        tracing::info!(topic = %c.topic, "Sparkplug B: requesting a rebirth");
        metrics.sparkplug_rebirth_requests.inc();
    }
    match held {
        Some(held) => held.extend(effects.commands),
        None => effects.commands.into_iter().for_each(|c| outbound.command(c.topic, c.payload)),
    }
    if effects.presence_changed {
        metrics.sparkplug_presence.set(state.presence());
    }
}

/// The host application's I/O on the ingest connection (see the module doc).
pub struct HostSession {
    app: HostApplication,
    /// SUBACKs of this connection still to come before the birth may go out.
    subacks_due: usize,
    /// The current connection's birth was published (handed to the event loop).
    online: bool,
    /// Rebirth requests decided before the birth: the birth is the first message a host
    /// application publishes.
    held: Vec<Command>,
}

impl HostSession {
    /// For a checked `mqtt.sparkplug_host_id`.
    pub fn new(host_id: &str) -> HostSession {
        HostSession { app: HostApplication::new(host_id), subacks_due: 0, online: false, held: Vec::new() }
    }

    /// Before a connection attempt: a new timestamp and its will.
    fn renew_will(&mut self, eventloop: &mut EventLoop) {
        let will = self.app.connecting(now_ms());
        eventloop.options.set_last_will(LastWill::new(self.app.topic(), will, QoS::AtLeastOnce, true, None));
    }

    /// Puts a STATE message at the head of the event loop's queue (QoS 1, retained).
    fn publish(&self, eventloop: &mut EventLoop, metrics: &Metrics, online: bool) {
        let payload = if online { self.app.birth() } else { self.app.death() };
        let mut publish = rumqttc::v5::mqttbytes::v5::Publish::new(self.app.topic(), QoS::AtLeastOnce, payload, None);
        publish.retain = true;
        eventloop.pending.push_back(Request::Publish(publish));
        metrics.sparkplug_host.online.set(u64::from(online));
        tracing::info!(host_id = self.app.host_id(), topic = self.app.topic(), online, timestamp = self.app.timestamp(), "Sparkplug B host STATE published");
    }

    /// Publishes the birth and then the rebirth requests held for it.
    fn birth(&mut self, eventloop: &mut EventLoop, metrics: &Metrics, outbound: &Outbound) {
        self.publish(eventloop, metrics, true);
        self.online = true;
        for c in self.held.drain(..) {
            outbound.command(c.topic, c.payload);
        }
    }

    /// One SUBACK of this connection arrived.
    fn suback(&mut self, eventloop: &mut EventLoop, metrics: &Metrics, outbound: &Outbound) {
        if self.subacks_due > 0 {
            self.subacks_due -= 1;
            if self.subacks_due == 0 && !self.online {
                self.birth(eventloop, metrics, outbound);
            }
        }
    }

    /// The connection is gone (the broker publishes the will): renew the will for the next.
    /// A STATE of the old connection not yet acknowledged is dropped: rumqttc would send it
    /// again on a resumed session, ahead of the new connection's subscriptions and with the old
    /// timestamp. Rebirth requests not yet sent (in `pending`, where rumqttc put what was left
    /// in its request channel and its unacknowledged publishes, or waiting in `outbound`) are
    /// held for the next birth: sent as they are, they would go out on the next connection
    /// ahead of its birth (rumqttc sends `pending` and then the request channel as soon as the
    /// SUBSCRIBEs are out, while the birth waits for their SUBACKs). The ingest connection
    /// publishes nothing else.
    fn lost(&mut self, eventloop: &mut EventLoop, metrics: &Metrics, outbound: &Outbound) {
        if self.online {
            tracing::info!(host_id = self.app.host_id(), timestamp = self.app.timestamp(), "Sparkplug B host offline (connection lost; the broker publishes the will)");
        }
        let topic = self.app.topic().as_bytes();
        let mut unsent = Vec::new();
        eventloop.pending.retain(|r| match r {
            Request::Publish(p) if p.topic == topic => false,
            Request::Publish(p) => {
                unsent.push(Command { topic: String::from_utf8_lossy(&p.topic).into_owned(), payload: p.payload.to_vec() });
                false
            }
            _ => true,
        });
        unsent.extend(outbound.take_publishes().into_iter().map(|(topic, payload)| Command { topic, payload }));
        // Decided while offline: after the ones that were already on their way.
        unsent.append(&mut self.held);
        self.held = unsent;
        self.online = false;
        self.subacks_due = 0;
        metrics.sparkplug_host.online.set(0);
        self.renew_will(eventloop);
    }
}

/// Subscribes to `wanted`, one SUBSCRIBE per filter in this order, at the head of the event
/// loop's queue, after dropping any SUBSCRIBE an earlier connection left there; returns how
/// many SUBSCRIBEs (SUBACKs to come). Called on each CONNACK (see the module doc).
fn subscribe(eventloop: &mut EventLoop, ledger: &mut Ledger, wanted: Vec<Requested>) -> usize {
    eventloop.pending.retain(|r| !matches!(r, Request::Subscribe(_)));
    ledger.reset();
    for (filter, qos) in wanted.iter().rev() {
        eventloop.pending.push_front(Request::Subscribe(Subscribe::new(Filter::new(filter.clone(), *qos), None)));
    }
    for w in &wanted {
        ledger.queued(vec![w.clone()]);
    }
    wanted.len()
}

/// One SUBACK: its reason codes, mapped back to their filters, go to the watch.
fn suback(ledger: &mut Ledger, watch: Option<&Watch>, ack: &SubAck) {
    match ledger.answered(ack) {
        Some(answers) => {
            if let Some(w) = watch {
                w.subscription_answers(&answers);
            }
        }
        None => tracing::debug!(pkid = ack.pkid, "SUBACK for a SUBSCRIBE this connection did not send"),
    }
}

/// Reconnect backoff bounds.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub min: Duration,
    pub max: Duration,
}

/// The event loop of one connection. With `ingest`, it subscribes to the routes' filters and
/// feeds the commit log; without, it only sends what [`Outbound`] holds. With `host` (ingest
/// only) it is the Sparkplug host application. It runs until `stop` turns true, then keeps
/// polling (so acks of batches still being committed go out) until `drained` turns true, and
/// disconnects.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    mut eventloop: EventLoop,
    outbound: Outbound,
    routes: Vec<Route>,
    ingest: Option<Sender<IngestBatch>>,
    metrics: Arc<Metrics>,
    backoff: Backoff,
    shutdown: Shutdown,
    watch: Option<Watch>,
    mut host: Option<HostSession>,
) {
    let mut sequences = SequenceTracker::default();
    let mut sparkplug = SparkplugState::default();
    let mut ledger = Ledger::default();
    let Shutdown { mut stop, mut drained } = shutdown;
    let filters: Vec<String> = routes.iter().map(|r| r.template.filter()).collect();
    let client = outbound.client().clone();
    let is_ingest = ingest.is_some();
    let mut ingest = ingest;
    let mut delay = backoff.min;
    let connected = if is_ingest { &metrics.mqtt_ingest_connected } else { &metrics.mqtt_publish_connected };
    if let Some(h) = host.as_mut() {
        let _ = metrics.sparkplug_host.host_id.set(h.app.host_id().to_string());
        h.renew_will(&mut eventloop);
    }
    loop {
        let waiting = outbound.flush() as u64;
        if is_ingest {
            metrics.mqtt_outbound_backlog.set(waiting);
        }
        let stopping = *stop.borrow();
        if stopping {
            // Stop intake: messages from now on are not acked and will be redelivered.
            ingest = None;
        }
        if stopping && *drained.borrow() {
            break;
        }
        let event = tokio::select! {
            e = eventloop.poll() => e,
            _ = stop.changed(), if !stopping => continue,
            _ = drained.changed(), if stopping => continue,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                delay = backoff.min;
                connected.set(1);
                if !is_ingest {
                    tracing::info!("MQTT publisher connected");
                    continue;
                }
                metrics.mqtt_connects.inc();
                tracing::info!(session_present = ack.session_present, "MQTT connected (MQTT 5)");
                // A host application subscribes to its own STATE topic, then to the namespace.
                let state_topic = host.as_ref().map(|h| h.app.topic().to_string());
                let mut wanted: Vec<Requested> = state_topic.iter().chain(&filters).map(|f| (f.clone(), QoS::AtLeastOnce)).collect();
                if watch.as_ref().is_some_and(|w| w.broker_stats) {
                    // QoS 0: a statistic, no ack; brokers without $SYS simply never send it.
                    wanted.push((BROKER_DROPPED_TOPIC.to_string(), QoS::AtMostOnce));
                }
                let subscribed = subscribe(&mut eventloop, &mut ledger, wanted);
                if let Some(h) = host.as_mut() {
                    h.subacks_due = subscribed;
                    if subscribed == 0 {
                        h.birth(&mut eventloop, &metrics, &outbound);
                    }
                }
            }
            Ok(Event::Outgoing(rumqttc::Outgoing::Subscribe(pkid))) => {
                if !ledger.sent(pkid) {
                    tracing::debug!(pkid, "a SUBSCRIBE of an earlier connection went out");
                }
            }
            Ok(Event::Incoming(Packet::PubAck(ack))) if !is_ingest => {
                let refused = watch.as_ref().and_then(|w| w.publishes.record(ack.reason));
                if let Some((code, reason)) = refused {
                    tracing::error!(
                        pkid = ack.pkid,
                        code = format_args!("0x{code:02X}"),
                        reason,
                        "the MQTT broker refused an alert publish: the message is dropped (the outbox keeps the alert; check that the agent's user may publish to alerts.topic and alerts.review_topic)"
                    );
                }
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                suback(&mut ledger, watch.as_ref(), &ack);
                if let Some(h) = host.as_mut() {
                    h.suback(&mut eventloop, &metrics, &outbound);
                }
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                let topic = String::from_utf8_lossy(&publish.topic);
                if topic.starts_with("$SYS/") {
                    if let Some(w) = &watch {
                        w.broker_report(&metrics, &topic, &publish.payload);
                    }
                    continue;
                }
                metrics.mqtt_messages.inc();
                let Some(tx) = ingest.as_ref() else { continue };
                let own_state = host.as_ref().is_some_and(|h| topic == h.app.topic());
                let (mut batch, effects) = if own_state {
                    (IngestBatch { readings: Vec::new(), rejects: Vec::new(), on_commit: None }, Effects::default())
                } else {
                    decode_publish(&routes, &mut sparkplug, &topic, &publish.payload, now_ms())
                };
                if let Some(h) = host.as_mut().filter(|h| h.online && h.app.contradicted(&topic, &publish.payload)) {
                    tracing::warn!(host_id = h.app.host_id(), "a Sparkplug B STATE says this host is offline; publishing its birth again");
                    h.publish(&mut eventloop, &metrics, true);
                }
                let held = host.as_mut().filter(|h| !h.online).map(|h| &mut h.held);
                sparkplug_effects(&metrics, &outbound, &sparkplug, effects, held);
                if let Some(w) = &watch {
                    w.sequences(&metrics, &mut sequences, &batch.readings);
                }
                let (outbound, pkid, qos) = (outbound.clone(), publish.pkid, publish.qos);
                batch.on_commit = Some(Box::new(move || outbound.ack(pkid, qos)));
                // Blocks this thread when the commit log is behind: backpressure.
                if tx.send(batch).is_err() {
                    ingest = None;
                }
            }
            Ok(_) => {}
            Err(e) => {
                connected.set(0);
                if let Some(h) = host.as_mut() {
                    h.lost(&mut eventloop, &metrics, &outbound);
                }
                let connection = if is_ingest { "MQTT connection lost" } else { "MQTT publisher connection lost" };
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "{connection}");
                if stopping {
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
    let mut lost = false;
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while outbound.flush() > 0 {
            if eventloop.poll().await.is_err() {
                lost = true;
                break;
            }
        }
    })
    .await;
    // A host application announces its orderly departure: the death once the last acks are
    // handed over (acks still in the request channel go out after it: `pending` is sent first),
    // and the broker's PUBACK for it before the DISCONNECT (bounded; the death precedes the
    // DISCONNECT on the wire either way, and a normal DISCONNECT makes the broker drop the will).
    if let Some(h) = host.as_ref().filter(|h| h.online && !lost) {
        h.publish(&mut eventloop, &metrics, false);
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while !(eventloop.pending.is_empty() && eventloop.state.inflight() == 0) {
                if eventloop.poll().await.is_err() {
                    break;
                }
            }
        })
        .await;
    }
    connected.set(0);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn publish(topic: &str, payload: &[u8]) -> Request {
        Request::Publish(rumqttc::v5::mqttbytes::v5::Publish::new(topic, QoS::AtMostOnce, payload.to_vec(), None))
    }

    #[test]
    fn rebirth_requests_unsent_when_the_connection_is_lost_wait_for_the_next_birth() {
        let (client, mut eventloop) = AsyncClient::new(MqttOptions::new("vigil-test", "127.0.0.1", 1), 1);
        let outbound = Outbound::new(client);
        let metrics = Metrics::default();
        let mut host = HostSession::new("vigil-1");
        host.renew_will(&mut eventloop);
        host.online = true;
        // What rumqttc's `clean` left in `pending` when the connection broke: the birth (not
        // acknowledged), a rebirth request that was in the request channel, an ack.
        host.publish(&mut eventloop, &metrics, true);
        eventloop.pending.push_back(publish("spBv1.0/g/NCMD/n1", b"first"));
        eventloop.pending.push_back(Request::PubAck(rumqttc::v5::mqttbytes::v5::PubAck::new(7, None)));
        // Two waiting in `outbound` behind the request channel (capacity 1), full with an ack.
        outbound.ack(8, QoS::AtLeastOnce);
        outbound.command("spBv1.0/g/NCMD/n2".into(), b"second".to_vec());
        outbound.command("spBv1.0/g/NCMD/n3".into(), b"third".to_vec());

        host.lost(&mut eventloop, &metrics, &outbound);
        assert!(
            eventloop.pending.iter().all(|r| matches!(r, Request::PubAck(_))),
            "nothing but the ack may go out on the next connection before its birth: {:?}",
            eventloop.pending
        );
        assert_eq!(outbound.flush(), 0, "no publish waits in outbound");
        let held: Vec<&str> = host.held.iter().map(|c| c.topic.as_str()).collect();
        assert_eq!(held, ["spBv1.0/g/NCMD/n1", "spBv1.0/g/NCMD/n2", "spBv1.0/g/NCMD/n3"], "held in the order they were decided");
        assert!(!host.online);
    }
}
