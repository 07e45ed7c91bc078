//! Per-entity event-time sliding windows with a watermark and an explicit lateness bound.
//!
//! Windows are `(end − size, end]` with ends on `offset` + multiples of `hop` since the epoch
//! (`pipeline.window.offset_ms`, default 0): a window holds the reading at its end, as a
//! Prometheus range vector does. An entity's watermark is its largest event time seen minus
//! `allowed_lateness`; every window whose end is at or below the watermark is final, and is
//! emitted, in end order, exactly once if it holds a new reading (below). With a sensor sampled
//! on the grid and lateness 0, a reading therefore closes the window it is the newest reading
//! of at once — not one sampling period later, when the next reading arrives (a 5-minute
//! sensor's alert comes 5 minutes sooner). A reading at or before the last window end the watermark has
//! reached (the window emitted, or skipped: `closed_through_ms`) is *late*; the [`LatePolicy`]
//! decides whether it is dropped, dead-lettered (both counted) or still added to the windows
//! not emitted yet (`process`: it is scored with the next window that also holds a new reading,
//! if it still fits in it). (With lateness 0 late includes a second, different reading at the
//! same millisecond as one that closed a window; an exact redelivery is recognised as such.)
//!
//! [`Geometry`] holds these rules ([`Geometry::holds`], [`Geometry::first_end_holding`]); the
//! asset join ([`super::asset`]) uses the same ones.
//!
//! A window is emitted only when it holds a *new* reading — one after the last window end
//! reached. A window holding only readings that earlier windows held is skipped like an empty
//! one: after a sensor was offline for an hour the agent does not score the windows of its last
//! readings sliding out of view (stale data, mostly gap), and a sensor slower than the hop gets
//! one window per reading, the one ending at or after it, instead of one per hop. The next
//! emitted window is the first that holds a new reading. What counts windows downstream —
//! `alerts.raise_after` / `clear_after`, the error history's warm-up, `novelty_horizon` —
//! therefore counts readings for a sensor slower than the hop (before, the 32 near-identical
//! windows of one 60 s reading with a 1 s hop met `raise_after = 2` by themselves).
//!
//! The state is plain data ([`EntityWindows`]) so it can be checkpointed to redb and restored:
//! feeding the same readings to a restored state emits the same windows as an uninterrupted run.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::features::{Ewma, Features};
use crate::memory::Sparse;
use crate::config::{LatePolicy, WindowConfig};

/// Window geometry, from [`WindowConfig`].
#[derive(Debug, Clone, Copy)]
pub struct Geometry {
    pub size_ms: i64,
    pub hop_ms: i64,
    /// Phase of the window ends, in `[0, hop_ms)`.
    pub offset_ms: i64,
    pub lateness_ms: i64,
    pub late_policy: LatePolicy,
}

impl Geometry {
    /// Whether the window ending `end_ms` holds a reading at `t`: `end − size < t ≤ end`.
    pub fn holds(&self, end_ms: i64, t: i64) -> bool {
        t > end_ms - self.size_ms && t <= end_ms
    }

    /// The end of the first window holding a reading at `t`: `t` itself on the grid, else the
    /// next grid point (`offset` + a multiple of `hop`).
    pub fn first_end_holding(&self, t: i64) -> i64 {
        // |below − offset| ≤ |t − offset|: no overflow but at the ends of i64, where it saturates.
        let below = self.offset_ms.saturating_add(t.saturating_sub(self.offset_ms).div_euclid(self.hop_ms) * self.hop_ms);
        if below == t { t } else { below.saturating_add(self.hop_ms) }
    }

    /// The end of the first window to emit for an entity (or asset) whose first reading is at
    /// `t`: the first window that can still hold a reading within the lateness bound before it.
    pub fn first_end(&self, t: i64) -> i64 {
        self.first_end_holding(t.saturating_sub(self.lateness_ms))
    }

    /// The next window end of a state restored under this geometry, from its `next_end_ms`
    /// and `closed_through_ms`: unchanged when the grid is, else the first end of the new grid
    /// after the last one reached (`pipeline.window.offset_ms` or `hop_ms` changed since the
    /// state was written). `None` before the state's first reading.
    pub fn resume(&self, next_end_ms: Option<i64>, closed_through_ms: i64) -> Option<i64> {
        next_end_ms.map(|_| self.first_end_holding(closed_through_ms.saturating_add(1)))
    }

    /// Whether a reading at `t` is late: at or before `closed_through`.
    pub fn is_late(&self, closed_through: Option<i64>, t: i64) -> bool {
        closed_through.is_some_and(|c| t <= c)
    }
}

impl From<&WindowConfig> for Geometry {
    fn from(c: &WindowConfig) -> Self {
        Geometry {
            size_ms: c.size_ms as i64,
            hop_ms: c.hop_ms as i64,
            // A zero hop is refused by the config check; `checked_rem` keeps this total anyway.
            offset_ms: c.offset_ms.checked_rem(c.hop_ms).unwrap_or(0) as i64,
            lateness_ms: c.allowed_lateness_ms as i64,
            late_policy: c.late_policy,
        }
    }
}

/// One entity's window state (checkpointed as a unit).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EntityWindows {
    /// Ingest seq through which this state reflects the commit log.
    pub applied_through: u64,
    /// Largest event time seen.
    pub max_event_ms: Option<i64>,
    /// End of the next window to emit.
    pub next_end_ms: Option<i64>,
    /// Readings that can still fall into a window not emitted yet (and the one at the start of
    /// the next window, for duplicate checks), sorted by event time.
    pub buffer: VecDeque<(i64, f64)>,
    /// Normalisation statistics: all readings with event time ≤ `closed_through_ms`.
    pub ewma: Ewma,
    /// The last window end the watermark has reached (the window emitted, or skipped for want
    /// of a new reading): readings at or before it are late, and in `ewma`. From the first reading on
    /// (before it, `next_end_ms` is `None`); grid-independent, so a changed `offset_ms` or
    /// `hop_ms` resumes after it ([`Geometry::resume`]). Written as `ewma_through_ms`
    /// before windows held their end (then exclusive: one reading at that instant differs).
    #[serde(alias = "ewma_through_ms")]
    pub closed_through_ms: i64,
    /// The latest emitted window's features (the feature-store row).
    pub features: Option<Features>,
    /// Tumbling-window aggregates (absent in states written before they existed). Boxed on
    /// first use ([`Sparse`]): without `pipeline.aggregate.sizes_ms` one pointer per entity.
    #[serde(default)]
    pub tumbling: Sparse<super::aggregate::Tumbling>,
    /// Activity sessions (likewise; used by the entities `pipeline.session` applies to).
    #[serde(default)]
    pub sessions: Sparse<super::session::Sessions>,
    /// Emission counter of [`super::Emit`] (likewise).
    #[serde(default)]
    pub emitted: u64,
}

/// What happened to one reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// In time.
    Accepted,
    /// Late, and handled per policy: `kept` tells whether it went into the buffer.
    Late { kept: bool },
    /// The same event time and value are already buffered: a redelivery (e.g. a QoS 1 message
    /// committed but not acknowledged before a crash). Ignored, so redeliveries do not change
    /// windows or normalisation.
    Duplicate,
}

/// A final window, ready for features and inference.
#[derive(Debug, Clone, PartialEq)]
pub struct ClosedWindow {
    pub end_ms: i64,
    /// The window's readings, sorted by event time.
    pub points: Vec<(i64, f64)>,
}

impl EntityWindows {
    /// Puts a state loaded from a checkpoint on `g`'s grid ([`Geometry::resume`]): call once
    /// when it is restored, before its next reading.
    pub fn resume(&mut self, g: &Geometry) {
        self.next_end_ms = g.resume(self.next_end_ms, self.closed_through_ms);
    }

    /// Adds one reading. Late readings are reported, never silently merged.
    pub fn admit(&mut self, event_ms: i64, value: f64, g: &Geometry, alpha: f64) -> Admission {
        let closed = self.next_end_ms.map(|_| self.closed_through_ms);
        if self.buffer.iter().rev().take_while(|(t, _)| *t >= event_ms).any(|&(t, v)| t == event_ms && v == value) {
            return Admission::Duplicate;
        }
        if g.is_late(closed, event_ms) {
            let fits = self.next_end_ms.is_some_and(|next| g.holds(next, event_ms));
            let kept = g.late_policy == LatePolicy::Process && fits;
            if kept {
                self.insert(event_ms, value);
                // Its normalisation share: folded now (its time slot has passed already).
                if event_ms <= self.closed_through_ms {
                    self.ewma.update(value, alpha);
                }
            }
            return Admission::Late { kept };
        }
        self.insert(event_ms, value);
        self.max_event_ms = Some(self.max_event_ms.map_or(event_ms, |m| m.max(event_ms)));
        if self.next_end_ms.is_none() {
            let first = g.first_end(event_ms);
            (self.next_end_ms, self.closed_through_ms) = (Some(first), first.saturating_sub(g.hop_ms));
        }
        Admission::Accepted
    }

    fn insert(&mut self, t: i64, v: f64) {
        // Grows by an eighth (at least 4 slots), not by doubling: a steady sensor's buffer stays
        // about one window long, so its capacity settles just above that (about 34 readings at
        // 1 Hz with 32 s windows: 36 slots, where doubling gives 64).
        if self.buffer.len() == self.buffer.capacity() {
            self.buffer.reserve_exact((self.buffer.len() / 8).max(4));
        }
        // Usually appends; out-of-order readings within the lateness bound are inserted in place.
        let pos = self.buffer.iter().rposition(|&(bt, _)| bt <= t).map_or(0, |p| p + 1);
        self.buffer.insert(pos, (t, v));
    }

    /// Emits every window whose end the watermark has reached, folding readings into the EWMA in
    /// event-time order as their windows close. `emit` receives each window and the EWMA as of
    /// its end.
    pub fn close_ready(&mut self, g: &Geometry, alpha: f64, mut emit: impl FnMut(ClosedWindow, &Ewma)) {
        let (Some(max_event), Some(mut next_end)) = (self.max_event_ms, self.next_end_ms) else {
            return;
        };
        let watermark = max_event - g.lateness_ms;
        while next_end <= watermark {
            // The readings after the last end reached are new to this window (one after it, ≥
            // `next_end − hop`, is inside): folded into the EWMA now, and they make it fresh.
            let mut fresh = false;
            for &(_, v) in self.buffer.iter().filter(|(t, _)| *t > self.closed_through_ms && *t <= next_end) {
                self.ewma.update(v, alpha);
                fresh = true;
            }
            self.closed_through_ms = self.closed_through_ms.max(next_end);
            let points: Vec<(i64, f64)> = if fresh { self.buffer.iter().copied().filter(|(t, _)| g.holds(next_end, *t)).collect() } else { Vec::new() };
            if points.is_empty() {
                // No new reading (none at all, or only ones earlier windows held): skip straight
                // to the first window holding the next buffered reading.
                // Not past the first window the watermark has not reached: a reading within the
                // lateness bound may still come for it.
                match self.buffer.iter().find(|(t, _)| *t > next_end) {
                    Some(&(t, _)) => next_end = (next_end + g.hop_ms).max(g.first_end_holding(t).min(g.first_end_holding(watermark.saturating_add(1)))),
                    None => next_end += g.hop_ms,
                }
            } else {
                self.features = Some(Features::of_window(&points, next_end, &self.ewma));
                emit(ClosedWindow { end_ms: next_end, points }, &self.ewma);
                next_end += g.hop_ms;
            }
            // Readings no window from `next_end` on holds — but the one at the last emitted end
            // (`size == hop`) stays one more window, so that a redelivery of it is still
            // recognised as a duplicate, not counted late.
            while self.buffer.front().is_some_and(|(t, _)| *t < next_end - g.size_ms) {
                self.buffer.pop_front();
            }
        }
        self.next_end_ms = Some(next_end);
        // Every end before `next_end` is at or below the watermark (a skip stops at the first
        // one above it, and the windows it skips hold no new reading, so none is left unfolded);
        // never lower than before (after a grid change the new grid's previous end can lie
        // before the old grid's last one).
        self.closed_through_ms = self.closed_through_ms.max(next_end - g.hop_ms);
        // After a burst (a faster sensor for a while), give the slack back: with thousands of
        // entities it is megabytes.
        let len = self.buffer.len();
        if self.buffer.capacity() > len + len / 2 + 8 {
            self.buffer.shrink_to(len + len / 4 + 4);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geometry(policy: LatePolicy) -> Geometry {
        Geometry { size_ms: 4000, hop_ms: 1000, offset_ms: 0, lateness_ms: 1000, late_policy: policy }
    }

    fn run(state: &mut EntityWindows, g: &Geometry, readings: &[(i64, f64)]) -> Vec<(i64, Vec<(i64, f64)>)> {
        let mut out = Vec::new();
        for &(t, v) in readings {
            state.admit(t, v, g, 0.1);
            state.close_ready(g, 0.1, |w, _| out.push((w.end_ms, w.points)));
        }
        out
    }

    #[test]
    fn emits_sliding_windows_after_the_watermark() {
        let g = geometry(LatePolicy::Drop);
        let mut s = EntityWindows::default();
        let readings: Vec<(i64, f64)> = (0..8).map(|i| (i * 1000 + 500, i as f64)).collect();
        let out = run(&mut s, &g, &readings);
        // Max event 7500, watermark 6500: windows ending 1000..=6000 are final.
        let ends: Vec<i64> = out.iter().map(|w| w.0).collect();
        assert_eq!(ends, vec![1000, 2000, 3000, 4000, 5000, 6000]);
        // Window ending 6000 covers (2000, 6000].
        assert_eq!(out[5].1.iter().map(|p| p.1).collect::<Vec<_>>(), vec![2.0, 3.0, 4.0, 5.0]);
    }

    #[test]
    fn out_of_order_within_lateness_is_sorted_in() {
        let g = geometry(LatePolicy::Drop);
        let mut s = EntityWindows::default();
        let out = run(&mut s, &g, &[(500, 0.0), (2500, 2.0), (1500, 1.0), (4600, 4.0)]);
        // Watermark 3600: windows ending 1000, 2000, 3000; the last covers (-1000, 3000].
        assert_eq!(out.iter().map(|w| w.0).collect::<Vec<_>>(), vec![1000, 2000, 3000]);
        assert_eq!(out[2].1, vec![(500, 0.0), (1500, 1.0), (2500, 2.0)]);
    }

    #[test]
    fn a_reading_on_the_grid_closes_its_own_window_at_once() {
        // A 5-minute sensor reporting at :02, :07, …: grid phase 2 minutes, lateness 0.
        let g = Geometry { size_ms: 900_000, hop_ms: 300_000, offset_ms: 120_000, lateness_ms: 0, late_policy: LatePolicy::Dlq };
        let mut s = EntityWindows::default();
        let out = run(&mut s, &g, &[(420_000, 1.0), (720_000, 2.0), (1_020_000, 3.0)]);
        // Each reading closed the window it is the newest of: ends 420 000, 720 000, 1 020 000.
        assert_eq!(out.iter().map(|w| w.0).collect::<Vec<_>>(), vec![420_000, 720_000, 1_020_000]);
        assert_eq!(out[2].1, vec![(420_000, 1.0), (720_000, 2.0), (1_020_000, 3.0)]);
        // The window (120 000, 1 020 000] is gone: a reading at its start is not in it, and a
        // second, different reading at its end is late; the same reading again is a redelivery.
        assert_eq!(s.admit(1_020_000, 3.0, &g, 0.1), Admission::Duplicate);
        assert_eq!(s.admit(1_020_000, 4.0, &g, 0.1), Admission::Late { kept: false });
        // Off the grid, a reading waits for the window ending after it.
        let out = run(&mut s, &g, &[(1_100_000, 5.0)]);
        assert!(out.is_empty(), "{out:?}");
        let out = run(&mut s, &g, &[(1_320_000, 6.0)]);
        // (420 000, 1 320 000]: 720 000, 1 020 000, 1 100 000 and 1 320 000.
        assert_eq!(out.iter().map(|w| (w.0, w.1.len())).collect::<Vec<_>>(), vec![(1_320_000, 4)]);
    }

    #[test]
    fn a_changed_grid_phase_applies_to_a_restored_state() {
        let old = Geometry { size_ms: 4000, hop_ms: 1000, offset_ms: 0, lateness_ms: 0, late_policy: LatePolicy::Dlq };
        let mut s = EntityWindows::default();
        let out = run(&mut s, &old, &[(1000, 1.0), (2000, 2.0)]);
        assert_eq!(out.iter().map(|w| w.0).collect::<Vec<_>>(), vec![1000, 2000]);
        // `offset_ms = 300` after a restart: the next windows end on x300, from the first after
        // the last emitted end (2000) on.
        let new = Geometry { offset_ms: 300, ..old };
        s.resume(&new);
        let out = run(&mut s, &new, &[(2300, 3.0), (3300, 4.0)]);
        assert_eq!(out.iter().map(|w| (w.0, w.1.len())).collect::<Vec<_>>(), vec![(2300, 3), (3300, 4)]);
        // A reading the old grid had closed is still late.
        assert_eq!(s.admit(1500, 9.0, &new, 0.1), Admission::Late { kept: false });
    }

    #[test]
    fn a_state_written_before_windows_held_their_end_loads() {
        let g = geometry(LatePolicy::Process);
        let mut s = EntityWindows::default();
        run(&mut s, &g, &[(500, 0.0), (1500, 1.0), (2500, 2.0), (3500, 3.0)]);
        // Its `closed_through_ms` under its old name.
        let mut value: ciborium::Value = ciborium::from_reader(crate::store::to_cbor(&s).as_slice()).unwrap();
        let ciborium::Value::Map(fields) = &mut value else { panic!("a map") };
        let key = fields.iter_mut().find(|(k, _)| k.as_text() == Some("closed_through_ms")).expect("the field");
        key.0 = ciborium::Value::Text("ewma_through_ms".into());
        let mut old = Vec::new();
        ciborium::into_writer(&value, &mut old).unwrap();
        let restored: EntityWindows = crate::store::from_cbor("entity_state", "x", &old).unwrap();
        assert_eq!(restored, s);
    }

    #[test]
    fn a_changed_hop_resumes_after_the_last_window_reached() {
        let g2 = Geometry { size_ms: 4000, hop_ms: 2000, offset_ms: 0, lateness_ms: 0, late_policy: LatePolicy::Dlq };
        let g1 = Geometry { hop_ms: 1000, ..g2 };
        // A smaller hop: window 2000 was the last; 3000 is the next, and a reading there is in time.
        let mut s = EntityWindows::default();
        assert_eq!(run(&mut s, &g2, &[(1000, 1.0), (2000, 2.0)]).iter().map(|w| w.0).collect::<Vec<_>>(), vec![2000]);
        s.resume(&g1);
        assert_eq!(s.admit(3000, 3.0, &g1, 0.1), Admission::Accepted);
        let out = run(&mut s, &g1, &[(4000, 4.0)]);
        assert_eq!(out.iter().map(|w| (w.0, w.1.len())).collect::<Vec<_>>(), vec![(3000, 3), (4000, 4)]);
        // A larger hop: windows 1000 and 2000 were emitted; none is emitted again, and 1500 is late.
        let mut s = EntityWindows::default();
        assert_eq!(run(&mut s, &g1, &[(1000, 1.0), (2000, 2.0)]).iter().map(|w| w.0).collect::<Vec<_>>(), vec![1000, 2000]);
        s.resume(&g2);
        assert_eq!(s.admit(1500, 9.0, &g2, 0.1), Admission::Late { kept: false });
        let out = run(&mut s, &g2, &[(3000, 3.0), (4000, 4.0)]);
        assert_eq!(out.iter().map(|w| w.0).collect::<Vec<_>>(), vec![4000]);
    }

    #[test]
    fn a_redelivery_is_a_duplicate_even_when_windows_do_not_overlap() {
        // size == hop: the window (1000, 2000] is emitted at once and no later window holds 2000.
        let g = Geometry { size_ms: 1000, hop_ms: 1000, offset_ms: 0, lateness_ms: 0, late_policy: LatePolicy::Dlq };
        let mut s = EntityWindows::default();
        let out = run(&mut s, &g, &[(1000, 1.0), (2000, 2.0)]);
        assert_eq!(out.len(), 2);
        assert_eq!(s.admit(2000, 2.0, &g, 0.1), Admission::Duplicate);
        assert_eq!(s.admit(1000, 1.0, &g, 0.1), Admission::Late { kept: false }, "older than the last window: late");
    }

    #[test]
    fn readings_within_the_lateness_bound_are_never_late() {
        let g = geometry(LatePolicy::Dlq);
        // Before the first reading: the first windows start a lateness bound earlier.
        let mut s = EntityWindows::default();
        run(&mut s, &g, &[(5500, 5.0)]);
        assert_eq!(s.admit(4600, 4.0, &g, 0.1), Admission::Accepted);
        // After a gap: the skip over empty windows stops at the watermark (99 500 here).
        let mut s = EntityWindows::default();
        run(&mut s, &g, &[(500, 0.0), (1500, 1.0), (100_500, 2.0)]);
        assert_eq!(s.admit(99_800, 3.0, &g, 0.1), Admission::Accepted);
        let out = run(&mut s, &g, &[(102_500, 4.0)]);
        assert_eq!(out.iter().map(|w| (w.0, w.1.len())).collect::<Vec<_>>(), vec![(100_000, 1), (101_000, 2)]);
    }

    #[test]
    fn late_readings_follow_the_policy() {
        for (policy, kept) in [(LatePolicy::Drop, false), (LatePolicy::Dlq, false), (LatePolicy::Process, true)] {
            let g = geometry(policy);
            let mut s = EntityWindows::default();
            run(&mut s, &g, &[(500, 0.0), (1500, 1.0), (2500, 2.0), (3500, 3.0)]);
            // Windows up to end 2000 were emitted; 1200 is late but still fits window ending 3000+.
            assert_eq!(s.admit(1200, 9.0, &g, 0.1), Admission::Late { kept });
            let out = run(&mut s, &g, &[(4500, 4.0)]);
            let has_late = out[0].1.contains(&(1200, 9.0));
            assert_eq!(has_late, kept, "{policy:?}");
        }
    }

    #[test]
    fn redelivered_readings_are_ignored() {
        let g = geometry(LatePolicy::Process);
        let mut once = EntityWindows::default();
        let mut twice = EntityWindows::default();
        let readings: Vec<(i64, f64)> = (0..12).map(|i| (i * 500, i as f64)).collect();
        let a = run(&mut once, &g, &readings);
        let mut doubled = readings.clone();
        doubled.splice(6..6, readings[3..6].iter().copied());
        let b = run(&mut twice, &g, &doubled);
        assert_eq!(a, b);
        assert_eq!(twice.admit(5500, 11.0, &g, 0.1), Admission::Duplicate);
        assert_eq!(twice.admit(5500, 12.0, &g, 0.1), Admission::Accepted);
    }

    #[test]
    fn gaps_emit_no_windows_without_a_new_reading() {
        let g = geometry(LatePolicy::Drop);
        let mut s = EntityWindows::default();
        let out = run(&mut s, &g, &[(500, 0.0), (1500, 1.0), (100_500, 2.0), (102_500, 3.0)]);
        let ends: Vec<i64> = out.iter().map(|w| w.0).collect();
        // The windows new to 500 and 1500 (1000, 2000), not 3000..=5000 that only still hold
        // them, then straight to 101 000.
        assert_eq!(ends, vec![1000, 2000, 101_000]);
    }

    #[test]
    fn a_sensor_slower_than_the_hop_gets_one_window_per_reading() {
        // Hop 1 s, a reading every 10 s, off the grid: each closes one window, the one ending
        // at or after it (when the next arrives: lateness 1 s), not ten.
        let g = geometry(LatePolicy::Drop);
        let mut s = EntityWindows::default();
        let out = run(&mut s, &g, &(0..5).map(|k| (k * 10_000 + 300, k as f64)).collect::<Vec<_>>());
        assert_eq!(out.iter().map(|w| (w.0, w.1.len())).collect::<Vec<_>>(), vec![(1000, 1), (11_000, 1), (21_000, 1), (31_000, 1)]);
    }

    #[test]
    fn restored_state_continues_identically() {
        let g = geometry(LatePolicy::Process);
        let readings: Vec<(i64, f64)> = (0..40).map(|i| (i * 700 + (i % 3) * 90, (i as f64).sin())).collect();
        let mut whole = EntityWindows::default();
        let all = run(&mut whole, &g, &readings);
        let mut first = EntityWindows::default();
        let mut split = run(&mut first, &g, &readings[..17]);
        let bytes = crate::store::to_cbor(&first);
        let mut restored: EntityWindows = crate::store::from_cbor("entity_state", "x", &bytes).unwrap();
        split.extend(run(&mut restored, &g, &readings[17..]));
        assert_eq!(all, split);
        assert_eq!(whole, restored);
    }
}
