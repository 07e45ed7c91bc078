//! A client for a Confluent-compatible schema registry (feature `kafka`): registers the Avro
//! record schema and returns its id, for the Confluent wire format ([`crate::avro`]).
//!
//! Only the one call the producer needs: `POST /subjects/{subject}/versions` with
//! `{"schemaType": "AVRO", "schema": "<schema JSON as text>"}`, answered by `{"id": N}`.
//! Registering a schema the subject already has returns the existing id, so the call is
//! idempotent and safe to repeat after every reconnect. The registry's compatibility rules apply
//! (a schema that breaks them is refused with HTTP 409 and stays an error until someone acts).
//!
//! HTTP over rustls (the caller's `rustls::ClientConfig`, so the same CA/client-certificate
//! settings as the Kafka link), optional HTTP basic authentication (Confluent Cloud API
//! key/secret, Karapace or Apicurio users). The password never appears in `Debug` output or
//! errors.

use std::sync::Arc;
use std::time::Duration;

/// Where the registry is and how to talk to it.
#[derive(Clone)]
pub struct SchemaRegistryConfig {
    /// Base URL, e.g. `https://registry.central.example:8081` (no trailing `/` needed).
    pub url: String,
    /// HTTP basic authentication `(username, password)`.
    pub basic_auth: Option<(String, String)>,
    /// TLS for `https://` URLs.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Bound on one request.
    pub timeout: Duration,
}

impl std::fmt::Debug for SchemaRegistryConfig {
    /// Never prints the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchemaRegistryConfig")
            .field("url", &self.url)
            .field("user", &self.basic_auth.as_ref().map(|(u, _)| u))
            .field("tls", &self.tls.is_some())
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Errors talking to the registry.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The HTTP client could not be built (TLS settings).
    #[error("building the schema registry client: {0}")]
    Client(#[source] reqwest::Error),
    /// The request did not complete (connection refused, timeout, TLS failure).
    #[error("schema registry {url}: {source}")]
    Request {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// The registry answered with an error status (e.g. 401, 409 incompatible schema, 5xx).
    #[error("schema registry {url}: HTTP {status}: {body}")]
    Status { url: String, status: u16, body: String },
    /// The answer was not `{"id": N}`.
    #[error("schema registry {url}: unexpected answer {body:?}")]
    Answer { url: String, body: String },
}

/// A connected registry client.
#[derive(Debug, Clone)]
pub struct SchemaRegistry {
    config: SchemaRegistryConfig,
    http: reqwest::Client,
}

impl SchemaRegistry {
    /// A client for `config` (no request is made yet).
    pub fn new(config: SchemaRegistryConfig) -> Result<SchemaRegistry, RegistryError> {
        // reqwest is built without a default rustls provider (no aws-lc): always hand it a
        // config on ring — the caller's, or one trusting nothing for plain-HTTP registries.
        let tls = match &config.tls {
            Some(tls) => (**tls).clone(),
            None => rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|e| RegistryError::Answer { url: config.url.clone(), body: e.to_string() })?
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth(),
        };
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(config.timeout)
            .build()
            .map_err(RegistryError::Client)?;
        Ok(SchemaRegistry { config, http })
    }

    /// Registers the Avro `schema` (JSON text) under `subject` and returns its id (the existing
    /// id when the subject already has this schema).
    pub async fn register(&self, subject: &str, schema: &str) -> Result<u32, RegistryError> {
        let url = format!("{}/subjects/{}/versions", self.config.url.trim_end_matches('/'), encode_path(subject));
        let body = serde_json::json!({ "schemaType": "AVRO", "schema": schema }).to_string();
        let mut request = self
            .http
            .post(&url)
            .header("Content-Type", "application/vnd.schemaregistry.v1+json")
            .header("Accept", "application/vnd.schemaregistry.v1+json, application/json")
            .body(body);
        if let Some((user, password)) = &self.config.basic_auth {
            request = request.basic_auth(user, Some(password));
        }
        let response = request.send().await.map_err(|source| RegistryError::Request { url: url.clone(), source })?;
        let status = response.status();
        let text = response.text().await.map_err(|source| RegistryError::Request { url: url.clone(), source })?;
        if !status.is_success() {
            return Err(RegistryError::Status { url, status: status.as_u16(), body: text.chars().take(500).collect() });
        }
        serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v.get("id")?.as_u64())
            .and_then(|id| u32::try_from(id).ok())
            .ok_or(RegistryError::Answer { url, body: text.chars().take(500).collect() })
    }
}

/// Percent-encodes a subject for a URL path segment (topic names use `[A-Za-z0-9._-]`, but a
/// subject is not limited to them).
fn encode_path(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_are_percent_encoded() {
        assert_eq!(encode_path("vigil.scores-value"), "vigil.scores-value");
        assert_eq!(encode_path("a/b c"), "a%2Fb%20c");
    }

    #[test]
    fn debug_hides_the_password() {
        let c = SchemaRegistryConfig {
            url: "http://r".into(),
            basic_auth: Some(("u".into(), "hunter2".into())),
            tls: None,
            timeout: Duration::from_secs(1),
        };
        let s = format!("{c:?}");
        assert!(!s.contains("hunter2") && s.contains("\"u\""), "{s}");
    }
}
