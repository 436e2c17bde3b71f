//! One-time links: used, superseded, expired (through the injected clock), unknown, and
//! raced.

use crate::helpers::*;
use serde_json::json;

async fn redeem_status(app: &TestApp, link: &str, code: &str) -> (u16, String) {
    let response = app
        .post_json(
            REDEEM,
            &json!({"token": token_of(link), "partner_code": code}),
        )
        .await;
    let status = response.status().as_u16();
    let body: serde_json::Value = response.json().await.unwrap();
    (status, body["code"].as_str().unwrap_or("").to_owned())
}

#[tokio::test]
async fn twenty_concurrent_redemptions_of_one_link_give_exactly_one_success() {
    let app = spawn_app().await;
    assert_eq!(app.onboard("RACE", "race@example.com").await.status(), 200);
    let link = app.link_in_email("race@example.com", 1).await;
    let attempts = (0..20).map(|_| redeem_status(&app, &link, "RACE"));
    let results = futures::future::join_all(attempts).await;
    let ok = results.iter().filter(|(s, _)| *s == 200).count();
    let used = results
        .iter()
        .filter(|(s, c)| *s == 410 && c == "link_used")
        .count();
    assert_eq!((ok, used), (1, 19), "{results:?}");
}

#[tokio::test]
async fn a_used_link_is_gone_on_every_interface() {
    let app = spawn_app().await;
    let partner = app.onboarded_partner("USED", "u@used.example").await;
    assert_eq!(app.whoami(&partner).await.status(), 200);
    let link = app.link_in_email("u@used.example", 1).await;
    assert_eq!(
        redeem_status(&app, &link, "USED").await,
        (410, "link_used".into())
    );
    let page = app.client.get(&link).send().await.unwrap();
    assert_eq!(page.status(), 410);
    assert!(page.text().await.unwrap().contains("already used"));
    let form = app
        .client
        .post(&link)
        .form(&[("partner_code", "USED")])
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), 410);
}

#[tokio::test]
async fn links_expire_after_their_lifetime() {
    let app = spawn_app().await;
    let partner = app.onboarded_partner("EXPIRY", "e@expiry.example").await;

    // Regeneration links live one hour.
    assert_eq!(
        app.regenerate(&partner, "e@expiry.example").await.status(),
        200
    );
    let regen = app.link_in_email("e@expiry.example", 2).await;
    app.clock.advance(chrono::Duration::minutes(59));
    assert_eq!(app.client.get(&regen).send().await.unwrap().status(), 200);
    app.clock.advance(chrono::Duration::minutes(2));
    assert_eq!(app.client.get(&regen).send().await.unwrap().status(), 410);
    assert_eq!(
        redeem_status(&app, &regen, "EXPIRY").await,
        (410, "link_expired".into())
    );
    assert_eq!(
        app.whoami(&partner).await.status(),
        200,
        "an expired link changed nothing: the keys still work"
    );
}

#[tokio::test]
async fn onboarding_links_live_a_day() {
    let app = spawn_app().await;
    assert_eq!(app.onboard("DAY", "d@day.example").await.status(), 200);
    let link = app.link_in_email("d@day.example", 1).await;
    app.clock.advance(chrono::Duration::hours(23));
    assert_eq!(app.client.get(&link).send().await.unwrap().status(), 200);
    app.clock.advance(chrono::Duration::hours(2));
    let page = app.client.get(&link).send().await.unwrap();
    assert_eq!(page.status(), 410);
    assert!(page.text().await.unwrap().contains("expired"));
}

#[tokio::test]
async fn a_newer_regeneration_link_supersedes_the_older_one() {
    let app = spawn_app().await;
    let partner = app.onboarded_partner("SUPER", "s@super.example").await;
    assert_eq!(
        app.regenerate(&partner, "s@super.example").await.status(),
        200
    );
    let older = app.link_in_email("s@super.example", 2).await;
    assert_eq!(
        app.regenerate(&partner, "s@super.example").await.status(),
        200
    );
    let newer = app.link_in_email("s@super.example", 3).await;
    assert_eq!(
        redeem_status(&app, &older, "SUPER").await,
        (410, "link_expired".into())
    );
    let renewed = app.redeem(&newer, "SUPER").await;
    assert_eq!(renewed.partner_id, partner.partner_id);
}

#[tokio::test]
async fn unknown_and_malformed_tokens_are_404() {
    let app = spawn_app().await;
    let unknown = format!("{}/link/{}", app.address, "A".repeat(43));
    let page = app.client.get(&unknown).send().await.unwrap();
    assert_eq!(page.status(), 404);
    assert_eq!(page.headers()["cache-control"], "no-store");
    assert!(page.text().await.unwrap().contains("link_unknown"));
    assert_eq!(
        app.client
            .get(format!("{}/link/short", app.address))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    let (status, code) = redeem_status(&app, &unknown, "X").await;
    assert_eq!((status, code.as_str()), (404, "link_unknown"));
    let (status, code) = redeem_status(&app, "nope", "X").await;
    assert_eq!((status, code.as_str()), (404, "link_unknown"));
}

#[tokio::test]
async fn a_wrong_code_through_the_api_consumes_nothing() {
    let app = spawn_app().await;
    assert_eq!(app.onboard("KEEP", "k@keep.example").await.status(), 200);
    let link = app.link_in_email("k@keep.example", 1).await;
    assert_eq!(
        redeem_status(&app, &link, "NOPE").await,
        (422, "partner_code_mismatch".into())
    );
    let empty = app
        .client
        .post(&link)
        .form(&[("partner_code", "")])
        .send()
        .await
        .unwrap();
    assert_eq!(empty.status(), 422);
    app.redeem(&link, "keep").await;
}

#[tokio::test]
async fn stored_secrets_are_hashed_or_encrypted() {
    let app = spawn_app().await;
    let partner = app.onboarded_partner("VAULT", "v@vault.example").await;
    let link = app.link_in_email("v@vault.example", 1).await;
    // Look at what is stored: the SQLite files themselves, or every PostgreSQL row as text.
    let text = match &app.database {
        Some(database) => database.dump(),
        None => {
            app.state.store.close().await;
            let mut bytes = Vec::new();
            for entry in std::fs::read_dir(app.dir.path()).unwrap() {
                let path = entry.unwrap().path();
                if path
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("keyward.db"))
                {
                    bytes.extend(std::fs::read(path).unwrap());
                }
            }
            String::from_utf8_lossy(&bytes).into_owned()
        }
    };
    assert!(!text.contains(&partner.secret_key));
    assert!(!text.contains(&partner.public_key));
    assert!(!text.contains(&token_of(&link)));
    assert!(
        text.contains("VAULT"),
        "the check is looking at the right file"
    );
}
