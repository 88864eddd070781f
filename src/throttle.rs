//! Throttling of clients that keep failing authentication.
//!
//! Each client address gets a fixed window; after `limit` failed attempts in
//! it, every request from that address is answered 429 until the window ends,
//! before any body is read or MAC computed. Other addresses are untouched.
//! IPv6 clients are counted per /64, the block a single host usually holds.

use std::collections::HashMap;
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

/// The limit and window are passed on each call, so a policy reload applies
/// at once.
#[derive(Default)]
pub struct Throttle {
    clients: Mutex<HashMap<IpAddr, Window>>,
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

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Window>> {
        self.clients.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `Err(retry_after)` while `addr` has `limit` failures in its window.
    pub fn check(
        &self,
        addr: IpAddr,
        now: Instant,
        limit: u32,
        window: Duration,
    ) -> Result<(), Duration> {
        let clients = self.lock();
        match clients.get(&bucket(addr)) {
            Some(w) if w.failures >= limit => {
                let ends = w.started + window;
                if now < ends { Err(ends - now) } else { Ok(()) }
            }
            _ => Ok(()),
        }
    }

    /// Counts one failed authentication from `addr`.
    pub fn record_failure(&self, addr: IpAddr, now: Instant, window: Duration) {
        let mut clients = self.lock();
        let key = bucket(addr);
        if !clients.contains_key(&key) && clients.len() >= MAX_TRACKED {
            clients.retain(|_, w| now < w.started + window);
            if clients.len() >= MAX_TRACKED {
                return;
            }
        }
        let w = clients.entry(key).or_insert(Window {
            started: now,
            failures: 0,
        });
        if now >= w.started + window {
            *w = Window {
                started: now,
                failures: 0,
            };
        }
        w.failures = w.failures.saturating_add(1);
    }

    pub fn tracked(&self) -> usize {
        self.lock().len()
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
