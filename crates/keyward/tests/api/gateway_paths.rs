//! The gateway never leaves its prefix or the upstream's base path (SPEC §7.2). Requests are
//! written on raw sockets: a client library would normalise the paths before sending them.

use crate::helpers::*;
use axum::extract::{OriginalUri, State};
use axum::http::Method;
use keyward_server::config::Upstream;
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BASE: &str = "/partner-api";
const PREFIX: &str = "/api/v1/PartnerP2P/Payout/";

type Seen = Arc<Mutex<Vec<(Method, String)>>>;

/// An upstream behind a base path that records every request it receives.
async fn spawn_upstream() -> (String, Seen) {
    let seen: Seen = Arc::default();
    let app = axum::Router::new()
        .fallback(
            |State(seen): State<Seen>, method: Method, OriginalUri(uri): OriginalUri| async move {
                seen.lock().unwrap().push((method, uri.to_string()));
                "paid"
            },
        )
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}{BASE}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen)
}

/// Fails the test if the upstream ever received a request outside the base path and prefix.
fn assert_all_inside(seen: &Seen) {
    for (method, uri) in seen.lock().unwrap().iter() {
        assert!(
            uri.starts_with(&format!("{BASE}{PREFIX}")),
            "the upstream received {method} {uri}, outside {BASE}{PREFIX}"
        );
    }
}

/// Sends one request as written, byte for byte; returns the status and the body.
async fn raw_request(
    address: &str,
    method: &str,
    target: &str,
    headers: &str,
    body: &str,
) -> (u16, String) {
    let host = address.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(host).await.unwrap();
    let request = format!(
        "{method} {target} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("an answer within 10 s")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

async fn gateway() -> (TestApp, Seen) {
    let (upstream, seen) = spawn_upstream().await;
    let upstream = Upstream {
        url: url::Url::parse(&upstream).unwrap(),
        prefixes: vec![PREFIX.into()],
        timeout: Duration::from_secs(5),
        single_use: false,
        sandbox_url: None,
    };
    (
        spawn_app_with(move |s| s.upstream = Some(upstream)).await,
        seen,
    )
}

#[tokio::test]
async fn paths_that_could_leave_the_prefix_are_refused_and_never_forwarded() {
    let (app, seen) = gateway().await;
    let partner = app.onboarded_partner("PATHS", "ops@paths.example").await;
    let headers = format!("Authorization: Bearer {}\r\n", partner.public_key);
    let body = sign(r#"{"amount":"1"}"#, &partner.secret_key);

    for path in [
        "/api/v1/PartnerP2P/Payout/%2e%2e/Refund",
        "/api/v1/PartnerP2P/Payout/%2E%2E/Refund",
        "/api/v1/PartnerP2P/Payout/.%2e/Refund",
        "/api/v1/PartnerP2P/Payout/../../../../../../../admin",
        "/api/v1/PartnerP2P/Payout/./../admin",
        "/api/v1/PartnerP2P/Payout/\\..\\..\\..\\..\\admin",
        "/api/v1/PartnerP2P/Payout/%5c..%5c..%5cadmin",
        "/api/v1/PartnerP2P/Payout/..%2f..%2fadmin",
        "/api/v1/PartnerP2P/Payout/..%2F..%2Fadmin",
        "/api/v1/PartnerP2P/Payout/%252e%252e/%252e%252e/admin",
        "/api/v1/PartnerP2P/Payout/..;/..;/admin",
        "/api/v1/PartnerP2P/Payout/..?x=1",
    ] {
        for method in ["POST", "GET"] {
            let (status, answer) = raw_request(&app.address, method, path, &headers, &body).await;
            assert_eq!(status, 400, "{method} {path}: {answer}");
            let answer: Value = serde_json::from_str(&answer).unwrap();
            assert_eq!(answer["code"], "invalid_field", "{method} {path}");
            assert_eq!(answer["errors"][0]["field"], "path", "{method} {path}");
        }
    }

    // The same partner, the same body, an ordinary path: forwarded under the base path, which
    // shows that the refusals above were the paths' doing.
    let (status, answer) = raw_request(
        &app.address,
        "POST",
        "/api/v1/PartnerP2P/Payout/a.b/x?ref=1",
        &headers,
        &body,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains("paid"), "{answer}");
    let received = seen.lock().unwrap().clone();
    assert_eq!(
        received,
        [(
            Method::POST,
            format!("{BASE}/api/v1/PartnerP2P/Payout/a.b/x?ref=1")
        )]
    );
    assert_all_inside(&seen);
}

#[tokio::test]
async fn trace_and_connect_are_not_forwarded() {
    let (app, seen) = gateway().await;
    let partner = app
        .onboarded_partner("METHODS", "ops@methods.example")
        .await;
    let headers = format!("Authorization: Bearer {}\r\n", partner.public_key);
    let body = sign("{}", &partner.secret_key);
    let (status, answer) = raw_request(
        &app.address,
        "TRACE",
        "/api/v1/PartnerP2P/Payout/x",
        &headers,
        &body,
    )
    .await;
    assert_eq!(status, 405, "{answer}");
    assert!(answer.contains("method_not_allowed"), "{answer}");
    // A control that the upstream is reachable, then nothing but it arrived.
    let (status, _) = raw_request(
        &app.address,
        "POST",
        "/api/v1/PartnerP2P/Payout/x",
        &headers,
        &body,
    )
    .await;
    assert_eq!(status, 200);
    let methods: Vec<Method> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|(m, _)| m.clone())
        .collect();
    assert_eq!(methods, [Method::POST]);
}
