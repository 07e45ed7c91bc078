//! The alert stage: scores become bands, bands become alerts.
//!
//! For each scored window (in per-entity order) the [`Evaluator`]:
//!
//! 1. skips windows at or before the entity's last evaluated window end (the commit log's
//!    recovery may score a window twice; its outputs were already committed);
//! 2. maps the score to a band with the thresholds (config overrides the model manifest);
//! 3. applies hysteresis — raise after `raise_after` consecutive alert-band windows, clear after
//!    `clear_after` consecutive windows below it — and a per-entity cooldown after a clear;
//! 4. emits a review event for a review-band window (at most one per entity per cooldown),
//!    also as an alert record with state `review` (so webhooks can route it).
//!
//! It also takes the workers' [`Emit`]s in order with the windows ([`Evaluator::emit`]):
//! aggregate records pass through; a session's open mark starts collecting the scores and alert
//! changes of windows ending at or after its start ([`SessionScores`]), and its close fills them into
//! the session record. Emits numbered at or below the entity's `emitted_through` were committed
//! before a restart and are skipped, like windows already evaluated.
//!
//! The stage thread commits every score record, every alert record and the changed hysteresis
//! state in one [`Outputs`] write, then hands alert and review messages to the publishers
//! ([`publish`]): MQTT topics and standard output.

pub mod health;
pub mod publish;
pub mod review;
pub mod webhook;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use cloud_uplink::{AlertState, Body, ModelRef, SessionAlert};
use crossbeam_channel::{Receiver, Sender};
use serde::{Deserialize, Serialize};

use crate::api::live::{LiveView, ScoreView};
use crate::commit_log::{InternalWrite, Outputs};
use crate::config::{Config, ScoreMode};
use crate::inference::batcher::ScoredWindow;
use crate::memory::Sparse;
use crate::inference::manifest::Band;
use crate::metrics::Metrics;
use crate::pipeline::{Emit, Emitted, RawSummary, Stage};
use crate::reading::now_ms;
use publish::Publisher;

pub fn band_name(band: Band) -> &'static str {
    match band {
        Band::Normal => "normal",
        Band::Review => "review",
        Band::Alert => "alert",
    }
}

/// Hysteresis and cooldown settings.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub score: ScoreMode,
    pub raise_after: u32,
    pub clear_after: u32,
    pub cooldown_ms: i64,
    /// `alerts.novelty_horizon`: windows the [`Novelty`] ranges remember (0: all).
    pub novelty_horizon: u32,
}

impl Policy {
    /// From `[alerts]`. The thresholds belong to the model that scored a window (config over
    /// its manifest) and travel with it ([`ScoredWindow::thresholds`]).
    pub fn new(config: &Config) -> Policy {
        Policy {
            score: config.alerts.score,
            raise_after: config.alerts.raise_after,
            clear_after: config.alerts.clear_after,
            cooldown_ms: config.alerts.cooldown_s as i64 * 1000,
            novelty_horizon: config.alerts.novelty_horizon,
        }
    }
}

/// Windows of error history [`ErrorBaseline`] compares against: four model widths (an anomaly
/// stays in 32 sliding windows of the shipped models; a longer memory also keeps a recurring
/// pattern from scoring again). One global value, chosen from 32/64/128/256 on the whole NAB
/// corpus (README, "Replay and evaluation").
pub const BASELINE_RECENT: usize = 128;
/// Windows before [`ErrorBaseline`] scores anything.
pub const BASELINE_MIN_WINDOWS: u64 = 64;
/// EWMA weight of the long-run error statistics (after the first `1/α` windows).
pub const BASELINE_ALPHA: f64 = 1.0 / 512.0;

/// `alerts.score = "entity_relative"`: an entity's reconstruction-error history.
///
/// With `x = ln(error + 1e-6)`, the long-run EWMA mean `m` and standard deviation `s` of `x`
/// (deviations capped at 3 `s`, so anomalies barely move them; floor 0.05), `r` the highest
/// `x` of the last [`BASELINE_RECENT`] windows and `d` the highest `x` at about the same time
/// of day yesterday ([`DailyPeaks`]), a window scores `z = (x − max(m, r, d)) / s` and
/// `score = 1 − e^{−max(z, 0)/3}`. The score is unit-free (usable on any sensor without
/// retraining), high when the error jumps — an anomaly's onset — and back to 0 while the same
/// anomaly is still inside the following windows, and when the same jump came at this time
/// yesterday too (a daily batch job, a shift change: the error recurs, it is no onset).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ErrorBaseline {
    pub count: u64,
    pub mean: f64,
    pub var: f64,
    pub recent: std::collections::VecDeque<f64>,
    /// Absent in states written before it existed: it starts with their next window.
    #[serde(default)]
    pub daily: DailyPeaks,
}

/// Slots a day is cut into by [`DailyPeaks`] (half an hour each).
pub const DAILY_SLOTS: usize = 48;

/// The highest log-error per half-hour of the (UTC) day, for today and yesterday: what
/// [`ErrorBaseline`] compares a window with besides its recent past, so that an error which
/// recurs at the same time every day does not count as an onset.
///
/// A window's slot is its end's time of day; it is judged against yesterday's peaks in its own
/// slot and the two next to it (a recurrence 30 to 60 minutes early or late still counts; no
/// wrap across midnight, which would compare with the day before yesterday). The peaks are
/// stored rounded *up* to 1/256 of a log unit (`i16`, [`DailyPeaks::EMPTY`] where no window
/// fell): a recurrence is never judged higher than its stored peak by rounding, and an error
/// more than 0.4 % above yesterday's peak still counts as above it. 4 × [`DAILY_SLOTS`] bytes
/// per entity.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DailyPeaks {
    /// Day number (UTC, days since the epoch) of the `today` half; 0 before the first window.
    pub day: i64,
    /// Yesterday's slots then today's, 2 × [`DAILY_SLOTS`] (empty before the first window; any
    /// other length, from a damaged state, counts as empty).
    pub peaks: Vec<i16>,
}

impl DailyPeaks {
    /// A slot no window fell into.
    pub const EMPTY: i16 = i16::MIN;
    /// Stored steps per log unit.
    const STEPS: f64 = 256.0;
    const DAY_MS: i64 = 86_400_000;

    fn day_and_slot(end_ms: i64) -> (i64, usize) {
        let day = end_ms.div_euclid(Self::DAY_MS);
        // rem_euclid is in [0, DAY_MS): the slot is below DAILY_SLOTS.
        (day, (end_ms.rem_euclid(Self::DAY_MS) * DAILY_SLOTS as i64 / Self::DAY_MS) as usize)
    }

    fn holds_two_days(&self) -> bool {
        self.peaks.len() == 2 * DAILY_SLOTS
    }

    /// The highest `x` yesterday in the window's slot or next to it (`-∞` if none).
    pub fn yesterday(&self, end_ms: i64) -> f64 {
        let (day, slot) = Self::day_and_slot(end_ms);
        // Saturating: a damaged `day` (far from any real one) matches neither arm.
        let yesterday = match day.saturating_sub(self.day) {
            0 if self.holds_two_days() => &self.peaks[..DAILY_SLOTS],
            // Tomorrow for this history: today's peaks are yesterday's then.
            1 if self.holds_two_days() => &self.peaks[DAILY_SLOTS..],
            _ => return f64::NEG_INFINITY,
        };
        let near = &yesterday[slot.saturating_sub(1)..(slot + 2).min(DAILY_SLOTS)];
        near.iter().filter(|&&q| q != Self::EMPTY).map(|&q| f64::from(q) / Self::STEPS).fold(f64::NEG_INFINITY, f64::max)
    }

    /// Folds `x` into today's slot of the window ending `end_ms` (the next day moves today to
    /// yesterday; any other day — after a gap, or before the history's — starts afresh).
    pub fn fold(&mut self, end_ms: i64, x: f64) {
        let (day, slot) = Self::day_and_slot(end_ms);
        let tomorrow = self.day.saturating_add(1);
        if day == tomorrow && self.holds_two_days() {
            self.peaks.copy_within(DAILY_SLOTS.., 0);
            self.peaks[DAILY_SLOTS..].fill(Self::EMPTY);
            self.day = day;
        } else if day != self.day || !self.holds_two_days() {
            // The first window, a gap of more than a day, or a day that is not after the
            // history's (event time went back, or a damaged state): start afresh.
            self.peaks = vec![Self::EMPTY; 2 * DAILY_SLOTS];
            self.day = day;
        }
        // Rounded up. `x` is a log-error (ErrorBaseline: ≥ ln 1e-6 ≈ -13.8, finite); the clamp
        // keeps EMPTY free and only bites beyond errors of e^127.
        let q = (x * Self::STEPS).ceil().clamp(-32_767.0, 32_767.0) as i16;
        let peak = &mut self.peaks[DAILY_SLOTS + slot];
        *peak = (*peak).max(q);
    }
}

impl ErrorBaseline {
    /// Scores the error of the window ending `end_ms` and folds it into the history.
    pub fn score(&mut self, error: f64, end_ms: i64) -> f64 {
        let x = (error.max(0.0) + 1e-6).ln();
        let s = self.var.max(0.0).sqrt().max(0.05);
        let reference = self.recent.iter().copied().fold(self.mean, f64::max).max(self.daily.yesterday(end_ms));
        let z = if self.count >= BASELINE_MIN_WINDOWS { (x - reference) / s } else { 0.0 };
        self.daily.fold(end_ms, x);
        if self.count == 0 {
            self.mean = x;
        } else {
            let a = BASELINE_ALPHA.max(1.0 / (self.count + 1) as f64);
            let mut d = x - self.mean;
            if self.count >= BASELINE_MIN_WINDOWS {
                d = d.clamp(-3.0 * s, 3.0 * s);
            }
            self.mean += a * d;
            self.var = (1.0 - a) * (self.var + a * d * d);
        }
        self.recent.push_back(x);
        if self.recent.len() > BASELINE_RECENT {
            self.recent.pop_front();
        }
        self.count += 1;
        if z.is_finite() { 1.0 - (-z.max(0.0) / 3.0).exp() } else { 0.0 }
    }
}

/// Range score of [`Novelty`]: an excess of this many spans of the entity's range scores 0.5.
pub const NOVELTY_HALF_EXCESS: f64 = 0.05;
/// Weight of the model-error component ([`ErrorBaseline`]) in [`Novelty`].
pub const NOVELTY_ERROR_WEIGHT: f64 = 0.4;
/// Weight of the moving-average range component in [`Novelty`].
pub const NOVELTY_MEAN_WEIGHT: f64 = 0.3;
/// Windows a [`Novelty`] score must beat to stand at full height.
pub const NOVELTY_SUPPRESS_WINDOWS: usize = 150;
/// Maturity of a [`Range`]: its novelty counts `n / (n + NOVELTY_YOUNG_WINDOWS)` after it has
/// taken in `n` windows. A young range is broken often by perfectly normal values (in a
/// stationary series the chance that the next window holds a new extreme falls like `1/n`), so
/// its records say little; after 100 windows they count 1/2, after 1000 windows 10/11. Chosen
/// on the even half of the NAB corpus from 25…400 (README, "Replay and evaluation").
pub const NOVELTY_YOUNG_WINDOWS: f64 = 100.0;

/// Blocks a [`Range`] keeps: `alerts.novelty_horizon` is cut into this many blocks of windows.
/// More blocks forget more smoothly (the horizon varies by one block) at 16 bytes each per
/// range; two ranges per entity, for ~10 000 entities.
pub const NOVELTY_BLOCKS: usize = 8;

/// The lowest and highest value an entity has shown in the last `alerts.novelty_horizon`
/// windows (between 7/8 of the horizon and all of it, block by block).
///
/// Bounded memory whatever the horizon: the min/max of at most [`NOVELTY_BLOCKS`] blocks of
/// `⌈horizon / NOVELTY_BLOCKS⌉` windows each, oldest first. A window is judged against the union
/// of the blocks and then folded into the newest; when the newest is full a new one starts
/// and, past [`NOVELTY_BLOCKS`], the oldest drops out. Horizon 0 keeps one block for ever (every
/// value the entity has ever shown).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Range {
    /// Union of `blocks`: what the next window is judged against.
    pub lo: f64,
    pub hi: f64,
    /// `(lo, hi)` per block, oldest first; the last one is being filled. Empty in states
    /// written before the range forgot: `lo..hi` then counts as one full block of its own.
    #[serde(default)]
    pub blocks: std::collections::VecDeque<(f64, f64)>,
    /// Windows folded into the newest block.
    #[serde(default)]
    pub filled: u32,
    /// Windows taken in since the range started (saturating; forgetting does not reset it). A
    /// state written before it was counted holds an old range: it loads as mature.
    #[serde(default = "Range::mature")]
    pub taken: u64,
}

impl Range {
    /// `taken` of a range written before it was counted (see the field).
    fn mature() -> u64 {
        u64::MAX
    }

    /// How far `[min, max]` reaches beyond the range, in spans of the range, mapped to
    /// `e / (e + NOVELTY_HALF_EXCESS)` in [0, 1) and weighted by the range's maturity
    /// `n / (n + NOVELTY_YOUNG_WINDOWS)` (`n` = windows taken in so far); then the range takes
    /// `[min, max]` in (and forgets its oldest block if `horizon` windows are full). The first
    /// call only sets the range (score 0). Non-finite input scores 0 and changes nothing.
    fn novelty(range: &mut Option<Range>, min: f64, max: f64, horizon: u32) -> f64 {
        if !(min.is_finite() && max.is_finite()) {
            return 0.0;
        }
        let Some(r) = range else {
            *range = Some(Range { lo: min, hi: max, blocks: [(min, max)].into(), filled: 1, taken: 1 });
            return 0.0;
        };
        // A flat history: any departure is new, whatever the sensor's unit.
        let span = (r.hi - r.lo).max(f64::EPSILON * r.hi.abs().max(r.lo.abs()).max(1.0));
        let excess = (max - r.hi).max(r.lo - min).max(0.0) / span;
        let maturity = maturity(r.taken);
        r.remember(min, max, horizon);
        r.taken = r.taken.saturating_add(1);
        if excess > 0.0 { maturity * excess / (excess + NOVELTY_HALF_EXCESS) } else { 0.0 }
    }

    /// Folds one window's `[min, max]` into the newest block (see the type's docs).
    fn remember(&mut self, min: f64, max: f64, horizon: u32) {
        let block_windows = if horizon == 0 { u32::MAX } else { horizon.div_ceil(NOVELTY_BLOCKS as u32) };
        if self.blocks.is_empty() {
            // A state written before forgetting: its all-time range is one full block.
            self.blocks.push_back((self.lo, self.hi));
            self.filled = block_windows;
        }
        match self.blocks.back_mut() {
            Some(newest) if self.filled < block_windows => {
                *newest = (newest.0.min(min), newest.1.max(max));
                self.filled += 1;
            }
            _ => {
                // Drop first: the deque never holds (nor allocates for) more than NOVELTY_BLOCKS.
                while self.blocks.len() >= NOVELTY_BLOCKS {
                    self.blocks.pop_front();
                }
                self.blocks.push_back((min, max));
                self.filled = 1;
            }
        }
        (self.lo, self.hi) = self.blocks.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), b| (lo.min(b.0), hi.max(b.1)));
    }
}

/// The weight of a [`Range`]'s novelty after it has taken in `taken` windows:
/// `n / (n + NOVELTY_YOUNG_WINDOWS)`.
pub fn maturity(taken: u64) -> f64 {
    let n = taken as f64;
    n / (n + NOVELTY_YOUNG_WINDOWS)
}

/// `alerts.score = "novelty"`: how new a window is to its entity, judged on the newest readings
/// rather than on the whole window, with a sharp onset and a quiet tail.
///
/// The window's raw score is the highest of
/// * the **range novelty** of its readings: how far they reach beyond every value the entity has
///   shown in the last `alerts.novelty_horizon` windows ([`Range`]; from its first scored window
///   on), in spans of that range (unit-free), weighted by the range's [`maturity`] (a range that
///   has seen few windows is broken often by normal values: 1/2 after
///   [`NOVELTY_YOUNG_WINDOWS`]);
/// * [`NOVELTY_MEAN_WEIGHT`] × the range novelty of their moving average over half a model
///   width (a level shift that single readings do not show);
/// * [`NOVELTY_ERROR_WEIGHT`] × the `entity_relative` model-error score ([`ErrorBaseline`], 64
///   windows of warm-up).
///
/// An asset (multivariate) window has no raw range ([`RawSummary::NONE`]: its channels have
/// different units), so only its model-error part scores.
///
/// An anomaly's readings enter the range once, so each component fires at the onset and not
/// for the rest of the windows that contain it. The range forgets: after one wide excursion (a
/// maintenance spike, a sensor swap) the entity is sensitive again once the excursion's block
/// has left the horizon; memory per entity stays two [`Range`]s of [`NOVELTY_BLOCKS`] blocks
/// plus the suppression history, whatever the horizon.
///
/// **Suppression:** a raw score that does not beat every raw score of the last [`NOVELTY_SUPPRESS_WINDOWS`] windows counts half, so a burst of
/// detections scores its first (highest) window above the rest. The constants were chosen on
/// half of the NAB corpus (README, "Replay and evaluation").
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Novelty {
    pub values: Option<Range>,
    pub means: Option<Range>,
    /// Raw scores of the last [`NOVELTY_SUPPRESS_WINDOWS`] windows.
    pub recent: std::collections::VecDeque<f64>,
}

impl Novelty {
    /// Scores one window (`error` goes through `baseline`) and folds it into the history, whose
    /// ranges remember `horizon` windows (`alerts.novelty_horizon`; 0: all).
    pub fn score(&mut self, raw: &RawSummary, error: f64, end_ms: i64, baseline: &mut ErrorBaseline, horizon: u32) -> f64 {
        self.score_with_evidence(raw, error, end_ms, baseline, horizon).0
    }

    /// [`Novelty::score`], and which part decided it.
    pub fn score_with_evidence(&mut self, raw: &RawSummary, error: f64, end_ms: i64, baseline: &mut ErrorBaseline, horizon: u32) -> (f64, Evidence) {
        // The side the part's excess comes from (as `Range::novelty` measures it).
        let reach = |range: &Option<Range>, min: f64, max: f64, mean: bool| match range {
            Some(r) if max - r.hi >= r.lo - min => Evidence::Range { mean, above: true, reached: max, bound: r.hi },
            Some(r) => Evidence::Range { mean, above: false, reached: min, bound: r.lo },
            None => Evidence::Quiet,
        };
        let value_reach = reach(&self.values, raw.min, raw.max, false);
        let mean_reach = reach(&self.means, raw.mean_min, raw.mean_max, true);
        let value = Range::novelty(&mut self.values, raw.min, raw.max, horizon);
        let mean = Range::novelty(&mut self.means, raw.mean_min, raw.mean_max, horizon);
        let model = baseline.score(error, end_ms);
        let parts = [(value, value_reach), (NOVELTY_MEAN_WEIGHT * mean, mean_reach), (NOVELTY_ERROR_WEIGHT * model, Evidence::Error { error })];
        let (x, evidence) = parts.into_iter().fold((0.0, Evidence::Quiet), |best, part| if part.0 > best.0 { part } else { best });
        let beaten = self.recent.iter().copied().fold(0.0, f64::max);
        self.recent.push_back(x);
        if self.recent.len() > NOVELTY_SUPPRESS_WINDOWS {
            self.recent.pop_front();
        }
        (if x > beaten { x } else { x / 2.0 }, evidence)
    }
}

/// What decided a window's `novelty` or `entity_relative` score, for the alert and review
/// messages: a plant engineer should not have to guess whether a reading, a drift or the
/// model raised an alert.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Evidence {
    /// No part scored (or `alerts.score = "model"`).
    Quiet,
    /// The window's readings (`mean: false`) or their moving average (`mean: true`) reached
    /// `reached`, beyond the highest (`above`) or lowest value the entity had shown in the
    /// novelty horizon, `bound`.
    Range { mean: bool, above: bool, reached: f64, bound: f64 },
    /// The model's reconstruction error of the window, `error`, rose above the entity's own
    /// error history.
    Error { error: f64 },
    /// An asset window scored with its long view (`[pipeline.warmup_pca]`): the long view's
    /// share of the combined error behind the score, in [0, 1] (the model error has the rest).
    LongView { share: f64 },
}

impl Evidence {
    /// What decided the `model` score of `w`: its long view's share, when it has one.
    fn of_model_score(w: &ScoredWindow) -> Evidence {
        match w.long_view {
            // The score is `E / (E + scale)` of the combined error `E = model part + evidence ·
            // scale` (`LongViewEvidence::combined_error`), so `E / scale = score / (1 − score)`.
            Some(l) if w.score > 0.0 && w.score < 1.0 => Evidence::LongView { share: (l.evidence / (w.score / (1.0 - w.score))).clamp(0.0, 1.0) },
            _ => Evidence::Quiet,
        }
    }
}

impl std::fmt::Display for Evidence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Evidence::Quiet => Ok(()),
            Evidence::Range { mean, above, reached, bound } => write!(
                f,
                "{} reached {}, {} the {} value of its recent range ({})",
                if mean { "the moving average" } else { "a reading" },
                Significant(reached),
                if above { "above" } else { "below" },
                if above { "highest" } else { "lowest" },
                Significant(bound),
            ),
            Evidence::Error { error } => write!(f, "the model's reconstruction error ({}) rose above the entity's usual errors", Significant(error)),
            Evidence::LongView { share } => write!(
                f,
                "the asset's long view against its warm-up made {:.0} % of the error behind the score, the model's reconstruction error {:.0} %",
                100.0 * share,
                100.0 * (1.0 - share)
            ),
        }
    }
}

/// `": <evidence>"`, or nothing for [`Evidence::Quiet`].
struct Because(Evidence);

impl std::fmt::Display for Because {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Evidence::Quiet => Ok(()),
            evidence => write!(f, ": {evidence}"),
        }
    }
}

/// A reading as people write it: at least six significant digits (every integer digit below
/// 1e15), no trailing zeros after the point; scientific notation outside 1e-4..1e15.
struct Significant(f64);

impl std::fmt::Display for Significant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let v = self.0;
        if v == 0.0 || !v.is_finite() {
            return write!(f, "{v}");
        }
        let magnitude = v.abs().log10().floor() as i32;
        if !(-4..15).contains(&magnitude) {
            return write!(f, "{v:.5e}");
        }
        let decimals = (5 - magnitude).max(0) as usize;
        let text = format!("{v:.decimals$}");
        let text = if text.contains('.') { text.trim_end_matches('0').trim_end_matches('.') } else { &text };
        f.write_str(text)
    }
}

/// Per-entity hysteresis state (persisted in `alert_state`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EntityAlertState {
    pub last_window_end_ms: i64,
    pub consecutive_alert: u32,
    pub consecutive_below: u32,
    pub raised: bool,
    pub cooldown_until_ms: i64,
    pub last_review_ms: Option<i64>,
    /// `alerts.score = "entity_relative"` history (empty in states written before it existed).
    /// Boxed on first use ([`Sparse`]): the default `model` scoring never needs it, and the
    /// evaluator's per-entity map stores states inline.
    #[serde(default)]
    pub baseline: Sparse<ErrorBaseline>,
    /// `alerts.score = "novelty"` history (its model-error part is `baseline`); created on the
    /// first novelty-scored window. Boxed: the evaluator's per-entity map stores states inline,
    /// and in the other modes 10 000 entities would carry ~160 unused bytes each.
    #[serde(default)]
    pub novelty: Option<Box<Novelty>>,
    /// The raised alert, while `raised` (restores the dashboard's open alerts after a restart).
    /// Absent in states written before it existed. Boxed: few entities have one.
    #[serde(default)]
    pub open: Option<Box<RaisedAlert>>,
    /// Highest [`Emit::seq`] of this entity already processed (absent in older states).
    #[serde(default)]
    pub emitted_through: u64,
    /// Sessions open (or closed by the worker but not yet released), by start. Boxed on first
    /// use: only entities `pipeline.session` applies to have any.
    #[serde(default)]
    pub sessions: Sparse<Vec<SessionScores>>,
    /// sha256 of the model whose errors `baseline` holds: a new active model (another error
    /// scale) starts a new history. Empty in states written before it existed, and in the
    /// default `model` scoring (boxed on first use, like `baseline`).
    #[serde(default)]
    pub baseline_model: Sparse<String>,
}

/// Most prefix maxima kept per session (the latest: they are the larger ones). A session
/// record looks only at windows up to `window size` after its end, far fewer than this.
const SESSION_MAXIMA: usize = 1024;

/// Scores and alert changes of the windows ending at or after a session's start.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SessionScores {
    pub start_ms: i64,
    /// `(window end, score)` of every window whose score exceeded all earlier ones of the
    /// session: the highest score up to any window end is the last entry at or before it.
    pub maxima: Vec<(i64, f64)>,
    /// Alert state changes, in window order.
    pub alerts: Vec<SessionAlert>,
}

/// What a person sees of a raised alert; it is identified by `(entity, window_end_ms)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RaisedAlert {
    /// End of the window that raised it.
    pub window_end_ms: i64,
    pub score: f64,
    pub message: String,
    /// Wall clock when it was raised.
    pub raised_ms: i64,
}

/// An acknowledgement of the raised alert `(entity, window_end_ms)`, in the `alert_ack` table
/// (written by the commit log for `POST /api/alerts/ack`). Applies only while that alert is
/// open: a later raise of the same entity is a new alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Acknowledgement {
    pub window_end_ms: i64,
    pub by: String,
    pub acked_ms: i64,
}

/// A message for people and machines: an alert raised or cleared, or a review-band window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertMessage {
    pub agent: String,
    pub entity: String,
    /// `raised`, `cleared` or `review`.
    pub state: &'static str,
    pub band: &'static str,
    pub score: f64,
    pub error: f64,
    pub window_end_ms: i64,
    pub model: ModelRef,
    pub message: String,
}

/// What one window produced.
#[derive(Debug, Default)]
pub struct Evaluation {
    pub records: Vec<(i64, Body)>,
    pub messages: Vec<AlertMessage>,
    /// The wall clock of this evaluation (an alert's `raised_ms`), set by the caller.
    pub now_ms: i64,
}

/// Pure hysteresis logic over all entities.
pub struct Evaluator {
    pub agent: String,
    pub policy: Policy,
    /// Per entity, boxed (see [`crate::memory`]).
    pub states: HashMap<Arc<str>, Box<EntityAlertState>>,
}

impl Evaluator {
    /// Evaluates one window; returns its score (per `alerts.score`) and band, or `None` if it
    /// was already evaluated before a restart.
    pub fn evaluate(&mut self, w: &ScoredWindow, out: &mut Evaluation) -> Option<(f64, Band)> {
        let p = self.policy;
        let state = self.states.entry(w.entity.clone()).or_default();
        if w.window_end_ms <= state.last_window_end_ms {
            return None;
        }
        let first_record = out.records.len();
        state.last_window_end_ms = w.window_end_ms;
        let (score, evidence) = match p.score {
            ScoreMode::Model => (w.score, Evidence::of_model_score(w)),
            ScoreMode::EntityRelative | ScoreMode::Novelty => {
                // The error history belongs to one model: a new active model (another error
                // scale) starts a new one.
                let history_of = state.baseline_model.get().map_or("", String::as_str);
                if history_of != w.model.sha256 {
                    if !history_of.is_empty() {
                        state.baseline.clear();
                    }
                    *state.baseline_model.get_mut() = w.model.sha256.clone();
                }
                match p.score {
                    ScoreMode::Novelty => state.novelty.get_or_insert_with(Default::default).score_with_evidence(&w.raw, w.error, w.window_end_ms, state.baseline.get_mut(), p.novelty_horizon),
                    _ => {
                        let score = state.baseline.get_mut().score(w.error, w.window_end_ms);
                        (score, if score > 0.0 { Evidence::Error { error: w.error } } else { Evidence::Quiet })
                    }
                }
            }
        };
        // ": <evidence>" after an alert or review message, when a part decided the score
        // (formatted only when a message is written: this runs for every window).
        let because = Because(evidence);
        let thresholds = w.thresholds;
        let band = thresholds.band(score);
        out.records.push((
            w.window_end_ms,
            Body::Score {
                entity: w.entity.to_string(),
                window_end_ms: w.window_end_ms,
                score,
                error: Some(w.error),
                band: band_name(band).to_string(),
                model: (*w.model).clone(),
            },
        ));
        let message = |state_name: &'static str, text: String| AlertMessage {
            agent: self.agent.clone(),
            entity: w.entity.to_string(),
            state: state_name,
            band: band_name(band),
            score,
            error: w.error,
            window_end_ms: w.window_end_ms,
            model: (*w.model).clone(),
            message: text,
        };
        let mut transition = None;
        if band == Band::Alert {
            state.consecutive_alert += 1;
            state.consecutive_below = 0;
            if !state.raised && state.consecutive_alert >= p.raise_after && w.window_end_ms >= state.cooldown_until_ms {
                state.raised = true;
                let m = message(
                    "raised",
                    format!("anomaly on {}: score {:.3} >= {:.3} for {} windows{because}", w.entity, score, thresholds.alert, state.consecutive_alert),
                );
                state.open = Some(Box::new(RaisedAlert { window_end_ms: w.window_end_ms, score, message: m.message.clone(), raised_ms: out.now_ms }));
                transition = Some((AlertState::Raised, m));
            }
        } else {
            state.consecutive_alert = 0;
            if state.raised {
                state.consecutive_below += 1;
                if state.consecutive_below >= p.clear_after {
                    state.raised = false;
                    state.open = None;
                    state.consecutive_below = 0;
                    state.cooldown_until_ms = w.window_end_ms + p.cooldown_ms;
                    transition = Some((AlertState::Cleared, message(
                        "cleared",
                        format!("{} back below the alert threshold for {} windows", w.entity, p.clear_after),
                    )));
                }
            }
            if band == Band::Review && !state.raised && state.last_review_ms.is_none_or(|t| w.window_end_ms - t >= p.cooldown_ms) {
                state.last_review_ms = Some(w.window_end_ms);
                let m = message("review", format!("{} needs review: score {:.3}{because}", w.entity, score));
                out.records.push((
                    w.window_end_ms,
                    Body::Alert {
                        entity: w.entity.to_string(),
                        state: AlertState::Review,
                        band: m.band.to_string(),
                        score,
                        model: (*w.model).clone(),
                        message: m.message.clone(),
                    },
                ));
                out.messages.push(m);
            }
        }
        if let Some((alert_state, msg)) = transition.as_ref().map(|(a, m)| (*a, m.clone())) {
            out.records.push((
                w.window_end_ms,
                Body::Alert {
                    entity: w.entity.to_string(),
                    state: alert_state,
                    band: band_name(band).to_string(),
                    score,
                    model: (*w.model).clone(),
                    message: msg.message.clone(),
                },
            ));
            out.messages.push(msg);
        }
        if state.sessions.get().is_some_and(|s| !s.is_empty()) {
            let changes: Vec<SessionAlert> = out.records[first_record..]
                .iter()
                .filter_map(|(_, b)| match b {
                    Body::Alert { state, score, .. } => Some(SessionAlert { window_end_ms: w.window_end_ms, state: *state, score: *score }),
                    _ => None,
                })
                .collect();
            // Windows `(end − size, end]` holding a session reading: ending at its start or later.
            for acc in state.sessions.get_mut().iter_mut().filter(|a| w.window_end_ms >= a.start_ms) {
                if acc.maxima.last().is_none_or(|m| score > m.1) {
                    acc.maxima.push((w.window_end_ms, score));
                    if acc.maxima.len() > SESSION_MAXIMA {
                        acc.maxima.remove(0);
                    }
                }
                acc.alerts.extend(changes.iter().cloned());
            }
        }
        Some((score, band))
    }

    /// Takes one worker emit (see the module docs); `false` if it was already processed
    /// before a restart.
    pub fn emit(&mut self, e: Emit, out: &mut Evaluation) -> bool {
        let state = self.states.entry(e.entity).or_default();
        if e.seq <= state.emitted_through {
            return false;
        }
        state.emitted_through = e.seq;
        match e.what {
            Emitted::Record { event_time_ms, body } => out.records.push((event_time_ms, body)),
            Emitted::SessionOpened { start_ms } => {
                state.sessions.get_mut().push(SessionScores { start_ms, ..SessionScores::default() });
            }
            Emitted::SessionClosed { mut body, windows_through_ms } => {
                if let Body::Session { start_ms, max_score, alerts, .. } = &mut body {
                    let sessions = state.sessions.get_mut();
                    if let Some(i) = sessions.iter().position(|a| a.start_ms == *start_ms) {
                        let acc = sessions.remove(i);
                        if sessions.is_empty() {
                            state.sessions.clear();
                        }
                        *max_score = acc.maxima.iter().rev().find(|m| m.0 <= windows_through_ms).map(|m| m.1);
                        *alerts = acc.alerts.into_iter().filter(|a| a.window_end_ms <= windows_through_ms).collect();
                    }
                    out.records.push((*start_ms, body));
                }
            }
        }
        true
    }
}

/// The peer (non-deciding) scores of the windows the alert stage evaluated: `shadow_score`
/// records, and the comparison of candidate and active model (each scored as `alerts.score`
/// says, banded with its own thresholds). A peer never raises an alert. Its histories
/// (`entity_relative`, `novelty`) live in memory only: after a restart they start again.
#[derive(Default)]
pub struct PeerScores {
    /// Per entity: the peer model's error history and novelty ranges.
    histories: HashMap<Arc<str>, (ErrorBaseline, Novelty)>,
}

impl PeerScores {
    /// Adds the `shadow_score` record of `w`'s peer to `out`; returns the window's
    /// `(active, candidate)` comparison pair and the candidate's sha256.
    #[allow(clippy::type_complexity)]
    pub fn evaluate(&mut self, policy: &Policy, w: &ScoredWindow, decided: (f64, Band), out: &mut Evaluation) -> Option<(((f64, bool, u8), (f64, bool, u8)), String)> {
        let peer = w.peer.as_ref()?;
        let score = match policy.score {
            ScoreMode::Model => peer.score,
            ScoreMode::EntityRelative => self.histories.entry(w.entity.clone()).or_default().0.score(peer.error, w.window_end_ms),
            ScoreMode::Novelty => {
                let (baseline, novelty) = self.histories.entry(w.entity.clone()).or_default();
                novelty.score(&w.raw, peer.error, w.window_end_ms, baseline, policy.novelty_horizon)
            }
        };
        let band = peer.thresholds.band(score);
        out.records.push((
            w.window_end_ms,
            Body::ShadowScore {
                entity: w.entity.to_string(),
                window_end_ms: w.window_end_ms,
                score,
                error: Some(peer.error),
                band: band_name(band).to_string(),
                model: (*peer.model).clone(),
                mode: peer.mode.to_string(),
            },
        ));
        let this = (score, band == Band::Alert, band as u8);
        let decider = (decided.0, decided.1 == Band::Alert, decided.1 as u8);
        Some(if peer.is_candidate { ((decider, this), peer.model.sha256.clone()) } else { ((this, decider), w.model.sha256.clone()) })
    }
}

/// The alert stage thread: runs until inference disconnects.
pub fn run(
    mut evaluator: Evaluator,
    scored: Receiver<Stage<Vec<ScoredWindow>>>,
    to_commit_log: Sender<InternalWrite>,
    publishers: Vec<Box<dyn Publisher>>,
    metrics: Arc<Metrics>,
    live: Option<Arc<LiveView>>,
    lifecycle: Option<Arc<crate::inference::lifecycle::Lifecycle>>,
    policy: Receiver<Policy>,
) {
    let mut peers = PeerScores::default();
    while let Ok(message) = scored.recv() {
        // A config reload's new policy applies from the next batch on.
        while let Ok(p) = policy.try_recv() {
            evaluator.policy = p;
        }
        let now = now_ms();
        let mut out = Evaluation { now_ms: now, ..Evaluation::default() };
        let mut changed: Vec<Arc<str>> = Vec::new();
        let mut batch = match message {
            Stage::Item(batch) => batch,
            // Behind the outputs of every window it covers (see `Stage`).
            Stage::Checkpoint(c) => {
                if to_commit_log.send(InternalWrite::Checkpoint(c)).is_err() {
                    return;
                }
                continue;
            }
            Stage::Emit(emits) => {
                for e in emits {
                    let entity = e.entity.clone();
                    if evaluator.emit(e, &mut out) {
                        changed.push(entity);
                    }
                }
                Vec::new()
            }
        };
        let mut views = Vec::with_capacity(if live.is_some() { batch.len() } else { 0 });
        // Comparison pairs per candidate (sha256): one candidate at a time, but a batch scored
        // before a swap may still be in flight.
        let mut pairs: Vec<(String, Vec<_>)> = Vec::new();
        for w in batch.iter_mut() {
            // What the workers emitted before this window, then the window.
            for e in std::mem::take(&mut w.before) {
                let entity = e.entity.clone();
                if evaluator.emit(e, &mut out) {
                    changed.push(entity);
                }
            }
            let w = &*w;
            // Disabled at the default `info` level: costs a callsite check per window.
            let _span = tracing::debug_span!("window", entity = %w.entity, window_end_ms = w.window_end_ms, seq = w.trigger_seq).entered();
            if let Some((score, band)) = evaluator.evaluate(w, &mut out) {
                if let Some((pair, candidate)) = peers.evaluate(&evaluator.policy, w, (score, band), &mut out) {
                    match pairs.iter_mut().find(|(c, _)| *c == candidate) {
                        Some((_, v)) => v.push(pair),
                        None => pairs.push((candidate, vec![pair])),
                    }
                }
                changed.push(w.entity.clone());
                metrics.scores_by_band[band as usize].inc();
                if live.is_some() {
                    views.push(ScoreView { entity: w.entity.to_string(), window_end_ms: w.window_end_ms, score, band: band_name(band) });
                }
            }
            metrics.score_latency.record(w.trigger_ingest.elapsed());
            metrics.event_to_score.record(Duration::from_millis(now.saturating_sub(w.window_end_ms).max(0) as u64));
        }
        // The live view first: whoever sees a published alert (a person, a script acknowledging
        // it through the API) finds it open there.
        if let Some(live) = &live {
            live.scored(views, &out.messages, now);
        }
        for m in &out.messages {
            let window = batch.iter().find(|w| *w.entity == *m.entity && w.window_end_ms == m.window_end_ms);
            // What the publishers log (and any error) carries the entity and the seq of the
            // reading that closed the window.
            let _span = tracing::info_span!("alert", entity = %m.entity, state = m.state, window_end_ms = m.window_end_ms, seq = window.map_or(0, |w| w.trigger_seq)).entered();
            match m.state {
                "raised" => metrics.alerts_raised.inc(),
                "cleared" => metrics.alerts_cleared.inc(),
                _ => metrics.review_events.inc(),
            }
            for p in &publishers {
                p.publish(m);
            }
            if m.state == "raised" {
                if let Some(w) = window {
                    metrics.alert_latency.record(w.trigger_ingest.elapsed());
                }
                metrics.event_to_alert.record(Duration::from_millis(now_ms().saturating_sub(m.window_end_ms).max(0) as u64));
            }
        }
        if let Some(lifecycle) = &lifecycle {
            for (candidate, pairs) in pairs {
                if let Some(reason) = lifecycle.compare(&pairs, &candidate) {
                    let demote = crate::inference::lifecycle::Command::Demote { reason, sha256: Some(candidate), reply: None };
                    let _ = lifecycle.commands.send(demote);
                }
            }
        }
        if out.records.is_empty() && changed.is_empty() {
            continue;
        }
        changed.sort_unstable();
        changed.dedup();
        let alert_states = changed
            .iter()
            .filter_map(|e| evaluator.states.get(e).map(|s| (e.to_string(), crate::store::to_cbor(s))))
            .collect();
        if to_commit_log.send(InternalWrite::Outputs(Outputs { records: out.records, alert_states })).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inference::manifest::Thresholds;
    use std::time::Instant;

    fn window(t: i64, score: f64) -> ScoredWindow {
        ScoredWindow {
            entity: Arc::from("e"),
            window_end_ms: t,
            error: score,
            score,
            raw: RawSummary::NONE,
            long_view: None,
            model: Arc::new(ModelRef { name: "m".into(), version: "1".into(), sha256: "00".into() }),
            thresholds: Thresholds { review: 0.5, alert: 0.8 },
            peer: None,
            trigger_ingest: Instant::now(),
            trigger_seq: 0,
            before: Vec::new(),
        }
    }

    fn evaluator() -> Evaluator {
        Evaluator {
            agent: "a".into(),
            policy: Policy { score: ScoreMode::Model, raise_after: 2, clear_after: 2, cooldown_ms: 10_000, novelty_horizon: 0 },
            states: HashMap::new(),
        }
    }

    fn states(ev: &mut Evaluator, scores: &[(i64, f64)]) -> Vec<&'static str> {
        let mut out = Evaluation::default();
        for &(t, s) in scores {
            ev.evaluate(&window(t, s), &mut out);
        }
        out.messages.iter().map(|m| m.state).collect()
    }

    #[test]
    fn hysteresis_raise_and_clear() {
        let mut ev = evaluator();
        assert_eq!(states(&mut ev, &[(1000, 0.9)]), Vec::<&str>::new());
        assert_eq!(states(&mut ev, &[(2000, 0.9)]), vec!["raised"]);
        assert_eq!(states(&mut ev, &[(3000, 0.9), (4000, 0.1)]), Vec::<&str>::new());
        assert_eq!(states(&mut ev, &[(5000, 0.1)]), vec!["cleared"]);
    }

    #[test]
    fn cooldown_blocks_reraise_and_duplicates_are_skipped() {
        let mut ev = evaluator();
        states(&mut ev, &[(1000, 0.9), (2000, 0.9), (3000, 0.1), (4000, 0.1)]);
        // Cleared at 4000: cooldown until 14000.
        assert_eq!(states(&mut ev, &[(5000, 0.9), (6000, 0.9)]), Vec::<&str>::new());
        assert_eq!(states(&mut ev, &[(15_000, 0.9)]), vec!["raised"]);
        let mut out = Evaluation::default();
        assert!(ev.evaluate(&window(15_000, 0.9), &mut out).is_none());
        assert!(out.records.is_empty());
    }

    #[test]
    fn entity_relative_scores_the_onset_of_an_error_jump() {
        let mut b = ErrorBaseline::default();
        // Alternating errors 1, 2 (x = ln 1, ln 2): nothing exceeds the recent maximum.
        for i in 0..200 {
            let s = b.score(if i % 2 == 0 { 1.0 } else { 2.0 }, i * 60_000);
            assert_eq!(s, 0.0, "window {i}");
        }
        assert_eq!(b.count, 200);
        assert_eq!(b.recent.len(), BASELINE_RECENT);
        // A jump to 20: z = (ln 20 - ln 2) / s with s the long-run spread of ln e.
        let s = b.var.sqrt();
        let expected = 1.0 - (-((20f64 + 1e-6).ln() - (2f64 + 1e-6).ln()) / s / 3.0).exp();
        let onset = b.score(20.0, 200 * 60_000);
        assert!((onset - expected).abs() < 1e-9 && onset > 0.8, "{onset} vs {expected}");
        // The same level in the next windows is no longer new.
        assert_eq!(b.score(20.0, 201 * 60_000), 0.0);
        // Before BASELINE_MIN_WINDOWS nothing is scored.
        let mut fresh = ErrorBaseline::default();
        assert!((0..BASELINE_MIN_WINDOWS).all(|i| fresh.score(i as f64 * 10.0, i as i64 * 60_000) == 0.0));
    }

    /// Errors of 5-minute windows over `days` days: 1 and 2 alternating, `jump` at 06:00 of the
    /// days `jump_days` says; the scores of the 06:00 windows.
    fn daily_jump_scores(days: i64, jump_days: impl Fn(i64) -> bool) -> Vec<f64> {
        let mut b = ErrorBaseline::default();
        let day0 = 20_000 * DailyPeaks::DAY_MS;
        let mut at_six = Vec::new();
        for day in 0..days {
            for k in 0..288 {
                let end = day0 + day * DailyPeaks::DAY_MS + k * 300_000;
                let six = k == 72;
                let s = b.score(if six && jump_days(day) { 20.0 } else if k % 2 == 0 { 1.0 } else { 2.0 }, end);
                if six {
                    at_six.push(s);
                }
            }
        }
        at_six
    }

    #[test]
    fn entity_relative_ignores_an_error_jump_that_came_at_this_time_yesterday() {
        // Every day at 06:00: an onset on the first day, not on the days after.
        let daily = daily_jump_scores(4, |_| true);
        assert!(daily[0] > 0.8, "{daily:?}");
        assert_eq!(daily[1..], [0.0, 0.0, 0.0]);
        // A day without it in between: the jump is new again the day after.
        let skipped = daily_jump_scores(4, |day| day != 1);
        assert!(skipped[0] > 0.8 && skipped[2] > 0.8 && skipped[3] == 0.0, "{skipped:?}");
        // A gap of more than a day forgets yesterday.
        let mut p = DailyPeaks::default();
        p.fold(DailyPeaks::DAY_MS + 3_600_000, 2.0);
        assert_eq!(p.yesterday(2 * DailyPeaks::DAY_MS + 3_600_000), 2.0);
        assert_eq!(p.yesterday(2 * DailyPeaks::DAY_MS + 3 * 3_600_000), f64::NEG_INFINITY, "two slots away");
        assert_eq!(p.yesterday(3 * DailyPeaks::DAY_MS + 3_600_000), f64::NEG_INFINITY, "two days later");
        // Peaks are rounded up, never down, by less than 1/256.
        p.fold(DailyPeaks::DAY_MS + 3_600_000, 2.01);
        let stored = p.yesterday(2 * DailyPeaks::DAY_MS + 3_600_000);
        assert!((2.01..2.01 + 1.0 / 256.0).contains(&stored), "{stored}");
        // A damaged state (wrong length, or a day number at either end of i64) counts as
        // empty and is rebuilt, never indexed or overflowed.
        let mut damaged = DailyPeaks { day: 1, peaks: vec![0; 7] };
        assert_eq!(damaged.yesterday(DailyPeaks::DAY_MS), f64::NEG_INFINITY);
        damaged.fold(DailyPeaks::DAY_MS + 3_600_000, 1.0);
        assert_eq!(damaged.yesterday(2 * DailyPeaks::DAY_MS + 3_600_000), 1.0);
        for day in [i64::MIN, i64::MAX] {
            let mut far = DailyPeaks { day, peaks: vec![0; 2 * DAILY_SLOTS] };
            assert_eq!(far.yesterday(DailyPeaks::DAY_MS), f64::NEG_INFINITY);
            far.fold(DailyPeaks::DAY_MS + 3_600_000, 1.0);
            assert_eq!(far.yesterday(2 * DailyPeaks::DAY_MS + 3_600_000), 1.0);
        }
    }

    #[test]
    fn evaluator_uses_the_configured_score() {
        let mut ev = evaluator();
        ev.policy.score = ScoreMode::EntityRelative;
        let mut out = Evaluation::default();
        // The model says 0.9 but the entity has no error history yet: relative score 0.
        assert_eq!(ev.evaluate(&window(1000, 0.9), &mut out), Some((0.0, Band::Normal)));
        let Body::Score { score, .. } = &out.records[0].1 else { panic!("score record first") };
        assert_eq!(*score, 0.0);
    }

    fn summary(values: &[f64]) -> RawSummary {
        RawSummary::of(values.iter().copied(), 2)
    }

    /// A window ending `t` with model error `error` and raw readings `values`.
    fn raw_window(t: i64, error: f64, values: &[f64]) -> ScoredWindow {
        let mut w = window(t, 0.0);
        w.error = error;
        w.raw = summary(values);
        w
    }

    #[test]
    fn raw_summary_of_a_window() {
        let r = summary(&[3.0, 1.0, 5.0, 4.0]);
        // Moving averages over 2 readings: 2, 3, 4.5.
        assert_eq!((r.min, r.max, r.mean_min, r.mean_max), (1.0, 5.0, 2.0, 4.5));
        // Shorter than the span: the mean of all of them.
        let one = RawSummary::of([7.0].into_iter(), 16);
        assert_eq!((one.min, one.max, one.mean_min, one.mean_max), (7.0, 7.0, 7.0, 7.0));
        let empty = RawSummary::of(std::iter::empty::<f64>(), 16);
        assert!(!empty.min.is_finite() && !empty.mean_max.is_finite());
    }

    /// Scores `windows` (no model error) with a fresh history that never forgets.
    fn novelty_scores(windows: &[&[f64]]) -> Vec<f64> {
        let (mut n, mut b) = (Novelty::default(), ErrorBaseline::default());
        windows.iter().enumerate().map(|(i, w)| n.score(&summary(w), 0.0, i as i64 * 60_000, &mut b, 0)).collect()
    }

    #[test]
    fn novelty_fires_once_at_the_onset_and_is_unit_free() {
        // Range [0, 10] (moving averages [0, 10] too); a reading at 10.5 reaches 0.05 spans
        // beyond: 0.5, times the maturity of a range that has seen 2 windows. The same reading
        // in the next windows is no longer new; readings inside the range never score.
        let windows: Vec<&[f64]> = vec![&[0.0, 10.0, 10.0, 0.0, 0.0], &[5.0, 9.0], &[5.0, 10.5], &[10.5, 5.0], &[2.0, 3.0]];
        let s = novelty_scores(&windows);
        assert_eq!(s[0..2], [0.0, 0.0]);
        assert!((s[2] - 0.5 * maturity(2)).abs() < 1e-12, "{s:?}");
        assert_eq!(s[3..], [0.0, 0.0]);
        // Another unit and offset: identical scores.
        let scaled: Vec<Vec<f64>> = windows.iter().map(|w| w.iter().map(|v| 1000.0 * v - 273.15).collect()).collect();
        let t = novelty_scores(&scaled.iter().map(|w| w.as_slice()).collect::<Vec<_>>());
        assert!(s.iter().zip(&t).all(|(a, b)| (a - b).abs() < 1e-9), "{s:?} vs {t:?}");
        // A drop below the range scores like a rise above it; a flat history makes any move new.
        assert!((novelty_scores(&[&[0.0, 10.0, 10.0, 0.0, 0.0], &[-0.5, 1.0]])[1] - 0.5 * maturity(1)).abs() < 1e-12);
        assert!(novelty_scores(&[&[4.0, 4.0], &[4.0, 4.001]])[1] > 0.99 * maturity(1));
    }

    #[test]
    fn novelty_sees_a_level_shift_in_the_moving_average() {
        // Readings in [0, 10], their moving averages in [5, 7.5]; then 9, 9: inside the readings'
        // range, but the average 9 is 1.5 / 2.5 = 0.6 spans beyond the averages' range.
        let s = novelty_scores(&[&[0.0, 10.0, 0.0, 10.0, 5.0, 6.0], &[10.0, 0.0, 10.0, 0.0], &[9.0, 9.0]]);
        assert_eq!(s[1], 0.0);
        assert!((s[2] - NOVELTY_MEAN_WEIGHT * maturity(2) * 0.6 / (0.6 + NOVELTY_HALF_EXCESS)).abs() < 1e-12, "{s:?}");
    }

    #[test]
    fn novelty_suppresses_a_burst_after_its_first_window() {
        // Range [0, 10] (a mature one: 2000 windows); then 11 (e = 0.1: 2/3), then 12 (e = 1/11,
        // raw 0.645…): lower than the first, so halved. After NOVELTY_SUPPRESS_WINDOWS quiet
        // windows the same excess counts in full again.
        let range = [0.0, 10.0];
        let mut w: Vec<&[f64]> = vec![&range[..]; 2000];
        w.extend([&[11.0][..], &[12.0][..]]);
        let quiet = [5.0];
        w.extend(std::iter::repeat_n(&quiet[..], NOVELTY_SUPPRESS_WINDOWS));
        w.push(&[13.2]);
        let s = novelty_scores(&w);
        let raw = |e: f64, taken: u64| maturity(taken) * e / (e + NOVELTY_HALF_EXCESS);
        assert!((s[2000] - raw(0.1, 2000)).abs() < 1e-12, "{:?}", &s[2000..2002]);
        assert!((s[2001] - raw(1.0 / 11.0, 2001) / 2.0).abs() < 1e-12, "{:?}", &s[2000..2002]);
        let last = w.len() - 1;
        assert!((s[last] - raw(1.2 / 12.0, last as u64)).abs() < 1e-12, "{}", s[last]);
    }

    #[test]
    fn novelty_of_a_young_range_counts_by_its_maturity() {
        // The same record (0.05 spans beyond [0, 10]: 0.5) after 1, 100 and 10 000 windows of
        // history: a young range's records are common in normal data and count less.
        let after = |n: usize| {
            let mut r = None;
            for _ in 0..n {
                Range::novelty(&mut r, 0.0, 10.0, 0);
            }
            probe(&r, 10.5, 0)
        };
        assert!((after(1) - 0.5 / (1.0 + NOVELTY_YOUNG_WINDOWS)).abs() < 1e-12);
        assert!((after(100) - 0.25).abs() < 1e-12, "{}", after(100));
        assert!((after(10_000) - 0.5 * 10_000.0 / (10_000.0 + NOVELTY_YOUNG_WINDOWS)).abs() < 1e-12);
        // The count runs on through forgetting (horizon 80): an old range stays mature.
        let mut r = None;
        for _ in 0..1000 {
            Range::novelty(&mut r, 0.0, 10.0, 80);
        }
        assert_eq!(r.as_ref().map(|r| r.taken), Some(1000));
    }

    /// Probes `range` with one window `[v, v]` without changing it.
    fn probe(range: &Option<Range>, v: f64, horizon: u32) -> f64 {
        Range::novelty(&mut range.clone(), v, v, horizon)
    }

    #[test]
    fn novelty_range_forgets_an_excursion_after_its_horizon() {
        // Horizon 80: blocks of 10 windows. Ten windows in [0, 10], then one excursion to 100
        // (it starts a block), then quiet windows in [0, 10]. A probe at 10.5 (0.05 spans above
        // [0, 10]: 0.5) is inside the excursion's range while the excursion is remembered, and
        // new again once its block has left the horizon: after 70 to 80 windows.
        for horizon in [80, 0] {
            let mut r = None;
            for _ in 0..10 {
                Range::novelty(&mut r, 0.0, 10.0, horizon);
            }
            assert!(Range::novelty(&mut r, 0.0, 100.0, horizon) > 0.99 * maturity(10));
            for k in 0..1000 {
                let p = probe(&r, 10.5, horizon);
                let memory = r.as_ref().map_or((0, 0), |r| (r.blocks.len(), r.blocks.capacity()));
                assert!(memory.0 <= NOVELTY_BLOCKS && memory.1 <= NOVELTY_BLOCKS, "{memory:?} blocks (length, capacity)");
                if horizon == 0 || k < 70 {
                    assert_eq!(p, 0.0, "horizon {horizon}, {k} windows after the excursion");
                } else if k >= 80 {
                    let expected = 0.5 * r.as_ref().map_or(0.0, |r| maturity(r.taken));
                    assert!((p - expected).abs() < 1e-12, "{k} windows after the excursion: {p}");
                }
                Range::novelty(&mut r, 0.0, 10.0, horizon);
            }
            // Forgetting never loses the recent values: the quiet range is still known.
            assert_eq!(probe(&r, 5.0, horizon), 0.0);
        }
        // Through the whole score: the entity alerts on the same small rise again.
        let (mut n, mut b) = (Novelty::default(), ErrorBaseline::default());
        let mut t = 0;
        let mut score = |values: &[f64]| {
            t += 60_000;
            n.score(&summary(values), 0.0, t, &mut b, 80)
        };
        score(&[0.0, 10.0]);
        score(&[0.0, 100.0]);
        for _ in 0..NOVELTY_SUPPRESS_WINDOWS.max(80) {
            score(&[5.0, 5.0]);
        }
        assert!(score(&[5.0, 10.5]) > 0.4);
    }

    #[test]
    fn novelty_state_written_before_forgetting_loads_and_forgets() {
        // `alert_state` as written before the ranges had blocks (fields that already had serde
        // defaults omitted).
        #[derive(Serialize)]
        struct OldRange {
            lo: f64,
            hi: f64,
        }
        #[derive(Serialize)]
        struct OldNovelty {
            values: Option<OldRange>,
            means: Option<OldRange>,
            recent: std::collections::VecDeque<f64>,
        }
        #[derive(Serialize)]
        struct OldState {
            last_window_end_ms: i64,
            consecutive_alert: u32,
            consecutive_below: u32,
            raised: bool,
            cooldown_until_ms: i64,
            last_review_ms: Option<i64>,
            baseline: ErrorBaseline,
            novelty: OldNovelty,
        }
        let old = OldState {
            last_window_end_ms: 5000,
            consecutive_alert: 0,
            consecutive_below: 0,
            raised: false,
            cooldown_until_ms: 0,
            last_review_ms: None,
            baseline: ErrorBaseline::default(),
            novelty: OldNovelty {
                values: Some(OldRange { lo: 0.0, hi: 100.0 }),
                means: Some(OldRange { lo: 0.0, hi: 100.0 }),
                recent: std::collections::VecDeque::new(),
            },
        };
        let loaded: EntityAlertState = crate::store::from_cbor("alert_state", "e", &crate::store::to_cbor(&old)).unwrap();
        let values = loaded.novelty.as_ref().and_then(|n| n.values.clone());
        // An old range is mature: its novelty counts in full.
        assert_eq!(values, Some(Range { lo: 0.0, hi: 100.0, blocks: Default::default(), filled: 0, taken: u64::MAX }));
        assert_eq!(maturity(u64::MAX), 1.0);
        // Its all-time range counts as one full block: remembered for the next windows, gone
        // after the horizon.
        assert_eq!(probe(&values, 50.0, 80), 0.0);
        let mut r = values;
        for _ in 0..80 {
            Range::novelty(&mut r, 0.0, 10.0, 80);
        }
        assert!((probe(&r, 10.5, 80) - 0.5).abs() < 1e-12, "{r:?}");
        // And a state written now round-trips with its blocks.
        let mut ev = evaluator();
        ev.policy.score = ScoreMode::Novelty;
        ev.policy.novelty_horizon = 80;
        ev.states.insert(Arc::from("e"), Box::new(loaded));
        let mut w = window(6000, 0.0);
        w.raw = summary(&[1.0, 2.0]);
        assert_eq!(ev.evaluate(&w, &mut Evaluation::default()).map(|s| s.0), Some(0.0));
        let again: EntityAlertState = crate::store::from_cbor("alert_state", "e", &crate::store::to_cbor(&ev.states["e"])).unwrap();
        assert_eq!(again, *ev.states["e"]);
        assert_eq!(again.novelty.and_then(|n| n.values).map(|r| r.blocks.len()), Some(2));
    }

    #[test]
    fn alert_and_review_messages_say_what_decided_the_score() {
        let mut ev = evaluator();
        ev.policy.score = ScoreMode::Novelty;
        ev.policy.raise_after = 1;
        let mut out = Evaluation::default();
        let mut t = 0;
        let mut win = |ev: &mut Evaluator, error: f64, values: &[f64], out: &mut Evaluation| {
            t += 1000;
            ev.evaluate(&raw_window(t, error, values), out).map(|s| s.0)
        };
        // A mature range [10, 20.5] (moving averages [10.25, 20.25]) and a steady error.
        for i in 0..1000 {
            win(&mut ev, 1.0 + (i % 2) as f64, &[10.0, 10.5, 20.0, 20.5], &mut out);
        }
        out.messages.clear();
        // A reading of 5.25: 0.5 spans below the lowest value, scores ≈ 0.83 (alert band).
        let s = win(&mut ev, 1.0, &[10.0, 5.25, 20.0, 20.5], &mut out).unwrap();
        assert!(s >= 0.8, "{s}");
        let raised = out.messages.iter().find(|m| m.state == "raised").expect("an alert raised");
        assert!(raised.message.ends_with(": a reading reached 5.25, below the lowest value of its recent range (10)"), "{}", raised.message);
        // The model error alone: review band, and the message names the error.
        let mut ev = evaluator();
        ev.policy.score = ScoreMode::EntityRelative;
        let mut out = Evaluation::default();
        for i in 0..200 {
            let mut w = window(1000 * (i + 1), 0.0);
            w.error = 1.0 + (i % 2) as f64;
            ev.evaluate(&w, &mut out);
        }
        let mut w = window(1000 * 201, 0.0);
        w.error = 9.0;
        let (s, band) = ev.evaluate(&w, &mut out).unwrap();
        assert_eq!(band, Band::Review, "{s}");
        let review = out.messages.iter().find(|m| m.state == "review").expect("a review message");
        assert!(review.message.ends_with(": the model's reconstruction error (9) rose above the entity's usual errors"), "{}", review.message);
        // An asset window whose model score combines its long view: E / scale = 0.25 · 4 + 3.
        let mut ev = evaluator();
        ev.policy.raise_after = 1;
        let mut out = Evaluation::default();
        let mut w = window(1000, 4.0 / 5.0);
        w.long_view = Some(crate::pipeline::warmup_pca::LongViewEvidence { model_weight: 0.25, evidence: 3.0 });
        ev.evaluate(&w, &mut out).unwrap();
        let raised = out.messages.iter().find(|m| m.state == "raised").expect("an alert raised");
        assert!(raised.message.ends_with(": the asset's long view against its warm-up made 75 % of the error behind the score, the model's reconstruction error 25 %"), "{}", raised.message);
        // Without a long view the model score's message has no evidence.
        let mut ev = evaluator();
        ev.policy.raise_after = 1;
        let mut out = Evaluation::default();
        ev.evaluate(&window(1000, 0.9), &mut out).unwrap();
        assert!(out.messages[0].message.ends_with("for 1 windows"), "{}", out.messages[0].message);
    }

    #[test]
    fn significant_digits_as_people_write_them() {
        let text = |v: f64| Significant(v).to_string();
        assert_eq!(text(5059.0), "5059");
        assert_eq!(text(49.72371475), "49.7237");
        assert_eq!(text(-0.000123456789), "-0.000123457");
        assert_eq!(text(2.5e20), "2.50000e20");
        assert_eq!(text(0.0), "0");
    }

    #[test]
    fn novelty_includes_the_weighted_model_error_and_persists() {
        let mut ev = evaluator();
        ev.policy.score = ScoreMode::Novelty;
        let mut out = Evaluation::default();
        let mut t = 0;
        let mut win = |ev: &mut Evaluator, error: f64, values: &[f64], out: &mut Evaluation| {
            t += 1000;
            ev.evaluate(&raw_window(t, error, values), out).map(|s| s.0)
        };
        // Past the error history's warm-up, inside the value range: only the error can score.
        for i in 0..200 {
            assert_eq!(win(&mut ev, 1.0 + (i % 2) as f64, &[0.0, 10.0], &mut out), Some(0.0));
        }
        let mut b = ev.states["e"].baseline.get().cloned().unwrap_or_default();
        let expected = NOVELTY_ERROR_WEIGHT * b.score(50.0, 201_000);
        let saved = crate::store::to_cbor(&ev.states["e"]);
        let got = win(&mut ev, 50.0, &[0.0, 10.0], &mut out).unwrap();
        assert!(expected > 0.3 && (got - expected).abs() < 1e-12, "{got} vs {expected}");
        // A restored state scores the next window identically.
        let mut restored = evaluator();
        restored.policy.score = ScoreMode::Novelty;
        restored.states.insert(Arc::from("e"), crate::store::from_cbor("alert_state", "e", &saved).unwrap());
        let again = win(&mut restored, 50.0, &[0.0, 10.0], &mut out).unwrap();
        assert_eq!(got.to_bits(), again.to_bits());
    }

    #[test]
    fn sessions_collect_the_scores_and_alerts_of_their_windows_once() {
        let mut ev = evaluator();
        let entity: Arc<str> = Arc::from("e");
        let emit = |seq, what| Emit { entity: entity.clone(), seq, what };
        let mut out = Evaluation::default();
        assert!(ev.emit(emit(1, Emitted::SessionOpened { start_ms: 1000 }), &mut out));
        // Windows `(end − size, end]`: 500 ends before the start (not in it), 1000 holds the
        // start reading; 500 and 1000 raise; 5000 is after the close range.
        for (t, s) in [(500, 0.99), (1000, 0.92), (2000, 0.9), (3000, 0.85), (4000, 0.2), (5000, 0.95)] {
            ev.evaluate(&window(t, s), &mut out);
        }
        let body = Body::Session {
            entity: "e".into(),
            start_ms: 1000,
            end_ms: 3500,
            duration_ms: 2500,
            stats: cloud_uplink::Stats { count: 1, mean: 1.0, min: 1.0, max: 1.0, std: 0.0, first: 1.0, last: 1.0, quantiles: Vec::new() },
            max_score: None,
            alerts: Vec::new(),
        };
        out.records.clear();
        assert!(ev.emit(emit(2, Emitted::SessionClosed { body: body.clone(), windows_through_ms: 4000 }), &mut out));
        let Some((1000, Body::Session { max_score, alerts, .. })) = out.records.first() else { panic!("{:?}", out.records) };
        assert_eq!(*max_score, Some(0.92));
        assert_eq!(alerts, &vec![SessionAlert { window_end_ms: 1000, state: AlertState::Raised, score: 0.92 }]);
        assert!(ev.states["e"].sessions.get().is_none());
        // Recovery emits it again: skipped.
        assert!(!ev.emit(emit(2, Emitted::SessionClosed { body, windows_through_ms: 4000 }), &mut out));
        assert_eq!(out.records.len(), 1);
    }

    #[test]
    fn review_band_is_rate_limited() {
        let mut ev = evaluator();
        assert_eq!(states(&mut ev, &[(1000, 0.6), (2000, 0.6), (12_000, 0.6)]), vec!["review", "review"]);
    }
}
