//! Consistent Overhead Byte Stuffing: removes every `0x00` from a frame so `0x00` can delimit
//! frames on the wire.
//!
//! Invariants: [`encode`] output never contains `0x00` and is at most
//! [`max_encoded_len`]`(n)` bytes for `n` input bytes (one code byte per 254 data bytes, plus
//! one); [`decode`] inverts it exactly and rejects, without panicking, any input that no
//! encoder could have produced (a zero byte, a code byte pointing past the end). Neither
//! allocates: both write into a caller-provided slice and report `None` / an error when it is
//! too small.
//!
//! About 60 lines, written here rather than taken from a crate: the algorithm is fixed by the
//! COBS paper (Cheshire & Baker, 1999), and the property tests in `tests/properties.rs` check
//! the round trip, the zero-freedom and the length bound.

/// Largest encoding of `n` bytes (without the `0x00` delimiter).
pub const fn max_encoded_len(n: usize) -> usize {
    n + n / 254 + 1
}

/// Encodes `src` into `dst`; returns the encoded length, or `None` when `dst` is too small.
pub fn encode(src: &[u8], dst: &mut [u8]) -> Option<usize> {
    let mut code_at = 0;
    let mut out = 1;
    let mut code: u8 = 1;
    if dst.is_empty() {
        return None;
    }
    for &b in src {
        if b == 0 {
            *dst.get_mut(code_at)? = code;
            code_at = out;
            out += 1;
            code = 1;
        } else {
            *dst.get_mut(out)? = b;
            out += 1;
            code += 1;
            if code == 0xFF {
                *dst.get_mut(code_at)? = code;
                code_at = out;
                out += 1;
                code = 1;
            }
        }
    }
    *dst.get_mut(code_at)? = code;
    Some(out)
}

/// Why a byte sequence is not a COBS encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CobsError {
    /// A `0x00` inside the frame (the delimiter cannot be part of an encoding).
    ZeroByte { at: usize },
    /// The code byte at `at` announces more bytes than the frame has.
    Truncated { at: usize },
    /// The decoded frame does not fit the output buffer.
    TooLong,
}

impl core::fmt::Display for CobsError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            CobsError::ZeroByte { at } => write!(f, "zero byte at offset {at} inside a COBS frame"),
            CobsError::Truncated { at } => write!(f, "COBS code byte at offset {at} runs past the end of the frame"),
            CobsError::TooLong => f.write_str("decoded frame longer than the buffer"),
        }
    }
}

/// Decodes one frame (without its delimiter) into `dst`; returns the decoded length.
pub fn decode(src: &[u8], dst: &mut [u8]) -> Result<usize, CobsError> {
    let mut i = 0;
    let mut out = 0;
    while i < src.len() {
        let code = src[i];
        if code == 0 {
            return Err(CobsError::ZeroByte { at: i });
        }
        let start = i + 1;
        let end = start + code as usize - 1;
        let block = src.get(start..end).ok_or(CobsError::Truncated { at: i })?;
        if let Some(z) = block.iter().position(|&b| b == 0) {
            return Err(CobsError::ZeroByte { at: start + z });
        }
        dst.get_mut(out..out + block.len()).ok_or(CobsError::TooLong)?.copy_from_slice(block);
        out += block.len();
        i = end;
        if code != 0xFF && i < src.len() {
            *dst.get_mut(out).ok_or(CobsError::TooLong)? = 0;
            out += 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(data: &[u8]) {
        let mut enc = [0u8; 600];
        let n = encode(data, &mut enc).unwrap();
        assert!(n <= max_encoded_len(data.len()));
        assert!(!enc[..n].contains(&0));
        let mut dec = [0u8; 600];
        let m = decode(&enc[..n], &mut dec).unwrap();
        assert_eq!(&dec[..m], data);
    }

    #[test]
    fn known_vectors() {
        // From the COBS paper / Wikipedia's examples.
        let mut enc = [0u8; 16];
        let n = encode(&[0x11, 0x22, 0x00, 0x33], &mut enc).unwrap();
        assert_eq!(&enc[..n], &[0x03, 0x11, 0x22, 0x02, 0x33]);
        let n = encode(&[0x00, 0x00], &mut enc).unwrap();
        assert_eq!(&enc[..n], &[0x01, 0x01, 0x01]);
        let n = encode(&[], &mut enc).unwrap();
        assert_eq!(&enc[..n], &[0x01]);
    }

    #[test]
    fn round_trips_including_long_runs() {
        round_trip(&[]);
        round_trip(&[0]);
        round_trip(&[1; 253]);
        round_trip(&[1; 254]);
        round_trip(&[1; 255]);
        round_trip(&[1; 508]);
        let mixed: [u8; 300] = core::array::from_fn(|i| (i % 7) as u8);
        round_trip(&mixed);
    }

    #[test]
    fn rejects_what_no_encoder_produces() {
        let mut dec = [0u8; 16];
        assert_eq!(decode(&[0x05, 1, 2], &mut dec), Err(CobsError::Truncated { at: 0 }));
        assert_eq!(decode(&[0x03, 1, 0], &mut dec), Err(CobsError::ZeroByte { at: 2 }));
        assert_eq!(decode(&[0x03, 1, 2, 0x02, 3], &mut dec[..3]), Err(CobsError::TooLong));
    }

    #[test]
    fn encode_reports_a_small_buffer() {
        let mut enc = [0u8; 3];
        assert_eq!(encode(&[1, 2, 3], &mut enc), None);
        assert_eq!(encode(&[1, 2], &mut enc), Some(3));
    }
}
