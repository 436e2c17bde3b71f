//! `OnboardPartner`: a new partner, or a fresh link for a pending one.

use super::Context;
use super::{
    commit_and_wake, enforce_partner_limit, enforce_recipient_limit, issue_link, LinkRequest,
    Overlap, Requester,
};
use crate::clock::millis;
use crate::error::Result;
use crate::store::{Actor, Audit, AuditKind, Partner, StoreError};
use keyward_core::{
    AllowedIps, Email, ErrorCode, LinkPurpose, PartnerCode, PartnerId, PartnerStatus,
};
use std::net::IpAddr;

/// `OnboardPartner` with `KEYWARD_ONBOARDING=invite`: the caller always gets the same answer
/// (without waiting for this); a fresh onboarding link is emailed only to a pending partner an
/// operator invited, whose email matches, within the limits. Nothing is ever created.
#[tracing::instrument(skip_all)]
pub async fn onboard_invited(
    ctx: &Context,
    code: &PartnerCode,
    email: &Email,
    ip: IpAddr,
) -> Result<()> {
    let now = ctx.clock.now();
    let mut tx = ctx.store.begin().await?;
    let Some(partner) = tx.partner_by_code_for_update(code).await? else {
        return Ok(());
    };
    if !(partner.invited
        && partner.status == PartnerStatus::Pending
        && email.matches(partner.email.as_str()))
    {
        return Ok(());
    }
    if !super::within_anyones_limits(ctx, &mut tx, &partner, now).await? {
        return Ok(());
    }
    issue_link(
        ctx,
        &mut tx,
        LinkRequest {
            partner: &partner,
            purpose: LinkPurpose::Onboarding,
            requester: Requester::Anyone,
            overlap: Overlap::default(),
            ip: Some(ip),
            now,
        },
    )
    .await?;
    commit_and_wake(ctx, tx).await
}

/// `POST …/OnboardPartner`: a new partner, or a fresh link for a pending one.
#[tracing::instrument(skip_all, fields(partner_code = %code))]
pub async fn onboard(ctx: &Context, code: &PartnerCode, email: &Email, ip: IpAddr) -> Result<()> {
    let now = ctx.clock.now();
    let mut tx = ctx.store.begin().await?;
    let existing = match tx.partner_by_code_for_update(code).await? {
        // A pending partner whose onboarding links have all expired never activated: its
        // code is free again (nobody can squat a code by onboarding and walking away).
        Some(p)
            if p.status == PartnerStatus::Pending
                && !tx.has_usable_onboarding_link(&p.id, now).await? =>
        {
            tx.delete_pending_partner(&p.id).await?;
            tx.audit(&Audit {
                partner: Some(&p.id),
                ip: Some(ip),
                detail: Some("its onboarding links had expired"),
                ..Audit::new(AuditKind::PartnerReleased, Actor::Keyward, now)
            })
            .await?;
            None
        }
        other => other,
    };
    // The limits are checked before anything is written: the transaction's reads come first
    // and its writes go to the database together (`store/later.rs`).
    let partner = match existing {
        None => {
            enforce_recipient_limit(ctx, &mut tx, email, now).await?;
            let id = PartnerId::new_v7();
            match tx.insert_partner(&id, code, email, now).await {
                Ok(()) => {}
                // Another node created it between our read and our insert.
                Err(StoreError::Conflict) => return Err(ErrorCode::PartnerExists.into()),
                Err(e) => return Err(e.into()),
            }
            tx.audit(&Audit {
                partner: Some(&id),
                ip: Some(ip),
                ..Audit::new(AuditKind::PartnerCreated, Actor::Anyone, now)
            })
            .await?;
            Partner {
                id,
                code: code.clone(),
                email: email.clone(),
                status: PartnerStatus::Pending,
                allowed_ips: AllowedIps::default(),
                created_at: millis(now),
                invited: false,
            }
        }
        Some(p) if p.status == PartnerStatus::Pending && email.matches(p.email.as_str()) => {
            enforce_partner_limit(ctx, &mut tx, &p, Requester::Anyone, now).await?;
            enforce_recipient_limit(ctx, &mut tx, email, now).await?;
            p
        }
        Some(_) => return Err(ErrorCode::PartnerExists.into()),
    };
    let link = LinkPurpose::Onboarding;
    let overlap = Overlap::default();
    issue_link(
        ctx,
        &mut tx,
        LinkRequest {
            partner: &partner,
            purpose: link,
            requester: Requester::Anyone,
            overlap,
            ip: Some(ip),
            now,
        },
    )
    .await?;
    commit_and_wake(ctx, tx).await
}
