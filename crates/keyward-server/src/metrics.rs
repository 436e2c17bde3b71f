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
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    /// The route template: borrowed for keyward's own routes, so a request allocates nothing
    /// for its label.
    route: std::borrow::Cow<'static, str>,
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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LeakLabels {
    reporter: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackgroundLabels {
    work: &'static str,
    reason: &'static str,
}

/// Why work done after its answer did not happen.
#[derive(Debug, Clone, Copy)]
pub enum BackgroundFailure {
    /// Every slot was taken.
    Dropped,
    /// The database stayed unavailable through every retry.
    Unavailable,
    /// Any other error.
    Failed,
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

/// Declares every instrument once: its field, how it is made, its name, help and unit.
/// [`Instruments::register`] makes and registers them all.
macro_rules! instruments {
    ($($field:ident: $ty:ty = $make:expr, $name:literal, $help:literal $(, $unit:expr)?;)*) => {
        struct Instruments {
            $($field: $ty,)*
        }

        impl Instruments {
            fn register(registry: &mut Registry) -> Self {
                $(
                    let $field: $ty = $make;
                    let unit: Option<Unit> = None $(.or(Some($unit)))?;
                    match unit {
                        Some(unit) => registry.register_with_unit($name, $help, unit, $field.clone()),
                        None => registry.register($name, $help, $field.clone()),
                    }
                )*
                Self { $($field,)* }
            }
        }
    };
}

instruments! {
    requests: Family<RequestLabels, Counter> = Family::default(), "http_requests",
        "HTTP requests by route template, status and error code (ok for successes)";
    auth_failures: Family<AuthFailureLabels, Counter> = Family::default(), "auth_failures",
        "Refused authentications of partner requests (WhoAmI, signed routes, the verify API, the gateway) by error code and partner code (empty until the key names a partner)";
    key_cache: Family<ResultLabel, Counter> = Family::default(), "key_cache_requests",
        "Key lookups by whether the node's cache answered";
    key_cache_entries: Gauge = Gauge::default(), "key_cache_entries",
        "Keys (and unknown keys) this node's cache holds";
    wait_out: Histogram = Histogram::new(latency_buckets()), "wait_out",
        "Time changes waited before being acknowledged, so every node sees them (KEYWARD_KEY_CACHE_MS)",
        Unit::Seconds;
    emails_queued: Counter = Counter::default(), "outbox_queued",
        "Emails this node queued (in committed transactions)";
    emails_sent: Counter = Counter::default(), "outbox_sent", "Emails this node sent";
    emails_failed: Counter = Counter::default(), "outbox_send_failures",
        "SMTP transactions of this node that failed (retried with backoff, or dead-lettered)";
    emails_dead: Counter = Counter::default(), "outbox_dead_lettered",
        "Emails this node gave up on after KEYWARD_OUTBOX_MAX_ATTEMPTS (see `keyward outbox dead`)";
    send_duration: Histogram = Histogram::new(latency_buckets()), "outbox_send_duration",
        "How long one SMTP transaction of this node took", Unit::Seconds;
    delivery_delay: Histogram = Histogram::new(delay_buckets()), "outbox_delivery_delay",
        "From queued to delivered, for the emails this node sent", Unit::Seconds;
    outbox_emails: Family<StateLabel, Gauge> = Family::default(), "outbox_emails",
        "Emails in the outbox by state: pending (due, not sent), scheduled (reminders, retries in backoff), dead (counted at most every 5 s)";
    outbox_oldest: Gauge<f64, AtomicU64> = Gauge::default(), "outbox_oldest_pending_age",
        "How long the oldest due email has waited since it was queued; 0 when none waits",
        Unit::Seconds;
    links_issued: Family<PurposeLabel, Counter> = Family::default(), "links_issued",
        "One-time links this node issued, by purpose";
    links_redeemed: Family<PurposeLabel, Counter> = Family::default(), "links_redeemed",
        "One-time links used on this node, by purpose";
    rate_limited: Family<LimitLabel, Counter> = Family::default(), "rate_limited",
        "Requests refused or not acted on by a limit: ip, partner, recipient";
    keys_unused: Family<DaysLabel, Gauge> = Family::default(), "keys_unused",
        "Current keys of active partners not used for more than `days` days (never used: since created; counted at most every minute)";
    background_failures: Family<BackgroundLabels, Counter> = Family::default(), "background_failures",
        "Work done after its request was answered (lost keys, invite-only onboarding) that was dropped (no free slot), or failed for good (unavailable: the database stayed down through every retry)";
    leaks: Family<LeakLabels, Counter> = Family::default(), "leaked_tokens",
        "Tokens reported as leaked (GitHub secret scanning, `keyward leak report`), by reporter and what was done: revoked, notified, already_revoked, service_token, not_ours";
    webhook_deliveries: Family<ResultLabel, Counter> = Family::default(), "webhook_deliveries",
        "Webhook delivery attempts of this node by result: delivered, failed (retried later), dead (the retry schedule is over: `keyward webhook dead`), gone (410: the endpoint is disabled)";
    sqlite_log_syncs: Counter = Counter::default(), "sqlite_log_syncs",
        "fsyncs of SQLite's log this node made for its commits (group commit: see sqlite_commits_synced)";
    sqlite_commits_synced: Counter = Counter::default(), "sqlite_commits_synced",
        "Commits this node answered only once its SQLite log was synced after them; over sqlite_log_syncs, how many commits shared each fsync";
    storage_up: Gauge = Gauge::default(), "storage_up",
        "1 when the database answered this scrape, 0 when it did not (then the outbox and key gauges are the last values read)";
}

/// How old the outbox counts on `/metrics` may be.
const BACKLOG_MAX_AGE: Duration = Duration::from_secs(5);
/// How old the unused-keys counts may be (they scan every current key).
const UNUSED_KEYS_MAX_AGE: Duration = Duration::from_secs(60);

pub struct Metrics {
    registry: Registry,
    instruments: Instruments,
    /// The outbox's backlog as last counted, and when: counted at most every few seconds,
    /// however often `/metrics` is scraped.
    outbox_backlog: Cached<crate::store::OutboxBacklog>,
    /// The same for the unused-keys gauge (a scan of the current keys: at most every minute).
    unused_keys: Cached<crate::store::UnusedKeys>,
    /// The key cache's two series, looked up once: counted on every signed request.
    key_cache_hits: Counter,
    key_cache_misses: Counter,
    /// The `http_requests` series of each of keyward's own routes answered 200, found by
    /// comparing the route's label with a short list rather than hashing its labels under the
    /// family's lock, which both cores take on every request. Made on first use, so that a
    /// scrape shows only the series of requests made, as before.
    answered: Box<[(&'static str, std::sync::OnceLock<Counter>)]>,
}

/// The `route` label of requests the gateway forwarded (or refused): they match no route of
/// keyward's own, and are not the junk that `unmatched` counts.
pub(crate) const GATEWAY_ROUTE: &str = "gateway";

/// The `route` labels of keyward's own routes (and the gateway's), borrowed: a request
/// allocates nothing for its label, and its success has a series of its own
/// ([`Metrics::record`]).
pub(crate) fn own_routes() -> impl Iterator<Item = &'static str> {
    use keyward_core::wire::paths;
    paths::PUBLIC_ROUTES.iter().map(|(path, _)| *path).chain([
        paths::VERIFY,
        paths::METRICS,
        paths::INTERNAL_OPENAPI,
        GATEWAY_ROUTE,
    ])
}

/// A value read from the database, and when.
type Cached<T> = tokio::sync::Mutex<Option<(Instant, T)>>;

/// The cached value if it is younger than `max_age`, else a fresh one from `read`.
async fn cached<T: Copy, E>(
    cache: &Cached<T>,
    max_age: Duration,
    read: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, E> {
    let mut cached = cache.lock().await;
    if let Some((at, value)) = *cached {
        if at.elapsed() < max_age {
            return Ok(value);
        }
    }
    let value = read.await?;
    *cached = Some((Instant::now(), value));
    Ok(value)
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("keyward");
        let instruments = Instruments::register(&mut registry);
        // Set once, never read back: registered by value.
        registry.register(
            "build",
            "The running build",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        let key_cache = |result| {
            instruments
                .key_cache
                .get_or_create(&ResultLabel { result })
                .clone()
        };
        Self {
            key_cache_hits: key_cache("hit"),
            key_cache_misses: key_cache("miss"),
            answered: own_routes()
                .map(|route| (route, std::sync::OnceLock::new()))
                .collect(),
            registry,
            instruments,
            outbox_backlog: Cached::default(),
            unused_keys: Cached::default(),
        }
    }

    /// The OpenMetrics text for a scrape: the gauges read from the database (each at most
    /// every so often, however often `/metrics` is scraped) set first. While the database is
    /// down the metrics still answer, with `keyward_storage_up 0`, so the outage itself can be
    /// seen and alerted on.
    pub async fn scrape(
        &self,
        store: &crate::store::Store,
        now: i64,
        cache_entries: u64,
    ) -> String {
        let from_storage = async {
            let backlog = cached(
                &self.outbox_backlog,
                BACKLOG_MAX_AGE,
                store.outbox_backlog(now),
            )
            .await?;
            let unused = cached(
                &self.unused_keys,
                UNUSED_KEYS_MAX_AGE,
                store.unused_keys(now),
            )
            .await?;
            Ok::<_, crate::store::StoreError>((backlog, unused))
        };
        if let Some(counts) = store.log_sync_counts() {
            let copy = |to: &Counter, from: &AtomicU64| {
                to.inner()
                    .store(from.load(Ordering::Relaxed), Ordering::Relaxed);
            };
            copy(&self.instruments.sqlite_log_syncs, &counts.syncs);
            copy(&self.instruments.sqlite_commits_synced, &counts.commits);
        }
        let mut out = String::new();
        self.render(from_storage.await.ok(), cache_entries, &mut out);
        out
    }

    /// One webhook delivery attempt and its result.
    pub fn webhook_delivery(&self, result: &'static str) {
        self.instruments
            .webhook_deliveries
            .get_or_create(&ResultLabel { result })
            .inc();
    }

    /// A token reported as leaked, and what was done (SPEC §9.2).
    pub fn leak(&self, reporter: &'static str, result: &'static str) {
        self.instruments
            .leaks
            .get_or_create(&LeakLabels { reporter, result })
            .inc();
    }

    pub fn record(
        &self,
        route: std::borrow::Cow<'static, str>,
        status: u16,
        code: Option<&'static str>,
    ) {
        let labels = |route| RequestLabels {
            route,
            status,
            code: code.unwrap_or("ok"),
        };
        if status == 200 && code.is_none() {
            let own = self
                .answered
                .iter()
                .find(|(label, _)| label.len() == route.len() && *label == route);
            if let Some((label, series)) = own {
                series
                    .get_or_init(|| {
                        let labels = labels(std::borrow::Cow::Borrowed(*label));
                        self.instruments.requests.get_or_create(&labels).clone()
                    })
                    .inc();
                return;
            }
        }
        self.instruments
            .requests
            .get_or_create(&labels(route))
            .inc();
    }

    /// A partner request refused by authentication (`partner`: the key's partner, if known).
    pub fn auth_failed(&self, code: &str, partner: Option<&str>) {
        self.instruments
            .auth_failures
            .get_or_create(&AuthFailureLabels {
                code: code.to_owned(),
                partner: partner.unwrap_or_default().to_owned(),
            })
            .inc();
    }

    pub fn background_failed(&self, work: &'static str, why: BackgroundFailure) {
        let reason = match why {
            BackgroundFailure::Dropped => "dropped",
            BackgroundFailure::Unavailable => "unavailable",
            BackgroundFailure::Failed => "failed",
        };
        self.instruments
            .background_failures
            .get_or_create(&BackgroundLabels { work, reason })
            .inc();
    }

    pub fn key_cache(&self, hit: bool) {
        if hit {
            self.key_cache_hits.inc();
        } else {
            self.key_cache_misses.inc();
        }
    }

    /// A change was acknowledged only after waiting `waited` (SPEC §6).
    pub fn waited_out(&self, waited: Duration) {
        self.instruments.wait_out.observe(waited.as_secs_f64());
    }

    /// Emails queued in a transaction that committed.
    pub fn emails_queued(&self, count: u64) {
        self.instruments.emails_queued.inc_by(count);
    }

    /// Links issued in a transaction that committed.
    pub fn link_issued(&self, purpose: keyward_core::LinkPurpose) {
        let purpose = purpose.as_str();
        self.instruments
            .links_issued
            .get_or_create(&PurposeLabel { purpose })
            .inc();
    }

    pub fn link_redeemed(&self, purpose: keyward_core::LinkPurpose) {
        let purpose = purpose.as_str();
        self.instruments
            .links_redeemed
            .get_or_create(&PurposeLabel { purpose })
            .inc();
    }

    pub fn rate_limited(&self, limit: Limit) {
        let limit = match limit {
            Limit::Ip => "ip",
            Limit::Partner => "partner",
            Limit::Recipient => "recipient",
        };
        self.instruments
            .rate_limited
            .get_or_create(&LimitLabel { limit })
            .inc();
    }

    /// One SMTP transaction of this node, and whether it succeeded.
    pub fn email_attempted(&self, took: Duration, sent: bool) {
        self.instruments.send_duration.observe(took.as_secs_f64());
        if sent {
            self.instruments.emails_sent.inc();
        } else {
            self.instruments.emails_failed.inc();
        }
    }

    pub fn email_dead_lettered(&self) {
        self.instruments.emails_dead.inc();
    }

    /// An email this node delivered `age_ms` after it was queued.
    pub fn email_delivered(&self, age_ms: i64) {
        #[allow(clippy::cast_precision_loss)]
        self.instruments
            .delivery_delay
            .observe(age_ms.max(0) as f64 / 1000.0);
    }

    /// The OpenMetrics text, with the gauges read from the database set first (`None`: the
    /// database did not answer; the last values stay).
    fn render(
        &self,
        from_storage: Option<(crate::store::OutboxBacklog, crate::store::UnusedKeys)>,
        cache_entries: u64,
        out: &mut String,
    ) {
        self.instruments
            .storage_up
            .set(i64::from(from_storage.is_some()));
        if let Some((backlog, unused)) = from_storage {
            self.set_storage_gauges(&backlog, &unused);
        }
        self.instruments
            .key_cache_entries
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
            self.instruments
                .outbox_emails
                .get_or_create(&StateLabel { state })
                .set(count);
        }
        #[allow(clippy::cast_precision_loss)]
        self.instruments
            .outbox_oldest
            .set(backlog.oldest_due_age_ms as f64 / 1000.0);
        for (days, count) in [("30", unused.over_30_days), ("90", unused.over_90_days)] {
            self.instruments
                .keys_unused
                .get_or_create(&DaysLabel { days })
                .set(count);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    fn scrape(metrics: &Metrics) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &metrics.registry).unwrap();
        out
    }

    #[test]
    fn requests_are_counted_the_same_with_or_without_a_series_of_their_own() {
        let metrics = Metrics::new();
        let whoami = keyward_core::wire::paths::PUBLIC_ROUTES
            .iter()
            .map(|(path, _)| *path)
            .find(|path| path.ends_with("/WhoAmI"))
            .unwrap();
        let before = scrape(&metrics);
        assert!(
            !before.contains("WhoAmI"),
            "no series before a request:\n{before}"
        );
        for _ in 0..3 {
            metrics.record(Cow::Borrowed(whoami), 200, None);
        }
        // The same label, owned: counted in the same series.
        metrics.record(Cow::Owned(whoami.to_owned()), 200, None);
        metrics.record(Cow::Borrowed(whoami), 401, Some("invalid_signature"));
        metrics.record(Cow::Borrowed(GATEWAY_ROUTE), 200, None);
        metrics.record(Cow::Owned("/elsewhere".into()), 200, None);
        let text = scrape(&metrics);
        for line in [
            format!(r#"keyward_http_requests_total{{route="{whoami}",status="200",code="ok"}} 4"#),
            format!(
                r#"keyward_http_requests_total{{route="{whoami}",status="401",code="invalid_signature"}} 1"#
            ),
            r#"keyward_http_requests_total{route="gateway",status="200",code="ok"} 1"#.into(),
            r#"keyward_http_requests_total{route="/elsewhere",status="200",code="ok"} 1"#.into(),
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
        }
    }
}
