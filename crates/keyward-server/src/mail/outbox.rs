//! The transactional outbox. A request queues its email in the transaction that makes the
//! change the email announces, so a crash never loses it and a rollback never sends it. This
//! worker sends what is due, retries with exponential backoff while the mail server is down,
//! dead-letters a message after `max_attempts` so it never blocks the queue, and erases each
//! body once sent.
//!
//! Emails are claimed in batches before they are sent, so that of several nodes only one sends
//! each. A claim is a lease that its sender renews while it sends; the emails of a sender that
//! died are taken over once its lease runs out (at most [`OUTBOX_LEASE_MS`] late), and never
//! while it is alive: see [`crate::store::ClaimedBatch`].
//! `KEYWARD_SMTP_CONCURRENCY` senders run side by side, each claiming a few emails, sending
//! them over its own reused connection and recording what became of them in one transaction;
//! no sender waits for another, so the database's latency overlaps the others' sending. After a crash between sending and
//! recording, the emails of that batch may go out twice (at-least-once delivery, with the same
//! `Message-ID`); none is ever lost.

use super::{Mailer, RenderedEmail};
use crate::clock::{millis, real_millis, ClaimTime, Clock};
use crate::crypto::{outbox_aad, Cipher};
use crate::store::{ClaimedBatch, Delivery, FailedAttempt, QueuedEmail, Store, OUTBOX_LEASE_MS};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Emails one sender claims at once: fewer database round trips per email, and few enough
/// that a crash resends little.
const BATCH: i64 = 4;
/// How often the queue is looked at when nobody rang (another node's emails, retries).
const POLL: Duration = Duration::from_secs(1);
const MAX_BACKOFF_MS: i64 = 10 * 60_000;
/// How often a sender renews the lease on the emails it is sending: a third of the lease, so
/// two renewals may fail before another sender could take them over.
const RENEW_EVERY: Duration = Duration::from_millis(OUTBOX_LEASE_MS.unsigned_abs() / 3);

pub struct OutboxWorker {
    pub store: Store,
    pub cipher: Cipher,
    pub mailer: Arc<Mailer>,
    pub clock: Arc<dyn Clock>,
    pub wake: Arc<Notify>,
    pub max_attempts: u32,
    /// Emails sent at once (`KEYWARD_SMTP_CONCURRENCY`).
    pub concurrency: usize,
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// Delay before attempt `attempts + 1`: 2 s, 4 s, 8 s … capped at 10 minutes.
pub fn backoff_ms(attempts: i64) -> i64 {
    let exponent = u32::try_from(attempts.clamp(1, 20)).unwrap_or(20);
    (1000_i64 << exponent).min(MAX_BACKOFF_MS)
}

impl OutboxWorker {
    pub async fn run(self, stop: CancellationToken) {
        let senders = (0..self.concurrency.max(1)).map(|_| self.sender(&stop));
        futures::future::join_all(senders).await;
    }

    /// One sender: claims and sends until nothing is due, then waits to be woken (by a
    /// request that queued an email, or by another sender that found a full batch) or polls.
    async fn sender(&self, stop: &CancellationToken) {
        loop {
            let handled = match self.send_due().await {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(error = ?e, "could not read the outbox; will try again");
                    0
                }
            };
            if handled > 0 {
                if i64::try_from(handled).is_ok_and(|n| n == BATCH) {
                    // There may be more: wake another sender to share them.
                    self.wake.notify_one();
                }
                continue;
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(POLL) => {}
            }
        }
    }

    /// Claims a few due emails, sends them one after another (over this sender's connection)
    /// and records what became of them; returns how many were handled.
    pub async fn send_due(&self) -> Result<usize, crate::store::StoreError> {
        let Some(ClaimedBatch { emails, claim }) = self
            .store
            .claim_due_emails(ClaimTime::now(self.clock.as_ref()), BATCH)
            .await?
        else {
            return Ok(0);
        };
        let sending = async {
            let mut results: Vec<(QueuedEmail, Result<i64, Failure>)> =
                Vec::with_capacity(emails.len());
            for email in emails {
                results.push(self.deliver(email).await);
            }
            results
        };
        // The lease is renewed while the batch is sent, however slow the mail server, so no
        // other sender takes these emails over while this one is alive.
        let renewing = async {
            loop {
                tokio::time::sleep(RENEW_EVERY).await;
                let until = real_millis() + OUTBOX_LEASE_MS;
                if let Err(e) = claim.renew(&self.store, until).await {
                    tracing::warn!(error = %e, "could not renew the lease on emails being sent");
                }
            }
        };
        let results = tokio::select! {
            results = sending => results,
            () = renewing => unreachable!("renewing never ends"),
        };
        let deliveries: Vec<(&str, Delivery<'_>)> = results
            .iter()
            .map(|(email, result)| {
                let delivery = match result {
                    Ok(at) => Delivery::Sent { at: *at },
                    Err(failure) => Delivery::Failed(failure.as_attempt()),
                };
                (email.id.as_str(), delivery)
            })
            .collect();
        let handled = deliveries.len();
        claim.finish(&self.store, &deliveries).await?;
        Ok(handled)
    }

    /// Sends one email and measures it; returns when it was sent.
    async fn deliver(&self, email: QueuedEmail) -> (QueuedEmail, Result<i64, Failure>) {
        let started = std::time::Instant::now();
        let result = self.attempt(&email).await;
        self.metrics
            .email_attempted(started.elapsed(), result.is_ok());
        let sent_at = millis(self.clock.now());
        if result.is_ok() {
            self.metrics.email_delivered(sent_at - email.created_at);
        }
        (email, result.map(|()| sent_at))
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
                .send(&email.id, &email.recipient, &rendered)
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
            self.metrics.email_dead_lettered();
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
