//! Vigil's uplink contract and durable store-and-forward outbox.
//!
//! * [`record`] — the versioned record schema ([`Envelope`], [`Body`]) and its
//!   CBOR / JSON codecs; the wire schema for central teams is
//!   `schema/vigil-record.cddl`.
//! * [`stream`] — the framed file format and [`RecordReader`], the streaming
//!   decoder central Rust consumers use as a library.
//! * [`outbox`] — the durable outbox in the agent's redb database: atomic
//!   appends, per-sink drain loops with priority and retry, quota.
//! * [`sink`] — the [`Sink`] trait and exactly when a record counts as
//!   delivered.
//! * [`directory_sink`] — [`DirectorySink`], durable files in a directory.
//!
//! Central consumers that only read records can depend on this crate and use
//! [`record`] and [`stream`]; nothing there touches redb or tokio.

pub mod directory_sink;
pub mod outbox;
pub mod record;
pub mod sink;
pub mod stream;

pub use directory_sink::DirectorySink;
pub use outbox::{
    Appender, ClassStats, Outbox, OutboxConfig, OutboxError, OutboxStats, QuotaPolicy, SinkStats,
};
pub use record::{
    decode_cbor, decode_json, encode_cbor, encode_json, AlertState, Body, Bytes, DecodeError,
    EncodeError, Envelope, ModelRef, Quality, RecordClass, SCHEMA_VERSION,
};
pub use sink::{ClassSet, Sink, SinkError, StoredRecord};
pub use stream::{RecordReader, RecordWriter};
