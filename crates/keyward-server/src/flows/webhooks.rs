//! What operators do with webhook endpoints (`keyward webhook …`, SPEC §9.3): add one (its
//! secret shown once), list, remove, send a test event, read the dead letters. Endpoints are
//! the exchange's own systems: `http://` and private addresses are allowed.

use super::Context;
use crate::clock::millis;
use crate::crypto::webhook_secret_aad;
use crate::error::{Error, Result};
use crate::store::{Actor, Audit, AuditKind, DeadDelivery, WebhookEndpoint, EVENT_TYPES};
use crate::webhooks::{self, Answer};

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("the endpoint must be an absolute http:// or https:// URL, not {0:?}")]
    BadUrl(String),
    #[error("unknown event {0:?}: the events are {events}", events = EVENT_TYPES.join(", "))]
    UnknownEvent(String),
    #[error("no webhook endpoint has the id or URL {0:?}: `keyward webhook list`")]
    NoSuchEndpoint(String),
    #[error("{0}")]
    Failed(#[from] Error),
}

impl From<crate::store::StoreError> for WebhookError {
    fn from(e: crate::store::StoreError) -> Self {
        WebhookError::Failed(e.into())
    }
}

/// A new endpoint and its signing secret (`whsec_…`), which is shown only now.
pub struct Added {
    pub endpoint: WebhookEndpoint,
    pub secret: String,
}

/// Subscribes `url` to `events` (empty: every event). In force for every change made after
/// this returns, on every node: each node's view of the endpoints is at most
/// `KEYWARD_KEY_CACHE_MS` old (`store/webhooks.rs`), and this waits that out.
pub async fn add(
    ctx: &Context,
    url: &str,
    events: &[String],
    operator: &str,
) -> Result<Added, WebhookError> {
    let parsed = url::Url::parse(url.trim()).map_err(|_| WebhookError::BadUrl(url.into()))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(WebhookError::BadUrl(url.into()));
    }
    if let Some(unknown) = events.iter().find(|e| !EVENT_TYPES.contains(&e.as_str())) {
        return Err(WebhookError::UnknownEvent(unknown.clone()));
    }
    let endpoint = WebhookEndpoint {
        id: format!("ep_{}", uuid::Uuid::now_v7().simple()),
        url: parsed.to_string(),
        events: (!events.is_empty()).then(|| events.join(",")),
        created_at: millis(ctx.clock.now()),
        disabled_at: None,
        disabled_reason: None,
    };
    let (secret, key) = webhooks::new_secret();
    let ciphertext = ctx
        .cipher()?
        .encrypt(&key, &webhook_secret_aad(&endpoint.id))
        .map_err(Error::from)?;
    let mut tx = ctx.store.begin().await?;
    tx.add_webhook(&endpoint, &ciphertext).await?;
    audit(
        ctx,
        &mut tx,
        AuditKind::WebhookAdded,
        operator,
        &endpoint,
        None,
    )
    .await?;
    tx.commit().await?;
    super::key_cache::wait_out(ctx.settings.key_cache).await;
    Ok(Added { endpoint, secret })
}

/// Every endpoint, with how many deliveries it has waiting.
pub async fn list(ctx: &Context) -> Result<Vec<(WebhookEndpoint, i64)>, WebhookError> {
    let pending = ctx.store.pending_webhooks().await?;
    let endpoints = ctx.store.webhooks().await?;
    Ok(endpoints
        .into_iter()
        .map(|e| {
            let waiting = pending
                .iter()
                .find(|(id, _)| *id == e.id)
                .map_or(0, |(_, n)| *n);
            (e, waiting)
        })
        .collect())
}

/// Removes an endpoint (by id or URL) and drops what it had not been sent.
pub async fn remove(
    ctx: &Context,
    id_or_url: &str,
    operator: &str,
    reason: Option<&str>,
) -> Result<WebhookEndpoint, WebhookError> {
    let (endpoint, _) = ctx
        .store
        .webhook(id_or_url)
        .await?
        .ok_or_else(|| WebhookError::NoSuchEndpoint(id_or_url.into()))?;
    let mut tx = ctx.store.begin().await?;
    tx.remove_webhook(&endpoint.id).await?;
    audit(
        ctx,
        &mut tx,
        AuditKind::WebhookRemoved,
        operator,
        &endpoint,
        reason,
    )
    .await?;
    tx.commit().await?;
    Ok(endpoint)
}

/// Who added or removed an endpoint, and why, in the change's transaction (the URL without
/// its credentials).
async fn audit(
    ctx: &Context,
    tx: &mut crate::store::Tx,
    kind: AuditKind,
    operator: &str,
    endpoint: &WebhookEndpoint,
    reason: Option<&str>,
) -> Result<(), WebhookError> {
    let shown = match url::Url::parse(&endpoint.url) {
        Ok(mut url) if url.password().is_some() || !url.username().is_empty() => {
            let _ = url.set_password(None);
            let _ = url.set_username("");
            url.to_string()
        }
        _ => endpoint.url.clone(),
    };
    let detail = match reason {
        Some(reason) => format!("{} {shown}; reason: {reason}", endpoint.id),
        None => format!("{} {shown}", endpoint.id),
    };
    let mut entry = Audit::new(kind, Actor::Operator(operator), ctx.clock.now());
    entry.detail = Some(&detail);
    tx.audit(&entry).await?;
    Ok(())
}

/// Sends a `webhook.test` event to an endpoint now, signed like every event, and returns what
/// it answered (not queued, not retried).
pub async fn test(
    ctx: &Context,
    id_or_url: &str,
    actor: &str,
) -> Result<(WebhookEndpoint, Answer), WebhookError> {
    let (endpoint, ciphertext) = ctx
        .store
        .webhook(id_or_url)
        .await?
        .ok_or_else(|| WebhookError::NoSuchEndpoint(id_or_url.into()))?;
    let key =
        webhooks::endpoint_key(ctx.cipher()?, &endpoint.id, &ciphertext).ok_or_else(|| {
            Error::Unexpected(anyhow::anyhow!("the endpoint's secret does not decrypt"))
        })?;
    let now = ctx.clock.now();
    let body = serde_json::json!({
        "type": "webhook.test",
        "timestamp": keyward_core::wire::wire_time(millis(now)),
        "data": {"endpoint_id": endpoint.id, "actor": format!("operator:{actor}")},
    })
    .to_string();
    let id = format!("msg_{}", uuid::Uuid::now_v7().simple());
    let client = webhooks::client().map_err(Error::Unexpected)?;
    let answer = webhooks::send(&client, &endpoint.url, &key, &id, now.timestamp(), &body).await;
    Ok((endpoint, answer))
}

/// Deliveries given up on, newest first.
pub async fn dead(ctx: &Context, limit: i64) -> Result<Vec<DeadDelivery>, WebhookError> {
    Ok(ctx.store.dead_webhooks(limit).await?)
}
