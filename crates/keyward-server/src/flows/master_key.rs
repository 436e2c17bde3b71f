//! The master key: loading it (creating the key file only for a new, empty database), proving
//! it is the database's own, and rotating it without downtime (`keyward rotate-master-key`):
//! every secret key and every email body still waiting is re-encrypted under the new key, in
//! batches, then the database's key check is. Restartable and idempotent: a value already
//! under the new key is left alone, so running it again after an interruption finishes the
//! job. Nodes keep serving throughout when they run with both keys (see `docs/deployment.md`).

use crate::config::{MasterKeySource, Settings};
use crate::crypto::{
    outbox_aad, secret_key_aad, webhook_secret_aad, Cipher, MasterKey, MASTER_KEY_CHECK_AAD,
};
use crate::store::{Actor, Audit, AuditKind, Encrypted, Store, StoreError};
use anyhow::{bail, Context as _};
use secrecy::ExposeSecret;
use std::path::Path;

/// The metadata row holding a value encrypted under the master key: decrypting it proves a key
/// is the database's own.
pub const MASTER_KEY_CHECK: &str = "master_key_check";

/// Rows read per batch (and rewritten per transaction).
const BATCH: i64 = 500;

/// What happened to one kind of value.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counts {
    pub rotated: u64,
    /// Already under the new key (an earlier, interrupted run).
    pub already: u64,
    /// Under neither key: corrupt, or under a third key. Left as they are.
    pub unreadable: u64,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct Rotation {
    pub secret_keys: Counts,
    pub email_bodies: Counts,
    pub webhook_secrets: Counts,
}

#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("could not encrypt under the new key")]
    Encrypt(#[from] crate::crypto::EncryptError),
    #[error("the database's master-key check decrypts under neither key: is KEYWARD_MASTER_KEY this database's key?")]
    WrongKey,
}

/// Re-encrypts under `new` everything `old` (the current key, and the previous one if any)
/// can decrypt. `progress` hears after each batch.
pub async fn rotate(
    store: &Store,
    old: &Cipher,
    new: &MasterKey,
    operator: &str,
    mut progress: impl FnMut(Encrypted, &Counts),
) -> Result<Rotation, RotationError> {
    let target = Cipher::new(new);
    // The database's key check first: a wrong current key must not get anywhere.
    let check_name = MASTER_KEY_CHECK;
    let check = match store.meta(check_name).await? {
        Some(check) => Some(
            target
                .decrypt(&check, MASTER_KEY_CHECK_AAD)
                .or_else(|_| old.decrypt(&check, MASTER_KEY_CHECK_AAD))
                .map_err(|_| RotationError::WrongKey)?,
        ),
        None => None,
    };
    let mut rotation = Rotation::default();
    for which in [
        Encrypted::SecretKeys,
        Encrypted::EmailBodies,
        Encrypted::WebhookSecrets,
    ] {
        let counts = match which {
            Encrypted::SecretKeys => &mut rotation.secret_keys,
            Encrypted::EmailBodies => &mut rotation.email_bodies,
            Encrypted::WebhookSecrets => &mut rotation.webhook_secrets,
        };
        let mut after = String::new();
        loop {
            let batch = store.encrypted_after(which, &after, BATCH).await?;
            let Some(last) = batch.last() else { break };
            after = last.id.clone();
            let mut rewrites = Vec::with_capacity(batch.len());
            for value in &batch {
                let aad = match which {
                    Encrypted::SecretKeys => secret_key_aad(&value.owner, &value.id),
                    Encrypted::EmailBodies => outbox_aad(&value.id),
                    Encrypted::WebhookSecrets => webhook_secret_aad(&value.id),
                };
                if target.decrypt(&value.ciphertext, &aad).is_ok() {
                    counts.already += 1;
                    continue;
                }
                match old.decrypt(&value.ciphertext, &aad) {
                    Ok(plain) => {
                        let encrypted = target.encrypt(&plain, &aad)?;
                        rewrites.push((value.id.clone(), value.ciphertext.clone(), encrypted));
                    }
                    Err(_) => counts.unreadable += 1,
                }
            }
            counts.rotated += store.rewrite_encrypted(which, &rewrites).await?;
            progress(which, counts);
        }
    }
    // Last: from now on a node started with the old key alone refuses to start.
    if let Some(plain) = check {
        store
            .replace_meta(check_name, &target.encrypt(&plain, MASTER_KEY_CHECK_AAD)?)
            .await?;
    }
    let mut tx = store.begin().await?;
    let detail = rotation.describe();
    let at = chrono::Utc::now();
    let mut entry = Audit::new(AuditKind::MasterKeyRotated, Actor::Operator(operator), at);
    entry.detail = Some(&detail);
    tx.audit(&entry).await?;
    tx.commit().await?;
    Ok(rotation)
}

impl Rotation {
    /// Unreadable values (under neither key), of every kind.
    pub fn unreadable(&self) -> u64 {
        self.secret_keys.unreadable + self.email_bodies.unreadable + self.webhook_secrets.unreadable
    }

    /// What was done, for the audit log and the operator.
    pub fn describe(&self) -> String {
        format!(
            "{} secret keys, {} email bodies and {} webhook secrets re-encrypted ({} already done, {} unreadable)",
            self.secret_keys.rotated,
            self.email_bodies.rotated,
            self.webhook_secrets.rotated,
            self.secret_keys.already + self.email_bodies.already + self.webhook_secrets.already,
            self.unreadable()
        )
    }
}

/// The cipher of the master key (and, during a rotation, the previous one) for an open store,
/// proven to be the one the database was created with.
pub async fn cipher_for(settings: &Settings, store: &Store) -> anyhow::Result<Cipher> {
    let key = load_master_key(settings, store).await?;
    let cipher = match &settings.master_key_previous {
        None => Cipher::new(&key),
        Some(previous) => Cipher::with_previous(
            &key,
            &read_master_key(previous, "KEYWARD_MASTER_KEY_PREVIOUS")?,
        ),
    };
    check_master_key(store, &cipher).await?;
    Ok(cipher)
}

/// A master key that must exist (the previous one of a rotation, or the new one).
pub fn read_master_key(source: &MasterKeySource, variable: &str) -> anyhow::Result<MasterKey> {
    match source {
        MasterKeySource::Inline(text) => MasterKey::from_base64(text.expose_secret())
            .with_context(|| format!("{variable} is not valid")),
        MasterKeySource::File(path) => {
            let text = std::fs::read_to_string(path).with_context(|| {
                format!(
                    "could not read the key file {} ({variable}_FILE)",
                    path.display()
                )
            })?;
            MasterKey::from_base64(&text)
                .with_context(|| format!("the key file {} is not valid", path.display()))
        }
    }
}

/// The master key from the environment or its file. The file is created (mode 0600) only for
/// a new, empty database: otherwise a missing key would silently make every stored secret
/// unreadable.
async fn load_master_key(settings: &Settings, store: &Store) -> anyhow::Result<MasterKey> {
    match &settings.master_key {
        MasterKeySource::Inline(text) => {
            MasterKey::from_base64(text.expose_secret()).context("KEYWARD_MASTER_KEY is not valid")
        }
        MasterKeySource::File(path) => match std::fs::read_to_string(path) {
            Ok(text) => MasterKey::from_base64(&text)
                .with_context(|| format!("the master key file {} is not valid", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if !store.is_empty().await? {
                    bail!(
                        "the master key file {} is missing, but the database already holds data encrypted under a master key. \
                         Restore the file from your backup, or set KEYWARD_MASTER_KEY / KEYWARD_MASTER_KEY_FILE to the key.",
                        path.display()
                    );
                }
                let key = MasterKey::generate();
                write_new_key_file(path, &key)?;
                tracing::warn!(path = %path.display(), "created a new master key: back it up; without it the stored keys cannot be read");
                Ok(key)
            }
            Err(e) => Err(e)
                .with_context(|| format!("could not read the master key file {}", path.display())),
        },
    }
}

fn write_new_key_file(path: &Path, key: &MasterKey) -> anyhow::Result<()> {
    use std::io::Write;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("could not create the master key file {}", path.display()))?;
    file.write_all(format!("{}\n", key.to_base64()).as_bytes())?;
    file.sync_all()?;
    Ok(())
}

/// Proves the master key is the one the database was created with, or records it if new.
/// Nodes that start together on a new database race to record theirs: the first wins, and
/// every node then checks against what was recorded.
async fn check_master_key(store: &Store, cipher: &Cipher) -> anyhow::Result<()> {
    if store.meta(MASTER_KEY_CHECK).await?.is_none() {
        let mut tx = store.begin().await?;
        tx.insert_meta(
            MASTER_KEY_CHECK,
            &cipher.encrypt(b"keyward", MASTER_KEY_CHECK_AAD)?,
        )
        .await?;
        tx.commit().await?;
    }
    let stored = store
        .meta(MASTER_KEY_CHECK)
        .await?
        .context("the master key check was not recorded")?;
    cipher.decrypt(&stored, MASTER_KEY_CHECK_AAD).map_err(|_| {
        anyhow::anyhow!(
            "the master key does not match the one this database was created with. \
             Set KEYWARD_MASTER_KEY or KEYWARD_MASTER_KEY_FILE to the original key."
        )
    })?;
    Ok(())
}
