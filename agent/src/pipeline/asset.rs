//! Asset-level windows: several entities (the channels of one machine) joined onto one common
//! event-time grid for a multivariate model.
//!
//! # Invariants
//! * **One worker per asset.** Readings of an asset's channels are routed by the asset id
//!   ([`Routing`]), so one worker owns the asset's state and sees its channels in commit order.
//! * **Same event-time rules as entity windows** ([`super::window`], [`Geometry`]): windows
//!   `(end − size, end]` with ends on `offset` + multiples of `hop`; the asset's watermark is the largest
//!   event time of *any* of its channels minus `allowed_lateness`. A window is final, and
//!   emitted once in end order, when the watermark has *passed* its end, or when every
//!   channel's own newest reading minus the lateness has reached it: with lateness 0, channels
//!   read together (one Modbus poll, one CSV row) close the window ending at their timestamp as
//!   soon as the last of them is admitted, while a silent channel delays it only until another
//!   channel reports past its end. (An entity's windows follow the same rule with one channel.)
//!   A reading at or before the last emitted end, or late for its own entity (at or before the
//!   last window end its channel's newest reading minus the lateness has reached), is late and
//!   follows `late_policy` (the entity path has counted or dead-lettered the second kind; the
//!   asset keeps either only with `process`, and does not count the first kind: its entity may
//!   have taken it in time). Windows with no reading of any channel are
//!   skipped; unlike an entity's ([`super::window`]), a window holding only readings earlier
//!   windows held is still emitted: the long view (`[pipeline.warmup_pca]`) spans the window
//!   means of consecutive hops, and SKAB scores worse without them (F1 0.837 → 0.832).
//! * **Join and resample.** Each channel's readings in a window are resampled onto the model's
//!   `window` slots ([`super::features::resample`]); a channel with no reading in the window
//!   repeats its last value before the window (held, like a slow sensor's last report). A
//!   window in which some channel has never reported is not scored.
//! * **Normalisation `asset_warmup_zscore`:** per channel, the mean and standard deviation of
//!   its first `warmup` readings (in event-time order, folded as windows close), frozen
//!   afterwards; scale = max(std, `relative_std_floor` · |mean|, `min_std`); the asset is
//!   scored once every channel has `warmup` readings.
//! * **Checkpointed like entity state**: [`AssetWindows`] is plain data written to redb
//!   (`asset_state`) with the worker's checkpoints — with the asset's long view
//!   ([`super::warmup_pca`]), which the worker folds as each window is emitted; a restored state
//!   continues identically.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::features::resample;
use super::session::{SessionEvent, SessionSettings, Sessions};
use super::warmup_pca::WarmupPca;
use super::window::Geometry;
use crate::config::{AssetConfig, LatePolicy};
use crate::inference::manifest::Normalisation;

/// Entity → (asset, channel index), and the worker that owns each routing key.
#[derive(Debug, Clone, Default)]
pub struct Routing {
    channel_of: HashMap<String, (Arc<str>, usize)>,
    /// Number of channels per asset.
    channels: HashMap<Arc<str>, usize>,
    /// The channel whose readings decide an asset's sessions, for assets that have sessions.
    session_channel: HashMap<Arc<str>, usize>,
}

impl Routing {
    /// Routing for `assets`; empty when the model is univariate (assets are then not joined).
    pub fn new(assets: &[AssetConfig]) -> Routing {
        let mut r = Routing::default();
        for a in assets {
            let id: Arc<str> = Arc::from(a.id.as_str());
            r.channels.insert(id.clone(), a.channels.len());
            for (i, c) in a.channels.iter().enumerate() {
                r.channel_of.insert(c.clone(), (id.clone(), i));
                if a.session_channel.as_ref() == Some(c) {
                    r.session_channel.insert(id.clone(), i);
                }
            }
        }
        r
    }

    /// The asset and channel index an entity feeds, if any.
    pub fn channel_of(&self, entity: &str) -> Option<&(Arc<str>, usize)> {
        self.channel_of.get(entity)
    }

    /// Channels of `asset`.
    pub fn channels(&self, asset: &str) -> Option<usize> {
        self.channels.get(asset).copied()
    }

    /// The channel index that decides `asset`'s sessions, if it has sessions.
    pub fn session_channel(&self, asset: &str) -> Option<usize> {
        self.session_channel.get(asset).copied()
    }

    /// The worker that handles `entity`: by its asset id when it is an asset's channel (so one
    /// worker sees every channel of an asset), else by the entity id.
    pub fn worker_of(&self, entity: &str, workers: usize) -> usize {
        match self.channel_of.get(entity) {
            Some((asset, _)) => super::partition_of(asset, workers),
            None => super::partition_of(entity, workers),
        }
    }
}

/// Mean and variance of the first readings (Welford), frozen once `count` reaches the warm-up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    pub count: u64,
    pub mean: f64,
    /// Sum of squared deviations from the mean.
    pub m2: f64,
}

impl Baseline {
    /// Folds `x` unless the baseline already holds `warmup` readings.
    pub fn update(&mut self, x: f64, warmup: u64) {
        if self.count >= warmup {
            return;
        }
        self.count += 1;
        let d = x - self.mean;
        self.mean += d / self.count as f64;
        self.m2 += d * (x - self.mean);
    }

    /// The channel's normalisation scale: `max(std, relative_std_floor · |mean|, min_std)`.
    pub fn scale(&self, norm: &Normalisation) -> f64 {
        self.std().max(norm.relative_std_floor.unwrap_or(0.0) * self.mean.abs()).max(norm.min_std)
    }

    /// Population standard deviation of the folded readings.
    pub fn std(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            (self.m2 / self.count as f64).max(0.0).sqrt()
        }
    }
}

/// One channel of an asset.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Channel {
    /// Readings that can still fall into a window not emitted yet, sorted by event time.
    pub buffer: VecDeque<(i64, f64)>,
    /// The last reading before the buffer (held into windows where the channel is silent).
    pub held: Option<f64>,
    pub baseline: Baseline,
    /// Event time of the channel's newest reading in time for its own entity (absent in states
    /// written before it was kept: the asset then closes its next windows by its watermark
    /// alone, and judges lateness by its own windows only).
    #[serde(default)]
    pub newest_ms: Option<i64>,
}

/// One asset's join state (checkpointed as a unit).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AssetWindows {
    /// Commit-log seq through which this state reflects the commit log.
    pub applied_through: u64,
    pub max_event_ms: Option<i64>,
    /// End of the next window to emit.
    pub next_end_ms: Option<i64>,
    /// The last window end the asset's windows have reached (emitted, or skipped with no reading):
    /// readings at or before it are late, and folded into the baselines; like
    /// [`super::window::EntityWindows::closed_through_ms`] (written as `baseline_through_ms`
    /// before windows held their end).
    #[serde(alias = "baseline_through_ms")]
    pub closed_through_ms: i64,
    pub channels: Vec<Channel>,
    /// The asset's activity sessions (decided on its session channel at the asset's
    /// watermark); absent in states written before asset sessions existed.
    #[serde(default)]
    pub sessions: Sessions,
    /// The asset's emission counter (session marks), like an entity's: numbers its emits so a
    /// replay after a crash reproduces them and the alert stage drops the repeats.
    #[serde(default)]
    pub emitted: u64,
    /// The long view checked against the warm-up (`[pipeline.warmup_pca]`); absent in states
    /// written before it existed.
    #[serde(default)]
    pub pca: WarmupPca,
}

/// A closed asset window, resampled: `values[slot * channels + channel]` (time-major).
#[derive(Debug, Clone, PartialEq)]
pub struct AssetWindow {
    pub end_ms: i64,
    pub values: Vec<f64>,
}

impl AssetWindows {
    /// A fresh state for an asset of `channels` channels.
    pub fn new(channels: usize) -> AssetWindows {
        AssetWindows { channels: vec![Channel::default(); channels], ..Default::default() }
    }

    /// Puts a state loaded from a checkpoint on `g`'s grid, as an entity's
    /// ([`super::window::EntityWindows::resume`]).
    pub fn resume(&mut self, g: &Geometry) {
        self.next_end_ms = g.resume(self.next_end_ms, self.closed_through_ms);
    }

    /// Adds one reading of channel `channel`. Returns `false` when it was not added (a late
    /// reading not kept, a redelivery, or a channel index out of range).
    pub fn admit(&mut self, channel: usize, event_ms: i64, value: f64, g: &Geometry) -> bool {
        let closed = self.next_end_ms.map(|_| self.closed_through_ms);
        let Some(ch) = self.channels.get_mut(channel) else { return false };
        if ch.buffer.iter().rev().take_while(|(t, _)| *t >= event_ms).any(|&(t, v)| t == event_ms && v == value) {
            return false;
        }
        // Late for its own entity, whose windows close at its newest reading − lateness: the
        // entity path counts (or dead-letters) it, so the asset must not score it either.
        let late_for_channel = ch.newest_ms.is_some_and(|n| g.first_end_holding(event_ms) <= n.saturating_sub(g.lateness_ms));
        if !late_for_channel {
            ch.newest_ms = Some(ch.newest_ms.map_or(event_ms, |m| m.max(event_ms)));
        }
        if late_for_channel || g.is_late(closed, event_ms) {
            let fits = self.next_end_ms.is_some_and(|next| g.holds(next, event_ms));
            // Its baseline share was due when its time slot closed: it is not folded late.
            if g.late_policy == LatePolicy::Process && fits {
                let pos = ch.buffer.iter().rposition(|&(bt, _)| bt <= event_ms).map_or(0, |p| p + 1);
                ch.buffer.insert(pos, (event_ms, value));
                return true;
            }
            return false;
        }
        let pos = ch.buffer.iter().rposition(|&(bt, _)| bt <= event_ms).map_or(0, |p| p + 1);
        ch.buffer.insert(pos, (event_ms, value));
        self.max_event_ms = Some(self.max_event_ms.map_or(event_ms, |m| m.max(event_ms)));
        if self.next_end_ms.is_none() {
            let first = g.first_end(event_ms);
            (self.next_end_ms, self.closed_through_ms) = (Some(first), first.saturating_sub(g.hop_ms));
        }
        true
    }

    /// The asset's watermark: its newest reading of any channel minus the allowed lateness.
    pub fn watermark(&self, g: &Geometry) -> Option<i64> {
        self.max_event_ms.map(|m| m - g.lateness_ms)
    }

    /// Walks channel `channel`'s buffered readings up to the asset's watermark through the
    /// asset's sessions. Call before [`Self::close_ready`] (the open mark must precede the
    /// windows after the session start): the buffer still holds every reading after the last
    /// walk then (it keeps everything from the oldest window not emitted, which starts before
    /// the previous watermark).
    pub fn walk_sessions(&mut self, channel: usize, g: &Geometry, s: &SessionSettings, alpha: f64, out: &mut Vec<SessionEvent>) {
        let (Some(watermark), Some(ch)) = (self.watermark(g), self.channels.get(channel)) else { return };
        self.sessions.walk(ch.buffer.iter().copied(), watermark, s, alpha, out);
    }

    /// Whether every channel's baseline is complete.
    pub fn warmed_up(&self, warmup: u64) -> bool {
        self.channels.iter().all(|c| c.baseline.count >= warmup)
    }

    /// Emits every final window: one whose end the watermark has passed, or every channel's
    /// newest reading minus the lateness has reached (see the module docs). `emit` receives the resampled window and
    /// the state (for the baselines) when the window is complete (every channel has a value);
    /// it is called for every closed window that holds at least one reading, and may update the
    /// state's long view ([`AssetWindows::pca`]).
    pub fn close_ready(&mut self, g: &Geometry, width: usize, warmup: u64, mut emit: impl FnMut(AssetWindow, &mut AssetWindows)) {
        let (Some(max_event), Some(mut next_end)) = (self.max_event_ms, self.next_end_ms) else {
            return;
        };
        let watermark = max_event - g.lateness_ms;
        // `None` while some channel has no reading in time (`None` sorts first).
        let all_reached = self.channels.iter().map(|c| c.newest_ms).min().flatten().map(|t| t - g.lateness_ms);
        let mut slots = Vec::with_capacity(width);
        while next_end < watermark || all_reached.is_some_and(|w| next_end <= w) {
            let through = self.closed_through_ms;
            for ch in &mut self.channels {
                for &(_, v) in ch.buffer.iter().filter(|(t, _)| *t > through && *t <= next_end) {
                    ch.baseline.update(v, warmup);
                }
            }
            self.closed_through_ms = through.max(next_end);
            // Any reading, new or not (unlike an entity's windows: the long view,
            // `[pipeline.warmup_pca]`, spans the window means of consecutive hops).
            let any = self.channels.iter().any(|c| c.buffer.iter().any(|(t, _)| g.holds(next_end, *t)));
            if !any {
                // Skip straight to the first window holding the next buffered reading.
                // Not past the first window that may not be final yet (see the entity's).
                let next_t = self.channels.iter().filter_map(|c| c.buffer.iter().find(|(t, _)| *t > next_end).map(|p| p.0)).min();
                next_end = match next_t {
                    Some(t) => (next_end + g.hop_ms).max(g.first_end_holding(t).min(g.first_end_holding(watermark))),
                    None => next_end + g.hop_ms,
                };
            } else {
                let n = self.channels.len();
                let mut values = vec![f64::NAN; width * n];
                let mut complete = true;
                for (c, ch) in self.channels.iter().enumerate() {
                    let points: Vec<(i64, f64)> = ch.buffer.iter().copied().filter(|(t, _)| g.holds(next_end, *t)).collect();
                    if resample(&points, next_end, g.size_ms, width, &mut slots).is_some() {
                        for (i, v) in slots.iter().enumerate() {
                            values[i * n + c] = *v;
                        }
                    } else if let Some(h) = ch.held {
                        for i in 0..width {
                            values[i * n + c] = h;
                        }
                    } else {
                        complete = false;
                    }
                }
                if complete {
                    emit(AssetWindow { end_ms: next_end, values }, self);
                }
                next_end += g.hop_ms;
            }
            // Readings no window from `next_end` on holds (the last one is the channel's held value).
            for ch in &mut self.channels {
                while ch.buffer.front().is_some_and(|(t, _)| *t <= next_end - g.size_ms) {
                    ch.held = ch.buffer.pop_front().map(|p| p.1);
                }
            }
        }
        self.next_end_ms = Some(next_end);
        // Every end before `next_end` was final (a skip stops at the first one that may not be);
        // never lower than before (see the entity's).
        self.closed_through_ms = self.closed_through_ms.max(next_end - g.hop_ms);
    }
}

/// `asset_warmup_zscore`: `z[slot·C + c] = clamp((x − mean_c) / scale_c, ±clip)` with
/// `scale_c = max(std_c, relative_std_floor · |mean_c|, min_std)` from channel `c`'s frozen
/// warm-up baseline; time-major like the window.
pub fn normalise_asset_window(norm: &Normalisation, window: &AssetWindow, state: &AssetWindows, out: &mut Vec<f32>) {
    let n = state.channels.len().max(1);
    out.clear();
    out.extend(window.values.iter().enumerate().map(|(i, x)| {
        let b = &state.channels[i % n].baseline;
        ((x - b.mean) / b.scale(norm)).clamp(-norm.clip, norm.clip) as f32
    }));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inference::manifest::NormalisationMethod;

    fn geometry() -> Geometry {
        Geometry { size_ms: 4000, hop_ms: 1000, offset_ms: 0, lateness_ms: 0, late_policy: LatePolicy::Drop }
    }

    /// Feeds `(channel, t, v)` readings; returns the emitted windows.
    fn run(state: &mut AssetWindows, readings: &[(usize, i64, f64)]) -> Vec<AssetWindow> {
        let g = geometry();
        let mut out = Vec::new();
        for &(c, t, v) in readings {
            state.admit(c, t, v, &g);
            state.close_ready(&g, 4, 3, |w, _| out.push(w));
        }
        out
    }

    #[test]
    fn channels_are_joined_time_major_on_one_grid() {
        let mut s = AssetWindows::new(2);
        // Channel 0 at every second, channel 1 at every second with an offset of 300 ms.
        let mut readings = Vec::new();
        for i in 0..8i64 {
            readings.push((0, i * 1000, i as f64));
            readings.push((1, i * 1000 + 300, 100.0 + i as f64));
        }
        let out = run(&mut s, &readings);
        // A window closes when any channel passes its end or all reach it (the one ending at 0
        // closed with channel 1's first reading, at 300, but held no reading of it, so it was
        // not complete): ends 1000..=7000.
        assert_eq!(out.iter().map(|w| w.end_ms).collect::<Vec<_>>(), (1..=7).map(|i| i * 1000).collect::<Vec<_>>());
        // Window ending 7000 = (3000, 7000]: slots t0c0, t0c1, t1c0, …; channel 0's reading at
        // 7000 is in it, channel 1's at 7300 is not.
        assert_eq!(out[6].values, vec![4.0, 103.0, 5.0, 104.0, 6.0, 105.0, 7.0, 106.0]);
    }

    #[test]
    fn a_reading_late_for_its_own_entity_is_late_for_the_asset_too() {
        let g = geometry();
        let mut s = AssetWindows::new(2);
        for (c, t) in [(0, 1000), (1, 1000), (0, 2000), (1, 2000), (1, 4000)] {
            assert!(s.admit(c, t, 1.0, &g));
        }
        // Channel 0 reaches 5000: its entity closes its window 5000 (lateness 0); the asset does
        // not yet (channel 1 is at 4000).
        assert!(s.admit(0, 5000, 1.0, &g));
        s.close_ready(&g, 4, 1, |_, _| {});
        assert_eq!(s.next_end_ms, Some(5000), "windows up to 4000 closed (5000 passed them), 5000 waits for channel 1");
        // 4500 is late for channel 0's entity (its window 5000 is out), not for the asset's
        // windows: it must not go into the asset's window 5000.
        assert!(!s.admit(0, 4500, 9.0, &g));
        assert!(s.admit(1, 5000, 1.0, &g));
        let mut out = Vec::new();
        s.close_ready(&g, 4, 1, |w, _| out.push(w));
        assert_eq!(out.iter().map(|w| w.end_ms).collect::<Vec<_>>(), vec![5000]);
        assert!(out.iter().all(|w| !w.values.contains(&9.0)), "{out:?}");
    }

    #[test]
    fn a_silent_channel_holds_its_last_value_and_a_never_seen_one_blocks_scoring() {
        let mut s = AssetWindows::new(2);
        let out = run(&mut s, &[(0, 0, 1.0), (0, 1000, 2.0), (0, 2000, 3.0)]);
        assert!(out.is_empty(), "channel 1 never reported: nothing complete");
        let out = run(&mut s, &[(1, 2500, 50.0), (0, 7000, 4.0), (0, 12_000, 5.0)]);
        // Window ending 10000 = (6000, 10000]: channel 1 silent since 2500 -> held 50.
        let w = out.iter().find(|w| w.end_ms == 10_000).expect("window 10000");
        assert_eq!(w.values, vec![4.0, 50.0, 4.0, 50.0, 4.0, 50.0, 4.0, 50.0]);
    }

    #[test]
    fn baselines_freeze_after_warmup_and_normalise() {
        let mut s = AssetWindows::new(1);
        let readings: Vec<(usize, i64, f64)> = (0..10).map(|i| (0, i * 1000, [1.0, 3.0, 2.0, 100.0][(i as usize).min(3)])).collect();
        run(&mut s, &readings);
        let b = s.channels[0].baseline;
        assert_eq!(b.count, 3);
        assert!((b.mean - 2.0).abs() < 1e-12 && (b.std() - (2.0f64 / 3.0).sqrt()).abs() < 1e-12);
        let mut norm = Normalisation {
            method: NormalisationMethod::AssetWarmupZscore,
            alpha: 0.01,
            min_std: 1e-3,
            clip: 8.0,
            warmup: 3,
            window_std_ratio: None,
            relative_std_floor: Some(0.0),
        };
        let mut z = Vec::new();
        normalise_asset_window(&norm, &AssetWindow { end_ms: 0, values: vec![2.0, 100.0] }, &s, &mut z);
        assert_eq!(z, vec![0.0, 8.0]);
        // The relative floor: scale max(0.816, 0.5 * 2) = 1.
        norm.relative_std_floor = Some(0.5);
        normalise_asset_window(&norm, &AssetWindow { end_ms: 0, values: vec![3.5] }, &s, &mut z);
        assert_eq!(z, vec![1.5]);
    }

    #[test]
    fn restored_state_continues_identically() {
        let readings: Vec<(usize, i64, f64)> = (0..60).map(|i| ((i % 3) as usize, (i / 3) * 700 + (i % 3) * 90, (i as f64).sin())).collect();
        let mut whole = AssetWindows::new(3);
        let all = run(&mut whole, &readings);
        let mut first = AssetWindows::new(3);
        let mut split = run(&mut first, &readings[..25]);
        let bytes = crate::store::to_cbor(&first);
        let mut restored: AssetWindows = crate::store::from_cbor("asset_state", "x", &bytes).unwrap();
        split.extend(run(&mut restored, &readings[25..]));
        assert_eq!(all, split);
        assert_eq!(whole, restored);
    }

    /// Like [`run`], feeding each complete window through the long view as the worker does
    /// (warm-up of 30 readings); returns `(end, evidence)` of the warmed-up windows.
    fn run_long_view(state: &mut AssetWindows, readings: &[(usize, i64, f64)]) -> Vec<(i64, Option<f64>)> {
        use super::super::warmup_pca::WarmupPcaSettings;
        let g = geometry();
        let norm = Normalisation {
            method: NormalisationMethod::AssetWarmupZscore,
            alpha: 0.01,
            min_std: 1e-3,
            clip: 8.0,
            warmup: 30,
            window_std_ratio: None,
            relative_std_floor: Some(0.01),
        };
        let pca = WarmupPcaSettings { windows: 2, variance: 0.99, limit_quantile: 0.99, weight: 0.1, model_weight: 0.25 };
        let mut out = Vec::new();
        for &(c, t, v) in readings {
            state.admit(c, t, v, &g);
            state.close_ready(&g, 4, norm.warmup, |w, st| {
                let warmed = st.warmed_up(norm.warmup);
                let baselines: Vec<(f64, f64)> = st.channels.iter().map(|c| (c.baseline.mean, c.baseline.scale(&norm))).collect();
                let evidence = st.pca.observe(&pca, g.size_ms, w.end_ms, &w.values, &baselines, warmed);
                if warmed {
                    out.push((w.end_ms, evidence));
                }
            });
        }
        out
    }

    #[test]
    fn the_long_view_restores_mid_warm_up_and_after_the_fit() {
        // Two channels, one reading each per second; channel 1 steps down by 2 at 80 s.
        let readings: Vec<(usize, i64, f64)> = (0..240i64)
            .map(|i| {
                let (c, t) = ((i % 2) as usize, (i / 2) * 1000 + (i % 2) * 40);
                let wobble = ((i / 2) as f64 * 0.7).sin();
                (c, t, if c == 0 { 5.0 + wobble } else { 20.0 + wobble * 0.5 - if t >= 80_000 { 2.0 } else { 0.0 } })
            })
            .collect();
        let mut whole = AssetWindows::new(2);
        let all = run_long_view(&mut whole, &readings);
        assert!(matches!(whole.pca.fit, super::super::warmup_pca::Fit::Fitted(_)), "{:?}", whole.pca.fit);
        let before = all.iter().filter(|(e, _)| *e < 80_000).filter_map(|p| p.1).fold(0.0, f64::max);
        let after = all.iter().filter(|(e, _)| *e >= 90_000).map(|p| p.1.unwrap_or(0.0)).fold(f64::INFINITY, f64::min);
        assert!(after > 5.0 * before.max(0.1), "the step stands out: {after} vs {before}");
        for cut in [30, 150] {
            // 30 readings: the warm-up is still recording; 150: the PCA is fitted.
            let mut first = AssetWindows::new(2);
            let mut split = run_long_view(&mut first, &readings[..cut]);
            let bytes = crate::store::to_cbor(&first);
            let mut restored: AssetWindows = crate::store::from_cbor("asset_state", "x", &bytes).unwrap();
            split.extend(run_long_view(&mut restored, &readings[cut..]));
            assert_eq!(all, split, "cut at {cut}");
            assert_eq!(whole, restored);
        }
    }

    #[test]
    fn a_state_written_before_the_long_view_loads() {
        let mut s = AssetWindows::new(2);
        run(&mut s, &[(0, 0, 1.0), (1, 10, 2.0), (0, 1000, 1.5), (1, 1010, 2.5)]);
        let mut value = ciborium::Value::serialized(&s).unwrap();
        let ciborium::Value::Map(fields) = &mut value else { panic!("a struct is a map") };
        let n = fields.len();
        fields.retain(|(k, _)| k.as_text() != Some("pca"));
        assert_eq!(fields.len(), n - 1, "the field is named `pca`");
        let mut bytes = Vec::new();
        ciborium::ser::into_writer(&value, &mut bytes).unwrap();
        let old: AssetWindows = crate::store::from_cbor("asset_state", "x", &bytes).unwrap();
        assert_eq!(old, s);
    }

    #[test]
    fn routing_sends_an_assets_channels_to_one_worker() {
        let assets = vec![AssetConfig { id: "pump".into(), channels: (0..8).map(|i| format!("pump/ch{i}")).collect(), session_channel: None }];
        let r = Routing::new(&assets);
        let w = r.worker_of("pump/ch0", 5);
        assert!((0..8).all(|i| r.worker_of(&format!("pump/ch{i}"), 5) == w));
        assert_eq!(r.channel_of("pump/ch3").map(|(a, i)| (a.as_ref(), *i)), Some(("pump", 3)));
        assert_eq!(r.worker_of("other", 5), super::super::partition_of("other", 5));
    }
}
