//! Reading, checking and locating errors in a config file.
//!
//! Errors carry the file, the 1-based line (0 when no line can be attributed, e.g. a missing
//! required table) and the dotted key (`pipeline.window.hop_ms`, `ingest.mqtt[1].topic`).
//! Syntax and type errors come from the TOML deserializer's span plus the serde path; checks
//! that span several keys ([`Config::validate`]) find the key's line by walking a spanned parse
//! of the same text.

use std::path::{Path, PathBuf};

use toml::de::{DeTable, DeValue};

use super::{Config, ValueEncodingSetting};
use crate::ingest::topic::TopicTemplate;
use crate::pipeline::warmup_pca::MAX_SPANNED_WINDOWS;

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}:{line}: key `{key}`: {message}", path.display())]
    Invalid {
        path: PathBuf,
        /// 1-based; 0 when the problem has no line (e.g. a required table is missing).
        line: usize,
        key: String,
        message: String,
    },
}

impl Config {
    /// Reads, parses, applies `VIGIL_…` secrets from the process environment, resolves
    /// relative paths against the file's directory, and validates.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let raw = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut config = Config::from_toml(&raw, path, |name| std::env::var(name).ok())?;
        config.source = Some(path.to_path_buf());
        Ok(config)
    }

    /// [`Config::load`] on text already read; `path` is used for messages and relative paths.
    pub fn from_toml(
        raw: &str,
        path: &Path,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let invalid = |key: String, message: String, line: usize| ConfigError::Invalid {
            path: path.to_path_buf(),
            line,
            key,
            message,
        };
        let deserializer = toml::Deserializer::parse(raw).map_err(|e| {
            invalid(String::new(), e.message().to_string(), line_of_span(raw, e.span()))
        })?;
        let mut config: Config = serde_path_to_error::deserialize(deserializer).map_err(|e| {
            let mut key = e.path().to_string();
            let inner = e.into_inner();
            let message = inner.message().to_string();
            // serde_path_to_error's path ends at the unknown key in most cases; complete it where
            // it stops at the parent table.
            if let Some(unknown) = unknown_field_name(&message) {
                if key == "." {
                    key = unknown.to_string();
                } else if !key.ends_with(unknown) {
                    key = format!("{key}.{unknown}");
                }
            }
            let line = match line_of_span(raw, inner.span()) {
                0 => locate(raw, &key),
                line => line,
            };
            invalid(key, message, line)
        })?;
        super::secrets::apply_env(&mut config, env);
        let base = path.parent().unwrap_or(Path::new("."));
        config.resolve_paths(base);
        config
            .validate()
            .map_err(|(key, message)| invalid(key.clone(), message, locate(raw, &key)))?;
        Ok(config)
    }

    fn resolve_paths(&mut self, base: &Path) {
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        resolve(&mut self.agent.data_dir);
        resolve(&mut self.inference.model_dir);
        if let Some(p) = self.models.registry.as_mut() {
            resolve(p);
        }
        for d in &mut self.ingest.modbus.devices {
            if let Some(p) = d.serial_port.as_mut() {
                resolve(p);
            }
        }
        if let Some(dir) = self.uplink.directory.as_mut() {
            resolve(&mut dir.path);
        }
        for w in &mut self.alerts.webhook {
            if let Some(p) = w.ca_file.as_mut() {
                resolve(p);
            }
            if let Some(file) = w.template.strip_prefix("file:") {
                let mut p = PathBuf::from(file);
                resolve(&mut p);
                w.template = format!("file:{}", p.display());
            }
        }
        let (kafka_tls, registry_tls) = match self.uplink.kafka.as_mut() {
            Some(k) => (k.tls.as_mut(), k.avro.as_mut().and_then(|a| a.tls.as_mut())),
            None => (None, None),
        };
        let tls_configs = [self.mqtt.as_mut().and_then(|m| m.tls.as_mut()), kafka_tls, registry_tls];
        for tls in tls_configs.into_iter().flatten() {
            resolve(&mut tls.ca_file);
            if let Some(p) = tls.client_cert_file.as_mut() {
                resolve(p);
            }
            if let Some(p) = tls.client_key_file.as_mut() {
                resolve(p);
            }
        }
        if let Some(p) = self.uplink.s3.as_mut().and_then(|s| s.ca_file.as_mut()) {
            resolve(p);
        }
    }

    /// Checks that span keys or need more than a type. Returns `(dotted key, message)`.
    fn validate(&self) -> Result<(), (String, String)> {
        let fail = |key: &str, msg: String| Err((key.to_string(), msg));
        let id = &self.agent.id;
        if id.is_empty()
            || !id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return fail("agent.id", format!("`{id}` must be non-empty and use only letters, digits, `-`, `_`, `.`"));
        }
        let m = &self.models;
        if !(0.0..=1.0).contains(&m.canary_fraction) {
            return fail("models.canary_fraction", format!("{} must be between 0 and 1", m.canary_fraction));
        }
        if !(m.latency_budget_us >= 0.0 && m.latency_budget_us.is_finite()) {
            return fail("models.latency_budget_us", format!("{} must be a finite number >= 0", m.latency_budget_us));
        }
        if !(0.0..=1.0).contains(&m.alert_rate_tolerance) {
            return fail("models.alert_rate_tolerance", format!("{} must be between 0 and 1", m.alert_rate_tolerance));
        }
        if m.scan_interval_ms == 0 {
            return fail("models.scan_interval_ms", "must be > 0".into());
        }
        let max_abs = self.validation.max_abs_value;
        if !(max_abs.is_finite() && max_abs > 0.0) {
            return fail("validation.max_abs_value", format!("{max_abs} must be a finite number > 0"));
        }
        if let Some(mqtt) = &self.mqtt {
            if mqtt.receive_maximum == 0 {
                return fail("mqtt.receive_maximum", "must be between 1 and 65535".into());
            }
            if mqtt.reconnect_min_ms == 0 || mqtt.reconnect_min_ms > mqtt.reconnect_max_ms {
                return fail("mqtt.reconnect_min_ms", "must be > 0 and <= mqtt.reconnect_max_ms".into());
            }
            if let Some(tls) = &mqtt.tls {
                if tls.client_cert_file.is_some() != tls.client_key_file.is_some() {
                    return fail("mqtt.tls.client_cert_file", "client_cert_file and client_key_file must be given together".into());
                }
            }
            if let Some(host_id) = &mqtt.sparkplug_host_id {
                crate::ingest::sparkplug::check_host_id(host_id).map_err(|e| ("mqtt.sparkplug_host_id".to_string(), e))?;
                if !self.ingest.mqtt.iter().any(|s| s.format == crate::config::PayloadFormat::SparkplugB) {
                    return fail(
                        "mqtt.sparkplug_host_id",
                        "a Sparkplug host application needs an [[ingest.mqtt]] subscription with format = \"sparkplug_b\" (e.g. topic = \"spBv1.0/#\")".into(),
                    );
                }
            }
        }
        for (i, pair) in self.replay.entities.iter().enumerate() {
            crate::replay::column_entity(pair).map_err(|e| (format!("replay.entities[{i}]"), e))?;
        }
        for (i, sub) in self.ingest.mqtt.iter().enumerate() {
            if self.mqtt.is_none() {
                return fail(&format!("ingest.mqtt[{i}]"), "an MQTT subscription needs a [mqtt] broker table".into());
            }
            let template = TopicTemplate::parse(&sub.topic)
                .map_err(|e| (format!("ingest.mqtt[{i}].topic"), e.to_string()))?;
            if sub.format == crate::config::PayloadFormat::SparkplugB {
                if sub.entity.is_some() {
                    return fail(
                        &format!("ingest.mqtt[{i}].entity"),
                        "not used with format = \"sparkplug_b\" (the entity is <group>/<node>[/<device>]/<metric>): remove it".into(),
                    );
                }
                if sub.fields.is_some() {
                    return fail(
                        &format!("ingest.mqtt[{i}].fields"),
                        "not used with format = \"sparkplug_b\" (metrics carry their own name, value and timestamp): remove it".into(),
                    );
                }
            }
            if let Some(entity) = &sub.entity {
                template
                    .check_entity_template(entity)
                    .map_err(|e| (format!("ingest.mqtt[{i}].entity"), e.to_string()))?;
            }
        }
        for (i, port) in self.ingest.serial.iter().enumerate() {
            let key = |k: &str| format!("ingest.serial[{i}].{k}");
            if crate::ingest::serial::tty::speed(port.baud).is_none() {
                return Err((key("baud"), format!("{} is not a supported baud rate (see config/vigil.toml)", port.baud)));
            }
            crate::ingest::topic::check_placeholders(&port.entity, &["node", "channel"]).map_err(|e| (key("entity"), e.to_string()))?;
            let min = firmware_bridge::wire::MIN_FRAME_BYTES;
            if port.max_frame_bytes < min || port.max_frame_bytes > 65_536 {
                return Err((key("max_frame_bytes"), format!("must be between {min} and 65536")));
            }
            if port.reopen_ms == 0 {
                return Err((key("reopen_ms"), "must be > 0".into()));
            }
            if self.ingest.serial[..i].iter().any(|p| p.port == port.port) {
                return Err((key("port"), format!("{} is configured twice", port.port.display())));
            }
        }
        if self.ingest.mqtt.is_empty() && self.ingest.simulator.is_none() && self.ingest.serial.is_empty() && self.ingest.modbus.devices.is_empty() {
            return fail("ingest", "no source configured: add [[ingest.mqtt]], [[ingest.serial]], [[ingest.modbus.devices]] or [ingest.simulator]".into());
        }
        self.ingest.modbus.validate()?;
        for (i, asset) in self.pipeline.assets.iter().enumerate() {
            let key = |k: &str| format!("pipeline.assets[{i}].{k}");
            let others = &self.pipeline.assets[..i];
            if asset.id.is_empty() || others.iter().any(|a| a.id == asset.id) {
                return Err((key("id"), format!("`{}` must be non-empty and unique", asset.id)));
            }
            if asset.channels.is_empty() {
                return Err((key("channels"), "must name at least one entity".into()));
            }
            for (j, c) in asset.channels.iter().enumerate() {
                let elsewhere = others.iter().any(|a| a.channels.contains(c) || a.id == *c) || asset.channels[..j].contains(c);
                if c.is_empty() || elsewhere || *c == asset.id {
                    return Err((key("channels"), format!("entity `{c}` is empty, an asset id, or in more than one channel")));
                }
            }
            if let Some(c) = &asset.session_channel {
                if !asset.channels.contains(c) {
                    return Err((key("session_channel"), format!("`{c}` is not one of the asset's channels")));
                }
                if self.pipeline.session.is_none() {
                    return Err((key("session_channel"), "needs a [pipeline.session] table (condition and gap)".into()));
                }
            }
        }
        if let Some(sim) = &self.ingest.simulator {
            sim.validate().map_err(|e| ("ingest.simulator".to_string(), e))?;
        }
        for (i, w) in self.alerts.webhook.iter().enumerate() {
            let key = |k: &str| format!("alerts.webhook[{i}].{k}");
            if w.name.is_empty() || self.alerts.webhook[..i].iter().any(|o| o.name == w.name) {
                return Err((key("name"), format!("`{}` must be non-empty and unique", w.name)));
            }
            let url = w.url.expose();
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                return Err((key("url"), "must start with https:// or http://".into()));
            }
            crate::alerts::webhook::Template::parse(&w.template, w.kind).map_err(|e| (key("template"), e))?;
        }
        for (i, r) in self.alerts.route.iter().enumerate() {
            let key = |k: &str| format!("alerts.route[{i}].{k}");
            for k in &r.kinds {
                if !matches!(k.as_str(), "raised" | "cleared" | "review") {
                    return Err((key("kinds"), format!("`{k}`: expected raised, cleared or review")));
                }
            }
            for name in &r.to {
                let Some(w) = self.alerts.webhook.iter().find(|w| &w.name == name) else {
                    return Err((key("to"), format!("no [[alerts.webhook]] named `{name}`")));
                };
                if w.kind == super::WebhookKind::Operational && r.kinds.iter().any(|k| k == "review") {
                    return Err((key("kinds"), format!("review-band events only notify: `{name}` is an operational webhook")));
                }
            }
        }
        let p = &self.pipeline;
        if p.workers == 0 || p.workers > 256 {
            return fail("pipeline.workers", "must be between 1 and 256".into());
        }
        if p.checkpoint_max_entities == 0 {
            return fail("pipeline.checkpoint_max_entities", "must be > 0".into());
        }
        if p.checkpoint_interval_ms == 0 {
            return fail("pipeline.checkpoint_interval_ms", "must be > 0".into());
        }
        if p.window.hop_ms == 0 {
            return fail("pipeline.window.hop_ms", "must be > 0".into());
        }
        if p.window.size_ms < p.window.hop_ms {
            return fail("pipeline.window.size_ms", format!("must be >= hop_ms ({})", p.window.hop_ms));
        }
        let agg = &p.aggregate;
        if agg.sizes_ms.iter().any(|&s| s == 0 || s > i64::MAX as u64 / 4) {
            return fail("pipeline.aggregate.sizes_ms", "every size must be > 0".into());
        }
        if agg.quantiles.iter().any(|q| !(0.0..=1.0).contains(q)) {
            return fail("pipeline.aggregate.quantiles", "every quantile must be in [0, 1]".into());
        }
        if !(agg.sketch_accuracy > 0.0 && agg.sketch_accuracy < 0.5) {
            return fail("pipeline.aggregate.sketch_accuracy", "must be > 0 and < 0.5".into());
        }
        if let Some(sess) = &p.session {
            if sess.above.is_none() && sess.below.is_none() {
                return fail("pipeline.session", "needs a condition: `above`, `below` or both".into());
            }
            if sess.above.is_some_and(|a| !a.is_finite()) {
                return fail("pipeline.session.above", "must be a finite number".into());
            }
            if sess.below.is_some_and(|b| !b.is_finite()) {
                return fail("pipeline.session.below", "must be a finite number".into());
            }
            if sess.gap_ms == 0 {
                return fail("pipeline.session.gap_ms", "must be > 0".into());
            }
        }
        if let Some(w) = &p.warmup_pca {
            if !(1..=64).contains(&w.windows) {
                return fail("pipeline.warmup_pca.windows", "must be between 1 and 64".into());
            }
            if p.window.size_ms % p.window.hop_ms != 0 {
                return fail("pipeline.warmup_pca", format!("needs pipeline.window.size_ms ({}) to be a multiple of hop_ms ({})", p.window.size_ms, p.window.hop_ms));
            }
            // Every asset keeps (and checkpoints) the means of the windows one long view spans.
            let spanned = (w.windows as u64 - 1) * (p.window.size_ms / p.window.hop_ms) + 1;
            if spanned > MAX_SPANNED_WINDOWS as u64 {
                return fail(
                    "pipeline.warmup_pca.windows",
                    format!(
                        "{} windows of {} ms every {} ms span {spanned} window means, which every asset keeps; at most {MAX_SPANNED_WINDOWS}: fewer windows, or a longer hop_ms",
                        w.windows, p.window.size_ms, p.window.hop_ms
                    ),
                );
            }
            for (key, v) in [("pipeline.warmup_pca.variance", w.variance), ("pipeline.warmup_pca.limit_quantile", w.limit_quantile)] {
                if !(v > 0.0 && v <= 1.0) {
                    return fail(key, "must be > 0 and <= 1".into());
                }
            }
            for (key, v) in [("pipeline.warmup_pca.weight", w.weight), ("pipeline.warmup_pca.model_weight", w.model_weight)] {
                if !(v.is_finite() && v >= 0.0) {
                    return fail(key, "must be a finite number >= 0".into());
                }
            }
            if w.weight + w.model_weight <= 0.0 {
                return fail("pipeline.warmup_pca.weight", "weight and model_weight must not both be 0".into());
            }
            if p.assets.is_empty() {
                return fail("pipeline.warmup_pca", "needs [[pipeline.assets]] (it scores assets)".into());
            }
        }
        let inf = &self.inference;
        if inf.max_batch == 0 || inf.max_batch > 1024 {
            return fail("inference.max_batch", "must be between 1 and 1024".into());
        }
        let a = &self.alerts;
        for (key, t) in [("alerts.review_threshold", a.review_threshold), ("alerts.alert_threshold", a.alert_threshold)] {
            if let Some(t) = t {
                if !(t > 0.0 && t < 1.0) {
                    return fail(key, "scores are in [0, 1): the threshold must be inside (0, 1)".into());
                }
            }
        }
        if let (Some(r), Some(al)) = (a.review_threshold, a.alert_threshold) {
            if r > al {
                return fail("alerts.review_threshold", "must be <= alerts.alert_threshold".into());
            }
        }
        if a.review_queue_capacity == 0 {
            return fail("alerts.review_queue_capacity", "must be at least 1".into());
        }
        if a.raise_after == 0 || a.clear_after == 0 {
            return fail("alerts.raise_after", "raise_after and clear_after must be >= 1".into());
        }
        if let Some(dir) = &self.uplink.directory {
            if dir.max_batch == 0 {
                return fail("uplink.directory.max_batch", "must be > 0".into());
            }
        }
        if let Some(k) = &self.uplink.kafka {
            if k.brokers.is_empty() || k.brokers.iter().any(|b| !b.contains(':')) {
                return fail("uplink.kafka.brokers", "list at least one broker, each as host:port".into());
            }
            let t = &k.topics;
            let topics = [&t.reading, &t.score, &t.alert, &t.dlq, &t.heartbeat, &t.aggregate, &t.session];
            if topics.iter().all(|t| t.is_none()) {
                return fail("uplink.kafka.topics", "name a topic for at least one record kind".into());
            }
            if topics.iter().filter_map(|t| t.as_ref()).any(|t| t.is_empty() || t.len() > 249) {
                return fail("uplink.kafka.topics", "topic names must be 1 to 249 characters".into());
            }
            if k.create_partitions < 0 || k.create_replication_factor < 1 {
                return fail("uplink.kafka.create_partitions", "must be >= 0, with create_replication_factor >= 1".into());
            }
            if k.request_timeout_ms == 0 || k.max_request_bytes == 0 {
                return fail("uplink.kafka.request_timeout_ms", "request_timeout_ms and max_request_bytes must be > 0".into());
            }
            if let Some(sasl) = &k.sasl {
                if sasl.password.is_none() {
                    return fail("uplink.kafka.sasl.password", "missing (set it here or in VIGIL_KAFKA_PASSWORD)".into());
                }
            }
            match (k.encoding, &k.avro) {
                (ValueEncodingSetting::Avro, None) => {
                    return fail("uplink.kafka.encoding", "\"avro\" needs [uplink.kafka.avro] with registry_url or schema_ids".into());
                }
                (ValueEncodingSetting::Avro, Some(a)) => {
                    if let Some(url) = &a.registry_url {
                        if !(url.starts_with("http://") || url.starts_with("https://")) {
                            return fail("uplink.kafka.avro.registry_url", format!("`{url}` must start with http:// or https://"));
                        }
                        if url.starts_with("https://") && a.tls.is_none() {
                            return fail("uplink.kafka.avro.registry_url", "an https:// registry needs [uplink.kafka.avro.tls] with its ca_file".into());
                        }
                        if a.registry_timeout_ms == 0 {
                            return fail("uplink.kafka.avro.registry_timeout_ms", "must be > 0".into());
                        }
                    } else if let Some(topic) = topics.iter().filter_map(|t| t.as_ref()).find(|t| !a.schema_ids.contains_key(*t)) {
                        return fail("uplink.kafka.avro.schema_ids", format!("topic `{topic}` has no schema id, and no registry_url is set"));
                    }
                    if a.registry_username.is_some() != a.registry_password.is_some() {
                        return fail("uplink.kafka.avro.registry_password", "registry_username and registry_password (or VIGIL_SCHEMA_REGISTRY_PASSWORD) go together".into());
                    }
                }
                (_, Some(_)) => {
                    return fail("uplink.kafka.avro", "only used with encoding = \"avro\"".into());
                }
                (_, None) => {}
            }
        }
        if let Some(s3) = &self.uplink.s3 {
            if s3.bucket.is_empty() {
                return fail("uplink.s3.bucket", "must not be empty".into());
            }
            if s3.site.is_empty() || s3.site.contains('/') {
                return fail("uplink.s3.site", "must be non-empty and contain no `/`".into());
            }
            if s3.prefix.starts_with('/') || s3.prefix.ends_with('/') {
                return fail("uplink.s3.prefix", "must not start or end with `/`".into());
            }
            if s3.access_key_id.is_some() != s3.secret_access_key.is_some() {
                return fail(
                    "uplink.s3.secret_access_key",
                    "access_key_id and secret_access_key come together (or set VIGIL_S3_ACCESS_KEY_ID / VIGIL_S3_SECRET_ACCESS_KEY)".into(),
                );
            }
            if s3.kinds.is_empty() {
                return fail("uplink.s3.kinds", "name at least one record kind".into());
            }
            if s3.max_object_records == 0 || s3.max_object_bytes == 0 {
                return fail("uplink.s3.max_object_records", "max_object_records and max_object_bytes must be > 0".into());
            }
            if !(1..=19).contains(&s3.zstd_level) {
                return fail("uplink.s3.zstd_level", "must be between 1 and 19".into());
            }
            if s3.request_timeout_ms == 0 {
                return fail("uplink.s3.request_timeout_ms", "must be > 0".into());
            }
        }
        Ok(())
    }
}

/// `unknown field `foo`, expected ...` → `foo`.
fn unknown_field_name(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("unknown field `")?;
    rest.split('`').next()
}

fn line_of_span(raw: &str, span: Option<std::ops::Range<usize>>) -> usize {
    match span {
        Some(span) => line_of_offset(raw, span.start),
        None => 0,
    }
}

fn line_of_offset(raw: &str, offset: usize) -> usize {
    let end = offset.min(raw.len());
    raw.as_bytes()[..end].iter().filter(|&&b| b == b'\n').count() + 1
}

/// The line where a dotted key (`a.b[2].c`) is defined; for a key that is absent, the line of
/// its closest present parent; 0 if the text does not parse or nothing matches.
pub(crate) fn locate(raw: &str, key: &str) -> usize {
    let Ok(root) = DeTable::parse(raw) else { return 0 };
    let mut best = 0;
    let mut table: Option<&DeTable> = Some(root.get_ref());
    let mut value: Option<&DeValue> = None;
    for part in key.split('.').filter(|p| !p.is_empty()) {
        let (name, index) = match part.split_once('[') {
            Some((name, idx)) => (name, idx.trim_end_matches(']').parse::<usize>().ok()),
            None => (part, None),
        };
        let Some(t) = table.or_else(|| value.and_then(|v| v.as_table())) else { break };
        let Some((k, v)) = t.get_key_value(name) else { break };
        best = line_of_offset(raw, k.span().start);
        let mut current = v.get_ref();
        if let Some(i) = index {
            let Some(item) = current.as_array().and_then(|a| a.get(i)) else { break };
            best = line_of_offset(raw, item.span().start);
            current = item.get_ref();
        }
        value = Some(current);
        table = None;
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
[agent]
id = "gw1"
data_dir = "state"

[ingest.simulator]
machines = 2

[inference]
model_dir = "models/univariate-ae/1.0.0"
"#;

    fn load(extra: &str) -> Result<Config, ConfigError> {
        Config::from_toml(&format!("{BASE}{extra}"), Path::new("/etc/vigil/vigil.toml"), |_| None)
    }

    fn expect_invalid(extra: &str) -> (usize, String, String) {
        match load(extra) {
            Err(ConfigError::Invalid { line, key, message, .. }) => (line, key, message),
            other => panic!("expected an Invalid error, got {other:?}"),
        }
    }

    #[test]
    fn minimal_config_loads_and_resolves_paths() {
        let c = load("").unwrap();
        assert_eq!(c.agent.data_dir, PathBuf::from("/etc/vigil/state"));
        assert_eq!(c.pipeline.window.hop_ms, 1000);
        assert_eq!(c.inference.max_batch, 32);
    }

    #[test]
    fn unknown_key_names_line_and_key() {
        let (line, key, message) = expect_invalid("\n[pipeline]\nworkers = 2\nwindoww = 3\n");
        assert_eq!(key, "pipeline.windoww");
        assert_eq!(line, 14, "{message}");
        assert!(message.contains("unknown field"), "{message}");
    }

    #[test]
    fn wrong_type_names_line_and_key() {
        let (line, key, _) = expect_invalid("\n[pipeline.window]\nhop_ms = \"fast\"\n");
        assert_eq!(key, "pipeline.window.hop_ms");
        assert_eq!(line, 13);
    }

    #[test]
    fn semantic_error_is_located() {
        let (line, key, message) =
            expect_invalid("\n[pipeline.window]\nsize_ms = 500\nhop_ms = 1000\n");
        assert_eq!(key, "pipeline.window.size_ms");
        assert_eq!(line, 13, "{message}");
    }

    #[test]
    fn array_entries_are_located() {
        let extra = "\n[mqtt]\nhost = \"127.0.0.1\"\n\n[[ingest.mqtt]]\ntopic = \"a/{x}/b\"\n\n[[ingest.mqtt]]\ntopic = \"a/#/b\"\n";
        let (line, key, _) = expect_invalid(extra);
        assert_eq!(key, "ingest.mqtt[1].topic");
        assert_eq!(line, 19);
    }

    #[test]
    fn sparkplug_subscription_refuses_an_entity_template_and_fields() {
        let extra = "\n[mqtt]\nhost = \"127.0.0.1\"\n\n[[ingest.mqtt]]\ntopic = \"spBv1.0/#\"\nformat = \"sparkplug_b\"\nentity = \"{x}\"\n";
        let (_, key, message) = expect_invalid(extra);
        assert_eq!(key, "ingest.mqtt[0].entity", "{message}");
        let extra = "\n[mqtt]\nhost = \"127.0.0.1\"\n\n[[ingest.mqtt]]\ntopic = \"spBv1.0/#\"\nformat = \"sparkplug_b\"\n[ingest.mqtt.fields]\nvalue = \"v\"\n";
        let (_, key, message) = expect_invalid(extra);
        assert_eq!(key, "ingest.mqtt[0].fields", "{message}");
        assert!(message.contains("sparkplug_b"), "{message}");
    }

    #[test]
    fn sparkplug_host_id_is_checked_and_needs_a_sparkplug_subscription() {
        let mqtt = |id: &str, format: &str| {
            format!("\n[mqtt]\nhost = \"127.0.0.1\"\nsparkplug_host_id = {id}\n\n[[ingest.mqtt]]\ntopic = \"spBv1.0/#\"\nformat = \"{format}\"\n")
        };
        let ok = load(&mqtt("\"vigil-plant1\"", "sparkplug_b")).unwrap();
        assert_eq!(ok.mqtt.unwrap().sparkplug_host_id.as_deref(), Some("vigil-plant1"));
        for bad in ["\"\"", "\"a/b\"", "\"a+\"", "\"#\""] {
            let (line, key, message) = expect_invalid(&mqtt(bad, "sparkplug_b"));
            assert_eq!((line, key.as_str()), (14, "mqtt.sparkplug_host_id"), "{bad}: {message}");
        }
        let (line, key, message) = expect_invalid(&mqtt("\"a/b\"", "sparkplug_b"));
        assert!(message.contains('/') && line == 14, "the message names the character: {message}");
        let (line, key2, message) = expect_invalid(&mqtt("\"h1\"", "json"));
        assert_eq!((line, key2.as_str()), (14, "mqtt.sparkplug_host_id"), "{message}");
        assert!(message.contains("sparkplug_b"), "{message}");
        assert_eq!(key, key2);
        assert!(load(&mqtt("\"h1\"", "sparkplug_b").replace("sparkplug_host_id = \"h1\"\n", "")).unwrap().mqtt.unwrap().sparkplug_host_id.is_none());
    }

    #[test]
    fn max_abs_value_must_be_positive_and_finite() {
        assert_eq!(load("\n[validation]\nmax_abs_value = 1e6\n").unwrap().validation.max_abs_value, 1e6);
        for bad in ["0.0", "-5.0", "inf", "nan"] {
            let extra = format!("\n[validation]\nmax_abs_value = {bad}\n");
            let want = format!("{BASE}{extra}").lines().position(|l| l.starts_with("max_abs_value")).map(|i| i + 1);
            let (line, key, message) = expect_invalid(&extra);
            assert_eq!((Some(line), key.as_str()), (want, "validation.max_abs_value"), "{bad}: {message}");
        }
    }

    #[test]
    fn warmup_pca_is_checked_and_needs_assets() {
        let asset = "\n[[pipeline.assets]]\nid = \"pump\"\nchannels = [\"p.a\", \"p.b\"]\n\n[pipeline.warmup_pca]\n";
        let ok = load(asset).unwrap();
        let w = ok.pipeline.warmup_pca.expect("table present = on");
        assert_eq!((w.windows, w.variance, w.limit_quantile, w.weight, w.model_weight), (2, 0.99, 0.99, 0.025, 0.25));
        for (extra, want) in [
            ("windows = 0\n", "pipeline.warmup_pca.windows"),
            ("variance = 1.5\n", "pipeline.warmup_pca.variance"),
            ("limit_quantile = 0.0\n", "pipeline.warmup_pca.limit_quantile"),
            ("weight = -1.0\n", "pipeline.warmup_pca.weight"),
            ("model_weight = nan\n", "pipeline.warmup_pca.model_weight"),
            ("weight = 0.0\nmodel_weight = 0.0\n", "pipeline.warmup_pca.weight"),
        ] {
            let (_, key, message) = expect_invalid(&format!("{asset}{extra}"));
            assert_eq!(key, want, "{extra}: {message}");
        }
        let (_, key, message) = expect_invalid("\n[pipeline.warmup_pca]\n");
        assert!(key == "pipeline.warmup_pca" && message.contains("[[pipeline.assets]]"), "{key}: {message}");
        let (_, key, message) = expect_invalid(&format!("\n[pipeline.window]\nsize_ms = 2500\nhop_ms = 1000\n{asset}"));
        assert!(key == "pipeline.warmup_pca" && message.contains("multiple of hop_ms"), "{key}: {message}");
        // 63 · 60 + 1 = 3 781 window means per asset (each checkpointed every second): refused;
        // the default window (32 s every 1 s) allows all 64 (2 017).
        let (_, key, message) = expect_invalid(&format!("\n[pipeline.window]\nsize_ms = 60000\nhop_ms = 1000\n{asset}windows = 64\n"));
        assert!(key == "pipeline.warmup_pca.windows" && message.contains("3781 window means"), "{key}: {message}");
        assert_eq!(load(&format!("{asset}windows = 64\n")).unwrap().pipeline.warmup_pca.map(|w| w.windows), Some(64));
    }

    #[test]
    fn avro_settings_are_checked() {
        let kafka = "\n[uplink.kafka]\nbrokers = [\"k:9092\"]\nencoding = \"avro\"\n[uplink.kafka.topics]\nscore = \"s\"\naggregate = \"a\"\n";
        let (line, key, message) = expect_invalid(kafka);
        assert_eq!((line, key.as_str()), (14, "uplink.kafka.encoding"), "{message}");
        let (_, key, message) = expect_invalid(&format!("{kafka}[uplink.kafka.avro.schema_ids]\ns = 3\n"));
        assert_eq!(key, "uplink.kafka.avro.schema_ids");
        assert!(message.contains("`a`"), "the topic without an id is named: {message}");
        let (_, key, _) = expect_invalid(&format!("{kafka}[uplink.kafka.avro]\nregistry_url = \"https://r:8081\"\n"));
        assert_eq!(key, "uplink.kafka.avro.registry_url", "https needs a CA");
        let (_, key, _) = expect_invalid(&format!("{kafka}[uplink.kafka.avro]\nregistry_url = \"http://r:8081\"\nregistry_username = \"u\"\n"));
        assert_eq!(key, "uplink.kafka.avro.registry_password");
        let ok = load(&format!("{kafka}[uplink.kafka.avro]\nregistry_url = \"http://r:8081\"\n[uplink.kafka.avro.schema_ids]\ns = 3\n")).unwrap();
        assert_eq!(ok.uplink.kafka.unwrap().avro.unwrap().schema_ids.get("s"), Some(&3));
        let cbor_with_avro = kafka.replace("encoding = \"avro\"", "encoding = \"cbor\"") + "[uplink.kafka.avro]\nregistry_url = \"http://r\"\n";
        let (_, key, _) = expect_invalid(&cbor_with_avro);
        assert_eq!(key, "uplink.kafka.avro");
    }

    #[test]
    fn an_assets_session_channel_must_be_its_channel_and_needs_a_condition() {
        let asset = "\n[[pipeline.assets]]\nid = \"pump\"\nchannels = [\"p.a\", \"p.b\"]\nsession_channel = \"p.c\"\n";
        let (_, key, message) = expect_invalid(asset);
        assert_eq!(key, "pipeline.assets[0].session_channel", "{message}");
        let (_, key, message) = expect_invalid(&asset.replace("p.c", "p.b"));
        assert!(key == "pipeline.assets[0].session_channel" && message.contains("[pipeline.session]"), "{key}: {message}");
        let ok = load(&format!("{}\n[pipeline.session]\nentities = []\nabove = 1.0\n", asset.replace("p.c", "p.b"))).unwrap();
        assert_eq!(ok.pipeline.assets[0].session_channel.as_deref(), Some("p.b"));
    }

    #[test]
    fn serial_ports_are_checked() {
        let port = |extra: &str| format!("\n[[ingest.serial]]\nport = \"/dev/ttyUSB0\"\n{extra}");
        let c = load(&port("")).unwrap();
        assert_eq!((c.ingest.serial[0].baud, c.ingest.serial[0].entity.as_str()), (115_200, "serial.{node}.{channel}"));
        let (line, key, message) = expect_invalid(&port("baud = 115201\n"));
        assert_eq!((line, key.as_str()), (14, "ingest.serial[0].baud"), "{message}");
        let (_, key, _) = expect_invalid(&port("entity = \"{node}.{sensor}\"\n"));
        assert_eq!(key, "ingest.serial[0].entity");
        let (_, key, _) = expect_invalid(&port("max_frame_bytes = 8\n"));
        assert_eq!(key, "ingest.serial[0].max_frame_bytes");
        let (line, key, _) = expect_invalid(&format!("{}{}", port(""), port("")));
        assert_eq!((line, key.as_str()), (16, "ingest.serial[1].port"));
        let (_, key, _) = expect_invalid(&port("parity = \"even\"\n"));
        assert_eq!(key, "ingest.serial[0].parity");
    }

    #[test]
    fn modbus_errors_name_the_entry_and_its_line() {
        let device = "\n[[ingest.modbus.devices]]\nname = \"plc\"\ntcp = \"127.0.0.1:502\"\n\n[[ingest.modbus.devices.points]]\nentity = \"a\"\ntable = \"coil\"\naddress = 0\n";
        let (line, key, message) = expect_invalid(&format!("{device}type = \"f32\"\n"));
        assert_eq!(key, "ingest.modbus.devices[0].points[0].type", "{message}");
        assert_eq!(line, 20, "{message}");
        let (_, key, _) = expect_invalid(&format!("{device}type = \"bool\"\n\n[[ingest.modbus.write_back]]\nentity = \"a\"\ndevice = \"nope\"\ntable = \"coil\"\naddress = 1\nvalue = 1\n"));
        assert_eq!(key, "ingest.modbus.write_back[0].device");
        let (_, key, _) = expect_invalid(&format!("{device}type = \"bool\"\nbogus = 1\n"));
        assert_eq!(key, "ingest.modbus.devices[0].points[0].bogus");
        let c = load(&format!("{device}type = \"bool\"\n")).unwrap();
        assert_eq!(c.ingest.modbus.devices[0].max_registers_per_request, 125);
    }

    #[test]
    fn syntax_error_has_a_line() {
        let (line, _, _) = expect_invalid("\n[alerts\n");
        assert_eq!(line, 12);
    }

    #[test]
    fn secret_from_env_is_applied_and_redacted() {
        let raw = format!("{BASE}\n[mqtt]\nhost = \"h\"\npassword = \"in-file\"\n");
        let c = Config::from_toml(&raw, Path::new("v.toml"), |k| {
            (k == "VIGIL_MQTT_PASSWORD").then(|| "from-env".to_string())
        })
        .unwrap();
        let mqtt = c.mqtt.unwrap();
        assert_eq!(mqtt.password.as_ref().unwrap().expose(), "from-env");
        assert!(!format!("{mqtt:?}").contains("from-env"));
    }

    fn shipped(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../config").join(name)
    }

    #[test]
    fn shipped_configs_load() {
        for name in ["vigil.toml", "demo.toml"] {
            Config::load(&shipped(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }

    /// Every key the agent understands is documented in `config/vigil.toml`.
    #[test]
    fn vigil_toml_documents_every_key() {
        let path = shipped("vigil.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let mut c = Config::load(&path).unwrap();
        let mqtt = c.mqtt.as_mut().unwrap();
        mqtt.client_id = Some("x".into());
        mqtt.sparkplug_host_id = Some("x".into());
        mqtt.username = Some("x".into());
        mqtt.password = Some(super::super::Secret::new("x"));
        mqtt.tls = Some(super::super::TlsConfig { ca_file: "a".into(), client_cert_file: Some("b".into()), client_key_file: Some("c".into()) });
        c.ingest.simulator = Some(Default::default());
        if c.ingest.serial.is_empty() {
            c.ingest.serial.push(toml::from_str("port = \"/dev/ttyUSB0\"").unwrap());
        }
        let d = &mut c.ingest.modbus.devices[0];
        d.serial_port = Some("p".into());
        c.alerts.review_threshold = Some(0.5);
        c.alerts.alert_threshold = Some(0.7);
        c.api.token = Some(super::super::Secret::new("x"));
        c.pipeline.session = Some(toml::from_str("above = 1.0\nbelow = 2.0").unwrap());
        c.pipeline.warmup_pca = Some(toml::from_str("").unwrap());
        c.alerts.webhook[0].routing_key = Some(super::super::Secret::new("x"));
        c.alerts.webhook[0].ca_file = Some("x".into());
        // The network sinks are commented out in the shipped file: document them all the same.
        let sinks: super::super::UplinkConfig = toml::from_str(
            r#"
            [kafka]
            brokers = ["k:9092"]
            client_id = "x"
            topics = { reading = "r", score = "s", alert = "a", dlq = "d", heartbeat = "h", aggregate = "g", session = "n" }
            tls = { ca_file = "a", client_cert_file = "b", client_key_file = "c" }
            sasl = { mechanism = "plain", username = "u", password = "p" }
            [s3]
            bucket = "b"
            site = "s"
            endpoint = "http://x"
            access_key_id = "i"
            secret_access_key = "k"
            ca_file = "c"
            "#,
        )
        .unwrap();
        c.uplink.kafka = sinks.kafka;
        c.uplink.s3 = sinks.s3;
        // Assets are commented out in the shipped file (they need a multivariate model).
        c.pipeline.assets.push(super::super::AssetConfig { id: "a".into(), channels: vec!["x".into()], session_channel: None });
        let value = toml::Value::try_from(&c).unwrap();
        let mut missing = Vec::new();
        fn walk(v: &toml::Value, text: &str, path: &str, missing: &mut Vec<String>) {
            match v {
                toml::Value::Table(t) => {
                    for (k, v) in t {
                        let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                        if !v.is_table() && !matches!(v, toml::Value::Array(a) if a.iter().any(|x| x.is_table())) && !text.contains(&format!("{k} =")) {
                            missing.push(p.clone());
                        }
                        walk(v, text, &p, missing);
                    }
                }
                toml::Value::Array(a) => a.iter().for_each(|x| walk(x, text, path, missing)),
                _ => {}
            }
        }
        walk(&value, &text, "", &mut missing);
        assert!(missing.is_empty(), "keys not documented in config/vigil.toml: {missing:?}");
    }
}
