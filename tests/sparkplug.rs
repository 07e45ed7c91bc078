//! Sparkplug B ingest against an independent implementation, through a real Mosquitto:
//!
//! An edge node built with Eclipse Tahu's Python helper and the protoc-generated
//! `sparkplug_b_pb2` (PyPI `mqtt-spb-wrapper`, pinned in tests/peers/install.sh; see
//! tests/sparkplug/edge_node.py) publishes NBIRTH, DBIRTH, alias-only NDATA / DDATA, a sequence
//! gap, a stale NDEATH, a malformed payload and its NDEATH (its MQTT will). The test asserts:
//!
//! - the readings in the outbox: entity `<group>/<node>[/<device>]/<metric>`, names resolved
//!   from the BIRTH aliases, signed / float / boolean datatypes, the metrics' timestamps; no
//!   readings for strings, `bdSeq` or `Node Control/Rebirth`;
//! - the online state (`vigil_sparkplug_online`, scraped and parsed by `prometheus_client`):
//!   node and device online after their BIRTHs, still online after an NDEATH whose bdSeq is
//!   not the NBIRTH's, both offline after the matching NDEATH;
//! - the gap: counted (`vigil_sparkplug_sequence_gaps_total` = 2) and answered with an NCMD on
//!   the broker, decoded by the independent protobuf runtime as `Node Control/Rebirth` = true;
//! - the malformed payload in the DLQ (`undecodable`, with its topic), and no panic.
//!
//! The host application STATE (`mqtt.sparkplug_host_id`), seen by `mosquitto_sub` as an edge
//! node waiting for its primary host would see it:
//!
//! - a retained `{"online":true,"timestamp":T}` on `spBv1.0/STATE/<id>` once the agent runs;
//!   SIGKILL → the broker publishes the agent's will `{"online":false,"timestamp":T}` (same T);
//!   a restart → online again with a later T (`vigil_sparkplug_host_online` = 1);
//! - a broker restart (the agent reconnects in-process) → online with a later T, and the will
//!   of the new connection carries that T (SIGKILL afterwards delivers it);
//! - SIGTERM → the agent itself publishes `online: false` with T (the broker logs its PUBLISH
//!   before the agent's DISCONNECT, so not the will), and exits cleanly.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use support::*;
use vigil_test_harness::{http_get, Mosquitto, MosquittoOptions, Subscriber, SubscriberOptions};

const GROUP: &str = "G1";
const NODE: &str = "Edge1";
const DEVICE: &str = "Press3";

fn edge_node_script() -> std::path::PathBuf {
    repo_root().join("tests/sparkplug/edge_node.py")
}

fn python() -> std::path::PathBuf {
    vigil_test_harness::peers_venv().join("bin/python")
}

/// Publishes the payload file `file` on `topic` with QoS 1 (returns after the broker's PUBACK).
fn publish_file(port: u16, topic: &str, file: &Path) {
    let out = std::process::Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1", "-t", topic, "-f"])
        .arg(file)
        .output()
        .expect("mosquitto_pub");
    assert!(out.status.success(), "mosquitto_pub {topic}: {}", String::from_utf8_lossy(&out.stderr));
}

fn online(samples: &[PromSample], device: &str) -> Option<f64> {
    prom_value(samples, "vigil_sparkplug_online", &[("group", GROUP), ("node", NODE), ("device", device)])
}

#[test]
fn sparkplug_b_edge_node_births_data_gap_rebirth_and_death() {
    let broker = Mosquitto::start(MosquittoOptions::default()).unwrap();
    let port = broker.plain_port();
    let ncmd = Subscriber::start(SubscriberOptions::new(port, "spBv1.0/+/NCMD/#")).unwrap();
    let plant = PlantAgent::start_with(&broker, "spb", |c| format!("{c}\n[[ingest.mqtt]]\ntopic = \"spBv1.0/#\"\nformat = \"sparkplug_b\"\n"));
    wait_for_subacks(&broker, 0, "vigil-spb", 2);
    let api = api_addr(&plant.agent);

    // The independent edge node's messages.
    let fixtures = tempfile::tempdir().unwrap();
    let now = now_ms();
    let out = std::process::Command::new(python())
        .arg(edge_node_script())
        .args(["make".as_ref(), fixtures.path().as_os_str(), now.to_string().as_ref()])
        .output()
        .unwrap_or_else(|e| panic!("{}: {e} (run tests/peers/install.sh)", python().display()));
    assert!(out.status.success(), "edge_node.py make: {}", String::from_utf8_lossy(&out.stderr));
    let file = |name: &str| fixtures.path().join(format!("{name}.bin"));
    let node_topic = |kind: &str| format!("spBv1.0/{GROUP}/{kind}/{NODE}");
    let device_topic = |kind: &str| format!("spBv1.0/{GROUP}/{kind}/{NODE}/{DEVICE}");

    publish_file(port, &node_topic("NBIRTH"), &file("nbirth"));
    publish_file(port, &device_topic("DBIRTH"), &file("dbirth"));
    publish_file(port, &node_topic("NDATA"), &file("ndata"));
    publish_file(port, &device_topic("DDATA"), &file("ddata"));

    // --- readings ----------------------------------------------------------------------------
    let speed = format!("{GROUP}/{NODE}/Line Speed");
    let pressure = format!("{GROUP}/{NODE}/{DEVICE}/Hydraulics/Pressure");
    let temp = format!("{GROUP}/{NODE}/{DEVICE}/Temp");
    let running = format!("{GROUP}/{NODE}/{DEVICE}/Running");
    let mut expected = vec![
        (speed.clone(), now, 1.5),
        (speed.clone(), now + 1000, 2.25),
        (pressure.clone(), now, -12.0),
        (pressure.clone(), now + 1000, -7.0),
        (temp.clone(), now, 20.5),
        (temp.clone(), now + 1000, 21.75),
        (running.clone(), now, 1.0),
        (running.clone(), now + 1000, 0.0),
    ];
    expected.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let sparkplug_readings = |records: &[cloud_uplink::Envelope]| {
        let mut r: Vec<(String, i64, f64)> = readings(records).into_iter().filter(|(e, _, _)| e.starts_with("G1/")).collect();
        r.sort_by(|a, b| a.partial_cmp(b).unwrap());
        r
    };
    wait_for_outbox(&plant.outbox, Duration::from_secs(60), Some(&plant.agent), "the BIRTH and DATA readings", |r| {
        sparkplug_readings(r).len() >= expected.len()
    });
    let records = read_outbox(&plant.outbox);
    assert_eq!(sparkplug_readings(&records), expected, "strings, bdSeq and Node Control/Rebirth are not readings");

    // --- online state; nothing asked of the node so far -------------------------------------
    let samples = wait_for_metrics(api, "node and device online", |s| online(s, "") == Some(1.0) && online(s, DEVICE) == Some(1.0));
    assert_eq!(prom_value(&samples, "vigil_sparkplug_rebirth_requests_total", &[]), Some(0.0));
    assert_eq!(prom_value(&samples, "vigil_sparkplug_sequence_gaps_total", &[]), Some(0.0));
    assert!(ncmd.messages().is_empty(), "no rebirth request without a gap: {:?}", ncmd.messages());

    // --- a sequence gap: the data is taken, and a rebirth is requested ----------------------
    publish_file(port, &node_topic("NDATA"), &file("ndata_after_gap"));
    let request = ncmd
        .wait_for(|m| m.topic == format!("spBv1.0/{GROUP}/NCMD/{NODE}"), Duration::from_secs(60))
        .expect("the agent publishes a rebirth request");
    let decoded = {
        use std::io::Write;
        let mut child = std::process::Command::new(python())
            .arg(edge_node_script())
            .arg("decode")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let hex: String = request.payload.iter().map(|b| format!("{b:02x}")).collect();
        child.stdin.take().unwrap().write_all(hex.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "the NCMD does not parse as a Sparkplug B payload: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let metric = &decoded["metrics"][0];
    assert_eq!(metric["name"], "Node Control/Rebirth", "{decoded}");
    assert_eq!(metric["boolean_value"], true, "{decoded}");
    assert_eq!(metric["datatype"], 11, "Boolean: {decoded}");
    wait_for_outbox(&plant.outbox, Duration::from_secs(60), Some(&plant.agent), "the reading after the gap", |r| {
        sparkplug_readings(r).contains(&(speed.clone(), now + 2000, 3.0))
    });
    let samples = wait_for_metrics(api, "the gap counted", |s| prom_value(s, "vigil_sparkplug_sequence_gaps_total", &[]) == Some(2.0));
    assert_eq!(prom_value(&samples, "vigil_sparkplug_rebirth_requests_total", &[]), Some(1.0));

    // --- a stale NDEATH (bdSeq of an older session), then a malformed payload: the DLQ -----
    publish_file(port, &node_topic("NDEATH"), &file("ndeath_stale"));
    let bad = fixtures.path().join("bad.bin");
    std::fs::write(&bad, b"\xff\xff\xff\xff").unwrap();
    publish_file(port, &node_topic("NDATA"), &bad);
    let deadline = Instant::now() + Duration::from_secs(60);
    let dlq = loop {
        let dlq: serde_json::Value = serde_json::from_slice(&http_get(api, "/api/dlq").unwrap().body).unwrap();
        if dlq["since_start"]["undecodable"] == 1 {
            break dlq;
        }
        assert!(Instant::now() < deadline, "the malformed payload never reached the DLQ: {dlq}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(dlq["latest"][0]["topic"], node_topic("NDATA"), "{dlq}");
    assert!(dlq["latest"][0]["detail"].as_str().unwrap().contains("not a Sparkplug B payload"), "{dlq}");
    // The stale NDEATH, taken before the malformed payload (same publisher order), changed nothing.
    let samples = parse_prometheus(&http_get(api, "/metrics").unwrap().text());
    assert_eq!((online(&samples, ""), online(&samples, DEVICE)), (Some(1.0), Some(1.0)), "a stale NDEATH is ignored");

    // --- NDEATH (bdSeq matching the NBIRTH): node and device offline -------------------------
    publish_file(port, &node_topic("NDEATH"), &file("ndeath"));
    wait_for_metrics(api, "node and device offline", |s| online(s, "") == Some(0.0) && online(s, DEVICE) == Some(0.0));
    assert_no_panic(&plant.agent);
}

/// The host id the STATE tests configure.
const HOST_ID: &str = "vigil-primary";

fn state_topic() -> String {
    format!("spBv1.0/STATE/{HOST_ID}")
}

/// An agent subscribed to `spBv1.0/#` as Sparkplug host application [`HOST_ID`].
fn start_host(broker: &Mosquitto, id: &str) -> PlantAgent {
    PlantAgent::start_with(broker, id, |c| {
        let c = c.replacen("[mqtt]\n", &format!("[mqtt]\nsparkplug_host_id = \"{HOST_ID}\"\n"), 1);
        format!("{c}\n[[ingest.mqtt]]\ntopic = \"spBv1.0/#\"\nformat = \"sparkplug_b\"\n")
    })
}

/// A STATE message: (online, timestamp, retained). Panics on anything else: the payload is
/// the specification's JSON with exactly these two keys.
fn state(m: &vigil_test_harness::MqttMessage) -> (bool, i64, bool) {
    let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap_or_else(|e| panic!("STATE is not JSON ({e}): {}", m.payload_str()));
    let obj = v.as_object().unwrap_or_else(|| panic!("STATE is not a JSON object: {v}"));
    assert_eq!(obj.len(), 2, "online and timestamp, nothing else: {v}");
    (v["online"].as_bool().expect("online is a boolean"), v["timestamp"].as_i64().expect("timestamp is an integer"), m.retained)
}

/// Blocks until the broker logged the agent's (`client_id`) PUBLISH on the STATE topic
/// (from log line `from` on), i.e. the broker has it (and retains it).
fn wait_for_state_publish(broker: &Mosquitto, from: usize, client_id: &str) -> usize {
    let needle = format!("Received PUBLISH from {client_id} ");
    let topic = format!("'{}'", state_topic());
    broker
        .wait_for_log_after(from, |l| l.contains(&needle) && l.contains(&topic), Duration::from_secs(60))
        .expect("the agent publishes its STATE");
    broker.log_lines().iter().enumerate().skip(from).find(|(_, l)| l.contains(&needle) && l.contains(&topic)).map(|(i, _)| i).unwrap()
}

#[test]
fn sparkplug_host_state_birth_will_on_kill_and_rebirth_on_restart() {
    let broker = Mosquitto::start(MosquittoOptions::default()).unwrap();
    let port = broker.plain_port();
    let before = now_ms();
    let mut plant = start_host(&broker, "spbhost");
    wait_for_state_publish(&broker, 0, "vigil-spbhost");

    // A subscriber that comes after the birth gets it retained.
    let sub = Subscriber::start(SubscriberOptions::new(port, &state_topic())).unwrap();
    let first = sub.next_message(Duration::from_secs(30)).expect("the retained STATE");
    let (online, t1, retained) = state(&first);
    assert!(online && retained, "retained online STATE: {}", first.payload_str());
    assert_eq!(first.qos, 1);
    assert!(t1 >= before && t1 <= now_ms(), "T = {t1} is the connection's time ({before} ..)");
    let api = api_addr(&plant.agent);
    wait_for_metrics(api, "host online", |s| prom_value(s, "vigil_sparkplug_host_online", &[("host_id", HOST_ID)]) == Some(1.0));

    // SIGKILL: no goodbye from the agent; the broker publishes its will.
    plant.agent.kill_9().unwrap();
    let will = sub.next_message(Duration::from_secs(60)).expect("the will after SIGKILL");
    assert_eq!(will.topic, state_topic());
    let (online, t, _) = state(&will);
    assert!(!online, "the will says offline: {}", will.payload_str());
    assert_eq!(t, t1, "the will carries the birth's timestamp");
    // The broker retains it for edge nodes that connect later.
    let late = Subscriber::start(SubscriberOptions::new(port, &state_topic())).unwrap();
    let retained = late.next_message(Duration::from_secs(30)).unwrap();
    assert_eq!(state(&retained), (false, t1, true));

    // Restart: online again, with a later timestamp; the old will (still retained, and queued
    // in the persistent session the agent resumes) does not make it republish.
    let from = broker.log_line_count();
    plant.agent = spawn_agent(&plant.config);
    let rebirth = sub.next_message(Duration::from_secs(60)).expect("the birth after the restart");
    let (online, t2, _) = state(&rebirth);
    assert!(online, "{}", rebirth.payload_str());
    assert!(t2 > t1, "a new connection, a new timestamp: {t2} > {t1}");
    let api = api_addr(&plant.agent);
    wait_for_metrics(api, "host online after restart", |s| prom_value(s, "vigil_sparkplug_host_online", &[("host_id", HOST_ID)]) == Some(1.0));
    // Exactly one birth for this connection: the stale will is history, not a contradiction.
    let births = broker.log_lines()[from..].iter().filter(|l| l.contains("Received PUBLISH from vigil-spbhost ") && l.contains(&state_topic())).count();
    assert_eq!(births, 1, "one STATE publish after the restart");
    assert_no_panic(&plant.agent);
}

#[test]
fn sparkplug_host_state_offline_on_sigterm_before_exit() {
    let broker = Mosquitto::start(MosquittoOptions::default()).unwrap();
    let port = broker.plain_port();
    let sub = Subscriber::start(SubscriberOptions::new(port, &state_topic())).unwrap();
    let mut plant = start_host(&broker, "spbterm");
    let birth = sub.next_message(Duration::from_secs(60)).expect("the birth");
    let (online, t, _) = state(&birth);
    assert!(online, "{}", birth.payload_str());

    let from = broker.log_line_count();
    plant.agent.terminate().unwrap();
    let death = sub.next_message(Duration::from_secs(60)).expect("the offline STATE on shutdown");
    let (online, t_death, _) = state(&death);
    assert!(!online, "{}", death.payload_str());
    assert_eq!(t_death, t, "the death carries the connection's timestamp");
    let status = plant.agent.wait_timeout(Duration::from_secs(60)).unwrap();
    assert!(status.success(), "clean exit: {status}");
    // The agent published it (not the broker's will), before its DISCONNECT.
    let publish = wait_for_state_publish(&broker, from, "vigil-spbterm");
    let lines = broker.log_lines();
    let disconnect = lines.iter().enumerate().skip(from).find(|(_, l)| l.ends_with("Received DISCONNECT from vigil-spbterm")).map(|(i, _)| i);
    assert!(disconnect.is_some_and(|d| d > publish), "PUBLISH (line {publish}) before DISCONNECT ({disconnect:?}):\n{}", lines[from..].join("\n"));
    assert_no_panic(&plant.agent);
}

#[test]
fn sparkplug_host_state_reconnect_renews_the_will() {
    let mut broker = Mosquitto::start(MosquittoOptions::default()).unwrap();
    let port = broker.plain_port();
    let mut plant = start_host(&broker, "spbre");
    wait_for_state_publish(&broker, 0, "vigil-spbre");
    let sub = Subscriber::start(SubscriberOptions::new(port, &state_topic())).unwrap();
    let (online, t1, _) = state(&sub.next_message(Duration::from_secs(30)).unwrap());
    assert!(online);
    drop(sub);

    // The broker goes away and comes back: the agent reconnects within its process.
    let from = broker.log_line_count();
    broker.restart().unwrap();
    wait_for_state_publish(&broker, from, "vigil-spbre");
    let sub = Subscriber::start(SubscriberOptions::new(port, &state_topic())).unwrap();
    let (online, t2, retained) = state(&sub.next_message(Duration::from_secs(30)).unwrap());
    assert!(online && retained);
    assert!(t2 > t1, "the reconnection has its own timestamp: {t2} > {t1}");

    // The will registered by the reconnection carries the new timestamp.
    plant.agent.kill_9().unwrap();
    let will = sub.next_message(Duration::from_secs(60)).expect("the will after SIGKILL");
    assert_eq!(state(&will), (false, t2, false), "{}", will.payload_str());
}
