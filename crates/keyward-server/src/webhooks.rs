//! Lifecycle webhooks (SPEC §9.3): delivery to the exchange's own systems, signed as Standard
//! Webhooks v1 defines it. An outbound adapter, like the mailer: the events are queued by the
//! flows' transactions (`store/webhooks.rs`); this sends them.
//!
//! Each delivery is claimed with a lease, so of several nodes one sends it; a node that dies
//! mid-send leaves it to be taken over when the lease runs out, and it is then sent again with
//! the same `webhook-id` (at least once, as Standard Webhooks expects receivers to handle).
//! Anything but a 2xx is retried on Standard Webhooks' schedule, with jitter; `410 Gone`
//! disables the endpoint; after the schedule the delivery is dead-lettered.

use crate::clock::{millis, ClaimTime, Clock};
use crate::crypto::{webhook_secret_aad, Cipher};
use crate::metrics::Metrics;
use crate::store::{Attempt, DueDelivery, Store};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use rand::Rng;
use sha2::Sha256;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Waits before each retry (Standard Webhooks' schedule): after the first attempt fails, 5 s;
/// then 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h and 24 h. Ten attempts in all.
pub const RETRY_SCHEDULE_SECS: [i64; 9] = [
    5,
    5 * 60,
    30 * 60,
    2 * 3600,
    5 * 3600,
    10 * 3600,
    14 * 3600,
    20 * 3600,
    24 * 3600,
];
/// One attempt's limit, connection included.
pub const TIMEOUT: Duration = Duration::from_secs(15);
/// Deliveries one node claims at once; they are sent side by side.
const BATCH: i64 = 8;
/// How often the queue is looked at.
const POLL: Duration = Duration::from_millis(500);
/// The prefix of a signing secret, as Standard Webhooks writes it.
pub const SECRET_PREFIX: &str = "whsec_";

/// A new signing secret: `whsec_` + base64 of 32 random bytes. Its bytes are the HMAC key.
pub fn new_secret() -> (String, Vec<u8>) {
    let mut key = vec![0u8; 32];
    rand::rngs::OsRng.fill(&mut key[..]);
    let text = format!(
        "{SECRET_PREFIX}{}",
        base64::engine::general_purpose::STANDARD.encode(&key)
    );
    (text, key)
}

/// `v1,` + base64 of HMAC-SHA256 over `{id}.{timestamp}.{body}` (Standard Webhooks v1).
pub fn signature(key: &[u8], id: &str, timestamp: i64, body: &str) -> String {
    // HMAC takes keys of any length.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return String::new();
    };
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body.as_bytes());
    let tag = mac.finalize().into_bytes();
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(tag)
    )
}

/// The client every delivery uses: a 15 s limit, no redirects followed.
pub fn client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("keyward-webhooks/", env!("CARGO_PKG_VERSION")))
        .build()?)
}

/// What an endpoint answered to one attempt.
#[derive(Debug)]
pub enum Answer {
    Status(u16),
    Failed(String),
}

impl Answer {
    pub fn describe(&self) -> String {
        match self {
            Answer::Status(status) => format!("HTTP {status}"),
            Answer::Failed(error) => error.clone(),
        }
    }
}

/// Sends one signed delivery.
pub async fn send(
    client: &reqwest::Client,
    url: &str,
    key: &[u8],
    id: &str,
    timestamp: i64,
    body: &str,
) -> Answer {
    let request = client
        .post(url)
        .header("content-type", "application/json")
        .header("webhook-id", id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature(key, id, timestamp, body))
        .body(body.to_owned());
    match request.send().await {
        Ok(response) => Answer::Status(response.status().as_u16()),
        // The error's own text: never the URL's credentials (reqwest leaves them out).
        Err(e) => Answer::Failed(if e.is_timeout() {
            "no answer within 15 s".to_owned()
        } else if e.is_connect() {
            "could not connect".to_owned()
        } else {
            format!("{}", e.without_url())
        }),
    }
}

/// The secret's HMAC key, decrypted.
pub fn endpoint_key(cipher: &Cipher, endpoint_id: &str, ciphertext: &[u8]) -> Option<Vec<u8>> {
    cipher
        .decrypt(ciphertext, &webhook_secret_aad(endpoint_id))
        .ok()
}

pub struct WebhookWorker {
    pub store: Store,
    pub cipher: Cipher,
    pub clock: Arc<dyn Clock>,
    pub metrics: Arc<Metrics>,
    pub client: reqwest::Client,
}

impl WebhookWorker {
    pub async fn run(self, stop: CancellationToken) {
        let holder = uuid::Uuid::new_v4().to_string();
        loop {
            let at = ClaimTime::now(self.clock.as_ref());
            let claimed = match self.store.claim_due_webhooks(&holder, at, BATCH).await {
                Ok(claimed) => claimed,
                Err(e) => {
                    tracing::warn!(error = ?e, "could not read the webhook queue; will try again");
                    Vec::new()
                }
            };
            let full = i64::try_from(claimed.len()).is_ok_and(|n| n == BATCH);
            let sends = claimed.iter().map(|d| self.deliver(&holder, d));
            futures::future::join_all(sends).await;
            if full {
                continue;
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(POLL) => {}
            }
        }
    }

    async fn deliver(&self, holder: &str, delivery: &DueDelivery) {
        let Some(key) = endpoint_key(
            &self.cipher,
            &delivery.endpoint_id,
            &delivery.secret_ciphertext,
        ) else {
            tracing::error!(endpoint_id = %delivery.endpoint_id, "a webhook secret does not decrypt under the master key");
            return;
        };
        let now = self.clock.now();
        let answer = send(
            &self.client,
            &delivery.url,
            &key,
            &delivery.id,
            now.timestamp(),
            &delivery.payload,
        )
        .await;
        let error = answer.describe();
        let attempt = match answer {
            Answer::Status(status) if (200..300).contains(&status) => Attempt::Delivered,
            Answer::Status(410) => Attempt::Gone,
            _ => match usize::try_from(delivery.attempts)
                .ok()
                .and_then(|n| RETRY_SCHEDULE_SECS.get(n))
            {
                Some(&wait) => {
                    // ±10%, so that endpoints coming back are not hit by every retry at once.
                    let jitter = rand::thread_rng().gen_range(0.9..=1.1);
                    let wait_ms = (wait as f64 * 1000.0 * jitter) as i64;
                    Attempt::Failed {
                        error: &error,
                        next_at: millis(now) + wait_ms,
                    }
                }
                None => Attempt::Dead { error: &error },
            },
        };
        let result = match attempt {
            Attempt::Delivered => "delivered",
            Attempt::Failed { .. } => "failed",
            Attempt::Dead { .. } => "dead",
            Attempt::Gone => "gone",
        };
        self.metrics.webhook_delivery(result);
        if !matches!(attempt, Attempt::Delivered) {
            tracing::warn!(webhook_id = %delivery.id, endpoint_id = %delivery.endpoint_id, result, error = %error, "a webhook delivery failed");
        }
        let recorded = self
            .store
            .record_webhook_attempt(holder, delivery, attempt, millis(self.clock.now()))
            .await;
        if let Err(e) = recorded {
            // The lease runs out and the delivery is sent again, with the same webhook-id.
            tracing::warn!(error = ?e, webhook_id = %delivery.id, "could not record a webhook attempt");
        }
    }
}
