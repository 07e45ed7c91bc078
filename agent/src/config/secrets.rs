//! Secrets: values that must never reach a log line, an error message or `check-config`'s
//! output.
//!
//! | key              | environment variable   |
//! |------------------|------------------------|
//! | `mqtt.password`  | `VIGIL_MQTT_PASSWORD`  |
//! | `api.token`      | `VIGIL_API_TOKEN`      |
//! | `alerts.webhook[].routing_key` | `VIGIL_WEBHOOK_<NAME>_ROUTING_KEY` |
//! | `uplink.kafka.sasl.password` | `VIGIL_KAFKA_PASSWORD` |
//! | `uplink.kafka.avro.registry_password` | `VIGIL_SCHEMA_REGISTRY_PASSWORD` |
//! | `uplink.s3.access_key_id` | `VIGIL_S3_ACCESS_KEY_ID` (not secret, but usually set with the key) |
//! | `uplink.s3.secret_access_key` | `VIGIL_S3_SECRET_ACCESS_KEY` |
//!
//! An environment variable, when set, wins over the file.

use serde::{Deserialize, Serialize, Serializer};

use super::Config;

/// A secret string. `Debug`, `Display` and `Serialize` print `<redacted>`.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for handing to a client library. Never log the result.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<redacted>")
    }
}

/// Applies the `VIGIL_…` secret variables from `env` (a lookup, so tests need not mutate the
/// process environment).
pub fn apply_env(config: &mut Config, env: impl Fn(&str) -> Option<String>) {
    if let Some(password) = env("VIGIL_MQTT_PASSWORD") {
        if let Some(mqtt) = config.mqtt.as_mut() {
            mqtt.password = Some(Secret(password));
        }
    }
    if let Some(token) = env("VIGIL_API_TOKEN") {
        config.api.token = Some(Secret(token));
    }
    for w in &mut config.alerts.webhook {
        let var = format!("VIGIL_WEBHOOK_{}_ROUTING_KEY", w.name.to_ascii_uppercase().replace('-', "_"));
        if let Some(key) = env(&var) {
            w.routing_key = Some(Secret(key));
        }
    }
    if let Some(password) = env("VIGIL_KAFKA_PASSWORD") {
        if let Some(sasl) = config.uplink.kafka.as_mut().and_then(|k| k.sasl.as_mut()) {
            sasl.password = Some(Secret(password));
        }
    }
    if let Some(password) = env("VIGIL_SCHEMA_REGISTRY_PASSWORD") {
        if let Some(avro) = config.uplink.kafka.as_mut().and_then(|k| k.avro.as_mut()) {
            avro.registry_password = Some(Secret(password));
        }
    }
    if let Some(s3) = config.uplink.s3.as_mut() {
        if let Some(id) = env("VIGIL_S3_ACCESS_KEY_ID") {
            s3.access_key_id = Some(id);
        }
        if let Some(key) = env("VIGIL_S3_SECRET_ACCESS_KEY") {
            s3.secret_access_key = Some(Secret(key));
        }
    }
}
