//! Operations: `/healthz`, `/readyz` (public), and `/metrics` (served by the internal
//! listener only, see `internal.rs`) (SPEC §3.5).

use super::error::success;
use crate::error::{Error, Result};
use crate::state::AppState;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use keyward_core::wire::{paths, ServerTime};
/// How old the outbox counts on `/metrics` may be.
const BACKLOG_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(5);
/// How old the unused-keys counts may be (they scan every current key).
const UNUSED_KEYS_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(60);

pub fn router() -> Router<AppState> {
    Router::new()
        .route(paths::HEALTHZ, get(healthz))
        .route(paths::READYZ, get(readyz))
        .route(paths::TIME, get(time))
}

/// The server's clock
///
/// For partners whose requests are refused as `stale_request`: compare this with your own
/// clock (or let the SDK correct its `timestamp` by the difference).
#[utoipa::path(get, path = "/api/v1/time", tag = "operations", responses((status = 200, description = "The server's time", body = super::schemas::ServerTimeEnvelope)))]
pub(crate) async fn time(State(state): State<AppState>) -> Response {
    let now = state.clock.now();
    let data = ServerTime {
        server_time_ms: now.timestamp_millis(),
        server_time: now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    };
    success("The server's time.", Some(data))
}

/// The process is up
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "Up", body = super::schemas::MessageEnvelope)))]
pub(crate) async fn healthz() -> Response {
    success::<()>("up", None)
}

/// Storage is reachable
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "Ready", body = super::schemas::MessageEnvelope),
        (status = 503, description = "`unavailable`", body = super::schemas::ErrorEnvelope),
    )
)]
pub(crate) async fn readyz(State(state): State<AppState>) -> Result<Response> {
    state
        .store
        .ping()
        .await
        .map_err(|e| Error::Unavailable(e.into()))?;
    Ok(success::<()>("ready", None))
}

/// Prometheus metrics
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses(
        (status = 200, description = "OpenMetrics text (Prometheus)", content_type = "application/openmetrics-text", body = String),
    )
)]
pub(crate) async fn metrics(State(state): State<AppState>) -> Response {
    // While the database is down the metrics still answer (with keyward_storage_up 0), so the
    // outage itself can be seen and alerted on.
    let from_storage = storage_gauges(&state).await.ok();
    let mut out = String::new();
    let entries = state.key_cache.entries().await;
    state.metrics.render(from_storage, entries, &mut out);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        out,
    )
        .into_response()
}

/// The gauges read from the database, each counted at most every so often however often
/// `/metrics` is scraped.
async fn storage_gauges(
    state: &AppState,
) -> Result<(crate::store::OutboxBacklog, crate::store::UnusedKeys)> {
    let now = crate::clock::millis(state.clock.now());
    let backlog = {
        let mut cached = state.metrics.outbox_backlog.lock().await;
        match *cached {
            Some((at, backlog)) if at.elapsed() < BACKLOG_MAX_AGE => backlog,
            _ => {
                let backlog = state.store.outbox_backlog(now).await?;
                *cached = Some((std::time::Instant::now(), backlog));
                backlog
            }
        }
    };
    let unused = {
        let mut cached = state.metrics.unused_keys.lock().await;
        match *cached {
            Some((at, unused)) if at.elapsed() < UNUSED_KEYS_MAX_AGE => unused,
            _ => {
                let unused = state.store.unused_keys(now).await?;
                *cached = Some((std::time::Instant::now(), unused));
                unused
            }
        }
    };
    Ok((backlog, unused))
}
