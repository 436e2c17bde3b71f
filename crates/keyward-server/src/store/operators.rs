//! What operators read: partners found by fragments, a partner's keys and links, the audit
//! log, how long keys have gone unused; and the batched record of when keys were last used.

use super::records::{KeyUse, Partner, PartnerRow, PARTNER_COLUMNS};
use super::{Backend, Result, Store};
use keyward_core::{PartnerId, PartnerStatus};
use sqlx::{FromRow, Row};

/// How many keys' last uses one statement records (the JSON array stays under ~100 KiB).
const KEY_USES_PER_STATEMENT: usize = 1_000;

/// What `keyward partner list` filters on. Patterns match anywhere in the value, case
/// insensitively; `*` stands for any run of characters.
#[derive(Debug, Default, Clone)]
pub struct PartnerFilter {
    pub status: Option<PartnerStatus>,
    pub code_like: Option<String>,
    pub email_like: Option<String>,
    pub created_since: Option<i64>,
    pub limit: i64,
}

/// One row of `keyward partner list`: the partner and its current key.
#[derive(Debug, Clone)]
pub struct PartnerSummary {
    pub partner: Partner,
    pub key_hint: Option<String>,
    pub key_created_at: Option<i64>,
    pub key_last_used_at: Option<i64>,
    /// Every pair that is not revoked: the primary (and a retiring one) and the restricted.
    pub pairs: Vec<KeyInfo>,
}

/// A key pair as operators see it: never the key, only its hint.
#[derive(Debug, Clone, FromRow)]
pub struct KeyInfo {
    pub id: String,
    pub public_key_hint: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub last_used_at: Option<i64>,
    pub last_used_ip: Option<String>,
    /// `primary` or `restricted` (SPEC §8.1).
    pub kind: String,
    /// `live` or `test`.
    pub mode: String,
    /// A restricted pair's name.
    pub name: Option<String>,
    /// A restricted pair's scopes, space-separated.
    pub scopes: Option<String>,
    /// A restricted pair's own expiry.
    pub valid_until: Option<i64>,
    /// Moved in with keys not of §1's format (SPEC §10.2).
    #[sqlx(try_from = "i64")]
    pub legacy: super::Flag,
}

/// The columns of [`KeyInfo`].
const KEY_INFO_COLUMNS: &str = "id, public_key_hint, created_at, expires_at, revoked_at, last_used_at, last_used_ip, kind, mode, name, scopes, valid_until, legacy";

impl KeyInfo {
    /// current, retiring, expired or revoked, at `now`.
    pub fn state(&self, now: i64) -> &'static str {
        match (self.revoked_at, self.expires_at) {
            (Some(_), _) => "revoked",
            (None, Some(at)) if at <= now => "expired",
            (None, Some(_)) => "retiring",
            (None, None) => "current",
        }
    }
}

/// A link as operators see it: never the token.
#[derive(Debug, Clone, FromRow)]
pub struct LinkInfo {
    pub purpose: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub used_at: Option<i64>,
    pub superseded_at: Option<i64>,
    pub requested_ip: Option<String>,
    pub overlap_seconds: i64,
}

impl LinkInfo {
    pub fn state(&self, now: i64) -> &'static str {
        if self.used_at.is_some() {
            "used"
        } else if self.superseded_at.is_some() {
            "replaced"
        } else if self.expires_at <= now {
            "expired"
        } else {
            "open"
        }
    }
}

/// What `keyward audit` filters on.
#[derive(Debug, Default, Clone)]
pub struct AuditFilter {
    pub partner_id: Option<PartnerId>,
    pub event: Option<String>,
    pub since: Option<i64>,
    pub until: Option<i64>,
    pub limit: i64,
    /// The latest `limit` events, newest first (the console); otherwise oldest first.
    pub newest_first: bool,
}

/// One audit event, with the partner's code when the partner still exists.
#[derive(Debug, Clone, FromRow)]
pub struct AuditRecord {
    pub id: String,
    pub created_at: i64,
    pub event: String,
    pub partner_id: Option<String>,
    pub partner_code: Option<String>,
    pub actor: Option<String>,
    pub ip: Option<String>,
    pub detail: Option<String>,
}

/// Current keys by how long they have gone unused (never used: counted from creation).
#[derive(Debug, Default, Clone, Copy)]
pub struct UnusedKeys {
    pub over_30_days: i64,
    pub over_90_days: i64,
}

/// A LIKE pattern matching `fragment` anywhere, case-insensitively: `%` and `_` are taken
/// literally, `*` stands for any run of characters.
fn like_pattern(fragment: &str) -> String {
    let mut pattern = String::from("%");
    for c in fragment.to_lowercase().chars() {
        match c {
            '%' | '_' | '\\' => {
                pattern.push('\\');
                pattern.push(c);
            }
            '*' => pattern.push('%'),
            c => pattern.push(c),
        }
    }
    pattern.push('%');
    pattern
}

const DAY_MS: i64 = 86_400_000;

impl Store {
    /// Partners matching `filter`, newest first, with their current key. The scan walks
    /// partners from the newest and stops after `limit` matches.
    pub async fn list_partners(&self, filter: &PartnerFilter) -> Result<Vec<PartnerSummary>> {
        let sql = format!(
            "SELECT {PARTNER_COLUMNS}, k.public_key_hint AS key_hint, k.created_at AS key_created_at, \
                    k.last_used_at AS key_last_used_at \
             FROM partners p LEFT JOIN partner_keys k \
               ON k.partner_id = p.id AND k.revoked_at IS NULL AND k.expires_at IS NULL AND k.kind = 'primary' \
             WHERE ($1 = '' OR p.status = $1) \
               AND ($2 = '' OR p.code_folded LIKE $2 ESCAPE '\\') \
               AND ($3 = '' OR lower(p.email) LIKE $3 ESCAPE '\\') \
               AND p.created_at >= $4 \
             ORDER BY p.created_at DESC, p.id DESC LIMIT $5"
        );
        let rows = sqlx::query(&sql)
            .bind(filter.status.map_or("", PartnerStatus::as_str))
            .bind(
                filter
                    .code_like
                    .as_deref()
                    .map(like_pattern)
                    .unwrap_or_default(),
            )
            .bind(
                filter
                    .email_like
                    .as_deref()
                    .map(like_pattern)
                    .unwrap_or_default(),
            )
            .bind(filter.created_since.unwrap_or(i64::MIN))
            .bind(filter.limit)
            .fetch_all(&self.pool)
            .await?;
        let mut partners = rows
            .iter()
            .map(|row| {
                Ok(PartnerSummary {
                    partner: PartnerRow::from_row(row)?.try_into()?,
                    key_hint: row.try_get("key_hint")?,
                    key_created_at: row.try_get("key_created_at")?,
                    key_last_used_at: row.try_get("key_last_used_at")?,
                    pairs: Vec::new(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        // Their live pairs, 500 partners per query (one indexed lookup each).
        for chunk in partners.chunks_mut(500) {
            let placeholders: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let sql = format!(
                "SELECT partner_id, {KEY_INFO_COLUMNS} FROM partner_keys \
                 WHERE revoked_at IS NULL AND partner_id IN ({}) ORDER BY created_at, id",
                placeholders.join(", ")
            );
            let mut query = sqlx::query(&sql);
            for summary in chunk.iter() {
                query = query.bind(summary.partner.id.as_str().to_owned());
            }
            for row in query.fetch_all(&self.pool).await? {
                let partner_id: String = row.try_get("partner_id")?;
                let key = KeyInfo::from_row(&row)?;
                if let Some(summary) = chunk
                    .iter_mut()
                    .find(|s| s.partner.id.as_str() == partner_id)
                {
                    summary.pairs.push(key);
                }
            }
        }
        Ok(partners)
    }

    /// The partner's key pairs, newest first (at most 20).
    pub async fn partner_keys(&self, partner_id: &PartnerId) -> Result<Vec<KeyInfo>> {
        let sql = format!(
            "SELECT {KEY_INFO_COLUMNS} FROM partner_keys WHERE partner_id = $1 ORDER BY created_at DESC, id DESC LIMIT 20"
        );
        Ok(sqlx::query_as(&sql)
            .bind(partner_id.as_str())
            .fetch_all(&self.pool)
            .await?)
    }

    /// The partner's pairs that are not revoked (at most 11: the primary, a retiring one and
    /// 9 restricted), oldest first.
    pub async fn live_partner_keys(&self, partner_id: &PartnerId) -> Result<Vec<KeyInfo>> {
        let sql = format!(
            "SELECT {KEY_INFO_COLUMNS} FROM partner_keys WHERE partner_id = $1 AND revoked_at IS NULL ORDER BY created_at, id"
        );
        Ok(sqlx::query_as(&sql)
            .bind(partner_id.as_str())
            .fetch_all(&self.pool)
            .await?)
    }

    /// The partner's links, newest first (at most 20): purpose, times and state, never tokens.
    pub async fn partner_links(&self, partner_id: &PartnerId) -> Result<Vec<LinkInfo>> {
        Ok(sqlx::query_as(
            "SELECT purpose, created_at, expires_at, used_at, superseded_at, requested_ip, overlap_seconds \
             FROM links WHERE partner_id = $1 ORDER BY created_at DESC, id DESC LIMIT 20",
        )
        .bind(partner_id.as_str())
        .fetch_all(&self.pool)
        .await?)
    }

    /// Audit events matching `filter`, oldest first (for shipping as JSON lines).
    pub async fn audit_log(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>> {
        // One of two fixed words, never input.
        let order = if filter.newest_first { "DESC" } else { "ASC" };
        let sql = format!(
            "SELECT a.id, a.created_at, a.event, a.partner_id, p.code AS partner_code, a.actor, a.ip, a.detail \
             FROM audit_events a LEFT JOIN partners p ON p.id = a.partner_id \
             WHERE ($1 = '' OR a.partner_id = $1) AND ($2 = '' OR a.event = $2) \
               AND a.created_at >= $3 AND a.created_at <= $4 \
             ORDER BY a.created_at {order}, a.id {order} LIMIT $5"
        );
        Ok(sqlx::query_as(&sql)
            .bind(filter.partner_id.as_ref().map_or("", PartnerId::as_str))
            .bind(filter.event.as_deref().unwrap_or(""))
            .bind(filter.since.unwrap_or(i64::MIN))
            .bind(filter.until.unwrap_or(i64::MAX))
            .bind(filter.limit)
            .fetch_all(&self.pool)
            .await?)
    }

    /// Records when keys were last used, as each node flushes them every few seconds. Never
    /// moves a time back. One statement per `KEY_USES_PER_STATEMENT` keys, the uses sent as
    /// one JSON array: a statement per key was a round trip each, and every flush a burst of
    /// hundreds of them, which on PostgreSQL took ~90 ms of the database's CPU within 0.2 s on
    /// the cores the requests are served from (`docs/benchmarks.md`, stop 42). Each statement
    /// stands alone: a flush cut short leaves some keys' times a flush behind, as a node that
    /// dies does.
    pub async fn record_keys_used(&self, used: &[KeyUse]) -> Result<()> {
        // The uses as rows (`id`, `at`, `ip`), then one update from them.
        let sql = match self.backend {
            Backend::Sqlite => {
                "UPDATE partner_keys AS k SET last_used_at = u.at, last_used_ip = u.ip \
                 FROM (SELECT value ->> 'id' AS id, value ->> 'at' AS at, value ->> 'ip' AS ip \
                       FROM json_each($1)) AS u \
                 WHERE k.id = u.id AND (k.last_used_at IS NULL OR k.last_used_at < u.at)"
            }
            Backend::Postgres => {
                "UPDATE partner_keys AS k SET last_used_at = u.at, last_used_ip = u.ip \
                 FROM json_to_recordset($1::json) AS u(id TEXT, at BIGINT, ip TEXT) \
                 WHERE k.id = u.id AND (k.last_used_at IS NULL OR k.last_used_at < u.at)"
            }
        };
        let mut writer = self.writer().await?;
        for chunk in used.chunks(KEY_USES_PER_STATEMENT) {
            let uses: Vec<serde_json::Value> = chunk
                .iter()
                .map(|KeyUse { key_id, at, ip }| {
                    serde_json::json!({ "id": key_id, "at": at, "ip": ip.map(|ip| ip.to_string()) })
                })
                .collect();
            sqlx::query(sql)
                .bind(serde_json::Value::Array(uses).to_string())
                .execute(&mut *writer)
                .await?;
        }
        writer.done().await
    }

    /// Current keys of active partners unused for more than 30 and 90 days (a key never used
    /// counts from its creation).
    pub async fn unused_keys(&self, now: i64) -> Result<UnusedKeys> {
        let row = sqlx::query(
            "SELECT COALESCE(SUM(CASE WHEN COALESCE(k.last_used_at, k.created_at) < $1 THEN 1 ELSE 0 END), 0) AS d30, \
                    COALESCE(SUM(CASE WHEN COALESCE(k.last_used_at, k.created_at) < $2 THEN 1 ELSE 0 END), 0) AS d90 \
             FROM partner_keys k JOIN partners p ON p.id = k.partner_id \
             WHERE k.revoked_at IS NULL AND k.expires_at IS NULL AND p.status = 'active'",
        )
        .bind(now - 30 * DAY_MS)
        .bind(now - 90 * DAY_MS)
        .fetch_one(&self.pool)
        .await?;
        Ok(UnusedKeys {
            over_30_days: row.try_get("d30")?,
            over_90_days: row.try_get("d90")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::like_pattern;

    #[test]
    fn fragments_match_anywhere_and_wildcards_are_literal() {
        assert_eq!(like_pattern("Acme"), "%acme%");
        assert_eq!(like_pattern("a*z"), "%a%z%");
        assert_eq!(like_pattern("50%_off"), "%50\\%\\_off%");
    }
}
