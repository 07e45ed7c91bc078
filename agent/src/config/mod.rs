//! The agent's configuration: one TOML file, typed with serde.
//!
//! Every struct here denies unknown keys, and every field's doc comment is the user-facing
//! documentation of that key (`config/vigil.toml` mirrors them with examples). Loading goes
//! through [`Config::load`], which reports every problem — TOML syntax, a wrong type, an
//! unknown key, a value that fails validation — as a [`ConfigError`] naming the file, the line
//! and the dotted key.
//!
//! Secrets (`mqtt.password`, `api.token`) may instead come from environment variables
//! (`VIGIL_MQTT_PASSWORD`, ...); see [`secrets`]. They are held in [`Secret`], whose `Debug`
//! and `Display` never print the value.

mod load;
pub mod reload;
pub mod modbus;
pub mod secrets;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use load::ConfigError;
pub use secrets::Secret;

use crate::ingest::simulator::SimulatorConfig;

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Identity and local storage of this agent.
    pub agent: AgentConfig,
    /// The MQTT broker connection, shared by MQTT ingest and alert publishing. Optional: without
    /// it the agent neither subscribes nor publishes (e.g. the simulator demo).
    #[serde(default)]
    pub mqtt: Option<MqttConfig>,
    /// Inputs.
    #[serde(default)]
    pub ingest: IngestConfig,
    /// Checks every inbound message must pass before it becomes a reading.
    #[serde(default)]
    pub validation: ValidationConfig,
    /// Partitioning, windows and the local feature store.
    #[serde(default)]
    pub pipeline: PipelineConfig,
    /// The model and micro-batching.
    pub inference: InferenceConfig,
    /// Model lifecycle: the on-disk registry, deployment modes and automatic rollback.
    #[serde(default)]
    pub models: ModelsConfig,
    /// Score bands, hysteresis and where alerts go.
    #[serde(default)]
    pub alerts: AlertsConfig,
    /// The store-and-forward outbox and its sinks.
    #[serde(default)]
    pub uplink: UplinkConfig,
    /// The local HTTP server: metrics, health, JSON API, dashboard.
    #[serde(default)]
    pub api: ApiConfig,
    /// How `vigil replay` maps a recorded file's columns to entities.
    #[serde(default)]
    pub replay: ReplayConfig,
    /// The file this config was loaded from (set by [`Config::load`]; what a reload reads).
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

/// `[replay]`
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayConfig {
    /// `COLUMN=ENTITY` pairs: `vigil replay` reads CSV column `COLUMN` as entity `ENTITY` (and
    /// only the listed columns). Empty: every value column, entity id = column name. The
    /// command line's `--entity` pairs replace this list.
    #[serde(default)]
    pub entities: Vec<String>,
}

/// `[agent]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Agent id: stamped on every uplinked record and used in MQTT client ids and topics.
    /// Letters, digits, `-`, `_` and `.` only.
    pub id: String,
    /// Directory for the agent's state (`state.redb`: commit log, windows, features, DLQ,
    /// outbox). Relative paths are relative to the config file's directory.
    pub data_dir: PathBuf,
    /// Log filter in `tracing` `EnvFilter` syntax (e.g. `info`, `vigil=debug`). The `RUST_LOG`
    /// environment variable overrides it.
    #[serde(default = "defaults::log")]
    pub log: String,
    /// Log line format: `text` (human-readable, for terminals and journald) or `json` (one JSON
    /// object per line, for log shippers).
    #[serde(default)]
    pub log_format: LogFormat,
}

/// See [`AgentConfig::log_format`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// `[api]`: the local HTTP server (see `vigil::api`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Serve `/metrics`, `/health`, `/ready`, the JSON API and the dashboard.
    #[serde(default = "defaults::yes")]
    pub enabled: bool,
    /// Address and port to listen on. The default binds to this machine only; use
    /// `0.0.0.0:9464` to let a plant network reach it. Port 0 picks a free port (logged).
    #[serde(default = "defaults::api_listen")]
    pub listen: std::net::SocketAddr,
    /// Bearer token required by every request that changes state (acknowledging an alert).
    /// Without it such requests are refused. Prefer the `VIGIL_API_TOKEN` environment variable.
    #[serde(default)]
    pub token: Option<Secret>,
    /// `/ready` answers 200 without a connected source (e.g. a gateway whose broker may be
    /// down for long periods). Otherwise, when MQTT subscriptions are configured, it waits for
    /// the MQTT ingest connection.
    #[serde(default)]
    pub sources_optional: bool,
    /// Recent values and scores kept per entity for the dashboard's sparklines (4 bytes each,
    /// twice per entity; 0 keeps none).
    #[serde(default = "defaults::sparkline_points")]
    pub sparkline_points: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            enabled: true,
            listen: defaults::api_listen(),
            token: None,
            sources_optional: false,
            sparkline_points: defaults::sparkline_points(),
        }
    }
}

/// `[mqtt]`: one broker connection.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// Broker host name or IP address.
    pub host: String,
    /// Broker port (1883 plain, 8883 TLS by convention).
    #[serde(default = "defaults::mqtt_port")]
    pub port: u16,
    /// MQTT client id. Must be stable across restarts: the persistent session (and the QoS 1
    /// messages queued while the agent was away) is bound to it. Default: `vigil-<agent.id>`.
    #[serde(default)]
    pub client_id: Option<String>,
    /// Keep-alive interval in seconds.
    #[serde(default = "defaults::keep_alive_s")]
    pub keep_alive_s: u64,
    /// `false` (the default and the only safe choice for QoS 1 ingest) keeps the broker-side
    /// session across disconnects (MQTT 5 `clean_start = false` plus `session_expiry_s`), so
    /// messages published while the agent is down are delivered when it comes back.
    #[serde(default)]
    pub clean_session: bool,
    /// How long the broker keeps the session (and queues messages for the agent) while the
    /// agent is disconnected, in seconds.
    #[serde(default = "defaults::session_expiry_s")]
    pub session_expiry_s: u32,
    /// MQTT 5 Receive Maximum: most QoS 1 messages the broker may have sent the agent without
    /// an acknowledgement (1–65535). Bounds the agent's memory for MQTT input whatever backlog
    /// the broker holds; larger values allow larger group commits.
    #[serde(default = "defaults::receive_maximum")]
    pub receive_maximum: u16,
    /// User name, if the broker requires one.
    #[serde(default)]
    pub username: Option<String>,
    /// Password. Prefer the `VIGIL_MQTT_PASSWORD` environment variable.
    #[serde(default)]
    pub password: Option<Secret>,
    /// First reconnect delay in milliseconds; doubles on every failed attempt.
    #[serde(default = "defaults::reconnect_min_ms")]
    pub reconnect_min_ms: u64,
    /// Upper bound of the reconnect delay in milliseconds.
    #[serde(default = "defaults::reconnect_max_ms")]
    pub reconnect_max_ms: u64,
    /// Largest MQTT packet accepted, in bytes. Larger payloads are dropped by the client and
    /// counted; payloads under this but over `validation.max_payload_bytes` go to the DLQ.
    #[serde(default = "defaults::max_packet_bytes")]
    pub max_packet_bytes: usize,
    /// Subscribe to the broker's own count of dropped messages
    /// (`$SYS/broker/publish/messages/dropped`; Mosquitto publishes it every `sys_interval`),
    /// export it as `vigil_mqtt_broker_dropped_messages` and raise an agent health alert when
    /// it grows. Brokers without `$SYS` ignore the subscription.
    #[serde(default = "defaults::yes")]
    pub broker_stats: bool,
    /// Sparkplug B host application id. When set, the agent acts as a Sparkplug 3.0 host
    /// application under this id on its ingest connection: its MQTT will is
    /// `spBv1.0/STATE/<id>` = `{"online":false,"timestamp":T}` (QoS 1, retained), and after
    /// every (re)connect it publishes `{"online":true,"timestamp":T}` there (same T, new per
    /// connection), then `online: false` again on an orderly shutdown. Edge nodes configured
    /// with this id as their primary host application publish only while it is online.
    /// Needs an `[[ingest.mqtt]]` subscription with `format = "sparkplug_b"`. A UTF-8 string
    /// without `/`, `+`, `#`. Unset (the default): no STATE is published.
    #[serde(default)]
    pub sparkplug_host_id: Option<String>,
    /// TLS via rustls. Without this table the connection is plain TCP.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
}

/// `[mqtt.tls]`, `[uplink.kafka.tls]`: TLS through rustls for a link that leaves the box.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file with the CA certificate(s) that signed the server's certificate.
    pub ca_file: PathBuf,
    /// PEM client certificate chain for mutual TLS (needs `client_key_file`).
    #[serde(default)]
    pub client_cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) for `client_cert_file`.
    #[serde(default)]
    pub client_key_file: Option<PathBuf>,
}

/// `[ingest]`
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    /// `[[ingest.mqtt]]`: MQTT subscriptions (needs `[mqtt]`).
    #[serde(default)]
    pub mqtt: Vec<MqttSubscription>,
    /// `[ingest.simulator]`: the built-in plant simulator.
    #[serde(default)]
    pub simulator: Option<SimulatorConfig>,
    /// `[[ingest.serial]]`: serial ports with firmware-bridge sensor nodes on them.
    #[serde(default)]
    pub serial: Vec<SerialPortConfig>,
    /// `[ingest.modbus]`: Modbus TCP / RTU devices polled by the agent (see [`modbus`]).
    #[serde(default)]
    pub modbus: modbus::ModbusConfig,
}

/// `[[ingest.serial]]`: one serial port (RS-232/RS-485 adapter, USB CDC device, pty) carrying
/// firmware-bridge frames from one or more sensor nodes; see [`crate::ingest::serial`].
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SerialPortConfig {
    /// Device path, e.g. `/dev/ttyUSB0` or a stable `/dev/serial/by-id/...` link.
    pub port: PathBuf,
    /// Line speed in baud (8 data bits, no parity, 1 stop bit, no flow control): one of 1200,
    /// 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400, 460800, 500000, 576000, 921600,
    /// 1000000, 1152000, 1500000, 2000000, 2500000, 3000000, 3500000, 4000000.
    #[serde(default = "defaults::baud")]
    pub baud: u32,
    /// Entity id template: `{node}` is the node id, `{channel}` the node's channel number,
    /// e.g. `line1.node{node}.ch{channel}`.
    #[serde(default = "defaults::serial_entity")]
    pub entity: String,
    /// Largest frame accepted, in bytes on the wire (the nodes' `MAX_FRAME`). Longer frames go
    /// to the DLQ (`oversized`).
    #[serde(default = "defaults::max_frame_bytes")]
    pub max_frame_bytes: usize,
    /// Milliseconds between attempts to open the port again after it failed or disappeared
    /// (e.g. a USB adapter unplugged).
    #[serde(default = "defaults::reopen_ms")]
    pub reopen_ms: u64,
}

/// `[[ingest.mqtt]]`: one subscription and how its messages become readings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MqttSubscription {
    /// Topic template: an MQTT topic filter where a level may be a named placeholder, e.g.
    /// `plant/{line}/{sensor}/value`. Placeholders subscribe as `+`; `#` is allowed as the last
    /// level. The placeholders' values are available to `entity`.
    pub topic: String,
    /// Entity id template built from the topic's placeholders, e.g. `{line}.{sensor}`.
    /// Default: the whole topic. When the payload carries an entity field
    /// (`fields.entity`), that field wins.
    #[serde(default)]
    pub entity: Option<String>,
    /// Payload format: `json` (one object), `json_array` (an array of objects), `cbor` (one
    /// map or an array of maps, with the same field names as JSON) or `number` (the payload is
    /// a bare decimal number; event time = receive time).
    #[serde(default)]
    pub format: PayloadFormat,
    /// `[ingest.mqtt.fields]`: field names inside JSON/CBOR objects (defaults when absent; not
    /// used by `sparkplug_b`, which refuses it).
    #[serde(default)]
    pub fields: Option<FieldNames>,
}

/// Payload decoders; see [`crate::ingest::decode`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PayloadFormat {
    #[default]
    Json,
    JsonArray,
    Cbor,
    Number,
    /// Sparkplug B (protobuf) on `spBv1.0/#`: stateful (aliases, sequence numbers, online
    /// state), see `ingest::sparkplug`; the entity id comes from group/node/device/metric and
    /// `entity` / `fields` are not used.
    SparkplugB,
}

/// `[ingest.mqtt.fields]`: where to find each part of a reading in an object payload.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FieldNames {
    /// The value field (required in every object).
    #[serde(default = "defaults::field_value")]
    pub value: String,
    /// The event-time field: integer or float epoch in `time_unit`, or an RFC 3339 string.
    /// Missing → the message is rejected (`missing_field`), unless `time_optional` is true, in
    /// which case the receive time is used.
    #[serde(default = "defaults::field_time")]
    pub time: String,
    /// Unit of numeric timestamps: `ms`, `s` or `us`.
    #[serde(default)]
    pub time_unit: TimeUnit,
    /// Use the receive time when the time field is absent.
    #[serde(default)]
    pub time_optional: bool,
    /// Optional entity-id field (overrides the topic template).
    #[serde(default = "defaults::field_entity")]
    pub entity: String,
    /// Optional quality field (`good` / `uncertain` / `bad`, or OPC-style 192 / 64 / 0).
    #[serde(default = "defaults::field_quality")]
    pub quality: String,
    /// Optional publisher sequence-number field.
    #[serde(default = "defaults::field_seq")]
    pub seq: String,
}

impl Default for FieldNames {
    fn default() -> Self {
        FieldNames {
            value: defaults::field_value(),
            time: defaults::field_time(),
            time_unit: TimeUnit::default(),
            time_optional: false,
            entity: defaults::field_entity(),
            quality: defaults::field_quality(),
            seq: defaults::field_seq(),
        }
    }
}

/// Unit of numeric timestamps in payloads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeUnit {
    #[default]
    Ms,
    S,
    Us,
}

/// `[validation]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ValidationConfig {
    /// Payloads larger than this go to the DLQ (`oversized`) without being decoded.
    #[serde(default = "defaults::max_payload_bytes")]
    pub max_payload_bytes: usize,
    /// Readings whose event time is more than this many seconds ahead of the gateway clock go
    /// to the DLQ (`timestamp_skew`).
    #[serde(default = "defaults::max_future_skew_s")]
    pub max_future_skew_s: u64,
    /// Readings whose event time is more than this many seconds behind the gateway clock go to
    /// the DLQ (`timestamp_skew`). Store-and-forward publishers may need days.
    #[serde(default = "defaults::max_past_skew_s")]
    pub max_past_skew_s: u64,
    /// When non-empty, only these entity ids are accepted; others go to the DLQ
    /// (`unknown_entity`). Empty = accept any entity.
    #[serde(default)]
    pub known_entities: Vec<String>,
    /// Readings whose absolute value exceeds this go to the DLQ (`out_of_range`), from every
    /// source. The default 1e30 passes any physical quantity in any unit a plant uses (even
    /// Avogadro's 6.0e23) and refuses what is garbage — an uninitialised float32 Modbus register
    /// reads 3.4e38 — and it keeps the sums and variances every window, baseline and PCA keeps
    /// finite (a few thousand values near 1e308 sum to infinity; squares of 1e30 are 1e60).
    /// Tighten it per site to catch unit or scaling mistakes. Must be positive and finite.
    #[serde(default = "defaults::max_abs_value")]
    pub max_abs_value: f64,
}

impl Default for ValidationConfig {
    fn default() -> Self {
        ValidationConfig {
            max_payload_bytes: defaults::max_payload_bytes(),
            max_future_skew_s: defaults::max_future_skew_s(),
            max_past_skew_s: defaults::max_past_skew_s(),
            known_entities: Vec::new(),
            max_abs_value: defaults::max_abs_value(),
        }
    }
}

/// `[pipeline]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Number of pipeline workers. Readings are routed to a worker by a hash of the entity id,
    /// so one entity's readings are always handled by one worker, in order.
    #[serde(default = "defaults::workers")]
    pub workers: usize,
    /// Longest time, in milliseconds, that ingested readings wait before their commit-log
    /// write transaction is committed (group commit). 0 = commit as soon as the writer is free.
    #[serde(default)]
    pub commit_interval_ms: u64,
    /// Interval, in milliseconds, between checkpoints of window and feature state to redb.
    /// After a crash, readings newer than the last checkpoint are replayed from the commit log.
    #[serde(default = "defaults::checkpoint_interval_ms")]
    pub checkpoint_interval_ms: u64,
    /// Most entity states one worker writes per checkpoint (those changed longest ago first).
    /// Bounds the size of a checkpoint's write, so thousands of active sensors do not stall
    /// ingest; the rest follow in the next checkpoints.
    #[serde(default = "defaults::checkpoint_max_entities")]
    pub checkpoint_max_entities: usize,
    /// Sliding windows.
    #[serde(default)]
    pub window: WindowConfig,
    /// `[pipeline.aggregate]`: tumbling-window aggregates.
    #[serde(default)]
    pub aggregate: AggregateConfig,
    /// `[pipeline.session]`: activity sessions; absent = none.
    #[serde(default)]
    pub session: Option<SessionConfig>,
    /// `[[pipeline.assets]]`: machines whose sensors a multivariate model scores together.
    #[serde(default)]
    pub assets: Vec<AssetConfig>,
    /// `[pipeline.warmup_pca]`: each asset's long view checked against its own warm-up (absent
    /// = off: assets are scored by the model alone).
    #[serde(default)]
    pub warmup_pca: Option<WarmupPcaConfig>,
}

/// `[pipeline.warmup_pca]`: a second, longer view of every asset (`[[pipeline.assets]]`),
/// checked against the asset's own warm-up and added to the model's evidence
/// ([`crate::pipeline::warmup_pca`]). The long view is the channels' mean over `windows`
/// back-to-back windows; a PCA of it is fitted on the asset's warm-up (the windows that close
/// while the baselines fold), and each later window adds
/// `weight · (T² / T²_limit + Q / Q_limit)` (Hotelling's T² and the squared prediction error,
/// each over its `limit_quantile` on the warm-up) to `model_weight · error / error_scale`; the
/// score is `e / (1 + e)` of that sum, so the review threshold 0.5 is a sum of 1.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WarmupPcaConfig {
    /// Back-to-back windows averaged into the long view (span = `windows · size_ms`;
    /// `pipeline.window.size_ms` must be a multiple of `hop_ms`). Between 1 and 64, and the
    /// window means one long view spans, `(windows − 1) · size_ms / hop_ms + 1`, at most 2 048
    /// (every asset keeps them; the default 32 s window every 1 s allows all 64).
    #[serde(default = "defaults::warmup_pca_windows")]
    pub windows: usize,
    /// Share of the warm-up's variance the retained principal components explain, in (0, 1].
    #[serde(default = "defaults::warmup_pca_variance")]
    pub variance: f64,
    /// Quantile of T² and of Q over the warm-up's long views that each is divided by, in (0, 1].
    #[serde(default = "defaults::warmup_pca_limit_quantile")]
    pub limit_quantile: f64,
    /// Weight of `T² / T²_limit + Q / Q_limit` in the evidence (>= 0).
    #[serde(default = "defaults::warmup_pca_weight")]
    pub weight: f64,
    /// Weight of the model's `error / error_scale` in the evidence (>= 0; 1 with `weight = 0`
    /// is the model alone).
    #[serde(default = "defaults::warmup_pca_model_weight")]
    pub model_weight: f64,
}

/// `[[pipeline.assets]]`: one machine whose channels (entity ids) are joined onto a common time
/// grid and scored by a multivariate model (`kind = "multivariate"` in its manifest) as one
/// window. Only used with such a model; the asset's scores and alerts carry the asset `id` as
/// their entity.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AssetConfig {
    /// Asset id (used as the entity of its scores and alerts; must not be a channel's entity).
    pub id: String,
    /// The entity ids of the asset's channels, in the order of the model's `input.channels`.
    pub channels: Vec<String>,
    /// The channel (one of `channels`) whose readings open and close the asset's activity
    /// sessions with the `[pipeline.session]` condition and gap (e.g. the motor current). The
    /// session record carries the asset id, this channel's statistics, and the highest score
    /// and alert changes of the asset's windows. None = no asset sessions.
    #[serde(default)]
    pub session_channel: Option<String>,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            workers: defaults::workers(),
            commit_interval_ms: 0,
            checkpoint_interval_ms: defaults::checkpoint_interval_ms(),
            checkpoint_max_entities: defaults::checkpoint_max_entities(),
            window: WindowConfig::default(),
            aggregate: AggregateConfig::default(),
            session: None,
            assets: Vec::new(),
            warmup_pca: None,
        }
    }
}

/// `[pipeline.aggregate]`: per-entity event-time tumbling windows and their statistics
/// (`aggregate` records). They use the sliding windows' `allowed_lateness_ms` and
/// `late_policy` (see [`crate::pipeline::aggregate`]).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AggregateConfig {
    /// Window lengths in milliseconds (each > 0, windows aligned to multiples of it since the
    /// epoch), e.g. `[1000, 60000, 900000]`. Empty = no aggregates.
    #[serde(default)]
    pub sizes_ms: Vec<u64>,
    /// Quantile ranks reported per window, each in [0, 1].
    #[serde(default = "defaults::quantiles")]
    pub quantiles: Vec<f64>,
    /// Relative accuracy of the quantile sketch: a reported quantile is within this fraction
    /// of the true value (e.g. 0.01 = 1 %). Smaller = more memory per window.
    #[serde(default = "defaults::sketch_accuracy")]
    pub sketch_accuracy: f64,
}

impl Default for AggregateConfig {
    fn default() -> Self {
        AggregateConfig { sizes_ms: Vec::new(), quantiles: defaults::quantiles(), sketch_accuracy: defaults::sketch_accuracy() }
    }
}

/// `[pipeline.session]`: activity sessions (`session` records) per entity, and per asset with a
/// `session_channel`. A session opens at the first reading that meets the condition (`above`
/// and/or `below`) and closes when no reading met it for `gap_ms` of event time (see
/// [`crate::pipeline::session`]).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SessionConfig {
    /// Entities that have sessions: glob patterns (`*` matches any run of characters).
    #[serde(default = "defaults::all_entities")]
    pub entities: Vec<String>,
    /// Active while the value is above this.
    #[serde(default)]
    pub above: Option<f64>,
    /// Active while the value is below this.
    #[serde(default)]
    pub below: Option<f64>,
    /// Event time without an active reading after which the session is closed (ms).
    #[serde(default = "defaults::session_gap_ms")]
    pub gap_ms: u64,
}

/// `[pipeline.window]`: per-entity event-time sliding windows.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WindowConfig {
    /// Window length in milliseconds of event time. The window is resampled onto the model's
    /// input width (e.g. 32 slots of `size_ms / 32`).
    #[serde(default = "defaults::window_size_ms")]
    pub size_ms: u64,
    /// Distance between consecutive window ends, in milliseconds. Window ends are aligned to
    /// `offset_ms` + multiples of `hop_ms` since the epoch; a window is emitted only when it
    /// holds a new reading (one per reading for a sensor slower than the hop).
    #[serde(default = "defaults::window_hop_ms")]
    pub hop_ms: u64,
    /// Phase of the window grid in milliseconds (taken modulo `hop_ms`; default 0). A window
    /// `(end − size, end]` holds the reading at its end, so with the sensors' sampling phase
    /// here (a 5-minute sensor reporting at :02, :07, … → 120000) and lateness 0 each reading
    /// closes the window it is the newest of at once, instead of one sampling period later.
    #[serde(default)]
    pub offset_ms: u64,
    /// Allowed lateness in milliseconds: an entity's watermark is its largest event time seen
    /// minus this. A window `(end − size, end]` is final once the watermark reaches its end, and
    /// emitted then if it holds a new reading.
    #[serde(default = "defaults::allowed_lateness_ms")]
    pub allowed_lateness_ms: u64,
    /// What to do with a reading at or before the last window end its entity's watermark has
    /// reached (emitted, or skipped for want of a new reading):
    /// `drop` (count it), `dlq` (count it and store it in the DLQ with reason `late`) or
    /// `process` (count it and add it to the windows not emitted yet: it is scored with the
    /// next one that also holds a new reading).
    #[serde(default)]
    pub late_policy: LatePolicy,
}

impl Default for WindowConfig {
    fn default() -> Self {
        WindowConfig {
            size_ms: defaults::window_size_ms(),
            hop_ms: defaults::window_hop_ms(),
            offset_ms: 0,
            allowed_lateness_ms: defaults::allowed_lateness_ms(),
            late_policy: LatePolicy::default(),
        }
    }
}

/// See [`WindowConfig::late_policy`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LatePolicy {
    Drop,
    #[default]
    Dlq,
    Process,
}

/// See [`AlertsConfig::score`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ScoreMode {
    #[default]
    Model,
    EntityRelative,
    Novelty,
}

/// `[inference]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InferenceConfig {
    /// Model folder holding `manifest.json`, the `.tflite` file and golden vectors.
    /// Relative to the config file's directory.
    pub model_dir: PathBuf,
    /// Largest micro-batch: at most this many windows per interpreter invoke (8–32 is typical).
    #[serde(default = "defaults::max_batch")]
    pub max_batch: usize,
    /// Longest time in milliseconds the first window of a batch waits for more windows.
    #[serde(default = "defaults::max_wait_ms")]
    pub max_wait_ms: u64,
    /// Verify the model's golden vectors at start-up and refuse to start if they fail.
    #[serde(default = "defaults::yes")]
    pub verify_golden: bool,
}

/// `[models]`: the model registry and deployments (see [`crate::inference::lifecycle`]).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModelsConfig {
    /// Registry folder: versions side by side as `<registry>/<name>/<version>/` (manifest,
    /// model file, golden vectors). Watched: a version folder that appears (copy it under a
    /// name starting with `.` and rename it into place) is verified and deployed in
    /// `models.deploy` mode; `POST /api/models` uploads into it. Absent: no registry, the agent
    /// runs `inference.model_dir` only. Relative to the config file's directory.
    #[serde(default)]
    pub registry: Option<PathBuf>,
    /// How often the registry folder is scanned, in milliseconds. A new folder is loaded once
    /// two scans in a row saw it unchanged.
    #[serde(default = "defaults::scan_interval_ms")]
    pub scan_interval_ms: u64,
    /// Mode of a version found in the registry: `active` (replaces the running model between
    /// two batches), `shadow` (scores every window beside the active model, never alerts) or
    /// `canary` (decides for `canary_fraction` of the entities).
    #[serde(default)]
    pub deploy: DeployMode,
    /// Fraction of entities (0..=1) a `canary` candidate decides for, chosen by a stable hash
    /// of the entity id and the candidate's sha256 (the same entities across restarts).
    #[serde(default = "defaults::canary_fraction")]
    pub canary_fraction: f64,
    /// Windows a candidate must have scored before the latency and alert-rate rollback rules
    /// are checked (a candidate that errors is demoted at once).
    #[serde(default = "defaults::rollback_min_windows")]
    pub rollback_min_windows: u64,
    /// Rollback when the candidate's mean inference time per window exceeds this many
    /// microseconds (0 = no latency rule).
    #[serde(default)]
    pub latency_budget_us: f64,
    /// Rollback when the candidate's alert-band rate differs from the active model's on the
    /// same windows by more than this (absolute difference of fractions, e.g. 0.05 = five
    /// percentage points; 1 = no alert-rate rule).
    #[serde(default = "defaults::alert_rate_tolerance")]
    pub alert_rate_tolerance: f64,
}

impl Default for ModelsConfig {
    fn default() -> Self {
        ModelsConfig {
            registry: None,
            scan_interval_ms: defaults::scan_interval_ms(),
            deploy: DeployMode::default(),
            canary_fraction: defaults::canary_fraction(),
            rollback_min_windows: defaults::rollback_min_windows(),
            latency_budget_us: 0.0,
            alert_rate_tolerance: defaults::alert_rate_tolerance(),
        }
    }
}

/// How a model version takes part in scoring.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeployMode {
    /// Decides every window (replaces the active model).
    Active,
    /// Scores every window beside the active model; its scores are uplinked and compared,
    /// never alert.
    #[default]
    Shadow,
    /// Decides for a fraction of the entities (`models.canary_fraction`).
    Canary,
}

impl DeployMode {
    pub fn as_str(self) -> &'static str {
        match self {
            DeployMode::Active => "active",
            DeployMode::Shadow => "shadow",
            DeployMode::Canary => "canary",
        }
    }
}

/// `[alerts]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// What a window's score is: `model` (the model's reconstruction-error score, as the
    /// manifest defines it), `entity_relative` (the error's novelty against the entity's own
    /// error history: see [`crate::alerts::ErrorBaseline`]) or `novelty` (the newest readings'
    /// reach beyond the entity's range, combined with `entity_relative`, with a sharp onset:
    /// see [`crate::alerts::Novelty`]). Thresholds apply to this score.
    #[serde(default)]
    pub score: ScoreMode,
    /// Score at or above which a window is in the review band. Default: the model manifest's.
    #[serde(default)]
    pub review_threshold: Option<f64>,
    /// Score at or above which a window is in the alert band. Default: the model manifest's.
    #[serde(default)]
    pub alert_threshold: Option<f64>,
    /// Raise an alert after this many consecutive alert-band windows (emitted windows: one per
    /// hop, or per reading for a sensor slower than the hop).
    #[serde(default = "defaults::raise_after")]
    pub raise_after: u32,
    /// Clear a raised alert after this many consecutive windows below the alert band (counted
    /// as for `raise_after`).
    #[serde(default = "defaults::clear_after")]
    pub clear_after: u32,
    /// After a clear, do not raise again for this entity for this many seconds (event time).
    /// Also the minimum spacing of review events per entity.
    #[serde(default = "defaults::cooldown_s")]
    pub cooldown_s: u64,
    /// How many windows back `alerts.score = "novelty"` remembers an entity's values (its
    /// range is the union of [`crate::alerts::NOVELTY_BLOCKS`] blocks of `novelty_horizon / 8`
    /// windows; the oldest block drops out when a new one starts), so one wide excursion does
    /// not blunt the entity for good. 0 remembers every value ever shown. Default 8000: the
    /// shortest of 1000–16 000 that cost nothing on the even half of NAB (README, "Replay and
    /// evaluation"); in time it is `novelty_horizon × pipeline.window.hop_ms` (× the sampling
    /// interval for a sensor slower than the hop: only windows with a new reading count).
    #[serde(default = "defaults::novelty_horizon")]
    pub novelty_horizon: u32,
    /// MQTT topic for alert raise/clear messages (JSON). `{agent}` and `{entity}` are replaced.
    #[serde(default = "defaults::alert_topic")]
    pub topic: String,
    /// MQTT topic for review-band events (JSON).
    #[serde(default = "defaults::review_topic")]
    pub review_topic: String,
    /// Most items of the human review queue (review-band windows awaiting a label, and labelled
    /// ones until they age out; persisted in `state.redb`). Beyond it the oldest item is dropped
    /// and an unlabelled one counted in `vigil_review_queue_dropped_total`. Needs a restart.
    #[serde(default = "defaults::review_queue_capacity")]
    pub review_queue_capacity: u64,
    /// Print each alert and clear as one line on standard output (besides the log).
    #[serde(default = "defaults::yes")]
    pub print: bool,
    /// Raise a `model_drift` agent health alert when the population stability index of the
    /// live model inputs or scores against the model manifest's distributions exceeds this
    /// (0.25 is the usual "significant shift"). 0 disables the alert (the metric stays).
    #[serde(default = "defaults::drift_psi")]
    pub drift_psi: f64,
    /// Scored windows needed before drift is reported or alerted on.
    #[serde(default = "defaults::drift_min_windows")]
    pub drift_min_windows: u64,
    /// `[[alerts.webhook]]`: HTTP(S) endpoints alerts are POSTed to (see `alerts::webhook`).
    #[serde(default)]
    pub webhook: Vec<WebhookConfig>,
    /// `[[alerts.route]]`: which alerts go to which webhooks. An alert goes to every webhook
    /// named by any route it matches.
    #[serde(default)]
    pub route: Vec<RouteConfig>,
}

/// `[[alerts.webhook]]`: one HTTP endpoint.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Name used by routes, in metrics (`sink="webhook:<name>"`) and in the outbox. Renaming a
    /// webhook makes it a new one (undelivered alerts of the old name are dropped at start).
    pub name: String,
    /// `https://...` (rustls, Mozilla roots or `ca_file`) or `http://...` (local only).
    /// Treated as a secret (Slack webhook URLs are credentials): never logged.
    pub url: Secret,
    /// Body template: `json` (the alert as JSON), `slack` (Slack incoming webhook),
    /// `pagerduty` (PagerDuty Events API v2: trigger on raise, resolve on clear, one dedup key
    /// per agent and entity), or `file:PATH` (your own; placeholders below in config/vigil.toml).
    #[serde(default = "defaults::webhook_template")]
    pub template: String,
    /// `notify` (chat, e-mail gateways: may receive review-band events) or `operational` (an
    /// API that acts — paging, work orders: only alert-band raises and clears).
    #[serde(default)]
    pub kind: WebhookKind,
    /// PagerDuty integration key (`{routing_key}` in templates). Prefer the environment
    /// variable `VIGIL_WEBHOOK_<NAME>_ROUTING_KEY` (name upper-cased, `-` → `_`).
    #[serde(default)]
    pub routing_key: Option<Secret>,
    /// Extra PEM CA certificates to trust (an on-site HTTPS server with a private CA).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Timeout of one request (connect + response), in milliseconds.
    #[serde(default = "defaults::webhook_timeout_ms")]
    pub timeout_ms: u64,
    /// Most requests per minute to this endpoint; more wait (they are delayed, never dropped).
    #[serde(default = "defaults::webhook_rate_per_min")]
    pub max_per_minute: u32,
}

/// See [`WebhookConfig::kind`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookKind {
    #[default]
    Notify,
    Operational,
}

/// `[[alerts.route]]`: a routing rule.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Webhook names this rule sends to.
    pub to: Vec<String>,
    /// Record kinds: `raised`, `cleared` (alert band) and `review` (review band).
    #[serde(default = "defaults::route_kinds")]
    pub kinds: Vec<String>,
    /// Entity globs (`*` any run of characters, `?` one character), e.g. `line1.*`.
    #[serde(default = "defaults::route_entities")]
    pub entities: Vec<String>,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            score: ScoreMode::default(),
            review_threshold: None,
            alert_threshold: None,
            raise_after: defaults::raise_after(),
            clear_after: defaults::clear_after(),
            cooldown_s: defaults::cooldown_s(),
            novelty_horizon: defaults::novelty_horizon(),
            topic: defaults::alert_topic(),
            review_topic: defaults::review_topic(),
            review_queue_capacity: defaults::review_queue_capacity(),
            print: true,
            drift_psi: defaults::drift_psi(),
            drift_min_windows: defaults::drift_min_windows(),
            webhook: Vec::new(),
            route: Vec::new(),
        }
    }
}

/// `[uplink]`
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UplinkConfig {
    /// Outbox size limit in bytes (0 = unlimited) and what happens when it is reached.
    #[serde(default)]
    pub outbox: OutboxSettings,
    /// `[uplink.directory]`: deliver to files in a local directory.
    #[serde(default)]
    pub directory: Option<DirectorySinkConfig>,
    /// `[uplink.kafka]`: deliver to Kafka topics.
    #[serde(default)]
    pub kafka: Option<KafkaSinkSettings>,
    /// `[uplink.s3]`: deliver to an S3 (or S3-compatible) data lake.
    #[serde(default)]
    pub s3: Option<S3SinkSettings>,
    /// `[uplink.heartbeat]`: periodic agent heartbeat records.
    #[serde(default)]
    pub heartbeat: HeartbeatSettings,
    /// `[uplink.policy]`: which records of each kind are uplinked.
    #[serde(default)]
    pub policy: UplinkPolicyConfig,
}

/// `[uplink.policy]`: which records go into the outbox (and so to every sink), per kind.
/// Alerts, dead letters and heartbeats always do. Readings are committed locally before they
/// are acknowledged whatever this says (see [`crate::uplink_policy`]).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UplinkPolicyConfig {
    /// Raw readings: `always`, `never` or `around_alerts` (only those of an alerting entity
    /// from `alert_before_ms` before the alerting window to `alert_after_ms` after its end).
    #[serde(default)]
    pub reading: ReadingPolicy,
    /// Model scores: `always` or `never`.
    #[serde(default)]
    pub score: KindPolicy,
    /// Tumbling-window aggregates: `always` or `never`.
    #[serde(default)]
    pub aggregate: KindPolicy,
    /// Sessions: `always` or `never`.
    #[serde(default)]
    pub session: KindPolicy,
    /// `around_alerts`: readings uplinked from this long (ms of event time) before the start of
    /// the window that raised the alert.
    #[serde(default = "defaults::alert_span_ms")]
    pub alert_before_ms: u64,
    /// `around_alerts`: readings uplinked until this long (ms) after the end of that window.
    #[serde(default = "defaults::alert_span_ms")]
    pub alert_after_ms: u64,
}

impl Default for UplinkPolicyConfig {
    fn default() -> Self {
        UplinkPolicyConfig {
            reading: ReadingPolicy::default(),
            score: KindPolicy::default(),
            aggregate: KindPolicy::default(),
            session: KindPolicy::default(),
            alert_before_ms: defaults::alert_span_ms(),
            alert_after_ms: defaults::alert_span_ms(),
        }
    }
}

/// See [`UplinkPolicyConfig::reading`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadingPolicy {
    #[default]
    Always,
    Never,
    AroundAlerts,
}

/// See [`UplinkPolicyConfig`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KindPolicy {
    #[default]
    Always,
    Never,
}

/// Record kinds, as named in `kinds = [...]` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordKind {
    Reading,
    Score,
    Alert,
    Dlq,
    Heartbeat,
    Aggregate,
    Session,
}

/// `[uplink.kafka]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSinkSettings {
    /// Bootstrap brokers, `host:port`.
    pub brokers: Vec<String>,
    /// Kafka client id; default `vigil-<agent id>`.
    #[serde(default)]
    pub client_id: Option<String>,
    /// `[uplink.kafka.topics]`: topic per record kind; a kind without a topic is not sent to
    /// Kafka.
    pub topics: KafkaTopicSettings,
    /// Message value encoding: `cbor` (the outbox envelope, byte for byte), `json`, or `avro`
    /// (Confluent wire format; needs `[uplink.kafka.avro]`).
    #[serde(default)]
    pub encoding: ValueEncodingSetting,
    /// `[uplink.kafka.avro]`: where the Avro encoding gets its schema ids.
    #[serde(default)]
    pub avro: Option<AvroSettings>,
    /// Batch compression: `none`, `lz4` or `zstd`.
    #[serde(default)]
    pub compression: CompressionSetting,
    /// Create missing topics with this many partitions (replication factor
    /// `create_replication_factor`). 0 = never create (a missing topic is retried until it
    /// exists).
    #[serde(default)]
    pub create_partitions: i32,
    /// Replication factor of topics the agent creates.
    #[serde(default = "defaults::replication_factor")]
    pub create_replication_factor: i16,
    /// Bound on one produce or metadata request, including the client's retries (ms).
    #[serde(default = "defaults::request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Most record bytes per produce request (before compression).
    #[serde(default = "defaults::max_request_bytes")]
    pub max_request_bytes: usize,
    /// Most records the drain loop hands the producer at once (split into requests of at most
    /// `max_request_bytes`). Small batches are held up to `uplink.outbox.linger_ms`.
    #[serde(default = "defaults::dir_batch")]
    pub max_batch_records: usize,
    /// `[uplink.kafka.tls]`: TLS via rustls. Without it the connection is plaintext.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// `[uplink.kafka.sasl]`: SASL authentication.
    #[serde(default)]
    pub sasl: Option<SaslSettings>,
}

/// `[uplink.kafka.topics]`
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaTopicSettings {
    #[serde(default)]
    pub reading: Option<String>,
    #[serde(default)]
    pub score: Option<String>,
    #[serde(default)]
    pub alert: Option<String>,
    #[serde(default)]
    pub dlq: Option<String>,
    #[serde(default)]
    pub heartbeat: Option<String>,
    #[serde(default)]
    pub aggregate: Option<String>,
    #[serde(default)]
    pub session: Option<String>,
}

/// See [`KafkaSinkSettings::encoding`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueEncodingSetting {
    #[default]
    Cbor,
    Json,
    Avro,
}

/// `[uplink.kafka.avro]`: schema ids for `encoding = "avro"`. Values are Avro datums of the
/// record schema `cloud-uplink/schema/vigil-record.avsc` in the Confluent wire format (magic byte
/// 0, 4-byte big-endian schema id), readable by any Confluent-compatible Avro deserializer.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AvroSettings {
    /// Base URL of a Confluent-compatible schema registry (Confluent, Karapace, Apicurio's
    /// `/apis/ccompat/v7`). The agent registers the record schema under the subject
    /// `<topic>-value` before producing to a topic (idempotent; the registry's compatibility
    /// rules apply). `https://` needs `[uplink.kafka.avro.tls]`.
    #[serde(default)]
    pub registry_url: Option<String>,
    /// User for HTTP basic authentication at the registry (e.g. a Confluent Cloud API key).
    #[serde(default)]
    pub registry_username: Option<String>,
    /// Password for `registry_username`. Prefer `VIGIL_SCHEMA_REGISTRY_PASSWORD`.
    #[serde(default)]
    pub registry_password: Option<Secret>,
    /// Bound on one registry request (ms).
    #[serde(default = "defaults::request_timeout_ms")]
    pub registry_timeout_ms: u64,
    /// `[uplink.kafka.avro.tls]`: TLS (rustls) to the registry.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// `[uplink.kafka.avro.schema_ids]`: topic → schema id, for schemas registered beforehand
    /// (no registry reachable from the site). Wins over the registry for its topics; without a
    /// registry every configured topic needs one.
    #[serde(default)]
    pub schema_ids: std::collections::BTreeMap<String, u32>,
}

/// See [`KafkaSinkSettings::compression`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CompressionSetting {
    None,
    #[default]
    Lz4,
    Zstd,
}

/// `[uplink.kafka.sasl]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SaslSettings {
    /// `plain`, `scram-sha-256` or `scram-sha-512`. Use PLAIN only over TLS.
    pub mechanism: SaslMechanism,
    /// User name.
    pub username: String,
    /// Password. Prefer the `VIGIL_KAFKA_PASSWORD` environment variable.
    #[serde(default)]
    pub password: Option<Secret>,
}

/// See [`SaslSettings::mechanism`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SaslMechanism {
    Plain,
    ScramSha256,
    ScramSha512,
}

/// `[uplink.s3]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct S3SinkSettings {
    /// Bucket name.
    pub bucket: String,
    /// Key prefix inside the bucket (objects go to
    /// `PREFIX/site=…/agent=…/kind=…/date=YYYY-MM-DD/hour=HH/…`).
    #[serde(default = "defaults::s3_prefix")]
    pub prefix: String,
    /// Site name, the `site=` partition (e.g. the plant).
    pub site: String,
    /// Signing region.
    #[serde(default = "defaults::s3_region")]
    pub region: String,
    /// Endpoint URL of an S3-compatible store (MinIO, Ceph…); unset = AWS S3.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Access key id (or the `VIGIL_S3_ACCESS_KEY_ID` environment variable). Without keys,
    /// requests are unsigned.
    #[serde(default)]
    pub access_key_id: Option<String>,
    /// Secret key. Prefer the `VIGIL_S3_SECRET_ACCESS_KEY` environment variable.
    #[serde(default)]
    pub secret_access_key: Option<Secret>,
    /// Allow a plain `http://` endpoint. Only for a store on the same box or a test.
    #[serde(default)]
    pub allow_http: bool,
    /// PEM file with extra CA certificates to trust (a plant's private CA).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Record kinds to store; default all.
    #[serde(default = "defaults::all_kinds")]
    pub kinds: Vec<RecordKind>,
    /// Most records per object.
    #[serde(default = "defaults::s3_max_object_records")]
    pub max_object_records: usize,
    /// Most record bytes (CBOR) per object; objects are zstd-compressed JSON lines.
    #[serde(default = "defaults::s3_max_object_bytes")]
    pub max_object_bytes: usize,
    /// Longest time (s) a not-yet-full object waits for more records before it is written.
    #[serde(default = "defaults::s3_max_object_age_s")]
    pub max_object_age_s: u64,
    /// Objects larger than this (compressed bytes) use a multipart upload with parts of this
    /// size (at least 5 MiB, S3's minimum part size).
    #[serde(default = "defaults::s3_multipart_threshold_bytes")]
    pub multipart_threshold_bytes: usize,
    /// Bound on one request including the client's retries (ms).
    #[serde(default = "defaults::s3_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// zstd compression level, 1 (fastest) to 19.
    #[serde(default = "defaults::zstd_level")]
    pub zstd_level: i32,
}

/// `[uplink.heartbeat]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatSettings {
    /// Seconds between heartbeat records (uptime and counters such as outbox drops); 0 = off.
    #[serde(default = "defaults::heartbeat_interval_s")]
    pub interval_s: u64,
}

impl Default for HeartbeatSettings {
    fn default() -> Self {
        HeartbeatSettings { interval_s: defaults::heartbeat_interval_s() }
    }
}

/// `[uplink.outbox]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OutboxSettings {
    /// Disk quota for undelivered records in bytes; 0 = unlimited.
    #[serde(default)]
    pub quota_bytes: u64,
    /// `drop_oldest_readings` (keep scores, alerts and DLQ records; count drops) or
    /// `backpressure` (stop acknowledging input until sinks catch up).
    #[serde(default)]
    pub when_full: WhenFull,
    /// Milliseconds a sink holds a not-yet-full batch so it can grow (fewer, larger files and
    /// requests). Alerts are never held.
    #[serde(default = "defaults::linger_ms")]
    pub linger_ms: u64,
}

impl Default for OutboxSettings {
    fn default() -> Self {
        OutboxSettings { quota_bytes: 0, when_full: WhenFull::default(), linger_ms: defaults::linger_ms() }
    }
}

/// See [`OutboxSettings::when_full`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    #[default]
    DropOldestReadings,
    Backpressure,
}

/// `[uplink.directory]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DirectorySinkConfig {
    /// Target directory (created if missing). Relative to the config file's directory.
    pub path: PathBuf,
    /// Most records per file.
    #[serde(default = "defaults::dir_batch")]
    pub max_batch: usize,
}

mod defaults {
    pub fn scan_interval_ms() -> u64 {
        1000
    }
    pub fn canary_fraction() -> f64 {
        0.1
    }
    pub fn rollback_min_windows() -> u64 {
        200
    }
    pub fn alert_rate_tolerance() -> f64 {
        0.05
    }
    pub fn log() -> String {
        "info".into()
    }
    pub fn api_listen() -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], 9464))
    }
    pub fn sparkline_points() -> usize {
        16
    }
    pub fn drift_psi() -> f64 {
        0.25
    }
    pub fn drift_min_windows() -> u64 {
        1000
    }
    pub fn webhook_template() -> String {
        "json".into()
    }
    pub fn webhook_timeout_ms() -> u64 {
        10_000
    }
    pub fn webhook_rate_per_min() -> u32 {
        30
    }
    pub fn route_kinds() -> Vec<String> {
        vec!["raised".into(), "cleared".into()]
    }
    pub fn route_entities() -> Vec<String> {
        vec!["*".into()]
    }
    pub fn mqtt_port() -> u16 {
        1883
    }
    pub fn keep_alive_s() -> u64 {
        30
    }
    pub fn session_expiry_s() -> u32 {
        7 * 24 * 3600
    }
    pub fn receive_maximum() -> u16 {
        1000
    }
    pub fn reconnect_min_ms() -> u64 {
        200
    }
    pub fn reconnect_max_ms() -> u64 {
        30_000
    }
    pub fn max_packet_bytes() -> usize {
        1 << 20
    }
    pub fn field_value() -> String {
        "value".into()
    }
    pub fn field_time() -> String {
        "ts".into()
    }
    pub fn field_entity() -> String {
        "entity".into()
    }
    pub fn field_quality() -> String {
        "quality".into()
    }
    pub fn field_seq() -> String {
        "seq".into()
    }
    pub fn max_payload_bytes() -> usize {
        64 * 1024
    }
    pub fn max_future_skew_s() -> u64 {
        300
    }
    pub fn max_past_skew_s() -> u64 {
        7 * 24 * 3600
    }
    pub fn max_abs_value() -> f64 {
        1e30
    }
    pub fn workers() -> usize {
        2
    }
    pub fn alert_span_ms() -> u64 {
        60_000
    }
    pub fn quantiles() -> Vec<f64> {
        vec![0.5, 0.9, 0.99]
    }
    pub fn sketch_accuracy() -> f64 {
        0.01
    }
    pub fn all_entities() -> Vec<String> {
        vec!["*".into()]
    }
    pub fn warmup_pca_windows() -> usize {
        2
    }

    pub fn warmup_pca_variance() -> f64 {
        0.99
    }

    pub fn warmup_pca_limit_quantile() -> f64 {
        0.99
    }

    pub fn warmup_pca_weight() -> f64 {
        0.025
    }

    pub fn warmup_pca_model_weight() -> f64 {
        0.25
    }

    pub fn session_gap_ms() -> u64 {
        5000
    }
    pub fn checkpoint_interval_ms() -> u64 {
        1000
    }
    pub fn checkpoint_max_entities() -> usize {
        250
    }
    pub fn window_size_ms() -> u64 {
        32_000
    }
    pub fn window_hop_ms() -> u64 {
        1000
    }
    pub fn allowed_lateness_ms() -> u64 {
        2000
    }
    pub fn max_batch() -> usize {
        32
    }
    pub fn max_wait_ms() -> u64 {
        5
    }
    pub fn yes() -> bool {
        true
    }
    pub fn raise_after() -> u32 {
        2
    }
    pub fn clear_after() -> u32 {
        5
    }
    pub fn cooldown_s() -> u64 {
        60
    }
    pub fn novelty_horizon() -> u32 {
        8000
    }
    pub fn alert_topic() -> String {
        "vigil/{agent}/alerts".into()
    }
    pub fn review_topic() -> String {
        "vigil/{agent}/review".into()
    }
    pub fn review_queue_capacity() -> u64 {
        1000
    }
    pub fn baud() -> u32 {
        115_200
    }
    pub fn serial_entity() -> String {
        "serial.{node}.{channel}".into()
    }
    pub fn max_frame_bytes() -> usize {
        256
    }
    pub fn reopen_ms() -> u64 {
        1000
    }
    pub fn linger_ms() -> u64 {
        1000
    }
    pub fn dir_batch() -> usize {
        1000
    }
    pub fn replication_factor() -> i16 {
        1
    }
    pub fn request_timeout_ms() -> u64 {
        10_000
    }
    pub fn max_request_bytes() -> usize {
        1 << 20
    }
    pub fn s3_prefix() -> String {
        "vigil".into()
    }
    pub fn s3_region() -> String {
        "us-east-1".into()
    }
    pub fn all_kinds() -> Vec<super::RecordKind> {
        use super::RecordKind::*;
        vec![Reading, Score, Alert, Dlq, Heartbeat, Aggregate, Session]
    }
    pub fn s3_max_object_records() -> usize {
        100_000
    }
    pub fn s3_max_object_bytes() -> usize {
        16 << 20
    }
    pub fn s3_max_object_age_s() -> u64 {
        300
    }
    pub fn s3_multipart_threshold_bytes() -> usize {
        8 << 20
    }
    pub fn s3_request_timeout_ms() -> u64 {
        30_000
    }
    pub fn zstd_level() -> i32 {
        3
    }
    pub fn heartbeat_interval_s() -> u64 {
        60
    }
}
