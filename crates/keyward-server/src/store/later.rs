//! Writes a transaction sends later: those whose outcome nothing in the transaction waits on
//! (inserts of audit entries, links, queued emails and webhook deliveries; the outbox's marks
//! of emails sent or failed). On SQLite each statement is a hand-off to the connection's
//! thread and back, two context switches that cost more than the statement itself; so these
//! writes wait in a [`Batch`] and go to that thread together, as one multi-statement query,
//! just before the transaction's next statement or its commit. PostgreSQL takes one statement
//! with parameters at a time: there a queued write is sent at once.
//!
//! The order of the statements is kept, and every other statement of the transaction goes
//! through [`Tx::conn`], which sends the batch first: the transaction reads its own writes as
//! before. A queued write's error (none is expected: every queued row has a fresh random key)
//! surfaces at that next statement or at the commit, and the transaction is rolled back.

use super::{Backend, Result, StoreError, Tx};
use sqlx::any::AnyArguments;
use sqlx::{Any, Arguments, Encode, Type};

/// Queued statements, their `$n` placeholders numbered on from the statements before them,
/// and all their parameters in order.
#[derive(Default)]
pub(super) struct Batch {
    sql: String,
    args: AnyArguments<'static>,
    /// The first parameter that could not be encoded (none of ours can fail; reported when
    /// the batch is sent rather than lost).
    error: Option<sqlx::error::BoxDynError>,
}

impl Batch {
    fn is_empty(&self) -> bool {
        self.sql.is_empty()
    }

    /// Appends `sql`, whose parameters are `$1` … `$n`, numbered on after the parameters
    /// already queued.
    fn push(&mut self, sql: &str) {
        if !self.sql.is_empty() {
            self.sql.push_str(";\n");
        }
        renumber_into(&mut self.sql, sql, self.args.len());
    }
}

/// Copies `sql` into `out` with each `$n` written as `$(n + offset)`. Only our own statements
/// come here, and none of them has a `$` anywhere but in a placeholder.
fn renumber_into(out: &mut String, sql: &str, offset: usize) {
    let mut rest = sql;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..=at]);
        rest = &rest[at + 1..];
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        match rest[..digits].parse::<usize>() {
            Ok(n) => out.push_str(&(n + offset).to_string()),
            Err(_) => out.push_str(&rest[..digits]),
        }
        rest = &rest[digits..];
    }
    out.push_str(rest);
}

/// One queued statement, taking its parameters in order; [`Later::queue`] ends it.
#[must_use = "a queued write is only sent once `queue` is awaited"]
pub(super) struct Later<'t> {
    tx: &'t mut Tx,
}

impl Later<'_> {
    pub(super) fn bind<T>(self, value: T) -> Self
    where
        T: 'static + Encode<'static, Any> + Type<Any> + Send,
    {
        let batch = &mut self.tx.batch;
        if batch.error.is_none() {
            if let Err(e) = batch.args.add(value) {
                batch.error = Some(e);
            }
        }
        self
    }

    /// Leaves the statement in the batch (SQLite), or sends it now (PostgreSQL).
    pub(super) async fn queue(self) -> Result<()> {
        match self.tx.backend {
            Backend::Sqlite => Ok(()),
            Backend::Postgres => self.tx.send_batch().await,
        }
    }
}

impl Tx {
    /// Queues `sql` (parameters `$1` … `$n`, bound with [`Later::bind`]) to be sent with the
    /// transaction's next statement.
    pub(super) fn later(&mut self, sql: &str) -> Later<'_> {
        self.batch.push(sql);
        Later { tx: self }
    }

    /// The transaction's connection for its next statement, once the writes queued before it
    /// are sent.
    pub(super) async fn conn(&mut self) -> Result<&mut sqlx::AnyConnection> {
        self.send_batch().await?;
        Ok(&mut self.tx)
    }

    /// Sends the queued writes, if any, as one query.
    pub(super) async fn send_batch(&mut self) -> Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let Batch { sql, args, error } = std::mem::take(&mut self.batch);
        if let Some(e) = error {
            return Err(StoreError::Other(sqlx::Error::Encode(e)));
        }
        match sqlx::query_with(&sql, args).execute(&mut *self.tx).await {
            Ok(_) => Ok(()),
            // Nothing queued expects a conflict (every queued row has a fresh random key):
            // one here is not the conflict the caller's next statement may be waiting for.
            Err(e) => Err(match StoreError::from(e) {
                StoreError::Conflict => StoreError::Corrupt(
                    "a queued insert met a row with the same unique value".to_owned(),
                ),
                other => other,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::renumber_into;

    #[test]
    fn placeholders_are_numbered_on_after_the_queued_parameters() {
        let mut out = String::new();
        renumber_into(
            &mut out,
            "INSERT INTO t (a, b, c) VALUES ($1, $2, $2 + $10)",
            7,
        );
        assert_eq!(out, "INSERT INTO t (a, b, c) VALUES ($8, $9, $9 + $17)");
        let mut out = String::new();
        renumber_into(&mut out, "SELECT $1", 0);
        assert_eq!(out, "SELECT $1");
        let mut out = String::new();
        renumber_into(&mut out, "a $ b $", 3);
        assert_eq!(out, "a $ b $");
    }
}
