//! The gateway's client to the payment API (SPEC §7.2): an outbound adapter, like the mailer.
//! It decides where a request goes (the one check of the final path), which of the client's
//! headers travel in either direction, and sends with the upstream's timeout. Who the partner
//! is and whether it may pass is the HTTP handler's business (`http/gateway.rs`).
//!
//! What the upstream receives: the method, path, query and body unchanged; the client's
//! headers except hop-by-hop ones, `Host`, `Content-Length`, any `Keyward-*` (set by keyward
//! alone) and the forwarding headers, which keyward sets itself (`X-Forwarded-For` is the
//! client address keyward determined, `X-Forwarded-Proto`, `X-Request-Id`).

mod connections;

use crate::config::Upstream;
use crate::error::{Error, Result};
use axum::http::uri::PathAndQuery;
use axum::http::{header, HeaderMap, HeaderValue, Method, Request, Response, Uri};
use bytes::Bytes;
pub use connections::UpstreamBody;
use connections::{Connections, SendError};
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use keyward_core::forward_path;
use keyward_core::ErrorCode;
use std::sync::Arc;
use std::time::Duration;

/// The upstream and its keep-alive connections (a pool per base URL, `upstream/connections.rs`),
/// built once at start: a forwarded request costs a pooled connection and the bytes, no URL
/// parsing and no body adapter.
pub struct Gateway {
    upstream: Upstream,
    live: Base,
    sandbox: Option<Base>,
}

/// An upstream URL taken apart once: the request's path and query are appended to `path`.
struct Base {
    /// The base path without its trailing slash (often empty).
    path: String,
    /// Its host (and port, when not the scheme's default), as the `Host` header says it.
    host: HeaderValue,
    connections: Arc<Connections>,
}

impl Base {
    fn of(url: &url::Url, connector: &HttpsConnector<HttpConnector>) -> anyhow::Result<Self> {
        let uri: Uri = url.as_str().parse()?;
        let (Some(scheme), Some(host)) = (uri.scheme(), url.host_str()) else {
            anyhow::bail!("an upstream URL needs a scheme and a host");
        };
        let host = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        };
        // What the connector dials: the scheme, the host and the port, never the user info.
        let address = Uri::builder()
            .scheme(scheme.clone())
            .authority(host.as_str())
            .path_and_query("/")
            .build()?;
        Ok(Self {
            path: url.path().trim_end_matches('/').to_owned(),
            host: HeaderValue::try_from(host)?,
            connections: Connections::new(address, connector.clone()),
        })
    }
}

/// Where one request goes: a base URL's connections, and the path and query to ask for
/// there (the request line's origin form).
pub struct Target<'a> {
    base: &'a Base,
    path_and_query: Uri,
}

/// Headers that describe one connection, not the request (RFC 9110 §7.6.1), plus those
/// keyward sets itself. Never forwarded in either direction.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Set by keyward on the way up; whatever the client sent under these names is dropped.
const SET_BY_KEYWARD: &[&str] = &[
    "host",
    "content-length",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-real-ip",
    "x-request-id",
];

impl Gateway {
    pub fn new(upstream: Upstream) -> anyhow::Result<Self> {
        let mut http = HttpConnector::new();
        http.enforce_http(false); // https is the TLS layer's, below
        http.set_nodelay(true);
        http.set_connect_timeout(Some(upstream.timeout.min(Duration::from_secs(5))));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())?
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Ok(Self {
            live: Base::of(&upstream.url, &connector)?,
            sandbox: upstream
                .sandbox_url
                .as_ref()
                .map(|url| Base::of(url, &connector))
                .transpose()?,
            upstream,
        })
    }

    /// Whether a path goes to the upstream (when it is not one of keyward's own routes).
    pub fn covers(&self, path: &str) -> bool {
        self.upstream.prefixes.iter().any(|p| path.starts_with(p))
    }

    /// The URI the request goes to: the upstream's base URL followed by the path and query as
    /// received. One decision on the final path (SPEC §7.2): the path must pass
    /// [`forward_path::check`], and the URI that is sent holds that path byte for byte under
    /// the base path (hyper sends the URI as it is: nothing re-encodes or resolves it).
    pub fn target(&self, uri: &Uri) -> Result<Target<'_>> {
        Self::target_under(&self.live, uri)
    }

    /// The URI a request made with a test key goes to: the same path and query under the
    /// sandbox (SPEC §8.3). Without a sandbox, 403 `test_key_not_accepted`: a test key never
    /// reaches the live upstream.
    pub fn sandbox_target(&self, uri: &Uri) -> Result<Target<'_>> {
        match &self.sandbox {
            Some(sandbox) => Self::target_under(sandbox, uri),
            None => Err(ErrorCode::TestKeyNotAccepted.into()),
        }
    }

    fn target_under<'a>(base: &'a Base, uri: &Uri) -> Result<Target<'a>> {
        let path = uri.path();
        forward_path::check(path).map_err(|refusal| Error::field("path", refusal.problem()))?;
        let query = uri.query();
        let text = match query {
            Some(query) => format!("{}{path}?{query}", base.path),
            None => format!("{}{path}", base.path),
        };
        let sent = PathAndQuery::try_from(text)
            .ok()
            .filter(|sent| {
                sent.path().strip_prefix(base.path.as_str()) == Some(path) && sent.query() == query
            })
            .map(|sent| Target {
                base,
                path_and_query: Uri::from(sent),
            });
        sent.ok_or_else(|| {
            Error::field(
                "path",
                "must be sent as it would be forwarded: percent-encode characters such as spaces, quotes and braces",
            )
        })
    }
}

impl Gateway {
    /// Whether requests with `method` through the gateway are single-use (SPEC §7.2).
    pub fn is_single_use(&self, method: &Method) -> bool {
        self.upstream.single_use && !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
    }

    /// Sends one request; the answer's headers are left for [`returned_headers`] to filter,
    /// its body is streamed back as it arrives. An unreachable upstream is 502
    /// `upstream_unavailable`, one that does not start answering in time 504
    /// `upstream_timeout`.
    pub async fn send(
        &self,
        method: Method,
        target: Target<'_>,
        mut headers: HeaderMap,
        body: Bytes,
    ) -> Result<Response<UpstreamBody>> {
        let Target {
            base,
            path_and_query,
        } = target;
        headers.insert(header::HOST, base.host.clone());
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = method;
        *request.uri_mut() = path_and_query;
        *request.headers_mut() = headers;
        let sent = base.connections.send(request);
        match tokio::time::timeout(self.upstream.timeout, sent).await {
            Err(_) => Err(ErrorCode::UpstreamTimeout.into()),
            Ok(Err(SendError::Connect(e))) if timed_out(&*e) => {
                Err(ErrorCode::UpstreamTimeout.into())
            }
            Ok(Err(e)) => {
                // The error's chain names no URL: nothing of the partner's path or query.
                let reason = match &e {
                    SendError::Connect(e) => crate::error::chain(&**e),
                    SendError::Exchange(e) => crate::error::chain(e),
                    SendError::Closed => "the connection closed before the request".to_owned(),
                };
                tracing::warn!(error = %reason, "the upstream could not be reached");
                Err(ErrorCode::UpstreamUnavailable.into())
            }
            Ok(Ok(answer)) => Ok(answer),
        }
    }
}

/// Whether the connection attempt ran out of time (the connect timeout), as opposed to
/// being refused.
fn timed_out(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                return true;
            }
        }
        cause = e.source();
    }
    false
}

/// The client's headers the upstream may see, with room for `extra` more (the gateway's own).
pub fn forwarded_headers(headers: &HeaderMap, extra: usize) -> HeaderMap {
    without_hop_by_hop(headers, extra, |name| {
        SET_BY_KEYWARD.contains(&name) || name.starts_with("keyward-")
    })
}

/// The upstream's headers the client may see, with room for `extra` more (the edge's).
pub fn returned_headers(headers: &HeaderMap, extra: usize) -> HeaderMap {
    without_hop_by_hop(headers, extra, |name| name == "content-length")
}

/// `headers` without the hop-by-hop ones (by name, or named in `Connection`) and without
/// those `also_dropped` names, made with room for `extra` more: one allocation, never grown.
fn without_hop_by_hop(
    headers: &HeaderMap,
    extra: usize,
    also_dropped: impl Fn(&str) -> bool,
) -> HeaderMap {
    let named_in_connection = connection_tokens(headers);
    let mut out = HeaderMap::with_capacity(headers.len() + extra);
    for (name, value) in headers {
        let name_text = name.as_str();
        if HOP_BY_HOP.contains(&name_text)
            || also_dropped(name_text)
            || named_in_connection
                .iter()
                .any(|n| n.eq_ignore_ascii_case(name_text))
        {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    out
}

/// Header names listed in `Connection` (hop-by-hop by declaration), as sent: compared
/// without regard to case, and not copied (most answers say `Connection: keep-alive`).
fn connection_tokens(headers: &HeaderMap) -> Vec<&str> {
    headers
        .get_all(axum::http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect()
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut shown = self.upstream.url.clone();
        if shown.password().is_some() {
            let _ = shown.set_password(Some("***"));
        }
        f.debug_struct("Gateway")
            .field("upstream", &shown.as_str())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderName, HeaderValue};

    #[test]
    fn the_client_cannot_choose_the_identity_or_forwarding_headers() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("Keyward-Partner-Id", "spoofed"),
            ("KEYWARD-KEY-ID", "spoofed"),
            ("X-Forwarded-For", "6.6.6.6"),
            ("Forwarded", "for=6.6.6.6"),
            ("Connection", "close, X-Secret-Hop"),
            ("X-Secret-Hop", "dropped"),
            ("Transfer-Encoding", "chunked"),
            ("Host", "evil.example"),
            ("Content-Type", "application/json"),
            ("X-Custom", "kept"),
        ] {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_static(value),
            );
        }
        let out = forwarded_headers(&headers, 0);
        let names: Vec<&str> = out.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["content-type", "x-custom"]);
    }
}
