//! Per-entity memory: what one entity costs resident, and the compact forms that keep it small.
//!
//! # Design constraints
//!
//! - **The budget is per entity.** A gateway watches thousands of sensors; everything the agent
//!   keeps per entity is multiplied by their number (`vigil bench`: 10 000 sensors at 1 Hz,
//!   steady RSS ≤ 32 MB, about 16 MB of which are the binary's and libraries' pages). The test
//!   `per_entity_state_fits_its_budget` below asserts the inline size of every per-entity
//!   structure, so a new field shows up as a failing test with a decision to make, not as
//!   megabytes found later in a benchmark.
//! - **Maps hold pointers, not states.** hashbrown keeps between 7/16 and 7/8 of its buckets
//!   full, so a state stored inline costs up to twice its size; boxed, the empty buckets cost
//!   one pointer each (the worker's window states, [`crate::pipeline::Worker::entities`], and
//!   the alert states, [`crate::alerts::Evaluator::states`]).
//! - **Rarely used parts are boxed on first use** ([`Sparse`]): a part that most entities never
//!   need (an open session, tumbling aggregates when none are configured, the
//!   `entity_relative` error history in the default `model` scoring) costs one pointer.
//! - **Stored forms do not change.** [`Sparse`] serializes as its value (the default when unused),
//!   so states written before and after these forms load in either.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A part of a per-entity state that most entities never use: one pointer inline, the value
/// boxed on first [`Sparse::get_mut`]. An unused part equals a used one holding the default, and
/// is stored as the default, so the serialized form is that of `T` itself.
#[derive(Debug, Clone, Default)]
pub struct Sparse<T>(Option<Box<T>>);

impl<T: Default> Sparse<T> {
    /// The value, when used.
    pub fn get(&self) -> Option<&T> {
        self.0.as_deref()
    }

    /// The value, boxed (as the default) if unused so far.
    pub fn get_mut(&mut self) -> &mut T {
        self.0.get_or_insert_with(Default::default)
    }

    /// Back to unused (the default), freeing the box.
    pub fn clear(&mut self) {
        self.0 = None;
    }
}

impl<T: Default + PartialEq> PartialEq for Sparse<T> {
    fn eq(&self, other: &Self) -> bool {
        match (self.get(), other.get()) {
            (Some(a), Some(b)) => a == b,
            (Some(v), None) | (None, Some(v)) => *v == T::default(),
            (None, None) => true,
        }
    }
}

impl<T: Serialize + Default> Serialize for Sparse<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.get() {
            Some(v) => v.serialize(s),
            None => T::default().serialize(s),
        }
    }
}

impl<'de, T: Deserialize<'de> + Default + PartialEq> Deserialize<'de> for Sparse<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = T::deserialize(d)?;
        Ok(Sparse(if v == T::default() { None } else { Some(Box::new(v)) }))
    }
}

#[cfg(test)]
mod tests {
    use std::mem::size_of;

    use super::*;

    /// Inline bytes of each per-entity structure (x86_64 and aarch64; armv7 is smaller). Raise
    /// one only knowing that 10 000 entities cost 10 000 times the difference (see the module
    /// docs and README "Benchmark" for what the whole budget is).
    #[test]
    fn per_entity_state_fits_its_budget() {
        let budget: [(&str, usize, usize); 5] = [
            ("pipeline::window::EntityWindows (boxed in the worker's map)", size_of::<crate::pipeline::window::EntityWindows>(), 240),
            ("alerts::EntityAlertState (boxed in the alert stage's map)", size_of::<crate::alerts::EntityAlertState>(), 96),
            ("api::live entity (inline in the live view's map)", crate::api::live::entity_state_size(), 64),
            ("pipeline::features::Features (inline in EntityWindows)", size_of::<Option<crate::pipeline::features::Features>>(), 80),
            ("a map value: one pointer", size_of::<Box<crate::alerts::EntityAlertState>>(), 8),
        ];
        for (name, size, max) in &budget {
            eprintln!("{name}: {size} bytes (budget {max})");
        }
        let over: Vec<String> = budget.iter().filter(|(_, size, max)| size > max).map(|(name, size, max)| format!("{name}: {size} > {max} bytes")).collect();
        assert!(over.is_empty(), "per-entity state over budget: {over:?}");
    }

    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    struct Part {
        n: u32,
        v: Vec<u8>,
    }

    #[test]
    fn sparse_is_stored_as_its_value() {
        let mut used: Sparse<Part> = Sparse::default();
        assert_eq!(used, Sparse::default());
        used.get_mut().n = 3;
        assert_eq!(crate::store::to_cbor(&used), crate::store::to_cbor(&Part { n: 3, v: Vec::new() }));
        let back: Sparse<Part> = crate::store::from_cbor("t", "k", &crate::store::to_cbor(&used)).unwrap();
        assert_eq!(back.get(), Some(&Part { n: 3, v: Vec::new() }));
        // Unused: stored as the default, loaded as unused (no box).
        let unused: Sparse<Part> = Sparse::default();
        let back: Sparse<Part> = crate::store::from_cbor("t", "k", &crate::store::to_cbor(&unused)).unwrap();
        assert!(back.get().is_none());
        // A used part holding the default equals an unused one.
        let mut touched: Sparse<Part> = Sparse::default();
        touched.get_mut();
        assert_eq!(touched, unused);
        touched.clear();
        assert!(touched.get().is_none());
    }
}
