//! The clock is a parameter: logic takes `now` from here, so tests can move time.

use chrono::{DateTime, Utc};
use std::sync::{Arc, Mutex};

pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;
}

#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that starts at the real time and moves only when told (for tests of expiry).
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<Mutex<DateTime<Utc>>>);

impl Default for ManualClock {
    fn default() -> Self {
        Self(Arc::new(Mutex::new(Utc::now())))
    }
}

impl ManualClock {
    pub fn advance(&self, by: chrono::Duration) {
        if let Ok(mut now) = self.0.lock() {
            *now += by;
        }
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        self.0
            .lock()
            .map(|now| *now)
            .unwrap_or_else(|poisoned| *poisoned.into_inner())
    }
}

/// The instant a worker claims queued work at (emails, webhook deliveries), on two clocks.
/// What is *due* is read on the service's clock, which tests move and which the retry and
/// schedule times were written on. A *lease* is read on the real clock: it stands for a holder
/// that is alive in real time, and moving the service's clock (a test skipping two days, an
/// NTP step) must not make a live holder's lease look run out, or what it is sending goes out
/// twice. In production both are the system clock.
#[derive(Debug, Clone, Copy)]
pub struct ClaimTime {
    /// The service's clock, ms: work with `next_attempt_at <= due` is due.
    pub due: i64,
    /// The real clock, ms: a lease with `locked_until <= lease` has run out.
    pub lease: i64,
}

impl ClaimTime {
    pub fn now(clock: &dyn Clock) -> Self {
        Self {
            due: millis(clock.now()),
            lease: real_millis(),
        }
    }

    /// One instant on both clocks.
    pub fn at(ms: i64) -> Self {
        Self { due: ms, lease: ms }
    }
}

/// The real clock, ms: what leases are measured on (see [`ClaimTime`]).
pub fn real_millis() -> i64 {
    millis(Utc::now())
}

/// Milliseconds since the Unix epoch, the form timestamps are stored in.
pub fn millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

pub fn from_millis(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}
