//! The Kafka sink over TLS against real peers: tansu (Kafka protocol) behind Debian's stunnel4
//! (tansu's own TLS listener did not complete handshakes here, see shared/notes/peers.md), with
//! certificates from a throw-away CA made by the `openssl` CLI. The sink's rustls client must
//! deliver through the right CA and refuse a server signed by another one.

use std::io::BufReader;
use std::sync::Arc;
use std::time::Duration;

use cloud_uplink::{
    Body, KafkaCompression, KafkaSink, KafkaSinkConfig, KafkaTopics, Quality, RecordClass, Sink, StoredRecord, ValueEncoding, SCHEMA_VERSION,
};
use vigil_test_harness::{free_port, run_peer_script, Pki, Stunnel, Tansu, TansuStorage};

fn client_tls(ca: &std::path::Path) -> Arc<rustls::ClientConfig> {
    let pem = std::fs::read(ca).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut BufReader::new(pem.as_slice())) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

fn config(port: u16, tls: Arc<rustls::ClientConfig>) -> KafkaSinkConfig {
    KafkaSinkConfig {
        brokers: vec![format!("127.0.0.1:{port}")],
        client_id: "vigil-tls-test".into(),
        topics: KafkaTopics { reading: Some("tls.readings".into()), ..Default::default() },
        encoding: ValueEncoding::Cbor,
        compression: KafkaCompression::Zstd,
        tls: Some(tls),
        sasl: None,
        create_topics: Some((2, 1)),
        request_timeout: Duration::from_secs(3),
        max_request_bytes: 1 << 20,
    }
}

fn batch(n: u64) -> Vec<StoredRecord> {
    (1..=n)
        .map(|seq| {
            let env = cloud_uplink::Envelope {
                schema: SCHEMA_VERSION,
                agent_id: "tls-agent".into(),
                seq,
                event_time_ms: 1_700_000_000_000 + seq as i64 * 1000,
                emitted_ms: 1_700_000_000_000 + seq as i64 * 1000,
                body: Body::Reading {
                    entity: format!("e{}", seq % 3),
                    value: seq as f64 * 0.5,
                    quality: Quality::Good,
                    source: "test".into(),
                    ingest_time_ms: 1_700_000_000_000,
                    source_seq: None,
                },
            };
            StoredRecord { seq, class: RecordClass::Reading, cbor: cloud_uplink::encode_cbor(&env).unwrap() }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_over_tls_delivers_with_the_right_ca_and_refuses_a_wrong_one() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::generate(dir.path().join("good")).unwrap();
    let other = Pki::generate(dir.path().join("other")).unwrap();
    // Clients reach the broker only through stunnel: the broker advertises stunnel's port.
    let tls_port = free_port();
    let broker = Tansu::start_advertising(TansuStorage::Memory, Some(tls_port)).unwrap();
    let tls = Stunnel::start(&pki, tls_port, broker.port()).unwrap();

    // Wrong CA: the handshake fails and nothing counts as delivered.
    let mut wrong = KafkaSink::new("kafka", "tls-agent", config(tls.port(), client_tls(&other.ca_cert()))).unwrap();
    let err = wrong.deliver(&batch(3)).await.expect_err("a server signed by another CA is refused");
    let mut chain = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(s) = source {
        chain.push_str(&format!(": {s}"));
        source = s.source();
    }
    assert!(err.is_retriable(), "an untrusted server is a (retried) transient failure: {chain}");
    assert!(chain.to_lowercase().contains("certificate") || chain.contains("UnknownIssuer"), "error names the certificate problem: {chain}");

    // Right CA: delivered, and an independent consumer (librdkafka with OpenSSL) reads every
    // record back over TLS too.
    let mut right = KafkaSink::new("kafka", "tls-agent", config(tls.port(), client_tls(&pki.ca_cert()))).unwrap();
    let records = batch(25);
    right.deliver(&records).await.expect("delivered over TLS");
    let ca = pki.ca_cert();
    let port = tls.port();
    let out = tokio::task::spawn_blocking(move || {
        let args = ["--ca".into(), ca.display().to_string(), format!("127.0.0.1:{port}"), "30".into(), "25".into(), "tls.readings".into()];
        run_peer_script("kafka_consume.py", &args)
    })
    .await
    .unwrap()
    .expect("consumer reads the records");
    let lines = String::from_utf8(out).unwrap();
    let mut seqs: Vec<u64> = lines
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["headers"]["vigil.seq"].as_str().unwrap().parse().unwrap()
        })
        .collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=25).collect::<Vec<_>>());
    assert_eq!(right.name(), "kafka");
}
