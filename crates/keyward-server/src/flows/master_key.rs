//! Master-key rotation without downtime (`keyward rotate-master-key`): every secret key and
//! every email body still waiting is re-encrypted under the new key, in batches, then the
//! database's key check is. Restartable and idempotent: a value already under the new key is
//! left alone, so running it again after an interruption finishes the job. Nodes keep serving
//! throughout when they run with both keys (see `docs/deployment.md`).

use crate::crypto::{outbox_aad, secret_key_aad, Cipher, MasterKey, MASTER_KEY_CHECK_AAD};
use crate::store::{Encrypted, Store, StoreError};

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
    mut progress: impl FnMut(Encrypted, &Counts),
) -> Result<Rotation, RotationError> {
    let target = Cipher::new(new);
    // The database's key check first: a wrong current key must not get anywhere.
    let check_name = crate::startup::MASTER_KEY_CHECK;
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
    for which in [Encrypted::SecretKeys, Encrypted::EmailBodies] {
        let counts = match which {
            Encrypted::SecretKeys => &mut rotation.secret_keys,
            Encrypted::EmailBodies => &mut rotation.email_bodies,
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
    Ok(rotation)
}
