//! What keyward does, independent of HTTP: onboarding, authentication, regeneration and the
//! redemption of one-time links. Each state change happens in one transaction, together with
//! the email that announces it (transactional outbox).

pub mod admin;
mod allow_list;
mod authenticate;
mod context;
pub mod key_cache;
pub mod key_usage;
mod links;
pub mod master_key;
mod onboarding;
mod regeneration;
mod rotation;
pub mod service_tokens;
mod verify;

pub(crate) use allow_list::change_allowed_ips;
pub use allow_list::{set_allowed_ips, Changer};
pub use authenticate::{authenticate, use_once, Authenticated, Authorization, ClientAddress};
pub use context::Context;
pub use keyward_core::overlap::{describe_duration, Overlap};
pub use links::{redeem, view_link, LinkView, Redeemed, Redemption};
pub use onboarding::{onboard, onboard_invited};
pub use regeneration::{request_regeneration, request_regeneration_without_keys};
pub use rotation::retire_old_keys;
pub use verify::{verify, Verdict, VerifyInput};

use crate::clock::millis;
use crate::config::Settings;
use crate::crypto::outbox_aad;
use crate::crypto::Cipher;
use crate::error::{Error, Result};
use crate::mail::{templates, EmailKind};
use crate::metrics::Limit;
use crate::store::{Actor, Audit, AuditKind, NewEmail, NewLink, Partner, Supersede, Tx};
use anyhow::Context as _;
use chrono::{DateTime, Utc};
use keyward_core::signature::{MessageForm, SignedBody};
use keyward_core::{Email, LinkPurpose, LinkToken, PartnerStatus};
use rand::rngs::OsRng;
use secrecy::ExposeSecret;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::net::IpAddr;

pub(super) const HOUR_MS: i64 = 3_600_000;

pub(super) fn human_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// What a replay record guards; the same signed message may be used once for each.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ReplayPurpose {
    Regeneration,
    SingleUse,
}

/// What identifies a signed request for the replay guards: the key and the canonical form
/// (RFC 8785) of what was signed. Every encoding of one request on the wire (whitespace,
/// escapes, member order, hex case, either message form) gives the same digest, so a
/// re-encoded request is the same request (SPEC §2).
pub(crate) fn replay_digest(purpose: ReplayPurpose, key_id: &str, body: &SignedBody) -> [u8; 32] {
    let label = match purpose {
        ReplayPurpose::Regeneration => "keyward/replay/regeneration/v1",
        ReplayPurpose::SingleUse => "keyward/replay/single-use/v1",
    };
    let mut hash = Sha256::new();
    for part in [label, key_id, &body.message(MessageForm::Canonical)] {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part.as_bytes());
    }
    hash.finalize().into()
}

/// Commits a transaction that queued an email, then wakes this node's outbox worker so the
/// email goes out at once (other nodes find it when they next poll).
pub(crate) async fn commit_and_wake(ctx: &Context, tx: Tx) -> Result<()> {
    let written = tx.commit_counted().await?;
    ctx.metrics.emails_queued(written.emails);
    for purpose in written.links {
        ctx.metrics.link_issued(purpose);
    }
    ctx.outbox_wake.notify_one();
    Ok(())
}

/// Who asked for a link: the key holder (a signed request) or anyone who knows a code and an
/// email (onboarding, lost keys). The two have separate budgets, and anyone's request never
/// cancels the key holder's link, so an attacker without the keys can never stop the key
/// holder from rotating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Requester<'a> {
    KeyHolder,
    Anyone,
    /// An operator command (resend, invite, revoke with notice): trusted, like the key holder.
    Operator(&'a str),
}

/// At most `partner_links_per_hour` links a partner per hour (stops email bombing; counted in
/// the database, so the limit holds across nodes). Of an active partner's budget, requests
/// without its keys may use only half: whatever an attacker who knows the code and the email
/// does, the key holder keeps the other half to rotate with.
pub(super) async fn enforce_partner_limit(
    ctx: &Context,
    tx: &mut Tx,
    partner: &Partner,
    requester: Requester<'_>,
    now: DateTime<Utc>,
) -> Result<()> {
    let limit = i64::from(ctx.settings.partner_links_per_hour);
    let since = millis(now) - HOUR_MS;
    let total = tx.links_issued_since(&partner.id, None, since).await?;
    if total >= limit {
        let oldest = tx.oldest_link_since(&partner.id, None, since).await?;
        ctx.metrics.rate_limited(Limit::Partner);
        return Err(rate_limited(oldest, now));
    }
    if requester == Requester::Anyone && partner.status == PartnerStatus::Active {
        let unsigned = tx
            .links_issued_since(&partner.id, Some(false), since)
            .await?;
        if unsigned >= limit / 2 {
            let oldest = tx
                .oldest_link_since(&partner.id, Some(false), since)
                .await?;
            ctx.metrics.rate_limited(Limit::Partner);
            return Err(rate_limited(oldest, now));
        }
    }
    Ok(())
}

/// At most `recipient_emails_per_hour` emails that anyone could cause to one address, whatever
/// the partner code (stops bombing a third party's mailbox with fresh codes). Counted in the
/// database under a lock on the address, so it holds across nodes.
pub(super) async fn enforce_recipient_limit(
    ctx: &Context,
    tx: &mut Tx,
    recipient: &Email,
    now: DateTime<Utc>,
) -> Result<()> {
    let folded = recipient.folded();
    tx.lock_recipient(&folded).await?;
    let (sent, oldest) = tx
        .unauthenticated_emails_since(&folded, millis(now) - HOUR_MS)
        .await?;
    if sent < i64::from(ctx.settings.recipient_emails_per_hour) {
        return Ok(());
    }
    ctx.metrics.rate_limited(Limit::Recipient);
    Err(rate_limited(oldest, now))
}

/// Whether anyone's request (no keys: lost keys, invite-only onboarding) may have a link
/// emailed to `partner`: within the partner's and the address's limits. Over a limit these
/// paths answer as always and send nothing (`false`); a database failure is an error.
pub(super) async fn within_anyones_limits(
    ctx: &Context,
    tx: &mut Tx,
    partner: &Partner,
    now: DateTime<Utc>,
) -> Result<bool> {
    let limits = async {
        enforce_partner_limit(ctx, tx, partner, Requester::Anyone, now).await?;
        enforce_recipient_limit(ctx, tx, &partner.email, now).await
    };
    match limits.await {
        Ok(()) => Ok(true),
        Err(Error::RateLimited { .. }) => {
            tracing::info!(partner_id = %partner.id, "a request without keys over the partner's or the address's limit: nothing sent");
            Ok(false)
        }
        Err(other) => Err(other),
    }
}

/// 429, with the time until the oldest of the counted events leaves the hour.
fn rate_limited(oldest: Option<i64>, now: DateTime<Utc>) -> Error {
    let oldest = oldest.unwrap_or(millis(now));
    let retry_after_ms = (oldest + HOUR_MS - millis(now)).max(1000);
    Error::RateLimited {
        retry_after_secs: u64::try_from((retry_after_ms + 999) / 1000).unwrap_or(3600),
    }
}

#[derive(Serialize)]
struct LinkEmailContext<'a> {
    partner_code: &'a str,
    link_url: &'a str,
    expires_at: String,
    requested_ip: String,
    /// How long the current keys keep working once the link is used, in words; empty: they
    /// stop at once.
    overlap: String,
}

/// Replaces the partner's unused links of this purpose with a new one and queues its email.
/// A link anyone asked for replaces only links anyone asked for. `overlap` is how long the
/// old pair keeps working once a regeneration link is used (zero: it is revoked at once).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn issue_link(
    settings: &Settings,
    cipher: &Cipher,
    tx: &mut Tx,
    partner: &Partner,
    purpose: LinkPurpose,
    requester: Requester<'_>,
    overlap: Overlap,
    now: DateTime<Utc>,
    ip: Option<IpAddr>,
) -> Result<()> {
    let which = match requester {
        Requester::KeyHolder | Requester::Operator(_) => Supersede::All,
        Requester::Anyone => Supersede::UnsignedOnly,
    };
    tx.supersede_links(&partner.id, purpose, which, millis(now))
        .await?;
    let token = LinkToken::generate(&mut OsRng);
    let ttl = match purpose {
        LinkPurpose::Onboarding => settings.onboarding_link_ttl,
        LinkPurpose::Regeneration => settings.regeneration_link_ttl,
    };
    let expires_at = now + ttl;
    let link_id = uuid::Uuid::now_v7().to_string();
    let ip_text = ip.map(|ip| ip.to_string());
    tx.insert_link(&NewLink {
        id: &link_id,
        partner_id: &partner.id,
        purpose,
        token_hash: &token.hash(),
        created_at: millis(now),
        expires_at: millis(expires_at),
        requested_ip: ip_text.as_deref(),
        signed: requester != Requester::Anyone,
        overlap_seconds: overlap.seconds(),
    })
    .await?;
    let link_url = format!("{}/link/{}", settings.public_url, token.expose_secret());
    let kind = match purpose {
        LinkPurpose::Onboarding => EmailKind::Onboarding,
        LinkPurpose::Regeneration => EmailKind::Regeneration,
    };
    let context = LinkEmailContext {
        partner_code: partner.code.as_str(),
        link_url: &link_url,
        expires_at: human_time(expires_at),
        requested_ip: ip_text
            .clone()
            .unwrap_or_else(|| "the operators' console".to_owned()),
        overlap: overlap.describe(),
    };
    let mut email = Outgoing::now(&partner.email, kind, now);
    email.unauthenticated = requester == Requester::Anyone;
    queue_email(cipher, tx, email, &context).await?;
    let actor = match requester {
        Requester::KeyHolder => Actor::Partner,
        Requester::Anyone => Actor::Anyone,
        Requester::Operator(name) => Actor::Operator(name),
    };
    tx.audit(&Audit {
        partner: Some(&partner.id),
        ip,
        detail: Some(&link_id),
        ..Audit::new(AuditKind::LinkIssued(purpose), actor, millis(now))
    })
    .await?;
    Ok(())
}

/// An email to queue, and how.
pub(crate) struct Outgoing<'a> {
    pub recipient: &'a Email,
    pub kind: EmailKind,
    pub now: DateTime<Utc>,
    /// Anyone could have caused it: it counts towards the recipient's limit.
    pub unauthenticated: bool,
    /// Not sent before this time.
    pub send_after: DateTime<Utc>,
    /// Not sent at all if this key is revoked first.
    pub about_key_id: Option<&'a str>,
}

impl<'a> Outgoing<'a> {
    /// An email to send at once.
    pub fn now(recipient: &'a Email, kind: EmailKind, now: DateTime<Utc>) -> Self {
        Self {
            recipient,
            kind,
            now,
            unauthenticated: false,
            send_after: now,
            about_key_id: None,
        }
    }
}

/// Renders, encrypts and queues an email in the caller's transaction.
pub(crate) async fn queue_email(
    cipher: &crate::crypto::Cipher,
    tx: &mut Tx,
    email: Outgoing<'_>,
    context: &impl Serialize,
) -> Result<()> {
    let Outgoing {
        recipient,
        kind,
        now,
        unauthenticated,
        send_after,
        about_key_id,
    } = email;
    let rendered = templates::render(kind, context)
        .context("rendering an email")
        .map_err(Error::Unexpected)?;
    let plain = serde_json::to_vec(&rendered)
        .context("serialising an email")
        .map_err(Error::Unexpected)?;
    let id = uuid::Uuid::now_v7().to_string();
    let ciphertext = cipher.encrypt(&plain, &outbox_aad(&id))?;
    tx.enqueue_email(&NewEmail {
        id: &id,
        recipient: recipient.as_str(),
        unauthenticated,
        kind: kind.name(),
        body_ciphertext: &ciphertext,
        created_at: millis(now),
        send_after: millis(send_after),
        about_key_id,
    })
    .await?;
    Ok(())
}
