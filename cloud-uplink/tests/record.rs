//! Schema codecs and the framed stream reader.

use std::collections::BTreeMap;
use std::io::Cursor;

use cloud_uplink::record::{
    AlertState, Body, Bytes, DecodeError, Envelope, ModelRef, Quality, SCHEMA_VERSION,
};
use cloud_uplink::{
    decode_cbor, decode_json, encode_cbor, encode_json, RecordReader, RecordWriter,
};

fn model() -> ModelRef {
    ModelRef {
        name: "pump-ae".into(),
        version: "3".into(),
        sha256: "ab".repeat(32),
    }
}

fn env(seq: u64, body: Body) -> Envelope {
    Envelope {
        schema: SCHEMA_VERSION,
        agent_id: "edge-7".into(),
        seq,
        event_time_ms: -5 + seq as i64,
        emitted_ms: 1_700_000_000_000,
        body,
    }
}

fn all_bodies() -> Vec<Body> {
    vec![
        Body::Reading {
            entity: "line1/temp".into(),
            value: 21.5,
            quality: Quality::Uncertain,
            source: "mqtt:plant/line1/temp".into(),
            ingest_time_ms: 1_700_000_000_123,
            source_seq: Some(99),
        },
        Body::Reading {
            entity: "line1/rpm".into(),
            value: -0.25,
            quality: Quality::Good,
            source: "modbus:plc1:40001".into(),
            ingest_time_ms: 1,
            source_seq: None,
        },
        Body::Score {
            entity: "line1".into(),
            window_end_ms: 10_000,
            score: 0.93,
            error: Some(1.5e-3),
            band: "warn".into(),
            model: model(),
        },
        Body::Score {
            entity: "line1".into(),
            window_end_ms: 10_000,
            score: 0.1,
            error: None,
            band: "normal".into(),
            model: model(),
        },
        Body::Alert {
            entity: "line1".into(),
            state: AlertState::Raised,
            band: "critical".into(),
            score: 0.99,
            model: model(),
            message: "vibration anomaly".into(),
        },
        Body::Alert {
            entity: "line1".into(),
            state: AlertState::Cleared,
            band: "normal".into(),
            score: 0.2,
            model: model(),
            message: String::new(),
        },
        Body::Dlq {
            id: "dlq-1".into(),
            source: "serial:/dev/ttyUSB0".into(),
            topic: None,
            reason: "bad checksum".into(),
            raw: Bytes(vec![0, 1, 2, 0xff, 0xfe, b'x']),
            received_ms: 42,
        },
        Body::Heartbeat {
            uptime_s: 3600,
            counters: BTreeMap::from([("outbox.dropped.reading".to_string(), 7u64)]),
        },
        Body::Aggregate {
            entity: "line1/temp".into(),
            window_start_ms: 1_700_000_040_000,
            size_ms: 60_000,
            version: 2,
            stats: stats(),
        },
        Body::Session {
            entity: "line1/current".into(),
            start_ms: 1_700_000_000_000,
            end_ms: 1_700_000_090_000,
            duration_ms: 90_000,
            stats: stats(),
            max_score: Some(0.93),
            alerts: vec![cloud_uplink::SessionAlert { window_end_ms: 1_700_000_050_000, state: AlertState::Raised, score: 0.93 }],
        },
    ]
}

fn stats() -> cloud_uplink::Stats {
    cloud_uplink::Stats {
        count: 60,
        mean: 21.5,
        min: 20.0,
        max: 23.25,
        std: 0.75,
        first: 20.5,
        last: 22.0,
        quantiles: vec![cloud_uplink::Quantile { q: 0.5, value: 21.4 }, cloud_uplink::Quantile { q: 0.99, value: 23.2 }],
    }
}

#[test]
fn cbor_and_json_round_trip_every_kind() {
    for (i, body) in all_bodies().into_iter().enumerate() {
        let e = env(i as u64 + 1, body);
        let cbor = encode_cbor(&e).unwrap();
        assert_eq!(decode_cbor(&cbor).unwrap(), e, "cbor {i}");
        let json = encode_json(&e).unwrap();
        assert_eq!(decode_json(&json).unwrap(), e, "json {i}: {json}");
    }
}

#[test]
fn dlq_raw_is_a_cbor_byte_string_and_base64_in_json() {
    let e = env(1, all_bodies().remove(6));
    let cbor = encode_cbor(&e).unwrap();
    let v: ciborium::Value = ciborium::from_reader(cbor.as_slice()).unwrap();
    let body = v
        .as_map()
        .unwrap()
        .iter()
        .find(|(k, _)| k.as_text() == Some("body"))
        .unwrap()
        .1
        .clone();
    let raw = body
        .as_map()
        .unwrap()
        .iter()
        .find(|(k, _)| k.as_text() == Some("raw"))
        .unwrap()
        .1
        .clone();
    assert_eq!(raw, ciborium::Value::Bytes(vec![0, 1, 2, 0xff, 0xfe, b'x']));
    let kind = body
        .as_map()
        .unwrap()
        .iter()
        .find(|(k, _)| k.as_text() == Some("kind"))
        .unwrap()
        .1
        .clone();
    assert_eq!(kind, ciborium::Value::Text("dlq".into()));

    let json: serde_json::Value = serde_json::from_str(&encode_json(&e).unwrap()).unwrap();
    assert_eq!(json["body"]["raw"], "AAEC//54");
    assert_eq!(json["body"]["kind"], "dlq");
    assert!(
        json["body"].get("topic").is_none(),
        "absent optionals are omitted"
    );
}

#[test]
fn decoders_ignore_unknown_fields_and_map_unknown_kinds_and_enum_values() {
    let json = r#"{"schema":1,"agent_id":"a","seq":3,"event_time_ms":1,"emitted_ms":2,"future_top":true,
        "body":{"kind":"reading","entity":"e","value":1,"quality":"suspicious","source":"s","ingest_time_ms":5,"future":{"x":1}}}"#;
    let e = decode_json(json).unwrap();
    match e.body {
        Body::Reading {
            quality,
            source_seq,
            value,
            ..
        } => {
            assert_eq!(quality, Quality::Unknown);
            assert_eq!(source_seq, None);
            assert_eq!(value, 1.0);
        }
        other => panic!("wrong body {other:?}"),
    }

    let json = r#"{"schema":2,"agent_id":"a","seq":4,"event_time_ms":1,"emitted_ms":2,"body":{"kind":"spectrum","bins":[1,2,3]}}"#;
    let e = decode_json(json).unwrap();
    assert_eq!(e.body, Body::Unknown);
    assert_eq!(e.class(), None);

    // Same through CBOR.
    let v: ciborium::Value = serde_json::from_str(json).unwrap();
    let mut cbor = Vec::new();
    ciborium::into_writer(&v, &mut cbor).unwrap();
    assert_eq!(decode_cbor(&cbor).unwrap().body, Body::Unknown);
}

#[test]
fn decode_cbor_rejects_trailing_bytes_and_garbage() {
    let mut cbor = encode_cbor(&env(1, all_bodies().remove(0))).unwrap();
    cbor.push(0);
    assert!(matches!(
        decode_cbor(&cbor),
        Err(DecodeError::TrailingBytes(1))
    ));
    assert!(matches!(
        decode_cbor(&[0xff, 0x00]),
        Err(DecodeError::Cbor(_))
    ));
}

fn stream_of(n: u64) -> (Vec<u8>, Vec<usize>) {
    let mut w = RecordWriter::new(Vec::new()).unwrap();
    let mut ends = Vec::new();
    for i in 0..n {
        w.write(&env(i + 1, all_bodies()[(i as usize) % 8].clone()))
            .unwrap();
        ends.push(0);
    }
    let bytes = w.into_inner().unwrap();
    // Recompute frame end offsets by walking the frames.
    let mut off = 8;
    for end in ends.iter_mut() {
        let len = u32::from_be_bytes(bytes[off..off + 4].try_into().unwrap()) as usize;
        off += 8 + len;
        *end = off;
    }
    assert_eq!(off, bytes.len());
    (bytes, ends)
}

#[test]
fn stream_reader_round_trips() {
    let (bytes, _) = stream_of(9);
    let got: Vec<Envelope> = RecordReader::new(Cursor::new(bytes))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(got.len(), 9);
    assert_eq!(
        got.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=9).collect::<Vec<_>>()
    );
}

#[test]
fn truncated_stream_errors_on_the_last_record_only() {
    let (bytes, ends) = stream_of(5);
    let last_start = ends[3];
    // Cut inside the last frame's prefix, and inside its payload.
    for cut in [
        last_start + 1,
        last_start + 7,
        last_start + 8,
        last_start + 9,
        bytes.len() - 1,
    ] {
        let mut reader = RecordReader::new(Cursor::new(bytes[..cut].to_vec())).unwrap();
        for seq in 1..=4 {
            assert_eq!(reader.next().unwrap().unwrap().seq, seq, "cut {cut}");
        }
        match reader.next() {
            Some(Err(DecodeError::Truncated { index, offset, .. })) => {
                assert_eq!(index, 4);
                assert_eq!(offset, last_start as u64);
            }
            other => panic!("cut {cut}: expected Truncated, got {other:?}"),
        }
        assert!(reader.next().is_none(), "reader ends after a truncation");
    }
    // Cut exactly at a frame boundary is a clean end.
    let reader = RecordReader::new(Cursor::new(bytes[..last_start].to_vec())).unwrap();
    assert_eq!(reader.map(Result::unwrap).count(), 4);
    // Header cut short or wrong.
    assert!(matches!(
        RecordReader::new(Cursor::new(bytes[..5].to_vec())),
        Err(DecodeError::Truncated { .. })
    ));
    assert!(matches!(
        RecordReader::new(Cursor::new(b"PK\x03\x04rest".to_vec())),
        Err(DecodeError::BadMagic { .. })
    ));
}

#[test]
fn corrupt_payload_is_a_per_record_checksum_error() {
    let (mut bytes, ends) = stream_of(3);
    bytes[ends[0] + 10] ^= 0x55; // inside record #1's payload
    let results: Vec<_> = RecordReader::new(Cursor::new(bytes)).unwrap().collect();
    assert_eq!(results.len(), 3);
    assert_eq!(results[0].as_ref().unwrap().seq, 1);
    assert!(
        matches!(results[1], Err(DecodeError::Checksum { index: 1, .. })),
        "{:?}",
        results[1]
    );
    assert_eq!(results[2].as_ref().unwrap().seq, 3);
}
