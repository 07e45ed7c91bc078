//! Activity sessions (`session` records): machine runs, duty cycles — per entity (walked on the
//! entity's own readings and watermark) and per asset (walked on the asset's session channel at
//! the asset's watermark, see [`super::asset::AssetWindows::walk_sessions`]; the same rules
//! below, with the asset id as the session's entity).
//!
//! # Design constraints
//!
//! - **Event-time order, decided at the watermark.** Readings are walked in event-time order
//!   once the entity's watermark (largest event time − allowed lateness) has passed them, so
//!   out-of-order readings within the lateness bound are placed correctly; a reading below the
//!   watermark when it arrives does not change sessions (it is late, as for the windows).
//! - A session **opens** at the first walked reading meeting the condition (`above` and/or
//!   `below`) and **closes** when the watermark passes its last active reading + `gap_ms`
//!   without another active reading. Its statistics cover every walked reading from its first
//!   to its last active one (dips shorter than the gap included).
//! - **Scores and alerts come from the alert stage.** The worker sends marks on the windows'
//!   path ([`super::Emit`]): an open mark before any window ending at or after the session
//!   start, and the closed session once every sliding window overlapping it has been emitted
//!   (watermark ≥ end + max(gap, window size)). The alert stage folds the scores of the windows
//!   holding a session reading — ending in `[start, end + window size)` — into the record (see
//!   [`crate::alerts`]).
//! - The state is plain data, checkpointed with the entity's windows.

use serde::{Deserialize, Serialize};

use super::aggregate::Summary;

/// Session settings, from `[pipeline.session]`.
#[derive(Debug, Clone)]
pub struct SessionSettings {
    pub entities: Vec<String>,
    pub above: Option<f64>,
    pub below: Option<f64>,
    pub gap_ms: i64,
}

impl From<&crate::config::SessionConfig> for SessionSettings {
    fn from(c: &crate::config::SessionConfig) -> Self {
        SessionSettings { entities: c.entities.clone(), above: c.above, below: c.below, gap_ms: c.gap_ms as i64 }
    }
}

impl SessionSettings {
    pub fn applies_to(&self, entity: &str) -> bool {
        self.entities.iter().any(|p| crate::alerts::webhook::glob_match(p, entity))
    }

    fn active(&self, v: f64) -> bool {
        self.above.is_none_or(|a| v > a) && self.below.is_none_or(|b| v < b)
    }
}

/// An open session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpenSession {
    pub start_ms: i64,
    pub last_active_ms: i64,
    /// Readings from the start through the last active one.
    pub summary: Summary,
    /// Inactive readings after the last active one (joined to the session if another active
    /// reading follows within the gap).
    pub tail: Vec<(i64, f64)>,
}

/// A closed session waiting until every window overlapping it has been emitted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClosedSession {
    pub start_ms: i64,
    pub end_ms: i64,
    pub summary: Summary,
}

/// What the walk produced, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum SessionEvent {
    Opened { start_ms: i64 },
    Closed(ClosedSession),
}

/// One entity's session state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Sessions {
    /// Readings with event time at or below this have been walked.
    pub walked_through_ms: Option<i64>,
    /// Boxed: few entities have a session open at a time (10 000 entities × the open session's
    /// ~160 bytes of statistics would otherwise be resident whether used or not).
    pub open: Option<Box<OpenSession>>,
    /// Closed, not yet released (see the module docs).
    pub closing: Vec<ClosedSession>,
}

impl Sessions {
    /// Walks the readings of `sorted` (ascending event time) in `(walked_through, watermark]`;
    /// emits an open event per session started. Closed sessions are queued for [`Self::release`].
    pub fn walk(&mut self, sorted: impl Iterator<Item = (i64, f64)>, watermark_ms: i64, s: &SessionSettings, alpha: f64, out: &mut Vec<SessionEvent>) {
        let from = self.walked_through_ms;
        if from.is_some_and(|f| watermark_ms <= f) {
            return;
        }
        for (t, v) in sorted.filter(|(t, _)| from.is_none_or(|f| *t > f) && *t <= watermark_ms) {
            self.close_if_gap(t, s);
            if s.active(v) {
                match &mut self.open {
                    Some(open) => {
                        for (tt, tv) in open.tail.drain(..) {
                            open.summary.add(tt, tv, alpha);
                        }
                        open.summary.add(t, v, alpha);
                        open.last_active_ms = t;
                    }
                    None => {
                        let mut summary = Summary::new(t, v);
                        summary.add(t, v, alpha);
                        self.open = Some(Box::new(OpenSession { start_ms: t, last_active_ms: t, summary, tail: Vec::new() }));
                        out.push(SessionEvent::Opened { start_ms: t });
                    }
                }
            } else if let Some(open) = &mut self.open {
                open.tail.push((t, v));
            }
        }
        self.close_if_gap(watermark_ms, s);
        self.walked_through_ms = Some(watermark_ms);
    }

    /// Closes the open session if no active reading came within the gap before `now_ms`.
    fn close_if_gap(&mut self, now_ms: i64, s: &SessionSettings) {
        if self.open.as_ref().is_some_and(|o| now_ms >= o.last_active_ms + s.gap_ms) {
            if let Some(o) = self.open.take() {
                self.closing.push(ClosedSession { start_ms: o.start_ms, end_ms: o.last_active_ms, summary: o.summary });
            }
        }
    }

    /// Releases the closed sessions whose overlapping windows (size `window_ms`) have all been
    /// emitted by a watermark of `watermark_ms`.
    pub fn release(&mut self, watermark_ms: i64, window_ms: i64, s: &SessionSettings, out: &mut Vec<SessionEvent>) {
        let wait = window_ms.max(s.gap_ms);
        while self.closing.first().is_some_and(|c| watermark_ms >= c.end_ms + wait) {
            out.push(SessionEvent::Closed(self.closing.remove(0)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_open_and_close_on_gaps_in_event_time() {
        let s = SessionSettings { entities: vec!["*".into()], above: Some(5.0), below: None, gap_ms: 3000 };
        let mut state = Sessions::default();
        let mut out = Vec::new();
        // On 1000..=4000 (a 1 s dip at 3000 inside the gap), off from 5000, on again at 10000.
        let readings: Vec<(i64, f64)> =
            vec![(0, 1.0), (1000, 9.0), (2000, 8.0), (3000, 1.0), (4000, 7.0), (5000, 0.0), (6000, 0.0), (10_000, 6.0)];
        for (i, &(t, _)) in readings.iter().enumerate() {
            state.walk(readings[..=i].iter().copied(), t, &s, 0.01, &mut out);
            state.release(t, 1000, &s, &mut out);
        }
        let Some(SessionEvent::Closed(c)) = out.iter().find(|e| matches!(e, SessionEvent::Closed(_))) else { panic!("{out:?}") };
        assert_eq!((c.start_ms, c.end_ms, c.summary.count, c.summary.mean), (1000, 4000, 4, 6.25));
        assert_eq!(out[0], SessionEvent::Opened { start_ms: 1000 });
        assert_eq!(out[1], SessionEvent::Opened { start_ms: 10_000 });
        assert_eq!(state.open.as_ref().map(|o| o.start_ms), Some(10_000));
    }
}
