//! `[uplink.policy] reading = "around_alerts"` end to end (Mosquitto → agent → directory sink):
//! raw readings reach the outbox exactly for the spans around raised alerts — every reading of
//! an alerting entity from `alert_before_ms` before the alerting window to `alert_after_ms`
//! after it, including readings that arrived before anyone knew an alert would follow — and no
//! other reading does. Scores, alerts and aggregates are still uplinked. Restarted with
//! `reading = "always"`, the agent uplinks the readings it still held.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use cloud_uplink::{AlertState, Body};
use support::*;
use vigil_test_harness::Mosquitto;

const BEFORE_MS: i64 = 8000;
const AFTER_MS: i64 = 12_000;

#[test]
fn raw_readings_are_uplinked_around_every_alert_and_nowhere_else() {
    let broker = Mosquitto::start(Default::default()).unwrap();
    let id = "policy";
    let mut pa = PlantAgent::start_with(&broker, id, |c| {
        c + &format!(
            "\n[pipeline.aggregate]\nsizes_ms = [60000]\n\n[uplink.policy]\nreading = \"around_alerts\"\nalert_before_ms = {BEFORE_MS}\nalert_after_ms = {AFTER_MS}\n"
        )
    });
    let warm = model_warmup();
    let n = warm + 100;
    let t0 = now_ms().div_euclid(1000) * 1000 - n as i64 * STEP_MS - 60_000;
    let hot = series(1, t0, n, 60.0, Some(warm + 40));
    let calm = series(2, t0, n, 20.0, None);
    std::thread::scope(|s| {
        s.spawn(|| publish_series(&broker, "l1.temp", &hot));
        s.spawn(|| publish_series(&broker, "l2.press", &calm));
    });
    let entities = [("l1.temp", &hot), ("l2.press", &calm)];
    // Per entity: the published readings around its raised alerts in `records`.
    let expected = |records: &[cloud_uplink::Envelope]| -> Vec<(&str, Vec<(i64, i64)>, BTreeSet<(String, i64)>)> {
        entities
            .iter()
            .map(|(entity, series)| {
                let spans: Vec<(i64, i64)> = records
                    .iter()
                    .filter_map(|e| match &e.body {
                        Body::Alert { entity: a, state: AlertState::Raised, .. } if a == entity => {
                            Some((e.event_time_ms - SIZE_MS - BEFORE_MS, e.event_time_ms + AFTER_MS))
                        }
                        _ => None,
                    })
                    .collect();
                let want = series
                    .iter()
                    .filter(|(t, _)| spans.iter().any(|(from, until)| (*from..=*until).contains(t)))
                    .map(|&(t, _)| (entity.to_string(), t))
                    .collect();
                (*entity, spans, want)
            })
            .collect()
    };
    // Sinks drain alerts and scores before readings: wait for the last scores and for the
    // readings around every alert among them.
    let records = wait_for_outbox(&pa.outbox, Duration::from_secs(120), Some(&pa.agent), "the last scores and the readings around every alert", |r| {
        let sc = scores(r);
        let got: BTreeSet<(String, i64)> = readings(r).into_iter().map(|(e, t, _)| (e, t)).collect();
        entities.iter().all(|(e, s)| sc.iter().any(|(se, w, _)| se == e && *w == last_window_end(s.last().unwrap().0)))
            && expected(r).iter().all(|(_, _, want)| want.is_subset(&got))
    });
    assert_no_panic(&pa.agent);

    let uplinked: BTreeSet<(String, i64)> = readings(&records).into_iter().map(|(e, t, _)| (e, t)).collect();
    let expected = expected(&records);
    assert!(expected.iter().any(|(e, spans, _)| *e == "l1.temp" && !spans.is_empty()), "the anomaly raises an alert: {}", summary(&records));
    for (entity, spans, want) in expected {
        let got: BTreeSet<(String, i64)> = uplinked.iter().filter(|(e, _)| e == entity).cloned().collect();
        let extra: Vec<_> = got.difference(&want).collect();
        assert!(got == want, "{entity}: spans {spans:?}; not around an alert {extra:?}");
        if !spans.is_empty() {
            // Readings from before the alert were held, then released with it.
            assert!(got.iter().any(|(_, t)| spans.iter().any(|(from, _)| *t < from + SIZE_MS)), "{entity}: nothing from before the alert");
        }
    }
    assert!(records.iter().any(|e| matches!(e.body, Body::Aggregate { .. })), "aggregates are still uplinked");

    // Restarted with `reading = "always"`: the readings still held (those later windows may
    // still have needed) are uplinked at start-up instead of being forgotten.
    pa.agent.terminate().unwrap();
    pa.agent.wait_timeout(Duration::from_secs(30)).expect("agent stops on SIGTERM");
    let text = std::fs::read_to_string(&pa.config).unwrap().replace("reading = \"around_alerts\"", "reading = \"always\"");
    std::fs::write(&pa.config, text).unwrap();
    pa.agent = spawn_agent(&pa.config);
    let still_held = |series: &[(i64, f64)]| {
        let cutoff = last_window_end(series.last().unwrap().0) - SIZE_MS - BEFORE_MS;
        series.iter().filter(move |(t, _)| *t >= cutoff).map(|&(t, _)| t).collect::<Vec<i64>>()
    };
    wait_for_outbox(&pa.outbox, Duration::from_secs(60), Some(&pa.agent), "the held readings after the restart", |r| {
        let got: BTreeSet<(String, i64)> = readings(r).into_iter().map(|(e, t, _)| (e, t)).collect();
        entities.iter().all(|(e, s)| still_held(s).iter().all(|t| got.contains(&(e.to_string(), *t))))
    });
    assert!(pa.agent.lines().iter().any(|l| l.contains("settled readings held by an earlier around_alerts run")));
    assert_no_panic(&pa.agent);
}
