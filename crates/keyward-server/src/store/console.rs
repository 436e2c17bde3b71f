//! The console's logins under way and its sessions (SPEC §10.1): rows, so that any node serves
//! any of them. Tokens and states are stored only as their SHA-256.

use super::{Result, Store};
use keyward_core::KeyHash;
use sqlx::FromRow;

/// A login begun at the identity provider: what its answer is checked with.
#[derive(Debug, FromRow)]
pub struct ConsoleLogin {
    pub nonce: String,
    pub pkce_verifier: String,
}

/// A signed-in person.
#[derive(Debug, Clone, FromRow)]
pub struct ConsoleSession {
    pub email: String,
    /// `admin`, `operator` or `viewer`.
    pub role: String,
    pub csrf_token: String,
    pub created_at: i64,
    pub last_seen_at: i64,
}

/// How long a login may take at the identity provider.
pub const LOGIN_TTL_MS: i64 = 10 * 60_000;

impl Store {
    pub async fn insert_console_login(
        &self,
        state: &KeyHash,
        login: &ConsoleLogin,
        now: i64,
    ) -> Result<()> {
        let mut writer = self.writer().await?;
        // Logins never finished are dropped as new ones begin: the table stays small.
        sqlx::query("DELETE FROM console_logins WHERE created_at < $1")
            .bind(now - LOGIN_TTL_MS)
            .execute(&mut *writer)
            .await?;
        sqlx::query(
            "INSERT INTO console_logins (state_hash, nonce, pkce_verifier, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(state.as_bytes().to_vec())
        .bind(&login.nonce)
        .bind(&login.pkce_verifier)
        .bind(now)
        .execute(&mut *writer)
        .await?;
        writer.done().await
    }

    /// The login with this state, removed: a callback is answered once (a replay finds
    /// nothing). `None` when unknown, used or older than [`LOGIN_TTL_MS`].
    pub async fn take_console_login(
        &self,
        state: &KeyHash,
        now: i64,
    ) -> Result<Option<ConsoleLogin>> {
        let mut writer = self.writer().await?;
        let login = sqlx::query_as(
            "DELETE FROM console_logins WHERE state_hash = $1 AND created_at >= $2 \
             RETURNING nonce, pkce_verifier",
        )
        .bind(state.as_bytes().to_vec())
        .bind(now - LOGIN_TTL_MS)
        .fetch_optional(&mut *writer)
        .await?;
        writer.done().await?;
        Ok(login)
    }

    pub async fn insert_console_session(
        &self,
        token: &KeyHash,
        session: &ConsoleSession,
        absolute_ms: i64,
    ) -> Result<()> {
        let mut writer = self.writer().await?;
        sqlx::query("DELETE FROM console_sessions WHERE created_at < $1")
            .bind(session.created_at - absolute_ms)
            .execute(&mut *writer)
            .await?;
        sqlx::query(
            "INSERT INTO console_sessions (token_hash, email, role, csrf_token, created_at, last_seen_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(token.as_bytes().to_vec())
        .bind(&session.email)
        .bind(&session.role)
        .bind(&session.csrf_token)
        .bind(session.created_at)
        .bind(session.last_seen_at)
        .execute(&mut *writer)
        .await?;
        writer.done().await
    }

    /// The session of this token when it is still alive at `now` (used within `idle_ms`, made
    /// within `absolute_ms`); its last use is moved to `now` (at most once a minute: a page
    /// view is not a write each time). A dead session is removed.
    pub async fn console_session(
        &self,
        token: &KeyHash,
        now: i64,
        idle_ms: i64,
        absolute_ms: i64,
    ) -> Result<Option<ConsoleSession>> {
        let found: Option<ConsoleSession> = sqlx::query_as(
            "SELECT email, role, csrf_token, created_at, last_seen_at FROM console_sessions WHERE token_hash = $1",
        )
        .bind(token.as_bytes().to_vec())
        .fetch_optional(&self.pool)
        .await?;
        let Some(mut session) = found else {
            return Ok(None);
        };
        if now - session.last_seen_at > idle_ms || now - session.created_at > absolute_ms {
            self.delete_console_session(token).await?;
            return Ok(None);
        }
        if now - session.last_seen_at > 60_000 {
            let mut writer = self.writer().await?;
            sqlx::query("UPDATE console_sessions SET last_seen_at = $1 WHERE token_hash = $2")
                .bind(now)
                .bind(token.as_bytes().to_vec())
                .execute(&mut *writer)
                .await?;
            writer.done().await?;
            session.last_seen_at = now;
        }
        Ok(Some(session))
    }

    pub async fn delete_console_session(&self, token: &KeyHash) -> Result<()> {
        let mut writer = self.writer().await?;
        sqlx::query("DELETE FROM console_sessions WHERE token_hash = $1")
            .bind(token.as_bytes().to_vec())
            .execute(&mut *writer)
            .await?;
        writer.done().await
    }
}
