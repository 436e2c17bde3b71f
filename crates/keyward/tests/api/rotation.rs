//! Rotation without an outage (SPEC §3.2): a regeneration with `overlap_seconds` retires the
//! old pair instead of revoking it; `RetireOldKeys` ends it early; answers made with it carry
//! `Keyward-Key-Expires`; a reminder goes out a day ahead. Time moves through the injected
//! clock.

use crate::cluster::{onboarded_on, regeneration_link, spawn_nodes, wait_for};
use crate::helpers::*;
use keyward_core::wire::paths::{REGENERATE, RETIRE_OLD_KEYS, WHOAMI};
use serde_json::{json, Value};
use std::time::Duration;

const EXPIRES: &str = "keyward-key-expires";

async fn request_overlap(
    app: &TestApp,
    partner: &Partner,
    email: &str,
    overlap: Value,
) -> reqwest::Response {
    let body = json!({
        "email": email, "partner_code": partner.code,
        "overlap_seconds": overlap, "nonce": uuid_like(),
    });
    app.signed(REGENERATE, &body, &partner.public_key, &partner.secret_key)
        .await
}

/// The link of the `n`-th regeneration email to `to` (notices arrive in between).
async fn nth_regeneration_link(app: &TestApp, to: &str, n: usize) -> String {
    let link = eventually(Duration::from_secs(15), || {
        let links: Vec<_> = app
            .emails_to(to)
            .into_iter()
            .filter(|e| e.subject.starts_with("Regenerate"))
            .collect();
        std::future::ready(links.get(n - 1).map(|email| link_in_text(&email.text)))
    })
    .await;
    link.unwrap_or_else(|| panic!("no regeneration email number {n} to {to}"))
}

/// Regenerates `partner`'s keys with an overlap; returns the new pair.
async fn rotate(app: &TestApp, partner: &Partner, email: &str, overlap: i64, n: usize) -> Partner {
    let response = request_overlap(app, partner, email, json!(overlap)).await;
    assert_eq!(response.status(), 200);
    let link = nth_regeneration_link(app, email, n).await;
    app.redeem(&link, &partner.code).await
}

async fn whoami_data(app: &TestApp, partner: &Partner) -> (Option<String>, Value) {
    let response = app.whoami(partner).await;
    assert_eq!(response.status(), 200);
    let header = response
        .headers()
        .get(EXPIRES)
        .map(|v| v.to_str().unwrap().to_owned());
    let body: Value = response.json().await.unwrap();
    (header, body["data"].clone())
}

async fn whoami_code(app: &TestApp, partner: &Partner) -> String {
    error_of(app.whoami(partner).await).await.1
}

#[tokio::test]
async fn the_old_pair_works_until_the_overlap_ends_then_is_expired() {
    let app = spawn_app().await;
    let email = "ops@overlap.example";
    let old = app.onboarded_partner("OVERLAP", email).await;
    // The link page says what will happen before anything is used.
    assert_eq!(
        request_overlap(&app, &old, email, json!(3600))
            .await
            .status(),
        200
    );
    let link = nth_regeneration_link(&app, email, 1).await;
    let page = app
        .client
        .get(&link)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("keep working for 1 hour after you press the button"),
        "{page}"
    );
    let regenerated_at = keyward_server::clock::Clock::now(&app.clock);
    let new = app.redeem(&link, "OVERLAP").await;
    assert_eq!(new.partner_id, old.partner_id);

    // Both pairs work; only the old one's answers say when it stops.
    let expected = (regenerated_at + chrono::TimeDelta::seconds(3600))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let (header, data) = whoami_data(&app, &old).await;
    assert_eq!(header.as_deref(), Some(expected.as_str()));
    assert_eq!(data["key_expires_at"], expected.as_str());
    let (header, data) = whoami_data(&app, &new).await;
    assert_eq!(header, None);
    assert!(data["key_expires_at"].is_null());
    assert_eq!(data["allowed_ips"], json!([]));

    // The notice states the expiry.
    let notices = app.wait_for_emails(email, 3).await;
    let notice = notices
        .iter()
        .find(|e| e.subject.contains("were regenerated"))
        .unwrap();
    assert!(
        notice.text.contains("keeps working until"),
        "{}",
        notice.text
    );

    // One millisecond before the end it still works; at the end and after, expired_key.
    app.clock
        .advance(chrono::TimeDelta::seconds(3600) - chrono::TimeDelta::milliseconds(1));
    assert_eq!(app.whoami(&old).await.status(), 200);
    app.clock.advance(chrono::TimeDelta::milliseconds(1));
    assert_eq!(whoami_code(&app, &old).await, "expired_key");
    app.clock.advance(chrono::TimeDelta::days(1));
    let (status, code, _) = error_of(app.whoami(&old).await).await;
    assert_eq!((status, code.as_str()), (401, "expired_key"));
    assert_eq!(app.whoami(&new).await.status(), 200);
}

#[tokio::test]
async fn without_an_overlap_the_old_pair_stops_at_once() {
    let app = spawn_app().await;
    let email = "ops@nooverlap.example";
    let old = app.onboarded_partner("NOOVERLAP", email).await;
    assert_eq!(
        request_overlap(&app, &old, email, json!(0)).await.status(),
        200
    );
    let link = nth_regeneration_link(&app, email, 1).await;
    let page = app
        .client
        .get(&link)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("Your current keys stop working when you press the button"));
    let new = app.redeem(&link, "NOOVERLAP").await;
    assert_eq!(whoami_code(&app, &old).await, "revoked_key");
    assert_eq!(whoami_data(&app, &new).await.0, None);
}

#[tokio::test]
async fn a_second_regeneration_revokes_the_retiring_pair_at_once() {
    let app = spawn_app().await;
    let email = "ops@twice.example";
    let first = app.onboarded_partner("TWICE", email).await;
    let second = rotate(&app, &first, email, 86_400, 1).await;
    let third = rotate(&app, &second, email, 86_400, 2).await;
    // One current and one retiring pair at most: the first is revoked, not expired.
    assert_eq!(whoami_code(&app, &first).await, "revoked_key");
    assert!(whoami_data(&app, &second).await.0.is_some());
    assert!(whoami_data(&app, &third).await.0.is_none());

    // The database itself refuses a second retiring or a second current pair.
    let id = keyward_core::PartnerId::parse(&first.partner_id).unwrap();
    let mut tx = app.state.store.begin().await.unwrap();
    assert!(tx
        .retire_current_key(&id, chrono::DateTime::<chrono::Utc>::MAX_UTC)
        .await
        .is_err());
    drop(tx);
    let pair = keyward_core::KeyPair::generate(&mut rand::rngs::OsRng);
    let mut tx = app.state.store.begin().await.unwrap();
    let inserted = tx
        .insert_key(&keyward_server::store::NewKey {
            id: &uuid_like(),
            partner_id: &id,
            public_key_hash: &pair.public.hash(),
            public_key_hint: "pk_partner_xxxx",
            secret_ciphertext: b"x",
            secret_key_hash: &pair.secret.hash(),
            created_at: 0,
            class: &keyward_server::store::KeyClass::Primary,
            mode: keyward_core::KeyMode::Live,
            slot: None,
        })
        .await;
    assert!(inserted.is_err(), "a second current pair was accepted");
}

#[tokio::test]
async fn retire_old_keys_ends_the_overlap_now() {
    let app = spawn_app().await;
    let email = "ops@retire.example";
    let old = app.onboarded_partner("RETIRE", email).await;
    let new = rotate(&app, &old, email, 7 * 86_400, 1).await;

    // Signed with the retiring pair: refused (only the current pair manages the account).
    let response = app
        .signed(
            RETIRE_OLD_KEYS,
            &json!({}),
            &old.public_key,
            &old.secret_key,
        )
        .await;
    assert!(response.headers().get(EXPIRES).is_some());
    let (status, code, _) = error_of(response).await;
    assert_eq!((status, code.as_str()), (403, "key_retiring"));
    assert_eq!(app.whoami(&old).await.status(), 200);

    let retire = || async {
        let response = app
            .signed(
                RETIRE_OLD_KEYS,
                &json!({}),
                &new.public_key,
                &new.secret_key,
            )
            .await;
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        body["data"]["revoked"].as_u64().unwrap()
    };
    assert_eq!(retire().await, 1);
    assert_eq!(whoami_code(&app, &old).await, "revoked_key");
    assert_eq!(retire().await, 0);
    assert_eq!(app.whoami(&new).await.status(), 200);
    let id = keyward_core::PartnerId::parse(&new.partner_id).unwrap();
    let events = app.state.store.audit_events(&id, 10).await.unwrap();
    assert!(events.iter().any(|e| e.event == "retiring_keys_revoked"));
}

#[tokio::test]
async fn the_overlap_is_validated_and_the_lost_keys_path_never_keeps_the_old_pair() {
    let app = spawn_app().await;
    let email = "ops@bounds.example";
    let partner = app.onboarded_partner("BOUNDS", email).await;
    for bad in [
        json!(-1),
        json!(604_801),
        json!(1.5),
        json!("3600"),
        json!(true),
    ] {
        let (status, code, body) =
            error_of(request_overlap(&app, &partner, email, bad.clone()).await).await;
        assert_eq!((status, code.as_str()), (400, "invalid_field"), "{bad}");
        assert_eq!(body["errors"][0]["field"], "overlap_seconds");
    }
    assert_eq!(
        request_overlap(&app, &partner, email, json!(604_800))
            .await
            .status(),
        200
    );
    // Without keys, `overlap_seconds` is ignored: the lost pair may be in other hands.
    let response = app
        .post_json(
            REGENERATE,
            &json!({"email": email, "partner_code": "BOUNDS", "overlap_seconds": 3600}),
        )
        .await;
    assert_eq!(response.status(), 200);
    let link = nth_regeneration_link(&app, email, 2).await;
    let page = app
        .client
        .get(&link)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("stop working when you press the button"));
    app.redeem(&link, "BOUNDS").await;
    assert_eq!(whoami_code(&app, &partner).await, "revoked_key");
}

#[tokio::test]
async fn the_reminder_is_emailed_once_a_day_ahead_with_two_senders() {
    let nodes = spawn_nodes(2, |_| {}).await;
    let email = "ops@reminder.example";
    let old = onboarded_on(&nodes, "REMINDER", email).await;
    let body = json!({"email": email, "partner_code": "REMINDER", "overlap_seconds": 3 * 86_400});
    let response = nodes[0]
        .signed(REGENERATE, &body, &old.public_key, &old.secret_key)
        .await;
    assert_eq!(response.status(), 200);
    let link = regeneration_link(&nodes, email, 2).await;
    nodes[1].redeem(&link, "REMINDER").await;
    let reminders = |nodes: &[TestApp]| {
        nodes
            .iter()
            .flat_map(|n| n.emails_to(email))
            .filter(|e| e.subject.starts_with("Your previous API keys"))
            .count()
    };
    // Not before its time (a day before the expiry, two days from now)...
    for node in &nodes {
        node.clock.advance(chrono::TimeDelta::hours(47));
    }
    settle(&nodes).await; // the reminder is scheduled, not due
    assert_eq!(reminders(&nodes), 0);
    // ...then once, whichever node claims it.
    for node in &nodes {
        node.clock.advance(chrono::TimeDelta::hours(1));
    }
    settle(&nodes).await;
    assert_eq!(reminders(&nodes), 1);
    let reminder = nodes
        .iter()
        .flat_map(|n| n.emails_to(email))
        .find(|e| e.subject.starts_with("Your previous API keys"))
        .unwrap();
    assert!(reminder.text.contains("expired_key"));
}

#[tokio::test]
async fn no_reminder_for_a_short_overlap_or_a_pair_retired_early() {
    let app = spawn_app().await;
    let email = "ops@noreminder.example";
    let first = app.onboarded_partner("NOREMINDER", email).await;
    // 47 hours: under the 48 hours that get a reminder.
    let second = rotate(&app, &first, email, 47 * 3600, 1).await;
    // 3 days, then retired at once: the reminder queued for it is cancelled.
    let third = rotate(&app, &second, email, 3 * 86_400, 2).await;
    let response = app
        .signed(
            RETIRE_OLD_KEYS,
            &json!({}),
            &third.public_key,
            &third.secret_key,
        )
        .await;
    assert_eq!(response.status(), 200);
    app.clock.advance(chrono::TimeDelta::days(3));
    app.settle().await; // nothing due is left unsent: a reminder still queued would show
    let reminders = app
        .emails_to(email)
        .iter()
        .filter(|e| e.subject.starts_with("Your previous API keys"))
        .count();
    assert_eq!(reminders, 0);
}

#[tokio::test]
async fn the_retiring_pair_expires_on_every_node() {
    let nodes = spawn_nodes(2, |_| {}).await;
    let email = "ops@expiry.example";
    let old = onboarded_on(&nodes, "EXPIRY", email).await;
    let body = json!({"email": email, "partner_code": "EXPIRY", "overlap_seconds": 600});
    let response = nodes[0]
        .signed(REGENERATE, &body, &old.public_key, &old.secret_key)
        .await;
    assert_eq!(response.status(), 200);
    let link = regeneration_link(&nodes, email, 2).await;
    let new = nodes[0].redeem(&link, "EXPIRY").await;
    // The other node accepts (and caches) the old key, with its expiry.
    let response = nodes[1].whoami(&old).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers().get(EXPIRES).is_some());
    for node in &nodes {
        node.clock.advance(chrono::TimeDelta::seconds(601));
    }
    for node in &nodes {
        let (status, code, _) = error_of(node.whoami(&old).await).await;
        assert_eq!((status, code.as_str()), (401, "expired_key"));
        assert_eq!(node.whoami(&new).await.status(), 200);
    }
    wait_for(&nodes, email, 3).await;
}

#[tokio::test]
async fn the_verify_api_reports_a_retiring_key_and_its_expiry() {
    let app = spawn_app().await;
    let email = "ops@verifyexp.example";
    let old = app.onboarded_partner("VERIFYEXP", email).await;
    let new = rotate(&app, &old, email, 3600, 1).await;
    let token = app.service_token("payments").await;
    let body = sign("{}", &old.secret_key);
    let response = app
        .verify(
            Some(&token),
            &json!({"authorization": format!("Bearer {}", old.public_key), "body": body}),
        )
        .await;
    assert_eq!(response.status(), 200);
    let header = response
        .headers()
        .get(EXPIRES)
        .map(|v| v.to_str().unwrap().to_owned());
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["data"]["valid"], true);
    assert!(answer["data"]["key_expires_at"].is_string());
    assert_eq!(header.as_deref(), answer["data"]["key_expires_at"].as_str());
    app.clock.advance(chrono::TimeDelta::hours(2));
    let response = app
        .verify(
            Some(&token),
            &json!({"authorization": format!("Bearer {}", old.public_key), "body": body}),
        )
        .await;
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["data"]["valid"], false);
    assert_eq!(answer["data"]["error"]["code"], "expired_key");
    assert_eq!(answer["data"]["error"]["status"], 401);
    // WhoAmI's own route is what the hot path measures: unchanged for the current key.
    let response = app
        .signed(WHOAMI, &json!({}), &new.public_key, &new.secret_key)
        .await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn retire_old_keys_is_in_force_on_the_other_node_when_it_answers() {
    let nodes = spawn_nodes(2, |_| {}).await;
    let email = "ops@retirenodes.example";
    let old = onboarded_on(&nodes, "RETIRENODES", email).await;
    let body = json!({"email": email, "partner_code": "RETIRENODES", "overlap_seconds": 3600});
    let response = nodes[0]
        .signed(REGENERATE, &body, &old.public_key, &old.secret_key)
        .await;
    assert_eq!(response.status(), 200);
    let link = regeneration_link(&nodes, email, 2).await;
    let new = nodes[0].redeem(&link, "RETIRENODES").await;
    // The other node holds the retiring key in its cache.
    assert_eq!(nodes[1].whoami(&old).await.status(), 200);
    let response = nodes[0]
        .signed(
            RETIRE_OLD_KEYS,
            &json!({}),
            &new.public_key,
            &new.secret_key,
        )
        .await;
    assert_eq!(response.status(), 200);
    let (status, code, _) = error_of(nodes[1].whoami(&old).await).await;
    assert_eq!((status, code.as_str()), (401, "revoked_key"));
    assert_eq!(nodes[1].whoami(&new).await.status(), 200);
}

#[tokio::test]
async fn a_retiring_pair_keeps_working_but_cannot_manage_the_account_on_any_node() {
    let nodes = spawn_nodes(2, |_| {}).await;
    let email = "ops@control.example";
    let old = onboarded_on(&nodes, "CONTROL", email).await;
    let body = json!({"email": email, "partner_code": "CONTROL", "overlap_seconds": 604_800});
    let response = nodes[0]
        .signed(REGENERATE, &body, &old.public_key, &old.secret_key)
        .await;
    assert_eq!(response.status(), 200);
    let link = regeneration_link(&nodes, email, 2).await;
    let new = nodes[0].redeem(&link, "CONTROL").await;
    let emails_before = wait_for(&nodes, email, 3).await.len();

    for (n, node) in nodes.iter().enumerate() {
        // The reviewer's attack: lock the new pair out with the old one.
        let lock_out = json!({"allowed_ips": ["203.0.113.7"], "confirm_lock_out": true});
        let again = json!({"email": email, "partner_code": "CONTROL", "nonce": uuid_like()});
        for (path, body) in [
            (keyward_core::wire::paths::SET_ALLOWED_IPS, lock_out),
            (REGENERATE, again),
            (RETIRE_OLD_KEYS, json!({})),
        ] {
            let response = node
                .signed(path, &body, &old.public_key, &old.secret_key)
                .await;
            assert!(response.headers().get(EXPIRES).is_some(), "{path}");
            let (status, code, _) = error_of(response).await;
            assert_eq!((status, code.as_str()), (403, "key_retiring"), "{path}");
        }
        // It still works where an overlap is meant to keep old systems running.
        assert_eq!(node.whoami(&old).await.status(), 200);
        let token = node.service_token(&format!("payments-{n}")).await;
        let raw = sign("{}", &old.secret_key);
        let request = json!({
            "authorization": format!("Bearer {}", old.public_key),
            "body": raw, "client_ip": "127.0.0.1",
        });
        let verdict: Value = node
            .verify(Some(&token), &request)
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(verdict["data"]["valid"], true, "{verdict}");
    }

    // Nothing changed: the new pair works from here, and no link was emailed.
    let (_, data) = whoami_data(&nodes[1], &new).await;
    assert_eq!(data["allowed_ips"], json!([]));
    settle(&nodes).await;
    let emails = crate::cluster::emails_to(&nodes, email);
    let regeneration_emails = emails
        .iter()
        .filter(|e| e.subject.starts_with("Regenerate"))
        .count();
    assert_eq!(regeneration_emails, 1);
    assert_eq!(emails.len(), emails_before);
}
