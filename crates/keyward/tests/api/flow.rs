//! The whole journey of SPEC §3: onboard, email, link page, wrong code, reveal, signed
//! request, regeneration, old keys revoked, same partner ID, notice emailed.

use crate::helpers::*;
use serde_json::{json, Value};

#[tokio::test]
async fn onboarding_then_regeneration_end_to_end() {
    let app = spawn_app().await;
    let email = "ops@acme.example";

    // Onboard: 200 with the published message, one email with a link to our public URL.
    let response = app.onboard("ACME", email).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        json!({"success": true, "message": "API Keys generated. Please check your email to confirm", "data": null})
    );
    let link = app.link_in_email(email, 1).await;

    // GET twice (and HEAD) consumes nothing.
    for _ in 0..2 {
        let page = app.client.get(&link).send().await.unwrap();
        assert_eq!(page.status(), 200);
        assert_eq!(page.headers()["cache-control"], "no-store");
        assert_eq!(page.headers()["referrer-policy"], "no-referrer");
        assert_eq!(page.headers()["x-frame-options"], "DENY");
        assert_eq!(page.headers()["x-content-type-options"], "nosniff");
        assert!(page.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'none'"));
        let html = page.text().await.unwrap();
        assert!(html.contains("name=\"partner_code\""));
        assert!(html.contains("Get your API keys"));
        assert!(
            !html.contains("ACME"),
            "the page must not reveal the partner code"
        );
    }
    assert_eq!(app.client.head(&link).send().await.unwrap().status(), 200);

    // A wrong partner code: 422, the page again, nothing consumed.
    let wrong = app
        .client
        .post(&link)
        .form(&[("partner_code", "NOTACME")])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 422);
    assert!(wrong.text().await.unwrap().contains("does not match"));

    // The right code (any case) reveals the keys once.
    let reveal = app
        .client
        .post(&link)
        .form(&[("partner_code", "acme")])
        .send()
        .await
        .unwrap();
    assert_eq!(reveal.status(), 200);
    assert_eq!(reveal.headers()["cache-control"], "no-store");
    let html = reveal.text().await.unwrap();
    let first = keys_on_page(&html);
    assert!(html.contains("not shown again"));
    assert!(html.contains("data-copy=\"secret_key\""));

    // The link is spent.
    assert_eq!(app.client.get(&link).send().await.unwrap().status(), 410);

    // The keys work.
    let partner = Partner {
        code: "ACME".into(),
        ..first.clone()
    };
    let who = app.whoami(&partner).await;
    assert_eq!(who.status(), 200);
    let who: Value = who.json().await.unwrap();
    assert_eq!(who["data"]["partner_id"], first.partner_id.as_str());
    assert_eq!(who["data"]["partner_code"], "ACME");
    assert!(who["data"]["key_created_at"]
        .as_str()
        .unwrap()
        .ends_with('Z'));

    // Ask for a regeneration: a link is emailed; the current keys keep working meanwhile.
    let response = app.regenerate(&partner, email).await;
    assert_eq!(response.status(), 200);
    let regen_link = app.link_in_email(email, 2).await;
    assert_eq!(app.whoami(&partner).await.status(), 200);
    let page = app
        .client
        .get(&regen_link)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("Regenerate your API keys"));

    // Redeem it through the HTML form.
    let reveal = app
        .client
        .post(&regen_link)
        .form(&[("partner_code", "ACME")])
        .send()
        .await
        .unwrap();
    assert_eq!(reveal.status(), 200);
    let second = keys_on_page(&reveal.text().await.unwrap());
    assert_eq!(
        second.partner_id, first.partner_id,
        "the partner ID never changes"
    );
    assert_ne!(second.public_key, first.public_key);
    assert_ne!(second.secret_key, first.secret_key);

    // The old public key is revoked; the new pair works.
    let (status, code, _) = error_of(app.whoami(&partner).await).await;
    assert_eq!((status, code.as_str()), (401, "revoked_key"));
    let renewed = Partner {
        code: "ACME".into(),
        ..second
    };
    assert_eq!(app.whoami(&renewed).await.status(), 200);

    // The notice: time and IP of the regeneration.
    let emails = app.wait_for_emails(email, 3).await;
    let notice = &emails[2];
    assert!(notice.subject.contains("were regenerated"));
    assert!(notice.text.contains("127.0.0.1"));
    assert!(notice.text.contains("If this was not you"));
}

/// Reads the credentials off the reveal page.
fn keys_on_page(html: &str) -> Partner {
    let value = |id: &str| {
        let re = regex::Regex::new(&format!(r#"id="{id}"[^>]*>([^<]+)</textarea>"#)).unwrap();
        re.captures(html)
            .unwrap_or_else(|| panic!("no {id} on the page"))
            .get(1)
            .unwrap()
            .as_str()
            .to_owned()
    };
    Partner {
        code: String::new(),
        partner_id: value("partner_id"),
        public_key: value("public_key"),
        secret_key: value("secret_key"),
    }
}

#[tokio::test]
async fn a_pending_partner_asking_again_gets_a_fresh_link_that_replaces_the_first() {
    let app = spawn_app().await;
    assert_eq!(app.onboard("FRESH", "a@fresh.example").await.status(), 200);
    let first = app.link_in_email("a@fresh.example", 1).await;
    assert_eq!(
        app.onboard("FRESH", "A@Fresh.Example").await.status(),
        200,
        "emails compare case-insensitively"
    );
    let second = app.link_in_email("a@fresh.example", 2).await;
    assert_ne!(first, second);
    let (status, code, _) = error_of(
        app.post_json(
            REDEEM,
            &json!({"token": token_of(&first), "partner_code": "FRESH"}),
        )
        .await,
    )
    .await;
    assert_eq!((status, code.as_str()), (410, "link_expired"));
    app.redeem(&second, "FRESH").await;
}

#[tokio::test]
async fn an_existing_partner_code_is_refused_with_409() {
    let app = spawn_app().await;
    app.onboarded_partner("TAKEN", "a@taken.example").await;
    for (code, email) in [("TAKEN", "a@taken.example"), ("taken", "b@taken.example")] {
        let (status, code, _) = error_of(app.onboard(code, email).await).await;
        assert_eq!((status, code.as_str()), (409, "partner_exists"));
    }
    // A pending partner with another email is refused too.
    assert_eq!(
        app.onboard("PENDING", "a@pending.example").await.status(),
        200
    );
    let (status, code, _) = error_of(app.onboard("PENDING", "b@pending.example").await).await;
    assert_eq!((status, code.as_str()), (409, "partner_exists"));
}

#[tokio::test]
async fn an_identical_signed_regeneration_is_acted_on_once() {
    let app = spawn_app().await;
    let partner = app.onboarded_partner("REPLAY", "r@replay.example").await;
    let body = sign(
        &json!({"email": "r@replay.example", "partner_code": "REPLAY"}).to_string(),
        &partner.secret_key,
    );
    let auth = format!("Bearer {}", partner.public_key);
    let first = app.post_raw(REGENERATE, &body, Some(&auth)).await;
    let first_status = first.status();
    let first_body = first.text().await.unwrap();
    let again = app.post_raw(REGENERATE, &body, Some(&auth)).await;
    assert_eq!((first_status.as_u16(), again.status().as_u16()), (200, 200));
    assert_eq!(again.text().await.unwrap(), first_body);
    app.wait_for_emails("r@replay.example", 2).await;
    app.settle().await;
    assert_eq!(
        app.emails_to("r@replay.example").len(),
        2,
        "onboarding + one regeneration link"
    );
    // A request that differs (a nonce) is a new request.
    assert_eq!(
        app.regenerate(&partner, "r@replay.example").await.status(),
        200
    );
    app.wait_for_emails("r@replay.example", 3).await;
}

#[tokio::test]
async fn every_regeneration_alias_and_trailing_slashes_work() {
    let app = spawn_app().await;
    let partner = app.onboarded_partner("ALIAS", "a@alias.example").await;
    let paths = [
        "/api/v1/no-auth/PartnerP2P/GenKeysForPartner/",
        "/api/v1/no-auth/PartnerP2P/ResetPartnerKeys",
        "/api/v1/no-auth/PartnerP2P/OnboardPartner.",
    ];
    for path in paths {
        let body =
            json!({"email": "a@alias.example", "partner_code": "ALIAS", "nonce": uuid_like()});
        let response = app
            .signed(path, &body, &partner.public_key, &partner.secret_key)
            .await;
        assert_eq!(response.status(), 200, "{path}");
    }
    let response = app
        .signed(
            &format!("{WHOAMI}/"),
            &json!({}),
            &partner.public_key,
            &partner.secret_key,
        )
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        app.client
            .get(format!("{}/healthz/", app.address))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn a_canonically_signed_body_and_a_fresh_timestamp_are_accepted() {
    let app = spawn_app().await;
    let partner = app.onboarded_partner("JCS", "j@jcs.example").await;
    let now = chrono::Utc::now().timestamp_millis();
    let raw = format!(r#"{{"z":1,"timestamp":"{now}","a":{{"y":2,"b":3}}}}"#);
    let secret = keyward_core::SecretKey::parse(&partner.secret_key).unwrap();
    let signed = keyward_core::signature::sign_body(
        raw.as_bytes(),
        &secret,
        keyward_core::signature::MessageForm::Canonical,
    )
    .unwrap();
    // Send the members in their original order: the server must accept the canonical signature.
    let sig: Value = serde_json::from_str::<Value>(&signed).unwrap()["signature"].clone();
    let body = format!(r#"{{"z":1,"timestamp":"{now}","a":{{"y":2,"b":3}},"signature":{sig}}}"#);
    let response = app
        .post_raw(
            WHOAMI,
            &body,
            Some(&format!("Bearer {}", partner.public_key)),
        )
        .await;
    assert_eq!(response.status(), 200);
}
