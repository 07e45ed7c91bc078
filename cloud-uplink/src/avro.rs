//! Avro encoding of uplinked records, for Kafka consumers that use a schema registry.
//!
//! # Design
//!
//! * **One schema, written down once.** `schema/vigil-record.avsc` ([`RECORD_SCHEMA`]) is the
//!   Avro form of the record schema in `schema/vigil-record.cddl`: the envelope's fields, and
//!   `body` as a union with one record branch per kind, each carrying its `kind` string. An
//!   Avro-decoded record therefore equals the record's JSON encoding ([`crate::encode_json`]),
//!   except that `Dlq.raw` is Avro `bytes` instead of base64 text and an optional field the JSON
//!   leaves out is `null`.
//! * **Schema-driven, no second copy of the layout.** [`AvroSchema::encode_cbor`] walks the
//!   outbox's stored CBOR record together with the parsed schema: the schema decides field order
//!   and types, the CBOR supplies the values. A field the CBOR lacks takes the schema's default
//!   (`null`, `[]`, `{}`); a CBOR key the schema lacks is an error ([`AvroError::UnknownField`]),
//!   never silently dropped. So the `.avsc` file cannot drift from the Rust types without the
//!   tests that encode every kind failing.
//! * **Union branches.** `null` for an absent or null value; otherwise the only non-null branch,
//!   or — for `body` — the record branch whose name, in snake_case, equals the value's `kind`
//!   (`ShadowScore` ↔ `shadow_score`).
//! * **Confluent wire format.** [`confluent_frame`]: magic byte `0`, the schema id as a 4-byte
//!   big-endian integer, then the Avro binary datum — what Confluent's (and every compatible)
//!   Avro deserializer reads. Schema ids come from a registry (`crate::schema_registry`, subject
//!   `<topic>-value`, Confluent's default TopicNameStrategy) or from configuration.
//!
//! The supported subset of Avro is what the record schema uses: `null`, `boolean`, `int`,
//! `long`, `float`, `double`, `bytes`, `string`, records, arrays, maps, unions and references to
//! named records. Anything else in a schema is refused when it is parsed.

use std::collections::HashMap;

use ciborium::Value;
use serde_json::Value as Json;

/// The Avro schema of [`crate::Envelope`] (`schema/vigil-record.avsc`).
pub const RECORD_SCHEMA: &str = include_str!("../schema/vigil-record.avsc");

/// The Confluent wire format's magic byte.
pub const CONFLUENT_MAGIC: u8 = 0;

/// Errors parsing a schema or encoding a value.
#[derive(Debug, thiserror::Error)]
pub enum AvroError {
    /// The schema text is not JSON.
    #[error("Avro schema is not valid JSON: {0}")]
    SchemaJson(#[source] serde_json::Error),
    /// The schema uses something this encoder does not support, or is malformed.
    #[error("Avro schema at {path}: {message}")]
    Schema { path: String, message: String },
    /// The stored record is not valid CBOR.
    #[error("record is not valid CBOR: {0}")]
    Cbor(String),
    /// A value does not fit the schema's type at `path`.
    #[error("record field {path}: expected {expected}, found {found}")]
    Mismatch { path: String, expected: String, found: String },
    /// The record has a field the schema does not know (the schema is behind the Rust types).
    #[error("record field {path}.{field} is not in the Avro schema")]
    UnknownField { path: String, field: String },
}

/// A parsed schema: the nodes of its type tree, named records resolved to indices.
#[derive(Debug, Clone)]
pub struct AvroSchema {
    nodes: Vec<Node>,
    root: usize,
    /// The schema as compact JSON text (what is registered).
    text: String,
}

#[derive(Debug, Clone)]
enum Node {
    Null,
    Boolean,
    Int,
    Long,
    Float,
    Double,
    Bytes,
    String,
    Record { name: String, fields: Vec<Field> },
    Array(usize),
    Map(usize),
    Union(Vec<usize>),
}

#[derive(Debug, Clone)]
struct Field {
    name: String,
    ty: usize,
    default: Option<Json>,
}

impl AvroSchema {
    /// Vigil's record schema ([`RECORD_SCHEMA`]).
    pub fn record() -> Result<AvroSchema, AvroError> {
        AvroSchema::parse(RECORD_SCHEMA)
    }

    /// Parses a schema in Avro's JSON form.
    pub fn parse(text: &str) -> Result<AvroSchema, AvroError> {
        let json: Json = serde_json::from_str(text).map_err(AvroError::SchemaJson)?;
        let mut parser = Parser { nodes: Vec::new(), names: HashMap::new() };
        let root = parser.node(&json, "", "$")?;
        let text = serde_json::to_string(&json).map_err(AvroError::SchemaJson)?;
        Ok(AvroSchema { nodes: parser.nodes, root, text })
    }

    /// The schema as compact JSON text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Encodes a CBOR-encoded record (e.g. [`crate::StoredRecord::cbor`]) as an Avro binary
    /// datum of this schema.
    pub fn encode_cbor(&self, cbor: &[u8]) -> Result<Vec<u8>, AvroError> {
        let value: Value = ciborium::de::from_reader(cbor).map_err(|e| AvroError::Cbor(e.to_string()))?;
        self.encode(&value)
    }

    /// Encodes `value` as an Avro binary datum of this schema.
    pub fn encode(&self, value: &Value) -> Result<Vec<u8>, AvroError> {
        let mut out = Vec::with_capacity(128);
        self.write(self.root, Some(value), "$", &mut out)?;
        Ok(out)
    }

    fn write(&self, node: usize, value: Option<&Value>, path: &str, out: &mut Vec<u8>) -> Result<(), AvroError> {
        let mismatch = |expected: &str| AvroError::Mismatch {
            path: path.to_string(),
            expected: expected.to_string(),
            found: describe(value),
        };
        match (&self.nodes[node], value) {
            (Node::Null, None | Some(Value::Null)) => {}
            (Node::Boolean, Some(Value::Bool(b))) => out.push(u8::from(*b)),
            (Node::Int, Some(Value::Integer(i))) => {
                let v = i32::try_from(i128::from(*i)).map_err(|_| mismatch("int (32-bit)"))?;
                write_long(i64::from(v), out);
            }
            (Node::Long, Some(Value::Integer(i))) => {
                let v = i64::try_from(i128::from(*i)).map_err(|_| mismatch("long (64-bit signed)"))?;
                write_long(v, out);
            }
            (Node::Float, Some(v)) => {
                let f = as_f64(v).ok_or_else(|| mismatch("float"))?;
                out.extend_from_slice(&(f as f32).to_le_bytes());
            }
            (Node::Double, Some(v)) => {
                let f = as_f64(v).ok_or_else(|| mismatch("double"))?;
                out.extend_from_slice(&f.to_le_bytes());
            }
            (Node::String, Some(Value::Text(s))) => write_bytes(s.as_bytes(), out),
            (Node::Bytes, Some(Value::Bytes(b))) => write_bytes(b, out),
            (Node::Record { fields, .. }, Some(Value::Map(entries))) => {
                let mut by_key: HashMap<&str, &Value> = HashMap::with_capacity(entries.len());
                for (k, v) in entries {
                    let Value::Text(k) = k else {
                        return Err(mismatch("a map with text keys"));
                    };
                    if !fields.iter().any(|f| f.name == *k) {
                        return Err(AvroError::UnknownField { path: path.to_string(), field: k.clone() });
                    }
                    by_key.insert(k, v);
                }
                for f in fields {
                    let field_path = format!("{path}.{}", f.name);
                    match (by_key.get(f.name.as_str()), &f.default) {
                        (Some(v), _) => self.write(f.ty, Some(v), &field_path, out)?,
                        (None, Some(default)) => self.write(f.ty, Some(&json_to_cbor(default)), &field_path, out)?,
                        (None, None) => self.write(f.ty, None, &field_path, out)?,
                    }
                }
            }
            (Node::Array(items), Some(Value::Array(values))) => {
                if !values.is_empty() {
                    write_long(values.len() as i64, out);
                    for (i, v) in values.iter().enumerate() {
                        self.write(*items, Some(v), &format!("{path}[{i}]"), out)?;
                    }
                }
                write_long(0, out);
            }
            (Node::Map(values), Some(Value::Map(entries))) => {
                if !entries.is_empty() {
                    write_long(entries.len() as i64, out);
                    for (k, v) in entries {
                        let Value::Text(k) = k else {
                            return Err(mismatch("a map with text keys"));
                        };
                        write_bytes(k.as_bytes(), out);
                        self.write(*values, Some(v), &format!("{path}[{k:?}]"), out)?;
                    }
                }
                write_long(0, out);
            }
            (Node::Union(branches), v) => {
                let (index, branch) = self.branch(branches, v).ok_or_else(|| mismatch(&self.union_names(branches)))?;
                write_long(index as i64, out);
                self.write(branch, v, path, out)?;
            }
            (Node::Null, _) => return Err(mismatch("null")),
            (Node::Boolean, _) => return Err(mismatch("boolean")),
            (Node::Int, _) => return Err(mismatch("int")),
            (Node::Long, _) => return Err(mismatch("long")),
            (Node::Float, None) => return Err(mismatch("float")),
            (Node::Double, None) => return Err(mismatch("double")),
            (Node::String, _) => return Err(mismatch("string")),
            (Node::Bytes, _) => return Err(mismatch("bytes")),
            (Node::Record { name, .. }, _) => return Err(mismatch(&format!("record {name}"))),
            (Node::Array(_), _) => return Err(mismatch("array")),
            (Node::Map(_), _) => return Err(mismatch("map")),
        }
        Ok(())
    }

    /// The union branch for `value`: see the module docs.
    fn branch(&self, branches: &[usize], value: Option<&Value>) -> Option<(usize, usize)> {
        let is_null = |&(_, b): &(usize, &usize)| matches!(self.nodes[*b], Node::Null);
        if matches!(value, None | Some(Value::Null)) {
            return branches.iter().enumerate().find(is_null).map(|(i, b)| (i, *b));
        }
        let others: Vec<(usize, usize)> = branches.iter().enumerate().filter(|c| !is_null(c)).map(|(i, b)| (i, *b)).collect();
        if let [only] = others.as_slice() {
            return Some(*only);
        }
        let kind = match value {
            Some(Value::Map(entries)) => entries.iter().find_map(|(k, v)| match (k, v) {
                (Value::Text(k), Value::Text(v)) if k == "kind" => Some(v.as_str()),
                _ => None,
            })?,
            _ => return None,
        };
        others
            .into_iter()
            .find(|&(_, b)| matches!(&self.nodes[b], Node::Record { name, .. } if snake_case(name) == kind))
    }

    fn union_names(&self, branches: &[usize]) -> String {
        let names: Vec<String> = branches
            .iter()
            .map(|&b| match &self.nodes[b] {
                Node::Record { name, .. } => name.clone(),
                other => format!("{other:?}").to_lowercase(),
            })
            .collect();
        format!("one of [{}]", names.join(", "))
    }
}

/// The Confluent wire format: magic byte, schema id (big-endian), Avro datum.
pub fn confluent_frame(schema_id: u32, datum: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + datum.len());
    out.push(CONFLUENT_MAGIC);
    out.extend_from_slice(&schema_id.to_be_bytes());
    out.extend_from_slice(datum);
    out
}

struct Parser {
    nodes: Vec<Node>,
    /// Named records by full name and by simple name.
    names: HashMap<String, usize>,
}

impl Parser {
    fn push(&mut self, node: Node) -> usize {
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    fn node(&mut self, json: &Json, namespace: &str, path: &str) -> Result<usize, AvroError> {
        let err = |message: String| AvroError::Schema { path: path.to_string(), message };
        match json {
            Json::String(name) => match name.as_str() {
                "null" => Ok(self.push(Node::Null)),
                "boolean" => Ok(self.push(Node::Boolean)),
                "int" => Ok(self.push(Node::Int)),
                "long" => Ok(self.push(Node::Long)),
                "float" => Ok(self.push(Node::Float)),
                "double" => Ok(self.push(Node::Double)),
                "bytes" => Ok(self.push(Node::Bytes)),
                "string" => Ok(self.push(Node::String)),
                other => self
                    .names
                    .get(other)
                    .or_else(|| self.names.get(&format!("{namespace}.{other}")))
                    .copied()
                    .ok_or_else(|| err(format!("unknown type {other:?} (named types must be defined before use)"))),
            },
            Json::Array(branches) => {
                let mut ids = Vec::with_capacity(branches.len());
                for (i, b) in branches.iter().enumerate() {
                    ids.push(self.node(b, namespace, &format!("{path}[{i}]"))?);
                }
                Ok(self.push(Node::Union(ids)))
            }
            Json::Object(obj) => {
                let ty = obj.get("type").ok_or_else(|| err("a type object needs \"type\"".into()))?;
                match ty.as_str() {
                    Some("record") => {
                        let name = obj
                            .get("name")
                            .and_then(Json::as_str)
                            .ok_or_else(|| err("a record needs a \"name\"".into()))?;
                        let namespace = match (name.rsplit_once('.'), obj.get("namespace").and_then(Json::as_str)) {
                            (Some((ns, _)), _) => ns.to_string(),
                            (None, Some(ns)) => ns.to_string(),
                            (None, None) => namespace.to_string(),
                        };
                        let simple = name.rsplit('.').next().unwrap_or(name).to_string();
                        // Registered before the fields are parsed, so a record may refer to itself.
                        let id = self.push(Node::Record { name: simple.clone(), fields: Vec::new() });
                        self.names.insert(format!("{namespace}.{simple}"), id);
                        self.names.insert(simple.clone(), id);
                        let field_list = obj
                            .get("fields")
                            .and_then(Json::as_array)
                            .ok_or_else(|| err(format!("record {simple} needs a \"fields\" array")))?;
                        let mut fields = Vec::with_capacity(field_list.len());
                        for f in field_list {
                            let fname = f
                                .get("name")
                                .and_then(Json::as_str)
                                .ok_or_else(|| err(format!("a field of record {simple} has no name")))?;
                            let fpath = format!("{path}.{fname}");
                            let fty = f.get("type").ok_or_else(|| AvroError::Schema {
                                path: fpath.clone(),
                                message: "a field needs a \"type\"".into(),
                            })?;
                            let ty = self.node(fty, &namespace, &fpath)?;
                            fields.push(Field { name: fname.to_string(), ty, default: f.get("default").cloned() });
                        }
                        self.nodes[id] = Node::Record { name: simple, fields };
                        Ok(id)
                    }
                    Some("array") => {
                        let items = obj.get("items").ok_or_else(|| err("an array needs \"items\"".into()))?;
                        let items = self.node(items, namespace, &format!("{path}[]"))?;
                        Ok(self.push(Node::Array(items)))
                    }
                    Some("map") => {
                        let values = obj.get("values").ok_or_else(|| err("a map needs \"values\"".into()))?;
                        let values = self.node(values, namespace, &format!("{path}{{}}"))?;
                        Ok(self.push(Node::Map(values)))
                    }
                    Some(other @ ("enum" | "fixed")) => Err(err(format!("type {other:?} is not supported by this encoder"))),
                    // {"type": "long", "logicalType": ...} and {"type": {...}}: the underlying type.
                    _ => self.node(ty, namespace, path),
                }
            }
            other => Err(err(format!("not a schema: {other}"))),
        }
    }
}

/// `ShadowScore` → `shadow_score`.
fn snake_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

fn as_f64(v: &Value) -> Option<f64> {
    match v {
        Value::Float(f) => Some(*f),
        Value::Integer(i) => Some(i128::from(*i) as f64),
        _ => None,
    }
}

fn describe(v: Option<&Value>) -> String {
    match v {
        None => "nothing (field absent, no default)".into(),
        Some(Value::Null) => "null".into(),
        Some(Value::Bool(_)) => "a boolean".into(),
        Some(Value::Integer(i)) => format!("integer {}", i128::from(*i)),
        Some(Value::Float(_)) => "a float".into(),
        Some(Value::Text(_)) => "text".into(),
        Some(Value::Bytes(_)) => "bytes".into(),
        Some(Value::Array(_)) => "an array".into(),
        Some(Value::Map(_)) => "a map".into(),
        Some(_) => "an unsupported CBOR value".into(),
    }
}

/// A schema default (JSON) as the CBOR value it stands for.
fn json_to_cbor(json: &Json) -> Value {
    match json {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Value::Integer(i.into()),
            None => Value::Float(n.as_f64().unwrap_or(0.0)),
        },
        Json::String(s) => Value::Text(s.clone()),
        Json::Array(a) => Value::Array(a.iter().map(json_to_cbor).collect()),
        Json::Object(o) => Value::Map(o.iter().map(|(k, v)| (Value::Text(k.clone()), json_to_cbor(v))).collect()),
    }
}

/// Avro `long` / `int`: zig-zag, then base-128 varint, low group first.
fn write_long(v: i64, out: &mut Vec<u8>) {
    let mut n = ((v << 1) ^ (v >> 63)) as u64;
    while n >= 0x80 {
        out.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// Avro `bytes` / `string`: length as a long, then the bytes.
fn write_bytes(b: &[u8], out: &mut Vec<u8>) {
    write_long(b.len() as i64, out);
    out.extend_from_slice(b);
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::record::*;

    fn long_bytes(v: i64) -> Vec<u8> {
        let mut out = Vec::new();
        write_long(v, &mut out);
        out
    }

    #[test]
    fn longs_are_zigzag_varints_as_in_the_avro_spec() {
        // The Avro 1.11 specification's table, plus the 64-bit extremes.
        assert_eq!(long_bytes(0), [0x00]);
        assert_eq!(long_bytes(-1), [0x01]);
        assert_eq!(long_bytes(1), [0x02]);
        assert_eq!(long_bytes(-2), [0x03]);
        assert_eq!(long_bytes(2), [0x04]);
        assert_eq!(long_bytes(-64), [0x7f]);
        assert_eq!(long_bytes(64), [0x80, 0x01]);
        assert_eq!(long_bytes(i64::MAX), [0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
        assert_eq!(long_bytes(i64::MIN), [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
    }

    #[test]
    fn a_small_record_encodes_to_known_bytes() {
        let schema = AvroSchema::parse(
            r#"{"type":"record","name":"T","fields":[
                {"name":"a","type":"long"},
                {"name":"s","type":"string"},
                {"name":"o","type":["null","double"],"default":null},
                {"name":"xs","type":{"type":"array","items":"int"},"default":[]},
                {"name":"m","type":{"type":"map","values":"long"}}]}"#,
        )
        .unwrap();
        let value = Value::Map(vec![
            (Value::Text("a".into()), Value::Integer(27.into())),
            (Value::Text("s".into()), Value::Text("foo".into())),
            (Value::Text("m".into()), Value::Map(vec![(Value::Text("k".into()), Value::Integer(1.into()))])),
        ]);
        let bytes = schema.encode(&value).unwrap();
        // a = 27 → 0x36; s = len 3 (0x06) "foo"; o absent → branch 0 (null); xs default [] → 0;
        // m: one entry (0x02), key "k", value 1 (0x02), end (0x00).
        assert_eq!(bytes, [0x36, 0x06, b'f', b'o', b'o', 0x00, 0x00, 0x02, 0x02, b'k', 0x02, 0x00]);
        let with_o = Value::Map(vec![
            (Value::Text("a".into()), Value::Integer((-1).into())),
            (Value::Text("s".into()), Value::Text(String::new())),
            (Value::Text("o".into()), Value::Float(1.0)),
            (Value::Text("xs".into()), Value::Array(vec![Value::Integer(2.into())])),
            (Value::Text("m".into()), Value::Map(vec![])),
        ]);
        let bytes = schema.encode(&with_o).unwrap();
        let mut want = vec![0x01, 0x00, 0x02];
        want.extend_from_slice(&1.0f64.to_le_bytes());
        want.extend_from_slice(&[0x02, 0x04, 0x00, 0x00]);
        assert_eq!(bytes, want);
    }

    #[test]
    fn unknown_fields_and_mismatches_are_errors_with_a_path() {
        let schema = AvroSchema::parse(r#"{"type":"record","name":"T","fields":[{"name":"a","type":"int"}]}"#).unwrap();
        let extra = Value::Map(vec![
            (Value::Text("a".into()), Value::Integer(1.into())),
            (Value::Text("b".into()), Value::Integer(2.into())),
        ]);
        let e = schema.encode(&extra).unwrap_err();
        assert!(matches!(&e, AvroError::UnknownField { field, .. } if field == "b"), "{e}");
        let too_big = Value::Map(vec![(Value::Text("a".into()), Value::Integer((1i64 << 40).into()))]);
        let e = schema.encode(&too_big).unwrap_err().to_string();
        assert!(e.contains("$.a") && e.contains("int"), "{e}");
        let missing = Value::Map(vec![]);
        assert!(schema.encode(&missing).is_err(), "a field without default must be present");
    }

    #[test]
    fn unsupported_and_undefined_types_are_refused_at_parse() {
        let e = AvroSchema::parse(r#"{"type":"enum","name":"E","symbols":["A"]}"#).unwrap_err().to_string();
        assert!(e.contains("enum"), "{e}");
        let e = AvroSchema::parse(r#"{"type":"record","name":"T","fields":[{"name":"a","type":"Nope"}]}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("Nope") && e.contains("$.a"), "{e}");
    }

    fn model() -> ModelRef {
        ModelRef { name: "univariate-ae".into(), version: "1.0.0".into(), sha256: "ab".repeat(32) }
    }

    fn stats() -> Stats {
        Stats {
            count: 3,
            mean: 2.0,
            min: 1.0,
            max: 3.0,
            std: 0.8,
            first: 1.0,
            last: 3.0,
            quantiles: vec![Quantile { q: 0.5, value: 2.0 }],
        }
    }

    /// One body of every kind, with optional fields both set and absent.
    fn every_kind() -> Vec<Body> {
        vec![
            Body::Reading {
                entity: "line1/temp".into(),
                value: 21.5,
                quality: Quality::Good,
                source: "mqtt:plant/line1/temp".into(),
                ingest_time_ms: 1_700_000_000_100,
                source_seq: Some(7),
            },
            Body::Reading {
                entity: "e".into(),
                value: f64::NAN,
                quality: Quality::Bad,
                source: "s".into(),
                ingest_time_ms: 0,
                source_seq: None,
            },
            Body::Score { entity: "e".into(), window_end_ms: 5, score: 0.7, error: Some(0.01), band: "warn".into(), model: model() },
            Body::Score { entity: "e".into(), window_end_ms: 5, score: 0.1, error: None, band: "normal".into(), model: model() },
            Body::Alert {
                entity: "e".into(),
                state: AlertState::Raised,
                band: "critical".into(),
                score: 0.95,
                model: model(),
                message: "spike".into(),
            },
            Body::Dlq {
                id: "d-1".into(),
                source: "mqtt".into(),
                topic: Some("plant/x".into()),
                reason: "not a number".into(),
                raw: Bytes(vec![0, 159, 146, 150, 255]),
                received_ms: 9,
            },
            Body::Heartbeat { uptime_s: 60, counters: BTreeMap::from([("readings_in".to_string(), 1234u64), ("dlq".to_string(), 0)]) },
            Body::Heartbeat { uptime_s: 0, counters: BTreeMap::new() },
            Body::Aggregate { entity: "e".into(), window_start_ms: 60_000, size_ms: 60_000, version: 2, stats: stats() },
            Body::Session {
                entity: "e".into(),
                start_ms: 1,
                end_ms: 11,
                duration_ms: 10,
                stats: stats(),
                max_score: Some(0.9),
                alerts: vec![SessionAlert { window_end_ms: 5, state: AlertState::Raised, score: 0.9 }],
            },
            Body::Session { entity: "e".into(), start_ms: 1, end_ms: 1, duration_ms: 0, stats: stats(), max_score: None, alerts: vec![] },
            Body::ShadowScore {
                entity: "e".into(),
                window_end_ms: 5,
                score: 0.2,
                error: None,
                band: "normal".into(),
                model: model(),
                mode: "shadow".into(),
            },
            Body::ModelEvent { event: "promoted".into(), model: model(), mode: "canary".into(), message: "ok".into() },
            Body::ReviewLabel {
                entity: "e".into(),
                window_end_ms: 5,
                score: 0.6,
                model: model(),
                label: "anomaly".into(),
                by: "api".into(),
                labelled_ms: 99,
            },
        ]
    }

    #[test]
    fn every_record_kind_encodes_against_the_shipped_schema() {
        let schema = AvroSchema::record().unwrap();
        let mut kinds = std::collections::BTreeSet::new();
        for (i, body) in every_kind().into_iter().enumerate() {
            let env = Envelope { schema: SCHEMA_VERSION, agent_id: "gw-1".into(), seq: i as u64, event_time_ms: -5, emitted_ms: 1, body };
            let cbor = encode_cbor(&env).unwrap();
            let datum = schema.encode_cbor(&cbor).unwrap_or_else(|e| panic!("{:?}: {e}", env.body));
            // The envelope's fixed prefix: schema 1, agent "gw-1", seq i, -5, 1.
            let mut prefix = vec![0x02, 0x08];
            prefix.extend_from_slice(b"gw-1");
            prefix.extend(long_bytes(i as i64));
            prefix.extend_from_slice(&[0x09, 0x02]);
            assert!(datum.starts_with(&prefix), "{:?}", env.body);
            kinds.insert(datum[prefix.len()]);
        }
        // Ten body kinds → union branches 0..=9 (each branch index is one byte, zig-zag 2·i).
        assert_eq!(kinds, (0u8..10).map(|i| 2 * i).collect());
    }

    #[test]
    fn confluent_frame_is_magic_id_datum() {
        assert_eq!(confluent_frame(0x0102_0304, &[9, 8]), [0, 1, 2, 3, 4, 9, 8]);
    }
}
