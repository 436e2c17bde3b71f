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

/// The strictest policy the pages allow: our own stylesheet and copy script, forms posting
/// back to us, no framing, nothing else.
const CONTENT_SECURITY_POLICY: &str =
    "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; \
     form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

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
        .layer(DefaultBodyLimit::max(8 * extract::BODY_LIMIT))
        .layer(middleware::from_fn_with_state(state.clone(), edge))
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
        .layer(DefaultBodyLimit::max(extract::BODY_LIMIT))
        .layer(middleware::from_fn_with_state(state.clone(), edge))
        .with_state(state)
}

/// The security headers of every answer of either listener, where the handler (or the
/// upstream behind the gateway) set none.
const SECURITY_HEADERS: [(HeaderName, &str); 5] = [
    (header::CACHE_CONTROL, "no-store"),
    (header::REFERRER_POLICY, "no-referrer"),
    (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
    (header::X_FRAME_OPTIONS, "DENY"),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
];

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// What every request of either listener goes through, in one step rather than a layer each
/// (each layer is a service cloned and a future boxed or moved per request): keyward's own
/// request id (SPEC §3), the request's context on every line it logs (`telemetry::scope`:
/// the route template and that id), the metrics, the security headers and the request id on
/// the answer, and an error logged for a 5xx.
async fn edge(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let (request_id, client_request_id) = own_request_id(&state.settings, &mut request);
    // The route template, never the path: a link's path holds its token.
    let matched = request
        .extensions()
        .get::<MatchedPath>()
        .map(|m| route_label(m.as_str()));
    let context = crate::telemetry::RequestContext {
        method: request.method().clone(),
        route: matched.clone().unwrap_or(Cow::Borrowed("unmatched")),
        request_id: request_id.clone(),
        client_request_id,
    };
    let mut response = crate::telemetry::scope(context, async {
        let response = next.run(request).await;
        if response.status().is_server_error() {
            tracing::error!(
                status = response.status().as_u16(),
                latency_ms = started.elapsed().as_millis() as u64,
                "response failed"
            );
        }
        response
    })
    .await;

    let route = matched
        .or_else(|| {
            response
                .extensions()
                .get::<RouteLabel>()
                .map(|r| Cow::Borrowed(r.0))
        })
        .unwrap_or(Cow::Borrowed("unmatched"));
    let status = response.status();
    let code = response.extensions().get::<ErrorCode>().map(|c| c.as_str());
    state.metrics.record(route, status.as_u16(), code);
    let headers = response.headers_mut();
    // Room for what is added below at once, rather than growing the map twice.
    headers.reserve(SECURITY_HEADERS.len() + 1);
    for (name, value) in SECURITY_HEADERS {
        if !headers.contains_key(&name) {
            headers.insert(name, HeaderValue::from_static(value));
        }
    }
    if !headers.contains_key(REQUEST_ID) {
        headers.insert(REQUEST_ID, request_id);
    }
    response
}

/// The longest `X-Request-Id` keyward takes from a trusted proxy (SPEC §3).
const MAX_REQUEST_ID: usize = 128;

/// keyward chooses its request ids (SPEC §3): a client's `X-Request-Id` is kept only from a
/// trusted proxy and only when it is 1 to 128 visible ASCII characters; otherwise keyward
/// makes a new one (a UUID), and the client's, cut short, is returned to be logged beside it
/// (never echoed or forwarded). The request carries the id keyward chose.
fn own_request_id(
    settings: &crate::config::Settings,
    request: &mut Request,
) -> (HeaderValue, Option<String>) {
    let mut theirs = None;
    if let Some(value) = request.headers().get(REQUEST_ID) {
        let well_formed = (1..=MAX_REQUEST_ID).contains(&value.len())
            && value.as_bytes().iter().all(u8::is_ascii_graphic);
        let from_trusted_proxy = request
            .extensions()
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .is_some_and(|axum::extract::ConnectInfo(peer)| {
                forwarded::is_trusted_proxy(peer.ip(), &settings.trusted_proxies)
            });
        if well_formed && from_trusted_proxy {
            return (value.clone(), None);
        }
        theirs = Some(
            String::from_utf8_lossy(value.as_bytes())
                .chars()
                .filter(|c| c.is_ascii_graphic())
                .take(64)
                .collect(),
        );
    }
    // A v4 UUID from a thread-local generator (uuid's `fast-rng`): no system call per request.
    let mut text = uuid::Uuid::encode_buffer();
    let id = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut text);
    let id = HeaderValue::from_str(id).unwrap_or(HeaderValue::from_static("-"));
    request.headers_mut().insert(REQUEST_ID, id.clone());
    (id, theirs)
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
