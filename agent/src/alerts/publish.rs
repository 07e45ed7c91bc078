//! Where alert, clear and review messages go besides the outbox.
//!
//! Publishing never blocks the alert stage: the MQTT publisher hands messages to the publish
//! connection's [`Outbound`], which queues them. The durable copy of every alert is the outbox
//! record committed by the alert stage.
//!
//! # Refused publishes
//!
//! The agent speaks MQTT 5, whose PUBACK carries a reason code: a broker that refuses an alert
//! publish (Mosquitto's ACL: `0x87 not authorized`) says so instead of acknowledging and
//! dropping it as MQTT 3.1.1 must. [`PublishRefusals`] counts those answers per reason, the
//! publish connection logs each as an ERROR, and `/health` is degraded until the broker accepts
//! a later publish. No health alert is raised for it: it would go out on the same connection,
//! to the same refused topic. rumqttc reports a PUBACK by packet id only, so the refusal names
//! the configured topics (`alerts.topic`, `alerts.review_topic`), not the message's topic.

use std::io::Write;
use std::sync::Mutex;

use rumqttc::v5::mqttbytes::v5::PubAckReason;

use super::AlertMessage;
use crate::ingest::mqtt::Outbound;
use crate::ingest::topic::render;
use crate::metrics::{Collector, Exposition, Kind};

/// A destination for alert messages.
pub trait Publisher: Send {
    fn publish(&self, message: &AlertMessage);
}

/// One line per raise/clear on standard output (review events go to the log only).
pub struct StdoutPublisher;

impl Publisher for StdoutPublisher {
    fn publish(&self, m: &AlertMessage) {
        if m.state == "review" {
            tracing::info!(entity = %m.entity, score = m.score, "review: {}", m.message);
            return;
        }
        tracing::warn!(entity = %m.entity, state = m.state, score = m.score, window_end_ms = m.window_end_ms, "{}", m.message);
        let mut out = std::io::stdout().lock();
        let window_end = std::time::UNIX_EPOCH + std::time::Duration::from_millis(m.window_end_ms.max(0) as u64);
        let _ = writeln!(
            out,
            "ALERT {:<7} {:<28} score={:.3} window_end={} {}",
            m.state.to_uppercase(),
            m.entity,
            m.score,
            humantime::format_rfc3339_seconds(window_end),
            m.message
        );
        let _ = out.flush();
    }
}

/// Alerts and clears as JSON on `alerts.topic`, review events on `alerts.review_topic` (QoS 1).
pub struct MqttPublisher {
    pub outbound: Outbound,
    pub agent: String,
    pub alert_topic: String,
    pub review_topic: String,
}

impl Publisher for MqttPublisher {
    fn publish(&self, m: &AlertMessage) {
        let template = if m.state == "review" { &self.review_topic } else { &self.alert_topic };
        let topic = render(template, &[("agent", &self.agent), ("entity", &m.entity)]);
        let payload = match serde_json::to_vec(m) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "cannot encode alert message");
                return;
            }
        };
        self.outbound.publish(topic, payload);
    }
}

/// The reason code's byte and its name in the MQTT 5 specification; `None` for success
/// (`0x10 no matching subscribers` is a success: nobody listens, the broker took it).
pub fn refusal_reason(reason: PubAckReason) -> Option<(u8, &'static str)> {
    use PubAckReason as R;
    Some(match reason {
        R::Success | R::NoMatchingSubscribers => return None,
        R::UnspecifiedError => (0x80, "unspecified error"),
        R::ImplementationSpecificError => (0x83, "implementation specific error"),
        R::NotAuthorized => (0x87, "not authorized"),
        R::TopicNameInvalid => (0x90, "topic name invalid"),
        R::PacketIdentifierInUse => (0x91, "packet identifier in use"),
        R::QuotaExceeded => (0x97, "quota exceeded"),
        R::PayloadFormatInvalid => (0x99, "payload format invalid"),
    })
}

#[derive(Debug, Default, Clone)]
struct RefusalCounts {
    /// Refusals per reason name, since start.
    by_reason: std::collections::BTreeMap<&'static str, u64>,
    /// The last PUBACK was a refusal: `(code, reason)`.
    last_refused: Option<(u8, &'static str)>,
}

/// PUBACKs on the publish connection that refused a message (see the module doc). Shared by
/// the publish connection (writes), the HTTP API (`/health`, `/ready`) and `/metrics`.
///
/// Exports `vigil_mqtt_publish_refused_total{reason}` (counter): alert, review and health
/// messages the broker refused in its PUBACK, per MQTT 5 reason (e.g. `not authorized`); the
/// family appears with the first refusal.
#[derive(Debug, Default)]
pub struct PublishRefusals(Mutex<RefusalCounts>);

impl PublishRefusals {
    fn lock(&self) -> std::sync::MutexGuard<'_, RefusalCounts> {
        // A poisoned lock means a panic elsewhere while holding it; the counts are intact.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One PUBACK; returns the refusal's code and reason if it refused the message.
    pub fn record(&self, reason: PubAckReason) -> Option<(u8, &'static str)> {
        let refusal = refusal_reason(reason);
        let mut c = self.lock();
        if let Some((_, name)) = refusal {
            *c.by_reason.entry(name).or_default() += 1;
        }
        c.last_refused = refusal;
        refusal
    }

    /// While the broker's last answer was a refusal: a line for `/health`.
    pub fn degraded(&self) -> Option<String> {
        let c = self.lock();
        let (code, reason) = c.last_refused?;
        let total: u64 = c.by_reason.values().sum();
        Some(format!("MQTT broker refused alert publishes: {total} since start, the last one 0x{code:02X} {reason} (check that the agent's user may publish to alerts.topic and alerts.review_topic)"))
    }
}

impl Collector for PublishRefusals {
    fn collect(&self, out: &mut Exposition) {
        let c = self.lock().clone();
        if c.by_reason.is_empty() {
            return;
        }
        out.family("vigil_mqtt_publish_refused_total", Kind::Counter, "Alert, review and health messages the MQTT broker refused in its PUBACK, per MQTT 5 reason.");
        for (reason, n) in &c.by_reason {
            out.sample("vigil_mqtt_publish_refused_total", &[("reason", reason)], *n as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_publishes_degrade_until_one_is_accepted() {
        let r = PublishRefusals::default();
        assert_eq!(r.record(PubAckReason::NoMatchingSubscribers), None, "nobody listening is not a refusal");
        assert!(r.degraded().is_none());
        assert_eq!(r.record(PubAckReason::NotAuthorized), Some((0x87, "not authorized")));
        r.record(PubAckReason::NotAuthorized);
        let line = r.degraded().unwrap();
        assert!(line.contains("2 since start") && line.contains("0x87 not authorized"), "{line}");
        let mut page = Exposition::default();
        r.collect(&mut page);
        assert!(page.into_string().contains("vigil_mqtt_publish_refused_total{reason=\"not authorized\"} 2\n"));
        assert_eq!(r.record(PubAckReason::Success), None);
        assert!(r.degraded().is_none(), "a later accepted publish clears it");
    }
}
