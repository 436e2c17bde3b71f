//! The domain's vocabulary: validated newtypes for what partners send us and for what we
//! store about them, and the states a partner and a link can be in.

use serde::Serialize;
use std::fmt;

/// A partner's ID (SPEC §1): a UUID, lower-case and hyphenated; version 7 for new partners.
/// It never changes, whatever happens to the partner's keys.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct PartnerId(String);

impl PartnerId {
    /// A new, time-ordered ID.
    pub fn new_v7() -> Self {
        Self(uuid::Uuid::now_v7().to_string())
    }

    /// Accepts only the canonical form (lower-case, hyphenated), which is how IDs are stored
    /// and shown.
    pub fn parse(s: &str) -> Option<Self> {
        let uuid = uuid::Uuid::try_parse(s).ok()?;
        (uuid.hyphenated().to_string() == s).then(|| Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PartnerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a partner is in its life: `pending` until its onboarding link is used, then
/// `active`; `suspended` by an operator.
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

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(PartnerStatus::Pending),
            "active" => Some(PartnerStatus::Active),
            "suspended" => Some(PartnerStatus::Suspended),
            _ => None,
        }
    }
}

/// What a one-time link does when used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkPurpose {
    /// The partner's first keys; activates a pending partner.
    Onboarding,
    /// New keys for an active partner; the old ones are revoked.
    Regeneration,
    /// A restricted (or test) pair asked for with `CreateKey` (SPEC §8.1); nothing is revoked.
    RestrictedKey,
}

impl LinkPurpose {
    pub const fn as_str(self) -> &'static str {
        match self {
            LinkPurpose::Onboarding => "onboarding",
            LinkPurpose::Regeneration => "regeneration",
            LinkPurpose::RestrictedKey => "restricted_key",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "onboarding" => Some(LinkPurpose::Onboarding),
            "regeneration" => Some(LinkPurpose::Regeneration),
            "restricted_key" => Some(LinkPurpose::RestrictedKey),
            _ => None,
        }
    }
}

/// 1–64 characters of `A-Za-z0-9._-`. Stored as given; compared case-insensitively
/// (two partners cannot hold codes that differ only in case).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartnerCode(String);

impl PartnerCode {
    pub fn parse(s: &str) -> Option<Self> {
        let ok = (1..=64).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        ok.then(|| Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The form used for uniqueness and comparison. The one place codes are case-folded.
    pub fn folded(&self) -> String {
        self.0.to_ascii_lowercase()
    }

    pub fn matches(&self, other: &str) -> bool {
        self.0.eq_ignore_ascii_case(other)
    }
}

impl fmt::Display for PartnerCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An email address (RFC 5322 addr-spec, at most 254 characters). Stored as given; compared
/// case-insensitively, as partners expect even though local parts may be case-sensitive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Email(String);

impl Email {
    pub fn parse(s: &str) -> Option<Self> {
        let ok = s.len() <= 254
            && !s.chars().any(invisible)
            && !s.contains(['<', '>', ' ', '\r', '\n', '"'])
            && email_address::EmailAddress::parse_with_options(
                s,
                email_address::Options::default().without_display_text(),
            )
            .is_ok_and(|address| address.domain().contains('.') || address.domain() == "localhost");
        ok.then(|| Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn folded(&self) -> String {
        self.0.to_lowercase()
    }

    pub fn matches(&self, other: &str) -> bool {
        self.folded() == other.to_lowercase()
    }
}

/// Characters that do not show, or change how the text around them shows: controls,
/// whitespace, and Unicode's format characters (zero-width spaces and joiners, bidirectional
/// overrides and isolates, the byte-order mark, soft hyphens, tags). An address holding one
/// looks like another address on screen, or rearranges an operator's terminal.
fn invisible(c: char) -> bool {
    c.is_control()
        || c.is_whitespace()
        || matches!(
            u32::from(c),
            0x00AD
                | 0x0600..=0x0605
                | 0x061C
                | 0x06DD
                | 0x070F
                | 0x0890..=0x0891
                | 0x08E2
                | 0x180E
                | 0x200B..=0x200F
                | 0x202A..=0x202E
                | 0x2060..=0x2064
                | 0x2066..=0x206F
                | 0xFEFF
                | 0xFFF9..=0xFFFB
                | 0x110BD
                | 0x110CD
                | 0x13430..=0x1343F
                | 0x1BCA0..=0x1BCA3
                | 0x1D173..=0x1D17A
                | 0xE0001
                | 0xE0020..=0xE007F
        )
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn partner_codes_follow_the_spec() {
        assert!(PartnerCode::parse("ACME").is_some());
        assert!(PartnerCode::parse("a.b_c-9").is_some());
        assert!(PartnerCode::parse(&"x".repeat(64)).is_some());
        assert!(PartnerCode::parse(&"x".repeat(65)).is_none());
        assert!(PartnerCode::parse("").is_none());
        assert!(PartnerCode::parse("AC ME").is_none());
        assert!(PartnerCode::parse("ÄCME").is_none());
    }

    #[test]
    fn emails_are_checked() {
        assert!(Email::parse("ops@acme.example").is_some());
        assert!(Email::parse("Ops.Team+keys@acme.example").is_some());
        assert!(Email::parse("not-an-email").is_none());
        assert!(Email::parse("a@b").is_none());
        assert!(Email::parse("Name <a@b.example>").is_none());
        assert!(Email::parse("a@b.example\r\nBcc: x@y.example").is_none());
        for sneaky in [
            "ops\u{202E}@acme.example",
            "o\u{200B}ps@acme.example",
            "ops@acme\u{2066}.example",
            "\u{FEFF}ops@acme.example",
            "ops\u{1b}[31m@acme.example",
            "ops\u{00AD}@acme.example",
            "ops@acme.example\u{E0041}",
            "ops\u{3000}@acme.example",
        ] {
            assert!(Email::parse(sneaky).is_none(), "{sneaky:?}");
        }
        assert!(
            Email::parse("zoë@acme.example").is_some(),
            "visible non-ASCII is fine"
        );
        assert!(Email::parse("").is_none());
    }

    #[test]
    fn partner_ids_are_canonical_uuids() {
        let id = PartnerId::new_v7();
        assert_eq!(PartnerId::parse(id.as_str()), Some(id.clone()));
        assert!(PartnerId::parse(&id.as_str().to_uppercase()).is_none());
        assert!(PartnerId::parse(&id.as_str().replace('-', "")).is_none());
        assert!(PartnerId::parse("not-a-uuid").is_none());
    }

    #[test]
    fn states_round_trip_through_their_names() {
        for status in [
            PartnerStatus::Pending,
            PartnerStatus::Active,
            PartnerStatus::Suspended,
        ] {
            assert_eq!(PartnerStatus::parse(status.as_str()), Some(status));
        }
        for purpose in [
            LinkPurpose::Onboarding,
            LinkPurpose::Regeneration,
            LinkPurpose::RestrictedKey,
        ] {
            assert_eq!(LinkPurpose::parse(purpose.as_str()), Some(purpose));
        }
        assert_eq!(PartnerStatus::parse("Active"), None);
    }

    #[test]
    fn emails_compare_case_insensitively() {
        let email = Email::parse("Ops@Acme.Example").map(|e| e.matches("ops@acme.example"));
        assert_eq!(email, Some(true));
    }

    proptest! {
        #[test]
        fn parsers_never_panic(s in "\\PC{0,80}") {
            let _ = Email::parse(&s);
            let _ = PartnerCode::parse(&s);
        }
    }
}
