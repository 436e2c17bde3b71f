//! The Prometheus metrics (prometheus-client, OpenMetrics text on the internal listener's
//! `/metrics`). Counters and histograms are this node's; the outbox and key-age gauges are read
//! from the database when scraped, at most every few seconds. No label ever holds a key or a
//! token: routes are their templates (`/link/{token}`), never the path requested.
//!
//! Cardinality: every label is a small fixed set, except `partner` on authentication failures,
//! which is set only once the key identified its partner (a flood of random keys counts under
//! `partner=""`): at most one series per partner that ever failed.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    status: u16,
    /// The spec's error code, or `ok`.
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AuthFailureLabels {
    code: String,
    /// The partner code, once the key identified it; empty before.
    partner: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PurposeLabel {
    purpose: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabel {
    limit: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DaysLabel {
    days: &'static str,
}

/// Which limit refused a request (`keyward_rate_limited_total{limit}`).
#[derive(Debug, Clone, Copy)]
pub enum Limit {
    /// Per client IP (SPEC §6).
    Ip,
    /// Links per partner per hour.
    Partner,
    /// Emails anyone could cause, per recipient address.
    Recipient,
}

fn latency_buckets() -> impl Iterator<Item = f64> {
    [
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0,
    ]
    .into_iter()
}

fn delay_buckets() -> impl Iterator<Item = f64> {
    [0.01, 0.1, 0.5, 1.0, 5.0, 30.0, 60.0, 300.0, 1800.0, 3600.0].into_iter()
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    auth_failures: Family<AuthFailureLabels, Counter>,
    key_cache: Family<ResultLabel, Counter>,
    key_cache_entries: Gauge,
    wait_out: Histogram,
    emails_queued: Counter,
    emails_sent: Counter,
    emails_failed: Counter,
    emails_dead: Counter,
    send_duration: Histogram,
    delivery_delay: Histogram,
    outbox_emails: Family<StateLabel, Gauge>,
    outbox_oldest: Gauge<f64, AtomicU64>,
    links_issued: Family<PurposeLabel, Counter>,
    links_redeemed: Family<PurposeLabel, Counter>,
    rate_limited: Family<LimitLabel, Counter>,
    keys_unused: Family<DaysLabel, Gauge>,
    storage_up: Gauge,
    /// The outbox's backlog as last counted, and when: counted at most every few seconds,
    /// however often `/metrics` is scraped.
    pub outbox_backlog: tokio::sync::Mutex<Option<(Instant, crate::store::OutboxBacklog)>>,
    /// The same for the unused-keys gauge (a scan of the current keys: at most every minute).
    pub unused_keys: tokio::sync::Mutex<Option<(Instant, crate::store::UnusedKeys)>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("keyward");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by route template, status and error code (ok for successes)",
            requests.clone(),
        );
        let auth_failures = Family::<AuthFailureLabels, Counter>::default();
        registry.register(
            "auth_failures",
            "Refused authentications of partner requests (WhoAmI, signed routes, the verify API, the gateway) by error code and partner code (empty until the key names a partner)",
            auth_failures.clone(),
        );
        let key_cache = Family::<ResultLabel, Counter>::default();
        registry.register(
            "key_cache_requests",
            "Key lookups by whether the node's cache answered",
            key_cache.clone(),
        );
        let key_cache_entries = Gauge::default();
        registry.register(
            "key_cache_entries",
            "Keys (and unknown keys) this node's cache holds",
            key_cache_entries.clone(),
        );
        let wait_out = Histogram::new(latency_buckets());
        registry.register_with_unit(
            "wait_out",
            "Time changes waited before being acknowledged, so every node sees them (KEYWARD_KEY_CACHE_MS)",
            Unit::Seconds,
            wait_out.clone(),
        );
        let emails_queued = Counter::default();
        registry.register(
            "outbox_queued",
            "Emails this node queued (in committed transactions)",
            emails_queued.clone(),
        );
        let emails_sent = Counter::default();
        registry.register("outbox_sent", "Emails this node sent", emails_sent.clone());
        let emails_failed = Counter::default();
        registry.register(
            "outbox_send_failures",
            "SMTP transactions of this node that failed (retried with backoff, or dead-lettered)",
            emails_failed.clone(),
        );
        let emails_dead = Counter::default();
        registry.register(
            "outbox_dead_lettered",
            "Emails this node gave up on after KEYWARD_OUTBOX_MAX_ATTEMPTS (see `keyward outbox dead`)",
            emails_dead.clone(),
        );
        let send_duration = Histogram::new(latency_buckets());
        registry.register_with_unit(
            "outbox_send_duration",
            "How long one SMTP transaction of this node took",
            Unit::Seconds,
            send_duration.clone(),
        );
        let delivery_delay = Histogram::new(delay_buckets());
        registry.register_with_unit(
            "outbox_delivery_delay",
            "From queued to delivered, for the emails this node sent",
            Unit::Seconds,
            delivery_delay.clone(),
        );
        let outbox_emails = Family::<StateLabel, Gauge>::default();
        registry.register(
            "outbox_emails",
            "Emails in the outbox by state: pending (due, not sent), scheduled (reminders, retries in backoff), dead (counted at most every 5 s)",
            outbox_emails.clone(),
        );
        let outbox_oldest = Gauge::<f64, AtomicU64>::default();
        registry.register_with_unit(
            "outbox_oldest_pending_age",
            "How long the oldest due email has waited since it was queued; 0 when none waits",
            Unit::Seconds,
            outbox_oldest.clone(),
        );
        let links_issued = Family::<PurposeLabel, Counter>::default();
        registry.register(
            "links_issued",
            "One-time links this node issued, by purpose",
            links_issued.clone(),
        );
        let links_redeemed = Family::<PurposeLabel, Counter>::default();
        registry.register(
            "links_redeemed",
            "One-time links used on this node, by purpose",
            links_redeemed.clone(),
        );
        let rate_limited = Family::<LimitLabel, Counter>::default();
        registry.register(
            "rate_limited",
            "Requests refused or not acted on by a limit: ip, partner, recipient",
            rate_limited.clone(),
        );
        let keys_unused = Family::<DaysLabel, Gauge>::default();
        registry.register(
            "keys_unused",
            "Current keys of active partners not used for more than `days` days (never used: since created; counted at most every minute)",
            keys_unused.clone(),
        );
        let storage_up = Gauge::default();
        registry.register(
            "storage_up",
            "1 when the database answered this scrape, 0 when it did not (then the outbox and key gauges are the last values read)",
            storage_up.clone(),
        );
        registry.register(
            "build",
            "The running build",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        Self {
            registry,
            requests,
            auth_failures,
            key_cache,
            key_cache_entries,
            wait_out,
            emails_queued,
            emails_sent,
            emails_failed,
            emails_dead,
            send_duration,
            delivery_delay,
            outbox_emails,
            outbox_oldest,
            links_issued,
            links_redeemed,
            rate_limited,
            keys_unused,
            storage_up,
            outbox_backlog: tokio::sync::Mutex::new(None),
            unused_keys: tokio::sync::Mutex::new(None),
        }
    }

    pub fn record(&self, route: String, status: u16, code: Option<&'static str>) {
        self.requests
            .get_or_create(&RequestLabels {
                route,
                status,
                code: code.unwrap_or("ok"),
            })
            .inc();
    }

    /// A partner request refused by authentication (`partner`: the key's partner, if known).
    pub fn auth_failed(&self, code: &str, partner: Option<&str>) {
        self.auth_failures
            .get_or_create(&AuthFailureLabels {
                code: code.to_owned(),
                partner: partner.unwrap_or_default().to_owned(),
            })
            .inc();
    }

    pub fn key_cache(&self, hit: bool) {
        let result = if hit { "hit" } else { "miss" };
        self.key_cache.get_or_create(&ResultLabel { result }).inc();
    }

    /// A change was acknowledged only after waiting `waited` (SPEC §6).
    pub fn waited_out(&self, waited: Duration) {
        self.wait_out.observe(waited.as_secs_f64());
    }

    /// Emails queued in a transaction that committed.
    pub fn emails_queued(&self, count: u64) {
        self.emails_queued.inc_by(count);
    }

    /// Links issued in a transaction that committed.
    pub fn link_issued(&self, purpose: keyward_core::LinkPurpose) {
        let purpose = purpose.as_str();
        self.links_issued
            .get_or_create(&PurposeLabel { purpose })
            .inc();
    }

    pub fn link_redeemed(&self, purpose: keyward_core::LinkPurpose) {
        let purpose = purpose.as_str();
        self.links_redeemed
            .get_or_create(&PurposeLabel { purpose })
            .inc();
    }

    pub fn rate_limited(&self, limit: Limit) {
        let limit = match limit {
            Limit::Ip => "ip",
            Limit::Partner => "partner",
            Limit::Recipient => "recipient",
        };
        self.rate_limited.get_or_create(&LimitLabel { limit }).inc();
    }

    /// One SMTP transaction of this node, and whether it succeeded.
    pub fn email_attempted(&self, took: Duration, sent: bool) {
        self.send_duration.observe(took.as_secs_f64());
        if sent {
            self.emails_sent.inc();
        } else {
            self.emails_failed.inc();
        }
    }

    pub fn email_dead_lettered(&self) {
        self.emails_dead.inc();
    }

    /// An email this node delivered `age_ms` after it was queued.
    pub fn email_delivered(&self, age_ms: i64) {
        #[allow(clippy::cast_precision_loss)]
        self.delivery_delay.observe(age_ms.max(0) as f64 / 1000.0);
    }

    /// The OpenMetrics text, with the gauges read from the database set first (`None`: the
    /// database did not answer; the last values stay).
    pub fn render(
        &self,
        from_storage: Option<(crate::store::OutboxBacklog, crate::store::UnusedKeys)>,
        cache_entries: u64,
        out: &mut String,
    ) {
        self.storage_up.set(i64::from(from_storage.is_some()));
        if let Some((backlog, unused)) = from_storage {
            self.set_storage_gauges(&backlog, &unused);
        }
        self.key_cache_entries
            .set(i64::try_from(cache_entries).unwrap_or(i64::MAX));
        if let Err(e) = prometheus_client::encoding::text::encode(out, &self.registry) {
            tracing::warn!(error = %e, "could not encode the metrics");
        }
    }

    fn set_storage_gauges(
        &self,
        backlog: &crate::store::OutboxBacklog,
        unused: &crate::store::UnusedKeys,
    ) {
        let states = [
            ("pending", backlog.due),
            ("scheduled", backlog.scheduled),
            ("dead", backlog.dead),
        ];
        for (state, count) in states {
            self.outbox_emails
                .get_or_create(&StateLabel { state })
                .set(count);
        }
        #[allow(clippy::cast_precision_loss)]
        self.outbox_oldest
            .set(backlog.oldest_due_age_ms as f64 / 1000.0);
        for (days, count) in [("30", unused.over_30_days), ("90", unused.over_90_days)] {
            self.keys_unused
                .get_or_create(&DaysLabel { days })
                .set(count);
        }
    }
}
