//! `OnboardPartner`: a new partner, or a fresh link for a pending one.

use super::{enforce_partner_limit, issue_link};
use crate::clock::millis;
use crate::error::Result;
use crate::state::AppState;
use crate::store::{LinkPurpose, Partner, PartnerStatus};
use keyward_core::{Email, ErrorCode, PartnerCode};
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
    let partner = match tx.partner_by_code_for_update(&code.folded()).await? {
        None => {
            let id = uuid::Uuid::now_v7().to_string();
            match tx
                .insert_partner(&id, code.as_str(), email.as_str(), millis(now))
                .await
            {
                Ok(()) => {}
                // Another node created it between our read and our insert.
                Err(crate::store::StoreError::Conflict) => {
                    return Err(ErrorCode::PartnerExists.into())
                }
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
                code: code.as_str().to_owned(),
                email: email.as_str().to_owned(),
                status: PartnerStatus::Pending,
                allowed_ips: None,
                created_at: millis(now),
            }
        }
        Some(p) if p.status == PartnerStatus::Pending && email.matches(&p.email) => {
            enforce_partner_limit(state, &mut tx, &p, now).await?;
            p
        }
        Some(_) => return Err(ErrorCode::PartnerExists.into()),
    };
    issue_link(state, &mut tx, &partner, LinkPurpose::Onboarding, now, ip).await?;
    tx.commit().await?;
    state.outbox_wake.notify_one();
    Ok(())
}
