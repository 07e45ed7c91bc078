//! What the broker answered to the ingest connection's subscriptions (MQTT 5 SUBACK reason
//! codes), so that a filter the broker refuses is never silent.
//!
//! # Design constraints
//!
//! - **Every reason code is mapped back to its filter.** A SUBACK names its SUBSCRIBE only by
//!   packet id and carries one reason code per topic filter, in the order of the SUBSCRIBE's
//!   filters (MQTT 5 §3.9.3). rumqttc assigns the packet id when the SUBSCRIBE goes out and
//!   reports it as `Outgoing::Subscribe(pkid)`, in the order the requests were handed to the
//!   event loop. [`Ledger`] pairs the two: the filter lists handed over (in order) with the
//!   packet ids as they go out, and each SUBACK with the filters of its packet id. After each
//!   CONNACK the ingest connection subscribes to every filter again (its own Sparkplug STATE
//!   topic, every route's filter, the `$SYS` drop counter), and the ledger starts over (a
//!   SUBACK never crosses connections).
//! - **A refusal is visible where an operator looks**: an ERROR log line naming the filter and
//!   the broker's reason code (never the credentials), `vigil_mqtt_subscription_refused_total`,
//!   `vigil_mqtt_subscription_granted` = 0, a `subscription_refused` agent health alert, and
//!   `degraded` with the filter on `/health` and `/ready` ([`SubscriptionStatus::refused`]).
//!   It clears when a later SUBACK grants the filter.
//! - **Retried per connection, not in a loop.** The agent subscribes to every filter again
//!   after each CONNACK, so a filter refused on one connection is asked for again on the next
//!   (after an ACL fix the broker may disconnect the client itself: Mosquitto's dynamic
//!   security plugin does when a role changes). Asking again on the same connection would only
//!   hammer a broker whose ACL has not changed.
//! - **What a SUBACK cannot show.** A broker that checks its ACL at delivery instead of at
//!   SUBSCRIBE grants the filter and then delivers nothing: Mosquitto 2.0.11's `acl_file` does
//!   that (measured: granted QoS 1 for a filter without `read` access). Only ACLs checked at
//!   SUBSCRIBE — Mosquitto's dynamic security plugin (`subscribePattern` /
//!   `subscribeLiteral`, reason code 0x87), or any broker that refuses in the SUBACK — show up
//!   here.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;

use rumqttc::v5::mqttbytes::v5::{SubAck, SubscribeReasonCode};
use rumqttc::v5::mqttbytes::QoS;

use crate::metrics::{Collector, Exposition, Kind};

/// One topic filter of a SUBSCRIBE and the QoS asked for.
pub type Requested = (String, QoS);

/// The broker's answer for one filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub filter: String,
    pub requested: QoS,
    pub code: SubscribeReasonCode,
}

/// Pairs SUBACKs with the filters they answer (see the module doc). Pure, per connection.
#[derive(Debug, Default)]
pub struct Ledger {
    /// Filter lists of SUBSCRIBEs handed to the event loop and not yet sent, oldest first.
    queued: VecDeque<Vec<Requested>>,
    /// SUBSCRIBEs sent on this connection and not yet answered, by packet id.
    sent: HashMap<u16, Vec<Requested>>,
}

impl Ledger {
    /// A new connection: nothing queued or sent on an earlier one is answered on it.
    pub fn reset(&mut self) {
        self.queued.clear();
        self.sent.clear();
    }

    /// A SUBSCRIBE with these filters, in this order, was handed to the event loop.
    pub fn queued(&mut self, filters: Vec<Requested>) {
        self.queued.push_back(filters);
    }

    /// rumqttc sent the oldest queued SUBSCRIBE with packet id `pkid`. Returns false when
    /// nothing was queued (a SUBSCRIBE from before the last [`reset`](Self::reset)).
    pub fn sent(&mut self, pkid: u16) -> bool {
        match self.queued.pop_front() {
            Some(filters) => {
                self.sent.insert(pkid, filters);
                true
            }
            None => false,
        }
    }

    /// The answers of one SUBACK, one per filter of its SUBACK's SUBSCRIBE, in order; `None`
    /// for a packet id this connection did not send. A SUBACK with fewer reason codes than
    /// filters (a protocol violation) answers only the first ones; the rest stay unanswered.
    pub fn answered(&mut self, ack: &SubAck) -> Option<Vec<Answer>> {
        let filters = self.sent.remove(&ack.pkid)?;
        if filters.len() != ack.return_codes.len() {
            tracing::warn!(pkid = ack.pkid, filters = filters.len(), codes = ack.return_codes.len(), "SUBACK has a different number of reason codes than its SUBSCRIBE had filters");
        }
        Some(
            filters
                .into_iter()
                .zip(&ack.return_codes)
                .map(|((filter, requested), &code)| Answer { filter, requested, code })
                .collect(),
        )
    }

    /// SUBSCRIBEs queued or sent and not answered yet.
    pub fn outstanding(&self) -> usize {
        self.queued.len() + self.sent.len()
    }
}

/// The reason code's byte and its name in the MQTT 5 specification.
pub fn reason(code: SubscribeReasonCode) -> (u8, &'static str) {
    use SubscribeReasonCode as C;
    match code {
        C::Success(qos) => (qos as u8, "granted"),
        // MQTT 3.1.1's only refusal code; rumqttc's v5 parser reads 0x80 as `Unspecified`.
        C::Failure => (0x80, "failure"),
        C::Unspecified => (0x80, "unspecified error"),
        C::ImplementationSpecific => (0x83, "implementation specific error"),
        C::NotAuthorized => (0x87, "not authorized"),
        C::TopicFilterInvalid => (0x8F, "topic filter invalid"),
        C::PkidInUse => (0x91, "packet identifier in use"),
        C::QuotaExceeded => (0x97, "quota exceeded"),
        C::SharedSubscriptionsNotSupported => (0x9E, "shared subscriptions not supported"),
        C::SubscriptionIdNotSupported => (0xA1, "subscription identifiers not supported"),
        C::WildcardSubscriptionsNotSupported => (0xA2, "wildcard subscriptions not supported"),
    }
}

/// A filter the broker refused on its last answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub filter: String,
    pub code: u8,
    pub reason: &'static str,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (0x{:02X} {})", self.filter, self.code, self.reason)
    }
}

/// What changed for a filter with one answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Granted, as before (or for the first time).
    Granted,
    /// Granted after the broker had refused it.
    GrantedAgain,
    /// Refused (again or for the first time).
    Refused(Refusal),
}

#[derive(Debug, Default, Clone)]
struct FilterState {
    /// The last answer: granted, or refused with this code.
    refused: Option<Refusal>,
    /// SUBACKs that refused the filter, since the agent started.
    refusals: u64,
}

/// The broker's last answer per filter, shared by the ingest connection (writes, once per
/// SUBACK), the HTTP API (`/health`, `/ready`) and `/metrics`.
///
/// Exports (only filters that were answered at least once):
/// - `vigil_mqtt_subscription_granted{filter}` (gauge): 1 when the broker's last SUBACK granted
///   the filter, 0 when it refused it (nothing matching it arrives).
/// - `vigil_mqtt_subscription_refused_total{filter}` (counter): SUBACKs that refused the filter.
#[derive(Debug, Default)]
pub struct SubscriptionStatus {
    filters: Mutex<BTreeMap<String, FilterState>>,
}

impl SubscriptionStatus {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, FilterState>> {
        // A poisoned lock means a panic elsewhere while holding it; the map is intact.
        self.filters.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records one answer; returns what changed.
    pub fn record(&self, answer: &Answer) -> Change {
        let mut filters = self.lock();
        let state = filters.entry(answer.filter.clone()).or_default();
        match answer.code {
            SubscribeReasonCode::Success(_) => match state.refused.take() {
                Some(_) => Change::GrantedAgain,
                None => Change::Granted,
            },
            code => {
                let (code, reason) = reason(code);
                let refusal = Refusal { filter: answer.filter.clone(), code, reason };
                state.refused = Some(refusal.clone());
                state.refusals += 1;
                Change::Refused(refusal)
            }
        }
    }

    /// Filters the broker refused on its last answer, by filter.
    pub fn refused(&self) -> Vec<Refusal> {
        self.lock().values().filter_map(|s| s.refused.clone()).collect()
    }
}

impl Collector for SubscriptionStatus {
    fn collect(&self, out: &mut Exposition) {
        let filters = self.lock().clone();
        if filters.is_empty() {
            return;
        }
        out.family("vigil_mqtt_subscription_granted", Kind::Gauge, "1 when the broker's last SUBACK granted the MQTT topic filter, 0 when it refused it (nothing matching it arrives).");
        for (filter, s) in &filters {
            out.sample("vigil_mqtt_subscription_granted", &[("filter", filter)], if s.refused.is_some() { 0.0 } else { 1.0 });
        }
        out.family("vigil_mqtt_subscription_refused_total", Kind::Counter, "SUBACKs in which the broker refused the MQTT topic filter (e.g. its ACL denies it).");
        for (filter, s) in &filters {
            out.sample("vigil_mqtt_subscription_refused_total", &[("filter", filter)], s.refusals as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn suback(pkid: u16, codes: &[SubscribeReasonCode]) -> SubAck {
        SubAck { pkid, return_codes: codes.to_vec(), properties: None }
    }

    fn req(filters: &[&str]) -> Vec<Requested> {
        filters.iter().map(|f| (f.to_string(), QoS::AtLeastOnce)).collect()
    }

    #[test]
    fn codes_map_back_to_filters_by_packet_id_and_order() {
        let mut l = Ledger::default();
        l.queued(req(&["a/#", "b/+"]));
        l.queued(req(&["c"]));
        assert!(l.sent(7));
        assert!(l.sent(8));
        // Answers may come in any order across SUBSCRIBEs; within one, in filter order.
        let c = l.answered(&suback(8, &[SubscribeReasonCode::NotAuthorized])).unwrap();
        assert_eq!(c, vec![Answer { filter: "c".into(), requested: QoS::AtLeastOnce, code: SubscribeReasonCode::NotAuthorized }]);
        let ab = l.answered(&suback(7, &[SubscribeReasonCode::Success(QoS::AtLeastOnce), SubscribeReasonCode::Unspecified])).unwrap();
        assert_eq!(ab.iter().map(|a| (a.filter.as_str(), a.code)).collect::<Vec<_>>(), vec![("a/#", SubscribeReasonCode::Success(QoS::AtLeastOnce)), ("b/+", SubscribeReasonCode::Unspecified)]);
        assert_eq!(l.outstanding(), 0);
        // Answered once only; unknown packet ids are not ours.
        assert!(l.answered(&suback(7, &[SubscribeReasonCode::Unspecified])).is_none());
    }

    #[test]
    fn a_new_connection_forgets_the_old_ones_subscribes() {
        let mut l = Ledger::default();
        l.queued(req(&["a"]));
        assert!(l.sent(1));
        l.queued(req(&["b"]));
        l.reset();
        assert_eq!(l.outstanding(), 0);
        assert!(!l.sent(2), "a SUBSCRIBE from before the reset is not paired with anything");
        assert!(l.answered(&suback(1, &[SubscribeReasonCode::Success(QoS::AtMostOnce)])).is_none());
    }

    #[test]
    fn short_suback_answers_the_first_filters_only() {
        let mut l = Ledger::default();
        l.queued(req(&["a", "b"]));
        l.sent(3);
        let a = l.answered(&suback(3, &[SubscribeReasonCode::NotAuthorized])).unwrap();
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].filter, "a");
    }

    #[test]
    fn refusal_is_reported_until_a_later_suback_grants_it() {
        let s = SubscriptionStatus::default();
        let answer = |f: &str, code| Answer { filter: f.into(), requested: QoS::AtLeastOnce, code };
        assert_eq!(s.record(&answer("ok/#", SubscribeReasonCode::Success(QoS::AtLeastOnce))), Change::Granted);
        let r = s.record(&answer("no/#", SubscribeReasonCode::NotAuthorized));
        assert_eq!(r, Change::Refused(Refusal { filter: "no/#".into(), code: 0x87, reason: "not authorized" }));
        s.record(&answer("no/#", SubscribeReasonCode::NotAuthorized));
        assert_eq!(s.refused().iter().map(ToString::to_string).collect::<Vec<_>>(), vec!["no/# (0x87 not authorized)"]);
        let mut page = Exposition::default();
        s.collect(&mut page);
        let page = page.into_string();
        assert!(page.contains("vigil_mqtt_subscription_granted{filter=\"no/#\"} 0\n"), "{page}");
        assert!(page.contains("vigil_mqtt_subscription_granted{filter=\"ok/#\"} 1\n"), "{page}");
        assert!(page.contains("vigil_mqtt_subscription_refused_total{filter=\"no/#\"} 2\n"), "{page}");
        assert!(page.contains("vigil_mqtt_subscription_refused_total{filter=\"ok/#\"} 0\n"), "{page}");

        assert_eq!(s.record(&answer("no/#", SubscribeReasonCode::Success(QoS::AtLeastOnce))), Change::GrantedAgain);
        assert!(s.refused().is_empty());
        let mut page = Exposition::default();
        s.collect(&mut page);
        let page = page.into_string();
        assert!(page.contains("vigil_mqtt_subscription_granted{filter=\"no/#\"} 1\n"), "{page}");
        assert!(page.contains("vigil_mqtt_subscription_refused_total{filter=\"no/#\"} 2\n"), "the counter keeps counting: {page}");
    }

    #[test]
    fn mqtt_3_failure_and_mqtt_5_codes_have_their_bytes() {
        assert_eq!(reason(SubscribeReasonCode::Failure), (0x80, "failure"));
        assert_eq!(reason(SubscribeReasonCode::Unspecified).0, 0x80);
        assert_eq!(reason(SubscribeReasonCode::NotAuthorized).0, 0x87);
        assert_eq!(reason(SubscribeReasonCode::WildcardSubscriptionsNotSupported).0, 0xA2);
        assert_eq!(reason(SubscribeReasonCode::Success(QoS::AtLeastOnce)).0, 1);
    }
}
