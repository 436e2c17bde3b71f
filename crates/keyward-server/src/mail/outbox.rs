//! The transactional outbox. A request queues its email in the transaction that makes the
//! change the email announces, so a crash never loses it and a rollback never sends it. This
//! worker sends what is due, retries with exponential backoff while the mail server is down,
//! dead-letters a message after `max_attempts` so it never blocks the queue, and erases each
//! body once sent.
//!
//! Each email is claimed before it is sent, so that of several nodes only one sends it; how a
//! claim is held (a lease on SQLite, a row lock on PostgreSQL) and what becomes of the claims of
//! a node that died is the store's business: see [`crate::store::ClaimedEmail`]. After a crash
//! between sending and recording, an email may go out twice (at-least-once delivery); it is
//! never lost.

use super::{Mailer, RenderedEmail};
use crate::clock::{millis, Clock};
use crate::crypto::{outbox_aad, Cipher};
use crate::store::{FailedAttempt, QueuedEmail, Store};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Emails sent before the queue is looked at again from the top.
const BATCH: usize = 16;
/// How often the queue is looked at when nobody rang (another node's emails, retries).
const POLL: Duration = Duration::from_secs(1);
const MAX_BACKOFF_MS: i64 = 10 * 60_000;

pub struct OutboxWorker {
    pub store: Store,
    pub cipher: Cipher,
    pub mailer: Arc<Mailer>,
    pub clock: Arc<dyn Clock>,
    pub wake: Arc<Notify>,
    pub max_attempts: u32,
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// Delay before attempt `attempts + 1`: 2 s, 4 s, 8 s … capped at 10 minutes.
pub fn backoff_ms(attempts: i64) -> i64 {
    let exponent = u32::try_from(attempts.clamp(1, 20)).unwrap_or(20);
    (1000_i64 << exponent).min(MAX_BACKOFF_MS)
}

impl OutboxWorker {
    pub async fn run(self, stop: CancellationToken) {
        match self.store.release_stale_claims().await {
            Ok(0) => {}
            Ok(released) => {
                tracing::info!(released, "released emails claimed before an unclean stop")
            }
            Err(e) => tracing::warn!(error = %e, "could not release stale outbox claims"),
        }
        loop {
            let sent_any = match self.send_due().await {
                Ok(n) => n > 0,
                Err(e) => {
                    tracing::warn!(error = %e, "could not read the outbox; will try again");
                    false
                }
            };
            if sent_any {
                continue; // there may be more
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(POLL) => {}
            }
        }
    }

    /// Sends up to one batch of due emails; returns how many were handled.
    pub async fn send_due(&self) -> Result<usize, crate::store::StoreError> {
        let mut handled = 0;
        while handled < BATCH {
            let Some(claimed) = self.store.claim_due_email(millis(self.clock.now())).await? else {
                break;
            };
            match self.attempt(&claimed.email).await {
                Ok(()) => {
                    claimed
                        .mark_sent(&self.store, millis(self.clock.now()))
                        .await?;
                    self.metrics.email_sent();
                }
                Err(failure) => {
                    claimed
                        .mark_failed(&self.store, &failure.as_attempt())
                        .await?
                }
            }
            handled += 1;
        }
        Ok(handled)
    }

    /// Decrypts and sends one email; on failure, says when to try again or that it is dead.
    #[tracing::instrument(skip_all, fields(email_id = %email.id, kind = %email.kind, attempt = email.attempts + 1))]
    async fn attempt(&self, email: &QueuedEmail) -> Result<(), Failure> {
        let rendered = email
            .body_ciphertext
            .as_deref()
            .ok_or("the body is missing")
            .and_then(|c| {
                self.cipher
                    .decrypt(c, &outbox_aad(&email.id))
                    .map_err(|_| "the body does not decrypt under this master key")
            })
            .and_then(|plain| {
                serde_json::from_slice::<RenderedEmail>(&plain)
                    .map_err(|_| "the body is not a rendered email")
            });
        let result = match rendered {
            Ok(rendered) => self
                .mailer
                .send(&email.recipient, &rendered)
                .await
                .map_err(|e| (e.is_permanent(), e.to_string())),
            Err(why) => Err((true, why.to_owned())),
        };
        let (permanent, error) = match result {
            Ok(()) => {
                tracing::info!("email sent");
                return Ok(());
            }
            Err(failure) => failure,
        };
        let now = millis(self.clock.now());
        let attempts = email.attempts + 1;
        let dead = permanent || attempts >= i64::from(self.max_attempts);
        let failure = Failure {
            attempts,
            next_attempt_at: now + backoff_ms(attempts),
            dead_at: dead.then_some(now),
            error,
        };
        if dead {
            tracing::error!(error = %failure.error, "email dead-lettered: see `keyward outbox dead`");
        } else {
            tracing::warn!(error = %failure.error, retry_in_ms = failure.next_attempt_at - now, "email not sent; will retry");
        }
        Err(failure)
    }
}

/// A failed attempt, to record.
struct Failure {
    attempts: i64,
    next_attempt_at: i64,
    dead_at: Option<i64>,
    error: String,
}

impl Failure {
    fn as_attempt(&self) -> FailedAttempt<'_> {
        FailedAttempt {
            attempts: self.attempts,
            next_attempt_at: self.next_attempt_at,
            dead_at: self.dead_at,
            error: &self.error,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff_ms(1), 2000);
        assert_eq!(backoff_ms(2), 4000);
        assert_eq!(backoff_ms(30), MAX_BACKOFF_MS);
    }
}
