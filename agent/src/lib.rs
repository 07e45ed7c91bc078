//! Vigil: an edge anomaly-detection agent.
//!
//! Modules follow the data's path:
//! [`ingest`] → [`commit_log`] → [`pipeline`] (windows, features) → [`inference`] →
//! [`alerts`] → [`uplink_policy`] (what enters the outbox) → uplink (the `cloud-uplink`
//! crate's outbox and sinks).
//! [`agent`] wires them together; [`config`], [`store`], [`dlq`] and [`metrics`] serve them all
//! ([`memory`]: what each entity may cost resident);
//! [`api`] serves metrics, health, a JSON API and the dashboard over local HTTP.

pub mod agent;
pub mod alerts;
pub mod api;
pub mod bench;
pub mod cli;
pub mod commit_log;
pub mod config;
pub mod dlq;
pub mod eval;
pub mod inference;
pub mod ingest;
pub mod memory;
pub mod metrics;
pub mod pipeline;
pub mod reading;
pub mod replay;
pub mod store;
pub mod tls;
pub mod uplink;
pub mod uplink_policy;
pub mod uplink_volume;
