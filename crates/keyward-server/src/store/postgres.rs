//! What is particular to the PostgreSQL backend (several nodes on one database).

use sqlx::migrate::Migrator;

/// sqlx takes a PostgreSQL advisory lock while it migrates, so nodes that start together
/// apply each migration once.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

pub const BEGIN_WRITE: &str = "BEGIN";

/// The row is locked until the transaction ends, so per-partner decisions (rate limits, link
/// issue, redemption) serialise across nodes.
pub const LOCK_ROW: &str = " FOR UPDATE";

/// A transaction-scoped advisory lock on a recipient address: concurrent transactions on
/// several nodes that count and queue emails to one address take their turn.
pub const LOCK_RECIPIENT: &str = "SELECT pg_advisory_xact_lock(hashtext($1))";
