//! Service tokens' rows (SPEC §7.1). Tokens are stored only as their SHA-256.

use super::{Result, Store, Tx};
use keyward_core::KeyHash;
use sqlx::{FromRow, Row};

/// A service token as operators see it (never the token itself).
#[derive(Debug, FromRow)]
pub struct ServiceTokenRecord {
    pub name: String,
    pub hint: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

/// A live token: its hash, and the name it was created with.
#[derive(Debug, Clone)]
pub struct LiveServiceToken {
    pub hash: KeyHash,
    pub name: String,
}

impl Store {
    /// Every token that is not revoked (a handful: one per calling service).
    pub async fn live_service_tokens(&self) -> Result<Vec<LiveServiceToken>> {
        let rows =
            sqlx::query("SELECT token_hash, name FROM service_tokens WHERE revoked_at IS NULL")
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|row| {
                let bytes: Vec<u8> = row.try_get("token_hash")?;
                let hash: [u8; 32] = bytes.try_into().map_err(|_| {
                    super::StoreError::Corrupt("a service token hash is not 32 bytes".into())
                })?;
                Ok(LiveServiceToken {
                    hash: KeyHash::from_bytes(hash),
                    name: row.try_get("name")?,
                })
            })
            .collect()
    }

    /// Every token, live ones first, then by name.
    pub async fn service_tokens(&self) -> Result<Vec<ServiceTokenRecord>> {
        Ok(sqlx::query_as(
            "SELECT name, hint, created_at, last_used_at, revoked_at FROM service_tokens \
             ORDER BY CASE WHEN revoked_at IS NULL THEN 0 ELSE 1 END, name, created_at",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Records when live tokens were last used (approximate: each node flushes in batches).
    pub async fn record_service_tokens_used(&self, used: &[(String, i64)]) -> Result<()> {
        let mut writer = self.writer().await?;
        for (name, at) in used {
            sqlx::query(
                "UPDATE service_tokens SET last_used_at = $1 WHERE name = $2 AND revoked_at IS NULL \
                 AND (last_used_at IS NULL OR last_used_at < $1)",
            )
            .bind(at)
            .bind(name)
            .execute(&mut *writer)
            .await?;
        }
        writer.done().await
    }
}

impl Tx {
    /// A new token. [`super::StoreError::Conflict`] if a live token has this name.
    pub async fn insert_service_token(
        &mut self,
        name: &str,
        hash: &KeyHash,
        hint: &str,
        now: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO service_tokens (id, name, token_hash, hint, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(uuid::Uuid::now_v7().to_string())
        .bind(name)
        .bind(hash.as_bytes().to_vec())
        .bind(hint)
        .bind(now)
        .execute(self.conn().await?)
        .await?;
        Ok(())
    }

    /// Revokes the live token of this name; `false` if there is none.
    pub async fn revoke_service_token(&mut self, name: &str, now: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE service_tokens SET revoked_at = $1 WHERE name = $2 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(name)
        .execute(self.conn().await?)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}
