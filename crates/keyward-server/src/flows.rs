//! What keyward does, independent of HTTP: onboarding, authentication, regeneration and the
//! redemption of one-time links. Each state change happens in one transaction, together with
//! the email that announces it (transactional outbox).

use crate::clock::{from_millis, millis};
use crate::crypto::{outbox_aad, secret_key_aad};
use crate::error::{Error, Result};
use crate::mail::{templates, EmailKind};
use crate::state::AppState;
use crate::store::{Link, LinkPurpose, NewEmail, NewKey, NewLink, Partner, PartnerStatus, Tx};
use anyhow::Context;
use chrono::{DateTime, SecondsFormat, Utc};
use keyward_core::signature::SignedBody;
use keyward_core::wire::Credentials;
use keyward_core::{
    json::Value, Email, ErrorCode, KeyPair, LinkToken, PartnerCode, PublicKey, SecretKey,
};
use rand::rngs::OsRng;
use secrecy::ExposeSecret;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::net::IpAddr;

const HOUR_MS: i64 = 3_600_000;

fn human_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// `POST …/OnboardPartner`: a new partner, or a fresh link for a pending one.
#[tracing::instrument(skip_all, fields(partner_code = %code))]
pub async fn onboard(
    state: &AppState,
    code: &PartnerCode,
    email: &Email,
    ip: IpAddr,
) -> Result<()> {
    let now = state.clock.now();
    let mut tx = state.store.begin().await?;
    let partner = match tx.partner_by_code_for_update(&code.folded()).await? {
        None => {
            let id = uuid::Uuid::now_v7().to_string();
            match tx
                .insert_partner(&id, code.as_str(), email.as_str(), millis(now))
                .await
            {
                Ok(()) => {}
                // Another node created it between our read and our insert.
                Err(crate::store::StoreError::Conflict) => {
                    return Err(ErrorCode::PartnerExists.into())
                }
                Err(e) => return Err(e.into()),
            }
            tx.audit(
                Some(&id),
                "partner_created",
                Some(&ip.to_string()),
                None,
                millis(now),
            )
            .await?;
            Partner {
                id,
                code: code.as_str().to_owned(),
                email: email.as_str().to_owned(),
                status: PartnerStatus::Pending,
                allowed_ips: None,
                created_at: millis(now),
            }
        }
        Some(p) if p.status == PartnerStatus::Pending && email.matches(&p.email) => {
            enforce_partner_limit(state, &mut tx, &p, now).await?;
            p
        }
        Some(_) => return Err(ErrorCode::PartnerExists.into()),
    };
    issue_link(state, &mut tx, &partner, LinkPurpose::Onboarding, now, ip).await?;
    tx.commit().await?;
    state.outbox_wake.notify_one();
    Ok(())
}

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

/// `GenKeysForPartner` with Authorization: after the checks of SPEC §3.2, email a
/// regeneration link. An identical signed request within the replay window is not acted on
/// twice. The current keys keep working until the link is used.
#[tracing::instrument(skip_all, fields(partner_id = %auth.partner.id))]
pub async fn request_regeneration(
    state: &AppState,
    auth: &Authenticated,
    code: &str,
    email: &str,
    raw_body: &[u8],
    ip: IpAddr,
) -> Result<()> {
    if !auth.partner.code.eq_ignore_ascii_case(code) {
        return Err(ErrorCode::PartnerMismatch.into());
    }
    if !auth.partner.email.to_lowercase().eq(&email.to_lowercase()) {
        return Err(ErrorCode::EmailMismatch.into());
    }
    let now = state.clock.now();
    let mut tx = state.store.begin().await?;
    let digest = replay_digest(&auth.key_id, raw_body);
    let replay_until = millis(now)
        + i64::try_from(state.settings.replay_window.as_millis()).unwrap_or(i64::MAX / 2);
    if !tx.record_replay(&digest, millis(now), replay_until).await? {
        tracing::info!("identical signed request within the replay window: not acted on again");
        return Ok(());
    }
    let partner = tx
        .partner_by_code_for_update(&auth.partner.code.to_ascii_lowercase())
        .await?
        .ok_or(Error::from(ErrorCode::UnknownKey))?;
    enforce_partner_limit(state, &mut tx, &partner, now).await?;
    issue_link(state, &mut tx, &partner, LinkPurpose::Regeneration, now, ip).await?;
    tx.commit().await?;
    state.outbox_wake.notify_one();
    Ok(())
}

fn replay_digest(key_id: &str, raw_body: &[u8]) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update(key_id.as_bytes());
    hash.update([0]);
    hash.update(raw_body);
    hash.finalize().into()
}

/// `GenKeysForPartner` without Authorization (lost keys). The caller always gets the same
/// answer; a link is emailed only when code and email match a partner that may have one:
/// an active partner gets a regeneration link, a pending one a fresh onboarding link, a
/// suspended one nothing. Over the per-partner limit, nothing is sent either.
#[tracing::instrument(skip_all)]
pub async fn request_regeneration_without_keys(
    state: &AppState,
    code: &PartnerCode,
    email: &Email,
    ip: IpAddr,
) -> Result<()> {
    let now = state.clock.now();
    let mut tx = state.store.begin().await?;
    let Some(partner) = tx.partner_by_code_for_update(&code.folded()).await? else {
        return Ok(());
    };
    if !email.matches(&partner.email) {
        return Ok(());
    }
    let purpose = match partner.status {
        PartnerStatus::Active => LinkPurpose::Regeneration,
        PartnerStatus::Pending => LinkPurpose::Onboarding,
        PartnerStatus::Suspended => return Ok(()),
    };
    match enforce_partner_limit(state, &mut tx, &partner, now).await {
        Ok(()) => {}
        // Over the limit this path answers as always and sends nothing; any other failure
        // (the database) is reported as such.
        Err(Error::RateLimited { .. }) => {
            tracing::info!(partner_id = %partner.id, "lost-keys request over the per-partner limit: nothing sent");
            return Ok(());
        }
        Err(other) => return Err(other),
    }
    issue_link(state, &mut tx, &partner, purpose, now, ip).await?;
    tx.commit().await?;
    state.outbox_wake.notify_one();
    Ok(())
}

/// At most `partner_links_per_hour` links a partner per hour (stops email bombing; counted
/// in the database, so the limit holds across nodes).
async fn enforce_partner_limit(
    state: &AppState,
    tx: &mut Tx,
    partner: &Partner,
    now: DateTime<Utc>,
) -> Result<()> {
    let since = millis(now) - HOUR_MS;
    let issued = tx.links_issued_since(&partner.id, since).await?;
    if issued < i64::from(state.settings.partner_links_per_hour) {
        return Ok(());
    }
    let oldest = tx
        .oldest_link_since(&partner.id, since)
        .await?
        .unwrap_or(millis(now));
    let retry_after_ms = (oldest + HOUR_MS - millis(now)).max(1000);
    Err(Error::RateLimited {
        retry_after_secs: u64::try_from((retry_after_ms + 999) / 1000).unwrap_or(3600),
    })
}

#[derive(Serialize)]
struct LinkEmailContext<'a> {
    partner_code: &'a str,
    link_url: &'a str,
    expires_at: String,
    requested_ip: String,
}

/// Replaces the partner's unused links of this purpose with a new one and queues its email.
async fn issue_link(
    state: &AppState,
    tx: &mut Tx,
    partner: &Partner,
    purpose: LinkPurpose,
    now: DateTime<Utc>,
    ip: IpAddr,
) -> Result<()> {
    tx.supersede_links(&partner.id, purpose, millis(now))
        .await?;
    let token = LinkToken::generate(&mut OsRng);
    let ttl = match purpose {
        LinkPurpose::Onboarding => state.settings.onboarding_link_ttl,
        LinkPurpose::Regeneration => state.settings.regeneration_link_ttl,
    };
    let expires_at = now + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::hours(1));
    let link_id = uuid::Uuid::now_v7().to_string();
    let ip_text = ip.to_string();
    tx.insert_link(&NewLink {
        id: &link_id,
        partner_id: &partner.id,
        purpose,
        token_hash: &token.hash(),
        created_at: millis(now),
        expires_at: millis(expires_at),
        requested_ip: Some(&ip_text),
    })
    .await?;
    let link_url = format!(
        "{}/link/{}",
        state.settings.public_url,
        token.expose_secret()
    );
    let kind = match purpose {
        LinkPurpose::Onboarding => EmailKind::Onboarding,
        LinkPurpose::Regeneration => EmailKind::Regeneration,
    };
    let context = LinkEmailContext {
        partner_code: &partner.code,
        link_url: &link_url,
        expires_at: human_time(expires_at),
        requested_ip: ip_text.clone(),
    };
    queue_email(state, tx, &partner.email, kind, &context, now).await?;
    let event = format!("{}_link_issued", purpose.as_str());
    tx.audit(
        Some(&partner.id),
        &event,
        Some(&ip_text),
        Some(&link_id),
        millis(now),
    )
    .await?;
    Ok(())
}

/// Renders, encrypts and queues an email in the caller's transaction.
async fn queue_email(
    state: &AppState,
    tx: &mut Tx,
    recipient: &str,
    kind: EmailKind,
    context: &impl Serialize,
    now: DateTime<Utc>,
) -> Result<()> {
    let rendered = templates::render(kind, context)
        .context("rendering an email")
        .map_err(Error::Unexpected)?;
    let plain = serde_json::to_vec(&rendered)
        .context("serialising an email")
        .map_err(Error::Unexpected)?;
    let id = uuid::Uuid::now_v7().to_string();
    let ciphertext = state.cipher.encrypt(&plain, &outbox_aad(&id));
    tx.enqueue_email(&NewEmail {
        id: &id,
        recipient,
        kind: kind.name(),
        body_ciphertext: &ciphertext,
        created_at: millis(now),
    })
    .await?;
    Ok(())
}

/// Why a link cannot be used, if it cannot.
fn link_problem(link: &Link, now: DateTime<Utc>) -> Option<ErrorCode> {
    if link.used_at.is_some() {
        Some(ErrorCode::LinkUsed)
    } else if link.superseded_at.is_some() || link.expires_at <= millis(now) {
        Some(ErrorCode::LinkExpired)
    } else {
        None
    }
}

/// What the link page shows before anything is consumed.
#[derive(Debug, Clone)]
pub struct LinkView {
    pub purpose: LinkPurpose,
    pub expires_at: DateTime<Utc>,
}

/// Looks at a link without changing anything (mail scanners fetch links).
pub async fn view_link(state: &AppState, token: &str) -> Result<LinkView> {
    let token = LinkToken::parse(token).ok_or(Error::from(ErrorCode::LinkUnknown))?;
    let (link, _) = state
        .store
        .link_by_hash(&token.hash())
        .await?
        .ok_or(Error::from(ErrorCode::LinkUnknown))?;
    if let Some(problem) = link_problem(&link, state.clock.now()) {
        return Err(problem.into());
    }
    Ok(LinkView {
        purpose: link.purpose,
        expires_at: from_millis(link.expires_at),
    })
}

#[derive(Serialize)]
struct NoticeContext<'a> {
    partner_code: &'a str,
    regenerated_at: String,
    ip: String,
}

/// Consumes a link, atomically: onboarding activates the partner with its first key pair;
/// regeneration revokes every active key and creates a new pair (partner ID unchanged) and
/// queues the notice email. A wrong partner code consumes nothing.
#[tracing::instrument(skip_all)]
pub async fn redeem(
    state: &AppState,
    token: &str,
    partner_code: &str,
    ip: IpAddr,
) -> Result<(Credentials, LinkPurpose)> {
    let token = LinkToken::parse(token).ok_or(Error::from(ErrorCode::LinkUnknown))?;
    let now = state.clock.now();
    let mut tx = state.store.begin().await?;
    let (link, partner) = tx
        .link_by_hash_for_update(&token.hash())
        .await?
        .ok_or(Error::from(ErrorCode::LinkUnknown))?;
    if let Some(problem) = link_problem(&link, now) {
        return Err(problem.into());
    }
    if !partner.code.eq_ignore_ascii_case(partner_code.trim()) {
        return Err(ErrorCode::PartnerCodeMismatch.into());
    }
    if partner.status == PartnerStatus::Suspended {
        return Err(ErrorCode::PartnerSuspended.into());
    }
    // The one conditional update that decides which of concurrent redemptions wins.
    if !tx.consume_link(&link.id, millis(now)).await? {
        return Err(ErrorCode::LinkUsed.into());
    }
    let revoked = tx.revoke_keys(&partner.id, millis(now)).await?;
    if link.purpose == LinkPurpose::Onboarding && partner.status == PartnerStatus::Pending {
        tx.set_partner_status(&partner.id, PartnerStatus::Active, millis(now))
            .await?;
    }
    let pair = KeyPair::generate(&mut OsRng);
    let key_id = uuid::Uuid::now_v7().to_string();
    let ciphertext = state.cipher.encrypt(
        pair.secret.expose_secret().as_bytes(),
        &secret_key_aad(&partner.id, &key_id),
    );
    tx.insert_key(&NewKey {
        id: &key_id,
        partner_id: &partner.id,
        public_key_hash: &pair.public.hash(),
        public_key_hint: &pair.public.redacted(),
        secret_ciphertext: &ciphertext,
        created_at: millis(now),
    })
    .await?;
    let ip_text = ip.to_string();
    if link.purpose == LinkPurpose::Regeneration {
        let context = NoticeContext {
            partner_code: &partner.code,
            regenerated_at: now.to_rfc3339_opts(SecondsFormat::Secs, true),
            ip: ip_text.clone(),
        };
        queue_email(
            state,
            &mut tx,
            &partner.email,
            EmailKind::RegeneratedNotice,
            &context,
            now,
        )
        .await?;
    }
    let detail = format!("key {key_id}; {revoked} key(s) revoked");
    let event = format!("{}_link_redeemed", link.purpose.as_str());
    tx.audit(
        Some(&partner.id),
        &event,
        Some(&ip_text),
        Some(&detail),
        millis(now),
    )
    .await?;
    tx.commit().await?;
    state.outbox_wake.notify_one();
    tracing::info!(partner_id = %partner.id, key = %pair.public.redacted(), purpose = link.purpose.as_str(), "link redeemed");
    Ok((
        Credentials {
            partner_id: partner.id,
            partner_code: partner.code,
            public_key: pair.public.as_str().to_owned(),
            secret_key: pair.secret.expose_secret().to_owned(),
        },
        link.purpose,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

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
