//! Helping partners fix their signing (SPEC §3.4b): `GET /api/v1/time`, the data of
//! `stale_request` and `invalid_signature`, and `keyward sign --explain`, checked against the
//! messages Node.js made for the shared vectors.

use crate::helpers::*;
use crate::partner_side::keyward;
use crate::vectors::Case;
use keyward_core::wire::paths::{TIME, WHOAMI};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// The vector cases whose body is well formed and unchanged: Node's two messages are exactly
/// what the server must hash.
fn well_formed_cases() -> Vec<Case> {
    crate::vectors::cases()
        .into_iter()
        .filter(|c| c.expect == "valid" && c.template.is_some())
        .collect()
}

fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

#[tokio::test]
async fn invalid_signature_carries_the_sha256_of_the_node_made_messages() {
    let app = spawn_app().await;
    let partner = app.onboarded_partner("HASHES", "ops@hashes.example").await;
    let cases = well_formed_cases();
    assert!(cases.len() >= 10);
    for case in &cases {
        // A well-formed signature that is simply wrong.
        let body = case
            .template
            .as_ref()
            .unwrap()
            .replace("__SIG__", &"0".repeat(128));
        let response = app
            .post_raw(
                WHOAMI,
                &body,
                Some(&format!("Bearer {}", partner.public_key)),
            )
            .await;
        let (status, code, answer) = error_of(response).await;
        assert_eq!(
            (status, code.as_str()),
            (401, "invalid_signature"),
            "{}",
            case.name
        );
        let hashes = &answer["data"]["message_sha256"];
        assert_eq!(
            hashes["as_sent"],
            sha256_hex(case.message_as_sent.as_ref().unwrap()),
            "case {:?}",
            case.name
        );
        assert_eq!(
            hashes["canonical"],
            sha256_hex(case.message_jcs.as_ref().unwrap()),
            "case {:?}",
            case.name
        );
    }
}

#[tokio::test]
async fn the_cli_explains_both_messages_as_node_made_them() {
    for case in well_formed_cases() {
        let body = case.template.as_ref().unwrap().replace("__SIG__", "x");
        // No key is needed to explain a body.
        let (ok, stdout, stderr) = keyward(&["sign", "--explain"], &[], Some(&body)).await;
        assert!(ok, "{stderr}");
        let as_sent = case.message_as_sent.as_ref().unwrap();
        let canonical = case.message_jcs.as_ref().unwrap();
        assert!(
            stdout.contains(&format!(
                "message  {as_sent}\n  sha256   {}",
                sha256_hex(as_sent)
            )),
            "case {:?}:\n{stdout}",
            case.name
        );
        assert!(
            stdout.contains(&format!(
                "message  {canonical}\n  sha256   {}",
                sha256_hex(canonical)
            )),
            "case {:?}:\n{stdout}",
            case.name
        );
        assert!(stdout.contains("nothing signed"));
    }
    // With a key, the signature and the signed body follow.
    let secret = "sk_partner_fbi9lNL7GCHyd6uQEMDFGH19bSqMwB2OfotK";
    let (ok, stdout, stderr) = keyward(
        &["sign", "--explain"],
        &[("KEYWARD_SECRET_KEY", secret)],
        Some(r#"{"email":"sample@example.com","partner_code":"ACME"}"#),
    )
    .await;
    assert!(ok, "{stderr}");
    // The signature Node.js computed for this body (the first vector).
    let node = "1c9b9ac12204b196280fcc81515f20478347b6b73e3e4e3a89023d944f7b3c292f4ba4021136be12ad0bd0a2eb2948fc0a6cd06e28efa18d74f506631ee02981";
    assert!(
        stdout.contains(&format!("signature (as sent):\n  {node}")),
        "{stdout}"
    );
    assert!(stdout
        .trim_end()
        .ends_with(&format!(r#""signature":"{node}"}}"#)));
}

#[tokio::test]
async fn a_stale_request_says_how_far_off_the_clock_is() {
    let app = spawn_app().await;
    let partner = app.onboarded_partner("STALE", "ops@stale.example").await;
    let now = keyward_server::clock::millis(keyward_server::clock::Clock::now(&app.clock));
    for skew in [-600_000_i64, 301_000] {
        let body = json!({"timestamp": now + skew});
        let response = app
            .signed(WHOAMI, &body, &partner.public_key, &partner.secret_key)
            .await;
        let (status, code, answer) = error_of(response).await;
        assert_eq!((status, code.as_str()), (401, "stale_request"));
        assert_eq!(answer["data"]["server_time_ms"], now);
        assert_eq!(answer["data"]["skew_ms"], skew);
    }
    // Within the window: accepted.
    let body = json!({"timestamp": (now - 299_000).to_string()});
    let response = app
        .signed(WHOAMI, &body, &partner.public_key, &partner.secret_key)
        .await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn the_time_route_tells_the_servers_clock() {
    let app = spawn_app().await;
    app.clock.advance(chrono::TimeDelta::minutes(10));
    let expected = keyward_server::clock::Clock::now(&app.clock);
    let response = app
        .client
        .get(format!("{}{TIME}", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["success"], true);
    assert_eq!(body["data"]["server_time_ms"], expected.timestamp_millis());
    let text = body["data"]["server_time"].as_str().unwrap();
    assert_eq!(
        chrono::DateTime::parse_from_rfc3339(text)
            .unwrap()
            .timestamp_millis(),
        expected.timestamp_millis()
    );
}

#[tokio::test]
async fn the_sdk_corrects_its_timestamp_by_the_servers_clock_when_asked() {
    let app = spawn_app().await;
    let partner = app.onboarded_partner("SKEWED", "ops@skewed.example").await;
    // The server's clock is 20 minutes ahead of this machine's.
    app.clock.advance(chrono::TimeDelta::minutes(20));
    let client = keyward_client::Client::new(&app.address).unwrap();
    let plain = client
        .with_credentials(&partner.public_key, &partner.secret_key)
        .unwrap();
    match plain.whoami().await {
        Err(keyward_client::ClientError::Api { code, data, .. }) => {
            assert_eq!(code, keyward_core::ErrorCode::StaleRequest);
            let skew = data.unwrap()["skew_ms"].as_i64().unwrap();
            assert!((-1_210_000..-1_190_000).contains(&skew), "{skew}");
        }
        other => panic!("expected stale_request, got {other:?}"),
    }
    let corrected = plain.clone().correct_clock();
    assert_eq!(corrected.whoami().await.unwrap().partner_code, "SKEWED");
    let offset = corrected.sync_clock().await.unwrap();
    assert!((1_190_000..1_210_000).contains(&offset), "{offset}");
}
