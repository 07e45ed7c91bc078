//! End to end over a real Mosquitto (plain TCP): four subscriptions (JSON with a two-placeholder
//! topic template, CBOR, JSON array, bare number) fed by `mosquitto_pub`; asserts the alert for
//! the anomalous entity on `vigil/<id>/alerts`, every reading exactly once in the outbox files,
//! and the model identity on score records. See `support::ingest_flow`.

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
