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
//! * `kafka_sink` (feature `kafka`) — `KafkaSink`, one topic per record kind, keyed by entity;
//!   values as CBOR, JSON or Avro ([`avro`]: the Confluent wire format, schema ids from
//!   configuration or from a registry via `schema_registry`).
//! * `s3_sink` (feature `s3`) — `S3Sink`, partitioned zstd JSON-lines objects for a data lake;
//!   `s3_sink::decode_object` reads them back.
//!
//! Central consumers that only read records can depend on this crate and use
//! [`record`] and [`stream`]; nothing there touches redb or tokio.

pub mod avro;
pub mod directory_sink;
#[cfg(feature = "kafka")]
pub mod kafka_sink;
#[cfg(feature = "s3")]
pub mod s3_sink;
#[cfg(feature = "kafka")]
pub mod schema_registry;
pub mod outbox;
pub mod record;
pub mod sink;
pub mod stream;

pub use directory_sink::DirectorySink;
#[cfg(feature = "kafka")]
pub use kafka_sink::{AvroEncoding, KafkaCompression, KafkaSasl, KafkaSetupError, KafkaSink, KafkaSinkConfig, KafkaTopics, ValueEncoding};
#[cfg(feature = "kafka")]
pub use schema_registry::{SchemaRegistry, SchemaRegistryConfig};
#[cfg(feature = "s3")]
pub use s3_sink::{S3SetupError, S3Sink, S3SinkConfig};
pub use outbox::{
    Appender, ClassStats, Outbox, OutboxConfig, OutboxError, OutboxStats, QuotaPolicy, SinkStats,
};
pub use record::{
    decode_cbor, decode_json, encode_cbor, encode_json, AlertState, Body, Bytes, DecodeError,
    EncodeError, Envelope, ModelRef, Quality, Quantile, RecordClass, SessionAlert, Stats,
    SCHEMA_VERSION,
};
pub use sink::{BatchLimits, ClassSet, Sink, SinkError, StoredRecord};
pub use stream::{RecordReader, RecordWriter};
