//! What a master-key rotation reads and rewrites: every encrypted value, in batches ordered by
//! id (so a rotation can stop and start again anywhere), each rewrite conditional on the
//! ciphertext it read (so a row changed meanwhile is left alone).

use super::{Result, Store};
use sqlx::Row;

/// Which encrypted values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encrypted {
    /// Partners' secret keys (`partner_keys.secret_ciphertext`).
    SecretKeys,
    /// Bodies of emails not sent yet (`outbox.body_ciphertext`).
    EmailBodies,
    /// Webhook endpoints' signing secrets (`webhook_endpoints.secret_ciphertext`).
    WebhookSecrets,
}

/// One encrypted value: its row, the row's associated-data parts, the ciphertext.
#[derive(Debug, Clone)]
pub struct EncryptedValue {
    pub id: String,
    /// The partner id (secret keys); empty for email bodies.
    pub owner: String,
    pub ciphertext: Vec<u8>,
}

impl Encrypted {
    fn select(self) -> &'static str {
        match self {
            Encrypted::SecretKeys => {
                "SELECT id, partner_id AS owner, secret_ciphertext AS ciphertext FROM partner_keys \
                 WHERE id > $1 ORDER BY id LIMIT $2"
            }
            Encrypted::EmailBodies => {
                "SELECT id, '' AS owner, body_ciphertext AS ciphertext FROM outbox \
                 WHERE id > $1 AND body_ciphertext IS NOT NULL ORDER BY id LIMIT $2"
            }
            Encrypted::WebhookSecrets => {
                "SELECT id, '' AS owner, secret_ciphertext AS ciphertext FROM webhook_endpoints \
                 WHERE id > $1 ORDER BY id LIMIT $2"
            }
        }
    }

    fn update(self) -> &'static str {
        match self {
            Encrypted::SecretKeys => {
                "UPDATE partner_keys SET secret_ciphertext = $1 WHERE id = $2 AND secret_ciphertext = $3"
            }
            Encrypted::EmailBodies => {
                "UPDATE outbox SET body_ciphertext = $1 WHERE id = $2 AND body_ciphertext = $3"
            }
            Encrypted::WebhookSecrets => {
                "UPDATE webhook_endpoints SET secret_ciphertext = $1 WHERE id = $2 AND secret_ciphertext = $3"
            }
        }
    }
}

impl Store {
    /// Up to `limit` values of `which` whose row id sorts after `after`.
    pub async fn encrypted_after(
        &self,
        which: Encrypted,
        after: &str,
        limit: i64,
    ) -> Result<Vec<EncryptedValue>> {
        let rows = sqlx::query(which.select())
            .bind(after)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                Ok(EncryptedValue {
                    id: row.try_get("id")?,
                    owner: row.try_get("owner")?,
                    ciphertext: row.try_get("ciphertext")?,
                })
            })
            .collect()
    }

    /// Rewrites values (id, old ciphertext, new ciphertext) in one transaction; a row whose
    /// ciphertext is no longer the old one (sent, revoked and rewritten, …) is left alone.
    /// Returns how many were rewritten.
    pub async fn rewrite_encrypted(
        &self,
        which: Encrypted,
        values: &[(String, Vec<u8>, Vec<u8>)],
    ) -> Result<u64> {
        let mut tx = self.begin().await?;
        let mut rewritten = 0;
        for (id, old, new) in values {
            let done = sqlx::query(which.update())
                .bind(new.clone())
                .bind(id)
                .bind(old.clone())
                .execute(&mut *tx.tx)
                .await?;
            rewritten += done.rows_affected();
        }
        tx.commit().await?;
        Ok(rewritten)
    }

    /// Replaces a meta value (the master-key check at the end of a rotation).
    pub async fn replace_meta(&self, name: &str, value: &[u8]) -> Result<()> {
        let mut writer = self.writer().await?;
        sqlx::query("UPDATE meta SET value = $1 WHERE name = $2")
            .bind(value.to_vec())
            .bind(name)
            .execute(&mut *writer)
            .await?;
        writer.done().await
    }
}
