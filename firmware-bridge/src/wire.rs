//! The frame format shared by both ends of the link. No I/O, no allocation.
//!
//! ```text
//! on the wire:  COBS( body ‖ CRC-32(body) as 4 bytes little-endian ) 0x00
//! body (CBOR):  [ version = 1, node: uint ≤ 65535, boot: uint ≤ 65535, seq: uint ≤ 2³²−1,
//!                 [ [channel: uint ≤ 255, ago_ms: uint ≤ 2³²−1, value: float (, quality: 1 | 2)], … ] ]
//! ```
//!
//! - **Framing.** COBS removes every `0x00` from the frame, so `0x00` is the frame delimiter and
//!   a receiver that starts mid-stream, or loses bytes, resynchronises at the next `0x00`.
//!   Empty frames (`0x00 0x00`) carry nothing and are ignored, so a sender may emit a lone
//!   `0x00` at any time to end whatever partial frame the receiver holds.
//! - **Integrity.** CRC-32 (ISO-HDLC, the Ethernet/zlib polynomial; check value `0xCBF43926`)
//!   over the CBOR body. A frame with a bad CRC is rejected whole.
//! - **Identity and order.** `node` names the sender; `boot` changes on every restart of the
//!   node (a reset counter kept in flash, or a random value at start-up); `seq` counts the
//!   node's frames from 0 after each start. The gateway derives gaps (lost frames) and
//!   duplicates from `(boot, seq)`.
//! - **Time.** Nodes have no wall clock. Each reading carries `ago_ms`: how long before the
//!   frame was encoded it was sampled, on the node's own millisecond clock. The gateway maps
//!   it to wall-clock time as *receive time − ago_ms*; the error is the time the frame spent in
//!   UART buffers and on the wire (milliseconds), and the node's clock drift over `ago_ms`.
//! - **Size.** A frame holds 1 to [`MAX_READINGS`] readings (so the CBOR array header is one
//!   byte). A reading costs 5–15 bytes of CBOR (usually 8–10: channel 1, age 1–5, value 3 or
//!   5); the header and CRC add ~10 bytes and COBS one byte per 254. Values are sent as the
//!   shortest IEEE float that holds the `f32` exactly (half precision when lossless).
//!
//! Quality 0 (good) is the default and is not sent; 1 is uncertain, 2 is bad.

use ciborium_ll::{Encoder, Header as Cbor};

/// Format version in every frame's first element.
pub const VERSION: u64 = 1;
/// Most readings in one frame.
pub const MAX_READINGS: usize = 23;
/// Bytes of the CRC trailer.
pub const CRC_LEN: usize = 4;
/// The frame checksum: CRC-32/ISO-HDLC.
pub const CRC32: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);
/// Smallest useful frame buffer: a header and one reading at their largest, COBS, delimiter.
pub const MIN_FRAME_BYTES: usize = crate::cobs::max_encoded_len(MAX_HEADER_BYTES + MAX_READING_BYTES + CRC_LEN) + 1;
/// Largest CBOR encoding of the frame header (array, version, node, boot, seq, readings array).
pub const MAX_HEADER_BYTES: usize = 1 + 1 + 3 + 3 + 5 + 1;
/// Largest CBOR encoding of one reading (array, channel, ago, f32 value, quality).
pub const MAX_READING_BYTES: usize = 1 + 2 + 5 + 5 + 1;

/// How much a value can be trusted, as the node reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Quality {
    #[default]
    Good,
    /// Doubtful (e.g. the sensor reports it is out of calibration).
    Uncertain,
    /// Known wrong; the gateway keeps it but does not score it.
    Bad,
}

impl Quality {
    /// The wire code (0 is never sent: it is the default).
    pub const fn code(self) -> u8 {
        match self {
            Quality::Good => 0,
            Quality::Uncertain => 1,
            Quality::Bad => 2,
        }
    }

    pub const fn from_code(code: u64) -> Option<Quality> {
        match code {
            0 => Some(Quality::Good),
            1 => Some(Quality::Uncertain),
            2 => Some(Quality::Bad),
            _ => None,
        }
    }
}

/// Who sent a frame and where it is in the sender's sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub node: u16,
    pub boot: u16,
    pub seq: u32,
}

/// One reading as carried in a frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WireReading {
    /// The node's channel number (one per sensor input).
    pub channel: u8,
    /// Milliseconds between sampling and encoding the frame, on the node's clock.
    pub ago_ms: u32,
    pub value: f32,
    pub quality: Quality,
}

/// The output buffer is too small for the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooLarge;

/// A `ciborium_io::Write` over a fixed slice. Handed to the encoder by value (ciborium-io has
/// no `&mut W` impl when its `std` feature is on), so the length lives outside.
struct SliceWriter<'a, 'b> {
    buf: &'a mut [u8],
    len: &'b mut usize,
}

impl ciborium_io::Write for SliceWriter<'_, '_> {
    type Error = TooLarge;

    fn write_all(&mut self, data: &[u8]) -> Result<(), TooLarge> {
        let at = *self.len;
        let dst = self.buf.get_mut(at..at + data.len()).ok_or(TooLarge)?;
        dst.copy_from_slice(data);
        *self.len += data.len();
        Ok(())
    }

    fn flush(&mut self) -> Result<(), TooLarge> {
        Ok(())
    }
}

/// Writes the CBOR body and its CRC into `out`; returns the length. `readings` must hold 1 to
/// [`MAX_READINGS`] readings.
pub fn encode_body(header: &FrameHeader, readings: &[WireReading], out: &mut [u8]) -> Result<usize, TooLarge> {
    if readings.is_empty() || readings.len() > MAX_READINGS {
        return Err(TooLarge);
    }
    let mut len = 0;
    {
        let mut enc = Encoder::from(SliceWriter { buf: out, len: &mut len });
        enc.push(Cbor::Array(Some(5)))?;
        enc.push(Cbor::Positive(VERSION))?;
        enc.push(Cbor::Positive(header.node.into()))?;
        enc.push(Cbor::Positive(header.boot.into()))?;
        enc.push(Cbor::Positive(header.seq.into()))?;
        enc.push(Cbor::Array(Some(readings.len())))?;
        for r in readings {
            let with_quality = r.quality != Quality::Good;
            enc.push(Cbor::Array(Some(if with_quality { 4 } else { 3 })))?;
            enc.push(Cbor::Positive(r.channel.into()))?;
            enc.push(Cbor::Positive(r.ago_ms.into()))?;
            enc.push(Cbor::Float(r.value.into()))?;
            if with_quality {
                enc.push(Cbor::Positive(r.quality.code().into()))?;
            }
        }
    }
    let crc = CRC32.checksum(&out[..len]);
    out.get_mut(len..len + CRC_LEN).ok_or(TooLarge)?.copy_from_slice(&crc.to_le_bytes());
    Ok(len + CRC_LEN)
}

/// Encodes a whole wire frame (COBS and the `0x00` delimiter) into `wire`, using `scratch`
/// for the body; returns the number of bytes of `wire` to send.
pub fn encode_frame(header: &FrameHeader, readings: &[WireReading], scratch: &mut [u8], wire: &mut [u8]) -> Result<usize, TooLarge> {
    let body = encode_body(header, readings, scratch)?;
    let n = crate::cobs::encode(&scratch[..body], wire).ok_or(TooLarge)?;
    *wire.get_mut(n).ok_or(TooLarge)? = 0;
    Ok(n + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_is_the_standard_crc32() {
        assert_eq!(CRC32.checksum(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn one_reading_frame_layout() {
        let h = FrameHeader { node: 7, boot: 1, seq: 0 };
        let r = [WireReading { channel: 2, ago_ms: 10, value: 1.5, quality: Quality::Good }];
        let mut body = [0u8; 64];
        let n = encode_body(&h, &r, &mut body).unwrap();
        // [1, 7, 1, 0, [[2, 10, 1.5 (f16 0x3E00)]]]
        let cbor = [0x85, 0x01, 0x07, 0x01, 0x00, 0x81, 0x83, 0x02, 0x0A, 0xF9, 0x3E, 0x00];
        assert_eq!(&body[..n - CRC_LEN], &cbor);
        assert_eq!(body[n - CRC_LEN..n], CRC32.checksum(&cbor).to_le_bytes());
    }

    #[test]
    fn largest_reading_fits_the_bounds() {
        let h = FrameHeader { node: u16::MAX, boot: u16::MAX, seq: u32::MAX };
        let r = [WireReading { channel: 255, ago_ms: u32::MAX, value: 0.1, quality: Quality::Bad }];
        let mut scratch = [0u8; 64];
        let mut wire = [0u8; MIN_FRAME_BYTES];
        let n = encode_frame(&h, &r, &mut scratch, &mut wire).unwrap();
        assert_eq!(n, MIN_FRAME_BYTES, "the bound is tight for this frame");
        assert_eq!(wire[n - 1], 0);
    }

    #[test]
    fn small_buffers_are_reported() {
        let h = FrameHeader { node: 1, boot: 0, seq: 0 };
        let r = [WireReading { channel: 0, ago_ms: 0, value: 1.0, quality: Quality::Good }];
        let mut scratch = [0u8; 8];
        let mut wire = [0u8; 64];
        assert_eq!(encode_frame(&h, &r, &mut scratch, &mut wire), Err(TooLarge));
        assert_eq!(encode_frame(&h, &[], &mut [0u8; 64], &mut wire), Err(TooLarge));
    }
}
