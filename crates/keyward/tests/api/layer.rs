//! The SDK's tower layer in front of a small axum app, against a real keyward.

use crate::helpers::*;
use axum::routing::{get, post};
use axum::{Extension, Router};
use keyward_client::{VerifiedPartner, Verifier, VerifyLayer};
use serde_json::Value;

async fn payout(Extension(partner): Extension<VerifiedPartner>, body: String) -> String {
    format!("{} {}", partner.partner_code, body.len())
}

/// The app on a random port, behind the layer.
async fn protected_app(app: &TestApp) -> String {
    let token = app.service_token("payout-api").await;
    let verifier = Verifier::new(&app.internal_address, &token).unwrap();
    let router = Router::new()
        .route("/api/v1/PartnerP2P/Payout", post(payout))
        .route("/api/v1/PartnerP2P/Balance", get(payout))
        .layer(VerifyLayer::new(verifier));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await
    });
    address
}

#[tokio::test]
async fn the_layer_lets_valid_requests_through_and_relays_keywards_answer_otherwise() {
    let app = spawn_app().await;
    let partner = app.onboarded_partner("LAYER", "ops@layer.example").await;
    let protected = protected_app(&app).await;
    let auth = format!("Bearer {}", partner.public_key);
    let raw = sign(r#"{"payout":"p-1"}"#, &partner.secret_key);
    let call = |method: reqwest::Method, path: &str, raw: &str, auth: Option<&str>| {
        let mut request = app
            .client
            .request(method, format!("{protected}{path}"))
            .header("content-type", "application/json")
            .body(raw.to_owned());
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        request.send()
    };

    let ok = call(
        reqwest::Method::POST,
        "/api/v1/PartnerP2P/Payout",
        &raw,
        Some(&auth),
    )
    .await
    .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.text().await.unwrap(), format!("LAYER {}", raw.len()));

    // A repeated POST is refused; a repeated GET is not.
    let (status, code, _) = error_of(
        call(
            reqwest::Method::POST,
            "/api/v1/PartnerP2P/Payout",
            &raw,
            Some(&auth),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!((status, code.as_str()), (409, "replayed_request"));
    for _ in 0..2 {
        let read = call(
            reqwest::Method::GET,
            "/api/v1/PartnerP2P/Balance",
            &raw,
            Some(&auth),
        )
        .await
        .unwrap();
        assert_eq!(read.status(), 200);
    }

    // An invalid request gets exactly what WhoAmI would answer, and never reaches the app.
    let tampered = raw.replace("p-1", "p-2");
    let through_layer = call(
        reqwest::Method::POST,
        "/api/v1/PartnerP2P/Payout",
        &tampered,
        Some(&auth),
    )
    .await
    .unwrap();
    let direct = app.post_raw(WHOAMI, &tampered, Some(&auth)).await;
    assert_eq!(through_layer.status(), direct.status());
    let (a, b): (Value, Value) = (
        through_layer.json().await.unwrap(),
        direct.json().await.unwrap(),
    );
    assert_eq!(a, b);
    let (status, code, _) = error_of(
        call(
            reqwest::Method::POST,
            "/api/v1/PartnerP2P/Payout",
            &raw,
            None,
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!((status, code.as_str()), (401, "missing_authorization"));
}

#[tokio::test]
async fn the_layer_answers_503_when_keyward_cannot_be_reached() {
    let app = spawn_app().await;
    let token = app.service_token("payout-api").await;
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let verifier = Verifier::new(&closed, &token).unwrap();
    let router = Router::new()
        .route("/x", post(|| async { "reached" }))
        .layer(VerifyLayer::new(verifier));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    let response = app
        .client
        .post(format!("{address}/x"))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    let (status, code, _) = error_of(response).await;
    assert_eq!((status, code.as_str()), (503, "unavailable"));
}
