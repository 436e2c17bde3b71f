//! `OnboardPartner`: a new partner, or a fresh link for a pending one.

use super::{commit_and_wake, enforce_partner_limit, issue_link};
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
    let partner = match tx.partner_by_code_for_update(code).await? {
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
            enforce_partner_limit(state, &mut tx, &p, now).await?;
            p
        }
        Some(_) => return Err(ErrorCode::PartnerExists.into()),
    };
    issue_link(state, &mut tx, &partner, LinkPurpose::Onboarding, now, ip).await?;
    commit_and_wake(state, tx).await
}
