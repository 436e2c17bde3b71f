//! Rate limits against email bombing (SPEC §6).

use crate::helpers::*;
use serde_json::json;

#[tokio::test]
async fn one_address_is_limited_across_the_emailing_routes() {
    let app = spawn_app_with(|s| s.ip_rate_limit_per_minute = 3).await;
    assert_eq!(app.onboard("IP1", "a@ip.example").await.status(), 200);
    assert_eq!(app.onboard("IP2", "b@ip.example").await.status(), 200);
    let lost = app
        .post_json(
            REGENERATE,
            &json!({"email": "a@ip.example", "partner_code": "IP1"}),
        )
        .await;
    assert_eq!(lost.status(), 200);
    let limited = app.onboard("IP3", "c@ip.example").await;
    let retry_after: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after));
    let (status, code, _) = error_of(limited).await;
    assert_eq!((status, code.as_str()), (429, "rate_limited"));
    // Other routes are not limited.
    assert_eq!(
        app.client
            .get(format!("{}/healthz", app.address))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // A minute later the address may send again.
    app.clock.advance(chrono::Duration::seconds(61));
    assert_eq!(app.onboard("IP3", "c@ip.example").await.status(), 200);
}

#[tokio::test]
async fn a_partner_gets_at_most_ten_links_an_hour() {
    let app = spawn_app().await;
    let partner = app.onboarded_partner("BOMB", "b@bomb.example").await; // link 1
    for _ in 0..9 {
        assert_eq!(
            app.regenerate(&partner, "b@bomb.example").await.status(),
            200
        ); // links 2..=10
    }
    let limited = app.regenerate(&partner, "b@bomb.example").await;
    assert!(limited.headers().contains_key("retry-after"));
    let (status, code, _) = error_of(limited).await;
    assert_eq!((status, code.as_str()), (429, "rate_limited"));

    // The lost-keys path answers as always and sends nothing.
    let lost = app
        .post_json(
            REGENERATE,
            &json!({"email": "b@bomb.example", "partner_code": "BOMB"}),
        )
        .await;
    assert_eq!(lost.status(), 200);
    app.wait_for_emails("b@bomb.example", 10).await;
    app.settle().await;
    assert_eq!(app.emails_to("b@bomb.example").len(), 10);

    // An hour later, links flow again.
    app.clock.advance(chrono::Duration::minutes(61));
    assert_eq!(
        app.regenerate(&partner, "b@bomb.example").await.status(),
        200
    );
}

#[tokio::test]
async fn a_pending_partner_asking_again_and_again_is_limited_too() {
    let app = spawn_app().await;
    for _ in 0..10 {
        assert_eq!(app.onboard("AGAIN", "a@again.example").await.status(), 200);
    }
    let (status, code, _) = error_of(app.onboard("AGAIN", "a@again.example").await).await;
    assert_eq!((status, code.as_str()), (429, "rate_limited"));
}
