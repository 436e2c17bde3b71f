//! The public listener's routes, built so that the paths they serve are known.
//!
//! Every route module of the public listener adds its routes through [`PublicRouter`], never
//! through a bare `axum::Router`: it has no way to take one in. So the paths it records are,
//! by construction, every path the router answers, and a path that matches none of them is
//! one the router would have handed to its fallback. The gateway relies on that to forward
//! such a path without going through the router (`super::Routes`; `docs/decisions.md`,
//! "The gateway is served without axum's router too").

use crate::state::AppState;
use axum::extract::Request;
use axum::response::IntoResponse;
use axum::routing::{MethodRouter, Route};
use axum::Router;
use std::convert::Infallible;
use tower::{Layer, Service};

/// A router of the public listener and every path template it serves.
#[derive(Default)]
pub struct PublicRouter {
    router: Router<AppState>,
    paths: Vec<&'static str>,
}

impl PublicRouter {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn route(mut self, path: &'static str, method_router: MethodRouter<AppState>) -> Self {
        self.paths.push(path);
        self.router = self.router.route(path, method_router);
        self
    }

    pub fn merge(mut self, other: PublicRouter) -> Self {
        self.paths.extend(other.paths);
        self.router = self.router.merge(other.router);
        self
    }

    /// `layer` around the routes added so far, run only for a request that matched one of
    /// them (axum's `Router::route_layer`).
    pub fn route_layer<L>(mut self, layer: L) -> Self
    where
        L: Layer<Route> + Clone + Send + Sync + 'static,
        L::Service: Service<Request> + Clone + Send + Sync + 'static,
        <L::Service as Service<Request>>::Response: IntoResponse + 'static,
        <L::Service as Service<Request>>::Error: Into<Infallible> + 'static,
        <L::Service as Service<Request>>::Future: Send + 'static,
    {
        self.router = self.router.route_layer(layer);
        self
    }

    /// The router, and a matcher of every path it serves: the same matcher axum's router
    /// uses (matchit), given the same templates, so that the two agree on every path.
    pub fn into_parts(self) -> (Router<AppState>, OwnPaths) {
        let mut matcher = matchit::Router::new();
        for path in &self.paths {
            // The router took these templates, so they are valid; one added twice (a method
            // each in two routers) is one template to the matcher.
            let _ = matcher.insert(*path, ());
        }
        let own = OwnPaths {
            matcher,
            paths: self.paths,
        };
        (self.router, own)
    }
}

/// The paths the public router serves.
#[derive(Clone)]
pub struct OwnPaths {
    matcher: matchit::Router<()>,
    paths: Vec<&'static str>,
}

impl OwnPaths {
    /// Whether the router has a route for `path` (whatever the method).
    pub fn serves(&self, path: &str) -> bool {
        self.matcher.at(path).is_ok()
    }

    /// The templates, as they were added.
    pub fn templates(&self) -> &[&'static str] {
        &self.paths
    }
}
