//! Modbus write-back: an alert switches something on in the plant (a stack light, an
//! interlock request) by writing a coil or a holding register.
//!
//! # Invariants
//!
//! - **Off unless configured.** Only `[[ingest.modbus.write_back]]` rules write, and only to
//!   their own device, table, address and value.
//! - **Alert band only.** A rule fires on an alert being *raised* (hysteresis passed, band
//!   `alert`); review-band events and clears never write.
//! - **Rate limited.** At most one write per rule per `min_interval_s`; the refusals are audited.
//! - **Audited.** Every decision — written, refused by the rate limit, failed (with the device's
//!   error) — is logged and committed to the `audit` table ([`WriteAudit`], `vigil audit`).
//! - **Serialised with polling.** The [`WriteBackPublisher`] (on the alert stage's thread) only
//!   decides; the write itself is a [`WriteCommand`] executed by the poller that owns the
//!   device's connection, between two polls.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use serde::{Deserialize, Serialize};

use crate::alerts::publish::Publisher;
use crate::alerts::AlertMessage;
use crate::commit_log::InternalWrite;
use crate::config::modbus::{Table, WriteBackRule};
use crate::metrics::Metrics;
use crate::reading::{now_ms, EpochMs};

/// One write-back decision, as stored in the `audit` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WriteAudit {
    /// When the decision was made (or the write done), epoch ms.
    pub at_ms: EpochMs,
    /// Index of the rule in `ingest.modbus.write_back`.
    pub rule: usize,
    /// The alert's entity and window end.
    pub entity: String,
    pub window_end_ms: EpochMs,
    pub score: f64,
    pub device: String,
    /// `coil` or `holding`.
    pub table: String,
    pub address: u16,
    pub value: u16,
    /// `written`, `rate_limited` or `failed: <reason>`.
    pub outcome: String,
}

/// A write for the poller that owns `audit.device`'s connection.
#[derive(Debug, Clone)]
pub struct WriteCommand {
    pub table: Table,
    /// The audit entry to complete with the outcome.
    pub audit: WriteAudit,
}

/// Logs audit entries and sends them to the commit log.
#[derive(Clone)]
pub struct AuditLog {
    pub to_commit_log: Sender<InternalWrite>,
    pub metrics: Arc<Metrics>,
}

impl AuditLog {
    pub fn record(&self, entry: WriteAudit) {
        let a = &entry;
        if a.outcome == "written" {
            self.metrics.modbus.writes.inc();
            tracing::warn!(device = %a.device, table = %a.table, address = a.address, value = a.value, entity = %a.entity, rule = a.rule, outcome = %a.outcome, "modbus write-back");
        } else {
            self.metrics.modbus.writes_refused.inc();
            tracing::warn!(device = %a.device, table = %a.table, address = a.address, value = a.value, entity = %a.entity, rule = a.rule, outcome = %a.outcome, "modbus write-back not done");
        }
        if self.to_commit_log.send(InternalWrite::Audit(vec![entry])).is_err() {
            tracing::error!("audit entry not stored: the commit log has stopped");
        }
    }
}

/// At most one event per `min_interval`.
#[derive(Debug, Clone)]
pub struct RateLimit {
    min_interval: Duration,
    last: Option<Instant>,
}

impl RateLimit {
    pub fn new(min_interval: Duration) -> RateLimit {
        RateLimit { min_interval, last: None }
    }

    /// Whether an event at `now` is allowed; an allowed event starts a new interval.
    pub fn allow(&mut self, now: Instant) -> bool {
        if self.last.is_some_and(|t| now.saturating_duration_since(t) < self.min_interval) {
            return false;
        }
        self.last = Some(now);
        true
    }
}

/// Whether `rule` fires for `message`: a raised alert (alert band) on its entity.
pub fn fires(rule: &WriteBackRule, message: &AlertMessage) -> bool {
    message.state == "raised" && message.band == "alert" && (rule.entity == "*" || rule.entity == message.entity)
}

/// The alert-stage side of write-back (see the module docs).
pub struct WriteBackPublisher {
    rules: Vec<(WriteBackRule, Mutex<RateLimit>)>,
    /// The poller of each device: `(device name, command queue)`.
    pollers: Vec<(String, tokio::sync::mpsc::UnboundedSender<WriteCommand>)>,
    audit: AuditLog,
}

impl WriteBackPublisher {
    pub fn new(rules: &[WriteBackRule], pollers: Vec<(String, tokio::sync::mpsc::UnboundedSender<WriteCommand>)>, audit: AuditLog) -> Self {
        let rules = rules.iter().map(|r| (r.clone(), Mutex::new(RateLimit::new(Duration::from_secs(r.min_interval_s))))).collect();
        WriteBackPublisher { rules, pollers, audit }
    }
}

impl Publisher for WriteBackPublisher {
    fn publish(&self, m: &AlertMessage) {
        for (i, (rule, limit)) in self.rules.iter().enumerate() {
            if !fires(rule, m) {
                continue;
            }
            let mut audit = WriteAudit {
                at_ms: now_ms(),
                rule: i,
                entity: m.entity.clone(),
                window_end_ms: m.window_end_ms,
                score: m.score,
                device: rule.device.clone(),
                table: rule.table.as_str().to_string(),
                address: rule.address,
                value: rule.value,
                outcome: String::new(),
            };
            if !limit.lock().unwrap_or_else(|e| e.into_inner()).allow(Instant::now()) {
                audit.outcome = format!("rate_limited (one write per {} s)", rule.min_interval_s);
                self.audit.record(audit);
                continue;
            }
            let poller = self.pollers.iter().find(|(d, _)| *d == rule.device).map(|(_, tx)| tx);
            let command = WriteCommand { table: rule.table, audit };
            let unsent = match poller {
                Some(tx) => tx.send(command).err().map(|e| e.0),
                None => Some(command),
            };
            if let Some(command) = unsent {
                let mut audit = command.audit;
                audit.outcome = "failed: the Modbus poller is not running".into();
                self.audit.record(audit);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloud_uplink::ModelRef;

    fn message(state: &'static str, band: &'static str, entity: &str) -> AlertMessage {
        AlertMessage {
            agent: "a".into(),
            entity: entity.into(),
            state,
            band,
            score: 0.9,
            error: 0.1,
            window_end_ms: 1000,
            model: ModelRef { name: "m".into(), version: "1".into(), sha256: "00".into() },
            message: String::new(),
        }
    }

    fn rule(entity: &str) -> WriteBackRule {
        WriteBackRule { entity: entity.into(), device: "plc".into(), table: Table::Coil, address: 3, value: 1, min_interval_s: 10 }
    }

    #[test]
    fn only_raised_alerts_on_the_rule_entity_fire() {
        assert!(fires(&rule("e"), &message("raised", "alert", "e")));
        assert!(fires(&rule("*"), &message("raised", "alert", "x")));
        assert!(!fires(&rule("e"), &message("raised", "alert", "x")));
        assert!(!fires(&rule("e"), &message("review", "review", "e")));
        assert!(!fires(&rule("e"), &message("cleared", "normal", "e")));
    }

    #[test]
    fn rate_limit_allows_one_per_interval() {
        let t0 = Instant::now();
        let mut r = RateLimit::new(Duration::from_secs(10));
        assert!(r.allow(t0));
        assert!(!r.allow(t0 + Duration::from_secs(9)));
        assert!(r.allow(t0 + Duration::from_secs(10)));
        assert!(!r.allow(t0 + Duration::from_secs(11)));
    }

    #[test]
    fn publisher_sends_commands_and_audits_refusals() {
        let (tx, rx) = crossbeam_channel::unbounded();
        let audit = AuditLog { to_commit_log: tx, metrics: Arc::new(Metrics::default()) };
        let (ptx, mut prx) = tokio::sync::mpsc::unbounded_channel();
        let p = WriteBackPublisher::new(&[rule("e")], vec![("plc".into(), ptx)], audit);
        p.publish(&message("review", "review", "e"));
        assert!(prx.try_recv().is_err(), "review events never write");
        p.publish(&message("raised", "alert", "e"));
        let cmd = prx.try_recv().expect("a write command");
        assert_eq!((cmd.table, cmd.audit.address, cmd.audit.value, cmd.audit.device.as_str()), (Table::Coil, 3, 1, "plc"));
        assert!(rx.try_recv().is_err(), "the poller audits the write itself");
        p.publish(&message("raised", "alert", "e"));
        assert!(prx.try_recv().is_err(), "rate limited");
        match rx.try_recv() {
            Ok(InternalWrite::Audit(a)) => assert!(a[0].outcome.starts_with("rate_limited"), "{:?}", a[0]),
            _ => panic!("expected an audit entry"),
        }
    }
}
