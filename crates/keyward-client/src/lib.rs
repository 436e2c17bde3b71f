//! The partner's side of keyward.
//!
//! Features: `cli` (the `keyward` binary's partner commands, with clap) and `layer`
//! (`VerifyLayer`, a tower layer for axum services; with tower and axum). Neither is on by
//! default: signing, the [`Client`] and the [`Verifier`] need neither.
//!
//! Signing and verifying use the same module as the server (`keyward_core::signature`), so a
//! body this crate signs is exactly what the server checks:
//!
//! ```
//! use keyward_client::{sign, sign_canonical, verify, SecretKey};
//!
//! let secret = SecretKey::parse("sk_partner_fbi9lNL7GCHyd6uQEMDFGH19bSqMwB2OfotK")?;
//! let body = sign(r#"{"email": "sample@example.com", "partner_code": "ACME"}"#, &secret)?;
//! // The signature Node.js computes for this body (testdata/signatures.json).
//! assert_eq!(
//!     body,
//!     r#"{"email":"sample@example.com","partner_code":"ACME","signature":"1c9b9ac12204b196280fcc81515f20478347b6b73e3e4e3a89023d944f7b3c292f4ba4021136be12ad0bd0a2eb2948fc0a6cd06e28efa18d74f506631ee02981"}"#
//! );
//! assert!(verify(&body, &secret));
//! assert!(!verify(&body.replace("ACME", "ACMF"), &secret));
//!
//! // The RFC 8785 form sorts members; the server accepts either.
//! let canonical = sign_canonical(r#"{"partner_code":"ACME","email":"sample@example.com"}"#, &secret)?;
//! assert!(canonical.starts_with(r#"{"email":"#));
//! assert!(verify(&canonical, &secret));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The [`Client`] calls every route and turns each error answer into [`ClientError::Api`],
//! which carries the spec's code and the server's message:
//!
//! ```no_run
//! use keyward_client::{Client, ClientError, ErrorCode};
//!
//! # async fn run() -> Result<(), ClientError> {
//! let client = Client::new("http://127.0.0.1:8080")?;
//! client.onboard("ACME", "ops@acme.example").await?;
//! // … the partner opens the emailed link …
//! let credentials = client.redeem_link("http://127.0.0.1:8080/link/TOKEN", "ACME").await?;
//! let partner = client.with_credentials(&credentials.public_key, &credentials.secret_key)?;
//! let me = partner.whoami().await?;
//! println!("signed in as {} ({})", me.partner_code, me.partner_id);
//! match partner.regenerate("ACME", "ops@acme.example").await {
//!     Ok(message) => println!("{message}"),
//!     Err(ClientError::Api { code: ErrorCode::RateLimited, .. }) => println!("try again later"),
//!     Err(other) => return Err(other),
//! }
//! # Ok(()) }
//! ```

#[cfg(feature = "cli")]
pub mod cli;
mod client;
#[cfg(feature = "layer")]
mod layer;
mod verifier;

pub use client::{Client, ClientError, PartnerClient};
pub use keyward_core::signature::{BodyError, MessageForm};
pub use keyward_core::wire::{Credentials, FieldProblem, WhoAmI};
pub use keyward_core::wire::{RelayedError, VerifiedPartner, VerifyRequest};
pub use keyward_core::{ErrorCode, PublicKey, SecretKey};
#[cfg(feature = "layer")]
pub use layer::{ClientIpFn, SingleUse, VerifyLayer, VerifyService};
pub use verifier::{Verification, Verifier};

use keyward_core::signature::{sign_body, SignatureKey, SignedBody};

/// Signs a JSON object body as sent (`JSON.stringify` form): returns the body, re-serialised
/// in that form, with `signature` added last.
pub fn sign(body: &str, secret: &SecretKey) -> Result<String, BodyError> {
    sign_body(body.as_bytes(), secret, MessageForm::AsSent)
}

/// Signs a JSON object body in RFC 8785 (JCS) form: members sorted at every depth.
pub fn sign_canonical(body: &str, secret: &SecretKey) -> Result<String, BodyError> {
    sign_body(body.as_bytes(), secret, MessageForm::Canonical)
}

/// Whether the body's `signature` matches it (either form), as the server would judge it.
pub fn verify(body: &str, secret: &SecretKey) -> bool {
    SignedBody::parse(body.as_bytes()).is_ok_and(|b| b.verify(&SignatureKey::new(secret)))
}
