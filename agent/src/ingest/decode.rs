//! Payload decoding and validation: raw bytes in, readings and dead letters out.
//!
//! This is protocol code only — no I/O. [`Decoder::decode`] never fails and never panics: every
//! message yields zero or more [`Reading`]s plus zero or more [`DlqEntry`]s, and the two
//! together account for the whole message (a JSON array with one bad element yields the good
//! readings and one dead letter naming the element).
//!
//! Formats ([`PayloadFormat`]): `json` (one object), `json_array` (array of objects; a single
//! object is accepted too), `cbor` (one map or an array of maps, same field names) and `number`
//! (a bare decimal number; event time = receive time). `sparkplug_b` needs state across
//! messages and is decoded by [`super::sparkplug`].

use crate::config::{FieldNames, PayloadFormat, TimeUnit, ValidationConfig};
use crate::dlq::{DlqEntry, DlqReason};
use crate::reading::{EpochMs, Quality, Reading, SourceKind};

/// A scalar taken out of a JSON or CBOR object.
#[derive(Debug, Clone, PartialEq)]
enum Scalar {
    Int(i128),
    Float(f64),
    Text(String),
    Bool(bool),
    Null,
    Other(&'static str),
}

/// One object of a payload, as (field name, scalar) pairs.
type Object = Vec<(String, Scalar)>;

/// Decodes the messages of one subscription (or any other source using the same rules).
#[derive(Debug, Clone)]
pub struct Decoder {
    pub format: PayloadFormat,
    pub fields: FieldNames,
    pub validation: ValidationConfig,
    pub source: SourceKind,
}

/// What one message became.
#[derive(Debug, Default, PartialEq)]
pub struct Decoded {
    pub readings: Vec<Reading>,
    pub rejects: Vec<DlqEntry>,
}

/// Why a reading or message is dead-lettered.
pub(crate) struct Rejection {
    pub reason: DlqReason,
    pub detail: String,
}

fn reject(reason: DlqReason, detail: impl Into<String>) -> Rejection {
    Rejection { reason, detail: detail.into() }
}

impl Decoder {
    /// Decodes `raw` received on `topic` at `now`. `default_entity` is the entity id bound from
    /// the topic template (a payload entity field wins over it).
    pub fn decode(&self, topic: &str, raw: &[u8], default_entity: &str, now: EpochMs) -> Decoded {
        let mut out = Decoded::default();
        let dead = |r: Rejection| DlqEntry {
            source: self.source,
            topic: topic.to_string(),
            raw: raw.to_vec(),
            reason: r.reason,
            detail: r.detail,
            received_ms: now,
        };
        if raw.len() > self.validation.max_payload_bytes {
            out.rejects.push(dead(reject(
                DlqReason::Oversized,
                format!("{} bytes > validation.max_payload_bytes = {}", raw.len(), self.validation.max_payload_bytes),
            )));
            return out;
        }
        let objects = match self.objects(raw) {
            Ok(objects) => objects,
            Err(r) => {
                out.rejects.push(dead(r));
                return out;
            }
        };
        if objects.is_empty() {
            out.rejects.push(dead(reject(DlqReason::Undecodable, "empty array: the message holds no reading")));
            return out;
        }
        let many = objects.len() > 1;
        for (i, object) in objects.into_iter().enumerate() {
            match self.reading(object, default_entity, now) {
                Ok(reading) => out.readings.push(reading),
                Err(mut r) => {
                    if many {
                        r.detail = format!("element {i}: {}", r.detail);
                    }
                    out.rejects.push(dead(r));
                }
            }
        }
        out
    }

    /// Splits a payload into objects. `Number` payloads become one object with the value field.
    fn objects(&self, raw: &[u8]) -> Result<Vec<Object>, Rejection> {
        match self.format {
            PayloadFormat::Number => {
                let text = std::str::from_utf8(raw)
                    .map_err(|_| reject(DlqReason::Undecodable, "payload is not UTF-8 text"))?;
                let text = text.trim();
                let value: f64 = text
                    .parse()
                    .map_err(|_| reject(DlqReason::Undecodable, format!("`{}` is not a number", truncate(text))))?;
                Ok(vec![vec![(self.fields.value.clone(), Scalar::Float(value))]])
            }
            PayloadFormat::Json | PayloadFormat::JsonArray => {
                let value: serde_json::Value = serde_json::from_slice(raw)
                    .map_err(|e| reject(DlqReason::Undecodable, format!("invalid JSON: {e}")))?;
                match value {
                    serde_json::Value::Object(map) => Ok(vec![json_object(map)]),
                    serde_json::Value::Array(items) if self.format == PayloadFormat::JsonArray => items
                        .into_iter()
                        .enumerate()
                        .map(|(i, item)| match item {
                            serde_json::Value::Object(map) => Ok(json_object(map)),
                            other => Err(reject(
                                DlqReason::Undecodable,
                                format!("element {i}: expected an object, found {}", json_kind(&other)),
                            )),
                        })
                        .collect(),
                    other => Err(reject(
                        DlqReason::Undecodable,
                        format!("expected a JSON object, found {}", json_kind(&other)),
                    )),
                }
            }
            PayloadFormat::SparkplugB => {
                Err(reject(DlqReason::Undecodable, "sparkplug_b payloads are decoded by ingest::sparkplug, not per message"))
            }
            PayloadFormat::Cbor => {
                let value: ciborium::Value = ciborium::de::from_reader(raw)
                    .map_err(|e| reject(DlqReason::Undecodable, format!("invalid CBOR: {e}")))?;
                match value {
                    ciborium::Value::Map(map) => Ok(vec![cbor_object(map)]),
                    ciborium::Value::Array(items) => items
                        .into_iter()
                        .enumerate()
                        .map(|(i, item)| match item {
                            ciborium::Value::Map(map) => Ok(cbor_object(map)),
                            _ => Err(reject(DlqReason::Undecodable, format!("element {i}: expected a CBOR map"))),
                        })
                        .collect(),
                    _ => Err(reject(DlqReason::Undecodable, "expected a CBOR map or an array of maps")),
                }
            }
        }
    }

    fn reading(&self, object: Object, default_entity: &str, now: EpochMs) -> Result<Reading, Rejection> {
        let f = &self.fields;
        let get = |name: &str| object.iter().find(|(k, _)| k == name).map(|(_, v)| v);

        let value = match get(&f.value) {
            None | Some(Scalar::Null) => {
                return Err(reject(DlqReason::MissingField, format!("field \"{}\" is missing", f.value)))
            }
            Some(Scalar::Int(i)) => *i as f64,
            Some(Scalar::Float(x)) => *x,
            Some(Scalar::Text(t)) => match t.trim().parse::<f64>() {
                Ok(x) => x,
                Err(_) => {
                    return Err(reject(DlqReason::InvalidField, format!("field \"{}\" = \"{}\" is not a number", f.value, truncate(t))))
                }
            },
            Some(other) => {
                return Err(reject(DlqReason::InvalidField, format!("field \"{}\" is {}, not a number", f.value, scalar_kind(other))))
            }
        };
        check_value(&self.validation, value).map_err(|r| reject(r.reason, format!("field \"{}\": {}", f.value, r.detail)))?;

        let event_time_ms = match get(&f.time) {
            None | Some(Scalar::Null) if f.time_optional || self.format == PayloadFormat::Number => now,
            None | Some(Scalar::Null) => {
                return Err(reject(DlqReason::MissingField, format!("field \"{}\" is missing", f.time)))
            }
            Some(s) => parse_time(s, f.time_unit)
                .map_err(|why| reject(DlqReason::InvalidField, format!("field \"{}\": {why}", f.time)))?,
        };
        check_event_time(&self.validation, event_time_ms, now)?;

        let entity = match get(&f.entity) {
            Some(Scalar::Text(t)) => t.clone(),
            Some(Scalar::Int(i)) => i.to_string(),
            None | Some(Scalar::Null) => default_entity.to_string(),
            Some(other) => {
                return Err(reject(DlqReason::InvalidField, format!("field \"{}\" is {}, not a string", f.entity, scalar_kind(other))))
            }
        };
        check_entity(&self.validation, &entity)?;

        let quality = match get(&f.quality) {
            None | Some(Scalar::Null) => Quality::Good,
            Some(Scalar::Text(t)) => Quality::parse(t)
                .ok_or_else(|| reject(DlqReason::InvalidField, format!("field \"{}\" = \"{}\" is not a quality", f.quality, truncate(t))))?,
            Some(Scalar::Int(i)) => Quality::parse(&i.to_string())
                .ok_or_else(|| reject(DlqReason::InvalidField, format!("field \"{}\" = {i} is not a quality", f.quality)))?,
            Some(Scalar::Bool(b)) => if *b { Quality::Good } else { Quality::Bad },
            Some(other) => {
                return Err(reject(DlqReason::InvalidField, format!("field \"{}\" is {}", f.quality, scalar_kind(other))))
            }
        };

        let source_seq = match get(&f.seq) {
            None | Some(Scalar::Null) => None,
            Some(Scalar::Int(i)) if *i >= 0 && *i <= u64::MAX as i128 => Some(*i as u64),
            Some(other) => {
                return Err(reject(DlqReason::InvalidField, format!("field \"{}\" is {}, not an unsigned integer", f.seq, scalar_kind(other))))
            }
        };

        Ok(Reading {
            entity,
            event_time_ms,
            value,
            quality,
            source: self.source,
            ingest_time_ms: now,
            seq: 0,
            source_seq,
        })
    }
}

/// Values: finite (`non_finite`) and within `validation.max_abs_value` (`out_of_range`).
/// Shared by every source.
pub(crate) fn check_value(validation: &ValidationConfig, value: f64) -> Result<(), Rejection> {
    if !value.is_finite() {
        return Err(reject(DlqReason::NonFinite, format!("value is {value}")));
    }
    if value.abs() > validation.max_abs_value {
        return Err(reject(DlqReason::OutOfRange, format!("value {value:e} exceeds validation.max_abs_value = {:e}", validation.max_abs_value)));
    }
    Ok(())
}

/// Entity ids: 1–256 bytes, no control characters, and in `validation.known_entities` when
/// that list is set. Shared by every source.
pub(crate) fn check_entity(validation: &ValidationConfig, entity: &str) -> Result<(), Rejection> {
    if entity.is_empty() || entity.len() > 256 || entity.chars().any(char::is_control) {
        return Err(reject(DlqReason::InvalidField, format!("entity id \"{}\" must be 1-256 bytes without control characters", truncate(entity))));
    }
    if !validation.known_entities.is_empty() && !validation.known_entities.iter().any(|k| k == entity) {
        return Err(reject(DlqReason::UnknownEntity, format!("entity \"{}\" is not in validation.known_entities", truncate(entity))));
    }
    Ok(())
}

/// Event times within `validation.max_past_skew_s` / `max_future_skew_s` of the gateway clock.
/// Shared by every source.
pub(crate) fn check_event_time(validation: &ValidationConfig, event_time_ms: EpochMs, now: EpochMs) -> Result<(), Rejection> {
    let skew_past = validation.max_past_skew_s as i64 * 1000;
    let skew_future = validation.max_future_skew_s as i64 * 1000;
    if event_time_ms < now.saturating_sub(skew_past) || event_time_ms > now.saturating_add(skew_future) {
        return Err(reject(
            DlqReason::TimestampSkew,
            format!(
                "event time {event_time_ms} ms is {} s from the gateway clock (allowed: -{} s / +{} s)",
                (event_time_ms - now) / 1000,
                validation.max_past_skew_s,
                validation.max_future_skew_s
            ),
        ));
    }
    Ok(())
}

fn parse_time(s: &Scalar, unit: TimeUnit) -> Result<EpochMs, String> {
    let ms_per = |x: f64| match unit {
        TimeUnit::Ms => x,
        TimeUnit::S => x * 1000.0,
        TimeUnit::Us => x / 1000.0,
    };
    let ms = match s {
        Scalar::Int(i) => ms_per(*i as f64),
        Scalar::Float(x) => ms_per(*x),
        Scalar::Text(t) => {
            let t = t.trim();
            if let Ok(x) = t.parse::<f64>() {
                ms_per(x)
            } else {
                let time = humantime::parse_rfc3339_weak(t).map_err(|e| format!("\"{}\" is not RFC 3339: {e}", truncate(t)))?;
                return time
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as EpochMs)
                    .map_err(|_| format!("\"{}\" is before 1970", truncate(t)));
            }
        }
        other => return Err(format!("{} is not a timestamp", scalar_kind(other))),
    };
    // Reject values that do not fit i64 milliseconds (and NaN) instead of saturating silently.
    if !ms.is_finite() || ms.abs() > 9.0e15 {
        return Err(format!("{ms} ms is out of range"));
    }
    Ok(ms.round() as EpochMs)
}

fn json_object(map: serde_json::Map<String, serde_json::Value>) -> Object {
    map.into_iter()
        .map(|(k, v)| {
            let s = match v {
                serde_json::Value::Null => Scalar::Null,
                serde_json::Value::Bool(b) => Scalar::Bool(b),
                serde_json::Value::Number(n) => match n.as_i64() {
                    Some(i) => Scalar::Int(i as i128),
                    None => match n.as_u64() {
                        Some(u) => Scalar::Int(u as i128),
                        None => Scalar::Float(n.as_f64().unwrap_or(f64::NAN)),
                    },
                },
                serde_json::Value::String(t) => Scalar::Text(t),
                serde_json::Value::Array(_) => Scalar::Other("an array"),
                serde_json::Value::Object(_) => Scalar::Other("an object"),
            };
            (k, s)
        })
        .collect()
}

fn cbor_object(map: Vec<(ciborium::Value, ciborium::Value)>) -> Object {
    map.into_iter()
        .filter_map(|(k, v)| {
            let ciborium::Value::Text(k) = k else { return None };
            let s = match v {
                ciborium::Value::Null => Scalar::Null,
                ciborium::Value::Bool(b) => Scalar::Bool(b),
                ciborium::Value::Integer(i) => Scalar::Int(i128::from(i)),
                ciborium::Value::Float(x) => Scalar::Float(x),
                ciborium::Value::Text(t) => Scalar::Text(t),
                // Tag 1 (epoch time) wraps a number; other tags are reported as such.
                ciborium::Value::Tag(1, inner) => match *inner {
                    ciborium::Value::Integer(i) => Scalar::Int(i128::from(i) * 1000),
                    ciborium::Value::Float(x) => Scalar::Float(x * 1000.0),
                    _ => Scalar::Other("a tagged value"),
                },
                ciborium::Value::Bytes(_) => Scalar::Other("a byte string"),
                ciborium::Value::Array(_) => Scalar::Other("an array"),
                ciborium::Value::Map(_) => Scalar::Other("a map"),
                _ => Scalar::Other("a tagged value"),
            };
            Some((k, s))
        })
        .collect()
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

fn scalar_kind(s: &Scalar) -> &'static str {
    match s {
        Scalar::Int(_) | Scalar::Float(_) => "a number",
        Scalar::Text(_) => "a string",
        Scalar::Bool(_) => "a boolean",
        Scalar::Null => "null",
        Scalar::Other(kind) => kind,
    }
}

/// At most 64 characters of untrusted text for a message.
fn truncate(s: &str) -> String {
    if s.chars().count() <= 64 {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(64).collect();
        t.push('…');
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: EpochMs = 1_700_000_000_000;

    fn decoder(format: PayloadFormat) -> Decoder {
        Decoder {
            format,
            fields: FieldNames::default(),
            validation: ValidationConfig::default(),
            source: SourceKind::Mqtt,
        }
    }

    fn one_reject(d: &Decoder, raw: &[u8]) -> DlqEntry {
        let out = d.decode("t", raw, "e", NOW);
        assert!(out.readings.is_empty(), "{out:?}");
        assert_eq!(out.rejects.len(), 1, "{out:?}");
        out.rejects.into_iter().next().unwrap()
    }

    #[test]
    fn json_object_with_all_fields() {
        let raw = format!(r#"{{"value": 21.5, "ts": {}, "quality": "uncertain", "seq": 7}}"#, NOW - 5);
        let out = decoder(PayloadFormat::Json).decode("t", raw.as_bytes(), "line1.t", NOW);
        assert_eq!(out.rejects, vec![]);
        let r = &out.readings[0];
        assert_eq!((r.entity.as_str(), r.value, r.event_time_ms), ("line1.t", 21.5, NOW - 5));
        assert_eq!((r.quality, r.source_seq), (Quality::Uncertain, Some(7)));
    }

    #[test]
    fn configurable_field_names_and_units() {
        let mut d = decoder(PayloadFormat::Json);
        d.fields.value = "v".into();
        d.fields.time = "t".into();
        d.fields.time_unit = TimeUnit::S;
        d.fields.entity = "id".into();
        let raw = format!(r#"{{"v": 3, "t": {}, "id": "pump7"}}"#, NOW / 1000);
        let out = d.decode("x", raw.as_bytes(), "ignored", NOW);
        assert_eq!(out.readings[0].entity, "pump7");
        assert_eq!(out.readings[0].event_time_ms, NOW);
    }

    #[test]
    fn rfc3339_time() {
        let raw = br#"{"value": 1, "ts": "2023-11-14T22:13:20Z"}"#;
        let out = decoder(PayloadFormat::Json).decode("t", raw, "e", NOW);
        assert_eq!(out.readings[0].event_time_ms, NOW);
    }

    #[test]
    fn json_array_splits_good_and_bad_elements() {
        let raw = format!(r#"[{{"value": 1, "ts": {NOW}}}, {{"ts": {NOW}}}, {{"value": 2, "ts": {NOW}}}, 5]"#);
        let out = decoder(PayloadFormat::JsonArray).decode("t", raw.as_bytes(), "e", NOW);
        // The non-object element makes the whole array undecodable as an array of objects.
        assert_eq!(out.readings.len(), 0);
        assert_eq!(out.rejects[0].reason, DlqReason::Undecodable);
        let raw = format!(r#"[{{"value": 1, "ts": {NOW}}}, {{"ts": {NOW}}}, {{"value": 2, "ts": {NOW}}}]"#);
        let out = decoder(PayloadFormat::JsonArray).decode("t", raw.as_bytes(), "e", NOW);
        assert_eq!(out.readings.iter().map(|r| r.value).collect::<Vec<_>>(), vec![1.0, 2.0]);
        assert_eq!(out.rejects.len(), 1);
        assert_eq!(out.rejects[0].reason, DlqReason::MissingField);
        assert!(out.rejects[0].detail.starts_with("element 1:"), "{}", out.rejects[0].detail);
        assert_eq!(out.rejects[0].raw, raw.as_bytes());
    }

    #[test]
    fn cbor_map_and_array() {
        let mut buf = Vec::new();
        let value = ciborium::Value::Array(vec![
            ciborium::Value::Map(vec![
                (ciborium::Value::Text("value".into()), ciborium::Value::Float(4.5)),
                (ciborium::Value::Text("ts".into()), ciborium::Value::Integer(NOW.into())),
            ]),
            ciborium::Value::Map(vec![(ciborium::Value::Text("value".into()), ciborium::Value::Float(f64::NAN)), (ciborium::Value::Text("ts".into()), ciborium::Value::Integer(NOW.into()))]),
        ]);
        ciborium::ser::into_writer(&value, &mut buf).unwrap();
        let out = decoder(PayloadFormat::Cbor).decode("t", &buf, "e", NOW);
        assert_eq!(out.readings.len(), 1);
        assert_eq!(out.readings[0].value, 4.5);
        assert_eq!(out.rejects[0].reason, DlqReason::NonFinite);
    }

    #[test]
    fn bare_number_uses_receive_time() {
        let out = decoder(PayloadFormat::Number).decode("t", b" 42.25\n", "e", NOW);
        assert_eq!((out.readings[0].value, out.readings[0].event_time_ms), (42.25, NOW));
        assert_eq!(one_reject(&decoder(PayloadFormat::Number), b"NaN").reason, DlqReason::NonFinite);
        assert_eq!(one_reject(&decoder(PayloadFormat::Number), b"abc").reason, DlqReason::Undecodable);
    }

    #[test]
    fn values_beyond_max_abs_value_are_out_of_range() {
        let d = decoder(PayloadFormat::Json);
        // The default bound passes every plausible quantity and refuses garbage (an
        // uninitialised float32 register) before it reaches a window's sums.
        let ok = d.decode("t", format!("{{\"value\": -6.02214076e23, \"ts\": {NOW}}}").as_bytes(), "e", NOW);
        assert_eq!((ok.readings.len(), ok.rejects.len()), (1, 0));
        let r = one_reject(&d, format!("{{\"value\": 3.4028235e38, \"ts\": {NOW}}}").as_bytes());
        assert_eq!(r.reason, DlqReason::OutOfRange);
        assert!(r.detail.contains("validation.max_abs_value") && r.detail.contains("field \"value\""), "{}", r.detail);
        let mut strict = decoder(PayloadFormat::Number);
        strict.validation.max_abs_value = 100.0;
        assert_eq!(one_reject(&strict, b"-100.5").reason, DlqReason::OutOfRange);
        assert_eq!(strict.decode("t", b"100", "e", NOW).readings.len(), 1);
    }

    #[test]
    fn reasons_for_bad_input() {
        let d = decoder(PayloadFormat::Json);
        assert_eq!(one_reject(&d, &[0xff, 0x00, 0x13]).reason, DlqReason::Undecodable);
        assert_eq!(one_reject(&d, b"{\"value\": 1").reason, DlqReason::Undecodable);
        assert_eq!(one_reject(&d, format!("{{\"ts\": {NOW}}}").as_bytes()).reason, DlqReason::MissingField);
        assert_eq!(one_reject(&d, b"{\"value\": 1}").reason, DlqReason::MissingField);
        assert_eq!(one_reject(&d, format!("{{\"value\": \"x\", \"ts\": {NOW}}}").as_bytes()).reason, DlqReason::InvalidField);
        assert_eq!(one_reject(&d, format!("{{\"value\": [1], \"ts\": {NOW}}}").as_bytes()).reason, DlqReason::InvalidField);
        assert_eq!(one_reject(&d, format!("{{\"value\": 1e999, \"ts\": {NOW}}}").as_bytes()).reason, DlqReason::Undecodable);
        assert_eq!(one_reject(&d, format!("{{\"value\": \"NaN\", \"ts\": {NOW}}}").as_bytes()).reason, DlqReason::NonFinite);
        let future = NOW + 3_600_000;
        assert_eq!(one_reject(&d, format!("{{\"value\": 1, \"ts\": {future}}}").as_bytes()).reason, DlqReason::TimestampSkew);
        assert_eq!(one_reject(&d, b"{\"value\": 1, \"ts\": 1e300}").reason, DlqReason::InvalidField);
        let big = vec![b' '; 70 * 1024];
        assert_eq!(one_reject(&d, &big).reason, DlqReason::Oversized);
        let mut known = decoder(PayloadFormat::Json);
        known.validation.known_entities = vec!["a".into()];
        assert_eq!(one_reject(&known, format!("{{\"value\": 1, \"ts\": {NOW}}}").as_bytes()).reason, DlqReason::UnknownEntity);
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_are_accounted_for() {
        // A small deterministic fuzz: every input yields readings or dead letters, never both empty.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for len in 0..400usize {
            let mut raw = Vec::with_capacity(len);
            for _ in 0..len {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                raw.push((x & 0xff) as u8);
            }
            for format in [PayloadFormat::Json, PayloadFormat::JsonArray, PayloadFormat::Cbor, PayloadFormat::Number] {
                let out = decoder(format).decode("t", &raw, "e", NOW);
                assert!(!out.readings.is_empty() || !out.rejects.is_empty());
            }
        }
    }
}
