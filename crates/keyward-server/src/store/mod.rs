//! Storage. One SQL implementation over sqlx's `Any` driver serves SQLite (embedded, one
//! node) and PostgreSQL (several nodes). What differs between them lives in `sqlite.rs` and
//! `postgres.rs` (how a write transaction begins, the row-lock clause, how one recipient is
//! locked) and in the few queries that name their backend (`outbox.rs` skips locked rows on
//! PostgreSQL; `operators.rs` reads a JSON array of last uses with each one's own JSON
//! function), chosen through [`Backend`]; nothing outside `store/` branches on the backend.
//! Every request's changes happen in one [`Tx`]; its functions take `&mut self`.
//!
//! Secrets never reach this layer in the clear: public keys and link tokens arrive as SHA-256
//! hashes, secret keys and email bodies as AES-256-GCM ciphertexts.

mod bulk;
mod console;
mod group_commit;
pub use group_commit::SyncCounts;
mod later;
mod leaks;
mod operators;
mod outbox;
pub use bulk::ImportedPartner;
pub use console::{ConsoleLogin, ConsoleSession, LOGIN_TTL_MS};
pub use leaks::UnhashedKey;
pub use operators::{
    AuditFilter, AuditRecord, KeyInfo, LinkInfo, PartnerFilter, PartnerSummary, UnusedKeys,
};
pub use outbox::{Claim, ClaimedBatch, Delivery, OUTBOX_LEASE_MS};
pub mod postgres;
mod records;
mod reminders;
pub use reminders::{DueReminder, KeyTimesRow};
mod rotation;
mod service_tokens;
pub use rotation::{Encrypted, EncryptedValue};
pub use service_tokens::{LiveServiceToken, ServiceTokenRecord};
pub mod sqlite;
mod tx;
mod webhooks;
pub use webhooks::{
    Attempt, DeadDelivery, DueDelivery, Event, WebhookEndpoint, EVENT_TYPES, WEBHOOK_LEASE_MS,
};

pub use records::*;
pub use tx::{Tx, Written};

use keyward_core::{KeyHash, PartnerCode, PartnerId, TokenHash};
use records::{PartnerRow, LINK_COLUMNS, PARTNER_COLUMNS};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Executor, FromRow, Row};
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
            sqlx::Error::Database(db) if db.code().is_some_and(|c| passing(&c)) => {
                StoreError::Unavailable(e)
            }
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::WorkerCrashed => StoreError::Unavailable(e),
            _ => StoreError::Other(e),
        }
    }
}

/// Database errors that say "not now" rather than "never": the request is answered 503
/// `unavailable` (try again) and nothing was written.
fn passing(code: &str) -> bool {
    match code.parse::<i32>() {
        // SQLite (primary code in the low byte): BUSY and LOCKED (another writer held on past
        // the busy timeout), IOERR, FULL (the disk is full).
        Ok(sqlite) => matches!(sqlite & 0xff, 5 | 6 | 10 | 13),
        // PostgreSQL SQLSTATE: 08 connection exceptions, 53 insufficient resources (disk
        // full, out of memory, too many connections), 57P operator intervention (the server
        // shutting down or starting up).
        Err(_) => code.starts_with("08") || code.starts_with("53") || code.starts_with("57P"),
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Opens all of a SQLite pool's connections now, from the thread that makes the store (see
/// [`pool_options`]): each is a thread, started by whoever opens it.
async fn open_every_connection(pool: &sqlx::AnyPool, count: u32) -> Result<()> {
    let opened = futures::future::try_join_all((0..count).map(|_| pool.acquire())).await?;
    drop(opened);
    Ok(())
}

/// A pool of at most `max_connections` to one database; a caller waits at most `wait` for one
/// of them, then is answered 503 `unavailable`.
fn pool_options(backend: Backend, max_connections: u32, wait: Duration) -> AnyPoolOptions {
    let options = AnyPoolOptions::new();
    let options = match backend {
        // A SQLite connection is a thread of this process, opened where the pool is made
        // (`Store::connect`) and kept: recycled, it would be opened again from a request
        // thread, and a thread started there keeps that thread's CPU when request threads are
        // pinned (`keyward`'s `src/runtime.rs`).
        Backend::Sqlite => options.idle_timeout(None).max_lifetime(None),
        Backend::Postgres => options,
    };
    options
        .max_connections(max_connections)
        // While the database is away a request waits this long for a connection, then is
        // answered 503 unavailable (a client retries sooner than a proxy times out).
        .acquire_timeout(wait)
        // A SQLite connection is a thread of this process: it cannot be lost the way a
        // network connection to PostgreSQL can (a restart, a dropped link), so it is not
        // pinged before each use. That ping was a round trip to the connection's thread
        // before every query, and under the write lock before every write transaction.
        .test_before_acquire(backend != Backend::Sqlite)
        // A SQLite connection whose COMMIT failed (the disk full) can be left thinking it
        // is still in a transaction (SQLite rolled it back; sqlx's depth did not follow),
        // and every `BEGIN` on it then fails. Such a connection is closed rather than
        // handed out again.
        .before_acquire(move |conn, _meta| {
            Box::pin(async move {
                Ok(backend != Backend::Sqlite || !sqlx::Connection::is_in_transaction(conn))
            })
        })
        .after_connect(move |conn, _meta| {
            Box::pin(async move {
                if backend == Backend::Sqlite {
                    conn.execute(sqlite::CONNECTION_PRAGMAS).await?;
                }
                Ok(())
            })
        })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    fn begin_write(self) -> &'static str {
        match self {
            Backend::Sqlite => sqlite::BEGIN_WRITE,
            Backend::Postgres => postgres::BEGIN_WRITE,
        }
    }

    /// A statement that takes a lock on one recipient address until the transaction ends, if
    /// the backend needs one (SQLite's write transactions are serial already).
    fn lock_recipient(self) -> Option<&'static str> {
        match self {
            Backend::Sqlite => None,
            Backend::Postgres => Some(postgres::LOCK_RECIPIENT),
        }
    }

    /// Appended to a `SELECT` of a row that the transaction goes on to decide about.
    fn lock_row(self) -> &'static str {
        match self {
            Backend::Sqlite => sqlite::LOCK_ROW,
            Backend::Postgres => postgres::LOCK_ROW,
        }
    }
}

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// Where writes go. SQLite has one writer at a time: this node's write transactions, and
    /// its writes outside one ([`Store::writer`]), wait their turn for this pool's only
    /// connection, for a bounded time, instead of each holding a reader's connection while
    /// SQLite makes it wait. On PostgreSQL, whose writers do not exclude each other, it is
    /// `pool` itself.
    writes: AnyPool,
    /// A SQLite file's log, synced once for the commits that end together (`group_commit.rs`).
    log_sync: Option<group_commit::LogSync>,
    /// The enabled webhook endpoints as this node last read them (`webhooks.rs`).
    endpoint_view: std::sync::Arc<webhooks::EndpointView>,
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
    /// (default: 8 for SQLite, 16 for PostgreSQL), and on SQLite one more, for writes. A
    /// SQLite file and its folder are created if missing.
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
        let pool = pool_options(backend, max_connections, Duration::from_secs(3))
            .connect_with(options.clone())
            .await?;
        if backend == Backend::Sqlite {
            open_every_connection(&pool, max_connections).await?;
        }
        let writes = match backend {
            // One connection for every write of this node, taken in turn (first come, first
            // served) for at most `WRITE_WAIT`: the turn to write. Its page cache stays valid
            // from one write to the next, because no other connection of this node writes; when
            // writes took turns over the whole pool, each found its connection's cache outdated
            // by the others' commits and read its pages again (`docs/decisions.md`, "One
            // writing connection on SQLite").
            Backend::Sqlite => {
                pool_options(backend, 1, sqlite::WRITE_WAIT)
                    .connect_with(options)
                    .await?
            }
            Backend::Postgres => pool.clone(),
        };
        let log_sync = match sqlite::file_path(&url) {
            Some(file) => {
                sqlite::restrict_files(&file)
                    .map_err(|e| StoreError::Unavailable(sqlx::Error::Io(e)))?;
                Some(
                    group_commit::LogSync::start(&file)
                        .map_err(|e| StoreError::Unavailable(sqlx::Error::Io(e)))?,
                )
            }
            None => None,
        };
        Ok(Self {
            pool,
            writes,
            backend,
            log_sync,
            endpoint_view: std::sync::Arc::default(),
        })
    }

    /// Lets this node's event transactions use a view of the webhook endpoints read at most
    /// `bound` ago (`KEYWARD_KEY_CACHE_MS`, which adding an endpoint waits out) instead of
    /// reading them every time. Without it (a zero bound) they read them every time.
    #[must_use]
    pub fn with_endpoint_view(self, bound: Duration) -> Self {
        Self {
            endpoint_view: std::sync::Arc::new(webhooks::EndpointView::new(bound)),
            ..self
        }
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The syncs of a SQLite file's log so far (`group_commit.rs`); `None` on PostgreSQL.
    pub fn log_sync_counts(&self) -> Option<&SyncCounts> {
        self.log_sync.as_ref().map(group_commit::LogSync::counts)
    }

    /// Applies the embedded migrations of this backend (idempotent; safe for concurrent nodes).
    pub async fn migrate(&self) -> Result<(), sqlx::migrate::MigrateError> {
        match self.backend {
            Backend::Sqlite => sqlite::MIGRATOR.run(&self.pool).await?,
            Backend::Postgres => postgres::MIGRATOR.run(&self.pool).await?,
        }
        if let Some(log_sync) = &self.log_sync {
            log_sync
                .synced_io()
                .await
                .map_err(|e| sqlx::migrate::MigrateError::Execute(sqlx::Error::Io(e)))?;
        }
        Ok(())
    }

    pub async fn close(&self) {
        self.writes.close().await;
        self.pool.close().await;
    }

    /// A connection for writes outside a [`Tx`] (each statement its own transaction). On
    /// SQLite it holds this node's turn to write, as a transaction does: a statement that met
    /// another writer's lock would otherwise sleep in SQLite's busy handler (1 ms, then 2, 5,
    /// 10 …) while the writers queued for their turn wait behind it.
    pub(super) async fn writer(&self) -> Result<Writer> {
        Ok(Writer {
            conn: self.writes.acquire().await?,
            log_sync: self.log_sync.clone(),
        })
    }

    /// Begins a write transaction. Dropping it without [`Tx::commit`] rolls it back.
    pub async fn begin(&self) -> Result<Tx> {
        Ok(Tx {
            log_sync: self.log_sync.clone(),
            written: tx::Written::default(),
            created_partner: None,
            batch: later::Batch::default(),
            endpoint_view: self.endpoint_view.clone(),
            changed_endpoints: false,
            code_known_free: None,
            tx: self.writes.begin_with(self.backend.begin_write()).await?,
            backend: self.backend,
        })
    }

    /// Whether the database answers, within a second (`/readyz` must answer fast).
    pub async fn ping(&self) -> Result<()> {
        let ping = sqlx::query("SELECT 1").execute(&self.pool);
        match tokio::time::timeout(Duration::from_secs(1), ping).await {
            Ok(done) => done.map(drop).map_err(Into::into),
            Err(_) => Err(StoreError::Unavailable(sqlx::Error::PoolTimedOut)),
        }
    }

    /// The hot path of authentication: the key and its partner in one indexed lookup. Callers
    /// go through the node's key cache (`flows/key_cache.rs`), which bounds how stale a view
    /// may be; changes that must hold everywhere wait that bound out.
    pub async fn key_by_hash(&self, public_key_hash: &KeyHash) -> Result<Option<KeyRecord>> {
        self.key_where("k.public_key_hash", public_key_hash).await
    }

    /// The pair whose secret key has this hash (a leaked secret, SPEC §9.2).
    pub async fn key_by_secret_hash(&self, secret_key_hash: &KeyHash) -> Result<Option<KeyRecord>> {
        self.key_where("k.secret_key_hash", secret_key_hash).await
    }

    /// The keys with these public-key hashes, with their partners, in one query: the key
    /// cache reads ahead many keys at once this way (`flows/key_cache.rs`). A hash that
    /// matches no key is absent from the answer. The list is padded to a power of two (its
    /// last hash repeated), so each connection prepares a few shapes of this query, not one
    /// per length.
    pub async fn keys_by_hashes(&self, hashes: &[KeyHash]) -> Result<Vec<(KeyHash, KeyRecord)>> {
        let Some(last) = hashes.last() else {
            return Ok(Vec::new());
        };
        let width = hashes.len().next_power_of_two();
        let placeholders = (1..=width)
            .map(|i| format!("${i}"))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "SELECT k.public_key_hash, {KEY_COLUMNS}, {PARTNER_COLUMNS} \
             FROM partner_keys k JOIN partners p ON p.id = k.partner_id \
             WHERE k.public_key_hash IN ({placeholders})"
        );
        let query = hashes
            .iter()
            .chain(std::iter::repeat_n(last, width - hashes.len()))
            .fold(sqlx::query(&sql), |query, hash| {
                query.bind(hash.as_bytes().to_vec())
            });
        let rows = query.fetch_all(&self.pool).await?;
        rows.iter()
            .map(|row| {
                let hash: Vec<u8> = row.try_get("public_key_hash")?;
                let hash = <[u8; 32]>::try_from(hash)
                    .map_err(|_| StoreError::Corrupt("a public key hash is not 32 bytes".into()))?;
                Ok((KeyHash::from_bytes(hash), key_record(row)?))
            })
            .collect()
    }

    /// `column` is one of the two fixed hash columns above, never input.
    async fn key_where(&self, column: &str, hash: &KeyHash) -> Result<Option<KeyRecord>> {
        let sql = format!(
            "SELECT {KEY_COLUMNS}, {PARTNER_COLUMNS} \
             FROM partner_keys k JOIN partners p ON p.id = k.partner_id \
             WHERE {column} = $1"
        );
        let row = sqlx::query(&sql)
            .bind(hash.as_bytes().to_vec())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(key_record).transpose()
    }

    /// Whether any usable legacy key is held (SPEC §10.2): one probe of a partial index.
    pub async fn legacy_keys_held(&self) -> Result<bool> {
        let held: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM partner_keys WHERE legacy = 1 AND revoked_at IS NULL LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(held.is_some())
    }

    /// Reads a link without changing it (the page a mail scanner may fetch).
    pub async fn link_by_hash(&self, token_hash: &TokenHash) -> Result<Option<(Link, Partner)>> {
        let mut conn = self.pool.acquire().await?;
        link_with_partner(&mut conn, token_hash, "").await
    }

    pub async fn partner_by_code(&self, code: &PartnerCode) -> Result<Option<Partner>> {
        let mut conn = self.pool.acquire().await?;
        partner_where(&mut conn, "p.code_folded", &code.folded(), "").await
    }

    /// The partner's latest audit events, newest first.
    pub async fn audit_events(
        &self,
        partner_id: &PartnerId,
        limit: i64,
    ) -> Result<Vec<AuditEvent>> {
        Ok(sqlx::query_as(
            "SELECT event, ip, detail, created_at FROM audit_events WHERE partner_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2",
        )
        .bind(partner_id.as_str())
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
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

    /// Records a signed request's digest on its own, outside a transaction (the single-use
    /// routes, SPEC §7): `false` if it was already acted on in its window, on any node. One
    /// statement, one round trip (a transaction around it took four: `BEGIN`, a `DELETE` of
    /// an expired digest, the `INSERT`, `COMMIT`); on SQLite it takes the writer's turn and
    /// is answered once the log is synced, as a transaction is.
    pub async fn record_replay(
        &self,
        digest: &[u8],
        now: chrono::DateTime<chrono::Utc>,
        expires_at: chrono::DateTime<chrono::Utc>,
    ) -> Result<bool> {
        let mut writer = self.writer().await?;
        let done = tx::record_replay_query(digest, now, expires_at)
            .execute(&mut *writer)
            .await?;
        writer.done().await?;
        Ok(done.rows_affected() == 1)
    }

    /// Forgets replay digests whose window has passed.
    pub async fn purge_replays(&self, now: i64) -> Result<u64> {
        let mut writer = self.writer().await?;
        let done = sqlx::query("DELETE FROM replays WHERE expires_at <= $1")
            .bind(now)
            .execute(&mut *writer)
            .await?;
        writer.done().await?;
        Ok(done.rows_affected())
    }
}

/// The connection for writes, held (on SQLite: this node's turn to write) until
/// [`Writer::done`]; see [`Store::writer`].
#[must_use = "a write is acknowledged only once `done` says it is on disk"]
pub(super) struct Writer {
    conn: sqlx::pool::PoolConnection<sqlx::Any>,
    log_sync: Option<group_commit::LogSync>,
}

impl Writer {
    /// Gives the connection back (on SQLite: the turn to write), then waits until this
    /// connection's writes are on disk (SQLite's group commit, `group_commit.rs`).
    pub(super) async fn done(self) -> Result<()> {
        let Self { conn, log_sync } = self;
        drop(conn);
        match log_sync {
            Some(log_sync) => log_sync.synced().await,
            None => Ok(()),
        }
    }
}

impl std::ops::Deref for Writer {
    type Target = sqlx::AnyConnection;
    fn deref(&self) -> &Self::Target {
        &self.conn
    }
}

impl std::ops::DerefMut for Writer {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.conn
    }
}

/// The partner whose `column` (`p.id` or `p.code_folded`) is `value`, with `lock` appended.
pub(super) async fn partner_where(
    conn: &mut sqlx::AnyConnection,
    column: &str,
    value: &str,
    lock: &str,
) -> Result<Option<Partner>> {
    let sql = format!("SELECT {PARTNER_COLUMNS} FROM partners p WHERE {column} = $1{lock}");
    let row: Option<PartnerRow> = sqlx::query_as(&sql)
        .bind(value)
        .fetch_optional(&mut *conn)
        .await?;
    row.map(Partner::try_from).transpose()
}

pub(super) async fn link_with_partner(
    conn: &mut sqlx::AnyConnection,
    token_hash: &TokenHash,
    lock: &str,
) -> Result<Option<(Link, Partner)>> {
    let sql = format!("SELECT {LINK_COLUMNS} FROM links WHERE token_hash = $1");
    let link: Option<LinkRow> = sqlx::query_as(&sql)
        .bind(token_hash.as_bytes().to_vec())
        .fetch_optional(&mut *conn)
        .await?;
    let Some(link) = link else { return Ok(None) };
    let link = Link::try_from(link)?;
    let partner = partner_where(conn, "p.id", link.partner_id.as_str(), lock)
        .await?
        .ok_or_else(|| StoreError::Corrupt(format!("link {} has no partner", link.id)))?;
    Ok(Some((link, partner)))
}

/// What [`key_record`] reads of a key (with [`PARTNER_COLUMNS`] of its partner).
const KEY_COLUMNS: &str = "k.id AS key_id, k.created_at AS key_created_at, k.revoked_at, \
    k.expires_at AS key_expires_at, k.secret_ciphertext, k.kind, k.mode, k.name AS key_name, \
    k.scopes, k.valid_until, k.legacy, k.last_used_at";

fn key_record(row: &AnyRow) -> Result<KeyRecord> {
    Ok(KeyRecord {
        key_id: row.try_get("key_id")?,
        created_at: row.try_get("key_created_at")?,
        revoked_at: row.try_get("revoked_at")?,
        expires_at: row.try_get("key_expires_at")?,
        secret_ciphertext: row.try_get("secret_ciphertext")?,
        partner: PartnerRow::from_row(row)?.try_into()?,
        class: KeyClass::from_columns(
            row.try_get("kind")?,
            row.try_get("key_name")?,
            row.try_get("scopes")?,
            row.try_get("valid_until")?,
        )?,
        mode: records::parse_mode(row.try_get("mode")?)?,
        legacy: row.try_get::<i64, _>("legacy")? != 0,
        last_used_at: row.try_get("last_used_at")?,
    })
}
