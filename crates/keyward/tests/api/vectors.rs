//! Every case of `testdata/signatures.json` through WhoAmI over HTTP. Each case's body is
//! re-signed with a real partner's secret key over the message Node.js produced (as sent or
//! RFC 8785, as the case says), then the case's mutation is applied, exactly as the vector
//! describes it.

use crate::helpers::*;
use serde::Deserialize;

#[derive(Deserialize)]
struct Vectors {
    signature_cases: Vec<Case>,
}

#[derive(Deserialize)]
pub struct Case {
    pub name: String,
    body: String,
    pub template: Option<String>,
    pub message_as_sent: Option<String>,
    pub message_jcs: Option<String>,
    signed_form: Option<String>,
    pub expect: String,
    mutation: Option<(String, String)>,
    #[serde(default)]
    uppercase_hex: bool,
}

/// The signature cases of `testdata/signatures.json` (made with Node.js).
pub fn cases() -> Vec<Case> {
    let raw = include_str!("../../../../testdata/signatures.json");
    serde_json::from_str::<Vectors>(raw)
        .unwrap()
        .signature_cases
}

/// The body to send for `case`, signed for `partner`.
fn body_for(case: &Case, secret: &str, other_secret: &str) -> String {
    let Some(template) = &case.template else {
        return case.body.clone(); // malformed bodies are sent as they are
    };
    let message = match case.signed_form.as_deref() {
        Some("jcs") => case.message_jcs.as_deref(),
        _ => case.message_as_sent.as_deref(),
    }
    .unwrap();
    // "Signed with another key" has no mutation: sign it with a key that is not the partner's.
    let key = if case.expect == "invalid_signature" && case.mutation.is_none() {
        other_secret
    } else {
        secret
    };
    let mut signature = hmac_hex(key, message);
    if case.uppercase_hex {
        signature = signature.to_uppercase();
    }
    let mut body = template.replace("__SIG__", &signature);
    if let Some((pattern, replacement)) = &case.mutation {
        let re = regex::Regex::new(pattern).unwrap();
        assert!(
            re.is_match(&body),
            "case {:?}: mutation does not apply",
            case.name
        );
        body = re.replace(&body, replacement.as_str()).into_owned();
    }
    body
}

#[tokio::test]
async fn every_vector_case_has_its_expected_outcome_through_whoami() {
    let app = spawn_app().await;
    let partner = app
        .onboarded_partner("VECTORS", "vectors@example.com")
        .await;
    let other = app.onboarded_partner("OTHER", "other@example.com").await;
    let cases = cases();
    assert!(cases.len() >= 20);
    for case in &cases {
        let body = body_for(case, &partner.secret_key, &other.secret_key);
        let response = app
            .post_raw(
                WHOAMI,
                &body,
                Some(&format!("Bearer {}", partner.public_key)),
            )
            .await;
        if case.expect == "valid" {
            assert_eq!(
                response.status(),
                200,
                "case {:?}: {}",
                case.name,
                response.text().await.unwrap_or_default()
            );
            let json: serde_json::Value = response.json().await.unwrap();
            assert_eq!(json["data"]["partner_id"], partner.partner_id.as_str());
        } else {
            let (status, code, _) = error_of(response).await;
            assert_eq!(code, case.expect, "case {:?}", case.name);
            let expected_status = keyward_core::ErrorCode::from_code(&case.expect)
                .unwrap()
                .status();
            assert_eq!(status, expected_status, "case {:?}", case.name);
        }
    }
}

#[tokio::test]
async fn the_vector_bodies_themselves_verify_under_their_own_key() {
    // The library path, on the bodies exactly as Node signed them.
    for case in cases().iter().filter(|c| c.expect == "valid") {
        assert!(
            body_verifies(
                &case.body,
                "sk_partner_fbi9lNL7GCHyd6uQEMDFGH19bSqMwB2OfotK"
            ),
            "case {:?}",
            case.name
        );
    }
}
