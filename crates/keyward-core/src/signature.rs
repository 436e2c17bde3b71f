//! The request signature (SPEC §2, normative). The one signing module: the server verifies
//! with it, the SDK and the CLI sign with it.
//!
//! `signature` = lower-case hex of HMAC-SHA512, keyed with the UTF-8 bytes of the whole secret
//! key (`sk_partner_` included), over the body without its top-level `signature` member,
//! serialised either as sent (`JSON.stringify`) or canonically (RFC 8785). Either form is valid.
//!
//! ```
//! use keyward_core::signature::{sign_body, MessageForm, SignatureKey, SignedBody};
//! use keyward_core::SecretKey;
//!
//! let secret = SecretKey::parse("sk_partner_fbi9lNL7GCHyd6uQEMDFGH19bSqMwB2OfotK")?;
//! let signed = sign_body(br#"{"partner_code":"ACME","email":"sample@example.com"}"#, &secret, MessageForm::AsSent)?;
//! assert!(signed.starts_with(r#"{"partner_code":"ACME","email":"sample@example.com","signature":""#));
//!
//! // The server's side: parse once, verify against both message forms in constant time.
//! let body = SignedBody::parse(signed.as_bytes())?;
//! assert!(body.verify(&SignatureKey::new(&secret)));
//! assert_eq!(body.message(MessageForm::Canonical), r#"{"email":"sample@example.com","partner_code":"ACME"}"#);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use crate::json::{self, ParseError, Value};
use crate::keys::SecretKey;
use hmac::{Hmac, Mac};
use secrecy::ExposeSecret;
use sha2::Sha512;

type HmacSha512 = Hmac<Sha512>;

pub const SIGNATURE_MEMBER: &str = "signature";

/// A secret key made ready for HMAC-SHA512 once: its inner and outer pads already hashed, so
/// that checking a signature costs the message's hashing only (keying HMAC-SHA512 is two of
/// the four SHA-512 blocks a small body needs). It signs as well as the secret does: keep it
/// only where the secret itself would be kept. Redacted in `Debug`.
#[derive(Clone)]
pub struct SignatureKey(HmacSha512);

impl SignatureKey {
    pub fn new(secret: &SecretKey) -> Self {
        #[allow(clippy::expect_used)] // HMAC is defined for keys of every length: this cannot fail.
        let mac = HmacSha512::new_from_slice(secret.expose_secret().as_bytes())
            .expect("HMAC accepts keys of any length");
        Self(mac)
    }

    fn mac(&self, message: &str) -> HmacSha512 {
        let mut mac = self.0.clone();
        mac.update(message.as_bytes());
        mac
    }
}

impl std::fmt::Debug for SignatureKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SignatureKey(..)")
    }
}

/// Which serialisation of the body a signature covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageForm {
    /// `JSON.stringify` of the body: members in the order received.
    AsSent,
    /// RFC 8785 (JCS): members sorted by UTF-16 code units at every depth.
    Canonical,
}

/// Why a body cannot be checked at all (as opposed to carrying a wrong signature).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error(transparent)]
    Parse(#[from] ParseError),
    #[error("the body has no `signature` member")]
    MissingSignature,
    #[error("the `signature` member must be a string")]
    SignatureNotAString,
}

/// A parsed request body: its members without the top-level `signature`, and that signature.
#[derive(Debug, Clone)]
pub struct SignedBody {
    /// The members other than the top-level `signature`, in the order received.
    pub members: Vec<(String, Value)>,
    /// The top-level `signature` member, as sent (`None` when absent).
    pub signature: Option<String>,
    /// The path of the first number whose digits the signature does not cover (see
    /// [`crate::exact_numbers`]), refused where `KEYWARD_EXACT_NUMBERS` is on.
    pub inexact_number: Option<String>,
}

impl SignedBody {
    /// Parses `raw`; a missing `signature` is allowed here (see [`SignedBody::require_signature`]).
    pub fn parse(raw: &[u8]) -> Result<Self, BodyError> {
        let mut members = json::parse_object(raw)?;
        let signature = match members
            .iter()
            .position(|(name, _)| name == SIGNATURE_MEMBER)
        {
            None => None,
            Some(index) => match members.remove(index).1 {
                Value::String(s) => Some(s),
                _ => return Err(BodyError::SignatureNotAString),
            },
        };
        Ok(Self {
            members,
            signature,
            inexact_number: crate::exact_numbers::first_inexact_number(raw),
        })
    }

    pub fn require_signature(&self) -> Result<&str, BodyError> {
        self.signature.as_deref().ok_or(BodyError::MissingSignature)
    }

    /// The signed message in the given form.
    pub fn message(&self, form: MessageForm) -> String {
        message(&self.members, form)
    }

    /// The top-level member `name`, if present.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.members.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// The SHA-256 of both messages, for a partner to compare with its own string-to-sign
    /// (SPEC §3.4b). Derived from the body alone: no key material.
    pub fn message_hashes(&self) -> crate::wire::MessageHashes {
        crate::wire::MessageHashes {
            as_sent: message_sha256(&self.message(MessageForm::AsSent)),
            canonical: message_sha256(&self.message(MessageForm::Canonical)),
        }
    }

    /// Whether the signature matches either message form, compared in constant time.
    /// Anything that is not exactly 128 hex digits (either case) is simply invalid.
    pub fn verify(&self, key: &SignatureKey) -> bool {
        let Some(signature) = self.signature.as_deref() else {
            return false;
        };
        let Some(tag) = decode_signature(signature) else {
            return false;
        };
        [MessageForm::AsSent, MessageForm::Canonical]
            .into_iter()
            .any(|form| key.mac(&self.message(form)).verify_slice(&tag).is_ok())
    }
}

fn message(members: &[(String, Value)], form: MessageForm) -> String {
    // Most signed bodies fit: the message is written without growing its buffer.
    let mut out = String::with_capacity(256);
    json::write_members(members, &mut out, form == MessageForm::Canonical);
    out
}

/// The 64 bytes of a signature of 128 hex digits (either case). Decoded without branches on
/// the digits (`base16ct`): a decoder that branches on digit-or-letter mispredicts on about
/// every other digit of a random signature, which was most of authentication's own time.
fn decode_signature(signature: &str) -> Option<[u8; 64]> {
    if signature.len() != 128 {
        return None;
    }
    let mut tag = [0u8; 64];
    base16ct::mixed::decode(signature, &mut tag).ok()?;
    Some(tag)
}

/// Lower-case hex SHA-256 of a message's UTF-8 bytes.
pub fn message_sha256(message: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(message.as_bytes()))
}

/// Lower-case hex HMAC-SHA512 of `message` under `secret`.
pub fn sign_message(secret: &SecretKey, message: &str) -> String {
    hex::encode(
        SignatureKey::new(secret)
            .mac(message)
            .finalize()
            .into_bytes(),
    )
}

/// Signs a JSON object body: returns it serialised in `form` with a `signature` member added
/// last (any `signature` member already present is replaced). The server removes the member
/// before computing either message, so its position does not matter.
pub fn sign_body(raw: &[u8], secret: &SecretKey, form: MessageForm) -> Result<String, BodyError> {
    let body = SignedBody::parse(raw)?;
    let mut out = body.message(form);
    let signature = sign_message(secret, &out);
    out.pop(); // the closing brace of the object
    if !body.members.is_empty() {
        out.push(',');
    }
    out.push_str(&format!("\"{SIGNATURE_MEMBER}\":\"{signature}\"}}"));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SecretKey {
        SecretKey::parse("sk_partner_fbi9lNL7GCHyd6uQEMDFGH19bSqMwB2OfotK")
            .unwrap_or_else(|_| unreachable!())
    }

    #[test]
    fn a_signed_body_verifies_in_both_forms() {
        for form in [MessageForm::AsSent, MessageForm::Canonical] {
            let signed = sign_body(br#"{"b":1,"a":{"d":2,"c":3}}"#, &key(), form).unwrap();
            let body = SignedBody::parse(signed.as_bytes());
            assert!(
                body.as_ref()
                    .is_ok_and(|b| b.verify(&SignatureKey::new(&key()))),
                "{form:?}: {signed}"
            );
        }
    }

    #[test]
    fn sign_body_of_an_empty_object_adds_only_the_signature() {
        let signed = sign_body(b"{}", &key(), MessageForm::AsSent).unwrap();
        assert!(signed.starts_with("{\"signature\":\""), "{signed}");
        assert!(SignedBody::parse(signed.as_bytes())
            .is_ok_and(|b| b.verify(&SignatureKey::new(&key()))));
    }

    #[test]
    fn signatures_of_the_wrong_shape_are_invalid_not_errors() {
        for sig in [
            "",
            "00",
            &"g".repeat(128),
            &"0".repeat(127),
            &"0".repeat(130),
            "é",
        ] {
            let raw = format!("{{\"signature\":{}}}", serde_json::Value::from(sig));
            let body = SignedBody::parse(raw.as_bytes());
            assert!(
                body.is_ok_and(|b| !b.verify(&SignatureKey::new(&key()))),
                "{sig}"
            );
        }
    }

    #[test]
    fn a_signature_verifies_in_either_case_and_with_no_other_digit() {
        let signed = sign_body(br#"{"a":1}"#, &key(), MessageForm::AsSent).unwrap();
        let body = SignedBody::parse(signed.as_bytes()).unwrap();
        let good = body.signature.clone().unwrap();
        let verifies = |signature: String| {
            let mut body = body.clone();
            body.signature = Some(signature);
            body.verify(&SignatureKey::new(&key()))
        };
        assert!(verifies(good.to_uppercase()));
        // Every ASCII character in place of each digit: only that digit, in
        // either case, verifies (the decoder's ranges end where hex digits end).
        for index in 0..good.len() {
            let digit = good.as_bytes()[index];
            for c in (0u8..128).map(char::from) {
                let mut signature = good.clone();
                signature.replace_range(index..=index, c.encode_utf8(&mut [0; 4]));
                let same = c.to_ascii_lowercase() == char::from(digit);
                assert_eq!(
                    verifies(signature),
                    same,
                    "{c:?} in place of {}",
                    char::from(digit)
                );
            }
        }
    }

    #[test]
    fn a_missing_or_non_string_signature_is_a_body_error() {
        let body = SignedBody::parse(b"{}");
        assert_eq!(
            body.map(|b| b.require_signature().map(str::to_owned).err()),
            Ok(Some(BodyError::MissingSignature))
        );
        assert_eq!(
            SignedBody::parse(br#"{"signature":1}"#).err(),
            Some(BodyError::SignatureNotAString)
        );
    }
}
