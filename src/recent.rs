//! A small cache of answers that may be reused for a short while: container
//! lookups, resolved compose paths. A burst of requests for one container
//! asks once; a change shows within the cache's age. Bounded: when full, it
//! starts again empty rather than tracking what to evict.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::clock::Clock;

pub struct Recent<K, V> {
    entries: Mutex<HashMap<K, (Instant, V)>>,
    age: Duration,
    capacity: usize,
    clock: Clock,
}

impl<K: Eq + Hash, V: Clone> Recent<K, V> {
    pub fn new(age: Duration, capacity: usize, clock: Clock) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            age,
            capacity,
            clock,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, (Instant, V)>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The value kept for `key`, if it is younger than the cache's age.
    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        self.lock()
            .get(key)
            .filter(|(at, _)| self.clock.now().saturating_duration_since(*at) < self.age)
            .map(|(_, value)| value.clone())
    }

    pub fn insert(&self, key: K, value: V) {
        let mut entries = self.lock();
        if entries.len() >= self.capacity {
            entries.clear();
        }
        entries.insert(key, (self.clock.now(), value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_kept_for_their_age_and_the_bound_holds() {
        let clock = Clock::manual();
        let recent = Recent::new(Duration::from_secs(60), 2, clock.clone());
        recent.insert("a", 1);
        assert_eq!(recent.get("a"), Some(1));
        recent.insert("b", 2);
        recent.insert("c", 3);
        assert_eq!(recent.get("a"), None, "full: it started again");
        assert_eq!(recent.get("c"), Some(3));
        clock.advance(Duration::from_secs(59));
        assert_eq!(recent.get("c"), Some(3));
        clock.advance(Duration::from_secs(1));
        assert_eq!(recent.get("c"), None, "past its age");
    }
}
