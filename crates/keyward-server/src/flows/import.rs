//! Moving an exchange's partners in (SPEC §10.2): each row of the operator's file becomes an
//! active partner that authenticates with the keys it already holds. A row is checked on its
//! own first ([`parse_row`]); a batch of rows is then written in one transaction
//! ([`import_batch`]), after the checks only the database can make (is the code taken, is the
//! key someone's already). Nothing here prints or logs a key.

use super::key_policy::KeyTimes;
use super::Context;
use crate::clock::millis;
use crate::crypto::secret_key_aad;
use crate::error::Result;
use crate::store::{Actor, ImportedPartner, StoreError};
use keyward_core::json::{parse_object, Value};
use keyward_core::{AllowedIps, Email, KeyHash, PartnerCode, PartnerId, PublicKey, SecretKey};
use secrecy::ExposeSecret;
use std::collections::HashMap;

/// One row of the file, checked: what will be stored if the database agrees.
pub struct ImportRow {
    /// The row's line in the file (from 1), for the report.
    pub line: u64,
    pub code: PartnerCode,
    pub email: Email,
    pub public: PublicKey,
    pub secret: SecretKey,
    /// When the partner was made, ms (now when the row does not say).
    pub created_at: Option<i64>,
    pub allowed_ips: AllowedIps,
    /// Members of the row that are not of the format, left aside (the command names them once).
    pub ignored: Vec<String>,
}

impl ImportRow {
    /// Keys not of §1's format: the pair is legacy when either key is.
    pub fn legacy(&self) -> bool {
        self.public.is_legacy() || self.secret.is_legacy()
    }
}

/// What became of one row that reached the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Imported,
    /// The partner is there already with this very key: an earlier run imported it.
    AlreadyThere,
    /// Refused, and why (never quoting a key).
    Refused(String),
}

const FIELDS: [&str; 6] = [
    "partner_code",
    "email",
    "public_key",
    "secret_key",
    "created_at",
    "allowed_ips",
];

/// Checks one line of the file on its own: a JSON object (no member twice), a valid code and
/// email, a public and a secret key of §1's format or of the legacy shape, an optional
/// `created_at` not in the future (RFC 3339, or Unix time in seconds or milliseconds), an
/// optional allow-list (an array, or one comma-separated string). Other members an export may
/// carry are left aside and named in [`ImportRow::ignored`]. The error says what is wrong
/// without quoting a key.
pub fn parse_row(line: u64, text: &str, now: i64) -> std::result::Result<ImportRow, String> {
    let members = parse_object(text.as_bytes()).map_err(|e| match e {
        keyward_core::json::ParseError::DuplicateMember => {
            "a member appears twice in the object".to_owned()
        }
        _ => "not a JSON object".to_owned(),
    })?;
    let ignored: Vec<String> = members
        .iter()
        .filter(|(name, _)| !FIELDS.contains(&name.as_str()))
        .map(|(name, _)| name.chars().take(40).collect())
        .collect();
    let get = |name: &str| members.iter().find(|(n, _)| n == name).map(|(_, v)| v);
    let text_of = |name: &str| -> std::result::Result<&str, String> {
        match get(name) {
            Some(Value::String(s)) => Ok(s),
            Some(_) => Err(format!("{name} must be a string")),
            None => Err(format!("{name} is missing")),
        }
    };
    let code = PartnerCode::parse(text_of("partner_code")?)
        .ok_or("partner_code must be 1-64 letters, digits, dots, underscores or hyphens")?;
    let email = Email::parse(text_of("email")?).ok_or("email is not a valid email address")?;
    let public = PublicKey::parse_or_legacy(text_of("public_key")?).map_err(|e| {
        format!(
            "public_key: {e}, or of the legacy shape (pk_partner_ and 8 to 128 letters and digits)"
        )
    })?;
    let secret = SecretKey::parse_or_legacy(text_of("secret_key")?).map_err(|e| {
        format!(
            "secret_key: {e}, or of the legacy shape (sk_partner_ and 8 to 128 letters and digits)"
        )
    })?;
    if public.mode() != keyward_core::KeyMode::Live || secret.mode() != keyward_core::KeyMode::Live
    {
        return Err("test keys are not imported: only a partner's live pair".to_owned());
    }
    let created_at = match get("created_at") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(
            chrono::DateTime::parse_from_rfc3339(s)
                .map_err(|_| {
                    "created_at must be an RFC 3339 date-time such as 2024-01-31T09:00:00Z, or Unix time"
                })?
                .timestamp_millis(),
        ),
        // Unix time: seconds, or milliseconds when larger than any date in seconds before 5138.
        Some(Value::Number(n)) if n.fract() == 0.0 && *n >= 0.0 && *n < 1e15 => {
            let n = *n as i64;
            Some(if n < 100_000_000_000 { n * 1000 } else { n })
        }
        Some(_) => {
            return Err(
                "created_at must be an RFC 3339 date-time (a string) or Unix time (a number)"
                    .to_owned(),
            )
        }
    };
    if created_at.is_some_and(|at| at > now) {
        return Err("created_at is in the future".to_owned());
    }
    let allowed_ips = match get("allowed_ips") {
        None | Some(Value::Null) => AllowedIps::default(),
        Some(value @ (Value::Array(_) | Value::String(_))) => {
            let mut entries = Vec::new();
            match value {
                Value::Array(items) => {
                    for item in items {
                        match item {
                            Value::String(s) => entries.push(s.as_str()),
                            _ => return Err("allowed_ips must be an array of strings".to_owned()),
                        }
                    }
                }
                Value::String(list) => {
                    entries.extend(list.split(',').map(str::trim).filter(|e| !e.is_empty()));
                }
                _ => {}
            }
            let list = AllowedIps::parse(entries).map_err(|e| format!("allowed_ips: {e}"))?;
            if list.len() > AllowedIps::MAX_ENTRIES {
                return Err(format!(
                    "allowed_ips may hold at most {} entries",
                    AllowedIps::MAX_ENTRIES
                ));
            }
            list
        }
        Some(_) => return Err("allowed_ips must be an array of strings".to_owned()),
    };
    Ok(ImportRow {
        line,
        code,
        email,
        public,
        secret,
        created_at,
        allowed_ips,
        ignored,
    })
}

/// Writes one batch of checked rows in one transaction: rows whose code or keys are taken are
/// reported and left out; the others become active partners with their keys (encrypted under
/// the master key), one audit event each, and the reminders the expiry policy gives them.
/// Returns each row's outcome, by line. A batch that meets a concurrent writer (a code taken
/// between the checks and the insert, on PostgreSQL) is checked and written once more.
pub async fn import_batch(
    ctx: &Context,
    rows: &[ImportRow],
    operator: &str,
) -> Result<Vec<(u64, Outcome)>> {
    // A batch is idempotent (it checks again what is there), so it may be tried again: after a
    // conflict with a concurrent writer, and while the database is busy (on SQLite the serving
    // nodes' own writes hold the one write lock for moments at a time).
    let mut conflicts = 0;
    let mut busy = 0;
    loop {
        match import_once(ctx, rows, operator).await {
            Ok(Some(outcomes)) => return Ok(outcomes),
            Ok(None) if conflicts == 0 => conflicts += 1,
            Ok(None) => {
                return Err(crate::error::Error::Unavailable(anyhow::anyhow!(
                    "other writers kept taking this batch's codes or keys: run the import again"
                )))
            }
            Err(crate::error::Error::Unavailable(_)) if busy < BUSY_RETRIES => {
                busy += 1;
                tokio::time::sleep(std::time::Duration::from_millis(250 * busy)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// How often a batch is tried again while the database is busy (about 15 s in all).
const BUSY_RETRIES: u64 = 10;

/// One attempt; `None` when a concurrent writer took a code or key after the checks (the
/// transaction is rolled back).
async fn import_once(
    ctx: &Context,
    rows: &[ImportRow],
    operator: &str,
) -> Result<Option<Vec<(u64, Outcome)>>> {
    let cipher = ctx.cipher()?;
    let now = ctx.clock.now();
    let mut tx = ctx.store.begin().await?;
    let folded: Vec<String> = rows.iter().map(|r| r.code.folded()).collect();
    let publics: Vec<KeyHash> = rows.iter().map(|r| r.public.hash()).collect();
    let secrets: Vec<KeyHash> = rows.iter().map(|r| r.secret.hash()).collect();
    let codes_taken = tx.partners_by_folded_codes(&folded).await?;
    let public_holders = tx.key_holders(&publics, false).await?;
    let secret_holders = tx.key_holders(&secrets, true).await?;

    let mut outcomes = Vec::with_capacity(rows.len());
    let mut new = Vec::with_capacity(rows.len());
    for (i, row) in rows.iter().enumerate() {
        let holder = public_holders.get(&publics[i]);
        let outcome = match (codes_taken.get(&folded[i]), holder) {
            (Some(id), Some(holder)) if id == holder => Some(Outcome::AlreadyThere),
            (Some(_), _) => Some(Outcome::Refused(
                "a partner with this code exists with other keys: left as it is".to_owned(),
            )),
            (None, Some(_)) => Some(Outcome::Refused(
                "this public key is another partner's".to_owned(),
            )),
            (None, None) if secret_holders.contains_key(&secrets[i]) => Some(Outcome::Refused(
                "this secret key is another partner's".to_owned(),
            )),
            (None, None) => None,
        };
        if let Some(outcome) = outcome {
            outcomes.push((row.line, outcome));
            continue;
        }
        let id = PartnerId::new_v7();
        let key_id = uuid::Uuid::now_v7().to_string();
        let secret_ciphertext = cipher
            .encrypt(
                row.secret.expose_secret().as_bytes(),
                &secret_key_aad(id.as_str(), &key_id),
            )
            .map_err(|e| crate::error::Error::Unexpected(anyhow::Error::new(e)))?;
        let created_at = row.created_at.unwrap_or_else(|| millis(now));
        new.push(ImportedPartner {
            id,
            code: row.code.clone(),
            email: row.email.clone(),
            key_id,
            public_key_hash: publics[i],
            public_key_hint: row.public.redacted(),
            secret_ciphertext,
            secret_key_hash: secrets[i],
            created_at,
            allowed_ips: row.allowed_ips.to_stored(),
            legacy: row.legacy(),
        });
        outcomes.push((row.line, Outcome::Imported));
    }
    if !new.is_empty() {
        match tx.insert_imported(&new).await {
            Err(StoreError::Conflict) => return Ok(None),
            other => other?,
        }
        tx.audit_imported(&new, Actor::Operator(operator), now)
            .await?;
        let policy = &ctx.settings.expiry;
        for partner in &new {
            let times = KeyTimes {
                created_at: partner.created_at,
                last_used_at: None,
                retiring_until: None,
                valid_until: None,
                legacy: partner.legacy,
            };
            let has_allow_list = partner.allowed_ips.is_some();
            let dues = policy.reminders_due(&times, has_allow_list, millis(now));
            if !dues.is_empty() {
                tx.schedule_reminders(&partner.key_id, &dues).await?;
            }
        }
    }
    tx.commit().await?;
    Ok(Some(outcomes))
}

/// Within one file: the line of an earlier row with the same code or key, if any. A file that
/// names a partner or a key twice is the operator's mistake; the later row is reported.
#[derive(Default)]
pub struct SeenInFile {
    codes: HashMap<String, u64>,
    publics: HashMap<KeyHash, u64>,
    secrets: HashMap<KeyHash, u64>,
}

impl SeenInFile {
    /// Records `row`, or says which earlier line it repeats.
    pub fn check(&mut self, row: &ImportRow) -> std::result::Result<(), String> {
        let repeats = |what: &str, line: u64| {
            format!("{what} is on line {line} already: each partner and each key once")
        };
        if let Some(&line) = self.codes.get(&row.code.folded()) {
            return Err(repeats("this partner_code", line));
        }
        if let Some(&line) = self.publics.get(&row.public.hash()) {
            return Err(repeats("this public_key", line));
        }
        if let Some(&line) = self.secrets.get(&row.secret.hash()) {
            return Err(repeats("this secret_key", line));
        }
        self.codes.insert(row.code.folded(), row.line);
        self.publics.insert(row.public.hash(), row.line);
        self.secrets.insert(row.secret.hash(), row.line);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000_000;

    fn row(members: &str) -> std::result::Result<ImportRow, String> {
        parse_row(7, &format!("{{{members}}}"), NOW)
    }

    const BASE: &str = r#""partner_code":"ACME","email":"ops@acme.example","public_key":"pk_partner_Legacy123","secret_key":"sk_partner_Legacy456""#;

    #[test]
    fn a_row_is_checked_on_its_own_without_quoting_a_key() {
        let ok = row(BASE).unwrap();
        assert!(ok.legacy());
        assert_eq!((ok.line, ok.code.as_str()), (7, "ACME"));
        let with_extras = row(&format!(
            r#"{BASE},"created_at":"2024-01-31T09:00:00Z","allowed_ips":["203.0.113.7","198.51.100.0/24"]"#
        ))
        .unwrap();
        assert_eq!(with_extras.created_at, Some(1_706_691_600_000));
        assert_eq!(with_extras.allowed_ips.len(), 2);
        // What an export may look like otherwise: Unix time, a comma-separated list, extras.
        let other = row(&format!(
            r#"{BASE},"created_at":1706691600,"allowed_ips":"203.0.113.7, 198.51.100.0/24","partner_id":"x","name":"Acme""#
        ))
        .unwrap();
        assert_eq!(other.created_at, Some(1_706_691_600_000));
        assert_eq!(other.allowed_ips.len(), 2);
        assert_eq!(other.ignored, ["partner_id", "name"]);
        let millis = row(&format!(r#"{BASE},"created_at":1706691600000"#)).unwrap();
        assert_eq!(millis.created_at, Some(1_706_691_600_000));

        for (members, expected) in [
            (format!("{BASE},{BASE}"), "twice"),
            (BASE.replace("ACME", "AC ME"), "partner_code"),
            (BASE.replace("ops@acme.example", "ops"), "email"),
            (BASE.replace("Legacy123", "Leg"), "public_key"),
            (
                BASE.replace("sk_partner_Legacy456", "pk_partner_Legacy456"),
                "secret_key",
            ),
            (
                BASE.replace("pk_partner_Legacy123", "pk_test_partner_Legacy123"),
                "public_key",
            ),
            (
                format!(r#"{BASE},"created_at":"2999-01-01T00:00:00Z""#),
                "future",
            ),
            (format!(r#"{BASE},"created_at":"yesterday""#), "RFC 3339"),
            (
                format!(r#"{BASE},"allowed_ips":["not an address"]"#),
                "allowed_ips",
            ),
            (format!(r#"{BASE},"allowed_ips":[7]"#), "allowed_ips"),
            (format!(r#"{BASE},"created_at":-5"#), "created_at"),
        ] {
            let error = row(&members).err().unwrap_or_default();
            assert!(error.contains(expected), "{members}: {error}");
            assert!(!error.contains("Legacy"), "a key was quoted: {error}");
        }
        assert!(parse_row(1, "not json", NOW).is_err());
    }

    #[test]
    fn a_file_names_each_partner_and_key_once() {
        let mut seen = SeenInFile::default();
        seen.check(&row(BASE).unwrap()).unwrap();
        let again = parse_row(9, &format!("{{{}}}", BASE.replace("ACME", "acme")), NOW).unwrap();
        assert!(seen.check(&again).unwrap_err().contains("line 7"));
        let same_key =
            parse_row(10, &format!("{{{}}}", BASE.replace("ACME", "OTHER")), NOW).unwrap();
        assert!(seen.check(&same_key).unwrap_err().contains("public_key"));
    }
}
