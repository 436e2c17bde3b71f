//! What the leaked-key flows read (SPEC §9.2): a service token by its hash, and the pairs whose
//! secret's hash is not stored yet (made before migration 0007).

use super::{Result, Store};
use keyward_core::KeyHash;
use sqlx::Row;

/// A pair whose secret-key hash is missing: what decrypting its secret needs.
#[derive(Debug)]
pub struct UnhashedKey {
    pub key_id: String,
    pub partner_id: String,
    pub secret_ciphertext: Vec<u8>,
}

impl Store {
    /// The name of the service token with this hash and whether it is revoked, if it is ours.
    pub async fn service_token_by_hash(&self, hash: &KeyHash) -> Result<Option<(String, bool)>> {
        let row = sqlx::query("SELECT name, revoked_at FROM service_tokens WHERE token_hash = $1")
            .bind(hash.as_bytes().to_vec())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| {
            let revoked_at: Option<i64> = row.try_get("revoked_at")?;
            Ok((row.try_get("name")?, revoked_at.is_some()))
        })
        .transpose()
    }

    /// Up to `limit` unrevoked pairs without a secret-key hash.
    pub async fn keys_without_secret_hash(&self, limit: i64) -> Result<Vec<UnhashedKey>> {
        let rows = sqlx::query(
            "SELECT id, partner_id, secret_ciphertext FROM partner_keys \
             WHERE secret_key_hash IS NULL AND revoked_at IS NULL ORDER BY id LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(UnhashedKey {
                    key_id: row.try_get("id")?,
                    partner_id: row.try_get("partner_id")?,
                    secret_ciphertext: row.try_get("secret_ciphertext")?,
                })
            })
            .collect()
    }

    /// Stores the secret-key hashes of pairs that had none, in one transaction.
    pub async fn set_secret_hashes(&self, hashes: &[(String, KeyHash)]) -> Result<()> {
        let mut tx = self.begin().await?;
        for (key_id, hash) in hashes {
            sqlx::query(
                "UPDATE partner_keys SET secret_key_hash = $1 WHERE id = $2 AND secret_key_hash IS NULL",
            )
            .bind(hash.as_bytes().to_vec())
            .bind(key_id.as_str())
            .execute(&mut *tx.tx)
            .await?;
        }
        tx.commit().await
    }
}
