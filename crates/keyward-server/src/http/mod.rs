//! The HTTP interface: one module per resource, merged here with the layers every route
//! shares.

pub mod error;
pub mod extract;
pub mod keys;
pub mod links;
pub mod onboarding;
pub mod openapi;
pub mod ops;
pub mod schemas;
pub mod views;

use crate::error::Error;
use crate::state::AppState;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, HeaderName, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use extract::ClientIp;
use keyward_core::ErrorCode;
use tower::Layer;
use tower_http::normalize_path::{NormalizePath, NormalizePathLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::TraceLayer;

/// The strictest policy the pages allow: our own stylesheet and copy script, forms posting
/// back to us, no framing, nothing else.
const CONTENT_SECURITY_POLICY: &str =
    "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; \
     form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The whole service, with trailing slashes accepted on every route.
pub fn app(state: AppState) -> NormalizePath<Router> {
    NormalizePathLayer::trim_trailing_slash().layer(router(state))
}

pub fn router(state: AppState) -> Router {
    // The routes that send email share a per-IP limit (SPEC §6).
    let emailing = Router::new()
        .merge(onboarding::router())
        .merge(keys::regenerate_router())
        .route_layer(middleware::from_fn_with_state(state.clone(), ip_rate_limit));
    let request_id = HeaderName::from_static("x-request-id");
    let security_headers = [
        (header::CACHE_CONTROL, "no-store"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    ];
    let mut router = Router::new()
        .merge(emailing)
        .merge(keys::whoami_router())
        .merge(links::router())
        .merge(ops::router())
        .merge(openapi::router())
        .fallback(|| async { Error::from(ErrorCode::NotFound) })
        .method_not_allowed_fallback(|| async { Error::from(ErrorCode::MethodNotAllowed) })
        .layer(DefaultBodyLimit::max(extract::BODY_LIMIT))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            record_metrics,
        ));
    for (name, value) in security_headers {
        router = router.layer(SetResponseHeaderLayer::overriding(
            name,
            HeaderValue::from_static(value),
        ));
    }
    router
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(
            TraceLayer::new_for_http().make_span_with(|request: &Request| {
                // The span names the route template, never the path: a link's path holds its token.
                let route = request
                    .extensions()
                    .get::<MatchedPath>()
                    .map_or("unmatched", MatchedPath::as_str);
                let id = request
                    .headers()
                    .get("x-request-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-");
                tracing::info_span!("request", method = %request.method(), route, request_id = id)
            }),
        )
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        .with_state(state)
}

async fn ip_rate_limit(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    request: Request,
    next: Next,
) -> Response {
    match state.ip_limiter.check(ip, state.clock.now()) {
        Ok(()) => next.run(request).await,
        Err(retry_after_secs) => Error::RateLimited { retry_after_secs }.into_response(),
    }
}

async fn record_metrics(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    let response = next.run(request).await;
    state.metrics.record(&route, response.status().as_u16());
    response
}
