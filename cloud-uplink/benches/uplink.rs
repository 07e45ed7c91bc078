//! Uplink benchmark (not a test): `cargo bench -p cloud-uplink --bench uplink [-- RECORDS]`.
//!
//! Prints, from one run on this machine, against real peers on loopback (tansu for Kafka, moto
//! for S3, started by the test harness — `bash tests/peers/install.sh` first):
//! 1. outbox append rate: `append_batch` of 1000 readings per durable (fsynced) commit;
//! 2. Kafka drain rate: the outbox's drain loop with [`KafkaSink`] (read from redb, encode,
//!    produce with acks=all, commit the cursor) — compared with a **raw rskafka producer** sending
//!    the same records in batches of the same size to the same broker in the same run (the
//!    baseline). Target: ratio >= 0.8; then the same drain with Avro values (schema id from
//!    configuration), against the same baseline;
//! 3. S3 object write rate: [`S3Sink`] objects of 10 000 records (zstd JSON lines).

use std::sync::Arc;
use std::time::{Duration, Instant};

use cloud_uplink::{
    AvroEncoding, BatchLimits, Body, ClassSet, KafkaCompression, KafkaSink, KafkaSinkConfig, KafkaTopics, Outbox, OutboxConfig, Quality, RecordClass, S3Sink,
    S3SinkConfig, Sink, ValueEncoding,
};
use rskafka::client::partition::{Compression, UnknownTopicHandling};
use rskafka::client::ClientBuilder;
use vigil_test_harness::{MotoS3, Tansu, TansuStorage};

const BATCH: usize = 1000;

fn reading(i: u64) -> Body {
    Body::Reading {
        entity: format!("line1/sensor-{}", i % 64),
        value: i as f64 * 0.5,
        quality: Quality::Good,
        source: "mqtt:plant/line1".into(),
        ingest_time_ms: 1_700_000_000_000 + i as i64,
        source_seq: Some(i),
    }
}

fn open_outbox(dir: &std::path::Path, name: &str) -> Arc<Outbox> {
    let db = Arc::new(redb::Database::create(dir.join(name)).expect("redb"));
    Arc::new(Outbox::open(db, "bench-agent".into(), OutboxConfig { quota_bytes: 8 << 30, ..OutboxConfig::default() }).expect("outbox"))
}

fn fill(outbox: &Outbox, records: usize) -> Duration {
    let start = Instant::now();
    for b in 0..records.div_ceil(BATCH) {
        let batch = (0..BATCH.min(records - b * BATCH))
            .map(|i| {
                let n = (b * BATCH + i) as u64;
                (1_700_000_000_000 + n as i64 * 10, reading(n))
            })
            .collect();
        outbox.append_batch(batch).expect("append");
    }
    start.elapsed()
}

/// Runs `sink` on `outbox` until every reading is confirmed (and deleted); returns the time.
async fn drain<S: Sink>(outbox: Arc<Outbox>, sink: S, name: &str) -> Duration {
    outbox.register_sink(name, ClassSet::from_sink(&sink)).expect("register");
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let start = Instant::now();
    let task = tokio::spawn(Arc::clone(&outbox).run_sink(sink, async move {
        let _ = stop_rx.wait_for(|s| *s).await;
    }));
    loop {
        let stats = outbox.stats().expect("stats");
        if stats.class(RecordClass::Reading).records == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = start.elapsed();
    let _ = stop_tx.send(true);
    let _ = task.await;
    took
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // A benchmark, not a test: `cargo bench` passes `--bench`; test runners that list or run
    // every target (`cargo nextest run --all-targets` runs it with `--list`) get nothing.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let records: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(50_000);
    let dir = tempfile::tempdir().expect("tempdir");
    println!("uplink bench: {records} readings (CBOR envelopes ~{} B)", cloud_uplink::encode_cbor(&cloud_uplink::Envelope {
        schema: 1, agent_id: "bench-agent".into(), seq: 1, event_time_ms: 0, emitted_ms: 0, body: reading(1)
    }).map(|b| b.len()).unwrap_or(0));

    // 1. Append.
    let kafka_outbox = open_outbox(dir.path(), "kafka.redb");
    let took = fill(&kafka_outbox, records);
    println!("outbox append: {:>9.0} records/s (batches of {BATCH}, one fsynced commit each)", rate(records, took));

    // 2. Kafka: baseline raw producer vs the outbox drain loop, same broker, same records.
    let broker = Tansu::start(TansuStorage::Memory).expect("tansu");
    let bootstrap = format!("127.0.0.1:{}", broker.port());
    let client = ClientBuilder::new(vec![bootstrap.clone()]).build().await.expect("rskafka client");
    let controller = client.controller_client().expect("controller");
    for t in ["bench.raw", "bench.vigil", "bench.avro"] {
        controller.create_topic(t, 1, 1, 5000).await.expect("create topic");
    }
    let pc = client.partition_client("bench.raw", 0, UnknownTopicHandling::Retry).await.expect("partition");
    let raw: Vec<rskafka::record::Record> = (0..records as u64)
        .map(|n| {
            let env = cloud_uplink::Envelope { schema: 1, agent_id: "bench-agent".into(), seq: n + 1, event_time_ms: 0, emitted_ms: 0, body: reading(n) };
            rskafka::record::Record {
                key: Some(format!("line1/sensor-{}", n % 64).into_bytes()),
                value: Some(cloud_uplink::encode_cbor(&env).expect("cbor")),
                headers: Default::default(),
                timestamp: chrono::DateTime::from_timestamp_millis(1_700_000_000_000).unwrap_or_default(),
            }
        })
        .collect();
    let start = Instant::now();
    for chunk in raw.chunks(BATCH) {
        pc.produce(chunk.to_vec(), Compression::Lz4).await.expect("raw produce");
    }
    let raw_took = start.elapsed();
    let sink = |topic: &str, encoding: ValueEncoding| {
        KafkaSink::new(
            "kafka",
            "bench-agent",
            KafkaSinkConfig {
                brokers: vec![bootstrap.clone()],
                client_id: "vigil-bench".into(),
                topics: KafkaTopics { reading: Some(topic.into()), ..Default::default() },
                encoding,
                compression: KafkaCompression::Lz4,
                tls: None,
                sasl: None,
                create_topics: None,
                request_timeout: Duration::from_secs(10),
                max_request_bytes: 1 << 20,
            },
        )
        .expect("a Kafka sink with schema ids needs no registry")
        .with_batch_limits(BatchLimits { max_records: BATCH, max_bytes: 4 << 20, linger: Duration::ZERO })
    };
    let vigil_took = drain(Arc::clone(&kafka_outbox), sink("bench.vigil", ValueEncoding::Cbor), "kafka").await;
    let (raw_rate, vigil_rate) = (rate(records, raw_took), rate(records, vigil_took));
    println!("kafka raw producer (baseline): {raw_rate:>9.0} records/s (rskafka, lz4, {BATCH}/request)");
    println!("kafka outbox drain (KafkaSink): {vigil_rate:>9.0} records/s");
    println!("kafka drain / raw ratio: {:.2} (target >= 0.80)", vigil_rate / raw_rate);
    // The same drain with Avro values (Confluent framing, schema id from configuration).
    let avro_outbox = open_outbox(dir.path(), "avro.redb");
    fill(&avro_outbox, records);
    let ids = [("bench.avro".to_string(), 1u32)].into_iter().collect();
    let avro = ValueEncoding::Avro(AvroEncoding { registry: None, schema_ids: ids });
    let avro_took = drain(avro_outbox, sink("bench.avro", avro), "kafka").await;
    let avro_rate = rate(records, avro_took);
    println!("kafka outbox drain, Avro values: {avro_rate:>9.0} records/s (ratio to raw {:.2})", avro_rate / raw_rate);

    // 3. S3 object writes.
    let s3 = MotoS3::start().expect("moto");
    MotoS3::create_bucket(&s3, "bench").expect("bucket");
    let s3_outbox = open_outbox(dir.path(), "s3.redb");
    fill(&s3_outbox, records);
    let per_object = 10_000;
    let sink = S3Sink::new(
        "s3",
        S3SinkConfig {
            bucket: "bench".into(),
            prefix: "bench".into(),
            site: "lab".into(),
            agent_id: "bench-agent".into(),
            region: "us-east-1".into(),
            endpoint: Some(MotoS3::endpoint(&s3)),
            access_key_id: Some("test".into()),
            secret_access_key: Some("test".into()),
            allow_http: true,
            ca_pem: None,
            classes: ClassSet::ALL,
            max_object_records: per_object,
            max_object_bytes: 64 << 20,
            max_object_age: Duration::ZERO,
            multipart_threshold: 8 << 20,
            request_timeout: Duration::from_secs(30),
            zstd_level: 3,
        },
    )
    .expect("s3 sink");
    let took = drain(s3_outbox, sink, "s3").await;
    let objects = records.div_ceil(per_object);
    println!(
        "s3 objects: {objects} objects of <= {per_object} records in {:.2} s = {:.1} objects/s, {:>9.0} records/s",
        took.as_secs_f64(),
        objects as f64 / took.as_secs_f64(),
        rate(records, took)
    );
}
