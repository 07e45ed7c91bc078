//! The durable store-and-forward outbox.
//!
//! # Design constraints
//!
//! * **Loses nothing while the link is down.** Every record is committed to
//!   disk (redb) before anyone acts on it; sinks read only from disk, never
//!   from an in-memory queue, so a crash at any point loses no committed
//!   record. The only deliberate loss is the quota policy
//!   [`QuotaPolicy::DropOldestReadings`], which is counted.
//! * **Atomic with the agent's state.** The outbox lives in the agent's own
//!   redb file (a shared `Arc<Database>`). [`Outbox::append`] writes into the
//!   caller's [`WriteTransaction`], so e.g. "window closed + score emitted +
//!   alert raised" commit together or not at all.
//! * **Sinks are independent.** Each sink has its own drain loop and its own
//!   cursors; a slow or dead sink never delays another. A record is deleted
//!   only when every registered sink that wants its class has confirmed it.
//! * **Urgent first.** After an outage, alerts drain before scores/DLQ, which
//!   drain before readings, then heartbeats ([`RecordClass::priority`]).
//! * **Bounded disk.** A byte quota with an explicit policy
//!   ([`QuotaPolicy`]); alerts are never dropped and have a reserve.
//! * Edge hardware: 2 cores, slow flash. Appends are group-committable
//!   ([`Outbox::append_batch`], or many appends in one caller transaction);
//!   blocking redb work in the drain loop runs on tokio's blocking pool.
//!
//! # On-disk layout (redb tables, all prefixed `vigil_outbox/`)
//!
//! | table | key | value | meaning |
//! |---|---|---|---|
//! | `meta` | `&str` | `u64` | `next_seq` (next seq to assign, starts at 1); `bytes/<class>` (accounted bytes per class); `dropped/<class>` (records dropped by quota); `appended/<class>` (CBOR bytes ever appended); `layout` (= [`LAYOUT_VERSION`]) |
//! | `records/<class>` ×7 | `u64` seq | `&[u8]` | the record's CBOR [`Envelope`], exactly the wire bytes |
//! | `sinks` | `&str` sink name | `u8` | registered sinks and the [`ClassSet`] bit mask they want |
//! | `cursors` | `(&str, u8)` (sink, class id) | `u64` | highest seq of that class confirmed by that sink (absent = 0) |
//!
//! `<class>` is [`RecordClass::as_str`]. Accounted bytes of a record are its
//! CBOR length plus [`RECORD_OVERHEAD`]; the quota applies to that sum (the
//! redb file itself is shared and does not shrink, so its size is not the
//! measure).
//!
//! # Invariants
//!
//! 1. **Seq order is commit order.** `next_seq` is read and incremented inside
//!    the appending write transaction; redb runs one write transaction at a
//!    time, so a committed record with a higher seq was committed after every
//!    record with a lower seq. A seq that was ever committed is never assigned
//!    again (an aborted transaction's seqs were never visible and are
//!    reassigned).
//! 2. Hence, per class, **a cursor `c` means every record of that class with
//!    `seq <= c` was delivered to that sink or dropped**: the drain loop
//!    offers records strictly in seq order, and no record with `seq <= c` can
//!    appear later (1).
//! 3. A record of class `K` is deleted (other than by the quota policy) only
//!    when `seq <= min(cursor(s, K))` over registered sinks `s` wanting `K`,
//!    in the same transaction that advances a cursor or changes
//!    registrations. A class no registered sink wants is retained.
//! 4. `bytes/<class>` equals the sum of accounted bytes of the records in
//!    `records/<class>`: every insert and delete updates it in the same
//!    transaction.
//!
//! # Waking sinks
//!
//! redb has no commit hook, so after committing a transaction that appended,
//! the caller calls [`Outbox::notify`]. Sinks also poll every
//! [`OutboxConfig::poll_interval`], so a missed notify only adds latency.
//! Notifying before the commit is harmless (sinks find nothing new and wait
//! for the next notify or poll), never incorrect.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redb::{
    Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, Table, TableDefinition,
    WriteTransaction,
};
use tokio::sync::watch;

use crate::record::{
    encode_cbor, Body, DecodeError, EncodeError, Envelope, RecordClass, SCHEMA_VERSION,
};
use crate::sink::{BatchLimits, ClassSet, Sink, SinkError, StoredRecord};

/// Version of the table layout described in the module docs.
pub const LAYOUT_VERSION: u64 = 1;
/// Bytes accounted per record on top of its CBOR length (key + B-tree
/// overhead, approximate).
pub const RECORD_OVERHEAD: u64 = 24;

const META: TableDefinition<&str, u64> = TableDefinition::new("vigil_outbox/meta");
const SINKS: TableDefinition<&str, u8> = TableDefinition::new("vigil_outbox/sinks");
const CURSORS: TableDefinition<(&str, u8), u64> = TableDefinition::new("vigil_outbox/cursors");
/// Indexed by [`RecordClass::id`].
const RECORDS: [TableDefinition<u64, &[u8]>; RecordClass::ALL.len()] = [
    TableDefinition::new("vigil_outbox/records/alert"),
    TableDefinition::new("vigil_outbox/records/score"),
    TableDefinition::new("vigil_outbox/records/dlq"),
    TableDefinition::new("vigil_outbox/records/reading"),
    TableDefinition::new("vigil_outbox/records/heartbeat"),
    TableDefinition::new("vigil_outbox/records/aggregate"),
    TableDefinition::new("vigil_outbox/records/session"),
];

const NEXT_SEQ: &str = "next_seq";
const LAYOUT: &str = "layout";

fn bytes_key(c: RecordClass) -> &'static str {
    match c {
        RecordClass::Alert => "bytes/alert",
        RecordClass::Score => "bytes/score",
        RecordClass::Dlq => "bytes/dlq",
        RecordClass::Reading => "bytes/reading",
        RecordClass::Heartbeat => "bytes/heartbeat",
        RecordClass::Aggregate => "bytes/aggregate",
        RecordClass::Session => "bytes/session",
    }
}

fn appended_key(c: RecordClass) -> &'static str {
    match c {
        RecordClass::Alert => "appended/alert",
        RecordClass::Score => "appended/score",
        RecordClass::Dlq => "appended/dlq",
        RecordClass::Reading => "appended/reading",
        RecordClass::Heartbeat => "appended/heartbeat",
        RecordClass::Aggregate => "appended/aggregate",
        RecordClass::Session => "appended/session",
    }
}

fn dropped_key(c: RecordClass) -> &'static str {
    match c {
        RecordClass::Alert => "dropped/alert",
        RecordClass::Score => "dropped/score",
        RecordClass::Dlq => "dropped/dlq",
        RecordClass::Reading => "dropped/reading",
        RecordClass::Heartbeat => "dropped/heartbeat",
        RecordClass::Aggregate => "dropped/aggregate",
        RecordClass::Session => "dropped/session",
    }
}

/// What to do when an append would exceed [`OutboxConfig::quota_bytes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaPolicy {
    /// Delete the oldest readings, then the oldest heartbeats, until the new
    /// record fits; count them in `dropped/<class>`. Alerts, scores and DLQ
    /// records are never dropped: if dropping every reading and heartbeat
    /// would not make room, the append fails with
    /// [`OutboxError::QuotaExceeded`] and nothing is dropped.
    DropOldestReadings,
    /// Drop nothing; the append fails with [`OutboxError::QuotaExceeded`]
    /// (the agent stops acking / slows its inputs until sinks catch up).
    Backpressure,
}

/// Outbox settings.
#[derive(Debug, Clone)]
pub struct OutboxConfig {
    /// Maximum accounted bytes of all stored records.
    pub quota_bytes: u64,
    /// What happens at the quota.
    pub quota_policy: QuotaPolicy,
    /// Part of the quota only alerts may use, so alerts still append when
    /// other classes have filled the rest.
    pub alert_reserve_bytes: u64,
    /// Most records per delivered batch.
    pub max_batch_records: usize,
    /// Most payload bytes per batch (a single larger record is still sent
    /// alone).
    pub max_batch_bytes: usize,
    /// First retry delay after a failed delivery.
    pub retry_initial: Duration,
    /// Retry delay cap (the delay doubles per consecutive failure).
    pub retry_max: Duration,
    /// How often an idle drain loop looks for records without a notify.
    pub poll_interval: Duration,
    /// How long a drain loop holds a batch smaller than `max_batch_records` to let it grow
    /// (fewer, larger files and requests). Alerts are never held. Zero delivers at once.
    pub linger: Duration,
}

impl OutboxConfig {
    /// The batch limits of sinks that do not set their own ([`Sink::batch_limits`]).
    pub fn batch_limits(&self) -> BatchLimits {
        BatchLimits {
            max_records: self.max_batch_records,
            max_bytes: self.max_batch_bytes,
            linger: self.linger,
        }
    }
}

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig {
            quota_bytes: 256 << 20,
            quota_policy: QuotaPolicy::DropOldestReadings,
            alert_reserve_bytes: 4 << 20,
            max_batch_records: 1000,
            max_batch_bytes: 1 << 20,
            retry_initial: Duration::from_millis(200),
            retry_max: Duration::from_secs(60),
            poll_interval: Duration::from_secs(5),
            linger: Duration::ZERO,
        }
    }
}

/// Outbox errors.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// redb failed.
    #[error("outbox storage error while {context}")]
    Storage {
        /// What the outbox was doing.
        context: &'static str,
        /// The redb error.
        #[source]
        source: redb::Error,
    },
    /// A record could not be encoded.
    #[error("encoding outbox record")]
    Encode(#[from] EncodeError),
    /// A stored record could not be decoded (stats only; delivery forwards
    /// bytes without decoding).
    #[error("stored {class} record seq {seq} is corrupt")]
    Corrupt {
        /// Its class.
        class: RecordClass,
        /// Its seq.
        seq: u64,
        /// Decode error.
        #[source]
        source: DecodeError,
    },
    /// The append does not fit in the quota (policy `Backpressure`, or
    /// nothing droppable is left). The caller's transaction is unchanged by
    /// the failed append and may still be committed or aborted. This is the
    /// backpressure signal: see [`OutboxError::is_backpressure`].
    #[error(
        "outbox quota exceeded: {used} + {needed} bytes > {limit} available to {class} records"
    )]
    QuotaExceeded {
        /// Class of the rejected record.
        class: RecordClass,
        /// Accounted bytes in use.
        used: u64,
        /// Accounted bytes of the rejected record.
        needed: u64,
        /// Quota available to that class.
        limit: u64,
    },
    /// [`Body::Unknown`] cannot be appended.
    #[error("cannot append a record of unknown kind")]
    UnknownKind,
    /// The sink's registration was removed while its drain loop ran.
    #[error("sink {0:?} is not registered")]
    SinkNotRegistered(String),
    /// A sink returned [`SinkError::Fatal`]; its drain loop stopped.
    #[error("sink {sink:?} failed fatally")]
    SinkFatal {
        /// Sink name.
        sink: String,
        /// The sink's error.
        #[source]
        source: SinkError,
    },
    /// A blocking storage task panicked or was cancelled.
    #[error("outbox background task failed: {0}")]
    Task(String),
}

impl OutboxError {
    /// True for [`OutboxError::QuotaExceeded`]: stop acking / slow inputs.
    pub fn is_backpressure(&self) -> bool {
        matches!(self, OutboxError::QuotaExceeded { .. })
    }
}

trait Ctx<T> {
    fn ctx(self, context: &'static str) -> Result<T, OutboxError>;
}

impl<T, E: Into<redb::Error>> Ctx<T> for Result<T, E> {
    fn ctx(self, context: &'static str) -> Result<T, OutboxError> {
        self.map_err(|e| OutboxError::Storage {
            context,
            source: e.into(),
        })
    }
}

/// Depth of one class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassStats {
    /// The class.
    pub class: RecordClass,
    /// Records stored.
    pub records: u64,
    /// Accounted bytes stored.
    pub bytes: u64,
    /// Records dropped by the quota policy since the outbox was created.
    pub dropped: u64,
    /// CBOR bytes of every record of the class appended since the outbox was created (what
    /// the sinks carry, before a sink's own framing or compression).
    pub appended_bytes: u64,
}

/// State of one registered sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkStats {
    /// Sink name.
    pub name: String,
    /// Classes it wants.
    pub classes: ClassSet,
    /// Confirmed cursor per wanted class.
    pub cursors: Vec<(RecordClass, u64)>,
    /// Age (now − `emitted_ms`) of the oldest record this sink has not
    /// confirmed; `None` when it is caught up.
    pub oldest_undelivered_age_ms: Option<u64>,
    /// Records confirmed since this process started.
    pub delivered_records: u64,
    /// Failed deliveries since this process started.
    pub failures: u64,
    /// Failed deliveries since the last success.
    pub consecutive_failures: u64,
    /// Last delivery error, if the last attempt failed.
    pub last_error: Option<String>,
}

/// Snapshot for metrics export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxStats {
    /// Next seq to be assigned.
    pub next_seq: u64,
    /// Configured quota.
    pub quota_bytes: u64,
    /// Accounted bytes in use (sum over classes).
    pub used_bytes: u64,
    /// Per class, in [`RecordClass::ALL`] order.
    pub classes: Vec<ClassStats>,
    /// Per registered sink, by name.
    pub sinks: Vec<SinkStats>,
}

impl OutboxStats {
    /// Stats of one class.
    pub fn class(&self, class: RecordClass) -> &ClassStats {
        // Invariant: `classes` is built from RecordClass::ALL, indexed by id.
        &self.classes[class.id() as usize]
    }
}

#[derive(Debug, Default, Clone)]
struct SinkRuntime {
    delivered_records: u64,
    failures: u64,
    consecutive_failures: u64,
    last_error: Option<String>,
}

/// The durable outbox. Share it as `Arc<Outbox>`.
pub struct Outbox {
    db: Arc<Database>,
    agent_id: String,
    config: OutboxConfig,
    wake: watch::Sender<u64>,
    runtime: Mutex<BTreeMap<String, SinkRuntime>>,
}

/// Tables of one write transaction, opened on first use.
struct TxnTables<'t> {
    txn: &'t WriteTransaction,
    meta: Table<'t, &'static str, u64>,
    records: [Option<Table<'t, u64, &'static [u8]>>; RecordClass::ALL.len()],
    /// Write-through cache of `meta` counters read in this transaction: an append reads
    /// `next_seq` and every class's byte count, and an [`Appender`] appends many records.
    /// Every write goes through [`TxnTables::meta_set`], so the cache never goes stale.
    cache: std::cell::RefCell<Vec<(&'static str, u64)>>,
}

/// Appends records inside one caller transaction; see [`Outbox::appender`]. Same contract as
/// [`Outbox::append`] for every call: nothing is visible before the caller commits.
pub struct Appender<'t> {
    outbox: &'t Outbox,
    tables: TxnTables<'t>,
}

impl Appender<'_> {
    /// Appends one record and returns its seq (errors as [`Outbox::append`]).
    pub fn append(&mut self, event_time_ms: i64, body: Body) -> Result<u64, OutboxError> {
        self.outbox.append_in(&mut self.tables, event_time_ms, body)
    }
}

impl<'t> TxnTables<'t> {
    fn new(txn: &'t WriteTransaction) -> Result<Self, OutboxError> {
        Ok(TxnTables {
            txn,
            meta: txn.open_table(META).ctx("opening outbox meta table")?,
            records: [const { None }; RecordClass::ALL.len()],
            cache: std::cell::RefCell::new(Vec::with_capacity(8)),
        })
    }

    fn records(
        &mut self,
        class: RecordClass,
    ) -> Result<&mut Table<'t, u64, &'static [u8]>, OutboxError> {
        let slot = &mut self.records[class.id() as usize];
        if slot.is_none() {
            *slot = Some(
                self.txn
                    .open_table(RECORDS[class.id() as usize])
                    .ctx("opening outbox records table")?,
            );
        }
        // Invariant: the slot was filled just above if it was empty.
        slot.as_mut()
            .ok_or(OutboxError::Task("records table slot empty".into()))
    }

    fn meta_get(&self, key: &'static str) -> Result<u64, OutboxError> {
        if let Some((_, v)) = self.cache.borrow().iter().find(|(k, _)| *k == key) {
            return Ok(*v);
        }
        let v = self
            .meta
            .get(key)
            .ctx("reading outbox meta")?
            .map(|g| g.value())
            .unwrap_or(0);
        self.cache.borrow_mut().push((key, v));
        Ok(v)
    }

    fn meta_set(&mut self, key: &'static str, value: u64) -> Result<(), OutboxError> {
        self.meta.insert(key, value).ctx("writing outbox meta")?;
        let mut cache = self.cache.borrow_mut();
        match cache.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => cache.push((key, value)),
        }
        Ok(())
    }

    fn meta_add(&mut self, key: &'static str, delta: i128) -> Result<(), OutboxError> {
        let v = self.meta_get(key)? as i128 + delta;
        self.meta_set(key, v.max(0) as u64)
    }

    fn used_bytes(&self) -> Result<u64, OutboxError> {
        RecordClass::ALL
            .into_iter()
            .try_fold(0u64, |acc, c| Ok(acc + self.meta_get(bytes_key(c))?))
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Outbox {
    /// Opens (creating if needed) the outbox tables in `db`.
    pub fn open(
        db: Arc<Database>,
        agent_id: String,
        config: OutboxConfig,
    ) -> Result<Outbox, OutboxError> {
        let txn = db.begin_write().ctx("beginning outbox open transaction")?;
        {
            let mut t = TxnTables::new(&txn)?;
            if t.meta.get(NEXT_SEQ).ctx("reading next_seq")?.is_none() {
                t.meta.insert(NEXT_SEQ, 1).ctx("initialising next_seq")?;
                t.meta
                    .insert(LAYOUT, LAYOUT_VERSION)
                    .ctx("writing layout version")?;
            }
            for c in RecordClass::ALL {
                t.records(c)?;
            }
            txn.open_table(SINKS).ctx("creating sinks table")?;
            txn.open_table(CURSORS).ctx("creating cursors table")?;
        }
        txn.commit().ctx("committing outbox open")?;
        let (wake, _) = watch::channel(0);
        Ok(Outbox {
            db,
            agent_id,
            config,
            wake,
            runtime: Mutex::new(BTreeMap::new()),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &OutboxConfig {
        &self.config
    }

    /// The shared database.
    pub fn database(&self) -> &Arc<Database> {
        &self.db
    }

    /// Appends one record inside the caller's transaction and returns its
    /// seq. Nothing is visible (to sinks or after a crash) until the caller
    /// commits; if the caller aborts, nothing happened (including quota
    /// drops) and the seq will be assigned again. Call [`Outbox::notify`]
    /// after committing.
    ///
    /// Errors: [`OutboxError::QuotaExceeded`] (backpressure; the transaction
    /// is unchanged by this call), [`OutboxError::UnknownKind`], storage and
    /// encoding errors (after which the caller should abort).
    pub fn append(
        &self,
        txn: &WriteTransaction,
        event_time_ms: i64,
        body: Body,
    ) -> Result<u64, OutboxError> {
        let mut t = TxnTables::new(txn)?;
        self.append_in(&mut t, event_time_ms, body)
    }

    /// An appender for many records in the caller's transaction: like [`Outbox::append`], but
    /// the outbox tables are opened once and its counters are read once per transaction.
    pub fn appender<'t>(&'t self, txn: &'t WriteTransaction) -> Result<Appender<'t>, OutboxError> {
        Ok(Appender {
            outbox: self,
            tables: TxnTables::new(txn)?,
        })
    }

    /// Appends `records` (`(event_time_ms, body)`) in one transaction of its
    /// own (group commit, durable on return), then notifies sinks. All or
    /// nothing: on error nothing is appended. Returns the seqs in order.
    pub fn append_batch(&self, records: Vec<(i64, Body)>) -> Result<Vec<u64>, OutboxError> {
        let txn = self.db.begin_write().ctx("beginning append transaction")?;
        let mut seqs = Vec::with_capacity(records.len());
        {
            let mut t = TxnTables::new(&txn)?;
            for (event_time_ms, body) in records {
                seqs.push(self.append_in(&mut t, event_time_ms, body)?);
            }
        }
        txn.commit().ctx("committing appended records")?;
        self.notify();
        Ok(seqs)
    }

    /// Wakes every drain loop to look for new records. Call after committing
    /// a transaction that appended.
    pub fn notify(&self) {
        self.wake.send_modify(|v| *v = v.wrapping_add(1));
    }

    fn append_in(
        &self,
        t: &mut TxnTables<'_>,
        event_time_ms: i64,
        body: Body,
    ) -> Result<u64, OutboxError> {
        let class = body.class().ok_or(OutboxError::UnknownKind)?;
        let seq = t.meta_get(NEXT_SEQ)?.max(1);
        let env = Envelope {
            schema: SCHEMA_VERSION,
            agent_id: self.agent_id.clone(),
            seq,
            event_time_ms,
            emitted_ms: now_ms(),
            body,
        };
        let cbor = encode_cbor(&env)?;
        let cost = cbor.len() as u64 + RECORD_OVERHEAD;
        self.make_room(t, class, cost)?;
        t.records(class)?
            .insert(seq, cbor.as_slice())
            .ctx("inserting outbox record")?;
        t.meta_set(NEXT_SEQ, seq + 1)?;
        t.meta_add(bytes_key(class), i128::from(cost))?;
        t.meta_add(appended_key(class), cbor.len() as i128)?;
        Ok(seq)
    }

    /// Ensures `cost` more bytes of `class` fit, dropping per policy. Either
    /// succeeds or changes nothing.
    fn make_room(
        &self,
        t: &mut TxnTables<'_>,
        class: RecordClass,
        cost: u64,
    ) -> Result<(), OutboxError> {
        let limit = if class == RecordClass::Alert {
            self.config.quota_bytes
        } else {
            self.config
                .quota_bytes
                .saturating_sub(self.config.alert_reserve_bytes)
        };
        let used = t.used_bytes()?;
        if used + cost <= limit {
            return Ok(());
        }
        let exceeded = OutboxError::QuotaExceeded {
            class,
            used,
            needed: cost,
            limit,
        };
        if self.config.quota_policy == QuotaPolicy::Backpressure {
            return Err(exceeded);
        }
        const DROPPABLE: [RecordClass; 2] = [RecordClass::Reading, RecordClass::Heartbeat];
        let droppable: u64 = DROPPABLE.iter().try_fold(0u64, |a, &c| {
            Ok::<_, OutboxError>(a + t.meta_get(bytes_key(c))?)
        })?;
        if used - droppable.min(used) + cost > limit {
            return Err(exceeded);
        }
        let mut used = used;
        for c in DROPPABLE {
            let (mut n, mut freed) = (0u64, 0u64);
            {
                let table = t.records(c)?;
                while used + cost > limit {
                    let Some((_, v)) = table.pop_first().ctx("dropping oldest record")? else {
                        break;
                    };
                    let b = v.value().len() as u64 + RECORD_OVERHEAD;
                    freed += b;
                    used = used.saturating_sub(b);
                    n += 1;
                }
            }
            if n > 0 {
                t.meta_add(bytes_key(c), -i128::from(freed))?;
                t.meta_add(dropped_key(c), i128::from(n))?;
                tracing::warn!(class = %c, records = n, bytes = freed, "outbox quota reached: dropped oldest records");
            }
            if used + cost <= limit {
                return Ok(());
            }
        }
        // Unreachable in practice: `droppable` covered the shortfall. Report
        // honestly rather than assert.
        Err(exceeded)
    }

    /// Registers (or updates) a sink: from now on records of `classes` are
    /// kept until it confirms them. Register every sink at startup, before
    /// starting any drain loop, so no sink's confirmations delete records
    /// another has not seen. [`Outbox::run_sink`] also registers its sink.
    pub fn register_sink(&self, name: &str, classes: ClassSet) -> Result<(), OutboxError> {
        let txn = self.db.begin_write().ctx("beginning sink registration")?;
        {
            let mut sinks = txn.open_table(SINKS).ctx("opening sinks table")?;
            let old = sinks
                .insert(name, classes.bits())
                .ctx("registering sink")?
                .map(|g| g.value());
            drop(sinks);
            if old != Some(classes.bits()) {
                let mut t = TxnTables::new(&txn)?;
                for c in RecordClass::ALL {
                    self.gc_class(&mut t, c)?;
                }
            }
        }
        txn.commit().ctx("committing sink registration")?;
        Ok(())
    }

    /// Removes a sink and its cursors; records only it was holding are
    /// deleted.
    pub fn unregister_sink(&self, name: &str) -> Result<(), OutboxError> {
        let txn = self.db.begin_write().ctx("beginning sink removal")?;
        {
            txn.open_table(SINKS)
                .ctx("opening sinks table")?
                .remove(name)
                .ctx("removing sink")?;
            let mut cursors = txn.open_table(CURSORS).ctx("opening cursors table")?;
            for c in RecordClass::ALL {
                cursors.remove((name, c.id())).ctx("removing cursor")?;
            }
            drop(cursors);
            let mut t = TxnTables::new(&txn)?;
            for c in RecordClass::ALL {
                self.gc_class(&mut t, c)?;
            }
        }
        txn.commit().ctx("committing sink removal")?;
        Ok(())
    }

    /// Registered sinks and the classes they want.
    pub fn registered_sinks(&self) -> Result<Vec<(String, ClassSet)>, OutboxError> {
        let rtxn = self.db.begin_read().ctx("beginning read")?;
        let sinks = rtxn.open_table(SINKS).ctx("opening sinks table")?;
        let mut out = Vec::new();
        for entry in sinks.iter().ctx("listing sinks")? {
            let (k, v) = entry.ctx("reading sink")?;
            out.push((k.value().to_string(), ClassSet::from_bits(v.value())));
        }
        Ok(out)
    }

    /// Deletes records of `class` confirmed by every registered sink wanting
    /// it (invariant 3).
    fn gc_class(&self, t: &mut TxnTables<'_>, class: RecordClass) -> Result<(), OutboxError> {
        let mut min: Option<u64> = None;
        {
            let sinks = t.txn.open_table(SINKS).ctx("opening sinks table")?;
            let cursors = t.txn.open_table(CURSORS).ctx("opening cursors table")?;
            for entry in sinks.iter().ctx("listing sinks")? {
                let (name, bits) = entry.ctx("reading sink")?;
                if !ClassSet::from_bits(bits.value()).contains(class) {
                    continue;
                }
                let cur = cursors
                    .get((name.value(), class.id()))
                    .ctx("reading cursor")?
                    .map(|g| g.value())
                    .unwrap_or(0);
                min = Some(min.map_or(cur, |m| m.min(cur)));
            }
        }
        let Some(min) = min.filter(|&m| m > 0) else {
            return Ok(());
        };
        let mut freed = 0u64;
        t.records(class)?
            .retain_in(..=min, |_, v| {
                freed += v.len() as u64 + RECORD_OVERHEAD;
                false
            })
            .ctx("deleting delivered records")?;
        if freed > 0 {
            t.meta_add(bytes_key(class), -i128::from(freed))?;
        }
        Ok(())
    }

    /// Reads the next batch for a sink: the highest-priority class with
    /// pending records (ties: the older pending record), in seq order.
    ///
    /// One step of [`Outbox::run_sink`], public for tools and tests that drive a registered
    /// sink by hand ([`Outbox::register_sink`], then `next_batch` / [`Outbox::confirm`]).
    pub fn next_batch(
        &self,
        sink: &str,
        wants: ClassSet,
        limits: BatchLimits,
    ) -> Result<Option<(RecordClass, Vec<StoredRecord>)>, OutboxError> {
        let rtxn = self.db.begin_read().ctx("beginning read")?;
        let cursors = rtxn.open_table(CURSORS).ctx("opening cursors table")?;
        let mut best: Option<(u8, u64, RecordClass, u64)> = None; // (priority, first seq, class, cursor)
        for class in RecordClass::ALL {
            if !wants.contains(class) {
                continue;
            }
            let cur = cursors
                .get((sink, class.id()))
                .ctx("reading cursor")?
                .map(|g| g.value())
                .unwrap_or(0);
            let table = rtxn
                .open_table(RECORDS[class.id() as usize])
                .ctx("opening records table")?;
            let first = match table.range((cur + 1)..).ctx("scanning records")?.next() {
                Some(entry) => entry.ctx("reading record")?.0.value(),
                None => continue,
            };
            let key = (class.priority(), first);
            if best.is_none_or(|(p, f, _, _)| key < (p, f)) {
                best = Some((class.priority(), first, class, cur));
            }
        }
        let Some((_, _, class, cur)) = best else {
            return Ok(None);
        };
        let table = rtxn
            .open_table(RECORDS[class.id() as usize])
            .ctx("opening records table")?;
        let mut batch = Vec::new();
        let mut bytes = 0usize;
        for entry in table.range((cur + 1)..).ctx("scanning records")? {
            let (k, v) = entry.ctx("reading record")?;
            let cbor = v.value();
            if !batch.is_empty()
                && (batch.len() >= limits.max_records
                    || bytes + cbor.len() > limits.max_bytes)
            {
                break;
            }
            bytes += cbor.len();
            batch.push(StoredRecord {
                seq: k.value(),
                class,
                cbor: cbor.to_vec(),
            });
        }
        Ok(Some((class, batch)))
    }

    /// Persists a sink's confirmation of `class` records up to `last_seq`
    /// and deletes what every interested sink has confirmed.
    ///
    /// The other step of [`Outbox::run_sink`] (see [`Outbox::next_batch`]): call it only for a
    /// batch the destination durably accepted.
    pub fn confirm(&self, sink: &str, class: RecordClass, last_seq: u64) -> Result<(), OutboxError> {
        let txn = self.db.begin_write().ctx("beginning confirmation")?;
        {
            if txn
                .open_table(SINKS)
                .ctx("opening sinks table")?
                .get(sink)
                .ctx("reading sink")?
                .is_none()
            {
                return Err(OutboxError::SinkNotRegistered(sink.to_string()));
            }
            let mut cursors = txn.open_table(CURSORS).ctx("opening cursors table")?;
            let cur = cursors
                .get((sink, class.id()))
                .ctx("reading cursor")?
                .map(|g| g.value())
                .unwrap_or(0);
            if last_seq > cur {
                cursors
                    .insert((sink, class.id()), last_seq)
                    .ctx("advancing cursor")?;
            }
            drop(cursors);
            let mut t = TxnTables::new(&txn)?;
            self.gc_class(&mut t, class)?;
        }
        txn.commit().ctx("committing confirmation")?;
        Ok(())
    }

    /// Runs `f` on tokio's blocking pool (redb calls block on disk I/O).
    async fn blocking<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Outbox) -> Result<T, OutboxError> + Send + 'static,
    ) -> Result<T, OutboxError> {
        let this = Arc::clone(self);
        tokio::task::spawn_blocking(move || f(&this))
            .await
            .map_err(|e| OutboxError::Task(e.to_string()))?
    }

    fn runtime<R>(&self, sink: &str, f: impl FnOnce(&mut SinkRuntime) -> R) -> R {
        let mut map = self.runtime.lock().unwrap_or_else(|p| p.into_inner());
        f(map.entry(sink.to_string()).or_default())
    }

    /// The drain loop of one sink; runs until `shutdown` completes.
    ///
    /// Registers the sink ([`Outbox::register_sink`] with
    /// [`ClassSet::from_sink`]), then repeatedly: reads the next batch from
    /// disk (priority order, see [`Sink`]), delivers it, and on `Ok` commits
    /// the sink's cursor (the records now count as delivered to it) and
    /// deletes what all interested sinks have confirmed. On a retriable
    /// error it waits `retry_initial · 2ⁿ` (capped at `retry_max`, with up to
    /// 25 % jitter) and tries again with a freshly read batch. When nothing is
    /// pending it waits for [`Outbox::notify`], `poll_interval`, or shutdown.
    ///
    /// Returns `Ok(())` on shutdown (an in-flight delivery is dropped and
    /// counts as not delivered), [`OutboxError::SinkFatal`] if the sink
    /// reports a fatal error, or a storage error. Records stay in the outbox
    /// for this sink in every case.
    pub async fn run_sink<S: Sink>(
        self: Arc<Self>,
        mut sink: S,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), OutboxError> {
        let name = sink.name().to_string();
        let wants = ClassSet::from_sink(&sink);
        let limits = sink.batch_limits().unwrap_or_else(|| self.config.batch_limits());
        {
            let name = name.clone();
            self.blocking(move |ob| ob.register_sink(&name, wants))
                .await?;
        }
        let mut wake = self.wake.subscribe();
        tokio::pin!(shutdown);
        let mut delay = self.config.retry_initial;
        let mut lingered = false;
        loop {
            // Mark the current wake value seen *before* reading, so a notify
            // racing with the read is not lost.
            wake.borrow_and_update();
            let batch = {
                let name = name.clone();
                self.blocking(move |ob| ob.next_batch(&name, wants, limits)).await?
            };
            let Some((class, records)) = batch else {
                tokio::select! {
                    biased;
                    _ = &mut shutdown => return Ok(()),
                    _ = wake.changed() => {}
                    _ = tokio::time::sleep(self.config.poll_interval) => {}
                }
                continue;
            };
            if !lingered
                && !limits.linger.is_zero()
                && class != RecordClass::Alert
                && records.len() < limits.max_records
            {
                // Let a small batch grow, then read it again (it may also have become an
                // alert batch meanwhile: reading again keeps the priority order).
                lingered = true;
                tokio::select! {
                    biased;
                    _ = &mut shutdown => return Ok(()),
                    _ = tokio::time::sleep(limits.linger) => {}
                }
                continue;
            }
            lingered = false;
            let result = tokio::select! {
                biased;
                _ = &mut shutdown => return Ok(()),
                r = sink.deliver(&records) => r,
            };
            match result {
                Ok(()) => {
                    // Invariant: next_batch never returns an empty batch.
                    let last = records.last().map(|r| r.seq).unwrap_or(0);
                    {
                        let name = name.clone();
                        self.blocking(move |ob| ob.confirm(&name, class, last))
                            .await?;
                    }
                    self.runtime(&name, |r| {
                        r.delivered_records += records.len() as u64;
                        r.consecutive_failures = 0;
                        r.last_error = None;
                    });
                    tracing::debug!(sink = %name, %class, records = records.len(), last_seq = last, "delivered");
                    delay = self.config.retry_initial;
                }
                Err(e) if e.is_retriable() => {
                    let msg = error_chain(&e);
                    let n = self.runtime(&name, |r| {
                        r.failures += 1;
                        r.consecutive_failures += 1;
                        r.last_error = Some(msg.clone());
                        r.consecutive_failures
                    });
                    tracing::warn!(sink = %name, %class, attempt = n, retry_in = ?delay, error = %msg, "delivery failed; will retry");
                    let wait = delay + jitter(delay);
                    tokio::select! {
                        biased;
                        _ = &mut shutdown => return Ok(()),
                        _ = tokio::time::sleep(wait) => {}
                    }
                    delay = (delay * 2).min(self.config.retry_max);
                }
                Err(e) => {
                    self.runtime(&name, |r| {
                        r.failures += 1;
                        r.consecutive_failures += 1;
                        r.last_error = Some(error_chain(&e));
                    });
                    tracing::error!(sink = %name, error = %error_chain(&e), "sink failed fatally; drain loop stops");
                    return Err(OutboxError::SinkFatal {
                        sink: name,
                        source: e,
                    });
                }
            }
        }
    }

    /// A snapshot of depths, drops and per-sink progress.
    pub fn stats(&self) -> Result<OutboxStats, OutboxError> {
        let rtxn = self.db.begin_read().ctx("beginning read")?;
        let meta = rtxn.open_table(META).ctx("opening meta table")?;
        let get = |k: &str| -> Result<u64, OutboxError> {
            Ok(meta
                .get(k)
                .ctx("reading meta")?
                .map(|g| g.value())
                .unwrap_or(0))
        };
        let mut classes = Vec::new();
        for class in RecordClass::ALL {
            let table = rtxn
                .open_table(RECORDS[class.id() as usize])
                .ctx("opening records table")?;
            classes.push(ClassStats {
                class,
                records: table.len().ctx("counting records")?,
                bytes: get(bytes_key(class))?,
                dropped: get(dropped_key(class))?,
                appended_bytes: get(appended_key(class))?,
            });
        }
        let now = now_ms();
        let sinks_table = rtxn.open_table(SINKS).ctx("opening sinks table")?;
        let cursors = rtxn.open_table(CURSORS).ctx("opening cursors table")?;
        let mut sinks = Vec::new();
        for entry in sinks_table.iter().ctx("listing sinks")? {
            let (k, v) = entry.ctx("reading sink")?;
            let name = k.value().to_string();
            let wants = ClassSet::from_bits(v.value());
            let mut cur_list = Vec::new();
            let mut oldest: Option<i64> = None;
            for class in RecordClass::ALL.into_iter().filter(|&c| wants.contains(c)) {
                let cur = cursors
                    .get((name.as_str(), class.id()))
                    .ctx("reading cursor")?
                    .map(|g| g.value())
                    .unwrap_or(0);
                cur_list.push((class, cur));
                let table = rtxn
                    .open_table(RECORDS[class.id() as usize])
                    .ctx("opening records table")?;
                if let Some(entry) = table.range((cur + 1)..).ctx("scanning records")?.next() {
                    let (seq, bytes) = entry.ctx("reading record")?;
                    let env = crate::record::decode_cbor(bytes.value()).map_err(|source| {
                        OutboxError::Corrupt {
                            class,
                            seq: seq.value(),
                            source,
                        }
                    })?;
                    oldest = Some(oldest.map_or(env.emitted_ms, |o| o.min(env.emitted_ms)));
                }
            }
            let rt = self.runtime(&name, |r| r.clone());
            sinks.push(SinkStats {
                name,
                classes: wants,
                cursors: cur_list,
                oldest_undelivered_age_ms: oldest.map(|t| now.saturating_sub(t).max(0) as u64),
                delivered_records: rt.delivered_records,
                failures: rt.failures,
                consecutive_failures: rt.consecutive_failures,
                last_error: rt.last_error,
            });
        }
        Ok(OutboxStats {
            next_seq: get(NEXT_SEQ)?.max(1),
            quota_bytes: self.config.quota_bytes,
            used_bytes: classes.iter().map(|c| c.bytes).sum(),
            classes,
            sinks,
        })
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(cause) = src {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        src = cause.source();
    }
    s
}

/// Up to 25 % of `d`, from the clock's sub-second nanos (spreads retries of
/// many agents; not cryptographic).
fn jitter(d: Duration) -> Duration {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|t| t.subsec_nanos())
        .unwrap_or(0);
    let quarter = d.as_nanos() / 4;
    if quarter == 0 {
        return Duration::ZERO;
    }
    Duration::from_nanos((u128::from(nanos) % quarter) as u64)
}
