//! `vigil bench`: end-to-end throughput, latency and memory of the agent behind Mosquitto.
//!
//! One run, three measurements on the same broker:
//!
//! 1. **Ceiling.** A no-op rumqttc subscriber (QoS 1, auto-ack) on `bench/#` while the publisher
//!    sends N JSON readings round-robin over S sensors (`bench/s{i}/value`, event time +1 s per
//!    round). Rate = messages / (last receive − first receive).
//! 2. **Agent throughput.** The agent runs as a child process (`vigil run` with a generated
//!    config, fresh data dir) so its RSS (`/proc/<pid>/status`) is its own. The same N readings
//!    are queued in its persistent session while it is stopped; rate = readings committed by the
//!    agent after its restart / (last commit − first commit), read from the metrics snapshot file
//!    the agent writes when `VIGIL_BENCH_METRICS` is set ([`spawn_metrics_snapshot`]). The peak
//!    RSS (`VmHWM`) after this phase (and the ack backlog it leaves) is reported as information.
//! 3. **Steady state: latency and memory.** After the agent settled, its peak RSS is reset
//!    (`5` into `/proc/<pid>/clear_refs`). The same S sensors (past warm-up) continue with
//!    further rounds, paced at one reading per sensor per second (default; at most half the
//!    agent's rate): 2 hops of normal data, then every 100th sensor gets an alternating ±30
//!    (≈20σ) anomaly for 4 rounds, then the lateness and 3 hops so its windows close. For each
//!    raised alert (subscriber on the alert topic) the latency is the alert's receive time minus
//!    the publish time of the reading that closed the window (the first reading of that entity
//!    with event time ≥ `window_end_ms + allowed_lateness_ms`). `VmHWM` afterwards is the peak
//!    RSS of steady operation with S active sensors (target ≤ 32 MB).

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::metrics::{Histogram, Metrics};

/// Environment variable naming the metrics snapshot file `vigil run` keeps up to date.
pub const METRICS_ENV: &str = "VIGIL_BENCH_METRICS";

/// A point-in-time copy of the agent's counters (written by the agent, read by the bench).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Wall clock (ms since the epoch) when these values were observed.
    pub at_ms: i64,
    pub readings: u64,
    pub commits: u64,
    pub mqtt_messages: u64,
    pub windows: u64,
    pub scored: u64,
    pub batches: u64,
    pub batch_mean_us: f64,
    pub alerts: u64,
    pub late: u64,
    pub dlq: u64,
    pub score_p50_us: u64,
    pub score_p99_us: u64,
    /// MQTT acks committed but still waiting for room in the client (after a backlog burst).
    #[serde(default)]
    pub ack_backlog: u64,
    /// Bucket counts of the in-agent score latency and of group-commit times (see
    /// `metrics::Histogram::buckets`), for quantiles over one phase.
    #[serde(default)]
    pub score_hist: Vec<u64>,
    #[serde(default)]
    pub commit_hist: Vec<u64>,
}

fn wall_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

impl Snapshot {
    fn of(m: &Metrics) -> Snapshot {
        Snapshot {
            at_ms: wall_ms(),
            readings: m.readings_in.get(),
            commits: m.commits.get(),
            mqtt_messages: m.mqtt_messages.get(),
            windows: m.windows_emitted.get(),
            scored: m.windows_scored.get(),
            batches: m.inference_batches.get(),
            batch_mean_us: m.inference_batch_time.mean_us(),
            alerts: m.alerts_raised.get(),
            late: m.late_readings.get(),
            dlq: m.dlq.snapshot().iter().map(|(_, c)| c).sum(),
            score_p50_us: m.score_latency.quantile_us(0.5),
            score_p99_us: m.score_latency.quantile_us(0.99),
            ack_backlog: m.mqtt_outbound_backlog.get(),
            score_hist: m.score_latency.buckets(),
            commit_hist: m.commit_time.buckets(),
        }
    }
}

/// When `VIGIL_BENCH_METRICS=<file>` is set, starts a thread that samples the metrics every
/// 10 ms and rewrites `<file>` (atomically, via rename) whenever a counter changed. No-op
/// otherwise. Called once by [`crate::agent::run`].
pub fn spawn_metrics_snapshot(metrics: Arc<Metrics>) {
    let Some(path) = std::env::var_os(METRICS_ENV).map(PathBuf::from) else { return };
    let tmp = path.with_extension("tmp");
    let _ = std::thread::Builder::new().name("vigil-bench-metrics".into()).spawn(move || {
        let mut last = Snapshot { at_ms: -1, ..Snapshot::default() };
        loop {
            let s = Snapshot::of(&metrics);
            if (Snapshot { at_ms: last.at_ms, ..s.clone() }) != last {
                if let Ok(json) = serde_json::to_vec(&s) {
                    if std::fs::write(&tmp, json).is_ok() {
                        let _ = std::fs::rename(&tmp, &path);
                    }
                }
                last = s;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    });
}

/// Command-line options of `vigil bench`.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Readings in the throughput phases; `None` = sensors × rounds needed to pass warm-up.
    pub readings: Option<u64>,
    pub sensors: usize,
    pub broker: Option<String>,
    pub config: PathBuf,
    pub keep: bool,
    /// Readings/s in phase 3; `None` = `sensors` (every sensor at 1 Hz), at most half the
    /// agent's measured rate.
    pub latency_rate: Option<f64>,
    pub max_inflight: u32,
    pub connections: usize,
    /// Mosquitto `set_tcp_nodelay` (Nagle off on the broker's sockets).
    pub broker_nodelay: bool,
}

type BoxErr = Box<dyn std::error::Error + Send + Sync>;

fn err(msg: impl Into<String>) -> BoxErr {
    msg.into().into()
}

// ---------------------------------------------------------------------------------------------
// Broker

struct Broker {
    host: String,
    port: u16,
    child: Option<Child>,
    settings: String,
    /// The log of the broker the bench started (none with `--broker`).
    log: Option<PathBuf>,
}

impl Broker {
    /// The clients the broker dropped outgoing messages for (its queue limit was reached), from
    /// its log's notices; `None` when the bench did not start the broker.
    fn dropped_for(&self) -> Option<Vec<String>> {
        let text = std::fs::read_to_string(self.log.as_ref()?).ok()?;
        let mut clients: Vec<String> = text
            .lines()
            .filter_map(|l| l.split_once("Outgoing messages are being dropped for client ").map(|(_, c)| c.trim_end_matches('.').to_string()))
            .collect();
        clients.sort();
        clients.dedup();
        Some(clients)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn wait_port(host: &str, port: u16, child: &mut Option<Child>, timeout: Duration) -> Result<(), BoxErr> {
    let deadline = Instant::now() + timeout;
    loop {
        if TcpStream::connect((host, port)).is_ok() {
            return Ok(());
        }
        if let Some(c) = child {
            if let Some(status) = c.try_wait()? {
                return Err(err(format!("mosquitto exited: {status}")));
            }
        }
        if Instant::now() > deadline {
            return Err(err(format!("{host}:{port} did not accept connections within {timeout:?}")));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn start_broker(opts: &BenchOptions, dir: &Path, max_queued: u64) -> Result<Broker, BoxErr> {
    if let Some(b) = &opts.broker {
        let (host, port) = b.rsplit_once(':').ok_or_else(|| err("--broker must be HOST:PORT"))?;
        let port: u16 = port.parse().map_err(|_| err("--broker port is not a number"))?;
        let mut none = None;
        wait_port(host, port, &mut none, Duration::from_secs(5))?;
        return Ok(Broker { host: host.into(), port, child: None, settings: "external broker (--broker): its own limits apply".into(), log: None });
    }
    let bin = if Path::new("/usr/sbin/mosquitto").exists() { PathBuf::from("/usr/sbin/mosquitto") } else { PathBuf::from("mosquitto") };
    let mut last_err = None;
    for _ in 0..4 {
        let port = free_port()?;
        let conf = dir.join("mosquitto.conf");
        let mut c = String::new();
        // Run as root, mosquitto would drop to user `mosquitto` and could not write its log here.
        if std::env::var("USER").map(|u| u == "root").unwrap_or(false) || is_root() {
            c += "user root\n";
        }
        c += "per_listener_settings false\nallow_anonymous true\npersistence false\n";
        // Notices include "Outgoing messages are being dropped for client X" (see `broker_drops`).
        c += &format!("log_dest file {}\nlog_type error\nlog_type warning\nlog_type notice\n", dir.join("mosquitto.log").display());
        let settings = format!(
            "max_inflight_messages {}\nmax_queued_messages {max_queued}\nmax_queued_bytes 0\nset_tcp_nodelay {}\n",
            opts.max_inflight, opts.broker_nodelay
        );
        c += &settings;
        c += &format!("listener {port} 127.0.0.1\n");
        std::fs::write(&conf, c)?;
        let child = Command::new(&bin).arg("-c").arg(&conf).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn()
            .map_err(|e| err(format!("cannot start {}: {e} (install Debian `mosquitto`, or pass --broker)", bin.display())))?;
        let mut broker = Broker { host: "127.0.0.1".into(), port, child: Some(child), settings: settings.trim().replace('\n', ", "), log: Some(dir.join("mosquitto.log")) };
        match wait_port("127.0.0.1", port, &mut broker.child, Duration::from_secs(10)) {
            Ok(()) => return Ok(broker),
            Err(e) => last_err = Some(e),
        }
    }
    Err(last_err.unwrap_or_else(|| err("cannot start mosquitto")))
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(1) == Some("0")))
        .unwrap_or(false)
}

// ---------------------------------------------------------------------------------------------
// MQTT clients

fn mqtt_options(id: &str, broker: &Broker, clean: bool) -> MqttOptions {
    let mut o = MqttOptions::new(id, broker.host.clone(), broker.port);
    o.set_keep_alive(Duration::from_secs(30));
    o.set_clean_session(clean);
    o.set_inflight(1000);
    o.set_max_packet_size(1 << 20, 1 << 20);
    o
}

/// The bench's own clients are measuring instruments: Nagle off, so they add no delay.
fn client(id: &str, broker: &Broker, cap: usize, clean: bool) -> (AsyncClient, rumqttc::EventLoop) {
    let (client, mut eventloop) = AsyncClient::new(mqtt_options(id, broker, clean), cap);
    let mut net = eventloop.network_options();
    net.set_tcp_nodelay(true);
    eventloop.set_network_options(net);
    (client, eventloop)
}

/// Publisher connections; every connection's event loop runs in its own task and counts PUBACKs.
struct Publisher {
    clients: Vec<AsyncClient>,
    acked: Arc<AtomicU64>,
    failed: Arc<Mutex<Option<String>>>,
}

async fn publisher(broker: &Broker, name: &str, connections: usize) -> Result<Publisher, BoxErr> {
    let acked = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(Mutex::new(None));
    let mut clients = Vec::new();
    for c in 0..connections.max(1) {
        let (client, mut eventloop) = client(&format!("{name}-{c}"), broker, 10_000, true);
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let (acked, failed) = (acked.clone(), failed.clone());
        tokio::spawn(async move {
            let mut ready = Some(ready_tx);
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        if let Some(r) = ready.take() {
                            let _ = r.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        acked.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => break,
                    Ok(_) => {}
                    Err(e) => {
                        *failed.lock().unwrap() = Some(e.to_string());
                        break;
                    }
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), ready_rx).await.map_err(|_| err("publisher: no CONNACK within 10 s"))??;
        clients.push(client);
    }
    Ok(Publisher { clients, acked, failed })
}

impl Publisher {
    async fn send(&self, sensor: usize, topic: String, payload: Vec<u8>) -> Result<(), BoxErr> {
        // A sensor always uses the same connection, so its readings stay in order.
        let client = &self.clients[sensor % self.clients.len()];
        client.publish(topic, QoS::AtLeastOnce, false, payload).await.map_err(|e| err(format!("publish: {e}")))
    }

    /// Waits until `n` publishes in total were acknowledged by the broker.
    async fn wait_acked(&self, n: u64) -> Result<(), BoxErr> {
        let deadline = Instant::now() + Duration::from_secs(300);
        while self.acked.load(Ordering::Relaxed) < n {
            if let Some(e) = self.failed.lock().unwrap().clone() {
                return Err(err(format!("publisher connection failed: {e}")));
            }
            if Instant::now() > deadline {
                return Err(err("publisher: PUBACKs missing after 300 s"));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Ok(())
    }

    async fn close(self) {
        for c in &self.clients {
            let _ = c.disconnect().await;
        }
    }
}

/// A subscriber that records the receive time of every message and hands it to `on_message`.
/// With `clean == false` the session persists, so messages published while it is disconnected
/// are queued by the broker. Returns the client and the event loop task (ends at DISCONNECT).
async fn subscriber<F>(broker: &Broker, id: &str, filter: &str, clean: bool, mut on_message: F) -> Result<(AsyncClient, tokio::task::JoinHandle<()>), BoxErr>
where
    F: FnMut(Instant, &rumqttc::Publish) + Send + 'static,
{
    let (client, mut eventloop) = client(id, broker, 1000, clean);
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let sub = client.clone();
    let filter = filter.to_string();
    let task = tokio::spawn(async move {
        let mut ready = Some(ready_tx);
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    let _ = sub.subscribe(filter.clone(), QoS::AtLeastOnce).await;
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    if let Some(r) = ready.take() {
                        let _ = r.send(());
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => on_message(Instant::now(), &p),
                Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => break,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "bench subscriber connection lost");
                    break;
                }
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(10), ready_rx).await.map_err(|_| err("subscriber: no SUBACK within 10 s"))??;
    Ok((client, task))
}

// ---------------------------------------------------------------------------------------------
// Load

/// Deterministic reading value: a slow sine per sensor plus noise (σ ≈ 1.6 overall).
fn value(sensor: usize, round: u64, anomalous: bool) -> f64 {
    let mut x = (sensor as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ round.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 31;
    x = x.wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 29;
    let noise = (x % 10_000) as f64 / 10_000.0 - 0.5; // uniform, σ ≈ 0.29
    let v = 20.0 + 2.0 * ((round as f64) * std::f64::consts::TAU / 60.0 + sensor as f64).sin() + noise;
    // The anomaly alternates ±30 (≈20σ) round by round: a shape the autoencoder cannot
    // reconstruct (a level shift is largely absorbed by the EWMA normalisation).
    match (anomalous, round % 2) {
        (false, _) => v,
        (true, 0) => v + 30.0,
        (true, _) => v - 30.0,
    }
}

/// Whether sensor `i` gets the anomaly in phase 3: every 100th.
fn anomalous(i: usize) -> bool {
    i % 100 == 0
}

fn payload(v: f64, ts: i64) -> Vec<u8> {
    format!("{{\"value\":{v:.4},\"ts\":{ts}}}").into_bytes()
}

/// Event time of round 0: whole seconds, `rounds` seconds before now (so the last reading is
/// close to the gateway clock and inside the skew checks).
fn base_ts(rounds: u64) -> i64 {
    (wall_ms() / 1000 - rounds as i64 - 1) * 1000
}

/// Publishes readings `0..n` round-robin over `sensors` (`bench/s{i}/value`) as fast as the
/// connections take them; returns when the broker acknowledged all of them.
async fn publish_throughput(p: &Publisher, n: u64, sensors: usize, base: i64, acked_before: u64) -> Result<Duration, BoxErr> {
    let start = Instant::now();
    for k in 0..n {
        let (round, i) = (k / sensors as u64, (k % sensors as u64) as usize);
        p.send(i, format!("bench/s{i}/value"), payload(value(i, round, false), base + round as i64 * 1000)).await?;
    }
    p.wait_acked(acked_before + n).await?;
    Ok(start.elapsed())
}

// ---------------------------------------------------------------------------------------------
// Agent child process

struct AgentProc {
    child: Child,
    pid: u32,
    log: Arc<Mutex<Vec<String>>>,
    metrics_file: PathBuf,
}

impl AgentProc {
    fn snapshot(&self) -> Option<Snapshot> {
        let text = std::fs::read(&self.metrics_file).ok()?;
        serde_json::from_slice(&text).ok()
    }

    fn check_alive(&mut self) -> Result<(), BoxErr> {
        if let Some(status) = self.child.try_wait()? {
            let log = self.log.lock().unwrap();
            let tail = log.iter().rev().take(20).rev().cloned().collect::<Vec<_>>().join("\n");
            return Err(err(format!("the agent exited ({status}); last log lines:\n{tail}")));
        }
        Ok(())
    }

    /// Waits (polling the snapshot file every 5 ms) until `done` holds.
    fn wait_for(&mut self, what: &str, timeout: Duration, mut done: impl FnMut(&Snapshot) -> bool) -> Result<Snapshot, BoxErr> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.snapshot() {
                if done(&s) {
                    return Ok(s);
                }
            }
            self.check_alive()?;
            if Instant::now() > deadline {
                let log = self.log.lock().unwrap();
                let warnings = log.iter().filter(|l| l.contains("WARN") || l.contains("ERROR")).rev().take(10).cloned().collect::<Vec<_>>().join("\n");
                return Err(err(format!("timed out after {timeout:?} waiting for {what}; last snapshot {:?}; agent warnings:\n{warnings}", self.snapshot())));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits until no counter changed for `quiet`.
    fn wait_settled(&mut self, quiet: Duration, timeout: Duration) -> Result<Snapshot, BoxErr> {
        let mut last: Option<Snapshot> = None;
        let mut since = Instant::now();
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.snapshot();
            let same = match (&s, &last) {
                (Some(a), Some(b)) => Snapshot { at_ms: 0, ..a.clone() } == Snapshot { at_ms: 0, ..b.clone() },
                _ => false,
            };
            if !same {
                last = s;
                since = Instant::now();
            } else if since.elapsed() >= quiet || Instant::now() > deadline {
                return Ok(last.unwrap_or_default());
            }
            self.check_alive()?;
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// A kB field of `/proc/<pid>/status`: `VmHWM` (peak RSS) or `VmRSS` (current RSS).
    fn status_kb(&self, field: &str) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        let line = status.lines().find(|l| l.strip_prefix(field).is_some_and(|r| r.starts_with(':')))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    /// Resets the peak RSS (`VmHWM`) to the current RSS: `5` into `/proc/<pid>/clear_refs`.
    fn reset_peak_rss(&self) -> Result<(), String> {
        std::fs::write(format!("/proc/{}/clear_refs", self.pid), "5").map_err(|e| e.to_string())
    }

    fn stop(mut self) -> Result<(), BoxErr> {
        let _ = Command::new("kill").arg("-TERM").arg(self.pid.to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait()? {
                if !status.success() {
                    return Err(err(format!("the agent exited with {status}")));
                }
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return Err(err("the agent did not stop within 30 s of SIGTERM; killed"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn start_agent(config_path: &Path, metrics_file: &Path) -> Result<AgentProc, BoxErr> {
    let exe = std::env::current_exe()?;
    let mut child = Command::new(exe)
        .arg("run")
        .arg("--config")
        .arg(config_path)
        .env(METRICS_ENV, metrics_file)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let pid = child.id();
    let log = Arc::new(Mutex::new(Vec::new()));
    let (connected_tx, connected_rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().ok_or_else(|| err("no stderr pipe"))?;
    // The whole log also goes to agent.log next to the metrics file (see --keep).
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(metrics_file.with_file_name("agent.log"))?;
    {
        let log = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = writeln!(file, "{line}");
                if line.contains("MQTT connected") {
                    let _ = connected_tx.send(());
                }
                let mut l = log.lock().unwrap();
                if l.len() > 500 {
                    l.drain(..250);
                }
                l.push(line);
            }
        });
    }
    let mut agent = AgentProc { child, pid, log, metrics_file: metrics_file.to_path_buf() };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match connected_rx.recv_timeout(Duration::from_millis(50)) {
            Ok(()) => return Ok(agent),
            Err(_) => {
                agent.check_alive()?;
                if Instant::now() > deadline {
                    let _ = agent.child.kill();
                    return Err(err("the agent did not log \"MQTT connected\" within 60 s"));
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The run

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((sorted.len() as f64) * q).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

#[derive(Debug, Deserialize)]
struct AlertJson {
    entity: String,
    state: String,
    window_end_ms: i64,
}

/// Runs the benchmark and prints the report. Returns whether every target was met.
pub fn run(opts: BenchOptions) -> Result<bool, BoxErr> {
    // Absolute, so the paths it resolves stay valid in the generated config in the temp dir.
    let config_path = std::fs::canonicalize(&opts.config).map_err(|e| err(format!("{}: {e}", opts.config.display())))?;
    let mut config = Config::load(&config_path).map_err(|e| err(e.to_string()))?;
    let runtime = crate::agent::load_model(&config).map_err(|e| err(e.to_string()))?;
    let manifest = runtime.manifest().clone();
    drop(runtime);
    let warmup = manifest.normalisation.warmup;
    let w = &config.pipeline.window;
    let (size_s, hop_s, lateness_ms) = (w.size_ms.div_ceil(1000), w.hop_ms.div_ceil(1000), w.allowed_lateness_ms as i64);
    // Rounds (1 reading per sensor per second of event time) until every sensor's windows are
    // scored: warm-up readings, one full window, the lateness, and a few hops.
    let scored_after = warmup + size_s + (lateness_ms as u64).div_ceil(1000) + hop_s;
    let sensors = opts.sensors.max(1);
    let n = opts.readings.unwrap_or(sensors as u64 * (scored_after + 4 * hop_s));
    let rounds = n.div_ceil(sensors as u64);
    let max_wait_ms = config.inference.max_wait_ms;

    let dir = std::env::temp_dir().join(format!("vigil-bench-{}-{}", std::process::id(), wall_ms()));
    std::fs::create_dir_all(&dir)?;
    let result = run_in(&opts, &mut config, &dir, n, sensors, rounds, warmup, scored_after, size_s, hop_s, lateness_ms, max_wait_ms);
    if opts.keep {
        eprintln!("kept {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

#[allow(clippy::too_many_arguments)]
fn run_in(
    opts: &BenchOptions,
    config: &mut Config,
    dir: &Path,
    n: u64,
    sensors: usize,
    rounds: u64,
    warmup: u64,
    scored_after: u64,
    _size_s: u64,
    hop_s: u64,
    lateness_ms: i64,
    max_wait_ms: u64,
) -> Result<bool, BoxErr> {
    // Phase 3 continues the phase-2 sensors (past warm-up): 2 hops of normal data, the anomaly
    // on the sensors `anomalous(i)`, then the lateness and 3 hops so the windows containing it close.
    let anomaly_from = rounds + 2 * hop_s;
    let anomaly_len = 4u64;
    let end_round = anomaly_from + anomaly_len + (lateness_ms as u64).div_ceil(1000) + 3 * hop_s;
    let steady_rounds = end_round - rounds;
    let max_queued = (n + sensors as u64 * steady_rounds + 1000).max(100_000);
    let broker = start_broker(opts, dir, max_queued)?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;

    println!("vigil bench: broker {}:{} ({})", broker.host, broker.port, broker.settings);
    println!(
        "  throughput phases: {n} readings over {sensors} sensors = {rounds} rounds (model warm-up {warmup} readings/sensor; windows scored from round {scored_after}), {} publisher connection(s), QoS 1",
        opts.connections
    );

    // Phase 1: the ceiling. The subscriber's persistent session is created, the subscriber goes
    // away, the N readings are queued by the broker, and the subscriber comes back and drains
    // them: its rate does not depend on how fast the publisher is (on 2 cores it is not faster
    // than the consumers).
    let ceiling = rt.block_on(async {
        let (sub, task) = subscriber(&broker, "vigil-bench-ceiling", "bench/#", false, |_, _| {}).await?;
        sub.disconnect().await.map_err(|e| err(e.to_string()))?;
        let _ = task.await;
        let p = publisher(&broker, "vigil-bench-pub-ceiling", opts.connections).await?;
        let publish_time = publish_throughput(&p, n, sensors, base_ts(rounds), 0).await?;
        p.close().await;
        let received = Arc::new(Mutex::new((0u64, None::<Instant>, None::<Instant>)));
        let r = received.clone();
        let (sub, _task) = subscriber(&broker, "vigil-bench-ceiling", "bench/#", false, move |t, _| {
            let mut g = r.lock().unwrap();
            g.0 += 1;
            g.1.get_or_insert(t);
            g.2 = Some(t);
        })
        .await?;
        let deadline = Instant::now() + Duration::from_secs(300);
        while received.lock().unwrap().0 < n {
            if Instant::now() > deadline {
                return Err(err(format!("ceiling subscriber received {} of {n}", received.lock().unwrap().0)));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let _ = sub.disconnect().await;
        // End the persistent session: left behind, it would subscribe to `bench/#` for the rest
        // of the run and queue every later reading for nobody, until the broker's queue limit
        // drops them — and the agent, which watches the broker's drop counter, would warn about
        // a loss that is the bench's own. Connecting with a clean session discards it.
        let (sub, _task) = subscriber(&broker, "vigil-bench-ceiling", "bench/#", true, |_, _| {}).await?;
        let _ = sub.disconnect().await;
        let g = *received.lock().unwrap();
        let span = g.2.unwrap().duration_since(g.1.unwrap()).as_secs_f64();
        Ok::<_, BoxErr>((n as f64 / span.max(1e-9), publish_time))
    })?;
    let (ceiling_rate, ceiling_pub) = ceiling;
    println!(
        "  phase 1 ceiling: no-op subscriber drains the {n} queued readings at {ceiling_rate:.0} msgs/s (publisher queued them at {:.0}/s)",
        n as f64 / ceiling_pub.as_secs_f64()
    );

    // Phase 2: the agent as a child process.
    let data_dir = dir.join("agent-data");
    config.agent.data_dir = data_dir;
    if let Some(m) = &mut config.mqtt {
        m.host = broker.host.clone();
        m.port = broker.port;
    } else {
        return Err(err("the bench config needs an [mqtt] table"));
    }
    config.alerts.print = false;
    config.uplink.directory = None;
    let config_path = dir.join("agent.toml");
    std::fs::write(&config_path, toml::to_string(&config).map_err(|e| err(e.to_string()))?)?;
    let alert_topic = crate::ingest::topic::render(&config.alerts.topic, &[("agent", &config.agent.id), ("entity", "+")]);

    // Alerts, subscribed before the agent starts.
    let alerts: Arc<Mutex<Vec<(Instant, AlertJson)>>> = Arc::new(Mutex::new(Vec::new()));
    let alert_sub = {
        let a = alerts.clone();
        rt.block_on(subscriber(&broker, "vigil-bench-alerts", &alert_topic, true, move |t, p| {
            if let Ok(j) = serde_json::from_slice::<AlertJson>(&p.payload) {
                a.lock().unwrap().push((t, j));
            }
        }))?
        .0
    };

    let metrics_file = dir.join("metrics.json");
    let mut agent = start_agent(&config_path, &metrics_file)?;
    let p = rt.block_on(publisher(&broker, "vigil-bench-pub-agent", opts.connections))?;
    let mut published = 0u64;

    // "MQTT connected" is logged at CONNACK; the SUBSCRIBE follows. Probe until the agent has
    // committed a reading, so the measurement starts with the subscription in place.
    let probe_base = base_ts(0);
    let mut probes = 0u64;
    loop {
        rt.block_on(p.send(0, "bench/probe/value".into(), payload(1.0, probe_base + probes as i64 * 1000)))?;
        probes += 1;
        published += 1;
        if agent.wait_for("the first probe reading", Duration::from_millis(200), |s| s.readings > 0).is_ok() {
            break;
        }
        if probes > 100 {
            return Err(err("the agent never committed a probe reading"));
        }
    }
    // Probes published before the SUBSCRIBE took effect never reach the agent; wait only until
    // the ones that did are committed.
    agent.wait_settled(Duration::from_millis(300), Duration::from_secs(10))?;
    // Same as the ceiling: stop the agent (its session and subscription stay), queue the N
    // readings, start it again and measure how fast it drains them.
    agent.stop()?;
    let base = base_ts(rounds);
    let agent_pub = rt.block_on(publish_throughput(&p, n, sensors, base, published))?;
    published += n;
    let _ = std::fs::remove_file(&metrics_file);
    let mut agent = start_agent(&config_path, &metrics_file)?;
    let before = Snapshot::default();
    let base_readings = 0u64;
    let first = agent.wait_for("the first reading", Duration::from_secs(300), |s| s.readings > base_readings)?;
    let last = agent.wait_for("all readings committed", Duration::from_secs(600), |s| s.readings >= base_readings + n)?;
    let span_s = (last.at_ms - first.at_ms).max(1) as f64 / 1000.0;
    let agent_rate = (last.readings - first.readings) as f64 / span_s;
    let settled = agent.wait_settled(Duration::from_millis(500), Duration::from_secs(120))?;
    println!(
        "  phase 2 agent: restarted with the {n} readings queued; drains them at {agent_rate:.0} readings/s committed (first→last commit {span_s:.2} s; publisher queued them at {:.0}/s)",
        n as f64 / agent_pub.as_secs_f64()
    );
    println!(
        "    commits {} ({:.0} readings/commit), windows {}, scored {} in {} batches ({:.1} windows/batch, {:.0} µs/batch), in-agent score latency p50 ≤{} µs p99 ≤{} µs, late {}, dlq {}",
        settled.commits - before.commits,
        (settled.readings - before.readings) as f64 / (settled.commits - before.commits).max(1) as f64,
        settled.windows,
        settled.scored,
        settled.batches,
        settled.scored as f64 / settled.batches.max(1) as f64,
        settled.batch_mean_us,
        settled.score_p50_us,
        settled.score_p99_us,
        settled.late,
        settled.dlq
    );

    // Phase 3: steady state. First let the agent hand over the acks that queued up while the
    // broker replayed the backlog faster than rumqttc sends acks, and let it settle; then reset
    // its peak RSS, so the peak read afterwards is that of the steady operation alone.
    let drain_started = Instant::now();
    agent.wait_for("the MQTT ack backlog to drain", Duration::from_secs(300), |s| s.ack_backlog == 0)?;
    let ack_drain_s = drain_started.elapsed().as_secs_f64();
    agent.wait_settled(Duration::from_millis(300), Duration::from_secs(60))?;
    let burst_rss_kb = agent.status_kb("VmHWM");
    let rss_reset = agent.reset_peak_rss();
    let rss_before_kb = agent.status_kb("VmRSS");
    let before_paced = agent.snapshot().unwrap_or_default();
    let one_hz = sensors as f64;
    let steady_rate = opts.latency_rate.unwrap_or_else(|| one_hz.min(agent_rate * 0.5)).max(1.0);
    let hz = steady_rate / one_hz;
    let steady_total = sensors as u64 * steady_rounds;
    let mut pub_times: Vec<Vec<Option<Instant>>> = vec![vec![None; steady_rounds as usize]; sensors];
    let alerts_before = alerts.lock().unwrap().len();
    rt.block_on(async {
        let t0 = tokio::time::Instant::now();
        let mut k = 0u64;
        for round in rounds..end_round {
            for i in 0..sensors {
                let at = t0 + Duration::from_secs_f64(k as f64 / steady_rate);
                if tokio::time::Instant::now() < at {
                    tokio::time::sleep_until(at).await;
                }
                let jump = anomalous(i) && (anomaly_from..anomaly_from + anomaly_len).contains(&round);
                pub_times[i][(round - rounds) as usize] = Some(Instant::now());
                p.send(i, format!("bench/s{i}/value"), payload(value(i, round, jump), base + round as i64 * 1000)).await?;
                k += 1;
            }
        }
        Ok::<_, BoxErr>(())
    })?;
    published += steady_total;
    rt.block_on(p.wait_acked(published))?;
    let target = base_readings + n + steady_total;
    agent.wait_for("phase 3 readings committed", Duration::from_secs(300), |s| s.readings >= target)?;
    let end = agent.wait_settled(Duration::from_millis(500), Duration::from_secs(60))?;
    // The alert messages follow the alert stage's commit; give the broker a moment to deliver.
    let want = end.alerts as usize;
    let deadline = Instant::now() + Duration::from_secs(5);
    while alerts.lock().unwrap().iter().filter(|(_, a)| a.state == "raised").count() < want && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    // After a failed reset VmHWM is still the whole run's peak.
    let steady_rss_kb = agent.status_kb("VmHWM");
    let rss_end_kb = agent.status_kb("VmRSS");
    if std::env::var_os("VIGIL_BENCH_DEBUG").is_some() {
        // Where the agent's resident memory is, mapping by mapping (kept with --keep).
        let _ = std::fs::copy(format!("/proc/{}/smaps", agent.pid), dir.join("agent.smaps"));
    }
    rt.block_on(p.close());
    let _ = rt.block_on(alert_sub.disconnect());
    agent.stop()?;
    // Count over the whole agent.log (the in-memory copy keeps only the last lines).
    let (mut warnings, mut first_warning) = (0u64, None);
    if let Ok(f) = std::fs::File::open(metrics_file.with_file_name("agent.log")) {
        for line in BufReader::new(f).lines().map_while(Result::ok) {
            if line.contains("WARN") || line.contains("ERROR") {
                warnings += 1;
                first_warning.get_or_insert(line);
            }
        }
    }
    if let Some(first) = first_warning {
        println!("  agent logged {warnings} warning/error line(s); first: {first}");
    }
    // The sessions the broker dropped messages for (its log's notices). None is expected: the
    // ceiling's session ends after phase 1, and the agent committed every reading.
    match broker.dropped_for() {
        Some(clients) if clients.is_empty() => println!("  broker: no message dropped"),
        Some(clients) => println!("  broker: dropped messages queued for {}", clients.join(", ")),
        None => {}
    }

    let mut latencies_ms = Vec::new();
    let mut false_alerts = 0usize;
    let mut unmatched = 0usize;
    let mut raised = 0usize;
    for (t, a) in alerts.lock().unwrap().iter().skip(alerts_before) {
        if a.state != "raised" {
            continue;
        }
        raised += 1;
        let Some(i) = a.entity.strip_prefix('s').and_then(|s| s.parse::<usize>().ok()).filter(|&i| i < sensors) else {
            false_alerts += 1;
            continue;
        };
        if !anomalous(i) {
            false_alerts += 1;
        }
        // The closing reading: the first round whose event time is ≥ window end + lateness.
        let round = (a.window_end_ms + lateness_ms - base + 999).div_euclid(1000);
        let published_at = usize::try_from(round - rounds as i64).ok().and_then(|r| pub_times[i].get(r).copied().flatten());
        match published_at {
            Some(published_at) => latencies_ms.push(t.saturating_duration_since(published_at).as_secs_f64() * 1000.0),
            None => unmatched += 1,
        }
    }
    latencies_ms.sort_by(|a, b| a.total_cmp(b));
    if std::env::var_os("VIGIL_BENCH_DEBUG").is_some() {
        eprintln!("publish→alert latencies (ms): {latencies_ms:.1?}");
    }
    let (p50, p99) = (quantile(&latencies_ms, 0.5), quantile(&latencies_ms, 0.99));
    let expected = (0..sensors).filter(|&i| anomalous(i)).count();

    let ratio = agent_rate / ceiling_rate;
    let mb = |kb: Option<u64>| kb.unwrap_or(0) as f64 / 1024.0;
    let steady_mb = mb(steady_rss_kb);
    let p99_target = 5.0 + max_wait_ms as f64;
    let mark = |ok: bool| if ok { "PASS" } else { "MISS" };
    let (ok_ratio, ok_p99, ok_rss) = (ratio >= 0.8, !latencies_ms.is_empty() && p99 <= p99_target, steady_mb <= 32.0 && steady_rss_kb.is_some());
    println!("  ack backlog after the burst drained in {ack_drain_s:.2} s");
    let delta = |a: &[u64], b: &[u64]| a.iter().zip(b.iter().chain(std::iter::repeat(&0))).map(|(x, y)| x - y.min(x)).collect::<Vec<u64>>();
    let score_d = delta(&end.score_hist, &before_paced.score_hist);
    let commit_d = delta(&end.commit_hist, &before_paced.commit_hist);
    println!(
        "  phase 3 inside the agent: ingest→score p50 ≤{} µs p99 ≤{} µs max ≤{} µs; group commit p50 ≤{} µs p99 ≤{} µs max ≤{} µs",
        Histogram::quantile_of(&score_d, 0.5),
        Histogram::quantile_of(&score_d, 0.99),
        Histogram::quantile_of(&score_d, 1.0),
        Histogram::quantile_of(&commit_d, 0.5),
        Histogram::quantile_of(&commit_d, 0.99),
        Histogram::quantile_of(&commit_d, 1.0)
    );
    let capped = if opts.latency_rate.is_none() && steady_rate < one_hz { " (capped at half the agent's rate)" } else { "" };
    println!(
        "  phase 3 steady state: the {sensors} sensors continue, rounds {rounds}..{end_round} paced at {steady_rate:.0} readings/s{capped} = every sensor at {hz:.2} Hz; sensors with i % 100 == 0 ({expected}, so {expected} alerts expected) ±30 (≈20σ, alternating) for {anomaly_len} rounds from round {anomaly_from}; {} scored windows, {} alerts raised in phase 3 ({} in total)",
        end.scored - before_paced.scored,
        end.alerts - before_paced.alerts,
        end.alerts
    );
    match &rss_reset {
        Ok(()) => println!(
            "  agent RSS: peak {:.1} MB during the backlog drain; reset (clear_refs) at {:.1} MB before phase 3; phase 3 peak {steady_mb:.1} MB; VmRSS at the end {:.1} MB",
            mb(burst_rss_kb),
            mb(rss_before_kb),
            mb(rss_end_kb)
        ),
        Err(e) => println!(
            "  agent RSS: could not reset the peak before phase 3 ({e}): the phase 3 row shows the whole run's peak {steady_mb:.1} MB; VmRSS at the end {:.1} MB",
            mb(rss_end_kb)
        ),
    }
    println!();
    println!("  {:<52} {:>14}  {:<22} {}", "metric", "value", "target", "");
    let row = |name: &str, value: String, target: String, verdict: &str| println!("  {name:<52} {value:>14}  {target:<22} {verdict}");
    row("readings (throughput phases)", n.to_string(), String::new(), "");
    row("active sensors", sensors.to_string(), String::new(), "");
    row("ceiling: no-op subscriber msgs/s", format!("{ceiling_rate:.0}"), String::new(), "");
    row("agent readings/s (committed)", format!("{agent_rate:.0}"), String::new(), "");
    row("ratio agent / ceiling", format!("{ratio:.2}"), "≥ 0.80".into(), mark(ok_ratio));
    row("publish→alert p50 (ms)", format!("{p50:.2}"), String::new(), "");
    row("publish→alert p99 (ms)", format!("{p99:.2}"), format!("≤ {p99_target:.0} (5 + max_wait)"), mark(ok_p99));
    row("alerts seen (expected, false, unmatched)", format!("{raised} ({expected}, {false_alerts}, {unmatched})"), String::new(), "");
    let steady_name = format!("peak RSS, {sensors} sensors at {hz:.2} Hz (MB){}", if rss_reset.is_ok() { "" } else { " [whole run]" });
    row(&steady_name, format!("{steady_mb:.1}"), "≤ 32".into(), mark(ok_rss));
    row(&format!("peak RSS during the {n}-reading backlog drain (MB)"), format!("{:.1}", mb(burst_rss_kb)), String::new(), "");
    Ok(ok_ratio && ok_p99 && ok_rss)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_use_nearest_rank() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(quantile(&v, 0.5), 2.0);
        assert_eq!(quantile(&v, 0.99), 4.0);
        assert!(quantile(&[], 0.5).is_nan());
    }

    #[test]
    fn values_jump_only_when_anomalous() {
        let a = value(3, 10, false);
        let b = value(3, 10, true);
        assert!(((b - a).abs() - 30.0).abs() < 1e-9);
        assert!((15.0..25.0).contains(&a));
    }
}
