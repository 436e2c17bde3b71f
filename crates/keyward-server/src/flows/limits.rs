//! The limits that stop email bombing (SPEC §6), counted in the database so that they hold
//! across nodes: links per partner per hour, and emails anyone could cause to one address.

use super::Context;
use crate::clock::millis;
use crate::error::{Error, Result};
use crate::metrics::Limit;
use crate::store::{Partner, Tx};
use chrono::{DateTime, Utc};
use keyward_core::{Email, PartnerStatus};

pub(crate) const HOUR_MS: i64 = 3_600_000;

/// Who asked for a link: the key holder (a signed request) or anyone who knows a code and an
/// email (onboarding, lost keys). The two have separate budgets, and anyone's request never
/// cancels the key holder's link, so an attacker without the keys can never stop the key
/// holder from rotating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Requester<'a> {
    KeyHolder,
    Anyone,
    /// An operator command (resend, invite, revoke with notice): trusted, like the key holder.
    Operator(&'a str),
    /// GitHub's secret scanning, reporting a leaked key (SPEC §9.2): its request is signed.
    GitHub,
}

/// At most `partner_links_per_hour` links a partner per hour (stops email bombing; counted in
/// the database, so the limit holds across nodes). Of an active partner's budget, requests
/// without its keys may use only half: whatever an attacker who knows the code and the email
/// does, the key holder keeps the other half to rotate with.
pub(crate) async fn enforce_partner_limit(
    ctx: &Context,
    tx: &mut Tx,
    partner: &Partner,
    requester: Requester<'_>,
    now: DateTime<Utc>,
) -> Result<()> {
    let limit = i64::from(ctx.settings.partner_links_per_hour);
    let since = now - chrono::TimeDelta::milliseconds(HOUR_MS);
    let total = tx.links_issued_since(&partner.id, None, since).await?;
    if total >= limit {
        let oldest = tx.oldest_link_since(&partner.id, None, since).await?;
        ctx.metrics.rate_limited(Limit::Partner);
        return Err(rate_limited(oldest, now));
    }
    if requester == Requester::Anyone && partner.status == PartnerStatus::Active {
        let unsigned = tx
            .links_issued_since(&partner.id, Some(false), since)
            .await?;
        if unsigned >= limit / 2 {
            let oldest = tx
                .oldest_link_since(&partner.id, Some(false), since)
                .await?;
            ctx.metrics.rate_limited(Limit::Partner);
            return Err(rate_limited(oldest, now));
        }
    }
    Ok(())
}

/// At most `recipient_emails_per_hour` emails that anyone could cause to one address, whatever
/// the partner code (stops bombing a third party's mailbox with fresh codes). Counted in the
/// database under a lock on the address, so it holds across nodes.
pub(crate) async fn enforce_recipient_limit(
    ctx: &Context,
    tx: &mut Tx,
    recipient: &Email,
    now: DateTime<Utc>,
) -> Result<()> {
    let folded = recipient.folded();
    tx.lock_recipient(&folded).await?;
    let (sent, oldest) = tx
        .unauthenticated_emails_since(&folded, now - chrono::TimeDelta::milliseconds(HOUR_MS))
        .await?;
    if sent < i64::from(ctx.settings.recipient_emails_per_hour) {
        return Ok(());
    }
    ctx.metrics.rate_limited(Limit::Recipient);
    Err(rate_limited(oldest, now))
}

/// Whether anyone's request (no keys: lost keys, invite-only onboarding) may have a link
/// emailed to `partner`: within the partner's and the address's limits. Over a limit these
/// paths answer as always and send nothing (`false`); a database failure is an error.
pub(crate) async fn within_anyones_limits(
    ctx: &Context,
    tx: &mut Tx,
    partner: &Partner,
    now: DateTime<Utc>,
) -> Result<bool> {
    let limits = async {
        enforce_partner_limit(ctx, tx, partner, Requester::Anyone, now).await?;
        enforce_recipient_limit(ctx, tx, &partner.email, now).await
    };
    match limits.await {
        Ok(()) => Ok(true),
        Err(Error::RateLimited { .. }) => {
            tracing::info!(partner_id = %partner.id, "a request without keys over the partner's or the address's limit: nothing sent");
            Ok(false)
        }
        Err(other) => Err(other),
    }
}

/// 429, with the time until the oldest of the counted events leaves the hour.
fn rate_limited(oldest: Option<i64>, now: DateTime<Utc>) -> Error {
    let oldest = oldest.unwrap_or(millis(now));
    let retry_after_ms = (oldest + HOUR_MS - millis(now)).max(1000);
    Error::RateLimited {
        retry_after_secs: u64::try_from((retry_after_ms + 999) / 1000).unwrap_or(3600),
    }
}
