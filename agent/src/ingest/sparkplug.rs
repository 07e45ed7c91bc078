//! Sparkplug B ingest: edge-node and device messages on `spBv1.0/#` turned into readings.
//!
//! # Invariants
//!
//! - [`SparkplugState::decode`] never fails and never panics: every message yields readings,
//!   dead letters (with a reason), or nothing (commands, host `STATE`, lifecycle messages
//!   without measurements). It runs inside the MQTT source, so the readings take the same path
//!   as every other MQTT reading: the PUBLISH is acknowledged only after the commit log made
//!   them (and the dead letters) durable.
//! - State (aliases, sequence numbers, online flags) lives only in memory and is rebuilt from
//!   BIRTH messages: after an agent restart, the first DATA of an edge node the agent has no
//!   BIRTH for triggers a rebirth request, as the specification asks of a host application.
//!
//! # Protocol (Sparkplug 3.0)
//!
//! Topics are `spBv1.0/<group>/<type>/<node>[/<device>]`. `NBIRTH`/`DBIRTH` announce a node's /
//! device's metrics (name, alias, datatype) and put it online; `NDATA`/`DDATA` carry values,
//! usually by alias only; `NDEATH` (the node's MQTT will, matched by its `bdSeq` metric) and
//! `DDEATH` take it offline (a node's death takes its devices with it). `NCMD`, `DCMD` and the
//! host `STATE` topic carry no measurements and are ignored.
//!
//! Every payload but `NDEATH` carries `seq`, 0–255 per edge node, wrapping, `NBIRTH` = 0. A
//! number other than the previous + 1 means lost messages: the agent counts the gap
//! (`vigil_sparkplug_sequence_gaps_total`) and requests a rebirth — an `NCMD` to
//! `spBv1.0/<group>/NCMD/<node>` with the boolean metric `Node Control/Rebirth` = true — so
//! the node re-announces its aliases and state. So does DATA from a node that has no BIRTH
//! on record, and a DATA metric with an alias its BIRTH did not define. At most one request per
//! node is outstanding ([`REBIRTH_RETRY_MS`]).
//!
//! # Host application STATE (`mqtt.sparkplug_host_id`)
//!
//! With a host id the agent is a Sparkplug host application ([`HostApplication`]): edge nodes
//! that name it as their primary host publish only while its STATE is online. The STATE topic
//! is `spBv1.0/STATE/<host_id>`, the payload JSON `{"online":<bool>,"timestamp":<ms>}`
//! ([`HostState`]; not protobuf, so every Sparkplug payload type can read it), QoS 1, retained.
//! Invariants, as Sparkplug 3.0 states them:
//!
//! - Every connection attempt gets a new timestamp T, later than all earlier ones. The
//!   CONNECT's will is `online: false` with T; the birth published after the subscriptions
//!   are acknowledged is `online: true` with the same T; an orderly shutdown publishes
//!   `online: false` with T before disconnecting. Edge nodes compare timestamps, so a late
//!   will of an earlier connection (smaller T) cannot take the current one offline.
//! - A STATE `online: false` for the agent's own id with a timestamp not older than T
//!   contradicts the current connection: the birth is published again
//!   ([`HostApplication::contradicted`]). Older ones (the will of a previous connection, still
//!   retained or queued in the persistent session) are history and ignored.
//!
//! This module only encodes and decodes; the MQTT source (`ingest::mqtt`) sets the will,
//! publishes and orders the messages.
//!
//! # Readings and the entity id
//!
//! Each numeric metric becomes one reading: `Int8`–`UInt64`, `Float`, `Double` as their value,
//! `Boolean` as 1 / 0. Signed integers are two's complement in the unsigned protobuf fields
//! (as the specification defines). Other datatypes (strings, bytes, datasets, templates, arrays,
//! `DateTime`), null values, `bdSeq` and `Node Control/*` / `Device Control/*` metrics are not
//! measurements and are skipped. The event time is the metric's timestamp, else the payload's,
//! else the receive time; it must pass the same `validation` skew bounds as any reading.
//!
//! Entity id: `<group>/<node>/<metric>` for a node's metrics and
//! `<group>/<node>/<device>/<metric>` for a device's (metric names may contain `/`).
//!
//! # Why hand-written protobuf structs
//!
//! [`proto`] transcribes the fields the agent reads from the official `sparkplug_b.proto`
//! (Eclipse Tahu) as `prost` derives: no `protoc` and no build script. Fields not transcribed
//! (metadata, properties, datasets, templates, extensions) are skipped as unknown fields by the
//! protobuf decoder, as protobuf intends.

use std::collections::HashMap;

use prost::Message;

use super::decode::{check_entity, check_event_time, check_value, Decoded};
use crate::config::ValidationConfig;
use crate::dlq::{DlqEntry, DlqReason};
use crate::reading::{EpochMs, Quality, Reading, SourceKind};

/// The Sparkplug B topic namespace.
pub const NAMESPACE: &str = "spBv1.0";

/// The metric a rebirth request sets to `true`.
pub const REBIRTH_METRIC: &str = "Node Control/Rebirth";

/// A node asked to rebirth is asked again only after this long without its NBIRTH.
pub const REBIRTH_RETRY_MS: i64 = 10_000;

/// The messages of `sparkplug_b.proto` (package `org.eclipse.tahu.protobuf`), the fields the
/// agent reads, with the official field numbers.
pub mod proto {
    /// `Payload`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Payload {
        #[prost(uint64, optional, tag = "1")]
        pub timestamp: Option<u64>,
        #[prost(message, repeated, tag = "2")]
        pub metrics: Vec<Metric>,
        #[prost(uint64, optional, tag = "3")]
        pub seq: Option<u64>,
        #[prost(string, optional, tag = "4")]
        pub uuid: Option<String>,
        #[prost(bytes = "vec", optional, tag = "5")]
        pub body: Option<Vec<u8>>,
    }

    /// `Payload.Metric` (without `metadata` = 8, `properties` = 9 and the dataset / template /
    /// extension values 17–19).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Metric {
        #[prost(string, optional, tag = "1")]
        pub name: Option<String>,
        #[prost(uint64, optional, tag = "2")]
        pub alias: Option<u64>,
        #[prost(uint64, optional, tag = "3")]
        pub timestamp: Option<u64>,
        #[prost(uint32, optional, tag = "4")]
        pub datatype: Option<u32>,
        #[prost(bool, optional, tag = "5")]
        pub is_historical: Option<bool>,
        #[prost(bool, optional, tag = "6")]
        pub is_transient: Option<bool>,
        #[prost(bool, optional, tag = "7")]
        pub is_null: Option<bool>,
        #[prost(oneof = "Value", tags = "10, 11, 12, 13, 14, 15, 16")]
        pub value: Option<Value>,
    }

    /// `Payload.Metric.value` (the scalar members).
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Value {
        #[prost(uint32, tag = "10")]
        IntValue(u32),
        #[prost(uint64, tag = "11")]
        LongValue(u64),
        #[prost(float, tag = "12")]
        FloatValue(f32),
        #[prost(double, tag = "13")]
        DoubleValue(f64),
        #[prost(bool, tag = "14")]
        BooleanValue(bool),
        #[prost(string, tag = "15")]
        StringValue(String),
        #[prost(bytes = "vec", tag = "16")]
        BytesValue(Vec<u8>),
    }

    /// `DataType` values the agent turns into readings (the rest are not measurements).
    pub mod datatype {
        pub const UNKNOWN: u32 = 0;
        pub const INT8: u32 = 1;
        pub const INT16: u32 = 2;
        pub const INT32: u32 = 3;
        pub const INT64: u32 = 4;
        pub const UINT8: u32 = 5;
        pub const UINT16: u32 = 6;
        pub const UINT32: u32 = 7;
        pub const UINT64: u32 = 8;
        pub const FLOAT: u32 = 9;
        pub const DOUBLE: u32 = 10;
        pub const BOOLEAN: u32 = 11;
    }
}

use proto::datatype as dt;

/// The message types of the topic's third level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    NBirth,
    NData,
    NDeath,
    DBirth,
    DData,
    DDeath,
    /// NCMD, DCMD: commands to nodes (the agent's own rebirth requests among them).
    Command,
}

impl Kind {
    fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "NBIRTH" => Kind::NBirth,
            "NDATA" => Kind::NData,
            "NDEATH" => Kind::NDeath,
            "DBIRTH" => Kind::DBirth,
            "DDATA" => Kind::DData,
            "DDEATH" => Kind::DDeath,
            "NCMD" | "DCMD" => Kind::Command,
            _ => return None,
        })
    }
}

/// What a BIRTH said about one metric.
#[derive(Debug, Clone, Default)]
struct Born {
    /// alias → metric name.
    aliases: HashMap<u64, String>,
    /// metric name → datatype.
    types: HashMap<String, u32>,
}

impl Born {
    fn learn(&mut self, metrics: &[proto::Metric]) {
        self.aliases.clear();
        self.types.clear();
        for m in metrics {
            let Some(name) = &m.name else { continue };
            if let Some(alias) = m.alias {
                self.aliases.insert(alias, name.clone());
            }
            if let Some(t) = m.datatype {
                self.types.insert(name.clone(), t);
            }
        }
    }
}

#[derive(Debug, Default)]
struct Device {
    online: bool,
    born: Born,
}

/// One edge node as the agent knows it.
#[derive(Debug, Default)]
struct Node {
    online: bool,
    /// The last sequence number seen (None before the first BIRTH).
    seq: Option<u8>,
    /// `bdSeq` of the last NBIRTH: an NDEATH with another one is stale.
    bd_seq: Option<u64>,
    born: Born,
    devices: HashMap<String, Device>,
    /// When the agent last asked for a rebirth that has not come yet.
    rebirth_asked_ms: Option<EpochMs>,
}

/// An MQTT message the agent must publish (a rebirth request).
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    pub topic: String,
    pub payload: Vec<u8>,
}

/// One node's or device's online state, for `vigil_sparkplug_online`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Presence {
    pub group: String,
    pub node: String,
    /// Empty for the node itself.
    pub device: String,
    pub online: bool,
}

/// What one message changed besides readings.
#[derive(Debug, Default)]
pub struct Effects {
    /// Rebirth requests to publish.
    pub commands: Vec<Command>,
    /// Messages lost before this one (sequence gap), if any.
    pub gap: u64,
    /// Whether an online flag changed (re-export [`SparkplugState::presence`]).
    pub presence_changed: bool,
}

/// Aliases, sequence numbers and online state of every edge node seen, keyed by (group, node).
#[derive(Debug, Default)]
pub struct SparkplugState {
    nodes: HashMap<(String, String), Node>,
}

/// Parts of a Sparkplug topic.
struct Topic<'a> {
    group: &'a str,
    kind: Kind,
    node: &'a str,
    device: Option<&'a str>,
}

fn parse_topic(topic: &str) -> Result<Option<Topic<'_>>, String> {
    let levels: Vec<&str> = topic.split('/').collect();
    if levels.first() != Some(&NAMESPACE) {
        return Err(format!("not a Sparkplug B topic (first level is not {NAMESPACE})"));
    }
    // Host application state (`spBv1.0/STATE/<host>`): not a measurement.
    if levels.get(1) == Some(&"STATE") {
        return Ok(None);
    }
    let (group, kind, node, device) = match levels.as_slice() {
        [_, g, k, n] => (*g, *k, *n, None),
        [_, g, k, n, d] => (*g, *k, *n, Some(*d)),
        _ => return Err("a Sparkplug B topic is spBv1.0/<group>/<type>/<node>[/<device>]".into()),
    };
    let kind = Kind::parse(kind).ok_or_else(|| format!("unknown Sparkplug B message type \"{kind}\""))?;
    if kind == Kind::Command {
        return Ok(None);
    }
    let device_kind = matches!(kind, Kind::DBirth | Kind::DData | Kind::DDeath);
    if device_kind != device.is_some() {
        return Err(format!("{} messages {} a device level", levels[2], if device_kind { "need" } else { "have no" }));
    }
    if group.is_empty() || node.is_empty() || device == Some("") {
        return Err("empty group, node or device id".into());
    }
    Ok(Some(Topic { group, kind, node, device }))
}

/// A host application's STATE payload: `{"online":<bool>,"timestamp":<ms since the epoch>}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HostState {
    pub online: bool,
    pub timestamp: u64,
}

impl HostState {
    /// The UTF-8 JSON payload, keys in the specification's order.
    pub fn encode(&self) -> Vec<u8> {
        // Serializing two plain fields into a Vec cannot fail; the fallback is never used.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses a STATE payload; a reason when it is not one.
    pub fn decode(payload: &[u8]) -> Result<HostState, String> {
        serde_json::from_slice(payload).map_err(|e| format!("not a Sparkplug host STATE payload: {e}"))
    }
}

/// Checks a host application id (`mqtt.sparkplug_host_id`): non-empty, and a single topic
/// level usable in `spBv1.0/STATE/<id>` (none of `/`, `+`, `#`, NUL).
pub fn check_host_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("must not be empty".into());
    }
    if let Some(c) = id.chars().find(|c| matches!(c, '/' | '+' | '#' | '\0')) {
        return Err(format!("`{}` contains {c:?}: a Sparkplug host id is one topic level, without `/`, `+`, `#`", id.escape_debug()));
    }
    Ok(())
}

/// The agent as a Sparkplug host application: its STATE topic and the timestamp T of the
/// current connection attempt (see the module doc).
#[derive(Debug, Clone)]
pub struct HostApplication {
    host_id: String,
    topic: String,
    timestamp: u64,
}

impl HostApplication {
    /// A host application with a checked id ([`check_host_id`]).
    pub fn new(host_id: &str) -> HostApplication {
        HostApplication { host_id: host_id.to_string(), topic: format!("{NAMESPACE}/STATE/{host_id}"), timestamp: 0 }
    }

    pub fn host_id(&self) -> &str {
        &self.host_id
    }

    /// `spBv1.0/STATE/<host_id>`.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// T of the current connection attempt (0 before the first).
    pub fn timestamp(&self) -> u64 {
        self.timestamp
    }

    /// Starts a connection attempt at `now`: a new T, later than every earlier one (also when
    /// the clock steps back), and returns the will payload (`online: false`, T).
    pub fn connecting(&mut self, now: EpochMs) -> Vec<u8> {
        self.timestamp = u64::try_from(now).unwrap_or(0).max(self.timestamp + 1);
        self.death()
    }

    /// The birth (`online: true`) of the current connection.
    pub fn birth(&self) -> Vec<u8> {
        HostState { online: true, timestamp: self.timestamp }.encode()
    }

    /// The death (`online: false`) of the current connection: the will, and what an orderly
    /// shutdown publishes.
    pub fn death(&self) -> Vec<u8> {
        HostState { online: false, timestamp: self.timestamp }.encode()
    }

    /// Whether a message on `topic` says the current connection is offline, so the birth must
    /// be published again: the agent's own STATE topic, `online: false`, a timestamp not older
    /// than T. Anything else (other hosts, births, the will of an earlier connection, a payload
    /// that is not a STATE) is not.
    pub fn contradicted(&self, topic: &str, payload: &[u8]) -> bool {
        topic == self.topic && HostState::decode(payload).is_ok_and(|s| !s.online && s.timestamp >= self.timestamp)
    }
}

/// The `NCMD` payload that asks a node to rebirth.
pub fn rebirth_request(now: EpochMs) -> Vec<u8> {
    let ts = u64::try_from(now).unwrap_or(0);
    proto::Payload {
        timestamp: Some(ts),
        metrics: vec![proto::Metric {
            name: Some(REBIRTH_METRIC.into()),
            timestamp: Some(ts),
            datatype: Some(dt::BOOLEAN),
            value: Some(proto::Value::BooleanValue(true)),
            ..Default::default()
        }],
        ..Default::default()
    }
    .encode_to_vec()
}

impl SparkplugState {
    /// Decodes one message received on `topic` at `now`. Never fails: what cannot be used is
    /// in `rejects` with a reason.
    pub fn decode(&mut self, validation: &ValidationConfig, topic: &str, raw: &[u8], now: EpochMs) -> (Decoded, Effects) {
        let mut out = Decoded::default();
        let mut effects = Effects::default();
        let dead = |reason: DlqReason, detail: String| DlqEntry {
            source: SourceKind::Mqtt,
            topic: topic.to_string(),
            raw: raw.to_vec(),
            reason,
            detail,
            received_ms: now,
        };
        if raw.len() > validation.max_payload_bytes {
            let detail = format!("{} bytes > validation.max_payload_bytes = {}", raw.len(), validation.max_payload_bytes);
            out.rejects.push(dead(DlqReason::Oversized, detail));
            return (out, effects);
        }
        let t = match parse_topic(topic) {
            Ok(Some(t)) => t,
            Ok(None) => return (out, effects),
            Err(why) => {
                out.rejects.push(dead(DlqReason::InvalidField, why));
                return (out, effects);
            }
        };
        let payload = match proto::Payload::decode(raw) {
            Ok(p) => p,
            Err(e) => {
                out.rejects.push(dead(DlqReason::Undecodable, format!("not a Sparkplug B payload: {e}")));
                return (out, effects);
            }
        };
        let key = (t.group.to_string(), t.node.to_string());
        let node = self.nodes.entry(key).or_default();

        // Lifecycle and sequence numbers.
        let mut want_rebirth = false;
        match t.kind {
            Kind::NBirth => {
                node.online = true;
                node.seq = payload.seq.map(|s| s as u8);
                node.bd_seq = bd_seq(&payload);
                node.born.learn(&payload.metrics);
                // A node's rebirth resets its devices: they re-announce themselves.
                node.devices.clear();
                node.rebirth_asked_ms = None;
                effects.presence_changed = true;
            }
            Kind::NDeath => {
                let stale = matches!((bd_seq(&payload), node.bd_seq), (Some(a), Some(b)) if a != b);
                if !stale {
                    node.online = false;
                    for d in node.devices.values_mut() {
                        d.online = false;
                    }
                    effects.presence_changed = true;
                }
                return (out, effects);
            }
            _ => {
                if !node.online {
                    want_rebirth = true;
                }
                match (payload.seq, node.seq) {
                    (Some(seq), Some(last)) => {
                        let seq = (seq % 256) as u8;
                        let skipped = seq.wrapping_sub(last.wrapping_add(1)) as u64;
                        if skipped > 0 {
                            effects.gap = skipped;
                            want_rebirth = true;
                        }
                        node.seq = Some(seq);
                    }
                    (Some(seq), None) => node.seq = Some((seq % 256) as u8),
                    (None, _) => {}
                }
            }
        }
        match (t.kind, t.device) {
            (Kind::DBirth, Some(d)) => {
                let device = node.devices.entry(d.to_string()).or_default();
                device.online = true;
                device.born.learn(&payload.metrics);
                effects.presence_changed = true;
            }
            (Kind::DDeath, Some(d)) => {
                node.devices.entry(d.to_string()).or_default().online = false;
                effects.presence_changed = true;
            }
            (Kind::DData, Some(d)) if !node.devices.get(d).is_some_and(|d| d.online) => want_rebirth = true,
            _ => {}
        }

        // Metrics → readings.
        if matches!(t.kind, Kind::NBirth | Kind::NData | Kind::DBirth | Kind::DData) {
            let empty = Born::default();
            let born = match t.device {
                Some(d) => node.devices.get(d).map_or(&empty, |d| &d.born),
                None => &node.born,
            };
            let prefix = match t.device {
                Some(d) => format!("{}/{}/{}/", t.group, t.node, d),
                None => format!("{}/{}/", t.group, t.node),
            };
            let payload_time = payload.timestamp;
            for (i, m) in payload.metrics.iter().enumerate() {
                match metric_reading(validation, born, &prefix, m, payload_time, now) {
                    Ok(Some(r)) => out.readings.push(r),
                    Ok(None) => {}
                    Err((reason, why, unknown_alias)) => {
                        want_rebirth |= unknown_alias;
                        out.rejects.push(dead(reason, format!("metric {i}: {why}")));
                    }
                }
            }
        }

        if want_rebirth {
            let due = node.rebirth_asked_ms.is_none_or(|t| now.saturating_sub(t) >= REBIRTH_RETRY_MS);
            if due {
                node.rebirth_asked_ms = Some(now);
                effects.commands.push(Command {
                    topic: format!("{NAMESPACE}/{}/NCMD/{}", t.group, t.node),
                    payload: rebirth_request(now),
                });
            }
        }
        (out, effects)
    }

    /// Every node and device seen, with its online flag, sorted.
    pub fn presence(&self) -> Vec<Presence> {
        let mut out = Vec::new();
        for ((group, node), n) in &self.nodes {
            out.push(Presence { group: group.clone(), node: node.clone(), device: String::new(), online: n.online });
            for (device, d) in &n.devices {
                out.push(Presence { group: group.clone(), node: node.clone(), device: device.clone(), online: d.online });
            }
        }
        out.sort();
        out
    }
}

/// The `bdSeq` metric of an NBIRTH / NDEATH.
fn bd_seq(payload: &proto::Payload) -> Option<u64> {
    payload.metrics.iter().find(|m| m.name.as_deref() == Some("bdSeq")).and_then(|m| match m.value {
        Some(proto::Value::LongValue(v)) => Some(v),
        Some(proto::Value::IntValue(v)) => Some(u64::from(v)),
        _ => None,
    })
}

/// Why a metric is dead-lettered, and whether it calls for a rebirth (unknown alias).
type MetricRejection = (DlqReason, String, bool);

/// One metric as a reading; `Ok(None)` for metrics that are not measurements.
fn metric_reading(
    validation: &ValidationConfig,
    born: &Born,
    prefix: &str,
    m: &proto::Metric,
    payload_time: Option<u64>,
    now: EpochMs,
) -> Result<Option<Reading>, MetricRejection> {
    let name = match (&m.name, m.alias) {
        (Some(n), _) => n.as_str(),
        (None, Some(a)) => match born.aliases.get(&a) {
            Some(n) => n.as_str(),
            None => return Err((DlqReason::InvalidField, format!("alias {a} is not defined by the BIRTH on record"), true)),
        },
        (None, None) => return Err((DlqReason::MissingField, "neither name nor alias".into(), false)),
    };
    if name == "bdSeq" || name.starts_with("Node Control/") || name.starts_with("Device Control/") || m.is_null == Some(true) {
        return Ok(None);
    }
    let datatype = m.datatype.or_else(|| born.types.get(name).copied()).unwrap_or(dt::UNKNOWN);
    use proto::Value as V;
    let value = match (datatype, &m.value) {
        (dt::INT8, Some(V::IntValue(v))) => f64::from(*v as u8 as i8),
        (dt::INT16, Some(V::IntValue(v))) => f64::from(*v as u16 as i16),
        (dt::INT32, Some(V::IntValue(v))) => f64::from(*v as i32),
        (dt::INT64, Some(V::LongValue(v))) => *v as i64 as f64,
        (dt::UINT8 | dt::UINT16 | dt::UINT32, Some(V::IntValue(v))) => f64::from(*v),
        (dt::UINT8 | dt::UINT16 | dt::UINT32 | dt::UINT64, Some(V::LongValue(v))) => *v as f64,
        (dt::FLOAT, Some(V::FloatValue(v))) => f64::from(*v),
        (dt::DOUBLE, Some(V::DoubleValue(v))) => *v,
        (dt::BOOLEAN, Some(V::BooleanValue(b))) => f64::from(u8::from(*b)),
        // No datatype in the message nor in the BIRTH: go by the value field.
        (dt::UNKNOWN, Some(V::IntValue(v))) => f64::from(*v),
        (dt::UNKNOWN, Some(V::LongValue(v))) => *v as f64,
        (dt::UNKNOWN, Some(V::FloatValue(v))) => f64::from(*v),
        (dt::UNKNOWN, Some(V::DoubleValue(v))) => *v,
        (dt::UNKNOWN, Some(V::BooleanValue(b))) => f64::from(u8::from(*b)),
        (dt::UNKNOWN, Some(V::StringValue(_) | V::BytesValue(_))) => return Ok(None),
        (dt::INT8..=dt::BOOLEAN, v) => {
            let got = match v {
                None => "no value",
                Some(V::IntValue(_)) => "int_value",
                Some(V::LongValue(_)) => "long_value",
                Some(V::FloatValue(_)) => "float_value",
                Some(V::DoubleValue(_)) => "double_value",
                Some(V::BooleanValue(_)) => "boolean_value",
                Some(V::StringValue(_)) => "string_value",
                Some(V::BytesValue(_)) => "bytes_value",
            };
            return Err((DlqReason::InvalidField, format!("\"{name}\": datatype {datatype} with {got}"), false));
        }
        // Strings, bytes, datasets, templates, arrays, DateTime: not measurements.
        _ => return Ok(None),
    };
    check_value(validation, value).map_err(|r| (r.reason, format!("\"{name}\": {}", r.detail), false))?;
    let event_time_ms = match m.timestamp.or(payload_time) {
        Some(t) => i64::try_from(t).map_err(|_| (DlqReason::InvalidField, format!("\"{name}\": timestamp {t} out of range"), false))?,
        None => now,
    };
    check_event_time(validation, event_time_ms, now).map_err(|r| (r.reason, format!("\"{name}\": {}", r.detail), false))?;
    let entity = format!("{prefix}{name}");
    check_entity(validation, &entity).map_err(|r| (r.reason, r.detail, false))?;
    Ok(Some(Reading {
        entity,
        event_time_ms,
        value,
        quality: Quality::Good,
        source: SourceKind::Mqtt,
        ingest_time_ms: now,
        seq: 0,
        source_seq: None,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: EpochMs = 1_764_000_000_000;

    fn validation() -> ValidationConfig {
        ValidationConfig::default()
    }

    fn metric(name: Option<&str>, alias: Option<u64>, datatype: u32, value: proto::Value) -> proto::Metric {
        proto::Metric { name: name.map(Into::into), alias, datatype: Some(datatype), value: Some(value), ..Default::default() }
    }

    fn payload(seq: u64, metrics: Vec<proto::Metric>) -> Vec<u8> {
        proto::Payload { timestamp: Some(NOW as u64), seq: Some(seq), metrics, ..Default::default() }.encode_to_vec()
    }

    #[test]
    fn birth_aliases_datatypes_gap_and_death() {
        let v = validation();
        let mut s = SparkplugState::default();
        let birth = payload(0, vec![
            metric(Some("bdSeq"), None, dt::INT64, proto::Value::LongValue(3)),
            metric(Some("Temp"), Some(1), dt::INT16, proto::Value::IntValue((-5i16) as u16 as u32)),
            metric(Some("Label"), Some(2), 12, proto::Value::StringValue("x".into())),
        ]);
        let (d, e) = s.decode(&v, "spBv1.0/G/NBIRTH/N", &birth, NOW);
        assert!(d.rejects.is_empty(), "{:?}", d.rejects);
        assert_eq!(d.readings.iter().map(|r| (r.entity.as_str(), r.value)).collect::<Vec<_>>(), vec![("G/N/Temp", -5.0)]);
        assert!(e.commands.is_empty() && e.presence_changed);

        // DATA by alias only, datatype from the BIRTH.
        let data = payload(1, vec![proto::Metric { alias: Some(1), value: Some(proto::Value::IntValue(7)), ..Default::default() }]);
        let (d, e) = s.decode(&v, "spBv1.0/G/NDATA/N", &data, NOW);
        assert_eq!(d.readings[0].entity, "G/N/Temp");
        assert_eq!(d.readings[0].value, 7.0);
        assert_eq!(e.gap, 0);

        // seq 2, 3 lost: a gap and one rebirth request.
        let (_, e) = s.decode(&v, "spBv1.0/G/NDATA/N", &payload(4, vec![]), NOW);
        assert_eq!(e.gap, 2);
        assert_eq!(e.commands.len(), 1);
        assert_eq!(e.commands[0].topic, "spBv1.0/G/NCMD/N");
        let cmd = proto::Payload::decode(e.commands[0].payload.as_slice()).unwrap();
        assert_eq!(cmd.metrics[0].name.as_deref(), Some(REBIRTH_METRIC));
        assert_eq!(cmd.metrics[0].value, Some(proto::Value::BooleanValue(true)));
        // Another gap before the NBIRTH comes: no second request.
        let (_, e) = s.decode(&v, "spBv1.0/G/NDATA/N", &payload(9, vec![]), NOW + 1);
        assert!(e.commands.is_empty());

        // Stale NDEATH (another bdSeq) is ignored; the matching one takes the node offline.
        let death = |bd| proto::Payload { metrics: vec![metric(Some("bdSeq"), None, dt::INT64, proto::Value::LongValue(bd))], ..Default::default() }.encode_to_vec();
        s.decode(&v, "spBv1.0/G/NDEATH/N", &death(2), NOW);
        assert!(s.presence()[0].online);
        s.decode(&v, "spBv1.0/G/NDEATH/N", &death(3), NOW);
        assert!(!s.presence()[0].online);
    }

    #[test]
    fn host_state_payloads_and_timestamps() {
        let mut host = HostApplication::new("vigil-1");
        assert_eq!(host.topic(), "spBv1.0/STATE/vigil-1");
        let will = host.connecting(NOW);
        assert_eq!(String::from_utf8(will.clone()).unwrap(), format!("{{\"online\":false,\"timestamp\":{NOW}}}"));
        assert_eq!(String::from_utf8(host.birth()).unwrap(), format!("{{\"online\":true,\"timestamp\":{NOW}}}"));
        assert_eq!(host.death(), will, "the shutdown death repeats the will");
        assert_eq!(HostState::decode(&host.birth()), Ok(HostState { online: true, timestamp: NOW as u64 }));
        // Every attempt a later T, also when the clock steps back or stands still.
        host.connecting(NOW);
        assert_eq!(host.timestamp(), NOW as u64 + 1);
        host.connecting(NOW - 60_000);
        assert_eq!(host.timestamp(), NOW as u64 + 2);
        host.connecting(NOW + 5000);
        assert_eq!(host.timestamp(), NOW as u64 + 5000);

        // Only an offline STATE for this host, not older than T, contradicts the connection.
        let t = host.timestamp();
        let state = |online, timestamp| HostState { online, timestamp }.encode();
        assert!(host.contradicted("spBv1.0/STATE/vigil-1", &state(false, t)));
        assert!(host.contradicted("spBv1.0/STATE/vigil-1", &state(false, t + 1)));
        assert!(!host.contradicted("spBv1.0/STATE/vigil-1", &state(false, t - 1)), "an earlier connection's will");
        assert!(!host.contradicted("spBv1.0/STATE/vigil-1", &state(true, t)));
        assert!(!host.contradicted("spBv1.0/STATE/other", &state(false, t)));
        assert!(!host.contradicted("spBv1.0/STATE/vigil-1", b"OFFLINE"), "Sparkplug 2.2 plain-text STATE");
        assert!(HostState::decode(b"{\"online\":\"no\",\"timestamp\":1}").is_err());
        assert!(HostState::decode(b"").unwrap_err().contains("not a Sparkplug host STATE"));
    }

    #[test]
    fn host_ids_are_one_topic_level() {
        assert_eq!(check_host_id("SCADA Host-1.ü"), Ok(()));
        for bad in ["", "a/b", "a+", "#", "a\0b"] {
            assert!(check_host_id(bad).is_err(), "{bad:?}");
        }
        assert!(check_host_id("plant/1").unwrap_err().contains("'/'"));
    }

    #[test]
    fn bad_input_is_dead_lettered_never_panics() {
        let v = validation();
        let mut s = SparkplugState::default();
        let (d, _) = s.decode(&v, "spBv1.0/G/NDATA/N", b"\xff\xff\xff\xff", NOW);
        assert_eq!(d.rejects[0].reason, DlqReason::Undecodable);
        let (d, _) = s.decode(&v, "spBv1.0/G/DDATA/N", &payload(0, vec![]), NOW);
        assert_eq!(d.rejects[0].reason, DlqReason::InvalidField, "device message without a device level");
        // Unknown alias from a node without BIRTH: dead letter and a rebirth request.
        let data = payload(5, vec![proto::Metric { alias: Some(9), value: Some(proto::Value::DoubleValue(1.0)), ..Default::default() }]);
        let (d, e) = s.decode(&v, "spBv1.0/G/NDATA/M", &data, NOW);
        assert_eq!(d.rejects.len(), 1);
        assert_eq!(e.commands.len(), 1);
        let nan = payload(6, vec![metric(Some("x"), None, dt::DOUBLE, proto::Value::DoubleValue(f64::NAN))]);
        assert_eq!(s.decode(&v, "spBv1.0/G/NDATA/M", &nan, NOW).0.rejects[0].reason, DlqReason::NonFinite);
        let (d, e) = s.decode(&v, "spBv1.0/G/NCMD/M", b"\x00garbage", NOW);
        assert!(d.readings.is_empty() && d.rejects.is_empty() && e.commands.is_empty(), "commands are not ingested");
        for topic in ["spBv1.0", "spBv1.0/G", "spBv1.0/G/XDATA/N", "spBv1.0/G/NDATA/N/D/E", "spBv1.0//NDATA/N"] {
            let (d, _) = s.decode(&v, topic, &payload(0, vec![]), NOW);
            assert_eq!(d.rejects.len(), 1, "{topic}");
        }
    }
}
