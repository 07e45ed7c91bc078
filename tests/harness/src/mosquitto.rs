//! Mosquitto broker (Debian 2.0.11) plus `mosquitto_pub` / `mosquitto_sub` as independent
//! MQTT clients.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use crate::net::wait_for_port_while;
use crate::process::Proc;
use crate::{free_port, HarnessError, LineBuffer, Pki, Result};

/// How long start-up waits (ports open, SUBACK) may take before failing.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Settings for [`Mosquitto::start`]. `MosquittoOptions::default()` is a plain listener only.
#[derive(Debug, Clone, Default)]
pub struct MosquittoOptions<'a> {
    /// Also open a TLS listener using this PKI's server certificate (CA = `pki.ca_cert()`).
    pub tls: Option<&'a Pki>,
    /// On the TLS listener, require a client certificate signed by the CA (mutual TLS).
    pub require_client_cert: bool,
    /// Broker-wide `max_queued_messages` (per-client queue while offline / in flight).
    pub max_queued_messages: Option<u32>,
    /// Extra lines written **before** the listeners, i.e. as global options (a line that starts
    /// a `listener` must be followed by that listener's own settings).
    pub extra_config: Vec<String>,
    /// Load Mosquitto's dynamic security plugin (`mosquitto_dynamic_security.so`, shipped in
    /// Debian's `mosquitto` package): clients, roles and ACLs are then managed with
    /// [`Mosquitto::dynsec`] (`mosquitto_ctrl dynsec ...` as the admin user). Unlike
    /// `acl_file`, which Mosquitto 2.0.11 checks only when delivering, its `subscribePattern`
    /// / `subscribeLiteral` ACLs are checked at SUBSCRIBE: a denied filter is refused in the
    /// SUBACK (0x87 on MQTT 5, 0x80 on 3.1.1). Its default ACL access refuses subscriptions and
    /// client publishes; anonymous clients may connect (`allow_anonymous true`) but are in no
    /// role, so they can neither subscribe nor publish.
    pub dynamic_security: bool,
}

/// User name of the dynamic security plugin's admin client ([`Mosquitto::dynsec`]).
pub const DYNSEC_ADMIN: &str = "dynsec-admin";
/// Its password (a loopback test broker; never a real secret).
const DYNSEC_ADMIN_PASSWORD: &str = "dynsec-admin-pw";

/// A Mosquitto broker on 127.0.0.1 with its own config, persistence directory and log in a
/// temporary directory. SIGKILLed on drop.
///
/// Always has a plain listener ([`plain_port`](Self::plain_port)); has a TLS listener
/// ([`tls_port`](Self::tls_port)) when started with `tls`. Config: `per_listener_settings
/// false`, `allow_anonymous true`, `persistence true` (so [`restart`](Self::restart) keeps
/// retained messages, sessions and queued QoS>0 messages), `log_type all` to stdout, which the
/// harness copies to [`log_path`](Self::log_path) and keeps in memory for
/// [`wait_for_log`](Self::wait_for_log). Runs with `user root` when the tests run as root
/// (otherwise mosquitto drops to user `mosquitto` and cannot read the 0600 key).
pub struct Mosquitto {
    dir: tempfile::TempDir,
    dynamic_security: bool,
    conf: PathBuf,
    log: PathBuf,
    plain_port: u16,
    tls_port: Option<u16>,
    out: LineBuffer,
    proc: Option<Proc>,
}

fn mosquitto_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("VIGIL_MOSQUITTO") {
        return p.into();
    }
    let sbin = Path::new("/usr/sbin/mosquitto");
    if sbin.exists() { sbin.into() } else { "mosquitto".into() }
}

impl Mosquitto {
    /// Writes the config, starts `mosquitto -c`, and returns once every listener accepts TCP
    /// connections (typically ~20 ms).
    pub fn start(opts: MosquittoOptions<'_>) -> Result<Mosquitto> {
        let dir = tempfile::Builder::new()
            .prefix("vigil-mosquitto-")
            .tempdir()
            .map_err(HarnessError::io("creating mosquitto tempdir"))?;
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).map_err(HarnessError::io("mkdir data"))?;
        let conf = dir.path().join("mosquitto.conf");
        let log = dir.path().join("mosquitto.log");
        let mut m = Mosquitto {
            dir,
            dynamic_security: opts.dynamic_security,
            conf,
            log,
            plain_port: 0,
            tls_port: None,
            out: LineBuffer::new(),
            proc: None,
        };
        if opts.dynamic_security {
            m.dynsec_init()?;
        }
        // A "free" port can be taken by another process (another test binary) before mosquitto
        // binds it: then mosquitto exits with "Address already in use"; pick new ports.
        let mut attempt = 0;
        loop {
            attempt += 1;
            m.plain_port = free_port();
            m.tls_port = opts.tls.map(|_| free_port());
            m.write_config(&opts)?;
            match m.start_again() {
                Err(HarnessError::Exited { recent, .. })
                    if attempt < 4 && recent.contains("Address already in use") => {}
                r => return r.map(|()| m),
            }
        }
    }

    fn write_config(&self, opts: &MosquittoOptions<'_>) -> Result<()> {
        let (plain_port, tls_port) = (self.plain_port, self.tls_port);
        let data = self.dir.path().join("data");
        let mut c = String::new();
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            c += "user root\n";
        }
        c += "per_listener_settings false\nallow_anonymous true\n";
        c += &format!("persistence true\npersistence_location {}/\n", data.display());
        c += "log_dest stdout\nlog_type all\nlog_timestamp_format %Y-%m-%dT%H:%M:%S\n";
        c += "connection_messages true\n";
        if let Some(n) = opts.max_queued_messages {
            c += &format!("max_queued_messages {n}\n");
        }
        if opts.dynamic_security {
            c += &format!("plugin {}\n", dynsec_plugin()?.display());
            c += &format!("plugin_opt_config_file {}\n", self.dynsec_file().display());
        }
        for line in &opts.extra_config {
            c += line;
            c += "\n";
        }
        c += &format!("\nlistener {plain_port} 127.0.0.1\n");
        if let (Some(pki), Some(port)) = (opts.tls, tls_port) {
            // Copy the files so the broker does not depend on the Pki's directory living on.
            let tls = self.dir.path().join("tls");
            std::fs::create_dir_all(&tls).map_err(HarnessError::io("mkdir tls"))?;
            for (src, name) in [
                (pki.ca_cert(), "ca.crt"),
                (pki.server_cert(), "server.crt"),
                (pki.server_key(), "server.key"),
            ] {
                std::fs::copy(&src, tls.join(name))
                    .map_err(HarnessError::io(format!("copying {}", src.display())))?;
            }
            c += &format!("\nlistener {port} 127.0.0.1\n");
            c += &format!("cafile {}\n", tls.join("ca.crt").display());
            c += &format!("certfile {}\n", tls.join("server.crt").display());
            c += &format!("keyfile {}\n", tls.join("server.key").display());
            if opts.require_client_cert {
                c += "require_certificate true\n";
            }
        }
        std::fs::write(&self.conf, c).map_err(HarnessError::io("writing mosquitto.conf"))
    }

    /// Starts the broker again after [`stop`](Self::stop) / [`kill_9`](Self::kill_9), with the
    /// same config, ports and persistence directory; returns once the listeners accept.
    /// No-op if it is running.
    pub fn start_again(&mut self) -> Result<()> {
        if self.is_running() {
            return Ok(());
        }
        // stdbuf: mosquitto logs to stdout through stdio, which is block-buffered on a pipe.
        let mut cmd = Command::new("stdbuf");
        cmd.arg("-oL").arg(mosquitto_bin()).arg("-c").arg(&self.conf).stdin(Stdio::null());
        let from = self.out.len();
        let mut proc = Proc::spawn("mosquitto", cmd, self.out.clone(), Some(self.log.clone()))?;
        // "... running" is logged once every listener is bound: this start's broker, not some
        // other process that happens to hold the port, is what accepts below.
        let running = self.out.wait_for_from(
            from,
            "mosquitto's \"running\" log line",
            |l| l.contains(" running"),
            START_TIMEOUT,
        );
        if let Err(e) = running {
            proc.ensure_running("logging \"running\"")?;
            return Err(e);
        }
        let mut ports = vec![self.plain_port];
        ports.extend(self.tls_port);
        let addrs: Vec<SocketAddr> =
            ports.iter().map(|p| SocketAddr::from(([127, 0, 0, 1], *p))).collect();
        for a in &addrs {
            wait_for_port_while(std::slice::from_ref(a), START_TIMEOUT, || {
                proc.ensure_running(&format!("listening on {a}"))
            })
            .map_err(|e| match e {
                HarnessError::Timeout { what, timeout, .. } => {
                    HarnessError::Timeout { what, timeout, recent: self.out.tail(40) }
                }
                e => e,
            })?;
        }
        self.proc = Some(proc);
        Ok(())
    }

    /// Graceful stop (SIGTERM; mosquitto writes its persistence DB) and wait for exit.
    pub fn stop(&mut self) -> Result<Option<ExitStatus>> {
        match self.proc.as_mut() {
            None => Ok(None),
            Some(p) => {
                p.signal(libc::SIGTERM)?;
                let s = p.wait_timeout(Duration::from_secs(10))?;
                self.proc = None;
                Ok(Some(s))
            }
        }
    }

    /// Crash: SIGKILL (nothing saved since the last autosave) and reap.
    pub fn kill_9(&mut self) -> Result<Option<ExitStatus>> {
        match self.proc.take() {
            None => Ok(None),
            Some(mut p) => p.kill_9().map(Some),
        }
    }

    /// [`stop`](Self::stop) then [`start_again`](Self::start_again): same ports, same
    /// persistence (retained messages, persistent sessions and their queues survive).
    pub fn restart(&mut self) -> Result<()> {
        self.stop()?;
        self.start_again()
    }

    /// Whether the broker process is running.
    pub fn is_running(&mut self) -> bool {
        match self.proc.as_mut() {
            Some(p) => matches!(p.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Port of the plain (non-TLS) listener on 127.0.0.1.
    pub fn plain_port(&self) -> u16 {
        self.plain_port
    }

    /// Port of the TLS listener on 127.0.0.1.
    ///
    /// # Panics
    /// If the broker was started without `tls`.
    pub fn tls_port(&self) -> u16 {
        self.tls_port.expect("Mosquitto started without tls")
    }

    /// `mqtt://127.0.0.1:PORT` of the plain listener.
    pub fn plain_url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.plain_port)
    }

    /// `mqtts://127.0.0.1:PORT` of the TLS listener (panics without TLS).
    pub fn tls_url(&self) -> String {
        format!("mqtts://127.0.0.1:{}", self.tls_port())
    }

    /// The broker's log file (every start appends to it).
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The broker's log lines so far (all starts).
    pub fn log_lines(&self) -> Vec<String> {
        self.out.lines()
    }

    /// Number of log lines so far; pass it to [`wait_for_log_after`](Self::wait_for_log_after).
    pub fn log_line_count(&self) -> usize {
        self.out.len()
    }

    /// Blocks until a log line (earlier ones included) satisfies `pred`, e.g.
    /// `|l| l.contains("New client connected")`.
    pub fn wait_for_log(&self, pred: impl FnMut(&str) -> bool, timeout: Duration) -> Result<String> {
        self.out.wait_for("a matching mosquitto log line", pred, timeout)
    }

    /// Like [`wait_for_log`](Self::wait_for_log), only lines at index `>= from`.
    pub fn wait_for_log_after(
        &self,
        from: usize,
        pred: impl FnMut(&str) -> bool,
        timeout: Duration,
    ) -> Result<String> {
        self.out
            .wait_for_from(from, "a matching mosquitto log line", pred, timeout)
            .map(|(_, l)| l)
    }

    fn dynsec_file(&self) -> PathBuf {
        self.dir.path().join("dynamic-security.json")
    }

    /// Creates the dynamic security plugin's file with its admin client (offline, before the
    /// broker starts; `mosquitto_ctrl` salts and hashes the password).
    fn dynsec_init(&self) -> Result<()> {
        let file = self.dynsec_file();
        let mut cmd = Command::new("mosquitto_ctrl");
        cmd.arg("dynsec").arg("init").arg(&file).args([DYNSEC_ADMIN, DYNSEC_ADMIN_PASSWORD]);
        let out = cmd.output().map_err(HarnessError::io("running mosquitto_ctrl dynsec init"))?;
        if !out.status.success() || !file.exists() {
            return Err(HarnessError::Command {
                command: format!("mosquitto_ctrl dynsec init {}", file.display()),
                status: out.status.to_string(),
                output: String::from_utf8_lossy(&[out.stdout, out.stderr].concat()).into_owned(),
            });
        }
        Ok(())
    }

    /// Runs `mosquitto_ctrl dynsec ARGS` against the running broker as the admin client, e.g.
    /// `["createClient", "agent", "-p", "pw"]`, `["addRoleACL", "role", "subscribePattern",
    /// "plant/#", "allow"]`; returns its output. `mosquitto_ctrl` exits 0 even when the plugin
    /// refuses a command, so a reply with `Error` is an error here. Changing a role's ACLs
    /// makes the plugin disconnect the clients in that role (they reconnect and are checked
    /// against the new ACLs).
    ///
    /// # Panics
    /// If the broker was started without `dynamic_security`.
    pub fn dynsec(&self, args: &[&str]) -> Result<String> {
        assert!(self.dynamic_security, "Mosquitto started without dynamic_security");
        let mut cmd = Command::new("mosquitto_ctrl");
        cmd.args(["-h", "127.0.0.1", "-p", &self.plain_port.to_string()]);
        cmd.args(["-u", DYNSEC_ADMIN, "-P", DYNSEC_ADMIN_PASSWORD, "dynsec"]).args(args);
        let out = cmd.output().map_err(HarnessError::io("running mosquitto_ctrl dynsec"))?;
        let text = String::from_utf8_lossy(&[out.stdout, out.stderr].concat()).into_owned();
        if !out.status.success() || text.contains("Error") || text.contains("error:") {
            return Err(HarnessError::Command {
                command: format!("mosquitto_ctrl dynsec {}", args.join(" ")),
                status: out.status.to_string(),
                output: text,
            });
        }
        Ok(text)
    }

    /// The broker's temporary directory (config, log, `data/`, `tls/`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The generated `mosquitto.conf`.
    pub fn config_path(&self) -> &Path {
        &self.conf
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("(mosquitto log kept in memory only; config was {})", self.conf.display());
        }
        // Proc's own Drop SIGKILLs and dumps the log tail when panicking.
        self.proc.take();
    }
}

/// The dynamic security plugin: `VIGIL_MOSQUITTO_DYNSEC`, else where Debian installs it.
fn dynsec_plugin() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("VIGIL_MOSQUITTO_DYNSEC") {
        return Ok(p.into());
    }
    let name = "mosquitto_dynamic_security.so";
    let candidates = [
        PathBuf::from(format!("/usr/lib/{}-linux-gnu", std::env::consts::ARCH)).join(name),
        Path::new("/usr/lib").join(name),
        Path::new("/usr/local/lib").join(name),
    ];
    // Debian's `mosquitto` package installs it (tests/peers/install.sh).
    candidates.iter().find(|p| p.exists()).cloned().ok_or_else(|| HarnessError::MissingFile(candidates[0].clone()))
}

// ------------------------------------------------------------------------------------ clients

/// TLS settings for `mosquitto_pub` / `mosquitto_sub`.
#[derive(Debug, Clone)]
pub struct ClientTls {
    /// `--cafile`: the CA that signed the server certificate.
    pub cafile: PathBuf,
    /// `--cert` and `--key`, for mutual TLS.
    pub cert_and_key: Option<(PathBuf, PathBuf)>,
}

impl ClientTls {
    /// Server authentication only (the client trusts `pki.ca_cert()`).
    pub fn server_auth(pki: &Pki) -> ClientTls {
        ClientTls { cafile: pki.ca_cert(), cert_and_key: None }
    }

    /// Mutual TLS with the PKI's client certificate.
    pub fn mutual(pki: &Pki) -> ClientTls {
        ClientTls {
            cafile: pki.ca_cert(),
            cert_and_key: Some((pki.client_cert(), pki.client_key())),
        }
    }

    fn args(&self, cmd: &mut Command) {
        cmd.arg("--cafile").arg(&self.cafile);
        if let Some((c, k)) = &self.cert_and_key {
            cmd.arg("--cert").arg(c).arg("--key").arg(k);
        }
    }
}

/// One message for [`mqtt_publish_with`].
#[derive(Debug, Clone)]
pub struct PublishOptions {
    pub port: u16,
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: u8,
    pub retain: bool,
    pub tls: Option<ClientTls>,
    /// Extra `mosquitto_pub` arguments (e.g. `-V mqttv5`, `-i client-id`).
    pub extra_args: Vec<String>,
}

/// Publishes one message to 127.0.0.1:`port` with `mosquitto_pub` (plain TCP) and returns once
/// it was delivered per `qos` (mosquitto_pub waits for PUBACK/PUBCOMP before exiting).
/// Payloads may be binary.
pub fn mqtt_publish(port: u16, topic: &str, payload: &[u8], qos: u8) -> Result<()> {
    mqtt_publish_with(&PublishOptions {
        port,
        topic: topic.into(),
        payload: payload.into(),
        qos,
        retain: false,
        tls: None,
        extra_args: vec![],
    })
}

/// [`mqtt_publish`] with every option (TLS, retain, extra arguments).
pub fn mqtt_publish_with(o: &PublishOptions) -> Result<()> {
    let mut cmd = Command::new("mosquitto_pub");
    cmd.args(["-h", "127.0.0.1", "-p", &o.port.to_string(), "-t", &o.topic]);
    cmd.args(["-q", &o.qos.to_string()]);
    if o.retain {
        cmd.arg("-r");
    }
    if let Some(t) = &o.tls {
        t.args(&mut cmd);
    }
    cmd.args(&o.extra_args);
    if o.payload.is_empty() {
        cmd.arg("-n").stdin(Stdio::null());
    } else {
        cmd.arg("-s").stdin(Stdio::piped()); // message = all of stdin, binary-safe
    }
    let mut p = Proc::spawn("mosquitto_pub", cmd, LineBuffer::new(), None)?;
    if let Some(mut stdin) = p.take_stdin() {
        stdin.write_all(&o.payload).map_err(HarnessError::io("writing to mosquitto_pub"))?;
    }
    let status = p.wait_timeout(START_TIMEOUT)?;
    if !status.success() {
        let _ = p.out.wait_for("EOF", |_| false, Duration::from_millis(300));
        return Err(HarnessError::Command {
            command: format!("mosquitto_pub -p {} -t {}", o.port, o.topic),
            status: status.to_string(),
            output: p.out.tail(20),
        });
    }
    Ok(())
}

/// A message seen by a [`Subscriber`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttMessage {
    pub topic: String,
    pub payload: Vec<u8>,
    /// QoS the message was delivered with (min of publish and subscription QoS).
    pub qos: u8,
    /// Whether it was delivered as a retained message.
    pub retained: bool,
}

impl MqttMessage {
    /// The payload as (lossy) UTF-8.
    pub fn payload_str(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.payload)
    }

    /// Parses a line printed by `mosquitto_sub -F 'MSG\t%t\t%q\t%r\t%x'`.
    fn parse(line: &str) -> Option<MqttMessage> {
        let rest = line.strip_prefix("MSG\t")?;
        let mut it = rest.rsplitn(4, '\t');
        let hex = it.next()?;
        let retained = it.next()? == "1";
        let qos = it.next()?.parse().ok()?;
        let topic = it.next()?.to_owned();
        let payload = (0..hex.len() / 2)
            .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16))
            .collect::<Result<Vec<u8>, _>>()
            .ok()?;
        Some(MqttMessage { topic, payload, qos, retained })
    }
}

/// Settings for [`Subscriber::start`].
#[derive(Debug, Clone)]
pub struct SubscriberOptions {
    pub port: u16,
    /// Topic filters (`#`, `+` allowed).
    pub topics: Vec<String>,
    /// Subscription QoS (default 1).
    pub qos: u8,
    pub tls: Option<ClientTls>,
    /// Extra `mosquitto_sub` arguments (e.g. `-i id -c` for a persistent session, `-V mqttv5`).
    pub extra_args: Vec<String>,
}

impl SubscriberOptions {
    /// Plain TCP to 127.0.0.1:`port`, one topic filter, QoS 1.
    pub fn new(port: u16, topic: &str) -> SubscriberOptions {
        SubscriberOptions { port, topics: vec![topic.into()], qos: 1, tls: None, extra_args: vec![] }
    }

    /// Same, over TLS.
    pub fn tls(port: u16, topic: &str, tls: ClientTls) -> SubscriberOptions {
        SubscriberOptions { tls: Some(tls), ..SubscriberOptions::new(port, topic) }
    }
}

/// `mosquitto_sub` running in the background; every message it receives is kept, in arrival
/// order, and tests block until the one they expect arrives. Killed on drop.
pub struct Subscriber {
    proc: Proc,
    cursor: Mutex<usize>,
}

impl Subscriber {
    /// Starts `mosquitto_sub` and returns once the broker acknowledged the subscription
    /// (SUBACK), so a message published after this returns is received.
    pub fn start(o: SubscriberOptions) -> Result<Subscriber> {
        let mut cmd = Command::new("stdbuf");
        cmd.args(["-oL", "mosquitto_sub", "-d", "-h", "127.0.0.1", "-p", &o.port.to_string()]);
        cmd.args(["-q", &o.qos.to_string(), "-F", "MSG\t%t\t%q\t%r\t%x"]);
        for t in &o.topics {
            cmd.args(["-t", t]);
        }
        if let Some(t) = &o.tls {
            t.args(&mut cmd);
        }
        cmd.args(&o.extra_args).stdin(Stdio::null());
        let proc = Proc::spawn("mosquitto_sub", cmd, LineBuffer::new(), None)?;
        proc.out.wait_for(
            "mosquitto_sub's SUBACK",
            |l| l.starts_with("Subscribed (mid"),
            START_TIMEOUT,
        )?;
        Ok(Subscriber { proc, cursor: Mutex::new(0) })
    }

    /// Every message received so far.
    pub fn messages(&self) -> Vec<MqttMessage> {
        self.proc.out.lines().iter().filter_map(|l| MqttMessage::parse(l)).collect()
    }

    /// Blocks until a message (received before or after this call) satisfies `pred`.
    pub fn wait_for(
        &self,
        mut pred: impl FnMut(&MqttMessage) -> bool,
        timeout: Duration,
    ) -> Result<MqttMessage> {
        self.wait_from(0, &mut pred, timeout).map(|(_, m)| m)
    }

    /// Blocks until `n` messages satisfying `pred` were received; returns them in order.
    pub fn wait_for_count(
        &self,
        n: usize,
        mut pred: impl FnMut(&MqttMessage) -> bool,
        timeout: Duration,
    ) -> Result<Vec<MqttMessage>> {
        let deadline = std::time::Instant::now() + timeout;
        let mut found = Vec::with_capacity(n);
        let mut from = 0;
        while found.len() < n {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let (i, m) = self.wait_from(from, &mut pred, left).map_err(|e| match e {
                HarnessError::Timeout { timeout, recent, .. } => HarnessError::Timeout {
                    what: format!("{n} matching MQTT messages (got {})", found.len()),
                    timeout,
                    recent,
                },
                e => e,
            })?;
            found.push(m);
            from = i + 1;
        }
        Ok(found)
    }

    /// The next message not yet returned by `next_message` (a cursor over arrival order).
    pub fn next_message(&self, timeout: Duration) -> Result<MqttMessage> {
        let mut cursor = self.cursor.lock().unwrap_or_else(|e| e.into_inner());
        let (i, m) = self.wait_from(*cursor, &mut |_| true, timeout)?;
        *cursor = i + 1;
        Ok(m)
    }

    fn wait_from(
        &self,
        from: usize,
        pred: &mut dyn FnMut(&MqttMessage) -> bool,
        timeout: Duration,
    ) -> Result<(usize, MqttMessage)> {
        let (i, line) = self.proc.out.wait_for_from(
            from,
            "a matching MQTT message",
            |l| MqttMessage::parse(l).is_some_and(|m| pred(&m)),
            timeout,
        )?;
        Ok((i, MqttMessage::parse(&line).expect("matched line parses")))
    }

    /// Raw output of `mosquitto_sub -d` (debug lines and `MSG\t...` lines).
    pub fn raw_lines(&self) -> Vec<String> {
        self.proc.out.lines()
    }
}
