//! Bulk import of active partners with their keys: many rows per statement, one transaction
//! per batch. For filling a store fast (benchmarks, and importing an existing partner base).

use super::{Result, Store};
use keyward_core::{Email, KeyHash, PartnerCode, PartnerId};

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
}

/// Rows per statement: well under SQLite's 32,766 and PostgreSQL's 65,535 parameters.
const ROWS_PER_STATEMENT: usize = 500;

impl Store {
    /// Stores `partners` in one transaction. A code that is taken fails the whole batch
    /// ([`super::StoreError::Conflict`]).
    pub async fn import_active_partners(&self, partners: &[ImportedPartner]) -> Result<()> {
        let mut tx = self.begin().await?;
        for chunk in partners.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "INSERT INTO partners (id, code, code_folded, email, status, created_at, updated_at) VALUES {}",
                placeholders(chunk.len(), 6, Some("'active'"))
            );
            let mut query = sqlx::query(&sql);
            for p in chunk {
                query = query
                    .bind(p.id.as_str())
                    .bind(p.code.as_str())
                    .bind(p.code.folded())
                    .bind(p.email.as_str())
                    .bind(p.created_at)
                    .bind(p.created_at);
            }
            query.execute(&mut *tx.tx).await?;
            let sql = format!(
                "INSERT INTO partner_keys (id, partner_id, public_key_hash, public_key_hint, secret_ciphertext, created_at, secret_key_hash) VALUES {}",
                placeholders(chunk.len(), 7, None)
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
                    .bind(p.secret_key_hash.as_bytes().to_vec());
            }
            query.execute(&mut *tx.tx).await?;
        }
        tx.commit().await
    }
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
