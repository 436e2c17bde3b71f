//! The outbox's queries. The sender that uses them is `mail/outbox.rs`.

use super::records::{DeadEmail, FailedAttempt, OutboxStats, QueuedEmail, QUEUED_EMAIL_COLUMNS};
use super::{Result, Store};
use sqlx::{Any, Row};

impl Store {
    /// Claims up to `limit` due emails for `lease_ms` (the single-node SQLite sender: a write
    /// transaction must not stay open while SMTP talks, so the claim is a lease).
    pub async fn claim_due_emails(
        &self,
        now: i64,
        lease_ms: i64,
        limit: i64,
    ) -> Result<Vec<QueuedEmail>> {
        let sql = format!(
            "UPDATE outbox SET locked_until = $1 WHERE id IN ( \
               SELECT id FROM outbox WHERE sent_at IS NULL AND dead_at IS NULL AND next_attempt_at <= $2 \
               AND (locked_until IS NULL OR locked_until <= $2) ORDER BY next_attempt_at LIMIT $3) \
             RETURNING {QUEUED_EMAIL_COLUMNS}"
        );
        Ok(sqlx::query_as(&sql)
            .bind(now + lease_ms)
            .bind(now)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?)
    }

    /// Releases every claim on unsent emails. Only for a single node (SQLite) at start, where a
    /// claim can only have been left by a process that died.
    pub async fn release_email_claims(&self) -> Result<u64> {
        let done = sqlx::query("UPDATE outbox SET locked_until = NULL WHERE sent_at IS NULL AND locked_until IS NOT NULL")
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    /// Marks an email sent and erases its body.
    pub async fn mark_email_sent(&self, id: &str, now: i64) -> Result<()> {
        mark_email_sent(&self.pool, id, now).await
    }

    /// Records a failed attempt: retried at `next_attempt_at`, or dead-lettered when `dead_at`.
    pub async fn mark_email_failed(&self, id: &str, attempt: &FailedAttempt<'_>) -> Result<()> {
        mark_email_failed(&self.pool, id, attempt).await
    }

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
        let done = sqlx::query("UPDATE outbox SET dead_at = NULL, attempts = 0, next_attempt_at = $1 WHERE dead_at IS NOT NULL")
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}

pub(super) async fn mark_email_sent<'e, E: sqlx::Executor<'e, Database = Any>>(
    executor: E,
    id: &str,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "UPDATE outbox SET sent_at = $1, body_ciphertext = NULL, locked_until = NULL, last_error = NULL WHERE id = $2",
    )
    .bind(now)
    .bind(id)
    .execute(executor)
    .await?;
    Ok(())
}

pub(super) async fn mark_email_failed<'e, E: sqlx::Executor<'e, Database = Any>>(
    executor: E,
    id: &str,
    attempt: &FailedAttempt<'_>,
) -> Result<()> {
    sqlx::query(
        "UPDATE outbox SET attempts = $1, next_attempt_at = $2, dead_at = $3, last_error = $4, locked_until = NULL WHERE id = $5",
    )
    .bind(attempt.attempts)
    .bind(attempt.next_attempt_at)
    .bind(attempt.dead_at)
    .bind(attempt.error)
    .bind(id)
    .execute(executor)
    .await?;
    Ok(())
}
