//! The gateway side (needs `std`): a streaming frame decoder and per-node sequence tracking.
//! No I/O: the caller feeds bytes as they arrive from the port.
//!
//! Invariants:
//! - **Never panics, whatever the bytes.** Every delimited chunk of the stream becomes exactly
//!   one [`Frame`] or one [`Rejection`] (empty chunks — consecutive `0x00` — are skipped).
//! - **Resynchronises at the next `0x00`.** Garbage, line noise, a node that restarted
//!   mid-frame: the damage ends at the next delimiter, so only the damaged frames are lost.
//! - **Bounded memory.** At most `max_frame_bytes` of a frame are buffered; the rest of an
//!   oversized frame is counted and dropped until its delimiter.
//! - **A frame is accepted whole or not at all**: COBS, CRC-32 and a strict parse of the CBOR
//!   body (exact types and ranges, no trailing bytes) must all pass.
//!
//! [`SequenceTracker`] turns `(node, boot, seq)` into in-order / gap / duplicate / restart
//! verdicts; [`Reading::event_time_ms`] maps the node's relative timestamps to wall-clock time.

use std::collections::BTreeMap;
use std::fmt;
// The crate is `no_std`; this module is built with `std` and uses its prelude.
use std::prelude::rust_2021::*;
use std::vec;

use ciborium_ll::{Decoder, Header as Cbor};

use crate::cobs::{self, CobsError};
use crate::wire::{FrameHeader, Quality, CRC32, CRC_LEN, MAX_READINGS, VERSION};

/// One reading of a decoded frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    pub channel: u8,
    /// How long before the frame was sent the value was sampled (node clock).
    pub ago_ms: u32,
    pub value: f64,
    pub quality: Quality,
}

impl Reading {
    /// Wall-clock sample time, for a frame that arrived at `received_ms` (epoch ms).
    pub fn event_time_ms(&self, received_ms: i64) -> i64 {
        received_ms - i64::from(self.ago_ms)
    }
}

/// A frame that passed every check.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    pub header: FrameHeader,
    pub readings: Vec<Reading>,
    /// Bytes the frame took on the wire, delimiter included.
    pub wire_len: usize,
}

/// Why a frame was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// Longer than the configured maximum (`len` = wire bytes seen before its delimiter).
    Oversized { len: usize, max: usize },
    /// Not a COBS encoding (typically garbage, or two frames run together).
    Cobs(CobsError),
    /// Shorter than a CRC.
    TooShort { len: usize },
    /// The CRC-32 does not match the body.
    Checksum { expected: u32, actual: u32 },
    /// The checksum matched but the body is not a version-1 frame.
    Malformed { offset: usize, what: &'static str },
    /// A frame format this gateway does not know.
    Version(u64),
}

impl Rejection {
    /// Short stable name (DLQ detail prefix, log field).
    pub fn kind(&self) -> &'static str {
        match self {
            Rejection::Oversized { .. } => "oversized",
            Rejection::Cobs(_) => "framing",
            Rejection::TooShort { .. } => "too_short",
            Rejection::Checksum { .. } => "checksum",
            Rejection::Malformed { .. } => "malformed",
            Rejection::Version(_) => "version",
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejection::Oversized { len, max } => write!(f, "frame of {len} bytes exceeds the maximum of {max}"),
            Rejection::Cobs(e) => write!(f, "{e}"),
            Rejection::TooShort { len } => write!(f, "frame of {len} bytes is too short for a checksum"),
            Rejection::Checksum { expected, actual } => {
                write!(f, "CRC-32 mismatch: frame says {expected:#010x}, body has {actual:#010x}")
            }
            Rejection::Malformed { offset, what } => write!(f, "malformed frame body at byte {offset}: {what}"),
            Rejection::Version(v) => write!(f, "unknown frame version {v}"),
        }
    }
}

/// Decodes one frame as received, without its delimiter.
pub fn decode_frame(wire: &[u8]) -> Result<Frame, Rejection> {
    let mut body = vec![0u8; wire.len()];
    let n = cobs::decode(wire, &mut body).map_err(Rejection::Cobs)?;
    body.truncate(n);
    if n < CRC_LEN + 1 {
        return Err(Rejection::TooShort { len: n });
    }
    let (cbor, crc) = body.split_at(n - CRC_LEN);
    let expected = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
    let actual = CRC32.checksum(cbor);
    if expected != actual {
        return Err(Rejection::Checksum { expected, actual });
    }
    let (header, readings) = parse_body(cbor)?;
    Ok(Frame { header, readings, wire_len: wire.len() + 1 })
}

struct SliceReader<'a>(&'a [u8]);

impl ciborium_io::Read for SliceReader<'_> {
    type Error = ();
    fn read_exact(&mut self, data: &mut [u8]) -> Result<(), ()> {
        if data.len() > self.0.len() {
            return Err(());
        }
        let (head, tail) = self.0.split_at(data.len());
        data.copy_from_slice(head);
        self.0 = tail;
        Ok(())
    }
}

fn parse_body(cbor: &[u8]) -> Result<(FrameHeader, Vec<Reading>), Rejection> {
    let mut dec = Decoder::from(SliceReader(cbor));
    let mut pull = |what: &'static str| -> Result<(Cbor, usize), Rejection> {
        let offset = dec.offset();
        match dec.pull() {
            Ok(h) => Ok((h, offset)),
            Err(_) => Err(Rejection::Malformed { offset, what }),
        }
    };
    let uint = |(h, offset): (Cbor, usize), max: u64, what: &'static str| match h {
        Cbor::Positive(v) if v <= max => Ok(v),
        _ => Err(Rejection::Malformed { offset, what }),
    };
    match pull("frame array")? {
        (Cbor::Array(Some(5)), _) => {}
        (_, offset) => return Err(Rejection::Malformed { offset, what: "expected an array of 5 elements" }),
    }
    let version = uint(pull("version")?, u64::MAX, "version: expected an unsigned integer")?;
    if version != VERSION {
        return Err(Rejection::Version(version));
    }
    let node = uint(pull("node")?, u16::MAX.into(), "node: expected an integer 0..=65535")? as u16;
    let boot = uint(pull("boot")?, u16::MAX.into(), "boot: expected an integer 0..=65535")? as u16;
    let seq = uint(pull("seq")?, u32::MAX.into(), "seq: expected an integer 0..=2^32-1")? as u32;
    let count = match pull("readings array")? {
        (Cbor::Array(Some(n)), _) if (1..=MAX_READINGS).contains(&n) => n,
        (_, offset) => return Err(Rejection::Malformed { offset, what: "readings: expected an array of 1..=23 readings" }),
    };
    let mut readings = Vec::with_capacity(count);
    for _ in 0..count {
        let fields = match pull("reading")? {
            (Cbor::Array(Some(n)), _) if n == 3 || n == 4 => n,
            (_, offset) => return Err(Rejection::Malformed { offset, what: "reading: expected an array of 3 or 4 elements" }),
        };
        let channel = uint(pull("channel")?, u8::MAX.into(), "channel: expected an integer 0..=255")? as u8;
        let ago_ms = uint(pull("ago_ms")?, u32::MAX.into(), "ago_ms: expected an integer 0..=2^32-1")? as u32;
        let value = match pull("value")? {
            (Cbor::Float(v), _) => v,
            (_, offset) => return Err(Rejection::Malformed { offset, what: "value: expected a float" }),
        };
        let quality = if fields == 4 {
            let code = uint(pull("quality")?, 2, "quality: expected 1 (uncertain) or 2 (bad)")?;
            Quality::from_code(code).unwrap_or_default()
        } else {
            Quality::Good
        };
        readings.push(Reading { channel, ago_ms, value, quality });
    }
    let end = dec.offset();
    if end != cbor.len() {
        return Err(Rejection::Malformed { offset: end, what: "trailing bytes after the frame" });
    }
    Ok((FrameHeader { node, boot, seq }, readings))
}

/// Splits a byte stream into frames at `0x00` and decodes them.
#[derive(Debug)]
pub struct FrameDecoder {
    /// Most bytes of one frame before its delimiter.
    max: usize,
    buf: Vec<u8>,
    /// Bytes of the current frame beyond `max` (dropped).
    overflow: usize,
}

impl FrameDecoder {
    /// `max_frame_bytes`: the largest frame accepted on the wire, delimiter included (the
    /// nodes' `MAX_FRAME`).
    pub fn new(max_frame_bytes: usize) -> FrameDecoder {
        let max = max_frame_bytes.saturating_sub(1).max(1);
        FrameDecoder { max, buf: Vec::with_capacity(max), overflow: 0 }
    }

    /// Feeds received bytes; calls `out` once per completed frame, in stream order, with the
    /// frame's bytes as received (without the delimiter; for an oversized frame, its first
    /// `max_frame_bytes - 1`) and the decoded frame or why it was rejected.
    pub fn push(&mut self, bytes: &[u8], mut out: impl FnMut(&[u8], Result<Frame, Rejection>)) {
        let mut rest = bytes;
        while let Some(end) = rest.iter().position(|&b| b == 0) {
            self.extend(&rest[..end]);
            self.finish(&mut out);
            rest = &rest[end + 1..];
        }
        self.extend(rest);
    }

    /// Bytes of an unfinished frame held (e.g. to report at shutdown).
    pub fn buffered(&self) -> usize {
        self.buf.len() + self.overflow
    }

    fn extend(&mut self, part: &[u8]) {
        let take = self.max.saturating_sub(self.buf.len()).min(part.len());
        self.buf.extend_from_slice(&part[..take]);
        self.overflow += part.len() - take;
    }

    fn finish(&mut self, out: &mut impl FnMut(&[u8], Result<Frame, Rejection>)) {
        if self.overflow > 0 {
            out(&self.buf, Err(Rejection::Oversized { len: self.buf.len() + self.overflow, max: self.max + 1 }));
        } else if !self.buf.is_empty() {
            out(&self.buf, decode_frame(&self.buf));
        }
        self.buf.clear();
        self.overflow = 0;
    }
}

/// Where a frame stands in its node's sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sequence {
    /// The first frame seen from this node (earlier losses cannot be known).
    First,
    /// The next frame after the last one accepted.
    InOrder,
    /// `missing` frames were lost before this one.
    Gap { missing: u32 },
    /// Same or older sequence number in the same boot: already received; drop it.
    Duplicate,
    /// The node restarted (new boot id, or sequence 0 again); counting starts over.
    Restart,
}

impl Sequence {
    /// Whether the frame's readings are new.
    pub fn is_new(self) -> bool {
        self != Sequence::Duplicate
    }
}

/// Per-node link counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeCounts {
    pub frames: u64,
    pub readings: u64,
    /// Frames lost (sum of the gaps).
    pub missing_frames: u64,
    pub duplicate_frames: u64,
    pub restarts: u64,
}

/// Gap and duplicate detection per node, from `(boot, seq)`:
/// - a different `boot` than last time, or `seq == 0` after a higher one: restart;
/// - `seq` one more than the last accepted (wrapping): in order; more than one: a gap of the
///   difference minus one (differences up to 2³¹);
/// - `seq` equal to or behind the last accepted in the same boot: duplicate.
#[derive(Debug, Default)]
pub struct SequenceTracker {
    nodes: BTreeMap<u16, (u16, u32, NodeCounts)>,
}

impl SequenceTracker {
    /// Classifies `header`'s frame (carrying `readings` readings) and updates the counters.
    pub fn observe(&mut self, header: &FrameHeader, readings: usize) -> Sequence {
        let entry = self.nodes.entry(header.node);
        let verdict = match &entry {
            std::collections::btree_map::Entry::Vacant(_) => Sequence::First,
            std::collections::btree_map::Entry::Occupied(e) => {
                let (boot, last, _) = *e.get();
                let d = header.seq.wrapping_sub(last);
                if boot != header.boot {
                    Sequence::Restart
                } else if d == 0 {
                    Sequence::Duplicate
                } else if d == 1 {
                    Sequence::InOrder
                } else if d < 1 << 31 {
                    Sequence::Gap { missing: d - 1 }
                } else if header.seq == 0 {
                    Sequence::Restart
                } else {
                    Sequence::Duplicate
                }
            }
        };
        let (boot, last, counts) = entry.or_insert((header.boot, header.seq, NodeCounts::default()));
        match verdict {
            Sequence::Duplicate => counts.duplicate_frames += 1,
            Sequence::Gap { missing } => counts.missing_frames += u64::from(missing),
            Sequence::Restart => counts.restarts += 1,
            Sequence::First | Sequence::InOrder => {}
        }
        if verdict.is_new() {
            counts.frames += 1;
            counts.readings += readings as u64;
            *boot = header.boot;
            *last = header.seq;
        }
        verdict
    }

    pub fn counts(&self, node: u16) -> Option<NodeCounts> {
        self.nodes.get(&node).map(|(_, _, c)| *c)
    }

    /// Every node seen, ascending by id.
    pub fn all(&self) -> impl Iterator<Item = (u16, NodeCounts)> + '_ {
        self.nodes.iter().map(|(n, (_, _, c))| (*n, *c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{panic, vec};
    use crate::wire::{encode_frame, WireReading};

    fn frame(node: u16, boot: u16, seq: u32, values: &[f32]) -> Vec<u8> {
        let readings: Vec<WireReading> = values
            .iter()
            .enumerate()
            .map(|(i, &value)| WireReading { channel: i as u8, ago_ms: 100 * i as u32, value, quality: Quality::Good })
            .collect();
        let (mut scratch, mut wire) = ([0u8; 512], [0u8; 512]);
        let n = encode_frame(&FrameHeader { node, boot, seq }, &readings, &mut scratch, &mut wire).unwrap();
        wire[..n].to_vec()
    }

    fn decode_all(d: &mut FrameDecoder, bytes: &[u8]) -> Vec<Result<Frame, (Rejection, Vec<u8>)>> {
        let mut out = Vec::new();
        d.push(bytes, |raw, r| out.push(r.map_err(|e| (e, raw.to_vec()))));
        out
    }

    #[test]
    fn decodes_a_frame_split_anywhere() {
        let f = frame(3, 1, 9, &[21.5, -4.25, 1e6]);
        for split in 0..f.len() {
            let mut d = FrameDecoder::new(256);
            let mut got = decode_all(&mut d, &f[..split]);
            got.extend(decode_all(&mut d, &f[split..]));
            assert_eq!(got.len(), 1, "split at {split}");
            let frame = got.pop().unwrap().unwrap();
            assert_eq!(frame.header, FrameHeader { node: 3, boot: 1, seq: 9 });
            assert_eq!(frame.readings.iter().map(|r| r.value).collect::<Vec<_>>(), vec![21.5, -4.25, 1e6]);
            assert_eq!(frame.readings[2].ago_ms, 200);
            assert_eq!(frame.wire_len, f.len());
        }
    }

    #[test]
    fn resynchronises_after_garbage_and_reports_it() {
        let mut stream = b"line noise \xff\x13".to_vec();
        stream.push(0);
        stream.extend(frame(1, 0, 0, &[1.0]));
        let mut d = FrameDecoder::new(256);
        let got = decode_all(&mut d, &stream);
        assert_eq!(got.len(), 2);
        assert!(got[0].is_err());
        assert_eq!(got[1].as_ref().unwrap().readings[0].value, 1.0);
    }

    #[test]
    fn rejects_a_flipped_bit_by_checksum() {
        let mut f = frame(1, 0, 0, &[1.0, 2.0]);
        f[6] ^= 0x04;
        let got = decode_frame(&f[..f.len() - 1]);
        assert!(matches!(got, Err(Rejection::Checksum { .. }) | Err(Rejection::Cobs(_))), "{got:?}");
    }

    #[test]
    fn oversized_frames_are_rejected_and_bounded() {
        let big = frame(1, 0, 0, &[1.5; 23]);
        let mut d = FrameDecoder::new(40);
        let mut stream = big.clone();
        stream.extend(frame(1, 0, 1, &[2.0]));
        let got = decode_all(&mut d, &stream);
        match &got[0] {
            Err((Rejection::Oversized { len, max: 40 }, raw)) => {
                assert_eq!(len, &(big.len() - 1));
                assert_eq!(raw.len(), 39);
            }
            other => panic!("{other:?}"),
        }
        assert!(got[1].is_ok());
    }

    #[test]
    fn wrong_version_and_trailing_bytes_are_malformed() {
        // [2, ...]: array of 5, version 2.
        let mut body = vec![0x85, 0x02];
        let crc = CRC32.checksum(&body);
        body.extend(crc.to_le_bytes());
        let mut wire = vec![0u8; 64];
        let n = cobs::encode(&body, &mut wire).unwrap();
        assert_eq!(decode_frame(&wire[..n]), Err(Rejection::Version(2)));

        let f = frame(1, 0, 0, &[1.0]);
        let mut body = vec![0u8; 64];
        let m = cobs::decode(&f[..f.len() - 1], &mut body).unwrap();
        let mut cbor = body[..m - CRC_LEN].to_vec();
        cbor.push(0x00);
        let crc = CRC32.checksum(&cbor);
        cbor.extend(crc.to_le_bytes());
        let n = cobs::encode(&cbor, &mut wire).unwrap();
        assert!(matches!(decode_frame(&wire[..n]), Err(Rejection::Malformed { what: "trailing bytes after the frame", .. })));
    }

    #[test]
    fn sequence_verdicts() {
        let mut t = SequenceTracker::default();
        let h = |boot, seq| FrameHeader { node: 5, boot, seq };
        assert_eq!(t.observe(&h(1, 10), 2), Sequence::First);
        assert_eq!(t.observe(&h(1, 11), 2), Sequence::InOrder);
        assert_eq!(t.observe(&h(1, 11), 2), Sequence::Duplicate);
        assert_eq!(t.observe(&h(1, 15), 2), Sequence::Gap { missing: 3 });
        assert_eq!(t.observe(&h(1, 12), 2), Sequence::Duplicate);
        assert_eq!(t.observe(&h(2, 0), 2), Sequence::Restart);
        assert_eq!(t.observe(&h(2, 1), 2), Sequence::InOrder);
        assert_eq!(t.observe(&h(2, 0), 2), Sequence::Restart, "seq 0 again: restarted with the same boot id");
        assert_eq!(t.observe(&h(2, u32::MAX), 1), Sequence::Duplicate, "2^32-1 is behind 0");
        let c = t.counts(5).unwrap();
        assert_eq!(c, NodeCounts { frames: 6, readings: 12, missing_frames: 3, duplicate_frames: 3, restarts: 2 });
        assert_eq!(t.observe(&FrameHeader { node: 6, boot: 2, seq: u32::MAX - 1 }, 0), Sequence::First);
        assert_eq!(t.observe(&FrameHeader { node: 6, boot: 2, seq: 0 }, 0), Sequence::Gap { missing: 1 }, "wraps");
        assert_eq!(t.all().map(|(n, _)| n).collect::<Vec<_>>(), vec![5, 6]);
    }
}
