//! The gateway (SPEC §7.2): requests under the upstream prefixes that are not keyward's own
//! routes are authenticated like WhoAmI and, if valid, forwarded to the payment API with
//! the partner's identity in `Keyward-*` headers. Invalid requests never reach it.
//!
//! What the upstream receives: the method, path, query and body unchanged; the client's
//! headers except hop-by-hop ones, `Host`, `Content-Length`, any `Keyward-*` (set by keyward
//! alone) and the forwarding headers, which keyward sets itself (`X-Forwarded-For` is the
//! client address keyward determined, `X-Forwarded-Proto`, `X-Request-Id`).

use super::extract::{ClientIp, Fields, JsonBody, RequestId};
use super::forwarded;
use crate::config::Upstream;
use crate::error::{Error, Result};
use crate::flows::{self, Authorization, ClientAddress};
use crate::state::AppState;
use axum::body::Body;
use axum::extract::{FromRequest, FromRequestParts, OriginalUri, Request};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use keyward_core::forward_path;
use keyward_core::wire::KEY_EXPIRES_HEADER;
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
    fn target(&self, uri: &Uri) -> Result<url::Url> {
        let path = uri.path();
        forward_path::check(path).map_err(|refusal| Error::field("path", refusal.problem()))?;
        let base = self.upstream.url.as_str().trim_end_matches('/');
        let base_path = self.upstream.url.path().trim_end_matches('/');
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

/// Authenticates and forwards one request. Called for paths the gateway covers.
pub async fn forward(state: AppState, gateway: &Gateway, request: Request) -> Response {
    match try_forward(state, gateway, request).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn try_forward(state: AppState, gateway: &Gateway, request: Request) -> Result<Response> {
    let (mut parts, body) = request.into_parts();
    let ClientIp(ip) = ClientIp::from_request_parts(&mut parts, &state).await?;
    let proto = forwarded_proto(&state, &parts);
    let Ok(authorization) = Authorization::from_request_parts(&mut parts, &state).await;
    let Ok(RequestId(request_id)) = RequestId::from_request_parts(&mut parts, &state).await;
    let original = parts
        .extensions
        .get::<OriginalUri>()
        .map_or_else(|| parts.uri.clone(), |OriginalUri(uri)| uri.clone());
    let method = parts.method.clone();
    if matches!(method, Method::CONNECT | Method::TRACE) {
        // No payment API serves these; TRACE would echo the partner's headers back.
        return Err(ErrorCode::MethodNotAllowed.into());
    }
    // Refused before any work: a path that could leave the prefix is never forwarded.
    let target = gateway.target(&original)?;
    let headers = parts.headers.clone();
    let JsonBody { raw, body } =
        JsonBody::from_request(Request::from_parts(parts, body), &state).await?;

    // Exactly WhoAmI's checks, in its order.
    let mut fields = Fields::new(&body);
    fields.require_signature();
    fields.finish()?;
    let auth = flows::authenticate(
        &state,
        authorization.public_key()?,
        &body,
        ClientAddress::Known(ip),
    )
    .await?;
    // Every answer to a request made with a retiring key says when it expires (SPEC §3.2).
    let key_expires_at = auth.key_expires_at;
    let relayed: Result<Response> = async move {
        let single_use = gateway.upstream.single_use
            && !matches!(method, Method::GET | Method::HEAD | Method::OPTIONS);
        if single_use {
            flows::use_once(&state, &auth, &body).await?;
        }

        let mut upstream_headers = forwarded_headers(&headers);
        for (name, value) in [
            ("x-forwarded-for", ip.to_string()),
            ("x-forwarded-proto", proto.to_owned()),
            ("x-request-id", request_id),
            ("keyward-partner-id", auth.partner.id.to_string()),
            ("keyward-partner-code", auth.partner.code.to_string()),
            ("keyward-key-id", auth.key_id.clone()),
            (
                KEY_EXPIRES_HEADER,
                auth.key_expires_at
                    .map(super::keys::wire_time)
                    .unwrap_or_default(),
            ),
        ] {
            if value.is_empty() {
                continue;
            }
            if let Ok(value) = HeaderValue::from_str(&value) {
                upstream_headers.insert(HeaderName::from_static(name), value);
            }
        }
        let sent = gateway
            .client
            .request(method, target)
            .headers(upstream_headers)
            .body(raw)
            .send();
        let answer = match tokio::time::timeout(gateway.upstream.timeout, sent).await {
            Err(_) => return Err(ErrorCode::UpstreamTimeout.into()),
            Ok(Err(e)) if e.is_timeout() => return Err(ErrorCode::UpstreamTimeout.into()),
            Ok(Err(e)) => {
                // Without the URL: it may carry credentials, and the partner's query.
                tracing::warn!(error = %e.without_url(), "the upstream could not be reached");
                return Err(ErrorCode::UpstreamUnavailable.into());
            }
            Ok(Ok(answer)) => answer,
        };
        let status =
            StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
        let headers = returned_headers(answer.headers());
        let mut response = Response::new(Body::from_stream(answer.bytes_stream()));
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        Ok(response)
    }
    .await;
    Ok(super::keys::with_key_expiry(
        relayed.unwrap_or_else(IntoResponse::into_response),
        key_expires_at,
    ))
}

/// The client's headers the upstream may see.
fn forwarded_headers(headers: &HeaderMap) -> HeaderMap {
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
fn returned_headers(headers: &reqwest::header::HeaderMap) -> HeaderMap {
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

/// `https` when a trusted proxy in front of keyward says so in the configured forwarding
/// header, else `http` (keyward itself serves plain HTTP).
fn forwarded_proto(state: &AppState, parts: &axum::http::request::Parts) -> &'static str {
    let settings = &state.settings;
    let peer_is_trusted = parts
        .extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .is_some_and(|axum::extract::ConnectInfo(peer)| {
            forwarded::is_trusted_proxy(peer.ip(), &settings.trusted_proxies)
        });
    let header = match settings.forwarded_header {
        forwarded::ForwardedHeader::XForwardedFor => "x-forwarded-proto",
        forwarded::ForwardedHeader::Forwarded => "forwarded",
    };
    let values = parts
        .headers
        .get_all(header)
        .iter()
        .filter_map(|v| v.to_str().ok());
    if peer_is_trusted && forwarded::says_https(settings.forwarded_header, values) {
        "https"
    } else {
        "http"
    }
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
