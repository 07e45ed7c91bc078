//! The S3 sink's multipart path against a real S3 server (moto): with a threshold of one byte
//! every object goes through CreateMultipartUpload / UploadPart / CompleteMultipartUpload, and
//! must read back (independent client: Python boto3) as exactly the records delivered.

use std::time::Duration;

use cloud_uplink::s3_sink::decode_object;
use cloud_uplink::{Body, ClassSet, Envelope, Quality, RecordClass, S3Sink, S3SinkConfig, Sink, StoredRecord, SCHEMA_VERSION};
use vigil_test_harness::{run_peer_script, MotoS3};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_objects_read_back_exactly() {
    let s3 = MotoS3::start().unwrap();
    MotoS3::create_bucket(&s3, "multipart-test").unwrap();
    let mut sink = S3Sink::new(
        "s3",
        S3SinkConfig {
            bucket: "multipart-test".into(),
            prefix: "p".into(),
            site: "lab".into(),
            agent_id: "mp-agent".into(),
            region: "us-east-1".into(),
            endpoint: Some(MotoS3::endpoint(&s3)),
            access_key_id: Some("test".into()),
            secret_access_key: Some("test".into()),
            allow_http: true,
            ca_pem: None,
            classes: ClassSet::ALL,
            max_object_records: 10_000,
            max_object_bytes: 64 << 20,
            max_object_age: Duration::ZERO,
            multipart_threshold: 1,
            request_timeout: Duration::from_secs(20),
            zstd_level: 3,
        },
    )
    .unwrap();
    let t0 = 1_800_000_000_000i64; // an hour boundary is crossed below (records 1 s apart)
    let envelopes: Vec<Envelope> = (1..=5000u64)
        .map(|seq| Envelope {
            schema: SCHEMA_VERSION,
            agent_id: "mp-agent".into(),
            seq,
            event_time_ms: t0 - 2_000_000 + seq as i64 * 1000,
            emitted_ms: t0,
            body: Body::Reading {
                entity: format!("e{}", seq % 7),
                value: seq as f64 / 3.0,
                quality: Quality::Good,
                source: "test".into(),
                ingest_time_ms: t0,
                source_seq: Some(seq),
            },
        })
        .collect();
    let batch: Vec<StoredRecord> = envelopes
        .iter()
        .map(|e| StoredRecord { seq: e.seq, class: RecordClass::Reading, cbor: cloud_uplink::encode_cbor(e).unwrap() })
        .collect();
    sink.deliver(&batch).await.expect("multipart delivery");

    let endpoint = MotoS3::endpoint(&s3);
    let out = tokio::task::spawn_blocking(move || run_peer_script("s3_dump.py", &[endpoint, "multipart-test".into()])).await.unwrap().unwrap();
    let mut back: Vec<Envelope> = Vec::new();
    let mut keys = Vec::new();
    for line in String::from_utf8(out).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        keys.push(v["key"].as_str().unwrap().to_string());
        back.extend(decode_object(&hex::decode(v["body_hex"].as_str().unwrap()).unwrap()).unwrap());
    }
    assert_eq!(keys.len(), 2, "one object per event-time hour: {keys:?}");
    back.sort_by_key(|e| e.seq);
    assert_eq!(back, envelopes);
}

