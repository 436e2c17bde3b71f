//! One-time links: looking at one, and using one.

use super::key_cache::wait_out;
use super::key_policy::KeyTimes;
use super::reminders::schedule_for_new_key;
use super::Context;
use super::{commit_and_wake, human_time, queue_email, Outgoing, Overlap};
use crate::clock::{from_millis, millis};
use crate::crypto::secret_key_aad;
use crate::error::{Error, Result};
use crate::mail::EmailKind;
use crate::store::{Actor, Audit, AuditKind, Event, KeyClass, KeySpec, Link, NewKey, Supersede};
use chrono::{DateTime, SecondsFormat, Utc};
use keyward_core::{
    ErrorCode, KeyPair, LinkPurpose, LinkToken, PartnerCode, PartnerId, PartnerStatus,
};
use rand::rngs::OsRng;
use secrecy::ExposeSecret;
use serde::Serialize;
use std::net::IpAddr;

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
    /// How long the current keys keep working once a regeneration link is used.
    pub overlap: Overlap,
    /// For a `restricted_key` link: the pair it makes (name, scopes, mode, expiry).
    pub key: Option<KeySpec>,
}

impl LinkView {
    fn of(link: &Link) -> Self {
        Self {
            purpose: link.purpose,
            expires_at: from_millis(link.expires_at),
            overlap: Overlap::from_seconds(link.overlap_seconds).unwrap_or_default(),
            key: link.key.clone(),
        }
    }
}

/// What using a link gave.
#[derive(Debug)]
pub enum Redemption {
    Redeemed(Box<Redeemed>),
    /// The partner code did not match: nothing was used, and the page can ask again.
    Mismatch(LinkView),
}

/// A used link: the partner's new keys, to be shown once. The secret stays a `SecretKey`
/// (redacted `Debug`) until the answer is serialised.
#[derive(Debug)]
pub struct Redeemed {
    pub partner_id: PartnerId,
    pub partner_code: PartnerCode,
    pub keys: KeyPair,
    pub purpose: LinkPurpose,
    /// Until when the previous pair keeps working, if it retires rather than being revoked.
    pub old_keys_expire_at: Option<DateTime<Utc>>,
    /// For a restricted pair: what it is.
    pub key: Option<keyward_core::wire::KeyInfo>,
}

/// Looks at a link without changing anything (mail scanners fetch links).
pub async fn view_link(ctx: &Context, token: &LinkToken) -> Result<LinkView> {
    let (link, _) = ctx
        .store
        .link_by_hash(&token.hash())
        .await?
        .ok_or(Error::from(ErrorCode::LinkUnknown))?;
    if let Some(problem) = link_problem(&link, ctx.clock.now()) {
        return Err(problem.into());
    }
    Ok(LinkView::of(&link))
}

#[derive(Serialize)]
struct NoticeContext<'a> {
    partner_code: &'a str,
    regenerated_at: String,
    ip: String,
    /// When the previous pair stops working, if it retires; empty: it stopped at once.
    old_keys_expire_at: String,
}

#[derive(Serialize)]
struct ReminderContext<'a> {
    partner_code: &'a str,
    old_keys_expire_at: String,
}

/// Consumes a link, atomically: onboarding activates the partner with its first key pair;
/// regeneration revokes every active key and creates a new pair (partner ID unchanged) and
/// queues the notice email. A wrong partner code consumes nothing and says what the link is,
/// so the page can ask again without a second query.
#[tracing::instrument(skip_all)]
pub async fn redeem(
    ctx: &Context,
    token: &LinkToken,
    partner_code: &str,
    ip: IpAddr,
) -> Result<Redemption> {
    let now = ctx.clock.now();
    let mut tx = ctx.store.begin().await?;
    let (link, partner) = tx
        .link_by_hash_for_update(&token.hash())
        .await?
        .ok_or(Error::from(ErrorCode::LinkUnknown))?;
    if let Some(problem) = link_problem(&link, now) {
        return Err(problem.into());
    }
    if !partner.code.matches(partner_code.trim()) {
        return Ok(Redemption::Mismatch(LinkView::of(&link)));
    }
    if partner.status == PartnerStatus::Suspended {
        return Err(ErrorCode::PartnerSuspended.into());
    }
    // The one conditional update that decides which of concurrent redemptions wins.
    if !tx.consume_link(&link.id, now).await? {
        return Err(ErrorCode::LinkUsed.into());
    }
    if link.purpose == LinkPurpose::RestrictedKey {
        // A new pair beside the others: nothing is revoked, no other link is spent.
        return super::keys::make_restricted_pair(ctx, tx, &link, partner, ip, now)
            .await
            .map(|redeemed| Redemption::Redeemed(Box::new(redeemed)));
    }
    // Any other unused link of the same kind is spent too (a signed one and one asked for
    // without keys can both be open).
    tx.supersede_links(&partner.id, link.purpose, Supersede::All, now)
        .await?;
    let overlap = Overlap::from_seconds(link.overlap_seconds).unwrap_or_default();
    let retiring = link.purpose == LinkPurpose::Regeneration && overlap.seconds() > 0;
    let (revoked, old_keys_expire_at) = if retiring {
        // The old pair retires instead of being revoked; a pair still retiring from an
        // earlier regeneration is revoked at once (one current and one retiring at most).
        let revoked = tx.revoke_retiring_keys(&partner.id, now).await?;
        let until = now + chrono::TimeDelta::seconds(overlap.seconds());
        let retired = tx.retire_current_key(&partner.id, until).await?;
        if let Some(retired) = &retired {
            // Sent when the overlap ends, unless the pair is revoked first (SPEC §9.3).
            tx.queue_event(&Event {
                event_type: "key.expired",
                partner: Some(&partner.id),
                key_id: Some(retired),
                actor: Actor::Keyward,
                name: None,
                at: until,
                about_key_id: Some(retired),
            })
            .await?;
            if overlap.seconds() >= Overlap::REMINDER_FROM_SECONDS {
                let context = ReminderContext {
                    partner_code: partner.code.as_str(),
                    old_keys_expire_at: human_time(until),
                };
                let mut email = Outgoing::now(&partner.email, EmailKind::RetiringReminder, now);
                email.send_after =
                    until - chrono::TimeDelta::seconds(Overlap::REMINDER_BEFORE_SECONDS);
                email.about_key_id = Some(retired);
                queue_email(ctx.cipher()?, &mut tx, email, &context).await?;
            }
        }
        (revoked, retired.map(|_| until))
    } else if link.signed {
        // Asked for with the keys: only the primary pair is replaced (SPEC §8.1).
        (tx.revoke_primary_keys(&partner.id, now).await?, None)
    } else {
        // The lost-keys path: whatever was lost, every pair goes.
        (tx.revoke_keys(&partner.id, now).await?, None)
    };
    if link.purpose == LinkPurpose::Onboarding && partner.status == PartnerStatus::Pending {
        tx.set_partner_status(&partner.id, PartnerStatus::Active, now)
            .await?;
    }
    let pair = KeyPair::generate(&mut OsRng);
    let key_id = uuid::Uuid::now_v7().to_string();
    let ciphertext = ctx.cipher()?.encrypt(
        pair.secret.expose_secret().as_bytes(),
        &secret_key_aad(partner.id.as_str(), &key_id),
    )?;
    tx.insert_key(&NewKey {
        id: &key_id,
        partner_id: &partner.id,
        public_key_hash: &pair.public.hash(),
        public_key_hint: &pair.public.redacted(),
        secret_ciphertext: &ciphertext,
        secret_key_hash: &pair.secret.hash(),
        created_at: millis(now),
        class: &KeyClass::Primary,
        mode: keyward_core::KeyMode::Live,
        slot: None,
    })
    .await?;
    let times = KeyTimes {
        created_at: millis(now),
        last_used_at: None,
        retiring_until: None,
        valid_until: None,
        legacy: false,
    };
    schedule_for_new_key(ctx, &mut tx, &key_id, &times, &partner, now).await?;
    let ip_text = ip.to_string();
    if link.purpose == LinkPurpose::Regeneration {
        let context = NoticeContext {
            partner_code: partner.code.as_str(),
            regenerated_at: now.to_rfc3339_opts(SecondsFormat::Secs, true),
            ip: ip_text.clone(),
            old_keys_expire_at: old_keys_expire_at.map(human_time).unwrap_or_default(),
        };
        let email = Outgoing::now(&partner.email, EmailKind::RegeneratedNotice, now);
        queue_email(ctx.cipher()?, &mut tx, email, &context).await?;
    }
    let detail = match old_keys_expire_at {
        Some(until) => format!(
            "key {key_id}; {revoked} key(s) revoked; the previous pair retires at {}",
            until.to_rfc3339_opts(SecondsFormat::Secs, true)
        ),
        None => format!("key {key_id}; {revoked} key(s) revoked"),
    };
    tx.audit(&Audit {
        partner: Some(&partner.id),
        ip: Some(ip),
        detail: Some(&detail),
        key_id: Some(&key_id),
        ..Audit::new(AuditKind::LinkRedeemed(link.purpose), Actor::Partner, now)
    })
    .await?;
    commit_and_wake(ctx, tx).await?;
    let old_keys_changed = revoked > 0 || old_keys_expire_at.is_some();
    if old_keys_changed && !ctx.settings.key_cache.is_zero() {
        // The new keys are shown only once no node can still accept the old ones (SPEC §6),
        // or, when they retire, once every node knows when they expire.
        let started = std::time::Instant::now();
        wait_out(ctx.settings.key_cache).await;
        ctx.metrics.waited_out(started.elapsed());
    }
    ctx.metrics.link_redeemed(link.purpose);
    tracing::info!(partner_id = %partner.id, key = %pair.public.redacted(), purpose = link.purpose.as_str(), "link redeemed");
    Ok(Redemption::Redeemed(Box::new(Redeemed {
        partner_id: partner.id,
        partner_code: partner.code,
        keys: pair,
        purpose: link.purpose,
        old_keys_expire_at,
        key: None,
    })))
}
