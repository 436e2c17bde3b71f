//! What every request handler shares. Cheap to clone.

use crate::clock::Clock;
use crate::config::Settings;
use crate::crypto::Cipher;
use crate::flows::key_cache::KeyCache;
use crate::flows::service_tokens::ServiceTokens;
use crate::http::gateway::Gateway;
use crate::metrics::Metrics;
use crate::ratelimit::IpRateLimiter;
use crate::store::Store;
use std::sync::Arc;
use tokio::sync::Notify;

/// Requests answered before their work is done (lost keys, invite-only onboarding) handled
/// at once on a node; past that, a request is dropped as the limits would have dropped it.
pub const LOST_KEYS_SLOTS: usize = 256;

#[derive(Clone)]
pub struct AppState {
    pub settings: Arc<Settings>,
    pub store: Store,
    pub cipher: Cipher,
    pub clock: Arc<dyn Clock>,
    /// Rung after a commit that queued an email, so the outbox worker sends it at once.
    pub outbox_wake: Arc<tokio::sync::Notify>,
    pub ip_limiter: Arc<IpRateLimiter>,
    pub metrics: Arc<Metrics>,
    /// This node's view of the live service tokens (the verify API's callers).
    pub service_tokens: Arc<ServiceTokens>,
    /// What this node knows of partner keys, at most `KEYWARD_KEY_CACHE_MS` old.
    pub key_cache: Arc<KeyCache>,
    /// When each key was last used, written in batches.
    pub key_usage: Arc<crate::flows::key_usage::KeyUsage>,
    /// Lost-keys requests handled in the background at once (their answer never waits).
    pub lost_keys_slots: Arc<tokio::sync::Semaphore>,
    /// The gateway to the payment API, when `KEYWARD_UPSTREAM_URL` is set.
    pub gateway: Option<Arc<Gateway>>,
}

impl AppState {
    pub fn new(
        settings: Arc<Settings>,
        store: Store,
        cipher: Cipher,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            service_tokens: Arc::new(ServiceTokens::new(settings.key_cache)),
            ip_limiter: Arc::new(IpRateLimiter::new(settings.ip_rate_limit_per_minute)),
            key_cache: Arc::new(KeyCache::new(settings.key_cache)),
            settings,
            store,
            cipher,
            clock,
            outbox_wake: Arc::new(Notify::new()),
            metrics: Arc::new(Metrics::default()),
            gateway: None,
            key_usage: Arc::default(),
            lost_keys_slots: Arc::new(tokio::sync::Semaphore::new(LOST_KEYS_SLOTS)),
        }
    }
}
