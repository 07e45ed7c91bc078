//! Tumbling-window aggregates and activity sessions end to end: readings over MQTT (Mosquitto)
//! → agent → `aggregate` / `session` records in the directory sink's files.
//!
//! - Tumbling: known input gives exact statistics; a reading late but within the allowed
//!   lateness emits a corrected version; one beyond it lands in the DLQ with reason `late`.
//!   The agent is killed (SIGKILL) between the two halves of the input: the state restored from
//!   redb carries on, and no aggregate is emitted twice.
//! - Sessions: a simulated machine cycles on and off; the agent is killed in the middle of a
//!   run; every session comes out exactly once with the right start, end and statistics.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use cloud_uplink::{AlertState, Body, Envelope, SessionAlert, Stats};
use support::*;
use vigil_test_harness::Mosquitto;

/// `(size, start offset, version, stats)` of `entity`'s aggregates, in outbox (seq) order.
fn aggregates(records: &[Envelope], entity: &str, t0: i64) -> Vec<(i64, i64, u32, Stats)> {
    records
        .iter()
        .filter_map(|e| match &e.body {
            Body::Aggregate { entity: en, window_start_ms, size_ms, version, stats } if en == entity => {
                Some((*size_ms, window_start_ms - t0, *version, stats.clone()))
            }
            _ => None,
        })
        .collect()
}

fn restart(pa: &mut PlantAgent, broker: &Mosquitto, id: &str) {
    pa.agent.kill_9().unwrap();
    let from = broker.log_line_count();
    pa.agent = spawn_agent(&pa.config);
    pa.agent.wait_for_line(|l| l.contains("MQTT connected"), Duration::from_secs(30)).expect("agent reconnects");
    wait_for_subacks(broker, from, &format!("vigil-{id}"), 1);
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * b.abs().max(1.0)
}

#[test]
fn tumbling_aggregates_are_exact_corrected_and_late_ones_dead_lettered() {
    let broker = Mosquitto::start(Default::default()).unwrap();
    let id = "aggregates";
    let mut pa = PlantAgent::start_with(&broker, id, |c| {
        c.replace("allowed_lateness_ms = 0", "allowed_lateness_ms = 2000")
            + "\n[pipeline.aggregate]\nsizes_ms = [1000, 4000]\nquantiles = [0.5]\n"
    });
    let t0 = (now_ms() - 60_000).div_euclid(4000) * 4000;
    let at = |pairs: &[(i64, f64)]| pairs.iter().map(|&(o, v)| (t0 + o, v)).collect::<Vec<_>>();

    // Windows of 1 s: [0, 1000) gets 1, 2, 3, 4; [1000, 2000) gets 10, 20; the reading at 2000
    // ends both (version 1). The watermark is then 0 (lateness 2 s).
    publish_series(&broker, "agg.a", &at(&[(0, 1.0), (250, 2.0), (500, 3.0), (750, 4.0), (1000, 10.0), (1500, 20.0), (2000, 5.0), (2500, 7.0)]));
    wait_for_outbox(&pa.outbox, Duration::from_secs(60), Some(&pa.agent), "the first two 1 s aggregates", |r| {
        aggregates(r, "agg.a", t0).iter().filter(|a| a.0 == 1000).count() >= 2
    });
    restart(&mut pa, &broker, id);

    // 900: late, but window [0, 1000) ends above the watermark (500): corrected, version 2.
    // 3500: the watermark passes 1000; window [2000, 3000) (5, 7) is emitted.
    // 100: window [0, 1000) is final now: too late, dead-lettered (it still fits the open 4 s
    // window [0, 4000), which counts it).
    // 4000: ends [3000, 4000) and the 4 s window.
    publish_series(&broker, "agg.a", &at(&[(900, 8.0), (3500, 1.0), (100, 99.0), (4000, 0.0)]));
    let records = wait_for_outbox(&pa.outbox, Duration::from_secs(60), Some(&pa.agent), "the 4 s aggregate and the late dead letter", |r| {
        aggregates(r, "agg.a", t0).iter().any(|a| a.0 == 4000) && r.iter().any(|e| matches!(&e.body, Body::Dlq { .. }))
    });
    assert_no_panic(&pa.agent);
    let records = dedup(records);
    let all = aggregates(&records, "agg.a", t0);
    let one_s: Vec<(i64, u32, u64, f64, f64, f64, f64, f64)> = all
        .iter()
        .filter(|a| a.0 == 1000)
        .map(|(_, s, v, st)| (*s, *v, st.count, st.mean, st.min, st.max, st.first, st.last))
        .collect();
    let expected = vec![
        (0, 1, 4, 2.5, 1.0, 4.0, 1.0, 4.0),
        (1000, 1, 2, 15.0, 10.0, 20.0, 10.0, 20.0),
        (0, 2, 5, 3.6, 1.0, 8.0, 1.0, 8.0),
        (2000, 1, 2, 6.0, 5.0, 7.0, 5.0, 7.0),
        (3000, 1, 1, 1.0, 1.0, 1.0, 1.0, 1.0),
    ];
    assert_eq!(one_s.len(), expected.len(), "1 s aggregates (each exactly once across the SIGKILL): {one_s:?}");
    for (got, want) in one_s.iter().zip(&expected) {
        assert_eq!((got.0, got.1, got.2), (want.0, want.1, want.2), "{got:?} vs {want:?}");
        assert!(close(got.3, want.3) && got.4 == want.4 && got.5 == want.5 && got.6 == want.6 && got.7 == want.7, "{got:?} vs {want:?}");
    }
    let first = &all.iter().find(|a| a.0 == 1000).unwrap().3;
    assert!(close(first.std, 1.25f64.sqrt()), "population std of 1..4: {}", first.std);
    // Median of 1, 2, 3, 4 (lower median) within the sketch's 1 % relative accuracy.
    assert_eq!(first.quantiles.len(), 1);
    assert!((first.quantiles[0].value - 2.0).abs() <= 0.02, "p50 {:?}", first.quantiles);
    // The 4 s window [0, 4000): every reading before 4000, the too-late 99 included.
    let four: Vec<&(i64, i64, u32, Stats)> = all.iter().filter(|a| a.0 == 4000).collect();
    assert_eq!(four.len(), 1, "{four:?}");
    assert_eq!((four[0].1, four[0].2, four[0].3.count, four[0].3.max), (0, 1, 11, 99.0));

    let dlq: Vec<(&str, &str)> = records
        .iter()
        .filter_map(|e| match &e.body {
            Body::Dlq { reason, topic, .. } => Some((reason.as_str(), topic.as_deref().unwrap_or(""))),
            _ => None,
        })
        .collect();
    assert_eq!(dlq.len(), 1, "{dlq:?}");
    assert!(dlq[0].0.starts_with("late: ") && dlq[0].0.contains("[1000]") && dlq[0].1 == "agg.a", "{dlq:?}");
}

#[test]
fn machine_sessions_survive_a_restart_in_the_middle_of_a_run() {
    let broker = Mosquitto::start(Default::default()).unwrap();
    let id = "sessions";
    let mut pa = PlantAgent::start_with(&broker, id, |c| {
        c + "\n[pipeline.session]\nentities = [\"machine.*\"]\nabove = 5.0\ngap_ms = 4000\n"
    });
    let t0 = (now_ms() - 600_000).div_euclid(4000) * 4000;
    // One reading per second. Runs (current above 5 A): [10 s, 40 s] with a 2 s dip at 25-26 s
    // (3 s between active readings, shorter than the 4 s gap: same run), [60 s, 90 s], [120 s, 150 s]; idle (0.5 A) otherwise.
    let current = |s: i64| -> f64 {
        let run = (10..=40).contains(&s) || (60..=90).contains(&s) || (120..=150).contains(&s);
        if run && !(25..=26).contains(&s) { 10.0 + (s % 3) as f64 } else { 0.5 }
    };
    let series: Vec<(i64, f64)> = (0..=200).map(|s| (t0 + s * 1000, current(s))).collect();
    // Kill in the middle of the second run (after its reading at 75 s).
    let (first, second) = series.split_at(76);
    // Idle readings before t0 take the press past the model's warm-up, so its windows during
    // the runs are scored (the sessions' max score and alerts come from them).
    let warmup: Vec<(i64, f64)> = (1..=model_warmup() as i64).rev().map(|k| (t0 - k * 1000, 0.5)).collect();
    publish_series(&broker, "machine.press", &warmup);
    publish_series(&broker, "machine.press", first);
    publish_series(&broker, "other.sensor", &series[..20]);
    wait_for_outbox(&pa.outbox, Duration::from_secs(60), Some(&pa.agent), "the first session", |r| {
        r.iter().any(|e| matches!(&e.body, Body::Session { .. }))
    });
    restart(&mut pa, &broker, id);
    publish_series(&broker, "machine.press", second);
    let records = wait_for_outbox(&pa.outbox, Duration::from_secs(60), Some(&pa.agent), "three sessions", |r| {
        dedup(r.to_vec()).iter().filter(|e| matches!(&e.body, Body::Session { .. })).count() >= 3
    });
    assert_no_panic(&pa.agent);
    let records = dedup(records);
    let full: Vec<(String, i64, i64, Option<f64>, Vec<SessionAlert>)> = records
        .iter()
        .filter_map(|e| match &e.body {
            Body::Session { entity, start_ms, end_ms, max_score, alerts, .. } => Some((entity.clone(), *start_ms, *end_ms, *max_score, alerts.clone())),
            _ => None,
        })
        .collect();
    // Each session's max score and alert changes are those of the entity's windows
    // `(e − size, e]` ending in [start, end + window size) (the windows overlapping it).
    let press_scores: Vec<(i64, f64)> = scores(&records).into_iter().filter(|s| s.0 == "machine.press").map(|s| (s.1, s.2)).collect();
    assert!(!press_scores.is_empty(), "the press's windows are scored");
    for (_, start, end, max_score, alerts) in &full {
        let overlapping = |t: i64| t >= *start && t < end + SIZE_MS;
        let want = press_scores.iter().filter(|s| overlapping(s.0)).map(|s| s.1).fold(None, |m: Option<f64>, s| Some(m.map_or(s, |m| m.max(s))));
        assert_eq!(*max_score, want, "max score of the session from {start}");
        let want_alerts: Vec<(i64, AlertState)> = records
            .iter()
            .filter_map(|e| match &e.body {
                Body::Alert { entity, state, .. } if entity == "machine.press" && overlapping(e.event_time_ms) => Some((e.event_time_ms, *state)),
                _ => None,
            })
            .collect();
        let got_alerts: Vec<(i64, AlertState)> = alerts.iter().map(|a| (a.window_end_ms, a.state)).collect();
        assert_eq!(got_alerts, want_alerts, "alert changes in the session from {start}");
    }
    assert!(full.iter().all(|s| s.3.is_some()), "every run overlaps scored windows: {full:?}");
    assert!(full.iter().any(|s| !s.4.is_empty()), "a run from idle raises an alert: {full:?}");
    let sessions: Vec<(String, i64, i64, i64, Stats)> = records
        .into_iter()
        .filter_map(|e| match e.body {
            Body::Session { entity, start_ms, end_ms, duration_ms, stats, .. } => Some((entity, start_ms - t0, end_ms - t0, duration_ms, stats)),
            _ => None,
        })
        .collect();
    let spans: Vec<(&str, i64, i64, i64)> = sessions.iter().map(|s| (s.0.as_str(), s.1, s.2, s.3)).collect();
    assert_eq!(
        spans,
        vec![("machine.press", 10_000, 40_000, 30_000), ("machine.press", 60_000, 90_000, 30_000), ("machine.press", 120_000, 150_000, 30_000)],
        "sessions exactly once, across the SIGKILL"
    );
    for (i, (_, start, end, _, stats)) in sessions.iter().enumerate() {
        let values: Vec<f64> = ((start / 1000)..=(end / 1000)).map(current).collect();
        let mean = values.iter().sum::<f64>() / values.len() as f64;
        assert_eq!(stats.count, 31, "session {i}");
        assert!(close(stats.mean, mean), "session {i}: mean {} vs {mean}", stats.mean);
        let (min, max) = values.iter().fold((f64::MAX, f64::MIN), |(a, b), &v| (a.min(v), b.max(v)));
        assert_eq!((stats.min, stats.max, stats.first, stats.last), (min, max, values[0], *values.last().unwrap()), "session {i}");
    }
    // The dip belongs to the first run; the idle readings of the other runs do not.
    assert_eq!(sessions[0].4.min, 0.5);
    assert_eq!(sessions[1].4.min, 10.0);
    let by_entity: BTreeMap<&str, usize> = sessions.iter().fold(BTreeMap::new(), |mut m, s| {
        *m.entry(s.0.as_str()).or_default() += 1;
        m
    });
    assert_eq!(by_entity.len(), 1, "only entities matching machine.* have sessions");
}
