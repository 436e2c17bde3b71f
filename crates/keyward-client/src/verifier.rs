//! For the exchange's own services: the verify API's client ([`Verifier`]) and a tower layer
//! that puts it in front of an axum app (`VerifyLayer`, with the `layer` feature).

use crate::client::{Client, ClientError};
use keyward_core::wire::paths::VERIFY;
use keyward_core::wire::{RelayedError, VerifiedPartner, VerifyRejection, VerifyRequest};
use keyward_core::ServiceToken;
use secrecy::ExposeSecret;
use serde_json::Value;

/// A pooled client of keyward's verify API (SPEC §7.1), on its internal listener.
///
/// ```no_run
/// use keyward_client::{Verification, Verifier};
/// use keyward_core::wire::VerifyRequest;
///
/// # async fn run(partner_authorization: String, partner_body: String) -> Result<(), keyward_client::ClientError> {
/// let verifier = Verifier::new("http://127.0.0.1:8081", "kw_service_…")?;
/// let request = VerifyRequest {
///     authorization: Some(partner_authorization),
///     body: partner_body,
///     client_ip: Some("203.0.113.7".into()),
///     single_use: true, // a payout: the same signed request must not pay twice
///     required_scopes: vec!["payouts:write".into()], // with KEYWARD_SCOPES set
/// };
/// match verifier.verify(&request).await? {
///     Verification::Valid(partner) => println!("pay on behalf of {}", partner.partner_id),
///     // Answer the partner with exactly this status and envelope.
///     Verification::Invalid(error) => println!("{} {}", error.status, error.code),
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Verifier {
    client: Client,
    token: ServiceToken,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("internal_url", &self.client.base_url())
            .field("token", &self.token.hint())
            .finish()
    }
}

/// What the verify API said of a partner's request.
#[derive(Debug, Clone)]
pub enum Verification {
    Valid(VerifiedPartner),
    /// Relay this to the partner unchanged: its status and [`RelayedError::envelope`].
    Invalid(RelayedError),
}

impl Verifier {
    /// A client of the internal listener at `internal_url` (`http://127.0.0.1:8081`),
    /// presenting `service_token` (from `keyward service-token create NAME`).
    pub fn new(internal_url: &str, service_token: &str) -> Result<Self, ClientError> {
        let token = ServiceToken::parse(service_token.trim())
            .map_err(|e| ClientError::Invalid(format!("service token: {e}")))?;
        Ok(Self {
            client: Client::new(internal_url)?,
            token,
        })
    }

    /// Verifies one partner request. `Err` only when the verify request itself failed (a bad
    /// service token, keyward unreachable or unavailable); a partner's mistake is
    /// [`Verification::Invalid`].
    pub async fn verify(&self, request: &VerifyRequest) -> Result<Verification, ClientError> {
        let body = serde_json::to_string(request)
            .map_err(|e| ClientError::Invalid(format!("the verify request: {e}")))?;
        let bearer = format!("Bearer {}", self.token.expose_secret());
        let (_, data) = self
            .client
            .post::<Value>(VERIFY, body, Some(bearer))
            .await?;
        let data = data
            .ok_or_else(|| ClientError::Invalid("the verify API answered without data".into()))?;
        let not_understood =
            |e: serde_json::Error| ClientError::Invalid(format!("the verify API's answer: {e}"));
        if data["valid"] == Value::Bool(true) {
            Ok(Verification::Valid(
                serde_json::from_value(data).map_err(not_understood)?,
            ))
        } else {
            let rejection: VerifyRejection =
                serde_json::from_value(data).map_err(not_understood)?;
            Ok(Verification::Invalid(rejection.error))
        }
    }
}
