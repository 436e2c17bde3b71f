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
pub mod public_router;
pub mod schemas;
pub mod secret_scanning;
pub mod views;

use crate::error::Error;
use crate::state::AppState;
use axum::extract::{OriginalUri, Request, State};
use axum::handler::Handler;
use axum::http::{Method, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::future::RouteFuture;
use axum::Router;
use extract::ClientIp;
use keyward_core::wire::paths;
use keyward_core::ErrorCode;
use public_router::PublicRouter;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tower::Service;

/// The whole public service, as the listener serves it.
pub fn app(state: AppState) -> Routes {
    let healthz: edge::Handler = |r, s| Handler::call(ops::healthz, r, s);
    let whoami: edge::Handler = |r, s| Handler::call(keys::whoami, r, s);
    let (router, own_paths) = router(state.clone());
    // Only with a gateway on: without one, every path the router does not serve is a 404.
    let gateway = state.gateway.clone().map(|gateway| GatewayRoute {
        gateway,
        own_paths,
        route: edge::direct(
            state.clone(),
            extract::BODY_LIMIT,
            crate::metrics::GATEWAY_ROUTE,
            gateway::forward_route,
        ),
    });
    Routes {
        direct: vec![
            direct(
                &state,
                extract::BODY_LIMIT,
                Method::GET,
                paths::HEALTHZ,
                healthz,
            ),
            direct(
                &state,
                extract::BODY_LIMIT,
                Method::POST,
                paths::WHOAMI,
                whoami,
            ),
        ],
        gateway,
        router,
    }
}

/// A route of [`Routes`] served without the router.
fn direct(
    state: &AppState,
    body_limit: usize,
    method: Method,
    path: &'static str,
    call: edge::Handler,
) -> (Method, &'static str, edge::DirectRoute) {
    let route = edge::direct(state.clone(), body_limit, path, call);
    (method, path, route)
}

/// A listener's routes. The hottest, found by method and exact path, are called without
/// axum's router, which for each request cloned three boxed services, boxed three futures
/// and added two extensions (`docs/decisions.md`, "The hottest routes are served without axum's router"); so is the gateway,
/// for a path it covers that none of the router's routes serves. Every other request
/// (another method, `HEAD`, any other path) goes through the router. Both ways a request
/// gets the same edge, body limit and handler.
#[derive(Clone)]
pub struct Routes {
    direct: Vec<(Method, &'static str, edge::DirectRoute)>,
    gateway: Option<GatewayRoute>,
    router: Router,
}

/// The gateway served without the router, and the paths the router serves, which it never
/// takes (`public_router.rs`: the list is complete by construction).
#[derive(Clone)]
struct GatewayRoute {
    gateway: std::sync::Arc<crate::upstream::Gateway>,
    own_paths: public_router::OwnPaths,
    route: edge::DirectRoute,
}

impl Service<Request> for Routes {
    type Response = Response;
    type Error = Infallible;
    type Future = Routed;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: Request) -> Routed {
        let received = normalize(&mut request);
        let found = self
            .direct
            .iter_mut()
            .find(|(method, path, _)| method == request.method() && *path == request.uri().path());
        match found {
            Some((_, _, route)) => Routed::Direct {
                answer: route.call(request),
            },
            None => {
                // Kept for the gateway, which forwards the path as received.
                let received = received.unwrap_or_else(|| request.uri().clone());
                // The router's own decision, taken without it: a path none of its routes
                // serves goes to its fallback, which forwards what the gateway covers.
                let forwarded = self.gateway.as_mut().filter(|gateway| {
                    !gateway.own_paths.serves(request.uri().path())
                        && gateway.gateway.covers(received.path())
                });
                request.extensions_mut().insert(OriginalUri(received));
                match forwarded {
                    Some(gateway) => Routed::Direct {
                        answer: gateway.route.call(request),
                    },
                    None => Routed::Router {
                        answer: self.router.call(request),
                    },
                }
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// The answer of one of [`Routes`]'s two ways.
    #[project = RoutedProjection]
    pub enum Routed {
        Direct { #[pin] answer: <edge::DirectRoute as Service<Request>>::Future },
        Router { #[pin] answer: RouteFuture<Infallible> },
    }
}

impl Future for Routed {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            RoutedProjection::Direct { answer } => answer.poll(cx),
            RoutedProjection::Router { answer } => answer.poll(cx),
        }
    }
}

/// What every request gets before routing, on either listener: trailing (and doubled
/// leading) slashes are trimmed, so `/healthz/` is `/healthz`. Done on the request, and not
/// by a second router around the first, which would cost a routing and a boxed service per
/// request. Returns the URI as received when it was changed.
fn normalize(request: &mut Request) -> Option<Uri> {
    let path = request.uri().path();
    if !(path.ends_with('/') && path != "/" || path.starts_with("//")) {
        return None;
    }
    let uri = request.uri().clone();
    let trimmed = format!("/{}", uri.path().trim_matches('/'));
    let path_and_query = match uri.query() {
        Some(query) => format!("{trimmed}?{query}"),
        None => trimmed,
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = axum::http::uri::PathAndQuery::from_maybe_shared(path_and_query).ok();
    if let Ok(normalized) = Uri::from_parts(parts) {
        *request.uri_mut() = normalized;
    }
    Some(uri)
}

/// The internal listener (SPEC §7.1): the verify API, `/metrics` and their OpenAPI document.
/// A router of its own: nothing here is reachable through the public listener.
pub fn internal_app(state: AppState) -> Routes {
    // The operators' console, only when it is on (SPEC §10.1): never on the public listener.
    let console = match state.console {
        Some(_) => crate::console::router(state.clone()),
        None => Router::new(),
    };
    let router = internal::router()
        .merge(console)
        .fallback(|| async { Error::from(ErrorCode::NotFound) })
        .method_not_allowed_fallback(|| async { Error::from(ErrorCode::MethodNotAllowed) })
        .layer(edge::layer(state.clone(), INTERNAL_BODY_LIMIT))
        .with_state(state.clone());
    let verify: edge::Handler = |r, s| Handler::call(internal::verify, r, s);
    Routes {
        gateway: None,
        direct: vec![direct(
            &state,
            INTERNAL_BODY_LIMIT,
            Method::POST,
            paths::VERIFY,
            verify,
        )],
        router,
    }
}

/// The internal listener's body limit: a relayed body of 64 KiB may grow when written as a
/// JSON string.
const INTERNAL_BODY_LIMIT: usize = 8 * extract::BODY_LIMIT;

/// The public listener's router, and every path it serves.
pub fn router(state: AppState) -> (Router, public_router::OwnPaths) {
    // The routes that send email share a per-IP limit (SPEC §6).
    let emailing = PublicRouter::new()
        .merge(onboarding::router())
        .merge(keys::regenerate_router())
        .merge(keys::create_key_router())
        .route_layer(middleware::from_fn_with_state(state.clone(), ip_rate_limit));
    let secret_scanning = match state.github_keys {
        Some(_) => secret_scanning::router(),
        None => PublicRouter::new(),
    };
    let (routes, own_paths) = PublicRouter::new()
        .merge(emailing)
        .merge(secret_scanning)
        .merge(keys::signed_router())
        .merge(links::router())
        .merge(ops::router())
        .merge(openapi::router())
        .into_parts();
    let router = routes
        .fallback(fallback)
        .method_not_allowed_fallback(|| async { Error::from(ErrorCode::MethodNotAllowed) })
        .layer(edge::layer(state.clone(), extract::BODY_LIMIT))
        .with_state(state);
    (router, own_paths)
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
