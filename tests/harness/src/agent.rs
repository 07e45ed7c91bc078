use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, ExitStatus};
use std::time::Duration;

use crate::process::Proc;
use crate::{LineBuffer, Result};

/// The agent (or any binary) under test, with its stdout and stderr captured line by line.
///
/// Tests pass `env!("CARGO_BIN_EXE_vigil")`. The process is SIGKILLed on drop; if the test is
/// panicking, its last output lines are printed to stderr.
pub struct AgentProcess {
    proc: Proc,
}

impl AgentProcess {
    /// Starts `bin` with `args` and extra `env` variables (added to the inherited environment).
    /// stdin is closed.
    pub fn spawn<I, S, E, K, V>(bin: impl AsRef<Path>, args: I, env: E) -> Result<AgentProcess>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
        E: IntoIterator<Item = (K, V)>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        let bin = bin.as_ref();
        let mut cmd = Command::new(bin);
        cmd.args(args).envs(env).stdin(std::process::Stdio::null());
        let name = bin.file_name().map_or("agent".into(), |n| n.to_string_lossy().into_owned());
        Ok(AgentProcess { proc: Proc::spawn(&name, cmd, LineBuffer::new(), None)? })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// Blocks until an output line (stdout or stderr, seen before or after this call) satisfies
    /// `pred`, and returns it. Fails on timeout or when the process closed its output first.
    pub fn wait_for_line(
        &self,
        pred: impl FnMut(&str) -> bool,
        timeout: Duration,
    ) -> Result<String> {
        self.proc.out.wait_for(&format!("a matching line from {}", self.proc.name), pred, timeout)
    }

    /// Like [`wait_for_line`](Self::wait_for_line), but only lines at index `>= from` count
    /// (take `from` from [`line_count`](Self::line_count) before triggering the event).
    /// Returns the index and the line.
    pub fn wait_for_line_after(
        &self,
        from: usize,
        pred: impl FnMut(&str) -> bool,
        timeout: Duration,
    ) -> Result<(usize, String)> {
        self.proc.out.wait_for_from(
            from,
            &format!("a matching line from {} after line {from}", self.proc.name),
            pred,
            timeout,
        )
    }

    /// Every output line so far (stdout and stderr, in arrival order).
    pub fn lines(&self) -> Vec<String> {
        self.proc.out.lines()
    }

    /// Number of output lines so far.
    pub fn line_count(&self) -> usize {
        self.proc.out.len()
    }

    /// The shared output buffer (to wait on from another thread).
    pub fn output(&self) -> &LineBuffer {
        &self.proc.out
    }

    /// SIGKILL: the agent gets no chance to flush or clean up (crash test). Reaps it.
    pub fn kill_9(&mut self) -> Result<ExitStatus> {
        self.proc.kill_9()
    }

    /// SIGTERM: asks the agent to shut down gracefully. Does not wait; see [`wait`](Self::wait).
    pub fn terminate(&mut self) -> Result<()> {
        self.proc.signal(libc::SIGTERM)
    }

    /// Sends any signal, e.g. `libc::SIGHUP`.
    pub fn signal(&mut self, sig: i32) -> Result<()> {
        self.proc.signal(sig)
    }

    /// `Some(status)` if the process already exited.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        self.proc.try_wait()
    }

    /// Blocks until the process exits.
    pub fn wait(&mut self) -> Result<ExitStatus> {
        self.proc.wait()
    }

    /// Blocks until the process exits, at most `timeout`.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<ExitStatus> {
        self.proc.wait_timeout(timeout)
    }
}
