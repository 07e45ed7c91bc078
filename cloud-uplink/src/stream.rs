//! The framed record stream format used for files (and any byte stream).
//!
//! A stream is a header followed by zero or more frames, each holding one
//! CBOR-encoded [`Envelope`]:
//!
//! ```text
//! stream  = header *frame
//! header  = "VGLR"                 ; 4 bytes magic
//!           version: u8 = 1        ; format version
//!           reserved: 3 bytes = 0  ; must be written as 0, ignored on read
//! frame   = len: u32 big-endian    ; payload length in bytes
//!           crc: u32 big-endian    ; CRC-32 (IEEE 802.3, as zlib.crc32) of payload
//!           payload: len bytes     ; one CBOR Envelope (see vigil-record.cddl)
//! ```
//!
//! Why length-prefixed frames rather than a bare CBOR sequence (RFC 8742):
//! a reader distinguishes a clean end of stream (EOF exactly at a frame
//! boundary) from a truncated last record (EOF inside a frame), detects
//! corruption per record (CRC), and can skip a record whose payload it cannot
//! decode without losing its place. Any language reads it with a few lines
//! (read 8 bytes, read `len` bytes, check crc, CBOR-decode).
//!
//! [`RecordReader`] is the streaming decoder for central Rust consumers;
//! [`RecordWriter`] and [`encode_frame`] produce the format.

use std::io::{self, Read, Write};

use crate::record::{decode_cbor, encode_cbor, DecodeError, EncodeError, Envelope};

/// Stream magic.
pub const MAGIC: [u8; 4] = *b"VGLR";
/// Format version written by this crate.
pub const FORMAT_VERSION: u8 = 1;
/// Header length in bytes.
pub const HEADER_LEN: usize = 8;
/// Frame prefix (length + CRC) in bytes.
pub const FRAME_PREFIX_LEN: usize = 8;
/// Default largest payload [`RecordReader`] accepts (16 MiB).
pub const DEFAULT_MAX_FRAME: u32 = 16 << 20;

/// The stream header bytes.
pub fn header() -> [u8; HEADER_LEN] {
    [
        MAGIC[0],
        MAGIC[1],
        MAGIC[2],
        MAGIC[3],
        FORMAT_VERSION,
        0,
        0,
        0,
    ]
}

/// Appends one frame holding `payload` (an already CBOR-encoded record) to
/// `out`.
///
/// Fails only for a payload over 4 GiB (the outbox never stores one).
pub fn encode_frame(out: &mut Vec<u8>, payload: &[u8]) -> Result<(), EncodeError> {
    let len = u32::try_from(payload.len()).map_err(|_| {
        EncodeError::Cbor(format!(
            "record of {} bytes is too large to frame",
            payload.len()
        ))
    })?;
    out.reserve(FRAME_PREFIX_LEN + payload.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&crc32(payload).to_be_bytes());
    out.extend_from_slice(payload);
    Ok(())
}

/// Writes a framed record stream.
pub struct RecordWriter<W: Write> {
    inner: W,
    buf: Vec<u8>,
}

impl<W: Write> RecordWriter<W> {
    /// Writes the header and returns the writer.
    pub fn new(mut inner: W) -> io::Result<Self> {
        inner.write_all(&header())?;
        Ok(RecordWriter {
            inner,
            buf: Vec::new(),
        })
    }

    /// Encodes and writes one record.
    pub fn write(&mut self, env: &Envelope) -> Result<(), EncodeError> {
        let payload = encode_cbor(env)?;
        self.write_encoded(&payload)
    }

    /// Writes one already CBOR-encoded record.
    pub fn write_encoded(&mut self, payload: &[u8]) -> Result<(), EncodeError> {
        self.buf.clear();
        encode_frame(&mut self.buf, payload)?;
        self.inner
            .write_all(&self.buf)
            .map_err(|e| EncodeError::Cbor(format!("writing frame: {e}")))
    }

    /// Flushes and returns the inner writer.
    pub fn into_inner(mut self) -> io::Result<W> {
        self.inner.flush()?;
        Ok(self.inner)
    }
}

/// Streaming decoder of the framed format: an iterator of records.
///
/// Errors are of two sorts:
/// * **per-record** ([`DecodeError::Record`], [`DecodeError::Checksum`]): the
///   frame was read whole, so the reader yields the error and continues with
///   the next frame;
/// * **terminal** (everything else, notably [`DecodeError::Truncated`] when the
///   stream ends inside a frame): the reader yields the error once and then
///   ends.
///
/// A clean end of stream (EOF exactly at a frame boundary) ends iteration with
/// no error. So a file cut short yields every complete record, then exactly
/// one `Truncated` error naming the incomplete last record.
pub struct RecordReader<R: Read> {
    inner: R,
    offset: u64,
    index: u64,
    max_frame: u32,
    done: bool,
}

impl<R: Read> RecordReader<R> {
    /// Reads and checks the header.
    pub fn new(mut inner: R) -> Result<Self, DecodeError> {
        let mut h = [0u8; HEADER_LEN];
        let got = read_full(&mut inner, &mut h)
            .map_err(|source| DecodeError::Io { offset: 0, source })?;
        if got < 4 || h[..4] != MAGIC {
            let mut found = [0u8; 4];
            found[..got.min(4)].copy_from_slice(&h[..got.min(4)]);
            if got < 4 && MAGIC.starts_with(&h[..got]) {
                return Err(DecodeError::Truncated {
                    index: 0,
                    offset: 0,
                    detail: format!("stream header has {got} of {HEADER_LEN} bytes"),
                });
            }
            return Err(DecodeError::BadMagic { found });
        }
        if got < HEADER_LEN {
            return Err(DecodeError::Truncated {
                index: 0,
                offset: 0,
                detail: format!("stream header has {got} of {HEADER_LEN} bytes"),
            });
        }
        if h[4] > FORMAT_VERSION {
            return Err(DecodeError::UnsupportedVersion(h[4]));
        }
        Ok(RecordReader {
            inner,
            offset: HEADER_LEN as u64,
            index: 0,
            max_frame: DEFAULT_MAX_FRAME,
            done: false,
        })
    }

    /// Sets the largest payload accepted (protects against a corrupt length).
    pub fn with_max_frame(mut self, limit: u32) -> Self {
        self.max_frame = limit;
        self
    }

    /// Reads the next frame's payload without decoding it. `None` at a clean
    /// end of stream. Same error rules as the iterator.
    pub fn next_payload(&mut self) -> Option<Result<Vec<u8>, DecodeError>> {
        if self.done {
            return None;
        }
        let r = self.read_frame();
        match &r {
            Ok(None) => self.done = true,
            Err(DecodeError::Checksum { .. }) => {}
            Err(_) => self.done = true,
            Ok(Some(_)) => {}
        }
        r.transpose()
    }

    fn read_frame(&mut self) -> Result<Option<Vec<u8>>, DecodeError> {
        let (index, offset) = (self.index, self.offset);
        let mut prefix = [0u8; FRAME_PREFIX_LEN];
        let got = read_full(&mut self.inner, &mut prefix)
            .map_err(|source| DecodeError::Io { offset, source })?;
        if got == 0 {
            return Ok(None);
        }
        if got < FRAME_PREFIX_LEN {
            return Err(DecodeError::Truncated {
                index,
                offset,
                detail: format!("frame prefix has {got} of {FRAME_PREFIX_LEN} bytes"),
            });
        }
        let len = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
        let stored = u32::from_be_bytes([prefix[4], prefix[5], prefix[6], prefix[7]]);
        if len > self.max_frame {
            return Err(DecodeError::FrameTooLarge {
                index,
                offset,
                len,
                limit: self.max_frame,
            });
        }
        let mut payload = vec![0u8; len as usize];
        let got = read_full(&mut self.inner, &mut payload).map_err(|source| DecodeError::Io {
            offset: offset + FRAME_PREFIX_LEN as u64,
            source,
        })?;
        if got < payload.len() {
            return Err(DecodeError::Truncated {
                index,
                offset,
                detail: format!("payload has {got} of {len} bytes"),
            });
        }
        self.index += 1;
        self.offset += (FRAME_PREFIX_LEN + payload.len()) as u64;
        let computed = crc32(&payload);
        if computed != stored {
            return Err(DecodeError::Checksum {
                index,
                offset,
                stored,
                computed,
            });
        }
        Ok(Some(payload))
    }
}

impl<R: Read> Iterator for RecordReader<R> {
    type Item = Result<Envelope, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        let (index, offset) = (self.index, self.offset);
        let payload = match self.next_payload()? {
            Ok(p) => p,
            Err(e) => return Some(Err(e)),
        };
        Some(decode_cbor(&payload).map_err(|e| DecodeError::Record {
            index,
            offset,
            source: Box::new(e),
        }))
    }
}

/// Reads until `buf` is full or EOF; returns bytes read. Retries on
/// `Interrupted`.
fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

/// CRC-32 (IEEE 802.3 polynomial, reflected; identical to zlib's `crc32`).
pub fn crc32(data: &[u8]) -> u32 {
    let mut c = 0xFFFF_FFFFu32;
    for &b in data {
        c = CRC_TABLE[((c ^ u32::from(b)) & 0xFF) as usize] ^ (c >> 8);
    }
    c ^ 0xFFFF_FFFF
}

#[cfg(test)]
mod tests {
    #[test]
    fn crc32_matches_zlib_check_value() {
        assert_eq!(super::crc32(b"123456789"), 0xCBF4_3926);
    }
}
