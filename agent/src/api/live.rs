//! The live view: what the JSON API and the dashboard show about entities, scores and alerts.
//!
//! # Design constraints
//!
//! - **Bounded memory.** Per entity: the latest reading, the latest score and two rings of
//!   `api.sparkline_points` values (`f32`, one allocation for both) — about 250 bytes resident
//!   with the default 16 points, map slot included (budget: [`crate::memory`]). Features are not copied here: the API reads them from the feature store
//!   (`features` table, written at each checkpoint). Globally: the last [`RECENT_SCORES`]
//!   scores, the open alerts, the last [`RECENT_EVENTS`] review and health events.
//! - **Cheap for the data path.** Workers lock once per batch of readings they received (not
//!   per reading); the alert stage once per scored batch. The API locks to copy what it serves.
//!   Nothing here is durable: it is rebuilt from live traffic after a restart (the durable
//!   record of every score and alert is the outbox), except the open alerts and their
//!   acknowledgements, restored at start from `alert_state` and `alert_ack`
//!   ([`LiveView::restore_open`]); an acknowledgement is committed before it shows here.
//! - Every change a person must see at once (an alert raised, cleared or acknowledged, a
//!   health alert) bumps [`LiveView::subscribe`]'s version, which wakes the dashboard's event
//!   stream.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;

use crate::alerts::{Acknowledgement, AlertMessage, RaisedAlert};
use crate::metrics::HealthKind;
use crate::pipeline::features::Features;
use crate::reading::now_ms;

/// Scores kept for `/api/scores`.
pub const RECENT_SCORES: usize = 500;
/// Review and health events kept.
pub const RECENT_EVENTS: usize = 100;

/// The position of one ring of recent values inside [`Sparklines::slots`]: `next` is the slot
/// to write.
#[derive(Debug, Clone, Copy, Default)]
struct Ring {
    len: u16,
    next: u16,
}

impl Ring {
    fn push(&mut self, slots: &mut [f32], v: f64) {
        let n = slots.len();
        if n == 0 {
            return;
        }
        // `next` < n: it starts at 0 and only ever becomes `(next + 1) % n`, and a ring's slots
        // are allocated once (their length never changes under it).
        slots[self.next as usize] = v as f32;
        self.next = ((self.next as usize + 1) % n) as u16;
        self.len = (self.len as usize + 1).min(n) as u16;
    }

    /// Oldest first.
    fn to_vec(&self, slots: &[f32]) -> Vec<f32> {
        let n = slots.len();
        let start = (self.next as usize + n - self.len as usize) % n.max(1);
        (0..self.len as usize).map(|i| slots[(start + i) % n]).collect()
    }
}

/// An entity's two sparklines (recent values, recent scores) in one exact allocation of
/// `2 × api.sparkline_points` slots, values first: one heap block per entity, not two.
#[derive(Debug, Default)]
struct Sparklines {
    slots: Box<[f32]>,
    values: Ring,
    scores: Ring,
}

impl Sparklines {
    /// The values' and the scores' slots, allocated on first use.
    fn halves(&mut self, cap: usize) -> (&mut [f32], &mut [f32]) {
        if self.slots.is_empty() {
            self.slots = vec![0.0; 2 * cap.min(u16::MAX as usize)].into_boxed_slice();
        }
        let half = self.slots.len() / 2;
        self.slots.split_at_mut(half)
    }

    fn push_value(&mut self, v: f64, cap: usize) {
        let mut ring = self.values;
        ring.push(self.halves(cap).0, v);
        self.values = ring;
    }

    fn push_score(&mut self, v: f64, cap: usize) {
        let mut ring = self.scores;
        ring.push(self.halves(cap).1, v);
        self.scores = ring;
    }

    fn values(&self) -> Vec<f32> {
        self.values.to_vec(&self.slots[..self.slots.len() / 2])
    }

    fn scores(&self) -> Vec<f32> {
        self.scores.to_vec(&self.slots[self.slots.len() / 2..])
    }
}

/// Band names as [`crate::alerts::band_name`] gives them; [`LastScore`] keeps the index.
const BANDS: [&str; 3] = ["normal", "review", "alert"];

/// The latest score of an entity, compactly.
#[derive(Debug, Clone, Copy)]
struct LastScore {
    window_end_ms: i64,
    score: f32,
    /// Index into [`BANDS`].
    band: u8,
}

impl LastScore {
    fn band(&self) -> &'static str {
        BANDS.get(self.band as usize).copied().unwrap_or(BANDS[0])
    }
}

#[derive(Debug, Default)]
struct EntityState {
    last_event_ms: i64,
    last_value: f64,
    score: Option<LastScore>,
    sparklines: Sparklines,
}

/// Inline bytes of one entity's live state (the budget test in [`crate::memory`]).
#[cfg(test)]
pub(crate) fn entity_state_size() -> usize {
    std::mem::size_of::<EntityState>()
}

/// One scored window.
#[derive(Debug, Clone, Serialize)]
pub struct ScoreView {
    pub entity: String,
    pub window_end_ms: i64,
    pub score: f64,
    pub band: &'static str,
}

/// An entity as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct EntityView {
    pub entity: String,
    /// Event time and value of the latest reading.
    pub last_event_ms: i64,
    pub last_value: f64,
    /// Recent values and scores, oldest first (sparklines).
    pub values: Vec<f32>,
    pub scores: Vec<f32>,
    /// The latest window's features from the feature store (as of the last checkpoint).
    pub features: Option<Features>,
    pub score: Option<ScoreView>,
    /// An alert is raised for this entity.
    pub alert: bool,
}

/// A raised alert, until it clears.
#[derive(Debug, Clone, Serialize)]
pub struct OpenAlert {
    pub entity: String,
    pub score: f64,
    pub window_end_ms: i64,
    pub message: String,
    pub raised_ms: i64,
    /// Who acknowledged it (the `by` of the acknowledgement) and when.
    pub acked_by: Option<String>,
    pub acked_ms: Option<i64>,
}

/// A review-band event or an agent health alert.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub kind: String,
    pub entity: String,
    pub score: Option<f64>,
    pub message: String,
    pub at_ms: i64,
}

#[derive(Default)]
struct Alerts {
    open: BTreeMap<String, OpenAlert>,
    reviews: VecDeque<Event>,
    health: VecDeque<Event>,
}

/// See the module docs.
pub struct LiveView {
    sparkline_points: usize,
    entities: Mutex<HashMap<Arc<str>, EntityState>>,
    recent: Mutex<VecDeque<ScoreView>>,
    alerts: Mutex<Alerts>,
    version: tokio::sync::watch::Sender<u64>,
}

/// One reading a worker applied, for [`LiveView::readings`].
pub struct AppliedReading {
    pub entity: Arc<str>,
    pub event_time_ms: i64,
    pub value: f64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock means a panic elsewhere while holding it; the view is still usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn push_bounded<T>(q: &mut VecDeque<T>, item: T, cap: usize) {
    if q.len() >= cap {
        q.pop_front();
    }
    q.push_back(item);
}

impl LiveView {
    pub fn new(sparkline_points: usize) -> LiveView {
        LiveView {
            sparkline_points: sparkline_points.max(1),
            entities: Mutex::default(),
            recent: Mutex::default(),
            alerts: Mutex::default(),
            version: tokio::sync::watch::channel(0).0,
        }
    }

    /// Wakes on every change a person must see at once.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.version.subscribe()
    }

    fn bump(&self) {
        self.version.send_modify(|v| *v += 1);
    }

    /// Readings a worker applied (one call per batch).
    pub fn readings(&self, applied: &mut Vec<AppliedReading>) {
        if applied.is_empty() {
            return;
        }
        let cap = self.sparkline_points;
        let mut entities = lock(&self.entities);
        for r in applied.drain(..) {
            let e = entities.entry(r.entity).or_default();
            if r.event_time_ms >= e.last_event_ms {
                e.last_event_ms = r.event_time_ms;
                e.last_value = r.value;
            }
            e.sparklines.push_value(r.value, cap);
        }
    }

    /// Scores the alert stage evaluated, and the messages they produced.
    /// `now` is the alert stage's clock for this batch (the raised alerts' `raised_ms`).
    pub fn scored(&self, scores: Vec<ScoreView>, messages: &[AlertMessage], now: i64) {
        let cap = self.sparkline_points;
        {
            let mut entities = lock(&self.entities);
            for s in &scores {
                if let Some(e) = entities.get_mut(s.entity.as_str()) {
                    e.sparklines.push_score(s.score, cap);
                    let band = BANDS.iter().position(|b| *b == s.band).unwrap_or(0) as u8;
                    e.score = Some(LastScore { window_end_ms: s.window_end_ms, score: s.score as f32, band });
                }
            }
        }
        {
            let mut recent = lock(&self.recent);
            for s in scores {
                push_bounded(&mut recent, s, RECENT_SCORES);
            }
        }
        if messages.is_empty() {
            return;
        }
        let mut alerts = lock(&self.alerts);
        for m in messages {
            match m.state {
                "raised" => {
                    alerts.open.insert(
                        m.entity.clone(),
                        OpenAlert {
                            entity: m.entity.clone(),
                            score: m.score,
                            window_end_ms: m.window_end_ms,
                            message: m.message.clone(),
                            raised_ms: now,
                            acked_by: None,
                            acked_ms: None,
                        },
                    );
                }
                "cleared" => {
                    alerts.open.remove(&m.entity);
                }
                _ => push_bounded(
                    &mut alerts.reviews,
                    Event { kind: "review".into(), entity: m.entity.clone(), score: Some(m.score), message: m.message.clone(), at_ms: now },
                    RECENT_EVENTS,
                ),
            }
        }
        drop(alerts);
        self.bump();
    }

    /// An agent health alert (also logged and counted by the caller).
    pub fn health(&self, kind: HealthKind, message: String) {
        let event = Event { kind: kind.as_str().into(), entity: "agent".into(), score: None, message, at_ms: now_ms() };
        push_bounded(&mut lock(&self.alerts).health, event, RECENT_EVENTS);
        self.bump();
    }

    /// An open alert the agent had when it stopped, with its acknowledgement (if it is one of
    /// this alert: same raising window).
    pub fn restore_open(&self, entity: &str, raised: &RaisedAlert, ack: Option<&Acknowledgement>) {
        let ack = ack.filter(|a| a.window_end_ms == raised.window_end_ms);
        let alert = OpenAlert {
            entity: entity.to_string(),
            score: raised.score,
            window_end_ms: raised.window_end_ms,
            message: raised.message.clone(),
            raised_ms: raised.raised_ms,
            acked_by: ack.map(|a| a.by.clone()),
            acked_ms: ack.map(|a| a.acked_ms),
        };
        lock(&self.alerts).open.insert(entity.to_string(), alert);
        self.bump();
    }

    /// The open alert of `entity`.
    pub fn open_alert(&self, entity: &str) -> Option<OpenAlert> {
        lock(&self.alerts).open.get(entity).cloned()
    }

    /// Marks the open alert of `entity` acknowledged if it is still the one `ack` is for;
    /// `false` otherwise (cleared, or raised again, meanwhile).
    pub fn acknowledge(&self, entity: &str, ack: &Acknowledgement) -> bool {
        let mut alerts = lock(&self.alerts);
        let Some(a) = alerts.open.get_mut(entity).filter(|a| a.window_end_ms == ack.window_end_ms) else { return false };
        a.acked_by = Some(ack.by.clone());
        a.acked_ms = Some(ack.acked_ms);
        drop(alerts);
        self.bump();
        true
    }

    pub fn open_alerts(&self) -> Vec<OpenAlert> {
        lock(&self.alerts).open.values().cloned().collect()
    }

    pub fn reviews(&self) -> Vec<Event> {
        lock(&self.alerts).reviews.iter().rev().cloned().collect()
    }

    pub fn health_events(&self) -> Vec<Event> {
        lock(&self.alerts).health.iter().rev().cloned().collect()
    }

    /// The most recent scores, newest first.
    pub fn recent_scores(&self, limit: usize) -> Vec<ScoreView> {
        lock(&self.recent).iter().rev().take(limit).cloned().collect()
    }

    pub fn entity_count(&self) -> usize {
        lock(&self.entities).len()
    }

    /// Up to `limit` entities: those with an open alert first, then by latest score
    /// (highest first), then by name. `filter` keeps entities whose id contains it.
    pub fn entities(&self, limit: usize, filter: Option<&str>) -> Vec<EntityView> {
        let open: std::collections::BTreeSet<String> = lock(&self.alerts).open.keys().cloned().collect();
        let entities = lock(&self.entities);
        let mut keys: Vec<(&Arc<str>, &EntityState)> =
            entities.iter().filter(|(k, _)| filter.is_none_or(|f| k.contains(f))).collect();
        let rank = |(k, e): &(&Arc<str>, &EntityState)| {
            (!open.contains(k.as_ref()), -(e.score.as_ref().map_or(-1.0, |s| s.score as f64) * 1e6) as i64, k.to_string())
        };
        if keys.len() > limit {
            keys.select_nth_unstable_by_key(limit, rank);
            keys.truncate(limit);
        }
        keys.sort_by_key(rank);
        keys.into_iter()
            .map(|(k, e)| EntityView {
                entity: k.to_string(),
                last_event_ms: e.last_event_ms,
                last_value: e.last_value,
                values: e.sparklines.values(),
                scores: e.sparklines.scores(),
                features: None,
                score: e.score.map(|s| ScoreView { entity: k.to_string(), window_end_ms: s.window_end_ms, score: s.score as f64, band: s.band() }),
                alert: open.contains(k.as_ref()),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(entity: &str, state: &'static str) -> AlertMessage {
        AlertMessage {
            agent: "a".into(),
            entity: entity.into(),
            state,
            band: "alert",
            score: 0.9,
            error: 1.0,
            window_end_ms: 1000,
            model: cloud_uplink::ModelRef { name: "m".into(), version: "1".into(), sha256: "00".into() },
            message: "m".into(),
        }
    }

    #[test]
    fn sparklines_are_bounded_and_alerts_open_until_cleared() {
        let live = LiveView::new(3);
        let mut batch: Vec<AppliedReading> = (0..5)
            .map(|i| AppliedReading { entity: Arc::from("e1"), event_time_ms: i, value: i as f64 })
            .collect();
        live.readings(&mut batch);
        live.scored(vec![ScoreView { entity: "e1".into(), window_end_ms: 4, score: 0.9, band: "alert" }], &[message("e1", "raised")], 7);
        let e = &live.entities(10, None)[0];
        assert_eq!((e.values.clone(), e.last_value, e.alert), (vec![2.0, 3.0, 4.0], 4.0, true));
        let ack = |window_end_ms| Acknowledgement { window_end_ms, by: "operator".into(), acked_ms: 5 };
        assert!(!live.acknowledge("nope", &ack(1000)));
        assert!(!live.acknowledge("e1", &ack(999)), "an acknowledgement of an earlier raise");
        assert!(live.acknowledge("e1", &ack(1000)));
        assert_eq!(live.open_alerts()[0].acked_by.as_deref(), Some("operator"));
        live.scored(Vec::new(), &[message("e1", "cleared")], 8);
        assert!(live.open_alerts().is_empty());
    }
}
