//! Where alert, clear and review messages go besides the outbox.
//!
//! Publishing never blocks the alert stage: the MQTT publisher queues into the client's request
//! channel and drops (and logs) a message if that queue is full. The durable copy of every alert
//! is the outbox record committed by the alert stage.

use std::io::Write;


use super::AlertMessage;
use crate::ingest::mqtt::Outbound;
use crate::ingest::topic::render;

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
