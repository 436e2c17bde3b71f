//! Regeneration requests: signed (SPEC §3.2) and lost keys.

use super::Context;
use super::{
    commit_and_wake, enforce_partner_limit, first_use, issue_link, within_anyones_limits,
    Authenticated, LinkRequest, Overlap, ReplayPurpose, Requester,
};
use crate::error::{Error, Result};
use keyward_core::signature::SignedBody;
use keyward_core::{Email, ErrorCode, LinkPurpose, PartnerCode, PartnerStatus};
use std::net::IpAddr;

/// `GenKeysForPartner` with Authorization: after the checks of SPEC §3.2, email a
/// regeneration link. The same signed request (however encoded) within the replay window is
/// not acted on twice. The current keys keep working until the link is used, and for
/// `overlap` after that.
#[tracing::instrument(skip_all, fields(partner_id = %auth.partner.id))]
pub async fn request_regeneration(
    ctx: &Context,
    auth: &Authenticated,
    code: Option<&PartnerCode>,
    email: Option<&Email>,
    overlap: Overlap,
    body: &SignedBody,
    ip: IpAddr,
) -> Result<()> {
    auth.require_current_pair()?;
    // A code or an address that is not even well-formed cannot be the partner's: a mismatch.
    if !code.is_some_and(|code| auth.partner.code.matches(code.as_str())) {
        return Err(ErrorCode::PartnerMismatch.into());
    }
    if !email.is_some_and(|email| auth.partner.email.matches(email.as_str())) {
        return Err(ErrorCode::EmailMismatch.into());
    }
    let now = ctx.clock.now();
    let mut tx = ctx.store.begin().await?;
    if !first_use(
        ctx,
        &mut tx,
        ReplayPurpose::Regeneration,
        &auth.key_id,
        body,
    )
    .await?
    {
        return Ok(());
    }
    let partner = tx
        .partner_by_id_for_update(&auth.partner.id)
        .await?
        .ok_or(Error::from(ErrorCode::UnknownKey))?;
    // The key holder's budget and link: nothing an attacker without the keys does touches them.
    enforce_partner_limit(ctx, &mut tx, &partner, Requester::KeyHolder, now).await?;
    let link = LinkPurpose::Regeneration;
    issue_link(
        ctx,
        &mut tx,
        LinkRequest {
            partner: &partner,
            purpose: link,
            requester: Requester::KeyHolder,
            overlap,
            ip: Some(ip),
            now,
        },
    )
    .await?;
    commit_and_wake(ctx, tx).await
}

/// `GenKeysForPartner` without Authorization (lost keys). The caller always gets the same
/// answer; a link is emailed only when code and email match a partner that may have one:
/// an active partner gets a regeneration link, a pending one a fresh onboarding link, a
/// suspended one nothing. Over the per-partner limit, nothing is sent either.
#[tracing::instrument(skip_all)]
pub async fn request_regeneration_without_keys(
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
    if !email.matches(partner.email.as_str()) {
        return Ok(());
    }
    let purpose = match partner.status {
        PartnerStatus::Active => LinkPurpose::Regeneration,
        PartnerStatus::Pending => LinkPurpose::Onboarding,
        PartnerStatus::Suspended => return Ok(()),
    };
    if !within_anyones_limits(ctx, &mut tx, &partner, now).await? {
        return Ok(());
    }
    issue_link(
        ctx,
        &mut tx,
        LinkRequest {
            partner: &partner,
            purpose,
            requester: Requester::Anyone,
            // The lost-keys path never keeps the old pair: it may be what was lost.
            overlap: Overlap::default(),
            ip: Some(ip),
            now,
        },
    )
    .await?;
    commit_and_wake(ctx, tx).await
}
