//! What is particular to the embedded SQLite backend.

use sqlx::migrate::Migrator;

pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

/// Set on every connection. WAL lets readers run beside the single writer. `synchronous =
/// NORMAL` lets a commit return before the log is synced; every write is answered only once
/// the log is synced after it (`group_commit.rs`), so nothing answered is lost on a crash or a
/// power cut, and the commits that end together share one fsync.
/// `busy_timeout` bounds how long a write waits for another process's (an operator command's)
/// write lock before the request is answered 503 `unavailable`. `cache_size` keeps each pooled
/// connection's page cache to 512 KiB (SQLite's default is 2 MB each): the hot keys live in the
/// key cache and the operating system caches the file, so eight full page caches were memory
/// spent twice on a large store.
pub const CONNECTION_PRAGMAS: &str = "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
     PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 2000; PRAGMA cache_size = -512;";

/// How long a write transaction waits for this node's previous one before giving up (503).
pub const WRITE_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Write transactions take the write lock up front. A deferred `BEGIN` that reads and then
/// writes fails with SQLITE_BUSY when another writer committed in between, whatever the
/// busy timeout, because its snapshot is stale.
pub const BEGIN_WRITE: &str = "BEGIN IMMEDIATE";

/// No row locks: a write transaction (`BEGIN IMMEDIATE`) already holds the whole database.
pub const LOCK_ROW: &str = "";

/// Adds `create if missing` to the URL so that a fresh machine starts with no setup.
pub fn connect_url(url: &str) -> String {
    if url.contains("mode=") {
        url.to_owned()
    } else if url.contains('?') {
        format!("{url}&mode=rwc")
    } else {
        format!("{url}?mode=rwc")
    }
}

/// The database file of a `sqlite://` URL, to create its folder.
pub fn file_path(url: &str) -> Option<std::path::PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next()?;
    (!path.is_empty() && path != ":memory:").then(|| path.into())
}

/// Only the service's user may read the database: it holds partners' emails, hashed keys and
/// encrypted secrets. SQLite creates its files with the process's umask; narrowed here to
/// 0600 for the file and its `-wal` and `-shm` companions, whichever exist.
pub fn restrict_files(database: &std::path::Path) -> std::io::Result<()> {
    #[cfg(unix)]
    for suffix in ["", "-wal", "-shm"] {
        let mut name = database.as_os_str().to_owned();
        name.push(suffix);
        let path = std::path::PathBuf::from(name);
        if path.exists() {
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        }
    }
    Ok(())
}
