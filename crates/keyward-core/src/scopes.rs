//! What a key may do (SPEC §8.2): scope names, sets of them, and the durations of the expiry
//! policy (§8.4). No I/O: the server, the SDK and the CLI share these rules.

use std::collections::BTreeSet;
use std::fmt;

/// The longest a scope name may be.
const MAX_SCOPE_LEN: usize = 64;

/// Whether `s` is a scope name: `[a-z][a-z0-9_.:-]{0,63}`.
pub fn is_scope_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_lowercase())
        && s.len() <= MAX_SCOPE_LEN
        && bytes.all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b':' | b'-')
        })
}

/// A set of scope names, sorted (how they are stored and sent: space-separated).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scopes(BTreeSet<String>);

impl Scopes {
    /// From names already checked with [`is_scope_name`].
    pub fn from_names<I: IntoIterator<Item = S>, S: Into<String>>(names: I) -> Self {
        Self(names.into_iter().map(Into::into).collect())
    }

    /// The stored form: names separated by one space (empty: none).
    pub fn parse_stored(s: &str) -> Self {
        Self::from_names(s.split_ascii_whitespace())
    }

    pub fn to_stored(&self) -> String {
        self.to_string()
    }

    pub fn contains(&self, scope: &str) -> bool {
        self.0.contains(scope)
    }

    /// Whether every scope of `required` is here.
    pub fn covers<'a>(&self, required: impl IntoIterator<Item = &'a str>) -> bool {
        required.into_iter().all(|scope| self.contains(scope))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }

    pub fn to_vec(&self) -> Vec<String> {
        self.0.iter().cloned().collect()
    }
}

impl fmt::Display for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, scope) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            f.write_str(scope)?;
        }
        Ok(())
    }
}

/// A duration of the expiry policy: a whole number followed by `d`, `h`, `m` or `s` (`30d`,
/// `12h`, `90s`). Returns seconds.
pub fn parse_duration(s: &str) -> Option<u64> {
    let s = s.trim();
    let unit = s.chars().last()?;
    let number: u64 = s[..s.len() - unit.len_utf8()].parse().ok()?;
    let per = match unit {
        'd' => 86_400,
        'h' => 3_600,
        'm' => 60,
        's' => 1,
        _ => return None,
    };
    number.checked_mul(per).filter(|&secs| secs > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_names_follow_the_pattern() {
        for good in [
            "payouts:write",
            "a",
            "reports.read",
            "x_1-2",
            &"a".repeat(64),
        ] {
            assert!(is_scope_name(good), "{good}");
        }
        for bad in [
            "",
            "Payouts",
            "1a",
            "a b",
            "a/b",
            "é",
            &"a".repeat(65),
            ":a",
        ] {
            assert!(!is_scope_name(bad), "{bad}");
        }
    }

    #[test]
    fn scopes_are_stored_sorted_and_space_separated() {
        let scopes = Scopes::from_names(["reports:read", "payouts:write", "reports:read"]);
        assert_eq!(scopes.to_stored(), "payouts:write reports:read");
        assert_eq!(Scopes::parse_stored(&scopes.to_stored()), scopes);
        assert!(scopes.covers(["payouts:write"]));
        assert!(!scopes.covers(["payouts:write", "payouts:read"]));
        assert!(Scopes::parse_stored("").is_empty());
    }

    #[test]
    fn durations_take_a_unit() {
        assert_eq!(parse_duration("30d"), Some(30 * 86_400));
        assert_eq!(parse_duration("12h"), Some(12 * 3_600));
        assert_eq!(parse_duration("90s"), Some(90));
        assert_eq!(parse_duration(" 5m "), Some(300));
        for bad in [
            "",
            "d",
            "30",
            "0d",
            "-1d",
            "1.5d",
            "30 d",
            "1w",
            "99999999999999999999d",
        ] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }
}
