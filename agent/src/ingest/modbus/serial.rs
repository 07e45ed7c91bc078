//! A serial port as a non-blocking tokio stream for Modbus RTU.
//!
//! The device is opened non-blocking through [`crate::ingest::serial::tty::open_line`] (raw
//! mode, the configured baud rate, parity, 8 data bits and stop bits), and driven by the
//! runtime's reactor
//! ([`AsyncFd`]): a timed-out request leaves no thread blocked in a read, and dropping the port
//! closes it. Works on real UARTs, USB adapters and pseudo-terminals (socat in the tests).
//! Character timing (the RTU 3.5-character gap) is left to the UART; requests on one bus are
//! sent one at a time by the poller.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::config::modbus::Parity;
use crate::ingest::serial::tty::{self, Line};

/// An open, configured serial port.
#[derive(Debug)]
pub struct SerialPort {
    fd: AsyncFd<File>,
}

impl SerialPort {
    /// Opens and configures `path` (8 data bits, `parity`, `stop_bits`, non-blocking). Must be
    /// called inside a tokio runtime.
    pub fn open(path: &Path, baud: u32, parity: Parity, stop_bits: u8) -> io::Result<SerialPort> {
        let file = tty::open_line(path, Line { baud, parity, stop_bits, nonblocking: true }).map_err(io::Error::other)?;
        // Stale bytes from before we opened the port are no reply of ours.
        // SAFETY: tcflush on the descriptor `file` owns; no memory is passed.
        unsafe {
            libc::tcflush(file.as_raw_fd(), libc::TCIOFLUSH);
        }
        // SAFETY: `file` owns its descriptor and moves into the AsyncFd, so the descriptor stays
        // open and the same until the AsyncFd is dropped.
        let fd = unsafe { AsyncFd::register(file) }?;
        Ok(SerialPort { fd })
    }
}

impl AsyncRead for SerialPort {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        loop {
            let mut guard = ready!(self.fd.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match guard.try_io(|f| f.get_ref().read(unfilled)) {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for SerialPort {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        loop {
            let mut guard = ready!(self.fd.poll_write_ready(cx))?;
            match guard.try_io(|f| f.get_ref().write(data)) {
                Ok(result) => return Poll::Ready(result),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
