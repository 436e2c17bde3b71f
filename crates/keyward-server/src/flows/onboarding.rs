//! `OnboardPartner`: a new partner, or a fresh link for a pending one.

use super::{
    commit_and_wake, enforce_partner_limit, enforce_recipient_limit, issue_link, Overlap, Requester,
};
use crate::clock::millis;
use crate::error::Result;
use crate::state::AppState;
use crate::store::{Partner, StoreError};
use keyward_core::{
    AllowedIps, Email, ErrorCode, LinkPurpose, PartnerCode, PartnerId, PartnerStatus,
};
use std::net::IpAddr;

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
    let existing = match tx.partner_by_code_for_update(code).await? {
        // A pending partner whose onboarding links have all expired never activated: its
        // code is free again (nobody can squat a code by onboarding and walking away).
        Some(p)
            if p.status == PartnerStatus::Pending
                && !tx.has_usable_onboarding_link(&p.id, millis(now)).await? =>
        {
            tx.delete_pending_partner(&p.id).await?;
            tx.audit(
                Some(&p.id),
                "partner_released",
                Some(&ip.to_string()),
                Some("its onboarding links had expired"),
                millis(now),
            )
            .await?;
            None
        }
        other => other,
    };
    let partner = match existing {
        None => {
            let id = PartnerId::new_v7();
            match tx.insert_partner(&id, code, email, millis(now)).await {
                Ok(()) => {}
                // Another node created it between our read and our insert.
                Err(StoreError::Conflict) => return Err(ErrorCode::PartnerExists.into()),
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
                code: code.clone(),
                email: email.clone(),
                status: PartnerStatus::Pending,
                allowed_ips: AllowedIps::default(),
                created_at: millis(now),
            }
        }
        Some(p) if p.status == PartnerStatus::Pending && email.matches(p.email.as_str()) => {
            enforce_partner_limit(state, &mut tx, &p, Requester::Anyone, now).await?;
            p
        }
        Some(_) => return Err(ErrorCode::PartnerExists.into()),
    };
    enforce_recipient_limit(state, &mut tx, email, now).await?;
    let link = LinkPurpose::Onboarding;
    let overlap = Overlap::default();
    issue_link(
        state,
        &mut tx,
        &partner,
        link,
        Requester::Anyone,
        overlap,
        now,
        ip,
    )
    .await?;
    commit_and_wake(state, tx).await
}
