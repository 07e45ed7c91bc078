//! A connected pair of pseudo-terminals from socat — a null-modem cable between two serial
//! ports, without hardware: what is written to one end is read from the other. Both ends are
//! real ttys (termios works on them), so the agent opens one exactly like a USB serial adapter.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::process::Proc;
use crate::{HarnessError, LineBuffer, Result};

/// `socat -d -d pty,raw,echo=0,link=A pty,raw,echo=0,link=B`, killed on drop.
pub struct PtyPair {
    dir: tempfile::TempDir,
    proc: Proc,
}

impl PtyPair {
    /// Starts socat and returns once both links exist and it is relaying (its "starting data
    /// transfer loop" log line).
    pub fn start() -> Result<PtyPair> {
        let dir = tempfile::Builder::new().prefix("vigil-pty-").tempdir().map_err(HarnessError::io("creating pty tempdir"))?;
        let proc = Self::spawn(dir.path())?;
        Ok(PtyPair { dir, proc })
    }

    /// Unplugs the cable: socat is killed, both ttys disappear (a reader gets an I/O error),
    /// then a new pair appears under the same two paths — like a USB serial adapter pulled
    /// out and plugged in again.
    pub fn replug(&mut self) -> Result<()> {
        self.proc.kill_9()?;
        // socat removes its links when it exits normally, not when killed.
        for link in [self.a(), self.b()] {
            let _ = std::fs::remove_file(link);
        }
        self.proc = Self::spawn(self.dir.path())?;
        Ok(())
    }

    fn spawn(dir: &Path) -> Result<Proc> {
        let (a, b) = (dir.join("ttyA"), dir.join("ttyB"));
        let mut cmd = Command::new("socat");
        cmd.arg("-d").arg("-d");
        for link in [&a, &b] {
            cmd.arg(format!("pty,raw,echo=0,link={}", link.display()));
        }
        let proc = Proc::spawn("socat", cmd, LineBuffer::new(), None)?;
        proc.out.wait_for("socat's data transfer loop", |l| l.contains("starting data transfer loop"), Duration::from_secs(10))?;
        for link in [&a, &b] {
            if !link.exists() {
                return Err(HarnessError::MissingFile(link.clone()));
            }
        }
        Ok(proc)
    }

    /// One end (give it to the agent).
    pub fn a(&self) -> PathBuf {
        self.dir.path().join("ttyA")
    }

    /// The other end (the sensor nodes' side).
    pub fn b(&self) -> PathBuf {
        self.dir.path().join("ttyB")
    }

    /// socat's log (`-d -d`).
    pub fn log(&self) -> Vec<String> {
        self.proc.out.lines()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}
