//! `SetAllowedIps` (SPEC §3.4a): the partner's own allow-list, normalised, with lock-out
//! protection, a notice email, an audit event, and in force on every node when it answers.

use crate::cluster::{onboarded_on, spawn_nodes};
use crate::helpers::*;
use keyward_core::wire::paths::SET_ALLOWED_IPS;
use serde_json::{json, Value};

async fn set(app: &TestApp, partner: &Partner, body: Value) -> reqwest::Response {
    let mut body = body;
    body["nonce"] = json!(uuid_like());
    app.signed(
        SET_ALLOWED_IPS,
        &body,
        &partner.public_key,
        &partner.secret_key,
    )
    .await
}

#[tokio::test]
async fn a_list_is_normalised_returned_and_shown_by_whoami() {
    let app = spawn_app().await;
    let email = "ops@allow.example";
    let partner = app.onboarded_partner("ALLOW", email).await;
    let response = set(
        &app,
        &partner,
        json!({"allowed_ips": [
            "127.0.0.1", "198.51.100.7/24", "2001:DB8::/48", "::ffff:203.0.113.9", "127.0.0.1"
        ]}),
    )
    .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let expected = json!([
        "127.0.0.1",
        "198.51.100.0/24",
        "2001:db8::/48",
        "203.0.113.9"
    ]);
    assert_eq!(body["data"]["allowed_ips"], expected);
    let whoami: Value = app.whoami(&partner).await.json().await.unwrap();
    assert_eq!(whoami["data"]["allowed_ips"], expected);

    // The partner is told, and the change is audited with the address that made it.
    let emails = app.wait_for_emails(email, 2).await;
    let notice = emails
        .iter()
        .find(|e| e.subject.contains("allow-list"))
        .unwrap();
    assert!(notice.text.contains("2001:db8::/48"), "{}", notice.text);
    let id = keyward_core::PartnerId::parse(&partner.partner_id).unwrap();
    let events = app.state.store.audit_events(&id, 10).await.unwrap();
    let event = events
        .iter()
        .find(|e| e.event == "allowed_ips_changed")
        .unwrap();
    assert_eq!(event.ip.as_deref(), Some("127.0.0.1"));

    // `[]` allows any address again.
    let response = set(&app, &partner, json!({"allowed_ips": []})).await;
    assert_eq!(response.status(), 200);
    let whoami: Value = app.whoami(&partner).await.json().await.unwrap();
    assert_eq!(whoami["data"]["allowed_ips"], json!([]));
}

#[tokio::test]
async fn a_list_that_would_lock_out_the_caller_needs_confirmation() {
    let app = spawn_app().await;
    let partner = app
        .onboarded_partner("LOCKOUT", "ops@lockout.example")
        .await;
    // An IPv6 block that does not hold 127.0.0.1.
    let list = json!({"allowed_ips": ["2001:db8::/32"]});
    let (status, code, body) = error_of(set(&app, &partner, list.clone()).await).await;
    assert_eq!((status, code.as_str()), (422, "would_lock_out"));
    assert!(body["message"].as_str().unwrap().contains("127.0.0.1"));
    assert_eq!(app.whoami(&partner).await.status(), 200, "nothing changed");

    // An IPv4-mapped entry for the caller's address is the caller's address.
    let mapped = json!({"allowed_ips": ["::ffff:127.0.0.1"]});
    assert_eq!(set(&app, &partner, mapped).await.status(), 200);
    assert_eq!(app.whoami(&partner).await.status(), 200);

    let mut confirmed = list;
    confirmed["confirm_lock_out"] = json!(true);
    assert_eq!(set(&app, &partner, confirmed).await.status(), 200);
    let (status, code, _) = error_of(app.whoami(&partner).await).await;
    assert_eq!((status, code.as_str()), (403, "ip_not_allowed"));
}

#[tokio::test]
async fn bad_lists_are_refused_with_every_bad_entry_named() {
    let app = spawn_app().await;
    let partner = app
        .onboarded_partner("BADLIST", "ops@badlist.example")
        .await;
    let cases = [
        (json!({}), "allowed_ips", "missing_fields"),
        (
            json!({"allowed_ips": "127.0.0.1"}),
            "allowed_ips",
            "invalid_field",
        ),
        (
            json!({"allowed_ips": ["127.0.0.1", "10.0.0.0/33"]}),
            "allowed_ips[1]",
            "invalid_field",
        ),
        (
            json!({"allowed_ips": ["127.0.0.1", 7]}),
            "allowed_ips[1]",
            "invalid_field",
        ),
        (
            json!({"allowed_ips": ["127.0.0.1"], "confirm_lock_out": "yes"}),
            "confirm_lock_out",
            "invalid_field",
        ),
    ];
    for (body, field, expected) in cases {
        let (status, code, answer) = error_of(set(&app, &partner, body.clone()).await).await;
        assert_eq!((status, code.as_str()), (400, expected), "{body}");
        assert_eq!(answer["errors"][0]["field"], field, "{body}");
    }
    let many: Vec<String> = (0..21).map(|i| format!("10.0.{i}.0/24")).collect();
    let (status, code, answer) =
        error_of(set(&app, &partner, json!({"allowed_ips": many})).await).await;
    assert_eq!((status, code.as_str()), (400, "invalid_field"));
    assert!(answer["errors"][0]["problem"]
        .as_str()
        .unwrap()
        .contains("20"));
    let twenty: Vec<String> = std::iter::once("127.0.0.1".to_owned())
        .chain((0..19).map(|i| format!("10.0.{i}.0/24")))
        .collect();
    assert_eq!(
        set(&app, &partner, json!({"allowed_ips": twenty}))
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn a_change_is_in_force_on_the_other_node_when_it_answers() {
    let nodes = spawn_nodes(2, |_| {}).await;
    let partner = onboarded_on(&nodes, "ALLOWNODES", "ops@allownodes.example").await;
    // The other node has the key, and its old allow-list, in its cache.
    assert_eq!(nodes[1].whoami(&partner).await.status(), 200);
    let body = json!({"allowed_ips": ["192.0.2.0/24"], "confirm_lock_out": true});
    assert_eq!(set(&nodes[0], &partner, body).await.status(), 200);
    let (status, code, _) = error_of(nodes[1].whoami(&partner).await).await;
    assert_eq!((status, code.as_str()), (403, "ip_not_allowed"));
}

#[tokio::test]
async fn a_flood_of_changes_is_not_a_flood_of_notices() {
    let app = spawn_app().await;
    let email = "ops@flood.example";
    let partner = app.onboarded_partner("FLOOD", email).await;
    let notices = |app: &TestApp| -> Vec<String> {
        app.emails_to(email)
            .into_iter()
            .filter(|e| e.subject.contains("allow-list"))
            .map(|e| e.text)
            .collect()
    };

    // The reviewer's flood: the same (empty) list, again and again: nothing changed, no email.
    for _ in 0..10 {
        assert_eq!(
            set(&app, &partner, json!({"allowed_ips": []}))
                .await
                .status(),
            200
        );
    }
    app.settle().await;
    assert!(notices(&app).is_empty());

    // Real changes in quick succession: the first is told at once...
    for last in 1..=5 {
        let list = json!({"allowed_ips": [format!("127.0.0.1"), format!("198.51.100.{last}")]});
        assert_eq!(set(&app, &partner, list).await.status(), 200);
    }
    app.settle().await;
    let first = notices(&app);
    assert_eq!(first.len(), 1);
    assert!(first[0].contains("198.51.100.1"), "{}", first[0]);

    // ...the others in one notice a few minutes later, with the list then in force.
    app.clock.advance(chrono::Duration::minutes(5));
    let emails = app.wait_for_emails(email, 3).await;
    app.settle().await;
    let all = notices(&app);
    assert_eq!(all.len(), 2, "{} emails in all", emails.len());
    assert!(all[1].contains("198.51.100.5"), "{}", all[1]);
    assert!(!all[1].contains("198.51.100.4"), "{}", all[1]);
}
