//! Replay protection.
//!
//! A signed request may be captured and sent again while its timestamp is
//! still inside the window. The cache remembers every authenticated deploy
//! request, keyed by its MAC, until its own timestamp plus the tolerance; a
//! second sighting never starts a second run but gets the first one's job.
//!
//! Admission is atomic: the first sighting reserves the key under the lock
//! before any work is done, and concurrent duplicates wait for its outcome,
//! so 50 identical requests at once produce exactly one job.
//!
//! The cache is bounded. When every slot holds a live entry it refuses new
//! requests instead of forgetting one, because forgetting would re-open the
//! window for that request.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use tokio::sync::watch;

/// The first 16 bytes of the verified MAC. Two different requests share a
/// key only through a 128-bit collision of HMAC-SHA256 under a secret key.
pub type ReplayKey = [u8; 16];

/// What the first sighting ended with, shared with its duplicates.
pub type Outcome<T, E> = Option<Result<T, E>>;

enum Slot<T, E> {
    /// The first sighting is still being handled.
    Pending(watch::Receiver<Outcome<T, E>>),
    /// It produced this value (a job id).
    Done(T),
}

struct Inner<T, E> {
    entries: HashMap<ReplayKey, Slot<T, E>>,
    /// Expiry order, so purging touches only what has expired.
    expiries: BTreeSet<(u64, ReplayKey)>,
}

pub struct ReplayCache<T, E> {
    inner: Mutex<Inner<T, E>>,
    capacity: usize,
}

/// The answer to "have we seen this request?".
pub enum Admission<'c, T: Clone, E: Clone> {
    /// New: handle it and settle the ticket with the result.
    First(Ticket<'c, T, E>),
    /// Seen, finished: its value.
    Replay(T),
    /// Seen, still in progress: wait on this for its outcome.
    InFlight(watch::Receiver<Outcome<T, E>>),
    /// Every slot holds a live entry; try again after this many seconds.
    Full { retry_after_secs: u64 },
}

/// The right and duty to settle a first sighting. Dropping it unsettled
/// (the request was cancelled) forgets the key, so a retry is handled anew.
pub struct Ticket<'c, T: Clone, E: Clone> {
    cache: &'c ReplayCache<T, E>,
    key: ReplayKey,
    expires_at: u64,
    sender: Option<watch::Sender<Outcome<T, E>>>,
}

impl<T: Clone, E: Clone> ReplayCache<T, E> {
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                entries: HashMap::new(),
                expiries: BTreeSet::new(),
            }),
            capacity,
        }
    }

    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<T, E>> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Looks `key` up and, if it is new, reserves it until `expires_at`
    /// (Unix seconds). Entries whose time has passed are dropped first.
    pub fn admit(&self, key: ReplayKey, expires_at: u64, now: u64) -> Admission<'_, T, E> {
        let mut inner = self.lock();
        inner.purge(now);
        if let Some(slot) = inner.entries.get(&key) {
            return match slot {
                Slot::Done(value) => Admission::Replay(value.clone()),
                Slot::Pending(receiver) => Admission::InFlight(receiver.clone()),
            };
        }
        if inner.entries.len() >= self.capacity {
            let oldest = inner.expiries.first().map_or(now, |(at, _)| *at);
            return Admission::Full {
                retry_after_secs: oldest.saturating_sub(now).max(1),
            };
        }
        let (sender, receiver) = watch::channel(None);
        inner.entries.insert(key, Slot::Pending(receiver));
        inner.expiries.insert((expires_at, key));
        Admission::First(Ticket {
            cache: self,
            key,
            expires_at,
            sender: Some(sender),
        })
    }

    fn forget(&self, key: &ReplayKey, expires_at: u64) {
        let mut inner = self.lock();
        inner.entries.remove(key);
        inner.expiries.remove(&(expires_at, *key));
    }
}

impl<T, E> Inner<T, E> {
    fn purge(&mut self, now: u64) {
        while let Some(&(at, key)) = self.expiries.first() {
            if at >= now {
                break;
            }
            self.expiries.pop_first();
            self.entries.remove(&key);
        }
    }
}

impl<T: Clone, E: Clone> Ticket<'_, T, E> {
    /// Publishes the outcome to waiting duplicates. A value is remembered
    /// until expiry; a refusal is not, so the same request may be retried
    /// (nothing ran, so a retry cannot run anything twice).
    pub fn settle(mut self, outcome: Result<T, E>) {
        let sender = self.sender.take().expect("settled once");
        match &outcome {
            Ok(value) => {
                let mut inner = self.cache.lock();
                if let Some(slot) = inner.entries.get_mut(&self.key) {
                    *slot = Slot::Done(value.clone());
                }
            }
            Err(_) => self.cache.forget(&self.key, self.expires_at),
        }
        sender.send_replace(Some(outcome));
    }
}

impl<T: Clone, E: Clone> Drop for Ticket<'_, T, E> {
    fn drop(&mut self) {
        if self.sender.is_some() {
            self.cache.forget(&self.key, self.expires_at);
        }
    }
}

/// Waits for a first sighting to settle. `None` means it was cancelled
/// without an outcome; the caller should ask for admission again.
pub async fn wait_for_outcome<T: Clone, E: Clone>(
    mut receiver: watch::Receiver<Outcome<T, E>>,
) -> Option<Result<T, E>> {
    match receiver.wait_for(Option::is_some).await {
        Ok(value) => value.clone(),
        Err(_) => None,
    }
}

/// Approximate heap bytes one settled entry holds, for the README and `/metrics`.
pub const fn approx_entry_bytes<T>() -> usize {
    // Map slot (key, entry) plus one control byte at 7/8 load, and one B-tree
    // element with node overhead of about a third.
    let map = (size_of::<ReplayKey>() + size_of::<u64>() + size_of::<T>() + 8 + 1) * 8 / 7;
    let tree = (size_of::<u64>() + size_of::<ReplayKey>()) * 4 / 3;
    map + tree
}

#[cfg(test)]
mod tests {
    use super::*;

    type Cache = ReplayCache<u32, &'static str>;

    fn first<'c>(a: Admission<'c, u32, &'static str>) -> Ticket<'c, u32, &'static str> {
        match a {
            Admission::First(t) => t,
            _ => panic!("expected a first sighting"),
        }
    }

    #[test]
    fn a_settled_request_replays_its_value_until_expiry() {
        let cache = Cache::new(10);
        first(cache.admit([1; 16], 100, 50)).settle(Ok(7));
        assert!(matches!(
            cache.admit([1; 16], 100, 60),
            Admission::Replay(7)
        ));
        assert!(
            matches!(cache.admit([1; 16], 100, 100), Admission::Replay(7)),
            "alive at its expiry second"
        );
        assert!(
            matches!(cache.admit([1; 16], 100, 101), Admission::First(_)),
            "gone after"
        );
    }

    #[test]
    fn duplicates_in_flight_wait_for_the_first() {
        let cache = Cache::new(10);
        let ticket = first(cache.admit([2; 16], 100, 50));
        let Admission::InFlight(rx) = cache.admit([2; 16], 100, 50) else {
            panic!("expected in flight");
        };
        ticket.settle(Ok(9));
        let outcome = tokio_test_block_on(wait_for_outcome(rx));
        assert_eq!(outcome, Some(Ok(9)));
    }

    #[test]
    fn a_refusal_is_shared_but_not_remembered() {
        let cache = Cache::new(10);
        let ticket = first(cache.admit([3; 16], 100, 50));
        let Admission::InFlight(rx) = cache.admit([3; 16], 100, 50) else {
            panic!("expected in flight");
        };
        ticket.settle(Err("no such container"));
        assert_eq!(
            tokio_test_block_on(wait_for_outcome(rx)),
            Some(Err("no such container"))
        );
        assert!(matches!(cache.admit([3; 16], 100, 50), Admission::First(_)));
    }

    #[test]
    fn a_dropped_ticket_releases_the_key_and_its_waiters() {
        let cache = Cache::new(10);
        let ticket = first(cache.admit([4; 16], 100, 50));
        let Admission::InFlight(rx) = cache.admit([4; 16], 100, 50) else {
            panic!("expected in flight");
        };
        drop(ticket);
        assert_eq!(tokio_test_block_on(wait_for_outcome(rx)), None);
        assert!(cache.is_empty());
    }

    #[test]
    fn a_full_cache_refuses_rather_than_forgets() {
        let cache = Cache::new(2);
        first(cache.admit([1; 16], 100, 50)).settle(Ok(1));
        first(cache.admit([2; 16], 120, 50)).settle(Ok(2));
        match cache.admit([3; 16], 130, 60) {
            Admission::Full { retry_after_secs } => assert_eq!(retry_after_secs, 40),
            _ => panic!("expected full"),
        }
        assert!(
            matches!(cache.admit([1; 16], 100, 60), Admission::Replay(1)),
            "live entries kept"
        );
        // Once the first entry expires there is room again.
        let _held = first(cache.admit([3; 16], 130, 101));
        assert_eq!(cache.len(), 2);
    }

    /// A tiny executor for the one await these tests need.
    fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }
}
