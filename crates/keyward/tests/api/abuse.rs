//! What someone without a partner's keys can do with its code and email, or with anybody's
//! email address: never stop the key holder from rotating, never bomb a mailbox, never squat
//! a code for good; and re-encoding a signed request never makes it a new one.

use crate::cluster::{spawn_nodes, wait_for};
use crate::helpers::*;
use serde_json::json;

async fn lost_keys(app: &TestApp, code: &str, email: &str) -> u16 {
    app.post_json(REGENERATE, &json!({"email": email, "partner_code": code}))
        .await
        .status()
        .as_u16()
}

fn regeneration_emails(app: &TestApp, to: &str) -> Vec<String> {
    app.emails_to(to)
        .into_iter()
        .filter(|e| e.subject.starts_with("Regenerate"))
        .map(|e| link_in_text(&e.text))
        .collect()
}

#[tokio::test]
async fn lost_keys_requests_can_neither_exhaust_the_key_holders_budget_nor_cancel_its_link() {
    let app = spawn_app().await;
    // One link so far: the onboarding link.
    let partner = app.onboarded_partner("HOLDER", "ops@holder.example").await;
    // The key holder asks for a regeneration link.
    let asked = app.regenerate(&partner, "ops@holder.example").await;
    assert_eq!(asked.status(), 200);
    let signed_link = app.link_in_email("ops@holder.example", 2).await;

    // Someone who knows the code and the email keeps asking, as fast as the limits allow.
    for _ in 0..30 {
        assert_eq!(lost_keys(&app, "HOLDER", "ops@holder.example").await, 200);
    }
    app.settle().await;
    let unsigned_links = regeneration_emails(&app, "ops@holder.example").len() - 1;
    // Half of the budget of 10 for links asked for without keys: the onboarding link was one.
    assert_eq!(unsigned_links, 4);

    // The key holder's link survived all of it, and it can still ask for more.
    let renewed = app.redeem(&signed_link, "HOLDER").await;
    assert_eq!(app.whoami(&renewed).await.status(), 200);
    let again = app.regenerate(&renewed, "ops@holder.example").await;
    assert_eq!(again.status(), 200);
}

#[tokio::test]
async fn a_re_encoded_signed_regeneration_is_the_same_request() {
    let app = spawn_app().await;
    let partner = app.onboarded_partner("ENC", "ops@enc.example").await;
    let body = json!({"email": "ops@enc.example", "partner_code": "ENC", "nonce": "n-1"});
    let raw = sign(&body.to_string(), &partner.secret_key);
    let signature = raw
        .rsplit("\"signature\":\"")
        .next()
        .unwrap()
        .trim_end_matches("\"}");
    let auth = format!("Bearer {}", partner.public_key);
    for variant in [
        raw.clone(),
        raw.replace(signature, &signature.to_uppercase()),
        raw.replace(',', " ,\n\t"),
        raw.replace("\"partner_code\"", "\"pa\\u0072tner_code\""),
        raw.replace("\"n-1\"", "\"n\\u002d1\""),
    ] {
        let response = app.post_raw(REGENERATE, &variant, Some(&auth)).await;
        assert_eq!(response.status(), 200, "{variant}");
    }
    app.settle().await;
    assert_eq!(
        regeneration_emails(&app, "ops@enc.example").len(),
        1,
        "one request, one email"
    );
}

#[tokio::test]
async fn one_address_gets_a_bounded_number_of_emails_whatever_the_codes_and_nodes() {
    let nodes = spawn_nodes(2, |s| s.recipient_emails_per_hour = 3).await;
    let mut statuses = Vec::new();
    for (i, email) in [
        "victim@mail.example",
        "Victim@Mail.example",
        "VICTIM@mail.example",
    ]
    .iter()
    .cycle()
    .take(6)
    .enumerate()
    {
        statuses.push(
            nodes[i % 2]
                .onboard(&format!("FRESH{i}"), email)
                .await
                .status()
                .as_u16(),
        );
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429, 429]);
    wait_for(&nodes, "victim@mail.example", 3).await;
    settle(&nodes).await;
    let delivered: usize = nodes
        .iter()
        .map(|n| n.emails_to("victim@mail.example").len())
        .sum();
    assert_eq!(delivered, 3);
}

#[tokio::test]
async fn a_pending_code_is_free_again_once_its_links_have_expired_or_an_operator_releases_it() {
    let app = spawn_app().await;
    assert_eq!(
        app.onboard("SQUAT", "squatter@bad.example").await.status(),
        200
    );
    let (status, code, _) = error_of(app.onboard("SQUAT", "owner@good.example").await).await;
    assert_eq!((status, code.as_str()), (409, "partner_exists"));

    // The squatter's onboarding link expires (24 h): the code is free.
    app.clock.advance(chrono::Duration::hours(25));
    assert_eq!(
        app.onboard("SQUAT", "owner@good.example").await.status(),
        200
    );
    let link = app.link_in_email("owner@good.example", 1).await;
    let owner = app.redeem(&link, "SQUAT").await;
    assert_eq!(app.whoami(&owner).await.status(), 200);
    // The squatter's old link does nothing.
    let old = app.link_in_email("squatter@bad.example", 1).await;
    let response = app
        .post_json(
            REDEEM,
            &json!({"token": token_of(&old), "partner_code": "SQUAT"}),
        )
        .await;
    assert_eq!(error_of(response).await.1, "link_unknown");

    // An operator can release a pending partner at once, never an active one.
    assert_eq!(app.onboard("HELD", "a@held.example").await.status(), 200);
    let code = keyward_core::PartnerCode::parse("HELD").unwrap();
    keyward_server::flows::admin::release(&app.state, &code, OPERATOR)
        .await
        .unwrap();
    assert_eq!(app.onboard("HELD", "b@held.example").await.status(), 200);
    let active = keyward_core::PartnerCode::parse("SQUAT").unwrap();
    let refused = keyward_server::flows::admin::release(&app.state, &active, OPERATOR).await;
    assert!(refused.is_err_and(|e| e.to_string().contains("not pending")));
}
