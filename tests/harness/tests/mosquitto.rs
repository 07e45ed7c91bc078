//! The harness against the real Mosquitto and its real clients.

use std::time::{Duration, Instant};

use vigil_test_harness::*;

const T: Duration = Duration::from_secs(10);

#[test]
fn plain_broker_delivers_a_binary_publish_to_the_subscriber() {
    let broker = Mosquitto::start(MosquittoOptions::default()).unwrap();
    let sub = Subscriber::start(SubscriberOptions::new(broker.plain_port(), "vigil/#")).unwrap();
    let payload = [0u8, 1, 2, 0xff, b'\t', b'\n', b'x'];
    mqtt_publish(broker.plain_port(), "vigil/raw data", &payload, 1).unwrap();
    let m = sub.wait_for(|m| m.topic == "vigil/raw data", T).unwrap();
    assert_eq!(m.payload, payload);
    assert_eq!(m.qos, 1);
    assert!(!m.retained);
    broker.wait_for_log(|l| l.contains("New client connected"), T).unwrap();
    assert!(std::fs::read_to_string(broker.log_path()).unwrap().contains("mosquitto version"));
}

#[test]
fn subscriber_counts_orders_and_sees_retained_and_empty_messages() {
    let broker = Mosquitto::start(MosquittoOptions::default()).unwrap();
    let port = broker.plain_port();
    mqtt_publish_with(&PublishOptions {
        port,
        topic: "r/1".into(),
        payload: b"kept".to_vec(),
        qos: 1,
        retain: true,
        tls: None,
        extra_args: vec![],
    })
    .unwrap();
    let sub = Subscriber::start(SubscriberOptions::new(port, "#")).unwrap();
    let r = sub.next_message(T).unwrap();
    assert_eq!((r.topic.as_str(), r.payload.as_slice(), r.retained), ("r/1", &b"kept"[..], true));
    for i in 0..3 {
        mqtt_publish(port, "seq", i.to_string().as_bytes(), 0).unwrap();
    }
    mqtt_publish(port, "empty", b"", 1).unwrap();
    let seq = sub.wait_for_count(3, |m| m.topic == "seq", T).unwrap();
    let got: Vec<_> = seq.iter().map(|m| m.payload_str().into_owned()).collect();
    assert_eq!(got, ["0", "1", "2"]);
    assert_eq!(sub.next_message(T).unwrap().payload, b"0");
    assert!(sub.wait_for(|m| m.topic == "empty", T).unwrap().payload.is_empty());
    // A message that never comes times out with a useful error.
    let err = sub.wait_for(|m| m.topic == "never", Duration::from_millis(100)).unwrap_err();
    assert!(matches!(err, HarnessError::Timeout { .. }), "{err}");
}

#[test]
fn tls_broker_with_server_auth() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::generate(dir.path()).unwrap();
    let broker =
        Mosquitto::start(MosquittoOptions { tls: Some(&pki), ..Default::default() }).unwrap();
    assert_ne!(broker.plain_port(), broker.tls_port());
    let tls = ClientTls::server_auth(&pki);
    let sub = Subscriber::start(SubscriberOptions::tls(broker.tls_port(), "t/#", tls.clone()))
        .unwrap();
    mqtt_publish_with(&PublishOptions {
        port: broker.tls_port(),
        topic: "t/1".into(),
        payload: b"over tls".to_vec(),
        qos: 1,
        retain: false,
        tls: Some(tls),
        extra_args: vec![],
    })
    .unwrap();
    assert_eq!(sub.wait_for(|m| m.topic == "t/1", T).unwrap().payload, b"over tls");
    // Plain publish reaches TLS subscribers too (same broker).
    mqtt_publish(broker.plain_port(), "t/2", b"plain", 1).unwrap();
    sub.wait_for(|m| m.topic == "t/2", T).unwrap();

    // A client that does not trust the CA is refused.
    let other = tempfile::tempdir().unwrap();
    let other_pki = Pki::generate(other.path()).unwrap();
    let err = mqtt_publish_with(&PublishOptions {
        port: broker.tls_port(),
        topic: "t/3".into(),
        payload: b"x".to_vec(),
        qos: 1,
        retain: false,
        tls: Some(ClientTls::server_auth(&other_pki)),
        extra_args: vec![],
    })
    .unwrap_err();
    assert!(matches!(err, HarnessError::Command { .. }), "{err}");
}

#[test]
fn mutual_tls_requires_the_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::generate(dir.path()).unwrap();
    let broker = Mosquitto::start(MosquittoOptions {
        tls: Some(&pki),
        require_client_cert: true,
        ..Default::default()
    })
    .unwrap();
    let sub = Subscriber::start(SubscriberOptions::tls(
        broker.tls_port(),
        "m/#",
        ClientTls::mutual(&pki),
    ))
    .unwrap();
    let publish = |tls: ClientTls| {
        mqtt_publish_with(&PublishOptions {
            port: broker.tls_port(),
            topic: "m/1".into(),
            payload: b"mutual".to_vec(),
            qos: 1,
            retain: false,
            tls: Some(tls),
            extra_args: vec![],
        })
    };
    publish(ClientTls::mutual(&pki)).unwrap();
    assert_eq!(sub.wait_for(|m| m.topic == "m/1", T).unwrap().payload, b"mutual");
    let err = publish(ClientTls::server_auth(&pki)).unwrap_err();
    assert!(matches!(err, HarnessError::Command { .. }), "{err}");
}

#[test]
fn restart_keeps_ports_and_persistent_sessions() {
    let mut broker = Mosquitto::start(MosquittoOptions {
        max_queued_messages: Some(100),
        extra_config: vec!["max_inflight_messages 10".into()],
        ..Default::default()
    })
    .unwrap();
    let port = broker.plain_port();
    let durable = |_: ()| {
        let mut o = SubscriberOptions::new(port, "q/#");
        o.extra_args = vec!["-i".into(), "durable".into(), "-c".into()];
        Subscriber::start(o)
    };
    // Register a persistent session, then go away.
    drop(durable(()).unwrap());
    broker.wait_for_log(|l| l.contains("Client durable closed its connection"), T).unwrap();
    mqtt_publish(port, "q/1", b"queued", 1).unwrap();

    let t0 = Instant::now();
    broker.restart().unwrap();
    assert!(t0.elapsed() < Duration::from_secs(5));
    assert_eq!(broker.plain_port(), port);

    let sub = durable(()).unwrap();
    assert_eq!(sub.wait_for(|m| m.topic == "q/1", T).unwrap().payload, b"queued");

    // Crash and start again.
    broker.kill_9().unwrap();
    assert!(!broker.is_running());
    assert!(mqtt_publish(port, "q/2", b"x", 0).is_err());
    broker.start_again().unwrap();
    mqtt_publish(port, "q/2", b"back", 0).unwrap();
}

#[test]
fn broker_that_cannot_start_reports_its_log() {
    let err = Mosquitto::start(MosquittoOptions {
        extra_config: vec!["this_is_not_an_option 1".into()],
        ..Default::default()
    })
    .err()
    .expect("bad config must fail");
    let text = err.to_string();
    assert!(text.contains("this_is_not_an_option") || text.contains("Error"), "{text}");
}

#[test]
fn wait_for_port_times_out_on_a_closed_port() {
    let port = free_port();
    assert_ne!(port, free_port());
    let err = wait_for_port(("127.0.0.1", port), Duration::from_millis(100)).unwrap_err();
    assert!(matches!(err, HarnessError::Timeout { .. }));
}
