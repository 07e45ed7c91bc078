//! [`S3Sink`]: delivers outbox records as objects in an S3 data lake (feature `s3`).
//!
//! # Object layout
//!
//! ```text
//! <prefix>/site=<site>/agent=<agent>/kind=<kind>/date=YYYY-MM-DD/hour=HH/<first_seq:020>-<last_seq:020>.jsonl.zst
//! ```
//!
//! * Hive-style partitions, so Athena / Spark / Trino / DuckDB prune by site, agent, kind and
//!   date without listing everything. `date` and `hour` are the records' **event time** (UTC):
//!   a backlog uplinked after an outage lands in the hours it describes, not the hour it
//!   arrived. A batch spanning several hours becomes one object per hour.
//! * Content: one record envelope per line as JSON ([`crate::encode_json`], the same fields as
//!   the CBOR schema; byte strings as base64), the whole object one zstd frame. Every engine
//!   central teams use reads zstd JSON lines directly (`read_json('…/*.jsonl.zst')` in DuckDB,
//!   `spark.read.json`, Athena's JSON SerDe); Parquet would add the Arrow/Parquet stack (several
//!   MB of code and minutes of build) to every gateway for a format central jobs can produce
//!   from these objects themselves.
//! * Names are derived from the first and last `seq` in the object, so redelivering the same
//!   batch after a crash overwrites the same objects (idempotent); a redelivered batch with
//!   different bounds writes an object that overlaps an existing one — readers deduplicate on
//!   `(agent_id, seq)` as for every sink.
//!
//! # Delivery
//!
//! `deliver` returns `Ok` only after S3 acknowledged every object of the batch (PUT, or
//! CompleteMultipartUpload for objects over `multipart_threshold`). Any error is transient: the
//! outbox retries the batch with backoff indefinitely, so an unreachable store or a missing
//! bucket loses nothing. The object_store client retries each request itself within
//! `request_timeout`.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{ClientOptions, ObjectStoreExt, PutPayload, RetryConfig, WriteMultipart};

use crate::record::{encode_json, RecordClass};
use crate::sink::{BatchLimits, ClassSet, Sink, SinkError, StoredRecord};

/// Everything an [`S3Sink`] needs.
#[derive(Clone)]
pub struct S3SinkConfig {
    /// Bucket name.
    pub bucket: String,
    /// Key prefix (no leading or trailing `/`), may be empty.
    pub prefix: String,
    /// Site name (`site=` partition).
    pub site: String,
    /// Agent id (`agent=` partition).
    pub agent_id: String,
    /// Region (signing); S3-compatible stores usually accept any, e.g. `us-east-1`.
    pub region: String,
    /// Custom endpoint URL for S3-compatible stores (MinIO, Ceph, …); `None` = AWS.
    pub endpoint: Option<String>,
    /// Access key id; `None` = anonymous (unsigned) requests.
    pub access_key_id: Option<String>,
    /// Secret access key.
    pub secret_access_key: Option<String>,
    /// Permit `http://` endpoints (loopback test stores). Off by default.
    pub allow_http: bool,
    /// Extra trusted CA certificates (PEM), e.g. a plant's private CA for an on-site store.
    pub ca_pem: Option<Vec<u8>>,
    /// Record kinds this sink takes.
    pub classes: ClassSet,
    /// Most records per object.
    pub max_object_records: usize,
    /// Most CBOR bytes of records per object (the JSON object is larger before compression).
    pub max_object_bytes: usize,
    /// Age limit: how long a not-yet-full object may wait for more records.
    pub max_object_age: Duration,
    /// Compressed objects larger than this use a multipart upload (parts of this size).
    pub multipart_threshold: usize,
    /// Bound on one request including the client's own retries.
    pub request_timeout: Duration,
    /// zstd level (1–19; 3 is zstd's default).
    pub zstd_level: i32,
}

impl std::fmt::Debug for S3SinkConfig {
    /// Never prints the secret key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3SinkConfig")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("site", &self.site)
            .field("endpoint", &self.endpoint)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &self.secret_access_key.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

/// S3 sink set-up errors.
#[derive(Debug, thiserror::Error)]
pub enum S3SetupError {
    #[error("S3 client configuration rejected: {0}")]
    Client(#[from] object_store::Error),
}

/// Delivers batches as partitioned, zstd-compressed JSON-lines objects; see the module docs.
pub struct S3Sink {
    name: String,
    config: S3SinkConfig,
    store: AmazonS3,
}

impl S3Sink {
    /// A sink named `name`. Builds the client (no request is made until the first delivery).
    pub fn new(name: impl Into<String>, config: S3SinkConfig) -> Result<Self, S3SetupError> {
        // reqwest is built without a rustls provider (no aws-lc); use ring process-wide.
        // Installing fails harmlessly when a provider is already installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut options = ClientOptions::new()
            .with_timeout(config.request_timeout)
            .with_connect_timeout(Duration::from_secs(10))
            .with_allow_http(config.allow_http);
        if let Some(pem) = &config.ca_pem {
            for cert in object_store::Certificate::from_pem_bundle(pem)? {
                options = options.with_root_certificate(cert);
            }
        }
        let retry = RetryConfig {
            max_retries: 3,
            retry_timeout: config.request_timeout,
            ..RetryConfig::default()
        };
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&config.bucket)
            .with_region(&config.region)
            .with_allow_http(config.allow_http)
            .with_client_options(options)
            .with_retry(retry);
        if let Some(endpoint) = &config.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        match (&config.access_key_id, &config.secret_access_key) {
            (Some(id), Some(secret)) => {
                builder = builder.with_access_key_id(id).with_secret_access_key(secret);
            }
            _ => builder = builder.with_skip_signature(true),
        }
        Ok(S3Sink {
            name: name.into(),
            store: builder.build()?,
            config,
        })
    }

    /// The object key for records of `class` in `(date, hour)` from `first` to `last` seq.
    pub fn object_key(&self, class: RecordClass, date: &str, hour: u32, first: u64, last: u64) -> String {
        let mut key = String::new();
        if !self.config.prefix.is_empty() {
            key.push_str(&self.config.prefix);
            key.push('/');
        }
        key.push_str(&format!(
            "site={}/agent={}/kind={}/date={date}/hour={hour:02}/{first:020}-{last:020}.jsonl.zst",
            self.config.site, self.config.agent_id, class
        ));
        key
    }

    /// Splits a batch into objects by event-time hour; each object's compressed bytes.
    fn encode(&self, batch: &[StoredRecord]) -> Result<Vec<(String, Vec<u8>)>, SinkError> {
        // (date, hour) → (first seq, last seq, JSON lines); BTreeMap keeps hour order.
        let mut groups: BTreeMap<(String, u32), (u64, u64, Vec<u8>)> = BTreeMap::new();
        for r in batch {
            let env = r.envelope().map_err(|e| SinkError::Fatal {
                message: format!("outbox record seq {} does not decode: {e}", r.seq),
            })?;
            let t = chrono::DateTime::from_timestamp_millis(env.event_time_ms).unwrap_or_default();
            let key = (t.format("%Y-%m-%d").to_string(), chrono::Timelike::hour(&t));
            let line = encode_json(&env).map_err(|e| SinkError::Fatal {
                message: format!("record seq {} cannot be JSON-encoded: {e}", r.seq),
            })?;
            let g = groups.entry(key).or_insert((r.seq, r.seq, Vec::new()));
            g.1 = r.seq;
            g.2.extend_from_slice(line.as_bytes());
            g.2.push(b'\n');
        }
        let class = batch.first().map(|r| r.class).unwrap_or(RecordClass::Reading);
        groups
            .into_iter()
            .map(|((date, hour), (first, last, lines))| {
                let mut z = zstd::stream::Encoder::new(Vec::with_capacity(lines.len() / 4), self.config.zstd_level)
                    .and_then(|mut e| e.write_all(&lines).and_then(|_| e.finish()))
                    .map_err(|source| SinkError::Io { context: "zstd-compressing an S3 object".into(), source })?;
                z.shrink_to_fit();
                Ok((self.object_key(class, &date, hour, first, last), z))
            })
            .collect()
    }

    async fn put(&self, key: &str, body: Vec<u8>) -> Result<(), object_store::Error> {
        let path = ObjectPath::from(key);
        if body.len() <= self.config.multipart_threshold {
            self.store.put(&path, PutPayload::from(body)).await?;
            return Ok(());
        }
        let upload = self.store.put_multipart(&path).await?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, self.config.multipart_threshold.max(5 << 20));
        writer.write(&body);
        writer.finish().await?;
        Ok(())
    }
}

impl Sink for S3Sink {
    fn name(&self) -> &str {
        &self.name
    }

    fn wants(&self, class: RecordClass) -> bool {
        self.config.classes.contains(class)
    }

    fn batch_limits(&self) -> Option<BatchLimits> {
        Some(BatchLimits {
            max_records: self.config.max_object_records,
            max_bytes: self.config.max_object_bytes,
            linger: self.config.max_object_age,
        })
    }

    async fn deliver(&mut self, batch: &[StoredRecord]) -> Result<(), SinkError> {
        let objects = self.encode(batch)?;
        for (key, body) in objects {
            let bytes = body.len();
            self.put(&key, body).await.map_err(|e| SinkError::Transient {
                message: format!("writing s3://{}/{key}", self.config.bucket),
                source: Some(Box::new(e)),
            })?;
            tracing::debug!(sink = %self.name, key, bytes, "object written");
        }
        Ok(())
    }
}

/// Decodes an object written by [`S3Sink`] (zstd JSON lines) back into envelopes, in order.
pub fn decode_object(bytes: &[u8]) -> Result<Vec<crate::Envelope>, crate::DecodeError> {
    let text = zstd::stream::decode_all(bytes).map_err(|e| crate::DecodeError::Object(format!("zstd: {e}")))?;
    let text = String::from_utf8(text).map_err(|e| crate::DecodeError::Object(format!("not UTF-8: {e}")))?;
    text.lines().filter(|l| !l.is_empty()).map(crate::decode_json).collect()
}
