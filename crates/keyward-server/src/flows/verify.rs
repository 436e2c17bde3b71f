//! The verify API (SPEC §7.1): a partner's request, relayed by one of the exchange's own
//! services, checked exactly as WhoAmI checks it.

use super::Context;
use super::{authenticate, use_once, Authenticated, Authorization, ClientAddress};
use crate::error::{Error, Result};
use keyward_core::signature::SignedBody;
use keyward_core::wire::MAX_BODY_BYTES;
use keyward_core::ErrorCode;

/// What the calling service relays of the partner's request.
#[derive(Debug)]
pub struct VerifyInput<'a> {
    /// The partner's `Authorization` header, if it sent one.
    pub authorization: Option<&'a str>,
    /// The partner's raw body.
    pub body: &'a str,
    pub client: ClientAddress,
    /// Whether the same signed request may be accepted only once (a payout).
    pub single_use: bool,
    /// Scopes the key must hold (SPEC §8.2), checked against the exchange's already.
    pub required_scopes: &'a [String],
}

/// The answer the partner must get.
#[derive(Debug)]
pub enum Verdict {
    Valid(Authenticated),
    /// The error the partner must receive, relayed unchanged by the caller.
    Invalid(Error),
}

/// Checks the partner's request in WhoAmI's order: the body's shape, then the key, its
/// revocation, the partner's suspension, the allow-list, the signature and freshness; then,
/// when asked, that it was not used before. An error of the verify request itself (no
/// `client_ip` for a partner with an allow-list) or of keyward (the database) is returned as
/// `Err`, to be answered to the caller, never relayed to the partner.
pub async fn verify(ctx: &Context, input: VerifyInput<'_>) -> Result<Verdict> {
    let outcome = async {
        if input.body.len() > MAX_BODY_BYTES {
            return Err(ErrorCode::BodyTooLarge.into());
        }
        let body = SignedBody::parse(input.body.as_bytes())?;
        body.require_signature()?;
        let authorization = Authorization::relayed(input.authorization);
        let auth = authenticate(ctx, authorization.public_key()?, &body, input.client).await?;
        ctx.settings.scopes.require(
            &auth.class,
            input.required_scopes.iter().map(String::as_str),
        )?;
        if input.single_use {
            // Boxed: a database write, kept out of the future of every verification.
            Box::pin(use_once(ctx, &auth, &body)).await?;
        }
        Ok::<_, Error>(auth)
    }
    .await;
    match outcome {
        Ok(auth) => Ok(Verdict::Valid(auth)),
        Err(Error::ClientIpRequired) => Err(Error::ClientIpRequired),
        Err(e) if is_the_partners(&e) => Ok(Verdict::Invalid(e)),
        Err(e) => Err(e),
    }
}

/// Whether an error is one the partner caused (4xx), rather than keyward (5xx).
fn is_the_partners(error: &Error) -> bool {
    let code = error.code();
    (400..500).contains(&code.status()) && code != ErrorCode::InvalidServiceToken
}
