//! The HTTP interface: one module per resource, merged here with the layers every route
//! shares.

pub mod answer;
pub mod background;
mod edge;
pub mod error;
pub mod extract;
pub mod forwarded;
pub mod gateway;
pub mod internal;
pub mod keys;
pub mod links;
pub mod onboarding;
pub mod openapi;
pub mod ops;
pub mod schemas;
pub mod secret_scanning;
pub mod views;

use crate::error::Error;
use crate::state::AppState;
use axum::extract::{OriginalUri, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use extract::ClientIp;
use keyward_core::ErrorCode;

/// The whole public service. Requests reach it through [`before_routing`] (the listener
/// calls it), which keeps the URI as received and accepts trailing slashes.
pub fn app(state: AppState) -> Router {
    router(state)
}

/// What every request gets before routing, on either listener: the URI as received is kept
/// in `OriginalUri` (the gateway forwards that path unchanged), then trailing (and doubled
/// leading) slashes are trimmed, so `/healthz/` is `/healthz`. Done here, on the request, and
/// not by a second router around the first: that would cost a routing and a boxed service per
/// request.
pub fn before_routing(request: &mut Request) {
    let uri = request.uri().clone();
    let path = uri.path();
    if path.ends_with('/') && path != "/" || path.starts_with("//") {
        let trimmed = format!("/{}", path.trim_matches('/'));
        let path_and_query = match uri.query() {
            Some(query) => format!("{trimmed}?{query}"),
            None => trimmed,
        };
        let mut parts = uri.clone().into_parts();
        parts.path_and_query =
            axum::http::uri::PathAndQuery::from_maybe_shared(path_and_query).ok();
        if let Ok(normalized) = axum::http::Uri::from_parts(parts) {
            *request.uri_mut() = normalized;
        }
    }
    request.extensions_mut().insert(OriginalUri(uri));
}

/// The internal listener (SPEC §7.1): the verify API, `/metrics` and their OpenAPI document.
/// A router of its own: nothing here is reachable through the public listener.
pub fn internal_app(state: AppState) -> Router {
    // The operators' console, only when it is on (SPEC §10.1): never on the public listener.
    let console = match state.console {
        Some(_) => crate::console::router(state.clone()),
        None => Router::new(),
    };
    internal::router()
        .merge(console)
        .fallback(|| async { Error::from(ErrorCode::NotFound) })
        .method_not_allowed_fallback(|| async { Error::from(ErrorCode::MethodNotAllowed) })
        // A relayed body of 64 KiB may grow when written as a JSON string.
        .layer(edge::layer(state.clone(), 8 * extract::BODY_LIMIT))
        .with_state(state)
}

pub fn router(state: AppState) -> Router {
    // The routes that send email share a per-IP limit (SPEC §6).
    let emailing = Router::new()
        .merge(onboarding::router())
        .merge(keys::regenerate_router())
        .merge(keys::create_key_router())
        .route_layer(middleware::from_fn_with_state(state.clone(), ip_rate_limit));
    let secret_scanning = match state.github_keys {
        Some(_) => secret_scanning::router(),
        None => Router::new(),
    };
    Router::new()
        .merge(emailing)
        .merge(secret_scanning)
        .merge(keys::signed_router())
        .merge(links::router())
        .merge(ops::router())
        .merge(openapi::router())
        .fallback(fallback)
        .method_not_allowed_fallback(|| async { Error::from(ErrorCode::MethodNotAllowed) })
        .layer(edge::layer(state.clone(), extract::BODY_LIMIT))
        .with_state(state)
}

/// A path that is not one of keyward's routes: the gateway's when it covers it (SPEC §7.2),
/// else 404.
async fn fallback(State(state): State<AppState>, request: Request) -> Response {
    let path = request
        .extensions()
        .get::<OriginalUri>()
        .map_or_else(|| request.uri().path().to_owned(), |u| u.path().to_owned());
    match state.gateway.clone() {
        Some(gateway) if gateway.covers(&path) => {
            let mut response = gateway::forward(state, &gateway, request).await;
            response
                .extensions_mut()
                .insert(edge::RouteLabel(crate::metrics::GATEWAY_ROUTE));
            response
        }
        _ => Error::from(ErrorCode::NotFound).into_response(),
    }
}

pub(crate) async fn ip_rate_limit(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    request: Request,
    next: Next,
) -> Response {
    match state.ip_limiter.check(ip, state.clock.now()) {
        Ok(()) => next.run(request).await,
        Err(retry_after_secs) => {
            state.metrics.rate_limited(crate::metrics::Limit::Ip);
            Error::RateLimited { retry_after_secs }.into_response()
        }
    }
}
