//! End to end over a real Mosquitto (plain TCP): four subscriptions (JSON with a two-placeholder
//! topic template, CBOR, JSON array, bare number) fed by `mosquitto_pub`; asserts the alert for
//! the anomalous entity on `vigil/<id>/alerts`, every reading exactly once in the outbox files,
//! and the model identity on score records. See `support::ingest_flow`. Also: JSON numbers
//! round-trip exactly, and a reading on the window grid (`offset_ms` = the sensor's phase) is
//! scored, and alerted, when it arrives.

mod support;

use support::*;
use vigil_test_harness::{Mosquitto, MosquittoOptions};

#[test]
fn mqtt_ingest_alerts_and_outbox() {
    let broker = Mosquitto::start(MosquittoOptions { max_queued_messages: Some(100_000), ..Default::default() }).unwrap();
    let link = Link { port: broker.plain_port(), mqtt_table: mqtt_plain(broker.plain_port()), client_tls: None };
    ingest_flow(&broker, &link, "ingest-plain");
}

/// A JSON number must become exactly the f64 it denotes. Fails today: the agent's JSON decoder
/// (serde_json without the `float_roundtrip` feature) parses `109.25645399999999` as
/// `109.256454`, one ULP off.
#[test]
fn json_values_round_trip_exactly() {
    use std::time::Duration;
    let broker = Mosquitto::start(MosquittoOptions::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (data, outbox) = (dir.path().join("data"), dir.path().join("outbox"));
    let config = dir.path().join("vigil.toml");
    let id = "roundtrip";
    std::fs::write(&config, format!("{}\n{}\n{}", base_config(id, &data, &outbox), mqtt_plain(broker.plain_port()), FLOW_SUBSCRIPTIONS)).unwrap();
    let from = broker.log_line_count();
    let agent = spawn_agent(&config);
    agent.wait_for_line(|l| l.contains("MQTT connected"), Duration::from_secs(30)).unwrap();
    wait_for_subacks(&broker, from, &format!("vigil-{id}"), 4);
    let values = [109.25645399999999_f64, 0.1 + 0.2, 1.0 / 3.0, 6.02214076e23, 2.2250738585072014e-308];
    let now = now_ms();
    let lines: Vec<String> = values.iter().enumerate().map(|(i, &v)| json_reading(now - 10_000 + i as i64, v)).collect();
    publish_lines(broker.plain_port(), "plant/rt/x/value", &lines, &[]);
    let records = wait_for_outbox(&outbox, Duration::from_secs(30), Some(&agent), "the readings", |r| readings(r).len() >= values.len());
    let got: Vec<f64> = readings(&records).iter().map(|r| r.2).collect();
    assert_eq!(got, values, "published JSON text {lines:?}");
}

/// Windows `(end − size, end]` on a grid with the sensor's phase (`offset_ms`), lateness 0: each
/// reading closes the window it is the newest reading of when it arrives. The spike at the end
/// of the series is scored — and alerted — without any reading after it (with windows that do
/// not hold their end, or off the sensor's phase, it would wait for the next reading, one
/// sampling period later).
#[test]
fn a_reading_on_the_window_grid_is_scored_when_it_arrives() {
    use std::time::Duration;
    let broker = Mosquitto::start(MosquittoOptions::default()).unwrap();
    // The sensor reports every hop, 1 s after the hop's multiples.
    let offset = 1000;
    let plant = PlantAgent::start_with(&broker, "grid-phase", |c| c.replace(&format!("hop_ms = {HOP_MS}\n"), &format!("hop_ms = {HOP_MS}\noffset_ms = {offset}\n")));
    // 200 windows after the warm-up: the range the spike breaks is mature enough to alert.
    let n = model_warmup() + 200;
    let t0 = (now_ms() - 2 * n as i64 * HOP_MS).div_euclid(HOP_MS) * HOP_MS + offset;
    let series: Vec<(i64, f64)> = (0..n).map(|i| (t0 + i as i64 * HOP_MS, if i + 1 == n { 60.0 } else { 20.0 + (i % 5) as f64 * 0.1 })).collect();
    publish_series(&broker, "l1.temp", &series);
    let spike = series[n - 1].0;
    let records = wait_for_outbox(&plant.outbox, Duration::from_secs(60), Some(&plant.agent), "the spike's own window scored", |r| {
        scores(r).iter().any(|(e, t, _)| e == "l1.temp" && *t == spike)
    });
    let scored: Vec<(i64, f64)> = scores(&records).into_iter().filter(|s| s.0 == "l1.temp").map(|s| (s.1, s.2)).collect();
    // Every scored window ends at a reading: the grid follows the sensor's phase.
    assert!(scored.iter().all(|(t, _)| (t - t0) % HOP_MS == 0), "{:?}", &scored[..scored.len().min(5)]);
    let (_, spike_score) = scored.iter().copied().find(|s| s.0 == spike).unwrap();
    let before = scored.iter().filter(|s| s.0 < spike).map(|s| s.1).fold(0.0, f64::max);
    assert!(spike_score >= 0.4 && spike_score > before, "the spike's window scores {spike_score}, the ones before at most {before}");
    let raised = records.iter().any(|e| matches!(&e.body, cloud_uplink::Body::Alert { entity, state: cloud_uplink::AlertState::Raised, .. } if entity == "l1.temp") && e.event_time_ms == spike);
    assert!(raised, "an alert raised at the spike's own window");
    assert_no_panic(&plant.agent);
}
