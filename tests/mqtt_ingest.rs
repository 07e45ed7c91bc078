//! End to end over a real Mosquitto (plain TCP): four subscriptions (JSON with a two-placeholder
//! topic template, CBOR, JSON array, bare number) fed by `mosquitto_pub`; asserts the alert for
//! the anomalous entity on `vigil/<id>/alerts`, every reading exactly once in the outbox files,
//! and the model identity on score records. See `support::ingest_flow`.

mod support;

use support::*;
use vigil_test_harness::{Mosquitto, MosquittoOptions};

#[test]
fn mqtt_ingest_alerts_and_outbox() {
    let broker = Mosquitto::start(MosquittoOptions { max_queued_messages: Some(100_000), ..Default::default() }).unwrap();
    let link = Link { port: broker.plain_port(), mqtt_table: mqtt_plain(broker.plain_port()), client_tls: None };
    ingest_flow(&broker, &link, "ingest-plain");
}
