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
use keyward_core::wire::paths;
use std::fmt::Write;

pub fn router() -> Router<AppState> {
    Router::new()
        .route(paths::HEALTHZ, get(healthz))
        .route(paths::READYZ, get(readyz))
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
        (status = 200, description = "Prometheus text format", content_type = "text/plain", body = String),
        (status = 503, description = "`unavailable`", body = super::schemas::ErrorEnvelope),
    )
)]
pub(crate) async fn metrics(State(state): State<AppState>) -> Result<Response> {
    let mut out = String::new();
    state.metrics.render(&mut out);
    state
        .metrics
        .render_key_cache(state.key_cache.entries().await, &mut out);
    let outbox = state.store.outbox_stats().await?;
    out.push_str("# HELP keyward_outbox_emails Emails in the outbox by state.\n# TYPE keyward_outbox_emails gauge\n");
    for (label, value) in [
        ("pending", outbox.pending),
        ("sent", outbox.sent),
        ("dead", outbox.dead),
    ] {
        let _ = writeln!(out, "keyward_outbox_emails{{state=\"{label}\"}} {value}");
    }
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response())
}
