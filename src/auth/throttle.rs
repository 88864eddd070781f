//! Throttling of clients that keep failing authentication.
//!
//! Each client address gets a fixed window; after `limit` failed attempts in
//! it, every request from that address is answered 429 until the window ends,
//! before any body is read or MAC computed. Other addresses are untouched.
//! IPv6 clients are counted per /64, the block a single host usually holds.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::client_addr::canonical;

/// Addresses tracked at once. Past this, addresses whose window has ended are
/// dropped; if all are live, new addresses go untracked (authentication still
/// holds; only the throttle is skipped for them) rather than evicting a
/// blocked one.
const MAX_TRACKED: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    failures: u32,
}

#[derive(Default)]
struct Table {
    clients: HashMap<IpAddr, Window>,
    /// Windows in the order they started: they end in that order too, so
    /// dropping ended ones looks only at the front, never at the whole table.
    /// An address whose window restarted also has a stale, earlier item here,
    /// which is skipped.
    starts: VecDeque<(Instant, IpAddr)>,
}

impl Table {
    fn expire(&mut self, now: Instant, window: Duration) {
        while let Some(&(started, addr)) = self.starts.front() {
            if now < started + window {
                break;
            }
            self.starts.pop_front();
            if self
                .clients
                .get(&addr)
                .is_some_and(|w| w.started == started)
            {
                self.clients.remove(&addr);
            }
        }
    }
}

/// The limit and window are passed on each call, so a policy reload applies
/// at once.
#[derive(Default)]
pub struct Throttle {
    table: Mutex<Table>,
}

fn bucket(addr: IpAddr) -> IpAddr {
    match canonical(addr) {
        IpAddr::V6(v6) => {
            let segments = v6.segments();
            IpAddr::V6(std::net::Ipv6Addr::new(
                segments[0],
                segments[1],
                segments[2],
                segments[3],
                0,
                0,
                0,
                0,
            ))
        }
        v4 => v4,
    }
}

impl Throttle {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `Err(retry_after)` while `addr` has `limit` failures in its window.
    pub fn check(
        &self,
        addr: IpAddr,
        now: Instant,
        limit: u32,
        window: Duration,
    ) -> Result<(), Duration> {
        let table = self.lock();
        match table.clients.get(&bucket(addr)) {
            Some(w) if w.failures >= limit => {
                let ends = w.started + window;
                if now < ends { Err(ends - now) } else { Ok(()) }
            }
            _ => Ok(()),
        }
    }

    /// Counts one failed authentication from `addr`.
    pub fn record_failure(&self, addr: IpAddr, now: Instant, window: Duration) {
        let mut table = self.lock();
        table.expire(now, window);
        let key = bucket(addr);
        let live = table
            .clients
            .get(&key)
            .is_some_and(|w| now < w.started + window);
        if !live {
            if !table.clients.contains_key(&key) && table.clients.len() >= MAX_TRACKED {
                return;
            }
            table.clients.insert(
                key,
                Window {
                    started: now,
                    failures: 0,
                },
            );
            table.starts.push_back((now, key));
        }
        if let Some(w) = table.clients.get_mut(&key) {
            w.failures = w.failures.saturating_add(1);
        }
    }

    pub fn tracked(&self) -> usize {
        self.lock().clients.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_the_limit_until_the_window_ends() {
        let t = Throttle::new();
        let w = Duration::from_secs(60);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let start = Instant::now();
        let at = |s| start + Duration::from_secs(s);
        for i in 0..3 {
            assert!(t.check(a, at(i), 3, w).is_ok(), "attempt {i} allowed");
            t.record_failure(a, at(i), w);
        }
        assert_eq!(t.check(a, at(10), 3, w), Err(Duration::from_secs(50)));
        assert!(
            t.check(a, at(10), 4, w).is_ok(),
            "a higher limit from a reload applies"
        );
        assert!(t.check(b, at(10), 3, w).is_ok(), "others unaffected");
        assert!(t.check(a, at(60), 3, w).is_ok(), "window over");
        // A new window starts counting from zero.
        t.record_failure(a, at(61), w);
        assert!(t.check(a, at(62), 1, w).is_err());
        assert!(t.check(a, at(62), 2, w).is_ok());
    }

    #[test]
    fn a_full_table_drops_ended_windows_oldest_first() {
        let t = Throttle::new();
        let w = Duration::from_secs(60);
        let start = Instant::now();
        let at = |s| start + Duration::from_secs(s);
        let addr = |i: usize| IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i as u32));
        for i in 0..MAX_TRACKED {
            t.record_failure(addr(i), at(0), w);
        }
        // One address whose window restarts later keeps its new window.
        t.record_failure(addr(0), at(61), w);
        assert_eq!(t.tracked(), 1, "every window of second 0 ended and went");
        t.record_failure(addr(MAX_TRACKED), at(61), w);
        assert_eq!(t.tracked(), 2);
        assert!(
            t.check(addr(0), at(62), 1, w).is_err(),
            "its new window counts"
        );
        // Full of live windows: a newcomer goes untracked, nobody is evicted.
        let t = Throttle::new();
        for i in 0..MAX_TRACKED {
            t.record_failure(addr(i), at(0), w);
        }
        t.record_failure(addr(MAX_TRACKED), at(1), w);
        assert_eq!(t.tracked(), MAX_TRACKED);
        assert!(t.check(addr(5), at(1), 1, w).is_err());
    }

    #[test]
    fn ipv6_is_counted_per_64_and_mapped_v4_as_v4() {
        let t = Throttle::new();
        let w = Duration::from_secs(60);
        let now = Instant::now();
        t.record_failure("2001:db8:1:2::1".parse().unwrap(), now, w);
        assert!(
            t.check("2001:db8:1:2::ffff".parse().unwrap(), now, 1, w)
                .is_err()
        );
        assert!(
            t.check("2001:db8:1:3::1".parse().unwrap(), now, 1, w)
                .is_ok()
        );
        t.record_failure("::ffff:198.51.100.7".parse().unwrap(), now, w);
        assert!(t.check("198.51.100.7".parse().unwrap(), now, 1, w).is_err());
    }
}
