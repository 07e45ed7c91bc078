//! The ingest flow of `mqtt_ingest` over Mosquitto's TLS listener (server authentication, then
//! mutual TLS with `require_certificate`), with certificates from the `openssl` CLI; and the
//! failure cases: a CA that did not sign the broker's certificate, and no client certificate
//! on a mutual-TLS listener. The agent must log the error, keep retrying, and ingest nothing.

mod support;

use std::path::Path;
use std::time::Duration;

use support::*;
use vigil_test_harness::{mqtt_publish_with, ClientTls, Mosquitto, MosquittoOptions, Pki, PublishOptions};

fn tls_table(port: u16, ca: &Path, client: Option<(&Path, &Path)>) -> String {
    let mut t = format!(
        "[mqtt]\nhost = \"127.0.0.1\"\nport = {port}\nreconnect_min_ms = 100\nreconnect_max_ms = 500\n\n[mqtt.tls]\nca_file = {}\n",
        q(ca)
    );
    if let Some((c, k)) = client {
        t += &format!("client_cert_file = {}\nclient_key_file = {}\n", q(c), q(k));
    }
    t
}

#[test]
fn tls_server_auth_ingest_flow() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::generate(dir.path().join("pki")).unwrap();
    let broker = Mosquitto::start(MosquittoOptions { tls: Some(&pki), max_queued_messages: Some(100_000), ..Default::default() }).unwrap();
    let link = Link {
        port: broker.tls_port(),
        mqtt_table: tls_table(broker.tls_port(), &pki.ca_cert(), None),
        client_tls: Some(ClientTls::server_auth(&pki)),
    };
    ingest_flow(&broker, &link, "ingest-tls");
}

#[test]
fn mutual_tls_ingest_flow() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::generate(dir.path().join("pki")).unwrap();
    let broker = Mosquitto::start(MosquittoOptions {
        tls: Some(&pki),
        require_client_cert: true,
        max_queued_messages: Some(100_000),
        ..Default::default()
    })
    .unwrap();
    let link = Link {
        port: broker.tls_port(),
        mqtt_table: tls_table(broker.tls_port(), &pki.ca_cert(), Some((&pki.client_cert(), &pki.client_key()))),
        client_tls: Some(ClientTls::mutual(&pki)),
    };
    ingest_flow(&broker, &link, "ingest-mtls");
}

/// Starts the agent with `mqtt_table`, waits for two failed connection attempts around a
/// publish by a correctly configured client, and asserts it never connected and ingested
/// nothing. Returns the first error line.
fn assert_cannot_connect(broker: &Mosquitto, mqtt_table: String, client: ClientTls, id: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let (data, outbox) = (dir.path().join("data"), dir.path().join("outbox"));
    let config = dir.path().join("vigil.toml");
    std::fs::write(&config, format!("{}\n{}\n{}", base_config(id, &data, &outbox), mqtt_table, FLOW_SUBSCRIPTIONS)).unwrap();
    let mut agent = spawn_agent(&config);
    let is_err = |l: &str| l.contains("MQTT connection lost") || (l.contains("ERROR") && l.contains("MQTT"));
    let first = agent.wait_for_line(is_err, Duration::from_secs(30)).expect("agent logs the connection failure");
    let now = now_ms();
    mqtt_publish_with(&PublishOptions {
        port: broker.tls_port(),
        topic: "plant/l1/temp/value".into(),
        payload: json_reading(now, 1.0).into_bytes(),
        qos: 1,
        retain: false,
        tls: Some(client),
        extra_args: vec![],
    })
    .expect("a correctly configured client can publish");
    // The agent retries (backoff <= 500 ms); the next failure proves it still cannot connect.
    let from = agent.line_count();
    agent.wait_for_line_after(from, is_err, Duration::from_secs(30)).expect("agent keeps retrying and failing");
    let lines = agent.lines();
    assert!(!lines.iter().any(|l| l.contains("MQTT connected")), "agent connected despite bad TLS:\n{}", lines.join("\n"));
    assert!(agent.try_wait().unwrap().is_none(), "agent exited instead of retrying:\n{}", lines.join("\n"));
    assert!(readings(&read_outbox(&outbox)).is_empty(), "readings ingested without a connection");
    assert_no_panic(&agent);
    first
}

#[test]
fn wrong_ca_or_missing_client_cert_fails_to_connect() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::generate(dir.path().join("pki")).unwrap();
    let other = Pki::generate(dir.path().join("other-pki")).unwrap();

    // 1. Server authentication against a CA that did not sign the broker's certificate.
    let broker = Mosquitto::start(MosquittoOptions { tls: Some(&pki), ..Default::default() }).unwrap();
    let line = assert_cannot_connect(&broker, tls_table(broker.tls_port(), &other.ca_cert(), None), ClientTls::server_auth(&pki), "wrong-ca");
    eprintln!("wrong CA: {line}");
    assert!(
        line.to_lowercase().contains("certificate") || line.to_lowercase().contains("tls"),
        "the error should name the certificate problem: {line}"
    );

    // 2. Mutual-TLS listener, agent without a client certificate.
    let mtls = Mosquitto::start(MosquittoOptions { tls: Some(&pki), require_client_cert: true, ..Default::default() }).unwrap();
    let line = assert_cannot_connect(&mtls, tls_table(mtls.tls_port(), &pki.ca_cert(), None), ClientTls::mutual(&pki), "no-client-cert");
    eprintln!("no client certificate: {line}");
}
