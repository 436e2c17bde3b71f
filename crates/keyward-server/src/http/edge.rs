//! The edge of every request, on either listener: keyward's own request id (SPEC §3), the
//! request's context on every line it logs (`telemetry::scope`: the route template and that
//! id), the metrics, the security headers and the request id on the answer, an error logged
//! for a 5xx, and the body limit the extractors read.
//!
//! One hand-written tower service with a future of its own, rather than `axum::middleware`
//! and a layer per concern: axum's `from_fn` boxes a future and a service per request, and
//! each layer given to a router is one more boxed service cloned per request
//! (`docs/decisions.md`, "The edge of every request").

use crate::state::AppState;
use crate::telemetry::{self, RequestContext};
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::{header, HeaderName, HeaderValue};
use axum::response::Response;
use keyward_core::ErrorCode;
use std::borrow::Cow;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Instant;
use tokio::task::futures::TaskLocalFuture;
use tower::layer::util::Stack;
use tower::{Layer, Service};

/// The strictest policy the pages allow: our own stylesheet and copy script, forms posting
/// back to us, no framing, nothing else.
const CONTENT_SECURITY_POLICY: &str =
    "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; \
     form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

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

/// The edge around every route of a router, with `body_limit` as the limit of the body
/// extractors (axum's `DefaultBodyLimit`, composed here rather than boxed as a layer of its own).
pub fn layer(state: AppState, body_limit: usize) -> Stack<DefaultBodyLimit, EdgeLayer> {
    Stack::new(DefaultBodyLimit::max(body_limit), EdgeLayer { state })
}

#[derive(Clone)]
pub struct EdgeLayer {
    state: AppState,
}

impl<S> Layer<S> for EdgeLayer {
    type Service = Edge<S>;

    fn layer(&self, inner: S) -> Edge<S> {
        Edge {
            inner,
            state: self.state.clone(),
            route: None,
        }
    }
}

/// A route with the edge around it.
#[derive(Clone)]
pub struct Edge<S> {
    inner: S,
    state: AppState,
    /// The route's label when it is served without the router (`super::Routes`), which
    /// would otherwise have named it in `MatchedPath`.
    route: Option<&'static str>,
}

/// A handler served without the router: the edge and the listener's body limit around it,
/// as the router's layers would have put them, under the label `route`.
pub type DirectRoute = Edge<<DefaultBodyLimit as Layer<Direct>>::Service>;

pub fn direct(
    state: AppState,
    body_limit: usize,
    route: &'static str,
    call: Handler,
) -> DirectRoute {
    let inner = DefaultBodyLimit::max(body_limit).layer(Direct {
        call,
        state: state.clone(),
    });
    Edge {
        inner,
        state,
        route: Some(route),
    }
}

/// An axum handler's `call`, given its request and the state: a plain function pointer, so
/// every directly served route has one type.
pub type Handler = fn(Request, AppState) -> Pin<Box<dyn Future<Output = Response> + Send>>;

/// One handler as a service, called in place: no boxed service cloned per request, no
/// future boxed beyond the handler's own.
#[derive(Clone)]
pub struct Direct {
    call: Handler,
    state: AppState,
}

impl Service<Request> for Direct {
    type Response = Response;
    type Error = Infallible;
    type Future = DirectFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> DirectFuture {
        DirectFuture((self.call)(request, self.state.clone()))
    }
}

/// A handler's answer, as a service's.
pub struct DirectFuture(Pin<Box<dyn Future<Output = Response> + Send>>);

impl Future for DirectFuture {
    type Output = Result<Response, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.0.as_mut().poll(cx).map(Ok)
    }
}

impl<S> Service<Request> for Edge<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = EdgeFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        let started = Instant::now();
        let (request_id, client_request_id) = own_request_id(&self.state.settings, &mut request);
        // The route template, never the path: a link's path holds its token.
        let matched = match self.route {
            Some(route) => Some(Cow::Borrowed(route)),
            None => request
                .extensions()
                .get::<MatchedPath>()
                .map(|m| route_label(m.as_str())),
        };
        let context = RequestContext {
            method: request.method().clone(),
            route: matched.clone().unwrap_or(Cow::Borrowed("unmatched")),
            request_id: request_id.clone(),
            client_request_id,
        };
        EdgeFuture {
            inner: telemetry::scope(context, self.inner.call(request)),
            state: self.state.clone(),
            started,
            matched,
            request_id: Some(request_id),
        }
    }
}

pin_project_lite::pin_project! {
    /// The route's answer, with what the edge adds to it.
    pub struct EdgeFuture<F> {
        #[pin]
        inner: TaskLocalFuture<RequestContext, F>,
        state: AppState,
        started: Instant,
        matched: Option<Cow<'static, str>>,
        request_id: Option<HeaderValue>,
    }
}

impl<F> Future for EdgeFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let Ok(mut response) = ready!(this.inner.as_mut().poll(cx));
        if response.status().is_server_error() {
            // Logged with the request's context, as every line of the request is.
            let log = || {
                tracing::error!(
                    status = response.status().as_u16(),
                    latency_ms = this.started.elapsed().as_millis() as u64,
                    "response failed"
                );
            };
            match this.inner.as_mut().take_value() {
                Some(context) => telemetry::within(context, log),
                None => log(),
            }
        }
        let route = this
            .matched
            .take()
            .or_else(|| {
                response
                    .extensions()
                    .get::<RouteLabel>()
                    .map(|r| Cow::Borrowed(r.0))
            })
            .unwrap_or(Cow::Borrowed("unmatched"));
        let status = response.status();
        let code = response.extensions().get::<ErrorCode>().map(|c| c.as_str());
        this.state.metrics.record(route, status.as_u16(), code);
        let headers = response.headers_mut();
        // Room for what is added below at once, rather than growing the map twice.
        headers.reserve(SECURITY_HEADERS.len() + 1);
        // One lookup each: an entry is found or made where the handler left none.
        for (name, value) in SECURITY_HEADERS {
            headers
                .entry(name)
                .or_insert_with(|| HeaderValue::from_static(value));
        }
        if let Some(request_id) = this.request_id.take() {
            headers.entry(REQUEST_ID).or_insert(request_id);
        }
        Poll::Ready(Ok(response))
    }
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
                super::forwarded::is_trusted_proxy(peer.ip(), &settings.trusted_proxies)
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

/// A route label set by a handler that no route template names (the gateway).
#[derive(Clone, Copy)]
pub(super) struct RouteLabel(pub(super) &'static str);

/// The `route` label of a route template: one of keyward's own, borrowed (no allocation per
/// request), or else a copy.
fn route_label(template: &str) -> Cow<'static, str> {
    crate::metrics::own_routes()
        .find(|path| *path == template)
        .map_or_else(|| Cow::Owned(template.to_owned()), Cow::Borrowed)
}
