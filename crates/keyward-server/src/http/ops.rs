//! Operations on the public listener: `/healthz`, `/readyz` and `/api/v1/time` (SPEC §3.5,
//! §3.4b). `/metrics` is the internal listener's (`internal.rs`).

use super::error::success;
use super::public_router::PublicRouter;
use crate::error::{Error, Result};
use crate::state::AppState;
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use keyward_core::wire::{paths, ServerTime};

pub fn router() -> PublicRouter {
    PublicRouter::new()
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
        server_time: keyward_core::wire::wire_time(now.timestamp_millis()),
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
