//! The HTTP interface: one module per resource, merged here with the layers every route
//! shares.

pub mod answer;
pub mod background;
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
use axum::extract::{DefaultBodyLimit, MatchedPath, OriginalUri, Request, State};
use axum::http::{header, HeaderName, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use extract::ClientIp;
use keyward_core::ErrorCode;
use std::borrow::Cow;
use tower::Layer;
use tower_http::normalize_path::NormalizePathLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::TraceLayer;

/// The strictest policy the pages allow: our own stylesheet and copy script, forms posting
/// back to us, no framing, nothing else.
const CONTENT_SECURITY_POLICY: &str =
    "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; \
     form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The whole public service, with trailing slashes accepted on every route.
pub fn app(state: AppState) -> Router {
    normalized(router(state))
}

/// Accepts trailing slashes by trimming them before routing. The URI as received is kept in
/// `OriginalUri` first: the gateway forwards the path unchanged.
fn normalized(router: Router) -> Router {
    let normalized = NormalizePathLayer::trim_trailing_slash().layer(router);
    Router::new()
        .fallback_service(normalized)
        .layer(middleware::map_request(|mut request: Request| async move {
            let uri = request.uri().clone();
            request.extensions_mut().insert(OriginalUri(uri));
            request
        }))
}

/// The internal listener (SPEC §7.1): the verify API, `/metrics` and their OpenAPI document.
/// A router of its own: nothing here is reachable through the public listener.
pub fn internal_app(state: AppState) -> Router {
    let router = internal::router()
        .fallback(|| async { Error::from(ErrorCode::NotFound) })
        .method_not_allowed_fallback(|| async { Error::from(ErrorCode::MethodNotAllowed) })
        // A relayed body of 64 KiB may grow when written as a JSON string.
        .layer(DefaultBodyLimit::max(8 * extract::BODY_LIMIT))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            record_metrics,
        ));
    normalized(common_layers(router, &state).with_state(state))
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
    let router = Router::new()
        .merge(emailing)
        .merge(secret_scanning)
        .merge(keys::signed_router())
        .merge(links::router())
        .merge(ops::router())
        .merge(openapi::router())
        .fallback(fallback)
        .method_not_allowed_fallback(|| async { Error::from(ErrorCode::MethodNotAllowed) })
        .layer(DefaultBodyLimit::max(extract::BODY_LIMIT))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            record_metrics,
        ));
    common_layers(router, &state).with_state(state)
}

/// What every response of either listener gets: the security headers (where the handler, or
/// the upstream behind the gateway, set none), the request id, and a span per request.
fn common_layers(mut router: Router<AppState>, state: &AppState) -> Router<AppState> {
    let request_id = HeaderName::from_static("x-request-id");
    let security_headers = [
        (header::CACHE_CONTROL, "no-store"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    ];
    for (name, value) in security_headers {
        router = router.layer(SetResponseHeaderLayer::if_not_present(
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
                // Display, not Debug: both are plain ASCII (a route template; an id keyward
                // made or took only as visible ASCII), so there is nothing to escape.
                let span = tracing::info_span!(
                    "request",
                    method = %request.method(),
                    route = %route,
                    request_id = %id,
                    client_request_id = tracing::field::Empty,
                );
                if let Some(ClientRequestId(theirs)) = request.extensions().get() {
                    span.record("client_request_id", theirs.as_str());
                }
                span
            }),
        )
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        .layer(middleware::from_fn_with_state(
            state.settings.clone(),
            own_request_id,
        ))
}

/// The longest `X-Request-Id` keyward takes from a trusted proxy (SPEC §3).
const MAX_REQUEST_ID: usize = 128;

/// A request id the client chose and keyward did not take: logged beside keyward's own, cut
/// short, never echoed or forwarded.
#[derive(Clone)]
struct ClientRequestId(String);

/// keyward chooses its request ids (SPEC §3): a client's `X-Request-Id` is kept only from a
/// trusted proxy and only when it is 1 to 128 visible ASCII characters; otherwise it is
/// removed before the request-id layer, which then makes a new one.
async fn own_request_id(
    State(settings): State<std::sync::Arc<crate::config::Settings>>,
    mut request: Request,
    next: Next,
) -> Response {
    if let Some(value) = request.headers().get("x-request-id") {
        let well_formed = (1..=MAX_REQUEST_ID).contains(&value.len())
            && value.as_bytes().iter().all(u8::is_ascii_graphic);
        let from_trusted_proxy = request
            .extensions()
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .is_some_and(|axum::extract::ConnectInfo(peer)| {
                forwarded::is_trusted_proxy(peer.ip(), &settings.trusted_proxies)
            });
        if !(well_formed && from_trusted_proxy) {
            let theirs: String = String::from_utf8_lossy(value.as_bytes())
                .chars()
                .filter(|c| c.is_ascii_graphic())
                .take(64)
                .collect();
            request.headers_mut().remove("x-request-id");
            request.extensions_mut().insert(ClientRequestId(theirs));
        }
    }
    next.run(request).await
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
            response.extensions_mut().insert(RouteLabel(GATEWAY_ROUTE));
            response
        }
        _ => Error::from(ErrorCode::NotFound).into_response(),
    }
}

async fn ip_rate_limit(
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

/// The `route` label of requests the gateway forwarded (or refused): they match no route of
/// keyward's own, and are not the junk that `unmatched` counts.
const GATEWAY_ROUTE: &str = "gateway";

/// A route label set by a handler that no route template names (the gateway).
#[derive(Clone, Copy)]
struct RouteLabel(&'static str);

/// The `route` label of a route template: one of keyward's own, borrowed (no allocation per
/// request), or else a copy.
fn route_label(template: &str) -> Cow<'static, str> {
    use keyward_core::wire::paths;
    paths::PUBLIC_ROUTES
        .iter()
        .map(|(path, _)| *path)
        .chain([paths::VERIFY, paths::METRICS, paths::INTERNAL_OPENAPI])
        .find(|path| *path == template)
        .map_or_else(|| Cow::Owned(template.to_owned()), Cow::Borrowed)
}

async fn record_metrics(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let matched = request
        .extensions()
        .get::<MatchedPath>()
        .map(|m| route_label(m.as_str()));
    let response = next.run(request).await;
    let route = matched
        .or_else(|| {
            response
                .extensions()
                .get::<RouteLabel>()
                .map(|r| Cow::Borrowed(r.0))
        })
        .unwrap_or(Cow::Borrowed("unmatched"));
    let code = response.extensions().get::<ErrorCode>().map(|c| c.as_str());
    state
        .metrics
        .record(route, response.status().as_u16(), code);
    response
}
