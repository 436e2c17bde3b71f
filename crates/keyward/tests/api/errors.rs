//! Each error code of SPEC §4 on the routes that produce it, always in the envelope.

use crate::helpers::*;
use serde_json::json;

async fn expect(response: reqwest::Response, status: u16, code: &str) -> serde_json::Value {
    let (got_status, got_code, body) = error_of(response).await;
    assert_eq!((got_status, got_code.as_str()), (status, code), "{body}");
    body
}

#[tokio::test]
async fn malformed_bodies_get_400_with_the_right_code() {
    let app = spawn_app().await;
    let cases = [
        ("{\"partner_code\":", "invalid_json"),
        ("[1,2]", "not_an_object"),
        ("\"text\"", "not_an_object"),
        (
            r#"{"partner_code":"A","partner_code":"B","email":"a@b.example"}"#,
            "duplicate_member",
        ),
        (
            r#"{"x":{"y":1,"y":2},"partner_code":"A","email":"a@b.example"}"#,
            "duplicate_member",
        ),
        ("\u{feff}{}", "invalid_json"),
    ];
    for (body, code) in cases {
        expect(app.post_raw(ONBOARD, body, None).await, 400, code).await;
    }
}

#[tokio::test]
async fn every_bad_field_is_listed_at_once() {
    let app = spawn_app().await;
    let body = expect(
        app.post_json(ONBOARD, &json!({})).await,
        400,
        "missing_fields",
    )
    .await;
    assert_eq!(
        body["errors"],
        json!([{"field": "partner_code", "problem": "missing"}, {"field": "email", "problem": "missing"}])
    );
    let body = expect(
        app.post_json(ONBOARD, &json!({"partner_code": "bad code!", "email": 7}))
            .await,
        400,
        "invalid_field",
    )
    .await;
    let errors = body["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 2);
    assert_eq!(errors[0]["field"], "partner_code");
    assert_eq!(
        errors[1],
        json!({"field": "email", "problem": "must be a string"})
    );
    let body = expect(
        app.post_json(
            ONBOARD,
            &json!({"partner_code": "OK", "email": "not-an-email"}),
        )
        .await,
        400,
        "invalid_field",
    )
    .await;
    assert_eq!(body["errors"][0]["field"], "email");
    // Missing and invalid together: missing_fields, both listed.
    let body = expect(
        app.post_json(ONBOARD, &json!({"partner_code": "x y"}))
            .await,
        400,
        "missing_fields",
    )
    .await;
    assert_eq!(body["errors"].as_array().unwrap().len(), 2);
    // A partner code of 65 characters is too long.
    let long = "A".repeat(65);
    expect(
        app.post_json(
            ONBOARD,
            &json!({"partner_code": long, "email": "a@b.example"}),
        )
        .await,
        400,
        "invalid_field",
    )
    .await;
}

#[tokio::test]
async fn content_type_and_size_are_checked() {
    let app = spawn_app().await;
    let url = format!("{}{ONBOARD}", app.address);
    let body = json!({"partner_code": "CT", "email": "ct@example.com"}).to_string();
    let no_type = app
        .client
        .post(&url)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    expect(no_type, 415, "unsupported_media_type").await;
    let text = app
        .client
        .post(&url)
        .header("Content-Type", "text/plain")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    expect(text, 415, "unsupported_media_type").await;
    let charset = app
        .client
        .post(&url)
        .header("Content-type", "application/json; charset=utf-8")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(charset.status(), 200);
    let big = format!(
        r#"{{"partner_code":"BIG","email":"a@b.example","pad":"{}"}}"#,
        "x".repeat(64 * 1024)
    );
    expect(
        app.post_raw(ONBOARD, &big, None).await,
        413,
        "body_too_large",
    )
    .await;
    // Just under the limit is fine.
    let fits = format!(
        r#"{{"partner_code":"FITS","email":"a@b.example","pad":"{}"}}"#,
        "x".repeat(60 * 1024)
    );
    assert_eq!(app.post_raw(ONBOARD, &fits, None).await.status(), 200);
}

#[tokio::test]
async fn unknown_routes_and_methods_get_the_envelope() {
    let app = spawn_app().await;
    let cases = [
        (reqwest::Method::GET, "/api/v1/nothing", 404, "not_found"),
        (reqwest::Method::GET, ONBOARD, 405, "method_not_allowed"),
        (reqwest::Method::DELETE, WHOAMI, 405, "method_not_allowed"),
    ];
    for (method, path, status, code) in cases {
        let response = app
            .client
            .request(method, format!("{}{path}", app.address))
            .send()
            .await
            .unwrap();
        expect(response, status, code).await;
    }
}

#[tokio::test]
async fn authentication_failures_have_their_codes_in_order() {
    let app = spawn_app().await;
    let partner = app.onboarded_partner("AUTH", "a@auth.example").await;
    let signed = sign("{}", &partner.secret_key);

    expect(
        app.post_raw(WHOAMI, &signed, None).await,
        401,
        "missing_authorization",
    )
    .await;
    for header in [
        "Bearer",
        "Basic abc",
        &partner.public_key,
        "Bearer pk_partner_tooshort",
        &format!("Bearer {}", partner.secret_key),
    ] {
        expect(
            app.post_raw(WHOAMI, &signed, Some(header)).await,
            401,
            "malformed_authorization",
        )
        .await;
    }
    // Two Authorization headers, even both valid: which one counts is not the client's choice.
    let auth = format!("Bearer {}", partner.public_key);
    let twice = app
        .client
        .post(format!("{}{WHOAMI}", app.address))
        .header("content-type", "application/json")
        .header("authorization", &auth)
        .header("authorization", &auth)
        .body(signed.clone())
        .send()
        .await
        .unwrap();
    expect(twice, 401, "malformed_authorization").await;
    // A well-formed key (valid checksum) that was never issued.
    let stranger = keyward_core::KeyPair::generate(&mut rand::rngs::OsRng);
    expect(
        app.post_raw(
            WHOAMI,
            &signed,
            Some(&format!("Bearer {}", stranger.public)),
        )
        .await,
        401,
        "unknown_key",
    )
    .await;
    // A wrong signature, and a signature that is not hex at all.
    let other = keyward_core::KeyPair::generate(&mut rand::rngs::OsRng);
    let bad = sign("{}", secrecy::ExposeSecret::expose_secret(&other.secret));
    let auth = format!("Bearer {}", partner.public_key);
    expect(
        app.post_raw(WHOAMI, &bad, Some(&auth)).await,
        401,
        "invalid_signature",
    )
    .await;
    expect(
        app.post_raw(WHOAMI, r#"{"signature":"zz"}"#, Some(&auth))
            .await,
        401,
        "invalid_signature",
    )
    .await;
    let body = expect(
        app.post_raw(WHOAMI, "{}", Some(&auth)).await,
        400,
        "missing_fields",
    )
    .await;
    assert_eq!(
        body["errors"],
        json!([{"field": "signature", "problem": "missing"}])
    );
    expect(
        app.post_raw(WHOAMI, r#"{"signature":12}"#, Some(&auth))
            .await,
        400,
        "invalid_field",
    )
    .await;

    // Freshness: a timestamp ten minutes old is stale; a non-numeric one is invalid.
    let old = chrono::Utc::now().timestamp_millis() - 600_000;
    let stale = sign(&json!({"timestamp": old}).to_string(), &partner.secret_key);
    expect(
        app.post_raw(WHOAMI, &stale, Some(&auth)).await,
        401,
        "stale_request",
    )
    .await;
    let odd = sign(
        &json!({"timestamp": "yesterday"}).to_string(),
        &partner.secret_key,
    );
    expect(
        app.post_raw(WHOAMI, &odd, Some(&auth)).await,
        400,
        "invalid_field",
    )
    .await;
}

#[tokio::test]
async fn regeneration_checks_partner_and_email_after_the_signature() {
    let app = spawn_app().await;
    let partner = app.onboarded_partner("OWNER", "o@owner.example").await;
    app.onboarded_partner("NEIGHBOUR", "n@neighbour.example")
        .await;
    let body = json!({"email": "o@owner.example", "partner_code": "NEIGHBOUR"});
    expect(
        app.signed(REGENERATE, &body, &partner.public_key, &partner.secret_key)
            .await,
        403,
        "partner_mismatch",
    )
    .await;
    let body = json!({"email": "n@neighbour.example", "partner_code": "OWNER"});
    expect(
        app.signed(REGENERATE, &body, &partner.public_key, &partner.secret_key)
            .await,
        403,
        "email_mismatch",
    )
    .await;
    // Case does not matter for either.
    let body = json!({"email": "O@OWNER.example", "partner_code": "owner"});
    assert_eq!(
        app.signed(REGENERATE, &body, &partner.public_key, &partner.secret_key)
            .await
            .status(),
        200
    );
    // With Authorization, a missing signature is a field problem.
    let body = expect(
        app.post_raw(
            REGENERATE,
            r#"{"email":"o@owner.example","partner_code":"OWNER"}"#,
            Some(&format!("Bearer {}", partner.public_key)),
        )
        .await,
        400,
        "missing_fields",
    )
    .await;
    assert_eq!(body["errors"][0]["field"], "signature");
}

/// Runs the operator CLI against the test's database (a real process on the same SQLite file).
fn keyward_cli(app: &TestApp, args: &[&str]) -> String {
    let output = app.cli(args);
    assert!(
        output.status.success(),
        "keyward {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test]
async fn a_suspended_partner_and_a_disallowed_ip_get_403() {
    let app = spawn_app().await;
    let partner = app.onboarded_partner("GUARDED", "g@guarded.example").await;

    keyward_cli(&app, &["partner", "allow-ips", "GUARDED", "192.0.2.0/24"]);
    expect(app.whoami(&partner).await, 403, "ip_not_allowed").await;
    keyward_cli(&app, &["partner", "allow-ips", "GUARDED", "127.0.0.1"]);
    assert_eq!(app.whoami(&partner).await.status(), 200);

    keyward_cli(&app, &["partner", "suspend", "GUARDED"]);
    expect(app.whoami(&partner).await, 403, "partner_suspended").await;
    let shown = keyward_cli(&app, &["partner", "show", "guarded"]);
    assert!(shown.contains("suspended"), "{shown}");
    assert!(
        shown.contains("onboarding_link_redeemed") && shown.contains("partner_suspended"),
        "{shown}"
    );
    keyward_cli(&app, &["partner", "activate", "GUARDED"]);
    assert_eq!(app.whoami(&partner).await.status(), 200);
}

#[tokio::test]
async fn a_trusted_proxy_forwards_the_client_address_and_others_are_ignored() {
    /// A signed WhoAmI that claims, through `X-Forwarded-For`, to come from `xff`.
    async fn whoami_via(app: &TestApp, partner: &Partner, xff: &str) -> u16 {
        let response = app
            .client
            .post(format!("{}{WHOAMI}", app.address))
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {}", partner.public_key))
            .header("x-forwarded-for", xff)
            .body(sign("{}", &partner.secret_key))
            .send()
            .await
            .unwrap();
        response.status().as_u16()
    }

    let app = spawn_app_with(|s| s.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()]).await;
    let partner = app.onboarded_partner("PROXIED", "p@proxied.example").await;
    keyward_cli(&app, &["partner", "allow-ips", "PROXIED", "192.0.2.0/24"]);
    assert_eq!(whoami_via(&app, &partner, "192.0.2.9").await, 200);
    // The client spoofs an allowed address in front; the proxy appends the real one.
    assert_eq!(
        whoami_via(&app, &partner, "192.0.2.9, 198.51.100.7").await,
        403
    );

    let untrusted = spawn_app().await;
    let partner = untrusted
        .onboarded_partner("DIRECT", "d@direct.example")
        .await;
    keyward_cli(
        &untrusted,
        &["partner", "allow-ips", "DIRECT", "192.0.2.0/24"],
    );
    assert_eq!(
        whoami_via(&untrusted, &partner, "192.0.2.9").await,
        403,
        "X-Forwarded-For from an untrusted peer is ignored"
    );
}

#[tokio::test]
async fn hostile_host_headers_never_reach_an_emailed_link() {
    let app = spawn_app_with(|s| {
        s.public_url =
            keyward_server::config::PublicUrl::parse("https://keys.exchange.example").unwrap();
        s.public_url_is_default = false;
    })
    .await;
    let response = app
        .client
        .post(format!("{}{ONBOARD}", app.address))
        .header("content-type", "application/json")
        .header("host", "evil.example")
        .header("x-forwarded-host", "evil.example")
        .header("forwarded", "host=evil.example")
        .body(json!({"partner_code": "HOSTILE", "email": "h@hostile.example"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let emails = app.wait_for_emails("h@hostile.example", 1).await;
    assert!(!emails[0].text.contains("evil"));
    assert!(!emails[0].html.contains("evil"));
    assert!(link_in_text(&emails[0].text).starts_with("https://keys.exchange.example/link/"));
}

#[tokio::test]
async fn readiness_reports_storage() {
    let app = spawn_app().await;
    assert_eq!(
        app.client
            .get(format!("{}/readyz", app.address))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    app.state.store.close().await;
    let response = app
        .client
        .get(format!("{}/readyz", app.address))
        .send()
        .await
        .unwrap();
    expect(response, 503, "unavailable").await;
}

#[tokio::test]
async fn the_openapi_document_describes_every_route_and_every_code() {
    // Every optional route on (GitHub's secret scanning; its key list is never fetched here).
    let app = spawn_app_with(|s| {
        s.github_keys_url = Some("http://127.0.0.1:9/keys".parse().unwrap());
    })
    .await;
    let doc: serde_json::Value = app
        .client
        .get(format!("{}/openapi.json", app.address))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    // The document and the router, held to one list in both directions.
    let documented: Vec<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(move |method| (path.clone(), method.clone()))
        })
        .collect();
    let mut listed = Vec::new();
    for (path, methods) in keyward_core::wire::paths::PUBLIC_ROUTES {
        for method in *methods {
            listed.push((path.to_string(), method.to_string()));
            let concrete = path.replace("{token}", &"A".repeat(43));
            let response = app
                .client
                .request(
                    method.to_uppercase().parse().unwrap(),
                    format!("{}{concrete}", app.address),
                )
                .header("content-type", "application/json")
                .body("{}")
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let text = response.text().await.unwrap();
            assert!(
                !(status == 405 || (status == 404 && text.contains("\"not_found\""))),
                "{method} {path} is not served: {status} {text}"
            );
            if !keyward_core::wire::paths::NOT_DOCUMENTED.contains(path) {
                assert!(
                    documented.contains(&(path.to_string(), method.to_string())),
                    "{method} {path} is served but not documented"
                );
            }
        }
    }
    for operation in &documented {
        assert!(
            listed.contains(operation),
            "{operation:?} is documented but not a route"
        );
    }
    // And the router serves no path but the listed ones: what it records as it is built
    // (every path it answers, by construction) is the list.
    let (_, own) = keyward_server::http::router(app.state.clone());
    let mut served: Vec<&str> = own.templates().to_vec();
    served.sort_unstable();
    served.dedup();
    let mut paths: Vec<&str> = keyward_core::wire::paths::PUBLIC_ROUTES
        .iter()
        .map(|(path, _)| *path)
        .collect();
    paths.sort_unstable();
    assert_eq!(served, paths);
    for internal in ["/metrics", "/internal/v1/verify"] {
        assert!(doc["paths"][internal].is_null(), "{internal} is public");
    }
    assert!(
        doc["paths"]["/link/{token}"]["get"].is_object()
            && doc["paths"]["/link/{token}"]["post"].is_object()
    );
    let codes: Vec<&str> = doc["components"]["schemas"]["ErrorCode"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c.as_str())
        .collect();
    for code in keyward_core::ErrorCode::ALL {
        assert!(
            codes.contains(&code.as_str()),
            "{code} is not in the document"
        );
    }
    assert_eq!(codes.len(), keyward_core::ErrorCode::ALL.len());
    assert!(doc["components"]["securitySchemes"]["partner_key"].is_object());

    let internal: serde_json::Value = app
        .client
        .get(format!("{}/internal/openapi.json", app.internal_address))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(internal["openapi"], "3.1.0");
    assert!(internal["paths"]["/internal/v1/verify"]["post"].is_object());
    assert!(internal["paths"]["/metrics"]["get"].is_object());
    assert!(internal["components"]["securitySchemes"]["service_token"].is_object());
}

/// `/healthz`, WhoAmI and the verify API are served without axum's router (`http::Routes`):
/// every other method and spelling goes through the router, and both ways give the same
/// answers, limits, headers and metrics.
#[tokio::test]
async fn the_routes_served_directly_answer_as_the_router_would() {
    let app = spawn_app().await;
    let partner = app.onboarded_partner("DIRECT", "a@direct.example").await;
    let token = app.service_token("direct").await;
    let url = |path: &str| format!("{}{path}", app.address);

    // The direct ways, as spelled and with a trailing slash; the edge's headers on each.
    let healthz = app.client.get(url("/healthz/")).send().await.unwrap();
    assert_eq!(healthz.status(), 200);
    let whoami = app.whoami(&partner).await;
    assert_eq!(whoami.status(), 200);
    for answer in [&healthz, &whoami] {
        let headers = answer.headers();
        assert_eq!(headers["cache-control"], "no-store");
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert_eq!(headers["x-request-id"].len(), 36, "{headers:?}");
    }
    let slash = app
        .post_raw(
            &format!("{WHOAMI}/"),
            &sign("{}", &partner.secret_key),
            Some(&format!("Bearer {}", partner.public_key)),
        )
        .await;
    assert_eq!(slash.status(), 200);

    // The router's ways: another method, HEAD.
    let post_healthz = app.post_raw("/healthz", "{}", None).await;
    expect(post_healthz, 405, "method_not_allowed").await;
    let get_whoami = app.client.get(url(WHOAMI)).send().await.unwrap();
    expect(get_whoami, 405, "method_not_allowed").await;
    let head = app.client.head(url("/healthz")).send().await.unwrap();
    assert_eq!(head.status(), 200);

    // The public listener's body limit on the direct WhoAmI.
    let big = sign(
        &format!(r#"{{"pad":"{}"}}"#, "x".repeat(64 * 1024)),
        &partner.secret_key,
    );
    let auth = format!("Bearer {}", partner.public_key);
    expect(
        app.post_raw(WHOAMI, &big, Some(&auth)).await,
        413,
        "body_too_large",
    )
    .await;
    // The internal listener's, eight times larger, on the direct verify API: a relayed body
    // over the partner's limit is the partner's error, relayed; over the listener's, the
    // caller's.
    let relayed = json!({"authorization": auth, "body": big});
    let verdict: serde_json::Value = app
        .verify(Some(&token), &relayed)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(verdict["data"]["valid"], false, "{verdict}");
    assert_eq!(
        verdict["data"]["error"]["code"], "body_too_large",
        "{verdict}"
    );
    let huge = json!({"authorization": auth, "body": "x".repeat(8 * 64 * 1024)});
    expect(app.verify(Some(&token), &huge).await, 413, "body_too_large").await;
    let relayed = json!({"authorization": auth, "body": sign("{}", &partner.secret_key)});
    let verdict: serde_json::Value = app
        .verify(Some(&token), &relayed)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(verdict["data"]["valid"], true, "{verdict}");

    // Counted under their route templates.
    let metrics = app.metrics_text().await;
    for labels in [
        r#"route="/healthz",status="200",code="ok""#,
        r#"route="/api/v1/PartnerP2P/WhoAmI",status="200",code="ok""#,
        r#"route="/api/v1/PartnerP2P/WhoAmI",status="413",code="body_too_large""#,
        r#"route="/api/v1/PartnerP2P/WhoAmI",status="405",code="method_not_allowed""#,
        r#"route="/internal/v1/verify",status="200",code="ok""#,
        r#"route="/internal/v1/verify",status="413",code="body_too_large""#,
    ] {
        let series = format!("keyward_http_requests_total{{{labels}}}");
        assert!(metrics.contains(&series), "no {series} in\n{metrics}");
    }
}
