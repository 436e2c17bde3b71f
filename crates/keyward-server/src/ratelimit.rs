//! Per-client-IP limit on the routes that send email (SPEC §6): N requests a minute to
//! OnboardPartner and GenKeysForPartner together. Kept in memory on each node: it stops one
//! address hammering one node; the per-partner limit, which is what protects a mailbox from
//! bombing, is counted in the database and holds across nodes.

use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

const WINDOW_MS: i64 = 60_000;
/// Above this many tracked addresses, expired windows are swept.
const SWEEP_AT: usize = 10_000;
/// If a flood from more addresses than this is live at once (cheap with IPv6), the counters
/// are dropped rather than let memory grow: the per-partner limit, kept in the database,
/// still bounds the email sent.
const MAX_TRACKED: usize = 200_000;

pub struct IpRateLimiter {
    per_minute: u32,
    windows: Mutex<Windows>,
}

/// Each address's window (start, count), and when expired windows were last swept.
#[derive(Default)]
struct Windows {
    by_ip: HashMap<IpAddr, (i64, u32)>,
    swept_at: i64,
}

impl IpRateLimiter {
    pub fn new(per_minute: u32) -> Self {
        Self {
            per_minute,
            windows: Mutex::new(Windows::default()),
        }
    }

    /// Counts a request from `ip`; `Err(seconds)` tells when to come back.
    pub fn check(&self, ip: IpAddr, now: DateTime<Utc>) -> Result<(), u64> {
        let now = now.timestamp_millis();
        let Ok(mut windows) = self.windows.lock() else {
            return Ok(()); // a poisoned lock must not take the service down
        };
        // Sweep at most once a window: sweeping on every request of a flood would be quadratic.
        if windows.by_ip.len() > SWEEP_AT && now - windows.swept_at >= WINDOW_MS {
            windows
                .by_ip
                .retain(|_, (start, _)| now - *start < WINDOW_MS);
            windows.swept_at = now;
        }
        if windows.by_ip.len() >= MAX_TRACKED {
            tracing::warn!(
                addresses = MAX_TRACKED,
                "per-IP rate-limit table full: starting afresh"
            );
            windows.by_ip.clear();
        }
        let (start, count) = windows.by_ip.entry(ip).or_insert((now, 0));
        if now - *start >= WINDOW_MS {
            *start = now;
            *count = 0;
        }
        if *count >= self.per_minute {
            let wait_ms = (*start + WINDOW_MS - now).max(1);
            return Err(u64::try_from((wait_ms + 999) / 1000).unwrap_or(60));
        }
        *count += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_resets_after_a_minute() {
        let limiter = IpRateLimiter::new(2);
        let ip: IpAddr = [192, 0, 2, 1].into();
        let other: IpAddr = [192, 0, 2, 2].into();
        let t0 = Utc::now();
        assert!(limiter.check(ip, t0).is_ok());
        assert!(limiter.check(ip, t0).is_ok());
        assert_eq!(
            limiter.check(ip, t0 + chrono::Duration::seconds(15)),
            Err(45)
        );
        assert!(limiter.check(other, t0).is_ok());
        assert!(limiter
            .check(ip, t0 + chrono::Duration::seconds(60))
            .is_ok());
    }

    #[test]
    fn the_table_does_not_grow_without_bound() {
        let limiter = IpRateLimiter::new(1);
        let now = Utc::now();
        for i in 0..(MAX_TRACKED as u128 + 10) {
            let _ = limiter.check(IpAddr::V6(std::net::Ipv6Addr::from(i)), now);
        }
        let tracked = limiter
            .windows
            .lock()
            .map(|w| w.by_ip.len())
            .unwrap_or(usize::MAX);
        assert!(tracked <= MAX_TRACKED, "{tracked}");
    }
}
