//! The one internal reading type every source produces and every later stage consumes.
//!
//! A [`Reading`] is created by a source's decoder (MQTT payload, simulator, serial frames, later
//! Modbus) after validation. From then on it is immutable: the commit log gives it its
//! agent-wide [`Reading::seq`], the pipeline routes it by [`Reading::entity`], windows order it
//! by [`Reading::event_time_ms`].

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch (UTC).
pub type EpochMs = i64;

/// Wall-clock now in epoch milliseconds.
pub fn now_ms() -> EpochMs {
    // A clock before 1970 is a broken gateway clock; 0 keeps arithmetic defined.
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as EpochMs)
        .unwrap_or(0)
}

/// How much a value can be trusted, as reported by the source (or derived by the decoder).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Quality {
    /// Measured normally.
    #[default]
    Good,
    /// The source flags the value as doubtful (e.g. sensor out of calibration, stale).
    Uncertain,
    /// The source flags the value as wrong; it is kept and uplinked but not scored.
    Bad,
}

impl Quality {
    pub fn as_str(self) -> &'static str {
        match self {
            Quality::Good => "good",
            Quality::Uncertain => "uncertain",
            Quality::Bad => "bad",
        }
    }

    /// Parses the spellings sources use; unknown spellings are `None` (the decoder reports them).
    pub fn parse(s: &str) -> Option<Quality> {
        match s.to_ascii_lowercase().as_str() {
            "good" | "ok" | "g" | "192" => Some(Quality::Good),
            "uncertain" | "u" | "64" => Some(Quality::Uncertain),
            "bad" | "b" | "0" => Some(Quality::Bad),
            _ => None,
        }
    }
}

/// Which kind of input produced a reading. The string form is used in DLQ records, metrics
/// labels and uplinked records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    Mqtt,
    Simulator,
    Replay,
    /// A firmware-bridge sensor node on a serial port (`ingest::serial`).
    Serial,
    /// Modbus TCP / RTU polling (`ingest::modbus`).
    Modbus,
}

impl SourceKind {
    /// Every kind, in [`SourceKind::index`] order (metrics labels).
    pub const ALL: [SourceKind; 5] = [SourceKind::Mqtt, SourceKind::Simulator, SourceKind::Replay, SourceKind::Serial, SourceKind::Modbus];

    /// Position in [`SourceKind::ALL`].
    pub fn index(self) -> usize {
        match self {
            SourceKind::Mqtt => 0,
            SourceKind::Simulator => 1,
            SourceKind::Replay => 2,
            SourceKind::Serial => 3,
            SourceKind::Modbus => 4,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Mqtt => "mqtt",
            SourceKind::Simulator => "simulator",
            SourceKind::Replay => "replay",
            SourceKind::Serial => "serial",
            SourceKind::Modbus => "modbus",
        }
    }
}

/// One validated sensor value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    /// Stable id of the sensor (e.g. `line1.press3.temp`). Partitioning key.
    pub entity: String,
    /// When the value was measured (source clock), epoch ms.
    pub event_time_ms: EpochMs,
    /// The value; always finite (the decoder sends non-finite values to the DLQ).
    pub value: f64,
    pub quality: Quality,
    pub source: SourceKind,
    /// When the agent received it, epoch ms (gateway clock).
    pub ingest_time_ms: EpochMs,
    /// Agent-wide ingest sequence number, assigned by the commit log when the reading is made
    /// durable; 0 until then. Strictly increasing in commit order, never reused.
    pub seq: u64,
    /// The publisher's own sequence number, when the payload carries one.
    pub source_seq: Option<u64>,
}
