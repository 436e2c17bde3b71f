//! Group commit on SQLite: every commit is on disk before its request is answered, and the
//! commits that end while one `fdatasync` runs share the next.
//!
//! With `synchronous = FULL`, each `COMMIT` synced the write-ahead log itself while it held the
//! database's only write lock, so every writer queued behind it waited out its fsync too
//! (~0.2 ms on the benchmark machine's disk, more on most). keyward's connections now run with
//! `synchronous = NORMAL`, under which a commit appends its frames to the log and returns, and
//! [`LogSync::synced`] waits until one thread of this process has synced the log *after* that
//! commit returned. The next writer starts as soon as the commit returns; the fsync runs beside
//! it, and one fsync covers every commit that returned before it began.
//!
//! Why this is as durable as `FULL` (`docs/decisions.md`, "Group commit on SQLite"):
//! - the frames of a commit are in the log file when `COMMIT` returns, and an fsync of the file
//!   begun after that puts them on disk (fsync covers the file, whatever descriptor it goes
//!   through);
//! - if a checkpoint moved them into the database file first, SQLite synced the log before
//!   moving them and the database file after (it does so at `NORMAL`); a log restarted over
//!   them only overwrote frames already in the synced database file;
//! - a log file that is gone was checkpointed, synced and deleted by the last connection to
//!   close it.

use super::{Result, StoreError};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use tokio::sync::oneshot;

/// Syncs one database's write-ahead log for the commits that ask, many at a time.
#[derive(Debug, Clone)]
pub(super) struct LogSync {
    requests: mpsc::Sender<Waiter>,
    counts: Arc<SyncCounts>,
}

/// What the log's syncs did so far, for `/metrics`: commits over syncs is how many commits
/// shared each fsync.
#[derive(Debug, Default)]
pub struct SyncCounts {
    /// The fsyncs that succeeded.
    pub syncs: AtomicU64,
    /// The commits each of them answered.
    pub commits: AtomicU64,
}

/// A commit that returned and waits to be on disk.
type Waiter = oneshot::Sender<Result<(), io::ErrorKind>>;

impl LogSync {
    /// Starts the thread that syncs the log of the database file `database`. The thread ends
    /// once every clone of the returned value is dropped.
    pub(super) fn start(database: &Path) -> io::Result<Self> {
        let mut log = database.as_os_str().to_owned();
        log.push("-wal");
        let log = PathBuf::from(log);
        let (requests, waiting) = mpsc::channel();
        let counts = Arc::<SyncCounts>::default();
        let counted = counts.clone();
        std::thread::Builder::new()
            .name("keyward-log-sync".to_owned())
            .spawn(move || sync_while_asked(&log, &waiting, &counted))?;
        Ok(Self { requests, counts })
    }

    pub(super) fn counts(&self) -> &SyncCounts {
        &self.counts
    }

    /// Waits until everything committed before this call is on disk.
    pub(super) async fn synced(&self) -> Result<()> {
        self.synced_io()
            .await
            .map_err(|e| StoreError::Unavailable(sqlx::Error::Io(e)))
    }

    /// [`Self::synced`], for callers outside the store's error type (the migrations).
    pub(super) async fn synced_io(&self) -> io::Result<()> {
        let (waiter, done) = oneshot::channel();
        let stopped = || io::Error::other("the thread that syncs SQLite's log has stopped");
        self.requests.send(waiter).map_err(|_| stopped())?;
        done.await.map_err(|_| stopped())?.map_err(io::Error::from)
    }
}

/// One round per wake-up: every commit that asked before the round began is answered by its
/// one fsync; those that ask meanwhile wait for the next round.
fn sync_while_asked(log: &Path, waiting: &mpsc::Receiver<Waiter>, counts: &SyncCounts) {
    while let Ok(first) = waiting.recv() {
        let round: Vec<Waiter> = std::iter::once(first).chain(waiting.try_iter()).collect();
        let synced = sync_file(log).map_err(|e| {
            // The commits of this round are in the database but may not be on disk: their
            // requests are answered 503 and the client retries (as after a lost connection).
            tracing::error!(error = %e, log = %log.display(), "could not sync SQLite's log");
            e.kind()
        });
        if synced.is_ok() {
            counts.syncs.fetch_add(1, Ordering::Relaxed);
            counts
                .commits
                .fetch_add(round.len() as u64, Ordering::Relaxed);
        }
        for waiter in round {
            let _ = waiter.send(synced);
        }
    }
}

fn sync_file(log: &Path) -> io::Result<()> {
    match std::fs::File::open(log) {
        Ok(file) => file.sync_data(),
        // Checkpointed into the database file and synced by the last connection to close.
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::LogSync;
    use std::sync::atomic::Ordering;

    #[tokio::test]
    async fn every_waiter_is_answered_and_a_missing_log_is_already_synced() {
        let dir = tempfile::tempdir().unwrap();
        let database = dir.path().join("keyward.db");
        let sync = LogSync::start(&database).unwrap();
        // No log yet: nothing to sync.
        sync.synced().await.unwrap();
        std::fs::write(dir.path().join("keyward.db-wal"), b"frames").unwrap();
        let waits: Vec<_> = (0..50)
            .map(|_| {
                let sync = sync.clone();
                tokio::spawn(async move { sync.synced().await })
            })
            .collect();
        for wait in waits {
            wait.await.unwrap().unwrap();
        }
        let counts = sync.counts();
        assert_eq!(counts.commits.load(Ordering::Relaxed), 51);
        let syncs = counts.syncs.load(Ordering::Relaxed);
        assert!((2..=51).contains(&syncs), "{syncs} syncs");
    }
}
