//! Authentication of signed requests: the checks of SPEC §3.2, in order.

use crate::clock::millis;
use crate::crypto::secret_key_aad;
use crate::error::{Error, Result};
use crate::state::AppState;
use crate::store::Partner;
use keyward_core::signature::SignedBody;
use keyward_core::{json::Value, ErrorCode, PartnerStatus, PublicKey, SecretKey};
use std::net::IpAddr;

/// A request authenticated by its public key and signature.
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub key_id: String,
    pub key_created_at: i64,
    pub partner: Partner,
}

/// Checks, in the order of SPEC §3.2, once the caller has read a well-formed public key from
/// the `Authorization` header: key known, not revoked, partner not suspended, client IP
/// allowed, signature, freshness. Nothing is cached: a key revoked on any node is refused on
/// the very next request.
#[tracing::instrument(skip_all)]
pub async fn authenticate(
    state: &AppState,
    public: &PublicKey,
    body: &SignedBody,
    ip: IpAddr,
) -> Result<Authenticated> {
    let record = state
        .store
        .key_by_hash(&public.hash())
        .await?
        .ok_or(Error::from(ErrorCode::UnknownKey))?;
    if record.revoked_at.is_some() {
        return Err(ErrorCode::RevokedKey.into());
    }
    if record.partner.status == PartnerStatus::Suspended {
        return Err(ErrorCode::PartnerSuspended.into());
    }
    if !record.partner.allowed_ips.allows(ip) {
        return Err(ErrorCode::IpNotAllowed.into());
    }
    let secret = decrypt_secret(
        state,
        record.partner.id.as_str(),
        &record.key_id,
        &record.secret_ciphertext,
    )?;
    if !body.verify(&secret) {
        return Err(ErrorCode::InvalidSignature.into());
    }
    check_freshness(state, body)?;
    Ok(Authenticated {
        key_id: record.key_id,
        key_created_at: record.created_at,
        partner: record.partner,
    })
}

fn decrypt_secret(
    state: &AppState,
    partner_id: &str,
    key_id: &str,
    ciphertext: &[u8],
) -> Result<SecretKey> {
    let plain = state
        .cipher
        .decrypt(ciphertext, &secret_key_aad(partner_id, key_id))
        .map_err(|e| {
            Error::Unexpected(anyhow::Error::new(e).context(format!("secret key of key {key_id}")))
        })?;
    let text = String::from_utf8(plain).map_err(|_| {
        Error::Unexpected(anyhow::anyhow!("secret key of key {key_id} is not text"))
    })?;
    SecretKey::parse(&text)
        .map_err(|_| Error::Unexpected(anyhow::anyhow!("secret key of key {key_id} is malformed")))
}

/// An optional top-level `timestamp` (ms since the epoch, number or numeric string) must be
/// within the freshness window of the server's time.
fn check_freshness(state: &AppState, body: &SignedBody) -> Result<()> {
    let timestamp = match body.get("timestamp") {
        None => return Ok(()),
        Some(Value::Number(n)) => Some(*n),
        Some(Value::String(s)) => s.trim().parse::<f64>().ok(),
        Some(_) => None,
    };
    let Some(timestamp) = timestamp.filter(|t| t.is_finite()) else {
        return Err(Error::field(
            "timestamp",
            "must be milliseconds since the Unix epoch, as a number or a numeric string",
        ));
    };
    #[allow(clippy::cast_precision_loss)] // milliseconds of our era are far below 2^53
    let skew = (millis(state.clock.now()) as f64 - timestamp).abs();
    #[allow(clippy::cast_precision_loss)]
    let window = state.settings.freshness_window.num_milliseconds() as f64;
    if skew > window {
        return Err(ErrorCode::StaleRequest.into());
    }
    Ok(())
}
