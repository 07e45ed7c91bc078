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
        let (a, b) = (dir.path().join("ttyA"), dir.path().join("ttyB"));
        let mut cmd = Command::new("socat");
        cmd.arg("-d").arg("-d");
        for link in [&a, &b] {
            cmd.arg(format!("pty,raw,echo=0,link={}", link.display()));
        }
        let out = LineBuffer::new();
        let proc = Proc::spawn("socat", cmd, out.clone(), None)?;
        let pair = PtyPair { dir, proc };
        pair.proc.out.wait_for("socat's data transfer loop", |l| l.contains("starting data transfer loop"), Duration::from_secs(10))?;
        for link in [&a, &b] {
            if !link.exists() {
                return Err(HarnessError::MissingFile(link.clone()));
            }
        }
        Ok(pair)
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
