//! Broker-side loss made visible, against a real Mosquitto with `max_queued_messages 5` and
//! `sys_interval 1`:
//!
//! - another, offline subscriber with a persistent session makes the broker drop 15 of 20
//!   messages; the agent reads the broker's `$SYS/broker/publish/messages/dropped`, exports it
//!   as `vigil_mqtt_broker_dropped_messages` and raises one agent health alert (metrics, the
//!   JSON API, and a JSON message on the alert topic);
//! - a publisher's sequence numbers 1 2 3 5 6 9 (then a restart at 1) count 3 missing
//!   messages and 1 reset, and raise a `sequence_gap` health alert.

mod support;

use std::time::Duration;

use support::*;
use vigil_test_harness::{http_get, Mosquitto, MosquittoOptions, Subscriber, SubscriberOptions};

#[test]
fn broker_drops_and_sequence_gaps_raise_health_alerts() {
    let broker = Mosquitto::start(MosquittoOptions {
        max_queued_messages: Some(5),
        extra_config: vec!["sys_interval 1".into()],
        ..Default::default()
    })
    .unwrap();
    let port = broker.plain_port();
    let alerts = Subscriber::start(SubscriberOptions::new(port, "vigil/health/alerts")).unwrap();
    let plant = PlantAgent::start(&broker, "health");
    let api = api_addr(&plant.agent);

    // The broker's first report (0 dropped) has arrived.
    wait_for_metrics(api, "the first $SYS report", |s| prom_value(s, "vigil_mqtt_broker_dropped_messages", &[]) == Some(0.0));

    // --- broker drops ---------------------------------------------------------------------
    // A subscriber with a persistent session that goes away (-E: exit once subscribed).
    let out = std::process::Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-c", "-i", "slow-line-hmi", "-q", "1", "-t", "hmi/feed", "-E"])
        .output()
        .expect("mosquitto_sub");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<String> = (0..20).map(|i| format!("frame {i}")).collect();
    publish_lines(port, "hmi/feed", &lines, &[]);

    let samples = wait_for_metrics(api, "the broker's drops", |s| prom_value(s, "vigil_mqtt_broker_dropped_messages", &[]) == Some(15.0));
    assert_eq!(prom_value(&samples, "vigil_health_alerts_total", &[("kind", "broker_drops")]), Some(1.0));
    let msg = alerts
        .wait_for(|m| String::from_utf8_lossy(&m.payload).contains("broker_drops"), Duration::from_secs(10))
        .expect("health alert on the alert topic");
    let v: serde_json::Value = serde_json::from_slice(&msg.payload).unwrap();
    assert_eq!((v["entity"].as_str(), v["state"].as_str(), v["agent"].as_str()), (Some("agent"), Some("health"), Some("health")), "{v}");
    assert!(v["message"].as_str().unwrap().contains("dropped 15 messages"), "{v}");
    let api_alerts: serde_json::Value = serde_json::from_slice(&http_get(api, "/api/alerts").unwrap().body).unwrap();
    assert_eq!(api_alerts["health"][0]["kind"], "broker_drops", "{api_alerts}");

    // --- publisher sequence gaps ----------------------------------------------------------
    let t0 = now_ms() - 60_000;
    let seqs = [1u64, 2, 3, 5, 6, 9, 1];
    let lines: Vec<String> = seqs
        .iter()
        .enumerate()
        .map(|(i, s)| serde_json::json!({"value": 1.0 + i as f64, "ts": t0 + i as i64 * 1000, "seq": s}).to_string())
        .collect();
    publish_lines(port, "plant/l2/flow/value", &lines, &[]);
    let samples = wait_for_metrics(api, "the sequence reset", |s| prom_value(s, "vigil_source_sequence_resets_total", &[]) == Some(1.0));
    assert_eq!(prom_value(&samples, "vigil_source_sequence_gaps_total", &[]), Some(3.0));
    assert_eq!(prom_value(&samples, "vigil_health_alerts_total", &[("kind", "sequence_gap")]), Some(1.0), "one alert: rate-limited");
    let msg = alerts
        .wait_for(|m| String::from_utf8_lossy(&m.payload).contains("sequence_gap"), Duration::from_secs(10))
        .expect("sequence-gap health alert on the alert topic");
    assert!(String::from_utf8_lossy(&msg.payload).contains("l2.flow"), "{}", String::from_utf8_lossy(&msg.payload));
    // $SYS messages are not input: neither readings nor dead letters.
    assert_eq!(prom_value(&samples, "vigil_mqtt_messages_total", &[]), Some(seqs.len() as f64));
    assert_eq!(prom_value(&samples, "vigil_dlq_records_total", &[("reason", "no_route")]), Some(0.0));

    let mut agent = plant.agent;
    agent.terminate().unwrap();
    assert!(agent.wait_timeout(Duration::from_secs(30)).expect("agent stops").success());
    assert_no_panic(&agent);
}
