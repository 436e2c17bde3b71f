//! What the store reads and writes: rows and their typed forms.

use super::{Result, StoreError};
use keyward_core::scopes::Scopes;
use keyward_core::{
    AllowedIps, Email, KeyHash, KeyMode, LinkPurpose, PartnerCode, PartnerId, PartnerStatus,
    TokenHash,
};
use sqlx::FromRow;

/// A partner as stored, with every value validated when read (a row that does not parse is
/// reported as corrupt, not passed on).
#[derive(Debug, Clone)]
pub struct Partner {
    pub id: PartnerId,
    pub code: PartnerCode,
    pub email: Email,
    pub status: PartnerStatus,
    /// Empty allows every address.
    pub allowed_ips: AllowedIps,
    pub created_at: i64,
    /// Created by `keyward partner invite` (KEYWARD_ONBOARDING=invite).
    pub invited: bool,
}

#[derive(FromRow)]
pub(super) struct PartnerRow {
    id: String,
    code: String,
    email: String,
    status: String,
    allowed_ips: Option<String>,
    created_at: i64,
    invited: i64,
}

fn corrupt(what: &str, value: &str) -> StoreError {
    StoreError::Corrupt(format!("{what} {value:?}"))
}

impl TryFrom<PartnerRow> for Partner {
    type Error = StoreError;
    fn try_from(row: PartnerRow) -> Result<Self> {
        Ok(Partner {
            id: PartnerId::parse(&row.id).ok_or_else(|| corrupt("partner id", &row.id))?,
            code: PartnerCode::parse(&row.code)
                .ok_or_else(|| corrupt("partner code", &row.code))?,
            email: Email::parse(&row.email).ok_or_else(|| corrupt("email of partner", &row.id))?,
            status: PartnerStatus::parse(&row.status)
                .ok_or_else(|| corrupt("partner status", &row.status))?,
            allowed_ips: AllowedIps::from_stored(row.allowed_ips.as_deref()).map_err(|e| {
                StoreError::Corrupt(format!("allow-list of partner {}: {e}", row.id))
            })?,
            created_at: row.created_at,
            invited: row.invited != 0,
        })
    }
}

pub(super) const PARTNER_COLUMNS: &str =
    "p.id, p.code, p.email, p.status, p.allowed_ips, p.created_at, p.invited";

/// A key pair as stored, with its partner: what authentication needs, in one query.
#[derive(Debug, Clone)]
pub struct KeyRecord {
    pub key_id: String,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
    /// When a retiring primary pair stops working; `None` for every other pair.
    pub expires_at: Option<i64>,
    pub secret_ciphertext: Vec<u8>,
    pub partner: Partner,
    pub class: KeyClass,
    pub mode: KeyMode,
    /// Moved in with keys not of §1's format (SPEC §10.2).
    pub legacy: bool,
    /// Approximate: written in batches by each node.
    pub last_used_at: Option<i64>,
}

/// Whether a pair is the partner's primary pair or a restricted one (SPEC §8.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyClass {
    /// Full power; rotated by regeneration.
    Primary,
    Restricted {
        name: String,
        scopes: Scopes,
        /// Its own expiry (`expires_in_days`), ms.
        valid_until: Option<i64>,
    },
}

impl KeyClass {
    pub const fn kind(&self) -> &'static str {
        match self {
            KeyClass::Primary => "primary",
            KeyClass::Restricted { .. } => "restricted",
        }
    }

    pub fn name(&self) -> Option<&str> {
        match self {
            KeyClass::Primary => None,
            KeyClass::Restricted { name, .. } => Some(name),
        }
    }

    pub fn valid_until(&self) -> Option<i64> {
        match self {
            KeyClass::Primary => None,
            KeyClass::Restricted { valid_until, .. } => *valid_until,
        }
    }

    /// From the stored columns as operators' listings read them (the database's checks
    /// guarantee their shape).
    pub fn from_stored(
        kind: &str,
        name: Option<String>,
        scopes: Option<String>,
        valid_until: Option<i64>,
    ) -> Self {
        match kind {
            "restricted" => KeyClass::Restricted {
                name: name.unwrap_or_default(),
                scopes: Scopes::parse_stored(scopes.as_deref().unwrap_or("")),
                valid_until,
            },
            _ => KeyClass::Primary,
        }
    }

    /// From the stored columns `kind`, `name`, `scopes`, `valid_until`.
    pub(super) fn from_columns(
        kind: &str,
        name: Option<String>,
        scopes: Option<String>,
        valid_until: Option<i64>,
    ) -> Result<Self> {
        match (kind, name, scopes) {
            ("primary", _, _) => Ok(KeyClass::Primary),
            ("restricted", Some(name), Some(scopes)) => Ok(KeyClass::Restricted {
                name,
                scopes: Scopes::parse_stored(&scopes),
                valid_until,
            }),
            _ => Err(corrupt("key kind", kind)),
        }
    }
}

/// A restricted pair as asked for with `CreateKey`, carried by its link until it is used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySpec {
    pub name: String,
    pub scopes: Scopes,
    pub mode: KeyMode,
    /// How many days the pair works once made (`expires_in_days`).
    pub valid_days: Option<i64>,
}

pub(super) fn parse_mode(text: &str) -> Result<KeyMode> {
    KeyMode::parse(text).ok_or_else(|| corrupt("key mode", text))
}

#[derive(Debug, Clone)]
pub struct Link {
    pub id: String,
    pub partner_id: PartnerId,
    pub purpose: LinkPurpose,
    pub created_at: i64,
    pub expires_at: i64,
    pub used_at: Option<i64>,
    pub superseded_at: Option<i64>,
    /// How long the old pair keeps working once this (regeneration) link is used.
    pub overlap_seconds: i64,
    /// Asked for with the partner's keys (not the lost-keys path).
    pub signed: bool,
    /// For a `restricted_key` link: the pair to make.
    pub key: Option<KeySpec>,
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
    overlap_seconds: i64,
    signed: i64,
    key_name: Option<String>,
    key_scopes: Option<String>,
    key_mode: Option<String>,
    key_valid_days: Option<i64>,
}

impl TryFrom<LinkRow> for Link {
    type Error = StoreError;
    fn try_from(row: LinkRow) -> Result<Self> {
        Ok(Link {
            purpose: LinkPurpose::parse(&row.purpose)
                .ok_or_else(|| corrupt("link purpose", &row.purpose))?,
            partner_id: PartnerId::parse(&row.partner_id)
                .ok_or_else(|| corrupt("partner id", &row.partner_id))?,
            id: row.id,
            created_at: row.created_at,
            expires_at: row.expires_at,
            used_at: row.used_at,
            superseded_at: row.superseded_at,
            overlap_seconds: row.overlap_seconds,
            signed: row.signed != 0,
            key: match (row.key_name, row.key_scopes, row.key_mode) {
                (Some(name), Some(scopes), Some(mode)) => Some(KeySpec {
                    name,
                    scopes: Scopes::parse_stored(&scopes),
                    mode: parse_mode(&mode)?,
                    valid_days: row.key_valid_days,
                }),
                _ => None,
            },
        })
    }
}

pub(super) const LINK_COLUMNS: &str = "id, partner_id, purpose, created_at, expires_at, used_at, superseded_at, overlap_seconds, signed, key_name, key_scopes, key_mode, key_valid_days";

pub struct NewLink<'a> {
    pub id: &'a str,
    pub partner_id: &'a PartnerId,
    pub purpose: LinkPurpose,
    pub token_hash: &'a TokenHash,
    /// Requested with the partner's keys (a separate budget; never superseded by a request
    /// without them).
    pub signed: bool,
    /// For a regeneration link: how long the old pair keeps working once it is used.
    pub overlap_seconds: i64,
    pub created_at: i64,
    pub expires_at: i64,
    pub requested_ip: Option<std::net::IpAddr>,
    /// For a `restricted_key` link: the pair to make.
    pub key: Option<&'a KeySpec>,
}

/// A key's latest use as one node saw it (written in batches, SPEC §3.5's `last used`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyUse {
    pub key_id: String,
    pub at: i64,
    /// The client's address, when the request had one (the verify API's caller may not say).
    pub ip: Option<std::net::IpAddr>,
}

pub struct NewKey<'a> {
    pub id: &'a str,
    pub partner_id: &'a PartnerId,
    pub public_key_hash: &'a KeyHash,
    pub public_key_hint: &'a str,
    pub secret_ciphertext: &'a [u8],
    /// SHA-256 of the secret key, to find the pair when the secret leaks (SPEC §9.2).
    pub secret_key_hash: &'a KeyHash,
    pub created_at: i64,
    pub class: &'a KeyClass,
    pub mode: KeyMode,
    /// A restricted pair's place among the partner's 9 (see migration 0009).
    pub slot: Option<i64>,
}

pub struct NewEmail<'a> {
    pub id: &'a str,
    pub recipient: &'a str,
    /// Anyone could have caused it (an onboarding or lost-keys link): it counts towards the
    /// recipient's limit.
    pub unauthenticated: bool,
    pub kind: &'a str,
    pub body_ciphertext: &'a [u8],
    pub created_at: i64,
    /// Not sent before this time (a reminder); `created_at` for every other email.
    pub send_after: i64,
    /// The key the email is about: it is not sent if the key is revoked first.
    pub about_key_id: Option<&'a str>,
}

/// An email claimed for sending.
#[derive(Debug, FromRow)]
pub struct QueuedEmail {
    pub id: String,
    pub recipient: String,
    pub kind: String,
    pub body_ciphertext: Option<Vec<u8>>,
    pub attempts: i64,
    /// When it was queued (for the queue-to-delivery time).
    pub created_at: i64,
}

/// A failed delivery attempt, as recorded.
#[derive(Debug)]
pub struct FailedAttempt<'a> {
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub dead_at: Option<i64>,
    pub error: &'a str,
}

pub(super) const QUEUED_EMAIL_COLUMNS: &str =
    "id, recipient, kind, body_ciphertext, attempts, created_at";

/// Which unused links a new one replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Supersede {
    /// Every unused link of the purpose (a request made with the partner's keys).
    All,
    /// Only those requested without keys: an unauthenticated request never cancels a link
    /// the key holder asked for.
    UnsignedOnly,
}

/// Counts of the outbox, for operators and `/metrics`.
#[derive(Debug, Default, Clone, Copy)]
pub struct OutboxStats {
    pub pending: i64,
    pub sent: i64,
    pub dead: i64,
}

/// The outbox's backlog, for `/metrics` and `keyward outbox stats`.
#[derive(Debug, Default, Clone, Copy)]
pub struct OutboxBacklog {
    /// Due now and not sent yet.
    pub due: i64,
    /// Not due yet (a reminder, or a retry waiting out its backoff).
    pub scheduled: i64,
    pub dead: i64,
    /// How long the oldest due email has waited since it was queued; 0 when none waits.
    pub oldest_due_age_ms: i64,
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

/// Who caused an audit event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Actor<'a> {
    /// The partner, with its keys or its one-time link.
    Partner,
    /// Someone without keys (onboarding, lost keys): anyone who knows a code and an email.
    Anyone,
    /// An operator, by the name given to `--operator` (or `$USER`).
    Operator(&'a str),
    /// keyward itself (an expired pending partner released, say).
    Keyward,
    /// GitHub's secret scanning, reporting a leaked key (SPEC §9.2).
    GitHub,
}

impl Actor<'_> {
    pub fn to_stored(self) -> String {
        match self {
            Actor::Partner => "partner".into(),
            Actor::Anyone => "anyone".into(),
            Actor::Operator(name) => format!("operator:{name}"),
            Actor::Keyward => "keyward".into(),
            Actor::GitHub => "github".into(),
        }
    }
}

/// What happened, as the audit log names it. The names are part of `keyward audit`'s output
/// and of what operators search for: never rename one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditKind {
    PartnerCreated,
    PartnerInvited,
    /// A pending partner deleted (by an operator, or by keyward once its links expired).
    PartnerReleased,
    PartnerSuspended,
    PartnerActivated,
    LinkIssued(keyward_core::LinkPurpose),
    LinkRedeemed(keyward_core::LinkPurpose),
    /// Every key pair revoked by an operator.
    KeysRevoked,
    /// The retiring pair revoked by the partner (`RetireOldKeys`).
    RetiringKeysRevoked,
    /// One restricted pair revoked by the partner (`RevokeKey`, SPEC §8.1).
    KeyRevoked,
    AllowedIpsChanged,
    ServiceTokenCreated,
    ServiceTokenRevoked,
    MasterKeyRotated,
    /// A key of the partner was reported as found in public (SPEC §9.2).
    KeyLeaked,
    /// A service token was reported as found in public.
    ServiceTokenLeaked,
    /// An active partner moved in with its existing keys (`keyward partner import`, SPEC §10.2).
    PartnerImported,
    WebhookAdded,
    WebhookRemoved,
}

impl AuditKind {
    /// The lifecycle event (SPEC §9.3) this change is announced as to webhook endpoints, if
    /// any. The names are part of the webhooks' contract: never rename one.
    pub fn event_type(self) -> Option<&'static str> {
        use keyward_core::LinkPurpose::{Onboarding, Regeneration, RestrictedKey};
        Some(match self {
            Self::PartnerCreated | Self::PartnerInvited => "partner.onboarded",
            Self::LinkRedeemed(Onboarding) => "partner.activated",
            Self::PartnerSuspended => "partner.suspended",
            Self::PartnerActivated => "partner.reactivated",
            Self::LinkRedeemed(Regeneration) => "key.regenerated",
            Self::RetiringKeysRevoked => "key.retired",
            Self::LinkRedeemed(RestrictedKey) => "key.created",
            Self::KeysRevoked | Self::KeyRevoked => "key.revoked",
            Self::KeyLeaked => "key.leaked",
            Self::AllowedIpsChanged => "allowlist.changed",
            Self::ServiceTokenCreated => "service_token.created",
            Self::ServiceTokenRevoked => "service_token.revoked",
            Self::PartnerReleased
            | Self::LinkIssued(_)
            | Self::MasterKeyRotated
            | Self::ServiceTokenLeaked
            | Self::PartnerImported
            | Self::WebhookAdded
            | Self::WebhookRemoved => return None,
        })
    }

    pub fn name(self) -> &'static str {
        use keyward_core::LinkPurpose::{Onboarding, Regeneration, RestrictedKey};
        match self {
            Self::PartnerCreated => "partner_created",
            Self::PartnerInvited => "partner_invited",
            Self::PartnerReleased => "partner_released",
            Self::PartnerSuspended => "partner_suspended",
            Self::PartnerActivated => "partner_activated",
            Self::LinkIssued(Onboarding) => "onboarding_link_issued",
            Self::LinkIssued(Regeneration) => "regeneration_link_issued",
            Self::LinkRedeemed(Onboarding) => "onboarding_link_redeemed",
            Self::LinkRedeemed(Regeneration) => "regeneration_link_redeemed",
            Self::LinkIssued(RestrictedKey) => "restricted_key_link_issued",
            Self::LinkRedeemed(RestrictedKey) => "restricted_key_created",
            Self::KeyRevoked => "key_revoked",
            Self::KeysRevoked => "keys_revoked",
            Self::RetiringKeysRevoked => "retiring_keys_revoked",
            Self::AllowedIpsChanged => "allowed_ips_changed",
            Self::ServiceTokenCreated => "service_token_created",
            Self::ServiceTokenRevoked => "service_token_revoked",
            Self::MasterKeyRotated => "master_key_rotated",
            Self::KeyLeaked => "key_leaked",
            Self::ServiceTokenLeaked => "service_token_leaked",
            Self::PartnerImported => "partner_imported",
            Self::WebhookAdded => "webhook_added",
            Self::WebhookRemoved => "webhook_removed",
        }
    }
}

/// An audit entry to record: what happened, to which partner (if any), who did it, from which
/// address (requests only), with what detail, and when.
#[derive(Debug, Clone, Copy)]
pub struct Audit<'a> {
    pub kind: AuditKind,
    pub partner: Option<&'a PartnerId>,
    pub actor: Actor<'a>,
    pub ip: Option<std::net::IpAddr>,
    pub detail: Option<&'a str>,
    /// The key pair the event is about, when there is one (named in its webhook event).
    pub key_id: Option<&'a str>,
    pub at: chrono::DateTime<chrono::Utc>,
}

impl<'a> Audit<'a> {
    /// An entry with no partner, address or detail, to fill in.
    pub fn new(kind: AuditKind, actor: Actor<'a>, at: chrono::DateTime<chrono::Utc>) -> Self {
        Self {
            kind,
            partner: None,
            actor,
            ip: None,
            detail: None,
            key_id: None,
            at,
        }
    }
}

/// One entry of the audit log.
#[derive(Debug, FromRow)]
pub struct AuditEvent {
    pub event: String,
    pub ip: Option<String>,
    pub detail: Option<String>,
    pub created_at: i64,
}

/// A 0/1 column (both backends store flags as integers), read as a `bool`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Flag(pub bool);

impl From<i64> for Flag {
    fn from(value: i64) -> Self {
        Flag(value != 0)
    }
}
