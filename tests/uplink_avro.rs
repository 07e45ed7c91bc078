//! Avro on Kafka: the agent encodes records as Avro in the Confluent wire format, and central
//! teams read them with standard deserializers.
//!
//! Real peers: Mosquitto in, the agent, the tansu Kafka-protocol broker, and Python
//! confluent-kafka (librdkafka) with Confluent's own `AvroDeserializer` / `SchemaRegistryClient`
//! (or fastavro with the schema file) reading it back. **One fake:** the schema registry
//! (`tests/peers/schema_registry.py`, see `FakeSchemaRegistry`) — no Confluent-compatible
//! registry can run on this machine (Confluent's and Apicurio's are Java from Maven, which this
//! machine cannot fetch; Karapace is not on PyPI). It implements the REST calls both sides make
//! and parses every registered schema with fastavro.
//!
//! The directory sink's records of every kind (readings, scores, alerts, DLQ, aggregates, sessions,
//! heartbeats) are the reference: every one of them must arrive on Kafka and
//! decode to exactly its JSON encoding (`cloud_uplink::encode_json`).

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use cloud_uplink::{encode_json, Body, Envelope};
use serde::Deserialize;
use support::*;
use vigil_test_harness::{http_request, run_peer_script, FakeSchemaRegistry, Mosquitto, MosquittoOptions, Tansu, TansuStorage};

const TOPICS: [&str; 7] = ["vigil.readings", "vigil.scores", "vigil.alerts", "vigil.dlq", "vigil.aggregates", "vigil.sessions", "vigil.heartbeats"];
/// Every record kind the agent writes in this test (each must cross Kafka as Avro).
const KINDS: [&str; 7] = ["reading", "score", "alert", "dlq", "aggregate", "session", "heartbeat"];
const REGISTRY_USER: &str = "vigil-gw";
const REGISTRY_PASSWORD: &str = "registry-s3cret";

#[derive(Debug, Deserialize)]
struct Decoded {
    topic: String,
    key: Option<String>,
    schema_id: u32,
    headers: HashMap<String, Option<String>>,
    value: serde_json::Value,
}

/// Everything on the topics, decoded by the independent consumer (`how`: its decoder flags),
/// read again until every record of `reference` is there (heartbeats drain last) or 120 s pass.
fn consume_avro(kafka_port: u16, how: &[String], reference: &[Envelope]) -> Vec<Decoded> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let mut args = how.to_vec();
        args.extend([format!("127.0.0.1:{kafka_port}"), "60".into(), reference.len().to_string()]);
        args.extend(TOPICS.iter().map(|t| t.to_string()));
        let out = run_peer_script("kafka_consume.py", &args).unwrap_or_else(|e| panic!("Avro consumer: {e}"));
        let got: Vec<Decoded> = String::from_utf8(out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let seqs: BTreeSet<u64> = got.iter().filter_map(|d| d.value["seq"].as_u64()).collect();
        if reference.iter().all(|e| seqs.contains(&e.seq)) || Instant::now() > deadline {
            return got;
        }
    }
}

fn kafka_avro_section(kafka_port: u16, avro: &str) -> String {
    let topics: String = KINDS.iter().zip(TOPICS).map(|(k, t)| format!("{k} = \"{t}\"\n")).collect();
    format!(
        "[uplink.kafka]\nbrokers = [\"127.0.0.1:{kafka_port}\"]\ncreate_partitions = 2\nrequest_timeout_ms = 3000\nencoding = \"avro\"\n\
         [uplink.kafka.topics]\n{topics}{avro}\n"
    )
}

/// The agent's config plus every kind: 1-minute aggregates, sessions of `m.run`, heartbeats.
fn with_every_kind(config: String, kafka: &str) -> String {
    let config = config.replace("[uplink.outbox]", "[uplink.heartbeat]\ninterval_s = 1\n\n[uplink.outbox]");
    format!("{config}\n[pipeline.aggregate]\nsizes_ms = [60000]\n\n[pipeline.session]\nentities = [\"m.*\"]\nabove = 5.0\ngap_ms = 8000\n\n{kafka}")
}

/// Two entities (one with an anomaly, so scores and an alert exist), a machine that runs once
/// (a session), and one malformed payload (a DLQ record, whose raw bytes are Avro `bytes`);
/// returns the agent's records of every kind once each is there.
fn publish_and_wait(broker: &Mosquitto, s: &PlantAgent) -> Vec<Envelope> {
    let n = model_warmup() + 30;
    let t0 = now_ms().div_euclid(1000) * 1000 - n as i64 * STEP_MS - 60_000;
    publish_series(broker, "l1.temp", &series(11, t0, n, 20.0, Some(n - 10)));
    publish_series(broker, "l2.temp", &series(12, t0, n, 60.0, None));
    // On for 10 readings, then idle long enough for every window overlapping the run to close.
    let run: Vec<(i64, f64)> = (0..60).map(|i| (t0 + i * STEP_MS, if i < 10 { 10.0 } else { 0.5 })).collect();
    publish_series(broker, "m.run", &run);
    publish_lines(broker.plain_port(), "plant/l2/temp/value", &["\u{1}not a reading\u{ff}".to_string()], &[]);
    wait_for_outbox(&s.outbox, Duration::from_secs(90), Some(&s.agent), "records of every kind", |r| {
        r.iter().filter(|e| matches!(e.body, Body::Reading { .. })).count() >= 2 * n + 60
            && KINDS.iter().all(|k| r.iter().any(|e| kind(e) == *k))
    })
}

/// Every reference record arrived once or more, decoded to its JSON encoding, keyed by its
/// partition key, with the Avro content type. Returns the schema ids seen per topic.
fn check_decoded(reference: &[Envelope], got: &[Decoded]) -> BTreeMap<String, BTreeSet<u32>> {
    let mut by_seq: BTreeMap<u64, &Decoded> = BTreeMap::new();
    let mut ids: BTreeMap<String, BTreeSet<u32>> = BTreeMap::new();
    for d in got {
        let seq = d.value["seq"].as_u64().unwrap_or_else(|| panic!("no seq in {:?}", d.value));
        by_seq.entry(seq).or_insert(d);
        ids.entry(d.topic.clone()).or_default().insert(d.schema_id);
        assert_eq!(d.headers.get("content-type").cloned().flatten().as_deref(), Some("application/vnd.vigil.avro"));
    }
    for e in reference {
        let want: serde_json::Value = serde_json::from_str(&encode_json(e).unwrap()).unwrap();
        let d = by_seq.get(&e.seq).unwrap_or_else(|| panic!("seq {} ({}) is not on Kafka", e.seq, kind(e)));
        assert_eq!(without_nulls(&d.value), want, "seq {} ({}) decodes differently from its JSON encoding", e.seq, kind(e));
        assert_eq!(d.key.as_deref(), Some(e.partition_key()), "key of seq {}", e.seq);
    }
    let kinds: BTreeSet<&str> = reference.iter().map(kind).collect();
    assert_eq!(kinds, KINDS.into_iter().collect(), "the reference has every kind");
    ids
}

/// `value` without null-valued object members: an optional field the JSON encoding leaves out
/// is Avro's `null` branch.
fn without_nulls(value: &serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(m) => {
            serde_json::Value::Object(m.iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k.clone(), without_nulls(v))).collect())
        }
        serde_json::Value::Array(a) => serde_json::Value::Array(a.iter().map(without_nulls).collect()),
        other => other.clone(),
    }
}

/// Basic-auth GET against the registry; the body as JSON.
fn registry_get(port: u16, path: &str) -> serde_json::Value {
    let auth = format!("Basic {}", base64(format!("{REGISTRY_USER}:{REGISTRY_PASSWORD}").as_bytes()));
    let r = http_request(SocketAddr::from(([127, 0, 0, 1], port)), "GET", path, &[("Authorization", &auth)], b"").unwrap();
    assert_eq!(r.status, 200, "GET {path}: {}", String::from_utf8_lossy(&r.body));
    serde_json::from_slice(&r.body).unwrap()
}

/// Standard padded base64 (RFC 4648), for the basic-auth header.
fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The registry is down when the agent starts: records wait in the outbox (a transient failure
/// naming the registry), and once it is up the agent registers the schema under
/// `<topic>-value` (with basic authentication) and every record arrives, readable by Confluent's
/// AvroDeserializer through the registry.
#[test]
fn avro_records_registered_in_a_schema_registry_decode_with_confluents_deserializer() {
    let broker = Mosquitto::start(MosquittoOptions::default()).unwrap();
    let kafka = Tansu::start(TansuStorage::Memory).unwrap();
    let mut registry = FakeSchemaRegistry::start(Some(&format!("{REGISTRY_USER}:{REGISTRY_PASSWORD}"))).unwrap();
    let registry_url = FakeSchemaRegistry::url(&registry);
    registry.stop().unwrap();
    let avro = format!(
        "[uplink.kafka.avro]\nregistry_url = \"{registry_url}\"\nregistry_username = \"{REGISTRY_USER}\"\nregistry_password = \"{REGISTRY_PASSWORD}\"\n"
    );
    let s = PlantAgent::start_with(&broker, "avro-registry", |c| with_every_kind(c, &kafka_avro_section(kafka.port(), &avro)));

    let reference = publish_and_wait(&broker, &s);
    s.agent
        .output()
        .wait_for_from(0, "a failed Kafka delivery naming the registry", |l| {
            l.contains("delivery failed") && l.contains("sink=kafka") && l.contains("registering the Avro schema")
        }, Duration::from_secs(60))
        .expect("the agent reports the unreachable registry");

    registry.start_again().unwrap();
    let how = ["--avro-registry".to_string(), registry_url, "--avro-user".into(), format!("{REGISTRY_USER}:{REGISTRY_PASSWORD}")];
    let got = consume_avro(kafka.port(), &how, &reference);
    let ids = check_decoded(&reference, &got);

    // One schema, registered under each topic's `-value` subject, and it is the shipped one.
    let subjects = registry_get(registry.port(), "/subjects");
    let want_subjects: BTreeSet<String> = TOPICS.iter().map(|t| format!("{t}-value")).collect();
    let subjects: BTreeSet<String> = serde_json::from_value(subjects).unwrap();
    assert_eq!(subjects, want_subjects);
    let latest = registry_get(registry.port(), "/subjects/vigil.readings-value/versions/latest");
    let registered: serde_json::Value = serde_json::from_str(latest["schema"].as_str().unwrap()).unwrap();
    let shipped: serde_json::Value = serde_json::from_str(cloud_uplink::avro::RECORD_SCHEMA).unwrap();
    assert_eq!(registered, shipped, "the registered schema is cloud-uplink/schema/vigil-record.avsc");
    let id = latest["id"].as_u64().unwrap() as u32;
    for (topic, seen) in &ids {
        assert_eq!(seen, &BTreeSet::from([id]), "schema ids on {topic}");
    }
    assert!(!s.agent.output().lines().iter().any(|l| l.contains(REGISTRY_PASSWORD)), "the registry password is never logged");
    assert_no_panic(&s.agent);
}

/// Without a registry: schema ids from the configuration (registered beforehand by the central
/// team), checked by hand and decoded with fastavro against the shipped schema file.
#[test]
fn avro_with_configured_schema_ids_needs_no_registry() {
    let broker = Mosquitto::start(MosquittoOptions::default()).unwrap();
    let kafka = Tansu::start(TansuStorage::Memory).unwrap();
    let ids: Vec<(&str, u32)> = TOPICS.iter().zip([41u32, 42, 43, 70_000, 44, 45, 46]).map(|(t, id)| (*t, id)).collect();
    let table: String = ids.iter().map(|(t, id)| format!("\"{t}\" = {id}\n")).collect();
    let avro = format!("[uplink.kafka.avro.schema_ids]\n{table}");
    let s = PlantAgent::start_with(&broker, "avro-ids", |c| with_every_kind(c, &kafka_avro_section(kafka.port(), &avro)));

    let reference = publish_and_wait(&broker, &s);
    let schema_file = vigil_test_harness::repo_root().join("cloud-uplink/schema/vigil-record.avsc");
    let how = ["--avro-schema".to_string(), schema_file.display().to_string()];
    let got = consume_avro(kafka.port(), &how, &reference);
    let seen = check_decoded(&reference, &got);
    for (topic, id) in ids {
        assert_eq!(seen.get(topic), Some(&BTreeSet::from([id])), "schema id on {topic}");
    }
    assert_no_panic(&s.agent);
}
