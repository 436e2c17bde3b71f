//! What authentication needs to know about a public key, kept per node for at most
//! `KEYWARD_KEY_CACHE_MS` (SPEC §5, §6).
//!
//! The invariant that keeps revocation instant: an entry is stamped with the instant taken
//! **before** the database read that filled it, and is never served once that stamp is
//! `bound` old. Every change that must hold on every node is acknowledged only after `bound`
//! has passed since it committed ([`wait_out`]). So a request a node receives after the change
//! was acknowledged finds either no entry, or one whose read started after the commit and
//! therefore saw it. The argument in full is in `docs/decisions.md`.
//!
//! Loads are coalesced (moka's `try_get_with`): when a hot key's entry expires, 64 concurrent
//! requests send one query, not 64. Unknown keys are cached too, as negative entries, so a
//! flood of random well-formed keys costs one query per key per bound. The cache is bounded in
//! entries; moka's TinyLFU admission keeps a flood of one-off keys from evicting hot ones.

use crate::crypto::{secret_key_aad, Cipher};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::store::{KeyClass, KeyRecord, Partner, Store};
use keyward_core::signature::SignatureKey;
use keyward_core::{KeyHash, KeyMode, SecretKey};
use moka::future::Cache;
use moka::Expiry;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// At most this many keys per node (about 0.5 KiB each).
const MAX_ENTRIES: u64 = 20_000;

/// At most this many keys are read ahead in one query.
const READ_AHEAD_BATCH: usize = 128;

/// A key as authentication needs it: its record, its partner (status, parsed allow-list) and
/// its secret, decrypted once and kept only as the keyed HMAC that checks signatures (the
/// plaintext `SecretKey` is zeroised as soon as the key is derived from it).
#[derive(Debug)]
pub struct AuthKey {
    pub key_id: String,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
    /// When a retiring pair stops working (checked against the clock on every request, so
    /// the cache never makes an expired key live longer).
    pub expires_at: Option<i64>,
    /// Primary or restricted, with a restricted pair's name, scopes and own expiry (SPEC §8).
    pub class: Arc<KeyClass>,
    pub mode: KeyMode,
    /// Moved in with keys not of §1's format (SPEC §10.2): `KEYWARD_LEGACY_KEYS_UNTIL` applies.
    pub legacy: bool,
    /// The last use the database knew of when this entry was read (the expiry policy's idle
    /// limit also counts this node's uses since, from `last_noted`).
    pub last_used_at: Option<i64>,
    /// Shared with every request authenticated by the key: a clone is a reference count.
    pub partner: Arc<Partner>,
    /// `None` for a revoked key: it will never be used to verify anything.
    pub signature_key: Option<SignatureKey>,
    /// When this node last noted a use of the key (ms), so that a hot key is noted once a
    /// second rather than on every request.
    pub last_noted: std::sync::atomic::AtomicI64,
}

/// One cache entry: what the database said (`None`: no such key), and when the read began.
#[derive(Debug)]
pub struct Lookup {
    loaded_at: Instant,
    pub key: Option<AuthKey>,
    /// A read to replace this entry has been started ([`KeyCache::lookup`]).
    refreshing: AtomicBool,
}

/// The per-node key cache, or none when `KEYWARD_KEY_CACHE_MS` is 0.
pub struct KeyCache {
    bound: Duration,
    cache: Option<Cache<KeyHash, Arc<Lookup>>>,
    /// The keys to read ahead, queued for the one task that reads them in batches
    /// ([`read_ahead_in_batches`], started on first use). Each entry queues itself at most
    /// once, but an entry read again while its old one is still queued queues once more: with
    /// the database slow or away, the task falls behind while requests go on queueing, so the
    /// queue is bounded (as many keys as the cache holds) and a key that finds it full is not
    /// read ahead.
    read_ahead: OnceLock<mpsc::Sender<KeyHash>>,
    /// Whether any legacy key is held (SPEC §10.2), and when the read that said so began:
    /// under the same bound as the entries, so an import is in force everywhere when it returns.
    legacy_held: tokio::sync::Mutex<Option<(Instant, bool)>>,
}

/// Entries expire `bound` after the read that filled them began, not after they were stored.
struct FromReadStart(Duration);

impl Expiry<KeyHash, Arc<Lookup>> for FromReadStart {
    fn expire_after_create(
        &self,
        _key: &KeyHash,
        lookup: &Arc<Lookup>,
        created_at: Instant,
    ) -> Option<Duration> {
        Some(
            self.0
                .saturating_sub(created_at.saturating_duration_since(lookup.loaded_at)),
        )
    }

    /// An entry read again ahead of its expiry ([`KeyCache::lookup`]) replaces the old one
    /// and expires `bound` after its own read began (moka's default would keep the old time).
    fn expire_after_update(
        &self,
        key: &KeyHash,
        lookup: &Arc<Lookup>,
        updated_at: Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        self.expire_after_create(key, lookup, updated_at)
    }
}

impl KeyCache {
    pub fn new(bound: Duration) -> Self {
        let cache = (!bound.is_zero()).then(|| {
            Cache::builder()
                .max_capacity(MAX_ENTRIES)
                .expire_after(FromReadStart(bound))
                .build()
        });
        Self {
            bound,
            cache,
            read_ahead: OnceLock::new(),
            legacy_held: tokio::sync::Mutex::new(None),
        }
    }

    /// Whether any usable legacy key is held, at most `bound` ago (SPEC §10.2). A key of the
    /// legacy shape that fails §1's checks is looked up only while one is: otherwise it is
    /// refused without a read, as §1 says. One read per bound per node, whatever the flood;
    /// concurrent askers wait for the one read.
    pub async fn legacy_keys_held(&self, store: &Store) -> Result<bool> {
        let mut held = self.legacy_held.lock().await;
        if let Some((loaded_at, answer)) = *held {
            if loaded_at.elapsed() < self.bound {
                return Ok(answer);
            }
        }
        let loaded_at = Instant::now();
        let answer = store.legacy_keys_held().await?;
        *held = Some((loaded_at, answer));
        Ok(answer)
    }

    /// How stale an entry may be; every change that must hold everywhere waits this long.
    pub fn bound(&self) -> Duration {
        self.bound
    }

    /// How many keys (known or not) the cache holds, once its pending bookkeeping is done.
    pub async fn entries(&self) -> u64 {
        match &self.cache {
            Some(cache) => {
                cache.run_pending_tasks().await;
                cache.entry_count()
            }
            None => 0,
        }
    }

    /// What the store says of the key with this hash, at most `bound` ago.
    pub async fn lookup(
        &self,
        store: &Store,
        cipher: &Cipher,
        metrics: &Metrics,
        hash: &KeyHash,
    ) -> Result<Arc<Lookup>> {
        let Some(cache) = &self.cache else {
            return Box::pin(load(store, cipher, hash)).await.map(Arc::new);
        };
        let missed = AtomicBool::new(false);
        // Asked with `get` first: nearly every lookup finds its entry, and `get`'s future is
        // under half the size of `try_get_with`'s (0.7 against 1.7 KiB). The coalesced load is
        // boxed. Every signed request's future holds this one and is moved as it is built, so
        // its size is copied at each step (`docs/benchmarks.md`, stop 44).
        let lookup = match cache.get(hash).await {
            Some(lookup) => lookup,
            None => Box::pin(cache.try_get_with(*hash, async {
                missed.store(true, Ordering::Relaxed);
                load(store, cipher, hash).await.map(Arc::new)
            }))
            .await
            .map_err(|shared: Arc<Error>| Error::shared(&shared))?,
        };
        // Belt and braces: moka expires entries on time, but never serve one past the bound.
        let age = lookup.loaded_at.elapsed();
        if age >= self.bound {
            cache.invalidate(hash).await;
            metrics.key_cache(false);
            return Box::pin(load(store, cipher, hash)).await.map(Arc::new);
        }
        let missed = missed.load(Ordering::Relaxed);
        if !missed
            && age >= self.refresh_after(hash)
            && !lookup.refreshing.swap(true, Ordering::Relaxed)
        {
            self.read_ahead(cache, store, cipher, *hash);
        }
        metrics.key_cache(!missed);
        Ok(lookup)
    }

    /// When an entry in use is read again: between half and three quarters of the bound after
    /// its read began, spread by the key's hash, so the keys filled together (at start, say)
    /// are not all read again together.
    fn refresh_after(&self, hash: &KeyHash) -> Duration {
        let spread = self.bound / 4 * u32::from(hash.as_bytes()[0]) / 256;
        self.bound / 2 + spread
    }

    /// Queues an entry in use to be read again in the background while it is still served: a
    /// hot key's requests then never wait for a read when its entry expires. The new entry is
    /// stamped before its read, like every entry, so it never outlives what it read by more
    /// than the bound.
    fn read_ahead(
        &self,
        cache: &Cache<KeyHash, Arc<Lookup>>,
        store: &Store,
        cipher: &Cipher,
        hash: KeyHash,
    ) {
        let queue = self.read_ahead.get_or_init(|| {
            let (queue, hashes) = mpsc::channel(MAX_ENTRIES as usize);
            let gather = self.bound / 16;
            tokio::spawn(read_ahead_in_batches(
                hashes,
                cache.clone(),
                store.clone(),
                cipher.clone(),
                gather,
            ));
            queue
        });
        // Should the queue be full or the task gone (its runtime shut down), the entry simply
        // expires and the next request reads it itself.
        let _ = queue.try_send(hash);
    }
}

/// Reads the queued keys again, many per query: after the first key of a batch arrives, the
/// keys that come due within `gather` (a sixteenth of the bound) join it. One query per key
/// made the database's work grow with the keys in use: ~400 queries a second for 256 hot keys,
/// ~32,000 at the cache's 20,000 (now ~16 and ~250). An entry queued at half to three quarters
/// of the bound is replaced long before it expires. The task ends when the cache is dropped.
async fn read_ahead_in_batches(
    mut hashes: mpsc::Receiver<KeyHash>,
    cache: Cache<KeyHash, Arc<Lookup>>,
    store: Store,
    cipher: Cipher,
    gather: Duration,
) {
    let mut batch = Vec::with_capacity(READ_AHEAD_BATCH);
    while hashes.recv_many(&mut batch, READ_AHEAD_BATCH).await > 0 {
        if batch.len() < READ_AHEAD_BATCH {
            tokio::time::sleep(gather).await;
            while batch.len() < READ_AHEAD_BATCH {
                let Ok(hash) = hashes.try_recv() else { break };
                batch.push(hash);
            }
        }
        // On failure the entries simply expire, and the next requests read them themselves.
        if let Ok(fresh) = load_many(&store, &cipher, &batch).await {
            for (hash, lookup) in fresh {
                cache.insert(hash, Arc::new(lookup)).await;
            }
        }
        batch.clear();
    }
}

/// One read of many keys and their partners; the instant is taken before the read starts.
/// A key whose secret cannot be decrypted is left out (its entry expires, and the request
/// that reads it then reports the error).
async fn load_many(
    store: &Store,
    cipher: &Cipher,
    hashes: &[KeyHash],
) -> Result<Vec<(KeyHash, Lookup)>> {
    let loaded_at = Instant::now();
    let mut found: HashMap<KeyHash, KeyRecord> =
        store.keys_by_hashes(hashes).await?.into_iter().collect();
    let mut fresh = Vec::with_capacity(hashes.len());
    for hash in hashes {
        // A hash queued twice is read once; `found` gives its record to the first only.
        if fresh.iter().any(|(seen, _)| seen == hash) {
            continue;
        }
        if let Ok(lookup) = lookup_of(loaded_at, found.remove(hash), cipher) {
            fresh.push((*hash, lookup));
        }
    }
    Ok(fresh)
}

/// One read of the key and its partner; the instant is taken before the read starts.
async fn load(store: &Store, cipher: &Cipher, hash: &KeyHash) -> Result<Lookup> {
    let loaded_at = Instant::now();
    let record = store.key_by_hash(hash).await?;
    lookup_of(loaded_at, record, cipher)
}

/// The entry for what a read that began at `loaded_at` found (`None`: no such key).
fn lookup_of(loaded_at: Instant, record: Option<KeyRecord>, cipher: &Cipher) -> Result<Lookup> {
    let Some(record) = record else {
        return Ok(Lookup {
            loaded_at,
            key: None,
            refreshing: AtomicBool::new(false),
        });
    };
    let signature_key = match record.revoked_at {
        Some(_) => None,
        None => Some(SignatureKey::new(&decrypt_secret(
            cipher,
            record.partner.id.as_str(),
            &record.key_id,
            &record.secret_ciphertext,
        )?)),
    };
    Ok(Lookup {
        loaded_at,
        key: Some(AuthKey {
            key_id: record.key_id,
            created_at: record.created_at,
            revoked_at: record.revoked_at,
            expires_at: record.expires_at,
            class: Arc::new(record.class),
            mode: record.mode,
            legacy: record.legacy,
            last_used_at: record.last_used_at,
            partner: Arc::new(record.partner),
            signature_key,
            last_noted: std::sync::atomic::AtomicI64::new(i64::MIN),
        }),
        refreshing: AtomicBool::new(false),
    })
}

fn decrypt_secret(
    cipher: &Cipher,
    partner_id: &str,
    key_id: &str,
    ciphertext: &[u8],
) -> Result<SecretKey> {
    let plain = cipher
        .decrypt(ciphertext, &secret_key_aad(partner_id, key_id))
        .map_err(|e| {
            Error::Unexpected(anyhow::Error::new(e).context(format!("secret key of key {key_id}")))
        })?;
    // The plaintext is wiped when dropped, whichever way this returns.
    let plain = secrecy::zeroize::Zeroizing::new(plain);
    let text = std::str::from_utf8(&plain).map_err(|_| {
        Error::Unexpected(anyhow::anyhow!("secret key of key {key_id} is not text"))
    })?;
    SecretKey::parse_or_legacy(text)
        .map_err(|_| Error::Unexpected(anyhow::anyhow!("secret key of key {key_id} is malformed")))
}

/// Waits until every node's view of what was just committed is fresh: called after the
/// commit of every change that must hold on every node, before it is acknowledged. `bound`
/// is `KEYWARD_KEY_CACHE_MS` (the operator commands have no cache of their own, but wait for
/// the servers').
pub async fn wait_out(bound: Duration) {
    if !bound.is_zero() {
        tokio::time::sleep(bound).await;
    }
}
