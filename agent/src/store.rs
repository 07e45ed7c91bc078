//! The agent's embedded database: one redb file, `<data_dir>/state.redb`.
//!
//! # Tables
//!
//! | table          | key            | value                         | written by            |
//! |----------------|----------------|-------------------------------|-----------------------|
//! | `meta`         | `&str`         | `u64` counters                | commit log            |
//! | `journal`      | ingest seq     | CBOR [`Reading`]              | commit log            |
//! | `dlq`          | DLQ id         | CBOR [`DlqEntry`]             | commit log            |
//! | `entity_state` | entity id      | CBOR window + feature state   | commit log (checkpoints from workers) |
//! | `asset_state`  | asset id       | CBOR asset join state (`pipeline::asset`) | commit log (checkpoints from workers) |
//! | `features`     | entity id      | JSON feature snapshot         | commit log (checkpoints from workers) |
//! | `alert_state`  | entity id      | CBOR hysteresis state         | commit log (outputs from the alert stage) |
//! | `alert_ack`    | entity id      | CBOR [`crate::alerts::Acknowledgement`] | commit log (API acknowledgements) |
//! | `review_queue` | review id      | CBOR [`crate::alerts::review::ReviewItem`] | commit log (review-band alert records; API labels) |
//! | `audit`        | audit id       | CBOR [`crate::ingest::modbus::writeback::WriteAudit`] | commit log (Modbus write-back) |
//! | `held_readings`, `uplink_release` | see [`crate::uplink_policy`]  | commit log (`reading = "around_alerts"`) |
//! | outbox tables  | see `cloud_uplink::outbox`                     | commit log, sinks     |
//!
//! Only the commit log thread opens write transactions on the agent's tables, so every write
//! is part of one group commit; the outbox's sinks write only their own cursor tables.
//!
//! # Invariants
//!
//! - A reading is in `journal` (and, as `[uplink.policy]` says, in the outbox or held for
//!   it) before its source is acknowledged.
//! - `journal` holds every reading whose effect on window state may not be checkpointed yet:
//!   it is trimmed only below the smallest `through` seq of all workers' last checkpoints.
//! - Each `entity_state` row records the ingest seq through which it reflects the journal, so
//!   recovery re-applies exactly the readings after it.

use std::path::Path;
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::dlq::DlqEntry;
#[allow(unused_imports)] // referenced by the docs above
use crate::reading::Reading;

pub const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
pub const JOURNAL: TableDefinition<u64, &[u8]> = TableDefinition::new("journal");
pub const DLQ: TableDefinition<u64, &[u8]> = TableDefinition::new("dlq");
pub const ENTITY_STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("entity_state");
pub const ASSET_STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("asset_state");
pub const FEATURES: TableDefinition<&str, &[u8]> = TableDefinition::new("features");
pub const ALERT_STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("alert_state");
pub const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");
pub const ALERT_ACK: TableDefinition<&str, &[u8]> = TableDefinition::new("alert_ack");
/// Model deployment state (`crate::inference::lifecycle::DeploymentRecord`), key
/// [`DEPLOYMENT_KEY`].
pub const MODEL_DEPLOYMENT: TableDefinition<&str, &[u8]> = TableDefinition::new("model_deployment");
/// The human review queue ([`crate::alerts::review`]).
pub const REVIEW_QUEUE: TableDefinition<u64, &[u8]> = TableDefinition::new("review_queue");
/// The one row of [`MODEL_DEPLOYMENT`].
pub const DEPLOYMENT_KEY: &str = "current";

/// `meta` key: the next ingest seq to assign (seqs start at 1).
pub const NEXT_SEQ: &str = "next_ingest_seq";
/// `meta` key: the next DLQ id to assign.
pub const NEXT_DLQ_ID: &str = "next_dlq_id";
/// `meta` key: the next review queue id to assign.
pub const NEXT_REVIEW_ID: &str = "next_review_id";
/// `meta` key: the next audit id to assign.
pub const NEXT_AUDIT_ID: &str = "next_audit_id";

/// Page cache for redb. Small on purpose: the agent's working set lives in memory in the
/// pipeline; redb is written far more than it is read.
const CACHE_BYTES: usize = 1 << 20;

/// A storage failure, with what the agent was doing.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create data directory {path}: {source}")]
    DataDir { path: String, source: std::io::Error },
    #[error("cannot open {path}: {source} (is another vigil process using this data_dir?)")]
    Open { path: String, source: redb::DatabaseError },
    #[error("database error while {doing}: {source}")]
    Db { doing: &'static str, source: redb::Error },
    #[error("corrupt {table} row {key}: {detail}")]
    Corrupt { table: &'static str, key: String, detail: String },
    #[error("outbox: {0}")]
    Outbox(#[from] cloud_uplink::OutboxError),
}

/// Adds "while doing X" to any redb error.
pub trait DbContext<T> {
    fn doing(self, doing: &'static str) -> Result<T, StoreError>;
}

impl<T, E: Into<redb::Error>> DbContext<T> for Result<T, E> {
    fn doing(self, doing: &'static str) -> Result<T, StoreError> {
        self.map_err(|e| StoreError::Db { doing, source: e.into() })
    }
}

/// Opens (creating if needed) `<data_dir>/state.redb` and its tables.
pub fn open(data_dir: &Path) -> Result<Arc<Database>, StoreError> {
    std::fs::create_dir_all(data_dir)
        .map_err(|source| StoreError::DataDir { path: data_dir.display().to_string(), source })?;
    let path = data_dir.join("state.redb");
    let db = Database::builder()
        .set_cache_size(CACHE_BYTES)
        .create(&path)
        .map_err(|source| StoreError::Open { path: path.display().to_string(), source })?;
    let txn = db.begin_write().doing("creating tables")?;
    {
        txn.open_table(META).doing("creating tables")?;
        txn.open_table(JOURNAL).doing("creating tables")?;
        txn.open_table(DLQ).doing("creating tables")?;
        txn.open_table(ENTITY_STATE).doing("creating tables")?;
        txn.open_table(ASSET_STATE).doing("creating tables")?;
        txn.open_table(FEATURES).doing("creating tables")?;
        txn.open_table(ALERT_STATE).doing("creating tables")?;
        txn.open_table(AUDIT).doing("creating tables")?;
        txn.open_table(ALERT_ACK).doing("creating tables")?;
        txn.open_table(MODEL_DEPLOYMENT).doing("creating tables")?;
        txn.open_table(REVIEW_QUEUE).doing("creating tables")?;
    }
    txn.commit().doing("creating tables")?;
    Ok(Arc::new(db))
}

/// CBOR encoding for rows. Serialising our own types into a `Vec` cannot fail (no I/O, no
/// non-string map keys), so the error branch only guards future type changes.
pub fn to_cbor<T: serde::Serialize>(value: &T) -> Vec<u8> {
    let mut buf = Vec::with_capacity(128);
    if let Err(e) = ciborium::ser::into_writer(value, &mut buf) {
        tracing::error!(error = %e, "CBOR encoding of an internal row failed");
    }
    buf
}

pub fn from_cbor<T: serde::de::DeserializeOwned>(
    table: &'static str,
    key: impl std::fmt::Display,
    bytes: &[u8],
) -> Result<T, StoreError> {
    ciborium::de::from_reader(bytes).map_err(|e| StoreError::Corrupt {
        table,
        key: key.to_string(),
        detail: e.to_string(),
    })
}

/// Reads a `meta` counter in a write transaction (0 if absent).
pub fn meta_get(table: &redb::Table<&str, u64>, key: &str) -> Result<u64, StoreError> {
    Ok(table.get(key).doing("reading meta")?.map(|g| g.value()).unwrap_or(0))
}

/// All DLQ entries with id >= `from`, at most `limit`, for `vigil dlq list`.
pub fn dlq_entries(db: &Database, from: u64, limit: usize) -> Result<Vec<(u64, DlqEntry)>, StoreError> {
    let txn = db.begin_read().doing("reading the DLQ")?;
    let table = txn.open_table(DLQ).doing("reading the DLQ")?;
    let mut out = Vec::new();
    for row in table.range(from..).doing("reading the DLQ")?.take(limit) {
        let (k, v) = row.doing("reading the DLQ")?;
        out.push((k.value(), from_cbor("dlq", k.value(), v.value())?));
    }
    Ok(out)
}

/// Every audit entry (oldest first), for `vigil audit`.
pub fn audit_entries(db: &Database) -> Result<Vec<(u64, crate::ingest::modbus::writeback::WriteAudit)>, StoreError> {
    let txn = db.begin_read().doing("reading the audit log")?;
    let table = txn.open_table(AUDIT).doing("reading the audit log")?;
    let mut out = Vec::new();
    for row in table.iter().doing("reading the audit log")? {
        let (k, v) = row.doing("reading the audit log")?;
        out.push((k.value(), from_cbor("audit", k.value(), v.value())?));
    }
    Ok(out)
}
