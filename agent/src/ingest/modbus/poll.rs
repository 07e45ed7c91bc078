//! The polling I/O: one [`Link`] per connection — each TCP device has its own, the devices on
//! one serial port share one — running as a task of the Modbus thread's runtime.
//!
//! # Design constraints
//!
//! - **One request at a time per link.** A link owns its connection and awaits each reply (or
//!   its timeout) before the next request, so devices on one RTU bus are serialised, and
//!   write-back commands go out between polls, never interleaved with them.
//! - **One dead device never delays the others.** TCP devices are separate links (separate
//!   tasks, separate connections). On a shared bus, a device that does not answer its first
//!   request is given up for the rest of that poll and then backs off ([`super::health`]), so it
//!   costs the bus one timeout chain (`timeout_ms` × (1 + `retries`)) per backoff period.
//! - **Event time = poll time.** Each reading's event time is the wall-clock time its request
//!   (the attempt that was answered) was sent. Polls run on drift-free ticks
//!   ([`super::schedule`]); ticks missed while a poll overran are counted.
//! - **Nothing lost silently.** Exception replies and malformed replies become DLQ records
//!   (reasons `modbus_exception`, `malformed_reply`; a request that keeps failing the same way
//!   is dead-lettered at most once per [`DLQ_REPEAT`], and counted every time); values go
//!   through the value check every source shares (`non_finite`, `out_of_range`). Requests
//!   that get no reply are counted (`vigil_modbus_timeouts`) and move the device's state.
//! - **Quality.** A value read on the first attempt is `good`; one that needed retries is
//!   `uncertain` (the link is flaky).
//! - **Reconnect.** A TCP connection is dropped and reopened after a timeout, a transport error
//!   or a reply that is out of step; a serial port is reopened after a transport error.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio_modbus::client::{Client, Context};
use tokio_modbus::prelude::{Request, Response, Slave, SlaveContext};

use super::health::{DeviceState, Health, PollOutcome};
use super::map::{check_reply, decode, plan, PlanLimits, ReadRequest, Reply};
use super::schedule::Ticker;
use super::serial::SerialPort;
use super::writeback::{AuditLog, WriteCommand};
use crate::config::modbus::{ModbusConfig, ModbusDevice, Parity, Table};
use crate::config::ValidationConfig;
use crate::dlq::{DlqEntry, DlqReason};
use crate::ingest::decode::check_value;
use crate::ingest::IngestBatch;
use crate::metrics::Metrics;
use crate::reading::{now_ms, Quality, Reading, SourceKind};

/// A request that keeps failing the same way is dead-lettered at most once per this period.
pub const DLQ_REPEAT: Duration = Duration::from_secs(60);

/// How a link reaches its devices.
#[derive(Debug, Clone, PartialEq)]
pub enum Transport {
    Tcp(String),
    Rtu { path: PathBuf, baud: u32, parity: Parity, stop_bits: u8 },
}

impl Transport {
    fn of(d: &ModbusDevice) -> Transport {
        match (&d.tcp, &d.serial_port) {
            (Some(addr), _) => Transport::Tcp(addr.clone()),
            (None, path) => Transport::Rtu { path: path.clone().unwrap_or_default(), baud: d.baud_rate, parity: d.parity, stop_bits: d.stop_bits },
        }
    }

    fn describe(&self) -> String {
        match self {
            Transport::Tcp(a) => format!("tcp {a}"),
            Transport::Rtu { path, baud, parity, stop_bits } => format!("rtu {} {baud} {parity:?} {stop_bits}", path.display()),
        }
    }

    async fn open(&self, unit: u8) -> std::io::Result<Context> {
        match self {
            Transport::Tcp(addr) => {
                let stream = tokio::net::TcpStream::connect(addr.as_str()).await?;
                stream.set_nodelay(true)?;
                Ok(tokio_modbus::client::tcp::attach_slave(stream, Slave(unit)))
            }
            Transport::Rtu { path, baud, parity, stop_bits } => {
                let port = SerialPort::open(path, *baud, *parity, *stop_bits)?;
                Ok(tokio_modbus::client::rtu::attach_slave(port, Slave(unit)))
            }
        }
    }
}

/// The result of one attempt at one request.
enum Attempt {
    Reply(Response),
    Exception(tokio_modbus::ExceptionCode),
    Malformed(String),
    NoReply(String),
}

/// A link's connection, opened on demand.
struct Connection {
    transport: Transport,
    client: Option<Context>,
}

impl Connection {
    async fn attempt(&mut self, unit: u8, request: Request<'static>, timeout: Duration, metrics: &Metrics) -> Attempt {
        let m = &metrics.modbus;
        if self.client.is_none() {
            match tokio::time::timeout(timeout, self.transport.open(unit)).await {
                Ok(Ok(client)) => self.client = Some(client),
                Ok(Err(e)) => return Attempt::NoReply(format!("cannot connect: {e}")),
                Err(_) => return Attempt::NoReply(format!("connect timed out after {} ms", timeout.as_millis())),
            }
        }
        let Some(client) = self.client.as_mut() else { return Attempt::NoReply("not connected".into()) };
        client.set_slave(Slave(unit));
        m.requests.inc();
        let tcp = matches!(self.transport, Transport::Tcp(_));
        match tokio::time::timeout(timeout, client.call(request)).await {
            Err(_) => {
                m.timeouts.inc();
                // A late TCP reply would arrive as the answer to the next request.
                if tcp {
                    self.client = None;
                }
                Attempt::NoReply(format!("no reply within {} ms", timeout.as_millis()))
            }
            Ok(Err(tokio_modbus::Error::Transport(e))) if e.kind() == std::io::ErrorKind::InvalidData => {
                m.malformed.inc();
                self.client = None;
                Attempt::Malformed(e.to_string())
            }
            Ok(Err(tokio_modbus::Error::Transport(e))) => {
                m.timeouts.inc();
                self.client = None;
                Attempt::NoReply(format!("connection lost: {e}"))
            }
            Ok(Err(tokio_modbus::Error::Protocol(e))) => {
                m.malformed.inc();
                if tcp {
                    self.client = None;
                }
                Attempt::Malformed(e.to_string())
            }
            Ok(Ok(Err(code))) => {
                m.exceptions.inc();
                Attempt::Exception(code)
            }
            Ok(Ok(Ok(response))) => Attempt::Reply(response),
        }
    }

    /// Up to `1 + retries` attempts; exceptions and replies end it, the last failure is
    /// returned otherwise. Also returns the send time of the last attempt and the count.
    async fn request(&mut self, unit: u8, request: Request<'static>, device: &ModbusDevice, metrics: &Metrics) -> (Attempt, i64, u32) {
        let timeout = Duration::from_millis(device.timeout_ms);
        let mut last = Attempt::NoReply("no attempt".into());
        let mut sent_ms = now_ms();
        for n in 1..=device.retries.saturating_add(1) {
            sent_ms = now_ms();
            last = self.attempt(unit, request.clone(), timeout, metrics).await;
            if matches!(last, Attempt::Reply(_) | Attempt::Exception(_)) {
                return (last, sent_ms, n);
            }
        }
        (last, sent_ms, device.retries.saturating_add(1))
    }
}

fn reply_of(response: Response) -> Result<Reply, String> {
    match response {
        Response::ReadHoldingRegisters(w) | Response::ReadInputRegisters(w) => Ok(Reply::Registers(w)),
        Response::ReadCoils(b) | Response::ReadDiscreteInputs(b) => Ok(Reply::Bits(b)),
        other => Err(format!("unexpected reply {other:?}")),
    }
}

fn read_request(r: &ReadRequest) -> Request<'static> {
    match r.table {
        Table::Holding => Request::ReadHoldingRegisters(r.address, r.count),
        Table::Input => Request::ReadInputRegisters(r.address, r.count),
        Table::Coil => Request::ReadCoils(r.address, r.count),
        Table::Discrete => Request::ReadDiscreteInputs(r.address, r.count),
    }
}

/// One poll group of one device.
struct Group {
    name: String,
    ticker: Ticker,
    requests: Vec<ReadRequest>,
}

/// One device (unit id) on a link.
struct Device {
    cfg: ModbusDevice,
    groups: Vec<Group>,
    health: Health,
    /// `(group, request)` → when its last DLQ record was made.
    dlq_last: HashMap<(usize, usize), Instant>,
}

/// What a poll produced, for the benchmark.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PollStats {
    pub requests: usize,
    pub points: usize,
}

/// Where a link's output goes.
#[derive(Clone)]
pub struct Sinks {
    pub ingest: Sender<IngestBatch>,
    pub audit: Option<AuditLog>,
    pub metrics: Arc<Metrics>,
}

/// One connection and the devices behind it.
pub struct Link {
    name: String,
    conn: Connection,
    devices: Vec<Device>,
    /// Value bounds every decoded point must pass (`[validation]`, as for every source).
    validation: ValidationConfig,
    /// Write-back commands; `None` once every sender is gone.
    commands: Option<UnboundedReceiver<WriteCommand>>,
}

/// The links for `config`, with ticks anchored at `anchor`, and each device's write-back
/// command queue (`(device name, sender)`). Decoded values are checked against `validation`.
pub fn links(config: &ModbusConfig, validation: &ValidationConfig, anchor: Instant) -> (Vec<Link>, Vec<(String, UnboundedSender<WriteCommand>)>) {
    let mut links: Vec<Link> = Vec::new();
    let mut senders: Vec<(Transport, UnboundedSender<WriteCommand>)> = Vec::new();
    let mut pollers = Vec::new();
    for d in &config.devices {
        let transport = Transport::of(d);
        let device = Device {
            groups: groups(d, anchor),
            health: Health::new(Duration::from_millis(d.backoff_min_ms), Duration::from_millis(d.backoff_max_ms)),
            dlq_last: HashMap::new(),
            cfg: d.clone(),
        };
        // Devices on one serial port share a link; every TCP device has its own.
        let shared = matches!(transport, Transport::Rtu { .. }).then(|| links.iter().position(|l| l.conn.transport == transport)).flatten();
        match shared {
            Some(i) => {
                links[i].devices.push(device);
                pollers.push((d.name.clone(), senders[i].1.clone()));
            }
            None => {
                let (tx, rx) = unbounded_channel();
                pollers.push((d.name.clone(), tx.clone()));
                senders.push((transport.clone(), tx));
                links.push(Link { name: transport.describe(), conn: Connection { transport, client: None }, devices: vec![device], validation: validation.clone(), commands: Some(rx) });
            }
        }
    }
    (links, pollers)
}

/// The poll groups of a device that have points: the default group (`poll_interval_ms`), then
/// the named groups.
fn groups(d: &ModbusDevice, anchor: Instant) -> Vec<Group> {
    let limits = PlanLimits::of(d);
    let mut named: Vec<(String, u64, Option<&str>)> = vec![("default".into(), d.poll_interval_ms, None)];
    named.extend(d.poll_groups.iter().map(|g| (g.name.clone(), g.interval_ms, Some(g.name.as_str()))));
    named
        .into_iter()
        .filter_map(|(name, interval_ms, key)| {
            let selected: Vec<usize> = (0..d.points.len()).filter(|&i| d.points[i].group.as_deref() == key).collect();
            (!selected.is_empty()).then(|| Group {
                name,
                ticker: Ticker::new(anchor, Duration::from_millis(interval_ms)),
                requests: plan(&d.points, &selected, &limits),
            })
        })
        .collect()
}

/// `(device, group, interval ms, points, requests per poll)` for every group, for logs and
/// `vigil check-config`.
pub fn describe(config: &ModbusConfig) -> Vec<(String, String, String, usize, usize)> {
    let anchor = Instant::now();
    let mut out = Vec::new();
    for d in &config.devices {
        for g in groups(d, anchor) {
            let points = g.requests.iter().map(|r| r.points.len()).sum();
            let interval = d.poll_groups.iter().find(|p| p.name == g.name).map_or(d.poll_interval_ms, |p| p.interval_ms);
            out.push((d.name.clone(), Transport::of(d).describe(), format!("{} ({interval} ms)", g.name), points, g.requests.len()));
        }
    }
    out
}

impl Link {
    /// Polls on schedule and runs write commands until `stop` turns true or the commit log
    /// goes away.
    pub async fn run(mut self, sinks: Sinks, mut stop: tokio::sync::watch::Receiver<bool>) {
        for d in &self.devices {
            for g in &d.groups {
                tracing::info!(link = %self.name, device = %d.cfg.name, unit = d.cfg.unit_id, group = %g.name, requests = g.requests.len(),
                    points = g.requests.iter().map(|r| r.points.len()).sum::<usize>(), "modbus: polling");
            }
        }
        let mut commands = self.commands.take();
        loop {
            let due = self.devices.iter().flat_map(|d| d.groups.iter().map(|g| g.ticker.due())).min();
            let Some(due) = due else { return };
            let next_command = async {
                match commands.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            };
            let woke = tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                command = next_command => Some(command),
                _ = tokio::time::sleep_until(due.into()) => None,
            };
            match woke {
                Some(Some(command)) => self.write(command, &sinks).await,
                // Every sender is gone (no write-back rules): only ticks from now on.
                Some(None) => commands = None,
                None => {
                    tokio::select! {
                        _ = stop.wait_for(|s| *s) => return,
                        alive = self.poll_due(&sinks) => if !alive { return },
                    }
                }
            }
        }
    }

    /// Polls every group whose tick is due. Returns false when the commit log has gone.
    async fn poll_due(&mut self, sinks: &Sinks) -> bool {
        for di in 0..self.devices.len() {
            for gi in 0..self.devices[di].groups.len() {
                let now = Instant::now();
                if self.devices[di].groups[gi].ticker.due() > now {
                    continue;
                }
                if self.devices[di].health.may_poll(now) {
                    let (batch, _) = self.poll_group(di, gi, sinks).await;
                    let empty = batch.readings.is_empty() && batch.rejects.is_empty();
                    if !empty && sinks.ingest.send(batch).is_err() {
                        return false;
                    }
                }
                let missed = self.devices[di].groups[gi].ticker.advance(Instant::now());
                if missed > 0 {
                    sinks.metrics.modbus.missed_ticks.add(missed);
                    let d = &self.devices[di];
                    tracing::debug!(device = %d.cfg.name, group = %d.groups[gi].name, missed, "modbus: poll overran its interval; ticks skipped");
                }
            }
        }
        true
    }

    /// Polls every group of every device once, now, ignoring ticks and backoff (the benchmark).
    pub async fn poll_all_once(&mut self, sinks: &Sinks) -> PollStats {
        let mut stats = PollStats::default();
        for di in 0..self.devices.len() {
            for gi in 0..self.devices[di].groups.len() {
                let (batch, s) = self.poll_group(di, gi, sinks).await;
                stats.requests += s.requests;
                stats.points += s.points;
                drop(batch);
            }
        }
        stats
    }

    /// One poll of one group: its readings and dead letters, and the device's new health.
    async fn poll_group(&mut self, di: usize, gi: usize, sinks: &Sinks) -> (IngestBatch, PollStats) {
        let metrics = &sinks.metrics;
        let mut batch = IngestBatch { readings: Vec::new(), rejects: Vec::new(), on_commit: None };
        let mut outcome = PollOutcome::default();
        let mut stats = PollStats::default();
        let device = &mut self.devices[di];
        let (unit, name) = (device.cfg.unit_id, device.cfg.name.clone());
        for ri in 0..device.groups[gi].requests.len() {
            let req = &device.groups[gi].requests[ri];
            let (attempt, sent_ms, attempts) = self.conn.request(unit, read_request(req), &device.cfg, metrics).await;
            stats.requests += attempts as usize;
            let topic = format!("modbus:{name}/{unit}:{}", req.describe());
            let reject = |reason: DlqReason, raw: Vec<u8>, detail: String| DlqEntry { source: SourceKind::Modbus, topic: topic.clone(), raw, reason, detail, received_ms: now_ms() };
            let mut dead_letter: Option<DlqEntry> = None;
            match attempt {
                Attempt::Reply(response) => {
                    outcome.answered += 1;
                    if attempts > 1 {
                        outcome.troubled += 1;
                    }
                    let reply = reply_of(response).and_then(|r| check_reply(req, &r).map(|()| r).map_err(|e| e.to_string()));
                    match reply {
                        Ok(reply) => {
                            let quality = if attempts > 1 { Quality::Uncertain } else { Quality::Good };
                            let ingest_time_ms = now_ms();
                            for &pi in &req.points {
                                let point = &device.cfg.points[pi];
                                let value = decode(point, req, &reply);
                                match check_value(&self.validation, value) {
                                    Ok(()) => batch.readings.push(Reading {
                                        entity: point.entity.clone(),
                                        event_time_ms: sent_ms,
                                        value,
                                        quality,
                                        source: SourceKind::Modbus,
                                        ingest_time_ms,
                                        seq: 0,
                                        source_seq: None,
                                    }),
                                    Err(r) => batch.rejects.push(reject(r.reason, raw_bytes(&reply), format!("{}: {}", point.entity, r.detail))),
                                }
                            }
                            stats.points += req.points.len();
                            metrics.modbus.points.add(req.points.len() as u64);
                        }
                        Err(detail) => {
                            metrics.modbus.malformed.inc();
                            outcome.troubled += 1;
                            dead_letter = Some(reject(DlqReason::MalformedReply, detail.as_bytes().to_vec(), detail));
                        }
                    }
                }
                Attempt::Exception(code) => {
                    outcome.answered += 1;
                    outcome.troubled += 1;
                    let function = read_request(req).function_code().value();
                    dead_letter = Some(reject(DlqReason::ModbusException, vec![function | 0x80, u8::from(code)], format!("exception {:#04x} ({code}) reading {}", u8::from(code), req.describe())));
                }
                Attempt::Malformed(detail) => {
                    outcome.answered += 1;
                    outcome.troubled += 1;
                    dead_letter = Some(reject(DlqReason::MalformedReply, detail.as_bytes().to_vec(), detail));
                }
                Attempt::NoReply(detail) => {
                    outcome.failed += 1;
                    if outcome.answered == 0 {
                        // Not answering at all: give up this poll (the rest would time out too).
                        tracing::debug!(device = %name, request = %req.describe(), %detail, "modbus: no reply");
                        break;
                    }
                }
            }
            if let Some(entry) = dead_letter {
                let now = Instant::now();
                let last = device.dlq_last.get(&(gi, ri));
                if last.is_none_or(|t| now.saturating_duration_since(*t) >= DLQ_REPEAT) {
                    tracing::warn!(device = %name, request = %req.describe(), reason = %entry.reason, detail = %entry.detail, "modbus: dead-lettered");
                    device.dlq_last.insert((gi, ri), now);
                    batch.rejects.push(entry);
                }
            } else if outcome.failed == 0 {
                device.dlq_last.remove(&(gi, ri));
            }
        }
        let now = Instant::now();
        if let Some(state) = device.health.record(outcome, now) {
            metrics.modbus.set_device_state(&name, state.as_str());
            match state {
                DeviceState::Up => tracing::info!(device = %name, link = %self.name, "modbus device up"),
                DeviceState::Degraded => tracing::warn!(device = %name, link = %self.name, answered = outcome.answered, failed = outcome.failed, troubled = outcome.troubled, "modbus device degraded"),
                DeviceState::Down => tracing::warn!(device = %name, link = %self.name, retry_in_ms = device.health.retry_in(now).map_or(0, |d| d.as_millis() as u64), "modbus device down"),
            }
        }
        (batch, stats)
    }

    /// Executes a write-back command on its device and audits the outcome.
    async fn write(&mut self, command: WriteCommand, sinks: &Sinks) {
        let mut audit = command.audit;
        let outcome = match self.devices.iter().find(|d| d.cfg.name == audit.device) {
            None => "failed: device not on this link".to_string(),
            Some(d) => {
                let request = match command.table {
                    Table::Coil => Request::WriteSingleCoil(audit.address, audit.value != 0),
                    _ => Request::WriteSingleRegister(audit.address, audit.value),
                };
                let cfg = d.cfg.clone();
                match self.conn.request(cfg.unit_id, request, &cfg, &sinks.metrics).await.0 {
                    Attempt::Reply(_) => "written".to_string(),
                    Attempt::Exception(code) => format!("failed: exception {:#04x} ({code})", u8::from(code)),
                    Attempt::Malformed(d) | Attempt::NoReply(d) => format!("failed: {d}"),
                }
            }
        };
        audit.outcome = outcome;
        audit.at_ms = now_ms();
        match &sinks.audit {
            Some(log) => log.record(audit),
            None => tracing::warn!(?audit, "modbus write-back without an audit log"),
        }
    }
}

/// The reply's registers (big-endian) or bits (one byte each), for DLQ records.
fn raw_bytes(reply: &Reply) -> Vec<u8> {
    match reply {
        Reply::Registers(w) => w.iter().flat_map(|x| x.to_be_bytes()).collect(),
        Reply::Bits(b) => b.iter().map(|&x| u8::from(x)).collect(),
    }
}
