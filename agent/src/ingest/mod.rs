//! Inputs: everything that turns outside data into [`Reading`]s for the commit log.
//!
//! A source decodes and validates its messages ([`decode`]) and hands each message's result to
//! the commit log as one [`IngestBatch`]. Its `on_commit` callback — for MQTT, the QoS 1
//! acknowledgement — runs only after the batch is durable. The channel to the commit log is
//! bounded: when the agent falls behind, sources block, which is the backpressure a broker
//! sees as unacknowledged messages.
//!
//! Sources: [`mqtt`] (rumqttc; Sparkplug B payloads via [`sparkplug`]), [`serial`] (firmware-bridge sensor nodes on a serial port),
//! [`modbus`] (tokio-modbus, TCP and RTU polling),
//! [`simulator_source`] (the built-in plant simulator).

pub mod decode;
pub mod modbus;
pub mod mqtt;
pub mod sequence;
pub mod serial;
pub mod simulator;
pub mod sparkplug;
pub mod subscriptions;
pub mod simulator_source;
pub mod topic;

use crate::dlq::DlqEntry;
use crate::reading::Reading;

/// Runs once the batch is durably committed (e.g. sends a QoS 1 PUBACK).
pub type OnCommit = Box<dyn FnOnce() + Send>;

/// One inbound message's worth of readings and dead letters.
pub struct IngestBatch {
    pub readings: Vec<Reading>,
    pub rejects: Vec<DlqEntry>,
    pub on_commit: Option<OnCommit>,
}

/// Capacity, in batches, of the channel from sources to the commit log.
pub const INGEST_QUEUE: usize = 1024;
