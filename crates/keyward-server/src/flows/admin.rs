//! What operators do (`keyward partner …`, `keyward audit`): find partners, look at one, act
//! in an emergency, invite. Each change takes the flows' [`Context`] like every other flow, and
//! is one transaction with its audit event naming the operator and the reason; a change that
//! must hold on every node returns only once it does, after waiting out
//! `KEYWARD_KEY_CACHE_MS` (SPEC §6). The queries (`show`, `list`, `audit`) read the store
//! alone: they need no master key.

use super::key_cache::wait_out;
use super::{commit_and_wake, issue_link, Context, LinkRequest, Overlap, Requester};
use crate::store::{
    Actor, Audit, AuditEvent, AuditFilter, AuditKind, AuditRecord, KeyInfo, LinkInfo, Partner,
    PartnerFilter, PartnerSummary, Store, StoreError, Tx,
};
use chrono::{DateTime, Utc};
use keyward_core::{AllowedIps, Email, LinkPurpose, PartnerCode, PartnerId, PartnerStatus};

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("no partner has the code {0}")]
    NoSuchPartner(PartnerCode),
    #[error("{0} has not redeemed its onboarding link yet; it becomes active when it does")]
    NotYetActive(PartnerCode),
    #[error("{0} is not pending (it has keys): suspend it, or revoke its keys, instead")]
    NotPending(PartnerCode),
    #[error("the code {0} is taken: `keyward partner show {0}`")]
    CodeTaken(PartnerCode),
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

/// Who runs a command, and why: both go into the audit log.
#[derive(Debug, Clone, Copy)]
pub struct Operator<'a> {
    pub name: &'a str,
    pub reason: Option<&'a str>,
}

impl Operator<'_> {
    /// The audit detail: what was done, and the reason if one was given.
    fn detail(&self, what: &str) -> Option<String> {
        match self.reason {
            Some(reason) if what.is_empty() => Some(format!("reason: {reason}")),
            Some(reason) => Some(format!("{what}; reason: {reason}")),
            None => (!what.is_empty()).then(|| what.to_owned()),
        }
    }

    /// Records what the operator did to the partner, with the reason, in `tx`.
    async fn audit(
        &self,
        tx: &mut Tx,
        partner_id: &PartnerId,
        kind: AuditKind,
        what: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let detail = self.detail(what);
        tx.audit(&Audit {
            partner: Some(partner_id),
            detail: detail.as_deref(),
            ..Audit::new(kind, Actor::Operator(self.name), now)
        })
        .await?;
        Ok(())
    }
}

/// A partner with its keys, links and latest audit events (newest first).
#[derive(Debug)]
pub struct PartnerDetails {
    pub partner: Partner,
    pub keys: Vec<KeyInfo>,
    pub links: Vec<LinkInfo>,
    pub events: Vec<AuditEvent>,
}

pub async fn show(store: &Store, code: &PartnerCode) -> Result<PartnerDetails> {
    let partner = store
        .partner_by_code(code)
        .await?
        .ok_or_else(|| AdminError::NoSuchPartner(code.clone()))?;
    Ok(PartnerDetails {
        keys: store.partner_keys(&partner.id).await?,
        links: store.partner_links(&partner.id).await?,
        events: store.audit_events(&partner.id, 20).await?,
        partner,
    })
}

/// Partners matching the filter, newest first, with their current key.
pub async fn list(store: &Store, filter: &PartnerFilter) -> Result<Vec<PartnerSummary>> {
    Ok(store.list_partners(filter).await?)
}

/// The audit log, oldest first. A `--partner` code is looked up to its id (the log outlives
/// released partners' codes).
pub async fn audit(
    store: &Store,
    partner: Option<&PartnerCode>,
    mut filter: AuditFilter,
) -> Result<Vec<AuditRecord>> {
    if let Some(code) = partner {
        let partner = store
            .partner_by_code(code)
            .await?
            .ok_or_else(|| AdminError::NoSuchPartner(code.clone()))?;
        filter.partner_id = Some(partner.id);
    }
    Ok(store.audit_log(&filter).await?)
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
pub async fn suspend(ctx: &Context, code: &PartnerCode, operator: Operator<'_>) -> Result<Partner> {
    let partner = set_status(ctx, code, PartnerStatus::Suspended, operator).await?;
    wait_out(ctx.settings.key_cache).await;
    Ok(partner)
}

/// Lifts a suspension. A pending partner stays pending: it has no keys yet.
pub async fn activate(
    ctx: &Context,
    code: &PartnerCode,
    operator: Operator<'_>,
) -> Result<Partner> {
    let partner = set_status(ctx, code, PartnerStatus::Active, operator).await?;
    wait_out(ctx.settings.key_cache).await;
    Ok(partner)
}

async fn set_status(
    ctx: &Context,
    code: &PartnerCode,
    status: PartnerStatus,
    operator: Operator<'_>,
) -> Result<Partner> {
    let now = ctx.clock.now();
    let (mut tx, mut partner) = locked_partner(&ctx.store, code).await?;
    if status == PartnerStatus::Active && partner.status == PartnerStatus::Pending {
        return Err(AdminError::NotYetActive(partner.code));
    }
    let event = match status {
        PartnerStatus::Suspended => AuditKind::PartnerSuspended,
        _ => AuditKind::PartnerActivated,
    };
    tx.set_partner_status(&partner.id, status, now).await?;
    operator.audit(&mut tx, &partner.id, event, "", now).await?;
    tx.commit().await?;
    partner.status = status;
    Ok(partner)
}

/// Releases a pending partner that never activated: it and its links are deleted, and its
/// code is free for anyone to onboard again.
pub async fn release(ctx: &Context, code: &PartnerCode, operator: Operator<'_>) -> Result<Partner> {
    let now = ctx.clock.now();
    let (mut tx, partner) = locked_partner(&ctx.store, code).await?;
    if !tx.delete_pending_partner(&partner.id).await? {
        return Err(AdminError::NotPending(partner.code));
    }
    operator
        .audit(
            &mut tx,
            &partner.id,
            AuditKind::PartnerReleased,
            partner.code.as_str(),
            now,
        )
        .await?;
    tx.commit().await?;
    Ok(partner)
}

/// Requests are accepted only from these addresses or blocks (empty: from any address). The
/// same change as the partner's `SetAllowedIps`: audited, and the partner is emailed.
pub async fn set_allowed_ips(
    ctx: &Context,
    code: &PartnerCode,
    allowed_ips: AllowedIps,
    operator: Operator<'_>,
) -> Result<Partner> {
    if allowed_ips.len() > AllowedIps::MAX_ENTRIES {
        return Err(AdminError::TooManyEntries);
    }
    let now = ctx.clock.now();
    let (mut tx, mut partner) = locked_partner(&ctx.store, code).await?;
    super::change_allowed_ips(
        ctx,
        &mut tx,
        &partner,
        &allowed_ips,
        super::Changer::Operator(operator.name),
        now,
    )
    .await?;
    commit_and_wake(ctx, tx).await?;
    wait_out(ctx.settings.key_cache).await;
    partner.allowed_ips = allowed_ips;
    Ok(partner)
}

/// Emails the partner a link an operator asked for (no overlap, no client address).
async fn operator_link(
    ctx: &Context,
    tx: &mut Tx,
    partner: &Partner,
    purpose: LinkPurpose,
    operator: Operator<'_>,
    now: DateTime<Utc>,
) -> Result<()> {
    let requester = Requester::Operator(operator.name);
    issue_link(
        ctx,
        tx,
        LinkRequest {
            partner,
            purpose,
            requester,
            overlap: Overlap::default(),
            ip: None,
            now,
        },
    )
    .await?;
    Ok(())
}

/// What an emergency revocation did.
#[derive(Debug)]
pub struct Revoked {
    pub partner: Partner,
    pub keys: u64,
    /// Whether a regeneration link was emailed (`--notify`, active partners only).
    pub notified: bool,
}

/// Revokes every current and retiring key pair of the partner now, in force on every node
/// when this returns; with `notify`, an active partner is emailed a regeneration link to get
/// new keys (its only way back in).
pub async fn revoke_keys(
    ctx: &Context,
    code: &PartnerCode,
    operator: Operator<'_>,
    notify: bool,
) -> Result<Revoked> {
    let now = ctx.clock.now();
    let (mut tx, partner) = locked_partner(&ctx.store, code).await?;
    let keys = tx.revoke_keys(&partner.id, now).await?;
    let what = format!("{keys} key pair(s) revoked");
    operator
        .audit(&mut tx, &partner.id, AuditKind::KeysRevoked, &what, now)
        .await?;
    let notified = notify && partner.status == PartnerStatus::Active;
    if notified {
        operator_link(
            ctx,
            &mut tx,
            &partner,
            LinkPurpose::Regeneration,
            operator,
            now,
        )
        .await?;
    }
    commit_and_wake(ctx, tx).await?;
    wait_out(ctx.settings.key_cache).await;
    Ok(Revoked {
        partner,
        keys,
        notified,
    })
}

/// Emails a pending partner a fresh onboarding link (the older ones stop working).
pub async fn resend_link(
    ctx: &Context,
    code: &PartnerCode,
    operator: Operator<'_>,
) -> Result<Partner> {
    let now = ctx.clock.now();
    let (mut tx, partner) = locked_partner(&ctx.store, code).await?;
    if partner.status != PartnerStatus::Pending {
        return Err(AdminError::NotPending(partner.code));
    }
    operator_link(
        ctx,
        &mut tx,
        &partner,
        LinkPurpose::Onboarding,
        operator,
        now,
    )
    .await?;
    commit_and_wake(ctx, tx).await?;
    Ok(partner)
}

/// Creates a pending partner and emails its onboarding link: with `KEYWARD_ONBOARDING=invite`
/// the only way a partner comes to exist.
pub async fn invite(
    ctx: &Context,
    code: &PartnerCode,
    email: &Email,
    operator: Operator<'_>,
) -> Result<Partner> {
    let now = ctx.clock.now();
    let mut tx = ctx.store.begin().await?;
    if tx.partner_by_code_for_update(code).await?.is_some() {
        return Err(AdminError::CodeTaken(code.clone()));
    }
    let id = PartnerId::new_v7();
    match tx.insert_partner(&id, code, email, now).await {
        Err(StoreError::Conflict) => return Err(AdminError::CodeTaken(code.clone())),
        other => other?,
    }
    tx.mark_invited(&id).await?;
    operator
        .audit(&mut tx, &id, AuditKind::PartnerInvited, email.as_str(), now)
        .await?;
    let partner = tx
        .partner_by_id_for_update(&id)
        .await?
        .ok_or(StoreError::Corrupt("the invited partner vanished".into()))?;
    operator_link(
        ctx,
        &mut tx,
        &partner,
        LinkPurpose::Onboarding,
        operator,
        now,
    )
    .await?;
    commit_and_wake(ctx, tx).await?;
    Ok(partner)
}
