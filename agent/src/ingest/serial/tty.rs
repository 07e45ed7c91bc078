//! Opening a serial device raw, 8N1 (or with parity / two stop bits: [`open_line`]), at a given
//! baud rate, through termios (`libc`).
//!
//! Works for real UARTs and USB serial adapters as well as the pseudo-terminals tests use
//! (socat `pty`): both are ttys. Settings: raw mode (`cfmakeraw`: no echo, no line editing,
//! no CR/LF translation, 8 data bits), no parity, one stop bit, no hardware flow control,
//! modem lines ignored (`CLOCAL`). Reads return within [`READ_TIMEOUT_DS`] tenths of a second
//! even when nothing arrives (`VMIN = 0`, `VTIME`), so the reading thread sees a stop request.
//!
//! A dozen libc calls, written here instead of depending on `serialport` (which pulls in
//! libudev for port enumeration, not needed to open a known path).

use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;

pub use crate::config::modbus::Parity;

/// How long a read waits for the first byte, in tenths of a second.
pub const READ_TIMEOUT_DS: u8 = 1;

/// Why a port could not be opened or configured.
#[derive(Debug, thiserror::Error)]
pub enum TtyError {
    #[error("cannot open {path}: {source}")]
    Open { path: String, source: std::io::Error },
    #[error("{path} is not a serial device (tcgetattr: {source})")]
    NotATty { path: String, source: std::io::Error },
    #[error("cannot configure {path} ({step}): {source}")]
    Configure { path: String, step: &'static str, source: std::io::Error },
    #[error("{0} baud is not supported")]
    Baud(u32),
}

/// The termios speed constant for `baud`, if this platform supports it.
pub fn speed(baud: u32) -> Option<libc::speed_t> {
    Some(match baud {
        1200 => libc::B1200,
        2400 => libc::B2400,
        4800 => libc::B4800,
        9600 => libc::B9600,
        19200 => libc::B19200,
        38400 => libc::B38400,
        57600 => libc::B57600,
        115_200 => libc::B115200,
        230_400 => libc::B230400,
        460_800 => libc::B460800,
        500_000 => libc::B500000,
        576_000 => libc::B576000,
        921_600 => libc::B921600,
        1_000_000 => libc::B1000000,
        1_152_000 => libc::B1152000,
        1_500_000 => libc::B1500000,
        2_000_000 => libc::B2000000,
        2_500_000 => libc::B2500000,
        3_000_000 => libc::B3000000,
        3_500_000 => libc::B3500000,
        4_000_000 => libc::B4000000,
        _ => return None,
    })
}

/// Line settings for [`open_line`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Line {
    pub baud: u32,
    pub parity: Parity,
    /// 1 or 2.
    pub stop_bits: u8,
    /// Keep the descriptor non-blocking (for a reactor, e.g. tokio's `AsyncFd`) instead of
    /// blocking reads that return after [`READ_TIMEOUT_DS`].
    pub nonblocking: bool,
}

/// Opens `path` for reading and writing and configures it 8N1 with blocking reads (see the
/// module docs).
pub fn open(path: &Path, baud: u32) -> Result<File, TtyError> {
    open_line(path, Line { baud, parity: Parity::None, stop_bits: 1, nonblocking: false })
}

/// [`open`] with parity, stop bits and blocking mode of `line`.
pub fn open_line(path: &Path, line: Line) -> Result<File, TtyError> {
    let name = || path.display().to_string();
    let baud = line.baud;
    let speed = speed(baud).ok_or(TtyError::Baud(baud))?;
    // O_NOCTTY: never become the agent's controlling terminal. O_NONBLOCK: do not wait for
    // carrier detect on open; cleared again below so reads block (up to VTIME).
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
        .open(path)
        .map_err(|source| TtyError::Open { path: name(), source })?;
    let fd = file.as_raw_fd();
    let check = |rc: libc::c_int, step: &'static str| {
        if rc == 0 {
            Ok(())
        } else {
            Err(TtyError::Configure { path: name(), step, source: std::io::Error::last_os_error() })
        }
    };
    // SAFETY: `fd` is open for the lifetime of `file`; termios is a plain C struct that
    // tcgetattr fills completely before it is read.
    unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(fd, &mut t) != 0 {
            return Err(TtyError::NotATty { path: name(), source: std::io::Error::last_os_error() });
        }
        libc::cfmakeraw(&mut t);
        t.c_cflag |= libc::CLOCAL | libc::CREAD;
        t.c_cflag &= !(libc::CRTSCTS | libc::CSTOPB | libc::PARENB | libc::PARODD);
        match line.parity {
            Parity::None => {}
            Parity::Even => t.c_cflag |= libc::PARENB,
            Parity::Odd => t.c_cflag |= libc::PARENB | libc::PARODD,
        }
        if line.stop_bits == 2 {
            t.c_cflag |= libc::CSTOPB;
        }
        t.c_iflag &= !(libc::IXON | libc::IXOFF | libc::IXANY);
        t.c_cc[libc::VMIN] = 0;
        t.c_cc[libc::VTIME] = READ_TIMEOUT_DS;
        check(libc::cfsetispeed(&mut t, speed), "cfsetispeed")?;
        check(libc::cfsetospeed(&mut t, speed), "cfsetospeed")?;
        check(libc::tcsetattr(fd, libc::TCSANOW, &t), "tcsetattr")?;
        if !line.nonblocking {
            let flags = libc::fcntl(fd, libc::F_GETFL);
            check(if flags < 0 { flags } else { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) }, "clearing O_NONBLOCK")?;
        }
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_regular_file_is_not_a_tty() {
        let f = tempfile::NamedTempFile::new().unwrap();
        assert!(matches!(open(f.path(), 9600), Err(TtyError::NotATty { .. })));
        assert!(matches!(open(f.path(), 9601), Err(TtyError::Baud(9601))));
        assert!(matches!(open(Path::new("/nonexistent/tty"), 9600), Err(TtyError::Open { .. })));
    }
}
