//! The per-client-address failure limiter.
//!
//! Every wrong password costs a full hash; without a limit, one client can keep all cores busy
//! hashing guesses (and guess without end). After `max_failures` failures within `window`, an
//! address is answered "too many requests" without hashing until the window ends.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::cache::lock;

/// Failure counts per client address, bounded in size.
///
/// A fixed window per address: it starts at the first failure and lasts `window`. IPv6 clients
/// are counted per /64 (one host usually owns a whole /64, so counting single addresses would
/// let it rotate past the limit); IPv4-mapped IPv6 counts as the IPv4 address. When the table is
/// full, expired windows go first, then the oldest.
pub(crate) struct FailureLimiter {
    max_failures: u32,
    window: Duration,
    capacity: usize,
    entries: Mutex<HashMap<IpAddr, Window>>,
}

#[derive(Clone, Copy)]
struct Window {
    started: Instant,
    failures: u32,
}

impl FailureLimiter {
    /// `max_failures == 0` disables the limiter.
    pub(crate) fn new(max_failures: u32, window: Duration, capacity: usize) -> FailureLimiter {
        FailureLimiter {
            max_failures,
            window,
            capacity: capacity.max(1),
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// `Some(retry_after)` when `client` is over the limit.
    pub(crate) fn limited(&self, client: IpAddr, now: Instant) -> Option<Duration> {
        if self.max_failures == 0 {
            return None;
        }
        let key = address_key(client);
        let mut entries = lock(&self.entries);
        let window = *entries.get(&key)?;
        let elapsed = now.saturating_duration_since(window.started);
        if elapsed >= self.window {
            entries.remove(&key);
            return None;
        }
        (window.failures >= self.max_failures).then(|| self.window - elapsed)
    }

    /// Counts one failure of `client` at `now`.
    pub(crate) fn record_failure(&self, client: IpAddr, now: Instant) {
        if self.max_failures == 0 {
            return;
        }
        let key = address_key(client);
        let mut entries = lock(&self.entries);
        if let Some(w) = entries.get_mut(&key) {
            if now.saturating_duration_since(w.started) < self.window {
                w.failures = w.failures.saturating_add(1);
                return;
            }
        } else if entries.len() >= self.capacity {
            let span = self.window;
            entries.retain(|_, w| now.saturating_duration_since(w.started) < span);
            if entries.len() >= self.capacity {
                let oldest = entries
                    .iter()
                    .min_by_key(|(_, w)| w.started)
                    .map(|(k, _)| *k);
                if let Some(oldest) = oldest {
                    entries.remove(&oldest);
                }
            }
        }
        entries.insert(
            key,
            Window {
                started: now,
                failures: 1,
            },
        );
    }

    /// Forgets `client`'s failures (after it proved it knows a password).
    pub(crate) fn clear(&self, client: IpAddr) {
        lock(&self.entries).remove(&address_key(client));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        lock(&self.entries).len()
    }
}

/// The unit an address is counted in.
fn address_key(client: IpAddr) -> IpAddr {
    match client {
        IpAddr::V4(_) => client,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(Ipv6Addr::from(prefix))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn limits_after_max_failures_and_recovers_after_the_window() {
        let l = FailureLimiter::new(3, Duration::from_secs(60), 100);
        let t0 = Instant::now();
        let a = ip("192.0.2.1");
        for i in 0..3 {
            assert_eq!(l.limited(a, t0), None, "after {i} failures");
            l.record_failure(a, t0);
        }
        let retry = l.limited(a, t0 + Duration::from_secs(10));
        assert_eq!(retry, Some(Duration::from_secs(50)));
        assert_eq!(l.limited(ip("192.0.2.2"), t0), None);
        assert_eq!(l.limited(a, t0 + Duration::from_secs(60)), None);
    }

    #[test]
    fn clear_forgets_the_address() {
        let l = FailureLimiter::new(1, Duration::from_secs(60), 100);
        let t0 = Instant::now();
        let a = ip("192.0.2.1");
        l.record_failure(a, t0);
        assert!(l.limited(a, t0).is_some());
        l.clear(a);
        assert!(l.limited(a, t0).is_none());
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_v4_as_v4() {
        let l = FailureLimiter::new(2, Duration::from_secs(60), 100);
        let t0 = Instant::now();
        l.record_failure(ip("2001:db8:1:2::1"), t0);
        l.record_failure(ip("2001:db8:1:2:ffff::9"), t0);
        assert!(l.limited(ip("2001:db8:1:2::77"), t0).is_some());
        assert!(l.limited(ip("2001:db8:1:3::1"), t0).is_none());

        l.record_failure(ip("::ffff:192.0.2.7"), t0);
        l.record_failure(ip("192.0.2.7"), t0);
        assert!(l.limited(ip("192.0.2.7"), t0).is_some());
    }

    #[test]
    fn table_is_bounded_and_evicts_the_oldest() {
        let l = FailureLimiter::new(1, Duration::from_secs(60), 3);
        let t0 = Instant::now();
        for i in 0..5u8 {
            l.record_failure(
                IpAddr::from([10, 0, 0, i]),
                t0 + Duration::from_millis(u64::from(i)),
            );
        }
        assert_eq!(l.len(), 3);
        let now = t0 + Duration::from_secs(1);
        assert!(l.limited(IpAddr::from([10, 0, 0, 0]), now).is_none());
        assert!(l.limited(IpAddr::from([10, 0, 0, 4]), now).is_some());
    }

    #[test]
    fn zero_disables() {
        let l = FailureLimiter::new(0, Duration::from_secs(60), 3);
        let a = ip("192.0.2.1");
        l.record_failure(a, Instant::now());
        assert!(l.limited(a, Instant::now()).is_none());
    }
}
