//! Per-client limit on the routes that send email (SPEC §6): N requests a minute to
//! OnboardPartner and GenKeysForPartner together. Kept in memory on each node: it stops one
//! client hammering one node; the per-partner and per-recipient limits, which are what protect
//! a mailbox from bombing, are counted in the database and hold across nodes.
//!
//! A client is an IPv4 address, or an IPv6 /64: one subscriber usually gets a whole /64 (and
//! often more), so counting single IPv6 addresses would give one client billions of budgets.

use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

const WINDOW_MS: i64 = 60_000;
/// Above this many tracked addresses, expired windows are swept.
const SWEEP_AT: usize = 10_000;
/// At most this many clients are counted one by one. Past that (a flood from many /64s), new
/// clients share one overflow budget until expired windows are swept: the counters of the
/// clients already tracked are never reset, and memory stays bounded.
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
        let mut client = client_of(ip);
        if windows.by_ip.len() >= MAX_TRACKED && !windows.by_ip.contains_key(&client) {
            client = OVERFLOW;
        }
        let (start, count) = windows.by_ip.entry(client).or_insert((now, 0));
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

/// The key new clients share once the table is full (an address no client can have).
const OVERFLOW: IpAddr = IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED);

/// What one client is: an IPv4 address, or the /64 of an IPv6 address.
fn client_of(ip: IpAddr) -> IpAddr {
    match keyward_core::allow_list::unmapped(ip) {
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(std::net::Ipv6Addr::from(prefix))
        }
        v4 => v4,
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
    fn an_ipv6_client_is_its_slash_64() {
        let limiter = IpRateLimiter::new(2);
        let now = Utc::now();
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert!(limiter.check(a, now).is_ok());
        assert!(limiter.check(b, now).is_ok());
        assert!(limiter.check(a, now).is_err(), "the same /64");
        assert!(limiter.check(other, now).is_ok(), "another /64");
    }

    #[test]
    fn a_flood_of_new_clients_neither_grows_the_table_nor_resets_anyone() {
        let limiter = IpRateLimiter::new(1);
        let now = Utc::now();
        let tracked: IpAddr = [192, 0, 2, 1].into();
        assert!(limiter.check(tracked, now).is_ok());
        for i in 0..(MAX_TRACKED as u128 + 10) {
            let _ = limiter.check(IpAddr::V6(std::net::Ipv6Addr::from(i << 64)), now);
        }
        assert!(
            limiter.check(tracked, now).is_err(),
            "its counter survived the flood"
        );
        let tracked = limiter
            .windows
            .lock()
            .map(|w| w.by_ip.len())
            .unwrap_or(usize::MAX);
        assert!(tracked <= MAX_TRACKED, "{tracked}");
    }
}
