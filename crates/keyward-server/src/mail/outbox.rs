//! The transactional outbox. A request queues its email in the transaction that makes the
//! change the email announces, so a crash never loses it and a rollback never sends it. This
//! worker sends what is due, retries with exponential backoff while the mail server is down,
//! dead-letters a message after `max_attempts` so it never blocks the queue, and erases each
//! body once sent. Several nodes may run it at once: rows are claimed with a lease (and
//! `FOR UPDATE SKIP LOCKED` on PostgreSQL), so no email is sent twice by two senders.

use super::{Mailer, RenderedEmail};
use crate::clock::{millis, Clock};
use crate::crypto::{outbox_aad, Cipher};
use crate::store::{QueuedEmail, Store};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

const BATCH: i64 = 16;
/// How long a claimed email is reserved for its sender: twice the SMTP timeout. An email
/// claimed by a node that then crashed goes out once its lease has run out.
const LEASE_MS: i64 = 30_000;
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
}

/// Delay before attempt `attempts + 1`: 2 s, 4 s, 8 s … capped at 10 minutes.
pub fn backoff_ms(attempts: i64) -> i64 {
    let exponent = u32::try_from(attempts.clamp(1, 20)).unwrap_or(20);
    (1000_i64 << exponent).min(MAX_BACKOFF_MS)
}

impl OutboxWorker {
    pub async fn run(self, stop: CancellationToken) {
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

    /// Sends one batch of due emails; returns how many were handled.
    pub async fn send_due(&self) -> Result<usize, crate::store::StoreError> {
        let now = millis(self.clock.now());
        let batch = self.store.claim_due_emails(now, LEASE_MS, BATCH).await?;
        let handled = batch.len();
        for email in batch {
            self.deliver(email).await?;
        }
        Ok(handled)
    }

    #[tracing::instrument(skip_all, fields(email_id = %email.id, kind = %email.kind, attempt = email.attempts + 1))]
    async fn deliver(&self, email: QueuedEmail) -> Result<(), crate::store::StoreError> {
        let attempts = email.attempts + 1;
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
        let now = millis(self.clock.now());
        match result {
            Ok(()) => {
                self.store.mark_email_sent(&email.id, now).await?;
                tracing::info!("email sent");
            }
            Err((permanent, error)) => {
                let dead = permanent || attempts >= i64::from(self.max_attempts);
                let next = now + backoff_ms(attempts);
                self.store
                    .mark_email_failed(&email.id, attempts, next, dead.then_some(now), &error)
                    .await?;
                if dead {
                    tracing::error!(%error, "email dead-lettered: see `keyward outbox dead`");
                } else {
                    tracing::warn!(%error, retry_in_ms = next - now, "email not sent; will retry");
                }
            }
        }
        Ok(())
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
