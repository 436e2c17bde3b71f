//! The verify API (SPEC §7.1), through the internal listener.

use crate::cluster::{onboarded_on, regeneration_link, spawn_nodes};
use crate::helpers::*;
use keyward_core::{AllowedIps, PartnerCode};
use serde_json::{json, Value};

/// The verify request relaying `body` signed with the partner's keys.
fn relayed(partner: &Partner, raw: &str) -> Value {
    json!({"authorization": format!("Bearer {}", partner.public_key), "body": raw})
}

async fn data_of(response: reqwest::Response) -> Value {
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["success"], true, "{body}");
    body["data"].clone()
}

#[tokio::test]
async fn a_valid_request_is_answered_with_its_partner() {
    let app = spawn_app().await;
    let partner = app.onboarded_partner("VALID", "ops@valid.example").await;
    let token = app.service_token("payments").await;
    let raw = sign(
        r#"{"amount":"10.50","currency":"USDT"}"#,
        &partner.secret_key,
    );

    let data = data_of(app.verify(Some(&token), &relayed(&partner, &raw)).await).await;

    assert_eq!(data["valid"], true, "{data}");
    assert_eq!(data["partner_id"], partner.partner_id.as_str());
    assert_eq!(data["partner_code"], "VALID");
    assert!(data["key_id"].as_str().is_some_and(|k| k.len() == 36));
    assert!(data["key_created_at"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));
    assert!(data["key_expires_at"].is_null() && data.get("key_expires_at").is_some());
}

/// Every invalid request is answered with exactly what WhoAmI answers the partner for it.
#[tokio::test]
async fn each_invalid_request_relays_the_status_and_envelope_whoami_gives() {
    let app = spawn_app().await;
    let partner = app.onboarded_partner("BAD", "ops@bad.example").await;
    let token = app.service_token("payments").await;
    let good = sign("{}", &partner.secret_key);
    let auth = format!("Bearer {}", partner.public_key);
    let stranger = keyward_core::KeyPair::generate(&mut rand::rngs::OsRng).public;
    let stale = sign(r#"{"timestamp":1000}"#, &partner.secret_key);
    let wrong_signature =
        sign("{}", &partner.secret_key).replace("{\"signature\":\"", "{\"signature\":\"0");
    let cases: Vec<(Option<String>, String, &str)> = vec![
        (None, good.clone(), "missing_authorization"),
        (
            Some("Basic abc".into()),
            good.clone(),
            "malformed_authorization",
        ),
        (
            Some(format!("Bearer {stranger}")),
            good.clone(),
            "unknown_key",
        ),
        (
            Some(auth.clone()),
            r#"{"signature":"00"}"#.into(),
            "invalid_signature",
        ),
        (Some(auth.clone()), wrong_signature, "invalid_signature"),
        (Some(auth.clone()), stale, "stale_request"),
        (Some(auth.clone()), "{".into(), "invalid_json"),
        (Some(auth.clone()), "[1]".into(), "not_an_object"),
        (
            Some(auth.clone()),
            r#"{"a":1,"a":2,"signature":"x"}"#.into(),
            "duplicate_member",
        ),
        (Some(auth.clone()), "{}".into(), "missing_fields"),
        (
            Some(auth.clone()),
            r#"{"signature":7}"#.into(),
            "invalid_field",
        ),
        (
            Some(auth.clone()),
            r#"{"timestamp":[],"signature":"x"}"#.into(),
            "invalid_signature",
        ),
    ];
    for (authorization, raw, code) in cases {
        let direct = app.post_raw(WHOAMI, &raw, authorization.as_deref()).await;
        let status = direct.status().as_u16();
        let envelope: Value = direct.json().await.unwrap();
        assert_eq!(envelope["code"], code, "WhoAmI: {envelope}");

        let mut request = json!({"body": raw});
        if let Some(authorization) = &authorization {
            request["authorization"] = json!(authorization);
        }
        let data = data_of(app.verify(Some(&token), &request).await).await;

        assert_eq!(data["valid"], false, "{code}: {data}");
        let error = &data["error"];
        assert_eq!(error["status"], status, "{code}: {data}");
        assert_eq!(error["code"], envelope["code"], "{code}");
        assert_eq!(error["message"], envelope["message"], "{code}");
        assert_eq!(error["data"], envelope["data"], "{code}");
        assert_eq!(error.get("errors"), envelope.get("errors"), "{code}");
    }
}

#[tokio::test]
async fn revoked_keys_and_suspended_partners_are_refused_like_on_whoami() {
    let app = spawn_app().await;
    let partner = app.onboarded_partner("REVO", "ops@revo.example").await;
    let token = app.service_token("payments").await;
    let raw = sign("{}", &partner.secret_key);
    app.regenerate(&partner, "ops@revo.example").await;
    let link = app.link_in_email("ops@revo.example", 2).await;
    let renewed = app.redeem(&link, "REVO").await;

    let data = data_of(app.verify(Some(&token), &relayed(&partner, &raw)).await).await;
    assert_eq!(data["error"]["code"], "revoked_key", "{data}");
    assert_eq!(data["error"]["status"], 401);

    let code = PartnerCode::parse("REVO").unwrap();
    keyward_server::flows::admin::suspend(&app.state, &code, OPERATOR)
        .await
        .unwrap();
    let raw = sign("{}", &renewed.secret_key);
    let data = data_of(app.verify(Some(&token), &relayed(&renewed, &raw)).await).await;
    assert_eq!(data["error"]["code"], "partner_suspended", "{data}");
    assert_eq!(data["error"]["status"], 403);
}

#[tokio::test]
async fn a_missing_unknown_malformed_or_revoked_service_token_is_refused() {
    let app = spawn_app().await;
    let partner = app.onboarded_partner("TOK", "ops@tok.example").await;
    let request = relayed(&partner, &sign("{}", &partner.secret_key));
    let token = app.service_token("payments").await;
    let unknown = {
        let t = keyward_core::ServiceToken::generate(&mut rand::rngs::OsRng);
        secrecy::ExposeSecret::expose_secret(&t).to_owned()
    };
    // A partner's public key is not a service token.
    let partner_key = partner.public_key.clone();
    for bad in [
        None,
        Some(unknown.as_str()),
        Some("kw_service_short"),
        Some(&partner_key),
    ] {
        let (status, code, _) = error_of(app.verify(bad, &request).await).await;
        assert_eq!((status, code.as_str()), (401, "invalid_service_token"));
    }
    assert_eq!(app.verify(Some(&token), &request).await.status(), 200);

    keyward_server::flows::service_tokens::revoke(
        &app.state.store,
        "payments",
        "tests",
        None,
        app.state.clock.now(),
        app.state.settings.key_cache,
    )
    .await
    .unwrap();
    let (status, code, _) = error_of(app.verify(Some(&token), &request).await).await;
    assert_eq!((status, code.as_str()), (401, "invalid_service_token"));
}

#[tokio::test]
async fn a_malformed_verify_request_is_a_400_with_every_field() {
    let app = spawn_app().await;
    let token = app.service_token("payments").await;
    let response = app
        .verify(
            Some(&token),
            &json!({"body": 7, "client_ip": "not-an-ip", "single_use": "yes"}),
        )
        .await;
    let (status, code, body) = error_of(response).await;
    assert_eq!((status, code.as_str()), (400, "invalid_field"));
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["body", "client_ip", "single_use"]);
    let (status, code, _) = error_of(app.verify(Some(&token), &json!({})).await).await;
    assert_eq!((status, code.as_str()), (400, "missing_fields"));
}

#[tokio::test]
async fn single_use_accepts_a_signed_request_once_however_it_is_encoded() {
    let app = spawn_app().await;
    let partner = app.onboarded_partner("ONCE", "ops@once.example").await;
    let token = app.service_token("payments").await;
    let raw = sign(r#"{"payout":"p-1","amount":5}"#, &partner.secret_key);
    let once = |raw: &str| {
        let mut request = relayed(&partner, raw);
        request["single_use"] = json!(true);
        request
    };

    let first = data_of(app.verify(Some(&token), &once(&raw)).await).await;
    assert_eq!(first["valid"], true, "{first}");
    // Without single_use it is still valid (a read may be repeated).
    let again = data_of(app.verify(Some(&token), &relayed(&partner, &raw)).await).await;
    assert_eq!(again["valid"], true);

    let signature = raw
        .rsplit("\"signature\":\"")
        .next()
        .unwrap()
        .trim_end_matches("\"}");
    let reencoded = [
        raw.clone(),
        raw.replace(signature, &signature.to_uppercase()),
        raw.replace(',', " ,\n "),
        raw.replace("\"payout\"", "\"\\u0070ayout\""),
        // The same object with its members in another order, signed in canonical form.
        keyward_core::signature::sign_body(
            br#"{"amount":5,"payout":"p-1"}"#,
            &keyward_core::SecretKey::parse(&partner.secret_key).unwrap(),
            keyward_core::signature::MessageForm::Canonical,
        )
        .unwrap(),
    ];
    for raw in reencoded {
        let data = data_of(app.verify(Some(&token), &once(&raw)).await).await;
        assert_eq!(data["valid"], false, "{raw}: {data}");
        assert_eq!(data["error"]["status"], 409);
        assert_eq!(data["error"]["code"], "replayed_request");
    }
    // A different request is new.
    let other = sign(r#"{"payout":"p-2","amount":5}"#, &partner.secret_key);
    let data = data_of(app.verify(Some(&token), &once(&other)).await).await;
    assert_eq!(data["valid"], true);
}

#[tokio::test]
async fn single_use_holds_across_two_nodes_under_concurrency() {
    let nodes = spawn_nodes(2, |_| {}).await;
    let partner = onboarded_on(&nodes, "RACE", "ops@race.example").await;
    let token = nodes[0].service_token("payments").await;
    let mut request = relayed(&partner, &sign(r#"{"payout":"p-9"}"#, &partner.secret_key));
    request["single_use"] = json!(true);

    let calls = (0..10).map(|i| {
        let node = &nodes[i % 2];
        let request = request.clone();
        let token = token.clone();
        async move {
            let data = data_of(node.verify(Some(&token), &request).await).await;
            data["valid"].as_bool().unwrap()
        }
    });
    let results = futures::future::join_all(calls).await;

    assert_eq!(results.iter().filter(|v| **v).count(), 1, "{results:?}");
}

#[tokio::test]
async fn the_allow_list_needs_client_ip_and_checks_it() {
    let app = spawn_app().await;
    let partner = app.onboarded_partner("ALLOW", "ops@allow.example").await;
    let token = app.service_token("payments").await;
    let raw = sign("{}", &partner.secret_key);
    let code = PartnerCode::parse("ALLOW").unwrap();
    let with_ip = |ip: Option<&str>| {
        let mut request = relayed(&partner, &raw);
        if let Some(ip) = ip {
            request["client_ip"] = json!(ip);
        }
        request
    };

    // No allow-list: client_ip is optional.
    let data = data_of(app.verify(Some(&token), &with_ip(None)).await).await;
    assert_eq!(data["valid"], true);

    let list = AllowedIps::parse(["203.0.113.0/24", "2001:db8::/48"]).unwrap();
    keyward_server::flows::admin::set_allowed_ips(&app.state, &code, list, OPERATOR)
        .await
        .unwrap();
    let (status, code_, body) = error_of(app.verify(Some(&token), &with_ip(None)).await).await;
    assert_eq!((status, code_.as_str()), (400, "missing_fields"));
    assert_eq!(body["errors"][0]["field"], "client_ip");

    for allowed in ["203.0.113.7", "::ffff:203.0.113.7", "2001:db8::1"] {
        let data = data_of(app.verify(Some(&token), &with_ip(Some(allowed))).await).await;
        assert_eq!(data["valid"], true, "{allowed}: {data}");
    }
    let data = data_of(
        app.verify(Some(&token), &with_ip(Some("198.51.100.1")))
            .await,
    )
    .await;
    assert_eq!(data["error"]["code"], "ip_not_allowed");
    assert_eq!(data["error"]["status"], 403);
}

#[tokio::test]
async fn a_key_revoked_on_one_node_is_refused_by_verify_on_the_other() {
    let nodes = spawn_nodes(2, |_| {}).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let partner = onboarded_on(&nodes, "TWO", "ops@two.example").await;
    let token = a.service_token("payments").await;
    let raw = sign("{}", &partner.secret_key);
    let data = data_of(b.verify(Some(&token), &relayed(&partner, &raw)).await).await;
    assert_eq!(data["valid"], true);

    a.regenerate(&partner, "ops@two.example").await;
    let link = regeneration_link(&nodes, "ops@two.example", 2).await;
    a.redeem(&link, "TWO").await;

    let data = data_of(b.verify(Some(&token), &relayed(&partner, &raw)).await).await;
    assert_eq!(data["error"]["code"], "revoked_key", "{data}");
}

#[tokio::test]
async fn the_verify_api_and_metrics_are_not_on_the_public_listener() {
    let app = spawn_app().await;
    let token = app.service_token("payments").await;
    let internal_host = app
        .internal_address
        .trim_start_matches("http://")
        .to_owned();
    for path in [
        "/internal/v1/verify",
        "/metrics",
        "/internal/openapi.json",
        "/internal/v1/verify/",
    ] {
        for method in [reqwest::Method::GET, reqwest::Method::POST] {
            let response = app
                .client
                .request(method.clone(), format!("{}{path}", app.address))
                .header("host", &internal_host)
                .bearer_auth(&token)
                .json(&json!({"body": "{}"}))
                .send()
                .await
                .unwrap();
            let (status, code, _) = error_of(response).await;
            assert_eq!(
                (status, code.as_str()),
                (404, "not_found"),
                "{method} {path}"
            );
        }
    }
    let metrics = app
        .client
        .get(format!("{}/metrics", app.internal_address))
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), 200);
    assert!(metrics
        .text()
        .await
        .unwrap()
        .contains("keyward_http_requests_total"));
}

#[tokio::test]
async fn a_revoked_service_token_is_refused_on_every_node_once_revoke_returns() {
    let bound = std::time::Duration::from_millis(300);
    let nodes = spawn_nodes(2, |s| s.key_cache = bound).await;
    let partner = onboarded_on(&nodes, "SVC2", "ops@svc2.example").await;
    let token = nodes[0].service_token("payments").await;
    let request = relayed(&partner, &sign("{}", &partner.secret_key));
    // Node B has read the live tokens: its snapshot holds this one.
    assert_eq!(nodes[1].verify(Some(&token), &request).await.status(), 200);

    let store = &nodes[0].state.store;
    keyward_server::flows::service_tokens::revoke(
        store,
        "payments",
        "tests",
        None,
        chrono::Utc::now(),
        bound,
    )
    .await
    .unwrap();

    let (status, code, _) = error_of(nodes[1].verify(Some(&token), &request).await).await;
    assert_eq!((status, code.as_str()), (401, "invalid_service_token"));
}

#[tokio::test]
async fn a_service_token_is_accepted_on_every_node_when_the_cli_that_made_it_returns() {
    let nodes = spawn_nodes(2, |s| s.key_cache = std::time::Duration::from_secs(3)).await;
    let partner = onboarded_on(&nodes, "TOKENNEW", "ops@tokennew.example").await;
    // Both nodes hold a snapshot of the live tokens, taken before the new one exists.
    let first = nodes[0].service_token("first").await;
    let raw = sign("{}", &partner.secret_key);
    for node in &nodes {
        let data = data_of(node.verify(Some(&first), &relayed(&partner, &raw)).await).await;
        assert_eq!(data["valid"], true);
    }

    let url =
        secrecy::ExposeSecret::expose_secret(&nodes[0].state.settings.database_url).to_owned();
    let dir = tempfile::tempdir().unwrap();
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args(["service-token", "create", "second"])
        .env("KEYWARD_DATABASE_URL", &url)
        .env("KEYWARD_DATA_DIR", dir.path())
        .env("KEYWARD_KEY_CACHE_MS", "3000")
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let second = String::from_utf8(output.stdout).unwrap().trim().to_owned();

    for node in &nodes {
        let response = node.verify(Some(&second), &relayed(&partner, &raw)).await;
        assert_eq!(response.status(), 200, "the new token is accepted at once");
        assert_eq!(data_of(response).await["valid"], true);
    }
}
