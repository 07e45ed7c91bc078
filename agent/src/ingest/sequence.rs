//! Publisher sequence gaps: messages lost before they reached the agent.
//!
//! When payloads carry a publisher sequence number (`fields.seq`), the numbers of one entity
//! should rise by one per reading. Per entity the tracker remembers the highest number seen:
//!
//! - a number more than one above it counts the skipped numbers as a gap
//!   (`vigil_source_sequence_gaps_total`) — e.g. a broker dropped them for a slow subscriber;
//! - `0` or `1` below it counts a reset (`vigil_source_sequence_resets_total`: the publisher
//!   restarted) and starts over;
//! - any other number at or below it is a redelivery or reordering and is ignored.
//!
//! Memory: one `u64` per entity that ever carried a sequence number.

use std::collections::HashMap;

/// What one observed sequence number means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqEvent {
    /// The next number, a redelivery, or the first number of an entity.
    InOrder,
    /// This many numbers were skipped.
    Gap(u64),
    /// The publisher restarted its numbering.
    Reset,
}

/// Highest sequence number per entity.
#[derive(Debug, Default)]
pub struct SequenceTracker {
    last: HashMap<String, u64>,
}

impl SequenceTracker {
    pub fn observe(&mut self, entity: &str, seq: u64) -> SeqEvent {
        let Some(last) = self.last.get_mut(entity) else {
            self.last.insert(entity.to_string(), seq);
            return SeqEvent::InOrder;
        };
        if seq > *last {
            let skipped = seq - *last - 1;
            *last = seq;
            if skipped > 0 { SeqEvent::Gap(skipped) } else { SeqEvent::InOrder }
        } else if seq <= 1 && *last > 1 {
            *last = seq;
            SeqEvent::Reset
        } else {
            SeqEvent::InOrder
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_resets_and_redeliveries() {
        let mut t = SequenceTracker::default();
        let events: Vec<SeqEvent> = [1, 2, 3, 5, 6, 6, 4, 9, 1, 2].iter().map(|&s| t.observe("a", s)).collect();
        use SeqEvent::*;
        assert_eq!(events, vec![InOrder, InOrder, InOrder, Gap(1), InOrder, InOrder, InOrder, Gap(2), Reset, InOrder]);
        assert_eq!(t.observe("b", 100), InOrder, "entities are independent");
    }
}
