//! Reminders before a pair expires under the expiry policy (SPEC §8.4): their due times are
//! stored when a pair is made (or its partner's allow-list changes), and a due row is claimed,
//! re-checked and sent in one transaction by whichever node gets it first.

use super::records::KeyClass;
use super::{records, Backend, PartnerRow, Result, Tx, PARTNER_COLUMNS};
use crate::clock::millis;
use chrono::{DateTime, Utc};
use keyward_core::{KeyMode, PartnerId};
use sqlx::{FromRow, Row};

/// A reminder that fell due, with what deciding about it needs: the pair and its partner.
#[derive(Debug, Clone)]
pub struct DueReminder {
    pub key_id: String,
    pub before_secs: i64,
    pub due_at: i64,
    pub key_hint: String,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
    /// Set for a retiring primary pair (its own reminder covers it).
    pub retiring_until: Option<i64>,
    pub last_used_at: Option<i64>,
    pub class: KeyClass,
    pub mode: KeyMode,
    /// Moved in with keys not of §1's format (SPEC §10.2).
    pub legacy: bool,
    pub partner: super::Partner,
}

impl Tx {
    /// Stores the reminders of one pair: `(before_secs, due_at)`; one already stored for the
    /// same pair and lead time is replaced unless it was sent.
    pub async fn schedule_reminders(&mut self, key_id: &str, dues: &[(i64, i64)]) -> Result<()> {
        for &(before_secs, due_at) in dues {
            sqlx::query(
                "INSERT INTO key_reminders (key_id, before_secs, due_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (key_id, before_secs) DO UPDATE SET due_at = excluded.due_at \
                 WHERE key_reminders.sent_at IS NULL",
            )
            .bind(key_id)
            .bind(before_secs)
            .bind(due_at)
            .execute(self.conn().await?)
            .await?;
        }
        Ok(())
    }

    /// Forgets the unsent reminders of the partner's pairs (before they are scheduled again
    /// from a changed policy, such as an allow-list set or removed).
    pub async fn drop_partner_reminders(&mut self, partner_id: &PartnerId) -> Result<()> {
        sqlx::query(
            "DELETE FROM key_reminders WHERE sent_at IS NULL AND key_id IN \
             (SELECT id FROM partner_keys WHERE partner_id = $1)",
        )
        .bind(partner_id.as_str())
        .execute(self.conn().await?)
        .await?;
        Ok(())
    }

    /// The live pairs of a partner as the expiry policy needs them: id, creation, last use,
    /// whether retiring, and a restricted pair's own expiry.
    pub async fn live_key_times(&mut self, partner_id: &PartnerId) -> Result<Vec<KeyTimesRow>> {
        Ok(sqlx::query_as(
            "SELECT id, created_at, last_used_at, expires_at, valid_until, legacy FROM partner_keys \
             WHERE partner_id = $1 AND revoked_at IS NULL",
        )
        .bind(partner_id.as_str())
        .fetch_all(self.conn().await?)
        .await?)
    }

    /// Up to `limit` reminders due at `now`, locked for this transaction (on PostgreSQL, rows
    /// another node holds are skipped: each is decided once).
    pub async fn claim_due_reminders(
        &mut self,
        now: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<DueReminder>> {
        let lock = match self.backend {
            Backend::Sqlite => "",
            Backend::Postgres => " FOR UPDATE OF r SKIP LOCKED",
        };
        let sql = format!(
            "SELECT r.key_id, r.before_secs, r.due_at, k.public_key_hint, k.created_at AS key_created_at, \
             k.revoked_at, k.expires_at AS key_expires_at, k.last_used_at, k.kind, k.mode, \
             k.name AS key_name, k.scopes, k.valid_until, k.legacy, {PARTNER_COLUMNS} \
             FROM key_reminders r JOIN partner_keys k ON k.id = r.key_id \
             JOIN partners p ON p.id = k.partner_id \
             WHERE r.sent_at IS NULL AND r.due_at <= $1 ORDER BY r.due_at LIMIT $2{lock}"
        );
        let rows = sqlx::query(&sql)
            .bind(millis(now))
            .bind(limit)
            .fetch_all(self.conn().await?)
            .await?;
        rows.iter()
            .map(|row| {
                Ok(DueReminder {
                    key_id: row.try_get("key_id")?,
                    before_secs: row.try_get("before_secs")?,
                    due_at: row.try_get("due_at")?,
                    key_hint: row.try_get("public_key_hint")?,
                    created_at: row.try_get("key_created_at")?,
                    revoked_at: row.try_get("revoked_at")?,
                    retiring_until: row.try_get("key_expires_at")?,
                    last_used_at: row.try_get("last_used_at")?,
                    class: KeyClass::from_columns(
                        row.try_get("kind")?,
                        row.try_get("key_name")?,
                        row.try_get("scopes")?,
                        row.try_get("valid_until")?,
                    )?,
                    mode: records::parse_mode(row.try_get("mode")?)?,
                    legacy: row.try_get::<i64, _>("legacy")? != 0,
                    partner: PartnerRow::from_row(row)?.try_into()?,
                })
            })
            .collect()
    }

    pub async fn mark_reminder_sent(
        &mut self,
        key_id: &str,
        before_secs: i64,
        now: DateTime<Utc>,
    ) -> Result<()> {
        sqlx::query("UPDATE key_reminders SET sent_at = $1 WHERE key_id = $2 AND before_secs = $3")
            .bind(millis(now))
            .bind(key_id)
            .bind(before_secs)
            .execute(self.conn().await?)
            .await?;
        Ok(())
    }

    pub async fn move_reminder(
        &mut self,
        key_id: &str,
        before_secs: i64,
        due_at: i64,
    ) -> Result<()> {
        sqlx::query("UPDATE key_reminders SET due_at = $1 WHERE key_id = $2 AND before_secs = $3")
            .bind(due_at)
            .bind(key_id)
            .bind(before_secs)
            .execute(self.conn().await?)
            .await?;
        Ok(())
    }

    /// Forgets the unsent reminders of every pair whose ID is in `(after, last]`: one
    /// statement for a batch of pairs taken in ID order (the table's key leads with it).
    pub async fn drop_reminders_of_keys_in(&mut self, after: &str, last: &str) -> Result<()> {
        sqlx::query(
            "DELETE FROM key_reminders WHERE key_id > $1 AND key_id <= $2 AND sent_at IS NULL",
        )
        .bind(after)
        .bind(last)
        .execute(self.conn().await?)
        .await?;
        Ok(())
    }

    /// Sets a meta value, replacing an older one.
    pub async fn set_meta(&mut self, name: &str, value: &[u8]) -> Result<()> {
        sqlx::query(
            "INSERT INTO meta (name, value) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        )
        .bind(name)
        .bind(value.to_vec())
        .execute(self.conn().await?)
        .await?;
        Ok(())
    }

    pub async fn drop_reminder(&mut self, key_id: &str, before_secs: i64) -> Result<()> {
        sqlx::query(
            "DELETE FROM key_reminders WHERE key_id = $1 AND before_secs = $2 AND sent_at IS NULL",
        )
        .bind(key_id)
        .bind(before_secs)
        .execute(self.conn().await?)
        .await?;
        Ok(())
    }
}

/// A live pair's times, as the expiry policy reads them.
#[derive(Debug, Clone, FromRow)]
pub struct KeyTimesRow {
    pub id: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    /// A retiring primary pair's end of overlap.
    pub expires_at: Option<i64>,
    pub valid_until: Option<i64>,
    /// Moved in with keys not of §1's format (SPEC §10.2).
    #[sqlx(try_from = "i64")]
    pub legacy: super::Flag,
}

impl super::Store {
    /// Up to `limit` live pairs with ids after `after`, in id order, with whether their partner
    /// has an allow-list: for storing every pair's reminders again after the policy changed.
    pub async fn live_keys_after(
        &self,
        after: &str,
        limit: i64,
    ) -> Result<Vec<(KeyTimesRow, bool)>> {
        let rows = sqlx::query(
            "SELECT k.id, k.created_at, k.last_used_at, k.expires_at, k.valid_until, k.legacy, \
             COALESCE(p.allowed_ips, '') AS allowed_ips \
             FROM partner_keys k JOIN partners p ON p.id = k.partner_id \
             WHERE k.revoked_at IS NULL AND k.id > $1 ORDER BY k.id LIMIT $2",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let allowed: String = row.try_get("allowed_ips")?;
                Ok((KeyTimesRow::from_row(row)?, !allowed.is_empty()))
            })
            .collect()
    }
}
