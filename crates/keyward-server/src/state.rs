//! What every request handler shares: the flows' [`Context`] and the HTTP pieces (the per-IP
//! limiter, the lost-keys slots, the gateway). Cheap to clone.

use crate::flows::Context;
use crate::github::GitHubKeys;
use crate::ratelimit::IpRateLimiter;
use crate::upstream::Gateway;
use std::sync::Arc;

/// Requests answered before their work is done (lost keys, invite-only onboarding) handled
/// at once on a node; past that, a request is dropped as the limits would have dropped it.
pub const LOST_KEYS_SLOTS: usize = 256;

/// Cloned for every request by each layer and handler that takes it, so a clone is one
/// reference count: everything lives behind one `Arc`.
#[derive(Clone)]
pub struct AppState(Arc<WebState>);

pub struct WebState {
    /// What the flows work with; handlers pass it on (`&state` derefs to it).
    pub ctx: Context,
    pub ip_limiter: Arc<IpRateLimiter>,
    /// Lost-keys requests handled in the background at once (their answer never waits).
    pub lost_keys_slots: Arc<tokio::sync::Semaphore>,
    /// The gateway to the payment API, when `KEYWARD_UPSTREAM_URL` is set.
    pub gateway: Option<Arc<Gateway>>,
    /// GitHub's secret-scanning keys, when `KEYWARD_GITHUB_SECRET_SCANNING` is on.
    pub github_keys: Option<Arc<GitHubKeys>>,
    /// The console's OpenID Connect client, when `KEYWARD_CONSOLE` is on (SPEC §10.1).
    pub console: Option<Arc<crate::console::oidc::Oidc>>,
}

impl AppState {
    pub fn new(
        ctx: Context,
        gateway: Option<Arc<Gateway>>,
        github_keys: Option<Arc<GitHubKeys>>,
        console: Option<Arc<crate::console::oidc::Oidc>>,
    ) -> Self {
        Self(Arc::new(WebState {
            ip_limiter: Arc::new(IpRateLimiter::new(ctx.settings.ip_rate_limit_per_minute)),
            lost_keys_slots: Arc::new(tokio::sync::Semaphore::new(LOST_KEYS_SLOTS)),
            gateway,
            github_keys,
            console,
            ctx,
        }))
    }
}

impl std::ops::Deref for AppState {
    type Target = WebState;

    fn deref(&self) -> &WebState {
        &self.0
    }
}

impl std::ops::Deref for WebState {
    type Target = Context;

    fn deref(&self) -> &Context {
        &self.ctx
    }
}
