//! The gateway (SPEC §7.2), in front of a real upstream server that records what it receives.

use crate::helpers::*;
use axum::body::Bytes;
use axum::extract::{OriginalUri, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::IntoResponse;
use keyward_server::config::Upstream;
use serde_json::json;
use sha2::{Digest, Sha256};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the upstream received.
#[derive(Debug, Clone)]
struct Received {
    method: Method,
    uri: String,
    headers: HeaderMap,
    body: Bytes,
}

type Log = Arc<Mutex<Vec<Received>>>;

/// A large body the upstream streams back, and its SHA-256.
fn large_body() -> Vec<u8> {
    (0..6 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect()
}

async fn record(
    State(log): State<Log>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    log.lock().unwrap().push(Received {
        method,
        uri: uri.to_string(),
        headers: headers.clone(),
        body,
    });
    match uri.path() {
        "/api/v1/PartnerP2P/Large" => {
            let chunks = large_body()
                .chunks(64 * 1024)
                .map(|c| Ok::<_, std::io::Error>(Bytes::copy_from_slice(c)))
                .collect::<Vec<_>>();
            axum::body::Body::from_stream(futures::stream::iter(chunks)).into_response()
        }
        "/api/v1/PartnerP2P/Slow" => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            "late".into_response()
        }
        _ => {
            let partner = headers
                .get("keyward-partner-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            (
                StatusCode::CREATED,
                [
                    ("x-upstream", "yes"),
                    ("cache-control", "private, max-age=5"),
                ],
                axum::Json(json!({"paid_to": partner})),
            )
                .into_response()
        }
    }
}

/// The upstream on a random port, and what it received.
async fn spawn_upstream() -> (String, Log) {
    let log: Log = Arc::default();
    let app = axum::Router::new().fallback(record).with_state(log.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (address, log)
}

async fn gateway_to(upstream: &str, timeout_ms: u64) -> TestApp {
    let upstream = upstream_at(upstream, Duration::from_millis(timeout_ms), true);
    spawn_app_with(move |s| s.upstream = Some(upstream)).await
}

/// The gateway's settings for `url` under the default prefix.
fn upstream_at(url: &str, timeout: Duration, single_use: bool) -> Upstream {
    Upstream {
        url: url::Url::parse(url).unwrap(),
        prefixes: vec!["/api/v1/PartnerP2P/".into()],
        timeout,
        single_use,
        sandbox_url: None,
    }
}

impl TestApp {
    async fn through(
        &self,
        method: Method,
        path: &str,
        raw: &str,
        headers: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.address))
            .header("content-type", "application/json")
            .body(raw.to_owned());
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.unwrap()
    }
}

#[tokio::test]
async fn a_signed_post_arrives_unchanged_with_who_sent_it_and_nothing_spoofed() {
    let (upstream, log) = spawn_upstream().await;
    let app = gateway_to(&upstream, 5_000).await;
    let partner = app.onboarded_partner("GATE", "ops@gate.example").await;
    // Whitespace and escapes as the partner sent them: forwarded byte for byte.
    let raw = sign(
        r#"{"amount": "10.50", "note":"caf\u00e9"}"#,
        &partner.secret_key,
    );
    let auth = format!("Bearer {}", partner.public_key);

    let response = app
        .through(
            Method::POST,
            "/api/v1/PartnerP2P/Payout?ref=abc&x=1",
            &raw,
            &[
                ("authorization", &auth),
                ("Keyward-Partner-Id", "00000000-0000-0000-0000-000000000000"),
                ("KEYWARD-PARTNER-CODE", "EVIL"),
                ("keyward-key-id", "spoofed"),
                ("X-Forwarded-For", "6.6.6.6"),
                ("Forwarded", "for=6.6.6.6"),
                ("X-Custom", "kept"),
            ],
        )
        .await;

    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["x-upstream"], "yes");
    // The upstream's own headers are not overridden by keyward's defaults.
    assert_eq!(response.headers()["cache-control"], "private, max-age=5");
    let answer: serde_json::Value = response.json().await.unwrap();
    assert_eq!(answer["paid_to"], partner.partner_id.as_str());

    let received = log.lock().unwrap().clone();
    assert_eq!(received.len(), 1);
    let got = &received[0];
    assert_eq!(got.method, Method::POST);
    assert_eq!(got.uri, "/api/v1/PartnerP2P/Payout?ref=abc&x=1");
    assert_eq!(got.body.as_ref(), raw.as_bytes());
    let header = |name: &str| -> Vec<&str> {
        got.headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect()
    };
    assert_eq!(header("keyward-partner-id"), [partner.partner_id.as_str()]);
    assert_eq!(header("keyward-partner-code"), ["GATE"]);
    assert_eq!(header("keyward-key-id").len(), 1);
    assert_ne!(header("keyward-key-id"), ["spoofed"]);
    assert_eq!(header("x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(header("x-forwarded-proto"), ["http"]);
    assert!(header("forwarded").is_empty());
    assert_eq!(header("x-custom"), ["kept"]);
    assert_eq!(header("x-request-id").len(), 1);
}

#[tokio::test]
async fn invalid_requests_never_reach_the_upstream() {
    let (upstream, log) = spawn_upstream().await;
    let app = gateway_to(&upstream, 5_000).await;
    let partner = app.onboarded_partner("DENY", "ops@deny.example").await;
    let auth = format!("Bearer {}", partner.public_key);
    let path = "/api/v1/PartnerP2P/Payout";
    type Case<'a> = (String, Vec<(&'a str, &'a str)>, u16, &'a str);
    let cases: Vec<Case> = vec![
        (
            sign("{}", &partner.secret_key),
            vec![],
            401,
            "missing_authorization",
        ),
        (
            sign(r#"{"a":1}"#, &partner.secret_key).replace("\"a\":1", "\"a\":2"),
            vec![("authorization", auth.as_str())],
            401,
            "invalid_signature",
        ),
        (
            "{}".into(),
            vec![("authorization", auth.as_str())],
            400,
            "missing_fields",
        ),
        (
            "not json".into(),
            vec![("authorization", auth.as_str())],
            400,
            "invalid_json",
        ),
    ];
    for (raw, headers, status, code) in cases {
        let (got_status, got_code, _) =
            error_of(app.through(Method::POST, path, &raw, &headers).await).await;
        assert_eq!((got_status, got_code.as_str()), (status, code));
    }
    let plain = app
        .client
        .post(format!("{}{path}", app.address))
        .header("authorization", &auth)
        .body("amount=5")
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(plain).await.1, "unsupported_media_type");
    assert!(
        log.lock().unwrap().is_empty(),
        "nothing reached the upstream"
    );
}

#[tokio::test]
async fn a_replayed_post_is_refused_and_arrives_once_while_gets_may_repeat() {
    let (upstream, log) = spawn_upstream().await;
    let app = gateway_to(&upstream, 5_000).await;
    let partner = app.onboarded_partner("ONCE", "ops@once.example").await;
    let auth = format!("Bearer {}", partner.public_key);
    let raw = sign(r#"{"payout":"p-1"}"#, &partner.secret_key);
    let headers = [("authorization", auth.as_str())];
    let path = "/api/v1/PartnerP2P/Payout";

    assert_eq!(
        app.through(Method::POST, path, &raw, &headers)
            .await
            .status(),
        201
    );
    let reencoded = raw.replace(",", " , ");
    for again in [&raw, &reencoded] {
        let (status, code, _) =
            error_of(app.through(Method::POST, path, again, &headers).await).await;
        assert_eq!((status, code.as_str()), (409, "replayed_request"));
    }
    let read = sign(r#"{"q":"balance"}"#, &partner.secret_key);
    for _ in 0..2 {
        let response = app
            .through(
                Method::GET,
                "/api/v1/PartnerP2P/Balance?currency=USDT",
                &read,
                &headers,
            )
            .await;
        assert_eq!(response.status(), 201);
    }
    let received = log.lock().unwrap().clone();
    let posts = received.iter().filter(|r| r.method == Method::POST).count();
    assert_eq!(posts, 1);
    let gets: Vec<&str> = received
        .iter()
        .filter(|r| r.method == Method::GET)
        .map(|r| r.uri.as_str())
        .collect();
    assert_eq!(gets, ["/api/v1/PartnerP2P/Balance?currency=USDT"; 2]);
}

#[tokio::test]
async fn a_large_upstream_answer_is_streamed_back_intact() {
    let (upstream, _log) = spawn_upstream().await;
    let app = gateway_to(&upstream, 5_000).await;
    let partner = app.onboarded_partner("BIG", "ops@big.example").await;
    let auth = format!("Bearer {}", partner.public_key);
    let raw = sign("{}", &partner.secret_key);

    let response = app
        .through(
            Method::POST,
            "/api/v1/PartnerP2P/Large",
            &raw,
            &[("authorization", &auth)],
        )
        .await;

    assert_eq!(response.status(), 200);
    let body = response.bytes().await.unwrap();
    assert_eq!(body.len(), large_body().len());
    assert_eq!(Sha256::digest(&body), Sha256::digest(large_body()));
}

#[tokio::test]
async fn an_unreachable_upstream_is_502_and_a_slow_one_504() {
    // A port nothing listens on: bind one, then free it.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let app = gateway_to(&closed, 5_000).await;
    let partner = app.onboarded_partner("DOWN", "ops@down.example").await;
    let auth = format!("Bearer {}", partner.public_key);
    let raw = sign("{}", &partner.secret_key);
    let (status, code, _) = error_of(
        app.through(
            Method::POST,
            "/api/v1/PartnerP2P/Payout",
            &raw,
            &[("authorization", &auth)],
        )
        .await,
    )
    .await;
    assert_eq!((status, code.as_str()), (502, "upstream_unavailable"));

    let (upstream, log) = spawn_upstream().await;
    let app = gateway_to(&upstream, 300).await;
    let partner = app.onboarded_partner("SLOW", "ops@slow.example").await;
    let auth = format!("Bearer {}", partner.public_key);
    let raw = sign("{}", &partner.secret_key);
    let started = std::time::Instant::now();
    let (status, code, _) = error_of(
        app.through(
            Method::POST,
            "/api/v1/PartnerP2P/Slow",
            &raw,
            &[("authorization", &auth)],
        )
        .await,
    )
    .await;
    assert_eq!((status, code.as_str()), (504, "upstream_timeout"));
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(log.lock().unwrap().len(), 1, "it did reach the upstream");
}

/// The header deadline is for a connection with nothing to do: a request whose answer takes
/// longer (here a slow upstream), or a long answer, is not cut off by it.
#[tokio::test]
async fn an_answer_slower_than_the_header_deadline_is_not_cut_off() {
    let (upstream, _log) = spawn_upstream().await;
    let upstream = upstream_at(&upstream, Duration::from_secs(10), true);
    let app = spawn_app_with(move |s| {
        s.upstream = Some(upstream);
        s.connection_limits.header_read_timeout = Duration::from_millis(300);
    })
    .await;
    let partner = app
        .onboarded_partner("PATIENT", "ops@patient.example")
        .await;
    let auth = format!("Bearer {}", partner.public_key);
    let raw = sign("{}", &partner.secret_key);
    let response = app
        .through(
            Method::POST,
            "/api/v1/PartnerP2P/Slow",
            &raw,
            &[("authorization", &auth)],
        )
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "late");

    // 6 MiB streamed through the gateway, read in small pieces for longer than the deadline.
    // (Not for two deadlines: once hyper holds the last of an answer, what is left must be read
    // within two, and loopback buffers can take most of 6 MiB at once.)
    let raw = sign(r#"{"n":1}"#, &partner.secret_key);
    let mut response = app
        .through(
            Method::GET,
            "/api/v1/PartnerP2P/Large",
            &raw,
            &[("authorization", &auth)],
        )
        .await;
    assert_eq!(response.status(), 200);
    let started = std::time::Instant::now();
    let mut received = Vec::new();
    while let Some(chunk) = response.chunk().await.unwrap() {
        received.extend_from_slice(&chunk);
        if started.elapsed() < Duration::from_millis(450) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert!(started.elapsed() >= Duration::from_millis(450));
    assert_eq!(received, large_body());
}

#[tokio::test]
async fn keywards_own_routes_come_first_and_other_paths_are_not_forwarded() {
    let (upstream, log) = spawn_upstream().await;
    let app = gateway_to(&upstream, 5_000).await;
    let partner = app.onboarded_partner("OWN", "ops@own.example").await;

    // WhoAmI lives under the upstream prefix, but it is keyward's.
    let response = app.whoami(&partner).await;
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["data"]["partner_code"], "OWN");
    let (status, code, _) = error_of(app.through(Method::GET, WHOAMI, "{}", &[]).await).await;
    assert_eq!((status, code.as_str()), (405, "method_not_allowed"));

    for path in [
        "/api/v2/Other",
        "/metrics",
        "/internal/v1/verify",
        "/api/v1/PartnerP2",
    ] {
        let (status, code, _) = error_of(app.through(Method::POST, path, "{}", &[]).await).await;
        assert_eq!((status, code.as_str()), (404, "not_found"), "{path}");
    }
    assert!(log.lock().unwrap().is_empty());

    // A trailing slash is forwarded as sent.
    let auth = format!("Bearer {}", partner.public_key);
    let raw = sign("{}", &partner.secret_key);
    let response = app
        .through(
            Method::POST,
            "/api/v1/PartnerP2P/Payout/",
            &raw,
            &[("authorization", &auth)],
        )
        .await;
    assert_eq!(response.status(), 201);
    assert_eq!(log.lock().unwrap()[0].uri, "/api/v1/PartnerP2P/Payout/");
}

/// The gateway is served without the router for paths none of keyward's routes serves
/// (`http/public_router.rs`): with a prefix that covers every path, each of keyward's own
/// routes is still keyward's, with each of its methods and with any other, and the paths
/// around them are forwarded.
#[tokio::test]
async fn with_a_prefix_covering_every_path_keywards_own_routes_are_still_its_own() {
    let (upstream, log) = spawn_upstream().await;
    let mut everything = upstream_at(&upstream, Duration::from_secs(5), false);
    everything.prefixes = vec!["/".into()];
    let app = spawn_app_with(move |s| {
        s.upstream = Some(everything);
        // Every optional route on (its key list is never fetched here).
        s.github_keys_url = Some("http://127.0.0.1:9/keys".parse().unwrap());
    })
    .await;
    let partner = app.onboarded_partner("EVERY", "ops@every.example").await;
    let auth = format!("Bearer {}", partner.public_key);
    let signed = sign("{}", &partner.secret_key);
    for (path, _) in keyward_core::wire::paths::PUBLIC_ROUTES {
        let path = path.replace("{token}", &"A".repeat(43));
        for method in [Method::GET, Method::POST, Method::PUT, Method::HEAD] {
            app.through(method, &path, &signed, &[("authorization", &auth)])
                .await;
        }
        // With a trailing slash, which keyward trims before routing.
        app.through(
            Method::POST,
            &format!("{path}/"),
            &signed,
            &[("authorization", &auth)],
        )
        .await;
    }
    let forwarded: Vec<String> = log.lock().unwrap().iter().map(|r| r.uri.clone()).collect();
    assert!(
        forwarded.is_empty(),
        "keyward's own paths were forwarded: {forwarded:?}"
    );

    // The control: the paths beside them are the gateway's, and arrive as sent.
    for path in [
        "/api/v1/PartnerP2P/WhoAmI/x",
        "/api/v1/PartnerP2P/WhoAm",
        "/healthz/x",
        "/link/a/b",
        "/api/v1/PartnerP2P/Payout",
    ] {
        let response = app
            .through(Method::POST, path, &signed, &[("authorization", &auth)])
            .await;
        assert_eq!(response.status(), 201, "{path}");
    }
    let forwarded: Vec<String> = log.lock().unwrap().iter().map(|r| r.uri.clone()).collect();
    assert_eq!(
        forwarded,
        [
            "/api/v1/PartnerP2P/WhoAmI/x",
            "/api/v1/PartnerP2P/WhoAm",
            "/healthz/x",
            "/link/a/b",
            "/api/v1/PartnerP2P/Payout",
        ]
    );
}

#[tokio::test]
async fn a_head_request_gets_the_length_a_get_would() {
    let (upstream, log) = spawn_upstream().await;
    let app = spawn_app_with(move |s| {
        s.upstream = Some(upstream_at(&upstream, Duration::from_secs(5), false))
    })
    .await;
    let partner = app.onboarded_partner("HEADS", "ops@heads.example").await;
    let auth = format!("Bearer {}", partner.public_key);
    let signed = sign("{}", &partner.secret_key);
    let path = "/api/v1/PartnerP2P/Payout";
    let got = app
        .through(Method::GET, path, &signed, &[("authorization", &auth)])
        .await;
    assert_eq!(got.status(), 201);
    let length = got.bytes().await.unwrap().len();
    assert!(length > 0);
    for _ in 0..2 {
        let head = app
            .through(Method::HEAD, path, &signed, &[("authorization", &auth)])
            .await;
        assert_eq!(head.status(), 201);
        let said = head.headers().get("content-length").cloned();
        assert_eq!(
            said.as_ref().map(|v| v.to_str().unwrap()),
            Some(length.to_string().as_str())
        );
        assert!(head.bytes().await.unwrap().is_empty());
    }
    let methods: Vec<Method> = log
        .lock()
        .unwrap()
        .iter()
        .map(|r| r.method.clone())
        .collect();
    assert_eq!(methods, [Method::GET, Method::HEAD, Method::HEAD]);
}

#[tokio::test]
async fn without_an_upstream_the_prefix_is_an_ordinary_404() {
    let app = spawn_app().await;
    let (status, code, _) = error_of(
        app.through(Method::POST, "/api/v1/PartnerP2P/Payout", "{}", &[])
            .await,
    )
    .await;
    assert_eq!((status, code.as_str()), (404, "not_found"));
}

#[tokio::test]
async fn a_retiring_key_is_forwarded_with_its_expiry_until_it_expires() {
    let (upstream, log) = spawn_upstream().await;
    let app = gateway_to(&upstream, 5_000).await;
    let email = "ops@gateretire.example";
    let old = app.onboarded_partner("GATERETIRE", email).await;
    let body = json!({"email": email, "partner_code": "GATERETIRE", "overlap_seconds": 600});
    let response = app
        .signed(
            keyward_core::wire::paths::REGENERATE,
            &body,
            &old.public_key,
            &old.secret_key,
        )
        .await;
    assert_eq!(response.status(), 200);
    let link = app.link_in_email(email, 2).await;
    let new = app.redeem(&link, "GATERETIRE").await;

    let send = |partner: &Partner, n: u32| {
        let raw = sign(&format!(r#"{{"n":{n}}}"#), &partner.secret_key);
        let auth = format!("Bearer {}", partner.public_key);
        let app = &app;
        async move {
            app.through(
                Method::POST,
                "/api/v1/PartnerP2P/Payout",
                &raw,
                &[("authorization", &auth)],
            )
            .await
        }
    };
    let response = send(&old, 1).await;
    assert_eq!(response.status(), 201);
    let expires = response.headers().get("keyward-key-expires").cloned();
    assert!(expires.is_some(), "the partner is told its key is retiring");
    // The upstream is told too.
    let received = log.lock().unwrap().last().cloned().unwrap();
    assert_eq!(
        received.headers.get("keyward-key-expires"),
        expires.as_ref()
    );
    let response = send(&new, 2).await;
    assert_eq!(response.status(), 201);
    assert!(response.headers().get("keyward-key-expires").is_none());
    let received = log.lock().unwrap().last().cloned().unwrap();
    assert!(received.headers.get("keyward-key-expires").is_none());

    app.clock.advance(chrono::TimeDelta::seconds(601));
    let before = log.lock().unwrap().len();
    let (status, code, _) = error_of(send(&old, 3).await).await;
    assert_eq!((status, code.as_str()), (401, "expired_key"));
    assert_eq!(log.lock().unwrap().len(), before, "never forwarded");
}

#[tokio::test]
async fn keyward_chooses_the_request_id_it_logs_answers_and_forwards() {
    let (upstream, log) = spawn_upstream().await;
    let app = gateway_to(&upstream, 5_000).await;
    let partner = app.onboarded_partner("REQID", "ops@reqid.example").await;
    let auth = format!("Bearer {}", partner.public_key);
    let long = "x".repeat(4000);
    for chosen in [long.as_str(), "mine-123"] {
        let raw = sign(
            &format!(r#"{{"n":"{}"}}"#, uuid_like()),
            &partner.secret_key,
        );
        let response = app
            .through(
                Method::POST,
                "/api/v1/PartnerP2P/Payout",
                &raw,
                &[("authorization", &auth), ("x-request-id", chosen)],
            )
            .await;
        assert_eq!(response.status(), 201);
        let answered = response.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_owned();
        assert_ne!(
            answered, chosen,
            "a client that is not a trusted proxy chose the id"
        );
        assert!(uuid::Uuid::parse_str(&answered).is_ok(), "{answered}");
        let forwarded = log.lock().unwrap().last().unwrap().headers["x-request-id"].clone();
        assert_eq!(
            forwarded,
            answered.as_str(),
            "the upstream gets keyward's id"
        );
    }
}

#[tokio::test]
async fn from_a_trusted_proxy_a_bounded_request_id_and_only_the_configured_header_are_believed() {
    let (upstream, log) = spawn_upstream().await;
    let up = upstream_at(&upstream, Duration::from_secs(5), false);
    let app = spawn_app_with(move |s| {
        s.upstream = Some(up);
        s.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
        s.forwarded_header = keyward_server::config::ForwardedHeader::Forwarded;
    })
    .await;
    let partner = app
        .onboarded_partner("PROXIED", "ops@proxied.example")
        .await;
    let auth = format!("Bearer {}", partner.public_key);
    let raw = sign("{}", &partner.secret_key);
    let too_long = "p".repeat(129);
    type Case<'a> = (&'a [(&'a str, &'a str)], bool, &'a str);
    let cases: [Case; 4] = [
        (&[("x-request-id", "proxy-abc-1")], true, "http"),
        (&[("x-request-id", &too_long)], false, "http"),
        // X-Forwarded-Proto is not the configured header: not believed.
        (
            &[("x-request-id", "bad id"), ("x-forwarded-proto", "https")],
            false,
            "http",
        ),
        (
            &[("forwarded", "for=127.0.0.1;proto=https")],
            false,
            "https",
        ),
    ];
    for (headers, kept, proto) in cases {
        let mut all = vec![("authorization", auth.as_str())];
        all.extend_from_slice(headers);
        let response = app
            .through(Method::GET, "/api/v1/PartnerP2P/Status", &raw, &all)
            .await;
        assert_eq!(response.status(), 201);
        let answered = response.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_owned();
        let theirs = headers
            .iter()
            .find(|(n, _)| *n == "x-request-id")
            .map(|(_, v)| *v);
        assert_eq!(Some(answered.as_str()) == theirs, kept, "{headers:?}");
        let received = log.lock().unwrap().last().unwrap().clone();
        assert_eq!(received.headers["x-forwarded-proto"], proto, "{headers:?}");
        assert_eq!(received.headers["x-request-id"], answered.as_str());
    }
}

#[tokio::test]
async fn with_exact_numbers_digits_the_signature_does_not_cover_are_refused_everywhere() {
    for exact in [false, true] {
        let (upstream, log) = spawn_upstream().await;
        let up = upstream_at(&upstream, Duration::from_secs(5), false);
        let app = spawn_app_with(move |s| {
            s.upstream = Some(up);
            s.exact_numbers = exact;
        })
        .await;
        let partner = app.onboarded_partner("DIGITS", "ops@digits.example").await;
        let auth = format!("Bearer {}", partner.public_key);
        // The reviewer's case: signed with one number, sent with another that has the same
        // ECMAScript form.
        let signed = sign(
            r#"{"big":12345678901234567000,"ok":1.50}"#,
            &partner.secret_key,
        );
        let sent = signed.replace("12345678901234567000", "12345678901234567891");
        let whoami = app.post_raw(WHOAMI, &sent, Some(&auth)).await;
        let through = app
            .through(
                Method::POST,
                "/api/v1/PartnerP2P/Payout",
                &sent,
                &[("authorization", &auth)],
            )
            .await;
        let token = app.service_token("payments").await;
        let verdict: serde_json::Value = app
            .verify(
                Some(&token),
                &json!({"authorization": auth, "body": sent, "client_ip": "127.0.0.1"}),
            )
            .await
            .json()
            .await
            .unwrap();
        if exact {
            let (status, code, body) = error_of(whoami).await;
            assert_eq!((status, code.as_str()), (400, "invalid_field"));
            assert_eq!(body["errors"][0]["field"], "big");
            let (status, code, _) = error_of(through).await;
            assert_eq!((status, code.as_str()), (400, "invalid_field"));
            assert_eq!(verdict["data"]["valid"], false);
            assert_eq!(verdict["data"]["error"]["code"], "invalid_field");
            assert!(
                log.lock().unwrap().is_empty(),
                "nothing reached the upstream"
            );
            // Exact numbers in another spelling (1.50) and the same value as a string pass.
            let fine = sign(
                r#"{"big":"12345678901234567891","ok":1.50}"#,
                &partner.secret_key,
            );
            assert_eq!(app.post_raw(WHOAMI, &fine, Some(&auth)).await.status(), 200);
        } else {
            // The published behaviour: the message is the same, so the signature holds.
            assert_eq!(whoami.status(), 200);
            assert_eq!(through.status(), 201);
            assert_eq!(verdict["data"]["valid"], true);
        }
    }
}

#[tokio::test]
async fn gateway_traffic_and_refused_link_pages_are_counted_under_their_own_labels() {
    let (upstream, _log) = spawn_upstream().await;
    let app = gateway_to(&upstream, 5_000).await;
    let email = "ops@labels.example";
    let partner = app.onboarded_partner("LABELS", email).await;
    let auth = format!("Bearer {}", partner.public_key);
    let raw = sign(r#"{"n":"labels"}"#, &partner.secret_key);
    let forwarded = app
        .through(
            Method::POST,
            "/api/v1/PartnerP2P/Payout",
            &raw,
            &[("authorization", &auth)],
        )
        .await;
    assert_eq!(forwarded.status(), 201);
    let junk = app
        .client
        .get(format!("{}/wp-login.php", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(junk.status(), 404);
    // A wrong partner code typed on a link page: 422, counted as what it is.
    assert_eq!(app.regenerate(&partner, email).await.status(), 200);
    let link = app.link_in_email(email, 2).await;
    let page = app
        .client
        .post(&link)
        .form(&[("partner_code", "WRONG")])
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 422);

    let metrics = app.metrics_text().await;
    let count = |labels: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(&format!("keyward_http_requests_total{{{labels}}}")))
            .unwrap_or_else(|| panic!("no {labels} in\n{metrics}"))
            .to_owned()
    };
    count(r#"route="gateway",status="201",code="ok""#);
    count(r#"route="unmatched",status="404",code="not_found""#);
    count(r#"route="/link/{token}",status="422",code="partner_code_mismatch""#);
    assert!(
        !metrics.contains(r#"route="unmatched",status="201""#),
        "{metrics}"
    );
}

/// A hand-written HTTP/1.1 upstream that shows how keyward uses its connections: it counts
/// the connections it accepts, reports each request's head, answers `200 ok`, and either
/// keeps each connection open or closes it after one answer without saying so (no
/// `Connection: close`), as an upstream's idle timeout looks from keyward's side.
struct RawUpstream {
    url: String,
    accepted: Arc<std::sync::atomic::AtomicUsize>,
    heads: tokio::sync::mpsc::UnboundedReceiver<String>,
    closed: tokio::sync::mpsc::UnboundedReceiver<()>,
}

/// Reads what has arrived onto `buffer`; `false` when the connection has ended.
async fn read_more(stream: &mut tokio::net::TcpStream, buffer: &mut Vec<u8>) -> bool {
    use tokio::io::AsyncReadExt;
    let mut chunk = [0u8; 4096];
    match stream.read(&mut chunk).await {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buffer.extend_from_slice(&chunk[..n]);
            true
        }
    }
}

async fn spawn_raw_upstream(close_after_one: bool) -> RawUpstream {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (head_tx, heads) = tokio::sync::mpsc::unbounded_channel();
    let (closed_tx, closed) = tokio::sync::mpsc::unbounded_channel();
    let counter = accepted.clone();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let (head_tx, closed_tx) = (head_tx.clone(), closed_tx.clone());
            tokio::spawn(async move {
                let mut buffer = Vec::new();
                loop {
                    // One request: its head, then as many body bytes as it announces.
                    let head_end = loop {
                        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                            break end + 4;
                        }
                        if !read_more(&mut stream, &mut buffer).await {
                            return;
                        }
                    };
                    let head = String::from_utf8_lossy(&buffer[..head_end]).to_string();
                    let length: usize = head
                        .lines()
                        .filter_map(|l| l.split_once(':'))
                        .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
                        .map_or(0, |(_, v)| v.trim().parse().unwrap());
                    while buffer.len() < head_end + length {
                        if !read_more(&mut stream, &mut buffer).await {
                            return;
                        }
                    }
                    buffer.drain(..head_end + length);
                    head_tx.send(head).unwrap();
                    stream
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                        .await
                        .unwrap();
                    if close_after_one {
                        drop(stream);
                        closed_tx.send(()).unwrap();
                        return;
                    }
                }
            });
        }
    });
    RawUpstream {
        url,
        accepted,
        heads,
        closed,
    }
}

#[tokio::test]
async fn the_upstream_is_asked_in_origin_form_with_its_host_on_one_kept_alive_connection() {
    let mut upstream = spawn_raw_upstream(false).await;
    let app = gateway_to(&upstream.url, 5_000).await;
    let partner = app.onboarded_partner("KEEP", "ops@keep.example").await;
    let auth = format!("Bearer {}", partner.public_key);
    let read = sign(r#"{"q":"balance"}"#, &partner.secret_key);
    let host = upstream.url.trim_start_matches("http://").to_owned();

    for _ in 0..3 {
        let response = app
            .through(
                Method::GET,
                "/api/v1/PartnerP2P/Balance?currency=USDT",
                &read,
                &[("authorization", &auth)],
            )
            .await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.text().await.unwrap(), "ok");
        let head = upstream.heads.recv().await.unwrap();
        assert!(
            head.starts_with("GET /api/v1/PartnerP2P/Balance?currency=USDT HTTP/1.1\r\n"),
            "{head}"
        );
        let hosts: Vec<&str> = head
            .lines()
            .filter_map(|l| l.split_once(':'))
            .filter(|(name, _)| name.eq_ignore_ascii_case("host"))
            .map(|(_, value)| value.trim())
            .collect();
        assert_eq!(hosts, [host.as_str()]);
    }
    // Each answer was read to its end, so its connection served the next request.
    assert_eq!(
        upstream.accepted.load(std::sync::atomic::Ordering::SeqCst),
        1
    );
}

#[tokio::test]
async fn a_connection_the_upstream_closed_while_idle_is_replaced_not_reported() {
    let mut upstream = spawn_raw_upstream(true).await;
    let app = gateway_to(&upstream.url, 5_000).await;
    let partner = app.onboarded_partner("IDLE", "ops@idle.example").await;
    let auth = format!("Bearer {}", partner.public_key);
    let read = sign(r#"{"q":"balance"}"#, &partner.secret_key);

    for round in 1..=3 {
        let response = app
            .through(
                Method::GET,
                "/api/v1/PartnerP2P/Balance",
                &read,
                &[("authorization", &auth)],
            )
            .await;
        assert_eq!(response.status(), 200, "round {round}");
        assert_eq!(response.text().await.unwrap(), "ok");
        // The upstream has closed the connection keyward keeps for the next request.
        upstream.closed.recv().await.unwrap();
    }
    assert_eq!(
        upstream.accepted.load(std::sync::atomic::Ordering::SeqCst),
        3
    );
}
