//! Authentication of signed requests: the checks of SPEC §3.2, in order.

use crate::clock::millis;
use crate::crypto::secret_key_aad;
use crate::error::{Error, Result};
use crate::state::AppState;
use crate::store::{Partner, PartnerStatus};
use keyward_core::signature::SignedBody;
use keyward_core::{json::Value, ErrorCode, PublicKey, SecretKey};
use std::net::IpAddr;

/// A request authenticated by its public key and signature.
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub key_id: String,
    pub key_created_at: i64,
    pub partner: Partner,
}

/// Checks, in the order of SPEC §3.2: key well-formed and known, not revoked, partner not
/// suspended, client IP allowed, signature, freshness. Nothing is cached: a key revoked on any
/// node is refused on the very next request.
#[tracing::instrument(skip_all)]
pub async fn authenticate(
    state: &AppState,
    authorization: Option<&str>,
    body: &SignedBody,
    ip: IpAddr,
) -> Result<Authenticated> {
    let header = authorization.ok_or(Error::from(ErrorCode::MissingAuthorization))?;
    let public = parse_bearer(header).ok_or(Error::from(ErrorCode::MalformedAuthorization))?;
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
    if !ip_allowed(record.partner.allowed_ips.as_deref(), ip) {
        return Err(ErrorCode::IpNotAllowed.into());
    }
    let secret = decrypt_secret(
        state,
        &record.partner.id,
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

/// `Bearer pk_partner_…` (the scheme is case-insensitive, as in RFC 7235).
fn parse_bearer(header: &str) -> Option<PublicKey> {
    let (scheme, key) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    PublicKey::parse(key.trim()).ok()
}

fn ip_allowed(allowed: Option<&str>, ip: IpAddr) -> bool {
    let Some(allowed) = allowed.filter(|a| !a.trim().is_empty()) else {
        return true;
    };
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    allowed
        .split(',')
        .filter_map(|block| crate::config::parse_cidr(block).ok())
        .any(|net| net.contains(&ip))
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
    let window = state.settings.freshness_window.as_millis() as f64;
    if skew > window {
        return Err(ErrorCode::StaleRequest.into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyward_core::KeyPair;
    use rand::rngs::OsRng;

    #[test]
    fn bearer_headers_are_parsed_strictly() {
        let key = KeyPair::generate(&mut OsRng).public;
        assert!(parse_bearer(&format!("Bearer {key}")).is_some());
        assert!(parse_bearer(&format!("bearer {key}")).is_some());
        assert!(parse_bearer(key.as_str()).is_none());
        assert!(parse_bearer(&format!("Basic {key}")).is_none());
        assert!(parse_bearer("Bearer pk_partner_short").is_none());
    }

    #[test]
    fn allow_lists_take_cidrs_and_mapped_addresses() {
        let v4: IpAddr = [192, 0, 2, 7].into();
        assert!(ip_allowed(None, v4));
        assert!(ip_allowed(Some("192.0.2.0/24"), v4));
        assert!(!ip_allowed(Some("198.51.100.0/24"), v4));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap_or(v4);
        assert!(ip_allowed(Some("192.0.2.7"), mapped));
    }
}
