//! Drift-free poll ticks, pure.
//!
//! A poll group's ticks are `anchor + k * interval` for k = 0, 1, 2, ... from the moment the
//! poller started, however long each poll takes: the schedule never drifts. When a poll (or
//! other devices on the same bus) runs past one or more later ticks, those ticks are skipped and
//! counted as missed — never made up in a burst.

use std::time::{Duration, Instant};

/// The tick schedule of one poll group.
#[derive(Debug, Clone)]
pub struct Ticker {
    anchor: Instant,
    interval: Duration,
    /// Index of the next tick to run.
    next: u64,
}

impl Ticker {
    /// Ticks at `anchor`, `anchor + interval`, ... (`interval` > 0, enforced by the config).
    pub fn new(anchor: Instant, interval: Duration) -> Ticker {
        Ticker { anchor, interval: interval.max(Duration::from_micros(1)), next: 0 }
    }

    /// When the next tick is due.
    pub fn due(&self) -> Instant {
        // u64 nanoseconds cover 584 years of ticks; intervals are at most a day (config).
        let offset = (self.interval.as_nanos() * u128::from(self.next)).min(u128::from(u64::MAX)) as u64;
        self.anchor + Duration::from_nanos(offset)
    }

    /// Call after running the due tick, with the time the poll finished: moves to the first
    /// tick after `now` and returns how many ticks were skipped on the way.
    pub fn advance(&mut self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.anchor).as_nanos();
        let passed = (elapsed / self.interval.as_nanos()) as u64; // index of the last tick <= now
        let next = (passed + 1).max(self.next + 1);
        let missed = next - self.next - 1;
        self.next = next;
        missed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_do_not_drift_and_missed_ticks_are_counted_not_bunched() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut t = Ticker::new(t0, ms(100));
        assert_eq!(t.due(), t0);
        // Polls that take 30 ms: the next tick is still on the 100 ms grid.
        assert_eq!(t.advance(t0 + ms(30)), 0);
        assert_eq!(t.due(), t0 + ms(100));
        assert_eq!(t.advance(t0 + ms(135)), 0);
        assert_eq!(t.due(), t0 + ms(200));
        // A poll at 200 that lasts until 470 skips the ticks at 300 and 400.
        assert_eq!(t.advance(t0 + ms(470)), 2);
        assert_eq!(t.due(), t0 + ms(500));
        // Running late (the loop woke at 520) is no missed tick.
        assert_eq!(t.advance(t0 + ms(520)), 0);
        assert_eq!(t.due(), t0 + ms(600));
        // Exactly on a tick boundary: that tick has passed.
        assert_eq!(t.advance(t0 + ms(700)), 1);
        assert_eq!(t.due(), t0 + ms(800));
    }
}
