//! The gateway (SPEC §7.2): requests under the upstream prefixes that are not keyward's own
//! routes are authenticated like WhoAmI and, if valid, forwarded to the payment API with
//! the partner's identity in `Keyward-*` headers. Invalid requests never reach it. Where a
//! request goes and which headers travel is the upstream adapter's business
//! (`crate::upstream`).

use super::answer::with_key_expiry;
use super::extract::{ClientIp, Fields, JsonBody, RequestId};
use super::forwarded;
use crate::error::Result;
use crate::flows::{self, Authorization, ClientAddress};
use crate::state::AppState;
use crate::upstream::{forwarded_headers, returned_headers, Gateway};
use axum::body::Body;
use axum::extract::{FromRequest, FromRequestParts, OriginalUri, Request};
use axum::http::{HeaderName, HeaderValue, Method};
use axum::response::{IntoResponse, Response};
use keyward_core::wire::{wire_time, KEY_EXPIRES_HEADER};
use keyward_core::{ErrorCode, KeyMode};
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;

/// The gateway as a route served without the router (`super::Routes`, which calls it only
/// when a gateway is on, for a path it covers that none of keyward's routes serves).
pub fn forward_route(
    request: Request,
    state: AppState,
) -> Pin<Box<dyn Future<Output = Response> + Send>> {
    Box::pin(async move {
        match state.gateway.clone() {
            Some(gateway) => forward(state, &gateway, request).await,
            None => crate::error::Error::from(ErrorCode::NotFound).into_response(),
        }
    })
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
    let mut target = gateway.target(&original)?;
    let mut upstream_headers = forwarded_headers(&parts.headers, IDENTITY_HEADERS);
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
    // Every answer to a request made with a key that expires says when (SPEC §3.2, §8.4).
    let key_expires_at = auth.key_expires_at;
    let relayed: Result<Response> = async move {
        // A test key goes to the sandbox, or nowhere (SPEC §8.3).
        if auth.mode == KeyMode::Test {
            target = gateway.sandbox_target(&original)?;
        }
        // The scope the path needs, by the path that is sent (SPEC §8.2).
        let scopes = &state.settings.scopes;
        if let Some(required) = scopes.required_for_path(original.path()) {
            scopes.require(&auth.class, [required])?;
        }
        if gateway.is_single_use(&method) {
            // Boxed: a database write, kept out of the future of every forwarded request.
            Box::pin(flows::use_once(&state, &auth, &body)).await?;
        }

        // Each name a constant, parsed when compiled rather than on every request.
        let identity: [(HeaderName, String); IDENTITY_HEADERS] = [
            (
                const { HeaderName::from_static("x-forwarded-for") },
                ip_text(ip),
            ),
            (
                const { HeaderName::from_static("x-forwarded-proto") },
                proto.to_owned(),
            ),
            (
                const { HeaderName::from_static("x-request-id") },
                request_id,
            ),
            (
                const { HeaderName::from_static("keyward-partner-id") },
                auth.partner.id.as_str().to_owned(),
            ),
            (
                const { HeaderName::from_static("keyward-partner-code") },
                auth.partner.code.as_str().to_owned(),
            ),
            (
                const { HeaderName::from_static("keyward-key-id") },
                auth.key_id.clone(),
            ),
            (
                const { HeaderName::from_static("keyward-key-scopes") },
                scopes.granted(&auth.class).join(" "),
            ),
            (
                const { HeaderName::from_static("keyward-key-mode") },
                auth.mode.as_str().to_owned(),
            ),
            (
                const { HeaderName::from_static(KEY_EXPIRES_HEADER) },
                auth.key_expires_at.map(wire_time).unwrap_or_default(),
            ),
        ];
        for (name, value) in identity {
            if value.is_empty() {
                continue;
            }
            // Taken as it is: `TryFrom<String>` checks the bytes without copying them.
            if let Ok(value) = HeaderValue::try_from(value) {
                upstream_headers.insert(name, value);
            }
        }
        let head_only = method == Method::HEAD;
        let answer = gateway.send(method, target, upstream_headers, raw).await?;
        // Room for the edge's headers and the key's expiry.
        let mut headers = returned_headers(answer.headers(), super::error::ANSWER_HEADERS);
        if head_only {
            // hyper sets the length of the body it sends, which for `HEAD` is none; the
            // upstream's says what `GET` would send (RFC 9110 §9.3.2).
            if let Some(length) = answer.headers().get(axum::http::header::CONTENT_LENGTH) {
                headers.insert(axum::http::header::CONTENT_LENGTH, length.clone());
            }
        }
        let (mut head, body) = answer.into_parts();
        head.headers = headers;
        Ok(Response::from_parts(head, Body::new(body)))
    }
    .await;
    Ok(with_key_expiry(
        relayed.unwrap_or_else(IntoResponse::into_response),
        key_expires_at,
    ))
}

/// How many headers the gateway sets on every forwarded request (SPEC §7.2): who sent it,
/// and who the partner is. The forwarded map is made with room for them.
const IDENTITY_HEADERS: usize = 9;

/// An address as `X-Forwarded-For` carries it. An IPv4 address is written without
/// `core::fmt`'s padding-aware integer formatting (1.3k instructions per request; ~150 now).
fn ip_text(ip: IpAddr) -> String {
    let IpAddr::V4(v4) = ip else {
        return ip.to_string();
    };
    let mut text = String::with_capacity(15);
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            text.push('.');
        }
        if octet >= 100 {
            text.push(char::from(b'0' + octet / 100));
        }
        if octet >= 10 {
            text.push(char::from(b'0' + octet / 10 % 10));
        }
        text.push(char::from(b'0' + octet % 10));
    }
    text
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_written_as_the_standard_library_writes_them() {
        let mut addresses: Vec<IpAddr> = [
            "0.0.0.0",
            "255.255.255.255",
            "10.0.100.9",
            "192.0.2.10",
            "2001:db8::1",
            "::ffff:192.0.2.1",
        ]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
        // Every octet value in every position.
        addresses.extend((0..=255u8).map(|o| IpAddr::from([o, 255 - o, o / 3, o.wrapping_mul(7)])));
        for ip in addresses {
            assert_eq!(ip_text(ip), ip.to_string());
        }
    }
}
