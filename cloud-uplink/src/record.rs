//! The versioned record schema Vigil uplinks, and its single-record codecs.
//!
//! Every uplinked record is an [`Envelope`]: who emitted it (`agent_id`), its
//! per-agent sequence number (`seq`), two timestamps, and a [`Body`] whose
//! `kind` field says what it is. The wire schema is written down for central
//! teams in `cloud-uplink/schema/vigil-record.cddl`; this module is the
//! reference implementation of it.
//!
//! # Encodings
//!
//! * **CBOR** (RFC 8949) via `ciborium` is the default and the only encoding
//!   stored in the outbox and written to files ([`encode_cbor`],
//!   [`decode_cbor`]). Maps use text keys equal to the Rust field names.
//! * **JSON** ([`encode_json`], [`decode_json`]) for humans, debugging and
//!   consumers that prefer it. The only difference from CBOR is that byte
//!   strings (`Dlq.raw`) are standard base64 text (RFC 4648, padded).
//!   Non-finite floats cannot be represented in JSON; they are CBOR-only.
//! * Files use the framed stream format in [`crate::stream`].
//!
//! # Compatibility rules (schema evolution)
//!
//! `schema` is [`SCHEMA_VERSION`]. Within one schema version, changes are
//! *additive only*, so that old decoders read new records and new decoders
//! read old records:
//!
//! 1. A new field is added as optional: `#[serde(default)]` on the Rust side,
//!    `? name => type` in the CDDL. Decoders never require it.
//! 2. Decoders ignore map keys they do not know (no `deny_unknown_fields`
//!    anywhere). Consumers in other languages must do the same.
//! 3. A new record kind is a new `Body` variant with a new `kind` string.
//!    Decoders built from this crate that predate it decode it as
//!    [`Body::Unknown`] (its fields are skipped), so a stream with new kinds
//!    still decodes; consumers skip what they do not understand.
//! 4. Existing fields never change type or meaning and are never removed or
//!    renamed; existing `kind` strings and enum strings (`raised`, `good`, …)
//!    never change. Enum-like string fields may gain new values: decoders map
//!    unknown values to an `Unknown` variant instead of failing.
//! 5. Anything that breaks rules 1–4 bumps `schema`; a decoder that sees a
//!    `schema` greater than it supports may still try (rules above), but
//!    central consumers should route such records to review.
//!
//! `(agent_id, seq)` identifies a record uniquely and is the deduplication
//! key: delivery is at-least-once (see [`crate::sink::Sink`]).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The schema version this crate writes into [`Envelope::schema`].
pub const SCHEMA_VERSION: u16 = 1;

/// One uplinked record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Schema version, [`SCHEMA_VERSION`] when written by this crate.
    pub schema: u16,
    /// Identity of the emitting agent (stable across restarts).
    pub agent_id: String,
    /// Per-agent sequence number: strictly increasing in commit order, never
    /// reused, shared by all record kinds (so per-kind streams have gaps).
    pub seq: u64,
    /// When the thing described happened (sensor time), ms since the Unix
    /// epoch.
    pub event_time_ms: i64,
    /// When the agent committed the record to its outbox, ms since the Unix
    /// epoch (agent wall clock).
    pub emitted_ms: i64,
    /// What the record is.
    pub body: Body,
}

impl Envelope {
    /// The drain class of this record, `None` for [`Body::Unknown`].
    pub fn class(&self) -> Option<RecordClass> {
        self.body.class()
    }

    /// The key that keeps one entity's records together and in order (Kafka message key,
    /// partitioning): the entity for readings, scores, alerts, aggregates and sessions; the ingest source for DLQ
    /// records (they may not name a valid entity); the agent id for heartbeats and unknown kinds.
    pub fn partition_key(&self) -> &str {
        match &self.body {
            Body::Reading { entity, .. }
            | Body::Score { entity, .. }
            | Body::ShadowScore { entity, .. }
            | Body::Alert { entity, .. }
            | Body::Aggregate { entity, .. }
            | Body::Session { entity, .. }
            | Body::ReviewLabel { entity, .. } => entity,
            Body::Dlq { source, .. } => source,
            Body::Heartbeat { .. } | Body::ModelEvent { .. } | Body::Unknown => &self.agent_id,
        }
    }
}

/// The payload of a record; the `kind` field on the wire selects the variant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Body {
    /// A raw sensor reading as ingested.
    Reading {
        /// Logical entity (sensor / signal) id.
        entity: String,
        /// The reading's value.
        value: f64,
        /// Data quality as reported by (or derived from) the source.
        quality: Quality,
        /// Ingest source, e.g. `mqtt:plant/line1/temp`, `modbus:plc1:40001`.
        source: String,
        /// When the agent received it, ms since the Unix epoch.
        ingest_time_ms: i64,
        /// The source's own sequence number, when it has one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        source_seq: Option<u64>,
    },
    /// A model's anomaly score for one event-time window.
    Score {
        /// Entity scored.
        entity: String,
        /// End of the scored event-time window, ms since the Unix epoch.
        window_end_ms: i64,
        /// Anomaly score (model-specific scale; higher is more anomalous).
        score: f64,
        /// Model reconstruction / prediction error behind the score, when the
        /// model has one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<f64>,
        /// Band the score falls in (model-defined name, e.g. `normal`,
        /// `warn`, `critical`).
        band: String,
        /// Model that produced the score.
        model: ModelRef,
    },
    /// An alert state change.
    Alert {
        /// Entity the alert is about.
        entity: String,
        /// Raised, cleared, or a review-band event.
        state: AlertState,
        /// Band that triggered (or last held) the alert.
        band: String,
        /// Score at the state change.
        score: f64,
        /// Model whose score triggered the change.
        model: ModelRef,
        /// Human-readable message.
        message: String,
    },
    /// An input the agent could not process (dead letter).
    Dlq {
        /// Agent-unique id of the dead letter.
        id: String,
        /// Ingest source it came from.
        source: String,
        /// Source topic / register / port, when the source has one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        topic: Option<String>,
        /// Why it was rejected.
        reason: String,
        /// The raw input bytes (CBOR byte string; base64 text in JSON).
        raw: Bytes,
        /// When the agent received it, ms since the Unix epoch.
        received_ms: i64,
    },
    /// Periodic liveness and counters.
    Heartbeat {
        /// Agent uptime in seconds.
        uptime_s: u64,
        /// Monotonic counters (name → value), e.g. outbox drops.
        #[serde(default)]
        counters: BTreeMap<String, u64>,
    },
    /// Statistics of one entity's readings in one event-time tumbling window
    /// `[window_start_ms, window_start_ms + size_ms)`.
    ///
    /// First emitted when the entity's event time passes the window end;
    /// every reading that arrives later but within the allowed lateness emits
    /// the window again with `version` + 1 (a corrected aggregate). Consumers
    /// keep, per `(entity, size_ms, window_start_ms)`, the highest `version`.
    Aggregate {
        /// Entity aggregated.
        entity: String,
        /// Window start, ms since the Unix epoch (a multiple of `size_ms`).
        window_start_ms: i64,
        /// Window length in ms.
        size_ms: i64,
        /// 1 for the first emission, +1 for every correction.
        version: u32,
        /// The statistics.
        stats: Stats,
    },
    /// One activity session of an entity (e.g. a machine run): it opened
    /// with the first reading meeting the configured condition and closed
    /// when no reading met it for the configured gap.
    Session {
        /// Entity whose readings opened and closed the session.
        entity: String,
        /// Event time of the first reading meeting the condition.
        start_ms: i64,
        /// Event time of the last reading meeting the condition.
        end_ms: i64,
        /// `end_ms - start_ms`.
        duration_ms: i64,
        /// Statistics of the readings from `start_ms` to `end_ms` (inclusive).
        stats: Stats,
        /// Highest anomaly score of the scored windows overlapping the session
        /// (absent when none was scored, e.g. during model warm-up).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_score: Option<f64>,
        /// Alert state changes (raised, cleared, review) of windows
        /// overlapping the session.
        #[serde(default)]
        alerts: Vec<SessionAlert>,
    },
    /// A score of a model that did not decide for this window: the candidate in `shadow`
    /// deployment, or the active model on a `canary` entity (the candidate decided). Never
    /// alerts; central teams compare it with the `score` of the same window. Drains with the
    /// score class (same Kafka topic, same S3 `kind=score` partition).
    ShadowScore {
        /// Entity scored.
        entity: String,
        /// End of the scored event-time window, ms since the Unix epoch.
        window_end_ms: i64,
        /// The model's score for the window (same scale as `score`).
        score: f64,
        /// Model reconstruction / prediction error behind the score.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<f64>,
        /// Band the score would have fallen in.
        band: String,
        /// Model that produced the score.
        model: ModelRef,
        /// Deployment mode of the candidate at the time (`shadow`, `canary`).
        mode: String,
    },
    /// A model lifecycle event: a version deployed, promoted, demoted (rolled back) or refused.
    /// Drains with the alert class.
    ModelEvent {
        /// `deployed`, `promoted`, `demoted`, `refused` (may gain values).
        event: String,
        /// The model version concerned (for `refused`, what its manifest claims, if readable).
        model: ModelRef,
        /// Deployment mode (`active`, `shadow`, `canary`) the event concerns.
        mode: String,
        /// Human-readable reason (the verification error, the rollback rule that fired).
        message: String,
    },
    /// A reviewer's label of a review-band window (the agent's human review queue), for
    /// central teams to retrain on. Drains with the alert class (Kafka alert topic, key entity;
    /// S3 `kind=alert`).
    ReviewLabel {
        /// Entity the window belongs to.
        entity: String,
        /// End of the labelled event-time window, ms since the Unix epoch.
        window_end_ms: i64,
        /// The score that put the window in the review band.
        score: f64,
        /// Model that produced the score.
        model: ModelRef,
        /// `normal` or `anomaly` (may gain values).
        label: String,
        /// Who labelled it (the API caller's name, `api` when none was given).
        by: String,
        /// When it was labelled, ms since the Unix epoch (agent wall clock).
        labelled_ms: i64,
    },
    /// A record kind this decoder does not know (written by a newer agent).
    /// Never written by this crate: [`crate::outbox::Outbox::append`] rejects it.
    #[serde(other)]
    Unknown,
}

impl Body {
    /// The drain class of this body, `None` for [`Body::Unknown`].
    pub fn class(&self) -> Option<RecordClass> {
        match self {
            Body::Reading { .. } => Some(RecordClass::Reading),
            Body::Score { .. } | Body::ShadowScore { .. } => Some(RecordClass::Score),
            Body::Alert { .. } | Body::ModelEvent { .. } | Body::ReviewLabel { .. } => Some(RecordClass::Alert),
            Body::Dlq { .. } => Some(RecordClass::Dlq),
            Body::Heartbeat { .. } => Some(RecordClass::Heartbeat),
            Body::Aggregate { .. } => Some(RecordClass::Aggregate),
            Body::Session { .. } => Some(RecordClass::Session),
            Body::Unknown => None,
        }
    }
}

/// Statistics of a set of readings (an aggregate window or a session).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// Number of readings.
    pub count: u64,
    /// Arithmetic mean.
    pub mean: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// Population standard deviation.
    pub std: f64,
    /// Value of the reading with the earliest event time.
    pub first: f64,
    /// Value of the reading with the latest event time.
    pub last: f64,
    /// Estimated quantiles, ascending in `q`, from a mergeable sketch with a
    /// relative error bound (see the agent's `pipeline.aggregate.sketch_accuracy`).
    #[serde(default)]
    pub quantiles: Vec<Quantile>,
}

/// One estimated quantile.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Quantile {
    /// Rank in [0, 1], e.g. 0.5 for the median.
    pub q: f64,
    /// Estimated value at that rank.
    pub value: f64,
}

/// An alert state change inside a session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionAlert {
    /// End of the window whose score changed the state.
    pub window_end_ms: i64,
    /// Raised, cleared or review.
    pub state: AlertState,
    /// Score of that window.
    pub score: f64,
}

/// Identifies the exact model artifact that produced a score or alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelRef {
    /// Model name from its manifest.
    pub name: String,
    /// Model version from its manifest.
    pub version: String,
    /// Lower-case hex SHA-256 of the model file.
    pub sha256: String,
}

/// Alert state transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    /// The alert started.
    Raised,
    /// The alert ended.
    Cleared,
    /// A review-band window (no alert raised): worth a look by a person.
    Review,
    /// A state written by a newer agent.
    #[serde(other)]
    Unknown,
}

/// Data quality of a reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Quality {
    /// Value is trustworthy.
    Good,
    /// Value may be inaccurate (e.g. sensor flagged, out of calibration).
    Uncertain,
    /// Value is known bad (kept for forensics).
    Bad,
    /// A quality written by a newer agent.
    #[serde(other)]
    Unknown,
}

/// Drain class of a record: which outbox table it lives in and how urgently
/// sinks drain it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordClass {
    /// Alert state changes.
    Alert,
    /// Model scores.
    Score,
    /// Dead letters.
    Dlq,
    /// Raw readings.
    Reading,
    /// Heartbeats.
    Heartbeat,
    /// Tumbling-window aggregates.
    Aggregate,
    /// Activity sessions.
    Session,
}

impl RecordClass {
    /// All classes, in drain-priority order (stable; also the on-disk id
    /// order).
    pub const ALL: [RecordClass; 7] = [
        RecordClass::Alert,
        RecordClass::Score,
        RecordClass::Dlq,
        RecordClass::Reading,
        RecordClass::Heartbeat,
        RecordClass::Aggregate,
        RecordClass::Session,
    ];

    /// Drain priority: lower drains first. Alerts (0) before scores, DLQ,
    /// aggregates and sessions (1, equal: the one with the older pending
    /// record goes first; aggregates stand in for readings on metered links) before
    /// readings (2) before heartbeats (3; a stale heartbeat is the least
    /// valuable thing after an outage).
    pub fn priority(self) -> u8 {
        match self {
            RecordClass::Alert => 0,
            RecordClass::Score | RecordClass::Dlq | RecordClass::Aggregate | RecordClass::Session => 1,
            RecordClass::Reading => 2,
            RecordClass::Heartbeat => 3,
        }
    }

    /// Stable numeric id, used in on-disk keys. Never renumbered.
    pub fn id(self) -> u8 {
        match self {
            RecordClass::Alert => 0,
            RecordClass::Score => 1,
            RecordClass::Dlq => 2,
            RecordClass::Reading => 3,
            RecordClass::Heartbeat => 4,
            RecordClass::Aggregate => 5,
            RecordClass::Session => 6,
        }
    }

    /// Inverse of [`RecordClass::id`].
    pub fn from_id(id: u8) -> Option<RecordClass> {
        RecordClass::ALL.into_iter().find(|c| c.id() == id)
    }

    /// Lower-case name, as used in file names and the `kind` field.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordClass::Alert => "alert",
            RecordClass::Score => "score",
            RecordClass::Dlq => "dlq",
            RecordClass::Reading => "reading",
            RecordClass::Heartbeat => "heartbeat",
            RecordClass::Aggregate => "aggregate",
            RecordClass::Session => "session",
        }
    }
}

impl fmt::Display for RecordClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A byte string: CBOR major type 2 in CBOR, padded base64 text in JSON.
///
/// Decoding accepts a byte string, base64 text, or an array of integers
/// 0..=255 in any format (serde's internally tagged enums hide the format's
/// human-readability from nested values, so the decoder must be lenient).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Bytes(pub Vec<u8>);

impl fmt::Debug for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Bytes(len={})", self.0.len())
    }
}

impl From<Vec<u8>> for Bytes {
    fn from(v: Vec<u8>) -> Self {
        Bytes(v)
    }
}

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&base64::encode(&self.0))
        } else {
            s.serialize_bytes(&self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Bytes;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a byte string, base64 text, or an array of bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Bytes, E> {
                Ok(Bytes(v.to_vec()))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Bytes, E> {
                Ok(Bytes(v))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Bytes, E> {
                base64::decode(v).map(Bytes).map_err(E::custom)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Bytes, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 16));
                while let Some(b) = seq.next_element::<u8>()? {
                    out.push(b);
                }
                Ok(Bytes(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// Errors encoding a record.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// CBOR serialisation failed (only possible for a writer I/O error).
    #[error("encoding record as CBOR: {0}")]
    Cbor(String),
    /// JSON serialisation failed (e.g. a non-finite float).
    #[error("encoding record as JSON")]
    Json(#[source] serde_json::Error),
}

/// Errors decoding a record or a framed stream.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The bytes are not a valid CBOR record of this schema.
    #[error("decoding CBOR record: {0}")]
    Cbor(String),
    /// The text is not a valid JSON record of this schema.
    #[error("decoding JSON record")]
    Json(#[source] serde_json::Error),
    /// An S3 data-lake object (zstd JSON lines) is not valid.
    #[error("decoding data-lake object: {0}")]
    Object(String),
    /// Bytes remained after one complete record.
    #[error("{0} trailing bytes after a complete CBOR record")]
    TrailingBytes(usize),
    /// The stream does not start with the framed-format magic.
    #[error("not a Vigil record stream (bad magic {found:02x?})")]
    BadMagic {
        /// The first bytes found.
        found: [u8; 4],
    },
    /// The stream's format version is newer than this reader.
    #[error("unsupported record stream format version {0}")]
    UnsupportedVersion(u8),
    /// The stream ended inside a frame: the last record is incomplete.
    #[error("record #{index} at byte offset {offset} is truncated: {detail}")]
    Truncated {
        /// 0-based index of the incomplete record in the stream.
        index: u64,
        /// Byte offset of the frame start.
        offset: u64,
        /// What was missing.
        detail: String,
    },
    /// A frame's CRC does not match its payload (corruption).
    #[error("record #{index} at byte offset {offset}: CRC mismatch (stored {stored:08x}, computed {computed:08x})")]
    Checksum {
        /// 0-based index of the record.
        index: u64,
        /// Byte offset of the frame start.
        offset: u64,
        /// CRC stored in the frame.
        stored: u32,
        /// CRC of the payload read.
        computed: u32,
    },
    /// A frame declares a length larger than the reader accepts.
    #[error("record #{index} at byte offset {offset}: frame length {len} exceeds limit {limit}")]
    FrameTooLarge {
        /// 0-based index of the record.
        index: u64,
        /// Byte offset of the frame start.
        offset: u64,
        /// Declared payload length.
        len: u32,
        /// Reader limit.
        limit: u32,
    },
    /// A frame is intact but its payload is not a valid record.
    #[error("record #{index} at byte offset {offset} is not a valid record")]
    Record {
        /// 0-based index of the record.
        index: u64,
        /// Byte offset of the frame start.
        offset: u64,
        /// The payload decode error.
        #[source]
        source: Box<DecodeError>,
    },
    /// The underlying reader failed.
    #[error("reading record stream at byte offset {offset}")]
    Io {
        /// Byte offset where the read failed.
        offset: u64,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// Encodes one record as CBOR.
pub fn encode_cbor(env: &Envelope) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::with_capacity(128);
    ciborium::into_writer(env, &mut out).map_err(|e| EncodeError::Cbor(e.to_string()))?;
    Ok(out)
}

/// Decodes exactly one CBOR record; trailing bytes are an error.
pub fn decode_cbor(bytes: &[u8]) -> Result<Envelope, DecodeError> {
    let mut rest = bytes;
    let env: Envelope =
        ciborium::from_reader(&mut rest).map_err(|e| DecodeError::Cbor(format!("{e:?}")))?;
    if !rest.is_empty() {
        return Err(DecodeError::TrailingBytes(rest.len()));
    }
    Ok(env)
}

/// Encodes one record as JSON (compact, one line).
pub fn encode_json(env: &Envelope) -> Result<String, EncodeError> {
    serde_json::to_string(env).map_err(EncodeError::Json)
}

/// Decodes one JSON record.
pub fn decode_json(text: &str) -> Result<Envelope, DecodeError> {
    serde_json::from_str(text).map_err(DecodeError::Json)
}

/// Minimal standard base64 (RFC 4648 §4, padded) for [`Bytes`] in JSON.
mod base64 {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    pub fn encode(input: &[u8]) -> String {
        let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
        for chunk in input.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    fn value(c: u8) -> Option<u32> {
        ALPHABET.iter().position(|&a| a == c).map(|p| p as u32)
    }

    pub fn decode(input: &str) -> Result<Vec<u8>, String> {
        let bytes = input.as_bytes();
        if !bytes.len().is_multiple_of(4) {
            return Err(format!(
                "base64 length {} is not a multiple of 4",
                bytes.len()
            ));
        }
        let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
        let quads = bytes.len() / 4;
        for (qi, quad) in bytes.chunks(4).enumerate() {
            let pad = quad.iter().rev().take_while(|&&c| c == b'=').count();
            if pad > 2 || (pad > 0 && qi + 1 != quads) {
                return Err("misplaced base64 padding".to_string());
            }
            let mut n = 0u32;
            for &c in &quad[..4 - pad] {
                let v = value(c)
                    .ok_or_else(|| format!("invalid base64 character {:?}", char::from(c)))?;
                n = (n << 6) | v;
            }
            n <<= 6 * pad as u32;
            let decoded = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
            out.extend_from_slice(&decoded[..3 - pad]);
        }
        Ok(out)
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn round_trips_all_lengths() {
            for len in 0..10u8 {
                let data: Vec<u8> = (0..len)
                    .map(|i| i.wrapping_mul(37).wrapping_add(200))
                    .collect();
                let enc = super::encode(&data);
                assert_eq!(super::decode(&enc).unwrap(), data, "len {len} enc {enc}");
            }
            assert_eq!(super::encode(b"foobar"), "Zm9vYmFy");
            assert_eq!(super::encode(b"fo"), "Zm8=");
            assert!(super::decode("Zm9=v").is_err());
        }
    }
}
