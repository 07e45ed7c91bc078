//! The dead-letter queue: inbound messages that could not become readings.
//!
//! Nothing a source hands the agent is thrown away. A message that fails decoding or
//! validation becomes a [`DlqEntry`] holding the raw bytes, where it came from, when, and a
//! [`DlqReason`] plus a human-readable detail. Entries are committed to the `dlq` redb table in
//! the same write transaction as the readings of the same batch (so the source's ack covers
//! them too), counted per reason, and uplinked as DLQ records.
//!
//! Replay decodes the stored raw bytes again with the current config (after a decoder or
//! `known_entities` fix, say) with one [`Redecoder`]; entries that now decode become readings
//! in the commit log and are removed from the DLQ in the same write transaction
//! ([`crate::commit_log::replay_dead_letters`]); the others stay with their new reason.
//! Two ways in, one mechanism:
//!
//! - `POST /api/dlq/replay` on a running agent: the API asks the commit log (the single writer)
//!   over a channel; the readings are committed and routed to the workers at once, so they
//!   are windowed, scored and uplinked live.
//! - `vigil dlq replay` on a stopped agent's state file: the readings wait in the journal for
//!   the next start.
//!
//! Dead letters of the pipeline (`late`) and of Modbus polls are kept for inspection: their raw
//! bytes are no message a decoder could read again.

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::ingest::mqtt::{decode_publish, Route};
use crate::reading::{EpochMs, Reading, SourceKind};

/// Why a message was dead-lettered. The snake_case name is the metrics label and the
/// uplinked `reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DlqReason {
    /// Not valid JSON / CBOR / a number.
    Undecodable,
    /// A required field (value, time) is absent.
    MissingField,
    /// A field has the wrong type or an unparseable value.
    InvalidField,
    /// The value is NaN or infinite.
    NonFinite,
    /// The value's magnitude exceeds `validation.max_abs_value`.
    OutOfRange,
    /// The event time is further from the gateway clock than the configured skew.
    TimestampSkew,
    /// The entity is not in `validation.known_entities`.
    UnknownEntity,
    /// The payload exceeds `validation.max_payload_bytes`.
    Oversized,
    /// The reading arrived after its entity's windows had been emitted (`late_policy = "dlq"`).
    Late,
    /// The topic matched no configured template (only possible with overlapping filters).
    NoRoute,
    /// A Modbus device answered a read with an exception (illegal address, device failure, ...).
    ModbusException,
    /// A reply that does not fit its request (wrong length, function code or unit id).
    MalformedReply,
}

impl DlqReason {
    pub const ALL: [DlqReason; 12] = [
        DlqReason::Undecodable,
        DlqReason::MissingField,
        DlqReason::InvalidField,
        DlqReason::NonFinite,
        DlqReason::OutOfRange,
        DlqReason::TimestampSkew,
        DlqReason::UnknownEntity,
        DlqReason::Oversized,
        DlqReason::Late,
        DlqReason::NoRoute,
        DlqReason::ModbusException,
        DlqReason::MalformedReply,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DlqReason::Undecodable => "undecodable",
            DlqReason::MissingField => "missing_field",
            DlqReason::InvalidField => "invalid_field",
            DlqReason::NonFinite => "non_finite",
            DlqReason::OutOfRange => "out_of_range",
            DlqReason::TimestampSkew => "timestamp_skew",
            DlqReason::UnknownEntity => "unknown_entity",
            DlqReason::Oversized => "oversized",
            DlqReason::Late => "late",
            DlqReason::NoRoute => "no_route",
            DlqReason::ModbusException => "modbus_exception",
            DlqReason::MalformedReply => "malformed_reply",
        }
    }

    pub fn index(self) -> usize {
        DlqReason::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }
}

impl std::fmt::Display for DlqReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One dead-lettered message (or one bad element of a multi-reading message).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DlqEntry {
    pub source: SourceKind,
    /// MQTT topic, or another source's address (e.g. the simulator's entity, or
    /// `modbus:<device>/<unit>:holding 32+4`).
    pub topic: String,
    /// The payload exactly as received.
    #[serde(with = "serde_bytes_compat")]
    pub raw: Vec<u8>,
    pub reason: DlqReason,
    /// What exactly was wrong, e.g. `element 3: field "value" is missing`.
    pub detail: String,
    pub received_ms: EpochMs,
}

/// CBOR byte strings for `Vec<u8>` without another dependency.
mod serde_bytes_compat {
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(bytes)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Vec<u8>, A::Error> {
                let mut out = Vec::new();
                while let Some(b) = a.next_element::<u8>()? {
                    out.push(b);
                }
                Ok(out)
            }
        }
        d.deserialize_byte_buf(V)
    }
}

/// Per-reason counters, shared by every stage that dead-letters (decoders, workers).
#[derive(Debug, Default)]
pub struct DlqCounters {
    counts: [std::sync::atomic::AtomicU64; DlqReason::ALL.len()],
}

impl DlqCounters {
    pub fn add(&self, reason: DlqReason) {
        self.counts[reason.index()].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn get(&self, reason: DlqReason) -> u64 {
        self.counts[reason.index()].load(std::sync::atomic::Ordering::Relaxed)
    }

    /// `(reason, count)` for every reason with a non-zero count.
    pub fn snapshot(&self) -> Vec<(DlqReason, u64)> {
        DlqReason::ALL.iter().map(|r| (*r, self.get(*r))).filter(|(_, c)| *c > 0).collect()
    }
}

/// Decodes dead letters again with the current config's MQTT routes, serial ports and
/// validation: the same decoders the live sources use.
pub struct Redecoder {
    routes: Vec<Route>,
    serial: Vec<crate::config::SerialPortConfig>,
    validation: crate::config::ValidationConfig,
}

/// What decoding a dead letter again gave.
#[derive(Debug)]
pub enum Redecoded {
    /// It decodes now: these readings replace it.
    Readings(Vec<Reading>),
    /// Still rejected, with the new reason.
    Rejected { reason: DlqReason, detail: String },
    /// Not a message a decoder can read again (pipeline or Modbus dead letters, a serial port
    /// no longer configured): kept as it is.
    NotReplayable,
}

impl Redecoder {
    pub fn new(config: &Config) -> Result<Redecoder, crate::ingest::topic::TemplateError> {
        let routes = config.ingest.mqtt.iter().map(|s| Route::new(s, &config.validation)).collect::<Result<_, _>>()?;
        Ok(Redecoder { routes, serial: config.ingest.serial.clone(), validation: config.validation.clone() })
    }

    /// Decodes `entry` again as if it arrived at `now`.
    pub fn redecode(&self, entry: &DlqEntry, now: EpochMs) -> Redecoded {
        let batch = match entry.source {
            SourceKind::Mqtt if entry.reason != DlqReason::Late => decode_publish(&self.routes, &mut Default::default(), &entry.topic, &entry.raw, now).0,
            SourceKind::Serial => match crate::ingest::serial::replay(&self.serial, &self.validation, entry) {
                Some(batch) => batch,
                None => return Redecoded::NotReplayable,
            },
            _ => return Redecoded::NotReplayable,
        };
        match batch.rejects.into_iter().next() {
            Some(r) => Redecoded::Rejected { reason: r.reason, detail: r.detail },
            None if batch.readings.is_empty() => Redecoded::NotReplayable,
            None => Redecoded::Readings(batch.readings),
        }
    }
}
