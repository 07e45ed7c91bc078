//! What goes into the outbox, per record kind (`[uplink.policy]`).
//!
//! # Design constraints
//!
//! - **The policy decides what is uplinked, never what is kept.** Every reading is committed to
//!   the journal before its source is acknowledged whatever the policy says; the policy only
//!   chooses which records the commit log appends to the outbox. Alerts, DLQ records and
//!   heartbeats are always appended.
//! - **`reading = "around_alerts"` needs readings from before the alert.** A reading is
//!   *held* (table `held_readings`, in the same group commit as its journal entry) until it is
//!   known whether an alert needs it. When the alert stage raises an alert on the window ending
//!   at `T`, every held reading of that entity in `[T − window size − alert_before_ms,
//!   T + alert_after_ms]` moves to the outbox in the same transaction as the alert record, and
//!   the span is remembered (table `uplink_release`) so readings of it arriving later go
//!   straight to the outbox. A held reading is deleted once the entity's windows have been
//!   scored past `t + window size + alert_before_ms`: no later alert can reach back to it. Both
//!   decisions ride on committed scores and alerts, not on clocks, so a backlog or a restart
//!   cannot drop a reading an alert needs.
//! - Readings of an entity that is never scored (still in model warm-up) stay held until it is.
//!   A multivariate model scores assets, not entities: the agent refuses `around_alerts` with
//!   one ([`crate::agent::asset_routing`]).
//! - When the agent starts with another reading policy, readings still held from an
//!   `around_alerts` run are settled first ([`settle_held`]): appended under `always`, deleted
//!   under `never`.

use std::collections::HashMap;

use cloud_uplink::{AlertState, Appender, Body};
use redb::{Database, Durability, ReadableTable, ReadableTableMetadata, Table, TableDefinition, WriteTransaction};

use crate::config::{Config, KindPolicy, ReadingPolicy};
use crate::reading::Reading;
use crate::store::{self, DbContext, StoreError};

/// Readings waiting for an alert: `(entity, event time, ingest seq)` → CBOR [`Reading`].
pub const HELD_READINGS: TableDefinition<(&str, i64, u64), &[u8]> = TableDefinition::new("held_readings");
/// Per entity, the latest alert span `[from, until]` (event time, ms) as CBOR `(i64, i64)`.
pub const UPLINK_RELEASE: TableDefinition<&str, &[u8]> = TableDefinition::new("uplink_release");

/// `[uplink.policy]` with the window size it needs.
#[derive(Debug, Clone, Copy)]
pub struct UplinkPolicy {
    pub reading: ReadingPolicy,
    pub score: KindPolicy,
    pub aggregate: KindPolicy,
    pub session: KindPolicy,
    pub before_ms: i64,
    pub after_ms: i64,
    /// Sliding window size: an alert on the window ending at `T` is about `[T − size, T)`.
    pub window_ms: i64,
}

impl UplinkPolicy {
    pub fn new(config: &Config) -> UplinkPolicy {
        let p = &config.uplink.policy;
        UplinkPolicy {
            reading: p.reading,
            score: p.score,
            aggregate: p.aggregate,
            session: p.session,
            before_ms: p.alert_before_ms as i64,
            after_ms: p.alert_after_ms as i64,
            window_ms: config.pipeline.window.size_ms as i64,
        }
    }
}

/// Appends to the outbox inside one write transaction, as the policy says.
pub struct PolicyWriter<'t> {
    policy: UplinkPolicy,
    outbox: Appender<'t>,
    held: Table<'t, (&'static str, i64, u64), &'static [u8]>,
    release: Table<'t, &'static str, &'static [u8]>,
    /// Per entity: held readings before this event time can go (applied in [`Self::finish`]).
    prune: HashMap<String, i64>,
}

impl<'t> PolicyWriter<'t> {
    pub fn new(policy: UplinkPolicy, outbox: Appender<'t>, txn: &'t WriteTransaction) -> Result<PolicyWriter<'t>, StoreError> {
        Ok(PolicyWriter {
            policy,
            outbox,
            held: txn.open_table(HELD_READINGS).doing("opening held_readings")?,
            release: txn.open_table(UPLINK_RELEASE).doing("opening uplink_release")?,
            prune: HashMap::new(),
        })
    }

    /// The outbox itself, for records the policy does not govern (dead letters).
    pub fn outbox(&mut self) -> &mut Appender<'t> {
        &mut self.outbox
    }

    /// A committed reading: appended, held or neither.
    pub fn reading(&mut self, r: &Reading) -> Result<(), StoreError> {
        match self.policy.reading {
            ReadingPolicy::Always => {
                self.outbox.append(r.event_time_ms, crate::commit_log::reading_body(r))?;
            }
            ReadingPolicy::Never => {}
            ReadingPolicy::AroundAlerts => {
                let span = match self.release.get(r.entity.as_str()).doing("reading uplink_release")? {
                    Some(v) => Some(store::from_cbor::<(i64, i64)>("uplink_release", r.entity.as_str(), v.value())?),
                    None => None,
                };
                if span.is_some_and(|(from, until)| (from..=until).contains(&r.event_time_ms)) {
                    self.outbox.append(r.event_time_ms, crate::commit_log::reading_body(r))?;
                } else {
                    self.held
                        .insert((r.entity.as_str(), r.event_time_ms, r.seq), store::to_cbor(r).as_slice())
                        .doing("holding a reading")?;
                }
            }
        }
        Ok(())
    }

    /// A record of the alert stage (score, alert, aggregate, session).
    pub fn record(&mut self, event_time_ms: i64, body: &Body) -> Result<(), StoreError> {
        let around = self.policy.reading == ReadingPolicy::AroundAlerts;
        let wanted = match body {
            Body::Score { entity, window_end_ms, .. } => {
                if around {
                    let cutoff = window_end_ms - self.policy.window_ms - self.policy.before_ms;
                    let slot = self.prune.entry(entity.clone()).or_insert(cutoff);
                    *slot = (*slot).max(cutoff);
                }
                self.policy.score
            }
            // A candidate's scores travel like the scores they are compared with.
            Body::ShadowScore { .. } => self.policy.score,
            Body::Aggregate { .. } => self.policy.aggregate,
            Body::Session { .. } => self.policy.session,
            Body::Alert { entity, state: AlertState::Raised, .. } => {
                if around {
                    self.release_around(entity, event_time_ms)?;
                }
                KindPolicy::Always
            }
            _ => KindPolicy::Always,
        };
        if wanted == KindPolicy::Always {
            self.outbox.append(event_time_ms, body.clone())?;
        }
        Ok(())
    }

    /// Moves the held readings around an alert on the window ending at `end_ms` to the outbox
    /// and remembers the span for readings still to come.
    fn release_around(&mut self, entity: &str, end_ms: i64) -> Result<(), StoreError> {
        let p = self.policy;
        let (mut from, until) = (end_ms - p.window_ms - p.before_ms, end_ms + p.after_ms);
        if let Some(v) = self.release.get(entity).doing("reading uplink_release")? {
            let (old_from, old_until) = store::from_cbor::<(i64, i64)>("uplink_release", entity, v.value())?;
            if old_until >= from {
                from = from.min(old_from);
            }
        }
        let mut readings: Vec<Reading> = Vec::new();
        for row in self.held.extract_from_if((entity, from, 0)..=(entity, until, u64::MAX), |_, _| true).doing("releasing held readings")? {
            let (k, v) = row.doing("releasing held readings")?;
            readings.push(store::from_cbor("held_readings", k.value().2, v.value())?);
        }
        for r in &readings {
            self.outbox.append(r.event_time_ms, crate::commit_log::reading_body(r))?;
        }
        self.release.insert(entity, store::to_cbor(&(from, until)).as_slice()).doing("writing uplink_release")?;
        Ok(())
    }

    /// Deletes the held readings no alert can need any more.
    pub fn finish(mut self) -> Result<(), StoreError> {
        for (entity, cutoff) in std::mem::take(&mut self.prune) {
            self.held.retain_in((entity.as_str(), i64::MIN, 0)..(entity.as_str(), cutoff, 0), |_, _| false).doing("pruning held readings")?;
        }
        Ok(())
    }
}

/// At start-up: readings held by an earlier `around_alerts` run, when the policy is no longer
/// `around_alerts`, are appended to the outbox (`always`) or deleted (`never`), in one
/// transaction. Returns how many there were.
pub fn settle_held(db: &Database, outbox: &cloud_uplink::Outbox, policy: UplinkPolicy) -> Result<u64, StoreError> {
    if policy.reading == ReadingPolicy::AroundAlerts {
        return Ok(0);
    }
    let mut txn = db.begin_write().doing("settling held readings")?;
    txn.set_durability(Durability::Immediate).doing("settling held readings")?;
    let settled = {
        let mut held = txn.open_table(HELD_READINGS).doing("settling held readings")?;
        let n = held.len().doing("settling held readings")?;
        if n > 0 && policy.reading == ReadingPolicy::Always {
            let mut appender = outbox.appender(&txn)?;
            for row in held.iter().doing("settling held readings")? {
                let (k, v) = row.doing("settling held readings")?;
                let r: Reading = store::from_cbor("held_readings", k.value().2, v.value())?;
                appender.append(r.event_time_ms, crate::commit_log::reading_body(&r))?;
            }
        }
        held.retain(|_, _| false).doing("settling held readings")?;
        txn.open_table(UPLINK_RELEASE).doing("settling held readings")?.retain(|_, _| false).doing("settling held readings")?;
        n
    };
    txn.commit().doing("settling held readings")?;
    if settled > 0 {
        tracing::info!(readings = settled, policy = ?policy.reading, "settled readings held by an earlier around_alerts run");
    }
    Ok(settled)
}
