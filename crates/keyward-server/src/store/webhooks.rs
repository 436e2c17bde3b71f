//! Webhook endpoints and their deliveries (SPEC §9.3). An event is queued, one delivery per
//! subscribed endpoint, by [`Tx::audit`] in the transaction of the change it announces; the
//! delivery worker (`webhooks.rs`) claims due deliveries with a lease, as the email outbox does.

use super::records::Audit;
use super::{Backend, Result, Store, Tx};
use crate::clock::ClaimTime;
use sqlx::{FromRow, Row};
use std::sync::Arc;

/// Every event type an endpoint may subscribe to. `key.created` is a restricted pair made
/// (SPEC §8.1); `key.revoked` is every pair revoked (operators) or one (`RevokeKey`);
/// `key.expired` is sent when a retiring pair's overlap ends.
pub const EVENT_TYPES: &[&str] = &[
    "partner.onboarded",
    "partner.activated",
    "partner.suspended",
    "partner.reactivated",
    "key.created",
    "key.regenerated",
    "key.retired",
    "key.revoked",
    "key.expired",
    "key.leaked",
    "allowlist.changed",
    "service_token.created",
    "service_token.revoked",
];

/// A delivery's lease: longer than one attempt (a 15 s timeout) with room to record it.
pub const WEBHOOK_LEASE_MS: i64 = 60_000;

/// An endpoint as operators see it (never its secret).
#[derive(Debug, Clone, FromRow)]
pub struct WebhookEndpoint {
    pub id: String,
    pub url: String,
    /// Comma-separated event types; `None`: every event.
    pub events: Option<String>,
    pub created_at: i64,
    pub disabled_at: Option<i64>,
    pub disabled_reason: Option<String>,
}

impl WebhookEndpoint {
    pub fn wants(&self, event_type: &str) -> bool {
        self.events
            .as_deref()
            .is_none_or(|list| list.split(',').any(|e| e == event_type))
    }
}

/// A delivery claimed for sending, with what signing it needs.
#[derive(Debug, Clone, FromRow)]
pub struct DueDelivery {
    pub id: String,
    pub endpoint_id: String,
    pub url: String,
    pub secret_ciphertext: Vec<u8>,
    pub payload: String,
    pub attempts: i64,
}

/// A delivery given up on.
#[derive(Debug, Clone, FromRow)]
pub struct DeadDelivery {
    pub id: String,
    pub endpoint_id: String,
    pub url: String,
    pub event_type: String,
    pub created_at: i64,
    pub attempts: i64,
    pub dead_at: i64,
    pub last_error: Option<String>,
}

/// What became of one attempt.
#[derive(Debug)]
pub enum Attempt<'a> {
    Delivered,
    /// Tried again at `next_at`.
    Failed {
        error: &'a str,
        next_at: i64,
    },
    /// The retry schedule is over.
    Dead {
        error: &'a str,
    },
    /// The endpoint answered 410 Gone: it is disabled, the delivery dead.
    Gone,
}

/// A lifecycle event to queue: what happened, to whom, and when it is delivered.
#[derive(Debug, Clone, Copy)]
pub struct Event<'a> {
    pub event_type: &'static str,
    pub partner: Option<&'a keyward_core::PartnerId>,
    pub key_id: Option<&'a str>,
    pub actor: super::records::Actor<'a>,
    /// A service token's name (`service_token.*`).
    pub name: Option<&'a str>,
    /// When it happened (the event's `timestamp`), and when it is first sent.
    pub at: chrono::DateTime<chrono::Utc>,
    /// Cancelled if this key is revoked before it is sent (a scheduled `key.expired`).
    pub about_key_id: Option<&'a str>,
}

impl<'a> Event<'a> {
    /// The event an audited change announces, if it announces one.
    pub fn of(entry: &Audit<'a>) -> Option<Self> {
        Some(Self {
            event_type: entry.kind.event_type()?,
            partner: entry.partner,
            key_id: entry.key_id,
            actor: entry.actor,
            name: entry.partner.is_none().then_some(entry.detail).flatten(),
            at: entry.at,
            about_key_id: None,
        })
    }
}

/// This node's view of the enabled endpoints, read at most `bound` (`KEYWARD_KEY_CACHE_MS`)
/// ago, as the key cache is (`flows/key_cache.rs`): so an event's transaction does not read
/// the endpoints every time (on SQLite a statement is a hand-off between threads, under the
/// write lock). A view is stamped with the instant taken before the read that filled it, and
/// adding an endpoint waits `bound` out before it returns, so every event queued after that
/// finds it. A view may still name an endpoint since removed or disabled: each delivery is
/// inserted only if its endpoint is still enabled in the event's own transaction.
#[derive(Debug, Default)]
pub(super) struct EndpointView {
    bound: std::time::Duration,
    latest: std::sync::Mutex<Option<(std::time::Instant, Arc<[WebhookEndpoint]>)>>,
}

impl EndpointView {
    pub(super) fn new(bound: std::time::Duration) -> Self {
        Self {
            bound,
            latest: std::sync::Mutex::default(),
        }
    }

    fn fresh(&self) -> Option<Arc<[WebhookEndpoint]>> {
        let latest = self.latest.lock().ok()?;
        let (read_at, endpoints) = latest.as_ref()?;
        (read_at.elapsed() < self.bound).then(|| endpoints.clone())
    }

    /// Keeps `endpoints`, read from `read_at` on, unless a later read is kept already.
    fn offer(&self, read_at: std::time::Instant, endpoints: Arc<[WebhookEndpoint]>) {
        if self.bound.is_zero() {
            return;
        }
        if let Ok(mut latest) = self.latest.lock() {
            if latest.as_ref().is_none_or(|(kept, _)| *kept < read_at) {
                *latest = Some((read_at, endpoints));
            }
        }
    }
}

impl Tx {
    /// The enabled endpoints: this node's recent view, or read in this transaction (always,
    /// once it changed an endpoint itself: it must see its own change, which no other
    /// transaction may see before it commits).
    async fn enabled_endpoints(&mut self) -> Result<Arc<[WebhookEndpoint]>> {
        if !self.changed_endpoints {
            if let Some(endpoints) = self.endpoint_view.fresh() {
                return Ok(endpoints);
            }
        }
        // Stamped before the read. Its snapshot is no older than the stamp: PostgreSQL takes
        // one per statement, and on SQLite this transaction has held the write lock since it
        // began, so nothing can have committed between its snapshot and now.
        let read_at = std::time::Instant::now();
        let endpoints: Vec<WebhookEndpoint> = sqlx::query_as(
            "SELECT id, url, events, created_at, disabled_at, disabled_reason FROM webhook_endpoints WHERE disabled_at IS NULL",
        )
        .fetch_all(self.conn().await?)
        .await?;
        let endpoints: Arc<[WebhookEndpoint]> = endpoints.into();
        if !self.changed_endpoints {
            self.endpoint_view.offer(read_at, endpoints.clone());
        }
        Ok(endpoints)
    }

    /// Queues `event`, one delivery per enabled endpoint that wants it, in this transaction:
    /// a rolled-back change sends nothing, a committed one is delivered even if the process
    /// dies right after.
    pub async fn queue_event(&mut self, event: &Event<'_>) -> Result<()> {
        let event_type = event.event_type;
        let endpoints = self.enabled_endpoints().await?;
        let endpoints: Vec<&WebhookEndpoint> =
            endpoints.iter().filter(|e| e.wants(event_type)).collect();
        if endpoints.is_empty() {
            return Ok(());
        }
        let actor = event.actor.to_stored();
        let data = match event.partner {
            Some(partner_id) => {
                let code: Option<String> =
                    sqlx::query_scalar("SELECT code FROM partners WHERE id = $1")
                        .bind(partner_id.as_str())
                        .fetch_optional(self.conn().await?)
                        .await?;
                let mut data = serde_json::json!({
                    "partner_id": partner_id.as_str(),
                    "partner_code": code,
                    "actor": actor,
                });
                if let Some(key_id) = event.key_id {
                    // Which pair: the primary, or one of the restricted pairs of SPEC §8.1.
                    let kind: Option<String> =
                        sqlx::query_scalar("SELECT kind FROM partner_keys WHERE id = $1")
                            .bind(key_id)
                            .fetch_optional(self.conn().await?)
                            .await?;
                    data["key_id"] = key_id.into();
                    data["kind"] = kind.unwrap_or_else(|| "primary".to_owned()).into();
                }
                data
            }
            None => serde_json::json!({"name": event.name, "actor": actor}),
        };
        let payload = serde_json::json!({
            "type": event_type,
            "timestamp": keyward_core::wire::wire_time(event.at.timestamp_millis()),
            "data": data,
        })
        .to_string();
        for endpoint in endpoints {
            self.later(
                "INSERT INTO webhook_deliveries (id, endpoint_id, event_type, payload, created_at, next_attempt_at, about_key_id) \
                 SELECT $1, id, $3, $4, $5, $5, $6 FROM webhook_endpoints WHERE id = $2 AND disabled_at IS NULL",
            )
            .bind(format!("msg_{}", uuid::Uuid::now_v7().simple()))
            .bind(endpoint.id.clone())
            .bind(event_type)
            .bind(payload.clone())
            .bind(event.at.timestamp_millis())
            .bind(event.about_key_id.map(str::to_owned))
            .queue()
            .await?;
        }
        Ok(())
    }

    /// Cancels the scheduled events about keys just revoked that are not due yet (a pair
    /// revoked before it expired sends no `key.expired`).
    pub(super) async fn cancel_scheduled_events(
        &mut self,
        key_ids_sql: &str,
        bind: &str,
        now: i64,
    ) -> Result<()> {
        let sql = format!(
            "DELETE FROM webhook_deliveries WHERE attempts = 0 AND next_attempt_at > $1 \
             AND delivered_at IS NULL AND about_key_id IN ({key_ids_sql})"
        );
        sqlx::query(&sql)
            .bind(now)
            .bind(bind)
            .execute(self.conn().await?)
            .await?;
        Ok(())
    }
}

impl Store {
    pub async fn webhooks(&self) -> Result<Vec<WebhookEndpoint>> {
        Ok(sqlx::query_as(
            "SELECT id, url, events, created_at, disabled_at, disabled_reason FROM webhook_endpoints ORDER BY created_at, id",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// The endpoint with this id, or else the one with this URL, and its secret.
    pub async fn webhook(&self, id_or_url: &str) -> Result<Option<(WebhookEndpoint, Vec<u8>)>> {
        let row = sqlx::query(
            "SELECT id, url, events, created_at, disabled_at, disabled_reason, secret_ciphertext FROM webhook_endpoints \
             WHERE id = $1 OR url = $1 ORDER BY CASE WHEN id = $1 THEN 0 ELSE 1 END, created_at LIMIT 1",
        )
        .bind(id_or_url)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            Ok((
                WebhookEndpoint::from_row(&row)?,
                row.try_get("secret_ciphertext")?,
            ))
        })
        .transpose()
    }

    /// Claims up to `limit` deliveries of enabled endpoints due at `at.due` for `holder`, for a
    /// lease that runs out [`WEBHOOK_LEASE_MS`] after `at.lease`. Of several nodes, one claims
    /// each; a dead holder's claims are taken over once its lease ran out.
    pub async fn claim_due_webhooks(
        &self,
        holder: &str,
        at: ClaimTime,
        limit: i64,
    ) -> Result<Vec<DueDelivery>> {
        // Every node polls twice a second: a read through the due index first, so that an idle
        // queue never takes SQLite's write lock.
        let any_due: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM webhook_deliveries WHERE delivered_at IS NULL AND dead_at IS NULL \
             AND next_attempt_at <= $1 LIMIT 1",
        )
        .bind(at.due)
        .fetch_optional(&self.pool)
        .await?;
        if any_due.is_none() {
            return Ok(Vec::new());
        }
        let skip_locked = match self.backend {
            Backend::Sqlite => "",
            Backend::Postgres => "FOR UPDATE OF d SKIP LOCKED",
        };
        let mut writer = self.writer().await?;
        let claimed: Vec<String> = sqlx::query_scalar(&format!(
            "UPDATE webhook_deliveries SET locked_until = $1, locked_by = $4 WHERE id IN ( \
               SELECT d.id FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id \
               WHERE d.delivered_at IS NULL AND d.dead_at IS NULL AND d.next_attempt_at <= $2 \
               AND (d.locked_until IS NULL OR d.locked_until <= $5) AND e.disabled_at IS NULL \
               ORDER BY d.next_attempt_at LIMIT $3 {skip_locked}) RETURNING id"
        ))
        .bind(at.lease + WEBHOOK_LEASE_MS)
        .bind(at.due)
        .bind(limit)
        .bind(holder)
        .bind(at.lease)
        .fetch_all(&mut *writer)
        .await?;
        writer.done().await?;
        let mut due = Vec::with_capacity(claimed.len());
        for id in claimed {
            let delivery: Option<DueDelivery> = sqlx::query_as(
                "SELECT d.id, d.endpoint_id, e.url, e.secret_ciphertext, d.payload, d.attempts \
                 FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id \
                 WHERE d.id = $1 AND d.locked_by = $2",
            )
            .bind(&id)
            .bind(holder)
            .fetch_optional(&self.pool)
            .await?;
            due.extend(delivery);
        }
        Ok(due)
    }

    /// Records an attempt of a delivery `holder` claimed (nothing if the claim was lost).
    pub async fn record_webhook_attempt(
        &self,
        holder: &str,
        delivery: &DueDelivery,
        attempt: Attempt<'_>,
        now: i64,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        let sql = match attempt {
            Attempt::Delivered => {
                "UPDATE webhook_deliveries SET attempts = attempts + 1, delivered_at = $1, last_error = NULL, locked_by = NULL, locked_until = NULL WHERE id = $2 AND locked_by = $3"
            }
            Attempt::Failed { .. } => {
                "UPDATE webhook_deliveries SET attempts = attempts + 1, next_attempt_at = $4, last_error = $5, locked_by = NULL, locked_until = NULL WHERE id = $2 AND locked_by = $3"
            }
            Attempt::Dead { .. } | Attempt::Gone => {
                "UPDATE webhook_deliveries SET attempts = attempts + 1, dead_at = $1, last_error = $5, locked_by = NULL, locked_until = NULL WHERE id = $2 AND locked_by = $3"
            }
        };
        let (next_at, error) = match attempt {
            Attempt::Delivered => (now, None),
            Attempt::Failed { error, next_at } => (next_at, Some(error)),
            Attempt::Dead { error } => (now, Some(error)),
            Attempt::Gone => (now, Some("the endpoint answered 410 Gone: it is disabled")),
        };
        sqlx::query(sql)
            .bind(now)
            .bind(&delivery.id)
            .bind(holder)
            .bind(next_at)
            .bind(error)
            .execute(&mut *tx.tx)
            .await?;
        if matches!(attempt, Attempt::Gone) {
            sqlx::query(
                "UPDATE webhook_endpoints SET disabled_at = $1, disabled_reason = '410 Gone' WHERE id = $2 AND disabled_at IS NULL",
            )
            .bind(now)
            .bind(&delivery.endpoint_id)
            .execute(&mut *tx.tx)
            .await?;
            // What else it had waiting is dead too: listed by `keyward webhook dead`.
            sqlx::query(
                "UPDATE webhook_deliveries SET dead_at = $1, last_error = 'the endpoint answered 410 Gone: it is disabled' \
                 WHERE endpoint_id = $2 AND delivered_at IS NULL AND dead_at IS NULL",
            )
            .bind(now)
            .bind(&delivery.endpoint_id)
            .execute(&mut *tx.tx)
            .await?;
        }
        tx.commit().await
    }

    /// Deliveries given up on, newest first (at most `limit`).
    pub async fn dead_webhooks(&self, limit: i64) -> Result<Vec<DeadDelivery>> {
        Ok(sqlx::query_as(
            "SELECT d.id, d.endpoint_id, e.url, d.event_type, d.created_at, d.attempts, d.dead_at, d.last_error \
             FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id \
             WHERE d.dead_at IS NOT NULL ORDER BY d.dead_at DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Deliveries not yet delivered nor dead, per endpoint id.
    pub async fn pending_webhooks(&self) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query(
            "SELECT endpoint_id, COUNT(*) AS n FROM webhook_deliveries WHERE delivered_at IS NULL AND dead_at IS NULL GROUP BY endpoint_id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("endpoint_id")?, r.try_get("n")?)))
            .collect()
    }
}

impl super::Tx {
    /// A new endpoint, in the caller's transaction (with its audit event).
    pub async fn add_webhook(
        &mut self,
        endpoint: &WebhookEndpoint,
        secret_ciphertext: &[u8],
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO webhook_endpoints (id, url, secret_ciphertext, events, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&endpoint.id)
        .bind(&endpoint.url)
        .bind(secret_ciphertext.to_vec())
        .bind(endpoint.events.as_deref())
        .bind(endpoint.created_at)
        .execute(self.conn().await?)
        .await?;
        self.changed_endpoints = true;
        Ok(())
    }

    /// Removes an endpoint and what it had not been sent, in the caller's transaction.
    pub async fn remove_webhook(&mut self, id: &str) -> Result<bool> {
        self.changed_endpoints = true;
        sqlx::query("DELETE FROM webhook_deliveries WHERE endpoint_id = $1")
            .bind(id)
            .execute(self.conn().await?)
            .await?;
        let done = sqlx::query("DELETE FROM webhook_endpoints WHERE id = $1")
            .bind(id)
            .execute(self.conn().await?)
            .await?;
        Ok(done.rows_affected() == 1)
    }
}
