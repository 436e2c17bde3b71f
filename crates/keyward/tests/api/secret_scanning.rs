//! GitHub's secret scanning partner endpoint and `keyward leak report` (SPEC §9.2). GitHub is
//! played by a key of the test's own, served as GitHub's key list on 127.0.0.1: no request
//! leaves the machine.

use crate::cluster::{emails_to, onboarded_on, spawn_nodes, wait_for};
use crate::helpers::*;
use base64::Engine as _;
use keyward_core::wire::paths::GITHUB_SECRET_SCANNING;
use keyward_server::config::LeakAction;
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use p256::pkcs8::EncodePublicKey;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// GitHub as the tests play it: signing keys, and the key list it publishes over HTTP.
struct FakeGitHub {
    keys_url: String,
    identifier: String,
    key: SigningKey,
    /// How often the key list was fetched.
    fetches: Arc<AtomicUsize>,
}

impl FakeGitHub {
    async fn start() -> Self {
        let key = SigningKey::random(&mut rand::rngs::OsRng);
        let identifier = format!("{:x}", rand::random::<u64>());
        let pem = key
            .verifying_key()
            .to_public_key_pem(p256::pkcs8::LineEnding::LF)
            .unwrap();
        let list = json!({"public_keys": [
            {"key_identifier": identifier, "key": pem, "is_current": true},
            {"key_identifier": "broken", "key": "not a key", "is_current": false},
        ]});
        let fetches = Arc::new(AtomicUsize::new(0));
        let counter = fetches.clone();
        let router = axum::Router::new().route(
            "/meta/public_keys/secret_scanning",
            axum::routing::get(move || {
                let list = list.clone();
                counter.fetch_add(1, Ordering::SeqCst);
                async move { axum::Json(list) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await });
        Self {
            keys_url: format!("http://{address}/meta/public_keys/secret_scanning"),
            identifier,
            key,
            fetches,
        }
    }

    fn signature(&self, body: &str) -> String {
        let signature: Signature = self.key.sign(body.as_bytes());
        base64::engine::general_purpose::STANDARD.encode(signature.to_der().as_bytes())
    }

    /// POSTs `reports` to `app` as GitHub would, signed by this GitHub's key.
    async fn report(&self, app: &TestApp, reports: &Value) -> reqwest::Response {
        let body = reports.to_string();
        let signature = self.signature(&body);
        send(app, &body, Some(&self.identifier), Some(&signature)).await
    }
}

async fn send(
    app: &TestApp,
    body: &str,
    identifier: Option<&str>,
    signature: Option<&str>,
) -> reqwest::Response {
    let mut request = app
        .client
        .post(format!("{}{GITHUB_SECRET_SCANNING}", app.address))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(identifier) = identifier {
        request = request.header("Github-Public-Key-Identifier", identifier);
    }
    if let Some(signature) = signature {
        request = request.header("Github-Public-Key-Signature", signature);
    }
    request.send().await.unwrap()
}

fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

fn found(token: &str, url: &str) -> Value {
    json!({"token": token, "type": "keyward_partner_key", "url": url, "source": "content"})
}

async fn app_with(github: &FakeGitHub, action: LeakAction) -> TestApp {
    let keys_url = github.keys_url.parse().unwrap();
    spawn_app_with(|s| {
        s.github_keys_url = Some(keys_url);
        s.leak_action = action;
    })
    .await
}

/// The audit events of a partner, newest first.
async fn events(app: &TestApp, code: &str) -> Vec<keyward_server::store::AuditEvent> {
    let partner = app
        .state
        .store
        .partner_by_code(&keyward_core::PartnerCode::parse(code).unwrap())
        .await
        .unwrap()
        .unwrap();
    app.state.store.audit_events(&partner.id, 50).await.unwrap()
}

#[tokio::test]
async fn a_leaked_public_key_is_revoked_and_the_partner_gets_a_link_to_new_keys() {
    let github = FakeGitHub::start().await;
    let app = app_with(&github, LeakAction::Revoke).await;
    let email = "dev@leaky.example";
    let partner = app.onboarded_partner("LEAKY", email).await;
    let url = "https://github.com/leaky/app/blob/abc123/.env";
    let stranger = keyward_core::KeyPair::generate(&mut rand::rngs::OsRng);
    let reports = json!([
        found(&partner.public_key, url),
        found(stranger.public.as_str(), url),
        found("pk_partner_notatokenatall", url),
        found(&partner.public_key, url),
    ]);

    let response = github.report(&app, &reports).await;
    assert_eq!(response.status(), 200);
    let feedback: Value = response.json().await.unwrap();
    let labels: Vec<&str> = feedback
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["label"].as_str().unwrap())
        .collect();
    assert_eq!(
        labels,
        [
            "true_positive",
            "false_positive",
            "false_positive",
            "true_positive"
        ]
    );
    assert_eq!(feedback[0]["token_hash"], sha256_hex(&partner.public_key));
    assert_eq!(feedback[0]["token_type"], "keyward_partner_key");
    assert!(
        feedback[0].get("success").is_none(),
        "not keyward's envelope"
    );

    // Revoked when the answer was sent.
    let (status, code, _) = error_of(app.whoami(&partner).await).await;
    assert_eq!((status, code.as_str()), (401, "revoked_key"));

    // One notice, however often the token was in the report, naming where it was found.
    let emails = app.wait_for_emails(email, 2).await;
    app.settle().await;
    assert_eq!(app.emails_to(email).len(), 2);
    let notice = &emails[1];
    assert!(notice.subject.contains("public key"), "{}", notice.subject);
    assert!(notice.text.contains(url) && notice.text.contains("revoked"));
    assert!(!notice.text.contains(&partner.public_key), "the whole key");
    let link = link_in_text(&notice.text);
    let renewed = app.redeem(&link, "LEAKY").await;
    assert_eq!(renewed.partner_id, partner.partner_id);
    assert_eq!(app.whoami(&renewed).await.status(), 200);

    let events = events(&app, "LEAKY").await;
    let leaked: Vec<_> = events.iter().filter(|e| e.event == "key_leaked").collect();
    assert_eq!(leaked.len(), 1, "{events:?}");
    let detail = leaked[0].detail.as_deref().unwrap();
    assert!(
        detail.contains(url) && detail.contains("revoked"),
        "{detail}"
    );
    assert!(app
        .metrics_text()
        .await
        .contains(r#"keyward_leaked_tokens_total{reporter="github",result="revoked"} 1"#));

    // Reported again: still ours, already revoked, nobody emailed.
    let again = github
        .report(&app, &json!([found(&partner.public_key, url)]))
        .await;
    let feedback: Value = again.json().await.unwrap();
    assert_eq!(feedback[0]["label"], "true_positive");
    app.settle().await;
    assert_eq!(app.emails_to(email).len(), 3, "only the new keys' notice");
}

#[tokio::test]
async fn a_leaked_secret_key_revokes_its_pair() {
    let github = FakeGitHub::start().await;
    let app = app_with(&github, LeakAction::Revoke).await;
    let partner = app
        .onboarded_partner("SECRETLEAK", "dev@secretleak.example")
        .await;
    let response = github
        .report(
            &app,
            &json!([found(&partner.secret_key, "https://gist.github.com/x/1")]),
        )
        .await;
    assert_eq!(response.status(), 200);
    let feedback: Value = response.json().await.unwrap();
    assert_eq!(feedback[0]["label"], "true_positive");
    assert_eq!(feedback[0]["token_hash"], sha256_hex(&partner.secret_key));
    let (status, code, _) = error_of(app.whoami(&partner).await).await;
    assert_eq!((status, code.as_str()), (401, "revoked_key"));
    let emails = app.wait_for_emails("dev@secretleak.example", 2).await;
    assert!(emails[1].subject.contains("secret key"));
}

#[tokio::test]
async fn with_leak_action_notify_the_pair_keeps_working_and_the_partner_is_told() {
    let github = FakeGitHub::start().await;
    let app = app_with(&github, LeakAction::Notify).await;
    let email = "dev@notified.example";
    let partner = app.onboarded_partner("NOTIFIED", email).await;
    let response = github
        .report(
            &app,
            &json!([found(&partner.public_key, "https://x.example/p")]),
        )
        .await;
    let feedback: Value = response.json().await.unwrap();
    assert_eq!(feedback[0]["label"], "true_positive");
    assert_eq!(app.whoami(&partner).await.status(), 200);
    let emails = app.wait_for_emails(email, 2).await;
    assert!(emails[1].text.contains("still works"));
    let events = events(&app, "NOTIFIED").await;
    assert!(events
        .iter()
        .any(|e| e.event == "key_leaked" && e.detail.as_deref().unwrap().contains("notify")));
}

#[tokio::test]
async fn reports_not_signed_by_githubs_published_key_are_refused_and_change_nothing() {
    let github = FakeGitHub::start().await;
    let app = app_with(&github, LeakAction::Revoke).await;
    let partner = app
        .onboarded_partner("GUARDEDLEAK", "dev@guardedleak.example")
        .await;
    let body = json!([found(&partner.public_key, "https://x.example")]).to_string();
    let impostor = SigningKey::random(&mut rand::rngs::OsRng);
    let forged: Signature = impostor.sign(body.as_bytes());
    let forged = base64::engine::general_purpose::STANDARD.encode(forged.to_der().as_bytes());
    let tampered = body.replace("x.example", "y.example");
    let signature = github.signature(&body);
    let cases: [(&str, Option<&str>, Option<&str>); 6] = [
        (&body, None, None),
        (&body, Some(&github.identifier), None),
        (&body, Some(&github.identifier), Some("not base64!")),
        (&body, Some(&github.identifier), Some(&forged)),
        (&tampered, Some(&github.identifier), Some(&signature)),
        (&body, Some("unknown-identifier"), Some(&signature)),
    ];
    for (body, identifier, signature) in cases {
        let response = send(&app, body, identifier, signature).await;
        assert_eq!(response.status(), 401);
        let answer: Value = response.json().await.unwrap();
        // keyward's envelope; `data` is null: GitHub's signature has no message hashes to show.
        assert_eq!(answer["code"], "invalid_signature", "{answer}");
        assert!(
            answer["data"].is_null()
                && answer["message"]
                    .as_str()
                    .unwrap()
                    .contains("Github-Public-Key")
        );
    }
    assert_eq!(app.whoami(&partner).await.status(), 200);
    // A made-up identifier makes keyward fetch the list again, but at most once a minute.
    assert_eq!(github.fetches.load(Ordering::SeqCst), 1);
    app.settle().await;
    assert_eq!(app.emails_to("dev@guardedleak.example").len(), 1);

    // A signed body that is not GitHub's shape.
    for (text, code) in [("{\"token\": 1}", "invalid_field"), ("[{", "invalid_json")] {
        let response = send(
            &app,
            text,
            Some(&github.identifier),
            Some(&github.signature(text)),
        )
        .await;
        let (status, got, _) = error_of(response).await;
        assert_eq!((status, got.as_str()), (400, code), "{text}");
    }
}

#[tokio::test]
async fn a_key_list_that_cannot_be_fetched_gets_503_so_github_retries() {
    let app = spawn_app_with(|s| {
        s.github_keys_url = Some("http://127.0.0.1:9/keys".parse().unwrap());
    })
    .await;
    let github = FakeGitHub::start().await;
    let response = github.report(&app, &json!([])).await;
    let (status, code, _) = error_of(response).await;
    assert_eq!((status, code.as_str()), (503, "unavailable"));
}

#[tokio::test]
async fn without_the_setting_the_endpoint_does_not_exist() {
    let app = spawn_app().await;
    let github = FakeGitHub::start().await;
    let (status, code, _) = error_of(github.report(&app, &json!([])).await).await;
    assert_eq!((status, code.as_str()), (404, "not_found"));
    assert_eq!(github.fetches.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_leaked_retiring_key_is_revoked_and_the_current_pair_keeps_working() {
    let github = FakeGitHub::start().await;
    let app = app_with(&github, LeakAction::Revoke).await;
    let email = "dev@rotating.example";
    let old = app.onboarded_partner("ROTATING", email).await;
    let body = json!({"email": email, "partner_code": "ROTATING", "nonce": uuid_like(), "overlap_seconds": 86400});
    let response = app
        .signed(REGENERATE, &body, &old.public_key, &old.secret_key)
        .await;
    assert_eq!(response.status(), 200);
    let link = app.link_in_email(email, 2).await;
    let current = app.redeem(&link, "ROTATING").await;
    assert_eq!(
        app.whoami(&old).await.status(),
        200,
        "retiring, still working"
    );

    let response = github
        .report(&app, &json!([found(&old.secret_key, "https://x.example")]))
        .await;
    assert_eq!(response.status(), 200);
    let (status, code, _) = error_of(app.whoami(&old).await).await;
    assert_eq!((status, code.as_str()), (401, "revoked_key"));
    assert_eq!(app.whoami(&current).await.status(), 200);
    let emails = app.wait_for_emails(email, 4).await;
    let notice = emails
        .iter()
        .find(|e| e.subject.contains("found in public"))
        .unwrap();
    assert!(
        !notice.text.contains("/link/"),
        "no link: the current pair works"
    );
}

#[tokio::test]
async fn a_revocation_by_report_holds_on_every_node_when_the_answer_is_sent() {
    let github = FakeGitHub::start().await;
    let keys_url: url::Url = github.keys_url.parse().unwrap();
    let nodes = spawn_nodes(2, |s| {
        s.github_keys_url = Some(keys_url.clone());
        s.key_cache = std::time::Duration::from_millis(1500);
    })
    .await;
    let email = "dev@twonodes-leak.example";
    let partner = onboarded_on(&nodes, "TWOLEAK", email).await;
    // The second node caches the key as live.
    assert_eq!(nodes[1].whoami(&partner).await.status(), 200);
    let response = github
        .report(
            &nodes[0],
            &json!([found(&partner.public_key, "https://x.example")]),
        )
        .await;
    assert_eq!(response.status(), 200);
    let (status, code, _) = error_of(nodes[1].whoami(&partner).await).await;
    assert_eq!((status, code.as_str()), (401, "revoked_key"));
    let emails = wait_for(&nodes, email, 2).await;
    assert!(emails.iter().any(|e| e.subject.contains("found in public")));
    settle(&nodes).await;
    assert_eq!(emails_to(&nodes, email).len(), 2);
}

#[tokio::test]
async fn keyward_leak_report_does_the_same_for_leaks_found_elsewhere() {
    let app = spawn_app().await;
    let email = "dev@cli-leak.example";
    let partner = app.onboarded_partner("CLILEAK", email).await;
    let token = app.service_token("payments-api").await;
    let file = app.dir.path().join("ticket.txt");
    std::fs::write(
        &file,
        format!(
            "the customer pasted\nsk={}\nand {token}\n",
            partner.secret_key
        ),
    )
    .unwrap();
    let file = file.display().to_string();
    let output = app.cli(&[
        "leak",
        "report",
        "--file",
        &file,
        "--url",
        "https://support.example/ticket/42",
        "--operator",
        "ana",
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("secret_key sk_partner_"), "{stdout}");
    assert!(stdout.contains("revoked on every node"), "{stdout}");
    assert!(stdout.contains("service token payments-api"), "{stdout}");
    assert!(!stdout.contains(&partner.secret_key) && !stdout.contains(&token));
    // In force on this node too when the command returned.
    let (status, code, _) = error_of(app.whoami(&partner).await).await;
    assert_eq!((status, code.as_str()), (401, "revoked_key"));
    // The command queued its email on the real clock; the app's clock is the test's.
    app.clock.advance(chrono::Duration::minutes(1));
    let emails = app.wait_for_emails(email, 2).await;
    assert!(emails[1].text.contains("https://support.example/ticket/42"));
    let events = events(&app, "CLILEAK").await;
    assert!(events.iter().any(|e| e.event == "key_leaked"));

    // A token that is not one of ours, typed by hand.
    let output = app.cli(&["leak", "report", "pk_partner_tooshort"]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("not a keyward token"));
}

#[tokio::test]
async fn pairs_made_before_secret_hashes_were_stored_are_found_by_their_secret() {
    let github = FakeGitHub::start().await;
    let app = app_with(&github, LeakAction::Revoke).await;
    let partner = app
        .onboarded_partner("OLDPAIR", "dev@oldpair.example")
        .await;
    // As a pair stored before migration 0007 was.
    let pool = sqlx_pool(&app).await;
    sqlx::query("UPDATE partner_keys SET secret_key_hash = NULL")
        .execute(&pool)
        .await
        .unwrap();
    let stored = keyward_server::flows::leaks::backfill_secret_hashes(&app.state)
        .await
        .unwrap();
    assert_eq!(stored, 1);
    let response = github
        .report(
            &app,
            &json!([found(&partner.secret_key, "https://x.example")]),
        )
        .await;
    let feedback: Value = response.json().await.unwrap();
    assert_eq!(feedback[0]["label"], "true_positive");
    let (status, code, _) = error_of(app.whoami(&partner).await).await;
    assert_eq!((status, code.as_str()), (401, "revoked_key"));
}

async fn sqlx_pool(app: &TestApp) -> sqlx::AnyPool {
    sqlx::any::install_default_drivers();
    let url = secrecy::ExposeSecret::expose_secret(&app.state.settings.database_url).to_owned();
    sqlx::AnyPool::connect(&url).await.unwrap()
}

#[tokio::test]
async fn githubs_batches_may_be_larger_than_a_partner_request_up_to_a_mebibyte() {
    let github = FakeGitHub::start().await;
    let app = app_with(&github, LeakAction::Revoke).await;
    // ~110 KiB: over the partner API's 64 KiB, under the endpoint's own 1 MiB.
    let batch: Vec<Value> = (0..900)
        .map(|i| found(&format!("pk_partner_{i:0>40}"), "https://github.com/o/r"))
        .collect();
    let batch = Value::Array(batch);
    assert!(batch.to_string().len() > 64 * 1024);
    let response = github.report(&app, &batch).await;
    assert_eq!(response.status(), 200);
    let feedback: Value = response.json().await.unwrap();
    assert_eq!(feedback.as_array().map(Vec::len), Some(900));
    // Over 1 MiB: refused before any lookup.
    let huge = Value::Array(vec![found(&"x".repeat(1 << 20), "https://github.com/o/r")]);
    assert_eq!(github.report(&app, &huge).await.status(), 413);
}
