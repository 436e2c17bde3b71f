//! Emails: rendered, encrypted and queued in the transaction of the change they announce
//! (the transactional outbox), then the outbox worker is woken once the change commits.

use super::Context;
use crate::clock::millis;
use crate::crypto::{outbox_aad, Cipher};
use crate::error::{Error, Result};
use crate::mail::{templates, EmailKind};
use crate::store::{NewEmail, Tx};
use anyhow::Context as _;
use chrono::{DateTime, Utc};
use keyward_core::Email;
use serde::Serialize;

/// A time as emails and pages write it for people: `2026-12-04 16:37 UTC`.
pub(crate) fn human_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// Commits a transaction that queued an email, then wakes this node's outbox worker so the
/// email goes out at once (other nodes find it when they next poll).
pub(crate) async fn commit_and_wake(ctx: &Context, tx: Tx) -> Result<()> {
    let written = tx.commit_counted().await?;
    ctx.metrics.emails_queued(written.emails);
    for purpose in written.links {
        ctx.metrics.link_issued(purpose);
    }
    ctx.outbox_wake.notify_one();
    Ok(())
}

/// An email to queue, and how.
pub(crate) struct Outgoing<'a> {
    pub recipient: &'a Email,
    pub kind: EmailKind,
    pub now: DateTime<Utc>,
    /// Anyone could have caused it: it counts towards the recipient's limit.
    pub unauthenticated: bool,
    /// Not sent before this time.
    pub send_after: DateTime<Utc>,
    /// Not sent at all if this key is revoked first.
    pub about_key_id: Option<&'a str>,
}

impl<'a> Outgoing<'a> {
    /// An email to send at once.
    pub fn now(recipient: &'a Email, kind: EmailKind, now: DateTime<Utc>) -> Self {
        Self {
            recipient,
            kind,
            now,
            unauthenticated: false,
            send_after: now,
            about_key_id: None,
        }
    }
}

/// Renders, encrypts and queues an email in the caller's transaction.
pub(crate) async fn queue_email(
    cipher: &Cipher,
    tx: &mut Tx,
    email: Outgoing<'_>,
    context: &impl Serialize,
) -> Result<()> {
    let Outgoing {
        recipient,
        kind,
        now,
        unauthenticated,
        send_after,
        about_key_id,
    } = email;
    let rendered = templates::render(kind, context)
        .context("rendering an email")
        .map_err(Error::Unexpected)?;
    let plain = serde_json::to_vec(&rendered)
        .context("serialising an email")
        .map_err(Error::Unexpected)?;
    let id = uuid::Uuid::now_v7().to_string();
    let ciphertext = cipher.encrypt(&plain, &outbox_aad(&id))?;
    tx.enqueue_email(&NewEmail {
        id: &id,
        recipient: recipient.as_str(),
        unauthenticated,
        kind: kind.name(),
        body_ciphertext: &ciphertext,
        created_at: millis(now),
        send_after: millis(send_after),
        about_key_id,
    })
    .await?;
    Ok(())
}
