//! A subscription the broker refuses is not silent. Against a real Mosquitto 2.0.11 whose
//! dynamic security plugin holds the ACLs (its `subscribePattern` ACLs are checked at
//! SUBSCRIBE; Mosquitto's `acl_file` is only checked at delivery and never refuses a
//! SUBSCRIBE), an agent whose user may subscribe to `plant/#` but not `lab/#`, with two
//! subscriptions:
//!
//! - `plant/+/+/value` is granted and delivers readings;
//! - `lab/+/value` is refused (0x87 not authorized): the agent logs an ERROR naming the filter
//!   and the code (and never its password), counts it in
//!   `vigil_mqtt_subscription_refused_total{filter}` / `vigil_mqtt_subscription_granted`, raises
//!   a `subscription_refused` health alert, and `/health` and `/ready` report `degraded` with the
//!   filter;
//! - once the ACL is fixed (the plugin disconnects the clients of the changed role), the agent
//!   reconnects, subscribes again, is granted the filter, `/health` is `ok` again and the
//!   filter's readings arrive.
//!
//! And an alert publish the broker refuses (MQTT 5 PUBACK `0x87`: the agent's user may not
//! publish to the alert topic) is logged, counted in `vigil_mqtt_publish_refused_total{reason}`
//! and makes `/health` degraded.

mod support;

use std::time::Duration;

use support::*;
use vigil_test_harness::{http_get, Mosquitto, MosquittoOptions};

const AGENT_USER: &str = "line-agent";
const AGENT_PASSWORD: &str = "agent-pw-5d1e";
const PLC_USER: &str = "line-plc";
const PLC_PASSWORD: &str = "plc-pw-c07a";
const REFUSED: &str = "lab/+/value";
const GRANTED: &str = "plant/+/+/value";

fn plc_args() -> Vec<String> {
    ["-u", PLC_USER, "-P", PLC_PASSWORD].map(String::from).to_vec()
}

fn body(api: std::net::SocketAddr, path: &str) -> (u16, String) {
    let r = http_get(api, path).unwrap();
    (r.status, r.text())
}

/// The agent's config: `[mqtt]` with its credentials, the `plant` and `lab` subscriptions.
fn agent_config(dir: &std::path::Path, id: &str, port: u16) -> (std::path::PathBuf, std::path::PathBuf) {
    let (data, outbox) = (dir.join("data"), dir.join("outbox"));
    let config = dir.join("vigil.toml");
    let text = format!(
        "{}\n{}username = \"{AGENT_USER}\"\npassword = \"{AGENT_PASSWORD}\"\n\n\
         [[ingest.mqtt]]\ntopic = \"plant/{{line}}/{{sensor}}/value\"\nentity = \"{{line}}.{{sensor}}\"\n\n\
         [[ingest.mqtt]]\ntopic = \"lab/{{sensor}}/value\"\nentity = \"lab.{{sensor}}\"\n",
        base_config(id, &data, &outbox),
        mqtt_plain(port),
    );
    std::fs::write(&config, text).unwrap();
    (config, outbox)
}

#[test]
fn refused_subscription_is_logged_counted_and_degrades_health_until_granted() {
    let broker = Mosquitto::start(MosquittoOptions { dynamic_security: true, ..Default::default() }).unwrap();
    let port = broker.plain_port();
    for cmd in [
        vec!["createRole", "plant-reader"],
        vec!["addRoleACL", "plant-reader", "subscribePattern", "plant/#", "allow"],
        // The broker's drop counter (`mqtt.broker_stats`, on by default): refused too otherwise.
        vec!["addRoleACL", "plant-reader", "subscribePattern", "$SYS/broker/publish/#", "allow"],
        // Alerts and health alerts go out on the agent's publish connection.
        vec!["addRoleACL", "plant-reader", "publishClientSend", "vigil/#", "allow"],
        vec!["createClient", AGENT_USER, "-p", AGENT_PASSWORD],
        vec!["addClientRole", AGENT_USER, "plant-reader"],
        vec!["createRole", "publisher"],
        vec!["addRoleACL", "publisher", "publishClientSend", "#", "allow"],
        vec!["createClient", PLC_USER, "-p", PLC_PASSWORD],
        vec!["addClientRole", PLC_USER, "publisher"],
    ] {
        broker.dynsec(&cmd).unwrap();
    }

    let dir = tempfile::tempdir().unwrap();
    let (config, outbox) = agent_config(dir.path(), "acl", port);
    let mut agent = spawn_agent(&config);
    let api = api_addr(&agent);

    // --- the refusal ------------------------------------------------------------------------
    let line = agent
        .wait_for_line(|l| l.contains("ERROR") && l.contains("refused the subscription"), Duration::from_secs(60))
        .expect("the refusal is logged as an ERROR");
    assert!(line.contains(REFUSED) && line.contains("0x87") && line.contains("not authorized"), "{line}");
    assert!(!line.contains(GRANTED), "only the refused filter is named: {line}");

    let samples = wait_for_metrics(api, "the refusal's metrics", |s| {
        prom_value(s, "vigil_mqtt_subscription_refused_total", &[("filter", REFUSED)]) == Some(1.0)
            && prom_value(s, "vigil_health_alerts_total", &[("kind", "subscription_refused")]) == Some(1.0)
    });
    assert_eq!(prom_value(&samples, "vigil_mqtt_subscription_granted", &[("filter", REFUSED)]), Some(0.0));
    assert_eq!(prom_value(&samples, "vigil_mqtt_subscription_granted", &[("filter", GRANTED)]), Some(1.0));
    assert_eq!(prom_value(&samples, "vigil_mqtt_subscription_refused_total", &[("filter", GRANTED)]), Some(0.0));

    let (status, health) = body(api, "/health");
    assert_eq!(status, 200, "liveness stays up: {health}");
    assert!(health.starts_with("degraded\n") && health.contains(REFUSED) && health.contains("0x87"), "{health}");
    assert!(!health.contains(GRANTED), "{health}");
    let ready: serde_json::Value = serde_json::from_str(&body(api, "/ready").1).unwrap();
    let degraded = ready["degraded"].as_array().unwrap_or_else(|| panic!("{ready}"));
    assert_eq!(degraded.len(), 1, "{ready}");
    assert!(degraded[0].as_str().unwrap().contains(REFUSED), "{ready}");
    let alerts: serde_json::Value = serde_json::from_slice(&http_get(api, "/api/alerts").unwrap().body).unwrap();
    let event = alerts["health"].as_array().unwrap().iter().find(|e| e["kind"] == "subscription_refused").unwrap_or_else(|| panic!("{alerts}"));
    assert!(event.to_string().contains(REFUSED), "{event}");

    // --- the granted filter still delivers --------------------------------------------------
    let t0 = now_ms() - 60_000;
    let lines: Vec<String> = (0..3).map(|i| json_reading(t0 + i * 1000, 20.0 + i as f64)).collect();
    publish_lines(port, "plant/l1/temp/value", &lines, &plc_args());
    wait_for_outbox(&outbox, Duration::from_secs(60), Some(&agent), "the granted filter's readings", |r| {
        readings(r).iter().filter(|(e, _, _)| e == "l1.temp").count() == 3
    });

    // --- the ACL is fixed: the next connection is granted the filter ------------------------
    let from = agent.line_count();
    // The plugin disconnects the role's clients; the agent reconnects and subscribes again.
    broker.dynsec(&["addRoleACL", "plant-reader", "subscribePattern", "lab/#", "allow"]).unwrap();
    let (_, line) = agent
        .wait_for_line_after(from, |l| l.contains("granted the subscription it had refused"), Duration::from_secs(60))
        .expect("the refused filter is granted on the next connection");
    assert!(line.contains(REFUSED), "{line}");
    let (status, health) = body(api, "/health");
    assert_eq!((status, health.as_str()), (200, "ok\n"));
    let ready: serde_json::Value = serde_json::from_str(&body(api, "/ready").1).unwrap();
    assert_eq!(ready["degraded"], serde_json::json!([]), "{ready}");
    let samples = wait_for_metrics(api, "the grant", |s| prom_value(s, "vigil_mqtt_subscription_granted", &[("filter", REFUSED)]) == Some(1.0));
    assert_eq!(prom_value(&samples, "vigil_mqtt_subscription_refused_total", &[("filter", REFUSED)]), Some(1.0), "counted once");

    publish_lines(port, "lab/ph/value", &[json_reading(t0, 7.0)], &plc_args());
    wait_for_outbox(&outbox, Duration::from_secs(60), Some(&agent), "the formerly refused filter's reading", |r| {
        readings(r).iter().any(|(e, _, _)| e == "lab.ph")
    });

    agent.terminate().unwrap();
    assert!(agent.wait_timeout(Duration::from_secs(30)).expect("agent stops").success());
    assert_no_panic(&agent);
    let out = agent.lines().join("\n");
    assert!(!out.contains(AGENT_PASSWORD), "the MQTT password must never be logged");
}

#[test]
fn refused_alert_publish_is_logged_counted_and_degrades_health() {
    let broker = Mosquitto::start(MosquittoOptions { dynamic_security: true, ..Default::default() }).unwrap();
    // May subscribe to `plant/#` and `$SYS`, may publish nothing (the plugin's default).
    for cmd in [
        vec!["createRole", "reader"],
        vec!["addRoleACL", "reader", "subscribePattern", "plant/#", "allow"],
        vec!["addRoleACL", "reader", "subscribePattern", "$SYS/broker/publish/#", "allow"],
        vec!["createClient", AGENT_USER, "-p", AGENT_PASSWORD],
        vec!["addClientRole", AGENT_USER, "reader"],
    ] {
        broker.dynsec(&cmd).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let (config, _) = agent_config(dir.path(), "pubacl", broker.plain_port());
    let mut agent = spawn_agent(&config);
    let api = api_addr(&agent);

    // The refused `lab` subscription raises a health alert, published on the alert topic,
    // which the broker refuses in turn.
    let line = agent
        .wait_for_line(|l| l.contains("ERROR") && l.contains("refused an alert publish"), Duration::from_secs(60))
        .expect("the refused publish is logged as an ERROR");
    assert!(line.contains("0x87") && line.contains("not authorized"), "{line}");
    let samples = wait_for_metrics(api, "the refused publish", |s| prom_value(s, "vigil_mqtt_publish_refused_total", &[("reason", "not authorized")]).is_some());
    assert_eq!(prom_value(&samples, "vigil_mqtt_publish_refused_total", &[("reason", "not authorized")]), Some(1.0), "one health alert (rate-limited), refused once");
    let (status, health) = body(api, "/health");
    assert_eq!(status, 200);
    assert!(health.starts_with("degraded\n") && health.contains("refused alert publishes") && health.contains("0x87"), "{health}");
    assert!(health.contains(REFUSED), "the refused subscription too: {health}");

    agent.terminate().unwrap();
    assert!(agent.wait_timeout(Duration::from_secs(30)).expect("agent stops").success());
    assert_no_panic(&agent);
    assert!(!agent.lines().join("\n").contains(AGENT_PASSWORD), "the MQTT password must never be logged");
}
