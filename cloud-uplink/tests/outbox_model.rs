//! Model-based property test of the outbox (in the style of Vector's disk buffer `tests/model/`):
//! random sequences of append / deliver (ok, failed, ok-then-crash before the cursor commit) /
//! crash-reopen under quota pressure, against a simple in-memory model of what each sink must
//! get. Two sinks: `all` wants every kind, `urgent` only alerts and scores.
//!
//! Checked after every step and at the end:
//! * a delivered batch is the highest-priority kind with records pending for that sink, in seq
//!   order, starting right after the sink's last confirmed record of that kind (so nothing is
//!   skipped and nothing confirmed is offered again);
//! * redelivery happens only for records delivered but never confirmed (a crash in between);
//! * at the end, after draining every sink: every appended record of a kind a sink wants was
//!   delivered to it, except dropped readings/heartbeats; alerts, scores and DLQ records are
//!   never dropped; the drop counters equal the records that never arrived; the outbox is empty.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use cloud_uplink::{
    AlertState, BatchLimits, Body, ClassSet, ModelRef, Outbox, OutboxConfig, Quality, QuotaPolicy, RecordClass,
};
use proptest::prelude::*;
use redb::Database;

#[derive(Debug, Clone)]
enum Op {
    Append(RecordClass, u8),
    Deliver { sink: usize, outcome: Outcome },
    CrashReopen,
}

#[derive(Debug, Clone, Copy)]
enum Outcome {
    Ok,
    Fail,
    OkThenCrash,
}

fn class() -> impl Strategy<Value = RecordClass> {
    prop_oneof![
        1 => Just(RecordClass::Alert),
        2 => Just(RecordClass::Score),
        1 => Just(RecordClass::Dlq),
        5 => Just(RecordClass::Reading),
        1 => Just(RecordClass::Heartbeat),
        1 => Just(RecordClass::Aggregate),
        1 => Just(RecordClass::Session),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (class(), 1u8..12).prop_map(|(c, n)| Op::Append(c, n)),
        4 => (0usize..2, prop_oneof![6 => Just(Outcome::Ok), 2 => Just(Outcome::Fail), 1 => Just(Outcome::OkThenCrash)])
            .prop_map(|(sink, outcome)| Op::Deliver { sink, outcome }),
        1 => Just(Op::CrashReopen),
    ]
}

fn body(class: RecordClass, i: u64) -> Body {
    let model = ModelRef { name: "m".into(), version: "1".into(), sha256: "00".repeat(32) };
    match class {
        RecordClass::Reading => Body::Reading {
            entity: format!("s{}", i % 4),
            value: i as f64,
            quality: Quality::Good,
            source: "mqtt:t".into(),
            ingest_time_ms: i as i64,
            source_seq: None,
        },
        RecordClass::Score => Body::Score { entity: "e".into(), window_end_ms: i as i64, score: 0.1, error: None, band: "normal".into(), model },
        RecordClass::Alert => Body::Alert {
            entity: "e".into(),
            state: AlertState::Raised,
            band: "alert".into(),
            score: 0.9,
            model,
            message: "m".into(),
        },
        RecordClass::Dlq => Body::Dlq {
            id: format!("d{i}"),
            source: "mqtt".into(),
            topic: None,
            reason: "undecodable".into(),
            raw: cloud_uplink::Bytes(vec![1, 2, 3]),
            received_ms: i as i64,
        },
        RecordClass::Heartbeat => Body::Heartbeat { uptime_s: i, counters: BTreeMap::new() },
        RecordClass::Aggregate => Body::Aggregate { entity: "e".into(), window_start_ms: i as i64, size_ms: 1000, version: 1, stats: stats(i) },
        RecordClass::Session => Body::Session {
            entity: "e".into(),
            start_ms: i as i64,
            end_ms: i as i64 + 10,
            duration_ms: 10,
            stats: stats(i),
            max_score: Some(0.5),
            alerts: Vec::new(),
        },
    }
}

fn stats(i: u64) -> cloud_uplink::Stats {
    let v = i as f64;
    cloud_uplink::Stats { count: 1, mean: v, min: v, max: v, std: 0.0, first: v, last: v, quantiles: vec![cloud_uplink::Quantile { q: 0.5, value: v }] }
}

const SINKS: [&str; 2] = ["all", "urgent"];

fn wants(sink: usize) -> ClassSet {
    if sink == 0 {
        ClassSet::ALL
    } else {
        ClassSet::of(&[RecordClass::Alert, RecordClass::Score])
    }
}

fn config() -> OutboxConfig {
    OutboxConfig {
        // Tight: quota pressure appears within a few dozen records.
        quota_bytes: 12_000,
        alert_reserve_bytes: 2_000,
        quota_policy: QuotaPolicy::DropOldestReadings,
        ..OutboxConfig::default()
    }
}

fn limits() -> BatchLimits {
    BatchLimits { max_records: 5, max_bytes: 1 << 20, linger: std::time::Duration::ZERO }
}

fn open(path: &Path) -> Outbox {
    let db = Arc::new(Database::create(path).unwrap());
    let ob = Outbox::open(db, "model".into(), config()).unwrap();
    for (i, name) in SINKS.iter().enumerate() {
        ob.register_sink(name, wants(i)).unwrap();
    }
    ob
}

/// What a sink has seen.
#[derive(Default)]
struct SinkModel {
    /// Highest confirmed seq per class.
    confirmed: BTreeMap<RecordClass, u64>,
    /// Records delivered at least once (confirmed or not).
    delivered: BTreeSet<u64>,
    /// Delivered but not confirmed (a crash came in between): may be offered again.
    unconfirmed: BTreeSet<u64>,
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox.redb");
    let mut ob = Some(open(&path));
    let mut appended: BTreeMap<u64, RecordClass> = BTreeMap::new();
    let mut sinks: Vec<SinkModel> = (0..2).map(|_| SinkModel::default()).collect();
    let mut counter = 0u64;

    let step = |ob: &Outbox, sinks: &mut Vec<SinkModel>, appended: &BTreeMap<u64, RecordClass>, i: usize, confirm: bool| -> Result<bool, TestCaseError> {
        let Some((class, batch)) = ob.next_batch(SINKS[i], wants(i), limits()).unwrap() else {
            return Ok(false);
        };
        let m = &mut sinks[i];
        prop_assert!(wants(i).contains(class));
        let seqs: Vec<u64> = batch.iter().map(|r| r.seq).collect();
        prop_assert!(!seqs.is_empty() && seqs.windows(2).all(|w| w[0] < w[1]), "batch in seq order: {seqs:?}");
        let after = m.confirmed.get(&class).copied().unwrap_or(0);
        prop_assert!(seqs[0] > after, "{class} seq {} offered again after confirming {after}", seqs[0]);
        for &s in &seqs {
            prop_assert_eq!(appended.get(&s), Some(&class), "seq {} was appended as {}", s, class);
            prop_assert!(!m.delivered.contains(&s) || m.unconfirmed.contains(&s), "seq {s} redelivered although confirmed");
        }
        // Priority: no record of a higher-priority class the sink wants is pending. Readings and
        // heartbeats are skipped here: the quota may have dropped them without the model
        // knowing which.
        for (&s, &c) in appended.iter() {
            let droppable = matches!(c, RecordClass::Reading | RecordClass::Heartbeat);
            if !droppable && wants(i).contains(c) && c.priority() < class.priority() && s > m.confirmed.get(&c).copied().unwrap_or(0) {
                prop_assert!(false, "{class} batch while {c} seq {s} is pending");
            }
        }
        m.delivered.extend(seqs.iter().copied());
        if confirm {
            ob.confirm(SINKS[i], class, *seqs.last().unwrap()).unwrap();
            m.confirmed.insert(class, *seqs.last().unwrap());
            for s in &seqs {
                m.unconfirmed.remove(s);
            }
        } else {
            m.unconfirmed.extend(seqs.iter().copied());
        }
        Ok(true)
    };

    for op in ops {
        match op {
            Op::Append(class, n) => {
                let records: Vec<(i64, Body)> = (0..n)
                    .map(|_| {
                        counter += 1;
                        (counter as i64, body(class, counter))
                    })
                    .collect();
                match ob.as_ref().unwrap().append_batch(records) {
                    Ok(seqs) => {
                        for s in seqs {
                            appended.insert(s, class);
                        }
                    }
                    // All or nothing: a batch that does not fit is not appended at all.
                    Err(e) => prop_assert!(e.is_backpressure(), "append failed: {e}"),
                }
            }
            Op::Deliver { sink, outcome } => {
                let confirm = matches!(outcome, Outcome::Ok);
                // A failed delivery leaves its records "unconfirmed" in the model: they may (must)
                // be offered again.
                step(ob.as_ref().unwrap(), &mut sinks, &appended, sink, confirm)?;
                if matches!(outcome, Outcome::OkThenCrash) {
                    drop(ob.take()); // close the database (a crash: nothing else is flushed) before reopening
                    ob = Some(open(&path));
                }
            }
            Op::CrashReopen => {
                drop(ob.take()); // close the database (a crash: nothing else is flushed) before reopening
                ob = Some(open(&path));
            }
        }
    }

    // Drain everything.
    let ob = ob.unwrap();
    for i in 0..2 {
        while step(&ob, &mut sinks, &appended, i, true)? {}
    }
    let stats = ob.stats().unwrap();
    for class in RecordClass::ALL {
        let of_class: Vec<u64> = appended.iter().filter(|(_, &c)| c == class).map(|(&s, _)| s).collect();
        let missing = of_class.iter().filter(|s| !sinks[0].delivered.contains(s)).count() as u64;
        let dropped = stats.class(class).dropped;
        // Every record that never arrived was counted as dropped (a dropped record may also
        // have been delivered once without confirmation, hence <=).
        prop_assert!(missing <= dropped, "{} records of {} never delivered to `all`, only {} counted as dropped", missing, class, dropped);
        if !matches!(class, RecordClass::Reading | RecordClass::Heartbeat) {
            prop_assert_eq!(dropped, 0, "{} records dropped", class);
            for s in &of_class {
                if wants(1).contains(class) {
                    prop_assert!(sinks[1].delivered.contains(s), "`urgent` never got {} seq {}", class, s);
                }
            }
        }
        prop_assert_eq!(stats.class(class).records, 0, "{} records left after every sink confirmed", class);
        prop_assert_eq!(stats.class(class).bytes, 0);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn outbox_matches_its_model(ops in prop::collection::vec(op(), 1..80)) {
        run(ops)?;
    }
}
