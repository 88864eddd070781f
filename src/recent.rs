//! A small cache of answers that may be reused for a short while: container
//! lookups, resolved compose paths. A burst of requests for one container
//! asks once; a change shows within the cache's age. Bounded: when full, it
//! starts again empty rather than tracking what to evict.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct Recent<K, V> {
    entries: Mutex<HashMap<K, (Instant, V)>>,
    age: Duration,
    capacity: usize,
}

impl<K: Eq + Hash, V: Clone> Recent<K, V> {
    pub fn new(age: Duration, capacity: usize) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            age,
            capacity,
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
            .filter(|(at, _)| at.elapsed() < self.age)
            .map(|(_, value)| value.clone())
    }

    pub fn insert(&self, key: K, value: V) {
        let mut entries = self.lock();
        if entries.len() >= self.capacity {
            entries.clear();
        }
        entries.insert(key, (Instant::now(), value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_kept_for_their_age_and_the_bound_holds() {
        let recent = Recent::new(Duration::from_secs(60), 2);
        recent.insert("a", 1);
        assert_eq!(recent.get("a"), Some(1));
        recent.insert("b", 2);
        recent.insert("c", 3);
        assert_eq!(recent.get("a"), None, "full: it started again");
        assert_eq!(recent.get("c"), Some(3));
        let expired = Recent::new(Duration::ZERO, 2);
        expired.insert("a", 1);
        assert_eq!(expired.get("a"), None);
    }
}
