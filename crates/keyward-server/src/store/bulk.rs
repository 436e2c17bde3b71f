//! Bulk import of active partners with their keys: many rows per statement, one transaction
//! per batch. For moving an exchange's partners in (`keyward partner import`, SPEC §10.2) and
//! for filling a store fast (benchmarks).

use super::{Result, Store, Tx};
use crate::clock::millis;
use keyward_core::{Email, KeyHash, PartnerCode, PartnerId};
use sqlx::Row;
use std::collections::HashMap;

/// An active partner with one current key pair, ready to store.
pub struct ImportedPartner {
    pub id: PartnerId,
    pub code: PartnerCode,
    pub email: Email,
    pub key_id: String,
    pub public_key_hash: KeyHash,
    pub public_key_hint: String,
    /// Encrypted under the master key, bound to `id` and `key_id` (`crypto::secret_key_aad`).
    pub secret_ciphertext: Vec<u8>,
    /// SHA-256 of the secret key (SPEC §9.2).
    pub secret_key_hash: KeyHash,
    pub created_at: i64,
    /// The allow-list in its stored form; `None`: any address.
    pub allowed_ips: Option<String>,
    /// Keys not of §1's format (SPEC §10.2).
    pub legacy: bool,
}

/// Rows per statement: well under SQLite's 32,766 and PostgreSQL's 65,535 parameters.
const ROWS_PER_STATEMENT: usize = 500;

impl Store {
    /// Stores `partners` in one transaction. A code that is taken fails the whole batch
    /// ([`super::StoreError::Conflict`]).
    pub async fn import_active_partners(&self, partners: &[ImportedPartner]) -> Result<()> {
        let mut tx = self.begin().await?;
        tx.insert_imported(partners).await?;
        tx.commit().await
    }
}

impl Tx {
    /// Inserts active partners with their one primary pair each, many rows per statement.
    pub async fn insert_imported(&mut self, partners: &[ImportedPartner]) -> Result<()> {
        for chunk in partners.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "INSERT INTO partners (id, code, code_folded, email, status, allowed_ips, created_at, updated_at) VALUES {}",
                placeholders(chunk.len(), 7, Some("'active'"))
            );
            let mut query = sqlx::query(&sql);
            for p in chunk {
                query = query
                    .bind(p.id.as_str())
                    .bind(p.code.as_str())
                    .bind(p.code.folded())
                    .bind(p.email.as_str())
                    .bind(p.allowed_ips.clone())
                    .bind(p.created_at)
                    .bind(p.created_at);
            }
            query.execute(self.conn().await?).await?;
            let sql = format!(
                "INSERT INTO partner_keys (id, partner_id, public_key_hash, public_key_hint, secret_ciphertext, created_at, secret_key_hash, legacy) VALUES {}",
                placeholders(chunk.len(), 8, None)
            );
            let mut query = sqlx::query(&sql);
            for p in chunk {
                query = query
                    .bind(p.key_id.as_str())
                    .bind(p.id.as_str())
                    .bind(p.public_key_hash.as_bytes().to_vec())
                    .bind(p.public_key_hint.as_str())
                    .bind(p.secret_ciphertext.clone())
                    .bind(p.created_at)
                    .bind(p.secret_key_hash.as_bytes().to_vec())
                    .bind(i64::from(p.legacy));
            }
            query.execute(self.conn().await?).await?;
        }
        Ok(())
    }

    /// Of these folded codes, those taken, with their partner's id.
    pub async fn partners_by_folded_codes(
        &mut self,
        folded: &[String],
    ) -> Result<HashMap<String, String>> {
        let mut found = HashMap::new();
        for chunk in folded.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "SELECT code_folded, id FROM partners WHERE code_folded IN ({})",
                list(chunk.len())
            );
            let mut query = sqlx::query(&sql);
            for code in chunk {
                query = query.bind(code.as_str());
            }
            for row in query.fetch_all(self.conn().await?).await? {
                found.insert(row.try_get("code_folded")?, row.try_get("id")?);
            }
        }
        Ok(found)
    }

    /// Of these hashes of public (or, with `secret`, secret) keys, those stored, with the id
    /// of the partner that holds each.
    pub async fn key_holders(
        &mut self,
        hashes: &[KeyHash],
        secret: bool,
    ) -> Result<HashMap<KeyHash, String>> {
        // One of two fixed column names, never input.
        let column = if secret {
            "secret_key_hash"
        } else {
            "public_key_hash"
        };
        let mut found = HashMap::new();
        for chunk in hashes.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "SELECT {column} AS hash, partner_id FROM partner_keys WHERE {column} IN ({})",
                list(chunk.len())
            );
            let mut query = sqlx::query(&sql);
            for hash in chunk {
                query = query.bind(hash.as_bytes().to_vec());
            }
            for row in query.fetch_all(self.conn().await?).await? {
                let hash: Vec<u8> = row.try_get("hash")?;
                let Ok(hash) = <[u8; 32]>::try_from(hash) else {
                    continue;
                };
                found.insert(KeyHash::from_bytes(hash), row.try_get("partner_id")?);
            }
        }
        Ok(found)
    }

    /// One audit event per imported partner, many rows per statement (no webhook event: the
    /// partners were the exchange's already).
    pub async fn audit_imported(
        &mut self,
        partners: &[ImportedPartner],
        actor: super::Actor<'_>,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<()> {
        let actor = actor.to_stored();
        for chunk in partners.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "INSERT INTO audit_events (id, partner_id, event, detail, created_at, actor) VALUES {}",
                placeholders(chunk.len(), 6, None)
            );
            let mut query = sqlx::query(&sql);
            for p in chunk {
                let detail = format!(
                    "key {}; {}",
                    p.key_id,
                    if p.legacy {
                        "legacy keys (not of the current format)"
                    } else {
                        "keys of the current format"
                    }
                );
                query = query
                    .bind(uuid::Uuid::now_v7().to_string())
                    .bind(p.id.as_str())
                    .bind(super::AuditKind::PartnerImported.name())
                    .bind(detail)
                    .bind(millis(at))
                    .bind(actor.clone());
            }
            query.execute(self.conn().await?).await?;
        }
        Ok(())
    }
}

/// `$1, $2, …` for an `IN` list of `n` values.
fn list(n: usize) -> String {
    (1..=n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `($1, $2, …), (…)` for `rows` rows of `columns` parameters; `constant` is put in as the
/// fifth column (the partners' status) when given.
fn placeholders(rows: usize, columns: usize, constant: Option<&str>) -> String {
    let mut out = String::new();
    let mut n = 0;
    for row in 0..rows {
        if row > 0 {
            out.push_str(", ");
        }
        out.push('(');
        for column in 0..columns {
            if column > 0 {
                out.push_str(", ");
            }
            if column == 4 {
                if let Some(constant) = constant {
                    out.push_str(constant);
                    out.push_str(", ");
                }
            }
            n += 1;
            out.push_str(&format!("${n}"));
        }
        out.push(')');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::placeholders;

    #[test]
    fn placeholders_number_every_parameter_once() {
        assert_eq!(placeholders(2, 2, None), "($1, $2), ($3, $4)");
        assert_eq!(
            placeholders(1, 6, Some("'active'")),
            "($1, $2, $3, $4, 'active', $5, $6)"
        );
    }
}
