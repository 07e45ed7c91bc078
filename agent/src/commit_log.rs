//! The commit log: where every input becomes durable before anything acknowledges it.
//!
//! # Design constraints
//!
//! - **Nothing acknowledged is lost.** A source (e.g. the MQTT client with manual acks) hands
//!   over an [`IngestBatch`] with an `on_commit` callback; the callback runs only after the
//!   write transaction holding the batch's readings (journal + outbox) and dead letters (DLQ +
//!   outbox) has committed with `Durability::Immediate`.
//! - **Group commit.** One dedicated thread owns all of the agent's write transactions. It takes
//!   everything queued — ingest batches, worker checkpoints, scores and alerts — into one
//!   transaction, so the fsync cost is shared by many readings. `pipeline.commit_interval_ms`
//!   optionally lets it wait to fill bigger groups.
//! - **No deadlock between stages.** Ingest arrives on a bounded channel (backpressure to the
//!   sources); pipeline-internal writes arrive on an unbounded channel that is always served
//!   first. Internal producers are bounded upstream by the bounded ingest channel and the
//!   bounded worker/inference queues, so the unbounded channel cannot grow without limit.
//!
//! - **Control requests never hold up shutdown.** Requests from the HTTP API (DLQ replay,
//!   alert acknowledgements, review labels) come
//!   on a third channel ([`Control`]) that the thread serves with the internal writes but never
//!   waits for: the API may outlive the pipeline, and a request still queued when the commit
//!   log stops is answered by its dropped reply channel ("the agent is stopping").
//! - **Replay is one transaction.** A DLQ replay removes the dead letters that decode now and
//!   commits their readings (journal + outbox) in the same group commit, then routes them to the
//!   workers like any ingest: no dead letter is both gone and not a reading, none is replayed
//!   twice ([`replay_dead_letters`]).
//!
//! # Recovery
//!
//! Every committed reading gets the next ingest seq and is stored in the `journal` table. After
//! the commit, readings are routed to workers with the highest committed seq (`through`). Workers
//! checkpoint entity state stamped with the seq through which it is complete; a checkpoint
//! travels behind the worker's windows through inference and the alert stage
//! ([`crate::pipeline::Stage`]), so it is committed with or after the scores of every window
//! its state counts as emitted — a crash cannot lose those windows' scores. The journal is
//! trimmed below the smallest `through` of every worker's latest checkpoint in this run. At start
//! the whole remaining journal is routed to the workers again; each entity skips the readings its
//! restored state already contains ([`crate::pipeline::window::EntityWindows::applied_through`]).
//! The alert stage likewise skips windows it already evaluated, so a kill -9 neither loses nor
//! duplicates scores and alerts.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cloud_uplink::{Body, Outbox};
use crossbeam_channel::{select_biased, Receiver, RecvTimeoutError, Sender, TryRecvError};
use redb::{Database, Durability, ReadableDatabase, ReadableTable};

use crate::dlq::{DlqEntry, Redecoded, Redecoder};
use crate::ingest::IngestBatch;
use crate::metrics::Metrics;
use crate::pipeline::features::Features;
use crate::pipeline::asset::Routing;
use crate::pipeline::WorkerMsg;
use crate::reading::Reading;
use crate::store::{self, DbContext, StoreError};
use crate::uplink_policy::{PolicyWriter, UplinkPolicy};

/// Window state of the entities one worker changed, complete through commit-log seq `through`.
pub struct Checkpoint {
    pub worker: usize,
    pub through: u64,
    /// `(entity, CBOR EntityWindows, latest features)`.
    pub rows: Vec<(String, Vec<u8>, Option<Features>)>,
    /// `(asset, CBOR AssetWindows)`.
    pub asset_rows: Vec<(String, Vec<u8>)>,
}

/// Outputs of the alert stage, committed together so they are exactly-once across restarts.
pub struct Outputs {
    /// `(event time, record)` for the outbox: scores, alerts, review events.
    pub records: Vec<(i64, Body)>,
    /// `(entity, CBOR alert state)` rows.
    pub alert_states: Vec<(String, Vec<u8>)>,
}

/// Writes from inside the pipeline (served before ingest).
pub enum InternalWrite {
    Checkpoint(Checkpoint),
    Outputs(Outputs),
    DeadLetters(Vec<DlqEntry>),
    /// Modbus write-back decisions for the `audit` table.
    Audit(Vec<crate::ingest::modbus::writeback::WriteAudit>),
    /// A model lifecycle change (inference stage): the new CBOR deployment state for
    /// `model_deployment` and its `model_event` records, committed together.
    Deployment { state: Vec<u8>, records: Vec<(i64, Body)> },
}

/// Requests from outside the pipeline (the HTTP API), answered after the commit.
pub enum Control {
    /// Decode dead letters again (all, or the one with this id) and commit what decodes now.
    ReplayDlq { only: Option<u64>, reply: tokio::sync::oneshot::Sender<ReplayOutcome> },
    /// Persist the acknowledgement of `entity`'s open alert; the reply says it is committed.
    Acknowledge { entity: String, ack: crate::alerts::Acknowledgement, reply: tokio::sync::oneshot::Sender<()> },
    /// Label review queue item `id` and append its `review_label` record; the reply carries the
    /// labelled item, `None` for an unknown id.
    Label { id: u64, label: crate::alerts::review::Label, reply: tokio::sync::oneshot::Sender<Option<crate::alerts::review::ReviewItem>> },
}

/// What a DLQ replay did.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ReplayOutcome {
    /// Dead letters that decoded and were removed from the DLQ.
    pub replayed: u64,
    /// Readings they became (a message may hold several).
    pub readings: u64,
    /// Dead letters still rejected (kept, with their new reason).
    pub still_rejected: u64,
    /// Dead letters that cannot be decoded again (late readings, Modbus replies): kept.
    pub kept: u64,
}

/// Most readings in one group commit; bounds transaction size and the latency of the group.
const MAX_GROUP_READINGS: usize = 2048;
/// Most journal seqs trimmed per commit.
const TRIM_STEP: u64 = 4096;
/// Group commits slower than this are logged (debug).
const SLOW_COMMIT: Duration = Duration::from_millis(20);
/// How long to wait before retrying a group the outbox refused for its quota.
const BACKPRESSURE_RETRY: Duration = Duration::from_millis(100);

/// The commit-log thread's state.
pub struct CommitLog {
    pub db: Arc<Database>,
    pub outbox: Arc<Outbox>,
    pub ingest: Receiver<IngestBatch>,
    pub internal: Receiver<InternalWrite>,
    pub workers: Vec<Sender<WorkerMsg>>,
    /// Which worker handles which entity (asset channels go by their asset).
    pub routing: Arc<Routing>,
    pub metrics: Arc<Metrics>,
    pub commit_interval: Duration,
    /// Requests from the API; `crossbeam_channel::never()` when there is no API.
    pub control: Receiver<Control>,
    /// Decodes dead letters again for [`Control::ReplayDlq`].
    pub redecoder: Redecoder,
    /// Which records are appended to the outbox (`[uplink.policy]`).
    pub policy: UplinkPolicy,
    /// Most rows of the review queue (`alerts.review_queue_capacity`).
    pub review_capacity: u64,
}

/// What one group commit did.
struct Committed {
    /// The new highest committed ingest seq.
    through: u64,
    /// Journal seqs trimmed.
    journal_trimmed: u64,
    /// Readings replayed from the DLQ (with their seqs), routed after the commit.
    replayed: Vec<Reading>,
    /// One per [`Control::ReplayDlq`] request of the group, in order.
    outcomes: Vec<ReplayOutcome>,
    /// One per [`Control::Label`] request of the group, in order.
    labelled: Vec<Option<crate::alerts::review::ReviewItem>>,
    /// Unlabelled review items the queue bound dropped.
    review_dropped: u64,
}

#[derive(Default)]
struct Group {
    batches: Vec<IngestBatch>,
    readings: usize,
    internal: Vec<InternalWrite>,
    control: Vec<Control>,
}

impl Group {
    fn is_empty(&self) -> bool {
        self.batches.is_empty() && self.internal.is_empty() && self.control.is_empty()
    }
}

impl CommitLog {
    /// Runs until both channels are disconnected (sources stopped and the pipeline drained).
    /// Returns an error only for storage failures; the agent must then stop without acking.
    pub fn run(mut self) -> Result<(), StoreError> {
        let mut through = self.recover()?;
        let mut checkpoints: Vec<u64> = vec![0; self.workers.len()];
        let mut ingest_open = true;
        loop {
            let Some(group) = self.gather(&mut ingest_open) else { break };
            if !ingest_open && !self.workers.is_empty() && group.batches.is_empty() {
                // Sources are gone and everything they sent is routed: let workers drain and exit.
                self.workers.clear();
            }
            if group.is_empty() {
                continue;
            }
            // Events of the commit (backpressure, slow commits, dead letters, replays) carry
            // the seqs it assigns.
            let span = tracing::info_span!("commit", first_seq = through + 1, through = tracing::field::Empty);
            let _entered = span.enter();
            let (group, committed) = self.commit(group, &mut through, &mut checkpoints)?;
            span.record("through", through);
            self.after_commit(group, committed, through);
        }
        Ok(())
    }

    /// Re-routes the journal (readings not yet covered by a checkpoint) to the workers.
    fn recover(&mut self) -> Result<u64, StoreError> {
        let txn = self.db.begin_read().doing("reading the journal")?;
        let table = txn.open_table(store::JOURNAL).doing("reading the journal")?;
        let mut replayed = 0u64;
        let mut last = 0u64;
        let mut chunk: Vec<Reading> = Vec::with_capacity(1024);
        for row in table.iter().doing("reading the journal")? {
            let (k, v) = row.doing("reading the journal")?;
            let reading: Reading = store::from_cbor("journal", k.value(), v.value())?;
            last = k.value();
            chunk.push(reading);
            if chunk.len() == 1024 {
                replayed += chunk.len() as u64;
                self.route(std::mem::take(&mut chunk), last);
            }
        }
        replayed += chunk.len() as u64;
        self.route(chunk, last);
        let meta = txn.open_table(store::META).doing("reading meta")?;
        let next = meta.get(store::NEXT_SEQ).doing("reading meta")?.map(|g| g.value()).unwrap_or(1);
        if replayed > 0 {
            tracing::info!(replayed, "recovery: re-routed journal readings newer than the last checkpoint");
        }
        Ok(next.saturating_sub(1).max(last))
    }

    /// Waits for the first write, then takes everything else already queued (internal first).
    /// `None` when there is nothing left to do.
    fn gather(&mut self, ingest_open: &mut bool) -> Option<Group> {
        let mut group = Group::default();
        let first_wait = Duration::from_millis(200);
        // Block for the first item.
        if *ingest_open {
            select_biased! {
                recv(self.internal) -> m => if let Ok(w) = m {
                    group.internal.push(w);
                },
                recv(self.control) -> m => match m {
                    Ok(c) => group.control.push(c),
                    // The API is gone (or there is none): stop selecting on it.
                    Err(_) => self.control = crossbeam_channel::never(),
                },
                recv(self.ingest) -> m => match m {
                    Ok(b) => { group.readings += b.readings.len(); group.batches.push(b) }
                    Err(_) => *ingest_open = false,
                },
                default(first_wait) => {}
            }
        } else {
            match self.internal.recv_timeout(first_wait) {
                Ok(w) => group.internal.push(w),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return None,
            }
        }
        let deadline = Instant::now() + self.commit_interval;
        loop {
            while let Ok(w) = self.internal.try_recv() {
                group.internal.push(w);
            }
            while let Ok(c) = self.control.try_recv() {
                group.control.push(c);
            }
            while *ingest_open && group.readings < MAX_GROUP_READINGS {
                match self.ingest.try_recv() {
                    Ok(b) => {
                        group.readings += b.readings.len();
                        group.batches.push(b);
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => *ingest_open = false,
                }
            }
            let now = Instant::now();
            if now >= deadline || group.readings >= MAX_GROUP_READINGS || !*ingest_open {
                break;
            }
            // Wait for more until the commit interval is used up.
            match self.ingest.recv_timeout(deadline - now) {
                Ok(b) => {
                    group.readings += b.readings.len();
                    group.batches.push(b);
                }
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => *ingest_open = false,
            }
        }
        Some(group)
    }

    /// Writes one group in one transaction; retries while the outbox applies backpressure.
    fn commit(&self, mut group: Group, through: &mut u64, checkpoints: &mut [u64]) -> Result<(Group, Committed), StoreError> {
        loop {
            let started = Instant::now();
            match self.try_commit(&mut group, *through, checkpoints) {
                Ok(committed) => {
                    let journal_trimmed = committed.journal_trimmed;
                    *through = committed.through;
                    self.metrics.commits.inc();
                    let took = started.elapsed();
                    self.metrics.commit_time.record(took);
                    if took > SLOW_COMMIT {
                        let rows: usize = group.internal.iter().map(|w| match w {
                            InternalWrite::Checkpoint(c) => c.rows.len(),
                            InternalWrite::Outputs(o) => o.records.len(),
                            InternalWrite::DeadLetters(d) => d.len(),
                            InternalWrite::Audit(a) => a.len(),
                            InternalWrite::Deployment { records, .. } => records.len(),
                        }).sum();
                        tracing::debug!(ms = took.as_millis() as u64, readings = group.readings, internal_rows = rows, journal_trimmed, "slow group commit");
                    }
                    return Ok((group, committed));
                }
                Err(StoreError::Outbox(e)) if e.is_backpressure() => {
                    tracing::warn!(error = %e, "outbox full: holding input until sinks catch up");
                    std::thread::sleep(BACKPRESSURE_RETRY);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Assigns seqs to the group's readings (in `group`), writes everything, commits.
    /// On error nothing is committed.
    fn try_commit(&self, group: &mut Group, through: u64, checkpoints: &mut [u64]) -> Result<Committed, StoreError> {
        let mut txn = self.db.begin_write().doing("beginning a group commit")?;
        txn.set_durability(Durability::Immediate).doing("setting durability")?;
        let mut next_seq = through + 1;
        let mut pending_checkpoints: Vec<(usize, u64)> = Vec::new();
        let mut trimmed = 0u64;
        let (mut replayed, mut outcomes, mut labelled) = (Vec::new(), Vec::new(), Vec::new());
        let mut review_dropped = 0;
        {
            let mut meta = txn.open_table(store::META).doing("opening meta")?;
            let mut journal = txn.open_table(store::JOURNAL).doing("opening the journal")?;
            let mut dlq = txn.open_table(store::DLQ).doing("opening the DLQ")?;
            let mut entity_state = txn.open_table(store::ENTITY_STATE).doing("opening entity_state")?;
            let mut asset_state = txn.open_table(store::ASSET_STATE).doing("opening asset_state")?;
            let mut features = txn.open_table(store::FEATURES).doing("opening features")?;
            let mut alert_state = txn.open_table(store::ALERT_STATE).doing("opening alert_state")?;
            let mut audit = txn.open_table(store::AUDIT).doing("opening the audit log")?;
            let mut acks = txn.open_table(store::ALERT_ACK).doing("opening alert_ack")?;
            let mut deployment = txn.open_table(store::MODEL_DEPLOYMENT).doing("opening model_deployment")?;
            let mut review_queue = txn.open_table(store::REVIEW_QUEUE).doing("opening review_queue")?;
            let mut next_dlq = store::meta_get(&meta, store::NEXT_DLQ_ID)?.max(1);
            let first_audit = store::meta_get(&meta, store::NEXT_AUDIT_ID)?.max(1);
            let mut next_audit = first_audit;
            let mut outbox = PolicyWriter::new(self.policy, self.outbox.appender(&txn)?, &txn)?;
            type DlqTable<'t> = redb::Table<'t, u64, &'static [u8]>;
            let mut dead_letter = |dlq: &mut DlqTable<'_>, entry: &DlqEntry, outbox: &mut cloud_uplink::Appender<'_>| -> Result<(), StoreError> {
                let id = next_dlq;
                next_dlq += 1;
                tracing::debug!(dlq_id = id, reason = %entry.reason, topic = %entry.topic, "dead letter");
                dlq.insert(id, store::to_cbor(entry).as_slice()).doing("writing the DLQ")?;
                outbox.append(entry.received_ms, dlq_body(id, entry))?;
                Ok(())
            };

            for w in &group.internal {
                match w {
                    InternalWrite::Checkpoint(c) => {
                        for (entity, state, feats) in &c.rows {
                            entity_state.insert(entity.as_str(), state.as_slice()).doing("writing entity_state")?;
                            if let Some(f) = feats {
                                let json = serde_json::to_vec(f).unwrap_or_default();
                                features.insert(entity.as_str(), json.as_slice()).doing("writing features")?;
                            }
                        }
                        for (asset, state) in &c.asset_rows {
                            asset_state.insert(asset.as_str(), state.as_slice()).doing("writing asset_state")?;
                        }
                        pending_checkpoints.push((c.worker, c.through));
                    }
                    InternalWrite::Outputs(o) => {
                        for (entity, state) in &o.alert_states {
                            alert_state.insert(entity.as_str(), state.as_slice()).doing("writing alert_state")?;
                        }
                        for (event_time, body) in &o.records {
                            outbox.record(*event_time, body)?;
                            review_dropped += crate::alerts::review::enqueue(&mut review_queue, &mut meta, self.review_capacity, *event_time, body)?;
                        }
                    }
                    InternalWrite::DeadLetters(entries) => {
                        for entry in entries {
                            dead_letter(&mut dlq, entry, outbox.outbox())?;
                        }
                    }
                    InternalWrite::Audit(entries) => {
                        for entry in entries {
                            audit.insert(next_audit, store::to_cbor(entry).as_slice()).doing("writing the audit log")?;
                            next_audit += 1;
                        }
                    }
                    InternalWrite::Deployment { state, records } => {
                        deployment.insert(store::DEPLOYMENT_KEY, state.as_slice()).doing("writing model_deployment")?;
                        for (event_time, body) in records {
                            outbox.record(*event_time, body)?;
                        }
                    }
                }
            }
            // DLQ replays: after the pipeline's own dead letters, so a letter written in this
            // group is already in the table (ids only grow: no letter is replayed twice).
            let now = crate::reading::now_ms();
            for c in &group.control {
                match c {
                    Control::ReplayDlq { only, .. } => {
                        let outcome = replay_dead_letters(&self.redecoder, *only, now, &mut dlq, &mut journal, &mut outbox, &mut next_seq, &mut replayed)?;
                        outcomes.push(outcome);
                    }
                    Control::Acknowledge { entity, ack, .. } => {
                        acks.insert(entity.as_str(), store::to_cbor(ack).as_slice()).doing("writing alert_ack")?;
                    }
                    Control::Label { id, label, .. } => {
                        let done = crate::alerts::review::label(&mut review_queue, *id, label)?;
                        if let Some((item, body)) = done {
                            outbox.record(item.window_end_ms, &body)?;
                            labelled.push(Some(item));
                        } else {
                            labelled.push(None);
                        }
                    }
                }
            }
            for batch in group.batches.iter_mut() {
                for reading in batch.readings.iter_mut() {
                    reading.seq = next_seq;
                    next_seq += 1;
                    journal.insert(reading.seq, store::to_cbor(reading).as_slice()).doing("writing the journal")?;
                    outbox.reading(reading)?;
                }
                for entry in &batch.rejects {
                    dead_letter(&mut dlq, entry, outbox.outbox())?;
                }
            }
            outbox.finish()?;
            meta.insert(store::NEXT_SEQ, next_seq).doing("writing meta")?;
            meta.insert(store::NEXT_DLQ_ID, next_dlq).doing("writing meta")?;
            if next_audit != first_audit {
                meta.insert(store::NEXT_AUDIT_ID, next_audit).doing("writing meta")?;
            }

            // Journal trimming: below the oldest checkpoint of any worker in this run.
            let mut trial = checkpoints.to_vec();
            for (w, t) in &pending_checkpoints {
                if let Some(slot) = trial.get_mut(*w) {
                    *slot = (*slot).max(*t);
                }
            }
            let min = trial.iter().copied().min().unwrap_or(0);
            // A bounded step per commit: a big delete in one transaction stalls ingest (measured
            // 30-40 ms for 130 000 rows); commits are frequent, so small steps keep up.
            let first = journal.first().doing("trimming the journal")?.map(|(k, _)| k.value());
            if let Some(first) = first.filter(|&f| f <= min) {
                let upto = min.min(first + TRIM_STEP);
                journal.retain_in(first..=upto, |_, _| false).doing("trimming the journal")?;
                trimmed = upto - first + 1;
            }
        }
        txn.commit().doing("committing a group")?;
        for (w, t) in pending_checkpoints {
            if let Some(slot) = checkpoints.get_mut(w) {
                *slot = (*slot).max(t);
            }
        }
        Ok(Committed { through: next_seq - 1, journal_trimmed: trimmed, replayed, outcomes, labelled, review_dropped })
    }

    /// After a durable commit: acknowledge sources, wake sinks, route readings to workers.
    fn after_commit(&self, group: Group, committed: Committed, through: u64) {
        // Replayed readings have the group's lowest seqs: route them first.
        let mut readings = committed.replayed;
        readings.reserve(group.readings);
        let mut outcomes = committed.outcomes.into_iter();
        let mut labelled = committed.labelled.into_iter();
        self.metrics.review_queue_dropped.add(committed.review_dropped);
        // The requesters may have given up waiting; what they asked for is committed either way.
        for c in group.control {
            match c {
                Control::ReplayDlq { reply, .. } => {
                    let outcome = outcomes.next().unwrap_or_default();
                    self.metrics.dlq_replayed.add(outcome.replayed);
                    tracing::info!(replayed = outcome.replayed, readings = outcome.readings, still_rejected = outcome.still_rejected, kept = outcome.kept, "DLQ replayed");
                    let _ = reply.send(outcome);
                }
                Control::Acknowledge { reply, .. } => {
                    let _ = reply.send(());
                }
                Control::Label { reply, .. } => {
                    let item = labelled.next().flatten();
                    if item.is_some() {
                        self.metrics.review_labels.inc();
                    }
                    let _ = reply.send(item);
                }
            }
        }
        for w in &group.internal {
            if let InternalWrite::DeadLetters(entries) = w {
                entries.iter().for_each(|e| self.metrics.dlq.add(e.reason));
            }
        }
        for batch in group.batches {
            batch.rejects.iter().for_each(|e| self.metrics.dlq.add(e.reason));
            if let Some(ack) = batch.on_commit {
                ack();
            }
            readings.extend(batch.readings);
        }
        self.metrics.count_readings_in(readings.iter());
        self.metrics.commit_group_size.record_value(readings.len() as u64);
        self.outbox.notify();
        self.route(readings, through);
    }

    /// Sends readings to their workers, and every worker the committed `through` seq (also
    /// when it gets no reading: its checkpoints need it). A worker only disconnects when the
    /// agent is stopping, so send errors are ignored.
    fn route(&self, readings: Vec<Reading>, through: u64) {
        let mut per_worker: Vec<Vec<Reading>> = vec![Vec::new(); self.workers.len()];
        if per_worker.is_empty() {
            return;
        }
        for r in readings {
            let w = self.routing.worker_of(&r.entity, per_worker.len());
            per_worker[w].push(r);
        }
        for (tx, readings) in self.workers.iter().zip(per_worker) {
            let _ = tx.send(WorkerMsg::Readings { readings, through });
        }
    }
}

/// The uplinked form of a reading.
pub fn reading_body(r: &Reading) -> Body {
    Body::Reading {
        entity: r.entity.clone(),
        value: r.value,
        quality: match r.quality {
            crate::reading::Quality::Good => cloud_uplink::Quality::Good,
            crate::reading::Quality::Uncertain => cloud_uplink::Quality::Uncertain,
            crate::reading::Quality::Bad => cloud_uplink::Quality::Bad,
        },
        source: r.source.as_str().to_string(),
        ingest_time_ms: r.ingest_time_ms,
        source_seq: r.source_seq,
    }
}

/// The uplinked form of a dead letter.
pub fn dlq_body(id: u64, e: &DlqEntry) -> Body {
    Body::Dlq {
        id: id.to_string(),
        source: e.source.as_str().to_string(),
        topic: Some(e.topic.clone()),
        reason: format!("{}: {}", e.reason, e.detail),
        raw: cloud_uplink::Bytes(e.raw.clone()),
        received_ms: e.received_ms,
    }
}

/// Decodes the dead letters in `dlq` (all, or only id `only`) again with `redecoder`, inside the
/// caller's write transaction: each that decodes now is removed and its readings get the next
/// seqs (`next_seq`), go into the journal and the outbox, and are appended to `replayed`; each
/// still rejected is rewritten with its new reason; the rest stay as they are. Used by the
/// running agent's commit log and by `vigil dlq replay`.
#[allow(clippy::too_many_arguments)]
pub fn replay_dead_letters(
    redecoder: &Redecoder,
    only: Option<u64>,
    now: crate::reading::EpochMs,
    dlq: &mut redb::Table<'_, u64, &'static [u8]>,
    journal: &mut redb::Table<'_, u64, &'static [u8]>,
    outbox: &mut PolicyWriter<'_>,
    next_seq: &mut u64,
    replayed: &mut Vec<Reading>,
) -> Result<ReplayOutcome, StoreError> {
    let mut entries: Vec<(u64, DlqEntry)> = Vec::new();
    let range = match only {
        Some(id) => id..=id,
        None => 0..=u64::MAX,
    };
    for row in dlq.range(range).doing("replaying the DLQ")? {
        let (k, v) = row.doing("replaying the DLQ")?;
        entries.push((k.value(), store::from_cbor("dlq", k.value(), v.value())?));
    }
    let mut outcome = ReplayOutcome::default();
    for (id, mut entry) in entries {
        match redecoder.redecode(&entry, now) {
            Redecoded::Readings(readings) => {
                for mut reading in readings {
                    reading.seq = *next_seq;
                    *next_seq += 1;
                    journal.insert(reading.seq, store::to_cbor(&reading).as_slice()).doing("replaying the DLQ")?;
                    outbox.reading(&reading)?;
                    outcome.readings += 1;
                    replayed.push(reading);
                }
                dlq.remove(id).doing("replaying the DLQ")?;
                outcome.replayed += 1;
            }
            Redecoded::Rejected { reason, detail } => {
                if (reason, &detail) != (entry.reason, &entry.detail) {
                    entry.reason = reason;
                    entry.detail = detail;
                    dlq.insert(id, store::to_cbor(&entry).as_slice()).doing("replaying the DLQ")?;
                }
                outcome.still_rejected += 1;
            }
            Redecoded::NotReplayable => outcome.kept += 1,
        }
    }
    Ok(outcome)
}
