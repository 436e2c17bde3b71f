//! Storage. One SQL implementation over sqlx's `Any` driver serves SQLite (embedded, one
//! node) and PostgreSQL (several nodes); what differs between them lives in `sqlite.rs` and
//! `postgres.rs`. Every request's changes happen in one [`Tx`]; its functions take `&mut self`.
//!
//! Secrets never reach this layer in the clear: public keys and link tokens arrive as SHA-256
//! hashes, secret keys and email bodies as AES-256-GCM ciphertexts.

pub mod postgres;
pub mod sqlite;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{Any, AnyPool, Executor, FromRow, Row};
use std::str::FromStr;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique constraint refused the row (a partner code taken by a concurrent request).
    #[error("a row with the same unique value already exists")]
    Conflict,
    /// The database could not be reached in time.
    #[error("the database is unavailable")]
    Unavailable(#[source] sqlx::Error),
    #[error("database error")]
    Other(#[source] sqlx::Error),
    #[error("a stored value is not valid: {0}")]
    Corrupt(String),
}

impl From<sqlx::Error> for StoreError {
    /// The one place where database errors are classified.
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict,
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
                StoreError::Unavailable(e)
            }
            _ => StoreError::Other(e),
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartnerStatus {
    Pending,
    Active,
    Suspended,
}

impl PartnerStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            PartnerStatus::Pending => "pending",
            PartnerStatus::Active => "active",
            PartnerStatus::Suspended => "suspended",
        }
    }

    fn parse(s: &str) -> Result<Self> {
        match s {
            "pending" => Ok(PartnerStatus::Pending),
            "active" => Ok(PartnerStatus::Active),
            "suspended" => Ok(PartnerStatus::Suspended),
            other => Err(StoreError::Corrupt(format!("partner status {other:?}"))),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkPurpose {
    Onboarding,
    Regeneration,
}

impl LinkPurpose {
    pub const fn as_str(self) -> &'static str {
        match self {
            LinkPurpose::Onboarding => "onboarding",
            LinkPurpose::Regeneration => "regeneration",
        }
    }

    fn parse(s: &str) -> Result<Self> {
        match s {
            "onboarding" => Ok(LinkPurpose::Onboarding),
            "regeneration" => Ok(LinkPurpose::Regeneration),
            other => Err(StoreError::Corrupt(format!("link purpose {other:?}"))),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Partner {
    pub id: String,
    pub code: String,
    pub email: String,
    pub status: PartnerStatus,
    /// Comma-separated CIDR blocks; `None` allows every address.
    pub allowed_ips: Option<String>,
    pub created_at: i64,
}

#[derive(FromRow)]
struct PartnerRow {
    id: String,
    code: String,
    email: String,
    status: String,
    allowed_ips: Option<String>,
    created_at: i64,
}

impl TryFrom<PartnerRow> for Partner {
    type Error = StoreError;
    fn try_from(row: PartnerRow) -> Result<Self> {
        Ok(Partner {
            status: PartnerStatus::parse(&row.status)?,
            id: row.id,
            code: row.code,
            email: row.email,
            allowed_ips: row.allowed_ips,
            created_at: row.created_at,
        })
    }
}

const PARTNER_COLUMNS: &str = "p.id, p.code, p.email, p.status, p.allowed_ips, p.created_at";

/// A key pair as stored, with its partner: what authentication needs, in one query.
#[derive(Debug, Clone)]
pub struct KeyRecord {
    pub key_id: String,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
    pub secret_ciphertext: Vec<u8>,
    pub partner: Partner,
}

#[derive(Debug, Clone)]
pub struct Link {
    pub id: String,
    pub partner_id: String,
    pub purpose: LinkPurpose,
    pub created_at: i64,
    pub expires_at: i64,
    pub used_at: Option<i64>,
    pub superseded_at: Option<i64>,
}

#[derive(FromRow)]
struct LinkRow {
    id: String,
    partner_id: String,
    purpose: String,
    created_at: i64,
    expires_at: i64,
    used_at: Option<i64>,
    superseded_at: Option<i64>,
}

impl TryFrom<LinkRow> for Link {
    type Error = StoreError;
    fn try_from(row: LinkRow) -> Result<Self> {
        Ok(Link {
            purpose: LinkPurpose::parse(&row.purpose)?,
            id: row.id,
            partner_id: row.partner_id,
            created_at: row.created_at,
            expires_at: row.expires_at,
            used_at: row.used_at,
            superseded_at: row.superseded_at,
        })
    }
}

const LINK_COLUMNS: &str =
    "id, partner_id, purpose, created_at, expires_at, used_at, superseded_at";

pub struct NewLink<'a> {
    pub id: &'a str,
    pub partner_id: &'a str,
    pub purpose: LinkPurpose,
    pub token_hash: &'a [u8],
    pub created_at: i64,
    pub expires_at: i64,
    pub requested_ip: Option<&'a str>,
}

pub struct NewKey<'a> {
    pub id: &'a str,
    pub partner_id: &'a str,
    pub public_key_hash: &'a [u8],
    pub public_key_hint: &'a str,
    pub secret_ciphertext: &'a [u8],
    pub created_at: i64,
}

pub struct NewEmail<'a> {
    pub id: &'a str,
    pub recipient: &'a str,
    pub kind: &'a str,
    pub body_ciphertext: &'a [u8],
    pub created_at: i64,
}

/// An email claimed for sending.
#[derive(Debug, FromRow)]
pub struct QueuedEmail {
    pub id: String,
    pub recipient: String,
    pub kind: String,
    pub body_ciphertext: Option<Vec<u8>>,
    pub attempts: i64,
}

/// A failed delivery attempt, as recorded.
#[derive(Debug)]
pub struct FailedAttempt<'a> {
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub dead_at: Option<i64>,
    pub error: &'a str,
}

const QUEUED_EMAIL_COLUMNS: &str = "id, recipient, kind, body_ciphertext, attempts";

async fn mark_email_sent<'e, E: sqlx::Executor<'e, Database = Any>>(
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

async fn mark_email_failed<'e, E: sqlx::Executor<'e, Database = Any>>(
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

/// Counts of the outbox, for operators and `/metrics`.
#[derive(Debug, Default, Clone, Copy)]
pub struct OutboxStats {
    pub pending: i64,
    pub sent: i64,
    pub dead: i64,
}

/// A dead-lettered email, as operators see it (no body: it is encrypted, and kept for retry).
#[derive(Debug, FromRow)]
pub struct DeadEmail {
    pub id: String,
    pub recipient: String,
    pub kind: String,
    pub attempts: i64,
    pub last_error: Option<String>,
}

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Connects to `url` (`sqlite://…` or `postgres://…`) with at most `max_connections`
    /// (default: 8 for SQLite, 16 for PostgreSQL). A SQLite file and its folder are created if
    /// missing.
    pub async fn connect(url: &str, max_connections: Option<u32>) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            Backend::Postgres
        };
        let (url, max_connections_default) = match backend {
            Backend::Sqlite => {
                if let Some(parent) = sqlite::file_path(url)
                    .as_deref()
                    .and_then(std::path::Path::parent)
                {
                    std::fs::create_dir_all(parent)
                        .map_err(|e| StoreError::Unavailable(sqlx::Error::Io(e)))?;
                }
                (sqlite::connect_url(url), 8)
            }
            Backend::Postgres => (url.to_owned(), 16),
        };
        let max_connections = max_connections.unwrap_or(max_connections_default);
        let options = AnyConnectOptions::from_str(&url)?;
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        conn.execute(sqlite::CONNECTION_PRAGMAS).await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        Ok(Self { pool, backend })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Applies the embedded migrations of this backend (idempotent; safe for concurrent nodes).
    pub async fn migrate(&self) -> Result<(), sqlx::migrate::MigrateError> {
        match self.backend {
            Backend::Sqlite => sqlite::MIGRATOR.run(&self.pool).await,
            Backend::Postgres => postgres::MIGRATOR.run(&self.pool).await,
        }
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Begins a write transaction. Dropping it without [`Tx::commit`] rolls it back.
    pub async fn begin(&self) -> Result<Tx> {
        let begin = match self.backend {
            Backend::Sqlite => sqlite::BEGIN_WRITE,
            Backend::Postgres => postgres::BEGIN_WRITE,
        };
        Ok(Tx {
            tx: self.pool.begin_with(begin).await?,
            backend: self.backend,
        })
    }

    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// The hot path of authentication: the key and its partner in one indexed lookup.
    /// No cache: a key revoked on any node is refused on the very next request.
    pub async fn key_by_hash(&self, public_key_hash: &[u8]) -> Result<Option<KeyRecord>> {
        let sql = format!(
            "SELECT k.id AS key_id, k.created_at AS key_created_at, k.revoked_at, k.secret_ciphertext, {PARTNER_COLUMNS} \
             FROM partner_keys k JOIN partners p ON p.id = k.partner_id WHERE k.public_key_hash = $1"
        );
        let Some(row) = sqlx::query(&sql)
            .bind(public_key_hash.to_vec())
            .fetch_optional(&self.pool)
            .await?
        else {
            return Ok(None);
        };
        Ok(Some(KeyRecord {
            key_id: row.try_get("key_id")?,
            created_at: row.try_get("key_created_at")?,
            revoked_at: row.try_get("revoked_at")?,
            secret_ciphertext: row.try_get("secret_ciphertext")?,
            partner: PartnerRow::from_row(&row)?.try_into()?,
        }))
    }

    /// Reads a link without changing it (the page a mail scanner may fetch).
    pub async fn link_by_hash(&self, token_hash: &[u8]) -> Result<Option<(Link, Partner)>> {
        let mut conn = self.pool.acquire().await?;
        link_with_partner(&mut conn, token_hash, "").await
    }

    pub async fn partner_by_code(&self, code_folded: &str) -> Result<Option<Partner>> {
        let mut conn = self.pool.acquire().await?;
        partner_by_code(&mut conn, code_folded).await
    }

    pub async fn meta(&self, name: &str) -> Result<Option<Vec<u8>>> {
        Ok(sqlx::query_scalar("SELECT value FROM meta WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Whether the database holds nothing yet (no partner, no meta value).
    pub async fn is_empty(&self) -> Result<bool> {
        let count: i64 = sqlx::query_scalar(
            "SELECT (SELECT COUNT(*) FROM partners) + (SELECT COUNT(*) FROM meta)",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(count == 0)
    }

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

    /// Forgets replay digests whose window has passed.
    pub async fn purge_replays(&self, now: i64) -> Result<u64> {
        let done = sqlx::query("DELETE FROM replays WHERE expires_at <= $1")
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}

async fn partner_by_code(
    conn: &mut sqlx::AnyConnection,
    code_folded: &str,
) -> Result<Option<Partner>> {
    let sql = format!("SELECT {PARTNER_COLUMNS} FROM partners p WHERE p.code_folded = $1");
    let row: Option<PartnerRow> = sqlx::query_as(&sql)
        .bind(code_folded)
        .fetch_optional(&mut *conn)
        .await?;
    row.map(Partner::try_from).transpose()
}

async fn link_with_partner(
    conn: &mut sqlx::AnyConnection,
    token_hash: &[u8],
    lock: &str,
) -> Result<Option<(Link, Partner)>> {
    let sql = format!("SELECT {LINK_COLUMNS} FROM links WHERE token_hash = $1");
    let link: Option<LinkRow> = sqlx::query_as(&sql)
        .bind(token_hash.to_vec())
        .fetch_optional(&mut *conn)
        .await?;
    let Some(link) = link else { return Ok(None) };
    let link = Link::try_from(link)?;
    let sql = format!("SELECT {PARTNER_COLUMNS} FROM partners p WHERE p.id = $1{lock}");
    let partner: PartnerRow = sqlx::query_as(&sql)
        .bind(&link.partner_id)
        .fetch_one(&mut *conn)
        .await?;
    Ok(Some((link, partner.try_into()?)))
}

/// One write transaction. Rolled back when dropped without [`Tx::commit`].
pub struct Tx {
    tx: sqlx::Transaction<'static, Any>,
    backend: Backend,
}

impl Tx {
    pub async fn commit(self) -> Result<()> {
        self.tx.commit().await?;
        Ok(())
    }

    /// The partner with this (case-folded) code. On PostgreSQL the row is locked until the
    /// transaction ends, so per-partner decisions (rate limits, link issue) serialise across
    /// nodes; SQLite's write transactions are serial already.
    pub async fn partner_by_code_for_update(
        &mut self,
        code_folded: &str,
    ) -> Result<Option<Partner>> {
        let lock = if self.backend == Backend::Postgres {
            " FOR UPDATE"
        } else {
            ""
        };
        let sql =
            format!("SELECT {PARTNER_COLUMNS} FROM partners p WHERE p.code_folded = $1{lock}");
        let row: Option<PartnerRow> = sqlx::query_as(&sql)
            .bind(code_folded)
            .fetch_optional(&mut *self.tx)
            .await?;
        row.map(Partner::try_from).transpose()
    }

    pub async fn insert_partner(
        &mut self,
        id: &str,
        code: &str,
        email: &str,
        now: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO partners (id, code, code_folded, email, status, created_at, updated_at) VALUES ($1, $2, $3, $4, 'pending', $5, $5)",
        )
        .bind(id)
        .bind(code)
        .bind(code.to_ascii_lowercase())
        .bind(email)
        .bind(now)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    pub async fn set_partner_status(
        &mut self,
        partner_id: &str,
        status: PartnerStatus,
        now: i64,
    ) -> Result<()> {
        sqlx::query("UPDATE partners SET status = $1, updated_at = $2 WHERE id = $3")
            .bind(status.as_str())
            .bind(now)
            .bind(partner_id)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    pub async fn set_allowed_ips(
        &mut self,
        partner_id: &str,
        allowed_ips: Option<&str>,
        now: i64,
    ) -> Result<()> {
        sqlx::query("UPDATE partners SET allowed_ips = $1, updated_at = $2 WHERE id = $3")
            .bind(allowed_ips)
            .bind(now)
            .bind(partner_id)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// The link with this token hash and its partner. On PostgreSQL the partner row is locked
    /// until the transaction ends, so two links of one partner cannot be redeemed at once.
    pub async fn link_by_hash_for_update(
        &mut self,
        token_hash: &[u8],
    ) -> Result<Option<(Link, Partner)>> {
        let lock = if self.backend == Backend::Postgres {
            " FOR UPDATE"
        } else {
            ""
        };
        link_with_partner(&mut self.tx, token_hash, lock).await
    }

    /// How many links were issued to the partner since `since` (the per-partner email limit).
    pub async fn links_issued_since(&mut self, partner_id: &str, since: i64) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM links WHERE partner_id = $1 AND created_at > $2",
        )
        .bind(partner_id)
        .bind(since)
        .fetch_one(&mut *self.tx)
        .await?)
    }

    /// The oldest link issued since `since`, to tell a rate-limited caller when to come back.
    pub async fn oldest_link_since(&mut self, partner_id: &str, since: i64) -> Result<Option<i64>> {
        Ok(sqlx::query_scalar(
            "SELECT MIN(created_at) FROM links WHERE partner_id = $1 AND created_at > $2",
        )
        .bind(partner_id)
        .bind(since)
        .fetch_one(&mut *self.tx)
        .await?)
    }

    /// Unused links of this purpose stop working (a newer one replaces them).
    pub async fn supersede_links(
        &mut self,
        partner_id: &str,
        purpose: LinkPurpose,
        now: i64,
    ) -> Result<u64> {
        let done = sqlx::query(
            "UPDATE links SET superseded_at = $1 WHERE partner_id = $2 AND purpose = $3 AND used_at IS NULL AND superseded_at IS NULL",
        )
        .bind(now)
        .bind(partner_id)
        .bind(purpose.as_str())
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected())
    }

    pub async fn insert_link(&mut self, link: &NewLink<'_>) -> Result<()> {
        sqlx::query(
            "INSERT INTO links (id, partner_id, purpose, token_hash, created_at, expires_at, requested_ip) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(link.id)
        .bind(link.partner_id)
        .bind(link.purpose.as_str())
        .bind(link.token_hash.to_vec())
        .bind(link.created_at)
        .bind(link.expires_at)
        .bind(link.requested_ip)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Consumes the link if, and only if, it is still usable: one conditional update, so of
    /// concurrent redemptions exactly one sees `true`.
    pub async fn consume_link(&mut self, link_id: &str, now: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE links SET used_at = $1 WHERE id = $2 AND used_at IS NULL AND superseded_at IS NULL AND expires_at > $1",
        )
        .bind(now)
        .bind(link_id)
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Revokes every active key of the partner; returns how many.
    pub async fn revoke_keys(&mut self, partner_id: &str, now: i64) -> Result<u64> {
        let done = sqlx::query(
            "UPDATE partner_keys SET revoked_at = $1 WHERE partner_id = $2 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(partner_id)
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected())
    }

    pub async fn insert_key(&mut self, key: &NewKey<'_>) -> Result<()> {
        sqlx::query(
            "INSERT INTO partner_keys (id, partner_id, public_key_hash, public_key_hint, secret_ciphertext, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(key.id)
        .bind(key.partner_id)
        .bind(key.public_key_hash.to_vec())
        .bind(key.public_key_hint)
        .bind(key.secret_ciphertext.to_vec())
        .bind(key.created_at)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Queues an email in this transaction (the transactional outbox).
    pub async fn enqueue_email(&mut self, email: &NewEmail<'_>) -> Result<()> {
        sqlx::query(
            "INSERT INTO outbox (id, recipient, kind, body_ciphertext, created_at, next_attempt_at) VALUES ($1, $2, $3, $4, $5, $5)",
        )
        .bind(email.id)
        .bind(email.recipient)
        .bind(email.kind)
        .bind(email.body_ciphertext.to_vec())
        .bind(email.created_at)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Records a signed request's digest; `false` if it was already acted on in its window.
    pub async fn record_replay(
        &mut self,
        digest: &[u8],
        now: i64,
        expires_at: i64,
    ) -> Result<bool> {
        sqlx::query("DELETE FROM replays WHERE digest = $1 AND expires_at <= $2")
            .bind(digest.to_vec())
            .bind(now)
            .execute(&mut *self.tx)
            .await?;
        let done = sqlx::query("INSERT INTO replays (digest, expires_at) VALUES ($1, $2) ON CONFLICT (digest) DO NOTHING")
            .bind(digest.to_vec())
            .bind(expires_at)
            .execute(&mut *self.tx)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn audit(
        &mut self,
        partner_id: Option<&str>,
        event: &str,
        ip: Option<&str>,
        detail: Option<&str>,
        now: i64,
    ) -> Result<()> {
        sqlx::query("INSERT INTO audit_events (id, partner_id, event, ip, detail, created_at) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(uuid::Uuid::now_v7().to_string())
            .bind(partner_id)
            .bind(event)
            .bind(ip)
            .bind(detail)
            .bind(now)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// Locks one due email until this transaction ends, skipping those other nodes hold (the
    /// PostgreSQL sender keeps the transaction open while it sends: if the node dies, the
    /// database drops the lock with the connection and another node sends the email at once).
    pub async fn lock_due_email(&mut self, now: i64) -> Result<Option<QueuedEmail>> {
        let sql = format!(
            "SELECT {QUEUED_EMAIL_COLUMNS} FROM outbox WHERE sent_at IS NULL AND dead_at IS NULL \
             AND next_attempt_at <= $1 ORDER BY next_attempt_at LIMIT 1 FOR UPDATE SKIP LOCKED"
        );
        Ok(sqlx::query_as(&sql)
            .bind(now)
            .fetch_optional(&mut *self.tx)
            .await?)
    }

    pub async fn mark_email_sent(&mut self, id: &str, now: i64) -> Result<()> {
        mark_email_sent(&mut *self.tx, id, now).await
    }

    pub async fn mark_email_failed(&mut self, id: &str, attempt: &FailedAttempt<'_>) -> Result<()> {
        mark_email_failed(&mut *self.tx, id, attempt).await
    }

    /// Stores `value` under `name` unless a value is there already (the first writer wins).
    pub async fn insert_meta(&mut self, name: &str, value: &[u8]) -> Result<()> {
        sqlx::query("INSERT INTO meta (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
            .bind(name)
            .bind(value.to_vec())
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }
}
