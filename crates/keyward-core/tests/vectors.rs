//! The Node.js-generated cases of `testdata/signatures.json`, through the library.
//! (The server's test suite sends the same cases over HTTP.)

use keyward_core::json::ParseError;
use keyward_core::signature::{BodyError, MessageForm, SignatureKey, SignedBody};
use keyward_core::{PublicKey, SecretKey};
use serde::Deserialize;

#[derive(Deserialize)]
struct Vectors {
    signature_cases: Vec<SignatureCase>,
    key_format_cases: Vec<KeyCase>,
}

#[derive(Deserialize)]
struct SignatureCase {
    name: String,
    secret_key: String,
    body: String,
    message_as_sent: Option<String>,
    message_jcs: Option<String>,
    expect: String,
}

#[derive(Deserialize)]
struct KeyCase {
    key: String,
    valid: bool,
}

fn vectors() -> Vectors {
    let raw = include_str!("../../../testdata/signatures.json");
    serde_json::from_str(raw).unwrap_or_else(|e| unreachable!("testdata/signatures.json: {e}"))
}

fn outcome(case: &SignatureCase) -> String {
    let secret = SecretKey::parse(&case.secret_key).unwrap_or_else(|e| unreachable!("{e}"));
    match SignedBody::parse(case.body.as_bytes()).and_then(|body| {
        body.require_signature()?;
        Ok(body)
    }) {
        Ok(body) if body.verify(&SignatureKey::new(&secret)) => "valid".into(),
        Ok(_) => "invalid_signature".into(),
        Err(BodyError::Parse(ParseError::InvalidJson)) => "invalid_json".into(),
        Err(BodyError::Parse(ParseError::NotAnObject)) => "not_an_object".into(),
        Err(BodyError::Parse(ParseError::DuplicateMember)) => "duplicate_member".into(),
        Err(BodyError::MissingSignature) => "missing_fields".into(),
        Err(BodyError::SignatureNotAString) => "invalid_field".into(),
    }
}

#[test]
fn every_signature_case_has_the_expected_outcome() {
    let cases = vectors().signature_cases;
    assert!(cases.len() >= 20);
    for case in &cases {
        assert_eq!(outcome(case), case.expect, "case {:?}", case.name);
    }
}

#[test]
fn both_message_forms_match_what_node_produced() {
    let mut checked = 0;
    for case in vectors().signature_cases {
        let (Some(as_sent), Some(jcs)) = (&case.message_as_sent, &case.message_jcs) else {
            continue;
        };
        // The mutated cases changed the body after signing; their messages describe the original.
        let Ok(body) = SignedBody::parse(case.body.as_bytes()) else {
            continue;
        };
        if case.expect != "valid" {
            continue;
        }
        assert_eq!(
            &body.message(MessageForm::AsSent),
            as_sent,
            "case {:?}",
            case.name
        );
        assert_eq!(
            &body.message(MessageForm::Canonical),
            jcs,
            "case {:?}",
            case.name
        );
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} cases checked");
}

#[test]
fn every_key_format_case_is_judged_as_node_did() {
    for case in vectors().key_format_cases {
        let valid = PublicKey::parse(&case.key).is_ok() || SecretKey::parse(&case.key).is_ok();
        assert_eq!(valid, case.valid, "key {}", case.key);
    }
}

/// `testdata/test-keys.json`: the test-key formats of SPEC §8.3, made with Node.js.
#[derive(Deserialize)]
struct TestKeyVectors {
    key_format_cases: Vec<TestKeyCase>,
    signature_cases: Vec<TestKeySignature>,
}

#[derive(Deserialize)]
struct TestKeyCase {
    key: String,
    valid: bool,
    mode: Option<String>,
    about: String,
}

#[derive(Deserialize)]
struct TestKeySignature {
    name: String,
    secret_key: String,
    message: String,
    body: String,
}

#[test]
fn the_test_key_vectors_parse_as_node_made_them() {
    let raw = include_str!("../../../testdata/test-keys.json");
    let vectors: TestKeyVectors = serde_json::from_str(raw).unwrap();
    assert!(vectors.key_format_cases.len() >= 8);
    for case in &vectors.key_format_cases {
        let mode = if case.key.starts_with("pk") {
            PublicKey::parse(&case.key).ok().map(|k| k.mode())
        } else {
            SecretKey::parse(&case.key).ok().map(|k| k.mode())
        };
        assert_eq!(mode.is_some(), case.valid, "{}: {}", case.about, case.key);
        if let (Some(mode), Some(expected)) = (mode, &case.mode) {
            assert_eq!(mode.as_str(), expected, "{}", case.about);
        }
    }
    for case in &vectors.signature_cases {
        let secret = SecretKey::parse(&case.secret_key).unwrap();
        let body = SignedBody::parse(case.body.as_bytes()).unwrap();
        assert!(body.verify(&SignatureKey::new(&secret)), "{}", case.name);
        assert_eq!(
            body.message(MessageForm::AsSent),
            case.message,
            "{}",
            case.name
        );
    }
}
