//! Kafka uplink against real peers: Mosquitto in, the agent, the tansu Kafka-protocol broker out,
//! and Python confluent-kafka (librdkafka) as the independent consumer.
//!
//! The agent also runs its directory sink, which is the reference for "every record": each
//! record the directory sink got must reach Kafka with the same bytes, the entity id as key, the
//! sequence in its headers, and — per key — in sequence order.

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use cloud_uplink::kafka_sink::partition_for;
use cloud_uplink::{decode_cbor, Body, Envelope};
use serde::Deserialize;
use support::*;
use vigil_test_harness::{run_peer_script, AgentProcess, Mosquitto, MosquittoOptions, MotoS3, Server, Tansu, TansuStorage};

#[derive(Debug, Deserialize)]
struct Consumed {
    topic: String,
    partition: i32,
    offset: i64,
    key: Option<String>,
    headers: HashMap<String, Option<String>>,
    value_hex: String,
}

/// A consumed Kafka message with its decoded envelope.
#[derive(Debug)]
struct KafkaRecord {
    topic: String,
    partition: i32,
    offset: i64,
    key: String,
    headers: HashMap<String, Option<String>>,
    envelope: Envelope,
}


/// Everything on `topics`, read by the independent consumer until at least `min` records.
fn consume(port: u16, topics: &[&str], min: usize, timeout: Duration) -> Vec<KafkaRecord> {
    let mut args = vec![format!("127.0.0.1:{port}"), timeout.as_secs().to_string(), min.to_string()];
    args.extend(topics.iter().map(|t| t.to_string()));
    let out = run_peer_script("kafka_consume.py", &args).unwrap_or_else(|e| panic!("consumer: {e}"));
    String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| {
            let c: Consumed = serde_json::from_str(l).unwrap();
            let envelope = decode_cbor(&hex::decode(&c.value_hex).unwrap()).unwrap_or_else(|e| panic!("offset {} does not decode: {e}", c.offset));
            KafkaRecord {
                topic: c.topic,
                partition: c.partition,
                offset: c.offset,
                key: c.key.expect("every record has a key"),
                headers: c.headers,
                envelope,
            }
        })
        .collect()
}

/// An agent on `broker` with `uplink` appended to its config and debug logs of the outbox (the
/// tests follow its deliveries).
fn start_agent(broker: &Mosquitto, id: &str, uplink: &str) -> PlantAgent {
    PlantAgent::start_with(broker, id, |c| format!("{}\n{uplink}", c.replace("log = \"info\"", "log = \"info,cloud_uplink=debug\"")))
}

/// Checks the records' Kafka framing (key, headers, partition) and, per (topic, partition, key,
/// kind), ascending seq in offset order once duplicates (redeliveries) are ignored. (Across kinds
/// the outbox drains by priority — alerts first — so a topic shared by several kinds interleaves
/// them by priority, not by seq.)
fn check_framing_and_order(records: &[KafkaRecord], partitions: u32) {
    let mut last: HashMap<(String, i32, String, &str), u64> = HashMap::new();
    let mut seen: BTreeSet<u64> = BTreeSet::new();
    let mut sorted: Vec<&KafkaRecord> = records.iter().collect();
    sorted.sort_by_key(|r| (r.topic.clone(), r.partition, r.offset));
    for r in sorted {
        let e = &r.envelope;
        assert_eq!(r.key, e.partition_key(), "key of seq {}", e.seq);
        assert_eq!(r.headers.get("vigil.seq").cloned().flatten(), Some(e.seq.to_string()));
        assert_eq!(r.headers.get("vigil.kind").cloned().flatten().as_deref(), Some(kind(e)));
        assert_eq!(r.headers.get("vigil.schema").cloned().flatten(), Some("1".to_string()));
        assert_eq!(r.partition as usize, partition_for(r.key.as_bytes(), partitions), "partition of key {}", r.key);
        // A redelivered batch repeats seqs already seen on this stream; every first copy must
        // come after every earlier first copy.
        if !seen.insert(e.seq) {
            continue;
        }
        let slot = last.entry((r.topic.clone(), r.partition, r.key.clone(), kind(e))).or_insert(0);
        assert!(e.seq > *slot, "seq {} after {} for key {} on {}/{}", e.seq, slot, r.key, r.topic, r.partition);
        *slot = e.seq;
    }
}

/// Records by seq; duplicates must be byte-identical records.
fn by_seq(records: &[KafkaRecord]) -> BTreeMap<u64, &Envelope> {
    let mut m = BTreeMap::new();
    for r in records {
        if let Some(prev) = m.insert(r.envelope.seq, &r.envelope) {
            assert_eq!(prev, &r.envelope, "duplicate seq {} differs", r.envelope.seq);
        }
    }
    m
}

const TOPICS: [&str; 4] = ["vigil.readings", "vigil.scores", "vigil.alerts", "vigil.dlq"];

fn kafka_section(port: u16, partitions: u32, topics: [&str; 4], extra: &str) -> String {
    format!(
        "[uplink.kafka]\nbrokers = [\"127.0.0.1:{port}\"]\ncreate_partitions = {partitions}\nrequest_timeout_ms = 3000\n{extra}\n\
         [uplink.kafka.topics]\nreading = \"{}\"\nscore = \"{}\"\nalert = \"{}\"\ndlq = \"{}\"\n",
        topics[0], topics[1], topics[2], topics[3]
    )
}

fn wait_outbox_readings(outbox: &Path, agent: &AgentProcess, n: usize, alerts: usize) -> Vec<Envelope> {
    wait_for_outbox(outbox, Duration::from_secs(90), Some(agent), &format!("{n} readings, {alerts} alerts"), |r| {
        r.iter().filter(|e| matches!(e.body, Body::Reading { .. })).count() >= n
            && r.iter().filter(|e| matches!(e.body, Body::Alert { .. })).count() >= alerts
    })
}

/// Every record the directory sink got (but heartbeats) is on Kafka, identical, keyed and
/// partitioned by entity, in seq order per key.
#[test]
fn kafka_receives_every_record_keyed_by_entity_in_order() {
    let broker = Mosquitto::start(MosquittoOptions::default()).unwrap();
    let kafka = Tansu::start(TansuStorage::Memory).unwrap();
    let s = start_agent(&broker, "kafka-e2e", &kafka_section(kafka.port(), 3, TOPICS, ""));
    let n = model_warmup() + 40;
    let t0 = now_ms().div_euclid(1000) * 1000 - n as i64 * STEP_MS - 60_000;
    publish_series(&broker, "l1.temp", &series(1, t0, n, 20.0, Some(n - 10)));
    publish_series(&broker, "l2.temp", &series(2, t0, n, 50.0, None));
    publish_series(&broker, "l3.temp", &series(3, t0, n, 80.0, None));
    publish_lines(broker.plain_port(), "plant/l3/temp/value", &["not a reading".to_string()], &[]);
    let reference = wait_outbox_readings(&s.outbox, &s.agent, 3 * n, 1);
    let reference = wait_for_outbox(&s.outbox, Duration::from_secs(30), Some(&s.agent), "the DLQ record", |r| {
        r.len() >= reference.len() && r.iter().any(|e| matches!(e.body, Body::Dlq { .. }))
    });
    let reference: Vec<&Envelope> = reference.iter().filter(|e| !matches!(e.body, Body::Heartbeat { .. })).collect();

    let got = consume(kafka.port(), &TOPICS, reference.len(), Duration::from_secs(60));
    check_framing_and_order(&got, 3);
    let got_by_seq = by_seq(&got);
    for e in &reference {
        assert_eq!(got_by_seq.get(&e.seq), Some(e), "seq {} ({}) missing or different on Kafka", e.seq, kind(e));
    }
    let topic_of = |r: &KafkaRecord| (r.topic.clone(), kind(&r.envelope));
    let pairs: BTreeSet<(String, &str)> = got.iter().map(topic_of).collect();
    for (topic, kind) in &pairs {
        assert_eq!(topic, &format!("vigil.{kind}s").replace("vigil.dlqs", "vigil.dlq"), "{kind} on {topic}");
    }
    assert!(pairs.iter().any(|(_, k)| *k == "alert"), "the anomaly's alert reached Kafka: {pairs:?}");
    assert_no_panic(&s.agent);
}

/// Broker outage and an agent crash mid-drain. tansu keeps its log in an S3 bucket (moto) so it
/// survives its own restart. All kinds go to one single-partition topic, so offsets are the
/// order of arrival: alerts raised during the outage must arrive before the backlog's readings.
#[test]
fn kafka_outage_and_crash_mid_drain_lose_nothing_and_alerts_go_first() {
    let broker = Mosquitto::start(MosquittoOptions { max_queued_messages: Some(1_000_000), ..Default::default() }).unwrap();
    let s3 = MotoS3::start().unwrap();
    MotoS3::create_bucket(&s3, "tansu").unwrap();
    let mut kafka: Server = Tansu::start(TansuStorage::S3 { endpoint: MotoS3::endpoint(&s3), bucket: "tansu".into() }).unwrap();
    let one = ["vigil.all"; 4];
    let mut s = start_agent(&broker, "kafka-outage", &kafka_section(kafka.port(), 1, one, "max_batch_records = 100"));

    // Phase 1: link up.
    let warm = model_warmup();
    let n1 = warm + 10;
    let n2 = 600;
    let t0 = now_ms().div_euclid(1000) * 1000 - (n1 + n2) as i64 * STEP_MS - 60_000;
    let entities = ["a.temp", "b.temp", "c.temp"];
    let full: Vec<Vec<(i64, f64)>> =
        entities.iter().enumerate().map(|(i, _)| series(20 + i as u64, t0, n1 + n2, 30.0 + 10.0 * i as f64, (i == 0).then_some(n1 + n2 - 20))).collect();
    for (e, ser) in entities.iter().zip(&full) {
        publish_series(&broker, e, &ser[..n1]);
    }
    wait_outbox_readings(&s.outbox, &s.agent, 3 * n1, 0);
    consume(kafka.port(), &["vigil.all"], 3 * n1, Duration::from_secs(60));

    // Phase 2: broker down; the agent keeps ingesting (the directory sink keeps delivering).
    kafka.stop().unwrap();
    for (e, ser) in entities.iter().zip(&full) {
        publish_series(&broker, e, &ser[n1..]);
    }
    let reference = wait_outbox_readings(&s.outbox, &s.agent, 3 * (n1 + n2), 1);
    let from = s.agent.line_count();
    s.agent
        .output()
        .wait_for_from(from, "a failed Kafka delivery", |l| l.contains("delivery failed") && l.contains("kafka"), Duration::from_secs(30))
        .expect("the agent notices the outage");

    // Phase 3: broker back; kill -9 the agent as soon as the drain has delivered something,
    // then restart it on the same state.
    let from = s.agent.line_count();
    kafka.start_again().unwrap();
    s.agent
        .output()
        .wait_for_from(from, "a Kafka delivery after the outage", |l| l.contains("delivered") && l.contains("sink=kafka"), Duration::from_secs(60))
        .expect("drain starts");
    s.agent.kill_9().unwrap();
    s.agent = spawn_agent(&s.config);

    let reference: Vec<&Envelope> = reference.iter().filter(|e| !matches!(e.body, Body::Heartbeat { .. })).collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    let got = loop {
        let got = consume(kafka.port(), &["vigil.all"], reference.len(), Duration::from_secs(60));
        let seqs = by_seq(&got);
        if reference.iter().all(|e| seqs.contains_key(&e.seq)) || Instant::now() > deadline {
            break got;
        }
    };
    check_framing_and_order(&got, 1);
    let seqs = by_seq(&got);
    for e in &reference {
        assert_eq!(seqs.get(&e.seq), Some(e), "seq {} ({}) lost", e.seq, kind(e));
    }
    let duplicates = got.len() - seqs.len();
    eprintln!("{} records on Kafka, {} distinct, {duplicates} redelivered after the crash", got.len(), seqs.len());

    // Alerts raised during the outage arrived before the backlog's readings (first copies).
    let mut first_offset: BTreeMap<u64, i64> = BTreeMap::new();
    for r in &got {
        first_offset.entry(r.envelope.seq).or_insert(r.offset);
    }
    let outage_alerts: Vec<i64> = reference
        .iter()
        .filter(|e| matches!(e.body, Body::Alert { .. }))
        .map(|e| first_offset[&e.seq])
        .collect();
    assert!(!outage_alerts.is_empty());
    let phase2_start = t0 + n1 as i64 * STEP_MS;
    let backlog_readings: Vec<i64> = reference
        .iter()
        .filter(|e| matches!(&e.body, Body::Reading { .. }) && e.event_time_ms >= phase2_start)
        .map(|e| first_offset[&e.seq])
        .collect();
    let last_alert = *outage_alerts.iter().max().unwrap();
    let first_backlog_reading = *backlog_readings.iter().min().expect("backlog readings");
    assert!(last_alert < first_backlog_reading, "alert at offset {last_alert} after backlog reading at {first_backlog_reading}");
    assert_no_panic(&s.agent);
}
