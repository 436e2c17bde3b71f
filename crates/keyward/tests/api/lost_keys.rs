//! Regeneration without Authorization (lost keys): one answer for everyone; a link only
//! for a matching partner.

use crate::helpers::*;
use serde_json::json;

async fn lost_keys(
    app: &TestApp,
    code: &str,
    email: &str,
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let response = app
        .post_json(REGENERATE, &json!({"email": email, "partner_code": code}))
        .await;
    let status = response.status().as_u16();
    let mut headers: Vec<(String, String)> = response
        .headers()
        .iter()
        .filter(|(name, _)| !matches!(name.as_str(), "date" | "x-request-id"))
        .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    headers.sort();
    (status, headers, response.bytes().await.unwrap().to_vec())
}

#[tokio::test]
async fn matching_and_non_matching_requests_answer_byte_identically() {
    let app = spawn_app().await;
    app.onboarded_partner("LOST", "l@lost.example").await;
    let matching = lost_keys(&app, "LOST", "l@lost.example").await;
    let wrong_email = lost_keys(&app, "LOST", "x@lost.example").await;
    let unknown = lost_keys(&app, "NOBODY", "l@lost.example").await;
    let invalid = lost_keys(&app, "not a code!", "nonsense").await;
    assert_eq!(matching.0, 200);
    assert_eq!(matching, wrong_email);
    assert_eq!(matching, unknown);
    assert_eq!(matching, invalid);

    // Only the matching one sent an email: a regeneration link to the registered address.
    let emails = app.wait_for_emails("l@lost.example", 2).await;
    assert!(emails[1].subject.contains("Regenerate"));
    app.settle().await;
    assert_eq!(app.emails_to("l@lost.example").len(), 2);
    assert!(app.emails_to("x@lost.example").is_empty());
    assert_eq!(app.mailbox.emails().len(), 2);

    // The link works, and the partner ID stays.
    let link = link_in_text(&emails[1].text);
    let renewed = app.redeem(&link, "LOST").await;
    assert_eq!(app.whoami(&renewed).await.status(), 200);
}

#[tokio::test]
async fn a_pending_partner_gets_a_fresh_onboarding_link_and_a_suspended_one_nothing() {
    let app = spawn_app().await;
    assert_eq!(app.onboard("PEND", "p@pend.example").await.status(), 200);
    let first = app.link_in_email("p@pend.example", 1).await;
    assert_eq!(lost_keys(&app, "PEND", "p@pend.example").await.0, 200);
    let emails = app.wait_for_emails("p@pend.example", 2).await;
    assert!(
        emails[1].subject.contains("Your keyward API keys"),
        "{}",
        emails[1].subject
    );
    let second = link_in_text(&emails[1].text);
    assert_ne!(first, second);
    app.redeem(&second, "PEND").await;

    let suspended = app.onboarded_partner("SUSP", "s@susp.example").await;
    let mut tx = app.state.store.begin().await.unwrap();
    tx.set_partner_status(
        &keyward_core::PartnerId::parse(&suspended.partner_id).unwrap(),
        keyward_core::PartnerStatus::Suspended,
        app.state.clock.now(),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(lost_keys(&app, "SUSP", "s@susp.example").await.0, 200);
    app.settle().await;
    assert_eq!(
        app.emails_to("s@susp.example").len(),
        1,
        "only the onboarding email"
    );
}
