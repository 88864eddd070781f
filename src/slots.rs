//! Bounded counts per key: open connections per client address, requests
//! waiting per project. A [`Slot`] holds one place and gives it back when
//! dropped, so a place is released on every path, panics and cancellation
//! included.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

/// Places taken, per key; cheap to clone (clones share the counts).
pub struct Slots<K>(Arc<Mutex<HashMap<K, usize>>>);

impl<K> Clone for Slots<K> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<K> Default for Slots<K> {
    fn default() -> Self {
        Self(Arc::default())
    }
}

/// One place for `key`, held until dropped.
pub struct Slot<K: Eq + Hash> {
    slots: Slots<K>,
    key: Option<K>,
}

impl<K: Eq + Hash> Slots<K> {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, usize>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A place for `key` if it holds fewer than `max`.
    pub fn enter(&self, key: K, max: usize) -> Option<Slot<K>>
    where
        K: Clone,
    {
        let mut taken = self.lock();
        let count = taken.entry(key.clone()).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(Slot {
            slots: self.clone(),
            key: Some(key),
        })
    }

    /// Keys holding at least one place.
    pub fn keys(&self) -> usize {
        self.lock().len()
    }
}

impl<K: Eq + Hash> Drop for Slot<K> {
    fn drop(&mut self) {
        let Some(key) = self.key.take() else {
            return;
        };
        let mut taken = self.slots.lock();
        if let Some(count) = taken.get_mut(&key) {
            *count -= 1;
            if *count == 0 {
                taken.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_bounded_per_key_and_given_back() {
        let slots = Slots::default();
        let a1 = slots.enter("a", 2).unwrap();
        let _a2 = slots.enter("a", 2).unwrap();
        assert!(slots.enter("a", 2).is_none(), "a is full");
        let b = slots.enter("b", 2).unwrap();
        drop(a1);
        assert!(slots.enter("a", 2).is_some(), "a place came back");
        drop(b);
        assert_eq!(slots.keys(), 1, "a key without places is forgotten");
    }
}
