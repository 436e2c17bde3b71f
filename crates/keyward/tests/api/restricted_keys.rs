//! What a key may do (SPEC §8): restricted keys made through a one-time link, listed and
//! revoked; scopes at the gateway and in the verify API; test keys and the sandbox; the expiry
//! policy and its reminders. Through HTTP, on whichever backend the run uses.

use crate::cluster::*;
use crate::helpers::*;
use axum::extract::{OriginalUri, State};
use axum::http::HeaderMap;
use keyward_core::scopes::Scopes;
use keyward_core::wire::paths::{
    CREATE_KEY, LIST_KEYS, REGENERATE, RETIRE_OLD_KEYS, REVOKE_KEY, SET_ALLOWED_IPS,
};
use keyward_server::config::{Settings, Upstream};
use keyward_server::flows::key_policy::ScopeSettings;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const DAY: i64 = 86_400_000;

fn with_scopes(s: &mut Settings) {
    s.scopes = ScopeSettings {
        known: Some(Scopes::from_names([
            "payouts:write",
            "payouts:read",
            "reports:read",
        ])),
        upstream: vec![
            ("/api/v1/partnerp2p/payout".into(), "payouts:write".into()),
            ("/api/v1/partnerp2p/report".into(), "reports:read".into()),
        ],
    };
    // Many links per test: the budget has its own tests.
    s.partner_links_per_hour = 1_000;
}

/// `CreateKey` signed with `by`'s keys.
async fn create_key(app: &TestApp, by: &Partner, body: Value) -> reqwest::Response {
    let mut body = body;
    body["nonce"] = json!(uuid_like());
    app.signed(CREATE_KEY, &body, &by.public_key, &by.secret_key)
        .await
}

/// Asks for a restricted pair with `body` and redeems its link: the new pair's credentials
/// and the `key` member of the redemption.
async fn restricted(
    app: &TestApp,
    primary: &Partner,
    email: &str,
    body: Value,
) -> (Partner, Value) {
    let before = app.emails_to(email).len();
    let response = create_key(app, primary, body).await;
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    let link = app.link_in_email(email, before + 1).await;
    let response = app
        .post_json(
            keyward_core::wire::paths::REDEEM,
            &json!({"token": token_of(&link), "partner_code": primary.code}),
        )
        .await;
    assert_eq!(response.status(), 200);
    let data: Value = response.json::<Value>().await.unwrap()["data"].clone();
    let pair = Partner {
        code: primary.code.clone(),
        partner_id: data["partner_id"].as_str().unwrap().to_owned(),
        public_key: data["public_key"].as_str().unwrap().to_owned(),
        secret_key: data["secret_key"].as_str().unwrap().to_owned(),
    };
    (pair, data["key"].clone())
}

async fn data_of(response: reqwest::Response) -> Value {
    assert_eq!(response.status(), 200);
    response.json::<Value>().await.unwrap()["data"].clone()
}

async fn list_keys(app: &TestApp, by: &Partner) -> Vec<Value> {
    let data = data_of(
        app.signed(LIST_KEYS, &json!({}), &by.public_key, &by.secret_key)
            .await,
    )
    .await;
    data["keys"].as_array().unwrap().clone()
}

async fn revoke(app: &TestApp, by: &Partner, key_id: &str) -> reqwest::Response {
    app.signed(
        REVOKE_KEY,
        &json!({"key_id": key_id}),
        &by.public_key,
        &by.secret_key,
    )
    .await
}

#[tokio::test]
async fn a_restricted_key_is_made_through_a_link_listed_and_revoked_on_its_own() {
    let app = spawn_app_with(with_scopes).await;
    let email = "ops@scoped.example";
    let primary = app.onboarded_partner("SCOPED", email).await;

    let before = app.emails_to(email).len();
    let response = create_key(
        &app,
        &primary,
        json!({"name": "reporting job", "scopes": ["reports:read"], "expires_in_days": 30}),
    )
    .await;
    assert_eq!(response.status(), 200);
    // The email and the page say what the key is; the page consumes nothing.
    let mail = &app.wait_for_emails(email, before + 1).await[before];
    for said in ["reporting job", "reports:read", "live", "30 days"] {
        assert!(mail.text.contains(said), "the email does not say {said}");
    }
    let link = link_in_text(&mail.text);
    let page = app.client.get(&link).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("reporting job") && html.contains("reports:read"));
    let response = app
        .post_json(
            keyward_core::wire::paths::REDEEM,
            &json!({"token": token_of(&link), "partner_code": "SCOPED"}),
        )
        .await;
    let data = data_of(response).await;
    assert_eq!(data["partner_id"], primary.partner_id.as_str());
    assert_eq!(data["key"]["kind"], "restricted");
    assert_eq!(data["key"]["scopes"], json!(["reports:read"]));
    let reports = Partner {
        code: primary.code.clone(),
        partner_id: primary.partner_id.clone(),
        public_key: data["public_key"].as_str().unwrap().to_owned(),
        secret_key: data["secret_key"].as_str().unwrap().to_owned(),
    };
    assert!(reports.public_key.starts_with("pk_partner_"));
    // A used link is used.
    let again = app.client.get(&link).send().await.unwrap();
    assert_eq!(again.status(), 410);

    // WhoAmI says what the key is; the primary key still works, and holds every scope.
    let me = data_of(app.whoami(&reports).await).await;
    assert_eq!(
        (&me["kind"], &me["name"], &me["scopes"], &me["mode"]),
        (
            &json!("restricted"),
            &json!("reporting job"),
            &json!(["reports:read"]),
            &json!("live")
        )
    );
    assert!(me["key_expires_at"].is_string(), "its own expiry: {me}");
    let me = data_of(app.whoami(&primary).await).await;
    assert_eq!(me["kind"], "primary");
    assert_eq!(
        me["scopes"],
        json!(["payouts:read", "payouts:write", "reports:read"])
    );

    // ListKeys shows both pairs, never a secret or a whole public key.
    let keys = list_keys(&app, &primary).await;
    assert_eq!(keys.len(), 2);
    let text = serde_json::to_string(&keys).unwrap();
    assert!(!text.contains(&reports.public_key) && !text.contains(&reports.secret_key));
    assert!(!text.contains(&primary.public_key));
    let restricted_id = keys.iter().find(|k| k["kind"] == "restricted").unwrap()["key_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let primary_id = keys.iter().find(|k| k["kind"] == "primary").unwrap()["key_id"]
        .as_str()
        .unwrap()
        .to_owned();

    // A restricted key manages nothing.
    for (path, body) in [
        (CREATE_KEY, json!({"name": "x"})),
        (LIST_KEYS, json!({})),
        (REVOKE_KEY, json!({"key_id": restricted_id})),
        (RETIRE_OLD_KEYS, json!({})),
        (SET_ALLOWED_IPS, json!({"allowed_ips": []})),
        (
            REGENERATE,
            json!({"partner_code": "SCOPED", "email": email}),
        ),
    ] {
        let response = app
            .signed(path, &body, &reports.public_key, &reports.secret_key)
            .await;
        let (status, code, _) = error_of(response).await;
        assert_eq!(
            (status, code.as_str()),
            (403, "insufficient_scope"),
            "{path}"
        );
    }

    // The primary pair cannot be revoked this way; the restricted one can, once.
    let (status, code, _) = error_of(revoke(&app, &primary, &primary_id).await).await;
    assert_eq!((status, code.as_str()), (400, "invalid_field"));
    let (status, code, _) = error_of(revoke(&app, &primary, &uuid_like()).await).await;
    assert_eq!((status, code.as_str()), (400, "invalid_field"));
    assert_eq!(
        data_of(revoke(&app, &primary, &restricted_id).await).await["revoked"],
        1
    );
    let (status, code, _) = error_of(app.whoami(&reports).await).await;
    assert_eq!((status, code.as_str()), (401, "revoked_key"));
    assert_eq!(
        data_of(revoke(&app, &primary, &restricted_id).await).await["revoked"],
        0
    );
    assert_eq!(app.whoami(&primary).await.status(), 200);
    assert_eq!(list_keys(&app, &primary).await.len(), 1);
    let audit = app.cli(&["audit", "--partner", "SCOPED"]);
    let audit = String::from_utf8_lossy(&audit.stdout);
    assert!(audit.contains("restricted_key_created") && audit.contains("key_revoked"));
}

#[tokio::test]
async fn with_scopes_off_keys_are_restricted_by_name_only_and_scopes_are_refused() {
    let app = spawn_app().await;
    let email = "ops@noscopes.example";
    let primary = app.onboarded_partner("NOSCOPES", email).await;
    let (status, code, body) = error_of(
        create_key(
            &app,
            &primary,
            json!({"name": "x", "scopes": ["payouts:write"]}),
        )
        .await,
    )
    .await;
    assert_eq!((status, code.as_str()), (400, "invalid_field"), "{body}");
    // Bad fields are all listed at once.
    let (status, _, body) = error_of(
        create_key(
            &app,
            &primary,
            json!({"name": "", "mode": "sandbox", "expires_in_days": 0}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["errors"].as_array().unwrap().len(), 3, "{body}");

    let (pair, key) = restricted(&app, &primary, email, json!({"name": "ci"})).await;
    assert_eq!(key["scopes"], json!([]));
    let me = data_of(app.whoami(&pair).await).await;
    assert_eq!(
        (&me["kind"], &me["scopes"]),
        (&json!("restricted"), &json!([]))
    );
    assert!(me["key_expires_at"].is_null());
    // Nothing else changed: the primary pair's WhoAmI is as before §8, with no expiry.
    let me = data_of(app.whoami(&primary).await).await;
    assert!(me["key_expires_at"].is_null());
    let response = app.whoami(&primary).await;
    assert!(response.headers().get("keyward-key-expires").is_none());
}

#[tokio::test]
async fn ten_pairs_at_most_and_an_unused_link_holds_no_place() {
    let app = spawn_app_with(with_scopes).await;
    let email = "ops@many.example";
    let primary = app.onboarded_partner("MANY", email).await;
    let mut pairs = Vec::new();
    for i in 0..9 {
        pairs.push(restricted(&app, &primary, email, json!({"name": format!("job {i}")})).await);
    }
    // A tenth restricted pair is refused when asked for…
    let (status, code, _) =
        error_of(create_key(&app, &primary, json!({"name": "one more"})).await).await;
    assert_eq!((status, code.as_str()), (409, "key_limit_reached"));
    // …and when a link asked for earlier is used once the places are taken.
    let id = pairs[0].1["key_id"].as_str().unwrap().to_owned();
    assert_eq!(
        data_of(revoke(&app, &primary, &id).await).await["revoked"],
        1
    );
    let before = app.emails_to(email).len();
    assert_eq!(
        create_key(&app, &primary, json!({"name": "a"}))
            .await
            .status(),
        200
    );
    assert_eq!(
        create_key(&app, &primary, json!({"name": "b"}))
            .await
            .status(),
        200
    );
    let emails = app.wait_for_emails(email, before + 2).await;
    let first = token_of(&link_in_text(&emails[before].text));
    let second = token_of(&link_in_text(&emails[before + 1].text));
    let redeem = |token: String| {
        let app = &app;
        async move {
            app.post_json(
                keyward_core::wire::paths::REDEEM,
                &json!({"token": token, "partner_code": "MANY"}),
            )
            .await
        }
    };
    assert_eq!(redeem(first).await.status(), 200);
    let (status, code, _) = error_of(redeem(second).await).await;
    assert_eq!((status, code.as_str()), (409, "key_limit_reached"));
    assert_eq!(list_keys(&app, &primary).await.len(), 10);
}

#[tokio::test]
async fn a_signed_regeneration_replaces_only_the_primary_and_lost_keys_revoke_every_pair() {
    let app = spawn_app_with(with_scopes).await;
    let email = "ops@rotate-scoped.example";
    let primary = app.onboarded_partner("ROTSCOPED", email).await;
    let (reports, _) = restricted(
        &app,
        &primary,
        email,
        json!({"name": "r", "scopes": ["reports:read"]}),
    )
    .await;

    let before = app.emails_to(email).len();
    assert_eq!(app.regenerate(&primary, email).await.status(), 200);
    let link = app.link_in_email(email, before + 1).await;
    let renewed = app.redeem(&link, "ROTSCOPED").await;
    assert_eq!(app.whoami(&renewed).await.status(), 200);
    assert_eq!(
        app.whoami(&reports).await.status(),
        200,
        "the restricted pair survives"
    );
    let (_, code, _) = error_of(app.whoami(&primary).await).await;
    assert_eq!(code, "revoked_key");

    // Lost keys: whatever was lost, every pair goes.
    let before = app.emails_to(email).len();
    let response = app
        .post_json(
            REGENERATE,
            &json!({"partner_code": "ROTSCOPED", "email": email}),
        )
        .await;
    assert_eq!(response.status(), 200);
    let link = app.link_in_email(email, before + 1).await;
    let last = app.redeem(&link, "ROTSCOPED").await;
    for old in [&renewed, &reports] {
        let (_, code, _) = error_of(app.whoami(old).await).await;
        assert_eq!(code, "revoked_key");
    }
    assert_eq!(list_keys(&app, &last).await.len(), 1);

    // The operator's revoke-keys too.
    let (again, _) = restricted(&app, &last, email, json!({"name": "again"})).await;
    let out = app.cli(&["partner", "show", "ROTSCOPED"]);
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains("restricted \"again\"") && shown.contains("primary"),
        "{shown}"
    );
    let out = app.cli(&["partner", "list", "--json"]);
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        listed.contains("\"again\"") && listed.matches("ROTSCOPED").count() == 1,
        "{listed}"
    );
    let out = app.cli(&["partner", "revoke-keys", "ROTSCOPED", "--reason", "test"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for old in [&last, &again] {
        let (_, code, _) = error_of(app.whoami(old).await).await;
        assert_eq!(code, "revoked_key");
    }
}

/// What an upstream received: path and the `Keyward-*` headers.
type Received = Arc<Mutex<Vec<(String, HeaderMap)>>>;

async fn recording_upstream() -> (String, Received) {
    let log: Received = Arc::default();
    let app = axum::Router::new()
        .fallback(
            |State(log): State<Received>, OriginalUri(uri): OriginalUri, headers: HeaderMap| async move {
                log.lock().unwrap().push((uri.to_string(), headers));
                "ok"
            },
        )
        .with_state(log.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (address, log)
}

/// A live upstream that fails the test on any request made with a test key: it records the
/// key mode it was told, and the test asserts none was `test`.
async fn gateway(sandbox: bool) -> (TestApp, Received, Received) {
    let (live, live_log) = recording_upstream().await;
    let (sandbox_url, sandbox_log) = recording_upstream().await;
    let app = spawn_app_with(move |s| {
        with_scopes(s);
        s.upstream = Some(Upstream {
            url: url::Url::parse(&live).unwrap(),
            sandbox_url: sandbox.then(|| url::Url::parse(&sandbox_url).unwrap()),
            prefixes: vec!["/api/v1/PartnerP2P/".into()],
            timeout: Duration::from_secs(5),
            single_use: false,
        });
    })
    .await;
    (app, live_log, sandbox_log)
}

async fn through(
    app: &TestApp,
    path: &str,
    pair: &Partner,
    extra: &[(&str, &str)],
) -> reqwest::Response {
    let raw = sign(&json!({"nonce": uuid_like()}).to_string(), &pair.secret_key);
    let mut request = app
        .client
        .post(format!("{}{path}", app.address))
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {}", pair.public_key))
        .body(raw);
    for (name, value) in extra {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn the_gateway_enforces_scopes_by_the_path_it_sends_and_says_what_the_key_holds() {
    let (app, live, _) = gateway(true).await;
    let email = "ops@gw-scopes.example";
    let primary = app.onboarded_partner("GWSCOPES", email).await;
    let (reports, _) = restricted(
        &app,
        &primary,
        email,
        json!({"name": "r", "scopes": ["reports:read"]}),
    )
    .await;

    let response = through(
        &app,
        "/api/v1/PartnerP2P/Report/daily",
        &reports,
        &[("Keyward-Key-Scopes", "payouts:write")],
    )
    .await;
    assert_eq!(response.status(), 200);
    // Every spelling of the payout route is refused, and nothing reaches the upstream.
    for path in [
        "/api/v1/PartnerP2P/Payout",
        "/api/v1/PartnerP2P/payout",
        "/api/v1/PartnerP2P/%50ayout",
        "/api/v1/PartnerP2P//Payout",
        "/api/v1/PartnerP2P/Payout;v=1",
        "/api/v1/PartnerP2P/%2550ayout",
    ] {
        let (status, code, body) = error_of(through(&app, path, &reports, &[]).await).await;
        assert_eq!(
            (status, code.as_str()),
            (403, "insufficient_scope"),
            "{path}"
        );
        assert_eq!(body["data"]["required"], json!(["payouts:write"]));
        assert_eq!(body["data"]["granted"], json!(["reports:read"]));
    }
    // A path no prefix names needs no scope.
    assert_eq!(
        through(&app, "/api/v1/PartnerP2P/Rates", &reports, &[])
            .await
            .status(),
        200
    );
    assert_eq!(
        through(&app, "/api/v1/PartnerP2P/Payout", &primary, &[])
            .await
            .status(),
        200
    );
    let seen = live.lock().unwrap().clone();
    let paths: Vec<&str> = seen.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/api/v1/PartnerP2P/Report/daily",
            "/api/v1/PartnerP2P/Rates",
            "/api/v1/PartnerP2P/Payout"
        ]
    );
    // The client's copy of the header is replaced by what the key holds.
    assert_eq!(seen[0].1["keyward-key-scopes"], "reports:read");
    assert_eq!(seen[0].1["keyward-key-mode"], "live");
    assert_eq!(
        seen[2].1["keyward-key-scopes"],
        "payouts:read payouts:write reports:read"
    );
}

#[tokio::test]
async fn a_test_key_goes_to_the_sandbox_and_never_to_the_live_upstream() {
    let (app, live, sandbox) = gateway(true).await;
    let email = "ops@sandbox.example";
    let primary = app.onboarded_partner("SANDBOX", email).await;
    let (test, key) = restricted(
        &app,
        &primary,
        email,
        json!({"name": "dev laptop", "mode": "test", "scopes": ["payouts:write"]}),
    )
    .await;
    assert!(test.public_key.starts_with("pk_test_partner_"));
    assert!(test.secret_key.starts_with("sk_test_partner_"));
    assert_eq!(key["mode"], "test");
    let me = data_of(app.whoami(&test).await).await;
    assert_eq!(me["mode"], "test");

    for path in ["/api/v1/PartnerP2P/Payout", "/api/v1/PartnerP2P/Rates"] {
        let response = through(&app, path, &test, &[("Keyward-Key-Mode", "live")]).await;
        assert_eq!(response.status(), 200);
    }
    assert_eq!(
        through(&app, "/api/v1/PartnerP2P/Payout", &primary, &[])
            .await
            .status(),
        200
    );
    let live = live.lock().unwrap().clone();
    assert_eq!(
        live.len(),
        1,
        "only the live key's request reaches the live upstream"
    );
    assert!(live.iter().all(|(_, h)| h["keyward-key-mode"] == "live"));
    let sandbox = sandbox.lock().unwrap().clone();
    assert_eq!(sandbox.len(), 2);
    assert!(sandbox.iter().all(|(_, h)| h["keyward-key-mode"] == "test"));

    // Without a sandbox, a test key is refused and reaches nothing.
    let (app, live, _) = gateway(false).await;
    let primary = app.onboarded_partner("NOSANDBOX", email).await;
    let (test, _) = restricted(&app, &primary, email, json!({"name": "t", "mode": "test"})).await;
    let (status, code, _) =
        error_of(through(&app, "/api/v1/PartnerP2P/Rates", &test, &[]).await).await;
    assert_eq!((status, code.as_str()), (403, "test_key_not_accepted"));
    assert!(live.lock().unwrap().is_empty());
}

#[tokio::test]
async fn the_verify_api_checks_required_scopes_and_reports_the_key() {
    let app = spawn_app_with(with_scopes).await;
    let email = "ops@verify-scopes.example";
    let primary = app.onboarded_partner("VSCOPES", email).await;
    let (reports, _) = restricted(
        &app,
        &primary,
        email,
        json!({"name": "r", "scopes": ["reports:read"], "mode": "test"}),
    )
    .await;
    let token = app.service_token("payments").await;
    let request = |pair: &Partner, scopes: Value| {
        json!({
            "authorization": format!("Bearer {}", pair.public_key),
            "body": sign(&json!({"nonce": uuid_like()}).to_string(), &pair.secret_key),
            "required_scopes": scopes,
        })
    };
    let data = data_of(
        app.verify(Some(&token), &request(&reports, json!(["reports:read"])))
            .await,
    )
    .await;
    assert_eq!(data["valid"], true);
    assert_eq!(
        (&data["kind"], &data["mode"], &data["name"]),
        (&json!("restricted"), &json!("test"), &json!("r"))
    );
    assert_eq!(data["scopes"], json!(["reports:read"]));
    let data = data_of(
        app.verify(Some(&token), &request(&reports, json!(["payouts:write"])))
            .await,
    )
    .await;
    assert_eq!(data["valid"], false);
    assert_eq!(
        (&data["error"]["status"], &data["error"]["code"]),
        (&json!(403), &json!("insufficient_scope"))
    );
    assert_eq!(data["error"]["data"]["required"], json!(["payouts:write"]));
    let data = data_of(
        app.verify(Some(&token), &request(&primary, json!(["payouts:write"])))
            .await,
    )
    .await;
    assert_eq!(
        (&data["valid"], &data["kind"], &data["mode"]),
        (&json!(true), &json!("primary"), &json!("live"))
    );
    // A scope the exchange does not know is the caller's mistake, told to it.
    let response = app
        .verify(Some(&token), &request(&primary, json!(["payout:write"])))
        .await;
    let (status, code, _) = error_of(response).await;
    assert_eq!((status, code.as_str()), (400, "invalid_field"));
}

#[tokio::test]
async fn the_expiry_policy_applies_from_the_key_cache_and_an_allow_list_lifts_the_shorter_age() {
    let app = spawn_app_with(|s| {
        s.expiry.max_age = Some(90 * DAY);
        s.expiry.max_age_without_allowlist = Some(30 * DAY);
        s.expiry.max_idle = Some(20 * DAY);
    })
    .await;
    let email = "ops@expiry.example";
    let partner = app.onboarded_partner("EXPIRY", email).await;
    let me = data_of(app.whoami(&partner).await).await;
    let created =
        chrono::DateTime::parse_from_rfc3339(me["key_created_at"].as_str().unwrap()).unwrap();
    let expires =
        chrono::DateTime::parse_from_rfc3339(me["key_expires_at"].as_str().unwrap()).unwrap();
    // Just used: the idle limit (20 days from now) is the earliest.
    assert_eq!((expires - created).num_days(), 20);

    // Used every 15 days, the key outlives the idle limit until the age without allow-list.
    app.clock.advance(chrono::TimeDelta::days(15));
    assert_eq!(app.whoami(&partner).await.status(), 200);
    // The use is recorded (as the janitor does every few seconds).
    app.state
        .ctx
        .key_usage
        .flush(&app.state.store)
        .await
        .unwrap();
    app.clock
        .advance(chrono::TimeDelta::days(15) + chrono::TimeDelta::minutes(1));
    let (status, code, _) = error_of(app.whoami(&partner).await).await;
    assert_eq!((status, code.as_str()), (401, "expired_key"));
    // An allow-list lifts the 30-day age: the same key works again, within 90 days.
    let out = app.cli(&["partner", "allow-ips", "EXPIRY", "127.0.0.1/32", "::1/128"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let response = app.whoami(&partner).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("keyward-key-expires").is_some());
    // Unused for longer than the idle limit: expired, and a request does not revive it.
    app.clock.advance(chrono::TimeDelta::days(21));
    let (_, code, _) = error_of(app.whoami(&partner).await).await;
    assert_eq!(code, "expired_key");
    let (_, code, _) = error_of(app.whoami(&partner).await).await;
    assert_eq!(code, "expired_key");
}

#[tokio::test]
async fn reminders_are_sent_once_each_and_not_for_what_passed_before_the_pair_existed() {
    let app = spawn_app_with(|s| {
        s.expiry.max_age = Some(10 * DAY);
        s.expiry.reminders = vec![14 * DAY, 3 * DAY, DAY];
    })
    .await;
    let email = "ops@remind.example";
    let partner = app.onboarded_partner("REMIND", email).await;
    let reminders = || {
        app.emails_to(email)
            .into_iter()
            .filter(|e| e.subject.contains("expires at"))
            .count()
    };
    // The 14-day reminder was already past when the pair was made: never sent. 3 days before:
    app.clock
        .advance(chrono::TimeDelta::days(7) + chrono::TimeDelta::minutes(1));
    let sent = eventually(Duration::from_secs(60), || {
        std::future::ready((reminders() == 1).then_some(()))
    })
    .await;
    assert!(sent.is_some(), "the 3-day reminder was not sent");
    let mail = app
        .emails_to(email)
        .into_iter()
        .find(|e| e.subject.contains("expires at"))
        .unwrap();
    assert!(mail.text.contains("maximum key age"), "{}", mail.text);
    assert!(!mail.text.contains(&partner.public_key));
    app.clock.advance(chrono::TimeDelta::days(2));
    let sent = eventually(Duration::from_secs(60), || {
        std::future::ready((reminders() == 2).then_some(()))
    })
    .await;
    assert!(sent.is_some(), "the 1-day reminder was not sent");
    // Nothing more is due: the janitor runs again and the count stays.
    app.state
        .ctx
        .key_usage
        .flush(&app.state.store)
        .await
        .unwrap();
    keyward_server::flows::send_due_reminders(&app.state.ctx)
        .await
        .unwrap();
    app.settle().await;
    assert_eq!(reminders(), 2);
}

#[tokio::test]
async fn a_revoked_pair_gets_no_reminder_and_an_idle_one_is_reminded_only_when_still_idle() {
    let app = spawn_app_with(|s| {
        s.expiry.max_idle = Some(10 * DAY);
        s.expiry.reminders = vec![3 * DAY];
    })
    .await;
    let email = "ops@idle.example";
    let partner = app.onboarded_partner("IDLE", email).await;
    let (r, _) = restricted(&app, &partner, email, json!({"name": "to revoke"})).await;
    let keys = list_keys(&app, &partner).await;
    let id = keys.iter().find(|k| k["kind"] == "restricted").unwrap()["key_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        data_of(revoke(&app, &partner, &id).await).await["revoked"],
        1
    );
    let (_, code, _) = error_of(app.whoami(&r).await).await;
    assert_eq!(code, "revoked_key");
    let reminders = || {
        app.emails_to(email)
            .into_iter()
            .filter(|e| e.subject.contains("expires at"))
            .collect::<Vec<_>>()
    };
    // The primary is used on day 5: its reminder moves from day 7 to day 12.
    app.clock.advance(chrono::TimeDelta::days(5));
    assert_eq!(app.whoami(&partner).await.status(), 200);
    app.state
        .ctx
        .key_usage
        .flush(&app.state.store)
        .await
        .unwrap();
    app.clock.advance(chrono::TimeDelta::days(3));
    // Decided now (the janitor may decide first: the outcome is the same), then settled.
    keyward_server::flows::send_due_reminders(&app.state.ctx)
        .await
        .unwrap();
    app.settle().await;
    assert!(
        reminders().is_empty(),
        "a reminder went out for a pair used since, or for a revoked one"
    );
    app.clock
        .advance(chrono::TimeDelta::days(4) + chrono::TimeDelta::minutes(1));
    keyward_server::flows::send_due_reminders(&app.state.ctx)
        .await
        .unwrap();
    let sent = eventually(Duration::from_secs(20), || {
        std::future::ready((!reminders().is_empty()).then_some(()))
    })
    .await;
    assert!(sent.is_some(), "the idle reminder was not sent");
    app.settle().await;
    let sent = reminders();
    assert_eq!(sent.len(), 1);
    assert!(sent[0].text.contains("not been used"), "{}", sent[0].text);
}

#[tokio::test]
async fn two_nodes_revoke_a_restricted_pair_everywhere_and_send_each_reminder_once() {
    let nodes = spawn_nodes(2, |s| {
        with_scopes(s);
        s.expiry.max_age = Some(10 * DAY);
        s.expiry.reminders = vec![3 * DAY, DAY];
    })
    .await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let email = "ops@two-scoped.example";
    let primary = onboarded_on(&nodes, "TWOSCOPED", email).await;
    let before = emails_to(&nodes, email).len();
    assert_eq!(
        create_key(a, &primary, json!({"name": "n"})).await.status(),
        200
    );
    // The nodes' mailboxes are not in order with each other: pick the new key's email.
    let emails = wait_for(&nodes, email, before + 1).await;
    let made = emails
        .iter()
        .find(|e| e.subject.contains("API key \"n\""))
        .expect("the new key's email");
    let pair = b.redeem(&link_in_text(&made.text), "TWOSCOPED").await;
    // Usable on both nodes at once, then revoked on one and refused by the other at once.
    assert_eq!(a.whoami(&pair).await.status(), 200);
    assert_eq!(b.whoami(&pair).await.status(), 200);
    let id = list_keys(a, &primary)
        .await
        .iter()
        .find(|k| k["kind"] == "restricted")
        .unwrap()["key_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(data_of(revoke(b, &primary, &id).await).await["revoked"], 1);
    let (_, code, _) = error_of(a.whoami(&pair).await).await;
    assert_eq!(code, "revoked_key");

    // Both nodes' janitors race for the due reminders: each is sent once.
    for node in &nodes {
        node.clock
            .advance(chrono::TimeDelta::days(7) + chrono::TimeDelta::minutes(1));
    }
    let sends = nodes
        .iter()
        .map(|n| keyward_server::flows::send_due_reminders(&n.state.ctx));
    let sent: u64 = futures::future::join_all(sends)
        .await
        .into_iter()
        .map(Result::unwrap)
        .sum();
    settle(&nodes).await;
    let reminders = emails_to(&nodes, email)
        .into_iter()
        .filter(|e| e.subject.contains("expires at"))
        .count();
    // The primary's 3-day reminder, once, whichever node (or janitor) sent it.
    assert_eq!(reminders, 1, "sent by the calls: {sent}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_partner_commands_create_list_and_revoke_keys() {
    use crate::partner_side::keyward;
    let app = spawn_app_with(with_scopes).await;
    let email = "ops@cli-keys.example";
    let primary = app.onboarded_partner("CLIKEYS", email).await;
    let env = [
        ("KEYWARD_URL", app.address.as_str()),
        ("KEYWARD_PUBLIC_KEY", primary.public_key.as_str()),
        ("KEYWARD_SECRET_KEY", primary.secret_key.as_str()),
    ];
    let before = app.emails_to(email).len();
    let (ok, stdout, stderr) = keyward(
        &[
            "key",
            "create",
            "--name",
            "reports",
            "--scope",
            "reports:read",
            "--test",
            "--expires-in-days",
            "7",
        ],
        &env,
        None,
    )
    .await;
    assert!(ok, "{stderr}");
    assert!(stdout.contains("emailed"), "{stdout}");
    // A scope the exchange does not have is refused with what to do.
    let (ok, _, stderr) = keyward(
        &[
            "key",
            "create",
            "--name",
            "x",
            "--scope",
            "payouts:everything",
        ],
        &env,
        None,
    )
    .await;
    assert!(
        !ok && stderr.contains("not a scope of this exchange"),
        "{stderr}"
    );

    let link = app.link_in_email(email, before + 1).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("reports.json");
    let file_arg = file.to_str().unwrap();
    let (ok, _, stderr) = keyward(
        &[
            "redeem",
            &link,
            "--partner-code",
            "CLIKEYS",
            "--out",
            file_arg,
        ],
        &[],
        None,
    )
    .await;
    assert!(ok, "{stderr}");
    let (ok, stdout, stderr) = keyward(&["whoami", "--credentials", file_arg], &[], None).await;
    assert!(ok, "{stderr}");
    for said in [
        "restricted \"reports\"",
        "mode            test",
        "scopes          reports:read",
        "key_expires_at  20",
    ] {
        assert!(
            stdout.contains(said),
            "whoami does not say {said}: {stdout}"
        );
    }

    let (ok, stdout, stderr) = keyward(&["key", "list", "--json"], &env, None).await;
    assert!(ok, "{stderr}");
    let keys: Vec<Value> = serde_json::from_str(&stdout).unwrap();
    assert_eq!(keys.len(), 2);
    let id = keys.iter().find(|k| k["kind"] == "restricted").unwrap()["key_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (ok, stdout, _) = keyward(&["key", "list"], &env, None).await;
    assert!(
        ok && stdout.contains(&id) && stdout.contains("\"reports\""),
        "{stdout}"
    );
    let (ok, stdout, stderr) = keyward(&["key", "revoke", &id], &env, None).await;
    assert!(ok && stdout.contains("Revoked"), "{stdout}{stderr}");
    let (ok, _, stderr) = keyward(&["whoami", "--credentials", file_arg], &[], None).await;
    assert!(!ok && stderr.contains("revoked_key"), "{stderr}");
}

#[tokio::test]
async fn a_policy_turned_on_later_plans_the_reminders_of_existing_pairs() {
    // The first node runs without a policy; the second starts later with one, on the same data.
    let email = "ops@later.example";
    let first = spawn_nodes(1, |_| {}).await;
    let partner = onboarded_on(&first, "LATER", email).await;
    let settings = {
        let mut s = (*first[0].state.settings).clone();
        s.listen = "127.0.0.1:0".parse().unwrap();
        s.internal_listen = Some("127.0.0.1:0".parse().unwrap());
        s.expiry.max_age = Some(10 * DAY);
        s.expiry.reminders = vec![DAY];
        s
    };
    let second = spawn_configured(settings, tempfile::tempdir().unwrap(), None).await;
    // Start-up plans them in the background; planning again here waits for it (idempotent).
    keyward_server::flows::reschedule_after_policy_change(&second.state.ctx)
        .await
        .unwrap();
    second
        .clock
        .advance(chrono::TimeDelta::days(9) + chrono::TimeDelta::minutes(1));
    let sent = eventually(Duration::from_secs(20), || {
        let (first, second) = (&first[0], &second);
        async move {
            keyward_server::flows::send_due_reminders(&second.state.ctx)
                .await
                .unwrap();
            // Either node's outbox worker may send it.
            [first, second]
                .iter()
                .flat_map(|node| node.emails_to(email))
                .any(|e| e.subject.contains("expires at"))
                .then_some(())
        }
    })
    .await;
    assert!(
        sent.is_some(),
        "the existing pair got no reminder from the new policy"
    );
    // The key made before the policy expires under it.
    second.clock.advance(chrono::TimeDelta::days(1));
    let (_, code, _) = error_of(second.whoami(&partner).await).await;
    assert_eq!(code, "expired_key");
}
