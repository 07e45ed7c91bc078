//! Modbus ingest: TCP and RTU devices polled on a schedule, their registers turned into readings
//! by a typed register map; and Modbus write-back for alerts.
//!
//! # Design constraints
//!
//! - **Pure logic apart from I/O.** [`map`] (coalescing requests, decoding replies),
//!   [`schedule`] (drift-free ticks) and [`health`] (up / degraded / down, backoff) do no I/O
//!   and are unit-tested; [`poll`] sends requests with tokio-modbus and [`serial`] drives a
//!   serial port.
//! - **Serialised per connection, independent across connections.** Each TCP device and each
//!   serial bus is one [`poll::Link`] task: one request in flight per link; a slow or dead
//!   device never blocks another link (see [`poll`] for a dead unit on a shared bus).
//! - **Same path as every source.** A poll's readings and dead letters are one
//!   [`IngestBatch`](crate::ingest::IngestBatch) on the bounded channel to the commit log
//!   (blocking when the agent is behind: backpressure pauses polling, never drops values).
//! - **Write-back is opt-in and audited** ([`writeback`]).
//!
//! The links run as tasks of one current-thread tokio runtime on the `vigil-modbus` thread
//! ([`spawn`]).

pub mod health;
pub mod map;
pub mod poll;
pub mod schedule;
pub mod serial;
pub mod writeback;

use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::Sender;
use tokio::sync::mpsc::UnboundedSender;

use crate::config::modbus::ModbusConfig;
use crate::config::ValidationConfig;
use crate::metrics::Metrics;
use poll::Sinks;
use writeback::{AuditLog, WriteCommand};

use super::IngestBatch;

/// The Modbus thread and each device's write-back command queue.
pub struct Running {
    pub thread: std::thread::JoinHandle<()>,
    pub pollers: Vec<(String, UnboundedSender<WriteCommand>)>,
}

/// Starts polling every configured device on a `vigil-modbus` thread until `stop` turns true.
pub fn spawn(
    config: &ModbusConfig,
    validation: &ValidationConfig,
    ingest: Sender<IngestBatch>,
    audit: AuditLog,
    metrics: Arc<Metrics>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<Running> {
    let (links, pollers) = poll::links(config, validation, Instant::now());
    let sinks = Sinks { ingest, audit: Some(audit), metrics };
    let thread = std::thread::Builder::new().name("vigil-modbus".into()).spawn(move || {
        let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!(error = %e, "cannot start the Modbus runtime");
                return;
            }
        };
        rt.block_on(async {
            let mut tasks = tokio::task::JoinSet::new();
            for link in links {
                tasks.spawn(link.run(sinks.clone(), stop.clone()));
            }
            while let Some(r) = tasks.join_next().await {
                if let Err(e) = r {
                    tracing::error!(error = %e, "a Modbus link task failed");
                }
            }
        });
    })?;
    Ok(Running { thread, pollers })
}
