//! Service tokens (SPEC §7.1): the exchange's own services present one to the verify API.
//!
//! Each node keeps the set of live tokens' hashes in memory for at most
//! `KEYWARD_KEY_CACHE_MS` (the same bound as partner keys, SPEC §6) and compares a presented
//! token's hash with every one of them in constant time, so neither the database nor the
//! comparison tells anything about how close a guess was. Revoking a token is acknowledged
//! only after that bound has passed, so it is refused on every node when `revoke` returns.
//! When a token was last used is recorded in memory and written in batches (approximate).

use crate::store::{
    Actor, Audit, AuditKind, LiveServiceToken, ServiceTokenRecord, Store, StoreError,
};
use arc_swap::ArcSwap;
use keyward_core::{KeyHash, ServiceToken};
use rand::rngs::OsRng;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;

/// A token name: 1–64 of `A-Za-z0-9._-` (it appears in logs and the audit log).
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[derive(Debug, thiserror::Error)]
pub enum ServiceTokenError {
    #[error("a service token name is 1 to 64 of A-Z a-z 0-9 . _ -")]
    BadName,
    #[error("a live service token is already called {0}: revoke it first, or choose another name")]
    NameTaken(String),
    #[error("no live service token is called {0}")]
    NoSuchToken(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Creates a token called `name`; the token is returned once and stored only as its hash.
/// Returns once every node accepts it: a node's snapshot of the live tokens is at most
/// `bound` old (`KEYWARD_KEY_CACHE_MS`), so after waiting that out every snapshot taken
/// before the token existed has been replaced (a credential is usable everywhere when the
/// command that made it returns).
pub async fn create(
    store: &Store,
    name: &str,
    operator: &str,
    now: chrono::DateTime<chrono::Utc>,
    bound: std::time::Duration,
) -> Result<ServiceToken, ServiceTokenError> {
    if !valid_name(name) {
        return Err(ServiceTokenError::BadName);
    }
    let token = ServiceToken::generate(&mut OsRng);
    let mut tx = store.begin().await?;
    match tx
        .insert_service_token(
            name,
            &token.hash(),
            &token.hint(),
            crate::clock::millis(now),
        )
        .await
    {
        Err(StoreError::Conflict) => return Err(ServiceTokenError::NameTaken(name.to_owned())),
        other => other?,
    }
    let mut entry = Audit::new(
        AuditKind::ServiceTokenCreated,
        Actor::Operator(operator),
        now,
    );
    entry.detail = Some(name);
    tx.audit(&entry).await?;
    tx.commit().await?;
    super::key_cache::wait_out(bound).await;
    Ok(token)
}

/// Revokes the live token called `name`, and returns once every node refuses it: after
/// waiting out `bound` (`KEYWARD_KEY_CACHE_MS`, see [`ServiceTokens`]).
pub async fn revoke(
    store: &Store,
    name: &str,
    operator: &str,
    reason: Option<&str>,
    now: chrono::DateTime<chrono::Utc>,
    bound: std::time::Duration,
) -> Result<(), ServiceTokenError> {
    let mut tx = store.begin().await?;
    if !tx
        .revoke_service_token(name, crate::clock::millis(now))
        .await?
    {
        return Err(ServiceTokenError::NoSuchToken(name.to_owned()));
    }
    let mut entry = Audit::new(
        AuditKind::ServiceTokenRevoked,
        Actor::Operator(operator),
        now,
    );
    let detail = match reason {
        Some(reason) => format!("{name}; reason: {reason}"),
        None => name.to_owned(),
    };
    entry.detail = Some(&detail);
    tx.audit(&entry).await?;
    tx.commit().await?;
    super::key_cache::wait_out(bound).await;
    Ok(())
}

pub async fn list(store: &Store) -> Result<Vec<ServiceTokenRecord>, StoreError> {
    store.service_tokens().await
}

/// This node's view of the live tokens, at most `max_age` old.
pub struct ServiceTokens {
    max_age: Duration,
    /// Read by every verification without a lock: a tokio `RwLock` took its semaphore's
    /// mutex on every release, a lock both cores took turns at on each call.
    snapshot: ArcSwap<Snapshot>,
    /// Held by the one reload in progress, across its read of the database.
    reloading: tokio::sync::Mutex<()>,
}

/// A live token as this node holds it.
pub struct CachedToken {
    hash: KeyHash,
    pub name: String,
    /// When it was last used since the last flush, in Unix milliseconds; 0 for not since.
    /// An atomic in the token itself, so a request records its use without a lock or a map.
    last_used: AtomicI64,
}

#[derive(Default)]
struct Snapshot {
    /// Taken before the database was read, so the snapshot is never younger than it claims.
    loaded_at: Option<Instant>,
    tokens: Vec<Arc<CachedToken>>,
}

impl Snapshot {
    fn fresh(&self, max_age: Duration) -> bool {
        self.loaded_at.is_some_and(|at| at.elapsed() < max_age)
    }

    /// The token with this hash, comparing with every live token in constant time.
    fn find(&self, hash: &KeyHash) -> Option<&Arc<CachedToken>> {
        let mut found = None;
        for token in &self.tokens {
            if bool::from(token.hash.as_bytes().ct_eq(hash.as_bytes())) {
                found = Some(token);
            }
        }
        found
    }

    /// A snapshot of `live`, keeping this one's entries (and unflushed uses) of the tokens
    /// still live. The uses of a token no longer live are dropped: the store records no use
    /// of a revoked token, and its name may already be another token's.
    fn replaced(&self, live: Vec<LiveServiceToken>, loaded_at: Instant) -> Self {
        let mut old = self.tokens.clone();
        let tokens = live
            .into_iter()
            .map(|token| {
                // Stored hashes against stored hashes: nothing presented is compared here.
                match old.iter().position(|o| o.hash == token.hash) {
                    Some(i) => old.swap_remove(i),
                    None => Arc::new(CachedToken {
                        hash: token.hash,
                        name: token.name,
                        last_used: AtomicI64::new(0),
                    }),
                }
            })
            .collect();
        Self {
            loaded_at: Some(loaded_at),
            tokens,
        }
    }

    /// The uses noted since the last call, by token name; each is taken once.
    fn take_uses(&self) -> Vec<(String, i64)> {
        self.tokens.iter().filter_map(|t| t.take_use()).collect()
    }
}

impl CachedToken {
    fn take_use(&self) -> Option<(String, i64)> {
        match self.last_used.swap(0, Ordering::Relaxed) {
            0 => None,
            at => Some((self.name.clone(), at)),
        }
    }
}

impl ServiceTokens {
    pub fn new(max_age: Duration) -> Self {
        Self {
            max_age,
            snapshot: ArcSwap::from_pointee(Snapshot::default()),
            reloading: tokio::sync::Mutex::new(()),
        }
    }

    /// The live token `presented` is, if any; its use at `now` is noted.
    pub async fn check(
        &self,
        store: &Store,
        presented: &ServiceToken,
        now: i64,
    ) -> Result<Option<Arc<CachedToken>>, StoreError> {
        let hash = presented.hash();
        let noted = |token: &Arc<CachedToken>| {
            // Noted once a second at most, like a key's last use: a write on every
            // verification would have both cores take turns at this cache line.
            if now.saturating_sub(token.last_used.load(Ordering::Relaxed)) >= 1000 {
                token.last_used.fetch_max(now, Ordering::Relaxed);
            }
            token.clone()
        };
        {
            let snapshot = self.snapshot.load();
            if snapshot.fresh(self.max_age) {
                return Ok(snapshot.find(&hash).map(noted));
            }
        }
        // Boxed: the reload is rare, and kept out of the future every verification builds.
        Box::pin(self.reload(store)).await?;
        Ok(self.snapshot.load().find(&hash).map(noted))
    }

    /// One reload for every caller that found the snapshot stale at once: the others wait
    /// for it, then find it fresh.
    async fn reload(&self, store: &Store) -> Result<(), StoreError> {
        let _reloading = self.reloading.lock().await;
        if !self.snapshot.load().fresh(self.max_age) {
            let loaded_at = Instant::now();
            let live = store.live_service_tokens().await?;
            // Only this reload replaces the snapshot, so no entry (or use) is lost between
            // the load and the store.
            let fresh = self.snapshot.load().replaced(live, loaded_at);
            self.snapshot.store(Arc::new(fresh));
        }
        Ok(())
    }

    /// Writes when tokens were last used since the last flush.
    pub async fn flush_last_used(&self, store: &Store) -> Result<(), StoreError> {
        let used = self.snapshot.load().take_uses();
        if used.is_empty() {
            return Ok(());
        }
        store.record_service_tokens_used(&used).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_short_and_plain() {
        assert!(valid_name("payments-api"));
        assert!(valid_name("a.b_c-9"));
        assert!(!valid_name(""));
        assert!(!valid_name("has space"));
        assert!(!valid_name("\u{1b}[31mred"));
        assert!(!valid_name(&"x".repeat(65)));
    }

    fn live(token: &ServiceToken, name: &str) -> LiveServiceToken {
        LiveServiceToken {
            hash: token.hash(),
            name: name.into(),
        }
    }

    #[test]
    fn a_snapshot_finds_only_exact_hashes() {
        let a = ServiceToken::generate(&mut OsRng);
        let b = ServiceToken::generate(&mut OsRng);
        let snapshot = Snapshot::default().replaced(vec![live(&a, "a")], Instant::now());
        assert_eq!(snapshot.find(&a.hash()).map(|t| t.name.as_str()), Some("a"));
        assert!(snapshot.find(&b.hash()).is_none());
        assert!(snapshot.fresh(Duration::from_secs(1)));
        assert!(!snapshot.fresh(Duration::ZERO));
    }

    #[test]
    fn a_reload_keeps_unflushed_uses_of_tokens_still_live_only() {
        let a = ServiceToken::generate(&mut OsRng);
        let b = ServiceToken::generate(&mut OsRng);
        let snapshot =
            Snapshot::default().replaced(vec![live(&a, "a"), live(&b, "b")], Instant::now());
        for (token, at) in [(&a, 7), (&a, 5), (&b, 9)] {
            let found = snapshot.find(&token.hash()).unwrap();
            found.last_used.fetch_max(at, Ordering::Relaxed);
        }
        // b is revoked; a is still live and keeps its latest use.
        let snapshot = snapshot.replaced(vec![live(&a, "a")], Instant::now());
        assert_eq!(snapshot.take_uses(), vec![("a".to_owned(), 7)]);
        // Taken once: the next flush has nothing to write.
        assert!(snapshot.take_uses().is_empty());
    }
}
