//! The [`Sink`] trait: where outbox records are delivered.

use std::future::Future;
use std::time::Duration;

use crate::record::{decode_cbor, DecodeError, Envelope, RecordClass};

/// One record as stored in the outbox and handed to sinks.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRecord {
    /// The record's sequence number (also inside the encoded envelope).
    pub seq: u64,
    /// The record's drain class.
    pub class: RecordClass,
    /// The CBOR-encoded [`Envelope`], exactly the bytes to put on the wire.
    pub cbor: Vec<u8>,
}

impl StoredRecord {
    /// Decodes the envelope (sinks that only forward bytes need not).
    pub fn envelope(&self) -> Result<Envelope, DecodeError> {
        decode_cbor(&self.cbor)
    }
}

/// A set of [`RecordClass`]es (what a sink wants), persisted as a bit mask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ClassSet(u8);

impl ClassSet {
    /// Every class.
    pub const ALL: ClassSet = ClassSet(0b111_1111);
    /// No class.
    pub const NONE: ClassSet = ClassSet(0);

    /// The set holding exactly `classes`.
    pub fn of(classes: &[RecordClass]) -> ClassSet {
        classes.iter().fold(ClassSet::NONE, |s, &c| s.with(c))
    }

    /// This set plus `class`.
    pub fn with(self, class: RecordClass) -> ClassSet {
        ClassSet(self.0 | (1 << class.id()))
    }

    /// This set minus `class`.
    pub fn without(self, class: RecordClass) -> ClassSet {
        ClassSet(self.0 & !(1 << class.id()))
    }

    /// Whether `class` is in the set.
    pub fn contains(self, class: RecordClass) -> bool {
        self.0 & (1 << class.id()) != 0
    }

    /// The persisted bit mask (bit `class.id()`).
    pub fn bits(self) -> u8 {
        self.0
    }

    /// From a persisted bit mask (unknown bits dropped).
    pub fn from_bits(bits: u8) -> ClassSet {
        ClassSet(bits & ClassSet::ALL.0)
    }

    /// The set of classes a sink wants, asked class by class.
    pub fn from_sink<S: Sink + ?Sized>(sink: &S) -> ClassSet {
        RecordClass::ALL
            .into_iter()
            .filter(|&c| sink.wants(c))
            .fold(ClassSet::NONE, |s, c| s.with(c))
    }
}

/// How large a sink's batches may grow and how long a small batch may wait to grow (see
/// [`Sink::batch_limits`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    /// Most records per batch.
    pub max_records: usize,
    /// Most CBOR bytes per batch (a single larger record is still offered alone).
    pub max_bytes: usize,
    /// How long the drain loop holds a batch smaller than `max_records` before delivering it
    /// (the age limit of a batch). Alert batches are never held. Zero delivers at once.
    pub linger: Duration,
}

/// Why a delivery failed.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The destination is unavailable or refused for now (link down, broker
    /// unavailable, disk full…). The drain loop retries the records with
    /// exponential backoff, indefinitely.
    #[error("transient delivery failure: {message}")]
    Transient {
        /// What failed.
        message: String,
        /// Underlying cause, when there is one.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// An I/O error, with what was being done. Treated as transient.
    #[error("{context}")]
    Io {
        /// What was being done, e.g. `writing /data/outbox/x.tmp`.
        context: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The sink cannot work at all (misconfiguration, revoked credentials).
    /// The drain loop stops and [`crate::outbox::Outbox::run_sink`] returns
    /// the error; records stay in the outbox for this sink.
    #[error("fatal sink failure: {message}")]
    Fatal {
        /// What failed.
        message: String,
    },
}

impl SinkError {
    /// A transient error with a message and no source.
    pub fn transient(message: impl Into<String>) -> Self {
        SinkError::Transient {
            message: message.into(),
            source: None,
        }
    }

    /// Whether the drain loop retries after this error.
    pub fn is_retriable(&self) -> bool {
        !matches!(self, SinkError::Fatal { .. })
    }
}

/// A destination for outbox records: a local directory ([`crate::DirectorySink`]), Kafka
/// (`KafkaSink`, feature `kafka`), S3 (`S3Sink`, feature `s3`).
///
/// # Execution model
///
/// Each sink is driven by its own drain loop,
/// [`Outbox::run_sink`](crate::outbox::Outbox::run_sink), on a tokio task. The
/// loop owns the sink (`&mut self`), so a sink sees at most one call at a time
/// and needs no internal locking. Sinks never see each other: a slow or dead
/// sink delays only its own loop. The loop reads a batch from the outbox
/// (never from memory: the outbox is the only source of truth), calls
/// [`deliver`](Sink::deliver), and on `Ok` persists the sink's cursor.
///
/// Batches are **single-class** and in **ascending `seq`** order. The loop
/// picks the class by priority ([`RecordClass::priority`]): while any alert is
/// pending for this sink, the next batch is alerts; then scores/DLQ; then
/// readings; then heartbeats. Within a class every record is offered in `seq`
/// order, each record after all records of lower `seq` in that class have been
/// confirmed (or dropped by the quota policy).
///
/// # When a record counts as delivered
///
/// A record counts as delivered **to this sink** when `deliver` has returned
/// `Ok(())` for a batch containing it **and** the drain loop has committed the
/// sink's advanced cursor to the outbox database. Only then will it never be
/// offered to this sink again. It is deleted from the outbox once it counts as
/// delivered to every *registered* sink whose [`wants`](Sink::wants) includes
/// its class.
///
/// Consequently delivery is **at-least-once**: if the process dies after
/// `deliver` returned `Ok` but before the cursor commit, the same records (and
/// possibly more) are offered again after restart. Consumers deduplicate on
/// `(agent_id, seq)`; sinks may make redelivery idempotent (the directory sink
/// names files by class and seq range).
///
/// # Method contracts
///
/// * [`name`](Sink::name) — a stable identifier. The sink's cursors are stored
///   under it, so renaming a sink makes it a new sink (which starts from
///   whatever the outbox still holds), and the old name keeps holding records
///   until it is unregistered.
/// * [`wants`](Sink::wants) — whether this sink takes records of a class. Must
///   be a pure function of configuration: it is read when the sink is
///   registered and when its loop starts.
/// * [`batch_limits`](Sink::batch_limits) — the sink's own batch size and age limits (e.g.
///   large, minutes-old batches for object storage); `None` (the default) uses the outbox's
///   [`OutboxConfig`](crate::OutboxConfig). Read once when the loop starts.
/// * [`deliver`](Sink::deliver) — make `batch` durable at the destination.
///   * `Ok(())` means **every** record in `batch` is durably accepted by the
///     destination (fsynced file, broker ack with the required acks, object
///     PUT acknowledged). Returning `Ok` for less is data loss.
///   * `Err(e)` means the batch is **not** confirmed; none of it counts as
///     delivered, even if some of it reached the destination (it will be
///     offered again: that is the at-least-once duplicate case). If
///     [`SinkError::is_retriable`], the loop waits (exponential backoff) and
///     calls `deliver` again with a freshly read batch, which may differ
///     (higher-priority records that arrived meanwhile go first, and the batch
///     may be longer or shorter), so a sink must not assume it will see the
///     same batch again. A [`SinkError::Fatal`] stops the loop.
///   * The future may be dropped at an await point when the loop shuts down;
///     that counts as `Err` (not delivered). A sink must leave the destination
///     consistent in that case (e.g. write to a temporary name and rename).
///   * The batch is never empty.
pub trait Sink: Send + 'static {
    /// Stable name; keys this sink's cursors.
    fn name(&self) -> &str;

    /// Whether this sink takes records of `class`.
    fn wants(&self, class: RecordClass) -> bool;

    /// Batch limits for this sink; `None` = the outbox's defaults.
    fn batch_limits(&self) -> Option<BatchLimits> {
        None
    }

    /// Durably delivers `batch`; see the trait docs for what `Ok`/`Err` mean.
    fn deliver(
        &mut self,
        batch: &[StoredRecord],
    ) -> impl Future<Output = Result<(), SinkError>> + Send;
}
