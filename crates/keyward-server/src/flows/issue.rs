//! Issuing one-time links (SPEC §3.3): each replaces the partner's unused links of its kind,
//! is stored as a hash, audited, and announced by an email queued in the same transaction.

use super::limits::Requester;
use super::outgoing::{human_time, queue_email, Outgoing};
use super::{Context, Overlap};
use crate::clock::millis;
use crate::error::Result;
use crate::mail::EmailKind;
use crate::store::{Actor, Audit, AuditKind, KeySpec, NewLink, Partner, Supersede, Tx};
use chrono::{DateTime, Utc};
use keyward_core::{LinkPurpose, LinkToken};
use rand::rngs::OsRng;
use secrecy::ExposeSecret;
use serde::Serialize;
use std::net::IpAddr;

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

/// A one-time link to issue: for whom, what for, who asked, from where, and when.
pub(crate) struct LinkRequest<'a> {
    pub partner: &'a Partner,
    pub purpose: LinkPurpose,
    pub requester: Requester<'a>,
    /// How long the old pair keeps working once a regeneration link is used (zero: it is
    /// revoked at once).
    pub overlap: Overlap,
    /// The address of the request that asked (none for an operator's command).
    pub ip: Option<IpAddr>,
    pub now: DateTime<Utc>,
}

/// A link just stored: where it points and until when it works.
pub(crate) struct IssuedLink {
    pub url: String,
    pub expires_at: DateTime<Utc>,
}

/// Replaces the partner's unused links of this purpose with a new one and queues its email,
/// in the caller's transaction. A link anyone asked for replaces only links anyone asked for.
pub(crate) async fn issue_link(ctx: &Context, tx: &mut Tx, request: LinkRequest<'_>) -> Result<()> {
    let link = create_link(ctx, tx, &request).await?;
    let LinkRequest {
        partner, purpose, ..
    } = request;
    let kind = match purpose {
        LinkPurpose::Onboarding => EmailKind::Onboarding,
        LinkPurpose::Regeneration | LinkPurpose::RestrictedKey => EmailKind::Regeneration,
    };
    let context = LinkEmailContext {
        partner_code: partner.code.as_str(),
        link_url: &link.url,
        expires_at: human_time(link.expires_at),
        requested_ip: request
            .ip
            .map_or_else(|| "the operators' console".to_owned(), |ip| ip.to_string()),
        overlap: request.overlap.describe(),
    };
    let mut email = Outgoing::now(&partner.email, kind, request.now);
    email.unauthenticated = request.requester == Requester::Anyone;
    queue_email(ctx.cipher()?, tx, email, &context).await
}

#[derive(Serialize)]
struct KeyLinkEmailContext<'a> {
    partner_code: &'a str,
    link_url: &'a str,
    expires_at: String,
    requested_ip: String,
    key_name: &'a str,
    key_scopes: String,
    mode: &'static str,
    key_expiry: String,
}

/// A `restricted_key` link (SPEC §8.1) for the pair `key`, with its email, in the caller's
/// transaction. Earlier such links stay usable: a partner may ask for several pairs at once.
pub(crate) async fn issue_key_link(
    ctx: &Context,
    tx: &mut Tx,
    request: LinkRequest<'_>,
    key: &KeySpec,
) -> Result<()> {
    let link = create_link_for(ctx, tx, &request, Some(key)).await?;
    let context = KeyLinkEmailContext {
        partner_code: request.partner.code.as_str(),
        link_url: &link.url,
        expires_at: human_time(link.expires_at),
        requested_ip: request
            .ip
            .map_or_else(|| "the operators' console".to_owned(), |ip| ip.to_string()),
        key_name: &key.name,
        key_scopes: describe_scopes(&key.scopes),
        mode: key.mode.as_str(),
        key_expiry: describe_validity(key.valid_days),
    };
    let email = Outgoing::now(
        &request.partner.email,
        EmailKind::RestrictedKey,
        request.now,
    );
    queue_email(ctx.cipher()?, tx, email, &context).await
}

/// Scopes for people: the names, or what no scope means.
pub(crate) fn describe_scopes(scopes: &keyward_core::scopes::Scopes) -> String {
    if scopes.is_empty() {
        "none (all power when the exchange has no scopes)".to_owned()
    } else {
        scopes.iter().collect::<Vec<_>>().join(", ")
    }
}

/// A restricted pair's own expiry, for people.
pub(crate) fn describe_validity(days: Option<i64>) -> String {
    match days {
        None => "only under the exchange's expiry policy, if it has one".to_owned(),
        Some(1) => "1 day after it is made".to_owned(),
        Some(days) => format!("{days} days after it is made"),
    }
}

/// Replaces the partner's unused links of this purpose with a new one, and audits it, in the
/// caller's transaction; the caller emails it.
pub(crate) async fn create_link(
    ctx: &Context,
    tx: &mut Tx,
    request: &LinkRequest<'_>,
) -> Result<IssuedLink> {
    create_link_for(ctx, tx, request, None).await
}

async fn create_link_for(
    ctx: &Context,
    tx: &mut Tx,
    request: &LinkRequest<'_>,
    key: Option<&KeySpec>,
) -> Result<IssuedLink> {
    let &LinkRequest {
        partner,
        purpose,
        requester,
        overlap,
        ip,
        now,
    } = request;
    let settings = &ctx.settings;
    let which = match requester {
        Requester::KeyHolder | Requester::Operator(_) | Requester::GitHub => Supersede::All,
        Requester::Anyone => Supersede::UnsignedOnly,
    };
    if purpose != LinkPurpose::RestrictedKey {
        tx.supersede_links(&partner.id, purpose, which, now).await?;
    }
    let token = LinkToken::generate(&mut OsRng);
    let ttl = match purpose {
        LinkPurpose::Onboarding => settings.onboarding_link_ttl,
        LinkPurpose::Regeneration | LinkPurpose::RestrictedKey => settings.regeneration_link_ttl,
    };
    let expires_at = now + ttl;
    let link_id = uuid::Uuid::now_v7().to_string();
    tx.insert_link(&NewLink {
        id: &link_id,
        partner_id: &partner.id,
        purpose,
        token_hash: &token.hash(),
        created_at: millis(now),
        expires_at: millis(expires_at),
        requested_ip: ip,
        signed: requester != Requester::Anyone,
        overlap_seconds: overlap.seconds(),
        key,
    })
    .await?;
    let actor = match requester {
        Requester::KeyHolder => Actor::Partner,
        Requester::Anyone => Actor::Anyone,
        Requester::Operator(name) => Actor::Operator(name),
        Requester::GitHub => Actor::GitHub,
    };
    tx.audit(&Audit {
        partner: Some(&partner.id),
        ip,
        detail: Some(&link_id),
        ..Audit::new(AuditKind::LinkIssued(purpose), actor, now)
    })
    .await?;
    Ok(IssuedLink {
        url: format!("{}/link/{}", settings.public_url, token.expose_secret()),
        expires_at,
    })
}
