//! A few Prometheus counters, written by hand: requests by route and status, the key cache,
//! the wait-outs. The outbox gauges are read from the database when scraped. No label ever
//! holds a key or a token: routes are their templates (`/link/{token}`), never the path
//! requested.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    key_cache_hits: AtomicU64,
    key_cache_misses: AtomicU64,
    wait_outs: AtomicU64,
    wait_out_micros: AtomicU64,
    emails_sent: AtomicU64,
    emails_failed: AtomicU64,
    /// How long one SMTP transaction took.
    send_seconds: Histogram,
    /// From queued to delivered, for emails this node sent.
    delivery_seconds: Histogram,
    /// The outbox's backlog as last counted, and when: counted at most every few seconds,
    /// however often `/metrics` is scraped.
    pub outbox_backlog:
        tokio::sync::Mutex<Option<(std::time::Instant, crate::store::OutboxBacklog)>>,
}

/// Buckets of the latency histograms, in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0,
];

/// A Prometheus histogram with fixed buckets; lock-free.
#[derive(Default)]
struct Histogram {
    counts: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    fn observe(&self, seconds: f64) {
        for (bound, count) in BUCKETS.iter().zip(&self.counts) {
            if seconds <= *bound {
                count.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let micros = (seconds.max(0.0) * 1e6) as u64;
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    fn render(&self, name: &str, help: &str, out: &mut String) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (bound, count) in BUCKETS.iter().zip(&self.counts) {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{bound}\"}} {}",
                count.load(Ordering::Relaxed)
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        #[allow(clippy::cast_precision_loss)]
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(
            out,
            "{name}_bucket{{le=\"+Inf\"}} {count}\n{name}_sum {sum}\n{name}_count {count}"
        );
    }
}

impl Metrics {
    /// One SMTP transaction of this node, and whether it succeeded.
    pub fn email_attempted(&self, took: Duration, sent: bool) {
        self.send_seconds.observe(took.as_secs_f64());
        let counter = if sent {
            &self.emails_sent
        } else {
            &self.emails_failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// An email this node delivered `age_ms` after it was queued.
    pub fn email_delivered(&self, age_ms: i64) {
        #[allow(clippy::cast_precision_loss)]
        self.delivery_seconds.observe(age_ms.max(0) as f64 / 1000.0);
    }

    /// The outbox: counted from the database (at most every 5 s) and this node's senders.
    pub fn render_outbox(&self, backlog: &crate::store::OutboxBacklog, out: &mut String) {
        let sent = self.emails_sent.load(Ordering::Relaxed);
        let failed = self.emails_failed.load(Ordering::Relaxed);
        let (pending, dead, scheduled) = (backlog.due, backlog.dead, backlog.scheduled);
        #[allow(clippy::cast_precision_loss)]
        let oldest = backlog.oldest_due_age_ms as f64 / 1000.0;
        let _ = write!(
            out,
            "# HELP keyward_outbox_emails Emails in the outbox by state: due and not yet sent, scheduled for later (reminders), dead-lettered (counted at most every 5 s).\n\
             # TYPE keyward_outbox_emails gauge\n\
             keyward_outbox_emails{{state=\"pending\"}} {pending}\n\
             keyward_outbox_emails{{state=\"scheduled\"}} {scheduled}\n\
             keyward_outbox_emails{{state=\"dead\"}} {dead}\n\
             # HELP keyward_outbox_oldest_pending_age_seconds How long the oldest due email has waited; 0 when none waits.\n\
             # TYPE keyward_outbox_oldest_pending_age_seconds gauge\n\
             keyward_outbox_oldest_pending_age_seconds {oldest}\n\
             # HELP keyward_outbox_sent_total Emails this node sent.\n\
             # TYPE keyward_outbox_sent_total counter\n\
             keyward_outbox_sent_total {sent}\n\
             # HELP keyward_outbox_send_failures_total SMTP transactions of this node that failed (retried with backoff, or dead-lettered).\n\
             # TYPE keyward_outbox_send_failures_total counter\n\
             keyward_outbox_send_failures_total {failed}\n"
        );
        self.send_seconds.render(
            "keyward_outbox_send_duration_seconds",
            "How long one SMTP transaction of this node took.",
            out,
        );
        self.delivery_seconds.render(
            "keyward_outbox_delivery_delay_seconds",
            "From queued to delivered, for the emails this node sent.",
            out,
        );
    }

    pub fn key_cache(&self, hit: bool) {
        let counter = if hit {
            &self.key_cache_hits
        } else {
            &self.key_cache_misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// A change was acknowledged only after waiting `waited` (SPEC §6).
    pub fn waited_out(&self, waited: Duration) {
        self.wait_outs.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(waited.as_micros()).unwrap_or(u64::MAX);
        self.wait_out_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// The key cache's counters and its size.
    pub fn render_key_cache(&self, entries: u64, out: &mut String) {
        let hits = self.key_cache_hits.load(Ordering::Relaxed);
        let misses = self.key_cache_misses.load(Ordering::Relaxed);
        let waits = self.wait_outs.load(Ordering::Relaxed);
        #[allow(clippy::cast_precision_loss)] // a sum of seconds, for a dashboard
        let waited = self.wait_out_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = write!(
            out,
            "# HELP keyward_key_cache_requests_total Key lookups by whether the node's cache answered.\n\
             # TYPE keyward_key_cache_requests_total counter\n\
             keyward_key_cache_requests_total{{result=\"hit\"}} {hits}\n\
             keyward_key_cache_requests_total{{result=\"miss\"}} {misses}\n\
             # HELP keyward_key_cache_entries Keys (and unknown keys) this node's cache holds.\n\
             # TYPE keyward_key_cache_entries gauge\n\
             keyward_key_cache_entries {entries}\n\
             # HELP keyward_wait_out_seconds Time changes waited before being acknowledged, so every node sees them (KEYWARD_KEY_CACHE_MS).\n\
             # TYPE keyward_wait_out_seconds summary\n\
             keyward_wait_out_seconds_sum {waited}\n\
             keyward_wait_out_seconds_count {waits}\n"
        );
    }

    pub fn record(&self, route: &str, status: u16) {
        if let Ok(mut requests) = self.requests.lock() {
            *requests.entry((route.to_owned(), status)).or_default() += 1;
        }
    }

    pub fn render(&self, out: &mut String) {
        out.push_str(
            "# HELP keyward_http_requests_total HTTP requests by route template and status.\n",
        );
        out.push_str("# TYPE keyward_http_requests_total counter\n");
        if let Ok(requests) = self.requests.lock() {
            for ((route, status), count) in requests.iter() {
                let _ = writeln!(
                    out,
                    "keyward_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {count}"
                );
            }
        }
    }
}
