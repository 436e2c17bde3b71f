//! A partner's IP allow-list (SPEC §3.4a): set by the partner with a signed request, or by an
//! operator; one change, audited and announced by email, the same for both.

use super::key_cache::wait_out;
use super::Context;
use super::{commit_and_wake, queue_email, Authenticated, Outgoing};
use crate::clock::millis;
use crate::error::{Error, Result};
use crate::mail::EmailKind;
use crate::store::{Actor, Audit, AuditKind, Partner, Tx};
use chrono::{DateTime, Utc};
use keyward_core::{AllowedIps, Email, ErrorCode};
use serde::Serialize;
use std::net::IpAddr;

/// Who changed an allow-list, for the audit log and the notice email.
#[derive(Debug, Clone, Copy)]
pub enum Changer<'a> {
    /// The partner, with a signed request from this address.
    Partner(IpAddr),
    /// An operator, by name (`keyward partner allow-ips`).
    Operator(&'a str),
}

#[derive(Serialize)]
struct NoticeContext<'a> {
    partner_code: &'a str,
    allowed_ips: Vec<String>,
    changed_by: String,
    ip: String,
}

/// Notices of allow-list changes to one partner go out at most this often: the first at once,
/// the changes made within this time after it in one later notice that shows the list then in
/// force (a flood of changes is not a flood of emails).
pub const NOTICE_SPACING_MS: i64 = 5 * 60_000;

/// Sets the partner's allow-list in the caller's transaction, with its audit event and notice
/// email; returns `false`, changing and sending nothing, when the list is already in force. The
/// caller commits, then waits out the key cache before acknowledging (SPEC §6).
pub(crate) async fn change_allowed_ips(
    ctx: &Context,
    tx: &mut Tx,
    partner: &Partner,
    allowed_ips: &AllowedIps,
    changer: Changer<'_>,
    now: DateTime<Utc>,
) -> Result<bool> {
    if allowed_ips.len() > AllowedIps::MAX_ENTRIES {
        return Err(too_many());
    }
    if partner.allowed_ips == *allowed_ips {
        return Ok(false);
    }
    tx.set_allowed_ips(&partner.id, allowed_ips, now).await?;
    if partner.allowed_ips.is_empty() != allowed_ips.is_empty() {
        // The shorter maximum age for partners without an allow-list is lifted or applies
        // again: the reminders follow (SPEC §8.4).
        super::reminders::reschedule_partner(ctx, tx, partner, !allowed_ips.is_empty(), now)
            .await?;
    }
    let (changed_by, ip) = match changer {
        Changer::Partner(ip) => ("the partner's keys".to_owned(), Some(ip.to_string())),
        Changer::Operator(name) => (format!("operator {name}"), None),
    };
    let shown = allowed_ips.to_stored().unwrap_or_else(|| "any".to_owned());
    let detail = format!("{shown}; by {changed_by}");
    let actor = match changer {
        Changer::Partner(_) => Actor::Partner,
        Changer::Operator(name) => Actor::Operator(name),
    };
    let address = match changer {
        Changer::Partner(ip) => Some(ip),
        Changer::Operator(_) => None,
    };
    tx.audit(&Audit {
        partner: Some(&partner.id),
        ip: address,
        detail: Some(&detail),
        ..Audit::new(AuditKind::AllowedIpsChanged, actor, now)
    })
    .await?;
    let context = NoticeContext {
        partner_code: partner.code.as_str(),
        allowed_ips: allowed_ips.to_strings(),
        changed_by,
        ip: ip.unwrap_or_else(|| "the operators' console".to_owned()),
    };
    let mut email = Outgoing::now(&partner.email, EmailKind::AllowedIpsChanged, now);
    email.send_after = notice_time(tx, &partner.email, now).await?;
    queue_email(ctx.cipher()?, tx, email, &context).await?;
    Ok(true)
}

/// When the notice of a change made at `now` goes out: at once if none went out in the last
/// [`NOTICE_SPACING_MS`], else that long after the last one. A notice still waiting for its
/// time is replaced by the new one (which shows the newer list) at the same time.
async fn notice_time(tx: &mut Tx, recipient: &Email, now: DateTime<Utc>) -> Result<DateTime<Utc>> {
    let now_ms = millis(now);
    let kind = EmailKind::AllowedIpsChanged.name();
    let last = tx
        .last_email_of_kind(
            &recipient.folded(),
            kind,
            now - chrono::TimeDelta::milliseconds(NOTICE_SPACING_MS),
        )
        .await?;
    let at = match last {
        None => now_ms,
        Some((id, due, false)) if due > now_ms => {
            tx.drop_scheduled_email(&id, now).await?;
            due
        }
        Some((_, due, _)) => due + NOTICE_SPACING_MS,
    };
    Ok(crate::clock::from_millis(at))
}

fn too_many() -> Error {
    Error::field(
        "allowed_ips",
        "at most 20 entries: use CIDR blocks (such as 198.51.100.0/24) to cover more addresses",
    )
}

/// `SetAllowedIps`: the authenticated partner replaces its allow-list. A list that would
/// refuse the very address making the request is refused (422 `would_lock_out`) unless
/// `confirm_lock_out`. In force on every node when this returns.
#[tracing::instrument(skip_all, fields(partner_id = %auth.partner.id))]
pub async fn set_allowed_ips(
    ctx: &Context,
    auth: &Authenticated,
    allowed_ips: &AllowedIps,
    confirm_lock_out: bool,
    ip: IpAddr,
) -> Result<()> {
    auth.require_current_pair()?;
    if !allowed_ips.allows(ip) && !confirm_lock_out {
        return Err(Error::Code(
            ErrorCode::WouldLockOut,
            Some(format!(
                "This allow-list does not include {ip}, the address this request comes from, so it would lock you out. Add {ip} (or its block), or send \"confirm_lock_out\": true if you mean it."
            )),
        ));
    }
    let now = ctx.clock.now();
    let mut tx = ctx.store.begin().await?;
    let partner = tx
        .partner_by_id_for_update(&auth.partner.id)
        .await?
        .ok_or(Error::from(ErrorCode::UnknownKey))?;
    let changed = change_allowed_ips(
        ctx,
        &mut tx,
        &partner,
        allowed_ips,
        Changer::Partner(ip),
        now,
    )
    .await?;
    if !changed {
        return Ok(());
    }
    commit_and_wake(ctx, tx).await?;
    wait_out(ctx.settings.key_cache).await;
    tracing::info!(
        entries = allowed_ips.len(),
        "allow-list changed by the partner"
    );
    Ok(())
}
