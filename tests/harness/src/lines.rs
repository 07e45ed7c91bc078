use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::{HarnessError, Result};

#[derive(Default)]
struct Inner {
    lines: Vec<String>,
    /// Number of reader threads still running (0 = every stream reached EOF).
    open_streams: usize,
    /// Whether any reader was ever attached (a bare buffer never reports "exited").
    attached: bool,
}

/// A growing list of output lines from a process, shared with the threads that read its pipes.
/// Waiters block on a condition variable, so they wake as soon as the line they want arrives.
#[derive(Clone, Default)]
pub struct LineBuffer {
    inner: Arc<(Mutex<Inner>, Condvar)>,
}

impl LineBuffer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a line and wakes waiters.
    pub fn push(&self, line: String) {
        let (m, cv) = &*self.inner;
        m.lock().unwrap_or_else(|e| e.into_inner()).lines.push(line);
        cv.notify_all();
    }

    /// A copy of every line so far.
    pub fn lines(&self) -> Vec<String> {
        self.inner.0.lock().unwrap_or_else(|e| e.into_inner()).lines.clone()
    }

    /// Number of lines so far.
    pub fn len(&self) -> usize {
        self.inner.0.lock().unwrap_or_else(|e| e.into_inner()).lines.len()
    }

    /// Whether no line arrived yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The last `n` lines joined with newlines (for error messages).
    pub fn tail(&self, n: usize) -> String {
        let g = self.inner.0.lock().unwrap_or_else(|e| e.into_inner());
        let start = g.lines.len().saturating_sub(n);
        g.lines[start..].join("\n")
    }

    /// Blocks until a line at index `>= from` satisfies `pred`; returns its index and text.
    /// Fails with [`HarnessError::Timeout`], or [`HarnessError::Exited`] when all the streams
    /// closed (the process is gone) and no such line came.
    pub fn wait_for_from(
        &self,
        from: usize,
        what: &str,
        mut pred: impl FnMut(&str) -> bool,
        timeout: Duration,
    ) -> Result<(usize, String)> {
        let deadline = Instant::now() + timeout;
        let (m, cv) = &*self.inner;
        let mut g = m.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = from;
        loop {
            while next < g.lines.len() {
                if pred(&g.lines[next]) {
                    return Ok((next, g.lines[next].clone()));
                }
                next += 1;
            }
            let recent = |g: &Inner| {
                let s = g.lines.len().saturating_sub(40);
                g.lines[s..].join("\n")
            };
            if g.open_streams == 0 && g.attached {
                return Err(HarnessError::Exited {
                    what: "the process".into(),
                    status: "output closed".into(),
                    waiting_for: what.into(),
                    recent: recent(&g),
                });
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(HarnessError::Timeout { what: what.into(), timeout, recent: recent(&g) });
            }
            g = cv.wait_timeout(g, deadline - now).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    /// Blocks until any line satisfies `pred` (lines seen before the call count too).
    pub fn wait_for(
        &self,
        what: &str,
        pred: impl FnMut(&str) -> bool,
        timeout: Duration,
    ) -> Result<String> {
        self.wait_for_from(0, what, pred, timeout).map(|(_, l)| l)
    }

    /// Starts a thread that reads `stream` line by line (lossy UTF-8, `\r` trimmed), pushes each
    /// line here, and appends it to `log_file` if given.
    pub fn attach<R: Read + Send + 'static>(
        &self,
        stream: R,
        prefix: &'static str,
        log_file: Option<PathBuf>,
    ) -> JoinHandle<()> {
        {
            let (m, _) = &*self.inner;
            let mut g = m.lock().unwrap_or_else(|e| e.into_inner());
            g.open_streams += 1;
            g.attached = true;
        }
        let buf = self.clone();
        std::thread::Builder::new()
            .name(format!("harness-reader{prefix}"))
            .spawn(move || {
                let mut file = log_file.and_then(|p| {
                    std::fs::OpenOptions::new().create(true).append(true).open(p).ok()
                });
                let mut reader = BufReader::new(stream);
                let mut raw = Vec::new();
                loop {
                    raw.clear();
                    match reader.read_until(b'\n', &mut raw) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {
                            while raw.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                                raw.pop();
                            }
                            let line = format!("{prefix}{}", String::from_utf8_lossy(&raw));
                            if let Some(f) = file.as_mut() {
                                let _ = writeln!(f, "{line}");
                            }
                            buf.push(line);
                        }
                    }
                }
                let _ = file.as_mut().map(File::flush);
                let (m, cv) = &*buf.inner;
                m.lock().unwrap_or_else(|e| e.into_inner()).open_streams -= 1;
                cv.notify_all();
            })
            .expect("spawn reader thread")
    }
}
