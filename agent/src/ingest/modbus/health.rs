//! Device health, pure: `up`, `degraded`, `down`, and the backoff of a down device.
//!
//! After each poll of a device:
//! - every request answered (values or exceptions are both answers) without retries and
//!   without exceptions or malformed replies → `up`;
//! - some requests failed or needed retries, or the device answered with exceptions or
//!   malformed replies → `degraded`;
//! - nothing answered → `down`: the device is not polled again until its backoff has passed
//!   (`backoff_min_ms`, doubling per failed attempt up to `backoff_max_ms`), so a dead device
//!   costs its bus one timeout chain per backoff period, not one per poll.
//!
//! Any answer ends the backoff.

use std::time::{Duration, Instant};

/// A device's state, as logged and exported (`vigil_modbus_device_state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceState {
    Up,
    Degraded,
    Down,
}

impl DeviceState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceState::Up => "up",
            DeviceState::Degraded => "degraded",
            DeviceState::Down => "down",
        }
    }
}

/// What one poll of a device saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PollOutcome {
    /// Requests that got an answer (values, an exception or a malformed reply).
    pub answered: usize,
    /// Requests that got no answer after all retries.
    pub failed: usize,
    /// Answers that were exceptions or malformed, or needed retries.
    pub troubled: usize,
}

/// Health and backoff of one device.
#[derive(Debug, Clone)]
pub struct Health {
    state: Option<DeviceState>,
    min: Duration,
    max: Duration,
    backoff: Duration,
    retry_at: Option<Instant>,
}

impl Health {
    pub fn new(min: Duration, max: Duration) -> Health {
        Health { state: None, min, max, backoff: min, retry_at: None }
    }

    /// The current state (`None` before the first poll).
    pub fn state(&self) -> Option<DeviceState> {
        self.state
    }

    /// Whether the device may be polled at `now` (not in a backoff pause).
    pub fn may_poll(&self, now: Instant) -> bool {
        self.retry_at.is_none_or(|t| now >= t)
    }

    /// Applies a poll's outcome at `now`; returns the new state when it changed.
    pub fn record(&mut self, outcome: PollOutcome, now: Instant) -> Option<DeviceState> {
        let state = if outcome.answered == 0 && outcome.failed > 0 {
            self.retry_at = Some(now + self.backoff);
            self.backoff = (self.backoff * 2).min(self.max);
            DeviceState::Down
        } else {
            self.retry_at = None;
            self.backoff = self.min;
            if outcome.failed > 0 || outcome.troubled > 0 { DeviceState::Degraded } else { DeviceState::Up }
        };
        let changed = self.state != Some(state);
        self.state = Some(state);
        changed.then_some(state)
    }

    /// The pause before the next attempt, while down.
    pub fn retry_in(&self, now: Instant) -> Option<Duration> {
        self.retry_at.map(|t| t.saturating_duration_since(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: PollOutcome = PollOutcome { answered: 3, failed: 0, troubled: 0 };
    const DEAD: PollOutcome = PollOutcome { answered: 0, failed: 1, troubled: 0 };

    #[test]
    fn states_and_exponential_backoff() {
        let ms = Duration::from_millis;
        let t0 = Instant::now();
        let mut h = Health::new(ms(100), ms(350));
        assert_eq!(h.record(OK, t0), Some(DeviceState::Up));
        assert_eq!(h.record(OK, t0), None);
        assert_eq!(h.record(PollOutcome { answered: 2, failed: 1, troubled: 0 }, t0), Some(DeviceState::Degraded));
        assert_eq!(h.record(PollOutcome { answered: 3, failed: 0, troubled: 1 }, t0), None);
        assert_eq!(h.record(DEAD, t0), Some(DeviceState::Down));
        assert!(!h.may_poll(t0 + ms(99)) && h.may_poll(t0 + ms(100)));
        let t1 = t0 + ms(100);
        assert_eq!(h.record(DEAD, t1), None);
        assert_eq!(h.retry_in(t1), Some(ms(200)));
        let t2 = t1 + ms(200);
        h.record(DEAD, t2);
        assert_eq!(h.retry_in(t2), Some(ms(350)), "capped at max");
        h.record(DEAD, t2);
        assert_eq!(h.retry_in(t2), Some(ms(350)));
        // Any answer ends the backoff and resets it.
        assert_eq!(h.record(OK, t2), Some(DeviceState::Up));
        assert!(h.may_poll(t2));
        h.record(DEAD, t2);
        assert_eq!(h.retry_in(t2), Some(ms(100)));
    }
}
