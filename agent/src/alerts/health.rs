//! Agent health alerts: problems of the plumbing rather than the plant — the broker reports
//! dropped messages, a publisher's sequence numbers skip, the broker refuses a subscription,
//! a model drifts or is refused. They are counted
//! (`vigil_health_alerts_total{kind}`), logged as warnings, shown on the dashboard and published
//! as JSON on the alert topic with `"entity": "agent"` and `"state": "health"`.
//!
//! Each kind is rate-limited to one alert per [`HEALTH_ALERT_SPACING_MS`] (the metrics keep
//! counting in between), so a broker that drops continuously does not flood the alert topic.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use serde::Serialize;

use crate::api::live::LiveView;
use crate::ingest::mqtt::Outbound;
use crate::ingest::topic::render;
use crate::metrics::{HealthKind, Metrics};
use crate::reading::now_ms;

/// Least spacing of health alerts of one kind.
pub const HEALTH_ALERT_SPACING_MS: i64 = 60_000;

/// The JSON published for a health alert.
#[derive(Debug, Serialize)]
pub struct HealthMessage<'a> {
    pub agent: &'a str,
    pub entity: &'static str,
    pub state: &'static str,
    pub kind: &'static str,
    pub message: &'a str,
    pub at_ms: i64,
}

/// Raises health alerts. Cheap to clone; shared by the threads that detect problems.
#[derive(Clone)]
pub struct HealthReporter {
    pub agent: String,
    pub metrics: Arc<Metrics>,
    pub live: Option<Arc<LiveView>>,
    /// The publish connection and the alert topic template.
    pub mqtt: Option<(Outbound, String)>,
    last: Arc<[AtomicI64; HealthKind::ALL.len()]>,
}

impl HealthReporter {
    pub fn new(agent: String, metrics: Arc<Metrics>, live: Option<Arc<LiveView>>, mqtt: Option<(Outbound, String)>) -> Self {
        HealthReporter { agent, metrics, live, mqtt, last: Arc::new(std::array::from_fn(|_| AtomicI64::new(i64::MIN))) }
    }

    /// Raises a health alert of `kind` unless one was raised less than
    /// [`HEALTH_ALERT_SPACING_MS`] ago; returns whether it was raised.
    pub fn raise(&self, kind: HealthKind, message: String) -> bool {
        let now = now_ms();
        let last = &self.last[kind as usize];
        let prev = last.load(Ordering::Relaxed);
        if prev != i64::MIN && now - prev < HEALTH_ALERT_SPACING_MS {
            tracing::debug!(kind = kind.as_str(), "{message} (health alert rate-limited)");
            return false;
        }
        if last.compare_exchange(prev, now, Ordering::Relaxed, Ordering::Relaxed).is_err() {
            return false;
        }
        self.metrics.health_alerts.inc(kind);
        tracing::warn!(kind = kind.as_str(), "agent health alert: {message}");
        if let Some((outbound, template)) = &self.mqtt {
            let m = HealthMessage { agent: &self.agent, entity: "agent", state: "health", kind: kind.as_str(), message: &message, at_ms: now };
            match serde_json::to_vec(&m) {
                Ok(payload) => outbound.publish(render(template, &[("agent", &self.agent), ("entity", "agent")]), payload),
                Err(e) => tracing::error!(error = %e, "cannot encode a health alert"),
            }
        }
        if let Some(live) = &self.live {
            live.health(kind, message);
        }
        true
    }
}
