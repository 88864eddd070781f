//! Replay protection.
//!
//! A signed request may be captured and sent again while its timestamp is
//! still inside the window. The cache remembers every authenticated deploy
//! request, keyed by its MAC, until its expiry (the caller sets it past the
//! end of the window); a second sighting never starts a second run but gets
//! the first one's job.
//!
//! Admission is atomic: the first sighting reserves the key under the lock
//! before any work is done, and concurrent duplicates wait for its outcome,
//! so 50 identical requests at once produce exactly one job. Once the
//! first sighting's job is recorded ([`Ticket::recorded`]) the entry stays,
//! even if that request is then abandoned.
//!
//! The cache is bounded twice. Each project may hold a number of live
//! entries, past which that project alone is refused; and the whole cache
//! has a capacity. In both cases it refuses new requests instead of
//! forgetting one, because forgetting would re-open the window for that
//! request.
//!
//! The cache lives in memory; the job store keeps a durable copy of each
//! settled entry, which [`ReplayCache::restore`] loads at start.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

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

struct Entry<T, E> {
    slot: Slot<T, E>,
    /// Shared with the project's other entries: one string per project.
    project: Arc<str>,
    expires_at: u64,
}

struct Inner<T, E> {
    entries: HashMap<ReplayKey, Entry<T, E>>,
    /// Expiry order, so purging touches only what has expired.
    expiries: BTreeSet<(u64, ReplayKey)>,
    /// Each project's entries in expiry order: its count, and when its
    /// oldest goes (the Retry-After of a project at its bound).
    by_project: HashMap<Arc<str>, BTreeSet<(u64, ReplayKey)>>,
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
    /// This project holds as many live entries as it may; try again after
    /// this many seconds.
    ProjectFull { retry_after_secs: u64 },
    /// Every slot holds a live entry; try again after this many seconds.
    Full { retry_after_secs: u64 },
}

/// The right and duty to settle a first sighting. Dropping it unsettled
/// (the request was cancelled) forgets the key, so a retry is handled anew,
/// unless its value was already [recorded](Ticket::recorded).
pub struct Ticket<'c, T: Clone, E: Clone> {
    cache: &'c ReplayCache<T, E>,
    key: ReplayKey,
    sender: Option<watch::Sender<Outcome<T, E>>>,
    recorded: Option<T>,
}

impl<T: Clone, E: Clone> ReplayCache<T, E> {
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                entries: HashMap::new(),
                expiries: BTreeSet::new(),
                by_project: HashMap::new(),
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

    /// Looks `key` up and, if it is new, reserves it for `project` until
    /// `expires_at` (Unix seconds, inclusive). Entries whose time has passed
    /// are dropped first. `per_project` bounds the project's live entries.
    pub fn admit(
        &self,
        key: ReplayKey,
        project: &str,
        expires_at: u64,
        now: u64,
        per_project: usize,
    ) -> Admission<'_, T, E> {
        let mut inner = self.lock();
        inner.purge(now);
        if let Some(entry) = inner.entries.get(&key) {
            return match &entry.slot {
                Slot::Done(value) => Admission::Replay(value.clone()),
                Slot::Pending(receiver) => Admission::InFlight(receiver.clone()),
            };
        }
        let wait = |oldest: Option<&(u64, ReplayKey)>| {
            // Alive through its expiry second, so free one second after.
            oldest.map_or(1, |(at, _)| at.saturating_add(1).saturating_sub(now).max(1))
        };
        if let Some(own) = inner.by_project.get(project)
            && own.len() >= per_project
        {
            return Admission::ProjectFull {
                retry_after_secs: wait(own.first()),
            };
        }
        if inner.entries.len() >= self.capacity {
            return Admission::Full {
                retry_after_secs: wait(inner.expiries.first()),
            };
        }
        let (sender, receiver) = watch::channel(None);
        inner.insert(key, project, expires_at, Slot::Pending(receiver));
        Admission::First(Ticket {
            cache: self,
            key,
            sender: Some(sender),
            recorded: None,
        })
    }

    /// Loads settled entries (from the durable copy) at start. Entries past
    /// their time, and any beyond the capacity, are skipped.
    pub fn restore(
        &self,
        entries: impl IntoIterator<Item = (ReplayKey, String, u64, T)>,
        now: u64,
    ) -> usize {
        let mut inner = self.lock();
        let mut loaded = 0;
        for (key, project, expires_at, value) in entries {
            if expires_at < now || inner.entries.len() >= self.capacity {
                continue;
            }
            if !inner.entries.contains_key(&key) {
                inner.insert(key, &project, expires_at, Slot::Done(value));
                loaded += 1;
            }
        }
        loaded
    }

    fn forget(&self, key: &ReplayKey) {
        self.lock().remove(key);
    }

    /// Makes a pending entry settled with `value`.
    fn settle_value(&self, key: &ReplayKey, value: T) {
        if let Some(entry) = self.lock().entries.get_mut(key) {
            entry.slot = Slot::Done(value);
        }
    }
}

impl<T, E> Inner<T, E> {
    fn insert(&mut self, key: ReplayKey, project: &str, expires_at: u64, slot: Slot<T, E>) {
        let project: Arc<str> = match self.by_project.get_key_value(project) {
            Some((name, _)) => name.clone(),
            None => Arc::from(project),
        };
        self.expiries.insert((expires_at, key));
        self.by_project
            .entry(project.clone())
            .or_default()
            .insert((expires_at, key));
        self.entries.insert(
            key,
            Entry {
                slot,
                project,
                expires_at,
            },
        );
    }

    fn remove(&mut self, key: &ReplayKey) {
        let Some(entry) = self.entries.remove(key) else {
            return;
        };
        self.expiries.remove(&(entry.expires_at, *key));
        if let Some(own) = self.by_project.get_mut(&entry.project) {
            own.remove(&(entry.expires_at, *key));
            if own.is_empty() {
                self.by_project.remove(&entry.project);
            }
        }
    }

    fn purge(&mut self, now: u64) {
        while let Some(&(at, key)) = self.expiries.first() {
            if at >= now {
                break;
            }
            self.remove(&key);
        }
    }
}

impl<T: Clone, E: Clone> Ticket<'_, T, E> {
    /// The first sighting's value exists (its job is recorded): from now on
    /// the entry is kept even if the ticket is dropped unsettled.
    pub fn recorded(&mut self, value: T) {
        self.recorded = Some(value);
    }

    /// Publishes the outcome to waiting duplicates. A value is remembered
    /// until expiry; a refusal is not, so the same request may be retried
    /// (nothing ran, so a retry cannot run anything twice).
    pub fn settle(mut self, outcome: Result<T, E>) {
        let sender = self.sender.take().expect("settled once");
        match &outcome {
            Ok(value) => self.cache.settle_value(&self.key, value.clone()),
            Err(_) => self.cache.forget(&self.key),
        }
        sender.send_replace(Some(outcome));
    }
}

impl<T: Clone, E: Clone> Drop for Ticket<'_, T, E> {
    fn drop(&mut self) {
        let Some(sender) = self.sender.take() else {
            return;
        };
        match self.recorded.take() {
            Some(value) => {
                self.cache.settle_value(&self.key, value.clone());
                sender.send_replace(Some(Ok(value)));
            }
            None => self.cache.forget(&self.key),
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
        first(cache.admit([1; 16], "p", 100, 50, 100)).settle(Ok(7));
        assert!(matches!(
            cache.admit([1; 16], "p", 100, 60, 100),
            Admission::Replay(7)
        ));
        assert!(
            matches!(
                cache.admit([1; 16], "p", 100, 100, 100),
                Admission::Replay(7)
            ),
            "alive at its expiry second"
        );
        assert!(
            matches!(
                cache.admit([1; 16], "p", 100, 101, 100),
                Admission::First(_)
            ),
            "gone after"
        );
    }

    #[test]
    fn duplicates_in_flight_wait_for_the_first() {
        let cache = Cache::new(10);
        let ticket = first(cache.admit([2; 16], "p", 100, 50, 100));
        let Admission::InFlight(rx) = cache.admit([2; 16], "p", 100, 50, 100) else {
            panic!("expected in flight");
        };
        ticket.settle(Ok(9));
        let outcome = tokio_test_block_on(wait_for_outcome(rx));
        assert_eq!(outcome, Some(Ok(9)));
    }

    #[test]
    fn a_refusal_is_shared_but_not_remembered() {
        let cache = Cache::new(10);
        let ticket = first(cache.admit([3; 16], "p", 100, 50, 100));
        let Admission::InFlight(rx) = cache.admit([3; 16], "p", 100, 50, 100) else {
            panic!("expected in flight");
        };
        ticket.settle(Err("no such container"));
        assert_eq!(
            tokio_test_block_on(wait_for_outcome(rx)),
            Some(Err("no such container"))
        );
        assert!(matches!(
            cache.admit([3; 16], "p", 100, 50, 100),
            Admission::First(_)
        ));
    }

    #[test]
    fn a_dropped_ticket_releases_the_key_and_its_waiters() {
        let cache = Cache::new(10);
        let ticket = first(cache.admit([4; 16], "p", 100, 50, 100));
        let Admission::InFlight(rx) = cache.admit([4; 16], "p", 100, 50, 100) else {
            panic!("expected in flight");
        };
        drop(ticket);
        assert_eq!(tokio_test_block_on(wait_for_outcome(rx)), None);
        assert!(cache.is_empty());
    }

    #[test]
    fn a_full_cache_refuses_rather_than_forgets() {
        let cache = Cache::new(2);
        first(cache.admit([1; 16], "p", 100, 50, 100)).settle(Ok(1));
        first(cache.admit([2; 16], "p", 120, 50, 100)).settle(Ok(2));
        match cache.admit([3; 16], "p", 130, 60, 100) {
            Admission::Full { retry_after_secs } => assert_eq!(retry_after_secs, 41),
            _ => panic!("expected full"),
        }
        assert!(
            matches!(
                cache.admit([1; 16], "p", 100, 60, 100),
                Admission::Replay(1)
            ),
            "live entries kept"
        );
        // Once the first entry expires there is room again.
        let _held = first(cache.admit([3; 16], "p", 130, 101, 100));
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn one_project_at_its_bound_leaves_the_others_alone() {
        let cache = Cache::new(100);
        first(cache.admit([1; 16], "flood", 100, 50, 2)).settle(Ok(1));
        first(cache.admit([2; 16], "flood", 120, 50, 2)).settle(Ok(2));
        match cache.admit([3; 16], "flood", 130, 60, 2) {
            Admission::ProjectFull { retry_after_secs } => {
                assert_eq!(
                    retry_after_secs, 41,
                    "its oldest entry goes after second 100"
                )
            }
            _ => panic!("expected the project to be at its bound"),
        }
        assert!(matches!(
            cache.admit([4; 16], "quiet", 130, 60, 2),
            Admission::First(_)
        ));
        assert!(
            matches!(
                cache.admit([1; 16], "flood", 100, 60, 2),
                Admission::Replay(1)
            ),
            "a replay of the flooding project is still answered"
        );
        assert!(
            matches!(
                cache.admit([3; 16], "flood", 130, 101, 2),
                Admission::First(_)
            ),
            "room again once its oldest expired"
        );
    }

    #[test]
    fn a_recorded_ticket_dropped_unsettled_keeps_its_entry() {
        let cache = Cache::new(10);
        let mut ticket = first(cache.admit([5; 16], "p", 100, 50, 10));
        let Admission::InFlight(rx) = cache.admit([5; 16], "p", 100, 50, 10) else {
            panic!("expected in flight");
        };
        ticket.recorded(11);
        drop(ticket);
        assert_eq!(tokio_test_block_on(wait_for_outcome(rx)), Some(Ok(11)));
        assert!(matches!(
            cache.admit([5; 16], "p", 100, 60, 10),
            Admission::Replay(11)
        ));
    }

    #[test]
    fn restored_entries_replay_and_count_against_their_project() {
        let cache = Cache::new(10);
        let rows = vec![
            ([6; 16], "p".to_string(), 100, 21),
            ([7; 16], "p".to_string(), 40, 22),
        ];
        assert_eq!(cache.restore(rows, 50), 1, "the expired one is skipped");
        assert!(matches!(
            cache.admit([6; 16], "p", 100, 60, 10),
            Admission::Replay(21)
        ));
        assert!(matches!(
            cache.admit([8; 16], "p", 100, 60, 1),
            Admission::ProjectFull { .. }
        ));
    }

    /// A tiny executor for the one await these tests need.
    fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }
}
