use std::path::PathBuf;
use std::time::Duration;

/// What can go wrong while starting or watching a peer. Messages carry the recent output of
/// the process involved, so a failed test explains itself.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// An I/O error, with what the harness was doing.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// A program the harness needs is not installed (run `tests/peers/install.sh`).
    #[error("`{program}` not found ({source}); run `bash tests/peers/install.sh`")]
    MissingProgram {
        program: String,
        #[source]
        source: std::io::Error,
    },
    /// An awaited event did not happen in time.
    #[error("timed out after {timeout:?} waiting for {what}\n--- recent output ---\n{recent}")]
    Timeout { what: String, timeout: Duration, recent: String },
    /// A process ended while the harness was waiting on it.
    #[error("{what} exited ({status}) before {waiting_for}\n--- recent output ---\n{recent}")]
    Exited { what: String, status: String, waiting_for: String, recent: String },
    /// A one-shot command (openssl, mosquitto_pub, ...) failed.
    #[error("`{command}` failed ({status})\n{output}")]
    Command { command: String, status: String, output: String },
    /// A file the harness needs is missing.
    #[error("missing file {0}")]
    MissingFile(PathBuf),
}

impl HarnessError {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> HarnessError {
        let context = context.into();
        move |source| HarnessError::Io { context, source }
    }
}
