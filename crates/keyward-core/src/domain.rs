//! Validated newtypes for what partners send us.

use serde::Serialize;
use std::fmt;

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

    /// The form used for uniqueness and comparison.
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
        assert!(Email::parse("").is_none());
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
