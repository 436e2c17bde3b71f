//! `RetireOldKeys` (SPEC §3.2): the partner ends its retiring pair's overlap early.

use super::key_cache::wait_out;
use super::Authenticated;
use super::Context;
use crate::error::{Error, Result};
use crate::store::{Actor, Audit, AuditKind};
use keyward_core::ErrorCode;
use std::net::IpAddr;

/// Revokes the partner's retiring pair, if any; returns how many were revoked (0 or 1). Only
/// the current pair may ask: a request signed with the retiring pair is refused, so a client
/// that still runs on the old keys cannot end them by mistake before the new ones are in
/// place. In force on every node when this returns.
#[tracing::instrument(skip_all, fields(partner_id = %auth.partner.id))]
pub async fn retire_old_keys(ctx: &Context, auth: &Authenticated, ip: IpAddr) -> Result<u64> {
    auth.require_current_pair()?;
    let now = ctx.clock.now();
    let mut tx = ctx.store.begin().await?;
    let partner = tx
        .partner_by_id_for_update(&auth.partner.id)
        .await?
        .ok_or(Error::from(ErrorCode::UnknownKey))?;
    let revoked = tx.revoke_retiring_keys(&partner.id, now).await?;
    if revoked > 0 {
        let detail = format!("{revoked} retiring key pair(s) revoked by the partner");
        tx.audit(&Audit {
            partner: Some(&partner.id),
            ip: Some(ip),
            detail: Some(&detail),
            ..Audit::new(AuditKind::RetiringKeysRevoked, Actor::Partner, now)
        })
        .await?;
    }
    tx.commit().await?;
    if revoked > 0 {
        wait_out(ctx.settings.key_cache).await;
    }
    Ok(revoked)
}
