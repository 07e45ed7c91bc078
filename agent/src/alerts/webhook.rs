//! Webhook alert sinks: alerts POSTed as JSON to people's tools (Slack) and operational APIs
//! (PagerDuty Events API v2, a work-order system).
//!
//! # Design constraints
//!
//! - **Never silently lost.** A webhook is an outbox sink ([`cloud_uplink::Sink`]) that takes
//!   the alert class: alert, clear and review records are already durable in the outbox, and
//!   the outbox's drain loop retries a failed delivery with exponential backoff, across
//!   restarts, until the endpoint accepts it. Failures are counted per sink
//!   (`vigil_sink_errors_total{sink="webhook:<name>"}`) and the backlog's age is exported
//!   (`vigil_sink_oldest_undelivered_age_seconds`). Only a permanent refusal (a 4xx other than
//!   408/429: the endpoint will never take this body) skips a record, logged as an error with
//!   the status, never silently.
//! - **At least once.** Within a run a record the endpoint accepted is not sent again when a
//!   later record of the same batch fails; after a crash it may be. PagerDuty deduplicates on
//!   the dedup key (`vigil/<agent>/<entity>`: one incident per entity, resolved by the clear).
//! - **Routing** ([`crate::config::RouteConfig`]): record kinds (raised, cleared, review) and
//!   entity globs choose the webhooks. Review-band events only notify: config validation
//!   refuses a route that sends them to an `operational` webhook.
//! - **Rate limits** per webhook (`max_per_minute`): requests beyond it wait, they are not
//!   dropped. **Timeouts** per request (`timeout_ms`). **TLS** via rustls with the ring
//!   provider and Mozilla's roots, or the webhook's own `ca_file`.
//! - Requests are blocking (ureq) on tokio's blocking pool, one at a time per webhook.
//!
//! # Templates
//!
//! A template is the JSON body with placeholders, each replaced by the JSON-escaped value
//! (without quotes, so write `"{entity}"` for strings and `{score}` for numbers):
//! `{agent}`, `{entity}`, `{state}` (raised / cleared / review), `{band}`, `{score}`,
//! `{message}`, `{model}` (name version), `{window_end_ms}`, `{time}` (RFC 3339 of the window
//! end), `{dedup_key}`, `{routing_key}`, `{pd_action}` (trigger / resolve) and
//! `{pd_severity}` (critical / warning). Built in: [`JSON_TEMPLATE`], [`SLACK_TEMPLATE`],
//! [`PAGERDUTY_TEMPLATE`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use cloud_uplink::{AlertState, Body, RecordClass, Sink, SinkError, StoredRecord};

use crate::config::{RouteConfig, Secret, WebhookConfig, WebhookKind};

/// The alert as plain JSON.
pub const JSON_TEMPLATE: &str = r#"{"agent":"{agent}","entity":"{entity}","state":"{state}","band":"{band}","score":{score},"window_end_ms":{window_end_ms},"time":"{time}","model":"{model}","message":"{message}"}"#;

/// Slack incoming webhook (`https://hooks.slack.com/services/...`).
pub const SLACK_TEMPLATE: &str = r#"{"text":"[{state}] {entity}: {message} (score {score}, window end {time}, agent {agent}, model {model})"}"#;

/// PagerDuty Events API v2 (`https://events.pagerduty.com/v2/enqueue`): trigger on raise,
/// resolve on clear, one dedup key per agent and entity.
pub const PAGERDUTY_TEMPLATE: &str = r#"{"routing_key":"{routing_key}","event_action":"{pd_action}","dedup_key":"{dedup_key}","payload":{"summary":"{message}","source":"{agent}","severity":"{pd_severity}","component":"{entity}","class":"anomaly","custom_details":{"score":{score},"band":"{band}","window_end":"{time}","model":"{model}"}}}"#;

/// A parsed `template` setting.
#[derive(Debug, Clone)]
pub struct Template(String);

impl Template {
    /// `json`, `slack`, `pagerduty` or `file:PATH`.
    pub fn parse(setting: &str, kind: WebhookKind) -> Result<Template, String> {
        let text = match setting {
            "json" => JSON_TEMPLATE.to_string(),
            "slack" => SLACK_TEMPLATE.to_string(),
            "pagerduty" => {
                if kind != WebhookKind::Operational {
                    return Err("the pagerduty template pages people: set kind = \"operational\"".into());
                }
                PAGERDUTY_TEMPLATE.to_string()
            }
            other => match other.strip_prefix("file:") {
                Some(path) => std::fs::read_to_string(path).map_err(|e| format!("cannot read template {path}: {e}"))?,
                None => return Err(format!("`{other}`: expected json, slack, pagerduty or file:PATH")),
            },
        };
        Ok(Template(text))
    }

    /// The body for one alert record.
    pub fn render(&self, values: &[(&str, String)]) -> String {
        let mut out = String::with_capacity(self.0.len() + 256);
        let mut rest = self.0.as_str();
        while let Some(start) = rest.find('{') {
            out.push_str(&rest[..start]);
            let after = &rest[start + 1..];
            let value = after.find('}').and_then(|end| {
                let name = &after[..end];
                values.iter().find(|(k, _)| *k == name).map(|(_, v)| (v, end))
            });
            match value {
                Some((v, end)) => {
                    out.push_str(v);
                    rest = &after[end + 1..];
                }
                None => {
                    out.push('{');
                    rest = after;
                }
            }
        }
        out.push_str(rest);
        out
    }
}

/// JSON string content (no quotes).
fn escape(s: &str) -> String {
    let quoted = serde_json::Value::String(s.to_string()).to_string();
    quoted[1..quoted.len() - 1].to_string()
}

/// `*` and `?` glob match.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// One webhook as an outbox sink.
pub struct WebhookSink {
    name: String,
    agent_id: String,
    url: Secret,
    routing_key: Option<Secret>,
    template: Template,
    /// The routes naming this webhook.
    routes: Vec<RouteConfig>,
    http: ureq::Agent,
    min_spacing: Duration,
    last_request: Option<Instant>,
    /// Highest record seq the endpoint accepted in this run (skip on a retried batch).
    accepted_through: u64,
}

/// Why a webhook could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("webhook {name}: {message}")]
    Setup { name: String, message: String },
}

impl WebhookSink {
    /// The outbox sink name of a webhook.
    pub fn sink_name(name: &str) -> String {
        format!("webhook:{name}")
    }

    pub fn new(config: &WebhookConfig, routes: &[RouteConfig], agent_id: &str) -> Result<WebhookSink, WebhookError> {
        let setup = |message: String| WebhookError::Setup { name: config.name.clone(), message };
        let template = Template::parse(&config.template, config.kind).map_err(setup)?;
        let mut tls = ureq::tls::TlsConfig::builder();
        if let Some(ca) = &config.ca_file {
            let pem = std::fs::read(ca).map_err(|e| setup(format!("cannot read {}: {e}", ca.display())))?;
            let certs: Vec<ureq::tls::Certificate<'static>> = ureq::tls::parse_pem(&pem)
                .filter_map(|item| match item {
                    Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                    _ => None,
                })
                .collect();
            if certs.is_empty() {
                return Err(setup(format!("{} holds no PEM certificate", ca.display())));
            }
            tls = tls.root_certs(ureq::tls::RootCerts::new_with_certs(&certs));
        }
        let http: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_millis(config.timeout_ms.max(1))))
            .http_status_as_error(false)
            .tls_config(tls.build())
            .build()
            .into();
        Ok(WebhookSink {
            name: Self::sink_name(&config.name),
            agent_id: agent_id.to_string(),
            url: config.url.clone(),
            routing_key: config.routing_key.clone(),
            template,
            routes: routes.iter().filter(|r| r.to.contains(&config.name)).cloned().collect(),
            http,
            min_spacing: Duration::from_secs_f64(60.0 / config.max_per_minute.max(1) as f64),
            last_request: None,
            accepted_through: 0,
        })
    }

    fn routed(&self, kind: &str, entity: &str) -> bool {
        self.routes.iter().any(|r| r.kinds.iter().any(|k| k == kind) && r.entities.iter().any(|g| glob_match(g, entity)))
    }

    fn body(&self, body: &Body, event_time_ms: i64) -> Option<String> {
        let Body::Alert { entity, state, band, score, model, message } = body else { return None };
        let kind = match state {
            AlertState::Raised => "raised",
            AlertState::Cleared => "cleared",
            AlertState::Review => "review",
            AlertState::Unknown => return None,
        };
        if !self.routed(kind, entity) {
            return None;
        }
        let time = humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_millis(event_time_ms.max(0) as u64)).to_string();
        let values = [
            ("agent", escape(&self.agent_id)),
            ("entity", escape(entity)),
            ("state", kind.to_string()),
            ("band", escape(band)),
            ("score", format!("{score:.4}")),
            ("message", escape(message)),
            ("model", escape(&format!("{} {}", model.name, model.version))),
            ("window_end_ms", event_time_ms.to_string()),
            ("time", time),
            ("dedup_key", escape(&format!("vigil/{}/{}", self.agent_id, entity))),
            ("routing_key", escape(self.routing_key.as_ref().map(|k| k.expose()).unwrap_or(""))),
            ("pd_action", if kind == "cleared" { "resolve" } else { "trigger" }.to_string()),
            ("pd_severity", if kind == "review" { "warning" } else { "critical" }.to_string()),
        ];
        Some(self.template.render(&values))
    }

    /// Waits for the rate limit (requests are delayed, never dropped).
    async fn pace(&mut self) {
        if let Some(last) = self.last_request {
            let next = last + self.min_spacing;
            if next > Instant::now() {
                tokio::time::sleep_until(next.into()).await;
            }
        }
        self.last_request = Some(Instant::now());
    }
}

impl Sink for WebhookSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn wants(&self, class: RecordClass) -> bool {
        class == RecordClass::Alert
    }

    async fn deliver(&mut self, batch: &[StoredRecord]) -> Result<(), SinkError> {
        for record in batch {
            if record.seq <= self.accepted_through {
                continue;
            }
            let env = record.envelope().map_err(|e| SinkError::transient(format!("undecodable alert record {}: {e}", record.seq)))?;
            let Some(body) = self.body(&env.body, env.event_time_ms) else {
                self.accepted_through = record.seq;
                continue;
            };
            self.pace().await;
            let (http, url) = (self.http.clone(), Arc::new(self.url.expose().to_string()));
            let result = tokio::task::spawn_blocking(move || {
                let response = http.post(url.as_str()).header("Content-Type", "application/json").send(body.as_bytes())?;
                let status = response.status().as_u16();
                let text = response.into_body().read_to_string().unwrap_or_default();
                Ok::<_, ureq::Error>((status, text))
            })
            .await
            .map_err(|e| SinkError::transient(format!("webhook request task failed: {e}")))?;
            match result {
                Ok((status, _)) if (200..300).contains(&status) => {}
                Ok((status, text)) if status == 408 || status == 429 || status >= 500 => {
                    return Err(SinkError::transient(format!("HTTP {status}: {}", text.chars().take(200).collect::<String>())));
                }
                Ok((status, text)) => {
                    // The endpoint will never accept this body: retrying would block every
                    // later alert. Logged with the record's seq; the record stays in the
                    // outbox's other sinks.
                    tracing::error!(sink = %self.name, seq = record.seq, status, response = %text.chars().take(200).collect::<String>(), "webhook refused an alert permanently; skipped");
                }
                // Connection refused, DNS, TLS, timeout: the error text never holds the URL's
                // secret path (ureq reports host and cause only).
                Err(e) => return Err(SinkError::transient(format!("request failed: {e}"))),
            }
            self.accepted_through = record.seq;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("*", "a.b"));
        assert!(glob_match("line1.*", "line1.temp"));
        assert!(!glob_match("line1.*", "line2.temp"));
        assert!(glob_match("l?.t*p", "l1.temp"));
        assert!(!glob_match("l?.t*x", "l1.temp"));
    }

    #[test]
    fn templates_render_valid_json_with_escaped_values() {
        let t = Template::parse("pagerduty", WebhookKind::Operational).unwrap();
        let all = [
            "agent", "entity", "state", "band", "score", "message", "model", "window_end_ms", "time", "dedup_key", "routing_key", "pd_action", "pd_severity",
        ];
        for name in ["json", "slack"] {
            let t = Template::parse(name, WebhookKind::Notify).unwrap();
            let values: Vec<(&str, String)> = all.iter().map(|k| (*k, if *k == "score" || *k == "window_end_ms" { "1".to_string() } else { escape("x \"y\"") })).collect();
            let body = t.render(&values);
            serde_json::from_str::<serde_json::Value>(&body).unwrap_or_else(|e| panic!("{name}: {e}: {body}"));
        }
        let values: Vec<(&str, String)> = all.iter().map(|k| (*k, if *k == "score" || *k == "window_end_ms" { "1".to_string() } else { escape("x \"y\"") })).collect();
        let pd: serde_json::Value = serde_json::from_str(&t.render(&values)).unwrap();
        assert_eq!(pd["payload"]["summary"], "x \"y\"");
        assert!(Template::parse("pagerduty", WebhookKind::Notify).is_err());
    }
}
