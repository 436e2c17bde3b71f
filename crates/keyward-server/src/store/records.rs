//! What the store reads and writes: rows and their typed forms.

use super::{Result, StoreError};
use sqlx::FromRow;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartnerStatus {
    Pending,
    Active,
    Suspended,
}

impl PartnerStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            PartnerStatus::Pending => "pending",
            PartnerStatus::Active => "active",
            PartnerStatus::Suspended => "suspended",
        }
    }

    fn parse(s: &str) -> Result<Self> {
        match s {
            "pending" => Ok(PartnerStatus::Pending),
            "active" => Ok(PartnerStatus::Active),
            "suspended" => Ok(PartnerStatus::Suspended),
            other => Err(StoreError::Corrupt(format!("partner status {other:?}"))),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkPurpose {
    Onboarding,
    Regeneration,
}

impl LinkPurpose {
    pub const fn as_str(self) -> &'static str {
        match self {
            LinkPurpose::Onboarding => "onboarding",
            LinkPurpose::Regeneration => "regeneration",
        }
    }

    fn parse(s: &str) -> Result<Self> {
        match s {
            "onboarding" => Ok(LinkPurpose::Onboarding),
            "regeneration" => Ok(LinkPurpose::Regeneration),
            other => Err(StoreError::Corrupt(format!("link purpose {other:?}"))),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Partner {
    pub id: String,
    pub code: String,
    pub email: String,
    pub status: PartnerStatus,
    /// Comma-separated CIDR blocks; `None` allows every address.
    pub allowed_ips: Option<String>,
    pub created_at: i64,
}

#[derive(FromRow)]
pub(super) struct PartnerRow {
    id: String,
    code: String,
    email: String,
    status: String,
    allowed_ips: Option<String>,
    created_at: i64,
}

impl TryFrom<PartnerRow> for Partner {
    type Error = StoreError;
    fn try_from(row: PartnerRow) -> Result<Self> {
        Ok(Partner {
            status: PartnerStatus::parse(&row.status)?,
            id: row.id,
            code: row.code,
            email: row.email,
            allowed_ips: row.allowed_ips,
            created_at: row.created_at,
        })
    }
}

pub(super) const PARTNER_COLUMNS: &str =
    "p.id, p.code, p.email, p.status, p.allowed_ips, p.created_at";

/// A key pair as stored, with its partner: what authentication needs, in one query.
#[derive(Debug, Clone)]
pub struct KeyRecord {
    pub key_id: String,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
    pub secret_ciphertext: Vec<u8>,
    pub partner: Partner,
}

#[derive(Debug, Clone)]
pub struct Link {
    pub id: String,
    pub partner_id: String,
    pub purpose: LinkPurpose,
    pub created_at: i64,
    pub expires_at: i64,
    pub used_at: Option<i64>,
    pub superseded_at: Option<i64>,
}

#[derive(FromRow)]
pub(super) struct LinkRow {
    id: String,
    partner_id: String,
    purpose: String,
    created_at: i64,
    expires_at: i64,
    used_at: Option<i64>,
    superseded_at: Option<i64>,
}

impl TryFrom<LinkRow> for Link {
    type Error = StoreError;
    fn try_from(row: LinkRow) -> Result<Self> {
        Ok(Link {
            purpose: LinkPurpose::parse(&row.purpose)?,
            id: row.id,
            partner_id: row.partner_id,
            created_at: row.created_at,
            expires_at: row.expires_at,
            used_at: row.used_at,
            superseded_at: row.superseded_at,
        })
    }
}

pub(super) const LINK_COLUMNS: &str =
    "id, partner_id, purpose, created_at, expires_at, used_at, superseded_at";

pub struct NewLink<'a> {
    pub id: &'a str,
    pub partner_id: &'a str,
    pub purpose: LinkPurpose,
    pub token_hash: &'a [u8],
    pub created_at: i64,
    pub expires_at: i64,
    pub requested_ip: Option<&'a str>,
}

pub struct NewKey<'a> {
    pub id: &'a str,
    pub partner_id: &'a str,
    pub public_key_hash: &'a [u8],
    pub public_key_hint: &'a str,
    pub secret_ciphertext: &'a [u8],
    pub created_at: i64,
}

pub struct NewEmail<'a> {
    pub id: &'a str,
    pub recipient: &'a str,
    pub kind: &'a str,
    pub body_ciphertext: &'a [u8],
    pub created_at: i64,
}

/// An email claimed for sending.
#[derive(Debug, FromRow)]
pub struct QueuedEmail {
    pub id: String,
    pub recipient: String,
    pub kind: String,
    pub body_ciphertext: Option<Vec<u8>>,
    pub attempts: i64,
}

/// A failed delivery attempt, as recorded.
#[derive(Debug)]
pub struct FailedAttempt<'a> {
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub dead_at: Option<i64>,
    pub error: &'a str,
}

pub(super) const QUEUED_EMAIL_COLUMNS: &str = "id, recipient, kind, body_ciphertext, attempts";

/// Counts of the outbox, for operators and `/metrics`.
#[derive(Debug, Default, Clone, Copy)]
pub struct OutboxStats {
    pub pending: i64,
    pub sent: i64,
    pub dead: i64,
}

/// A dead-lettered email, as operators see it (no body: it is encrypted, and kept for retry).
#[derive(Debug, FromRow)]
pub struct DeadEmail {
    pub id: String,
    pub recipient: String,
    pub kind: String,
    pub attempts: i64,
    pub last_error: Option<String>,
}

/// One entry of the audit log.
#[derive(Debug, FromRow)]
pub struct AuditEvent {
    pub event: String,
    pub ip: Option<String>,
    pub detail: Option<String>,
    pub created_at: i64,
}
