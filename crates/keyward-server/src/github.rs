//! GitHub's secret-scanning signatures (SPEC §9.2): an outbound adapter, like the mailer and
//! the gateway's client. GitHub signs each report with ECDSA P-256 over the raw body and names
//! the key by `Github-Public-Key-Identifier`; its keys are published as JSON at
//! `KEYWARD_GITHUB_KEYS_URL`. They are fetched when first needed and again when a report
//! names a key we do not hold — at most once a minute, so that requests naming made-up keys
//! cannot make keyward hammer GitHub.

use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::pkcs8::DecodePublicKey;
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

/// At most one fetch of the key list per this long.
pub const REFETCH_INTERVAL: Duration = Duration::from_secs(60);
/// A key list larger than this is not GitHub's.
const MAX_KEY_LIST: usize = 1 << 20;

/// Why a report was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum Rejection {
    #[error(
        "the Github-Public-Key-Identifier and Github-Public-Key-Signature headers are required"
    )]
    MissingHeaders,
    #[error("Github-Public-Key-Signature is not base64 of a DER ECDSA signature")]
    MalformedSignature,
    #[error("no key published at KEYWARD_GITHUB_KEYS_URL has this Github-Public-Key-Identifier")]
    UnknownKey,
    #[error("the signature does not verify with the key named by Github-Public-Key-Identifier")]
    BadSignature,
    /// The key list could not be fetched: the report is refused with 503, so GitHub retries.
    #[error("GitHub's key list could not be fetched: {0:#}")]
    KeysUnavailable(anyhow::Error),
}

#[derive(Deserialize)]
struct KeyList {
    public_keys: Vec<PublishedKey>,
}

#[derive(Deserialize)]
struct PublishedKey {
    key_identifier: String,
    key: String,
}

/// GitHub's published keys, as last fetched.
pub struct GitHubKeys {
    url: url::Url,
    client: reqwest::Client,
    keys: RwLock<HashMap<String, VerifyingKey>>,
    /// When the list was last fetched (or tried): one fetch at a time, one per interval.
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
}

impl GitHubKeys {
    pub fn new(url: url::Url) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .user_agent(concat!("keyward/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            url,
            client,
            keys: RwLock::default(),
            last_fetch: tokio::sync::Mutex::new(None),
        })
    }

    /// Accepts `body` only if `signature` (base64 DER) verifies with the published key
    /// `identifier`.
    pub async fn verify(
        &self,
        identifier: Option<&str>,
        signature: Option<&str>,
        body: &[u8],
    ) -> Result<(), Rejection> {
        use base64::Engine as _;
        let (Some(identifier), Some(signature)) = (identifier, signature) else {
            return Err(Rejection::MissingHeaders);
        };
        let der = base64::engine::general_purpose::STANDARD
            .decode(signature.trim())
            .map_err(|_| Rejection::MalformedSignature)?;
        let signature = Signature::from_der(&der).map_err(|_| Rejection::MalformedSignature)?;
        let key = match self.known(identifier) {
            Some(key) => key,
            None => {
                self.refetch().await?;
                self.known(identifier).ok_or(Rejection::UnknownKey)?
            }
        };
        key.verify(body, &signature)
            .map_err(|_| Rejection::BadSignature)
    }

    fn known(&self, identifier: &str) -> Option<VerifyingKey> {
        self.keys
            .read()
            .ok()
            .and_then(|keys| keys.get(identifier).copied())
    }

    /// Fetches the key list unless it was fetched (or tried) less than a minute ago.
    async fn refetch(&self) -> Result<(), Rejection> {
        let mut last = self.last_fetch.lock().await;
        if last.is_some_and(|at| at.elapsed() < REFETCH_INTERVAL) {
            return Ok(());
        }
        *last = Some(Instant::now());
        let keys = self.fetch().await.map_err(Rejection::KeysUnavailable)?;
        tracing::info!(keys = keys.len(), url = %self.url, "fetched GitHub's secret-scanning keys");
        if let Ok(mut held) = self.keys.write() {
            *held = keys;
        }
        Ok(())
    }

    async fn fetch(&self) -> anyhow::Result<HashMap<String, VerifyingKey>> {
        let response = self
            .client
            .get(self.url.clone())
            .header("accept", "application/json")
            .send()
            .await?
            .error_for_status()?;
        let body = response.bytes().await?;
        anyhow::ensure!(
            body.len() <= MAX_KEY_LIST,
            "the key list is larger than 1 MiB"
        );
        let list: KeyList = serde_json::from_slice(&body)?;
        let mut keys = HashMap::new();
        for published in list.public_keys {
            match VerifyingKey::from_public_key_pem(published.key.trim()) {
                Ok(key) => {
                    keys.insert(published.key_identifier, key);
                }
                Err(e) => tracing::warn!(
                    key_identifier = %published.key_identifier,
                    error = %e,
                    "a published secret-scanning key is not a P-256 public key: skipped"
                ),
            }
        }
        Ok(keys)
    }
}
