//! `vigil uplink volume`: bytes uplinked per hour under each `[uplink.policy]`, measured on a
//! simulator configuration (the demo, `config/demo.toml`).
//!
//! For each policy the configuration is run as a child agent (`vigil run`, fresh data dir, API
//! on any free port) with its plant simulator sped up (`--speedup`) for `--simulated-s` of event
//! time and the policy's `[uplink.policy]` table; after the simulator finishes the agent is
//! stopped with SIGTERM (it drains its pipeline first) and the outbox's per-kind counters of
//! appended CBOR bytes ([`cloud_uplink::ClassStats::appended_bytes`]) are read and scaled to one
//! hour. Those are the bytes every sink carries before its own framing or compression. The
//! simulator is seeded, so every policy sees the same plant; its event times start at the wall
//! clock, so windows align differently per run and alert counts can differ by one or two.
//! Heartbeats are switched off in these runs (they tick on the compressed wall clock).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cloud_uplink::RecordClass;

/// The policies measured: `(label, [uplink.policy] table)`.
pub const POLICIES: [(&str, &str); 4] = [
    ("readings always (default)", "reading = \"always\""),
    ("readings around alerts", "reading = \"around_alerts\""),
    ("readings around alerts, no scores", "reading = \"around_alerts\"\nscore = \"never\""),
    ("readings never, no scores", "reading = \"never\"\nscore = \"never\""),
];

/// Why a measurement failed.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("{path}: {detail}")]
    Config { path: String, detail: String },
    #[error("the configuration has no [ingest.simulator]: nothing to measure")]
    NoSimulator,
    #[error("running the agent: {0}")]
    Io(#[from] std::io::Error),
    #[error("{policy}: {detail}")]
    Agent { policy: String, detail: String },
    #[error("reading the outbox: {0}")]
    Store(#[from] crate::store::StoreError),
}

/// One policy's result: CBOR bytes per simulated hour, per kind (in [`RecordClass::ALL`] order).
pub struct Volume {
    pub policy: &'static str,
    pub bytes_per_hour: Vec<(RecordClass, f64)>,
}

/// Measures every policy in [`POLICIES`].
pub fn measure(config: &Path, simulated_s: u64, speedup: f64) -> Result<Vec<Volume>, VolumeError> {
    let text = std::fs::read_to_string(config)?;
    let bad = |detail: String| VolumeError::Config { path: config.display().to_string(), detail };
    let mut base: toml::Table = toml::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let dir = std::path::absolute(config.parent().unwrap_or(Path::new(".")))?;
    // Paths in the file are relative to it; the runs' configs live elsewhere.
    if let Some(toml::Value::String(m)) = base.get_mut("inference").and_then(|i| i.get_mut("model_dir")) {
        *m = dir.join(&*m).display().to_string();
    }
    let sim = base.get_mut("ingest").and_then(|i| i.get_mut("simulator")).and_then(|s| s.as_table_mut()).ok_or(VolumeError::NoSimulator)?;
    sim.insert("speedup".into(), toml::Value::Float(speedup));
    sim.insert("duration_s".into(), toml::Value::Integer(simulated_s as i64));
    let exe = std::env::current_exe()?;
    let mut out = Vec::new();
    for (i, (label, policy)) in POLICIES.into_iter().enumerate() {
        let tmp = ScratchDir(std::env::temp_dir().join(format!("vigil-uplink-volume-{}-{i}", std::process::id())));
        let _ = std::fs::remove_dir_all(tmp.path());
        std::fs::create_dir_all(tmp.path())?;
        let mut c = base.clone();
        let policy_table: toml::Table = toml::from_str(policy).map_err(|e| bad(e.to_string()))?;
        let set = |c: &mut toml::Table, table: &str, key: &str, v: toml::Value| {
            if let Some(t) = c.entry(table).or_insert_with(|| toml::Value::Table(Default::default())).as_table_mut() {
                t.insert(key.into(), v);
            }
        };
        set(&mut c, "agent", "data_dir", toml::Value::String(tmp.path().join("data").display().to_string()));
        set(&mut c, "agent", "log", toml::Value::String("info".into()));
        set(&mut c, "api", "listen", toml::Value::String("127.0.0.1:0".into()));
        // Heartbeats tick on the wall clock, which the sped-up run compresses: left out (see
        // [`render`]).
        if let Some(u) = c.entry("uplink").or_insert_with(|| toml::Value::Table(Default::default())).as_table_mut() {
            let mut heartbeat = toml::Table::new();
            heartbeat.insert("interval_s".into(), toml::Value::Integer(0));
            u.insert("heartbeat".into(), toml::Value::Table(heartbeat));
        }
        let uplink = c.entry("uplink").or_insert_with(|| toml::Value::Table(Default::default()));
        if let Some(u) = uplink.as_table_mut() {
            u.insert("policy".into(), toml::Value::Table(policy_table));
            let mut directory = toml::Table::new();
            directory.insert("path".into(), toml::Value::String(tmp.path().join("outbox").display().to_string()));
            u.insert("directory".into(), toml::Value::Table(directory));
        }
        let path = tmp.path().join("vigil.toml");
        std::fs::write(&path, toml::to_string(&c).map_err(|e| bad(e.to_string()))?)?;
        run_until_simulator_done(&exe, &path, label, Duration::from_secs_f64(simulated_s as f64 / speedup * 20.0 + 120.0))?;
        let cfg = crate::config::Config::load(&path).map_err(|e| bad(e.to_string()))?;
        let db = crate::store::open(&cfg.agent.data_dir)?;
        let outbox = cloud_uplink::Outbox::open(db, cfg.agent.id.clone(), crate::agent::outbox_config(&cfg)).map_err(crate::store::StoreError::from)?;
        let stats = outbox.stats().map_err(crate::store::StoreError::from)?;
        let scale = 3600.0 / simulated_s.max(1) as f64;
        out.push(Volume { policy: label, bytes_per_hour: stats.classes.iter().map(|c| (c.class, c.appended_bytes as f64 * scale)).collect() });
    }
    Ok(out)
}

/// A scratch directory, removed when dropped.
struct ScratchDir(std::path::PathBuf);

impl ScratchDir {
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Starts `vigil run --config PATH`, waits for the simulator's "finished" log line, stops the
/// agent with SIGTERM and waits for a clean exit.
fn run_until_simulator_done(exe: &Path, config: &Path, label: &str, timeout: Duration) -> Result<(), VolumeError> {
    let fail = |detail: String| VolumeError::Agent { policy: label.to_string(), detail };
    let mut child = Command::new(exe)
        .args(["run", "--config"])
        .arg(config)
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let (tx, rx) = mpsc::channel::<String>();
    for stream in [child.stdout.take().map(|s| Box::new(s) as Box<dyn std::io::Read + Send>), child.stderr.take().map(|s| Box::new(s) as Box<dyn std::io::Read + Send>)].into_iter().flatten() {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
    }
    drop(tx);
    let deadline = Instant::now() + timeout;
    let mut tail: Vec<String> = Vec::new();
    loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) if line.contains("plant simulator finished") => break,
            Ok(line) => {
                tail.push(line);
                if tail.len() > 20 {
                    tail.remove(0);
                }
            }
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                let why = match e {
                    mpsc::RecvTimeoutError::Timeout => format!("the simulator did not finish within {timeout:?}"),
                    mpsc::RecvTimeoutError::Disconnected => "the agent exited before its simulator finished".to_string(),
                };
                return Err(fail(format!("{why}:\n{}", tail.join("\n"))));
            }
        }
    }
    // SAFETY: kill(2) on our own child's pid; no memory is involved.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let status = child.wait()?;
    if !status.success() {
        return Err(fail(format!("the agent exited with {status}")));
    }
    Ok(())
}

/// The table `vigil uplink volume` prints (bytes per hour, per kind and in total). Heartbeats
/// are not measured (they follow the wall clock, one per `uplink.heartbeat.interval_s`, about
/// 700 bytes each whatever the policy).
pub fn render(volumes: &[Volume]) -> String {
    let mut s = String::new();
    let kinds: Vec<RecordClass> = RecordClass::ALL.into_iter().filter(|&c| c != RecordClass::Heartbeat).collect();
    s.push_str(&format!("{:<36}", "policy (CBOR bytes per hour)"));
    for k in &kinds {
        s.push_str(&format!(" {:>10}", k.as_str()));
    }
    s.push_str(&format!(" {:>11}\n", "total"));
    for v in volumes {
        s.push_str(&format!("{:<36}", v.policy));
        let mut total = 0.0;
        for k in &kinds {
            let b = v.bytes_per_hour.iter().find(|(c, _)| c == k).map_or(0.0, |(_, b)| *b);
            total += b;
            s.push_str(&format!(" {:>10.0}", b));
        }
        s.push_str(&format!(" {:>11.0}\n", total));
    }
    s.push_str("heartbeats are not included: one per uplink.heartbeat.interval_s of wall-clock time (~700 bytes) under every policy\n");
    s
}
