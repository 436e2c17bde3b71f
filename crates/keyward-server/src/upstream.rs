//! The gateway's client to the payment API (SPEC §7.2): an outbound adapter, like the mailer.
//! It decides where a request goes (the one check of the final path), which of the client's
//! headers travel in either direction, and sends with the upstream's timeout. Who the partner
//! is and whether it may pass is the HTTP handler's business (`http/gateway.rs`).
//!
//! What the upstream receives: the method, path, query and body unchanged; the client's
//! headers except hop-by-hop ones, `Host`, `Content-Length`, any `Keyward-*` (set by keyward
//! alone) and the forwarding headers, which keyward sets itself (`X-Forwarded-For` is the
//! client address keyward determined, `X-Forwarded-Proto`, `X-Request-Id`).

use crate::config::Upstream;
use crate::error::{Error, Result};
use axum::http::{HeaderMap, Method, Uri};
use keyward_core::forward_path;
use keyward_core::ErrorCode;

/// The upstream and a pooled keep-alive client to reach it, built once at start.
pub struct Gateway {
    upstream: Upstream,
    client: reqwest::Client,
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
        let client = reqwest::Client::builder()
            .connect_timeout(upstream.timeout.min(std::time::Duration::from_secs(5)))
            .pool_idle_timeout(std::time::Duration::from_secs(60))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self { upstream, client })
    }

    /// Whether a path goes to the upstream (when it is not one of keyward's own routes).
    pub fn covers(&self, path: &str) -> bool {
        self.upstream.prefixes.iter().any(|p| path.starts_with(p))
    }

    /// The URL the request goes to: the upstream's base URL followed by the path and query as
    /// received. One decision on the final path (SPEC §7.2): the path must pass
    /// [`forward_path::check`], and the URL that is sent must hold that path byte for byte
    /// under the base path (a URL parser that would re-encode or resolve anything refuses it
    /// here, instead of sending something other than what was checked).
    pub fn target(&self, uri: &Uri) -> Result<url::Url> {
        Self::target_under(&self.upstream.url, uri)
    }

    /// The URL a request made with a test key goes to: the same path and query under the
    /// sandbox (SPEC §8.3). Without a sandbox, 403 `test_key_not_accepted`: a test key never
    /// reaches the live upstream.
    pub fn sandbox_target(&self, uri: &Uri) -> Result<url::Url> {
        match &self.upstream.sandbox_url {
            Some(sandbox) => Self::target_under(sandbox, uri),
            None => Err(ErrorCode::TestKeyNotAccepted.into()),
        }
    }

    fn target_under(upstream: &url::Url, uri: &Uri) -> Result<url::Url> {
        let path = uri.path();
        forward_path::check(path).map_err(|refusal| Error::field("path", refusal.problem()))?;
        let base = upstream.as_str().trim_end_matches('/');
        let base_path = upstream.path().trim_end_matches('/');
        let query = uri.query();
        let text = match query {
            Some(query) => format!("{base}{path}?{query}"),
            None => format!("{base}{path}"),
        };
        let url = url::Url::parse(&text)
            .ok()
            .filter(|url| url.path().strip_prefix(base_path) == Some(path) && url.query() == query);
        url.ok_or_else(|| {
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

    /// Sends one request; the answer's headers are left for [`returned_headers`] to filter.
    /// An unreachable upstream is 502 `upstream_unavailable`, one that does not start
    /// answering in time 504 `upstream_timeout`.
    pub async fn send(
        &self,
        method: Method,
        target: url::Url,
        headers: HeaderMap,
        body: bytes::Bytes,
    ) -> Result<reqwest::Response> {
        let sent = self
            .client
            .request(method, target)
            .headers(headers)
            .body(body)
            .send();
        match tokio::time::timeout(self.upstream.timeout, sent).await {
            Err(_) => Err(ErrorCode::UpstreamTimeout.into()),
            Ok(Err(e)) if e.is_timeout() => Err(ErrorCode::UpstreamTimeout.into()),
            Ok(Err(e)) => {
                // Without the URL: it may carry credentials, and the partner's query.
                tracing::warn!(error = %e.without_url(), "the upstream could not be reached");
                Err(ErrorCode::UpstreamUnavailable.into())
            }
            Ok(Ok(answer)) => Ok(answer),
        }
    }
}

/// The client's headers the upstream may see.
pub fn forwarded_headers(headers: &HeaderMap) -> HeaderMap {
    let named_in_connection = connection_tokens(headers);
    let mut out = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        let name_text = name.as_str();
        if HOP_BY_HOP.contains(&name_text)
            || SET_BY_KEYWARD.contains(&name_text)
            || name_text.starts_with("keyward-")
            || named_in_connection.iter().any(|n| n == name_text)
        {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    out
}

/// The upstream's headers the client may see.
pub fn returned_headers(headers: &reqwest::header::HeaderMap) -> HeaderMap {
    let named_in_connection = connection_tokens(headers);
    let mut out = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        let name_text = name.as_str();
        if HOP_BY_HOP.contains(&name_text)
            || name_text == "content-length"
            || named_in_connection.iter().any(|n| n == name_text)
        {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    out
}

/// Header names listed in `Connection` (hop-by-hop by declaration), lower case.
fn connection_tokens(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all("connection")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
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
        let out = forwarded_headers(&headers);
        let names: Vec<&str> = out.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["content-type", "x-custom"]);
    }
}
