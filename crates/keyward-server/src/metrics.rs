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
    /// The outbox's backlog as last counted, and when: counted at most every few seconds,
    /// however often `/metrics` is scraped.
    pub outbox_backlog: tokio::sync::Mutex<Option<(std::time::Instant, (i64, i64))>>,
}

impl Metrics {
    /// An email this node sent.
    pub fn email_sent(&self) {
        self.emails_sent.fetch_add(1, Ordering::Relaxed);
    }

    pub fn render_outbox(&self, pending: i64, dead: i64, out: &mut String) {
        let sent = self.emails_sent.load(Ordering::Relaxed);
        let _ = write!(
            out,
            "# HELP keyward_outbox_emails Emails in the outbox waiting to be sent or dead-lettered (counted at most every 5 s).\n\
             # TYPE keyward_outbox_emails gauge\n\
             keyward_outbox_emails{{state=\"pending\"}} {pending}\n\
             keyward_outbox_emails{{state=\"dead\"}} {dead}\n\
             # HELP keyward_outbox_sent_total Emails this node sent.\n\
             # TYPE keyward_outbox_sent_total counter\n\
             keyward_outbox_sent_total {sent}\n"
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
