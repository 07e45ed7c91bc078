//! A child process whose stdout and stderr are read into a [`LineBuffer`] by threads, and which
//! is SIGKILLed and reaped on drop.

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::{HarnessError, LineBuffer, Result};

pub(crate) struct Proc {
    pub(crate) name: String,
    child: Child,
    pub(crate) out: LineBuffer,
    status: Option<ExitStatus>,
}

impl Proc {
    /// Spawns `cmd` with stdin closed (unless the caller set it) and stdout/stderr captured.
    /// Lines go to `out`, and to `log_file` when given; stderr lines are captured unprefixed
    /// (Rust's tracing and mosquitto both log to either stream).
    pub(crate) fn spawn(
        name: &str,
        mut cmd: Command,
        out: LineBuffer,
        log_file: Option<PathBuf>,
    ) -> Result<Proc> {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let program = cmd.get_program().to_string_lossy().into_owned();
        let mut child = cmd.spawn().map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                HarnessError::MissingProgram { program: program.clone(), source }
            } else {
                HarnessError::Io { context: format!("spawning {program}"), source }
            }
        })?;
        out.attach(child.stdout.take().expect("piped stdout"), "", log_file.clone());
        out.attach(child.stderr.take().expect("piped stderr"), "", log_file);
        Ok(Proc { name: name.to_owned(), child, out, status: None })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn take_stdin(&mut self) -> Option<std::process::ChildStdin> {
        self.child.stdin.take()
    }


    /// `Ok(Some(status))` once the process has exited.
    pub(crate) fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = self.child.try_wait().map_err(HarnessError::io("try_wait"))?;
        }
        Ok(self.status)
    }

    /// Errors with [`HarnessError::Exited`] if the process is gone.
    pub(crate) fn ensure_running(&mut self, waiting_for: &str) -> Result<()> {
        match self.try_wait()? {
            None => Ok(()),
            Some(status) => {
                // Let the readers drain what the process wrote last.
                let _ = self.out.wait_for("EOF", |_| false, Duration::from_millis(500));
                Err(HarnessError::Exited {
                    what: self.name.clone(),
                    status: status.to_string(),
                    waiting_for: waiting_for.into(),
                    recent: self.out.tail(40),
                })
            }
        }
    }

    /// Sends a signal (e.g. `libc::SIGTERM`) if the process has not been reaped yet.
    pub(crate) fn signal(&mut self, sig: i32) -> Result<()> {
        if self.try_wait()?.is_some() {
            return Ok(());
        }
        // SAFETY: kill(2) on our own child's pid, which is not reaped yet (try_wait said running),
        // so the pid cannot have been reused.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
        if rc != 0 {
            return Err(HarnessError::Io {
                context: format!("kill -{sig} {}", self.name),
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(())
    }

    /// SIGKILL (no chance to clean up) and reap.
    pub(crate) fn kill_9(&mut self) -> Result<ExitStatus> {
        if self.try_wait()?.is_none() {
            let _ = self.child.kill();
        }
        self.wait()
    }

    /// Blocks until the process exits.
    pub(crate) fn wait(&mut self) -> Result<ExitStatus> {
        if let Some(s) = self.status {
            return Ok(s);
        }
        let s = self.child.wait().map_err(HarnessError::io(format!("waiting for {}", self.name)))?;
        self.status = Some(s);
        Ok(s)
    }

    /// Blocks until the process exits or `timeout` passes.
    pub(crate) fn wait_timeout(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_millis(2);
        loop {
            if let Some(s) = self.try_wait()? {
                return Ok(s);
            }
            if Instant::now() >= deadline {
                return Err(HarnessError::Timeout {
                    what: format!("{} to exit", self.name),
                    timeout,
                    recent: self.out.tail(40),
                });
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.kill_9();
        if std::thread::panicking() {
            eprintln!(
                "--- last output of {} (pid {}) ---\n{}\n--- end of {} ---",
                self.name,
                self.child.id(),
                self.out.tail(60),
                self.name
            );
        }
    }
}
