//! Authentication of signed requests: the checks of SPEC §3.2, in order, shared by WhoAmI,
//! regeneration, the verify API and the gateway.

use super::key_cache::AuthKey;
use super::key_policy::{require_primary, KeyTimes};
use super::Context;
use super::{replay_digest, ReplayPurpose};
use crate::clock::millis;
use crate::error::{Error, Result};
use crate::store::{KeyClass, Partner};
use keyward_core::signature::SignedBody;
use keyward_core::wire::StaleData;
use keyward_core::{json::Value, ErrorCode, KeyMode, PartnerStatus, PublicKey};
use std::net::IpAddr;
use std::sync::Arc;

/// The partner's `Authorization` header, read but not yet checked against storage.
#[derive(Debug, Clone)]
pub enum Authorization {
    Absent,
    /// Not `Bearer ` + a well-formed public key, not visible ASCII, or sent twice.
    Malformed,
    /// A key of §1's format, or of the legacy shape (SPEC §10.2): whether the latter is
    /// looked up is [`authenticate`]'s decision.
    Bearer(PublicKey),
}

impl Authorization {
    /// `Bearer pk_partner_…`; the scheme is case-insensitive, as in RFC 7235.
    pub fn from_value(value: &[u8]) -> Self {
        let parsed = std::str::from_utf8(value)
            .ok()
            .and_then(keyward_core::wire::bearer)
            .and_then(|key| PublicKey::parse_or_legacy(key).ok());
        parsed.map_or(Authorization::Malformed, Authorization::Bearer)
    }

    /// The header as relayed by the verify API's caller: none or empty is absent.
    pub fn relayed(value: Option<&str>) -> Self {
        match value {
            None | Some("") => Authorization::Absent,
            Some(value) => Self::from_value(value.as_bytes()),
        }
    }

    /// The well-formed public key, or the error the partner gets (SPEC §3.2's first check).
    pub fn public_key(&self) -> Result<&PublicKey> {
        match self {
            Authorization::Absent => Err(ErrorCode::MissingAuthorization.into()),
            Authorization::Malformed => Err(ErrorCode::MalformedAuthorization.into()),
            Authorization::Bearer(key) => Ok(key),
        }
    }

    pub fn is_absent(&self) -> bool {
        matches!(self, Authorization::Absent)
    }
}

/// The address a partner's request came from, when known. The verify API's caller may leave
/// it out for partners without an allow-list.
#[derive(Debug, Clone, Copy)]
pub enum ClientAddress {
    Known(IpAddr),
    NotGiven,
}

/// A request authenticated by its public key and signature.
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub key_id: String,
    pub key_created_at: i64,
    /// When the key stops working, if an expiry applies: a retiring pair's overlap, the
    /// expiry policy, a restricted pair's own (answers carry `Keyward-Key-Expires`).
    pub key_expires_at: Option<i64>,
    /// Whether the key is the retiring primary pair.
    pub retiring: bool,
    /// Primary or restricted, and what a restricted pair may do.
    pub class: Arc<KeyClass>,
    pub mode: KeyMode,
    pub partner: Arc<Partner>,
}

impl Authenticated {
    /// The routes that manage the partner's keys and account take its current primary pair
    /// only. A restricted pair gets 403 `insufficient_scope` (SPEC §8.1). A retiring pair keeps
    /// *working* but not *control* (SPEC §3.2): 403 `key_retiring`, so whoever still holds an
    /// old pair cannot lock the partner out.
    pub fn require_current_pair(&self) -> Result<()> {
        require_primary(&self.class)?;
        if self.retiring {
            return Err(ErrorCode::KeyRetiring.into());
        }
        Ok(())
    }
}

/// Checks, in the order of SPEC §3.2, once the caller has read a well-formed public key from
/// the `Authorization` header: key known, not revoked, not expired (a retiring pair past its
/// overlap, or past the expiry policy or its own expiry), partner not suspended, client IP allowed, signature, freshness. What the store says of the key comes through the node's
/// key cache, at most `KEYWARD_KEY_CACHE_MS` old (see `key_cache.rs` for why revocation
/// stays instant). No span of its own: it runs on every signed request, whose log context
/// (`telemetry::scope`) already names the route and the request id.
pub async fn authenticate(
    ctx: &Context,
    public: &PublicKey,
    body: &SignedBody,
    client: ClientAddress,
) -> Result<Authenticated> {
    // A key that fails §1's checks is looked up only while legacy keys are held (SPEC §10.2);
    // otherwise it is malformed, as it always was, and costs no read.
    // Boxed: a rare read, kept out of the future every signed request builds and moves.
    if public.is_legacy() && !Box::pin(ctx.key_cache.legacy_keys_held(&ctx.store)).await? {
        return Err(ErrorCode::MalformedAuthorization.into());
    }
    if ctx.settings.exact_numbers {
        if let Some(path) = &body.inexact_number {
            return Err(Error::field(
                path,
                "holds more digits than a double keeps, so the signature does not cover them: send this value as a string",
            ));
        }
    }
    let lookup = ctx
        .key_cache
        .lookup(&ctx.store, ctx.cipher()?, &ctx.metrics, &public.hash())
        .await?;
    let Some(key) = lookup.key.as_ref() else {
        ctx.metrics
            .auth_failed(ErrorCode::UnknownKey.as_str(), None);
        return Err(ErrorCode::UnknownKey.into());
    };
    let now = millis(ctx.clock.now());
    if let Err(e) = check_key(ctx, key, body, client, now) {
        if e.code().status() < 500 {
            ctx.metrics
                .auth_failed(e.code().as_str(), Some(key.partner.code.as_str()));
        }
        return Err(e);
    }
    let ip = match client {
        ClientAddress::Known(ip) => Some(ip),
        ClientAddress::NotGiven => None,
    };
    // Last use is approximate (recorded every few seconds): note a hot key once a second.
    let noted = key.last_noted.load(std::sync::atomic::Ordering::Relaxed);
    if now.saturating_sub(noted) >= 1000 {
        key.last_noted
            .store(now, std::sync::atomic::Ordering::Relaxed);
        ctx.key_usage.record(&key.key_id, now, ip);
    }
    Ok(Authenticated {
        key_id: key.key_id.clone(),
        key_created_at: key.created_at,
        key_expires_at: expires_at(ctx, key),
        retiring: key.expires_at.is_some(),
        class: key.class.clone(),
        mode: key.mode,
        partner: key.partner.clone(),
    })
}

/// When the key stops working, from what the key cache holds and this node's latest use:
/// no database read.
fn expires_at(ctx: &Context, key: &AuthKey) -> Option<i64> {
    let noted = key.last_noted.load(std::sync::atomic::Ordering::Relaxed);
    let last_used_at = match (key.last_used_at, noted) {
        (used, i64::MIN) => used,
        (Some(used), noted) => Some(used.max(noted)),
        (None, noted) => Some(noted),
    };
    let times = KeyTimes {
        created_at: key.created_at,
        last_used_at,
        retiring_until: key.expires_at,
        valid_until: key.class.valid_until(),
        legacy: key.legacy,
    };
    ctx.settings
        .expiry
        .expires_at(&times, !key.partner.allowed_ips.is_empty())
}

/// The checks after the key is known, in SPEC §3.2's order.
fn check_key(
    ctx: &Context,
    key: &AuthKey,
    body: &SignedBody,
    client: ClientAddress,
    now: i64,
) -> Result<()> {
    let signature_key = match (&key.signature_key, key.revoked_at) {
        (Some(signature_key), None) => signature_key,
        _ => return Err(ErrorCode::RevokedKey.into()),
    };
    if expires_at(ctx, key).is_some_and(|expires_at| expires_at <= now) {
        return Err(ErrorCode::ExpiredKey.into());
    }
    if key.partner.status == PartnerStatus::Suspended {
        return Err(ErrorCode::PartnerSuspended.into());
    }
    if !key.partner.allowed_ips.is_empty() {
        match client {
            ClientAddress::Known(ip) if key.partner.allowed_ips.allows(ip) => {}
            ClientAddress::Known(_) => return Err(ErrorCode::IpNotAllowed.into()),
            ClientAddress::NotGiven => return Err(Error::ClientIpRequired),
        }
    }
    if !body.verify(signature_key) {
        return Err(Error::InvalidSignature(body.message_hashes()));
    }
    check_freshness(body, now, ctx.settings.freshness_window)
}

/// Marks a signed request used, for the routes where it may be acted on once (the verify
/// API's `single_use`, the gateway's state-changing methods): 409 `replayed_request` if the
/// same key signed the same message within the replay window, on any node. "The same" is what
/// was signed, not its encoding on the wire (SPEC §2).
pub async fn use_once(ctx: &Context, auth: &Authenticated, body: &SignedBody) -> Result<()> {
    let now = ctx.clock.now();
    let digest = replay_digest(ReplayPurpose::SingleUse, &auth.key_id, body);
    let first = ctx
        .store
        .record_replay(&digest, now, now + ctx.settings.replay_window)
        .await?;
    if first {
        Ok(())
    } else {
        Err(ErrorCode::ReplayedRequest.into())
    }
}

/// An optional top-level `timestamp` (ms since the epoch, number or numeric string) must be
/// within the freshness window of the server's time (`now`, ms). A stale one is told the
/// server's time and its skew, so the partner can fix its clock (SPEC §3.4b).
fn check_freshness(body: &SignedBody, now: i64, window: chrono::TimeDelta) -> Result<()> {
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
    let skew = timestamp - now as f64;
    #[allow(clippy::cast_precision_loss)]
    let window = window.num_milliseconds() as f64;
    if skew.abs() > window {
        #[allow(clippy::cast_possible_truncation)] // saturating: any huge skew is just huge
        let skew_ms = skew.round() as i64;
        return Err(Error::StaleRequest(StaleData {
            server_time_ms: now,
            skew_ms,
        }));
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
        let parse = |s: &str| Authorization::from_value(s.as_bytes());
        assert!(matches!(
            parse(&format!("Bearer {key}")),
            Authorization::Bearer(_)
        ));
        assert!(matches!(
            parse(&format!("bearer {key}")),
            Authorization::Bearer(_)
        ));
        assert!(matches!(parse(key.as_str()), Authorization::Malformed));
        assert!(matches!(
            parse(&format!("Basic {key}")),
            Authorization::Malformed
        ));
        assert!(matches!(
            parse("Bearer pk_partner_short"),
            Authorization::Malformed
        ));
        assert!(matches!(
            Authorization::from_value(b"Bearer \xff"),
            Authorization::Malformed
        ));
    }
}
