//! One write transaction and what can be done in it.

use super::records::{Audit, KeyClass, NewEmail, NewKey, NewLink, Partner, Supersede};
use super::{link_with_partner, partner_where, Backend, Link, Result};
use crate::clock::millis;
use chrono::{DateTime, Utc};
use keyward_core::{
    AllowedIps, Email, LinkPurpose, PartnerCode, PartnerId, PartnerStatus, TokenHash,
};
use sqlx::Any;
use sqlx::Row;

/// Records a replay digest until `expires_at`, unless it is held and its window has not passed
/// at `now`: one row affected means the signed request is used for the first time in its
/// window. One statement, atomic on its own: of concurrent uses of one digest, on any node,
/// exactly one affects the row (PostgreSQL re-checks the `WHERE` against a row another
/// transaction just wrote; SQLite has one writer). Run in a transaction or on its own.
pub(super) fn record_replay_query<'q>(
    digest: &[u8],
    now: DateTime<Utc>,
    expires_at: DateTime<Utc>,
) -> sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>> {
    sqlx::query(
        "INSERT INTO replays (digest, expires_at) VALUES ($1, $2) \
         ON CONFLICT (digest) DO UPDATE SET expires_at = excluded.expires_at \
         WHERE replays.expires_at <= $3",
    )
    .bind(digest.to_vec())
    .bind(millis(expires_at))
    .bind(millis(now))
}

/// One write transaction. Rolled back when dropped without [`Tx::commit`].
pub struct Tx {
    pub(super) tx: sqlx::Transaction<'static, Any>,
    pub(super) backend: Backend,
    /// Waits for the commit to be on disk, after the turn is given up (`group_commit.rs`).
    pub(super) log_sync: Option<super::group_commit::LogSync>,
    /// What this transaction queued, for the metrics once it commits.
    pub(super) written: Written,
    /// The partner this transaction created, if any: it has no links yet to supersede, which
    /// spares an onboarding one statement while it holds the write lock.
    pub(super) created_partner: Option<PartnerId>,
    /// Writes queued to go with the next statement (see `later.rs`).
    pub(super) batch: super::later::Batch,
    /// The node's view of the webhook endpoints, shared by its transactions.
    pub(super) endpoint_view: std::sync::Arc<super::webhooks::EndpointView>,
    /// This transaction added or removed an endpoint: it reads them rather than the view.
    pub(super) changed_endpoints: bool,
    /// A partner code (folded) this SQLite transaction looked up and did not find: no other
    /// writer can take it before the transaction ends, so its insert cannot conflict.
    pub(super) code_known_free: Option<String>,
}

/// Emails and links a transaction wrote: counted by the metrics only once it commits.
#[derive(Debug, Default, Clone)]
pub struct Written {
    pub emails: u64,
    pub links: Vec<LinkPurpose>,
}

impl Tx {
    pub async fn commit(self) -> Result<()> {
        self.commit_counted().await.map(drop)
    }

    /// Commits, and returns what the transaction wrote once it is on disk.
    pub async fn commit_counted(mut self) -> Result<Written> {
        self.send_batch().await?;
        // Committing gives the connection back: on SQLite the next writer may begin while
        // this commit is synced (SQLite's group commit).
        self.tx.commit().await?;
        if let Some(log_sync) = &self.log_sync {
            log_sync.synced().await?;
        }
        Ok(self.written)
    }

    /// The partner with this code (compared case-insensitively), locked until the transaction
    /// ends, so per-partner decisions (rate limits, link issue) serialise across nodes.
    pub async fn partner_by_code_for_update(
        &mut self,
        code: &PartnerCode,
    ) -> Result<Option<Partner>> {
        let lock = self.backend.lock_row();
        let folded = code.folded();
        let partner = partner_where(self.conn().await?, "p.code_folded", &folded, lock).await?;
        if partner.is_none() && self.backend == Backend::Sqlite {
            self.code_known_free = Some(folded);
        }
        Ok(partner)
    }

    /// The partner with this ID, locked until the transaction ends.
    pub async fn partner_by_id_for_update(&mut self, id: &PartnerId) -> Result<Option<Partner>> {
        let lock = self.backend.lock_row();
        partner_where(self.conn().await?, "p.id", id.as_str(), lock).await
    }

    /// A new pending partner. [`super::StoreError::Conflict`] if the code (in any letter case)
    /// is taken. On SQLite, after this transaction found the code free, the insert is queued
    /// (`later.rs`): no conflict can arise then.
    pub async fn insert_partner(
        &mut self,
        id: &PartnerId,
        code: &PartnerCode,
        email: &Email,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let now = millis(now);
        const INSERT: &str = "INSERT INTO partners (id, code, code_folded, email, status, created_at, updated_at) VALUES ($1, $2, $3, $4, 'pending', $5, $5)";
        let folded = code.folded();
        if self.code_known_free.take().as_ref() == Some(&folded) {
            // Looked up and not found under SQLite's write lock, which this transaction holds
            // from its start: no conflict can arise, so the insert goes with the next batch.
            self.later(INSERT)
                .bind(id.as_str().to_owned())
                .bind(code.as_str().to_owned())
                .bind(folded)
                .bind(email.as_str().to_owned())
                .bind(now)
                .queue()
                .await?;
        } else {
            sqlx::query(INSERT)
                .bind(id.as_str())
                .bind(code.as_str())
                .bind(folded)
                .bind(email.as_str())
                .bind(now)
                .execute(self.conn().await?)
                .await?;
        }
        self.created_partner = Some(id.clone());
        Ok(())
    }

    /// Marks a pending partner as invited by an operator (invite-only onboarding).
    pub async fn mark_invited(&mut self, partner_id: &PartnerId) -> Result<()> {
        sqlx::query("UPDATE partners SET invited = 1 WHERE id = $1")
            .bind(partner_id.as_str())
            .execute(self.conn().await?)
            .await?;
        Ok(())
    }

    pub async fn set_partner_status(
        &mut self,
        partner_id: &PartnerId,
        status: PartnerStatus,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let now = millis(now);
        sqlx::query("UPDATE partners SET status = $1, updated_at = $2 WHERE id = $3")
            .bind(status.as_str())
            .bind(now)
            .bind(partner_id.as_str())
            .execute(self.conn().await?)
            .await?;
        Ok(())
    }

    pub async fn set_allowed_ips(
        &mut self,
        partner_id: &PartnerId,
        allowed_ips: &AllowedIps,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let now = millis(now);
        sqlx::query("UPDATE partners SET allowed_ips = $1, updated_at = $2 WHERE id = $3")
            .bind(allowed_ips.to_stored())
            .bind(now)
            .bind(partner_id.as_str())
            .execute(self.conn().await?)
            .await?;
        Ok(())
    }

    /// The link with this token hash and its partner. On PostgreSQL the partner row is locked
    /// until the transaction ends, so two links of one partner cannot be redeemed at once.
    pub async fn link_by_hash_for_update(
        &mut self,
        token_hash: &TokenHash,
    ) -> Result<Option<(Link, Partner)>> {
        let lock = self.backend.lock_row();
        link_with_partner(self.conn().await?, token_hash, lock).await
    }

    /// How many links were issued to the partner since `since`: all of them, or only the
    /// signed (or unsigned) ones (the per-partner email limit).
    pub async fn links_issued_since(
        &mut self,
        partner_id: &PartnerId,
        signed: Option<bool>,
        since: DateTime<Utc>,
    ) -> Result<i64> {
        let since = millis(since);
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM links WHERE partner_id = $1 AND created_at > $2 \
             AND ($3 < 0 OR signed = $3)",
        )
        .bind(partner_id.as_str())
        .bind(since)
        .bind(signed.map_or(-1, i64::from))
        .fetch_one(self.conn().await?)
        .await?)
    }

    /// The oldest link issued since `since`, to tell a rate-limited caller when to come back.
    pub async fn oldest_link_since(
        &mut self,
        partner_id: &PartnerId,
        signed: Option<bool>,
        since: DateTime<Utc>,
    ) -> Result<Option<i64>> {
        let since = millis(since);
        Ok(sqlx::query_scalar(
            "SELECT MIN(created_at) FROM links WHERE partner_id = $1 AND created_at > $2 \
             AND ($3 < 0 OR signed = $3)",
        )
        .bind(partner_id.as_str())
        .bind(since)
        .bind(signed.map_or(-1, i64::from))
        .fetch_one(self.conn().await?)
        .await?)
    }

    /// Unused links of this purpose stop working (a newer one replaces them).
    pub async fn supersede_links(
        &mut self,
        partner_id: &PartnerId,
        purpose: LinkPurpose,
        which: Supersede,
        now: DateTime<Utc>,
    ) -> Result<u64> {
        if self.created_partner.as_ref() == Some(partner_id) {
            return Ok(0);
        }
        let now = millis(now);
        let only_unsigned = match which {
            Supersede::All => "",
            Supersede::UnsignedOnly => " AND signed = 0",
        };
        let sql = format!(
            "UPDATE links SET superseded_at = $1 WHERE partner_id = $2 AND purpose = $3 AND used_at IS NULL AND superseded_at IS NULL{only_unsigned}"
        );
        let done = sqlx::query(&sql)
            .bind(now)
            .bind(partner_id.as_str())
            .bind(purpose.as_str())
            .execute(self.conn().await?)
            .await?;
        Ok(done.rows_affected())
    }

    pub async fn insert_link(&mut self, link: &NewLink<'_>) -> Result<()> {
        self.later(
            "INSERT INTO links (id, partner_id, purpose, token_hash, created_at, expires_at, requested_ip, signed, overlap_seconds, key_name, key_scopes, key_mode, key_valid_days) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        )
        .bind(link.id.to_owned())
        .bind(link.partner_id.as_str().to_owned())
        .bind(link.purpose.as_str())
        .bind(link.token_hash.as_bytes().to_vec())
        .bind(link.created_at)
        .bind(link.expires_at)
        .bind(link.requested_ip.map(|ip| ip.to_string()))
        .bind(i64::from(link.signed))
        .bind(link.overlap_seconds)
        .bind(link.key.map(|k| k.name.clone()))
        .bind(link.key.map(|k| k.scopes.to_stored()))
        .bind(link.key.map(|k| k.mode.as_str()))
        .bind(link.key.and_then(|k| k.valid_days))
        .queue()
        .await?;
        self.written.links.push(link.purpose);
        Ok(())
    }

    /// Consumes the link if, and only if, it is still usable: one conditional update, so of
    /// concurrent redemptions exactly one sees `true`.
    pub async fn consume_link(&mut self, link_id: &str, now: DateTime<Utc>) -> Result<bool> {
        let now = millis(now);
        let done = sqlx::query(
            "UPDATE links SET used_at = $1 WHERE id = $2 AND used_at IS NULL AND superseded_at IS NULL AND expires_at > $1",
        )
        .bind(now)
        .bind(link_id)
        .execute(self.conn().await?)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Revokes every unrevoked key of the partner (primary, retiring and restricted); returns
    /// how many. Emails about them that were not sent yet are cancelled.
    pub async fn revoke_keys(&mut self, partner_id: &PartnerId, now: DateTime<Utc>) -> Result<u64> {
        let now = millis(now);
        self.revoke_where(partner_id, "", now).await
    }

    /// Revokes the partner's primary pairs (current and retiring), leaving its restricted
    /// ones: a signed regeneration replaces only the primary pair (SPEC §8.1).
    pub async fn revoke_primary_keys(
        &mut self,
        partner_id: &PartnerId,
        now: DateTime<Utc>,
    ) -> Result<u64> {
        let now = millis(now);
        self.revoke_where(partner_id, " AND kind = 'primary'", now)
            .await
    }

    /// A pair of the partner: its kind and when it was revoked; `None` if the partner has no
    /// pair with this id.
    pub async fn key_state(
        &mut self,
        partner_id: &PartnerId,
        key_id: &str,
    ) -> Result<Option<(String, Option<i64>)>> {
        let row = sqlx::query(
            "SELECT kind, revoked_at FROM partner_keys WHERE partner_id = $1 AND id = $2",
        )
        .bind(partner_id.as_str())
        .bind(key_id)
        .fetch_optional(self.conn().await?)
        .await?;
        row.map(|row| Ok((row.try_get("kind")?, row.try_get("revoked_at")?)))
            .transpose()
    }

    /// The places (1–9) the partner's live restricted pairs hold.
    pub async fn restricted_slots(&mut self, partner_id: &PartnerId) -> Result<Vec<i64>> {
        Ok(sqlx::query_scalar(
            "SELECT slot FROM partner_keys WHERE partner_id = $1 AND revoked_at IS NULL AND slot IS NOT NULL",
        )
        .bind(partner_id.as_str())
        .fetch_all(self.conn().await?)
        .await?)
    }

    /// Revokes the partner's restricted pairs whose own expiry has passed (they can never work
    /// again), freeing their places; returns how many.
    pub async fn revoke_lapsed_restricted_keys(
        &mut self,
        partner_id: &PartnerId,
        now: DateTime<Utc>,
    ) -> Result<u64> {
        let now = millis(now);
        self.revoke_where(
            partner_id,
            " AND kind = 'restricted' AND valid_until IS NOT NULL AND valid_until <= $1",
            now,
        )
        .await
    }

    /// Revokes one pair of the partner, if it is not revoked yet; returns whether it was.
    pub async fn revoke_key(
        &mut self,
        partner_id: &PartnerId,
        key_id: &str,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let now = millis(now);
        // The id is bound, never spliced into the SQL: `revoke_where` takes a fixed clause.
        let done = sqlx::query(
            "UPDATE partner_keys SET revoked_at = $1 WHERE partner_id = $2 AND id = $3 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(partner_id.as_str())
        .bind(key_id)
        .execute(self.conn().await?)
        .await?;
        if done.rows_affected() > 0 {
            sqlx::query("DELETE FROM outbox WHERE sent_at IS NULL AND about_key_id = $1")
                .bind(key_id)
                .execute(self.conn().await?)
                .await?;
            self.cancel_scheduled_events("$2", key_id, now).await?;
        }
        Ok(done.rows_affected() == 1)
    }

    /// Revokes the partner's retiring pair, if it has one (expired or not); returns how many.
    pub async fn revoke_retiring_keys(
        &mut self,
        partner_id: &PartnerId,
        now: DateTime<Utc>,
    ) -> Result<u64> {
        let now = millis(now);
        self.revoke_where(
            partner_id,
            " AND kind = 'primary' AND expires_at IS NOT NULL",
            now,
        )
        .await
    }

    async fn revoke_where(&mut self, partner_id: &PartnerId, which: &str, now: i64) -> Result<u64> {
        let sql = format!(
            "UPDATE partner_keys SET revoked_at = $1 WHERE partner_id = $2 AND revoked_at IS NULL{which}"
        );
        let done = sqlx::query(&sql)
            .bind(now)
            .bind(partner_id.as_str())
            .execute(self.conn().await?)
            .await?;
        if done.rows_affected() > 0 {
            sqlx::query(
                "DELETE FROM outbox WHERE sent_at IS NULL AND about_key_id IN \
                 (SELECT id FROM partner_keys WHERE partner_id = $1 AND revoked_at IS NOT NULL)",
            )
            .bind(partner_id.as_str())
            .execute(self.conn().await?)
            .await?;
            self.cancel_scheduled_events(
                "SELECT id FROM partner_keys WHERE partner_id = $2 AND revoked_at IS NOT NULL",
                partner_id.as_str(),
                now,
            )
            .await?;
        }
        Ok(done.rows_affected())
    }

    /// The partner's current pair becomes the retiring one, working until `expires_at`;
    /// returns its id (`None` if it had no current pair). Revoke the retiring pair first:
    /// the database allows one.
    pub async fn retire_current_key(
        &mut self,
        partner_id: &PartnerId,
        expires_at: DateTime<Utc>,
    ) -> Result<Option<String>> {
        let expires_at = millis(expires_at);
        Ok(sqlx::query_scalar(
            "UPDATE partner_keys SET expires_at = $1 WHERE partner_id = $2 \
             AND revoked_at IS NULL AND expires_at IS NULL AND kind = 'primary' RETURNING id",
        )
        .bind(expires_at)
        .bind(partner_id.as_str())
        .fetch_optional(self.conn().await?)
        .await?)
    }

    pub async fn insert_key(&mut self, key: &NewKey<'_>) -> Result<()> {
        sqlx::query(
            "INSERT INTO partner_keys (id, partner_id, public_key_hash, public_key_hint, secret_ciphertext, created_at, secret_key_hash, kind, mode, name, scopes, valid_until, slot) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        )
        .bind(key.id)
        .bind(key.partner_id.as_str())
        .bind(key.public_key_hash.as_bytes().to_vec())
        .bind(key.public_key_hint)
        .bind(key.secret_ciphertext.to_vec())
        .bind(key.created_at)
        .bind(key.secret_key_hash.as_bytes().to_vec())
        .bind(key.class.kind())
        .bind(key.mode.as_str())
        .bind(key.class.name().map(str::to_owned))
        .bind(match key.class {
            KeyClass::Primary => None,
            KeyClass::Restricted { scopes, .. } => Some(scopes.to_stored()),
        })
        .bind(key.class.valid_until())
        .bind(key.slot)
        .execute(self.conn().await?)
        .await?;
        Ok(())
    }

    /// Queues an email in this transaction (the transactional outbox).
    pub async fn enqueue_email(&mut self, email: &NewEmail<'_>) -> Result<()> {
        self.later(
            "INSERT INTO outbox (id, recipient, kind, body_ciphertext, created_at, next_attempt_at, recipient_folded, unauthenticated, about_key_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(email.id.to_owned())
        .bind(email.recipient.to_owned())
        .bind(email.kind.to_owned())
        .bind(email.body_ciphertext.to_vec())
        .bind(email.created_at)
        .bind(email.send_after)
        .bind(email.recipient.to_lowercase())
        .bind(i64::from(email.unauthenticated))
        .bind(email.about_key_id.map(str::to_owned))
        .queue()
        .await?;
        self.written.emails += 1;
        Ok(())
    }

    /// Serialises, across nodes, the transactions that count and queue emails to one
    /// recipient (the per-recipient limit), until this transaction ends.
    pub async fn lock_recipient(&mut self, recipient_folded: &str) -> Result<()> {
        if let Some(sql) = self.backend.lock_recipient() {
            sqlx::query(sql)
                .bind(recipient_folded)
                .execute(self.conn().await?)
                .await?;
        }
        Ok(())
    }

    /// Emails anyone could have caused to `recipient_folded` since `since`: how many, and
    /// when the oldest of them was queued.
    pub async fn unauthenticated_emails_since(
        &mut self,
        recipient_folded: &str,
        since: DateTime<Utc>,
    ) -> Result<(i64, Option<i64>)> {
        let since = millis(since);
        let row = sqlx::query(
            "SELECT COUNT(*) AS n, MIN(created_at) AS oldest FROM outbox \
             WHERE recipient_folded = $1 AND created_at > $2 AND unauthenticated = 1",
        )
        .bind(recipient_folded)
        .bind(since)
        .fetch_one(self.conn().await?)
        .await?;
        Ok((row.try_get("n")?, row.try_get("oldest")?))
    }

    /// The email of `kind` to `recipient_folded` due last (sent or not), among those due after
    /// `since`: `(id, due at, sent)`.
    pub async fn last_email_of_kind(
        &mut self,
        recipient_folded: &str,
        kind: &str,
        since: DateTime<Utc>,
    ) -> Result<Option<(String, i64, bool)>> {
        let since = millis(since);
        let row = sqlx::query(
            "SELECT id, next_attempt_at, sent_at FROM outbox \
             WHERE recipient_folded = $1 AND kind = $2 AND next_attempt_at > $3 \
             ORDER BY next_attempt_at DESC LIMIT 1",
        )
        .bind(recipient_folded)
        .bind(kind)
        .bind(since)
        .fetch_optional(self.conn().await?)
        .await?;
        row.map(|row| {
            let sent: Option<i64> = row.try_get("sent_at")?;
            Ok((
                row.try_get("id")?,
                row.try_get("next_attempt_at")?,
                sent.is_some(),
            ))
        })
        .transpose()
    }

    /// Drops an email that is not due yet (a notice replaced by a newer one before it went
    /// out); one that is due or sent is left alone.
    pub async fn drop_scheduled_email(&mut self, id: &str, now: DateTime<Utc>) -> Result<bool> {
        let now = millis(now);
        let done = sqlx::query(
            "DELETE FROM outbox WHERE id = $1 AND sent_at IS NULL AND next_attempt_at > $2",
        )
        .bind(id)
        .bind(now)
        .execute(self.conn().await?)
        .await?;
        self.written.emails = self.written.emails.saturating_sub(done.rows_affected());
        Ok(done.rows_affected() == 1)
    }

    /// Whether the partner has an onboarding link that can still be used.
    pub async fn has_usable_onboarding_link(
        &mut self,
        partner_id: &PartnerId,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let now = millis(now);
        let count: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM links WHERE partner_id = $1 AND purpose = 'onboarding' \
             AND used_at IS NULL AND superseded_at IS NULL AND expires_at > $2",
        )
        .bind(partner_id.as_str())
        .bind(now)
        .fetch_one(self.conn().await?)
        .await?;
        Ok(count > 0)
    }

    /// Deletes a partner that never activated, with its links (its code becomes free).
    /// `false` if it is not pending.
    pub async fn delete_pending_partner(&mut self, partner_id: &PartnerId) -> Result<bool> {
        let done = sqlx::query("DELETE FROM partners WHERE id = $1 AND status = 'pending'")
            .bind(partner_id.as_str());
        sqlx::query(
            "DELETE FROM links WHERE partner_id = $1 AND EXISTS \
             (SELECT 1 FROM partners WHERE id = $1 AND status = 'pending')",
        )
        .bind(partner_id.as_str())
        .execute(self.conn().await?)
        .await?;
        Ok(done.execute(self.conn().await?).await?.rows_affected() == 1)
    }

    /// Records a signed request's digest; `false` if it was already acted on in its window.
    pub async fn record_replay(
        &mut self,
        digest: &[u8],
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<bool> {
        let done = record_replay_query(digest, now, expires_at)
            .execute(self.conn().await?)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Records a credential event with who caused it (`keyward audit` ships these).
    /// Records the entry, and queues the lifecycle event it announces to webhook endpoints
    /// (SPEC §9.3), in this transaction.
    pub async fn audit(&mut self, entry: &Audit<'_>) -> Result<()> {
        self.later("INSERT INTO audit_events (id, partner_id, event, ip, detail, created_at, actor) VALUES ($1, $2, $3, $4, $5, $6, $7)")
            .bind(uuid::Uuid::now_v7().to_string())
            .bind(entry.partner.map(|p| p.as_str().to_owned()))
            .bind(entry.kind.name())
            .bind(entry.ip.map(|ip| ip.to_string()))
            .bind(entry.detail.map(str::to_owned))
            .bind(millis(entry.at))
            .bind(entry.actor.to_stored())
            .queue()
            .await?;
        if let Some(event) = super::Event::of(entry) {
            self.queue_event(&event).await?;
        }
        Ok(())
    }

    /// Stores `value` under `name` unless a value is there already (the first writer wins).
    pub async fn insert_meta(&mut self, name: &str, value: &[u8]) -> Result<()> {
        sqlx::query("INSERT INTO meta (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
            .bind(name)
            .bind(value.to_vec())
            .execute(self.conn().await?)
            .await?;
        Ok(())
    }
}
