//! The gateway's one clock: monotonic instants for intervals, Unix time
//! for timestamp windows, job and notification times, read through one
//! value that every part shares, so tests can move it forward instead of
//! waiting.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The system clock, or (for tests) the system clock plus an offset that
/// only grows.
#[derive(Clone, Debug, Default)]
pub struct Clock {
    /// Milliseconds added to both readings; `None` for the system clock.
    ahead_ms: Option<Arc<AtomicU64>>,
}

impl Clock {
    pub fn system() -> Self {
        Self { ahead_ms: None }
    }

    /// A clock that starts at the system's and moves ahead of it by
    /// [`Clock::advance`]; its clones share the offset.
    pub fn manual() -> Self {
        Self {
            ahead_ms: Some(Arc::new(AtomicU64::new(0))),
        }
    }

    /// Moves a manual clock forward; the system clock cannot be moved.
    pub fn advance(&self, by: Duration) {
        let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        self.ahead_ms
            .as_ref()
            .expect("only a manual clock is advanced")
            .fetch_add(ms, Ordering::Relaxed);
    }

    fn ahead(&self) -> Duration {
        self.ahead_ms.as_ref().map_or(Duration::ZERO, |a| {
            Duration::from_millis(a.load(Ordering::Relaxed))
        })
    }

    /// Now, for measuring intervals.
    pub fn now(&self) -> Instant {
        Instant::now() + self.ahead()
    }

    /// Whole seconds since the Unix epoch.
    pub fn unix_secs(&self) -> u64 {
        self.unix().as_secs()
    }

    /// Milliseconds since the Unix epoch: jobs' and notifications' times.
    pub fn unix_ms(&self) -> u64 {
        u64::try_from(self.unix().as_millis()).unwrap_or(u64::MAX)
    }

    /// The time of day, as a `SystemTime` (to compare with the engine's).
    pub fn system_time(&self) -> SystemTime {
        UNIX_EPOCH + self.unix()
    }

    /// The time since `ms` (Unix milliseconds); zero for one in the future.
    pub fn since_ms(&self, ms: u64) -> Duration {
        Duration::from_millis(self.unix_ms().saturating_sub(ms))
    }

    fn unix(&self) -> Duration {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            + self.ahead()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_forward_with_its_clones() {
        let clock = Clock::manual();
        let copy = clock.clone();
        let (before, unix) = (clock.now(), clock.unix_secs());
        copy.advance(Duration::from_secs(90));
        assert!(clock.now() - before >= Duration::from_secs(90));
        assert!(clock.unix_secs() >= unix + 90);
        let system = Clock::system();
        assert!(system.now() < clock.now());
    }
}
