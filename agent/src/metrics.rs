//! Counters, gauges and histograms shared by all stages, and their Prometheus exposition.
//!
//! # Design constraints
//!
//! - **Nothing on the hot path allocates or locks.** Stages increment plain atomics
//!   ([`Counter`], [`Gauge`], [`Histogram`]); labelled families are fixed arrays indexed by an
//!   enum (source kind, DLQ reason, band), never maps keyed by strings.
//! - **One exposition mechanism.** Everything `/metrics` shows comes from [`Collector`]s
//!   registered in one [`Registry`]: [`Metrics`] (the data path's counters), [`OutboxCollector`]
//!   (outbox depth and per-sink delivery), [`ProcessCollector`] (RSS, CPU) and the model's
//!   identity. A subsystem with its own metrics (a new source or sink) implements [`Collector`]
//!   for its own struct and registers it in `agent::run`; it does not touch this file.
//! - **Names are documented where they are defined**: each field's doc comment starts with the
//!   exported name; each collector lists the families it writes. Every name starts with
//!   `vigil_` (except the conventional `process_*`). Durations are exported in seconds.
//! - Scraping costs one pass over the atomics plus one read transaction for the outbox; it does
//!   not block any stage.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::dlq::{DlqCounters, DlqReason};
use crate::reading::SourceKind;

pub use firmware_bridge::gateway::NodeCounts as SerialNodeCounts;

/// A monotonically increasing counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    pub fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub fn dec(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Histogram with fixed log-spaced buckets (powers of two): durations from 1 µs to ~67 s
/// ([`Histogram::record`]), or plain sizes ([`Histogram::record_value`], e.g. batch sizes).
#[derive(Debug)]
pub struct Histogram {
    buckets: [AtomicU64; 27],
    sum_us: AtomicU64,
    count: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram { buckets: std::array::from_fn(|_| AtomicU64::new(0)), sum_us: AtomicU64::new(0), count: AtomicU64::new(0) }
    }
}

impl Histogram {
    pub fn record(&self, d: Duration) {
        let us = d.as_micros().min(u64::MAX as u128) as u64;
        let bucket = (64 - us.leading_zeros() as usize).min(self.buckets.len() - 1);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Records a plain value (a size, a count) instead of a duration.
    pub fn record_value(&self, v: u64) {
        let bucket = (64 - v.leading_zeros() as usize).min(self.buckets.len() - 1);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(v, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Sum of everything recorded (µs for durations).
    pub fn sum(&self) -> u64 {
        self.sum_us.load(Ordering::Relaxed)
    }

    /// Upper bound of the bucket holding quantile `q` (0..=1), in microseconds.
    pub fn quantile_us(&self, q: f64) -> u64 {
        Histogram::quantile_of(&self.buckets(), q)
    }

    /// Bucket counts (bucket `i` holds durations below 2^i µs).
    pub fn buckets(&self) -> Vec<u64> {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect()
    }

    /// Upper bound (µs) of the bucket holding quantile `q` of `buckets` (e.g. the difference of
    /// two [`Histogram::buckets`] readings: the quantile over an interval).
    pub fn quantile_of(buckets: &[u64], q: f64) -> u64 {
        let total: u64 = buckets.iter().sum();
        if total == 0 {
            return 0;
        }
        let rank = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, b) in buckets.iter().enumerate() {
            seen += b;
            if seen >= rank {
                return 1u64 << i;
            }
        }
        1u64 << (buckets.len().saturating_sub(1))
    }

    pub fn mean_us(&self) -> f64 {
        let n = self.count();
        if n == 0 { 0.0 } else { self.sum_us.load(Ordering::Relaxed) as f64 / n as f64 }
    }
}

/// All of the data path's metrics. The first line of each field's doc is its exported name.
#[derive(Debug, Default)]
pub struct Metrics {
    /// `vigil_readings_in_total{source}`: readings committed to the commit log.
    pub readings_in: Counter,
    pub readings_in_by_source: [Counter; SourceKind::ALL.len()],
    /// `vigil_dlq_records_total{reason}`: dead letters per reason.
    pub dlq: DlqCounters,
    /// `vigil_dlq_replayed_total`: dead letters that decoded on a replay (`POST /api/dlq/replay`)
    /// and became readings.
    pub dlq_replayed: Counter,
    /// `vigil_commits_total`, `vigil_stage_seconds{stage="commit"}`: group commits of the commit
    /// log, and how long each took (write + fsync).
    pub commits: Counter,
    pub commit_time: Histogram,
    /// `vigil_commit_group_readings`: readings per group commit (histogram).
    pub commit_group_size: Histogram,
    /// `vigil_bad_quality_readings_total`: readings flagged `bad` by their source (kept and
    /// uplinked, not scored).
    pub bad_quality: Counter,
    /// `vigil_duplicate_readings_total`: readings whose event time and value were already
    /// buffered (redeliveries), ignored.
    pub duplicate_readings: Counter,
    /// `vigil_late_readings_total`: readings older than their entity's last emitted window.
    pub late_readings: Counter,
    /// `vigil_windows_emitted_total`: windows closed by the watermark.
    pub windows_emitted: Counter,
    /// `vigil_inference_batches_total`, `vigil_windows_scored_total`: interpreter invocations
    /// and windows scored.
    pub inference_batches: Counter,
    pub windows_scored: Counter,
    /// `vigil_inference_batch_windows`: windows per interpreter invocation (histogram).
    pub inference_batch_size: Histogram,
    /// `vigil_stage_seconds{stage="inference_batch"}`: interpreter time per batch.
    pub inference_batch_time: Histogram,
    /// `vigil_stage_seconds{stage="inference_window"}`: interpreter time per window (batch time
    /// divided by its windows).
    pub inference_window_time: Histogram,
    /// `vigil_latency_seconds{path="ingest_to_inference"}`: from the ingest of the reading that
    /// closed a window to the start of its batch's invocation (commit, routing, queueing).
    pub ingest_to_inference: Histogram,
    /// `vigil_latency_seconds{path="ingest_to_score"}`: from the ingest of the reading that
    /// closed a window to its score being evaluated.
    pub score_latency: Histogram,
    /// `vigil_latency_seconds{path="event_to_score"}`: from the window's end (source event
    /// time) to its score being evaluated, on the gateway clock: includes the allowed lateness
    /// and the source's own delay.
    pub event_to_score: Histogram,
    /// `vigil_latency_seconds{path="ingest_to_alert"}` / `{path="event_to_alert"}`: the same
    /// up to the raised alert being handed to the publishers.
    pub alert_latency: Histogram,
    pub event_to_alert: Histogram,
    /// `vigil_scores_total{band}`: scored windows per band (normal, review, alert).
    pub scores_by_band: [Counter; 3],
    /// `vigil_alerts_total{state}`: alerts raised and cleared; review events.
    pub alerts_raised: Counter,
    pub alerts_cleared: Counter,
    pub review_events: Counter,
    /// `vigil_review_labels_total`: review queue items labelled through `POST /api/review/{id}`.
    pub review_labels: Counter,
    /// `vigil_review_queue_dropped_total`: unlabelled review queue items dropped because the
    /// queue was full (`alerts.review_queue_capacity`; the oldest goes first).
    pub review_queue_dropped: Counter,
    /// `vigil_health_alerts_total{kind}`: agent health alerts (e.g. `broker_drops`).
    pub health_alerts: HealthCounters,
    /// `vigil_mqtt_messages_total`, `vigil_mqtt_connects_total`: MQTT messages received and
    /// MQTT (re)connections of the ingest connection.
    pub mqtt_messages: Counter,
    pub mqtt_connects: Counter,
    /// `vigil_mqtt_connected{connection}`: 1 while the ingest / publish connection is up.
    pub mqtt_ingest_connected: Gauge,
    pub mqtt_publish_connected: Gauge,
    /// `vigil_mqtt_outbound_backlog`: MQTT acks and alert publishes waiting for room in the
    /// client (`ingest::mqtt::Outbound`).
    pub mqtt_outbound_backlog: Gauge,
    /// `vigil_mqtt_broker_dropped_messages`: the broker's own count of messages it dropped
    /// (`$SYS/broker/publish/messages/dropped`; queue limits, slow clients), as last reported.
    /// Broker-wide, not only the agent's messages. Absent until the broker reports it.
    pub broker_dropped: Gauge,
    pub broker_dropped_seen: Gauge,
    /// `vigil_source_sequence_gaps_total`: messages missing between consecutive publisher
    /// sequence numbers (payload field `seq`), summed over publishers.
    pub seq_gaps: Counter,
    /// `vigil_source_sequence_resets_total`: a publisher's sequence went back (it restarted).
    pub seq_resets: Counter,
    /// Serial frames rejected (checksum, framing, oversized, malformed), all ports; each is a
    /// dead letter too.
    pub serial_bad_frames: Counter,
    /// Per serial sensor node (`ingest::serial`).
    pub serial_nodes: SerialNodes,
    /// Modbus polling and write-back (`vigil_modbus_*`, see [`ModbusMetrics`]).
    pub modbus: ModbusMetrics,
    /// `vigil_serial_ports_open`: configured serial ports currently open.
    pub serial_ports_open: Gauge,
    /// `vigil_sparkplug_sequence_gaps_total`: Sparkplug B messages missing between an edge
    /// node's consecutive `seq` numbers (each gap also requests a rebirth).
    pub sparkplug_seq_gaps: Counter,
    /// `vigil_sparkplug_rebirth_requests_total`: NCMD `Node Control/Rebirth` requests sent
    /// (sequence gap, DATA without BIRTH, unknown alias).
    pub sparkplug_rebirth_requests: Counter,
    /// `vigil_sparkplug_online{group, node, device}`: 1 while a Sparkplug B edge node (device
    /// label empty) or device is online (BIRTH seen, no DEATH since), 0 after its DEATH.
    pub sparkplug_presence: SparkplugPresence,
    /// `vigil_sparkplug_host_online{host_id}`: 1 while the agent's Sparkplug host STATE is
    /// online (the current connection's birth was published), 0 after the connection was lost
    /// (the broker publishes the will) or the orderly shutdown published `online: false`.
    /// Exported only with `mqtt.sparkplug_host_id`.
    pub sparkplug_host: SparkplugHostStatus,
}

/// The agent's own Sparkplug host application state (`ingest::sparkplug::HostApplication`).
#[derive(Debug, Default)]
pub struct SparkplugHostStatus {
    /// `mqtt.sparkplug_host_id`, set once by the MQTT source.
    pub host_id: std::sync::OnceLock<String>,
    pub online: Gauge,
}

/// Online state of every Sparkplug B node and device seen (`ingest::sparkplug`), replaced as a
/// whole by the MQTT source when it changes.
#[derive(Debug, Default)]
pub struct SparkplugPresence(std::sync::Mutex<Vec<crate::ingest::sparkplug::Presence>>);

impl SparkplugPresence {
    pub fn set(&self, presence: Vec<crate::ingest::sparkplug::Presence>) {
        *self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = presence;
    }

    pub fn snapshot(&self) -> Vec<crate::ingest::sparkplug::Presence> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }
}

/// Link counters per serial sensor node, labelled by port and node id: `frames` and
/// `readings` accepted, `missing_frames` (lost in sequence gaps), `duplicate_frames` (dropped),
/// `restarts`. Exported as `vigil_serial_<counter>{port, node}`.
#[derive(Debug, Default)]
pub struct SerialNodes(std::sync::Mutex<std::collections::BTreeMap<(String, u16), SerialNodeCounts>>);

impl SerialNodes {
    /// Replaces the counters of `node` on `port` (the source owns the running totals).
    pub fn set(&self, port: &str, node: u16, counts: SerialNodeCounts) {
        let mut map = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match map.get_mut(&(port.to_string(), node)) {
            Some(c) => *c = counts,
            None => {
                map.insert((port.to_string(), node), counts);
            }
        }
    }

    /// `(port, node, counters)`, sorted by port and node.
    pub fn snapshot(&self) -> Vec<(String, u16, SerialNodeCounts)> {
        let map = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        map.iter().map(|((p, n), c)| (p.clone(), *n, *c)).collect()
    }
}

/// Per-kind counters of agent health alerts.
#[derive(Debug, Default)]
pub struct HealthCounters {
    counts: [Counter; HealthKind::ALL.len()],
}

impl HealthCounters {
    pub fn inc(&self, kind: HealthKind) {
        self.counts[kind as usize].inc();
    }
    pub fn get(&self, kind: HealthKind) -> u64 {
        self.counts[kind as usize].get()
    }
}

/// What an agent health alert is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthKind {
    /// The MQTT broker reported dropped messages.
    BrokerDrops,
    /// A publisher's sequence numbers skipped messages.
    SequenceGap,
    /// The model's inputs or scores drifted from its training distribution.
    ModelDrift,
    /// A model version was refused at load or a candidate was demoted (rolled back).
    ModelLifecycle,
    /// The MQTT broker refused a subscription (SUBACK reason code >= 0x80).
    SubscriptionRefused,
}

impl HealthKind {
    pub const ALL: [HealthKind; 5] = [HealthKind::BrokerDrops, HealthKind::SequenceGap, HealthKind::ModelDrift, HealthKind::ModelLifecycle, HealthKind::SubscriptionRefused];
    pub fn as_str(self) -> &'static str {
        match self {
            HealthKind::BrokerDrops => "broker_drops",
            HealthKind::SequenceGap => "sequence_gap",
            HealthKind::ModelDrift => "model_drift",
            HealthKind::ModelLifecycle => "model_lifecycle",
            HealthKind::SubscriptionRefused => "subscription_refused",
        }
    }
}

impl Metrics {
    /// Counts committed readings, in total and per source.
    pub fn count_readings_in<'a>(&self, readings: impl Iterator<Item = &'a crate::reading::Reading>) {
        let mut per = [0u64; SourceKind::ALL.len()];
        let mut n = 0;
        for r in readings {
            per[r.source.index()] += 1;
            n += 1;
        }
        self.readings_in.add(n);
        for (c, v) in self.readings_in_by_source.iter().zip(per) {
            if v > 0 {
                c.add(v);
            }
        }
    }
}

impl Collector for Metrics {
    fn collect(&self, out: &mut Exposition) {
        out.family("vigil_readings_in_total", Kind::Counter, "Readings committed to the commit log, per source.");
        for (i, s) in SourceKind::ALL.iter().enumerate() {
            out.sample("vigil_readings_in_total", &[("source", s.as_str())], self.readings_in_by_source[i].get() as f64);
        }
        out.family("vigil_dlq_records_total", Kind::Counter, "Dead letters (messages that could not become readings), per reason.");
        for r in DlqReason::ALL {
            out.sample("vigil_dlq_records_total", &[("reason", r.as_str())], self.dlq.get(r) as f64);
        }
        let counters: [(&str, &str, &Counter); 16] = [
            ("vigil_review_labels_total", "Review queue items labelled through the API.", &self.review_labels),
            ("vigil_review_queue_dropped_total", "Unlabelled review queue items dropped because the queue was full (oldest first).", &self.review_queue_dropped),
            ("vigil_commits_total", "Group commits of the commit log.", &self.commits),
            ("vigil_dlq_replayed_total", "Dead letters that decoded on a replay through the API and became readings.", &self.dlq_replayed),
            ("vigil_bad_quality_readings_total", "Readings flagged bad by their source (uplinked, not scored).", &self.bad_quality),
            ("vigil_duplicate_readings_total", "Redelivered readings ignored by the windows.", &self.duplicate_readings),
            ("vigil_late_readings_total", "Readings older than their entity's last emitted window.", &self.late_readings),
            ("vigil_windows_emitted_total", "Windows closed by the watermark.", &self.windows_emitted),
            ("vigil_inference_batches_total", "Interpreter invocations.", &self.inference_batches),
            ("vigil_windows_scored_total", "Windows scored by the model.", &self.windows_scored),
            ("vigil_mqtt_messages_total", "MQTT messages received on the ingest connection.", &self.mqtt_messages),
            ("vigil_mqtt_connects_total", "MQTT (re)connections of the ingest connection.", &self.mqtt_connects),
            ("vigil_source_sequence_gaps_total", "Messages missing between consecutive publisher sequence numbers.", &self.seq_gaps),
            ("vigil_source_sequence_resets_total", "Publisher sequence numbers that went back (publisher restarts).", &self.seq_resets),
            ("vigil_sparkplug_sequence_gaps_total", "Sparkplug B messages missing between an edge node's sequence numbers.", &self.sparkplug_seq_gaps),
            ("vigil_sparkplug_rebirth_requests_total", "Sparkplug B rebirth requests (NCMD Node Control/Rebirth) sent.", &self.sparkplug_rebirth_requests),
        ];
        out.counters(&counters);
        out.family("vigil_scores_total", Kind::Counter, "Scored windows per band.");
        for (i, band) in ["normal", "review", "alert"].iter().enumerate() {
            out.sample("vigil_scores_total", &[("band", band)], self.scores_by_band[i].get() as f64);
        }
        out.family("vigil_alerts_total", Kind::Counter, "Alerts raised and cleared, and review-band events.");
        for (state, c) in [("raised", &self.alerts_raised), ("cleared", &self.alerts_cleared), ("review", &self.review_events)] {
            out.sample("vigil_alerts_total", &[("state", state)], c.get() as f64);
        }
        out.family("vigil_health_alerts_total", Kind::Counter, "Agent health alerts, per kind.");
        for k in HealthKind::ALL {
            out.sample("vigil_health_alerts_total", &[("kind", k.as_str())], self.health_alerts.get(k) as f64);
        }
        out.family("vigil_mqtt_connected", Kind::Gauge, "1 while the MQTT connection is up.");
        out.sample("vigil_mqtt_connected", &[("connection", "ingest")], self.mqtt_ingest_connected.get() as f64);
        out.sample("vigil_mqtt_connected", &[("connection", "publish")], self.mqtt_publish_connected.get() as f64);
        out.family("vigil_mqtt_outbound_backlog", Kind::Gauge, "MQTT acks and publishes waiting for room in the client.");
        out.sample("vigil_mqtt_outbound_backlog", &[], self.mqtt_outbound_backlog.get() as f64);
        out.family("vigil_serial_ports_open", Kind::Gauge, "Configured serial ports currently open.");
        out.sample("vigil_serial_ports_open", &[], self.serial_ports_open.get() as f64);
        out.family("vigil_serial_bad_frames_total", Kind::Counter, "Serial frames rejected (checksum, framing, oversized, malformed), all ports.");
        out.sample("vigil_serial_bad_frames_total", &[], self.serial_bad_frames.get() as f64);
        let nodes = self.serial_nodes.snapshot();
        if !nodes.is_empty() {
            type Field = fn(&SerialNodeCounts) -> u64;
            let families: [(&str, &str, Field); 5] = [
                ("vigil_serial_frames_total", "Frames accepted from a serial sensor node.", |c| c.frames),
                ("vigil_serial_readings_total", "Readings in the frames accepted from a serial sensor node.", |c| c.readings),
                ("vigil_serial_missing_frames_total", "Frames of a serial sensor node lost in sequence gaps.", |c| c.missing_frames),
                ("vigil_serial_duplicate_frames_total", "Duplicate frames of a serial sensor node, dropped.", |c| c.duplicate_frames),
                ("vigil_serial_node_restarts_total", "Restarts of a serial sensor node (new boot id or sequence 0).", |c| c.restarts),
            ];
            for (name, help, field) in families {
                out.family(name, Kind::Counter, help);
                for (port, node, c) in &nodes {
                    out.sample(name, &[("port", port), ("node", &node.to_string())], field(c) as f64);
                }
            }
        }
        let presence = self.sparkplug_presence.snapshot();
        if !presence.is_empty() {
            out.family("vigil_sparkplug_online", Kind::Gauge, "1 while a Sparkplug B edge node (device=\"\") or device is online.");
            for p in &presence {
                out.sample("vigil_sparkplug_online", &[("group", &p.group), ("node", &p.node), ("device", &p.device)], f64::from(u8::from(p.online)));
            }
        }
        if let Some(host_id) = self.sparkplug_host.host_id.get() {
            out.family("vigil_sparkplug_host_online", Kind::Gauge, "1 while the agent's Sparkplug host application STATE is online.");
            out.sample("vigil_sparkplug_host_online", &[("host_id", host_id)], self.sparkplug_host.online.get() as f64);
        }
        if self.broker_dropped_seen.get() > 0 {
            out.family("vigil_mqtt_broker_dropped_messages", Kind::Gauge, "Messages the broker reports it dropped ($SYS/broker/publish/messages/dropped), broker-wide.");
            out.sample("vigil_mqtt_broker_dropped_messages", &[], self.broker_dropped.get() as f64);
        }
        out.family("vigil_stage_seconds", Kind::Histogram, "Time spent in one stage: commit (write + fsync per group), inference per batch and per window.");
        out.histogram("vigil_stage_seconds", &[("stage", "commit")], &self.commit_time, SECONDS);
        out.histogram("vigil_stage_seconds", &[("stage", "inference_batch")], &self.inference_batch_time, SECONDS);
        out.histogram("vigil_stage_seconds", &[("stage", "inference_window")], &self.inference_window_time, SECONDS);
        out.family("vigil_latency_seconds", Kind::Histogram, "End-to-end latency: from the ingest of the reading that closed a window (ingest_*) or from the window end in event time (event_*) to inference, score and raised alert.");
        for (path, h) in [
            ("ingest_to_inference", &self.ingest_to_inference),
            ("ingest_to_score", &self.score_latency),
            ("ingest_to_alert", &self.alert_latency),
            ("event_to_score", &self.event_to_score),
            ("event_to_alert", &self.event_to_alert),
        ] {
            out.histogram("vigil_latency_seconds", &[("path", path)], h, SECONDS);
        }
        out.family("vigil_inference_batch_windows", Kind::Histogram, "Windows per interpreter invocation.");
        out.histogram("vigil_inference_batch_windows", &[], &self.inference_batch_size, 1.0);
        out.family("vigil_commit_group_readings", Kind::Histogram, "Readings per group commit.");
        out.histogram("vigil_commit_group_readings", &[], &self.commit_group_size, 1.0);
        self.modbus.collect(out);
    }
}

/// Scale of [`Histogram::record`] values (µs) to seconds.
pub const SECONDS: f64 = 1e-6;

/// Prometheus metric type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// A Prometheus text-format (0.0.4) page being written. Call [`Exposition::family`] once per
/// metric name, then its samples.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

impl Exposition {
    /// One unlabelled counter family per `(name, help, counter)`.
    pub fn counters(&mut self, counters: &[(&str, &str, &Counter)]) {
        for (name, help, c) in counters {
            self.family(name, Kind::Counter, help);
            self.sample(name, &[], c.get() as f64);
        }
    }

    /// Writes `# HELP` and `# TYPE` of a family.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        use std::fmt::Write;
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = write!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}\n");
    }

    /// One sample line.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        self.labels(labels, None);
        self.value(value);
    }

    /// The `_bucket`, `_sum` and `_count` lines of one histogram; bucket bounds and the sum
    /// are multiplied by `scale` (e.g. [`SECONDS`]).
    pub fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &Histogram, scale: f64) {
        let buckets = h.buckets();
        let mut cumulative = 0;
        // Bucket i holds values below 2^i; the last bucket also holds everything larger, so
        // it is only reported as +Inf.
        for (i, b) in buckets.iter().enumerate().take(buckets.len() - 1) {
            cumulative += b;
            let le = format_value((1u64 << i) as f64 * scale);
            self.out.push_str(name);
            self.out.push_str("_bucket");
            self.labels(labels, Some(&le));
            self.value(cumulative as f64);
        }
        let count: u64 = buckets.iter().sum();
        self.out.push_str(name);
        self.out.push_str("_bucket");
        self.labels(labels, Some("+Inf"));
        self.value(count as f64);
        self.out.push_str(name);
        self.out.push_str("_sum");
        self.labels(labels, None);
        self.value(h.sum() as f64 * scale);
        self.out.push_str(name);
        self.out.push_str("_count");
        self.labels(labels, None);
        self.value(count as f64);
    }

    fn labels(&mut self, labels: &[(&str, &str)], le: Option<&str>) {
        if labels.is_empty() && le.is_none() {
            return;
        }
        self.out.push('{');
        let mut first = true;
        for (k, v) in labels.iter().copied().chain(le.map(|le| ("le", le))) {
            if !first {
                self.out.push(',');
            }
            first = false;
            self.out.push_str(k);
            self.out.push_str("=\"");
            for c in v.chars() {
                match c {
                    '\\' => self.out.push_str("\\\\"),
                    '"' => self.out.push_str("\\\""),
                    '\n' => self.out.push_str("\\n"),
                    c => self.out.push(c),
                }
            }
            self.out.push('"');
        }
        self.out.push('}');
    }

    fn value(&mut self, v: f64) {
        self.out.push(' ');
        self.out.push_str(&format_value(v));
        self.out.push('\n');
    }

    pub fn into_string(self) -> String {
        self.out
    }
}

fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf".into() } else { "-Inf".into() }
    } else {
        format!("{v}")
    }
}

/// Something that contributes metric families to `/metrics`.
pub trait Collector: Send + Sync {
    fn collect(&self, out: &mut Exposition);
}

/// Every collector of this agent, in registration order (the order of the page).
#[derive(Default)]
pub struct Registry {
    collectors: Vec<std::sync::Arc<dyn Collector>>,
}

impl Registry {
    pub fn register(&mut self, c: std::sync::Arc<dyn Collector>) {
        self.collectors.push(c);
    }

    /// The whole page.
    pub fn render(&self) -> String {
        let mut out = Exposition::default();
        for c in &self.collectors {
            c.collect(&mut out);
        }
        out.into_string()
    }
}

/// Outbox depth and per-sink delivery, read from the outbox at scrape time:
///
/// - `vigil_outbox_records{class}`, `vigil_outbox_bytes{class}`: records (and accounted
///   bytes) stored, not yet delivered to every sink, per record class;
/// - `vigil_outbox_dropped_total{class}`: records dropped by the quota policy;
/// - `vigil_outbox_quota_bytes`, `vigil_outbox_used_bytes`;
/// - `vigil_sink_oldest_undelivered_age_seconds{sink}`: age of the oldest record a sink has
///   not confirmed (0 when caught up);
/// - `vigil_sink_delivered_records_total{sink}`: records confirmed (readings out) since start;
/// - `vigil_sink_errors_total{sink}`, `vigil_sink_consecutive_failures{sink}`.
pub struct OutboxCollector(pub std::sync::Arc<cloud_uplink::Outbox>);

impl Collector for OutboxCollector {
    fn collect(&self, out: &mut Exposition) {
        let stats = match self.0.stats() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read outbox statistics for /metrics");
                return;
            }
        };
        out.family("vigil_outbox_records", Kind::Gauge, "Records stored in the outbox, per class.");
        for c in &stats.classes {
            out.sample("vigil_outbox_records", &[("class", c.class.as_str())], c.records as f64);
        }
        out.family("vigil_outbox_bytes", Kind::Gauge, "Accounted bytes stored in the outbox, per class.");
        for c in &stats.classes {
            out.sample("vigil_outbox_bytes", &[("class", c.class.as_str())], c.bytes as f64);
        }
        out.family("vigil_outbox_dropped_total", Kind::Counter, "Records dropped by the outbox quota policy, per class.");
        for c in &stats.classes {
            out.sample("vigil_outbox_dropped_total", &[("class", c.class.as_str())], c.dropped as f64);
        }
        out.family("vigil_outbox_used_bytes", Kind::Gauge, "Accounted bytes in the outbox.");
        out.sample("vigil_outbox_used_bytes", &[], stats.used_bytes as f64);
        out.family("vigil_sink_oldest_undelivered_age_seconds", Kind::Gauge, "Age of the oldest record a sink has not confirmed (0 when caught up).");
        for s in &stats.sinks {
            out.sample("vigil_sink_oldest_undelivered_age_seconds", &[("sink", &s.name)], s.oldest_undelivered_age_ms.unwrap_or(0) as f64 / 1000.0);
        }
        out.family("vigil_sink_delivered_records_total", Kind::Counter, "Records a sink confirmed since the agent started.");
        for s in &stats.sinks {
            out.sample("vigil_sink_delivered_records_total", &[("sink", &s.name)], s.delivered_records as f64);
        }
        out.family("vigil_sink_errors_total", Kind::Counter, "Failed deliveries of a sink since the agent started.");
        for s in &stats.sinks {
            out.sample("vigil_sink_errors_total", &[("sink", &s.name)], s.failures as f64);
        }
        out.family("vigil_sink_consecutive_failures", Kind::Gauge, "Failed deliveries of a sink since its last success.");
        for s in &stats.sinks {
            out.sample("vigil_sink_consecutive_failures", &[("sink", &s.name)], s.consecutive_failures as f64);
        }
    }
}

/// The process itself: `process_resident_memory_bytes`, `process_cpu_seconds_total`,
/// `process_threads` (Linux `/proc/self`; nothing elsewhere).
pub struct ProcessCollector;

impl Collector for ProcessCollector {
    fn collect(&self, out: &mut Exposition) {
        #[cfg(target_os = "linux")]
        {
            // SAFETY: sysconf only reads system configuration values.
            let (page, ticks) = unsafe { (libc::sysconf(libc::_SC_PAGESIZE), libc::sysconf(libc::_SC_CLK_TCK)) };
            if let Some(rss_pages) = std::fs::read_to_string("/proc/self/statm").ok().and_then(|s| s.split_whitespace().nth(1)?.parse::<f64>().ok()) {
                out.family("process_resident_memory_bytes", Kind::Gauge, "Resident set size of the agent.");
                out.sample("process_resident_memory_bytes", &[], rss_pages * page.max(1) as f64);
            }
            if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
                // Fields after the command name (which may hold spaces) start after ") ".
                let rest: Vec<&str> = stat.rsplit_once(") ").map(|(_, r)| r.split_whitespace().collect()).unwrap_or_default();
                // rest[0] is field 3 (state): utime is field 14, stime 15, num_threads 20.
                let field = |n: usize| rest.get(n - 3).and_then(|v| v.parse::<f64>().ok());
                if let (Some(u), Some(s)) = (field(14), field(15)) {
                    out.family("process_cpu_seconds_total", Kind::Counter, "User and system CPU time of the agent.");
                    out.sample("process_cpu_seconds_total", &[], (u + s) / ticks.max(1) as f64);
                }
                if let Some(t) = field(20) {
                    out.family("process_threads", Kind::Gauge, "Threads of the agent.");
                    out.sample("process_threads", &[], t);
                }
            }
        }
        #[cfg(not(target_os = "linux"))]
        let _ = out;
    }
}

/// Modbus metrics (`ingest::modbus`); names are `vigil_modbus_<field>`.
#[derive(Debug, Default)]
pub struct ModbusMetrics {
    /// Read requests sent (every attempt, retries included).
    pub requests: Counter,
    /// Attempts that got no reply in time or lost the connection.
    pub timeouts: Counter,
    /// Modbus exception replies (each also a DLQ record, at most one per request per minute).
    pub exceptions: Counter,
    /// Replies that did not fit their request (malformed).
    pub malformed: Counter,
    /// Points read and turned into readings.
    pub points: Counter,
    /// Poll ticks skipped because the previous poll of the group was still running.
    pub missed_ticks: Counter,
    /// Write-back writes done, and those refused (rate limit, device error).
    pub writes: Counter,
    pub writes_refused: Counter,
    /// Devices per state.
    pub devices_up: Gauge,
    pub devices_degraded: Gauge,
    pub devices_down: Gauge,
    /// State per device name: `up`, `degraded` or `down` (`vigil_modbus_device_state`).
    pub device_state: std::sync::Mutex<std::collections::BTreeMap<String, &'static str>>,
}

impl Collector for ModbusMetrics {
    fn collect(&self, out: &mut Exposition) {
        let counters: [(&str, &str, &Counter); 8] = [
            ("vigil_modbus_requests_total", "Modbus requests sent (every attempt).", &self.requests),
            ("vigil_modbus_timeouts_total", "Modbus attempts without a reply (timeout or connection lost).", &self.timeouts),
            ("vigil_modbus_exceptions_total", "Modbus exception replies.", &self.exceptions),
            ("vigil_modbus_malformed_total", "Modbus replies that did not fit their request.", &self.malformed),
            ("vigil_modbus_points_total", "Modbus points read.", &self.points),
            ("vigil_modbus_missed_ticks_total", "Poll ticks skipped because a poll overran its interval.", &self.missed_ticks),
            ("vigil_modbus_writes_total", "Write-back writes done.", &self.writes),
            ("vigil_modbus_writes_refused_total", "Write-back writes refused (rate limit) or failed.", &self.writes_refused),
        ];
        out.counters(&counters);
        let states = self.device_state.lock().unwrap_or_else(|e| e.into_inner());
        if !states.is_empty() {
            out.family("vigil_modbus_device_state", Kind::Gauge, "1 for the state each Modbus device is in (up, degraded, down).");
            for (device, state) in states.iter() {
                for s in ["up", "degraded", "down"] {
                    out.sample("vigil_modbus_device_state", &[("device", device), ("state", s)], f64::from(u8::from(*state == s)));
                }
            }
        }
    }
}

impl ModbusMetrics {
    /// Records a device's state and recounts the per-state gauges.
    pub fn set_device_state(&self, device: &str, state: &'static str) {
        let mut map = self.device_state.lock().unwrap_or_else(|e| e.into_inner());
        map.insert(device.to_string(), state);
        let count = |s: &str| map.values().filter(|v| **v == s).count() as u64;
        self.devices_up.set(count("up"));
        self.devices_degraded.set(count("degraded"));
        self.devices_down.set(count("down"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_exposition_is_cumulative_and_scaled() {
        let h = Histogram::default();
        h.record(Duration::from_micros(3)); // bucket 2 (< 4 µs)
        h.record(Duration::from_micros(1000)); // bucket 10 (< 1024 µs)
        let mut out = Exposition::default();
        out.family("x_seconds", Kind::Histogram, "help");
        out.histogram("x_seconds", &[("a", "q\"")], &h, SECONDS);
        let text = out.into_string();
        assert!(text.contains("x_seconds_bucket{a=\"q\\\"\",le=\"0.000002\"} 0\n"), "{text}");
        assert!(text.contains("x_seconds_bucket{a=\"q\\\"\",le=\"0.000004\"} 1\n"), "{text}");
        assert!(text.contains("x_seconds_bucket{a=\"q\\\"\",le=\"0.001024\"} 2\n"), "{text}");
        assert!(text.contains("x_seconds_bucket{a=\"q\\\"\",le=\"+Inf\"} 2\n"), "{text}");
        assert!(text.contains("x_seconds_count{a=\"q\\\"\"} 2\n"), "{text}");
        assert!(text.contains("x_seconds_sum{a=\"q\\\"\"} 0.001003\n"), "{text}");
    }
}
