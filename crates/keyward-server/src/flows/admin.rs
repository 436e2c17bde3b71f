//! What operators do to one partner (`keyward partner …`): look, suspend, activate, set the
//! allow-list. Each change is one transaction with its audit event, and returns only once
//! every node sees it: after waiting out `KEYWARD_KEY_CACHE_MS` (`bound`, SPEC §6).

use super::key_cache::wait_out;
use crate::crypto::Cipher;
use crate::store::{AuditEvent, Partner, Store, StoreError, Tx};
use chrono::{DateTime, Utc};
use keyward_core::{AllowedIps, PartnerCode, PartnerStatus};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("no partner has the code {0}")]
    NoSuchPartner(PartnerCode),
    #[error("{0} has not redeemed its onboarding link yet; it becomes active when it does")]
    NotYetActive(PartnerCode),
    #[error("{0} is not pending (it has keys): suspend it instead")]
    NotPending(PartnerCode),
    #[error(
        "an allow-list has at most {} entries: use CIDR blocks to cover more addresses",
        AllowedIps::MAX_ENTRIES
    )]
    TooManyEntries,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Failed(#[from] crate::error::Error),
}

pub type Result<T, E = AdminError> = std::result::Result<T, E>;

/// The partner and its latest audit events, newest first.
pub async fn show(store: &Store, code: &PartnerCode) -> Result<(Partner, Vec<AuditEvent>)> {
    let partner = store
        .partner_by_code(code)
        .await?
        .ok_or_else(|| AdminError::NoSuchPartner(code.clone()))?;
    let events = store.audit_events(&partner.id, 20).await?;
    Ok((partner, events))
}

/// A write transaction holding the partner with this code.
async fn locked_partner(store: &Store, code: &PartnerCode) -> Result<(Tx, Partner)> {
    let mut tx = store.begin().await?;
    let partner = tx
        .partner_by_code_for_update(code)
        .await?
        .ok_or_else(|| AdminError::NoSuchPartner(code.clone()))?;
    Ok((tx, partner))
}

/// Every request of the partner is refused (403 `partner_suspended`) until it is activated.
pub async fn suspend(
    store: &Store,
    code: &PartnerCode,
    now: i64,
    bound: Duration,
) -> Result<Partner> {
    let partner = set_status(
        store,
        code,
        PartnerStatus::Suspended,
        "partner_suspended",
        now,
    )
    .await?;
    wait_out(bound).await;
    Ok(partner)
}

/// Lifts a suspension. A pending partner stays pending: it has no keys yet.
pub async fn activate(
    store: &Store,
    code: &PartnerCode,
    now: i64,
    bound: Duration,
) -> Result<Partner> {
    let partner = set_status(store, code, PartnerStatus::Active, "partner_activated", now).await?;
    wait_out(bound).await;
    Ok(partner)
}

async fn set_status(
    store: &Store,
    code: &PartnerCode,
    status: PartnerStatus,
    event: &str,
    now: i64,
) -> Result<Partner> {
    let (mut tx, mut partner) = locked_partner(store, code).await?;
    if status == PartnerStatus::Active && partner.status == PartnerStatus::Pending {
        return Err(AdminError::NotYetActive(partner.code));
    }
    tx.set_partner_status(&partner.id, status, now).await?;
    tx.audit(Some(&partner.id), event, None, Some("by operator"), now)
        .await?;
    tx.commit().await?;
    partner.status = status;
    Ok(partner)
}

/// Releases a pending partner that never activated: it and its links are deleted, and its
/// code is free for anyone to onboard again.
pub async fn release(store: &Store, code: &PartnerCode, now: i64) -> Result<Partner> {
    let (mut tx, partner) = locked_partner(store, code).await?;
    if !tx.delete_pending_partner(&partner.id).await? {
        return Err(AdminError::NotPending(partner.code));
    }
    tx.audit(
        Some(&partner.id),
        "partner_released",
        None,
        Some("by operator"),
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(partner)
}

/// Requests are accepted only from these addresses or blocks (empty: from any address). The
/// same change as the partner's `SetAllowedIps`: audited, and the partner is emailed.
pub async fn set_allowed_ips(
    store: &Store,
    cipher: &Cipher,
    code: &PartnerCode,
    allowed_ips: AllowedIps,
    operator: &str,
    now: DateTime<Utc>,
    bound: Duration,
) -> Result<Partner> {
    if allowed_ips.len() > AllowedIps::MAX_ENTRIES {
        return Err(AdminError::TooManyEntries);
    }
    let (mut tx, mut partner) = locked_partner(store, code).await?;
    super::change_allowed_ips(
        cipher,
        &mut tx,
        &partner,
        &allowed_ips,
        super::Changer::Operator(operator),
        now,
    )
    .await?;
    tx.commit().await?;
    wait_out(bound).await;
    partner.allowed_ips = allowed_ips;
    Ok(partner)
}
