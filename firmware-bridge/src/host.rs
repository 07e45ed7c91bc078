//! Running node code on a host (needs `std`): simulators, tests, benchmarks, a gateway-side
//! replay tool.

use std::io::Write;
use std::vec::Vec;

use embedded_hal_nb::serial::{ErrorKind, ErrorType};

/// An `embedded_hal_nb::serial::Write<u8>` over any `std::io::Write` — a file, a pty, a socket
/// or a `Vec<u8>`. Bytes are buffered and written on `flush` (a [`crate::node::Node`] flushes
/// after every frame), so each frame goes out in one `write_all`.
#[derive(Debug, Default)]
pub struct StdSerial<W> {
    inner: W,
    buf: Vec<u8>,
}

impl<W: Write> StdSerial<W> {
    pub fn new(inner: W) -> Self {
        StdSerial { inner, buf: Vec::new() }
    }

    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    /// The writer (bytes not flushed yet are dropped).
    pub fn into_inner(self) -> W {
        self.inner
    }
}

impl<W> ErrorType for StdSerial<W> {
    type Error = ErrorKind;
}

impl<W: Write> embedded_hal_nb::serial::Write<u8> for StdSerial<W> {
    fn write(&mut self, word: u8) -> nb::Result<(), ErrorKind> {
        self.buf.push(word);
        Ok(())
    }

    fn flush(&mut self) -> nb::Result<(), ErrorKind> {
        let written = self.inner.write_all(&self.buf).and_then(|()| self.inner.flush());
        self.buf.clear();
        written.map_err(|_| nb::Error::Other(ErrorKind::Other))
    }
}
