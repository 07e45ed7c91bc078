//! [`KafkaSink`]: delivers outbox records to Kafka topics (feature `kafka`).
//!
//! # Design
//!
//! * **Client.** rskafka, a pure-Rust Kafka protocol client (rustls for TLS, SASL PLAIN and
//!   SCRAM-SHA-256/512, lz4 / zstd compression), so the agent cross-compiles for ARM without a
//!   C/C++ toolchain or OpenSSL. Produce requests ask for `acks = all` (rskafka sends
//!   `acks = -1`): `deliver` returns `Ok` only when every partition leader has acknowledged every
//!   record with the topic's full in-sync replica set.
//! * **Topics.** One topic per record kind ([`KafkaTopics`]); a kind without a topic is not
//!   wanted by this sink (other sinks still get it).
//! * **Keys and partitions.** The message key is [`Envelope::partition_key`] (the entity id for
//!   readings, scores and alerts). The partition is chosen exactly like the Java client's default
//!   partitioner for keyed records — `(murmur2(key) & 0x7fffffff) % partitions` — so a partition
//!   holds one entity's stream in order, and Vigil agrees with Java producers writing the same
//!   keys.
//! * **Order.** The outbox hands a sink single-class batches in ascending `seq`. The batch is
//!   split per partition, preserving order; each partition's records go out in requests of at
//!   most `max_request_bytes`, one after another; partitions are produced concurrently. So per key
//!   the broker sees records in `seq` order. A failed batch is offered again as a whole, so a
//!   partition that had already accepted its part receives those records twice — the
//!   at-least-once duplicate, detectable by the `vigil.seq` header / the envelope's `seq`.
//! * **Values.** [`ValueEncoding`]: the outbox's CBOR bytes as they are, JSON, or Avro in the
//!   Confluent wire format (magic byte, schema id, datum of `schema/vigil-record.avsc`; see
//!   [`crate::avro`]), so central teams consume with standard Avro deserializers. The schema id
//!   per topic comes from configuration or from registering the schema with a schema registry
//!   under the subject `<topic>-value` (Confluent's default TopicNameStrategy) before the
//!   topic's first produce after each (re)connect; a registry that cannot be reached is a
//!   transient error like a broker that cannot be reached (the records wait in the outbox).
//! * **Headers.** `vigil.schema` (record schema version), `vigil.agent`, `vigil.seq`,
//!   `vigil.kind` (all UTF-8 text), and `content-type` (`application/cbor`,
//!   `application/json` or `application/vnd.vigil.avro`). The Kafka timestamp is the record's
//!   event time.
//! * **Failures.** Every produce/metadata error is [`SinkError::Transient`]: the outbox retries
//!   with backoff, forever, so an unreachable broker never loses data. rskafka's own retries are
//!   bounded by `request_timeout` so errors surface to the outbox loop (and its metrics) instead
//!   of hanging inside the client. After an error the cached client is dropped and rebuilt on the
//!   next attempt (fresh metadata, new connections).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rskafka::client::partition::{Compression, PartitionClient, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder, Credentials, SaslConfig};
use rskafka::record::Record;

use crate::avro::{confluent_frame, AvroError, AvroSchema};
use crate::record::{encode_json, Envelope, RecordClass, SCHEMA_VERSION};
use crate::schema_registry::{RegistryError, SchemaRegistry, SchemaRegistryConfig};
use crate::sink::{BatchLimits, ClassSet, Sink, SinkError, StoredRecord};

/// Topic per record kind; `None` = this sink does not take that kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KafkaTopics {
    pub reading: Option<String>,
    pub score: Option<String>,
    pub alert: Option<String>,
    pub dlq: Option<String>,
    pub heartbeat: Option<String>,
    pub aggregate: Option<String>,
    pub session: Option<String>,
}

impl KafkaTopics {
    /// The topic for `class`.
    pub fn get(&self, class: RecordClass) -> Option<&str> {
        match class {
            RecordClass::Reading => self.reading.as_deref(),
            RecordClass::Score => self.score.as_deref(),
            RecordClass::Alert => self.alert.as_deref(),
            RecordClass::Dlq => self.dlq.as_deref(),
            RecordClass::Heartbeat => self.heartbeat.as_deref(),
            RecordClass::Aggregate => self.aggregate.as_deref(),
            RecordClass::Session => self.session.as_deref(),
        }
    }
}

/// How record values are encoded on Kafka.
#[derive(Debug, Clone, Default)]
pub enum ValueEncoding {
    /// The outbox's CBOR envelope, byte for byte (decode with [`crate::decode_cbor`]).
    #[default]
    Cbor,
    /// The envelope as JSON text ([`crate::encode_json`]).
    Json,
    /// The envelope as Avro in the Confluent wire format ([`crate::avro`]).
    Avro(AvroEncoding),
}

/// Where the Avro encoding gets its schema ids.
#[derive(Debug, Clone, Default)]
pub struct AvroEncoding {
    /// Registry to register the record schema with, under the subject `<topic>-value`.
    pub registry: Option<SchemaRegistryConfig>,
    /// Schema ids fixed by configuration (the schema registered beforehand by the central
    /// team), per topic; they take precedence over the registry.
    pub schema_ids: BTreeMap<String, u32>,
}

/// Errors setting up a [`KafkaSink`].
#[derive(Debug, thiserror::Error)]
pub enum KafkaSetupError {
    /// The shipped Avro record schema does not parse (a build defect; tests prove it does).
    #[error("the Avro record schema: {0}")]
    Schema(#[from] AvroError),
    /// The schema registry client could not be built.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// Avro without a registry needs a schema id for every topic.
    #[error("Avro encoding: topic {topic:?} has no schema id and no schema registry is configured")]
    NoSchemaId { topic: String },
}

/// The Avro encoder's state: the parsed schema, and the schema id per topic once known.
struct AvroState {
    schema: AvroSchema,
    registry: Option<SchemaRegistry>,
    ids: BTreeMap<String, u32>,
    /// The ids fixed by configuration (kept when registry ids are forgotten on reconnect).
    configured: BTreeMap<String, u32>,
}

/// Producer-side compression of record batches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum KafkaCompression {
    None,
    #[default]
    Lz4,
    Zstd,
}

/// SASL authentication.
#[derive(Clone, PartialEq, Eq)]
pub enum KafkaSasl {
    Plain { username: String, password: String },
    ScramSha256 { username: String, password: String },
    ScramSha512 { username: String, password: String },
}

impl std::fmt::Debug for KafkaSasl {
    /// Never prints the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (mech, user) = match self {
            KafkaSasl::Plain { username, .. } => ("PLAIN", username),
            KafkaSasl::ScramSha256 { username, .. } => ("SCRAM-SHA-256", username),
            KafkaSasl::ScramSha512 { username, .. } => ("SCRAM-SHA-512", username),
        };
        write!(f, "KafkaSasl({mech}, user {user:?}, password <redacted>)")
    }
}

impl KafkaSasl {
    fn to_rskafka(&self) -> SaslConfig {
        let creds = |u: &str, p: &str| Credentials::new(u.to_string(), p.to_string());
        match self {
            KafkaSasl::Plain { username, password } => SaslConfig::Plain(creds(username, password)),
            KafkaSasl::ScramSha256 { username, password } => {
                SaslConfig::ScramSha256(creds(username, password))
            }
            KafkaSasl::ScramSha512 { username, password } => {
                SaslConfig::ScramSha512(creds(username, password))
            }
        }
    }
}

/// Everything a [`KafkaSink`] needs.
#[derive(Debug, Clone)]
pub struct KafkaSinkConfig {
    /// Bootstrap brokers, `host:port`.
    pub brokers: Vec<String>,
    /// Kafka client id (broker logs, quotas).
    pub client_id: String,
    /// Topic per record kind.
    pub topics: KafkaTopics,
    /// Value encoding.
    pub encoding: ValueEncoding,
    /// Batch compression.
    pub compression: KafkaCompression,
    /// TLS (rustls); `None` = plaintext.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// SASL; `None` = no authentication.
    pub sasl: Option<KafkaSasl>,
    /// When set, a missing topic is created with this many partitions (and
    /// `replication_factor`); otherwise a missing topic is a transient error until someone
    /// creates it.
    pub create_topics: Option<(i32, i16)>,
    /// Bound on one produce/metadata operation, including rskafka's internal retries.
    pub request_timeout: Duration,
    /// Most record bytes (key + value + headers, before compression) per produce request.
    pub max_request_bytes: usize,
}

/// Delivers outbox records to Kafka; see the module docs.
pub struct KafkaSink {
    name: String,
    agent_id: String,
    config: KafkaSinkConfig,
    classes: ClassSet,
    limits: Option<BatchLimits>,
    conn: Option<Connection>,
    avro: Option<AvroState>,
}

/// A connected client with the partition clients of the topics used so far.
struct Connection {
    client: Client,
    topics: BTreeMap<String, Vec<Arc<PartitionClient>>>,
}

fn transient(what: impl std::fmt::Display, e: impl std::error::Error + Send + Sync + 'static) -> SinkError {
    SinkError::Transient {
        message: what.to_string(),
        source: Some(Box::new(e)),
    }
}

impl KafkaSink {
    /// A sink named `name` for records of agent `agent_id`. Connects lazily, on the first
    /// delivery (an unreachable broker or registry at start-up is an ordinary transient
    /// failure). Fails only on settings that can never work.
    pub fn new(name: impl Into<String>, agent_id: impl Into<String>, config: KafkaSinkConfig) -> Result<Self, KafkaSetupError> {
        let classes = RecordClass::ALL
            .into_iter()
            .filter(|&c| config.topics.get(c).is_some())
            .fold(ClassSet::NONE, |s, c| s.with(c));
        let avro = match &config.encoding {
            ValueEncoding::Avro(a) => {
                if a.registry.is_none() {
                    let missing = RecordClass::ALL
                        .into_iter()
                        .filter_map(|c| config.topics.get(c))
                        .find(|t| !a.schema_ids.contains_key(*t));
                    if let Some(topic) = missing {
                        return Err(KafkaSetupError::NoSchemaId { topic: topic.to_string() });
                    }
                }
                Some(AvroState {
                    schema: AvroSchema::record()?,
                    registry: a.registry.clone().map(SchemaRegistry::new).transpose()?,
                    ids: a.schema_ids.clone(),
                    configured: a.schema_ids.clone(),
                })
            }
            ValueEncoding::Cbor | ValueEncoding::Json => None,
        };
        Ok(KafkaSink {
            name: name.into(),
            agent_id: agent_id.into(),
            config,
            classes,
            limits: None,
            conn: None,
            avro,
        })
    }

    /// The Avro schema id for `topic`: configured, cached, or registered now.
    async fn schema_id(avro: &mut AvroState, topic: &str) -> Result<u32, SinkError> {
        if let Some(&id) = avro.ids.get(topic) {
            return Ok(id);
        }
        let Some(registry) = &avro.registry else {
            // KafkaSink::new refused a topic without an id when there is no registry.
            return Err(SinkError::Fatal { message: format!("no Avro schema id for topic {topic:?}") });
        };
        let subject = format!("{topic}-value");
        let id = registry
            .register(&subject, avro.schema.text())
            .await
            .map_err(|e| transient(format!("registering the Avro schema as {subject:?}"), e))?;
        tracing::info!(subject, id, "registered the Avro record schema");
        avro.ids.insert(topic.to_string(), id);
        Ok(id)
    }

    /// Sets this sink's batch limits instead of the outbox's defaults.
    pub fn with_batch_limits(mut self, limits: BatchLimits) -> Self {
        self.limits = Some(limits);
        self
    }

    async fn connect(&self) -> Result<Client, SinkError> {
        let timeout = self.config.request_timeout;
        let mut builder = ClientBuilder::new(self.config.brokers.clone())
            .client_id(self.config.client_id.clone())
            .backoff_config(rskafka::BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(2),
                base: 2.0,
                deadline: Some(timeout),
            });
        if let Some(tls) = &self.config.tls {
            builder = builder.tls_config(Arc::clone(tls));
        }
        if let Some(sasl) = &self.config.sasl {
            builder = builder.sasl_config(sasl.to_rskafka());
        }
        // rskafka stops retrying once its backoff sleeps add up to `timeout` and then returns the
        // last error (e.g. the certificate problem). The attempts themselves take time on top of
        // the sleeps, so the outer bound - only a guard against a hung connection - allows one
        // more attempt; were it equal to the deadline it would race it and hide the cause.
        let guard = timeout * 2;
        match tokio::time::timeout(guard, builder.build()).await {
            Ok(Ok(client)) => Ok(client),
            Ok(Err(e)) => Err(transient(
                format!("connecting to Kafka brokers {:?}", self.config.brokers),
                e,
            )),
            Err(_) => Err(SinkError::transient(format!(
                "connecting to Kafka brokers {:?}: timed out after {guard:?}",
                self.config.brokers
            ))),
        }
    }

    /// The partition clients of `topic`, creating the topic first if configured to.
    async fn partitions(conn: &mut Connection, config: &KafkaSinkConfig, topic: &str) -> Result<Vec<Arc<PartitionClient>>, SinkError> {
        if let Some(p) = conn.topics.get(topic) {
            return Ok(p.clone());
        }
        let mut ids = Self::partition_ids(&conn.client, topic).await?;
        if ids.is_empty() {
            let Some((partitions, replication)) = config.create_topics else {
                return Err(SinkError::transient(format!(
                    "Kafka topic {topic:?} does not exist (create it, or set create_topics)"
                )));
            };
            let controller = conn
                .client
                .controller_client()
                .map_err(|e| transient("getting the Kafka controller", e))?;
            let timeout_ms = config.request_timeout.as_millis().min(i32::MAX as u128) as i32;
            if let Err(e) = controller.create_topic(topic, partitions, replication, timeout_ms).await {
                // Another producer may have created it meanwhile: look again before failing.
                tracing::debug!(topic, error = %e, "create_topic failed; re-reading metadata");
            }
            ids = Self::partition_ids(&conn.client, topic).await?;
            if ids.is_empty() {
                return Err(SinkError::transient(format!("Kafka topic {topic:?} could not be created")));
            }
            tracing::info!(topic, partitions = ids.len(), "created Kafka topic");
        }
        let mut clients = Vec::with_capacity(ids.len());
        for id in ids {
            let pc = conn
                .client
                .partition_client(topic, id, UnknownTopicHandling::Retry)
                .await
                .map_err(|e| transient(format!("opening Kafka partition {topic}/{id}"), e))?;
            clients.push(Arc::new(pc));
        }
        conn.topics.insert(topic.to_string(), clients.clone());
        Ok(clients)
    }

    /// Partition ids of `topic`, dense from 0 (empty when the topic does not exist).
    async fn partition_ids(client: &Client, topic: &str) -> Result<Vec<i32>, SinkError> {
        let topics = client
            .list_topics()
            .await
            .map_err(|e| transient("reading Kafka metadata", e))?;
        Ok(topics
            .into_iter()
            .find(|t| t.name == topic)
            .map(|t| t.partitions.into_iter().collect())
            .unwrap_or_default())
    }

    /// Builds the Kafka record for one outbox record; `avro` is the schema and id when the
    /// encoding is Avro.
    fn to_record(&self, r: &StoredRecord, avro: Option<(&AvroSchema, u32)>) -> Result<Record, SinkError> {
        let env: Envelope = r.envelope().map_err(|e| SinkError::Fatal {
            message: format!("outbox record seq {} does not decode: {e}", r.seq),
        })?;
        let (value, content_type) = match (&self.config.encoding, avro) {
            (ValueEncoding::Avro(_), Some((schema, id))) => {
                let datum = schema.encode_cbor(&r.cbor).map_err(|e| SinkError::Fatal {
                    message: format!("record seq {} cannot be Avro-encoded: {e}", r.seq),
                })?;
                (confluent_frame(id, &datum), "application/vnd.vigil.avro")
            }
            (ValueEncoding::Avro(_), None) => {
                return Err(SinkError::Fatal { message: "Avro encoding without a schema id".into() });
            }
            (ValueEncoding::Cbor, _) => (r.cbor.clone(), "application/cbor"),
            (ValueEncoding::Json, _) => (
                encode_json(&env)
                    .map_err(|e| SinkError::Fatal {
                        message: format!("record seq {} cannot be JSON-encoded: {e}", r.seq),
                    })?
                    .into_bytes(),
                "application/json",
            ),
        };
        let key = env.partition_key().as_bytes().to_vec();
        let mut headers = BTreeMap::new();
        headers.insert("vigil.schema".to_string(), SCHEMA_VERSION.to_string().into_bytes());
        headers.insert("vigil.agent".to_string(), self.agent_id.clone().into_bytes());
        headers.insert("vigil.seq".to_string(), r.seq.to_string().into_bytes());
        headers.insert("vigil.kind".to_string(), r.class.as_str().as_bytes().to_vec());
        headers.insert("content-type".to_string(), content_type.as_bytes().to_vec());
        let timestamp = chrono::DateTime::from_timestamp_millis(env.event_time_ms).unwrap_or_default();
        Ok(Record {
            key: Some(key),
            value: Some(value),
            headers,
            timestamp,
        })
    }

    fn compression(&self) -> Compression {
        match self.config.compression {
            KafkaCompression::None => Compression::NoCompression,
            KafkaCompression::Lz4 => Compression::Lz4,
            KafkaCompression::Zstd => Compression::Zstd,
        }
    }

    async fn try_deliver(&mut self, batch: &[StoredRecord]) -> Result<(), SinkError> {
        let Some(first) = batch.first() else { return Ok(()) };
        let Some(topic) = self.config.topics.get(first.class).map(str::to_string) else {
            return Err(SinkError::Fatal {
                message: format!("no Kafka topic configured for {} records", first.class),
            });
        };
        if self.conn.is_none() {
            self.conn = Some(Connection {
                client: self.connect().await?,
                topics: BTreeMap::new(),
            });
        }
        // Invariant: set just above when it was None.
        let conn = self.conn.as_mut().ok_or_else(|| SinkError::transient("no Kafka connection"))?;
        let partitions = Self::partitions(conn, &self.config, &topic).await?;
        let n = partitions.len() as u32;
        let avro_id = match self.avro.as_mut() {
            Some(avro) => Some(Self::schema_id(avro, &topic).await?),
            None => None,
        };
        let avro = self.avro.as_ref().zip(avro_id).map(|(a, id)| (&a.schema, id));

        // Split by partition, preserving seq order; then into requests of bounded size.
        let mut per_partition: BTreeMap<usize, Vec<Vec<Record>>> = BTreeMap::new();
        let mut sizes: BTreeMap<usize, usize> = BTreeMap::new();
        for r in batch {
            let record = self.to_record(r, avro)?;
            let p = partition_for(record.key.as_deref().unwrap_or_default(), n);
            let size = record.approximate_size();
            let requests = per_partition.entry(p).or_default();
            let used = sizes.entry(p).or_default();
            if requests.is_empty() || (*used + size > self.config.max_request_bytes && *used > 0) {
                requests.push(Vec::new());
                *used = 0;
            }
            *used += size;
            // Invariant: a request was pushed above if there was none.
            if let Some(last) = requests.last_mut() {
                last.push(record);
            }
        }
        let compression = self.compression();
        let produce = per_partition.into_iter().map(|(p, requests)| {
            let client = Arc::clone(&partitions[p]);
            let topic = topic.clone();
            async move {
                for records in requests {
                    client
                        .produce(records, compression)
                        .await
                        .map_err(|e| transient(format!("producing to {topic}/{p}"), e))?;
                }
                Ok::<(), SinkError>(())
            }
        });
        let timeout = self.config.request_timeout * 2;
        match tokio::time::timeout(timeout, futures::future::try_join_all(produce)).await {
            Ok(r) => r.map(|_| ()),
            Err(_) => Err(SinkError::transient(format!("producing to {topic}: timed out after {timeout:?}"))),
        }
    }
}

impl Sink for KafkaSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn wants(&self, class: RecordClass) -> bool {
        self.classes.contains(class)
    }

    fn batch_limits(&self) -> Option<BatchLimits> {
        self.limits
    }

    async fn deliver(&mut self, batch: &[StoredRecord]) -> Result<(), SinkError> {
        // Every step is bounded (connect, metadata, produce), but a broker that accepts TCP and
        // never answers must not stall the drain loop either: bound the whole attempt.
        let limit = self.config.request_timeout * 6;
        let result = match tokio::time::timeout(limit, self.try_deliver(batch)).await {
            Ok(r) => r,
            Err(_) => Err(SinkError::transient(format!("Kafka delivery timed out after {limit:?}"))),
        };
        if matches!(result, Err(ref e) if e.is_retriable()) {
            // Start over with fresh metadata and connections next time, and register the schema
            // again (the registry may have been rebuilt; registering is idempotent).
            self.conn = None;
            if let Some(avro) = self.avro.as_mut() {
                avro.ids = avro.configured.clone();
            }
        }
        result
    }
}

/// The partition of `key` among `partitions`, as Kafka's Java default partitioner computes it
/// for keyed records: `(murmur2(key) & 0x7fffffff) % partitions`.
pub fn partition_for(key: &[u8], partitions: u32) -> usize {
    if partitions == 0 {
        return 0;
    }
    ((murmur2(key) as u32 & 0x7fff_ffff) % partitions) as usize
}

/// Kafka's murmur2 (`org.apache.kafka.common.utils.Utils.murmur2`), seed `0x9747b28c`.
pub fn murmur2(data: &[u8]) -> i32 {
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let len = data.len();
    let mut h: u32 = 0x9747_b28c ^ len as u32;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= (rest[2] as u32) << 16;
    }
    if rest.len() >= 2 {
        h ^= (rest[1] as u32) << 8;
    }
    if !rest.is_empty() {
        h ^= rest[0] as u32;
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_kafka_test_vectors() {
        // From Apache Kafka's UtilsTest.testMurmur2.
        let cases: [(&str, i32); 6] = [
            ("21", -973932308),
            ("foobar", -790332482),
            ("a-little-bit-long-string", -985981536),
            ("a-little-bit-longer-string", -1486304829),
            ("lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
            ("abc", 479470107),
        ];
        for (s, want) in cases {
            assert_eq!(murmur2(s.as_bytes()), want, "murmur2({s:?})");
        }
    }

    #[test]
    fn partition_is_stable_and_in_range() {
        for n in 1..17 {
            let p = partition_for(b"plant/line1/temp", n);
            assert!(p < n as usize);
            assert_eq!(p, partition_for(b"plant/line1/temp", n));
        }
    }

    #[test]
    fn sasl_debug_hides_the_password() {
        let s = format!("{:?}", KafkaSasl::Plain { username: "u".into(), password: "hunter2".into() });
        assert!(!s.contains("hunter2"), "{s}");
    }
}
