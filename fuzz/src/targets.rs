//! Fuzz target bodies. Each takes arbitrary bytes, must never panic, and asserts the
//! decoder's invariants (a panic here is a finding).

use firmware_bridge::gateway::{decode_frame, FrameDecoder};
use vigil::config::{FieldNames, PayloadFormat, ValidationConfig};
use vigil::ingest::decode::Decoder;
use vigil::reading::SourceKind;

/// The serial frame decoder. The first byte picks the maximum frame size, the second how the
/// rest is cut into `push` calls; then the whole input is also decoded as one frame.
pub fn frame_decoder(data: &[u8]) {
    let (max, chunk, stream) = match data {
        [a, b, rest @ ..] => (16 + usize::from(*a) * 4, 1 + usize::from(*b), rest),
        _ => (256, 64, data),
    };
    let mut decoder = FrameDecoder::new(max);
    let mut results = 0usize;
    for part in stream.chunks(chunk) {
        decoder.push(part, |raw, frame| {
            results += 1;
            assert!(raw.len() < max, "a frame's bytes are bounded by the maximum");
            if let Ok(f) = frame {
                assert!(f.wire_len <= max && !f.readings.is_empty() && f.readings.len() <= firmware_bridge::wire::MAX_READINGS);
            }
        });
    }
    assert!(results <= stream.iter().filter(|&&b| b == 0).count(), "at most one result per delimiter");
    let _ = decode_frame(stream);
}

/// The agent's MQTT payload decoders (JSON object, JSON array, CBOR, bare number), each on the
/// same bytes: every message is accounted for (readings + dead letters ≥ 1) and every reading
/// is finite.
pub fn payload_decoder(data: &[u8]) {
    let now = 1_700_000_000_000;
    for format in [PayloadFormat::Json, PayloadFormat::JsonArray, PayloadFormat::Cbor, PayloadFormat::Number] {
        let decoder = Decoder { format, fields: FieldNames::default(), validation: ValidationConfig::default(), source: SourceKind::Mqtt };
        let out = decoder.decode("fuzz/topic", data, "fuzz.entity", now);
        assert!(!out.readings.is_empty() || !out.rejects.is_empty(), "{format:?}: message not accounted for");
        for r in &out.readings {
            assert!(r.value.is_finite(), "{format:?}: non-finite reading {r:?}");
            assert!(!r.entity.is_empty());
        }
        for d in &out.rejects {
            assert_eq!(d.raw, data, "dead letters keep the raw payload");
        }
    }
}
