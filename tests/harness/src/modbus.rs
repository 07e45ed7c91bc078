//! Modbus peers: the pymodbus 3.16.1 simulator (from the peers venv) on Modbus TCP or on one end
//! of a socat [`PtyPair`](crate::PtyPair) (Modbus RTU), and `mbpoll` as the independent Modbus
//! client.
//!
//! The server is `py/modbus_sim.py`: pymodbus' own simulator datastore
//! (`ModbusSimulatorContext`, the JSON device format of `pymodbus.simulator`) behind pymodbus'
//! `ModbusTcpServer` / `ModbusSerialServer`, because `pymodbus.simulator` serves only one unit
//! id per process and a serial line carries only one server. Unit ids not configured get no
//! reply at all, like a missing slave on a real bus.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::net::wait_for_port_while;
use crate::process::Proc;
use crate::{free_port, peers_venv, HarnessError, LineBuffer, Result};

const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The script that serves the simulator (next to this crate's sources).
fn sim_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("py/modbus_sim.py")
}

/// Where the simulator listens.
#[derive(Debug, Clone)]
pub enum ModbusEndpoint {
    /// Modbus TCP on 127.0.0.1:port.
    Tcp(u16),
    /// Modbus RTU on this serial device, at 19200 baud, 8N1.
    Rtu(PathBuf),
}

/// A running pymodbus simulator. SIGKILLed on drop.
pub struct ModbusSim {
    dir: tempfile::TempDir,
    endpoint: ModbusEndpoint,
    out: LineBuffer,
    proc: Option<Proc>,
}

impl ModbusSim {
    /// Serves `units_json` — `{"units": {"1": <device>, ...}}`, each `<device>` in the
    /// `device_list` format of `pymodbus.simulator` (see `shared/peers/pymodbus-sim.example.json`)
    /// — on Modbus TCP on a free port. Returns once the port accepts connections.
    pub fn start_tcp(units_json: &str) -> Result<ModbusSim> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match ModbusSim::start(units_json, ModbusEndpoint::Tcp(free_port())) {
                Err(HarnessError::Exited { recent, .. }) if attempt < 4 && recent.contains("address already in use") => {}
                r => return r,
            }
        }
    }

    /// Serves `units_json` as Modbus RTU slaves (19200 8N1) on the serial device `tty`, e.g.
    /// one end of a [`PtyPair`](crate::PtyPair) (the agent opens the other).
    pub fn start_rtu(units_json: &str, tty: &Path) -> Result<ModbusSim> {
        ModbusSim::start(units_json, ModbusEndpoint::Rtu(tty.to_path_buf()))
    }

    fn start(units_json: &str, endpoint: ModbusEndpoint) -> Result<ModbusSim> {
        let dir = tempfile::Builder::new().prefix("vigil-modbus-").tempdir().map_err(HarnessError::io("creating modbus tempdir"))?;
        std::fs::write(dir.path().join("sim.json"), units_json).map_err(HarnessError::io("writing sim.json"))?;
        let mut sim = ModbusSim { dir, endpoint, out: LineBuffer::new(), proc: None };
        sim.start_again()?;
        Ok(sim)
    }

    /// Starts the simulator again after [`stop`](Self::stop) with the same units and endpoint
    /// (the registers start from their configured values again). No-op if it is running.
    pub fn start_again(&mut self) -> Result<()> {
        if self.is_running() {
            return Ok(());
        }
        let python = peers_venv().join("bin/python");
        if !python.exists() {
            return Err(HarnessError::MissingFile(python));
        }
        let mut cmd = Command::new(python);
        cmd.arg("-u").arg(sim_script()).arg("--config").arg(self.dir.path().join("sim.json")).stdin(Stdio::null());
        match &self.endpoint {
            ModbusEndpoint::Tcp(port) => cmd.arg("--tcp").arg(port.to_string()),
            ModbusEndpoint::Rtu(path) => cmd.arg("--serial").arg(path).args(["--baud", "19200", "--parity", "N"]),
        };
        let from = self.out.len();
        let mut proc = Proc::spawn("modbus-sim", cmd, self.out.clone(), Some(self.dir.path().join("sim.log")))?;
        if let Err(e) = self.out.wait_for_from(from, "\"modbus-sim ready\"", |l| l.contains("modbus-sim ready"), START_TIMEOUT) {
            proc.ensure_running("printing \"modbus-sim ready\"")?;
            return Err(e);
        }
        if let ModbusEndpoint::Tcp(port) = self.endpoint {
            let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
            wait_for_port_while(&[addr], START_TIMEOUT, || proc.ensure_running("listening"))?;
        }
        self.proc = Some(proc);
        Ok(())
    }

    /// Kills the simulator (a device that vanishes) and reaps it.
    pub fn stop(&mut self) -> Result<()> {
        if let Some(mut p) = self.proc.take() {
            p.kill_9()?;
        }
        Ok(())
    }

    pub fn is_running(&mut self) -> bool {
        self.proc.as_mut().is_some_and(|p| matches!(p.try_wait(), Ok(None)))
    }

    /// The TCP port (panics for an RTU simulator).
    pub fn port(&self) -> u16 {
        match self.endpoint {
            ModbusEndpoint::Tcp(p) => p,
            ModbusEndpoint::Rtu(_) => panic!("an RTU simulator has no TCP port"),
        }
    }

    /// The simulator's output so far.
    pub fn log_lines(&self) -> Vec<String> {
        self.out.lines()
    }
}

/// A TCP server that sends back every byte it receives (`socat TCP-LISTEN:…,fork PIPE`): to a
/// Modbus client, a device whose replies do not fit its requests. Killed on drop.
pub struct EchoServer {
    port: u16,
    _proc: Proc,
}

impl EchoServer {
    /// Starts socat on a free loopback port; returns once it accepts connections.
    pub fn start() -> Result<EchoServer> {
        let port = free_port();
        let mut cmd = Command::new("socat");
        cmd.arg(format!("TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork")).arg("PIPE").stdin(Stdio::null());
        let mut proc = Proc::spawn("socat-echo", cmd, LineBuffer::new(), None)?;
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        wait_for_port_while(&[addr], START_TIMEOUT, || proc.ensure_running("listening"))?;
        Ok(EchoServer { port, _proc: proc })
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

/// Which table `mbpoll` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MbTable {
    Coil,
    Discrete,
    Input,
    Holding,
}

/// How `mbpoll` reaches the simulator.
#[derive(Debug, Clone, Copy)]
pub enum MbLink<'a> {
    /// Modbus TCP on 127.0.0.1:port.
    Tcp(u16),
    /// Modbus RTU (19200 8N1) on this serial device.
    Rtu(&'a Path),
}

/// Reads `count` values from 0-based `address` of `table` with `mbpoll` (one poll).
pub fn mbpoll_read(link: MbLink<'_>, unit: u8, table: MbTable, address: u16, count: u16) -> Result<Vec<i64>> {
    let t = match table {
        MbTable::Coil => "0",
        MbTable::Discrete => "1",
        MbTable::Input => "3",
        MbTable::Holding => "4",
    };
    let mut cmd = Command::new("mbpoll");
    match link {
        MbLink::Tcp(port) => cmd.args(["-m", "tcp", "-p", &port.to_string()]),
        MbLink::Rtu(_) => cmd.args(["-m", "rtu", "-b", "19200", "-P", "none"]),
    };
    cmd.args(["-a", &unit.to_string(), "-t", t, "-0", "-r", &address.to_string(), "-c", &count.to_string(), "-1", "-o", "2"]);
    match link {
        MbLink::Tcp(_) => cmd.arg("127.0.0.1"),
        MbLink::Rtu(path) => cmd.arg(path),
    };
    let command = format!("{cmd:?}");
    let out = cmd.output().map_err(|source| HarnessError::MissingProgram { program: "mbpoll".into(), source })?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(HarnessError::Command { command, status: out.status.to_string(), output: format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)) });
    }
    // Lines like "[12]: \t1234".
    let values: Vec<i64> = stdout
        .lines()
        .filter_map(|l| l.trim().strip_prefix('[').and_then(|r| r.split_once("]:")).and_then(|(_, v)| v.trim().parse().ok()))
        .collect();
    if values.len() != usize::from(count) {
        return Err(HarnessError::Command { command, status: "unexpected output".into(), output: stdout });
    }
    Ok(values)
}

/// Writes one holding register (`-t 4`) with `mbpoll` over TCP, e.g. to inject an anomaly.
pub fn mbpoll_write_registers(port: u16, unit: u8, address: u16, values: &[u16]) -> Result<()> {
    let mut cmd = Command::new("mbpoll");
    cmd.args(["-m", "tcp", "-p", &port.to_string(), "-a", &unit.to_string(), "-t", "4", "-0", "-r", &address.to_string(), "-1", "-o", "2", "127.0.0.1"]);
    cmd.args(values.iter().map(|v| v.to_string()));
    let command = format!("{cmd:?}");
    let out = cmd.output().map_err(|source| HarnessError::MissingProgram { program: "mbpoll".into(), source })?;
    if !out.status.success() {
        return Err(HarnessError::Command { command, status: out.status.to_string(), output: String::from_utf8_lossy(&out.stdout).into_owned() });
    }
    Ok(())
}
