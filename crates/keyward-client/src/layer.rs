//! [`VerifyLayer`]: keyward's verify API in front of an axum app. Every request is checked
//! before the app sees it; an invalid one is answered with exactly what keyward says the
//! partner must receive, and a valid one reaches the app with the
//! [`VerifiedPartner`](crate::VerifiedPartner) in its extensions.

use crate::verifier::{Verification, Verifier};
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, HeaderValue, Method, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use keyward_core::wire::{Envelope, RelayedError, VerifyRequest, MAX_BODY_BYTES};
use keyward_core::ErrorCode;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tower::{Layer, Service};

/// Which requests are single-use (SPEC §7.1: a repeated payout must not pay twice).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SingleUse {
    /// Every method but GET, HEAD and OPTIONS, as keyward's gateway does.
    #[default]
    StateChanging,
    Always,
    Never,
}

impl SingleUse {
    fn applies_to(self, method: &Method) -> bool {
        match self {
            SingleUse::Always => true,
            SingleUse::Never => false,
            SingleUse::StateChanging => {
                !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
            }
        }
    }
}

/// How the layer learns the partner's address: by default the TCP peer (axum's
/// `ConnectInfo`); behind a load balancer, whatever it says.
pub type ClientIpFn = fn(&axum::http::request::Parts) -> Option<IpAddr>;

fn peer_address(parts: &axum::http::request::Parts) -> Option<IpAddr> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| peer.ip())
}

/// Authenticates every request through keyward's verify API.
///
/// ```no_run
/// use axum::{routing::post, Extension, Router};
/// use keyward_client::{VerifiedPartner, Verifier, VerifyLayer};
///
/// async fn payout(Extension(partner): Extension<VerifiedPartner>) -> String {
///     format!("paying on behalf of {}", partner.partner_id)
/// }
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let verifier = Verifier::new("http://127.0.0.1:8081", "kw_service_…")?;
/// let app = Router::new()
///     .route("/api/v1/PartnerP2P/Payout", post(payout))
///     .layer(VerifyLayer::new(verifier));
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:9000").await?;
/// axum::serve(listener, app.into_make_service_with_connect_info::<std::net::SocketAddr>()).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct VerifyLayer {
    verifier: Arc<Verifier>,
    single_use: SingleUse,
    client_ip: ClientIpFn,
    required_scopes: Vec<String>,
}

impl VerifyLayer {
    pub fn new(verifier: Verifier) -> Self {
        Self {
            verifier: Arc::new(verifier),
            single_use: SingleUse::default(),
            client_ip: peer_address,
            required_scopes: Vec::new(),
        }
    }

    /// Scopes every request through this layer needs (SPEC §8.2): a key without them gets
    /// 403 `insufficient_scope` and the app is not called.
    pub fn required_scopes<I: IntoIterator<Item = S>, S: Into<String>>(
        mut self,
        scopes: I,
    ) -> Self {
        self.required_scopes = scopes.into_iter().map(Into::into).collect();
        self
    }

    pub fn single_use(mut self, single_use: SingleUse) -> Self {
        self.single_use = single_use;
        self
    }

    /// Where the partner's address comes from (default: the TCP peer).
    pub fn client_ip(mut self, client_ip: ClientIpFn) -> Self {
        self.client_ip = client_ip;
        self
    }
}

impl<S> Layer<S> for VerifyLayer {
    type Service = VerifyService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        VerifyService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`VerifyLayer`] wraps an app in.
#[derive(Clone)]
pub struct VerifyService<S> {
    inner: S,
    layer: VerifyLayer,
}

impl<S> Service<Request<Body>> for VerifyService<S>
where
    S: Service<Request<Body>, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        // The clone that was polled ready is the one to call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let layer = self.layer.clone();
        Box::pin(async move {
            let (mut parts, body) = request.into_parts();
            let bytes = match http_body_util::Limited::new(body, MAX_BODY_BYTES)
                .collect()
                .await
            {
                Ok(collected) => collected.to_bytes(),
                Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                    return Ok(local_error(ErrorCode::BodyTooLarge))
                }
                Err(_) => return Ok(local_error(ErrorCode::InvalidJson)),
            };
            let Ok(text) = std::str::from_utf8(&bytes) else {
                return Ok(local_error(ErrorCode::InvalidJson));
            };
            let mut values = parts.headers.get_all(header::AUTHORIZATION).iter();
            let authorization = match (values.next(), values.next()) {
                (None, _) => None,
                (Some(value), None) => Some(value.to_str().unwrap_or("malformed").to_owned()),
                // Two headers: keyward calls that malformed, whichever is first.
                (Some(_), Some(_)) => Some("malformed".to_owned()),
            };
            let request = VerifyRequest {
                authorization,
                body: text.to_owned(),
                client_ip: (layer.client_ip)(&parts).map(|ip| ip.to_string()),
                single_use: layer.single_use.applies_to(&parts.method),
                required_scopes: layer.required_scopes.clone(),
            };
            match layer.verifier.verify(&request).await {
                Ok(Verification::Valid(partner)) => {
                    // A retiring key: the partner's answer says when it stops (SPEC §3.2).
                    let expires = partner
                        .key_expires_at
                        .as_deref()
                        .and_then(|at| HeaderValue::from_str(at).ok());
                    parts.extensions.insert(partner);
                    let mut response = inner
                        .call(Request::from_parts(parts, Body::from(bytes)))
                        .await?;
                    if let Some(expires) = expires {
                        response
                            .headers_mut()
                            .insert(keyward_core::wire::KEY_EXPIRES_HEADER, expires);
                    }
                    Ok(response)
                }
                Ok(Verification::Invalid(error)) => Ok(relay(&error)),
                Err(_) => Ok(local_error(ErrorCode::Unavailable)),
            }
        })
    }
}

/// The partner's answer, as keyward said it must be.
fn relay(error: &RelayedError) -> Response {
    let status = StatusCode::from_u16(error.status).unwrap_or(StatusCode::UNAUTHORIZED);
    (status, axum::Json(error.envelope())).into_response()
}

/// An answer the layer gives itself, in keyward's envelope.
fn local_error(code: ErrorCode) -> Response {
    let status = StatusCode::from_u16(code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let envelope = Envelope::<()> {
        success: false,
        message: code.message().to_owned(),
        data: None,
        code: Some(code.as_str().to_owned()),
        errors: None,
    };
    let mut response = (status, axum::Json(envelope)).into_response();
    if code == ErrorCode::Unavailable {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}
