//! The outbox's queries. The sender that uses them is `mail/outbox.rs`.

use super::records::{
    DeadEmail, FailedAttempt, OutboxBacklog, OutboxStats, QueuedEmail, QUEUED_EMAIL_COLUMNS,
};
use super::{Backend, Result, Store};
use crate::clock::ClaimTime;
use sqlx::Row;

/// How long a claim on emails holds without being renewed. Its sender renews it every third of
/// that while it sends ([`Claim::renew`]); a claim whose lease ran out was left by a sender
/// that died (or stalled that long), and any sender may take its emails over.
pub const OUTBOX_LEASE_MS: i64 = 30_000;

/// Emails claimed for sending, held until each is recorded as sent or failed (one
/// [`Claim::finish`]).
///
/// A claim is a lease on the rows, on both backends: `locked_by` says which claim holds an
/// email and `locked_until` until when. No transaction stays open while SMTP talks (on SQLite
/// it would stall every request). A claim is taken over only once its lease has run out,
/// never because another process started: a restart that overlaps the old process, or a
/// second node on one SQLite file, does not send what the other is sending.
pub struct ClaimedBatch {
    pub emails: Vec<QueuedEmail>,
    pub claim: Claim,
}

/// The hold on a batch's emails: its holder's id, renewed while sending, released by
/// [`Claim::finish`]. If dropped, the lease runs out and another sender takes the emails.
pub struct Claim {
    holder: String,
}

/// What became of one claimed email.
#[derive(Debug)]
pub enum Delivery<'a> {
    Sent { at: i64 },
    Failed(FailedAttempt<'a>),
}

impl Store {
    /// Claims up to `limit` emails due at `at.due`, oldest due first, for a new holder; `None`
    /// when none is due (or every due one is held by a claim whose lease runs past `at.lease`).
    pub async fn claim_due_emails(
        &self,
        at: ClaimTime,
        limit: i64,
    ) -> Result<Option<ClaimedBatch>> {
        // Every sender of every node looks once a second: a read through the due index first,
        // so that an idle outbox never takes SQLite's turn to write (nor syncs its log).
        let any_due: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM outbox WHERE sent_at IS NULL AND dead_at IS NULL AND next_attempt_at <= $1 \
             AND (locked_until IS NULL OR locked_until <= $2) LIMIT 1",
        )
        .bind(at.due)
        .bind(at.lease)
        .fetch_optional(&self.pool)
        .await?;
        if any_due.is_none() {
            return Ok(None);
        }
        let holder = uuid::Uuid::new_v4().to_string();
        // On PostgreSQL, concurrent claimers skip each other's rows instead of waiting.
        let skip_locked = match self.backend {
            Backend::Sqlite => "",
            Backend::Postgres => "FOR UPDATE SKIP LOCKED",
        };
        let sql = format!(
            "UPDATE outbox SET locked_until = $1, locked_by = $4 WHERE id IN ( \
               SELECT id FROM outbox WHERE sent_at IS NULL AND dead_at IS NULL AND next_attempt_at <= $2 \
               AND (locked_until IS NULL OR locked_until <= $5) ORDER BY next_attempt_at LIMIT $3 {skip_locked}) \
             RETURNING {QUEUED_EMAIL_COLUMNS}"
        );
        let mut writer = self.writer().await?;
        let mut emails: Vec<QueuedEmail> = sqlx::query_as(&sql)
            .bind(at.lease + OUTBOX_LEASE_MS)
            .bind(at.due)
            .bind(limit)
            .bind(&holder)
            .bind(at.lease)
            .fetch_all(&mut *writer)
            .await?;
        writer.done().await?;
        // RETURNING keeps no order: oldest first, as they were chosen.
        emails.sort_by_key(|e| e.created_at);
        Ok((!emails.is_empty()).then_some(ClaimedBatch {
            emails,
            claim: Claim { holder },
        }))
    }

    /// Emails waiting (due now, or scheduled for later) and dead-lettered, and how long the
    /// oldest due one has waited; counted through the partial indexes on each (so the cost is
    /// the backlog's size, not the outbox's).
    pub async fn outbox_backlog(&self, now: i64) -> Result<OutboxBacklog> {
        let row = sqlx::query(
            "SELECT COALESCE(SUM(CASE WHEN next_attempt_at <= $1 THEN 1 ELSE 0 END), 0) AS due, \
                    COALESCE(SUM(CASE WHEN next_attempt_at > $1 THEN 1 ELSE 0 END), 0) AS scheduled, \
                    MIN(CASE WHEN next_attempt_at <= $1 THEN created_at END) AS oldest \
             FROM outbox WHERE sent_at IS NULL AND dead_at IS NULL",
        )
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        let dead: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE dead_at IS NOT NULL")
            .fetch_one(&self.pool)
            .await?;
        let oldest: Option<i64> = row.try_get("oldest")?;
        Ok(OutboxBacklog {
            due: row.try_get("due")?,
            scheduled: row.try_get("scheduled")?,
            dead,
            oldest_due_age_ms: oldest.map_or(0, |t| (now - t).max(0)),
        })
    }

    /// Emails sent since `since` (by every node): the outbox's recent rate.
    pub async fn emails_sent_since(&self, since: i64) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM outbox WHERE sent_at IS NOT NULL AND sent_at > $1",
        )
        .bind(since)
        .fetch_one(&self.pool)
        .await?)
    }

    /// Deletes emails sent before `before` (their bodies are long erased); returns how many.
    pub async fn prune_sent_emails(&self, before: i64) -> Result<u64> {
        let mut writer = self.writer().await?;
        let done = sqlx::query("DELETE FROM outbox WHERE sent_at IS NOT NULL AND sent_at < $1")
            .bind(before)
            .execute(&mut *writer)
            .await?;
        writer.done().await?;
        Ok(done.rows_affected())
    }

    /// Every count, for the operator's `keyward outbox stats` (a full count of the table).
    pub async fn outbox_stats(&self) -> Result<OutboxStats> {
        let row = sqlx::query(
            "SELECT COALESCE(SUM(CASE WHEN sent_at IS NULL AND dead_at IS NULL THEN 1 ELSE 0 END), 0) AS pending, \
                    COALESCE(SUM(CASE WHEN sent_at IS NOT NULL THEN 1 ELSE 0 END), 0) AS sent, \
                    COALESCE(SUM(CASE WHEN dead_at IS NOT NULL THEN 1 ELSE 0 END), 0) AS dead FROM outbox",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(OutboxStats {
            pending: row.try_get("pending")?,
            sent: row.try_get("sent")?,
            dead: row.try_get("dead")?,
        })
    }

    pub async fn dead_emails(&self) -> Result<Vec<DeadEmail>> {
        Ok(sqlx::query_as(
            "SELECT id, recipient, kind, attempts, last_error FROM outbox WHERE dead_at IS NOT NULL ORDER BY created_at",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Puts dead-lettered emails back in the queue (after the operator fixed the mail server).
    pub async fn retry_dead_emails(&self, now: i64) -> Result<u64> {
        let mut writer = self.writer().await?;
        let done = sqlx::query("UPDATE outbox SET dead_at = NULL, attempts = 0, next_attempt_at = $1 WHERE dead_at IS NOT NULL")
            .bind(now)
            .execute(&mut *writer)
            .await?;
        writer.done().await?;
        Ok(done.rows_affected())
    }
}

impl Claim {
    /// Extends the lease on this claim's emails that are still unrecorded to `until` (on the
    /// real clock, as [`ClaimTime::lease`]); returns
    /// how many it still holds (0: the lease ran out and another sender took them).
    pub async fn renew(&self, store: &Store, until: i64) -> Result<u64> {
        let mut writer = store.writer().await?;
        let done = sqlx::query(
            "UPDATE outbox SET locked_until = $1 WHERE locked_by = $2 AND sent_at IS NULL AND dead_at IS NULL",
        )
        .bind(until)
        .bind(&self.holder)
        .execute(&mut *writer)
        .await?;
        writer.done().await?;
        Ok(done.rows_affected())
    }

    /// Records what became of each email (sent: its body erased; failed: retried at
    /// `next_attempt_at`, or dead-lettered) in one transaction, and releases the claim.
    pub async fn finish(self, store: &Store, deliveries: &[(&str, Delivery<'_>)]) -> Result<()> {
        let mut tx = store.begin().await?;
        for (id, delivery) in deliveries {
            match delivery {
                Delivery::Sent { at } => {
                    tx.later("UPDATE outbox SET sent_at = $1, body_ciphertext = NULL, locked_until = NULL, locked_by = NULL, last_error = NULL WHERE id = $2")
                        .bind(*at)
                        .bind((*id).to_owned())
                        .queue()
                        .await?;
                }
                Delivery::Failed(attempt) => {
                    tx.later("UPDATE outbox SET attempts = $1, next_attempt_at = $2, dead_at = $3, last_error = $4, locked_until = NULL, locked_by = NULL WHERE id = $5")
                        .bind(attempt.attempts)
                        .bind(attempt.next_attempt_at)
                        .bind(attempt.dead_at)
                        .bind(attempt.error.to_owned())
                        .bind((*id).to_owned())
                        .queue()
                        .await?;
                }
            }
        }
        tx.commit().await
    }
}
