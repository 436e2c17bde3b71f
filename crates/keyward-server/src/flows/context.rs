//! What every flow works with: storage, settings, the cipher, the clock, metrics, the node's
//! caches and the outbox's wake-up. Nothing of HTTP: the web state (`state::AppState`) is this
//! plus the HTTP pieces, and the operator commands build one of these without any of them.
//! Cheap to clone.

use super::key_cache::KeyCache;
use super::key_usage::KeyUsage;
use super::service_tokens::ServiceTokens;
use crate::clock::Clock;
use crate::config::Settings;
use crate::crypto::Cipher;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::store::Store;
use std::sync::Arc;
use tokio::sync::Notify;

#[derive(Clone)]
pub struct Context {
    pub settings: Arc<Settings>,
    pub store: Store,
    /// The master key's cipher: always there in the server; absent in an operator command
    /// that encrypts nothing (a suspension must work with the database's URL alone).
    cipher: Option<Arc<Cipher>>,
    pub clock: Arc<dyn Clock>,
    /// Rung after a commit that queued an email, so the outbox worker sends it at once.
    pub outbox_wake: Arc<Notify>,
    pub metrics: Arc<Metrics>,
    /// This node's view of the live service tokens (the verify API's callers).
    pub service_tokens: Arc<ServiceTokens>,
    /// What this node knows of partner keys, at most `KEYWARD_KEY_CACHE_MS` old.
    pub key_cache: Arc<KeyCache>,
    /// When each key was last used, written in batches.
    pub key_usage: Arc<KeyUsage>,
}

impl Context {
    pub fn new(
        settings: Arc<Settings>,
        store: Store,
        cipher: Cipher,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self::with_cipher(settings, store, Some(Arc::new(cipher)), clock)
    }

    /// For operator commands that encrypt nothing: a flow that needs the master key fails
    /// with a clear error instead.
    pub fn without_master_key(
        settings: Arc<Settings>,
        store: Store,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self::with_cipher(settings, store, None, clock)
    }

    fn with_cipher(
        settings: Arc<Settings>,
        store: Store,
        cipher: Option<Arc<Cipher>>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            service_tokens: Arc::new(ServiceTokens::new(settings.key_cache)),
            key_cache: Arc::new(KeyCache::new(settings.key_cache)),
            settings,
            store,
            cipher,
            clock,
            outbox_wake: Arc::new(Notify::new()),
            metrics: Arc::new(Metrics::default()),
            key_usage: Arc::default(),
        }
    }

    /// The master key's cipher.
    pub fn cipher(&self) -> Result<&Cipher> {
        self.cipher.as_deref().ok_or_else(|| {
            Error::Unexpected(anyhow::anyhow!(
                "this action needs the master key: set KEYWARD_MASTER_KEY or KEYWARD_MASTER_KEY_FILE"
            ))
        })
    }
}
