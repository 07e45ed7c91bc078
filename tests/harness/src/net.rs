use std::collections::HashSet;
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::{HarnessError, Result};

static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A TCP port on 127.0.0.1 that was free a moment ago: the kernel picks it (bind to port 0),
/// the listener is closed, and the port is returned. Never returns the same port twice in one
/// process, so parallel tests in one test binary cannot collide with each other.
pub fn free_port() -> u16 {
    let mut handed = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    let handed = handed.get_or_insert_with(HashSet::new);
    loop {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = l.local_addr().expect("local_addr").port();
        if handed.insert(port) {
            return port;
        }
    }
}

/// Blocks until a TCP connect to `addr` succeeds (the server is accepting), or `timeout`.
/// Retries quickly (every 10 ms, up to 50 ms later) — it waits for the event, not a fixed time.
pub fn wait_for_port(addr: impl ToSocketAddrs, timeout: Duration) -> Result<()> {
    let addrs: Vec<SocketAddr> = addr
        .to_socket_addrs()
        .map_err(HarnessError::io("resolving address"))?
        .collect();
    wait_for_port_while(&addrs, timeout, || Ok(()))
}

/// Like [`wait_for_port`], but calls `alive` between attempts so a caller can bail out early
/// (e.g. when the server process already exited).
pub(crate) fn wait_for_port_while(
    addrs: &[SocketAddr],
    timeout: Duration,
    mut alive: impl FnMut() -> Result<()>,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(5);
    loop {
        for a in addrs {
            if TcpStream::connect_timeout(a, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
        }
        alive()?;
        if Instant::now() >= deadline {
            return Err(HarnessError::Timeout {
                what: format!("a TCP listener on {addrs:?}"),
                timeout,
                recent: String::new(),
            });
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}
